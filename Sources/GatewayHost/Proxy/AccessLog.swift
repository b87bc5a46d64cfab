import MeshgateGRPC
import MeshgatePosix
import NIOCore
import MeshgateSupport
import MeshgateRouting

/// The access log: one JSON line per RPC on stderr, in the same shape as
/// every other log line (`ts`, `level`, `"msg":"rpc"`, then fields), written
/// when the call ends on its event loop. Filters add fields through
/// `call_set_log_field` (the Tracing plugin adds `trace_id` and `span_id`),
/// so a line joins its trace. Nothing is built unless `runtime.access_log`
/// is on.
///
/// Not through swift-log: its metadata is a dictionary of enum values that
/// the handler sorts and stringifies per line, which cost about 30 µs per
/// RPC in `bench/run-observability.sh`. Here each loop formats straight
/// into one reused byte buffer and writes once per loop tick (see
/// `flush`), as nginx's buffered `access_log` and Envoy's access log sinks do.
final class AccessLog {
    struct Entry {
        var listener: String
        var path: String
        var cluster: String
        var status: GRPCStatus
        var durationMicros: Int64
        var upstream: String?
        var attempts: Int
        var requestBytes: Int
        var responseBytes: Int
        var clientIdentity: String?
        var fields: [(key: String, value: String)]
    }

    /// Linux PIPE_BUF: a write of at most this many bytes to a pipe is never
    /// interleaved with another thread's, so lines of two loops stay whole.
    static let atomicWriteSize = 4096
    /// Past this many pending bytes, write at once rather than at the end of the tick.
    static let flushThreshold = 64 * 1024

    private let eventLoop: EventLoop
    private let fd: Int32
    private var line = JSONLine()
    private var pending: [UInt8] = []
    private var flushScheduled = false

    init(eventLoop: EventLoop, fd: Int32 = 2) {
        self.eventLoop = eventLoop
        self.fd = fd
        pending.reserveCapacity(Self.flushThreshold + 4096)
    }

    /// On the loop: formats the line; it is written when the loop has run
    /// its current work, together with the lines of the other calls that
    /// ended meanwhile.
    func write(_ e: Entry) {
        line.start(message: "rpc")
        // A filter's field of the same name replaces the gateway's.
        let fields = e.fields
        func wanted(_ key: String) -> Bool { fields.isEmpty || !fields.contains { $0.key == key } }
        if wanted("attempts") { line.field("attempts", int: Int64(e.attempts)) }
        if let client = e.clientIdentity, wanted("client") { line.field("client", string: client) }
        if wanted("cluster") { line.field("cluster", string: e.cluster) }
        if wanted("duration_ms") { line.field("duration_ms", thousandths: e.durationMicros) }
        if !e.status.message.isEmpty, wanted("grpc_message") { line.field("grpc_message", string: e.status.message) }
        if wanted("grpc_status") { line.field("grpc_status", int: Int64(e.status.code.rawValue)) }
        if wanted("listener") { line.field("listener", string: e.listener) }
        let (service, method) = GRPCPath.serviceAndMethod(e.path)
        if wanted("method") { line.field("method", string: method) }
        if wanted("request_bytes") { line.field("request_bytes", int: Int64(e.requestBytes)) }
        if wanted("response_bytes") { line.field("response_bytes", int: Int64(e.responseBytes)) }
        if wanted("service") { line.field("service", string: service) }
        if wanted("status") { line.field("status", string: e.status.code.name) }
        if let upstream = e.upstream, wanted("upstream") { line.field("upstream", string: upstream) }
        for (key, value) in e.fields { line.field(key, string: value) }
        line.end()
        pending.append(contentsOf: line.bytes)
        if pending.count >= Self.flushThreshold {
            flush()
        } else if !flushScheduled {
            flushScheduled = true
            eventLoop.assumeIsolated().execute { self.flush() }
        }
    }

    /// Writes the pending lines in whole-line chunks of at most
    /// `atomicWriteSize` bytes (a longer line goes alone).
    func flush() {
        flushScheduled = false
        guard !pending.isEmpty else { return }
        pending.withUnsafeBytes { bytes in
            var start = 0
            while start < bytes.count {
                var end = min(start + Self.atomicWriteSize, bytes.count)
                if end < bytes.count {
                    // Back to the end of the last whole line in the chunk; forward when one line is longer.
                    var cut = end
                    while cut > start && bytes[cut - 1] != UInt8(ascii: "\n") { cut -= 1 }
                    if cut == start {
                        cut = end
                        while cut < bytes.count && bytes[cut - 1] != UInt8(ascii: "\n") { cut += 1 }
                    }
                    end = cut
                }
                // stderr gone: nowhere to report it either.
                try? Posix.writeAll(fd, UnsafeRawBufferPointer(rebasing: bytes[start..<end]))
                start = end
            }
        }
        pending.removeAll(keepingCapacity: true)
    }
}
