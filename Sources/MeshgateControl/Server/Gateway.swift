import GatewayHost
import Dispatch
import MeshgateHTTP2
import MeshgatePosix
import MeshgateTLS
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import MeshgateConfig
import MeshgateSupport
import MeshgateDiscovery
import MeshgateRouting
import MeshgateUpstream
import MeshgateOwnServices
import MeshgatePluginHost

/// The running gateway's lifecycle: event loops, listeners and the admin
/// server, the drain on shutdown. What new calls use (routes, filter
/// chains, clusters) belongs to `generations`; reloads and membership
/// changes are in `Gateway+Reload.swift`, the admin views in
/// `Gateway+Admin.swift`.
public final class Gateway: Sendable {
    /// What the gateway started with: its listeners and admin address (a
    /// reload that changes those is refused), and the TLS sources they
    /// handshake with.
    package let startup: ServingConfig
    package let group: MultiThreadedEventLoopGroup
    /// The admin addresses' own thread: a flood of admin requests (or a
    /// slow /config) takes no time from the data path's loops. nil without
    /// an admin address.
    package let adminGroup: MultiThreadedEventLoopGroup?
    package let contexts: [LoopContext]
    /// The one owner of the current generation.
    package let generations: GenerationStore
    public let health: HealthRegistry
    /// Outlier ejections, shared by every generation.
    public let ejections = EjectionRegistry()
    /// Discovered endpoints of the clusters that have `discovery:`.
    public let discovery = DiscoveryManager()
    /// Reloads and plugin loads, for /metrics.
    package let counters = GatewayCounters()
    /// `runtime.max_metric_series`, shared by every loop's `LoopMetrics`.
    package let metricSeries: MetricSeriesBudget
    /// `runtime.global_buffer_limit_bytes`, shared by every connection in
    /// both directions.
    package let bufferBudget: HTTP2BufferBudget
    /// The server channels and the timers of a running gateway.
    private let serving = NIOLockedValueBox(Serving())
    /// `max_connections` of a listener that sets none (see
    /// `ConnectionLimit.listenerDefault`), from the raised open-file limit.
    package let defaultMaxConnections: Int
    /// Each listener's `max_connections` (by listener index), whose
    /// refusals /metrics shows.
    package let listenerLimits: [ConnectionLimit]

    private struct Serving {
        package var listeners: [Channel] = []
        /// The full admin address's channel first, then the read-only ones.
        package var admin: [Channel] = []
        package var tlsWatch: RepeatedTask?
        package var seriesExpiry: RepeatedTask?
        package var sampler: DashboardSampler?
    }

