/* fuzz_chunk_index.c - coverage-guided fuzz target for the chunk-index
 * parser the core owns (src/chunk_index.c): ml_chunk_index_locate, which
 * parses a dataset's object header down to its Data Layout message, and
 * ml_chunk_index_walk, which walks the version 1 B-tree it names.
 *
 * An input is a small parameter header (harness.h: address and length
 * sizes, B-tree K, user-block base, object header address, rank and
 * dataset shape - what h5open.c would learn from HDF5) followed by a
 * file image. The image goes into a memfd, which the core reads through
 * a byte source of this file's own (image_source: pread, as the POSIX
 * source reads a file); nothing else about the core is stubbed. The target aborts (so libFuzzer, or the plain loop in
 * mutate_main.c, reports the input) only when the core breaks a promise
 * of chunk_index.h:
 *  - locate and walk return only the codes their comments list;
 *  - emit sees linear chunk indices in strictly increasing order, each
 *    below the number of chunks of the dataset's grid;
 *  - a chunk at offset UINT64_MAX ("none") has stored size 0, and any
 *    other chunk's bytes [offset, offset + size) lie inside the file,
 *    above the base (the converse, "size 0 means none", is not checked:
 *    a defined address with size 0 is corrupt data the caller refuses,
 *    and the walker may pass it on for that);
 *  - a walk stopped by emit's code returns that code and emits nothing
 *    after it.
 * Memory errors are ASan's and UBSan's to report. Wrong-but-consistent
 * answers (keys that disagree with what HDF5's key-directed descent
 * finds) are not detectable here: that takes HDF5 as the reference.
 *
 * Work is bounded so one input never stalls a campaign: every pread
 * is wrapped at link time (-Wl,--wrap=pread) to count reads and to fail
 * with EDQUOT past READS_MAX, and emit stops the walk with ECANCELED past
 * EMITS_MAX. Both come back through the documented "-errno from pread"
 * and "emit's code" returns, so the caps exercise those paths too.
 *
 * FUZZ_INDEX_VERBOSE=1 prints each input's outcome (2: every chunk too),
 * for replaying one saved input by hand.
 *
 * Where the walk reads the whole index, ml_chunk_index_find (one descent
 * by key) must give the same answer for the chunks it emitted and for
 * the chunks between them: a differential oracle, since both claim to
 * find exactly what HDF5's read finds.
 *
 * A chunk's stored bytes may lie past the end of the file: the walker
 * reports what the index claims, and the reader refuses such a chunk when
 * it reads it (fetch.c, check_chunk), so the rest of the dataset still
 * reads, as issue 6 asks. Only the offset's own arithmetic (at or past the
 * base, no wrap) is the walker's promise, and is checked here.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "chunk_index.h"
#include "error.h"
#include "source.h"
#include "harness.h"
#include "target_util.h"

#define READS_MAX (1u << 16) /* pread calls per input before the wrapper refuses */
#define EMITS_MAX (1u << 20) /* chunks per walk before emit stops it */
#define READ_CAP_ERRNO EDQUOT
#define EMIT_STOP (-ECANCELED)

fuzz_index_outcome fuzz_index_last;

static uint64_t reads;   /* pread calls since the input began */
static int verbose = -1; /* FUZZ_INDEX_VERBOSE, read once */

ssize_t __real_pread(int fd, void *buf, size_t n, off_t off);

/* Every pread of the core comes here first (the link wraps the symbol);
 * __real_pread is the sanitizer's interceptor where there is one, so ASan
 * still checks the buffer the kernel writes into. */
ssize_t __wrap_pread(int fd, void *buf, size_t n, off_t off) {
    if (++reads > READS_MAX) {
        errno = READ_CAP_ERRNO;
        return -1;
    }
    return __real_pread(fd, buf, n, off);
}

/* A promise of chunk_index.h does not hold (target_util.h). */
#define broken(...) fuzz_broken("fuzz_chunk_index", __VA_ARGS__)

