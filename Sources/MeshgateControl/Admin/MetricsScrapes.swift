import GatewayHost
import NIOConcurrencyHelpers
import NIOCore

/// `/metrics` for every admin address. A gather asks every event loop to
/// copy its counters, which takes time on the data path; a client that
/// hammers `/metrics` must not turn into a gather per request. So:
/// - at most one gather is in flight, and a new one starts at most every
///   `minInterval` (1 s): the data loops pay at most one copy a second,
///   however many scrapes come;
/// - every scrape gets the text of a gather that started after the scrape
///   arrived (never numbers from before it: a test or an operator who
///   scrapes after a call sees that call), so a scrape waits at most
///   `minInterval` plus one gather;
/// - the scrapes that wait for one gather share its text, rendered once on
///   the admin loop, and one buffer: a thousand slow readers of one
///   gather's answer hold one copy of it.
/// Waiting scrapes are bounded by the admin addresses' connection caps (a
/// connection has one request at a time).
package final class MetricsScrapes: Sendable {
    package let minInterval: TimeAmount
    private let loop: EventLoop
    private let gather: @Sendable (EventLoop, Counts) -> EventLoopFuture<String>

    /// Gathers started and scrapes asked so far, shown on /metrics itself.
    package struct Counts: Sendable {
        package var gathers: UInt64
        package var scrapes: UInt64
    }
    private let state = NIOLockedValueBox(State())

    private struct State {
        package var inFlight = false
        package var scheduled = false
        package var lastStart: NIODeadline?
        package var waiting: [EventLoopPromise<ByteBuffer>] = []
        package var gathers: UInt64 = 0
        package var scrapes: UInt64 = 0
    }

    /// `gather` renders the Prometheus text; it runs on `loop` (the admin
    /// loop), and asks the data loops for their counters itself.
    package init(loop: EventLoop, minInterval: TimeAmount = .seconds(1),
         gather: @escaping @Sendable (EventLoop, Counts) -> EventLoopFuture<String>) {
        self.loop = loop
        self.minInterval = minInterval
        self.gather = gather
    }

    package var counts: Counts {
        state.withLockedValue { Counts(gathers: $0.gathers, scrapes: $0.scrapes) }
    }

    /// The text of the next gather, delivered on `eventLoop`.
    package func text(on eventLoop: EventLoop) -> EventLoopFuture<ByteBuffer> {
        let promise = loop.makePromise(of: ByteBuffer.self)
        let startIn: TimeAmount? = state.withLockedValue { s in
            s.scrapes += 1
            s.waiting.append(promise)
            guard !s.inFlight, !s.scheduled else { return nil }
            s.scheduled = true
            return Self.delay(since: s.lastStart, minInterval: minInterval)
        }
        if let startIn { schedule(in: startIn) }
        return promise.futureResult.hop(to: eventLoop)
    }

    package static func delay(since lastStart: NIODeadline?, minInterval: TimeAmount) -> TimeAmount {
        guard let lastStart else { return .zero }
        let due = lastStart + minInterval
        let now = NIODeadline.now()
        return due > now ? due - now : .zero
    }

    private func schedule(in delay: TimeAmount) {
        if delay == .zero {
            loop.execute { self.start() }
        } else {
            loop.scheduleTask(in: delay) { self.start() }
        }
    }

    private func start() {
        let (promises, counts) = state.withLockedValue { s -> ([EventLoopPromise<ByteBuffer>], Counts) in
            s.scheduled = false
            s.inFlight = true
            s.lastStart = .now()
            s.gathers += 1
            defer { s.waiting = [] }
            return (s.waiting, Counts(gathers: s.gathers, scrapes: s.scrapes))
        }
        gather(loop, counts).whenComplete { result in
            switch result {
            case .success(let text):
                // One buffer for every waiting scrape: a ByteBuffer written
                // to several channels is shared, not copied.
                let buffer = ByteBuffer(string: text)
                for promise in promises { promise.succeed(buffer) }
            case .failure(let error):
                for promise in promises { promise.fail(error) }
            }
            let next: TimeAmount? = self.state.withLockedValue { s in
                s.inFlight = false
                guard !s.waiting.isEmpty, !s.scheduled else { return nil }
                s.scheduled = true
                return Self.delay(since: s.lastStart, minInterval: self.minInterval)
            }
            if let next { self.schedule(in: next) }
        }
    }
}
