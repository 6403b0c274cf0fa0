/* test_streamer.c - end-to-end streams over a generated file: ordered and
 * unordered, with and without the remainder block, cyclic passes that
 * wrap, an injected I/O error that travels with its block, deadlock
 * detection, bad configurations, an empty dataset, close() while
 * workers are busy and a consumer is waiting, a stream started at a saved
 * position, a permuted schedule, a stream filling a shared ring, and direct
 * (O_DIRECT) streams whose workers read batches of blocks. Every block's
 * rows are compared with H5Dread of the whole dataset. */
#include "check.h"

#include <fcntl.h>
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
static int g_direct; /* run_stream reads with O_DIRECT (direct batches) */
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

/* What today's binding does: a schedule from (cyclic, remainder), a
 * private ring of `ahead` slots for it, then the stream. Returns the
 * stream's code; *err gets the detail. */
static int open_stream(ml_stream **out, ml_layout *L, int cyclic, int remainder, uint64_t B,
                       unsigned ahead, const ml_stream_config *cfg, ml_error *err) {
    ml_schedule sch;
    ml_schedule_params sp = {.kind = cyclic ? ML_SCHEDULE_CYCLIC : ML_SCHEDULE_SEQUENTIAL,
                             .n_rows = L->n_rows, .block_rows = B, .remainder = remainder};
    int rc = ml_schedule_init(&sch, &sp);
    if (rc < 0)
        return rc;
    ml_ring *ring = NULL;
    rc = ml_stream_ring_new(&ring, L, &sch, ahead, ML_RING_PRIVATE, err);
    if (rc == 0)
        rc = ml_stream_open(out, L, ring, &sch, cfg, err);
    ml_ring_unref(ring); /* the stream holds its own */
    return rc;
}

/* Stream one pass (or three passes' worth, cyclic) and check every block. */
static void run_stream(int p, int ordered, int cyclic, int remainder, uint64_t B, unsigned workers,
                       unsigned ahead, ml_io_mode mode) {
    ml_layout *L = open_layout(g_paths[p]);
    ml_stream_config cfg = {.n_workers = workers, .ordered = ordered, .io_mode = mode, .direct = g_direct};
    ml_stream *s = NULL;
    ml_error err;
    ml_error_clear(&err);
    CHECK_RC(open_stream(&s, L, cyclic, remainder, B, ahead, &cfg, &err));
    unsigned batch = g_direct ? ml_direct_batch_blocks(ML_COLD_AUTO, B * L->row_bytes, ahead, workers) : 1;
    ml_layout_unref(L); /* the stream holds its own reference */
    uint64_t n = cyclic ? 3 * N_ROWS / B + 1 : N_ROWS / B + (remainder && N_ROWS % B ? 1 : 0);
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
        CHECK_EQ(st.batch_blocks, batch);
        if (batch > 1)
            CHECK_GT(st.batched_blocks, 0);
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
    ml_stream_config cfg = {.n_workers = 1, .ordered = 1, .io_mode = mode};
    ml_stream *s;
    CHECK_RC(open_stream(&s, L, 0, 0, 10, 2, &cfg, NULL));
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
    ml_stream_config ok = {.n_workers = 1};
    ml_stream_config c = ok;
    c.n_workers = 0;
    ml_error_clear(&err);
    CHECK_ERR(open_stream(&s, L, 0, 0, 10, 1, &c, &err), -ML_EINVAL);
    CHECK(strstr(err.msg, "invalid stream configuration") != NULL);
    /* read_ahead 0: no ring */
    ml_error_clear(&err);
    CHECK_ERR(open_stream(&s, L, 0, 0, 10, 0, &ok, &err), -ML_EINVAL);
    CHECK(strstr(err.msg, "invalid stream configuration") != NULL);
    /* block_rows 0: no schedule */
    CHECK_ERR(open_stream(&s, L, 0, 0, 0, 1, &ok, NULL), -ML_EINVAL);
    /* blocks longer than the dataset: a sequential schedule exists, the stream refuses it */
    CHECK_ERR(open_stream(&s, L, 0, 0, N_ROWS + 1, 1, &ok, NULL), -ML_EINVAL);
    CHECK_ERR(open_stream(&s, L, 1, 0, N_ROWS + 1, 1, &ok, NULL), -ML_EINVAL);
    CHECK(s == NULL);

    /* A ring that does not fit the schedule is refused, naming the dataset. */
    ml_schedule sch, other;
    s = NULL;
    ml_schedule_params sp = {.n_rows = N_ROWS, .block_rows = 10};
    CHECK_RC(ml_schedule_init(&sch, &sp));
    ml_ring *ring;
    CHECK_RC(ml_ring_create(&ring, 2, 10 * N_COLS * sizeof(int32_t), 7)); /* limit: 7 != 10 blocks */
    ml_error_clear(&err);
    CHECK_ERR(ml_stream_open(&s, L, ring, &sch, &ok, &err), -ML_EINVAL);
    CHECK(strstr(err.msg, "/zip") != NULL);
    ml_ring_unref(ring);
    /* A ring that starts elsewhere than the schedule's position. */
    CHECK_RC(ml_ring_create(&ring, 2, 4096, 10));
    CHECK_RC(ml_schedule_seek(&sch, 3));
    CHECK_ERR(ml_stream_open(&s, L, ring, &sch, &ok, NULL), -ML_EINVAL);
    ml_ring_unref(ring);
    ml_ring_config rcfg = {.n_slots = 2, .slot_bytes = 4096, .first = 3, .limit = 10};
    CHECK_RC(ml_ring_new(&ring, &rcfg));
    CHECK_RC(ml_stream_open(&s, L, ring, &sch, &ok, NULL)); /* both at 3: accepted */
    ml_stream_free(s);
    ml_ring_unref(ring);
    /* A schedule of another dataset's row count. */
    sp = (ml_schedule_params){.n_rows = N_ROWS - 1, .block_rows = 10};
    CHECK_RC(ml_schedule_init(&other, &sp));
    CHECK_RC(ml_stream_ring_new(&ring, L, &other, 2, ML_RING_PRIVATE, NULL));
    s = NULL;
    CHECK_ERR(ml_stream_open(&s, L, ring, &other, &ok, NULL), -ML_EINVAL);
    CHECK(s == NULL);
    ml_ring_unref(ring);
    ml_layout_unref(L);
    ml_stream_free(NULL);

    /* An empty dataset gives a stream that has ended at once. */
    L = open_layout("/empty");
    CHECK_U64_EQ(L->n_rows, 0);
    CHECK_RC(open_stream(&s, L, 0, 0, 10, 1, &ok, NULL));
    ml_taken t;
    CHECK_ERR(ml_stream_take(s, 1, TAKE_MS, &t), -ML_EEND);
    ml_stream_free(s);
    ml_layout_unref(L);
}

