/* test_reader.c - the request engine (reader.c) against H5Dread: several
 * threads submit row lists (unsorted, duplicates), ranges and one-row
 * requests, and wait for them while helping (ml_reader_help), so requests
 * run in parts on workers and waiters at once, small ones in shared
 * batches; cancel and shutdown with parts in flight; stop while workers
 * are inside slow reads (every request fails at once, dest released
 * later, free does not wait for the reads); helping on data not in the
 * page cache (handed back to the workers); watch; compact (in memory)
 * and never-written data, which the engine reads only through fetch.c's
 * answers (not read in parallel, no extent). Run under TSan by
 * `make check-tsan`. */
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "faults.h"
#include "fault.h"
#include "h5gen.h"
#include "h5.h"
#include "reader.h"

#define ROWS 3000
#define COLS 8
#define THREADS 4
#define ROUNDS 60

static const char *g_file;
static int32_t g_truth[ROWS * COLS];
static ml_layout *g_layouts[4]; /* contiguous, deflate+shuffle chunked, compact, never written */
#define COMPACT_ROWS 200
static ml_reader *g_reader;

typedef struct job {
    unsigned seed;
    int fails;
} job;

static unsigned rnd(unsigned *s) {
    *s = *s * 1103515245u + 12345u;
    return (*s >> 8) & 0xffffff;
}

static void check_rows(const int32_t *got, const uint64_t *rows, uint64_t row0, uint64_t n) {
    for (uint64_t i = 0; i < n; i++) {
        uint64_t r = rows ? rows[i] : row0 + i;
        CHECK_MEM_EQ(got + i * COLS, g_truth + r * COLS, COLS * sizeof(int32_t));
    }
}

static void *client(void *arg) {
    job *j = arg;
    uint64_t rows[600];
    int32_t *dest = malloc(sizeof rows / sizeof rows[0] * COLS * sizeof(int32_t));
    int32_t one[8][COLS];
    for (int round = 0; round < ROUNDS; round++) {
        ml_layout *L = g_layouts[rnd(&j->seed) % 2];
        uint64_t n = 1 + rnd(&j->seed) % 600;
        int kind = (int)(rnd(&j->seed) % 4);
        uint64_t row0 = 0;
        if (kind == 0) { /* range */
            row0 = rnd(&j->seed) % (ROWS - n);
        } else {
            for (uint64_t i = 0; i < n; i++)
                rows[i] = kind == 1 ? rnd(&j->seed) % ROWS : (i * 5 + 7) % ROWS; /* random / increasing-ish */
        }
        ml_request_spec s = {.L = L, .rows = kind ? rows : NULL, .row0 = row0, .n_rows = n,
                             .dest = dest, .dest_bytes = n * COLS * sizeof(int32_t)};
        ml_request *q;
        ml_error err;
        CHECK_RC(ml_request_submit(g_reader, &s, &q, &err));
        if (round % 2)
            ml_reader_help(g_reader, q);
        CHECK_EQ(ml_request_wait(q, -1), 0);
        CHECK_EQ(ml_request_error(q)->code, 0);
        check_rows(dest, kind ? rows : NULL, row0, n);
        ml_request_free(q);
        /* eight one-row requests in flight: batched */
        ml_request *qs[8];
        uint64_t at[8];
        for (int k = 0; k < 8; k++) {
            at[k] = rnd(&j->seed) % ROWS;
            ml_request_spec o = {.L = g_layouts[0], .row0 = at[k], .n_rows = 1, .dest = one[k],
                                 .dest_bytes = sizeof one[k]};
            CHECK_RC(ml_request_submit(g_reader, &o, &qs[k], &err));
        }
        for (int k = 0; k < 8; k++) {
            ml_reader_help(g_reader, qs[k]);
            CHECK_EQ(ml_request_wait(qs[k], -1), 0);
            CHECK_EQ(ml_request_error(qs[k])->code, 0);
            check_rows(one[k], NULL, at[k], 1);
            ml_request_free(qs[k]);
        }
    }
    free(dest);
    return NULL;
}

