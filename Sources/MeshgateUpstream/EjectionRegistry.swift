import NIOConcurrencyHelpers
import NIOCore
import MeshgateConfig
import MeshgateSupport

/// Outlier ejections, kept by the host so that they survive a hot swap of
/// the plugin that made them. Keyed by cluster name and endpoint id (ids
/// derive from addresses, so they also survive a config reload). Every
/// change is pushed to each event loop, whose balancer view marks the
/// endpoint `ejected`; the data path itself never takes this lock.
public final class EjectionRegistry: Sendable {
    private struct Entry {
        public var until: NIODeadline
        public var timer: Scheduled<Void>?
    }

    private let state = NIOLockedValueBox<[String: [UInt64: Entry]]>([:])
    /// Known endpoints per cluster, id to address (for the "unknown
    /// endpoint" answer, and to name endpoints in events).
    private let known = NIOLockedValueBox<[String: [UInt64: String]]>([:])
    /// Applies a change on every event loop.
    private let publish = NIOLockedValueBox<(@Sendable (String, UInt64, Bool) -> Void)?>(nil)
    /// Ejections made so far, by cluster (for /metrics).
    private let ejectionCounts = NIOLockedValueBox<[String: UInt64]>([:])

    public var ejectionsTotal: [String: UInt64] { ejectionCounts.withLockedValue { $0 } }

    public init() {}

    public func setPublisher(_ publisher: @escaping @Sendable (String, UInt64, Bool) -> Void) {
        publish.withLockedValue { $0 = publisher }
    }

    public func setMembership(_ clusters: [ClusterConfig]) {
        known.withLockedValue { known in
            known = [:]
            for cluster in clusters {
                var ids: [UInt64: String] = [:]
                for endpoint in cluster.endpoints {
                    let address = endpoint.address.description
                    ids[ClusterPool.endpointID(address: address)] = address
                }
                known[cluster.name] = ids
            }
        }
    }

    /// Ejects for `durationMs` (0 = uneject now). False when unknown.
    public func eject(cluster: String, endpointID: UInt64, durationMs: UInt32) -> Bool {
        guard known.withLockedValue({ $0[cluster]?[endpointID] != nil }) else { return false }
        if durationMs == 0 {
            end(cluster: cluster, endpointID: endpointID)
            return true
        }
        let until = NIODeadline.now() + .milliseconds(Int64(durationMs))
        let timer = ControlThread.loop.scheduleTask(deadline: until) { [self] in
            self.expire(cluster: cluster, endpointID: endpointID, at: until)
        }
        let previous = state.withLockedValue { s -> Entry? in
            let old = s[cluster]?[endpointID]
            s[cluster, default: [:]][endpointID] = Entry(until: until, timer: timer)
            return old
        }
        previous?.timer?.cancel()
        if previous == nil {
            ejectionCounts.withLockedValue { $0[cluster, default: 0] += 1 }
            GatewayEvents.shared.record(.ejection, .warning, "endpoint ejected", ["cluster": cluster, "endpoint": address(cluster, endpointID),
                                                                              "duration_ms": String(durationMs)])
            publish.withLockedValue { $0 }?(cluster, endpointID, true)
        }
        return true
    }

    private func expire(cluster: String, endpointID: UInt64, at until: NIODeadline) {
        let current = state.withLockedValue { $0[cluster]?[endpointID]?.until }
        guard current == until else { return }
        end(cluster: cluster, endpointID: endpointID)
    }

    private func end(cluster: String, endpointID: UInt64) {
        let removed = state.withLockedValue { $0[cluster]?.removeValue(forKey: endpointID) }
        guard let removed else { return }
        removed.timer?.cancel()
        GatewayEvents.shared.record(.ejection, .info, "endpoint ejection ended", ["cluster": cluster, "endpoint": address(cluster, endpointID)])
        publish.withLockedValue { $0 }?(cluster, endpointID, false)
    }

    /// The endpoint's address, or its id when it left the membership.
    private func address(_ cluster: String, _ endpointID: UInt64) -> String {
        known.withLockedValue { $0[cluster]?[endpointID] } ?? "id \(endpointID)"
    }

    public func isEjected(cluster: String, endpointID: UInt64) -> Bool {
        state.withLockedValue { $0[cluster]?[endpointID] != nil }
    }
}
