import FilterABI
import MeshgateGRPC
import MeshgateHTTP2
import NIOCore

/// One RPC in flight through the gateway: a downstream stream and the
/// upstream attempts made for it, all on the same event loop.
///
/// Bytes pass through untouched (messages are never reassembled). Request
/// bytes are kept in a replay buffer until the call commits to one attempt
/// (or the buffer passes its limit), so a retry, a hedge or a transparent
/// retry of a refused stream can send them again. Flow control stays end to
/// end: the client gets window credit back only as the most advanced attempt
/// hands its bytes to the upstream, and response bytes are credited to the
/// upstream only as the client takes them.
final class ProxyCall: HTTP2StreamDelegate {
    let downstream: HTTP2Connection
    let downstreamStream: Int32
    let requestHeaders: HTTP2HeaderList
    let path: String
    let route: RouteTable.Route
    let chain: PluginRuntime.RouteChain
    /// The config generation the call started on; it stays alive (with its
    /// plugin instances) until the call and its last attempt have ended.
    let generation: LoopGeneration
    unowned let loop: LoopContext
    private let deadline: NIODeadline?
    private var deadlineTimer: Scheduled<Void>?
    private let started = NIODeadline.now()
    /// When the client got (or lost) its final status: the duration counted.
    private var finishedAt: NIODeadline?
    private let listenerIndex: Int
    /// The endpoint of the last attempt that got a connection (access log).
    private var lastUpstream: String?

    /// What the plugins' host functions see; `mg_call *` points at it.
    let plugin: PluginCallState
    private var filterStates: [UnsafeMutableRawPointer?] = []
    private var finalStatus: GRPCStatus?
    private var callDone = false

    // Attempts
    private var attempts: [UpstreamAttempt] = []
    private var committed: UpstreamAttempt?
    private var attemptCount = 0
    private var transparentRetryUsed = false
    private var scheduledAttempt: Scheduled<Void>?
    private var avoidEndpoint: UInt64 = 0
    /// The result to end with once no attempt is left (MG_RETRY_NO while
    /// others were still running).
    private var pendingOutcome: (UpstreamAttempt, AttemptOutcome)?

    // Request side
    private var replay: [ByteBuffer] = []
    private var replayBytes = 0
    private var canReplay = true
    private var receivedBytes = 0
    private var creditedBytes = 0
    private var requestEnded = false
    private var requestTrailers: HTTP2HeaderList?

    private var responseStarted = false
    /// The client has its final status (or is gone): nothing more is relayed.
    private var finished = false
    private var downstreamClosed = false

    init(downstream: HTTP2Connection, stream: Int32, headers: HTTP2HeaderList, path: String,
         route: RouteTable.Route, generation: LoopGeneration, listenerIndex: Int, timeoutNanos: Int64?, loop: LoopContext) {
        self.downstream = downstream
        self.downstreamStream = stream
        self.requestHeaders = headers
        self.path = path
        self.route = route
        self.listenerIndex = listenerIndex
        self.generation = generation
        self.chain = generation.plugins.chains[listenerIndex][route.index]
        self.loop = loop
        generation.callStarted()
        let deadline: NIODeadline? = timeoutNanos.map { .now() + .nanoseconds($0) }
        self.deadline = deadline
        self.plugin = PluginCallState(path: path, requestHeaders: headers, deadlineNanos: deadline.map { $0.uptimeNanoseconds },
                                      collectsLogFields: generation.runtime.config.runtime.accessLog)
        plugin.proxy = self
    }

    private func instance(_ filter: FilterHandle) -> UnsafeMutableRawPointer? {
        generation.instances.instance(filter, cluster: route.clusterIndex)
    }

    /// The per-call state of filter `i` (nil when no filter of the chain keeps any).
    private func state(_ i: Int) -> UnsafeMutableRawPointer? {
        i < filterStates.count ? filterStates[i] : nil
    }

