/* file_region.c - the whole-file loader's shared region: entries, their
 * states, the queues between consumers and loader threads, and liveness.
 *
 *          request           take_work          complete          get            release
 *   FREE ---------> REQUESTED ---------> LOADING ---------> DONE -------> TAKEN -------> FREE
 *  (consumer copies  (in the request    (a loader thread   (in its worker's (consumer holds
 *   the path in)      FIFO)              opens and reads)   done FIFO)       bytes or a view)
 *
 * A path too long for an entry goes FREE -> DONE at request, failed with
 * ENAMETOOLONG, as open() would fail it; no loader sees it.
 *
 * Cancellation (ml_floader_cancel; the consumer side, under mu only):
 *   REQUESTED -> FREE      taken out of the request FIFO (the FIFO is
 *                          compacted), so no loader ever sees it;
 *   LOADING   -> LOADING + FL_CANCELLED: the loader owns the slot until its
 *                          read ends; complete then makes it FREE instead of
 *                          DONE (abandoned) and wakes the worker;
 *   DONE      -> FREE      taken off the done FIFO (if it is on it).
 * A request is named by (worker, entry, seq): seq changes with every
 * request, so a cancel of an old request never touches a newer one. A
 * *bound* entry (FL_BOUND, ml_floader_submit) is one with a handle: on
 * completion it goes DONE without entering the done FIFO, and only
 * ml_floader_take (with its seq) takes it, so ml_floader_get never hands
 * it to anyone else. Neither flag changes who may write the slot: a user
 * only ever gets a slot through get/take, which a cancelled request never
 * reaches.
 *
 * Invariants (all shared state guarded by the region mutex h->mu):
 *  - Every entry index sits in at most one FIFO: REQUESTED ones in the
 *    request FIFO (capacity: all entries), DONE ones in their worker's done
 *    FIFO (capacity: queue_depth), so neither can overflow. FIFO counters
 *    only grow; slot = counter % capacity.
 *  - An entry's path and slot are written only by the side that owns its
 *    state: the consumer while FREE (request), the loader while LOADING;
 *    the mutex orders those writes with the state change that hands the
 *    entry over, so the reader of the other side sees them.
 *  - Every wait is on a futex word bumped under mu (as in ring.c: read the
 *    word under mu, sleep on that value, so a bump in between returns at
 *    once): loader threads on h->work, worker w's consumer on its word
 *    (bumped on completion, release and close), a loader process's main
 *    thread on h->event (close, server state). close() bumps them all.
 *  - Nothing read from the region is trusted beyond the geometry validated
 *    at attach: every index popped from a FIFO, every path length, is
 *    bounds-checked before use (another process may scribble on it).
 *
 * Liveness. The serving thread (thread 0 of file_serve.c) holds life_mu, a
 * robust process-shared mutex, for as long as it serves. A consumer whose
 * wait slice ends asks ml_floader_check_server(): trylock gives EBUSY while
 * the server lives and EOWNERDEAD once its thread died holding the lock
 * (the kernel's robust list marks it, even for SIGKILL), so a dead loader
 * process is seen within one slice, without pids that could be reused.
 * A region whose server died is marked server_dead for good (its LOADING
 * entries are lost); consumers raise, and a new loader must be made.
 * Both mutexes are robust: a process that died holding mu leaves every
 * store complete (each critical section's stores are single fields), so
 * the next locker marks it consistent and carries on.
 *
 * Memory, one memfd (sealed against shrink and grow) mapped MAP_SHARED:
 *   0            fl_hdr
 *   workers_off  n_workers fl_worker (futex word, done FIFO counters)
 *   fifo_off     request FIFO: n_entries uint32 entry indices
 *   done_off     done FIFOs: n_workers * queue_depth uint32 entry indices
 *   entries_off  n_entries fl_entry (state, path, result)
 *   data_off     n_entries slots of slot_bytes, 4 KiB aligned
 * The data pages are never touched before a file lands in them, so an
 * idle loader costs address space, not memory.
 */
#define _GNU_SOURCE
#include "file_loader.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "event.h"
#include "fault.h"
#include "ring.h"
#include "shm.h"

#define ALIGN 4096
#define FL_MAGIC 0x31454c49464c4d7full /* "\x7fMLFILE1" little-endian */
#define FL_VERSION 2u /* 2: fl_entry.flags, the cancel counters */

/* Server states (fl_hdr.server). */
enum { SRV_NONE = 0, SRV_CLAIMED = 1, SRV_SERVING = 2 };

/* fl_entry.flags */
enum { FL_BOUND = 1u, FL_CANCELLED = 2u };

typedef struct fl_entry {
    uint32_t state;      /* ml_fl_state; guarded by mu */
    uint32_t path_len;   /* bytes of path, < ML_FL_PATH_BYTES; written while FREE */
    uint32_t flags;      /* FL_BOUND, FL_CANCELLED; set at request / cancel, under mu */
    uint32_t pad;
    uint64_t seq;        /* request number; set at request */
    uint64_t size;       /* bytes read; set at complete */
    uint64_t owner;      /* ml_ring_owner_id() of the thread that took it (TAKEN) */
    ml_error error;      /* set at complete (or at request: ENAMETOOLONG) */
    char path[ML_FL_PATH_BYTES]; /* NUL-terminated; written while FREE */
} fl_entry;

