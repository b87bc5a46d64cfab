import MeshgatePosix
import NIOConcurrencyHelpers
import NIOCore
import MeshgateConfig
import MeshgateSupport

/// Runs the discovery source of every cluster that has one, keeps each
/// cluster's last known endpoints, and tells the gateway when a cluster's
/// membership changed (the gateway then installs a generation with the new
/// endpoints, as a reload does).
///
/// A source that fails, or answers with no endpoints at all, never empties
/// its cluster: the last known set stays, and the failure shows on
/// `/clusters`. Sources run on the control thread.
///
/// Every answer is checked before it is used: an endpoint that is one of
/// the gateway's own addresses is refused (`GatewayOwnAddresses`), and
/// past the cluster's `max_endpoints` the rest are dropped; each with a
/// log line when it starts or changes.
public final class DiscoveryManager: Sendable {
    /// What `/clusters` shows of one cluster's discovery.
    public struct Status: Sendable {
        public var source: String
        /// nil until the source has answered once.
        public var endpoints: [EndpointConfig]?
        public var lastError: String?
        public var consecutiveFailures = 0
        public var totalFailures = 0
        public var updates = 0
        /// Unix time of the last answer that was used.
        public var lastSuccess: Double?
        /// The last answer was empty and was not applied.
        public var ignoredEmpty = false
        /// Endpoints of the last answer past `max_endpoints`, left out.
        public var droppedEndpoints = 0
        /// The first `maxRefusedShown` endpoints of the last answer that
        /// are the gateway's own addresses, refused: "ADDRESS (listener
        /// 'public' 0.0.0.0:50051)".
        public var refusedOwnAddresses: [String] = []
        /// How many the last answer had in all (a 4 MiB file of them is
        /// ~250,000: counted, not kept).
        public var refusedOwnAddressCount = 0

        public var state: String {
            if endpoints == nil { return consecutiveFailures > 0 ? "failing (no endpoints yet)" : "waiting" }
            if ignoredEmpty { return "empty answer ignored" }
            return consecutiveFailures > 0 ? "failing (serving last known endpoints)" : "ok"
        }
    }

    private let statuses = NIOLockedValueBox<[String: Status]>([:])
    private let running = NIOLockedValueBox<[String: RunningSource]>([:])
    private let onChange = NIOLockedValueBox<(@Sendable () -> Void)?>(nil)
    private let changePending = NIOLockedValueBox(false)

    /// One started source. `@unchecked Sendable`: the source inside is
    /// created, used and stopped only on the control thread; the box only
    /// carries it between calls that all run there.
    private final class RunningSource: @unchecked Sendable {
        public let spec: DiscoveryConfig
        public let checks: AnswerChecks
        public let source: DiscoverySource
        public let tls: TLSContextSource?
        public init(spec: DiscoveryConfig, checks: AnswerChecks, source: DiscoverySource, tls: TLSContextSource?) {
            self.spec = spec
            self.checks = checks
            self.source = source
            self.tls = tls
        }
    }

    /// Refused own addresses kept for `/clusters` and the log line; the
    /// rest are counted.
    public static let maxRefusedShown = 16

    /// What every answer of a cluster's source is held to. A reload that
    /// changes it restarts the source, whose next answer is checked anew.
    public struct AnswerChecks: Equatable, Sendable {
        public var maxEndpoints: Int
        public var own: GatewayOwnAddresses
    }

    private struct Wanted {
        public var spec: DiscoveryConfig
        public var checks: AnswerChecks
        public var tls: TLSContextSource?
    }

    public init() {}

    /// The TLS material of the running etcd sources, for the gateway's
    /// certificate watcher: files replaced in place apply to the next
    /// connection to etcd, as they do for listeners and clusters.
    public var tlsSources: [TLSContextSource] { running.withLockedValue { $0.values.compactMap(\.tls) } }

    /// Called (on the control thread) after a membership change, at most
    /// once per 50 ms burst of changes.
    public func setOnChange(_ body: @escaping @Sendable () -> Void) {
        onChange.withLockedValue { $0 = body }
    }

