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
package final class EndpointProbe: HTTP2ConnectionDelegate {
    /// A HealthCheckResponse is a status: an upstream answering more than
    /// this (a few bytes) is not answering health checks.
    package static let maxResponseBytes = 4096

    package let clusterIndex: Int
    package let endpointIndex: Int
    package let endpoint: EndpointConfig
    package let epoch: Int
    /// The cluster's TLS: probes connect the way calls do.
    package let tls: TLSContextSource?
    package let config: HealthCheckConfig
    package let registry: HealthRegistry
    package let eventLoop: EventLoop

    private var connection: HTTP2Connection?
    private var connecting = false
    private var waitingForConnection: [(Result<HTTP2Connection, ProbeError>) -> Void] = []
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

    package struct ProbeError: Error { let message: String }

    package init(epoch: Int, cluster: Int, endpoint: Int, config: EndpointConfig, check: HealthCheckConfig, registry: HealthRegistry,
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

    package func start() {
        healthy = registry.isHealthy(cluster: clusterIndex, endpoint: endpointIndex)
        awaitingFirstCheck = !healthy && registry.awaitsFirstCheck(cluster: clusterIndex, endpoint: endpointIndex)
        probe()
    }

    package func stop() {
        stopped = true
        timer?.cancel()
        call?.cancel()
        connection?.close()
    }

    // MARK: Probing

    private func probe() {
        guard !stopped else { return }
        withConnection { result in
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

    // MARK: Connection

    private func withConnection(_ body: @escaping (Result<HTTP2Connection, ProbeError>) -> Void) {
        if let connection, connection.canOpenStreams {
            body(.success(connection))
            return
        }
        waitingForConnection.append(body)
        guard !connecting else { return }
        connecting = true
        connection = nil
        let timeout = TimeAmount.nanoseconds(config.timeout.nanosecondsClamped)
        let options = HTTP2DialOptions(connectTimeout: timeout, tls: tls.map { ($0.current, $0.files.serverName ?? endpoint.address.host) })
        HTTP2Dialer.dial(host: endpoint.address.host, port: endpoint.address.port, on: eventLoop, options: options, delegate: self) { result in
            self.connecting = false
            let waiting = self.waitingForConnection
            self.waitingForConnection.removeAll()
            switch result {
            case .success(let http2):
                if self.stopped { http2.close() }
                self.connection = http2
                waiting.forEach { $0(.success(http2)) }
            case .failure(let error):
                waiting.forEach { $0(.failure(ProbeError(message: error.message))) }
            }
        }
    }

    package func http2ConnectionDidClose(_ connection: HTTP2Connection) {
        if connection === self.connection { self.connection = nil }
    }
}