typedef struct fl_worker {
    uint32_t word;       /* futex: bumped on completion, release, close; under mu */
    uint32_t waiting;    /* consumer threads asleep on word; under mu */
    uint64_t done_head;  /* done FIFO: next to pop; under mu */
    uint64_t done_tail;  /* done FIFO: next to push; under mu */
} fl_worker;

typedef struct fl_hdr {
    uint64_t magic;          /* FL_MAGIC, stored last at creation */
    uint32_t version;        /* FL_VERSION */
    uint32_t hdr_bytes;      /* sizeof(fl_hdr) */
    uint32_t entry_bytes;    /* sizeof(fl_entry) */
    uint32_t worker_bytes;   /* sizeof(fl_worker) */
    uint32_t n_workers;      /* >= 1 */
    uint32_t queue_depth;    /* >= 1 */
    uint64_t max_file_size;  /* bytes */
    uint64_t slot_bytes;     /* max_file_size rounded up to ALIGN, >= ALIGN */
    uint64_t map_bytes;      /* the region's size */
    pthread_mutex_t mu;      /* guards everything below; robust, process-shared */
    pthread_mutex_t life_mu; /* held by the serving thread while it serves; robust */
    uint32_t work;           /* futex: bumped when a request is queued, on kick and close */
    uint32_t event;          /* futex: bumped on close and server state changes */
    uint32_t closed;         /* 1 once closed */
    uint32_t server;         /* SRV_*: NONE, CLAIMED (starting), SERVING */
    int32_t server_pid;      /* the serving process while SERVING (or the dead one), else 0 */
    uint32_t server_dead;    /* 1 once a server was seen dead; for good */
    uint32_t loaders_waiting;/* loader threads asleep on work */
    uint32_t pad;
    uint64_t req_head;       /* request FIFO: next to pop */
    uint64_t req_tail;       /* request FIFO: next to push */
    uint64_t next_seq;       /* request numbers */
    uint64_t n_requested, n_completed, n_failed, n_bytes, n_direct_fallbacks; /* counters */
    uint64_t n_cancelled, n_abandoned; /* cancelled while queued; while loading or done (counters) */
} fl_hdr;

struct ml_floader {
    _Atomic int refcount;  /* ref/unref; unmapped at 0 */
    fl_hdr *h;             /* the mapping (owned) */
    fl_worker *workers;    /* inside the mapping */
    uint32_t *fifo;        /* request FIFO, n_entries */
    uint32_t *done;        /* done FIFOs, n_workers * depth */
    fl_entry *entries;     /* n_entries */
    unsigned char *data;   /* slot 0 */
    unsigned n_workers, depth, n_entries; /* validated copies */
    uint64_t max_file_size;/* validated copy */
    size_t slot_bytes;     /* validated copy */
    size_t map_bytes;      /* bytes mapped */
    int fd;                /* the memfd (owned) */
    ml_event event;        /* asyncio wake-up (event.h): fired by each completion and the close
                              through this handle */
};

typedef struct fl_geom {
    uint64_t workers_off, fifo_off, done_off, entries_off, data_off, total;
} fl_geom;

/* Offsets for n_workers x depth entries of slot_bytes. 0 or -ENOMEM on overflow. */
static int geometry(uint64_t nw, uint64_t depth, uint64_t sb, fl_geom *g) {
    uint64_t n, a, end;
    if (__builtin_mul_overflow(nw, depth, &n) || n > UINT32_MAX)
        return -ENOMEM;
    g->workers_off = (sizeof(fl_hdr) + 63) / 64 * 64;
    if (__builtin_mul_overflow(nw, (uint64_t)sizeof(fl_worker), &a) ||
        __builtin_add_overflow(g->workers_off, a, &end))
        return -ENOMEM;
    g->fifo_off = (end + 63) / 64 * 64;
    g->done_off = g->fifo_off + (n * 4 + 63) / 64 * 64;
    g->entries_off = g->done_off + (n * 4 + 63) / 64 * 64;
    if (__builtin_mul_overflow(n, (uint64_t)sizeof(fl_entry), &a) ||
        __builtin_add_overflow(g->entries_off, a, &end) ||
        __builtin_add_overflow(end, (uint64_t)ALIGN - 1, &end))
        return -ENOMEM;
    g->data_off = end / ALIGN * ALIGN;
    if (__builtin_mul_overflow(n, sb, &a) || __builtin_add_overflow(g->data_off, a, &g->total) ||
        g->total > SIZE_MAX || g->total > (uint64_t)INT64_MAX)
        return -ENOMEM;
    return 0;
}

static void bind(ml_floader *fl, void *region, unsigned nw, unsigned depth, uint64_t mfs, size_t sb,
                 const fl_geom *g, size_t map_bytes) {
    unsigned char *b = region;
    fl->h = region;
    fl->workers = (fl_worker *)(b + g->workers_off);
    fl->fifo = (uint32_t *)(b + g->fifo_off);
    fl->done = (uint32_t *)(b + g->done_off);
    fl->entries = (fl_entry *)(b + g->entries_off);
    fl->data = b + g->data_off;
    fl->n_workers = nw;
    fl->depth = depth;
    fl->n_entries = nw * depth;
    fl->max_file_size = mfs;
    fl->slot_bytes = sb;
    fl->map_bytes = map_bytes;
}

