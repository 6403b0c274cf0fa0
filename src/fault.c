/* fault.c - MULTILOAD_FAULTS parser and counters (see fault.h).
 *
 * Counters are process-wide atomics so that "the n-th read" means the same
 * thing whichever worker thread performs it. Rules are written under the
 * write side of a rwlock on reload and read under its read side, so a
 * reload while a Reader's workers are alive (tests do that) never races
 * with a check. With no rules a check is one relaxed atomic load. */
#define _GNU_SOURCE
#include "fault.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_RULES 8

typedef struct rule {
    int kind;            /* 0 eio, 1 short, 2 eagain, 3 enomem, 4 slow, 5 enospc (writes) */
    unsigned long nth;   /* fire on this count (1-based), 0 = probabilistic */
    double p;            /* probability per check */
    long ms;             /* slow: milliseconds the read sleeps */
} rule;

static pthread_rwlock_t lock = PTHREAD_RWLOCK_INITIALIZER;
static pthread_once_t once = PTHREAD_ONCE_INIT;
static rule rules[MAX_RULES];      /* written under the write lock, read under the read lock */
static _Atomic int n_rules;        /* 0 = injection off; written under the write lock */
static _Atomic unsigned long reads, allocs, writes; /* relaxed: counters only */
static _Atomic uint64_t rng;       /* xorshift state */

static void parse(void) {
    const char *env = getenv("MULTILOAD_FAULTS");
    n_rules = 0;
    atomic_store(&reads, 0);
    atomic_store(&allocs, 0);
    atomic_store(&writes, 0);
    atomic_store(&rng, 0x9E3779B97F4A7C15ull);
    if (!env || !*env)
        return;
    char *copy = strdup(env), *save = NULL;
    if (!copy)
        return;
    for (char *tok = strtok_r(copy, ",", &save); tok && n_rules < MAX_RULES;
         tok = strtok_r(NULL, ",", &save)) {
        rule r = {0};
        char *sep = strpbrk(tok, "@~");
        if (!sep)
            continue;
        size_t klen = (size_t)(sep - tok);
        if (strncmp(tok, "eio", klen) == 0 && klen == 3) r.kind = 0;
        else if (strncmp(tok, "short", klen) == 0 && klen == 5) r.kind = 1;
        else if (strncmp(tok, "eagain", klen) == 0 && klen == 6) r.kind = 2;
        else if (strncmp(tok, "enomem", klen) == 0 && klen == 6) r.kind = 3;
        else if (strncmp(tok, "slow", klen) == 0 && klen == 4) r.kind = 4;
        else if (strncmp(tok, "enospc", klen) == 0 && klen == 6) r.kind = 5;
        else continue;
        char *colon = strchr(sep, ':');
        r.ms = colon ? strtol(colon + 1, NULL, 10) : 200;
        if (*sep == '@') {
            r.nth = strtoul(sep + 1, NULL, 10);
        } else {
            char *slash;
            r.p = strtod(sep + 1, &slash);
            if (*slash == '/')
                atomic_store(&rng, strtoull(slash + 1, NULL, 10) * 2654435761u + 1);
        }
        rules[n_rules++] = r;
    }
    free(copy);
}

static void init(void) {
    pthread_rwlock_wrlock(&lock);
    parse();
    pthread_rwlock_unlock(&lock);
}

void ml_fault_reload(void) {
    pthread_once(&once, init);
    pthread_rwlock_wrlock(&lock);
    parse();
    pthread_rwlock_unlock(&lock);
}

/* Injection off: skip the lock. Relaxed: a check racing a reload may see
 * either rule set, as it may run just before or after it. */
static int rules_off(void) {
    pthread_once(&once, init);
    return atomic_load_explicit(&n_rules, memory_order_relaxed) == 0;
}

static double next_uniform(void) {
    uint64_t x = atomic_load_explicit(&rng, memory_order_relaxed), y;
    do {
        y = x;
        y ^= y << 13;
        y ^= y >> 7;
        y ^= y << 17;
    } while (!atomic_compare_exchange_weak_explicit(&rng, &x, y, memory_order_relaxed,
                                                    memory_order_relaxed));
    return (double)(y >> 11) / (double)(1ull << 53);
}

static int fires(const rule *r, unsigned long count) {
    return r->nth ? count == r->nth : next_uniform() < r->p;
}

int ml_fault_check(size_t *want) {
    if (rules_off())
        return 0;
    int rc = 0;
    long sleep_ms = 0;
    pthread_rwlock_rdlock(&lock);
    unsigned long c = atomic_fetch_add_explicit(&reads, 1, memory_order_relaxed) + 1;
    for (int i = 0; i < n_rules && rc == 0; i++) {
        if (rules[i].kind == 3 || rules[i].kind == 5 || !fires(&rules[i], c))
            continue;
        if (rules[i].kind == 0)
            rc = -EIO;
        else if (rules[i].kind == 2)
            rc = -EAGAIN;
        else if (rules[i].kind == 4)
            sleep_ms += rules[i].ms;
        else if (*want > 1)
            *want /= 2;
    }
    pthread_rwlock_unlock(&lock);
    if (rc == 0 && sleep_ms > 0) { /* outside the lock: a reload need not wait for a stalled read */
        struct timespec ts = {sleep_ms / 1000, (sleep_ms % 1000) * 1000000L};
        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
            ;
    }
    return rc;
}

int ml_fault_active(void) { return !rules_off(); }

int ml_fault_alloc(void) {
    if (rules_off())
        return 0;
    int rc = 0;
    pthread_rwlock_rdlock(&lock);
    unsigned long c = atomic_fetch_add_explicit(&allocs, 1, memory_order_relaxed) + 1;
    for (int i = 0; i < n_rules && rc == 0; i++)
        if (rules[i].kind == 3 && fires(&rules[i], c))
            rc = -ENOMEM;
    pthread_rwlock_unlock(&lock);
    return rc;
}

int ml_fault_write(void) {
    if (rules_off())
        return 0;
    int rc = 0;
    pthread_rwlock_rdlock(&lock);
    unsigned long c = atomic_fetch_add_explicit(&writes, 1, memory_order_relaxed) + 1;
    for (int i = 0; i < n_rules && rc == 0; i++)
        if (rules[i].kind == 5 && fires(&rules[i], c))
            rc = -ENOSPC;
    pthread_rwlock_unlock(&lock);
    return rc;
}
