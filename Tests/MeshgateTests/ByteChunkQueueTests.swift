import NIOCore
import Testing
@testable import MeshgateHTTP2

/// The outbound queue of a stream: bytes leave in order whatever the chunk
/// and read sizes, across the inline front chunk and the ones behind it.
@Suite struct ByteChunkQueueTests {
    func drain(_ queue: inout ByteChunkQueue, _ count: Int) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        let n = out.withUnsafeMutableBufferPointer { queue.drain(into: $0.baseAddress!, count: count) }
        return Array(out[..<n])
    }

    @Test func bytesLeaveInOrderWhateverTheSizes() {
        let all = (0..<200).map { UInt8(truncatingIfNeeded: $0) }
        for chunkSize in [1, 3, 7, 64, 200] {
            for readSize in [1, 2, 5, 50, 300] {
                var queue = ByteChunkQueue()
                var sent = 0
                var received: [UInt8] = []
                // Interleave appends and drains so chunks wait behind the front one.
                while received.count < all.count {
                    if sent < all.count {
                        let end = min(sent + chunkSize, all.count)
                        queue.append(ByteBuffer(bytes: all[sent..<end]))
                        if sent == 0 { queue.append(ByteBuffer()) }  // an empty chunk is skipped
                        sent = end
                    }
                    received += drain(&queue, readSize)
                }
                #expect(received == all, "chunks of \(chunkSize), reads of \(readSize)")
                #expect(queue.isEmpty)
                #expect(drain(&queue, 10).isEmpty)
            }
        }
    }

    @Test func removeAllCountsTheBytesLeft() {
        var queue = ByteChunkQueue()
        queue.append(ByteBuffer(bytes: [1, 2, 3]))
        queue.append(ByteBuffer(bytes: [4, 5]))
        queue.append(ByteBuffer(bytes: [6]))
        #expect(drain(&queue, 4) == [1, 2, 3, 4])
        #expect(queue.removeAll() == 2)
        #expect(queue.isEmpty)
        queue.append(ByteBuffer(bytes: [7]))
        #expect(drain(&queue, 4) == [7])
    }
}