static void fl_lock(ml_floader *fl) { ml_shm_lock(&fl->h->mu); }
static void fl_unlock(ml_floader *fl) { pthread_mutex_unlock(&fl->h->mu); }

/* Sleep on *word (holding mu; returns holding it) until bumped or deadline
 * (CLOCK_MONOTONIC, NULL: forever). Returns 1 on timeout. As ring_wait. */
static int fl_wait(ml_floader *fl, uint32_t *word, const struct timespec *deadline) {
    uint32_t seen = __atomic_load_n(word, __ATOMIC_RELAXED);
    fl_unlock(fl);
    int timed_out = ml_futex_wait(word, seen, deadline, 0);
    fl_lock(fl);
    return timed_out;
}

/* Bump *word and wake its sleepers in every process. Caller holds mu. */
static void fl_wake(uint32_t *word) { ml_futex_wake_all(word, 0); }

int ml_floader_event_fd(ml_floader *fl) { return ml_event_fd(&fl->event); }

/* The caller's get (timeout 0) locks after this (event.h: what the order gives). */
void ml_floader_arm(ml_floader *fl) { ml_event_arm(&fl->event); }

int ml_floader_new(ml_floader **out, const ml_fl_config *cfg) {
    if (cfg->n_workers < 1 || cfg->queue_depth < 1 || cfg->max_file_size > (uint64_t)INT64_MAX)
        return -ML_EINVAL;
    uint64_t sb = (cfg->max_file_size + ALIGN - 1) / ALIGN * ALIGN;
    if (sb == 0)
        sb = ALIGN;
    fl_geom g;
    if (geometry(cfg->n_workers, cfg->queue_depth, sb, &g) < 0)
        return -ML_EINVAL;
    int rc = -ENOMEM;
    void *region = MAP_FAILED;
    ml_floader *fl = calloc(1, sizeof *fl);
    if (fl) {
        fl->fd = -1;
        ml_event_init(&fl->event);
    }
    if (!fl || ml_fault_alloc() < 0)
        goto fail;
    if (g.total > SIZE_MAX) {
        rc = -ENOMEM;
        goto fail;
    }
    if ((rc = ml_shm_create("multiload-files", (size_t)g.total, &fl->fd, &region)) < 0) {
        region = MAP_FAILED;
        goto fail;
    }
    bind(fl, region, cfg->n_workers, cfg->queue_depth, cfg->max_file_size, sb, &g, g.total);
    fl_hdr *h = fl->h; /* a new memfd reads as zeros: every state FREE, every FIFO empty */
    if ((rc = ml_shm_mutex_init(&h->mu, 1)) < 0 || (rc = ml_shm_mutex_init(&h->life_mu, 1)) < 0)
        goto fail;
    h->version = FL_VERSION;
    h->hdr_bytes = sizeof(fl_hdr);
    h->entry_bytes = sizeof(fl_entry);
    h->worker_bytes = sizeof(fl_worker);
    h->n_workers = cfg->n_workers;
    h->queue_depth = cfg->queue_depth;
    h->max_file_size = cfg->max_file_size;
    h->slot_bytes = sb;
    h->map_bytes = g.total;
    /* Release, last: a half-made region never looks like one. */
    __atomic_store_n(&h->magic, FL_MAGIC, __ATOMIC_RELEASE);
    atomic_init(&fl->refcount, 1);
    *out = fl;
    return 0;
fail:
    if (region != MAP_FAILED)
        munmap(region, g.total);
    if (fl && fl->fd >= 0)
        close(fl->fd);
    free(fl);
    return rc;
}

int ml_floader_attach(ml_floader **out, int fd) {
    void *region = MAP_FAILED;
    size_t len = 0;
    ml_floader *fl = calloc(1, sizeof *fl);
    if (!fl)
        return -ENOMEM;
    fl->fd = -1;
    ml_event_init(&fl->event);
    int rc = ml_shm_map(fd, sizeof(fl_hdr), &region, &len); /* a regular file, sealed against shrinking */
    if (rc < 0) {
        region = MAP_FAILED;
        goto fail;
    }
    rc = -ML_EINVAL;
    /* One copy of each field, then check the copies and use only them. */
    const fl_hdr *h = region;
    uint64_t magic = __atomic_load_n(&h->magic, __ATOMIC_ACQUIRE);
    uint32_t version = h->version, hb = h->hdr_bytes, eb = h->entry_bytes, wb = h->worker_bytes;
    uint32_t nw = h->n_workers, depth = h->queue_depth;
    uint64_t mfs = h->max_file_size, sb = h->slot_bytes, total = h->map_bytes;
    uint64_t want_sb = (mfs + ALIGN - 1) / ALIGN * ALIGN;
    fl_geom g;
    if (magic != FL_MAGIC || version != FL_VERSION || hb != sizeof(fl_hdr) || eb != sizeof(fl_entry) ||
        wb != sizeof(fl_worker) || nw < 1 || depth < 1 || mfs > (uint64_t)INT64_MAX ||
        sb != (want_sb ? want_sb : ALIGN) || geometry(nw, depth, sb, &g) < 0 || total != g.total ||
        total > len)
        goto fail;
    fl->fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (fl->fd < 0) {
        rc = -errno;
        goto fail;
    }
    bind(fl, region, nw, depth, mfs, (size_t)sb, &g, len);
    atomic_init(&fl->refcount, 1);
    *out = fl;
    return 0;
fail:
    if (region != MAP_FAILED)
        munmap(region, len);
    free(fl);
    return rc;
}

