/* test_chunk_index.c - the one-pass chunk table (chunk_index.c walks the
 * v1 B-tree, h5chunks.c checks and publishes it) against HDF5's own answer
 * for each chunk (H5Dget_chunk_info_by_coord) and the rows read through it
 * against H5Dread: 1-D, 2-D and 3-D datasets with edge chunks; partly
 * unallocated chunks with a fill value; deflate, shuffle and fletcher32,
 * with some chunks written raw under a filter mask; a user block; B-trees
 * of one, two and three levels (up to 20 000 chunks); a dataset with no
 * chunk written; libver latest (fixed and extensible array indexes, walked
 * by chunk_index4.c); entries looked up before the fill; a walk that
 * disagrees with HDF5 (the file changed under it) or meets a broken index
 * (fallback); random damage to the index (an error, never a crash or an
 * entry off the grid); threads racing the fill. */
#include "check.h"

#include <fcntl.h>
#include <pthread.h>
#include <sys/stat.h>

#include "chunk_index.h"
#include "h5internal.h"
#include "fetch.h"
#include "h5gen.h"
#include "h5.h"
#include "io.h"

/* Rows of dataset `path`: each element a distinct value. */
static void *make_data(const h5spec *s) {
    size_t n = h5gen_elems(s), esz = H5Tget_size(s->type);
    unsigned char *p = malloc(n * esz);
    for (size_t i = 0; i < n; i++) {
        uint64_t v = i * 0x9E3779B1u + 777;
        memcpy(p + i * esz, &v, esz);
    }
    return p;
}

static ml_layout *open_layout(const char *file, const char *path) {
    ml_layout *L = NULL;
    ml_error err;
    ml_error_clear(&err);
    int rc = ml_layout_open(file, path, &L, &err);
    if (rc)
        FAIL("ml_layout_open(%s, %s): %d %s", file, path, rc, err.msg);
    CHECK_EQ(L->storage, ML_STORE_CHUNKED);
    return L;
}

/* HDF5's answer for chunk `index`, as a file offset: HDF5 before 1.14.4
 * reports addresses relative to the user block. */
static ml_chunk_info truth_chunk(hid_t ds, const ml_layout *L, uint64_t userblock, uint64_t index) {
    hsize_t coord[ML_MAX_DIMS];
    uint64_t rest = index;
    for (int d = (int)L->ndim - 1; d >= 0; d--) {
        coord[d] = (rest % L->grid[d]) * L->chunk[d];
        rest /= L->grid[d];
    }
    unsigned mask = 0, maj, min, rel;
    haddr_t addr = HADDR_UNDEF;
    hsize_t size = 0;
    H5_OK(H5Dget_chunk_info_by_coord(ds, coord, &mask, &addr, &size));
    H5_OK(H5get_libversion(&maj, &min, &rel));
    int absolute = maj > 1 || (maj == 1 && (min > 14 || (min == 14 && rel >= 4)));
    ml_chunk_info ci = {.addr = UINT64_MAX, .size = size, .filter_mask = mask};
    if (addr != HADDR_UNDEF)
        ci.addr = addr + (absolute ? 0 : userblock);
    return ci;
}

