import FilterABI
import MeshgateGRPC
import MeshgateHTTP2
import MeshgatePosix

/// What the host functions of the ABI read and write for one call: the
/// `mg_call *` handle points at this object, which lives as long as its
/// call. (`mg_attempt *` points at the data path's attempt object.)
public final class PluginCallState {
    public let path: String
    public let requestHeaders: HTTP2HeaderList
    /// Uptime nanoseconds of the deadline, if the call has one.
    public let deadlineNanos: UInt64?
    /// The data path's call (unretained), for the host functions that
    /// start or cancel attempts (`DataPathHostFunctions`). Not retained:
    /// the call owns this object, so the call outlives it; it is cleared
    /// when the call ends, and plugins may only use handles inside hooks,
    /// which run while the call is alive.
    public var owner: UnsafeMutableRawPointer?
    /// Set by call_local_reply.
    public var localReply: GRPCStatus?
    /// While on_request_headers hooks run: call_start_shadow works, and
    /// call_add_response_header adds to a local reply (ABI 1.3).
    public var inRequestHeaderHooks = false
    /// Fields call_add_response_header added to a filter's local reply
    /// (e.g. grpc-retry-pushback-ms from a rate limiter); nil when none.
    public var localReplyFields: HTTP2HeaderList?
    /// The client's "ip:port" (ABI 1.3 call_peer_address), made on the
    /// first ask and kept for the call.
    public var peerAddress: mg_str?
    /// The upstream's response head during on_response_headers.
    public var responseHeaders: HTTP2HeaderList?
    /// During on_response_headers: the head the client will get (the
    /// upstream's fields, then those call_add_response_header appends).
    public var clientResponseHead: HTTP2HeaderList = []
    /// Whether the access log is on, so call_set_log_field keeps fields.
    public let collectsLogFields: Bool
    /// Set by call_set_log_field: extra fields of the access-log line.
    public private(set) var logFields: [(key: String, value: String)] = []

    public func setLogField(_ key: String, _ value: String) {
        if let i = logFields.firstIndex(where: { $0.key == key }) { logFields[i].value = value } else { logFields.append((key, value)) }
    }
    /// Bytes handed to plugins as mg_str, from the loop's free lists and
    /// freed with the call: a chain of blocks, each starting with the
    /// address of the one made before it (no array to grow per copy).
    private var arena: UnsafeMutableRawPointer?

    public init(path: String, requestHeaders: HTTP2HeaderList, deadlineNanos: UInt64?, collectsLogFields: Bool) {
        self.path = path
        self.requestHeaders = requestHeaders
        self.deadlineNanos = deadlineNanos
        self.collectsLogFields = collectsLogFields
    }

    deinit {
        var block = arena
        while let current = block {
            block = current.load(as: UnsafeMutableRawPointer?.self)
            ThreadCachedMemory.deallocate(UnsafeMutableRawBufferPointer(start: current, count: 0))
        }
    }

    /// The `index`-th value of request header `name` (exact, lower-case
    /// bytes), copied to storage that lives as long as the call. Names are
    /// compared in place: a lookup that finds nothing (a tracing filter
    /// asking for `traceparent` on calls that carry none) copies nothing.
    public func requestHeader(_ name: mg_str, index: Int) -> mg_str? {
        guard let wanted = name.ptr, name.len > 0 else { return nil }
        let wantedBytes = UnsafeRawBufferPointer(start: wanted, count: name.len)
        var seen = 0
        var found: mg_str?
        requestHeaders.forEachField { fieldName, value in
            guard fieldName.count == name.len, Posix.bytesEqual(fieldName.baseAddress!, wantedBytes.baseAddress!, count: name.len) else { return true }
            if seen == index {
                found = stable(value)
                return false
            }
            seen += 1
            return true
        }
        return found
    }

    public var handle: OpaquePointer { OpaquePointer(Unmanaged.passUnretained(self).toOpaque()) }

    public static func from(_ handle: OpaquePointer?) -> PluginCallState {
        Unmanaged<PluginCallState>.fromOpaque(UnsafeRawPointer(handle!)).takeUnretainedValue()
    }

    /// A copy of `text` that stays valid until the call ends.
    public func stable(_ text: String) -> mg_str {
        var text = text
        return text.withUTF8 { stable(UnsafeRawBufferPointer($0)) }
    }

    /// A copy of `bytes` that stays valid until the call ends.
    public func stable(_ bytes: UnsafeRawBufferPointer) -> mg_str {
        let link = MemoryLayout<UnsafeMutableRawPointer?>.stride
        let block = ThreadCachedMemory.allocate(byteCount: link + bytes.count).baseAddress!
        block.storeBytes(of: arena, as: UnsafeMutableRawPointer?.self)
        arena = block
        let text = block + link
        if let base = bytes.baseAddress { text.copyMemory(from: base, byteCount: bytes.count) }
        return mg_str(ptr: text.assumingMemoryBound(to: CChar.self), len: bytes.count)
    }

    public static func nth(_ headers: HTTP2HeaderList, _ name: String, _ index: Int) -> String? {
        var seen = 0
        for field in headers where field.name == name {
            if seen == index { return field.value }
            seen += 1
        }
        return nil
    }
}