    /// Loads the plugins of `config` (ConfigError when one cannot load or
    /// rejects its config), then sets up the event loops.
    /// Discovered clusters get their first endpoints before serving (up
    /// to 5 s; a source that has not answered by then starts empty).
    public init(config fileConfig: GatewayConfig) throws {
        let openFiles = Self.raiseOpenFileLimit()
        let defaultMaxConnections = ConnectionLimit.listenerDefault(openFileLimit: openFiles.soft, listeners: fileConfig.listeners.count)
        self.defaultMaxConnections = defaultMaxConnections
        try discovery.configure(fileConfig)
        discovery.waitForFirstAnswers(timeout: .seconds(5))
        let config = discovery.overlay(fileConfig)
        let serving = ServingConfig(config, tls: try TLSMaterial.load(config))
        self.startup = serving
        listenerLimits = serving.listeners.map { listener in
            ConnectionLimit(max: listener.config.maxConnections
                ?? (listener.config.healthOnly ? min(ConnectionLimit.healthOnlyDefault, defaultMaxConnections) : defaultMaxConnections))
        }
        ejections.setMembership(config.clusters)
        let plugins = try FilterChains.load(config, ejections: ejections, host: DataPathHostFunctions.table)
        counters.pluginsLoaded(Self.pluginNames(plugins))
        Self.recordPluginLoads(plugins, previous: nil)
        let threads = config.runtime.eventLoops ?? System.coreCount
        let bufferBudget = HTTP2BufferBudget(limit: config.runtime.globalBufferLimitBytes)
        Self.warnIfBufferLimitIsBelowOneWindow(config.runtime.globalBufferLimitBytes)
        self.bufferBudget = bufferBudget
        let reflection = ReflectionCache()
        let metricSeries = MetricSeriesBudget(capacity: config.runtime.maxMetricSeries)
        self.metricSeries = metricSeries
        self.group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
        self.adminGroup = config.admin == nil ? nil : MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let loops = Array(group.makeIterator())
        let ownAddresses = GatewayOwnAddresses(config)
        let contextsBox = NIOLockedValueBox<[LoopContext]>([])
        let health = HealthRegistry(serving: serving) { cluster, address, healthy in
            for context in contextsBox.withLockedValue({ $0 }) {
                context.eventLoop.execute { context.setEndpointHealth(cluster: cluster, address: address, healthy: healthy) }
            }
        }
        var contexts: [LoopContext] = []
        for (i, loop) in loops.enumerated() {
            let ejections = self.ejections
            contexts.append(try loop.submit {
                LoopContext(eventLoop: loop, index: i, serving: serving, health: health, ejections: ejections, plugins: plugins,
                            bufferBudget: bufferBudget, reflection: reflection, metricSeries: metricSeries,
                            ownAddresses: ownAddresses)
            }.wait())
        }
        contextsBox.withLockedValue { $0 = contexts }
        ejections.setPublisher { cluster, endpointID, ejected in
            for context in contextsBox.withLockedValue({ $0 }) {
                context.eventLoop.execute { context.setEndpointEjected(cluster: cluster, endpointID: endpointID, ejected) }
            }
        }
        self.contexts = contexts
        self.health = health
        let first = GenerationStore.Snapshot(number: 1, fileConfig: fileConfig, serving: serving, plugins: plugins,
                                             clusterSignature: GenerationStore.clusterSignature(config))
        self.generations = GenerationStore(first: first, checker: HealthChecker(serving: serving, registry: health, eventLoop: loops[0]),
                                           loops: contexts)
        discovery.setOnChange { [weak self] in self?.applyDiscoveredMembership() }
    }

    /// The event loop that runs the health checks.
    package var healthLoop: EventLoop { contexts[0].eventLoop }

