/* event.h - the asyncio wake-up of one engine handle (a ring, a file
 * loader region, the Reader, the Writer): an eventfd made on first use and
 * an "armed" flag (the Reader and the Writer fire it always: the Reader
 * keeps its own list of armed requests, the Writer's waiters are few).
 *
 * An asyncio consumer arms the event, then polls without waiting; the
 * engine fires the event after each publish or completion, which writes
 * the eventfd only when armed (one write per arming), so synchronous users
 * pay one atomic exchange per event and no system call. Close fires it
 * armed or not. multiload/_aio.py waits on the fd with one add_reader per
 * (loop, fd). Every function is thread-safe and never blocks.
 */
#ifndef ML_EVENT_H
#define ML_EVENT_H

#include <stdatomic.h>

typedef struct ml_event {
    _Atomic int fd;    /* eventfd (EFD_NONBLOCK | EFD_CLOEXEC, owned), -1 until ml_event_fd; set once */
    _Atomic int armed; /* 1: a consumer waits; the next ml_event_fire writes fd and clears it */
} ml_event;

/* No fd yet, not armed. */
void ml_event_init(ml_event *e);

/* The eventfd, made on the first call (two racing callers get the same
 * one). Returns it, or -errno from eventfd(2). */
int ml_event_fd(ml_event *e);

/* A consumer is about to poll: the next fire writes the fd. seq_cst: a
 * fire the consumer's poll (which takes the engine's lock after this
 * store) does not see comes after the store, so its exchange reads 1. */
void ml_event_arm(ml_event *e);

/* After a publish or completion: write the fd if armed. Call without the
 * engine's lock (a write(2) is a system call). */
void ml_event_fire(ml_event *e);

/* At close: write the fd whether armed or not (every waiter must look). */
void ml_event_fire_always(ml_event *e);

/* Close the fd, if made. Call once, when no thread can fire any more. */
void ml_event_close(ml_event *e);

#endif