static void test_threads(void) {
    ml_reader_config cfg = {.n_workers = 2, .cache_bytes = 64 << 10}; /* small: evictions */
    ml_error err;
    CHECK_RC(ml_reader_open(&g_reader, &cfg, &err));
    pthread_t t[THREADS];
    job jobs[THREADS];
    for (int i = 0; i < THREADS; i++) {
        jobs[i] = (job){.seed = 17u + (unsigned)i};
        CHECK_EQ(pthread_create(&t[i], NULL, client, &jobs[i]), 0);
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    ml_reader_stats st;
    ml_reader_get_stats(g_reader, &st);
    CHECK_GT(st.parallel, 0);
    CHECK_GT(st.helped, 0);
    ml_reader_free(g_reader);
    g_reader = NULL;
}

/* Requests in parts, then cancel the queued ones and stop without drain:
 * every request ends, each with a result or -ECANCELED / -ML_ECLOSED. */
static void test_cancel_and_stop(void) {
    ml_reader_config cfg = {.n_workers = 2, .cache_bytes = 1};
    ml_error err;
    CHECK_RC(ml_reader_open(&g_reader, &cfg, &err));
    enum { N = 12 };
    static uint64_t rows[ROWS];
    for (uint64_t i = 0; i < ROWS; i++)
        rows[i] = ROWS - 1 - i;
    int32_t *dest = malloc((size_t)N * ROWS * COLS * sizeof(int32_t));
    ml_request *qs[N];
    for (int k = 0; k < N; k++) {
        ml_request_spec s = {.L = g_layouts[1], .rows = rows, .n_rows = ROWS,
                             .dest = dest + (size_t)k * ROWS * COLS, .dest_bytes = ROWS * COLS * sizeof(int32_t)};
        CHECK_RC(ml_request_submit(g_reader, &s, &qs[k], &err));
    }
    int cancelled = 0;
    for (int k = N - 1; k >= N / 2; k--)
        cancelled += ml_reader_cancel(g_reader, qs[k]);
    ml_reader_help(g_reader, qs[0]);
    ml_reader_shutdown(g_reader, 0);
    for (int k = 0; k < N; k++) {
        CHECK_EQ(ml_request_wait(qs[k], -1), 0);
        int code = ml_request_error(qs[k])->code;
        if (code == 0)
            check_rows(dest + (size_t)k * ROWS * COLS, rows, 0, ROWS);
        else
            CHECK(code == -ECANCELED || code == -ML_ECLOSED);
    }
    CHECK_GT(cancelled, 0);
    ml_reader_free(g_reader); /* the requests outlive the reader */
    g_reader = NULL;
    for (int k = 0; k < N; k++) {
        CHECK_EQ(ml_request_wait_released(qs[k], 10000), 0); /* no thread writes dest now */
        ml_request_free(qs[k]);
    }
    free(dest);
}

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + t.tv_nsec * 1e-9;
}

/* Stop while the only worker is inside a 300 ms read, with more requests
 * queued and, under io_uring, taken into its batch: every request is done
 * when shutdown returns (-ML_ECLOSED; "before ... ran" ones untouched), a
 * helper neither helps nor blocks, free does not wait for the read (the
 * worker is detached) and every dest is released once the read returns. */
