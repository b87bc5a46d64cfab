import MeshgateGRPC
import MeshgateHTTP2
import NIOCore
import SwiftProtobuf

/// One RPC answered locally on an HTTP/2 server connection (the gateway's
/// own health and reflection services, the sample service): deframes
/// request messages, frames response messages, ends with a status.
/// Handlers set the `on…` closures; everything runs on the connection's
/// event loop.
///
/// What a client can make it hold is bounded by its `RequestLimits`: a
/// message over `maxMessageBytes` ends the call with RESOURCE_EXHAUSTED as
/// soon as its length prefix arrives; more messages than `maxMessages`
/// end it with INTERNAL (a unary method takes one, as gRPC servers
/// enforce); and, when a message fits well inside the stream's window,
/// window credit goes back only as whole messages are handed to the
/// handler, so the bytes of a message still arriving stay the client's
/// problem (its window), not the gateway's memory. A `GRPCServerCallBudget`
/// shared by a connection's calls caps what they hold together.
public final class GRPCServerCall: HTTP2StreamDelegate {
    /// What one call accepts from its client.
    public struct RequestLimits: Sendable {
        /// The largest request message (its declared length).
        public var maxMessageBytes: Int
        /// Request messages the method takes; nil: any number (streaming).
        public var maxMessages: Int?

        public init(maxMessageBytes: Int, maxMessages: Int? = nil) {
            self.maxMessageBytes = maxMessageBytes
            self.maxMessages = maxMessages
        }

        /// 64 MiB, any number of messages: what the sample service takes
        /// (its tests send messages past gRPC's usual 4 MiB).
        public static let `default` = RequestLimits(maxMessageBytes: 64 << 20)
    }

    public let connection: HTTP2Connection
    public let stream: Int32
    public let headers: HTTP2HeaderList
    public let path: String
    /// Extra fields for the response head (e.g. which replica answered).
    public var responseHeaders: HTTP2HeaderList = []

    public var onMessage: ((ByteBuffer) -> Void)?
    public var onEnd: (() -> Void)?
    /// The stream closed, for whatever reason; called once.
    public var onClose: (() -> Void)?
    /// The peer reset the stream (or vanished) before the call finished.
    public var onCancelled: (() -> Void)?
    /// Called once when queued output has drained below `lowWater`.
    public var onDrained: (() -> Void)?
    /// The handler ended the call with this status.
    public var onFinish: ((GRPCStatus) -> Void)?

    public let limits: RequestLimits
    /// The connection's share for its own-service calls; nil: no cap
    /// beyond `limits`.
    public let budget: GRPCServerCallBudget?
    private var deframer: GRPCMessageDeframer
    /// Request messages handed to the handler so far.
    public private(set) var messagesReceived = 0
    /// Received request bytes not yet given back as window credit (and
    /// held from `budget`): the message being assembled.
    private var uncredited = 0
    /// Credit goes back per whole message only when a message fits in half
    /// the stream's window; a larger limit would stall a message that
    /// needs more than the window, so such calls credit bytes on arrival
    /// (their memory is bounded by the window and the message limit).
    private let creditsPerMessage: Bool
    /// The call's own cost was taken from `budget` (`admitted`); false
    /// when the connection's budget had no room for another call.
    public let admitted: Bool
    public private(set) var headersSent = false
    public private(set) var finished = false
    public private(set) var closed = false

    public static let lowWater = 256 * 1024

    public init(connection: HTTP2Connection, stream: Int32, headers: HTTP2HeaderList, path: String,
                limits: RequestLimits = .default, budget: GRPCServerCallBudget? = nil) {
        self.connection = connection
        self.stream = stream
        self.headers = headers
        self.path = path
        self.limits = limits
        self.budget = budget
        self.deframer = GRPCMessageDeframer(maxMessageSize: limits.maxMessageBytes)
        self.creditsPerMessage = limits.maxMessageBytes + GRPCMessageDeframer.prefixSize <= Int(connection.settings.initialStreamWindowSize) / 2
        self.admitted = budget?.take(GRPCServerCallBudget.perCallBytes) ?? true
    }

