import NIOCore

/// In front of a server `HTTP2Connection`: decides from a client's first
/// bytes which HTTP the connection speaks, then leaves the pipeline, so
/// that later reads cost nothing here.
///
/// - HTTP/2 (anything that is not an HTTP/1.x request line): the bytes go
///   on to the `HTTP2Connection`, which starts speaking then (a server
///   says nothing before the client's first bytes).
/// - An HTTP/1.x request, on a port that also serves HTTP/1.1 (gRPC-Web):
///   `http1Handoff` adds the HTTP/1 handlers after this one, and the
///   `HTTP2Connection` leaves with the gate; the bytes go to the HTTP/1
///   handlers.
/// - An HTTP/1.x request on an HTTP/2-only port: an HTTP/1.1 505 and a
///   close (the request's version is the one thing wrong with it); the
///   `HTTP2Connection` never speaks, and its close reason says why.
///
/// The decision itself is `HTTPVersionGate.classify`, a pure function.
public final class HTTPVersionGate: ChannelInboundHandler, RemovableChannelHandler {
    public typealias InboundIn = ByteBuffer
    public typealias OutboundOut = ByteBuffer

    /// Adds the HTTP/1 handlers (after the gate) to a pipeline.
    public typealias HTTP1Handoff = (ChannelPipeline.SynchronousOperations) throws -> Void

    private let connection: HTTP2Connection
    private var http1Handoff: HTTP1Handoff?
    private var decided = false

    /// `connection`: the HTTP/2 handler right after the gate. nil
    /// `http1Handoff`: the port speaks HTTP/2 only.
    public init(connection: HTTP2Connection, http1Handoff: HTTP1Handoff?) {
        precondition(connection.role == .server, "a gate stands in front of a server connection")
        self.connection = connection
        self.http1Handoff = http1Handoff
    }

    public enum Verdict: Equatable, Sendable {
        case http2
        case http1
    }

    /// What a client's first bytes say. Decided on what came in the first
    /// read, however short: HTTP/1.x request lines start with a method and
    /// a space, and no HTTP/2 preface (`PRI * HTTP/2.0`) does.
    public static func classify(_ bytes: ByteBuffer) -> Verdict {
        bytes.withUnsafeReadableBytes { head in
            for method in methods where head.count >= method.count {
                if zip(head, method).allSatisfy({ $0 == $1 }) { return .http1 }
            }
            return .http2
        }
    }

    private static let methods: [[UInt8]] = ["GET ", "POST ", "PUT ", "HEAD ", "DELETE ", "OPTIONS ", "PATCH ", "CONNECT "].map { Array($0.utf8) }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !decided else { return context.fireChannelRead(data) }
        decided = true
        switch Self.classify(unwrapInboundIn(data)) {
        case .http2:
            context.fireChannelRead(data)
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
        case .http1:
            if let handoff = http1Handoff {
                handOffToHTTP1(context, data, handoff)
            } else {
                refuseHTTP1(context)
            }
        }
    }

    /// The HTTP/1 handlers take the connection: they are added after the
    /// HTTP/2 handler, which leaves (with nothing said, it sends nothing
    /// and releases its delegate), then the gate hands them the bytes and
    /// leaves too.
    private func handOffToHTTP1(_ context: ChannelHandlerContext, _ data: NIOAny, _ handoff: HTTP1Handoff) {
        http1Handoff = nil
        let pipeline = context.pipeline.syncOperations
        do {
            try handoff(pipeline)
            pipeline.removeHandler(connection, promise: nil)
        } catch {
            connection.close(reason: "cannot serve HTTP/1.1: \(error)")
            return
        }
        context.fireChannelRead(data)
        pipeline.removeHandler(context: context, promise: nil)
    }

    private func refuseHTTP1(_ context: ChannelHandlerContext) {
        var answer = context.channel.allocator.buffer(capacity: 160)
        let body = "This port speaks HTTP/2 (gRPC) only.\n"
        answer.writeString("HTTP/1.1 505 HTTP Version Not Supported\r\nContent-Type: text/plain\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n\(body)")
        context.writeAndFlush(wrapOutboundOut(answer), promise: nil)
        connection.closeRefusingHTTP1()
    }
}

extension HTTP2Connection {
    /// The gate in front turned an HTTP/1.x client away: the close (at
    /// the loop's next turn, after the answer) is for a protocol error of
    /// the peer's.
    func closeRefusingHTTP1() {
        closeCause = .protocolError("HTTP/1.x request on an HTTP/2-only port")
        close()
    }
}
