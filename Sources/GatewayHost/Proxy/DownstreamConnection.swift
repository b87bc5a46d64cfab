import MeshgateGRPC
import MeshgateGRPCCalls
import MeshgateHTTP2
import MeshgateTLS
import NIOCore
import MeshgateCallCore
import MeshgateConfig
import MeshgateSupport
import MeshgateRouting
import MeshgateOwnServices

/// The gateway's side of one client connection: turns each request head
/// into a routed `ProxyCall`, or answers it locally with a gRPC status.
package final class DownstreamConnection: HTTP2ConnectionDelegate {
    /// The listener's position: its routes come from the loop's current
    /// generation at each request, so a reload applies to open connections.
    package let listenerIndex: Int
    package let listenerName: String
    package unowned let loop: LoopContext
    /// The connection's TLS, on a TLS listener: its verified client identity.
    package let tls: TLSHandler?
    /// The listener's `idle_timeout`: a client that keeps connections it no
    /// longer uses does not keep the gateway's memory and file descriptors
    /// forever. Calls only move `idleSince`; the one timer, when it fires,
    /// closes the connection or waits for the rest (no timer per call).
    private var idleSince: NIODeadline?
    private var idleTimer: Scheduled<Void>?
    private var keepaliveStarted = false

    /// `grpc_web: true`: a restart-only setting (it decides how the
    /// listener accepts connections), so read once here; a per-request
    /// look into the generation's listener config would copy it (two
    /// retains per call).
    private let acceptsGRPCWeb: Bool
    /// What this connection's calls to the gateway's own services (health,
    /// merged reflection) may hold together: their partial messages and
    /// queued requests. Made at the first such call.
    private var ownServiceBudget: GRPCServerCallBudget?
    /// 256 KiB: 64 health requests of the largest allowed size being
    /// assembled at once, or 16 of reflection's.
    package static let ownServiceBytesPerConnection = 256 << 10

    package init(listener: ServingConfig.Listener, loop: LoopContext, tls: TLSHandler?) {
        self.acceptsGRPCWeb = listener.config.grpcWeb
        self.listenerIndex = listener.index
        self.listenerName = listener.config.name
        self.loop = loop
        self.tls = tls
    }

    /// A new connection is idle from its accept (as Envoy's idle_timeout):
    /// a client that never sends a byte does not hold it forever.
    package func connectionAccepted(_ connection: HTTP2Connection) {
        becameIdle(connection)
    }

    package func http2ConnectionDidReceiveSettings(_ connection: HTTP2Connection) {
        if idleTimer == nil && connection.activeStreamCount == 0 { becameIdle(connection) }
        // Listener `keepalive`: finds clients that vanished without a FIN.
        if !keepaliveStarted, let config = loop.generation.serving.listeners[listenerIndex].config.keepalive {
            keepaliveStarted = true
            let listener = listenerName
            let peer = connection.remoteAddress.map { "\($0)" } ?? "-"
            connection.startKeepalive(interval: .nanoseconds(config.interval.nanosecondsClamped),
                                      timeout: .nanoseconds(config.timeout.nanosecondsClamped)) { reason in
                Log.warning("downstream keepalive timed out", ["listener": listener, "peer": peer, "reason": reason])
            }
        }
    }

    package func http2(_ connection: HTTP2Connection, didCloseStream stream: Int32) {
        if connection.activeStreamCount == 0 { becameIdle(connection) }
    }

    private func becameIdle(_ connection: HTTP2Connection) {
        idleSince = .now()
        if idleTimer == nil { armIdleTimer(connection, in: loop.generation.serving.listeners[listenerIndex].config.idleTimeout) }
    }

    private func armIdleTimer(_ connection: HTTP2Connection, in delay: Duration) {
        guard delay > .zero else { return }
        // Strong captures (no `weak`: it would give every connection a
        // side-table reference count); the close cancels the timer.
        idleTimer = loop.eventLoop.assumeIsolated().scheduleTask(in: .nanoseconds(delay.nanosecondsClamped)) {
            self.idleTimer = nil
            // Busy now: the next idle moment arms the timer again.
            guard connection.activeStreamCount == 0, let since = self.idleSince else { return }
            let timeout = self.loop.generation.serving.listeners[self.listenerIndex].config.idleTimeout
            guard timeout > .zero else { return }
            let left = timeout.nanosecondsClamped - (NIODeadline.now() - since).nanoseconds
            guard left <= 0 else { return self.armIdleTimer(connection, in: .nanoseconds(left)) }
            Log.info("downstream connection idle: closing", [
                "listener": self.listenerName, "peer": connection.remoteAddress.map { "\($0)" } ?? "-",
                "idle_timeout_ms": String(timeout.nanosecondsClamped / 1_000_000),
            ])
            connection.beginGracefulShutdown(finalGoAwayDelay: .milliseconds(100))
        }
    }

    /// The listener's config in the loop's current generation.
    package var listenerConfig: ListenerConfig { loop.generation.serving.listeners[listenerIndex].config }

    package func http2(_ connection: HTTP2Connection, didReceiveRequest headers: HTTP2HeaderList, stream: Int32, endStream: Bool) -> HTTP2StreamDelegate? {
        idleSince = nil
        if acceptsGRPCWeb,
           headers.valueHasPrefix("content-type", "application/grpc-web") || headers.value(of: ":method", equals: "OPTIONS"),
           let web = webRequest(connection, headers: headers, stream: stream, endStream: endStream) {
            return web
        }
        // Byte-level checks: the list holds bytes, and only the path
        // becomes a String (the connection's cache reuses it per stream).
        guard headers.value(of: ":method", equals: "POST") else {
            return reply(connection, stream, GRPCStatus(.internal, "gRPC requires POST, got \(headers[":method"] ?? "no method")"), httpStatus: 405)
        }
        guard headers.valueHasPrefix("content-type", "application/grpc") else {
            return reply(connection, stream, GRPCStatus(.internal, "not a gRPC request: content-type is '\(headers["content-type"] ?? "")', expected application/grpc"), httpStatus: 415)
        }
        guard let path = headers.withValue(of: ":path", connection.cachedString), Self.isGRPCPath(path) else {
            return reply(connection, stream, GRPCStatus(.unimplemented, "malformed gRPC path '\(headers[":path"] ?? "")', expected /package.Service/Method"))
        }
        if path.hasPrefix(GatewayHealthService.pathPrefix) {
            let call = GatewayHealthService.handle(connection: connection, stream: stream, headers: headers, path: path,
                                                   registry: loop.health, eventLoop: loop.eventLoop, budget: ownServiceCallBudget())
            if endStream { call.onEnd?() }
            return call
        }
        return route(headers, path: path, client: connection, stream: stream, endStream: endStream, http2: connection)
    }

    /// A gRPC-Web request or a CORS preflight on an HTTP/2 connection of a
    /// `grpc_web: true` listener (nil: neither, handled as gRPC).
    private func webRequest(_ connection: HTTP2Connection, headers: HTTP2HeaderList, stream: Int32, endStream: Bool) -> HTTP2StreamDelegate? {
        let cors = listenerConfig.cors
        if headers.value(of: ":method", equals: "OPTIONS") {
            let answer = GRPCWebCORS.preflight(cors, origin: headers["origin"])
            var head: HTTP2HeaderList = [(":status", String(answer.status))]
            head.append(contentsOf: answer.fields)
            connection.sendResponseHeaders(stream: stream, headers: head, endStream: true)
            return DiscardingStream.shared
        }
        guard let request = GRPCWebRequest(contentType: headers["content-type"] ?? "") else { return nil }
        let web = GRPCWebStream(transport: .http2(connection, stream), request: request,
                                corsFields: GRPCWebCORS.responseFields(cors, origin: headers["origin"]))
        startWebCall(web, headers: request.upstreamHead(headers), endStream: endStream)
        return web
    }

    /// A gRPC-Web call (HTTP/2 or HTTP/1.1), its head already gRPC's:
    /// routed like any call, or answered through `web` (health and
    /// reflection are not served over gRPC-Web).
    func startWebCall(_ web: GRPCWebStream, headers: HTTP2HeaderList, endStream: Bool) {
        guard headers.value(of: ":method", equals: "POST") else {
            _ = reply(web, 0, GRPCStatus(.internal, "gRPC-Web requires POST"), httpStatus: 405)
            return
        }
        guard let path = headers[":path"], Self.isGRPCPath(path) else {
            _ = reply(web, 0, GRPCStatus(.unimplemented, "malformed gRPC path '\(headers[":path"] ?? "")', expected /package.Service/Method"))
            return
        }
        idleSince = nil
        if endStream { web.requestEndedWithHead() }
        web.call = route(headers, path: path, client: web, stream: 0, endStream: endStream, http2: nil) as? ProxyCall
    }

    /// Routes a request to a `ProxyCall`, or answers it on `client`. Only
    /// a plain HTTP/2 client (`http2`) may reach the merged reflection.
    /// Inlined: as a call, its arguments (the head's storage, the client)
    /// cost two retains more per request.
    @inline(__always)
    private func route(_ headers: HTTP2HeaderList, path: String, client: any CallClientStream, stream: Int32, endStream: Bool,
                       http2 connection: HTTP2Connection?) -> HTTP2StreamDelegate {
        let generation = loop.generation
        guard let route = generation.serving.listeners[listenerIndex].routes.match(path: path, headers: headers) else {
            if generation.serving.listeners[listenerIndex].config.healthOnly {
                return reply(client, stream, GRPCStatus(.unimplemented, "this listener serves only grpc.health.v1 (health_only), not \(path)"))
            }
            let listener = generation.serving.listeners[listenerIndex].config
            if let connection, GatewayReflectionService.paths.contains(path), listener.reflection,
               !listener.routes.contains(where: { $0.match.pathMatches(path) }) {
                // No route sends reflection elsewhere (not even one whose
                // headers did not match): the gateway merges it.
                let scope = ReflectionScope(number: generation.number, listener: generation.serving.listeners[listenerIndex],
                                            clusters: generation.clusters)
                let call = GatewayReflectionService.handle(connection: connection, stream: stream, headers: headers, path: path, scope: scope,
                                                           cache: loop.reflection, eventLoop: loop.eventLoop, budget: ownServiceCallBudget())
                if endStream { call.onEnd?() }
                return call
            }
            return reply(client, stream, GRPCStatus(.unimplemented, "no route for \(path)"))
        }
        let peer = tls?.peer
        if let allowed = route.config.allowedIdentities {
            guard let peer, peer.names.contains(where: allowed.contains) else {
                let who = peer.map { "client identity \($0.names.first ?? "(a certificate without names)")" } ?? "a client without a certificate"
                return reply(client, stream, GRPCStatus(.permissionDenied, "\(who) is not allowed to call \(path)"))
            }
        }
        var headers = headers
        // Only the gateway vouches for client certificates (Envoy's
        // SANITIZE_SET): a client's own x-forwarded-client-cert is dropped.
        if headers.contains("x-forwarded-client-cert") { headers.removeAll(named: "x-forwarded-client-cert") }
        if let peer { headers.append("x-forwarded-client-cert", peer.forwardedClientCert) }
        var clientTimeout: Int64?
        if let text = headers["grpc-timeout"] {
            guard let parsed = GRPCTimeout.parse(text) else {
                return reply(client, stream, GRPCStatus(.internal, "malformed grpc-timeout '\(text)'"))
            }
            clientTimeout = parsed
        }
        // What the call costs while it lives — its head, twice (the call's
        // copy and its upstream stream's), and its own objects and HTTP/2
        // state — counted with the connection's other held bytes, so that
        // many calls (or calls with large heads) meet the connection's cap
        // and the global budget instead of growing without bound.
        let admissionBytes = 2 * headers.storageBytes + ProxyCall.fixedCostBytes
        guard client.holdBytes(admissionBytes, kind: .required) else {
            LimitCounters.shared.heldBytesRefused(.head)
            return reply(client, stream, GRPCStatus(.resourceExhausted,
                "the gateway holds all it may for this connection's calls (listener per_connection_buffer_limit_bytes) or for all clients (runtime.global_buffer_limit_bytes)"))
        }
        let call = ProxyCall(downstream: client, stream: stream, headers: headers, path: path, route: route,
                             generation: generation, listenerIndex: listenerIndex,
                             timeoutNanos: route.effectiveTimeout(clientTimeout: clientTimeout), admissionBytes: admissionBytes, loop: loop)
        call.start(requestEnded: endStream)
        return call
    }

    /// A client's header block passed the listener's limits. A request
    /// head is answered as a gRPC server answers metadata over its limit:
    /// RESOURCE_EXHAUSTED, Trailers-Only, naming the limit (the connection
    /// then resets the stream with NO_ERROR if the client is still
    /// sending). Trailers over it, and a head that decodes to an amplified
    /// size (an HPACK bomb), were reset already with ENHANCE_YOUR_CALM.
    package func http2(_ connection: HTTP2Connection, didRefuseHeaderBlock violation: HTTP2HeaderLimitViolation, stream: Int32, answerable: Bool) {
        LimitCounters.shared.headerBlockRefused(.downstream, violation)
        if Log.minimumLevel == .debug {
            Log.debug("client header block over the listener's limit", [
                "listener": listenerName, "peer": connection.remoteAddress.map { "\($0)" } ?? "?", "stream": String(stream),
                "limit": violation.listenerLimitText, "answer": answerable ? "RESOURCE_EXHAUSTED" : "RST_STREAM ENHANCE_YOUR_CALM",
            ])
        }
        guard answerable else { return }
        _ = reply(connection, stream, GRPCStatus(.resourceExhausted, violation.listenerLimitText))
    }

    package func http2ConnectionDidClose(_ connection: HTTP2Connection) {
        idleTimer?.cancel()
        idleTimer = nil
        loop.unregister(connection)
        if let reason = connection.closeReason {
            // Clients that break the protocol are worth a line; ordinary
            // disconnects (resets included) only at debug level.
            Log.write(connection.closedForProtocolError ? .info : .debug, "downstream connection closed", [
                "listener": listenerName, "peer": connection.remoteAddress.map { "\($0)" } ?? "?", "reason": reason,
            ])
        }
    }

    private func reply(_ client: any CallClientStream, _ stream: Int32, _ status: GRPCStatus, httpStatus: Int = 200) -> HTTP2StreamDelegate {
        loop.metrics.localReply(status.code)
        client.sendResponseHeaders(stream: stream, headers: GRPCLocalReply.trailersOnly(status, httpStatus: httpStatus), endStream: true)
        return DiscardingStream.shared
    }

    private func ownServiceCallBudget() -> GRPCServerCallBudget {
        if let ownServiceBudget { return ownServiceBudget }
        let budget = GRPCServerCallBudget(limit: Self.ownServiceBytesPerConnection)
        ownServiceBudget = budget
        return budget
    }

    /// "/service/method" with both parts non-empty (no array: this runs per request).
    package static func isGRPCPath(_ path: String) -> Bool {
        !GRPCPath.serviceAndMethod(path).method.isEmpty
    }
}
