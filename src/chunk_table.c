/* chunk_table.c - the chunk table and its look-up cache (chunk_table.h).
 *
 * Invariants:
 *  - `all` goes from NULL to a sorted, immutable array exactly once, by a
 *    release store after n_all and every entry are written; readers load
 *    it with acquire order, so an array they see is complete. After that
 *    a look-up is a binary search (a direct probe first: when every chunk
 *    is written, chunk i is entry i) and takes no lock.
 *  - The cache is an open-addressing hash table, at most half full, under
 *    `mu`. It only grows, one entry per distinct chunk looked up, so its
 *    memory is bounded by the look-ups made, not by the grid's size.
 *
 * Workload: the table is built once per dataset read further than a few
 * chunks; streaming then does one probe per chunk. The cache serves the
 * first few look-ups of every dataset and all of them where the index can
 * only be asked one chunk at a time (then each miss costs an HDF5 call
 * that dwarfs the mutex).
 */
#include "chunk_table.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define EMPTY UINT64_MAX /* info.size of an empty cache slot */

int ml_chunk_table_init(ml_chunk_table *t) {
    memset(t, 0, sizeof *t);
    atomic_init(&t->all, NULL);
    int rc = pthread_mutex_init(&t->mu, NULL);
    return rc ? -rc : 0;
}

void ml_chunk_table_destroy(ml_chunk_table *t) {
    if (!t)
        return;
    free(atomic_load_explicit(&t->all, memory_order_relaxed));
    atomic_store_explicit(&t->all, NULL, memory_order_relaxed);
    free(t->cache);
    t->cache = NULL;
    t->cache_cap = t->cache_n = 0;
    pthread_mutex_destroy(&t->mu);
}

/* Fibonacci hashing: consecutive chunk indices spread over the slots. */
static size_t slot_of(uint64_t index, size_t cap) {
    return (size_t)((index * UINT64_C(0x9E3779B97F4A7C15)) >> 17) & (cap - 1);
}

/* The cache slot holding index, or the empty slot where it would go.
 * Caller holds mu; cap > 0. */
static ml_chunk_entry *cache_slot(ml_chunk_entry *cache, size_t cap, uint64_t index) {
    for (size_t i = slot_of(index, cap);; i = (i + 1) & (cap - 1))
        if (cache[i].info.size == EMPTY || cache[i].index == index)
            return &cache[i];
}

/* Binary search of the published table. */
static const ml_chunk_entry *find_entry(const ml_chunk_entry *all, uint64_t n, uint64_t index) {
    if (index < n && all[index].index == index)
        return &all[index];
    uint64_t lo = 0, hi = n;
    while (lo < hi) {
        uint64_t mid = lo + (hi - lo) / 2;
        if (all[mid].index < index)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < n && all[lo].index == index ? &all[lo] : NULL;
}

static const ml_chunk_info never_written = {.addr = UINT64_MAX};

int ml_chunk_table_get(ml_chunk_table *t, uint64_t index, ml_chunk_info *out) {
    /* acquire: pairs with publish's release store, so every entry and
     * n_all are complete. */
    const ml_chunk_entry *all = atomic_load_explicit(&t->all, memory_order_acquire);
    if (all) {
        const ml_chunk_entry *e = find_entry(all, t->n_all, index);
        *out = e ? e->info : never_written;
        return 1;
    }
    int found = 0;
    pthread_mutex_lock(&t->mu);
    if (t->cache_cap) {
        const ml_chunk_entry *e = cache_slot(t->cache, t->cache_cap, index);
        if (e->info.size != EMPTY) {
            *out = e->info;
            found = 1;
        }
    }
    pthread_mutex_unlock(&t->mu);
    return found;
}

/* Double the cache (or make its first 64 slots). Caller holds mu. */
static int cache_grow(ml_chunk_table *t) {
    size_t cap = t->cache_cap ? 2 * t->cache_cap : 64;
    if (cap > SIZE_MAX / sizeof(ml_chunk_entry))
        return -ENOMEM;
    ml_chunk_entry *grown = malloc(cap * sizeof *grown);
    if (!grown)
        return -ENOMEM;
    for (size_t i = 0; i < cap; i++)
        grown[i].info.size = EMPTY;
    for (size_t i = 0; i < t->cache_cap; i++)
        if (t->cache[i].info.size != EMPTY)
            *cache_slot(grown, cap, t->cache[i].index) = t->cache[i];
    free(t->cache);
    t->cache = grown;
    t->cache_cap = cap;
    return 0;
}

int ml_chunk_table_remember(ml_chunk_table *t, uint64_t index, const ml_chunk_info *info) {
    int rc = 0;
    pthread_mutex_lock(&t->mu);
    if (2 * (t->cache_n + 1) > t->cache_cap)
        rc = cache_grow(t);
    if (rc == 0) {
        ml_chunk_entry *e = cache_slot(t->cache, t->cache_cap, index);
        if (e->info.size == EMPTY) {
            /* A stored size of EMPTY cannot come from a file (sizes are
             * bounded by the file's), but keep the marker unambiguous. */
            e->index = index;
            e->info = *info;
            if (e->info.size == EMPTY)
                e->info.size = EMPTY - 1;
            t->cache_n++;
        }
    }
    pthread_mutex_unlock(&t->mu);
    return rc;
}

/* Does a cached answer `a` agree with the table's `b`? One read through
 * HDF5 has no address to compare: then whether it is written, and its
 * stored size. */
static int same_info(const ml_chunk_info *a, const ml_chunk_info *b) {
    if (a->addr == ML_CHUNK_VIA_FORMAT)
        return b->addr != UINT64_MAX && a->size == b->size;
    return a->addr == b->addr && (a->addr == UINT64_MAX || (a->size == b->size && a->filter_mask == b->filter_mask));
}

int ml_chunk_table_agrees(ml_chunk_table *t, const ml_chunk_entry *entries, uint64_t n) {
    int ok = 1;
    pthread_mutex_lock(&t->mu);
    for (size_t i = 0; i < t->cache_cap && ok; i++) {
        const ml_chunk_entry *c = &t->cache[i];
        if (c->info.size == EMPTY)
            continue;
        const ml_chunk_entry *e = find_entry(entries, n, c->index);
        ok = same_info(&c->info, e ? &e->info : &never_written) && !c->info.bad;
    }
    pthread_mutex_unlock(&t->mu);
    return ok;
}

void ml_chunk_table_publish(ml_chunk_table *t, ml_chunk_entry *entries, uint64_t n) {
    if (atomic_load_explicit(&t->all, memory_order_acquire)) {
        free(entries);
        return;
    }
    t->n_all = n;
    /* A zero-chunk table still needs a non-NULL array to mark it complete. */
    if (!entries)
        entries = malloc(sizeof *entries);
    if (!entries)
        return; /* stays unpublished: look-ups go on one by one */
    /* release: n_all and every entry, written above and by the caller,
     * before any reader can see the array (pairs with get's acquire). */
    atomic_store_explicit(&t->all, entries, memory_order_release);
}

int ml_chunk_table_complete(ml_chunk_table *t) {
    return atomic_load_explicit(&t->all, memory_order_acquire) != NULL;
}
