/* budget.c - token buckets of bytes and I/Os, shared by the streams given
 * one budget, with a priority queue of the requests that wait.
 *
 * A bucket is kept as GCRA keeps it: not a token count but the time at
 * which it will be full again (tat). Taking n units moves tat forward by
 * n / rate seconds, exactly (tat_ns plus a remainder rem / rate ns, so a
 * million small requests lose nothing to rounding); a bucket whose tat
 * lies in the past is full, and its tat restarts at now (refill after
 * idle never exceeds the capacity). With capacity C = ML_BUDGET_BURST_NS
 * of rate, a request costing c ns passes when tat - now <= max(C - c, 0):
 * the bucket holds min(n, capacity) tokens. One formula covers the burst,
 * the oversize request (it waits for a full bucket, then puts it in debt)
 * and idle refill; products are 128-bit and results saturate at
 * ML_BUDGET_FOREVER_NS, so no rate or size overflows.
 *
 * Invariants of a budget (all under mu): the queue is sorted by priority
 * (higher first) then seq (arrival); only its head takes tokens; a
 * waiter is in the queue iff its `queued` is 1; every acct's `waiting`
 * counts the queued waiters it is charged to. The condvar is broadcast
 * whenever the head changes by a departure (the new head must compute its
 * own deadline) and by ml_budget_wake (cancellation). A new waiter that
 * becomes the head by priority needs no wake: it polls on its own thread.
 * Sleeps are timed waits to the head's ready time, or untimed for the
 * others; no thread ever spins.
 *
 * Workload: one take per read batch (a block's or a chunk batch's I/O, a
 * batch of files): a lock and two multiplications on the fast path.
 */
#include "budget.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>

#include "clock.h"

#define NS_PER_S 1000000000ULL
#define WAIT_SLICE_NS (3600LL * 1000000000LL) /* a timed wait's longest sleep (then it recomputes) */

/* ---- the bucket ---------------------------------------------------- */

void ml_bucket_init(ml_bucket *b, uint64_t rate, int64_t now) {
    b->rate = rate;
    b->tat_ns = now;
    b->rem = 0;
}

/* n / rate seconds in ns, rounded up, saturated at ML_BUDGET_FOREVER_NS. */
static int64_t cost_ns(uint64_t rate, uint64_t n) {
    unsigned __int128 t = (unsigned __int128)n * NS_PER_S;
    unsigned __int128 q = (t + rate - 1) / rate;
    return q > (unsigned __int128)ML_BUDGET_FOREVER_NS ? ML_BUDGET_FOREVER_NS : (int64_t)q;
}

/* tat rounded up to a whole ns, and at least now. */
static int64_t tat_at(const ml_bucket *b, int64_t now) {
    int64_t t = b->tat_ns + (b->rem > 0);
    return t > now ? t : now;
}

int64_t ml_bucket_ready_at(const ml_bucket *b, uint64_t n, int64_t now) {
    if (b->rate == 0)
        return INT64_MIN;
    int64_t tol = ML_BUDGET_BURST_NS - cost_ns(b->rate, n);
    return tat_at(b, now) - (tol > 0 ? tol : 0);
}

void ml_bucket_take(ml_bucket *b, uint64_t n, int64_t now) {
    if (b->rate == 0)
        return;
    if (b->tat_ns < now) { /* full: refill stops at the capacity */
        b->tat_ns = now;
        b->rem = 0;
    }
    unsigned __int128 t = (unsigned __int128)n * NS_PER_S + b->rem;
    unsigned __int128 q = t / b->rate;
    if (q >= (unsigned __int128)ML_BUDGET_FOREVER_NS || b->tat_ns >= ML_BUDGET_FOREVER_NS - (int64_t)q) {
        b->tat_ns = ML_BUDGET_FOREVER_NS;
        b->rem = 0;
        return;
    }
    b->tat_ns += (int64_t)q;
    b->rem = (uint64_t)(t % b->rate);
}

int64_t ml_bucket_level(const ml_bucket *b, int64_t now) {
    if (b->rate == 0)
        return INT64_MAX;
    __int128 room = (__int128)ML_BUDGET_BURST_NS - (tat_at(b, now) - now); /* ns of rate left */
    __int128 lv = room * (__int128)b->rate / (__int128)NS_PER_S;
    return lv > INT64_MAX ? INT64_MAX : lv < -INT64_MAX ? -INT64_MAX : (int64_t)lv;
}

/* ---- the budget ---------------------------------------------------- */

struct ml_budget {
    pthread_mutex_t mu;        /* guards everything below but refs and the immutables */
    pthread_cond_t cv;         /* CLOCK_MONOTONIC; broadcast when the head leaves, and by ml_budget_wake */
    ml_bucket bytes, ios;      /* under mu */
    ml_budget_waiter *queue;   /* under mu: sorted, priority desc then seq asc */
    uint64_t next_seq;         /* under mu */
    ml_budget_acct acct;       /* the whole budget's counters; under mu */
    ml_budget_clock clock;     /* immutable; NULL: ml_clock_now_ns */
    void *clock_ctx;           /* immutable */
    _Atomic unsigned refs;
};

