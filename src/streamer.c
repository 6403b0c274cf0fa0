/* streamer.c - worker threads that fill a caller's ring with the blocks a
 * schedule names.
 *
 * n_workers threads loop: claim (slot, block number k) from the ring, ask
 * the schedule (schedule.c: a pure function, so no lock) which row runs
 * block k holds, read them into the slot with their own fetcher (a read
 * context on the layout's byte source, a decoder), publish. The stream knows no block arithmetic of its
 * own: cyclic, remainder and order are the schedule's; the ring hands out
 * block numbers [position, n_blocks) of it. Block numbers come from the
 * ring together with a free slot, which keeps ordered mode deadlock-free
 * (see ring.c). The ring is the caller's (private or shared memory); the
 * stream holds a reference to it and never looks at its backing. A failed
 * block is published with its error and the worker carries on: the error
 * reaches the consumer with that block and other blocks are unaffected.
 *
 * A worker that cannot even start (no memory for its fetcher) publishes
 * its failure on the first block it claims, so nothing is lost silently;
 * the healthy workers wait (at most FAILED_FIRST_MS) for that first claim,
 * so they cannot take every block before it,
 * then exits if some other worker has not failed, leaving it the other
 * blocks. It decides only once every worker thread exists (the start
 * gate), so the count it compares with is final. The last worker to fail
 * never exits: if none could start, every block carries the error, so
 * consumers are never left waiting.
 *
 * Cold data (readahead.c): after publishing a block, a worker keeps the
 * blocks ahead of it hinted to the source (buffered streams), and a
 * direct worker claims up to `batch` slots at once and reads their blocks
 * in one batch, so several reads are in flight per worker. A batch that
 * fails is read again block by block, so each block still carries its own
 * error.
 *
 * Budgets (budget.h): a stream given one makes its own client of it; every
 * worker's fetcher takes tokens from it before each read, and close
 * cancels it first, so a worker asleep on the budget wakes at once. A
 * budgeted buffered stream hints nothing ahead (the kernel's read of a
 * hint would not be charged).
 *
 * Close: ring close wakes every worker waiting for a slot; workers in the
 * middle of a read finish that read, then exit. close() joins them for up
 * to ML_CLOSE_WAIT_MS and detaches any still reading (a hung network mount
 * must not hang close or Ctrl-C). That is safe because the stream is
 * reference-counted: the owner holds one reference and every worker one,
 * so a detached worker's stream, ring and layout live until it exits.
 */
#define _GNU_SOURCE
#include "streamer.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "fetch.h"
#include "workers.h"

struct ml_stream {
    ml_layout *L;                 /* owned reference */
    ml_ring *ring;                /* owned reference */
    ml_stream_config cfg;         /* immutable */
    ml_schedule sch;              /* immutable copy: which rows block k holds */
    ml_readahead ra;              /* prefetch ahead of the workers (buffered streams) */
    unsigned batch;               /* blocks a worker claims and reads at once, >= 1; immutable */
    pthread_t *threads;           /* n_started entries */
    unsigned n_started;
    pthread_mutex_t close_mu;     /* serialises close */
    int closed;                   /* guarded by close_mu */
    _Atomic uint64_t st_blocks, st_bytes, st_wait_ns, st_errors; /* relaxed counters */
    _Atomic uint64_t st_batched;  /* blocks read in batches of several (relaxed) */
    _Atomic int io_mode;          /* mode the first worker got */
    pthread_mutex_t start_mu;     /* start gate: guards started */
    pthread_cond_t start_cv;      /* signalled once, when started becomes 1 */
    int started;                  /* 1 once every worker thread was created (n_started final) */
    unsigned n_opened;            /* workers past their fetcher's open (guarded by start_mu) */
    unsigned n_tried;             /* failed workers past their first claim (guarded by start_mu) */
    _Atomic unsigned n_failed;    /* workers whose fetcher could not open */
    _Atomic unsigned refs;        /* owner + one per running worker; freed at 0 */
    ml_budget_client *budget;     /* owned, or NULL; immutable after open; cancelled by close */
};

static void stream_destroy(ml_stream *s) {
    ml_budget_client_free(s->budget);
    ml_ring_unref(s->ring);
    ml_layout_unref(s->L);
    free(s->threads);
    pthread_mutex_destroy(&s->close_mu);
    pthread_mutex_destroy(&s->start_mu);
    pthread_cond_destroy(&s->start_cv);
    free(s);
}

