import NIOCore

/// Bytes the connection's owner keeps for its streams beyond what the
/// connection queues itself: a proxy's request heads (for the call's
/// life), its replay buffers (for a retry), received bytes waiting for an
/// upstream stream. They are counted as queued bytes are: against the
/// connection's cap (`settings.maxQueuedBytes`) and the process-wide
/// budget, each by its `HTTP2HoldKind`. A hold the caps have no room for
/// is refused, holding nothing: the owner decides what follows (a call
/// stops keeping replay bytes, or ends).
///
/// Cheap on the data path: integer checks per hold and release; the
/// budget's atomic only when the holdings cross a granule.
extension HTTP2Connection {
    /// Counts `bytes` of the owner's own storage (a header list).
    public func holdBytes(_ bytes: Int, kind: HTTP2HoldKind) -> Bool {
        guard !isClosed else { return false }
        if kind != .received, settings.maxQueuedBytes > 0 {
            let cap = kind == .droppable ? settings.maxQueuedBytes / 2 : settings.maxQueuedBytes
            if queuedBytes + heldBytes + bytes > cap { return false }
        }
        guard reserveBudget(forHolding: bytes, droppable: kind == .droppable) else { return false }
        if kind == .received { receivedHeldBytes += bytes } else { heldBytes += bytes }
        return true
    }

    /// Gives back `bytes` counted with `holdBytes(_:kind:)`.
    public func releaseHeldBytes(_ bytes: Int, kind: HTTP2HoldKind) {
        guard !isClosed, bytes > 0 else { return }
        if kind == .received { receivedHeldBytes -= bytes } else { heldBytes -= bytes }
        assert(heldBytes >= 0 && receivedHeldBytes >= 0, "released more than was held")
        returnSurplusBudget()
    }

    /// Counts a kept slice of received bytes: a compact buffer by its
    /// bytes; a slice of a larger storage (a socket read) kept for long
    /// (`.required`, `.droppable`) by that storage, once however many kept
    /// slices share it (`HeldStorageLedger`). `.received` bytes leave as
    /// soon as their stream opens, and the receive window bounds them, so
    /// they count their own size. The token it returns gives the hold back
    /// (`release`); nil: no room.
    public func holdSlice(_ slice: ByteBuffer, kind: HTTP2HoldKind) -> HTTP2HeldSlice? {
        guard kind != .received, slice.pinsLargerStorage else {
            return holdBytes(slice.readableBytes, kind: kind) ? HTTP2HeldSlice(storage: nil, bytes: slice.readableBytes, kind: kind) : nil
        }
        guard !isClosed else { return nil }
        let storage = Self.storageIdentity(of: slice)
        let cost = heldStorages.hold(base: storage, capacity: slice.storageCapacity, kind: kind)
        guard cost > 0, !holdBytes(cost, kind: kind) else { return HTTP2HeldSlice(storage: storage, bytes: 0, kind: kind) }
        heldStorages.undoFirstHold(base: storage)
        return nil
    }

    /// Gives back a hold `holdSlice` made.
    public func release(_ held: HTTP2HeldSlice) {
        guard !isClosed else { return }
        guard let storage = held.storage else { return releaseHeldBytes(held.bytes, kind: held.kind) }
        if let freed = heldStorages.release(base: storage) {
            releaseHeldBytes(freed.bytes, kind: freed.kind)
        }
    }

    /// The storage object behind `slice` (all slices of one buffer share
    /// it), as an address: its identity while a kept slice keeps it alive.
    private static func storageIdentity(of slice: ByteBuffer) -> UInt {
        slice.withUnsafeReadableBytesWithStorageManagement { _, storage in UInt(bitPattern: storage.toOpaque()) }
    }

    /// Reserves from the budget what the holdings would need beyond the
    /// connection's share, rounded up to granules. It counts the queued
    /// bytes of the last settled flush, not those queued since (about to
    /// leave), so that a hold between flushes does not reserve for them.
    private func reserveBudget(forHolding bytes: Int, droppable: Bool) -> Bool {
        // Integers first: the budget (a class, retained when read) is
        // touched only when the share must grow.
        let granule = HTTP2BufferBudget.granule
        let projected = max(settledQueuedBytes + heldBytes + receivedHeldBytes + bytes - granule, 0)
        guard projected > budgetReserved, let budget = settings.bufferBudget else { return true }
        let need = (projected - budgetReserved + granule - 1) / granule * granule
        guard droppable ? budget.reserveForHolding(need) : budget.reserve(need) else { return false }
        budgetReserved += need
        return true
    }

    /// A granule or more reserved beyond what is held and settled goes back.
    private func returnSurplusBudget() {
        let granule = HTTP2BufferBudget.granule
        let counted = max(settledQueuedBytes + heldBytes + receivedHeldBytes - granule, 0)
        guard budgetReserved - counted >= granule, let budget = settings.bufferBudget else { return }
        let keep = (counted + granule - 1) / granule * granule
        budget.release(budgetReserved - keep)
        budgetReserved = keep
    }
}

/// A slice counted by `HTTP2Connection.holdSlice`, to give back with
/// `release`: plain values (no reference), so an owner keeps and drops
/// them without reference counting.
public struct HTTP2HeldSlice: Sendable {
    /// The storage counted, by address (nil: a compact buffer, counted by
    /// `bytes`).
    let storage: UInt?
    public let bytes: Int
    public let kind: HTTP2HoldKind
}

extension HTTP2HeldSlice {
    /// A hold of `bytes` the owner counted elsewhere (not by a connection).
    public init(bytes: Int, kind: HTTP2HoldKind) {
        self.init(storage: nil, bytes: bytes, kind: kind)
    }
}
