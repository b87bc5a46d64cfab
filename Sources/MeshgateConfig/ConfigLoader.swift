import MeshgatePosix
import MeshgateYAML

/// Turns YAML text into a validated `GatewayConfig`. Every error names the
/// file, line, column and field.
public enum ConfigLoader {
    public static func load(file: String) throws(ConfigError) -> GatewayConfig {
        try parse(try document(file: file), file: file)
    }

    public static func parse(_ text: String, file: String) throws(ConfigError) -> GatewayConfig {
        try parse(try document(text, file: file), file: file)
    }

    /// The config's YAML tree in the native form: as written, or translated
    /// from the product description's form (`DescriptionConfigTranslator`).
    public static func nativeDocument(file: String) throws(ConfigError) -> YAMLNode {
        try document(file: file).document
    }

    private static func document(file: String) throws(ConfigError) -> DescriptionConfigTranslator.Translation {
        let bytes: [UInt8]
        do {
            bytes = try Posix.readFile(file, maxBytes: InputLimits.configFile.maxBytes)
        } catch {
            throw ConfigError(file: file, mark: nil, field: "", message: "cannot read the file: \(error.reason)")
        }
        return try document(String(decoding: bytes, as: UTF8.self), file: file)
    }

    private static func document(_ text: String, file: String) throws(ConfigError) -> DescriptionConfigTranslator.Translation {
        let root: YAMLNode
        do {
            root = try YAMLParser.parse(text, limits: InputLimits.configFile)
        } catch {
            throw ConfigError(file: file, mark: error.mark, field: "", message: error.explanation)
        }
        if case .null = root {
            throw ConfigError(file: file, mark: nil, field: "", message: "the config is empty; it needs at least `listeners:` and `clusters:`")
        }
        if try DescriptionConfigTranslator.isDescriptionForm(root, file: file) {
            return try DescriptionConfigTranslator.translate(root, file: file)
        }
        return .init(document: root, origins: [:])
    }

    /// A translated config's errors name the description field at their
    /// position, and the native field it became.
    private static func parse(_ translation: DescriptionConfigTranslator.Translation, file: String) throws(ConfigError) -> GatewayConfig {
        do {
            var config = try parse(root: translation.document, file: file)
            config.fieldOrigins = translation.origins
            return config
        } catch {
            throw GatewayConfig.located(error, origins: translation.origins)
        }
    }

