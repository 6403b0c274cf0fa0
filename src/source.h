/* source.h - a byte source: where a dataset's bytes come from, behind one
 * interface, so the engines above it (chunk index walks, block fetches,
 * the Reader, the global heap checks) never see a file descriptor.
 *
 * A source is shared and reference counted (ml_source_ref/unref); what it
 * reads with is per thread: ml_io_open() hands out a read context (ml_io)
 * that keeps a batch of reads in flight and is used by one thread at a
 * time. A source offers:
 *   - batched reads of (offset, length, buffer) requests, through an ml_io;
 *   - one read on the calling thread (ml_source_read), for parsers that
 *     read a little at a time (chunk index, global heap);
 *   - optionally cached-only reads (a request's `nowait`: served from what
 *     is already in memory, else -EAGAIN at once);
 *   - its size and identity (device, inode, size, mtime), so a caller can
 *     tell whether two sources are one file;
 *   - optionally a direct-I/O variant (bypassing the page cache), whose
 *     reads must be aligned to its `align`;
 *   - optionally a read-only view of its bytes in memory (a file's
 *     mapping), for gathers of many small pieces without a system call
 *     each; copies out of it go through ml_map_protect (mapcopy.h).
 *   - optionally what is in memory already (`resident`: how many bytes of
 *     a range a read would not wait for) and a hint to start reading a
 *     range now without waiting (`prefetch`), so a stream can keep the
 *     device busy ahead of its readers (streamer.c's read-ahead).
 *
 * How to add a source: one .c file that embeds `ml_source` first in its
 * own struct and `ml_io` first in its read context, fills an
 * ml_source_ops (io_open, read and destroy are required; the rest may be NULL:
 * no identity, no direct variant, cannot tell what is resident, no prefetch), calls ml_source_init() and
 * ml_io_init() on them, and exports one constructor. io.c (POSIX files)
 * is the first; tests/c/test_source.c holds a memory source and a
 * wrapping one that counts and fails requests.
 */
#ifndef ML_SOURCE_H
#define ML_SOURCE_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "error.h"

/* How a read context moves bytes. The POSIX source has two engines;
 * other sources may ignore it. */
typedef enum ml_io_mode {
    ML_IO_AUTO = 0,  /* io_uring if it can be set up, else pread; MULTILOAD_IO overrides */
    ML_IO_URING = 1,
    ML_IO_PREAD = 2,
} ml_io_mode;

/* One read: fill buf[0..len) from the source at offset. */
typedef struct ml_io_req {
    uint64_t offset;  /* bytes */
    size_t len;       /* bytes wanted */
    void *buf;        /* borrowed destination */
    ssize_t result;   /* out: bytes read (len unless the end came first) or -errno */
    int no_resume;    /* 1: a short read is final (direct reads at the end, whose
                         continuation would be unaligned) */
    int nowait;       /* 1: cached only (RWF_NOWAIT): a read that would wait for the
                         device ends with -EAGAIN, not retried (the Reader's helping
                         waiter, which must never block) */
} ml_io_req;

/* What a source is: equal ids (dev, ino) are one file. */
typedef struct ml_source_id {
    uint64_t dev;       /* device, or a source kind's own namespace */
    uint64_t ino;       /* inode, or an object id within dev */
    uint64_t size;      /* bytes, as of the call */
    int64_t mtime_ns;   /* last modification, ns since the epoch */
} ml_source_id;

typedef struct ml_source ml_source;
typedef struct ml_io ml_io;

/* A read-only view of bytes [0, len) of a source in memory, valid until
 * the source is destroyed. It does not follow later growth, and bytes the
 * source loses later (a file truncated) fault: copy out of it only inside
 * ml_map_protect (mapcopy.h). A page not in memory is read on first
 * touch, which waits for the device. */
typedef struct ml_source_view {
    const unsigned char *base;
    uint64_t len;       /* bytes */
    int local;          /* 1: such a wait is for a local device or memory (it ends);
                           0: it may be for a network or a user-space filesystem
                           (it may never end), so threads that must stay able to
                           give up never touch the view */
} ml_source_view;

