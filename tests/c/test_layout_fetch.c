/* test_layout_fetch.c - ml_layout_open + ml_fetch_rows against H5Dread of
 * the same hyperslab, for files written here with the HDF5 C API:
 * contiguous (also big-endian and never written), chunked with partial
 * edge chunks in 2-D and 3-D, deflate+shuffle(+fletcher32), chunks that
 * span whole rows (decoded in place), unallocated chunks with a fill
 * value; damaged chunks; and the open errors (missing file, not HDF5,
 * missing path, group, variable-length strings). Both I/O modes. */
#include "check.h"

#include <fcntl.h>
#include <liburing.h>

#include "fetch.h"
#include "h5gen.h"
#include "h5.h"

static const char *g_file;

static void *make_data(const h5spec *s) {
    size_t n = h5gen_elems(s), esz = H5Tget_size(s->type);
    unsigned char *p = malloc(n * esz);
    H5T_class_t cls = H5Tget_class(s->type);
    for (size_t i = 0; i < n; i++) {
        if (cls == H5T_FLOAT && esz == 8) {
            double v = (double)i * 0.25 - 1000.0;
            memcpy(p + i * esz, &v, 8);
        } else {
            /* Integers of any width and byte order: distinct bytes per element. */
            uint64_t v = i * 0x9E3779B1u + 12345;
            memcpy(p + i * esz, &v, esz);
        }
    }
    return p;
}

/* Fetch rows [row0, row0+n) and compare with H5Dread of the same rows. */
static void compare_rows(ml_fetcher *f, const ml_layout *L, const h5spec *s, uint64_t row0,
                         uint64_t n) {
    size_t bytes = n * L->row_bytes;
    unsigned char *got = malloc(bytes + 64), *want = malloc(bytes + 1);
    memset(got, 0xcd, bytes + 64);
    ml_error err;
    ml_error_clear(&err);
    int rc = ml_fetch_rows(f, row0, n, got, &err);
    if (rc != 0)
        FAIL("%s rows %llu+%llu: %d %s", s->path, (unsigned long long)row0, (unsigned long long)n,
             rc, err.msg);
    h5gen_read_rows(g_file, s->path, s->type, row0, n, want);
    for (size_t i = 0; i < bytes; i++)
        if (got[i] != want[i])
            FAIL("%s rows %llu+%llu: byte %zu (row %llu) is %02x, HDF5 says %02x", s->path,
                 (unsigned long long)row0, (unsigned long long)n, i,
                 (unsigned long long)(row0 + i / L->row_bytes), got[i], want[i]);
    for (size_t i = bytes; i < bytes + 64; i++)
        CHECK_EQ(got[i], 0xcd); /* nothing written past the rows */
    free(got);
    free(want);
}

