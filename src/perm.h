/* perm.h - a keyed bijection of [0, n): O(1) memory, random access, a pure
 * function of (n, seed, epoch, salt), independent of numpy. Behind the
 * permuted block schedule (schedule.c) and the order of an epoch (order.c).
 * The exact definition, which is a contract, is in perm.c's opening comment. */
#ifndef ML_PERM_H
#define ML_PERM_H

#include <stdint.h>

#define ML_FEISTEL_ROUNDS 6

/* Plain data: copy it freely. */
typedef struct ml_perm {
    uint64_t n;                       /* size of the domain [0, n) */
    unsigned bits;                    /* Feistel domain 2^bits >= n, 0..64 */
    uint64_t key[ML_FEISTEL_ROUNDS];  /* round keys from seed, epoch and salt */
} ml_perm;

/* The permutation of [0, n) keyed by (seed, epoch, salt). salt 0 is the
 * permuted schedule's key; other salts give independent permutations under
 * the same seed and epoch. Cannot fail. */
void ml_perm_init(ml_perm *p, uint64_t n, uint64_t seed, uint64_t epoch, uint64_t salt);

/* P(i) for i < n (the caller checks i < n; n = 0 has no valid i). */
uint64_t ml_perm_apply(const ml_perm *p, uint64_t i);

#endif
