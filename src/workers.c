/* workers.c - how an engine's worker threads start and how close ends
 * them, once for the Streamer and the Reader.
 *
 * Invariant: an engine is reference counted, its owner holding one
 * reference and every worker thread one (taken before the thread exists,
 * dropped by the thread as it leaves), so whichever holder drops the last
 * frees it. That is what lets close be bounded: it stops the engine, joins
 * each worker until ML_CLOSE_WAIT_MS after the stop, and detaches any
 * still inside a read -- a hung network mount must hang neither close nor
 * Ctrl-C -- and the detached worker frees its share when the read returns.
 * Workload: a few calls per engine, at open and close.
 */
#define _GNU_SOURCE
#include "workers.h"

#include <errno.h>

#include "clock.h"

int ml_worker_start(pthread_t *t, void *(*fn)(void *), void *arg, _Atomic unsigned *refs) {
    ml_refs_get(refs); /* the thread's, ordered before it runs by its creation */
    int rc = pthread_create(t, NULL, fn, arg);
    if (rc != 0) {
        ml_refs_put(refs); /* never the last: the caller holds one */
        return -rc;
    }
    return 0;
}

void ml_workers_close_deadline(struct timespec *deadline, int64_t stop_ns) {
    int64_t left = (int64_t)ML_CLOSE_WAIT_MS * 1000000LL - (ml_clock_now_ns() - stop_ns);
    ml_clock_deadline_ns(deadline, CLOCK_REALTIME, left); /* left < 0: now */
}

int ml_worker_join_until(pthread_t t, const struct timespec *deadline) {
    if (pthread_timedjoin_np(t, NULL, deadline) == 0)
        return 0;
    pthread_detach(t); /* still reading: it frees its reference when done */
    return -ETIMEDOUT;
}
