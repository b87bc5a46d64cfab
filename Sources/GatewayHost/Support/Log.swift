#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// Structured logs: one JSON object per line on stderr. A stopgap until the
/// observability work brings swift-log with trace context; the call sites
/// already pass fields, not formatted strings.
public enum Log {
    public enum Level: Int, Sendable { case debug, info, warning, error
        var name: String { ["debug", "info", "warning", "error"][rawValue] }
    }

    nonisolated(unsafe) public static var minimumLevel: Level = .info  // set once at startup, before any loop runs

    public static func debug(_ message: String, _ fields: KeyValuePairs<String, String> = [:]) { write(.debug, message, fields) }
    public static func info(_ message: String, _ fields: KeyValuePairs<String, String> = [:]) { write(.info, message, fields) }
    public static func warning(_ message: String, _ fields: KeyValuePairs<String, String> = [:]) { write(.warning, message, fields) }
    public static func error(_ message: String, _ fields: KeyValuePairs<String, String> = [:]) { write(.error, message, fields) }

    static func write(_ level: Level, _ message: String, _ fields: KeyValuePairs<String, String>) {
        guard level.rawValue >= minimumLevel.rawValue else { return }
        let ts = Date().timeIntervalSince1970
        var line = "{\"ts\":\(String(format: "%.3f", ts)),\"level\":\"\(level.name)\",\"msg\":\(quote(message))"
        for (k, v) in fields { line += ",\(quote(k)):\(quote(v))" }
        line += "}\n"
        // One write(2) per line keeps lines from different loops whole.
        var bytes = Array(line.utf8)
        _ = bytes.withUnsafeMutableBytes { Glibc.write(2, $0.baseAddress, $0.count) }
    }

    static func quote(_ s: String) -> String {
        var out = "\""
        for scalar in s.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if scalar.value < 0x20 { out += String(format: "\\u%04x", scalar.value) } else { out.unicodeScalars.append(scalar) }
            }
        }
        return out + "\""
    }
}
