@testable import MeshgateHTTP2
import MeshgateTransport
import NIOCore
import NIOPosix
import Testing

/// The header-block meter on its own: RFC 9113's count, and the field
/// that passes a limit.
@Suite struct HTTP2HeaderBlockMeterTests {
    @Test func countsNamesValuesAnd32PerField() {
        var meter = HTTP2HeaderBlockMeter()
        let first = meter.admit(nameAndValueBytes: 10, maxBytes: 100, maxFields: 10)
        let second = meter.admit(nameAndValueBytes: 26, maxBytes: 100, maxFields: 10)
        #expect(first && second)
        #expect(meter.bytes == 100 && meter.fields == 2 && meter.violation == nil, "exactly at the limit is within it")
        let third = meter.admit(nameAndValueBytes: 0, maxBytes: 100, maxFields: 10)
        #expect(!third)
        #expect(meter.violation == .bytes(limit: 100))
        let afterwards = meter.admit(nameAndValueBytes: 0, maxBytes: 1000, maxFields: 10)
        #expect(!afterwards, "once over, every later field is dropped")
        meter.reset()
        let fresh = meter.admit(nameAndValueBytes: 1, maxBytes: 100, maxFields: 10)
        #expect(fresh && meter.fields == 1, "a new block starts afresh")
    }

    @Test func theFieldPastTheCountIsRefused() {
        var meter = HTTP2HeaderBlockMeter()
        for _ in 0..<3 {
            let admitted = meter.admit(nameAndValueBytes: 1, maxBytes: 1 << 20, maxFields: 3)
            #expect(admitted)
        }
        let fourth = meter.admit(nameAndValueBytes: 1, maxBytes: 1 << 20, maxFields: 3)
        #expect(!fourth)
        #expect(meter.violation == .fields(limit: 3))
    }
}

/// Header limits between two real `HTTP2Connection`s over loopback: a
/// request head over the server's limits is answered by its delegate and
/// nothing of it is kept; trailers and response heads over a limit reset
/// their stream with ENHANCE_YOUR_CALM; other streams go on.
extension HTTP2DialerTests {
    /// Answers heads within the limits with an echo; answers a refused
    /// request head with RESOURCE_EXHAUSTED, as the gateway does.
    final class LimitedServer: HTTP2ConnectionDelegate, @unchecked Sendable {
        let echo = EchoServer()
        var refusals: [(HTTP2HeaderLimitViolation, answerable: Bool)] = []
        var bigResponseHead = false

        func http2(_ connection: HTTP2Connection, didReceiveRequest headers: HTTP2HeaderList, stream: Int32, endStream: Bool) -> HTTP2StreamDelegate? {
            guard bigResponseHead else { return echo.http2(connection, didReceiveRequest: headers, stream: stream, endStream: endStream) }
            var head: HTTP2HeaderList = [(":status", "200"), ("content-type", "application/grpc")]
            for i in 0..<50 { head.append("x-big-\(i)", String(repeating: "v", count: 100)) }
            connection.sendResponseHeaders(stream: stream, headers: head, endStream: false)
            return echo
        }

        func http2(_ connection: HTTP2Connection, didRefuseHeaderBlock violation: HTTP2HeaderLimitViolation, stream: Int32, answerable: Bool) {
            refusals.append((violation, answerable))
            guard answerable else { return }
            connection.sendResponseHeaders(stream: stream, headers: [(":status", "200"), ("content-type", "application/grpc"),
                                                                    ("grpc-status", "8")], endStream: true)
        }
    }

    static let requestHead: HTTP2HeaderList = [(":method", "POST"), (":scheme", "http"), (":authority", "x"), (":path", "/a.B/C"),
                                               ("content-type", "application/grpc")]

    func limitedPair(_ server: LimitedServer, serverSettings: HTTP2Settings, clientSettings: HTTP2Settings = HTTP2Settings()) async throws
        -> (Channel, HTTP2Connection) {
        let listener = try await listen { channel in
            channel.eventLoop.makeCompletedFuture {
                try channel.pipeline.syncOperations.addHandler(HTTP2Connection(role: .server, settings: serverSettings, delegate: server))
            }
        }
        let result = try await dial(port: listener.localAddress!.port!,
                                    options: HTTP2DialOptions(connectTimeout: .seconds(2), settings: clientSettings), owner: Owner())
        guard case .success(let connection) = result else { throw HTTP2DialError("dial failed: \(result)") }
        return (listener, connection)
    }

    @Test func aRequestHeadOverTheFieldCountIsAnsweredAndTheConnectionGoesOn() async throws {
        var settings = HTTP2Settings()
        settings.maxHeaderFields = 10
        let server = LimitedServer()
        let (listener, connection) = try await limitedPair(server, serverSettings: settings)
        nonisolated(unsafe) let client = connection
        let refused = Collector(), ok = Collector()
        try await loop.submit {
            var head = Self.requestHead
            for i in 0..<6 { head.append("x-field-\(i)", "v") }   // 11 fields
            _ = client.openStream(headers: head, endStream: false, delegate: refused)!
            var fits = Self.requestHead
            for i in 0..<5 { fits.append("x-field-\(i)", "v") }   // 10 fields
            let id = client.openStream(headers: fits, endStream: false, delegate: ok)!
            client.send(data: ByteBuffer(repeating: 7, count: 1000), stream: id)
            client.sendEnd(stream: id, trailers: nil)
        }.get()
        try await eventually { refused.closed != nil && ok.closed != nil }
        #expect(refused.head?["grpc-status"] == "8", "the delegate's answer reached the client")
        #expect(ok.closed == .finished && ok.body == 1000 && ok.trailers?["grpc-status"] == "0", "the other stream is unaffected")
        let refusals = try await loop.submit { server.refusals.map { "\($0.0) \($0.answerable)" } }.get()
        #expect(refusals == ["\(HTTP2HeaderLimitViolation.fields(limit: 10)) true"])
        #expect(try await loop.submit { server.echo.heads.count }.get() == 1, "the refused head never became a request")
        try await loop.submit { client.close() }.get()
        try await listener.close()
    }

