import Dispatch
import Testing
@testable import MeshgateHTTP2

@Suite struct HTTP2BufferBudgetTests {
    @Test func reservesUpToTheCapAndRefusesPastIt() {
        let budget = HTTP2BufferBudget(limit: 4 * HTTP2BufferBudget.granule)
        #expect(budget.reserve(3 * HTTP2BufferBudget.granule))
        #expect(!budget.reserve(2 * HTTP2BufferBudget.granule))
        #expect(budget.refusals == 1)
        #expect(budget.reservedBytes == 3 * HTTP2BufferBudget.granule, "a refusal takes nothing")
        #expect(budget.reserve(HTTP2BufferBudget.granule))
        #expect(!budget.reserve(1))
        budget.release(2 * HTTP2BufferBudget.granule)
        #expect(budget.reservedBytes == 2 * HTTP2BufferBudget.granule)
        #expect(budget.reserve(2 * HTTP2BufferBudget.granule))
    }

    @Test func aLoweredLimitRefusesNewReservationsAndKeepsOldOnes() {
        let budget = HTTP2BufferBudget(limit: 4 * HTTP2BufferBudget.granule)
        #expect(budget.reserve(3 * HTTP2BufferBudget.granule))
        budget.limit = 2 * HTTP2BufferBudget.granule
        #expect(!budget.reserve(HTTP2BufferBudget.granule))
        #expect(budget.reservedBytes == 3 * HTTP2BufferBudget.granule)
        budget.release(2 * HTTP2BufferBudget.granule)
        #expect(budget.reserve(HTTP2BufferBudget.granule))
    }

    @Test func holdingsTakeAtMostHalfAndLeaveTheRestToQueues() {
        let granule = HTTP2BufferBudget.granule
        let budget = HTTP2BufferBudget(limit: 8 * granule)
        #expect(budget.reserveForHolding(3 * granule))
        #expect(!budget.reserveForHolding(2 * granule), "past half of the cap")
        #expect(budget.reserveForHolding(granule))
        #expect(!budget.reserveForHolding(1))
        #expect(budget.reserve(4 * granule), "queued bytes still have the other half")
        #expect(!budget.reserve(1))
        budget.release(4 * granule)
        #expect(!budget.reserveForHolding(1), "holdings count with queues: 4 of 8 granules are held")
    }

    @Test func zeroMeansNoCapButStillCounts() {
        let budget = HTTP2BufferBudget(limit: 0)
        #expect(budget.reserve(1 << 40))
        #expect(budget.reservedBytes == 1 << 40)
        #expect(budget.refusals == 0)
    }

    /// Threads racing for granules never take more than the cap in all,
    /// and exactly the cap once every one has been refused.
    @Test func concurrentReservationsNeverPassTheCap() {
        let granules = 1000
        let budget = HTTP2BufferBudget(limit: granules * HTTP2BufferBudget.granule)
        DispatchQueue.concurrentPerform(iterations: 4) { _ in
            while budget.reserve(HTTP2BufferBudget.granule) {
                #expect(budget.reservedBytes <= budget.limit)
            }
        }
        #expect(budget.reservedBytes == granules * HTTP2BufferBudget.granule)
        #expect(budget.refusals == 4)
    }
}
