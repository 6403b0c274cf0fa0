/* io.h - the read engine: batches of positional reads, served by io_uring
 * or, where io_uring cannot be set up, by plain pread on the calling thread. */
#ifndef ML_IO_H
#define ML_IO_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "error.h"

typedef enum ml_io_mode {
    ML_IO_AUTO = 0,  /* io_uring if it can be set up, else pread; MULTILOAD_IO overrides */
    ML_IO_URING = 1,
    ML_IO_PREAD = 2,
} ml_io_mode;

/* One read: fill buf[0..len) from fd at offset. */
typedef struct ml_io_req {
    int fd;
    uint64_t offset;  /* bytes */
    size_t len;       /* bytes wanted */
    void *buf;        /* borrowed destination */
    ssize_t result;   /* out: bytes read (len unless EOF came first) or -errno */
    int no_resume;    /* 1: a short read is final (O_DIRECT reads at EOF, whose
                         continuation would be unaligned) */
    int nowait;       /* 1: from the page cache only (RWF_NOWAIT): a read that would
                         wait for the device ends with -EAGAIN, not retried (the
                         Reader's helping waiter, which must never block) */
} ml_io_req;

typedef struct ml_io ml_io;

/* Create an engine able to keep `depth` reads in flight. The mode is
 * resolved as: explicit argument, else MULTILOAD_IO=uring|pread, else
 * io_uring with fallback to pread. Returns 0 or -errno (-ENOMEM). */
int ml_io_open(ml_io **out, unsigned depth, ml_io_mode mode);

/* Accepts NULL. */
void ml_io_close(ml_io *io);

/* The mode actually in use (never ML_IO_AUTO). */
ml_io_mode ml_io_get_mode(const ml_io *io);

/* Read every request to completion: short reads are resubmitted for the
 * rest; a read that meets end of file stops there. Fills each result.
 * Returns 0 when every request got all of its bytes, otherwise the first
 * failure: -errno from the kernel, or -ML_ETRUNC for a read that hit EOF. */
int ml_io_read(ml_io *io, ml_io_req *reqs, size_t n);

/* Which mode ML_IO_AUTO picks on this machine (probes io_uring once). */
ml_io_mode ml_io_default_mode(void);

#endif
