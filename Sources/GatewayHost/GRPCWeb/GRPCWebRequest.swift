import MeshgateHTTP2
import MeshgateConfig

/// What a gRPC-Web request is, decided from its head, and its head
/// translated for the upstream (grpc doc/PROTOCOL-WEB.md).
struct GRPCWebRequest {
    /// `application/grpc-web-text[+proto]`: base64 bodies both ways.
    let text: Bool
    /// The content type's message format suffix ("+proto" when none).
    let format: String

    /// A gRPC-Web content type, or nil for anything else.
    init?(contentType: String) {
        let lower = contentType.lowercased()
        let base = lower.split(separator: ";", maxSplits: 1).first.map { String($0).trimmingSpaces } ?? ""
        let rest: Substring
        if base.hasPrefix("application/grpc-web-text") {
            text = true
            rest = base.dropFirst("application/grpc-web-text".count)
        } else if base.hasPrefix("application/grpc-web") {
            text = false
            rest = base.dropFirst("application/grpc-web".count)
        } else {
            return nil
        }
        guard rest.isEmpty || rest.hasPrefix("+") else { return nil }
        format = rest.isEmpty ? "+proto" : String(rest)
    }

    /// The content type of the answer.
    var responseContentType: String { (text ? "application/grpc-web-text" : "application/grpc-web") + format }

    /// Fields of the web request the upstream head does not carry: the
    /// body's description, the browser's gRPC-Web markers, HTTP/1.1's
    /// connection fields.
    private static let replacedFields: [[UInt8]] = [
        "content-type", "content-length", "te", "x-grpc-web", "accept", "host",
        "connection", "keep-alive", "transfer-encoding", "upgrade", "proxy-connection",
    ].map { Array($0.utf8) }

    /// The request head as a gRPC client would have sent it: gRPC's content
    /// type, `te: trailers`, and none of the fields that described the web
    /// body (its length, the browser's gRPC-Web markers).
    func upstreamHead(_ headers: HTTP2HeaderList) -> HTTP2HeaderList {
        var out = HTTP2HeaderList()
        out.reserveCapacity(headers.count + 1)
        // Compared as bytes: no String per field.
        headers.forEachField { name, value in
            if !Self.replacedFields.contains(where: { $0.elementsEqual(name) }) { out.append(name: name, value: value) }
            return true
        }
        out.append("content-type", format == "+proto" ? "application/grpc" : "application/grpc" + format)
        out.append("te", "trailers")
        return out
    }
}

extension String {
    fileprivate var trimmingSpaces: String {
        var s = Substring(self)
        while s.first == " " || s.first == "\t" { s = s.dropFirst() }
        while s.last == " " || s.last == "\t" { s = s.dropLast() }
        return String(s)
    }
}

/// The CORS answers of a gRPC-Web listener (`cors:`).
enum GRPCWebCORS {
    /// Request headers a gRPC-Web page sends (the grpc-web JavaScript
    /// client's, and the deadline), always allowed.
    static let baseAllowedHeaders = ["content-type", "x-grpc-web", "x-user-agent", "grpc-timeout", "authorization",
                                     "x-accept-content-transfer-encoding", "x-accept-response-streaming"]
    /// Response headers a page must be able to read.
    static let baseExposedHeaders = ["grpc-status", "grpc-message", "grpc-status-details-bin"]

    /// The fields an answer to `origin` carries (none when the origin is
    /// not allowed, or there is no `cors:`).
    static func responseFields(_ cors: CORSConfig?, origin: String?) -> HTTP2HeaderList {
        guard let cors, let origin, cors.allows(origin: origin) else { return [] }
        var fields: HTTP2HeaderList = [
            ("access-control-allow-origin", origin),
            ("access-control-expose-headers", (baseExposedHeaders + cors.exposeHeaders).joined(separator: ",")),
            ("vary", "origin"),
        ]
        if cors.allowCredentials { fields.append("access-control-allow-credentials", "true") }
        return fields
    }

    /// The answer to a preflight (OPTIONS): 204 with what the origin may
    /// do, or 403 when it may do nothing.
    static func preflight(_ cors: CORSConfig?, origin: String?) -> (status: Int, fields: HTTP2HeaderList) {
        guard let cors, let origin, cors.allows(origin: origin) else { return (403, [("content-length", "0")]) }
        var fields: HTTP2HeaderList = [
            ("access-control-allow-origin", origin),
            ("access-control-allow-methods", "POST, OPTIONS"),
            ("access-control-allow-headers", (baseAllowedHeaders + cors.allowedHeaders).joined(separator: ",")),
            ("access-control-max-age", String(cors.maxAge.components.seconds)),
            ("vary", "origin"),
            ("content-length", "0"),
        ]
        if cors.allowCredentials { fields.append("access-control-allow-credentials", "true") }
        return (204, fields)
    }
}
