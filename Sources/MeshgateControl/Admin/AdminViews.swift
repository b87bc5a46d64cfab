import GatewayHost
import MeshgateYAML
import MeshgateConfig
import MeshgateJSON
import MeshgateSupport
import MeshgateRouting
import MeshgatePluginHost

/// The JSON bodies of `/config`, `/plugins` and `/events`, and what a
/// read-only address leaves out of them.
package enum AdminViews {
    /// What a read-only address shows instead of an error text or a filter
    /// setting.
    package static let redactedError = "[redacted on read-only addresses: see the log or the full admin address]"
    package static let redacted = "[redacted]"

    /// The config new calls use (discovered endpoints included), with
    /// secrets redacted: private key paths; on the full admin address the
    /// filter settings whose key names a secret (`isSecretKey`), on a
    /// read-only address every filter setting (a plugin's config is
    /// free-form: only its author knows which values are secret; the keys
    /// stay, so the shape shows).
    package static func config(_ serving: ServingConfig, generation: Int, readOnly: Bool = false) -> String {
        let c = serving.config
        var json = JSONWriter()
        json.object { o in
            o.field("generation", generation)
            o.field("source_file", c.sourceFile)
            o.field("runtime") {
                $0.object { r in
                    r.key("event_loops")
                    if let loops = c.runtime.eventLoops { r.int(loops) } else { r.null() }
                    r.field("drain_timeout", "\(c.runtime.drainTimeout)")
                    r.field("access_log", c.runtime.accessLog)
                }
            }
            o.key("admin")
            if let admin = c.admin {
                o.object { a in
                    a.field("address", admin.address.description)
                    a.field("read_only_addresses") { $0.array(admin.readOnlyAddresses) { $0.string($1.description) } }
                }
            } else {
                o.null()
            }
            o.field("listeners") {
                $0.array(c.listeners) { json, l in
                    json.object { o in
                        o.field("name", l.name)
                        o.field("address", l.address.description)
                        o.field("max_concurrent_streams", l.maxConcurrentStreams)
                        o.field("tls") { tls(l.tls, into: &$0) }
                        o.field("routes") { $0.array(l.routes) { route($1, readOnly: readOnly, into: &$0) } }
                    }
                }
            }
            o.field("clusters") {
                $0.array(c.clusters) { json, cluster in
                    json.object { o in
                        o.field("name", cluster.name)
                        o.field("discovery", cluster.discovery?.description)
                        o.field("tls") { tls(cluster.tls, into: &$0) }
                        o.field("health_check", cluster.healthCheck.map { "\($0.mode.rawValue) every \($0.interval)" })
                        o.field("endpoints") {
                            $0.array(cluster.endpoints) { json, e in
                                json.object { o in
                                    o.field("address", e.address.description)
                                    o.field("weight", e.weight)
                                }
                            }
                        }
                    }
                }
            }
            o.field("plugins") {
                $0.array(c.plugins) { json, p in
                    json.object { o in
                        o.field("name", p.name)
                        o.field("path", p.path)
                    }
                }
            }
        }
        return json.text + "\n"
    }

    private static func tls(_ files: TLSFilesConfig?, into json: inout JSONWriter) {
        guard let files else { return json.null() }
        json.object { o in
            o.field("cert", files.cert)
            o.field("key", files.key.map { _ in Self.redacted })
            o.field("ca", files.ca)
            o.field("client_auth", files.clientAuth)
        }
    }

    private static func route(_ r: RouteConfig, readOnly: Bool, into json: inout JSONWriter) {
        json.object { o in
            o.field("match") {
                $0.object { m in
                    if let s = r.match.service { m.field("service", s) }
                    if let method = r.match.method { m.field("method", method) }
                    if let p = r.match.pathPrefix { m.field("path_prefix", p) }
                }
            }
            o.field("cluster", r.cluster)
            o.field("filters") {
                $0.array(r.filters) { json, f in
                    json.object { o in
                        o.field("plugin", f.plugin)
                        o.key("config")
                        o.raw(f.config.map { (readOnly ? fullyRedacted($0) : redacted($0)).jsonText } ?? "{}")
                    }
                }
            }
        }
    }

    /// Parts of key names that hold secrets in the configs people write,
    /// found anywhere in the name: passwords, tokens, HTTP credentials
    /// (authorization, bearer, cookie), signing material (hmac),
    /// connection strings (dsn), API keys written as one word.
    package static let secretNameParts = ["secret", "token", "password", "passwd", "passphrase", "credential", "authorization", "bearer",
                                  "cookie", "hmac", "apikey", "accesskey", "privatekey", "dsn", "jwt"]
    /// Words that name a secret only as a whole word of the name
    /// (`hmac_key`, `api-key`, `db_pass`, `auth`, `session_id`), so that
    /// `keepalive` or `passthrough` are not taken for one.
    package static let secretWords: Set<String> = ["key", "keys", "pass", "pwd", "auth", "creds", "private", "session", "sessions", "salt",
                                           "signature", "signing", "sig"]

    /// Whether a filter setting named `key` may hold a secret (`secretNameParts`
    /// anywhere in it, or one of `secretWords` as a word of it: words are
    /// split at `_`, `-`, `.`, spaces and camelCase humps).
    package static func isSecretKey(_ key: String) -> Bool {
        let lower = key.lowercased()
        if secretNameParts.contains(where: { lower.contains($0) }) { return true }
        var words: [String] = []
        var word = ""
        var previousLower = false
        for ch in key {
            if !(ch.isLetter || ch.isNumber) {
                if !word.isEmpty { words.append(word) }
                word = ""
                previousLower = false
                continue
            }
            if ch.isUppercase && previousLower {
                words.append(word)
                word = ""
            }
            word += ch.lowercased()
            previousLower = ch.isLowercase || ch.isNumber
        }
        if !word.isEmpty { words.append(word) }
        return words.contains { secretWords.contains($0) }
    }

    package static func redacted(_ node: YAMLNode) -> YAMLNode {
        switch node {
        case .mapping(let pairs, let mark):
            // `{header: authorization, header_value: ...}`: the value's key
            // names no secret, the header beside it does.
            let namesSecretHeader = pairs.contains { pair in
                guard let key = pair.key.scalarText?.lowercased(), key.contains("header") || key == "name",
                      let value = pair.value.scalarText else { return false }
                return isSecretKey(value)
            }
            return .mapping(pairs.map { pair in
                if let key = pair.key.scalarText, isSecretKey(key) || (namesSecretHeader && key.lowercased().contains("value")) {
                    return (pair.key, .scalar(Self.redacted, quoted: true, pair.value.mark))
                }
                return (pair.key, redacted(pair.value))
            }, mark)
        case .sequence(let items, let mark):
            return .sequence(items.map(redacted), mark)
        default:
            // A value that looks like a credential whatever its key: a
            // URL with a password (postgres://user:pw@host), a bearer token.
            if let text = node.scalarText, looksLikeCredential(text) { return .scalar(Self.redacted, quoted: true, node.mark) }
            return node
        }
    }

    /// `scheme://user:password@host...`, or an `Authorization` value.
    package static func looksLikeCredential(_ value: String) -> Bool {
        let lower = value.lowercased()
        if lower.hasPrefix("bearer ") || lower.hasPrefix("basic ") { return true }
        guard let scheme = value.range(of: "://") else { return false }
        let rest = value[scheme.upperBound...]
        let authority = rest.prefix { $0 != "/" && $0 != "?" && $0 != "#" }
        guard let at = authority.lastIndex(of: "@") else { return false }
        return authority[..<at].contains(":")
    }

    /// Every scalar replaced, keys and nesting kept: what a read-only
    /// address shows of a filter's config.
    package static func fullyRedacted(_ node: YAMLNode) -> YAMLNode {
        switch node {
        case .mapping(let pairs, let mark):
            return .mapping(pairs.map { ($0.key, fullyRedacted($0.value)) }, mark)
        case .sequence(let items, let mark):
            return .sequence(items.map(fullyRedacted), mark)
        default:
            return .scalar(Self.redacted, quoted: true, node.mark)
        }
    }

    /// The event fields a read-only address shows as they are: names the
    /// config gives (cluster, plugin, config field), addresses /clusters
    /// shows anyway, numbers, and what identifies a plugin image. Every
    /// other field's value is replaced (`redactedError`), the ones named
    /// below and any added later alike: `reason` (a health check's,
    /// quoting what the upstream answered, or a connect or TLS error),
    /// `error` and `detail` (may quote config values), file paths (`path`,
    /// `cert`, `ca`). An allow-list, so a new field is private until
    /// someone decides it is not.
    package static let publicEventFields: Set<String> = ["cluster", "endpoint", "endpoints", "generation", "signal", "drain_timeout_ms",
                                                 "duration_ms", "plugin", "version", "abi", "sha256", "field"]

    /// An event as a read-only address shows it: only `publicEventFields`
    /// keep their values (the keys stay, so the shape shows).
    package static func publicEvent(_ event: GatewayEvents.Event) -> GatewayEvents.Event {
        var event = event
        event.fields = event.fields.map { publicEventFields.contains($0.0) ? $0 : ($0.0, redactedError) }
        return event
    }

    /// `/events`; a read-only address gets `publicEvent`s.
    package static func events(readOnly: Bool) -> String {
        GatewayEvents.shared.json(transform: readOnly ? publicEvent : { $0 })
    }

    /// Every plugin image the current generation uses.
    package static func plugins(_ plugins: FilterChains) -> String {
        var seen: Set<String> = []
        var json = JSONWriter()
        json.object { o in
            o.field("plugins") {
                $0.array { items in
                    for handle in plugins.handles where seen.insert(handle.image.sha256).inserted {
                        let image = handle.image
                        items.object { o in
                            o.field("name", image.name)
                            o.field("version", image.version)
                            o.field("path", image.path)
                            o.field("loaded_from", image.loadedPath)
                            o.field("sha256", image.sha256)
                            o.field("abi", "\(image.abiMajor).\(image.abiMinor)")
                            o.field("kinds", image.kinds)
                        }
                    }
                }
            }
        }
        return json.text + "\n"
    }
}
