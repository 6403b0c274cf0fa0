/* codec.c - the codec table and the codecs: the read side of HDF5's
 * deflate, shuffle and fletcher32, h5py's lzf and PyTables' blosc; the
 * table's rows for hdf5plugin's zstd, lz4, bzip2 (codec_plugins.c) and
 * bitshuffle (bitshuffle.c).
 *
 * Invariants: a codec never reads past len stored bytes nor writes past
 * cap: a short or long result is the caller's to refuse (decode.c wants
 * exactly the chunk's bytes). Parameters HDF5's own filter refuses are
 * refused by the codec's check (at open and per chunk), never guessed:
 * a shuffle of element size 0 would leave the bytes shuffled. The table
 * is constant; per-thread state lives in the caller's decoder (decode.c),
 * so nothing here is shared between threads.
 *
 * Decompression uses libdeflate (2-3x faster than zlib on one core) when
 * the build found it, else zlib. PyTables' blosc (id 32001, via c-blosc)
 * and h5py's lzf (id 32000, via liblzf) are decoded natively too when the
 * build found those libraries (probe_libs.py); they live in h5py's
 * and PyTables' own HDF5 copies, not in the system HDF5, so without this
 * they could not be read.
 *
 * Workload: one decode per stored chunk and filter, on worker threads;
 * the shuffle's inner loops are SSE2 transposes for element sizes 2, 4, 8.
 */
#include "codec.h"
#include "codec_impl.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#ifdef ML_HAVE_LIBDEFLATE
#include <libdeflate.h>
#else
#include <zlib.h>
#endif
#ifdef ML_HAVE_BLOSC
#include <blosc.h>
#endif
#ifdef ML_HAVE_LZF
#include <lzf.h>
#endif

uint32_t ml_fletcher32(const void *data_, size_t len_) {
    const uint8_t *data = data_;
    size_t len = len_ / 2;
    uint32_t s1 = 0, s2 = 0;
    while (len) {
        size_t t = len > 360 ? 360 : len;
        len -= t;
        do {
            s1 += (uint32_t)((data[0] << 8) | data[1]);
            data += 2;
            s2 += s1;
        } while (--t);
        s1 = (s1 & 0xffff) + (s1 >> 16);
        s2 = (s2 & 0xffff) + (s2 >> 16);
    }
    if (len_ % 2) {
        s1 += (uint32_t)(*data << 8);
        s2 += s1;
        s1 = (s1 & 0xffff) + (s1 >> 16);
        s2 = (s2 & 0xffff) + (s2 >> 16);
    }
    s1 = (s1 & 0xffff) + (s1 >> 16);
    s2 = (s2 & 0xffff) + (s2 >> 16);
    return (s2 << 16) | s1;
}

/* Verify and strip the trailer. HDF5 stores the sum little-endian; files
 * from HDF5 < 1.6.3 stored it with 16-bit halves byte-swapped, which HDF5
 * still accepts, so we do too. */
static int fletcher_check(const unsigned char *buf, size_t *len) {
    if (*len < 4)
        return -ML_ECORRUPT;
    size_t n = *len - 4;
    const unsigned char *t = buf + n;
    uint32_t stored = (uint32_t)t[0] | (uint32_t)t[1] << 8 | (uint32_t)t[2] << 16 |
                      (uint32_t)t[3] << 24;
    uint32_t sum = ml_fletcher32(buf, n);
    uint32_t swapped = ((sum & 0x00ff00ffu) << 8) | ((sum & 0xff00ff00u) >> 8);
    if (stored != sum && stored != swapped)
        return -ML_ECHECKSUM;
    *len = n;
    return 0;
}

#if defined(__SSE2__)
#include <emmintrin.h>

/* Transposes of 16 elements at a time for the common element sizes: each
 * byte plane is one 16-byte load, interleaved with unpack instructions.
 * Returns how many elements were done; the caller finishes the tail. */
