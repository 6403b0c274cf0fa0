/* clock.h - time for waits: condition variables on CLOCK_MONOTONIC,
 * deadlines "ms from now" on either clock, now in nanoseconds. */
#ifndef ML_CLOCK_H
#define ML_CLOCK_H

#include <pthread.h>
#include <stdint.h>
#include <time.h>

/* Initialise cv so that pthread_cond_timedwait takes CLOCK_MONOTONIC
 * deadlines (a wall-clock step neither shortens nor stretches a wait).
 * Returns 0 or -errno (from pthread_cond_init). */
int ml_clock_cond_init(pthread_cond_t *cv);

/* Now on CLOCK_MONOTONIC, in nanoseconds. */
int64_t ml_clock_now_ns(void);

/* *ts = now on `clock` + ns (ns < 0 counts as 0), normalised. clock is
 * CLOCK_MONOTONIC for ml_clock_cond_init's condvars, CLOCK_REALTIME for
 * pthread_timedjoin_np. */
void ml_clock_deadline_ns(struct timespec *ts, clockid_t clock, int64_t ns);

/* The same, ms milliseconds from now (ms < 0 counts as 0; any long fits). */
void ml_clock_deadline_ms(struct timespec *ts, clockid_t clock, long ms);

#endif
