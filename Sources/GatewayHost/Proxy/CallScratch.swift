/// Reusable buffers for the calls of one event loop: the actions of the
/// event a call is processing, and the events that arrive for it
/// meanwhile. A call borrows the buffers of one nesting depth while it
/// processes (carrying out an action can make another call process at
/// once, one level deeper: a pool that hands its connection to a waiting
/// attempt), so once the loop is warm, processing events allocates nothing.
final class CallScratch {
    /// By depth.
    var actions: [[CallAction]] = []
    var events: [[CallEvent]] = []
    private var depth = 0

    /// The depth a call processes at; `leave` when done.
    func enter() -> Int {
        if depth == actions.count {
            actions.append([])
            actions[depth].reserveCapacity(16)
            events.append([])
            events[depth].reserveCapacity(8)
        }
        depth += 1
        return depth - 1
    }

    func leave() {
        depth -= 1
    }

    /// The action buffer of `depth`, emptied, for the caller to fill and
    /// give back (`putBack`): no reference to it stays here meanwhile.
    func takeActions(_ depth: Int) -> [CallAction] {
        var taken: [CallAction] = []
        swap(&taken, &actions[depth])
        return taken
    }

    func putBack(_ buffer: [CallAction], _ depth: Int) {
        actions[depth] = buffer
    }
}
