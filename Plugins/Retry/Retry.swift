import FilterABI
import PluginKit
import Synchronization

/// gRFC A6 retries. Config (the product description's `retry_policy` keys):
/// `max_attempts` (2..5, default 3), `initial_backoff` (default 1s),
/// `max_backoff` (default 60s), `backoff_multiplier` (default 2),
/// `retryable_status_codes` (default [UNAVAILABLE]), and optional
/// `retry_throttling: {max_tokens, token_ratio}` kept per cluster across
/// event loops.
///
/// The delay before retry n (n = 1, 2, ...) is uniform in
/// [0, min(initial × multiplier^(n-1), max)), or exactly the server's
/// `grpc-retry-pushback-ms`; an invalid pushback stops retrying. The host
/// replays the request, picks again through the balancer (avoiding the
/// endpoint that failed), keeps the call's deadline over all attempts, and
/// sends `grpc-previous-rpc-attempts`.
final class RetryConfig: Sendable {
    let maxAttempts: Int
    let initialBackoffMs: Double
    let maxBackoffMs: Double
    let multiplier: Double
    let retryable: Set<Int32>
    let throttling: (maxTokens: Double, ratio: Double)?
    /// Per cluster, shared by the loops; only touched in instance_new.
    private let budgets = Mutex<[String: RetryBudget]>([:])

    init(_ config: PluginConfig) throws(PluginConfig.Invalid) {
        maxAttempts = try config.int("max_attempts", default: 3, in: 2...5)
        initialBackoffMs = try config.durationMs("initial_backoff", default: 1000, min: 1)
        maxBackoffMs = try config.durationMs("max_backoff", default: 60_000, min: 1)
        multiplier = try config.double("backoff_multiplier", default: 2, in: 1...100)
        retryable = try config.statusCodes("retryable_status_codes", default: [14])
        guard !retryable.contains(0) else { throw .init("retryable_status_codes cannot hold OK") }
        guard maxBackoffMs >= initialBackoffMs else { throw .init("max_backoff must be at least initial_backoff") }
        if config.has("retry_throttling") {
            throttling = try Self.throttling(config)
        } else {
            throttling = nil
        }
    }

    private static func throttling(_ config: PluginConfig) throws(PluginConfig.Invalid) -> (Double, Double) {
        guard let block = config.mapping("retry_throttling") else { throw .init("retry_throttling must be a mapping") }
        let inner = try PluginConfig(object: block, allowedKeys: ["max_tokens", "token_ratio"], path: "retry_throttling")
        let maxTokens = try inner.double("max_tokens", default: 10, in: 1...1000)
        let ratio = try inner.double("token_ratio", default: 0.1, in: 0.001...1000)
        return (maxTokens, ratio)
    }

    func budget(for cluster: String) -> RetryBudget? {
        guard let throttling else { return nil }
        return budgets.withLock { table in
            if let existing = table[cluster] { return existing }
            let made = RetryBudget(maxTokens: throttling.maxTokens, ratio: throttling.ratio)
            table[cluster] = made
            return made
        }
    }

    /// A6: uniform in [0, min(initial × multiplier^(n-1), max)).
    func backoffMs(beforeRetry n: Int) -> UInt32 {
        var ceiling = initialBackoffMs
        for _ in 1..<max(n, 1) { ceiling = min(ceiling * multiplier, maxBackoffMs) }
        ceiling = min(ceiling, maxBackoffMs)
        return UInt32(Double.random(in: 0..<ceiling).rounded(.down))
    }
}

/// A6 retry throttling: a token bucket per cluster, in thousandths of a
/// token so that updates are single atomic adds.
final class RetryBudget: Sendable {
    private let milliTokens: Atomic<Int>
    private let maxMilli: Int
    private let ratioMilli: Int

    init(maxTokens: Double, ratio: Double) {
        maxMilli = Int(maxTokens * 1000)
        ratioMilli = Int(ratio * 1000)
        milliTokens = Atomic(maxMilli)
    }

    func recordSuccess() {
        let after = milliTokens.add(ratioMilli, ordering: .relaxed).newValue
        if after > maxMilli { milliTokens.subtract(after - maxMilli, ordering: .relaxed) }
    }

    func recordFailure() {
        let after = milliTokens.subtract(1000, ordering: .relaxed).newValue
        if after < 0 { milliTokens.add(-after, ordering: .relaxed) }
    }

    /// Retries are allowed while more than half the tokens are left.
    var allowsRetry: Bool { milliTokens.load(ordering: .relaxed) > maxMilli / 2 }
}

final class RetryInstance {
    let config: RetryConfig
    let budget: RetryBudget?
    init(config: RetryConfig, budget: RetryBudget?) {
        self.config = config
        self.budget = budget
    }

    func attemptDone(_ result: mg_attempt_result, _ decision: UnsafeMutablePointer<mg_retry_decision>?) {
        let retryable = config.retryable.contains(result.grpc_status) || result.transport_failure != 0 && result.grpc_status == 14
        if let budget {
            if result.grpc_status == 0 { budget.recordSuccess() } else if retryable { budget.recordFailure() }
        }
        guard let decision, retryable, result.response_started == 0 else { return }
        let made = Int(result.attempt) + 1
        guard made < config.maxAttempts, result.pushback_ms != -2, budget?.allowsRetry ?? true else { return }
        decision.pointee.retry = UInt32(MG_RETRY_AFTER)
        decision.pointee.delay_ms = result.pushback_ms >= 0
            ? UInt32(clamping: result.pushback_ms) : config.backoffMs(beforeRetry: made)
    }
}

enum RetryPlugin {
    static let descriptor = PluginDescriptor(name: "retry", version: "1.0.0", kinds: .retry, abiMinor: 0) { d in
        d.configNew = { _, json, errorBuffer, errorSize in
            PluginSupport.makeConfig(json, allowedKeys: [
                "max_attempts", "initial_backoff", "max_backoff", "backoff_multiplier", "retryable_status_codes", "retry_throttling",
            ], errorBuffer, errorSize) { config throws(PluginConfig.Invalid) in try RetryConfig(config) }
        }
        d.configDestroy = { PluginSupport.release($0) }
        d.instanceNew = { config, _, cluster in
            guard let config = PluginSupport.object(config, as: RetryConfig.self) else { return nil }
            return PluginSupport.retain(RetryInstance(config: config, budget: config.budget(for: PluginSupport.string(cluster))))
        }
        d.instanceDestroy = { PluginSupport.release($0) }
        d.onAttemptDone = { instance, _, _, result, decision in
            guard let result, let retry = PluginSupport.object(instance, as: RetryInstance.self) else { return }
            retry.attemptDone(result.pointee, decision)
        }
    }
}

@_cdecl("meshgate_plugin_v1")
public func meshgatePluginV1(_ host: UnsafePointer<mg_host>?) -> UnsafePointer<mg_plugin>? {
    RetryPlugin.descriptor.entry(host)
}