/* What emit checks against, and what it has seen. */
typedef struct walk_ctx {
    uint64_t n_grid;   /* chunks in the dataset's grid */
    int no_grid;       /* grid undefined (a chunk dim 0) or > 2^64 chunks: no emit is valid */
    uint64_t base;     /* ml_chunk_file.base */
    uint64_t fsize;    /* ml_chunk_file.size */
    uint64_t prev;     /* last index emitted */
    uint64_t emitted;  /* chunks emitted so far */
    int stopped;       /* emit has returned EMIT_STOP */
    uint64_t kept;     /* entries kept below (the first KEPT_MAX emitted) */
    struct { uint64_t index, offset, size; unsigned mask; } kept_entry[256];
} walk_ctx;

#define KEPT_MAX 256

static int emit(void *ctx_, uint64_t index, uint64_t offset, uint64_t size, unsigned mask) {
    walk_ctx *c = ctx_;
    if (verbose >= 2)
        fprintf(stderr, "  chunk %" PRIu64 " offset %" PRIu64 " size %" PRIu64 " mask %#x\n", index, offset,
                size, mask);
    if (c->stopped)
        broken("emit called again after it returned %d", EMIT_STOP);
    if (c->no_grid)
        broken("chunk %" PRIu64 " emitted for a dataset whose chunk grid is undefined or overflows", index);
    if (index >= c->n_grid)
        broken("chunk index %" PRIu64 " >= %" PRIu64 " chunks in the grid", index, c->n_grid);
    if (c->emitted > 0 && index <= c->prev)
        broken("chunk index %" PRIu64 " after %" PRIu64 ": not strictly increasing", index, c->prev);
    if (offset == UINT64_MAX && size != 0)
        broken("chunk %" PRIu64 ": no offset but stored size %" PRIu64, index, size);
    if (offset != UINT64_MAX && offset < c->base)
        broken("chunk %" PRIu64 ": offset %" PRIu64 " below the base %" PRIu64, index, offset, c->base);
    c->prev = index;
    if (c->kept < KEPT_MAX) {
        c->kept_entry[c->kept].index = index;
        c->kept_entry[c->kept].offset = offset;
        c->kept_entry[c->kept].size = size;
        c->kept_entry[c->kept].mask = mask;
        c->kept++;
    }
    if (++c->emitted >= EMITS_MAX) {
        c->stopped = 1;
        return EMIT_STOP;
    }
    return 0;
}

/* One file descriptor for the whole run: a memfd per input would cost a
 * syscall and an fd slot each time, and ftruncate + pwrite replace its
 * contents completely. */
static int image_fd(const uint8_t *img, size_t n) {
    static int fd = -1;
    if (fd < 0 && (fd = memfd_create("fuzz_chunk_index", MFD_CLOEXEC)) < 0) {
        perror("fuzz_chunk_index: memfd_create");
        abort();
    }
    if (ftruncate(fd, (off_t)n) < 0) {
        perror("fuzz_chunk_index: ftruncate");
        abort();
    }
    for (size_t done = 0; done < n;) {
        ssize_t w = pwrite(fd, img + done, n - done, (off_t)done);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            perror("fuzz_chunk_index: pwrite");
            abort();
        }
        done += (size_t)w;
    }
    return fd;
}

/* The image as a byte source: one synchronous read, resumed, the end of
 * the image reported as the POSIX source reports the end of a file. The
 * walk needs nothing else of a source. */
typedef struct image_source {
    ml_source base;
    int fd;
} image_source;

static int image_read(ml_source *s, ml_io_req *r) {
    int fd = ((image_source *)s)->fd;
    size_t done = 0;
    r->result = 0;
    while (done < r->len) {
        ssize_t got = pread(fd, (char *)r->buf + done, r->len - done, (off_t)(r->offset + done));
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0)
            return (int)(r->result = -errno);
        if (got == 0)
            return -ML_ETRUNC;
        done += (size_t)got;
        r->result = (ssize_t)done;
    }
    return 0;
}

