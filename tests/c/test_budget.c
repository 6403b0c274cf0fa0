/* test_budget.c - the I/O budget's token buckets and waiter queue, on a
 * fake clock (no timed assertions): rates, bursts, oversize requests,
 * bytes and I/Os together, priorities, sharing, refill after idle,
 * saturation of huge rates and sizes, stats; then the blocking take on
 * the real clock, woken by cancel (a bounded-return check). */
#include "check.h"

#include <pthread.h>
#include <stdatomic.h>

#include "budget.h"
#include "clock.h"

#define S 1000000000LL /* ns per second */

static int64_t fake_now;
static int64_t fake_clock(void *ctx) {
    (void)ctx;
    return __atomic_load_n(&fake_now, __ATOMIC_RELAXED);
}
static void set_now(int64_t t) { __atomic_store_n(&fake_now, t, __ATOMIC_RELAXED); }

static ml_budget *fake_budget(uint64_t bps, uint64_t iops) {
    ml_budget *b;
    set_now(0);
    CHECK_RC(ml_budget_new(&b, bps, iops, fake_clock, NULL));
    return b;
}

static void test_bucket_rate_and_burst(void) {
    ml_bucket k;
    ml_bucket_init(&k, 1000, 0);
    CHECK_EQ(ml_bucket_level(&k, 0), 1000);          /* starts full: one second of rate */
    CHECK_LE(ml_bucket_ready_at(&k, 1000, 0), 0);
    ml_bucket_take(&k, 1000, 0);
    CHECK_EQ(ml_bucket_level(&k, 0), 0);
    CHECK_EQ(ml_bucket_ready_at(&k, 1, 0), S / 1000); /* one unit per ms */
    CHECK_EQ(ml_bucket_ready_at(&k, 250, 0), S / 4);
    CHECK_EQ(ml_bucket_level(&k, S / 2), 500);
    /* idle for ten seconds: full, not ten seconds' worth */
    CHECK_EQ(ml_bucket_level(&k, 10 * S), 1000);
    CHECK_LE(ml_bucket_ready_at(&k, 1000, 10 * S), 10 * S);
    CHECK_GT(ml_bucket_ready_at(&k, 1001, 10 * S), INT64_MIN);
    ml_bucket_take(&k, 1000, 10 * S);
    CHECK_EQ(ml_bucket_level(&k, 10 * S), 0);
}

static void test_bucket_oversize(void) {
    ml_bucket k;
    ml_bucket_init(&k, 1000, 0);
    /* larger than the burst: passes on a full bucket, then the bucket is in debt */
    CHECK_LE(ml_bucket_ready_at(&k, 5000, 0), 0);
    ml_bucket_take(&k, 5000, 0);
    CHECK_EQ(ml_bucket_level(&k, 0), -4000);
    CHECK_EQ(ml_bucket_ready_at(&k, 1, 0), 4 * S + S / 1000);
    /* a second oversize one waits for the bucket to be full again */
    CHECK_EQ(ml_bucket_ready_at(&k, 5000, 0), 5 * S);
    CHECK_EQ(ml_bucket_level(&k, 5 * S), 1000);
}

static void test_bucket_exact_remainders(void) {
    ml_bucket k;
    ml_bucket_init(&k, 3, 0); /* 1/3 s a unit: not a whole number of ns */
    for (int i = 0; i < 3; i++)
        ml_bucket_take(&k, 1, 0);
    CHECK_EQ(ml_bucket_level(&k, 0), 0);
    CHECK_EQ(k.tat_ns, S); /* three thirds are exactly one second */
    CHECK_EQ(k.rem, 0);
    /* a million 1-byte takes at 7 B/s move tat by exactly 1e6/7 s */
    ml_bucket_init(&k, 7, 0);
    for (int i = 0; i < 1000000; i++)
        ml_bucket_take(&k, 1, 0);
    CHECK_EQ(k.tat_ns, (int64_t)(1000000ULL * S / 7));
    CHECK_EQ(k.rem, (1000000ULL * S) % 7);
}