static void stream_unref(ml_stream *s) {
    if (ml_refs_put(&s->refs))
        stream_destroy(s);
}

/* Healthy workers wait this long at most for the failed ones' first claims. */
#define FAILED_FIRST_MS 50

/* A worker that could not start has made its first claim (or found none). */
static void note_tried(ml_stream *s) {
    pthread_mutex_lock(&s->start_mu);
    s->n_tried++;
    pthread_cond_broadcast(&s->start_cv);
    pthread_mutex_unlock(&s->start_mu);
}

/* Read block k into data (rows by its schedule runs): 0 or a negative code
 * with err naming the block. *rows gets the rows stored. */
static int read_block(ml_stream *s, ml_fetcher *f, uint64_t k, void *data, uint64_t *rows, ml_error *err) {
    ml_layout *L = s->L;
    ml_block_runs runs;
    int rc = ml_schedule_block(&s->sch, k, &runs);
    *rows = 0;
    if (rc < 0)
        return ml_error_set(err, rc, "the schedule of dataset '%s' has no block %llu", L->path,
                            (unsigned long long)k);
    for (unsigned i = 0; i < runs.n && rc == 0; i++) {
        rc = ml_fetch_rows(f, runs.start[i], runs.count[i], (unsigned char *)data + *rows * L->row_bytes, err);
        *rows += runs.count[i];
    }
    return rc;
}

/* Publish block k with its outcome; a failure's message is prefixed with
 * the block, so the consumer knows which one failed. */
static void publish(ml_stream *s, unsigned slot, uint64_t k, uint64_t rows, int rc, ml_error *err) {
    if (rc < 0) {
        /* Room for the prefix, so snprintf never truncates (which
         * -Wformat-truncation rejects); the copy back keeps what fits. */
        char msg[ML_ERROR_MSG_MAX + 32];
        snprintf(msg, sizeof msg, "block %llu: %s", (unsigned long long)k, err->msg);
        memcpy(err->msg, msg, sizeof err->msg - 1);
        err->msg[sizeof err->msg - 1] = '\0';
        err->code = rc;
    }
    ml_ring_publish(s->ring, slot, rows, rc < 0 ? err : NULL);
}

/* One block; a worker that could not start publishes its start error. */
static void fetch_one(ml_stream *s, ml_fetcher *f, int start_rc, const ml_error *start_err, unsigned slot,
                      uint64_t k, void *data) {
    ml_error err;
    ml_error_clear(&err);
    uint64_t rows = 0;
    int rc = start_rc;
    if (rc < 0)
        err = *start_err;
    else
        rc = read_block(s, f, k, data, &rows, &err);
    publish(s, slot, k, rows, rc, &err);
}

/* Runs one ml_fetch_rows_multi call takes: what fetch.c reads as one
 * batch of contiguous ranges. */
#define MULTI_RUNS 64

/* n > 1 claimed blocks read together: every run of every block, MULTI_RUNS
 * at a time through ml_fetch_rows_multi (one batch of reads each). If a
 * batch fails, each block is read again on its own, so an error reaches
 * the consumer with the block it belongs to and the others are
 * unaffected. */
static void fetch_batch(ml_stream *s, ml_fetcher *f, unsigned n, const unsigned *slot, const uint64_t *k,
                        void *const *data) {
    ml_layout *L = s->L;
    ml_row_run runs[ML_DIRECT_BATCH_BLOCKS * ML_SCHEDULE_MAX_RUNS];
    void *dests[ML_DIRECT_BATCH_BLOCKS * ML_SCHEDULE_MAX_RUNS];
    uint64_t rows[ML_DIRECT_BATCH_BLOCKS];
    size_t nr = 0;
    int rc = 0;
    for (unsigned b = 0; b < n && rc == 0; b++) {
        ml_block_runs br;
        rows[b] = 0;
        if ((rc = ml_schedule_block(&s->sch, k[b], &br)) < 0)
            break;
        for (unsigned i = 0; i < br.n; i++, nr++) {
            runs[nr] = (ml_row_run){.start = br.start[i], .count = br.count[i]};
            dests[nr] = (unsigned char *)data[b] + rows[b] * L->row_bytes;
            rows[b] += br.count[i];
        }
    }
    /* Counted before any block is published, so a consumer that has taken
     * them all sees the count. */
    atomic_fetch_add_explicit(&s->st_batched, n, memory_order_relaxed);
    ml_error err;
    ml_error_clear(&err);
    for (size_t i = 0; i < nr && rc == 0; i += MULTI_RUNS)
        rc = ml_fetch_rows_multi(f, runs + i, dests + i, nr - i < MULTI_RUNS ? nr - i : MULTI_RUNS, &err);
    for (unsigned b = 0; b < n; b++) {
        if (rc == 0) {
            publish(s, slot[b], k[b], rows[b], 0, NULL);
            continue;
        }
        ml_error_clear(&err);
        int brc = read_block(s, f, k[b], data[b], &rows[b], &err);
        publish(s, slot[b], k[b], rows[b], brc, &err);
    }
}

