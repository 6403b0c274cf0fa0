/* schedule.c - block k of a stream -> at most ML_SCHEDULE_MAX_RUNS row runs.
 *
 * Invariants: a schedule is a pure function of its parameters (n_rows N,
 * block_rows B, kind, remainder, seed, epoch; shard fields reserved), so
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
 *    P of [0, n). The definition below is the contract (numpy-free, so any
 *    language can reproduce an order from its seed and epoch):
 *
 *      mix(x)  = splitmix64's finalizer: x ^= x >> 30; x *= 0xbf58476d1ce4e5b9;
 *                x ^= x >> 27; x *= 0x94d049bb133111eb; x ^= x >> 31 (mod 2^64)
 *      G       = 0x9e3779b97f4a7c15
 *      base    = mix(mix(seed + G) ^ epoch)
 *      key[i]  = mix(base + (i + 1) * G),  i < ML_FEISTEL_ROUNDS (6)
 *      w       = the least w with 2^w >= n (n = 1: w = 0)
 *      E(x)    on w-bit x: r = w / 2, l = w - r; for each round i:
 *                hi = x >> r, lo = x & (2^r - 1),
 *                x = (lo << l) | ((hi ^ mix(lo ^ key[i])) & (2^l - 1)),
 *                then swap l and r
 *      P(k)    = y = E(k); while y >= n: y = E(y)   (cycle walking)
 *
 *    Each round is a bijection of w-bit values (an unbalanced Feistel
 *    round), so E is one; cycle walking restricts it to a bijection of
 *    [0, n): the walk from k < n follows k's cycle of E, which re-enters
 *    [0, n) at the latest when it comes back to k, and 2^w < 2n bounds the
 *    expected walk below 2 steps.
 */
#include "schedule.h"

#include "error.h"

#define GOLDEN 0x9e3779b97f4a7c15ull

static uint64_t mix(uint64_t x) {
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    x ^= x >> 31;
    return x;
}

/* 2^b - 1 for b in 0..64, without the undefined shift by 64. */
static uint64_t mask(unsigned b) { return b >= 64 ? ~0ull : (1ull << b) - 1; }

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
    if (p->shard_rank != 0 || p->shard_count > 1)
        return -ML_EINVAL; /* sharding: the training issue defines it */
    *s = (ml_schedule){.p = *p};
    if (p->kind == ML_SCHEDULE_CYCLIC) {
        s->n_blocks = p->n_rows == 0 ? 0 : UINT64_MAX;
        return 0;
    }
    s->n_blocks = sequential_blocks(p->n_rows, p->block_rows, p->remainder);
    if (p->kind == ML_SCHEDULE_PERMUTED) {
        s->n_base = s->n_blocks;
        while (s->bits < 64 && (1ull << s->bits) < s->n_base)
            s->bits++;
        uint64_t base = mix(mix(p->seed + GOLDEN) ^ p->epoch);
        for (unsigned i = 0; i < ML_FEISTEL_ROUNDS; i++)
            s->key[i] = mix(base + (uint64_t)(i + 1) * GOLDEN);
    }
    return 0;
}

/* E: one pass of the Feistel network over bits-wide values. */
static uint64_t feistel(const ml_schedule *s, uint64_t x) {
    unsigned r = s->bits / 2, l = s->bits - r;
    for (unsigned i = 0; i < ML_FEISTEL_ROUNDS; i++) {
        uint64_t hi = x >> r, lo = x & mask(r);
        x = (lo << l) | ((hi ^ mix(lo ^ s->key[i])) & mask(l));
        unsigned t = l;
        l = r;
        r = t;
    }
    return x;
}

uint64_t ml_schedule_permute(const ml_schedule *s, uint64_t i) {
    uint64_t y = feistel(s, i);
    while (y >= s->n_base) /* ends: i's cycle re-enters [0, n) (see top) */
        y = feistel(s, y);
    return y;
}

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
    uint64_t b = s->p.kind == ML_SCHEDULE_PERMUTED ? ml_schedule_permute(s, k) : k;
    /* b < n_blocks, so b*B < N: no overflow; compare without forming
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