static size_t unshuffle_sse2(const unsigned char *src, unsigned char *dst, size_t n, size_t size) {
    size_t i = 0;
    if (size == 2) {
        for (; i + 16 <= n; i += 16) {
            __m128i a = _mm_loadu_si128((const __m128i *)(src + i));
            __m128i b = _mm_loadu_si128((const __m128i *)(src + n + i));
            _mm_storeu_si128((__m128i *)(dst + 2 * i), _mm_unpacklo_epi8(a, b));
            _mm_storeu_si128((__m128i *)(dst + 2 * i + 16), _mm_unpackhi_epi8(a, b));
        }
    } else if (size == 4) {
        for (; i + 16 <= n; i += 16) {
            __m128i a = _mm_loadu_si128((const __m128i *)(src + i));
            __m128i b = _mm_loadu_si128((const __m128i *)(src + n + i));
            __m128i c = _mm_loadu_si128((const __m128i *)(src + 2 * n + i));
            __m128i d = _mm_loadu_si128((const __m128i *)(src + 3 * n + i));
            __m128i ab0 = _mm_unpacklo_epi8(a, b), ab1 = _mm_unpackhi_epi8(a, b);
            __m128i cd0 = _mm_unpacklo_epi8(c, d), cd1 = _mm_unpackhi_epi8(c, d);
            unsigned char *o = dst + 4 * i;
            _mm_storeu_si128((__m128i *)o, _mm_unpacklo_epi16(ab0, cd0));
            _mm_storeu_si128((__m128i *)(o + 16), _mm_unpackhi_epi16(ab0, cd0));
            _mm_storeu_si128((__m128i *)(o + 32), _mm_unpacklo_epi16(ab1, cd1));
            _mm_storeu_si128((__m128i *)(o + 48), _mm_unpackhi_epi16(ab1, cd1));
        }
    } else if (size == 8) {
        for (; i + 16 <= n; i += 16) {
            __m128i p[8];
            for (int j = 0; j < 8; j++)
                p[j] = _mm_loadu_si128((const __m128i *)(src + (size_t)j * n + i));
            __m128i q[8], r[8];
            for (int j = 0; j < 4; j++) {
                q[2 * j] = _mm_unpacklo_epi8(p[2 * j], p[2 * j + 1]);
                q[2 * j + 1] = _mm_unpackhi_epi8(p[2 * j], p[2 * j + 1]);
            }
            /* r[0..3]: bytes 0-3 of elements 0-3, 4-7, 8-11, 12-15; r[4..7]: bytes 4-7. */
            for (int h = 0; h < 2; h++) {
                r[4 * h + 0] = _mm_unpacklo_epi16(q[4 * h + 0], q[4 * h + 2]);
                r[4 * h + 1] = _mm_unpackhi_epi16(q[4 * h + 0], q[4 * h + 2]);
                r[4 * h + 2] = _mm_unpacklo_epi16(q[4 * h + 1], q[4 * h + 3]);
                r[4 * h + 3] = _mm_unpackhi_epi16(q[4 * h + 1], q[4 * h + 3]);
            }
            unsigned char *o = dst + 8 * i;
            for (int k = 0; k < 4; k++) {
                _mm_storeu_si128((__m128i *)(o + 32 * k), _mm_unpacklo_epi32(r[k], r[4 + k]));
                _mm_storeu_si128((__m128i *)(o + 32 * k + 16), _mm_unpackhi_epi32(r[k], r[4 + k]));
            }
        }
    }
    return i;
}
#endif

void ml_unshuffle(const void *src_, void *dst_, size_t n_bytes, size_t size) {
    const unsigned char *src = src_;
    unsigned char *dst = dst_;
    size_t n = size ? n_bytes / size : 0;
    if (size <= 1 || n <= 1) {
        memcpy(dst, src, n_bytes);
        return;
    }
    size_t done = 0;
#if defined(__SSE2__)
    done = unshuffle_sse2(src, dst, n, size);
#endif
    /* Blocked so each pass reads `size` sequential streams and writes one
     * contiguous run that stays in L1. */
    enum { B = 256 };
    for (size_t i0 = done; i0 < n; i0 += B) {
        size_t m = n - i0 < B ? n - i0 : B;
        for (size_t j = 0; j < size; j++) {
            const unsigned char *s = src + j * n + i0;
            unsigned char *d = dst + i0 * size + j;
            for (size_t i = 0; i < m; i++)
                d[i * size] = s[i];
        }
    }
    /* Bytes past the last whole element are stored unshuffled. */
    memcpy(dst + n * size, src + n * size, n_bytes - n * size);
}

/* fletcher32: verify and strip the trailer in place. */
static int fletcher_decode(void *ctx, const ml_filter *f, unsigned char *src, size_t len, unsigned char *dst,
                           size_t cap, size_t *out_len) {
    (void)ctx, (void)f, (void)dst, (void)cap;
    *out_len = len;
    return fletcher_check(src, out_len);
}

/* shuffle: client data 0 is the element size. */
static const char *shuffle_check(const ml_filter *f) {
    /* H5Z__filter_shuffle: one value, the element size, not 0 */
    return f->n_values != 1 || f->values[0] == 0 ? "a shuffle element size other than one non-zero value" : NULL;
}

