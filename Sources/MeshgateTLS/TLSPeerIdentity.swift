import COpenSSL

/// Who the verified peer certificate says the peer is.
public struct TLSPeerIdentity: Sendable, Equatable {
    public var subject: String?
    public var commonName: String?
    public var dnsNames: [String] = []
    public var uris: [String] = []

    /// Every name an allow list may match: URIs (SPIFFE IDs), DNS names,
    /// then the subject's CN.
    public var names: [String] { uris + dnsNames + (commonName.map { [$0] } ?? []) }

    /// Envoy's `x-forwarded-client-cert` form: `Subject="...";URI=...;DNS=...`.
    public var forwardedClientCert: String {
        var parts: [String] = []
        if let subject { parts.append("Subject=\"\(subject.split(separator: "\"", omittingEmptySubsequences: false).joined(separator: "\\\""))\"") }
        parts += uris.map { "URI=\($0)" }
        parts += dnsNames.map { "DNS=\($0)" }
        return parts.joined(separator: ";")
    }

    init?(certificate cert: OpaquePointer) {
        if let name = X509_get_subject_name(cert) {
            var buffer = [CChar](repeating: 0, count: 512)
            if X509_NAME_get_text_by_NID(name, NID_commonName, &buffer, Int32(buffer.count)) > 0 {
                commonName = Self.text(buffer)
            }
            if let line = X509_NAME_oneline(name, nil, 0) {
                subject = String(cString: line)
                CRYPTO_free(line, #fileID, #line)
            }
        }
        var index: Int32 = 0
        var type: Int32 = 0
        var data: UnsafePointer<UInt8>?
        var length: Int32 = 0
        while mg_x509_san(cert, index, &type, &data, &length) == 1 {
            if let data, length > 0 {
                let value = String(decoding: UnsafeBufferPointer(start: data, count: Int(length)), as: UTF8.self)
                if type == GEN_DNS { dnsNames.append(value) } else if type == GEN_URI { uris.append(value) }
            }
            index += 1
        }
    }

    private static func text(_ buffer: [CChar]) -> String {
        buffer.withUnsafeBufferPointer { String(decoding: UnsafeRawBufferPointer($0).prefix { $0 != 0 }, as: UTF8.self) }
    }
}
