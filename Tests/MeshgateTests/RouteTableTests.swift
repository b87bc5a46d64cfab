import MeshgateHTTP2
import Testing
@testable import GatewayHost

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
}
