import MeshgateHTTP2
import MeshgateCallCore

/// Reusable buffers for the calls of one event loop: the actions of the
/// event a call is processing, and the events that arrive for it
/// meanwhile. A call borrows the buffers of one nesting depth while it
/// processes (carrying out an action can make another call process at
/// once, one level deeper: a pool that hands its connection to a waiting
/// attempt), so once the loop is warm, processing events allocates nothing.
final class CallScratch {
    /// By depth. Only the loop's thread touches them, and each depth's
    /// buffers belong to the one call processing at that depth (the
    /// actions are taken out while in use), so no two accesses overlap:
    /// what the release build's exclusivity opt-out relies on (Package.swift).
    var actions: [ActionBuffer] = []
    var events: [EventQueue] = []
    private var depth = 0
    /// The upstream request head a call builds for an attempt: taken out,
    /// filled, handed to nghttp2 (which copies it) and put back emptied.
    /// A call that opens a stream while another's head is out (it cannot
    /// happen today) would just get a fresh list.
    var requestHead = SpareHeaderList()

    /// The head a call with filters sends the client: the upstream's
    /// fields plus the filters' (see ProxyCall.sendResponseHead).
    var responseHead = SpareHeaderList()
    /// Attempt tables of finished calls, emptied, for new calls. Calls
    /// start and end in bursts as large as the loop's concurrency (500
    /// streams in the benchmark: a cap of 64 kept only half the saving),
    /// so the cap is large; a spare table costs ~160 bytes.
    private var spareAttemptTables: [[AttemptState]] = []
    private static let spareAttemptTableLimit = 1024

    /// The depth a call processes at; `leave` when done.
    func enter() -> Int {
        if depth == actions.count {
            actions.append(ActionBuffer(capacity: 16))
            events.append(EventQueue())
        }
        depth += 1
        return depth - 1
    }

    func leave() {
        depth -= 1
    }

    /// The action buffer of `depth`, cleared, for the caller to fill and
    /// give back (`putBack`): no reference to it stays here meanwhile.
    func takeActions(_ depth: Int) -> ActionBuffer {
        var taken = ActionBuffer()
        swap(&taken, &actions[depth])
        taken.clear()
        return taken
    }

    func putBack(_ buffer: ActionBuffer, _ depth: Int) {
        actions[depth] = buffer
    }

    /// An empty attempt table, with capacity when a finished call left one.
    func takeAttemptTable() -> [AttemptState] {
        spareAttemptTables.popLast() ?? []
    }

    func recycle(attemptTable table: [AttemptState]) {
        guard table.capacity > 0, spareAttemptTables.count < Self.spareAttemptTableLimit else { return }
        spareAttemptTables.append(table)
    }
}

/// A header list lent out and given back emptied, keeping its storage:
/// filling it again allocates nothing once it has grown to fit.
struct SpareHeaderList {
    private var list = HTTP2HeaderList()

    mutating func take() -> HTTP2HeaderList {
        var taken = HTTP2HeaderList()
        swap(&taken, &list)
        return taken
    }

    /// Takes `head` (leaving it empty) so that its storage is not shared
    /// when emptied: emptying shared storage would allocate.
    mutating func putBack(_ head: inout HTTP2HeaderList) {
        swap(&head, &list)
        list.removeAll(keepingCapacity: true)
    }
}
