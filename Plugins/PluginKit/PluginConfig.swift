import FilterABI
import Foundation

/// A plugin's `config:` block, read from the JSON text the host passes to
/// config_new, with the checks every plugin needs: unknown keys, types,
/// ranges, durations and gRPC status codes. Errors read like the host's own
/// ("max_attempts must be 2 to 5, got 9").
///
/// Linked statically into each plugin: a plugin still depends on nothing
/// but the FilterABI header at run time.
public struct PluginConfig {
    public struct Invalid: Error {
        public let message: String
        public init(_ message: String) { self.message = message }
    }

    private let object: [String: Any]

    /// A nested block (`retry_throttling: {...}`), checked the same way.
    public init(object: [String: Any], allowedKeys: Set<String>, path: String) throws(Invalid) {
        self.object = object
        if let unknown = object.keys.sorted().first(where: { !allowedKeys.contains($0) }) {
            throw Invalid("\(path): unknown key '\(unknown)' (known: \(allowedKeys.sorted().joined(separator: ", ")))")
        }
    }

    public func mapping(_ key: String) -> [String: Any]? { object[key] as? [String: Any] }

    public func string(_ key: String) -> String? { object[key] as? String }

    public init(json: mg_str, allowedKeys: Set<String>) throws(Invalid) {
        let data = json.len > 0 ? Data(bytes: json.ptr, count: json.len) : Data("{}".utf8)
        guard let parsed = try? JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed]) else {
            throw Invalid("config is not valid JSON")
        }
        if parsed is NSNull {
            object = [:]
        } else if let mapping = parsed as? [String: Any] {
            object = mapping
        } else {
            throw Invalid("config must be a mapping")
        }
        if let unknown = object.keys.sorted().first(where: { !allowedKeys.contains($0) }) {
            throw Invalid(allowedKeys.isEmpty ? "found key '\(unknown)'"
                          : "unknown key '\(unknown)' (known: \(allowedKeys.sorted().joined(separator: ", ")))")
        }
    }

    public func has(_ key: String) -> Bool { object[key] != nil }

    public func int(_ key: String, default value: Int, in range: ClosedRange<Int>) throws(Invalid) -> Int {
        guard let raw = object[key] else { return value }
        guard let number = Self.number(raw), number.doubleValue == number.doubleValue.rounded(),
              range.contains(number.intValue) else {
            throw Invalid("\(key) must be a whole number from \(range.lowerBound) to \(range.upperBound), got \(raw)")
        }
        return number.intValue
    }

    public func double(_ key: String, default value: Double, in range: ClosedRange<Double>) throws(Invalid) -> Double {
        guard let raw = object[key] else { return value }
        guard let number = Self.number(raw), range.contains(number.doubleValue) else {
            throw Invalid("\(key) must be a number from \(range.lowerBound) to \(range.upperBound), got \(raw)")
        }
        return number.doubleValue
    }

    /// A JSON `true` or `false` (not a number, not a string).
    public func bool(_ key: String, default value: Bool) throws(Invalid) -> Bool {
        guard let raw = object[key] else { return value }
        guard let flag = raw as? NSNumber, String(cString: flag.objCType) == "c" else {
            throw Invalid("\(key) must be true or false, got \(raw)")
        }
        return flag.boolValue
    }

    /// A duration in milliseconds: a number of seconds (`1.5`, as the
    /// product description writes them) or a string with a unit (`100ms`,
    /// `2s`, `1m`).
    public func durationMs(_ key: String, default value: Double, min: Double = 0) throws(Invalid) -> Double {
        guard let raw = object[key] else { return value }
        var ms: Double?
        if let number = Self.number(raw) {
            ms = number.doubleValue * 1000
        } else if let text = raw as? String {
            let units: [(String, Double)] = [("ms", 1), ("s", 1000), ("m", 60_000), ("h", 3_600_000)]
            for (unit, scale) in units where text.hasSuffix(unit) {
                if let n = Double(text.dropLast(unit.count)) { ms = n * scale }
                break
            }
        }
        guard let ms, ms >= min, ms.isFinite else {
            throw Invalid("\(key) must be a duration such as 100ms, 1.5s or a number of seconds (at least \(min) ms), got \(raw)")
        }
        return ms
    }

    /// gRPC status codes by name (`UNAVAILABLE`, any case) or number.
    public func statusCodes(_ key: String, default value: Set<Int32>) throws(Invalid) -> Set<Int32> {
        guard let raw = object[key] else { return value }
        guard let list = raw as? [Any] else { throw Invalid("\(key) must be a list of gRPC status codes") }
        var codes = Set<Int32>()
        for item in list {
            if let number = Self.number(item), (0...16).contains(number.intValue) {
                codes.insert(Int32(number.intValue))
            } else if let name = item as? String, let code = Self.statusNames[name.uppercased().replacingOccurrences(of: "-", with: "_")] {
                codes.insert(code)
            } else {
                throw Invalid("\(key): '\(item)' is not a gRPC status code (use names such as UNAVAILABLE, or 0 to 16)")
            }
        }
        return codes
    }

    /// A JSON number, not a boolean (Foundation bridges 0, 1 and 1.0 to
    /// Bool too, so `is Bool` cannot tell; JSON booleans have type "c").
    static func number(_ raw: Any) -> NSNumber? {
        guard let number = raw as? NSNumber, String(cString: number.objCType) != "c" else { return nil }
        return number
    }

    public static let statusNames: [String: Int32] = [
        "OK": 0, "CANCELLED": 1, "UNKNOWN": 2, "INVALID_ARGUMENT": 3, "DEADLINE_EXCEEDED": 4, "NOT_FOUND": 5,
        "ALREADY_EXISTS": 6, "PERMISSION_DENIED": 7, "RESOURCE_EXHAUSTED": 8, "FAILED_PRECONDITION": 9, "ABORTED": 10,
        "OUT_OF_RANGE": 11, "UNIMPLEMENTED": 12, "INTERNAL": 13, "UNAVAILABLE": 14, "DATA_LOSS": 15, "UNAUTHENTICATED": 16,
    ]
}
