import MeshgateJSON
import MeshgateTLS
import NIOCore

/// Keeps one endpoint registered in etcd while the process runs: the key
/// is attached to a lease that is kept alive every TTL/3, so a process that
/// dies disappears when its lease expires, and `stop` revokes the lease
/// (the key goes at once) on a clean shutdown. A lost lease (etcd was down
/// longer than the TTL) is granted anew and the key put again.
public final class EtcdRegistration: Sendable {
    /// What a registration writes: the key's value is the JSON object
    /// Meshgate's etcd discovery reads.
    public struct Entry: Sendable {
        public var key: String
        public var address: String
        public var weight: Int
        public var metadata: [String: String]

        public init(key: String, address: String, weight: Int = 1, metadata: [String: String] = [:]) {
            self.key = key
            self.address = address
            self.weight = weight
            self.metadata = metadata
        }

        public var json: String {
            var json = JSONWriter()
            json.object { o in
                o.field("address", address)
                o.field("weight", weight)
                o.field("metadata") {
                    $0.object { m in
                        for (key, value) in metadata.sorted(by: { $0.key < $1.key }) { m.field(key, value) }
                    }
                }
            }
            return json.text
        }
    }

    private let loop: EventLoop
    private let registrar: Registrar

    /// Starts registering at once; failures are retried with backoff and
    /// reported through `log`.
    public init(etcd endpoints: [EtcdClient.Endpoint], entry: Entry, ttlSeconds: Int64, eventLoop: EventLoop,
                tls: TLSContext? = nil, serverName: String? = nil, log: @escaping @Sendable (String) -> Void) {
        self.loop = eventLoop
        let client = EtcdClient(endpoints: endpoints, eventLoop: eventLoop, tls: tls, serverName: serverName)
        let registrar = Registrar(client: client, entry: entry, ttl: ttlSeconds, log: log)
        self.registrar = registrar
        eventLoop.execute { registrar.register() }
    }

    /// Revokes the lease (best effort, bounded) and stops keeping it alive.
    public func stop() -> EventLoopFuture<Void> {
        let registrar = self.registrar
        return loop.flatSubmit { registrar.stop() }
    }
}

/// The loop-confined half of `EtcdRegistration`.
///
/// `@unchecked Sendable`: made in `EtcdRegistration.init`, which touches
/// nothing of it after handing it over; from then on only the client's
/// event loop uses it.
private final class Registrar: @unchecked Sendable {
    let client: EtcdClient
    let entry: Entry
    let ttl: Int64
    let log: @Sendable (String) -> Void
    private var lease: Int64 = 0
    private var timer: Scheduled<Void>?
    private var stopped = false
    private var failures = 0

    typealias Entry = EtcdRegistration.Entry

    init(client: EtcdClient, entry: Entry, ttl: Int64, log: @escaping @Sendable (String) -> Void) {
        self.client = client
        self.entry = entry
        self.ttl = ttl
        self.log = log
    }

    func register() {
        guard !stopped else { return }
        client.grantLease(ttlSeconds: ttl) { result in
            switch result {
            case .failure(let error): self.retry("lease grant failed: \(error)", then: self.register)
            case .success(let id):
                self.client.put(key: self.entry.key, value: self.entry.json, lease: id) { result in
                    switch result {
                    case .failure(let error): self.retry("put failed: \(error)", then: self.register)
                    case .success:
                        self.lease = id
                        self.failures = 0
                        self.log("registered \(self.entry.key) = \(self.entry.address) in etcd at \(self.client.currentEndpoint) (lease \(String(id, radix: 16)), ttl \(self.ttl) s)")
                        self.scheduleKeepAlive()
                    }
                }
            }
        }
    }

    private var keepAliveInterval: TimeAmount { .milliseconds(max(ttl * 1000 / 3, 300)) }

    private func scheduleKeepAlive() {
        guard !stopped else { return }
        timer = client.eventLoop.assumeIsolated().scheduleTask(in: keepAliveInterval) { self.keepAlive() }
    }

    private func keepAlive() {
        guard !stopped else { return }
        client.keepAlive(lease: lease, timeout: keepAliveInterval) { result in
            switch result {
            case .success(let remaining) where remaining > 0:
                self.failures = 0
                self.scheduleKeepAlive()
            case .success:
                self.log("lease \(String(self.lease, radix: 16)) expired; registering again")
                self.lease = 0
                self.register()
            case .failure(let error):
                // The lease may outlive a short etcd outage: keep trying it
                // until etcd says it is gone.
                self.retry("keep-alive failed: \(error)", then: self.keepAlive)
            }
        }
    }

    private func retry(_ message: String, then step: @escaping () -> Void) {
        guard !stopped else { return }
        failures += 1
        let delay = min(250 << min(failures, 4), 3000)
        if failures == 1 || failures % 10 == 0 { log("etcd registration: \(message); retrying in \(delay) ms") }
        timer = client.eventLoop.assumeIsolated().scheduleTask(in: .milliseconds(Int64(delay))) { step() }
    }

    func stop() -> EventLoopFuture<Void> {
        stopped = true
        timer?.cancel()
        let promise = client.eventLoop.makePromise(of: Void.self)
        guard lease != 0 else {
            client.close()
            promise.succeed()
            return promise.futureResult
        }
        let lease = self.lease
        client.revoke(lease: lease) { result in
            if case .failure(let error) = result { self.log("lease revoke failed (the key expires with its lease): \(error)") }
            self.client.close()
            promise.succeed()
        }
        return promise.futureResult
    }
}
