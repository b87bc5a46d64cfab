import MeshgateGRPC
import MeshgateHTTP2
import NIOCore
import SwiftProtobuf

/// One RPC on the sample server: deframes request messages, frames response
/// messages, and ends with a status. Handlers set the `on…` closures.
final class ServerCall: HTTP2StreamDelegate {
    let connection: HTTP2Connection
    let stream: Int32
    let headers: HTTP2HeaderList
    let path: String
    unowned let replica: ReplicaState

    var onMessage: ((ByteBuffer) -> Void)?
    var onEnd: (() -> Void)?
    var onClose: (() -> Void)?
    /// Called once when queued output has drained below `lowWater`.
    var onDrained: (() -> Void)?

    private var deframer = GRPCMessageDeframer()
    private(set) var headersSent = false
    private(set) var finished = false
    private(set) var closed = false
    /// Counted in the replica's MeshService stats.
    var counted = false

    static let lowWater = 256 * 1024

    init(connection: HTTP2Connection, stream: Int32, headers: HTTP2HeaderList, path: String, replica: ReplicaState) {
        self.connection = connection
        self.stream = stream
        self.headers = headers
        self.path = path
        self.replica = replica
    }

    var queuedBytes: Int { connection.queuedBytes(stream: stream) }

    func sendHeaders() {
        guard !headersSent, !finished, !closed else { return }
        headersSent = true
        connection.sendResponseHeaders(stream: stream, headers: [
            (":status", "200"), ("content-type", "application/grpc"), ("x-mesh-replica", replica.id),
        ], endStream: false)
    }

    func send(_ message: some SwiftProtobuf.Message) {
        guard !finished, !closed else { return }
        sendHeaders()
        let bytes: [UInt8] = (try? message.serializedBytes()) ?? []
        connection.send(data: GRPCMessageDeframer.frame(bytes, allocator: ByteBufferAllocator()), stream: stream)
    }

    func finish(_ status: GRPCStatus = GRPCStatus(.ok, "")) {
        guard !finished, !closed else { return }
        finished = true
        if counted { replica.stats.completed += 1 }
        var trailers: HTTP2HeaderList = [("grpc-status", String(status.code.rawValue))]
        if !status.message.isEmpty { trailers.append("grpc-message", GRPCMessageEncoding.percentEncode(status.message)) }
        if headersSent {
            connection.sendEnd(stream: stream, trailers: trailers)
        } else {
            var head: HTTP2HeaderList = [(":status", "200"), ("content-type", "application/grpc"), ("x-mesh-replica", replica.id)]
            for field in trailers { head.append(field.name, field.value) }
            headersSent = true
            connection.sendResponseHeaders(stream: stream, headers: head, endStream: true)
        }
    }

    func decode<M: SwiftProtobuf.Message>(_ type: M.Type, _ buffer: ByteBuffer) -> M? {
        try? M(serializedBytes: Array(buffer.readableBytesView))
    }

    // MARK: HTTP2StreamDelegate

    func http2(_ connection: HTTP2Connection, stream: Int32, didReceiveHeaders headers: HTTP2HeaderList, isTrailers: Bool, endStream: Bool) {
        if endStream { onEnd?() }
    }

    func http2(_ connection: HTTP2Connection, stream: Int32, didReceiveData data: ByteBuffer) {
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

    func http2(_ connection: HTTP2Connection, didReceiveEndOfStream stream: Int32) {
        onEnd?()
    }

    func http2(_ connection: HTTP2Connection, stream: Int32, didWriteData bytes: Int) {
        if let drained = onDrained, queuedBytes < Self.lowWater {
            onDrained = nil
            drained()
        }
    }

    func http2(_ connection: HTTP2Connection, stream: Int32, didCloseWith reason: HTTP2StreamCloseReason) {
        closed = true
        if !finished && counted {
            switch reason {
            case .reset(_, local: false), .connectionLost: replica.stats.cancelled += 1
            default: break
            }
        }
        onMessage = nil
        onEnd = nil
        onDrained = nil
        let close = onClose
        onClose = nil
        close?()
    }
}
