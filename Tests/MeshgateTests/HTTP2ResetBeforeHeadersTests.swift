import MeshgateHTTP2
import MeshgateTransport
import NIOCore
import NIOPosix
import Testing

/// A client stream reset before its HEADERS left (a call refused for its
/// request message in the wake-up that opened its upstream stream): the
/// peer never hears of it. RST_STREAM on a stream it never saw is a
/// connection error there (RFC 9113 §5.1), which would take the
/// connection's other streams with it.
extension HTTP2DialerTests {
    @Test func aStreamResetBeforeItsHeadersLeftCostsTheConnectionNothing() async throws {
        let echo = EchoServer()
        let server = try await listen { channel in
            channel.eventLoop.makeCompletedFuture {
                try channel.pipeline.syncOperations.addHandler(HTTP2Connection(role: .server, settings: HTTP2Settings(), delegate: echo))
            }
        }
        let owner = Owner()
        let result = try await dial(port: server.localAddress!.port!, options: HTTP2DialOptions(connectTimeout: .seconds(2)), owner: owner)
        guard case .success(let connection) = result else { Issue.record("dial failed: \(result)"); return }
        nonisolated(unsafe) let client = connection
        let head: HTTP2HeaderList = [(":method", "POST"), (":scheme", "http"), (":authority", "x"), (":path", "/a.B/C"),
                                     ("content-type", "application/grpc")]
        let bystander = Collector(), refused = Collector()
        let bystanderID = try await loop.submit { client.openStream(headers: head, endStream: false, delegate: bystander)! }.get()
        try await eventually { echo.heads.count == 1 }

        // Opened and reset in one go: nothing of it has been flushed.
        try await loop.submit {
            let id = client.openStream(headers: head, endStream: false, delegate: refused)!
            _ = client.reset(stream: id, errorCode: .cancel)
        }.get()
        try await eventually { refused.closed != nil }
        #expect(refused.closed == .reset(code: .cancel, local: true))

        try await loop.submit {
            client.send(data: ByteBuffer(repeating: 7, count: 100), stream: bystanderID)
            client.sendEnd(stream: bystanderID, trailers: nil)
        }.get()
        try await eventually { bystander.closed != nil }
        #expect(bystander.closed == .finished, "the other stream goes on")
        #expect(bystander.trailers?["grpc-status"] == "0")
        #expect(bystander.body == 100)
        #expect(try await loop.submit { echo.heads.count }.get() == 1, "the reset stream never reached the server")
        #expect(try await loop.submit { !owner.closed && client.canOpenStreams }.get(), "no GOAWAY, no close")

        try await loop.submit { client.close() }.get()
        try await eventually { owner.closed }
        try await server.close()
    }
}
