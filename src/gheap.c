/* gheap.c - global heap collections checked before HDF5 reads them.
 *
 * Invariants:
 *  - The walk is HDF5's (H5HG__cache_heap_deserialize): from the end of
 *    the header, an object header at each step; index 0 (free space)
 *    advances by its size, any other index by the header plus its size
 *    padded to 8; a tail shorter than a header is free space. HDF5 1.10
 *    only asserts that each step stays inside the collection, so its
 *    release build reads past the collection, loops forever (a free space
 *    of size 0, a padded size that wraps to 0) or indexes its object table
 *    out of bounds. Here every step is checked first, with no arithmetic
 *    that can wrap: a collection is accepted only if the walk ends exactly
 *    at its end, each index at most once.
 *  - Nothing is trusted that sizes memory or a read: the header's size is
 *    bounded by the file (limit) before any object is read, the window is
 *    64 KiB at most, the object table grows by doubling up to the 65536
 *    indices an object header can name.
 *
 * Workload: a VLArray of small rows packs hundreds of rows into one 4 KiB
 * to 1 MiB collection, which the walk reads in one to sixteen windows; a
 * row larger than a collection's minimum has a collection of its own, one
 * object, two small reads. The caller (vlen.c) walks each collection once
 * per read.
 */
#define _GNU_SOURCE
#include "gheap.h"

#include "error.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WINDOW (64u * 1024)

static uint64_t get_le(const unsigned char *p, unsigned n) {
    uint64_t v = 0;
    for (unsigned i = n; i-- > 0;)
        v = v << 8 | p[i];
    return v;
}

/* HDF5's H5HG_ALIGN: the next multiple of 8 (x below 2^64 - 8). */
static uint64_t align8(uint64_t x) { return (x + 7) & ~(uint64_t)7; }

/* Bytes of the collection header and of an object header: HDF5's
 * H5HG_SIZEOF_HDR and H5HG_SIZEOF_OBJHDR, both 16 for any length size. */
static uint64_t header_bytes(unsigned sizeof_size) { return align8(4 + 1 + 3 + sizeof_size); }
static uint64_t obj_header_bytes(unsigned sizeof_size) { return align8(2 + 2 + 4 + sizeof_size); }

int ml_gheap_read_header(ml_gheap *H, uint64_t addr, uint64_t limit, unsigned sizeof_size,
                         ml_gheap_read_fn rd, void *ctx, char *why, size_t why_len) {
    unsigned char hdr[16];
    uint64_t hb = header_bytes(sizeof_size);
    memset(H, 0, sizeof *H);
    if (sizeof_size < 2 || sizeof_size > 8) {
        snprintf(why, why_len, "lengths of %u bytes", sizeof_size);
        return -ML_ECORRUPT;
    }
    if (limit < ML_GHEAP_MIN_SIZE || addr > limit - ML_GHEAP_MIN_SIZE) {
        snprintf(why, why_len, "its global heap collection at address %llu lies past the end of the file "
                 "(%llu bytes)", (unsigned long long)addr, (unsigned long long)limit);
        return -ML_ECORRUPT;
    }
    int rc = rd(ctx, addr, hdr, (size_t)hb);
    if (rc < 0) {
        snprintf(why, why_len, "cannot read its global heap collection at address %llu",
                 (unsigned long long)addr);
        return rc;
    }
    if (memcmp(hdr, "GCOL", 4) != 0) {
        snprintf(why, why_len, "no global heap collection at address %llu (no GCOL signature)",
                 (unsigned long long)addr);
        return -ML_ECORRUPT;
    }
    if (hdr[4] != 1) {
        snprintf(why, why_len, "the global heap collection at address %llu has version %u (HDF5 knows 1)",
                 (unsigned long long)addr, hdr[4]);
        return -ML_ECORRUPT;
    }
    uint64_t size = get_le(hdr + 8, sizeof_size);
    if (size < ML_GHEAP_MIN_SIZE || size > limit - addr) {
        snprintf(why, why_len, "the global heap collection at address %llu claims %llu bytes (at least %u, and "
                 "at most the %llu the file holds from there)", (unsigned long long)addr,
                 (unsigned long long)size, ML_GHEAP_MIN_SIZE, (unsigned long long)(limit - addr));
        return -ML_ECORRUPT;
    }
    H->addr = addr;
    H->size = size;
    return 0;
}

/* The bytes of the collection read so far: [start, start + len). */
typedef struct window {
    unsigned char *buf; /* owned, WINDOW bytes */
    uint64_t start;     /* offset inside the collection */
    size_t len;
} window;

/* Make [off, off + n) of the collection (n <= 16, off + n <= H->size) be
 * in w, reading up to WINDOW bytes from off. Returns a pointer to off's
 * byte, or NULL with *rc set. */
