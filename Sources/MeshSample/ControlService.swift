import MeshProto
import MeshgateGRPC
import MeshgateGRPCCalls

/// mesh.v1.SampleControl: the knobs tests turn on a replica.
enum ControlService {
    static func register(_ table: inout [String: (GRPCServerCall, ReplicaState) -> Void]) {
        table["/mesh.v1.SampleControl/SetServing"] = setServing
        table["/mesh.v1.SampleControl/SetFaults"] = setFaults
        table["/mesh.v1.SampleControl/GetStats"] = getStats
    }

    static func reply(_ call: GRPCServerCall, _ replica: ReplicaState) {
        var reply = Mesh_V1_ControlReply()
        reply.replicaID = replica.id
        call.send(reply)
        call.finish()
    }

    static func setServing(_ call: GRPCServerCall, _ replica: ReplicaState) {
        var request = Mesh_V1_SetServingRequest()
        call.onMessage = { request = call.decode(Mesh_V1_SetServingRequest.self, $0) ?? request }
        call.onEnd = {
            let status: ReplicaState.ServingStatus = request.serving ? .serving : .notServing
            let services = request.service.isEmpty ? Array(replica.health.keys) : [request.service]
            for service in services { replica.setHealth(service, status) }
            reply(call, replica)
        }
    }

    static func setFaults(_ call: GRPCServerCall, _ replica: ReplicaState) {
        var request = Mesh_V1_FaultConfig()
        call.onMessage = { request = call.decode(Mesh_V1_FaultConfig.self, $0) ?? request }
        call.onEnd = {
            replica.faults = request
            reply(call, replica)
        }
    }

    static func getStats(_ call: GRPCServerCall, _ replica: ReplicaState) {
        call.onEnd = {
            call.send(replica.stats)
            call.finish()
        }
    }
}
