/* shm.c - process-shared memory primitives (shm.h).
 *
 * A region is one memfd: no name in /dev/shm to go stale, nothing for a
 * resource tracker to unlink, and, sealed against shrinking and growing,
 * no way for a peer to change its size under another's mapping. Waits are
 * futex words, not condition variables: glibc's condvar makes a
 * broadcaster wait for waiters to leave the old group, so a process killed
 * while it waited could hang every later broadcast; a futex word holds no
 * state about its waiters. Every wait can be woken (a bump) for shutdown. */
#define _GNU_SOURCE
#include "shm.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "error.h"

int ml_shm_create(const char *name, size_t bytes, int *fd, void **region) {
    int rc;
    int f = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (f < 0)
        return -errno;
    if (bytes > (size_t)INT64_MAX || ftruncate(f, (off_t)bytes) < 0 ||
        fcntl(f, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0) {
        rc = bytes > (size_t)INT64_MAX ? -ENOMEM : -errno;
        goto fail;
    }
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, f, 0);
    if (p == MAP_FAILED) {
        rc = -errno;
        goto fail;
    }
    *fd = f;
    *region = p;
    return 0;
fail:
    close(f);
    return rc;
}

int ml_shm_map(int fd, size_t min_bytes, void **region, size_t *len) {
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size < (off_t)min_bytes ||
        (uint64_t)st.st_size > SIZE_MAX)
        return -ML_EINVAL;
    int seals = fcntl(fd, F_GET_SEALS);
    if (seals < 0 || !(seals & F_SEAL_SHRINK))
        return -ML_EINVAL;
    void *p = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED)
        return -errno;
    *region = p;
    *len = (size_t)st.st_size;
    return 0;
}

int ml_shm_mutex_init(pthread_mutex_t *m, int shared) {
    pthread_mutexattr_t ma;
    int e = pthread_mutexattr_init(&ma);
    if (e)
        return -e;
    if (shared) {
        pthread_mutexattr_setpshared(&ma, PTHREAD_PROCESS_SHARED);
        pthread_mutexattr_setrobust(&ma, PTHREAD_MUTEX_ROBUST);
    }
    e = pthread_mutex_init(m, &ma);
    pthread_mutexattr_destroy(&ma);
    return -e;
}

void ml_shm_lock(pthread_mutex_t *m) {
    if (pthread_mutex_lock(m) == EOWNERDEAD)
        pthread_mutex_consistent(m);
}

int ml_futex_wait(uint32_t *word, uint32_t seen, const struct timespec *deadline, int futex_private) {
    /* FUTEX_WAIT_BITSET: the timeout is absolute, on CLOCK_MONOTONIC. */
    long e = syscall(SYS_futex, word, FUTEX_WAIT_BITSET | futex_private, seen, deadline, NULL,
                     FUTEX_BITSET_MATCH_ANY);
    return e < 0 && errno == ETIMEDOUT;
}

void ml_futex_wake_all(uint32_t *word, int futex_private) {
    /* Relaxed: the caller's lock orders the bump with the state change it announces. */
    __atomic_store_n(word, __atomic_load_n(word, __ATOMIC_RELAXED) + 1, __ATOMIC_RELAXED);
    syscall(SYS_futex, word, FUTEX_WAKE | futex_private, INT_MAX, NULL, NULL, 0);
}
