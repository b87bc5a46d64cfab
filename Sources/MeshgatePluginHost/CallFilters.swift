import FilterABI
import MeshgateGRPC
import MeshgateHTTP2
import NIOCore
import MeshgateCallCore
import MeshgateUpstream

/// One call's pass through its route's filter chain: the filters' per-call
/// state, and each hook run over the chain in order. `ProxyCall` runs
/// these when its state machine asks; host functions the hooks call reach
/// the call through `plugin` (the `mg_call *`), and those that would change
/// the call only queue an event (`ProxyCall.handle`).
///
/// Immutable once made, so the call holds it as a `let` and runs hooks on
/// it in place: a `var` struct in a class is copied (with a retain of each
/// reference in it) for every non-mutating call, ~2 % of the CPU with a
/// three-filter chain.
public struct CallFilters {
    public let chain: FilterChains.RouteChain
    public let instances: LoopPluginInstances
    public let clusterIndex: Int
    /// The `mg_call *` of the call.
    public let plugin: PluginCallState
    /// The per-call state of each filter, by chain index (nil when no
    /// filter keeps any): from the loop's free lists, written by `begin`,
    /// freed by `releaseStates` when the call goes.
    private let states: UnsafeMutableBufferPointer<UnsafeMutableRawPointer?>?

    public init(chain: FilterChains.RouteChain, instances: LoopPluginInstances, clusterIndex: Int, plugin: PluginCallState) {
        self.chain = chain
        self.instances = instances
        self.clusterIndex = clusterIndex
        self.plugin = plugin
        if chain.needsCallState {
            let bytes = ThreadCachedMemory.allocate(byteCount: chain.filters.count * MemoryLayout<UnsafeMutableRawPointer?>.stride)
            let states = bytes.bindMemory(to: UnsafeMutableRawPointer?.self)
            states.initialize(repeating: nil)
            self.states = states
        } else {
            states = nil
        }
    }

    /// Once, when the call object goes (after `callDone`, if it ran).
    public func releaseStates() {
        if let states { ThreadCachedMemory.deallocate(UnsafeMutableRawBufferPointer(states)) }
    }

    /// The chain has filters: hooks run.
    public var isEmpty: Bool { chain.filters.isEmpty }

    private func instance(_ link: FilterLink) -> UnsafeMutableRawPointer? {
        instances.instance(link, cluster: clusterIndex)
    }

    private func state(_ i: Int) -> UnsafeMutableRawPointer? {
        states?[i]
    }

    /// call_new of every filter.
    public func begin() {
        guard let states else { return }
        let links = chain.links
        for i in links.indices {
            guard let hook = links[i].hooks.call_new else { continue }
            states[i] = hook(instance(links[i]), plugin.handle)
        }
    }

    /// on_request_headers in chain order, until one answers locally: then
    /// the status it gave (call_local_reply).
    public func requestHeaders() -> GRPCStatus? {
        guard chain.hasRequestHeaderHook else { return nil }
        plugin.inRequestHeaderHooks = true
        defer { plugin.inRequestHeaderHooks = false }
        let links = chain.links
        for i in links.indices {
            guard let hook = links[i].hooks.on_request_headers else { continue }
            if hook(instance(links[i]), state(i), plugin.handle) == MG_LOCAL_REPLY {
                return plugin.localReply ?? GRPCStatus(.unknown, "filter '\(chain.filters[i].image.name)' answered locally without a status")
            }
            // A status or fields for a local reply the hook did not make
            // are dropped (they must not reach a later hook's reply).
            if plugin.localReplyFields != nil || plugin.localReply != nil {
                plugin.localReplyFields = nil
                plugin.localReply = nil
            }
        }
        return nil
    }

    /// Whether any filter has on_attempt_start (the attempt then takes
    /// request headers while they run).
    public var hasAttemptStartHook: Bool { chain.hasAttemptStartHook }

    /// on_attempt_start of every filter that has it, with the attempt's
    /// `mg_attempt *` handle.
    public func runAttemptStartHooks(attempt: OpaquePointer) {
        let links = chain.links
        for i in links.indices {
            guard let hook = links[i].hooks.on_attempt_start else { continue }
            hook(instance(links[i]), state(i), plugin.handle, attempt)
        }
    }

