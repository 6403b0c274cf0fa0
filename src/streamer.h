/* streamer.h - sequential block streams over one dataset: worker threads
 * fill ring slots with consecutive blocks of rows. */
#ifndef ML_STREAMER_H
#define ML_STREAMER_H

#include <stdint.h>

#include "error.h"
#include "layout.h"
#include "io.h"
#include "ring.h"

typedef struct ml_stream_config {
    unsigned n_workers;   /* worker threads, >= 1 */
    unsigned read_ahead;  /* ring slots, >= 1 */
    uint64_t block_rows;  /* rows per block, 1..n_rows */
    int cyclic;           /* wrap forever; the wrapped block carries the remainder */
    int ordered;          /* hand out blocks in dataset order */
    int remainder;        /* non-cyclic: also stream the last short block */
    ml_io_mode io_mode;
    int direct;           /* read with O_DIRECT (bypass the page cache) */
} ml_stream_config;

/* Block arithmetic, shared with tests. Non-cyclic streams have
 * ml_stream_n_blocks() blocks; block k covers rows [k*B, min((k+1)*B, N)).
 * Cyclic block k covers rows (k*B + j) mod N for j < B: at most two runs. */
uint64_t ml_stream_n_blocks(uint64_t n_rows, uint64_t block_rows, int cyclic, int remainder);

typedef struct ml_block_runs {
    unsigned n;          /* 1 or 2 */
    uint64_t start[2];   /* first row of each run */
    uint64_t count[2];   /* rows in each run */
} ml_block_runs;

void ml_stream_block_runs(uint64_t n_rows, uint64_t block_rows, int cyclic, uint64_t k,
                          ml_block_runs *out);

typedef struct ml_stream ml_stream;

typedef struct ml_stream_stats {
    uint64_t blocks;      /* blocks handed to consumers */
    uint64_t bytes;       /* bytes in those blocks */
    uint64_t wait_ns;     /* consumer time blocked in ml_stream_take */
    uint64_t errors;      /* blocks that carried an error */
} ml_stream_stats;

/* Start a stream over L (takes its own reference) and its workers.
 * Returns 0 or a negative code with detail in err. */
int ml_stream_open(ml_stream **out, ml_layout *L, const ml_stream_config *cfg, ml_error *err);

/* Take the next block (see ml_ring_take for codes and ownership). */
int ml_stream_take(ml_stream *s, uint64_t owner, long timeout_ms, ml_taken *out);

/* Stop the workers and wait for them (they finish the block in hand) for
 * at most about half a second; a worker still stuck in a read after that
 * is detached and frees its share of the stream when the read returns.
 * Idempotent. Slot memory stays alive while ring references remain. */
void ml_stream_close(ml_stream *s);

/* Close if needed and free. Accepts NULL. */
void ml_stream_free(ml_stream *s);

/* The stream's ring, borrowed (ref it to keep it). */
ml_ring *ml_stream_ring(ml_stream *s);

/* Add bytes of a block handed out (stats are updated by the consumer side). */
void ml_stream_get_stats(ml_stream *s, ml_stream_stats *st);

ml_io_mode ml_stream_io_mode(const ml_stream *s);

#endif
