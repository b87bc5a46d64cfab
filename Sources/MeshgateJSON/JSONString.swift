/// The one JSON string writer (RFC 8259): the log handler, etcd
/// registration values, the YAML emitter's JSON form and every admin body
/// write strings through it.
///
/// Escaped: `"` and `\`; `\n`, `\r`, `\t` by name; as `\uXXXX` every other
/// C0 control, DEL and the C1 controls, U+2028 and U+2029 (which end a line
/// in JavaScript), the BOM and the non-characters U+FFFE and U+FFFF. Every
/// escaped character is in the Basic Multilingual Plane, so `\uXXXX` spells
/// it; the result is also a YAML double-quoted scalar that reads back as
/// `text` (YAML takes none of those characters raw).
public enum JSONString {
    /// Whether `scalar` is written as `\uXXXX` (see the type's comment).
    @inlinable
    public static func escapesAsUnicode(_ scalar: Unicode.Scalar) -> Bool {
        let v = scalar.value
        return v < 0x20 || (0x7F...0x9F).contains(v) || v == 0x2028 || v == 0x2029 || v == 0xFEFF || v == 0xFFFE || v == 0xFFFF
    }

    /// Appends `text` as a JSON string, quotes included.
    public static func write(_ text: String, into out: inout String) {
        out += "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if escapesAsUnicode(scalar) {
                    let hex = String(scalar.value, radix: 16)
                    out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        out += "\""
    }

    /// `text` as a JSON string, quotes included.
    public static func quoted(_ text: String) -> String {
        var out = ""
        write(text, into: &out)
        return out
    }
}
