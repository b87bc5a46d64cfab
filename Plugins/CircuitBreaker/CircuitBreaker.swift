import FilterABI
import PluginKit
import Synchronization

/// Envoy-style circuit breaking per cluster: `max_requests` (calls in
/// flight), `max_pending_requests` (calls admitted but not yet on an
/// upstream stream) and `max_retries` (retry or hedge attempts in flight).
/// Overflow is answered at once with UNAVAILABLE and a `grpc-message` that
/// names the limit; an overflowing retry is not made (the call ends with
/// the attempt's status). Defaults are Envoy's: 1024, 1024, 3.
///
/// The counters of a cluster are shared by every event loop (atomics), not
/// across routes: each route's `filters:` entry is a config of its own,
/// with its own counters (the /metrics overflow counters are by cluster).
final class BreakerConfig: Sendable {
    let maxRequests: Int
    let maxPending: Int
    let maxRetries: Int
    private let clusters = Mutex<[String: BreakerCounters]>([:])

    init(_ config: PluginConfig) throws(PluginConfig.Invalid) {
        maxRequests = try config.int("max_requests", default: 1024, in: 1...1_000_000)
        maxPending = try config.int("max_pending_requests", default: 1024, in: 1...1_000_000)
        maxRetries = try config.int("max_retries", default: 3, in: 0...1_000_000)
    }

    func counters(for cluster: String) -> BreakerCounters {
        clusters.withLock { table in
            if let existing = table[cluster] { return existing }
            let made = BreakerCounters(cluster: cluster)
            table[cluster] = made
            return made
        }
    }
}

final class BreakerCounters: Sendable {
    let cluster: String
    let active = Atomic<Int>(0)
    let pending = Atomic<Int>(0)
    let retries = Atomic<Int>(0)
    /// /metrics counters (host ABI 1.1): meshgate_breaker_overflows_total
    /// by cluster and limit; shared by every config on the cluster.
    let requestOverflows: UInt64
    let pendingOverflows: UInt64
    let retryOverflows: UInt64

    init(cluster: String) {
        self.cluster = cluster
        let help = "Calls or retries the circuit breaker refused, by cluster and limit."
        let label = { (limit: String) in "cluster=\"\(PluginHost.labelValue(cluster))\",limit=\"\(limit)\"" }
        requestOverflows = PluginHost.declareCounter("meshgate_breaker_overflows_total", help: help, labels: label("max_requests"))
        pendingOverflows = PluginHost.declareCounter("meshgate_breaker_overflows_total", help: help, labels: label("max_pending_requests"))
        retryOverflows = PluginHost.declareCounter("meshgate_breaker_overflows_total", help: help, labels: label("max_retries"))
    }
}

final class BreakerInstance {
    let config: BreakerConfig
    let counters: BreakerCounters
    init(config: BreakerConfig, counters: BreakerCounters) {
        self.config = config
        self.counters = counters
    }
}

/// What one call holds against the counters.
final class BreakerCall {
    var admitted = false
    var pending = false
}

enum CircuitBreakerPlugin {
    static func reject(_ call: OpaquePointer?, _ message: String) -> mg_action {
        PluginHost.localReply(call, Int32(MG_STATUS_UNAVAILABLE), message)
        return MG_LOCAL_REPLY
    }

    // ABI 1.0: 1.1's counters are declared only when the host offers them.
    static let descriptor = PluginDescriptor(name: "circuit_breaker", version: "1.0.0", kinds: .filter, abiMinor: 0) { d in
        d.configNew = { _, json, errorBuffer, errorSize in
            PluginSupport.makeConfig(json, allowedKeys: ["max_requests", "max_pending_requests", "max_retries"], errorBuffer, errorSize) {
                config throws(PluginConfig.Invalid) in try BreakerConfig(config)
            }
        }
        d.configDestroy = { PluginSupport.release($0) }
        d.instanceNew = { config, _, cluster in
            guard let config = PluginSupport.object(config, as: BreakerConfig.self) else { return nil }
            return PluginSupport.retain(BreakerInstance(config: config, counters: config.counters(for: PluginSupport.string(cluster))))
        }
        d.instanceDestroy = { PluginSupport.release($0) }
        d.callNew = { _, _ in PluginSupport.retain(BreakerCall()) }
        d.callDestroy = { _, state in PluginSupport.release(state) }
        d.onRequestHeaders = { instance, state, call in
            guard let breaker = PluginSupport.object(instance, as: BreakerInstance.self),
                  let held = PluginSupport.object(state, as: BreakerCall.self) else { return MG_CONTINUE }
            let c = breaker.counters, config = breaker.config
            if c.active.add(1, ordering: .relaxed).newValue > config.maxRequests {
                c.active.subtract(1, ordering: .relaxed)
                PluginHost.add(c.requestOverflows)
                return reject(call, "circuit breaker open for cluster '\(c.cluster)': \(config.maxRequests) requests in flight (max_requests)")
            }
            if c.pending.add(1, ordering: .relaxed).newValue > config.maxPending {
                c.pending.subtract(1, ordering: .relaxed)
                c.active.subtract(1, ordering: .relaxed)
                PluginHost.add(c.pendingOverflows)
                return reject(call, "circuit breaker open for cluster '\(c.cluster)': \(config.maxPending) requests waiting for an upstream (max_pending_requests)")
            }
            held.admitted = true
            held.pending = true
            return MG_CONTINUE
        }
        d.onAttemptStart = { instance, state, _, attempt in
            guard let breaker = PluginSupport.object(instance, as: BreakerInstance.self),
                  let held = PluginSupport.object(state, as: BreakerCall.self), held.admitted else { return }
            if held.pending {
                held.pending = false
                breaker.counters.pending.subtract(1, ordering: .relaxed)
            }
            if (PluginHost.table?.pointee.attempt_number(attempt) ?? 0) > 0 {
                breaker.counters.retries.add(1, ordering: .relaxed)
            }
        }
        d.onAttemptDone = { instance, state, _, result, decision in
            guard let result, let breaker = PluginSupport.object(instance, as: BreakerInstance.self),
                  let held = PluginSupport.object(state, as: BreakerCall.self), held.admitted else { return }
            let c = breaker.counters
            if result.pointee.attempt > 0 { c.retries.subtract(1, ordering: .relaxed) }
            if let decision, decision.pointee.retry == UInt32(MG_RETRY_AFTER),
               c.retries.load(ordering: .relaxed) >= breaker.config.maxRetries {
                decision.pointee.retry = UInt32(MG_RETRY_NO)
                PluginHost.add(c.retryOverflows)
            }
        }
        d.onCallDone = { instance, state, _, _ in
            guard let breaker = PluginSupport.object(instance, as: BreakerInstance.self),
                  let held = PluginSupport.object(state, as: BreakerCall.self), held.admitted else { return }
            held.admitted = false
            breaker.counters.active.subtract(1, ordering: .relaxed)
            if held.pending {
                held.pending = false
                breaker.counters.pending.subtract(1, ordering: .relaxed)
            }
        }
    }
}

@_cdecl("meshgate_plugin_v1")
public func meshgatePluginV1(_ host: UnsafePointer<mg_host>?) -> UnsafePointer<mg_plugin>? {
    CircuitBreakerPlugin.descriptor.entry(host)
}
