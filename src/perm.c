/* perm.c - the keyed bijection P of [0, n) (perm.h).
 *
 * Invariants: P is a pure function of (n, seed, epoch, salt), holds O(1)
 * state (a permutation of 2^40 values costs what one of 4 does) and maps
 * [0, n) onto itself one to one. Work per value: ML_FEISTEL_ROUNDS mixes
 * per cycle-walk step, under two steps expected. The definition below is
 * the contract: the permuted block schedule (schedule.c) and every version
 * of the order of an epoch (order.c) are defined on it, so changing any
 * constant here changes recorded orders (pinned by known answers in
 * tests/c/test_schedule.c and tests/test_order.py).
 *
 *      mix(x)  = splitmix64's finalizer: x ^= x >> 30; x *= 0xbf58476d1ce4e5b9;
 *                x ^= x >> 27; x *= 0x94d049bb133111eb; x ^= x >> 31 (mod 2^64)
 *      G       = 0x9e3779b97f4a7c15,  H = 0xd1b54a32d192ed03
 *      base    = mix(mix(seed + G) ^ epoch) + salt * H      (mod 2^64)
 *      key[i]  = mix(base + (i + 1) * G),  i < ML_FEISTEL_ROUNDS (6)
 *      w       = the least w with 2^w >= n (n <= 1: w = 0)
 *      E(x)    on w-bit x: r = w / 2, l = w - r; for each round i:
 *                hi = x >> r, lo = x & (2^r - 1),
 *                x = (lo << l) | ((hi ^ mix(lo ^ key[i])) & (2^l - 1)),
 *                then swap l and r
 *      P(k)    = y = E(k); while y >= n: y = E(y)   (cycle walking)
 *
 * Each round is a bijection of w-bit values (an unbalanced Feistel round),
 * so E is one; cycle walking restricts it to a bijection of [0, n): the
 * walk from k < n follows k's cycle of E, which re-enters [0, n) at the
 * latest when it comes back to k, and 2^w < 2n bounds the expected walk
 * below 2 steps. With salt 0 this is exactly the permutation the permuted
 * schedule has used since it was written.
 */
#include "perm.h"

#define GOLDEN 0x9e3779b97f4a7c15ull
#define SALT_MUL 0xd1b54a32d192ed03ull

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

void ml_perm_init(ml_perm *p, uint64_t n, uint64_t seed, uint64_t epoch, uint64_t salt) {
    *p = (ml_perm){.n = n};
    while (p->bits < 64 && (1ull << p->bits) < n)
        p->bits++;
    uint64_t base = mix(mix(seed + GOLDEN) ^ epoch) + salt * SALT_MUL;
    for (unsigned i = 0; i < ML_FEISTEL_ROUNDS; i++)
        p->key[i] = mix(base + (uint64_t)(i + 1) * GOLDEN);
}

/* E: one pass of the Feistel network over bits-wide values. */
static uint64_t feistel(const ml_perm *p, uint64_t x) {
    unsigned r = p->bits / 2, l = p->bits - r;
    for (unsigned i = 0; i < ML_FEISTEL_ROUNDS; i++) {
        uint64_t hi = x >> r, lo = x & mask(r);
        x = (lo << l) | ((hi ^ mix(lo ^ p->key[i])) & mask(l));
        unsigned t = l;
        l = r;
        r = t;
    }
    return x;
}

uint64_t ml_perm_apply(const ml_perm *p, uint64_t i) {
    uint64_t y = feistel(p, i);
    while (y >= p->n) /* ends: i's cycle re-enters [0, n) (see top) */
        y = feistel(p, y);
    return y;
}
