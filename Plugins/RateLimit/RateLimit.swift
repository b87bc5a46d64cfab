import FilterABI
import PluginKit
import Synchronization

/// `rate_limit`: token buckets per route, keyed by a request header, the
/// verified client identity or the peer address (or one bucket for the
/// route). A call over its bucket's limit is answered at once with
/// RESOURCE_EXHAUSTED, a message naming the limit, and
/// `grpc-retry-pushback-ms` set to when the next token is due (ABI 1.3:
/// fields on a local reply), so Meshgate's retry plugin and gRPC clients
/// with a retry policy wait exactly that long.
///
/// Config: `rate` (calls per second, > 0), `burst` (bucket size, default
/// the rate rounded up), `key` (`route` default, `peer`, `identity`,
/// `header` with `header: <name>`), `max_keys` (default 10,000), `name`
/// (the `limit` label on /metrics, default "rate_limit").
final class RateLimitConfig: Sendable {
    enum Key: Sendable, Equatable {
        case route, peer, identity
        case header(String)

        var isHeader: Bool {
            if case .header = self { return true }
            return false
        }
    }

    let name: String
    let rate: Double
    let burst: Int
    let key: Key
    let maxKeys: Int
    /// GCRA: one token every `interval`; a bucket admits a call while its
    /// theoretical arrival time is at most `tolerance` ahead of now.
    let intervalNanos: Int64
    let toleranceNanos: Int64
    let allowedCounter: UInt64
    let limitedCounter: UInt64
    let message: String
    /// The buckets of every event loop (one for `key: route`).
    let buckets: BucketTable

    init(_ config: PluginConfig) throws(PluginConfig.Invalid) {
        rate = try config.double("rate", default: 0, in: 0...1_000_000_000)
        guard rate >= 0.001 else { throw .init("rate (calls per second) is required and must be at least 0.001") }
        burst = try config.int("burst", default: max(1, Int(rate.rounded(.up))), in: 1...1_000_000_000)
        name = config.string("name") ?? "rate_limit"
        guard !name.isEmpty, name.utf8.allSatisfy({ $0 >= 0x20 && $0 != UInt8(ascii: "\"") && $0 != UInt8(ascii: "\\") && $0 < 0x7f }) else {
            throw .init("name must be printable ASCII without quotes or backslashes")
        }
        let header = config.string("header")
        switch config.string("key") ?? (header == nil ? "route" : "header") {
        case "route": key = .route
        case "peer": key = .peer
        case "identity": key = .identity
        case "header":
            guard let header, !header.isEmpty, !header.hasPrefix(":") else {
                throw .init("key: header needs `header: <name>` (a request header, not a pseudo-header)")
            }
            key = .header(header.lowercased())
        case let other: throw .init("key must be route, peer, identity or header, got '\(other)'")
        }
        if header != nil, !key.isHeader { throw .init("header is only read with key: header") }
        maxKeys = try config.int("max_keys", default: 10_000, in: 1...10_000_000)
        intervalNanos = max(1, Int64((1e9 / rate).rounded()))
        let (tolerance, overflow) = intervalNanos.multipliedReportingOverflow(by: Int64(burst - 1))
        guard !overflow, tolerance < Int64(1) << 60 else { throw .init("burst \(burst) at rate \(rate) would take centuries to refill: lower it") }
        toleranceNanos = tolerance
        let labels = "limit=\"\(name)\""
        allowedCounter = PluginHost.declareCounter("meshgate_rate_limit_allowed_total",
                                                   help: "Calls a rate_limit filter let through, by limit name.", labels: labels)
        limitedCounter = PluginHost.declareCounter("meshgate_rate_limit_limited_total",
                                                   help: "Calls a rate_limit filter refused with RESOURCE_EXHAUSTED, by limit name.", labels: labels)
        let per: String
        switch key {
        case .route: per = "for this route"
        case .peer: per = "per client address"
        case .identity: per = "per client identity"
        case .header(let h): per = "per \(h)"
        }
        let rateText = rate == rate.rounded() ? String(Int(rate)) : String(rate)
        message = "rate limit '\(name)' exceeded: \(rateText) calls/s, burst \(burst), \(per)"
        buckets = BucketTable(maxKeys: maxKeys)
    }
}

/// One token bucket as a GCRA cell: the theoretical arrival time of the
/// next call, in monotonic nanoseconds. Taking a token is one
/// compare-exchange, from any event loop: the limit holds for the whole
/// gateway without a lock.
final class Bucket: Sendable {
    let arrival = Atomic<Int64>(0)
    /// Set when the table dropped the bucket: loops re-resolve the key.
    let evicted = Atomic<Bool>(false)

