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
        // Far more fields than slots: every pair is shared and evicted many
        // times, and near-identical fields (one byte apart) meet in it.
        let services = (0..<100).map { "/pkg.Service\($0)/Method" }
        let fields = services + ["application/grpc", "application/grpd", "short", ""] + services.map { $0 + "s" }
        for _ in 0..<3 {
            for field in fields + fields.reversed() {
                #expect(string(&cache, field) == field)
            }
        }
    }
}
