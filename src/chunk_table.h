/* chunk_table.h - where each chunk of one dataset lies in its file.
 *
 * Two stores behind one look-up. The table: every chunk the dataset's
 * index holds, sorted by linear index, filled once in one pass over the
 * index and then read by any thread without a lock. Until it is filled
 * (or for good, where no one-pass fill is possible) the cache: the
 * answers of look-ups one chunk at a time, under a mutex of its own.
 *
 * Both are sized by the chunks looked up or written, never by the chunk
 * grid the dataspace claims: a 13 KB file may claim 2^32 chunks, and a
 * genuine sparse dataset of that grid holds a handful.
 */
#ifndef ML_CHUNK_TABLE_H
#define ML_CHUNK_TABLE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "layout.h" /* ml_chunk_info */

/* One entry of the table. */
typedef struct ml_chunk_entry {
    uint64_t index;          /* linear chunk index, row-major over the chunk grid */
    ml_chunk_info info;
} ml_chunk_entry;

typedef struct ml_chunk_table {
    _Atomic(ml_chunk_entry *) all; /* NULL until published; then sorted by index, strictly
                                      increasing, never written again (owned) */
    uint64_t n_all;                /* entries in `all`; written before `all` is published */
    pthread_mutex_t mu;            /* guards the cache fields below */
    ml_chunk_entry *cache;         /* open addressing by index; a slot with info.size ==
                                      UINT64_MAX is empty (owned) */
    size_t cache_cap;              /* slots: 0 or a power of two */
    size_t cache_n;                /* slots in use, <= cache_cap / 2 */
} ml_chunk_table;

/* Set up an empty table. Returns 0 or -errno. */
int ml_chunk_table_init(ml_chunk_table *t);

/* Free both stores. Accepts a table that init failed on or never ran on
 * if it was zeroed first. */
void ml_chunk_table_destroy(ml_chunk_table *t);

/* Chunk `index`: 1 and *out if known (once the table is published every
 * chunk is known: one it does not hold was never written), 0 if not known
 * yet. Thread-safe; lock-free once published. */
int ml_chunk_table_get(ml_chunk_table *t, uint64_t index, ml_chunk_info *out);

/* Remember the answer for one chunk in the cache. Thread-safe. An entry
 * already there is kept (the first answer stands). Returns 0 or -ENOMEM. */
int ml_chunk_table_remember(ml_chunk_table *t, uint64_t index, const ml_chunk_info *info);

/* 1 if every cached answer equals what the sorted `entries` (n of them)
 * say, absence meaning never written; 0 at the first that differs. The
 * caller must keep the cache from changing meanwhile (it holds the lock
 * every remember happens under). */
int ml_chunk_table_agrees(ml_chunk_table *t, const ml_chunk_entry *entries, uint64_t n);

/* Publish the whole table: `entries` (n, sorted by strictly increasing
 * index) becomes the answer for every chunk. Takes ownership of entries.
 * At most once per table; a second call frees entries and changes
 * nothing. */
void ml_chunk_table_publish(ml_chunk_table *t, ml_chunk_entry *entries, uint64_t n);

/* 1 once the table is published. */
int ml_chunk_table_complete(ml_chunk_table *t);

#endif