    func start(requestEnded: Bool) {
        self.requestEnded = requestEnded
        if !chain.filters.isEmpty {
            if chain.needsCallState {
                filterStates.reserveCapacity(chain.filters.count)
                for filter in chain.filters {
                    filterStates.append(filter.hooks.call_new?(instance(filter), plugin.handle))
                }
            }
            for (i, filter) in chain.filters.enumerated() {
                guard let hook = filter.hooks.on_request_headers else { continue }
                if hook(instance(filter), state(i), plugin.handle) == MG_LOCAL_REPLY {
                    fail(plugin.localReply ?? GRPCStatus(.unknown, "filter '\(filter.image.name)' answered locally without a status"))
                    return
                }
            }
        }
        if let deadline {
            deadlineTimer = loop.eventLoop.assumeIsolated().scheduleTask(deadline: deadline) {
                self.deadlineExpired()
            }
        }
        guard !finished else { return }
        startAttempt(.first)
    }

    // MARK: Attempts

    private func startAttempt(_ kind: LoopMetrics.AttemptKind) {
        guard !finished else { return }
        loop.metrics.attemptStarted(cluster: route.config.cluster, kind: kind)
        let attempt = UpstreamAttempt(call: self, number: attemptCount)
        attemptCount += 1
        attempts.append(attempt)
        place(attempt)
    }

    /// Picks an endpoint through the balancer and queues the attempt on it.
    private func place(_ attempt: UpstreamAttempt) {
        let cluster = generation.clusters[route.clusterIndex]
        let balancer = chain.balancer
        var list = cluster.endpointList()
        withUnsafePointer(to: &list) { generation.instances.noteEndpoints(balancer, cluster: route.clusterIndex, list: $0) }
        var request = mg_pick_request(size: UInt32(MemoryLayout<mg_pick_request>.size), attempt: UInt32(attempt.number), avoid_endpoint: avoidEndpoint)
        var chosen: UInt32 = 0
        let verdict = balancer.hooks.lb_pick!(instance(balancer), plugin.handle, &request, &list, &chosen)
        guard verdict == 0, Int(chosen) < cluster.endpoints.count else {
            drop(attempt)
            guard !finished, attempts.isEmpty, scheduledAttempt == nil else { return }
            if let (last, outcome) = pendingOutcome { return finish(with: last, outcome) }
            // The balancer said why it found none (call_local_reply in lb_pick).
            if verdict != 0, let reply = plugin.localReply { return fail(reply) }
            guard !cluster.endpoints.isEmpty else {
                let why = cluster.config.discovery.map { "its discovery source (\($0)) has found none yet" } ?? "none are configured"
                fail(GRPCStatus(.unavailable, "cluster '\(cluster.name)' has no endpoints: \(why)"))
                return
            }
            guard cluster.hasHealthyEndpoint else {
                fail(GRPCStatus(.unavailable, "no healthy upstream in cluster '\(cluster.name)': every endpoint fails its health checks or is ejected"))
                return
            }
            let detail = cluster.endpoints.compactMap { ep in ep.lastConnectError.map { "\(ep.address): \($0)" } }.joined(separator: "; ")
            fail(GRPCStatus(.unavailable, "no upstream of cluster '\(cluster.name)' is reachable" + (detail.isEmpty ? "" : " (\(detail))")))
            return
        }
        let picked = cluster.endpoints[Int(chosen)]
        attempt.pool = picked
        attempt.endpointID = cluster.endpointID(Int(chosen))
        attempt.endpointIndex = Int(chosen)
        picked.acquire(for: attempt)
    }

    /// Label `key` of the attempt's endpoint (ABI 1.2), from the generation
    /// the call runs in.
    func endpointMetadata(_ attempt: UpstreamAttempt, key: mg_str) -> mg_str? {
        guard attempt.pool != nil else { return nil }
        return generation.clusters[route.clusterIndex].metadataValue(endpoint: attempt.endpointIndex, key: key)
    }

