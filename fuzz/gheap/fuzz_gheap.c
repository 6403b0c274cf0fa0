/* fuzz_gheap.c - coverage-guided fuzz target for the global heap parser
 * the core owns (src/gheap.c): ml_gheap_read_header, ml_gheap_walk,
 * ml_gheap_find and ml_gheap_free, which vlen.c runs on every collection
 * a VLArray row points into before HDF5 is allowed to read it.
 *
 * An input is a small header (gheap_harness.h: sizeof_size, a read to
 * fail, the why[] length, the limit, the collection's address) and then
 * an image of the file from its base on. The core's read callback copies
 * from the image; nothing else is stubbed. The target aborts (so
 * libFuzzer, or fuzz/index/mutate_main.c's loop, saves the input) when
 * the core breaks a promise of gheap.h:
 *  - both functions return only 0, -ML_ECORRUPT, -ENOMEM (only when an
 *    allocation failed) or the read's own error, and a failed read's
 *    error or a failed allocation is what they return;
 *  - -ML_ECORRUPT comes with a why[] that is NUL-terminated and says
 *    something; a failed header leaves H zeroed, a failed walk leaves no
 *    objects;
 *  - the read callback is asked only for bytes of the collection: while
 *    the header is read, [addr, addr + ML_GHEAP_MIN_SIZE) (all any
 *    collection holds for sure), during the walk [addr, addr + H->size),
 *    always below the limit, never more than the 64 KiB window at once;
 *  - work is bounded: the walk reads at most once per object header, so
 *    at most H->size / 16 + 1 times, and about H->size bytes in all (the
 *    target aborts past twice that plus a window);
 *  - an accepted header says what the image says (GCOL, version 1, the
 *    size field), with ML_GHEAP_MIN_SIZE <= size <= limit - addr;
 *  - an accepted walk lists the objects sorted by index, none twice, none
 *    of index 0, and exactly the objects a second walk written here from
 *    the file format (ref_walk) finds, each object's header and padded
 *    data inside the collection; ml_gheap_find returns each of them,
 *    and NULL for index 0, for the indices between and around them and
 *    past 65535.
 * Allocations and reads can be made to fail (the input says which); the
 * walk must then return -ENOMEM or the read's error, and leak nothing.
 * The second walk is also held to the converse: a collection it accepts
 * (every step inside, free space a multiple of 8 and at least a header,
 * at most one free space counting a short tail, no index twice - the
 * rules gheap.h lists) must not be refused as corrupt. Memory errors and
 * leaks are ASan's and LeakSanitizer's to report.
 *
 * FUZZ_GHEAP_VERBOSE=1 prints each input's outcome (2: every object and
 * read too), for replaying one saved input by hand.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "gheap.h"
#include "gheap_harness.h"
#include "harness.h" /* fuzz/index: the outcome mutate_main.c reads */
#include "target_util.h"

#define WINDOW_MAX (64u * 1024) /* gheap.h: windows of up to 64 KiB */
#define READS_MAX (1u << 20)    /* a hard stop whatever the collection claims */
#define FAIL_ERRNO EIO          /* what the fail_at-th read returns */

fuzz_index_outcome fuzz_index_last;

static int verbose = -1; /* FUZZ_GHEAP_VERBOSE, read once */

/* Allocation failures, injected: the link wraps malloc and realloc
 * (-Wl,--wrap=malloc,--wrap=realloc); while the walk runs (armed), the
 * alloc_fail_at-th call returns NULL. __real_* is the sanitizer's
 * allocator, so ASan still sees every block. */
static unsigned alloc_fail_at, alloc_calls;
static int alloc_armed, alloc_failed;

void *__real_malloc(size_t n);
void *__real_realloc(void *p, size_t n);

static int alloc_fails(void) {
    if (!alloc_armed || ++alloc_calls != alloc_fail_at)
        return 0;
    alloc_failed = 1;
    return 1;
}

