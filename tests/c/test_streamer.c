/* test_streamer.c - end-to-end streams over a generated file: ordered and
 * unordered, with and without the remainder block, cyclic passes that
 * wrap, an injected I/O error that travels with its block, deadlock
 * detection, bad configurations, an empty dataset, and close() while
 * workers are busy and a consumer is waiting. Every block's rows are
 * compared with H5Dread of the whole dataset. */
#include "check.h"

#include <pthread.h>
#include <stdatomic.h>

#include "fault.h"
#include "h5gen.h"
#include "h5.h"
#include "streamer.h"

#define N_ROWS 103
#define N_COLS 5
#define TAKE_MS 10000 /* a hang fails instead of stalling */

static const char *g_file;
static int32_t truth[2][N_ROWS * N_COLS]; /* H5Dread of /zip and /contig */
static const char *g_paths[2] = {"/zip", "/contig"};

static void write_file(void) {
    static int32_t data[N_ROWS * N_COLS];
    for (int i = 0; i < N_ROWS * N_COLS; i++)
        data[i] = i * 31 - 777;
    hid_t fid = h5gen_create(g_file);
    h5spec zip = {.path = "/zip", .type = H5T_NATIVE_INT32, .ndim = 2, .dims = {N_ROWS, N_COLS},
                  .chunk = {10, N_COLS}, .deflate = 4, .shuffle = 1};
    h5spec contig = {.path = "/contig", .type = H5T_NATIVE_INT32, .ndim = 2,
                     .dims = {N_ROWS, N_COLS}};
    h5spec empty = {.path = "/empty", .type = H5T_NATIVE_INT32, .ndim = 2, .dims = {0, 3}};
    h5gen_dataset(fid, &zip, data);
    h5gen_dataset(fid, &contig, data);
    h5gen_dataset(fid, &empty, NULL);
    H5Fclose(fid);
    for (int p = 0; p < 2; p++)
        h5gen_read_rows(g_file, g_paths[p], H5T_NATIVE_INT32, 0, N_ROWS, truth[p]);
}

/* The block's rows must be rows (k*B + j) mod N (cyclic) or k*B + j. */
static void check_block(int p, const ml_taken *t, uint64_t B, int cyclic) {
    if (t->error.code)
        FAIL("block %llu failed: %s", (unsigned long long)t->seq, t->error.msg);
    uint64_t want_rows = cyclic || (t->seq + 1) * B <= N_ROWS ? B : N_ROWS - t->seq * B;
    CHECK_U64_EQ(t->rows, want_rows);
    const int32_t *got = t->data;
    for (uint64_t j = 0; j < t->rows; j++) {
        uint64_t row = cyclic ? (t->seq * B + j) % N_ROWS : t->seq * B + j;
        if (memcmp(got + j * N_COLS, truth[p] + row * N_COLS, N_COLS * sizeof(int32_t)) != 0)
            FAIL("%s block %llu row %llu (dataset row %llu) differs from HDF5", g_paths[p],
                 (unsigned long long)t->seq, (unsigned long long)j, (unsigned long long)row);
    }
}

static ml_layout *open_layout(const char *path) {
    ml_layout *L = NULL;
    ml_error err;
    ml_error_clear(&err);
    int rc = ml_layout_open(g_file, path, &L, &err);
    if (rc)
        FAIL("ml_layout_open(%s): %s", path, err.msg);
    return L;
}

