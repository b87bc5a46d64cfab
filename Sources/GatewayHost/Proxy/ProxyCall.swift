import FilterABI
import MeshgateGRPC
import MeshgateHTTP2
import NIOCore
import MeshgateCallCore
import MeshgateSupport
import MeshgateRouting
import MeshgateUpstream
import MeshgatePluginHost

/// One RPC in flight through the gateway: the executor of its
/// `CallStateMachine`. It turns the downstream stream's callbacks, its
/// attempts' callbacks, its timers and the plugins' host functions into
/// events, and carries out the actions that come back: the I/O on the two
/// sides, the filter hooks, the timers. Everything runs on the call's event
/// loop.
///
/// Events that arrive while actions are being carried out (a pool that
/// attaches at once, a hook that cancels attempts or schedules one, the
/// answer of a hook) are queued and fed in order after the current batch,
/// so the machine never sees an event in the middle of another.
///
/// Bytes pass through untouched (messages are never reassembled); flow
/// control stays end to end (see `CallStateMachine`).
final class ProxyCall: HTTP2StreamDelegate {
    /// The client's HTTP/2 connection, or a gRPC-Web translation.
    let downstream: any CallClientStream
    let downstreamStream: Int32
    let requestHeaders: HTTP2HeaderList
    let path: String
    let route: RouteTable.Route
    /// The config generation the call started on; it stays alive (with its
    /// plugin instances) until the call and its last attempt have ended.
    let generation: LoopGeneration
    unowned let loop: LoopContext
    private let listenerIndex: Int
    private let deadline: NIODeadline?
    private let started = NIODeadline.now()

    /// What the plugins' host functions see; `mg_call *` points at it.
    let plugin: PluginCallState
    /// The loop's buffers for processing events (held strongly: no
    /// `unowned` load per event).
    private let scratch: CallScratch

    // The state below is touched only on the call's event loop, and never
    // re-entrantly, since every event that arrives while the call is
    // processing one is queued (`handle`): what the release build's
    // module-wide exclusivity opt-out relies on (Package.swift); debug
    // builds check it.
    private let filters: CallFilters
    private var machine: CallStateMachine
    /// While the call processes an event: the depth of the loop's scratch
    /// buffers it uses (its actions, and the events that arrive meanwhile).
    private var scratchDepth = -1
    /// The attempts' I/O side, by id.
    private var attempts = InlineFirstArray<UpstreamAttempt>()
    /// Request bytes kept to send again to later attempts, or to the first
    /// once its stream opens (the machine decides what is kept and
    /// dropped, and counts it), each as counted against the client's
    /// connection and the process (`CallClientStream.holdSlice`).
    private var replay = InlineFirstArray<ByteBuffer>()
    /// How each was counted (plain values: dropped without reference
    /// counting); a chunk the caps had no room for has none (the call then
    /// stops keeping bytes, or ends).
    private var replayHolds = InlineFirstArray<HTTP2HeldSlice>()
    /// The call's share of the client connection's held bytes, counted
    /// at admission (`DownstreamConnection.route`: its head, twice, and
    /// `fixedCostBytes`), given back when the call is done.
    private let admissionBytes: Int
    private var deadlineTimer: Scheduled<Void>?
    private var attemptTimer: Scheduled<Void>?
    /// When the client got (or lost) its final status: the duration counted.
    private var finishedAt: NIODeadline?
    /// The endpoint of the last attempt that got a stream (access log).
    private var lastUpstream: String?
    /// Mirrored copies of the call (ABI 1.3 call_start_shadow), fed the
    /// client's request bytes; nil for nearly every call (one branch per
    /// request event, and no array touched: an empty array's storage would
    /// be retained at each check).
    private var shadows: [ShadowStream]?
    /// The client's request has ended (END_STREAM or trailers).
    private var clientRequestEnded = false

