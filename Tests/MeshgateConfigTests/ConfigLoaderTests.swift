import Testing
@testable import MeshgateConfig

@Suite struct ConfigLoaderTests {
    let valid = """
        admin: { address: 127.0.0.1:9901 }
        runtime: { drain_timeout: 2s }
        listeners:
          - name: public
            address: 0.0.0.0:50051
            routes:
              - match: { service: mesh.v1.MeshService }
                cluster: mesh
                timeout: 5s
                max_timeout: 30s
                filters: []
              - match:
                  method: /mesh.v1.MeshService/Process
                  headers: [{ name: X-Tenant, exact: blue }, { name: x-debug, present: true }]
                cluster: mesh
        clusters:
          - name: mesh
            connect_timeout: 250ms
            endpoints:
              - address: 127.0.0.1:50061
              - { address: "[::1]:50062", weight: 2 }
        """

    @Test func parsesTheDocumentedShape() throws {
        let config = try ConfigLoader.parse(valid, file: "mesh.yaml")
        #expect(config.admin?.address == SocketAddressSpec(host: "127.0.0.1", port: 9901))
        #expect(config.runtime.drainTimeout == .seconds(2))
        #expect(config.listeners.count == 1)
        let routes = config.listeners[0].routes
        #expect(routes[0].match.service == "mesh.v1.MeshService")
        #expect(routes[0].timeout == .seconds(5))
        #expect(routes[0].maxTimeout == .seconds(30))
        #expect(routes[1].match.method == "/mesh.v1.MeshService/Process")
        #expect(routes[1].match.headers.count == 2)
        #expect(routes[1].match.headers[0].name == "x-tenant")
        #expect(config.clusters[0].connectTimeout == .milliseconds(250))
        #expect(config.clusters[0].endpoints[1].address == SocketAddressSpec(host: "::1", port: 50062))
        #expect(config.clusters[0].endpoints[1].weight == 2)
        #expect(config.clusters[0].endpoints[0].weight == 1)
    }

    @Test func theShippedDefaultConfigIsValid() throws {
        let file = #filePath.replacingOccurrences(of: "Tests/MeshgateConfigTests/ConfigLoaderTests.swift", with: "config/mesh.yaml")
        let config = try ConfigLoader.load(file: file)
        #expect(!config.listeners.isEmpty)
    }

    @Test func theExampleConfigsAreValid() throws {
        let folder = #filePath.replacingOccurrences(of: "Tests/MeshgateConfigTests/ConfigLoaderTests.swift", with: "config/examples/")
        for name in ["discovery-etcd.yaml", "discovery-dns.yaml", "discovery-file.yaml"] {
            let config = try ConfigLoader.load(file: folder + name)
            #expect(config.clusters.allSatisfy { $0.discovery != nil }, "\(name)")
        }
    }

    private func error(_ yaml: String) -> ConfigError? {
        do {
            _ = try ConfigLoader.parse(yaml, file: "bad.yaml")
            return nil
        } catch {
            return error
        }
    }

    @Test func malformedYAMLNamesTheLine() throws {
        let e = try #require(error("listeners:\n  - name: a\n   address: x\n"))
        #expect(e.mark?.line == 3)
        #expect(e.description.hasPrefix("bad.yaml:3:"))
        #expect(e.message.contains("YAML syntax error"))
    }

    @Test func unknownKeyIsRefusedWithItsPath() throws {
        let yaml = valid.replacingOccurrences(of: "        cluster: mesh\n        timeout: 5s", with: "        clusterz: mesh\n        timeout: 5s")
        let e = try #require(error(yaml))
        #expect(e.field == "listeners[0].routes[0].clusterz")
        #expect(e.mark?.line == 8)
        #expect(e.message.contains("unknown key"))
    }

    @Test func wrongTypesAreNamed() throws {
        let weight = try #require(error(valid.replacingOccurrences(of: "weight: 2", with: "weight: heavy")))
        #expect(weight.field == "clusters[0].endpoints[1].weight")
        #expect(weight.message.contains("whole number"))
        let listType = try #require(error(valid.replacingOccurrences(of: "routes:\n", with: "routes: 3\n    x:\n")))
        #expect(listType.field.hasPrefix("listeners[0]"))
    }

    @Test func keepaliveIsParsedAndChecked() throws {
        let with = valid.replacingOccurrences(of: "    connect_timeout: 250ms\n", with: "    connect_timeout: 250ms\n    keepalive: { interval: 10s, timeout: 2s }\n")
        let config = try ConfigLoader.parse(with, file: "mesh.yaml")
        #expect(config.clusters[0].keepalive == KeepaliveConfig(interval: .seconds(10), timeout: .seconds(2)))
        let tooOften = try #require(error(with.replacingOccurrences(of: "interval: 10s", with: "interval: 10ms")))
        #expect(tooOften.field == "clusters[0].keepalive.interval")
        #expect(tooOften.message.contains("at least 100ms"))
        let unknown = try #require(error(with.replacingOccurrences(of: "interval: 10s, timeout: 2s }", with: "interval: 10s, timeout: 2s, every: 1s }")))
        #expect(unknown.field == "clusters[0].keepalive.every")
    }

