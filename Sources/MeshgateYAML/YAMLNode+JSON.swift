import MeshgateJSON

extension YAMLNode {
    /// The node as JSON text, the form plugins receive their config in.
    /// Plain scalars that read as numbers, booleans or null stay bare;
    /// everything else (and every quoted scalar) becomes a JSON string.
    public var jsonText: String {
        var out = ""
        write(into: &out)
        return out
    }

    private func write(into out: inout String) {
        switch self {
        case .null:
            out += "null"
        case .scalar(let text, let quoted, _):
            if !quoted, Self.isBareJSON(text) { out += text } else { JSONString.write(text, into: &out) }
        case .sequence(let items, _):
            out += "["
            for (i, item) in items.enumerated() {
                if i > 0 { out += "," }
                item.write(into: &out)
            }
            out += "]"
        case .mapping(let pairs, _):
            out += "{"
            for (i, pair) in pairs.enumerated() {
                if i > 0 { out += "," }
                JSONString.write(pair.key.scalarText ?? "", into: &out)
                out += ":"
                pair.value.write(into: &out)
            }
            out += "}"
        }
    }

    private static func isBareJSON(_ text: String) -> Bool {
        if text == "true" || text == "false" { return true }
        guard let first = text.utf8.first, first == UInt8(ascii: "-") || (first >= UInt8(ascii: "0") && first <= UInt8(ascii: "9")) else { return false }
        guard Double(text) != nil else { return false }
        // JSON has no leading zeros, "+", ".5" or "1." forms.
        let digits = text.hasPrefix("-") ? text.dropFirst() : Substring(text)
        if digits.hasPrefix("0") && digits.count > 1 && !digits.hasPrefix("0.") { return false }
        return !digits.hasPrefix(".") && !digits.hasSuffix(".") && !text.contains("x") && !text.lowercased().contains("inf") && !text.lowercased().contains("nan")
    }
}
