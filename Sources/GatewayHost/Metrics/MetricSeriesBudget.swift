import NIOConcurrencyHelpers
import Synchronization
import MeshgateRouting

/// How many request series (path and cluster) the event loops together
/// keep: `runtime.max_metric_series`. The method and service labels come
/// from the client's `:path`, so each new name would otherwise be a new
/// series, on /metrics and in memory, for good.
///
/// A loop asks only on a series' first call on that loop (its own
/// dictionary misses); later calls never come here. While there is room
/// that takes the lock; once the budget is full, a flag read without a
/// lock sends every new name straight to `other`, so a flood of names
/// costs no lock. A series another loop holds but this one has not seen
/// yet also counts as `other` here while the budget is full.
package final class MetricSeriesBudget: Sendable {
    /// Longest service or method label kept, in bytes; a longer name is
    /// counted as `other` (a label of tens of KiB would make every scrape
    /// carry it).
    package static let maxLabelBytes = 128

    package let capacity: Int
    /// Key -> how many loops hold it.
    private let holders = NIOLockedValueBox<[LoopMetrics.CallKey: Int]>([:])
    private let full = Atomic<Bool>(false)

    package init(capacity: Int) {
        self.capacity = capacity
    }

    /// Whether a loop may start a series for `key` (false: count it as
    /// `other`).
    package func admit(_ key: LoopMetrics.CallKey) -> Bool {
        guard Self.labelsFit(key.path) else { return false }
        if full.load(ordering: .relaxed) { return false }
        return holders.withLockedValue { holders in
            if let count = holders[key] {
                holders[key] = count + 1
                return true
            }
            guard holders.count < capacity else {
                full.store(true, ordering: .relaxed)
                return false
            }
            holders[key] = 1
            if holders.count >= capacity { full.store(true, ordering: .relaxed) }
            return true
        }
    }

    /// A loop dropped these series (they were idle).
    package func release(_ keys: some Sequence<LoopMetrics.CallKey>) {
        holders.withLockedValue { holders in
            for key in keys {
                guard let count = holders[key] else { continue }
                holders[key] = count > 1 ? count - 1 : nil
            }
            full.store(holders.count >= capacity, ordering: .relaxed)
        }
    }

    package var count: Int { holders.withLockedValue { $0.count } }

    /// Service and method each at most `maxLabelBytes`.
    package static func labelsFit(_ path: String) -> Bool {
        let (service, method) = GRPCPath.serviceAndMethod(path)
        return service.utf8.count <= maxLabelBytes && method.utf8.count <= maxLabelBytes
    }
}
