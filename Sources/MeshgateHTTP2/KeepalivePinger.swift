import NIOCore

/// The keepalive of one connection (`HTTP2Connection.startKeepalive`): a
/// PING every `interval`; when its ACK does not come within `timeout`, the
/// connection is closed. Runs on the connection's loop.
///
/// The connection owns its pinger and the pinger holds the connection
/// strongly (no `weak`: that would give every connection a side-table
/// reference count); the connection breaks the cycle when it ends (`stop`).
final class KeepalivePinger {
    private let connection: HTTP2Connection
    private let interval: TimeAmount
    private let timeout: TimeAmount
    /// Called once, before the close, to log who timed out.
    private let onTimeout: (_ reason: String) -> Void
    private var task: Scheduled<Void>?
    private var stopped = false

    init(connection: HTTP2Connection, interval: TimeAmount, timeout: TimeAmount, onTimeout: @escaping (_ reason: String) -> Void) {
        self.connection = connection
        self.interval = interval
        self.timeout = timeout
        self.onTimeout = onTimeout
    }

    func start() { scheduleNextPing() }

    func stop() {
        stopped = true
        task?.cancel()
        task = nil
    }

    /// The ACK of our PING came back: the next one after `interval`.
    func ackReceived() {
        task?.cancel()
        scheduleNextPing()
    }

    private func scheduleNextPing() {
        guard !stopped, let loop = connection.eventLoop else { return }
        task = loop.assumeIsolated().scheduleTask(in: interval) { self.ping() }
    }

    private func ping() {
        guard !stopped, let loop = connection.eventLoop else { return }
        guard connection.sendPing() else { return scheduleNextPing() }
        task = loop.assumeIsolated().scheduleTask(in: timeout) {
            guard !self.stopped else { return }
            let reason = "no PING ACK within \(self.timeout.nanoseconds / 1_000_000) ms (keepalive)"
            self.stopped = true
            self.onTimeout(reason)
            self.connection.close(reason: reason)
        }
    }
}
