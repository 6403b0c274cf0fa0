/* codec_impl.h - the codecs that live outside codec.c, for its table:
 * hdf5plugin's zstd, lz4 and bzip2 (codec_plugins.c) and bitshuffle
 * (bitshuffle.c). Each function has the signature of its ml_codec member
 * (codec.h) and exists only when its ML_HAVE_* flag is set. Internal to
 * the core. */
#ifndef ML_CODEC_IMPL_H
#define ML_CODEC_IMPL_H

#include "codec.h"

#ifdef ML_HAVE_ZSTD
int ml_zstd_ctx_open(void **ctx);
void ml_zstd_ctx_close(void *ctx);
int ml_zstd_decode(void *ctx, const ml_filter *f, unsigned char *src, size_t len, unsigned char *dst, size_t cap,
                   size_t *out_len);
#endif
#ifdef ML_HAVE_LZ4
int ml_lz4_decode(void *ctx, const ml_filter *f, unsigned char *src, size_t len, unsigned char *dst, size_t cap,
                  size_t *out_len);
#endif
#ifdef ML_HAVE_BZIP2
int ml_bzip2_decode(void *ctx, const ml_filter *f, unsigned char *src, size_t len, unsigned char *dst, size_t cap,
                    size_t *out_len);
#endif

/* Bitshuffle (bitshuffle.c): the check always, the rest with lz4 and zstd. */
const char *ml_bitshuffle_check(const ml_filter *f);
#if defined(ML_HAVE_LZ4) && defined(ML_HAVE_ZSTD)
#define ML_HAVE_BITSHUFFLE 1
int ml_bitshuffle_ctx_open(void **ctx);
void ml_bitshuffle_ctx_close(void *ctx);
int ml_bitshuffle_decode(void *ctx, const ml_filter *f, unsigned char *src, size_t len, unsigned char *dst,
                         size_t cap, size_t *out_len);
#endif

/* Inverse of bitshuffle's transpose of one block of n elements (n a
 * multiple of 8) of `size` bytes: in and out hold n * size bytes and do
 * not overlap. Always built (it needs no library). */
void ml_bitunshuffle_block(const unsigned char *in, unsigned char *out, size_t n, size_t size);

/* Big-endian reads of stored headers (the caller has bounded p). */
static inline uint32_t ml_be32(const unsigned char *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}
static inline uint64_t ml_be64(const unsigned char *p) { return (uint64_t)ml_be32(p) << 32 | ml_be32(p + 4); }

#endif
