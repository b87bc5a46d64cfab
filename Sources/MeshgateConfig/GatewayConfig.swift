import MeshgateYAML

/// The whole gateway configuration, as loaded from YAML and validated.
/// See README "Configuration reference" for the YAML form of each field.
public struct GatewayConfig: Sendable {
    public var runtime: RuntimeConfig
    public var admin: AdminConfig?
    public var listeners: [ListenerConfig]
    public var clusters: [ClusterConfig]
    /// Declared plugins, by the name routes use in `filters:`.
    public var plugins: [PluginDeclaration] = []
    /// Where bare plugin file names and the built-in plugins are found
    /// (default: the folder of the meshgate executable).
    public var pluginDirectory: String?
    /// Where the config came from (for messages).
    public var sourceFile: String
    /// A config written in the product description's form: the description
    /// field at each position the native config reuses (see `located`).
    public var fieldOrigins: [YAMLMark: String] = [:]

    /// `error` naming the field as the user wrote it: for a translated
    /// config, the description field at the error's position, then the
    /// native field it became.
    public func located(_ error: ConfigError) -> ConfigError {
        Self.located(error, origins: fieldOrigins)
    }

    public static func located(_ error: ConfigError, origins: [YAMLMark: String]) -> ConfigError {
        guard let mark = error.mark, let origin = origins[mark] else { return error }
        var located = error
        located.field = error.field.isEmpty ? origin : "\(origin) (native: \(error.field))"
        return located
    }
}

/// `plugins:` entry: a name for a shared library.
public struct PluginDeclaration: Sendable {
    public var name: String
    public var path: String
    public var mark: YAMLMark
}

public struct RuntimeConfig: Sendable {
    /// Event loops (threads) serving connections; default: one per core.
    public var eventLoops: Int?
    /// How long in-flight RPCs may run after SIGTERM before connections are closed.
    public var drainTimeout: Duration = .seconds(15)
    /// One JSON line per RPC on stderr (see `AccessLog`); off by default,
    /// and then it costs nothing.
    public var accessLog = false
    /// Request counters for /metrics and the dashboard (default on).
    public var metrics = true
    /// Bytes all connections together may keep queued for peers that do
    /// not read (`global_buffer_limit_bytes`; see `HTTP2BufferBudget`):
    /// past it, the largest queues of the connection asking for more are
    /// reset (ENHANCE_YOUR_CALM). Zero: no cap. A reload may change it.
    public var globalBufferLimitBytes: Int = 256 << 20
    /// Request series (service, method, cluster) /metrics and the dashboard
    /// keep, all event loops together; a call whose series is not among
    /// them counts under `service="other",method="other"`. The method
    /// comes from the client (`:path`), so without a cap each new name
    /// would be a new series for good. Restart-only.
    public var maxMetricSeries: Int = 1000
    /// A series with no call for this long (on any loop) is dropped and its
    /// place freed; zero: never. Restart-only.
    public var metricSeriesIdleTimeout: Duration = .seconds(600)
}

public struct AdminConfig: Sendable {
    /// Every admin path, POST /reload included: keep it on loopback.
    public var address: SocketAddressSpec
    /// More addresses serving the read-only views (dashboard, metrics,
    /// health, clusters, redacted config, plugins) and refusing anything
    /// that changes state: the ports a container publishes.
    public var readOnlyAddresses: [SocketAddressSpec] = []
    /// Connections open at once on each admin address; one more is
    /// accepted and closed at once. Event streams (`/dashboard/events`)
    /// count. These addresses may be public.
    public var maxConnections = 64
    /// A connection with no request in progress for this long is closed
    /// (also one that never sends its first request); zero: never.
    public var idleTimeout: Duration = .seconds(60)
    /// A request must arrive whole (head and body) within this long of its
    /// first byte, else the connection is closed (nginx's
    /// `client_header_timeout`/`client_body_timeout`).
    public var requestTimeout: Duration = .seconds(10)
    /// Host names besides the configured host, `localhost` and IP literals
    /// that requests to the full admin address may carry in `Host` (an
    /// operator reaching it by a DNS name); any other is refused, so that
    /// a page rebinding its own name to this address reads nothing.
    public var allowedHosts: [String] = []

    public init(address: SocketAddressSpec, readOnlyAddresses: [SocketAddressSpec] = []) {
        self.address = address
        self.readOnlyAddresses = readOnlyAddresses
    }
}

