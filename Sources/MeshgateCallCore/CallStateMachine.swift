import MeshgateGRPC
import MeshgateHTTP2
import NIOCore

/// The decisions of one proxied RPC, as a value: events go in through
/// `handle(_:into:)`, actions come out, in the manner of
/// grpc-swift-nio-transport's `GRPCStreamStateMachine`. It does no I/O,
/// reads no clock and calls no plugin, so every rule below is unit-tested
/// without sockets (`CallStateMachineTests`); `ProxyCall` carries the
/// actions out.
///
/// The rules (gRFC A6, and the filter ABI's on_attempt_done):
/// - Request bytes go to every open attempt and are kept for replay until
///   the call commits or they pass `replayLimit` (or the client's
///   connection or the process has no room for them:
///   `keptBytesRefused`); past it no new attempt starts and, of the
///   open attempts, only the one furthest along goes on. Bytes no attempt
///   took yet wait here whatever the limit; without room for them the
///   call ends RESOURCE_EXHAUSTED.
/// - An attempt commits when its response head arrives (hedging, or no
///   retry plugin), or with a retry plugin on its first response message,
///   so that a status in trailers after a bare head can still be retried.
///   Trailers-Only never commits. Committing cancels every other attempt.
/// - An attempt that ends before the call commits to it is reported to the
///   chain, whose retry or hedging plugin decides: another attempt after a
///   delay, the end of the call with this result, or waiting for the other
///   attempts. A refused stream (nothing reached the server) is sent again
///   once by the host itself, before any plugin is asked.
/// - Every started attempt is reported exactly once, the call's end only
///   after every attempt has ended and the client's stream has closed.
///
/// Nothing here allocates per event (the attempt table allocates once per
/// call), and actions are plain values: the caller's action array is
/// reused and dropped without a release.
public struct CallStateMachine {
    public struct Configuration: Equatable {
        /// The chain has filters: the request head and each attempt go
        /// through their hooks before the call goes on.
        public var runsHooks: Bool
        /// The chain has a retry or hedging plugin (MG_KIND_RETRY /
        /// MG_KIND_HEDGE), which decides what follows a failed attempt.
        public var hasScheduler: Bool
        /// A retry plugin: a response head waits for the first message
        /// before it commits.
        public var holdsResponseHead: Bool
        /// Request bytes kept for replay before the call commits (the
        /// executor sets a small one for chains that cannot retry: enough
        /// for a transparent retry of a typical request, no more).
        public var replayLimit: Int
        /// The call's path, for the gateway's own status messages.
        public var path: String
        /// The route's message size limits (nil: none).
        public var maxRequestMessageBytes: Int? = nil
        public var maxResponseMessageBytes: Int? = nil

        public init(
            runsHooks: Bool, hasScheduler: Bool, holdsResponseHead: Bool, replayLimit: Int, path: String,
            maxRequestMessageBytes: Int? = nil, maxResponseMessageBytes: Int? = nil
        ) {
            self.runsHooks = runsHooks
            self.hasScheduler = hasScheduler
            self.holdsResponseHead = holdsResponseHead
            self.replayLimit = replayLimit
            self.path = path
            self.maxRequestMessageBytes = maxRequestMessageBytes
            self.maxResponseMessageBytes = maxResponseMessageBytes
        }
    }

    public enum Phase: Equatable {
        /// Before `start`.
        case idle
        /// Attempts run, wait, or are scheduled; the client has nothing yet.
        case open(Open)
        /// One attempt's response head went to the client: the call
        /// follows that attempt to its end.
        case committed(AttemptID)
        /// The client has its final status, or is gone; attempts may still
        /// be winding down.
        case finished(Finished)
        /// The client's stream and every attempt have ended, and the end
        /// was reported. Nothing happens any more.
        case done(Finished)
    }

