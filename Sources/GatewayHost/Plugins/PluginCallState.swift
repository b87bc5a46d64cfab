import FilterABI
import MeshgateGRPC
import MeshgateHTTP2
import MeshgatePosix

/// What the host functions of the ABI read and write for one call: the
/// `mg_call *` handle points at this object, which lives as long as its
/// `ProxyCall`. (`mg_attempt *` points at the attempt's `UpstreamAttempt`.)
final class PluginCallState {
    let path: String
    let requestHeaders: HTTP2HeaderList
    /// Uptime nanoseconds of the deadline, if the call has one.
    let deadlineNanos: UInt64?
    /// The call, for the host functions that start or cancel attempts.
    /// `unowned(unsafe)`: the call owns this object, so the call outlives
    /// it; it is cleared when the call ends, and plugins may only use
    /// handles inside hooks, which run while the call is alive.
    unowned(unsafe) var proxy: ProxyCall?
    /// Set by call_local_reply.
    var localReply: GRPCStatus?
    /// The upstream's response head during on_response_headers.
    var responseHeaders: HTTP2HeaderList?
    /// During on_response_headers: the head the client will get (the
    /// upstream's fields, then those call_add_response_header appends).
    var clientResponseHead: HTTP2HeaderList = []
    /// Whether the access log is on, so call_set_log_field keeps fields.
    let collectsLogFields: Bool
    /// Set by call_set_log_field: extra fields of the access-log line.
    private(set) var logFields: [(key: String, value: String)] = []

    func setLogField(_ key: String, _ value: String) {
        if let i = logFields.firstIndex(where: { $0.key == key }) { logFields[i].value = value } else { logFields.append((key, value)) }
    }
    /// Bytes handed to plugins as mg_str; freed with the call. (From the
    /// loop's free lists, like the header layout: per-call buffers.)
    private var arena: [UnsafeMutableRawBufferPointer] = []
    /// The request headers laid out for plugins in one allocation: for each
    /// field three Ints (name start, value start, value end: offsets into
    /// this buffer), then the bytes. Made on the first lookup, so that
    /// lookups allocate nothing.
    private var headerLayout: UnsafeMutableRawBufferPointer?
    private var headerCount = 0

    init(path: String, requestHeaders: HTTP2HeaderList, deadlineNanos: UInt64?, collectsLogFields: Bool) {
        self.path = path
        self.requestHeaders = requestHeaders
        self.deadlineNanos = deadlineNanos
        self.collectsLogFields = collectsLogFields
    }

    deinit {
        for buffer in arena { ThreadCachedMemory.deallocate(buffer) }
        if let headerLayout { ThreadCachedMemory.deallocate(headerLayout) }
    }

    /// The `index`-th value of request header `name` (exact, lower-case
    /// bytes), pointing into storage that lives as long as the call.
    func requestHeader(_ name: mg_str, index: Int) -> mg_str? {
        if headerLayout == nil { layOutHeaders() }
        guard let base = headerLayout?.baseAddress, let wanted = name.ptr else { return nil }
        let spans = base.assumingMemoryBound(to: Int.self)
        var seen = 0
        for i in 0..<headerCount {
            let nameStart = spans[3 * i], valueStart = spans[3 * i + 1], valueEnd = spans[3 * i + 2]
            guard valueStart - nameStart == name.len, Posix.bytesEqual(base + nameStart, wanted, count: name.len) else { continue }
            if seen == index {
                return mg_str(ptr: (base + valueStart).assumingMemoryBound(to: CChar.self), len: valueEnd - valueStart)
            }
            seen += 1
        }
        return nil
    }

    private func layOutHeaders() {
        let count = requestHeaders.count
        let spanBytes = 3 * count * MemoryLayout<Int>.stride
        var total = spanBytes + 1
        for field in requestHeaders { total += field.name.utf8.count + field.value.utf8.count }
        let buffer = ThreadCachedMemory.allocate(byteCount: total)
        let spans = buffer.baseAddress!.bindMemory(to: Int.self, capacity: 3 * count)
        var offset = spanBytes
        for (i, field) in requestHeaders.enumerated() {
            spans[3 * i] = offset
            offset += copy(field.name, into: buffer, at: offset)
            spans[3 * i + 1] = offset
            offset += copy(field.value, into: buffer, at: offset)
            spans[3 * i + 2] = offset
        }
        headerLayout = buffer
        headerCount = count
    }

    private func copy(_ text: String, into buffer: UnsafeMutableRawBufferPointer, at offset: Int) -> Int {
        var text = text
        return text.withUTF8 { bytes in
            if let source = bytes.baseAddress { (buffer.baseAddress! + offset).copyMemory(from: source, byteCount: bytes.count) }
            return bytes.count
        }
    }

    var handle: OpaquePointer { OpaquePointer(Unmanaged.passUnretained(self).toOpaque()) }

    static func from(_ handle: OpaquePointer?) -> PluginCallState {
        Unmanaged<PluginCallState>.fromOpaque(UnsafeRawPointer(handle!)).takeUnretainedValue()
    }

    /// A copy of `text` that stays valid until the call ends.
    func stable(_ text: String) -> mg_str {
        var text = text
        return text.withUTF8 { bytes in
            let buffer = ThreadCachedMemory.allocate(byteCount: max(bytes.count, 1))
            if let base = bytes.baseAddress { buffer.copyMemory(from: UnsafeRawBufferPointer(start: base, count: bytes.count)) }
            arena.append(buffer)
            return mg_str(ptr: buffer.baseAddress!.assumingMemoryBound(to: CChar.self), len: bytes.count)
        }
    }

    static func nth(_ headers: HTTP2HeaderList, _ name: String, _ index: Int) -> String? {
        var seen = 0
        for field in headers where field.name == name {
            if seen == index { return field.value }
            seen += 1
        }
        return nil
    }

    /// RFC 9113 field names: lower-case tokens, no pseudo-headers, no
    /// connection-specific fields.
    static func isValidHeaderName(_ name: String) -> Bool {
        let utf8 = name.utf8
        guard !utf8.isEmpty, utf8.allSatisfy({ b in
            (b >= UInt8(ascii: "a") && b <= UInt8(ascii: "z")) || (b >= UInt8(ascii: "0") && b <= UInt8(ascii: "9"))
                || b == UInt8(ascii: "-") || b == UInt8(ascii: "_") || b == UInt8(ascii: ".")
        }) else { return false }
        switch utf8.count {
        case 2, 4, 7, 10, 16, 17: return !connectionSpecific.contains(name)
        default: return true
        }
    }

    private static let connectionSpecific: Set<String> = [
        "connection", "te", "transfer-encoding", "upgrade", "keep-alive", "proxy-connection", "host",
    ]

    static func isValidHeaderValue(_ value: String) -> Bool {
        value.utf8.allSatisfy { $0 >= 0x20 && $0 != 0x7f || $0 == 0x09 }
    }
}