/* Open s->path and compare many row ranges, in the given I/O mode. */
static void check_dataset(const h5spec *s, ml_storage storage, ml_io_mode mode) {
    ml_layout *L = NULL;
    ml_error err;
    ml_error_clear(&err);
    int rc = ml_layout_open(g_file, s->path, &L, &err);
    if (rc)
        FAIL("ml_layout_open(%s): %d %s", s->path, rc, err.msg);
    CHECK_EQ(L->storage, storage);
    CHECK_EQ(L->ndim, s->ndim);
    for (int d = 0; d < s->ndim; d++)
        CHECK_U64_EQ(L->dims[d], s->dims[d]);
    CHECK_EQ(L->type->size, H5Tget_size(s->type));
    uint64_t N = L->n_rows;
    CHECK_U64_EQ(N, s->dims[0]);
    ml_fetcher *f = NULL;
    CHECK_RC(ml_fetcher_open(&f, L, mode, &err));
    CHECK_EQ(ml_fetcher_io_mode(f), mode);

    uint64_t c0 = s->chunk[0] ? s->chunk[0] : 7;
    uint64_t ranges[][2] = {
        {0, N}, {0, 1}, {N - 1, 1}, {1, N - 2}, {3, 17 < N - 3 ? 17 : N - 3},
        {c0, c0 < N - c0 ? c0 : N - c0},         /* exactly one chunk row */
        {c0 - 1, c0 + 2 < N - c0 + 1 ? c0 + 2 : N - c0 + 1}, /* straddles chunk edges */
        {N - N % c0, N % c0 ? N % c0 : 1},       /* the partial edge chunk */
    };
    for (size_t i = 0; i < sizeof ranges / sizeof ranges[0]; i++)
        if (ranges[i][0] < N && ranges[i][1] > 0 && ranges[i][0] + ranges[i][1] <= N)
            compare_rows(f, L, s, ranges[i][0], ranges[i][1]);
    uint64_t seed = N * 977 + (uint64_t)mode;
    for (int i = 0; i < 20; i++) {
        uint64_t a = check_rand(&seed) % N, b = check_rand(&seed) % N;
        if (a > b) {
            uint64_t t = a;
            a = b;
            b = t;
        }
        compare_rows(f, L, s, a, b - a + 1);
    }
    /* Out of range, and empty. */
    unsigned char one[1];
    ml_error_clear(&err);
    CHECK_ERR(ml_fetch_rows(f, N, 1, one, &err), -ML_EINVAL);
    CHECK(strstr(err.msg, s->path) != NULL);
    CHECK_ERR(ml_fetch_rows(f, 1, N, one, NULL), -ML_EINVAL);
    CHECK_ERR(ml_fetch_rows(f, UINT64_MAX, 2, one, NULL), -ML_EINVAL);
    CHECK_RC(ml_fetch_rows(f, 0, 0, one, NULL));
    ml_fetcher_close(f);
    ml_layout_unref(L);
}

static h5spec specs[] = {
    /* contiguous */
    {.path = "/contig/i32", .tc = TC_I32, .ndim = 2, .dims = {1000, 7}},
    {.path = "/contig/f64_1d", .tc = TC_F64, .ndim = 1, .dims = {333}},
    {.path = "/contig/be_u16", .tc = TC_U16BE, .ndim = 2, .dims = {50, 3}},
    /* chunked, no filters: partial edge chunks in 2-D and 3-D */
    {.path = "/chunk/f64_2d", .tc = TC_F64, .ndim = 2, .dims = {103, 11},
     .chunk = {10, 4}},
    {.path = "/chunk/i16_3d", .tc = TC_I16, .ndim = 3, .dims = {37, 5, 6},
     .chunk = {8, 2, 4}},
    {.path = "/chunk/rows", .tc = TC_I32, .ndim = 2, .dims = {101, 6},
     .chunk = {16, 6}}, /* whole-row chunks: read straight into place */
    {.path = "/chunk/u8_1d", .tc = TC_U8, .ndim = 1, .dims = {1000},
     .chunk = {64}},
    /* filtered */
    {.path = "/zip/i32_2d", .tc = TC_I32, .ndim = 2, .dims = {103, 11},
     .chunk = {10, 4}, .deflate = 4, .shuffle = 1},
    {.path = "/zip/f64_3d", .tc = TC_F64, .ndim = 3, .dims = {29, 3, 5},
     .chunk = {4, 2, 5}, .deflate = 1, .shuffle = 1},
    {.path = "/zip/rows_fl", .tc = TC_I64, .ndim = 2, .dims = {100, 5},
     .chunk = {16, 5}, .deflate = 6, .shuffle = 1, .fletcher = 1},
    {.path = "/zip/deflate_only", .tc = TC_I16, .ndim = 1, .dims = {999},
     .chunk = {100}, .deflate = 9},
};