    public struct Open: Equatable {
        /// The request hooks have not returned yet: no attempt exists.
        public var admitting = true
        /// False once the request outgrew the replay buffer: no new
        /// attempt can start.
        public var replaying = true
        /// The kind of attempt a timer will start, when one is scheduled.
        public var scheduled: AttemptKind?
        /// The attempt whose result the call ends with when nothing else
        /// runs and nothing is scheduled.
        public var pendingResult: AttemptID?
        /// An attempt reported with `decides`, whose decision is due.
        public var awaitingDecision: AttemptID?
        public var transparentRetryUsed = false
        /// The endpoint the last attempt ended on: the balancer avoids it.
        public var avoidEndpoint: UInt64 = 0
    }

    public struct Finished: Equatable {
        public var status: GRPCStatus
        /// The attempt whose response the client got, if any: its stream
        /// still gets window credit as the client reads.
        public var committed: AttemptID?
    }

    public struct RequestProgress: Equatable {
        /// The client ended its stream (`trailers` when it sent any).
        public var ended = false
        public var trailers: HTTP2HeaderList?
        /// Body bytes the client sent, and those given back to it as
        /// window credit (as the furthest attempt's upstream took them).
        public var received = 0
        public var credited = 0
    }

    public let configuration: Configuration
    public private(set) var phase = Phase.idle
    /// Every attempt made, indexed by id; gone ones stay (ids never move).
    /// A plain Array on purpose: its subscript modifies in place through an
    /// addressor, where a `_read`/`_modify` coroutine over a 128-byte
    /// element mallocs a frame whenever it is not inlined (measured: 35
    /// mallocs per RPC).
    public private(set) var attempts: [AttemptState] = []
    public private(set) var request = RequestProgress()
    public private(set) var downstreamClosed = false
    /// Response DATA bytes (gRPC framing included) that left for the client.
    public private(set) var responseBytesWritten = 0
    /// Message boundaries, followed only under a size limit.
    private var requestMessages = GRPCMessageLengthScanner()
    private var responseMessages = GRPCMessageLengthScanner()
    /// Request bytes kept (by the executor) to send again to later
    /// attempts: how many chunks and bytes.
    public private(set) var replayChunks = 0
    public private(set) var replayBytes = 0
    /// Where the current event's actions go (the caller's buffer, swapped in).
    private var output = ActionBuffer()

    /// `attemptStorage`: an empty table whose capacity a finished call gave
    /// back (`takeAttemptStorage`), so that the table costs no allocation.
    public init(configuration: Configuration, attemptStorage: [AttemptState] = []) {
        self.configuration = configuration
        precondition(attemptStorage.isEmpty, "a reused attempt table must be empty")
        self.attempts = attemptStorage
    }

    /// Once the call is done: the attempt table, emptied with its capacity
    /// kept, for the loop's next call. (Events after `.callDone` find no
    /// attempt, as they find none live today.) Before that: an empty table.
    public mutating func takeAttemptStorage() -> [AttemptState] {
        guard case .done = phase else { return [] }
        var table: [AttemptState] = []
        swap(&table, &attempts)
        table.removeAll(keepingCapacity: true)
        return table
    }

    // MARK: Questions the executor asks

    /// call_start_attempt may schedule another attempt.
    @inlinable public var acceptsNewAttempts: Bool {
        if case .open(let open) = phase { return open.replaying }
        return phase == .idle
    }

    /// The attempt whose response the client gets, once there is one.
    @inlinable public var committedAttempt: AttemptID? { phase.committedAttempt }

    /// The status the client got (or the call ended with): set once the
    /// call has finished.
    @inlinable public var finalStatus: GRPCStatus? { phase.finalStatus }

    @inlinable public var isFinished: Bool {
        switch phase {
        case .finished, .done: true
        default: false
        }
    }

    // MARK: Events

