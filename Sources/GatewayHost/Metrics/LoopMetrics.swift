import MeshgateGRPC
import MeshgateCallCore
import MeshgateSupport

/// The request counters of one event loop. Only that loop writes them, so
/// counting takes no lock and no atomic; a scrape copies every loop's
/// counters on its own loop and adds them up (`MetricsSnapshot`). After a
/// series' first call, counting allocates nothing.
package final class LoopMetrics {
    /// Upper bounds (seconds) of the request duration histogram: 0.5 ms to 10 s.
    package static let durationBounds: [Double] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]
    /// The path of the series that counts the calls whose own series the
    /// budget refused (shown as `service="other",method="other"`). Not a
    /// gRPC path, so no client can name it.
    package static let otherPath = "other"

    package struct CallSeries: Sendable {
        /// By gRPC status code.
        package var codes = GRPCStatusCounts()
        /// Non-cumulative bucket counts; the last one is +Inf.
        package var buckets = [UInt64](repeating: 0, count: LoopMetrics.durationBounds.count + 1)
        package var sumSeconds = 0.0
        package var count: UInt64 = 0
        /// When the last call ended (uptime nanoseconds), for expiry.
        package var lastCallNanos: UInt64 = 0

        package init() {}
    }

    package struct CallKey: Hashable, Sendable {
        package var path: String
        package var cluster: String
    }

    /// `runtime.metrics: false` turns counting off (for measuring its cost).
    package var enabled = true
    /// The series all loops together may keep (`runtime.max_metric_series`).
    package let budget: MetricSeriesBudget
    package private(set) var calls: [CallKey: CallSeries] = [:]
    /// Cluster -> attempts by kind.
    package private(set) var attempts: [String: [UInt64]] = [:]
    /// Calls answered by the gateway before any route (no route, bad
    /// request), by status code.
    package private(set) var localReplies = GRPCStatusCounts()

    package init(budget: MetricSeriesBudget) {
        self.budget = budget
    }

    /// `endNanos`: uptime nanoseconds at the call's end.
    package func callEnded(path: String, cluster: String, code: GRPCStatusCode, seconds: Double, endNanos: UInt64) {
        guard enabled else { return }
        var key = CallKey(path: path, cluster: cluster)
        // Only a series' first call on this loop asks the budget, and only
        // a call that shows the method exists (`startsSeries`).
        if calls[key] == nil, !Self.startsSeries(code: code, seconds: seconds) || !budget.admit(key) { key.path = Self.otherPath }
        let bucket = Self.durationBounds.firstIndex { seconds <= $0 } ?? Self.durationBounds.count
        calls[key, default: CallSeries()].record(code: code, bucket: bucket, seconds: seconds, at: endNanos)
    }

    /// How long a call must have lasted for CANCELLED or DEADLINE_EXCEEDED
    /// to start its series (see `startsSeries`).
    package static let abandonedCallSeriesSeconds = 1.0

    /// Whether a call may start a new series. A junk method name routed by
    /// its service ends UNIMPLEMENTED at the upstream: admitting it would
    /// let a client fill `runtime.max_metric_series` with names nobody
    /// serves (and keep it full, calling again before they expire), so
    /// real methods would count as `other`. A client can also end a junk
    /// call itself before the upstream's UNIMPLEMENTED arrives (a reset,
    /// a 1 ns `grpc-timeout`): CANCELLED and DEADLINE_EXCEEDED start a
    /// series only after a second, longer than an upstream takes to say
    /// UNIMPLEMENTED (a stream its client cancels after a while is a real
    /// method, and keeps its series). Refused calls count under `other`;
    /// a method's series starts with its first call that shows it exists.
    package static func startsSeries(code: GRPCStatusCode, seconds: Double) -> Bool {
        switch code {
        case .unimplemented: return false
        case .cancelled, .deadlineExceeded: return seconds >= abandonedCallSeriesSeconds
        default: return true
        }
    }

    package func attemptStarted(cluster: String, kind: AttemptKind) {
        guard enabled else { return }
        attempts[cluster, default: [UInt64](repeating: 0, count: AttemptKind.allCases.count)][kind.rawValue] += 1
    }

    package func localReply(_ code: GRPCStatusCode) {
        guard enabled else { return }
        localReplies.record(code)
    }

    /// This loop's series with a call within `idleNanos` of `nowNanos`
    /// (`active`), and the others (`idle`).
    package func seriesActivity(nowNanos: UInt64, idleNanos: UInt64) -> (active: Set<CallKey>, idle: Set<CallKey>) {
        var active = Set<CallKey>()
        var idle = Set<CallKey>()
        for (key, series) in calls {
            if Self.idleFor(series, nowNanos) < idleNanos { active.insert(key) } else { idle.insert(key) }
        }
        return (active, idle)
    }

    /// Drops those of `keys` still idle (a call may have come since they
    /// were chosen) and gives their places back to the budget.
    package func expire(_ keys: Set<CallKey>, nowNanos: UInt64, idleNanos: UInt64) {
        var dropped: [CallKey] = []
        for key in keys {
            guard let series = calls[key], Self.idleFor(series, nowNanos) >= idleNanos else { continue }
            calls[key] = nil
            dropped.append(key)
        }
        budget.release(dropped)
    }

    private static func idleFor(_ series: CallSeries, _ nowNanos: UInt64) -> UInt64 {
        nowNanos > series.lastCallNanos ? nowNanos - series.lastCallNanos : 0
    }
}

extension LoopMetrics.CallSeries {
    package mutating func record(code: GRPCStatusCode, bucket: Int, seconds: Double, at nanos: UInt64) {
        codes.record(code)
        buckets[bucket] += 1
        sumSeconds += seconds
        count += 1
        lastCallNanos = nanos
    }
}