static void test_bucket_saturation(void) {
    ml_bucket k;
    ml_bucket_init(&k, 0, 0); /* unlimited */
    CHECK_EQ(ml_bucket_ready_at(&k, UINT64_MAX, 0), INT64_MIN);
    ml_bucket_take(&k, UINT64_MAX, 0);
    CHECK_EQ(ml_bucket_level(&k, 0), INT64_MAX);
    ml_bucket_init(&k, UINT64_MAX, 0); /* a huge rate: requests cost nothing */
    for (int i = 0; i < 1000; i++) {
        CHECK_LE(ml_bucket_ready_at(&k, 1ULL << 40, 0), 0);
        ml_bucket_take(&k, 1ULL << 40, 0);
    }
    CHECK_EQ(ml_bucket_level(&k, 0), INT64_MAX); /* clamped, no overflow */
    ml_bucket_init(&k, 1, 0); /* a huge request at 1 unit/s: saturates */
    ml_bucket_take(&k, UINT64_MAX, 0);
    CHECK_EQ(k.tat_ns, ML_BUDGET_FOREVER_NS);
    CHECK_EQ(ml_bucket_ready_at(&k, 1, 0), ML_BUDGET_FOREVER_NS - S + S);
    ml_bucket_take(&k, UINT64_MAX, ML_BUDGET_FOREVER_NS - 5); /* still saturated, no wrap */
    CHECK_EQ(k.tat_ns, ML_BUDGET_FOREVER_NS);
    CHECK_LT(ml_bucket_level(&k, 0), 0);
}

static void test_long_run_rate(void) {
    /* one stream of varied requests, each polled at the time it is ready:
     * units taken over T never exceed rate * T + burst, nor fall short of
     * rate * T - burst - one request */
    const uint64_t rate = 1000000;
    ml_budget *b = fake_budget(rate, 0);
    uint64_t taken = 0, seed = 1;
    int64_t t = 0;
    for (int i = 0; i < 20000; i++) {
        seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
        uint64_t n = 1 + (seed >> 33) % 300000; /* up to 0.3 s of rate */
        ml_budget_waiter w = {.bytes = n, .ios = 1};
        int64_t ready;
        while (ml_budget_poll(b, &w, &ready) == -EAGAIN) {
            CHECK_NE(ready, INT64_MAX); /* alone: always the head */
            CHECK_GT(ready, t);
            t = ready;
            set_now(t);
        }
        taken += n;
        CHECK_LE(taken, rate * (uint64_t)t / S + rate);
    }
    CHECK_GT(t, 0);
    CHECK_GE(taken + rate + 300000, rate * (uint64_t)t / S);
    ml_budget_stats st;
    ml_budget_get_stats(b, &st);
    CHECK_EQ(st.bytes, taken);
    CHECK_EQ(st.ios, 20000);
    CHECK_EQ(st.takes, 20000);
    CHECK_GT(st.throttled, 0);
    CHECK_EQ(st.elapsed_ns, t);
    CHECK_EQ(st.waiting, 0);
    ml_budget_unref(b);
}

static void test_bytes_and_iops_together(void) {
    ml_budget *b = fake_budget(1000, 10);
    int64_t ready;
    for (int i = 0; i < 10; i++) { /* ten small reads: the I/O bucket runs dry first */
        ml_budget_waiter w = {.bytes = 10, .ios = 1};
        CHECK_RC(ml_budget_poll(b, &w, &ready));
    }
    ml_budget_waiter w = {.bytes = 10, .ios = 1};
    CHECK_EQ(ml_budget_poll(b, &w, &ready), -EAGAIN);
    CHECK_EQ(ready, S / 10); /* one I/O per 100 ms */
    set_now(S / 10);
    CHECK_RC(ml_budget_poll(b, &w, &ready));
    /* now bytes: 890 left; a 2000-byte read waits for a full byte bucket
     * (oversize), though I/Os are there */
    set_now(2 * S);
    ml_budget_waiter big = {.bytes = 2000, .ios = 1};
    CHECK_RC(ml_budget_poll(b, &big, &ready)); /* full again after idle */
    ml_budget_waiter next = {.bytes = 1, .ios = 1};
    CHECK_EQ(ml_budget_poll(b, &next, &ready), -EAGAIN);
    CHECK_EQ(ready, 2 * S + S + S / 1000); /* the byte debt (1000) and one byte, not the I/O */
    ml_budget_abandon(b, &next);
    CHECK_EQ(next.queued, 0);
    ml_budget_unref(b);
}

