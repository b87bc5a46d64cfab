import MeshgateConfig

/// The TLS contexts of one config: one per TLS listener (by listener
/// index) and one per TLS cluster (by name). A reload keeps the sources
/// whose files did not change, so rotation state carries over.
public struct TLSMaterial: Sendable {
    public var listeners: [TLSContextSource?] = []
    public var clusters: [String: TLSContextSource] = [:]

    public init() {}

    /// Builds every context (reading every file); errors name the `tls:`
    /// field and OpenSSL's reason.
    public static func load(_ config: GatewayConfig, previous: TLSMaterial? = nil) throws(ConfigError) -> TLSMaterial {
        var material = TLSMaterial()
        for (i, listener) in config.listeners.enumerated() {
            if let files = listener.tls {
                if let kept = previous?.listeners.indices.contains(i) == true ? previous?.listeners[i] : nil, kept.files == files {
                    if !kept.reloadIfChanged() { kept.warnIfKeyIsExposed() }
                    material.listeners.append(kept)
                } else {
                    material.listeners.append(try TLSContextSource(files, role: .server, configFile: config.sourceFile))
                }
            } else {
                material.listeners.append(nil)
            }
        }
        for cluster in config.clusters {
            guard let files = cluster.tls else { continue }
            if let kept = previous?.clusters[cluster.name], kept.files == files {
                if !kept.reloadIfChanged() { kept.warnIfKeyIsExposed() }
                material.clusters[cluster.name] = kept
            } else {
                material.clusters[cluster.name] = try TLSContextSource(files, role: .client, configFile: config.sourceFile)
            }
        }
        return material
    }

    public var all: [TLSContextSource] { listeners.compactMap { $0 } + Array(clusters.values) }
}
