/* test_decode.c - fletcher32 (against a plain reference and against a sum
 * HDF5 itself stored), unshuffle (inverse of HDF5's shuffle for many
 * element sizes and lengths), and ml_decode_chunk on deflate streams that
 * are intact, damaged or the wrong size. */
#include "check.h"

#include <zlib.h>

#include "decode.h"
#include "h5gen.h"
#include "h5.h"

/* HDF5's Fletcher-32, written the plain way: 16-bit big-endian words (an
 * odd last byte is the high byte of a final word), both sums folded
 * one's-complement style after every word. */
static uint32_t ref_fletcher32(const unsigned char *p, size_t len) {
    uint32_t s1 = 0, s2 = 0;
    for (size_t i = 0; i < len; i += 2) {
        uint32_t w = (uint32_t)p[i] << 8 | (i + 1 < len ? p[i + 1] : 0);
        s1 += w;
        s1 = (s1 & 0xffff) + (s1 >> 16);
        s2 += s1;
        s2 = (s2 & 0xffff) + (s2 >> 16);
    }
    return s2 << 16 | s1;
}

/* HDF5's shuffle: byte j of element i goes to j*n + i; leftovers at the end. */
static void ref_shuffle(const unsigned char *src, unsigned char *dst, size_t n_bytes, size_t size) {
    size_t n = n_bytes / size;
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < size; j++)
            dst[j * n + i] = src[i * size + j];
    memcpy(dst + n * size, src + n * size, n_bytes - n * size);
}

static void fill_random(unsigned char *p, size_t n, uint64_t seed) {
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)(check_rand(&seed) >> 56);
}

static void test_fletcher_reference(void) {
    enum { MAX = 5000 };
    static unsigned char buf[100003];
    fill_random(buf, sizeof buf, 42);
    for (size_t len = 0; len < MAX; len += (len < 40 ? 1 : 37))
        CHECK_EQ(ml_fletcher32(buf, len), ref_fletcher32(buf, len));
    /* Long inputs cross the 360-word blocking many times. */
    CHECK_EQ(ml_fletcher32(buf, sizeof buf), ref_fletcher32(buf, sizeof buf));
    CHECK_EQ(ml_fletcher32(buf, sizeof buf - 1), ref_fletcher32(buf, sizeof buf - 1));
    /* All-ones words: sums sit at the 0xffff / 0 boundary of the fold. */
    memset(buf, 0xff, sizeof buf);
    for (size_t len = 0; len < 3000; len += 7)
        CHECK_EQ(ml_fletcher32(buf, len), ref_fletcher32(buf, len));
    CHECK_EQ(ml_fletcher32(buf, sizeof buf), ref_fletcher32(buf, sizeof buf));
    memset(buf, 0, 64);
    CHECK_EQ(ml_fletcher32(buf, 64), 0);
    /* Hand-computed: words 0x0102, 0x0304 -> s1 = 0x0406, s2 = 0x0102 + 0x0406. */
    const unsigned char v[4] = {1, 2, 3, 4};
    CHECK_EQ(ml_fletcher32(v, 4), 0x05080406u);
    /* Odd length: the last byte is the high byte of a word: 0x0300. */
    CHECK_EQ(ml_fletcher32(v, 3), (0x0102u + 0x0402u) << 16 | 0x0402u);
}

/* A fletcher32 chunk written by HDF5: ml_decode_chunk must accept HDF5's
 * own trailer, and reject the chunk once one byte changes. */
