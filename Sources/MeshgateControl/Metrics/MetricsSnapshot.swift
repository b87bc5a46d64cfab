import GatewayHost
import MeshgateCallCore
import MeshgateGRPC
import MeshgateRouting
import MeshgateSupport

/// One event loop's counters and gauges, copied on that loop for a scrape.
package struct LoopMetricsSnapshot: Sendable {
    package var calls: [LoopMetrics.CallKey: LoopMetrics.CallSeries]
    package var attempts: [String: [UInt64]]
    package var localReplies: GRPCStatusCounts
    package var downstreamConnections: Int
    package var activeCalls: Int
    /// This loop's counters per endpoint.
    package var endpoints: [EndpointView]
}

extension LoopContext {
    /// Copies this loop's metrics (on this loop).
    package func metricsSnapshot() -> LoopMetricsSnapshot {
        eventLoop.assertInEventLoop()
        var endpoints: [EndpointView] = []
        for cluster in clusters {
            for pool in cluster.endpoints {
                var view = EndpointView(cluster: cluster.name, address: pool.address)
                view.inFlight = pool.inFlight
                view.connections = pool.connections.count
                view.attemptCodes = pool.attemptCodes
                endpoints.append(view)
            }
        }
        return LoopMetricsSnapshot(calls: metrics.calls, attempts: metrics.attempts, localReplies: metrics.localReplies,
                                   downstreamConnections: downstreamCount, activeCalls: activeCallCount, endpoints: endpoints)
    }
}

