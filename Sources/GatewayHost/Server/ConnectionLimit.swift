import NIOConcurrencyHelpers

/// A listener's `max_connections`, shared by the event loops that accept
/// on it. Taken once per accepted connection and given back when it
/// closes: a lock per connection, none per frame.
final class ConnectionLimit: Sendable {
    let max: Int
    private let open = NIOLockedValueBox(0)

    init(max: Int) {
        self.max = max
    }

    /// A slot for a new connection, or false at the limit.
    func acquire() -> Bool {
        open.withLockedValue { count in
            guard count < max else { return false }
            count += 1
            return true
        }
    }

    func release() {
        open.withLockedValue { $0 -= 1 }
    }
}
