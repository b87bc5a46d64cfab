import Testing
@testable import MeshgateHTTP2

@Suite struct HTTP2InboundFramePolicyTests {
    private let data: UInt8 = 0x0, headers: UInt8 = 0x1, ping: UInt8 = 0x6, endStream: UInt8 = 0x1

    private func frame(_ policy: inout HTTP2InboundFramePolicy, _ type: UInt8, flags: UInt8 = 0, length: Int,
                       stream: Int32 = 1, open: Bool = true, highest: Int32 = 1) -> HTTP2InboundFramePolicy.Violation? {
        policy.frameBegins(type: type, flags: flags, length: length, stream: stream, streamIsOpen: open, highestClientStream: highest)
    }

    @Test func consecutiveEmptyFramesOverTheBudgetAreEnhanceYourCalm() {
        var policy = HTTP2InboundFramePolicy(maxConsecutiveEmptyFrames: 3)
        for _ in 0..<3 { #expect(frame(&policy, data, length: 0) == nil) }
        let violation = frame(&policy, data, length: 0)
        #expect(violation?.code == .enhanceYourCalm)
        #expect(violation?.reason.contains("4 consecutive") == true)
    }

    @Test func aFrameWithPayloadResetsTheCount() {
        var policy = HTTP2InboundFramePolicy(maxConsecutiveEmptyFrames: 2)
        for _ in 0..<100 {
            #expect(frame(&policy, data, length: 0) == nil)
            #expect(frame(&policy, headers, length: 0) == nil)
            #expect(frame(&policy, data, length: 5) == nil)
            #expect(policy.consecutiveEmptyFrames == 0)
        }
    }

    @Test func emptyFramesThatEndTheStreamAndOtherFrameTypesDoNotCount() {
        var policy = HTTP2InboundFramePolicy(maxConsecutiveEmptyFrames: 1)
        for _ in 0..<50 {
            #expect(frame(&policy, data, flags: endStream, length: 0) == nil)
            #expect(frame(&policy, ping, length: 0) == nil)
        }
        #expect(policy.consecutiveEmptyFrames == 0)
    }

    @Test func headersOnALowerClosedStreamIsAProtocolError() {
        var policy = HTTP2InboundFramePolicy()
        let violation = frame(&policy, headers, length: 20, stream: 3, open: false, highest: 5)
        #expect(violation?.code == .protocolError)
        #expect(violation?.reason.contains("stream 3") == true)
        #expect(violation?.reason.contains("stream 5") == true)
    }

    @Test func newHigherStreamsTrailersOnOpenOnesAndDataAreFine() {
        var policy = HTTP2InboundFramePolicy()
        #expect(frame(&policy, headers, length: 20, stream: 7, open: false, highest: 5) == nil)  // a new stream
        #expect(frame(&policy, headers, flags: endStream, length: 10, stream: 3, open: true, highest: 7) == nil)  // trailers
        #expect(frame(&policy, data, length: 10, stream: 3, open: false, highest: 7) == nil)  // nghttp2's business
        #expect(frame(&policy, headers, length: 20, stream: 4, open: false, highest: 7) == nil)  // even: not a client id
    }

    @Test func aStreamResetWhileTheClientSentIsExemptUntilForgotten() {
        var policy = HTTP2InboundFramePolicy()
        policy.streamReset(3)
        #expect(frame(&policy, headers, flags: endStream, length: 10, stream: 3, open: false, highest: 9) == nil)
        // After resetMemory more resets, stream 3 is forgotten.
        for i in 0..<Int32(HTTP2InboundFramePolicy.resetMemory) { policy.streamReset(101 + 2 * i) }
        #expect(frame(&policy, headers, length: 10, stream: 3, open: false, highest: 999)?.code == .protocolError)
        #expect(frame(&policy, headers, length: 10, stream: 101 + 2 * 5, open: false, highest: 999) == nil)
    }

    @Test func invalidFramesOverTheBudgetAreEnhanceYourCalm() {
        var policy = HTTP2InboundFramePolicy(maxInvalidFrames: 10)
        for _ in 0..<10 { #expect(policy.invalidFrameReceived() == nil) }
        #expect(policy.invalidFrameReceived()?.code == .enhanceYourCalm)
    }
}
