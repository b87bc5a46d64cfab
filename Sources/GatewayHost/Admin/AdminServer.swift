import NIOCore
import NIOHTTP1
import NIOPosix

/// The admin HTTP/1.1 endpoint: `/healthz` (the process is alive) and
/// `/ready` (started and not draining: send traffic here). Metrics, config
/// and the dashboard join it with the observability work.
final class AdminHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    let health: HealthRegistry
    private var path = ""

    init(health: HealthRegistry) {
        self.health = health
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            path = String(head.uri.split(separator: "?", maxSplits: 1).first ?? "")
        case .body:
            break
        case .end:
            let (status, body) = answer()
            var headers = HTTPHeaders()
            headers.add(name: "content-type", value: "text/plain; charset=utf-8")
            headers.add(name: "content-length", value: String(body.utf8.count))
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
            context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: body)))), promise: nil)
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        }
    }

    private func answer() -> (HTTPResponseStatus, String) {
        switch path {
        case "/healthz":
            return (.ok, "ok\n")
        case "/ready":
            return health.isReady ? (.ok, "ready\n") : (.serviceUnavailable, "not ready (starting or draining)\n")
        default:
            return (.notFound, "not found; try /healthz or /ready\n")
        }
    }
}

enum AdminServer {
    static func start(address: SocketAddressSpec, group: EventLoopGroup, health: HealthRegistry) async throws -> Channel {
        try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(AdminHandler(health: health))
                }
            }
            .bind(host: address.host, port: address.port).get()
    }
}
