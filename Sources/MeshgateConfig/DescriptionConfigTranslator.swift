import MeshgatePosix
import MeshgateYAML

/// The product description's `config/mesh.yaml` form (`services`,
/// `load_balancer`, `retry_policy`, `mtls`, `connection_pool`, `hedging`),
/// translated into the native form (`listeners`, `clusters`, filter chains)
/// before the native loader reads it. Every node of the result keeps the
/// line and column of the description key it came from, so an error in a
/// translated value still points at the user's file. README "The product
/// description's config" lists the mapping key by key.
public enum DescriptionConfigTranslator {
    public static let keys: Set<String> = ["services", "load_balancer", "retry_policy", "mtls", "connection_pool", "hedging"]
    public static let nativeKeys: Set<String> = ["runtime", "admin", "listeners", "clusters", "plugins", "plugin_dir"]

    /// Balancer names the description uses, to the plugins that do them.
    public static let algorithms: [String: String] = [
        "round_robin": "round_robin", "weighted_round_robin": "round_robin", "weighted": "round_robin",
        "least_connections": "least_conn", "least_conn": "least_conn",
        "random": "random", "consistent_hash": "consistent_hash",
    ]

    /// The header consistent_hash hashes unless `load_balancer.hash_header` names another.
    public static let defaultHashHeader = "x-session-id"

    /// True when `root` is written in the description's form. A document
    /// that mixes both forms is refused, naming a key of each.
    public static func isDescriptionForm(_ root: YAMLNode, file: String) throws(ConfigError) -> Bool {
        guard case .mapping(let pairs, _) = root else { return false }
        let description = pairs.first { keys.contains($0.key.scalarText ?? "") }
        guard let description else { return false }
        if let native = pairs.first(where: { nativeKeys.contains($0.key.scalarText ?? "") }) {
            throw ConfigError(file: file, mark: native.key.mark, field: native.key.scalarText ?? "",
                              message: "this config mixes the product description's form (`\(description.key.scalarText ?? "")` at line \(description.key.mark.line)) with Meshgate's native form; write it in one form (`meshgate convert` prints the native equivalent of a description-form config)")
        }
        return true
    }

    /// The native document, and for the positions it reuses, the
    /// description field each came from (so that an error the native
    /// loader finds there names the field the user wrote).
    public struct Translation {
        public var document: YAMLNode
        public var origins: [YAMLMark: String]
    }