    /// Ends a call the connection's budget did not admit (`admitted`
    /// false) with RESOURCE_EXHAUSTED; true when it did so.
    public func refuseUnlessAdmitted() -> Bool {
        guard !admitted, let budget else { return false }
        refuse(.connectionBufferFull, GRPCStatus(.resourceExhausted,
            "this connection has \(budget.limit / GRPCServerCallBudget.perCallBytes) calls or more to the gateway's own services open, or their requests passed \(budget.limit) bytes"))
        return true
    }

    public var queuedBytes: Int { connection.queuedBytes(stream: stream) }

    public func sendHeaders() {
        guard !headersSent, !finished, !closed else { return }
        headersSent = true
        var head: HTTP2HeaderList = [(":status", "200"), ("content-type", "application/grpc")]
        for field in responseHeaders { head.append(field.name, field.value) }
        connection.sendResponseHeaders(stream: stream, headers: head, endStream: false)
    }

    public func send(_ message: some SwiftProtobuf.Message) {
        guard !finished, !closed else { return }
        sendHeaders()
        let bytes: [UInt8] = (try? message.serializedBytes()) ?? []
        connection.send(data: GRPCMessageDeframer.frame(bytes), stream: stream)
    }

    /// Sends one message already serialized (a proxy passing bytes on).
    public func send(bytes: [UInt8]) {
        guard !finished, !closed else { return }
        sendHeaders()
        connection.send(data: GRPCMessageDeframer.frame(bytes), stream: stream)
    }

    /// Ends the call with `status` (Trailers-Only when nothing was sent yet).
    public func finish(_ status: GRPCStatus = GRPCStatus(.ok, "")) {
        guard !finished, !closed else { return }
        finished = true
        // Nothing more is read: what is held goes back to the client.
        creditAll()
        deframer = GRPCMessageDeframer(maxMessageSize: limits.maxMessageBytes)
        onFinish?(status)
        onFinish = nil
        var trailers: HTTP2HeaderList = [("grpc-status", String(status.code.rawValue))]
        if !status.message.isEmpty { trailers.append("grpc-message", GRPCMessageEncoding.percentEncode(status.message)) }
        if headersSent {
            connection.sendEnd(stream: stream, trailers: trailers)
        } else {
            var head: HTTP2HeaderList = [(":status", "200"), ("content-type", "application/grpc")]
            for field in responseHeaders { head.append(field.name, field.value) }
            for field in trailers { head.append(field.name, field.value) }
            headersSent = true
            connection.sendResponseHeaders(stream: stream, headers: head, endStream: true)
        }
    }

    public func decode<M: SwiftProtobuf.Message>(_ type: M.Type, _ buffer: ByteBuffer) -> M? {
        try? M(serializedBytes: Array(buffer.readableBytesView))
    }

    // MARK: HTTP2StreamDelegate

    public func http2(_ connection: HTTP2Connection, stream: Int32, didReceiveHeaders headers: HTTP2HeaderList, isTrailers: Bool, endStream: Bool) {
        if endStream { onEnd?() }
    }

    public func http2(_ connection: HTTP2Connection, stream: Int32, didReceiveData data: ByteBuffer) {
        let count = data.readableBytes
        guard !finished, creditsPerMessage else {
            // Answered already (the rest is read and dropped), or a call
            // whose messages may outgrow the window: credit at once.
            connection.consume(stream: stream, bytes: count)
            if !finished { deliver(data) }
            return
        }
        if let budget, !budget.take(count) {
            connection.consume(stream: stream, bytes: count)
            refuse(.connectionBufferFull, GRPCStatus(.resourceExhausted,
                "the requests held for this connection's calls to the gateway's own services passed \(budget.limit) bytes"))
            return
        }
        uncredited += count
        deliver(data)
    }

