import MeshgateRouting
import MeshgateUpstream

/// What one merged-reflection call sees of the generation it started in:
/// the listener it came on (its routes say which services are described)
/// and the clusters' pools on its loop (which it asks). The generation's
/// number keys the cache, so a reload starts it afresh.
package struct ReflectionScope {
    package let number: Int
    package let listener: ServingConfig.Listener
    package let clusters: [ClusterPool]

    package init(number: Int, listener: ServingConfig.Listener, clusters: [ClusterPool]) {
        self.number = number
        self.listener = listener
        self.clusters = clusters
    }
}
