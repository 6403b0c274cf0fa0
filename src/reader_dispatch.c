/* reader_dispatch.c - who runs what: the workers' loop, the helping
 * waiter, parts claimed and handed back, small requests batched.
 *
 * Workload: many small requests ("these 256 rows, in this order") arriving
 * from Python threads, served by n_workers native threads that share one
 * FIFO queue, and by the consumer itself: a thread that waits for a request
 * no worker has started yet takes it out of the queue and runs it
 * (ml_reader_help), which saves two thread hand-offs for synchronous use.
 *
 * Parts. The thread that takes a request (its executor) plans it and cuts
 * it into parts (reader_plan.c): disjoint slices of its work, each written
 * to its own bytes of dest. A request with more than one part is put on
 * the reader's parallel list; idle workers, and the waiter in
 * ml_reader_help, claim its parts (an atomic counter) beside the executor,
 * so the chunks of one request decode on every core. The thread that
 * finishes the last part completes the request. Parts of chunked data
 * never split a band, so every band is read and decoded once per request;
 * the chunk reads of one part go to the I/O engine as one batch
 * (ml_fetch_rows_multi).
 *
 * Small requests (a range of rows in one read, up to SMALL_BYTES) that are
 * queued together are taken by one worker, up to SMALL_BATCH at a time,
 * and read in one I/O batch (ml_fetch_rows_multi: one io_uring
 * submission, so the reads are in flight together). With pread a batch
 * would be read one after another and gain nothing, so there is none:
 * idle workers take the other requests, and each stays cancellable until
 * a worker starts it.
 *
 * The helping waiter never waits for a device. Its thread is the caller's
 * (a Python thread in get() or result()), which must stay able to give up
 * (a timeout) or leave (Ctrl-C). So a helper (worker.nowait) reads rows
 * only with fetch.h's cached-only reads (contiguous data from the page
 * cache, with RWF_NOWAIT) and chunked data only from decoded bands in the
 * cache; anything else, or any failure, goes back to the workers
 * untouched in meaning: an unstarted request back to the head of the
 * queue (no_help: only workers take it again, so a waiter never loops on
 * it), a part of a split request into q->retry, whose bits only workers
 * claim. With fault injection on, the helper stands aside (as inline
 * reads do), so injected faults hit the workers' engine. A cold read
 * costs milliseconds, beside which the hand-off the waiter saves (~5-10
 * us) is noise. One exception to "never waits": row lists of a file on a
 * local filesystem are copied from its view (reader_exec.c), where a page
 * not in memory is a fault that waits for the local disk -- milliseconds,
 * like a signal handler's own latency -- instead of an RWF_NOWAIT read per
 * row (mincore, to ask first, costs more than the read here: ~2.5 us a
 * call). A view of a network or FUSE file, whose faults may never end, is
 * never touched by a waiter.
 *
 * Stop. ml_reader_shutdown(drain=0) fails the queue and every request on
 * the running list at once (reader.c); the threads here then skip what
 * they have not started (parts, bands, the requests of a pread batch),
 * finish the read in flight and release dest.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#include "reader_internal.h"

#define SMALL_SCAN 64         /* queue entries a worker looks at for more small requests */
#define HELP_MAX_BYTES (32u << 20) /* work a waiter takes on per call (bytes copied from the
                                 page cache or the band cache): it cannot run signal
                                 handlers meanwhile (~10 ms) */

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
    ml_request_finish(r, q, failed ? &fe : NULL);
    ml_request_unref(q);
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
    if (ml_request_stopped(q)) {
        part_done(r, q, 0, NULL);
        return;
    }
    pthread_mutex_lock(&r->mu);
    atomic_fetch_or_explicit(&q->retry, 1u << i, memory_order_release);
    ml_par_push_locked(r, q);
    int wake = r->n_idle > 0;
    pthread_mutex_unlock(&r->mu);
    if (wake)
        pthread_cond_signal(&r->work_cv);
}

/* Claim and run parts of q until none is left, or `max` of them, or a
 * helper meets one it cannot run without waiting (handed back). Returns
 * the number of parts run. The caller holds a reference. */
