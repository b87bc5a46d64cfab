import MeshgateYAML
import Testing
@testable import MeshgateConfig

/// The product description's config form, translated to the native one.
@Suite struct DescriptionConfigTests {
    /// The description's config/mesh.yaml, as it is written there.
    let description = """
        services:
          - name: mesh-service-1
            port: 50051
            replicas: 3
            use_tls: true

        load_balancer:
          algorithm: round_robin
          health_check_interval: 30

        retry_policy:
          max_attempts: 3
          initial_backoff: 1.0

        mtls:
          enabled: true
          cert_dir: certs
        """

    private func error(_ yaml: String) -> ConfigError? {
        do {
            _ = try ConfigLoader.parse(yaml, file: "mesh.yaml")
            return nil
        } catch {
            return error
        }
    }

    @Test func theDescriptionsConfigTranslatesKeyByKey() throws {
        let config = try ConfigLoader.parse(description, file: "conf/mesh.yaml")
        #expect(config.listeners.count == 1 && config.clusters.count == 1)
        let listener = config.listeners[0]
        #expect(listener.name == "mesh-service-1")
        #expect(listener.address == SocketAddressSpec(host: "0.0.0.0", port: 50051))
        #expect(listener.tls?.cert == "conf/certs/server.pem")
        #expect(listener.tls?.clientAuth == "required")
        #expect(listener.routes.count == 1)
        #expect(listener.routes[0].match.pathPrefix == "/")
        #expect(listener.routes[0].cluster == "mesh-service-1")
        #expect(listener.routes[0].filters.map(\.plugin) == ["round_robin", "retry"])
        #expect(listener.routes[0].filters[1].config?.jsonText == #"{"max_attempts":3,"initial_backoff":1.0}"#)
        let cluster = config.clusters[0]
        #expect(cluster.endpoints.map(\.address.port) == [50061, 50062, 50063])
        #expect(cluster.endpoints.allSatisfy { $0.address.host == "127.0.0.1" })
        #expect(cluster.healthCheck?.mode == .check)
        #expect(cluster.healthCheck?.interval == .seconds(30))
        #expect(cluster.tls?.cert?.hasSuffix("certs/client.pem") == true)
        #expect(cluster.tls?.key?.hasSuffix("certs/client.key") == true)
        #expect(cluster.tls?.ca?.hasSuffix("certs/ca.pem") == true)
        #expect(config.admin?.address == SocketAddressSpec(host: "127.0.0.1", port: 9901))
        #expect(config.admin?.readOnlyAddresses == [SocketAddressSpec(host: "0.0.0.0", port: 8080), SocketAddressSpec(host: "0.0.0.0", port: 9090)])
    }

    @Test func connectionPoolAndHedgingKeysMap() throws {
        let yaml = """
            services: [{ name: a, port: 7000, replicas: 2, replica_host: 10.0.0.5, replica_base_port: 9000 }]
            load_balancer: { algorithm: consistent_hash, hash_header: x-user }
            hedging: { hedge_delay: 0.1, max_hedges: 2 }
            connection_pool: { max_connections: 1000, max_connections_per_endpoint: 100, idle_timeout: 300 }
            """
        let config = try ConfigLoader.parse(yaml, file: "mesh.yaml")
        #expect(config.listeners[0].maxConnections == 1000)
        #expect(config.listeners[0].idleTimeout == .seconds(300))
        #expect(config.listeners[0].tls == nil)
        #expect(config.clusters[0].maxConnectionsPerEndpoint == 100)
        #expect(config.clusters[0].endpoints.map(\.address.description) == ["10.0.0.5:9000", "10.0.0.5:9001"])
        let filters = config.listeners[0].routes[0].filters
        #expect(filters.map(\.plugin) == ["consistent_hash", "hedge"])
        #expect(filters[0].config?.jsonText == #"{"header":"x-user"}"#)
        #expect(filters[1].config?.jsonText == #"{"hedging_delay":0.1,"max_attempts":3}"#)
    }

