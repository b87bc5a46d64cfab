import MeshgateGRPC
import MeshgateHTTP2
import NIOCore
import SwiftProtobuf

/// One RPC answered locally on an HTTP/2 server connection (the gateway's
/// own health service, the sample service): deframes request messages,
/// frames response messages, ends with a status. Handlers set the `on…`
/// closures; everything runs on the connection's event loop.
public final class GRPCServerCall: HTTP2StreamDelegate {
    public let connection: HTTP2Connection
    public let stream: Int32
    public let headers: HTTP2HeaderList
    public let path: String
    /// Extra fields for the response head (e.g. which replica answered).
    public var responseHeaders: HTTP2HeaderList = []

    public var onMessage: ((ByteBuffer) -> Void)?
    public var onEnd: (() -> Void)?
    /// The stream closed, for whatever reason; called once.
    public var onClose: (() -> Void)?
    /// The peer reset the stream (or vanished) before the call finished.
    public var onCancelled: (() -> Void)?
    /// Called once when queued output has drained below `lowWater`.
    public var onDrained: (() -> Void)?
    /// The handler ended the call with this status.
    public var onFinish: ((GRPCStatus) -> Void)?

    private var deframer = GRPCMessageDeframer()
    public private(set) var headersSent = false
    public private(set) var finished = false
    public private(set) var closed = false

    public static let lowWater = 256 * 1024

    public init(connection: HTTP2Connection, stream: Int32, headers: HTTP2HeaderList, path: String) {
        self.connection = connection
        self.stream = stream
        self.headers = headers
        self.path = path
    }

    public var queuedBytes: Int { connection.queuedBytes(stream: stream) }

    public func sendHeaders() {
        guard !headersSent, !finished, !closed else { return }
        headersSent = true
        var head: HTTP2HeaderList = [(":status", "200"), ("content-type", "application/grpc")]
        for field in responseHeaders { head.append(field.name, field.value) }
        connection.sendResponseHeaders(stream: stream, headers: head, endStream: false)
    }

    public func send(_ message: some SwiftProtobuf.Message) {
        guard !finished, !closed else { return }
        sendHeaders()
        let bytes: [UInt8] = (try? message.serializedBytes()) ?? []
        connection.send(data: GRPCMessageDeframer.frame(bytes), stream: stream)
    }

    /// Sends one message already serialized (a proxy passing bytes on).
    public func send(bytes: [UInt8]) {
        guard !finished, !closed else { return }
        sendHeaders()
        connection.send(data: GRPCMessageDeframer.frame(bytes), stream: stream)
    }

    /// Ends the call with `status` (Trailers-Only when nothing was sent yet).
    public func finish(_ status: GRPCStatus = GRPCStatus(.ok, "")) {
        guard !finished, !closed else { return }
        finished = true
        onFinish?(status)
        onFinish = nil
        var trailers: HTTP2HeaderList = [("grpc-status", String(status.code.rawValue))]
        if !status.message.isEmpty { trailers.append("grpc-message", GRPCMessageEncoding.percentEncode(status.message)) }
        if headersSent {
            connection.sendEnd(stream: stream, trailers: trailers)
        } else {
            var head: HTTP2HeaderList = [(":status", "200"), ("content-type", "application/grpc")]
            for field in responseHeaders { head.append(field.name, field.value) }
            for field in trailers { head.append(field.name, field.value) }
            headersSent = true
            connection.sendResponseHeaders(stream: stream, headers: head, endStream: true)
        }
    }

    public func decode<M: SwiftProtobuf.Message>(_ type: M.Type, _ buffer: ByteBuffer) -> M? {
        try? M(serializedBytes: Array(buffer.readableBytesView))
    }

    // MARK: HTTP2StreamDelegate

    public func http2(_ connection: HTTP2Connection, stream: Int32, didReceiveHeaders headers: HTTP2HeaderList, isTrailers: Bool, endStream: Bool) {
        if endStream { onEnd?() }
    }

    public func http2(_ connection: HTTP2Connection, stream: Int32, didReceiveData data: ByteBuffer) {
        connection.consume(stream: stream, bytes: data.readableBytes)
        deframer.append(data)
        do {
            while let message = try deframer.next() {
                onMessage?(message.payload)
            }
        } catch {
            finish(GRPCStatus(.resourceExhausted, "\(error)"))
        }
    }

    public func http2(_ connection: HTTP2Connection, didReceiveEndOfStream stream: Int32) {
        onEnd?()
    }

    public func http2(_ connection: HTTP2Connection, stream: Int32, didWriteData bytes: Int) {
        if let drained = onDrained, queuedBytes < Self.lowWater {
            onDrained = nil
            drained()
        }
    }

    public func http2(_ connection: HTTP2Connection, stream: Int32, didCloseWith reason: HTTP2StreamCloseReason) {
        closed = true
        if !finished {
            switch reason {
            case .reset(_, local: false), .connectionLost: onCancelled?()
            default: break
            }
        }
        let close = onClose
        onMessage = nil
        onEnd = nil
        onDrained = nil
        onClose = nil
        onCancelled = nil
        close?()
    }
}