    /// Applies `event` and appends what follows from it to `actions`
    /// (which the caller clears and reuses).
    public mutating func handle(_ event: CallEvent, into actions: inout ActionBuffer) {
        swap(&output, &actions)
        defer { swap(&output, &actions) }
        switch event {
        case .start(let requestEnded): start(requestEnded: requestEnded)
        case .requestHeaderHooksReturned(let rejection): requestHeaderHooksReturned(rejection: rejection)
        case .requestData(let data): receiveRequestData(data)
        case .requestEnd(let trailers): receiveRequestEnd(trailers: trailers)
        case .responseWritten(let bytes):
            return responseWritten(bytes: bytes)
        case .downstreamClosed(let cleanly): downstreamDidClose(cleanly: cleanly)
        case .deadlineExpired: deadlineExpired()
        case .keptBytesRefused(let awaitingStream): keptBytesRefused(awaitingStream: awaitingStream)
        case .picked(let id, let endpointID, let address): picked(id, endpointID: endpointID, address: address)
        case .pickFailed(let id, let status): pickFailed(id, status: status)
        case .connectFailed(let id): connectFailed(id)
        case .connectionReady(let id): connectionReady(id)
        case .attemptStartHooksReturned(let id): attemptStartHooksReturned(id)
        case .streamOpened(let id): streamOpened(id)
        case .streamNotOpened(let id): streamNotOpened(id)
        case .attemptHeaders(let id, let headers, let isTrailers, let endStream):
            receiveHeaders(id, headers, isTrailers: isTrailers, endStream: endStream)
        case .attemptData(let id, let data): receiveResponseData(id, data)
        case .attemptEnd(let id): receiveResponseEnd(id)
        case .attemptWrote(let id, let bytes):
            // Flow control only: no phase or attempt changes, nothing to settle.
            return attemptWrote(id, bytes: bytes)
        case .attemptClosed(let id, let reason): attemptClosed(id, reason: reason)
        case .scheduledAttemptDue: scheduledAttemptDue()
        case .filterScheduledAttempt(let delay): filterScheduledAttempt(afterMs: delay)
        case .filterCancelledAttempts(let keep): filterCancelledAttempts(keep: keep)
        case .retryDecided(let id, let decision): retryDecided(id, decision)
        }
        settle()
    }

    // MARK: The client's stream

    private mutating func start(requestEnded: Bool) {
        guard phase == .idle else { return }
        request.ended = requestEnded
        phase = .open(Open(admitting: configuration.runsHooks))
        if configuration.runsHooks {
            output.append(.runRequestHeaderHooks)
        } else {
            startAttempt(.first)
        }
    }

    private mutating func requestHeaderHooksReturned(rejection: GRPCStatus?) {
        guard case .open(var open) = phase, open.admitting else { return }
        open.admitting = false
        phase = .open(open)
        if let rejection { return fail(rejection) }
        startAttempt(.first)
    }

    private mutating func receiveRequestData(_ data: ByteBuffer) {
        request.received += data.readableBytes
        if let limit = configuration.maxRequestMessageBytes, !isFinished,
           let declared = data.withUnsafeReadableBytes({ requestMessages.scan($0, limit: limit) }) {
            // Nothing of this chunk goes on; the client gets its window back.
            return fail(GRPCStatus(.resourceExhausted,
                                   "request message of \(declared) bytes exceeds the route's max_request_message_bytes (\(limit))"))
        }
        switch phase {
        case .idle, .open:
            var sent = false
            for id in attempts.indices where attempts[id].takesRequest {
                forward(data.readableBytes, to: id)
                sent = true
            }
            let replaying = acceptsNewAttempts
            // Past the replay limit the bytes still wait here when no
            // attempt is open yet: the first to open gets them all.
            if replaying || !sent {
                output.append(.keepForReplay(awaitingStream: !sent))
                replayChunks += 1
                replayBytes += data.readableBytes
                if replaying && replayBytes > configuration.replayLimit { stopReplaying() }
            }
        case .committed:
            for id in attempts.indices where attempts[id].takesRequest { forward(data.readableBytes, to: id) }
        case .finished, .done:
            // Read and dropped: the client gets its window back.
            creditClient()
        }
    }