    @Test func listenerSendTimeoutDefaultsToFiveMinutes() throws {
        #expect(try ConfigLoader.parse(valid, file: "mesh.yaml").listeners[0].sendTimeout == .seconds(300))
        let set = valid.replacingOccurrences(of: "    address: 0.0.0.0:50051\n", with: "    address: 0.0.0.0:50051\n    send_timeout: 30s\n")
        #expect(try ConfigLoader.parse(set, file: "mesh.yaml").listeners[0].sendTimeout == .seconds(30))
        let bad = try #require(error(set.replacingOccurrences(of: "send_timeout: 30s", with: "send_timeout: -1s")))
        #expect(bad.field == "listeners[0].send_timeout")
        #expect(try ConfigLoader.parse(valid, file: "mesh.yaml").listeners[0].perConnectionBufferLimitBytes == 32 << 20)
        let capped = set.replacingOccurrences(of: "send_timeout: 30s", with: "per_connection_buffer_limit_bytes: 1048576")
        #expect(try ConfigLoader.parse(capped, file: "mesh.yaml").listeners[0].perConnectionBufferLimitBytes == 1 << 20)
        let tiny = try #require(error(capped.replacingOccurrences(of: "1048576", with: "100")))
        #expect(tiny.field == "listeners[0].per_connection_buffer_limit_bytes")
    }

