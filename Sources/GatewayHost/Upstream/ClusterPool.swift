/// One cluster's endpoints as seen from one event loop.
///
/// Endpoint choice here is a stopgap round robin until the balancer plugins
/// of the filter ABI replace it: it skips endpoints that active health
/// checks marked unhealthy and endpoints that recently failed to connect (in
/// reconnect backoff).
final class ClusterPool {
    let config: ClusterConfig
    private(set) var endpoints: [EndpointPool] = []
    private var next = 0

    init(config: ClusterConfig, loop: LoopContext) {
        self.config = config
        self.endpoints = config.endpoints.map { EndpointPool(endpoint: $0, cluster: config, loop: loop) }
    }

    var name: String { config.name }

    /// The next endpoint in turn that is healthy, not in `avoiding` and not
    /// backing off; nil when none is left.
    func pick(avoiding: [ObjectIdentifier]) -> EndpointPool? {
        let count = endpoints.count
        for step in 0..<count {
            let candidate = endpoints[(next + step) % count]
            if !candidate.healthy || candidate.isBackingOff || avoiding.contains(ObjectIdentifier(candidate)) { continue }
            next = (next + step + 1) % count
            return candidate
        }
        return nil
    }

    var hasHealthyEndpoint: Bool { endpoints.contains { $0.healthy } }

    func closeAll() {
        for endpoint in endpoints { endpoint.closeAll() }
    }
}
