/* mapcopy.h - copies out of a memory-mapped file that survive the file
 * shrinking under the map: a page past the new end raises SIGBUS, which
 * becomes an error return instead of killing the process. */
#ifndef ML_MAPCOPY_H
#define ML_MAPCOPY_H

#include <stddef.h>

/* Run fn(arg) with a recovery point for SIGBUS on this thread: a bus
 * error inside fn (a read of a mapped page that no longer exists) abandons
 * fn and returns -EFAULT. fn must only copy: no locks, no allocation, no
 * state that an abandoned call would leave half-made. Returns 0 when fn
 * ran to its end, -EFAULT, or -ENOSYS when the handler cannot be
 * installed (then fn is not run: read another way). Not reentrant on one
 * thread (fn must not call it). */
int ml_map_protect(void (*fn)(void *arg), void *arg);

#endif