    init(downstream: any CallClientStream, stream: Int32, headers: HTTP2HeaderList, path: String,
         route: RouteTable.Route, generation: LoopGeneration, listenerIndex: Int, timeoutNanos: Int64?, admissionBytes: Int,
         loop: LoopContext) {
        self.downstream = downstream
        self.downstreamStream = stream
        self.requestHeaders = headers
        self.path = path
        self.route = route
        self.listenerIndex = listenerIndex
        self.admissionBytes = admissionBytes
        self.generation = generation
        self.loop = loop
        self.scratch = loop.callScratch
        let chain = generation.plugins.chains[listenerIndex][route.index]
        let deadline: NIODeadline? = timeoutNanos.map { .now() + .nanoseconds($0) }
        self.deadline = deadline
        let plugin = PluginCallState(path: path, requestHeaders: headers, deadlineNanos: deadline.map { $0.uptimeNanoseconds },
                                     collectsLogFields: generation.serving.config.runtime.accessLog)
        self.plugin = plugin
        self.filters = CallFilters(chain: chain, instances: generation.instances, clusterIndex: route.clusterIndex, plugin: plugin)
        self.machine = CallStateMachine(configuration: .init(
            runsHooks: !chain.filters.isEmpty, hasScheduler: chain.scheduler != nil,
            holdsResponseHead: chain.scheduler?.image.isRetry ?? false,
            replayLimit: chain.scheduler != nil ? route.config.replayBufferLimit
                : min(route.config.replayBufferLimit, Self.transparentRetryReplayLimit),
            path: path,
            maxRequestMessageBytes: route.config.maxRequestMessageBytes,
            maxResponseMessageBytes: route.config.maxResponseMessageBytes), attemptStorage: loop.callScratch.takeAttemptTable())
        generation.callStarted()
        plugin.owner = Unmanaged.passUnretained(self).toOpaque()
    }

    deinit {
        filters.releaseStates()
    }

    /// What a call whose chain cannot retry (no retry or hedge filter)
    /// keeps of its request until it commits: enough to send a typical
    /// request again when the upstream refuses its stream (REFUSED_STREAM,
    /// a GOAWAY race: gRFC A6's transparent retry), and no more; a larger
    /// request commits to its attempt once past it.
    static let transparentRetryReplayLimit = 16 << 10
    /// What a call costs the gateway beyond its bytes while it lives: this
    /// object, its attempt, the stream states and nghttp2's streams on both
    /// connections (measured: 1,000 stalled calls grew the process by
    /// about 3.9 MiB). Counted at admission, so that the connection's cap
    /// and the global budget bound calls, not only their bytes.
    static let fixedCostBytes = 4096
    private static let allocator = ByteBufferAllocator()

    func start(requestEnded: Bool) {
        clientRequestEnded = requestEnded
        filters.begin()
        if let deadline {
            deadlineTimer = loop.eventLoop.assumeIsolated().scheduleTask(deadline: deadline) {
                self.deadlineTimer = nil
                self.handle(.deadlineExpired)
            }
        }
        handle(.start(requestEnded: requestEnded))
    }

    // MARK: Events in

    /// Feeds `event` to the state machine and carries out what follows;
    /// while that is under way, queues it instead (in order).
    func handle(_ event: CallEvent) {
        if scratchDepth >= 0 {
            scratch.events[scratchDepth].append(event)
            return
        }
        let depth = scratch.enter()
        scratchDepth = depth
        process(event, depth)
        if !scratch.events[depth].isEmpty {
            var next = 0
            while next < scratch.events[depth].count {
                let queued = scratch.events[depth][next]
                next += 1
                process(queued, depth)
            }
            scratch.events[depth].removeAll(releasingWith: .deadlineExpired)
        }
        scratchDepth = -1
        scratch.leave()
    }

    private func process(_ event: CallEvent, _ depth: Int) {
        // The depth's buffer is taken out while in use (a deeper call may
        // grow the scratch meanwhile).
        var actions = scratch.takeActions(depth)
        machine.handle(event, into: &actions)
        for i in 0..<actions.count { execute(actions[i], for: event) }
        scratch.putBack(actions, depth)
    }

