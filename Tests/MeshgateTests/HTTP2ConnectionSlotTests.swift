import MeshgateEtcd
import MeshgateHTTP2
import MeshgateTransport
import NIOCore
import NIOPosix
import Testing

/// `HTTP2ConnectionSlot` over real loopback sockets: a waiter is never
/// handed a connection that is closed or closing.
@Suite(.serialized) struct HTTP2ConnectionSlotTests: PollsOnALoop {
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    var loop: EventLoop { group.next() }

    /// What the test's waiters and server saw. Only touched on the test's
    /// one event loop (the test reads it through `loop.submit`), hence
    /// `@unchecked Sendable`.
    final class Record: HTTP2ConnectionDelegate, @unchecked Sendable {
        var results: [Result<HTTP2Connection, HTTP2DialError>] = []
        /// Whether each connection handed over could open streams then.
        var usableWhenHanded: [Bool] = []
        var accepted = 0
        var serverConnections: [HTTP2Connection] = []
        var ownerHeardCloses = 0
        var serverConnectionsClosed = 0
        var dials = 0
        var slot: HTTP2ConnectionSlot?

        func take(_ result: Result<HTTP2Connection, HTTP2DialError>) {
            results.append(result)
            if case .success(let connection) = result {
                usableWhenHanded.append(connection.canOpenStreams && connection.closeReason == nil)
            }
        }

        func http2ConnectionDidClose(_ connection: HTTP2Connection) { serverConnectionsClosed += 1 }
    }

    /// An HTTP/2 server on 127.0.0.1 that counts its connections in `record`.
    func listen(_ record: Record) async throws -> Channel {
        try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    record.accepted += 1
                    let connection = HTTP2Connection(role: .server, delegate: record)
                    record.serverConnections.append(connection)
                    try channel.pipeline.syncOperations.addHandler(connection)
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
    }

    /// A slot dialing `port`, made on the loop and kept in `record`.
    func makeSlot(port: Int, _ record: Record) async throws {
        let loop = self.loop
        try await loop.submit {
            record.slot = HTTP2ConnectionSlot(eventLoop: loop) { delegate, completion in
                record.dials += 1
                HTTP2Dialer.dial(host: "127.0.0.1", port: port, on: loop, options: HTTP2DialOptions(connectTimeout: .seconds(2)),
                                 delegate: delegate, completion: completion)
            }
        }.get()
    }

    @Test func aWaiterOfADialThatEndsAfterTheSlotClosedGetsTheReasonAndTheConnectionIsClosed() async throws {
        let record = Record()
        let server = try await listen(record)
        try await makeSlot(port: server.localAddress!.port!, record)
        try await loop.submit {
            record.slot!.withConnection(record.take)
            // The owner stops while the dial is under way.
            record.slot!.close(reason: "the probe stopped")
        }.get()
        try await eventually { record.results.count == 1 && record.accepted == 1 }
        let outcome = try await loop.submit { () -> String in
            switch record.results[0] {
            case .success: return "handed a connection"
            case .failure(let error): return error.message
            }
        }.get()
        #expect(outcome == "the probe stopped")
        // The dialed connection, which nobody will use, is closed.
        try await eventually { record.serverConnectionsClosed == 1 }
        // And the slot dials no more.
        try await loop.submit { record.slot!.withConnection(record.take) }.get()
        #expect(try await loop.submit { (record.results.count, record.dials) }.get() == (2, 1))
        try await server.close()
    }

    @Test func aWaiterAfterOneThatClosedTheConnectionGetsAFreshOne() async throws {
        let record = Record()
        let server = try await listen(record)
        try await makeSlot(port: server.localAddress!.port!, record)
        try await loop.submit {
            // Two callers wait for the same dial; the first is done with
            // the connection at once (as a failed call closes it).
            record.slot!.withConnection { result in
                record.take(result)
                if case .success(let connection) = result { connection.close(reason: "the first caller closed it") }
            }
            record.slot!.withConnection(record.take)
        }.get()
        try await eventually { record.results.count == 2 }
        let seen = try await loop.submit { () -> ([Bool], Bool, Int) in
            guard case .success(let first) = record.results[0], case .success(let second) = record.results[1] else { return ([], false, 0) }
            return (record.usableWhenHanded, first !== second, record.dials)
        }.get()
        #expect(seen.0 == [true, true], "each waiter was handed a connection that takes streams")
        #expect(seen.1, "the second waiter got a fresh connection")
        #expect(seen.2 == 2)
        try await eventually { record.accepted == 2 && record.serverConnectionsClosed == 1 }
        try await loop.submit { record.slot!.close(reason: "done") }.get()
        try await eventually { record.serverConnectionsClosed == 2 }
        try await server.close()
    }

    @Test func aConnectionThePeerClosedIsDialedAgainAndItsOwnerHears() async throws {
        let record = Record()
        let server = try await listen(record)
        try await makeSlot(port: server.localAddress!.port!, record)
        try await loop.submit {
            record.slot!.onClose = { _ in record.ownerHeardCloses += 1 }
            record.slot!.withConnection(record.take)
        }.get()
        try await eventually { record.results.count == 1 && record.serverConnections.count == 1 }
        // The peer closes the connection.
        try await loop.submit { record.serverConnections[0].close() }.get()
        try await eventually { record.ownerHeardCloses == 1 }
        try await loop.submit { record.slot!.withConnection(record.take) }.get()
        try await eventually { record.results.count == 2 }
        #expect(try await loop.submit { (record.usableWhenHanded, record.dials, record.accepted) }.get() == ([true, true], 2, 2))
        try await loop.submit { record.slot!.close(reason: "done") }.get()
        try await server.close()
    }

    /// The etcd client through its slot: closed while its connection is
    /// being dialed, a call waiting for it fails with the client's reason
    /// (it used to get the closed connection and start its call on it).
    @Test func anEtcdCallWaitingWhenTheClientClosesFailsWithThatReason() async throws {
        let record = Record()
        let server = try await listen(record)
        let port = server.localAddress!.port!
        let loop = self.loop
        final class Outcome: @unchecked Sendable { var error: String? }  // touched on the loop only
        let outcome = Outcome()
        try await loop.submit {
            let client = EtcdClient(endpoints: [.init(host: "127.0.0.1", port: port)], eventLoop: loop)
            client.put(key: "k", value: "v") { result in
                if case .failure(let error) = result { outcome.error = error.message } else { outcome.error = "succeeded" }
            }
            client.close()
        }.get()
        try await eventually { outcome.error != nil }
        #expect(try await loop.submit { outcome.error }.get() == "the etcd client is closed")
        try await eventually { record.accepted == 1 && record.serverConnectionsClosed == 1 }
        try await server.close()
    }
}
