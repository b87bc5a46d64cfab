import MeshgateUpstream
import Testing

/// `EndpointPool`'s decisions without a socket (`EndpointPoolStateMachine`):
/// which connection a stream goes to, when a connection is dialed, who
/// waits and in what order, and what a failed dial or a closing connection
/// does.
@Suite struct EndpointPoolStateMachineTests {
    final class Connection: EndpointPoolConnection {
        var isConnecting = true
        var hasRoom = false
        var takesNoNewStreams = false

        /// Dialed and ready, with room or full.
        func ready(room: Bool) {
            isConnecting = false
            hasRoom = room
        }
    }

    final class Call {}

    typealias Pool = EndpointPoolStateMachine<Connection, Call>

    /// A pool with one ready connection per entry of `rooms` (with room or full).
    func pool(max: Int, rooms: [Bool]) -> (Pool, [Connection]) {
        var pool = Pool(maxConnections: max)
        let connections = rooms.map { room in
            let connection = Connection()
            connection.ready(room: room)
            pool.dialStarted(connection)
            return connection
        }
        return (pool, connections)
    }

    /// The calls `nextAttachment` hands out now, in order, with their connections.
    func attachments(_ pool: inout Pool) -> [(Call, Connection)] {
        var result: [(Call, Connection)] = []
        while let next = pool.nextAttachment() { result.append((next.waiter, next.connection)) }
        return result
    }

    // MARK: Where a stream goes

    @Test func aStreamGoesToTheFirstConnectionWithRoom() {
        let (pool, connections) = self.pool(max: 3, rooms: [false, true, true])
        #expect(pool.connectionWithRoom === connections[1], "a full connection is passed over")
        connections[0].hasRoom = true
        #expect(pool.connectionWithRoom === connections[0], "the first in dial order")
        let (full, _) = self.pool(max: 3, rooms: [false, false])
        #expect(full.connectionWithRoom == nil)
    }

    // MARK: Dials

    @Test func theFirstWaitingCallDialsAndTheNextWaitForThatDial() {
        var pool = Pool(maxConnections: 4)
        let first = Call(), second = Call()
        let dial = pool.enqueue(first)
        #expect(dial)
        let connection = Connection()
        pool.dialStarted(connection)
        let dialAgain = pool.enqueue(second)
        #expect(!dialAgain, "one dial at a time")
        let early = pool.nextAttachment()
        #expect(early == nil, "nothing has room while it connects")
        #expect(pool.waiters.count == 2)
        connection.ready(room: true)
        let attached = attachments(&pool)
        #expect(attached.count == 2)
        #expect(attached.first?.0 === first && attached.last?.0 === second, "first come, first served")
        #expect(attached.allSatisfy { $0.1 === connection })
        #expect(pool.waiters.isEmpty && !pool.needsDial)
    }

    @Test func fullConnectionsUnderTheLimitDialAnother() {
        var (pool, _) = self.pool(max: 2, rooms: [false])
        let dial = pool.enqueue(Call())
        #expect(dial)
    }

    @Test func atTheConnectionLimitCallsWaitForAStreamToClose() {
        var (pool, connections) = self.pool(max: 1, rooms: [false])
        let call = Call()
        let dial = pool.enqueue(call)
        #expect(!dial, "no connection beyond max_connections_per_endpoint")
        #expect(!pool.needsDial)
        let none = pool.nextAttachment()
        #expect(none == nil, "not attached to a full connection")
        connections[0].hasRoom = true  // a stream closed
        let attached = attachments(&pool)
        #expect(attached.count == 1 && attached[0].0 === call && attached[0].1 === connections[0])
    }

    @Test func withNoCallWaitingNothingIsDialed() {
        let (pool, _) = self.pool(max: 4, rooms: [false])
        #expect(!pool.needsDial)
    }

    @Test func aCallWaitingWhenRoomRunsOutStaysQueued() {
        var (pool, connections) = self.pool(max: 1, rooms: [false])
        let first = Call(), second = Call()
        _ = pool.enqueue(first)
        _ = pool.enqueue(second)
        connections[0].hasRoom = true
        let next = pool.nextAttachment()
        #expect(next?.waiter === first)
        connections[0].hasRoom = false  // that call took the last stream
        let none = pool.nextAttachment()
        #expect(none == nil)
        #expect(pool.waiters.count == 1 && pool.waiters.first === second)
    }

    // MARK: A failed dial

    @Test func aFailedDialHandsBackEveryWaitingCallAndLeavesThePool() throws {
        var pool = Pool(maxConnections: 1)
        let first = Call(), second = Call()
        _ = pool.enqueue(first)
        _ = pool.enqueue(second)
        let connection = Connection()
        pool.dialStarted(connection)
        let failure = pool.dialFailed(connection)
        let stranded = try #require(failure)
        #expect(stranded.count == 2 && stranded.first === first && stranded.last === second)
        #expect(pool.waiters.isEmpty && pool.connections.isEmpty, "its place under the limit is free again")
        #expect(pool.consecutiveFailures == 1)
        let again = pool.dialFailed(connection)
        #expect(again == nil, "a connection no longer in the pool changes nothing")
        #expect(pool.consecutiveFailures == 1)
    }

    @Test func theBackoffGrowsByOnePointSixUpToThirtySeconds() {
        var pool = Pool(maxConnections: 1)
        #expect(pool.backoffSeconds(jitter: 1) == 0, "no failure, no backoff")
        var delays: [Double] = []
        for _ in 0..<10 {
            let connection = Connection()
            pool.dialStarted(connection)
            _ = pool.dialFailed(connection)
            delays.append(pool.backoffSeconds(jitter: 1))
        }
        let expected = [1, 1.6, 2.56, 4.096, 6.5536, 10.48576, 16.777216, 26.8435456, 30, 30]
        for (delay, want) in zip(delays, expected) { #expect(abs(delay - want) < 1e-9) }
        #expect(abs(pool.backoffSeconds(jitter: 0.8) - 24) < 1e-9, "the jitter scales the capped delay")
    }

    @Test func aSuccessfulDialEndsTheBackoffAndSaysTheEndpointRecovered() {
        var pool = Pool(maxConnections: 1)
        let failed = Connection()
        pool.dialStarted(failed)
        _ = pool.dialFailed(failed)
        pool.dialStarted(Connection())
        let recovered = pool.dialSucceeded()
        #expect(recovered)
        #expect(pool.consecutiveFailures == 0 && pool.backoffSeconds(jitter: 1) == 0)
        let again = pool.dialSucceeded()
        #expect(!again, "said once")
    }

    // MARK: Leaving

    @Test func aCallThatStopsWaitingLeavesOnlyItsOwnPlace() {
        var pool = Pool(maxConnections: 1)
        let calls = [Call(), Call(), Call()]
        for call in calls { _ = pool.enqueue(call) }
        pool.cancelWait(calls[1])
        pool.cancelWait(Call())
        #expect(pool.waiters.count == 2 && pool.waiters.first === calls[0] && pool.waiters.last === calls[2])
    }

    @Test func aConnectionThatTakesNoNewStreamsLeavesThePoolAndADialMayReplaceIt() {
        var (pool, connections) = self.pool(max: 1, rooms: [false])
        _ = pool.enqueue(Call())
        #expect(!pool.needsDial)
        pool.connectionUnusable(connections[0])
        #expect(pool.connections.count == 1, "it still takes streams: it stays")
        connections[0].takesNoNewStreams = true  // GOAWAY, or closed
        pool.connectionUnusable(connections[0])
        #expect(pool.connections.isEmpty)
        #expect(pool.needsDial, "the waiting call gets a new connection")
    }
}
