import MeshgateGRPC
import MeshgateHTTP2

extension GRPCStatus {
    /// The status a client should see when an HTTP/2 stream ends with
    /// RST_STREAM or is refused by GOAWAY (grpc doc/PROTOCOL-HTTP2.md,
    /// "Errors").
    public init(http2Error code: HTTP2ErrorCode, context: String) {
        let detail = code == .noError ? "stream closed with NO_ERROR before a status arrived" : code.name
        self.init(GRPCStatusCode(http2Error: code), "\(context): \(detail)")
    }
}

extension GRPCStatusCode {
    /// The code alone, by the rules of `GRPCStatus(http2Error:context:)`
    /// (no message built: a shadow's result carries only the code).
    public init(http2Error code: HTTP2ErrorCode) {
        switch code {
        case .refusedStream: self = .unavailable
        case .cancel: self = .cancelled
        case .enhanceYourCalm: self = .resourceExhausted
        case .inadequateSecurity: self = .permissionDenied
        default: self = .internal
        }
    }
}

extension GRPCStatus {
    /// The one reader of a status in a header block (trailers, or a
    /// Trailers-Only head): `grpc-status`, and `grpc-message`
    /// percent-decoded. Nil without `grpc-status`; a value that is not a
    /// code 0...16 reads as UNKNOWN (grpc doc/PROTOCOL-HTTP2.md).
    /// `@inlinable`: the data path reads each attempt's status with it.
    @inlinable
    public init?(headers: HTTP2HeaderList) {
        guard let code = GRPCStatusCode(headers: headers) else { return nil }
        self.init(code, GRPCMessageEncoding.percentDecode(headers["grpc-message"] ?? ""))
    }
}

extension GRPCStatusCode {
    /// The code alone (no message to decode), by the rules of
    /// `GRPCStatus(headers:)`.
    @inlinable
    public init?(headers: HTTP2HeaderList) {
        guard let text = headers["grpc-status"] else { return nil }
        self = Int(text).flatMap(GRPCStatusCode.init(rawValue:)) ?? .unknown
    }
}