    /// call_start_attempt: false when the call can make no more attempts.
    func filterStartAttempt(afterMs delay: UInt32) -> Bool {
        guard machine.acceptsNewAttempts else { return false }
        handle(.filterScheduledAttempt(afterMs: delay))
        return true
    }

    /// call_cancel_attempts; a `keep` of another call keeps nothing.
    func filterCancelAttempts(keep: UpstreamAttempt?) {
        handle(.filterCancelledAttempts(keep: keep.flatMap { $0.call === self ? $0.id : nil }))
    }

    // MARK: The client's stream (HTTP/2, or through a gRPC-Web translation)

    func http2(_ connection: HTTP2Connection, stream: Int32, didReceiveHeaders headers: HTTP2HeaderList, isTrailers: Bool, endStream: Bool) {
        clientEnded(trailers: headers)
    }

    func http2(_ connection: HTTP2Connection, stream: Int32, didReceiveData data: ByteBuffer) {
        clientData(data)
    }

    func http2(_ connection: HTTP2Connection, didReceiveEndOfStream stream: Int32) {
        clientEnded(trailers: nil)
    }

    func http2(_ connection: HTTP2Connection, stream: Int32, didWriteData bytes: Int) {
        handle(.responseWritten(bytes: bytes))
    }

    func http2(_ connection: HTTP2Connection, stream: Int32, didCloseWith reason: HTTP2StreamCloseReason) {
        clientClosed(cleanly: reason == .finished)
    }

    func clientData(_ data: ByteBuffer) {
        if let shadows { for shadow in shadows { shadow.forward(data) } }
        handle(.requestData(data))
    }

    func clientEnded(trailers: HTTP2HeaderList?) {
        clientRequestEnded = true
        var trailers = trailers
        // Request trailers: rare in gRPC, relayed all the same, but without
        // a client's own x-forwarded-client-cert (only the gateway vouches).
        trailers?.removeAll(named: "x-forwarded-client-cert")
        if let shadows { for shadow in shadows { shadow.endRequest(trailers: trailers) } }
        handle(.requestEnd(trailers: trailers))
    }

    /// The client took `bytes` of response DATA.
    func clientWrote(bytes: Int) {
        handle(.responseWritten(bytes: bytes))
    }

    func clientClosed(cleanly: Bool) {
        if let shadows { for shadow in shadows { shadow.clientClosed() } }
        handle(.downstreamClosed(cleanly: cleanly))
    }

    // MARK: Shadows (traffic mirroring)

    /// call_start_shadow: a copy of the call to `clusterName`, on an
    /// endpoint of its own round robin; false when the cluster is unknown
    /// or has no usable endpoint.
    func startShadow(cluster clusterName: String, timeoutMs: UInt32, bufferLimit: UInt32,
                     done: ShadowStream.Done?, user: UnsafeMutableRawPointer?) -> Bool {
        guard let cluster = generation.clusters.first(where: { $0.name == clusterName }),
              let chosen = cluster.nextShadowEndpoint() else { return false }
        let pool = cluster.endpoints[chosen]
        let shadow = ShadowStream(cluster: clusterName, pool: pool, head: shadowHead(scheme: pool.scheme),
                                  requestEnded: clientRequestEnded, generation: generation,
                                  bufferLimit: bufferLimit == 0 ? 64 * 1024 : Int(bufferLimit), done: done, user: user)
        if shadows == nil { shadows = [shadow] } else { shadows!.append(shadow) }
        shadow.start(timeout: .milliseconds(Int64(timeoutMs == 0 ? 10_000 : timeoutMs)), on: loop)
        return true
    }

