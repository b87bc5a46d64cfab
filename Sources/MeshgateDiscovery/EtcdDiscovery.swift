import MeshgateEtcd
import MeshgateGRPC
import MeshgateGRPCCalls
import MeshgateTLS
import MeshgateYAML
import NIOCore
import MeshgateConfig
import MeshgateSupport

/// Endpoints from etcd v3: every key under `prefix` is one endpoint, its
/// value a JSON object `{"address": "10.0.0.7:50051", "weight": 2,
/// "metadata": {...}}` (what `meshgate register` and `mesh-sample
/// --register-etcd` write) or just `"host:port"`. The prefix is listed,
/// then watched from the listed revision, so no change falls between the
/// two. When the watch ends (etcd down, connection lost, history
/// compacted) the source reports the failure, keeps the last endpoints
/// and lists again with backoff.
///
/// Whoever can write under the prefix is not trusted with the gateway's
/// memory. At most `maxEndpoints` keys are kept (the first in key order
/// when listed, then as they arrive), and only those are read: the
/// listing asks etcd for pages of at most as many keys as there are
/// places left (`EtcdListing`), a key beyond the places is not parsed,
/// and no message from etcd may pass `InputLimits.etcdMessageBytes`. A key
/// or value over its limit, or a value that is not an endpoint, is
/// ignored with a log line (rate-limited). When a kept key goes (deleted,
/// or its value turned bad) while keys wait for a place, the prefix is
/// listed again so that one of them takes it; after a delay, so that a
/// burst of removals costs one listing, and with backoff.
public final class EtcdDiscovery: DiscoverySource {
    public let config: EtcdDiscoveryConfig
    public let maxEndpoints: Int
    private let client: EtcdClient
    private let eventLoop: EventLoop
    private var report: Report?
    /// The kept keys and their endpoints.
    private var entries: [String: EndpointConfig] = [:]
    /// Keys under the prefix, kept or not: the listing's count, then
    /// followed by the watch (a put that creates a key, a delete).
    private var keysUnderPrefix: Int64 = 0
    /// Some key was left out for want of a place (found by the listing,
    /// or put while every place was taken).
    private var keysWaiting = false
    private var watch: GRPCClientCall?
    private var retryTimer: Scheduled<Void>?
    private var backoff = DiscoveryBackoff(limit: .seconds(5))
    private var relistTimer: Scheduled<Void>?
    private var relistBackoff = DiscoveryBackoff(limit: .seconds(30), first: .seconds(1))
    private var lastRelist: NIODeadline?
    private var badValueLog = BadKeyLog()
    private var session = 0

    public init(config: EtcdDiscoveryConfig, maxEndpoints: Int, eventLoop: EventLoop, tls: TLSContextSource?) {
        self.config = config
        self.maxEndpoints = maxEndpoints
        self.eventLoop = eventLoop
        var provider: (@Sendable () -> TLSContext)?
        if let tls { provider = { tls.current } }
        self.client = EtcdClient(endpoints: config.endpoints.map { EtcdClient.Endpoint(host: $0.host, port: $0.port) },
                                 eventLoop: eventLoop, tlsProvider: provider, serverName: tls?.files.serverName,
                                 dialTimeout: .nanoseconds(config.dialTimeout.nanosecondsClamped),
                                 maxMessageBytes: InputLimits.etcdMessageBytes)
    }

    public func start(report: @escaping Report) {
        self.report = report
        list()
    }

    public func stop() {
        report = nil
        session += 1
        retryTimer?.cancel()
        relistTimer?.cancel()
        watch?.cancel(GRPCStatus(.cancelled, "discovery stopped"))
        client.close()
    }

    // MARK: Listing

    private func list() {
        session += 1
        relistTimer?.cancel()
        relistTimer = nil
        let listing = EtcdListing(prefix: config.prefix, maxPageKeys: min(InputLimits.etcdPageKeys, maxEndpoints))
        readPage(listing, kept: [:], session: session)
    }

