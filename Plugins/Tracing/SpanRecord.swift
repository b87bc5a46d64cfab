/// A finished span as the data path hands it to the exporter: plain values
/// only. Attributes are derived when the exporter thread encodes it, so an
/// event loop does no splitting, formatting or encoding.
struct SpanRecord {
    enum Kind: UInt64 { case server = 2, client = 3 }

    var kind: Kind
    var traceID: TraceID
    var spanID: UInt64
    /// 0 for a root span.
    var parentID: UInt64
    var traceState: String
    /// The gRPC path, "/pkg.Service/Method".
    var path: String
    var startUnixNanos: UInt64
    var endUnixNanos: UInt64
    /// gRPC status code of the call or attempt.
    var grpcStatus: Int32
    var statusMessage: String
    /// Server span: the attempts the call made. Client span: this attempt's number.
    var attempts: UInt32
    /// Client span: the endpoint's "host:port"; server span: `:authority`.
    var peer: String
    var transportFailure: Bool
}
