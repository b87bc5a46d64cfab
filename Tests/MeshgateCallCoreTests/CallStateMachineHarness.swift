import MeshgateGRPC
import MeshgateHTTP2
import NIOCore
import Testing
@testable import MeshgateCallCore

/// What an action amounts to once its data is resolved the way
/// `ProxyCall` resolves it (the current event's bytes and headers, the
/// machine's held heads, outcomes, trailers and final status, the kept
/// replay bytes): the tests assert which bytes and headers go where.
enum CallEffect: Equatable {
    case runRequestHeaderHooks
    case place(AttemptID, kind: AttemptKind, avoidEndpoint: UInt64)
    case abandonWait(AttemptID)
    case runAttemptStartHooks(AttemptID)
    case openStream(AttemptID, endStream: Bool)
    case sendRequestData(AttemptID, ByteBuffer)
    case sendRequestEnd(AttemptID, trailers: HTTP2HeaderList?)
    case resetStream(AttemptID, HTTP2ErrorCode)
    case creditUpstream(AttemptID, bytes: Int)
    case reportAttempt(AttemptID, responseStarted: Bool, decides: Bool)
    case scheduleAttempt(afterMs: UInt32)
    case cancelScheduledAttempt
    case creditClient(bytes: Int)
    case sendResponseHead(AttemptID, HTTP2HeaderList, endStream: Bool)
    case sendResponseData(ByteBuffer)
    case sendResponseEnd(trailers: HTTP2HeaderList?)
    case sendLocalStatus(GRPCStatus, responseStarted: Bool)
    case discardQueuedResponse
    case finished(GRPCStatus)
    case callDone(GRPCStatus, attempts: Int)
}

/// Drives a `CallStateMachine` the way `ProxyCall` does, without sockets,
/// and checks the machine's promises on every event: each started attempt
/// is reported exactly once and before the call's end, the end comes once,
/// and nothing follows it.
struct CallHarness {
    private(set) var machine: CallStateMachine
    /// Every effect so far, in order.
    private(set) var log: [CallEffect] = []
    /// The request bytes the executor keeps for replay.
    private(set) var replay: [ByteBuffer] = []
    private var reports: [AttemptID: Int] = [:]
    /// What each report carried (the machine's `attempts[id].outcome` when
    /// it reported).
    private(set) var reported: [AttemptID: AttemptOutcome] = [:]
    private var doneCount = 0

    init(hooks: Bool = false, scheduler: Bool = false, holdsHead: Bool = false, replayLimit: Int = 1 << 20,
         attemptStorage: [AttemptState] = []) {
        machine = CallStateMachine(configuration: .init(
            runsHooks: hooks, hasScheduler: scheduler, holdsResponseHead: holdsHead, replayLimit: replayLimit,
            path: "/mesh.v1.MeshService/Process"), attemptStorage: attemptStorage)
    }

    mutating func takeAttemptStorage() -> [AttemptState] { machine.takeAttemptStorage() }

    /// A hedging chain: the first response head commits.
    static func hedging() -> CallHarness { CallHarness(hooks: true, scheduler: true, holdsHead: false) }

    /// A retry chain: a head waits for the first message.
    static func retrying(replayLimit: Int = 1 << 20) -> CallHarness {
        CallHarness(hooks: true, scheduler: true, holdsHead: true, replayLimit: replayLimit)
    }

    var phase: CallStateMachine.Phase { machine.phase }
    func attempt(_ id: AttemptID) -> AttemptState { machine.attempts[id] }

