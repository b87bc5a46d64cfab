import MeshgateGRPC
import MeshgateGRPCCalls
import MeshgateHTTP2
import NIOCore
import Testing

@Suite struct GRPCWireTests {
    @Test func timeoutParsesEveryUnit() {
        #expect(GRPCTimeout.parse("1H") == 3_600_000_000_000)
        #expect(GRPCTimeout.parse("2M") == 120_000_000_000)
        #expect(GRPCTimeout.parse("5S") == 5_000_000_000)
        #expect(GRPCTimeout.parse("250m") == 250_000_000)
        #expect(GRPCTimeout.parse("7u") == 7_000)
        #expect(GRPCTimeout.parse("99999999n") == 99_999_999)
    }

    @Test func malformedTimeoutsAreRejected() {
        for bad in ["", "S", "10", "10s", "123456789S", "1.5S", "-1S", " 1S", "1 S"] {
            #expect(GRPCTimeout.parse(bad) == nil, "\(bad)")
        }
    }

    @Test func timeoutFormattingRoundTripsWithoutShortening() {
        for ns: Int64 in [1, 999, 1_000_001, 4_999_999_999, 10_000_000_000, 86_400_000_000_000] {
            let text = GRPCTimeout.format(nanoseconds: ns)
            let back = GRPCTimeout.parse(text)!
            #expect(back >= ns, "\(ns) -> \(text)")
            #expect(text.utf8.count <= 9)
        }
        #expect(GRPCTimeout.format(nanoseconds: 0) == "1n")
    }

    @Test func http2ErrorsMapAsTheProtocolDocSays() {
        #expect(GRPCStatus(http2Error: HTTP2ErrorCode(0x7), context: "x").code == .unavailable)
        #expect(GRPCStatus(http2Error: HTTP2ErrorCode(0x8), context: "x").code == .cancelled)
        #expect(GRPCStatus(http2Error: HTTP2ErrorCode(0xb), context: "x").code == .resourceExhausted)
        #expect(GRPCStatus(http2Error: HTTP2ErrorCode(0xc), context: "x").code == .permissionDenied)
        #expect(GRPCStatus(http2Error: HTTP2ErrorCode(0x1), context: "x").code == .internal)
        #expect(GRPCStatus(http2Error: HTTP2ErrorCode(0x2), context: "x").code == .internal)
        #expect(GRPCStatus(http2Error: HTTP2ErrorCode(0x8), context: "upstream reset").message.contains("upstream reset"))
    }

    @Test func httpStatusesMapAsTheMappingDocSays() {
        #expect(GRPCStatus.fromHTTPStatus(400).code == .internal)
        #expect(GRPCStatus.fromHTTPStatus(401).code == .unauthenticated)
        #expect(GRPCStatus.fromHTTPStatus(403).code == .permissionDenied)
        #expect(GRPCStatus.fromHTTPStatus(404).code == .unimplemented)
        #expect(GRPCStatus.fromHTTPStatus(503).code == .unavailable)
        #expect(GRPCStatus.fromHTTPStatus(500).code == .unknown)
    }

    @Test func statusCodesParseByNameOrNumber() {
        #expect(GRPCStatusCode(parsing: "unavailable") == .unavailable)
        #expect(GRPCStatusCode(parsing: "RESOURCE_EXHAUSTED") == .resourceExhausted)
        #expect(GRPCStatusCode(parsing: "14") == .unavailable)
        #expect(GRPCStatusCode(parsing: "17") == nil)
        #expect(GRPCStatusCode(parsing: "nope") == nil)
    }

    @Test func grpcMessagePercentEncoding() {
        #expect(GRPCMessageEncoding.percentEncode("plain text") == "plain text")
        #expect(GRPCMessageEncoding.percentEncode("50%\n") == "50%25%0A")
        #expect(GRPCMessageEncoding.percentEncode("é") == "%C3%A9")
        #expect(GRPCMessageEncoding.percentDecode("50%25%0A%C3%A9") == "50%\né")
    }

    @Test func deframerSplitsMessagesAcrossChunks() throws {
        var deframer = GRPCMessageDeframer(maxMessageSize: 100)
        var wire = GRPCMessageDeframer.frame([1, 2, 3])
        var second = GRPCMessageDeframer.frame([4])
        wire.writeBuffer(&second)
        let bytes = Array(wire.readableBytesView)
        deframer.append(ByteBuffer(bytes: bytes[0..<4]))
        #expect(try deframer.next() == nil)
        deframer.append(ByteBuffer(bytes: bytes[4...]))
        #expect(try deframer.next().map { Array($0.payload.readableBytesView) } == [1, 2, 3])
        #expect(try deframer.next().map { Array($0.payload.readableBytesView) } == [4])
        #expect(try deframer.next() == nil)
        deframer.append(ByteBuffer(bytes: [0, 0, 0, 1, 0]))
        #expect(throws: GRPCMessageDeframer.DeframeError.self) { try deframer.next() }
    }
}