static const unsigned char *window_at(window *w, const ml_gheap *H, uint64_t off, size_t n,
                                      ml_gheap_read_fn rd, void *ctx, int *rc) {
    if (off >= w->start && off - w->start + n <= w->len)
        return w->buf + (off - w->start);
    uint64_t left = H->size - off;
    size_t len = left < WINDOW ? (size_t)left : WINDOW;
    *rc = rd(ctx, H->addr + off, w->buf, len);
    if (*rc < 0)
        return NULL;
    w->start = off;
    w->len = len;
    return w->buf;
}

static int cmp_obj(const void *a, const void *b) {
    uint16_t x = ((const ml_gheap_obj *)a)->idx, y = ((const ml_gheap_obj *)b)->idx;
    return (x > y) - (x < y);
}

int ml_gheap_walk(ml_gheap *H, unsigned sizeof_size, ml_gheap_read_fn rd, void *ctx, char *why,
                  size_t why_len) {
    window w = {.buf = malloc(WINDOW)};
    uint64_t oh = obj_header_bytes(sizeof_size), p = header_bytes(sizeof_size);
    size_t cap = 0;
    int rc = 0, free_seen = 0;
    unsigned long long at = (unsigned long long)H->addr;
    if (!w.buf) {
        rc = -ENOMEM;
        goto out;
    }
    while (p < H->size) {
        if (H->size - p < oh) { /* HDF5: a tail too short for a header is free space */
            if (free_seen) {
                snprintf(why, why_len, "the global heap collection at address %llu has two free spaces", at);
                rc = -ML_ECORRUPT;
                goto out;
            }
            break;
        }
        const unsigned char *h = window_at(&w, H, p, (size_t)oh, rd, ctx, &rc);
        if (!h) {
            snprintf(why, why_len, "cannot read the global heap collection at address %llu", at);
            goto out;
        }
        unsigned idx = (unsigned)get_le(h, 2);
        uint64_t size = get_le(h + 8, sizeof_size), room = H->size - p;
        if (idx == 0) {
            /* The free space's size includes its header and is a multiple
             * of 8: anything else moves HDF5's walk off the object headers
             * (0: forever in place). */
            if (free_seen || size < oh || size % 8 || size > room) {
                snprintf(why, why_len, "the free space of the global heap collection at address %llu (%llu "
                         "bytes at offset %llu of %llu) is malformed%s", at, (unsigned long long)size,
                         (unsigned long long)p, (unsigned long long)H->size, free_seen ? " (twice)" : "");
                rc = -ML_ECORRUPT;
                goto out;
            }
            free_seen = 1;
            p += size;
            continue;
        }
        if (size > room - oh || align8(size) > room - oh) { /* size <= room - oh < 2^64 - 8: no wrap */
            snprintf(why, why_len, "object %u of the global heap collection at address %llu claims %llu bytes, "
                     "past the collection's end (%llu bytes left)", idx, at, (unsigned long long)size,
                     (unsigned long long)(room - oh));
            rc = -ML_ECORRUPT;
            goto out;
        }
        if (H->n_objs == cap) {
            size_t ncap = cap ? 2 * cap : 64;
            ml_gheap_obj *n = realloc(H->objs, ncap * sizeof *n);
            if (!n) {
                rc = -ENOMEM;
                goto out;
            }
            H->objs = n;
            cap = ncap;
        }
        H->objs[H->n_objs++] = (ml_gheap_obj){.size = size, .idx = (uint16_t)idx};
        p += oh + align8(size);
    }
    if (H->n_objs > 1) /* a collection of only free space has no array to sort (NULL) */
        qsort(H->objs, H->n_objs, sizeof *H->objs, cmp_obj);
    for (size_t i = 1; i < H->n_objs; i++)
        if (H->objs[i].idx == H->objs[i - 1].idx) {
            snprintf(why, why_len, "the global heap collection at address %llu holds object %u twice", at,
                     H->objs[i].idx);
            rc = -ML_ECORRUPT;
            goto out;
        }
out:
    free(w.buf);
    if (rc < 0) {
        free(H->objs);
        H->objs = NULL;
        H->n_objs = 0;
    }
    return rc;
}

const ml_gheap_obj *ml_gheap_find(const ml_gheap *H, uint64_t idx) {
    size_t lo = 0, hi = H->n_objs;
    if (idx == 0 || idx > UINT16_MAX)
        return NULL;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (H->objs[mid].idx < idx)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < H->n_objs && H->objs[lo].idx == idx ? &H->objs[lo] : NULL;
}

void ml_gheap_free(ml_gheap *H) {
    if (!H)
        return;
    free(H->objs);
    H->objs = NULL;
    H->n_objs = 0;
}