static void *worker_main(void *arg) {
    ml_stream *s = arg;
    ml_layout *L = s->L;
    ml_fetcher *f = NULL;
    ml_error start_err;
    ml_error_clear(&start_err);
    int start_rc = ml_fetcher_open(&f, L, s->cfg.io_mode, &start_err);
    if (start_rc == 0 && s->cfg.direct)
        start_rc = ml_fetcher_set_direct(f, &start_err);
    if (start_rc == 0)
        ml_fetcher_set_budget(f, s->budget); /* the stream outlives its workers' fetchers */
    if (start_rc == 0) {
        int expected = -1;
        atomic_compare_exchange_strong(&s->io_mode, &expected, (int)ml_fetcher_io_mode(f));
    } else {
        atomic_fetch_add(&s->n_failed, 1);
    }
    pthread_mutex_lock(&s->start_mu);
    s->n_opened++;
    pthread_cond_broadcast(&s->start_cv);
    if (start_rc < 0) {
        while (!s->started) /* n_started is final after the gate */
            pthread_cond_wait(&s->start_cv, &s->start_mu);
    } else {
        /* Let a worker that could not start claim its first block (and so
         * report its failure) before the healthy ones take every block:
         * wait, at most FAILED_FIRST_MS, until every worker has tried its
         * open and every failed one its first claim. */
        struct timespec until;
        ml_clock_deadline_ms(&until, CLOCK_MONOTONIC, FAILED_FIRST_MS);
        while ((!s->started || s->n_opened < s->n_started || s->n_tried < atomic_load(&s->n_failed)) &&
               pthread_cond_timedwait(&s->start_cv, &s->start_mu, &until) == 0)
            ;
    }
    pthread_mutex_unlock(&s->start_mu);
    int first = 1;
    for (;;) {
        unsigned slot[ML_DIRECT_BATCH_BLOCKS];
        uint64_t k[ML_DIRECT_BATCH_BLOCKS];
        void *data[ML_DIRECT_BATCH_BLOCKS];
        int claimed = ml_ring_claim(s->ring, &slot[0], &k[0], &data[0]);
        if (start_rc < 0 && first && claimed < 0)
            note_tried(s);
        if (claimed < 0)
            break;
        unsigned n = 1;
        if (start_rc == 0 && s->batch > 1)
            n += ml_ring_claim_more(s->ring, s->batch - 1, &slot[1], &k[1], &data[1]);
        if (n > 1)
            fetch_batch(s, f, n, slot, k, data);
        else
            fetch_one(s, f, start_rc, &start_err, slot[0], k[0], data[0]);
        /* After the block is out, so hints never delay it (the first
         * call of a stream hints a whole window: ~1 ms cold). */
        if (start_rc == 0)
            ml_readahead_advance(&s->ra, L, &s->sch, k[n - 1]);
        if (start_rc < 0 && first)
            note_tried(s);
        first = 0;
        /* Reported once; leave the rest to a worker that has not failed.
         * seq_cst: of the failed workers, the last to count itself sees
         * n_failed == n_started and stays. */
        if (start_rc < 0 && atomic_load(&s->n_failed) < s->n_started)
            break;
    }
    ml_fetcher_close(f);
    stream_unref(s);
    return NULL;
}

