import MeshgateEtcd
import MeshgateGRPC
import MeshgateGRPCCalls
import MeshgateTLS
import MeshgateYAML
import NIOCore

/// Endpoints from etcd v3: every key under `prefix` is one endpoint, its
/// value a JSON object `{"address": "10.0.0.7:50051", "weight": 2,
/// "metadata": {...}}` (what `meshgate register` and `mesh-sample
/// --register-etcd` write) or just `"host:port"`. The prefix is listed,
/// then watched from the listed revision, so no change falls between the
/// two. When the watch ends (etcd down, connection lost, history
/// compacted) the source reports the failure, keeps the last endpoints
/// and lists again with backoff.
///
/// At most `maxEndpoints` keys are kept (the first in key order when
/// listed, then as they arrive): anyone who can write under the prefix
/// could otherwise grow the gateway's memory key by key. Keys beyond are
/// ignored with a log line; when a kept key goes while some were ignored,
/// the prefix is listed again so that one of them takes its place.
final class EtcdDiscovery: DiscoverySource {
    let config: EtcdDiscoveryConfig
    let maxEndpoints: Int
    private let client: EtcdClient
    private let eventLoop: EventLoop
    private var report: Report?
    private var entries: [String: EndpointConfig] = [:]
    private var watch: GRPCClientCall?
    private var timer: Scheduled<Void>?
    private var backoff = DiscoveryBackoff(limit: .seconds(5))
    private var loggedBadKeys: Set<String> = []
    /// Keys left out because `maxEndpoints` were kept already.
    private var ignoredKeys = 0
    private var session = 0

    init(config: EtcdDiscoveryConfig, maxEndpoints: Int, eventLoop: EventLoop, tls: TLSContextSource?) {
        self.config = config
        self.maxEndpoints = maxEndpoints
        self.eventLoop = eventLoop
        var provider: (@Sendable () -> TLSContext)?
        if let tls { provider = { tls.current } }
        self.client = EtcdClient(endpoints: config.endpoints.map { EtcdClient.Endpoint(host: $0.host, port: $0.port) },
                                 eventLoop: eventLoop, tlsProvider: provider, serverName: tls?.files.serverName,
                                 dialTimeout: .nanoseconds(config.dialTimeout.nanosecondsClamped))
    }

    func start(report: @escaping Report) {
        self.report = report
        list()
    }

    func stop() {
        report = nil
        session += 1
        timer?.cancel()
        watch?.cancel(GRPCStatus(.cancelled, "discovery stopped"))
        client.close()
    }

    private func list() {
        session += 1
        let current = session
        client.range(prefix: config.prefix) { result in
            guard current == self.session, self.report != nil else { return }
            switch result {
            case .failure(let error):
                self.fail("listing \(self.config.prefix): \(error)")
            case .success(let (kvs, revision)):
                self.entries = [:]
                self.ignoredKeys = 0
                for kv in kvs { self.apply(put: kv) }
                self.logIgnoredKeys()
                self.publish()
                self.startWatch(from: revision + 1, session: current)
            }
        }
    }

    private func startWatch(from revision: Int64, session current: Int) {
        client.watch(prefix: config.prefix, startRevision: revision, onResponse: { events, _ in
            guard current == self.session, !events.isEmpty else { return }
            self.backoff.reset()
            var freed = false
            for event in events {
                switch event.kind {
                case .put: self.apply(put: event.kv)
                case .delete: freed = self.entries.removeValue(forKey: event.kv.keyString) != nil || freed
                }
            }
            self.logIgnoredKeys()
            if freed && self.ignoredKeys > 0 {
                // A place came free and keys wait for one: list again.
                self.session += 1
                self.watch?.cancel(GRPCStatus(.cancelled, "listing again"))
                self.watch = nil
                return self.list()
            }
            self.publish()
        }, onEnd: { error in
            guard current == self.session else { return }
            self.watch = nil
            self.fail("watch of \(self.config.prefix) ended: \(error)")
        }, onOpen: { call in
            self.watch = call
        })
    }

    private func apply(put kv: EtcdKeyValue) {
        let key = kv.keyString
        switch Self.parse(kv.valueString) {
        case .success(let endpoint):
            guard entries[key] != nil || entries.count < maxEndpoints else {
                ignoredKeys += 1
                return
            }
            entries[key] = endpoint
            loggedBadKeys.remove(key)
        case .failure(let failure):
            entries.removeValue(forKey: key)
            // Each bad key is logged once while it stays bad; the set of
            // keys remembered for that is bounded like the endpoints.
            if loggedBadKeys.contains(key) { return }
            if loggedBadKeys.count < maxEndpoints { loggedBadKeys.insert(key) }
            Log.error("etcd discovery: ignoring a key whose value is not an endpoint", ["key": key, "error": failure.description])
        }
    }

    private var loggedIgnoredKeys = 0

    private func logIgnoredKeys() {
        guard ignoredKeys != loggedIgnoredKeys else { return }
        loggedIgnoredKeys = ignoredKeys
        guard ignoredKeys > 0 else { return }
        Log.warning("etcd discovery: more keys under the prefix than max_endpoints; the keys beyond are ignored", [
            "prefix": config.prefix, "max_endpoints": String(maxEndpoints), "ignored_keys": String(ignoredKeys),
        ])
    }

    private func publish() {
        // Sorted by key: the same membership always gives the same order.
        report?(.success(entries.sorted { $0.key < $1.key }.map(\.value)))
    }

    private func fail(_ message: String) {
        report?(.failure(DiscoveryFailure(message)))
        session += 1
        watch?.cancel(GRPCStatus(.cancelled, "discovery stopped"))
        watch = nil
        let delay = backoff.next()
        timer = eventLoop.assumeIsolated().scheduleTask(in: .milliseconds(delay)) { self.list() }
    }

    /// A key's value: a JSON object, or a bare `host:port`, within
    /// `InputLimits.etcdValue`.
    static func parse(_ value: String) -> Result<EndpointConfig, DiscoveryFailure> {
        let limits = InputLimits.etcdValue
        guard value.utf8.count <= limits.maxBytes else {
            return .failure(DiscoveryFailure("the value is \(value.utf8.count) bytes, over the limit of \(limits.maxBytes) bytes"))
        }
        let text = String(value.drop { $0.isWhitespace }.reversed().drop { $0.isWhitespace }.reversed())
        if !text.hasPrefix("{") {
            do {
                return .success(EndpointConfig(address: try SocketAddressSpec.parse(text)))
            } catch {
                return .failure(DiscoveryFailure("'\(text)': \(error)"))
            }
        }
        let node: YAMLNode
        do {
            node = try YAMLParser.parse(text, limits: limits)
        } catch {
            return .failure(DiscoveryFailure(error.isLimit ? "\(error.mark): \(error.message)" : "not JSON: \(error)"))
        }
        do throws(ConfigError) {
            let endpoints = try ConfigLoader.parseEndpoints([(node, "value")], file: "etcd")
            return .success(endpoints[0])
        } catch {
            return .failure(DiscoveryFailure("\(error.field): \(error.message)"))
        }
    }
}
