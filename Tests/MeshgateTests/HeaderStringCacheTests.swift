import Testing
@testable import MeshgateHTTP2

/// Received header bytes become the right Strings whether or not a cached
/// String is reused, and repeated long fields reuse one String.
@Suite struct HeaderStringCacheTests {
    func string(_ cache: inout HeaderStringCache, _ text: String) -> String {
        Array(text.utf8).withUnsafeBufferPointer { cache.string($0) }
    }

    @Test func repeatedLongFieldsShareOneString() {
        var cache = HeaderStringCache()
        let first = string(&cache, "/mesh.v1.MeshService/Process")
        let second = string(&cache, "/mesh.v1.MeshService/Process")
        #expect(first == "/mesh.v1.MeshService/Process")
        #expect(second == first)
        // The same storage: no new String was made.
        let firstBase = first.utf8.withContiguousStorageIfAvailable { $0.baseAddress }
        let secondBase = second.utf8.withContiguousStorageIfAvailable { $0.baseAddress }
        #expect(firstBase != nil && firstBase == secondBase)
    }

    @Test func collidingAndSimilarFieldsKeepTheirOwnBytes() {
        var cache = HeaderStringCache()
        // Same length, same last and middle bytes: the same slot.
        let a = "/pkg.A/Methodxyz.Zq"
        let b = "/pkg.B/Methodxyz.Zq"
        let fields = [a, b, a, "application/grpc", "application/grpd", "short", "", b, "application/grpc"]
        for field in fields + fields.reversed() {
            #expect(string(&cache, field) == field)
        }
    }
}
