import NIOCore

/// Coalesces the output of all HTTP/2 connections of one event loop.
///
/// A connection with something to send (its own read produced frames, or
/// a proxy forwarded bytes into it) is only marked dirty; one task queued
/// on the loop flushes every dirty connection once, after the loop has
/// handled all the I/O events of its current wake-up. That is one write
/// per connection per wake-up, however many of the loop's connections were
/// read meanwhile: a write on loopback costs a wake-up of the reader, which
/// was ~10 % of the proxy's CPU when each read batch flushed on its own.
///
/// It also keeps the stream states its connections closed, for their next
/// streams: streams open and close in bursts as large as the loop's
/// concurrency, across all its connections, so a per-connection spare list
/// either misses most of them or keeps memory on every idle connection.
///
/// One instance per event loop, used only from that loop.
public final class HTTP2WriteBatch {
    private var dirty: [HTTP2Connection] = []
    private var flushing: [HTTP2Connection] = []
    private var drainScheduled = false
    private var draining = false
    /// Closed streams' states, reset, nothing else referring to them.
    var spareStreamStates: [StreamState] = []
    static let spareStreamStateLimit = 1024

    public init() {
        dirty.reserveCapacity(64)
        flushing.reserveCapacity(64)
    }

    /// `connection` (of this batch's loop) will be flushed at the end of
    /// the loop's current wake-up, or of the drain under way.
    func markDirty(_ connection: HTTP2Connection, on loop: EventLoop) {
        dirty.append(connection)
        guard !draining, !drainScheduled else { return }
        drainScheduled = true
        loop.assumeIsolated().execute(drainTask)
    }

    /// Made once, so that scheduling a drain allocates nothing. It refers
    /// to the batch (a cycle on purpose): a batch is made once per event
    /// loop and lives as long as the process.
    private lazy var drainTask: () -> Void = { self.drain() }

    /// Flushes every dirty connection, and those their flushes dirty (a
    /// flush delivers write credits, which let proxies forward more).
    private func drain() {
        drainScheduled = false
        draining = true
        while !dirty.isEmpty {
            swap(&dirty, &flushing)
            for c in flushing { c.flush() }
            flushing.removeAll(keepingCapacity: true)
        }
        draining = false
    }
}
