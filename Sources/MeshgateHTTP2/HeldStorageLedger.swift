/// The storages behind the slices a connection's owner keeps (a proxy
/// keeps request bytes for a retry: slices of socket reads), each counted
/// once at its full capacity however many kept slices share it. A kept
/// slice costs the buffer it keeps alive, not its own bytes: a 1-byte DATA
/// payload of a 64 KiB read costs 64 KiB, while ten requests of one read
/// cost one read. Copying kept slices instead would cost every call an
/// allocation; counting them this way costs a short search.
///
/// A small array searched linearly: an owner keeps slices of a few reads
/// at a time, and one that keeps a slice of each of many reads meets the
/// connection's cap after cap / 64 KiB of them.
struct HeldStorageLedger {
    struct Entry {
        /// The storage object's address: its identity while it is alive
        /// (a kept slice keeps it alive).
        var base: UInt
        var capacity: Int
        /// Kept slices of it.
        var holds: Int
        /// The hold that counted it (its release uncounts it there).
        var kind: HTTP2HoldKind
    }

    private(set) var entries: [Entry] = []

    /// The bytes a slice of the storage at `base` adds: its capacity for the
    /// first slice (counted as `kind`), nothing for later ones.
    mutating func hold(base: UInt, capacity: Int, kind: HTTP2HoldKind) -> Int {
        if let i = entries.firstIndex(where: { $0.base == base }) {
            entries[i].holds += 1
            return 0
        }
        entries.append(Entry(base: base, capacity: capacity, holds: 1, kind: kind))
        return capacity
    }

    /// Takes back the first hold of `base` (the caps had no room for it).
    mutating func undoFirstHold(base: UInt) {
        guard let i = entries.firstIndex(where: { $0.base == base }), entries[i].holds == 1 else { return }
        entries.swapAt(i, entries.count - 1)
        entries.removeLast()
    }

    /// A kept slice of `base` is let go: the storage's capacity and the
    /// kind it was counted as when it was the last one, else nil.
    mutating func release(base: UInt) -> (bytes: Int, kind: HTTP2HoldKind)? {
        guard let i = entries.firstIndex(where: { $0.base == base }) else { return nil }
        entries[i].holds -= 1
        guard entries[i].holds == 0 else { return nil }
        let entry = entries[i]
        entries.swapAt(i, entries.count - 1)
        entries.removeLast()
        return (entry.capacity, entry.kind)
    }

    mutating func removeAll() { entries.removeAll() }
}

/// How bytes an owner keeps for a connection's streams are counted
/// (`HTTP2Connection.holdBytes`).
public enum HTTP2HoldKind: Sendable, Equatable {
    /// Kept for the stream's life (a request head): against the
    /// connection's cap and the process-wide budget.
    case required
    /// Kept for an option the owner can give up (request bytes for a
    /// retry): at most half of the connection's cap and of the budget, so
    /// they never leave what cannot be dropped without room.
    case droppable
    /// Received bytes not passed on yet (waiting for an upstream stream),
    /// already bounded per connection by its receive window: against the
    /// process-wide budget only.
    case received
}
