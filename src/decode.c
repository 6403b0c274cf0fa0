/* decode.c - the read side of HDF5's deflate, shuffle and fletcher32.
 *
 * HDF5 applies filters in pipeline order when writing, so we undo them in
 * reverse. Fletcher32 strips a 4-byte trailer in place; deflate and
 * shuffle each write to a fresh buffer. The last transforming filter
 * writes straight into the destination, others into two scratch buffers
 * that alternate. Every decoded chunk must be exactly chunk_bytes long: a
 * short or long result means the stored chunk is damaged.
 *
 * Decompression uses libdeflate (2-3x faster than zlib on one core) when
 * the build found it, else zlib. PyTables' blosc (id 32001, via c-blosc)
 * and h5py's lzf (id 32000, via liblzf) are decoded natively too when the
 * build found those libraries; they live in h5py's and PyTables' own HDF5
 * copies, not in the system HDF5, so without this they could not be read. Each worker owns a decoder, so the
 * decompressor object is never shared.
 */
#include "decode.h"

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

struct ml_decoder {
#ifdef ML_HAVE_LIBDEFLATE
    struct libdeflate_decompressor *dd; /* owned */
#endif
    unsigned char *tmp[2];  /* scratch, cap bytes each */
    size_t cap;
};

int ml_decoder_open(ml_decoder **out) {
    ml_decoder *d = calloc(1, sizeof *d);
    if (!d)
        return -ENOMEM;
#ifdef ML_HAVE_LIBDEFLATE
    d->dd = libdeflate_alloc_decompressor();
    if (!d->dd) {
        free(d);
        return -ENOMEM;
    }
#endif
    *out = d;
    return 0;
}

void ml_decoder_close(ml_decoder *d) {
    if (!d)
        return;
#ifdef ML_HAVE_LIBDEFLATE
    libdeflate_free_decompressor(d->dd);
#endif
    free(d->tmp[0]);
    free(d->tmp[1]);
    free(d);
}

static int reserve(ml_decoder *d, size_t n) {
    if (d->cap >= n)
        return 0;
    for (int i = 0; i < 2; i++) {
        free(d->tmp[i]);
        d->tmp[i] = malloc(n);
        if (!d->tmp[i]) {
            d->cap = 0;
            return -ENOMEM;
        }
    }
    d->cap = n;
    return 0;
}

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

static int inflate_into(ml_decoder *d, const void *src, size_t len, void *dst,
                        size_t cap, size_t *out_len) {
#ifdef ML_HAVE_LIBDEFLATE
    enum libdeflate_result r = libdeflate_zlib_decompress(d->dd, src, len, dst, cap, out_len);
    return r == LIBDEFLATE_SUCCESS ? 0 : -ML_ECORRUPT;
#else
    (void)d;
    uLongf n = cap;
    int r = uncompress(dst, &n, src, len);
    *out_len = n;
    return r == Z_OK ? 0 : -ML_ECORRUPT;
#endif
}

int ml_decode_supports(int filter_id) {
    switch (filter_id) {
    case ML_FILTER_DEFLATE:
    case ML_FILTER_SHUFFLE:
    case ML_FILTER_FLETCHER32:
        return 1;
#ifdef ML_HAVE_BLOSC
    case ML_FILTER_BLOSC:
        return 1;
#endif
#ifdef ML_HAVE_LZF
    case ML_FILTER_LZF:
        return 1;
#endif
    default:
        return 0;
    }
}

#ifdef ML_HAVE_BLOSC
/* PyTables' blosc filter stores one Blosc buffer per chunk. The _ctx call
 * keeps no global state (plain blosc_decompress takes a global lock), and
 * the header is validated first so a damaged chunk cannot make Blosc read
 * or write out of bounds. */
static int blosc_into(const void *src, size_t len, void *dst, size_t cap, size_t *out_len) {
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
#endif

#ifdef ML_HAVE_LZF
/* h5py's lzf filter stores a raw LZF stream; liblzf checks bounds. */
static int lzf_into(const void *src, size_t len, void *dst, size_t cap, size_t *out_len) {
    unsigned n = lzf_decompress(src, (unsigned)len, dst, (unsigned)cap);
    if (n == 0)
        return -ML_ECORRUPT;
    *out_len = n;
    return 0;
}
#endif

int ml_decode_chunk(ml_decoder *d, const ml_layout *L, unsigned mask, void *src,
                    size_t src_len, void *dst) {
    size_t want = L->chunk_bytes;
    int active[ML_MAX_FILTERS], n_active = 0;
    /* Collect the filters to undo, in reverse pipeline order. */
    for (int i = (int)L->n_filters - 1; i >= 0; i--)
        if (!(mask & (1u << i)))
            active[n_active++] = i;
    int last_transform = -1;
    for (int k = 0; k < n_active; k++)
        if (L->filters[active[k]].id != ML_FILTER_FLETCHER32)
            last_transform = k;
    if (last_transform >= 0 && reserve(d, want) < 0)
        return -ENOMEM;

    unsigned char *cur = src;
    size_t len = src_len;
    int which = 0, rc;
    for (int k = 0; k < n_active; k++) {
        const ml_filter *f = &L->filters[active[k]];
        if (f->id == ML_FILTER_FLETCHER32) {
            if ((rc = fletcher_check(cur, &len)) < 0)
                return rc;
            continue;
        }
        unsigned char *out = k == last_transform ? dst : d->tmp[which];
        which ^= 1;
        if (f->id != ML_FILTER_SHUFFLE) {
            size_t got = 0;
            switch (f->id) {
            case ML_FILTER_DEFLATE:
                /* HDF5's deflate refuses any parameters but one level of 0..9. */
                rc = f->n_values != 1 || f->values[0] > 9 ? -ML_ECORRUPT : inflate_into(d, cur, len, out, want, &got);
                break;
#ifdef ML_HAVE_BLOSC
            case ML_FILTER_BLOSC:
                rc = blosc_into(cur, len, out, want, &got);
                break;
#endif
#ifdef ML_HAVE_LZF
            case ML_FILTER_LZF:
                rc = lzf_into(cur, len, out, want, &got);
                break;
#endif
            default:
                rc = -ML_EFILTER; /* h5layout routes other filters to the slow path */
                break;
            }
            if (rc < 0)
                return rc;
            len = got;
        } else { /* shuffle: client data 0 is the element size */
            /* HDF5's shuffle refuses any other parameters; an optional
             * filter is let through at open, so check here, per chunk. */
            if (f->n_values != 1 || f->values[0] == 0)
                return -ML_ECORRUPT;
            size_t esz = f->values[0];
            if (len > want)
                return -ML_ECORRUPT;
            ml_unshuffle(cur, out, len, esz);
        }
        cur = out;
    }
    if (len != want)
        return -ML_ECORRUPT;
    if (cur != dst)
        memcpy(dst, cur, len);
    return 0;
}