    /// The endpoint could not connect; nothing was sent, so try another.
    func attemptConnectFailed(_ attempt: UpstreamAttempt) {
        guard !finished, !attempt.cancelled else { return drop(attempt) }
        avoidEndpoint = attempt.endpointID
        attempt.pool = nil
        place(attempt)
    }

    /// A connection has room for the attempt: open the upstream stream.
    func attemptAttached(_ attempt: UpstreamAttempt, _ connection: UpstreamConnection) {
        lastUpstream = attempt.addressText
        guard !finished, !attempt.cancelled, let http2 = connection.http2 else { return drop(attempt) }
        plugin.attemptHeaders = []
        if !chain.filters.isEmpty {
            plugin.inAttemptStart = true
            for (i, filter) in chain.filters.enumerated() {
                filter.hooks.on_attempt_start?(instance(filter), state(i), plugin.handle, attempt.handle)
            }
            plugin.inAttemptStart = false
        }
        attempt.didStart = true
        if attempt.cancelled {
            // A hook cancelled this very attempt: it is owed its report.
            report(attempt, AttemptOutcome(status: GRPCStatus(.cancelled, "attempt cancelled by a filter")))
            return drop(attempt)
        }
        var headers = HTTP2HeaderList()
        headers.reserveCapacity(requestHeaders.count + 2)
        for (name, value) in requestHeaders {
            switch name {
            case "grpc-timeout", "grpc-previous-rpc-attempts", "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade":
                continue
            case ":scheme":
                headers.append(name, attempt.pool?.scheme ?? "http")
            default:
                headers.append(name, value)
            }
        }
        if let deadline {
            let remaining = (deadline - .now()).nanoseconds
            headers.append("grpc-timeout", GRPCTimeout.format(nanoseconds: max(remaining, 1)))
        }
        if attempt.number > 0 {
            headers.append("grpc-previous-rpc-attempts", String(attempt.number))
        }
        for field in plugin.attemptHeaders {
            headers.removeAll(named: field.name)
            headers.append(field.name, field.value)
        }
        let endNow = requestEnded && replay.isEmpty && requestTrailers == nil
        guard let id = http2.openStream(headers: headers, endStream: endNow, delegate: attempt) else {
            // Nothing left the gateway (the connection is going away or out
            // of stream ids): like REFUSED_STREAM, it may be retried
            // transparently, once, without a retry policy.
            var outcome = AttemptOutcome(status: GRPCStatus(.unavailable, "upstream \(attempt.addressText) could not take a new stream (its connection is closing)"),
                                         transportFailure: true)
            outcome.refused = true
            attempt.outcome = outcome
            attemptEnded(attempt, outcome)
            drop(attempt)
            return
        }
        attempt.connection = http2
        attempt.stream = id
        attempt.isOpen = true
        attempt.pool?.inFlight += 1
        for chunk in replay { http2.send(data: chunk, stream: id) }
        if !canReplay {
            // Past the replay limit only this attempt has every byte: the
            // others still waiting would get a truncated request.
            for other in attempts where other !== attempt && !other.isOpen { cancel(other) }
            replay.removeAll()
        }
        if requestEnded && !endNow { http2.sendEnd(stream: id, trailers: requestTrailers) }
    }

    /// Forgets an attempt that never opened a stream (or whose stream is gone).
    private func drop(_ attempt: UpstreamAttempt) {
        if let i = attempts.firstIndex(where: { $0 === attempt }) { attempts.remove(at: i) }
        finishIfNothingRuns()
        if attempt.cancelled { failIfEveryAttemptWasCancelled() }
        endCallIfDone()
    }

