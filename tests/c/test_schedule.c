/* test_schedule.c - the schedule object (schedule.h): parameters it
 * refuses, positions (seek, save, restore), and the permuted kind: a
 * bijection of the blocks for every n up to 1500 and for powers of two and
 * their neighbours, deterministic (two schedules from the same parameters
 * agree; seed and epoch change the order), equal to known answers computed
 * from the documented definition by an independent implementation (Python,
 * no numpy), and blocks that tile the dataset; shards (every shard
 * floor(n / R) blocks, shards disjoint, shard r block k = unsharded block
 * kR + r, cyclic refused). Sequential and cyclic
 * arithmetic: test_block_math.c. */
#include <string.h>

#include "check.h"

#include "schedule.h"

static void init_ok(ml_schedule *s, ml_schedule_kind kind, uint64_t n_rows, uint64_t block_rows,
                    int remainder, uint64_t seed, uint64_t epoch) {
    ml_schedule_params p = {.kind = kind, .n_rows = n_rows, .block_rows = block_rows,
                            .remainder = remainder, .seed = seed, .epoch = epoch};
    CHECK_RC(ml_schedule_init(s, &p));
}

static void test_refused(void) {
    ml_schedule s;
    ml_schedule_params p = {.kind = (ml_schedule_kind)9, .n_rows = 10, .block_rows = 3};
    CHECK_ERR(ml_schedule_init(&s, &p), -ML_EINVAL);
    p.kind = ML_SCHEDULE_SEQUENTIAL;
    p.block_rows = 0;
    CHECK_ERR(ml_schedule_init(&s, &p), -ML_EINVAL);
    p.kind = ML_SCHEDULE_PERMUTED;
    CHECK_ERR(ml_schedule_init(&s, &p), -ML_EINVAL);
    p.kind = ML_SCHEDULE_CYCLIC;
    p.block_rows = 11; /* a cyclic block may not wrap twice */
    CHECK_ERR(ml_schedule_init(&s, &p), -ML_EINVAL);
    p.block_rows = 10;
    CHECK_RC(ml_schedule_init(&s, &p));
    /* Sequential blocks longer than the dataset: one short block, or none. */
    p = (ml_schedule_params){.kind = ML_SCHEDULE_SEQUENTIAL, .n_rows = 10, .block_rows = 11};
    CHECK_RC(ml_schedule_init(&s, &p));
    CHECK_U64_EQ(ml_schedule_n_blocks(&s), 0);
    p.remainder = 1;
    CHECK_RC(ml_schedule_init(&s, &p));
    CHECK_U64_EQ(ml_schedule_n_blocks(&s), 1);
    CHECK_U64_EQ(ml_schedule_max_rows(&s), 10);
    /* Shards: rank < max(count, 1); cyclic streams are not sharded. */
    p.shard_count = 1;
    CHECK_RC(ml_schedule_init(&s, &p));
    p.shard_count = 2;
    CHECK_RC(ml_schedule_init(&s, &p));
    p.shard_rank = 2;
    CHECK_ERR(ml_schedule_init(&s, &p), -ML_EINVAL);
    p.shard_count = 0;
    p.shard_rank = 1;
    CHECK_ERR(ml_schedule_init(&s, &p), -ML_EINVAL);
    p.shard_count = 1;
    CHECK_ERR(ml_schedule_init(&s, &p), -ML_EINVAL);
    p = (ml_schedule_params){.kind = ML_SCHEDULE_CYCLIC, .n_rows = 10, .block_rows = 3, .shard_count = 2};
    CHECK_ERR(ml_schedule_init(&s, &p), -ML_EINVAL);
    /* Blocks past the end. */
    ml_block_runs r;
    init_ok(&s, ML_SCHEDULE_SEQUENTIAL, 10, 3, 0, 0, 0);
    CHECK_RC(ml_schedule_block(&s, 2, &r));
    CHECK_ERR(ml_schedule_block(&s, 3, &r), -ML_EINVAL);
    init_ok(&s, ML_SCHEDULE_PERMUTED, 10, 3, 1, 5, 0);
    CHECK_RC(ml_schedule_block(&s, 3, &r));
    CHECK_ERR(ml_schedule_block(&s, 4, &r), -ML_EINVAL);
    init_ok(&s, ML_SCHEDULE_CYCLIC, 10, 3, 0, 0, 0);
    CHECK_RC(ml_schedule_block(&s, UINT64_MAX, &r)); /* endless: every k */
    init_ok(&s, ML_SCHEDULE_CYCLIC, 0, 3, 0, 0, 0);
    CHECK_U64_EQ(ml_schedule_n_blocks(&s), 0);
    CHECK_ERR(ml_schedule_block(&s, 0, &r), -ML_EINVAL);
}

