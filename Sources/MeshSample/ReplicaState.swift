import GRPCHealthProto
import MeshProto
import NIOCore

/// Everything a sample replica knows: its id, health, injected faults and
/// counters. The sample runs one event loop, and this state is only touched
/// from it.
final class ReplicaState {
    typealias ServingStatus = Grpc_Health_V1_HealthCheckResponse.ServingStatus

    let id: String
    let eventLoop: EventLoop
    var faults = Mesh_V1_FaultConfig()
    var stats = Mesh_V1_Stats()
    private(set) var health: [String: ServingStatus]
    private var watchers: [String: [ObjectIdentifier: (ServingStatus) -> Void]] = [:]

    static let reportedServices = ["", "mesh.v1.MeshService", "mesh.v1.SampleControl"]

    init(id: String, eventLoop: EventLoop) {
        self.id = id
        self.eventLoop = eventLoop
        self.health = Dictionary(uniqueKeysWithValues: Self.reportedServices.map { ($0, .serving) })
        stats.replicaID = id
    }

    func setHealth(_ service: String, _ status: ServingStatus) {
        guard health[service] != status else { return }
        health[service] = status
        for notify in watchers[service, default: [:]].values { notify(status) }
    }

    func watch(_ service: String, owner: AnyObject, _ notify: @escaping (ServingStatus) -> Void) {
        watchers[service, default: [:]][ObjectIdentifier(owner)] = notify
    }

    func unwatch(_ service: String, owner: AnyObject) {
        watchers[service]?.removeValue(forKey: ObjectIdentifier(owner))
    }
}