void *__wrap_malloc(size_t n) { return alloc_fails() ? NULL : __real_malloc(n); }
void *__wrap_realloc(void *p, size_t n) { return alloc_fails() ? NULL : __real_realloc(p, n); }

/* A promise of gheap.h does not hold (target_util.h). */
#define broken(...) fuzz_broken("fuzz_gheap", __VA_ARGS__)

static uint64_t align8(uint64_t x) { return (x + 7) & ~(uint64_t)7; }

/* The read callback's context: the image, what the caller may ask for,
 * and what it has asked. */
typedef struct image {
    const uint8_t *p;
    uint64_t n;        /* bytes of the image */
    uint64_t limit;    /* the limit passed to the core */
    uint64_t lo, hi;   /* reads must lie in [lo, hi) */
    const char *phase; /* "header" or "walk", for the message */
    unsigned fail_at;  /* 0, or the call that fails */
    uint64_t calls;    /* read calls so far (both phases) */
    uint64_t bytes;    /* bytes asked for in this phase */
    uint64_t phase_calls;
    int last_err;      /* the last error a read returned, 0 if none */
} image;

static int img_read(void *ctx, uint64_t off, void *buf, size_t len) {
    image *im = ctx;
    im->calls++;
    im->phase_calls++;
    im->bytes += len;
    if (verbose >= 2)
        fprintf(stderr, "  read %s: %zu bytes at %" PRIu64 "\n", im->phase, len, off);
    if (im->calls > READS_MAX)
        broken("%" PRIu64 " reads for one input", im->calls);
    if (!buf)
        broken("read of %zu bytes at %" PRIu64 " into NULL", len, off);
    if (len > WINDOW_MAX)
        broken("%s read of %zu bytes at %" PRIu64 ": more than the %u-byte window", im->phase, len, off,
               WINDOW_MAX);
    if (off < im->lo || off > im->hi || len > im->hi - off)
        broken("%s read of [%" PRIu64 ", +%zu) outside [%" PRIu64 ", %" PRIu64 ")", im->phase, off, len, im->lo,
               im->hi);
    if (off > im->limit || len > im->limit - off)
        broken("%s read of [%" PRIu64 ", +%zu) past the limit %" PRIu64, im->phase, off, len, im->limit);
    if (im->fail_at && im->calls == im->fail_at)
        return im->last_err = -FAIL_ERRNO;
    if (off > im->n || len > im->n - off)
        return im->last_err = -ML_ETRUNC; /* a file shorter than the limit says */
    memcpy(buf, im->p + off, len);
    return 0;
}

/* The collection walked again, from the file format and the rules gheap.h
 * lists, straight from the image: 1 and objs[0..*n) (sorted by index) if
 * it is well-formed, else 0 with the reason in *why. objs holds 65536. */
typedef struct ref_obj {
    uint64_t off, size; /* its header's offset in the collection, its data's bytes */
    uint16_t idx;
} ref_obj;

static int cmp_ref(const void *a, const void *b) {
    uint16_t x = ((const ref_obj *)a)->idx, y = ((const ref_obj *)b)->idx;
    return (x > y) - (x < y);
}

static int ref_walk(const uint8_t *c, uint64_t size, unsigned ss, ref_obj *objs, size_t *n, const char **why) {
    const uint64_t hdr = align8(8 + ss), oh = align8(8 + ss);
    int free_seen = 0;
    *n = 0;
    for (uint64_t p = hdr; p < size;) {
        uint64_t room = size - p;
        if (room < oh) { /* a tail too short for a header: free space */
            if (free_seen)
                return *why = "a short tail after a free space", 0;
            break;
        }
        unsigned idx = (unsigned)fuzz_le(c + p, 2);
        uint64_t osize = fuzz_le(c + p + 8, ss);
        if (idx == 0) {
            if (free_seen)
                return *why = "two free spaces", 0;
            if (osize < oh || osize % 8 || osize > room)
                return *why = "a malformed free space", 0;
            free_seen = 1;
            p += osize;
            continue;
        }
        if (osize > room - oh || align8(osize) > room - oh)
            return *why = "an object past the end", 0;
        if (*n >= 65536)
            return *why = "more objects than indices", 0; /* an index twice, then */
        objs[(*n)++] = (ref_obj){.off = p, .size = osize, .idx = (uint16_t)idx};
        p += oh + align8(osize);
    }
    qsort(objs, *n, sizeof *objs, cmp_ref);
    for (size_t i = 1; i < *n; i++)
        if (objs[i].idx == objs[i - 1].idx)
            return *why = "an index twice", 0;
    return 1;
}

