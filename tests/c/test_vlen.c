/* test_vlen.c - ml_vlen_open + ml_vlen_read against the rows written here
 * with the HDF5 C API: vlen of little-endian int32 (chunked, deflate), of
 * big-endian uint16 (the bytes must come out as stored: no conversion), of
 * an int16 array atom; empty rows; rows in any order with repeats, as one
 * run (hyperslab) and scattered (points); the open errors (missing file,
 * not HDF5, missing path) and what is refused (2-D and scalar vlen, vlen
 * of vlen) or is not a vlen dataset (group, plain dataset); variable-length
 * strings, 1-D never written (null: empty) and 2-D chunked with deflate and
 * edge chunks, against the strings written here;
 * threads reading at once beside ml_layout_open, all under one lock; and
 * damaged global heaps (a collection size below HDF5's minimum, an object
 * size that wraps HDF5's walk, an object index past the objects) read as
 * -ML_ECORRUPT naming the dataset and the row, not as a crash in HDF5. */
#include "check.h"

#include <pthread.h>

#include "h5gen.h"
#include "h5.h"
#include "vlen.h"

#define N_ROWS 100

static const char *g_file;

static size_t row_len(uint64_t r) { return (size_t)((r * 7) % 9); } /* 0 every 9th row */

/* Element k of row r of the dataset whose elements are `esize` bytes: the
 * bytes of r * 1000 + k, most significant first (so a big-endian file type
 * and these bytes agree, and a little-endian one differs from them). */
static void element(uint64_t r, size_t k, size_t esize, unsigned char *out) {
    uint64_t v = r * 1000 + k;
    for (size_t b = 0; b < esize; b++)
        out[b] = (unsigned char)(v >> (8 * ((esize - 1 - b) % 8)));
}

/* Write a 1-D vlen dataset of `base` (file and memory type alike, so the
 * bytes are stored as given). chunk 0: contiguous. */
