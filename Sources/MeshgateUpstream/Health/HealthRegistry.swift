import GRPCHealthProto
import NIOConcurrencyHelpers
import NIOCore
import MeshgateSupport
import MeshgateRouting

/// What the gateway says about health: its own state, each endpoint's
/// (from active checks) and, from those, each routed service's. It pushes
/// endpoint changes to every event loop's pools and status changes to every
/// `Watch` stream. Changes are rare; reads on the data path never come here
/// (each loop keeps its own copy of endpoint health).
public final class HealthRegistry: Sendable {
    public typealias Status = Grpc_Health_V1_HealthCheckResponse.ServingStatus

    /// A Watch stream, called on its own loop.
    public final class Watcher {
        public let send: (Status) -> Void
        public let finish: () -> Void
        public init(send: @escaping (Status) -> Void, finish: @escaping () -> Void) {
            self.send = send
            self.finish = finish
        }
    }

    private struct WatchEntry {
        public let service: String
        public let loop: EventLoop
        public let watcher: NIOLoopBound<Watcher>
    }

    private struct State {
        /// Routed service name -> indexes of the clusters its routes point to.
        public var serviceClusters: [String: [Int]]
        public var started = false
        public var draining = false
        public var endpointHealthy: [[Bool]]
        public var clusterNames: [String]
        public var endpointAddresses: [[String]]
        /// Bumped by a reload that changes clusters: reports of the previous
        /// health checker (by index) no longer apply.
        public var epoch = 0
        public var watches: [ObjectIdentifier: WatchEntry] = [:]
        public var lastSent: [String: Status] = [:]
        /// "cluster address" of endpoints added at run time that have had
        /// no check verdict yet: their first passing check lets them in. An
        /// endpoint that failed checks needs `healthy_threshold` passes,
        /// even when a membership change restarts its probe.
        public var awaitingFirstCheck: Set<String> = []
    }

    private let state: NIOLockedValueBox<State>
    /// Set by the gateway: applies an endpoint change on every loop.
    public let applyToLoops: @Sendable (_ cluster: String, _ address: String, _ healthy: Bool) -> Void

    /// The names that mean "the gateway itself" ("" per the health protocol;
    /// the health service's own name, as Kubernetes liveness probes often ask).
    public static let selfNames: Set<String> = ["", "grpc.health.v1.Health"]

    public init(serving: ServingConfig, applyToLoops: @escaping @Sendable (String, String, Bool) -> Void) {
        self.state = NIOLockedValueBox(State(serviceClusters: Self.serviceClusters(serving),
                                             endpointHealthy: serving.clusters.map { $0.endpoints.map { _ in true } },
                                             clusterNames: serving.clusters.map(\.name),
                                             endpointAddresses: serving.clusters.map { $0.endpoints.map { $0.address.description } }))
        self.applyToLoops = applyToLoops
    }

    /// A reload or discovery changed the clusters: endpoints that stay keep
    /// their health (by cluster name and address), and a new epoch begins
    /// (returned, for the new health checker). A new endpoint of a
    /// health-checked cluster starts unhealthy until its first check passes
    /// (as Envoy treats hosts added at run time); without checks it starts
    /// healthy.
    public func reconfigure(_ serving: ServingConfig) -> Int {
        let services = Self.serviceClusters(serving)
        var epoch = 0
        change { s in
            var known: [String: Bool] = [:]
            for (c, name) in s.clusterNames.enumerated() {
                for (e, address) in s.endpointAddresses[c].enumerated() { known["\(name) \(address)"] = s.endpointHealthy[c][e] }
            }
            s.clusterNames = serving.clusters.map(\.name)
            s.endpointAddresses = serving.clusters.map { $0.endpoints.map { $0.address.description } }
            s.endpointHealthy = serving.clusters.map { cluster in
                cluster.endpoints.map { known["\(cluster.name) \($0.address.description)"] ?? (cluster.healthCheck == nil) }
            }
            var awaiting: Set<String> = []
            for cluster in serving.clusters where cluster.healthCheck != nil {
                for endpoint in cluster.endpoints {
                    let key = "\(cluster.name) \(endpoint.address.description)"
                    if known[key] == nil || s.awaitingFirstCheck.contains(key) { awaiting.insert(key) }
                }
            }
            s.awaitingFirstCheck = awaiting
            s.serviceClusters = services
            s.epoch += 1
            epoch = s.epoch
        }
        return epoch
    }

    /// The health an endpoint of the current config has (true when unknown).
    public func isHealthy(cluster name: String, address: String) -> Bool {
        state.withLockedValue { s in
            guard let c = s.clusterNames.firstIndex(of: name), let e = s.endpointAddresses[c].firstIndex(of: address) else { return true }
            return s.endpointHealthy[c][e]
        }
    }

    /// The health of endpoint `endpoint` of cluster `cluster` (by index, in
    /// the current epoch; true when out of range).
    public func isHealthy(cluster: Int, endpoint: Int) -> Bool {
        state.withLockedValue { s in
            guard cluster < s.endpointHealthy.count, endpoint < s.endpointHealthy[cluster].count else { return true }
            return s.endpointHealthy[cluster][endpoint]
        }
    }

    /// Routed service name -> indexes of the clusters its routes point to.
    private static func serviceClusters(_ serving: ServingConfig) -> [String: [Int]] {
        var services: [String: Set<Int>] = [:]
        for listener in serving.listeners {
            for route in listener.routes.routes {
                var name = route.config.match.service
                if name == nil, let method = route.config.match.method {
                    name = String(method.split(separator: "/").first ?? "")
                }
                if let name, !name.isEmpty { services[name, default: []].insert(route.clusterIndex) }
            }
        }
        return services.mapValues { $0.sorted() }
    }