    private mutating func receiveRequestEnd(trailers: HTTP2HeaderList?) {
        guard !request.ended else { return }
        request.ended = true
        request.trailers = trailers
        for id in attempts.indices where attempts[id].takesRequest {
            attempts[id].sentEnd = true
            output.append(.sendRequestEnd(id))
        }
    }

    /// The client took response bytes: the committed upstream gets that
    /// much window back.
    private mutating func responseWritten(bytes: Int) {
        responseBytesWritten += bytes
        if let id = committedAttempt { output.append(.creditUpstream(id, bytes: bytes)) }
    }

    private mutating func downstreamDidClose(cleanly: Bool) {
        guard !downstreamClosed else { return }
        downstreamClosed = true
        switch phase {
        case .idle, .open, .committed:
            // The client cancelled or vanished: the upstream must know.
            let committed = committedAttempt
            cancelAttempts(except: nil)
            let status = GRPCStatus(.cancelled, "the client cancelled the call")
            phase = .finished(Finished(status: status, committed: committed))
            dropReplay()
            output.append(.finished)
        case .finished:
            // It has its status; a reset before the last bytes went out
            // still cancels what runs.
            if !cleanly { cancelAttempts(except: nil) }
        case .done:
            break
        }
    }

    private mutating func keptBytesRefused(awaitingStream: Bool) {
        guard awaitingStream else { return stopReplaying() }
        fail(GRPCStatus(.resourceExhausted,
                        "the gateway holds all it may for this connection (per_connection_buffer_limit_bytes) or for all clients (global_buffer_limit_bytes) while \(configuration.path) waits for its upstream"))
    }

    private mutating func deadlineExpired() {
        switch phase {
        case .open, .committed:
            output.append(.discardQueuedResponse)
            fail(GRPCStatus(.deadlineExceeded, "deadline exceeded at the gateway while waiting for \(configuration.path)"))
        default:
            break
        }
    }

    // MARK: Placing an attempt

    private mutating func startAttempt(_ kind: AttemptKind) {
        guard case .open(let open) = phase else { return }
        let id = attempts.count
        attempts.append(AttemptState(kind: kind))
        output.append(.place(id, kind: kind, avoidEndpoint: open.avoidEndpoint))
    }

    private mutating func picked(_ id: AttemptID, endpointID: UInt64, address: String) {
        guard attempts.indices.contains(id), attempts[id].stage == .picking else { return }
        attempts[id].stage = .waiting
        attempts[id].endpointID = endpointID
        attempts[id].address = address
    }

    private mutating func pickFailed(_ id: AttemptID, status: GRPCStatus) {
        guard attempts.indices.contains(id), attempts[id].stage == .picking else { return }
        attempts[id].stage = .gone
        // Nothing else can answer the client: end with the balancer's
        // reason. (An earlier attempt's result, when one is pending, is
        // what the call ends with instead: `settle`.)
        guard case .open(let open) = phase, open.scheduled == nil, open.awaitingDecision == nil, open.pendingResult == nil,
              !attempts.contains(where: { $0.isRunning }) else { return }
        fail(status)
    }

    /// The endpoint could not connect; nothing was sent, so the attempt is
    /// placed again, avoiding it.
    private mutating func connectFailed(_ id: AttemptID) {
        guard attempts.indices.contains(id), attempts[id].stage == .waiting else { return }
        guard case .open(var open) = phase, !attempts[id].cancelled else {
            attempts[id].stage = .gone
            return
        }
        open.avoidEndpoint = attempts[id].endpointID
        phase = .open(open)
        attempts[id].stage = .picking
        output.append(.place(id, kind: attempts[id].kind, avoidEndpoint: open.avoidEndpoint))
    }

    private mutating func connectionReady(_ id: AttemptID) {
        guard attempts.indices.contains(id), attempts[id].stage == .waiting else { return }
        guard case .open = phase, !attempts[id].cancelled else {
            attempts[id].stage = .gone
            return
        }
        attempts[id].stage = .starting
        if configuration.runsHooks {
            output.append(.runAttemptStartHooks(id))
        } else {
            attemptStartHooksReturned(id)
        }
    }