    /// on_response_headers with the upstream's head readable; the fields
    /// the filters add (call_add_response_header) are appended to
    /// `clientHead`, which is lent to the plugin state meanwhile.
    public func runResponseHeaderHooks(upstreamHead: HTTP2HeaderList, clientHead: inout HTTP2HeaderList, from attempt: OpaquePointer) {
        guard chain.hasResponseHeaderHook else { return }
        plugin.responseHeaders = upstreamHead
        swap(&plugin.clientResponseHead, &clientHead)
        let links = chain.links
        for i in links.indices {
            guard let hook = links[i].hooks.on_response_headers else { continue }
            hook(instance(links[i]), state(i), plugin.handle, attempt)
        }
        swap(&plugin.clientResponseHead, &clientHead)
        plugin.responseHeaders = nil
    }

    /// on_attempt_done: the chain's retry or hedging plugin first, since it
    /// sets the decision the others may only lower.
    public func attemptDone(attempt: AttemptID, endpointID: UInt64, started: NIODeadline, _ outcome: AttemptOutcome, responseStarted: Bool,
                     decision: UnsafeMutablePointer<mg_retry_decision>?) {
        guard chain.hasAttemptDoneHook else { return }
        var message = outcome.status.message
        message.withUTF8 { bytes in
            var result = mg_attempt_result(
                size: UInt32(MemoryLayout<mg_attempt_result>.size), attempt: UInt32(attempt),
                grpc_status: Int32(outcome.status.code.rawValue),
                grpc_message: mg_str(ptr: UnsafeRawPointer(bytes.baseAddress)?.assumingMemoryBound(to: CChar.self), len: bytes.count),
                endpoint_id: endpointID,
                latency_us: UInt64(max(0, (NIODeadline.now() - started).nanoseconds / 1000)),
                response_started: responseStarted ? 1 : 0, transport_failure: outcome.transportFailure ? 1 : 0,
                transparent_retry_ok: outcome.refused ? 1 : 0, reserved: 0, pushback_ms: outcome.pushbackMs)
            let links = chain.links
            if let s = chain.schedulerIndex, let hook = links[s].hooks.on_attempt_done {
                hook(instance(links[s]), state(s), plugin.handle, &result, decision)
            }
            for i in links.indices where i != chain.schedulerIndex {
                guard let hook = links[i].hooks.on_attempt_done else { continue }
                hook(instance(links[i]), state(i), plugin.handle, &result, decision)
            }
        }
    }

    /// on_call_done, then call_destroy of every filter (each exactly once).
    public func callDone(status: GRPCStatus, attempts: Int, duration: TimeAmount, requestBytes: Int, responseBytes: Int) {
        guard chain.hasCallDoneHook else { return }
        let links = chain.links
        var message = status.message
        message.withUTF8 { bytes in
            var result = mg_call_result(
                size: UInt32(MemoryLayout<mg_call_result>.size), grpc_status: Int32(status.code.rawValue),
                grpc_message: mg_str(ptr: UnsafeRawPointer(bytes.baseAddress)?.assumingMemoryBound(to: CChar.self), len: bytes.count),
                attempts: UInt32(attempts), duration_us: UInt64(max(0, duration.nanoseconds / 1000)),
                request_bytes: UInt64(requestBytes), response_bytes: UInt64(responseBytes))
            for i in links.indices {
                guard let hook = links[i].hooks.on_call_done else { continue }
                hook(instance(links[i]), state(i), plugin.handle, &result)
            }
        }
        for i in links.indices {
            links[i].hooks.call_destroy?(instance(links[i]), state(i))
            // A plugin may reuse the state for another call (tracing
            // does): nothing of this call may reach it again.
            states?[i] = nil
        }
    }

    /// lb_pick through the chain's balancer, with the cluster's current
    /// view: the chosen endpoint's index, or nil.
    public func pick(attempt: AttemptID, avoiding avoidEndpoint: UInt64, in cluster: ClusterPool) -> Int? {
        let balancer = chain.balancerLink
        var list = cluster.endpointList()
        withUnsafePointer(to: &list) { instances.noteEndpoints(balancer, cluster: clusterIndex, list: $0) }
        var request = mg_pick_request(size: UInt32(MemoryLayout<mg_pick_request>.size), attempt: UInt32(attempt), avoid_endpoint: avoidEndpoint)
        var chosen: UInt32 = 0
        guard balancer.hooks.lb_pick!(instance(balancer), plugin.handle, &request, &list, &chosen) == 0 else { return nil }
        return Int(chosen) < cluster.endpoints.count ? Int(chosen) : nil
    }
}
