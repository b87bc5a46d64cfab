import MeshgateGRPC
import MeshgateHTTP2

/// Header blocks for answers the gateway gives itself.
enum GRPCLocalReply {
    /// A Trailers-Only response: one HEADERS frame with END_STREAM.
    static func trailersOnly(_ status: GRPCStatus, httpStatus: Int = 200) -> HTTP2HeaderList {
        [
            (":status", String(httpStatus)),
            ("content-type", "application/grpc"),
            ("grpc-status", String(status.code.rawValue)),
            ("grpc-message", GRPCMessageEncoding.percentEncode(status.message)),
        ]
    }

    /// Trailers that end a response already under way.
    static func trailers(_ status: GRPCStatus) -> HTTP2HeaderList {
        [
            ("grpc-status", String(status.code.rawValue)),
            ("grpc-message", GRPCMessageEncoding.percentEncode(status.message)),
        ]
    }
}
