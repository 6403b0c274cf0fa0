/* fault.h - test-only fault injection for the read engine, driven by the
 * MULTILOAD_FAULTS environment variable (read once per process, or again
 * after ml_fault_reload()).
 *
 *   MULTILOAD_FAULTS="eio@3"          the 3rd read (process-wide) fails with EIO
 *   MULTILOAD_FAULTS="short@2"        the 2nd read returns half its bytes
 *   MULTILOAD_FAULTS="eagain@1"       the 1st read fails with EAGAIN (retried)
 *   MULTILOAD_FAULTS="eio~0.25/7"     each read fails with probability 0.25, seed 7
 *   MULTILOAD_FAULTS="enomem@1"       the 1st checked allocation fails
 *   MULTILOAD_FAULTS="slow~1:300"     every read takes 300 ms longer (slow@N,
 *                                     slow~p/seed; default 200 ms): a stuck disk
 *   MULTILOAD_FAULTS="enospc@4"       the Writer's 4th chunk write (process-wide)
 *                                     fails with ENOSPC (enospc~p/seed too): a full disk
 * Several rules are separated by ','. Unset: every check is one branch.
 */
#ifndef ML_FAULT_H
#define ML_FAULT_H

#include <stddef.h>

/* Called once per read transfer. Returns 0 (proceed; *want may have been
 * shortened to inject a short read) or -EIO / -EAGAIN to inject a failure. */
int ml_fault_check(size_t *want);

/* Called before allocations the tests want to fail. Returns 0 or -ENOMEM. */
int ml_fault_alloc(void);

/* Nonzero when any rule is set: paths that would read around the
 * injection points (the Reader's inline reads) stand aside. */
int ml_fault_active(void);

/* Called before each chunk the Writer writes (h5write.c). Returns 0 or
 * -ENOSPC to inject a full disk. */
int ml_fault_write(void);

/* Re-read MULTILOAD_FAULTS and reset the counters (tests call this). */
void ml_fault_reload(void);

#endif