    /// A filter cancelled every attempt (call_cancel_attempts(NULL) before
    /// any committed) and scheduled none: nothing would ever answer the
    /// client, so the call ends now instead of at its deadline.
    private func failIfEveryAttemptWasCancelled() {
        guard !finished, committed == nil, scheduledAttempt == nil, pendingOutcome == nil, !hasRunningAttempt else { return }
        fail(GRPCStatus(.cancelled, "a filter cancelled every attempt of the call and scheduled none"))
    }

    /// Attempts still waiting for their status (not ended, not cancelled).
    private var hasRunningAttempt: Bool { attempts.contains { !$0.cancelled && $0.outcome == nil } }

    /// No attempt runs and none is scheduled, yet the client has no status:
    /// end with the last result an attempt left.
    private func finishIfNothingRuns() {
        guard !finished, !hasRunningAttempt, scheduledAttempt == nil, committed == nil else { return }
        if let (last, outcome) = pendingOutcome { finish(with: last, outcome) }
    }

    /// Starts another attempt after `delayMs` (replacing a scheduled one).
    /// False when the call can no longer make attempts.
    @discardableResult
    func scheduleAttempt(afterMs delayMs: UInt32, kind: LoopMetrics.AttemptKind = .hedge) -> Bool {
        guard !finished, committed == nil, canReplay else { return false }
        scheduledAttempt?.cancel()
        scheduledAttempt = loop.eventLoop.assumeIsolated().scheduleTask(in: .milliseconds(Int64(delayMs))) {
            self.scheduledAttempt = nil
            self.startAttempt(kind)
        }
        return true
    }

    /// Cancels every attempt but `keep`, and the scheduled one.
    func cancelAttempts(except keep: UpstreamAttempt?) {
        scheduledAttempt?.cancel()
        scheduledAttempt = nil
        for attempt in attempts where attempt !== keep { cancel(attempt) }
    }

    private func cancel(_ attempt: UpstreamAttempt) {
        guard !attempt.cancelled else { return }
        attempt.cancelled = true
        if attempt.isOpen, let connection = attempt.connection {
            attempt.isOpen = false
            connection.reset(stream: attempt.stream, errorCode: 0x8)  // CANCEL
        } else if attempt.connection == nil {
            attempt.pool?.cancelWait(attempt)
            drop(attempt)
        }
    }

    // MARK: Request side (downstream stream events)

    func http2(_ connection: HTTP2Connection, stream: Int32, didReceiveHeaders headers: HTTP2HeaderList, isTrailers: Bool, endStream: Bool) {
        // Request trailers: rare in gRPC, relayed all the same, but without
        // a client's own x-forwarded-client-cert (only the gateway vouches).
        var headers = headers
        headers.removeAll(named: "x-forwarded-client-cert")
        requestTrailers = headers
        endOfRequest()
    }

    func http2(_ connection: HTTP2Connection, stream: Int32, didReceiveData data: ByteBuffer) {
        receivedBytes += data.readableBytes
        if finished {
            creditClient()
            return
        }
        var sent = false
        for attempt in attempts where attempt.isOpen {
            attempt.connection?.send(data: data, stream: attempt.stream)
            sent = true
        }
        if canReplay || !sent {
            replay.append(data)
            replayBytes += data.readableBytes
            if canReplay && replayBytes > route.config.replayBufferLimit { stopReplaying() }
        }
    }

    func http2(_ connection: HTTP2Connection, didReceiveEndOfStream stream: Int32) {
        endOfRequest()
    }

    /// The downstream took response bytes: the committed upstream gets that
    /// much window back.
    func http2(_ connection: HTTP2Connection, stream: Int32, didWriteData bytes: Int) {
        if let committed, let upstream = committed.connection {
            upstream.consume(stream: committed.stream, bytes: bytes)
        }
    }

    func http2(_ connection: HTTP2Connection, stream: Int32, didCloseWith reason: HTTP2StreamCloseReason) {
        downstreamClosed = true
        let cancelledByClient = !finished || reason != .finished
        if cancelledByClient && finalStatus == nil {
            finalStatus = GRPCStatus(.cancelled, "the client cancelled the call")
            finishedAt = .now()
        }
        finished = true
        cancelTimer()
        // The client cancelled or vanished: the upstream must know.
        if cancelledByClient { cancelAttempts(except: nil) }
        endCallIfDone()
    }

