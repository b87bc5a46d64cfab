import NIOCore
import MeshgateRouting

/// Runs the active health checks of every cluster that has `health_check:`,
/// all on one event loop (the probes are few and cheap).
///
/// `@unchecked Sendable`: created for `eventLoop` and touched only from it
/// after `start`, which hops there.
public final class HealthChecker: @unchecked Sendable {
    public let eventLoop: EventLoop
    private var probes: [EndpointProbe] = []
    private let serving: ServingConfig
    private let registry: HealthRegistry
    private let epoch: Int

    public init(serving: ServingConfig, registry: HealthRegistry, eventLoop: EventLoop, epoch: Int = 0) {
        self.serving = serving
        self.epoch = epoch
        self.registry = registry
        self.eventLoop = eventLoop
    }

    public func start() {
        eventLoop.execute {
            for (c, cluster) in self.serving.clusters.enumerated() {
                guard let check = cluster.healthCheck else { continue }
                for (e, endpoint) in cluster.endpoints.enumerated() {
                    let probe = EndpointProbe(epoch: self.epoch, cluster: c, endpoint: e, config: endpoint, check: check,
                                              registry: self.registry, eventLoop: self.eventLoop,
                                              tls: self.serving.tls.clusters[cluster.name])
                    self.probes.append(probe)
                    probe.start()
                }
            }
        }
    }

    public func stop() {
        eventLoop.execute {
            self.probes.forEach { $0.stop() }
            self.probes.removeAll()
        }
    }
}