    /// The client's request head for a shadow: hop-by-hop fields dropped,
    /// the shadow endpoint's `:scheme`, `:authority` suffixed "-shadow"
    /// (Envoy's marker), and the call's remaining deadline.
    private func shadowHead(scheme: String) -> HTTP2HeaderList {
        var head = HTTP2HeaderList()
        head.reserveCapacity(requestHeaders.count + 1)
        var scheme = scheme
        requestHeaders.forEachField { name, value in
            switch UpstreamRequestField.treatment(of: name) {
            case .drop: break
            case .scheme: scheme.withUTF8 { head.append(name: name, value: UnsafeRawBufferPointer($0)) }
            case .pass:
                if name.elementsEqual(":authority".utf8) {
                    head.append(":authority", String(decoding: value, as: UTF8.self) + "-shadow")
                } else {
                    head.append(name: name, value: value)
                }
            }
            return true
        }
        if let deadline {
            head.append("grpc-timeout", GRPCTimeout.format(nanoseconds: max((deadline - .now()).nanoseconds, 1)))
        }
        return head
    }

    // MARK: Actions out

    private func execute(_ action: CallAction, for event: CallEvent) {
        switch action {
        case .runRequestHeaderHooks:
            handle(.requestHeaderHooksReturned(rejection: filters.requestHeaders()))
        case .place(let id, let kind, let avoid):
            place(id, kind: kind, avoiding: avoid)
        case .abandonWait(let id):
            attempts[id].abandonWait()
        case .runAttemptStartHooks(let id):
            let attempt = attempts[id]
            attempt.extraRequestHeaders.removeAll(keepingCapacity: true)
            if filters.hasAttemptStartHook {
                attempt.acceptsRequestHeaders = true
                filters.runAttemptStartHooks(attempt: attempt.handle)
                attempt.acceptsRequestHeaders = false
            }
            handle(.attemptStartHooksReturned(id))
        case .openStream(let id, let endStream):
            openStream(id, endStream: endStream)
        case .forwardRequestData(let id):
            guard let data = event.bytes(for: action) else { return assertionFailure("\(action) for \(event)") }
            attempts[id].send(data)
        case .keepForReplay(let awaitingStream):
            guard let data = event.bytes(for: action) else { return assertionFailure("\(action) for \(event)") }
            keepForReplay(data, awaitingStream: awaitingStream)
        case .replay(let id):
            for chunk in replay { attempts[id].send(chunk) }
        case .dropReplay:
            dropReplay()
        case .sendRequestEnd(let id):
            attempts[id].sendEnd(trailers: machine.request.trailers)
        case .resetStream(let id, let code):
            attempts[id].reset(code)
        case .creditUpstream(let id, let bytes):
            attempts[id].credit(bytes: bytes)
        case .reportAttempt(let id, let responseStarted, let decides):
            report(id, responseStarted: responseStarted, decides: decides)
        case .scheduleAttempt(let delay):
            attemptTimer?.cancel()
            attemptTimer = loop.eventLoop.assumeIsolated().scheduleTask(in: .milliseconds(Int64(delay))) {
                self.attemptTimer = nil
                self.handle(.scheduledAttemptDue)
            }
        case .cancelScheduledAttempt:
            attemptTimer?.cancel()
            attemptTimer = nil
        case .creditClient(let bytes):
            downstream.consume(stream: downstreamStream, bytes: bytes)
        case .sendResponseHead(let id, let source, let endStream):
            let head: HTTP2HeaderList
            switch source {
            case .event: head = Self.headers(of: event, for: action)
            case .held: head = machine.attempts[id].heldHead ?? []
            case .outcomeHead: head = machine.attempts[id].outcome?.head ?? []
            case .outcomeTrailers: head = machine.attempts[id].outcome?.trailers ?? []
            }
            sendResponseHead(head, from: attempts[id], endStream: endStream)
        case .forwardResponseData:
            guard let data = event.bytes(for: action) else { return assertionFailure("\(action) for \(event)") }
            downstream.send(data: data, stream: downstreamStream)
        case .sendResponseEnd(let source):
            switch source {
            case .event: downstream.sendEnd(stream: downstreamStream, trailers: Self.headers(of: event, for: action))
            case .outcome(let id): downstream.sendEnd(stream: downstreamStream, trailers: machine.attempts[id].outcome?.trailers)
            case .none: downstream.sendEnd(stream: downstreamStream, trailers: nil)
            }
        case .sendLocalStatus(let responseStarted):
            let status = machine.phase.finalStatus ?? GRPCStatus(.unknown, "")
            if responseStarted {
                downstream.sendEnd(stream: downstreamStream, trailers: GRPCLocalReply.trailers(status))
            } else {
                var head = GRPCLocalReply.trailersOnly(status)
                // A filter's own fields on its local reply (ABI 1.3).
                if let extra = plugin.localReplyFields { head.append(contentsOf: extra) }
                downstream.sendResponseHeaders(stream: downstreamStream, headers: head, endStream: true)
            }
        case .discardQueuedResponse:
            _ = downstream.discardQueuedData(stream: downstreamStream)
        case .finished:
            finishedAt = .now()
            deadlineTimer?.cancel()
            deadlineTimer = nil
        case .callDone(let attemptCount):
            callDone(status: machine.phase.finalStatus ?? GRPCStatus(.cancelled, ""), attempts: attemptCount)
        }
    }

