/* mapcopy.c - a thread-local recovery point for SIGBUS.
 *
 * The Reader copies rows out of a read-only mapping of the file (io.c's
 * map). If the file is truncated while mapped, touching a page past the
 * new end raises SIGBUS; without a handler that kills the process. Here a
 * process-wide handler (installed once, on first use) looks for a
 * recovery point of the faulting thread: if the fault happened inside
 * ml_map_protect, it jumps back there and the call returns -EFAULT (the
 * caller then reads through the file, which names the error: rows past
 * the end). A SIGBUS with no recovery point (not ours) goes to whatever
 * handler was there before (Python's faulthandler, a sanitizer) or the
 * default action, re-raised so the process dies as it would have.
 *
 * Invariants: the recovery point is set only while fn runs and fn only
 * copies (no locks, no malloc), so jumping out of it leaves nothing half
 * done; SA_NODEFER keeps SIGBUS unblocked after the jump (sigsetjmp does
 * not save the mask: saving it costs a system call per copy). Workload:
 * one sigsetjmp (tens of ns) per protected batch of copies, not per row.
 */
#define _GNU_SOURCE
#include "mapcopy.h"

#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>

static _Thread_local sigjmp_buf *recovery; /* set only while fn runs on this thread */
static struct sigaction previous;          /* what SIGBUS did before ours; set once */
static pthread_once_t once = PTHREAD_ONCE_INIT;
static int installed;                      /* 1 once ours is in place; written in once */

static void on_sigbus(int sig, siginfo_t *info, void *ctx) {
    sigjmp_buf *jb = recovery;
    if (jb) {
        recovery = NULL;
        siglongjmp(*jb, 1);
    }
    /* Not a protected copy: hand the signal to the handler before ours. */
    if (previous.sa_flags & SA_SIGINFO) {
        if (previous.sa_sigaction) {
            previous.sa_sigaction(sig, info, ctx);
            return;
        }
    } else if (previous.sa_handler != SIG_DFL && previous.sa_handler != SIG_IGN) {
        previous.sa_handler(sig);
        return;
    }
    /* Default action: die of SIGBUS as without us. */
    signal(sig, SIG_DFL);
    raise(sig);
}

static void install(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_sigbus;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    installed = sigaction(SIGBUS, &sa, &previous) == 0;
}

int ml_map_protect(void (*fn)(void *arg), void *arg) {
    pthread_once(&once, install);
    if (!installed)
        return -ENOSYS;
    sigjmp_buf jb;
    if (sigsetjmp(jb, 0)) {
        atomic_signal_fence(memory_order_seq_cst);
        return -EFAULT;
    }
    recovery = &jb;
    atomic_signal_fence(memory_order_seq_cst); /* the handler sees recovery set before fn's copies */
    fn(arg);
    atomic_signal_fence(memory_order_seq_cst); /* ... and cleared only after them */
    recovery = NULL;
    return 0;
}
