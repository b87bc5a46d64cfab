import MeshgateHTTP2

/// What `CallStateMachine` asks its executor (`ProxyCall`) to do, in order.
///
/// Actions are plain values (ids, counts, small enums: no reference, no
/// String, no buffer), so that a batch of them is written, read and
/// dropped without a retain or a release. The data they concern stays
/// where it already is: the bytes and headers of the event being handled,
/// the attempt's held head and outcome (in the machine: `attempts[id]`),
/// the request's trailers (`request.trailers`), the final status
/// (`finalStatus`), and the request bytes kept for replay, which the
/// executor holds (the machine keeps only their count).
///
/// Carrying out an action may produce events (a pool that attaches at
/// once, a hook that cancels attempts); the executor queues them and feeds
/// them in after the current batch, never from inside `handle`.
public enum CallAction: Equatable {
    // MARK: Attempts

    /// Run on_request_headers; answered with `requestHeaderHooksReturned`.
    case runRequestHeaderHooks
    /// Ask the balancer for an endpoint (avoiding `avoidEndpoint` when
    /// another exists) and queue the attempt on its pool. Answered with
    /// `picked` or `pickFailed`, then `connectionReady` or `connectFailed`.
    /// The first `place` of an id makes the attempt.
    case place(AttemptID, kind: AttemptKind, avoidEndpoint: UInt64)
    /// Take the attempt out of its pool's queue (it was cancelled while
    /// waiting for a connection).
    case abandonWait(AttemptID)
    /// Run on_attempt_start; answered with `attemptStartHooksReturned`.
    case runAttemptStartHooks(AttemptID)
    /// Open the attempt's stream with the request head (END_STREAM when
    /// `endStream`); answered with `streamOpened` or `streamNotOpened`.
    case openStream(AttemptID, endStream: Bool)
    /// Send the request bytes of the current event (`requestData`).
    case forwardRequestData(AttemptID)
    /// Keep the request bytes of the current event for replay. With
    /// `awaitingStream`, no attempt took them yet: they must be kept
    /// whatever replay allows, and not finding room for them ends the call
    /// (`keptBytesRefused(awaitingStream: true)`); otherwise they are only
    /// for a later attempt, and without room the call stops keeping bytes.
    case keepForReplay(awaitingStream: Bool)
    /// Send every request byte kept for replay, in order.
    case replay(to: AttemptID)
    /// Forget the request bytes kept for replay.
    case dropReplay
    /// End the attempt's request: with the client's trailers
    /// (`request.trailers`) when it sent any, else END_STREAM.
    case sendRequestEnd(AttemptID)
    /// RST_STREAM: CANCEL for a cancelled attempt, NO_ERROR for a request
    /// the upstream no longer needs (it answered already).
    case resetStream(AttemptID, HTTP2ErrorCode)
    /// Give the upstream `bytes` of window back on the attempt's stream.
    case creditUpstream(AttemptID, bytes: Int)
    /// Count the attempt's result (`attempts[id].outcome`) on its endpoint
    /// and run on_attempt_done. With `decides`, the retry plugin decides and
    /// the executor answers with `retryDecided`.
    case reportAttempt(AttemptID, responseStarted: Bool, decides: Bool)
    /// Start a timer that delivers `scheduledAttemptDue`, replacing the
    /// one running, if any.
    case scheduleAttempt(afterMs: UInt32)
    case cancelScheduledAttempt

    // MARK: The client

    /// Give the client `bytes` of window back on its stream.
    case creditClient(bytes: Int)
    /// Run on_response_headers, then send the head (Trailers-Only when
    /// `endStream`).
    case sendResponseHead(AttemptID, HeadSource, endStream: Bool)
    /// Send the response bytes of the current event (`attemptData`).
    case forwardResponseData
    /// End the response: with trailers, or END_STREAM on DATA (`.none`).
    case sendResponseEnd(TrailerSource)
    /// The gateway's own final status (`finalStatus`): trailers after a
    /// response head, or Trailers-Only.
    case sendLocalStatus(responseStarted: Bool)
    /// Drop response bytes queued for the client (a final status must not
    /// wait behind them).
    case discardQueuedResponse

    // MARK: The call

    /// The call's status (`finalStatus`) is known: the client has it or is
    /// gone. Stop the deadline timer, note the time.
    case finished
    /// The client's stream and every attempt have ended: run on_call_done,
    /// destroy the filters' call state, count, log, and let go.
    case callDone(attempts: Int)

    /// Where a response head comes from.
    public enum HeadSource: Equatable {
        /// The headers of the current event (`attemptHeaders`).
        case event
        /// `attempts[id].heldHead` (a retry chain commits on the first message).
        case held
        /// `attempts[id].outcome.head` (the call ends with an attempt's result
        /// after a held head), or no header when there was none.
        case outcomeHead
        /// `attempts[id].outcome.trailers`: a Trailers-Only answer relayed.
        case outcomeTrailers
    }

    /// Where the trailers that end a response come from.
    public enum TrailerSource: Equatable {
        /// The headers of the current event.
        case event
        /// `attempts[id].outcome.trailers`.
        case outcome(AttemptID)
        /// None: END_STREAM on an empty DATA frame.
        case none
    }
}