    /// 0 when the call may go; else nanoseconds until a token is due.
    func take(now: Int64, interval: Int64, tolerance: Int64) -> Int64 {
        var current = arrival.load(ordering: .relaxed)
        while true {
            let base = max(current, now)
            let wait = base - now - tolerance
            if wait > 0 { return wait }
            let (exchanged, original) = arrival.compareExchange(expected: current, desired: base + interval, ordering: .relaxed)
            if exchanged { return 0 }
            current = original
        }
    }
}

/// The buckets of one limit, shared by every event loop: found under a
/// lock only when a loop meets a key it has not cached. At most `maxKeys`
/// buckets: a new key evicts the least recently used bucket (of all when
/// there are at most 16, else of 8 sampled)
/// (the one whose arrival time is furthest behind; Redis samples the same
/// way). A bucket whose arrival time has passed has refilled completely,
/// so evicting it loses nothing (a new bucket starts full), and such
/// buckets are the furthest behind.
final class BucketTable: Sendable {
    private struct Entries {
        var byKey: [UInt64: (bucket: Bucket, slot: Int)] = [:]
        var keys: [UInt64] = []
        var sampler: UInt64 = 0x9e37_79b9_7f4a_7c15
    }

    let maxKeys: Int
    private let entries = Mutex(Entries())
    /// `key: route`: one bucket, no table.
    let single = Bucket()

    init(maxKeys: Int) { self.maxKeys = maxKeys }

    var count: Int { entries.withLock { $0.keys.count } }

    func bucket(for key: UInt64) -> Bucket {
        entries.withLock { table in
            if let found = table.byKey[key] { return found.bucket }
            if table.keys.count >= maxKeys { Self.evictOne(&table) }
            let bucket = Bucket()
            table.byKey[key] = (bucket, table.keys.count)
            table.keys.append(key)
            return bucket
        }
    }

    private static func evictOne(_ table: inout Entries) {
        var victim = -1
        var oldest = Int64.max
        // A small table is searched whole (exact LRU); a large one sampled.
        let exact = table.keys.count <= 16
        for i in 0..<(exact ? table.keys.count : 8) {
            table.sampler = table.sampler &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            let slot = exact ? i : Int((table.sampler >> 33) % UInt64(table.keys.count))
            let arrival = table.byKey[table.keys[slot]]!.bucket.arrival.load(ordering: .relaxed)
            if arrival < oldest {
                oldest = arrival
                victim = slot
            }
        }
        let key = table.keys[victim]
        table.byKey.removeValue(forKey: key)!.bucket.evicted.store(true, ordering: .relaxed)
        let last = table.keys.removeLast()
        if victim < table.keys.count {
            table.keys[victim] = last
            table.byKey[last]!.slot = victim
        }
    }
}

/// One limit on one event loop: its cache of the shared buckets (no lock
/// on a hit).
final class RateLimitInstance {
    let config: RateLimitConfig
    private var cache: [UInt64: Bucket] = [:]
    private let cacheLimit: Int

    init(config: RateLimitConfig) {
        self.config = config
        cacheLimit = min(config.maxKeys, 4096)
    }

    func bucket(for key: UInt64) -> Bucket {
        if let cached = cache[key], !cached.evicted.load(ordering: .relaxed) { return cached }
        if cache.count >= cacheLimit {
            cache = cache.filter { !$0.value.evicted.load(ordering: .relaxed) }
            if cache.count >= cacheLimit { cache.removeAll(keepingCapacity: true) }
        }
        let bucket = config.buckets.bucket(for: key)
        cache[key] = bucket
        return bucket
    }
}

enum RateLimitPlugin {
    /// Keys are 64-bit hashes of their bytes (FNV-1a, seeded per process,
    /// then mixed), so a lookup makes no String.
    static let seed: UInt64 = UInt64.random(in: 1...UInt64.max)