public struct ListenerConfig: Sendable {
    public var name: String
    public var address: SocketAddressSpec
    /// SETTINGS_MAX_CONCURRENT_STREAMS offered to each downstream connection.
    public var maxConcurrentStreams: Int = 1024
    public var routes: [RouteConfig]
    /// TLS (and mutual TLS) for downstream connections; nil: h2c.
    public var tls: TLSFilesConfig?
    /// A connection with no stream for this long is closed (GOAWAY, then
    /// close), as Envoy's `idle_timeout` does; zero: never.
    public var idleTimeout: Duration = .seconds(3600)
    /// A stream whose response bytes wait on the client's flow-control
    /// window without any leaving for this long is reset (CANCEL), freeing
    /// them (nginx's `send_timeout`; default Envoy's stream idle timeout,
    /// 5 min); zero: never.
    public var sendTimeout: Duration = .seconds(300)
    /// Client connections open at once on this listener, over all event
    /// loops; one more is accepted and closed at once. nil: no limit.
    public var maxConnections: Int?
    /// Response bytes a client connection may have waiting on its flow
    /// control, all streams together (Envoy's
    /// `per_connection_buffer_limit_bytes`); the stream that would pass it
    /// is reset with ENHANCE_YOUR_CALM (the client sees RESOURCE_EXHAUSTED).
    public var perConnectionBufferLimitBytes: Int = 32 << 20
    /// HTTP/2 PINGs to each client connection; nil: none.
    public var keepalive: KeepaliveConfig?
    /// A client's header block (request head or trailers) may hold this
    /// many KiB, counted as RFC 9113 does (names and values plus 32 per
    /// field), and this many fields (Envoy's `max_request_headers_kb` and
    /// `max_headers_count`, with their defaults). Enforced while decoding;
    /// the KiB are advertised as SETTINGS_MAX_HEADER_LIST_SIZE.
    public var maxRequestHeadersKB = 60
    public var maxHeadersCount = 100
    /// Answers grpc.reflection itself, merged across the routed clusters,
    /// when no route sends reflection anywhere (`reflection`, default true;
    /// see `GatewayReflectionService`).
    public var reflection = true
    /// Serves only grpc.health.v1 (`health_only: true`; no routes): a
    /// port for probes that cannot present a client certificate, such as
    /// Kubernetes' gRPC probes, while client traffic stays on mTLS. Its
    /// defaults are tighter (`healthOnlyIdleTimeout`,
    /// `ConnectionLimit.healthOnlyDefault`).
    public var healthOnly = false
    /// `idle_timeout` of a health-only listener that sets none.
    public static let healthOnlyIdleTimeout: Duration = .seconds(60)
    /// Also accepts gRPC-Web (`grpc_web: true`): browsers' calls over
    /// HTTP/1.1 or HTTP/2, translated to gRPC upstream and back (see
    /// `GRPCWebStream`).
    public var grpcWeb = false
    /// CORS for gRPC-Web calls from pages of other origins (`cors:`); nil:
    /// no CORS headers, preflights refused.
    public var cors: CORSConfig?
}

/// A listener's `cors:` block (what Envoy's CORS filter offers for
/// gRPC-Web).
public struct CORSConfig: Sendable, Equatable {
    /// Exact origins ("https://app.example.com"), or "*" for any.
    public var allowedOrigins: [String]
    /// Request headers a page may send beyond the gRPC-Web ones.
    public var allowedHeaders: [String] = []
    /// Response headers a page may read beyond grpc-status and grpc-message.
    public var exposeHeaders: [String] = []
    /// How long a browser may cache a preflight's answer.
    public var maxAge: Duration = .seconds(86_400)
    /// Access-Control-Allow-Credentials: true (cookies, Authorization).
    public var allowCredentials = false

    public init(allowedOrigins: [String]) { self.allowedOrigins = allowedOrigins }

    public func allows(origin: String) -> Bool { allowedOrigins.contains("*") || allowedOrigins.contains(origin) }
}

/// `tls:` of a listener or a cluster: PEM files, resolved against the
/// config file's folder. They are watched: replaced files apply to new
/// handshakes without a restart.
public struct TLSFilesConfig: Sendable, Equatable {
    /// The certificate chain presented (a listener's server certificate; a
    /// cluster's client certificate for upstream mutual TLS).
    public var cert: String?
    public var key: String?
    /// The CA bundle that verifies the peer (clients of a listener; the
    /// upstream servers of a cluster, default: the system's).
    public var ca: String?
    /// Listener: whether clients present a certificate.
    public var clientAuth: String = "none"
    /// Cluster: the name sent as SNI and checked against the upstream's
    /// certificate (default: the endpoint's host).
    public var serverName: String?
    /// Listener: how long a client may take to complete the handshake.
    public var handshakeTimeout: Duration = .seconds(10)
    public var mark: YAMLMark
    public var field: String

    public static func == (a: TLSFilesConfig, b: TLSFilesConfig) -> Bool {
        a.cert == b.cert && a.key == b.key && a.ca == b.ca && a.clientAuth == b.clientAuth && a.serverName == b.serverName
            && a.handshakeTimeout == b.handshakeTimeout
    }
}