    @discardableResult
    mutating func send(_ event: CallEvent, sourceLocation: SourceLocation = #_sourceLocation) -> [CallEffect] {
        let wasDone = if case .done = machine.phase { true } else { false }
        var buffer = ActionBuffer()
        machine.handle(event, into: &buffer)
        let actions = Array(buffer.elements)
        if wasDone {
            #expect(actions.isEmpty, "actions after the call was done: \(actions)", sourceLocation: sourceLocation)
        }
        var effects: [CallEffect] = []
        for action in actions { effects += resolve(action, event, sourceLocation) }
        for action in actions {
            switch action {
            case .reportAttempt(let id, _, _):
                reports[id, default: 0] += 1
                reported[id] = machine.attempts[id].outcome
                #expect(reported[id] != nil, "attempt \(id) reported without an outcome", sourceLocation: sourceLocation)
                #expect(reports[id] == 1, "attempt \(id) reported \(reports[id]!) times", sourceLocation: sourceLocation)
            case .callDone:
                doneCount += 1
                #expect(doneCount == 1, "the call ended twice", sourceLocation: sourceLocation)
                for id in machine.attempts.indices where machine.attempts[id].started {
                    #expect(reports[id] == 1, "attempt \(id) started but was not reported before the end", sourceLocation: sourceLocation)
                }
                #expect(machine.attempts.allSatisfy { !$0.isLive }, "the call ended with attempts alive", sourceLocation: sourceLocation)
            default:
                break
            }
        }
        log += effects
        return effects
    }

    /// What `ProxyCall.execute` does with the action's data.
    private mutating func resolve(_ action: CallAction, _ event: CallEvent, _ sourceLocation: SourceLocation) -> [CallEffect] {
        // Resolved as the executor resolves them (`CallEvent.bytes(for:)`,
        // `attemptHeaderList`); a mismatch is recorded as a failure.
        func eventData() -> ByteBuffer {
            guard let data = event.bytes(for: action) else {
                Issue.record("\(action) for an event without its bytes: \(event)", sourceLocation: sourceLocation)
                return ByteBuffer()
            }
            return data
        }
        func eventHeaders() -> HTTP2HeaderList {
            guard let headers = event.attemptHeaderList else {
                Issue.record("\(action) for an event without headers: \(event)", sourceLocation: sourceLocation)
                return []
            }
            return headers
        }
        switch action {
        case .runRequestHeaderHooks: return [.runRequestHeaderHooks]
        case .place(let id, let kind, let avoid): return [.place(id, kind: kind, avoidEndpoint: avoid)]
        case .abandonWait(let id): return [.abandonWait(id)]
        case .runAttemptStartHooks(let id): return [.runAttemptStartHooks(id)]
        case .openStream(let id, let end): return [.openStream(id, endStream: end)]
        case .forwardRequestData(let id): return [.sendRequestData(id, eventData())]
        case .keepForReplay:
            replay.append(eventData())
            return []
        case .replay(let id): return replay.map { .sendRequestData(id, $0) }
        case .dropReplay:
            replay.removeAll()
            return []
        case .sendRequestEnd(let id): return [.sendRequestEnd(id, trailers: machine.request.trailers)]
        case .resetStream(let id, let code): return [.resetStream(id, code)]
        case .creditUpstream(let id, let bytes): return [.creditUpstream(id, bytes: bytes)]
        case .reportAttempt(let id, let started, let decides): return [.reportAttempt(id, responseStarted: started, decides: decides)]
        case .scheduleAttempt(let delay): return [.scheduleAttempt(afterMs: delay)]
        case .cancelScheduledAttempt: return [.cancelScheduledAttempt]
        case .creditClient(let bytes): return [.creditClient(bytes: bytes)]
        case .sendResponseHead(let id, let source, let end):
            let head: HTTP2HeaderList?
            switch source {
            case .event: head = eventHeaders()
            case .held: head = machine.attempts[id].heldHead
            case .outcomeHead: head = machine.attempts[id].outcome?.head ?? []
            case .outcomeTrailers: head = machine.attempts[id].outcome?.trailers
            }
            #expect(head != nil, "\(action) has no head to send", sourceLocation: sourceLocation)
            return [.sendResponseHead(id, head ?? [], endStream: end)]
        case .forwardResponseData: return [.sendResponseData(eventData())]
        case .sendResponseEnd(let source):
            switch source {
            case .event: return [.sendResponseEnd(trailers: eventHeaders())]
            case .outcome(let id): return [.sendResponseEnd(trailers: machine.attempts[id].outcome?.trailers)]
            case .none: return [.sendResponseEnd(trailers: nil)]
            }
        case .sendLocalStatus(let started): return [.sendLocalStatus(finalStatus(sourceLocation), responseStarted: started)]
        case .discardQueuedResponse: return [.discardQueuedResponse]
        case .finished: return [.finished(finalStatus(sourceLocation))]
        case .callDone(let attempts): return [.callDone(finalStatus(sourceLocation), attempts: attempts)]
        }
    }

