/* reader_request.c - a request's life: submit, completion, waits, and the
 * three lists a request moves through (queue, running, parallel).
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
 * queued or running, the parallel list one while it is on it, and every
 * thread running its parts one.
 *
 * The lists (list.h, all under r->mu): the queue is a FIFO of QUEUED
 * requests (a request a waiter hands back goes to its head); the running
 * list holds every request taken and not finished, so a stop can fail
 * them at once; the parallel list holds requests with parts to claim
 * (reader_dispatch.c). Workload: one submit and one completion per
 * request, from many Python threads; every list operation is O(1) but
 * take_small_locked's look at up to SMALL_SCAN queued requests.
 *
 * Inline reads (config.inline_reads): a small request whose bytes are all
 * in the page cache is read by ml_request_submit itself, with
 * ml_fetch_rows_nowait (RWF_NOWAIT), and returned done: a one-row request
 * then costs one system call instead of a hand-off to a worker and back.
 * RWF_NOWAIT fails instead of waiting for the disk, so submit never blocks
 * on I/O; any failure or short read just queues the request as usual
 * (which re-reads it and reports errors the normal way), so the inline
 * path never produces an error of its own. It stands aside while fault
 * injection is on. ml_reader_read_now is the same read without a request
 * at all, for a caller that can make its own result (the binding's one-row
 * fast path). Both copy from the file's view when it is local
 * (ml_fetch_rows_mapped: a memcpy, no system call; a page not in memory
 * then waits for the local disk, see reader_dispatch.c), else read with
 * RWF_NOWAIT.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "fault.h"
#include "reader_internal.h"

/* Rows [row0, row0 + n) of L into dest now, from the file's local view
 * (a memcpy, no system call) or the page cache: 0, or -EAGAIN (read them
 * the usual way). */
static int read_small_now(ml_reader *r, ml_layout *L, uint64_t row0, uint64_t n, void *dest) {
    if (ml_fetch_rows_mapped(L, row0, n, dest) == 0) {
        atomic_fetch_add_explicit(&r->n_mapped, n, memory_order_relaxed);
        return 0;
    }
    return ml_fetch_rows_nowait(&r->nowait, L, row0, n, dest);
}

int ml_reader_read_now(ml_reader *r, ml_layout *L, uint64_t row0, uint64_t n, void *dest, size_t dest_bytes) {
    if (!r->inline_reads || n == 0 || row0 >= L->n_rows || n > L->n_rows - row0 || !L->row_bytes ||
        n > SMALL_BYTES / L->row_bytes || n * L->row_bytes > dest_bytes || !ml_fetch_range_is_one_read(L))
        return -EAGAIN;
    pthread_mutex_lock(&r->mu);
    int closed = r->closed;
    pthread_mutex_unlock(&r->mu);
    if (closed || read_small_now(r, L, row0, n, dest) < 0)
        return -EAGAIN;
    atomic_fetch_add_explicit(&r->n_requests, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&r->n_rows, n, memory_order_relaxed);
    atomic_fetch_add_explicit(&r->n_inlined, 1, memory_order_relaxed);
    return 0;
}

int ml_request_oom(ml_error *err, const ml_request *q) {
    return ml_error_set(err, -ENOMEM, "out of memory reading %llu rows of dataset '%s'",
                        (unsigned long long)q->n_rows, q->L->path);
}

void ml_request_unref(ml_request *q) {
    if (!q || atomic_fetch_sub_explicit(&q->refs, 1, memory_order_acq_rel) != 1)
        return;
    ml_layout_unref(q->L);
    free(q->rows);
    free(q->pairs);
    pthread_mutex_destroy(&q->mu);
    pthread_cond_destroy(&q->cv);
    free(q);
}

/* ---- the lists ----------------------------------------------------------- */

static ml_request *queue_entry(ml_list_node *n) { return n ? ml_list_entry(n, ml_request, qnode) : NULL; }

ml_request *ml_queue_first_locked(ml_reader *r) { return queue_entry(ml_list_first(&r->queue)); }

/* Unlink q from the queue. Call with r->mu held. */
static void queue_unlink_locked(ml_reader *r, ml_request *q) {
    ml_list_remove(&q->qnode);
    q->in_queue = 0;
    q->may_split = ml_list_empty(&r->queue);
}

static void run_unlink_locked(ml_request *q) {
    if (ml_list_linked(&q->run_node))
        ml_list_remove(&q->run_node);
}