/* Stream one pass (or three passes' worth, cyclic) and check every block. */
static void run_stream(int p, int ordered, int cyclic, int remainder, uint64_t B, unsigned workers,
                       unsigned ahead, ml_io_mode mode) {
    ml_layout *L = open_layout(g_paths[p]);
    ml_stream_config cfg = {.n_workers = workers, .read_ahead = ahead, .block_rows = B,
                            .cyclic = cyclic, .ordered = ordered, .remainder = remainder,
                            .io_mode = mode};
    ml_stream *s = NULL;
    ml_error err;
    ml_error_clear(&err);
    CHECK_RC(ml_stream_open(&s, L, &cfg, &err));
    ml_layout_unref(L); /* the stream holds its own reference */
    uint64_t n = cyclic ? 3 * N_ROWS / B + 1 : ml_stream_n_blocks(N_ROWS, B, 0, remainder);
    static unsigned seen[1000];
    memset(seen, 0, sizeof seen);
    ml_taken t;
    for (uint64_t i = 0; i < n; i++) {
        CHECK_RC(ml_stream_take(s, 1, TAKE_MS, &t));
        if (ordered)
            CHECK_U64_EQ(t.seq, i);
        CHECK_LT(t.seq, 1000);
        seen[t.seq]++;
        check_block(p, &t, B, cyclic);
        ml_ring_release(ml_stream_ring(s), t.slot);
    }
    if (!cyclic) {
        for (uint64_t k = 0; k < n; k++)
            CHECK_EQ(seen[k], 1);
        CHECK_ERR(ml_stream_take(s, 1, TAKE_MS, &t), -ML_EEND);
        ml_stream_stats st;
        ml_stream_get_stats(s, &st);
        CHECK_U64_EQ(st.blocks, n);
        CHECK_U64_EQ(st.errors, 0);
        CHECK_U64_EQ(st.bytes, (remainder ? N_ROWS : N_ROWS / B * B) * N_COLS * sizeof(int32_t));
    }
    CHECK(ml_stream_io_mode(s) == mode);
    ml_stream_close(s);
    CHECK_ERR(ml_stream_take(s, 1, TAKE_MS, &t), -ML_ECLOSED);
    ml_stream_close(s); /* idempotent */
    ml_stream_free(s);
}

/* An injected EIO reaches the consumer with its block; the others are fine. */
static void test_fault(ml_io_mode mode) {
    setenv("MULTILOAD_FAULTS", "eio@3", 1);
    ml_fault_reload();
    ml_layout *L = open_layout("/zip");
    /* One worker, 10-row blocks of 10-row chunks: one read per block, so
     * the 3rd read is block 2. */
    ml_stream_config cfg = {.n_workers = 1, .read_ahead = 2, .block_rows = 10, .ordered = 1,
                            .io_mode = mode};
    ml_stream *s;
    CHECK_RC(ml_stream_open(&s, L, &cfg, NULL));
    ml_taken t;
    for (uint64_t k = 0; k < N_ROWS / 10; k++) {
        CHECK_RC(ml_stream_take(s, 1, TAKE_MS, &t));
        CHECK_U64_EQ(t.seq, k);
        if (k == 2) {
            CHECK_ERR(t.error.code, -EIO);
            if (!strstr(t.error.msg, "block 2:") || !strstr(t.error.msg, "/zip") ||
                !strstr(t.error.msg, g_file))
                FAIL("message should name block, dataset and file: %s", t.error.msg);
        } else {
            check_block(0, &t, 10, 0);
        }
        ml_ring_release(ml_stream_ring(s), t.slot);
    }
    ml_stream_stats st;
    ml_stream_get_stats(s, &st);
    CHECK_U64_EQ(st.errors, 1);
    CHECK_U64_EQ(st.blocks, N_ROWS / 10);
    ml_stream_free(s);
    ml_layout_unref(L);
    unsetenv("MULTILOAD_FAULTS");
    ml_fault_reload();
}

static void test_bad_config(void) {
    ml_layout *L = open_layout("/zip");
    ml_stream *s = NULL;
    ml_error err;
    ml_stream_config ok = {.n_workers = 1, .read_ahead = 1, .block_rows = 10};
    ml_stream_config c = ok;
    c.n_workers = 0;
    ml_error_clear(&err);
    CHECK_ERR(ml_stream_open(&s, L, &c, &err), -ML_EINVAL);
    c = ok;
    c.read_ahead = 0;
    CHECK_ERR(ml_stream_open(&s, L, &c, NULL), -ML_EINVAL);
    c = ok;
    c.block_rows = 0;
    CHECK_ERR(ml_stream_open(&s, L, &c, NULL), -ML_EINVAL);
    c = ok;
    c.block_rows = N_ROWS + 1;
    CHECK_ERR(ml_stream_open(&s, L, &c, NULL), -ML_EINVAL);
    CHECK(s == NULL);
    ml_layout_unref(L);
    ml_stream_free(NULL);

    /* An empty dataset gives a stream that has ended at once. */
    L = open_layout("/empty");
    CHECK_U64_EQ(L->n_rows, 0);
    CHECK_RC(ml_stream_open(&s, L, &ok, NULL));
    ml_taken t;
    CHECK_ERR(ml_stream_take(s, 1, TAKE_MS, &t), -ML_EEND);
    ml_stream_free(s);
    ml_layout_unref(L);
}

