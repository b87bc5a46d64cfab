import GatewayHost
import NIOConcurrencyHelpers
import NIOCore
import MeshgateConfig
import MeshgateSupport
import MeshgateRouting
import MeshgateUpstream
import MeshgatePluginHost

/// The one owner of the gateway's generations: what new calls use (the
/// config as its file says it, the config with discovered endpoints laid
/// over it and its TLS material, the route tables and filter chains, the
/// health checker of its clusters, the drain settings), and the plugin
/// runtimes older generations still hold.
///
/// Reloads, discovery membership changes and the drain all go through it.
/// One lock guards everything, and every change is made on the control
/// thread, one at a time; readers (`/clusters`, `/config`, `/metrics`, the
/// drain) take one `Snapshot`, which never mixes two generations.
package final class GenerationStore: Sendable {
    /// One generation as the whole gateway sees it.
    package struct Snapshot: Sendable {
        package let number: Int
        /// The config as the file says it (discovery overlays this one).
        package let fileConfig: GatewayConfig
        /// What new calls use: the config with discovered endpoints, and
        /// its TLS material.
        package let serving: ServingConfig
        package let plugins: FilterChains
        /// Everything about the clusters a change has to act on.
        package let clusterSignature: [String]

        package var config: GatewayConfig { serving.config }
        package var drainTimeout: Duration { serving.config.runtime.drainTimeout }
    }

    private struct State {
        package var current: Snapshot
        package var checker: HealthChecker
        /// Loops whose live generations use each filter-chain set: one
        /// is destroyed when no generation uses it and it is not current.
        package var pluginUsers: [ObjectIdentifier: Int]
        package var shuttingDown = false
    }

    private let state: NIOLockedValueBox<State>
    private let loops: [LoopContext]

    /// `first` is what `loops` were made with; `checker` probes its clusters.
    package init(first: Snapshot, checker: HealthChecker, loops: [LoopContext]) {
        self.loops = loops
        state = NIOLockedValueBox(State(current: first, checker: checker, pluginUsers: [ObjectIdentifier(first.plugins): loops.count]))
    }

    package var current: Snapshot { state.withLockedValue { $0.current } }

    package var isShuttingDown: Bool { state.withLockedValue { $0.shuttingDown } }

    package var checker: HealthChecker { state.withLockedValue { $0.checker } }

    /// Control thread: makes a generation of these parts what new calls use
    /// on every loop (a new `checker` replaces the running one, which is
    /// stopped). The previous generation retires on each loop as its calls
    /// end. Nil, and nothing installed, once the drain has begun.
    package func install(fileConfig: GatewayConfig, serving: ServingConfig, plugins: FilterChains,
                 checker: HealthChecker? = nil) -> Snapshot? {
        ControlThread.loop.preconditionInEventLoop()
        let loopCount = loops.count
        let change = state.withLockedValue { s -> (Snapshot, FilterChains, HealthChecker?)? in
            guard !s.shuttingDown else { return nil }
            let previous = s.current.plugins
            s.current = Snapshot(number: s.current.number + 1, fileConfig: fileConfig, serving: serving, plugins: plugins,
                                 clusterSignature: Self.clusterSignature(serving.config))
            s.pluginUsers[ObjectIdentifier(plugins), default: 0] += loopCount
            var replaced: HealthChecker?
            if let checker {
                replaced = s.checker
                s.checker = checker
            }
            return (s.current, previous, replaced)
        }
        guard let (snapshot, previous, replacedChecker) = change else { return nil }
        if let replacedChecker {
            replacedChecker.stop()
            checker?.start()
        }
        for context in loops {
            context.eventLoop.execute {
                context.install(number: snapshot.number, serving: serving, plugins: plugins) {
                    self.release(previous)
                }
            }
        }
        return snapshot
    }

    /// The drain begins: nothing is installed from now on. The generation
    /// current now (its drain_timeout applies); nil when a drain had begun.
    package func beginShutdown() -> Snapshot? {
        state.withLockedValue { s in
            guard !s.shuttingDown else { return nil }
            s.shuttingDown = true
            return s.current
        }
    }

    /// A loop's generation that used `plugins` has drained there.
    private func release(_ plugins: FilterChains) {
        let unused = state.withLockedValue { s -> Bool in
            let id = ObjectIdentifier(plugins)
            s.pluginUsers[id, default: 0] -= 1
            guard s.pluginUsers[id] == 0, s.current.plugins !== plugins, !s.shuttingDown else { return false }
            s.pluginUsers[id] = nil
            return true
        }
        // config_destroy runs off the event loops (the ABI's control thread).
        if unused { ControlThread.loop.execute { plugins.destroy() } }
    }

    /// Everything about the clusters a reload or a membership change has to
    /// act on: endpoints with weights and labels (balancers and /clusters
    /// must see relabelled endpoints), connection settings, health checks, TLS.
    package static func clusterSignature(_ config: GatewayConfig) -> [String] {
        config.clusters.map { cluster in
            "\(cluster.name):" + cluster.endpoints.map { endpoint in
                "\(endpoint.address)*\(endpoint.weight)" + endpoint.metadata.sorted { $0.key < $1.key }.map { "|\($0.key)=\($0.value)" }.joined()
            }.joined(separator: ",")
                + "/\(cluster.connectTimeout)/\(cluster.maxConnectionsPerEndpoint)/\(cluster.healthCheck.map { "\($0)" } ?? "-")"
                + "/\(cluster.tls.map { "\($0.cert ?? "")|\($0.key ?? "")|\($0.ca ?? "")|\($0.serverName ?? "")" } ?? "-")"
        }
    }
}
