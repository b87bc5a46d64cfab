import NIOCore

/// Splits a byte stream into gRPC length-prefixed messages
/// (1 byte compressed flag, 4 bytes big-endian length, payload).
public struct GRPCMessageDeframer {
    public struct Message {
        public var compressed: Bool
        public var payload: ByteBuffer
    }

    /// The compressed flag and the length before each message.
    public static let prefixSize = 5

    public enum DeframeError: Error {
        case messageTooLarge(Int, limit: Int)
    }

    private var buffer: ByteBuffer
    public let maxMessageSize: Int

    public init(maxMessageSize: Int = 64 * 1024 * 1024) {
        self.buffer = ByteBuffer()
        self.maxMessageSize = maxMessageSize
    }

    public mutating func append(_ bytes: ByteBuffer) {
        var bytes = bytes
        buffer.writeBuffer(&bytes)
    }

    /// The next complete message, or nil when more bytes are needed.
    public mutating func next() throws -> Message? {
        guard buffer.readableBytes >= 5,
              let flag = buffer.getInteger(at: buffer.readerIndex, as: UInt8.self),
              let length = buffer.getInteger(at: buffer.readerIndex + 1, as: UInt32.self) else { return nil }
        guard Int(length) <= maxMessageSize else { throw DeframeError.messageTooLarge(Int(length), limit: maxMessageSize) }
        guard buffer.readableBytes >= 5 + Int(length) else { return nil }
        buffer.moveReaderIndex(forwardBy: 5)
        let payload = buffer.readSlice(length: Int(length))!
        if buffer.readableBytes == 0 { buffer.clear() } else if buffer.readerIndex > 1 << 20 { buffer.discardReadBytes() }
        return Message(compressed: flag & 1 == 1, payload: payload)
    }

    /// Frames one message for the wire.
    public static func frame(_ payload: [UInt8], allocator: ByteBufferAllocator = ByteBufferAllocator()) -> ByteBuffer {
        var out = allocator.buffer(capacity: payload.count + 5)
        out.writeInteger(UInt8(0))
        out.writeInteger(UInt32(payload.count))
        out.writeBytes(payload)
        return out
    }
}
