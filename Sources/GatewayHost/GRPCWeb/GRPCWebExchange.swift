import NIOCore

/// The decisions of one gRPC-Web exchange, as values: `GRPCWebStream`
/// feeds in what happened (the call's head, its end, a malformed request
/// body, the request's end) and carries out what comes back, so every
/// rule here is tested without a socket (`GRPCWebExchangeTests`). Four
/// flags (`requestEnded`, `headSent`, `responseEnded`, `cutOff`) became
/// the two phases below.
struct GRPCWebExchange: Equatable {
    /// The browser's request.
    enum Request: Equatable {
        /// Body bytes may still come.
        case open
        /// It ended (END_STREAM, or the last HTTP/1.1 chunk).
        case ended
    }

    /// The answer to the browser.
    enum Response: Equatable {
        /// Nothing of it left yet: a local answer may still replace it.
        case notStarted
        /// The head left; messages may follow.
        case headSent
        /// Its end left (the trailer frame, or a Trailers-Only head).
        case ended
        /// Ended here, not by the call (a malformed request body, or a
        /// status that could not follow in-band): what the call still
        /// sends is dropped.
        case cutOff
    }

    private(set) var request = Request.open
    private(set) var response = Response.notStarted

    /// Nothing more of the answer goes out.
    var responseEnded: Bool { response == .ended || response == .cutOff }
    /// What the call sends now is dropped.
    var dropsCallOutput: Bool { response == .cutOff }

    // MARK: The answer (from the call)

    /// The call's head: false when it is dropped.
    mutating func responseHead(endStream: Bool) -> Bool {
        guard response != .cutOff else { return false }
        response = endStream ? .ended : .headSent
        return true
    }

    enum ResponseEnd: Equatable {
        /// Cut off or ended already: nothing.
        case drop
        /// The trailer frame goes after the queued messages.
        case sendTrailerFrame
        /// A status after part of a message (a deadline mid-message)
        /// cannot follow in-band, where the client would read it as the
        /// message's rest: the stream breaks instead (`abort`).
        case abort
    }

    /// The call's end; `atMessageBoundary`: its messages so far are whole.
    mutating func responseEnd(atMessageBoundary: Bool) -> ResponseEnd {
        guard !responseEnded else { return .drop }
        guard atMessageBoundary else {
            response = .cutOff
            return .abort
        }
        response = .ended
        return .sendTrailerFrame
    }

    enum Malformed: Equatable {
        /// Nothing of the answer left: INVALID_ARGUMENT, Trailers-Only.
        case answerInvalidArgument
        /// The answer began: the stream breaks.
        case abort
    }

    /// The request body is not what its content type says.
    mutating func requestMalformed() -> Malformed {
        let started = response != .notStarted
        response = .cutOff
        return started ? .abort : .answerInvalidArgument
    }

    // MARK: The request (from the transport)

    /// The request ended with its head: the call knows from its start.
    mutating func requestEndedWithHead() { request = .ended }

    enum RequestEnd: Equatable {
        /// It had ended before: nothing.
        case ignore
        /// The answer was cut off: the call is gone; only the exchange's
        /// end (HTTP/1.1) may follow.
        case endAfterCutOff
        /// The body ends inside a base64 group: a malformed request.
        case malformed
        /// The call hears of the end.
        case passToCall
    }

    /// The request's end; `decoderAtBoundary`: a text body's base64
    /// ended on a whole group (always true for binary bodies).
    mutating func requestEnd(decoderAtBoundary: Bool) -> RequestEnd {
        guard request == .open else { return .ignore }
        request = .ended
        if response == .cutOff { return .endAfterCutOff }
        return decoderAtBoundary ? .passToCall : .malformed
    }

    enum HTTP1Next: Equatable {
        /// The answer goes on.
        case wait
        /// The answer is out, the request is not: the call is let go and
        /// the request's rest is read and dropped (as an HTTP/2 stream
        /// waits for END_STREAM).
        case drainRequest
        /// Both ended: the connection takes the next request.
        case exchangeDone
    }

    /// HTTP/1.1 has no stream to close: what follows an answer's end, or
    /// a request's end after the answer's.
    var http1Next: HTTP1Next {
        guard responseEnded else { return .wait }
        return request == .ended ? .exchangeDone : .drainRequest
    }
}

/// Response flow control: the wire bytes handed to the transport (base64
/// for text, the trailer frame added) and the call's bytes among them, in
/// order, so that what the client took maps back to credit for the call.
struct GRPCWebResponseCredit {
    private var inFlight = CircularBuffer<(wire: Int, original: Int)>()

    mutating func sent(wire: Int, original: Int) {
        inFlight.append((wire, original))
    }