/// What `/metrics` shows: every loop's snapshot added up, plus the
/// gateway-wide state (health, ejections, discovery, reloads).
package struct MetricsSnapshot: Sendable {
    package struct DiscoveryState: Sendable {
        package var cluster: String
        package var source: String
        package var ok: Bool
        package var endpoints: Int
        package var failures: Int
        package var updates: Int
    }

    package var loops: [LoopMetricsSnapshot]
    /// Every endpoint of the current generation with its gateway-wide state.
    package var endpoints: [EndpointView]
    package var discovery: [DiscoveryState]
    package var ejections: [String: UInt64]
    package var generation: Int
    package var counters: GatewayCounters.Values
    package var buffers: (reserved: Int, limit: Int, refusals: UInt64)
    /// Connections each listener closed at once at its `max_connections`.
    package var listenerRefusals: [(listener: String, refused: UInt64)] = []
    package var pluginCounters: [(PluginCounters.Declared, UInt64)] = PluginCounters.shared.snapshot()
    package var limits: LimitCounters.Values = LimitCounters.shared.snapshot()
    /// /metrics' own gathers and scrapes (nil outside a scrape).
    package var scrapes: MetricsScrapes.Counts?

    /// Prometheus text exposition format 0.0.4.
    package func prometheusText() -> String {
        var out = PrometheusWriter()

        var calls: [LoopMetrics.CallKey: LoopMetrics.CallSeries] = [:]
        var attempts: [String: [UInt64]] = [:]
        var localReplies = GRPCStatusCounts()
        for loop in loops {
            for (key, series) in loop.calls { calls[key, default: LoopMetrics.CallSeries()].add(series) }
            for (cluster, counts) in loop.attempts {
                attempts[cluster] = zip(attempts[cluster] ?? [UInt64](repeating: 0, count: counts.count), counts).map { $0 + $1 }
            }
            localReplies.add(loop.localReplies)
        }
        let sortedCalls = calls.sorted { ($0.key.path, $0.key.cluster) < ($1.key.path, $1.key.cluster) }

        out.header("grpc_requests_total", "counter", "RPCs the gateway finished, by service, method, cluster and gRPC status code.")
        for (key, series) in sortedCalls {
            let (service, method) = Self.split(key.path)
            for (code, count) in series.codes.nonZero {
                out.sample("grpc_requests_total", ["service": service, "method": method, "cluster": key.cluster, "code": code.name], count)
            }
        }
        for (code, count) in localReplies.nonZero {
            out.sample("grpc_requests_total", ["service": "", "method": "", "cluster": "", "code": code.name], count)
        }

        out.header("grpc_request_duration_seconds", "histogram", "Time from request headers to the final status, per service and method.")
        for (key, series) in sortedCalls {
            let (service, method) = Self.split(key.path)
            let labels = ["service": service, "method": method, "cluster": key.cluster]
            var cumulative: UInt64 = 0
            for (i, bound) in LoopMetrics.durationBounds.enumerated() {
                cumulative += series.buckets[i]
                out.sample("grpc_request_duration_seconds_bucket", labels.merging(["le": PrometheusWriter.number(bound)]) { a, _ in a }, cumulative)
            }
            cumulative += series.buckets[LoopMetrics.durationBounds.count]
            out.sample("grpc_request_duration_seconds_bucket", labels.merging(["le": "+Inf"]) { a, _ in a }, cumulative)
            out.sample("grpc_request_duration_seconds_sum", labels, series.sumSeconds)
            out.sample("grpc_request_duration_seconds_count", labels, series.count)
        }

        out.header("grpc_active_connections", "gauge", "Open client (downstream) connections.")
        out.sample("grpc_active_connections", [:], loops.reduce(0) { $0 + $1.downstreamConnections })
        out.header("meshgate_active_calls", "gauge", "RPCs in flight through the gateway.")
        out.sample("meshgate_active_calls", [:], loops.reduce(0) { $0 + $1.activeCalls })

        out.header("meshgate_buffered_bytes", "gauge", "Bytes queued for peers that do not read, all connections (as reserved from the global budget, in 64 KiB granules).")
        out.sample("meshgate_buffered_bytes", [:], buffers.reserved)
        out.header("meshgate_buffer_limit_bytes", "gauge", "runtime.global_buffer_limit_bytes (0: no cap).")
        out.sample("meshgate_buffer_limit_bytes", [:], buffers.limit)
        out.header("meshgate_buffer_limit_refusals_total", "counter", "Times the global buffer cap had no room: for queued bytes (the largest queued streams of a connection were reset) or for bytes a call keeps (see meshgate_held_bytes_refusals_total).")
        out.sample("meshgate_buffer_limit_refusals_total", [:], buffers.refusals)

        limits.write(to: &out)

        out.header("meshgate_upstream_attempts_total", "counter", "Upstream attempts started, by cluster and kind (first, retry, hedge, transparent).")
        for (cluster, counts) in attempts.sorted(by: { $0.key < $1.key }) {
            for kind in AttemptKind.allCases {
                out.sample("meshgate_upstream_attempts_total", ["cluster": cluster, "kind": kind.label], counts[kind.rawValue])
            }
        }
        out.header("meshgate_upstream_attempt_results_total", "counter", "Upstream attempts ended, by endpoint and gRPC status code (transport failures as UNAVAILABLE).")
        let sortedEndpoints = mergedEndpoints().values.sorted { ($0.cluster, $0.address) < ($1.cluster, $1.address) }
        for e in sortedEndpoints {
            for (code, count) in e.attemptCodes.nonZero {
                out.sample("meshgate_upstream_attempt_results_total", ["cluster": e.cluster, "endpoint": e.address, "code": code.name], count)
            }
        }
        out.header("meshgate_upstream_in_flight", "gauge", "Attempts in flight per endpoint.")
        for e in sortedEndpoints { out.sample("meshgate_upstream_in_flight", ["cluster": e.cluster, "endpoint": e.address], e.inFlight) }
        out.header("meshgate_upstream_connections", "gauge", "Open HTTP/2 connections per endpoint (all event loops).")
        for e in sortedEndpoints { out.sample("meshgate_upstream_connections", ["cluster": e.cluster, "endpoint": e.address], e.connections) }

        out.header("grpc_endpoint_health", "gauge", "1 when the endpoint passes its health checks (always 1 without checks), else 0.")
        for e in endpoints { out.sample("grpc_endpoint_health", ["cluster": e.cluster, "endpoint": e.address], e.healthy ? 1 : 0) }
        out.header("meshgate_endpoint_ejected", "gauge", "1 while outlier detection keeps the endpoint out of rotation.")
        for e in endpoints { out.sample("meshgate_endpoint_ejected", ["cluster": e.cluster, "endpoint": e.address], e.ejected ? 1 : 0) }
        out.header("meshgate_endpoint_weight", "gauge", "The endpoint's load-balancing weight.")
        for e in endpoints { out.sample("meshgate_endpoint_weight", ["cluster": e.cluster, "endpoint": e.address], e.weight) }
        out.header("meshgate_ejections_total", "counter", "Outlier ejections, by cluster.")
        for (cluster, count) in ejections.sorted(by: { $0.key < $1.key }) { out.sample("meshgate_ejections_total", ["cluster": cluster], count) }

        out.header("meshgate_discovery_healthy", "gauge", "1 when the cluster's discovery source answered last time, 0 while it fails.")
        for d in discovery { out.sample("meshgate_discovery_healthy", ["cluster": d.cluster, "source": d.source], d.ok ? 1 : 0) }
        out.header("meshgate_discovery_endpoints", "gauge", "Endpoints the cluster's discovery source last gave (kept through failures).")
        for d in discovery { out.sample("meshgate_discovery_endpoints", ["cluster": d.cluster, "source": d.source], d.endpoints) }
        out.header("meshgate_discovery_failures_total", "counter", "Failed resolutions, listings or watches of the cluster's discovery source.")
        for d in discovery { out.sample("meshgate_discovery_failures_total", ["cluster": d.cluster, "source": d.source], d.failures) }
        out.header("meshgate_discovery_updates_total", "counter", "Membership changes the cluster's discovery source brought.")
        for d in discovery { out.sample("meshgate_discovery_updates_total", ["cluster": d.cluster, "source": d.source], d.updates) }

        out.header("meshgate_config_generation", "gauge", "The config generation new calls use (reloads and membership changes add one).")
        out.sample("meshgate_config_generation", [:], generation)
        out.header("meshgate_config_reloads_total", "counter", "Config reloads, by result.")
        out.sample("meshgate_config_reloads_total", ["result": "ok"], counters.reloadsOK)
        out.sample("meshgate_config_reloads_total", ["result": "error"], counters.reloadsFailed)
        out.header("meshgate_plugin_loads_total", "counter", "Plugin images loaded (startup and reloads), by plugin.")
        for (name, count) in counters.pluginLoads.sorted(by: { $0.key < $1.key }) { out.sample("meshgate_plugin_loads_total", ["plugin": name], count) }
        out.header("meshgate_metric_series", "gauge", "Request series kept (service, method, cluster; runtime.max_metric_series caps them, idle ones expire).")
        out.sample("meshgate_metric_series", [:], calls.count)
        out.header("meshgate_listener_connections_refused_total", "counter", "Client connections closed at once because their listener had max_connections open.")
        for (listener, refused) in listenerRefusals { out.sample("meshgate_listener_connections_refused_total", ["listener": listener], refused) }
        out.header("meshgate_admin_connections_refused_total", "counter", "Admin connections closed at once because their address had admin.max_connections open.")
        out.sample("meshgate_admin_connections_refused_total", [:], counters.adminConnectionsRefused)
        if let scrapes {
            out.header("meshgate_metrics_gathers_total", "counter", "Times /metrics had every event loop copy its counters (at most one a second, shared by the scrapes waiting for it).")
            out.sample("meshgate_metrics_gathers_total", [:], scrapes.gathers)
            out.header("meshgate_metrics_scrapes_total", "counter", "/metrics requests, all admin addresses.")
            out.sample("meshgate_metrics_scrapes_total", [:], scrapes.scrapes)
        }

        // Plugins' own counters (ABI 1.1 counter_declare), grouped by name.
        var byName: [String: [(PluginCounters.Declared, UInt64)]] = [:]
        var order: [String] = []
        for entry in pluginCounters {
            if byName[entry.0.name] == nil { order.append(entry.0.name) }
            byName[entry.0.name, default: []].append(entry)
        }
        for name in order {
            let entries = byName[name]!
            out.header(name, "counter", entries[0].0.help.isEmpty ? "A plugin's counter." : entries[0].0.help)
            for (declared, value) in entries { out.raw(name, labels: declared.labels, value) }
        }
        return out.text
    }

    package static func split(_ path: String) -> (service: String, method: String) {
        if path == LoopMetrics.otherPath { return ("other", "other") }
        let (service, method) = GRPCPath.serviceAndMethod(path)
        return (String(service), String(method))
    }
}

extension MetricsSnapshot {
    /// Every loop's counters per endpoint, added up, by `EndpointView.id`.
    package func mergedEndpoints() -> [String: EndpointView] {
        var out: [String: EndpointView] = [:]
        for loop in loops {
            for e in loop.endpoints {
                if out[e.id] == nil {
                    out[e.id] = e
                } else {
                    out[e.id]!.addCounters(of: e)
                }
            }
        }
        return out
    }
}

extension LoopMetrics.CallSeries {
    package mutating func add(_ other: Self) {
        codes.add(other.codes)
        for i in buckets.indices { buckets[i] += other.buckets[i] }
        sumSeconds += other.sumSeconds
        count += other.count
    }
}
