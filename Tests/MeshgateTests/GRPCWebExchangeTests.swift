import Testing
@testable import GatewayHost

/// `GRPCWebStream`'s decisions without a socket: the request's and the
/// answer's phases (`GRPCWebExchange`) and its flow-control arithmetic.
@Suite struct GRPCWebExchangeTests {
    @Test func anOrdinaryCallEndsWithItsTrailerFrameThenTheExchange() {
        var x = GRPCWebExchange()
        let head = x.responseHead(endStream: false)
        #expect(head)
        #expect(x.response == .headSent && !x.responseEnded && x.http1Next == .wait)
        let requestEnd = x.requestEnd(decoderAtBoundary: true)
        #expect(requestEnd == .passToCall)
        #expect(x.http1Next == .wait, "the answer goes on")
        let end = x.responseEnd(atMessageBoundary: true)
        #expect(end == .sendTrailerFrame)
        #expect(x.http1Next == .exchangeDone)
        let again = x.responseEnd(atMessageBoundary: true)
        #expect(again == .drop, "one end")
        let requestAgain = x.requestEnd(decoderAtBoundary: true)
        #expect(requestAgain == .ignore, "one end")
    }

    @Test func anAnswerBeforeTheRequestsEndDrainsTheRequest() {
        var x = GRPCWebExchange()
        let head = x.responseHead(endStream: true)
        #expect(head, "Trailers-Only")
        #expect(x.response == .ended)
        #expect(x.http1Next == .drainRequest, "the rest of the request is read and dropped")
        let requestEnd = x.requestEnd(decoderAtBoundary: true)
        #expect(requestEnd == .passToCall)
        #expect(x.http1Next == .exchangeDone)
    }

    @Test func aRequestEndedWithItsHeadIsNotEndedAgain() {
        var x = GRPCWebExchange()
        x.requestEndedWithHead()
        let requestEnd = x.requestEnd(decoderAtBoundary: true)
        #expect(requestEnd == .ignore)
        let head = x.responseHead(endStream: true)
        #expect(head && x.http1Next == .exchangeDone)
    }

    @Test func aStatusMidMessageBreaksTheStreamAndDropsTheRest() {
        var x = GRPCWebExchange()
        _ = x.responseHead(endStream: false)
        let end = x.responseEnd(atMessageBoundary: false)
        #expect(end == .abort)
        #expect(x.response == .cutOff && x.dropsCallOutput && x.responseEnded)
        let head = x.responseHead(endStream: false)
        #expect(!head, "the call's output is dropped")
        let requestEnd = x.requestEnd(decoderAtBoundary: true)
        #expect(requestEnd == .endAfterCutOff, "the call is gone")
    }

    @Test func aMalformedBodyBeforeTheAnswerGetsInvalidArgument() {
        var x = GRPCWebExchange()
        let malformed = x.requestMalformed()
        #expect(malformed == .answerInvalidArgument)
        #expect(x.dropsCallOutput && x.responseEnded)
        #expect(x.http1Next == .drainRequest)
        let head = x.responseHead(endStream: true)
        #expect(!head, "the call's late answer is dropped")
        let requestEnd = x.requestEnd(decoderAtBoundary: true)
        #expect(requestEnd == .endAfterCutOff)
        #expect(x.http1Next == .exchangeDone, "the connection takes the next request")
    }

    @Test func aMalformedBodyAfterTheHeadBreaksTheStream() {
        var x = GRPCWebExchange()
        _ = x.responseHead(endStream: false)
        let malformed = x.requestMalformed()
        #expect(malformed == .abort)
        var ended = GRPCWebExchange()
        _ = ended.responseHead(endStream: true)
        let late = ended.requestMalformed()
        #expect(late == .abort, "no second answer after the first")
    }

    @Test func aTextBodyEndingInsideABase64GroupIsMalformed() {
        var x = GRPCWebExchange()
        let requestEnd = x.requestEnd(decoderAtBoundary: false)
        #expect(requestEnd == .malformed)
        #expect(x.request == .ended)
        let malformed = x.requestMalformed()
        #expect(malformed == .answerInvalidArgument)
        #expect(x.http1Next == .exchangeDone)
    }

    // MARK: Flow control

    @Test func theClientsWireBytesMapBackToTheCallsBytes() {
        var credit = GRPCWebResponseCredit()
        credit.sent(wire: 8, original: 6)     // base64 of 6 bytes
        credit.sent(wire: 12, original: 0)    // the trailer frame
        let half = credit.took(wire: 4)
        #expect(half == 3, "part of a chunk in proportion")
        let rest = credit.took(wire: 4)
        #expect(rest == 3)
        let trailer = credit.took(wire: 12)
        #expect(trailer == 0, "the trailer frame is not the call's")
        let nothing = credit.took(wire: 5)
        #expect(nothing == 0)
    }

