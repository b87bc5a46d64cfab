import GRPCHealthProto
import MeshProto
import MeshgateGRPC
import MeshgateGRPCCalls

/// grpc.health.v1.Health: Check, Watch and List over the replica's statuses.
enum HealthService {
    static func register(_ table: inout [String: (GRPCServerCall, ReplicaState) -> Void]) {
        table["/grpc.health.v1.Health/Check"] = check
        table["/grpc.health.v1.Health/Watch"] = watch
        table["/grpc.health.v1.Health/List"] = list
    }

    static func check(_ call: GRPCServerCall, _ replica: ReplicaState) {
        var request = Grpc_Health_V1_HealthCheckRequest()
        call.onMessage = { request = call.decode(Grpc_Health_V1_HealthCheckRequest.self, $0) ?? request }
        call.onEnd = {
            guard let status = replica.health[request.service] else {
                return call.finish(GRPCStatus(.notFound, "unknown service '\(request.service)'"))
            }
            var response = Grpc_Health_V1_HealthCheckResponse()
            response.status = status
            call.send(response)
            call.finish()
        }
    }

    static func watch(_ call: GRPCServerCall, _ replica: ReplicaState) {
        var request = Grpc_Health_V1_HealthCheckRequest()
        call.onMessage = { request = call.decode(Grpc_Health_V1_HealthCheckRequest.self, $0) ?? request }
        call.onEnd = {
            let service = request.service
            func send(_ status: Grpc_Health_V1_HealthCheckResponse.ServingStatus) {
                var response = Grpc_Health_V1_HealthCheckResponse()
                response.status = status
                call.send(response)
            }
            send(replica.health[service] ?? .serviceUnknown)
            replica.watch(service, owner: call) { send($0) }
            call.onClose = { [unowned call] in replica.unwatch(service, owner: call) }
        }
    }

    static func list(_ call: GRPCServerCall, _ replica: ReplicaState) {
        call.onEnd = {
            var response = Grpc_Health_V1_HealthListResponse()
            for (service, status) in replica.health {
                var entry = Grpc_Health_V1_HealthCheckResponse()
                entry.status = status
                response.statuses[service] = entry
            }
            call.send(response)
            call.finish()
        }
    }
}
