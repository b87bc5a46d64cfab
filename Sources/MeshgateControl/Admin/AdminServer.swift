import GatewayHost
import NIOCore
import NIOHTTP1
import NIOPosix
import MeshgateConfig
import MeshgateSupport
import MeshgateUpstream

/// What the admin endpoint serves, provided by the gateway.
package struct AdminSources: Sendable {
    package var health: HealthRegistry
    /// POST /reload (runs on the control thread).
    package var reload: @Sendable () -> Result<String, GatewayError>
    /// Prometheus text, gathered from every loop at most once a second.
    package var metrics: MetricsScrapes
    /// `/clusters`; a read-only address gets error texts left out.
    package var clusters: @Sendable (_ readOnly: Bool) -> String
    /// `/config`; a read-only address gets filter configs fully redacted.
    package var config: @Sendable (_ readOnly: Bool) -> String
    package var plugins: @Sendable () -> String
    /// The dashboard's data with the last N points of its time series.
    package var dashboard: @Sendable (Int) -> DashboardData
}

/// The admin HTTP/1.1 endpoint:
/// - `/healthz` (the process is alive), `/ready` (started and not draining),
/// - `/metrics` (Prometheus), `/clusters` (endpoints with health, ejection
///   and discovery state), `/config` (the current generation, secrets
///   redacted), `/plugins` (loaded images: path, hash, ABI),
/// - `/dashboard` (a live page), `/dashboard/data` (its JSON) and
///   `/dashboard/events` (the same, as Server-Sent Events every second),
/// - `POST /reload` (200 with the new generation, or 400 with the reason the
///   running config stays), only on the full admin address and only with a
///   `Host` naming it and no foreign `Origin` or `Sec-Fetch-Site`
///   (`AdminOriginCheck`): read-only addresses answer 403, and every other
///   method than GET/HEAD gets 405.
/// The full admin address answers nothing (403) to a request whose `Host`
/// does not name it: a DNS-rebinding page could otherwise read its views.
package final class AdminHandler: ChannelInboundHandler {
    package typealias InboundIn = HTTPServerRequestPart
    package typealias OutboundOut = HTTPServerResponsePart

    package let sources: AdminSources
    /// A read-only address (`admin.read_only_addresses`): views only, with
    /// plugin configs and error texts redacted.
    package let readOnly: Bool
    /// The full admin address: POST /reload must name it.
    package let originCheck: AdminOriginCheck
    package let timeouts: AdminConnectionTimeouts
    private var path = ""
    private var method = HTTPMethod.GET
    private var host: String?
    private var origin: String?
    private var fetchSite: String?
    private var keepAlive = true
    /// A pipelined request that came whole while the answer before it was
    /// still leaving: answered once that one has left.
    private var requestWaiting = false
    private var events: Scheduled<Void>?
    /// When the kernel last took a whole update of the event stream (or
    /// the stream started).
    private var streamProgress = NIODeadline.now()
    private var open = true

    package init(sources: AdminSources, readOnly: Bool, originCheck: AdminOriginCheck, timeouts: AdminConnectionTimeouts) {
        self.sources = sources
        self.readOnly = readOnly
        self.originCheck = originCheck
        self.timeouts = timeouts
    }

    package func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            path = String(head.uri.split(separator: "?", maxSplits: 1).first ?? "")
            method = head.method
            host = head.headers.first(name: "host")
            origin = head.headers.first(name: "origin")
            fetchSite = head.headers.first(name: "sec-fetch-site")
            keepAlive = head.isKeepAlive
        case .body:
            break
        case .end:
            // One answer leaves before the next request is answered: a
            // client pipelining requests it never reads would otherwise
            // have the gateway pile answers up in memory (a gigabyte in
            // seconds of /dashboard pages). NIO's pipelining handler reads
            // no further request until this one's answer is written, so
            // the client's requests wait in its own socket.
            if timeouts.answerLeaving {
                requestWaiting = true
            } else {
                timeouts.requestComplete()
                route(context)
            }
        }
    }

    package func channelInactive(context: ChannelHandlerContext) {
        open = false
        events?.cancel()
        context.fireChannelInactive()
    }

    private static let readOnlyRefusal = "this admin address is read-only: POST /reload answers only on admin.address\n"

    private func route(_ context: ChannelHandlerContext) {
        // The full address shows config, errors and events unredacted:
        // only to requests that name it (DNS rebinding).
        if !readOnly, let refusal = originCheck.hostRefusal(host: host) {
            // Debug: a page can send these in a loop.
            Log.debug("admin: request refused", ["reason": refusal, "path": path, "peer": context.channel.remoteAddress.map { "\($0)" } ?? "?"])
            return respond(context, .forbidden, refusal + "\n")
        }
        // Views answer GET (and HEAD); the one action, POST /reload, only
        // on the full admin address.
        if path == "/reload" && method == .POST && readOnly {
            return respond(context, .forbidden, Self.readOnlyRefusal)
        }
        if method != .GET && method != .HEAD && !(path == "/reload" && method == .POST) {
            return respond(context, .methodNotAllowed, "\(method) is not served here: the admin views answer GET\(readOnly ? " (this address is read-only)" : "; POST /reload reloads")\n")
        }
        switch path {
        case "/reload" where method == .POST:
            if let refusal = originCheck.refusal(host: host, origin: origin, fetchSite: fetchSite) {
                Log.info("admin: POST /reload refused", ["reason": refusal, "peer": context.channel.remoteAddress.map { "\($0)" } ?? "?"])
                return respond(context, .forbidden, refusal + "\n")
            }
            // Plugin configs are created on the control thread; the admin
            // loop never waits for it.
            let reload = sources.reload
            ControlThread.loop.submit { reload() }.hop(to: context.eventLoop).assumeIsolated().whenSuccess { result in
                switch result {
                case .success(let message): self.respond(context, .ok, message + "\n")
                case .failure(let error): self.respond(context, .badRequest, error.message + "\n")
                }
            }
        case "/metrics":
            sources.metrics.text(on: context.eventLoop).assumeIsolated().whenComplete { result in
                switch result {
                case .success(let text): self.respond(context, .ok, text, contentType: "text/plain; version=0.0.4; charset=utf-8")
                case .failure:
                    // The reason goes to the log, not to a possibly public client.
                    self.respond(context, .internalServerError, "metrics could not be gathered (see the gateway's log)\n")
                }
            }
        case "/dashboard/events":
            streamEvents(context)
        default:
            let (status, body, type) = answer()
            respond(context, status, body, contentType: type)
        }
    }

    private func answer() -> (HTTPResponseStatus, String, String) {
        let text = "text/plain; charset=utf-8"
        let json = "application/json"
        switch path {
        case "/healthz": return (.ok, "ok\n", text)
        case "/ready":
            return sources.health.isReady ? (.ok, "ready\n", text) : (.serviceUnavailable, "not ready (starting or draining)\n", text)
        case "/clusters": return (.ok, sources.clusters(readOnly), json)
        case "/config": return (.ok, sources.config(readOnly), json)
        case "/plugins": return (.ok, sources.plugins(), json)
        case "/events": return (.ok, AdminViews.events(readOnly: readOnly), json)
        case "/dashboard", "/dashboard/":
            return (.ok, DashboardPage.html(initial: dashboardData(points: DashboardSeries.capacity).json), "text/html; charset=utf-8")
        case "/dashboard/data": return (.ok, dashboardData(points: DashboardSeries.capacity).json + "\n", json)
        case "/reload":
            return readOnly ? (.forbidden, Self.readOnlyRefusal, text) : (.methodNotAllowed, "use POST /reload\n", text)
        default:
            return (.notFound, "not found; try /healthz, /ready, /metrics, /clusters, /config, /plugins, /events, /dashboard\(readOnly ? "" : " or POST /reload")\n", text)
        }
    }

    private func dashboardData(points: Int) -> DashboardData {
        var data = sources.dashboard(points)
        if readOnly { data.events = data.events.map(AdminViews.publicEvent) }
        return data
    }

    /// The send buffer of an event-stream connection: a client that stops
    /// reading leaves at most this (and its own receive buffer) in the
    /// kernels, and its stop shows once they are full, not after the
    /// megabytes of a default buffer (hours of updates).
    package static let eventStreamSendBuffer: SocketOptionValue = 16 << 10

    /// Server-Sent Events: the dashboard's JSON now and every second, until
    /// the client goes away. The stream holds one of the address's
    /// connection slots like any other request.
    private func streamEvents(_ context: ChannelHandlerContext) {
        timeouts.streamStarted()
        try? context.channel.syncOptions?.setOption(ChannelOptions.socketOption(.so_sndbuf), value: Self.eventStreamSendBuffer)
        var headers = HTTPHeaders()
        headers.add(name: "content-type", value: "text/event-stream")
        headers.add(name: "cache-control", value: "no-cache")
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers))), promise: nil)
        streamProgress = .now()
        sendEvent(context)
    }

    /// An update was written and the kernel has not taken all of it yet.
    private var updateLeaving = false

    private func sendEvent(_ context: ChannelHandlerContext) {
        guard open else { return }
        // A reader that does not read gets no more until it does: the
        // stream never piles updates up in the gateway (these addresses
        // may be public), at most one waits for the socket; one whose
        // socket has taken nothing for idle_timeout loses its connection,
        // and its slot.
        guard !updateLeaving && context.channel.isWritable else {
            let idle = timeouts.idleTimeout
            if idle > .zero, NIODeadline.now() - streamProgress >= idle {
                Log.debug("admin event stream closed", ["reason": "idle_timeout (the client reads nothing)"])
                context.close(promise: nil)
                return
            }
            events = context.eventLoop.assumeIsolated().scheduleTask(in: .seconds(1)) { self.sendEvent(context) }
            return
        }
        // Each update carries the newest point; the page appends it.
        let event = "data: \(dashboardData(points: 1).json)\n\n"
        updateLeaving = true
        let taken = context.eventLoop.makePromise(of: Void.self)
        context.writeAndFlush(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: event)))), promise: taken)
        taken.futureResult.assumeIsolated().whenSuccess {
            self.updateLeaving = false
            self.streamProgress = .now()
        }
        events = context.eventLoop.assumeIsolated().scheduleTask(in: .seconds(1)) { self.sendEvent(context) }
    }

    private func respond(_ context: ChannelHandlerContext, _ status: HTTPResponseStatus, _ body: String,
                         contentType: String = "text/plain; charset=utf-8") {
        respond(context, status, context.channel.allocator.buffer(string: body), contentType: contentType)
    }

    private func respond(_ context: ChannelHandlerContext, _ status: HTTPResponseStatus, _ body: ByteBuffer,
                         contentType: String = "text/plain; charset=utf-8") {
        guard open else { return }
        var headers = HTTPHeaders()
        headers.add(name: "content-type", value: contentType)
        headers.add(name: "content-length", value: String(body.readableBytes))
        if !keepAlive { headers.add(name: "connection", value: "close") }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
        if method != .HEAD {
            context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
        }
        // Both before `.end` is written: writing it hands the next
        // pipelined request over at once (NIO's HTTPServerPipelineHandler),
        // which sets `keepAlive` anew and moves the connection's clock on
        // (an event stream must not be put back on the answer's timer).
        let keepAlive = self.keepAlive
        timeouts.answerWritten()
        let sent = context.eventLoop.makePromise(of: Void.self)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: sent)
        sent.futureResult.assumeIsolated().whenComplete { result in
            if case .success = result, keepAlive {
                self.timeouts.answerSent()
                if self.requestWaiting && !self.timeouts.answerLeaving {
                    self.requestWaiting = false
                    self.timeouts.requestComplete()
                    self.route(context)
                }
            } else {
                context.close(promise: nil)
            }
        }
    }
}

