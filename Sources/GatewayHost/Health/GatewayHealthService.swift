import GRPCHealthProto
import MeshgateGRPC
import MeshgateGRPCCalls
import MeshgateHTTP2

/// grpc.health.v1.Health served by the gateway on every listener.
enum GatewayHealthService {
    static let pathPrefix = "/grpc.health.v1.Health/"

    /// Answers a health call; nil when `path` is not a health method.
    static func handle(connection: HTTP2Connection, stream: Int32, headers: HTTP2HeaderList, path: String,
                       registry: HealthRegistry, loop: LoopContext) -> GRPCServerCall {
        let call = GRPCServerCall(connection: connection, stream: stream, headers: headers, path: path)
        switch path.dropFirst(pathPrefix.count) {
        case "Check": check(call, registry)
        case "Watch": watch(call, registry, loop)
        case "List": list(call, registry)
        default:
            call.onEnd = { call.finish(GRPCStatus(.unimplemented, "grpc.health.v1.Health has no method \(path)")) }
        }
        return call
    }

    private static func request(_ call: GRPCServerCall, then body: @escaping (Grpc_Health_V1_HealthCheckRequest) -> Void) {
        var request = Grpc_Health_V1_HealthCheckRequest()
        call.onMessage = { request = call.decode(Grpc_Health_V1_HealthCheckRequest.self, $0) ?? request }
        call.onEnd = { body(request) }
    }

    private static func response(_ status: HealthRegistry.Status) -> Grpc_Health_V1_HealthCheckResponse {
        var r = Grpc_Health_V1_HealthCheckResponse()
        r.status = status
        return r
    }

    static func check(_ call: GRPCServerCall, _ registry: HealthRegistry) {
        request(call) { request in
            guard let status = registry.status(of: request.service) else {
                return call.finish(GRPCStatus(.notFound, "unknown service '\(request.service)': no route of this gateway serves it"))
            }
            call.send(response(status))
            call.finish()
        }
    }

    static func watch(_ call: GRPCServerCall, _ registry: HealthRegistry, _ loop: LoopContext) {
        request(call) { request in
            let id = ObjectIdentifier(call)
            let watcher = HealthRegistry.Watcher(
                send: { [weak call] status in call?.send(response(status)) },
                finish: { [weak call] in call?.finish(GRPCStatus(.unavailable, "the gateway is shutting down")) })
            let first = registry.addWatch(service: request.service, id: id, loop: loop.eventLoop, watcher: watcher)
            call.send(response(first))
            call.onClose = { registry.removeWatch(id: id) }
        }
    }

    static func list(_ call: GRPCServerCall, _ registry: HealthRegistry) {
        call.onEnd = {
            var r = Grpc_Health_V1_HealthListResponse()
            for (service, status) in registry.allStatuses() { r.statuses[service] = response(status) }
            call.send(r)
            call.finish()
        }
    }
}