    private mutating func attemptStartHooksReturned(_ id: AttemptID) {
        guard attempts.indices.contains(id), attempts[id].stage == .starting else { return }
        attempts[id].started = true
        guard !attempts[id].cancelled, case .open = phase else {
            // A hook cancelled this very attempt (or the whole call): it
            // is owed its report all the same.
            attempts[id].cancelled = true
            attempts[id].stage = .gone
            report(id, AttemptOutcome(status: GRPCStatus(.cancelled, "attempt cancelled by a filter")))
            return
        }
        attempts[id].stage = .opening
        let endNow = request.ended && replayChunks == 0 && request.trailers == nil
        attempts[id].sentEnd = endNow
        output.append(.openStream(id, endStream: endNow))
    }

    private mutating func streamOpened(_ id: AttemptID) {
        guard attempts.indices.contains(id), attempts[id].stage == .opening else { return }
        attempts[id].stage = .open
        guard !attempts[id].cancelled, case .open(let open) = phase else {
            // Cancelled while its stream was being opened.
            attempts[id].cancelled = true
            attempts[id].stage = .closing
            output.append(.resetStream(id, .cancel))
            return
        }
        if replayChunks > 0 {
            attempts[id].sent += replayBytes
            output.append(.replay(to: id))
        }
        if !open.replaying {
            // Past the replay limit only this attempt has every byte: the
            // others still on their way would get a truncated request.
            for other in attempts.indices where other != id && attempts[other].stage != .open { cancel(other) }
            dropReplay()
        }
        if request.ended && !attempts[id].sentEnd {
            attempts[id].sentEnd = true
            output.append(.sendRequestEnd(id))
        }
    }

    private mutating func streamNotOpened(_ id: AttemptID) {
        guard attempts.indices.contains(id), attempts[id].stage == .opening else { return }
        attempts[id].stage = .gone
        if attempts[id].cancelled {
            report(id, AttemptOutcome(status: GRPCStatus(.cancelled, "attempt cancelled by the gateway")))
            return
        }
        attempts[id].outcome = .streamNotOpened()
        attemptEnded(id)
    }

    // MARK: The attempt's stream

    private mutating func receiveHeaders(_ id: AttemptID, _ headers: HTTP2HeaderList, isTrailers: Bool, endStream: Bool) {
        guard attempts.indices.contains(id), attempts[id].hasStream, !attempts[id].cancelled else { return }
        switch phase {
        case .committed(let committed) where committed == id:
            // Trailers of the committed attempt: the call's status.
            attempts[id].outcome = AttemptOutcome.fromStatusHeaders(headers, head: nil, trailersOnly: false)
            output.append(.sendResponseEnd(.event))
            // `!`: set two lines up; read in place (a copy would retain
            // each reference the outcome holds).
            complete(status: attempts[id].outcome!.status, committed: id)
        case .open:
            if !isTrailers && !endStream {
                if configuration.holdsResponseHead {
                    attempts[id].heldHead = headers
                } else {
                    commit(id, head: .event)
                }
                return
            }
            // Trailers-Only, or trailers after a held head: the attempt
            // ended before the call committed to it.
            attempts[id].outcome = .fromStatusHeaders(headers, head: isTrailers ? attempts[id].heldHead : nil, trailersOnly: !isTrailers)
            attempts[id].heldHead = nil
            attemptEnded(id)
        default:
            break
        }
    }

    private mutating func receiveResponseData(_ id: AttemptID, _ data: ByteBuffer) {
        guard attempts.indices.contains(id), attempts[id].hasStream else { return }
        if case .open = phase, !attempts[id].cancelled, attempts[id].heldHead != nil {
            commit(id, head: .held)
        }
        if case .committed(let committed) = phase, committed == id {
            if let limit = configuration.maxResponseMessageBytes,
               let declared = data.withUnsafeReadableBytes({ responseMessages.scan($0, limit: limit) }) {
                // This chunk is not forwarded (messages before the large
                // one in it are lost with it): the client gets the status.
                output.append(.creditUpstream(id, bytes: data.readableBytes))
                return fail(GRPCStatus(.resourceExhausted,
                                       "response message of \(declared) bytes exceeds the route's max_response_message_bytes (\(limit))"))
            }
            output.append(.forwardResponseData)
        } else {
            // Nobody reads it: dropped, and the upstream gets its window back.
            output.append(.creditUpstream(id, bytes: data.readableBytes))
        }
    }

