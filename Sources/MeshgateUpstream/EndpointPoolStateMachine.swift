import NIOCore

/// What the pool's decisions read of one of its connections.
public protocol EndpointPoolConnection: AnyObject {
    /// Its dial is under way.
    var isConnecting: Bool { get }
    /// Ready, and under the upstream's SETTINGS_MAX_CONCURRENT_STREAMS.
    var hasRoom: Bool { get }
    /// Closed, or the upstream sent GOAWAY: no new stream goes to it.
    var takesNoNewStreams: Bool { get }
}

/// The decisions of an `EndpointPool`, as a value: which connection a new
/// stream goes to, when another connection is dialed, which calls wait for
/// a stream and in what order, and what a failed dial does (the waiting
/// calls go back, the backoff grows). `EndpointPool` carries them out
/// (dials, attaches, logs, the clock), so `EndpointPoolStateMachineTests`
/// checks every rule without a socket.
///
/// Generic so that the tests use plain objects; the pool specializes it
/// (`UpstreamConnection`, `any UpstreamPoolWaiter`). It holds what the
/// pool held (its connections and its queue), nothing per call: a stream
/// that finds room costs one walk over the connections, as before.
public struct EndpointPoolStateMachine<Connection: EndpointPoolConnection, Waiter> {
    /// `max_connections_per_endpoint`.
    public let maxConnections: Int
    /// Dialing or open, in the order they were dialed.
    public private(set) var connections: [Connection] = []
    /// Calls waiting for a stream, first come first served.
    public private(set) var waiters = CircularBuffer<Waiter>()
    /// Dials failed in a row: the backoff's exponent.
    public private(set) var consecutiveFailures = 0

    public init(maxConnections: Int) {
        self.maxConnections = maxConnections
    }

    // MARK: A call wants a stream

    /// The first connection with room for one more stream.
    @inlinable
    public var connectionWithRoom: Connection? {
        for connection in connections where connection.hasRoom { return connection }
        return nil
    }

    /// No connection had room for `waiter`: it waits. True: dial another
    /// connection now (`dialStarted`).
    public mutating func enqueue(_ waiter: Waiter) -> Bool {
        waiters.append(waiter)
        return needsDial
    }

    /// The call stopped waiting (its attempt or shadow was given up). By
    /// identity: waiters are objects (an existential of a class protocol
    /// is one, but cannot be a generic `AnyObject`).
    public mutating func cancelWait(_ waiter: AnyObject) {
        if let i = waiters.firstIndex(where: { $0 as AnyObject === waiter }) { waiters.remove(at: i) }
    }

    /// Calls wait and another connection may be dialed: none is being
    /// dialed (the waiting calls take the one under way rather than each
    /// open their own), and the pool is under its limit. At the limit with
    /// every connection full, the calls stay here until a stream closes
    /// (`nextAttachment`): attached to a full connection they would wait
    /// in nghttp2's queue instead, and count as started (on_attempt_start),
    /// not pending, for the circuit breaker's max_pending_requests (Envoy's
    /// pending: no connection or stream to dispatch the request on yet).
    public var needsDial: Bool {
        guard !waiters.isEmpty, connections.count < maxConnections else { return false }
        for connection in connections where connection.isConnecting { return false }
        return true
    }

    // MARK: Room opens (a stream closed, SETTINGS arrived, a dial succeeded)

    /// The first waiting call and the connection it gets, while a call
    /// waits and a connection has room; nil when either is missing. The
    /// call has left the queue when the pool attaches it.
    public mutating func nextAttachment() -> (waiter: Waiter, connection: Connection)? {
        guard !waiters.isEmpty, let connection = connectionWithRoom else { return nil }
        return (waiters.removeFirst(), connection)
    }

    // MARK: Dials

    /// The pool dials `connection`: it counts against the limit from now.
    public mutating func dialStarted(_ connection: Connection) {
        connections.append(connection)
    }

    /// A dial succeeded (the upstream's first SETTINGS arrived): the
    /// backoff starts over. True when the endpoint had been failing.
    public mutating func dialSucceeded() -> Bool {
        defer { consecutiveFailures = 0 }
        return consecutiveFailures > 0
    }

    /// A dial failed (TCP, TLS or the HTTP/2 handshake): the connection
    /// leaves the pool and every waiting call goes back, to be placed on
    /// another endpoint (none of their bytes left). Nil when the
    /// connection had left the pool already: nothing changes.
    public mutating func dialFailed(_ connection: Connection) -> CircularBuffer<Waiter>? {
        guard remove(connection) else { return nil }
        consecutiveFailures += 1
        let stranded = waiters
        waiters.removeAll()
        return stranded
    }

    /// gRPC's connection backoff after the failures so far, in seconds:
    /// 1 s × 1.6ⁿ⁻¹, at most 30 s, times `jitter` (0.8...1.2, the pool's
    /// random draw). 0 before any failure.
    public func backoffSeconds(jitter: Double) -> Double {
        guard consecutiveFailures > 0 else { return 0 }
        var base = 1.0
        for _ in 1..<consecutiveFailures where base < 30 { base *= 1.6 }
        return min(base, 30.0) * jitter
    }

    // MARK: Connections going away

    /// The connection closed or received GOAWAY: out of the pool at once,
    /// so that it does not count against the limit while its last streams
    /// finish (its channel keeps it alive until then). The pool then looks for room (`nextAttachment`) and a dial
    /// (`needsDial`) for the calls still waiting.
    public mutating func connectionUnusable(_ connection: Connection) {
        if connection.takesNoNewStreams { remove(connection) }
    }

    @discardableResult
    private mutating func remove(_ connection: Connection) -> Bool {
        guard let i = connections.firstIndex(where: { $0 === connection }) else { return false }
        connections.remove(at: i)
        return true
    }
}
