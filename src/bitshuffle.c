/* bitshuffle.c - the read side of the bitshuffle filter (id 32008, from
 * hdf5plugin and the bitshuffle package; what Dectris Eiger detectors
 * write): the bit transpose undone within blocks, with or without its LZ4
 * or zstd compression of each block.
 *
 * The format. cd_values: [0, 1] the writer's version, [2] the element
 * size, [3] the block size in elements (0: the default, 8192 bytes'
 * worth rounded down to a multiple of 8, at least 128), [4] 2 for LZ4, 3
 * for zstd, anything else none. A chunk of n elements is cut into blocks
 * of the block size, then one last block of the rest rounded down to a
 * multiple of 8 elements; the last n % 8 elements are stored as they are.
 * Within a block of m elements of s bytes, the transpose stores, for each
 * byte j of an element and each bit b (least significant first), a row of
 * m bits: bit i of the row (bit i % 8 of its byte i / 8) is bit b of byte
 * j of element i. Uncompressed, the stored chunk is those blocks back to
 * back, as long as the chunk. Compressed, a 12-byte header (the chunk's
 * bytes, 8 bytes big-endian; the block size in bytes, 4 BE, which
 * overrides cd_values[3]) comes first, then per block a 4-byte BE size
 * and that many bytes of LZ4 (or zstd) data that decode to the transposed
 * block; the tail of n % 8 elements follows uncompressed.
 *
 * Invariants: every size from the stored chunk is bounded by len and cap
 * before use, every block must decode to exactly its bytes, and the
 * header's total must be the chunk's; parameters are checked as the
 * plugin checks them (at least 3 values, element size not 0, a block size
 * that is a multiple of 8). Per-thread state: a scratch buffer of one
 * block and a zstd context (the codec table's context).
 *
 * Workload: one call per stored chunk on a worker thread; the transpose
 * handles 8 elements' byte j per step, an 8x8 bit-matrix transpose in a
 * 64-bit register.
 */
#include "codec_impl.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#ifdef ML_HAVE_BITSHUFFLE
#include <lz4.h>
#include <zstd.h>
#endif

#define BSHUF_TARGET_BLOCK_BYTES 8192
#define BSHUF_MIN_BLOCK 128
#define BSHUF_MULT 8
#define BSHUF_LZ4 2
#define BSHUF_ZSTD 3

/* Transpose the 8x8 bit matrix whose row r is byte r of x: afterwards
 * bit c of byte r is what bit r of byte c was. */
static inline uint64_t transpose8(uint64_t x) {
    uint64_t t;
    t = (x ^ (x >> 7)) & 0x00AA00AA00AA00AAull;
    x ^= t ^ (t << 7);
    t = (x ^ (x >> 14)) & 0x0000CCCC0000CCCCull;
    x ^= t ^ (t << 14);
    t = (x ^ (x >> 28)) & 0x00000000F0F0F0F0ull;
    x ^= t ^ (t << 28);
    return x;
}

/* One block; `size` a compile-time constant where inlined below, so the
 * strided stores and the row loads unroll. */
static inline void unshuffle_block(const unsigned char *in, unsigned char *out, size_t n, size_t size) {
    size_t row = n / 8; /* bytes of one bit row */
    for (size_t j = 0; j < size; j++) {
        const unsigned char *plane = in + j * 8 * row; /* the 8 rows of byte j */
        for (size_t g = 0; g < row; g++) {
            uint64_t x = 0;
            for (int b = 0; b < 8; b++)
                x |= (uint64_t)plane[(size_t)b * row + g] << (8 * b);
            x = transpose8(x);
            unsigned char *o = out + 8 * g * size + j;
            for (int r = 0; r < 8; r++)
                o[(size_t)r * size] = (unsigned char)(x >> (8 * r));
        }
    }
}

void ml_bitunshuffle_block(const unsigned char *in, unsigned char *out, size_t n, size_t size) {
    switch (size) {
    case 1: unshuffle_block(in, out, n, 1); break;
    case 2: unshuffle_block(in, out, n, 2); break;
    case 4: unshuffle_block(in, out, n, 4); break;
    case 8: unshuffle_block(in, out, n, 8); break;
    default: unshuffle_block(in, out, n, size); break;
    }
}

static size_t default_block(size_t size) {
    size_t b = BSHUF_TARGET_BLOCK_BYTES / size / BSHUF_MULT * BSHUF_MULT;
    return b > BSHUF_MIN_BLOCK ? b : BSHUF_MIN_BLOCK;
}

