/// The config compiled for serving: immutable, shared by every event loop.
/// A reload publishes a new one.
public struct ServingConfig: Sendable {
    public struct Listener: Sendable {
        public let config: ListenerConfig
        public let routes: RouteTable
        public let index: Int
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