    private func endOfRequest() {
        guard !requestEnded else { return }
        requestEnded = true
        for attempt in attempts where attempt.isOpen {
            attempt.connection?.sendEnd(stream: attempt.stream, trailers: requestTrailers)
        }
    }

    /// The request outgrew the replay buffer: the call commits (gRFC A6).
    /// No new attempt can start, and of the open ones only the one furthest
    /// along goes on; the others (hedges, and attempts still waiting for a
    /// connection) are cancelled at once, so no upstream's backlog grows
    /// past its window and the client's credit follows one attempt.
    private func stopReplaying() {
        canReplay = false
        scheduledAttempt?.cancel()
        scheduledAttempt = nil
        if let keep = attempts.filter({ $0.isOpen && !$0.cancelled }).max(by: { $0.written < $1.written }) {
            for attempt in attempts where attempt !== keep { cancel(attempt) }
            replay.removeAll()
        } else if attempts.isEmpty, !finished, let (last, outcome) = pendingOutcome {
            // A retry was waiting for its backoff: there is nothing to retry with now.
            finish(with: last, outcome)
        }
    }

    func attemptWroteRequest(_ attempt: UpstreamAttempt) {
        if attempt.written > creditedBytes {
            downstream.consume(stream: downstreamStream, bytes: attempt.written - creditedBytes)
            creditedBytes = attempt.written
        }
    }

    /// After the end: whatever the client sent is read and dropped, and its
    /// window given back.
    private func creditClient() {
        if receivedBytes > creditedBytes {
            downstream.consume(stream: downstreamStream, bytes: receivedBytes - creditedBytes)
            creditedBytes = receivedBytes
        }
    }

    // MARK: Response side (upstream stream events)

    /// Hedging, or no retry plugin: the first response head commits.
    /// A retry plugin: the head waits for the first message, so that a
    /// status in trailers can still be retried.
    private var holdsResponseHead: Bool { chain.scheduler?.image.isRetry ?? false }

    func attemptReceivedHeaders(_ attempt: UpstreamAttempt, _ headers: HTTP2HeaderList, isTrailers: Bool, endStream: Bool) {
        guard !finished, !attempt.cancelled else { return }
        if attempt === committed {
            // Trailers of the committed attempt: the call's status.
            attempt.outcome = AttemptOutcome.fromStatusHeaders(headers, head: nil, trailersOnly: false)
            downstream.sendEnd(stream: downstreamStream, trailers: headers)
            complete(status: headers)
            return
        }
        if !isTrailers && !endStream {
            if holdsResponseHead {
                attempt.heldHead = headers
            } else {
                commit(attempt, head: headers)
            }
            return
        }
        // Trailers-Only, or trailers after a held head: the attempt ended
        // before the call committed to it.
        let outcome = AttemptOutcome.fromStatusHeaders(headers, head: isTrailers ? attempt.heldHead : nil, trailersOnly: !isTrailers)
        attempt.outcome = outcome
        attemptEnded(attempt, outcome)
    }

    func attemptReceivedData(_ attempt: UpstreamAttempt, _ data: ByteBuffer) {
        if attempt !== committed, !finished, !attempt.cancelled, let head = attempt.heldHead {
            commit(attempt, head: head)
        }
        if attempt === committed && !finished && !downstreamClosed {
            downstream.send(data: data, stream: downstreamStream)
        } else {
            attempt.connection?.consume(stream: attempt.stream, bytes: data.readableBytes)
        }
    }

    func attemptReceivedEnd(_ attempt: UpstreamAttempt) {
        guard attempt === committed, !finished else { return }
        // END_STREAM on DATA without trailers: not valid gRPC, but relayed as
        // it is; the client reports the missing status itself.
        downstream.sendEnd(stream: downstreamStream, trailers: nil)
        complete(status: [])
    }

