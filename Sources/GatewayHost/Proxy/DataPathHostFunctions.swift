import FilterABI
import MeshgateHTTP2
import MeshgatePluginHost

/// The host functions of the filter ABI that act on a call's attempts and
/// on the proxied call itself. They live with the objects they touch: an
/// `mg_attempt *` points at an `UpstreamAttempt`, and a call's
/// `PluginCallState.owner` at its `ProxyCall`. The plugin host makes the
/// rest of the table (`PluginHostAPI.makeTable`).
package enum DataPathHostFunctions {
    /// The complete `mg_host` table, made once; every plugin image is
    /// loaded with it.
    package static let table: PluginHostTable = PluginHostAPI.makeTable { host in
        host.attempt_set_request_header = { attempt, name, value in
            let attempt = UpstreamAttempt.from(attempt)
            guard attempt.acceptsRequestHeaders else { return -1 }
            return PluginHeaderField.append(name, value, to: &attempt.extraRequestHeaders, replacing: true) ? 0 : -1
        }
        host.attempt_response_header = { attempt, name, index, value in
            let state = UpstreamAttempt.from(attempt).call.plugin
            guard let headers = state.responseHeaders,
                  let found = PluginCallState.nth(headers, PluginHostAPI.string(name).lowercased(), index) else { return 0 }
            value?.pointee = state.stable(found)
            return 1
        }
        // The two that change the call only queue an event: the call goes
        // on with it once the current hook has returned.
        host.call_start_attempt = { call, delay in
            guard let proxy = ProxyCall.owner(of: call) else { return -1 }
            return proxy.filterStartAttempt(afterMs: delay) ? 0 : -1
        }
        host.call_cancel_attempts = { call, keep in
            guard let proxy = ProxyCall.owner(of: call) else { return }
            proxy.filterCancelAttempts(keep: keep.map { UpstreamAttempt.from($0) })
        }
        host.attempt_number = { attempt in
            UInt32(UpstreamAttempt.from(attempt).id)
        }
        host.attempt_endpoint = { attempt, id, address in
            let attempt = UpstreamAttempt.from(attempt)
            guard attempt.pool != nil else { return 0 }
            id?.pointee = attempt.endpointID
            address?.pointee = attempt.call.plugin.stable(attempt.address)
            return 1
        }
        host.attempt_endpoint_metadata = { attempt, key, value in
            let attempt = UpstreamAttempt.from(attempt)
            guard let found = attempt.call.endpointMetadata(attempt, key: key) else { return 0 }
            value?.pointee = found
            return 1
        }
        host.call_peer_address = { call, address in
            let state = PluginCallState.from(call)
            if state.peerAddress == nil, let text = ProxyCall.owner(of: call)?.peerAddressText {
                state.peerAddress = state.stable(text)
            }
            guard let found = state.peerAddress else { return 0 }
            address?.pointee = found
            return 1
        }
        host.call_start_shadow = { call, cluster, timeoutMs, bufferLimit, done, user in
            let state = PluginCallState.from(call)
            guard state.inRequestHeaderHooks, let proxy = ProxyCall.owner(of: call) else { return -1 }
            return proxy.startShadow(cluster: PluginHostAPI.string(cluster), timeoutMs: timeoutMs, bufferLimit: bufferLimit,
                                     done: done, user: user) ? 0 : -1
        }
    }
}
