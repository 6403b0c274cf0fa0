/* band_cache.c - decoded bands of chunked data, kept for the next request.
 *
 * Workload: random row requests on compressed data touch the same bands
 * again and again (a 256-row request on 32-row chunks touches up to 256
 * bands; an epoch of a training loop touches every band many times);
 * decoding a band costs far more than looking it up, so every thread of a
 * Reader shares one LRU cache of decoded bands, keyed by (layout, band
 * number): a hash table of chained entries for the look-up (a 256-row
 * request makes 256 of them) and an intrusive LRU list for eviction, both
 * under one mutex; the copy out of a pinned band runs without it.
 *
 * Size: a fixed limit, or by default the decoded size of the datasets it
 * has cached bands of, within a budget -- a real trial had an 80 MiB
 * decoded dataset beside a fixed 64 MiB cache and decoded 4,000 bands per
 * epoch for 625 distinct ones; sized from the dataset, it decodes each
 * once. stats say what it would take to hold them all.
 *
 * Invariants: an entry owns its buffer and a reference to its layout and
 * is on exactly one bucket chain and the LRU list; `used` is the sum of
 * entries' bytes and never exceeds the limit after an insert; an entry is
 * evicted only when unpinned (pins counts threads copying out of it, each
 * holding an ml_band_ref), so a buffer is never freed while read. Layout
 * references of evicted entries are dropped after the mutex is released
 * (dropping the last one closes HDF5 handles). c->mu is never held with
 * another lock.
 */
#define _GNU_SOURCE
#include "band_cache.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fault.h"

#define MIN_BUCKETS 256
#define EVICT_BATCH 16        /* layouts whose references an insert drops after unlocking */

size_t ml_band_cache_auto_budget(void) {
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    size_t cap = (size_t)2 << 30;
    if (pages <= 0 || page <= 0)
        return ML_BAND_CACHE_MIN_BYTES;
    uint64_t eighth = (uint64_t)pages * (uint64_t)page / 8;
    return eighth < cap ? (size_t)eighth : cap;
}

int ml_band_cache_init(ml_band_cache *c, size_t limit, size_t budget, unsigned n_workers) {
    memset(c, 0, sizeof *c);
    c->limit = limit;
    c->budget = budget ? budget : ml_band_cache_auto_budget();
    c->n_workers = n_workers;
    ml_list_init(&c->lru);
    atomic_init(&c->hits, 0);
    atomic_init(&c->misses, 0);
    atomic_init(&c->evictions, 0);
    return -pthread_mutex_init(&c->mu, NULL);
}

void ml_band_cache_destroy(ml_band_cache *c) {
    if (!c)
        return;
    for (ml_list_node *n = ml_list_first(&c->lru); n;) {
        ml_list_node *next = ml_list_next(&c->lru, n);
        ml_band *e = ml_list_entry(n, ml_band, lru);
        free(e->buf);
        ml_layout_unref(e->L);
        free(e);
        n = next;
    }
    for (unsigned i = 0; i < c->n_seen; i++)
        ml_layout_unref(c->seen[i].L);
    free(c->buckets);
    pthread_mutex_destroy(&c->mu);
}

static size_t bucket_of(const ml_band_cache *c, const ml_layout *L, uint64_t index) {
    uint64_t h = ((uint64_t)(uintptr_t)L >> 4) * 0x9E3779B97F4A7C15ull ^ index * 0xC2B2AE3D27D4EB4Full;
    h ^= h >> 29;
    return (size_t)h & (c->n_buckets - 1);
}

/* The entry for (L, index), or NULL. Call with mu held. */
static ml_band *find_locked(ml_band_cache *c, const ml_layout *L, uint64_t index) {
    if (!c->n_buckets)
        return NULL;
    for (ml_band *e = c->buckets[bucket_of(c, L, index)]; e; e = e->hnext)
        if (e->L == L && e->index == index)
            return e;
    return NULL;
}

/* Unlink e from its bucket. Call with mu held. */
static void unhash_locked(ml_band_cache *c, ml_band *e) {
    ml_band **p = &c->buckets[bucket_of(c, e->L, e->index)];
    while (*p != e)
        p = &(*p)->hnext;
    *p = e->hnext;
}

/* Keep the chains short: double the buckets when entries outnumber them
 * twice over. A failed allocation keeps the old table (longer chains, still
 * correct). Call with mu held. */
static void grow_locked(ml_band_cache *c) {
    if (c->n_buckets && c->n_entries < 2 * c->n_buckets)
        return;
    size_t nb = c->n_buckets ? 2 * c->n_buckets : MIN_BUCKETS;
    ml_band **b = ml_fault_alloc() < 0 ? NULL : calloc(nb, sizeof *b);
    if (!b)
        return;
    ml_band **old = c->buckets;
    size_t on = c->n_buckets;
    c->buckets = b;
    c->n_buckets = nb;
    for (size_t i = 0; i < on; i++)
        for (ml_band *e = old[i], *next; e; e = next) {
            next = e->hnext;
            size_t k = bucket_of(c, e->L, e->index);
            e->hnext = b[k];
            b[k] = e;
        }
    free(old);
}

