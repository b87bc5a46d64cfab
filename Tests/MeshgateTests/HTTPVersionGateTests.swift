import NIOCore
import NIOEmbedded
import Testing
@testable import MeshgateHTTP2

/// `HTTPVersionGate` in front of a server `HTTP2Connection`, on an
/// embedded channel (no socket): HTTP/2 passes and the gate leaves; an
/// HTTP/1.x request gets a 505 and a close, or the HTTP/1 handlers in the
/// HTTP/2 handler's place.
@Suite struct HTTPVersionGateTests {
    static let preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    static let http1Request = "POST /a.B/C HTTP/1.1\r\nHost: x\r\nContent-Type: application/grpc-web\r\n\r\n"

    @Test func theFirstBytesDecide() {
        func verdict(_ text: String) -> HTTPVersionGate.Verdict { HTTPVersionGate.classify(ByteBuffer(string: text)) }
        #expect(verdict(Self.preface) == .http2)
        for method in ["GET", "POST", "PUT", "HEAD", "DELETE", "OPTIONS", "PATCH", "CONNECT"] {
            #expect(verdict("\(method) / HTTP/1.1\r\n") == .http1, "\(method)")
        }
        #expect(verdict("GET") == .http2, "too short for a request line: HTTP/2's preface check answers it")
        #expect(verdict("GETX / HTTP/1.1") == .http2)
        #expect(verdict("") == .http2)
    }

    /// Records what reaches the end of the pipeline.
    final class Recorder: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        var received: [String] = []
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            var buffer = unwrapInboundIn(data)
            received.append(buffer.readString(length: buffer.readableBytes) ?? "")
        }
    }

    func channel(handoff: HTTPVersionGate.HTTP1Handoff?) throws -> (EmbeddedChannel, HTTP2Connection) {
        let channel = EmbeddedChannel()
        let http2 = HTTP2Connection(role: .server, delegate: nil)
        try channel.pipeline.syncOperations.addHandlers(HTTPVersionGate(connection: http2, http1Handoff: handoff), http2)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        return (channel, http2)
    }

    func written(_ channel: EmbeddedChannel) throws -> String {
        var out = ""
        while var buffer = try channel.readOutbound(as: ByteBuffer.self) {
            out += buffer.readString(length: buffer.readableBytes) ?? ""
        }
        return out
    }

    @Test func anHTTP2ClientPassesAndTheGateLeaves() throws {
        let (channel, http2) = try channel(handoff: nil)
        try channel.writeInbound(ByteBuffer(string: Self.preface))
        #expect(throws: (any Error).self) { try channel.pipeline.syncOperations.handler(type: HTTPVersionGate.self) }
        #expect(http2.lifecycle.phase == .open, "the connection started on the bytes the gate passed on")
        var out = try #require(try channel.readOutbound(as: ByteBuffer.self))
        #expect(out.readBytes(length: 4)?.last == 0x04, "the server's first frame is its SETTINGS")
        #expect(channel.isActive)
        _ = try? channel.finish()
    }

    @Test func anHTTP1RequestOnAnHTTP2OnlyPortGets505AndAClose() throws {
        let (channel, http2) = try channel(handoff: nil)
        try channel.writeInbound(ByteBuffer(string: Self.http1Request))
        let out = try written(channel)
        #expect(out.hasPrefix("HTTP/1.1 505 HTTP Version Not Supported\r\n"), "\(out)")
        #expect(!out.contains("PRI") && out.hasSuffix("This port speaks HTTP/2 (gRPC) only.\n"), "no HTTP/2 frame after the answer")
        #expect(http2.lifecycle.phase == .closing(.beforeStart))
        #expect(http2.closedForProtocolError)
        #expect(http2.closeReason == "HTTP/1.x request on an HTTP/2-only port")
        channel.embeddedEventLoop.run()
        #expect(!channel.isActive, "closed after the answer")
        #expect(http2.isClosed)
    }

    @Test func anHTTP1RequestOnAGRPCWebPortGoesToTheHTTP1Handlers() throws {
        let recorder = Recorder()
        let (channel, http2) = try channel(handoff: { pipeline in try pipeline.addHandler(recorder) })
        try channel.writeInbound(ByteBuffer(string: Self.http1Request))
        #expect(recorder.received == [Self.http1Request])
        #expect(throws: (any Error).self) { try channel.pipeline.syncOperations.handler(type: HTTPVersionGate.self) }
        #expect(throws: (any Error).self) { try channel.pipeline.syncOperations.handler(type: HTTP2Connection.self) }
        #expect(http2.isClosed && http2.closeReason == nil, "the HTTP/2 handler left, saying nothing")
        try channel.writeInbound(ByteBuffer(string: "more"))
        #expect(recorder.received.last == "more", "later reads go straight to the HTTP/1 handlers")
        #expect(try written(channel) == "")
        #expect(channel.isActive)
        _ = try? channel.finish()
    }

    @Test func aFailedHandOffClosesTheConnectionSayingWhy() throws {
        struct Refused: Error {}
        let (channel, http2) = try channel(handoff: { _ in throw Refused() })
        try channel.writeInbound(ByteBuffer(string: Self.http1Request))
        #expect(http2.closeReason?.hasPrefix("cannot serve HTTP/1.1") == true)
        #expect(!http2.closedForProtocolError)
        channel.embeddedEventLoop.run()
        #expect(!channel.isActive)
    }
}
