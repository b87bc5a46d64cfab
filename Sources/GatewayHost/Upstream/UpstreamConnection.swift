import MeshgateHTTP2

/// One client HTTP/2 connection to an upstream endpoint, owned by its pool.
final class UpstreamConnection: HTTP2ConnectionDelegate {
    /// Upstream windows are as large as downstream ones, so a proxied stream
    /// is never throttled by the gateway's own buffers.
    static let settings = HTTP2Settings(maxConcurrentStreams: 100, initialStreamWindowSize: 1 << 20, connectionWindowSize: 16 << 20)

    /// Strong: a pool a reload dropped must outlive its closing connections
    /// (they report to it until closed); the pool drops each connection as
    /// it closes, which ends the cycle.
    let pool: EndpointPool
    var http2: HTTP2Connection?
    /// True until the upstream's first SETTINGS frame.
    var isConnecting = true
    var failureReason: String?
    private(set) var isClosed = false
    /// Cluster `keepalive`, once the connection is up.
    private var keepalive: KeepalivePinger?

    init(pool: EndpointPool) {
        self.pool = pool
    }

    var isReady: Bool { !isConnecting && !isClosed && (http2?.canOpenStreams ?? false) }

    var activeStreams: Int { http2?.activeStreamCount ?? 0 }

    var hasRoom: Bool {
        guard isReady, let http2 else { return false }
        return http2.activeStreamCount < http2.remoteMaxConcurrentStreams
    }

    func http2ConnectionDidReceiveSettings(_ connection: HTTP2Connection) {
        if http2 == nil { http2 = connection }
        guard connection === http2 else { return }
        if isConnecting {
            pool.connectionReady(self)
            if let config = pool.cluster.keepalive {
                keepalive = KeepalivePinger(config: config, connection: connection) { [pool] reason in
                    Log.warning("upstream keepalive timed out", ["endpoint": pool.address, "reason": reason])
                }
                keepalive?.start()
            }
        } else {
            pool.serviceWaiters()
        }
    }

    var receivedGoAway: Bool { http2?.receivedGoAway ?? false }

    func http2(_ connection: HTTP2Connection, didReceiveGoAway lastStreamID: Int32, errorCode: UInt32) {
        Log.info("upstream sent GOAWAY", ["endpoint": pool.address, "last_stream_id": String(lastStreamID), "error_code": String(errorCode)])
        pool.connectionUnusable(self)
    }

    func http2(_ connection: HTTP2Connection, didCloseStream stream: Int32) {
        pool.serviceWaiters()
    }

    func http2ConnectionDidClose(_ connection: HTTP2Connection) {
        // A losing or failed connect attempt: the connect result reports it.
        guard connection.hasStarted, http2 == nil || connection === http2 else { return }
        isClosed = true
        keepalive?.stop()
        keepalive = nil
        if isConnecting {
            pool.connectionFailed(self, error: failureReason ?? connection.closeReason ?? "the upstream closed the connection before its HTTP/2 SETTINGS")
            return
        }
        if let reason = connection.closeReason {
            Log.warning("upstream connection closed", ["endpoint": pool.address, "reason": reason])
        }
        pool.connectionUnusable(self)
    }
}
