/* event.c - an engine handle's asyncio wake-up (event.h).
 *
 * Invariants: fd goes from -1 to one eventfd exactly once (compare and
 * exchange; the loser closes its own); a write happens only for an
 * exchange of armed from 1 to 0, so there is one write per arming; the
 * eventfd's counter stays non-zero until _aio.py drains it, so a waiter
 * that registered after the write still wakes. Workload: a write per
 * block or file at most, usually none (nobody armed).
 */
#include "event.h"

#include <errno.h>
#include <stdint.h>
#include <sys/eventfd.h>
#include <unistd.h>

void ml_event_init(ml_event *e) {
    atomic_init(&e->fd, -1);
    atomic_init(&e->armed, 0);
}

int ml_event_fd(ml_event *e) {
    int fd = atomic_load(&e->fd);
    if (fd >= 0)
        return fd;
    int made = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (made < 0)
        return -errno;
    int expected = -1;
    if (!atomic_compare_exchange_strong(&e->fd, &expected, made)) {
        close(made); /* another thread made it first */
        return expected;
    }
    return made;
}

void ml_event_arm(ml_event *e) { atomic_store(&e->armed, 1); }

void ml_event_fire(ml_event *e) {
    int fd = atomic_load(&e->fd);
    if (fd < 0 || !atomic_exchange(&e->armed, 0))
        return;
    uint64_t one = 1;
    ssize_t n = write(fd, &one, sizeof one); /* EAGAIN: the counter is at its maximum, still readable */
    (void)n;
}

void ml_event_fire_always(ml_event *e) {
    atomic_store(&e->armed, 1);
    ml_event_fire(e);
}

void ml_event_close(ml_event *e) {
    int fd = atomic_exchange(&e->fd, -1);
    if (fd >= 0)
        close(fd);
}
