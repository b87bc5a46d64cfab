import MeshgateGRPC
import MeshgateHTTP2
import NIOCore
import Testing
@testable import GatewayHost

/// Drives a `CallStateMachine` the way `ProxyCall` does, without sockets,
/// and checks the machine's promises on every event: each started attempt
/// is reported exactly once and before the call's end, the end comes once,
/// and nothing follows it.
struct CallHarness {
    private(set) var machine: CallStateMachine
    /// Every action so far, in order.
    private(set) var log: [CallAction] = []
    private var reports: [AttemptID: Int] = [:]
    /// What each report carried (the machine's `attempts[id].outcome` when
    /// it reported).
    private(set) var reported: [AttemptID: AttemptOutcome] = [:]
    private var doneCount = 0

    init(hooks: Bool = false, scheduler: Bool = false, holdsHead: Bool = false, replayLimit: Int = 1 << 20) {
        machine = CallStateMachine(configuration: .init(
            runsHooks: hooks, hasScheduler: scheduler, holdsResponseHead: holdsHead, replayLimit: replayLimit,
            path: "/mesh.v1.MeshService/Process"))
    }

    /// A hedging chain: the first response head commits.
    static func hedging() -> CallHarness { CallHarness(hooks: true, scheduler: true, holdsHead: false) }

    /// A retry chain: a head waits for the first message.
    static func retrying(replayLimit: Int = 1 << 20) -> CallHarness {
        CallHarness(hooks: true, scheduler: true, holdsHead: true, replayLimit: replayLimit)
    }

    var phase: CallStateMachine.Phase { machine.phase }
    func attempt(_ id: AttemptID) -> AttemptState { machine.attempts[id] }

    @discardableResult
    mutating func send(_ event: CallEvent, sourceLocation: SourceLocation = #_sourceLocation) -> [CallAction] {
        let wasDone = if case .done = machine.phase { true } else { false }
        var actions: [CallAction] = []
        machine.handle(event, into: &actions)
        if wasDone {
            #expect(actions.isEmpty, "actions after the call was done: \(actions)", sourceLocation: sourceLocation)
        }
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
        log += actions
        return actions
    }

    /// Places attempt `id` on endpoint `endpoint` and takes it to an open
    /// stream, answering the hooks when the chain runs them. Returns the
    /// actions of `streamOpened` (replay, request end).
    @discardableResult
    mutating func open(_ id: AttemptID, endpoint: UInt64? = nil, sourceLocation: SourceLocation = #_sourceLocation) -> [CallAction] {
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
                        sourceLocation: SourceLocation = #_sourceLocation) -> [CallAction] {
        let actions = send(.start(requestEnded: requestEnded), sourceLocation: sourceLocation)
        guard machine.configuration.runsHooks else { return actions }
        #expect(actions == [.runRequestHeaderHooks], sourceLocation: sourceLocation)
        return send(.requestHeaderHooksReturned(rejection: rejection), sourceLocation: sourceLocation)
    }

    /// The actions of the whole log of one kind, by a matcher.
    func count(where matches: (CallAction) -> Bool) -> Int { log.filter(matches).count }
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
func localStatus(_ actions: [CallAction]) -> GRPCStatus? {
    for action in actions { if case .sendLocalStatus(let status, _) = action { return status } }
    return nil
}

/// The status of the call's `callDone`.
func endStatus(_ actions: [CallAction]) -> GRPCStatus? {
    for action in actions { if case .callDone(let status, _) = action { return status } }
    return nil
}

extension CallAction {
    var isReport: Bool { if case .reportAttempt = self { true } else { false } }
    var reportDecides: Bool? { if case .reportAttempt(_, _, let decides) = self { decides } else { nil } }
    var reportedAttempt: AttemptID? { if case .reportAttempt(let id, _, _) = self { id } else { nil } }
    var resetCode: HTTP2ErrorCode? { if case .resetStream(_, let code) = self { code } else { nil } }
}
