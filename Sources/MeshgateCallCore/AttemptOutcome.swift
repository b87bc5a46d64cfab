import MeshgateGRPC
import MeshgateGRPCCalls
import MeshgateHTTP2

/// How an attempt ended, as far as the call's outcome goes.
public struct AttemptOutcome: Equatable {
    public var status: GRPCStatus
    /// The response head, when it was held back and not yet sent on.
    public var head: HTTP2HeaderList?
    /// Trailers, or the Trailers-Only head.
    public var trailers: HTTP2HeaderList?
    public var trailersOnly = false
    /// No status from the server: reset, refused, or the connection was lost.
    public var transportFailure = false
    /// REFUSED_STREAM (also what a GOAWAY does to streams it did not
    /// process): nothing reached the server, so it may be sent again.
    public var refused = false
    /// grpc-retry-pushback-ms: -1 absent, -2 present but invalid.
    public var pushbackMs: Int64 = -1

    /// The status the server sent in `headers` (trailers, or a Trailers-Only head).
    public static func fromStatusHeaders(_ headers: HTTP2HeaderList, head: HTTP2HeaderList?, trailersOnly: Bool) -> AttemptOutcome {
        // A block without grpc-status is UNKNOWN.
        var outcome = AttemptOutcome(status: GRPCStatus(headers: headers) ?? GRPCStatus(.unknown, ""))
        outcome.head = head
        outcome.trailers = headers
        outcome.trailersOnly = trailersOnly
        if let pushback = headers["grpc-retry-pushback-ms"] {
            outcome.pushbackMs = Int64(pushback).map { $0 >= 0 ? $0 : -2 } ?? -2
        }
        return outcome
    }

    /// No status came from the server: the stream ended on the transport.
    /// The message goes to the client, so it says what happened and not
    /// where: upstream addresses are the operator's to know (the access
    /// log's `upstream`, the log).
    public static func transportFailure(_ reason: HTTP2StreamCloseReason) -> AttemptOutcome {
        var outcome: AttemptOutcome
        switch reason {
        case .finished:
            outcome = AttemptOutcome(status: GRPCStatus(.internal, "the upstream closed the stream without a gRPC status"))
        case .reset(let code, local: false):
            outcome = AttemptOutcome(status: GRPCStatus(http2Error: code, context: "the upstream reset the stream"))
            outcome.refused = code == .refusedStream
        case .reset(let code, local: true):
            outcome = AttemptOutcome(status: GRPCStatus(http2Error: code, context: "the gateway reset the stream to the upstream"))
            outcome.refused = code == .refusedStream
        case .connectionLost:
            outcome = AttemptOutcome(status: GRPCStatus(.unavailable, "the connection to the upstream was lost"))
        case .headersTooLarge(let violation):
            // What a gRPC client answers to metadata over its limit.
            outcome = AttemptOutcome(status: GRPCStatus(.resourceExhausted, "the upstream sent " + violation.clusterLimitText))
        }
        outcome.transportFailure = true
        return outcome
    }

    /// The connection could not take a new stream (it is closing, or out of
    /// stream ids): nothing left the gateway, as with REFUSED_STREAM.
    public static func streamNotOpened() -> AttemptOutcome {
        var outcome = AttemptOutcome(
            status: GRPCStatus(.unavailable, "the upstream could not take a new stream (its connection is closing)"))
        outcome.transportFailure = true
        outcome.refused = true
        return outcome
    }
}

extension HTTP2HeaderLimitViolation {
    /// The violation, naming the cluster setting that sets the limit.
    public var clusterLimitText: String {
        switch self {
        case .bytes(let limit): "response headers over \(limit) bytes (the cluster's max_response_headers_kb)"
        case .fields(let limit): "response headers of more than \(limit) fields (the cluster's max_headers_count)"
        }
    }

    /// The violation, naming the listener setting that sets the limit.
    public var listenerLimitText: String {
        switch self {
        case .bytes(let limit): "request headers over \(limit) bytes (the listener's max_request_headers_kb)"
        case .fields(let limit): "request headers of more than \(limit) fields (the listener's max_headers_count)"
        }
    }
}