    @Test func anIndexedFieldRepeatedPastTheByteLimitIsRefusedWhileDecoding() async throws {
        // nghttp2's encoder indexes the field once and then sends it as one
        // byte per repeat: the block on the wire is small, decoded it is
        // 200 x 532 bytes. The server must stop at its limit.
        var settings = HTTP2Settings(maxHeaderListSize: 16 << 10)
        settings.maxHeaderFields = 100_000
        let server = LimitedServer()
        // The client's own send limit must let the block out.
        var clientSettings = HTTP2Settings(maxHeaderListSize: 1 << 20)
        clientSettings.maxHeaderFields = 100_000
        let (listener, connection) = try await limitedPair(server, serverSettings: settings, clientSettings: clientSettings)
        nonisolated(unsafe) let client = connection
        let refused = Collector()
        try await loop.submit {
            var head = Self.requestHead
            for _ in 0..<200 { head.append("x-bomb", String(repeating: "b", count: 500)) }
            _ = client.openStream(headers: head, endStream: true, delegate: refused)
        }.get()
        try await eventually { refused.closed != nil }
        #expect(refused.head?["grpc-status"] == "8")
        let refusals = try await loop.submit { server.refusals.map(\.0) }.get()
        #expect(refusals == [.bytes(limit: 16 << 10)])
        try await loop.submit { client.close() }.get()
        try await listener.close()
    }

    @Test func aRequestHeadDecodingPastTheCutoffIsResetWithoutAnAnswer() async throws {
        // 2,000 references to one 500-byte field: about 1 MB decoded from
        // a block of a few KB, past the cutoff (512 KiB here): an
        // amplification, cut off with RST_STREAM instead of decoded and
        // checked to its end. The connection goes on.
        var settings = HTTP2Settings(maxHeaderListSize: 16 << 10)
        settings.maxHeaderFields = 100_000
        let server = LimitedServer()
        var clientSettings = HTTP2Settings(maxHeaderListSize: 4 << 20)
        clientSettings.maxHeaderFields = 100_000
        let (listener, connection) = try await limitedPair(server, serverSettings: settings, clientSettings: clientSettings)
        nonisolated(unsafe) let client = connection
        let bomb = Collector(), after = Collector()
        try await loop.submit {
            var head = Self.requestHead
            for _ in 0..<2000 { head.append("x-bomb", String(repeating: "b", count: 500)) }
            _ = client.openStream(headers: head, endStream: true, delegate: bomb)
        }.get()
        try await eventually { bomb.closed != nil }
        #expect(bomb.closed == .reset(code: .enhanceYourCalm, local: false))
        #expect(bomb.head == nil, "no answer: the stream was cut off")
        #expect(try await loop.submit { server.refusals.map { "\($0.0) \($0.answerable)" } }.get()
                == ["\(HTTP2HeaderLimitViolation.bytes(limit: 16 << 10)) false"])
        try await loop.submit {
            _ = client.openStream(headers: Self.requestHead, endStream: true, delegate: after)
        }.get()
        try await eventually { after.closed != nil }
        #expect(after.closed == .finished && after.trailers?["grpc-status"] == "0", "HPACK stayed in step: the next stream is served")
        try await loop.submit { client.close() }.get()
        try await listener.close()
    }

    @Test func trailersOverTheLimitResetTheirStream() async throws {
        var settings = HTTP2Settings(maxHeaderListSize: 1024)
        settings.maxHeaderFields = 100
        let server = LimitedServer()
        let (listener, connection) = try await limitedPair(server, serverSettings: settings)
        nonisolated(unsafe) let client = connection
        let stream = Collector()
        try await loop.submit {
            let id = client.openStream(headers: Self.requestHead, endStream: false, delegate: stream)!
            client.sendEnd(stream: id, trailers: [("x-trailer", String(repeating: "t", count: 2000))])
        }.get()
        try await eventually { stream.closed != nil && server.echo.closeReasons.count == 1 }
        #expect(stream.closed == .reset(code: .enhanceYourCalm, local: false))
        #expect(try await loop.submit { server.echo.closeReasons } .get() == [.headersTooLarge(.bytes(limit: 1024))])
        #expect(try await loop.submit { server.refusals.map(\.answerable) }.get() == [false])
        try await loop.submit { client.close() }.get()
        try await listener.close()
    }

    @Test func aResponseHeadOverTheClientsLimitResetsTheStream() async throws {
        let server = LimitedServer()
        server.bigResponseHead = true   // 52 fields, about 7 KB
        var clientSettings = HTTP2Settings(maxHeaderListSize: 4096)
        clientSettings.maxHeaderFields = 100
        let (listener, connection) = try await limitedPair(server, serverSettings: HTTP2Settings(), clientSettings: clientSettings)
        nonisolated(unsafe) let client = connection
        let stream = Collector()
        try await loop.submit {
            _ = client.openStream(headers: Self.requestHead, endStream: false, delegate: stream)
        }.get()
        try await eventually { stream.closed != nil && server.echo.closeReasons.count == 1 }
        #expect(stream.closed == .headersTooLarge(.bytes(limit: 4096)))
        #expect(stream.head == nil, "nothing of the block reached the stream")
        #expect(try await loop.submit { server.echo.closeReasons }.get() == [.reset(code: .enhanceYourCalm, local: false)])
        try await loop.submit { client.close() }.get()
        try await listener.close()
    }
}
