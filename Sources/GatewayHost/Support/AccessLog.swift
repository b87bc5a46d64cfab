import MeshgateGRPC

#if canImport(Glibc)
import Glibc
#endif

/// The access log: one JSON line per RPC on stderr, in the same stream and
/// shape as the other logs (`"msg":"rpc"`), written when the call ends on
/// its event loop. Filters add fields through `call_set_log_field` (the
/// Tracing plugin adds `trace_id` and `span_id`), so a line can be joined
/// with its trace. Only built when `runtime.access_log` is on.
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
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        let (service, method) = MetricsSnapshot.split(e.path)
        var line = "{\"ts\":\(ts.tv_sec).\(String(ts.tv_nsec / 1_000_000).leftPadded(3)),\"level\":\"info\",\"msg\":\"rpc\""
        line += ",\"listener\":\(Log.quote(e.listener)),\"service\":\(Log.quote(service)),\"method\":\(Log.quote(method))"
        line += ",\"cluster\":\(Log.quote(e.cluster)),\"grpc_status\":\(e.status.code.rawValue),\"status\":\(Log.quote(GRPCStatusCodeName.names[e.status.code.rawValue]))"
        if !e.status.message.isEmpty { line += ",\"grpc_message\":\(Log.quote(e.status.message))" }
        line += ",\"duration_ms\":\(String(format3: e.durationSeconds * 1000)),\"attempts\":\(e.attempts),\"request_bytes\":\(e.requestBytes)"
        if let upstream = e.upstream { line += ",\"upstream\":\(Log.quote(upstream))" }
        if let client = e.clientIdentity { line += ",\"client\":\(Log.quote(client))" }
        for (key, value) in e.fields { line += ",\(Log.quote(key)):\(Log.quote(value))" }
        line += "}\n"
        var bytes = Array(line.utf8)
        _ = bytes.withUnsafeMutableBytes { Glibc.write(2, $0.baseAddress, $0.count) }
    }
}

extension String {
    fileprivate func leftPadded(_ width: Int) -> String {
        count >= width ? self : String(repeating: "0", count: width - count) + self
    }

    /// Three decimals, without Foundation's formatter.
    fileprivate init(format3 value: Double) {
        let thousandths = Int64((value * 1000).rounded())
        self = "\(thousandths / 1000).\(String(thousandths % 1000).leftPadded(3))"
    }
}
