/* workers.h - the lifecycle the two engines (streamer.c, the Reader) share
 * with their worker threads: reference counts, starting a worker, and
 * close's bounded join that detaches a worker stuck in a read. */
#ifndef ML_WORKERS_H
#define ML_WORKERS_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>

/* After a stop, workers get this long to finish the read in flight; one
 * still inside a read then (a hung network mount) is detached. */
#define ML_CLOSE_WAIT_MS 500

/* One reference more on an engine. The caller holds one already, so
 * relaxed: whatever hands the new reference over (a thread's creation,
 * a lock) orders it. */
static inline void ml_refs_get(_Atomic unsigned *refs) {
    atomic_fetch_add_explicit(refs, 1, memory_order_relaxed);
}

/* One reference less. Returns 1 if it was the last: the caller destroys
 * the engine. acq_rel: the last holder sees every other holder's writes
 * before it frees them. */
static inline int ml_refs_put(_Atomic unsigned *refs) {
    return atomic_fetch_sub_explicit(refs, 1, memory_order_acq_rel) == 1;
}

/* Start a worker thread running fn(arg), holding a reference of its own
 * on the engine (refs), which fn drops when it leaves. On failure the
 * reference is given back. Returns 0 or -errno (from pthread_create). */
int ml_worker_start(pthread_t *t, void *(*fn)(void *), void *arg, _Atomic unsigned *refs);

/* The CLOCK_REALTIME time (pthread_timedjoin_np's clock) ML_CLOSE_WAIT_MS
 * after stop_ns, a time from ml_clock_now_ns(); now if that has passed. */
void ml_workers_close_deadline(struct timespec *deadline, int64_t stop_ns);

/* Join t until deadline (from ml_workers_close_deadline); if it is still
 * running then, detach it: it holds a reference to its engine and frees
 * its share when its read returns. Returns 0 (joined) or -ETIMEDOUT
 * (detached). */
int ml_worker_join_until(pthread_t t, const struct timespec *deadline);

#endif
