import MeshgateGRPC
import MeshgateHTTP2

extension GRPCStatus {
    /// The status a client should see when an HTTP/2 stream ends with
    /// RST_STREAM or is refused by GOAWAY (grpc doc/PROTOCOL-HTTP2.md,
    /// "Errors").
    public init(http2Error code: HTTP2ErrorCode, context: String) {
        let grpcCode: GRPCStatusCode
        switch code {
        case .refusedStream: grpcCode = .unavailable
        case .cancel: grpcCode = .cancelled
        case .enhanceYourCalm: grpcCode = .resourceExhausted
        case .inadequateSecurity: grpcCode = .permissionDenied
        default: grpcCode = .internal
        }
        let detail = code == .noError ? "stream closed with NO_ERROR before a status arrived" : code.name
        self.init(grpcCode, "\(context): \(detail)")
    }
}
