import Foundation
import Testing
@testable import MeshgateConfig
import MeshgateTestSupport

/// The config loader fed thousands of mutated and random documents: it
/// never traps, and every refusal is a ConfigError located in the file
/// (line and column), as `meshgate validate` prints it. Deterministic
/// (seeded), a couple of seconds.
@Suite struct ConfigFuzzTests {
    static let repoRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// The repository's configs: the seeds that mutations start from.
    static func seeds() throws -> [String] {
        let config = repoRoot.appendingPathComponent("config")
        let examples = config.appendingPathComponent("examples")
        let files = [config.appendingPathComponent("mesh.yaml")]
            + (try FileManager.default.contentsOfDirectory(at: examples, includingPropertiesForKeys: nil))
                .filter { $0.pathExtension == "yaml" && $0.lastPathComponent != "endpoints.yaml" }  // a discovery file, not a config
                .sorted { $0.path < $1.path }
        return try files.map { try String(contentsOf: $0, encoding: .utf8) }
    }

    /// Values and fragments that break parsers: numbers out of range,
    /// wrong types, YAML anchors/aliases/tags, odd characters.
    static let tokens = [
        "-1", "0", "1", "99999999999999999999", "1e309", "0x10", "''", "\"\"", "[]", "{}", "~", "null", "yes", "no",
        "\"\\u0000\"", "&a x", "*a", "*nothing", "!!binary AAAA", "!custom x", "10x", "1h", "-5s", "0ms", "9999999h",
        "0.0.0.0:99999", "[::1]:80", "host:", ":80", "a:b:c", String(repeating: "a", count: 300), "ünïcode ✓",
        "- a", "{ a: 1", "[1, 2", "a: b: c", "|", ">", "? x", "%YAML 1.1", "---", "...", "#", "\t", "\"unterminated",
        "round_robin", "retry", "tracing", "{ plugin: nope }", "{ service: x }", "mesh", "none", "required", "optional",
    ]

    static func mutate(_ text: String, _ rng: inout SplitMix64) -> String {
        var lines = text.components(separatedBy: "\n")
        let edits = 1 + Int(rng.next() % 4)
        for _ in 0..<edits where !lines.isEmpty {
            let i = Int(rng.next() % UInt64(lines.count))
            switch rng.next() % 8 {
            case 0: lines.remove(at: i)
            case 1: lines.insert(lines[i], at: i)
            case 2:
                let j = Int(rng.next() % UInt64(lines.count))
                lines.swapAt(i, j)
            case 3:  // a value replaced by a token
                if let colon = lines[i].firstIndex(of: ":") {
                    lines[i] = String(lines[i][...colon]) + " " + tokens[Int(rng.next() % UInt64(tokens.count))]
                }
            case 4: lines[i] = "  " + lines[i]
            case 5: lines[i] = String(lines[i].drop { $0 == " " })
            case 6:  // a character inserted
                var chars = Array(lines[i])
                let at = chars.isEmpty ? 0 : Int(rng.next() % UInt64(chars.count + 1))
                chars.insert(Array(":-{}[]#&*!|>'\"\t,?%@`\u{0}")[Int(rng.next() % 21)], at: at)
                lines[i] = String(chars)
            default:  // a line cut short
                let chars = Array(lines[i])
                lines[i] = String(chars.prefix(chars.isEmpty ? 0 : Int(rng.next() % UInt64(chars.count))))
            }
        }
        return lines.joined(separator: "\n")
    }

    static func randomDocument(_ rng: inout SplitMix64) -> String {
        let keys = ["listeners", "clusters", "routes", "name", "address", "match", "cluster", "endpoints", "filters",
                    "plugin", "config", "tls", "discovery", "health_check", "runtime", "admin", "plugins", "x"]
        var text = ""
        for _ in 0..<(1 + Int(rng.next() % 12)) {
            let indent = String(repeating: "  ", count: Int(rng.next() % 4))
            let dash = rng.next() % 3 == 0 ? "- " : ""
            let key = keys[Int(rng.next() % UInt64(keys.count))]
            let value = rng.next() % 3 == 0 ? "" : tokens[Int(rng.next() % UInt64(tokens.count))]
            text += "\(indent)\(dash)\(key): \(value)\n"
        }
        return text
    }

    /// Parses `text`: fine, or refused with a located ConfigError.
    static func check(_ text: String, case index: Int) -> Bool {
        do {
            _ = try ConfigLoader.parse(text, file: "fuzz.yaml")
            return true
        } catch {
            #expect(error.file == "fuzz.yaml")
            #expect(!error.message.isEmpty, "case \(index): an empty message")
            // Located: line and column, except the one refusal of a
            // document with nothing in it.
            #expect(error.mark != nil || error.message.contains("empty"),
                    "case \(index): unlocated: \(error.description)\n--- document:\n\(text)")
            return false
        }
    }

    @Test func mutatedConfigsAreAcceptedOrRefusedWithALocation() throws {
        let seeds = try Self.seeds()
        #expect(seeds.count >= 4)
        for seed in seeds { #expect(Self.check(seed, case: -1), "a seed config must load") }
        var rng = SplitMix64(seed: 0xC0FFEE)
        var accepted = 0, refused = 0
        for i in 0..<4000 {
            let text = Self.mutate(seeds[i % seeds.count], &rng)
            if Self.check(text, case: i) { accepted += 1 } else { refused += 1 }
        }
        // Both outcomes occur: mutations neither all break nor all pass.
        #expect(accepted > 100 && refused > 1000, "accepted \(accepted), refused \(refused)")
    }

    @Test func randomDocumentsAreRefusedWithALocation() {
        var rng = SplitMix64(seed: 0xBADC0DE)
        var accepted: [String] = []
        for i in 0..<2000 {
            let text = Self.randomDocument(&rng)
            if Self.check(text, case: i) { accepted.append(text) }
        }
        // Every one is refused (each with a location, checked above).
        #expect(accepted.isEmpty, "\(accepted.count) random documents accepted, the first:\n\(accepted.first ?? "")")
    }
}
