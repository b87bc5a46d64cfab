import MeshgateGRPC
import MeshgateHTTP2
import NIOCore

/// What `CallStateMachine` asks its executor (`ProxyCall`) to do, in order.
/// Carrying out an action may produce events (a pool that attaches at once,
/// a hook that cancels attempts); the executor queues them and feeds them
/// in after the current batch, never from inside `handle`.
enum CallAction: Equatable {
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
    case sendRequestData(AttemptID, ByteBuffer)
    case sendRequestEnd(AttemptID, trailers: HTTP2HeaderList?)
    /// RST_STREAM: CANCEL for a cancelled attempt, NO_ERROR for a request
    /// the upstream no longer needs (it answered already).
    case resetStream(AttemptID, HTTP2ErrorCode)
    /// Give the upstream `bytes` of window back on the attempt's stream.
    case creditUpstream(AttemptID, bytes: Int)
    /// Count the attempt's result (`attempts[id].outcome`, kept by the
    /// machine so that actions stay small) on its endpoint and run
    /// on_attempt_done. With `decides`, the retry plugin decides and the
    /// executor answers with `retryDecided`.
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
    case sendResponseHead(AttemptID, HTTP2HeaderList, endStream: Bool)
    case sendResponseData(ByteBuffer)
    /// End the response: the upstream's trailers, or END_STREAM on DATA
    /// when it sent none.
    case sendResponseEnd(trailers: HTTP2HeaderList?)
    /// The gateway's own final status: trailers after a response head, or
    /// Trailers-Only.
    case sendLocalStatus(GRPCStatus, responseStarted: Bool)
    /// Drop response bytes queued for the client (a final status must not
    /// wait behind them).
    case discardQueuedResponse

    // MARK: The call

    /// The call's status is known (the client has it or is gone): stop the
    /// deadline timer, note the time.
    case finished(GRPCStatus)
    /// The client's stream and every attempt have ended: run on_call_done,
    /// destroy the filters' call state, count, log, and let go.
    case callDone(GRPCStatus, attempts: Int)
}