    @Test func adminReadOnlyAddressesAreCheckedAndUnique() throws {
        #expect(try ConfigLoader.parse(valid, file: "mesh.yaml").admin?.readOnlyAddresses == [])
        let two = valid.replacingOccurrences(of: "admin: { address: 127.0.0.1:9901 }",
                                             with: "admin: { address: 127.0.0.1:9901, read_only_addresses: [0.0.0.0:8080, \"[::]:9090\"] }")
        #expect(try ConfigLoader.parse(two, file: "mesh.yaml").admin?.readOnlyAddresses ==
                [SocketAddressSpec(host: "0.0.0.0", port: 8080), SocketAddressSpec(host: "::", port: 9090)])
        let again = try #require(error(two.replacingOccurrences(of: "0.0.0.0:8080", with: "127.0.0.1:9901")))
        #expect(again.field == "admin.read_only_addresses[0]" && again.message.contains("already admin.address"))
        let bad = try #require(error(two.replacingOccurrences(of: "0.0.0.0:8080", with: "nowhere")))
        #expect(bad.field == "admin.read_only_addresses[0]" && bad.mark?.line == 1)
    }

    @Test func globalBufferLimitDefaultsTo256MiBAndRefusesLessThanAGranule() throws {
        #expect(try ConfigLoader.parse(valid, file: "mesh.yaml").runtime.globalBufferLimitBytes == 256 << 20)
        let set = valid.replacingOccurrences(of: "runtime: { drain_timeout: 2s }", with: "runtime: { drain_timeout: 2s, global_buffer_limit_bytes: 1048576 }")
        #expect(try ConfigLoader.parse(set, file: "mesh.yaml").runtime.globalBufferLimitBytes == 1 << 20)
        let off = set.replacingOccurrences(of: "1048576", with: "0")
        #expect(try ConfigLoader.parse(off, file: "mesh.yaml").runtime.globalBufferLimitBytes == 0)
        let tiny = try #require(error(set.replacingOccurrences(of: "1048576", with: "4096")))
        #expect(tiny.field == "runtime.global_buffer_limit_bytes")
        #expect(tiny.mark?.line == 2)
        #expect(tiny.message.contains("65536"))
        let negative = try #require(error(set.replacingOccurrences(of: "1048576", with: "-1")))
        #expect(negative.field == "runtime.global_buffer_limit_bytes")
    }

    @Test func listenerIdleTimeoutDefaultsToAnHour() throws {
        #expect(try ConfigLoader.parse(valid, file: "mesh.yaml").listeners[0].idleTimeout == .seconds(3600))
        let off = valid.replacingOccurrences(of: "    address: 0.0.0.0:50051\n", with: "    address: 0.0.0.0:50051\n    idle_timeout: 0s\n")
        #expect(try ConfigLoader.parse(off, file: "mesh.yaml").listeners[0].idleTimeout == .zero)
        let bad = try #require(error(off.replacingOccurrences(of: "idle_timeout: 0s", with: "idle_timeout: soon")))
        #expect(bad.field == "listeners[0].idle_timeout")
        let pinging = off.replacingOccurrences(of: "idle_timeout: 0s\n", with: "idle_timeout: 0s\n    keepalive: { interval: 1s }\n")
        #expect(try ConfigLoader.parse(pinging, file: "mesh.yaml").listeners[0].keepalive == KeepaliveConfig(interval: .seconds(1), timeout: .seconds(5)))
        let tooFast = try #require(error(pinging.replacingOccurrences(of: "interval: 1s", with: "interval: 5ms")))
        #expect(tooFast.field == "listeners[0].keepalive.interval")
    }

    @Test func duplicateNamesAreRefused() throws {
        let twoClusters = valid + "\n  - name: mesh\n    endpoints: [{ address: 127.0.0.1:1 }]\n"
        let e = try #require(error(twoClusters))
        #expect(e.field == "clusters[1].name")
        #expect(e.message.contains("duplicate cluster name 'mesh'"))
    }

    @Test func routeToUnknownClusterIsRefused() throws {
        let e = try #require(error(valid.replacingOccurrences(of: "cluster: mesh\n        timeout", with: "cluster: nowhere\n        timeout")))
        #expect(e.field == "listeners[0].routes[0].cluster")
        #expect(e.message.contains("unknown cluster 'nowhere'"))
        #expect(e.mark?.line == 8)
    }

    @Test func badAddressesAreRefused() throws {
        let port = try #require(error(valid.replacingOccurrences(of: "0.0.0.0:50051", with: "0.0.0.0:99999")))
        #expect(port.field == "listeners[0].address")
        #expect(port.message.contains("99999"))
        let noPort = try #require(error(valid.replacingOccurrences(of: "0.0.0.0:50051", with: "nohost")))
        #expect(noPort.message.contains("HOST:PORT"))
    }

    @Test func filtersAndPluginDeclarationsParse() throws {
        let yaml = "plugin_dir: plugins\nplugins:\n  - { name: auth, path: ./libauth.so }\n" + valid.replacingOccurrences(
            of: "filters: []", with: "filters: [{ plugin: auth, config: { header: x-key, max: 3, on: true, ratio: 0.5, names: [a, \"b\"] } }]")
        let config = try ConfigLoader.parse(yaml, file: "p.yaml")
        #expect(config.pluginDirectory == "plugins")
        #expect(config.plugins.map(\.name) == ["auth"])
        let filter = try #require(config.listeners[0].routes[0].filters.first)
        #expect(filter.plugin == "auth")
        #expect(filter.field == "listeners[0].routes[0].filters[0]")
        #expect(filter.config?.jsonText == #"{"header":"x-key","max":3,"on":true,"ratio":0.5,"names":["a","b"]}"#)
        let twice = try #require(error(yaml.replacingOccurrences(of: "plugins:\n", with: "plugins:\n  - { name: auth, path: x.so }\n")))
        #expect(twice.message.contains("declared twice"))
    }

    @Test func emptyAndAliasedDocumentsAreRefused() throws {
        #expect(error("")?.message.contains("empty") == true)
        let alias = try #require(error("a: &x 1\nb: *x\n"))
        #expect(alias.message.contains("not supported"))
    }

    @Test func healthCheckBlock() throws {
        let yaml = valid.replacingOccurrences(of: "    connect_timeout: 250ms\n", with: """
                connect_timeout: 250ms
                health_check: { mode: check, interval: 2s, timeout: 300ms, unhealthy_threshold: 3, service: mesh.v1.MeshService }

            """)
        let check = try #require(try ConfigLoader.parse(yaml, file: "h.yaml").clusters[0].healthCheck)
        #expect(check.mode == .check)
        #expect(check.interval == .seconds(2))
        #expect(check.timeout == .milliseconds(300))
        #expect(check.unhealthyThreshold == 3)
        #expect(check.healthyThreshold == 2)
        #expect(check.service == "mesh.v1.MeshService")
        let bad = try #require(error(yaml.replacingOccurrences(of: "mode: check", with: "mode: poll")))
        #expect(bad.field == "clusters[0].health_check.mode")
        #expect(bad.message.contains("watch or check"))
    }

    @Test func durations() {
        #expect(DurationParser.parse("250ms") == .milliseconds(250))
        #expect(DurationParser.parse("1.5s") == .milliseconds(1500))
        #expect(DurationParser.parse("2m") == .seconds(120))
        #expect(DurationParser.parse("1.0") == .seconds(1))
        #expect(DurationParser.parse("soon") == nil)
        #expect(DurationParser.parse("-1s") == nil)
    }
}