static void test_position(void) {
    ml_schedule s, t;
    init_ok(&s, ML_SCHEDULE_SEQUENTIAL, 100, 10, 0, 0, 0);
    CHECK_U64_EQ(ml_schedule_position(&s), 0);
    CHECK_RC(ml_schedule_seek(&s, 7));
    CHECK_U64_EQ(ml_schedule_position(&s), 7);
    CHECK_RC(ml_schedule_seek(&s, 10)); /* the end: a stream with nothing left */
    CHECK_ERR(ml_schedule_seek(&s, 11), -ML_EINVAL);
    CHECK_U64_EQ(ml_schedule_position(&s), 10);
    init_ok(&s, ML_SCHEDULE_CYCLIC, 100, 10, 0, 0, 0);
    CHECK_RC(ml_schedule_seek(&s, UINT64_MAX - 5));
    /* Save and restore: a schedule rebuilt from the same parameters and
     * seeked to the saved position names the same blocks from there. */
    init_ok(&s, ML_SCHEDULE_PERMUTED, 1000, 7, 1, 99, 4);
    CHECK_RC(ml_schedule_seek(&s, 40));
    uint64_t saved = ml_schedule_position(&s);
    init_ok(&t, ML_SCHEDULE_PERMUTED, 1000, 7, 1, 99, 4);
    CHECK_RC(ml_schedule_seek(&t, saved));
    for (uint64_t k = saved; k < ml_schedule_n_blocks(&s); k++) {
        ml_block_runs a, b;
        CHECK_RC(ml_schedule_block(&s, k, &a));
        CHECK_RC(ml_schedule_block(&t, k, &b));
        CHECK_U64_EQ(a.start[0], b.start[0]);
        CHECK_U64_EQ(a.count[0], b.count[0]);
    }
}

/* P is a bijection of [0, n): every value < n is hit exactly once. */
static void check_bijection(uint64_t n, uint64_t seed, uint64_t epoch, unsigned char *hit) {
    ml_schedule s;
    /* One-row blocks: n blocks. */
    init_ok(&s, ML_SCHEDULE_PERMUTED, n, 1, 0, seed, epoch);
    CHECK_U64_EQ(ml_schedule_n_blocks(&s), n);
    memset(hit, 0, n);
    for (uint64_t i = 0; i < n; i++) {
        uint64_t y = ml_schedule_permute(&s, i);
        if (y >= n || hit[y])
            FAIL("n=%" PRIu64 " seed=%" PRIu64 " epoch=%" PRIu64 ": P(%" PRIu64 ") = %" PRIu64
                 " %s", n, seed, epoch, i, y, y >= n ? "out of range" : "twice");
        hit[y] = 1;
    }
}

static void test_bijection(void) {
    enum { MAX_N = 1 << 17 };
    unsigned char *hit = malloc(MAX_N + 2);
    CHECK(hit != NULL);
    unsigned long cases = 0;
    for (uint64_t n = 1; n <= 1500; n++, cases++)
        check_bijection(n, n * 7919, n % 3, hit);
    for (unsigned b = 1; b <= 17; b++) {
        uint64_t p = 1ull << b;
        check_bijection(p - 1, b, 0, hit);
        check_bijection(p, b, 1, hit);
        if (p + 1 <= MAX_N + 1)
            check_bijection(p + 1, b, 2, hit);
        cases += 3;
    }
    /* Seeds and epochs: each key gives a bijection. */
    for (uint64_t seed = 0; seed < 40; seed++)
        for (uint64_t epoch = 0; epoch < 5; epoch++, cases++)
            check_bijection(37 + seed, seed * 0x9e3779b97f4a7c15ull, epoch, hit);
    CHECK_GT(cases, 1500);
    free(hit);
}

/* Values in range and no repeat among the first 20 000 for huge n, where a
 * full check is out of reach (a random map would collide: n = 2^20 + 7
 * gives ~190 expected collisions among 20 000; a bijection gives none). */
static void test_large_n(void) {
    static uint64_t seen[20000];
    uint64_t ns[] = {(1ull << 20) + 7, (1ull << 40) + 3, (1ull << 63) + 1, UINT64_MAX};
    for (size_t t = 0; t < sizeof ns / sizeof ns[0]; t++) {
        ml_schedule s;
        init_ok(&s, ML_SCHEDULE_PERMUTED, ns[t], 1, 0, 1234 + t, t);
        size_t m = sizeof seen / sizeof seen[0];
        for (size_t i = 0; i < m; i++) {
            seen[i] = ml_schedule_permute(&s, i);
            CHECK(seen[i] < ns[t]);
        }
        /* sort (insertion sort is too slow; shell sort is enough) and look for repeats */
        for (size_t gap = m / 2; gap > 0; gap /= 2)
            for (size_t i = gap; i < m; i++)
                for (size_t j = i; j >= gap && seen[j - gap] > seen[j]; j -= gap) {
                    uint64_t x = seen[j];
                    seen[j] = seen[j - gap];
                    seen[j - gap] = x;
                }
        for (size_t i = 1; i < m; i++)
            if (seen[i] == seen[i - 1])
                FAIL("n=%" PRIu64 ": value %" PRIu64 " twice", ns[t], seen[i]);
    }
}

