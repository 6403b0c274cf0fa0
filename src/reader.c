/* reader.c - the random-access request engine behind multiload.Reader.
 *
 * Workload: many small requests ("these 256 rows, in this order") arriving
 * from Python threads, served by n_workers native threads that share one
 * FIFO queue, and by the consumer itself: a thread that waits for a request
 * no worker has started yet takes it out of the queue and runs it
 * (ml_reader_help), which saves two thread hand-offs for synchronous use.
 *
 * Request life:  QUEUED --(worker or helping waiter takes it)--> RUNNING --> DONE
 *                QUEUED --(cancel / shutdown without drain)--> DONE
 *                RUNNING --(a waiter hands it back unstarted)--> QUEUED
 *                RUNNING --(shutdown without drain)--> DONE, dest still busy
 * A DONE request carries its outcome in `err` (-ECANCELED, -ML_ECLOSED
 * or a read error). `busy` is 1 while some thread may write dest: it drops
 * to 0 when the thread running the request is done with it, which is when
 * the request becomes DONE -- except after a stop, which completes every
 * running request at once (with -ML_ECLOSED: the caller is never left
 * waiting on a hung read) while the read in flight still writes dest; the
 * owner of dest keeps it until busy is 0 (the binding hands it to the
 * reader core to free later). A request that completes with success has
 * always released dest. Each request has its own mutex and condition
 * variable so that waiting on one never wakes the waiters of another, and
 * so a request outlives the reader that ran it. It is reference counted:
 * the caller holds one reference, the queue/executor another while it is
 * queued or running, the parallel list (below) one while it is on it, and
 * every thread running its parts one.
 *
 * The reader is reference counted too: its owner holds one reference and
 * every worker thread one, so ml_reader_free can detach a worker stuck in
 * a read (a hung network mount) after CLOSE_WAIT_MS, as the Streamer
 * does, and the worker frees the reader when its read returns.
 *
 * Parts. The thread that takes a request (its executor) plans it and cuts
 * it into parts: disjoint slices of its work, each written to its own bytes
 * of dest. A request with more than one part is put on the reader's
 * parallel list; idle workers, and the waiter in ml_reader_help, claim its
 * parts (an atomic counter) beside the executor, so the chunks of one
 * request decode on every core. The thread that finishes the last part
 * completes the request. Parts of chunked data never split a band, so every
 * band is read and decoded once per request; the chunk reads of one part
 * go to the I/O engine as one batch (ml_fetch_rows_multi).
 *
 * Inline reads (config.inline_reads): a small request whose bytes are all
 * in the page cache is read by ml_request_submit itself, with
 * preadv2(RWF_NOWAIT), and returned done: a one-row request then costs one
 * system call instead of a hand-off to a worker and back. RWF_NOWAIT fails
 * instead of waiting for the disk, so submit never blocks on I/O; any
 * failure or short read just queues the request as usual (which re-reads
 * it and reports errors the normal way), so the inline path never produces
 * an error of its own. It stands aside while fault injection is on.
 *
 * Small requests (a range of contiguous rows up to SMALL_BYTES) that are
 * queued together are taken by one worker, up to SMALL_BATCH at a time,
 * and read in one I/O batch (one io_uring submission, so the reads are in
 * flight together). With pread a batch would be read one after another
 * and gain nothing, so there is none: idle workers take the other
 * requests, and each stays cancellable until a worker starts it.
 *
 * The helping waiter never waits for a device. Its thread is the caller's
 * (a Python thread in get() or result()), which must stay able to give up
 * (a timeout) or leave (Ctrl-C). So a helper (worker.nowait) reads
 * contiguous data only from the page cache, with preadv2(RWF_NOWAIT), and
 * chunked data only from decoded bands in the cache; anything else, or any
 * failure, goes back to the workers untouched in meaning: an unstarted
 * request back to the head of the queue (no_help: only workers take it
 * again, so a waiter never loops on it), a part of a split request into
 * q->retry, whose bits only workers claim. With fault injection on, the
 * helper stands aside (as inline reads do), so injected faults hit the
 * workers' engine. A cold read costs milliseconds, beside which the
 * hand-off the waiter saves (~5-10 us) is noise.
 *
 * How rows are read (a part runs one of these on its slice):
 *   - RANGE: a range of whole rows: ml_fetch_rows() straight into dest;
 *   - DIRECT: a strictly increasing list of whole rows of contiguous data:
 *     rows are merged into runs, all runs go to the I/O engine as one
 *     batch, straight into dest (no copy);
 *   - SCATTER: anything else on contiguous data (unsorted, duplicates, a
 *     column of a compound row): the distinct rows are sorted, merged into
 *     runs (small gaps are read through, cheaper than another read), read
 *     as one batch into the thread's scratch buffer, then each requested
 *     row (or its column bytes) is copied to its place in dest;
 *   - BANDS: chunked data is read by "bands" (the chunk rows k*c0 ..
 *     (k+1)*c0, every chunk across the trailing dims): each band a request
 *     touches is decoded once, from the reader's cache of decoded bands
 *     when it is there, and the requested rows copied out. Ranges that
 *     cover whole bands are RANGE parts (ml_fetch_rows decodes into place).
 *
 * Stop. ml_reader_shutdown(drain=0) fails the queue and every request on
 * the running list (taken by a worker or waiter, not finished) at once.
 * Their threads then skip what they have not started (parts, bands, the
 * requests of a pread batch), finish the read in flight and release dest.
 *
 * Locks: r->mu guards the queue, the running and parallel lists, `closed`,
 * `draining`, the notify tags, the helper contexts, n_idle and n_exited.
 * q->mu guards q->state, q->err and q->notify (written under both). r->cache_mu
 * guards the band cache. Order: r->mu before q->mu; cache_mu is never held
 * with another lock. No wait is unbounded without a way to wake it:
 * workers wait on work_cv (shutdown broadcasts it), request waiters on
 * q->cv (completion or shutdown broadcasts it), pop_done and join on
 * notify_cv. Running a request on a waiter's thread is bounded work that
 * never waits for a device, not a wait.
 */
#define _GNU_SOURCE
#include "reader.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>

#include "fault.h"
#include "fetch.h"

#define N_FETCHERS 8          /* fetchers (open files) cached per worker */
#define N_HELPERS 4           /* waiter threads that may run requests at once */
#define CACHE_ENTRIES 1024    /* band cache slots */
#define AUTO_CACHE_BYTES (64u << 20)
#define GAP_BYTES 2048        /* read through gaps smaller than this: random 256 B rows
                                 from the page cache cost the same CPU with 0, 2 and
                                 8 KiB; 16 KiB read ~7x the bytes for nothing */
#define MAX_PARTS 16          /* parts per request */
#define BAND_GROUP 16         /* bands read in one I/O batch by a part */
#define PART_MIN_ROWS 64      /* contiguous row lists: rows per part, at least */
#define PART_MIN_BYTES (256u << 10) /* ranges: bytes per part, at least */
#define SMALL_BATCH 8         /* small queued requests read in one I/O batch (a taken
                                 request is running: no longer cancellable) */
#define SMALL_BYTES (64u << 10) /* "small": a range of contiguous rows up to this size */
#define SMALL_SCAN 64         /* queue entries a worker looks at for more small requests */
#define HELP_MAX_BYTES (32u << 20) /* work a waiter takes on per call (bytes copied from the
                                 page cache or the band cache): it cannot run signal
                                 handlers meanwhile (~10 ms) */
#define CLOSE_WAIT_MS 500     /* after a stop, workers still reading then are detached */

enum { Q_QUEUED, Q_RUNNING, Q_DONE };
enum { M_RANGE, M_DIRECT, M_SCATTER, M_BANDS };

typedef struct pair {
    uint64_t row;             /* dataset row */
    uint64_t pos;             /* index in the request */
} pair;

typedef struct part {
    uint64_t k0, k1;          /* slice [k0, k1) of the rows (or pairs) */
} part;

struct ml_request {
    _Atomic int refs;         /* see the file comment */
    ml_request *next, *prev;  /* queue links; r->mu */
    ml_request *run_next, *run_prev; /* running list links; r->mu */
    ml_request *par_next;     /* parallel list link; r->mu */
    int on_par;               /* on the parallel list; r->mu */
    int in_queue;             /* on the FIFO; r->mu */
    int on_run;               /* on the running list (taken, not finished); r->mu */
    int no_help;              /* a waiter handed it back: only workers take it; r->mu */
    pthread_mutex_t mu;
    pthread_cond_t cv;        /* signalled when state becomes Q_DONE and when busy drops */
    int state;                /* Q_*; mu */
    _Atomic int done;         /* 1 once state is Q_DONE and err is final (release) */
    _Atomic int busy;         /* 1 while a thread may write dest; 0 (release) once none will */
    ml_error err;             /* outcome; written before state = Q_DONE under mu */
    ml_layout *L;             /* owned reference */
    uint64_t *rows;           /* owned, n_rows entries; NULL = range */
    uint64_t row0, n_rows;
    size_t col_offset, col_size, out_size; /* out_size: bytes per row in dest */
    unsigned char *dest;      /* borrowed from the caller */
    uint64_t tag;
    int notify;               /* queue tag when done; r->mu and mu (ml_reader_watch sets it) */
    int may_split;            /* nothing else was queued when it was taken; r->mu */
    /* The plan: written by the executor before the parts are published
     * (the r->mu release that publishes them orders these writes). */
    int mode;                 /* M_* */
    pair *pairs;              /* owned, sorted by row; NULL: k-th row is row_at(q, k), pos k */
    part parts[MAX_PARTS];
    size_t n_parts;
    _Atomic size_t next_part; /* next part to claim */
    _Atomic unsigned retry;   /* bit i: part i handed back by a waiter, for a worker to claim */
    _Atomic size_t parts_left;/* parts not finished; the one that reaches 0 completes q */
    _Atomic int failed;       /* a part failed: the rest skip their work */
    ml_error part_err;        /* first part error; mu */
};