    @Test func aTextRequestsCreditGoesBackInWireBytesAndAllOfItAtTheEnd() {
        var credit = GRPCWebRequestCredit()
        credit.received(wire: 10, decoded: 7)
        let part = credit.consumed(decoded: 3)
        #expect(part == 4, "10 * 3 / 7, rounded down")
        let rest = credit.consumed(decoded: 100)
        #expect(rest == 6, "what is left, so no credit is lost to rounding")
        #expect(credit == GRPCWebRequestCredit())
        let none = credit.consumed(decoded: 1)
        #expect(none == 0)
    }

    @Test func http1ReadingPausesAboveTheWindowAndResumesAtHalf() {
        var window = HTTP1ReadWindow(limit: 100)
        let under = window.received(100)
        #expect(!under)
        let over = window.received(1)
        #expect(over && window.paused)
        let again = window.received(50)
        #expect(!again, "paused once")
        let notYet = window.consumed(100)
        #expect(!notYet, "51 left: above half")
        let resume = window.consumed(1)
        #expect(resume && !window.paused)
        let more = window.consumed(1_000)
        #expect(!more && window.unconsumed == 0)
        _ = window.received(200)
        window.stopCounting()
        #expect(!window.paused)
    }

    // MARK: HTTP/1.1 connections

    @Test func aRequestHeadIsAnsweredByItsMethodAndContentType() {
        #expect(GRPCWebHTTP1Connection.route(isOptions: true, isPost: false, isGRPCWeb: false) == .preflight)
        #expect(GRPCWebHTTP1Connection.route(isOptions: false, isPost: true, isGRPCWeb: true) == .call)
        #expect(GRPCWebHTTP1Connection.route(isOptions: false, isPost: true, isGRPCWeb: false) == .unsupported)
        #expect(GRPCWebHTTP1Connection.route(isOptions: false, isPost: false, isGRPCWeb: false) == .unsupported, "GET")
    }

    @Test func aLocalAnswerEndsWithItsRequestAndKeepsTheConnection() {
        var c = GRPCWebHTTP1Connection()
        c.requestHead(keepAlive: true, route: .preflight)
        #expect(c.exchange == .answeredLocally)
        let next = c.requestEnd()
        #expect(next == .awaitNextRequest)
        #expect(c.exchange == .none)
        let again = c.requestEnd()
        #expect(again == nil, "no exchange, nothing ends")
    }

    @Test func aCallsRequestEndIsTheStreamsToDecide() {
        var c = GRPCWebHTTP1Connection()
        c.requestHead(keepAlive: true, route: .call)
        let next = c.requestEnd()
        #expect(next == nil)
        #expect(c.exchange == .call)
        let done = c.exchangeEnded(closeConnection: false)
        #expect(done == .awaitNextRequest)
        c.requestHead(keepAlive: true, route: .call)
        let broken = c.exchangeEnded(closeConnection: true)
        #expect(broken == .close, "a broken answer closes the connection")
    }

    @Test func aRequestThatDoesNotKeepTheConnectionClosesItAfterwards() {
        var c = GRPCWebHTTP1Connection()
        c.requestHead(keepAlive: false, route: .unsupported)
        #expect(!c.keepAlive)
        let next = c.requestEnd()
        #expect(next == .close)
    }

    @Test func aDrainClosesAtOnceBetweenExchangesOrAfterTheCall() {
        var idle = GRPCWebHTTP1Connection()
        let closeNow = idle.beginGracefulShutdown()
        #expect(closeNow)
        var answering = GRPCWebHTTP1Connection()
        answering.requestHead(keepAlive: true, route: .preflight)
        let closeAnswering = answering.beginGracefulShutdown()
        #expect(closeAnswering, "a local answer is out already")
        var calling = GRPCWebHTTP1Connection()
        calling.requestHead(keepAlive: true, route: .call)
        let closeCalling = calling.beginGracefulShutdown()
        #expect(!closeCalling, "the call finishes first")
        #expect(!calling.keepAlive, "its answer says connection: close")
        let next = calling.exchangeEnded(closeConnection: false)
        #expect(next == .close)
        calling.requestHead(keepAlive: true, route: .call)
        #expect(!calling.keepAlive, "draining: no request keeps the connection")
    }
}
