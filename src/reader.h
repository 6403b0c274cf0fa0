/* reader.h - random-access requests: worker threads serve "these rows of
 * this dataset, in this order, into this buffer" from a shared queue. */
#ifndef ML_READER_H
#define ML_READER_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "layout.h"
#include "io.h"

typedef struct ml_reader ml_reader;
typedef struct ml_request ml_request;

typedef struct ml_reader_config {
    unsigned n_workers;  /* worker threads, >= 1 */
    ml_io_mode io_mode;
    size_t cache_bytes;  /* decoded-chunk cache; 0 = auto: sized from the datasets read,
                            within cache_budget (see band_cache.h) */
    size_t cache_budget; /* the auto cache's most; 0 = an eighth of memory, at most 2 GiB */
    int inline_reads;    /* submit reads small cached ranges itself (see reader_request.c) */
    struct ml_budget *budget; /* borrowed, or NULL: the reader makes its own client of it (budget.h);
                                 then every byte is read by a worker's fetcher, which takes tokens
                                 first: no inline reads, no helping waiters, no copies from views */
    int budget_priority; /* that client's priority among the budget's waiters */
} ml_reader_config;

/* What to read. Rows are given either as a list (any order, duplicates
 * allowed) or as the range [row0, row0 + n_rows). Each row, or only bytes
 * [col_offset, col_offset + col_size) of it, lands at dest + i * out_size
 * where out_size is col_size, or L->row_bytes when col_size is 0. */
typedef struct ml_request_spec {
    ml_layout *L;          /* borrowed; the request takes its own reference */
    const uint64_t *rows;  /* borrowed and copied; NULL = range */
    uint64_t row0;         /* range start (rows == NULL) */
    uint64_t n_rows;       /* rows in the list or the range */
    size_t col_offset;     /* bytes into a row */
    size_t col_size;       /* bytes per row to copy; 0 = whole row */
    void *dest;            /* borrowed: must stay valid until the request is done */
    size_t dest_bytes;     /* capacity of dest */
    uint64_t tag;          /* caller's identity for ml_reader_pop_done */
    int notify;            /* 1: queue tag for ml_reader_pop_done when done */
    int wrap;              /* 1: rows are int64 and a negative one counts from the end */
} ml_request_spec;

/* Start n_workers threads. Returns 0 or -errno with detail in err. */
int ml_reader_open(ml_reader **out, const ml_reader_config *cfg, ml_error *err);

/* Refuse new requests. drain=1: workers finish every queued request, then
 * exit. drain=0 (stop): queued requests complete at once with -ML_ECLOSED
 * and so do the ones being read (their dest is still written until the
 * read in flight returns: see ml_request_busy); work not started is
 * skipped. Does not wait. Idempotent. */
void ml_reader_shutdown(ml_reader *r, int drain);

/* Wait up to timeout_ms (<0: forever) for every worker to leave its loop
 * (after ml_reader_shutdown; with drain=1, once every request is done).
 * Returns 0, or -ETIMEDOUT. */
int ml_reader_join(ml_reader *r, long timeout_ms);

/* Shut down (drain=0) and drop the caller's reference. Workers get up to
 * ML_CLOSE_WAIT_MS (500 ms, workers.h) from the first stop to finish their read in
 * flight; one still inside a read then (a hung mount) is detached and
 * frees its share of the reader when the read returns. Requests held by
 * callers stay valid until ml_request_free. Accepts NULL. */
void ml_reader_free(ml_reader *r);

/* Queue a request. On success *out is the caller's reference (free it
 * with ml_request_free). Errors: -ML_ECLOSED (reader shut down),
 * -ML_EINVAL (row outside the dataset, dest too small), -ENOMEM. */
int ml_request_submit(ml_reader *r, const ml_request_spec *spec, ml_request **out, ml_error *err);

/* Read rows [row0, row0 + n) of L (whole rows) into dest now, on the
 * calling thread, if that needs no worker: a small range (up to 64 KiB)
 * of contiguous data copied from the file's local view or read from the
 * page cache (see ml_request_submit's inline reads, of which this is the
 * form without a request). Returns 0 when dest holds the rows (counted in
 * the stats as a request), or -EAGAIN for anything else -- rows out of
 * range, a closed reader, data not cached, inline reads off, fault
 * injection on: then submit a request, which reads them or says why not.
 * Borrows L and dest (dest_bytes long). */
int ml_reader_read_now(ml_reader *r, ml_layout *L, uint64_t row0, uint64_t n, void *dest, size_t dest_bytes);

/* Wait up to timeout_ms (<0: forever) for the request to finish.
 * Returns 0 when done, -ETIMEDOUT otherwise. */
