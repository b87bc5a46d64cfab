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
