import GatewayHost
import MeshgateJSON
import NIOCore
import MeshgateSupport
import MeshgateUpstream

/// What the admin server shows: every view reads one generation snapshot,
/// so a generation number never stands next to another generation's config.
extension Gateway {
    /// The admin endpoints' data sources, and the dashboard's sampler.
    /// `adminLoop` runs the admin servers and renders /metrics.
    package func adminSources(adminLoop: EventLoop) -> (AdminSources, DashboardSampler) {
        let sampler = DashboardSampler(collect: { [weak self] loop in
            self?.collectMetrics(on: loop) ?? loop.makeFailedFuture(GatewayError(.internalError, "the gateway is gone"))
        }, statuses: { [health] in health.allStatuses() }, routes: { [generations] in
            let current = generations.current
            return DashboardRoute.routes(current.serving, current.plugins)
        })
        let generations = self.generations
        let sources = AdminSources(
            health: health,
            reload: { [weak self] in self?.reload() ?? .failure(GatewayError(.internalError, "the gateway is gone")) },
            metrics: MetricsScrapes(loop: adminLoop) { [weak self] loop, counts in
                self?.collectMetrics(on: loop).map { snapshot in
                    var snapshot = snapshot
                    snapshot.scrapes = counts
                    return snapshot.prometheusText()
                } ?? loop.makeSucceededFuture("")
            },
            clusters: { [weak self] readOnly in self?.clustersJSON(readOnly: readOnly) ?? "{}" },
            config: { readOnly in
                let current = generations.current
                return AdminViews.config(current.serving, generation: current.number, readOnly: readOnly)
            },
            plugins: { AdminViews.plugins(generations.current.plugins) },
            dashboard: { sampler.data(seriesPoints: $0) })
        return (sources, sampler)
    }

    /// `/metrics` and the dashboard: every loop's counters, copied on that
    /// loop (the data path never waits for a scrape), added up on `loop`.
    package func collectMetrics(on loop: EventLoop) -> EventLoopFuture<MetricsSnapshot> {
        let snapshots = contexts.map { context in context.eventLoop.submit { context.metricsSnapshot() } }
        return EventLoopFuture.whenAllSucceed(snapshots, on: loop).map { loops in
            let current = self.generations.current
            var endpoints: [EndpointView] = []
            var discovery: [MetricsSnapshot.DiscoveryState] = []
            for cluster in current.serving.clusters {
                for endpoint in cluster.endpoints {
                    let address = endpoint.address.description
                    var view = EndpointView(cluster: cluster.name, address: address)
                    view.healthy = self.health.isHealthy(cluster: cluster.name, address: address)
                    view.ejected = self.ejections.isEjected(cluster: cluster.name, endpointID: ClusterPool.endpointID(address: address))
                    view.weight = endpoint.weight
                    endpoints.append(view)
                }
                if let status = self.discovery.status(of: cluster.name) {
                    discovery.append(.init(cluster: cluster.name, source: status.source, ok: status.consecutiveFailures == 0 && status.endpoints != nil,
                                           endpoints: status.endpoints?.count ?? 0, failures: status.totalFailures, updates: status.updates))
                }
            }
            return MetricsSnapshot(loops: loops, endpoints: endpoints, discovery: discovery, ejections: self.ejections.ejectionsTotal,
                                   generation: current.number, counters: self.counters.values,
                                   buffers: (self.bufferBudget.reservedBytes, self.bufferBudget.limit, self.bufferBudget.refusals),
                                   listenerRefusals: zip(self.startup.listeners, self.listenerLimits).map { ($0.config.name, $1.refused) })
        }
    }

    /// Drops the request series no loop has had a call for in `idle`: each
    /// loop says which of its series are idle and which are not; those
    /// idle wherever they exist go (a series dropped on one loop only
    /// would make the summed counter go down while it still counts
    /// elsewhere). Their places in `runtime.max_metric_series` are free
    /// again. Runs on the control thread; each loop's part on that loop.
    package func expireIdleSeries(idle: Duration) -> EventLoopFuture<Void> {
        let idleNanos = UInt64(idle.nanosecondsClamped)
        let loop = ControlThread.loop
        let reports = contexts.map { context in
            context.eventLoop.submit { context.metrics.seriesActivity(nowNanos: NIODeadline.now().uptimeNanoseconds, idleNanos: idleNanos) }
        }
        return EventLoopFuture.whenAllSucceed(reports, on: loop).flatMap { reports in
            var idleKeys = Set<LoopMetrics.CallKey>()
            for report in reports { idleKeys.formUnion(report.idle) }
            for report in reports { idleKeys.subtract(report.active) }
            guard !idleKeys.isEmpty else { return loop.makeSucceededVoidFuture() }
            let keys = idleKeys
            let expired = self.contexts.map { context in
                context.eventLoop.submit { context.metrics.expire(keys, nowNanos: NIODeadline.now().uptimeNanoseconds, idleNanos: idleNanos) }
            }
            return EventLoopFuture.andAllSucceed(expired, on: loop)
        }
    }

    /// `/clusters`: every cluster of the current generation, its endpoints
    /// with health and ejection, and its discovery state. A read-only
    /// address does not get the discovery source's last error (it may name
    /// files, hosts and what they answered).
    package func clustersJSON(readOnly: Bool = false) -> String {
        let current = generations.current
        var json = JSONWriter()
        json.object { o in
            o.field("generation", current.number)
            o.field("clusters") {
                $0.array(current.serving.clusters) { json, cluster in
                    json.object { o in
                        o.field("name", cluster.name)
                        o.field("endpoints") {
                            $0.array(cluster.endpoints) { json, endpoint in
                                let address = endpoint.address.description
                                json.object { o in
                                    o.field("address", address)
                                    o.field("weight", endpoint.weight)
                                    o.field("healthy", health.isHealthy(cluster: cluster.name, address: address))
                                    o.field("ejected", ejections.isEjected(cluster: cluster.name, endpointID: ClusterPool.endpointID(address: address)))
                                    o.field("metadata") {
                                        $0.object { m in
                                            for (key, value) in endpoint.metadata.sorted(by: { $0.key < $1.key }) { m.field(key, value) }
                                        }
                                    }
                                }
                            }
                        }
                        if let status = discovery.status(of: cluster.name) {
                            o.field("discovery") {
                                $0.object { d in
                                    d.field("source", status.source)
                                    d.field("state", status.state)
                                    d.field("last_error", status.lastError.map { readOnly ? AdminViews.redactedError : $0 })
                                    d.field("consecutive_failures", status.consecutiveFailures)
                                    d.field("failures_total", status.totalFailures)
                                    d.field("updates", status.updates)
                                    d.key("last_success_unix")
                                    if let last = status.lastSuccess { d.int(Int(last)) } else { d.null() }
                                    d.field("dropped_endpoints", status.droppedEndpoints)
                                    d.field("refused_own_addresses") { $0.array(status.refusedOwnAddresses) { $0.string($1) } }
                                    d.field("refused_own_addresses_total", status.refusedOwnAddressCount)
                                }
                            }
                        }
                    }
                }
            }
        }
        return json.text + "\n"
    }
}
