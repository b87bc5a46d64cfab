import NIOCore

/// Why a stream ended, as seen by its delegate.
public enum HTTP2StreamCloseReason: Sendable, Equatable {
    /// Both sides finished normally.
    case finished
    /// A RST_STREAM ended the stream (sent by us when `local`, else by the
    /// peer), or nghttp2 closed it with this error code (REFUSED_STREAM for
    /// streams a GOAWAY left unprocessed).
    case reset(code: HTTP2ErrorCode, local: Bool)
    /// The connection went away before the stream finished.
    case connectionLost
    /// The peer sent a header block (head or trailers) over the
    /// connection's limits (`HTTP2Settings.maxHeaderListSize`,
    /// `maxHeaderFields`): the connection reset the stream with
    /// ENHANCE_YOUR_CALM and kept none of the block.
    case headersTooLarge(HTTP2HeaderLimitViolation)
}

/// Receives the events of one stream. All calls happen on the connection's
/// event loop. The connection keeps the delegate alive until `streamDidClose`.
public protocol HTTP2StreamDelegate: AnyObject {
    /// Initial headers (request or response) or trailers, complete.
    func http2(_ connection: HTTP2Connection, stream: Int32, didReceiveHeaders headers: HTTP2HeaderList, isTrailers: Bool, endStream: Bool)
    /// A chunk of DATA. The bytes count against flow control until the
    /// receiver calls `connection.consume(stream:bytes:)`.
    func http2(_ connection: HTTP2Connection, stream: Int32, didReceiveData data: ByteBuffer)
    /// END_STREAM arrived on a DATA frame.
    func http2(_ connection: HTTP2Connection, didReceiveEndOfStream stream: Int32)
    /// `bytes` of the data queued with `send(data:stream:)` were handed to the wire:
    /// the peer's window had room. A proxy credits the other side here.
    func http2(_ connection: HTTP2Connection, stream: Int32, didWriteData bytes: Int)
    /// The stream is gone; no further calls follow.
    func http2(_ connection: HTTP2Connection, stream: Int32, didCloseWith reason: HTTP2StreamCloseReason)
}

/// Connection-level events.
public protocol HTTP2ConnectionDelegate: AnyObject {
    /// Server side: a complete request head arrived on a new stream. Return
    /// the stream's delegate; nil resets the stream with REFUSED_STREAM.
    func http2(_ connection: HTTP2Connection, didReceiveRequest headers: HTTP2HeaderList, stream: Int32, endStream: Bool) -> HTTP2StreamDelegate?
    /// The peer's SETTINGS arrived (client side: the upstream's limits are known).
    func http2ConnectionDidReceiveSettings(_ connection: HTTP2Connection)
    /// The peer sent GOAWAY: no new streams may be opened on this connection.
    func http2(_ connection: HTTP2Connection, didReceiveGoAway lastStreamID: Int32, errorCode: HTTP2ErrorCode)
    /// A stream closed; active stream count dropped.
    func http2(_ connection: HTTP2Connection, didCloseStream stream: Int32)
    /// The TCP connection closed. Streams have already been told.
    func http2ConnectionDidClose(_ connection: HTTP2Connection)
    /// A header block passed the connection's limits and was dropped
    /// (for counting and logging). With `answerable` (server side, a
    /// request head that ended): no stream delegate exists yet, and the
    /// delegate may answer it here with `sendResponseHeaders(endStream:
    /// true)`; when it does not, the stream is reset with
    /// ENHANCE_YOUR_CALM. Otherwise (trailers, a response head, or a
    /// request head decoding to an amplified size) the stream is reset
    /// already, and its delegate, if any, sees `headersTooLarge`.
    func http2(_ connection: HTTP2Connection, didRefuseHeaderBlock violation: HTTP2HeaderLimitViolation, stream: Int32, answerable: Bool)
}

extension HTTP2ConnectionDelegate {
    public func http2(_ connection: HTTP2Connection, didReceiveRequest headers: HTTP2HeaderList, stream: Int32, endStream: Bool) -> HTTP2StreamDelegate? { nil }
    public func http2ConnectionDidReceiveSettings(_ connection: HTTP2Connection) {}
    public func http2(_ connection: HTTP2Connection, didReceiveGoAway lastStreamID: Int32, errorCode: HTTP2ErrorCode) {}
    public func http2(_ connection: HTTP2Connection, didCloseStream stream: Int32) {}
    public func http2ConnectionDidClose(_ connection: HTTP2Connection) {}
    public func http2(_ connection: HTTP2Connection, didRefuseHeaderBlock violation: HTTP2HeaderLimitViolation, stream: Int32, answerable: Bool) {}
}
