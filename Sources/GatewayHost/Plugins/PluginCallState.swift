import FilterABI
import MeshgateGRPC
import MeshgateHTTP2

/// What the host functions of the ABI read and write for one call: the
/// `mg_call *` (and, for now, `mg_attempt *`) handle points at this object,
/// which lives as long as its `ProxyCall`.
final class PluginCallState {
    let path: String
    let requestHeaders: HTTP2HeaderList
    let deadline: NIODeadlineBox
    /// Set by call_local_reply.
    var localReply: GRPCStatus?
    /// Filled by attempt_set_request_header during on_attempt_start.
    var attemptHeaders: HTTP2HeaderList = []
    var inAttemptStart = false
    /// The upstream's response head during on_response_headers.
    var responseHeaders: HTTP2HeaderList?
    /// Added by call_add_response_header.
    var extraResponseHeaders: HTTP2HeaderList = []
    /// Bytes handed to plugins as mg_str; freed with the call.
    private var arena: [UnsafeMutableRawBufferPointer] = []

    init(path: String, requestHeaders: HTTP2HeaderList, deadline: NIODeadlineBox) {
        self.path = path
        self.requestHeaders = requestHeaders
        self.deadline = deadline
    }

    deinit {
        for buffer in arena { buffer.deallocate() }
    }

    var handle: OpaquePointer { OpaquePointer(Unmanaged.passUnretained(self).toOpaque()) }

    static func from(_ handle: OpaquePointer?) -> PluginCallState {
        Unmanaged<PluginCallState>.fromOpaque(UnsafeRawPointer(handle!)).takeUnretainedValue()
    }

    /// A copy of `text` that stays valid until the call ends.
    func stable(_ text: String) -> mg_str {
        var text = text
        return text.withUTF8 { bytes in
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: max(bytes.count, 1), alignment: 1)
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

    /// RFC 9113 field names: lower-case tokens, no pseudo-headers.
    static func isValidHeaderName(_ name: String) -> Bool {
        !name.isEmpty && name.utf8.allSatisfy { b in
            (b >= UInt8(ascii: "a") && b <= UInt8(ascii: "z")) || (b >= UInt8(ascii: "0") && b <= UInt8(ascii: "9"))
                || b == UInt8(ascii: "-") || b == UInt8(ascii: "_") || b == UInt8(ascii: ".")
        } && !["connection", "te", "transfer-encoding", "upgrade", "keep-alive", "proxy-connection", "host"].contains(name)
    }

    static func isValidHeaderValue(_ value: String) -> Bool {
        value.utf8.allSatisfy { $0 >= 0x20 && $0 != 0x7f || $0 == 0x09 }
    }
}

/// The call's deadline, shared with the host functions.
final class NIODeadlineBox {
    let deadlineNanos: UInt64?
    init(deadlineNanos: UInt64?) { self.deadlineNanos = deadlineNanos }
}
