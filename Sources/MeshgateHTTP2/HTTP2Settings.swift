import NIOCore

/// Local HTTP/2 settings of one connection.
public struct HTTP2Settings: Sendable {
    /// SETTINGS_MAX_CONCURRENT_STREAMS announced to the peer.
    public var maxConcurrentStreams: UInt32
    /// SETTINGS_INITIAL_WINDOW_SIZE: how much the peer may send on one stream
    /// before we hand out credit. This bounds per-stream buffering in a proxy.
    public var initialStreamWindowSize: UInt32
    /// The connection-level receive window.
    public var connectionWindowSize: UInt32
    /// SETTINGS_MAX_HEADER_LIST_SIZE, and what the connection enforces on
    /// every header block it receives (head or trailers): RFC 9113 §6.5.2's
    /// size (names and values plus 32 per field). nghttp2 only advertises
    /// it; the connection counts while decoding (`HTTP2HeaderBlockMeter`).
    public var maxHeaderListSize: UInt32
    /// Fields in one received header block (pseudo-headers included), as
    /// Envoy's `max_headers_count`. A block over either limit is refused:
    /// a server's request head gets the delegate's answer
    /// (`didRefuseHeaderBlock`), any other block resets its stream with
    /// ENHANCE_YOUR_CALM.
    public var maxHeaderFields: Int = 100

    // Limits on what a peer may make us do, enforced by nghttp2 (set here
    // explicitly rather than relied on as its defaults; the values are
    // nghttp2's, which nghttpx runs with too).

    /// SETTINGS and PING ACKs queued because the peer does not read: more
    /// end the connection (SETTINGS/PING floods, CVE-2019-9512/9515).
    public var maxOutboundAcks: Int = 1000
    /// Entries in one SETTINGS frame: more is a connection error
    /// (ENHANCE_YOUR_CALM).
    public var maxSettingsEntries: Int = 32
    /// RST_STREAM from the peer: a token bucket of `streamResetBurst`
    /// tokens refilled at `streamResetRate` per second; an empty bucket
    /// ends the connection with GOAWAY (rapid reset, CVE-2023-44487).
    public var streamResetBurst: UInt64 = 1000
    public var streamResetRate: UInt64 = 33
    /// CONTINUATION frames after one HEADERS: more end the connection
    /// (CONTINUATION flood).
    public var maxContinuations: Int = 8
    /// The checks nghttp2 leaves to us (`HTTP2InboundFramePolicy`):
    /// consecutive empty DATA/HEADERS frames, and invalid frames in all.
    public var maxConsecutiveEmptyFrames: Int = 1
    public var maxInvalidFrames: Int = 100
    /// A stream whose queued outbound bytes make no progress for this long
    /// (the peer's window stays shut) is reset with CANCEL; zero: never.
    public var sendTimeout: TimeAmount = .zero
    /// Outbound bytes queued on all the connection's streams together (the
    /// peer does not read fast enough): the stream whose bytes would pass
    /// this is reset with ENHANCE_YOUR_CALM and its queue dropped; zero:
    /// no cap beyond each stream's window.
    public var maxQueuedBytes: Int = 0
    /// The process-wide cap on queued outbound bytes, shared with every
    /// other connection (see `HTTP2BufferBudget`); nil: none.
    public var bufferBudget: HTTP2BufferBudget?

    public init(
        maxConcurrentStreams: UInt32 = 1024,
        initialStreamWindowSize: UInt32 = 1 << 20,
        connectionWindowSize: UInt32 = 16 << 20,
        maxHeaderListSize: UInt32 = 60 << 10
    ) {
        self.maxConcurrentStreams = maxConcurrentStreams
        self.initialStreamWindowSize = initialStreamWindowSize
        self.connectionWindowSize = connectionWindowSize
        self.maxHeaderListSize = maxHeaderListSize
    }
}
