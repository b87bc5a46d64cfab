import GRPCHealthProto
import MeshgateGRPC
import MeshgateGRPCCalls
import MeshgateHTTP2
import MeshgateTLS
import MeshgateTransport
import NIOCore
import MeshgateConfig
import MeshgateSupport

/// Active health checking of one endpoint with grpc.health.v1, on its own
/// HTTP/2 connection (never one of the data path's), on the health loop.
///
/// `watch` mode (gRFC A17) keeps one Watch stream open: a SERVING message
/// makes the endpoint healthy at once, anything else unhealthy at once;
/// stream or connection failures count toward `unhealthy_threshold` and the
/// stream is reopened after `interval`. An upstream without the health
/// service (UNIMPLEMENTED) counts as healthy, with an error logged.
/// `check` mode calls Check every `interval` (+ jitter) with `timeout`;
/// thresholds decide the transitions.
public final class EndpointProbe {
    /// A HealthCheckResponse is a status: an upstream answering more than
    /// this (a few bytes) is not answering health checks.
    public static let maxResponseBytes = 4096

    public let clusterIndex: Int
    public let endpointIndex: Int
    public let endpoint: EndpointConfig
    public let epoch: Int
    /// The cluster's TLS: probes connect the way calls do.
    public let tls: TLSContextSource?
    public let config: HealthCheckConfig
    public let registry: HealthRegistry
    public let eventLoop: EventLoop

    /// The probe's own connection (never one of the data path's).
    private lazy var connection = HTTP2ConnectionSlot(eventLoop: eventLoop) { [weak self] delegate, completion in
        guard let self else { return completion(.failure(HTTP2DialError("the probe is gone"))) }
        let timeout = TimeAmount.nanoseconds(self.config.timeout.nanosecondsClamped)
        let options = HTTP2DialOptions(connectTimeout: timeout,
                                       tls: self.tls.map { ($0.current, $0.files.serverName ?? self.endpoint.address.host) })
        HTTP2Dialer.dial(host: self.endpoint.address.host, port: self.endpoint.address.port, on: self.eventLoop, options: options,
                         delegate: delegate, completion: completion)
    }
    private var call: GRPCClientCall?
    private var timer: Scheduled<Void>?
    private var healthy = true
    /// Starts out of rotation (added at run time) and no check has
    /// answered yet: the first success lets it in, whatever the threshold.
    private var awaitingFirstCheck = false
    private var successes = 0
    private var failures = 0
    private var stopped = false
    private var loggedUnimplemented = false

    public init(epoch: Int, cluster: Int, endpoint: Int, config: EndpointConfig, check: HealthCheckConfig, registry: HealthRegistry,
         eventLoop: EventLoop, tls: TLSContextSource? = nil) {
        self.epoch = epoch
        self.tls = tls
        self.clusterIndex = cluster
        self.endpointIndex = endpoint
        self.endpoint = config
        self.config = check
        self.registry = registry
        self.eventLoop = eventLoop
    }

    private var address: String { endpoint.address.description }

    public func start() {
        healthy = registry.isHealthy(cluster: clusterIndex, endpoint: endpointIndex)
        awaitingFirstCheck = !healthy && registry.awaitsFirstCheck(cluster: clusterIndex, endpoint: endpointIndex)
        probe()
    }

    public func stop() {
        stopped = true
        timer?.cancel()
        call?.cancel()
        connection.close(reason: "the probe stopped")
    }

    // MARK: Probing

    private func probe() {
        guard !stopped else { return }
        connection.withConnection { result in
            guard !self.stopped else { return }
            switch result {
            case .failure(let error):
                self.recordFailure(error.message)
                self.scheduleNext()
            case .success(let connection):
                switch self.config.mode {
                case .check: self.sendCheck(on: connection)
                case .watch: self.openWatch(on: connection)
                }
            }
        }
    }