    /// The call commits to `attempt`: the others are cancelled, the replay
    /// buffer goes, and the response head is sent on.
    private func commit(_ attempt: UpstreamAttempt, head: HTTP2HeaderList) {
        committed = attempt
        canReplay = false
        replay.removeAll()
        attempt.heldHead = nil
        cancelAttempts(except: attempt)
        sendResponseHead(head, from: attempt, endStream: false)
    }

    private func sendResponseHead(_ headers: HTTP2HeaderList, from attempt: UpstreamAttempt, endStream: Bool) {
        responseStarted = true
        var head = headers
        if !chain.filters.isEmpty {
            plugin.responseHeaders = headers
            for (i, filter) in chain.filters.enumerated() {
                filter.hooks.on_response_headers?(instance(filter), state(i), plugin.handle, attempt.handle)
            }
            plugin.responseHeaders = nil
            if !plugin.extraResponseHeaders.isEmpty {
                head.reserveCapacity(head.count + plugin.extraResponseHeaders.count)
                for field in plugin.extraResponseHeaders { head.append(field.name, field.value) }
            }
        }
        downstream.sendResponseHeaders(stream: downstreamStream, headers: head, endStream: endStream)
    }

    func attemptClosed(_ attempt: UpstreamAttempt, reason: HTTP2StreamCloseReason) {
        if attempt.connection != nil { attempt.pool?.inFlight -= 1 }
        attempt.isOpen = false
        defer { drop(attempt) }
        if attempt.cancelled {
            report(attempt, AttemptOutcome(status: GRPCStatus(.cancelled, "attempt cancelled by the gateway")))
            if attempt === committed && !finished { fail(GRPCStatus(.cancelled, "the upstream attempt was cancelled by a filter")) }
            return
        }
        if let outcome = attempt.outcome {
            report(attempt, outcome)
            return
        }
        let where_ = "upstream \(attempt.addressText)"
        var outcome: AttemptOutcome
        switch reason {
        case .finished:
            outcome = AttemptOutcome(status: GRPCStatus(.internal, "\(where_) closed the stream without a gRPC status"))
        case .reset(let code, local: false):
            outcome = AttemptOutcome(status: GRPCStatus.fromHTTP2Error(code: code, context: "\(where_) reset the stream"))
            outcome.refused = code == 0x7
        case .reset(let code, local: true):
            outcome = AttemptOutcome(status: GRPCStatus.fromHTTP2Error(code: code, context: "the gateway reset the stream to \(where_)"))
            outcome.refused = code == 0x7
        case .connectionLost:
            outcome = AttemptOutcome(status: GRPCStatus(.unavailable, "connection to \(where_) was lost"))
        }
        outcome.transportFailure = true
        attempt.outcome = outcome
        if attempt === committed {
            report(attempt, outcome)
            fail(outcome.status)
        } else {
            attemptEnded(attempt, outcome)
        }
    }

    /// An attempt the call had not committed to ended: retry, wait for the
    /// others, or end the call with it.
    private func attemptEnded(_ attempt: UpstreamAttempt, _ outcome: AttemptOutcome) {
        guard !finished else { return report(attempt, outcome) }
        avoidEndpoint = attempt.endpointID
        if outcome.refused && !transparentRetryUsed && canReplay {
            transparentRetryUsed = true
            report(attempt, outcome)
            attempts.removeAll { $0 === attempt }
            startAttempt(.transparent)
            return
        }
        var decision = mg_retry_decision(retry: UInt32(MG_RETRY_NO), delay_ms: 0)
        let decides = chain.scheduler != nil && canReplay
        withUnsafeMutablePointer(to: &decision) { report(attempt, outcome, decision: decides ? $0 : nil) }
        let others = attempts.contains { $0 !== attempt && !$0.cancelled && $0.outcome == nil } || scheduledAttempt != nil
        switch decision.retry {
        case UInt32(MG_RETRY_AFTER) where decides:
            if let deadline, deadline - .now() <= .milliseconds(Int64(decision.delay_ms)) {
                if !others { finish(with: attempt, outcome) }
            } else if scheduleAttempt(afterMs: decision.delay_ms, kind: .retry) {
                pendingOutcome = (attempt, outcome)
            } else if !others {
                finish(with: attempt, outcome)
            }
        case UInt32(MG_RETRY_FINISH) where decides:
            finish(with: attempt, outcome)
        default:
            if others {
                pendingOutcome = (attempt, outcome)
            } else {
                finish(with: attempt, outcome)
            }
        }
    }