static int64_t now_of(const ml_budget *b) { return b->clock ? b->clock(b->clock_ctx) : ml_clock_now_ns(); }

int ml_budget_new(ml_budget **out, uint64_t bytes_per_s, uint64_t iops, ml_budget_clock clock, void *clock_ctx) {
    int rc = -ENOMEM;
    ml_budget *b = calloc(1, sizeof *b);
    if (!b)
        goto fail;
    b->clock = clock;
    b->clock_ctx = clock_ctx;
    int64_t now = now_of(b);
    ml_bucket_init(&b->bytes, bytes_per_s, now);
    ml_bucket_init(&b->ios, iops, now);
    b->acct.start_ns = now;
    atomic_init(&b->refs, 1);
    if ((rc = -pthread_mutex_init(&b->mu, NULL)) < 0)
        goto fail;
    if ((rc = ml_clock_cond_init(&b->cv)) < 0)
        goto fail_mu;
    *out = b;
    return 0;
fail_mu:
    pthread_mutex_destroy(&b->mu);
fail:
    free(b);
    return rc;
}

/* relaxed: the caller holds a reference already. */
void ml_budget_ref(ml_budget *b) { atomic_fetch_add_explicit(&b->refs, 1, memory_order_relaxed); }

void ml_budget_unref(ml_budget *b) {
    /* acq_rel: the last holder sees every other holder's writes before freeing. */
    if (!b || atomic_fetch_sub_explicit(&b->refs, 1, memory_order_acq_rel) != 1)
        return;
    pthread_cond_destroy(&b->cv);
    pthread_mutex_destroy(&b->mu);
    free(b);
}

uint64_t ml_budget_bytes_per_s(const ml_budget *b) { return b->bytes.rate; }
uint64_t ml_budget_iops(const ml_budget *b) { return b->ios.rate; }

static void acct_begin(ml_budget_acct *a, int64_t now) {
    if (a->waiting++ == 0)
        a->waiting_since = now;
}

static void acct_end(ml_budget_acct *a, int64_t now) {
    if (--a->waiting == 0)
        a->throttled_ns += now - a->waiting_since;
}

static void acct_take(ml_budget_acct *a, const ml_budget_waiter *w, int waited) {
    a->bytes += w->bytes;
    a->ios += w->ios;
    a->takes++;
    a->throttled += waited != 0;
}

static void acct_stats(const ml_budget_acct *a, int64_t now, ml_budget_stats *st) {
    st->bytes = a->bytes;
    st->ios = a->ios;
    st->takes = a->takes;
    st->throttled = a->throttled;
    st->throttled_ns = a->throttled_ns + (a->waiting ? now - a->waiting_since : 0);
    st->elapsed_ns = now - a->start_ns;
    st->waiting = a->waiting;
}

void ml_budget_get_stats(ml_budget *b, ml_budget_stats *st) {
    pthread_mutex_lock(&b->mu);
    acct_stats(&b->acct, now_of(b), st);
    pthread_mutex_unlock(&b->mu);
}

static int64_t ready_locked(const ml_budget *b, const ml_budget_waiter *w, int64_t now) {
    int64_t r1 = ml_bucket_ready_at(&b->bytes, w->bytes, now);
    int64_t r2 = ml_bucket_ready_at(&b->ios, w->ios, now);
    return r1 > r2 ? r1 : r2;
}

static void take_locked(ml_budget *b, ml_budget_waiter *w, int64_t now, int waited) {
    ml_bucket_take(&b->bytes, w->bytes, now);
    ml_bucket_take(&b->ios, w->ios, now);
    acct_take(&b->acct, w, waited);
    if (w->client)
        acct_take(&w->client->acct, w, waited);
}

static void enqueue_locked(ml_budget *b, ml_budget_waiter *w, int64_t now) {
    w->seq = b->next_seq++;
    ml_budget_waiter **p = &b->queue;
    while (*p && (*p)->priority >= w->priority)
        p = &(*p)->next;
    w->next = *p;
    *p = w;
    w->queued = 1;
    acct_begin(&b->acct, now);
    if (w->client)
        acct_begin(&w->client->acct, now);
}

static void dequeue_locked(ml_budget *b, ml_budget_waiter *w, int64_t now) {
    ml_budget_waiter **p = &b->queue;
    while (*p && *p != w)
        p = &(*p)->next;
    if (*p) {
        int was_head = p == &b->queue;
        *p = w->next;
        if (was_head && b->queue)
            pthread_cond_broadcast(&b->cv); /* the new head computes its own deadline */
    }
    w->next = NULL;
    w->queued = 0;
    acct_end(&b->acct, now);
    if (w->client)
        acct_end(&w->client->acct, now);
}

