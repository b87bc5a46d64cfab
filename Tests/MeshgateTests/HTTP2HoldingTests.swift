import NIOCore
import Testing
@testable import MeshgateHTTP2

/// What a connection's owner keeps (`HTTP2Connection.holdBytes`,
/// `holdSlice`): counted by kind against the connection's cap and the
/// process-wide budget, slices by the storage they keep alive, and all of
/// it given back.
@Suite struct HTTP2HoldingTests {
    static let granule = HTTP2BufferBudget.granule

    func connection(cap: Int, budget: HTTP2BufferBudget?) -> HTTP2Connection {
        var settings = HTTP2Settings()
        settings.maxQueuedBytes = cap
        settings.bufferBudget = budget
        return HTTP2Connection(role: .server, settings: settings, delegate: nil)
    }

    @Test func eachKindMeetsItsShareOfTheConnectionsCap() {
        let c = connection(cap: 100_000, budget: nil)
        #expect(c.holdBytes(40_000, kind: .droppable))
        #expect(!c.holdBytes(20_000, kind: .droppable), "droppable bytes stop at half of the cap")
        #expect(c.holdBytes(50_000, kind: .required), "required ones may use the rest")
        #expect(!c.holdBytes(20_000, kind: .required))
        #expect(c.holdBytes(1 << 20, kind: .received), "received bytes are bounded by the window, not the cap")
        #expect(c.heldBytes == 90_000 && c.receivedHeldBytes == 1 << 20)
        c.releaseHeldBytes(40_000, kind: .droppable)
        c.releaseHeldBytes(50_000, kind: .required)
        c.releaseHeldBytes(1 << 20, kind: .received)
        #expect(c.heldBytes == 0 && c.receivedHeldBytes == 0)
    }

    @Test func holdingsReserveFromTheBudgetBeyondTheFreeGranuleAndGiveItBack() {
        let budget = HTTP2BufferBudget(limit: 8 * Self.granule)
        let c = connection(cap: 0, budget: budget)
        #expect(c.holdBytes(Self.granule, kind: .required), "the connection's first granule is free")
        #expect(budget.reservedBytes == 0)
        #expect(c.holdBytes(1, kind: .required))
        #expect(budget.reservedBytes == Self.granule, "reserved in granules")
        #expect(c.holdBytes(3 * Self.granule - 1, kind: .droppable))
        #expect(budget.reservedBytes == 3 * Self.granule)
        #expect(!c.holdBytes(Self.granule + 1, kind: .droppable), "droppable holdings take at most half of the budget")
        #expect(c.holdBytes(5 * Self.granule, kind: .received), "received ones may take the rest")
        #expect(budget.reservedBytes == 8 * Self.granule)
        #expect(!c.holdBytes(1, kind: .required))
        c.releaseHeldBytes(5 * Self.granule, kind: .received)
        c.releaseHeldBytes(3 * Self.granule - 1, kind: .droppable)
        c.releaseHeldBytes(Self.granule + 1, kind: .required)
        #expect(budget.reservedBytes == 0, "every granule went back")
    }

    @Test func slicesOfOneReadAreCountedOnceAtTheReadsCapacity() {
        let c = connection(cap: 1 << 20, budget: nil)
        var read = ByteBufferAllocator().buffer(capacity: 64 << 10)
        read.writeBytes([UInt8](repeating: 7, count: 64 << 10))
        let a = read.getSlice(at: 10, length: 100)!, b = read.getSlice(at: 5000, length: 1)!
        #expect(a.pinsLargerStorage && b.pinsLargerStorage)
        let heldA = c.holdSlice(a, kind: .droppable)
        #expect(heldA != nil && c.heldBytes == read.capacity, "a slice costs the buffer it keeps alive")
        let heldB = c.holdSlice(b, kind: .droppable)
        #expect(heldB != nil && c.heldBytes == read.capacity, "a second slice of the same read costs nothing more")
        c.release(heldA!)
        #expect(c.heldBytes == read.capacity, "the read stays alive while a slice of it is kept")
        c.release(heldB!)
        #expect(c.heldBytes == 0)
        // A compact buffer costs its bytes.
        var own = ByteBufferAllocator().buffer(capacity: 100)
        own.writeBytes([UInt8](repeating: 1, count: 100))
        #expect(!own.pinsLargerStorage)
        let heldOwn = c.holdSlice(own, kind: .required)
        #expect(heldOwn != nil && c.heldBytes == 100)
        c.release(heldOwn!)
        #expect(c.heldBytes == 0)
    }

    @Test func aRefusedSliceLeavesNothingCounted() {
        let c = connection(cap: 100 << 10, budget: nil)
        var read = ByteBufferAllocator().buffer(capacity: 64 << 10)
        read.writeBytes([UInt8](repeating: 7, count: 64 << 10))
        let slice = read.getSlice(at: 0, length: 10)!
        #expect(c.holdSlice(slice, kind: .droppable) == nil, "64 KiB is past half of a 100 KiB cap")
        #expect(c.heldBytes == 0)
        #expect(c.holdSlice(slice, kind: .required) != nil, "the refused hold left no ledger entry behind")
        #expect(c.heldBytes == read.capacity)
    }

    @Test func aQueueStillWaitingGetsStorageOfItsOwn() {
        var queue = ByteChunkQueue()
        var read = ByteBufferAllocator().buffer(capacity: 64 << 10)
        read.writeBytes([UInt8](repeating: 3, count: 64 << 10))
        queue.append(read.getSlice(at: 0, length: 5)!)
        queue.append(read.getSlice(at: 100, length: 5)!)
        #expect(queue.storageBytes == 2 * read.capacity)
        queue.unpin(allocator: ByteBufferAllocator())
        #expect(queue.storageBytes < 1024, "each chunk now keeps only its own bytes")
        var out = [UInt8](repeating: 0, count: 10)
        let copied = out.withUnsafeMutableBufferPointer { queue.drain(into: $0.baseAddress!, count: 10) }
        #expect(copied == 10 && out == [UInt8](repeating: 3, count: 10), "the bytes are unchanged")
    }
}