    private func scheduleNext() {
        guard !stopped else { return }
        var delay = config.interval.nanosecondsClamped
        let jitter = config.jitter.nanosecondsClamped
        if jitter > 0 { delay += Int64.random(in: 0...jitter) }
        timer = eventLoop.assumeIsolated().scheduleTask(in: .nanoseconds(delay)) { self.probe() }
    }

    private var request: Grpc_Health_V1_HealthCheckRequest {
        var r = Grpc_Health_V1_HealthCheckRequest()
        r.service = config.service
        return r
    }

    private func sendCheck(on connection: HTTP2Connection) {
        let call = GRPCClientCall(maxResponseMessageBytes: Self.maxResponseBytes)
        var reported: HealthRegistry.Status?
        call.onMessage = { bytes in
            reported = (try? Grpc_Health_V1_HealthCheckResponse(serializedBytes: Array(bytes.readableBytesView)))?.status
        }
        call.onFinish = { status in
            self.call = nil
            if status.code == .ok, reported == .serving {
                self.recordSuccess()
            } else if status.code == .ok {
                self.recordFailure("reported \(reported.map { "\($0)" } ?? "no status")")
            } else {
                self.recordFailure("Check failed: \(status)")
            }
            self.scheduleNext()
        }
        self.call = call
        if !call.start(on: connection, authority: address, path: "/grpc.health.v1.Health/Check", request: request,
                       timeout: .nanoseconds(config.timeout.nanosecondsClamped)) {
            self.call = nil
            recordFailure("could not open a stream")
            scheduleNext()
        }
    }

    private func openWatch(on connection: HTTP2Connection) {
        let call = GRPCClientCall(maxResponseMessageBytes: Self.maxResponseBytes)
        call.onMessage = { bytes in
            let status = (try? Grpc_Health_V1_HealthCheckResponse(serializedBytes: Array(bytes.readableBytesView)))?.status
            if status == .serving {
                self.failures = 0
                self.setHealthy(true, reason: "Watch reported SERVING")
            } else {
                self.successes = 0
                self.setHealthy(false, reason: "Watch reported \(status.map { "\($0)" } ?? "an unreadable status")")
            }
        }
        call.onFinish = { status in
            self.call = nil
            if status.code == .unimplemented {
                if !self.loggedUnimplemented {
                    self.loggedUnimplemented = true
                    Log.error("upstream does not implement grpc.health.v1 Watch; treating it as healthy (gRFC A17)", [
                        "endpoint": self.address, "status": "\(status)",
                    ])
                }
                self.failures = 0
                self.setHealthy(true, reason: "health service unimplemented")
            } else {
                self.recordFailure("Watch ended: \(status)")
            }
            self.scheduleNext()
        }
        self.call = call
        if !call.start(on: connection, authority: address, path: "/grpc.health.v1.Health/Watch", request: request, timeout: nil) {
            self.call = nil
            recordFailure("could not open a stream")
            scheduleNext()
        }
    }

    private func recordSuccess() {
        failures = 0
        successes += 1
        if !healthy && (successes >= config.healthyThreshold || awaitingFirstCheck) {
            awaitingFirstCheck = false
            setHealthy(true, reason: "\(successes) consecutive successful checks")
        }
    }

    private func recordFailure(_ reason: String) {
        if awaitingFirstCheck {
            awaitingFirstCheck = false
            registry.firstCheckFailed(epoch: epoch, cluster: clusterIndex, endpoint: endpointIndex)
        }
        successes = 0
        failures += 1
        if healthy && failures >= config.unhealthyThreshold {
            setHealthy(false, reason: "\(failures) consecutive failed checks; last: \(reason)")
        }
    }

    private func setHealthy(_ value: Bool, reason: String) {
        guard value != healthy else { return }
        healthy = value
        registry.setEndpoint(epoch: epoch, cluster: clusterIndex, endpoint: endpointIndex, healthy: value, reason: reason)
    }
}