static int poll_locked(ml_budget *b, ml_budget_waiter *w, int64_t now, int64_t *ready_at) {
    if (!w->queued) {
        if (!b->queue && ready_locked(b, w, now) <= now) {
            take_locked(b, w, now, 0);
            return 0;
        }
        enqueue_locked(b, w, now);
    }
    if (b->queue != w) {
        *ready_at = INT64_MAX;
        return -EAGAIN;
    }
    int64_t r = ready_locked(b, w, now);
    if (r > now) {
        *ready_at = r;
        return -EAGAIN;
    }
    take_locked(b, w, now, 1);
    dequeue_locked(b, w, now);
    return 0;
}

int ml_budget_poll(ml_budget *b, ml_budget_waiter *w, int64_t *ready_at) {
    pthread_mutex_lock(&b->mu);
    int rc = poll_locked(b, w, now_of(b), ready_at);
    pthread_mutex_unlock(&b->mu);
    return rc;
}

void ml_budget_abandon(ml_budget *b, ml_budget_waiter *w) {
    pthread_mutex_lock(&b->mu);
    if (w->queued)
        dequeue_locked(b, w, now_of(b));
    pthread_mutex_unlock(&b->mu);
}

static int is_cancelled(const _Atomic int *cancel) {
    return cancel && atomic_load_explicit(cancel, memory_order_relaxed); /* ordered by b->mu */
}

/* The blocking take; w->client may be set for its stats. */
static int take_wait(ml_budget *b, ml_budget_waiter *w, const _Atomic int *cancel) {
    int rc;
    int64_t ready_at;
    pthread_mutex_lock(&b->mu);
    if (is_cancelled(cancel)) {
        rc = -ECANCELED;
        goto out;
    }
    while ((rc = poll_locked(b, w, now_of(b), &ready_at)) == -EAGAIN) {
        if (ready_at == INT64_MAX) {
            pthread_cond_wait(&b->cv, &b->mu);
        } else {
            int64_t ns = ready_at - now_of(b);
            struct timespec ts;
            ml_clock_deadline_ns(&ts, CLOCK_MONOTONIC, ns < WAIT_SLICE_NS ? ns : WAIT_SLICE_NS);
            pthread_cond_timedwait(&b->cv, &b->mu, &ts);
        }
        if (is_cancelled(cancel)) {
            dequeue_locked(b, w, now_of(b));
            rc = -ECANCELED;
            break;
        }
    }
out:
    pthread_mutex_unlock(&b->mu);
    return rc;
}

int ml_budget_take(ml_budget *b, uint64_t bytes, uint64_t ios, int priority, const _Atomic int *cancel) {
    ml_budget_waiter w = {.bytes = bytes, .ios = ios, .priority = priority};
    return take_wait(b, &w, cancel);
}

void ml_budget_wake(ml_budget *b) {
    pthread_mutex_lock(&b->mu);
    pthread_cond_broadcast(&b->cv);
    pthread_mutex_unlock(&b->mu);
}

/* ---- clients ------------------------------------------------------- */

int ml_budget_client_new(ml_budget_client **out, ml_budget *b, int priority) {
    ml_budget_client *c = calloc(1, sizeof *c);
    if (!c)
        return -ENOMEM;
    ml_budget_ref(b);
    c->b = b;
    c->priority = priority;
    atomic_init(&c->cancelled, 0);
    c->acct.start_ns = now_of(b);
    *out = c;
    return 0;
}

void ml_budget_client_free(ml_budget_client *c) {
    if (!c)
        return;
    ml_budget_unref(c->b);
    free(c);
}

int ml_budget_client_take(ml_budget_client *c, uint64_t bytes, uint64_t ios) {
    if (!c)
        return 0;
    ml_budget_waiter w = {.bytes = bytes, .ios = ios, .priority = c->priority, .client = c};
    return take_wait(c->b, &w, &c->cancelled);
}

int ml_budget_client_try(ml_budget_client *c, uint64_t bytes, uint64_t ios) {
    if (!c)
        return 0;
    ml_budget *b = c->b;
    ml_budget_waiter w = {.bytes = bytes, .ios = ios, .priority = c->priority, .client = c};
    int rc = -EAGAIN;
    pthread_mutex_lock(&b->mu);
    int64_t now = now_of(b);
    if (is_cancelled(&c->cancelled))
        rc = -ECANCELED;
    else if (!b->queue && ready_locked(b, &w, now) <= now) {
        take_locked(b, &w, now, 0);
        rc = 0;
    }
    pthread_mutex_unlock(&b->mu);
    return rc;
}

void ml_budget_client_cancel(ml_budget_client *c) {
    if (!c)
        return;
    atomic_store_explicit(&c->cancelled, 1, memory_order_relaxed); /* ordered by the wake's lock */
    ml_budget_wake(c->b);
}

void ml_budget_client_get_stats(ml_budget_client *c, ml_budget_stats *st) {
    pthread_mutex_lock(&c->b->mu);
    acct_stats(&c->acct, now_of(c->b), st);
    pthread_mutex_unlock(&c->b->mu);
}
