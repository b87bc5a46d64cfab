import NIOConcurrencyHelpers

/// A listener's (or an admin address's) `max_connections`, shared by the
/// event loops that accept on it. Taken once per accepted connection and
/// given back when it closes: a lock per connection, none per frame.
/// Refusals are counted under the same lock (for
/// `meshgate_listener_connections_refused_total`).
package final class ConnectionLimit: Sendable {
    package let max: Int
    private let state = NIOLockedValueBox((open: 0, refused: UInt64(0)))

    package init(max: Int) {
        self.max = max
    }

    /// A slot for a new connection, or false at the limit (counted).
    package func acquire() -> Bool {
        state.withLockedValue { state in
            guard state.open < max else {
                state.refused += 1
                return false
            }
            state.open += 1
            return true
        }
    }

    package func release() {
        state.withLockedValue { $0.open -= 1 }
    }

    package var openConnections: Int { state.withLockedValue { $0.open } }

    /// Connections refused at the limit since start.
    package var refused: UInt64 { state.withLockedValue { $0.refused } }
}

extension ConnectionLimit {
    /// A listener's `max_connections` when its config sets none.
    package static let listenerDefault = 10_000
    /// The same for a `health_only` listener: probes (kubelet, a load
    /// balancer's checks) need a few connections at a time, and the port is
    /// plaintext and public.
    package static let healthOnlyDefault = 256
    /// Descriptors kept out of the listeners' share of the open-file limit:
    /// upstream connections, admin connections, plugin and config files.
    package static let reservedFraction = 4

    /// The default `max_connections` of each listener that sets none:
    /// 10,000 (an nginx- or Envoy-sized default; a connection costs a
    /// descriptor and a few KiB), lowered when the listeners together
    /// would pass three quarters of the open-file limit, so that the
    /// gateway still has descriptors for upstreams and its admin address
    /// when clients take every slot (an `accept` failing with EMFILE
    /// would stall the listener instead of refusing one client).
    package static func listenerDefault(openFileLimit: UInt64, listeners: Int) -> Int {
        guard listeners > 0 else { return listenerDefault }
        let limit = min(openFileLimit, UInt64(Int.max / 2))
        let share = (limit - limit / UInt64(reservedFraction)) / UInt64(listeners)
        return Swift.max(1, Swift.min(listenerDefault, Int(share)))
    }
}
