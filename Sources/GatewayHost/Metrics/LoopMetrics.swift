import MeshgateGRPC

/// The request counters of one event loop. Only that loop writes them, so
/// counting takes no lock and no atomic; a scrape copies every loop's
/// counters on its own loop and adds them up (`MetricsSnapshot`). After a
/// series' first call, counting allocates nothing.
final class LoopMetrics {
    /// Upper bounds (seconds) of the request duration histogram: 0.5 ms to 10 s.
    static let durationBounds: [Double] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]
    /// A client can send any path on a routed service; past this many
    /// distinct paths per loop, new ones count under `path="other"`.
    static let maxSeries = 1000

    struct CallSeries: Sendable {
        /// By gRPC status code (0...16).
        var codes = [UInt64](repeating: 0, count: 17)
        /// Non-cumulative bucket counts; the last one is +Inf.
        var buckets = [UInt64](repeating: 0, count: LoopMetrics.durationBounds.count + 1)
        var sumSeconds = 0.0
        var count: UInt64 = 0
    }

    struct CallKey: Hashable, Sendable {
        var path: String
        var cluster: String
    }

    /// `runtime.metrics: false` turns counting off (for measuring its cost).
    var enabled = true
    private(set) var calls: [CallKey: CallSeries] = [:]
    /// Cluster -> attempts by kind.
    private(set) var attempts: [String: [UInt64]] = [:]
    /// Calls answered by the gateway before any route (no route, bad
    /// request), by status code.
    private(set) var localReplies = [UInt64](repeating: 0, count: 17)

    func callEnded(path: String, cluster: String, code: GRPCStatusCode, seconds: Double) {
        guard enabled else { return }
        var key = CallKey(path: path, cluster: cluster)
        if calls[key] == nil, calls.count >= Self.maxSeries { key.path = "other" }
        let bucket = Self.durationBounds.firstIndex { seconds <= $0 } ?? Self.durationBounds.count
        calls[key, default: CallSeries()].record(code: code, bucket: bucket, seconds: seconds)
    }

    func attemptStarted(cluster: String, kind: AttemptKind) {
        guard enabled else { return }
        attempts[cluster, default: [UInt64](repeating: 0, count: AttemptKind.allCases.count)][kind.rawValue] += 1
    }

    func localReply(_ code: GRPCStatusCode) {
        guard enabled else { return }
        localReplies[Int(code.rawValue)] += 1
    }
}

extension LoopMetrics.CallSeries {
    mutating func record(code: GRPCStatusCode, bucket: Int, seconds: Double) {
        codes[Int(code.rawValue)] += 1
        buckets[bucket] += 1
        sumSeconds += seconds
        count += 1
    }
}
