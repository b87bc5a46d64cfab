import MeshgateGRPC
import MeshgateGRPCCalls
import MeshgateHTTP2
import MeshgateTransport
import NIOCore
import NIOPosix
import Testing

/// `GRPCServerCall`'s request limits over real loopback sockets, between a
/// client `GRPCClientCall` and a server answering with `GRPCServerCall`s
/// that share one connection budget (as the gateway's own services do).
extension HTTP2DialerTests {
    /// Answers each call once the request ends with the number of messages
    /// it saw (as the status message), and records refusals.
    final class LimitedService: HTTP2ConnectionDelegate, @unchecked Sendable {
        let limits: GRPCServerCall.RequestLimits
        let budget: GRPCServerCallBudget
        var refusals: [GRPCServerCall.Refusal] = []
        var calls: [GRPCServerCall] = []

        init(limits: GRPCServerCall.RequestLimits, budgetBytes: Int) {
            self.limits = limits
            self.budget = GRPCServerCallBudget(limit: budgetBytes)
        }

        func http2(_ connection: HTTP2Connection, didReceiveRequest headers: HTTP2HeaderList, stream: Int32, endStream: Bool) -> HTTP2StreamDelegate? {
            let call = GRPCServerCall(connection: connection, stream: stream, headers: headers, path: headers[":path"] ?? "",
                                      limits: limits, budget: budget)
            call.onRefused = { self.refusals.append($0) }
            call.onEnd = { call.finish(GRPCStatus(.ok, "\(call.messagesReceived) messages")) }
            calls.append(call)
            return call
        }
    }

    func servicePair(_ service: LimitedService) async throws -> (Channel, HTTP2Connection) {
        let listener = try await listen { channel in
            channel.eventLoop.makeCompletedFuture {
                try channel.pipeline.syncOperations.addHandler(HTTP2Connection(role: .server, delegate: service))
            }
        }
        let result = try await dial(port: listener.localAddress!.port!, options: HTTP2DialOptions(connectTimeout: .seconds(2)), owner: Owner())
        guard case .success(let connection) = result else { throw HTTP2DialError("dial failed: \(result)") }
        return (listener, connection)
    }

    final class Statuses: @unchecked Sendable { var values: [Int: GRPCStatus] = [:] }

    /// Starts a call with `messages` request messages (the last ends the
    /// request when `end`), recording its status under `key`.
    func call(_ client: HTTP2Connection, _ statuses: Statuses, key: Int, messages: [[UInt8]], end: Bool = true) -> GRPCClientCall {
        let call = GRPCClientCall()
        call.onFinish = { statuses.values[key] = $0 }
        call.start(on: client, authority: "x", path: "/t.S/M", message: messages[0], endRequest: end && messages.count == 1, timeout: .seconds(5))
        for (i, message) in messages.enumerated().dropFirst() {
            call.send(message: message)
            if end && i == messages.count - 1 { call.endRequest() }
        }
        return call
    }

    @Test func aMessageOverTheLimitEndsTheCallAtItsLengthPrefix() async throws {
        let service = LimitedService(limits: .init(maxMessageBytes: 100, maxMessages: 1), budgetBytes: 1 << 20)
        let (listener, connection) = try await servicePair(service)
        nonisolated(unsafe) let client = connection
        let statuses = Statuses()
        try await loop.submit {
            _ = self.call(client, statuses, key: 0, messages: [[UInt8](repeating: 1, count: 100)])
        }.get()
        try await eventually { statuses.values.count == 1 }
        #expect(statuses.values[0]?.code == .ok && statuses.values[0]?.message == "1 messages", "a message at the limit passes")
        // 200 bytes with the request left open: the answer comes at the
        // length prefix, not when the client is done.
        let refused = Statuses()
        try await loop.submit {
            _ = self.call(client, refused, key: 0, messages: [[UInt8](repeating: 2, count: 200)], end: false)
        }.get()
        try await eventually { refused.values[0] != nil }
        #expect(refused.values[0]?.code == .resourceExhausted, "\(String(describing: refused.values[0]))")
        #expect(refused.values[0]?.message.contains("200 bytes") == true)
        #expect(try await loop.submit { service.refusals }.get() == [.messageTooLarge])
        try await loop.submit { client.close() }.get()
        try await listener.close()
    }

    @Test func aUnaryMethodRefusesASecondMessage() async throws {
        let service = LimitedService(limits: .init(maxMessageBytes: 100, maxMessages: 1), budgetBytes: 1 << 20)
        let (listener, connection) = try await servicePair(service)
        nonisolated(unsafe) let client = connection
        let statuses = Statuses()
        try await loop.submit {
            _ = self.call(client, statuses, key: 0, messages: [[1], [2]])
            _ = self.call(client, statuses, key: 1, messages: [[1]])
        }.get()
        try await eventually { statuses.values.count == 2 }
        #expect(statuses.values[0]?.code == .internal && statuses.values[0]?.message.contains("one request message") == true)
        #expect(statuses.values[1]?.code == .ok, "a call with its one message is answered")
        #expect(try await loop.submit { service.refusals }.get() == [.tooManyMessages])
        try await loop.submit { client.close() }.get()
        try await listener.close()
    }

