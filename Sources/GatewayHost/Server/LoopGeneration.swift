import MeshgateRouting
import MeshgateUpstream
import MeshgatePluginHost

/// One config generation as one event loop serves it: the route tables and
/// filter chains, and the plugin instances made for them on this loop.
///
/// A reload installs a new generation; calls keep the generation they
/// started on. When a retired generation's last call ends, its instances
/// are destroyed here, on their loop, and the gateway is told, so that the
/// plugin configs can be destroyed once every loop is done with them.
package final class LoopGeneration {
    package let number: Int
    package let serving: ServingConfig
    package let plugins: FilterChains
    let instances: LoopPluginInstances
    /// The upstream pools of this generation's clusters (endpoint pools are
    /// shared with other generations where the endpoint stayed).
    package let clusters: [ClusterPool]
    private var activeCalls = 0
    private var retired = false
    private var onDrained: (() -> Void)?

    package init(number: Int, serving: ServingConfig, plugins: FilterChains, loopIndex: Int, clusters: [ClusterPool]) {
        self.number = number
        self.serving = serving
        self.plugins = plugins
        self.clusters = clusters
        for cluster in clusters { cluster.endpoints.forEach { $0.generations += 1 } }
        self.instances = LoopPluginInstances(plugins: plugins, loopIndex: loopIndex, clusterNames: serving.clusters.map(\.name))
    }

    package func callStarted() { activeCalls += 1 }

    package func callEnded() {
        activeCalls -= 1
        finishIfDrained()
    }

    /// No new call will use this generation; `onDrained` runs (on this
    /// loop) once the last one has ended.
    package func retire(onDrained: @escaping () -> Void) {
        retired = true
        self.onDrained = onDrained
        finishIfDrained()
    }

    private func finishIfDrained() {
        guard retired, activeCalls == 0, let done = onDrained else { return }
        onDrained = nil
        instances.destroyAll()
        // Endpoints no generation uses any more close their connections
        // (their last calls, this generation's, are over).
        for cluster in clusters {
            for endpoint in cluster.endpoints {
                endpoint.generations -= 1
                if endpoint.generations == 0 { endpoint.closeAll() }
            }
        }
        done()
    }
}