static void test_priorities(void) {
    ml_budget *b = fake_budget(100, 0);
    int64_t ready;
    ml_budget_waiter drain = {.bytes = 100};
    CHECK_RC(ml_budget_poll(b, &drain, &ready));
    /* arrivals: low A, high B, low C, high D -> served D? no: B, D, A, C */
    ml_budget_waiter a = {.bytes = 10, .priority = 0}, bb = {.bytes = 10, .priority = 5},
                     c = {.bytes = 10, .priority = 0}, d = {.bytes = 10, .priority = 5};
    ml_budget_waiter *arrive[] = {&a, &bb, &c, &d}, *want[] = {&bb, &d, &a, &c};
    for (int i = 0; i < 4; i++)
        CHECK_EQ(ml_budget_poll(b, arrive[i], &ready), -EAGAIN);
    ml_budget_stats st;
    ml_budget_get_stats(b, &st);
    CHECK_EQ(st.waiting, 4);
    for (int k = 0; k < 4; k++) {
        /* everyone polls at a time when one request's tokens are there;
         * exactly the expected one passes */
        set_now((k + 1) * S / 10);
        int passed = -1;
        for (int i = 0; i < 4; i++) {
            if (!arrive[i]->queued)
                continue;
            int rc = ml_budget_poll(b, arrive[i], &ready);
            if (rc == 0) {
                CHECK_EQ(passed, -1);
                passed = i;
            } else {
                CHECK_EQ(rc, -EAGAIN);
            }
        }
        CHECK(passed >= 0);
        CHECK(arrive[passed] == want[k]);
    }
    /* a small request behind a large head waits: no overtaking */
    set_now(10 * S);
    ml_budget_waiter drain2 = {.bytes = 100};
    CHECK_RC(ml_budget_poll(b, &drain2, &ready));
    ml_budget_waiter large = {.bytes = 90}, small = {.bytes = 1};
    CHECK_EQ(ml_budget_poll(b, &large, &ready), -EAGAIN);
    CHECK_EQ(ready, 10 * S + 9 * S / 10);
    set_now(10 * S + S / 2); /* 50 bytes back: enough for small, not for large */
    CHECK_EQ(ml_budget_poll(b, &small, &ready), -EAGAIN);
    CHECK_EQ(ready, INT64_MAX);
    /* a higher priority arrival goes first, even ahead of the waiting head */
    ml_budget_waiter urgent = {.bytes = 40, .priority = 9};
    CHECK_RC(ml_budget_poll(b, &urgent, &ready));
    CHECK_EQ(ml_budget_poll(b, &large, &ready), -EAGAIN);
    CHECK_EQ(ready, 10 * S + 13 * S / 10);
    /* the head abandons: the next one is head and passes */
    ml_budget_abandon(b, &large);
    CHECK_RC(ml_budget_poll(b, &small, &ready));
    ml_budget_get_stats(b, &st);
    CHECK_EQ(st.waiting, 0);
    ml_budget_unref(b);
}

static void test_sharing_clients(void) {
    /* two clients of one budget: their sum is limited, each keeps its own stats */
    ml_budget *b = fake_budget(1000, 0);
    ml_budget_client *c1, *c2;
    CHECK_RC(ml_budget_client_new(&c1, b, 0));
    CHECK_RC(ml_budget_client_new(&c2, b, 0));
    CHECK_RC(ml_budget_client_try(c1, 600, 1));
    CHECK_EQ(ml_budget_client_try(c2, 600, 1), -EAGAIN); /* 400 left */
    CHECK_RC(ml_budget_client_try(c2, 400, 1));
    CHECK_EQ(ml_budget_client_try(c1, 1, 1), -EAGAIN);
    set_now(S);
    CHECK_RC(ml_budget_client_try(c1, 1000, 1));
    ml_budget_stats s1, s2, all;
    ml_budget_client_get_stats(c1, &s1);
    ml_budget_client_get_stats(c2, &s2);
    ml_budget_get_stats(b, &all);
    CHECK_EQ(s1.bytes, 1600);
    CHECK_EQ(s2.bytes, 400);
    CHECK_EQ(all.bytes, 2000);
    CHECK_EQ(all.ios, 3);
    CHECK_EQ(s1.elapsed_ns, S);
    /* a client's throttled time: the wall time its waiters were queued */
    ml_budget_waiter w = {.bytes = 500, .ios = 1, .client = c2};
    int64_t ready;
    CHECK_EQ(ml_budget_poll(b, &w, &ready), -EAGAIN);
    set_now(S + S / 4);
    ml_budget_client_get_stats(c2, &s2);
    CHECK_EQ(s2.waiting, 1);
    CHECK_EQ(s2.throttled_ns, S / 4);
    set_now(ready);
    CHECK_RC(ml_budget_poll(b, &w, &ready));
    ml_budget_client_get_stats(c2, &s2);
    ml_budget_get_stats(b, &all);
    CHECK_EQ(s2.throttled_ns, S / 2);
    CHECK_EQ(s2.throttled, 1);
    CHECK_EQ(all.throttled_ns, S / 2);
    ml_budget_client_get_stats(c1, &s1);
    CHECK_EQ(s1.throttled_ns, 0);
    /* cancel: that client's takes fail at once, the other's still pass */
    ml_budget_client_cancel(c1);
    ml_budget_client_cancel(c1);
    set_now(100 * S);
    CHECK_EQ(ml_budget_client_try(c1, 1, 1), -ECANCELED);
    CHECK_EQ(ml_budget_client_take(c1, 1, 1), -ECANCELED);
    CHECK_RC(ml_budget_client_try(c2, 1, 1));
    CHECK_RC(ml_budget_client_take(NULL, 1, 1));
    ml_budget_client_free(c1);
    ml_budget_client_free(c2);
    ml_budget_client_free(NULL);
    ml_budget_client_cancel(NULL);
    ml_budget_unref(b); /* the clients' references went first */
    ml_budget_unref(NULL);
}

