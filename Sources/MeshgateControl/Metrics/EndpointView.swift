import MeshgateGRPC

/// One upstream endpoint as `/metrics` and the dashboard see it: who it is,
/// its gateway-wide state, the event loops' counters for it, and (in the
/// dashboard's data) its rates over the window. A loop's snapshot fills the
/// counters; `MetricsSnapshot.endpoints` the state; `mergedEndpoints()`
/// adds the loops' counters up; `DashboardData` the rates. (The dashboard's
/// series keeps only a few numbers of it a second: `DashboardSeries.EndpointPoint`.)
package struct EndpointView: Sendable {
    package var cluster: String
    package var address: String

    /// From active health checks (true without them).
    package var healthy = true
    /// Outlier detection keeps it out of rotation.
    package var ejected = false
    package var weight = 1

    /// Attempts in flight, open connections and ended attempts by status
    /// (one loop's, or all loops' added up).
    package var inFlight = 0
    package var connections = 0
    package var attemptCodes = GRPCStatusCounts()

    /// Over the dashboard's window: attempts a second, their share of all
    /// endpoints' attempts, and the fraction that failed.
    package var rate = 0.0
    package var share = 0.0
    package var errorRatio = 0.0

    package init(cluster: String, address: String) {
        self.cluster = cluster
        self.address = address
    }

    /// "cluster address": how the views of one endpoint are matched up.
    package var id: String { cluster + " " + address }

    /// Adds another loop's counters for the same endpoint.
    package mutating func addCounters(of other: EndpointView) {
        inFlight += other.inFlight
        connections += other.connections
        attemptCodes.add(other.attemptCodes)
    }
}