    /// A reload changed the routes: service statuses follow the new ones.
    public func updateRoutes(_ serving: ServingConfig) {
        let services = Self.serviceClusters(serving)
        change { $0.serviceClusters = services }
    }

    // MARK: Queries

    /// The status of `service`, or nil when the gateway does not know it.
    public func status(of service: String) -> Status? {
        state.withLockedValue { Self.status(of: service, in: $0) }
    }

    public func allStatuses() -> [String: Status] {
        state.withLockedValue { s in
            var all: [String: Status] = [:]
            for name in s.serviceClusters.keys.sorted() + [""] {
                all[name] = Self.status(of: name, in: s)
            }
            return all
        }
    }

    /// Started and not draining: ready to take traffic.
    public var isReady: Bool { state.withLockedValue { $0.started && !$0.draining } }

    private static func status(of service: String, in s: State) -> Status? {
        if selfNames.contains(service) {
            return s.started && !s.draining ? .serving : .notServing
        }
        guard let clusters = s.serviceClusters[service] else { return nil }
        if !s.started || s.draining { return .notServing }
        let usable = clusters.allSatisfy { s.endpointHealthy[$0].contains(true) }
        return usable ? .serving : .notServing
    }

    // MARK: Changes

    public func markStarted() { change { $0.started = true } }

    /// SIGTERM: every status turns NOT_SERVING before any GOAWAY goes out.
    public func markDraining() { change { $0.draining = true } }

    /// Whether the endpoint was added at run time and has had no check verdict yet.
    public func awaitsFirstCheck(cluster: Int, endpoint: Int) -> Bool {
        state.withLockedValue { s in
            guard cluster < s.endpointAddresses.count, endpoint < s.endpointAddresses[cluster].count else { return false }
            return s.awaitingFirstCheck.contains("\(s.clusterNames[cluster]) \(s.endpointAddresses[cluster][endpoint])")
        }
    }

    /// The endpoint's first check failed: from now on it recovers like any
    /// unhealthy endpoint.
    public func firstCheckFailed(epoch: Int, cluster: Int, endpoint: Int) {
        state.withLockedValue { s in
            guard s.epoch == epoch, cluster < s.endpointAddresses.count, endpoint < s.endpointAddresses[cluster].count else { return }
            s.awaitingFirstCheck.remove("\(s.clusterNames[cluster]) \(s.endpointAddresses[cluster][endpoint])")
        }
    }

    public func setEndpoint(epoch: Int, cluster: Int, endpoint: Int, healthy: Bool, reason: String) {
        var changed = false
        var names = ("", "")
        change { s in
            guard s.epoch == epoch, cluster < s.endpointHealthy.count, endpoint < s.endpointHealthy[cluster].count else { return }
            changed = s.endpointHealthy[cluster][endpoint] != healthy
            s.endpointHealthy[cluster][endpoint] = healthy
            s.awaitingFirstCheck.remove("\(s.clusterNames[cluster]) \(s.endpointAddresses[cluster][endpoint])")
            names = (s.clusterNames[cluster], s.endpointAddresses[cluster][endpoint])
        }
        guard changed else { return }
        GatewayEvents.shared.record(.health, healthy ? .info : .warning, healthy ? "endpoint healthy" : "endpoint unhealthy",
                                    ["cluster": names.0, "endpoint": names.1, "reason": reason])
        applyToLoops(names.0, names.1, healthy)
    }

    /// Applies `update`, then tells each watcher whose service changed.
    private func change(_ update: (inout State) -> Void) {
        let notifications: [(EventLoop, NIOLoopBound<Watcher>, Status)] = state.withLockedValue { s in
            update(&s)
            var out: [(EventLoop, NIOLoopBound<Watcher>, Status)] = []
            var current: [String: Status] = [:]
            for entry in s.watches.values {
                let status = current[entry.service] ?? (Self.status(of: entry.service, in: s) ?? .serviceUnknown)
                current[entry.service] = status
            }
            for (service, status) in current where s.lastSent[service] != status {
                s.lastSent[service] = status
                for entry in s.watches.values where entry.service == service {
                    out.append((entry.loop, entry.watcher, status))
                }
            }
            return out
        }
        for (loop, watcher, status) in notifications {
            loop.execute { watcher.value.send(status) }
        }
    }

    // MARK: Watch streams

    /// Registers a Watch and returns the status to send first.
    public func addWatch(service: String, id: ObjectIdentifier, loop: EventLoop, watcher: Watcher) -> Status {
        let bound = NIOLoopBound(watcher, eventLoop: loop)
        return state.withLockedValue { s in
            let status = Self.status(of: service, in: s) ?? .serviceUnknown
            s.watches[id] = WatchEntry(service: service, loop: loop, watcher: bound)
            s.lastSent[service] = status
            return status
        }
    }

    public func removeWatch(id: ObjectIdentifier) {
        state.withLockedValue { s in
            // A name no watch follows any more is forgotten: clients choose
            // the names, so keeping each one would grow without bound.
            guard let removed = s.watches.removeValue(forKey: id),
                  !s.watches.values.contains(where: { $0.service == removed.service }) else { return }
            s.lastSent.removeValue(forKey: removed.service)
        }
    }

    /// Ends every Watch stream (drain: they would otherwise hold their
    /// connections open until the drain timeout).
    public func finishAllWatches() {
        let entries = state.withLockedValue { s -> [WatchEntry] in
            defer { s.watches.removeAll() }
            return Array(s.watches.values)
        }
        for entry in entries {
            let watcher = entry.watcher
            entry.loop.execute { watcher.value.finish() }
        }
    }
}
