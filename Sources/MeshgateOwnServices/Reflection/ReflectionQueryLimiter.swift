import NIOConcurrencyHelpers
import NIOCore

/// How many reflection queries the gateway asks of upstreams at once for
/// one listener, all event loops together. Each query dials its own
/// connection, and one client request can fan out to every routed
/// cluster, so without a bound a client could make the gateway open
/// connections as fast as it sends requests. Past `maxInFlight`, queries
/// wait in order (up to `maxWaiting`, then the request is answered
/// RESOURCE_EXHAUSTED): tools that send a burst (grpcurl `describe`) are
/// slowed, not refused.
package final class ReflectionQueryLimiter: Sendable {
    package static let maxInFlight = 8
    package static let maxWaiting = 64

    private struct Waiter {
        package let grant: NIOLoopBound<() -> Void>
    }

    private struct Listener {
        package var inFlight = 0
        package var waiting = CircularBuffer<Waiter>()
    }

    private let state = NIOLockedValueBox<[String: Listener]>([:])

    /// Runs `body` on `loop` once a query of `listener` may start: at once
    /// when fewer than `maxInFlight` are in flight, else when one ends.
    /// false (and `body` never runs) when `maxWaiting` already wait. The
    /// caller calls `release` once the query `body` starts has ended.
    package func admit(listener: String, on loop: EventLoop, _ body: @escaping () -> Void) -> Bool {
        enum Outcome { case now, queued, refused }
        let bound = NIOLoopBound(body, eventLoop: loop)
        let outcome = state.withLockedValue { all -> Outcome in
            var entry = all[listener, default: Listener()]
            defer { all[listener] = entry }
            if entry.inFlight < Self.maxInFlight {
                entry.inFlight += 1
                return .now
            }
            guard entry.waiting.count < Self.maxWaiting else { return .refused }
            entry.waiting.append(Waiter(grant: bound))
            return .queued
        }
        switch outcome {
        case .now: body()
        case .queued: break
        case .refused: return false
        }
        return true
    }

    /// A query of `listener` ended: its place goes to the first waiter.
    package func release(listener: String) {
        let next = state.withLockedValue { all -> Waiter? in
            guard var entry = all[listener] else { return nil }
            defer { all[listener] = entry.inFlight == 0 && entry.waiting.isEmpty ? nil : entry }
            if let waiter = entry.waiting.popFirst() { return waiter }  // the place passes on
            entry.inFlight -= 1
            return nil
        }
        guard let next else { return }
        next.grant.eventLoop.execute { next.grant.value() }
    }

    /// Queries in flight and waiting for `listener` (for tests and views).
    package func load(of listener: String) -> (inFlight: Int, waiting: Int) {
        state.withLockedValue { all in (all[listener]?.inFlight ?? 0, all[listener]?.waiting.count ?? 0) }
    }
}
