import MeshgateGRPC
import MeshgateGRPCCalls
import MeshgateHTTP2

/// The decisions of one shadow (mirrored) copy of a call (`ShadowStream`),
/// as a value: events go in (request bytes and the request's end from the
/// call, a connection or a failed connect from the pool, the upstream
/// stream's status and close, a give-up) and each says what the shadow
/// must do. `ShadowStream` keeps the I/O (the bytes it holds, the stream,
/// the plugin's `done`) and carries the answers out. It replaces a state
/// enum and seven flags and optionals (`pendingBytes`, `requestEnded`,
/// `status`, `abandoned`, `transportFailure`, `silenced`, `finished`), so
/// that `ShadowStreamStateMachineTests` checks without a socket that the
/// result is reported once, never to a silenced plugin, and that the
/// shadow gives up rather than hold more than its buffer limit.
struct ShadowStreamStateMachine: Equatable {
    enum Phase: Equatable {
        /// In the pool's queue for a connection: the request's bytes so
        /// far are held (`heldChunks` buffers, `heldBytes` in all).
        case waiting(heldBytes: Int, heldChunks: Int)
        /// Its upstream stream is open: request bytes go straight to it.
        case streaming
        /// Its stream could not be opened; it ends on the loop's next
        /// turn, since the pool may hand it a connection inside
        /// call_start_shadow and the plugin's `done` must not run before
        /// that returned.
        case endingAfterOpenFailed
        /// Over: its result went out (or was kept from a silenced plugin).
        case ended
    }

    /// The most request bytes the shadow holds (while waiting) or has
    /// queued on its stream: past it, it gives up.
    let bufferLimit: Int
    private(set) var phase = Phase.waiting(heldBytes: 0, heldChunks: 0)
    private(set) var requestEnded: Bool
    /// The request ended with trailers: the stream cannot open with
    /// END_STREAM on its head.
    private(set) var requestHasTrailers = false
    /// The upstream's grpc-status, or the one a reset stands for.
    private(set) var status: GRPCStatusCode?
    /// Given up (deadline, buffer limit, incomplete request, shutdown):
    /// reported as CANCELLED whatever else happened.
    private(set) var abandoned = false
    /// No connection, no stream, or the stream broke before a status.
    private(set) var transportFailure = false
    /// At shutdown: the plugin's instances are about to go, so its `done`
    /// must not run any more.
    private(set) var silenced = false

    init(bufferLimit: Int, requestEnded: Bool) {
        self.bufferLimit = bufferLimit
        self.requestEnded = requestEnded
    }

    // MARK: From the call

    enum RequestData: Equatable {
        /// Waiting for a connection: keep a copy until the stream opens.
        case hold
        /// Send it on the open stream.
        case send
        /// Ended: dropped.
        case drop
        /// It would take the shadow past its buffer limit: give up.
        case giveUp(GiveUp)
    }

    /// `bytes` of the client's request; `queuedUpstream`: the bytes the
    /// open stream has not written yet (not read while waiting).
    mutating func requestData(bytes: Int, queuedUpstream: Int) -> RequestData {
        switch phase {
        case .waiting(let heldBytes, let heldChunks):
            guard heldBytes + bytes <= bufferLimit else { return .giveUp(abandon()) }
            phase = .waiting(heldBytes: heldBytes + bytes, heldChunks: heldChunks + 1)
            return .hold
        case .streaming:
            guard queuedUpstream + bytes <= bufferLimit else { return .giveUp(abandon()) }
            return .send
        case .endingAfterOpenFailed, .ended:
            return .drop
        }
    }

    enum RequestEnd: Equatable {
        /// It had ended before, or the shadow is over: nothing.
        case ignore
        /// Keep the trailers: they go once the stream opens.
        case keepForStream
        /// Send the end (with the trailers) on the open stream now.
        case sendEnd
    }

    /// The client's request ended, with trailers when `hasTrailers`.
    mutating func requestEnd(hasTrailers: Bool) -> RequestEnd {
        guard !requestEnded else { return .ignore }
        requestEnded = true
        requestHasTrailers = hasTrailers
        switch phase {
        case .waiting: return .keepForStream
        case .streaming: return .sendEnd
        case .endingAfterOpenFailed, .ended: return .ignore
        }
    }

