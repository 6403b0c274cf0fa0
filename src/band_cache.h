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
#include "list.h"

#define ML_BAND_CACHE_MIN_BYTES (64u << 20)  /* auto: at least this much */
#define ML_BAND_CACHE_MAX_SEEN 64            /* datasets the auto size adds up */

typedef struct ml_band {
    ml_layout *L;             /* owned reference */
    uint64_t index;           /* band number: rows index*c0 .. */
    unsigned char *buf;       /* owned, decoded rows */
    size_t bytes;             /* of buf: the band's rows * row_bytes */
    unsigned pins;            /* threads copying out of it */
    struct ml_band *hnext;    /* next in its hash bucket */
    ml_list_node lru;         /* on the cache's LRU list, most recent first */
} ml_band;

typedef struct ml_band_cache {
    pthread_mutex_t mu;       /* guards everything below but the counters; never held
                                 with another lock */
    ml_band **buckets;        /* n_buckets heads (a power of two), or NULL; mu */
    size_t n_buckets, n_entries; /* mu */
    ml_list lru;              /* every entry, most recently used first; mu */
    size_t used;              /* bytes in entries; mu */
    size_t limit;             /* bytes; 0 = auto (see ml_band_cache_limit); immutable */
    size_t budget;            /* auto: the most it grows to; immutable */
    unsigned n_workers;       /* for the auto limit; immutable */
    struct { ml_layout *L; size_t bytes; } seen[ML_BAND_CACHE_MAX_SEEN]; /* datasets cached
                                 so far (owned references) and their decoded size; mu */
    unsigned n_seen;          /* mu */
    size_t seen_bytes;        /* sum of seen[].bytes: what caching all of them takes; mu */
    _Atomic uint64_t hits, misses, evictions; /* relaxed counters */
} ml_band_cache;

/* A band a thread copies rows out of: a pinned cache entry, or a private
 * buffer (decoded here, not cached). */
typedef struct ml_band_ref {
    ml_band *e;               /* pinned cache entry, or NULL */
    unsigned char *buf;       /* decoded rows of the band */
    uint64_t index;
    int private_buf;          /* 1: buf is ours to free */
} ml_band_ref;

/* limit: bytes, 0 = auto: the decoded size of every dataset the cache has
 * held a band of (so a dataset whose decoded rows fit is cached whole),
 * at least ML_BAND_CACHE_MIN_BYTES and 4 bands per worker -- but never
 * more than `budget` (0: ml_band_cache_auto_budget()). Returns 0 or
 * -errno. */
int ml_band_cache_init(ml_band_cache *c, size_t limit, size_t budget, unsigned n_workers);

/* The auto budget: an eighth of physical memory, at most 2 GiB. */
size_t ml_band_cache_auto_budget(void);

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

typedef struct ml_band_cache_stats {
    uint64_t hits, misses, evictions;
    size_t bytes;             /* decoded bytes held now */
    size_t limit;             /* the most it holds now (auto: as sized so far) */
    size_t wanted;            /* what would hold every dataset it has seen, decoded */
} ml_band_cache_stats;

void ml_band_cache_get_stats(ml_band_cache *c, ml_band_cache_stats *st);

#endif