static int shuffle_decode(void *ctx, const ml_filter *f, unsigned char *src, size_t len, unsigned char *dst,
                          size_t cap, size_t *out_len) {
    (void)ctx;
    if (len > cap)
        return -ML_ECORRUPT;
    ml_unshuffle(src, dst, len, f->values[0]);
    *out_len = len;
    return 0;
}

/* deflate: a zlib stream, libdeflate's decompressor per thread. */
static const char *deflate_check(const ml_filter *f) {
    /* H5Z__filter_deflate: one value, a level of at most 9 */
    return f->n_values != 1 || f->values[0] > 9 ? "a deflate level other than one value of 0..9" : NULL;
}

#ifdef ML_HAVE_LIBDEFLATE
static int deflate_ctx_open(void **ctx) {
    *ctx = libdeflate_alloc_decompressor();
    return *ctx ? 0 : -ENOMEM;
}

static void deflate_ctx_close(void *ctx) { libdeflate_free_decompressor(ctx); }
#endif

static int inflate_into(void *ctx, const void *src, size_t len, void *dst, size_t cap, size_t *out_len) {
#ifdef ML_HAVE_LIBDEFLATE
    enum libdeflate_result r = libdeflate_zlib_decompress(ctx, src, len, dst, cap, out_len);
    return r == LIBDEFLATE_SUCCESS ? 0 : -ML_ECORRUPT;
#else
    (void)ctx;
    uLongf n = cap;
    int r = uncompress(dst, &n, src, len);
    *out_len = n;
    return r == Z_OK ? 0 : -ML_ECORRUPT;
#endif
}

static int deflate_decode(void *ctx, const ml_filter *f, unsigned char *src, size_t len, unsigned char *dst,
                          size_t cap, size_t *out_len) {
    (void)f;
    return inflate_into(ctx, src, len, dst, cap, out_len);
}

/* blosc: PyTables' filter reads values 2 (type size) and 3 (chunk bytes). */
static const char *blosc_check(const ml_filter *f) {
    return f->n_values < 4 ? "fewer than the 4 blosc parameters its filter reads" : NULL;
}

#ifdef ML_HAVE_BLOSC
/* PyTables' blosc filter stores one Blosc buffer per chunk. The _ctx call
 * keeps no global state (plain blosc_decompress takes a global lock), and
 * the header is validated first so a damaged chunk cannot make Blosc read
 * or write out of bounds. */
static int blosc_decode(void *ctx, const ml_filter *f, unsigned char *src, size_t len, unsigned char *dst,
                        size_t cap, size_t *out_len) {
    (void)ctx, (void)f;
    size_t nbytes = 0, cbytes = 0, blocksize = 0;
    if (len < BLOSC_MIN_HEADER_LENGTH)
        return -ML_ECORRUPT;
    blosc_cbuffer_sizes(src, &nbytes, &cbytes, &blocksize);
    if (cbytes > len || nbytes > cap)
        return -ML_ECORRUPT;
    int n = blosc_decompress_ctx(src, dst, cap, 1);
    if (n < 0)
        return -ML_ECORRUPT;
    *out_len = (size_t)n;
    return 0;
}
#define BLOSC_DECODE blosc_decode
#define BLOSC_AVAILABLE 1
#else
#define BLOSC_DECODE NULL
#define BLOSC_AVAILABLE 0
#endif

#ifdef ML_HAVE_LZF
/* h5py's lzf filter stores a raw LZF stream; liblzf checks bounds. */
static int lzf_decode(void *ctx, const ml_filter *f, unsigned char *src, size_t len, unsigned char *dst,
                      size_t cap, size_t *out_len) {
    (void)ctx, (void)f;
    unsigned n = lzf_decompress(src, (unsigned)len, dst, (unsigned)cap);
    if (n == 0)
        return -ML_ECORRUPT;
    *out_len = n;
    return 0;
}
#define LZF_DECODE lzf_decode
#define LZF_AVAILABLE 1
#else
#define LZF_DECODE NULL
#define LZF_AVAILABLE 0
#endif

#ifdef ML_HAVE_LIBDEFLATE
#define DEFLATE_CTX_OPEN deflate_ctx_open
#define DEFLATE_CTX_CLOSE deflate_ctx_close
#else
#define DEFLATE_CTX_OPEN NULL /* zlib's uncompress keeps no state */
#define DEFLATE_CTX_CLOSE NULL
#endif

