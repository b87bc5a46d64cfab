/// Writes the Prometheus text exposition format (0.0.4): HELP and TYPE
/// lines, then samples with escaped label values.
package struct PrometheusWriter {
    package private(set) var text = ""

    package init() {}

    package mutating func header(_ name: String, _ type: String, _ help: String) {
        text += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n"
    }

    package mutating func sample(_ name: String, _ labels: [String: String], _ value: some BinaryInteger) {
        line(name, labels, String(value))
    }

    package mutating func sample(_ name: String, _ labels: [String: String], _ value: Double) {
        line(name, labels, Self.number(value))
    }

    /// A sample whose label text was validated when it was declared.
    package mutating func raw(_ name: String, labels: String, _ value: UInt64) {
        text += labels.isEmpty ? "\(name) \(value)\n" : "\(name){\(labels)} \(value)\n"
    }

    private mutating func line(_ name: String, _ labels: [String: String], _ value: String) {
        text += name
        if !labels.isEmpty {
            text += "{" + labels.sorted { $0.key < $1.key }.map { "\($0.key)=\"\(Self.escape($0.value))\"" }.joined(separator: ",") + "}"
        }
        text += " " + value + "\n"
    }

    package static func number(_ value: Double) -> String {
        if value.isInfinite { return value > 0 ? "+Inf" : "-Inf" }
        if value.isNaN { return "NaN" }
        if value == value.rounded(), abs(value) < 1e15 { return String(Int64(value)) }
        return "\(value)"
    }

    package static func escape(_ value: String) -> String {
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
