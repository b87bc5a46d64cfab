import Testing
@testable import GatewayHost
@testable import MeshgateConfig
@testable import MeshgateControl

@Suite struct DashboardSeriesTests {
    private func point(_ at: Double, endpoints: [String: DashboardSeries.EndpointPoint] = [:]) -> DashboardSeries.Point {
        DashboardSeries.Point(at: at, rate: at * 2, errorRatio: 0.5, p50: 0.001, p99: nil, inFlight: Int(at), endpoints: endpoints)
    }

    @Test func keepsTheLastTenMinutesOldestFirst() {
        var series = DashboardSeries()
        for t in 0..<(DashboardSeries.capacity + 25) { series.append(point(Double(t))) }
        let all = series.last(DashboardSeries.capacity)
        #expect(all.count == DashboardSeries.capacity)
        #expect(all.first?.at == 25 && all.last?.at == Double(DashboardSeries.capacity + 24))
        #expect(zip(all, all.dropFirst()).allSatisfy { $0.at + 1 == $1.at })
        #expect(series.last(1).map(\.at) == [Double(DashboardSeries.capacity + 24)])
    }

    @Test func writesColumnsWithNullWhereAnEndpointWasAbsent() {
        let up = DashboardSeries.EndpointPoint(rate: 3, errorRatio: 0, inFlight: 1, healthy: true, ejected: false)
        let ejected = DashboardSeries.EndpointPoint(rate: 0, errorRatio: 1, inFlight: 0, healthy: true, ejected: true)
        let down = DashboardSeries.EndpointPoint(rate: 0, errorRatio: 0, inFlight: 0, healthy: false, ejected: false)
        let json = DashboardSeries.json([point(1, endpoints: ["c a": up]), point(2, endpoints: ["c a": ejected, "c b": down]), point(3)])
        #expect(json.hasPrefix(#"{"t":[1.0,2.0,3.0],"rate":[2.0,4.0,6.0],"err":[0.5,0.5,0.5],"p50_ms":[1.0,1.0,1.0],"p99_ms":[null,null,null],"in_flight":[1,2,3]"#))
        #expect(json.contains(#""c a":{"rate":[3.0,0.0,null],"err":[0.0,1.0,null],"in_flight":[1,0,null],"state":[0,2,null]}"#))
        #expect(json.contains(#""c b":{"rate":[null,0.0,null],"err":[null,0.0,null],"in_flight":[null,0,null],"state":[null,1,null]}"#))
    }

    @Test func routesMatchPathsTheWayTheRouterDoes() {
        var match = RouteMatchConfig()
        match.service = "mesh.v1.MeshService"
        #expect(match.pathMatches("/mesh.v1.MeshService/Process"))
        #expect(!match.pathMatches("/mesh.v1.MeshServiceX/Process"))
        var method = RouteMatchConfig()
        method.method = "/a.B/C"
        #expect(method.pathMatches("/a.B/C") && !method.pathMatches("/a.B/D"))
        #expect(RouteMatchConfig().pathMatches("/anything/at.all"))
    }
}

extension DashboardSeriesTests {
    @Test func chartsAtMostSixtyFourEndpoints() {
        var data = DashboardData(at: 1, seconds: 1, services: [:], methods: [], endpoints: [], discovery: [])
        data.endpoints = (0..<100).map { i in
            var view = EndpointView(cluster: "c", address: "10.0.0.\(100 + i):1")
            view.rate = 1
            view.share = 0.01
            return view
        }
        let point = DashboardSeries.point(from: data)
        #expect(point.endpoints.count == DashboardSeries.endpointCapacity)
        #expect(point.endpoints["c 10.0.0.100:1"] != nil && point.endpoints["c 10.0.0.199:1"] == nil)
    }
}