    /// Runs on_attempt_done (once per started attempt): the chain's retry or
    /// hedge plugin first, since it sets the decision the others may veto.
    private func report(_ attempt: UpstreamAttempt, _ outcome: AttemptOutcome, decision: UnsafeMutablePointer<mg_retry_decision>? = nil) {
        guard attempt.didStart, !attempt.reported else { return }
        attempt.reported = true
        attempt.pool?.attemptEnded(code: outcome.transportFailure ? .unavailable : outcome.status.code)
        guard !chain.filters.isEmpty else { return }
        var message = outcome.status.message
        message.withUTF8 { bytes in
            var result = mg_attempt_result(
                size: UInt32(MemoryLayout<mg_attempt_result>.size), attempt: UInt32(attempt.number),
                grpc_status: Int32(outcome.status.code.rawValue),
                grpc_message: mg_str(ptr: UnsafeRawPointer(bytes.baseAddress)?.assumingMemoryBound(to: CChar.self), len: bytes.count),
                endpoint_id: attempt.endpointID,
                latency_us: UInt64(max(0, (NIODeadline.now() - attempt.started).nanoseconds / 1000)),
                response_started: attempt === committed ? 1 : 0, transport_failure: outcome.transportFailure ? 1 : 0,
                transparent_retry_ok: outcome.refused ? 1 : 0, reserved: 0, pushback_ms: outcome.pushbackMs)
            if let scheduler = chain.scheduler, let i = chain.filters.firstIndex(where: { $0 === scheduler }) {
                scheduler.hooks.on_attempt_done?(instance(scheduler), state(i), plugin.handle, &result, decision)
            }
            for (i, filter) in chain.filters.enumerated() where filter !== chain.scheduler {
                filter.hooks.on_attempt_done?(instance(filter), state(i), plugin.handle, &result, decision)
            }
        }
    }

    /// The call ends with an attempt it had not committed to.
    private func finish(with attempt: UpstreamAttempt, _ outcome: AttemptOutcome) {
        guard !finished else { return }
        if outcome.transportFailure {
            fail(outcome.status)
            return
        }
        committed = attempt
        cancelAttempts(except: attempt)
        if outcome.trailersOnly {
            sendResponseHead(outcome.trailers ?? [], from: attempt, endStream: true)
        } else {
            sendResponseHead(outcome.head ?? [], from: attempt, endStream: false)
            downstream.sendEnd(stream: downstreamStream, trailers: outcome.trailers)
        }
        complete(status: outcome.trailers ?? [])
    }

    // MARK: Ending

    private func deadlineExpired() {
        deadlineTimer = nil
        guard !finished else { return }
        downstream.discardQueuedData(stream: downstreamStream)
        fail(GRPCStatus(.deadlineExceeded, "deadline exceeded at the gateway while waiting for \(path)"))
    }