    /// END_STREAM on DATA without trailers: not valid gRPC, but relayed as
    /// it is; the client reports the missing status itself.
    private mutating func receiveResponseEnd(_ id: AttemptID) {
        guard case .committed(let committed) = phase, committed == id else { return }
        output.append(.sendResponseEnd(.none))
        complete(status: GRPCStatus(.unknown, ""), committed: id)
    }

    private mutating func attemptWrote(_ id: AttemptID, bytes: Int) {
        guard attempts.indices.contains(id), attempts[id].isLive else { return }
        attempts[id].written += bytes
        // The client gets credit as the furthest attempt moves on.
        let written = attempts[id].written
        if written > request.credited {
            output.append(.creditClient(bytes: written - request.credited))
            request.credited = written
        }
    }

    private mutating func attemptClosed(_ id: AttemptID, reason: HTTP2StreamCloseReason) {
        guard attempts.indices.contains(id), attempts[id].hasStream else { return }
        attempts[id].stage = .gone
        let isCommitted = phase == .committed(id)
        if attempts[id].cancelled {
            report(id, AttemptOutcome(status: GRPCStatus(.cancelled, "attempt cancelled by the gateway")))
            if isCommitted { fail(GRPCStatus(.cancelled, "the upstream attempt was cancelled by a filter")) }
            return
        }
        if attempts[id].outcome != nil {
            report(id)
            return
        }
        attempts[id].outcome = AttemptOutcome.transportFailure(reason)
        if isCommitted {
            report(id)
            // `!`: set just above (`report` marks the attempt reported and
            // keeps its outcome); read in place, without a copy.
            fail(attempts[id].outcome!.status)
        } else {
            attemptEnded(id)
        }
    }

    // MARK: Deciding what follows an attempt

    /// An attempt the call had not committed to ended (`outcome` is set):
    /// retry transparently, ask the chain, or end the call with it.
    private mutating func attemptEnded(_ id: AttemptID) {
        // The outcome is read in place: a copy retains each reference in it.
        guard attempts[id].outcome != nil else { return }
        guard case .open(var open) = phase else {
            report(id)
            return
        }
        open.avoidEndpoint = attempts[id].endpointID
        // `!`: the guard above returned when there was no outcome.
        if attempts[id].outcome!.refused && !open.transparentRetryUsed && open.replaying {
            open.transparentRetryUsed = true
            phase = .open(open)
            report(id)
            attempts[id].stage = .gone
            startAttempt(.transparent)
            return
        }
        if configuration.hasScheduler && open.replaying && report(id, decides: true) {
            open.awaitingDecision = id
            phase = .open(open)
            return
        }
        phase = .open(open)
        report(id)
        apply(.no, to: id)
    }

    private mutating func retryDecided(_ id: AttemptID, _ decision: RetryDecision) {
        guard case .open(var open) = phase, open.awaitingDecision == id else { return }
        open.awaitingDecision = nil
        phase = .open(open)
        apply(decision, to: id)
    }

    private mutating func apply(_ decision: RetryDecision, to id: AttemptID) {
        guard case .open(var open) = phase else { return }
        let othersRun = open.scheduled != nil || attempts.indices.contains(where: { $0 != id && attempts[$0].isRunning })
        switch decision {
        case .retry(let delay, let withinDeadline) where withinDeadline && open.replaying:
            open.scheduled = .retry
            open.pendingResult = id
            phase = .open(open)
            output.append(.scheduleAttempt(afterMs: delay))
        case .retry, .no:
            if othersRun {
                if decision == .no {
                    open.pendingResult = id
                    phase = .open(open)
                }
            } else {
                finish(with: id)
            }
        case .finish:
            finish(with: id)
        }
    }

