import FilterABI
import MeshgateGRPC
import MeshgateHTTP2
import NIOCore

/// One RPC in flight through the gateway: a downstream stream tied to an
/// upstream stream on the same event loop.
///
/// Bytes pass through untouched (messages are never reassembled). Flow
/// control is end to end: bytes received on one side are given back as
/// window credit only when the other side has sent them on, so a slow reader
/// stalls its writer instead of growing buffers here.
final class ProxyCall: HTTP2StreamDelegate {
    let downstream: HTTP2Connection
    let downstreamStream: Int32
    let requestHeaders: HTTP2HeaderList
    let path: String
    let route: RouteTable.Route
    let chain: PluginRuntime.RouteChain
    /// The config generation the call started on; it stays alive (with its
    /// plugin instances) until the call ends.
    let generation: LoopGeneration
    unowned let loop: LoopContext
    private let deadline: NIODeadline?
    private var deadlineTimer: Scheduled<Void>?
    private let started = NIODeadline.now()

    /// What the plugins' host functions see; `mg_call *` points at it.
    private let plugin: PluginCallState
    private var filterStates: [UnsafeMutableRawPointer?] = []
    private var finalStatus: GRPCStatus?
    private var attempts = 0
    private var callDone = false

    private var endpoint: EndpointPool?
    private var endpointIndex = 0
    private var avoidEndpoint: UInt64 = 0
    private var upstream: HTTP2Connection?
    private var upstreamStream: Int32 = 0
    private var upstreamOpen = false

