import MeshgateHTTP2
import Testing

@Suite struct HPACKIndexingPolicyTests {
    private func perRequest(_ name: String) -> Bool {
        var name = name
        return name.withUTF8 { HPACKIndexingPolicy.isPerRequest(UnsafeRawBufferPointer($0)) }
    }

    @Test func fieldsWithAValuePerRequestAreNeverIndexed() {
        for name in ["traceparent", "tracestate", "grpc-timeout", "x-request-id", "grpc-trace-bin"] {
            #expect(perRequest(name), "\(name)")
        }
    }

    @Test func fieldsThatRepeatAreIndexed() {
        // Same lengths as the per-request names, one byte off, and the usual repeating fields.
        for name in ["traceparenT", "tracestatE", "grpc-timeouT", "x-request-iD", "grpc-trace-biN",
                     "content-type", "te", ":authority", "user-agent", "grpc-accept-encoding", ""] {
            #expect(!perRequest(name), "\(name)")
        }
    }
}
