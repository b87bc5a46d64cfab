#include "free_list_allocator.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Classes hold 32, 64, ..., 16384 bytes. */
#define CLASS_COUNT 10
#define SMALLEST_SHIFT 5
#define LARGE_CLASS CLASS_COUNT
#define CACHE_BYTES_PER_CLASS (128 * 1024)

/* Every block starts with this header; 16 bytes keep the payload aligned as
 * malloc's is. `size` is the payload's capacity (a class's size, or the
 * requested size of a large block). */
typedef struct {
    uint32_t size_class;
    uint32_t unused;
    size_t size;
} block_header;

_Static_assert(sizeof(block_header) == 16, "payload alignment");

typedef struct free_block {
    struct free_block *next;
} free_block;

typedef struct {
    free_block *head[CLASS_COUNT];
    uint32_t count[CLASS_COUNT];
    /* 0: not yet registered for thread exit; 1: live; 2: torn down. */
    int state;
} thread_cache;

static _Thread_local thread_cache cache;
static pthread_key_t exit_key;
static pthread_once_t exit_key_once = PTHREAD_ONCE_INIT;

static void release(thread_cache *c) {
    for (int i = 0; i < CLASS_COUNT; i++) {
        free_block *b = c->head[i];
        while (b) {
            free_block *next = b->next;
            free((block_header *)b - 1);
            b = next;
        }
        c->head[i] = NULL;
        c->count[i] = 0;
    }
}

static void on_thread_exit(void *value) {
    thread_cache *c = value;
    release(c);
    c->state = 2;
}

static void make_exit_key(void) { pthread_key_create(&exit_key, on_thread_exit); }

static inline size_t class_size(uint32_t size_class) { return (size_t)1 << (size_class + SMALLEST_SHIFT); }

static inline uint32_t class_of(size_t size) {
    if (size <= 32) return 0;
    /* ceil(log2(size)) - 5 */
    return (uint32_t)(64 - __builtin_clzll((unsigned long long)(size - 1))) - SMALLEST_SHIFT;
}

static inline uint32_t cache_limit(uint32_t size_class) {
    return (uint32_t)(CACHE_BYTES_PER_CLASS / class_size(size_class));
}

void *mg_fl_malloc(size_t size, void *user_data) {
    (void)user_data;
    if (size > class_size(CLASS_COUNT - 1)) {
        if (size > SIZE_MAX - sizeof(block_header)) return NULL;
        block_header *h = malloc(sizeof(block_header) + size);
        if (!h) return NULL;
        h->size_class = LARGE_CLASS;
        h->size = size;
        return h + 1;
    }
    uint32_t k = class_of(size);
    free_block *b = cache.head[k];
    if (b) {
        cache.head[k] = b->next;
        cache.count[k]--;
        return b;
    }
    block_header *h = malloc(sizeof(block_header) + class_size(k));
    if (!h) return NULL;
    h->size_class = k;
    h->size = class_size(k);
    return h + 1;
}

void mg_fl_free(void *pointer, void *user_data) {
    (void)user_data;
    if (!pointer) return;
    block_header *h = (block_header *)pointer - 1;
    uint32_t k = h->size_class;
    if (k >= CLASS_COUNT || cache.state == 2 || cache.count[k] >= cache_limit(k)) {
        free(h);
        return;
    }
    if (cache.state == 0) {
        /* First block this thread keeps: free the cache when it exits. */
        pthread_once(&exit_key_once, make_exit_key);
        pthread_setspecific(exit_key, &cache);
        cache.state = 1;
    }
    free_block *b = pointer;
    b->next = cache.head[k];
    cache.head[k] = b;
    cache.count[k]++;
}

void *mg_fl_calloc(size_t count, size_t size, void *user_data) {
    size_t total;
    if (__builtin_mul_overflow(count, size, &total)) return NULL;
    void *p = mg_fl_malloc(total, user_data);
    if (p) memset(p, 0, total);
    return p;
}

void *mg_fl_realloc(void *pointer, size_t size, void *user_data) {
    if (!pointer) return mg_fl_malloc(size, user_data);
    if (size == 0) {
        mg_fl_free(pointer, user_data);
        return NULL;
    }
    block_header *h = (block_header *)pointer - 1;
    if (h->size_class < CLASS_COUNT && size <= h->size) return pointer;
    void *grown = mg_fl_malloc(size, user_data);
    if (!grown) return NULL;
    memcpy(grown, pointer, h->size < size ? h->size : size);
    mg_fl_free(pointer, user_data);
    return grown;
}

size_t mg_fl_cached_blocks(void) {
    size_t total = 0;
    for (int i = 0; i < CLASS_COUNT; i++) total += cache.count[i];
    return total;
}

void mg_fl_release_thread_cache(void) { release(&cache); }
