import ArgumentParser
import Dispatch
import MeshgateEtcd
import MeshgatePosix
import MeshgateTLS
import NIOPosix

/// `meshgate register`: keeps an endpoint registered in etcd for as long as
/// the command runs, for any process that cannot register itself (run it
/// beside the service, e.g. as a sidecar). SIGTERM or SIGINT revokes the
/// lease, so the endpoint leaves at once; if the command dies, the lease
/// expires after `--ttl` seconds.
struct Register: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Register an endpoint in etcd while this command runs (lease kept alive, revoked on exit).")

    @Option(help: "etcd endpoints, HOST:PORT, comma-separated.") var etcd = "127.0.0.1:2379"
    @Option(help: "Key prefix the gateway's etcd discovery watches.") var prefix = "/meshgate/services/mesh/"
    @Option(help: "The endpoint's address, HOST:PORT, as the gateway should dial it.") var address: String
    @Option(help: "Key name under the prefix (default: the address).") var id: String?
    @Option(help: "Load-balancing weight.") var weight = 1
    @Option(help: "Lease TTL in seconds.") var ttl = 10
    @Option(name: .customLong("metadata"), help: "KEY=VALUE label (repeatable).") var metadata: [String] = []
    @Option(name: .customLong("etcd-ca"), help: "Speak TLS to etcd, verifying it with this PEM CA bundle.") var etcdCA: String?
    @Option(name: .customLong("etcd-cert"), help: "Client certificate (PEM) for etcd's mutual TLS.") var etcdCert: String?
    @Option(name: .customLong("etcd-key"), help: "The client certificate's PEM private key.") var etcdKey: String?
    @Option(name: .customLong("etcd-server-name"), help: "Name checked in etcd's certificate (default: the endpoint's host).") var etcdServerName: String?

    func validate() throws {
        guard EtcdClient.Endpoint(parsing: address) != nil else { throw ValidationError("--address: expected HOST:PORT") }
        guard ttl >= 2 else { throw ValidationError("--ttl: at least 2 seconds") }
        guard (1...10_000).contains(weight) else { throw ValidationError("--weight: from 1 to 10000") }
        for item in metadata where !item.contains("=") { throw ValidationError("--metadata '\(item)': expected KEY=VALUE") }
    }

    func run() async throws {
        let endpoints = etcd.split(separator: ",").compactMap { EtcdClient.Endpoint(parsing: String($0)) }
        guard !endpoints.isEmpty else { throw ValidationError("--etcd: expected HOST:PORT[,HOST:PORT...]") }
        var labels: [String: String] = [:]
        for item in metadata {
            let parts = item.split(separator: "=", maxSplits: 1)
            labels[String(parts[0])] = parts.count > 1 ? String(parts[1]) : ""
        }
        let entry = EtcdRegistration.Entry(key: prefix + (id ?? address), address: address, weight: weight, metadata: labels)
        var tls: TLSContext?
        if etcdCA != nil || etcdCert != nil {
            guard (etcdCert == nil) == (etcdKey == nil) else { throw ValidationError("--etcd-cert and --etcd-key go together") }
            do {
                tls = try TLSContext(role: .client, certificateChain: etcdCert, privateKey: etcdKey, trustedCAs: etcdCA)
            } catch {
                throw ValidationError("etcd TLS: \(error.message)")
            }
        }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let registration = EtcdRegistration(etcd: endpoints, entry: entry, ttlSeconds: Int64(ttl), eventLoop: group.next(),
                                            tls: tls, serverName: etcdServerName) { message in
            printError("meshgate register: \(message)")
        }
        let (signals, continuation) = AsyncStream.makeStream(of: Int32.self)
        let sources = [Posix.Signal.terminate, Posix.Signal.interrupt].map { sig -> DispatchSourceSignal in
            try? Posix.ignoreSignal(sig)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            source.setEventHandler { continuation.yield(sig) }
            source.resume()
            return source
        }
        for await _ in signals { break }
        try? await registration.stop().get()
        printError("meshgate register: \(entry.key) unregistered")
        sources.forEach { $0.cancel() }
        try? await group.shutdownGracefully()
    }
}
