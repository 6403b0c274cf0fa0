/* file_loader.h - the whole-file loader: consumers ("worker contexts")
 * request files by path, loader threads read each whole file into a slot
 * of one shared region, and the consumer takes the result (bytes or an
 * errno) and releases the slot. The region is one sealed memfd that other
 * processes attach, so the loader threads may run in another process
 * (file_region.c holds the state machine, file_read.c the reads,
 * file_serve.c the loader threads). */
#ifndef ML_FILE_LOADER_H
#define ML_FILE_LOADER_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "source.h"

/* Bytes of path an entry holds, with its NUL: PATH_MAX, as open() takes. A
 * longer path fails on its entry with ENAMETOOLONG. */
#define ML_FL_PATH_BYTES 4096

/* Entry states. */
typedef enum ml_fl_state {
    ML_FL_FREE = 0,  /* unused; the worker may request into it */
    ML_FL_REQUESTED, /* queued for the loader threads */
    ML_FL_LOADING,   /* a loader thread reads it */
    ML_FL_DONE,      /* read (or failed); waits in its worker's done queue */
    ML_FL_TAKEN,     /* handed to the consumer; freed by release */
} ml_fl_state;

/* What became of one request (ml_floader_status, ml_floader_cancel): its
 * entry's state while the entry still holds that request, else GONE. */
typedef enum ml_fl_status {
    ML_FL_ST_QUEUED = 1, /* REQUESTED */
    ML_FL_ST_RUNNING,    /* LOADING (not cancelled) */
    ML_FL_ST_DONE,       /* DONE, not taken */
    ML_FL_ST_TAKEN,      /* TAKEN (by its handle, or by get for a request()) */
    ML_FL_ST_CANCELLED,  /* cancelled: freed, or LOADING until its read ends (abandoned) */
    ML_FL_ST_GONE,       /* the entry holds another request (this one was taken and released, or
                            cancelled) */
} ml_fl_status;

typedef struct ml_floader ml_floader;

typedef struct ml_fl_config {
    unsigned n_workers;   /* worker contexts, >= 1 */
    unsigned queue_depth; /* entries per worker context, >= 1 */
    uint64_t max_file_size; /* bytes, >= 0; the slot is this rounded up to 4 KiB */
} ml_fl_config;

/* What ml_floader_get() hands out. */
typedef struct ml_fl_got {
    unsigned entry;  /* index inside the worker's table, for ml_floader_release() */
    uint64_t seq;    /* request number (region-wide, from 0) */
    void *data;      /* the slot (borrowed: valid while the handle lives) */
    uint64_t size;   /* bytes of file in data */
    ml_error error;  /* error.code != 0 (-errno): the entry failed; data is garbage */
} ml_fl_got;

typedef struct ml_fl_stats {
    uint64_t requested, completed, failed, bytes; /* counters since creation */
    unsigned in_flight;  /* entries REQUESTED or LOADING */
    unsigned ready;      /* DONE, not taken yet */
    unsigned unreleased; /* TAKEN, not released */
    unsigned serving;    /* 1 while a server holds the region */
    int server_pid;      /* that server's process, or 0 */
    unsigned server_dead;/* 1 once a server was seen to die */
    unsigned closed;
    uint64_t direct_fallbacks; /* O_DIRECT opens refused, read buffered instead */
    uint64_t cancelled;  /* requests cancelled while queued: never opened or read */
    uint64_t abandoned;  /* requests cancelled while loading or completed-not-taken: read, then freed
                            by the core, never handed out */
    unsigned abandoning; /* entries LOADING whose request was cancelled: freed when the read ends */
} ml_fl_stats;

/* Create a region as cfg says, in a new sealed memfd. Returns 0, -ML_EINVAL
 * (zero workers or depth, sizes that overflow), -ENOMEM or -errno. The
 * caller owns one reference. */
int ml_floader_new(ml_floader **out, const ml_fl_config *cfg);

/* Map the region behind fd (borrowed; the handle keeps a duplicate). The
 * header is validated, never trusted: magic, version, record sizes,
 * geometry recomputed, the file's size and its seals. Returns 0,
 * -ML_EINVAL for anything that is not such a region, or -errno. */
int ml_floader_attach(ml_floader **out, int fd);

/* The memfd (borrowed), for handing to another process. */
int ml_floader_fd(const ml_floader *fl);
void ml_floader_ref(ml_floader *fl);
void ml_floader_unref(ml_floader *fl); /* accepts NULL; unmaps at the last reference */

unsigned ml_floader_n_workers(const ml_floader *fl);
unsigned ml_floader_queue_depth(const ml_floader *fl);
uint64_t ml_floader_max_file_size(const ml_floader *fl);

