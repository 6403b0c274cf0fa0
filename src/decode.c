/* decode.c - a chunk's filter pipeline undone, read direction.
 *
 * HDF5 applies filters in pipeline order when writing, so we undo them in
 * reverse, each by its row of the codec table (codec.c). A check filter
 * (fletcher32) strips its trailer in place; every other writes to a fresh
 * buffer. The last transforming filter writes straight into the
 * destination, others into two scratch buffers that alternate. Every
 * decoded chunk must be exactly the chunk's bytes long: a short or long
 * result means the stored chunk is damaged. Each filter's parameters are
 * checked per chunk as HDF5's filter checks them (the codec's check).
 *
 * Each worker owns a decoder, holding one context per codec that needs
 * one (libdeflate's decompressor), so no codec state is ever shared.
 */
#include "decode.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct ml_decoder {
    void *ctx[ML_CODEC_MAX];  /* per codec (index in ml_codecs), owned; NULL: none needed */
    unsigned char *tmp[2];    /* scratch, cap bytes each */
    size_t cap;
};

int ml_decoder_open(ml_decoder **out) {
    ml_decoder *d = calloc(1, sizeof *d);
    if (!d)
        return -ENOMEM;
    for (size_t i = 0; i < ml_codec_count; i++)
        if (ml_codecs[i].available && ml_codecs[i].ctx_open && ml_codecs[i].ctx_open(&d->ctx[i]) < 0) {
            ml_decoder_close(d);
            return -ENOMEM;
        }
    *out = d;
    return 0;
}

void ml_decoder_close(ml_decoder *d) {
    if (!d)
        return;
    for (size_t i = 0; i < ml_codec_count; i++)
        if (d->ctx[i])
            ml_codecs[i].ctx_close(d->ctx[i]);
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

int ml_decode_chunk(ml_decoder *d, const ml_pipeline *p, size_t chunk_bytes, unsigned mask, void *src,
                    size_t src_len, void *dst) {
    size_t want = chunk_bytes;
    int active[ML_MAX_FILTERS], n_active = 0;
    const ml_codec *codec[ML_MAX_FILTERS];
    /* Collect the filters to undo, in reverse pipeline order. */
    for (int i = (int)p->n_filters - 1; i >= 0; i--)
        if (!(mask & (1u << i)))
            active[n_active++] = i;
    int last_transform = -1;
    for (int k = 0; k < n_active; k++) {
        codec[k] = ml_codec_find(p->filters[active[k]].id);
        if (!codec[k] || !codec[k]->in_place)
            last_transform = k;
    }
    if (last_transform >= 0 && reserve(d, want) < 0)
        return -ENOMEM;

    unsigned char *cur = src;
    size_t len = src_len;
    int which = 0, rc;
    for (int k = 0; k < n_active; k++) {
        const ml_filter *f = &p->filters[active[k]];
        const ml_codec *c = codec[k];
        if (c && c->in_place) {
            if ((rc = c->decode(d->ctx[c - ml_codecs], f, cur, len, cur, len, &len)) < 0)
                return rc;
            continue;
        }
        unsigned char *out = k == last_transform ? dst : d->tmp[which];
        which ^= 1;
        if (!c || !c->available)
            return -ML_EFILTER; /* the layout routes other filters to the slow path */
        /* HDF5's filter refuses these parameters on every read; an optional
         * filter too, so check here, per chunk. */
        if (c->check && c->check(f))
            return -ML_ECORRUPT;
        size_t got = 0;
        if ((rc = c->decode(d->ctx[c - ml_codecs], f, cur, len, out, want, &got)) < 0)
            return rc;
        len = got;
        cur = out;
    }
    if (len != want)
        return -ML_ECORRUPT;
    if (cur != dst)
        memcpy(dst, cur, len);
    return 0;
}