static size_t run_parts_max(ml_worker *w, ml_request *q, size_t max) {
    size_t done = 0;
    while (done < max) {
        long i = claim_part(q, w->nowait);
        if (i < 0)
            break;
        ml_error e;
        ml_error_clear(&e);
        int rc = 0;
        if (!atomic_load_explicit(&q->failed, memory_order_relaxed) && !ml_request_stopped(q))
            rc = ml_part_exec(w, q, &q->parts[i], &e);
        if (rc < 0 && w->nowait) {
            part_giveback(w->r, q, (size_t)i);
            break;
        }
        part_done(w->r, q, rc, &e);
        done++;
    }
    return done;
}

static size_t run_parts(ml_worker *w, ml_request *q) { return run_parts_max(w, q, SIZE_MAX); }

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
        ml_request_finish(r, q, &e); /* the stop completed it already: this only releases it */
        ml_request_unref(q);
        return;
    }
    q->no_help = 1;
    ml_request_requeue_locked(r, q);
    int wake = r->n_idle > 0;
    pthread_mutex_unlock(&r->mu);
    if (wake)
        pthread_cond_signal(&r->work_cv);
}

/* Run q, which the caller took from the queue (state RUNNING), owning the
 * queue's reference. Returns 1 if this thread did some of q's work, 0 if
 * a helper handed it back to the workers. */
static int run_request(ml_worker *w, ml_request *q) {
    ml_reader *r = w->r;
    ml_error e;
    ml_error_clear(&e);
    if (ml_request_stopped(q) || q->n_rows == 0 || q->out_size == 0) {
        ml_request_finish(r, q, NULL); /* stopped: it is done already; this releases it */
        ml_request_unref(q);
        return 1;
    }
    int rc = ml_request_plan(q, r->n_workers + 1, &e); /* the workers and a waiter */
    if (rc < 0) {
        if (w->nowait) {
            request_giveback(r, q);
            return 0;
        }
        if (e.code == 0)
            ml_error_set(&e, rc, "reading dataset '%s': %s", q->L->path, ml_strerror(rc));
        ml_request_finish(r, q, &e);
        ml_request_unref(q);
        return 1;
    }
    atomic_store_explicit(&q->next_part, 0, memory_order_relaxed);
    atomic_store_explicit(&q->parts_left, q->n_parts, memory_order_relaxed);
    atomic_store_explicit(&q->retry, 0, memory_order_relaxed);
    if (q->n_parts == 1) {
        /* Not run_parts: once part_done completes q, q may be freed (the
         * queue's reference was the only one left to us). */
        atomic_store_explicit(&q->next_part, 1, memory_order_relaxed);
        rc = ml_part_exec(w, q, &q->parts[0], &e);
        if (rc < 0 && w->nowait) {
            request_giveback(r, q);
            return 0;
        }
        part_done(r, q, rc, &e);
        return 1;
    }
    /* Publish the parts: the list's reference, and ours for run_parts (the
     * queue's passes to whoever finishes the last part). */
    atomic_fetch_add_explicit(&q->refs, 1, memory_order_relaxed);
    pthread_mutex_lock(&r->mu);
    ml_par_push_locked(r, q);
    unsigned wake = r->n_idle < q->n_parts - 1 ? r->n_idle : (unsigned)(q->n_parts - 1);
    pthread_mutex_unlock(&r->mu);
    for (unsigned i = 0; i < wake; i++)
        pthread_cond_signal(&r->work_cv);
    atomic_fetch_add_explicit(&r->n_parallel, 1, memory_order_relaxed);
    size_t did = run_parts(w, q);
    pthread_mutex_lock(&r->mu);
    if (!ml_request_parts_claimable(q)) /* else a worker takes the parts a helper handed back */
        ml_par_remove_locked(r, q);
    pthread_mutex_unlock(&r->mu);
    ml_request_unref(q);
    return did > 0;
}

/* Take more small requests on q's dataset from the queue into batch
 * (which holds q), marking them RUNNING; a helper skips those handed back
 * by a helper. Call with r->mu held. */
static size_t take_small_locked(ml_reader *r, ml_request **batch, int helper) {
    size_t nb = 1;
    unsigned seen = 0;
    for (ml_list_node *n = ml_list_first(&r->queue); n && nb < SMALL_BATCH && seen < SMALL_SCAN; seen++) {
        ml_list_node *next = ml_list_next(&r->queue, n);
        ml_request *it = ml_list_entry(n, ml_request, qnode);
        if (it->L == batch[0]->L && ml_request_small(it) && !(helper && it->no_help)) {
            ml_request_take_locked(r, it);
            batch[nb++] = it;
        }
        n = next;
    }
    return nb;
}

