import FilterABI
import MeshgateGRPC
import MeshgateHTTP2
import NIOCore
import MeshgateSupport

/// The `mg_host` table handed to every plugin: the functions the host
/// offers, implemented in Swift with C calling convention.
///
public enum PluginHostAPI {
    /// The table, with the functions that act on a call's attempts and on
    /// the proxied call itself left to `dataPath` (the data path owns those
    /// objects; this module knows them only as opaque handles). Made once
    /// per process by the data path, never mutated or freed: plugins keep
    /// the pointer for the life of the process.
    public static func makeTable(dataPath: (inout mg_host) -> Void) -> PluginHostTable {
        let table = UnsafeMutablePointer<mg_host>.allocate(capacity: 1)
        table.initialize(to: mg_host(
            size: UInt32(MemoryLayout<mg_host>.size),
            abi_major: UInt32(MG_ABI_MAJOR),
            abi_minor: UInt32(MG_ABI_MINOR),
            reserved: 0,
            log: { level, plugin, message in
                let name = PluginHostAPI.string(plugin)
                let text = PluginHostAPI.string(message)
                switch level {
                case Int32(MG_LOG_DEBUG): Log.debug(text, ["plugin": name])
                case Int32(MG_LOG_INFO): Log.info(text, ["plugin": name])
                case Int32(MG_LOG_WARNING): Log.warning(text, ["plugin": name])
                default: Log.error(text, ["plugin": name])
                }
            },
            call_method: { call in
                let state = PluginCallState.from(call)
                return state.stable(state.path)
            },
            call_request_header: { call, name, index, value in
                guard let found = PluginCallState.from(call).requestHeader(name, index: index) else { return 0 }
                value?.pointee = found
                return 1
            },
            call_local_reply: { call, status, message in
                let state = PluginCallState.from(call)
                let code = GRPCStatusCode(rawValue: Int(status)) ?? .unknown
                state.localReply = GRPCStatus(code == .ok ? .unknown : code, PluginHostAPI.string(message))
            },
            call_deadline_remaining_us: { call in
                let state = PluginCallState.from(call)
                guard let deadline = state.deadlineNanos else { return UInt64.max }
                let now = UInt64(NIODeadline.now().uptimeNanoseconds)
                return deadline > now ? (deadline - now) / 1000 : 0
            },
            attempt_set_request_header: nil,
            attempt_response_header: nil,
            call_add_response_header: { call, name, value in
                let state = PluginCallState.from(call)
                if state.responseHeaders == nil {
                    // 1.3: a field of a filter's local reply.
                    guard state.inRequestHeaderHooks, state.localReply != nil else { return -1 }
                    var fields = state.localReplyFields ?? HTTP2HeaderList()
                    defer { state.localReplyFields = fields }
                    return PluginHeaderField.append(name, value, to: &fields, replacing: false) ? 0 : -1
                }
                return PluginHeaderField.append(name, value, to: &state.clientResponseHead, replacing: false) ? 0 : -1
            },
            call_start_attempt: nil,
            call_cancel_attempts: nil,
            timer_start: { ctx, delay, repeats, fire, user in
                guard let ctx, let fire else { return 0 }
                return PluginConfigContext.from(ctx).startTimer(delayMs: delay, repeats: repeats != 0, fire: fire, user: user)
            },
            timer_cancel: { ctx, id in
                guard let ctx else { return }
                PluginConfigContext.from(ctx).cancelTimer(id)
            },
            endpoint_eject: { ctx, cluster, id, duration in
                guard let ctx else { return -1 }
                return PluginConfigContext.from(ctx).ejections.eject(cluster: PluginHostAPI.string(cluster), endpointID: id, durationMs: duration) ? 0 : -1
            },
            attempt_number: nil,
            attempt_endpoint: nil,
            call_set_log_field: { call, key, value in
                guard PluginHostAPI.isLogFieldKey(key) else { return -1 }
                let state = PluginCallState.from(call)
                // Without an access log the field has nowhere to go: dropped
                // before any copy, so filters may set fields unconditionally.
                guard state.collectsLogFields else { return 0 }
                state.setLogField(PluginHostAPI.string(key), PluginHostAPI.string(value))
                return 0
            },
            counter_declare: { name, help, labels in
                PluginCounters.shared.declare(name: PluginHostAPI.string(name), help: PluginHostAPI.string(help),
                                              labels: PluginHostAPI.string(labels))
            },
            counter_add: { id, delta in
                PluginCounters.shared.add(id, delta)
            },
            attempt_endpoint_metadata: nil,
            call_peer_address: nil,
            call_start_shadow: nil))
        dataPath(&table.pointee)
        let t = table.pointee
        precondition(t.attempt_set_request_header != nil && t.attempt_response_header != nil && t.call_start_attempt != nil
                     && t.call_cancel_attempts != nil && t.attempt_number != nil && t.attempt_endpoint != nil
                     && t.attempt_endpoint_metadata != nil && t.call_peer_address != nil && t.call_start_shadow != nil,
                     "the data path must provide every host function that acts on attempts and calls")
        return PluginHostTable(pointer: UnsafePointer(table))
    }

    /// 1 to 64 bytes, and none of the keys the host writes itself (ts, level, msg).
    public static func isLogFieldKey(_ key: mg_str) -> Bool {
        guard let ptr = key.ptr, (1...64).contains(key.len) else { return false }
        let bytes = UnsafeRawBufferPointer(start: ptr, count: key.len)
        return !(bytes.elementsEqual("ts".utf8) || bytes.elementsEqual("level".utf8) || bytes.elementsEqual("msg".utf8))
    }

    public static func string(_ s: mg_str) -> String {
        guard let ptr = s.ptr, s.len > 0 else { return "" }
        return String(decoding: UnsafeRawBufferPointer(start: ptr, count: s.len), as: UTF8.self)
    }
}

/// A complete `mg_host` table (`PluginHostAPI.makeTable`), handed to every
/// plugin image the host loads. `@unchecked Sendable`: the memory it points
/// at is written once, before the value exists, and never written or freed
/// after; plugins, on any thread, only read it.
public struct PluginHostTable: @unchecked Sendable {
    public let pointer: UnsafePointer<mg_host>
}
