/// Local HTTP/2 settings of one connection.
public struct HTTP2Settings: Sendable {
    /// SETTINGS_MAX_CONCURRENT_STREAMS announced to the peer.
    public var maxConcurrentStreams: UInt32
    /// SETTINGS_INITIAL_WINDOW_SIZE: how much the peer may send on one stream
    /// before we hand out credit. This bounds per-stream buffering in a proxy.
    public var initialStreamWindowSize: UInt32
    /// The connection-level receive window.
    public var connectionWindowSize: UInt32
    /// SETTINGS_MAX_HEADER_LIST_SIZE.
    public var maxHeaderListSize: UInt32

    public init(
        maxConcurrentStreams: UInt32 = 1024,
        initialStreamWindowSize: UInt32 = 1 << 20,
        connectionWindowSize: UInt32 = 16 << 20,
        maxHeaderListSize: UInt32 = 64 << 10
    ) {
        self.maxConcurrentStreams = maxConcurrentStreams
        self.initialStreamWindowSize = initialStreamWindowSize
        self.connectionWindowSize = connectionWindowSize
        self.maxHeaderListSize = maxHeaderListSize
    }
}