static void write_vlen(hid_t fid, const char *path, hid_t base, hsize_t chunk, int deflate) {
    size_t esize = H5Tget_size(base);
    hid_t vt = H5Tvlen_create(base);
    hsize_t n = N_ROWS;
    hid_t sp = H5Screate_simple(1, &n, NULL);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    if (chunk) {
        H5_OK(H5Pset_chunk(dcpl, 1, &chunk));
        if (deflate)
            H5_OK(H5Pset_deflate(dcpl, 4));
    }
    hvl_t *rows = calloc(N_ROWS, sizeof *rows);
    for (uint64_t r = 0; r < N_ROWS; r++) {
        rows[r].len = row_len(r);
        rows[r].p = malloc(rows[r].len * esize + 1);
        for (size_t k = 0; k < rows[r].len; k++)
            element(r, k, esize, (unsigned char *)rows[r].p + k * esize);
    }
    hid_t ds = H5Dcreate2(fid, path, vt, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    if (ds < 0)
        FAIL("H5Dcreate2(%s) failed", path);
    H5_OK(H5Dwrite(ds, vt, H5S_ALL, H5S_ALL, H5P_DEFAULT, rows));
    for (uint64_t r = 0; r < N_ROWS; r++)
        free(rows[r].p);
    free(rows);
    H5Dclose(ds);
    H5Pclose(dcpl);
    H5Sclose(sp);
    H5Tclose(vt);
}

static void write_files(void) {
    hid_t fid = h5gen_create(g_file);
    write_vlen(fid, "/i32", H5T_STD_I32LE, 16, 1);
    write_vlen(fid, "/u16be", H5T_STD_U16BE, 0, 0);
    hsize_t three = 3;
    hid_t at = H5Tarray_create2(H5T_STD_I16LE, 1, &three);
    write_vlen(fid, "/arr", at, 0, 0);
    H5Tclose(at);

    hsize_t dims[2] = {2, 2}, two = 2;
    hid_t vi = H5Tvlen_create(H5T_NATIVE_INT32);
    hid_t sp = H5Screate_simple(2, dims, NULL);
    H5Dclose(H5Dcreate2(fid, "/v2d", vi, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
    H5Sclose(sp);
    sp = H5Screate(H5S_SCALAR);
    H5Dclose(H5Dcreate2(fid, "/scalar", vi, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
    H5Sclose(sp);
    hid_t vv = H5Tvlen_create(vi);
    sp = H5Screate_simple(1, &two, NULL);
    H5Dclose(H5Dcreate2(fid, "/vlen_of_vlen", vv, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
    H5Tclose(vv);
    hid_t st = H5Tcopy(H5T_C_S1);
    H5_OK(H5Tset_size(st, H5T_VARIABLE));
    H5Dclose(H5Dcreate2(fid, "/vlstr", st, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
    H5Tclose(st);
    H5Dclose(H5Dcreate2(fid, "/plain", H5T_NATIVE_INT32, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
    H5Sclose(sp);
    H5Tclose(vi);
    H5Gclose(H5Gcreate2(fid, "/grp", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
    H5Fclose(fid);
}

/* Read rows[0..n) and check every count and byte. */
static void check_read(ml_vlen *V, const uint64_t *rows, size_t n) {
    uint64_t *counts = calloc(n + 1, sizeof *counts);
    void *data = NULL;
    size_t nbytes = 0, esize = V->base->size, off = 0;
    ml_error err;
    ml_error_clear(&err);
    CHECK_RC(ml_vlen_read(V, rows, n, counts, &data, &nbytes, &err));
    CHECK(data != NULL);
    unsigned char want[16];
    for (size_t i = 0; i < n; i++) {
        CHECK_U64_EQ(counts[i], row_len(rows[i]));
        for (size_t k = 0; k < counts[i]; k++) {
            CHECK_LE(off + esize, nbytes);
            element(rows[i], k, esize, want);
            CHECK_MEM_EQ((unsigned char *)data + off, want, esize);
            off += esize;
        }
    }
    CHECK_EQ(off, nbytes);
    free(data);
    free(counts);
}

static void check_reads(const char *path, ml_type_kind kind, size_t esize, int big_endian) {
    ml_vlen *V = NULL;
    ml_error err;
    ml_error_clear(&err);
    CHECK_RC(ml_vlen_open(g_file, path, &V, &err));
    CHECK(V != NULL);
    CHECK_U64_EQ(V->n_rows, N_ROWS);
    CHECK_EQ(V->base->kind, kind);
    CHECK_EQ(V->base->size, esize);
    if (kind != ML_T_ARRAY)
        CHECK_EQ(V->base->big_endian, big_endian);

    uint64_t all[N_ROWS];
    for (uint64_t r = 0; r < N_ROWS; r++)
        all[r] = r;
    check_read(V, all, N_ROWS);                    /* one run: a hyperslab */
    check_read(V, all + 9, 1);                     /* an empty row alone */
    check_read(V, all + 40, 7);                    /* a run inside */
    uint64_t mixed[] = {99, 3, 3, 0, 50, 9, 3, 18, 99};
    check_read(V, mixed, sizeof mixed / sizeof mixed[0]); /* points, repeats, any order */
    check_read(V, all, 0);                         /* nothing */

    uint64_t bad[] = {5, N_ROWS};
    uint64_t counts[2];
    void *data = NULL;
    size_t nbytes = 1;
    ml_error_clear(&err);
    CHECK_ERR(ml_vlen_read(V, bad, 2, counts, &data, &nbytes, &err), -ML_EINVAL);
    CHECK(strstr(err.msg, path) != NULL);
    CHECK(data == NULL);
    CHECK_EQ(nbytes, 0);
    ml_vlen_close(V);
}

static void check_open_errors(void) {
    ml_vlen *V = (ml_vlen *)1;
    ml_error err;

    ml_error_clear(&err);
    CHECK_ERR(ml_vlen_open(check_path("nope.h5"), "/i32", &V, &err), -ENOENT);
    CHECK(V == NULL);
    CHECK(strstr(err.msg, "nope.h5") != NULL);
    const char *txt = check_path("text.h5");
    FILE *fp = fopen(txt, "w");
    CHECK(fp != NULL);
    for (int i = 0; i < 200; i++)
        fputs("this is not an HDF5 file\n", fp);
    fclose(fp);
    CHECK_ERR(ml_vlen_open(txt, "/i32", &V, NULL), -ML_ENOTHDF5);
    ml_error_clear(&err);
    CHECK_ERR(ml_vlen_open(g_file, "/no/such", &V, &err), -ML_ENOTFOUND);
    CHECK(strstr(err.msg, "/no/such") != NULL);

    /* Not variable-length datasets: 0 and no handle, err untouched. */
    const char *not_vlen[] = {"/grp", "/plain"};
    for (size_t i = 0; i < 2; i++) {
        V = (ml_vlen *)1;
        ml_error_clear(&err);
        CHECK_RC(ml_vlen_open(g_file, not_vlen[i], &V, &err));
        CHECK(V == NULL);
        CHECK_EQ(err.code, 0);
    }
    /* Variable-length, but not readable here: a clear refusal. */
    ml_error_clear(&err);
    CHECK_ERR(ml_vlen_open(g_file, "/v2d", &V, &err), -ML_ESHAPE);
    CHECK(strstr(err.msg, "2 dimensions") != NULL);
    CHECK_ERR(ml_vlen_open(g_file, "/scalar", &V, NULL), -ML_ESHAPE);
    ml_error_clear(&err);
    CHECK_ERR(ml_vlen_open(g_file, "/vlen_of_vlen", &V, &err), -ML_ETYPE);
    CHECK(strstr(err.msg, "variable-length sequence") != NULL);
    CHECK(V == NULL);
    ml_vlen_close(NULL);
}

/* The file's bytes, and the offset of its first global heap collection. */
static unsigned char *slurp(const char *fn, size_t *len) {
    FILE *fp = fopen(fn, "rb");
    CHECK(fp != NULL);
    fseek(fp, 0, SEEK_END);
    *len = (size_t)ftell(fp);
    fseek(fp, 0, SEEK_SET);
    unsigned char *b = malloc(*len);
    CHECK(b != NULL);
    CHECK_EQ(fread(b, 1, *len, fp), *len);
    fclose(fp);
    return b;
}

static size_t find_gcol(const unsigned char *b, size_t len) {
    for (size_t i = 0; i + 16 <= len; i++)
        if (memcmp(b + i, "GCOL", 4) == 0)
            return i;
    FAIL("no global heap collection");
}

static void put_le(unsigned char *p, uint64_t v, int n) {
    for (int i = 0; i < n; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static void spit(const char *fn, const unsigned char *b, size_t len) {
    FILE *fp = fopen(fn, "wb");
    CHECK(fp != NULL);
    CHECK_EQ(fwrite(b, 1, len, fp), len);
    fclose(fp);
}

/* Every row of `path` in `fn` either reads as before the damage (rows the
 * damage leaves alone) or fails with -ML_ECORRUPT naming path and its row;
 * at least one fails. */
static void check_corrupt_rows(const char *fn, const char *path) {
    ml_vlen *V = NULL;
    ml_error err;
    ml_error_clear(&err);
    CHECK_RC(ml_vlen_open(fn, path, &V, &err));
    int failed = 0;
    for (uint64_t r = 0; r < N_ROWS; r++) {
        uint64_t count = 0;
        void *data = NULL;
        size_t nbytes = 0;
        ml_error_clear(&err);
        int rc = ml_vlen_read(V, &r, 1, &count, &data, &nbytes, &err);
        if (rc == 0) {
            CHECK_U64_EQ(count, row_len(r));
            free(data);
            continue;
        }
        CHECK_ERR(rc, -ML_ECORRUPT);
        char row[32];
        snprintf(row, sizeof row, "row %llu:", (unsigned long long)r);
        CHECK(strstr(err.msg, path) != NULL && strstr(err.msg, row) != NULL && strstr(err.msg, fn) != NULL);
        CHECK(data == NULL);
        failed++;
    }
    CHECK_GT(failed, 0);
    ml_vlen_close(V);
}

static void check_damaged_heap(void) {
    const char *fn = check_path("heap.h5");
    hid_t fid = h5gen_create(fn);
    write_vlen(fid, "/i32", H5T_STD_I32LE, 16, 1); /* chunked, deflate: the core inflates the descriptors */
    write_vlen(fid, "/u16be", H5T_STD_U16BE, 0, 0);
    H5Fclose(fid);
    size_t len = 0;
    unsigned char *good = slurp(fn, &len), *bad = malloc(len);
    size_t at = find_gcol(good, len);
    CHECK(bad != NULL);

    memcpy(bad, good, len); /* a collection smaller than HDF5's minimum */
    put_le(bad + at + 8, 2048, 8);
    spit(fn, bad, len);
    check_corrupt_rows(fn, "/i32");
    check_corrupt_rows(fn, "/u16be");

    memcpy(bad, good, len); /* the first object's size wraps HDF5's walk to 0 */
    put_le(bad + at + 16 + 8, UINT64_MAX - 7, 8);
    spit(fn, bad, len);
    check_corrupt_rows(fn, "/i32");

    memcpy(bad, good, len); /* every object renumbered past what descriptors name */
    uint64_t size = 0;
    for (int i = 7; i >= 0; i--)
        size = size << 8 | bad[at + 8 + i];
    for (size_t p = at + 16; p + 16 <= at + size;) {
        unsigned idx = bad[p] | bad[p + 1] << 8;
        uint64_t osz = 0;
        for (int i = 7; i >= 0; i--)
            osz = osz << 8 | bad[p + 8 + i];
        if (idx == 0)
            break; /* the free space: the rest of the collection */
        put_le(bad + p, idx + 30000, 2);
        p += 16 + ((osz + 7) & ~(uint64_t)7);
    }
    spit(fn, bad, len);
    check_corrupt_rows(fn, "/u16be");

    spit(fn, good, len); /* undamaged, every row reads */
    ml_vlen *V = NULL;
    CHECK_RC(ml_vlen_open(fn, "/i32", &V, NULL));
    uint64_t all[N_ROWS];
    for (uint64_t r = 0; r < N_ROWS; r++)
        all[r] = r;
    check_read(V, all, N_ROWS);
    ml_vlen_close(V);
    free(bad);
    free(good);
}

typedef struct worker_arg {
    ml_vlen *V;
    uint64_t seed;
    int layouts;  /* 1: open and close ml_layouts instead (the same HDF5 lock) */
} worker_arg;

static void *worker(void *p) {
    worker_arg *a = p;
    for (int it = 0; it < 150; it++) {
        if (a->layouts) {
            ml_layout *L = NULL;
            CHECK_RC(ml_layout_open(g_file, "/plain", &L, NULL));
            ml_layout_unref(L);
            continue;
        }
        uint64_t rows[6];
        for (int i = 0; i < 6; i++)
            rows[i] = check_rand(&a->seed) % N_ROWS;
        check_read(a->V, rows, 6);
    }
    return NULL;
}

static void check_threads(void) {
    ml_vlen *V = NULL;
    CHECK_RC(ml_vlen_open(g_file, "/i32", &V, NULL));
    pthread_t th[5];
    worker_arg args[5];
    for (int i = 0; i < 5; i++) {
        args[i] = (worker_arg){.V = V, .seed = (uint64_t)i + 1, .layouts = i == 4};
        CHECK_EQ(pthread_create(&th[i], NULL, worker, &args[i]), 0);
    }
    for (int i = 0; i < 5; i++)
        CHECK_EQ(pthread_join(th[i], NULL), 0);
    ml_vlen_close(V);
}

/* String (r, c) of the 2-D string dataset: empty when (r + c) % 5 == 0. */
static void string_at(unsigned r, unsigned c, char *out, size_t len) {
    if ((r + c) % 5 == 0)
        out[0] = '\0';
    else
        snprintf(out, len, "s%u.%u%.*s", r, c, (int)((r * 3 + c) % 7), "xxxxxxx");
}

#define S_ROWS 9
#define S_COLS 5

static void write_strings(void) {
    hid_t fid = H5Fopen(g_file, H5F_ACC_RDWR, H5P_DEFAULT);
    hid_t st = H5Tcopy(H5T_C_S1);
    H5_OK(H5Tset_size(st, H5T_VARIABLE));
    H5_OK(H5Tset_cset(st, H5T_CSET_UTF8));
    hsize_t dims[2] = {S_ROWS, S_COLS}, chunk[2] = {4, 2};
    hid_t sp = H5Screate_simple(2, dims, NULL), dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5_OK(H5Pset_chunk(dcpl, 2, chunk));
    H5_OK(H5Pset_deflate(dcpl, 4));
    static char buf[S_ROWS * S_COLS][32];
    const char *ptrs[S_ROWS * S_COLS];
    for (unsigned r = 0; r < S_ROWS; r++)
        for (unsigned c = 0; c < S_COLS; c++) {
            string_at(r, c, buf[r * S_COLS + c], sizeof buf[0]);
            ptrs[r * S_COLS + c] = buf[r * S_COLS + c];
        }
    hid_t ds = H5Dcreate2(fid, "/str2d", st, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    H5_OK(H5Dwrite(ds, st, H5S_ALL, H5S_ALL, H5P_DEFAULT, ptrs));
    H5Dclose(ds);
    H5Pclose(dcpl);
    H5Sclose(sp);
    H5Tclose(st);
    H5Fclose(fid);
}

static void check_strings(void) {
    ml_vlen *V = NULL;
    ml_error err;
    ml_error_clear(&err);
    /* Never written: every string null, read as empty. */
    CHECK_RC(ml_vlen_open(g_file, "/vlstr", &V, &err));
    CHECK(V != NULL && V->is_string && V->ndim == 1 && V->inner == 1 && !V->str_utf8);
    uint64_t rows1[3] = {1, 0, 1}, c1[3] = {9, 9, 9}; /* /vlstr has 2 rows */
    void *data = NULL;
    size_t nbytes = 1;
    CHECK_RC(ml_vlen_read(V, rows1, 3, c1, &data, &nbytes, &err));
    CHECK_EQ(nbytes, 0);
    CHECK(c1[0] == 0 && c1[1] == 0 && c1[2] == 0);
    free(data);
    ml_vlen_close(V);

    CHECK_RC(ml_vlen_open(g_file, "/str2d", &V, &err));
    CHECK(V != NULL && V->is_string && V->str_utf8 && V->ndim == 2);
    CHECK_EQ(V->n_rows, S_ROWS);
    CHECK_EQ(V->inner, S_COLS);
    /* Scattered rows with a repeat (points), then a run (a hyperslab). */
    uint64_t sets[2][4] = {{8, 1, 8, 4}, {2, 3, 4, 5}};
    for (int t = 0; t < 2; t++) {
        uint64_t counts[4 * S_COLS];
        CHECK_RC(ml_vlen_read(V, sets[t], 4, counts, &data, &nbytes, &err));
        const char *p = data;
        size_t used = 0;
        for (unsigned i = 0; i < 4; i++)
            for (unsigned c = 0; c < S_COLS; c++) {
                char want[32];
                string_at((unsigned)sets[t][i], c, want, sizeof want);
                CHECK_EQ(counts[i * S_COLS + c], strlen(want));
                CHECK(memcmp(p + used, want, strlen(want)) == 0);
                used += strlen(want);
            }
        CHECK_EQ(used, nbytes);
        free(data);
    }
    ml_vlen_close(V);
}

int main(void) {
    g_file = check_path("vlen.h5");
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    write_files();
    check_reads("/i32", ML_T_INT, 4, 0);
    check_reads("/u16be", ML_T_UINT, 2, 1);
    check_reads("/arr", ML_T_ARRAY, 6, 0);
    check_open_errors();
    write_strings();
    check_strings();
    check_threads();
    check_damaged_heap();
    CHECK_DONE();
}