    /// Deframes and hands on every whole message in `data`, crediting each
    /// as it goes; a message over the limits ends the call.
    private func deliver(_ data: ByteBuffer) {
        deframer.append(data)
        do {
            while !finished, let message = try deframer.next() {
                messagesReceived += 1
                if let maximum = limits.maxMessages, messagesReceived > maximum {
                    refuse(.tooManyMessages, GRPCStatus(.internal, "\(path) takes \(maximum == 1 ? "one request message" : "at most \(maximum) request messages"); the client sent more"))
                    return
                }
                credit(GRPCMessageDeframer.prefixSize + message.payload.readableBytes)
                onMessage?(message.payload)
            }
        } catch GRPCMessageDeframer.DeframeError.messageTooLarge(let size, let limit) {
            refuse(.messageTooLarge, GRPCStatus(.resourceExhausted, "request message of \(size) bytes exceeds \(path)'s limit of \(limit) bytes"))
        } catch {
            finish(GRPCStatus(.internal, "\(error)"))
        }
    }

    /// Why a call ended for passing one of its limits (`onRefused`).
    public enum Refusal: Int, CaseIterable, Sendable {
        /// A request message over `limits.maxMessageBytes`.
        case messageTooLarge
        /// More messages than `limits.maxMessages`.
        case tooManyMessages
        /// The connection's `budget` had no room for more bytes.
        case connectionBufferFull
    }

    /// Called once when the call ends for passing one of its limits.
    public var onRefused: ((Refusal) -> Void)?

    private func refuse(_ refusal: Refusal, _ status: GRPCStatus) {
        onRefused?(refusal)
        onRefused = nil
        finish(status)
    }

    private func credit(_ bytes: Int) {
        guard creditsPerMessage, bytes > 0 else { return }
        let n = min(bytes, uncredited)
        uncredited -= n
        budget?.give(n)
        connection.consume(stream: stream, bytes: n)
    }

    private func creditAll() {
        credit(uncredited)
    }

    public func http2(_ connection: HTTP2Connection, didReceiveEndOfStream stream: Int32) {
        onEnd?()
    }

    public func http2(_ connection: HTTP2Connection, stream: Int32, didWriteData bytes: Int) {
        if let drained = onDrained, queuedBytes < Self.lowWater {
            onDrained = nil
            drained()
        }
    }

    public func http2(_ connection: HTTP2Connection, stream: Int32, didCloseWith reason: HTTP2StreamCloseReason) {
        closed = true
        // The connection takes back the window of a closed stream itself;
        // the budget's share is ours to return.
        budget?.give(uncredited + (admitted && budget != nil ? GRPCServerCallBudget.perCallBytes : 0))
        uncredited = 0
        if !finished {
            switch reason {
            case .reset(_, local: false), .connectionLost: onCancelled?()
            default: break
            }
        }
        let close = onClose
        onMessage = nil
        onEnd = nil
        onDrained = nil
        onClose = nil
        onCancelled = nil
        onRefused = nil
        close?()
    }
}

/// What all of one connection's locally answered calls may hold at once:
/// their request bytes (partial messages, requests queued for an answer)
/// and `perCallBytes` per open call. With a message limit per call, this
/// bounds what a client can park in the gateway over many streams. Used on
/// the connection's event loop only.
public final class GRPCServerCallBudget {
    /// What each open call costs beyond its request bytes (its objects,
    /// its nghttp2 stream): taken while the call is open, so a budget
    /// also caps the calls a connection keeps open (Watch streams, calls
    /// never ended).
    public static let perCallBytes = 2048

    public let limit: Int
    public private(set) var held = 0

    public init(limit: Int) { self.limit = limit }

    /// Takes `bytes`, or returns false (taking nothing) past the limit.
    public func take(_ bytes: Int) -> Bool {
        guard held + bytes <= limit else { return false }
        held += bytes
        return true
    }

    public func give(_ bytes: Int) {
        held -= bytes
        assert(held >= 0, "gave back more than was taken")
    }
}
