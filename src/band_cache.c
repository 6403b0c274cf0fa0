/* band_cache.c - decoded bands of chunked data, kept for the next request.
 *
 * Workload: random row requests on chunked data touch the same bands again
 * and again (a 256-row request on 32-row chunks touches up to 256 bands);
 * decoding a band costs far more than looking it up, so every thread of a
 * Reader shares one LRU cache of decoded bands, keyed by (layout, band
 * number). Entries are few (ML_BAND_CACHE_ENTRIES) and a look-up is a
 * linear scan under one mutex; the copy out of a pinned band runs without
 * it.
 *
 * Invariants: a valid entry owns its buffer and a reference to its layout;
 * `used` is the sum of valid entries' bytes and never exceeds the limit
 * after an insert; an entry is evicted only when unpinned (pins counts
 * threads copying out of it, each holding an ml_band_ref), so a buffer is
 * never freed while read. Layout references of evicted entries are
 * dropped after the mutex is released (dropping the last one closes HDF5
 * handles). c->mu is never held with another lock.
 */
#include "band_cache.h"

#include <stdlib.h>
#include <string.h>

int ml_band_cache_init(ml_band_cache *c, size_t limit, unsigned n_workers) {
    memset(c, 0, sizeof *c);
    c->limit = limit;
    c->n_workers = n_workers;
    atomic_init(&c->hits, 0);
    atomic_init(&c->misses, 0);
    return -pthread_mutex_init(&c->mu, NULL);
}

void ml_band_cache_destroy(ml_band_cache *c) {
    if (!c)
        return;
    for (unsigned i = 0; i < ML_BAND_CACHE_ENTRIES; i++) {
        if (c->entries[i].valid) {
            free(c->entries[i].buf);
            ml_layout_unref(c->entries[i].L);
        }
    }
    pthread_mutex_destroy(&c->mu);
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
    for (unsigned i = 0; i < ML_BAND_CACHE_ENTRIES; i++) {
        ml_band *e = &c->entries[i];
        if (e->valid && e->L == L && e->index == index) {
            e->pins++;
            e->tick = ++c->tick;
            pthread_mutex_unlock(&c->mu);
            if (count)
                atomic_fetch_add_explicit(&c->hits, 1, memory_order_relaxed);
            *out = (ml_band_ref){.e = e, .buf = e->buf, .index = index};
            return 1;
        }
    }
    pthread_mutex_unlock(&c->mu);
    if (count)
        atomic_fetch_add_explicit(&c->misses, 1, memory_order_relaxed);
    return 0;
}

void ml_band_cache_insert(ml_band_cache *c, ml_layout *L, ml_band_ref *b, size_t bytes) {
    size_t limit = c->limit;
    if (!limit) {
        limit = ML_BAND_CACHE_AUTO_BYTES;
        if (limit < 4 * (size_t)c->n_workers * bytes)
            limit = 4 * (size_t)c->n_workers * bytes;
    }
    if (bytes > limit)
        return;
    ml_layout *drop[ML_BAND_CACHE_ENTRIES];
    unsigned n_drop = 0;
    pthread_mutex_lock(&c->mu);
    ml_band *slot = NULL;
    for (unsigned i = 0; i < ML_BAND_CACHE_ENTRIES; i++) {
        ml_band *e = &c->entries[i];
        if (e->valid && e->L == L && e->index == b->index) {
            pthread_mutex_unlock(&c->mu);
            return;
        }
    }
    for (;;) {
        ml_band *lru = NULL;
        slot = NULL;
        for (unsigned i = 0; i < ML_BAND_CACHE_ENTRIES; i++) {
            ml_band *e = &c->entries[i];
            if (!e->valid) {
                slot = slot ? slot : e;
            } else if (!e->pins && (!lru || e->tick < lru->tick)) {
                lru = e;
            }
        }
        if (slot && c->used + bytes <= limit)
            break;
        if (!lru) {
            slot = NULL;
            break;
        }
        lru->valid = 0;
        c->used -= lru->bytes;
        free(lru->buf);
        drop[n_drop++] = lru->L;
    }
    if (slot) {
        ml_layout_ref(L);
        *slot = (ml_band){.L = L, .index = b->index, .buf = b->buf, .bytes = bytes, .pins = 1,
                          .tick = ++c->tick, .valid = 1};
        c->used += bytes;
        *b = (ml_band_ref){.e = slot, .buf = b->buf, .index = b->index};
    }
    pthread_mutex_unlock(&c->mu);
    for (unsigned i = 0; i < n_drop; i++)
        ml_layout_unref(drop[i]);
}
