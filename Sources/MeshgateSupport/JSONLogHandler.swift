import Logging
import MeshgateJSON
import MeshgatePosix

/// A swift-log handler that writes one JSON object per line to stderr:
/// `ts`, `level`, `msg`, then the metadata in key order. Numbers and
/// booleans given as `.stringConvertible` stay bare JSON numbers; the rest
/// are strings. One write(2) per line keeps lines from different threads
/// whole.
public struct JSONLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?
    public var logLevel: Logger.Level = .info
    public let label: String

    public init(label: String) { self.label = label }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        let now = Posix.wallClockNanos()
        let millis = now / 1_000_000 % 1000
        var line = "{\"ts\":\(now / 1_000_000_000).\(millis < 10 ? "00" : millis < 100 ? "0" : "")\(millis),\"level\":\"\(Self.name(event.level))\""
        line += ",\"msg\":\(JSONString.quoted(event.message.description))"
        var all = metadata
        if let provided = metadataProvider?.get() { all.merge(provided) { a, _ in a } }
        if let given = event.metadata { all.merge(given) { _, b in b } }
        for (key, value) in all.sorted(by: { $0.key < $1.key }) where !["ts", "level", "msg"].contains(key) {
            line += ",\(JSONString.quoted(key)):\(Self.json(value))"
        }
        line += "}\n"
        // One write per line, so lines of two threads do not interleave; a
        // log that cannot be written has nowhere to report it.
        line.withUTF8 { try? Posix.writeAll(Posix.standardError, UnsafeRawBufferPointer($0)) }
    }

    public static func name(_ level: Logger.Level) -> String {
        switch level {
        case .trace: return "trace"
        case .debug: return "debug"
        case .info, .notice: return "info"
        case .warning: return "warning"
        case .error, .critical: return "error"
        }
    }

    public static func json(_ value: Logger.Metadata.Value) -> String {
        switch value {
        case .string(let s): return JSONString.quoted(s)
        case .stringConvertible(let v):
            if v is Int || v is Int64 || v is UInt64 || v is UInt32 || v is Int32 || v is Bool { return "\(v)" }
            if let d = v as? Double, d.isFinite { return "\(d)" }
            return JSONString.quoted(v.description)
        case .array(let items): return "[" + items.map(json).joined(separator: ",") + "]"
        case .dictionary(let d): return "{" + d.sorted { $0.key < $1.key }.map { "\(JSONString.quoted($0.key)):\(json($0.value))" }.joined(separator: ",") + "}"
        }
    }
}