/* Known answers of the documented definition (tests/c/test_schedule.c's
 * numbers come from a 20-line Python implementation of schedule.c's
 * comment, not from this C code). */
static void test_known_answers(void) {
    static const struct {
        uint64_t n, seed, epoch, first8[8];
    } kat[] = {
        {10, 0, 0, {8, 7, 6, 1, 4, 9, 2, 0}},
        {10, 1, 0, {5, 2, 8, 4, 0, 3, 1, 7}},
        {10, 1, 1, {9, 8, 4, 5, 7, 2, 6, 1}},
        {1000, 42, 7, {856, 190, 300, 167, 941, 686, 905, 975}},
        {1099511627779ull, 12345, 2,
         {591352717750ull, 936558696720ull, 900349616415ull, 114637738958ull, 651743928677ull,
          238749411477ull, 750373592468ull, 1043662986806ull}},
        {UINT64_MAX, 7, 9,
         {4852559869250630841ull, 16266720883650744592ull, 1247857724219788992ull,
          8985844251582174245ull, 1914451833847888270ull, 13416698877780193193ull,
          368624505167283631ull, 14049101645152497049ull}},
    };
    for (size_t t = 0; t < sizeof kat / sizeof kat[0]; t++) {
        ml_schedule s;
        init_ok(&s, ML_SCHEDULE_PERMUTED, kat[t].n, 1, 0, kat[t].seed, kat[t].epoch);
        for (uint64_t i = 0; i < 8; i++)
            CHECK_U64_EQ(ml_schedule_permute(&s, i), kat[t].first8[i]);
    }
    /* n = 1 and 2: the only orders there are. */
    ml_schedule s;
    init_ok(&s, ML_SCHEDULE_PERMUTED, 1, 1, 0, 5, 5);
    CHECK_U64_EQ(ml_schedule_permute(&s, 0), 0);
    int swapped = 0, kept = 0;
    for (uint64_t seed = 0; seed < 64; seed++) {
        init_ok(&s, ML_SCHEDULE_PERMUTED, 2, 1, 0, seed, 0);
        uint64_t a = ml_schedule_permute(&s, 0), b = ml_schedule_permute(&s, 1);
        CHECK(a + b == 1 && a != b);
        swapped += a == 1;
        kept += a == 0;
    }
    CHECK(swapped > 0 && kept > 0); /* the key decides */
}

/* Same parameters, same order (two separate objects); another seed or
 * epoch, another order. */
static void test_deterministic(void) {
    ml_schedule a, b, c, d;
    uint64_t n = 5000;
    init_ok(&a, ML_SCHEDULE_PERMUTED, n, 1, 0, 77, 3);
    init_ok(&b, ML_SCHEDULE_PERMUTED, n, 1, 0, 77, 3);
    init_ok(&c, ML_SCHEDULE_PERMUTED, n, 1, 0, 78, 3);
    init_ok(&d, ML_SCHEDULE_PERMUTED, n, 1, 0, 77, 4);
    uint64_t same_c = 0, same_d = 0, fixed = 0;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t x = ml_schedule_permute(&a, i);
        CHECK_U64_EQ(x, ml_schedule_permute(&b, i));
        same_c += x == ml_schedule_permute(&c, i);
        same_d += x == ml_schedule_permute(&d, i);
        fixed += x == i;
    }
    /* A random permutation agrees with another in ~1 place; allow 20. */
    CHECK_LT(same_c, 20);
    CHECK_LT(same_d, 20);
    CHECK_LT(fixed, 20); /* and it is not the identity */
}

/* Permuted blocks of rows tile the dataset like the sequential ones, each
 * block one run of a sequential block (the remainder block short). */
