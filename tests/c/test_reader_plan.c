/* test_reader_plan.c - the Reader's planner (reader_plan.c) on its own:
 * the radix sort of (row, pos) pairs against qsort (random, duplicates,
 * rows too wide to pack, n = 0 and 1), and plans of range and list
 * requests on contiguous, chunked and compact data: the mode, parts that
 * cover [0, n) in order, cuts only at band boundaries for chunked data,
 * one part when the request may not split or the data is not read in
 * parallel. */
#include "check.h"

#include "h5gen.h"
#include "reader_internal.h"
#include "h5.h"

#define ROWS 20000
#define COLS 64 /* 256 B rows of int32 */

static int cmp(const void *a, const void *b) {
    const ml_pair *x = a, *y = b;
    if (x->row != y->row)
        return x->row < y->row ? -1 : 1;
    return x->pos < y->pos ? -1 : x->pos > y->pos;
}

static void test_sort(void) {
    uint64_t seed = 11;
    static ml_pair p[5000], want[5000];
    uint64_t sizes[] = {0, 1, 2, 3, 255, 256, 257, 4999};
    uint64_t ranges[] = {1, 7, 300, 1u << 20, UINT64_MAX}; /* UINT64_MAX: rows too wide for one key */
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        for (size_t g = 0; g < sizeof ranges / sizeof ranges[0]; g++) {
            uint64_t n = sizes[s];
            for (uint64_t i = 0; i < n; i++) {
                uint64_t row = check_rand(&seed);
                p[i] = (ml_pair){ranges[g] == UINT64_MAX ? row : row % ranges[g], i};
            }
            memcpy(want, p, n * sizeof *p);
            qsort(want, n, sizeof *want, cmp);
            ml_pairs_sort(p, n);
            CHECK_MEM_EQ(p, want, n * sizeof *p);
        }
    }
}

/* Plan a request, check its parts, return its mode. */
static int plan(ml_layout *L, const uint64_t *rows, uint64_t row0, uint64_t n, size_t col_size, int may_split,
                size_t *n_parts) {
    ml_request *q = calloc(1, sizeof *q);
    CHECK(q);
    q->L = L;
    if (rows) {
        q->rows = malloc(n * sizeof *rows);
        memcpy(q->rows, rows, n * sizeof *rows);
    }
    q->row0 = row0;
    q->n_rows = n;
    q->col_size = col_size;
    q->out_size = col_size ? col_size : L->row_bytes;
    q->may_split = may_split;
    ml_error err;
    ml_error_clear(&err);
    CHECK_RC(ml_request_plan(q, 3, &err));
    CHECK_GE(q->n_parts, 1);
    CHECK_LE(q->n_parts, MAX_PARTS);
    CHECK_LE(q->n_parts, 2 * 3);
    uint64_t c0 = ml_fetch_band_rows(L);
    for (size_t i = 0; i < q->n_parts; i++) {
        CHECK_U64_EQ(q->parts[i].k0, i ? q->parts[i - 1].k1 : 0);
        CHECK_LT(q->parts[i].k0, q->parts[i].k1);
        if (c0 && i) { /* a cut never splits a band */
            uint64_t k = q->parts[i].k0;
            if (q->mode == M_RANGE)
                CHECK_EQ((row0 + k) % c0, 0);
            else
                CHECK_NE(row_k(q, k - 1) / c0, row_k(q, k) / c0);
        }
    }
    CHECK_U64_EQ(q->parts[q->n_parts - 1].k1, n);
    if (q->pairs) { /* sorted by row, each position once */
        for (uint64_t k = 1; k < n; k++)
            CHECK(q->pairs[k - 1].row < q->pairs[k].row ||
                  (q->pairs[k - 1].row == q->pairs[k].row && q->pairs[k - 1].pos < q->pairs[k].pos));
        for (uint64_t k = 0; k < n; k++)
            CHECK_U64_EQ(q->pairs[k].row, rows[q->pairs[k].pos]);
    }
    int mode = q->mode;
    *n_parts = q->n_parts;
    free(q->rows);
    free(q->pairs);
    free(q);
    return mode;
}