int ml_floader_fd(const ml_floader *fl) { return fl->fd; }

void ml_floader_ref(ml_floader *fl) {
    atomic_fetch_add_explicit(&fl->refcount, 1, memory_order_relaxed); /* caller holds one */
}

void ml_floader_unref(ml_floader *fl) {
    if (!fl)
        return;
    /* acq_rel: the last owner sees every use of the mapping before unmapping. */
    if (atomic_fetch_sub_explicit(&fl->refcount, 1, memory_order_acq_rel) != 1)
        return;
    munmap(fl->h, fl->map_bytes); /* other processes may still use the locks: only this mapping goes */
    close(fl->fd);
    ml_event_close(&fl->event);
    free(fl);
}

unsigned ml_floader_n_workers(const ml_floader *fl) { return fl->n_workers; }
unsigned ml_floader_queue_depth(const ml_floader *fl) { return fl->depth; }
uint64_t ml_floader_max_file_size(const ml_floader *fl) { return fl->max_file_size; }

/* Requests queued before a request wakes sleeping loader threads: a
 * quarter of the entries, so a consumer that refills one entry at a time
 * costs the loaders one wake-up per batch, not per file. A consumer about
 * to wait (or polling with nothing ready) wakes them for any queued
 * request (kick_if_pending), so no request waits for the batch to fill. */
static uint64_t wake_batch(const ml_floader *fl) {
    return fl->n_entries / 4 > 1 ? fl->n_entries / 4 : 1;
}

/* Wake sleeping loaders if anything is queued. Caller holds mu. */
static void kick_if_pending(ml_floader *fl) {
    if (fl->h->loaders_waiting && fl->h->req_tail != fl->h->req_head)
        fl_wake(&fl->h->work);
}

/* Push entry i (of worker w) on w's done FIFO and wake its consumer. Caller holds mu. */
static void push_done(ml_floader *fl, unsigned w, unsigned i) {
    fl_worker *wk = &fl->workers[w];
    fl->done[(size_t)w * fl->depth + wk->done_tail % fl->depth] = i;
    wk->done_tail++;
    if (wk->waiting)
        fl_wake(&wk->word);
}

/* 1 if no entry of w could become FREE or DONE without the calling
 * thread: each is DONE or TAKEN by `me`. Caller holds mu. */
static int only_mine(ml_floader *fl, unsigned w, uint64_t me) {
    for (unsigned k = 0; k < fl->depth; k++) {
        fl_entry *e = &fl->entries[(size_t)w * fl->depth + k];
        if (e->state != ML_FL_DONE && !(e->state == ML_FL_TAKEN && e->owner == me))
            return 0;
    }
    return 1;
}

/* One turn of a waiting loop, after its own checks found nothing (caller
 * holds the lock): kick the loaders, then -EAGAIN for a poll, -ML_EDEADLOCK
 * when `deadlock` (only this thread could end the wait), -ETIMEDOUT once a
 * wait timed out; else sleep on the worker's word and return 0: look again. */
static int wait_turn(ml_floader *fl, fl_worker *wk, long timeout_ms, int deadlock,
                     const struct timespec *deadline, int *timed_out) {
    kick_if_pending(fl); /* nothing ready: the loaders must not wait for a full batch */
    if (timeout_ms == 0)
        return -EAGAIN;
    if (deadlock)
        return -ML_EDEADLOCK;
    if (*timed_out)
        return -ETIMEDOUT;
    wk->waiting++;
    *timed_out = fl_wait(fl, &wk->word, timeout_ms < 0 ? NULL : deadline);
    wk->waiting--;
    return 0;
}

/* Hand DONE entry k of worker w to the calling thread: TAKEN, owned by it. */
static void hand_out(ml_floader *fl, unsigned w, unsigned k, fl_entry *e, ml_fl_got *out) {
    e->state = ML_FL_TAKEN;
    e->owner = ml_ring_owner_id();
    out->entry = k;
    out->seq = e->seq;
    out->size = e->size <= fl->max_file_size ? e->size : fl->max_file_size;
    out->data = fl->data + ((size_t)w * fl->depth + k) * fl->slot_bytes;
    out->error = e->error;
    out->error.msg[sizeof out->error.msg - 1] = '\0'; /* written by another process */
}

