/* order.h - the order of an epoch: which row comes k-th in an epoch's
 * global sequence, and which rows make rank r's batch at a step. A pure,
 * versioned function of its parameters: no I/O, no tables, O(1) memory
 * whatever the number of rows. The contract (version 1) is order.c's
 * opening comment. */
#ifndef ML_ORDER_H
#define ML_ORDER_H

#include <stddef.h>
#include <stdint.h>

#include "perm.h"

#define ML_ORDER_VERSION 1 /* the only version so far */

typedef enum ml_order_shuffle {
    ML_ORDER_NONE = 0,   /* rows in dataset order (then striped into streams) */
    ML_ORDER_BLOCK = 1,  /* whole blocks permuted, rows inside a block in order */
    ML_ORDER_WINDOW = 2, /* blocks permuted, rows permuted inside each window of a stream */
    ML_ORDER_GLOBAL = 3, /* every row permuted */
} ml_order_shuffle;

typedef enum ml_order_tail {
    ML_ORDER_DROP = 0,   /* steps = N / GB: each row at most once, < GB dropped */
    ML_ORDER_PAD = 1,    /* steps = ceil(N / GB): the last batch padded with repeats */
    ML_ORDER_UNEVEN = 2, /* nothing dropped or repeated: the last batches are short */
} ml_order_tail;

/* What an order is a function of. Zero-initialise, then set what you use. */
typedef struct ml_order_params {
    uint64_t n_rows;        /* rows in the dataset, N >= 0 */
    uint64_t block_rows;    /* B >= 1: rows per block (chunk-aligned by the caller) */
    uint64_t seed;          /* key of the permutations */
    uint64_t epoch;         /* a new order per epoch under one seed */
    ml_order_shuffle shuffle;
    uint64_t window_rows;   /* window: W, a multiple of B; 0 = default (8 blocks); others: 0 */
    uint64_t num_streams;   /* S >= 1: streams the epoch is cut into */
    uint64_t global_batch;  /* GB >= 1: rows per step over all ranks */
    ml_order_tail tail;
    unsigned version;       /* ML_ORDER_VERSION */
} ml_order_params;

/* An order: its parameters (defaults resolved) and what follows from them.
 * Plain data, immutable after init: copy it and share it freely. */
typedef struct ml_order {
    ml_order_params p;      /* window_rows resolved (window shuffle) */
    uint64_t n_full;        /* full blocks: N / B */
    uint64_t stream_rows;   /* L = (n_full / S) * B: rows of each stream */
    uint64_t body_rows;     /* S * L: rows of the streams; the other N - S*L are the tail */
    uint64_t steps;         /* global steps per epoch (tail rule applied) */
    ml_perm blocks;         /* block, window: P over the n_full full blocks, salt 0 */
    ml_perm rows;           /* global: P over the N rows, salt 0 */
} ml_order;

/* Check p and derive the rest. Returns 0, or -ML_EINVAL with the rule that
 * p breaks written to why (why_len bytes, NUL-terminated; why may be NULL). */
int ml_order_init(ml_order *o, const ml_order_params *p, char *why, size_t why_len);

/* The k-th row of the epoch's global sequence, k < n_rows (the caller
 * checks). A bijection of [0, n_rows). */
uint64_t ml_order_row(const ml_order *o, uint64_t k);

/* Check that rank of world_size can take part. Returns 0, or -ML_EINVAL
 * with the rule broken in why (as ml_order_init). */
int ml_order_check_shard(const ml_order *o, uint64_t rank, uint64_t world_size, char *why, size_t why_len);

/* Batches rank gets in the epoch (the shard must pass ml_order_check_shard).
 * drop and pad: o->steps for every rank; uneven: that rank's count. */
uint64_t ml_order_steps(const ml_order *o, uint64_t rank, uint64_t world_size);

/* Rows of rank's batch at step into rows[] (room for global_batch /
 * world_size values), and under pad valid[i] = 0 where rows[i] repeats a
 * row to fill the last batch (valid may be NULL; other tails: all 1).
 * *n_out: the count written (GB / world_size, or fewer under uneven).
 * Returns 0, -ML_EINVAL for a shard ml_order_check_shard refuses, or
 * -ERANGE for step >= ml_order_steps(). */
int ml_order_local_batch(const ml_order *o, uint64_t step, uint64_t rank, uint64_t world_size,
                         uint64_t *rows, uint8_t *valid, uint64_t *n_out);

#endif