    public static func translate(_ root: YAMLNode, file: String) throws(ConfigError) -> Translation {
        let top = try YAMLFieldReader(root, file: file, path: "", allowed: keys.sorted())
        let here = root.mark
        var origins: [YAMLMark: String] = [:]
        func note(_ mark: YAMLMark, _ field: String) {
            if origins[mark] == nil { origins[mark] = field }
        }

        // mtls: whether clients must present certificates, and where the files are.
        var mutual = false
        var certDirectory = "certs"
        var certMark = here
        if let node = top.node("mtls") {
            let m = try YAMLFieldReader(node, file: file, path: "mtls", allowed: ["enabled", "cert_dir"])
            mutual = try m.bool("enabled") ?? false
            if let dir = try m.string("cert_dir") { certDirectory = dir }
            certMark = node.mark
            note(certMark, "mtls")
        }

        // load_balancer: the chain's balancer and the health-check period.
        var balancer: YAMLNode?
        var healthInterval: YAMLNode?
        if let node = top.node("load_balancer") {
            let lb = try YAMLFieldReader(node, file: file, path: "load_balancer", allowed: ["algorithm", "health_check_interval", "hash_header"])
            if let name = try lb.string("algorithm") {
                guard let plugin = algorithms[name] else {
                    throw lb.error("algorithm", lb.node("algorithm"), "unknown algorithm '\(name)' (known: \(algorithms.keys.sorted().joined(separator: ", ")))")
                }
                let at = lb.node("algorithm")!.mark
                note(at, "load_balancer.algorithm")
                var entry: [(String, YAMLNode)] = [("plugin", scalar(plugin, at))]
                if plugin == "consistent_hash" {
                    let header = try lb.string("hash_header") ?? defaultHashHeader
                    entry.append(("config", mapping([("header", scalar(header, at))], at)))
                }
                balancer = mapping(entry, at)
            }
            healthInterval = lb.node("health_check_interval")
            if let healthInterval { note(healthInterval.mark, "load_balancer.health_check_interval") }
        }

        // retry_policy and hedging: the route's resilience filter (one of them, as gRFC A6 has it).
        var resilience: YAMLNode?
        if let node = top.node("retry_policy") {
            // The description's keys are the retry plugin's own; it checks them.
            note(node.mark, "retry_policy")
            resilience = mapping([("plugin", scalar("retry", node.mark)), ("config", node)], node.mark)
        }
        if let node = top.node("hedging") {
            if resilience != nil {
                throw top.error("hedging", node, "a route retries or hedges, not both (gRFC A6): keep retry_policy or hedging")
            }
            let h = try YAMLFieldReader(node, file: file, path: "hedging", allowed: ["hedge_delay", "max_hedges"])
            note(node.mark, "hedging")
            if let delay = h.node("hedge_delay") { note(delay.mark, "hedging.hedge_delay") }
            var config: [(String, YAMLNode)] = []
            if let delay = h.node("hedge_delay") { config.append(("hedging_delay", delay)) }
            if let hedges = try h.int("max_hedges", range: 1...4) {
                // max_hedges extra copies besides the first attempt.
                config.append(("max_attempts", scalar(String(hedges + 1), h.node("max_hedges")!.mark)))
            }
            resilience = mapping([("plugin", scalar("hedge", node.mark)), ("config", mapping(config, node.mark))], node.mark)
        }

        // connection_pool: listener and endpoint connection limits.
        var maxConnections: YAMLNode?
        var perEndpoint: YAMLNode?
        var idleTimeout: YAMLNode?
        if let node = top.node("connection_pool") {
            let p = try YAMLFieldReader(node, file: file, path: "connection_pool", allowed: ["max_connections", "max_connections_per_endpoint", "idle_timeout"])
            maxConnections = p.node("max_connections")
            perEndpoint = p.node("max_connections_per_endpoint")
            idleTimeout = p.node("idle_timeout")
            for key in ["max_connections", "max_connections_per_endpoint", "idle_timeout"] {
                if let n = p.node(key) { note(n.mark, "connection_pool.\(key)") }
            }
        }

        let directory = ConfigPaths.directory(of: file)
        func certificate(_ names: [String]) -> YAMLNode {
            // The first of the names that exists (dev-certs.sh's .pem, then
            // the description's openssl .crt), else the first, so that a
            // missing file is named as the native loader reports it.
            let chosen = names.first { (try? Posix.status(ConfigPaths.resolve("\(certDirectory)/\($0)", against: directory))) != nil } ?? names[0]
            return scalar("\(certDirectory)/\(chosen)", certMark)
        }

        var listeners: [YAMLNode] = []
        var clusters: [YAMLNode] = []
        var replicaPorts: [Int: (service: String, field: String, mark: YAMLMark)] = [:]
        var listenerPorts: [Int: String] = [:]
        let services = try top.list("services")
        guard !services.isEmpty else {
            throw ConfigError(file: file, mark: here, field: "services", message: "at least one service is required")
        }
        for (node, path) in services {
            let s = try YAMLFieldReader(node, file: file, path: path, allowed: ["name", "port", "replicas", "use_tls", "replica_host", "replica_base_port"])
            let name = try s.requiredString("name")
            guard let port = try s.int("port", range: 1...65535) else {
                throw ConfigError(file: file, mark: node.mark, field: s.fieldPath("port"), message: "required field is missing")
            }
            let portMark = s.node("port")!.mark
            note(portMark, s.fieldPath("port"))
            if let n = s.node("use_tls") { note(n.mark, s.fieldPath("use_tls")) }
            if let n = s.node("replicas") { note(n.mark, s.fieldPath("replicas")) }
            note(node.mark, path)
            let replicas = try s.int("replicas", range: 1...1000) ?? 1
            let host = try s.string("replica_host") ?? "127.0.0.1"
            let base = try s.int("replica_base_port", range: 1...65535) ?? port + 10
            let usesTLS = try s.bool("use_tls") ?? false
            if mutual && !usesTLS {
                throw s.error("use_tls", s.node("use_tls") ?? node, "mtls.enabled needs TLS: set use_tls: true on service '\(name)' (or disable mtls)")
            }
            guard base + replicas - 1 <= 65535 else {
                throw s.error("replicas", s.node("replicas"), "replicas from port \(base) would pass 65535")
            }
            for replicaPort in base..<(base + replicas) {
                if let other = replicaPorts[replicaPort] {
                    throw s.error("replicas", s.node("replicas") ?? node, "replica port \(replicaPort) is also one of service '\(other.service)''s: set replica_base_port")
                }
                replicaPorts[replicaPort] = (name, s.fieldPath("replicas"), (s.node("replicas") ?? node).mark)
            }
            if let other = listenerPorts[port] {
                throw s.error("port", s.node("port"), "port \(port) is also service '\(other)''s")
            }
            listenerPorts[port] = name

            var listener: [(String, YAMLNode)] = [
                ("name", scalar(name, node.mark)),
                ("address", scalar("0.0.0.0:\(port)", portMark)),
            ]
            if let maxConnections { listener.append(("max_connections", maxConnections)) }
            if let idleTimeout { listener.append(("idle_timeout", idleTimeout)) }
            if usesTLS {
                var tls: [(String, YAMLNode)] = [("cert", certificate(["server.pem", "server.crt"])), ("key", certificate(["server.key"]))]
                if mutual {
                    tls += [("ca", certificate(["ca.pem", "ca.crt"])), ("client_auth", scalar("required", certMark))]
                }
                listener.append(("tls", mapping(tls, s.node("use_tls")!.mark)))
            }
            // Every path (the service's methods, reflection for grpcurl) to the replicas.
            var route: [(String, YAMLNode)] = [
                ("match", mapping([("path_prefix", scalar("/", node.mark))], node.mark)),
                ("cluster", scalar(name, node.mark)),
            ]
            let filters = [balancer, resilience].compactMap { $0 }
            route.append(("filters", .sequence(filters, node.mark)))
            listener.append(("routes", .sequence([mapping(route, node.mark)], node.mark)))
            listeners.append(mapping(listener, node.mark))

            var cluster: [(String, YAMLNode)] = [("name", scalar(name, node.mark))]
            if let perEndpoint { cluster.append(("max_connections_per_endpoint", perEndpoint)) }
            if usesTLS {
                var tls: [(String, YAMLNode)] = [("ca", certificate(["ca.pem", "ca.crt"]))]
                if mutual { tls += [("cert", certificate(["client.pem", "client.crt"])), ("key", certificate(["client.key"]))] }
                cluster.append(("tls", mapping(tls, s.node("use_tls")!.mark)))
            }
            if let healthInterval {
                cluster.append(("health_check", mapping([("mode", scalar("check", healthInterval.mark)), ("interval", healthInterval)], healthInterval.mark)))
            }
            let replicaMark = s.node("replicas")?.mark ?? node.mark
            let endpoints = (base..<(base + replicas)).map { p in
                mapping([("address", scalar(SocketAddressSpec(host: host, port: p).description, replicaMark))], replicaMark)
            }
            cluster.append(("endpoints", .sequence(endpoints, replicaMark)))
            clusters.append(mapping(cluster, node.mark))
        }

        // A replica must not be one of the gateway's own ports: its
        // cluster would send calls back into the gateway.
        for (replicaPort, owner) in replicaPorts.sorted(by: { $0.key < $1.key }) {
            let clash = listenerPorts[replicaPort].map { "service '\($0)''s listener" }
                ?? ([8080: "the dashboard's", 9090: "the metrics'", 9901: "the admin API's"][replicaPort].map { "\($0) port" })
            if let clash {
                throw ConfigError(file: file, mark: owner.mark, field: owner.field,
                                  message: "replica port \(replicaPort) of service '\(owner.service)' is \(clash): set replica_base_port")
            }
        }
        let document = mapping([
            // The description's dashboard (:8080/dashboard) and metrics
            // (:9090/metrics) ports, read-only; the full admin on loopback.
            ("admin", mapping([
                ("address", scalar("127.0.0.1:9901", here)),
                ("read_only_addresses", .sequence([scalar("0.0.0.0:8080", here), scalar("0.0.0.0:9090", here)], here)),
            ], here)),
            ("listeners", .sequence(listeners, here)),
            ("clusters", .sequence(clusters, here)),
        ], here)
        return Translation(document: document, origins: origins)
    }

    private static func scalar(_ text: String, _ mark: YAMLMark) -> YAMLNode {
        .scalar(text, quoted: false, mark)
    }

    private static func mapping(_ pairs: [(String, YAMLNode)], _ mark: YAMLMark) -> YAMLNode {
        .mapping(pairs.map { (key: scalar($0.0, mark), value: $0.1) }, mark)
    }
}
