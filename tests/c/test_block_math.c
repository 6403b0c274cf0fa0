/* test_block_math.c - the sequential and cyclic schedules (schedule.h):
 * which rows each block covers and how many blocks there are, checked by
 * hand for edge cases and exhaustively against a naive row-by-row model
 * for small N x B. (test_schedule.c covers the rest of the object.) */
#include "check.h"

#include "schedule.h"

/* Blocks of today's streams: 0 for an empty dataset or block, as the
 * binding's _core.n_blocks says; otherwise the schedule's count. */
static uint64_t sched_n_blocks(uint64_t n_rows, uint64_t block_rows, int cyclic, int remainder) {
    if (n_rows == 0 || block_rows == 0)
        return 0;
    ml_schedule s;
    ml_schedule_params p = {.kind = cyclic ? ML_SCHEDULE_CYCLIC : ML_SCHEDULE_SEQUENTIAL,
                            .n_rows = n_rows, .block_rows = block_rows, .remainder = remainder};
    CHECK_RC(ml_schedule_init(&s, &p));
    return ml_schedule_n_blocks(&s);
}

/* Block k's runs; non-cyclic with the remainder, so every block exists. */
static void sched_block_runs(uint64_t n_rows, uint64_t block_rows, int cyclic, uint64_t k,
                             ml_block_runs *out) {
    ml_schedule s;
    ml_schedule_params p = {.kind = cyclic ? ML_SCHEDULE_CYCLIC : ML_SCHEDULE_SEQUENTIAL,
                            .n_rows = n_rows, .block_rows = block_rows, .remainder = 1};
    CHECK_RC(ml_schedule_init(&s, &p));
    CHECK_RC(ml_schedule_block(&s, k, out));
}

static void runs_eq(const ml_block_runs *r, unsigned n, uint64_t s0, uint64_t c0, uint64_t s1,
                    uint64_t c1) {
    CHECK_EQ(r->n, n);
    CHECK_U64_EQ(r->start[0], s0);
    CHECK_U64_EQ(r->count[0], c0);
    if (n == 2) {
        CHECK_U64_EQ(r->start[1], s1);
        CHECK_U64_EQ(r->count[1], c1);
    }
}

static void test_n_blocks(void) {
    CHECK_U64_EQ(sched_n_blocks(10, 5, 0, 0), 2);
    CHECK_U64_EQ(sched_n_blocks(10, 5, 0, 1), 2); /* no remainder to add */
    CHECK_U64_EQ(sched_n_blocks(10, 3, 0, 0), 3);
    CHECK_U64_EQ(sched_n_blocks(10, 3, 0, 1), 4);
    CHECK_U64_EQ(sched_n_blocks(10, 10, 0, 0), 1);
    CHECK_U64_EQ(sched_n_blocks(10, 1, 0, 0), 10);
    CHECK_U64_EQ(sched_n_blocks(0, 5, 0, 1), 0);
    CHECK_U64_EQ(sched_n_blocks(0, 5, 1, 0), 0);
    CHECK_U64_EQ(sched_n_blocks(10, 0, 0, 0), 0);
    /* The schedule itself: empty datasets have no blocks, empty blocks are refused. */
    ml_schedule s;
    ml_schedule_params p = {.n_rows = 0, .block_rows = 5, .remainder = 1};
    CHECK_RC(ml_schedule_init(&s, &p));
    CHECK_U64_EQ(ml_schedule_n_blocks(&s), 0);
    p.kind = ML_SCHEDULE_CYCLIC;
    CHECK_RC(ml_schedule_init(&s, &p));
    CHECK_U64_EQ(ml_schedule_n_blocks(&s), 0);
    p = (ml_schedule_params){.n_rows = 10, .block_rows = 0};
    CHECK_ERR(ml_schedule_init(&s, &p), -ML_EINVAL);
    CHECK_U64_EQ(sched_n_blocks(10, 3, 1, 0), UINT64_MAX);
    CHECK_U64_EQ(sched_n_blocks(10, 3, 1, 1), UINT64_MAX);
    CHECK_U64_EQ(sched_n_blocks(UINT64_MAX, 1, 0, 0), UINT64_MAX);
    CHECK_U64_EQ(sched_n_blocks(UINT64_MAX, 2, 0, 1), UINT64_MAX / 2 + 1);
}

static void test_runs_cases(void) {
    ml_block_runs r;
    /* Non-cyclic: whole blocks, then the short remainder block. */
    sched_block_runs(10, 3, 0, 0, &r);
    runs_eq(&r, 1, 0, 3, 0, 0);
    sched_block_runs(10, 3, 0, 2, &r);
    runs_eq(&r, 1, 6, 3, 0, 0);
    sched_block_runs(10, 3, 0, 3, &r);
    runs_eq(&r, 1, 9, 1, 0, 0);
    sched_block_runs(9, 3, 0, 2, &r);
    runs_eq(&r, 1, 6, 3, 0, 0);

    /* Cyclic, N=10 B=4: blocks 0,4 | 4,4 | 8,2+0,2 | 2,4 | 6,4 | 0,4 ... */
    sched_block_runs(10, 4, 1, 0, &r);
    runs_eq(&r, 1, 0, 4, 0, 0);
    sched_block_runs(10, 4, 1, 2, &r);
    runs_eq(&r, 2, 8, 2, 0, 2);
    sched_block_runs(10, 4, 1, 3, &r);
    runs_eq(&r, 1, 2, 4, 0, 0);
    sched_block_runs(10, 4, 1, 5, &r);
    runs_eq(&r, 1, 0, 4, 0, 0); /* 5 blocks = 2 passes: back at the start */
    /* Cyclic with B dividing N never wraps inside a block. */
    for (uint64_t k = 0; k < 20; k++) {
        sched_block_runs(12, 4, 1, k, &r);
        runs_eq(&r, 1, (k % 3) * 4, 4, 0, 0);
    }
    /* B == N: every block is the whole dataset (one run). */
    sched_block_runs(7, 7, 1, 12345, &r);
    runs_eq(&r, 1, 0, 7, 0, 0);
}

