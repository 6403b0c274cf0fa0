/* test_h5meta.c - the pre-check of what HDF5 reads to open a dataset
 * (h5precheck.c and the parsers under it: h5super.c, h5ohdr.c, h5group.c,
 * h5dmsg.c, h5meta.c).
 *
 * Valid files of every kind it parses must pass (0) or be reported as not
 * parsed (ML_META_UNCHECKED), never refused: superblocks v0 (earliest) and
 * v3 (latest), a user block, old-style groups of one symbol node and of a
 * two-level B-tree (300 names), nested groups, soft links (relative and
 * absolute), compact new-style groups, a dense group (UNCHECKED), an
 * external link (UNCHECKED), every layout (compact, contiguous, chunked
 * with v1 B-tree, fixed array, extensible array, v2 B-tree, single chunk),
 * filters, fill values, external raw storage, and datatypes: integers,
 * floats of both byte orders, strings, enums, compounds nested, arrays,
 * variable-length, opaque. Then each class of damage the fuzz campaigns
 * found is refused (-ML_ECORRUPT with a reason): a local heap out of the
 * file, an undefined B-tree child, a symbol node over 2K entries, a layout
 * of 0 dimensions or a 0 chunk dimension, an enum larger than its base, a
 * continuation past the end, a v2 checksum, a v2 B-tree header at odds
 * with its layout, two structures overlapping, an external link's value
 * cut short. The checksum matches
 * HDF5's own; a loop of random byte damage over every file never crashes
 * (ASan) and returns only the documented codes.
 */
#include "check.h"

#include <fcntl.h>
#include <hdf5.h>
#include <sys/stat.h>

#include "h5meta.h"
#include "io.h"
#include "source.h"

/* HDF5's own lookup3, exported by the library though not in its headers. */
extern uint32_t H5_checksum_lookup3(const void *key, size_t length, uint32_t initval);

