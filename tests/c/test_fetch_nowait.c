/* test_fetch_nowait.c - fetch.c's answers to the Reader: the storage-
 * neutral questions (band rows, parallel, one read) for contiguous,
 * chunked, compact and unallocated data, and the reads that never wait
 * (ml_fetch_rows_nowait, ml_fetch_runs_nowait): exact when they succeed,
 * -EAGAIN and nothing else where they would wait or cannot read (chunked,
 * unallocated, past the end of the file, fault injection, RWF_NOWAIT
 * switched off), batched and run by run, under io_uring and pread. The
 * file was just written, so the page cache holds it (as test_reader's
 * inline check assumes). */
#include "check.h"
#include "faults.h"

#include "fault.h"
#include "fetch.h"
#include "h5.h"
#include "h5gen.h"

#define ROWS 500
#define COLS 8

static int32_t g_truth[ROWS * COLS];

static void check_rows(const int32_t *got, uint64_t row0, uint64_t n) {
    CHECK_MEM_EQ(got, g_truth + row0 * COLS, n * COLS * sizeof(int32_t));
}

static void test_questions(ml_layout *contig, ml_layout *chunked, ml_layout *compact, ml_layout *empty) {
    CHECK_U64_EQ(ml_fetch_band_rows(contig), 0);
    CHECK_U64_EQ(ml_fetch_band_rows(chunked), 32);
    CHECK_U64_EQ(ml_fetch_band_rows(compact), 0);
    CHECK_EQ(ml_fetch_parallel(contig), 1);
    CHECK_EQ(ml_fetch_parallel(chunked), 1);
    CHECK_EQ(ml_fetch_parallel(compact), 0);
    CHECK_EQ(ml_fetch_range_is_one_read(contig), 1);
    CHECK_EQ(ml_fetch_range_is_one_read(chunked), 0);
    CHECK_EQ(ml_fetch_range_is_one_read(compact), 0);
    CHECK_EQ(ml_fetch_range_is_one_read(empty), 0); /* never written: no extent */
}

static void test_rows(ml_layout *contig, ml_layout *chunked, ml_layout *compact, ml_layout *empty) {
    ml_nowait nw;
    ml_nowait_init(&nw, ML_IO_AUTO);
    CHECK_EQ(ml_nowait_usable(&nw), 1);
    static int32_t got[ROWS * COLS];
    CHECK_RC(ml_fetch_rows_nowait(&nw, contig, 0, ROWS, got));
    check_rows(got, 0, ROWS);
    CHECK_RC(ml_fetch_rows_nowait(&nw, contig, 123, 7, got));
    check_rows(got, 123, 7);
    CHECK_RC(ml_fetch_rows_nowait(&nw, contig, 5, 0, got)); /* nothing to read */
    CHECK_RC(ml_fetch_rows_nowait(&nw, compact, 40, 60, got));
    check_rows(got, 40, 60);
    CHECK_EQ(ml_fetch_rows_nowait(&nw, chunked, 0, 10, got), -EAGAIN); /* decoding is a worker's */
    CHECK_EQ(ml_fetch_rows_nowait(&nw, empty, 0, 10, got), -EAGAIN);   /* the fill: a worker's */
    /* past the end of the file: -EAGAIN (the worker's fetch names the error), nothing read */
    uint64_t eof = contig->eof;
    contig->eof = contig->offset + 10 * contig->row_bytes;
    memset(got, 0x5A, sizeof got);
    CHECK_EQ(ml_fetch_rows_nowait(&nw, contig, 5, 10, got), -EAGAIN);
    CHECK_RC(ml_fetch_rows_nowait(&nw, contig, 0, 10, got)); /* up to the end is fine */
    check_rows(got, 0, 10);
    contig->eof = eof;
    /* fault injection models a device: cached-only reads stand aside, memory does not */
    set_faults("slow~1:1");
    CHECK_EQ(ml_nowait_usable(&nw), 0);
    CHECK_EQ(ml_fetch_rows_nowait(&nw, contig, 0, 4, got), -EAGAIN);
    CHECK_RC(ml_fetch_rows_nowait(&nw, compact, 0, 4, got));
    check_rows(got, 0, 4);
    set_faults(NULL);
    CHECK_EQ(ml_nowait_usable(&nw), 1);
    /* a kernel without RWF_NOWAIT: every file read is -EAGAIN */
    atomic_store(&nw.ok, 0);
    CHECK_EQ(ml_nowait_usable(&nw), 0);
    CHECK_EQ(ml_fetch_rows_nowait(&nw, contig, 0, 4, got), -EAGAIN);
}