/* k * B overflows 64 bits; the start must still be (k*B) mod N exactly. */
static void test_huge_k(void) {
    ml_block_runs r;
    uint64_t N = 1000003, B = 4099;
    uint64_t ks[] = {UINT64_MAX, UINT64_MAX - 1, UINT64_MAX / 3, (uint64_t)1 << 63,
                     ((uint64_t)1 << 52) + 17};
    for (size_t i = 0; i < sizeof ks / sizeof ks[0]; i++) {
        uint64_t k = ks[i];
        unsigned __int128 want = ((unsigned __int128)k * B) % N;
        sched_block_runs(N, B, 1, k, &r);
        CHECK_U64_EQ(r.start[0], (uint64_t)want);
        CHECK_U64_EQ(r.count[0] + (r.n == 2 ? r.count[1] : 0), B);
        /* Consecutive blocks are contiguous modulo N, even across overflow. */
        ml_block_runs next;
        sched_block_runs(N, B, 1, k - 1, &next);
        CHECK_U64_EQ((next.start[0] + B) % N, r.start[0]);
    }
    /* Huge N and B near 2^64. */
    uint64_t bigN = UINT64_MAX - 10, bigB = UINT64_MAX / 2;
    sched_block_runs(bigN, bigB, 1, 3, &r);
    unsigned __int128 want = ((unsigned __int128)3 * bigB) % bigN;
    CHECK_U64_EQ(r.start[0], (uint64_t)want);
    CHECK_U64_EQ(r.count[0] + (r.n == 2 ? r.count[1] : 0), bigB);
    /* A non-cyclic block near the top of the range: count, not overflow. */
    sched_block_runs(UINT64_MAX - 1, 1000, 0, (UINT64_MAX - 1) / 1000, &r);
    CHECK_EQ(r.n, 1);
    CHECK_U64_EQ(r.start[0] + r.count[0], UINT64_MAX - 1);
    CHECK_U64_EQ(r.count[0], (UINT64_MAX - 1) % 1000);
}

/* Every N x B up to 40 x 40 against a row-by-row model: non-cyclic block k
 * is rows kB..min(kB+B,N)-1; cyclic block k is rows (kB+j) mod N, j < B. */
static void test_exhaustive(void) {
    uint64_t rows[128];
    unsigned long cases = 0;
    for (uint64_t N = 1; N <= 40; N++) {
        for (uint64_t B = 1; B <= N; B++) {
            for (int cyclic = 0; cyclic <= 1; cyclic++) {
                for (int rem = 0; rem <= 1; rem++) {
                    uint64_t nb = sched_n_blocks(N, B, cyclic, rem);
                    uint64_t want_nb = cyclic ? UINT64_MAX : (rem ? (N + B - 1) / B : N / B);
                    CHECK_U64_EQ(nb, want_nb);
                    /* Non-cyclic: every block; cyclic: three passes' worth. */
                    uint64_t limit = cyclic ? 3 * N / B + 2 : nb;
                    uint64_t covered = 0;
                    for (uint64_t k = 0; k < limit; k++) {
                        ml_block_runs r;
                        sched_block_runs(N, B, cyclic, k, &r);
                        CHECK(r.n == 1 || (r.n == 2 && cyclic));
                        size_t m = 0;
                        for (unsigned i = 0; i < r.n; i++) {
                            CHECK_GT(r.count[i], 0);
                            CHECK_LE(r.start[i] + r.count[i], N);
                            for (uint64_t j = 0; j < r.count[i]; j++)
                                rows[m++] = r.start[i] + j;
                        }
                        uint64_t want_m = cyclic ? B : (k * B + B <= N ? B : N - k * B);
                        if (m != want_m)
                            FAIL("N=%lu B=%lu cyclic=%d k=%lu: %zu rows, want %lu",
                                 (unsigned long)N, (unsigned long)B, cyclic, (unsigned long)k, m,
                                 (unsigned long)want_m);
                        for (size_t j = 0; j < m; j++) {
                            uint64_t want = cyclic ? (k * B + j) % N : k * B + j;
                            if (rows[j] != want)
                                FAIL("N=%lu B=%lu cyclic=%d k=%lu row %zu: %lu, want %lu",
                                     (unsigned long)N, (unsigned long)B, cyclic, (unsigned long)k,
                                     j, (unsigned long)rows[j], (unsigned long)want);
                        }
                        covered += m;
                        cases++;
                    }
                    /* Non-cyclic blocks tile the dataset (minus the dropped remainder). */
                    if (!cyclic)
                        CHECK_U64_EQ(covered, rem ? N : N / B * B);
                }
            }
        }
    }
    CHECK_GT(cases, 10000);
}

int main(void) {
    test_n_blocks();
    test_runs_cases();
    test_huge_k();
    test_exhaustive();
    CHECK_DONE();
}