static void test_fletcher_hdf5(void) {
    const char *file = check_path("fletcher.h5");
    enum { N = 1000 };
    static int32_t data[N];
    for (int i = 0; i < N; i++)
        data[i] = i * 7919 - 3000000;
    hid_t fid = h5gen_create(file);
    h5spec plain = {.path = "/f", .type = H5T_NATIVE_INT32, .ndim = 1, .dims = {N},
                    .chunk = {N}, .fletcher = 1};
    h5gen_dataset(fid, &plain, data);
    h5spec all = {.path = "/sdf", .type = H5T_NATIVE_INT32, .ndim = 1, .dims = {N},
                  .chunk = {N}, .shuffle = 1, .deflate = 4, .fletcher = 1};
    h5gen_dataset(fid, &all, data);
    H5Fclose(fid);

    const char *paths[2] = {"/f", "/sdf"};
    for (int p = 0; p < 2; p++) {
        /* The raw stored chunk, as HDF5 wrote it. */
        fid = H5Fopen(file, H5F_ACC_RDONLY, H5P_DEFAULT);
        hid_t ds = H5Dopen2(fid, paths[p], H5P_DEFAULT);
        hsize_t off[1] = {0}, stored = 0;
        H5_OK(H5Dget_chunk_storage_size(ds, off, &stored));
        CHECK_GT(stored, 4);
        unsigned char *raw = malloc(stored), *copy = malloc(stored);
        uint32_t mask = 0;
        H5_OK(H5Dread_chunk(ds, H5P_DEFAULT, off, &mask, raw));
        CHECK_EQ(mask, 0);
        H5Dclose(ds);
        H5Fclose(fid);

        /* HDF5 stores the sum little-endian after the data. */
        uint32_t trailer = (uint32_t)raw[stored - 4] | (uint32_t)raw[stored - 3] << 8 |
                           (uint32_t)raw[stored - 2] << 16 | (uint32_t)raw[stored - 1] << 24;
        CHECK_EQ(ml_fletcher32(raw, stored - 4), trailer);
        CHECK_EQ(ref_fletcher32(raw, stored - 4), trailer);

        ml_layout *L = NULL;
        ml_error err;
        ml_error_clear(&err);
        CHECK_RC(ml_layout_open(file, paths[p], &L, &err));
        CHECK_EQ(L->storage, ML_STORE_CHUNKED);
        CHECK_EQ(L->pipeline.n_filters, p == 0 ? 1 : 3);
        ml_decoder *d;
        CHECK_RC(ml_decoder_open(&d));
        static int32_t out[N];
        memcpy(copy, raw, stored);
        CHECK_RC(ml_decode_chunk(d, &L->pipeline, L->chunk_bytes, 0, copy, stored, out));
        CHECK_MEM_EQ(out, data, sizeof data);
        /* One flipped byte anywhere (data or trailer) is a checksum error. */
        size_t where[] = {0, stored / 2, stored - 5, stored - 1};
        for (size_t i = 0; i < 4; i++) {
            memcpy(copy, raw, stored);
            copy[where[i]] ^= 0x10;
            CHECK_ERR(ml_decode_chunk(d, &L->pipeline, L->chunk_bytes, 0, copy, stored, out), -ML_ECHECKSUM);
        }
        /* Pre-1.6.3 files stored the sum with its 16-bit halves' bytes swapped. */
        memcpy(copy, raw, stored);
        uint32_t sw = ((trailer & 0x00ff00ffu) << 8) | ((trailer & 0xff00ff00u) >> 8);
        for (int b = 0; b < 4; b++)
            copy[stored - 4 + (size_t)b] = (unsigned char)(sw >> (8 * b));
        CHECK_RC(ml_decode_chunk(d, &L->pipeline, L->chunk_bytes, 0, copy, stored, out));
        CHECK_MEM_EQ(out, data, sizeof data);
        /* Fewer than 4 bytes cannot hold a trailer. */
        CHECK_ERR(ml_decode_chunk(d, &L->pipeline, L->chunk_bytes, 0, copy, 3, out), -ML_ECORRUPT);
        ml_decoder_close(d);
        ml_layout_unref(L);
        free(raw);
        free(copy);
    }
}

