/* file_read.c - whole-file reads by path, batched: the FileLoader's engine.
 *
 * A batch runs in two phases on the calling thread. First each job is
 * opened (O_RDONLY | O_NONBLOCK, so a FIFO or device never blocks the
 * open; O_DIRECT too when asked, retried buffered where the filesystem
 * refuses it with EINVAL, as tmpfs does) and fstat'ed; a directory fails
 * with EISDIR, anything not a regular file with EINVAL, a file larger
 * than max_size with EFBIG (its size and the limit in the message), and a
 * size-0 file is done without a read. Then the reads of every opened job
 * go out together: one io_uring_submit() for the whole batch, reaped with
 * io_uring_wait_cqe() (which sleeps in the kernel), or pread() one after
 * another in the fallback. The file's fstat size is what is read: a read
 * that ends early continues where it stopped, one that returns 0 before
 * the size means the file shrank under us (EIO, "shrank"), and a file that
 * grew is read to its fstat size. EINTR and EAGAIN retry the same
 * transfer; every other error ends the job: nothing is retried forever.
 * Opens and fstat are synchronous (io_uring's OPENAT/STATX would batch
 * them too; not done yet: on warm files they cost ~2 us each).
 *
 * O_DIRECT reads whole 4 KiB blocks into the slot (it is 4 KiB aligned
 * and at least the size rounded up), then reports the exact size.
 *
 * Fault injection (fault.c) is checked once per transfer in both engines,
 * as io.c does, so MULTILOAD_FAULTS="eio@3" fails the third read.
 *
 * Budgets (budget.h): a reader given a budget client takes the bytes of
 * the batch's opened files and one I/O per file between the two phases,
 * sleeping while the budget is empty; a wait cancelled by the loader's
 * stop fails those jobs with ECANCELED.
 *
 * Nothing here is shared: an ml_fread belongs to one thread.
 */
#define _GNU_SOURCE
#include "file_read.h"

#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fault.h"
#include "io.h"

#define DIRECT_ALIGN 4096
#define MAX_XFER (1u << 30) /* io_uring_prep_read's length is unsigned: longer reads resume */

struct ml_fread {
    ml_io_mode mode;      /* ML_IO_URING or ML_IO_PREAD */
    int direct;           /* 1: try O_DIRECT */
    unsigned depth;       /* jobs per batch, SQ entries */
    struct io_uring ring; /* valid when mode == ML_IO_URING */
    unsigned *pending;    /* depth job indices awaiting a (re)submit */
    ml_budget_client *budget; /* borrowed, or NULL: tokens taken before each batch's reads */
};

int ml_fread_new(ml_fread **out, unsigned depth, ml_io_mode mode, int direct) {
    ml_fread *r = calloc(1, sizeof *r);
    if (!r)
        return -ENOMEM;
    r->depth = depth < 1 ? 1 : depth > 256 ? 256 : depth;
    r->pending = calloc(r->depth, sizeof *r->pending);
    if (!r->pending) {
        free(r);
        return -ENOMEM;
    }
    if (mode == ML_IO_AUTO)
        mode = ml_io_default_mode();
    r->direct = direct;
    r->mode = ML_IO_PREAD;
    if (mode == ML_IO_URING && io_uring_queue_init(r->depth, &r->ring, 0) == 0)
        r->mode = ML_IO_URING;
    *out = r;
    return 0;
}

void ml_fread_free(ml_fread *r) {
    if (!r)
        return;
    if (r->mode == ML_IO_URING)
        io_uring_queue_exit(&r->ring);
    free(r->pending);
    free(r);
}

ml_io_mode ml_fread_mode(const ml_fread *r) { return r->mode; }

static void fail(ml_fread_job *j, int code, const char *what) {
    ml_error_set(&j->err, code, "%s %s: %s", what, j->path, ml_strerror(code));
    if (j->fd >= 0) {
        close(j->fd);
        j->fd = -1;
    }
}

/* Phase one for job j: open, fstat, checks. Leaves j->fd open iff bytes remain to read. */
static void open_job(ml_fread *r, ml_fread_job *j) {
    int flags = O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY;
    j->size = j->done = 0;
    j->direct_fallback = 0;
    ml_error_clear(&j->err);
    j->fd = open(j->path, flags | (r->direct ? O_DIRECT : 0));
    if (j->fd < 0 && r->direct && errno == EINVAL) {
        j->fd = open(j->path, flags);
        j->direct_fallback = 1;
    }
    if (j->fd < 0) {
        fail(j, -errno, "opening");
        return;
    }
    struct stat st;
    if (fstat(j->fd, &st) < 0) {
        fail(j, -errno, "fstat of");
        return;
    }
    if (S_ISDIR(st.st_mode)) {
        fail(j, -EISDIR, "reading");
        return;
    }
    if (!S_ISREG(st.st_mode)) {
        ml_error_set(&j->err, -EINVAL, "reading %s: not a regular file", j->path);
        fail(j, -EINVAL, "");
        return;
    }
    if ((uint64_t)st.st_size > j->max_size) {
        ml_error_set(&j->err, -EFBIG, "reading %s: the file is %lld bytes, larger than max_file_size (%llu bytes)",
                     j->path, (long long)st.st_size, (unsigned long long)j->max_size);
        fail(j, -EFBIG, "");
        return;
    }
    j->size = (uint64_t)st.st_size;
    if (j->size == 0) {
        close(j->fd);
        j->fd = -1;
    }
}

