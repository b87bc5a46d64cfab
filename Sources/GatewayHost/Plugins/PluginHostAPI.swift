import FilterABI
import MeshgateGRPC
import MeshgateHTTP2
import NIOCore
import MeshgateSupport

/// The `mg_host` table handed to every plugin: the functions the host
/// offers, implemented in Swift with C calling convention.
///
enum PluginHostAPI {
    /// Built once, never mutated: plugins keep the pointer for the life of
    /// the process.
    nonisolated(unsafe) static let table: UnsafePointer<mg_host> = {
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
            attempt_set_request_header: { attempt, name, value in
                let attempt = UpstreamAttempt.from(attempt)
                guard attempt.acceptsRequestHeaders else { return -1 }
                return PluginHeaderField.append(name, value, to: &attempt.extraRequestHeaders, replacing: true) ? 0 : -1
            },
            attempt_response_header: { attempt, name, index, value in
                let state = UpstreamAttempt.from(attempt).call.plugin
                guard let headers = state.responseHeaders,
                      let found = PluginCallState.nth(headers, PluginHostAPI.string(name).lowercased(), index) else { return 0 }
                value?.pointee = state.stable(found)
                return 1
            },
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
            // The two that change the call only queue an event: the call
            // goes on with it once the current hook has returned.
            call_start_attempt: { call, delay in
                guard let proxy = PluginCallState.from(call).proxy else { return -1 }
                return proxy.filterStartAttempt(afterMs: delay) ? 0 : -1
            },
            call_cancel_attempts: { call, keep in
                guard let proxy = PluginCallState.from(call).proxy else { return }
                proxy.filterCancelAttempts(keep: keep.map { UpstreamAttempt.from($0) })
            },
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
            attempt_number: { attempt in
                UInt32(UpstreamAttempt.from(attempt).id)
            },
            attempt_endpoint: { attempt, id, address in
                let attempt = UpstreamAttempt.from(attempt)
                guard attempt.pool != nil else { return 0 }
                id?.pointee = attempt.endpointID
                address?.pointee = attempt.call.plugin.stable(attempt.address)
                return 1
            },
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
            attempt_endpoint_metadata: { attempt, key, value in
                let attempt = UpstreamAttempt.from(attempt)
                guard let found = attempt.call.endpointMetadata(attempt, key: key) else { return 0 }
                value?.pointee = found
                return 1
            },
            call_peer_address: { call, address in
                let state = PluginCallState.from(call)
                if state.peerAddress == nil, let text = state.proxy?.peerAddressText {
                    state.peerAddress = state.stable(text)
                }
                guard let found = state.peerAddress else { return 0 }
                address?.pointee = found
                return 1
            },
            call_start_shadow: { call, cluster, timeoutMs, bufferLimit, done, user in
                let state = PluginCallState.from(call)
                guard state.inRequestHeaderHooks, let proxy = state.proxy else { return -1 }
                return proxy.startShadow(cluster: PluginHostAPI.string(cluster), timeoutMs: timeoutMs, bufferLimit: bufferLimit,
                                         done: done, user: user) ? 0 : -1
            }))
        return UnsafePointer(table)
    }()

    /// Header names arrive lower-case as a rule; only copy when they are not.
    static func lowerCased(_ name: String) -> String {
        name.utf8.contains { $0 >= UInt8(ascii: "A") && $0 <= UInt8(ascii: "Z") } ? name.lowercased() : name
    }

    /// 1 to 64 bytes, and none of the keys the host writes itself (ts, level, msg).
    static func isLogFieldKey(_ key: mg_str) -> Bool {
        guard let ptr = key.ptr, (1...64).contains(key.len) else { return false }
        let bytes = UnsafeRawBufferPointer(start: ptr, count: key.len)
        return !(bytes.elementsEqual("ts".utf8) || bytes.elementsEqual("level".utf8) || bytes.elementsEqual("msg".utf8))
    }

    static func string(_ s: mg_str) -> String {
        guard let ptr = s.ptr, s.len > 0 else { return "" }
        return String(decoding: UnsafeRawBufferPointer(start: ptr, count: s.len), as: UTF8.self)
    }
}
