import MeshgateGRPC
import MeshgateHTTP2
import Testing
@testable import GatewayHost

/// `ShadowStream`'s decisions without a socket (`ShadowStreamStateMachine`):
/// what happens to request bytes while it waits and once it streams, when
/// it gives up, and that its result goes out once, right, and never to a
/// silenced plugin.
@Suite struct ShadowStreamStateMachineTests {
    typealias Machine = ShadowStreamStateMachine

    /// A shadow whose stream is open (its request not ended).
    func streaming(bufferLimit: Int = 100) -> Machine {
        var shadow = Machine(bufferLimit: bufferLimit, requestEnded: false)
        _ = shadow.streamOpened()
        return shadow
    }

    func result(_ status: GRPCStatusCode, abandoned: Bool = false, transportFailure: Bool = false) -> Machine.End {
        .report(Machine.Result(status: status, abandoned: abandoned, transportFailure: transportFailure))
    }

    // MARK: Request bytes and the buffer limit

    @Test func whileWaitingBytesAreHeldUpToTheLimitThenItLeavesTheQueue() {
        var shadow = Machine(bufferLimit: 10, requestEnded: false)
        let first = shadow.requestData(bytes: 6, queuedUpstream: 0)
        let second = shadow.requestData(bytes: 4, queuedUpstream: 0)
        #expect(first == .hold && second == .hold, "exactly the limit is still held")
        #expect(shadow.phase == .waiting(heldBytes: 10, heldChunks: 2))
        let over = shadow.requestData(bytes: 1, queuedUpstream: 0)
        #expect(over == .giveUp(.leaveQueue))
        #expect(shadow.abandoned)
        let end = shadow.end()
        #expect(end == result(.cancelled, abandoned: true))
    }

    @Test func onAnOpenStreamBytesPastTheLimitCancelTheStream() {
        var shadow = streaming(bufferLimit: 10)
        let fits = shadow.requestData(bytes: 4, queuedUpstream: 6)
        #expect(fits == .send, "what the stream has queued counts, up to the limit")
        let over = shadow.requestData(bytes: 5, queuedUpstream: 6)
        #expect(over == .giveUp(.cancelStream))
        let closed = shadow.streamClosed(.reset(code: .cancel, local: true))
        #expect(closed == result(.cancelled, abandoned: true), "its own CANCEL is no transport failure")
    }

    @Test func bytesAfterTheEndAreDropped() {
        var shadow = Machine(bufferLimit: 10, requestEnded: false)
        _ = shadow.connectFailed()
        _ = shadow.end()
        let late = shadow.requestData(bytes: 1, queuedUpstream: 0)
        #expect(late == .drop)
        let lateEnd = shadow.requestEnd(hasTrailers: false)
        #expect(lateEnd == .ignore)
    }

    // MARK: Opening the stream

    @Test func aRequestThatIsAllHeadOpensWithEndStream() {
        var shadow = Machine(bufferLimit: 10, requestEnded: true)
        #expect(shadow.connectionOffered() == .openStream(endStream: true))
        let endAfterHeld = shadow.streamOpened()
        #expect(!endAfterHeld, "END_STREAM went with the head")
        #expect(shadow.phase == .streaming)
        #expect(shadow.connectionOffered() == .ignore, "one stream")
    }

    @Test func heldBytesKeepTheHeadOpenAndTheEndFollowsThem() {
        var shadow = Machine(bufferLimit: 10, requestEnded: false)
        _ = shadow.requestData(bytes: 0, queuedUpstream: 0)
        let end = shadow.requestEnd(hasTrailers: false)
        #expect(end == .keepForStream)
        #expect(shadow.connectionOffered() == .openStream(endStream: false), "an empty chunk held is still sent")
        let endAfterHeld = shadow.streamOpened()
        #expect(endAfterHeld)
    }

    @Test func requestTrailersKeepTheHeadOpen() {
        var shadow = Machine(bufferLimit: 10, requestEnded: false)
        _ = shadow.requestEnd(hasTrailers: true)
        #expect(shadow.connectionOffered() == .openStream(endStream: false))
        let endAfterHeld = shadow.streamOpened()
        #expect(endAfterHeld, "the trailers follow the head")
    }

    @Test func aRequestStillOpenIsNotEndedWhenTheStreamOpens() {
        var shadow = Machine(bufferLimit: 10, requestEnded: false)
        #expect(shadow.connectionOffered() == .openStream(endStream: false))
        let endAfterHeld = shadow.streamOpened()
        #expect(!endAfterHeld)
        let end = shadow.requestEnd(hasTrailers: false)
        #expect(end == .sendEnd, "on the open stream at once")
        let again = shadow.requestEnd(hasTrailers: true)
        #expect(again == .ignore, "one end")
    }

