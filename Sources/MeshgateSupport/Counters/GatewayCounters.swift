import NIOConcurrencyHelpers

/// Counters of rare, gateway-wide events (reloads, plugin loads, admin
/// connections refused). They take a lock, which is fine off the data path.
public final class GatewayCounters: Sendable {
    public init() {}

    public struct Values: Sendable {
        public var reloadsOK: UInt64 = 0
        public var reloadsFailed: UInt64 = 0
        public var pluginLoads: [String: UInt64] = [:]
        public var adminConnectionsRefused: UInt64 = 0
    }

    private let state = NIOLockedValueBox(Values())

    public var values: Values { state.withLockedValue { $0 } }

    public func reload(succeeded: Bool) {
        state.withLockedValue { if succeeded { $0.reloadsOK += 1 } else { $0.reloadsFailed += 1 } }
    }

    public func adminConnectionRefused() {
        state.withLockedValue { $0.adminConnectionsRefused += 1 }
    }

    public func pluginsLoaded(_ names: [String]) {
        state.withLockedValue { for name in names { $0.pluginLoads[name, default: 0] += 1 } }
    }
}