    private func finalStatus(_ sourceLocation: SourceLocation) -> GRPCStatus {
        guard let status = machine.finalStatus else {
            Issue.record("a final status is sent before the call has one", sourceLocation: sourceLocation)
            return GRPCStatus(.unknown, "")
        }
        return status
    }

    /// Places attempt `id` on endpoint `endpoint` and takes it to an open
    /// stream, answering the hooks when the chain runs them. Returns the
    /// actions of `streamOpened` (replay, request end).
    @discardableResult
    mutating func open(_ id: AttemptID, endpoint: UInt64? = nil, sourceLocation: SourceLocation = #_sourceLocation) -> [CallEffect] {
        let endpoint = endpoint ?? UInt64(100 + id)
        send(.picked(id, endpointID: endpoint, address: "10.0.0.\(endpoint):50051"), sourceLocation: sourceLocation)
        var actions = send(.connectionReady(id), sourceLocation: sourceLocation)
        if machine.configuration.runsHooks {
            #expect(actions == [.runAttemptStartHooks(id)], sourceLocation: sourceLocation)
            actions = send(.attemptStartHooksReturned(id), sourceLocation: sourceLocation)
        }
        #expect(actions.count == 1, sourceLocation: sourceLocation)
        guard case .openStream(id, _) = actions.first else {
            Issue.record("expected openStream(\(id)), got \(actions)", sourceLocation: sourceLocation)
            return []
        }
        return send(.streamOpened(id), sourceLocation: sourceLocation)
    }

    /// Starts the call and answers the request hooks (when the chain runs
    /// them) with `rejection`.
    @discardableResult
    mutating func start(requestEnded: Bool = true, rejection: GRPCStatus? = nil,
                        sourceLocation: SourceLocation = #_sourceLocation) -> [CallEffect] {
        let actions = send(.start(requestEnded: requestEnded), sourceLocation: sourceLocation)
        guard machine.configuration.runsHooks else { return actions }
        #expect(actions == [.runRequestHeaderHooks], sourceLocation: sourceLocation)
        return send(.requestHeaderHooksReturned(rejection: rejection), sourceLocation: sourceLocation)
    }

    /// The actions of the whole log of one kind, by a matcher.
    func count(where matches: (CallEffect) -> Bool) -> Int { log.filter(matches).count }
}

// MARK: Fixtures

let responseHead: HTTP2HeaderList = [(":status", "200"), ("content-type", "application/grpc")]

func trailers(_ code: GRPCStatusCode, _ message: String = "") -> HTTP2HeaderList {
    [("grpc-status", String(code.rawValue)), ("grpc-message", message)]
}

func trailersOnly(_ code: GRPCStatusCode, _ message: String = "") -> HTTP2HeaderList {
    [(":status", "200"), ("content-type", "application/grpc"), ("grpc-status", String(code.rawValue)), ("grpc-message", message)]
}

func bytes(_ count: Int, _ fill: UInt8 = 0x2a) -> ByteBuffer {
    ByteBuffer(repeating: fill, count: count)
}

/// The status of the first `sendLocalStatus` among `actions`.
func localStatus(_ actions: [CallEffect]) -> GRPCStatus? {
    for action in actions { if case .sendLocalStatus(let status, _) = action { return status } }
    return nil
}

/// The status of the call's `callDone`.
func endStatus(_ actions: [CallEffect]) -> GRPCStatus? {
    for action in actions { if case .callDone(let status, _) = action { return status } }
    return nil
}

extension CallEffect {
    var isReport: Bool { if case .reportAttempt = self { true } else { false } }
    var reportDecides: Bool? { if case .reportAttempt(_, _, let decides) = self { decides } else { nil } }
    var reportedAttempt: AttemptID? { if case .reportAttempt(let id, _, _) = self { id } else { nil } }
    var resetCode: HTTP2ErrorCode? { if case .resetStream(_, let code) = self { code } else { nil } }
}
