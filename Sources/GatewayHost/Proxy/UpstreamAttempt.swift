import MeshgateGRPC
import MeshgateHTTP2
import NIOCore

/// One try of a call against one upstream endpoint: the first attempt, a
/// retry, a hedge, or a transparent retry of a refused stream.
///
/// It is the upstream stream's delegate and forwards every event to its
/// call, which decides (with the plugins) what the events mean. The
/// `mg_attempt *` handle plugins get points at this object.
final class UpstreamAttempt: HTTP2StreamDelegate {
    /// Strong: the attempt keeps the call alive until the upstream has
    /// closed its stream; the call drops its attempts as they close.
    let call: ProxyCall
    let number: Int
    let started = NIODeadline.now()

    var pool: EndpointPool?
    var endpointID: UInt64 = 0
    /// The chosen endpoint's index in its generation's cluster (for metadata).
    var endpointIndex = -1
    var connection: HTTP2Connection?
    var stream: Int32 = 0
    /// The upstream stream is open and takes request bytes.
    var isOpen = false
    /// on_attempt_start ran: on_attempt_done is owed exactly once.
    var didStart = false
    var reported = false
    /// The host cancelled it (a losing hedge, the call ended).
    var cancelled = false
    /// Request body bytes the upstream took: the call credits the client
    /// as the most advanced attempt moves on.
    var written = 0
    /// Response head held back until the call commits (retry mode).
    var heldHead: HTTP2HeaderList?
    /// Known once trailers (or Trailers-Only, or a reset) arrive.
    var outcome: AttemptOutcome?
    /// The address the endpoint was picked under, for plugins.
    var addressText: String { pool?.address ?? "" }

    init(call: ProxyCall, number: Int) {
        self.call = call
        self.number = number
    }

    var handle: OpaquePointer { OpaquePointer(Unmanaged.passUnretained(self).toOpaque()) }

    static func from(_ handle: OpaquePointer?) -> UpstreamAttempt {
        Unmanaged<UpstreamAttempt>.fromOpaque(UnsafeRawPointer(handle!)).takeUnretainedValue()
    }

    // MARK: From the endpoint pool

    func attach(_ connection: UpstreamConnection) { call.attemptAttached(self, connection) }

    func connectFailed(on endpoint: EndpointPool, error: String) { call.attemptConnectFailed(self) }

    // MARK: Upstream stream events

    func http2(_ connection: HTTP2Connection, stream: Int32, didReceiveHeaders headers: HTTP2HeaderList, isTrailers: Bool, endStream: Bool) {
        call.attemptReceivedHeaders(self, headers, isTrailers: isTrailers, endStream: endStream)
    }

    func http2(_ connection: HTTP2Connection, stream: Int32, didReceiveData data: ByteBuffer) {
        call.attemptReceivedData(self, data)
    }

    func http2(_ connection: HTTP2Connection, didReceiveEndOfStream stream: Int32) {
        call.attemptReceivedEnd(self)
    }

    func http2(_ connection: HTTP2Connection, stream: Int32, didWriteData bytes: Int) {
        written += bytes
        call.attemptWroteRequest(self)
    }

    func http2(_ connection: HTTP2Connection, stream: Int32, didCloseWith reason: HTTP2StreamCloseReason) {
        call.attemptClosed(self, reason: reason)
    }
}

/// How an attempt ended, as far as the call's outcome goes.
struct AttemptOutcome {
    var status: GRPCStatus
    /// The response head, when it was held back and not yet sent on.
    var head: HTTP2HeaderList?
    /// Trailers, or the Trailers-Only head.
    var trailers: HTTP2HeaderList?
    var trailersOnly = false
    /// No status from the server: reset, refused, or the connection was lost.
    var transportFailure = false
    /// REFUSED_STREAM (also what a GOAWAY does to streams it did not process).
    var refused = false
    var pushbackMs: Int64 = -1

    static func fromStatusHeaders(_ headers: HTTP2HeaderList, head: HTTP2HeaderList?, trailersOnly: Bool) -> AttemptOutcome {
        let code = headers["grpc-status"].flatMap(Int.init).flatMap(GRPCStatusCode.init(rawValue:)) ?? .unknown
        var outcome = AttemptOutcome(status: GRPCStatus(code, GRPCMessageEncoding.percentDecode(headers["grpc-message"] ?? "")))
        outcome.head = head
        outcome.trailers = headers
        outcome.trailersOnly = trailersOnly
        if let pushback = headers["grpc-retry-pushback-ms"] {
            outcome.pushbackMs = Int64(pushback).map { $0 >= 0 ? $0 : -2 } ?? -2
        }
        return outcome
    }
}