/* Bytes the next transfer of j asks for. */
static size_t want_of(const ml_fread *r, const ml_fread_job *j) {
    uint64_t left = j->size - j->done;
    if (r->direct && !j->direct_fallback)
        left = (left + DIRECT_ALIGN - 1) / DIRECT_ALIGN * DIRECT_ALIGN; /* within the slot */
    return left > MAX_XFER ? MAX_XFER : (size_t)left;
}

/* Account `got` bytes (or -errno) of a transfer of `want` for j. Returns 1
 * if j needs another transfer, 0 when it is finished (read or failed). */
static int account(ml_fread_job *j, size_t want, ssize_t got) {
    if (got == -EINTR || got == -EAGAIN)
        return 1; /* the same transfer again */
    if (got < 0) {
        fail(j, (int)got, "reading");
        return 0;
    }
    if (got == 0) {
        ml_error_set(&j->err, -EIO, "reading %s: the file shrank while read (%llu of %llu bytes)", j->path,
                     (unsigned long long)j->done, (unsigned long long)j->size);
        fail(j, -EIO, "");
        return 0;
    }
    (void)want;
    j->done += (uint64_t)got;
    if (j->done >= j->size) { /* direct reads whole blocks: keep the exact size */
        j->done = j->size;
        close(j->fd);
        j->fd = -1;
        return 0;
    }
    return 1;
}

static void read_pread(ml_fread *r, ml_fread_job *j) {
    while (j->fd >= 0) {
        size_t want = want_of(r, j);
        int fault = ml_fault_check(&want);
        ssize_t got = fault < 0 ? fault : pread(j->fd, (char *)j->dst + j->done, want, (off_t)j->done);
        if (got < 0 && fault == 0)
            got = -errno;
        account(j, want, got);
    }
}

static void prep(ml_fread *r, ml_fread_job *j, unsigned idx) {
    struct io_uring_sqe *sqe = io_uring_get_sqe(&r->ring); /* never NULL: at most depth in flight */
    io_uring_prep_read(sqe, j->fd, (char *)j->dst + j->done, (unsigned)want_of(r, j), j->done);
    io_uring_sqe_set_data64(sqe, idx);
}

static void read_uring(ml_fread *r, ml_fread_job *jobs, unsigned n) {
    unsigned n_pending = 0, inflight = 0;
    for (unsigned i = 0; i < n; i++)
        if (jobs[i].fd >= 0)
            r->pending[n_pending++] = i;
    while (n_pending > 0 || inflight > 0) {
        while (n_pending > 0) {
            unsigned idx = r->pending[--n_pending];
            prep(r, &jobs[idx], idx);
            inflight++;
        }
        int s = io_uring_submit(&r->ring);
        if (s < 0 && s != -EINTR && s != -EAGAIN && s != -EBUSY)
            break;
        struct io_uring_cqe *cqe;
        int w = io_uring_wait_cqe(&r->ring, &cqe);
        if (w == -EINTR)
            continue;
        if (w < 0)
            break;
        unsigned head, seen = 0;
        io_uring_for_each_cqe(&r->ring, head, cqe) {
            unsigned idx = (unsigned)io_uring_cqe_get_data64(cqe);
            ml_fread_job *j = &jobs[idx];
            ssize_t got = cqe->res;
            size_t want = want_of(r, j);
            int fault = ml_fault_check(&want);
            if (fault < 0)
                got = fault;
            else if (got > 0 && (size_t)got > want)
                got = (ssize_t)want; /* injected short read */
            seen++;
            inflight--;
            if (account(j, want, got))
                r->pending[n_pending++] = idx;
        }
        io_uring_cq_advance(&r->ring, seen);
    }
    /* A ring failure: let what is in flight land before the slots are
     * handed out, then finish the rest with pread. */
    while (inflight > 0) {
        struct io_uring_cqe *cqe;
        if (io_uring_wait_cqe(&r->ring, &cqe) < 0)
            break;
        io_uring_cqe_seen(&r->ring, cqe);
        inflight--;
    }
    for (unsigned i = 0; i < n; i++)
        read_pread(r, &jobs[i]);
}

void ml_fread_set_budget(ml_fread *r, ml_budget_client *c) { r->budget = c; }

/* A budgeted reader takes the opened files' bytes and one I/O per file
 * before reading them; a cancelled wait (the loader stops) fails them. */
static void take_budget(ml_fread *r, ml_fread_job *jobs, unsigned n) {
    uint64_t bytes = 0, ios = 0;
    for (unsigned i = 0; i < n; i++)
        if (jobs[i].fd >= 0) {
            bytes += jobs[i].size;
            ios++;
        }
    if (!r->budget || ios == 0)
        return;
    int rc = ml_budget_client_take(r->budget, bytes, ios);
    for (unsigned i = 0; rc < 0 && i < n; i++)
        if (jobs[i].fd >= 0)
            fail(&jobs[i], rc, "the loader stopped before reading");
}

void ml_fread_batch(ml_fread *r, ml_fread_job *jobs, unsigned n) {
    if (n > r->depth)
        n = r->depth;
    for (unsigned i = 0; i < n; i++)
        open_job(r, &jobs[i]);
    take_budget(r, jobs, n);
    if (r->mode == ML_IO_URING) {
        read_uring(r, jobs, n);
    } else {
        for (unsigned i = 0; i < n; i++)
            read_pread(r, &jobs[i]);
    }
}
