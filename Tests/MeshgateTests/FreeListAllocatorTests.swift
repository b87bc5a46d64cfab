import CFreeListAllocator
import Testing

/// The allocator nghttp2 uses: blocks come back from the calling thread's
/// cache, contents survive realloc, and the cache stays bounded.
@Suite struct FreeListAllocatorTests {
    @Test func aFreedBlockIsHandedOutAgainForTheSameClass() throws {
        mg_fl_release_thread_cache()
        let first = try #require(mg_fl_malloc(100, nil))
        mg_fl_free(first, nil)
        #expect(mg_fl_cached_blocks() == 1)
        // 100 and 128 bytes share the 128-byte class; 129 does not.
        let again = try #require(mg_fl_malloc(128, nil))
        #expect(again == first)
        #expect(mg_fl_cached_blocks() == 0)
        let other = try #require(mg_fl_malloc(129, nil))
        #expect(other != first)
        mg_fl_free(again, nil)
        mg_fl_free(other, nil)
        mg_fl_release_thread_cache()
    }

    @Test func callocZeroesARecycledBlock() throws {
        mg_fl_release_thread_cache()
        let block = try #require(mg_fl_malloc(64, nil))
        memsetBytes(block, 0xAB, 64)
        mg_fl_free(block, nil)
        let zeroed = try #require(mg_fl_calloc(8, 8, nil))
        #expect(zeroed == block)
        #expect((0..<64).allSatisfy { zeroed.load(fromByteOffset: $0, as: UInt8.self) == 0 })
        mg_fl_free(zeroed, nil)
        #expect(mg_fl_calloc(Int.max, 2, nil) == nil)
        mg_fl_release_thread_cache()
    }

    @Test func reallocKeepsTheContentsAcrossClassesAndLargeBlocks() throws {
        var block = try #require(mg_fl_malloc(20, nil))
        for i in 0..<20 { block.storeBytes(of: UInt8(i), toByteOffset: i, as: UInt8.self) }
        // Within the class: the same block.
        #expect(mg_fl_realloc(block, 32, nil) == block)
        for size in [1000, 40_000, 100_000, 50] {
            block = try #require(mg_fl_realloc(block, size, nil))
            #expect((0..<20).allSatisfy { block.load(fromByteOffset: $0, as: UInt8.self) == UInt8($0) }, "size \(size)")
        }
        #expect(mg_fl_realloc(block, 0, nil) == nil)
        mg_fl_release_thread_cache()
    }

    @Test func theCacheIsBoundedPerClassAndLargeBlocksAreNotCached() throws {
        mg_fl_release_thread_cache()
        let blocks = (0..<20).map { _ in mg_fl_malloc(16_384, nil) }
        for block in blocks { mg_fl_free(block, nil) }
        // 128 KiB per class: eight 16 KiB blocks.
        #expect(mg_fl_cached_blocks() == 8)
        let large = try #require(mg_fl_malloc(16_385, nil))
        mg_fl_free(large, nil)
        #expect(mg_fl_cached_blocks() == 8)
        mg_fl_release_thread_cache()
        #expect(mg_fl_cached_blocks() == 0)
    }
}

private func memsetBytes(_ pointer: UnsafeMutableRawPointer, _ value: UInt8, _ count: Int) {
    pointer.initializeMemory(as: UInt8.self, repeating: value, count: count)
}