package enum AdminServer {
    /// Binds one admin address on `group` (the admin's own event loop, never
    /// a data-path one). Past `admin.max_connections` open connections, a
    /// new one is accepted and closed at once.
    package static func start(address: SocketAddressSpec, readOnly: Bool, admin: AdminConfig, group: EventLoopGroup,
                      sources: AdminSources, counters: GatewayCounters) async throws -> Channel {
        let limit = ConnectionLimit(max: admin.maxConnections)
        let originCheck = AdminOriginCheck(address: admin.address, allowedHosts: admin.allowedHosts)
        let idle = TimeAmount.nanoseconds(admin.idleTimeout.nanosecondsClamped)
        let request = TimeAmount.nanoseconds(admin.requestTimeout.nanosecondsClamped)
        let name = address.description
        return try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .serverChannelOption(.backlog, value: 256)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    guard limit.acquire() else {
                        counters.adminConnectionRefused()
                        Log.debug("admin connection refused: address at admin.max_connections", ["address": name, "max_connections": String(limit.max)])
                        channel.close(promise: nil)
                        return
                    }
                    channel.closeFuture.whenComplete { _ in limit.release() }
                    let timeouts = AdminConnectionTimeouts(idleTimeout: idle, requestTimeout: request)
                    try channel.pipeline.syncOperations.addHandler(timeouts)
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(AdminHandler(sources: sources, readOnly: readOnly, originCheck: originCheck,
                                                                                timeouts: timeouts))
                }
            }
            .bind(host: address.host, port: address.port).get()
    }
}
