import NIOCore

/// A FIFO of byte chunks that keeps its front chunk inline and allocates
/// only for a second one waiting behind it (most streams carry one or two,
/// and most are sent before the next arrives), unlike `CircularBuffer`,
/// which allocates its storage up front.
public struct ByteChunkQueue {
    /// The front chunk, never empty; nil only when the queue is empty.
    private var front: ByteBuffer?
    /// Chunks behind the front one, from `head` on.
    private var behind: [ByteBuffer] = []
    private var head = 0

    public init() {}

    public var isEmpty: Bool { front == nil }

    public mutating func append(_ chunk: ByteBuffer) {
        // Empty chunks carry nothing, and would make a drained queue look full.
        guard chunk.readableBytes > 0 else { return }
        if front == nil { front = chunk } else { behind.append(chunk) }
    }

    /// Copies up to `count` bytes from the front into `destination`,
    /// dropping what was copied. Returns the number of bytes copied.
    mutating func drain(into destination: UnsafeMutablePointer<UInt8>, count: Int) -> Int {
        var copied = 0
        while copied < count, front != nil {
            let n = min(count - copied, front!.readableBytes)
            front!.withUnsafeReadableBytes { bytes in
                UnsafeMutableRawPointer(destination + copied).copyMemory(from: bytes.baseAddress!, byteCount: n)
            }
            front!.moveReaderIndex(forwardBy: n)
            copied += n
            if front!.readableBytes == 0 { advance() }
        }
        return copied
    }

    /// Moves the next chunk to the front.
    private mutating func advance() {
        if head < behind.count {
            front = behind[head]
            head += 1
            if head == behind.count {
                behind.removeAll(keepingCapacity: true)
                head = 0
            }
        } else {
            front = nil
        }
    }

    /// Gives every chunk that pins a larger storage (a small slice of a
    /// read buffer) storage of its own, for a queue that is going to wait.
    public mutating func unpin(allocator: ByteBufferAllocator) {
        if let chunk = front, chunk.pinsLargerStorage { front = chunk.unpinned(allocator: allocator) }
        for i in head..<behind.count where behind[i].pinsLargerStorage {
            behind[i] = behind[i].unpinned(allocator: allocator)
        }
    }

    /// The storage its chunks keep alive (slices of one buffer counted
    /// each time): what `unpin` brings down to the bytes themselves.
    var storageBytes: Int {
        var total = front?.storageCapacity ?? 0
        for i in head..<behind.count { total += behind[i].storageCapacity }
        return total
    }

    /// Drops every chunk; returns the number of bytes dropped.
    @discardableResult
    public mutating func removeAll() -> Int {
        var bytes = front?.readableBytes ?? 0
        for i in head..<behind.count { bytes += behind[i].readableBytes }
        front = nil
        behind.removeAll()
        head = 0
        return bytes
    }
}