    /// Keeps `data` for later attempts, counted against the client's
    /// connection and the process by what it costs: a slice of a socket
    /// read keeps the read's whole buffer alive, so the buffer is counted
    /// (once for all the slices kept of it), not the slice's bytes —
    /// without a copy per call. Bytes for replay only are droppable
    /// (without room the call stops keeping bytes); bytes no attempt took
    /// yet are received bytes the call cannot drop (without room it ends).
    private func keepForReplay(_ data: ByteBuffer, awaitingStream: Bool) {
        // Bytes waiting for a stream (rare once pools are warm: no
        // connection has room yet) get storage of their own: counted by
        // their size, they must not keep a whole read alive meanwhile.
        let kept = awaitingStream ? data.unpinned(allocator: Self.allocator) : data
        replay.append(kept)
        if let held = downstream.holdSlice(kept, kind: awaitingStream ? .received : .droppable) {
            replayHolds.append(held)
        } else {
            LimitCounters.shared.heldBytesRefused(awaitingStream ? .received : .replay)
            handle(.keptBytesRefused(awaitingStream: awaitingStream))
        }
    }

    private func dropReplay() {
        replay.removeAll()
        guard !replayHolds.isEmpty else { return }
        // By index: an iterator would copy (and retain) the array.
        for i in replayHolds.indices { downstream.release(replayHolds[i]) }
        replayHolds.removeAll()
    }

    /// The headers an `attemptHeaders` event brought, for an action that
    /// names them (any other event is the machine's bug: asserted).
    private static func headers(of event: CallEvent, for action: CallAction) -> HTTP2HeaderList {
        guard let headers = event.attemptHeaderList else {
            assertionFailure("\(action) names the headers of \(event)")
            return []
        }
        return headers
    }

    /// Picks an endpoint through the balancer and queues the attempt on it.
    private func place(_ id: AttemptID, kind: AttemptKind, avoiding avoid: UInt64) {
        if id == attempts.count {
            loop.metrics.attemptStarted(cluster: route.config.cluster, kind: kind)
            attempts.append(UpstreamAttempt(call: self, id: id))
        }
        let cluster = generation.clusters[route.clusterIndex]
        guard let chosen = filters.pick(attempt: id, avoiding: avoid, in: cluster) else {
            return handle(.pickFailed(id, status: pickFailure(cluster)))
        }
        let pool = cluster.endpoints[chosen]
        let endpointID = cluster.endpointID(chosen)
        handle(.picked(id, endpointID: endpointID, address: pool.address))
        attempts[id].place(on: pool, index: chosen, endpointID: endpointID)
    }

