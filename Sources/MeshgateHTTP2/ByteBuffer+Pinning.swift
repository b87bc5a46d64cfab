import NIOCore

extension ByteBuffer {
    /// Whether this buffer keeps alive a storage much larger than its own
    /// bytes: a slice of a socket read (a 1-byte DATA payload of a 64 KiB
    /// read buffer). Kept for long, such a slice costs the whole storage
    /// while every cap counts its few bytes.
    @inlinable
    public var pinsLargerStorage: Bool {
        storageCapacity > 2 * readableBytes + 1024
    }

    /// These bytes in storage of their own when they pin a larger one
    /// (one copy of what is readable), else the buffer itself.
    public func unpinned(allocator: ByteBufferAllocator) -> ByteBuffer {
        guard pinsLargerStorage else { return self }
        var copy = allocator.buffer(capacity: readableBytes)
        copy.writeImmutableBuffer(self)
        return copy
    }
}
