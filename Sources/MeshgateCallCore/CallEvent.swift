import MeshgateGRPC
import MeshgateHTTP2
import NIOCore

/// Everything that can happen to a proxied call, as input of
/// `CallStateMachine.handle(_:into:)`. The executor (`ProxyCall`) turns
/// HTTP/2 callbacks, pool callbacks, timers and plugin host functions into
/// these.
public enum CallEvent: Equatable, Sendable {
    // MARK: The client's stream

    /// The request head arrived (the first event of every call).
    case start(requestEnded: Bool)
    /// The filters' on_request_headers returned; `rejection` when one of
    /// them answered the call locally.
    case requestHeaderHooksReturned(rejection: GRPCStatus?)
    case requestData(ByteBuffer)
    /// END_STREAM from the client, with trailers when it sent any.
    case requestEnd(trailers: HTTP2HeaderList?)
    /// The client took `bytes` of response DATA: the upstream may send more.
    case responseWritten(bytes: Int)
    /// The client's stream closed; `cleanly` when both sides finished
    /// normally (anything else is the client cancelling or vanishing).
    case downstreamClosed(cleanly: Bool)
    case deadlineExpired
    /// The client's connection or the process has no room for request
    /// bytes the call keeps (`CallClientStream.holdBytes` refused). Bytes
    /// kept for replay only: the call stops keeping them, as past its
    /// replay limit. Bytes no attempt took yet (`awaitingStream`): they
    /// cannot be dropped, so the call ends RESOURCE_EXHAUSTED, as a queue
    /// past the global budget is reset.
    case keptBytesRefused(awaitingStream: Bool)

    // MARK: Balancer, pools and connections

    /// The balancer chose an endpoint; the attempt now waits for a connection.
    case picked(AttemptID, endpointID: UInt64, address: String)
    /// The balancer found no endpoint; `status` says why (from the balancer's
    /// call_local_reply, or the cluster's state).
    case pickFailed(AttemptID, status: GRPCStatus)
    /// The endpoint could not be connected to; nothing was sent.
    case connectFailed(AttemptID)
    /// A connection to the endpoint has room for the attempt's stream.
    case connectionReady(AttemptID)
    /// The filters' on_attempt_start hooks returned.
    case attemptStartHooksReturned(AttemptID)
    case streamOpened(AttemptID)
    /// The connection did not take the stream (it is closing or out of ids).
    case streamNotOpened(AttemptID)

    // MARK: The attempt's stream

    case attemptHeaders(AttemptID, HTTP2HeaderList, isTrailers: Bool, endStream: Bool)
    case attemptData(AttemptID, ByteBuffer)
    /// END_STREAM on DATA, without trailers.
    case attemptEnd(AttemptID)
    /// The upstream took `bytes` of request DATA.
    case attemptWrote(AttemptID, bytes: Int)
    case attemptClosed(AttemptID, HTTP2StreamCloseReason)

    // MARK: Timers and plugins

    case scheduledAttemptDue
    /// call_start_attempt from a hook (already checked with
    /// `CallStateMachine.acceptsNewAttempts`).
    case filterScheduledAttempt(afterMs: UInt32)
    /// call_cancel_attempts from a hook.
    case filterCancelledAttempts(keep: AttemptID?)
    /// The chain's answer to an attempt reported with `decides: true`.
    case retryDecided(AttemptID, RetryDecision)
}

/// A retry or hedging plugin's answer for an attempt that ended before the
/// call committed to it (`mg_retry_decision`).
public enum RetryDecision: Equatable, Sendable {
    /// MG_RETRY_NO: the call ends with this result unless other attempts
    /// run or one is scheduled.
    case no
    /// MG_RETRY_AFTER: another attempt after `afterMs`. `withinDeadline` is
    /// false when the delay reaches the call's deadline (then it is no retry).
    case retry(afterMs: UInt32, withinDeadline: Bool)
    /// MG_RETRY_FINISH: end the call with this result now.
    case finish
}

extension CallEvent {
    /// What an action names as "the current event's bytes": the request
    /// bytes of `requestData` (`forwardRequestData`, `keepForReplay`) or the
    /// response bytes of `attemptData` (`forwardResponseData`). nil when
    /// this event carries none for that action: a bug in the machine, which
    /// the executor asserts and the test harness records. Resolved here
    /// only, so that the executor and the harness read actions alike.
    @inlinable public func bytes(for action: CallAction) -> ByteBuffer? {
        // One switch per value, not over a tuple: a tuple would copy (and
        // retain) the event and the action.
        switch self {
        case .requestData(let data):
            switch action {
            case .forwardRequestData, .keepForReplay: return data
            default: return nil
            }
        case .attemptData(_, let data):
            if case .forwardResponseData = action { return data }
            return nil
        default:
            return nil
        }
    }

    /// What a `HeadSource.event` or `TrailerSource.event` names: the
    /// headers of `attemptHeaders` (nil for any other event, a bug).
    @inlinable public var attemptHeaderList: HTTP2HeaderList? {
        if case .attemptHeaders(_, let headers, _, _) = self { return headers }
        return nil
    }
}