/* ---- the real clock: blocking takes, woken by cancel ---------------- */

typedef struct taker {
    ml_budget_client *c;
    uint64_t bytes;
    int rc;
} taker;

static void *take_thread(void *arg) {
    taker *t = arg;
    t->rc = ml_budget_client_take(t->c, t->bytes, 1);
    return NULL;
}

static void test_blocking_take_and_cancel(void) {
    const uint64_t year = 1000ULL * 86400 * 365; /* a year of 1000 B/s */
    ml_budget *b;
    CHECK_RC(ml_budget_new(&b, 1000, 0, NULL, NULL));
    ml_budget_client *slow, *other;
    CHECK_RC(ml_budget_client_new(&slow, b, 0));
    CHECK_RC(ml_budget_client_new(&other, b, 0));
    CHECK_RC(ml_budget_client_take(slow, year, 1)); /* oversize on a full bucket: passes, a year of debt */
    taker t = {.c = slow, .bytes = 1, .rc = 1};     /* so this one would sleep a year */
    pthread_t th;
    CHECK_EQ(pthread_create(&th, NULL, take_thread, &t), 0);
    for (int i = 0; i < 2000; i++) { /* until it sleeps in the queue (at most 2 s) */
        ml_budget_stats st;
        ml_budget_get_stats(b, &st);
        if (st.waiting == 1)
            break;
        usleep(1000);
    }
    int64_t t0 = ml_clock_now_ns();
    ml_budget_client_cancel(slow);
    struct timespec dl;
    ml_clock_deadline_ms(&dl, CLOCK_REALTIME, 5000);
    CHECK_EQ(pthread_timedjoin_np(th, NULL, &dl), 0); /* returned promptly, not in a year */
    CHECK_LT(ml_clock_now_ns() - t0, 5 * S);
    CHECK_EQ(t.rc, -ECANCELED);
    /* the other client is not cancelled, only out of tokens */
    CHECK_EQ(ml_budget_client_try(other, 1, 1), -EAGAIN);
    ml_budget_stats st;
    ml_budget_get_stats(b, &st);
    CHECK_EQ(st.waiting, 0);
    CHECK_EQ(st.bytes, year);
    ml_budget_client_free(slow);
    ml_budget_client_free(other);
    ml_budget_unref(b);

    /* a take that sleeps for its tokens on the real clock, then passes */
    CHECK_RC(ml_budget_new(&b, 1000000, 0, NULL, NULL));
    CHECK_RC(ml_budget_take(b, 1000000, 1, 0, NULL)); /* the burst */
    CHECK_RC(ml_budget_take(b, 2000, 1, 0, NULL));    /* about 2 ms later */
    ml_budget_get_stats(b, &st);
    CHECK_EQ(st.bytes, 1002000);
    CHECK_EQ(st.throttled, 1);
    CHECK_GT(st.throttled_ns, 0);
    ml_budget_unref(b);
}

int main(void) {
    test_bucket_rate_and_burst();
    test_bucket_oversize();
    test_bucket_exact_remainders();
    test_bucket_saturation();
    test_long_run_rate();
    test_bytes_and_iops_together();
    test_priorities();
    test_sharing_clients();
    test_blocking_take_and_cancel();
    CHECK_DONE();
}
