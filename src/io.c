/* io.c - batches of positional reads through io_uring, or pread.
 *
 * Each worker thread owns one ml_io; nothing here is shared between
 * threads, so there is no locking. A batch is submitted in one
 * io_uring_submit() call (up to `depth` SQEs at a time) and reaped with
 * io_uring_wait_cqe(), which sleeps in the kernel: no busy waiting.
 *
 * For files in the page cache the kernel serves an io_uring read inline
 * during io_uring_submit(), copying on the submitting thread, so warm-data
 * throughput comes from having several workers, not from queue depth;
 * registered (fixed) buffers were measured slower on page-cache reads and
 * are not used. Cold reads (or O_DIRECT) complete asynchronously and do
 * benefit from depth.
 *
 * The pread fallback exists because io_uring is often unavailable: seccomp
 * profiles of container runtimes block io_uring_setup, old kernels lack
 * it, and some sysctls (kernel.io_uring_disabled) turn it off. Then each
 * worker reads with pread() on its own thread: the worker pool is the
 * thread pool. MULTILOAD_IO=pread forces it so tests cover both paths.
 *
 * Short reads are continued from where they stopped; a read of 0 bytes
 * before `len` means end of file, reported as -ML_ETRUNC. EAGAIN is retried,
 * except for a `nowait` read (RWF_NOWAIT, in both engines), for which it
 * means "not in the page cache" and is final.
 */
#define _GNU_SOURCE
#include "io.h"

#include <errno.h>
#include <liburing.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "fault.h"

/* valgrind's memcheck cannot see the kernel writing into a buffer through
 * io_uring (unlike pread, whose syscall wrapper it knows), so it would call
 * every byte read that way uninitialised. Tell it; a no-op outside valgrind. */
#if defined(__has_include)
#if __has_include(<valgrind/memcheck.h>)
#include <valgrind/memcheck.h>
#endif
#endif
#ifndef VALGRIND_MAKE_MEM_DEFINED
#define VALGRIND_MAKE_MEM_DEFINED(addr, len) ((void)(addr), (void)(len))
#endif

struct ml_io {
    ml_io_mode mode;     /* ML_IO_URING or ML_IO_PREAD */
    unsigned depth;      /* SQ entries */
    struct io_uring ring;/* valid when mode == ML_IO_URING */
};

static ml_io_mode env_mode(void) {
    const char *v = getenv("MULTILOAD_IO");
    if (!v)
        return ML_IO_AUTO;
    if (strcmp(v, "pread") == 0)
        return ML_IO_PREAD;
    if (strcmp(v, "uring") == 0 || strcmp(v, "io_uring") == 0)
        return ML_IO_URING;
    return ML_IO_AUTO;
}

static pthread_once_t probe_once = PTHREAD_ONCE_INIT;
static ml_io_mode probed_mode; /* written once under probe_once */

static void probe(void) {
    struct io_uring r;
    if (io_uring_queue_init(4, &r, 0) == 0) {
        io_uring_queue_exit(&r);
        probed_mode = ML_IO_URING;
    } else {
        probed_mode = ML_IO_PREAD;
    }
}

ml_io_mode ml_io_default_mode(void) {
    ml_io_mode m = env_mode();
    if (m != ML_IO_AUTO)
        return m;
    pthread_once(&probe_once, probe);
    return probed_mode;
}

int ml_io_open(ml_io **out, unsigned depth, ml_io_mode mode) {
    ml_io *io = calloc(1, sizeof *io);
    if (!io)
        return -ENOMEM;
    if (mode == ML_IO_AUTO)
        mode = ml_io_default_mode();
    io->depth = depth < 1 ? 1 : depth > 256 ? 256 : depth;
    io->mode = ML_IO_PREAD;
    if (mode == ML_IO_URING && io_uring_queue_init(io->depth, &io->ring, 0) == 0)
        io->mode = ML_IO_URING;
    *out = io;
    return 0;
}

void ml_io_close(ml_io *io) {
    if (!io)
        return;
    if (io->mode == ML_IO_URING)
        io_uring_queue_exit(&io->ring);
    free(io);
}

ml_io_mode ml_io_get_mode(const ml_io *io) { return io->mode; }

/* Record the outcome of one transfer of `got` bytes (or -errno) for r,
 * whose first `done` bytes were already read. Returns 1 if r needs more. */
static int account(ml_io_req *r, size_t done, ssize_t got) {
    if (got < 0) {
        r->result = got;
        return 0;
    }
    r->result = (ssize_t)(done + (size_t)got);
    return got > 0 && (size_t)r->result < r->len && !r->no_resume;
}

