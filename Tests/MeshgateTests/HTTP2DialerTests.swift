import MeshgateGRPC
import MeshgateGRPCCalls
import MeshgateHTTP2
import MeshgateTransport
import NIOCore
import NIOPosix
import Testing

/// The dialer and the HTTP/2 wrapper over real loopback sockets: every way
/// a dial ends, and a stream's life between two `HTTP2Connection`s.
@Suite(.serialized) struct HTTP2DialerTests: PollsOnALoop {
    /// Records what a connection's owner hears. Only touched on the test's
    /// one event loop (`@unchecked Sendable` so the loop's closures can hold it).
    final class Owner: HTTP2ConnectionDelegate, @unchecked Sendable {
        var closed = false
        func http2ConnectionDidClose(_ connection: HTTP2Connection) { closed = true }
    }

    /// An HTTP/2 server stream that answers every request with its body
    /// echoed and grpc-status 0, and remembers how streams ended.
    final class EchoServer: HTTP2ConnectionDelegate, HTTP2StreamDelegate, @unchecked Sendable {
        var closeReasons: [HTTP2StreamCloseReason] = []
        var heads: [HTTP2HeaderList] = []

        func http2(_ connection: HTTP2Connection, didReceiveRequest headers: HTTP2HeaderList, stream: Int32, endStream: Bool) -> HTTP2StreamDelegate? {
            heads.append(headers)
            connection.sendResponseHeaders(stream: stream, headers: [(":status", "200"), ("content-type", "application/grpc")], endStream: false)
            if endStream { connection.sendEnd(stream: stream, trailers: [("grpc-status", "0")]) }
            return self
        }
        func http2(_ connection: HTTP2Connection, stream: Int32, didReceiveHeaders headers: HTTP2HeaderList, isTrailers: Bool, endStream: Bool) {}
        func http2(_ connection: HTTP2Connection, stream: Int32, didReceiveData data: ByteBuffer) {
            connection.consume(stream: stream, bytes: data.readableBytes)
            connection.send(data: data, stream: stream)
        }
        func http2(_ connection: HTTP2Connection, didReceiveEndOfStream stream: Int32) {
            connection.sendEnd(stream: stream, trailers: [("grpc-status", "0")])
        }
        func http2(_ connection: HTTP2Connection, stream: Int32, didWriteData bytes: Int) {}
        func http2(_ connection: HTTP2Connection, stream: Int32, didCloseWith reason: HTTP2StreamCloseReason) {
            closeReasons.append(reason)
        }
    }

    /// A client stream that collects what comes back.
    final class Collector: HTTP2StreamDelegate, @unchecked Sendable {
        var head: HTTP2HeaderList?
        var trailers: HTTP2HeaderList?
        var body = 0
        var closed: HTTP2StreamCloseReason?
        var written = 0
        func http2(_ connection: HTTP2Connection, stream: Int32, didReceiveHeaders headers: HTTP2HeaderList, isTrailers: Bool, endStream: Bool) {
            if isTrailers { trailers = headers } else { head = headers }
        }
        func http2(_ connection: HTTP2Connection, stream: Int32, didReceiveData data: ByteBuffer) {
            body += data.readableBytes
            connection.consume(stream: stream, bytes: data.readableBytes)
        }
        func http2(_ connection: HTTP2Connection, didReceiveEndOfStream stream: Int32) {}
        func http2(_ connection: HTTP2Connection, stream: Int32, didWriteData bytes: Int) { written += bytes }
        func http2(_ connection: HTTP2Connection, stream: Int32, didCloseWith reason: HTTP2StreamCloseReason) { closed = reason }
    }

    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    var loop: EventLoop { group.next() }

    /// A dial's result carried off the loop: the test only touches the
    /// connection on the loop again (`loop.submit`), so sending it is safe.
    struct DialResult: @unchecked Sendable {
        let value: Result<HTTP2Connection, HTTP2DialError>
    }

    /// Dials 127.0.0.1:`port` on the loop and waits for the result.
    func dial(port: Int, options: HTTP2DialOptions, owner: Owner) async throws -> Result<HTTP2Connection, HTTP2DialError> {
        let loop = self.loop
        let promise = loop.makePromise(of: DialResult.self)
        // The options hold non-Sendable closures: built here, used only on the loop.
        nonisolated(unsafe) let options = options
        loop.execute {
            HTTP2Dialer.dial(host: "127.0.0.1", port: port, on: loop, options: options, delegate: owner) { promise.succeed(DialResult(value: $0)) }
        }
        return try await promise.futureResult.get().value
    }

    func listen(_ initializer: @escaping @Sendable (Channel) -> EventLoopFuture<Void>) async throws -> Channel {
        try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer(initializer)
            .bind(host: "127.0.0.1", port: 0).get()
    }