typedef struct band {
    ml_layout *L;             /* owned reference while valid */
    uint64_t index;           /* band number: rows index*c0 .. */
    unsigned char *buf;       /* owned, decoded rows */
    size_t bytes;
    unsigned pins;            /* threads copying out of it */
    uint64_t tick;            /* last use, for LRU */
    int valid;
} band;

/* Per-thread execution context: a worker's, or a helper's (lent to a
 * waiting thread under r->mu). */
typedef struct worker {
    ml_reader *r;
    pthread_t thread;
    int started;
    int nowait;               /* a helper: never wait for a device (see the file comment) */
    struct { ml_layout *L; ml_fetcher *f; uint64_t tick; } fetchers[N_FETCHERS];
    uint64_t tick;
    unsigned char *scratch;   /* run buffer */
    size_t scratch_cap;
    ml_row_run *runs;
    size_t runs_cap;
    uint64_t *src;            /* SCATTER: scratch row of each requested row */
    size_t src_cap;
    ml_io *nio;               /* a helper's engine for reads from the page cache, or NULL */
    ml_io_req *reqs;          /* its reads, reqs_cap entries */
    size_t reqs_cap;
} worker;

struct ml_reader {
    _Atomic unsigned refs;    /* the owner + one per worker thread; freed at 0 */
    pthread_mutex_t mu;
    pthread_cond_t work_cv;   /* queue or parallel list non-empty, or shutdown */
    pthread_cond_t notify_cv; /* a tag was queued or a worker exited */
    ml_request *head, *tail;  /* FIFO; mu */
    ml_request *running;      /* taken by a worker or waiter, not finished; mu */
    ml_request *par;          /* requests with parts to claim; mu */
    int closed;               /* no new requests; mu */
    int draining;             /* closed with drain=1; mu */
    _Atomic int stopping;     /* closed with drain=0; written under mu, read anywhere (relaxed) */
    struct timespec stop_at;  /* CLOCK_MONOTONIC time of the first stop; mu */
    unsigned n_exited;        /* workers that left their loop; mu */
    unsigned n_idle;          /* workers waiting on work_cv; mu */
    uint64_t *tags;           /* finished notify tags; mu */
    size_t n_tags, tags_cap;
    int batch_io;             /* the engine is io_uring: small requests are batched */
    unsigned n_workers;
    worker *workers;
    worker helpers[N_HELPERS];/* lent to waiters; mu */
    unsigned helpers_busy;    /* bit i: helpers[i] lent; mu */
    ml_io_mode io_mode;
    pthread_mutex_t cache_mu;
    band cache[CACHE_ENTRIES];/* cache_mu */
    size_t cache_used;        /* bytes in valid entries; cache_mu */
    size_t cache_limit;       /* 0 = auto */
    uint64_t cache_tick;      /* cache_mu */
    int inline_reads;         /* config: read small cached requests inside submit */
    _Atomic int nowait_ok;    /* RWF_NOWAIT works here; cleared (relaxed) if the kernel or
                                 filesystem lacks it: no inline reads, no helping */
    _Atomic int nowait_batch; /* ... and in one submission of several reads (io_uring); cleared
                                 (relaxed) if not: a helper then reads run by run */
    _Atomic uint64_t n_requests, n_rows, n_hits, n_misses, n_parallel, n_helped, n_batched,
        n_inlined; /* stats, relaxed */
};
/* ---- requests ---------------------------------------------------------- */