static int read_pread(ml_io_req *reqs, size_t n) {
    for (size_t i = 0; i < n; i++) {
        ml_io_req *r = &reqs[i];
        r->result = 0;
        int again;
        do {
            size_t done = (size_t)r->result;
            size_t want = r->len - done;
            ssize_t got;
            int fault = ml_fault_check(&want);
            if (fault < 0) {
                got = fault;
            } else if (r->nowait) {
                struct iovec iov = {.iov_base = (char *)r->buf + done, .iov_len = want};
                got = preadv2(r->fd, &iov, 1, (off_t)(r->offset + done), RWF_NOWAIT);
            } else {
                got = pread(r->fd, (char *)r->buf + done, want, (off_t)(r->offset + done));
            }
            if (got < 0 && fault == 0)
                got = -errno;
            if (got == -EINTR || (got == -EAGAIN && !r->nowait)) {
                again = 1; /* retry the same piece */
                continue;
            }
            again = account(r, done, got);
        } while (again);
    }
    return 0;
}

static void prep(struct io_uring *ring, ml_io_req *r, size_t idx) {
    struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
    size_t done = (size_t)r->result;
    /* io_uring_prep_read takes an unsigned length; larger reads resume as short reads. */
    size_t want = r->len - done;
    if (want > (1u << 30))
        want = 1u << 30;
    io_uring_prep_read(sqe, r->fd, (char *)r->buf + done, (unsigned)want, r->offset + done);
    if (r->nowait)
        sqe->rw_flags = RWF_NOWAIT; /* the kernel completes it with -EAGAIN rather than wait */
    io_uring_sqe_set_data64(sqe, idx);
}

static int read_uring(ml_io *io, ml_io_req *reqs, size_t n) {
    /* queue: indices of requests still needing bytes; next: first not yet queued. */
    size_t next = 0, inflight = 0;
    size_t *pending = malloc(n * sizeof *pending);
    size_t n_pending = 0;
    if (!pending)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++)
        reqs[i].result = 0;
    int rc = 0;
    while (next < n || n_pending > 0 || inflight > 0) {
        while (inflight < io->depth && (n_pending > 0 || next < n)) {
            size_t idx = n_pending > 0 ? pending[--n_pending] : next++;
            prep(&io->ring, &reqs[idx], idx);
            inflight++;
        }
        int s = io_uring_submit(&io->ring);
        if (s < 0 && s != -EINTR && s != -EAGAIN && s != -EBUSY) {
            rc = s;
            break;
        }
        struct io_uring_cqe *cqe;
        int w = io_uring_wait_cqe(&io->ring, &cqe);
        if (w == -EINTR)
            continue;
        if (w < 0) {
            rc = w;
            break;
        }
        unsigned head, seen = 0;
        io_uring_for_each_cqe(&io->ring, head, cqe) {
            size_t idx = (size_t)io_uring_cqe_get_data64(cqe);
            ml_io_req *r = &reqs[idx];
            ssize_t got = cqe->res;
            if (got > 0)
                VALGRIND_MAKE_MEM_DEFINED((char *)r->buf + r->result, (size_t)got);
            size_t want = r->len - (size_t)r->result;
            int fault = ml_fault_check(&want);
            if (fault < 0)
                got = fault;
            else if (got > 0 && (size_t)got > want)
                got = (ssize_t)want; /* injected short read */
            seen++;
            inflight--;
            if (got == -EINTR || (got == -EAGAIN && !r->nowait)) {
                pending[n_pending++] = idx;
                continue;
            }
            if (account(r, (size_t)r->result, got))
                pending[n_pending++] = idx;
        }
        io_uring_cq_advance(&io->ring, seen);
    }
    /* Drain anything still in flight after a ring failure so buffers are not
     * written after we return. */
    while (inflight > 0) {
        struct io_uring_cqe *cqe;
        if (io_uring_wait_cqe(&io->ring, &cqe) < 0)
            break;
        io_uring_cqe_seen(&io->ring, cqe);
        inflight--;
    }
    free(pending);
    return rc;
}

int ml_io_read(ml_io *io, ml_io_req *reqs, size_t n) {
    int rc = io->mode == ML_IO_URING ? read_uring(io, reqs, n) : read_pread(reqs, n);
    if (rc < 0)
        return rc;
    for (size_t i = 0; i < n; i++) {
        if (reqs[i].result < 0)
            return (int)reqs[i].result;
        if ((size_t)reqs[i].result < reqs[i].len)
            return -ML_ETRUNC;
    }
    return 0;
}
