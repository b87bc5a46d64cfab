/// Whether a request that changes state (POST /reload) comes from a client
/// of this admin address rather than from a browser page of another site:
/// a page can make a browser POST to `http://127.0.0.1:9901/reload` (CSRF)
/// or rebind its own DNS name to the admin's address (DNS rebinding).
///
/// - `Host` must name this address: its configured host, `localhost`, or an
///   IP literal. A DNS-rebinding page's requests carry the page's own name,
///   which is none of those (an IP literal involves no DNS, so it cannot be
///   rebound). The port is not checked: a `kubectl port-forward` or a NAT
///   may put the address behind another one, and no port makes a name
///   rebindable.
/// - `Origin`, when present (browsers send it with every POST), must be
///   `http://` and that same `Host`: a page of another origin is refused.
///   Command-line clients (`meshgate reload`, curl) send no `Origin`.
struct AdminOriginCheck: Sendable {
    let address: SocketAddressSpec

    /// nil when the request may proceed, else why it may not (for a 403).
    func refusal(host: String?, origin: String?) -> String? {
        guard let host, !host.isEmpty else {
            return "the request has no Host header; POST /reload needs Host naming this admin address"
        }
        guard hostNamesThisAddress(host) else {
            return "Host '\(host)' does not name this admin address (use \(address.host == "0.0.0.0" || address.host == "::" ? "" : "its host, ")localhost or an IP address); refused as a possible DNS-rebinding request"
        }
        if let origin, origin.lowercased() != "http://" + host.lowercased() {
            return "Origin '\(origin)' is not this admin address's (http://\(host)); a page of another site cannot reload the gateway"
        }
        return nil
    }

    func hostNamesThisAddress(_ header: String) -> Bool {
        let name = Self.hostName(header).lowercased()
        guard !name.isEmpty else { return false }
        return name == address.host.lowercased() || name == "localhost" || Self.isIPLiteral(name)
    }

    /// The host of a `Host` value: `name`, `name:port`, `[v6]` or `[v6]:port`.
    static func hostName(_ header: String) -> Substring {
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
    static func isIPLiteral(_ name: String) -> Bool {
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