static void test_unshuffle(void) {
    static const size_t sizes[] = {1, 2, 3, 4, 8, 16};
    static const size_t counts[] = {0, 1, 2, 3, 15, 16, 17, 31, 32, 33, 100, 255, 256, 257, 1000, 4099};
    enum { GUARD = 32 };
    for (size_t a = 0; a < sizeof sizes / sizeof sizes[0]; a++) {
        size_t size = sizes[a];
        for (size_t b = 0; b < sizeof counts / sizeof counts[0]; b++) {
            for (size_t left = 0; left < size; left++) {
                size_t nb = counts[b] * size + left;
                unsigned char *orig = malloc(nb + 1), *sh = malloc(nb + 1);
                unsigned char *out = malloc(nb + 2 * GUARD);
                fill_random(orig, nb, nb * 31 + size);
                ref_shuffle(orig, sh, nb, size);
                memset(out, 0xee, nb + 2 * GUARD);
                ml_unshuffle(sh, out + GUARD, nb, size);
                for (size_t i = 0; i < nb; i++)
                    if (out[GUARD + i] != orig[i])
                        FAIL("size %zu, %zu elements + %zu: byte %zu is %02x, want %02x", size,
                             counts[b], left, i, out[GUARD + i], orig[i]);
                for (size_t i = 0; i < GUARD; i++) {
                    CHECK_EQ(out[i], 0xee);          /* nothing written before */
                    CHECK_EQ(out[GUARD + nb + i], 0xee); /* nor after */
                }
                free(orig);
                free(sh);
                free(out);
            }
        }
    }
}

/* A layout carrying just what ml_decode_chunk reads. */
typedef struct fake_layout {
    ml_layout L;
    ml_type t;
} fake_layout;

static void fake_init(fake_layout *f, size_t esz, size_t chunk_bytes) {
    memset(f, 0, sizeof *f);
    f->t.kind = ML_T_UINT;
    f->t.size = esz;
    f->L.type = &f->t;
    f->L.chunk_bytes = chunk_bytes;
    f->L.storage = ML_STORE_CHUNKED;
}

static void add_filter(fake_layout *f, int id, unsigned value0) {
    ml_filter *fl = &f->L.pipeline.filters[f->L.pipeline.n_filters++];
    fl->id = id;
    fl->n_values = value0 ? 1 : 0;
    fl->values[0] = value0;
}

static unsigned char *zcompress(const unsigned char *src, size_t n, size_t *out_len) {
    uLongf cap = compressBound((uLong)n);
    unsigned char *z = malloc(cap);
    CHECK_EQ(compress2(z, &cap, src, (uLong)n, 6), Z_OK);
    *out_len = cap;
    return z;
}