/* Every `stride`-th entry of L's table (and the last) equals HDF5's answer. */
static void compare_table(ml_layout *L, const char *file, const char *path, uint64_t userblock,
                          uint64_t stride, uint64_t *n_alloc, unsigned *any_mask) {
    hid_t fid = H5Fopen(file, H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t ds = fid < 0 ? -1 : H5Dopen2(fid, path, H5P_DEFAULT);
    if (ds < 0)
        FAIL("cannot open %s in %s", path, file);
    *n_alloc = 0;
    *any_mask = 0;
    for (uint64_t i = 0; L->n_chunks; i += stride) {
        if (i >= L->n_chunks)
            i = L->n_chunks - 1;
        ml_chunk_info want = truth_chunk(ds, L, userblock, i), got;
        if (!ml_chunk_table_get(&ml_h5(L)->table, i, &got))
            FAIL("%s chunk %llu of %llu is not in the table", path, (unsigned long long)i,
                 (unsigned long long)L->n_chunks);
        /* Read through HDF5 (an index the core does not parse): no address,
         * and the filter mask comes with the bytes. */
        if (got.addr == ML_CHUNK_VIA_FORMAT && want.addr != UINT64_MAX) {
            got.addr = want.addr;
            got.filter_mask = want.filter_mask;
        }
        if (got.addr != want.addr || got.size != want.size || got.filter_mask != want.filter_mask)
            FAIL("%s chunk %llu: table (%llu, %llu, %#x), HDF5 (%llu, %llu, %#x)", path, (unsigned long long)i,
                 (unsigned long long)got.addr, (unsigned long long)got.size, got.filter_mask,
                 (unsigned long long)want.addr, (unsigned long long)want.size, want.filter_mask);
        *n_alloc += want.addr != UINT64_MAX;
        *any_mask |= want.filter_mask;
        if (i == L->n_chunks - 1)
            break;
    }
    H5Dclose(ds);
    H5Fclose(fid);
}

/* All rows through the table, in blocks of `block`, equal H5Dread's. */
static void compare_rows(ml_layout *L, const char *file, const char *path, hid_t type, uint64_t block) {
    ml_fetcher *f = NULL;
    ml_error err;
    ml_error_clear(&err);
    CHECK_RC(ml_fetcher_open(&f, L, ML_IO_PREAD, &err));
    size_t bytes = L->n_rows * L->row_bytes;
    unsigned char *got = malloc(bytes + 1), *want = malloc(bytes + 1);
    for (uint64_t r = 0; r < L->n_rows; r += block) {
        uint64_t n = r + block <= L->n_rows ? block : L->n_rows - r;
        int rc = ml_fetch_rows(f, r, n, got + r * L->row_bytes, &err);
        if (rc)
            FAIL("%s rows %llu+%llu: %d %s", path, (unsigned long long)r, (unsigned long long)n, rc, err.msg);
    }
    h5gen_read_rows(file, path, type, 0, L->n_rows, want);
    for (size_t i = 0; i < bytes; i++)
        if (got[i] != want[i])
            FAIL("%s: byte %zu (row %zu) is %02x, HDF5 says %02x", path, i, i / L->row_bytes, got[i], want[i]);
    free(got);
    free(want);
    ml_fetcher_close(f);
}

/* Look up every `stride`-th chunk and the last by ml_layout_chunk. */
static void lookup_sample(ml_layout *L, uint64_t stride) {
    ml_chunk_info ci;
    ml_error err;
    for (uint64_t i = 0; i < L->n_chunks; i += stride)
        CHECK_RC(ml_layout_chunk(L, i, &ci, &err));
    CHECK_RC(ml_layout_chunk(L, L->n_chunks - 1, &ci, &err));
}

/* Open, fill in one pass, expect `state`, compare table and rows. */
static ml_layout *check_dataset(const char *file, const char *path, hid_t type, uint64_t userblock,
                                ml_table_state state, uint64_t stride, uint64_t block) {
    ml_layout *L = open_layout(file, path);
    ml_table_state st = ml_layout_fill_table(L);
    if (st != state)
        FAIL("%s: table state %d, want %d (%s)", path, (int)st, (int)state, ml_h5(L)->table_why ? ml_h5(L)->table_why : "-");
    uint64_t n_alloc;
    unsigned mask;
    if (st == ML_TABLE_FALLBACK)
        lookup_sample(L, stride);
    compare_table(L, file, path, userblock, stride, &n_alloc, &mask);
    compare_rows(L, file, path, type, block);
    return L;
}

static void write_set(hid_t fid, h5spec *s, hsize_t row0, hsize_t nrows) {
    h5gen_type(s);
    void *data = make_data(s);
    h5gen_dataset_rows(fid, s, data, row0, nrows);
    free(data);
}

/* Shapes, edges, fill, filters: each dataset in its own call. */
static h5spec g_specs[] = {
    {.path = "one_d", .tc = TC_I32, .ndim = 1, .dims = {1000}, .chunk = {7}},                   /* 143 chunks: 2 levels */
    {.path = "two_d", .tc = TC_I16, .ndim = 2, .dims = {100, 30}, .chunk = {7, 8}},             /* 15 x 4, both edges */
    {.path = "three_d", .tc = TC_F64, .ndim = 3, .dims = {20, 9, 10}, .chunk = {3, 4, 5}},      /* 7 x 3 x 2 */
    {.path = "small", .tc = TC_U8, .ndim = 2, .dims = {50, 5}, .chunk = {10, 5}},               /* 5 chunks: root is a leaf */
    {.path = "gz", .tc = TC_I64, .ndim = 2, .dims = {300, 6}, .chunk = {4, 6}, .deflate = 4, .shuffle = 1,
     .fletcher = 1},
    {.path = "be", .tc = TC_U16BE, .ndim = 2, .dims = {77, 3}, .chunk = {5, 2}, .deflate = 1},
};

static void test_shapes(uint64_t userblock) {
    const char *file = check_path(userblock ? "shapes-ub.h5" : "shapes.h5");
    hid_t fid = h5gen_create_ex(file, userblock, 0);
    for (size_t i = 0; i < sizeof g_specs / sizeof g_specs[0]; i++) {
        h5spec s = g_specs[i];
        write_set(fid, &s, 0, s.dims[0]);
    }
    /* Partly written: rows 20..55 and 80..90 of 100, the rest fill. */
    int32_t fill = -7;
    h5spec part = {.path = "grp/partial", .tc = TC_I32, .ndim = 2, .dims = {100, 12}, .chunk = {6, 5}, .fill = &fill};
    h5gen_type(&part);
    void *data = make_data(&part);
    h5gen_dataset_rows(fid, &part, data, 20, 36);
    hid_t ds = H5Dopen2(fid, part.path, H5P_DEFAULT);
    hid_t space = H5Dget_space(ds);
    hsize_t start[2] = {80, 0}, count[2] = {11, 12};
    H5_OK(H5Sselect_hyperslab(space, H5S_SELECT_SET, start, NULL, count, NULL));
    hid_t mspace = H5Scopy(space);
    H5_OK(H5Dwrite(ds, H5T_NATIVE_INT32, mspace, space, H5P_DEFAULT, data));
    H5Sclose(mspace);
    H5Sclose(space);
    H5Dclose(ds);
    free(data);
    /* Never written: no B-tree at all. */
    h5spec empty = {.path = "empty", .tc = TC_I32, .ndim = 2, .dims = {40, 4}, .chunk = {8, 4}};
    write_set(fid, &empty, 0, 0);
    H5Fclose(fid);

    for (size_t i = 0; i < sizeof g_specs / sizeof g_specs[0]; i++) {
        h5spec s = g_specs[i];
        h5gen_type(&s);
        ml_layout *L = check_dataset(file, s.path, s.type, userblock, ML_TABLE_WALKED, 1, 13);
        CHECK_EQ(ml_h5(L)->cindex.kind, ML_CHUNK_INDEX_BTREE1);
        ml_layout_unref(L);
    }
    uint64_t n_alloc;
    unsigned mask;
    ml_layout *L = check_dataset(file, part.path, H5T_NATIVE_INT32, userblock, ML_TABLE_WALKED, 1, 9);
    compare_table(L, file, part.path, userblock, 1, &n_alloc, &mask);
    CHECK_GT(n_alloc, 0);
    CHECK_LT(n_alloc, L->n_chunks); /* some chunks really are unallocated */
    ml_layout_unref(L);
    L = check_dataset(file, "empty", H5T_NATIVE_INT32, userblock, ML_TABLE_WALKED, 1, 7);
    compare_table(L, file, "empty", userblock, 1, &n_alloc, &mask);
    CHECK_EQ(n_alloc, 0);
    ml_layout_unref(L);
}

/* Deflate + shuffle with some chunks written raw (both filters skipped:
 * filter mask 3), so the table must carry each chunk's own mask. */
static void test_filter_mask(void) {
    const char *file = check_path("mask.h5");
    hid_t fid = h5gen_create_ex(file, 0, 0);
    h5spec s = {.path = "m", .tc = TC_I32, .ndim = 2, .dims = {400, 6}, .chunk = {4, 6}, .deflate = 6, .shuffle = 1};
    h5gen_type(&s);
    int32_t *data = make_data(&s);
    h5gen_dataset(fid, &s, data);
    hid_t ds = H5Dopen2(fid, s.path, H5P_DEFAULT);
    for (hsize_t c = 3; c < 100; c += 7) {
        hsize_t off[2] = {c * 4, 0};
        H5_OK(H5Dwrite_chunk(ds, H5P_DEFAULT, 3, off, 4 * 6 * sizeof(int32_t), data + c * 4 * 6));
    }
    H5Dclose(ds);
    H5Fclose(fid);
    free(data);
    ml_layout *L = check_dataset(file, s.path, s.type, 0, ML_TABLE_WALKED, 1, 17);
    uint64_t n_alloc;
    unsigned mask;
    compare_table(L, file, s.path, 0, 1, &n_alloc, &mask);
    CHECK_EQ(mask, 3);
    ml_chunk_info c3, c4;
    CHECK(ml_chunk_table_get(&ml_h5(L)->table, 3, &c3) && ml_chunk_table_get(&ml_h5(L)->table, 4, &c4));
    CHECK_EQ(c3.filter_mask, 3);
    CHECK_EQ(c4.filter_mask, 0);
    ml_layout_unref(L);
}

/* 20 000 chunks: a three-level B-tree. Every 37th entry against HDF5 (each
 * of its look-ups is O(n)); every row against H5Dread. */
static const char *write_big(uint64_t userblock) {
    const char *file = check_path(userblock ? "big-ub.h5" : "big.h5");
    hid_t fid = h5gen_create_ex(file, userblock, 0);
    h5spec s = {.path = "big", .tc = TC_I16, .ndim = 2, .dims = {20000, 3}, .chunk = {1, 3}};
    write_set(fid, &s, 0, s.dims[0]);
    h5spec g = {.path = "big_gz", .tc = TC_I32, .ndim = 1, .dims = {30000}, .chunk = {3}, .deflate = 1};
    write_set(fid, &g, 0, g.dims[0]);
    H5Fclose(fid);
    return file;
}

static void test_big(void) {
    for (uint64_t ub = 0; ub <= 4096; ub += 4096) {
        const char *file = write_big(ub);
        ml_layout *L = check_dataset(file, "big", H5T_NATIVE_INT16, ub, ML_TABLE_WALKED, 37, 256);
        CHECK_EQ(L->n_chunks, 20000);
        ml_layout_unref(L);
        L = check_dataset(file, "big_gz", H5T_NATIVE_INT32, ub, ML_TABLE_WALKED, 101, 999);
        ml_layout_unref(L);
    }
}

/* libver latest: layout version 4. Fixed array (fixed shape), extensible
 * array (unlimited rows), single chunk, implicit (early allocation):
 * walked by chunk_index4.c, every entry HDF5's, and the rows HDF5's. */
static void test_latest(void) {
    const char *file = check_path("latest.h5");
    hid_t fid = h5gen_create_ex(file, 0, 1);
    struct {
        const char *path;
        hsize_t dims[2], chunk[2];
        int unlimited, early, deflate;
        ml_chunk_index_kind kind;
    } cases[] = {
        {"farray", {300, 4}, {2, 4}, 0, 0, 0, ML_CHUNK_INDEX_FARRAY},
        {"farray_gz", {300, 4}, {3, 3}, 0, 0, 1, ML_CHUNK_INDEX_FARRAY},
        {"earray", {300, 4}, {2, 4}, 1, 0, 0, ML_CHUNK_INDEX_EARRAY},
        {"single", {30, 4}, {30, 4}, 0, 0, 0, ML_CHUNK_INDEX_SINGLE},
        {"implicit", {60, 4}, {7, 4}, 0, 1, 0, ML_CHUNK_INDEX_IMPLICIT},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        h5spec s = {.path = cases[i].path, .tc = TC_I32, .ndim = 2};
        memcpy(s.dims, cases[i].dims, sizeof cases[i].dims);
        h5gen_type(&s);
        hsize_t maxdims[2] = {cases[i].unlimited ? H5S_UNLIMITED : s.dims[0], s.dims[1]};
        hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
        H5_OK(H5Pset_chunk(dcpl, 2, cases[i].chunk));
        if (cases[i].early)
            H5_OK(H5Pset_alloc_time(dcpl, H5D_ALLOC_TIME_EARLY));
        if (cases[i].deflate)
            H5_OK(H5Pset_deflate(dcpl, 1));
        hid_t space = H5Screate_simple(2, s.dims, maxdims);
        hid_t ds = H5Dcreate2(fid, s.path, s.type, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
        if (ds < 0)
            FAIL("H5Dcreate2(%s)", s.path);
        void *data = make_data(&s);
        H5_OK(H5Dwrite(ds, s.type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data));
        free(data);
        H5Dclose(ds);
        H5Sclose(space);
        H5Pclose(dcpl);
    }
    H5Fclose(fid);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ml_layout *L = check_dataset(file, cases[i].path, H5T_NATIVE_INT32, 0, ML_TABLE_WALKED, 1, 11);
        CHECK_EQ(ml_h5(L)->cindex.layout_version, 4);
        CHECK_EQ(ml_h5(L)->cindex.kind, cases[i].kind);
        CHECK(ml_h5(L)->table_why == NULL);
        ml_layout_unref(L);
    }
}

/* Random damage to a copy of the file's B-tree nodes and object header:
 * the walk returns 0 or an error, emits only grid chunks in increasing
 * order, and never crashes. */
typedef struct emit_count {
    uint64_t n, last, n_chunks;
} emit_count;

static int count_one(void *ctx, uint64_t index, uint64_t offset, uint64_t size, unsigned mask) {
    emit_count *c = ctx;
    (void)offset, (void)size, (void)mask;
    CHECK_LT(index, c->n_chunks);
    if (c->n)
        CHECK_GT(index, c->last);
    c->last = index;
    c->n++;
    return 0;
}

/* Object headers grown by 40 attributes added after the dataset, so they
 * span continuation blocks: version 1 (default format), and version 2
 * ("OHDR", libver v18), which still holds a version 3 layout message, so
 * the B-tree is walked. */
static void test_grown_headers(int v18) {
    const char *file = check_path(v18 ? "v18.h5" : "earliest-attrs.h5");
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (v18)
        H5_OK(H5Pset_libver_bounds(fapl, H5F_LIBVER_V18, H5F_LIBVER_V18));
    hid_t fid = H5Fcreate(file, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    CHECK_GE(fid, 0);
    H5Pclose(fapl);
    h5spec s = {.path = "v18", .tc = TC_I32, .ndim = 2, .dims = {500, 8}, .chunk = {3, 5}};
    h5gen_type(&s);
    /* Attributes stay in the header (no dense storage): it must grow. */
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5_OK(H5Pset_chunk(dcpl, 2, s.chunk));
    H5_OK(H5Pset_deflate(dcpl, 1));
    if (v18)
        H5_OK(H5Pset_attr_phase_change(dcpl, 200, 150));
    hid_t space = H5Screate_simple(2, s.dims, NULL);
    hid_t ds = H5Dcreate2(fid, s.path, s.type, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    CHECK_GE(ds, 0);
    void *data = make_data(&s);
    H5_OK(H5Dwrite(ds, s.type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data));
    free(data);
    H5Sclose(space);
    H5Pclose(dcpl);
    hid_t as = H5Screate(H5S_SCALAR);
    for (int i = 0; i < 40; i++) {
        char name[32];
        snprintf(name, sizeof name, "attribute_number_%d", i);
        hid_t a = H5Acreate2(ds, name, H5T_NATIVE_INT32, as, H5P_DEFAULT, H5P_DEFAULT);
        H5_OK(H5Awrite(a, H5T_NATIVE_INT32, &i));
        H5Aclose(a);
    }
    H5Sclose(as);
    H5O_info_t oi;
    H5_OK(H5Oget_info2(ds, &oi, H5O_INFO_BASIC | H5O_INFO_HDR));
    CHECK_EQ(oi.hdr.version, v18 ? 2 : 1);
    CHECK_GT(oi.hdr.nchunks, 1);
    H5Dclose(ds);
    H5Fclose(fid);
    ml_layout *L = check_dataset(file, s.path, s.type, 0, ML_TABLE_WALKED, 1, 10);
    CHECK_EQ(ml_h5(L)->cindex.layout_version, 3);
    ml_layout_unref(L);
}

/* Object headers built byte by byte: version 1 with a continuation block,
 * version 2 with its prefix options and an OCHK block, loops, a shared
 * layout message. */
static void put_le(unsigned char *p, uint64_t v, unsigned n) {
    for (unsigned i = 0; i < n; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static size_t v1_msg(unsigned char *p, unsigned type, unsigned flags, const unsigned char *data, size_t n) {
    size_t padded = (n + 7) / 8 * 8;
    put_le(p, type, 2);
    put_le(p + 2, padded, 2);
    p[4] = (unsigned char)flags;
    memset(p + 5, 0, 3 + padded);
    memcpy(p + 8, data, n);
    return 8 + padded;
}

static size_t v2_msg(unsigned char *p, unsigned type, const unsigned char *data, size_t n, int crt_order) {
    p[0] = (unsigned char)type;
    put_le(p + 1, n, 2);
    p[3] = 0;
    size_t h = crt_order ? 6 : 4;
    memset(p + 4, 0, h - 4);
    memcpy(p + h, data, n);
    return h + n;
}

static void test_crafted_headers(void) {
    for (uint64_t base = 0; base <= 512; base += 512) {
        unsigned char f[4096];
        memset(f, 0xAA, sizeof f);
        unsigned char *b = f + base, cont[16], lay3[23], lay4[21];
        /* layout v3: version, class 2, 3 dims, B-tree address 3000, dims 10 5 4 */
        lay3[0] = 3, lay3[1] = 2, lay3[2] = 3;
        put_le(lay3 + 3, 3000, 8);
        put_le(lay3 + 11, 10, 4), put_le(lay3 + 15, 5, 4), put_le(lay3 + 19, 4, 4);
        /* layout v4 fixed array: dims on 2 bytes, page bits 10, address 3500 */
        lay4[0] = 4, lay4[1] = 2, lay4[2] = 0, lay4[3] = 3, lay4[4] = 2;
        put_le(lay4 + 5, 10, 2), put_le(lay4 + 7, 5, 2), put_le(lay4 + 9, 4, 2);
        lay4[11] = 3, lay4[12] = 10;
        put_le(lay4 + 13, 3500, 8);

        /* v1 at 64: a NIL message, a continuation to 200 (layout v3 there). */
        unsigned char *h = b + 64;
        h[0] = 1, h[1] = 0;
        put_le(h + 2, 3, 2), put_le(h + 4, 1, 4);
        memset(h + 12, 0, 4);
        size_t n = v1_msg(h + 16, 0, 0, (const unsigned char *)"\0\0\0", 3);
        put_le(cont, 200, 8), put_le(cont + 8, 32, 8);
        n += v1_msg(h + 16 + n, 0x10, 0, cont, 16);
        put_le(h + 8, n, 4);
        v1_msg(b + 200, 8, 0, lay3, sizeof lay3);
        /* v2 at 300: times, attribute phase, creation order, 2-byte chunk
         * size; a continuation to 500 (OCHK: a NIL, the v4 layout). */
        h = b + 300;
        memcpy(h, "OHDR", 4);
        h[4] = 2, h[5] = 0x20 | 0x10 | 0x04 | 0x01;
        memset(h + 6, 0, 20);
        put_le(cont, 500, 8), put_le(cont + 8, 4 + 6 + 2 + 6 + sizeof lay4 + 4, 8);
        n = v2_msg(h + 28, 0x10, cont, 16, 1);
        put_le(h + 26, n + 3, 2); /* 3 bytes of gap */
        memcpy(b + 500, "OCHK", 4);
        n = 4 + v2_msg(b + 504, 0, (const unsigned char *)"\0\0", 2, 1);
        n += v2_msg(b + 500 + n, 8, lay4, sizeof lay4, 1);
        /* v2 at 700: 1-byte chunk size, layout v3 in chunk 0. */
        h = b + 700;
        memcpy(h, "OHDR", 4);
        h[4] = 2, h[5] = 0;
        n = v2_msg(h + 7, 8, lay3, sizeof lay3, 0);
        h[6] = (unsigned char)n;
        /* v1 at 800: a continuation to itself, forever. */
        h = b + 800;
        h[0] = 1, h[1] = 0;
        put_le(cont, 816, 8), put_le(cont + 8, 24, 8);
        n = v1_msg(h + 16, 0x10, 0, cont, 16);
        put_le(h + 8, n, 4);
        /* v1 at 900: a shared layout message (flag 0x02). */
        h = b + 900;
        h[0] = 1, h[1] = 0;
        n = v1_msg(h + 16, 8, 0x02, lay3, sizeof lay3);
        put_le(h + 8, n, 4);
        /* v1 at 1000: a message longer than its chunk. */
        h = b + 1000;
        h[0] = 1, h[1] = 0;
        n = v1_msg(h + 16, 8, 0, lay3, sizeof lay3);
        put_le(h + 8, n - 8, 4);

        const char *file = check_path("crafted.h5");
        int fd = open(file, O_RDWR | O_CREAT | O_TRUNC, 0600);
        CHECK_EQ(write(fd, f, sizeof f), (ssize_t)sizeof f);
        ml_source *src = NULL;
        CHECK_RC(ml_source_posix_adopt(fd, &src));
        ml_chunk_file cf = {.src = src, .base = base, .size = sizeof f, .sizeof_addr = 8, .sizeof_size = 8,
                            .btree_k = 32};
        ml_chunk_index ix;
        CHECK_RC(ml_chunk_index_locate(&cf, 64, &ix));
        CHECK_EQ(ix.kind, ML_CHUNK_INDEX_BTREE1);
        CHECK_EQ(ix.ndims, 3);
        CHECK_U64_EQ(ix.addr, 3000);
        CHECK_U64_EQ(ix.dims[0], 10);
        CHECK_U64_EQ(ix.dims[1], 5);
        CHECK_U64_EQ(ix.dims[2], 4);
        CHECK_RC(ml_chunk_index_locate(&cf, 300, &ix));
        CHECK_EQ(ix.kind, ML_CHUNK_INDEX_FARRAY);
        CHECK_EQ(ix.layout_version, 4);
        CHECK_U64_EQ(ix.addr, 3500);
        CHECK_U64_EQ(ix.dims[2], 4);
        CHECK_RC(ml_chunk_index_locate(&cf, 700, &ix));
        CHECK_EQ(ix.kind, ML_CHUNK_INDEX_BTREE1);
        CHECK_ERR(ml_chunk_index_locate(&cf, 800, &ix), -ML_ECORRUPT);
        CHECK_RC(ml_chunk_index_locate(&cf, 900, &ix));
        CHECK_EQ(ix.kind, ML_CHUNK_INDEX_NONE);
        CHECK_ERR(ml_chunk_index_locate(&cf, 1000, &ix), -ML_ECORRUPT);
        /* A B-tree address with no node there. */
        ix = (ml_chunk_index){.kind = ML_CHUNK_INDEX_BTREE1, .ndims = 2, .dims = {4, 8}, .addr = 3000};
        uint64_t dims[1] = {40};
        emit_count c = {.n_chunks = 10};
        CHECK_ERR(ml_chunk_index_walk(&cf, &ix, 1, dims, NULL, count_one, &c), -ML_ECORRUPT);
        ix.addr = sizeof f;
        CHECK_ERR(ml_chunk_index_walk(&cf, &ix, 1, dims, NULL, count_one, &c), -ML_ECORRUPT);
        CHECK_ERR(ml_chunk_index_walk(&cf, &ix, 2, dims, NULL, count_one, &c), -ML_EINVAL);
        ml_source_unref(src); /* closes fd */
    }
}

/* Look-ups one at a time first (in a v1 B-tree by our own descent by
 * key, no HDF5 scan), each equal to HDF5's answer; after
 * LOOKUPS_BEFORE_FILL (8) of them the next miss fills the table in one
 * pass, keeping what was answered. */
static void test_lookups_then_fill(const char *file) {
    ml_layout *L = open_layout(file, "big");
    ml_error err;
    ml_chunk_info ci;
    uint64_t order[] = {19999, 5, 12000, 0, 1, 7777, 3, 4};
    for (size_t i = 0; i < 8; i++) {
        CHECK_RC(ml_layout_chunk(L, order[i], &ci, &err));
        CHECK(ci.bad == NULL);
    }
    CHECK_EQ(ml_h5(L)->table_state, ML_TABLE_LAZY);
    CHECK_EQ(ml_h5(L)->lookups, 8);
    CHECK(!ml_chunk_table_get(&ml_h5(L)->table, 6, &ci));
    uint64_t n_alloc;
    unsigned mask;
    {
        hid_t fid = H5Fopen(file, H5F_ACC_RDONLY, H5P_DEFAULT), ds = H5Dopen2(fid, "big", H5P_DEFAULT);
        for (size_t i = 0; i < 8; i++) {
            ml_chunk_info want = truth_chunk(ds, L, 0, order[i]);
            CHECK(ml_chunk_table_get(&ml_h5(L)->table, order[i], &ci));
            CHECK_U64_EQ(ci.addr, want.addr);
            CHECK_U64_EQ(ci.size, want.size);
        }
        H5Dclose(ds);
        H5Fclose(fid);
    }
    CHECK_RC(ml_layout_chunk(L, 6, &ci, &err));
    CHECK_EQ(ml_h5(L)->table_state, ML_TABLE_WALKED);
    CHECK_EQ(ml_h5(L)->lookups, 8);
    CHECK(ml_chunk_table_complete(&ml_h5(L)->table));
    compare_table(L, file, "big", 0, 499, &n_alloc, &mask);
    ml_layout_unref(L);
}

/* Find the only place in `file` where the 8-byte little-endian `value` is
 * stored; -1 if none or several. */
static long find_u64(const char *file, uint64_t value) {
    FILE *fp = fopen(file, "rb");
    CHECK(fp != NULL);
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp), at = -1;
    rewind(fp);
    unsigned char *b = malloc((size_t)n);
    CHECK_EQ(fread(b, 1, (size_t)n, fp), (size_t)n);
    fclose(fp);
    for (long i = 0; i + 8 <= n; i++) {
        uint64_t v;
        memcpy(&v, b + i, 8);
        if (v == value) {
            if (at >= 0) {
                at = -1;
                break;
            }
            at = i;
        }
    }
    free(b);
    return at;
}

/* A v1 B-tree the walk finds malformed, or that disagrees with HDF5, is
 * corrupt: every chunk read is an error naming why, never a guess. */
static void test_fallbacks(const char *file) {
    ml_error err;
    ml_chunk_info ci;
    uint64_t n_alloc;
    unsigned mask;

    /* The index points somewhere that is not a B-tree node. */
    ml_layout *L = open_layout(file, "big");
    ml_h5(L)->cindex.addr = 0;
    CHECK_EQ(ml_layout_fill_table(L), ML_TABLE_CORRUPT);
    CHECK(strstr(ml_h5(L)->table_why, "malformed") != NULL);
    ml_error_clear(&err);
    CHECK_ERR(ml_layout_chunk(L, 5, &ci, &err), -ML_ECORRUPT);
    CHECK(strstr(err.msg, "corrupt chunk index (the chunk index is malformed): chunk 5 ") != NULL);
    CHECK_EQ(ml_layout_fill_table(L), ML_TABLE_CORRUPT); /* tried once only */
    ml_layout_unref(L);
    (void)n_alloc;
    (void)mask;

    /* The file changes under HDF5 (which has the index cached): the last
     * chunk's address in the B-tree leaf now points elsewhere. The walk
     * sees the new bytes, HDF5 its cached ones: they disagree. */
    const char *copy = check_path("changed.h5");
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "cp '%s' '%s'", file, copy);
    CHECK_EQ(system(cmd), 0);
    L = open_layout(copy, "big");
    {
        /* HDF5 reads (and caches) the whole index, through the layout's own handle. */
        hsize_t coord[2] = {(L->grid[0] - 1) * L->chunk[0], 0}, size = 0;
        haddr_t addr = HADDR_UNDEF;
        unsigned m = 0;
        ml_h5_lock();
        CHECK(H5Dget_chunk_info_by_coord((hid_t)ml_h5(L)->h5_dset, coord, &m, &addr, &size) >= 0);
        ml_h5_unlock();
        CHECK_EQ(L->ndim, 2);
        CHECK_EQ(L->grid[1], 1);
        ci.addr = addr;
    }
    long at = find_u64(copy, ci.addr);
    CHECK_GE(at, 0);
    int fd = open(copy, O_WRONLY);
    uint64_t moved = ci.addr + 2;
    CHECK_EQ(pwrite(fd, &moved, 8, at), 8);
    close(fd);
    CHECK_EQ(ml_layout_fill_table(L), ML_TABLE_CORRUPT);
    CHECK(strstr(ml_h5(L)->table_why, "disagrees") != NULL);
    ml_chunk_info again;
    ml_error_clear(&err);
    CHECK_ERR(ml_layout_chunk(L, 1234, &again, &err), -ML_ECORRUPT);
    ml_layout_unref(L);

    /* An object header that is not one. */
    L = open_layout(file, "big");
    ml_chunk_index ix;
    CHECK_ERR(ml_chunk_index_locate(&ml_h5(L)->cfile, 0, &ix), -ML_ECORRUPT);
    CHECK_ERR(ml_chunk_index_locate(&ml_h5(L)->cfile, ml_h5(L)->cfile.size - 3, &ix), -ML_ECORRUPT);
    CHECK_ERR(ml_chunk_index_locate(&ml_h5(L)->cfile, ml_h5(L)->cfile.size + 100, &ix), -ML_ECORRUPT);
    CHECK_ERR(ml_chunk_index_locate(&ml_h5(L)->cfile, UINT64_MAX - 2, &ix), -ML_ECORRUPT);
    ml_layout_unref(L);
}

static void test_damage(const char *file) {
    ml_layout *L = open_layout(file, "big_gz");
    ml_chunk_file cf = ml_h5(L)->cfile;
    ml_chunk_index ix = ml_h5(L)->cindex;
    uint64_t dims[1] = {L->dims[0]}, n_chunks = L->n_chunks;
    ml_layout_unref(L);
    FILE *fp = fopen(file, "rb");
    CHECK(fp != NULL);
    size_t n = (size_t)cf.size;
    unsigned char *orig = malloc(n), *buf = malloc(n);
    CHECK_EQ(fread(orig, 1, n, fp), n);
    fclose(fp);
    /* Where the chunk B-tree nodes are: every "TREE" of node type 1. */
    size_t nodes[4096], n_nodes = 0;
    for (size_t i = 0; i + 5 <= n && n_nodes < 4096; i++)
        if (memcmp(orig + i, "TREE", 4) == 0 && orig[i + 4] == 1)
            nodes[n_nodes++] = i;
    CHECK_GT(n_nodes, 2);
    const char *bad = check_path("damaged.h5");
    uint64_t seed = 42, ok = 0, failed = 0;
    for (int iter = 0; iter < 300; iter++) {
        memcpy(buf, orig, n);
        for (int k = 0; k < 1 + iter % 4; k++) {
            size_t at = nodes[check_rand(&seed) % n_nodes] + check_rand(&seed) % 600;
            if (at < n)
                buf[at] ^= (unsigned char)(1 + check_rand(&seed) % 255);
        }
        int fd = open(bad, O_RDWR | O_CREAT | O_TRUNC, 0600);
        CHECK_GE(fd, 0);
        CHECK_EQ(write(fd, buf, n), (ssize_t)n);
        ml_source *src = NULL;
        CHECK_RC(ml_source_posix_adopt(fd, &src));
        ml_chunk_file df = cf;
        df.src = src;
        emit_count c = {.n_chunks = n_chunks};
        int rc = ml_chunk_index_walk(&df, &ix, 1, dims, NULL, count_one, &c);
        CHECK(rc == 0 || rc == -ML_ECORRUPT);
        CHECK_LE(c.n, n_chunks);
        if (rc == 0)
            ok++;
        else
            failed++;
        /* And the header: damage around the object header too. */
        ml_chunk_index lx;
        rc = ml_chunk_index_locate(&df, 0, &lx);
        CHECK(rc == 0 || rc == -ML_ECORRUPT);
        ml_source_unref(src); /* closes fd */
    }
    CHECK_GT(failed, 0);
    printf("damage: %llu walks ended well, %llu refused\n", (unsigned long long)ok, (unsigned long long)failed);
    free(buf);
    free(orig);
}

/* Random damage to the B-tree nodes of whole files that HDF5 still
 * opens: wherever the one-pass fill is trusted (WALKED), every entry equals
 * HDF5's answer; otherwise every chunk read is refused.
 * Every chunk is compared, so the dataset is small (600 chunks). */
static void test_damage_vs_hdf5(void) {
    const char *src = check_path("dmg-src.h5");
    hid_t fid = h5gen_create_ex(src, 0, 0);
    h5spec s = {.path = "d", .tc = TC_I32, .ndim = 2, .dims = {1800, 4}, .chunk = {3, 4}};
    write_set(fid, &s, 0, s.dims[0]);
    H5Fclose(fid);
    FILE *fp = fopen(src, "rb");
    CHECK(fp != NULL);
    fseek(fp, 0, SEEK_END);
    size_t n = (size_t)ftell(fp);
    rewind(fp);
    unsigned char *orig = malloc(n), *buf = malloc(n);
    CHECK_EQ(fread(orig, 1, n, fp), n);
    fclose(fp);
    /* Chunk B-tree nodes only (type 1): not the group's (type 0), after
     * which lies the dataset's object header. */
    size_t nodes[256], n_nodes = 0;
    for (size_t i = 0; i + 5 <= n && n_nodes < 256; i++)
        if (memcmp(orig + i, "TREE", 4) == 0 && orig[i + 4] == 1)
            nodes[n_nodes++] = i;
    CHECK_GT(n_nodes, 2);
    uint64_t seed = 7, walked = 0, fell_back = 0, refused = 0;
    for (int iter = 0; iter < 60; iter++) {
        memcpy(buf, orig, n);
        for (int k = 0; k < 1 + iter % 3; k++) {
            size_t at = nodes[check_rand(&seed) % n_nodes] + check_rand(&seed) % 1000;
            if (at < n)
                buf[at] ^= (unsigned char)(1 + check_rand(&seed) % 255);
        }
        /* A new name each time: HDF5 shares a file it has open by inode. */
        char name[64];
        snprintf(name, sizeof name, "dmg-%d.h5", iter);
        const char *file = check_path(name);
        int fd = open(file, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        CHECK_EQ(write(fd, buf, n), (ssize_t)n);
        close(fd);
        ml_layout *L = NULL;
        ml_error err;
        ml_error_clear(&err);
        if (ml_layout_open(file, "d", &L, &err) != 0) {
            refused++;
            continue;
        }
        ml_table_state st = ml_layout_fill_table(L);
        if (st == ML_TABLE_WALKED) {
            uint64_t n_alloc;
            unsigned mask;
            compare_table(L, file, "d", 0, 1, &n_alloc, &mask);
            walked++;
        } else {
            /* Not trusted: every read of it is refused (or, where the walk
             * could not run at all, asked of HDF5 and confirmed by key). */
            CHECK(st == ML_TABLE_CORRUPT || st == ML_TABLE_FALLBACK);
            ml_chunk_info ci;
            int rc = ml_layout_chunk(L, 0, &ci, &err);
            CHECK(st == ML_TABLE_FALLBACK || rc == -ML_ECORRUPT);
            fell_back++;
        }
        ml_layout_unref(L);
    }
    printf("damage vs HDF5: %llu walked and equal, %llu refused as corrupt, %llu not opened\n",
           (unsigned long long)walked, (unsigned long long)fell_back, (unsigned long long)refused);
    CHECK_GT(walked, 0);
    CHECK_GT(fell_back, 0);
    free(buf);
    free(orig);
}

/* Threads race ml_layout_chunk over every chunk of a fresh layout: the
 * one-pass fill happens once, under the lock, and every answer is right. */
typedef struct racer {
    ml_layout *L;
    uint64_t start, step;
    ml_chunk_info *out;
    int rc;
} racer;

static void *race(void *arg) {
    racer *r = arg;
    ml_error err;
    ml_error_clear(&err);
    for (uint64_t k = 0; k < r->L->n_chunks && r->rc == 0; k++) {
        uint64_t i = (r->start + k * r->step) % r->L->n_chunks;
        r->rc = ml_layout_chunk(r->L, i, &r->out[i], &err);
    }
    return NULL;
}

static void test_threads(const char *file) {
    ml_layout *L = open_layout(file, "big");
    enum { N = 4 };
    pthread_t t[N];
    racer r[N];
    for (int i = 0; i < N; i++) {
        /* steps coprime with 20 000 visit every chunk */
        r[i] = (racer){.L = L, .start = (uint64_t)i * 4999, .step = (uint64_t[]){1, 3, 7, 9}[i],
                       .out = calloc(L->n_chunks, sizeof(ml_chunk_info))};
        CHECK_EQ(pthread_create(&t[i], NULL, race, &r[i]), 0);
    }
    for (int i = 0; i < N; i++)
        CHECK_EQ(pthread_join(t[i], NULL), 0);
    CHECK_EQ(ml_h5(L)->table_state, ML_TABLE_WALKED);
    for (int i = 0; i < N; i++) {
        CHECK_RC(r[i].rc);
        for (uint64_t c = 0; c < L->n_chunks; c++)
        {
            ml_chunk_info want;
            CHECK(ml_chunk_table_get(&ml_h5(L)->table, c, &want));
            CHECK_U64_EQ(r[i].out[c].addr, want.addr);
        }
        free(r[i].out);
    }
    uint64_t n_alloc;
    unsigned mask;
    compare_table(L, file, "big", 0, 1999, &n_alloc, &mask);
    ml_layout_unref(L);
}

/* Descent by key (ml_chunk_index_find) gives, for every chunk, what the
 * walk gives: the entry, or never written. */
typedef struct walked {
    uint64_t *offset, *size;
    unsigned *mask;
} walked;

static int note_walked(void *ctx, uint64_t index, uint64_t offset, uint64_t size, unsigned mask) {
    walked *w = ctx;
    w->offset[index] = offset;
    w->size[index] = size;
    w->mask[index] = mask;
    return 0;
}

static void test_find_equals_walk(const char *file, const char *path) {
    ml_layout *L = open_layout(file, path);
    CHECK_EQ(ml_h5(L)->cindex.kind, ML_CHUNK_INDEX_BTREE1);
    walked w = {calloc(L->n_chunks, 8), calloc(L->n_chunks, 8), calloc(L->n_chunks, sizeof(unsigned))};
    for (uint64_t i = 0; i < L->n_chunks; i++)
        w.offset[i] = UINT64_MAX;
    CHECK_RC(ml_chunk_index_walk(&ml_h5(L)->cfile, &ml_h5(L)->cindex, L->ndim, L->dims, NULL, note_walked, &w));
    uint64_t found = 0;
    for (uint64_t i = 0; i < L->n_chunks; i++) {
        uint64_t off, size;
        unsigned mask;
        CHECK_RC(ml_chunk_index_find(&ml_h5(L)->cfile, &ml_h5(L)->cindex, L->ndim, L->dims, NULL, i, &off, &size, &mask));
        CHECK_U64_EQ(off, w.offset[i]);
        CHECK_U64_EQ(size, w.offset[i] == UINT64_MAX ? 0 : w.size[i]);
        CHECK_EQ(mask, w.offset[i] == UINT64_MAX ? 0 : w.mask[i]);
        found += off != UINT64_MAX;
    }
    uint64_t off, size;
    unsigned mask;
    CHECK_ERR(ml_chunk_index_find(&ml_h5(L)->cfile, &ml_h5(L)->cindex, L->ndim, L->dims, NULL, L->n_chunks, &off, &size, &mask),
              -ML_EINVAL);
    CHECK_GT(found, 0);
    free(w.offset);
    free(w.size);
    free(w.mask);
    ml_layout_unref(L);
}

int main(void) {
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    test_shapes(0);
    test_shapes(512);
    test_filter_mask();
    test_big();
    test_latest();
    test_grown_headers(0);
    test_grown_headers(1);
    test_crafted_headers();
    char *file = strdup(write_big(0)); /* check_path's buffers rotate */
    test_find_equals_walk(file, "big");
    test_lookups_then_fill(file);
    test_fallbacks(file);
    test_damage(file);
    test_damage_vs_hdf5();
    test_threads(file);
    free(file);
    CHECK_DONE();
}
