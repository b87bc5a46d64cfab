import MeshgateGRPC
import MeshgateGRPCCalls
import MeshgateHTTP2
import Testing

/// `GRPCStatus(headers:)`, the one reader of a status in a header block
/// (the client calls, the call core's attempt outcome, shadow streams).
@Suite struct GRPCStatusHeadersTests {
    @Test func readsTheCodeAndTheDecodedMessage() {
        let headers: HTTP2HeaderList = [(":status", "200"), ("grpc-status", "14"), ("grpc-message", "down%20for%20now")]
        #expect(GRPCStatus(headers: headers) == GRPCStatus(.unavailable, "down for now"))
        #expect(GRPCStatusCode(headers: headers) == .unavailable)
    }

    @Test func noStatusIsNilAndAnUnreadableOneIsUnknown() {
        #expect(GRPCStatus(headers: [(":status", "200")]) == nil)
        #expect(GRPCStatusCode(headers: [(":status", "200")]) == nil)
        for text in ["17", "-1", "ok", ""] {
            #expect(GRPCStatus(headers: [("grpc-status", text)]) == GRPCStatus(.unknown, ""), "\(text)")
        }
        #expect(GRPCStatus(headers: [("grpc-status", "0")]) == GRPCStatus(.ok, ""))
    }
}
