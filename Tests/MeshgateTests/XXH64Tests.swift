import Testing
@testable import ConsistentHash

@Suite struct XXH64Tests {
    /// Reference values from the xxHash implementation (python-xxhash).
    @Test func matchesTheReferenceImplementation() {
        #expect(XXH64.hash("") == 0xEF46_DB37_51D8_E999)
        #expect(XXH64.hash("a") == 0xD24E_C4F1_A98C_6E5B)
        #expect(XXH64.hash("hello world, this is a longer test input!!") == 0xD89E_7B19_E270_F0CC)
    }
}