int ml_request_wait(ml_request *q, long timeout_ms);

int ml_request_done(ml_request *q);

/* 1 while a worker is reading it (no longer cancellable, not yet done). */
int ml_request_running(ml_request *q);

/* 1 while a thread may still write into q's dest. 0 once q is done, except
 * for a request failed by ml_reader_shutdown(drain=0) while it was being
 * read: its dest must stay valid until this returns 0. */
int ml_request_busy(const ml_request *q);

/* Wait up to timeout_ms (<0: forever) until ml_request_busy(q) is 0.
 * Returns 0, or -ETIMEDOUT. */
int ml_request_wait_released(ml_request *q, long timeout_ms);

/* Cancel q, a request submitted to r, if it is still queued: returns 1
 * and q completes with -ECANCELED without touching its dest. Returns 0
 * if it is running or done. */
int ml_reader_cancel(ml_reader *r, ml_request *q);

/* Queue q's tag for ml_reader_pop_done once q is done (at once if it is
 * done already), as if it had been submitted with notify=1. */
void ml_reader_watch(ml_reader *r, ml_request *q);

/* Let the calling thread work on q, a request submitted to r, instead of
 * only waiting for it -- but only work that never waits for a device:
 * rows of contiguous data read from the page cache (preadv2 RWF_NOWAIT),
 * rows of chunked data whose decoded bands are in the reader's cache, at
 * most ~32 MiB of copying. If no worker has started q, take it from the
 * queue and run it here; if q is running in parts, claim parts that are
 * left. Work that would wait for the disk goes back to the workers. So the
 * caller is back within milliseconds, to check signals or a timeout, even
 * on a hung mount. Returns 1 if it did some of q's work, 0 if there was
 * none it could do. Call it, then ml_request_wait. Call without the GIL,
 * holding r (the owner's reference) for the duration. */
int ml_reader_help(ml_reader *r, ml_request *q);

/* The outcome of a finished request (code 0 = success). Borrowed. */
const ml_error *ml_request_error(const ml_request *q);

/* Drop the caller's reference. A request that is still running keeps
 * its own until the worker is done with it, but its dest must stay valid
 * until ml_request_busy(q) is 0 (wait, or cancel, first). Accepts NULL. */
void ml_request_free(ml_request *q);

/* The reader's event fd (an eventfd, EFD_NONBLOCK|EFD_CLOEXEC, made on the
 * first call; borrowed: closed when r is freed): written when a request
 * armed with ml_reader_arm completes and at shutdown, so an event loop can
 * wait for requests without a thread. Returns the fd or -errno. */
int ml_reader_event_fd(ml_reader *r);

/* Arm q for asyncio: once q is done (at once if it is), its tag goes on
 * the list ml_reader_pop_armed takes from and the event fd is written
 * (only when that list was empty: one write wakes the loop for all of
 * them). A request is reported once per arming. */
void ml_reader_arm(ml_reader *r, ml_request *q);

/* Take up to max tags of armed requests that completed, never waiting.
 * Returns the number taken. */
size_t ml_reader_pop_armed(ml_reader *r, uint64_t *tags, size_t max);

/* Take up to max tags of finished notify-requests, waiting up to
 * timeout_ms for the first. Returns the number taken (0 on timeout), or
 * -ML_ECLOSED once the reader is shut down, its workers are gone and no
 * tag is left. */
int ml_reader_pop_done(ml_reader *r, long timeout_ms, uint64_t *tags, size_t max);

typedef struct ml_reader_stats {
    uint64_t requests;    /* requests completed */
    uint64_t rows;        /* rows copied out */
    uint64_t cache_hits;  /* chunk bands served from the cache */
    uint64_t cache_misses;/* chunk bands read and decoded */
    uint64_t cache_evictions; /* decoded bands dropped to make room */
    uint64_t cache_bytes; /* decoded bytes cached now */
    uint64_t cache_limit; /* the most the cache holds now (auto: as sized so far) */
    uint64_t cache_wanted;/* what would hold every dataset read through it, decoded */
    uint64_t parallel;    /* requests split into parts run by several threads */
    uint64_t helped;      /* requests run, or parts claimed, by a waiting thread */
    uint64_t batched;     /* small requests read together in one I/O batch */
    uint64_t inlined;     /* small requests read from the page cache inside submit */
    uint64_t mapped;      /* rows copied from the file's mapping (no read each) */
} ml_reader_stats;

void ml_reader_get_stats(ml_reader *r, ml_reader_stats *st);

/* The reader's use of its budget since it opened: 0, or -ENOENT without one. */
struct ml_budget_stats;
int ml_reader_budget_stats(ml_reader *r, struct ml_budget_stats *st);

#endif
