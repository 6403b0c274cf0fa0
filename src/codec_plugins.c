/* codec_plugins.c - the read side of hdf5plugin's zstd (id 32015), lz4
 * (id 32004, HDF5's registered lz4 format) and bzip2 (id 307) filters,
 * decoded in the workers instead of through HDF5 under its one lock.
 *
 * Invariants: a decoder never reads past len stored bytes nor writes past
 * cap; every size the stored bytes hold (a frame's content size, lz4's
 * original and block sizes, each block's compressed size) is bounded by
 * len and cap before it is used, and must be exactly what the chunk
 * decodes to: a disagreement is -ML_ECORRUPT, never a guess. Parameters
 * are what the plugins read: none of the three reads any on decode (zstd's
 * level and lz4's block size are for compression; bzip2's block size too).
 * State: one ZSTD_DCtx per worker (the codec table's context); lz4 and
 * bzip2 keep none between chunks.
 *
 * Workload: one call per stored chunk on a worker thread.
 */
#include "codec_impl.h"

#include <errno.h>
#include <limits.h>
#include <string.h>

#ifdef ML_HAVE_ZSTD
#include <zstd.h>
#endif
#ifdef ML_HAVE_LZ4
#include <lz4.h>
#endif
#ifdef ML_HAVE_BZIP2
#include <bzlib.h>
#endif

#ifdef ML_HAVE_ZSTD
int ml_zstd_ctx_open(void **ctx) {
    *ctx = ZSTD_createDCtx();
    return *ctx ? 0 : -ENOMEM;
}

void ml_zstd_ctx_close(void *ctx) { ZSTD_freeDCtx(ctx); }

/* The plugin sizes its output by the first frame's content size
 * (ZSTD_getDecompressedSize): it must be there and be the chunk's. */
int ml_zstd_decode(void *ctx, const ml_filter *f, unsigned char *src, size_t len, unsigned char *dst, size_t cap,
                   size_t *out_len) {
    (void)f;
    unsigned long long want = ZSTD_getFrameContentSize(src, len);
    if (want == ZSTD_CONTENTSIZE_UNKNOWN || want == ZSTD_CONTENTSIZE_ERROR || want != cap)
        return -ML_ECORRUPT;
    size_t n = ZSTD_decompressDCtx(ctx, dst, cap, src, len);
    if (ZSTD_isError(n))
        return -ML_ECORRUPT;
    *out_len = n;
    return 0;
}
#endif

#ifdef ML_HAVE_LZ4
/* A 12-byte header, the original size (8 bytes, big-endian) and the block
 * size (4, BE), then per block its compressed size (4, BE) and the block:
 * LZ4 data, or the bytes themselves when the size equals the block's. */
int ml_lz4_decode(void *ctx, const ml_filter *f, unsigned char *src, size_t len, unsigned char *dst, size_t cap,
                  size_t *out_len) {
    (void)ctx, (void)f;
    if (len < 12)
        return -ML_ECORRUPT;
    uint64_t orig = ml_be64(src);
    uint64_t block = ml_be32(src + 8);
    if (orig != cap)
        return -ML_ECORRUPT;
    if (block > orig)
        block = orig; /* as the plugin does */
    if (block == 0 && orig > 0)
        return -ML_ECORRUPT; /* the plugin would loop for ever */
    size_t pos = 12, done = 0;
    while (done < orig) {
        size_t b = orig - done < block ? orig - done : block;
        if (len - pos < 4)
            return -ML_ECORRUPT;
        size_t c = ml_be32(src + pos);
        pos += 4;
        if (c > len - pos)
            return -ML_ECORRUPT;
        if (c == b) {
            memcpy(dst + done, src + pos, b);
        } else {
            if (c > INT_MAX || b > INT_MAX)
                return -ML_ECORRUPT;
            int n = LZ4_decompress_safe((const char *)src + pos, (char *)dst + done, (int)c, (int)b);
            if (n < 0 || (size_t)n != b)
                return -ML_ECORRUPT;
        }
        pos += c;
        done += b;
    }
    *out_len = done;
    return 0;
}
#endif

#ifdef ML_HAVE_BZIP2
/* One bzip2 stream (the plugin stops at its end, as BuffToBuff does). */
int ml_bzip2_decode(void *ctx, const ml_filter *f, unsigned char *src, size_t len, unsigned char *dst, size_t cap,
                    size_t *out_len) {
    (void)ctx, (void)f;
    if (len > UINT_MAX || cap > UINT_MAX)
        return -ML_ECORRUPT;
    unsigned n = (unsigned)cap;
    int r = BZ2_bzBuffToBuffDecompress((char *)dst, &n, (char *)src, (unsigned)len, 0, 0);
    if (r == BZ_MEM_ERROR)
        return -ENOMEM;
    if (r != BZ_OK)
        return -ML_ECORRUPT;
    *out_len = n;
    return 0;
}
#endif