/* Let workers that wait for n_started to be final proceed. */
static void open_gate(ml_stream *s) {
    pthread_mutex_lock(&s->start_mu);
    s->started = 1;
    pthread_cond_broadcast(&s->start_cv);
    pthread_mutex_unlock(&s->start_mu);
}

int ml_stream_ring_new(ml_ring **out, const ml_layout *L, const ml_schedule *sch, unsigned n_slots,
                       ml_ring_backing backing, ml_error *err) {
    if (n_slots < 1)
        return ml_error_set(err, -ML_EINVAL, "invalid stream configuration");
    size_t slot_bytes = 0;
    /* A block never needs more rows than the dataset has, whose bytes fit
     * (h5open.c checks): clamp before multiplying, so it cannot wrap. */
    uint64_t slot_rows = ml_schedule_max_rows(sch);
    if (__builtin_mul_overflow(slot_rows ? slot_rows : 1, (uint64_t)L->row_bytes, &slot_bytes))
        return ml_error_set(err, -ML_EINVAL, "blocks of %llu rows of dataset '%s' overflow memory",
                            (unsigned long long)sch->p.block_rows, L->path);
    ml_ring_config rc_cfg = {.n_slots = n_slots, .slot_bytes = slot_bytes,
                             .first = ml_schedule_position(sch), .limit = ml_schedule_n_blocks(sch),
                             .backing = backing};
    int rc = ml_ring_new(out, &rc_cfg);
    if (rc < 0)
        return ml_error_set(err, rc, "cannot allocate %u slots of %zu bytes for dataset '%s'",
                            n_slots, slot_bytes, L->path);
    return 0;
}

int ml_stream_open(ml_stream **out, ml_layout *L, ml_ring *ring, const ml_schedule *sch,
                   const ml_stream_config *cfg, ml_error *err) {
    uint64_t B = sch->p.block_rows;
    if (cfg->n_workers < 1 || sch->p.n_rows != L->n_rows || (L->n_rows > 0 && (B < 1 || B > L->n_rows)))
        return ml_error_set(err, -ML_EINVAL, "invalid stream configuration");
    uint64_t need;
    if (__builtin_mul_overflow(ml_schedule_max_rows(sch), (uint64_t)L->row_bytes, &need) ||
        need > ml_ring_slot_bytes(ring) || ml_ring_first(ring) != ml_schedule_position(sch) ||
        ml_ring_limit(ring) != ml_schedule_n_blocks(sch))
        return ml_error_set(err, -ML_EINVAL, "the ring does not fit the schedule of dataset '%s'", L->path);
    ml_stream *s = calloc(1, sizeof *s);
    if (!s)
        return ml_error_set(err, -ENOMEM, "out of memory starting a stream of dataset '%s'", L->path);
    int rc;
    s->cfg = *cfg;
    s->sch = *sch;
    if (s->cfg.cold == ML_COLD_AUTO)
        s->cfg.cold = ml_cold_mode_env();
    /* Buffered streams prefetch ahead; direct ones read batches (readahead.c).
     * A budgeted stream does not prefetch: the kernel's reads of a hint
     * would pass the budget by. */
    ml_readahead_init(&s->ra, cfg->direct || cfg->budget ? ML_COLD_OFF : s->cfg.cold, need, ml_schedule_position(sch),
                      ml_schedule_n_blocks(sch));
    atomic_init(&s->io_mode, -1);
    atomic_init(&s->refs, 1);
    pthread_mutex_init(&s->close_mu, NULL);
    pthread_mutex_init(&s->start_mu, NULL);
    ml_clock_cond_init(&s->start_cv);
    ml_layout_ref(L);
    s->L = L;
    ml_ring_ref(ring);
    s->ring = ring;
    if (cfg->budget && (rc = ml_budget_client_new(&s->budget, cfg->budget, cfg->budget_priority)) < 0) {
        rc = ml_error_set(err, rc, "out of memory starting a stream of dataset '%s'", L->path);
        goto fail;
    }
    /* Blocks this stream will produce: from the saved position to the end. */
    uint64_t n_blocks = ml_schedule_n_blocks(sch) - ml_schedule_position(sch);
    unsigned n_slots = ml_ring_n_slots(ring);
    /* At most one worker per slot (a worker loads into a slot it claimed)
     * and per block: more would only sleep, so n_procs=10**6 costs nothing. */
    unsigned nw = n_blocks == 0 ? 0 : cfg->n_workers;
    if (nw > n_slots)
        nw = n_slots;
    if (nw > n_blocks)
        nw = (unsigned)n_blocks;
    s->batch = cfg->direct ? ml_direct_batch_blocks(s->cfg.cold, need, n_slots, nw) : 1;
    s->threads = calloc(nw ? nw : 1, sizeof *s->threads);
    if (!s->threads) {
        rc = ml_error_set(err, -ENOMEM, "out of memory starting a stream of dataset '%s'", L->path);
        goto fail;
    }
    for (unsigned i = 0; i < nw; i++) {
        int e = ml_worker_start(&s->threads[i], worker_main, s, &s->refs);
        if (e < 0) {
            if (i > 0)
                break; /* run with the workers we have */
            rc = ml_error_set(err, e, "cannot start a worker thread: %s", strerror(-e));
            goto fail;
        }
        s->n_started++;
    }
    open_gate(s);
    *out = s;
    return 0;
fail:
    open_gate(s);
    ml_stream_free(s);
    return rc;
}