    private mutating func scheduledAttemptDue() {
        guard case .open(var open) = phase, let kind = open.scheduled else { return }
        open.scheduled = nil
        phase = .open(open)
        startAttempt(kind)
    }

    private mutating func filterScheduledAttempt(afterMs delay: UInt32) {
        guard case .open(var open) = phase, open.replaying else { return }
        open.scheduled = .hedge
        phase = .open(open)
        output.append(.scheduleAttempt(afterMs: delay))
    }

    private mutating func filterCancelledAttempts(keep: AttemptID?) {
        switch phase {
        case .open, .committed, .finished: cancelAttempts(except: keep)
        case .idle, .done: break
        }
    }

    /// The request outgrew the replay buffer, or its budget: the call
    /// commits (gRFC A6).
    /// No new attempt can start, and of the open ones only the one furthest
    /// along goes on; the others (hedges, and attempts still on their way)
    /// are cancelled at once, so that no upstream's backlog grows past its
    /// window and the client's credit follows one attempt.
    private mutating func stopReplaying() {
        guard case .open(var open) = phase else { return }
        open.replaying = false
        if open.scheduled != nil {
            open.scheduled = nil
            output.append(.cancelScheduledAttempt)
        }
        phase = .open(open)
        var keep: AttemptID?
        for id in attempts.indices where attempts[id].stage == .open && !attempts[id].cancelled {
            if keep.map({ attempts[id].written > attempts[$0].written }) ?? true { keep = id }
        }
        guard let keep else { return }
        for id in attempts.indices where id != keep { cancel(id) }
        dropReplay()
    }

    // MARK: Ending

    /// The call commits to `id`: the others are cancelled, the replay
    /// buffer goes, and the response head is sent on.
    private mutating func commit(_ id: AttemptID, head: CallAction.HeadSource) {
        cancelAttempts(except: id)
        phase = .committed(id)
        dropReplay()
        // (A held head stays readable: the executor sends it from there.)
        output.append(.sendResponseHead(id, head, endStream: false))
    }

    /// The call ends with the result of an attempt it had not committed to.
    private mutating func finish(with id: AttemptID) {
        guard case .open = phase, let outcome = attempts[id].outcome else { return }
        if outcome.transportFailure { return fail(outcome.status) }
        cancelAttempts(except: id)
        if outcome.trailersOnly {
            output.append(.sendResponseHead(id, .outcomeTrailers, endStream: true))
        } else {
            output.append(.sendResponseHead(id, .outcomeHead, endStream: false))
            output.append(.sendResponseEnd(outcome.trailers == nil ? .none : .outcome(id)))
        }
        complete(status: outcome.status, committed: id)
    }

    /// The upstream's final status is on its way to the client.
    private mutating func complete(status: GRPCStatus, committed id: AttemptID) {
        cancelScheduledAttempt()
        phase = .finished(Finished(status: status, committed: id))
        dropReplay()
        output.append(.finished)
        // An upstream that answered before the request ended needs no more
        // of it: our half closes with NO_ERROR (not CANCEL: it did nothing
        // wrong).
        if attempts[id].stage == .open, !attempts[id].sentEnd || attempts[id].sent > attempts[id].written {
            attempts[id].stage = .closing
            output.append(.resetStream(id, .noError))
        }
        creditClient()
    }

    /// The gateway's own final status goes to the client; every attempt is
    /// cancelled.
    private mutating func fail(_ status: GRPCStatus) {
        let committed: AttemptID?
        switch phase {
        case .idle, .open: committed = nil
        case .committed(let id): committed = id
        case .finished, .done: return
        }
        cancelAttempts(except: nil)
        phase = .finished(Finished(status: status, committed: committed))
        dropReplay()
        output.append(.finished)
        creditClient()
        if !downstreamClosed { output.append(.sendLocalStatus(responseStarted: committed != nil)) }
    }

