import MeshgateYAML

/// The JSON bodies of `/config` and `/plugins`.
enum AdminViews {
    /// The config new calls use (discovered endpoints included), with
    /// secrets redacted: private key paths, and filter config values whose
    /// key names a secret (token, password, secret, private or api key).
    static func config(_ serving: ServingConfig, generation: Int) -> String {
        let c = serving.config
        var out = "{\"generation\":\(generation),\"source_file\":\(Log.quote(c.sourceFile))"
        out += ",\"runtime\":{\"event_loops\":\(c.runtime.eventLoops.map(String.init) ?? "null"),\"drain_timeout\":\(Log.quote("\(c.runtime.drainTimeout)")),\"access_log\":\(c.runtime.accessLog)}"
        out += ",\"admin\":\(c.admin.map { "{\"address\":\(Log.quote($0.address.description)),\"read_only_addresses\":[\($0.readOnlyAddresses.map { Log.quote($0.description) }.joined(separator: ","))]}" } ?? "null")"
        out += ",\"listeners\":[" + c.listeners.map { l in
            "{\"name\":\(Log.quote(l.name)),\"address\":\(Log.quote(l.address.description)),\"max_concurrent_streams\":\(l.maxConcurrentStreams)"
                + ",\"tls\":\(tls(l.tls)),\"routes\":[" + l.routes.map(route).joined(separator: ",") + "]}"
        }.joined(separator: ",") + "]"
        out += ",\"clusters\":[" + c.clusters.map { cluster in
            "{\"name\":\(Log.quote(cluster.name)),\"discovery\":\(cluster.discovery.map { Log.quote($0.description) } ?? "null")"
                + ",\"tls\":\(tls(cluster.tls)),\"health_check\":\(cluster.healthCheck.map { Log.quote("\($0.mode.rawValue) every \($0.interval)") } ?? "null")"
                + ",\"endpoints\":[" + cluster.endpoints.map { "{\"address\":\(Log.quote($0.address.description)),\"weight\":\($0.weight)}" }.joined(separator: ",") + "]}"
        }.joined(separator: ",") + "]"
        out += ",\"plugins\":[" + c.plugins.map { "{\"name\":\(Log.quote($0.name)),\"path\":\(Log.quote($0.path))}" }.joined(separator: ",") + "]}\n"
        return out
    }

    private static func tls(_ files: TLSFilesConfig?) -> String {
        guard let files else { return "null" }
        return "{\"cert\":\(files.cert.map(Log.quote) ?? "null"),\"key\":\(files.key == nil ? "null" : "\"[redacted]\"")"
            + ",\"ca\":\(files.ca.map(Log.quote) ?? "null"),\"client_auth\":\(Log.quote(files.clientAuth))}"
    }

    private static func route(_ r: RouteConfig) -> String {
        var match: [String] = []
        if let s = r.match.service { match.append("\"service\":\(Log.quote(s))") }
        if let m = r.match.method { match.append("\"method\":\(Log.quote(m))") }
        if let p = r.match.pathPrefix { match.append("\"path_prefix\":\(Log.quote(p))") }
        let filters = r.filters.map { f in
            "{\"plugin\":\(Log.quote(f.plugin)),\"config\":\(f.config.map { redacted($0).jsonText } ?? "{}")}"
        }
        return "{\"match\":{\(match.joined(separator: ","))},\"cluster\":\(Log.quote(r.cluster)),\"filters\":[\(filters.joined(separator: ","))]}"
    }

    static func isSecretKey(_ key: String) -> Bool {
        let k = key.lowercased()
        return ["secret", "token", "password", "passwd", "private_key", "api_key", "apikey", "credential"].contains { k.contains($0) } || k == "key"
    }

    static func redacted(_ node: YAMLNode) -> YAMLNode {
        switch node {
        case .mapping(let pairs, let mark):
            return .mapping(pairs.map { pair in
                if let key = pair.key.scalarText, isSecretKey(key) { return (pair.key, .scalar("[redacted]", quoted: true, pair.value.mark)) }
                return (pair.key, redacted(pair.value))
            }, mark)
        case .sequence(let items, let mark):
            return .sequence(items.map(redacted), mark)
        default:
            return node
        }
    }

    /// Every plugin image the current generation uses.
    static func plugins(_ plugins: FilterChains) -> String {
        var seen: Set<String> = []
        var items: [String] = []
        for handle in plugins.handles where seen.insert(handle.image.sha256).inserted {
            let image = handle.image
            items.append("{\"name\":\(Log.quote(image.name)),\"version\":\(Log.quote(image.version)),\"path\":\(Log.quote(image.path))"
                + ",\"loaded_from\":\(Log.quote(image.loadedPath)),\"sha256\":\(Log.quote(image.sha256))"
                + ",\"abi\":\"\(image.abiMajor).\(image.abiMinor)\",\"kinds\":\(image.kinds)}")
        }
        return "{\"plugins\":[\(items.joined(separator: ","))]}\n"
    }
}
