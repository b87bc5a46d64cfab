import MeshgateGRPC
import MeshgateHTTP2
import NIOCore
import Testing
@testable import MeshgateCallCore

/// The call core without sockets: every rule the integration tests pin
/// end to end (gRFC A6 retries and hedging, replay, transparent retry,
/// deadlines, cancellation, flow control), one event at a time.
@Suite struct CallStateMachineTests {
    let ok = GRPCStatus(.ok, "")

    // MARK: The plain path

    @Test func unaryCallWithoutFiltersGoesThroughEveryPhase() {
        var h = CallHarness()
        #expect(h.phase == .idle)
        #expect(h.start() == [.place(0, kind: .first, avoidEndpoint: 0)])
        #expect(h.send(.picked(0, endpointID: 7, address: "a:1")) == [])
        #expect(h.attempt(0).stage == .waiting)
        // No filters: straight from a connection to the stream, with
        // END_STREAM on the head (the request ended, nothing to replay).
        #expect(h.send(.connectionReady(0)) == [.openStream(0, endStream: true)])
        #expect(h.send(.streamOpened(0)) == [])
        #expect(h.send(.attemptHeaders(0, responseHead, isTrailers: false, endStream: false))
                == [.sendResponseHead(0, responseHead, endStream: false)])
        #expect(h.phase == .committed(0))
        #expect(h.send(.attemptData(0, bytes(5))) == [.sendResponseData(bytes(5))])
        #expect(h.send(.responseWritten(bytes: 5)) == [.creditUpstream(0, bytes: 5)])
        let end = trailers(.ok)
        #expect(h.send(.attemptHeaders(0, end, isTrailers: true, endStream: true)) == [.sendResponseEnd(trailers: end), .finished(ok)])
        #expect(h.phase == .finished(.init(status: ok, committed: 0)))
        let outcome = AttemptOutcome.fromStatusHeaders(end, head: nil, trailersOnly: false)
        #expect(h.send(.attemptClosed(0, .finished)) == [.reportAttempt(0, responseStarted: true, decides: false)])
        #expect(h.reported[0] == outcome)
        #expect(h.send(.downstreamClosed(cleanly: true)) == [.callDone(ok, attempts: 1)])
        #expect(h.phase == .done(.init(status: ok, committed: 0)))
        // Done is final: late events change nothing.
        #expect(h.send(.attemptData(0, bytes(1))) == [])
        #expect(h.send(.deadlineExpired) == [])
        #expect(h.send(.filterCancelledAttempts(keep: nil)) == [])
    }

    @Test func aDoneCallGivesItsAttemptTableBackForTheNextCall() {
        var h = CallHarness()
        _ = h.start()
        _ = h.send(.picked(0, endpointID: 7, address: "a:1"))
        // Not done yet: nothing is handed back, the attempt stays.
        #expect(h.takeAttemptStorage().isEmpty)
        #expect(h.machine.attempts.count == 1)
        _ = h.send(.connectionReady(0))
        _ = h.send(.streamOpened(0))
        let end = trailers(.ok)
        _ = h.send(.attemptHeaders(0, end, isTrailers: false, endStream: true))
        _ = h.send(.attemptClosed(0, .finished))
        #expect(h.send(.downstreamClosed(cleanly: true)) == [.callDone(ok, attempts: 1)])
        let table = h.takeAttemptStorage()
        #expect(table.isEmpty && table.capacity >= 1)
        #expect(h.machine.attempts.isEmpty)
        #expect(h.send(.attemptClosed(0, .finished)) == [], "late events find no attempt")

        var next = CallHarness(attemptStorage: table)
        #expect(next.start() == [.place(0, kind: .first, avoidEndpoint: 0)])
        #expect(next.machine.attempts.capacity == table.capacity)
    }

    @Test func requestHooksRunBeforeTheFirstAttempt() {
        var h = CallHarness(hooks: true)
        #expect(h.send(.start(requestEnded: true)) == [.runRequestHeaderHooks])
        #expect(h.phase == .open(.init(admitting: true)))
        #expect(h.send(.requestHeaderHooksReturned(rejection: nil)) == [.place(0, kind: .first, avoidEndpoint: 0)])
        _ = h.send(.picked(0, endpointID: 1, address: "a:1"))
        #expect(h.send(.connectionReady(0)) == [.runAttemptStartHooks(0)])
        #expect(h.attempt(0).stage == .starting)
        #expect(h.send(.attemptStartHooksReturned(0)) == [.openStream(0, endStream: true)])
        #expect(h.attempt(0).started)
    }

    @Test func aFilterThatAnswersLocallyEndsTheCallWithoutAnAttempt() {
        var h = CallHarness(hooks: true)
        let denied = GRPCStatus(.permissionDenied, "no x-api-key")
        #expect(h.start(rejection: denied) == [.finished(denied), .sendLocalStatus(denied, responseStarted: false)])
        #expect(h.machine.attempts.isEmpty)
        #expect(h.send(.downstreamClosed(cleanly: true)) == [.callDone(denied, attempts: 0)])
    }

    @Test func aHedgeScheduledFromTheRequestHooksStartsAfterTheFirstAttempt() {
        var h = CallHarness.hedging()
        #expect(h.send(.start(requestEnded: true)) == [.runRequestHeaderHooks])
        // call_start_attempt inside on_request_headers, queued before the hooks' return.
        #expect(h.send(.filterScheduledAttempt(afterMs: 50)) == [.scheduleAttempt(afterMs: 50)])
        #expect(h.send(.requestHeaderHooksReturned(rejection: nil)) == [.place(0, kind: .first, avoidEndpoint: 0)])
        #expect(h.send(.scheduledAttemptDue) == [.place(1, kind: .hedge, avoidEndpoint: 0)])
    }

    // MARK: Request bytes, replay and flow control

    @Test func requestBytesAreReplayedToAnAttemptThatOpensLater() {
        var h = CallHarness()
        h.start(requestEnded: false)
        #expect(h.send(.requestData(bytes(10))) == [])
        #expect(h.replay == [bytes(10)] && h.machine.replayBytes == 10)
        _ = h.send(.picked(0, endpointID: 1, address: "a:1"))
        #expect(h.send(.connectionReady(0)) == [.openStream(0, endStream: false)])
        #expect(h.send(.streamOpened(0)) == [.sendRequestData(0, bytes(10))])
        // The client gets its window back as the upstream takes the bytes.
        #expect(h.send(.attemptWrote(0, bytes: 10)) == [.creditClient(bytes: 10)])
        #expect(h.send(.requestData(bytes(5, 1))) == [.sendRequestData(0, bytes(5, 1))])
        let requestTrailers: HTTP2HeaderList = [("x-checksum", "7")]
        #expect(h.send(.requestEnd(trailers: requestTrailers)) == [.sendRequestEnd(0, trailers: requestTrailers)])
        #expect(h.send(.requestEnd(trailers: nil)) == [], "the request ends once")
    }

    @Test func creditFollowsTheAttemptFurthestAlong() {
        var h = CallHarness.hedging()
        h.start(requestEnded: false)
        h.open(0)
        _ = h.send(.filterScheduledAttempt(afterMs: 0))
        _ = h.send(.scheduledAttemptDue)
        h.open(1)
        #expect(h.send(.requestData(bytes(100))) == [.sendRequestData(0, bytes(100)), .sendRequestData(1, bytes(100))])
        #expect(h.send(.attemptWrote(1, bytes: 40)) == [.creditClient(bytes: 40)])
        #expect(h.send(.attemptWrote(0, bytes: 30)) == [], "behind attempt 1: no credit")
        #expect(h.send(.attemptWrote(0, bytes: 30)) == [.creditClient(bytes: 20)])
        // Before a commit the client's reads credit nobody.
        #expect(h.send(.responseWritten(bytes: 9)) == [])
    }

    @Test func theRequestOutgrowingTheReplayBufferCommitsToTheAttemptFurthestAlong() {
        var h = CallHarness(hooks: true, scheduler: true, holdsHead: false, replayLimit: 100)
        h.start(requestEnded: false)
        h.open(0)
        _ = h.send(.filterScheduledAttempt(afterMs: 0))
        _ = h.send(.scheduledAttemptDue)
        h.open(1)
        _ = h.send(.requestData(bytes(60)))
        _ = h.send(.attemptWrote(0, bytes: 60))
        _ = h.send(.attemptWrote(1, bytes: 30))
        _ = h.send(.filterScheduledAttempt(afterMs: 500))
        // Past the limit: attempt 0 has taken more, attempt 1 goes, and so
        // does the scheduled one.
        #expect(h.send(.requestData(bytes(60))) == [
            .sendRequestData(0, bytes(60)), .sendRequestData(1, bytes(60)),
            .cancelScheduledAttempt, .resetStream(1, .cancel),
        ])
        #expect(h.replay.isEmpty && h.machine.replayBytes == 0)
        #expect(!h.machine.acceptsNewAttempts)
        #expect(h.send(.filterScheduledAttempt(afterMs: 0)) == [], "no attempt after the commit")
        // Later bytes go to attempt 0 only and are not kept.
        #expect(h.send(.requestData(bytes(10))) == [.sendRequestData(0, bytes(10))])
        #expect(h.replay.isEmpty && h.machine.replayBytes == 0)
        let cancelled = h.send(.attemptClosed(1, .reset(code: .cancel, local: true)))
        #expect(cancelled.count == 1 && cancelled[0].reportedAttempt == 1 && h.reported[1]?.status.code == .cancelled)
        // Attempt 0 now ends without a retry: no plugin is asked (decides
        // false), the call ends with its result, and its unfinished
        // request is closed with NO_ERROR.
        let unavailable = trailersOnly(.unavailable, "down")
        let end = h.send(.attemptHeaders(0, unavailable, isTrailers: false, endStream: true))
        #expect(end.first?.reportDecides == false)
        #expect(Array(end.dropFirst()) == [
            .sendResponseHead(0, unavailable, endStream: true), .finished(GRPCStatus(.unavailable, "down")),
            .resetStream(0, .noError), .creditClient(bytes: 70),
        ])
    }

    @Test func pastTheReplayLimitWithNoAttemptOpenTheFirstToOpenGetsEveryByte() {
        var h = CallHarness.retrying(replayLimit: 100)
        h.start(requestEnded: false)
        _ = h.send(.picked(0, endpointID: 1, address: "a:1"))
        #expect(h.send(.requestData(bytes(150))) == [])
        #expect(!h.machine.acceptsNewAttempts)
        #expect(h.replay == [bytes(150)] && h.machine.replayChunks == 1, "kept until an attempt can take it")
        #expect(h.send(.requestData(bytes(5))) == [])
        let opened = h.open(0)
        #expect(opened == [.sendRequestData(0, bytes(150)), .sendRequestData(0, bytes(5))])
        #expect(h.replay.isEmpty && h.machine.replayBytes == 0)
    }

    @Test func aReplayBudgetWithNoRoomCommitsLikeTheReplayLimit() {
        var h = CallHarness.retrying()
        h.start(requestEnded: false)
        h.open(0)
        _ = h.send(.requestData(bytes(60)))
        #expect(h.machine.acceptsNewAttempts && h.machine.replayBytes == 60)
        // The executor could not count the kept bytes against the client's
        // connection: the call stops keeping them and can no longer retry.
        #expect(h.send(.keptBytesRefused(awaitingStream: false)) == [])
        #expect(!h.machine.acceptsNewAttempts)
        #expect(h.replay.isEmpty && h.machine.replayBytes == 0)
        #expect(h.send(.requestData(bytes(10))) == [.sendRequestData(0, bytes(10))], "later bytes are sent, not kept")
        #expect(h.replay.isEmpty)
        // Repeated, or after the commit, it changes nothing.
        #expect(h.send(.keptBytesRefused(awaitingStream: false)) == [])
    }

    @Test func bytesWaitingForAStreamWithoutRoomEndTheCall() {
        var h = CallHarness()
        h.start(requestEnded: false)
        _ = h.send(.picked(0, endpointID: 1, address: "a:1"))
        // No attempt takes them yet: kept as required bytes.
        #expect(h.send(.requestData(bytes(40))) == [])
        #expect(h.replay == [bytes(40)])
        let refused = h.send(.keptBytesRefused(awaitingStream: true))
        #expect(localStatus(refused)?.code == .resourceExhausted)
        #expect(localStatus(refused)?.message.contains("per_connection_buffer_limit_bytes") == true)
        #expect(h.replay.isEmpty, "the kept bytes go with the call")
        #expect(refused.contains(.abandonWait(0)), "the waiting attempt is let go")
    }

    @Test func bytesAfterTheEndAreReadAndCredited() {
        var h = CallHarness()
        h.start(requestEnded: false)
        h.open(0)
        _ = h.send(.attemptHeaders(0, responseHead, isTrailers: false, endStream: false))
        // The upstream answered before the request ended: our half closes
        // with NO_ERROR, not CANCEL.
        let end = trailers(.ok)
        #expect(h.send(.attemptHeaders(0, end, isTrailers: true, endStream: true))
                == [.sendResponseEnd(trailers: end), .finished(ok), .resetStream(0, .noError)])
        #expect(h.send(.requestData(bytes(8))) == [.creditClient(bytes: 8)])
        // The client still reads the last response bytes: the upstream
        // gets its window back.
        #expect(h.send(.responseWritten(bytes: 3)) == [.creditUpstream(0, bytes: 3)])
    }

    // MARK: Commit

    @Test func hedgingCommitsOnTheFirstResponseHead() {
        var h = CallHarness.hedging()
        h.start()
        _ = h.send(.picked(0, endpointID: 100, address: "a:1"))
        #expect(h.send(.connectionReady(0)) == [.runAttemptStartHooks(0)])
        // The hedge plugin schedules the next attempt from on_attempt_start.
        #expect(h.send(.filterScheduledAttempt(afterMs: 10)) == [.scheduleAttempt(afterMs: 10)])
        #expect(h.send(.attemptStartHooksReturned(0)) == [.openStream(0, endStream: true)])
        _ = h.send(.streamOpened(0))
        #expect(h.send(.scheduledAttemptDue) == [.place(1, kind: .hedge, avoidEndpoint: 0)])
        h.open(1)
        _ = h.send(.filterScheduledAttempt(afterMs: 10))
        #expect(h.send(.attemptHeaders(1, responseHead, isTrailers: false, endStream: false))
                == [.cancelScheduledAttempt, .resetStream(0, .cancel), .sendResponseHead(1, responseHead, endStream: false)])
        #expect(h.phase == .committed(1))
        // The loser's late bytes are dropped (and credited upstream).
        #expect(h.send(.attemptData(0, bytes(4))) == [.creditUpstream(0, bytes: 4)])
        let closed = h.send(.attemptClosed(0, .reset(code: .cancel, local: true)))
        #expect(closed == [.reportAttempt(0, responseStarted: false, decides: false)])
        #expect(h.reported[0] == AttemptOutcome(status: GRPCStatus(.cancelled, "attempt cancelled by the gateway")))
        #expect(h.phase == .committed(1), "a cancelled loser does not end the call")
    }

    @Test func aRetryChainCommitsOnTheFirstMessageNotOnTheHead() {
        var h = CallHarness.retrying()
        h.start()
        h.open(0)
        #expect(h.send(.attemptHeaders(0, responseHead, isTrailers: false, endStream: false)) == [])
        #expect(h.attempt(0).heldHead == responseHead)
        #expect(h.phase != .committed(0))
        #expect(h.send(.attemptData(0, bytes(6))) == [.sendResponseHead(0, responseHead, endStream: false), .sendResponseData(bytes(6))])
        #expect(h.phase == .committed(0))
        #expect(!h.machine.acceptsNewAttempts)
    }

    // MARK: Retries (gRFC A6)

    @Test func aTrailersOnlyFailureIsRetriedOnAnotherEndpointWithTheRequestReplayed() {
        var h = CallHarness.retrying()
        h.start(requestEnded: false)
        _ = h.send(.requestData(bytes(12)))
        let requestTrailers: HTTP2HeaderList = [("x-sum", "1")]
        _ = h.send(.requestEnd(trailers: requestTrailers))
        h.open(0)
        let failed = trailersOnly(.unavailable, "overloaded")
        let ended = h.send(.attemptHeaders(0, failed, isTrailers: false, endStream: true))
        #expect(ended == [.reportAttempt(0, responseStarted: false, decides: true)])
        #expect(h.reported[0] == .fromStatusHeaders(failed, head: nil, trailersOnly: true))
        #expect(h.send(.retryDecided(0, .retry(afterMs: 25, withinDeadline: true))) == [.scheduleAttempt(afterMs: 25)])
        #expect(h.send(.attemptClosed(0, .finished)) == [], "reported once already")
        #expect(h.send(.scheduledAttemptDue) == [.place(1, kind: .retry, avoidEndpoint: 100)])
        // The retry gets the whole request again, trailers included.
        _ = h.send(.picked(1, endpointID: 101, address: "b:1"))
        _ = h.send(.connectionReady(1))
        #expect(h.send(.attemptStartHooksReturned(1)) == [.openStream(1, endStream: false)])
        #expect(h.send(.streamOpened(1)) == [.sendRequestData(1, bytes(12)), .sendRequestEnd(1, trailers: requestTrailers)])
        _ = h.send(.attemptHeaders(1, responseHead, isTrailers: false, endStream: false))
        #expect(h.send(.attemptData(1, bytes(2))) == [.sendResponseHead(1, responseHead, endStream: false), .sendResponseData(bytes(2))])
        _ = h.send(.attemptHeaders(1, trailers(.ok), isTrailers: true, endStream: true))
        _ = h.send(.attemptClosed(1, .finished))
        #expect(h.send(.downstreamClosed(cleanly: true)) == [.callDone(ok, attempts: 2)])
    }

    @Test func aStatusAfterAHeadWithoutMessageIsStillRetriedAndEndsWithTheHeldHead() {
        var h = CallHarness.retrying()
        h.start()
        h.open(0)
        _ = h.send(.attemptHeaders(0, responseHead, isTrailers: false, endStream: false))
        let end = trailers(.unavailable, "draining")
        let ended = h.send(.attemptHeaders(0, end, isTrailers: true, endStream: true))
        #expect(ended == [.reportAttempt(0, responseStarted: false, decides: true)])
        #expect(h.reported[0] == .fromStatusHeaders(end, head: responseHead, trailersOnly: false))
        // No retry: the client gets the held head, then the trailers.
        #expect(h.send(.retryDecided(0, .no)) == [
            .sendResponseHead(0, responseHead, endStream: false), .sendResponseEnd(trailers: end),
            .finished(GRPCStatus(.unavailable, "draining")),
        ])
    }

    @Test func aRetryThatWouldPassTheDeadlineEndsTheCallWithTheResult() {
        var h = CallHarness.retrying()
        h.start()
        h.open(0)
        let failed = trailersOnly(.unavailable)
        _ = h.send(.attemptHeaders(0, failed, isTrailers: false, endStream: true))
        #expect(h.send(.retryDecided(0, .retry(afterMs: 5_000, withinDeadline: false)))
                == [.sendResponseHead(0, failed, endStream: true), .finished(GRPCStatus(.unavailable, ""))])
    }

    @Test func theDeadlineHoldsAcrossAttempts() {
        var h = CallHarness.retrying()
        h.start()
        h.open(0)
        _ = h.send(.attemptHeaders(0, trailersOnly(.unavailable), isTrailers: false, endStream: true))
        _ = h.send(.retryDecided(0, .retry(afterMs: 1_000, withinDeadline: true)))
        _ = h.send(.attemptClosed(0, .finished))
        let expired = GRPCStatus(.deadlineExceeded, "deadline exceeded at the gateway while waiting for /mesh.v1.MeshService/Process")
        #expect(h.send(.deadlineExpired) == [
            .discardQueuedResponse, .cancelScheduledAttempt, .finished(expired), .sendLocalStatus(expired, responseStarted: false),
        ])
        #expect(h.send(.scheduledAttemptDue) == [], "the retry never starts")
        #expect(h.send(.downstreamClosed(cleanly: true)) == [.callDone(expired, attempts: 1)])
    }

    @Test func theDeadlineAfterTheCommitEndsTheResponseWithTrailers() {
        var h = CallHarness()
        h.start()
        h.open(0)
        _ = h.send(.attemptHeaders(0, responseHead, isTrailers: false, endStream: false))
        let actions = h.send(.deadlineExpired)
        #expect(actions.first == .discardQueuedResponse)
        #expect(actions.contains(.resetStream(0, .cancel)))
        #expect(localStatus(actions)?.code == .deadlineExceeded)
        #expect(actions.last == .sendLocalStatus(localStatus(actions)!, responseStarted: true))
    }

    @Test func finishDecisionEndsTheCallAndCancelsTheOtherAttempts() {
        var h = CallHarness.hedging()
        h.start()
        h.open(0)
        _ = h.send(.filterScheduledAttempt(afterMs: 0))
        _ = h.send(.scheduledAttemptDue)
        h.open(1)
        let fatal = trailersOnly(.invalidArgument, "bad")
        _ = h.send(.attemptHeaders(0, fatal, isTrailers: false, endStream: true))
        #expect(h.send(.retryDecided(0, .finish)) == [
            .resetStream(1, .cancel), .sendResponseHead(0, fatal, endStream: true), .finished(GRPCStatus(.invalidArgument, "bad")),
        ])
    }

    // MARK: Transparent retry

    @Test func aRefusedStreamIsSentAgainOnceWithoutAskingThePlugins() {
        var h = CallHarness.retrying()
        h.start()
        h.open(0)
        let refused = h.send(.attemptClosed(0, .reset(code: .refusedStream, local: false)))
        #expect(refused.count == 2)
        #expect(refused[0].reportDecides == false)
        #expect(refused[0].reportedAttempt == 0 && h.reported[0]?.status.code == .unavailable)
        #expect(refused[1] == .place(1, kind: .transparent, avoidEndpoint: 100))
        h.open(1)
        // The second refusal goes to the retry plugin like any failure.
        let again = h.send(.attemptClosed(1, .reset(code: .refusedStream, local: false)))
        #expect(again.count == 1 && again[0].reportDecides == true)
        let failed = h.send(.retryDecided(1, .no))
        #expect(localStatus(failed)?.code == .unavailable)
        #expect(localStatus(failed)?.message.contains("REFUSED_STREAM") == true)
    }

    @Test func aConnectionThatCannotTakeTheStreamCountsAsRefused() {
        var h = CallHarness()
        h.start()
        _ = h.send(.picked(0, endpointID: 100, address: "a:1"))
        _ = h.send(.connectionReady(0))
        let actions = h.send(.streamNotOpened(0))
        #expect(actions.count == 2)
        #expect(actions[0].reportedAttempt == 0)
        #expect(h.reported[0]?.status.message.contains("could not take a new stream") == true)
        #expect(actions[1] == .place(1, kind: .transparent, avoidEndpoint: 100))
        #expect(h.attempt(0).stage == .gone)
    }

    @Test func aFailedConnectPlacesTheAttemptAgainAvoidingTheEndpoint() {
        var h = CallHarness()
        h.start()
        _ = h.send(.picked(0, endpointID: 100, address: "a:1"))
        #expect(h.send(.connectFailed(0)) == [.place(0, kind: .first, avoidEndpoint: 100)])
        #expect(h.attempt(0).stage == .picking)
        h.open(0, endpoint: 101)
        #expect(h.attempt(0).endpointID == 101)
        #expect(h.machine.attempts.count == 1, "the same attempt, not a new one")
    }

    // MARK: Balancer failures

    @Test func noEndpointEndsTheCallWithTheBalancersReason() {
        var h = CallHarness()
        h.start()
        let why = GRPCStatus(.unavailable, "no usable endpoint has label version=v3")
        #expect(h.send(.pickFailed(0, status: why)) == [.finished(why), .sendLocalStatus(why, responseStarted: false)])
        #expect(h.send(.downstreamClosed(cleanly: true)) == [.callDone(why, attempts: 1)])
    }

    @Test func aHedgeWithNoEndpointLeavesTheRunningAttemptAlone() {
        var h = CallHarness.hedging()
        h.start()
        h.open(0)
        _ = h.send(.filterScheduledAttempt(afterMs: 0))
        _ = h.send(.scheduledAttemptDue)
        #expect(h.send(.pickFailed(1, status: GRPCStatus(.unavailable, "none"))) == [])
        #expect(h.send(.attemptHeaders(0, responseHead, isTrailers: false, endStream: false))
                == [.sendResponseHead(0, responseHead, endStream: false)])
    }

    @Test func aRetryWithNoEndpointEndsWithTheLastResult() {
        var h = CallHarness.retrying()
        h.start()
        h.open(0)
        let failed = trailersOnly(.unavailable, "first")
        _ = h.send(.attemptHeaders(0, failed, isTrailers: false, endStream: true))
        _ = h.send(.retryDecided(0, .retry(afterMs: 1, withinDeadline: true)))
        _ = h.send(.attemptClosed(0, .finished))
        _ = h.send(.scheduledAttemptDue)
        #expect(h.send(.pickFailed(1, status: GRPCStatus(.unavailable, "none healthy")))
                == [.sendResponseHead(0, failed, endStream: true), .finished(GRPCStatus(.unavailable, "first"))])
    }

    // MARK: Hedging

    @Test func twoHedgesEndingInOneReadEndTheCallWithTheLastResult() {
        var h = CallHarness.hedging()
        h.start()
        h.open(0)
        _ = h.send(.filterScheduledAttempt(afterMs: 0))
        _ = h.send(.scheduledAttemptDue)
        h.open(1)
        // One read brings both Trailers-Only answers; each is decided as
        // the executor feeds its hook's answer back before the next event.
        let first = trailersOnly(.unavailable, "a")
        let second = trailersOnly(.unavailable, "b")
        _ = h.send(.attemptHeaders(0, first, isTrailers: false, endStream: true))
        #expect(h.send(.retryDecided(0, .no)) == [], "attempt 1 still runs: wait for it")
        _ = h.send(.attemptHeaders(1, second, isTrailers: false, endStream: true))
        // Attempt 0's stream has not closed yet: it is reset with the rest.
        #expect(h.send(.retryDecided(1, .no))
                == [.resetStream(0, .cancel), .sendResponseHead(1, second, endStream: true), .finished(GRPCStatus(.unavailable, "b"))])
        _ = h.send(.attemptClosed(0, .finished))
        _ = h.send(.attemptClosed(1, .finished))
        #expect(endStatus(h.send(.downstreamClosed(cleanly: true))) == GRPCStatus(.unavailable, "b"))
    }

    @Test func twoHedgesEndingInOneReadWithTheirClosesBeforeTheDecisions() {
        var h = CallHarness.hedging()
        h.start()
        h.open(0)
        _ = h.send(.filterScheduledAttempt(afterMs: 0))
        _ = h.send(.scheduledAttemptDue)
        h.open(1)
        // Resets of both streams in one read: transport failures.
        _ = h.send(.attemptClosed(0, .reset(code: .internalError, local: false)))
        _ = h.send(.retryDecided(0, .no))
        _ = h.send(.attemptClosed(1, .connectionLost))
        let actions = h.send(.retryDecided(1, .no))
        #expect(localStatus(actions)?.code == .unavailable)
        #expect(endStatus(h.send(.downstreamClosed(cleanly: true)))?.code == .unavailable)
    }

    @Test func aNonFatalHedgeStatusStartsTheNextAttemptAtOnce() {
        var h = CallHarness.hedging()
        h.start()
        h.open(0)
        _ = h.send(.filterScheduledAttempt(afterMs: 500))
        _ = h.send(.attemptHeaders(0, trailersOnly(.unavailable), isTrailers: false, endStream: true))
        // MG_RETRY_AFTER 0 replaces the scheduled hedge.
        #expect(h.send(.retryDecided(0, .retry(afterMs: 0, withinDeadline: true))) == [.scheduleAttempt(afterMs: 0)])
        #expect(h.send(.scheduledAttemptDue) == [.place(1, kind: .retry, avoidEndpoint: 100)])
    }

    @Test func aPendingResultWinsWhenTheLastRunningAttemptIsCancelled() {
        var h = CallHarness.hedging()
        h.start()
        h.open(0)
        _ = h.send(.filterScheduledAttempt(afterMs: 0))
        _ = h.send(.scheduledAttemptDue)
        h.open(1)
        let first = trailersOnly(.unavailable, "a")
        _ = h.send(.attemptHeaders(0, first, isTrailers: false, endStream: true))
        _ = h.send(.retryDecided(0, .no))
        let actions = h.send(.filterCancelledAttempts(keep: nil))
        #expect(actions == [
            .resetStream(0, .cancel), .resetStream(1, .cancel),
            .sendResponseHead(0, first, endStream: true), .finished(GRPCStatus(.unavailable, "a")),
        ])
    }

    // MARK: Cancellation

    @Test func theClientCancellingAfterTheCommitCancelsTheUpstream() {
        var h = CallHarness()
        h.start(requestEnded: false)
        h.open(0)
        _ = h.send(.attemptHeaders(0, responseHead, isTrailers: false, endStream: false))
        let cancelled = GRPCStatus(.cancelled, "the client cancelled the call")
        #expect(h.send(.downstreamClosed(cleanly: false)) == [.resetStream(0, .cancel), .finished(cancelled)])
        let closed = h.send(.attemptClosed(0, .reset(code: .cancel, local: true)))
        #expect(closed.count == 2)
        #expect(closed[0] == .reportAttempt(0, responseStarted: true, decides: false))
        #expect(h.reported[0] == AttemptOutcome(status: GRPCStatus(.cancelled, "attempt cancelled by the gateway")))
        #expect(closed[1] == .callDone(cancelled, attempts: 1))
    }

    @Test func theClientLeavingWhileAnAttemptWaitsForAConnection() {
        var h = CallHarness()
        h.start()
        _ = h.send(.picked(0, endpointID: 1, address: "a:1"))
        let cancelled = GRPCStatus(.cancelled, "the client cancelled the call")
        #expect(h.send(.downstreamClosed(cleanly: false)) == [.abandonWait(0), .finished(cancelled), .callDone(cancelled, attempts: 1)])
        #expect(h.send(.connectionReady(0)) == [], "a late attach finds the attempt gone")
    }

    @Test func aFilterCancellingEveryAttemptEndsTheCallAtOnce() {
        var h = CallHarness.hedging()
        h.start()
        h.open(0)
        let status = GRPCStatus(.cancelled, "a filter cancelled every attempt of the call and scheduled none")
        #expect(h.send(.filterCancelledAttempts(keep: nil)) == [.resetStream(0, .cancel), .finished(status), .sendLocalStatus(status, responseStarted: false)])
        #expect(h.send(.attemptClosed(0, .reset(code: .cancel, local: true))).count == 1)
        #expect(h.send(.downstreamClosed(cleanly: true)) == [.callDone(status, attempts: 1)])
    }

    @Test func aFilterKeepingOneAttemptCancelsOnlyTheOthers() {
        var h = CallHarness.hedging()
        h.start()
        h.open(0)
        _ = h.send(.filterScheduledAttempt(afterMs: 0))
        _ = h.send(.scheduledAttemptDue)
        h.open(1)
        _ = h.send(.filterScheduledAttempt(afterMs: 100))
        #expect(h.send(.filterCancelledAttempts(keep: 1)) == [.cancelScheduledAttempt, .resetStream(0, .cancel)])
        #expect(h.attempt(1).isRunning)
    }

    @Test func anAttemptCancelledInsideItsOwnStartHookIsReportedAndTheCallEnds() {
        var h = CallHarness.hedging()
        h.start()
        _ = h.send(.picked(0, endpointID: 1, address: "a:1"))
        #expect(h.send(.connectionReady(0)) == [.runAttemptStartHooks(0)])
        // call_cancel_attempts(NULL) inside on_attempt_start, queued before the hooks' return.
        let status = GRPCStatus(.cancelled, "a filter cancelled every attempt of the call and scheduled none")
        #expect(h.send(.filterCancelledAttempts(keep: nil)) == [.finished(status), .sendLocalStatus(status, responseStarted: false)])
        #expect(h.send(.attemptStartHooksReturned(0)) == [
            .reportAttempt(0, responseStarted: false, decides: false),
        ])
        #expect(h.reported[0] == AttemptOutcome(status: GRPCStatus(.cancelled, "attempt cancelled by a filter")))
        #expect(h.send(.downstreamClosed(cleanly: true)) == [.callDone(status, attempts: 1)])
    }

    @Test func anAttemptCancelledWhileItsStreamOpensIsResetOnceItExists() {
        var h = CallHarness.hedging()
        h.start()
        _ = h.send(.picked(0, endpointID: 1, address: "a:1"))
        _ = h.send(.connectionReady(0))
        #expect(h.send(.attemptStartHooksReturned(0)) == [.openStream(0, endStream: true)])
        _ = h.send(.filterCancelledAttempts(keep: nil))
        #expect(h.send(.streamOpened(0)) == [.resetStream(0, .cancel)])
        #expect(h.send(.attemptClosed(0, .reset(code: .cancel, local: true))).count == 1)
    }

    @Test func aCommittedAttemptCancelledByAFilterEndsTheCall() {
        var h = CallHarness.hedging()
        h.start()
        h.open(0)
        _ = h.send(.attemptHeaders(0, responseHead, isTrailers: false, endStream: false))
        #expect(h.send(.filterCancelledAttempts(keep: nil)) == [.resetStream(0, .cancel)])
        let closed = h.send(.attemptClosed(0, .reset(code: .cancel, local: true)))
        #expect(closed.first?.reportedAttempt == 0 && h.reported[0]?.status.code == .cancelled)
        #expect(localStatus(closed) == GRPCStatus(.cancelled, "the upstream attempt was cancelled by a filter"))
        #expect(closed.last == .sendLocalStatus(localStatus(closed)!, responseStarted: true))
    }

    // MARK: Ends without a status

    @Test func endStreamWithoutTrailersIsRelayedAsItIs() {
        var h = CallHarness()
        h.start()
        h.open(0)
        _ = h.send(.attemptHeaders(0, responseHead, isTrailers: false, endStream: false))
        #expect(h.send(.attemptEnd(0)) == [.sendResponseEnd(trailers: nil), .finished(GRPCStatus(.unknown, ""))])
        let closed = h.send(.attemptClosed(0, .finished))
        #expect(closed.first?.reportedAttempt == 0 && h.reported[0]?.status.code == .internal, "the attempt itself had no status")
    }

    @Test func theCommittedUpstreamResettingEndsTheResponseWithTrailers() {
        var h = CallHarness()
        h.start()
        h.open(0)
        _ = h.send(.attemptHeaders(0, responseHead, isTrailers: false, endStream: false))
        let actions = h.send(.attemptClosed(0, .reset(code: .internalError, local: false)))
        #expect(actions.count == 3)
        #expect(actions[0].reportedAttempt == 0 && h.reported[0]?.status.code == .internal)
        // The client learns what happened, not the upstream's address.
        #expect(localStatus(actions)?.message == "the upstream reset the stream: INTERNAL_ERROR")
        #expect(actions[2] == .sendLocalStatus(localStatus(actions)!, responseStarted: true))
    }

    /// One attempt, no filters: how each way an upstream can end maps to
    /// the client's status.
    @Test(arguments: [
        (CallEvent.attemptHeaders(0, trailersOnly(.ok), isTrailers: false, endStream: true), GRPCStatusCode.ok),
        (.attemptHeaders(0, trailersOnly(.notFound, "no such key"), isTrailers: false, endStream: true), .notFound),
        (.attemptClosed(0, .reset(code: .cancel, local: false)), .cancelled),
        (.attemptClosed(0, .reset(code: .enhanceYourCalm, local: false)), .resourceExhausted),
        (.attemptClosed(0, .connectionLost), .unavailable),
        (.attemptClosed(0, .finished), .internal),
    ])
    func theEndOfASingleAttemptBecomesTheCallsStatus(end: CallEvent, expected: GRPCStatusCode) {
        var h = CallHarness()
        h.start()
        h.open(0)
        _ = h.send(end)
        if case .attemptHeaders = end { _ = h.send(.attemptClosed(0, .finished)) }
        let done = h.send(.downstreamClosed(cleanly: true))
        #expect(endStatus(done)?.code == expected)
        #expect(h.count { $0.isReport } == 1)
    }
}
