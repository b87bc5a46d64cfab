import MeshgateGRPC
import Testing

@Suite struct GRPCStatusCountsTests {
    @Test func countsEachCodeInItsOwnPlace() {
        var counts = GRPCStatusCounts()
        for code in GRPCStatusCode.allCases {
            for _ in 0...code.rawValue { counts.record(code) }
        }
        for code in GRPCStatusCode.allCases { #expect(counts[code] == UInt64(code.rawValue + 1)) }
        #expect(counts.total == (1...17).reduce(0) { $0 + UInt64($1) })
        #expect(counts.failed == counts.total - 1)
        #expect(counts.nonZero.map(\.code) == GRPCStatusCode.allCases)
    }

    @Test func isStoredInlineSoCopiesAndFirstUsesAllocateNothing() {
        #expect(MemoryLayout<GRPCStatusCounts>.size == 17 * MemoryLayout<UInt64>.size)
    }

    @Test func addsAndTakesDeltasWithARestartCountingInFull() {
        var a = GRPCStatusCounts()
        a[.ok] = 10
        a[.unavailable] = 2
        var b = GRPCStatusCounts()
        b[.ok] = 5
        b[.unavailable] = 3
        var sum = a
        sum.add(b)
        #expect(sum[.ok] == 15 && sum[.unavailable] == 5 && sum.total == 20)
        let delta = a.since(b)
        #expect(delta[.ok] == 5, "grew by 5")
        #expect(delta[.unavailable] == 2, "fewer than before: restarted, counts in full")
        #expect(a.since(a) == GRPCStatusCounts())
        #expect(GRPCStatusCounts().nonZero.isEmpty)
    }
}
