import NIOConcurrencyHelpers

/// Counters of rare, gateway-wide events (reloads, plugin loads, admin
/// connections refused). They take a lock, which is fine off the data path.
public final class GatewayCounters: Sendable {
    package init() {}

    package struct Values: Sendable {
        package var reloadsOK: UInt64 = 0
        package var reloadsFailed: UInt64 = 0
        package var pluginLoads: [String: UInt64] = [:]
        package var adminConnectionsRefused: UInt64 = 0
    }

    private let state = NIOLockedValueBox(Values())

    package var values: Values { state.withLockedValue { $0 } }

    package func reload(succeeded: Bool) {
        state.withLockedValue { if succeeded { $0.reloadsOK += 1 } else { $0.reloadsFailed += 1 } }
    }

    package func adminConnectionRefused() {
        state.withLockedValue { $0.adminConnectionsRefused += 1 }
    }

    package func pluginsLoaded(_ names: [String]) {
        state.withLockedValue { for name in names { $0.pluginLoads[name, default: 0] += 1 } }
    }
}
