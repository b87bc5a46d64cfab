import MeshgateConfig

/// A source of one cluster's endpoints. Every source lives on the control
/// thread's event loop: it is started, reports and is stopped there, so
/// sources need no locks.
///
/// A source reports the complete current set each time (`.success`), or
/// that it cannot tell right now (`.failure`, with why); the manager keeps
/// the last known set through failures and through empty answers.
public protocol DiscoverySource: AnyObject {
    typealias Report = (Result<[EndpointConfig], DiscoveryFailure>) -> Void

    func start(report: @escaping Report)
    func stop()
}

public struct DiscoveryFailure: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Retry delays of a failing source, in milliseconds: `first` (0.5 s)
/// doubling up to `limit`, with ±20 % jitter so that many gateways do not
/// retry in step.
public struct DiscoveryBackoff {
    public let limit: Duration
    public let first: Duration
    public private(set) var failures = 0

    public init(limit: Duration, first: Duration = .milliseconds(500)) {
        self.limit = limit
        self.first = first
    }

    public mutating func reset() { failures = 0 }

    public mutating func next() -> Int64 {
        failures += 1
        let firstMillis = max(first.nanosecondsClamped / 1_000_000, 1)
        let base = min(firstMillis * Int64(1 << min(failures - 1, 10)), max(limit.nanosecondsClamped / 1_000_000, firstMillis))
        return Int64(Double(base) * Double.random(in: 0.8...1.2))
    }
}