static void expect_absent(const ml_gheap *H, uint64_t idx) {
    const ml_gheap_obj *o = ml_gheap_find(H, idx);
    if (o)
        broken("find(%" PRIu64 ") returned object %u, but the collection has no object %" PRIu64, idx, o->idx, idx);
}

/* Every promise about an accepted walk. */
static void check_walked(const ml_gheap *H, const image *im, unsigned ss) {
    static ref_obj ref[65536];
    uint64_t oh = align8(8 + ss), used = align8(8 + ss);
    if (H->n_objs && !H->objs)
        broken("%zu objects but no table", H->n_objs);
    if (H->n_objs > (H->size - align8(8 + ss)) / oh)
        broken("%zu objects in a collection of %" PRIu64 " bytes", H->n_objs, H->size);
    for (size_t i = 0; i < H->n_objs; i++) {
        const ml_gheap_obj *o = &H->objs[i];
        if (verbose >= 2)
            fprintf(stderr, "  object %u: %" PRIu64 " bytes\n", o->idx, o->size);
        if (o->idx == 0)
            broken("object %zu has index 0 (the free space)", i);
        if (i && o->idx <= H->objs[i - 1].idx)
            broken("object %u after object %u: indices not sorted or twice", o->idx, H->objs[i - 1].idx);
        if (o->size > H->size || align8(o->size) + oh > H->size - used)
            broken("objects up to %u (%" PRIu64 " bytes) do not fit the collection's %" PRIu64 " bytes", o->idx,
                   o->size, H->size);
        used += oh + align8(o->size);
    }
    /* the lookup */
    expect_absent(H, 0);
    expect_absent(H, 65536);
    expect_absent(H, UINT64_MAX);
    expect_absent(H, (uint64_t)1 << 32 | (H->n_objs ? H->objs[0].idx : 1)); /* no truncation to 16 bits */
    for (size_t i = 0; i < H->n_objs; i++) {
        uint16_t idx = H->objs[i].idx;
        if (ml_gheap_find(H, idx) != &H->objs[i])
            broken("find(%u) did not return object %u", idx, idx);
        if (idx > 1 && (i == 0 || H->objs[i - 1].idx != idx - 1))
            expect_absent(H, idx - 1u);
        if (idx < 65535 && (i + 1 == H->n_objs || H->objs[i + 1].idx != idx + 1))
            expect_absent(H, idx + 1u);
    }
    if (H->n_objs == 0)
        expect_absent(H, 1);
    /* the reads: once per object header at most (and the free space) */
    if (im->phase_calls > H->n_objs + 1)
        broken("%" PRIu64 " walk reads for %zu objects", im->phase_calls, H->n_objs);
    /* the same objects as the file format's walk */
    if (H->addr > im->n || H->size > im->n - H->addr)
        return; /* reads past the image failed, so the walk cannot have succeeded; see the caller */
    size_t n;
    const char *why = "";
    if (!ref_walk(im->p + H->addr, H->size, ss, ref, &n, &why))
        broken("walk accepted a collection with %s", why);
    if (n != H->n_objs)
        broken("walk found %zu objects, the format's walk %zu", H->n_objs, n);
    for (size_t i = 0; i < n; i++)
        if (ref[i].idx != H->objs[i].idx || ref[i].size != H->objs[i].size)
            broken("object %zu: walk says index %u, %" PRIu64 " bytes; the format's walk index %u, %" PRIu64
                   " bytes at offset %" PRIu64, i, H->objs[i].idx, H->objs[i].size, ref[i].idx, ref[i].size,
                   ref[i].off);
}

