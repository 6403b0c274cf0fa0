/* schedule.h - block schedules: which rows block k of a stream holds, how
 * many blocks the stream has, and where it stands (a position that can be
 * saved and restored). A schedule is a pure function of its parameters: no
 * I/O, no tables, O(1) memory whatever the number of blocks. */
#ifndef ML_SCHEDULE_H
#define ML_SCHEDULE_H

#include <stdint.h>

#include "perm.h"

/* A block is at most this many runs of consecutive rows. */
#define ML_SCHEDULE_MAX_RUNS 4

typedef enum ml_schedule_kind {
    ML_SCHEDULE_SEQUENTIAL = 0, /* blocks in dataset order, once; block k = rows [kB, min(kB+B, N)) */
    ML_SCHEDULE_CYCLIC = 1,     /* endless; block k = rows (kB + j) mod N, j < B (1 or 2 runs) */
    ML_SCHEDULE_PERMUTED = 2,   /* the sequential blocks, once, in a keyed order (seed, epoch) */
} ml_schedule_kind;

/* What a schedule is a function of. Zero-initialise, then set what you use. */
typedef struct ml_schedule_params {
    ml_schedule_kind kind;
    uint64_t n_rows;      /* rows in the dataset; 0: a stream of no blocks */
    uint64_t block_rows;  /* rows per block, >= 1 (cyclic: <= n_rows) */
    int remainder;        /* sequential/permuted: also the short last block */
    uint64_t seed;        /* permuted: key of the block order */
    uint64_t epoch;       /* permuted: a new order per epoch under one seed */
    uint32_t shard_rank;  /* this shard, < max(shard_count, 1) */
    uint32_t shard_count; /* R: 0 or 1 one shard; R > 1 every R-th block (not cyclic) */
} ml_schedule_params;

/* A schedule: its parameters, what follows from them, and a position.
 * Plain data: copy it freely (a stream keeps its own copy). */
typedef struct ml_schedule {
    ml_schedule_params p;                 /* immutable after init */
    uint64_t n_blocks;                    /* this shard's blocks; UINT64_MAX: endless (cyclic) */
    uint64_t n_unsharded;                 /* sequential/permuted: blocks of all shards together */
    ml_perm perm;                         /* permuted: P over the n_unsharded blocks, salt 0 */
    uint64_t position;                    /* next block number, 0..n_blocks */
} ml_schedule;

/* The rows of one block, in the order they are stored in the slot. */
typedef struct ml_block_runs {
    unsigned n;                             /* 1..ML_SCHEDULE_MAX_RUNS */
    uint64_t start[ML_SCHEDULE_MAX_RUNS];   /* first row of each run */
    uint64_t count[ML_SCHEDULE_MAX_RUNS];   /* rows in each run, >= 1 */
} ml_block_runs;

/* Check p and derive the rest; position 0. Returns 0, or -ML_EINVAL for a
 * kind it does not know, block_rows 0 with rows to stream, cyclic blocks
 * longer than the dataset, shard_rank >= max(shard_count, 1), or a cyclic
 * schedule with shard_count > 1. */
int ml_schedule_init(ml_schedule *s, const ml_schedule_params *p);

/* Rows of block k (k < n_blocks; cyclic: any k). Returns 0, or -ML_EINVAL
 * past the end. */
int ml_schedule_block(const ml_schedule *s, uint64_t k, ml_block_runs *out);

/* Blocks in the stream (UINT64_MAX: endless). */
static inline uint64_t ml_schedule_n_blocks(const ml_schedule *s) { return s->n_blocks; }

/* The largest number of rows a block holds (what a ring slot must fit). */
uint64_t ml_schedule_max_rows(const ml_schedule *s);

/* Position: the number of the next block. Saving a position is reading it;
 * restoring is seeking a schedule made from the same parameters there
 * before a stream starts on it. seek returns 0, or -ML_EINVAL beyond the end. */
static inline uint64_t ml_schedule_position(const ml_schedule *s) { return s->position; }
int ml_schedule_seek(ml_schedule *s, uint64_t position);

/* The keyed bijection of [0, n) behind ML_SCHEDULE_PERMUTED: perm.c's P
 * with salt 0, n = n_unsharded. i < n; returns the block at position i. */
uint64_t ml_schedule_permute(const ml_schedule *s, uint64_t i);

#endif
