/// A gRPC status: a code plus a human-readable message.
public struct GRPCStatus: Sendable, Equatable, CustomStringConvertible {
    public var code: GRPCStatusCode
    public var message: String

    public init(_ code: GRPCStatusCode, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "\(code.name): \(message)" }
}

extension GRPCStatus {
    /// The status a client should see when an HTTP/2 stream ends with
    /// RST_STREAM or is refused by GOAWAY (grpc doc/PROTOCOL-HTTP2.md,
    /// "Errors").
    public static func fromHTTP2Error(code: UInt32, context: String) -> GRPCStatus {
        switch code {
        case 0x0: return GRPCStatus(.internal, "\(context): stream closed with NO_ERROR before a status arrived")
        case 0x1: return GRPCStatus(.internal, "\(context): PROTOCOL_ERROR")
        case 0x2: return GRPCStatus(.internal, "\(context): INTERNAL_ERROR")
        case 0x3: return GRPCStatus(.internal, "\(context): FLOW_CONTROL_ERROR")
        case 0x4: return GRPCStatus(.internal, "\(context): SETTINGS_TIMEOUT")
        case 0x5: return GRPCStatus(.internal, "\(context): STREAM_CLOSED")
        case 0x6: return GRPCStatus(.internal, "\(context): FRAME_SIZE_ERROR")
        case 0x7: return GRPCStatus(.unavailable, "\(context): REFUSED_STREAM")
        case 0x8: return GRPCStatus(.cancelled, "\(context): CANCEL")
        case 0x9: return GRPCStatus(.internal, "\(context): COMPRESSION_ERROR")
        case 0xa: return GRPCStatus(.internal, "\(context): CONNECT_ERROR")
        case 0xb: return GRPCStatus(.resourceExhausted, "\(context): ENHANCE_YOUR_CALM")
        case 0xc: return GRPCStatus(.permissionDenied, "\(context): INADEQUATE_SECURITY")
        case 0xd: return GRPCStatus(.internal, "\(context): HTTP_1_1_REQUIRED")
        default: return GRPCStatus(.internal, "\(context): HTTP/2 error code \(code)")
        }
    }

    /// The status implied by a non-200 HTTP status on a gRPC response
    /// (grpc doc/http-grpc-status-mapping.md).
    public static func fromHTTPStatus(_ status: Int) -> GRPCStatus {
        let code: GRPCStatusCode
        switch status {
        case 400: code = .internal
        case 401: code = .unauthenticated
        case 403: code = .permissionDenied
        case 404: code = .unimplemented
        case 429, 502, 503, 504: code = .unavailable
        default: code = .unknown
        }
        return GRPCStatus(code, "upstream answered HTTP status \(status)")
    }
}