public struct RouteConfig: Sendable {
    public var match: RouteMatchConfig
    public var cluster: String
    /// The deadline applied when the client sends no `grpc-timeout`.
    public var timeout: Duration?
    /// The longest deadline the route accepts from a client.
    public var maxTimeout: Duration?
    /// Request bytes kept for replay (retries, hedges, transparent retries)
    /// before the call commits to the attempt it has.
    public var replayBufferLimit: Int = 256 * 1024
    /// The largest gRPC message (its declared length) the route lets
    /// through each way; nil: no limit. Over it the call ends with
    /// RESOURCE_EXHAUSTED, as a gRPC server or client would answer.
    public var maxRequestMessageBytes: Int?
    public var maxResponseMessageBytes: Int?
    /// Client identities (SPIFFE URI, DNS SAN or subject CN of a verified
    /// client certificate) allowed on this route; nil: anyone.
    public var allowedIdentities: [String]?
    public var filters: [FilterConfig]
    /// Where the route is declared, for messages.
    public var mark: YAMLMark
}

public struct RouteMatchConfig: Sendable {
    /// Fully-qualified service name, e.g. `mesh.v1.MeshService`.
    public var service: String?
    /// Full method, `/mesh.v1.MeshService/Process` (the leading slash is optional).
    public var method: String?
    public var pathPrefix: String?
    public var headers: [HeaderMatchConfig] = []
}

public struct HeaderMatchConfig: Sendable {
    public enum Rule: Sendable { case exact(String), present(Bool) }
    public var name: String
    public var rule: Rule
}

/// One entry of a route's `filters:` chain: a plugin and its config block
/// (handed to the plugin as JSON).
public struct FilterConfig: Sendable {
    public var plugin: String
    public var config: YAMLNode?
    public var mark: YAMLMark
    /// Dotted path of the entry, for messages.
    public var field: String
}

public struct ClusterConfig: Sendable {
    public var name: String
    public var endpoints: [EndpointConfig]
    public var connectTimeout: Duration = .seconds(5)
    /// Upper bound of HTTP/2 connections per endpoint and event loop.
    public var maxConnectionsPerEndpoint: Int = 8
    /// Active health checking of the endpoints; nil: every endpoint counts as healthy.
    public var healthCheck: HealthCheckConfig?
    /// TLS to the endpoints; nil: h2c.
    public var tls: TLSFilesConfig?
    /// Where endpoints come from when they are discovered; `endpoints` then
    /// holds the last known set.
    public var discovery: DiscoveryConfig?
    /// `discovery.max_endpoints`: the most endpoints the source may give;
    /// the rest of an answer are dropped.
    public var maxDiscoveredEndpoints = InputLimits.defaultMaxEndpointsPerSource
    /// HTTP/2 PINGs on every upstream connection; nil: none.
    public var keepalive: KeepaliveConfig?
    /// An upstream's response head or trailers may hold this many KiB
    /// (RFC 9113's count) and this many fields, as a listener's limits do
    /// for clients (Envoy's `max_response_headers_kb`, `max_headers_count`).
    public var maxResponseHeadersKB = 60
    public var maxHeadersCount = 100

    /// Whether connections made for `other` would be made the same way (a
    /// reload keeps an endpoint's pool only then).
    public func sameConnectionSettings(as other: ClusterConfig) -> Bool {
        name == other.name && connectTimeout == other.connectTimeout && maxConnectionsPerEndpoint == other.maxConnectionsPerEndpoint
            && tls == other.tls && keepalive == other.keepalive
            && maxResponseHeadersKB == other.maxResponseHeadersKB && maxHeadersCount == other.maxHeadersCount
    }
}

/// `keepalive:` of a cluster (Envoy's `connection_keepalive`) or a listener:
/// a PING every `interval` on each connection; no ACK within `timeout`
/// closes the connection, so calls with a peer that vanished without a FIN
/// (a dead host, a dropped NAT entry) end in seconds instead of at their
/// deadline.
public struct KeepaliveConfig: Sendable, Equatable {
    public var interval: Duration = .seconds(30)
    public var timeout: Duration = .seconds(5)
}

/// `health_check:` of a cluster: grpc.health.v1 probes of every endpoint.
public struct HealthCheckConfig: Sendable {
    public enum Mode: String, Sendable {
        /// One `Watch` stream per endpoint (gRFC A17): status changes apply at once.
        case watch
        /// A `Check` call every `interval`.
        case check
    }

    public var mode: Mode = .watch
    public var interval: Duration = .seconds(5)
    public var timeout: Duration = .seconds(1)
    /// Consecutive failures that take a healthy endpoint out of rotation.
    public var unhealthyThreshold = 2
    /// Consecutive successes that bring an unhealthy endpoint back.
    public var healthyThreshold = 2
    /// The service name asked about ("" = the server as a whole).
    public var service = ""
    /// Up to this much random time is added to each interval.
    public var jitter: Duration = .zero
}

public struct EndpointConfig: Sendable, Hashable {
    public var address: SocketAddressSpec
    public var weight: Int = 1
    /// Labels from discovery (a file entry or etcd value), shown on
    /// `/clusters`.
    public var metadata: [String: String] = [:]

    public init(address: SocketAddressSpec, weight: Int = 1, metadata: [String: String] = [:]) {
        self.address = address
        self.weight = weight
        self.metadata = metadata
    }
}