    @Test func mixedFormsAndConflictsAreRefusedWhereTheyAre() throws {
        let mixed = try #require(error("services: [{ name: a, port: 1 }]\nclusters: []\n"))
        #expect(mixed.field == "clusters" && mixed.mark?.line == 2)
        #expect(mixed.message.contains("mixes the product description's form"))
        let clash = try #require(error("services:\n  - { name: a, port: 50051, replicas: 3 }\n  - { name: b, port: 50052, replicas: 3 }\n"))
        #expect(clash.field == "services[1].replicas" && clash.mark?.line == 3)
        let both = try #require(error("services: [{ name: a, port: 1 }]\nretry_policy: { max_attempts: 2 }\nhedging: { max_hedges: 1 }\n"))
        #expect(both.field == "hedging")
        let unknown = try #require(error("services: [{ name: a, port: 1 }]\nload_balancer: { algorithm: fastest }\n"))
        #expect(unknown.field == "load_balancer.algorithm" && unknown.message.contains("round_robin"))
        let plain = try #require(error("services: [{ name: a, port: 1 }]\nmtls: { enabled: true }\n"))
        #expect(plain.field == "services[0].use_tls")
        let loop = try #require(error("services:\n  - { name: a, port: 50051, replicas: 3 }\n  - { name: b, port: 50061 }\n"))
        #expect(loop.field == "services[0].replicas" && loop.message.contains("service 'b''s listener"))
        let admin = try #require(error("services: [{ name: a, port: 8070, replicas: 1 }]\n"))
        #expect(admin.field == "services[0].replicas" && admin.message.contains("the dashboard's port"))
        let twice = try #require(error("services:\n  - { name: a, port: 7000 }\n  - { name: b, port: 7000, replica_base_port: 9500 }\n"))
        #expect(twice.field == "services[1].port")
        let typo = try #require(error("services: [{ name: a, port: 1, replica: 3 }]\n"))
        #expect(typo.field == "services[0].replica" && typo.message.contains("unknown key"))
    }

    @Test func nativeErrorsInATranslatedConfigNameTheDescriptionField() throws {
        let bad = try #require(error("services: [{ name: a, port: 1 }]\nconnection_pool:\n  max_connections_per_endpoint: 0\n"))
        #expect(bad.mark?.line == 3)
        #expect(bad.field == "connection_pool.max_connections_per_endpoint (native: clusters[0].max_connections_per_endpoint)")
    }

    /// `meshgate convert` prints `yamlText`: it reads back as the same
    /// config, and converting that again changes nothing.
    @Test func theNativeTextReadsBackTheSame() throws {
        let native = try ConfigLoader.nativeDocument(description)
        let text = native.yamlText
        let again = try YAMLParser.parse(text)
        #expect(again.yamlText == text)
        #expect(again.jsonText == native.jsonText)
        let reparsed = try ConfigLoader.parse(text, file: "conf/mesh.yaml")
        #expect(reparsed.listeners[0].routes[0].filters.map(\.plugin) == ["round_robin", "retry"])
        #expect(reparsed.clusters[0].endpoints.count == 3)
    }

    @Test func yamlTextQuotesWhatWouldReadBackDifferently() throws {
        let tricky = ["", " lead", "trail ", "a: b", "x #y", "- item", "-", "#c", "'q'", "\"dq\"", "multi\nline", "tab\there",
"{flow}", "[list]", "*alias", "&anchor", "!tag", "%dir", "@at", "`tick`", "ok", "-5", "1.0", "ünïcode", "a:b",
                      "null", "~", "NULL", "c1\u{85}nel", "ls\u{2028}ps\u{2029}", "bom\u{FEFF}", "del\u{7F}", "emoji 🙂"]
        let node = YAMLNode.mapping(tricky.enumerated().map { i, text in
            (key: .scalar("k\(i)", quoted: false, YAMLMark(line: 1, column: 1)), value: .scalar(text, quoted: false, YAMLMark(line: 1, column: 1)))
        }, YAMLMark(line: 1, column: 1))
        let back = try YAMLParser.parse(node.yamlText)
        guard case .mapping(let pairs, _) = back else { Issue.record("not a mapping"); return }
        #expect(pairs.map { $0.value.scalarText } == tricky)
        // Keys keep their quoting: a quoted "null" key stays a string key.
        let keyed = YAMLNode.mapping([(key: .scalar("null", quoted: true, YAMLMark(line: 1, column: 1)), value: .scalar("v", quoted: false, YAMLMark(line: 1, column: 1)))],
                                     YAMLMark(line: 1, column: 1))
        guard case .mapping(let keyPairs, _) = try YAMLParser.parse(keyed.yamlText) else { Issue.record("not a mapping"); return }
        #expect(keyPairs.first?.key.scalarText == "null")
    }
}

extension ConfigLoader {
    /// The native document of YAML text (tests).
    static func nativeDocument(_ text: String) throws -> YAMLNode {
        let root = try YAMLParser.parse(text)
        return try DescriptionConfigTranslator.translate(root, file: "conf/mesh.yaml").document
    }
}