static int request_impl(ml_floader *fl, unsigned w, const char *path, size_t len, long timeout_ms,
                        int strict, uint32_t flags, unsigned *entry, uint64_t *seq) {
    if (w >= fl->n_workers)
        return -ML_EINVAL;
    fl_hdr *h = fl->h;
    fl_worker *wk = &fl->workers[w];
    struct timespec deadline;
    int rc = 0, timed_out = 0;
    if (timeout_ms > 0)
        ml_clock_deadline_ms(&deadline, CLOCK_MONOTONIC, timeout_ms);
    fl_lock(fl);
    for (;;) {
        if (h->closed) {
            rc = -ML_ECLOSED;
            break;
        }
        fl_entry *e = NULL;
        unsigned k;
        for (k = 0; k < fl->depth; k++)
            if (fl->entries[(size_t)w * fl->depth + k].state == ML_FL_FREE) {
                e = &fl->entries[(size_t)w * fl->depth + k];
                break;
            }
        if (e) {
            unsigned i = w * fl->depth + k;
            e->seq = h->next_seq++;
            e->flags = flags;
            e->size = 0;
            ml_error_clear(&e->error);
            h->n_requested++;
            *entry = k;
            if (seq)
                *seq = e->seq;
            if (len >= ML_FL_PATH_BYTES) {
                /* open() would refuse it: fail the entry, as open would. */
                e->path_len = 0;
                e->path[0] = '\0';
                ml_error_set(&e->error, -ENAMETOOLONG,
                             "path of %zu bytes is longer than PATH_MAX (%d bytes with its NUL)", len,
                             ML_FL_PATH_BYTES);
                e->state = ML_FL_DONE;
                h->n_completed++;
                h->n_failed++;
                if (!(flags & FL_BOUND))
                    push_done(fl, w, k);
            } else {
                memcpy(e->path, path, len);
                e->path[len] = '\0';
                e->path_len = (uint32_t)len;
                e->state = ML_FL_REQUESTED;
                fl->fifo[h->req_tail % fl->n_entries] = i;
                h->req_tail++;
                if (h->loaders_waiting && h->req_tail - h->req_head >= wake_batch(fl))
                    fl_wake(&h->work);
            }
            break;
        }
        if ((rc = wait_turn(fl, wk, timeout_ms, strict && only_mine(fl, w, ml_ring_owner_id()), &deadline,
                            &timed_out)) < 0)
            break;
    }
    fl_unlock(fl);
    return rc;
}

int ml_floader_request(ml_floader *fl, unsigned w, const char *path, size_t len, long timeout_ms,
                       int strict, unsigned *entry, uint64_t *seq) {
    return request_impl(fl, w, path, len, timeout_ms, strict, 0, entry, seq);
}

int ml_floader_submit(ml_floader *fl, unsigned w, const char *path, size_t len, long timeout_ms,
                      int strict, unsigned *entry, uint64_t *seq) {
    return request_impl(fl, w, path, len, timeout_ms, strict, FL_BOUND, entry, seq);
}

/* Entries of worker w REQUESTED or LOADING that ml_floader_get may yet
 * return: neither bound to a handle nor cancelled. Caller holds mu. */
static unsigned outstanding(ml_floader *fl, unsigned w) {
    unsigned n = 0;
    for (unsigned k = 0; k < fl->depth; k++) {
        const fl_entry *e = &fl->entries[(size_t)w * fl->depth + k];
        n += (e->state == ML_FL_REQUESTED || e->state == ML_FL_LOADING) && !(e->flags & (FL_BOUND | FL_CANCELLED));
    }
    return n;
}

unsigned ml_floader_outstanding(ml_floader *fl, unsigned w) {
    if (w >= fl->n_workers)
        return 0;
    fl_lock(fl);
    unsigned n = outstanding(fl, w);
    fl_unlock(fl);
    return n;
}

int ml_floader_get(ml_floader *fl, unsigned w, long timeout_ms, int strict, ml_fl_got *out) {
    if (w >= fl->n_workers)
        return -ML_EINVAL;
    fl_hdr *h = fl->h;
    fl_worker *wk = &fl->workers[w];
    struct timespec deadline;
    int rc = 0, timed_out = 0;
    if (timeout_ms > 0)
        ml_clock_deadline_ms(&deadline, CLOCK_MONOTONIC, timeout_ms);
    fl_lock(fl);
    for (;;) {
        if (h->closed) {
            rc = -ML_ECLOSED;
            break;
        }
        while (wk->done_head != wk->done_tail) {
            uint32_t k = fl->done[(size_t)w * fl->depth + wk->done_head % fl->depth];
            wk->done_head++;
            if (k >= fl->depth) /* scribbled on: not ours to hand out */
                continue;
            fl_entry *e = &fl->entries[(size_t)w * fl->depth + k];
            if (e->state != ML_FL_DONE || (e->flags & FL_BOUND)) /* a bound one is its handle's */
                continue;
            hand_out(fl, w, k, e, out);
            goto done;
        }
        if ((rc = wait_turn(fl, wk, timeout_ms, strict && outstanding(fl, w) == 0, &deadline, &timed_out)) < 0)
            break;
    }
done:
    fl_unlock(fl);
    return rc;
}

void ml_floader_release(ml_floader *fl, unsigned w, unsigned k) {
    if (w >= fl->n_workers || k >= fl->depth)
        return;
    fl_lock(fl);
    fl_entry *e = &fl->entries[(size_t)w * fl->depth + k];
    if (e->state == ML_FL_TAKEN) {
        e->state = ML_FL_FREE;
        if (fl->workers[w].waiting) /* a blocked request may use it */
            fl_wake(&fl->workers[w].word);
    }
    fl_unlock(fl);
}

/* Remove the first occurrence of val from the FIFO arr (capacity cap,
 * elements head..tail-1), moving the later ones up one place; *tail
 * shrinks by one. Returns 1 if found. O(tail - head). Caller holds mu. */
static int fifo_remove(uint32_t *arr, uint64_t cap, uint64_t head, uint64_t *tail, uint32_t val) {
    uint64_t t = *tail;
    if (t - head > cap) /* scribbled on: look at the newest cap only */
        head = t - cap;
    for (uint64_t p = head; p != t; p++) {
        if (arr[p % cap] != val)
            continue;
        for (uint64_t q = p; q + 1 != t; q++)
            arr[q % cap] = arr[(q + 1) % cap];
        *tail = t - 1;
        return 1;
    }
    return 0;
}