/* Holding every slot and asking for more is reported, not a hang. */
static void test_deadlock(void) {
    ml_layout *L = open_layout("/contig");
    ml_stream_config cfg = {.n_workers = 2, .ordered = 1};
    ml_stream *s;
    CHECK_RC(open_stream(&s, L, 0, 0, 10, 2, &cfg, NULL));
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
        ml_stream_config cfg = {.n_workers = 2, .ordered = round % 3 == 0};
        ml_stream *s;
        CHECK_RC(open_stream(&s, L, 1, 0, 7, 3, &cfg, NULL));
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

/* Block k of any schedule: its rows, as the schedule says, against HDF5. */
static void check_sched_block(int p, const ml_schedule *sch, const ml_taken *t) {
    if (t->error.code)
        FAIL("block %llu failed: %s", (unsigned long long)t->seq, t->error.msg);
    ml_block_runs runs;
    CHECK_RC(ml_schedule_block(sch, t->seq, &runs));
    const int32_t *got = t->data;
    uint64_t j = 0;
    for (unsigned i = 0; i < runs.n; i++)
        for (uint64_t r = 0; r < runs.count[i]; r++, j++)
            if (memcmp(got + j * N_COLS, truth[p] + (runs.start[i] + r) * N_COLS,
                       N_COLS * sizeof(int32_t)) != 0)
                FAIL("%s block %llu row %llu differs from HDF5", g_paths[p],
                     (unsigned long long)t->seq, (unsigned long long)j);
    CHECK_U64_EQ(t->rows, j);
}

/* A stream started at a saved position hands out the rest of the blocks,
 * from there; its position is where a later stream would resume. */
static void test_position(ml_io_mode mode) {
    for (int cyclic = 0; cyclic <= 1; cyclic++) {
        ml_layout *L = open_layout("/zip");
        ml_schedule sch;
        ml_schedule_params sp = {.kind = cyclic ? ML_SCHEDULE_CYCLIC : ML_SCHEDULE_SEQUENTIAL,
                                 .n_rows = N_ROWS, .block_rows = 10, .remainder = 1};
        CHECK_RC(ml_schedule_init(&sch, &sp));
        CHECK_RC(ml_schedule_seek(&sch, 4));
        CHECK_ERR(ml_schedule_seek(&sch, cyclic ? 0 : 12), cyclic ? 0 : -ML_EINVAL);
        CHECK_RC(ml_schedule_seek(&sch, 4));
        ml_ring *ring;
        CHECK_RC(ml_stream_ring_new(&ring, L, &sch, 3, ML_RING_PRIVATE, NULL));
        ml_stream_config cfg = {.n_workers = 2, .ordered = 1, .io_mode = mode};
        ml_stream *s;
        CHECK_RC(ml_stream_open(&s, L, ring, &sch, &cfg, NULL));
        ml_ring_unref(ring);
        CHECK_U64_EQ(ml_schedule_position(ml_stream_schedule(s)), 4);
        CHECK_U64_EQ(ml_stream_position(s), 4);
        ml_taken t;
        uint64_t end = cyclic ? 25 : 11;
        for (uint64_t k = 4; k < end; k++) {
            CHECK_RC(ml_stream_take(s, 1, TAKE_MS, &t));
            CHECK_U64_EQ(t.seq, k);
            check_sched_block(0, &sch, &t);
            if (!cyclic)
                check_block(0, &t, 10, 0);
            ml_ring_release(ml_stream_ring(s), t.slot);
            CHECK_U64_EQ(ml_stream_position(s), k + 1);
        }
        if (!cyclic)
            CHECK_ERR(ml_stream_take(s, 1, TAKE_MS, &t), -ML_EEND);
        ml_stream_free(s);
        ml_layout_unref(L);
    }
}

/* A permuted schedule: every block of a pass once, in the keyed order. */
static void test_permuted(ml_io_mode mode) {
    for (int ordered = 0; ordered <= 1; ordered++) {
        ml_layout *L = open_layout(ordered ? "/contig" : "/zip");
        ml_schedule sch;
        ml_schedule_params sp = {.kind = ML_SCHEDULE_PERMUTED, .n_rows = N_ROWS, .block_rows = 7,
                                 .remainder = 1, .seed = 42, .epoch = 3};
        CHECK_RC(ml_schedule_init(&sch, &sp));
        uint64_t n = ml_schedule_n_blocks(&sch);
        CHECK_U64_EQ(n, 15);
        ml_ring *ring;
        CHECK_RC(ml_stream_ring_new(&ring, L, &sch, 4, ML_RING_PRIVATE, NULL));
        ml_stream_config cfg = {.n_workers = 3, .ordered = ordered, .io_mode = mode};
        ml_stream *s;
        CHECK_RC(ml_stream_open(&s, L, ring, &sch, &cfg, NULL));
        ml_ring_unref(ring);
        unsigned seen_rows[N_ROWS] = {0};
        ml_taken t;
        for (uint64_t i = 0; i < n; i++) {
            CHECK_RC(ml_stream_take(s, 1, TAKE_MS, &t));
            if (ordered)
                CHECK_U64_EQ(t.seq, i);
            check_sched_block(ordered, &sch, &t);
            ml_block_runs runs;
            CHECK_RC(ml_schedule_block(&sch, t.seq, &runs));
            for (uint64_t r = 0; r < runs.count[0]; r++)
                seen_rows[runs.start[0] + r]++;
            ml_ring_release(ml_stream_ring(s), t.slot);
        }
        CHECK_ERR(ml_stream_take(s, 1, TAKE_MS, &t), -ML_EEND);
        for (int r = 0; r < N_ROWS; r++)
            CHECK_EQ(seen_rows[r], 1);
        ml_stream_free(s);
        ml_layout_unref(L);
    }
}

/* The stream fills a shared ring; a second handle (as another process
 * would attach it) takes and releases. */
static void test_shared_ring(ml_io_mode mode) {
    ml_layout *L = open_layout("/zip");
    ml_schedule sch;
    ml_schedule_params sp = {.kind = ML_SCHEDULE_SEQUENTIAL, .n_rows = N_ROWS, .block_rows = 10,
                             .remainder = 1};
    CHECK_RC(ml_schedule_init(&sch, &sp));
    ml_ring *ring, *view;
    CHECK_RC(ml_stream_ring_new(&ring, L, &sch, 2, ML_RING_SHARED, NULL));
    CHECK(ml_ring_fd(ring) >= 0);
    CHECK_RC(ml_ring_attach(&view, ml_ring_fd(ring)));
    ml_stream_config cfg = {.n_workers = 2, .ordered = 1, .io_mode = mode};
    ml_stream *s;
    CHECK_RC(ml_stream_open(&s, L, ring, &sch, &cfg, NULL));
    ml_ring_unref(ring);
    ml_taken t;
    uint64_t owner = ml_ring_owner_id();
    for (uint64_t k = 0; k < 11; k++) {
        CHECK_RC(ml_ring_take(view, 1, owner, TAKE_MS, &t, NULL));
        CHECK_U64_EQ(t.seq, k);
        check_block(0, &t, 10, 0);
        ml_ring_release(view, t.slot);
    }
    CHECK_ERR(ml_ring_take(view, 1, owner, TAKE_MS, &t, NULL), -ML_EEND);
    ml_stream_free(s);
    ml_ring_unref(view);
    ml_layout_unref(L);
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
        /* Direct batches where the filesystem allows O_DIRECT (not tmpfs). */
        int fd = open(g_file, O_RDONLY | O_DIRECT);
        if (fd >= 0) {
            close(fd);
            g_direct = 1;
            for (int p = 0; p < 2; p++) {
                run_stream(p, 1, 0, 1, 10, 2, 30, mode); /* ordered, batches of 10 */
                run_stream(p, 0, 0, 1, 7, 3, 16, mode);  /* unordered, batches of 4 */
                run_stream(p, 1, 1, 0, 25, 2, 12, mode); /* cyclic: wrapped blocks in batches */
                run_stream(p, 1, 0, 1, 10, 2, 3, mode);  /* too few slots: one block each */
            }
            g_direct = 0;
        }
        test_fault(mode);
        test_position(mode);
        test_permuted(mode);
        test_shared_ring(mode);
    }
    test_bad_config();
    test_deadlock();
    test_close_busy();
    CHECK_DONE();
}