#define H5_CHK(x)                                                                 \
    do {                                                                          \
        if ((x) < 0)                                                              \
            FAIL("%s failed", #x);                                                \
    } while (0)

static int precheck(const char *file, const char *path, char *why) {
    int fd = open(file, O_RDONLY | O_CLOEXEC);
    ml_source *s = NULL;
    CHECK(fd >= 0);
    CHECK_RC(ml_source_posix_adopt(fd, &s));
    why[0] = '\0';
    int rc = ml_meta_precheck(s, path, why);
    ml_source_unref(s);
    return rc;
}

static void expect(const char *file, const char *path, int want) {
    char why[ML_META_WHY_MAX];
    int rc = precheck(file, path, why);
    if (rc != want)
        FAIL("precheck(%s, %s) = %d (%s), want %d", file, path, rc, why, want);
}

static void expect_bad(const char *file, const char *path, const char *reason) {
    char why[ML_META_WHY_MAX];
    int rc = precheck(file, path, why);
    if (rc != -ML_ECORRUPT || !strstr(why, reason))
        FAIL("precheck(%s, %s) = %d (%s), want -ML_ECORRUPT with '%s'", file, path, rc, why, reason);
}

static hid_t create(const char *file, int latest, hsize_t userblock) {
    hid_t fcpl = H5Pcreate(H5P_FILE_CREATE), fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (userblock)
        H5_CHK(H5Pset_userblock(fcpl, userblock));
    if (latest) {
        H5_CHK(H5Pset_libver_bounds(fapl, H5F_LIBVER_LATEST, H5F_LIBVER_LATEST));
        H5_CHK(H5Pset_link_phase_change(fcpl, 32, 30)); /* a compact root group of up to 32 links */
    }
    hid_t fid = H5Fcreate(file, H5F_ACC_TRUNC, fcpl, fapl);
    CHECK(fid >= 0);
    H5Pclose(fcpl);
    H5Pclose(fapl);
    return fid;
}

/* A 1-D dataset of `n` elements of `type` (zeros), with dcpl (or default). */
static void dataset(hid_t loc, const char *name, hid_t type, hsize_t n, hsize_t maxn, hid_t dcpl) {
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
    H5_CHK(H5Pset_create_intermediate_group(lcpl, 1));
    hid_t space = H5Screate_simple(1, &n, maxn ? &maxn : NULL);
    hid_t ds = H5Dcreate2(loc, name, type, space, lcpl, dcpl < 0 ? H5P_DEFAULT : dcpl, H5P_DEFAULT);
    CHECK(ds >= 0);
    size_t bytes = (size_t)n * H5Tget_size(type);
    void *buf = calloc(1, bytes ? bytes : 1);
    if (H5Tis_variable_str(type) <= 0 && H5Tget_class(type) != H5T_VLEN)
        H5_CHK(H5Dwrite(ds, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf));
    free(buf);
    H5Dclose(ds);
    H5Sclose(space);
    H5Pclose(lcpl);
}

static hid_t chunked(hsize_t chunk, int deflate) {
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5_CHK(H5Pset_chunk(dcpl, 1, &chunk));
    if (deflate) {
        H5_CHK(H5Pset_shuffle(dcpl));
        H5_CHK(H5Pset_deflate(dcpl, 4));
        H5_CHK(H5Pset_fletcher32(dcpl));
    }
    int fill = 7;
    H5_CHK(H5Pset_fill_value(dcpl, H5T_NATIVE_INT, &fill));
    return dcpl;
}

/* Every datatype kind the core may meet, as datasets under `g`. */
static void all_types(hid_t fid, const char *g) {
    char name[256];
    hid_t t;
#define DS(suffix, type)                                                          \
    do {                                                                          \
        snprintf(name, sizeof name, "%s/%s", g, suffix);                          \
        dataset(fid, name, type, 10, 0, -1);                                      \
    } while (0)
    DS("i1", H5T_STD_I8LE);
    DS("u8be", H5T_STD_U64BE);
    DS("f4be", H5T_IEEE_F32BE);
    DS("f8", H5T_IEEE_F64LE);
    t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, 5);
    DS("s5", t);
    H5Tclose(t);
    t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, H5T_VARIABLE);
    DS("vstr", t);
    H5Tclose(t);
    t = H5Tenum_create(H5T_NATIVE_SCHAR);
    signed char v0 = 0, v1 = 1;
    H5Tenum_insert(t, "FALSE", &v0);
    H5Tenum_insert(t, "TRUE", &v1);
    DS("enum", t);
    hid_t inner = H5Tcreate(H5T_COMPOUND, 12);
    H5Tinsert(inner, "x", 0, H5T_NATIVE_INT);
    H5Tinsert(inner, "y", 4, H5T_NATIVE_DOUBLE);
    hsize_t adims[2] = {2, 3};
    hid_t arr = H5Tarray_create2(H5T_STD_I16BE, 2, adims);
    hid_t comp = H5Tcreate(H5T_COMPOUND, 1 + 12 + 12 + 1);
    H5Tinsert(comp, "flag", 0, t);
    H5Tinsert(comp, "inner", 1, inner);
    H5Tinsert(comp, "arr", 13, arr);
    H5Tinsert(comp, "c", 25, H5T_NATIVE_UCHAR);
    DS("compound", comp);
    DS("array", arr);
    hid_t vl = H5Tvlen_create(H5T_NATIVE_INT);
    DS("vlen", vl);
    hid_t op = H5Tcreate(H5T_OPAQUE, 4);
    H5Tset_tag(op, "opaque tag");
    DS("opaque", op);
    H5Tclose(op);
    H5Tclose(vl);
    H5Tclose(comp);
    H5Tclose(arr);
    H5Tclose(inner);
    H5Tclose(t);
#undef DS
}

static const char *TYPES[] = {"i1", "u8be", "f4be", "f8", "s5", "vstr", "enum", "compound", "array", "vlen", "opaque"};

