import NIOCore
import NIOHTTP1
import NIOPosix

/// The admin HTTP/1.1 endpoint: `/healthz` (the process is alive),
/// `/ready` (started and not draining: send traffic here), `/clusters`
/// (JSON: endpoints with health, ejection and discovery state) and `POST
/// /reload` (reload the config file; 200 with the new generation, or 400
/// with the reason the running config stays). Metrics, config and the
/// dashboard join it with the observability work.
final class AdminHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart
    typealias Reload = @Sendable () -> Result<String, GatewayError>
    typealias Clusters = @Sendable () -> String
    typealias Metrics = @Sendable (EventLoop) -> EventLoopFuture<String>

    let health: HealthRegistry
    let reload: Reload
    let clusters: Clusters
    let metrics: Metrics
    private var path = ""
    private var method = HTTPMethod.GET

    init(health: HealthRegistry, reload: @escaping Reload, clusters: @escaping Clusters, metrics: @escaping Metrics) {
        self.health = health
        self.reload = reload
        self.clusters = clusters
        self.metrics = metrics
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            path = String(head.uri.split(separator: "?", maxSplits: 1).first ?? "")
            method = head.method
        case .body:
            break
        case .end:
            if path == "/reload" && method == .POST {
                // Plugin configs are created on the control thread; the
                // admin loop never waits for it.
                let reload = self.reload
                ControlThread.loop.submit { reload() }.hop(to: context.eventLoop).assumeIsolated().whenSuccess { result in
                    switch result {
                    case .success(let message): self.respond(context, .ok, message + "\n")
                    case .failure(let error): self.respond(context, .badRequest, error.message + "\n")
                    }
                }
                return
            }
            if path == "/metrics" {
                metrics(context.eventLoop).assumeIsolated().whenComplete { result in
                    switch result {
                    case .success(let text): self.respond(context, .ok, text, contentType: "text/plain; version=0.0.4; charset=utf-8")
                    case .failure(let error): self.respond(context, .internalServerError, "metrics: \(error)\n")
                    }
                }
                return
            }
            let (status, body) = answer()
            respond(context, status, body, contentType: path == "/clusters" ? "application/json" : "text/plain; charset=utf-8")
        }
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

    private func answer() -> (HTTPResponseStatus, String) {
        switch path {
        case "/healthz":
            return (.ok, "ok\n")
        case "/ready":
            return health.isReady ? (.ok, "ready\n") : (.serviceUnavailable, "not ready (starting or draining)\n")
        case "/clusters":
            return (.ok, clusters())
        case "/reload":
            return (.methodNotAllowed, "use POST /reload\n")
        default:
            return (.notFound, "not found; try /healthz, /ready, /metrics, /clusters or POST /reload\n")
        }
    }
}

enum AdminServer {
    static func start(address: SocketAddressSpec, group: EventLoopGroup, health: HealthRegistry,
                      reload: @escaping AdminHandler.Reload, clusters: @escaping AdminHandler.Clusters,
                      metrics: @escaping AdminHandler.Metrics) async throws -> Channel {
        try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(AdminHandler(health: health, reload: reload, clusters: clusters, metrics: metrics))
                }
            }
            .bind(host: address.host, port: address.port).get()
    }
}
