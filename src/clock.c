/* clock.c - the core's one copy of deadline arithmetic.
 *
 * Every timed wait in the core has its deadline on CLOCK_MONOTONIC: ring
 * takes sleep on futex words (FUTEX_WAIT_BITSET, absolute monotonic
 * deadlines from here; ring.c says why not condvars), Reader request
 * waits and pops and the Streamer's start gate on condition variables
 * made by ml_clock_cond_init; the one wait
 * that cannot choose its clock, pthread_timedjoin_np (CLOCK_REALTIME), gets
 * its deadline here too. Invariant: every timespec this file returns has
 * 0 <= tv_nsec < 1e9. Workload: a few calls per wait, none in a data loop.
 */
#include "clock.h"

#include <errno.h>

#define NS_PER_S 1000000000LL

int ml_clock_cond_init(pthread_cond_t *cv) {
    pthread_condattr_t a;
    int rc = pthread_condattr_init(&a);
    if (rc != 0)
        return -rc;
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    rc = pthread_cond_init(cv, &a);
    pthread_condattr_destroy(&a);
    return -rc;
}

int64_t ml_clock_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * NS_PER_S + ts.tv_nsec;
}

/* *ts = now on clock + sec seconds + nsec (0 <= nsec < 1e9) nanoseconds. */
static void deadline_after(struct timespec *ts, clockid_t clock, int64_t sec, long nsec) {
    clock_gettime(clock, ts);
    ts->tv_sec += (time_t)sec;
    ts->tv_nsec += nsec;
    if (ts->tv_nsec >= NS_PER_S) {
        ts->tv_sec++;
        ts->tv_nsec -= NS_PER_S;
    }
}

void ml_clock_deadline_ns(struct timespec *ts, clockid_t clock, int64_t ns) {
    if (ns < 0)
        ns = 0;
    deadline_after(ts, clock, ns / NS_PER_S, (long)(ns % NS_PER_S));
}

void ml_clock_deadline_ms(struct timespec *ts, clockid_t clock, long ms) {
    if (ms < 0)
        ms = 0;
    /* In seconds and a remainder, not ms * 1e6: any long of milliseconds fits. */
    deadline_after(ts, clock, ms / 1000, (ms % 1000) * 1000000L);
}