/* The status of request (w, k, seq) whose entry is e. Caller holds mu. */
static int status_of(const fl_entry *e, uint64_t seq) {
    if (e->seq != seq)
        return ML_FL_ST_GONE;
    switch (e->state) {
    case ML_FL_REQUESTED:
        return ML_FL_ST_QUEUED;
    case ML_FL_LOADING:
        return e->flags & FL_CANCELLED ? ML_FL_ST_CANCELLED : ML_FL_ST_RUNNING;
    case ML_FL_DONE:
        return ML_FL_ST_DONE;
    case ML_FL_TAKEN:
        return ML_FL_ST_TAKEN;
    default: /* FREE with its seq: cancelled (a taken one is released as FREE too: its holder knows) */
        return e->flags & FL_CANCELLED ? ML_FL_ST_CANCELLED : ML_FL_ST_GONE;
    }
}

/* Cancel the request in worker w's entry k (status st, from status_of).
 * Caller holds mu. Returns st if it cancelled it, else what status_of said. */
static int cancel_locked(ml_floader *fl, unsigned w, unsigned k, int st) {
    fl_hdr *h = fl->h;
    fl_entry *e = &fl->entries[(size_t)w * fl->depth + k];
    fl_worker *wk = &fl->workers[w];
    unsigned i = w * fl->depth + k;
    switch (st) {
    case ML_FL_ST_QUEUED:
        fifo_remove(fl->fifo, fl->n_entries, h->req_head, &h->req_tail, i);
        e->state = ML_FL_FREE;
        e->flags = FL_CANCELLED; /* until reused: status_of says CANCELLED */
        h->n_cancelled++;
        break;
    case ML_FL_ST_RUNNING:
        e->flags |= FL_CANCELLED; /* complete_one frees it when the read ends */
        return st;                /* nothing freed yet: no wake */
    case ML_FL_ST_DONE:
        if (!(e->flags & FL_BOUND))
            fifo_remove(fl->done + (size_t)w * fl->depth, fl->depth, wk->done_head, &wk->done_tail, k);
        e->state = ML_FL_FREE;
        e->flags = FL_CANCELLED;
        h->n_abandoned++;
        break;
    default:
        return st;
    }
    if (wk->waiting) /* a blocked request may use the entry */
        fl_wake(&wk->word);
    return st;
}

int ml_floader_cancel(ml_floader *fl, unsigned w, unsigned k, uint64_t seq) {
    if (w >= fl->n_workers || k >= fl->depth)
        return -ML_EINVAL;
    fl_lock(fl);
    fl_entry *e = &fl->entries[(size_t)w * fl->depth + k];
    int st = cancel_locked(fl, w, k, status_of(e, seq));
    if (st == ML_FL_ST_RUNNING && fl->workers[w].waiting)
        fl_wake(&fl->workers[w].word); /* a take of it returns -ECANCELED now */
    fl_unlock(fl);
    return st;
}

int ml_floader_cancel_pending(ml_floader *fl, unsigned w) {
    if (w >= fl->n_workers)
        return -ML_EINVAL;
    int n = 0;
    fl_lock(fl);
    for (unsigned k = 0; k < fl->depth; k++) {
        fl_entry *e = &fl->entries[(size_t)w * fl->depth + k];
        if (e->state == ML_FL_REQUESTED) {
            cancel_locked(fl, w, k, ML_FL_ST_QUEUED);
            n++;
        }
    }
    fl_unlock(fl);
    return n;
}

int ml_floader_status(ml_floader *fl, unsigned w, unsigned k, uint64_t seq) {
    if (w >= fl->n_workers || k >= fl->depth)
        return -ML_EINVAL;
    fl_lock(fl);
    int st = status_of(&fl->entries[(size_t)w * fl->depth + k], seq);
    fl_unlock(fl);
    return st;
}

int ml_floader_take(ml_floader *fl, unsigned w, unsigned k, uint64_t seq, long timeout_ms, ml_fl_got *out) {
    if (w >= fl->n_workers || k >= fl->depth)
        return -ML_EINVAL;
    fl_hdr *h = fl->h;
    fl_worker *wk = &fl->workers[w];
    fl_entry *e = &fl->entries[(size_t)w * fl->depth + k];
    struct timespec deadline;
    int rc = 0, timed_out = 0;
    if (timeout_ms > 0)
        ml_clock_deadline_ms(&deadline, CLOCK_MONOTONIC, timeout_ms);
    fl_lock(fl);
    for (;;) {
        if (h->closed) {
            rc = -ML_ECLOSED;
            break;
        }
        int st = status_of(e, seq);
        if (st == ML_FL_ST_DONE && (e->flags & FL_BOUND)) {
            hand_out(fl, w, k, e, out);
            break;
        }
        if (st != ML_FL_ST_QUEUED && st != ML_FL_ST_RUNNING) { /* cancelled, gone, or not bound */
            rc = -ECANCELED;
            break;
        }
        if ((rc = wait_turn(fl, wk, timeout_ms, 0, &deadline, &timed_out)) < 0)
            break;
    }
    fl_unlock(fl);
    return rc;
}