void ml_band_cache_release(ml_band_cache *c, ml_band_ref *b) {
    if (b->e) {
        pthread_mutex_lock(&c->mu);
        b->e->pins--;
        pthread_mutex_unlock(&c->mu);
    } else if (b->private_buf) {
        free(b->buf);
    }
    memset(b, 0, sizeof *b);
    b->index = UINT64_MAX;
}

int ml_band_cache_lookup(ml_band_cache *c, ml_layout *L, uint64_t index, ml_band_ref *out, int count) {
    pthread_mutex_lock(&c->mu);
    ml_band *e = find_locked(c, L, index);
    if (e) {
        e->pins++;
        ml_list_remove(&e->lru);
        ml_list_push_front(&c->lru, &e->lru);
    }
    pthread_mutex_unlock(&c->mu);
    if (count)
        atomic_fetch_add_explicit(e ? &c->hits : &c->misses, 1, memory_order_relaxed);
    if (e)
        *out = (ml_band_ref){.e = e, .buf = e->buf, .index = index};
    return e != NULL;
}

/* Count L's decoded size in the auto limit and the stats' `wanted`, once
 * (at its first band).
 * Call with mu held. */
static void note_dataset_locked(ml_band_cache *c, ml_layout *L) {
    for (unsigned i = 0; i < c->n_seen; i++)
        if (c->seen[i].L == L)
            return;
    if (c->n_seen == ML_BAND_CACHE_MAX_SEEN)
        return;
    size_t bytes = L->n_rows * L->row_bytes; /* fits memory: h5open.c checks */
    ml_layout_ref(L);
    c->seen[c->n_seen].L = L;
    c->seen[c->n_seen++].bytes = bytes;
    c->seen_bytes = bytes > SIZE_MAX - c->seen_bytes ? SIZE_MAX : c->seen_bytes + bytes;
}

/* The limit now. Call with mu held. */
static size_t limit_locked(const ml_band_cache *c, size_t band_bytes) {
    if (c->limit)
        return c->limit;
    size_t lim = c->seen_bytes > ML_BAND_CACHE_MIN_BYTES ? c->seen_bytes : ML_BAND_CACHE_MIN_BYTES;
    size_t per_worker = 4 * (size_t)c->n_workers * band_bytes;
    lim = lim > per_worker ? lim : per_worker;
    return lim < c->budget ? lim : c->budget;
}

void ml_band_cache_insert(ml_band_cache *c, ml_layout *L, ml_band_ref *b, size_t bytes) {
    ml_layout *drop[EVICT_BATCH];
    unsigned n_drop = 0;
    ml_band *e = ml_fault_alloc() < 0 ? NULL : malloc(sizeof *e);
    if (!e)
        return; /* stays private */
    pthread_mutex_lock(&c->mu);
    note_dataset_locked(c, L);
    size_t limit = limit_locked(c, bytes);
    if (bytes > limit || find_locked(c, L, b->index))
        goto keep_private;
    /* Evict from the least recently used end, skipping pinned bands. */
    for (ml_list_node *n = c->lru.head.prev; c->used + bytes > limit && n != &c->lru.head && n_drop < EVICT_BATCH;) {
        ml_band *v = ml_list_entry(n, ml_band, lru);
        n = n->prev;
        if (v->pins)
            continue;
        ml_list_remove(&v->lru);
        unhash_locked(c, v);
        c->n_entries--;
        c->used -= v->bytes;
        free(v->buf);
        drop[n_drop++] = v->L;
        free(v);
        atomic_fetch_add_explicit(&c->evictions, 1, memory_order_relaxed);
    }
    if (c->used + bytes > limit)
        goto keep_private;
    grow_locked(c);
    if (!c->n_buckets)
        goto keep_private;
    ml_layout_ref(L);
    *e = (ml_band){.L = L, .index = b->index, .buf = b->buf, .bytes = bytes, .pins = 1};
    size_t k = bucket_of(c, L, b->index);
    e->hnext = c->buckets[k];
    c->buckets[k] = e;
    ml_list_push_front(&c->lru, &e->lru);
    c->n_entries++;
    c->used += bytes;
    *b = (ml_band_ref){.e = e, .buf = b->buf, .index = b->index};
    e = NULL;
keep_private:
    pthread_mutex_unlock(&c->mu);
    free(e);
    for (unsigned i = 0; i < n_drop; i++)
        ml_layout_unref(drop[i]);
}

void ml_band_cache_get_stats(ml_band_cache *c, ml_band_cache_stats *st) {
    pthread_mutex_lock(&c->mu);
    st->bytes = c->used;
    st->limit = limit_locked(c, 0);
    st->wanted = c->seen_bytes;
    pthread_mutex_unlock(&c->mu);
    st->hits = atomic_load_explicit(&c->hits, memory_order_relaxed);
    st->misses = atomic_load_explicit(&c->misses, memory_order_relaxed);
    st->evictions = atomic_load_explicit(&c->evictions, memory_order_relaxed);
}
