/* schedule.c - block k of a stream -> at most ML_SCHEDULE_MAX_RUNS row runs.
 *
 * Invariants: a schedule is a pure function of its parameters (n_rows N,
 * block_rows B, kind, remainder, seed, epoch, shard_rank, shard_count), so
 * any process that builds one from the same parameters agrees on every
 * block; it holds O(1) state, so a permutation of 2^40 blocks costs the
 * same as one of 4; and every run it returns lies inside [0, N) with
 * count >= 1. Work per block is a few multiplications (a permuted block:
 * ML_FEISTEL_ROUNDS mixes per cycle-walk step, under two steps expected).
 *
 * Kinds:
 *  - sequential: n_blocks = N / B (+1 with remainder when B does not divide
 *    N); block k = rows [kB, min(kB + B, N)), one run.
 *  - cyclic: endless (n_blocks = UINT64_MAX); block k = rows (kB + j) mod N
 *    for j < B, so the block that wraps carries the remainder: one run, or
 *    two when it wraps (B <= N). kB may exceed 64 bits: reduced in 128.
 *  - permuted: the sequential blocks (with or without the remainder block),
 *    each once, block k being sequential block P(k) for a keyed bijection
 *    P of [0, n): perm.c's keyed Feistel bijection with cycle walking,
 *    keyed by (seed, epoch) with salt 0. Its definition, in perm.c's
 *    opening comment, is the contract (numpy-free, so any language can
 *    reproduce an order from its seed and epoch); it moved there unchanged
 *    when the order of an epoch (order.c) came to share it.
 *
 * Shards (shard_count R > 1, shard_rank r < R; sequential and permuted
 * only, cyclic refused): let n be the unsharded block count above and
 * u(j) its block j (sequential block j, or P(j) with P over all n blocks).
 * Shard r's block k is u(kR + r), for k < n_blocks = floor(n / R). So the
 * R shards partition the first floor(n / R) * R positions of the unsharded
 * sequence, every shard has the same number of blocks (what data-parallel
 * training needs: ranks that step together), and the n mod R blocks at the
 * last positions are dropped from this pass (permuted: different blocks
 * each epoch; sequential: always the last ones). With remainder, the short
 * block is one of the n, so it lands in one shard or is dropped. shard_count
 * 0 and 1 both mean one shard: exactly the unsharded schedule.
 */
#include "schedule.h"

#include "error.h"

static uint64_t sequential_blocks(uint64_t n_rows, uint64_t block_rows, int remainder) {
    if (n_rows == 0)
        return 0;
    return n_rows / block_rows + (remainder && n_rows % block_rows ? 1 : 0);
}

int ml_schedule_init(ml_schedule *s, const ml_schedule_params *p) {
    if (p->kind != ML_SCHEDULE_SEQUENTIAL && p->kind != ML_SCHEDULE_CYCLIC &&
        p->kind != ML_SCHEDULE_PERMUTED)
        return -ML_EINVAL;
    if (p->n_rows > 0 && p->block_rows == 0)
        return -ML_EINVAL;
    /* Longer cyclic blocks would wrap more than once: more runs than a
     * block may have, and a slot larger than the dataset. */
    if (p->kind == ML_SCHEDULE_CYCLIC && p->block_rows > p->n_rows && p->n_rows > 0)
        return -ML_EINVAL;
    uint32_t R = p->shard_count > 1 ? p->shard_count : 1;
    if (p->shard_rank >= R)
        return -ML_EINVAL;
    if (p->kind == ML_SCHEDULE_CYCLIC && R > 1)
        return -ML_EINVAL; /* an endless stream has no pass to split */
    *s = (ml_schedule){.p = *p};
    if (p->kind == ML_SCHEDULE_CYCLIC) {
        s->n_blocks = p->n_rows == 0 ? 0 : UINT64_MAX;
        return 0;
    }
    s->n_unsharded = sequential_blocks(p->n_rows, p->block_rows, p->remainder);
    s->n_blocks = s->n_unsharded / R;
    if (p->kind == ML_SCHEDULE_PERMUTED) {
        ml_perm_init(&s->perm, s->n_unsharded, p->seed, p->epoch, 0);
    }
    return 0;
}

uint64_t ml_schedule_permute(const ml_schedule *s, uint64_t i) { return ml_perm_apply(&s->perm, i); }

int ml_schedule_block(const ml_schedule *s, uint64_t k, ml_block_runs *out) {
    uint64_t N = s->p.n_rows, B = s->p.block_rows;
    if (s->p.kind == ML_SCHEDULE_CYCLIC) { /* endless: every k, UINT64_MAX too */
        if (N == 0)
            return -ML_EINVAL;
        uint64_t start = (uint64_t)(((unsigned __int128)k * B) % N);
        uint64_t first = N - start < B ? N - start : B;
        out->n = 1;
        out->start[0] = start;
        out->count[0] = first;
        if (first < B) {
            out->n = 2;
            out->start[1] = 0;
            out->count[1] = B - first;
        }
        return 0;
    }
    if (k >= s->n_blocks)
        return -ML_EINVAL;
    /* Position in the unsharded sequence: k < floor(n / R), so kR + r < n. */
    uint64_t j = s->p.shard_count > 1 ? k * s->p.shard_count + s->p.shard_rank : k;
    uint64_t b = s->p.kind == ML_SCHEDULE_PERMUTED ? ml_schedule_permute(s, j) : j;
    /* b < n_unsharded, so b*B < N: no overflow; compare without forming
     * start + B, which can wrap. */
    uint64_t start = b * B;
    out->n = 1;
    out->start[0] = start;
    out->count[0] = B < N - start ? B : N - start;
    return 0;
}

uint64_t ml_schedule_max_rows(const ml_schedule *s) {
    return s->p.block_rows < s->p.n_rows ? s->p.block_rows : s->p.n_rows;
}

int ml_schedule_seek(ml_schedule *s, uint64_t position) {
    if (position > s->n_blocks)
        return -ML_EINVAL;
    s->position = position;
    return 0;
}
