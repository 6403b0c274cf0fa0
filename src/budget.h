/* budget.h - I/O budgets: token buckets of bytes and I/Os per second,
 * shared by every stream given the same budget, with strict priority
 * among the threads waiting on one budget.
 *
 * Three layers:
 *
 *   ml_bucket         one limit (units per second): pure arithmetic on a
 *                     time the caller passes in. No lock, no clock.
 *   ml_budget         two buckets (bytes, I/Os), a queue of waiters ordered
 *                     by priority, a mutex and a condition variable, and a
 *                     clock given at creation (ml_clock_now_ns, or a fake
 *                     one for tests). Shared and reference counted.
 *   ml_budget_client  one stream's use of a budget: its priority, its
 *                     cancel flag (close wakes its sleeping reads at once)
 *                     and its own stats. Owned by the stream; its threads
 *                     borrow it.
 *
 * The bucket's rules (each limit alone; a request takes from both):
 *   - capacity (the burst) is one second of rate: ML_BUDGET_BURST_NS of
 *     tokens. A bucket idle for a second or more is full again.
 *   - a request of n units passes when the bucket holds min(n, capacity)
 *     tokens; it then takes n, which may leave the bucket in debt. So a
 *     request larger than the burst still passes (once the bucket is full)
 *     and the debt holds the next requests back until it is repaid: over
 *     any long interval the units taken never exceed rate * time + burst.
 *   - a rate of 0 means unlimited (Python's None): that bucket never waits.
 *   - arithmetic is exact (a remainder is kept below one nanosecond) and
 *     saturates: huge rates cost 0 ns, huge requests at tiny rates wait at
 *     most ML_BUDGET_FOREVER_NS (about 73 years) and never overflow.
 *
 * Priority: the waiters of one budget form one queue, higher priority
 * first, equal priorities first come first served. Only the head of the
 * queue may take tokens; everyone behind it waits even if its own request
 * would fit (so a large request is never starved by small ones, and a
 * low-priority "background" stream gets tokens only while no
 * higher-priority stream of the same budget is waiting). A request that
 * finds the queue empty and the tokens there passes without queueing.
 *
 * Wiring a new engine through a budget (the Writer's chunk writes, say):
 *
 *     ml_budget_client *c;          // one per stream, at open
 *     rc = ml_budget_client_new(&c, budget, priority);
 *     ...                           // each worker, before each I/O:
 *     rc = ml_budget_client_take(c, stored_bytes, 1);
 *     if (rc < 0) ... -ECANCELED: the stream is closing, skip the I/O
 *     ...                           // close, before joining the workers:
 *     ml_budget_client_cancel(c);   // wakes this stream's sleepers at once
 *     ...                           // after the workers are gone:
 *     ml_budget_client_free(c);
 *
 * Every function returns 0 or -errno as its comment says.
 */
#ifndef ML_BUDGET_H
#define ML_BUDGET_H

#include <stdatomic.h>
#include <stdint.h>

#define ML_BUDGET_BURST_NS 1000000000LL          /* capacity: one second of rate */
#define ML_BUDGET_FOREVER_NS (INT64_MAX / 4)     /* saturation of debts and deadlines */

/* ---- one limit: pure arithmetic ------------------------------------- */

typedef struct ml_bucket {
    uint64_t rate;   /* units per second; 0 = unlimited; immutable */
    int64_t tat_ns;  /* when the bucket is full again ("theoretical arrival time"); ns of the caller's clock */
    uint64_t rem;    /* tat's fraction: tat_ns + rem / rate ns exactly, rem < rate */
} ml_bucket;

/* A full bucket of `rate` units per second at time now. */
void ml_bucket_init(ml_bucket *b, uint64_t rate, int64_t now);

/* The earliest time >= INT64_MIN at which n units may be taken (<= now:
 * at once). Unlimited buckets return INT64_MIN. */
int64_t ml_bucket_ready_at(const ml_bucket *b, uint64_t n, int64_t now);

/* Take n units at time now (whether or not they were there: the caller
 * asks ml_bucket_ready_at first). */
void ml_bucket_take(ml_bucket *b, uint64_t n, int64_t now);

/* Tokens in the bucket at time now: capacity when full, negative in
 * debt. Unlimited buckets return INT64_MAX. */
int64_t ml_bucket_level(const ml_bucket *b, int64_t now);

/* ---- a budget: two buckets, a queue of waiters, a clock -------------- */

typedef struct ml_budget ml_budget;
typedef int64_t (*ml_budget_clock)(void *ctx); /* now, ns, monotonic */

/* A new budget of bytes_per_s and iops (0 = unlimited), one reference.
 * clock NULL: ml_clock_now_ns (CLOCK_MONOTONIC); else clock(clock_ctx),
 * which must be callable from any thread (tests: a fake clock). Returns 0
 * or -ENOMEM / -errno from the condvar. */
int ml_budget_new(ml_budget **out, uint64_t bytes_per_s, uint64_t iops, ml_budget_clock clock,
                  void *clock_ctx);