/* Datasets written only in part. */
static const int32_t fill_i32 = -7;
static const double fill_f64 = 2.5;
static h5spec partial[] = {
    /* whole-row chunks, rows 30..55 written: chunks 0-2 and 6-9 unallocated */
    {.path = "/fill/rows", .tc = TC_I32, .ndim = 2, .dims = {100, 3},
     .chunk = {10, 3}, .fill = &fill_i32},
    /* partial-row chunks (the copy path) with deflate+shuffle */
    {.path = "/fill/tiles", .tc = TC_F64, .ndim = 2, .dims = {95, 7},
     .chunk = {10, 3}, .deflate = 3, .shuffle = 1, .fill = &fill_f64},
    /* contiguous, never written: no storage at all */
    {.path = "/fill/contig", .tc = TC_I32, .ndim = 2, .dims = {40, 2},
     .fill = &fill_i32},
    /* chunked, never written, default (zero) fill */
    {.path = "/fill/zero", .tc = TC_I16, .ndim = 2, .dims = {30, 4},
     .chunk = {7, 4}},
};

static void write_files(void) {
    for (size_t i = 0; i < sizeof specs / sizeof specs[0]; i++)
        h5gen_type(&specs[i]);
    for (size_t i = 0; i < sizeof partial / sizeof partial[0]; i++)
        h5gen_type(&partial[i]);
    hid_t fid = h5gen_create(g_file);
    for (size_t i = 0; i < sizeof specs / sizeof specs[0]; i++) {
        void *data = make_data(&specs[i]);
        h5gen_dataset(fid, &specs[i], data);
        free(data);
    }
    for (size_t i = 0; i < sizeof partial / sizeof partial[0]; i++) {
        void *data = make_data(&partial[i]);
        h5gen_dataset_rows(fid, &partial[i], data, 30, i < 2 ? 26 : 0);
        free(data);
    }
    /* vlen strings, a group, a scalar */
    hid_t st = H5Tcopy(H5T_C_S1);
    H5_OK(H5Tset_size(st, H5T_VARIABLE));
    hsize_t two = 2;
    hid_t sp = H5Screate_simple(1, &two, NULL);
    hid_t ds = H5Dcreate2(fid, "/vlen", st, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    const char *strs[2] = {"a", "bcd"};
    H5_OK(H5Dwrite(ds, st, H5S_ALL, H5S_ALL, H5P_DEFAULT, strs));
    H5Dclose(ds);
    H5Sclose(sp);
    H5Tclose(st);
    sp = H5Screate(H5S_SCALAR);
    ds = H5Dcreate2(fid, "/scalar", H5T_NATIVE_INT32, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Dclose(ds);
    H5Sclose(sp);
    H5Fclose(fid);
}

static void check_errors(void) {
    ml_layout *L = NULL;
    ml_error err;

    ml_error_clear(&err);
    CHECK_ERR(ml_layout_open(check_path("nope.h5"), "/x", &L, &err), -ENOENT);
    CHECK(strstr(err.msg, "nope.h5") != NULL);

    const char *txt = check_path("text.h5");
    FILE *fp = fopen(txt, "w");
    CHECK(fp != NULL);
    for (int i = 0; i < 200; i++)
        fputs("this is not an HDF5 file\n", fp);
    fclose(fp);
    ml_error_clear(&err);
    CHECK_ERR(ml_layout_open(txt, "/x", &L, &err), -ML_ENOTHDF5);
    CHECK(strstr(err.msg, "text.h5") != NULL);
    fp = fopen(check_path("empty.h5"), "w");
    fclose(fp);
    CHECK_ERR(ml_layout_open(check_path("empty.h5"), "/x", &L, NULL), -ML_ENOTHDF5);
    CHECK_ERR(ml_layout_open(check_tmpdir(), "/x", &L, NULL), -EISDIR);

    ml_error_clear(&err);
    CHECK_ERR(ml_layout_open(g_file, "/no/such/path", &L, &err), -ML_ENOTFOUND);
    CHECK(strstr(err.msg, "/no/such/path") != NULL);
    ml_error_clear(&err);
    CHECK_ERR(ml_layout_open(g_file, "/chunk", &L, &err), -ML_ENOTDSET);
    CHECK(strstr(err.msg, "group") != NULL);
    ml_error_clear(&err);
    CHECK_ERR(ml_layout_open(g_file, "/vlen", &L, &err), -ML_ETYPE);
    CHECK(strstr(err.msg, "variable-length string") != NULL);
    ml_error_clear(&err);
    CHECK_ERR(ml_layout_open(g_file, "/scalar", &L, &err), -ML_ESHAPE);
    CHECK(L == NULL);
}

/* Damage stored chunks in a copy of the file: errors name the chunk. */
static void check_damage(void) {
    const char *bad = check_path("damaged.h5");
    char cmd[800];
    snprintf(cmd, sizeof cmd, "cp '%s' '%s'", g_file, bad);
    CHECK_EQ(system(cmd), 0);
    const char *paths[2] = {"/zip/i32_2d", "/zip/rows_fl"};
    const int want[2] = {-ML_ECORRUPT, -ML_ECHECKSUM};
    for (int p = 0; p < 2; p++) {
        ml_layout *L;
        ml_error err;
        ml_error_clear(&err);
        CHECK_RC(ml_layout_open(bad, paths[p], &L, &err));
        ml_chunk_info ci;
        CHECK_RC(ml_layout_chunk(L, 1, &ci, &err));
        CHECK(ci.addr != UINT64_MAX);
        /* Overwrite the middle of chunk 1's stored bytes. */
        int fd = open(bad, O_WRONLY);
        CHECK_GE(fd, 0);
        unsigned char junk[8] = {0xde, 0xad, 0xbe, 0xef, 0x01, 0x23, 0x45, 0x67};
        CHECK_EQ(pwrite(fd, junk, sizeof junk, (off_t)(ci.addr + ci.size / 2)), 8);
        close(fd);
        ml_fetcher *f;
        CHECK_RC(ml_fetcher_open(&f, L, ML_IO_PREAD, &err));
        unsigned char *buf = malloc(L->n_rows * L->row_bytes);
        ml_error_clear(&err);
        CHECK_ERR(ml_fetch_rows(f, 0, L->n_rows, buf, &err), want[p]);
        CHECK(strstr(err.msg, "chunk 1") != NULL);
        CHECK(strstr(err.msg, paths[p]) != NULL);
        /* Rows in other chunks still read (chunk row 0 is chunks 0..2 for the tiles). */
        uint64_t safe = p == 0 ? 20 : 40; /* rows whose chunks exclude chunk 1 */
        ml_error_clear(&err);
        CHECK_RC(ml_fetch_rows(f, safe, 5, buf, &err));
        ml_fetcher_close(f);
        ml_layout_unref(L);
        free(buf);
    }
}

int main(void) {
    unsetenv("MULTILOAD_IO");
    unsetenv("MULTILOAD_FAULTS");
    g_file = check_path("layouts.h5");
    write_files();

    int uring = 0;
    struct io_uring probe;
    if (io_uring_queue_init(4, &probe, 0) == 0) {
        io_uring_queue_exit(&probe);
        uring = 1;
    } else {
        printf("io_uring unavailable: checking the pread mode only\n");
    }
    for (int m = 0; m <= uring; m++) {
        ml_io_mode mode = m ? ML_IO_URING : ML_IO_PREAD;
        for (size_t i = 0; i < sizeof specs / sizeof specs[0]; i++)
            check_dataset(&specs[i], specs[i].chunk[0] ? ML_STORE_CHUNKED : ML_STORE_CONTIGUOUS, mode);
        for (size_t i = 0; i < sizeof partial / sizeof partial[0]; i++)
            check_dataset(&partial[i], partial[i].chunk[0] ? ML_STORE_CHUNKED : ML_STORE_CONTIGUOUS,
                          mode);
    }
    /* The never-written contiguous dataset has no storage: all fill. */
    ml_layout *L;
    CHECK_RC(ml_layout_open(g_file, "/fill/contig", &L, NULL));
    CHECK_U64_EQ(L->offset, UINT64_MAX);
    CHECK(L->fill != NULL);
    ml_layout_unref(L);
    /* A default all-zero fill keeps the memset fast path. */
    CHECK_RC(ml_layout_open(g_file, "/fill/zero", &L, NULL));
    CHECK(L->fill == NULL);
    ml_layout_unref(L);
    ml_layout_unref(NULL);

    check_errors();
    check_damage();
    CHECK_DONE();
}
