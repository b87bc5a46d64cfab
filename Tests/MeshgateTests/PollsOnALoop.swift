import NIOCore
import Testing

/// Suites whose checks run on an event loop and wait for what it does.
protocol PollsOnALoop {
    var loop: EventLoop { get }
}

extension PollsOnALoop {
    /// Polls `condition` on the loop for up to 5 s.
    func eventually(_ condition: @escaping @Sendable () -> Bool) async throws {
        let deadline = ContinuousClock.now + .seconds(5)
        while ContinuousClock.now < deadline {
            if try await loop.submit(condition).get() { return }
            try await Task.sleep(for: .milliseconds(10))
        }
        Issue.record("condition not met within 5 s")
    }
}