    /// The client took `wire` bytes: the call's bytes among them (a part
    /// of a chunk in proportion).
    mutating func took(wire: Int) -> Int {
        var left = wire
        var original = 0
        while left > 0, var first = inFlight.first {
            if left >= first.wire {
                left -= first.wire
                original += first.original
                inFlight.removeFirst()
            } else {
                let part = first.original * left / first.wire
                first.wire -= left
                first.original -= part
                original += part
                inFlight[inFlight.startIndex] = first
                left = 0
            }
        }
        return original
    }
}

/// Request flow control of a text body over HTTP/2: wire (base64) bytes
/// received and the bytes decoded from them that the call has not
/// credited yet; the call's credit in decoded bytes maps back to wire
/// bytes for the client's window.
struct GRPCWebRequestCredit: Equatable {
    private(set) var uncreditedWire = 0
    private(set) var uncreditedDecoded = 0

    mutating func received(wire: Int, decoded: Int) {
        uncreditedWire += wire
        uncreditedDecoded += decoded
    }

    /// The call took `decoded` bytes: the wire bytes to credit (all that
    /// is left once the call has taken all it was given).
    mutating func consumed(decoded: Int) -> Int {
        guard uncreditedDecoded > 0 else { return 0 }
        let taken = min(decoded, uncreditedDecoded)
        let wire = taken == uncreditedDecoded ? uncreditedWire : uncreditedWire * taken / uncreditedDecoded
        uncreditedDecoded -= taken
        uncreditedWire -= wire
        return wire
    }
}

/// HTTP/1.1 has no window: reading stops while the call has more than
/// `limit` request bytes it has not taken, and goes on once it is down to
/// half of that.
struct HTTP1ReadWindow: Equatable {
    /// HTTP/2's default stream window: the same bound for HTTP/1.1.
    static let defaultLimit = 1 << 20

    let limit: Int
    private(set) var unconsumed = 0
    private(set) var paused = false

    init(limit: Int = HTTP1ReadWindow.defaultLimit) { self.limit = limit }

    /// `bytes` went to the call: true when reading must pause now.
    mutating func received(_ bytes: Int) -> Bool {
        unconsumed += bytes
        guard !paused, unconsumed > limit else { return false }
        paused = true
        return true
    }

    /// The call took `bytes`: true when reading must resume now.
    mutating func consumed(_ bytes: Int) -> Bool {
        unconsumed = max(0, unconsumed - bytes)
        guard paused, unconsumed <= limit / 2 else { return false }
        paused = false
        return true
    }

    /// The request's rest is drained (reading resumes regardless).
    mutating func stopCounting() { paused = false }
}

/// The decisions of a gRPC-Web HTTP/1.1 connection (`GRPCWebHTTP1Handler`)
/// across its exchanges, as a value: what answers a request head, whether
/// the connection is kept after an exchange, and what a drain does. The
/// handler carries them out (writes, timers, the close).
struct GRPCWebHTTP1Connection: Equatable {
    /// What the connection is doing.
    enum Exchange: Equatable {
        /// Between exchanges, or before a request head is complete: the
        /// connection waits on the client (the idle timer runs).
        case none
        /// A request answered here (preflight, refusal): its body is read
        /// and dropped until its end.
        case answeredLocally
        /// A call (`GRPCWebStream`) is under way.
        case call
    }

    /// What answers a request head.
    enum Route: Equatable {
        /// OPTIONS: the CORS preflight, answered here.
        case preflight
        /// Not a POST of a gRPC-Web content type: 415, answered here.
        case unsupported
        /// A call.
        case call
    }

    /// After an exchange (or a local answer) ended.
    enum Next: Equatable {
        /// Keep the connection for the next request (the idle timer runs).
        case awaitNextRequest
        /// Close it.
        case close
    }

    private(set) var exchange = Exchange.none
    /// The current request asked to keep the connection, and the gateway
    /// is not draining.
    private(set) var keepAlive = true
    private(set) var draining = false

    static func route(isOptions: Bool, isPost: Bool, isGRPCWeb: Bool) -> Route {
        if isOptions { return .preflight }
        return isPost && isGRPCWeb ? .call : .unsupported
    }

    /// A request head arrived; `route` answers it.
    mutating func requestHead(keepAlive requested: Bool, route: Route) {
        keepAlive = requested && !draining
        exchange = route == .call ? .call : .answeredLocally
    }

    /// A request's end: after a local answer, the exchange is over (nil:
    /// the call's stream decides).
    mutating func requestEnd() -> Next? {
        guard exchange == .answeredLocally else { return nil }
        return exchangeEnded(closeConnection: false)
    }

    /// The exchange is over, or cannot go on (`closeConnection`).
    mutating func exchangeEnded(closeConnection: Bool) -> Next {
        exchange = .none
        return closeConnection || !keepAlive ? .close : .awaitNextRequest
    }

    /// The gateway drains: no further exchange. True: close now (no call
    /// under way); otherwise the connection closes when the call ends.
    mutating func beginGracefulShutdown() -> Bool {
        draining = true
        keepAlive = false
        return exchange != .call
    }
}