/* Consumer: queue `path` (len bytes, no NUL inside) on worker w's next
 * FREE entry, waiting up to timeout_ms (0: not at all, <0: forever) for
 * one. A path of ML_FL_PATH_BYTES bytes or more completes at once with
 * -ENAMETOOLONG. Returns 0 (*entry set), -EAGAIN (no free entry, timeout
 * 0; *seq, if not NULL, gets its request number, which ml_fl_got.seq
 * repeats), -ETIMEDOUT, -ML_ECLOSED, -ML_EINVAL (w out of range), or
 * -ML_EDEADLOCK when `strict` (the caller means to wait as long as it
 * takes) and every entry is DONE or TAKEN by the calling thread, so only
 * this thread could free one (another thread's release would; a caller
 * counting on that passes strict 0 and a timeout). */
int ml_floader_request(ml_floader *fl, unsigned w, const char *path, size_t len, long timeout_ms,
                       int strict, unsigned *entry, uint64_t *seq);

/* Consumer: ml_floader_request for a request with a handle (Python's
 * FileRequest): the same, but its entry is *bound*: once completed it is
 * never put on w's done FIFO (ml_floader_get never returns it) and only
 * ml_floader_take(w, *entry, *seq) takes it. *seq is always set on 0. */
int ml_floader_submit(ml_floader *fl, unsigned w, const char *path, size_t len, long timeout_ms,
                      int strict, unsigned *entry, uint64_t *seq);

/* Consumer: take the bound request (w, entry, seq) once it completed (DONE
 * -> TAKEN), waiting up to timeout_ms (0: not at all, <0: forever).
 * Returns 0 (*out set), -EAGAIN (not completed, timeout 0), -ETIMEDOUT,
 * -ECANCELED (the request was cancelled, or its entry no longer holds it:
 * there is nothing to take), -ML_ECLOSED, -ML_EINVAL. A cancel wakes it. */
int ml_floader_take(ml_floader *fl, unsigned w, unsigned entry, uint64_t seq, long timeout_ms,
                    ml_fl_got *out);

/* Consumer: cancel request (w, entry, seq), never waiting for a read (it
 * takes the region's lock only). What happens depends on its state:
 *   queued (REQUESTED)  -> removed from the request FIFO and FREE at once:
 *                          no loader opens or reads it; stats.cancelled++;
 *   running (LOADING)   -> marked cancelled: the read finishes, then the
 *                          core frees the entry instead of completing it
 *                          (nobody holds its slot); stats.abandoned++ then;
 *   completed (DONE)    -> FREE at once (a bound entry is in no FIFO; one
 *                          from ml_floader_request is taken off w's done
 *                          FIFO); stats.abandoned++.
 * Returns the status it had (ML_FL_ST_QUEUED, _RUNNING or _DONE: it is
 * cancelled now), or ML_FL_ST_TAKEN / _CANCELLED / _GONE (nothing
 * changed: already handed out, already cancelled, not that request any
 * more), or -ML_EINVAL. Wakes w's waiters (a blocked request may use the
 * entry; a take of it returns -ECANCELED). */
int ml_floader_cancel(ml_floader *fl, unsigned w, unsigned entry, uint64_t seq);

/* Consumer: cancel every queued (REQUESTED) request of worker w, as
 * ml_floader_cancel does one. Returns how many, or -ML_EINVAL. */
int ml_floader_cancel_pending(ml_floader *fl, unsigned w);

/* The status of request (w, entry, seq) (ml_fl_status), or -ML_EINVAL. Never waits. */
int ml_floader_status(ml_floader *fl, unsigned w, unsigned entry, uint64_t seq);

/* Consumer: take worker w's oldest completed entry (DONE -> TAKEN), waiting
 * up to timeout_ms (0: not at all, <0: forever). Returns 0, -EAGAIN
 * (nothing completed, timeout 0), -ETIMEDOUT, -ML_ECLOSED, -ML_EINVAL, or,
 * when `strict`, -ML_EDEADLOCK if w has nothing requested or loading
 * (waiting could never end, unless another thread requests on w). A waiting caller checks the server with
 * ml_floader_check_server() between slices of its wait. */
int ml_floader_get(ml_floader *fl, unsigned w, long timeout_ms, int strict, ml_fl_got *out);

/* Consumer: TAKEN -> FREE. Anything else (released twice, out of range)
 * is a no-op. */
void ml_floader_release(ml_floader *fl, unsigned w, unsigned entry);

/* The path stored in worker w's entry, copied into buf (NUL-terminated,
 * cap bytes). Returns its length, or -ML_EINVAL. */
int ml_floader_entry_path(ml_floader *fl, unsigned w, unsigned entry, char *buf, size_t cap);

/* Is anyone serving? Returns 0 if a server is alive (or none has yet been
 * awaited for grace_ms: waited_ms < grace_ms); -EOWNERDEAD if the server
 * died (its thread or process ended without stopping: a robust lock it
 * held says so), -ENOTCONN if none served for grace_ms; err says which,
 * with the pid. Never blocks. */
int ml_floader_check_server(ml_floader *fl, int64_t waited_ms, int64_t grace_ms, ml_error *err);

