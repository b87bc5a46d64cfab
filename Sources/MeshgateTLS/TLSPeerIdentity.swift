internal import COpenSSL

/// Who the verified peer certificate says the peer is.
public struct TLSPeerIdentity: Sendable, Equatable {
    /// RFC 2253 form, "CN=client,O=Example".
    public var subject: String?
    public var commonName: String?
    public var dnsNames: [String] = []
    public var uris: [String] = []

    /// Every name an allow list may match: URIs (SPIFFE IDs) and DNS names;
    /// the subject's CN only when the certificate has neither (RFC 6125
    /// §6.4.4: with subject alternative names, the CN is no identity).
    public var names: [String] {
        let alternatives = uris + dnsNames
        return alternatives.isEmpty ? (commonName.map { [$0] } ?? []) : alternatives
    }

    /// Envoy's `x-forwarded-client-cert` form: `Subject="...";URI=...;DNS=...`.
    /// Values are quoted when they hold a separator (`,` `;` `=`), a quote
    /// or a backslash, with `"` and `\` escaped inside, so a name cannot
    /// forge another element.
    public var forwardedClientCert: String {
        var parts: [String] = []
        if let subject { parts.append("Subject=" + Self.quoted(subject)) }
        parts += uris.map { "URI=" + Self.quotedIfNeeded($0) }
        parts += dnsNames.map { "DNS=" + Self.quotedIfNeeded($0) }
        return parts.joined(separator: ";")
    }

    /// Names as given (what a certificate would have said).
    init(subject: String?, commonName: String?, dnsNames: [String], uris: [String]) {
        self.subject = subject
        self.commonName = commonName
        self.dnsNames = dnsNames
        self.uris = uris
    }

    init(certificate cert: OpaquePointer) {
        withUnsafeTemporaryAllocation(byteCount: 1024, alignment: 1) { buffer in
            let base = buffer.baseAddress!.assumingMemoryBound(to: UInt8.self)
            let cn = mg_x509_common_name(cert, base, Int32(buffer.count))
            if cn > 0 { commonName = Self.name(UnsafeBufferPointer(start: base, count: Int(cn))) }
            let subjectLength = mg_x509_subject_rfc2253(cert, buffer.baseAddress!.assumingMemoryBound(to: CChar.self), Int32(buffer.count))
            if subjectLength > 0 { subject = Self.name(UnsafeBufferPointer(start: base, count: Int(subjectLength))) }
        }
        // SANs longer than 512 bytes are skipped (-1), never truncated.
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 512) { buffer in
            var index: Int32 = 0
            var type: Int32 = 0
            while true {
                let length = mg_x509_san(cert, index, &type, buffer.baseAddress!, Int32(buffer.count))
                if length == -2 { break }
                if length > 0, let value = Self.name(UnsafeBufferPointer(start: buffer.baseAddress, count: Int(length))) {
                    if type == GEN_DNS { dnsNames.append(value) } else if type == GEN_URI { uris.append(value) }
                }
                index += 1
            }
        }
    }

    /// A name as text, or nil when it holds a NUL or another control byte:
    /// "victim.example\0.attacker" must not read as "victim.example", and
    /// must not reach a header.
    static func name(_ bytes: UnsafeBufferPointer<UInt8>) -> String? {
        guard !bytes.contains(where: { $0 < 0x20 || $0 == 0x7f }) else { return nil }
        return String(decoding: bytes, as: UTF8.self)
    }

    static func quotedIfNeeded(_ value: String) -> String {
        value.utf8.contains(where: { [UInt8(ascii: ","), UInt8(ascii: ";"), UInt8(ascii: "="), UInt8(ascii: "\""),
                                      UInt8(ascii: "\\"), UInt8(ascii: " ")].contains($0) }) ? quoted(value) : value
    }

    static func quoted(_ value: String) -> String {
        var out = "\""
        for c in value.unicodeScalars {
            if c == "\"" || c == "\\" { out.unicodeScalars.append("\\") }
            out.unicodeScalars.append(c)
        }
        return out + "\""
    }
}
