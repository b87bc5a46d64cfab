import MeshgateConfig
import MeshgateSupport

/// The config compiled for serving: immutable, shared by every event loop.
/// A reload publishes a new one.
public struct ServingConfig: Sendable {
    /// A class: each request looks its listener up, and a struct copy
    /// would retain every reference in its config and route table.
    public final class Listener: Sendable {
        public let config: ListenerConfig
        public let routes: RouteTable
        public let index: Int

        public init(config: ListenerConfig, routes: RouteTable, index: Int) {
            self.config = config
            self.routes = routes
            self.index = index
        }
    }

    public let config: GatewayConfig
    public let listeners: [Listener]
    public let clusters: [ClusterConfig]
    public let tls: TLSMaterial

    public init(_ config: GatewayConfig, tls: TLSMaterial = TLSMaterial()) {
        self.config = config
        self.tls = tls
        self.clusters = config.clusters
        var index: [String: Int] = [:]
        for (i, c) in config.clusters.enumerated() { index[c.name] = i }
        self.listeners = config.listeners.enumerated().map { i, l in Listener(config: l, routes: RouteTable(l.routes, clusterIndex: index), index: i) }
    }
}
