import Logging
import MeshgateGRPC

/// The access log: one JSON line per RPC, through the same swift-log
/// logger as every other line (`"msg":"rpc"`), written when the call ends
/// on its event loop. Filters add fields through `call_set_log_field` (the
/// Tracing plugin adds `trace_id` and `span_id`), so a line joins its
/// trace. Nothing is built unless `runtime.access_log` is on.
enum AccessLog {
    struct Entry {
        var listener: String
        var path: String
        var cluster: String
        var status: GRPCStatus
        var durationSeconds: Double
        var upstream: String?
        var attempts: Int
        var requestBytes: Int
        var clientIdentity: String?
        var fields: [(key: String, value: String)]
    }

    static func write(_ e: Entry) {
        let (service, method) = MetricsSnapshot.split(e.path)
        var metadata: Logger.Metadata = [
            "listener": .string(e.listener), "service": .string(service), "method": .string(method), "cluster": .string(e.cluster),
            "grpc_status": .stringConvertible(e.status.code.rawValue),
            "status": .string(GRPCStatusCodeName.names[e.status.code.rawValue]),
            "duration_ms": .stringConvertible(Double(Int64(e.durationSeconds * 1_000_000)) / 1000),
            "attempts": .stringConvertible(e.attempts), "request_bytes": .stringConvertible(e.requestBytes),
        ]
        if !e.status.message.isEmpty { metadata["grpc_message"] = .string(e.status.message) }
        if let upstream = e.upstream { metadata["upstream"] = .string(upstream) }
        if let client = e.clientIdentity { metadata["client"] = .string(client) }
        for (key, value) in e.fields { metadata[key] = .string(value) }
        Log.logger.info("rpc", metadata: metadata)
    }
}