    /// Sends the gateway's own final status to the client and cancels every
    /// attempt.
    private func fail(_ status: GRPCStatus) {
        guard !finished else { return }
        finished = true
        finishedAt = .now()
        finalStatus = status
        cancelTimer()
        cancelAttempts(except: nil)
        replay.removeAll()
        creditClient()
        guard !downstreamClosed else { return }
        if responseStarted {
            downstream.sendEnd(stream: downstreamStream, trailers: GRPCLocalReply.trailers(status))
        } else {
            downstream.sendResponseHeaders(stream: downstreamStream, headers: GRPCLocalReply.trailersOnly(status), endStream: true)
        }
    }

    /// The upstream's final status is on its way to the client.
    private func complete(status headers: HTTP2HeaderList) {
        finished = true
        finishedAt = .now()
        let code = headers["grpc-status"].flatMap(Int.init).flatMap(GRPCStatusCode.init(rawValue:)) ?? .unknown
        finalStatus = GRPCStatus(code, GRPCMessageEncoding.percentDecode(headers["grpc-message"] ?? ""))
        cancelTimer()
        scheduledAttempt?.cancel()
        scheduledAttempt = nil
        replay.removeAll()
        // An upstream that answered before the request ended needs no more
        // of it: close our half with NO_ERROR (not CANCEL, it did nothing wrong).
        if let attempt = committed, attempt.isOpen, let upstream = attempt.connection,
           !requestEnded || upstream.queuedBytes(stream: attempt.stream) > 0 {
            attempt.isOpen = false
            upstream.reset(stream: attempt.stream, errorCode: 0)
        }
        creditClient()
    }

    /// Once the client's stream is gone and every attempt has reported,
    /// filters learn the outcome, their per-call state is destroyed (each
    /// exactly once), and the generation may retire.
    private func endCallIfDone() {
        guard downstreamClosed, attempts.isEmpty, !callDone else { return }
        callDone = true
        let seconds = Double(((finishedAt ?? .now()) - started).nanoseconds) / 1e9
        loop.metrics.callEnded(path: path, cluster: route.config.cluster, code: finalStatus?.code ?? .cancelled, seconds: seconds)
        scheduledAttempt?.cancel()
        scheduledAttempt = nil
        if !chain.filters.isEmpty {
            let status = finalStatus ?? GRPCStatus(.unknown, "")
            var message = status.message
            message.withUTF8 { bytes in
                var result = mg_call_result(
                    size: UInt32(MemoryLayout<mg_call_result>.size), grpc_status: Int32(status.code.rawValue),
                    grpc_message: mg_str(ptr: UnsafeRawPointer(bytes.baseAddress)?.assumingMemoryBound(to: CChar.self), len: bytes.count),
                    attempts: UInt32(attemptCount), duration_us: UInt64(max(0, (NIODeadline.now() - started).nanoseconds / 1000)),
                    request_bytes: UInt64(receivedBytes), response_bytes: 0)
                for (i, filter) in chain.filters.enumerated() {
                    filter.hooks.on_call_done?(instance(filter), state(i), plugin.handle, &result)
                }
            }
            for (i, filter) in chain.filters.enumerated() {
                filter.hooks.call_destroy?(instance(filter), state(i))
            }
        }
        if generation.runtime.config.runtime.accessLog { writeAccessLog(seconds: seconds) }
        plugin.proxy = nil
        // Attempts hold their call: these references would keep both alive.
        committed = nil
        pendingOutcome = nil
        generation.callEnded()
    }

    private func writeAccessLog(seconds: Double) {
        loop.accessLog.write(AccessLog.Entry(
            listener: generation.runtime.listeners[listenerIndex].config.name, path: path, cluster: route.config.cluster,
            status: finalStatus ?? GRPCStatus(.cancelled, ""), durationMicros: Int64(seconds * 1_000_000),
            upstream: committed?.addressText ?? lastUpstream, attempts: attemptCount, requestBytes: receivedBytes,
            clientIdentity: requestHeaders["x-forwarded-client-cert"], fields: plugin.logFields))
    }

    private func cancelTimer() {
        deadlineTimer?.cancel()
        deadlineTimer = nil
    }
}