static void test_deflate(void) {
    enum { N = 12345 };
    static unsigned char data[N], out[N], sh[N];
    for (size_t i = 0; i < N; i++)
        data[i] = (unsigned char)((i * i) % 251 + (i / 100));
    ml_decoder *d;
    CHECK_RC(ml_decoder_open(&d));
    fake_layout f;
    size_t zlen;
    unsigned char *z = zcompress(data, N, &zlen), *copy = malloc(zlen);

    /* deflate alone */
    fake_init(&f, 1, N);
    add_filter(&f, 1, 6);
    memcpy(copy, z, zlen);
    CHECK_RC(ml_decode_chunk(d, &f.L.pipeline, f.L.chunk_bytes, 0, copy, zlen, out));
    CHECK_MEM_EQ(out, data, N);

    /* Damage: flipped bytes, truncation, garbage. libdeflate and zlib both
     * verify the stream's adler32, so no flip can slip through. */
    size_t where[] = {0, 1, 2, zlen / 3, zlen / 2, zlen - 5, zlen - 1};
    for (size_t i = 0; i < sizeof where / sizeof where[0]; i++) {
        memcpy(copy, z, zlen);
        copy[where[i]] ^= 0x5a;
        CHECK_ERR(ml_decode_chunk(d, &f.L.pipeline, f.L.chunk_bytes, 0, copy, zlen, out), -ML_ECORRUPT);
    }
    memcpy(copy, z, zlen);
    CHECK_ERR(ml_decode_chunk(d, &f.L.pipeline, f.L.chunk_bytes, 0, copy, zlen / 2, out), -ML_ECORRUPT);
    CHECK_ERR(ml_decode_chunk(d, &f.L.pipeline, f.L.chunk_bytes, 0, copy, 0, out), -ML_ECORRUPT);
    memset(copy, 0xa5, zlen);
    CHECK_ERR(ml_decode_chunk(d, &f.L.pipeline, f.L.chunk_bytes, 0, copy, zlen, out), -ML_ECORRUPT);

    /* The right stream for the wrong chunk size: too long and too short. */
    static unsigned char big[N + 100];
    fake_init(&f, 1, N - 1);
    add_filter(&f, 1, 6);
    memcpy(copy, z, zlen);
    CHECK_ERR(ml_decode_chunk(d, &f.L.pipeline, f.L.chunk_bytes, 0, copy, zlen, out), -ML_ECORRUPT);
    fake_init(&f, 1, N + 100);
    add_filter(&f, 1, 6);
    memcpy(copy, z, zlen);
    CHECK_ERR(ml_decode_chunk(d, &f.L.pipeline, f.L.chunk_bytes, 0, copy, zlen, big), -ML_ECORRUPT);
    free(z);
    free(copy);

    /* shuffle then deflate (HDF5's usual pipeline), element size 4, with a
     * few leftover bytes since N is not a multiple of 4. */
    ref_shuffle(data, sh, N, 4);
    z = zcompress(sh, N, &zlen);
    copy = malloc(zlen);
    fake_init(&f, 4, N);
    add_filter(&f, 2, 4);
    add_filter(&f, 1, 6);
    memcpy(copy, z, zlen);
    memset(out, 0, N);
    CHECK_RC(ml_decode_chunk(d, &f.L.pipeline, f.L.chunk_bytes, 0, copy, zlen, out));
    CHECK_MEM_EQ(out, data, N);
    /* Shuffle without its one non-zero element size, or deflate with a
     * level past 9, is refused as HDF5's filters refuse it. */
    f.L.pipeline.filters[0].n_values = 0;
    memcpy(copy, z, zlen);
    CHECK_ERR(ml_decode_chunk(d, &f.L.pipeline, f.L.chunk_bytes, 0, copy, zlen, out), -ML_ECORRUPT);
    f.L.pipeline.filters[0].n_values = 1;
    f.L.pipeline.filters[0].values[0] = 0;
    memcpy(copy, z, zlen);
    CHECK_ERR(ml_decode_chunk(d, &f.L.pipeline, f.L.chunk_bytes, 0, copy, zlen, out), -ML_ECORRUPT);
    f.L.pipeline.filters[0].values[0] = 4;
    f.L.pipeline.filters[1].values[0] = 10;
    memcpy(copy, z, zlen);
    CHECK_ERR(ml_decode_chunk(d, &f.L.pipeline, f.L.chunk_bytes, 0, copy, zlen, out), -ML_ECORRUPT);
    f.L.pipeline.filters[1].values[0] = 6;
    /* Filter mask: deflate (filter 1) skipped for this chunk, so the stored
     * bytes are the shuffled data itself. */
    memcpy(big, sh, N);
    memset(out, 0, N);
    CHECK_RC(ml_decode_chunk(d, &f.L.pipeline, f.L.chunk_bytes, 1u << 1, big, N, out));
    CHECK_MEM_EQ(out, data, N);
    /* Both skipped: stored bytes are the data. */
    memcpy(big, data, N);
    memset(out, 0, N);
    CHECK_RC(ml_decode_chunk(d, &f.L.pipeline, f.L.chunk_bytes, 3u, big, N, out));
    CHECK_MEM_EQ(out, data, N);
    /* Shuffle-only input longer than the chunk is corrupt. */
    CHECK_ERR(ml_decode_chunk(d, &f.L.pipeline, f.L.chunk_bytes, 1u << 1, big, N + 50, out), -ML_ECORRUPT);
    free(z);
    free(copy);
    ml_decoder_close(d);
    ml_decoder_close(NULL);
}

/* The codec table: one row per filter id the core knows, available as the
 * build's flags say, parameter checks as HDF5's filters refuse, and the
 * pipeline runner refusing what no available row decodes. */