/* earliest: superblock v0, old-style groups, layout v3, and everything else. */
static void make_earliest(const char *file, hsize_t userblock) {
    hid_t fid = create(file, 0, userblock);
    all_types(fid, "/t");
    hid_t dcpl = chunked(4, 0);
    dataset(fid, "/chunked", H5T_NATIVE_INT, 100, 0, dcpl);
    H5Pclose(dcpl);
    dcpl = chunked(8, 1);
    dataset(fid, "/g1/g2/filtered", H5T_NATIVE_INT, 100, 0, dcpl);
    H5Pclose(dcpl);
    dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5_CHK(H5Pset_layout(dcpl, H5D_COMPACT));
    dataset(fid, "/compact", H5T_NATIVE_INT, 10, 0, dcpl);
    H5Pclose(dcpl);
    dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5_CHK(H5Pset_external(dcpl, check_path("raw.bin"), 0, 400)); /* in the test directory, not the cwd */
    dataset(fid, "/external", H5T_NATIVE_INT, 100, 0, dcpl);
    H5Pclose(dcpl);
    /* 300 names: a group B-tree of two levels over many symbol nodes */
    for (int i = 0; i < 300; i++) {
        char name[64];
        snprintf(name, sizeof name, "/many/d%03d", (i * 37) % 300);
        dataset(fid, name, H5T_NATIVE_SHORT, 2, 0, -1);
    }
    H5_CHK(H5Lcreate_soft("/g1/g2/filtered", fid, "/soft_abs", H5P_DEFAULT, H5P_DEFAULT));
    H5_CHK(H5Lcreate_soft("g2/filtered", fid, "/g1/soft_rel", H5P_DEFAULT, H5P_DEFAULT));
    H5_CHK(H5Lcreate_soft("/soft_abs", fid, "/soft_soft", H5P_DEFAULT, H5P_DEFAULT));
    H5Fclose(fid);
}

static void make_latest(const char *file) {
    hid_t fid = create(file, 1, 0);
    /* compact: up to 32 links in the header (the default, 8, would make /t dense) */
    hid_t gcpl = H5Pcreate(H5P_GROUP_CREATE);
    H5_CHK(H5Pset_link_phase_change(gcpl, 32, 30));
    hid_t g = H5Gcreate2(fid, "/t", H5P_DEFAULT, gcpl, H5P_DEFAULT);
    CHECK(g >= 0);
    H5Gclose(g);
    H5Pclose(gcpl);
    all_types(fid, "/t");
    hid_t dcpl = chunked(4, 0);
    dataset(fid, "/farray", H5T_NATIVE_INT, 100, 0, dcpl);
    dataset(fid, "/earray", H5T_NATIVE_INT, 100, H5S_UNLIMITED, dcpl);
    H5Pclose(dcpl);
    dcpl = chunked(8, 1);
    dataset(fid, "/earray_filtered", H5T_NATIVE_INT, 100, H5S_UNLIMITED, dcpl);
    H5Pclose(dcpl);
    /* two unlimited dimensions: a v2 B-tree */
    hsize_t dims[2] = {20, 6}, maxd[2] = {H5S_UNLIMITED, H5S_UNLIMITED}, ch[2] = {3, 4};
    int filt;
    for (filt = 0; filt < 2; filt++) {
        hid_t dc = H5Pcreate(H5P_DATASET_CREATE);
        H5_CHK(H5Pset_chunk(dc, 2, ch));
        if (filt)
            H5_CHK(H5Pset_deflate(dc, 1));
        hid_t space = H5Screate_simple(2, dims, maxd);
        hid_t ds = H5Dcreate2(fid, filt ? "/btree2_gz" : "/btree2", H5T_NATIVE_LLONG, space, H5P_DEFAULT, dc,
                              H5P_DEFAULT);
        CHECK(ds >= 0);
        long long buf[120] = {0};
        H5_CHK(H5Dwrite(ds, H5T_NATIVE_LLONG, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf));
        H5Dclose(ds);
        H5Sclose(space);
        H5Pclose(dc);
    }
    dcpl = chunked(100, 0);
    dataset(fid, "/single", H5T_NATIVE_INT, 100, 0, dcpl);
    H5Pclose(dcpl);
    dataset(fid, "/g/contig", H5T_NATIVE_INT, 10, 0, -1);
    /* more links than its compact maximum: a dense group */
    gcpl = H5Pcreate(H5P_GROUP_CREATE);
    H5_CHK(H5Pset_link_phase_change(gcpl, 4, 2));
    g = H5Gcreate2(fid, "/dense", H5P_DEFAULT, gcpl, H5P_DEFAULT);
    CHECK(g >= 0);
    H5Gclose(g);
    H5Pclose(gcpl);
    for (int i = 0; i < 12; i++) {
        char name[64];
        snprintf(name, sizeof name, "/dense/d%d", i);
        dataset(fid, name, H5T_NATIVE_INT, 3, 0, -1);
    }
    H5_CHK(H5Lcreate_soft("/g/contig", fid, "/g/soft", H5P_DEFAULT, H5P_DEFAULT));
    H5_CHK(H5Lcreate_external("other.h5", "/x", fid, "/ext", H5P_DEFAULT, H5P_DEFAULT));
    H5Fclose(fid);
}

