import GatewayHost
import MeshgateGRPC
import MeshgateJSON
import MeshgatePosix
import NIOConcurrencyHelpers
import NIOCore
import MeshgateSupport
import MeshgateUpstream

/// Takes a metrics snapshot every second (on the control thread; each
/// loop copies its own counters) and keeps the last minute, so that the
/// dashboard can show rates and latency percentiles over a recent window
/// instead of since startup.
package final class DashboardSampler: Sendable {
    package struct Sample: Sendable {
        package var at: Double
        package var snapshot: MetricsSnapshot
    }

    package static let window = 10.0
    /// Events the dashboard shows.
    package static let events = 30
    private let samples = NIOLockedValueBox<[Sample]>([])
    /// One point a second, the last ten minutes (see DashboardSeries).
    private let series = NIOLockedValueBox(DashboardSeries())
    private let task = NIOLockedValueBox<RepeatedTask?>(nil)
    private let collect: @Sendable (EventLoop) -> EventLoopFuture<MetricsSnapshot>
    private let statuses: @Sendable () -> [String: HealthRegistry.Status]
    private let routes: @Sendable () -> [DashboardRoute]

    package init(collect: @escaping @Sendable (EventLoop) -> EventLoopFuture<MetricsSnapshot>,
         statuses: @escaping @Sendable () -> [String: HealthRegistry.Status],
         routes: @escaping @Sendable () -> [DashboardRoute] = { [] }) {
        self.collect = collect
        self.statuses = statuses
        self.routes = routes
    }

    package func start() {
        let loop = ControlThread.loop
        task.withLockedValue {
            $0 = loop.scheduleRepeatedAsyncTask(initialDelay: .zero, delay: .seconds(1)) { _ in
                self.collect(loop).map { snapshot in
                    let pair = self.samples.withLockedValue { s -> (Sample, Sample)? in
                        s.append(Sample(at: Self.now(), snapshot: snapshot))
                        if s.count > 61 { s.removeFirst(s.count - 61) }
                        return s.count >= 2 ? (s[s.count - 2], s[s.count - 1]) : nil
                    }
                    if let (earlier, latest) = pair {
                        let point = DashboardSeries.point(from: DashboardData(latest: latest, earlier: earlier, statuses: [:]))
                        self.series.withLockedValue { $0.append(point) }
                    }
                }
            }
        }
    }

    package func stop() {
        task.withLockedValue { $0 }?.cancel()
    }

    package static func now() -> Double {
        Double(Posix.wallClockNanos()) / 1e9
    }

    /// The dashboard's numbers: rates, error ratios and percentiles over the
    /// last ~10 s, endpoint shares, health; the last `seriesPoints` points
    /// of the time series; recent events; the routes with their load.
    package func data(seriesPoints: Int = DashboardSeries.capacity) -> DashboardData {
        let all = samples.withLockedValue { $0 }
        var data: DashboardData
        if let last = all.last {
            let first = all.last { last.at - $0.at >= Self.window } ?? all.first!
            data = DashboardData(latest: last, earlier: first, statuses: statuses())
        } else {
            data = DashboardData(at: Self.now(), seconds: 0, services: statuses(), methods: [], endpoints: [], discovery: [])
        }
        data.series = series.withLockedValue { $0.last(seriesPoints) }
        data.events = GatewayEvents.shared.recent(limit: Self.events)
        data.routes = routes()
        for method in data.methods {
            let path = "/\(method.service)/\(method.method)"
            guard let i = data.routes.firstIndex(where: { $0.cluster == method.cluster && $0.matchConfig.pathMatches(path) }) else { continue }
            let before = data.routes[i].rate
            data.routes[i].rate += method.rate
            // Errors as a weighted ratio over the route's methods.
            if data.routes[i].rate > 0 {
                data.routes[i].errorRatio = (data.routes[i].errorRatio * before + method.errorRatio * method.rate) / data.routes[i].rate
            }
        }
        return data
    }
}

