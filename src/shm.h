/* shm.h - process-shared memory and the synchronisation that lives in it:
 * sealed memfd regions (created, or mapped from another process's fd and
 * checked), robust process-shared mutexes, and futex words. The ring
 * (ring.c) and the file loader's region (file_region.c) are built on it. */
#ifndef ML_SHM_H
#define ML_SHM_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* A memfd of `bytes` bytes, zero-filled, sealed against shrinking, growing
 * and further seals, mapped MAP_SHARED read-write. Returns 0 with *fd
 * (owned, close-on-exec) and *region (munmap it with `bytes`), or -errno
 * with nothing left open. */
int ml_shm_create(const char *name, size_t bytes, int *fd, void **region);

/* Map another process's region: fd (borrowed) must be a regular file of at
 * least min_bytes, sealed against shrinking (else a peer could truncate it
 * and turn an access into SIGBUS). Returns 0 with *region and *len (the
 * file's size, what to munmap), -ML_EINVAL for anything else, or -errno
 * from mmap. The contents are the caller's to check: trust none of it. */
int ml_shm_map(int fd, size_t min_bytes, void **region, size_t *len);

/* Initialise a mutex: process-shared and robust when `shared`, else the
 * default kind. Returns 0 or -errno. */
int ml_shm_mutex_init(pthread_mutex_t *m, int shared);

/* Lock m. A robust mutex whose owner died is taken over and marked
 * consistent: callers keep every state complete at each store. */
void ml_shm_lock(pthread_mutex_t *m);

/* FUTEX_WAIT_BITSET on *word while it still holds `seen`, until woken or
 * `deadline` (absolute, CLOCK_MONOTONIC; NULL: forever). futex_private:
 * FUTEX_PRIVATE_FLAG for memory only this process maps, else 0. Returns 1
 * on timeout, else 0 (woken, or the word had changed: re-check). */
int ml_futex_wait(uint32_t *word, uint32_t seen, const struct timespec *deadline, int futex_private);

/* Bump *word and wake every waiter on it (in every process that maps it).
 * Call under the lock that orders the bump with the change it announces. */
void ml_futex_wake_all(uint32_t *word, int futex_private);

#endif