static void test_stop_while_reading(ml_io_mode mode) {
    set_faults("slow~1:300");
    ml_reader_config cfg = {.n_workers = 1, .io_mode = mode};
    ml_error err;
    CHECK_RC(ml_reader_open(&g_reader, &cfg, &err));
    enum { N = 10 };
    int32_t (*dest)[COLS] = malloc(N * sizeof *dest);
    memset(dest, 0xAB, N * sizeof *dest);
    ml_request *qs[N];
    for (int k = 0; k < N; k++) {
        ml_request_spec s = {.L = g_layouts[0], .row0 = (uint64_t)k * 10, .n_rows = 1, .dest = dest[k],
                             .dest_bytes = sizeof dest[k]};
        CHECK_RC(ml_request_submit(g_reader, &s, &qs[k], &err));
    }
    for (int i = 0; i < 2000 && !ml_request_running(qs[0]); i++)
        usleep(1000);
    CHECK(ml_request_running(qs[0]));
    CHECK_EQ(ml_reader_help(g_reader, qs[N - 1]), 0); /* faults on: a waiter only waits */
    ml_reader_shutdown(g_reader, 0);
    int before = 0;
    for (int k = 0; k < N; k++) {
        CHECK_EQ(ml_request_wait(qs[k], 0), 0); /* done at once */
        const ml_error *e = ml_request_error(qs[k]);
        CHECK_EQ(e->code, -ML_ECLOSED);
        if (strstr(e->msg, "before this request ran")) {
            before++;
            CHECK_EQ(ml_request_busy(qs[k]), 0);
            unsigned char pattern[sizeof dest[k]];
            memset(pattern, 0xAB, sizeof pattern);
            CHECK_MEM_EQ(dest[k], pattern, sizeof pattern); /* never touched */
        }
    }
    CHECK(ml_request_busy(qs[0])); /* its read is still in flight */
    CHECK_GT(before, 0);
    double t0 = now_s();
    ml_reader_free(g_reader); /* detaches the worker after <= 0.5 s */
    g_reader = NULL;
    CHECK_LT(now_s() - t0, 5.0); /* a bound against a hang, not a timing */
    for (int k = 0; k < N; k++) {
        CHECK_EQ(ml_request_wait_released(qs[k], 20000), 0);
        ml_request_free(qs[k]);
    }
    free(dest);
    set_faults(NULL);
}

/* Helping on data the page cache does not hold: the waiter hands the
 * work back (requests to the queue, parts to the workers) and the results
 * are exact. POSIX_FADV_DONTNEED drops the file's clean pages (a no-op on
 * tmpfs: the waiter then reads them from memory; exact either way). */
static void test_help_cold(void) {
    ml_reader_config cfg = {.n_workers = 2, .cache_bytes = 1};
    ml_error err;
    CHECK_RC(ml_reader_open(&g_reader, &cfg, &err));
    int fd = open(g_file, O_RDONLY);
    CHECK(fd >= 0);
    static uint64_t rows[ROWS];
    static int32_t dest[ROWS * COLS];
    unsigned seed = 99;
    for (int round = 0; round < 40; round++) {
        CHECK_EQ(posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED), 0);
        ml_layout *L = g_layouts[round % 2];
        uint64_t n = 1 + rnd(&seed) % ROWS;
        for (uint64_t i = 0; i < n; i++)
            rows[i] = rnd(&seed) % ROWS;
        int range = round % 4 == 3;
        uint64_t row0 = range ? rnd(&seed) % (ROWS - n + 1) : 0;
        ml_request_spec s = {.L = L, .rows = range ? NULL : rows, .row0 = row0, .n_rows = n, .dest = dest,
                             .dest_bytes = sizeof dest};
        ml_request *q;
        CHECK_RC(ml_request_submit(g_reader, &s, &q, &err));
        while (ml_request_wait(q, 0) != 0)
            if (!ml_reader_help(g_reader, q))
                CHECK_EQ(ml_request_wait(q, 10000), 0);
        CHECK_EQ(ml_request_error(q)->code, 0);
        CHECK_EQ(ml_request_busy(q), 0);
        check_rows(dest, range ? NULL : rows, row0, n);
        ml_request_free(q);
    }
    close(fd);
    ml_reader_free(g_reader);
    g_reader = NULL;
}

/* ml_reader_watch: a done request's tag comes at once, a pending one's
 * once it is done; a request submitted with notify=1 reports once. */