/* Mark the region closed and wake every waiter in every process; later
 * request/get return -ML_ECLOSED and loader threads stop. Idempotent. */
void ml_floader_close(ml_floader *fl);

/* This handle's event fd for asyncio (an eventfd, EFD_NONBLOCK|EFD_CLOEXEC,
 * made on the first call; borrowed: closed with the handle's last
 * reference). Written once per ml_floader_arm by the next completion or
 * close through this handle -- so only when the loader threads run in this
 * process on this handle (FileLoader.start()); a loader in another process
 * never writes it. Returns the fd or -errno. */
int ml_floader_event_fd(ml_floader *fl);

/* Entries of worker w requested or loading (0 for a bad w). */
unsigned ml_floader_outstanding(ml_floader *fl, unsigned w);

/* An asyncio consumer found nothing completed and will wait for the event
 * fd: arm it, then call ml_floader_get(timeout 0) once more before waiting. */
void ml_floader_arm(ml_floader *fl);
int ml_floader_closed(ml_floader *fl);

/* Wait up to timeout_ms (<0: forever) for close (returns 1) or for the
 * server state to change (0). For a loader process's main thread. */
int ml_floader_wait_event(ml_floader *fl, long timeout_ms);

void ml_floader_stats(ml_floader *fl, ml_fl_stats *out);

/* ---- the serving side (file_serve.c uses these) ---- */

/* Claim the region for serving: 0, or -EBUSY if a server holds it,
 * -EOWNERDEAD if one died (the region's entries may be stuck: make a new
 * loader), -ML_ECLOSED. */
int ml_floader_serve_claim(ml_floader *fl);
/* The serving thread holds the lifeline (blocking, briefly) and marks the
 * region served by this process; unserve undoes both, from the same thread. */
void ml_floader_serve_begin(ml_floader *fl);
void ml_floader_serve_end(ml_floader *fl);
/* Drop a claim whose serve_begin never ran. */
void ml_floader_serve_unclaim(ml_floader *fl);

/* Loader thread: wait for REQUESTED entries and mark up to max of them
 * LOADING (a share of the queue: pending / n_threads, at least one), into
 * idx[] (region-wide entry indices). Returns how many (>= 1), or 0 once
 * the region is closed or *stop is set (checked under the lock; wake with
 * ml_floader_kick). */
unsigned ml_floader_take_work(ml_floader *fl, unsigned max, unsigned n_threads, const int *stop,
                              unsigned *idx);
/* The path and slot of region-wide entry i (LOADING: nobody writes them).
 * path is copied (NUL-terminated) into buf of ML_FL_PATH_BYTES. */
void ml_floader_work_item(ml_floader *fl, unsigned i, char *buf, void **slot, size_t *slot_bytes);
/* LOADING -> DONE with size bytes or err, waking the worker's consumer. */
void ml_floader_complete(ml_floader *fl, unsigned i, uint64_t size, const ml_error *err,
                         int direct_fallback);
/* complete() for n entries under one lock, waking each worker once:
 * idx[k] with sizes[k], errs[k] (NULL or code 0: success), direct_fallbacks[k]. */
void ml_floader_complete_batch(ml_floader *fl, unsigned n, const unsigned *idx, const uint64_t *sizes,
                               const ml_error *const *errs, const int *direct_fallbacks);
/* Wake the loader threads (of every process) to re-check their stop flag. */
void ml_floader_kick(ml_floader *fl);

/* ---- loader threads (file_serve.c) ---- */

typedef struct ml_fserve ml_fserve;

typedef struct ml_fserve_config {
    unsigned n_threads; /* >= 1 */
    unsigned batch;     /* entries per submit, 1..256 */
    int direct;         /* 1: O_DIRECT reads where the filesystem takes them */
    ml_io_mode mode;    /* ML_IO_AUTO honours MULTILOAD_IO */
    struct ml_budget *budget; /* borrowed, or NULL: the threads share one client of it (budget.h) */
    int budget_priority;      /* that client's priority */
} ml_fserve_config;

/* Start cfg->n_threads loader threads serving fl (takes a reference).
 * Returns once they serve: 0, or -EBUSY / -EOWNERDEAD / -ML_ECLOSED from
 * the claim, -ENOMEM, -errno from pthread_create. */
int ml_fserve_start(ml_fserve **out, ml_floader *fl, const ml_fserve_config *cfg);

/* Stop and join the threads (their current batch finishes), give the
 * region up. Accepts NULL. */
void ml_fserve_stop(ml_fserve *s);

/* The engine the threads use: ML_IO_URING or ML_IO_PREAD. */
ml_io_mode ml_fserve_mode(const ml_fserve *s);

/* The loader threads' use of their budget: 0, or -ENOENT without one. */
struct ml_budget_stats;
int ml_fserve_budget_stats(ml_fserve *s, struct ml_budget_stats *st);

#endif