static void test_plans(ml_layout *contig, ml_layout *chunked, ml_layout *compact) {
    static uint64_t up[ROWS], mixed[ROWS];
    uint64_t seed = 3, n_up = ROWS * 3 / 4;
    for (uint64_t i = 0; i < ROWS; i++) {
        up[i] = i + i / 3; /* strictly increasing, with gaps; < ROWS for i < n_up */
        mixed[i] = check_rand(&seed) % ROWS;
    }
    size_t np;
    /* ranges */
    CHECK_EQ(plan(contig, NULL, 0, 10, 0, 1, &np), M_RANGE);
    CHECK_EQ(np, 1); /* small: one part */
    CHECK_EQ(plan(contig, NULL, 7, ROWS - 7, 0, 1, &np), M_RANGE);
    CHECK_GT(np, 1); /* 5 MB: cut */
    CHECK_EQ(plan(contig, NULL, 7, ROWS - 7, 0, 0, &np), M_RANGE);
    CHECK_EQ(np, 1); /* others queued: not cut */
    CHECK_EQ(plan(chunked, NULL, 5, ROWS - 5, 0, 1, &np), M_RANGE);
    CHECK_GT(np, 1);
    CHECK_EQ(plan(chunked, NULL, 5, 10, 0, 1, &np), M_BANDS); /* less than a band */
    CHECK_EQ(plan(compact, NULL, 0, 100, 0, 1, &np), M_RANGE);
    CHECK_EQ(np, 1);
    /* lists */
    CHECK_EQ(plan(contig, up, 0, n_up, 0, 1, &np), M_DIRECT);
    CHECK_GT(np, 1);
    CHECK_EQ(plan(contig, up, 0, n_up, 4, 1, &np), M_SCATTER); /* a column: copied */
    CHECK_EQ(plan(contig, mixed, 0, ROWS, 0, 1, &np), M_SCATTER);
    CHECK_GT(np, 1);
    CHECK_EQ(plan(contig, mixed, 0, 100, 0, 1, &np), M_SCATTER);
    CHECK_EQ(np, 1); /* under 2 x 64 rows: one part */
    CHECK_EQ(plan(chunked, mixed, 0, ROWS, 0, 1, &np), M_BANDS);
    CHECK_GT(np, 1);
    CHECK_EQ(plan(chunked, up, 0, n_up, 0, 1, &np), M_BANDS);
    CHECK_EQ(plan(chunked, (uint64_t[]){40, 33, 35}, 0, 3, 0, 1, &np), M_BANDS);
    CHECK_EQ(np, 1); /* one band */
    CHECK_EQ(plan(compact, (uint64_t[]){9, 3, 3, 50}, 0, 4, 0, 1, &np), M_SCATTER);
    CHECK_EQ(np, 1); /* not read in parallel: never cut */
}

static void test_small_and_work(ml_layout *contig, ml_layout *chunked) {
    ml_request q = {.L = contig, .row0 = 3, .n_rows = 4};
    CHECK_EQ(ml_request_small(&q), 1);
    q.n_rows = SMALL_BYTES / contig->row_bytes + 1;
    CHECK_EQ(ml_request_small(&q), 0); /* too big */
    q.n_rows = 4;
    q.col_size = 4;
    CHECK_EQ(ml_request_small(&q), 0); /* a column */
    q = (ml_request){.L = chunked, .row0 = 3, .n_rows = 4};
    CHECK_EQ(ml_request_small(&q), 0); /* decoded: not one read */
    CHECK_U64_EQ(ml_request_work(&q), 4 * chunked->row_bytes);
    uint64_t rows[2] = {1, 900};
    q.rows = rows;
    q.n_rows = 2;
    CHECK_U64_EQ(ml_request_work(&q), 2 * 32 * chunked->row_bytes); /* two bands decoded */
}

int main(void) {
    test_sort();
    const char *file = check_path("plan.h5");
    static int32_t data[ROWS * COLS];
    h5spec contig = {.path = "/contig", .type = H5T_NATIVE_INT32, .ndim = 2, .dims = {ROWS, COLS}};
    h5spec gz = {.path = "/gz", .type = H5T_NATIVE_INT32, .ndim = 2, .dims = {ROWS, COLS},
                 .chunk = {32, COLS}, .deflate = 1};
    hid_t fid = h5gen_create(file);
    h5gen_dataset(fid, &contig, data);
    h5gen_dataset(fid, &gz, data);
    h5spec compact = {.path = "/compact", .type = H5T_NATIVE_INT32, .ndim = 2, .dims = {100, 8}, .compact = 1};
    h5gen_dataset(fid, &compact, data);
    H5Fclose(fid);
    ml_layout *L[3];
    ml_error err;
    CHECK_RC(ml_layout_open(file, "/contig", &L[0], &err));
    CHECK_RC(ml_layout_open(file, "/gz", &L[1], &err));
    CHECK_RC(ml_layout_open(file, "/compact", &L[2], &err));
    test_plans(L[0], L[1], L[2]);
    test_small_and_work(L[0], L[1]);
    for (int i = 0; i < 3; i++)
        ml_layout_unref(L[i]);
    CHECK_DONE();
}