    /// The transitions that follow from the state itself, checked once
    /// after every event (so that no handler needs to call back into
    /// another to find out whether the call is over).
    private mutating func settle() {
        if case .open(let open) = phase, !open.admitting, open.scheduled == nil, open.awaitingDecision == nil,
           !attempts.contains(where: { $0.isRunning }) {
            // (Checked after every event, so the cheap tests come first.)
            if let pending = open.pendingResult {
                // The last result left is the call's.
                finish(with: pending)
            } else if attempts.contains(where: { $0.cancelled }) {
                // A filter cancelled every attempt and scheduled none:
                // nothing would ever answer the client.
                fail(GRPCStatus(.cancelled, "a filter cancelled every attempt of the call and scheduled none"))
            } else {
                assertionFailure("an open call with no attempt, no schedule and no result: \(self)")
                fail(GRPCStatus(.internal, "the gateway has no attempt left for the call"))
            }
        }
        guard downstreamClosed, case .finished(let finished) = phase, !attempts.contains(where: { $0.isLive }) else { return }
        phase = .done(finished)
        output.append(.callDone(attempts: attempts.count))
    }

    // MARK: Helpers

    private mutating func forward(_ bytes: Int, to id: AttemptID) {
        attempts[id].sent += bytes
        output.append(.forwardRequestData(id))
    }

    private mutating func dropReplay() {
        guard replayChunks > 0 else { return }
        output.append(.dropReplay)
        replayChunks = 0
        replayBytes = 0
    }

    private mutating func creditClient() {
        guard request.received > request.credited else { return }
        output.append(.creditClient(bytes: request.received - request.credited))
        request.credited = request.received
    }

    private mutating func cancelScheduledAttempt() {
        guard case .open(var open) = phase, open.scheduled != nil else { return }
        open.scheduled = nil
        phase = .open(open)
        output.append(.cancelScheduledAttempt)
    }

    /// Cancels the scheduled attempt and every attempt but `keep`.
    private mutating func cancelAttempts(except keep: AttemptID?) {
        cancelScheduledAttempt()
        for id in attempts.indices where id != keep { cancel(id) }
    }

    private mutating func cancel(_ id: AttemptID) {
        guard attempts[id].isLive, !attempts[id].cancelled else { return }
        attempts[id].cancelled = true
        switch attempts[id].stage {
        case .picking, .waiting:
            attempts[id].stage = .gone
            output.append(.abandonWait(id))
        case .open:
            attempts[id].stage = .closing
            output.append(.resetStream(id, .cancel))
        case .starting, .opening, .closing, .gone:
            // Starting: reported when its hooks return. Opening: reset
            // once its stream exists (`streamOpened`).
            break
        }
    }

    /// Emits the attempt's one report if it is owed; false when it is not
    /// (never started, or already reported).
    /// `outcome`: the attempt's outcome when it is not set yet (nil: it is).
    @discardableResult
    private mutating func report(_ id: AttemptID, _ outcome: AttemptOutcome? = nil, decides: Bool = false) -> Bool {
        guard attempts[id].started, !attempts[id].reported else { return false }
        attempts[id].reported = true
        if let outcome { attempts[id].outcome = outcome }
        output.append(.reportAttempt(id, responseStarted: committedAttempt == id, decides: decides))
        return true
    }
}

extension CallStateMachine.Phase {
    /// The attempt whose response the client gets, once there is one. On
    /// the phase, so that the executor reads it from the machine's stored
    /// `phase` (a computed property of the machine, called from another
    /// module, copies the whole machine to borrow it).
    @inlinable public var committedAttempt: AttemptID? {
        switch self {
        case .committed(let id): id
        case .finished(let finished), .done(let finished): finished.committed
        default: nil
        }
    }

    /// The status the client got (or the call ended with).
    @inlinable public var finalStatus: GRPCStatus? {
        switch self {
        case .finished(let finished), .done(let finished): finished.status
        default: nil
        }
    }
}