static int image_io_open(ml_source *s, unsigned depth, ml_io_mode mode, ml_io **out) {
    (void)s, (void)depth, (void)mode, (void)out;
    return -EOPNOTSUPP; /* the parser reads one request at a time */
}

static void image_destroy(ml_source *s) { (void)s; /* static */ }

static const ml_source_ops image_ops = {.kind = "fuzz-image", .io_open = image_io_open, .read = image_read,
                                        .destroy = image_destroy};

/* One descent by key must give what the walk gave for that chunk. */
static void expect_find(const ml_chunk_file *f, const ml_chunk_index *ix, unsigned rank, const uint64_t *dims,
                        uint64_t index, uint64_t offset, uint64_t size, unsigned mask) {
    uint64_t o, z;
    unsigned m;
    reads = 0;
    int rc = ml_chunk_index_find(f, ix, rank, dims, NULL, index, &o, &z, &m);
    if (rc == -READ_CAP_ERRNO && reads > READS_MAX)
        return;
    if (rc != 0)
        broken("find of chunk %" PRIu64 " returned %d (%s) in an index the walk read whole", index, rc,
               ml_strerror(rc));
    if (o != offset || (offset != UINT64_MAX && (z != size || m != mask)) || (offset == UINT64_MAX && (z || m)))
        broken("find of chunk %" PRIu64 ": offset %" PRIu64 " size %" PRIu64 " mask %#x, walk: %" PRIu64 " %" PRIu64
               " %#x", index, o, z, m, offset, size, mask);
}

/* The walk and the descent by key must agree wherever the walk read the
 * whole index (both claim to find exactly what HDF5's read finds): every
 * kept entry, and the chunks between and around them, which the walk did
 * not emit. */
