/* reader.c - the random-access request engine behind multiload.Reader:
 * the reader object itself (open, shutdown, join, free, notify tags,
 * stats). The rest lives beside it, one concern a file (the map is in
 * reader_internal.h): a request's life and the lists in
 * reader_request.c, who runs what in reader_dispatch.c, how a request is
 * read in reader_plan.c and reader_exec.c, decoded bands in band_cache.c.
 *
 * Workload: many small requests ("these 256 rows, in this order") arriving
 * from Python threads, served by n_workers native threads that share one
 * FIFO queue, and by the consumer itself (ml_reader_help). Every byte is
 * read through fetch.h.
 *
 * The reader is reference counted (workers.h): its owner holds one
 * reference and every worker thread one, so ml_reader_free can detach a
 * worker stuck in a read (a hung network mount) ML_CLOSE_WAIT_MS after
 * the first stop, as the Streamer does, and the worker frees the reader
 * when its read returns.
 *
 * Stop. ml_reader_shutdown(drain=0) fails the queue and every request on
 * the running list (taken by a worker or waiter, not finished) at once.
 * Their threads then skip what they have not started (parts, bands, the
 * requests of a pread batch), finish the read in flight and release dest.
 * Drain (drain=1) lets the workers finish every queued request, then
 * leave. Locks: see reader_internal.h.
 *
 * Budgets (budget.h): a budgeted reader makes its own client of the
 * budget; every byte is then read by a worker's fetcher, which takes
 * tokens first (no inline reads, helpers or view copies, which would pass
 * it by), and a stop cancels the client so sleeping workers wake at once.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "fault.h"
#include "reader_internal.h"
#include "workers.h"

void ml_reader_push_tag_locked(ml_reader *r, uint64_t tag) {
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

void ml_reader_event_locked(ml_reader *r) { ml_event_fire_always(&r->event); }

void ml_reader_async_done_locked(ml_reader *r, ml_request *q) {
    if (!q->async_watch)
        return;
    q->async_watch = 0;
    int was_empty = ml_list_empty(&r->async_done);
    atomic_fetch_add_explicit(&q->refs, 1, memory_order_relaxed); /* the list's */
    ml_list_push_back(&r->async_done, &q->async_node);
    /* One write per empty -> non-empty: the loop drains the fd before it
     * pops, so a request pushed after its pop finds the list empty and
     * writes again (see ml_reader_pop_armed). */
    if (was_empty)
        ml_reader_event_locked(r);
}

int ml_reader_event_fd(ml_reader *r) {
    pthread_mutex_lock(&r->mu); /* made under mu: no completion between the making and the catch-up */
    int made_now = atomic_load(&r->event.fd) < 0;
    int fd = ml_event_fd(&r->event);
    if (fd >= 0 && made_now && (r->closed || !ml_list_empty(&r->async_done)))
        ml_reader_event_locked(r); /* what happened before there was an fd */
    pthread_mutex_unlock(&r->mu);
    return fd;
}

void ml_reader_arm(ml_reader *r, ml_request *q) {
    pthread_mutex_lock(&r->mu);
    if (!ml_list_linked(&q->async_node)) {
        pthread_mutex_lock(&q->mu);
        int done = q->state == Q_DONE;
        pthread_mutex_unlock(&q->mu);
        q->async_watch = 1;
        if (done) /* (completion sets Q_DONE under r->mu: no completion is missed) */
            ml_reader_async_done_locked(r, q);
    }
    pthread_mutex_unlock(&r->mu);
}

size_t ml_reader_pop_armed(ml_reader *r, uint64_t *tags, size_t max) {
    ml_request *got[64];
    size_t n = 0;
    if (max > 64)
        max = 64;
    pthread_mutex_lock(&r->mu);
    ml_list_node *node;
    while (n < max && (node = ml_list_pop_front(&r->async_done))) {
        got[n] = ml_list_entry(node, ml_request, async_node);
        tags[n] = got[n]->tag;
        n++;
    }
    pthread_mutex_unlock(&r->mu);
    for (size_t i = 0; i < n; i++)
        ml_request_unref(got[i]); /* the list's reference */
    return n;
}

