import MeshgateGRPC
import MeshgateHTTP2
import MeshgateTLS
import MeshgateTransport
import NIOCore
import MeshgateConfig
import MeshgateSupport
import MeshgateDiscovery

/// The HTTP/2 connections of one event loop to one upstream endpoint.
///
/// Streams are multiplexed: a call takes the first connection with room
/// under the upstream's SETTINGS_MAX_CONCURRENT_STREAMS; when none has room,
/// another connection opens (up to `max_connections_per_endpoint`). Calls
/// wait here while a connection is being set up, and at that limit until a
/// stream closes. A failed connect puts the
/// endpoint in exponential backoff (gRPC's connection backoff: 1 s × 1.6ⁿ,
/// ±20 % jitter, at most 30 s) and hands the waiting calls back to be placed
/// on another endpoint, since none of their bytes left the gateway. Those
/// decisions are `EndpointPoolStateMachine`'s; the pool carries them out.
public final class EndpointPool {
    public let endpoint: EndpointConfig
    public let cluster: ClusterConfig
    public let loop: UpstreamLoop
    /// TLS to the endpoint (the cluster's current material at each connect).
    public let tls: TLSContextSource?
    /// Its connections and waiting calls, and what to do with them.
    private var machine: EndpointPoolStateMachine<UpstreamConnection, any UpstreamPoolWaiter>
    public var connections: [UpstreamConnection] { machine.connections }
    private var retryAfter: NIODeadline?
    public private(set) var lastConnectError: String?
    /// From active health checks (always true without them).
    public var healthy = true
    /// Generations (on this loop) whose clusters hold this pool; it closes
    /// its connections when the last one has drained.
    public var generations = 0
    /// Outlier detection took it out of rotation.
    public var ejected = false
    /// Attempt streams open to this endpoint from this loop (what least-conn
    /// balancers read as `in_flight`).
    public private(set) var inFlight = 0
    /// Attempts this loop ended on this endpoint, by gRPC status code
    /// (transport failures count as UNAVAILABLE).
    public private(set) var attemptCodes = GRPCStatusCounts()

    public func streamOpened() { inFlight += 1 }

    public func streamClosed() { inFlight -= 1 }

    public func recordResult(_ code: GRPCStatusCode) { attemptCodes.record(code) }

    public init(endpoint: EndpointConfig, cluster: ClusterConfig, loop: UpstreamLoop, tls: TLSContextSource?) {
        self.endpoint = endpoint
        self.cluster = cluster
        self.loop = loop
        self.tls = tls
        self.address = endpoint.address.description
        self.machine = EndpointPoolStateMachine(maxConnections: cluster.maxConnectionsPerEndpoint)
    }

    /// `:scheme` of the requests sent to it.
    public var scheme: String { tls == nil ? "http" : "https" }

    /// "host:port" or "[v6]:port": formatted once, read per call (access
    /// log, metrics labels, plugin attempt_endpoint).
    public let address: String

    public var isBackingOff: Bool {
        guard let retryAfter else { return false }
        return retryAfter > .now()
    }

    /// Gives the attempt a connection now (`attach`) or once one is ready.
    /// Generic, not an existential: the usual path (a connection has room)
    /// is specialized per waiter type and boxes nothing.
    public func acquire<Waiter: UpstreamPoolWaiter>(for call: Waiter) {
        if let connection = machine.connectionWithRoom {
            call.attach(connection)
            return
        }
        if machine.enqueue(call) { connect() }
    }

    public func cancelWait(_ call: any UpstreamPoolWaiter) {
        machine.cancelWait(call)
    }

    /// For every dial to this endpoint (its pool's connections, reflection
    /// queries): a peer that is one of the gateway's own listener or admin
    /// addresses is refused. A name (or a number the discovery check
    /// missed) that reaches it would have calls come back in, be routed
    /// here again and loop until their deadline. Checked once per
    /// connection, never per call; nil when the gateway listens nowhere.
    public var refuseOwnPeer: ((SocketAddress) -> String?)? {
        let own = loop.ownAddresses
        guard !own.own.isEmpty else { return nil }
        let address = self.address
        return { peer in
            own.match(peer: peer, local: LocalAddresses.current).map {
                "endpoint \(address) resolves to the gateway's own \($0.what): refused, it would loop calls through the gateway"
            }
        }
    }

    private func connect() {
        let connection = UpstreamConnection(pool: self)
        machine.dialStarted(connection)
        let timeout = TimeAmount.nanoseconds(cluster.connectTimeout.nanosecondsClamped)
        var settings = UpstreamConnection.settings
        settings.bufferBudget = loop.bufferBudget
        settings.maxHeaderListSize = UInt32(cluster.maxResponseHeadersKB << 10)
        settings.maxHeaderFields = cluster.maxHeadersCount
        var options = HTTP2DialOptions(connectTimeout: timeout, settings: settings,
                                       tls: tls.map { ($0.current, $0.files.serverName ?? endpoint.address.host) })
        options.writeBatch = loop.writeBatch
        options.refusePeer = refuseOwnPeer
        if let keepalive = cluster.keepalive {
            let address = self.address
            options.keepalive = (.nanoseconds(keepalive.interval.nanosecondsClamped), .nanoseconds(keepalive.timeout.nanosecondsClamped), { reason in
                Log.warning("upstream keepalive timed out", ["endpoint": address, "reason": reason])
            })
        }
        HTTP2Dialer.dial(host: endpoint.address.host, port: endpoint.address.port, on: loop.eventLoop, options: options,
                         delegate: connection) { result in
            switch result {
            case .success(let http2):
                connection.http2 = http2
                self.connectionReady(connection)
            case .failure(let error):
                self.connectionFailed(connection, error: error.message)
            }
        }
    }

    /// The upstream's first SETTINGS arrived: the connection takes streams.
    private func connectionReady(_ connection: UpstreamConnection) {
        connection.isConnecting = false
        if machine.dialSucceeded() {
            Log.info("upstream reachable again", ["cluster": cluster.name, "endpoint": address])
        }
        retryAfter = nil
        lastConnectError = nil
        serviceWaiters()
    }

    /// Connecting failed (TCP, TLS, or the HTTP/2 handshake). Waiting calls
    /// go back to be placed elsewhere: none of their bytes were sent.
    private func connectionFailed(_ connection: UpstreamConnection, error: String) {
        guard let stranded = machine.dialFailed(connection) else { return }
        let backoff = machine.backoffSeconds(jitter: Double.random(in: 0.8...1.2))
        retryAfter = .now() + .nanoseconds(Int64(backoff * 1e9))
        lastConnectError = error
        Log.warning("upstream connect failed", [
            "cluster": cluster.name, "endpoint": address, "error": error,
            "retry_in_ms": String(Int(backoff * 1000)),
        ])
        for call in stranded { call.connectFailed(on: self, error: error) }
    }

    /// A stream ended or SETTINGS arrived: room may have opened.
    public func serviceWaiters() {
        while let next = machine.nextAttachment() { next.waiter.attach(next.connection) }
        if machine.needsDial { connect() }
    }

    /// The connection closed or received GOAWAY: no new streams go to it.
    public func connectionUnusable(_ connection: UpstreamConnection) {
        machine.connectionUnusable(connection)
        serviceWaiters()
    }

    public func closeAll() {
        for connection in connections { connection.http2?.close() }
    }
}
