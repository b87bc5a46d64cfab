import ArgumentParser
import MeshProto
import MeshgateEtcd
import MeshgateTLS

/// Faults given on the command line, applied before serving.
struct MeshProtoFaults: Sendable {
    var failProbability: Double
    var failCode: Int
    var delayMs: Int
    var delayProbability: Double

    func apply(to replica: ReplicaState) {
        replica.faults.failProbability = failProbability
        replica.faults.failCode = Int32(failCode)
        replica.faults.delayMs = Int32(delayMs)
        replica.faults.delayProbability = delayProbability
    }
}

@main
struct SampleCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mesh-sample",
        abstract: "The sample mesh.v1.MeshService replica (with health, reflection and test knobs).")

    @Option(help: "Address to listen on.") var host = "127.0.0.1"
    @Option(help: "Port to listen on.") var port: Int = 50061
    @Option(name: .customLong("replica-id"), help: "Name reported in every response.") var replicaID = "replica"
    @Option(name: .customLong("max-concurrent-streams"), help: "SETTINGS_MAX_CONCURRENT_STREAMS per connection.") var maxConcurrentStreams = 100
    @Option(name: .customLong("fail-probability"), help: "Fraction of MeshService calls to fail.") var failProbability = 0.0
    @Option(name: .customLong("fail-code"), help: "gRPC status code for injected failures.") var failCode = 14
    @Option(name: .customLong("delay-ms"), help: "Delay added to MeshService calls.") var delayMs = 0
    @Option(name: .customLong("delay-probability"), help: "Fraction of calls that get the delay.") var delayProbability = 1.0
    @Option(name: .customLong("tls-cert"), help: "Serve TLS with this PEM certificate chain.") var tlsCert: String?
    @Option(name: .customLong("tls-key"), help: "The certificate's PEM private key.") var tlsKey: String?
    @Option(name: .customLong("tls-ca"), help: "Require client certificates signed by this PEM CA bundle (mutual TLS).") var tlsCA: String?
    @Option(name: .customLong("register-etcd"), help: "Register in etcd (HOST:PORT, comma-separated) while serving.") var registerEtcd: String?
    @Option(name: .customLong("register-prefix"), help: "Key prefix of the registration.") var registerPrefix = "/meshgate/services/mesh/"
    @Option(name: .customLong("register-address"), help: "Address registered (default: HOST:PORT served).") var registerAddress: String?
    @Option(name: .customLong("register-ttl"), help: "Lease TTL in seconds: how long a crashed replica stays registered.") var registerTTL = 10
    @Option(name: .customLong("register-weight"), help: "Weight registered.") var registerWeight = 1
    @Option(name: .customLong("register-etcd-ca"), help: "Speak TLS to etcd, verifying it with this PEM CA bundle.") var registerEtcdCA: String?
    @Option(name: .customLong("register-etcd-cert"), help: "Client certificate (PEM) for etcd's mutual TLS.") var registerEtcdCert: String?
    @Option(name: .customLong("register-etcd-key"), help: "The client certificate's PEM private key.") var registerEtcdKey: String?
    @Option(name: .customLong("register-etcd-server-name"), help: "Name checked in etcd's certificate (default: the endpoint's host).")
    var registerEtcdServerName: String?

    func run() throws {
        var tls: TLSContext?
        if let tlsCert {
            do {
                tls = try TLSContext(role: .server, certificateChain: tlsCert, privateKey: tlsKey, trustedCAs: tlsCA,
                                     clientAuth: tlsCA == nil ? .none : .required)
            } catch {
                throw ValidationError("TLS: \(error.message)")
            }
        }
        var registration: SampleRegistration?
        if let registerEtcd {
            let endpoints = registerEtcd.split(separator: ",").compactMap { EtcdClient.Endpoint(parsing: String($0)) }
            guard !endpoints.isEmpty else { throw ValidationError("--register-etcd: expected HOST:PORT[,HOST:PORT...]") }
            guard registerTTL >= 2 else { throw ValidationError("--register-ttl: at least 2 seconds") }
            let address = registerAddress ?? (host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)")
            let entry = EtcdRegistration.Entry(key: registerPrefix + replicaID, address: address, weight: registerWeight,
                                               metadata: ["replica": replicaID])
            var etcdTLS: TLSContext?
            if registerEtcdCA != nil || registerEtcdCert != nil {
                guard (registerEtcdCert == nil) == (registerEtcdKey == nil) else {
                    throw ValidationError("--register-etcd-cert and --register-etcd-key go together")
                }
                do {
                    etcdTLS = try TLSContext(role: .client, certificateChain: registerEtcdCert, privateKey: registerEtcdKey,
                                             trustedCAs: registerEtcdCA)
                } catch {
                    throw ValidationError("etcd TLS: \(error.message)")
                }
            }
            registration = SampleRegistration(etcd: endpoints, entry: entry, ttlSeconds: Int64(registerTTL), tls: etcdTLS,
                                              serverName: registerEtcdServerName)
        }
        try SampleServer.run(host: host, port: port, replicaID: replicaID, maxConcurrentStreams: maxConcurrentStreams,
                             faults: MeshProtoFaults(failProbability: failProbability, failCode: failCode,
                                                     delayMs: delayMs, delayProbability: delayProbability),
                             tls: tls, registration: registration)
    }
}