int ml_floader_entry_path(ml_floader *fl, unsigned w, unsigned k, char *buf, size_t cap) {
    if (w >= fl->n_workers || k >= fl->depth || cap == 0)
        return -ML_EINVAL;
    fl_lock(fl);
    fl_entry *e = &fl->entries[(size_t)w * fl->depth + k];
    size_t n = e->path_len < ML_FL_PATH_BYTES ? e->path_len : 0;
    if (n >= cap)
        n = cap - 1;
    memcpy(buf, e->path, n);
    buf[n] = '\0';
    fl_unlock(fl);
    return (int)n;
}

int ml_floader_check_server(ml_floader *fl, int64_t waited_ms, int64_t grace_ms, ml_error *err) {
    fl_hdr *h = fl->h;
    fl_lock(fl);
    uint32_t server = h->server, dead = h->server_dead;
    int pid = h->server_pid;
    fl_unlock(fl);
    if (dead)
        return ml_error_set(err, -EOWNERDEAD,
                            "the FileLoader's loader (process %d) died: its requests will never complete",
                            pid);
    if (server == SRV_SERVING) {
        int e = pthread_mutex_trylock(&h->life_mu);
        if (e == EBUSY)
            return 0; /* the serving thread holds it: alive */
        if (e == EOWNERDEAD) {
            pthread_mutex_consistent(&h->life_mu);
            pthread_mutex_unlock(&h->life_mu);
            fl_lock(fl);
            if (h->server == SRV_SERVING) {
                h->server = SRV_NONE;
                h->server_dead = 1;
                fl_wake(&h->event);
                for (unsigned w = 0; w < fl->n_workers; w++)
                    fl_wake(&fl->workers[w].word);
            }
            fl_unlock(fl);
            return ml_error_set(err, -EOWNERDEAD,
                                "the FileLoader's loader (process %d) died: its requests will never complete",
                                pid);
        }
        if (e == 0) /* it stopped between our two looks: as unserved */
            pthread_mutex_unlock(&h->life_mu);
    }
    if (server == SRV_CLAIMED || waited_ms < grace_ms)
        return 0;
    return ml_error_set(err, -ENOTCONN,
                        "nobody serves this FileLoader (waited %lld ms): call start(), spawn_loader() "
                        "or become_loader() on it",
                        (long long)waited_ms);
}

void ml_floader_close(ml_floader *fl) {
    fl_hdr *h = fl->h;
    fl_lock(fl);
    h->closed = 1;
    fl_wake(&h->work);
    fl_wake(&h->event);
    for (unsigned w = 0; w < fl->n_workers; w++)
        fl_wake(&fl->workers[w].word);
    fl_unlock(fl);
    ml_event_fire_always(&fl->event); /* a close wakes asyncio consumers armed or not */
}

int ml_floader_closed(ml_floader *fl) {
    fl_lock(fl);
    int c = (int)fl->h->closed;
    fl_unlock(fl);
    return c;
}

int ml_floader_wait_event(ml_floader *fl, long timeout_ms) {
    struct timespec deadline;
    if (timeout_ms >= 0)
        ml_clock_deadline_ms(&deadline, CLOCK_MONOTONIC, timeout_ms);
    fl_lock(fl);
    if (!fl->h->closed)
        fl_wait(fl, &fl->h->event, timeout_ms < 0 ? NULL : &deadline);
    int c = (int)fl->h->closed;
    fl_unlock(fl);
    return c;
}

void ml_floader_stats(ml_floader *fl, ml_fl_stats *o) {
    fl_hdr *h = fl->h;
    memset(o, 0, sizeof *o);
    fl_lock(fl);
    o->requested = h->n_requested;
    o->completed = h->n_completed;
    o->failed = h->n_failed;
    o->bytes = h->n_bytes;
    o->direct_fallbacks = h->n_direct_fallbacks;
    o->cancelled = h->n_cancelled;
    o->abandoned = h->n_abandoned;
    for (unsigned i = 0; i < fl->n_entries; i++) {
        uint32_t s = fl->entries[i].state;
        int gone = (fl->entries[i].flags & FL_CANCELLED) != 0;
        o->in_flight += (s == ML_FL_REQUESTED || s == ML_FL_LOADING) && !gone;
        o->abandoning += s == ML_FL_LOADING && gone;
        o->ready += s == ML_FL_DONE;
        o->unreleased += s == ML_FL_TAKEN;
    }
    o->serving = h->server == SRV_SERVING;
    o->server_pid = h->server_pid;
    o->server_dead = h->server_dead;
    o->closed = h->closed;
    fl_unlock(fl);
}

int ml_floader_serve_claim(ml_floader *fl) {
    fl_hdr *h = fl->h;
    int rc = 0;
    fl_lock(fl);
    if (h->closed)
        rc = -ML_ECLOSED;
    else if (h->server_dead)
        rc = -EOWNERDEAD;
    else if (h->server != SRV_NONE)
        rc = -EBUSY;
    else
        h->server = SRV_CLAIMED;
    fl_unlock(fl);
    return rc;
}

void ml_floader_serve_unclaim(ml_floader *fl) {
    fl_lock(fl);
    if (fl->h->server == SRV_CLAIMED)
        fl->h->server = SRV_NONE;
    fl_unlock(fl);
}