    /// Binds every listener. Throws `GatewayError.listenFailed` naming the
    /// listener and address when one cannot bind.
    public func start() async throws {
        if let admin = startup.config.admin, let adminGroup {
            let (sources, sampler) = adminSources(adminLoop: adminGroup.next())
            for (address, readOnly) in [(admin.address, false)] + admin.readOnlyAddresses.map({ ($0, true) }) {
                do {
                    let channel = try await AdminServer.start(address: address, readOnly: readOnly, admin: admin,
                                                              group: adminGroup, sources: sources, counters: counters)
                    serving.withLockedValue { $0.admin.append(channel) }
                    Log.info("admin listening", ["address": address.description, "read_only": String(readOnly),
                                                 "max_connections": String(admin.maxConnections), "idle_timeout": "\(admin.idleTimeout)",
                                                 "paths": "/healthz /ready /metrics /clusters /config /plugins /events /dashboard" + (readOnly ? "" : " POST /reload")])
                } catch {
                    for channel in serving.withLockedValue({ $0.admin }) { try? await channel.close() }
                    try? await adminGroup.shutdownGracefully()
                    try? await group.shutdownGracefully()
                    throw GatewayError(.listenFailed, "admin: cannot listen on \(address): \(Self.describe(error))")
                }
            }
            sampler.start()
            serving.withLockedValue { $0.sampler = sampler }
        }
        for listener in startup.listeners {
            let contexts = self.contexts
            let tlsSource = startup.tls.listeners[listener.index]
            var listenerSettings = HTTP2Settings(maxConcurrentStreams: UInt32(listener.config.maxConcurrentStreams))
            listenerSettings.sendTimeout = .nanoseconds(listener.config.sendTimeout.nanosecondsClamped)
            listenerSettings.maxQueuedBytes = listener.config.perConnectionBufferLimitBytes
            listenerSettings.bufferBudget = bufferBudget
            listenerSettings.maxHeaderListSize = UInt32(listener.config.maxRequestHeadersKB << 10)
            listenerSettings.maxHeaderFields = listener.config.maxHeadersCount
            let settings = listenerSettings
            let connectionLimit = listenerLimits[listener.index]
            let bootstrap = ServerBootstrap(group: group)
                .serverChannelOption(.backlog, value: 1024)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
                // One read per wake-up and connection: NIO keeps as many
                // receive buffers per connection as it reads in a row (up
                // to 64 KiB each, for reuse), memory no cap counts; level-
                // triggered epoll brings the rest at the next turn.
                .childChannelOption(.maxMessagesPerRead, value: 1)
                .childChannelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        guard connectionLimit.acquire() else {
                            // Accepted and closed at once: the client sees
                            // the close, /metrics counts it, and the log
                            // line is a debug one (a flood would flood the log).
                            Log.debug("connection refused: listener at max_connections", [
                                "listener": listener.config.name, "max_connections": String(connectionLimit.max)])
                            channel.close(promise: nil)
                            return
                        }
                        channel.closeFuture.whenComplete { _ in connectionLimit.release() }
                        let loop = contexts.first { $0.eventLoop === channel.eventLoop }!
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
                        var http1Handoff: HTTPVersionGate.HTTP1Handoff?
                        if listener.config.grpcWeb {
                            // gRPC-Web from browsers that speak HTTP/1.1 to this port,
                            // held to the listener's header limits (NIO's decoder
                            // answers a head over them with 400 and closes).
                            var limits = NIOHTTPDecoderLimitConfiguration()
                            limits.maxHeaderListSize = listener.config.maxRequestHeadersKB << 10
                            limits.maxHeaderFieldSize = listener.config.maxRequestHeadersKB << 10
                            limits.maxHeaderFieldCount = listener.config.maxHeadersCount
                            http1Handoff = { pipeline in
                                try pipeline.configureHTTPServerPipeline(withPipeliningAssistance: true, withErrorHandling: true,
                                                                         withEncoderConfiguration: .init(), withDecoderLimitConfiguration: limits)
                                try pipeline.addHandler(GRPCWebHTTP1Handler(router: downstream))
                            }
                        }
                        // The gate answers HTTP/1.x clients (505, or the
                        // gRPC-Web hand-off) and leaves at the first read.
                        try channel.pipeline.syncOperations.addHandlers(HTTPVersionGate(connection: http2, http1Handoff: http1Handoff), http2)
                        loop.register(http2)
                        downstream.connectionAccepted(http2)
                    }
                }
            let address = listener.config.address
            do {
                let channel = try await bootstrap.bind(host: address.host, port: address.port).get()
                serving.withLockedValue { $0.listeners.append(channel) }
                Log.info("listening", ["listener": listener.config.name, "address": address.description,
                                       "max_connections": String(connectionLimit.max) + (listener.config.maxConnections == nil ? " (default)" : "")])
            } catch {
                await stopListeners()
                for admin in serving.withLockedValue({ $0.admin }) { try? await admin.close() }
                try? await adminGroup?.shutdownGracefully()
                try? await group.shutdownGracefully()
                throw GatewayError(.listenFailed, "listener '\(listener.config.name)': cannot listen on \(address): \(Self.describe(error))")
            }
        }
        generations.checker.start()
        // Certificate rotation: changed files apply to new handshakes.
        let generations = self.generations
        let discovery = self.discovery
        let watch = ControlThread.loop.scheduleRepeatedTask(initialDelay: .seconds(1), delay: .seconds(1)) { _ in
            for source in generations.current.serving.tls.all + discovery.tlsSources { source.reloadIfChanged() }
        }
        serving.withLockedValue { $0.tlsWatch = watch }
        let idle = startup.config.runtime.metricSeriesIdleTimeout
        if idle > .zero {
            // A sweep every quarter of the idle timeout (at most a minute):
            // a series goes between idle_timeout and 1.25 times it.
            let period = TimeAmount.nanoseconds(min(max(idle.nanosecondsClamped / 4, 100_000_000), 60_000_000_000))
            let expiry = ControlThread.loop.scheduleRepeatedAsyncTask(initialDelay: period, delay: period) { [weak self] _ in
                self?.expireIdleSeries(idle: idle) ?? ControlThread.loop.makeSucceededVoidFuture()
            }
            serving.withLockedValue { $0.seriesExpiry = expiry }
        }
        health.markStarted()
        // A source may have changed between the first snapshot (init) and
        // now, before the gateway listened for changes: catch up once.
        ControlThread.loop.execute { [weak self] in self?.applyDiscoveredMembership() }
    }

    /// Runs until SIGTERM or SIGINT, then drains and returns.
    public func runUntilSignalled() async {
        let (signals, continuation) = AsyncStream.makeStream(of: String.self)
        let sources = [(Posix.Signal.terminate, "SIGTERM"), (Posix.Signal.interrupt, "SIGINT"), (Posix.Signal.hangUp, "SIGHUP")].map { sig, name -> DispatchSourceSignal in
            // Ignored as signals; the dispatch source still sees them.
            try? Posix.ignoreSignal(sig)
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
    /// (up to the current generation's drain timeout), then close what
    /// remains.
    public func drainAndStop(signal: String) async {
        guard let generation = generations.beginShutdown() else { return }
        let timeout = generation.drainTimeout
        GatewayEvents.shared.record(.drain, .info, "draining", ["signal": signal, "drain_timeout_ms": String(timeout.nanosecondsClamped / 1_000_000),
                                                                "generation": String(generation.number)])
        // Health turns NOT_SERVING first, so that whatever balances in
        // front of the gateway moves away before connections get GOAWAY.
        health.markDraining()
        try? await Task.sleep(for: .milliseconds(200))
        await stopListeners()
        for context in contexts {
            context.eventLoop.execute { context.beginDrain() }
        }
        // Watch streams would hold their connections until the timeout.
        try? await Task.sleep(for: .milliseconds(600))
        health.finishAllWatches()
        generations.checker.stop()
        let (watch, sampler, expiry) = serving.withLockedValue { ($0.tlsWatch, $0.sampler, $0.seriesExpiry) }
        watch?.cancel()
        expiry?.cancel()
        discovery.stopAll()
        sampler?.stop()
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
        for context in contexts {
            try? await context.eventLoop.submit { context.closeAll() }.get()
        }
        for context in contexts {
            try? await context.eventLoop.submit { context.destroyPluginInstances() }.get()
        }
        generations.current.plugins.destroy()
        // The admin server stays up through the drain, so /ready says 503.
        for admin in serving.withLockedValue({ s -> [Channel] in defer { s.admin = [] }; return s.admin }) {
            try? await admin.close()
        }
        try? await adminGroup?.shutdownGracefully()
        try? await group.shutdownGracefully()
        Log.info("stopped")
    }

    private func activeConnections() async -> Int {
        var total = 0
        for context in contexts {
            total += (try? await context.eventLoop.submit { context.downstreamCount }.get()) ?? 0
        }
        return total
    }

    private func stopListeners() async {
        let channels = serving.withLockedValue { s -> [Channel] in
            defer { s.listeners.removeAll() }
            return s.listeners
        }
        for channel in channels { try? await channel.close() }
    }

    /// Raises the soft open-file limit to the hard one and logs both: each
    /// client connection is a descriptor, and the usual soft limit (1024)
    /// would cap a gateway far below its listeners' `max_connections`.
    /// Returns the limit the process runs with.
    /// One client connection may have a whole receive window of request
    /// bytes in flight (16 MiB), and the budget also holds what waits for
    /// upstreams: below that, one busy connection can use it up, and calls
    /// of every connection then have their upstream queues reset
    /// (docs/limits.md). Valid, so not refused; said once at start and at
    /// each reload that sets it.
    package static func warnIfBufferLimitIsBelowOneWindow(_ limit: Int) {
        let window = Int(HTTP2Settings().connectionWindowSize)
        guard limit != 0, limit < window else { return }
        Log.warning("runtime.global_buffer_limit_bytes is below one client connection's receive window: a burst from one connection can use it up and reset other calls",
                    ["global_buffer_limit_bytes": String(limit), "connection_window_bytes": String(window)])
    }

    private static func raiseOpenFileLimit() -> Posix.OpenFileLimit {
        func text(_ n: UInt64) -> String { n == UInt64.max ? "unlimited" : String(n) }
        do {
            let (before, after) = try Posix.raiseOpenFileLimit()
            Log.info("open file limit", ["soft": text(after.soft), "hard": text(after.hard), "soft_at_start": text(before.soft)])
            return after
        } catch {
            let current = (try? Posix.openFileLimit()) ?? Posix.OpenFileLimit(soft: 1024, hard: 1024)
            Log.warning("open file limit not raised", ["error": error.description, "soft": text(current.soft), "hard": text(current.hard)])
            return current
        }
    }

    package static func describe(_ error: Error) -> String {
        if let io = error as? IOError {
            return Posix.describe(errno: io.errnoCode)
        }
        return "\(error)"
    }
}
