/* io.c - the POSIX source: batches of positional reads of one file
 * descriptor through io_uring, or pread.
 *
 * The source (posix_source) is a descriptor and a reference count; it is
 * shared by every thread that reads the file and never changes after it
 * is made, so it needs no lock. Each worker thread opens its own read
 * context (posix_io: an io_uring or nothing) with ml_io_open; nothing in
 * a context is shared between threads, so there is no locking either. A batch is submitted in one
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
 *
 * Fault injection (fault.c) hooks into both engines once per transfer, so
 * "the n-th read" and "a short read" mean one kernel transfer, whichever
 * engine runs it. The source's synchronous read (posix_read: the chunk
 * index walk, the heap checks, the Reader's cached-only reads) is outside
 * it, as those reads always were. The direct variant is a second source
 * on the same open file (reopened through /proc/self/fd with O_DIRECT)
 * whose align says reads must be 4 KiB-aligned; fetch.c widens them.
 *
 * The standing map is one read-only MAP_SHARED mapping of the whole file
 * as fstat sees it the first time anyone asks, made once (standing_map)
 * and unmapped with the source. It serves two things. The view (posix_map):
 * the Reader copies rows out of it, always through ml_map_protect, since a
 * truncated file makes those copies fault; MULTILOAD_MMAP=0 refuses the
 * view (every read is then a read), so tests cover both paths, and so does
 * fault injection, whose faults model the read engines. And what is
 * resident (mincore, which never faults a page in) for the Streamer's
 * read-ahead (streamer.c), beside prefetching (posix_fadvise WILLNEED); a
 * range past the map (the file grew) or a map refused (address space
 * limits) gets a mapping of its own for the call. Measured here: one
 * page 1.6 us through the standing map, 8 us with a map per call; WILLNEED
 * of 8 MiB already cached ~150 us, which is why callers sample before they
 * prefetch.
 */
#define _GNU_SOURCE
#include "io.h"

#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <stdio.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/vfs.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "fault.h"

/* O_DIRECT granularity: offsets, lengths and buffers of a direct read. */
#define ML_IO_DIRECT_ALIGN 4096

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

/* A read-only mapping of the whole file, made once (standing_map). */
typedef struct resident_map {
    void *addr;          /* owned mapping, or NULL: mapping refused (map per call) */
    size_t len;          /* bytes mapped: the file's size when it was made */
    int local;           /* its filesystem is local (fs_is_local): a fault waits for a disk */
} resident_map;

typedef struct posix_source {
    ml_source base;      /* first: a posix_source is an ml_source */
    int fd;              /* owned O_RDONLY (maybe O_DIRECT) descriptor; read-only */
    _Atomic(resident_map *) map; /* owned standing map; NULL until first asked for (set once by CAS) */
} posix_source;

typedef struct posix_io {
    ml_io base;          /* first: a posix_io is an ml_io */
    int fd;              /* the source's descriptor (borrowed through base.src) */
    ml_io_mode mode;     /* ML_IO_URING or ML_IO_PREAD */
    unsigned depth;      /* SQ entries */
    struct io_uring ring;/* valid when mode == ML_IO_URING */
} posix_io;

static const ml_io_ops posix_io_ops;

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

static int posix_io_open(ml_source *src, unsigned depth, ml_io_mode mode, ml_io **out) {
    posix_io *io = calloc(1, sizeof *io);
    if (!io)
        return -ENOMEM;
    if (mode == ML_IO_AUTO)
        mode = ml_io_default_mode();
    io->fd = ((posix_source *)src)->fd;
    io->depth = depth < 1 ? 1 : depth > 256 ? 256 : depth;
    io->mode = ML_IO_PREAD;
    if (mode == ML_IO_URING && io_uring_queue_init(io->depth, &io->ring, 0) == 0)
        io->mode = ML_IO_URING;
    ml_io_init(&io->base, &posix_io_ops, src);
    *out = &io->base;
    return 0;
}

static void posix_io_close(ml_io *io_) {
    posix_io *io = (posix_io *)io_;
    if (io->mode == ML_IO_URING)
        io_uring_queue_exit(&io->ring);
    free(io);
}

static ml_io_mode posix_io_mode(const ml_io *io) { return ((const posix_io *)io)->mode; }

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

