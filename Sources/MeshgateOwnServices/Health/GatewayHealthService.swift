import GRPCHealthProto
import MeshgateGRPC
import MeshgateGRPCCalls
import MeshgateHTTP2
import MeshgateSupport
import MeshgateUpstream
import NIOCore

/// grpc.health.v1.Health served by the gateway on every listener.
package enum GatewayHealthService {
    package static let pathPrefix = "/grpc.health.v1.Health/"
    /// Every method takes one HealthCheckRequest (a service name: a few
    /// bytes); 4 KiB leaves room for any real name and no more.
    package static let requestLimits = GRPCServerCall.RequestLimits(maxMessageBytes: 4096, maxMessages: 1)

    /// Answers a health call.
    package static func handle(connection: HTTP2Connection, stream: Int32, headers: HTTP2HeaderList, path: String,
                       registry: HealthRegistry, eventLoop: EventLoop, budget: GRPCServerCallBudget) -> GRPCServerCall {
        // The head is not kept: the service reads none of it, and a call
        // may stay open for long (Watch).
        let call = GRPCServerCall(connection: connection, stream: stream, headers: HTTP2HeaderList(), path: path,
                                  limits: requestLimits, budget: budget)
        call.onRefused = { LimitCounters.shared.ownServiceRefused($0) }
        if call.refuseUnlessAdmitted() { return call }
        switch path.dropFirst(pathPrefix.count) {
        case "Check": check(call, registry)
        case "Watch": watch(call, registry, eventLoop)
        case "List": list(call, registry)
        default:
            call.onEnd = { call.finish(GRPCStatus(.unimplemented, "grpc.health.v1.Health has no method \(path)")) }
        }
        return call
    }

    /// The one request of a health method, then `body` once the client
    /// ended its side. No message, or one that does not decode, ends the
    /// call INTERNAL, as grpc-go and grpc-java answer; a second message is
    /// refused by the call's limits.
    private static func request(_ call: GRPCServerCall, then body: @escaping (Grpc_Health_V1_HealthCheckRequest) -> Void) {
        var request: Grpc_Health_V1_HealthCheckRequest?
        call.onMessage = { bytes in
            guard let decoded = call.decode(Grpc_Health_V1_HealthCheckRequest.self, bytes) else {
                return call.finish(GRPCStatus(.internal, "\(call.path): the request is not a grpc.health.v1.HealthCheckRequest"))
            }
            request = decoded
        }
        call.onEnd = {
            guard let request else {
                return call.finish(GRPCStatus(.internal, "\(call.path) takes one request message; the client sent none"))
            }
            body(request)
        }
    }

    private static func response(_ status: HealthRegistry.Status) -> Grpc_Health_V1_HealthCheckResponse {
        var r = Grpc_Health_V1_HealthCheckResponse()
        r.status = status
        return r
    }

    package static func check(_ call: GRPCServerCall, _ registry: HealthRegistry) {
        request(call) { request in
            guard let status = registry.status(of: request.service) else {
                return call.finish(GRPCStatus(.notFound, "unknown service '\(request.service)': no route of this gateway serves it"))
            }
            call.send(response(status))
            call.finish()
        }
    }

    package static func watch(_ call: GRPCServerCall, _ registry: HealthRegistry, _ eventLoop: EventLoop) {
        request(call) { request in
            let id = ObjectIdentifier(call)
            let watcher = HealthRegistry.Watcher(
                send: { [weak call] status in call?.send(response(status)) },
                finish: { [weak call] in call?.finish(GRPCStatus(.unavailable, "the gateway is shutting down")) })
            let first = registry.addWatch(service: request.service, id: id, loop: eventLoop, watcher: watcher)
            call.send(response(first))
            call.onClose = { registry.removeWatch(id: id) }
        }
    }

    package static func list(_ call: GRPCServerCall, _ registry: HealthRegistry) {
        call.onEnd = {
            guard call.messagesReceived == 1 else {
                return call.finish(GRPCStatus(.internal, "\(call.path) takes one request message; the client sent none"))
            }
            var r = Grpc_Health_V1_HealthListResponse()
            for (service, status) in registry.allStatuses() { r.statuses[service] = response(status) }
            call.send(r)
            call.finish()
        }
    }
}
