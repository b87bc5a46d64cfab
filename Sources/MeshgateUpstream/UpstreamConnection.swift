import MeshgateHTTP2
import MeshgateCallCore
import MeshgateSupport

/// One client HTTP/2 connection to an upstream endpoint, owned by its pool:
/// made for the pool's dial (`HTTP2Dialer`), whose delegate it becomes
/// once the upstream's first SETTINGS arrived.
public final class UpstreamConnection: HTTP2ConnectionDelegate, EndpointPoolConnection {
    /// Upstream windows are as large as downstream ones, so a proxied stream
    /// is never throttled by the gateway's own buffers.
    public static let settings = HTTP2Settings(maxConcurrentStreams: 100, initialStreamWindowSize: 1 << 20, connectionWindowSize: 16 << 20)

    /// Strong: a pool a reload dropped must outlive its closing connections
    /// (they report to it until closed); the pool drops each connection as
    /// it closes, which ends the cycle.
    public let pool: EndpointPool
    /// Set when the dial succeeds.
    public var http2: HTTP2Connection?
    /// True until the dial succeeds (or fails).
    public var isConnecting = true
    public private(set) var isClosed = false

    public init(pool: EndpointPool) {
        self.pool = pool
    }

    public var isReady: Bool { !isConnecting && !isClosed && (http2?.canOpenStreams ?? false) }

    public var activeStreams: Int { http2?.activeStreamCount ?? 0 }

    public var hasRoom: Bool {
        guard isReady, let http2 else { return false }
        return http2.activeStreamCount < http2.remoteMaxConcurrentStreams
    }

    public var receivedGoAway: Bool { http2?.receivedGoAway ?? false }

    public var takesNoNewStreams: Bool { isClosed || receivedGoAway }

    /// A later SETTINGS may raise the stream limit.
    public func http2ConnectionDidReceiveSettings(_ connection: HTTP2Connection) {
        pool.serviceWaiters()
    }

    public func http2(_ connection: HTTP2Connection, didReceiveGoAway lastStreamID: Int32, errorCode: HTTP2ErrorCode) {
        Log.info("upstream sent GOAWAY", ["endpoint": pool.address, "last_stream_id": String(lastStreamID), "error_code": errorCode.name])
        pool.connectionUnusable(self)
    }

    public func http2(_ connection: HTTP2Connection, didCloseStream stream: Int32) {
        pool.serviceWaiters()
    }

    /// An upstream's response head or trailers passed the cluster's
    /// limits: its stream is reset and the call sees RESOURCE_EXHAUSTED.
    public func http2(_ connection: HTTP2Connection, didRefuseHeaderBlock violation: HTTP2HeaderLimitViolation, stream: Int32, answerable: Bool) {
        LimitCounters.shared.headerBlockRefused(.upstream, violation)
        if Log.minimumLevel == .debug {
            Log.debug("upstream header block over the cluster's limit", [
                "cluster": pool.cluster.name, "endpoint": pool.address, "stream": String(stream), "limit": violation.clusterLimitText,
            ])
        }
    }

    public func http2ConnectionDidClose(_ connection: HTTP2Connection) {
        isClosed = true
        if let reason = connection.closeReason {
            Log.warning("upstream connection closed", ["endpoint": pool.address, "reason": reason])
        }
        pool.connectionUnusable(self)
    }
}