static int read_pread(int fd, ml_io_req *reqs, size_t n) {
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
                got = preadv2(fd, &iov, 1, (off_t)(r->offset + done), RWF_NOWAIT);
            } else {
                got = pread(fd, (char *)r->buf + done, want, (off_t)(r->offset + done));
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

static void prep(struct io_uring *ring, int fd, ml_io_req *r, size_t idx) {
    struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
    size_t done = (size_t)r->result;
    /* io_uring_prep_read takes an unsigned length; larger reads resume as short reads. */
    size_t want = r->len - done;
    if (want > (1u << 30))
        want = 1u << 30;
    io_uring_prep_read(sqe, fd, (char *)r->buf + done, (unsigned)want, r->offset + done);
    if (r->nowait)
        sqe->rw_flags = RWF_NOWAIT; /* the kernel completes it with -EAGAIN rather than wait */
    io_uring_sqe_set_data64(sqe, idx);
}

static int read_uring(posix_io *io, ml_io_req *reqs, size_t n) {
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
            prep(&io->ring, io->fd, &reqs[idx], idx);
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

static int posix_io_read(ml_io *io_, ml_io_req *reqs, size_t n) {
    posix_io *io = (posix_io *)io_;
    int rc = io->mode == ML_IO_URING ? read_uring(io, reqs, n) : read_pread(io->fd, reqs, n);
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

static const ml_io_ops posix_io_ops = {.read = posix_io_read, .mode = posix_io_mode, .close = posix_io_close};

/* One request on the calling thread, outside fault injection (the chunk
 * index walk and the heap checks read so; the Reader's cached-only reads
 * stand aside while injection is on). EINTR and, unless nowait, EAGAIN
 * are retried; a nowait read stops at the first byte not cached. */
static int posix_read(ml_source *s, ml_io_req *r) {
    int fd = ((posix_source *)s)->fd;
    size_t done = 0;
    r->result = 0;
    while (done < r->len) {
        ssize_t got;
        if (r->nowait) {
            struct iovec iov = {.iov_base = (char *)r->buf + done, .iov_len = r->len - done};
            got = preadv2(fd, &iov, 1, (off_t)(r->offset + done), RWF_NOWAIT);
        } else {
            got = pread(fd, (char *)r->buf + done, r->len - done, (off_t)(r->offset + done));
        }
        if (got < 0 && (errno == EINTR || (errno == EAGAIN && !r->nowait)))
            continue;
        if (got < 0) {
            r->result = -errno;
            return (int)r->result;
        }
        if (got == 0)
            return -ML_ETRUNC;
        done += (size_t)got;
        r->result = (ssize_t)done;
    }
    return 0;
}

static int posix_identify(ml_source *s, ml_source_id *out) {
    struct stat st;
    if (fstat(((posix_source *)s)->fd, &st) < 0)
        return -errno;
    *out = (ml_source_id){.dev = (uint64_t)st.st_dev, .ino = (uint64_t)st.st_ino, .size = (uint64_t)st.st_size,
                          .mtime_ns = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec};
    return 0;
}

static void posix_destroy(ml_source *s) {
    posix_source *p = (posix_source *)s;
    resident_map *m = atomic_load_explicit(&p->map, memory_order_acquire);
    if (m && m->addr)
        munmap(m->addr, m->len);
    free(m);
    close(p->fd);
    free(p);
}

/* MULTILOAD_MMAP=0: no views (read everything). Read once. */
static int mmap_allowed(void) {
    static _Atomic int allowed = -1;
    int a = atomic_load_explicit(&allowed, memory_order_relaxed);
    if (a < 0) {
        const char *e = getenv("MULTILOAD_MMAP");
        a = !(e && strcmp(e, "0") == 0);
        atomic_store_explicit(&allowed, a, memory_order_relaxed);
    }
    return a;
}

/* 1 if a page fault on fd's filesystem waits for a local block device or
 * memory: the filesystems of local disks and RAM. Network and FUSE
 * filesystems (and anything not listed) can stall a fault forever. */
static int fs_is_local(int fd) {
    struct statfs sf;
    if (fstatfs(fd, &sf) < 0)
        return 0;
    switch ((unsigned long)sf.f_type) {
    case 0xEF53:     /* ext2/3/4 */
    case 0x58465342: /* xfs */
    case 0x9123683E: /* btrfs */
    case 0x01021994: /* tmpfs */
    case 0x858458F6: /* ramfs */
    case 0xF2F52010: /* f2fs */
    case 0x2FC12FC1: /* zfs */
    case 0x4D44:     /* vfat */
    case 0x2011BAB0: /* exfat */
        return 1;
    default:
        return 0;
    }
}

#define PAGE 4096u

/* The standing map, made by the first caller (a loser of the race unmaps
 * its own). NULL only when even the record cannot be allocated. */
static resident_map *standing_map(posix_source *p) {
    /* acquire: pairs with the CAS's release, so addr and len are seen whole. */
    resident_map *m = atomic_load_explicit(&p->map, memory_order_acquire);
    if (m)
        return m;
    m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    struct stat st;
    if (fstat(p->fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0 && (uint64_t)st.st_size <= SIZE_MAX) {
        void *a = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, p->fd, 0);
        if (a != MAP_FAILED) {
            m->addr = a;
            m->len = (size_t)st.st_size;
            m->local = fs_is_local(p->fd);
        }
    }
    resident_map *none = NULL;
    if (atomic_compare_exchange_strong_explicit(&p->map, &none, m, memory_order_acq_rel, memory_order_acquire))
        return m;
    if (m->addr)
        munmap(m->addr, m->len);
    free(m);
    return none; /* the winner's */
}

static int posix_map(ml_source *s, ml_source_view *out) {
    if (!mmap_allowed() || ml_fault_active() || s->align != 1)
        return -EOPNOTSUPP;
    resident_map *m = standing_map((posix_source *)s);
    if (!m || !m->addr)
        return -EOPNOTSUPP;
    *out = (ml_source_view){.base = m->addr, .len = m->len, .local = m->local};
    return 0;
}

/* Resident bytes of [off, off + len) of the pages mapped at `base`, which
 * maps file offset `base_off` (both page-aligned). Returns 0 or -errno. */
static int count_resident(unsigned char *base, uint64_t base_off, uint64_t off, uint64_t len, uint64_t *out) {
    unsigned char vec[256];
    uint64_t end = off + len, got = 0;
    for (uint64_t pg = off / PAGE * PAGE; pg < end; pg += sizeof vec * (uint64_t)PAGE) {
        uint64_t span = end - pg < sizeof vec * (uint64_t)PAGE ? end - pg : sizeof vec * (uint64_t)PAGE;
        if (mincore(base + (pg - base_off), span, vec) < 0)
            return -errno;
        for (uint64_t i = 0; i * PAGE < span; i++) {
            if (!(vec[i] & 1))
                continue;
            uint64_t a = pg + i * PAGE, b = a + PAGE;
            got += (b < end ? b : end) - (a > off ? a : off);
        }
    }
    *out = got;
    return 0;
}

static int posix_resident(ml_source *s, uint64_t off, uint64_t len, uint64_t *out) {
    posix_source *p = (posix_source *)s;
    *out = 0;
    if (len == 0)
        return 0;
    if (off > UINT64_MAX - len)
        return -EINVAL;
    resident_map *m = standing_map(p);
    if (m && m->addr && off + len <= m->len)
        return count_resident(m->addr, 0, off, len, out);
    /* Past the standing map, or none: a map of just this range. */
    uint64_t a = off / PAGE * PAGE, b = (off + len + PAGE - 1) / PAGE * PAGE;
    if (b - a > SIZE_MAX || a > (uint64_t)INT64_MAX)
        return -EINVAL;
    void *map = mmap(NULL, (size_t)(b - a), PROT_READ, MAP_SHARED, p->fd, (off_t)a);
    if (map == MAP_FAILED)
        return errno == ENODEV || errno == EACCES ? -EOPNOTSUPP : -errno;
    int rc = count_resident(map, a, off, len, out);
    munmap(map, (size_t)(b - a));
    return rc;
}

/* WILLNEED starts the reads (the kernel's readahead into the page cache)
 * and returns; the caller's later reads find the pages. Linux reads at
 * most max(read_ahead_kb, max_sectors_kb) of one WILLNEED call and drops
 * the rest silently (mm/readahead.c, force_page_cache_ra), 128 KiB on many
 * disks, so the range goes in PREFETCH_PIECE pieces. */
#define PREFETCH_PIECE (256u << 10)

static int posix_prefetch(ml_source *s, uint64_t off, uint64_t len) {
    if (len == 0 || off > (uint64_t)INT64_MAX || len > (uint64_t)INT64_MAX - off)
        return 0;
    int fd = ((posix_source *)s)->fd;
    for (uint64_t done = 0; done < len; done += PREFETCH_PIECE) {
        uint64_t n = len - done < PREFETCH_PIECE ? len - done : PREFETCH_PIECE;
        int rc = posix_fadvise(fd, (off_t)(off + done), (off_t)n, POSIX_FADV_WILLNEED);
        if (rc)
            return -rc;
    }
    return 0;
}

static int adopt(int fd, unsigned align, ml_source **out);

/* O_DIRECT through /proc/self/fd: the same open file, not a new open by
 * name, so a file renamed over since is not the one read. */
static int posix_direct(ml_source *s, ml_source **out) {
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", ((posix_source *)s)->fd);
    int fd = open(path, O_RDONLY | O_DIRECT | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    int rc = adopt(fd, ML_IO_DIRECT_ALIGN, out);
    if (rc < 0)
        close(fd);
    return rc;
}

static const ml_source_ops posix_ops = {.kind = "posix", .io_open = posix_io_open, .read = posix_read,
                                        .identify = posix_identify, .direct = posix_direct,
                                        .resident = posix_resident, .prefetch = posix_prefetch,
                                        .destroy = posix_destroy, .map = posix_map};

static int adopt(int fd, unsigned align, ml_source **out) {
    posix_source *p = calloc(1, sizeof *p);
    if (!p)
        return -ENOMEM;
    p->fd = fd;
    atomic_init(&p->map, NULL);
    ml_source_init(&p->base, &posix_ops, align);
    *out = &p->base;
    return 0;
}

int ml_source_posix_adopt(int fd, ml_source **out) { return adopt(fd, 1, out); }

int ml_source_posix_fd(const ml_source *s) { return s->ops == &posix_ops ? ((const posix_source *)s)->fd : -1; }