    @Test func partialMessagesOnManyStreamsAreCappedByTheConnectionBudget() async throws {
        // Each stream sends 95 of a 100-byte message (5-byte prefix and 90
        // bytes) and stalls: the budget of 1,000 bytes holds ten of them.
        let service = LimitedService(limits: .init(maxMessageBytes: 100, maxMessages: 1), budgetBytes: 1000)
        let (listener, connection) = try await servicePair(service)
        nonisolated(unsafe) let client = connection
        let statuses = Statuses()
        try await loop.submit {
            for key in 0..<15 {
                let call = GRPCClientCall()
                call.onFinish = { statuses.values[key] = $0 }
                _ = client.openStream(
                    headers: [(":method", "POST"), (":scheme", "http"), (":authority", "x"), (":path", "/t.S/M"), ("content-type", "application/grpc")],
                    endStream: false, delegate: call)
                    .map { id in
                        var partial = ByteBuffer()
                        partial.writeInteger(UInt8(0))
                        partial.writeInteger(UInt32(100))
                        partial.writeBytes([UInt8](repeating: 3, count: 90))
                        client.send(data: partial, stream: id)
                    }
            }
        }.get()
        try await eventually { statuses.values.count == 5 }
        let refusals = try await loop.submit { service.refusals }.get()
        #expect(refusals == [GRPCServerCall.Refusal](repeating: .connectionBufferFull, count: 5))
        #expect(statuses.values.values.allSatisfy { $0.code == .resourceExhausted })
        #expect(try await loop.submit { service.budget.held }.get() == 950, "ten partial messages held, no more")
        try await loop.submit { client.close() }.get()
        try await eventually { service.budget.held == 0 }
        try await listener.close()
    }

    /// Answers every request with a response message that declares 100 MB
    /// and never finishes it.
    final class HugeAnswerServer: HTTP2ConnectionDelegate, HTTP2StreamDelegate, @unchecked Sendable {
        func http2(_ connection: HTTP2Connection, didReceiveRequest headers: HTTP2HeaderList, stream: Int32, endStream: Bool) -> HTTP2StreamDelegate? {
            connection.sendResponseHeaders(stream: stream, headers: [(":status", "200"), ("content-type", "application/grpc")], endStream: false)
            var prefix = ByteBuffer()
            prefix.writeInteger(UInt8(0))
            prefix.writeInteger(UInt32(100_000_000))
            prefix.writeBytes([UInt8](repeating: 9, count: 1000))
            connection.send(data: prefix, stream: stream)
            return self
        }
        func http2(_ connection: HTTP2Connection, stream: Int32, didReceiveHeaders headers: HTTP2HeaderList, isTrailers: Bool, endStream: Bool) {}
        func http2(_ connection: HTTP2Connection, stream: Int32, didReceiveData data: ByteBuffer) {
            connection.consume(stream: stream, bytes: data.readableBytes)
        }
        func http2(_ connection: HTTP2Connection, didReceiveEndOfStream stream: Int32) {}
        func http2(_ connection: HTTP2Connection, stream: Int32, didWriteData bytes: Int) {}
        func http2(_ connection: HTTP2Connection, stream: Int32, didCloseWith reason: HTTP2StreamCloseReason) {}
    }

    @Test func aClientCallEndsAtAResponseMessageOverItsLimit() async throws {
        let listener = try await listen { channel in
            channel.eventLoop.makeCompletedFuture {
                try channel.pipeline.syncOperations.addHandler(HTTP2Connection(role: .server, delegate: HugeAnswerServer()))
            }
        }
        let result = try await dial(port: listener.localAddress!.port!, options: HTTP2DialOptions(connectTimeout: .seconds(2)), owner: Owner())
        guard case .success(let connection) = result else { throw HTTP2DialError("dial failed: \(result)") }
        nonisolated(unsafe) let client = connection
        let statuses = Statuses()
        try await loop.submit {
            let call = GRPCClientCall(maxResponseMessageBytes: 4096)
            call.onFinish = { statuses.values[0] = $0 }
            call.start(on: client, authority: "x", path: "/t.S/M", message: [1], endRequest: true, timeout: .seconds(5))
        }.get()
        try await eventually { statuses.values[0] != nil }
        #expect(statuses.values[0]?.code == .resourceExhausted, "\(String(describing: statuses.values[0]))")
        #expect(statuses.values[0]?.message.contains("100000000 bytes") == true)
        try await loop.submit { client.close() }.get()
        try await listener.close()
    }
}