    /// Starts, keeps or stops sources to match `config` (startup and every
    /// reload). A source whose spec did not change keeps running and keeps
    /// its endpoints. Throws when an etcd `tls:` block cannot be loaded.
    public func configure(_ config: GatewayConfig) throws(ConfigError) {
        var wanted: [String: Wanted] = [:]
        let own = config.clusters.contains { $0.discovery != nil } ? GatewayOwnAddresses(config) : GatewayOwnAddresses()
        for cluster in config.clusters {
            guard let spec = cluster.discovery else { continue }
            var tls: TLSContextSource?
            if case .etcd(let etcd) = spec, let files = etcd.tls {
                tls = try TLSContextSource(files, role: .client, configFile: config.sourceFile)
            }
            wanted[cluster.name] = Wanted(spec: spec, checks: AnswerChecks(maxEndpoints: cluster.maxDiscoveredEndpoints, own: own), tls: tls)
        }
        let sources = wanted
        ControlThread.run { self.apply(sources) }
    }

    private func apply(_ wanted: [String: Wanted]) {
        let current = running.withLockedValue { $0 }
        // A cluster whose source is replaced keeps its endpoints until the
        // new source answers.
        var carried: [String: [EndpointConfig]] = [:]
        for (name, entry) in current where wanted[name]?.spec != entry.spec || wanted[name]?.checks != entry.checks {
            entry.source.stop()
            running.withLockedValue { _ = $0.removeValue(forKey: name) }
            let last = statuses.withLockedValue { $0.removeValue(forKey: name) }
            if wanted[name] != nil { carried[name] = last?.endpoints }
            Log.info("discovery stopped", ["cluster": name, "source": entry.spec.description])
        }
        for (name, want) in wanted where running.withLockedValue({ $0[name] }) == nil {
            let loop = ControlThread.loop
            let (spec, tls) = (want.spec, want.tls)
            let source: DiscoverySource
            switch spec {
            case .dns(let dns): source = DNSDiscovery(config: dns, eventLoop: loop)
            case .file(let file): source = FileDiscovery(config: file, eventLoop: loop)
            case .etcd(let etcd): source = EtcdDiscovery(config: etcd, maxEndpoints: want.checks.maxEndpoints, eventLoop: loop, tls: tls)
            }
            running.withLockedValue { $0[name] = RunningSource(spec: spec, checks: want.checks, source: source, tls: tls) }
            statuses.withLockedValue { $0[name] = Status(source: spec.description, endpoints: carried[name]) }
            Log.info("discovery started", ["cluster": name, "source": spec.description])
            source.start { [weak self] result in self?.record(cluster: name, result) }
        }
    }

    /// Waits (up to `timeout`) until every source has answered or failed
    /// once, so the first generation starts with endpoints.
    public func waitForFirstAnswers(timeout: Duration) {
        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        while clock.now < deadline {
            let done = statuses.withLockedValue { $0.values.allSatisfy { $0.endpoints != nil || $0.consecutiveFailures > 0 } }
            if done { return }
            Posix.sleep(milliseconds: 10)
        }
    }

