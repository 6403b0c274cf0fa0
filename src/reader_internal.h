/* reader_internal.h - what the Reader's files share: the request and the
 * reader structs, the per-thread execution context, and the functions one
 * piece offers the others. Internal to the Reader (reader*.c): the binding
 * and everything else use reader.h.
 *
 *   reader.c           the reader object: open, shutdown, join, free, tags, stats
 *   reader_request.c   request life (states, references, completion, waits) and
 *                      the three lists: queue, running, parallel
 *   reader_dispatch.c  who runs what: the workers' loop, the helping waiter,
 *                      parts claimed and handed back, small requests batched
 *   reader_plan.c      how a request is read: mode, parts, the radix sort
 *   reader_exec.c      the four execution modes (RANGE, DIRECT, SCATTER, BANDS)
 *   band_cache.c       decoded bands of chunked data
 * Every byte is read through fetch.h; none of these files knows how data
 * is stored (they ask fetch.h: band rows, parallel, one read).
 *
 * Locks: r->mu guards the queue, the running and parallel lists, `closed`,
 * `draining`, the notify tags, the helper contexts, n_idle and n_exited.
 * q->mu guards q->state, q->err and q->notify (written under both). The
 * band cache's mutex guards the cache. Order: r->mu before q->mu; the
 * cache's mutex is never held with another lock. No wait is unbounded
 * without a way to wake it: workers wait on work_cv (shutdown broadcasts
 * it), request waiters on q->cv (completion or shutdown broadcasts it),
 * pop_done and join on notify_cv. Running a request on a waiter's thread
 * is bounded work that never waits for a device, not a wait.
 */
#ifndef ML_READER_INTERNAL_H
#define ML_READER_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "band_cache.h"
#include "event.h"
#include "fetch.h"
#include "list.h"
#include "reader.h"

#define N_FETCHERS 8          /* fetchers (open files) cached per worker */
#define N_HELPERS 4           /* waiter threads that may run requests at once */
#define MAX_PARTS 16          /* parts per request */
#define SMALL_BATCH 8         /* small queued requests read in one I/O batch (a taken
                                 request is running: no longer cancellable) */
#define SMALL_BYTES (64u << 10) /* "small": a range of rows read in one read, up to this size */

enum { Q_QUEUED, Q_RUNNING, Q_DONE };
enum { M_RANGE, M_DIRECT, M_SCATTER, M_BANDS };

typedef struct ml_pair {
    uint64_t row;             /* dataset row */
    uint64_t pos;             /* index in the request */
} ml_pair;

typedef struct ml_part {
    uint64_t k0, k1;          /* slice [k0, k1) of the rows (or pairs) */
} ml_part;

struct ml_request {
    _Atomic int refs;         /* see reader_request.c */
    ml_list_node qnode;       /* queue link; r->mu */
    ml_list_node run_node;    /* running list link, linked while taken and not finished; r->mu */
    ml_list_node par_node;    /* parallel list link, linked while on it (holding the list's
                                 reference); r->mu */
    int in_queue;             /* on the FIFO (not "qnode linked": a stop moves the failed queue
                                 to a list of its own); r->mu */
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
    int async_watch;          /* an asyncio waiter armed it: on completion it goes on
                                 r->async_done and r->event is fired; r->mu */
    ml_list_node async_node;  /* r->async_done link, holding a reference of its own; r->mu */
    /* The plan: written by the executor before the parts are published
     * (the r->mu release that publishes them orders these writes). */
    int mode;                 /* M_* */
    ml_pair *pairs;           /* owned, sorted by row; NULL: k-th row is row_at(q, k), pos k */
    ml_part parts[MAX_PARTS];
    size_t n_parts;
    _Atomic size_t next_part; /* next part to claim */
    _Atomic unsigned retry;   /* bit i: part i handed back by a waiter, for a worker to claim */
    _Atomic size_t parts_left;/* parts not finished; the one that reaches 0 completes q */
    _Atomic int failed;       /* a part failed: the rest skip their work */
    ml_error part_err;        /* first part error; mu */
};

/* Per-thread execution context: a worker's, or a helper's (lent to a
 * waiting thread under r->mu). */
