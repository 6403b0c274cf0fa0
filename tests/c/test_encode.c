/* test_encode.c - the Writer's forward filters (encode.c) round-trip
 * through the core's decoders (codec.c): shuffle, deflate, lzf and
 * fletcher32, alone and chained as h5py chains them, over compressible
 * and random chunks; a fletcher32 trailer is the one HDF5's check accepts. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "codec.h"
#include "encode.h"

static int round_trip(const ml_pipeline *p, size_t es, const unsigned char *in, size_t n) {
    ml_encoder *e = NULL;
    CHECK_EQ(ml_encoder_open(&e), 0);
    const void *out;
    size_t len;
    unsigned mask;
    const char *why;
    CHECK_EQ(ml_encoder_run(e, p, es, in, n, &out, &len, &mask, &why), 0);
    unsigned char *a = malloc(n + 64), *b = malloc(n + 64);
    memcpy(a, out, len);
    for (int i = (int)p->n_filters - 1; i >= 0; i--) {
        if (mask & (1u << i))
            continue;
        const ml_codec *c = ml_codec_find(p->filters[i].id);
        CHECK(c && c->decode);
        void *ctx = NULL;
        if (c->ctx_open)
            CHECK_EQ(c->ctx_open(&ctx), 0);
        size_t got = 0;
        if (c->in_place) {
            CHECK_EQ(c->decode(ctx, &p->filters[i], a, len, a, n + 64, &got), 0);
        } else {
            CHECK_EQ(c->decode(ctx, &p->filters[i], a, len, b, n + 64, &got), 0);
            memcpy(a, b, got);
        }
        if (c->ctx_close)
            c->ctx_close(ctx);
        len = got;
    }
    CHECK_EQ(len, n);
    CHECK_EQ(memcmp(a, in, n), 0);
    free(a);
    free(b);
    ml_encoder_close(e);
    return 0;
}

int main(void) {
    size_t n = 1 << 16;
    unsigned char *smooth = malloc(n), *noise = malloc(n);
    uint32_t x = 12345;
    for (size_t i = 0; i < n; i++) {
        smooth[i] = (unsigned char)((i / 4) % 7);
        x = x * 1103515245u + 12345u;
        noise[i] = (unsigned char)(x >> 24);
    }
    ml_filter shuf = {.id = ML_FILTER_SHUFFLE, .n_values = 1, .values = {4}};
    ml_filter defl = {.id = ML_FILTER_DEFLATE, .n_values = 1, .values = {4}};
    ml_filter lzf = {.id = ML_FILTER_LZF, .flags = 1, .n_values = 3, .values = {4, 0x105, (unsigned)n}};
    ml_filter f32 = {.id = ML_FILTER_FLETCHER32};
    ml_pipeline ps[] = {
        {1, {shuf}}, {1, {defl}}, {1, {lzf}}, {1, {f32}}, {3, {shuf, defl, f32}}, {3, {shuf, lzf, f32}},
    };
    for (size_t k = 0; k < sizeof ps / sizeof ps[0]; k++) {
        if (ps[k].filters[ps[k].n_filters > 1 ? 1 : 0].id == ML_FILTER_LZF && !ml_decode_supports(ML_FILTER_LZF))
            continue;
        CHECK_EQ(round_trip(&ps[k], 4, smooth, n), 0);
        CHECK_EQ(round_trip(&ps[k], 4, noise, n), 0); /* lzf: stored unfiltered, mask bit set */
        CHECK_EQ(round_trip(&ps[k], 4, noise, n - 3), 0); /* a tail the shuffle copies as is */
    }
    /* ml_shuffle inverts ml_unshuffle. */
    unsigned char *s = malloc(n), *u = malloc(n);
    ml_shuffle(noise, s, n - 5, 8);
    ml_unshuffle(s, u, n - 5, 8);
    CHECK_EQ(memcmp(u, noise, n - 5), 0);
    free(s);
    free(u);
    free(smooth);
    free(noise);
    CHECK_DONE();
}
