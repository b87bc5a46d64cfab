import MeshgateHTTP2
import NIOCore
import MeshgateDiscovery
import MeshgateRouting
import MeshgateSupport
import MeshgateUpstream
import MeshgateOwnServices
import MeshgatePluginHost

/// Everything one event loop owns: its upstream pools (one per cluster) and
/// the downstream connections it serves. A downstream connection and all the
/// upstream streams of its calls live on the same loop, so the data path
/// never crosses threads or takes a lock.
///
/// `@unchecked Sendable`: the gateway creates one per loop at startup and
/// hands the reference to that loop's channel initializers; after that,
/// every access happens on `eventLoop` (checked in debug builds).
package final class LoopContext: @unchecked Sendable {
    package let eventLoop: EventLoop
    /// Coalesces writes of every HTTP/2 connection (both directions) on this loop.
    package let writeBatch = HTTP2WriteBatch()
    /// This loop's request counters (see `LoopMetrics`).
    package let metrics: LoopMetrics
    /// The process-wide cap on queued bytes (`Gateway.bufferBudget`), for
    /// this loop's upstream connections.
    package let bufferBudget: HTTP2BufferBudget
    /// What clusters answered to reflection (`Gateway.reflection`).
    package let reflection: ReflectionCache
    /// The gateway's listener and admin addresses (fixed at startup: a
    /// reload cannot change them), which upstream connections must not
    /// reach (`EndpointPool`).
    package let ownAddresses: GatewayOwnAddresses
    /// The buffers calls process their events in.
    let callScratch = CallScratch()
    /// What this loop's upstream pools see of it.
    package let upstreamLoop: UpstreamLoop
    /// This loop's access-log lines, written once per tick.
    let accessLog: AccessLog
    /// The current generation's upstream pools.
    package var clusters: [ClusterPool] { generation.clusters }
    private var downstreams: [ObjectIdentifier: any DrainableConnection] = [:]
    package private(set) var draining = false

    package let health: HealthRegistry
    package let ejections: EjectionRegistry
    package let index: Int
    /// What new calls use; replaced by a reload.
    package private(set) var generation: LoopGeneration

    package init(eventLoop: EventLoop, index: Int, serving: ServingConfig, health: HealthRegistry, ejections: EjectionRegistry, plugins: FilterChains,
         bufferBudget: HTTP2BufferBudget, reflection: ReflectionCache, metricSeries: MetricSeriesBudget, ownAddresses: GatewayOwnAddresses) {
        self.eventLoop = eventLoop
        self.ownAddresses = ownAddresses
        self.metrics = LoopMetrics(budget: metricSeries)
        self.bufferBudget = bufferBudget
        self.reflection = reflection
        self.health = health
        self.ejections = ejections
        self.index = index
        self.accessLog = AccessLog(eventLoop: eventLoop)
        self.upstreamLoop = UpstreamLoop(eventLoop: eventLoop, writeBatch: writeBatch, bufferBudget: bufferBudget, ownAddresses: ownAddresses)
        let clusters = Self.makeClusters(serving, replacing: [], loop: upstreamLoop, health: health, ejections: ejections)
        self.generation = LoopGeneration(number: 1, serving: serving, plugins: plugins, loopIndex: index, clusters: clusters)
        metrics.enabled = serving.config.runtime.metrics
    }

    /// Pools for `serving`'s clusters. An endpoint that stays (same cluster,
    /// address and connection settings) keeps its pool, with its open
    /// connections, backoff and health; new ones start from the shared
    /// health and ejection state.
    private static func makeClusters(_ serving: ServingConfig, replacing previous: [ClusterPool], loop: UpstreamLoop,
                                     health: HealthRegistry, ejections: EjectionRegistry) -> [ClusterPool] {
        var existing: [String: EndpointPool] = [:]
        for cluster in previous {
            for endpoint in cluster.endpoints { existing["\(cluster.name) \(endpoint.address)"] = endpoint }
        }
        return serving.clusters.enumerated().map { i, config in
            ClusterPool(config: config, index: i) { endpoint in
                let address = endpoint.address.description
                if let kept = existing["\(config.name) \(address)"], kept.cluster.sameConnectionSettings(as: config),
                   kept.tls === serving.tls.clusters[config.name] { return kept }
                let made = EndpointPool(endpoint: endpoint, cluster: config, loop: loop, tls: serving.tls.clusters[config.name])
                made.healthy = health.isHealthy(cluster: config.name, address: address)
                made.ejected = ejections.isEjected(cluster: config.name, endpointID: ClusterPool.endpointID(address: address))
                return made
            }
        }
    }

    /// Reload: new calls use `plugins`/`serving` from now on; the previous
    /// generation is retired and reports through `onOldDrained` when its
    /// last call has ended on this loop.
    package func install(number: Int, serving: ServingConfig, plugins: FilterChains, onOldDrained: @escaping () -> Void) {
        eventLoop.assertInEventLoop()
        let old = generation
        let clusters = Self.makeClusters(serving, replacing: old.clusters, loop: upstreamLoop, health: health, ejections: ejections)
        generation = LoopGeneration(number: number, serving: serving, plugins: plugins, loopIndex: index, clusters: clusters)
        metrics.enabled = serving.config.runtime.metrics
        old.retire(onDrained: onOldDrained)
    }

    /// An active health check changed an endpoint's state (pushed to every loop).
    package func setEndpointHealth(cluster name: String, address: String, healthy: Bool) {
        eventLoop.assertInEventLoop()
        for cluster in clusters where cluster.name == name {
            for endpoint in cluster.endpoints where endpoint.address == address { endpoint.healthy = healthy }
        }
    }

    /// Outlier detection ejected (or let back) an endpoint (pushed to every loop).
    package func setEndpointEjected(cluster name: String, endpointID: UInt64, _ ejected: Bool) {
        eventLoop.assertInEventLoop()
        for cluster in clusters where cluster.name == name { cluster.setEjected(endpointID: endpointID, ejected) }
    }

    /// Every downstream connection of this loop: HTTP/2 ones, and gRPC-Web
    /// ones served over HTTP/1.1 (their HTTP/2 handler handed them over),
    /// drained and counted alike.
    package func register(_ connection: any DrainableConnection) {
        eventLoop.assertInEventLoop()
        downstreams[ObjectIdentifier(connection)] = connection
        if draining { connection.beginDrain() }
    }

    package func unregister(_ connection: any DrainableConnection) {
        downstreams.removeValue(forKey: ObjectIdentifier(connection))
    }

    /// Mirrored calls still running (they may outlive their calls).
    private var shadows: [ObjectIdentifier: ShadowStream] = [:]

    /// One repeating check for all of them (no timer per shadow: it would
    /// cost two allocations per mirrored call); runs while any is live.
    private var shadowSweep: Scheduled<Void>?
    package static let shadowSweepInterval = TimeAmount.milliseconds(100)

    func shadowStarted(_ shadow: ShadowStream) {
        shadows[ObjectIdentifier(shadow)] = shadow
        if shadowSweep == nil { armShadowSweep() }
    }

    private func armShadowSweep() {
        shadowSweep = eventLoop.assumeIsolated().scheduleTask(in: Self.shadowSweepInterval) {
            self.shadowSweep = nil
            self.sweepShadows()
        }
    }

    /// Abandons the shadows past their deadline (at most one interval
    /// late); the sweep stops when none is left.
    private func sweepShadows() {
        let now = NIODeadline.now()
        var expired: [ShadowStream] = []
        for shadow in shadows.values where shadow.deadline <= now { expired.append(shadow) }
        for shadow in expired { shadow.abandon() }
        if !shadows.isEmpty { armShadowSweep() }
    }

    func shadowEnded(_ shadow: ShadowStream) { shadows.removeValue(forKey: ObjectIdentifier(shadow)) }

    package var downstreamCount: Int { downstreams.count }

    package var activeCallCount: Int {
        downstreams.values.reduce(0) { $0 + $1.activeCalls }
    }

    /// GOAWAY to every downstream connection; each closes when its calls end.
    package func beginDrain() {
        eventLoop.assertInEventLoop()
        draining = true
        for connection in downstreams.values { connection.beginDrain() }
    }

    /// The drain timeout passed: close what is left.
    package func closeAll() {
        for connection in downstreams.values { connection.closeNow() }
        for cluster in clusters { cluster.closeAll() }
    }

    /// At exit, after the calls are gone.
    package func destroyPluginInstances() {
        // Shadows outlive calls: none may call into a plugin after this.
        for shadow in Array(shadows.values) { shadow.abandonSilently() }
        generation.instances.destroyAll()
    }
}
