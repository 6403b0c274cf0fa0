/* band_cache.h - the Reader's cache of decoded bands of chunked data (a
 * band: the rows of one row of chunks, every chunk across the trailing
 * dims), shared by its threads. Internal to the Reader. */
#ifndef ML_BAND_CACHE_H
#define ML_BAND_CACHE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "layout.h"

#define ML_BAND_CACHE_ENTRIES 1024       /* band slots */
#define ML_BAND_CACHE_AUTO_BYTES (64u << 20)

typedef struct ml_band {
    ml_layout *L;             /* owned reference while valid */
    uint64_t index;           /* band number: rows index*c0 .. */
    unsigned char *buf;       /* owned, decoded rows */
    size_t bytes;             /* of buf: the band's rows * row_bytes */
    unsigned pins;            /* threads copying out of it */
    uint64_t tick;            /* last use, for LRU */
    int valid;
} ml_band;

typedef struct ml_band_cache {
    pthread_mutex_t mu;       /* guards everything below but the counters; never held
                                 with another lock */
    ml_band entries[ML_BAND_CACHE_ENTRIES]; /* mu */
    size_t used;              /* bytes in valid entries; mu */
    size_t limit;             /* bytes; 0 = auto: the larger of ML_BAND_CACHE_AUTO_BYTES and
                                 4 bands per worker; immutable */
    unsigned n_workers;       /* for the auto limit; immutable */
    uint64_t tick;            /* mu */
    _Atomic uint64_t hits, misses; /* bands served from / missing in the cache; relaxed */
} ml_band_cache;

/* A band a thread copies rows out of: a pinned cache entry, or a private
 * buffer (decoded here, not cached). */
typedef struct ml_band_ref {
    ml_band *e;               /* pinned cache entry, or NULL */
    unsigned char *buf;       /* decoded rows of the band */
    uint64_t index;
    int private_buf;          /* 1: buf is ours to free */
} ml_band_ref;

/* limit: bytes, 0 = auto. Returns 0 or -errno. */
int ml_band_cache_init(ml_band_cache *c, size_t limit, unsigned n_workers);

/* Free every entry (none may be pinned) and drop their layouts. Accepts
 * NULL. */
void ml_band_cache_destroy(ml_band_cache *c);

/* Pin band `index` of L if the cache has it: returns 1 with *out set,
 * else 0. count: add to the hit / miss counters (a helper's look-up does
 * not count: a miss sends the work to a worker, which looks again). */
int ml_band_cache_lookup(ml_band_cache *c, ml_layout *L, uint64_t index, ml_band_ref *out, int count);

/* Hand a freshly decoded private band (b->private_buf, `bytes` long) to
 * the cache, evicting unpinned least-recently-used bands until it fits;
 * b then pins the entry and the cache owns the buffer. Leaves b private
 * when it does not fit or another thread cached the same band meanwhile. */
void ml_band_cache_insert(ml_band_cache *c, ml_layout *L, ml_band_ref *b, size_t bytes);

/* Unpin b's entry, or free its private buffer; b is then empty
 * (index UINT64_MAX). */
void ml_band_cache_release(ml_band_cache *c, ml_band_ref *b);

#endif
