import GatewayHost
import MeshgateGRPC
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

    package struct Endpoint: Sendable {
        package var cluster: String
        package var address: String
        package var healthy: Bool
        package var ejected: Bool
        package var weight: Int
        package var rate: Double
        package var share: Double
        package var inFlight: Int
        package var errorRatio: Double
    }

    package var at: Double
    package var seconds: Double
    package var services: [String: HealthRegistry.Status]
    package var methods: [Method]
    package var endpoints: [Endpoint]
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

    package init(at: Double, seconds: Double, services: [String: HealthRegistry.Status], methods: [Method], endpoints: [Endpoint],
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
        var endpoints: [Endpoint] = []
        var attemptsTotal: UInt64 = 0
        var deltas: [String: (UInt64, UInt64)] = [:]
        for (id, e) in nowEndpoints {
            let d = e.codes.since(beforeEndpoints[id]?.codes ?? GRPCStatusCounts())
            let count = d.total
            deltas[id] = (count, d.failed)
            attemptsTotal += count
        }
        for state in latest.snapshot.endpoints {
            let id = state.cluster + " " + state.address
            let (count, failed) = deltas[id] ?? (0, 0)
            endpoints.append(Endpoint(cluster: state.cluster, address: state.address, healthy: state.healthy, ejected: state.ejected,
                                      weight: state.weight, rate: Double(count) / seconds,
                                      share: attemptsTotal > 0 ? Double(count) / Double(attemptsTotal) : 0,
                                      inFlight: nowEndpoints[id]?.inFlight ?? 0, errorRatio: count > 0 ? Double(failed) / Double(count) : 0))
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
        func num(_ v: Double?) -> String {
            guard let v, v.isFinite else { return "null" }
            return String(Double(Int64(v * 1e6)) / 1e6)
        }
        var out = "{\"at\":\(num(at)),\"window_s\":\(num(seconds)),\"rate\":\(num(totalRate)),\"error_ratio\":\(num(totalErrorRatio))"
        out += ",\"p50_ms\":\(num(p50.map { $0 * 1000 })),\"p99_ms\":\(num(p99.map { $0 * 1000 })),\"active_calls\":\(activeCalls),\"connections\":\(connections)"
        out += ",\"services\":[" + services.sorted { $0.key < $1.key }.map { "{\"name\":\(Log.quote($0.key.isEmpty ? "(gateway)" : $0.key)),\"status\":\(Log.quote("\($0.value)"))}" }.joined(separator: ",") + "]"
        out += ",\"methods\":[" + methods.map { m in
            "{\"service\":\(Log.quote(m.service)),\"method\":\(Log.quote(m.method)),\"cluster\":\(Log.quote(m.cluster)),\"total\":\(m.total)"
                + ",\"rate\":\(num(m.rate)),\"error_ratio\":\(num(m.errorRatio)),\"p50_ms\":\(num(m.p50.map { $0 * 1000 }))"
                + ",\"p90_ms\":\(num(m.p90.map { $0 * 1000 })),\"p99_ms\":\(num(m.p99.map { $0 * 1000 }))}"
        }.joined(separator: ",") + "]"
        out += ",\"endpoints\":[" + endpoints.map { e in
            "{\"cluster\":\(Log.quote(e.cluster)),\"address\":\(Log.quote(e.address)),\"healthy\":\(e.healthy),\"ejected\":\(e.ejected)"
                + ",\"weight\":\(e.weight),\"rate\":\(num(e.rate)),\"share\":\(num(e.share)),\"in_flight\":\(e.inFlight),\"error_ratio\":\(num(e.errorRatio))}"
        }.joined(separator: ",") + "]"
        out += ",\"discovery\":[" + discovery.map { d in
            "{\"cluster\":\(Log.quote(d.cluster)),\"source\":\(Log.quote(d.source)),\"ok\":\(d.ok),\"endpoints\":\(d.endpoints),\"failures\":\(d.failures)}"
        }.joined(separator: ",") + "]"
        out += ",\"series\":" + DashboardSeries.json(series)
        out += ",\"events\":[" + events.map { e in
            let fields = e.fields.map { "\(Log.quote($0.0)):\(Log.quote($0.1))" }.joined(separator: ",")
            return "{\"time\":\(num(e.time)),\"seq\":\(e.sequence),\"kind\":\"\(e.kind.rawValue)\",\"message\":\(Log.quote(e.message)),\"fields\":{\(fields)}}"
        }.joined(separator: ",") + "]"
        out += ",\"routes\":[" + routes.map { r in
            "{\"listener\":\(Log.quote(r.listener)),\"match\":\(Log.quote(r.match)),\"cluster\":\(Log.quote(r.cluster))"
                + ",\"chain\":[\(r.chain.map(Log.quote).joined(separator: ","))],\"rate\":\(num(r.rate)),\"error_ratio\":\(num(r.errorRatio))}"
        }.joined(separator: ",") + "]}"
        return out
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

    package func mergedEndpoints() -> [String: (inFlight: Int, codes: GRPCStatusCounts)] {
        var out: [String: (inFlight: Int, codes: GRPCStatusCounts)] = [:]
        for loop in loops {
            for e in loop.endpoints {
                let id = e.cluster + " " + e.address
                var entry = out[id] ?? (0, GRPCStatusCounts())
                entry.inFlight += e.inFlight
                entry.codes.add(e.attemptCodes)
                out[id] = entry
            }
        }
        return out
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