    private func record(cluster: String, _ answer: Result<[EndpointConfig], DiscoveryFailure>) {
        var result = answer
        var refused: [String] = []
        var refusedCount = 0
        var dropped = 0
        if case .success(let endpoints) = answer, let checks = running.withLockedValue({ $0[cluster]?.checks }) {
            let checked = Self.check(endpoints, checks)
            (refused, refusedCount, dropped) = (checked.refused, checked.refusedCount, checked.dropped)
            result = .success(checked.kept)
        }
        var changed = false
        statuses.withLockedValue { all in
            guard var status = all[cluster] else { return }
            switch result {
            case .failure(let failure):
                status.consecutiveFailures += 1
                status.totalFailures += 1
                if status.lastError != failure.description || status.consecutiveFailures == 1 {
                    Log.error("discovery failing; the cluster keeps its last known endpoints", [
                        "cluster": cluster, "source": status.source, "error": failure.description,
                        "endpoints": String(status.endpoints?.count ?? 0),
                    ])
                }
                status.lastError = failure.description
            case .success(let endpoints):
                if status.consecutiveFailures > 0 {
                    Log.info("discovery recovered", ["cluster": cluster, "source": status.source])
                }
                if refusedCount > 0 && (refused != status.refusedOwnAddresses || refusedCount != status.refusedOwnAddressCount) {
                    Log.warning("discovery: refusing endpoints that are the gateway's own addresses (calls sent there would loop through the gateway)", [
                        "cluster": cluster, "source": status.source, "refused_count": String(refusedCount),
                        "refused": refused.joined(separator: ", ") + (refusedCount > refused.count ? ", and \(refusedCount - refused.count) more" : ""),
                    ])
                }
                status.refusedOwnAddresses = refused
                status.refusedOwnAddressCount = refusedCount
                if dropped > 0 && dropped != status.droppedEndpoints, let checks = running.withLockedValue({ $0[cluster]?.checks }) {
                    Log.warning("discovery: the source gave more endpoints than max_endpoints; the rest are dropped", [
                        "cluster": cluster, "source": status.source, "max_endpoints": String(checks.maxEndpoints), "dropped": String(dropped),
                    ])
                }
                status.droppedEndpoints = dropped
                status.consecutiveFailures = 0
                status.lastSuccess = Double(Posix.wallClockNanos() / 1_000_000_000)
                if endpoints.isEmpty, let known = status.endpoints, !known.isEmpty {
                    if !status.ignoredEmpty {
                        Log.warning("discovery answered with no endpoints; keeping the last known ones", [
                            "cluster": cluster, "source": status.source, "endpoints": String(known.count),
                        ])
                    }
                    status.ignoredEmpty = true
                } else {
                    status.ignoredEmpty = false
                    if status.endpoints != endpoints {
                        changed = true
                        status.updates += 1
                        Log.info("discovered endpoints changed", [
                            "cluster": cluster, "source": status.source,
                            "endpoints": endpoints.map { "\($0.address)*\($0.weight)" }.joined(separator: ","),
                        ])
                        status.endpoints = endpoints
                    }
                }
            }
            all[cluster] = status
        }
        guard changed else { return }
        // Coalesce bursts (an etcd watch delivers registrations one by one).
        let first = changePending.withLockedValue { pending -> Bool in
            defer { pending = true }
            return !pending
        }
        guard first else { return }
        ControlThread.loop.scheduleTask(in: .milliseconds(50)) {
            self.changePending.withLockedValue { $0 = false }
            self.onChange.withLockedValue { $0 }?()
        }
    }

    /// `endpoints` without the gateway's own addresses, then at most
    /// `maxEndpoints` of them (the first, in the source's order); of the
    /// refused, the first `maxRefusedShown` described and all counted.
    public static func check(_ endpoints: [EndpointConfig], _ checks: AnswerChecks,
                      local: @autoclosure () -> LocalAddresses = LocalAddresses.current())
        -> (kept: [EndpointConfig], refused: [String], refusedCount: Int, dropped: Int) {
        var kept = endpoints
        var refused: [String] = []
        var refusedCount = 0
        if !checks.own.own.isEmpty && !endpoints.isEmpty {
            let here = local()
            kept = endpoints.filter { endpoint in
                guard let own = checks.own.match(endpoint.address, local: here) else { return true }
                refusedCount += 1
                if refused.count < maxRefusedShown { refused.append("\(endpoint.address) (\(own.what))") }
                return false
            }
        }
        let dropped = max(0, kept.count - checks.maxEndpoints)
        if dropped > 0 { kept.removeLast(dropped) }
        return (kept, refused, refusedCount, dropped)
    }

    /// `config` with every discovered cluster's endpoints set to the last
    /// known ones (none before the first answer).
    public func overlay(_ config: GatewayConfig) -> GatewayConfig {
        var out = config
        let known = statuses.withLockedValue { $0 }
        for i in out.clusters.indices where out.clusters[i].discovery != nil {
            out.clusters[i].endpoints = known[out.clusters[i].name]?.endpoints ?? []
        }
        return out
    }

    public func status(of cluster: String) -> Status? {
        statuses.withLockedValue { $0[cluster] }
    }

    /// At shutdown.
    public func stopAll() {
        ControlThread.run {
            let all = self.running.withLockedValue { r -> [RunningSource] in
                defer { r.removeAll() }
                return Array(r.values)
            }
            all.forEach { $0.source.stop() }
        }
    }
}