int ml_stream_take(ml_stream *s, uint64_t owner, long timeout_ms, ml_taken *out) {
    uint64_t waited = 0;
    int rc = ml_ring_take(s->ring, s->cfg.ordered, owner, timeout_ms, out, &waited);
    atomic_fetch_add_explicit(&s->st_wait_ns, waited, memory_order_relaxed);
    if (rc == 0) {
        atomic_fetch_add_explicit(&s->st_blocks, 1, memory_order_relaxed);
        if (out->error.code)
            atomic_fetch_add_explicit(&s->st_errors, 1, memory_order_relaxed);
        else
            atomic_fetch_add_explicit(&s->st_bytes, out->rows * s->L->row_bytes, memory_order_relaxed);
    }
    return rc;
}

void ml_stream_close(ml_stream *s) {
    pthread_mutex_lock(&s->close_mu);
    if (!s->closed) {
        s->closed = 1;
        ml_budget_client_cancel(s->budget); /* a worker asleep on the budget wakes now */
        if (s->ring)
            ml_ring_close(s->ring);
        struct timespec deadline;
        ml_workers_close_deadline(&deadline, ml_clock_now_ns()); /* the stop is now */
        for (unsigned i = 0; i < s->n_started; i++)
            ml_worker_join_until(s->threads[i], &deadline); /* or detach: see the file comment */
    }
    pthread_mutex_unlock(&s->close_mu);
}

void ml_stream_free(ml_stream *s) {
    if (!s)
        return;
    ml_stream_close(s);
    stream_unref(s);
}

ml_ring *ml_stream_ring(ml_stream *s) { return s->ring; }

const ml_schedule *ml_stream_schedule(const ml_stream *s) { return &s->sch; }

uint64_t ml_stream_position(ml_stream *s) { return ml_ring_position(s->ring); }

void ml_stream_get_stats(ml_stream *s, ml_stream_stats *st) {
    st->blocks = atomic_load_explicit(&s->st_blocks, memory_order_relaxed);
    st->bytes = atomic_load_explicit(&s->st_bytes, memory_order_relaxed);
    st->wait_ns = atomic_load_explicit(&s->st_wait_ns, memory_order_relaxed);
    st->errors = atomic_load_explicit(&s->st_errors, memory_order_relaxed);
    st->prefetch_steps = atomic_load_explicit(&s->ra.prefetched, memory_order_relaxed);
    st->resident_steps = atomic_load_explicit(&s->ra.resident, memory_order_relaxed);
    st->batched_blocks = atomic_load_explicit(&s->st_batched, memory_order_relaxed);
    st->batch_blocks = s->batch;
}

int ml_stream_budget_stats(ml_stream *s, ml_budget_stats *st) {
    if (!s->budget)
        return -ENOENT;
    ml_budget_client_get_stats(s->budget, st);
    return 0;
}

ml_io_mode ml_stream_io_mode(const ml_stream *s) {
    int m = atomic_load_explicit(&s->io_mode, memory_order_relaxed);
    if (m >= 0)
        return (ml_io_mode)m;
    /* No worker has opened its engine yet: report what it will ask for. */
    return s->cfg.io_mode == ML_IO_AUTO ? ml_io_default_mode() : s->cfg.io_mode;
}
