import MeshgateHTTP2

/// An attempt's identity within its call: its number (0 for the first,
/// then 1, 2, … in the order they were made), which plugins also see
/// (`attempt_number`).
package typealias AttemptID = Int

/// What the call state machine knows of one attempt. The I/O side (the
/// endpoint pool, the connection and stream id) is the executor's
/// `UpstreamAttempt`; this is only the attempt's progress.
package struct AttemptState: Equatable {
    /// Where the attempt is on its way to the upstream and back.
    package enum Stage: Equatable {
        /// The balancer is choosing its endpoint.
        case picking
        /// Queued on its endpoint's pool until a connection has room.
        case waiting
        /// It has a connection; the filters' on_attempt_start hooks run.
        case starting
        /// Its stream was asked for; the connection has not said yet
        /// whether it took it.
        case opening
        /// Its stream is open: request bytes go to it.
        case open
        /// Its stream was reset by the gateway; the close is on its way.
        case closing
        /// Nothing is left of it: no stream, no wait, nothing owed.
        case gone
    }

    package let kind: AttemptKind
    package var stage = Stage.picking
    /// The endpoint it was placed on (the balancers' id) and its address.
    package var endpointID: UInt64 = 0
    package var address = ""
    /// on_attempt_start ran (or would have, without filters): exactly one
    /// report (on_attempt_done) is owed.
    package var started = false
    package var reported = false
    /// The gateway or a filter cancelled it.
    package var cancelled = false
    /// Request body bytes queued on its stream, and those the upstream took.
    package var sent = 0
    package var written = 0
    /// Its request stream has been ended (END_STREAM or trailers queued).
    package var sentEnd = false
    /// The response head, held back until the call commits (retry mode).
    package var heldHead: HTTP2HeaderList?
    /// Known once its status arrives (trailers, Trailers-Only) or its stream
    /// ends without one; for a cancelled attempt, set when it is reported.
    /// What `reportAttempt` reports.
    package var outcome: AttemptOutcome?

    package init(kind: AttemptKind) { self.kind = kind }

    /// Not gone: the call cannot end its bookkeeping before it is.
    package var isLive: Bool { stage != .gone }

    /// Still on its way to a status: not gone, not cancelled, no outcome.
    package var isRunning: Bool { stage != .gone && !cancelled && outcome == nil }

    /// Its stream exists (events may come from it).
    package var hasStream: Bool { stage == .open || stage == .closing }

    /// Has a stream that takes request bytes.
    package var takesRequest: Bool { stage == .open && !sentEnd }
}