    /// Reads the listing's next page into `kept`, then the next, until
    /// the listing is done; then publishes and starts the watch.
    private func readPage(_ listing: EtcdListing, kept: [String: EndpointConfig], session current: Int) {
        var listing = listing
        var kept = kept
        let step = listing.next(placesLeft: maxEndpoints - kept.count)
        let request: EtcdRangeRequest
        switch step {
        case .done:
            entries = kept
            keysUnderPrefix = listing.keysUnderPrefix
            setKeysWaiting(listing.keysLeftUnread)
            publish()
            startWatch(from: listing.revision + 1, session: current)
            return
        case .read(let r), .findOversizeKey(let r):
            request = r
        }
        client.range(request) { result in
            guard current == self.session, self.report != nil else { return }
            switch result {
            case .failure(let error) where error.code == .responseTooLarge:
                guard listing.pageTooLarge() else {
                    return self.fail("listing \(self.config.prefix): a key alone is over the \(InputLimits.etcdMessageBytes) bytes a message from etcd may take: \(error)")
                }
            case .failure(let error):
                return self.fail("listing \(self.config.prefix): \(error)")
            case .success(let page):
                if case .findOversizeKey = step, let kv = page.kvs.first {
                    self.logBadKey(kv.key, "the value is over the \(InputLimits.etcdMessageBytes) bytes a message from etcd may take")
                } else {
                    for kv in page.kvs { _ = self.take(kv, into: &kept) }
                }
                listing.didRead(page)
            }
            self.readPage(listing, kept: kept, session: current)
        }
    }

    // MARK: Watching

    private func startWatch(from revision: Int64, session current: Int) {
        client.watch(prefix: config.prefix, startRevision: revision, onResponse: { events, _, fragment in
            guard current == self.session, !events.isEmpty else { return }
            self.backoff.reset()
            var freed = false
            for event in events {
                switch event.kind {
                case .put:
                    if event.kv.version == 1 { self.keysUnderPrefix += 1 }
                    switch self.take(event.kv, into: &self.entries) {
                    case .noPlace: self.setKeysWaiting(true)
                    case .freed: freed = true
                    case .kept, .bad: break
                    }
                case .delete:
                    self.keysUnderPrefix = max(0, self.keysUnderPrefix - 1)
                    let key = event.kv.keyString
                    if self.entries.removeValue(forKey: key) != nil { freed = true }
                    self.badValueLog.forget(key)
                }
            }
            // No more keys than kept ones: none can be waiting.
            if self.keysWaiting && self.keysUnderPrefix <= Int64(self.entries.count) { self.setKeysWaiting(false) }
            if freed && self.keysWaiting { self.scheduleRelist() }
            // A fragmented batch is published whole, with its last part.
            if !fragment { self.publish() }
        }, onEnd: { error in
            guard current == self.session else { return }
            self.watch = nil
            self.fail("watch of \(self.config.prefix) ended: \(error)")
        }, onOpen: { call in
            self.watch = call
        })
    }

    /// A place came free and keys wait for one: lists again after a delay
    /// (1 s, doubling up to 30 s while re-listings follow each other
    /// within a minute), so that a burst of removals costs one listing and
    /// a writer deleting kept keys in a loop cannot make the gateway read
    /// the prefix in a loop. The watch goes on meanwhile.
    private func scheduleRelist() {
        guard relistTimer == nil else { return }
        let now = NIODeadline.now()
        if let last = lastRelist, now - last > .seconds(60) { relistBackoff.reset() }
        let delay = relistBackoff.next()
        relistTimer = eventLoop.assumeIsolated().scheduleTask(in: .milliseconds(delay)) {
            self.relistTimer = nil
            // Still needed? A new key may have taken the place meanwhile.
            guard self.report != nil, self.keysWaiting, self.entries.count < self.maxEndpoints else { return }
            self.lastRelist = .now()
            Log.debug("etcd discovery: listing again so that a waiting key takes a free place", [
                "prefix": self.config.prefix, "kept": String(self.entries.count), "keys": String(self.keysUnderPrefix),
            ])
            self.session += 1
            self.watch?.cancel(GRPCStatus(.cancelled, "listing again"))
            self.watch = nil
            self.list()
        }
    }

    // MARK: Keys

    public enum Taken { case kept, noPlace, bad, freed }

