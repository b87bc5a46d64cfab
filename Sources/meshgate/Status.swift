import ArgumentParser
import GatewayHost
import MeshgateYAML

/// `meshgate status`: a running gateway at a glance, from its admin API
/// (`/config`, `/clusters`, `/events`, `/ready`), for an 80-column terminal.
/// The admin answers JSON, which the YAML parser reads (JSON is YAML).
struct Status: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Summarize a running gateway: generation, listeners, clusters with endpoint health, recent events.",
        discussion: "Exit codes: 0 ready, 1 answering but not ready (starting or draining), 2 no answer from the admin address.")

    @OptionGroup var target: AdminAddressOptions
    @Option(help: "Recent events to show.") var events = 10

    func run() throws {
        let (host, port) = try target.address()
        let config, clusters, recent: YAMLNode
        let ready: Bool
        do {
            config = try Self.json(AdminClient.request("GET", "/config", host: host, port: port))
            clusters = try Self.json(AdminClient.request("GET", "/clusters", host: host, port: port))
            recent = try Self.json(AdminClient.request("GET", "/events", host: host, port: port))
            ready = try AdminClient.request("GET", "/ready", host: host, port: port).status == 200
        } catch {
            printError("meshgate status: no usable answer from \(host):\(port): \(error)")
            throw ExitCode(2)
        }
        print(Self.render(admin: "\(host):\(port)", config: config, clusters: clusters, events: recent, ready: ready, limit: events))
        if !ready { throw ExitCode(1) }
    }

    struct Unreadable: Error, CustomStringConvertible {
        let description: String
    }

    static func json(_ answer: AdminClient.Answer) throws -> YAMLNode {
        guard answer.status == 200 else { throw Unreadable(description: "HTTP \(answer.status)") }
        return try YAMLParser.parse(answer.body)
    }

    static func render(admin: String, config: YAMLNode, clusters: YAMLNode, events: YAMLNode, ready: Bool, limit: Int) -> String {
        var lines: [String] = []
        lines.append("meshgate at \(admin): generation \(config["generation"].text), \(ready ? "ready" : "NOT READY")")
        lines.append("")
        lines.append("listeners")
        for l in config["listeners"].items {
            let tls = l["tls"].isNull ? "plaintext" : "tls, client auth \(l["tls"]["client_auth"].text)"
            lines.append(fit("  \(pad(l["name"].text, 14)) \(pad(l["address"].text, 22)) \(pad(tls, 26)) \(l["routes"].items.count) routes"))
        }
        lines.append("")
        lines.append("clusters")
        for c in clusters["clusters"].items {
            let endpoints = c["endpoints"].items
            let healthy = endpoints.filter { $0["healthy"].text == "true" && $0["ejected"].text != "true" }.count
            var summary = "\(endpoints.count) endpoint(s), \(healthy) in rotation"
            if !c["discovery"].isNull {
                summary += "; discovery \(c["discovery"]["source"].text): \(c["discovery"]["state"].text)"
            }
            lines.append(fit("  \(pad(c["name"].text, 14)) \(summary)"))
            for e in endpoints {
                var state = e["healthy"].text == "true" ? "healthy" : "UNHEALTHY"
                if e["ejected"].text == "true" { state += ", EJECTED" }
                lines.append(fit("    \(pad(e["address"].text, 28)) \(pad(state, 20)) weight \(e["weight"].text)"))
            }
        }
        let recent = events["events"].items.suffix(limit)
        lines.append("")
        lines.append("recent events" + (recent.isEmpty ? ": none" : ""))
        for e in recent {
            let time = clock(e["time"].text)
            // The line is cut at 80 columns (`fit`); /events has everything.
            let fields = e["fields"].pairs.map { "\($0.0)=\($0.1)" }.joined(separator: " ")
            lines.append(fit("  \(time) \(pad(e["kind"].text, 11)) \(e["message"].text)  \(fields)"))
        }
        return lines.joined(separator: "\n")
    }

    /// HH:MM:SS (UTC) of a Unix time in seconds.
    static func clock(_ text: String) -> String {
        guard let seconds = Double(text) else { return "--:--:--" }
        let day = Int(seconds) % 86_400
        func two(_ n: Int) -> String { n < 10 ? "0\(n)" : "\(n)" }
        return "\(two(day / 3600)):\(two(day / 60 % 60)):\(two(day % 60))"
    }

    static func pad(_ text: String, _ width: Int) -> String {
        text.count >= width ? text : text + String(repeating: " ", count: width - text.count)
    }

    /// At most 80 columns.
    static func fit(_ line: String) -> String {
        var trimmed = line
        while trimmed.hasSuffix(" ") { trimmed.removeLast() }
        return trimmed.count <= 80 ? trimmed : String(trimmed.prefix(79)) + "…"
    }
}

extension YAMLNode {
    subscript(_ key: String) -> YAMLNode {
        if case .mapping(let pairs, _) = self, let pair = pairs.first(where: { $0.key.scalarText == key }) { return pair.value }
        return .null(mark)
    }

    var items: [YAMLNode] {
        if case .sequence(let items, _) = self { return items }
        return []
    }

    var pairs: [(String, String)] {
        if case .mapping(let pairs, _) = self { return pairs.map { ($0.key.scalarText ?? "", $0.value.text) } }
        return []
    }

    var text: String { scalarText ?? (isNull ? "-" : "…") }

    var isNull: Bool {
        if case .null = self { return true }
        if case .scalar(let text, let quoted, _) = self, !quoted, text == "null" { return true }
        return false
    }
}
