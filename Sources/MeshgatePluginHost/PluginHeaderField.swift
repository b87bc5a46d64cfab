import FilterABI
import MeshgateHTTP2

/// A header field a plugin adds (attempt_set_request_header,
/// call_add_response_header), checked and appended as bytes: no String is
/// made for it, except to replace an earlier field of the same name (a
/// filter setting a header twice in one attempt: rare).
public enum PluginHeaderField {
    /// Appends `name` (lower-cased) and `value` to `list` when both are
    /// valid (RFC 9113: lower-case tokens, no pseudo-headers, no
    /// connection-specific fields; values without CR, LF, NUL or other
    /// controls but tab). With `replacing`, an earlier field of that name
    /// goes first. False, and nothing appended, when invalid.
    public static func append(_ name: mg_str, _ value: mg_str, to list: inout HTTP2HeaderList, replacing: Bool) -> Bool {
        guard let namePointer = name.ptr, name.len > 0 else { return false }
        let valueBytes = UnsafeRawBufferPointer(start: value.ptr, count: value.ptr == nil ? 0 : value.len)
        guard isValidValue(valueBytes) else { return false }
        return withUnsafeTemporaryAllocation(byteCount: name.len, alignment: 1) { lowered in
            let source = UnsafeRawBufferPointer(start: namePointer, count: name.len)
            for i in 0..<name.len {
                let byte = source[i]
                lowered[i] = byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z") ? byte | 0x20 : byte
            }
            let nameBytes = UnsafeRawBufferPointer(lowered)
            guard isValidName(nameBytes) else { return false }
            if replacing {
                let existing = String(decoding: nameBytes, as: UTF8.self)
                if list.contains(existing) { list.removeAll(named: existing) }
            }
            list.append(name: nameBytes, value: valueBytes)
            return true
        }
    }

    /// Lower-case token characters only, and not connection-specific.
    public static func isValidName(_ name: UnsafeRawBufferPointer) -> Bool {
        guard !name.isEmpty else { return false }
        for byte in name {
            let allowed = (byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "z")) || (byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9"))
                || byte == UInt8(ascii: "-") || byte == UInt8(ascii: "_") || byte == UInt8(ascii: ".")
            if !allowed { return false }
        }
        for forbidden in connectionSpecific where forbidden.utf8CodeUnitCount == name.count {
            if UnsafeRawBufferPointer(start: forbidden.utf8Start, count: forbidden.utf8CodeUnitCount).elementsEqual(name) { return false }
        }
        return true
    }

    public static func isValidValue(_ value: UnsafeRawBufferPointer) -> Bool {
        for byte in value where (byte < 0x20 && byte != 0x09) || byte == 0x7f { return false }
        return true
    }

    private static let connectionSpecific: [StaticString] = [
        "connection", "te", "transfer-encoding", "upgrade", "keep-alive", "proxy-connection", "host",
    ]
}
