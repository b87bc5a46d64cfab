internal import CFreeListAllocator

/// Blocks from the calling thread's free lists (`CFreeListAllocator`, the
/// allocator nghttp2 uses here too), for short-lived buffers an event loop
/// allocates and frees per call: once the loop is warm they cost no libc
/// malloc. Any thread may free a block (it joins that thread's cache).
/// Blocks are 16-byte aligned.
public enum ThreadCachedMemory {
    public static func allocate(byteCount: Int) -> UnsafeMutableRawBufferPointer {
        guard let block = mg_fl_malloc(max(byteCount, 1), nil) else {
            fatalError("out of memory allocating \(byteCount) bytes")
        }
        return UnsafeMutableRawBufferPointer(start: block, count: byteCount)
    }

    public static func deallocate(_ buffer: UnsafeMutableRawBufferPointer) {
        mg_fl_free(buffer.baseAddress, nil)
    }
}
