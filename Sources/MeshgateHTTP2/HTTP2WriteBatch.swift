/// Coalesces the output of all HTTP/2 connections of one event loop.
///
/// While any connection of the loop is reading, a send on another connection
/// (a proxy forwarding bytes) only marks it dirty; when the read batch ends,
/// every dirty connection is flushed once. That is one write per connection
/// per read batch, with no task queued on the loop.
///
/// It also keeps the stream states its connections closed, for their next
/// streams: streams open and close in bursts as large as the loop's
/// concurrency, across all its connections, so a per-connection spare list
/// either misses most of them or keeps memory on every idle connection.
///
/// One instance per event loop, used only from that loop.
public final class HTTP2WriteBatch {
    var readers = 0
    var dirty: [HTTP2Connection] = []
    private var flushing: [HTTP2Connection] = []
    /// Closed streams' states, reset, nothing else referring to them.
    var spareStreamStates: [StreamState] = []
    static let spareStreamStateLimit = 1024

    public init() {
        dirty.reserveCapacity(64)
        flushing.reserveCapacity(64)
    }

    /// Flushes `connection` and everything dirtied meanwhile, until quiet.
    func flush(after connection: HTTP2Connection) {
        readers += 1
        connection.flush()
        drainDirty()
        readers -= 1
    }

    /// Flushes what reads dirtied, when no read is in progress.
    func flushDirty() {
        guard readers == 0, !dirty.isEmpty else { return }
        readers += 1
        drainDirty()
        readers -= 1
    }

    private func drainDirty() {
        while !dirty.isEmpty {
            swap(&dirty, &flushing)
            for c in flushing { c.flush() }
            flushing.removeAll(keepingCapacity: true)
        }
    }
}