    public static func parse(root: YAMLNode, file: String) throws(ConfigError) -> GatewayConfig {
        let top = try YAMLFieldReader(root, file: file, path: "", allowed: ["runtime", "admin", "listeners", "clusters", "plugins", "plugin_dir"])
        var config = GatewayConfig(runtime: RuntimeConfig(), admin: nil, listeners: [], clusters: [], sourceFile: file)

        if let node = top.node("runtime") {
            let r = try YAMLFieldReader(node, file: file, path: "runtime", allowed: ["event_loops", "drain_timeout", "access_log", "metrics",
                                                                                     "global_buffer_limit_bytes", "max_metric_series",
                                                                                     "metric_series_idle_timeout"])
            config.runtime.eventLoops = try r.int("event_loops", range: 1...256)
            if let on = try r.bool("access_log") { config.runtime.accessLog = on }
            if let on = try r.bool("metrics") { config.runtime.metrics = on }
            if let d = try r.duration("drain_timeout") { config.runtime.drainTimeout = d }
            if let n = try r.int("global_buffer_limit_bytes", range: 0...(1 << 40)) {
                if n != 0 && n < 65_536 {
                    throw ConfigError(file: file, mark: r.node("global_buffer_limit_bytes")?.mark, field: r.fieldPath("global_buffer_limit_bytes"),
                                      message: "must be 0 (no cap) or at least 65536 (one 64 KiB granule), got \(n)")
                }
                config.runtime.globalBufferLimitBytes = n
            }
            if let n = try r.int("max_metric_series", range: 1...1_000_000) { config.runtime.maxMetricSeries = n }
            if let d = try r.duration("metric_series_idle_timeout") { config.runtime.metricSeriesIdleTimeout = d }
        }
        if let node = top.node("admin") {
            let a = try YAMLFieldReader(node, file: file, path: "admin", allowed: ["address", "read_only_addresses", "max_connections",
                                                                                  "idle_timeout", "request_timeout", "allowed_hosts"])
            var admin = AdminConfig(address: try a.requiredAddress("address"))
            if let n = try a.int("max_connections", range: 1...100_000) { admin.maxConnections = n }
            if let d = try a.duration("idle_timeout") { admin.idleTimeout = d }
            if let d = try a.duration("request_timeout") {
                guard d > .zero else {
                    throw ConfigError(file: file, mark: a.node("request_timeout")?.mark, field: a.fieldPath("request_timeout"),
                                      message: "must be more than 0s: a request that never completes would hold its connection for good")
                }
                admin.requestTimeout = d
            }
            var seen = [admin.address.description: "address"]
            for (item, itemPath) in try a.list("read_only_addresses") {
                guard let text = item.scalarText else {
                    throw ConfigError(file: file, mark: item.mark, field: itemPath, message: "expected HOST:PORT, e.g. 0.0.0.0:8080, found \(item.kindName)")
                }
                let address: SocketAddressSpec
                do {
                    address = try SocketAddressSpec.parse(text)
                } catch {
                    throw ConfigError(file: file, mark: item.mark, field: itemPath, message: "'\(text)': \(error)")
                }
                if let first = seen[address.description] {
                    throw ConfigError(file: file, mark: item.mark, field: itemPath, message: "\(address) is already admin.\(first)")
                }
                seen[address.description] = "read_only_addresses"
                admin.readOnlyAddresses.append(address)
            }
            for (item, itemPath) in try a.list("allowed_hosts") {
                // A host name as a browser puts it in `Host`: no port, no
                // scheme, no wildcard (each name is one an operator uses).
                guard let text = item.scalarText, !text.isEmpty,
                      text.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7f && $0 != UInt8(ascii: ":") && $0 != UInt8(ascii: "/") && $0 != UInt8(ascii: "*") }) else {
                    throw ConfigError(file: file, mark: item.mark, field: itemPath,
                                      message: "expected a host name without port or scheme, e.g. gateway.internal, found \(item.scalarText.map { "'\($0)'" } ?? item.kindName)")
                }
                admin.allowedHosts.append(text)
            }
            config.admin = admin
        }

        config.pluginDirectory = try top.string("plugin_dir")
        var pluginMarks: [String: YAMLMark] = [:]
        for (node, path) in try top.list("plugins") {
            let p = try YAMLFieldReader(node, file: file, path: path, allowed: ["name", "path"])
            let declaration = PluginDeclaration(name: try p.requiredString("name"), path: try p.requiredString("path"), mark: node.mark)
            if let first = pluginMarks[declaration.name] {
                throw ConfigError(file: file, mark: node.mark, field: "\(path).name", message: "plugin '\(declaration.name)' is declared twice (first at line \(first.line))")
            }
            pluginMarks[declaration.name] = node.mark
            config.plugins.append(declaration)
        }

        var clusterMarks: [String: YAMLMark] = [:]
        for (node, path) in try top.list("clusters") {
            let cluster = try parseCluster(node, file: file, path: path)
            if let first = clusterMarks[cluster.name] {
                throw ConfigError(file: file, mark: node.mark, field: "\(path).name", message: "duplicate cluster name '\(cluster.name)' (first declared at line \(first.line))")
            }
            clusterMarks[cluster.name] = node.mark
            config.clusters.append(cluster)
        }

        let listenerNodes = try top.list("listeners")
        if listenerNodes.isEmpty {
            throw ConfigError(file: file, mark: top.mark, field: "listeners", message: "at least one listener is required")
        }
        var listenerMarks: [String: YAMLMark] = [:]
        var addresses: [SocketAddressSpec: String] = [:]
        for (node, path) in listenerNodes {
            let listener = try parseListener(node, file: file, path: path, clusters: Set(clusterMarks.keys))
            if let first = listenerMarks[listener.name] {
                throw ConfigError(file: file, mark: node.mark, field: "\(path).name", message: "duplicate listener name '\(listener.name)' (first declared at line \(first.line))")
            }
            if let other = addresses[listener.address] {
                throw ConfigError(file: file, mark: node.mark, field: "\(path).address", message: "address \(listener.address) is already used by listener '\(other)'")
            }
            listenerMarks[listener.name] = node.mark
            addresses[listener.address] = listener.name
            config.listeners.append(listener)
        }
        return config
    }

    private static func parseListener(_ node: YAMLNode, file: String, path: String, clusters: Set<String>) throws(ConfigError) -> ListenerConfig {
        let l = try YAMLFieldReader(node, file: file, path: path, allowed: ["name", "address", "routes", "max_concurrent_streams", "max_connections", "tls",
                                                                         "idle_timeout", "send_timeout", "per_connection_buffer_limit_bytes", "keepalive",
                                                                         "health_only", "reflection", "grpc_web", "cors",
                                                                         "max_request_headers_kb", "max_headers_count"])
        let name = try l.requiredString("name")
        let address = try l.requiredAddress("address")
        var listener = ListenerConfig(name: name, address: address, routes: [])
        if let n = try l.int("max_concurrent_streams", range: 1...1_000_000) { listener.maxConcurrentStreams = n }
        if let d = try l.duration("idle_timeout") { listener.idleTimeout = d }
        if let d = try l.duration("send_timeout") { listener.sendTimeout = d }
        listener.maxConnections = try l.int("max_connections", range: 1...10_000_000)
        if let n = try l.int("per_connection_buffer_limit_bytes", range: 65_536...(1 << 40)) { listener.perConnectionBufferLimitBytes = n }
        // Envoy's ranges: up to 8 MiB of headers, at least one field.
        if let n = try l.int("max_request_headers_kb", range: 1...8192) { listener.maxRequestHeadersKB = n }
        if let n = try l.int("max_headers_count", range: 1...100_000) { listener.maxHeadersCount = n }
        if let node = l.node("keepalive") { listener.keepalive = try parseKeepalive(node, file: file, path: l.fieldPath("keepalive")) }
        if let tlsNode = l.node("tls") {
            listener.tls = try parseTLS(tlsNode, file: file, path: l.fieldPath("tls"), listener: true)
        }
        listener.healthOnly = try l.bool("health_only") ?? false
        // A probe port is public (plaintext, for probes that cannot present
        // a certificate) and serves connections that last a probe: an idle
        // one is closed after a minute unless the config says otherwise.
        if listener.healthOnly, l.node("idle_timeout") == nil { listener.idleTimeout = ListenerConfig.healthOnlyIdleTimeout }
        listener.reflection = try l.bool("reflection") ?? true
        listener.grpcWeb = try l.bool("grpc_web") ?? false
        if let corsNode = l.node("cors") {
            guard listener.grpcWeb else { throw l.error("cors", corsNode, "cors applies to gRPC-Web calls: set grpc_web: true on this listener") }
            listener.cors = try parseCORS(corsNode, file: file, path: l.fieldPath("cors"))
        }
        if listener.healthOnly, let routes = l.node("routes") {
            throw l.error("routes", routes, "a health_only listener serves only grpc.health.v1: it takes no routes (put them on another listener)")
        }
        for (routeNode, routePath) in try l.list("routes") {
            listener.routes.append(try parseRoute(routeNode, file: file, path: routePath, clusters: clusters))
        }
        return listener
    }

    private static func parseCORS(_ node: YAMLNode, file: String, path: String) throws(ConfigError) -> CORSConfig {
        let c = try YAMLFieldReader(node, file: file, path: path, allowed: ["allowed_origins", "allowed_headers", "expose_headers", "max_age", "allow_credentials"])
        func strings(_ key: String, _ check: (String) -> Bool, _ what: String) throws(ConfigError) -> [String] {
            var out: [String] = []
            for (item, itemPath) in try c.list(key) {
                guard case .scalar(let value, _, _) = item, check(value) else {
                    throw ConfigError(file: file, mark: item.mark, field: itemPath, message: what)
                }
                out.append(value)
            }
            return out
        }
        let origins = try strings("allowed_origins", { $0 == "*" || ($0.hasPrefix("http://") || $0.hasPrefix("https://")) && !$0.hasSuffix("/") },
                                  "must be an origin such as https://app.example.com (scheme and host, no path) or \"*\"")
        guard !origins.isEmpty else { throw c.error("allowed_origins", c.node("allowed_origins"), "list at least one origin (or \"*\")") }
        let token: (String) -> Bool = { !$0.isEmpty && $0.utf8.allSatisfy { b in b > 0x20 && b < 0x7f && b != UInt8(ascii: ",") && b != UInt8(ascii: ":") } }
        var cors = CORSConfig(allowedOrigins: origins)
        cors.allowedHeaders = try strings("allowed_headers", token, "must be a header name").map { $0.lowercased() }
        cors.exposeHeaders = try strings("expose_headers", token, "must be a header name").map { $0.lowercased() }
        if let d = try c.duration("max_age") { cors.maxAge = d }
        cors.allowCredentials = try c.bool("allow_credentials") ?? false
        if cors.allowCredentials && origins.contains("*") {
            throw c.error("allow_credentials", c.node("allow_credentials"), "browsers refuse credentials with a wildcard origin: list the origins")
        }
        return cors
    }

    private static func parseRoute(_ node: YAMLNode, file: String, path: String, clusters: Set<String>) throws(ConfigError) -> RouteConfig {
        let r = try YAMLFieldReader(node, file: file, path: path, allowed: ["match", "cluster", "timeout", "max_timeout", "replay_buffer_limit",
                                                                      "max_request_message_bytes", "max_response_message_bytes", "allowed_identities", "filters"])
        let matchNode = try r.requiredNode("match")
        let m = try YAMLFieldReader(matchNode, file: file, path: r.fieldPath("match"), allowed: ["service", "method", "path_prefix", "headers"])
        var match = RouteMatchConfig()
        match.service = try m.string("service")
        if let method = try m.string("method") {
            let full = method.hasPrefix("/") ? method : "/" + method
            let parts = full.split(separator: "/", omittingEmptySubsequences: false)
            guard parts.count == 3, !parts[1].isEmpty, !parts[2].isEmpty else {
                throw m.error("method", m.node("method"), "'\(method)' is not a full method name like /mesh.v1.MeshService/Process")
            }
            match.method = full
        }
        match.pathPrefix = try m.string("path_prefix")
        if let prefix = match.pathPrefix, !prefix.hasPrefix("/") {
            throw m.error("path_prefix", m.node("path_prefix"), "must start with '/'")
        }
        for (headerNode, headerPath) in try m.list("headers") {
            let h = try YAMLFieldReader(headerNode, file: file, path: headerPath, allowed: ["name", "exact", "present"])
            let name = try h.requiredString("name").lowercased()
            let exact = try h.string("exact")
            let present = try h.bool("present")
            switch (exact, present) {
            case (let value?, nil): match.headers.append(HeaderMatchConfig(name: name, rule: .exact(value)))
            case (nil, let p?): match.headers.append(HeaderMatchConfig(name: name, rule: .present(p)))
            default:
                throw ConfigError(file: file, mark: headerNode.mark, field: headerPath, message: "give exactly one of `exact:` or `present:`")
            }
        }

        let cluster = try r.requiredString("cluster")
        guard clusters.contains(cluster) else {
            let known = clusters.isEmpty ? "none are declared" : "declared: " + clusters.sorted().joined(separator: ", ")
            throw r.error("cluster", r.node("cluster"), "unknown cluster '\(cluster)' (\(known))")
        }
        var route = RouteConfig(match: match, cluster: cluster, timeout: try r.duration("timeout"),
                                maxTimeout: try r.duration("max_timeout"), filters: [], mark: node.mark)
        if let limit = try r.int("replay_buffer_limit", range: 0...(64 << 20)) { route.replayBufferLimit = limit }
        route.maxRequestMessageBytes = try r.int("max_request_message_bytes", range: 0...Int(Int32.max))
        route.maxResponseMessageBytes = try r.int("max_response_message_bytes", range: 0...Int(Int32.max))
        if r.node("allowed_identities") != nil {
            var names: [String] = []
            for (item, itemPath) in try r.list("allowed_identities") {
                guard case .scalar(let value, _, _) = item, !value.isEmpty else {
                    throw ConfigError(file: file, mark: item.mark, field: itemPath, message: "must be a client identity: a SPIFFE URI, a DNS name or a certificate CN")
                }
                names.append(value)
            }
            route.allowedIdentities = names
        }
        for (filterNode, filterPath) in try r.list("filters") {
            let f = try YAMLFieldReader(filterNode, file: file, path: filterPath, allowed: ["plugin", "config"])
            route.filters.append(FilterConfig(plugin: try f.requiredString("plugin"), config: f.node("config"), mark: filterNode.mark, field: filterPath))
        }
        return route
    }

    private static func parseTLS(_ node: YAMLNode, file: String, path: String, listener: Bool) throws(ConfigError) -> TLSFilesConfig {
        let allowed: [String] = listener ? ["cert", "key", "ca", "client_auth", "handshake_timeout"] : ["cert", "key", "ca", "server_name"]
        let t = try YAMLFieldReader(node, file: file, path: path, allowed: allowed)
        let directory = ConfigPaths.directory(of: file)
        func resolved(_ key: String) throws(ConfigError) -> String? {
            try t.string(key).map { ConfigPaths.resolve($0, against: directory) }
        }
        var tls = TLSFilesConfig(cert: try resolved("cert"), key: try resolved("key"), ca: try resolved("ca"), mark: node.mark, field: path)
        if listener {
            guard tls.cert != nil, tls.key != nil else {
                throw ConfigError(file: file, mark: node.mark, field: path, message: "a TLS listener needs `cert` and `key`")
            }
            if let mode = try t.string("client_auth") {
                guard ["none", "optional", "required"].contains(mode) else {
                    throw t.error("client_auth", t.node("client_auth"), "must be none, optional or required, got '\(mode)'")
                }
                tls.clientAuth = mode
            }
            if let timeout = try t.duration("handshake_timeout") {
                guard timeout > .zero else { throw t.error("handshake_timeout", t.node("handshake_timeout"), "must be more than zero") }
                tls.handshakeTimeout = timeout
            }
            if tls.clientAuth != "none" && tls.ca == nil {
                throw ConfigError(file: file, mark: node.mark, field: "\(path).ca", message: "client_auth \(tls.clientAuth) needs `ca`, the bundle that verifies client certificates")
            }
        } else {
            tls.serverName = try t.string("server_name")
            if (tls.cert == nil) != (tls.key == nil) {
                throw ConfigError(file: file, mark: node.mark, field: path, message: "a client certificate needs both `cert` and `key`")
            }
        }
        return tls
    }

    private static func parseCluster(_ node: YAMLNode, file: String, path: String) throws(ConfigError) -> ClusterConfig {
        let c = try YAMLFieldReader(node, file: file, path: path, allowed: [
            "name", "endpoints", "discovery", "connect_timeout", "max_connections_per_endpoint", "health_check", "tls", "keepalive",
            "max_response_headers_kb", "max_headers_count",
        ])
        var cluster = ClusterConfig(name: try c.requiredString("name"), endpoints: [])
        if let d = try c.duration("connect_timeout") { cluster.connectTimeout = d }
        if let n = try c.int("max_connections_per_endpoint", range: 1...1024) { cluster.maxConnectionsPerEndpoint = n }
        if let n = try c.int("max_response_headers_kb", range: 1...8192) { cluster.maxResponseHeadersKB = n }
        if let n = try c.int("max_headers_count", range: 1...100_000) { cluster.maxHeadersCount = n }
        if let tlsNode = c.node("tls") {
            cluster.tls = try parseTLS(tlsNode, file: file, path: c.fieldPath("tls"), listener: false)
        }
        if let node = c.node("health_check") {
            cluster.healthCheck = try parseHealthCheck(node, file: file, path: c.fieldPath("health_check"))
        }
        if let node = c.node("keepalive") { cluster.keepalive = try parseKeepalive(node, file: file, path: c.fieldPath("keepalive")) }
        if let discoveryNode = c.node("discovery") {
            if c.node("endpoints") != nil {
                throw c.error("endpoints", c.node("endpoints"), "a cluster has either `endpoints:` or `discovery:`, not both")
            }
            cluster.discovery = try parseDiscovery(discoveryNode, file: file, path: c.fieldPath("discovery"))
            let d = try YAMLFieldReader(discoveryNode, file: file, path: c.fieldPath("discovery"), allowed: ["dns", "file", "etcd", "max_endpoints"])
            if let n = try d.int("max_endpoints", range: 1...1_000_000) { cluster.maxDiscoveredEndpoints = n }
            return cluster
        }
        let endpointNodes = try c.list("endpoints")
        if endpointNodes.isEmpty {
            throw ConfigError(file: file, mark: node.mark, field: c.fieldPath("endpoints"), message: "a cluster needs at least one endpoint, or a `discovery:` source")
        }
        cluster.endpoints = try parseEndpoints(endpointNodes, file: file)
        return cluster
    }

    /// Endpoint entries (`address`, `weight`, `metadata`): a cluster's
    /// `endpoints:` and a discovery file's list.
    public static func parseEndpoints(_ nodes: [(node: YAMLNode, path: String)], file: String) throws(ConfigError) -> [EndpointConfig] {
        var seen: Set<SocketAddressSpec> = []
        var endpoints: [EndpointConfig] = []
        for (endpointNode, endpointPath) in nodes {
            let e = try YAMLFieldReader(endpointNode, file: file, path: endpointPath, allowed: ["address", "weight", "metadata"])
            var endpoint = EndpointConfig(address: try e.requiredAddress("address"))
            if let w = try e.int("weight", range: 1...10_000) { endpoint.weight = w }
            if let meta = e.node("metadata") {
                guard case .mapping(let pairs, _) = meta else {
                    throw e.error("metadata", meta, "must be a mapping of names to text")
                }
                // Checked before anything is copied: the labels of every
                // endpoint are held per event loop and shown on /clusters.
                guard pairs.count <= InputLimits.maxMetadataEntries else {
                    throw e.error("metadata", meta, "\(pairs.count) names, over the limit of \(InputLimits.maxMetadataEntries) per endpoint")
                }
                let bytes = pairs.reduce(0) { $0 + ($1.key.scalarText?.utf8.count ?? 0) + ($1.value.scalarText?.utf8.count ?? 0) }
                guard bytes <= InputLimits.maxMetadataBytes else {
                    throw e.error("metadata", meta, "names and values of \(bytes) bytes, over the limit of \(InputLimits.maxMetadataBytes) bytes per endpoint")
                }
                for (key, value) in pairs {
                    guard let name = key.scalarText, let text = value.scalarText else {
                        throw ConfigError(file: file, mark: value.mark, field: "\(endpointPath).metadata", message: "names and values must be text")
                    }
                    endpoint.metadata[name] = text
                }
            }
            if !seen.insert(endpoint.address).inserted {
                throw ConfigError(file: file, mark: endpointNode.mark, field: "\(endpointPath).address", message: "endpoint \(endpoint.address) is listed twice")
            }
            endpoints.append(endpoint)
        }
        return endpoints
    }

    private static func parseDiscovery(_ node: YAMLNode, file: String, path: String) throws(ConfigError) -> DiscoveryConfig {
        let d = try YAMLFieldReader(node, file: file, path: path, allowed: ["dns", "file", "etcd", "max_endpoints"])
        let given = ["dns", "file", "etcd"].filter { d.node($0) != nil }
        guard given.count == 1 else {
            throw ConfigError(file: file, mark: node.mark, field: path,
                              message: given.isEmpty ? "needs one source: dns, file or etcd" : "has \(given.joined(separator: " and ")); a cluster takes exactly one source")
        }
        let directory = ConfigPaths.directory(of: file)
        if let n = d.node("dns") {
            let r = try YAMLFieldReader(n, file: file, path: d.fieldPath("dns"), allowed: [
                "name", "port", "srv", "resolver", "refresh_interval", "min_refresh_interval", "timeout", "family",
            ])
            var dns: DNSDiscoveryConfig
            if let srv = try r.string("srv") {
                if r.node("name") != nil || r.node("port") != nil {
                    throw r.error("srv", r.node("srv"), "`srv` takes port and weight from the records; leave out `name` and `port`")
                }
                dns = DNSDiscoveryConfig(name: srv, srv: true)
            } else {
                dns = DNSDiscoveryConfig(name: try r.requiredString("name"))
                guard let port = try r.int("port", range: 1...65535) else {
                    throw ConfigError(file: file, mark: n.mark, field: r.fieldPath("port"), message: "A/AAAA discovery needs the endpoints' `port` (or use `srv:`)")
                }
                dns.port = port
            }
            dns.name = dns.name.hasSuffix(".") ? String(dns.name.dropLast()) : dns.name
            dns.resolver = try r.address("resolver")
            if let v = try r.duration("refresh_interval") { dns.refreshInterval = v }
            if let v = try r.duration("min_refresh_interval") { dns.minRefreshInterval = v }
            if let v = try r.duration("timeout") { dns.timeout = v }
            if let text = try r.string("family") {
                guard let family = DNSDiscoveryConfig.Family(rawValue: text) else {
                    throw r.error("family", r.node("family"), "'\(text)' is not a family: use any, v4 or v6")
                }
                dns.family = family
            }
            guard dns.refreshInterval > .zero, dns.minRefreshInterval > .zero, dns.timeout > .zero else {
                throw ConfigError(file: file, mark: n.mark, field: r.fieldPath("refresh_interval"), message: "intervals and the timeout must be more than zero")
            }
            return .dns(dns)
        }
        if let n = d.node("file") {
            let r = try YAMLFieldReader(n, file: file, path: d.fieldPath("file"), allowed: ["path", "refresh_interval"])
            var config = FileDiscoveryConfig(path: ConfigPaths.resolve(try r.requiredString("path"), against: directory))
            if let v = try r.duration("refresh_interval") {
                guard v > .zero else { throw r.error("refresh_interval", r.node("refresh_interval"), "must be more than zero") }
                config.refreshInterval = v
            }
            return .file(config)
        }
        let n = d.node("etcd")!
        let r = try YAMLFieldReader(n, file: file, path: d.fieldPath("etcd"), allowed: ["endpoints", "prefix", "tls", "dial_timeout"])
        var endpoints: [SocketAddressSpec] = []
        for (node, itemPath) in try r.list("endpoints") {
            guard var text = node.scalarText else {
                throw ConfigError(file: file, mark: node.mark, field: itemPath, message: "an etcd endpoint is HOST:PORT")
            }
            for scheme in ["http://", "https://"] where text.hasPrefix(scheme) { text.removeFirst(scheme.count) }
            do {
                endpoints.append(try SocketAddressSpec.parse(text))
            } catch {
                throw ConfigError(file: file, mark: node.mark, field: itemPath, message: "\(error)")
            }
        }
        guard !endpoints.isEmpty else {
            throw ConfigError(file: file, mark: n.mark, field: r.fieldPath("endpoints"), message: "etcd discovery needs at least one etcd endpoint (HOST:PORT)")
        }
        let prefix = try r.requiredString("prefix")
        guard !prefix.isEmpty else { throw r.error("prefix", r.node("prefix"), "must not be empty (it would watch the whole key space)") }
        var etcd = EtcdDiscoveryConfig(endpoints: endpoints, prefix: prefix)
        if let tlsNode = r.node("tls") { etcd.tls = try parseTLS(tlsNode, file: file, path: r.fieldPath("tls"), listener: false) }
        if let v = try r.duration("dial_timeout") { etcd.dialTimeout = v }
        return .etcd(etcd)
    }

    /// `keepalive: { interval, timeout }` of a cluster or a listener.
    private static func parseKeepalive(_ node: YAMLNode, file: String, path: String) throws(ConfigError) -> KeepaliveConfig {
        let k = try YAMLFieldReader(node, file: file, path: path, allowed: ["interval", "timeout"])
        var keepalive = KeepaliveConfig()
        if let d = try k.duration("interval") { keepalive.interval = d }
        if let d = try k.duration("timeout") { keepalive.timeout = d }
        guard keepalive.interval >= .milliseconds(100) else { throw k.error("interval", k.node("interval"), "must be at least 100ms") }
        guard keepalive.timeout > .zero else { throw k.error("timeout", k.node("timeout"), "must be more than zero") }
        return keepalive
    }

    private static func parseHealthCheck(_ node: YAMLNode, file: String, path: String) throws(ConfigError) -> HealthCheckConfig {
        let h = try YAMLFieldReader(node, file: file, path: path, allowed: [
            "mode", "interval", "timeout", "unhealthy_threshold", "healthy_threshold", "service", "jitter",
        ])
        var config = HealthCheckConfig()
        if let text = try h.string("mode") {
            guard let mode = HealthCheckConfig.Mode(rawValue: text) else {
                throw h.error("mode", h.node("mode"), "'\(text)' is not a mode: use watch or check")
            }
            config.mode = mode
        }
        if let d = try h.duration("interval") { config.interval = d }
        if let d = try h.duration("timeout") { config.timeout = d }
        if let d = try h.duration("jitter") { config.jitter = d }
        if let n = try h.int("unhealthy_threshold", range: 1...100) { config.unhealthyThreshold = n }
        if let n = try h.int("healthy_threshold", range: 1...100) { config.healthyThreshold = n }
        if let s = try h.string("service") { config.service = s }
        guard config.interval > .zero else { throw h.error("interval", h.node("interval"), "must be more than zero") }
        guard config.timeout > .zero else { throw h.error("timeout", h.node("timeout"), "must be more than zero") }
        return config
    }
}
