/// Reads `x-forwarded-client-cert` as Envoy writes it (and the gateway
/// does: `TLSPeerIdentity.forwardedClientCert`): elements separated by
/// `,`, each `Key=value` pairs separated by `;`, a value that holds `,`
/// `;` `=` or a quote written in double quotes with `"` and `\` escaped by
/// a backslash. Quoting is honoured, so a DNS name `x;URI=spiffe://victim`
/// (which reaches the header as `DNS="x;URI=spiffe://victim"`) stays one
/// DNS value and never reads as a URI. Only the first element is read: the
/// gateway drops a client's own header and writes exactly one.
///
/// Byte-level, over the header's bytes as the host hands them: nothing is
/// copied (a quoted value is unescaped as it is visited).
public enum ForwardedClientCert {
    /// One value in the header.
    public struct Value {
        /// The bytes between the quotes (or the bare value), escapes included.
        public let raw: UnsafeRawBufferPointer
        public let quoted: Bool

        public init(raw: UnsafeRawBufferPointer, quoted: Bool) {
            self.raw = raw
            self.quoted = quoted
        }

        /// Each byte of the value, a quoted one unescaped (`\"` as `"`).
        public func forEachByte(_ body: (UInt8) -> Void) {
            var escaped = false
            for byte in raw {
                if quoted && !escaped && byte == UInt8(ascii: "\\") {
                    escaped = true
                    continue
                }
                escaped = false
                body(byte)
            }
        }

        /// The value as text (for tests and logs, not the data path).
        public var text: String {
            var bytes: [UInt8] = []
            forEachByte { bytes.append($0) }
            return String(decoding: bytes, as: UTF8.self)
        }
    }

    /// The first value of `key` (compared without regard to case, as
    /// Envoy's keys are: By, Hash, Cert, Chain, Subject, URI, DNS) in the
    /// first element of `header`; nil when there is none, or when the
    /// element is malformed (an unterminated quote, bytes after a closing
    /// quote): a header that cannot be read names nobody.
    public static func value(_ key: StaticString, in header: UnsafeRawBufferPointer) -> Value? {
        let wanted = UnsafeRawBufferPointer(start: key.utf8Start, count: key.utf8CodeUnitCount)
        let quote = UInt8(ascii: "\""), backslash = UInt8(ascii: "\\"), equals = UInt8(ascii: "=")
        let semicolon = UInt8(ascii: ";"), comma = UInt8(ascii: ",")
        var i = 0
        let n = header.count
        while i < n {
            let keyStart = i
            while i < n, header[i] != equals, header[i] != semicolon, header[i] != comma { i += 1 }
            let keyEnd = i
            guard i < n, header[i] == equals else {
                // A pair without `=`: skip it (Envoy would not write one).
                if i < n, header[i] == semicolon { i += 1; continue }
                return nil
            }
            i += 1
            let value: Value
            if i < n, header[i] == quote {
                let start = i + 1
                i = start
                while i < n, header[i] != quote { i += header[i] == backslash ? 2 : 1 }
                guard i < n else { return nil }  // unterminated
                value = Value(raw: UnsafeRawBufferPointer(rebasing: header[start..<i]), quoted: true)
                i += 1
                guard i == n || header[i] == semicolon || header[i] == comma else { return nil }
            } else {
                let start = i
                while i < n, header[i] != semicolon, header[i] != comma { i += 1 }
                value = Value(raw: UnsafeRawBufferPointer(rebasing: header[start..<i]), quoted: false)
            }
            if keyEnd - keyStart == wanted.count, zip(header[keyStart..<keyEnd], wanted).allSatisfy({ lower($0) == lower($1) }) {
                return value
            }
            guard i < n, header[i] == semicolon else { return nil }  // the element ended
            i += 1
        }
        return nil
    }

    private static func lower(_ byte: UInt8) -> UInt8 {
        byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z") ? byte + 32 : byte
    }
}