static void test_watch(void) {
    ml_reader_config cfg = {.n_workers = 1};
    ml_error err;
    CHECK_RC(ml_reader_open(&g_reader, &cfg, &err));
    int32_t a[COLS], b[COLS];
    ml_request_spec s = {.L = g_layouts[1], .row0 = 5, .n_rows = 1, .dest = a, .dest_bytes = sizeof a, .tag = 41};
    ml_request *q1, *q2;
    CHECK_RC(ml_request_submit(g_reader, &s, &q1, &err));
    CHECK_EQ(ml_request_wait(q1, 10000), 0);
    uint64_t tags[4];
    CHECK_EQ(ml_reader_pop_done(g_reader, 0, tags, 4), 0); /* not watched: no tag */
    ml_reader_watch(g_reader, q1);
    CHECK_EQ(ml_reader_pop_done(g_reader, 1000, tags, 4), 1);
    CHECK_U64_EQ(tags[0], 41);
    s = (ml_request_spec){.L = g_layouts[1], .row0 = 900, .n_rows = 1, .dest = b, .dest_bytes = sizeof b,
                          .tag = 42, .notify = 1};
    CHECK_RC(ml_request_submit(g_reader, &s, &q2, &err));
    ml_reader_watch(g_reader, q2);
    CHECK_EQ(ml_reader_pop_done(g_reader, 10000, tags, 4), 1);
    CHECK_U64_EQ(tags[0], 42);
    CHECK_EQ(ml_reader_pop_done(g_reader, 50, tags, 4), 0); /* once only */
    check_rows(a, NULL, 5, 1);
    check_rows(b, NULL, 900, 1);
    ml_reader_shutdown(g_reader, 1);
    CHECK_EQ(ml_reader_join(g_reader, 10000), 0);
    CHECK_EQ(ml_reader_pop_done(g_reader, 0, tags, 4), -ML_ECLOSED);
    ml_request_free(q1);
    ml_request_free(q2);
    ml_reader_free(g_reader);
    g_reader = NULL;
}

/* Inline reads: small cached ranges are done when submit returns; a
 * closed reader still refuses; a list request still goes to the workers. */
static void test_inline_reads(void) {
    ml_reader_config cfg = {.n_workers = 1, .inline_reads = 1};
    ml_error err;
    CHECK_RC(ml_reader_open(&g_reader, &cfg, &err));
    int32_t got[4][COLS];
    int done_at_once = 0;
    for (uint64_t row0 = 0; row0 + 4 <= ROWS; row0 += 97) {
        ml_request_spec s = {.L = g_layouts[0], .row0 = row0, .n_rows = 4, .dest = got,
                             .dest_bytes = sizeof got};
        ml_request *q;
        CHECK_RC(ml_request_submit(g_reader, &s, &q, &err));
        done_at_once += ml_request_done(q);
        CHECK_EQ(ml_request_wait(q, -1), 0);
        CHECK_EQ(ml_request_error(q)->code, 0);
        check_rows(&got[0][0], NULL, row0, 4);
        ml_request_free(q);
    }
    uint64_t list[2] = {3, 1};
    ml_request_spec l = {.L = g_layouts[0], .rows = list, .n_rows = 2, .dest = got, .dest_bytes = sizeof got};
    ml_request *q;
    CHECK_RC(ml_request_submit(g_reader, &l, &q, &err));
    CHECK_EQ(ml_request_wait(q, -1), 0);
    check_rows(&got[0][0], list, 0, 2);
    ml_request_free(q);
    ml_reader_stats st;
    ml_reader_get_stats(g_reader, &st);
    CHECK_EQ(st.inlined, (uint64_t)done_at_once);
    CHECK_GT(st.inlined, 0); /* the file was just written: in the page cache */
    ml_reader_shutdown(g_reader, 1);
    ml_request_spec s = {.L = g_layouts[0], .row0 = 0, .n_rows = 1, .dest = got, .dest_bytes = sizeof got};
    CHECK_EQ(ml_request_submit(g_reader, &s, &q, &err), -ML_ECLOSED);
    ml_reader_free(g_reader);
    g_reader = NULL;
}

/* Compact data (held in memory) and contiguous data never written (all
 * fill): ranges, sorted and unsorted lists and a column, waited on with
 * and without helping, inline reads on; exact against the truth / zeros. */