void ml_budget_ref(ml_budget *b);
void ml_budget_unref(ml_budget *b); /* accepts NULL; frees at the last reference */

uint64_t ml_budget_bytes_per_s(const ml_budget *b);
uint64_t ml_budget_iops(const ml_budget *b);

/* What a budget (or a client) did since it was made. */
typedef struct ml_budget_stats {
    uint64_t bytes;        /* bytes taken */
    uint64_t ios;          /* I/Os taken */
    uint64_t takes;        /* requests that took tokens */
    uint64_t throttled;    /* requests that had to wait */
    int64_t throttled_ns;  /* wall time during which at least one request waited (ns) */
    int64_t elapsed_ns;    /* since the budget (client) was made, on the budget's clock */
    unsigned waiting;      /* requests waiting now */
} ml_budget_stats;

/* The counters behind ml_budget_stats, kept under the budget's mutex. */
typedef struct ml_budget_acct {
    uint64_t bytes, ios, takes, throttled; /* as ml_budget_stats */
    int64_t throttled_ns;  /* closed waiting intervals, ns */
    unsigned waiting;      /* requests waiting now */
    int64_t waiting_since; /* when waiting last became > 0 (budget clock) */
    int64_t start_ns;      /* made at (budget clock) */
} ml_budget_acct;

void ml_budget_get_stats(ml_budget *b, ml_budget_stats *st);

/* One queued request, owned by the caller (on its stack, or a test's):
 * fill bytes, ios, priority and set queued = 0 before the first poll. */
typedef struct ml_budget_waiter {
    uint64_t bytes, ios;             /* what it takes */
    int priority;                    /* higher first */
    uint64_t seq;                    /* arrival order among equals; set by the budget */
    int queued;                      /* 1 while in the budget's queue (under the budget's mutex) */
    struct ml_budget_client *client; /* stats also go to it; may be NULL */
    struct ml_budget_waiter *next;   /* queue link (under the budget's mutex) */
} ml_budget_waiter;

/* One step of a request, never blocking (the fake-clock tests drive the
 * budget with this): queue w if it is not queued yet; if w is at the head
 * and its tokens are there at the clock's now, take them, unqueue w and
 * return 0. Otherwise return -EAGAIN with *ready_at the time to poll again
 * (w is the head: when its tokens will be there) or INT64_MAX (w waits
 * for the requests ahead of it). A request that finds the queue empty and
 * its tokens there returns 0 without ever being queued. */
int ml_budget_poll(ml_budget *b, ml_budget_waiter *w, int64_t *ready_at);

/* Unqueue w if it is queued (a cancelled request). */
void ml_budget_abandon(ml_budget *b, ml_budget_waiter *w);

/* Take bytes and ios, sleeping (a timed condvar wait on CLOCK_MONOTONIC,
 * never a busy loop) until they are there and every request ahead of this
 * one has passed. cancel (may be NULL) is read under the budget's mutex at
 * every wake; ml_budget_wake after setting it makes the wait return
 * -ECANCELED at once. Returns 0 or -ECANCELED. Only for budgets on the
 * real clock (a fake clock's time does not pass while this sleeps). */
int ml_budget_take(ml_budget *b, uint64_t bytes, uint64_t ios, int priority, const _Atomic int *cancel);

/* Wake every request sleeping on b (after setting a cancel flag). */
void ml_budget_wake(ml_budget *b);

/* ---- one stream's use of a budget ------------------------------------ */

typedef struct ml_budget_client {
    ml_budget *b;              /* owned reference; immutable */
    int priority;              /* immutable */
    _Atomic int cancelled;     /* 1 once ml_budget_client_cancel ran (relaxed; read under b's mutex,
                                  written before ml_budget_wake locks it) */
    ml_budget_acct acct;       /* this client's share of b's counters; under b's mutex */
} ml_budget_client;

/* A client of b at `priority` (takes its own reference on b). Returns 0
 * or -ENOMEM. */
int ml_budget_client_new(ml_budget_client **out, ml_budget *b, int priority);

/* Free c (accepts NULL). Its threads must have stopped taking. */
void ml_budget_client_free(ml_budget_client *c);

/* ml_budget_take on c's budget at c's priority, counted in c's stats too.
 * Returns 0 or -ECANCELED (c was cancelled: at once, or while waiting).
 * c may be NULL: no budget, returns 0. */
int ml_budget_client_take(ml_budget_client *c, uint64_t bytes, uint64_t ios);

/* Never waits: take bytes and ios if no request is queued and they are
 * there now. Returns 0, -EAGAIN (take them with a thread that may wait)
 * or -ECANCELED. c NULL: 0. */
int ml_budget_client_try(ml_budget_client *c, uint64_t bytes, uint64_t ios);

/* From now on c's takes return -ECANCELED, and those sleeping wake now.
 * Idempotent; accepts NULL. Other clients of the budget are unaffected. */
void ml_budget_client_cancel(ml_budget_client *c);

void ml_budget_client_get_stats(ml_budget_client *c, ml_budget_stats *st);

#endif