    static func hash(_ bytes: UnsafeRawBufferPointer) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325 ^ seed
        for byte in bytes { mix(&h, byte) }
        return finish(h)
    }

    /// A client identity: its kind (URI, DNS, whole header) then its
    /// unescaped bytes.
    static func hash(kind: UInt8, _ value: ForwardedClientCert.Value) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325 ^ seed
        mix(&h, kind)
        value.forEachByte { mix(&h, $0) }
        return finish(h)
    }

    private static func mix(_ h: inout UInt64, _ byte: UInt8) {
        h ^= UInt64(byte)
        h = h &* 0x100_0000_01b3
    }

    private static func finish(_ hash: UInt64) -> UInt64 {
        var h = hash
        h ^= h >> 33
        h = h &* 0xff51_afd7_ed55_8ccd
        h ^= h >> 33
        return h
    }


    /// The call's key, or nil when the call has none (no such header, no
    /// client certificate, no known address): such calls are not limited,
    /// as Envoy skips a descriptor whose entry is missing.
    static func key(_ config: RateLimitConfig, _ call: OpaquePointer?) -> UInt64? {
        switch config.key {
        case .route:
            return 0
        case .header(let name):
            return PluginHost.requestHeader(call, name).map(hash)
        case .identity:
            // x-forwarded-client-cert: the gateway's own (a client's is
            // dropped): `Subject="...";URI=...;DNS=...`, read with its
            // quoting. The first URI, else the first DNS name, else the
            // whole value; which of the three goes into the hash, so a DNS
            // name spelled like someone's URI is still someone else.
            guard let xfcc = PluginHost.requestHeader(call, "x-forwarded-client-cert") else { return nil }
            if let uri = ForwardedClientCert.value("URI", in: xfcc) { return hash(kind: UInt8(ascii: "U"), uri) }
            if let dns = ForwardedClientCert.value("DNS", in: xfcc) { return hash(kind: UInt8(ascii: "D"), dns) }
            return hash(kind: UInt8(ascii: "W"), ForwardedClientCert.Value(raw: xfcc, quoted: false))
        case .peer:
            guard PluginHost.offers(\mg_host.call_peer_address), let peer = PluginHost.table?.pointee.call_peer_address else { return nil }
            var address = mg_str()
            guard peer(call, &address) == 1, let ptr = address.ptr else { return nil }
            // The IP without the port: one client, however many connections.
            let bytes = UnsafeRawBufferPointer(start: ptr, count: address.len)
            let colon = bytes.lastIndex(of: UInt8(ascii: ":")) ?? bytes.count
            return hash(UnsafeRawBufferPointer(rebasing: bytes[0..<colon]))
        }
    }

    static func nowNanos() -> Int64 {
        let elapsed = ContinuousClock.now - origin
        return elapsed.components.seconds * 1_000_000_000 + elapsed.components.attoseconds / 1_000_000_000
            + 1_000_000_000  // never 0, the initial arrival time
    }

    private static let origin = ContinuousClock.now

    static func refuse(_ call: OpaquePointer?, _ config: RateLimitConfig, waitNanos: Int64) -> mg_action {
        let pushbackMs = (waitNanos + 999_999) / 1_000_000
        PluginHost.localReply(call, Int32(MG_STATUS_RESOURCE_EXHAUSTED), "\(config.message); retry in \(pushbackMs) ms")
        PluginHost.addResponseHeader(call, "grpc-retry-pushback-ms", String(pushbackMs))
        PluginHost.add(config.limitedCounter)
        return MG_LOCAL_REPLY
    }

    // 1.3: the pushback field on the local reply and the peer address.
    static let descriptor = PluginDescriptor(name: "rate_limit", version: "1.0.0", kinds: .filter, abiMinor: 3) { d in
        d.configNew = { _, json, errorBuffer, errorSize in
            PluginSupport.makeConfig(json, allowedKeys: ["rate", "burst", "key", "header", "max_keys", "name"], errorBuffer, errorSize) {
                config throws(PluginConfig.Invalid) in try RateLimitConfig(config)
            }
        }
        d.configDestroy = { PluginSupport.release($0) }
        d.instanceNew = { config, _, _ in
            guard let config = PluginSupport.object(config, as: RateLimitConfig.self) else { return nil }
            return PluginSupport.retain(RateLimitInstance(config: config))
        }
        d.instanceDestroy = { PluginSupport.release($0) }
        d.onRequestHeaders = { instance, _, call in
            guard let limiter = PluginSupport.object(instance, as: RateLimitInstance.self) else { return MG_CONTINUE }
            let config = limiter.config
            guard let key = key(config, call) else { return MG_CONTINUE }
            let bucket = config.key == .route ? config.buckets.single : limiter.bucket(for: key)
            let wait = bucket.take(now: nowNanos(), interval: config.intervalNanos, tolerance: config.toleranceNanos)
            guard wait > 0 else {
                PluginHost.add(config.allowedCounter)
                return MG_CONTINUE
            }
            return refuse(call, config, waitNanos: wait)
        }
    }
}

@_cdecl("meshgate_plugin_v1")
public func meshgatePluginV1(_ host: UnsafePointer<mg_host>?) -> UnsafePointer<mg_plugin>? {
    RateLimitPlugin.descriptor.entry(host)
}
