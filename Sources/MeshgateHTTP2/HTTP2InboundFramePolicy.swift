/// What a server connection checks in its client's frames beyond what
/// nghttp2 checks, fed each frame header as it arrives (nghttp2's
/// on_begin_frame) and each frame nghttp2 found invalid. A value type: the
/// connection asks it and carries out the verdict (GOAWAY with the code).
///
/// - Zero-progress frames (CVE-2019-9518 class): DATA or HEADERS with an
///   empty payload and no END_STREAM cost the server work and move nothing.
///   More than `maxConsecutiveEmptyFrames` in a row (Envoy's
///   `max_consecutive_inbound_frames_with_empty_payload`, default 1, as
///   here) end the connection with ENHANCE_YOUR_CALM.
/// - Frames nghttp2 rejects as invalid (a WINDOW_UPDATE of 0 on a stream,
///   frames on closed streams, ...) are each answered with RST_STREAM:
///   more than `maxInvalidFrames` over the connection end it with
///   ENHANCE_YOUR_CALM.
/// - HEADERS that would open a stream at an id not above the highest the
///   client used is a connection error PROTOCOL_ERROR (RFC 9113 §5.1.1).
///   nghttp2 only catches it while it still remembers the closed stream.
///   Streams closed while the client could still send on them (reset by
///   either side) are exempt for a while: after RST_STREAM, frames the
///   peer had in flight must be ignored (§5.1), trailers included.
public struct HTTP2InboundFramePolicy: Sendable {
    public struct Violation: Error, Equatable, Sendable {
        public let code: HTTP2ErrorCode
        public let reason: String
    }

    public let maxConsecutiveEmptyFrames: Int
    public let maxInvalidFrames: Int
    public private(set) var consecutiveEmptyFrames = 0
    public private(set) var invalidFrames = 0
    /// Ids of the last streams closed while the client's side was open
    /// (grows to `resetMemory`, then a ring: an idle connection pays nothing).
    private var recentlyReset: [Int32] = []
    private var nextReset = 0

    static let dataFrame: UInt8 = 0x0
    static let headersFrame: UInt8 = 0x1
    static let endStreamFlag: UInt8 = 0x1
    /// How many reset streams are remembered: more than a client has in
    /// flight on one connection within a round trip in practice.
    static let resetMemory = 128

    public init(maxConsecutiveEmptyFrames: Int = 1, maxInvalidFrames: Int = 100) {
        self.maxConsecutiveEmptyFrames = maxConsecutiveEmptyFrames
        self.maxInvalidFrames = maxInvalidFrames
    }

    /// A frame header arrived. `streamIsOpen`: the connection has the
    /// stream; `highestClientStream`: the highest stream id the client has
    /// opened so far (nghttp2's last processed id).
    public mutating func frameBegins(type: UInt8, flags: UInt8, length: Int, stream: Int32,
                                     streamIsOpen: Bool, highestClientStream: Int32) -> Violation? {
        guard type == Self.dataFrame || type == Self.headersFrame else { return nil }
        if length == 0 && flags & Self.endStreamFlag == 0 {
            consecutiveEmptyFrames += 1
            if consecutiveEmptyFrames > maxConsecutiveEmptyFrames {
                return Violation(code: .enhanceYourCalm,
                                 reason: "\(consecutiveEmptyFrames) consecutive DATA/HEADERS frames without payload (limit \(maxConsecutiveEmptyFrames))")
            }
        } else if length > 0 {
            consecutiveEmptyFrames = 0
        }
        if type == Self.headersFrame, stream & 1 == 1, stream <= highestClientStream, !streamIsOpen,
           !recentlyReset.contains(stream) {
            return Violation(code: .protocolError,
                             reason: "HEADERS on stream \(stream), not above stream \(highestClientStream) the client already used (RFC 9113 §5.1.1)")
        }
        return nil
    }

    /// nghttp2 received a frame it judged invalid (and answered it).
    public mutating func invalidFrameReceived() -> Violation? {
        invalidFrames += 1
        guard invalidFrames > maxInvalidFrames else { return nil }
        return Violation(code: .enhanceYourCalm, reason: "\(invalidFrames) invalid frames (limit \(maxInvalidFrames))")
    }

    /// A stream closed before the client ended its side (a reset).
    public mutating func streamReset(_ stream: Int32) {
        if recentlyReset.count < Self.resetMemory {
            recentlyReset.append(stream)
        } else {
            recentlyReset[nextReset] = stream
            nextReset = (nextReset + 1) % Self.resetMemory
        }
    }
}