static int documented(int rc, const image *im) {
    return rc == 0 || rc == -ML_ECORRUPT || (rc == -ENOMEM && alloc_failed) || (im->last_err && rc == im->last_err);
}

static void check_why(const char *fn, int rc, const char *why, size_t why_len) {
    if (rc != -ML_ECORRUPT)
        return;
    if (!memchr(why, 0, why_len))
        broken("%s: why[] of %zu bytes not NUL-terminated", fn, why_len);
    if (why_len > 1 && why[0] == 0)
        broken("%s returned -ML_ECORRUPT with an empty why[]", fn);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const ml_gheap zero;
    memset(&fuzz_index_last, 0, sizeof fuzz_index_last);
    if (verbose < 0) {
        const char *v = getenv("FUZZ_GHEAP_VERBOSE");
        verbose = v ? atoi(v) : 0;
    }
    if (size < FUZZ_GHEAP_HEADER)
        return 0;
    unsigned ss = data[0];
    size_t why_len = (size_t)fuzz_le(data + 2, 2);
    if (why_len == 0)
        why_len = 256;
    image im = {
        .p = data + FUZZ_GHEAP_HEADER,
        .n = size - FUZZ_GHEAP_HEADER,
        .limit = fuzz_le(data + 8, 8),
        .fail_at = data[1],
        .phase = "header",
    };
    if (im.limit == 0)
        im.limit = im.n;
    uint64_t addr = fuzz_le(data + 16, 8);
    im.lo = addr;
    im.hi = addr > UINT64_MAX - ML_GHEAP_MIN_SIZE ? UINT64_MAX : addr + ML_GHEAP_MIN_SIZE;
    char *why = malloc(why_len); /* exactly why_len: ASan sees a write past it */
    if (!why)
        abort();
    memset(why, 0x55, why_len);
    fuzz_index_last.parsed = 1;

    ml_gheap H;
    memset(&H, 0xa5, sizeof H); /* the core must set every field */
    int rc = ml_gheap_read_header(&H, addr, im.limit, ss, img_read, &im, why, why_len);
    fuzz_index_last.locate_rc = rc;
    if (verbose)
        fprintf(stderr, "header: %d (%s) addr %" PRIu64 " size %" PRIu64 ", %" PRIu64 " reads%s%.*s\n", rc,
                rc ? ml_strerror(rc) : "ok", rc ? 0 : H.addr, rc ? 0 : H.size, im.calls, rc ? ": " : "",
                rc && memchr(why, 0, why_len) ? (int)why_len : 0, why);
    if (!documented(rc, &im))
        broken("ml_gheap_read_header returned %d (%s), not 0, -ML_ECORRUPT, -ENOMEM or the read's error", rc,
               ml_strerror(rc));
    if (im.last_err && rc != im.last_err)
        broken("ml_gheap_read_header returned %d after a read returned %d", rc, im.last_err);
    check_why("ml_gheap_read_header", rc, why, why_len);
    if (im.phase_calls > 1)
        broken("ml_gheap_read_header made %" PRIu64 " reads", im.phase_calls);
    if (rc != 0) {
        if (memcmp(&H, &zero, sizeof H) != 0)
            broken("ml_gheap_read_header failed and left H not zeroed");
        ml_gheap_free(&H);
        free(why);
        return 0;
    }
    /* What the header said, and that the core read it as it says. */
    if (ss < 2 || ss > 8)
        broken("header accepted with lengths of %u bytes", ss);
    if (H.addr != addr || H.objs || H.n_objs)
        broken("header: addr %" PRIu64 " (asked %" PRIu64 "), %zu objects", H.addr, addr, H.n_objs);
    if (H.size < ML_GHEAP_MIN_SIZE || addr > im.limit || H.size > im.limit - addr)
        broken("header accepted a collection of %" PRIu64 " bytes at %" PRIu64 " (limit %" PRIu64 ")", H.size,
               addr, im.limit);
    if (addr > im.n || im.n - addr < 16)
        broken("header accepted at %" PRIu64 " with %" PRIu64 " bytes of image", addr, im.n);
    const uint8_t *c = im.p + addr;
    if (memcmp(c, "GCOL", 4) != 0 || c[4] != 1 || fuzz_le(c + 8, ss) != H.size)
        broken("header accepted: signature %.4s version %u size %" PRIu64 ", H->size %" PRIu64, (const char *)c, c[4],
               fuzz_le(c + 8, ss), H.size);

    im.phase = "walk";
    im.lo = H.addr;
    im.hi = H.addr + H.size;
    im.phase_calls = 0;
    im.bytes = 0;
    im.last_err = 0;
    memset(why, 0x55, why_len);
    alloc_fail_at = data[4];
    alloc_calls = 0;
    alloc_failed = 0;
    alloc_armed = 1;
    rc = ml_gheap_walk(&H, ss, img_read, &im, why, why_len);
    alloc_armed = 0;
    fuzz_index_last.walked = 1;
    fuzz_index_last.walk_rc = rc;
    fuzz_index_last.emitted = H.n_objs;
    fuzz_index_last.reads = im.calls;
    if (verbose)
        fprintf(stderr, "walk: %d (%s), %zu objects, %" PRIu64 " reads, %" PRIu64 " bytes%s%.*s\n", rc,
                rc ? ml_strerror(rc) : "ok", H.n_objs, im.phase_calls, im.bytes, rc ? ": " : "",
                rc && memchr(why, 0, why_len) ? (int)why_len : 0, why);
    if (!documented(rc, &im))
        broken("ml_gheap_walk returned %d (%s), not 0, -ML_ECORRUPT, -ENOMEM or the read's error", rc,
               ml_strerror(rc));
    if (im.last_err && rc != im.last_err)
        broken("ml_gheap_walk returned %d after a read returned %d", rc, im.last_err);
    if (alloc_failed && rc != -ENOMEM)
        broken("ml_gheap_walk returned %d after an allocation failed", rc);
    check_why("ml_gheap_walk", rc, why, why_len);
    if (im.phase_calls > H.size / 16 + 1 || (im.bytes > WINDOW_MAX && (im.bytes - WINDOW_MAX) / 2 > H.size))
        broken("walk of %" PRIu64 " bytes: %" PRIu64 " reads, %" PRIu64 " bytes read", H.size, im.phase_calls,
               im.bytes);
    if (H.addr != addr || H.size != fuzz_le(c + 8, ss))
        broken("walk changed the header: addr %" PRIu64 " size %" PRIu64, H.addr, H.size);
    if (rc == 0) {
        check_walked(&H, &im, ss);
    } else {
        if (H.objs || H.n_objs)
            broken("walk failed (%d) and left %zu objects", rc, H.n_objs);
        if (rc == -ML_ECORRUPT && H.size <= im.n - addr) {
            /* The converse: refused as corrupt, so the format's walk must refuse too. */
            static ref_obj ref[65536];
            size_t n;
            const char *rwhy = "";
            if (ref_walk(c, H.size, ss, ref, &n, &rwhy))
                broken("walk refused as corrupt a well-formed collection (%zu objects): %s", n,
                       memchr(why, 0, why_len) ? why : "(why[] unterminated)");
        }
    }
    ml_gheap_free(&H);
    if (H.objs || H.n_objs)
        broken("ml_gheap_free left objects");
    ml_gheap_free(&H); /* twice: still fine */
    ml_gheap_free(NULL);
    free(why);
    return 0;
}