static void test_codec_table(void) {
    int ids[] = {ML_FILTER_DEFLATE, ML_FILTER_SHUFFLE, ML_FILTER_FLETCHER32, ML_FILTER_LZF, ML_FILTER_BLOSC,
                 ML_FILTER_ZSTD,    ML_FILTER_LZ4,     ML_FILTER_BZIP2,      ML_FILTER_BITSHUFFLE};
    CHECK_EQ(ml_codec_count, sizeof ids / sizeof ids[0]);
    CHECK_LE(ml_codec_count, ML_CODEC_MAX);
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
        const ml_codec *c = ml_codec_find(ids[i]);
        CHECK(c != NULL);
        CHECK_EQ(c->id, ids[i]);
        CHECK(c->name != NULL);
        CHECK_EQ(ml_decode_supports(ids[i]), c->available);
        CHECK_EQ(c->available, c->decode != NULL);
        CHECK_EQ(c->in_place, ids[i] == ML_FILTER_FLETCHER32);
    }
    CHECK(ml_codec_find(4) == NULL); /* szip: HDF5's alone */
    CHECK(!ml_decode_supports(4));
    CHECK(!ml_decode_supports(32026)); /* blosc2: HDF5's, through hdf5plugin */
#ifdef ML_HAVE_LZ4
    CHECK(ml_decode_supports(ML_FILTER_LZ4));
#else
    CHECK(!ml_decode_supports(ML_FILTER_LZ4));
#endif
#ifdef ML_HAVE_BLOSC
    CHECK(ml_decode_supports(ML_FILTER_BLOSC));
#else
    CHECK(!ml_decode_supports(ML_FILTER_BLOSC));
#endif
#ifdef ML_HAVE_LZF
    CHECK(ml_decode_supports(ML_FILTER_LZF));
#else
    CHECK(!ml_decode_supports(ML_FILTER_LZF));
#endif
    /* Parameter checks: what HDF5's own filters refuse. */
    const ml_codec *dfl = ml_codec_find(ML_FILTER_DEFLATE), *shf = ml_codec_find(ML_FILTER_SHUFFLE),
                   *bl = ml_codec_find(ML_FILTER_BLOSC);
    ml_filter f = {.id = ML_FILTER_DEFLATE, .n_values = 1, .values = {9}};
    CHECK(dfl->check(&f) == NULL);
    f.values[0] = 10;
    CHECK(dfl->check(&f) != NULL);
    f.values[0] = 4, f.n_values = 2;
    CHECK(dfl->check(&f) != NULL);
    f = (ml_filter){.id = ML_FILTER_SHUFFLE, .n_values = 1, .values = {4}};
    CHECK(shf->check(&f) == NULL);
    f.values[0] = 0;
    CHECK(shf->check(&f) != NULL);
    f = (ml_filter){.id = ML_FILTER_BLOSC, .n_values = 3};
    CHECK(bl->check(&f) != NULL);
    f.n_values = 7;
    CHECK(bl->check(&f) == NULL);
    CHECK(ml_codec_find(ML_FILTER_FLETCHER32)->check == NULL);

    /* A pipeline with a filter no available row decodes: -ML_EFILTER, not
     * a guess; skipped by the mask, it costs nothing. */
    ml_decoder *d;
    CHECK_RC(ml_decoder_open(&d));
    unsigned char in[64], out[64];
    memset(in, 7, sizeof in);
    ml_pipeline p = {.n_filters = 1, .filters = {{.id = 4}}};
    CHECK_ERR(ml_decode_chunk(d, &p, sizeof out, 0, in, sizeof in, out), -ML_EFILTER);
    CHECK_RC(ml_decode_chunk(d, &p, sizeof out, 1, in, sizeof in, out));
    CHECK_MEM_EQ(out, in, sizeof in);
    ml_decoder_close(d);
}

int main(void) {
    test_codec_table();
    test_fletcher_reference();
    test_fletcher_hdf5();
    test_unshuffle();
    test_deflate();
    CHECK_DONE();
}