static void check_find(const ml_chunk_file *f, const ml_chunk_index *ix, unsigned rank, const uint64_t *dims,
                       const walk_ctx *c) {
    if (c->no_grid || c->n_grid == 0)
        return;
    for (uint64_t i = 0; i < c->kept; i++) {
        uint64_t at = c->kept_entry[i].index;
        expect_find(f, ix, rank, dims, at, c->kept_entry[i].offset, c->kept_entry[i].size, c->kept_entry[i].mask);
        uint64_t before = i ? c->kept_entry[i - 1].index : UINT64_MAX;
        if (at > 0 && at - 1 != before)
            expect_find(f, ix, rank, dims, at - 1, UINT64_MAX, 0, 0);
    }
    if (c->emitted == 0)
        expect_find(f, ix, rank, dims, c->n_grid - 1, UINT64_MAX, 0, 0);
    else if (c->kept == c->emitted && c->prev + 1 < c->n_grid)
        expect_find(f, ix, rank, dims, c->prev + 1, UINT64_MAX, 0, 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    uint64_t dims[FUZZ_INDEX_MAX_RANK];
    ml_chunk_index ix;

    memset(&fuzz_index_last, 0, sizeof fuzz_index_last);
    if (verbose < 0) {
        const char *v = getenv("FUZZ_INDEX_VERBOSE");
        verbose = v ? atoi(v) : 0;
    }
    if (size < FUZZ_INDEX_HEADER_FIXED)
        return 0;
    unsigned rank = data[4];
    size_t hdr = FUZZ_INDEX_HEADER_FIXED + 8 * (size_t)rank;
    if (rank > FUZZ_INDEX_MAX_RANK || size < hdr)
        return 0;
    for (unsigned d = 0; d < rank; d++)
        dims[d] = fuzz_le(data + FUZZ_INDEX_HEADER_FIXED + 8 * d, 8);
    static image_source img;
    if (!img.base.ops)
        ml_source_init(&img.base, &image_ops, 1);
    img.fd = image_fd(data + hdr, size - hdr);
    ml_chunk_file f = {
        .src = &img.base,
        .base = fuzz_le(data + 8, 8),
        .size = size - hdr,
        .sizeof_addr = data[0],
        .sizeof_size = data[1],
        .btree_k = (unsigned)fuzz_le(data + 2, 2),
    };
    uint64_t ohdr = fuzz_le(data + 16, 8);

    reads = 0;
    fuzz_index_last.parsed = 1;
    int rc = ml_chunk_index_locate(&f, ohdr, &ix);
    fuzz_index_last.locate_rc = rc;
    fuzz_index_last.reads = reads;
    if (rc != 0 && rc != -ML_ECORRUPT && rc != -ENOMEM && !(rc == -READ_CAP_ERRNO && reads > READS_MAX))
        broken("ml_chunk_index_locate returned %d (%s), not 0, -ML_ECORRUPT, -ENOMEM or -errno from pread", rc,
               ml_strerror(rc));
    if (verbose)
        fprintf(stderr, "locate: %d (%s) kind %d layout v%u ndims %u addr %#" PRIx64 ", %" PRIu64 " reads\n", rc,
                rc ? ml_strerror(rc) : "ok", rc ? -1 : (int)ix.kind, ix.layout_version, ix.ndims, ix.addr, reads);
    if (rc != 0)
        return 0;
    if ((unsigned)ix.kind > ML_CHUNK_INDEX_BTREE1 || ix.ndims > ML_CHUNK_INDEX_MAX_DIMS)
        broken("locate described kind %d with %u dims", (int)ix.kind, ix.ndims);
    fuzz_index_last.kind = (int)ix.kind;
    /* Every kind, not only BTREE1: the walk answers -ML_EINVAL for kinds it
     * does not walk yet, and this target covers them the day it does. */
    if (ix.kind == ML_CHUNK_INDEX_NONE)
        return 0;

    walk_ctx c = {.n_grid = 1, .base = f.base, .fsize = f.size};
    for (unsigned d = 0; d < rank; d++) {
        /* The grid as chunk_index.h defines it: ceil(dims / chunk dims). */
        uint64_t cd = ix.dims[d];
        if (cd == 0) {
            c.no_grid = 1;
            break;
        }
        uint64_t g = dims[d] / cd + (dims[d] % cd != 0);
        if (g && c.n_grid > UINT64_MAX / g) {
            c.no_grid = 1;
            break;
        }
        c.n_grid *= g;
    }
    reads = 0;
    rc = ml_chunk_index_walk(&f, &ix, rank, dims, NULL, emit, &c);
    fuzz_index_last.walked = 1;
    fuzz_index_last.walk_rc = rc;
    fuzz_index_last.emitted = c.emitted;
    fuzz_index_last.reads += reads;
    if (verbose)
        fprintf(stderr, "walk: %d (%s), %" PRIu64 " chunks of %" PRIu64 ", %" PRIu64 " reads\n", rc,
                rc ? ml_strerror(rc) : "ok", c.emitted, c.no_grid ? 0 : c.n_grid, reads);
    if (c.stopped && rc != EMIT_STOP)
        broken("walk returned %d after emit returned %d: not emit's code", rc, EMIT_STOP);
    if (rc != 0 && rc != -ML_ECORRUPT && rc != -ML_EINVAL && rc != -ENOMEM &&
        !(rc == -READ_CAP_ERRNO && reads > READS_MAX) && !(rc == EMIT_STOP && c.stopped))
        broken("ml_chunk_index_walk returned %d (%s), not 0, -ML_ECORRUPT, -ML_EINVAL, -ENOMEM, "
               "-errno from pread or emit's code", rc, ml_strerror(rc));
    if (rc == 0 && !c.stopped)
        check_find(&f, &ix, rank, dims, &c);
    return 0;
}
