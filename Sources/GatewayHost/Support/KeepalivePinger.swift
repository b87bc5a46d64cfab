import MeshgateHTTP2
import NIOCore

/// `keepalive:` of a cluster or a listener, on one connection: an HTTP/2
/// PING every `interval`; when its ACK does not come within `timeout`, the
/// connection is closed (its streams see a lost connection). Runs on the
/// connection's event loop; `stop` when the connection closes.
final class KeepalivePinger {
    private let config: KeepaliveConfig
    private weak var connection: HTTP2Connection?
    /// Called once, before the close, to log who timed out.
    private let onTimeout: (_ reason: String) -> Void
    private var task: Scheduled<Void>?
    private var stopped = false

    init(config: KeepaliveConfig, connection: HTTP2Connection, onTimeout: @escaping (_ reason: String) -> Void) {
        self.config = config
        self.connection = connection
        self.onTimeout = onTimeout
    }

    func start() { schedule() }

    func stop() {
        stopped = true
        task?.cancel()
        task = nil
    }

    private func schedule() {
        guard !stopped, let loop = connection?.eventLoop else { return }
        task = loop.assumeIsolated().scheduleTask(in: .nanoseconds(config.interval.nanosecondsClamped)) { self.ping() }
    }

    private func ping() {
        guard !stopped, let connection, let loop = connection.eventLoop else { return }
        let sent = connection.ping { [weak self] in
            self?.task?.cancel()
            self?.schedule()
        }
        guard sent else { return schedule() }
        task = loop.assumeIsolated().scheduleTask(in: .nanoseconds(config.timeout.nanosecondsClamped)) {
            guard !self.stopped, let connection = self.connection else { return }
            let reason = "no PING ACK within \(self.config.timeout) (keepalive)"
            self.stopped = true
            self.onTimeout(reason)
            connection.close(reason: reason)
        }
    }
}
