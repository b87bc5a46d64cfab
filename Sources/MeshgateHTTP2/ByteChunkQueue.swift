import NIOCore

/// A FIFO of byte chunks that allocates nothing until its first chunk
/// (most streams carry one or two), unlike `CircularBuffer`, which
/// allocates its storage up front.
public struct ByteChunkQueue {
    private var chunks: [ByteBuffer] = []
    private var head = 0

    public init() {}

    public var isEmpty: Bool { head == chunks.count }

    public mutating func append(_ chunk: ByteBuffer) {
        chunks.append(chunk)
    }

    /// Copies up to `count` bytes from the front into `destination`,
    /// dropping what was copied. Returns the number of bytes copied.
    mutating func drain(into destination: UnsafeMutablePointer<UInt8>, count: Int) -> Int {
        var copied = 0
        while copied < count, head < chunks.count {
            let n = min(count - copied, chunks[head].readableBytes)
            chunks[head].withUnsafeReadableBytes { bytes in
                UnsafeMutableRawPointer(destination + copied).copyMemory(from: bytes.baseAddress!, byteCount: n)
            }
            chunks[head].moveReaderIndex(forwardBy: n)
            copied += n
            if chunks[head].readableBytes == 0 {
                head += 1
            }
        }
        if head == chunks.count {
            chunks.removeAll(keepingCapacity: true)
            head = 0
        }
        return copied
    }

    /// Drops every chunk; returns the number of bytes dropped.
    @discardableResult
    public mutating func removeAll() -> Int {
        var bytes = 0
        for i in head..<chunks.count { bytes += chunks[i].readableBytes }
        chunks.removeAll()
        head = 0
        return bytes
    }
}
