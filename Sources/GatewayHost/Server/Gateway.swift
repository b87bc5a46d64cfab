import Dispatch
import MeshgateHTTP2
import MeshgateTLS
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

#if canImport(Glibc)
import Glibc
#endif

/// The running gateway: event loops, listeners, and the drain on shutdown.
public final class Gateway: Sendable {
    public let runtime: GatewayRuntime
    private let group: MultiThreadedEventLoopGroup
    private let contexts: [ObjectIdentifier: LoopContext]
    private let state = NIOLockedValueBox(State())
    public let health: HealthRegistry
    private let checker: NIOLockedValueBox<HealthChecker>
    private let firstLoop: EventLoop
    /// The plugins of the first generation (see `currentPlugins`).
    public let plugins: PluginRuntime
    /// Outlier ejections, shared by every generation.
    public let ejections = EjectionRegistry()
    /// The clusters of the generation new calls use (see `clusterSignature`).
    private let currentClusters: NIOLockedValueBox<[String]>
    /// The TLS material of the generation new calls use (for rotation).
    private let currentTLS: NIOLockedValueBox<TLSMaterial>
    private let tlsWatch = NIOLockedValueBox<RepeatedTask?>(nil)
    private let sampler = NIOLockedValueBox<DashboardSampler?>(nil)
    /// Discovered endpoints of the clusters that have `discovery:`.
    public let discovery = DiscoveryManager()
    /// Reloads and plugin loads, for /metrics.
    let counters = GatewayCounters()
    /// The config as the file says it (before discovered endpoints are
    /// laid over it), and the runtime new calls use.
    private let currentFileConfig: NIOLockedValueBox<GatewayConfig>
    private let currentRuntime: NIOLockedValueBox<GatewayRuntime>

    private struct State {
        var listeners: [Channel] = []
        var admin: Channel?
        /// The generation new calls use, and its plugins.
        var generation = 1
        var plugins: PluginRuntime?
        /// Loops whose live generations use each plugin runtime: a runtime
        /// is destroyed when no generation uses it and it is not current.
        var pluginUsers: [ObjectIdentifier: Int] = [:]
        var shuttingDown = false
    }

    /// Loads the plugins of `config` (ConfigError when one cannot load or
    /// rejects its config), then sets up the event loops.
    /// Discovered clusters get their first endpoints before serving (up
    /// to 5 s; a source that has not answered by then starts empty).
    public init(config fileConfig: GatewayConfig) throws {
        try discovery.configure(fileConfig)
        discovery.waitForFirstAnswers(timeout: .seconds(5))
        let config = discovery.overlay(fileConfig)
        self.currentFileConfig = NIOLockedValueBox(fileConfig)
        self.runtime = GatewayRuntime(config, tls: try TLSMaterial.load(config))
        self.currentRuntime = NIOLockedValueBox(runtime)
        self.currentClusters = NIOLockedValueBox(Self.clusterSignature(config))
        self.currentTLS = NIOLockedValueBox(runtime.tls)
        ejections.setMembership(config.clusters)
        let plugins = try PluginRuntime.load(config, ejections: ejections)
        self.plugins = plugins
        counters.pluginsLoaded(Self.pluginNames(plugins))
        let threads = config.runtime.eventLoops ?? System.coreCount
        state.withLockedValue {
            $0.plugins = plugins
            $0.pluginUsers[ObjectIdentifier(plugins)] = threads
        }
        self.group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
        let loops = Array(group.makeIterator())
        let contextsBox = NIOLockedValueBox<[ObjectIdentifier: LoopContext]>([:])
        let health = HealthRegistry(runtime: runtime) { cluster, address, healthy in
            for context in contextsBox.withLockedValue({ Array($0.values) }) {
                context.eventLoop.execute { context.setEndpointHealth(cluster: cluster, address: address, healthy: healthy) }
            }
        }
        var contexts: [ObjectIdentifier: LoopContext] = [:]
        for (i, loop) in loops.enumerated() {
            let runtime = self.runtime
            let ejections = self.ejections
            contexts[ObjectIdentifier(loop)] = try loop.submit {
                LoopContext(eventLoop: loop, index: i, runtime: runtime, health: health, ejections: ejections, plugins: plugins)
            }.wait()
        }
        contextsBox.withLockedValue { $0 = contexts }
        ejections.setPublisher { cluster, endpointID, ejected in
            for context in contextsBox.withLockedValue({ Array($0.values) }) {
                context.eventLoop.execute { context.setEndpointEjected(cluster: cluster, endpointID: endpointID, ejected) }
            }
        }
        self.contexts = contexts
        self.health = health
        self.firstLoop = loops[0]
        self.checker = NIOLockedValueBox(HealthChecker(runtime: runtime, registry: health, eventLoop: loops[0]))
        discovery.setOnChange { [weak self] in self?.applyDiscoveredMembership() }
    }