    /// The client's stream closed: a shadow whose request is incomplete is
    /// given up (its upstream would wait for the rest forever).
    mutating func clientClosed() -> GiveUp {
        requestEnded ? .nothing : abandon()
    }

    // MARK: Giving up

    enum GiveUp: Equatable {
        /// Given up before, or over already: nothing.
        case nothing
        /// Leave the pool's queue and end now.
        case leaveQueue
        /// RST_STREAM CANCEL; the stream's close ends the shadow.
        case cancelStream
    }

    /// Its deadline passed (the loop's sweep), or the call gives up on it.
    mutating func abandon() -> GiveUp {
        guard !abandoned else { return .nothing }
        switch phase {
        case .waiting:
            abandoned = true
            return .leaveQueue
        case .streaming:
            abandoned = true
            return .cancelStream
        case .endingAfterOpenFailed, .ended:
            return .nothing
        }
    }

    /// The gateway stops: the shadow is given up, and its end, whenever it
    /// comes, is not reported.
    mutating func silence() -> GiveUp {
        silenced = true
        return abandon()
    }

    // MARK: From the pool

    enum Attach: Equatable {
        /// It no longer waits for a connection: the connection is not used.
        case ignore
        /// Open the stream; with END_STREAM on its head when the whole
        /// request is that head (it ended with no body held and no trailers).
        case openStream(endStream: Bool)
    }

    /// The pool hands it a connection with room.
    func connectionOffered() -> Attach {
        guard case .waiting(_, let heldChunks) = phase else { return .ignore }
        return .openStream(endStream: requestEnded && heldChunks == 0 && !requestHasTrailers)
    }

    /// The stream opened: true when the request's end must follow the held
    /// bytes (it ended, and not on the stream's head).
    mutating func streamOpened() -> Bool {
        guard case .openStream(let endStream) = connectionOffered() else { return false }
        phase = .streaming
        return requestEnded && !endStream
    }

    /// The connection could not open the stream: the shadow ends on the
    /// loop's next turn (`end()`).
    mutating func streamNotOpened() {
        guard case .waiting = phase else { return }
        transportFailure = true
        phase = .endingAfterOpenFailed
    }

    /// The endpoint could not be connected to: true when the shadow ends
    /// now (it was waiting).
    mutating func connectFailed() -> Bool {
        guard case .waiting = phase else { return false }
        transportFailure = true
        return true
    }

    // MARK: From the upstream stream

    /// A response head or trailers with grpc-status.
    mutating func received(status code: GRPCStatusCode) {
        status = code
    }

    /// The stream closed: the shadow ends (`end()`'s answer). A reset or
    /// an oversized header block before any status stands for one, unless
    /// the shadow's own give-up caused it.
    mutating func streamClosed(_ reason: HTTP2StreamCloseReason) -> End {
        switch reason {
        case .finished:
            break
        case .reset(let code, _):
            if status == nil, !abandoned {
                status = GRPCStatusCode(http2Error: code)
                transportFailure = true
            }
        case .connectionLost:
            if status == nil { transportFailure = true }
        case .headersTooLarge:
            if status == nil, !abandoned {
                status = .resourceExhausted
                transportFailure = true
            }
        }
        return end()
    }

    // MARK: The end

    /// What the plugin's `done` hears (mg_shadow_result).
    struct Result: Equatable {
        var status: GRPCStatusCode
        var abandoned: Bool
        var transportFailure: Bool
    }

    enum End: Equatable {
        /// It had ended: nothing more (the result goes out once).
        case alreadyEnded
        /// It ends without telling the plugin, whose instances are going.
        case endSilently
        /// It ends and the plugin's `done` hears the result.
        case report(Result)
    }

    /// The shadow is over (its stream closed, it left the queue, or its
    /// stream could not open).
    mutating func end() -> End {
        guard phase != .ended else { return .alreadyEnded }
        phase = .ended
        guard !silenced else { return .endSilently }
        let code: GRPCStatusCode = abandoned ? .cancelled : (status ?? (transportFailure ? .unavailable : .unknown))
        return .report(Result(status: code, abandoned: abandoned, transportFailure: transportFailure))
    }
}
