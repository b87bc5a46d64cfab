import Synchronization

/// The bytes every connection of the process together may keep queued for
/// peers that do not read (outbound DATA waiting on a flow-control window),
/// shared by all event loops.
///
/// Connections reserve from it in whole `granule`s, and only for what is
/// still queued once a flush has handed everything it could to the socket
/// (`HTTP2Connection.settleBufferBudget`), beyond a first granule each
/// connection has free: bytes that leave in the same wake-up they arrived
/// in never touch it, so a proxy whose peers read costs no atomic
/// operation per frame or per call, and one that is throttled costs one
/// per 64 KiB of change. The cap therefore holds for bytes waiting across
/// flushes, to within a granule per connection.
public final class HTTP2BufferBudget: Sendable {
    /// Reservations are made and given back in multiples of this.
    public static let granule = 64 << 10

    private let limitBytes: Atomic<Int>
    private let reserved = Atomic<Int>(0)
    private let refused = Atomic<UInt64>(0)

    /// `limit`: bytes in all; zero: no cap (reservations still counted).
    public init(limit: Int) {
        limitBytes = Atomic(limit)
    }

    /// The cap; a reload may change it (reservations already made stay).
    public var limit: Int {
        get { limitBytes.load(ordering: .relaxed) }
        set { limitBytes.store(newValue, ordering: .relaxed) }
    }

    /// Bytes reserved by all connections now.
    public var reservedBytes: Int { reserved.load(ordering: .relaxed) }

    /// Reservations refused because the cap was reached (each reset a stream).
    public var refusals: UInt64 { refused.load(ordering: .relaxed) }

    /// Takes `bytes` from the budget, or returns false (and takes nothing)
    /// when that would pass the cap.
    public func reserve(_ bytes: Int) -> Bool {
        let cap = limit
        var current = reserved.load(ordering: .relaxed)
        while true {
            if cap > 0 && current + bytes > cap {
                refused.add(1, ordering: .relaxed)
                return false
            }
            let (exchanged, original) = reserved.compareExchange(expected: current, desired: current + bytes, ordering: .relaxed)
            if exchanged { return true }
            current = original
        }
    }

    /// Takes `bytes` the owner could do without (request bytes kept for a
    /// retry): such holdings may fill at most half of the cap, so that
    /// they never leave the bytes queued for slow peers — which cannot be
    /// dropped without failing a call — without room. False (taking
    /// nothing) past that half.
    public func reserveForHolding(_ bytes: Int) -> Bool {
        let cap = limit
        var current = reserved.load(ordering: .relaxed)
        while true {
            if cap > 0 && current + bytes > cap / 2 { return false }
            let (exchanged, original) = reserved.compareExchange(expected: current, desired: current + bytes, ordering: .relaxed)
            if exchanged { return true }
            current = original
        }
    }

    public func release(_ bytes: Int) {
        reserved.subtract(bytes, ordering: .relaxed)
    }
}