/* Holding every slot and asking for more is reported, not a hang. */
static void test_deadlock(void) {
    ml_layout *L = open_layout("/contig");
    ml_stream_config cfg = {.n_workers = 2, .read_ahead = 2, .block_rows = 10, .ordered = 1};
    ml_stream *s;
    CHECK_RC(ml_stream_open(&s, L, &cfg, NULL));
    ml_taken a, b, t;
    CHECK_RC(ml_stream_take(s, 5, TAKE_MS, &a));
    CHECK_RC(ml_stream_take(s, 5, TAKE_MS, &b));
    CHECK_ERR(ml_stream_take(s, 5, TAKE_MS, &t), -ML_EDEADLOCK);
    ml_ring_release(ml_stream_ring(s), a.slot);
    CHECK_RC(ml_stream_take(s, 5, TAKE_MS, &t));
    CHECK_U64_EQ(t.seq, 2);
    check_block(1, &t, 10, 0);
    ml_stream_free(s); /* with slots still reserved */
    ml_layout_unref(L);
}

typedef struct taker {
    ml_stream *s;
    _Atomic int done;
    int rc;
} taker;

static void *take_main(void *arg) {
    taker *tk = arg;
    ml_taken t;
    tk->rc = ml_stream_take(tk->s, 9, -1, &t);
    atomic_store(&tk->done, 1);
    return NULL;
}

/* close() returns promptly with workers mid-stream, blocked on a full
 * ring, a consumer waiting in take, and a block still held. */
static void test_close_busy(void) {
    for (int round = 0; round < 6; round++) {
        ml_layout *L = open_layout(round % 2 ? "/contig" : "/zip");
        ml_stream_config cfg = {.n_workers = 2, .read_ahead = 3, .block_rows = 7, .cyclic = 1,
                                .ordered = round % 3 == 0};
        ml_stream *s;
        CHECK_RC(ml_stream_open(&s, L, &cfg, NULL));
        ml_layout_unref(L);
        ml_ring *ring = ml_stream_ring(s);
        ml_ring_ref(ring); /* as a numpy view would */
        ml_taken held;
        CHECK_RC(ml_stream_take(s, 1, TAKE_MS, &held));
        int32_t first = ((int32_t *)held.data)[0];
        /* A second consumer waits; a few more blocks go by. */
        taker tk = {.s = s};
        pthread_t th;
        if (round >= 3) {
            /* Fill the ring so the other consumer really waits. */
            ml_taken t;
            for (int i = 0; i < 2; i++)
                CHECK_RC(ml_stream_take(s, 1, TAKE_MS, &t));
        }
        CHECK_EQ(pthread_create(&th, NULL, take_main, &tk), 0);
        if (round % 2)
            check_sleep_ms(10);
        uint64_t t0 = check_now_ms();
        ml_stream_close(s);
        CHECK_LT(check_now_ms() - t0, 2000);
        pthread_join(th, NULL);
        /* The waiter got a block before the close, or was told it closed. */
        CHECK(tk.rc == 0 || tk.rc == -ML_ECLOSED || tk.rc == -ML_EDEADLOCK);
        ml_stream_free(s);
        /* The held block's memory outlives the stream. */
        CHECK_EQ(((int32_t *)held.data)[0], first);
        ml_ring_release(ring, held.slot);
        ml_ring_unref(ring);
    }
}

int main(void) {
    unsetenv("MULTILOAD_IO");
    unsetenv("MULTILOAD_FAULTS");
    g_file = check_path("stream.h5");
    write_file();
    ml_io_mode modes[2] = {ML_IO_PREAD, ml_io_default_mode()};
    for (int m = 0; m < 2; m++) {
        ml_io_mode mode = modes[m];
        for (int p = 0; p < 2; p++) {
            run_stream(p, 1, 0, 0, 10, 2, 3, mode);  /* ordered, remainder dropped */
            run_stream(p, 1, 0, 1, 10, 2, 3, mode);  /* ordered, remainder kept */
            run_stream(p, 0, 0, 1, 7, 3, 4, mode);   /* unordered */
            run_stream(p, 1, 1, 0, 10, 2, 3, mode);  /* cyclic ordered: wraps */
            run_stream(p, 0, 1, 0, 25, 2, 2, mode);  /* cyclic unordered */
            run_stream(p, 1, 0, 0, N_ROWS, 1, 1, mode); /* one block, one slot */
            run_stream(p, 1, 1, 0, N_ROWS, 2, 1, mode); /* whole dataset, cyclic */
        }
        test_fault(mode);
    }
    test_bad_config();
    test_deadlock();
    test_close_busy();
    CHECK_DONE();
}