    @Test func aStreamThatCouldNotOpenEndsLaterAsATransportFailure() {
        var shadow = Machine(bufferLimit: 10, requestEnded: false)
        shadow.streamNotOpened()
        #expect(shadow.phase == .endingAfterOpenFailed)
        let giveUp = shadow.abandon()
        #expect(giveUp == .nothing, "nothing to cancel: its end is already on its way")
        #expect(shadow.requestData(bytes: 1, queuedUpstream: 0) == .drop)
        #expect(shadow.connectionOffered() == .ignore)
        let end = shadow.end()
        #expect(end == result(.unavailable, transportFailure: true))
    }

    @Test func aFailedConnectEndsAWaitingShadowOnly() {
        var waiting = Machine(bufferLimit: 10, requestEnded: true)
        let ends = waiting.connectFailed()
        #expect(ends)
        let end = waiting.end()
        #expect(end == result(.unavailable, transportFailure: true))
        var open = streaming()
        let endsOpen = open.connectFailed()
        #expect(!endsOpen, "a stream already open is not the failed dial's")
        #expect(!open.transportFailure)
    }

    // MARK: Giving up

    @Test func theClientClosingAnIncompleteRequestGivesUp() {
        var incomplete = streaming()
        let giveUp = incomplete.clientClosed()
        #expect(giveUp == .cancelStream)
        var complete = streaming()
        _ = complete.requestEnd(hasTrailers: false)
        let nothing = complete.clientClosed()
        #expect(nothing == .nothing, "a complete request's shadow goes on alone")
    }

    @Test func itGivesUpOnce() {
        var shadow = streaming()
        let first = shadow.abandon()
        let second = shadow.abandon()
        #expect(first == .cancelStream && second == .nothing)
    }

    // MARK: The result

    @Test func theResultIsReportedExactlyOnce() {
        var shadow = streaming()
        shadow.received(status: .ok)
        let closed = shadow.streamClosed(.finished)
        #expect(closed == result(.ok))
        #expect(shadow.phase == .ended)
        let again = shadow.end()
        let closedAgain = shadow.streamClosed(.connectionLost)
        #expect(again == .alreadyEnded && closedAgain == .alreadyEnded)
    }

    @Test func aSilencedShadowNeverReports() {
        var waiting = Machine(bufferLimit: 10, requestEnded: false)
        let leave = waiting.silence()
        #expect(leave == .leaveQueue)
        let waitingEnd = waiting.end()
        #expect(waitingEnd == .endSilently)

        var open = streaming()
        let cancel = open.silence()
        #expect(cancel == .cancelStream)
        let closed = open.streamClosed(.reset(code: .cancel, local: true))
        #expect(closed == .endSilently, "its close comes after the silence")

        var failing = Machine(bufferLimit: 10, requestEnded: false)
        failing.streamNotOpened()
        let nothing = failing.silence()
        #expect(nothing == .nothing)
        let failingEnd = failing.end()
        #expect(failingEnd == .endSilently, "a deferred end is silent too")
    }

    @Test func theUpstreamsStatusIsTheResult() {
        var shadow = streaming()
        shadow.received(status: .notFound)
        let closed = shadow.streamClosed(.reset(code: .internalError, local: false))
        #expect(closed == result(.notFound), "a reset after the status changes nothing")
        var noStatus = streaming()
        let unknown = noStatus.streamClosed(.finished)
        #expect(unknown == result(.unknown))
    }

    @Test(arguments: [
        (HTTP2ErrorCode.refusedStream, GRPCStatusCode.unavailable),
        (.enhanceYourCalm, .resourceExhausted),
        (.cancel, .cancelled),
        (.protocolError, .internal),
    ])
    func aResetBeforeAStatusStandsForOne(code: HTTP2ErrorCode, status: GRPCStatusCode) {
        var shadow = streaming()
        let closed = shadow.streamClosed(.reset(code: code, local: false))
        #expect(closed == result(status, transportFailure: true))
    }

    @Test func oversizedResponseHeadersAreResourceExhausted() {
        var shadow = streaming()
        let closed = shadow.streamClosed(.headersTooLarge(.fields(limit: 10)))
        #expect(closed == result(.resourceExhausted, transportFailure: true))
    }

    @Test func aLostConnectionIsATransportFailureEvenAfterAGiveUp() {
        var lost = streaming()
        let unavailable = lost.streamClosed(.connectionLost)
        #expect(unavailable == result(.unavailable, transportFailure: true))
        var abandoned = streaming()
        _ = abandoned.abandon()
        let cancelled = abandoned.streamClosed(.connectionLost)
        #expect(cancelled == result(.cancelled, abandoned: true, transportFailure: true))
        var answered = streaming()
        answered.received(status: .ok)
        let ok = answered.streamClosed(.connectionLost)
        #expect(ok == result(.ok), "the status had arrived")
    }
}