void ml_floader_serve_begin(ml_floader *fl) {
    fl_hdr *h = fl->h;
    ml_shm_lock(&h->life_mu); /* only a checker's trylock holds it otherwise, for an instant */
    fl_lock(fl);
    h->server = SRV_SERVING;
    h->server_pid = (int32_t)getpid();
    fl_wake(&h->event);
    fl_unlock(fl);
}

void ml_floader_serve_end(ml_floader *fl) {
    fl_hdr *h = fl->h;
    fl_lock(fl);
    h->server = SRV_NONE;
    h->server_pid = 0;
    fl_wake(&h->event);
    fl_unlock(fl);
    pthread_mutex_unlock(&h->life_mu);
}

unsigned ml_floader_take_work(ml_floader *fl, unsigned max, unsigned n_threads, const int *stop,
                              unsigned *idx) {
    fl_hdr *h = fl->h;
    unsigned n = 0;
    fl_lock(fl);
    for (;;) {
        if (h->closed || __atomic_load_n(stop, __ATOMIC_RELAXED))
            break;
        uint64_t pending = h->req_tail - h->req_head;
        if (pending > fl->n_entries) /* scribbled on: drop the bogus part */
            h->req_head = h->req_tail - fl->n_entries, pending = fl->n_entries;
        if (pending) {
            uint64_t share = (pending + n_threads - 1) / (n_threads ? n_threads : 1);
            if (share > max)
                share = max;
            while (n < share && h->req_head != h->req_tail) {
                uint32_t i = fl->fifo[h->req_head % fl->n_entries];
                h->req_head++;
                if (i >= fl->n_entries || fl->entries[i].state != ML_FL_REQUESTED)
                    continue;
                fl->entries[i].state = ML_FL_LOADING;
                idx[n++] = i;
            }
            if (n)
                break;
            continue;
        }
        h->loaders_waiting++;
        fl_wait(fl, &h->work, NULL);
        h->loaders_waiting--;
    }
    fl_unlock(fl);
    return n;
}

void ml_floader_work_item(ml_floader *fl, unsigned i, char *buf, void **slot, size_t *slot_bytes) {
    fl_entry *e = &fl->entries[i];
    /* LOADING: the consumer wrote the path before handing it over (mu
     * ordered it); copy it so a scribbler cannot change it mid-open. */
    uint32_t n = __atomic_load_n(&e->path_len, __ATOMIC_RELAXED);
    if (n >= ML_FL_PATH_BYTES)
        n = 0;
    memcpy(buf, e->path, n);
    buf[n] = '\0';
    *slot = fl->data + (size_t)i * fl->slot_bytes;
    *slot_bytes = fl->slot_bytes;
}

/* LOADING -> DONE for entry i, pushed on its worker's done FIFO; the
 * caller wakes the worker. Caller holds mu. Returns the worker, or -1. */
static int complete_one(ml_floader *fl, unsigned i, uint64_t size, const ml_error *err, int direct_fallback) {
    fl_hdr *h = fl->h;
    if (i >= fl->n_entries)
        return -1;
    fl_entry *e = &fl->entries[i];
    if (e->state != ML_FL_LOADING)
        return -1;
    unsigned w = i / fl->depth;
    h->n_completed++;
    h->n_failed += err && err->code;
    h->n_bytes += err && err->code ? 0 : size;
    h->n_direct_fallbacks += direct_fallback != 0;
    if (e->flags & FL_CANCELLED) {
        /* Abandoned: nobody will take it; the read is over, so the slot is free. */
        e->state = ML_FL_FREE;
        e->flags = FL_CANCELLED; /* until reused: status_of says CANCELLED */
        h->n_abandoned++;
        return (int)w; /* wake w: a blocked request may use the entry */
    }
    e->size = size;
    if (err && err->code)
        e->error = *err;
    else
        ml_error_clear(&e->error);
    e->state = ML_FL_DONE;
    if (e->flags & FL_BOUND)
        return (int)w; /* its handle takes it (ml_floader_take): not on the done FIFO */
    fl_worker *wk = &fl->workers[w];
    fl->done[(size_t)w * fl->depth + wk->done_tail % fl->depth] = i % fl->depth;
    wk->done_tail++;
    return (int)w;
}

void ml_floader_complete_batch(ml_floader *fl, unsigned n, const unsigned *idx, const uint64_t *sizes,
                               const ml_error *const *errs, const int *direct_fallbacks) {
    int last = -1;
    fl_lock(fl);
    for (unsigned k = 0; k < n; k++) {
        int w = complete_one(fl, idx[k], sizes[k], errs[k], direct_fallbacks[k]);
        /* One wake per run of the same worker: a consumer woken once takes them all. */
        if (w != last && last >= 0 && fl->workers[last].waiting)
            fl_wake(&fl->workers[last].word);
        if (w >= 0)
            last = w;
    }
    if (last >= 0 && fl->workers[last].waiting)
        fl_wake(&fl->workers[last].word);
    fl_unlock(fl);
    ml_event_fire(&fl->event);
}

void ml_floader_complete(ml_floader *fl, unsigned i, uint64_t size, const ml_error *err,
                         int direct_fallback) {
    ml_floader_complete_batch(fl, 1, &i, &size, &err, &direct_fallback);
}

void ml_floader_kick(ml_floader *fl) {
    fl_lock(fl);
    fl_wake(&fl->h->work);
    fl_unlock(fl);
}