typedef struct ml_source_ops {
    const char *kind;    /* "posix", ...: for messages and tests */
    /* A read context for one thread that keeps up to `depth` reads in
     * flight. Returns 0 or -errno. Required. */
    int (*io_open)(ml_source *s, unsigned depth, ml_io_mode mode, ml_io **out);
    /* One request on the calling thread, resumed until done (or, nowait,
     * until the cache runs out): sets r->result. Returns 0, -ML_ETRUNC (the
     * end came first), -EAGAIN (nowait, not cached) or -errno. Required. */
    int (*read)(ml_source *s, ml_io_req *r);
    /* Fill *out. Returns 0 or -errno. NULL: -EOPNOTSUPP. */
    int (*identify)(ml_source *s, ml_source_id *out);
    /* A new source (one reference, the caller's) reading the same bytes
     * without the page cache, with its own `align`. Returns 0, -EINVAL (not
     * supported here) or -errno. NULL: -EINVAL. */
    int (*direct)(ml_source *s, ml_source **out);
    /* Set *out to how many bytes of [off, off + len) are in memory now (a
     * read of them would not wait for a device). Thread-safe. Returns 0,
     * -EOPNOTSUPP (cannot tell) or -errno. NULL: -EOPNOTSUPP. */
    int (*resident)(ml_source *s, uint64_t off, uint64_t len, uint64_t *out);
    /* Start reading [off, off + len) into memory and return without waiting
     * for it: a hint, whose bytes a later read finds ready. Thread-safe.
     * Returns 0 or -errno (the caller may ignore it). NULL: nothing to do. */
    int (*prefetch)(ml_source *s, uint64_t off, uint64_t len);
    /* Free the source (its refcount reached zero). Required. */
    void (*destroy)(ml_source *s);
    /* Fill *out with a read-only view of the source's bytes (see
     * ml_source_view), made once, on first call; thread-safe. Returns 0, or
     * -EOPNOTSUPP (no view here: read instead). NULL: no view. */
    int (*map)(ml_source *s, ml_source_view *out);
} ml_source_ops;

struct ml_source {
    const ml_source_ops *ops;  /* set by ml_source_init, then read-only */
    _Atomic int refcount;      /* ml_source_ref / ml_source_unref */
    unsigned align;            /* 1: any read; else offsets, lengths and buffers must be
                                  multiples of it (direct I/O); read-only after init */
};

typedef struct ml_io_ops {
    /* Read every request to completion (short reads resumed, a read that
     * meets the end stops there), filling each result. Returns 0 when every
     * request got all its bytes, else the first failure: -errno, or
     * -ML_ETRUNC for a read that met the end. Required. */
    int (*read)(ml_io *io, ml_io_req *reqs, size_t n);
    /* The engine in use (never ML_IO_AUTO). NULL: ML_IO_PREAD. */
    ml_io_mode (*mode)(const ml_io *io);
    /* Free the context (not its source reference: ml_io_close drops that). Required. */
    void (*close)(ml_io *io);
} ml_io_ops;

struct ml_io {
    const ml_io_ops *ops;      /* set by ml_io_init */
    ml_source *src;            /* owned reference: the source this context reads */
};

/* For implementations: set up the common part of a new source (one
 * reference) and of a new read context on `src` (takes its own reference). */
void ml_source_init(ml_source *s, const ml_source_ops *ops, unsigned align);
void ml_io_init(ml_io *io, const ml_io_ops *ops, ml_source *src);

/* Take a reference; the caller already holds one. Returns s. */
ml_source *ml_source_ref(ml_source *s);
/* Drop a reference; the last frees the source. Accepts NULL. */
void ml_source_unref(ml_source *s);

/* One read on the calling thread (see ml_source_ops.read). Borrows r. */
int ml_source_read(ml_source *s, ml_io_req *r);

/* The source's identity and size now. Returns 0, -EOPNOTSUPP or -errno. */
int ml_source_identify(ml_source *s, ml_source_id *out);

/* 1 if a and b read the same bytes (same dev and ino; the same source), 0
 * if not or if either cannot say. */
int ml_source_same(ml_source *a, ml_source *b);

/* The direct-I/O variant of s: *out is a new reference. Returns 0,
 * -EINVAL (none) or -errno. */
int ml_source_direct(ml_source *s, ml_source **out);

/* The source's view in memory (see ml_source_view): 0 with *out set, or
 * -EOPNOTSUPP. */
int ml_source_map(ml_source *s, ml_source_view *out);
/* Bytes of [off, off + len) in memory now, into *out (see ml_source_ops.
 * resident). Returns 0, -EOPNOTSUPP or -errno. */
int ml_source_resident(ml_source *s, uint64_t off, uint64_t len, uint64_t *out);

/* Start reading [off, off + len) without waiting (see ml_source_ops.
 * prefetch). Returns 0 (also when the source has no prefetch) or -errno. */
int ml_source_prefetch(ml_source *s, uint64_t off, uint64_t len);

/* A read context on s for the calling thread (takes a reference to s).
 * Returns 0 or -errno (-ENOMEM). */
int ml_io_open(ml_io **out, ml_source *s, unsigned depth, ml_io_mode mode);

/* Accepts NULL. Drops the context's source reference. */
void ml_io_close(ml_io *io);

/* Read a batch (see ml_io_ops.read). Borrows reqs. */
int ml_io_read(ml_io *io, ml_io_req *reqs, size_t n);

/* The engine actually in use (never ML_IO_AUTO). */
ml_io_mode ml_io_get_mode(const ml_io *io);

/* The source io reads (borrowed). */
ml_source *ml_io_source(const ml_io *io);

#endif