static void test_runs(ml_layout *contig, ml_layout *chunked, ml_layout *compact, ml_io_mode mode) {
    ml_row_run runs[] = {{3, 2}, {100, 1}, {7, 40}, {499, 1}, {0, 1}};
    size_t nr = sizeof runs / sizeof runs[0];
    static int32_t got[ROWS * COLS];
    for (int batch = 1; batch >= 0; batch--) {
        ml_nowait nw;
        ml_nowait_init(&nw, mode);
        if (!batch)
            atomic_store(&nw.batch, 0); /* run by run */
        ml_nowait_ctx ctx = {0};
        for (size_t n = 1; n <= nr; n++) {
            memset(got, 0x5A, sizeof got);
            CHECK_RC(ml_fetch_runs_nowait(&nw, &ctx, contig, runs, n, got));
            const int32_t *p = got;
            for (size_t i = 0; i < n; i++) {
                check_rows(p, runs[i].start, runs[i].count);
                p += runs[i].count * COLS;
            }
        }
        if (!batch)
            CHECK(ctx.io == NULL); /* no batch, no engine */
        CHECK_RC(ml_fetch_runs_nowait(&nw, &ctx, compact, (ml_row_run[]){{1, 2}, {50, 3}}, 2, got));
        check_rows(got, 1, 2);
        check_rows(got + 2 * COLS, 50, 3);
        CHECK_EQ(ml_fetch_runs_nowait(&nw, &ctx, chunked, runs, nr, got), -EAGAIN);
        /* a run past the end of the file: -EAGAIN */
        uint64_t eof = contig->eof;
        contig->eof = contig->offset + 200 * contig->row_bytes;
        CHECK_EQ(ml_fetch_runs_nowait(&nw, &ctx, contig, runs, nr, got), -EAGAIN);
        contig->eof = eof;
        set_faults("slow~1:1");
        CHECK_EQ(ml_fetch_runs_nowait(&nw, &ctx, contig, runs, nr, got), -EAGAIN);
        set_faults(NULL);
        ml_nowait_ctx_release(&ctx);
        CHECK(ctx.io == NULL && ctx.reqs == NULL && ctx.reqs_cap == 0);
        ml_nowait_ctx_release(&ctx); /* released twice: harmless */
    }
}

int main(void) {
    const char *file = check_path("nowait.h5");
    for (size_t i = 0; i < ROWS * COLS; i++)
        g_truth[i] = (int32_t)(i * 2654435761u >> 5);
    h5spec contig = {.path = "/contig", .type = H5T_NATIVE_INT32, .ndim = 2, .dims = {ROWS, COLS}};
    h5spec gz = {.path = "/gz", .type = H5T_NATIVE_INT32, .ndim = 2, .dims = {ROWS, COLS},
                 .chunk = {32, COLS}, .deflate = 4};
    h5spec empty = {.path = "/empty", .type = H5T_NATIVE_INT32, .ndim = 2, .dims = {ROWS, COLS}};
    hid_t fid = h5gen_create(file);
    h5gen_dataset(fid, &contig, g_truth);
    h5gen_dataset(fid, &gz, g_truth);
    h5gen_dataset_rows(fid, &empty, NULL, 0, 0);
    h5spec compact = {.path = "/compact", .type = H5T_NATIVE_INT32, .ndim = 2, .dims = {100, COLS}, .compact = 1};
    h5gen_dataset(fid, &compact, g_truth);
    H5Fclose(fid);
    ml_layout *L[4];
    ml_error err;
    const char *paths[4] = {"/contig", "/gz", "/compact", "/empty"};
    for (int i = 0; i < 4; i++)
        CHECK_RC(ml_layout_open(file, paths[i], &L[i], &err));
    CHECK_EQ(L[2]->storage, ML_STORE_MEMORY); /* the compact case is what it claims */
    CHECK_U64_EQ(L[3]->offset, UINT64_MAX);
    test_questions(L[0], L[1], L[2], L[3]);
    test_rows(L[0], L[1], L[2], L[3]);
    test_runs(L[0], L[1], L[2], ML_IO_URING);
    test_runs(L[0], L[1], L[2], ML_IO_PREAD);
    for (int i = 0; i < 4; i++)
        ml_layout_unref(L[i]);
    CHECK_DONE();
}
