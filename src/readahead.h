/* readahead.h - read-ahead of cold data for block streams: which blocks a
 * stream asks its source to start reading before a worker reads them, and
 * how many blocks a direct-I/O worker reads in one batch. */
#ifndef ML_READAHEAD_H
#define ML_READAHEAD_H

#include <stdatomic.h>
#include <stdint.h>

#include "layout.h"
#include "schedule.h"

/* Whether a stream takes the cold path (prefetch ahead of its readers;
 * direct streams: several blocks in flight per worker). */
typedef enum ml_cold_mode {
    ML_COLD_AUTO = 0, /* buffered: prefetch the steps whose sampled pages are not resident;
                         direct: batches (direct data is never cached) */
    ML_COLD_ON = 1,   /* buffered: prefetch every step unsampled; direct: batches */
    ML_COLD_OFF = 2,  /* neither: one block per worker, the kernel's readahead alone */
} ml_cold_mode;

/* MULTILOAD_COLD=1|on or 0|off in the environment; else (unset, auto or
 * anything else) ML_COLD_AUTO. */
ml_cold_mode ml_cold_mode_env(void);

/* Bytes a prefetch step covers and bytes kept prefetched ahead of the
 * block a worker has just read (readahead.c says how they were chosen). */
#define ML_READAHEAD_STEP_BYTES (8u << 20)
#define ML_READAHEAD_WINDOW_BYTES (32u << 20)
/* Direct streams: bytes all workers together keep in flight (a worker's
 * batch is its share, at least one block) and blocks in one batch, at most. */
#define ML_DIRECT_INFLIGHT_BYTES (16u << 20)
#define ML_DIRECT_BATCH_BLOCKS 64

/* AUTO: at most this many steps pass unsampled after a resident sample. */
#define ML_READAHEAD_MAX_SKIP 8

/* One stream's prefetch state, shared by its workers without a lock. */
typedef struct ml_readahead {
    ml_cold_mode mode;         /* immutable; OFF: ml_readahead_advance does nothing */
    uint64_t step;             /* blocks per prefetch step, >= 1; immutable */
    uint64_t window;           /* blocks kept prefetched past the one just read, >= step; immutable */
    uint64_t limit;            /* one past the last block number (UINT64_MAX: endless); immutable */
    _Atomic uint64_t next;     /* first block no step has covered yet; advanced by CAS */
    _Atomic uint64_t prefetched; /* steps handed to the source (relaxed counter) */
    _Atomic uint64_t resident;   /* steps skipped: their sample was resident (relaxed counter) */
    _Atomic int blind;         /* AUTO only: 1 once the source could not say what is resident,
                                  so no step is prefetched from then on (relaxed) */
    _Atomic unsigned skip;     /* AUTO only: steps still to pass unsampled, taken as resident */
    _Atomic unsigned run;      /* AUTO only: steps skipped after the last resident sample, doubling
                                  (1, 2, 4, ... ML_READAHEAD_MAX_SKIP) while samples stay resident */
} ml_readahead;

/* Set up for blocks [first, limit) of block_bytes each (a schedule's
 * largest block). mode OFF or block_bytes 0: a read-ahead that does
 * nothing. */
void ml_readahead_init(ml_readahead *ra, ml_cold_mode mode, uint64_t block_bytes, uint64_t first,
                       uint64_t limit);

/* A worker has read block k of sch over L: make sure every step up to
 * block k + window has been considered. The caller that wins a step (a
 * CAS on `next`) considers it: AUTO samples the step's last block
 * (ml_fetch_resident) and prefetches the step only if that is not
 * resident (after a resident sample the next 1, 2, 4, ... up to
 * ML_READAHEAD_MAX_SKIP steps pass unsampled, as resident); ON prefetches
 * it. Prefetching hands each block's row runs to
 * ml_fetch_prefetch, runs that continue one another merged. Never waits
 * for the device (beyond what the source's prefetch does) and reports
 * nothing: a hint. Thread-safe. */
void ml_readahead_advance(ml_readahead *ra, ml_layout *L, const ml_schedule *sch, uint64_t k);

/* Blocks one direct-I/O worker reads in one batch: 1 for mode OFF, else
 * its share of ML_DIRECT_INFLIGHT_BYTES (at most ML_DIRECT_BATCH_BLOCKS)
 * as far as the slots allow every worker and the consumer a batch
 * (n_slots / (n_workers + 1)); at least 1. */
unsigned ml_direct_batch_blocks(ml_cold_mode mode, uint64_t block_bytes, unsigned n_slots,
                                unsigned n_workers);

/* The ring slots a direct stream needs for full batches: (n_workers + 1)
 * times the batch ml_direct_batch_blocks gives with slots to spare (at
 * most UINT32_MAX). The Streamer's default read_ahead for direct=True. */
unsigned ml_direct_slots(uint64_t block_bytes, unsigned n_workers);

#endif