    /// Binds every listener. Throws `GatewayError.listenFailed` naming the
    /// listener and address when one cannot bind.
    public func start() async throws {
        if let admin = runtime.config.admin {
            do {
                let sampler = DashboardSampler(collect: { [weak self] loop in
                    self?.collectMetrics(on: loop) ?? loop.makeFailedFuture(GatewayError(.internalError, "the gateway is gone"))
                }, statuses: { [health] in health.allStatuses() })
                self.sampler.withLockedValue { $0 = sampler }
                let sources = AdminSources(
                    health: health,
                    reload: { [weak self] in self?.reload() ?? .failure(GatewayError(.internalError, "the gateway is gone")) },
                    metrics: { [weak self] loop in
                        self?.collectMetrics(on: loop).map { $0.prometheusText() } ?? loop.makeSucceededFuture("")
                    },
                    clusters: { [weak self] in self?.clustersJSON() ?? "{}" },
                    config: { [weak self] in
                        guard let self else { return "{}" }
                        return AdminViews.config(self.currentRuntime.withLockedValue { $0 }, generation: self.state.withLockedValue { $0.generation })
                    },
                    plugins: { [weak self] in
                        guard let plugins = self?.state.withLockedValue({ $0.plugins }) else { return "{}" }
                        return AdminViews.plugins(plugins)
                    },
                    dashboard: { sampler.data() })
                let channel = try await AdminServer.start(address: admin.address, group: group, sources: sources)
                sampler.start()
                state.withLockedValue { $0.admin = channel }
                Log.info("admin listening", ["address": admin.address.description,
                                             "paths": "/healthz /ready /metrics /clusters /config /plugins /dashboard POST /reload"])
            } catch {
                try? await group.shutdownGracefully()
                throw GatewayError(.listenFailed, "admin: cannot listen on \(admin.address): \(Self.describe(error))")
            }
        }
        for listener in runtime.listeners {
            let contexts = self.contexts
            let tlsSource = runtime.tls.listeners[listener.index]
            let settings = HTTP2Settings(maxConcurrentStreams: UInt32(listener.config.maxConcurrentStreams))
            let bootstrap = ServerBootstrap(group: group)
                .serverChannelOption(.backlog, value: 1024)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
                .childChannelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        let loop = contexts[ObjectIdentifier(channel.eventLoop)]!
                        var tls: TLSHandler?
                        if let source = tlsSource {
                            // TLS below HTTP/2; each handshake takes the current (rotated) material.
                            let handler = try TLSHandler(context: source.current)
                            handler.handshakeTimeout = .nanoseconds(source.files.handshakeTimeout.nanosecondsClamped)
                            let peer = channel.remoteAddress.map { "\($0)" } ?? "?"
                            let name = listener.config.name
                            handler.onFailure = { reason in
                                Log.info("TLS handshake refused", ["listener": name, "peer": peer, "reason": reason])
                            }
                            try channel.pipeline.syncOperations.addHandler(handler)
                            tls = handler
                        }
                        let downstream = DownstreamConnection(listener: listener, loop: loop, tls: tls)
                        let http2 = HTTP2Connection(role: .server, settings: settings, writeBatch: loop.writeBatch, delegate: downstream)
                        try channel.pipeline.syncOperations.addHandler(http2)
                        loop.register(http2)
                    }
                }
            let address = listener.config.address
            do {
                let channel = try await bootstrap.bind(host: address.host, port: address.port).get()
                state.withLockedValue { $0.listeners.append(channel) }
                Log.info("listening", ["listener": listener.config.name, "address": address.description])
            } catch {
                await stopListeners()
                if let admin = state.withLockedValue({ $0.admin }) { try? await admin.close() }
                try? await group.shutdownGracefully()
                throw GatewayError(.listenFailed, "listener '\(listener.config.name)': cannot listen on \(address): \(Self.describe(error))")
            }
        }
        checker.withLockedValue { $0 }.start()
        // Certificate rotation: changed files apply to new handshakes.
        let watched = currentTLS
        let discovery = self.discovery
        tlsWatch.withLockedValue {
            $0 = ControlThread.loop.scheduleRepeatedTask(initialDelay: .seconds(1), delay: .seconds(1)) { _ in
                for source in watched.withLockedValue({ $0.all }) + discovery.tlsSources { source.reloadIfChanged() }
            }
        }
        health.markStarted()
        // A source may have changed between the first snapshot (init) and
        // now, before the gateway listened for changes: catch up once.
        ControlThread.loop.execute { [weak self] in self?.applyDiscoveredMembership() }
    }

    /// Runs until SIGTERM or SIGINT, then drains and returns.
    public func runUntilSignalled() async {
        let (signals, continuation) = AsyncStream.makeStream(of: String.self)
        let sources = [(SIGTERM, "SIGTERM"), (SIGINT, "SIGINT"), (SIGHUP, "SIGHUP")].map { sig, name -> DispatchSourceSignal in
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            source.setEventHandler { continuation.yield(name) }
            source.resume()
            return source
        }
        for await name in signals {
            if name == "SIGHUP" {
                _ = reload()
                continue
            }
            await drainAndStop(signal: name)
            break
        }
        sources.forEach { $0.cancel() }
    }

    /// Stop accepting, send GOAWAY everywhere, let in-flight RPCs finish
    /// (up to the drain timeout), then close what remains.
    public func drainAndStop(signal: String) async {
        let first = state.withLockedValue { s -> Bool in
            defer { s.shuttingDown = true }
            return !s.shuttingDown
        }
        guard first else { return }
        let timeout = runtime.config.runtime.drainTimeout
        Log.info("draining", ["signal": signal, "drain_timeout_ms": String(timeout.nanosecondsClamped / 1_000_000)])
        // Health turns NOT_SERVING first, so that whatever balances in
        // front of the gateway moves away before connections get GOAWAY.
        health.markDraining()
        try? await Task.sleep(for: .milliseconds(200))
        await stopListeners()
        for context in contexts.values {
            context.eventLoop.execute { context.beginDrain() }
        }
        // Watch streams would hold their connections until the timeout.
        try? await Task.sleep(for: .milliseconds(600))
        health.finishAllWatches()
        checker.withLockedValue { $0 }.stop()
        tlsWatch.withLockedValue { $0 }?.cancel()
        discovery.stopAll()
        sampler.withLockedValue { $0 }?.stop()
        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        var remaining = 0
        while clock.now < deadline {
            remaining = await activeConnections()
            if remaining == 0 { break }
            try? await Task.sleep(for: .milliseconds(50))
        }
        if remaining > 0 {
            Log.warning("drain timeout reached; closing remaining connections", ["connections": String(remaining)])
        }
        for context in contexts.values {
            try? await context.eventLoop.submit { context.closeAll() }.get()
        }
        for context in contexts.values {
            try? await context.eventLoop.submit { context.destroyPluginInstances() }.get()
        }
        state.withLockedValue { $0.plugins }?.destroy()
        // The admin server stays up through the drain, so /ready says 503.
        if let admin = state.withLockedValue({ s -> Channel? in defer { s.admin = nil }; return s.admin }) {
            try? await admin.close()
        }
        try? await group.shutdownGracefully()
        Log.info("stopped")
    }

    /// Reloads the config file: routes, filter chains, plugins (a replaced
    /// plugin file loads anew) and clusters (endpoints that stay keep their
    /// connections and health). New calls use the new generation at once;
    /// calls in flight finish on theirs, whose plugin instances, configs and
    /// dropped endpoints' connections go after their last call. On any error
    /// the current generation keeps serving and the error is returned (and
    /// logged). Listeners and the admin address need a restart.
    /// Reloads run one at a time, on the control thread.
    @discardableResult
    public func reload() -> Result<String, GatewayError> {
        ControlThread.run { self.reloadOnControlThread() }
    }

    private func reloadOnControlThread() -> Result<String, GatewayError> {
        let file = runtime.config.sourceFile
        let result = Result<String, GatewayError> { () throws(GatewayError) -> String in
            let fileConfig: GatewayConfig
            do {
                fileConfig = try ConfigLoader.load(file: file)
            } catch {
                throw GatewayError(.invalidConfig, "\(error)")
            }
            if let difference = Self.restartOnlyDifference(runtime.config, fileConfig) {
                throw GatewayError(.invalidConfig, "\(file): \(difference) changed; that needs a restart (the running config stays)")
            }
            let plugins: PluginRuntime
            do {
                plugins = try PluginRuntime.load(fileConfig, ejections: ejections)
            } catch {
                throw GatewayError(.invalidConfig, "\(error)")
            }
            let tls: TLSMaterial
            do {
                tls = try TLSMaterial.load(fileConfig, previous: currentTLS.withLockedValue { $0 })
                // Sources whose spec stayed keep running and keep their endpoints.
                try discovery.configure(fileConfig)
            } catch {
                plugins.destroy()
                throw GatewayError(.invalidConfig, "\(error)")
            }
            let config = discovery.overlay(fileConfig)
            let newRuntime = GatewayRuntime(config, tls: tls)
            currentTLS.withLockedValue { $0 = tls }
            currentFileConfig.withLockedValue { $0 = fileConfig }
            if clustersChanged(config) {
                applyClusters(newRuntime)
            } else {
                health.updateRoutes(newRuntime)
            }
            let number = install(runtime: newRuntime, plugins: plugins)
            counters.pluginsLoaded(Self.pluginNames(plugins))
            currentClusters.withLockedValue { $0 = Self.clusterSignature(config) }
            let names = Set(plugins.handles.map { "\($0.image.name) \($0.image.version) (\($0.image.sha256.prefix(12)))" }).sorted()
            return "generation \(number) loaded from \(file); plugins: \(names.joined(separator: ", "))"
        }
        counters.reload(succeeded: (try? result.get()) != nil)
        switch result {
        case .success(let message): Log.info("reloaded", ["detail": message])
        case .failure(let error): Log.error("reload failed; the running config stays", ["error": error.message])
        }
        return result
    }

    /// A discovery source changed a cluster's endpoints: a new generation
    /// with the same plugins and the new endpoints (kept endpoints keep
    /// their connections and health; dropped ones close after their calls).
    private func applyDiscoveredMembership() {
        guard !state.withLockedValue({ $0.shuttingDown }) else { return }
        let config = discovery.overlay(currentFileConfig.withLockedValue { $0 })
        guard clustersChanged(config) else { return }
        let runtime = GatewayRuntime(config, tls: currentTLS.withLockedValue { $0 })
        applyClusters(runtime)
        let plugins = state.withLockedValue { $0.plugins! }
        let number = install(runtime: runtime, plugins: plugins)
        currentClusters.withLockedValue { $0 = Self.clusterSignature(config) }
        Log.info("cluster membership applied", ["generation": String(number)])
    }

    /// Health and ejection state follow new cluster membership before any
    /// loop builds pools for it, so that a new endpoint of a health-checked
    /// cluster starts out of rotation until its first check passes.
    private func applyClusters(_ runtime: GatewayRuntime) {
        ejections.setMembership(runtime.clusters)
        let epoch = health.reconfigure(runtime)
        let next = HealthChecker(runtime: runtime, registry: health, eventLoop: firstLoop, epoch: epoch)
        let previous = checker.withLockedValue { c -> HealthChecker in
            defer { c = next }
            return c
        }
        previous.stop()
        next.start()
    }

    /// Makes `runtime` and `plugins` what new calls use on every loop; the
    /// previous generation retires there, and a plugin runtime no live
    /// generation uses any more is destroyed on the control thread.
    private func install(runtime: GatewayRuntime, plugins: PluginRuntime) -> Int {
        let loops = contexts.count
        let (number, old) = state.withLockedValue { s -> (Int, PluginRuntime?) in
            s.generation += 1
            s.pluginUsers[ObjectIdentifier(plugins), default: 0] += loops
            defer { s.plugins = plugins }
            return (s.generation, s.plugins)
        }
        currentRuntime.withLockedValue { $0 = runtime }
        for context in contexts.values {
            context.eventLoop.execute {
                context.install(number: number, runtime: runtime, plugins: plugins) {
                    if let old { self.release(old) }
                }
            }
        }
        return number
    }

    private func release(_ plugins: PluginRuntime) {
        let unused = state.withLockedValue { s -> Bool in
            let id = ObjectIdentifier(plugins)
            s.pluginUsers[id, default: 0] -= 1
            guard s.pluginUsers[id] == 0, s.plugins !== plugins, !s.shuttingDown else { return false }
            s.pluginUsers[id] = nil
            return true
        }
        // config_destroy runs off the event loops (the ABI's control thread).
        if unused { ControlThread.loop.execute { plugins.destroy() } }
    }

    static func pluginNames(_ plugins: PluginRuntime) -> [String] {
        Set(plugins.handles.map(\.image.name)).sorted()
    }

    /// `/metrics` and the dashboard: every loop's counters, copied on that
    /// loop (the data path never waits for a scrape), added up on `loop`.
    func collectMetrics(on loop: EventLoop) -> EventLoopFuture<MetricsSnapshot> {
        let snapshots = contexts.values.map { context in context.eventLoop.submit { context.metricsSnapshot() } }
        return EventLoopFuture.whenAllSucceed(snapshots, on: loop).map { loops in
            let runtime = self.currentRuntime.withLockedValue { $0 }
            var endpoints: [MetricsSnapshot.EndpointState] = []
            var discovery: [MetricsSnapshot.DiscoveryState] = []
            for cluster in runtime.clusters {
                for endpoint in cluster.endpoints {
                    let address = endpoint.address.description
                    endpoints.append(.init(cluster: cluster.name, address: address,
                                           healthy: self.health.isHealthy(cluster: cluster.name, address: address),
                                           ejected: self.ejections.isEjected(cluster: cluster.name, endpointID: ClusterPool.endpointID(address: address)),
                                           weight: endpoint.weight))
                }
                if let status = self.discovery.status(of: cluster.name) {
                    discovery.append(.init(cluster: cluster.name, source: status.source, ok: status.consecutiveFailures == 0 && status.endpoints != nil,
                                           endpoints: status.endpoints?.count ?? 0, failures: status.totalFailures, updates: status.updates))
                }
            }
            return MetricsSnapshot(loops: loops, endpoints: endpoints, discovery: discovery, ejections: self.ejections.ejectionsTotal,
                                   generation: self.state.withLockedValue { $0.generation }, counters: self.counters.values)
        }
    }

    /// `/clusters`: every cluster of the current generation, its endpoints
    /// with health and ejection, and its discovery state.
    func clustersJSON() -> String {
        let runtime = currentRuntime.withLockedValue { $0 }
        let generation = state.withLockedValue { $0.generation }
        var clusters: [String] = []
        for cluster in runtime.clusters {
            let endpoints = cluster.endpoints.map { endpoint -> String in
                let address = endpoint.address.description
                let metadata = endpoint.metadata.sorted { $0.key < $1.key }.map { "\(Log.quote($0.key)):\(Log.quote($0.value))" }
                return "{\"address\":\(Log.quote(address)),\"weight\":\(endpoint.weight)"
                    + ",\"healthy\":\(health.isHealthy(cluster: cluster.name, address: address))"
                    + ",\"ejected\":\(ejections.isEjected(cluster: cluster.name, endpointID: ClusterPool.endpointID(address: address)))"
                    + ",\"metadata\":{\(metadata.joined(separator: ","))}}"
            }
            var entry = "{\"name\":\(Log.quote(cluster.name)),\"endpoints\":[\(endpoints.joined(separator: ","))]"
            if let status = discovery.status(of: cluster.name) {
                entry += ",\"discovery\":{\"source\":\(Log.quote(status.source)),\"state\":\(Log.quote(status.state))"
                    + ",\"last_error\":\(status.lastError.map(Log.quote) ?? "null")"
                    + ",\"consecutive_failures\":\(status.consecutiveFailures),\"failures_total\":\(status.totalFailures)"
                    + ",\"updates\":\(status.updates),\"last_success_unix\":\(status.lastSuccess.map { String(Int($0)) } ?? "null")}"
            }
            clusters.append(entry + "}")
        }
        return "{\"generation\":\(generation),\"clusters\":[\(clusters.joined(separator: ","))]}\n"
    }

    /// What a reload cannot apply yet, or nil.
    static func restartOnlyDifference(_ old: GatewayConfig, _ new: GatewayConfig) -> String? {
        let listeners = { (c: GatewayConfig) in c.listeners.map { "\($0.name)@\($0.address)/\($0.maxConcurrentStreams)" } }
        if listeners(old) != listeners(new) { return "the listeners (names, addresses)" }
        if old.listeners.map(\.tls) != new.listeners.map(\.tls) {
            return "a listener's tls block (replacing the files it names needs no restart)"
        }
        if old.admin?.address != new.admin?.address { return "the admin address" }
        return nil
    }

    /// Everything about the clusters a reload has to act on.
    static func clusterSignature(_ config: GatewayConfig) -> [String] {
        config.clusters.map { cluster in
            "\(cluster.name):" + cluster.endpoints.map { endpoint in
                // Metadata counts: balancers and /clusters must see relabelled endpoints.
                "\(endpoint.address)*\(endpoint.weight)" + endpoint.metadata.sorted { $0.key < $1.key }.map { "|\($0.key)=\($0.value)" }.joined()
            }.joined(separator: ",")
                + "/\(cluster.connectTimeout)/\(cluster.maxConnectionsPerEndpoint)/\(cluster.healthCheck.map { "\($0)" } ?? "-")"
                + "/\(cluster.tls.map { "\($0.cert ?? "")|\($0.key ?? "")|\($0.ca ?? "")|\($0.serverName ?? "")" } ?? "-")"
        }
    }

    private func clustersChanged(_ config: GatewayConfig) -> Bool {
        currentClusters.withLockedValue { $0 } != Self.clusterSignature(config)
    }

    private func activeConnections() async -> Int {
        var total = 0
        for context in contexts.values {
            total += (try? await context.eventLoop.submit { context.downstreamCount }.get()) ?? 0
        }
        return total
    }

    private func stopListeners() async {
        let channels = state.withLockedValue { s -> [Channel] in
            defer { s.listeners.removeAll() }
            return s.listeners
        }
        for channel in channels { try? await channel.close() }
    }

    private static func describe(_ error: Error) -> String {
        if let io = error as? IOError {
            return String(cString: strerror(io.errnoCode))
        }
        return "\(error)"
    }
}
