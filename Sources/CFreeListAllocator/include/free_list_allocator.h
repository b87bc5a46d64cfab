#ifndef MESHGATE_FREE_LIST_ALLOCATOR_H
#define MESHGATE_FREE_LIST_ALLOCATOR_H
/*
 * malloc/free/calloc/realloc with per-thread free lists in size classes,
 * shaped like nghttp2_mem's callbacks (the last argument is nghttp2's
 * mem_user_data, unused here).
 *
 * Why: every RPC makes nghttp2 allocate and free the same few shapes on both
 * of its sessions (stream structs, outbound items, header copies, frame
 * buffers): about 15 libc mallocs per unary RPC. Each event loop is one
 * thread, so a thread-local cache of freed blocks serves them without a lock.
 *
 * Ownership and threads: any thread may allocate and free; a block freed on
 * another thread than the one that allocated it joins the freeing thread's
 * cache (blocks are plain memory). Each size class caches at most 128 KiB
 * per thread; anything beyond, larger than 16 KiB, or freed after the
 * thread's cache was torn down at thread exit goes straight back to libc.
 */
#include <stddef.h>

void *mg_fl_malloc(size_t size, void *user_data);
void mg_fl_free(void *pointer, void *user_data);
void *mg_fl_calloc(size_t count, size_t size, void *user_data);
void *mg_fl_realloc(void *pointer, size_t size, void *user_data);

/* Blocks cached by the calling thread, for tests. */
size_t mg_fl_cached_blocks(void);
/* Frees the calling thread's cached blocks (as at thread exit), for tests. */
void mg_fl_release_thread_cache(void);

#endif