    /// A key's value (listed or put) into `kept`: kept when the key has a
    /// place (kept already, or a place is free), parsed only then.
    /// `.freed`: the key was kept and its new value is bad.
    private func take(_ kv: EtcdKeyValue, into kept: inout [String: EndpointConfig]) -> Taken {
        guard kv.key.count <= InputLimits.etcdKeyBytes else {
            // Never kept (the key is checked before anything else).
            logBadKey(kv.key, "the key is \(kv.key.count) bytes, over the limit of \(InputLimits.etcdKeyBytes) bytes")
            return .bad
        }
        let key = kv.keyString
        guard kept[key] != nil || kept.count < maxEndpoints else { return .noPlace }
        switch Self.parse(kv.value) {
        case .success(let endpoint):
            kept[key] = endpoint
            badValueLog.forget(key)
            return .kept
        case .failure(let failure):
            let wasKept = kept.removeValue(forKey: key) != nil
            logBadKey(kv.key, failure.description)
            return wasKept ? .freed : .bad
        }
    }

    private func logBadKey(_ key: [UInt8], _ error: String) {
        let shown = String(decoding: key.prefix(InputLimits.etcdKeyBytes), as: UTF8.self) + (key.count > InputLimits.etcdKeyBytes ? "…" : "")
        switch badValueLog.shouldLog(shown) {
        case .drop: return
        case .log:
            Log.error("etcd discovery: ignoring a key whose value is not an endpoint", ["key": shown, "error": error])
        case .logLast:
            Log.error("etcd discovery: ignoring a key whose value is not an endpoint", ["key": shown, "error": error])
            Log.warning("etcd discovery: more keys with bad values than the log takes; the next are not logged for a minute", [
                "prefix": config.prefix, "logged": String(BadKeyLog.linesPerMinute),
            ])
        }
    }

    private func setKeysWaiting(_ waiting: Bool) {
        guard waiting != keysWaiting else { return }
        keysWaiting = waiting
        if waiting {
            Log.warning("etcd discovery: more keys under the prefix than max_endpoints; the keys beyond are ignored", [
                "prefix": config.prefix, "max_endpoints": String(maxEndpoints), "keys": String(keysUnderPrefix),
            ])
        } else {
            Log.info("etcd discovery: the keys under the prefix fit max_endpoints again", [
                "prefix": config.prefix, "max_endpoints": String(maxEndpoints), "keys": String(keysUnderPrefix),
            ])
        }
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
        relistTimer?.cancel()
        relistTimer = nil
        let delay = backoff.next()
        retryTimer = eventLoop.assumeIsolated().scheduleTask(in: .milliseconds(delay)) { self.list() }
    }

    // MARK: Values

    /// A key's value: a JSON object, or a bare `host:port`, within
    /// `InputLimits.etcdValue`; its size is checked before it is decoded.
    public static func parse(_ value: [UInt8]) -> Result<EndpointConfig, DiscoveryFailure> {
        let limits = InputLimits.etcdValue
        guard value.count <= limits.maxBytes else {
            return .failure(DiscoveryFailure("the value is \(value.count) bytes, over the limit of \(limits.maxBytes) bytes"))
        }
        return parse(String(decoding: value, as: UTF8.self))
    }

    public static func parse(_ value: String) -> Result<EndpointConfig, DiscoveryFailure> {
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

/// Which bad etcd keys were logged, so that a key is logged once while it
/// stays bad (a listing reads it again), and a budget of lines per minute
/// for the rest: a writer putting bad values in a loop, or a prefix of
/// many bad keys, does not grow the log with them.
public struct BadKeyLog {
    public static let linesPerMinute = 20
    /// Keys remembered (by hash: a collision only leaves a line out).
    public static let remembered = 4096

    private var logged: Set<Int> = []
    private var budget = LogLineBudget(lines: linesPerMinute, interval: .seconds(60))

    public mutating func shouldLog(_ key: String, now: NIODeadline = .now()) -> LogLineBudget.Verdict {
        let hash = key.hashValue
        guard !logged.contains(hash) else { return .drop }
        let verdict = budget.take(now: now)
        if verdict != .drop {
            if logged.count >= Self.remembered { logged.removeAll(keepingCapacity: true) }
            logged.insert(hash)
        }
        return verdict
    }

    /// The key is gone or good again: a later bad value is logged anew.
    public mutating func forget(_ key: String) {
        logged.remove(key.hashValue)
    }
}
