/// Which fields the gateway asks HPACK never to put in the dynamic table.
///
/// nghttp2 indexes every field it sends except a few names of its own
/// (`:path`, `content-length`, `set-cookie`, ...). A field whose value is
/// new on every request — a trace id, a deadline — then enters the 4 KiB
/// table on each request and pushes out the fields that do repeat
/// (`content-type`, `te`, `:authority`, `user-agent`), which both ends then
/// encode, send and decode again as literals. These names are sent as
/// literals without indexing (NGHTTP2_NV_FLAG_NO_INDEX), as nghttp2's own
/// list does for `:path`.
public enum HPACKIndexingPolicy {
    /// Whether `name` (lower-case bytes) carries a value that differs per
    /// request. Compared by length first: most names are ruled out without
    /// reading a byte.
    public static func isPerRequest(_ name: UnsafeRawBufferPointer) -> Bool {
        switch name.count {
        case 10: return matches(name, "tracestate")
        case 11: return matches(name, "traceparent")
        case 12: return matches(name, "grpc-timeout") || matches(name, "x-request-id")
        case 14: return matches(name, "grpc-trace-bin")
        default: return false
        }
    }

    private static func matches(_ name: UnsafeRawBufferPointer, _ known: StaticString) -> Bool {
        HTTP2HeaderList.equal(name, UnsafeRawBufferPointer(start: known.utf8Start, count: known.utf8CodeUnitCount))
    }
}
