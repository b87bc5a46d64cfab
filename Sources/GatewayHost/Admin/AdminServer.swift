import NIOCore
import NIOHTTP1
import NIOPosix

/// What the admin endpoint serves, provided by the gateway.
struct AdminSources: Sendable {
    var health: HealthRegistry
    /// POST /reload (runs on the control thread).
    var reload: @Sendable () -> Result<String, GatewayError>
    /// Prometheus text, gathered from every loop.
    var metrics: @Sendable (EventLoop) -> EventLoopFuture<String>
    var clusters: @Sendable () -> String
    var config: @Sendable () -> String
    var plugins: @Sendable () -> String
    /// The dashboard's data with the last N points of its time series.
    var dashboard: @Sendable (Int) -> DashboardData
}

/// The admin HTTP/1.1 endpoint:
/// - `/healthz` (the process is alive), `/ready` (started and not draining),
/// - `/metrics` (Prometheus), `/clusters` (endpoints with health, ejection
///   and discovery state), `/config` (the current generation, secrets
///   redacted), `/plugins` (loaded images: path, hash, ABI),
/// - `/dashboard` (a live page), `/dashboard/data` (its JSON) and
///   `/dashboard/events` (the same, as Server-Sent Events every second),
/// - `POST /reload` (200 with the new generation, or 400 with the reason the
///   running config stays), only on the full admin address: read-only
///   addresses answer 403, and every other method than GET/HEAD gets 405.
final class AdminHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    let sources: AdminSources
    /// A read-only address (`admin.read_only_addresses`): views only.
    let readOnly: Bool
    /// Where POST /reload answers, for the refusal's message.
    let fullAddress: String
    private var path = ""
    private var method = HTTPMethod.GET
    private var events: Scheduled<Void>?
    private var open = true

    init(sources: AdminSources, readOnly: Bool, fullAddress: String) {
        self.sources = sources
        self.readOnly = readOnly
        self.fullAddress = fullAddress
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            path = String(head.uri.split(separator: "?", maxSplits: 1).first ?? "")
            method = head.method
        case .body:
            break
        case .end:
            route(context)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        open = false
        events?.cancel()
        context.fireChannelInactive()
    }

    private func route(_ context: ChannelHandlerContext) {
        // Views answer GET (and HEAD); the one action, POST /reload, only
        // on the full admin address.
        if path == "/reload" && method == .POST && readOnly {
            return respond(context, .forbidden, "this admin address is read-only: POST /reload answers only on admin.address (\(fullAddress))\n")
        }
        if method != .GET && method != .HEAD && !(path == "/reload" && method == .POST) {
            return respond(context, .methodNotAllowed, "\(method) is not served here: the admin views answer GET\(readOnly ? " (this address is read-only)" : "; POST /reload reloads")\n")
        }
        switch path {
        case "/reload" where method == .POST:
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
            sources.metrics(context.eventLoop).assumeIsolated().whenComplete { result in
                switch result {
                case .success(let text): self.respond(context, .ok, text, contentType: "text/plain; version=0.0.4; charset=utf-8")
                case .failure(let error): self.respond(context, .internalServerError, "metrics: \(error)\n")
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
        case "/clusters": return (.ok, sources.clusters(), json)
        case "/config": return (.ok, sources.config(), json)
        case "/plugins": return (.ok, sources.plugins(), json)
        case "/events": return (.ok, GatewayEvents.shared.json(), json)
        case "/dashboard", "/dashboard/":
            return (.ok, DashboardPage.html(initial: sources.dashboard(DashboardSeries.capacity).json), "text/html; charset=utf-8")
        case "/dashboard/data": return (.ok, sources.dashboard(DashboardSeries.capacity).json + "\n", json)
        case "/reload":
            return readOnly ? (.forbidden, "this admin address is read-only: POST /reload answers only on admin.address (\(fullAddress))\n", text)
                : (.methodNotAllowed, "use POST /reload\n", text)
        default:
            return (.notFound, "not found; try /healthz, /ready, /metrics, /clusters, /config, /plugins, /events, /dashboard\(readOnly ? "" : " or POST /reload")\n", text)
        }
    }

    /// Server-Sent Events: the dashboard's JSON now and every second, until
    /// the client goes away.
    private func streamEvents(_ context: ChannelHandlerContext) {
        var headers = HTTPHeaders()
        headers.add(name: "content-type", value: "text/event-stream")
        headers.add(name: "cache-control", value: "no-cache")
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers))), promise: nil)
        sendEvent(context)
    }

    private func sendEvent(_ context: ChannelHandlerContext) {
        guard open else { return }
        // A reader that does not read gets no more until it does: the
        // stream never piles updates up in the gateway (these addresses
        // may be public).
        guard context.channel.isWritable else {
            events = context.eventLoop.assumeIsolated().scheduleTask(in: .seconds(1)) { self.sendEvent(context) }
            return
        }
        // Each update carries the newest point; the page appends it.
        let event = "data: \(sources.dashboard(1).json)\n\n"
        context.writeAndFlush(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: event)))), promise: nil)
        events = context.eventLoop.assumeIsolated().scheduleTask(in: .seconds(1)) { self.sendEvent(context) }
    }

    private func respond(_ context: ChannelHandlerContext, _ status: HTTPResponseStatus, _ body: String,
                         contentType: String = "text/plain; charset=utf-8") {
        var headers = HTTPHeaders()
        headers.add(name: "content-type", value: contentType)
        headers.add(name: "content-length", value: String(body.utf8.count))
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: body)))), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
    }
}

enum AdminServer {
    static func start(address: SocketAddressSpec, readOnly: Bool, fullAddress: SocketAddressSpec, group: EventLoopGroup,
                      sources: AdminSources) async throws -> Channel {
        let full = fullAddress.description
        return try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(AdminHandler(sources: sources, readOnly: readOnly, fullAddress: full))
                }
            }
            .bind(host: address.host, port: address.port).get()
    }
}