const char *ml_bitshuffle_check(const ml_filter *f) {
    if (f->n_values < 3)
        return "fewer than the 3 bitshuffle parameters its filter reads";
    if (f->values[2] == 0)
        return "a bitshuffle element size of 0";
    if (f->n_values > 3 && f->values[3] % BSHUF_MULT)
        return "a bitshuffle block size that is not a multiple of 8";
    return NULL;
}

#ifdef ML_HAVE_BITSHUFFLE
typedef struct bshuf_ctx {
    unsigned char *scratch; /* one decompressed block, owned */
    size_t cap;             /* its bytes */
    ZSTD_DCtx *zstd;        /* owned */
} bshuf_ctx;

int ml_bitshuffle_ctx_open(void **out) {
    bshuf_ctx *c = calloc(1, sizeof *c);
    if (!c || !(c->zstd = ZSTD_createDCtx())) {
        free(c);
        return -ENOMEM;
    }
    *out = c;
    return 0;
}

void ml_bitshuffle_ctx_close(void *ctx) {
    bshuf_ctx *c = ctx;
    if (!c)
        return;
    ZSTD_freeDCtx(c->zstd);
    free(c->scratch);
    free(c);
}

/* One compressed block at src + *pos (len bytes in all) into scratch,
 * exactly n bytes; *pos moves past it. */
static int block_decompress(bshuf_ctx *c, int codec, const unsigned char *src, size_t len, size_t *pos, size_t n) {
    if (len - *pos < 4)
        return -ML_ECORRUPT;
    size_t csize = ml_be32(src + *pos);
    *pos += 4;
    if (csize > len - *pos)
        return -ML_ECORRUPT;
    const unsigned char *in = src + *pos;
    *pos += csize;
    if (codec == BSHUF_LZ4) {
        if (csize > INT_MAX || n > INT_MAX)
            return -ML_ECORRUPT;
        int got = LZ4_decompress_safe((const char *)in, (char *)c->scratch, (int)csize, (int)n);
        return got >= 0 && (size_t)got == n ? 0 : -ML_ECORRUPT;
    }
    size_t got = ZSTD_decompressDCtx(c->zstd, c->scratch, n, in, csize);
    return !ZSTD_isError(got) && got == n ? 0 : -ML_ECORRUPT;
}

int ml_bitshuffle_decode(void *ctx, const ml_filter *f, unsigned char *src, size_t len, unsigned char *dst,
                         size_t cap, size_t *out_len) {
    bshuf_ctx *c = ctx;
    size_t size = f->values[2]; /* the check made it non-zero */
    size_t block = f->n_values > 3 ? f->values[3] : 0;
    int codec = f->n_values > 4 && (f->values[4] == BSHUF_LZ4 || f->values[4] == BSHUF_ZSTD) ? (int)f->values[4] : 0;
    size_t total = len, pos = 0;
    if (codec) {
        if (len < 12)
            return -ML_ECORRUPT;
        uint64_t t = ml_be64(src);
        if (t != cap)
            return -ML_ECORRUPT;
        total = (size_t)t;
        block = ml_be32(src + 8) / size; /* the header's block size overrides */
        pos = 12;
    } else if (len > cap) {
        return -ML_ECORRUPT;
    }
    if (total % size)
        return -ML_ECORRUPT; /* the plugin: "Non integer number of elements" */
    if (block == 0)
        block = default_block(size);
    if (block % BSHUF_MULT)
        return -ML_ECORRUPT;
    size_t n = total / size, done = 0; /* elements, and those decoded */
    size_t first = block < n ? block : n - n % BSHUF_MULT; /* the largest block's elements */
    if (codec && first > 0 && c->cap < first * size) {
        free(c->scratch);
        c->cap = 0;
        if (!(c->scratch = malloc(first * size)))
            return -ENOMEM;
        c->cap = first * size;
    }
    while (n - done >= BSHUF_MULT) {
        size_t m = n - done >= block ? block : (n - done) / BSHUF_MULT * BSHUF_MULT;
        size_t bytes = m * size; /* <= total <= cap */
        const unsigned char *in = src + pos;
        if (codec) {
            int rc = block_decompress(c, codec, src, len, &pos, bytes);
            if (rc < 0)
                return rc;
            in = c->scratch;
        } else {
            pos += bytes; /* inside len == total */
        }
        ml_bitunshuffle_block(in, dst + done * size, m, size);
        done += m;
    }
    size_t tail = (n - done) * size;
    if (len - pos < tail)
        return -ML_ECORRUPT;
    memcpy(dst + done * size, src + pos, tail);
    *out_len = total;
    return 0;
}
#endif