static void deadline_after(struct timespec *ts, long ms) {
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

static void cond_init_mono(pthread_cond_t *cv) {
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(cv, &a);
    pthread_condattr_destroy(&a);
}


static void request_unref(ml_request *q) {
    if (!q || atomic_fetch_sub_explicit(&q->refs, 1, memory_order_acq_rel) != 1)
        return;
    ml_layout_unref(q->L);
    free(q->rows);
    free(q->pairs);
    pthread_mutex_destroy(&q->mu);
    pthread_cond_destroy(&q->cv);
    free(q);
}

/* Queue a finished notify tag. Call with r->mu held. */
static void push_tag_locked(ml_reader *r, uint64_t tag) {
    if (r->n_tags == r->tags_cap) {
        size_t cap = r->tags_cap ? 2 * r->tags_cap : 64;
        uint64_t *t = realloc(r->tags, cap * sizeof *t);
        if (t) {
            r->tags = t;
            r->tags_cap = cap;
        }
    }
    if (r->n_tags < r->tags_cap) /* on ENOMEM the tag is lost; waiters still wake via q->cv */
        r->tags[r->n_tags++] = tag;
    pthread_cond_broadcast(&r->notify_cv);
}

static void run_unlink_locked(ml_reader *r, ml_request *q) {
    if (!q->on_run)
        return;
    if (q->run_prev)
        q->run_prev->run_next = q->run_next;
    else
        r->running = q->run_next;
    if (q->run_next)
        q->run_next->run_prev = q->run_prev;
    q->run_next = q->run_prev = NULL;
    q->on_run = 0;
}

/* Mark q done with outcome e (NULL = success), unless it is done already
 * (a stop completed it while it ran), and queue its tag; release=1: no
 * thread writes dest any more. Returns 1 if this completed q. Call with
 * r->mu held (it takes q->mu). */
static int complete_locked(ml_reader *r, ml_request *q, const ml_error *e, int release) {
    pthread_mutex_lock(&q->mu);
    int first = q->state != Q_DONE;
    if (first) {
        if (e)
            q->err = *e;
        q->state = Q_DONE;
        atomic_store_explicit(&q->done, 1, memory_order_release); /* orders err, dest before it */
    }
    if (release)
        atomic_store_explicit(&q->busy, 0, memory_order_release); /* orders our writes to dest before it */
    int notify = q->notify;
    pthread_cond_broadcast(&q->cv);
    pthread_mutex_unlock(&q->mu);
    if (first) {
        atomic_fetch_add_explicit(&r->n_requests, 1, memory_order_relaxed);
        if (!e)
            atomic_fetch_add_explicit(&r->n_rows, q->n_rows, memory_order_relaxed);
        if (notify)
            push_tag_locked(r, q->tag);
    }
    return first;
}

/* The thread that ran q is done with it and its dest: complete q with
 * outcome e (NULL = success) unless a stop did already. Takes r->mu, so
 * call without it. Does not drop a reference. */
static void request_finish(ml_reader *r, ml_request *q, const ml_error *e) {
    pthread_mutex_lock(&r->mu);
    run_unlink_locked(r, q);
    complete_locked(r, q, e, 1);
    pthread_mutex_unlock(&r->mu);
}

/* Take q, queued, for this thread: onto the running list, state RUNNING.
 * Call with r->mu held. */
static void queue_unlink_locked(ml_reader *r, ml_request *q);
static void take_locked(ml_reader *r, ml_request *q) {
    queue_unlink_locked(r, q);
    q->run_prev = NULL;
    q->run_next = r->running;
    if (r->running)
        r->running->run_prev = q;
    r->running = q;
    q->on_run = 1;
    pthread_mutex_lock(&q->mu);
    q->state = Q_RUNNING;
    pthread_mutex_unlock(&q->mu);
}

/* 1 if a stop completed q while it ran: its remaining work is skipped. */
static int stopped(const ml_request *q) { return atomic_load_explicit(&q->done, memory_order_acquire); }

static int small_request(const ml_request *q);

/* Read len bytes at file offset off into buf from the page cache only
 * (preadv2 with RWF_NOWAIT, resuming a partial read: it returns the cached
 * prefix). Returns 0, or -EAGAIN when any of it would wait for the device
 * or the read fails (a worker then reads it and reports the error). With
 * fault injection on, always -EAGAIN: the faults model a device. */
static int read_cached(ml_reader *r, ml_source *src, uint64_t off, size_t len, void *buf) {
    if (ml_fault_active() || !atomic_load_explicit(&r->nowait_ok, memory_order_relaxed))
        return -EAGAIN;
    ml_io_req q = {.offset = off, .len = len, .buf = buf, .nowait = 1};
    int rc = ml_source_read(src, &q);
    if (rc == -EOPNOTSUPP || rc == -ENOSYS || rc == -EINVAL)
        atomic_store_explicit(&r->nowait_ok, 0, memory_order_relaxed); /* stop trying */
    return rc < 0 ? -EAGAIN : 0;
}

/* Rows [row0, row0 + n) of L into dest without waiting for a device:
 * contiguous data from the page cache, compact data from memory. Returns
 * 0 or -EAGAIN (anything else: the workers' engine reads it). */
static int rows_cached(ml_reader *r, const ml_layout *L, uint64_t row0, uint64_t n, void *dest) {
    if (n == 0 || L->row_bytes == 0)
        return 0;
    if (L->storage == ML_STORE_MEMORY) {
        memcpy(dest, (const unsigned char *)L->mem + row0 * L->row_bytes, n * L->row_bytes);
        return 0;
    }
    if (L->storage != ML_STORE_CONTIGUOUS || L->offset == UINT64_MAX ||
        !ml_layout_in_file(L, L->offset + row0 * L->row_bytes, n * L->row_bytes))
        return -EAGAIN; /* past the file's end: the worker's fetch names the error */
    return read_cached(r, L->src, L->offset + row0 * L->row_bytes, n * L->row_bytes, dest);
}

int ml_request_submit(ml_reader *r, const ml_request_spec *s, ml_request **out, ml_error *err) {
    ml_layout *L = s->L;
    size_t out_size = s->col_size ? s->col_size : L->row_bytes;
    if (s->col_size && (s->col_offset > L->row_bytes || s->col_size > L->row_bytes - s->col_offset))
        return ml_error_set(err, -ML_EINVAL, "column bytes %zu..%zu outside a row of %zu bytes",
                            s->col_offset, s->col_offset + s->col_size, L->row_bytes);
    if (s->n_rows && out_size > s->dest_bytes / s->n_rows)
        return ml_error_set(err, -ML_EINVAL, "%llu rows of %zu bytes do not fit in %zu bytes",
                            (unsigned long long)s->n_rows, out_size, s->dest_bytes);
    if (!s->rows && (s->row0 > L->n_rows || s->n_rows > L->n_rows - s->row0))
        return ml_error_set(err, -ML_EINVAL, "rows %llu..%llu are outside dataset '%s' (%llu rows)",
                            (unsigned long long)s->row0, (unsigned long long)(s->row0 + s->n_rows),
                            L->path, (unsigned long long)L->n_rows);
    ml_request *q = ml_fault_alloc() < 0 ? NULL : calloc(1, sizeof *q);
    if (!q)
        return ml_error_set(err, -ENOMEM, "out of memory queueing a request");
    if (s->rows) {
        q->rows = malloc((s->n_rows ? s->n_rows : 1) * sizeof *q->rows);
        if (!q->rows) {
            free(q);
            return ml_error_set(err, -ENOMEM, "out of memory queueing a request");
        }
        /* Copy, wrapping negative rows (numpy's rule) and checking bounds. */
        for (uint64_t i = 0; i < s->n_rows; i++) {
            uint64_t row = s->rows[i];
            if (s->wrap && (int64_t)row < 0)
                row += L->n_rows;
            if (row >= L->n_rows) {
                free(q->rows);
                free(q);
                return ml_error_set(err, -ML_EINVAL, "index %lld is out of bounds for axis 0 with size %llu "
                                    "(dataset '%s', file '%s')", (long long)s->rows[i],
                                    (unsigned long long)L->n_rows, L->path, L->filename);
            }
            q->rows[i] = row;
        }
    }
    pthread_mutex_init(&q->mu, NULL);
    cond_init_mono(&q->cv);
    atomic_init(&q->refs, 2);
    atomic_init(&q->busy, 1);
    ml_layout_ref(L);
    q->L = L;
    q->row0 = s->row0;
    q->n_rows = s->n_rows;
    q->col_offset = s->col_offset;
    q->col_size = s->col_size;
    q->out_size = out_size;
    q->dest = s->dest;
    q->tag = s->tag;
    q->notify = s->notify;
    q->state = Q_QUEUED;
    int try_first = r->inline_reads && small_request(q);
    pthread_mutex_lock(&r->mu);
    /* Inline: check `closed` first (a closed reader refuses requests), read
     * without the lock, and look again if the request must be queued. */
    while (!r->closed && try_first) {
        pthread_mutex_unlock(&r->mu);
        try_first = 0;
        if (rows_cached(r, L, q->row0, q->n_rows, q->dest) == 0) {
            atomic_fetch_add_explicit(&r->n_inlined, 1, memory_order_relaxed);
            request_finish(r, q, NULL);
            request_unref(q); /* the executor's reference: there is no executor */
            *out = q;
            return 0;
        }
        pthread_mutex_lock(&r->mu);
    }
    if (r->closed) {
        pthread_mutex_unlock(&r->mu);
        atomic_store(&q->refs, 1);
        request_unref(q);
        return ml_error_set(err, -ML_ECLOSED, "the reader is closed");
    }
    q->prev = r->tail;
    q->in_queue = 1;
    if (r->tail)
        r->tail->next = q;
    else
        r->head = q;
    r->tail = q;
    int wake = r->n_idle > 0;
    pthread_mutex_unlock(&r->mu);
    /* Signal after unlocking: a woken worker does not then block on r->mu
     * while we still hold it. */
    if (wake)
        pthread_cond_signal(&r->work_cv);
    *out = q;
    return 0;
}

/* Wait on q->cv until *flag == want (q->done becomes 1, q->busy 0) or
 * timeout_ms passes (<0: never). Returns 0 or -ETIMEDOUT. */
static int wait_for(ml_request *q, _Atomic int *flag, int want, long timeout_ms) {
    if (atomic_load_explicit(flag, memory_order_acquire) == want)
        return 0;
    struct timespec ts;
    if (timeout_ms >= 0)
        deadline_after(&ts, timeout_ms);
    int rc = 0;
    pthread_mutex_lock(&q->mu);
    while (atomic_load_explicit(flag, memory_order_acquire) != want && rc != ETIMEDOUT)
        rc = timeout_ms < 0 ? pthread_cond_wait(&q->cv, &q->mu) : pthread_cond_timedwait(&q->cv, &q->mu, &ts);
    int ok = atomic_load_explicit(flag, memory_order_acquire) == want;
    pthread_mutex_unlock(&q->mu);
    return ok ? 0 : -ETIMEDOUT;
}

int ml_request_wait(ml_request *q, long timeout_ms) { return wait_for(q, &q->done, 1, timeout_ms); }

int ml_request_wait_released(ml_request *q, long timeout_ms) { return wait_for(q, &q->busy, 0, timeout_ms); }

int ml_request_done(ml_request *q) { return atomic_load_explicit(&q->done, memory_order_acquire); }

int ml_request_busy(const ml_request *q) { return atomic_load_explicit(&q->busy, memory_order_acquire); }

int ml_request_running(ml_request *q) {
    pthread_mutex_lock(&q->mu);
    int running = q->state == Q_RUNNING;
    pthread_mutex_unlock(&q->mu);
    return running;
}

const ml_error *ml_request_error(const ml_request *q) { return &q->err; }

void ml_request_free(ml_request *q) { request_unref(q); }

/* ---- the band cache ---------------------------------------------------- */

typedef struct band_ref {
    band *e;                  /* pinned cache entry, or NULL */
    unsigned char *buf;       /* decoded rows of the band */
    uint64_t index;
    int private_buf;          /* 1: buf is ours to free */
} band_ref;

static void band_release(ml_reader *r, band_ref *b) {
    if (b->e) {
        pthread_mutex_lock(&r->cache_mu);
        b->e->pins--;
        pthread_mutex_unlock(&r->cache_mu);
    } else if (b->private_buf) {
        free(b->buf);
    }
    memset(b, 0, sizeof *b);
    b->index = UINT64_MAX;
}

static void band_rows(const ml_layout *L, uint64_t index, uint64_t *row0, uint64_t *n) {
    uint64_t c0 = L->chunk[0];
    *row0 = index * c0;
    *n = *row0 + c0 <= L->n_rows ? c0 : L->n_rows - *row0;
}

/* Pin band `index` of L if the cache has it: returns 1, else 0. count:
 * add to the hit / miss counters (a helper's look-up does not count: a
 * miss sends the work to a worker, which looks again). */
static int band_lookup(ml_reader *r, ml_layout *L, uint64_t index, band_ref *out, int count) {
    pthread_mutex_lock(&r->cache_mu);
    for (unsigned i = 0; i < CACHE_ENTRIES; i++) {
        band *e = &r->cache[i];
        if (e->valid && e->L == L && e->index == index) {
            e->pins++;
            e->tick = ++r->cache_tick;
            pthread_mutex_unlock(&r->cache_mu);
            if (count)
                atomic_fetch_add_explicit(&r->n_hits, 1, memory_order_relaxed);
            *out = (band_ref){.e = e, .buf = e->buf, .index = index};
            return 1;
        }
    }
    pthread_mutex_unlock(&r->cache_mu);
    if (count)
        atomic_fetch_add_explicit(&r->n_misses, 1, memory_order_relaxed);
    return 0;
}

/* Hand a freshly decoded private band (b->private_buf) to the cache,
 * evicting unpinned least-recently-used bands until it fits; b then pins
 * the entry. Leaves b private when it does not fit or another thread
 * cached the same band meanwhile. */
static void band_insert(ml_reader *r, ml_layout *L, band_ref *b, size_t bytes) {
    size_t limit = r->cache_limit;
    if (!limit) {
        limit = AUTO_CACHE_BYTES;
        if (limit < 4 * (size_t)r->n_workers * bytes)
            limit = 4 * (size_t)r->n_workers * bytes;
    }
    if (bytes > limit)
        return;
    ml_layout *drop[CACHE_ENTRIES];
    unsigned n_drop = 0;
    pthread_mutex_lock(&r->cache_mu);
    band *slot = NULL;
    for (unsigned i = 0; i < CACHE_ENTRIES; i++) {
        band *e = &r->cache[i];
        if (e->valid && e->L == L && e->index == b->index) {
            pthread_mutex_unlock(&r->cache_mu);
            return;
        }
    }
    for (;;) {
        band *lru = NULL;
        slot = NULL;
        for (unsigned i = 0; i < CACHE_ENTRIES; i++) {
            band *e = &r->cache[i];
            if (!e->valid) {
                slot = slot ? slot : e;
            } else if (!e->pins && (!lru || e->tick < lru->tick)) {
                lru = e;
            }
        }
        if (slot && r->cache_used + bytes <= limit)
            break;
        if (!lru) {
            slot = NULL;
            break;
        }
        lru->valid = 0;
        r->cache_used -= lru->bytes;
        free(lru->buf);
        drop[n_drop++] = lru->L;
    }
    if (slot) {
        ml_layout_ref(L);
        *slot = (band){.L = L, .index = b->index, .buf = b->buf, .bytes = bytes, .pins = 1,
                       .tick = ++r->cache_tick, .valid = 1};
        r->cache_used += bytes;
        *b = (band_ref){.e = slot, .buf = b->buf, .index = b->index};
    }
    pthread_mutex_unlock(&r->cache_mu);
    for (unsigned i = 0; i < n_drop; i++)
        ml_layout_unref(drop[i]);
}

/* ---- executing parts --------------------------------------------------- */

static ml_fetcher *fetcher_for(worker *w, ml_layout *L, ml_error *err) {
    unsigned victim = 0;
    for (unsigned i = 0; i < N_FETCHERS; i++) {
        if (w->fetchers[i].L == L) {
            w->fetchers[i].tick = ++w->tick;
            return w->fetchers[i].f;
        }
        if (w->fetchers[i].tick < w->fetchers[victim].tick)
            victim = i;
    }
    ml_fetcher *f;
    if (ml_fetcher_open(&f, L, w->r->io_mode, err) < 0)
        return NULL;
    ml_fetcher_close(w->fetchers[victim].f);
    w->fetchers[victim].L = L; /* the fetcher holds the reference */
    w->fetchers[victim].f = f;
    w->fetchers[victim].tick = ++w->tick;
    return f;
}

static void worker_release(worker *w) {
    for (unsigned i = 0; i < N_FETCHERS; i++)
        ml_fetcher_close(w->fetchers[i].f);
    memset(w->fetchers, 0, sizeof w->fetchers);
    ml_io_close(w->nio);
    free(w->scratch);
    free(w->runs);
    free(w->src);
    free(w->reqs);
    w->nio = NULL;
    w->scratch = NULL;
    w->runs = NULL;
    w->src = NULL;
    w->reqs = NULL;
    w->scratch_cap = w->runs_cap = w->src_cap = w->reqs_cap = 0;
}

static int grow(void **p, size_t *cap, size_t need) {
    if (*cap >= need)
        return 0;
    if (ml_fault_alloc() < 0)
        return -ENOMEM;
    if (need < 2 * *cap)
        need = 2 * *cap;
    void *n = realloc(*p, need);
    if (!n)
        return -ENOMEM;
    *p = n;
    *cap = need;
    return 0;
}

static int pair_cmp(const void *a, const void *b) {
    const pair *x = a, *y = b;
    if (x->row != y->row)
        return x->row < y->row ? -1 : 1;
    return x->pos < y->pos ? -1 : x->pos > y->pos;
}

/* Sort p[0..n) by (row, pos), in place. Pairs pack into one 64-bit key
 * (row above the bits of pos) when they fit, and the keys are radix
 * sorted inside p's own memory (2n words: keys, then scratch) skipping
 * bytes that are equal in every key: ~10x faster than qsort for a few
 * hundred rows, measured 3-4% of a random 256-row request. */
static void sort_pairs(pair *p, uint64_t n) {
    uint64_t maxrow = 0;
    for (uint64_t i = 0; i < n; i++)
        maxrow = p[i].row > maxrow ? p[i].row : maxrow;
    unsigned posbits = 1, rowbits = 1;
    while (posbits < 64 && (n - 1) >> posbits)
        posbits++;
    while (rowbits < 64 && maxrow >> rowbits)
        rowbits++;
    if (n < 2 || rowbits + posbits > 64) {
        if (n > 1)
            qsort(p, n, sizeof *p, pair_cmp);
        return;
    }
    uint64_t *k = (uint64_t *)p, *tmp = k + n, all_or = 0, all_and = ~(uint64_t)0;
    /* p[i] occupies words 2i, 2i+1 >= i: pack front to back */
    for (uint64_t i = 0; i < n; i++) {
        uint64_t key = p[i].row << posbits | p[i].pos;
        k[i] = key;
        all_or |= key;
        all_and &= key;
    }
    uint64_t *src = k, *dst = tmp;
    for (unsigned shift = 0; shift < 64; shift += 8) {
        if ((((all_or ^ all_and) >> shift) & 0xff) == 0)
            continue; /* this byte is the same in every key */
        size_t count[257] = {0};
        for (uint64_t i = 0; i < n; i++)
            count[((src[i] >> shift) & 0xff) + 1]++;
        for (unsigned b = 0; b < 256; b++)
            count[b + 1] += count[b];
        for (uint64_t i = 0; i < n; i++)
            dst[count[(src[i] >> shift) & 0xff]++] = src[i];
        uint64_t *t = src;
        src = dst;
        dst = t;
    }
    if (src != k)
        memcpy(k, src, n * sizeof *k);
    /* unpack back to front: p[i] overwrites words 2i, 2i+1 >= i, already read */
    uint64_t mask = ((uint64_t)1 << posbits) - 1;
    for (uint64_t i = n; i-- > 0;) {
        uint64_t key = k[i];
        p[i] = (pair){key >> posbits, key & mask};
    }
}

static inline uint64_t row_at(const ml_request *q, uint64_t i) { return q->rows ? q->rows[i] : q->row0 + i; }
/* The k-th row in reading order and its place in the request. */
static inline uint64_t row_k(const ml_request *q, uint64_t k) { return q->pairs ? q->pairs[k].row : row_at(q, k); }
static inline uint64_t pos_k(const ml_request *q, uint64_t k) { return q->pairs ? q->pairs[k].pos : k; }

static int oom(ml_error *err, const ml_request *q) {
    return ml_error_set(err, -ENOMEM, "out of memory reading %llu rows of dataset '%s'",
                        (unsigned long long)q->n_rows, q->L->path);
}

/* BANDS: rows k0..k1 (in reading order) out of their decoded bands, up to
 * BAND_GROUP bands at a time, the missing ones read in one I/O batch. */
static int exec_bands(worker *w, ml_fetcher *f, ml_request *q, uint64_t k0, uint64_t k1, ml_error *err) {
    ml_reader *r = w->r;
    ml_layout *L = q->L;
    uint64_t c0 = L->chunk[0];
    int rc = 0;
    for (uint64_t k = k0; k < k1 && rc == 0;) {
        if (stopped(q))
            return 0; /* q already failed: skip the rest */
        band_ref refs[BAND_GROUP];
        uint64_t kend[BAND_GROUP];
        ml_row_run miss[BAND_GROUP];
        void *mdest[BAND_GROUP];
        size_t mi[BAND_GROUP], nb = 0, nm = 0;
        uint64_t j = k;
        while (j < k1 && nb < BAND_GROUP) {
            uint64_t b = row_k(q, j) / c0, e = j + 1;
            while (e < k1 && row_k(q, e) / c0 == b)
                e++;
            kend[nb] = e;
            if (!band_lookup(r, L, b, &refs[nb], 1)) {
                uint64_t row0, n;
                band_rows(L, b, &row0, &n);
                unsigned char *buf = ml_fault_alloc() < 0 ? NULL : malloc(n * L->row_bytes + 1);
                if (!buf) {
                    rc = ml_error_set(err, -ENOMEM, "out of memory decoding rows %llu..%llu of dataset '%s'",
                                      (unsigned long long)row0, (unsigned long long)(row0 + n), L->path);
                    break;
                }
                refs[nb] = (band_ref){.buf = buf, .index = b, .private_buf = 1};
                miss[nm] = (ml_row_run){row0, n};
                mdest[nm] = buf;
                mi[nm++] = nb;
            }
            nb++;
            j = e;
        }
        if (rc == 0 && nm)
            rc = ml_fetch_rows_multi(f, miss, mdest, nm, err);
        for (size_t i = 0; rc == 0 && i < nm; i++)
            band_insert(r, L, &refs[mi[i]], miss[i].count * L->row_bytes);
        for (size_t i = 0, kk = k; rc == 0 && i < nb; i++)
            for (; kk < kend[i]; kk++)
                memcpy(q->dest + pos_k(q, kk) * q->out_size,
                       refs[i].buf + (row_k(q, kk) % c0) * L->row_bytes + q->col_offset, q->out_size);
        for (size_t i = 0; i < nb; i++)
            band_release(r, &refs[i]);
        k = j;
    }
    return rc;
}

/* BANDS for a helper: rows k0..k1 copied out of decoded bands in the
 * cache; -EAGAIN at the first band that is not there (a worker decodes). */
static int exec_bands_cached(worker *w, ml_request *q, uint64_t k0, uint64_t k1) {
    ml_reader *r = w->r;
    ml_layout *L = q->L;
    uint64_t c0 = L->chunk[0], hits = 0;
    for (uint64_t k = k0; k < k1;) {
        uint64_t b = row_k(q, k) / c0, e = k + 1;
        while (e < k1 && row_k(q, e) / c0 == b)
            e++;
        band_ref ref;
        if (!band_lookup(r, L, b, &ref, 0))
            return -EAGAIN;
        for (; k < e; k++)
            memcpy(q->dest + pos_k(q, k) * q->out_size,
                   ref.buf + (row_k(q, k) % c0) * L->row_bytes + q->col_offset, q->out_size);
        band_release(r, &ref);
        hits++;
    }
    atomic_fetch_add_explicit(&r->n_hits, hits, memory_order_relaxed);
    return 0;
}

/* A helper's runs of contiguous rows from the page cache in one I/O batch
 * (RWF_NOWAIT reads: one io_uring submission, as a worker's, where a read
 * each would cost a system call each). Returns 0, -EAGAIN (not all
 * cached, or it failed), or 1: no batch here, read run by run. */
static int runs_cached_batch(worker *w, const ml_layout *L, const ml_row_run *runs, size_t n, unsigned char *dest) {
    ml_reader *r = w->r;
    if (n < 2 || L->storage != ML_STORE_CONTIGUOUS || L->offset == UINT64_MAX ||
        !atomic_load_explicit(&r->nowait_batch, memory_order_relaxed))
        return 1;
    if (ml_fault_active() || !atomic_load_explicit(&r->nowait_ok, memory_order_relaxed))
        return -EAGAIN;
    if (w->nio && ml_io_source(w->nio) != L->src) { /* another file's: open one on this one */
        ml_io_close(w->nio);
        w->nio = NULL;
    }
    if (!w->nio && ml_io_open(&w->nio, L->src, 64, r->io_mode) < 0)
        return 1;
    if (grow((void **)&w->reqs, &w->reqs_cap, n * sizeof *w->reqs) < 0)
        return -EAGAIN;
    for (size_t i = 0; i < n; i++) {
        size_t len = runs[i].count * L->row_bytes;
        w->reqs[i] = (ml_io_req){.offset = L->offset + runs[i].start * L->row_bytes, .len = len,
                                 .buf = dest, .nowait = 1};
        dest += len;
        if (!ml_layout_in_file(L, w->reqs[i].offset, len))
            return -EAGAIN; /* past the file's end: the worker's fetch names the error */
    }
    int rc = ml_io_read(w->nio, w->reqs, n);
    if (rc == -EOPNOTSUPP || rc == -EINVAL || rc == -ENOSYS) {
        atomic_store_explicit(&r->nowait_batch, 0, memory_order_relaxed); /* run by run from now on */
        return 1;
    }
    return rc < 0 ? -EAGAIN : 0;
}

/* Read n runs of rows into dest, one after another: through the fetcher,
 * or for a helper from the page cache only (-EAGAIN otherwise). */
static int read_runs(worker *w, ml_fetcher *f, ml_request *q, const ml_row_run *runs, size_t n,
                     unsigned char *dest, ml_error *err) {
    if (!w->nowait)
        return ml_fetch_runs(f, runs, n, dest, err);
    int rc = runs_cached_batch(w, q->L, runs, n, dest);
    if (rc <= 0)
        return rc;
    for (size_t i = 0; i < n; i++) {
        int rc = rows_cached(w->r, q->L, runs[i].start, runs[i].count, dest);
        if (rc < 0)
            return rc;
        dest += runs[i].count * q->L->row_bytes;
    }
    return 0;
}

/* DIRECT: strictly increasing whole rows k0..k1, merged into runs, read in
 * one batch straight to their place in dest. */
static int exec_direct(worker *w, ml_fetcher *f, ml_request *q, uint64_t k0, uint64_t k1, ml_error *err) {
    size_t nr = 0;
    for (uint64_t i = k0; i < k1; i++) {
        if (nr && w->runs[nr - 1].start + w->runs[nr - 1].count == q->rows[i]) {
            w->runs[nr - 1].count++;
            continue;
        }
        if (grow((void **)&w->runs, &w->runs_cap, (nr + 1) * sizeof *w->runs) < 0)
            return oom(err, q);
        w->runs[nr++] = (ml_row_run){q->rows[i], 1};
    }
    return read_runs(w, f, q, w->runs, nr, q->dest + k0 * q->out_size, err);
}

/* SCATTER: sorted pairs k0..k1: distinct rows into runs (reading through
 * small gaps) into scratch, then each row (or its column) to its place. */
static int exec_scatter(worker *w, ml_fetcher *f, ml_request *q, uint64_t k0, uint64_t k1, ml_error *err) {
    ml_layout *L = q->L;
    uint64_t n = k1 - k0;
    uint64_t gap = L->row_bytes ? GAP_BYTES / L->row_bytes : 0;
    if (grow((void **)&w->src, &w->src_cap, n * sizeof *w->src) < 0)
        return oom(err, q);
    uint64_t *src = w->src;
    size_t nr = 0;
    uint64_t total = 0;
    for (uint64_t k = 0; k < n; k++) {
        uint64_t row = row_k(q, k0 + k);
        ml_row_run *last = nr ? &w->runs[nr - 1] : NULL;
        if (last && row < last->start + last->count) {
            /* duplicate of a row already in the last run */
        } else if (last && row - (last->start + last->count) <= gap) {
            uint64_t add = row + 1 - (last->start + last->count);
            last->count += add;
            total += add;
        } else {
            if (grow((void **)&w->runs, &w->runs_cap, (nr + 1) * sizeof *w->runs) < 0)
                return oom(err, q);
            w->runs[nr++] = (ml_row_run){row, 1};
            total++;
        }
        last = &w->runs[nr - 1];
        src[k] = total - (last->start + last->count - row);
    }
    if (grow((void **)&w->scratch, &w->scratch_cap, total * L->row_bytes) < 0)
        return oom(err, q);
    int rc = read_runs(w, f, q, w->runs, nr, w->scratch, err);
    for (uint64_t k = 0; k < n && rc == 0; k++)
        memcpy(q->dest + pos_k(q, k0 + k) * q->out_size, w->scratch + src[k] * L->row_bytes + q->col_offset,
               q->out_size);
    /* Keep at most 16 MiB of scratch between requests. */
    if (w->scratch_cap > (16u << 20)) {
        free(w->scratch);
        w->scratch = NULL;
        w->scratch_cap = 0;
    }
    return rc;
}

/* Run one part of q. A helper's part returns -EAGAIN (or another error)
 * when it cannot be done without waiting for a device: nothing is
 * reported, the part goes back to the workers. */
static int exec_part(worker *w, ml_request *q, const part *pt, ml_error *err) {
    if (w->nowait) {
        switch (q->mode) {
        case M_RANGE:
            if (q->L->storage == ML_STORE_CHUNKED)
                return exec_bands_cached(w, q, pt->k0, pt->k1);
            return rows_cached(w->r, q->L, q->row0 + pt->k0, pt->k1 - pt->k0, q->dest + pt->k0 * q->out_size);
        case M_DIRECT:
            return exec_direct(w, NULL, q, pt->k0, pt->k1, err);
        case M_SCATTER:
            return exec_scatter(w, NULL, q, pt->k0, pt->k1, err);
        default:
            return exec_bands_cached(w, q, pt->k0, pt->k1);
        }
    }
    ml_fetcher *f = fetcher_for(w, q->L, err);
    if (!f)
        return err->code;
    switch (q->mode) {
    case M_RANGE:
        return ml_fetch_rows(f, q->row0 + pt->k0, pt->k1 - pt->k0, q->dest + pt->k0 * q->out_size, err);
    case M_DIRECT:
        return exec_direct(w, f, q, pt->k0, pt->k1, err);
    case M_SCATTER:
        return exec_scatter(w, f, q, pt->k0, pt->k1, err);
    default:
        return exec_bands(w, f, q, pt->k0, pt->k1, err);
    }
}

/* Cut [0, n) into at most `max` parts of at least `min` rows; with c0,
 * only at k where row_k(q, k) starts a new band of c0 rows. */
static void cut_parts(ml_request *q, uint64_t n, uint64_t min, size_t max, uint64_t c0) {
    uint64_t want = n / max > min ? n / max : min;
    size_t np = 0;
    uint64_t k0 = 0;
    while (k0 < n) {
        uint64_t k1 = np + 1 == max || n - k0 <= want ? n : k0 + want;
        if (c0 && k1 < n) { /* move the cut to the next band boundary */
            uint64_t b = row_k(q, k1 - 1) / c0;
            while (k1 < n && row_k(q, k1) / c0 == b)
                k1++;
        }
        q->parts[np++] = (part){k0, k1};
        k0 = k1;
    }
    q->n_parts = np;
}

/* Decide how q is read and cut it into parts. Returns 0 or an error. */
static int plan_request(worker *w, ml_request *q, ml_error *err) {
    ml_layout *L = q->L;
    uint64_t n = q->n_rows;
    size_t threads = (size_t)w->r->n_workers + 1; /* the workers and a waiter */
    size_t max_parts = 2 * threads < MAX_PARTS ? 2 * threads : MAX_PARTS;
    /* With other requests queued, every worker has a request of its own:
     * cutting this one would only add hand-offs. */
    if (!q->may_split)
        max_parts = 1;
    int chunked = L->storage == ML_STORE_CHUNKED;
    int splittable = chunked || L->storage == ML_STORE_CONTIGUOUS;
    int whole = q->col_size == 0;
    uint64_t c0 = chunked ? L->chunk[0] : 0;
    q->n_parts = 1;
    q->parts[0] = (part){0, n};
    if (!q->rows && whole && (!chunked || n >= c0)) {
        q->mode = M_RANGE;
        if (!splittable || n * L->row_bytes < 2 * (uint64_t)PART_MIN_BYTES)
            return 0;
        uint64_t min = PART_MIN_BYTES / L->row_bytes + 1;
        if (c0)
            min = (min + c0 - 1) / c0 * c0;
        /* cut at absolute band boundaries: every chunk stays in one part */
        uint64_t want = n / max_parts > min ? n / max_parts : min;
        size_t np = 0;
        uint64_t k0 = 0;
        while (k0 < n) {
            uint64_t k1 = np + 1 == max_parts || n - k0 <= want ? n : k0 + want;
            if (c0 && k1 < n)
                k1 = ((q->row0 + k1 + c0 - 1) / c0) * c0 - q->row0;
            if (k1 > n)
                k1 = n;
            q->parts[np++] = (part){k0, k1};
            k0 = k1;
        }
        q->n_parts = np;
        return 0;
    }
    int increasing = 1;
    for (uint64_t i = 1; q->rows && i < n && increasing; i++)
        increasing = q->rows[i] > q->rows[i - 1];
    if (!chunked && whole && q->rows && increasing) {
        q->mode = M_DIRECT;
        if (splittable && n >= 2 * PART_MIN_ROWS)
            cut_parts(q, n, PART_MIN_ROWS, max_parts, 0);
        return 0;
    }
    if (!increasing) {
        q->pairs = ml_fault_alloc() < 0 ? NULL : malloc(n * sizeof *q->pairs);
        if (!q->pairs)
            return oom(err, q);
        for (uint64_t i = 0; i < n; i++)
            q->pairs[i] = (pair){row_at(q, i), i};
        sort_pairs(q->pairs, n);
    }
    if (chunked) {
        q->mode = M_BANDS;
        if (row_k(q, 0) / c0 != row_k(q, n - 1) / c0)
            cut_parts(q, n, 1, max_parts, c0);
        return 0;
    }
    q->mode = M_SCATTER;
    if (splittable && n >= 2 * PART_MIN_ROWS)
        cut_parts(q, n, PART_MIN_ROWS, max_parts, 0);
    return 0;
}

/* Complete q once its last part is done. Drops the executor's reference. */
static void part_done(ml_reader *r, ml_request *q, int rc, const ml_error *e) {
    if (rc < 0) {
        pthread_mutex_lock(&q->mu);
        if (!atomic_load_explicit(&q->failed, memory_order_relaxed)) {
            q->part_err = *e;
            if (q->part_err.code == 0)
                ml_error_set(&q->part_err, rc, "reading dataset '%s': %s", q->L->path, ml_strerror(rc));
            atomic_store_explicit(&q->failed, 1, memory_order_relaxed);
        }
        pthread_mutex_unlock(&q->mu);
    }
    /* acq_rel: the finisher sees every part's writes to dest and part_err */
    if (atomic_fetch_sub_explicit(&q->parts_left, 1, memory_order_acq_rel) != 1)
        return;
    int failed = atomic_load_explicit(&q->failed, memory_order_relaxed);
    ml_error fe = q->part_err; /* stable: every part is done */
    request_finish(r, q, failed ? &fe : NULL);
    request_unref(q);
}

/* Claim a part of q: the next one from the counter or, for a worker (not
 * a helper), one that a helper handed back. Returns its index, or -1. */
static long claim_part(ml_request *q, int nowait) {
    size_t i = atomic_fetch_add_explicit(&q->next_part, 1, memory_order_relaxed);
    if (i < q->n_parts)
        return (long)i;
    if (nowait)
        return -1;
    /* acquire: pairs with the release in part_giveback */
    unsigned m = atomic_load_explicit(&q->retry, memory_order_acquire);
    while (m) {
        unsigned bit = m & -m;
        if (atomic_compare_exchange_weak_explicit(&q->retry, &m, m & ~bit, memory_order_acquire,
                                                  memory_order_acquire))
            return __builtin_ctz(bit);
    }
    return -1;
}

/* A helper could not run part i of q without waiting for the disk: hand
 * it to the workers (a bit of q->retry), putting q back on the parallel
 * list if its executor took it off. After a stop the part is just skipped. */
static void part_giveback(ml_reader *r, ml_request *q, size_t i) {
    if (stopped(q)) {
        part_done(r, q, 0, NULL);
        return;
    }
    pthread_mutex_lock(&r->mu);
    atomic_fetch_or_explicit(&q->retry, 1u << i, memory_order_release);
    if (!q->on_par) {
        atomic_fetch_add_explicit(&q->refs, 1, memory_order_relaxed); /* the list's */
        q->on_par = 1;
        q->par_next = r->par;
        r->par = q;
    }
    int wake = r->n_idle > 0;
    pthread_mutex_unlock(&r->mu);
    if (wake)
        pthread_cond_signal(&r->work_cv);
}

/* Claim and run parts of q until none is left, or `max` of them, or a
 * helper meets one it cannot run without waiting (handed back). Returns
 * the number of parts run. The caller holds a reference. */
static size_t run_parts_max(worker *w, ml_request *q, size_t max) {
    size_t done = 0;
    while (done < max) {
        long i = claim_part(q, w->nowait);
        if (i < 0)
            break;
        ml_error e;
        ml_error_clear(&e);
        int rc = 0;
        if (!atomic_load_explicit(&q->failed, memory_order_relaxed) && !stopped(q))
            rc = exec_part(w, q, &q->parts[i], &e);
        if (rc < 0 && w->nowait) {
            part_giveback(w->r, q, (size_t)i);
            break;
        }
        part_done(w->r, q, rc, &e);
        done++;
    }
    return done;
}

static size_t run_parts(worker *w, ml_request *q) { return run_parts_max(w, q, SIZE_MAX); }

/* Bytes q reads or decodes, roughly: what running it costs. */
static uint64_t work_estimate(const ml_request *q) {
    const ml_layout *L = q->L;
    uint64_t bytes = q->n_rows * L->row_bytes;
    if (L->storage == ML_STORE_CHUNKED && q->rows) {
        uint64_t bands = L->chunk[0] ? (L->n_rows + L->chunk[0] - 1) / L->chunk[0] : 1;
        bytes = (q->n_rows < bands ? q->n_rows : bands) * L->chunk[0] * L->row_bytes;
    }
    return bytes;
}

/* Take q off the parallel list if it is on it. Call with r->mu held. */
static void par_remove_locked(ml_reader *r, ml_request *q) {
    if (!q->on_par)
        return;
    ml_request **pp = &r->par;
    while (*pp != q)
        pp = &(*pp)->par_next;
    *pp = q->par_next;
    q->par_next = NULL;
    q->on_par = 0;
    request_unref(q); /* the list's reference; never the last: the caller holds one */
}

/* Parts of q left for a worker to claim (from the counter or handed back). */
static int parts_claimable(ml_request *q) {
    return atomic_load_explicit(&q->next_part, memory_order_relaxed) < q->n_parts ||
           atomic_load_explicit(&q->retry, memory_order_relaxed);
}

/* A helper could not start q without waiting for the disk: put it back at
 * the head of the queue for the workers (no_help: a waiter does not take
 * it again), the queue's reference with it. After a stop, release it. */
static void request_giveback(ml_reader *r, ml_request *q) {
    free(q->pairs); /* the plan is redone by the worker */
    q->pairs = NULL;
    pthread_mutex_lock(&r->mu);
    if (atomic_load_explicit(&r->stopping, memory_order_relaxed)) {
        pthread_mutex_unlock(&r->mu);
        ml_error e;
        ml_error_clear(&e);
        ml_error_set(&e, -ML_ECLOSED, "the reader was stopped before this request ran");
        request_finish(r, q, &e); /* the stop completed it already: this only releases it */
        request_unref(q);
        return;
    }
    run_unlink_locked(r, q);
    pthread_mutex_lock(&q->mu);
    q->state = Q_QUEUED;
    pthread_mutex_unlock(&q->mu);
    q->no_help = 1;
    q->in_queue = 1;
    q->prev = NULL;
    q->next = r->head;
    if (r->head)
        r->head->prev = q;
    else
        r->tail = q;
    r->head = q;
    int wake = r->n_idle > 0;
    pthread_mutex_unlock(&r->mu);
    if (wake)
        pthread_cond_signal(&r->work_cv);
}

/* Run q, which the caller took from the queue (state RUNNING), owning the
 * queue's reference. Returns 1 if this thread did some of q's work, 0 if
 * a helper handed it back to the workers. */
static int run_request(worker *w, ml_request *q) {
    ml_reader *r = w->r;
    ml_error e;
    ml_error_clear(&e);
    if (stopped(q) || q->n_rows == 0 || q->out_size == 0) {
        request_finish(r, q, NULL); /* stopped: it is done already; this releases it */
        request_unref(q);
        return 1;
    }
    int rc = plan_request(w, q, &e);
    if (rc < 0) {
        if (w->nowait) {
            request_giveback(r, q);
            return 0;
        }
        if (e.code == 0)
            ml_error_set(&e, rc, "reading dataset '%s': %s", q->L->path, ml_strerror(rc));
        request_finish(r, q, &e);
        request_unref(q);
        return 1;
    }
    atomic_store_explicit(&q->next_part, 0, memory_order_relaxed);
    atomic_store_explicit(&q->parts_left, q->n_parts, memory_order_relaxed);
    atomic_store_explicit(&q->retry, 0, memory_order_relaxed);
    if (q->n_parts == 1) {
        /* Not run_parts: once part_done completes q, q may be freed (the
         * queue's reference was the only one left to us). */
        atomic_store_explicit(&q->next_part, 1, memory_order_relaxed);
        rc = exec_part(w, q, &q->parts[0], &e);
        if (rc < 0 && w->nowait) {
            request_giveback(r, q);
            return 0;
        }
        part_done(r, q, rc, &e);
        return 1;
    }
    /* Publish the parts: the list's reference, and ours for run_parts (the
     * queue's passes to whoever finishes the last part). */
    atomic_fetch_add_explicit(&q->refs, 2, memory_order_relaxed);
    pthread_mutex_lock(&r->mu);
    q->on_par = 1;
    q->par_next = r->par;
    r->par = q;
    unsigned wake = r->n_idle < q->n_parts - 1 ? r->n_idle : (unsigned)(q->n_parts - 1);
    pthread_mutex_unlock(&r->mu);
    for (unsigned i = 0; i < wake; i++)
        pthread_cond_signal(&r->work_cv);
    atomic_fetch_add_explicit(&r->n_parallel, 1, memory_order_relaxed);
    size_t did = run_parts(w, q);
    pthread_mutex_lock(&r->mu);
    if (!parts_claimable(q)) /* else a worker takes the parts a helper handed back */
        par_remove_locked(r, q);
    pthread_mutex_unlock(&r->mu);
    request_unref(q);
    return did > 0;
}

/* A request on the parallel list with parts a worker can claim, with a
 * reference for the caller, or NULL; drops exhausted ones. Call with
 * r->mu held. */
static ml_request *par_take_locked(ml_reader *r) {
    while (r->par) {
        ml_request *q = r->par;
        if (parts_claimable(q)) {
            atomic_fetch_add_explicit(&q->refs, 1, memory_order_relaxed);
            return q;
        }
        par_remove_locked(r, q);
    }
    return NULL;
}

/* Unlink q from the queue. Call with r->mu held. */
static void queue_unlink_locked(ml_reader *r, ml_request *q) {
    if (q->prev)
        q->prev->next = q->next;
    else
        r->head = q->next;
    if (q->next)
        q->next->prev = q->prev;
    else
        r->tail = q->prev;
    q->next = q->prev = NULL;
    q->in_queue = 0;
    q->may_split = r->head == NULL;
}

/* A request that is one short read of contiguous rows straight into dest. */
static int small_request(const ml_request *q) {
    const ml_layout *L = q->L;
    return !q->rows && q->col_size == 0 && q->n_rows > 0 && L->storage == ML_STORE_CONTIGUOUS &&
           L->offset != UINT64_MAX && L->row_bytes && q->n_rows * L->row_bytes <= SMALL_BYTES;
}

/* Take more small requests on q's dataset from the queue into batch
 * (which holds q), marking them RUNNING; a helper skips those handed back
 * by a helper. Call with r->mu held. */
static size_t take_small_locked(ml_reader *r, ml_request **batch, int helper) {
    size_t nb = 1;
    unsigned seen = 0;
    for (ml_request *it = r->head; it && nb < SMALL_BATCH && seen < SMALL_SCAN; seen++) {
        ml_request *next = it->next;
        if (it->L == batch[0]->L && small_request(it) && !(helper && it->no_help)) {
            take_locked(r, it);
            batch[nb++] = it;
        }
        it = next;
    }
    return nb;
}

/* Run nb small requests (taken from the queue, RUNNING). A worker reads
 * them in one I/O batch; if that fails, each runs alone so that each gets
 * its own outcome. A helper reads each from the page cache and hands back
 * those it cannot. Returns the number completed here. */
static size_t run_small_batch(worker *w, ml_request **batch, size_t nb) {
    ml_reader *r = w->r;
    if (w->nowait) {
        size_t back[SMALL_BATCH], nback = 0;
        for (size_t i = 0; i < nb; i++) {
            ml_request *q = batch[i];
            if (!stopped(q) && rows_cached(r, q->L, q->row0, q->n_rows, q->dest) < 0) {
                back[nback++] = i;
                continue;
            }
            request_finish(r, q, NULL);
            request_unref(q);
        }
        /* Last first: each goes to the head of the queue, so they keep their order. */
        for (size_t k = nback; k-- > 0;)
            request_giveback(r, batch[back[k]]);
        atomic_fetch_add_explicit(&r->n_batched, nb - nback, memory_order_relaxed);
        return nb - nback;
    }
    ml_row_run runs[SMALL_BATCH];
    void *dests[SMALL_BATCH];
    ml_error e;
    ml_error_clear(&e);
    ml_fetcher *f = fetcher_for(w, batch[0]->L, &e);
    for (size_t i = 0; i < nb; i++) {
        runs[i] = (ml_row_run){batch[i]->row0, batch[i]->n_rows};
        dests[i] = batch[i]->dest;
    }
    if (!f || ml_fetch_rows_multi(f, runs, dests, nb, &e) < 0) {
        for (size_t i = 0; i < nb; i++)
            run_request(w, batch[i]); /* skips a request a stop failed meanwhile */
        return nb;
    }
    atomic_fetch_add_explicit(&r->n_batched, nb, memory_order_relaxed);
    for (size_t i = 0; i < nb; i++) {
        request_finish(r, batch[i], NULL);
        request_unref(batch[i]);
    }
    return nb;
}

static void reader_unref(ml_reader *r);

static void *worker_main(void *arg) {
    worker *w = arg;
    ml_reader *r = w->r;
    /* SCHED_BATCH: a worker woken for a request does not preempt the
     * thread that submitted it, which usually runs the request itself a few
     * microseconds later (ml_reader_help). Measured, one-row request: the
     * waiter ran 55% of requests under SCHED_OTHER, 75-99.5% under
     * SCHED_BATCH (less with an idle core); submit -> get() 22-32 us ->
     * 15-18 us on 2 loaded cores. Throughput of
     * many requests in flight did not drop. Unprivileged; ignored if refused. */
    struct sched_param sp = {0};
    pthread_setschedparam(pthread_self(), SCHED_BATCH, &sp);
    for (;;) {
        pthread_mutex_lock(&r->mu);
        ml_request *pq = NULL;
        /* Closed: leave once the queue is empty and no helper is working
         * (it may hand work back). */
        while (!(pq = par_take_locked(r)) && !r->head && !(r->closed && !r->helpers_busy)) {
            r->n_idle++;
            pthread_cond_wait(&r->work_cv, &r->mu);
            r->n_idle--;
        }
        if (pq) {
            pthread_mutex_unlock(&r->mu);
            run_parts(w, pq);
            request_unref(pq);
            continue;
        }
        ml_request *q = r->head;
        if (!q) { /* closed and nothing left */
            r->n_exited++;
            pthread_cond_broadcast(&r->notify_cv);
            pthread_mutex_unlock(&r->mu);
            break;
        }
        take_locked(r, q);
        ml_request *batch[SMALL_BATCH] = {q};
        size_t nb = r->batch_io && small_request(q) && r->head ? take_small_locked(r, batch, 0) : 1;
        pthread_mutex_unlock(&r->mu);
        if (nb > 1)
            run_small_batch(w, batch, nb);
        else
            run_request(w, q);
    }
    worker_release(w);
    reader_unref(r); /* may free r (and w with it) */
    return NULL;
}

int ml_reader_help(ml_reader *r, ml_request *q) {
    /* Fault injection models a device: the helper would only stand aside. */
    if (ml_fault_active() || !atomic_load_explicit(&r->nowait_ok, memory_order_relaxed))
        return 0;
    pthread_mutex_lock(&r->mu);
    unsigned i = 0;
    while (i < N_HELPERS && (r->helpers_busy & (1u << i)))
        i++;
    /* Bounded work: a request too big to copy here is left to the workers
     * (this thread waits, and runs signal handlers, meanwhile). */
    int queued = q->in_queue && !q->no_help && work_estimate(q) <= HELP_MAX_BYTES;
    int parts_left = q->on_par && atomic_load_explicit(&q->next_part, memory_order_relaxed) < q->n_parts;
    if (i == N_HELPERS || (!queued && !parts_left)) {
        pthread_mutex_unlock(&r->mu);
        return 0;
    }
    r->helpers_busy |= 1u << i;
    worker *h = &r->helpers[i];
    h->r = r;
    h->nowait = 1;
    ml_request *batch[SMALL_BATCH] = {q};
    size_t nb = 1;
    if (queued) {
        take_locked(r, q);
        if (small_request(q) && r->head) /* and the small ones queued after it */
            nb = take_small_locked(r, batch, 1);
    } else {
        atomic_fetch_add_explicit(&q->refs, 1, memory_order_relaxed);
    }
    pthread_mutex_unlock(&r->mu);
    int did;
    if (nb > 1) {
        did = run_small_batch(h, batch, nb) > 0;
    } else if (queued) {
        did = run_request(h, q);
    } else {
        uint64_t per_part = work_estimate(q) / (q->n_parts ? q->n_parts : 1) + 1;
        did = run_parts_max(h, q, HELP_MAX_BYTES / per_part ? HELP_MAX_BYTES / per_part : 1) > 0;
        request_unref(q);
    }
    if (did)
        atomic_fetch_add_explicit(&r->n_helped, 1, memory_order_relaxed);
    pthread_mutex_lock(&r->mu);
    r->helpers_busy &= ~(1u << i);
    int closed = r->closed;
    pthread_mutex_unlock(&r->mu);
    if (closed) /* workers wait for helpers before they leave */
        pthread_cond_broadcast(&r->work_cv);
    return did;
}

/* ---- the reader -------------------------------------------------------- */

int ml_reader_open(ml_reader **out, const ml_reader_config *cfg, ml_error *err) {
    unsigned nw = cfg->n_workers ? cfg->n_workers : 1;
    ml_reader *r = ml_fault_alloc() < 0 ? NULL : calloc(1, sizeof *r);
    worker *ws = r ? calloc(nw, sizeof *ws) : NULL;
    if (!ws) {
        free(r);
        return ml_error_set(err, -ENOMEM, "out of memory starting a reader");
    }
    atomic_init(&r->refs, 1);
    pthread_mutex_init(&r->mu, NULL);
    pthread_mutex_init(&r->cache_mu, NULL);
    pthread_cond_init(&r->work_cv, NULL);
    cond_init_mono(&r->notify_cv);
    r->workers = ws;
    r->io_mode = cfg->io_mode;
    r->batch_io = (cfg->io_mode == ML_IO_AUTO ? ml_io_default_mode() : cfg->io_mode) == ML_IO_URING;
    r->cache_limit = cfg->cache_bytes;
    r->inline_reads = cfg->inline_reads != 0;
    atomic_init(&r->nowait_ok, 1);
    atomic_init(&r->nowait_batch, 1);
    for (unsigned i = 0; i < nw; i++) {
        ws[i].r = r;
        /* Relaxed: the thread's creation orders this before it runs. */
        atomic_fetch_add_explicit(&r->refs, 1, memory_order_relaxed);
        int rc = pthread_create(&ws[i].thread, NULL, worker_main, &ws[i]);
        if (rc != 0) {
            atomic_fetch_sub_explicit(&r->refs, 1, memory_order_relaxed);
            r->n_workers = i;
            ml_reader_free(r);
            return ml_error_set(err, -rc, "cannot start reader threads: %s", strerror(rc));
        }
        ws[i].started = 1;
        r->n_workers = i + 1;
    }
    *out = r;
    return 0;
}

void ml_reader_shutdown(ml_reader *r, int drain) {
    ml_error before, during;
    ml_error_clear(&before);
    ml_error_clear(&during);
    ml_error_set(&before, -ML_ECLOSED, "the reader was stopped before this request ran");
    ml_error_set(&during, -ML_ECLOSED, "the reader was stopped while this request was being read");
    pthread_mutex_lock(&r->mu);
    r->closed = 1;
    ml_request *q = NULL;
    if (!drain) {
        if (!atomic_load_explicit(&r->stopping, memory_order_relaxed)) {
            atomic_store_explicit(&r->stopping, 1, memory_order_relaxed);
            clock_gettime(CLOCK_MONOTONIC, &r->stop_at);
        }
        q = r->head;
        r->head = r->tail = NULL;
        for (ml_request *it = q; it; it = it->next) {
            it->in_queue = 0;
            complete_locked(r, it, &before, 1);
        }
        /* Running requests fail now, not when their read returns (which,
         * on a hung mount, is never); their threads release dest later. */
        for (ml_request *it = r->running; it; it = it->run_next)
            complete_locked(r, it, &during, 0);
    } else {
        r->draining = 1;
    }
    pthread_cond_broadcast(&r->work_cv);
    pthread_cond_broadcast(&r->notify_cv);
    pthread_mutex_unlock(&r->mu);
    while (q) {
        ml_request *next = q->next;
        q->next = q->prev = NULL;
        request_unref(q); /* the queue's reference */
        q = next;
    }
}

int ml_reader_join(ml_reader *r, long timeout_ms) {
    struct timespec ts;
    if (timeout_ms >= 0)
        deadline_after(&ts, timeout_ms);
    pthread_mutex_lock(&r->mu);
    int rc = 0;
    while (r->n_exited < r->n_workers && rc != ETIMEDOUT)
        rc = timeout_ms < 0 ? pthread_cond_wait(&r->notify_cv, &r->mu)
                            : pthread_cond_timedwait(&r->notify_cv, &r->mu, &ts);
    int all = r->n_exited == r->n_workers;
    pthread_mutex_unlock(&r->mu);
    return all ? 0 : -ETIMEDOUT;
}

static void reader_destroy(ml_reader *r) {
    for (unsigned i = 0; i < N_HELPERS; i++)
        worker_release(&r->helpers[i]);
    /* Exhausted requests a worker left on the parallel list. */
    while (r->par) {
        ml_request *q = r->par;
        r->par = q->par_next;
        q->on_par = 0;
        request_unref(q);
    }
    for (unsigned i = 0; i < CACHE_ENTRIES; i++) {
        if (r->cache[i].valid) {
            free(r->cache[i].buf);
            ml_layout_unref(r->cache[i].L);
        }
    }
    free(r->tags);
    free(r->workers);
    pthread_mutex_destroy(&r->mu);
    pthread_mutex_destroy(&r->cache_mu);
    pthread_cond_destroy(&r->work_cv);
    pthread_cond_destroy(&r->notify_cv);
    free(r);
}

static void reader_unref(ml_reader *r) {
    /* acq_rel: the last holder sees every other holder's writes before freeing */
    if (atomic_fetch_sub_explicit(&r->refs, 1, memory_order_acq_rel) == 1)
        reader_destroy(r);
}

void ml_reader_free(ml_reader *r) {
    if (!r)
        return;
    ml_reader_shutdown(r, 0);
    /* Workers get CLOSE_WAIT_MS from the first stop to finish the read in
     * flight (a stop that waited already leaves none); then a worker still
     * reading is detached: it holds a reference and frees r when done. */
    struct timespec now, deadline;
    pthread_mutex_lock(&r->mu);
    struct timespec at = r->stop_at;
    pthread_mutex_unlock(&r->mu);
    clock_gettime(CLOCK_MONOTONIC, &now);
    long long left_ns = (long long)CLOSE_WAIT_MS * 1000000LL -
                        ((long long)(now.tv_sec - at.tv_sec) * 1000000000LL + (now.tv_nsec - at.tv_nsec));
    if (left_ns < 0)
        left_ns = 0;
    clock_gettime(CLOCK_REALTIME, &deadline); /* pthread_timedjoin_np's clock */
    deadline.tv_sec += (time_t)(left_ns / 1000000000LL);
    deadline.tv_nsec += (long)(left_ns % 1000000000LL);
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    for (unsigned i = 0; i < r->n_workers; i++)
        if (r->workers[i].started && pthread_timedjoin_np(r->workers[i].thread, NULL, &deadline) != 0)
            pthread_detach(r->workers[i].thread); /* still reading: it frees its reference when done */
    reader_unref(r); /* the owner's */
}

int ml_reader_cancel(ml_reader *r, ml_request *q) {
    pthread_mutex_lock(&r->mu);
    if (!q->in_queue) {
        pthread_mutex_unlock(&r->mu);
        return 0;
    }
    queue_unlink_locked(r, q);
    ml_error e;
    ml_error_clear(&e);
    ml_error_set(&e, -ECANCELED, "the request was cancelled");
    complete_locked(r, q, &e, 1);
    pthread_mutex_unlock(&r->mu);
    request_unref(q); /* the queue's reference */
    return 1;
}

void ml_reader_watch(ml_reader *r, ml_request *q) {
    pthread_mutex_lock(&r->mu);
    pthread_mutex_lock(&q->mu);
    int had = q->notify, done = q->state == Q_DONE;
    q->notify = 1;
    pthread_mutex_unlock(&q->mu);
    if (done && !had)
        push_tag_locked(r, q->tag);
    pthread_mutex_unlock(&r->mu);
}

/* Finished for good: closed, and every request done -- at once after a
 * stop (it completes them all), else once the workers have drained the
 * queue. Call with r->mu held. */
static int all_done_locked(ml_reader *r) {
    return r->closed && (atomic_load_explicit(&r->stopping, memory_order_relaxed) || r->n_exited == r->n_workers);
}

int ml_reader_pop_done(ml_reader *r, long timeout_ms, uint64_t *tags, size_t max) {
    struct timespec ts;
    if (timeout_ms >= 0)
        deadline_after(&ts, timeout_ms);
    pthread_mutex_lock(&r->mu);
    int rc = 0;
    while (r->n_tags == 0 && !all_done_locked(r) && rc != ETIMEDOUT)
        rc = timeout_ms < 0 ? pthread_cond_wait(&r->notify_cv, &r->mu)
                            : pthread_cond_timedwait(&r->notify_cv, &r->mu, &ts);
    int out;
    if (r->n_tags == 0) {
        out = all_done_locked(r) ? -ML_ECLOSED : 0;
    } else {
        size_t k = r->n_tags < max ? r->n_tags : max;
        memcpy(tags, r->tags, k * sizeof *tags);
        memmove(r->tags, r->tags + k, (r->n_tags - k) * sizeof *tags);
        r->n_tags -= k;
        out = (int)k;
    }
    pthread_mutex_unlock(&r->mu);
    return out;
}

void ml_reader_get_stats(ml_reader *r, ml_reader_stats *st) {
    st->requests = atomic_load_explicit(&r->n_requests, memory_order_relaxed);
    st->rows = atomic_load_explicit(&r->n_rows, memory_order_relaxed);
    st->cache_hits = atomic_load_explicit(&r->n_hits, memory_order_relaxed);
    st->cache_misses = atomic_load_explicit(&r->n_misses, memory_order_relaxed);
    st->parallel = atomic_load_explicit(&r->n_parallel, memory_order_relaxed);
    st->helped = atomic_load_explicit(&r->n_helped, memory_order_relaxed);
    st->batched = atomic_load_explicit(&r->n_batched, memory_order_relaxed);
    st->inlined = atomic_load_explicit(&r->n_inlined, memory_order_relaxed);
}
