import GatewayHost
import MeshgateYAML
import MeshgateConfig
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
        var out = "{\"generation\":\(generation),\"source_file\":\(Log.quote(c.sourceFile))"
        out += ",\"runtime\":{\"event_loops\":\(c.runtime.eventLoops.map(String.init) ?? "null"),\"drain_timeout\":\(Log.quote("\(c.runtime.drainTimeout)")),\"access_log\":\(c.runtime.accessLog)}"
        out += ",\"admin\":\(c.admin.map { "{\"address\":\(Log.quote($0.address.description)),\"read_only_addresses\":[\($0.readOnlyAddresses.map { Log.quote($0.description) }.joined(separator: ","))]}" } ?? "null")"
        out += ",\"listeners\":[" + c.listeners.map { l in
            "{\"name\":\(Log.quote(l.name)),\"address\":\(Log.quote(l.address.description)),\"max_concurrent_streams\":\(l.maxConcurrentStreams)"
                + ",\"tls\":\(tls(l.tls)),\"routes\":[" + l.routes.map { route($0, readOnly: readOnly) }.joined(separator: ",") + "]}"
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

    private static func route(_ r: RouteConfig, readOnly: Bool) -> String {
        var match: [String] = []
        if let s = r.match.service { match.append("\"service\":\(Log.quote(s))") }
        if let m = r.match.method { match.append("\"method\":\(Log.quote(m))") }
        if let p = r.match.pathPrefix { match.append("\"path_prefix\":\(Log.quote(p))") }
        let filters = r.filters.map { f in
            "{\"plugin\":\(Log.quote(f.plugin)),\"config\":\(f.config.map { (readOnly ? fullyRedacted($0) : redacted($0)).jsonText } ?? "{}")}"
        }
        return "{\"match\":{\(match.joined(separator: ","))},\"cluster\":\(Log.quote(r.cluster)),\"filters\":[\(filters.joined(separator: ","))]}"
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