void ml_request_take_locked(ml_reader *r, ml_request *q) {
    queue_unlink_locked(r, q);
    ml_list_push_front(&r->running, &q->run_node);
    pthread_mutex_lock(&q->mu);
    q->state = Q_RUNNING;
    pthread_mutex_unlock(&q->mu);
}

void ml_request_requeue_locked(ml_reader *r, ml_request *q) {
    run_unlink_locked(q);
    pthread_mutex_lock(&q->mu);
    q->state = Q_QUEUED;
    pthread_mutex_unlock(&q->mu);
    q->in_queue = 1;
    ml_list_push_front(&r->queue, &q->qnode);
}

void ml_par_push_locked(ml_reader *r, ml_request *q) {
    if (ml_list_linked(&q->par_node))
        return;
    atomic_fetch_add_explicit(&q->refs, 1, memory_order_relaxed); /* the list's */
    ml_list_push_front(&r->par, &q->par_node);
}

void ml_par_remove_locked(ml_reader *r, ml_request *q) {
    (void)r;
    if (!ml_list_linked(&q->par_node))
        return;
    ml_list_remove(&q->par_node);
    ml_request_unref(q); /* the list's reference; never the last: the caller holds one */
}

int ml_request_parts_claimable(ml_request *q) {
    return atomic_load_explicit(&q->next_part, memory_order_relaxed) < q->n_parts ||
           atomic_load_explicit(&q->retry, memory_order_relaxed);
}

ml_request *ml_par_take_locked(ml_reader *r) {
    ml_list_node *n;
    while ((n = ml_list_first(&r->par))) {
        ml_request *q = ml_list_entry(n, ml_request, par_node);
        if (ml_request_parts_claimable(q)) {
            atomic_fetch_add_explicit(&q->refs, 1, memory_order_relaxed);
            return q;
        }
        ml_par_remove_locked(r, q);
    }
    return NULL;
}

/* ---- completion ---------------------------------------------------------- */

int ml_request_complete_locked(ml_reader *r, ml_request *q, const ml_error *e, int release) {
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
            ml_reader_push_tag_locked(r, q->tag);
        ml_reader_async_done_locked(r, q);
    }
    return first;
}

void ml_request_finish(ml_reader *r, ml_request *q, const ml_error *e) {
    pthread_mutex_lock(&r->mu);
    run_unlink_locked(q);
    ml_request_complete_locked(r, q, e, 1);
    pthread_mutex_unlock(&r->mu);
}

/* ---- the public request API ---------------------------------------------- */

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
    ml_clock_cond_init(&q->cv);
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
    int try_first = r->inline_reads && ml_request_small(q);
    pthread_mutex_lock(&r->mu);
    /* Inline: check `closed` first (a closed reader refuses requests), read
     * without the lock, and look again if the request must be queued. */
    while (!r->closed && try_first) {
        pthread_mutex_unlock(&r->mu);
        try_first = 0;
        if (read_small_now(r, L, q->row0, q->n_rows, q->dest) == 0) {
            atomic_fetch_add_explicit(&r->n_inlined, 1, memory_order_relaxed);
            ml_request_finish(r, q, NULL);
            ml_request_unref(q); /* the executor's reference: there is no executor */
            *out = q;
            return 0;
        }
        pthread_mutex_lock(&r->mu);
    }
    if (r->closed) {
        pthread_mutex_unlock(&r->mu);
        atomic_store(&q->refs, 1);
        ml_request_unref(q);
        return ml_error_set(err, -ML_ECLOSED, "the reader is closed");
    }
    q->in_queue = 1;
    ml_list_push_back(&r->queue, &q->qnode);
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
        ml_clock_deadline_ms(&ts, CLOCK_MONOTONIC, timeout_ms);
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

void ml_request_free(ml_request *q) { ml_request_unref(q); }

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
    ml_request_complete_locked(r, q, &e, 1);
    pthread_mutex_unlock(&r->mu);
    ml_request_unref(q); /* the queue's reference */
    return 1;
}

void ml_reader_watch(ml_reader *r, ml_request *q) {
    pthread_mutex_lock(&r->mu);
    pthread_mutex_lock(&q->mu);
    int had = q->notify, done = q->state == Q_DONE;
    q->notify = 1;
    pthread_mutex_unlock(&q->mu);
    if (done && !had)
        ml_reader_push_tag_locked(r, q->tag);
    pthread_mutex_unlock(&r->mu);
}
