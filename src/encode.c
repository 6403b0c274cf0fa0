/* encode.c - forward filters for the Writer (encode.h).
 *
 * Invariants: a run never writes into `in` (the caller's block stays
 * immutable while PENDING); its output lives in one of the encoder's two
 * scratch buffers, which ping-pong between filters and only grow. Each
 * filter produces exactly what HDF5's own filter would store, so HDF5,
 * h5py and PyTables read the chunk as if they had written it: shuffle is
 * H5Z_filter_shuffle, deflate is a zlib stream (RFC 1950) of level
 * cd_values[0], lzf is a raw LZF stream of the whole chunk or, when it
 * does not shrink, the chunk unfiltered with the filter's mask bit set
 * (h5py registers lzf optional and its filter fails in that case), and
 * fletcher32 appends ml_fletcher32 little-endian (UINT32ENCODE).
 *
 * Workload: one call per chunk on a worker thread, chunks of 64 KiB to a
 * few MiB; the compressors are kept per level so a worker allocates once.
 */
#include "encode.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#ifdef ML_HAVE_LIBDEFLATE
#include <libdeflate.h>
#endif
#ifdef ML_HAVE_LZF
#include <lzf.h>
#endif

#define N_LEVELS 13 /* libdeflate's levels 0..12; HDF5 accepts 0..9 */

struct ml_encoder {
#ifdef ML_HAVE_LIBDEFLATE
    struct libdeflate_compressor *c[N_LEVELS]; /* made on first use of a level */
#endif
    unsigned char *buf[2]; /* scratch, ping-pong */
    size_t cap[2];         /* bytes of buf[k] */
};

void ml_shuffle(const void *src_, void *dst_, size_t n_bytes, size_t size) {
    const unsigned char *src = src_;
    unsigned char *dst = dst_;
    size_t n = size > 1 ? n_bytes / size : 0;
    if (n <= 1) {
        memcpy(dst, src, n_bytes);
        return;
    }
    for (size_t b = 0; b < size; b++) {
        unsigned char *d = dst + b * n;
        const unsigned char *s = src + b;
        for (size_t i = 0; i < n; i++)
            d[i] = s[i * size];
    }
    memcpy(dst + n * size, src + n * size, n_bytes - n * size);
}

int ml_encoder_open(ml_encoder **out) {
    ml_encoder *e = calloc(1, sizeof *e);
    if (!e)
        return -ENOMEM;
    *out = e;
    return 0;
}

void ml_encoder_close(ml_encoder *e) {
    if (!e)
        return;
#ifdef ML_HAVE_LIBDEFLATE
    for (int k = 0; k < N_LEVELS; k++)
        if (e->c[k])
            libdeflate_free_compressor(e->c[k]);
#endif
    free(e->buf[0]);
    free(e->buf[1]);
    free(e);
}

/* Scratch buffer k with at least n bytes. 0 or -ENOMEM. */
static int scratch(ml_encoder *e, int k, size_t n) {
    if (e->cap[k] >= n)
        return 0;
    size_t want = n + n / 8 + 4096;
    unsigned char *p = realloc(e->buf[k], want);
    if (!p)
        return -ENOMEM;
    e->buf[k] = p;
    e->cap[k] = want;
    return 0;
}

int ml_encoder_run(ml_encoder *e, const ml_pipeline *p, size_t elem_size, const void *in, size_t n,
                   const void **out, size_t *out_len, unsigned *mask, const char **why) {
    const unsigned char *cur = in;
    size_t len = n;
    int k = 0; /* the scratch buffer the next filter writes */
    *mask = 0;
    *why = NULL;
    for (unsigned i = 0; i < p->n_filters; i++) {
        const ml_filter *f = &p->filters[i];
        unsigned char *dst;
        switch (f->id) {
        case ML_FILTER_SHUFFLE:
            if (scratch(e, k, len) < 0)
                return -ENOMEM;
            dst = e->buf[k];
            ml_shuffle(cur, dst, len, elem_size);
            break;
        case ML_FILTER_DEFLATE: {
#ifdef ML_HAVE_LIBDEFLATE
            unsigned level = f->n_values > 0 ? f->values[0] : 6;
            if (level >= N_LEVELS) {
                *why = "deflate level out of range";
                return -ML_EFILTER;
            }
            if (!e->c[level] && !(e->c[level] = libdeflate_alloc_compressor((int)level)))
                return -ENOMEM;
            size_t bound = libdeflate_zlib_compress_bound(e->c[level], len);
            if (scratch(e, k, bound) < 0)
                return -ENOMEM;
            dst = e->buf[k];
            size_t got = libdeflate_zlib_compress(e->c[level], cur, len, dst, e->cap[k]);
            if (got == 0) {
                *why = "deflate failed";
                return -ML_EFILTER;
            }
            len = got;
            cur = dst;
            k ^= 1;
            continue;
#else
            *why = "this build has no libdeflate";
            return -ML_EFILTER;
#endif
        }
        case ML_FILTER_LZF: {
#ifdef ML_HAVE_LZF
            if (scratch(e, k, len + 1) < 0)
                return -ENOMEM;
            dst = e->buf[k];
            unsigned got = len > 0 && len <= 0xFFFFFFFFu ? lzf_compress(cur, (unsigned)len, dst, (unsigned)len) : 0;
            if (got == 0) { /* does not shrink: h5py's filter fails, HDF5 skips it */
                if (!(f->flags & 1u /* H5Z_FLAG_OPTIONAL */)) {
                    *why = "lzf cannot shrink the chunk and the filter is mandatory";
                    return -ML_EFILTER;
                }
                *mask |= 1u << i;
                continue;
            }
            len = got;
            cur = dst;
            k ^= 1;
            continue;
#else
            *why = "this build has no liblzf";
            return -ML_EFILTER;
#endif
        }
        case ML_FILTER_FLETCHER32: {
            if (scratch(e, k, len + ML_CHECK_TRAILER) < 0)
                return -ENOMEM;
            dst = e->buf[k];
            memcpy(dst, cur, len);
            uint32_t sum = ml_fletcher32(cur, len);
            dst[len] = (unsigned char)sum;
            dst[len + 1] = (unsigned char)(sum >> 8);
            dst[len + 2] = (unsigned char)(sum >> 16);
            dst[len + 3] = (unsigned char)(sum >> 24);
            len += ML_CHECK_TRAILER;
            break;
        }
        default:
            *why = "the Writer encodes only shuffle, deflate, lzf and fletcher32";
            return -ML_EFILTER;
        }
        cur = dst;
        k ^= 1;
    }
    *out = cur;
    *out_len = len;
    return 0;
}