int ml_reader_open(ml_reader **out, const ml_reader_config *cfg, ml_error *err) {
    unsigned nw = cfg->n_workers ? cfg->n_workers : 1;
    ml_reader *r = ml_fault_alloc() < 0 ? NULL : calloc(1, sizeof *r);
    ml_worker *ws = r ? calloc(nw, sizeof *ws) : NULL;
    if (!ws) {
        free(r);
        return ml_error_set(err, -ENOMEM, "out of memory starting a reader");
    }
    atomic_init(&r->refs, 1);
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->work_cv, NULL);
    ml_clock_cond_init(&r->notify_cv);
    ml_list_init(&r->queue);
    ml_list_init(&r->running);
    ml_list_init(&r->par);
    ml_list_init(&r->async_done);
    ml_event_init(&r->event);
    ml_band_cache_init(&r->cache, cfg->cache_bytes, cfg->cache_budget, nw);
    r->workers = ws;
    r->io_mode = cfg->io_mode;
    r->batch_io = (cfg->io_mode == ML_IO_AUTO ? ml_io_default_mode() : cfg->io_mode) == ML_IO_URING;
    r->inline_reads = cfg->inline_reads != 0 && !cfg->budget; /* budgeted: every read by a worker */
    if (cfg->budget && ml_budget_client_new(&r->budget, cfg->budget, cfg->budget_priority) < 0) {
        ml_band_cache_destroy(&r->cache);
        pthread_mutex_destroy(&r->mu);
        pthread_cond_destroy(&r->work_cv);
        pthread_cond_destroy(&r->notify_cv);
        free(ws);
        free(r);
        return ml_error_set(err, -ENOMEM, "out of memory starting a reader");
    }
    ml_nowait_init(&r->nowait, cfg->io_mode);
    for (unsigned i = 0; i < nw; i++) {
        ws[i].r = r;
        int rc = ml_worker_start(&ws[i].thread, ml_reader_worker_main, &ws[i], &r->refs);
        if (rc < 0) {
            r->n_workers = i;
            ml_reader_free(r);
            return ml_error_set(err, rc, "cannot start reader threads: %s", strerror(-rc));
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
    ml_list failed; /* the queue's requests, failed here, their references dropped after unlocking */
    ml_list_init(&failed);
    pthread_mutex_lock(&r->mu);
    r->closed = 1;
    if (!drain) {
        if (!atomic_load_explicit(&r->stopping, memory_order_relaxed)) {
            atomic_store_explicit(&r->stopping, 1, memory_order_relaxed);
            r->stop_ns = ml_clock_now_ns();
            ml_budget_client_cancel(r->budget); /* a worker asleep on the budget wakes now (lock order: r->mu, then the budget's) */
        }
        ml_list_splice(&failed, &r->queue);
        for (ml_list_node *n = ml_list_first(&failed); n; n = ml_list_next(&failed, n)) {
            ml_request *it = ml_list_entry(n, ml_request, qnode);
            it->in_queue = 0;
            ml_request_complete_locked(r, it, &before, 1);
        }
        /* Running requests fail now, not when their read returns (which,
         * on a hung mount, is never); their threads release dest later. */
        for (ml_list_node *n = ml_list_first(&r->running); n; n = ml_list_next(&r->running, n))
            ml_request_complete_locked(r, ml_list_entry(n, ml_request, run_node), &during, 0);
    } else {
        r->draining = 1;
    }
    pthread_cond_broadcast(&r->work_cv);
    pthread_cond_broadcast(&r->notify_cv);
    ml_reader_event_locked(r); /* asyncio waiters look again: the reader is closed */
    pthread_mutex_unlock(&r->mu);
    ml_list_node *n;
    while ((n = ml_list_pop_front(&failed)))
        ml_request_unref(ml_list_entry(n, ml_request, qnode)); /* the queue's reference */
}

int ml_reader_join(ml_reader *r, long timeout_ms) {
    struct timespec ts;
    if (timeout_ms >= 0)
        ml_clock_deadline_ms(&ts, CLOCK_MONOTONIC, timeout_ms);
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
        ml_worker_release(&r->helpers[i]);
    /* Exhausted requests a worker left on the parallel list. */
    ml_list_node *n;
    while ((n = ml_list_first(&r->par)))
        ml_par_remove_locked(r, ml_list_entry(n, ml_request, par_node)); /* no other thread is left */
    while ((n = ml_list_pop_front(&r->async_done)))
        ml_request_unref(ml_list_entry(n, ml_request, async_node)); /* the list's */
    ml_event_close(&r->event);
    ml_band_cache_destroy(&r->cache);
    ml_budget_client_free(r->budget); /* every fetcher that borrowed it is closed */
    free(r->tags);
    free(r->workers);
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->work_cv);
    pthread_cond_destroy(&r->notify_cv);
    free(r);
}

void ml_reader_unref(ml_reader *r) {
    if (ml_refs_put(&r->refs))
        reader_destroy(r);
}

void ml_reader_free(ml_reader *r) {
    if (!r)
        return;
    ml_reader_shutdown(r, 0);
    /* Workers get ML_CLOSE_WAIT_MS from the first stop to finish the read
     * in flight (a stop that waited already leaves none); then a worker
     * still reading is detached: it holds a reference and frees r when
     * done. */
    pthread_mutex_lock(&r->mu);
    int64_t stop_ns = r->stop_ns;
    pthread_mutex_unlock(&r->mu);
    struct timespec deadline;
    ml_workers_close_deadline(&deadline, stop_ns);
    for (unsigned i = 0; i < r->n_workers; i++)
        if (r->workers[i].started)
            ml_worker_join_until(r->workers[i].thread, &deadline);
    ml_reader_unref(r); /* the owner's */
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
        ml_clock_deadline_ms(&ts, CLOCK_MONOTONIC, timeout_ms);
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

int ml_reader_budget_stats(ml_reader *r, ml_budget_stats *st) {
    if (!r->budget)
        return -ENOENT;
    ml_budget_client_get_stats(r->budget, st);
    return 0;
}

void ml_reader_get_stats(ml_reader *r, ml_reader_stats *st) {
    st->requests = atomic_load_explicit(&r->n_requests, memory_order_relaxed);
    st->rows = atomic_load_explicit(&r->n_rows, memory_order_relaxed);
    ml_band_cache_stats cs;
    ml_band_cache_get_stats(&r->cache, &cs);
    st->cache_hits = cs.hits;
    st->cache_misses = cs.misses;
    st->cache_evictions = cs.evictions;
    st->cache_bytes = cs.bytes;
    st->cache_limit = cs.limit;
    st->cache_wanted = cs.wanted;
    st->parallel = atomic_load_explicit(&r->n_parallel, memory_order_relaxed);
    st->helped = atomic_load_explicit(&r->n_helped, memory_order_relaxed);
    st->batched = atomic_load_explicit(&r->n_batched, memory_order_relaxed);
    st->inlined = atomic_load_explicit(&r->n_inlined, memory_order_relaxed);
    st->mapped = atomic_load_explicit(&r->n_mapped, memory_order_relaxed);
}
