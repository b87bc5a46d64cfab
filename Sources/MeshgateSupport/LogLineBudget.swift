import NIOCore

/// At most `lines` log lines per `interval` for one kind of event that
/// outside input can repeat at will (a bad etcd value written in a loop):
/// the first lines say what happened, the budget keeps the log from
/// growing with the input.
public struct LogLineBudget {
    public enum Verdict: Equatable {
        /// Write the line.
        case log
        /// Write the line, and say that the next ones are left out until
        /// the interval is over (the last line of this interval).
        case logLast
        /// Leave the line out.
        case drop
    }

    public let lines: Int
    public let interval: TimeAmount
    private var windowStart: NIODeadline?
    private var used = 0

    public init(lines: Int, interval: TimeAmount) {
        precondition(lines > 0)
        self.lines = lines
        self.interval = interval
    }

    public mutating func take(now: NIODeadline = .now()) -> Verdict {
        if let start = windowStart, now - start < interval {
            guard used < lines else { return .drop }
        } else {
            windowStart = now
            used = 0
        }
        used += 1
        return used == lines ? .logLast : .log
    }
}
