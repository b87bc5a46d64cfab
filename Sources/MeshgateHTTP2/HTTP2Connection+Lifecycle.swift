/// Where an `HTTP2Connection` is in its life, as one value: events go in
/// (`queueSettings`, `start`, `beginGracefulShutdown`, `goAwaySent`,
/// `goAwayReceived`, `closeRequested`, `ended`), and each says what the
/// connection must do, if anything. It replaces eight flags (`started`,
/// `settingsSubmitted`, `sawFirstBytes`, `receivedGoAway`,
/// `isShuttingDown`, `closeScheduled`, `isClosed`; the protocol-error
/// flag is `HTTP2CloseCause`) whose combinations were partly impossible.
/// No I/O, so `HTTP2ConnectionLifecycleTests` checks every rule without a
/// socket.
///
/// A plain value of one byte or two: the connection reads it on every read
/// and flush, which costs a compare, no retain.
struct HTTP2ConnectionLifecycle: Equatable {
    /// Who has said GOAWAY on the connection.
    enum GoAway: Equatable {
        /// We did (or are about to): we drain, or turned the peer away
        /// for a protocol error.
        case sent
        /// The peer did: open no new streams here.
        case received
        /// Both.
        case both

        var sent: Bool { self != .received }
        var received: Bool { self != .sent }

        func adding(_ other: GoAway) -> GoAway { self == other ? self : .both }
    }

    /// A connection whose close is queued, by what had been said before.
    enum Closing: Equatable {
        /// Nothing was said (no SETTINGS on the wire): nothing more will be.
        case beforeStart
        /// After the start: frames already produced still leave before the
        /// channel closes; `goAway`: who had said GOAWAY.
        case afterStart(goAway: GoAway?)
    }

    enum Phase: Equatable {
        /// Nothing submitted. A server waits for the client's first bytes
        /// (`HTTPVersionGate` in front of it has turned HTTP/1.x clients
        /// away before them); a client waits for its TCP connect.
        case idle
        /// Client: SETTINGS submitted before the connect completed, so
        /// that requests may queue behind them (SETTINGS must be the
        /// first frame). Nothing is written until the start.
        case settingsQueued
        /// Started: SETTINGS are on the wire (or leave with the next
        /// flush), frames flow both ways, new streams may open.
        case open
        /// Started; no new streams: GOAWAY was said by `GoAway`'s side.
        /// Open streams finish; the connection closes by itself when
        /// nghttp2 has nothing more to read or write.
        case goingAway(GoAway)
        /// `close()` was called: the channel's close is queued and nothing
        /// more is read.
        case closing(Closing)
        /// The channel closed (or the handler left the pipeline): streams
        /// and the delegate were let go, once.
        case closed
    }

    private(set) var phase: Phase = .idle

    // MARK: What is true

    /// New streams may be opened (client side: requests may queue before
    /// the connect completes, behind the queued SETTINGS).
    var canOpenStreams: Bool {
        switch phase {
        case .settingsQueued, .open: return true
        case .idle, .goingAway, .closing, .closed: return false
        }
    }

    /// SETTINGS went (or go with the next flush) to the wire: nghttp2's
    /// output may be written.
    var hasStarted: Bool {
        switch phase {
        case .open, .goingAway, .closing(.afterStart): return true
        case .idle, .settingsQueued, .closing(.beforeStart), .closed: return false
        }
    }

    /// Received bytes are read (not once a close is queued).
    var readsInput: Bool {
        switch phase {
        case .idle, .settingsQueued, .open, .goingAway: return true
        case .closing, .closed: return false
        }
    }

    var isClosing: Bool {
        if case .closing = phase { return true }
        return false
    }

    var isClosed: Bool { phase == .closed }

    /// The peer sent GOAWAY (until the connection has closed).
    var receivedGoAway: Bool { goAway?.received ?? false }

    /// We sent GOAWAY, or are about to (until the connection has closed).
    var isShuttingDown: Bool { goAway?.sent ?? false }

    private var goAway: GoAway? {
        switch phase {
        case .goingAway(let said), .closing(.afterStart(let said?)): return said
        default: return nil
        }
    }

    // MARK: Events

    /// Client: the connection is in a pipeline and may queue requests
    /// before its connect completes. True: submit SETTINGS now.
    mutating func queueSettings() -> Bool {
        guard phase == .idle else { return false }
        phase = .settingsQueued
        return true
    }

    enum Start: Equatable {
        /// Already started, or closing: nothing to do.
        case none
        /// Submit SETTINGS, then flush.
        case submitSettingsAndFlush
        /// SETTINGS were queued before: flush them.
        case flush
    }

    /// The connection starts speaking: a client at its connect, a server
    /// at the client's first bytes.
    mutating func start() -> Start {
        switch phase {
        case .idle:
            phase = .open
            return .submitSettingsAndFlush
        case .settingsQueued:
            phase = .open
            return .flush
        case .open, .goingAway, .closing, .closed:
            return .none
        }
    }

    enum Shutdown: Equatable {
        /// Closing already, or GOAWAY already sent: nothing more.
        case none
        /// Nothing was said yet, and GOAWAY may not be the first frame:
        /// close at once.
        case close
        /// Send GOAWAY (a server: a notice first, the final one later).
        case sendGoAway
    }

    /// We drain: no new streams, open ones finish.
    mutating func beginGracefulShutdown() -> Shutdown {
        switch phase {
        case .idle, .settingsQueued:
            return .close
        case .open:
            phase = .goingAway(.sent)
            return .sendGoAway
        case .goingAway(let said):
            guard !said.sent else { return .none }
            phase = .goingAway(said.adding(.sent))
            return .sendGoAway
        case .closing, .closed:
            return .none
        }
    }

    /// We queued a GOAWAY other than a drain's (the peer broke the
    /// protocol): no new streams.
    mutating func goAwaySent() {
        add(.sent)
    }

    /// The peer's GOAWAY arrived: no new streams here.
    mutating func goAwayReceived() {
        add(.received)
    }

    private mutating func add(_ said: GoAway) {
        switch phase {
        case .open: phase = .goingAway(said)
        case .goingAway(let before): phase = .goingAway(before.adding(said))
        // Before the start nothing is read or sent; closing, nothing is read.
        case .idle, .settingsQueued, .closing, .closed: break
        }
    }

    /// `close()`: true when the channel's close must be queued now (the
    /// first call; none once closed).
    mutating func closeRequested() -> Bool {
        switch phase {
        case .idle, .settingsQueued: phase = .closing(.beforeStart)
        case .open: phase = .closing(.afterStart(goAway: nil))
        case .goingAway(let said): phase = .closing(.afterStart(goAway: said))
        case .closing, .closed: return false
        }
        return true
    }

    /// The channel closed, or the handler left the pipeline: true the
    /// first time, when streams and the delegate must be let go.
    mutating func ended() -> Bool {
        guard phase != .closed else { return false }
        phase = .closed
        return true
    }
}

/// Why a connection ended (or is ending), when it ended on an error.
enum HTTP2CloseCause: Equatable {
    /// An error of ours or of the transport, or an owner's `close(reason:)`.
    case error(String)
    /// The peer broke the protocol (bad preface, invalid frames), as
    /// opposed to an ordinary disconnect.
    case protocolError(String)

    var reason: String {
        switch self {
        case .error(let reason), .protocolError(let reason): return reason
        }
    }
}