static void test_permuted_blocks(void) {
    static unsigned char rows[3000];
    for (uint64_t N = 1; N <= 300; N += 7) {
        for (uint64_t B = 1; B <= N; B += 3) {
            for (int rem = 0; rem <= 1; rem++) {
                ml_schedule s, q;
                init_ok(&s, ML_SCHEDULE_PERMUTED, N, B, rem, N * B, rem);
                init_ok(&q, ML_SCHEDULE_SEQUENTIAL, N, B, rem, 0, 0);
                CHECK_U64_EQ(ml_schedule_n_blocks(&s), ml_schedule_n_blocks(&q));
                CHECK_U64_EQ(ml_schedule_max_rows(&s), B);
                memset(rows, 0, N);
                uint64_t covered = 0;
                for (uint64_t k = 0; k < ml_schedule_n_blocks(&s); k++) {
                    ml_block_runs r;
                    CHECK_RC(ml_schedule_block(&s, k, &r));
                    CHECK_EQ(r.n, 1);
                    CHECK_EQ(r.start[0] % B, 0);
                    CHECK(r.count[0] >= 1 && r.count[0] <= B);
                    CHECK_LE(r.start[0] + r.count[0], N);
                    for (uint64_t j = 0; j < r.count[0]; j++)
                        CHECK_EQ(rows[r.start[0] + j]++, 0);
                    covered += r.count[0];
                }
                CHECK_U64_EQ(covered, rem ? N : N / B * B);
            }
        }
    }
}

/* Shards against the unsharded schedule of the same parameters: shard r
 * block k is unsharded block kR + r, every shard has floor(n / R) blocks,
 * the shards together hold each block at most once and miss exactly the
 * n mod R blocks at the last unsharded positions. */
static void test_shards(void) {
    static const ml_schedule_kind kinds[] = {ML_SCHEDULE_SEQUENTIAL, ML_SCHEDULE_PERMUTED};
    unsigned char seen[200];
    for (unsigned ki = 0; ki < 2; ki++)
        for (uint64_t n_rows = 0; n_rows <= 60; n_rows += 7)
            for (uint64_t B = 1; B <= 4; B++)
                for (int rem = 0; rem <= 1; rem++)
                    for (uint32_t R = 1; R <= 5; R++) {
                        ml_schedule u, sh, again;
                        ml_schedule_params p = {.kind = kinds[ki], .n_rows = n_rows, .block_rows = B,
                                                .remainder = rem, .seed = 11, .epoch = R};
                        CHECK_RC(ml_schedule_init(&u, &p));
                        uint64_t n = ml_schedule_n_blocks(&u);
                        memset(seen, 0, sizeof seen);
                        for (uint32_t r = 0; r < R; r++) {
                            p.shard_count = R;
                            p.shard_rank = r;
                            CHECK_RC(ml_schedule_init(&sh, &p));
                            CHECK_RC(ml_schedule_init(&again, &p));
                            CHECK_U64_EQ(ml_schedule_n_blocks(&sh), n / R);
                            for (uint64_t k = 0; k < n / R; k++) {
                                ml_block_runs a, b, c;
                                CHECK_RC(ml_schedule_block(&sh, k, &a));
                                CHECK_RC(ml_schedule_block(&again, k, &c));
                                CHECK_RC(ml_schedule_block(&u, k * R + r, &b));
                                CHECK_EQ(a.n, 1u);
                                CHECK_U64_EQ(a.start[0], b.start[0]);
                                CHECK_U64_EQ(a.count[0], b.count[0]);
                                CHECK_U64_EQ(a.start[0], c.start[0]);
                                uint64_t blk = a.start[0] / B;
                                CHECK_LT(blk, (uint64_t)sizeof seen);
                                CHECK_EQ(seen[blk], 0);
                                seen[blk] = 1;
                            }
                            ml_block_runs x;
                            CHECK_ERR(ml_schedule_block(&sh, n / R, &x), -ML_EINVAL);
                        }
                        /* Missing: exactly the blocks at positions >= floor(n/R)*R. */
                        for (uint64_t j = 0; j < n; j++) {
                            ml_block_runs b;
                            CHECK_RC(ml_schedule_block(&u, j, &b));
                            CHECK_EQ(seen[b.start[0] / B], j < n / R * R ? 1 : 0);
                        }
                    }
    /* Known answer: 10 blocks, 3 shards, sequential: shard 1 = 1, 4, 7. */
    ml_schedule s;
    ml_schedule_params p = {.kind = ML_SCHEDULE_SEQUENTIAL, .n_rows = 100, .block_rows = 10,
                            .shard_rank = 1, .shard_count = 3};
    CHECK_RC(ml_schedule_init(&s, &p));
    CHECK_U64_EQ(ml_schedule_n_blocks(&s), 3);
    ml_block_runs r;
    CHECK_RC(ml_schedule_block(&s, 2, &r));
    CHECK_U64_EQ(r.start[0], 70);
}

int main(void) {
    test_refused();
    test_position();
    test_bijection();
    test_large_n();
    test_known_answers();
    test_deterministic();
    test_permuted_blocks();
    test_shards();
    CHECK_DONE();
}
