/// Writes the Prometheus text exposition format (0.0.4): HELP and TYPE
/// lines, then samples with escaped label values.
public struct PrometheusWriter {
    public private(set) var text = ""

    public init() {}

    public mutating func header(_ name: String, _ type: String, _ help: String) {
        text += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n"
    }

    public mutating func sample(_ name: String, _ labels: [String: String], _ value: some BinaryInteger) {
        line(name, labels, String(value))
    }

    public mutating func sample(_ name: String, _ labels: [String: String], _ value: Double) {
        line(name, labels, Self.number(value))
    }

    /// A sample whose label text was validated when it was declared.
    public mutating func raw(_ name: String, labels: String, _ value: UInt64) {
        text += labels.isEmpty ? "\(name) \(value)\n" : "\(name){\(labels)} \(value)\n"
    }

    private mutating func line(_ name: String, _ labels: [String: String], _ value: String) {
        text += name
        if !labels.isEmpty {
            text += "{" + labels.sorted { $0.key < $1.key }.map { "\($0.key)=\"\(Self.escape($0.value))\"" }.joined(separator: ",") + "}"
        }
        text += " " + value + "\n"
    }

    public static func number(_ value: Double) -> String {
        if value.isInfinite { return value > 0 ? "+Inf" : "-Inf" }
        if value.isNaN { return "NaN" }
        if value == value.rounded(), abs(value) < 1e15 { return String(Int64(value)) }
        return "\(value)"
    }

    public static func escape(_ value: String) -> String {
        var out = ""
        for ch in value {
            switch ch {
            case "\\": out += "\\\\"
            case "\"": out += "\\\""
            case "\n": out += "\\n"
            default: out.append(ch)
            }
        }
        return out
    }
}
