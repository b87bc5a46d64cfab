import ArgumentParser
import GRPCHealthProto
import GatewayHost
import MeshgateGRPC
import MeshgateGRPCCalls
import MeshgateHTTP2
import MeshgateTLS
import MeshgateTransport
import NIOCore
import NIOPosix
import MeshgateConfig

/// `meshgate probe`: one grpc.health.v1 Check, with grpc_health_probe's
/// options and exit codes, so that a container image needs no other tool
/// for its HEALTHCHECK (and scripts written for grpc_health_probe work).
struct Probe: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check a gRPC server's health (grpc.health.v1 Check), as grpc_health_probe does.",
        discussion: """
            Exit codes (grpc_health_probe's): 0 SERVING, 1 invalid arguments, 2 connection failure, \
            3 the RPC failed, 4 the service is not SERVING.
            """)

    @Option(help: "The server, HOST:PORT.") var addr: String
    @Option(help: "The service to check (empty: the server as a whole).") var service = ""
    @Option(name: .customLong("connect-timeout"), help: "Time to connect (and handshake), e.g. 1s.") var connectTimeout = "1s"
    @Option(name: .customLong("rpc-timeout"), help: "Time for the Check call, e.g. 1s.") var rpcTimeout = "1s"
    @Flag(help: "Speak TLS.") var tls = false
    @Option(name: .customLong("tls-ca-cert"), help: "PEM CA bundle verifying the server (default: the system's).") var tlsCACert: String?
    @Option(name: .customLong("tls-client-cert"), help: "Client certificate (PEM) for mutual TLS.") var tlsClientCert: String?
    @Option(name: .customLong("tls-client-key"), help: "The client certificate's PEM private key.") var tlsClientKey: String?
    @Option(name: .customLong("tls-server-name"), help: "Name verified in the server's certificate (default: the host).") var tlsServerName: String?

    enum Outcome: Int32 {
        case serving = 0, invalidArguments = 1, connectionFailure = 2, rpcFailure = 3, notServing = 4
    }

    func run() async throws {
        let outcome = await check()
        throw ExitCode(outcome.rawValue)
    }

    /// The status as grpc.health.v1 spells it (grpc_health_probe prints that).
    static func name(of status: Grpc_Health_V1_HealthCheckResponse.ServingStatus?) -> String {
        switch status {
        case .none: "no status"
        case .some(.unknown): "UNKNOWN"
        case .some(.serving): "SERVING"
        case .some(.notServing): "NOT_SERVING"
        case .some(.serviceUnknown): "SERVICE_UNKNOWN"
        case .some(.UNRECOGNIZED(let n)): "status \(n)"
        }
    }

    private static func fail(_ outcome: Outcome, _ message: String) -> Outcome {
        printError("meshgate probe: \(message)")
        return outcome
    }

    private func check() async -> Outcome {
        guard let colon = addr.lastIndex(of: ":"), let port = Int(addr[addr.index(after: colon)...]), (1...65535).contains(port) else {
            return Self.fail(.invalidArguments, "--addr '\(addr)': expected HOST:PORT")
        }
        let named = String(addr[..<colon])
        let host = named.hasPrefix("[") && named.hasSuffix("]") ? String(named.dropFirst().dropLast()) : named
        guard let connect = DurationParser.parse(connectTimeout), let rpc = DurationParser.parse(rpcTimeout),
              connect > .zero, rpc > .zero else {
            return Self.fail(.invalidArguments, "--connect-timeout and --rpc-timeout take a positive duration such as 1s or 500ms")
        }
        let usesTLS = tls || tlsCACert != nil || tlsClientCert != nil
        guard (tlsClientCert == nil) == (tlsClientKey == nil) else {
            return Self.fail(.invalidArguments, "--tls-client-cert and --tls-client-key go together")
        }
        let context: TLSContext?
        do {
            context = usesTLS ? try TLSContext(role: .client, certificateChain: tlsClientCert, privateKey: tlsClientKey, trustedCAs: tlsCACert) : nil
        } catch {
            return Self.fail(.invalidArguments, "TLS: \(error.message)")
        }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let loop = group.next()
        let connectNanos = connect.nanosecondsClamped
        let serverName = tlsServerName ?? host
        let request = Grpc_Health_V1_HealthCheckRequest.with { $0.service = self.service }
        let authority = addr
        let rpcTimeout = TimeAmount.nanoseconds(rpc.nanosecondsClamped)
        let promise = loop.makePromise(of: Outcome.self)
        let service = self.service
        loop.execute {
            let options = HTTP2DialOptions(connectTimeout: .nanoseconds(connectNanos), tls: context.map { ($0, serverName) })
            let owner = ProbeConnectionOwner()
            HTTP2Dialer.dial(host: host, port: port, on: loop, options: options, delegate: owner) { result in
                let connection: HTTP2Connection
                switch result {
                case .failure(let error):
                    return promise.succeed(Probe.fail(.connectionFailure, "cannot connect to \(authority): \(error.message)"))
                case .success(let ready):
                    connection = ready
                }
                let call = GRPCClientCall()
                var reported: Grpc_Health_V1_HealthCheckResponse.ServingStatus?
                call.onMessage = { bytes in
                    reported = (try? Grpc_Health_V1_HealthCheckResponse(serializedBytes: Array(bytes.readableBytesView)))?.status
                }
                call.onFinish = { status in
                    connection.close()
                    guard status.code == .ok else {
                        return promise.succeed(Probe.fail(.rpcFailure, "Check(\"\(service)\") failed: \(status)"))
                    }
                    guard reported == .serving else {
                        return promise.succeed(Probe.fail(.notServing, "service \"\(service)\" unhealthy (responded with \"\(Probe.name(of: reported))\")"))
                    }
                    print("status: SERVING")
                    promise.succeed(.serving)
                }
                owner.call = call
                if !call.start(on: connection, authority: authority, path: "/grpc.health.v1.Health/Check", request: request,
                               timeout: rpcTimeout) {
                    connection.close()
                    promise.succeed(Probe.fail(.rpcFailure, "the server took no new stream"))
                }
            }
        }
        let outcome = (try? await promise.futureResult.get()) ?? .rpcFailure
        try? await group.shutdownGracefully()
        return outcome
    }
}

/// The probe connection's delegate: keeps the call alive until it ends.
private final class ProbeConnectionOwner: HTTP2ConnectionDelegate {
    var call: GRPCClientCall?
    func http2ConnectionDidClose(_ connection: HTTP2Connection) {}
}