    @Test func aRefusedConnectFailsWithTheConnectError() async throws {
        // A port that was just free: nothing listens there.
        let server = try await listen { $0.eventLoop.makeSucceededVoidFuture() }
        let port = server.localAddress!.port!
        try await server.close()
        let result = try await dial(port: port, options: HTTP2DialOptions(connectTimeout: .seconds(2)), owner: Owner())
        guard case .failure(let error) = result else { Issue.record("dialed a closed port"); return }
        #expect(error.message.hasPrefix("connect failed"), "\(error)")
    }

    @Test func aPeerThatNeverSpeaksHTTP2FailsAtTheSettingsTimeout() async throws {
        // Accepts TCP and stays silent.
        let server = try await listen { $0.eventLoop.makeSucceededVoidFuture() }
        let started = ContinuousClock.now
        let owner = Owner()
        let result = try await dial(port: server.localAddress!.port!,
                                    options: HTTP2DialOptions(connectTimeout: .seconds(2), settingsTimeout: .milliseconds(200)), owner: owner)
        guard case .failure(let error) = result else { Issue.record("a silent peer counted as HTTP/2"); return }
        #expect(error.message == "no HTTP/2 SETTINGS from the peer within 200 ms")
        #expect(ContinuousClock.now - started < .seconds(2))
        #expect(!owner.closed, "the owner hears only of ready connections")
        try await server.close()
    }

    @Test func aPeerThatClosesBeforeItsSettingsFails() async throws {
        let server = try await listen { channel in channel.close() }
        let result = try await dial(port: server.localAddress!.port!, options: HTTP2DialOptions(connectTimeout: .seconds(2)), owner: Owner())
        guard case .failure(let error) = result else { Issue.record("a closed peer counted as HTTP/2"); return }
        #expect(!error.message.isEmpty)
        try await server.close()
    }

    @Test func anHTTP2PeerIsReadyWithItsLimitsKnownAndStreamsWork() async throws {
        let echo = EchoServer()
        let server = try await listen { channel in
            channel.eventLoop.makeCompletedFuture {
                try channel.pipeline.syncOperations.addHandler(
                    HTTP2Connection(role: .server, settings: HTTP2Settings(maxConcurrentStreams: 7), delegate: echo))
            }
        }
        let owner = Owner()
        let result = try await dial(port: server.localAddress!.port!, options: HTTP2DialOptions(connectTimeout: .seconds(2)), owner: owner)
        guard case .success(let connection) = result else { Issue.record("dial failed: \(result)"); return }
        nonisolated(unsafe) let client = connection
        let collector = Collector()
        let limits = try await loop.submit { () -> (Int, Bool) in
            (client.remoteMaxConcurrentStreams, client.delegate === owner)
        }.get()
        #expect(limits.0 == 7, "ready means the peer's SETTINGS are known")
        #expect(limits.1, "the owner is the connection's delegate once it is ready")

        // A request with a body: echoed back, flow control credited both ways.
        try await loop.submit {
            let headers: HTTP2HeaderList = [(":method", "POST"), (":scheme", "http"), (":authority", "x"), (":path", "/a.B/C"),
                                            ("content-type", "application/grpc")]
            let id = client.openStream(headers: headers, endStream: false, delegate: collector)!
            client.send(data: ByteBuffer(repeating: 1, count: 100_000), stream: id)
            client.sendEnd(stream: id, trailers: nil)
        }.get()
        try await eventually { collector.closed != nil }
        #expect(collector.closed == .finished)
        #expect(collector.head?[":status"] == "200")
        #expect(collector.trailers?["grpc-status"] == "0")
        #expect(collector.body == 100_000)
        #expect(collector.written == 100_000)

        // A reset (once the server has the stream) reaches it as the peer's CANCEL.
        let reset = Collector()
        let id = try await loop.submit {
            let headers: HTTP2HeaderList = [(":method", "POST"), (":scheme", "http"), (":authority", "x"), (":path", "/a.B/D")]
            return client.openStream(headers: headers, endStream: false, delegate: reset)!
        }.get()
        try await eventually { echo.heads.count == 2 }
        try await loop.submit { _ = client.reset(stream: id, errorCode: .cancel) }.get()
        try await eventually { reset.closed != nil && echo.closeReasons.count == 2 }
        #expect(reset.closed == .reset(code: .cancel, local: true))
        #expect(echo.closeReasons.last == .reset(code: .cancel, local: false))

        try await loop.submit { client.close() }.get()
        try await eventually { owner.closed }
        try await server.close()
    }