/// What the dashboard shows, computed from two snapshots.
package struct DashboardData: Sendable {
    package struct Method: Sendable {
        package var service: String
        package var method: String
        package var cluster: String
        package var total: UInt64
        package var rate: Double
        package var errorRatio: Double
        package var p50: Double?
        package var p90: Double?
        package var p99: Double?
    }

    package var at: Double
    package var seconds: Double
    package var services: [String: HealthRegistry.Status]
    package var methods: [Method]
    /// With their rates over the window.
    package var endpoints: [EndpointView]
    package var discovery: [MetricsSnapshot.DiscoveryState]
    package var totalRate = 0.0
    package var totalErrorRatio = 0.0
    package var p50: Double?
    package var p99: Double?
    package var activeCalls = 0
    package var connections = 0
    package var series: [DashboardSeries.Point] = []
    package var events: [GatewayEvents.Event] = []
    package var routes: [DashboardRoute] = []

    package init(at: Double, seconds: Double, services: [String: HealthRegistry.Status], methods: [Method], endpoints: [EndpointView],
         discovery: [MetricsSnapshot.DiscoveryState]) {
        self.at = at
        self.seconds = seconds
        self.services = services
        self.methods = methods
        self.endpoints = endpoints
        self.discovery = discovery
    }

    package init(latest: DashboardSampler.Sample, earlier: DashboardSampler.Sample, statuses: [String: HealthRegistry.Status]) {
        let seconds = max(latest.at - earlier.at, 0.001)
        let now = latest.snapshot.mergedCalls()
        let before = earlier.snapshot.mergedCalls()
        var methods: [Method] = []
        var allBuckets = [UInt64](repeating: 0, count: LoopMetrics.durationBounds.count + 1)
        var total: UInt64 = 0
        var errors: UInt64 = 0
        for (key, series) in now.sorted(by: { $0.key.path < $1.key.path }) {
            var delta = series
            if let old = before[key] { delta.subtract(old) }
            let (service, method) = MetricsSnapshot.split(key.path)
            let failed = delta.codes.failed
            methods.append(Method(service: service, method: method, cluster: key.cluster, total: series.count,
                                  rate: Double(delta.count) / seconds, errorRatio: delta.count > 0 ? Double(failed) / Double(delta.count) : 0,
                                  p50: Self.percentile(delta.buckets, 0.5), p90: Self.percentile(delta.buckets, 0.9), p99: Self.percentile(delta.buckets, 0.99)))
            for i in allBuckets.indices { allBuckets[i] += delta.buckets[i] }
            total += delta.count
            errors += failed
        }
        let nowEndpoints = latest.snapshot.mergedEndpoints()
        let beforeEndpoints = earlier.snapshot.mergedEndpoints()
        var endpoints: [EndpointView] = []
        var attemptsTotal: UInt64 = 0
        var deltas: [String: (UInt64, UInt64)] = [:]
        for (id, e) in nowEndpoints {
            let d = e.attemptCodes.since(beforeEndpoints[id]?.attemptCodes ?? GRPCStatusCounts())
            let count = d.total
            deltas[id] = (count, d.failed)
            attemptsTotal += count
        }
        for state in latest.snapshot.endpoints {
            let (count, failed) = deltas[state.id] ?? (0, 0)
            var view = state
            if let counters = nowEndpoints[state.id] { view.addCounters(of: counters) }
            view.rate = Double(count) / seconds
            view.share = attemptsTotal > 0 ? Double(count) / Double(attemptsTotal) : 0
            view.errorRatio = count > 0 ? Double(failed) / Double(count) : 0
            endpoints.append(view)
        }
        self.init(at: latest.at, seconds: seconds, services: statuses, methods: methods, endpoints: endpoints, discovery: latest.snapshot.discovery)
        totalRate = Double(total) / seconds
        totalErrorRatio = total > 0 ? Double(errors) / Double(total) : 0
        p50 = Self.percentile(allBuckets, 0.5)
        p99 = Self.percentile(allBuckets, 0.99)
        activeCalls = latest.snapshot.loops.reduce(0) { $0 + $1.activeCalls }
        connections = latest.snapshot.loops.reduce(0) { $0 + $1.downstreamConnections }
    }

    /// Seconds, interpolated inside the bucket that holds the quantile (as
    /// Prometheus' histogram_quantile does); nil without samples.
    package static func percentile(_ buckets: [UInt64], _ q: Double) -> Double? {
        let total = buckets.reduce(0, +)
        guard total > 0 else { return nil }
        let rank = q * Double(total)
        var cumulative: UInt64 = 0
        let bounds = LoopMetrics.durationBounds
        for (i, count) in buckets.enumerated() {
            let previous = cumulative
            cumulative += count
            guard Double(cumulative) >= rank, count > 0 else { continue }
            guard i < bounds.count else { return bounds.last }
            let lower = i == 0 ? 0 : bounds[i - 1]
            return lower + (bounds[i] - lower) * (rank - Double(previous)) / Double(count)
        }
        return bounds.last
    }

    package var json: String {
        var json = JSONWriter()
        json.object { o in
            o.field("at") { $0.double(at, scale: 1e6) }
            o.field("window_s") { $0.double(seconds, scale: 1e6) }
            o.field("rate") { $0.double(totalRate, scale: 1e6) }
            o.field("error_ratio") { $0.double(totalErrorRatio, scale: 1e6) }
            o.field("p50_ms") { $0.double(p50.map { $0 * 1000 }, scale: 1e6) }
            o.field("p99_ms") { $0.double(p99.map { $0 * 1000 }, scale: 1e6) }
            o.field("active_calls", activeCalls)
            o.field("connections", connections)
            o.field("services") {
                $0.array(services.sorted { $0.key < $1.key }) { json, s in
                    json.object { o in
                        o.field("name", s.key.isEmpty ? "(gateway)" : s.key)
                        o.field("status", "\(s.value)")
                    }
                }
            }
            o.field("methods") {
                $0.array(methods) { json, m in
                    json.object { o in
                        o.field("service", m.service)
                        o.field("method", m.method)
                        o.field("cluster", m.cluster)
                        o.field("total", m.total)
                        o.field("rate") { $0.double(m.rate, scale: 1e6) }
                        o.field("error_ratio") { $0.double(m.errorRatio, scale: 1e6) }
                        o.field("p50_ms") { $0.double(m.p50.map { $0 * 1000 }, scale: 1e6) }
                        o.field("p90_ms") { $0.double(m.p90.map { $0 * 1000 }, scale: 1e6) }
                        o.field("p99_ms") { $0.double(m.p99.map { $0 * 1000 }, scale: 1e6) }
                    }
                }
            }
            o.field("endpoints") {
                $0.array(endpoints) { json, e in
                    json.object { o in
                        o.field("cluster", e.cluster)
                        o.field("address", e.address)
                        o.field("healthy", e.healthy)
                        o.field("ejected", e.ejected)
                        o.field("weight", e.weight)
                        o.field("rate") { $0.double(e.rate, scale: 1e6) }
                        o.field("share") { $0.double(e.share, scale: 1e6) }
                        o.field("in_flight", e.inFlight)
                        o.field("error_ratio") { $0.double(e.errorRatio, scale: 1e6) }
                    }
                }
            }
            o.field("discovery") {
                $0.array(discovery) { json, d in
                    json.object { o in
                        o.field("cluster", d.cluster)
                        o.field("source", d.source)
                        o.field("ok", d.ok)
                        o.field("endpoints", d.endpoints)
                        o.field("failures", d.failures)
                    }
                }
            }
            o.field("series") { DashboardSeries.write(series, into: &$0) }
            o.field("events") {
                $0.array(events) { json, e in
                    json.object { o in
                        o.field("time") { $0.double(e.time, scale: 1e6) }
                        o.field("seq", e.sequence)
                        o.field("kind", e.kind.rawValue)
                        o.field("message", e.message)
                        o.field("fields") { $0.object { f in for (key, value) in e.fields { f.field(key, value) } } }
                    }
                }
            }
            o.field("routes") {
                $0.array(routes) { json, r in
                    json.object { o in
                        o.field("listener", r.listener)
                        o.field("match", r.match)
                        o.field("cluster", r.cluster)
                        o.field("chain") { $0.array(r.chain) { $0.string($1) } }
                        o.field("rate") { $0.double(r.rate, scale: 1e6) }
                        o.field("error_ratio") { $0.double(r.errorRatio, scale: 1e6) }
                    }
                }
            }
        }
        return json.text
    }
}

extension MetricsSnapshot {
    package func mergedCalls() -> [LoopMetrics.CallKey: LoopMetrics.CallSeries] {
        var calls: [LoopMetrics.CallKey: LoopMetrics.CallSeries] = [:]
        for loop in loops {
            for (key, series) in loop.calls { calls[key, default: LoopMetrics.CallSeries()].add(series) }
        }
        return calls
    }
}

extension LoopMetrics.CallSeries {
    package mutating func subtract(_ other: Self) {
        // A series that restarted (fewer than before) counts from zero.
        guard count >= other.count else { return }
        codes = codes.since(other.codes)
        for i in buckets.indices { buckets[i] -= min(buckets[i], other.buckets[i]) }
        sumSeconds -= other.sumSeconds
        count -= other.count
    }
}