    /// Why no endpoint could be picked: the balancer's own reason
    /// (call_local_reply in lb_pick), or the cluster's state. The client
    /// gets the kind of failure, not the cluster's name, its discovery
    /// source or its endpoints' addresses and connect errors: those are
    /// config and topology, in the log (`upstream connect failed`, and
    /// this debug line) and `/clusters`.
    private func pickFailure(_ cluster: ClusterPool) -> GRPCStatus {
        if let reply = plugin.localReply { return reply }
        let status: GRPCStatus
        guard !cluster.endpoints.isEmpty else {
            status = GRPCStatus(.unavailable, cluster.config.discovery == nil
                ? "the route's cluster has no endpoints" : "the route's cluster has no endpoints: its discovery source has found none yet")
            Log.debug("no endpoint to pick", ["cluster": cluster.name, "reason": "no endpoints", "discovery": cluster.config.discovery.map { "\($0)" } ?? "-"])
            return status
        }
        guard cluster.hasHealthyEndpoint else {
            Log.debug("no endpoint to pick", ["cluster": cluster.name, "reason": "none healthy"])
            return GRPCStatus(.unavailable, "no healthy upstream: every endpoint of the route's cluster fails its health checks or is ejected")
        }
        if Log.minimumLevel.rawValue <= Log.Level.debug.rawValue {
            let detail = cluster.endpoints.compactMap { ep in ep.lastConnectError.map { "\(ep.address): \($0)" } }.joined(separator: "; ")
            Log.debug("no endpoint to pick", ["cluster": cluster.name, "reason": "none reachable", "connect_errors": detail])
        }
        return GRPCStatus(.unavailable, "no upstream of the route's cluster is reachable (connect failed; the gateway's log names the endpoints and errors)")
    }

    /// The client's "ip:port" ("[v6]:port"), for call_peer_address.
    /// The call whose plugin state `call` (an `mg_call *`) is, while it runs.
    static func owner(of call: OpaquePointer?) -> ProxyCall? {
        PluginCallState.from(call).owner.map { Unmanaged<ProxyCall>.fromOpaque($0).takeUnretainedValue() }
    }

    var peerAddressText: String? {
        guard let address = downstream.remoteAddress, let ip = address.ipAddress, let port = address.port else { return nil }
        if case .v6 = address { return "[\(ip)]:\(port)" }
        return "\(ip):\(port)"
    }

    /// Label `key` of the attempt's endpoint (ABI 1.2), from the generation
    /// the call runs in.
    func endpointMetadata(_ attempt: UpstreamAttempt, key: mg_str) -> mg_str? {
        guard attempt.pool != nil else { return nil }
        return generation.clusters[route.clusterIndex].metadataValue(endpoint: attempt.endpointIndex, key: key)
    }

    private func openStream(_ id: AttemptID, endStream: Bool) {
        let attempt = attempts[id]
        lastUpstream = attempt.address
        var headers = scratch.requestHead.take()
        headers.reserveCapacity(requestHeaders.count + 2 + attempt.extraRequestHeaders.count)
        var scheme = attempt.scheme
        let extras = attempt.extraRequestHeaders
        // The client's fields pass as bytes; hop-by-hop ones, the deadline
        // and the attempt count are the gateway's to set, and a field a
        // filter sets replaces the client's and the gateway's.
        requestHeaders.forEachField { name, value in
            switch UpstreamRequestField.treatment(of: name) {
            case .drop:
                break
            case .scheme:
                scheme.withUTF8 { headers.append(name: name, value: UnsafeRawBufferPointer($0)) }
            case .pass:
                if extras.isEmpty || !UpstreamRequestField.list(extras, names: name) {
                    headers.append(name: name, value: value)
                }
            }
            return true
        }
        if let deadline, !extras.contains("grpc-timeout") {
            let remaining = (deadline - .now()).nanoseconds
            headers.append("grpc-timeout", GRPCTimeout.format(nanoseconds: max(remaining, 1)))
        }
        if id > 0, !extras.contains("grpc-previous-rpc-attempts") {
            headers.append("grpc-previous-rpc-attempts", String(id))
        }
        headers.append(contentsOf: extras)
        let opened = attempt.openStream(headers: headers, endStream: endStream)
        scratch.requestHead.putBack(&headers)
        handle(opened ? .streamOpened(id) : .streamNotOpened(id))
    }