/* Run nb small requests (taken from the queue, RUNNING). A worker reads
 * them in one I/O batch; if that fails, each runs alone so that each gets
 * its own outcome. A helper reads each from the page cache and hands back
 * those it cannot. Returns the number completed here. */
static size_t run_small_batch(ml_worker *w, ml_request **batch, size_t nb) {
    ml_reader *r = w->r;
    if (w->nowait) {
        size_t back[SMALL_BATCH], nback = 0;
        for (size_t i = 0; i < nb; i++) {
            ml_request *q = batch[i];
            if (!ml_request_stopped(q) && ml_fetch_rows_nowait(&r->nowait, q->L, q->row0, q->n_rows, q->dest) < 0) {
                back[nback++] = i;
                continue;
            }
            ml_request_finish(r, q, NULL);
            ml_request_unref(q);
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
    ml_fetcher *f = ml_worker_fetcher(w, batch[0]->L, &e);
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
        ml_request_finish(r, batch[i], NULL);
        ml_request_unref(batch[i]);
    }
    return nb;
}

void *ml_reader_worker_main(void *arg) {
    ml_worker *w = arg;
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
        while (!(pq = ml_par_take_locked(r)) && ml_list_empty(&r->queue) && !(r->closed && !r->helpers_busy)) {
            r->n_idle++;
            pthread_cond_wait(&r->work_cv, &r->mu);
            r->n_idle--;
        }
        if (pq) {
            pthread_mutex_unlock(&r->mu);
            run_parts(w, pq);
            ml_request_unref(pq);
            continue;
        }
        ml_request *q = ml_queue_first_locked(r);
        if (!q) { /* closed and nothing left */
            r->n_exited++;
            pthread_cond_broadcast(&r->notify_cv);
            pthread_mutex_unlock(&r->mu);
            break;
        }
        ml_request_take_locked(r, q);
        ml_request *batch[SMALL_BATCH] = {q};
        size_t nb = r->batch_io && ml_request_small(q) && !ml_list_empty(&r->queue) ? take_small_locked(r, batch, 0) : 1;
        pthread_mutex_unlock(&r->mu);
        if (nb > 1)
            run_small_batch(w, batch, nb);
        else
            run_request(w, q);
    }
    ml_worker_release(w);
    ml_reader_unref(r); /* may free r (and w with it) */
    return NULL;
}

int ml_reader_help(ml_reader *r, ml_request *q) {
    /* Fault injection models a device: the helper would only stand aside.
     * A budgeted reader's bytes are all read by workers, which take tokens. */
    if (r->budget || !ml_nowait_usable(&r->nowait))
        return 0;
    pthread_mutex_lock(&r->mu);
    unsigned i = 0;
    while (i < N_HELPERS && (r->helpers_busy & (1u << i)))
        i++;
    /* Bounded work: a request too big to copy here is left to the workers
     * (this thread waits, and runs signal handlers, meanwhile). */
    int queued = q->in_queue && !q->no_help && ml_request_work(q) <= HELP_MAX_BYTES;
    int parts_left = ml_list_linked(&q->par_node) &&
                     atomic_load_explicit(&q->next_part, memory_order_relaxed) < q->n_parts;
    if (i == N_HELPERS || (!queued && !parts_left)) {
        pthread_mutex_unlock(&r->mu);
        return 0;
    }
    r->helpers_busy |= 1u << i;
    ml_worker *h = &r->helpers[i];
    h->r = r;
    h->nowait = 1;
    ml_request *batch[SMALL_BATCH] = {q};
    size_t nb = 1;
    if (queued) {
        ml_request_take_locked(r, q);
        if (ml_request_small(q) && !ml_list_empty(&r->queue)) /* and the small ones queued after it */
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
        uint64_t per_part = ml_request_work(q) / (q->n_parts ? q->n_parts : 1) + 1;
        did = run_parts_max(h, q, HELP_MAX_BYTES / per_part ? HELP_MAX_BYTES / per_part : 1) > 0;
        ml_request_unref(q);
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