static void test_compact_and_empty(void) {
    ml_reader_config cfg = {.n_workers = 2, .inline_reads = 1};
    ml_error err;
    CHECK_RC(ml_reader_open(&g_reader, &cfg, &err));
    static int32_t dest[COMPACT_ROWS * COLS], zeros[COMPACT_ROWS * COLS];
    uint64_t rows[COMPACT_ROWS];
    unsigned seed = 7;
    for (int round = 0; round < 40; round++) {
        int empty = round % 2;
        ml_layout *L = g_layouts[2 + empty];
        uint64_t n = 1 + rnd(&seed) % COMPACT_ROWS;
        int kind = (int)(rnd(&seed) % 4); /* range, random list, increasing list, column */
        for (uint64_t i = 0; i < n; i++)
            rows[i] = kind == 2 ? i * (COMPACT_ROWS / n) : rnd(&seed) % COMPACT_ROWS;
        uint64_t row0 = kind == 0 ? rnd(&seed) % (COMPACT_ROWS - n + 1) : 0;
        size_t col = kind == 3 ? sizeof(int32_t) : 0;
        memset(dest, 0x5A, sizeof dest);
        ml_request_spec s = {.L = L, .rows = kind ? rows : NULL, .row0 = row0, .n_rows = n,
                             .col_offset = col ? 2 * sizeof(int32_t) : 0, .col_size = col, .dest = dest,
                             .dest_bytes = sizeof dest};
        ml_request *q;
        CHECK_RC(ml_request_submit(g_reader, &s, &q, &err));
        if (round % 3)
            ml_reader_help(g_reader, q);
        CHECK_EQ(ml_request_wait(q, 10000), 0);
        CHECK_EQ(ml_request_error(q)->code, 0);
        for (uint64_t i = 0; i < n; i++) {
            uint64_t r = kind ? rows[i] : row0 + i;
            const int32_t *want = empty ? zeros : g_truth + r * COLS;
            if (col)
                CHECK_EQ(dest[i], want[2]);
            else
                CHECK_MEM_EQ(dest + i * COLS, want, COLS * sizeof(int32_t));
        }
        ml_request_free(q);
    }
    ml_reader_free(g_reader);
    g_reader = NULL;
}

int main(void) {
    g_file = check_path("reader.h5");
    for (size_t i = 0; i < ROWS * COLS; i++)
        g_truth[i] = (int32_t)(i * 2654435761u >> 7);
    h5spec contig = {.path = "/contig", .type = H5T_NATIVE_INT32, .ndim = 2, .dims = {ROWS, COLS}};
    h5spec gz = {.path = "/gz", .type = H5T_NATIVE_INT32, .ndim = 2, .dims = {ROWS, COLS},
                 .chunk = {32, COLS}, .deflate = 4, .shuffle = 1};
    hid_t fid = h5gen_create(g_file);
    h5gen_dataset(fid, &contig, g_truth);
    h5gen_dataset(fid, &gz, g_truth);
    h5spec compact = {.path = "/compact", .type = H5T_NATIVE_INT32, .ndim = 2, .dims = {COMPACT_ROWS, COLS},
                      .compact = 1};
    h5gen_dataset(fid, &compact, g_truth);
    h5spec empty = {.path = "/empty", .type = H5T_NATIVE_INT32, .ndim = 2, .dims = {COMPACT_ROWS, COLS}};
    h5gen_dataset_rows(fid, &empty, NULL, 0, 0);
    H5Fclose(fid);
    int32_t *back = malloc(sizeof g_truth);
    h5gen_read_rows(g_file, "/gz", H5T_NATIVE_INT32, 0, ROWS, back);
    CHECK_MEM_EQ(back, g_truth, sizeof g_truth);
    free(back);
    ml_error err;
    CHECK_RC(ml_layout_open(g_file, "/contig", &g_layouts[0], &err));
    CHECK_RC(ml_layout_open(g_file, "/gz", &g_layouts[1], &err));
    CHECK_RC(ml_layout_open(g_file, "/compact", &g_layouts[2], &err));
    CHECK_RC(ml_layout_open(g_file, "/empty", &g_layouts[3], &err));
    CHECK_EQ(g_layouts[2]->storage, ML_STORE_MEMORY); /* the cases are what they claim */
    CHECK_U64_EQ(g_layouts[3]->offset, UINT64_MAX);
    test_threads();
    test_cancel_and_stop();
    test_inline_reads();
    test_stop_while_reading(ML_IO_PREAD);
    test_stop_while_reading(ML_IO_URING);
    test_help_cold();
    test_watch();
    test_compact_and_empty();
    for (int i = 0; i < 4; i++)
        ml_layout_unref(g_layouts[i]);
    CHECK_DONE();
}
