import NIOCore
import Testing
@testable import MeshgateSupport

@Suite struct LogLineBudgetTests {
    @Test func aBudgetLetsThroughItsLinesPerInterval() {
        var budget = LogLineBudget(lines: 3, interval: .seconds(60))
        let t0 = NIODeadline.uptimeNanoseconds(1_000_000_000)
        let verdicts = (0..<5).map { budget.take(now: t0 + .seconds(Int64($0))) }
        let later = budget.take(now: t0 + .seconds(61))
        #expect(verdicts == [.log, .log, .logLast, .drop, .drop] && later == .log)
    }
}
