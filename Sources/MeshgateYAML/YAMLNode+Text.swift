import MeshgateJSON

extension YAMLNode {
    /// The node as block-style YAML that `YAMLParser` reads back to the same
    /// tree (marks aside): mappings as `key: value` lines, lists as `- `
    /// items, two spaces per level. Scalars stay plain when YAML would read
    /// them back unchanged, and are double-quoted otherwise (and whenever
    /// they were quoted, so a quoted "30" stays a string).
    public var yamlText: String {
        var out = ""
        writeBlock(into: &out, indent: 0)
        return out
    }

    private var isEmptyCollection: Bool {
        switch self {
        case .mapping(let pairs, _): return pairs.isEmpty
        case .sequence(let items, _): return items.isEmpty
        default: return false
        }
    }

    private var isCollection: Bool {
        switch self {
        case .mapping, .sequence: return !isEmptyCollection
        default: return false
        }
    }

    /// A mapping key: its scalar as a scalar is written, keeping its quoting.
    private var keyText: String {
        if case .scalar(let text, let quoted, _) = self { return Self.scalarText(text, quoted: quoted) }
        return "\"\""
    }

    /// A value written after `key:` or `- ` on the same line.
    private var inlineText: String {
        switch self {
        case .null: return "null"
        case .scalar(let text, let quoted, _): return Self.scalarText(text, quoted: quoted)
        case .mapping: return "{}"
        case .sequence: return "[]"
        }
    }

    private func writeBlock(into out: inout String, indent: Int) {
        let pad = String(repeating: " ", count: indent)
        switch self {
        case .mapping(let pairs, _) where !pairs.isEmpty:
            for pair in pairs {
                out += pad + pair.key.keyText + ":"
                if pair.value.isCollection {
                    out += "\n"
                    // A list under a key is indented like its key's children.
                    pair.value.writeBlock(into: &out, indent: indent + 2)
                } else {
                    out += " " + pair.value.inlineText + "\n"
                }
            }
        case .sequence(let items, _) where !items.isEmpty:
            for item in items {
                out += pad + "-"
                if item.isCollection {
                    // The item's first line goes after the dash.
                    var nested = ""
                    item.writeBlock(into: &nested, indent: indent + 2)
                    out += " " + nested.dropFirst(indent + 2)
                } else {
                    out += " " + item.inlineText + "\n"
                }
            }
        default:
            out += pad + inlineText + "\n"
        }
    }

    /// `text` plain when the parser reads it back as the same string of the
    /// same kind, else double-quoted with escapes (as a JSON string).
    static func scalarText(_ text: String, quoted: Bool) -> String {
        if !quoted && isSafePlain(text) { return text }
        var out = ""
        JSONString.write(text, into: &out)
        return out
    }

    /// Characters YAML does not take raw (C0/C1 controls, DEL, NEL, the
    /// line and paragraph separators, BOM and non-characters): the ones
    /// `JSONString` escapes.
    static func needsEscape(_ scalar: Unicode.Scalar) -> Bool { JSONString.escapesAsUnicode(scalar) }

    /// Plain scalars that cannot be mistaken for YAML syntax: no leading
    /// indicator, no `: ` or ` #`, no surrounding spaces, not a spelling
    /// of null, nothing that needs an escape.
    private static func isSafePlain(_ text: String) -> Bool {
        if ["~", "null", "Null", "NULL"].contains(text) { return false }
        guard let first = text.unicodeScalars.first, let last = text.unicodeScalars.last else { return false }
        if first == " " || last == " " || last == ":" { return false }
        if "-?:,[]{}#&*!|>'\"%@`".unicodeScalars.contains(first) {
            // "-5" and "-x" read back as written; "- x" or "-" alone do not.
            guard first == "-", text.count > 1, !text.hasPrefix("- ") else { return false }
        }
        if text.contains(": ") || text.contains(" #") || text.contains("\t") { return false }
        return !text.unicodeScalars.contains(where: needsEscape)
    }
}
