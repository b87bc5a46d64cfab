/// A connection's open streams by id, without hashing: the slot of stream
/// `id` is `id / 2` modulo a power of two. Stream ids on one connection
/// rise by two (odd ones from the client; even ones are never opened
/// here), so the open streams are a sliding window of ids and land in
/// consecutive slots: a lookup is a shift, a mask and, nearly always, one
/// comparison. Open addressing with linear probing; a removal shifts the
/// following entries back (no tombstones); at half full the table doubles.
///
/// Empty until the first stream (an idle connection pays nothing). Used
/// on the connection's event loop only, like the connection.
struct StreamTable {
    private var ids: [Int32] = []
    private var states: [StreamState?] = []
    private var mask = -1
    private(set) var count = 0

    private static let initialCapacity = 16

    private func home(_ id: Int32) -> Int { Int(id >> 1) & mask }

    /// The slot holding `id`, if any.
    private func slot(of id: Int32) -> Int? {
        guard count > 0 else { return nil }
        var i = home(id)
        while true {
            let occupant = ids[i]
            if occupant == id { return i }
            if occupant == 0 { return nil }
            i = (i + 1) & mask
        }
    }

    subscript(id: Int32) -> StreamState? {
        get { slot(of: id).flatMap { states[$0] } }
        set {
            if let state = newValue { insert(id, state) } else { removeValue(forKey: id) }
        }
    }

    private mutating func insert(_ id: Int32, _ state: StreamState) {
        precondition(id != 0, "stream 0 is the connection")
        if let i = slot(of: id) {
            states[i] = state
            return
        }
        if 2 * (count + 1) > ids.count { grow() }
        var i = home(id)
        while ids[i] != 0 { i = (i + 1) & mask }
        ids[i] = id
        states[i] = state
        count += 1
    }

    @discardableResult
    mutating func removeValue(forKey id: Int32) -> StreamState? {
        guard var hole = slot(of: id) else { return nil }
        let removed = states[hole]
        ids[hole] = 0
        states[hole] = nil
        count -= 1
        // Shift back the entries after the hole that probed past it, so
        // that every entry stays reachable from its home without gaps.
        var i = (hole + 1) & mask
        while ids[i] != 0 {
            let wanted = home(ids[i])
            // Does the hole lie cyclically in [wanted, i)? Then the entry
            // at i may (and must) move into it.
            if (i - wanted) & mask >= (i - hole) & mask {
                ids[hole] = ids[i]
                states[hole] = states[i]
                ids[i] = 0
                states[i] = nil
                hole = i
            }
            i = (i + 1) & mask
        }
        return removed
    }

    private mutating func grow() {
        let capacity = max(Self.initialCapacity, 2 * ids.count)
        let oldIDs = ids, oldStates = states
        ids = Array(repeating: 0, count: capacity)
        states = Array(repeating: nil, count: capacity)
        mask = capacity - 1
        count = 0
        for i in oldIDs.indices where oldIDs[i] != 0 { insert(oldIDs[i], oldStates[i]!) }
    }

    /// The open streams, in no particular order.
    var values: [StreamState] { states.compactMap { $0 } }

    /// Each open stream's state, without making an array.
    func forEachState(_ body: (StreamState) -> Void) {
        for state in states { if let state { body(state) } }
    }

    mutating func removeAll() {
        guard count > 0 else { return }
        for i in ids.indices {
            ids[i] = 0
            states[i] = nil
        }
        count = 0
    }
}
