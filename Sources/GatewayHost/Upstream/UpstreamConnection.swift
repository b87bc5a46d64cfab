import MeshgateHTTP2
import NIOCore

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
    /// The next keepalive PING, or the wait for its ACK.
    private var keepaliveTask: Scheduled<Void>?

    init(pool: EndpointPool) {
        self.pool = pool
    }

    /// Cluster `keepalive`: a PING every interval; no ACK within the
    /// timeout closes the connection (its calls fail as a lost connection).
    private func scheduleKeepalive() {
        guard let keepalive = pool.cluster.keepalive, !isClosed, let loop = http2?.eventLoop else { return }
        keepaliveTask = loop.assumeIsolated().scheduleTask(in: .nanoseconds(keepalive.interval.nanosecondsClamped)) {
            self.sendKeepalive(keepalive)
        }
    }

    private func sendKeepalive(_ keepalive: KeepaliveConfig) {
        guard !isClosed, let http2, let loop = http2.eventLoop else { return }
        let sent = http2.ping { [weak self] in
            self?.keepaliveTask?.cancel()
            self?.scheduleKeepalive()
        }
        guard sent else { return scheduleKeepalive() }
        keepaliveTask = loop.assumeIsolated().scheduleTask(in: .nanoseconds(keepalive.timeout.nanosecondsClamped)) {
            let reason = "no PING ACK within \(keepalive.timeout) (keepalive)"
            Log.warning("upstream keepalive timed out", ["endpoint": self.pool.address, "reason": reason])
            http2.close(reason: reason)
        }
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
            scheduleKeepalive()
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
        keepaliveTask?.cancel()
        keepaliveTask = nil
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