typedef struct ml_worker {
    ml_reader *r;
    pthread_t thread;         /* a worker's; valid when started */
    int started;              /* 1: thread created (ml_reader_free joins or detaches it) */
    int nowait;               /* a helper: never wait for a device (see reader_dispatch.c) */
    struct { ml_layout *L; ml_fetcher *f; uint64_t tick; } fetchers[N_FETCHERS];
    uint64_t tick;
    unsigned char *scratch;   /* run buffer */
    size_t scratch_cap;
    ml_row_run *runs;         /* DIRECT / SCATTER: the part's runs, runs_cap bytes */
    size_t runs_cap;
    uint64_t *src;            /* SCATTER: scratch row of each requested row */
    size_t src_cap;
    ml_nowait_ctx nio;        /* a helper's batches of reads from the page cache */
} ml_worker;

struct ml_reader {
    _Atomic unsigned refs;    /* the owner + one per worker thread; freed at 0 */
    pthread_mutex_t mu;
    pthread_cond_t work_cv;   /* queue or parallel list non-empty, or shutdown */
    pthread_cond_t notify_cv; /* a tag was queued or a worker exited */
    ml_list queue;            /* FIFO of queued requests (qnode); mu */
    ml_list running;          /* taken by a worker or waiter, not finished (run_node); mu */
    ml_list par;              /* requests with parts to claim (par_node), newest first; mu */
    int closed;               /* no new requests; mu */
    int draining;             /* closed with drain=1; mu */
    _Atomic int stopping;     /* closed with drain=0; written under mu, read anywhere (relaxed) */
    int64_t stop_ns;          /* CLOCK_MONOTONIC time of the first stop (ml_clock_now_ns); mu */
    unsigned n_exited;        /* workers that left their loop; mu */
    unsigned n_idle;          /* workers waiting on work_cv; mu */
    uint64_t *tags;           /* finished notify tags; mu */
    ml_event event;           /* asyncio wake-up (event.h): its eventfd, made by ml_reader_event_fd,
                                 is written (always) when an armed request completes and at
                                 shutdown; written under mu */
    ml_list async_done;       /* armed requests that completed, not yet popped (async_node); mu */
    size_t n_tags, tags_cap;
    int batch_io;             /* the engine is io_uring: small requests are batched */
    unsigned n_workers;       /* workers started; final once ml_reader_open returns */
    ml_worker *workers;       /* owned, n_workers entries in use */
    ml_worker helpers[N_HELPERS];/* lent to waiters; mu */
    unsigned helpers_busy;    /* bit i: helpers[i] lent; mu */
    ml_io_mode io_mode;
    ml_band_cache cache;      /* its own lock */
    int inline_reads;         /* config: read small cached requests inside submit */
    ml_nowait nowait;         /* what RWF_NOWAIT reads showed here: when it fails for want of
                                 kernel or filesystem support, no inline reads, no helping */
    _Atomic uint64_t n_requests, n_rows, n_parallel, n_helped, n_batched, n_inlined, n_mapped; /* stats, relaxed */
    ml_budget_client *budget; /* owned, or NULL; immutable after open; cancelled by a stop (drain=0) */
};

/* 1 if a stop completed q while it ran: its remaining work is skipped. */
static inline int ml_request_stopped(const ml_request *q) {
    return atomic_load_explicit(&q->done, memory_order_acquire);
}

static inline uint64_t row_at(const ml_request *q, uint64_t i) { return q->rows ? q->rows[i] : q->row0 + i; }
/* The k-th row in reading order and its place in the request. */
static inline uint64_t row_k(const ml_request *q, uint64_t k) { return q->pairs ? q->pairs[k].row : row_at(q, k); }
static inline uint64_t pos_k(const ml_request *q, uint64_t k) { return q->pairs ? q->pairs[k].pos : k; }

/* -ENOMEM with a message naming q's rows and dataset. */
int ml_request_oom(ml_error *err, const ml_request *q);

/* ---- reader.c ---------------------------------------------------------- */

/* Drop a reference to r; the last frees it. */
void ml_reader_unref(ml_reader *r);

/* q completed: if an asyncio waiter armed it, put it on r->async_done and
 * fire r->event when the list was empty. Call with r->mu held. */
