import MeshgateHTTP2
import Testing
@testable import MeshgateConfig
import MeshgateTestSupport
@testable import MeshgateRouting

@Suite struct RouteTableTests {
    func table() throws -> RouteTable {
        let config = try ConfigLoader.parse("""
            listeners:
              - name: l
                address: 127.0.0.1:1
                routes:
                  - match: { method: /mesh.v1.MeshService/Process, headers: [{ name: x-tenant, exact: blue }] }
                    cluster: blue
                    timeout: 200ms
                  - match: { service: mesh.v1.MeshService, headers: [{ name: x-canary, present: true }] }
                    cluster: canary
                  - match: { service: mesh.v1.MeshService }
                    cluster: main
                    max_timeout: 1s
                  - match: { path_prefix: /grpc.reflection. }
                    cluster: main
            clusters:
              - { name: main, endpoints: [{ address: 127.0.0.1:2 }] }
              - { name: blue, endpoints: [{ address: 127.0.0.1:3 }] }
              - { name: canary, endpoints: [{ address: 127.0.0.1:4 }] }
            """, file: "t.yaml")
        return ServingConfig(config).listeners[0].routes
    }

    func cluster(_ table: RouteTable, _ path: String, _ headers: HTTP2HeaderList = []) -> String? {
        table.match(path: path, headers: headers)?.config.cluster
    }

    @Test func firstMatchWins() throws {
        let t = try table()
        #expect(cluster(t, "/mesh.v1.MeshService/Process", [("x-tenant", "blue")]) == "blue")
        #expect(cluster(t, "/mesh.v1.MeshService/Process", [("x-tenant", "red")]) == "main")
        #expect(cluster(t, "/mesh.v1.MeshService/Chat", [("x-canary", "")]) == "canary")
        #expect(cluster(t, "/mesh.v1.MeshService/Chat") == "main")
        #expect(cluster(t, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo") == "main")
    }

    @Test func serviceMatchNeedsTheWholeServiceName() throws {
        let t = try table()
        #expect(cluster(t, "/mesh.v1.MeshServiceX/Chat") == nil)
        #expect(cluster(t, "/other.Service/Call") == nil)
    }

    @Test func routeTimeouts() throws {
        let t = try table()
        let blue = try #require(t.match(path: "/mesh.v1.MeshService/Process", headers: [("x-tenant", "blue")]))
        #expect(blue.effectiveTimeout(clientTimeout: nil) == 200_000_000)
        #expect(blue.effectiveTimeout(clientTimeout: 5_000_000_000) == 5_000_000_000)
        let main = try #require(t.match(path: "/mesh.v1.MeshService/Chat", headers: []))
        #expect(main.effectiveTimeout(clientTimeout: nil) == 1_000_000_000)
        #expect(main.effectiveTimeout(clientTimeout: 5_000_000_000) == 1_000_000_000)
        #expect(main.effectiveTimeout(clientTimeout: 10_000_000) == 10_000_000)
        let canary = try #require(t.match(path: "/mesh.v1.MeshService/Chat", headers: [("x-canary", "1")]))
        #expect(canary.effectiveTimeout(clientTimeout: nil) == nil)
    }

    /// The index must pick exactly what the first-match scan over every route
    /// picks: random route sets (methods, services, prefixes, header rules,
    /// catch-alls, mixed) against random paths.
    @Test func theIndexFindsWhatAScanFinds() throws {
        var rng = SplitMix64(seed: 0x6d65_7368)
        let services = ["a.S", "a.T", "b.S", "a.S.x", "odd/svc"]
        let methods = ["M", "N", "Long/Extra"]
        let prefixes = ["/", "/a", "/a.", "/a.S", "/a.S/", "/a.S/M", "/b", "/zz"]
        func pick<T>(_ items: [T]) -> T { items[Int(rng.next() % UInt64(items.count))] }
        for _ in 0..<200 {
            var yaml = "listeners:\n  - name: l\n    address: 127.0.0.1:1\n    routes:\n"
            for _ in 0..<(1 + Int(rng.next() % 12)) {
                var fields: [String] = []
                let kind = rng.next() % 6
                if kind == 0 || kind == 4 { fields.append("service: \"\(pick(services))\"") }
                if kind == 1 || kind == 4 { fields.append("method: /\(pick(["a.S", "a.T", "b.S"]))/\(pick(["M", "N"]))") }
                if kind == 2 || kind == 5 { fields.append("path_prefix: \"\(pick(prefixes))\"") }
                if rng.next() % 3 == 0 { fields.append("headers: [{ name: x-h, exact: \(pick(["1", "2"])) }]") }
                yaml += "      - match: { \(fields.joined(separator: ", ")) }\n        cluster: c\n"
            }
            yaml += "clusters:\n  - { name: c, endpoints: [{ address: 127.0.0.1:2 }] }\n"
            let table = ServingConfig(try ConfigLoader.parse(yaml, file: "t.yaml")).listeners[0].routes
            for _ in 0..<40 {
                let path = rng.next() % 8 == 0 ? pick(prefixes) : "/\(pick(services))/\(pick(methods))"
                let headers: HTTP2HeaderList = rng.next() % 2 == 0 ? [("x-h", pick(["1", "2"]))] : []
                let scanned = table.routes.first { $0.matches(path: path, headers: headers) }?.index
                #expect(table.match(path: path, headers: headers)?.index == scanned, "\(path) in\n\(yaml)")
            }
        }
    }
}