    /// Answers every request at once with a trailers-only status, as the
    /// gateway's local replies do, without waiting for the request to end.
    final class RefusingServer: HTTP2ConnectionDelegate, HTTP2StreamDelegate, @unchecked Sendable {
        var closeReasons: [HTTP2StreamCloseReason] = []
        func http2(_ connection: HTTP2Connection, didReceiveRequest headers: HTTP2HeaderList, stream: Int32, endStream: Bool) -> HTTP2StreamDelegate? {
            connection.sendResponseHeaders(stream: stream, headers: [(":status", "200"), ("content-type", "application/grpc"),
                                                                    ("grpc-status", "7"), ("grpc-message", "no")], endStream: true)
            return self
        }
        func http2(_ connection: HTTP2Connection, stream: Int32, didReceiveHeaders headers: HTTP2HeaderList, isTrailers: Bool, endStream: Bool) {}
        func http2(_ connection: HTTP2Connection, stream: Int32, didReceiveData data: ByteBuffer) {}
        func http2(_ connection: HTTP2Connection, didReceiveEndOfStream stream: Int32) {}
        func http2(_ connection: HTTP2Connection, stream: Int32, didWriteData bytes: Int) {}
        func http2(_ connection: HTTP2Connection, stream: Int32, didCloseWith reason: HTTP2StreamCloseReason) { closeReasons.append(reason) }
    }

    @Test func aStreamingCallAnsweredTrailersOnlyFinishesWithThatStatusAndFreesItsStream() async throws {
        let refusing = RefusingServer()
        let server = try await listen { channel in
            channel.eventLoop.makeCompletedFuture {
                try channel.pipeline.syncOperations.addHandler(HTTP2Connection(role: .server, delegate: refusing))
            }
        }
        let result = try await dial(port: server.localAddress!.port!, options: HTTP2DialOptions(connectTimeout: .seconds(2)), owner: Owner())
        guard case .success(let connection) = result else { Issue.record("dial failed: \(result)"); return }
        nonisolated(unsafe) let client = connection
        final class Outcome: @unchecked Sendable { var status: GRPCStatus? }
        let outcome = Outcome()
        try await loop.submit {
            let call = GRPCClientCall()
            call.onFinish = { outcome.status = $0 }
            // The request side stays open (a bidirectional stream).
            #expect(call.start(on: client, authority: "x", path: "/a.B/Chat", message: [1, 2, 3], endRequest: false, timeout: nil))
        }.get()
        try await eventually { outcome.status != nil && client.activeStreamCount == 0 }
        #expect(outcome.status?.code == .permissionDenied && outcome.status?.message == "no")
        try await eventually { refusing.closeReasons.count == 1 }
        // The client's RST_STREAM(NO_ERROR) closes the server's half-closed
        // stream as a normal end.
        #expect(refusing.closeReasons.first == .finished, "the client let go of its side")
        try await loop.submit { client.close() }.get()
        try await server.close()
    }

    /// In front of a server's HTTP2Connection: counts the PING frames (not
    /// their ACKs) the client sends, and passes every byte on unchanged.
    final class PingCounter: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = ByteBuffer
        typealias InboundOut = ByteBuffer
        var pings = 0
        private var pending: [UInt8] = []
        private var prefaceLeft = 24  // the client connection preface

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            pending += unwrapInboundIn(data).readableBytesView
            let skip = min(prefaceLeft, pending.count)
            pending.removeFirst(skip)
            prefaceLeft -= skip
            while pending.count >= 9 {
                let length = Int(pending[0]) << 16 | Int(pending[1]) << 8 | Int(pending[2])
                guard pending.count >= 9 + length else { break }
                if pending[3] == 0x6 && pending[4] & 0x1 == 0 { pings += 1 }  // PING without ACK
                pending.removeFirst(9 + length)
            }
            context.fireChannelRead(data)
        }
    }

    @Test func keepaliveKeepsAnAnsweringPeer() async throws {
        let counter = PingCounter()
        let server = try await listen { channel in
            channel.eventLoop.makeCompletedFuture {
                try channel.pipeline.syncOperations.addHandler(counter)
                try channel.pipeline.syncOperations.addHandler(HTTP2Connection(role: .server, delegate: EchoServer()))
            }
        }
        final class Timeouts: @unchecked Sendable { var count = 0 }
        let timeouts = Timeouts()
        var options = HTTP2DialOptions(connectTimeout: .seconds(2))
        options.keepalive = (.milliseconds(20), .milliseconds(500), { _ in timeouts.count += 1 })
        let owner = Owner()
        let result = try await dial(port: server.localAddress!.port!, options: options, owner: owner)
        guard case .success(let connection) = result else { Issue.record("dial failed"); return }
        // One PING at a time, the next `interval` after the last one's ACK:
        // five PINGs reaching the server mean four ACKs reached the client.
        try await eventually { counter.pings >= 5 }
        #expect(try await loop.submit { counter.pings }.get() >= 5, "the keepalive sent its PINGs")
        #expect(try await loop.submit { timeouts.count }.get() == 0, "every PING was answered")
        #expect(try await loop.submit { owner.closed }.get() == false)
        nonisolated(unsafe) let client = connection
        try await loop.submit { client.close() }.get()
        try await server.close()
    }
}
