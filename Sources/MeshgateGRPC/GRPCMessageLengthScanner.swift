/// Follows the gRPC length-prefixed messages in a stream of bytes without
/// keeping them: it reads each 5-byte prefix (flag, 32-bit big-endian
/// length) as the bytes pass and skips the bodies, so a proxy can enforce
/// a message size limit while relaying chunks as they arrive. Prefixes may
/// be split across chunks.
public struct GRPCMessageLengthScanner: Sendable, Equatable {
    /// Body bytes of the current message still to come.
    private var remaining = 0
    /// Prefix bytes seen of the next message (0 to 4), and its length so far.
    private var prefixSeen = 0
    private var length = 0

    public init() {}

    /// Whether the bytes so far end exactly after a whole message.
    public var isAtMessageBoundary: Bool { remaining == 0 && prefixSeen == 0 }

    /// Feeds `bytes`; returns the declared length of the first message in
    /// them longer than `limit` (its prefix complete in `bytes`), or nil.
    public mutating func scan(_ bytes: UnsafeRawBufferPointer, limit: Int) -> Int? {
        var i = 0
        let n = bytes.count
        while i < n {
            if remaining > 0 {
                let skip = min(remaining, n - i)
                remaining -= skip
                i += skip
                continue
            }
            let byte = bytes[i]
            i += 1
            if prefixSeen > 0 { length = length << 8 | Int(byte) }
            prefixSeen += 1
            if prefixSeen == 5 {
                let declared = length
                prefixSeen = 0
                length = 0
                if declared > limit { return declared }
                remaining = declared
            }
        }
        return nil
    }
}
