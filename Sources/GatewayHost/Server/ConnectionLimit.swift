import NIOConcurrencyHelpers

/// A listener's (or an admin address's) `max_connections`, shared by the
/// event loops that accept on it. Taken once per accepted connection and
/// given back when it closes: a lock per connection, none per frame.
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

    var openConnections: Int { open.withLockedValue { $0 } }
}

extension ConnectionLimit {
    /// A listener's `max_connections` when its config sets none.
    static let listenerDefault = 10_000
    /// The same for a `health_only` listener: probes (kubelet, a load
    /// balancer's checks) need a few connections at a time, and the port is
    /// plaintext and public.
    static let healthOnlyDefault = 256
    /// Descriptors kept out of the listeners' share of the open-file limit:
    /// upstream connections, admin connections, plugin and config files.
    static let reservedFraction = 4

    /// The default `max_connections` of each listener that sets none:
    /// 10,000 (an nginx- or Envoy-sized default; a connection costs a
    /// descriptor and a few KiB), lowered when the listeners together
    /// would pass three quarters of the open-file limit, so that the
    /// gateway still has descriptors for upstreams and its admin address
    /// when clients take every slot (an `accept` failing with EMFILE
    /// would stall the listener instead of refusing one client).
    static func listenerDefault(openFileLimit: UInt64, listeners: Int) -> Int {
        guard listeners > 0 else { return listenerDefault }
        let limit = min(openFileLimit, UInt64(Int.max / 2))
        let share = (limit - limit / UInt64(reservedFraction)) / UInt64(listeners)
        return Swift.max(1, Swift.min(listenerDefault, Int(share)))
    }
}
