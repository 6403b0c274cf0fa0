/* decode.c - a chunk's filter pipeline undone, read direction.
 *
 * HDF5 applies filters in pipeline order when writing, so we undo them in
 * reverse, each by its row of the codec table (codec.c), whatever that
 * order is. A check filter (fletcher32) strips its trailer in place; every
 * other writes to a fresh buffer. A check filter need not be last: netCDF-C
 * writes [fletcher32, deflate], jhdf [fletcher32, shuffle, deflate], so the
 * filters undone before it produce the chunk plus its 4-byte trailer, and
 * the sum covers exactly the bytes it was computed on. So every
 * transforming step has one size a correct chunk decodes to (after[]: the
 * chunk's bytes plus the trailers still to strip; it is what that filter
 * was handed on write); a step that produces any other size means the
 * stored chunk is damaged. The last transforming filter writes straight
 * into the destination when no trailer is left after it, others into two
 * scratch buffers (the chunk plus every trailer) that alternate. Each
 * filter's parameters are checked per chunk as HDF5's filter checks them
 * (the codec's check).
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
    int active[ML_MAX_FILTERS], n_active = 0;
    const ml_codec *codec[ML_MAX_FILTERS];
    size_t after[ML_MAX_FILTERS]; /* bytes a correct chunk has once step k is undone */
    /* Collect the filters to undo, in reverse pipeline order. */
    for (int i = (int)p->n_filters - 1; i >= 0; i--)
        if (!(mask & (1u << i)))
            active[n_active++] = i;
    /* A check filter undone later still has its trailer in the bytes the
     * steps before it produce: each adds ML_CHECK_TRAILER to their size. */
    size_t grow = 0;
    int last_transform = -1;
    for (int k = n_active - 1; k >= 0; k--) {
        codec[k] = ml_codec_find(p->filters[active[k]].id);
        after[k] = chunk_bytes + grow;
        if (codec[k] && codec[k]->in_place)
            grow += ML_CHECK_TRAILER;
        else if (last_transform < 0)
            last_transform = k;
    }
    /* ML_MAX_FILTERS trailers on a chunk of < 4 GiB: no overflow. */
    if (last_transform >= 0 && reserve(d, chunk_bytes + grow) < 0)
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
            continue; /* its size is the next step's input: checked there */
        }
        /* The last transform writes straight into dst when no trailer is
         * left to strip after it; else into scratch, checked in place. */
        unsigned char *out = k == last_transform && after[k] == chunk_bytes ? dst : d->tmp[which];
        which ^= out != dst;
        if (!c || !c->available)
            return -ML_EFILTER; /* the layout routes other filters to the slow path */
        /* HDF5's filter refuses these parameters on every read; an optional
         * filter too, so check here, per chunk. */
        if (c->check && c->check(f))
            return -ML_ECORRUPT;
        size_t got = 0;
        if ((rc = c->decode(d->ctx[c - ml_codecs], f, cur, len, out, after[k], &got)) < 0)
            return rc;
        if (got != after[k])
            return -ML_ECORRUPT;
        len = got;
        cur = out;
    }
    if (len != chunk_bytes)
        return -ML_ECORRUPT;
    if (cur != dst)
        memcpy(dst, cur, len);
    return 0;
}