    /// Request bytes that arrived before an upstream stream existed.
    private var pendingRequest = ByteChunkQueue()
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
        self.generation = generation
        self.chain = generation.plugins.chains[listenerIndex][route.index]
        self.loop = loop
        generation.callStarted()
        let deadline: NIODeadline? = timeoutNanos.map { .now() + .nanoseconds($0) }
        self.deadline = deadline
        self.plugin = PluginCallState(path: path, requestHeaders: headers, deadlineNanos: deadline.map { $0.uptimeNanoseconds })
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
        placeOnEndpoint()
    }

    // MARK: Choosing an upstream

    private func placeOnEndpoint() {
        let cluster = loop.clusters[route.clusterIndex]
        let balancer = chain.balancer
        var list = cluster.endpointList()
        withUnsafePointer(to: &list) { generation.instances.noteEndpoints(balancer, cluster: route.clusterIndex, list: $0) }
        var request = mg_pick_request(size: UInt32(MemoryLayout<mg_pick_request>.size), attempt: UInt32(attempts), avoid_endpoint: avoidEndpoint)
        var chosen: UInt32 = 0
        let verdict = balancer.hooks.lb_pick!(instance(balancer), plugin.handle, &request, &list, &chosen)
        guard verdict == 0, Int(chosen) < cluster.endpoints.count else {
            guard cluster.hasHealthyEndpoint else {
                fail(GRPCStatus(.unavailable, "no healthy upstream in cluster '\(cluster.name)': every endpoint fails its health checks"))
                return
            }
            let detail = cluster.endpoints.compactMap { ep in ep.lastConnectError.map { "\(ep.address): \($0)" } }.joined(separator: "; ")
            fail(GRPCStatus(.unavailable, "no upstream of cluster '\(cluster.name)' is reachable" + (detail.isEmpty ? "" : " (\(detail))")))
            return
        }
        endpointIndex = Int(chosen)
        let picked = cluster.endpoints[endpointIndex]
        endpoint = picked
        picked.acquire(for: self)
    }

    /// The endpoint could not connect; nothing was sent, so try another.
    func connectFailed(on endpoint: EndpointPool, error: String) {
        guard !finished else { return }
        avoidEndpoint = loop.clusters[route.clusterIndex].endpointID(endpointIndex)
        self.endpoint = nil
        placeOnEndpoint()
    }

    /// A connection has room for this call: open the upstream stream.
    func attach(_ connection: UpstreamConnection) {
        guard !finished, let http2 = connection.http2 else { return }
        if !chain.filters.isEmpty {
            plugin.inAttemptStart = true
            for (i, filter) in chain.filters.enumerated() {
                filter.hooks.on_attempt_start?(instance(filter), state(i), plugin.handle, plugin.handle)
            }
            plugin.inAttemptStart = false
        }
        var headers = HTTP2HeaderList()
        headers.reserveCapacity(requestHeaders.count + 1)
        for (name, value) in requestHeaders {
            switch name {
            case "grpc-timeout", "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade":
                continue
            case ":scheme":
                headers.append(name, "http")  // upstream hop is h2c until upstream TLS lands
            default:
                headers.append(name, value)
            }
        }
        if let deadline {
            let remaining = (deadline - .now()).nanoseconds
            headers.append("grpc-timeout", GRPCTimeout.format(nanoseconds: max(remaining, 1)))
        }
        for field in plugin.attemptHeaders {
            headers.removeAll(named: field.name)
            headers.append(field.name, field.value)
        }
        let endNow = requestEnded && pendingRequest.isEmpty && requestTrailers == nil
        guard let id = http2.openStream(headers: headers, endStream: endNow, delegate: self) else {
            fail(GRPCStatus(.unavailable, "upstream \(endpoint?.address ?? "?") refused a new stream"))
            return
        }
        upstream = http2
        upstreamStream = id
        upstreamOpen = true
        attempts += 1
        endpoint?.inFlight += 1
        while let chunk = pendingRequest.popFirst() {
            http2.send(data: chunk, stream: id)
        }
        if requestEnded && !endNow {
            http2.sendEnd(stream: id, trailers: requestTrailers)
        }
    }

    // MARK: Stream events (both sides)

    func http2(_ connection: HTTP2Connection, stream: Int32, didReceiveHeaders headers: HTTP2HeaderList, isTrailers: Bool, endStream: Bool) {
        if connection === downstream {
            // Request trailers: rare in gRPC, relayed all the same.
            requestTrailers = headers
            endOfRequest()
            return
        }
        guard !finished else { return }
        if !isTrailers {
            responseStarted = true
            var head = headers
            if !chain.filters.isEmpty {
                plugin.responseHeaders = headers
                for (i, filter) in chain.filters.enumerated() {
                    filter.hooks.on_response_headers?(instance(filter), state(i), plugin.handle, plugin.handle)
                }
                plugin.responseHeaders = nil
                if !plugin.extraResponseHeaders.isEmpty {
                    head.reserveCapacity(head.count + plugin.extraResponseHeaders.count)
                    for field in plugin.extraResponseHeaders { head.append(field.name, field.value) }
                }
            }
            downstream.sendResponseHeaders(stream: downstreamStream, headers: head, endStream: endStream)
            if endStream { complete(status: headers) }
        } else {
            downstream.sendEnd(stream: downstreamStream, trailers: headers)
            complete(status: headers)
        }
    }

    func http2(_ connection: HTTP2Connection, stream: Int32, didReceiveData data: ByteBuffer) {
        if connection === downstream {
            if finished {
                downstream.consume(stream: downstreamStream, bytes: data.readableBytes)
            } else if upstreamOpen, let upstream {
                upstream.send(data: data, stream: upstreamStream)
            } else if upstream == nil {
                pendingRequest.append(data)
            } else {
                downstream.consume(stream: downstreamStream, bytes: data.readableBytes)
            }
        } else {
            if finished || downstreamClosed {
                connection.consume(stream: stream, bytes: data.readableBytes)
            } else {
                downstream.send(data: data, stream: downstreamStream)
            }
        }
    }

    func http2(_ connection: HTTP2Connection, didReceiveEndOfStream stream: Int32) {
        if connection === downstream {
            endOfRequest()
        } else if !finished {
            // END_STREAM on DATA without trailers: not valid gRPC, but relayed
            // as it is; the client reports the missing status itself.
            downstream.sendEnd(stream: downstreamStream, trailers: nil)
            complete(status: [])
        }
    }

    func http2(_ connection: HTTP2Connection, stream: Int32, didWriteData bytes: Int) {
        if connection === downstream {
            upstream?.consume(stream: upstreamStream, bytes: bytes)
        } else {
            downstream.consume(stream: downstreamStream, bytes: bytes)
        }
    }

    func http2(_ connection: HTTP2Connection, stream: Int32, didCloseWith reason: HTTP2StreamCloseReason) {
        if connection === downstream {
            downstreamClosed = true
            if !finished || reason != .finished {
                // The client cancelled or vanished: the upstream must know.
                cancelUpstream()
            }
            finished = true
            cancelTimer()
            if upstream == nil { endpoint?.cancelWait(self) }
            if reason != .finished && finalStatus == nil {
                finalStatus = GRPCStatus(.cancelled, "the client cancelled the call")
            }
            endCall()
            generation.callEnded()
            return
        }
        upstreamOpen = false
        endpoint?.inFlight -= 1
        guard !finished else { return }
        let where_ = "upstream \(endpoint?.address ?? "?")"
        switch reason {
        case .finished:
            fail(GRPCStatus(.internal, "\(where_) closed the stream without a gRPC status"))
        case .reset(let code, local: false):
            fail(GRPCStatus.fromHTTP2Error(code: code, context: "\(where_) reset the stream"))
        case .reset:
            break
        case .connectionLost:
            fail(GRPCStatus(.unavailable, "connection to \(where_) was lost"))
        }
    }

    // MARK: Ending

    private func endOfRequest() {
        guard !requestEnded else { return }
        requestEnded = true
        if upstreamOpen, let upstream {
            upstream.sendEnd(stream: upstreamStream, trailers: requestTrailers)
        }
    }

    private func deadlineExpired() {
        deadlineTimer = nil
        guard !finished else { return }
        let dropped = downstream.discardQueuedData(stream: downstreamStream)
        upstream?.consume(stream: upstreamStream, bytes: dropped)
        fail(GRPCStatus(.deadlineExceeded, "deadline exceeded at the gateway while waiting for \(path)"))
    }

    /// Sends the gateway's own final status to the client and cancels the
    /// upstream stream if one is open.
    private func fail(_ status: GRPCStatus) {
        guard !finished else { return }
        finished = true
        finalStatus = status
        cancelTimer()
        if upstream == nil { endpoint?.cancelWait(self) }
        cancelUpstream()
        guard !downstreamClosed else { return }
        if responseStarted {
            downstream.sendEnd(stream: downstreamStream, trailers: GRPCLocalReply.trailers(status))
        } else {
            downstream.sendResponseHeaders(stream: downstreamStream, headers: GRPCLocalReply.trailersOnly(status), endStream: true)
        }
        // Request bytes still in flight from the client are read and dropped,
        // and their window given back.
        let dropped = pendingRequest.removeAll()
        if dropped > 0 { downstream.consume(stream: downstreamStream, bytes: dropped) }
    }

    /// The upstream's final status is on its way to the client.
    private func complete(status headers: HTTP2HeaderList) {
        finished = true
        let code = headers["grpc-status"].flatMap(Int.init).flatMap(GRPCStatusCode.init(rawValue:)) ?? .unknown
        finalStatus = GRPCStatus(code, GRPCMessageEncoding.percentDecode(headers["grpc-message"] ?? ""))
        cancelTimer()
        // An upstream that answered before the request ended needs no more
        // of it: close our half with NO_ERROR (not CANCEL, it did nothing wrong).
        if upstreamOpen, let upstream, !requestEnded || upstream.queuedBytes(stream: upstreamStream) > 0 {
            upstreamOpen = false
            let dropped = upstream.reset(stream: upstreamStream, errorCode: 0)
            downstream.consume(stream: downstreamStream, bytes: dropped)
        }
    }

    /// The client's stream is gone: filters learn the outcome, then their
    /// per-call state is destroyed (each exactly once).
    private func endCall() {
        guard !callDone, !chain.filters.isEmpty else { return }
        callDone = true
        let status = finalStatus ?? GRPCStatus(.unknown, "")
        var message = status.message
        message.withUTF8 { bytes in
            var result = mg_call_result(
                size: UInt32(MemoryLayout<mg_call_result>.size), grpc_status: Int32(status.code.rawValue),
                grpc_message: mg_str(ptr: UnsafeRawPointer(bytes.baseAddress)?.assumingMemoryBound(to: CChar.self), len: bytes.count),
                attempts: UInt32(attempts), duration_us: UInt64(max(0, (NIODeadline.now() - started).nanoseconds / 1000)),
                request_bytes: 0, response_bytes: 0)
            for (i, filter) in chain.filters.enumerated() {
                filter.hooks.on_call_done?(instance(filter), state(i), plugin.handle, &result)
            }
        }
        for (i, filter) in chain.filters.enumerated() {
            filter.hooks.call_destroy?(instance(filter), state(i))
        }
    }

    private func cancelUpstream() {
        if upstreamOpen, let upstream {
            upstreamOpen = false
            let dropped = upstream.reset(stream: upstreamStream, errorCode: 0x8)  // CANCEL
            downstream.consume(stream: downstreamStream, bytes: dropped)
        }
    }

    private func cancelTimer() {
        deadlineTimer?.cancel()
        deadlineTimer = nil
    }
}
