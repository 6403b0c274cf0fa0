/* streamer.h - block streams over one dataset: worker threads fill the
 * slots of a caller's ring with the blocks of rows a schedule names. */
#ifndef ML_STREAMER_H
#define ML_STREAMER_H

#include <stdint.h>

#include "budget.h"
#include "error.h"
#include "layout.h"
#include "io.h"
#include "readahead.h"
#include "ring.h"
#include "schedule.h"

/* The stream's own policy. Which rows each block holds, how many blocks
 * there are and where the stream starts come from its schedule; the slots
 * come from its ring. */
typedef struct ml_stream_config {
    unsigned n_workers;   /* worker threads, >= 1 */
    int ordered;          /* consumer policy: take hands out blocks in schedule order */
    ml_io_mode io_mode;
    int direct;           /* read with O_DIRECT (bypass the page cache) */
    ml_cold_mode cold;    /* read-ahead of cold data (readahead.h); AUTO: MULTILOAD_COLD
                             may override it */
    ml_budget *budget;    /* borrowed, or NULL: the stream makes its own client of it (budget.h) */
    int budget_priority;  /* that client's priority among the budget's waiters */
} ml_stream_config;

typedef struct ml_stream ml_stream;

typedef struct ml_stream_stats {
    uint64_t blocks;      /* blocks handed to consumers */
    uint64_t bytes;       /* bytes in those blocks */
    uint64_t wait_ns;     /* consumer time blocked in ml_stream_take */
    uint64_t errors;      /* blocks that carried an error */
    uint64_t prefetch_steps; /* read-ahead steps hinted to the source (readahead.c) */
    uint64_t resident_steps; /* read-ahead steps found resident and left alone */
    uint64_t batched_blocks; /* blocks read in a worker's batch of several (direct) */
    unsigned batch_blocks;   /* largest batch a worker reads: 1, or more when direct */
} ml_stream_stats;

/* Create the ring a stream of L under sch needs: n_slots slots that fit
 * the schedule's largest block, block numbers from the schedule's position
 * to its end, from `backing`. Returns 0 or a negative code with detail in
 * err (-ML_EINVAL for a block whose bytes overflow memory, -ENOMEM when
 * the slots cannot be allocated). The caller owns the ring's reference. */
int ml_stream_ring_new(ml_ring **out, const ml_layout *L, const ml_schedule *sch, unsigned n_slots,
                       ml_ring_backing backing, ml_error *err);

/* Start a stream over L (takes its own reference) filling `ring` (takes
 * its own reference; made by ml_stream_ring_new or to the same contract:
 * block numbers [position, n_blocks) of sch, slots that fit its largest
 * block) with the blocks `sch` (copied) names, and its workers. Block
 * number k of the ring is block k of the schedule. Returns 0 or a
 * negative code with detail in err (-ML_EINVAL for a schedule of another
 * row count, blocks longer than the dataset, or a ring that does not fit). */
int ml_stream_open(ml_stream **out, ml_layout *L, ml_ring *ring, const ml_schedule *sch,
                   const ml_stream_config *cfg, ml_error *err);

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

/* The stream's schedule, borrowed (immutable; its position is where the
 * stream started). */
const ml_schedule *ml_stream_schedule(const ml_stream *s);

/* The position to save: the number of the next block take() hands out
 * (exact for an ordered stream; unordered, blocks before it may still be
 * in flight). Restore with ml_schedule_seek before ml_stream_ring_new. */
uint64_t ml_stream_position(ml_stream *s);

/* Add bytes of a block handed out (stats are updated by the consumer side). */
void ml_stream_get_stats(ml_stream *s, ml_stream_stats *st);

/* The stream's use of its budget (bytes and I/Os taken, time throttled,
 * since it started): 0, or -ENOENT for a stream without a budget. */
int ml_stream_budget_stats(ml_stream *s, ml_budget_stats *st);

ml_io_mode ml_stream_io_mode(const ml_stream *s);

#endif
