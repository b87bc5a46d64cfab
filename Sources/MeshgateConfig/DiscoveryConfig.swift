import MeshgateYAML

/// `discovery:` of a cluster: where its endpoints come from when they are
/// not listed in the config. Exactly one source per cluster.
public enum DiscoveryConfig: Sendable, Equatable, CustomStringConvertible {
    case dns(DNSDiscoveryConfig)
    case file(FileDiscoveryConfig)
    case etcd(EtcdDiscoveryConfig)

    public var description: String {
        switch self {
        case .dns(let d): return "dns \(d.srv ? d.name : "\(d.name):\(d.port)")"
        case .file(let f): return "file \(f.path)"
        case .etcd(let e): return "etcd \(e.endpoints.map(\.description).joined(separator: ","))\(e.prefix)"
        }
    }
}

/// `dns:`: A/AAAA records of `name` (with `port`), or the SRV records of
/// `srv` (`_grpc._tcp.name`: port and weight from each record).
public struct DNSDiscoveryConfig: Sendable, Equatable {
    public var name: String
    public var port: Int = 0
    public var srv = false
    /// The DNS server asked; nil: the first `nameserver` of /etc/resolv.conf.
    public var resolver: SocketAddressSpec?
    /// The longest time between two resolutions; a record's shorter TTL
    /// brings the next one forward.
    public var refreshInterval: Duration = .seconds(30)
    /// The shortest time between two resolutions (a TTL of 0 does not
    /// make the gateway query in a loop).
    public var minRefreshInterval: Duration = .seconds(1)
    /// How long one query may take before it is retried.
    public var timeout: Duration = .seconds(2)
    /// Which address families A/AAAA resolution keeps.
    public var family: Family = .any

    public enum Family: String, Sendable { case any, v4, v6 }
}

/// `file:`: a YAML or JSON file listing endpoints (the Prometheus file_sd
/// pattern), re-read when it changes.
public struct FileDiscoveryConfig: Sendable, Equatable {
    public var path: String
    public var refreshInterval: Duration = .seconds(1)
}

/// `etcd:`: every key under `prefix` is an endpoint; listed, then watched.
public struct EtcdDiscoveryConfig: Sendable, Equatable {
    public var endpoints: [SocketAddressSpec]
    public var prefix: String
    public var tls: TLSFilesConfig?
    public var dialTimeout: Duration = .seconds(3)
}