void ml_reader_async_done_locked(ml_reader *r, ml_request *q);

/* Fire r->event (if its fd is made): wakes every asyncio waiter. Call with r->mu held. */
void ml_reader_event_locked(ml_reader *r);

/* Queue a finished notify tag. Call with r->mu held. */
void ml_reader_push_tag_locked(ml_reader *r, uint64_t tag);

/* ---- reader_request.c: request life and the lists ---------------------- */

/* Drop a reference to q; the last frees it. Accepts NULL. */
void ml_request_unref(ml_request *q);

/* Mark q done with outcome e (NULL = success), unless it is done already
 * (a stop completed it while it ran), and queue its tag; release=1: no
 * thread writes dest any more. Returns 1 if this completed q. Call with
 * r->mu held (it takes q->mu). */
int ml_request_complete_locked(ml_reader *r, ml_request *q, const ml_error *e, int release);

/* The thread that ran q is done with it and its dest: complete q with
 * outcome e (NULL = success) unless a stop did already. Takes r->mu, so
 * call without it. Does not drop a reference. */
void ml_request_finish(ml_reader *r, ml_request *q, const ml_error *e);

/* Take q, queued, for this thread: off the queue, onto the running list,
 * state RUNNING. Call with r->mu held. */
void ml_request_take_locked(ml_reader *r, ml_request *q);

/* Put q, running, back at the head of the queue (state QUEUED), off the
 * running list. Call with r->mu held. */
void ml_request_requeue_locked(ml_reader *r, ml_request *q);

/* The first queued request, or NULL. Call with r->mu held. */
ml_request *ml_queue_first_locked(ml_reader *r);

/* Put q on the parallel list, which takes a reference of its own, unless
 * it is on it. Call with r->mu held. */
void ml_par_push_locked(ml_reader *r, ml_request *q);

/* Take q off the parallel list if it is on it, dropping the list's
 * reference (never the last: the caller holds one). Call with r->mu held. */
void ml_par_remove_locked(ml_reader *r, ml_request *q);

/* A request on the parallel list with parts a worker can claim, with a
 * reference for the caller, or NULL; drops exhausted ones. Call with
 * r->mu held. */
ml_request *ml_par_take_locked(ml_reader *r);

/* Parts of q left for a worker to claim (from the counter or handed back). */
int ml_request_parts_claimable(ml_request *q);

/* ---- reader_plan.c: how a request is read ------------------------------ */

/* Decide how q is read (q->mode, q->pairs) and cut it into parts, at
 * most 2 x (n_threads) and MAX_PARTS, one if q->may_split is 0. Returns
 * 0 or -ENOMEM (detail in err). */
int ml_request_plan(ml_request *q, unsigned n_threads, ml_error *err);

/* Sort p[0..n) by (row, pos), in place. */
void ml_pairs_sort(ml_pair *p, uint64_t n);

/* 1 if q is one short read of rows straight into dest (a range of whole
 * rows up to SMALL_BYTES, in one extent): it may be read inline and be
 * batched with others. */
int ml_request_small(const ml_request *q);

/* Bytes q reads or decodes, roughly: what running it costs. */
uint64_t ml_request_work(const ml_request *q);

/* ---- reader_exec.c: running a part ------------------------------------- */

/* Run part pt of q on w. A helper's part (w->nowait) returns -EAGAIN (or
 * another error) when it cannot be done without waiting for a device:
 * nothing is reported, the part goes back to the workers. Else 0 or a
 * negative code with detail in err. */
int ml_part_exec(ml_worker *w, ml_request *q, const ml_part *pt, ml_error *err);

/* w's fetcher for L (opened on first use, up to N_FETCHERS kept), or NULL
 * with err set. Borrowed: w owns it. */
ml_fetcher *ml_worker_fetcher(ml_worker *w, ml_layout *L, ml_error *err);

/* Free w's fetchers and buffers; w can be used again. */
void ml_worker_release(ml_worker *w);

/* ---- reader_dispatch.c: who runs what ---------------------------------- */

/* A worker thread's loop; arg is its ml_worker. Drops the worker's
 * reference on r when it leaves. */
void *ml_reader_worker_main(void *arg);

#endif
