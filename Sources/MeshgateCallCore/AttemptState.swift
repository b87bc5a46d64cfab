import MeshgateHTTP2

/// An attempt's identity within its call: its number (0 for the first,
/// then 1, 2, … in the order they were made), which plugins also see
/// (`attempt_number`).
public typealias AttemptID = Int

/// What the call state machine knows of one attempt. The I/O side (the
/// endpoint pool, the connection and stream id) is the executor's
/// `UpstreamAttempt`; this is only the attempt's progress.
public struct AttemptState: Equatable {
    /// Where the attempt is on its way to the upstream and back.
    public enum Stage: Equatable {
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

    public let kind: AttemptKind
    public var stage = Stage.picking
    /// The endpoint it was placed on (the balancers' id) and its address.
    public var endpointID: UInt64 = 0
    public var address = ""
    /// on_attempt_start ran (or would have, without filters): exactly one
    /// report (on_attempt_done) is owed.
    public var started = false
    public var reported = false
    /// The gateway or a filter cancelled it.
    public var cancelled = false
    /// Request body bytes queued on its stream, and those the upstream took.
    public var sent = 0
    public var written = 0
    /// Its request stream has been ended (END_STREAM or trailers queued).
    public var sentEnd = false
    /// The response head, held back until the call commits (retry mode).
    public var heldHead: HTTP2HeaderList?
    /// Known once its status arrives (trailers, Trailers-Only) or its stream
    /// ends without one; for a cancelled attempt, set when it is reported.
    /// What `reportAttempt` reports.
    public var outcome: AttemptOutcome?

    public init(kind: AttemptKind) { self.kind = kind }

    /// Not gone: the call cannot end its bookkeeping before it is.
    public var isLive: Bool { stage != .gone }

    /// Still on its way to a status: not gone, not cancelled, no outcome.
    public var isRunning: Bool { stage != .gone && !cancelled && outcome == nil }

    /// Its stream exists (events may come from it).
    public var hasStream: Bool { stage == .open || stage == .closing }

    /// Has a stream that takes request bytes.
    public var takesRequest: Bool { stage == .open && !sentEnd }
}
