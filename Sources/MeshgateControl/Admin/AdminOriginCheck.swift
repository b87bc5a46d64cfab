import GatewayHost
import MeshgateConfig

/// Whether a request to the full admin address comes from a client of it
/// rather than from a browser page of another site: a page can make a
/// browser POST to `http://127.0.0.1:9901/reload` (CSRF), or rebind its
/// own DNS name to the admin's address (DNS rebinding) and then read
/// `/config`, `/events` or `/clusters` as its own origin.
///
/// Every request (`hostRefusal`):
/// - `Host` must name this address: its configured host, `localhost`, an
///   IP literal, or a name in `admin.allowed_hosts`. A DNS-rebinding
///   page's requests carry the page's own name, which is none of those (an
///   IP literal involves no DNS, so it cannot be rebound). The port is not
///   checked: a `kubectl port-forward` or a NAT may put the address behind
///   another one, and no port makes a name rebindable. A request without
///   `Host` (HTTP/1.0 tools) is not a browser's and passes.
/// POST /reload besides (`refusal`):
/// - `Host` must be there.
/// - `Origin`, when present (browsers send it with every POST), must be
///   `http://` and that same `Host`: a page of another origin is refused.
///   Command-line clients (`meshgate reload`, curl) send no `Origin`.
/// - `Sec-Fetch-Site`, when present (browsers send it), must be
///   `same-origin` or `none` (typed by the user): `same-site` and
///   `cross-site` are pages elsewhere.
///
/// Read-only addresses are not held to any of this: what they show is
/// redacted, they change nothing, and scrapers reach them by any name.
package struct AdminOriginCheck: Sendable {
    package let address: SocketAddressSpec
    /// `admin.allowed_hosts`, lower-case, without a trailing dot.
    package let allowedHosts: Set<String>

    package init(address: SocketAddressSpec, allowedHosts: [String] = []) {
        self.address = address
        self.allowedHosts = Set(allowedHosts.map(Self.normalized))
    }

    /// nil when a request (any method) may proceed, else why not (a 403).
    package func hostRefusal(host: String?) -> String? {
        guard let host else { return nil }
        guard hostNamesThisAddress(host) else {
            return "Host '\(host)' does not name this admin address (use \(address.host == "0.0.0.0" || address.host == "::" ? "" : "its host, ")localhost, an IP address or a name listed in admin.allowed_hosts); refused as a possible DNS-rebinding request"
        }
        return nil
    }

    /// nil when POST /reload may proceed, else why it may not (for a 403).
    package func refusal(host: String?, origin: String?, fetchSite: String? = nil) -> String? {
        guard let host, !host.isEmpty else {
            return "the request has no Host header; POST /reload needs Host naming this admin address"
        }
        if let refusal = hostRefusal(host: host) { return refusal }
        if let origin, origin.lowercased() != "http://" + host.lowercased() {
            return "Origin '\(origin)' is not this admin address's (http://\(host)); a page of another site cannot reload the gateway"
        }
        if let fetchSite, !["same-origin", "none"].contains(fetchSite.lowercased()) {
            return "Sec-Fetch-Site '\(fetchSite)': the request comes from a page of another origin; a page of another site cannot reload the gateway"
        }
        return nil
    }

    package func hostNamesThisAddress(_ header: String) -> Bool {
        let name = Self.normalized(String(Self.hostName(header)))
        guard !name.isEmpty else { return false }
        return name == Self.normalized(address.host) || name == "localhost" || Self.isIPLiteral(name) || allowedHosts.contains(name)
    }

    /// Lower-case, without the trailing dot of a fully qualified name
    /// (`Gateway.Internal.` is `gateway.internal`).
    package static func normalized(_ name: String) -> String {
        let lower = name.lowercased()
        return lower.hasSuffix(".") ? String(lower.dropLast()) : lower
    }

    /// The host of a `Host` value: `name`, `name:port`, `[v6]` or `[v6]:port`.
    package static func hostName(_ header: String) -> Substring {
        if header.hasPrefix("[") {
            guard let close = header.firstIndex(of: "]") else { return "" }
            let rest = header[header.index(after: close)...]
            guard rest.isEmpty || (rest.hasPrefix(":") && rest.dropFirst().allSatisfy(\.isNumber)) else { return "" }
            return header[header.index(after: header.startIndex)..<close]
        }
        let parts = header.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count <= 2 else { return "" }
        if parts.count == 2, parts[1].isEmpty || !parts[1].allSatisfy(\.isNumber) { return "" }
        return parts[0]
    }

    /// Dotted-quad IPv4, or an IPv6 literal (what was in brackets: hex
    /// digits and colons, maybe an embedded IPv4 or a zone).
    package static func isIPLiteral(_ name: String) -> Bool {
        if name.contains(":") {
            // A zone (`%eth0`) may follow the address.
            let address = name.split(separator: "%", maxSplits: 1).first ?? ""
            return !address.isEmpty && address.allSatisfy { $0.isHexDigit || $0 == ":" || $0 == "." }
        }
        let parts = name.split(separator: ".", omittingEmptySubsequences: false)
        return parts.count == 4 && parts.allSatisfy { part in
            !part.isEmpty && part.count <= 3 && part.allSatisfy(\.isASCII) && part.allSatisfy(\.isNumber) && Int(part).map { $0 <= 255 } == true
        }
    }
}
