import MeshgateHTTP2
import NIOCore

/// Reads and drops the request body of a call answered locally, giving the
/// window back so the client is never stuck.
final class DiscardingStream: HTTP2StreamDelegate, Sendable {
    /// It has no state, so one serves every stream of every loop.
    static let shared = DiscardingStream()

    func http2(_ connection: HTTP2Connection, stream: Int32, didReceiveHeaders headers: HTTP2HeaderList, isTrailers: Bool, endStream: Bool) {}
    func http2(_ connection: HTTP2Connection, stream: Int32, didReceiveData data: ByteBuffer) {
        connection.consume(stream: stream, bytes: data.readableBytes)
    }
    func http2(_ connection: HTTP2Connection, didReceiveEndOfStream stream: Int32) {}
    func http2(_ connection: HTTP2Connection, stream: Int32, didWriteData bytes: Int) {}
    func http2(_ connection: HTTP2Connection, stream: Int32, didCloseWith reason: HTTP2StreamCloseReason) {}
}
