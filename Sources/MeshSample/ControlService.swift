import MeshProto
import MeshgateGRPC

/// mesh.v1.SampleControl: the knobs tests turn on a replica.
enum ControlService {
    static func register(_ table: inout [String: (ServerCall) -> Void]) {
        table["/mesh.v1.SampleControl/SetServing"] = setServing
        table["/mesh.v1.SampleControl/SetFaults"] = setFaults
        table["/mesh.v1.SampleControl/GetStats"] = getStats
    }

    static func reply(_ call: ServerCall) {
        var reply = Mesh_V1_ControlReply()
        reply.replicaID = call.replica.id
        call.send(reply)
        call.finish()
    }

    static func setServing(_ call: ServerCall) {
        var request = Mesh_V1_SetServingRequest()
        call.onMessage = { request = call.decode(Mesh_V1_SetServingRequest.self, $0) ?? request }
        call.onEnd = {
            let status: ReplicaState.ServingStatus = request.serving ? .serving : .notServing
            let services = request.service.isEmpty ? Array(call.replica.health.keys) : [request.service]
            for service in services { call.replica.setHealth(service, status) }
            reply(call)
        }
    }

    static func setFaults(_ call: ServerCall) {
        var request = Mesh_V1_FaultConfig()
        call.onMessage = { request = call.decode(Mesh_V1_FaultConfig.self, $0) ?? request }
        call.onEnd = {
            call.replica.faults = request
            reply(call)
        }
    }

    static func getStats(_ call: ServerCall) {
        call.onEnd = {
            call.send(call.replica.stats)
            call.finish()
        }
    }
}
