import NIOCore

/// Resets streams whose queued outbound bytes make no progress for
/// `timeout` (nginx's `send_timeout`): a peer that keeps its window at zero
/// and never reads would otherwise hold each stream, its upstream side and
/// the buffered bytes for as long as it likes.
///
/// Cheap on the data path: a stream only counts the bytes that leave it
/// (`StreamState.drained`); this checks every `timeout / 4` while some
/// stream has bytes queued, and a stream found without progress at four
/// checks in a row is reset. So a stall is cut after between 3/4 and 5/4
/// of `timeout`.
final class SendStallWatch {
    static let checksPerTimeout = 4

    private unowned(unsafe) let connection: HTTP2Connection
    // unowned(unsafe): the connection owns this watch and stops it (which
    // cancels the only task that calls back) when it ends.
    private let interval: TimeAmount
    private var task: Scheduled<Void>?

    init(connection: HTTP2Connection, timeout: TimeAmount) {
        self.connection = connection
        self.interval = .nanoseconds(max(timeout.nanoseconds / Int64(Self.checksPerTimeout), 1_000_000))
    }

    /// Some stream has bytes queued: checks run until none has.
    func arm(on loop: EventLoop) {
        guard task == nil else { return }
        task = loop.assumeIsolated().scheduleTask(in: interval) { [self] in
            task = nil
            if connection.checkSendStalls(limit: Self.checksPerTimeout) { arm(on: loop) }
        }
    }

    func stop() {
        task?.cancel()
        task = nil
    }
}