#ifdef ML_HAVE_ZSTD
#define ZSTD_AVAILABLE 1, .ctx_open = ml_zstd_ctx_open, .ctx_close = ml_zstd_ctx_close, .decode = ml_zstd_decode
#else
#define ZSTD_AVAILABLE 0
#endif
#ifdef ML_HAVE_LZ4
#define LZ4_AVAILABLE 1, .decode = ml_lz4_decode
#else
#define LZ4_AVAILABLE 0
#endif
#ifdef ML_HAVE_BZIP2
#define BZIP2_AVAILABLE 1, .decode = ml_bzip2_decode
#else
#define BZIP2_AVAILABLE 0
#endif
#ifdef ML_HAVE_BITSHUFFLE
#define BITSHUFFLE_AVAILABLE 1, .ctx_open = ml_bitshuffle_ctx_open, .ctx_close = ml_bitshuffle_ctx_close, \
        .decode = ml_bitshuffle_decode
#else
#define BITSHUFFLE_AVAILABLE 0
#endif

/* Fletcher32, lzf, zstd, lz4 and bzip2 take no parameter they depend on to read. */
const ml_codec ml_codecs[] = {
    {.id = ML_FILTER_DEFLATE, .name = "deflate", .available = 1, .check = deflate_check,
     .ctx_open = DEFLATE_CTX_OPEN, .ctx_close = DEFLATE_CTX_CLOSE, .decode = deflate_decode},
    {.id = ML_FILTER_SHUFFLE, .name = "shuffle", .available = 1, .check = shuffle_check, .decode = shuffle_decode},
    {.id = ML_FILTER_FLETCHER32, .name = "fletcher32", .available = 1, .in_place = 1, .decode = fletcher_decode},
    {.id = ML_FILTER_LZF, .name = "lzf", .available = LZF_AVAILABLE, .decode = LZF_DECODE},
    {.id = ML_FILTER_BLOSC, .name = "blosc", .available = BLOSC_AVAILABLE, .check = blosc_check,
     .decode = BLOSC_DECODE},
    {.id = ML_FILTER_ZSTD, .name = "zstd", .available = ZSTD_AVAILABLE},
    {.id = ML_FILTER_LZ4, .name = "lz4", .available = LZ4_AVAILABLE},
    {.id = ML_FILTER_BZIP2, .name = "bzip2", .available = BZIP2_AVAILABLE},
    {.id = ML_FILTER_BITSHUFFLE, .name = "bitshuffle", .check = ml_bitshuffle_check, .available = BITSHUFFLE_AVAILABLE},
};

const size_t ml_codec_count = sizeof ml_codecs / sizeof ml_codecs[0];
_Static_assert(sizeof ml_codecs / sizeof ml_codecs[0] <= ML_CODEC_MAX, "raise ML_CODEC_MAX");

const ml_codec *ml_codec_find(int id) {
    for (size_t i = 0; i < ml_codec_count; i++)
        if (ml_codecs[i].id == id)
            return &ml_codecs[i];
    return NULL;
}

int ml_decode_supports(int filter_id) {
    const ml_codec *c = ml_codec_find(filter_id);
    return c && c->available;
}

/* Filters known by id, for the message when neither the core nor HDF5 can
 * decode one: its name and what provides it. hdf5plugin's list (7.x) and
 * the registered ones whose providers are certain. */
static const struct {
    int id;
    const char *name, *provider;
} known[] = {
    {4, "szip", "an HDF5 built with szip (libaec)"},
    {ML_FILTER_BZIP2, "bzip2", "pip install hdf5plugin (or build multiload with libbz2-dev)"},
    {ML_FILTER_LZF, "lzf", "build multiload with liblzf (liblzf-dev)"},
    {ML_FILTER_BLOSC, "blosc", "pip install hdf5plugin (or build multiload with libblosc-dev)"},
    {ML_FILTER_LZ4, "lz4", "pip install hdf5plugin (or build multiload with liblz4-dev)"},
    {ML_FILTER_BITSHUFFLE, "bitshuffle", "pip install hdf5plugin (or build multiload with liblz4-dev and libzstd-dev)"},
    {32013, "zfp", "pip install hdf5plugin"},
    {ML_FILTER_ZSTD, "zstd", "pip install hdf5plugin (or build multiload with libzstd-dev)"},
    {32017, "sz", "pip install hdf5plugin"},
    {32018, "fcidecomp", "pip install hdf5plugin"},
    {32024, "sz3", "pip install hdf5plugin"},
    {32026, "blosc2", "pip install hdf5plugin"},
    {32028, "sperr", "pip install hdf5plugin"},
    {32033, "htj2k", "pip install hdf5plugin"},
};

const char *ml_filter_known(int id, const char **provider) {
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (known[i].id == id) {
            *provider = known[i].provider;
            return known[i].name;
        }
    *provider = NULL;
    return NULL;
}
