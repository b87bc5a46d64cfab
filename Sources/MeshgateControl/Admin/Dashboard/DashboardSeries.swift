import GatewayHost
import MeshgateConfig
import MeshgateJSON
import MeshgateSupport
import MeshgateRouting
import MeshgatePluginHost

/// The dashboard's time series: one point per second, the last ten minutes,
/// made by the sampler from the snapshots it already takes (so the data path
/// pays nothing for them). Memory is bounded by `capacity` points of a few
/// numbers per endpoint.
package struct DashboardSeries: Sendable {
    package static let capacity = 600
    /// Endpoints with their own series (the first, by cluster and address):
    /// memory stays bounded however large the clusters grow (~100 bytes a
    /// point each: at most ~4 MB).
    package static let endpointCapacity = 64

    /// What a point keeps of an `EndpointView`: the few numbers charted
    /// (the whole view, codes included, would triple the series' memory).
    package struct EndpointPoint: Sendable {
        package var rate: Double
        package var errorRatio: Double
        package var inFlight: Int
        package var healthy: Bool
        package var ejected: Bool

        package init(rate: Double, errorRatio: Double, inFlight: Int, healthy: Bool, ejected: Bool) {
            self.rate = rate
            self.errorRatio = errorRatio
            self.inFlight = inFlight
            self.healthy = healthy
            self.ejected = ejected
        }

        package init(_ view: EndpointView) {
            self.init(rate: view.rate, errorRatio: view.errorRatio, inFlight: view.inFlight, healthy: view.healthy, ejected: view.ejected)
        }
    }

    package struct Point: Sendable {
        /// Seconds since 1970.
        package var at: Double
        package var rate: Double
        package var errorRatio: Double
        package var p50: Double?
        package var p99: Double?
        package var inFlight: Int
        /// By "cluster address".
        package var endpoints: [String: EndpointPoint]
    }

    package private(set) var points: [Point] = []
    private var start = 0

    /// The change between two snapshots a second apart.
    package static func point(from data: DashboardData) -> Point {
        var endpoints: [String: EndpointPoint] = [:]
        let charted = data.endpoints.sorted { ($0.cluster, $0.address) < ($1.cluster, $1.address) }.prefix(endpointCapacity)
        for e in charted {
            endpoints[e.id] = EndpointPoint(e)
        }
        return Point(at: data.at, rate: data.totalRate, errorRatio: data.totalErrorRatio, p50: data.p50, p99: data.p99,
                     inFlight: data.activeCalls, endpoints: endpoints)
    }

    package mutating func append(_ point: Point) {
        if points.count < Self.capacity {
            points.append(point)
        } else {
            points[start] = point
            start = (start + 1) % Self.capacity
        }
    }

    /// The newest `limit` points, oldest first.
    package func last(_ limit: Int) -> [Point] {
        let ordered = points.count < Self.capacity ? points : Array(points[start...] + points[..<start])
        return Array(ordered.suffix(limit))
    }

    /// Column-wise JSON: `{"t":[…],"rate":[…],"err":[…],"p50_ms":[…],
    /// "p99_ms":[…],"in_flight":[…],"endpoints":{"cluster address":{"rate":[…],
    /// "err":[…],"in_flight":[…],"state":[…]}}}`; an endpoint absent at a
    /// time has null there; `state` is 0 healthy, 1 unhealthy, 2 ejected.
    package static func json(_ points: [Point]) -> String {
        var json = JSONWriter()
        write(points, into: &json)
        return json.text
    }

    package static func write(_ points: [Point], into json: inout JSONWriter) {
        var ids: [String] = []
        var seen: Set<String> = []
        for p in points {
            for id in p.endpoints.keys.sorted() where seen.insert(id).inserted { ids.append(id) }
        }
        json.object { o in
            o.field("t") { $0.array(points) { $0.double($1.at, scale: 1000) } }
            o.field("rate") { $0.array(points) { $0.double($1.rate, scale: 1000) } }
            o.field("err") { $0.array(points) { $0.double($1.errorRatio, scale: 1000) } }
            o.field("p50_ms") { $0.array(points) { $0.double($1.p50.map { $0 * 1000 }, scale: 1000) } }
            o.field("p99_ms") { $0.array(points) { $0.double($1.p99.map { $0 * 1000 }, scale: 1000) } }
            o.field("in_flight") { $0.array(points) { $0.int($1.inFlight) } }
            o.field("endpoints") {
                $0.object { e in
                    for id in ids {
                        let values = points.map { $0.endpoints[id] }
                        e.field(id) {
                            $0.object { o in
                                o.field("rate") { $0.array(values) { $0.double($1?.rate, scale: 1000) } }
                                o.field("err") { $0.array(values) { $0.double($1?.errorRatio, scale: 1000) } }
                                o.field("in_flight") { $0.array(values) { json, v in if let v { json.int(v.inFlight) } else { json.null() } } }
                                o.field("state") {
                                    $0.array(values) { json, v in
                                        if let v { json.int(v.ejected ? 2 : (v.healthy ? 0 : 1)) } else { json.null() }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// One route of a listener as the dashboard lists it: what it matches,
/// where it sends calls, through which plugins, and its recent load
/// (from the per-method counters: a method's calls count for the first
/// route whose path match takes it with that cluster).
package struct DashboardRoute: Sendable {
    package var listener: String
    package var match: String
    package var cluster: String
    /// "name version (sha256 prefix)" of each filter, balancer included.
    package var chain: [String]
    package var matchConfig: RouteMatchConfig
    package var rate = 0.0
    package var errorRatio = 0.0

    package static func routes(_ serving: ServingConfig, _ plugins: FilterChains) -> [DashboardRoute] {
        var out: [DashboardRoute] = []
        for (l, listener) in serving.config.listeners.enumerated() {
            for (r, route) in listener.routes.enumerated() {
                var match: [String] = []
                if let s = route.match.service { match.append("service \(s)") }
                if let m = route.match.method { match.append("method \(m)") }
                if let p = route.match.pathPrefix { match.append("prefix \(p)") }
                for h in route.match.headers { match.append("header \(h.name)") }
                var chain: [String] = []
                if l < plugins.chains.count, r < plugins.chains[l].count {
                    let routeChain = plugins.chains[l][r]
                    var handles = routeChain.filters
                    if !handles.contains(where: { $0 === routeChain.balancer }) { handles.append(routeChain.balancer) }
                    chain = handles.map { "\($0.image.name) \($0.image.version) (\($0.image.sha256.prefix(12)))" }
                }
                out.append(DashboardRoute(listener: listener.name, match: match.isEmpty ? "everything" : match.joined(separator: ", "),
                                          cluster: route.cluster, chain: chain, matchConfig: route.match))
            }
        }
        return out
    }

    /// Whether a call to `path` could be taken by `match` (headers aside).
}
