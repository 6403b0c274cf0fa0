/* test_lifecycle.c - clock.h and workers.h, the engines' shared lifecycle:
 * deadlines are normalised and on the asked clock (huge and negative
 * spans too), a monotonic condvar's timed wait ends, a started worker
 * holds a reference and drops it, close's deadline counts from the stop,
 * and a join that outlives its deadline detaches the worker, which frees
 * the engine when it finally leaves. Time is only bounded (generous
 * bounds against a hang), never asserted as a duration. */
#include "check.h"

#include <pthread.h>
#include <stdatomic.h>

#include "clock.h"
#include "workers.h"

static int64_t ts_ns(const struct timespec *ts) { return (int64_t)ts->tv_sec * 1000000000LL + ts->tv_nsec; }

static int64_t now_on(clockid_t c) {
    struct timespec ts;
    clock_gettime(c, &ts);
    return ts_ns(&ts);
}

static void check_norm(const struct timespec *ts) {
    CHECK_GE(ts->tv_nsec, 0);
    CHECK_LT(ts->tv_nsec, 1000000000L);
}

static void test_deadlines(void) {
    clockid_t clocks[2] = {CLOCK_MONOTONIC, CLOCK_REALTIME};
    long spans_ms[] = {0, 1, 999, 1000, 1001, 123456};
    for (int c = 0; c < 2; c++) {
        for (size_t i = 0; i < sizeof spans_ms / sizeof spans_ms[0]; i++) {
            struct timespec ts;
            int64_t before = now_on(clocks[c]);
            ml_clock_deadline_ms(&ts, clocks[c], spans_ms[i]);
            int64_t after = now_on(clocks[c]);
            check_norm(&ts);
            CHECK_GE(ts_ns(&ts), before + spans_ms[i] * 1000000LL);
            CHECK_LE(ts_ns(&ts), after + spans_ms[i] * 1000000LL);
            ml_clock_deadline_ns(&ts, clocks[c], spans_ms[i] * 1000000LL + 999999999LL);
            check_norm(&ts);
            CHECK_GE(ts_ns(&ts), before + spans_ms[i] * 1000000LL + 999999999LL);
        }
        struct timespec ts;
        int64_t before = now_on(clocks[c]);
        ml_clock_deadline_ms(&ts, clocks[c], -5); /* negative: now */
        check_norm(&ts);
        CHECK_GE(ts_ns(&ts), before);
        CHECK_LE(ts_ns(&ts), now_on(clocks[c]));
        ml_clock_deadline_ns(&ts, clocks[c], -1);
        CHECK_LE(ts_ns(&ts), now_on(clocks[c]));
        /* a span of milliseconds ms * 1e6 would overflow: still in the future, normalised */
        long huge = 9000000000000000L; /* ~285 000 years */
        ml_clock_deadline_ms(&ts, clocks[c], huge);
        check_norm(&ts);
        CHECK_GE((int64_t)ts.tv_sec, before / 1000000000LL + huge / 1000);
    }
    int64_t a = ml_clock_now_ns(), b = ml_clock_now_ns();
    CHECK_LE(a, b);
    CHECK_GE(b, now_on(CLOCK_MONOTONIC) - 1000000000LL); /* it is CLOCK_MONOTONIC */
}

static void test_cond(void) {
    pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t cv;
    CHECK_RC(ml_clock_cond_init(&cv));
    struct timespec ts;
    ml_clock_deadline_ms(&ts, CLOCK_MONOTONIC, 20);
    uint64_t t0 = check_now_ms();
    pthread_mutex_lock(&mu);
    int rc = 0;
    while (rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&cv, &mu, &ts);
    pthread_mutex_unlock(&mu);
    CHECK_GE(now_on(CLOCK_MONOTONIC), ts_ns(&ts)); /* it waited on CLOCK_MONOTONIC */
    CHECK_LT(check_now_ms() - t0, 10000); /* a bound against a hang */
    pthread_cond_destroy(&cv);
}

/* A toy engine: owner + one reference per worker; destroyed at 0. */
typedef struct engine {
    _Atomic unsigned refs;
    _Atomic int destroyed;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int release;              /* 1: workers may leave; mu */
} engine;

static void engine_unref(engine *e) {
    if (ml_refs_put(&e->refs))
        atomic_store(&e->destroyed, 1); /* static storage: "free" is a flag */
}

static void *worker(void *arg) {
    engine *e = arg;
    pthread_mutex_lock(&e->mu);
    while (!e->release) /* a worker "inside a hung read" until released */
        pthread_cond_wait(&e->cv, &e->mu);
    pthread_mutex_unlock(&e->mu);
    engine_unref(e);
    return NULL;
}

static void test_workers(void) {
    static engine e;
    atomic_init(&e.refs, 1);
    pthread_mutex_init(&e.mu, NULL);
    CHECK_RC(ml_clock_cond_init(&e.cv));
    pthread_t t[3];
    for (int i = 0; i < 3; i++)
        CHECK_RC(ml_worker_start(&t[i], worker, &e, &e.refs));
    CHECK_EQ(atomic_load(&e.refs), 4);
    /* close's deadline: ML_CLOSE_WAIT_MS after the stop, on CLOCK_REALTIME */
    struct timespec d;
    int64_t rt0 = now_on(CLOCK_REALTIME);
    ml_workers_close_deadline(&d, ml_clock_now_ns());
    check_norm(&d);
    CHECK_GT(ts_ns(&d), rt0);
    CHECK_LE(ts_ns(&d), now_on(CLOCK_REALTIME) + ML_CLOSE_WAIT_MS * 1000000LL);
    /* a stop long ago: the deadline is now */
    ml_workers_close_deadline(&d, ml_clock_now_ns() - 10LL * ML_CLOSE_WAIT_MS * 1000000LL);
    check_norm(&d);
    CHECK_LE(ts_ns(&d), now_on(CLOCK_REALTIME));
    /* every worker still "reading": each is detached, none joined */
    for (int i = 0; i < 3; i++)
        CHECK_EQ(ml_worker_join_until(t[i], &d), -ETIMEDOUT);
    engine_unref(&e); /* the owner's */
    CHECK(!atomic_load(&e.destroyed)); /* the detached workers keep it */
    pthread_mutex_lock(&e.mu);
    e.release = 1;
    pthread_cond_broadcast(&e.cv);
    pthread_mutex_unlock(&e.mu);
    uint64_t t0 = check_now_ms();
    while (!atomic_load(&e.destroyed) && check_now_ms() - t0 < 10000)
        check_sleep_ms(1);
    CHECK(atomic_load(&e.destroyed)); /* the last worker to leave freed it */
    CHECK_EQ(atomic_load(&e.refs), 0);
    /* a worker that leaves in time is joined */
    static engine f;
    atomic_init(&f.refs, 1);
    pthread_mutex_init(&f.mu, NULL);
    CHECK_RC(ml_clock_cond_init(&f.cv));
    f.release = 1;
    pthread_t u;
    CHECK_RC(ml_worker_start(&u, worker, &f, &f.refs));
    ml_clock_deadline_ms(&d, CLOCK_REALTIME, 30000); /* generous: only a hang fails */
    CHECK_EQ(ml_worker_join_until(u, &d), 0);
    CHECK_EQ(atomic_load(&f.refs), 1);
    engine_unref(&f);
    CHECK(atomic_load(&f.destroyed));
}

int main(void) {
    test_deadlines();
    test_cond();
    test_workers();
    CHECK_DONE();
}