    /// Counts the attempt's result on its endpoint and runs on_attempt_done;
    /// with `decides`, the chain's decision goes back to the machine.
    private func report(_ id: AttemptID, responseStarted: Bool, decides: Bool) {
        let attempt = attempts[id]
        guard let outcome = machine.attempts[id].outcome else { return }
        attempt.pool?.recordResult(outcome.transportFailure ? .unavailable : outcome.status.code)
        guard !filters.isEmpty else {
            if decides { handle(.retryDecided(id, .no)) }
            return
        }
        var decision = mg_retry_decision(retry: UInt32(MG_RETRY_NO), delay_ms: 0)
        withUnsafeMutablePointer(to: &decision) { pointer in
            filters.attemptDone(attempt: attempt.id, endpointID: attempt.endpointID, started: attempt.started, outcome,
                                responseStarted: responseStarted, decision: decides ? pointer : nil)
        }
        guard decides else { return }
        switch decision.retry {
        case UInt32(MG_RETRY_AFTER):
            let withinDeadline = deadline.map { $0 - .now() > .milliseconds(Int64(decision.delay_ms)) } ?? true
            handle(.retryDecided(id, .retry(afterMs: decision.delay_ms, withinDeadline: withinDeadline)))
        case UInt32(MG_RETRY_FINISH):
            handle(.retryDecided(id, .finish))
        default:
            handle(.retryDecided(id, .no))
        }
    }

    private func sendResponseHead(_ headers: HTTP2HeaderList, from attempt: UpstreamAttempt, endStream: Bool) {
        guard !filters.isEmpty else {
            downstream.sendResponseHeaders(stream: downstreamStream, headers: headers, endStream: endStream)
            return
        }
        // The filters may add fields: the client's head is built in the
        // loop's scratch list (nghttp2 copies it on submit), so neither
        // the merge nor the filters' appends allocate once warm.
        var head = scratch.responseHead.take()
        head.append(contentsOf: headers)
        filters.runResponseHeaderHooks(upstreamHead: headers, clientHead: &head, from: attempt.handle)
        downstream.sendResponseHeaders(stream: downstreamStream, headers: head, endStream: endStream)
        scratch.responseHead.putBack(&head)
    }

    /// The client's stream and every attempt have ended: filters learn the
    /// outcome, their per-call state is destroyed, the call is counted and
    /// logged, and the generation may retire.
    private func callDone(status: GRPCStatus, attempts attemptCount: Int) {
        let end = finishedAt ?? .now()
        let seconds = Double((end - started).nanoseconds) / 1e9
        loop.metrics.callEnded(path: path, cluster: route.config.cluster, code: status.code, seconds: seconds, endNanos: end.uptimeNanoseconds)
        attemptTimer?.cancel()
        attemptTimer = nil
        deadlineTimer?.cancel()
        deadlineTimer = nil
        if !filters.isEmpty {
            filters.callDone(status: status, attempts: attemptCount, duration: .now() - started,
                             requestBytes: machine.request.received, responseBytes: machine.responseBytesWritten)
        }
        if generation.serving.config.runtime.accessLog {
            let upstream = machine.phase.committedAttempt.map { attempts[$0].address } ?? lastUpstream
            loop.accessLog.write(AccessLog.Entry(
                listener: generation.serving.listeners[listenerIndex].config.name, path: path, cluster: route.config.cluster,
                status: status, durationMicros: Int64(seconds * 1_000_000), upstream: upstream, attempts: attemptCount,
                requestBytes: machine.request.received, responseBytes: machine.responseBytesWritten, clientIdentity: requestHeaders["x-forwarded-client-cert"], fields: plugin.logFields))
        }
        plugin.owner = nil
        dropReplay()
        if admissionBytes > 0 { downstream.releaseHeldBytes(admissionBytes, kind: .required) }
        // Shadows go on by themselves (they hold the generation).
        shadows = nil
        // The attempts hold their call: let both go.
        attempts.removeAll()
        scratch.recycle(attemptTable: machine.takeAttemptStorage())
        generation.callEnded()
    }
}