static void test_checksum(void) {
    unsigned char buf[300];
    for (size_t i = 0; i < sizeof buf; i++)
        buf[i] = (unsigned char)(i * 131 + 7);
    for (size_t n = 0; n <= sizeof buf; n++)
        CHECK_EQ(ml_meta_checksum(buf, n), H5_checksum_lookup3(buf, n, 0));
}

static void test_valid(void) {
    const char *early = check_path("early.h5"), *ub = check_path("userblock.h5"), *late = check_path("late.h5");
    make_earliest(early, 0);
    make_earliest(ub, 1024);
    make_latest(late);
    char p[64];
    for (size_t i = 0; i < sizeof TYPES / sizeof *TYPES; i++) {
        snprintf(p, sizeof p, "/t/%s", TYPES[i]);
        expect(early, p, 0);
        expect(ub, p, 0);
        expect(late, p, 0);
    }
    const char *early_paths[] = {"/chunked", "/g1/g2/filtered", "g1/g2/filtered", "//g1/./g2//filtered", "/compact",
                                 "/external", "/soft_abs", "/g1/soft_rel", "/soft_soft", "/many/d000", "/many/d299",
                                 "/many/d150", "/", "/g1"};
    for (size_t i = 0; i < sizeof early_paths / sizeof *early_paths; i++) {
        expect(early, early_paths[i], 0);
        expect(ub, early_paths[i], 0);
    }
    expect(early, "/many/nothere", 0); /* HDF5 says "not found" */
    expect(early, "/nothere/x", 0);
    const char *late_paths[] = {"/farray", "/earray", "/earray_filtered", "/btree2", "/btree2_gz", "/single",
                                "/g/contig", "/g/soft", "/"};
    for (size_t i = 0; i < sizeof late_paths / sizeof *late_paths; i++)
        expect(late, late_paths[i], 0);
    expect(late, "/dense/d3", ML_META_UNCHECKED);
    expect(late, "/ext", ML_META_UNCHECKED);
}

/* The file's bytes, to damage a copy of. */
static unsigned char *slurp(const char *file, size_t *n) {
    struct stat st;
    CHECK(stat(file, &st) == 0);
    unsigned char *b = malloc((size_t)st.st_size);
    FILE *f = fopen(file, "rb");
    CHECK(f && fread(b, 1, (size_t)st.st_size, f) == (size_t)st.st_size);
    fclose(f);
    *n = (size_t)st.st_size;
    return b;
}

static void spill(const char *file, const unsigned char *b, size_t n) {
    FILE *f = fopen(file, "wb");
    CHECK(f && fwrite(b, 1, n, f) == n);
    fclose(f);
}

static size_t find(const unsigned char *b, size_t n, const void *pat, size_t len, size_t from) {
    for (size_t i = from; i + len <= n; i++)
        if (memcmp(b + i, pat, len) == 0)
            return i;
    FAIL("pattern not found");
}

static void put_le(unsigned char *p, uint64_t v, unsigned n) {
    for (unsigned i = 0; i < n; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

/* One small earliest-format file: "/d" chunked int (layout v3), "/e" an enum, in a root of one symbol node. */
static void make_small(const char *file) {
    hid_t fid = create(file, 0, 0);
    hid_t dcpl = chunked(4, 0);
    dataset(fid, "/d", H5T_NATIVE_INT, 40, 0, dcpl);
    H5Pclose(dcpl);
    hid_t t = H5Tenum_create(H5T_NATIVE_SCHAR);
    signed char v0 = 0, v1 = 1;
    H5Tenum_insert(t, "NO", &v0);
    H5Tenum_insert(t, "YES", &v1);
    dataset(fid, "/e", t, 5, 0, -1);
    H5Tclose(t);
    H5Fclose(fid);
}

static void test_damage(void) {
    const char *good = check_path("small.h5"), *bad = check_path("bad.h5");
    make_small(good);
    size_t n;
    unsigned char *orig = slurp(good, &n), *b = malloc(n);
    expect(good, "/d", 0);
    expect(good, "/e", 0);

    /* the root group's local heap: data size 2^64 - 1 */
    size_t heap = find(orig, n, "HEAP", 4, 0);
    memcpy(b, orig, n);
    put_le(b + heap + 8, UINT64_MAX, 8);
    spill(bad, b, n);
    expect_bad(bad, "/d", "local heap");
    /* ... its data address undefined */
    memcpy(b, orig, n);
    put_le(b + heap + 24, UINT64_MAX, 8);
    spill(bad, b, n);
    expect_bad(bad, "/d", "local heap");
    /* ... a free list that loops */
    memcpy(b, orig, n);
    uint64_t daddr = 0, dsize = 0;
    memcpy(&daddr, orig + heap + 24, 8);
    memcpy(&dsize, orig + heap + 8, 8);
    CHECK(dsize >= 32);
    put_le(b + heap + 16, dsize - 16, 8);               /* free list head */
    put_le(b + daddr + dsize - 16, dsize - 16, 8);      /* next: itself */
    put_le(b + daddr + dsize - 16 + 8, 16, 8);
    spill(bad, b, n);
    expect_bad(bad, "/d", "free list");

    /* the group B-tree: child 0 undefined, then a symbol node over 2K entries */
    size_t tree = find(orig, n, "TREE", 4, 0);
    CHECK_EQ(orig[tree + 4], 0); /* the group's, first in an earliest file */
    memcpy(b, orig, n);
    put_le(b + tree + 8 + 16 + 8, UINT64_MAX, 8);
    spill(bad, b, n);
    expect_bad(bad, "/d", "child 0");
    size_t snod = find(orig, n, "SNOD", 4, 0);
    memcpy(b, orig, n);
    put_le(b + snod + 6, 9, 2); /* leaf K 4: at most 8 */
    spill(bad, b, n);
    expect_bad(bad, "/d", "more than 2K");
    /* a name off the heap */
    memcpy(b, orig, n);
    put_le(b + snod + 8, dsize + 5, 8);
    spill(bad, b, n);
    expect_bad(bad, "/d", "names no string");

    /* the layout message of /d: version 3, class 2, dimensionality 2 -> 0, then a chunk dimension 0 */
    unsigned char lay[3] = {3, 2, 2};
    size_t at = find(orig, n, lay, 3, 0);
    memcpy(b, orig, n);
    b[at + 2] = 0;
    spill(bad, b, n);
    expect_bad(bad, "/d", "0 dimensions");
    memcpy(b, orig, n);
    put_le(b + at + 3 + 8, 0, 4);
    spill(bad, b, n);
    expect_bad(bad, "/d", "chunk dimension of 0");
    memcpy(b, orig, n);
    put_le(b + at + 3 + 8 + 4, 8, 4); /* the element-size dimension */
    spill(bad, b, n);
    expect_bad(bad, "/d", "element size");

    /* the enum of /e: size 1 -> 2 (its base stays 1 byte) */
    unsigned char en[8] = {0x18, 2, 0, 0, 1, 0, 0, 0}; /* version 1, class 8, 2 members, size 1 */
    at = find(orig, n, en, 8, 0);
    memcpy(b, orig, n);
    b[at + 4] = 2;
    spill(bad, b, n);
    expect_bad(bad, "/e", "enum");

    /* an object header's continuation past the end: the root's v1 header has
     * none, so damage a message size instead (past its chunk) */
    memcpy(b, orig, n);
    size_t root = 96;
    CHECK_EQ(orig[root], 1);
    put_le(b + root + 16 + 2, 0x7ff8, 2);
    spill(bad, b, n);
    expect_bad(bad, "/d", "does not fit its chunk");

    /* two structures in one place: the heap's data moved onto the B-tree node */
    memcpy(b, orig, n);
    put_le(b + heap + 24, tree, 8);
    spill(bad, b, n);
    char why[ML_META_WHY_MAX];
    CHECK_EQ(precheck(bad, "/d", why), -ML_ECORRUPT);
    free(b);
    free(orig);
}

static void test_latest_damage(void) {
    const char *late = check_path("late2.h5"), *bad = check_path("late_bad.h5");
    hid_t fid = create(late, 1, 0);
    hsize_t dims[2] = {20, 6}, maxd[2] = {H5S_UNLIMITED, H5S_UNLIMITED}, ch[2] = {3, 4};
    hid_t dc = H5Pcreate(H5P_DATASET_CREATE);
    H5_CHK(H5Pset_chunk(dc, 2, ch));
    hid_t space = H5Screate_simple(2, dims, maxd);
    hid_t ds = H5Dcreate2(fid, "/b", H5T_NATIVE_LLONG, space, H5P_DEFAULT, dc, H5P_DEFAULT);
    long long buf[120] = {0};
    H5_CHK(H5Dwrite(ds, H5T_NATIVE_LLONG, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf));
    H5Dclose(ds);
    H5Sclose(space);
    H5Pclose(dc);
    H5Fclose(fid);
    size_t n;
    unsigned char *orig = slurp(late, &n), *b = malloc(n);
    expect(late, "/b", 0);
    /* an OHDR byte changed: the checksum no longer matches */
    size_t oh = find(orig, n, "OHDR", 4, 0);
    memcpy(b, orig, n);
    b[oh + 8] ^= 0x40;
    spill(bad, b, n);
    expect_bad(bad, "/b", "checksum");
    /* the v2 B-tree header's record size, checksum recomputed */
    size_t bt = find(orig, n, "BTHD", 4, 0);
    size_t hlen = 4 + 1 + 1 + 4 + 2 + 2 + 1 + 1 + 8 + 2 + 8;
    memcpy(b, orig, n);
    put_le(b + bt + 10, 1054, 2);
    put_le(b + bt + hlen, ml_meta_checksum(b + bt, hlen), 4);
    spill(bad, b, n);
    expect_bad(bad, "/b", "records are 1054 bytes");
    memcpy(b, orig, n);
    put_le(b + bt + 6, 2610758862u, 4);
    put_le(b + bt + hlen, ml_meta_checksum(b + bt, hlen), 4);
    spill(bad, b, n);
    expect_bad(bad, "/b", "node size");
    free(b);
    free(orig);
}

/* The v2 object header chunk (OHDR or OCHK) that holds byte `at` of an
 * intact image: *start, and *end where its checksum is stored. */
static void ohdr_chunk_of(const unsigned char *b, size_t n, size_t at, size_t *start, size_t *end) {
    size_t oh = at;
    while (oh > 0 && memcmp(b + oh, "OHDR", 4) != 0 && memcmp(b + oh, "OCHK", 4) != 0)
        oh--;
    for (size_t e = at + 1; e + 4 <= n; e++)
        if (ml_meta_checksum(b + oh, e - oh) == (uint32_t)(b[e] | b[e + 1] << 8 | b[e + 2] << 16 | (uint32_t)b[e + 3] << 24)) {
            *start = oh;
            *end = e;
            return;
        }
    FAIL("no checksummed chunk holds byte %zu", at);
}

/* An external link's value cut short (fuzz seed 8 cases 3468, 6468): HDF5
 * 1.10.8 runs strlen past it. */
static void test_external_link_damage(void) {
    const char *late = check_path("late.h5"), *bad = check_path("ext_bad.h5");
    size_t n;
    unsigned char *b = slurp(late, &n);
    static const char value[] = "\0other.h5\0/x"; /* flags byte 0, file name, path (and its NUL) */
    size_t at = find(b, n, value, sizeof value, 0);
    size_t c0, c1;
    CHECK_EQ(b[at - 2] | b[at - 1] << 8, (int)sizeof value);
    ohdr_chunk_of(b, n, at, &c0, &c1);
    put_le(b + at - 2, sizeof value - 1, 2); /* the path's NUL left out */
    put_le(b + c1, ml_meta_checksum(b + c0, c1 - c0), 4);
    spill(bad, b, n);
    expect_bad(bad, "/ext", "external link");
    put_le(b + at - 2, 1, 2);
    put_le(b + c1, ml_meta_checksum(b + c0, c1 - c0), 4);
    spill(bad, b, n);
    expect_bad(bad, "/ext", "external link");
    free(b);
}

/* Random damage: never a crash (ASan), only documented codes. */
static void test_random_damage(void) {
    const char *files[] = {check_path("early.h5"), check_path("late.h5"), check_path("small.h5")};
    const char *paths[] = {"/t/compound", "/many/d150", "/g1/g2/filtered", "/btree2_gz", "/earray", "/d", "/e",
                           "/soft_soft", "/t/enum"};
    const char *bad = check_path("rand.h5");
    uint64_t seed = 12345;
    unsigned counts[4] = {0};
    for (int iter = 0; iter < 1500; iter++) {
        size_t n;
        unsigned char *b = slurp(files[iter % 3], &n);
        for (int k = 0; k < 1 + iter % 4; k++) {
            seed = seed * 6364136223846793005u + 1442695040888963407u;
            size_t at = (size_t)(seed >> 33) % n;
            unsigned kind = (unsigned)(seed >> 20) % 4;
            if (kind == 0)
                b[at] ^= (unsigned char)(1u << ((seed >> 8) % 8));
            else if (kind == 1)
                b[at] = 0xff;
            else if (kind == 2)
                b[at] = 0;
            else
                n = at + 1; /* truncated */
        }
        spill(bad, b, n);
        free(b);
        char why[ML_META_WHY_MAX];
        int rc = precheck(bad, paths[iter % 9], why);
        if (rc != 0 && rc != ML_META_UNCHECKED && rc != -ML_ECORRUPT && rc != -ML_ENOTHDF5)
            FAIL("precheck returned %d (%s)", rc, why);
        if (rc == -ML_ECORRUPT && !why[0])
            FAIL("refused without a reason");
        counts[rc == 0 ? 0 : rc == ML_META_UNCHECKED ? 1 : rc == -ML_ECORRUPT ? 2 : 3]++;
    }
    printf("random damage: %u passed, %u unchecked, %u refused, %u not HDF5\n", counts[0], counts[1], counts[2],
           counts[3]);
    CHECK(counts[2] > 100);
}

int main(void) {
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    check_tmpdir();
    test_checksum();
    test_valid();
    test_damage();
    test_latest_damage();
    test_external_link_damage();
    test_random_damage();
    printf("ok %s\n", __FILE__);
    return CHECK_PASS;
}
