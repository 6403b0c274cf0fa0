/* ring.c - slots, states and reservations.
 *
 *          claim            publish           take            release
 *   FREE ---------> LOADING ---------> READY -------> RESERVED -------> FREE
 *  (producer takes    (worker reads     (waits for a   (consumer holds
 *   next block seq)    and decodes)      consumer)      a guard/view)
 *
 * Invariants (all shared state below guarded by the ring mutex h->mu):
 *  - A block sequence number is handed out together with a FREE slot, in
 *    increasing order, so in ordered mode the block the consumer waits for
 *    always owns a slot already and will become READY: no deadlock.
 *  - first <= next_seq <= limit; taken counts blocks handed to consumers
 *    from first; when taken == limit the stream has ended.
 *  - Every wait is on a futex word bumped under mu (a condition variable
 *    that survives its waiters, below) and every wait is woken by close():
 *    producers wait on `space`, consumers on `ready`.
 *  - Producers are woken in batches: a release wakes them once wake_free
 *    (a quarter of the slots) are FREE, or at once if a consumer waits;
 *    a consumer about to wait wakes them if any slot is FREE. So a FREE
 *    slot never sits idle while a consumer starves, and a fast consumer
 *    does not cost a producer wake-up per block.
 *
 * Memory: one region laid out the same for both backings, so one code path
 * serves both:
 *
 *   offset 0          ring_hdr: magic, version, layout sizes, geometry,
 *                     mutex + two futex words, counters
 *   slots_off         n_slots ring_slot records (state, seq, rows, ...)
 *   data_off          n_slots * slot_bytes of slot data, 4 KiB aligned
 *
 * Nothing inside the region is a pointer: a slot is found by index, its
 * data at data_off + index * slot_bytes, so every process may map it at
 * its own address. A private ring is one posix_memalign'd region with
 * process-private locks; a shared ring is a memfd (sealed against resizing,
 * so no process can truncate it under another's mapping) mapped
 * MAP_SHARED, with a PTHREAD_PROCESS_SHARED robust mutex (a process that
 * dies holding it makes the next locker's lock return EOWNERDEAD, and
 * ring_lock marks it consistent; the counters a critical section changes
 * are each complete at every store, so the state it finds is usable,
 * though the dead process's LOADING/RESERVED slots stay so: reclaiming
 * them by owner is the loader-process issue's). Waits are futexes
 * (FUTEX_WAIT_BITSET, absolute CLOCK_MONOTONIC deadlines; shared futexes
 * for a shared ring, private ones otherwise), not pthread condvars:
 * glibc's condvar makes a broadcaster wait for waiters to leave the old
 * group, so a process killed while waiting could hang every later
 * broadcast, while a futex word holds no state about its waiters. Owner
 * ids carry the pid, so reservations of two processes never look alike.
 * Each process holds its own handle (struct ml_ring) with its own
 * reference count and validated copies of the geometry; attach never
 * trusts the header it maps. The region is freed (unmapped) with the last
 * reference of that handle, not at close, so numpy views outlive the
 * stream safely.
 *
 * ASan: nothing here is poisoned. Every slot's data is memory a Python
 * view may see (a view kept past its release reads stale bytes, which is
 * allowed: docs/design.md), so free slots must stay readable; the slot
 * table and header are touched only under the mutex.
 */
#define _GNU_SOURCE
#include "ring.h"
#include "shm.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <limits.h>
#include <linux/futex.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "event.h"
#include "fault.h"

#define ALIGN 4096
#define RING_MAGIC 0x31474e49524c4d7full /* "\x7fMLRING1" little-endian */
#define RING_VERSION 1u

typedef struct ring_slot {
    uint32_t state;      /* ml_slot_state; guarded by mu */
    uint64_t seq;        /* block number while LOADING..RESERVED */
    uint64_t rows;       /* rows stored, set at publish */
    uint64_t done_order; /* publish counter, for completion order */
    uint64_t owner;      /* consumer identity while RESERVED (ml_ring_owner_id) */
    ml_error error;      /* set at publish */
} ring_slot;

/* The region's first bytes. Geometry fields are written once, before the
 * region is shared; the rest is guarded by mu. */
typedef struct ring_hdr {
    uint64_t magic;             /* RING_MAGIC */
    uint32_t version;           /* RING_VERSION */
    uint32_t hdr_bytes;         /* sizeof(ring_hdr): both sides' layouts agree */
    uint32_t slot_rec_bytes;    /* sizeof(ring_slot) */
    uint32_t n_slots;           /* >= 1 */
    uint64_t slot_bytes;        /* multiple of ALIGN, >= ALIGN */
    uint64_t slots_off;         /* offset of the slot table */
    uint64_t data_off;          /* offset of slot 0's data, multiple of ALIGN */
    uint64_t map_bytes;         /* the region's size */
    uint64_t first;             /* first block number, <= limit */
    uint64_t limit;             /* blocks in the stream; UINT64_MAX endless */
    pthread_mutex_t mu;         /* robust and process-shared in a shared ring */
    uint32_t space;             /* futex word: bumped when a slot became FREE, or closed */
    uint32_t ready;             /* futex word: bumped when a slot became READY, or closed */
    uint64_t next_seq;          /* next block to claim; guarded by mu */
    uint64_t next_take;         /* ordered mode: next block to hand out; guarded by mu */
    uint64_t taken;             /* first + blocks handed out; guarded by mu */
    uint64_t done_counter;      /* publish counter; guarded by mu */
    uint32_t closed;            /* guarded by mu */
    uint32_t n_free;            /* slots in FREE; guarded by mu */
    uint32_t wake_free;         /* wake sleeping producers once this many are FREE */
    uint32_t producers_waiting; /* threads in claim's wait; guarded by mu */
    uint32_t consumers_waiting; /* threads in take's wait; guarded by mu */
} ring_hdr;

/* This process's handle on a region. */
struct ml_ring {
    _Atomic int refcount;    /* ref/unref; region released at 0 */
    ring_hdr *h;             /* the region (owned: freed or unmapped at 0) */
    ring_slot *slots;        /* n_slots records inside the region */
    unsigned char *mem;      /* slot data inside the region */
    unsigned n_slots;        /* validated copy, >= 1 */
    size_t slot_bytes;       /* validated copy, multiple of ALIGN */
    size_t map_bytes;        /* validated copy: the region's size */
    uint64_t first, limit;   /* validated copies */
    ml_ring_backing backing;
    int futex_private;       /* FUTEX_PRIVATE_FLAG for a private ring, else 0 */
    int fd;                  /* shared: memfd (owned); private: -1 */
    ml_event event;          /* asyncio wake-up (event.h): fired by each publish and the close
                                through this handle */
};

/* Offsets of a ring of n slots of sb bytes. Returns 0 or -ENOMEM on overflow. */
static int geometry(uint64_t n, uint64_t sb, uint64_t *slots_off, uint64_t *data_off,
                    uint64_t *total) {
    uint64_t table, data, end;
    *slots_off = (sizeof(ring_hdr) + 63) / 64 * 64;
    if (__builtin_mul_overflow(n, (uint64_t)sizeof(ring_slot), &table) ||
        __builtin_add_overflow(*slots_off, table, &end) ||
        __builtin_add_overflow(end, (uint64_t)ALIGN - 1, &end))
        return -ENOMEM;
    *data_off = end / ALIGN * ALIGN;
    if (__builtin_mul_overflow(n, sb, &data) || __builtin_add_overflow(*data_off, data, total) ||
        *total > SIZE_MAX)
        return -ENOMEM;
    return 0;
}

/* Point the handle into its region, from the validated geometry. */
static void bind_region(ml_ring *r, ring_hdr *h, unsigned n, size_t sb, uint64_t slots_off,
                        uint64_t data_off, size_t total, uint64_t first, uint64_t limit) {
    r->h = h;
    r->slots = (ring_slot *)((unsigned char *)h + slots_off);
    r->mem = (unsigned char *)h + data_off;
    r->n_slots = n;
    r->slot_bytes = sb;
    r->map_bytes = total;
    r->first = first;
    r->limit = limit;
}

/* Lock mu; a dead owner (robust shared mutex) leaves a state every store
 * of which was complete: mark it consistent and carry on. */
static void ring_lock(ml_ring *r) { ml_shm_lock(&r->h->mu); }

static void ring_unlock(ml_ring *r) { pthread_mutex_unlock(&r->h->mu); }

/* Wait, holding mu, until *word is bumped (or a spurious wake-up), at most
 * until deadline (CLOCK_MONOTONIC; NULL: forever); returns holding mu.
 * Returns 1 on timeout, else 0. The word is read under mu and every bump
 * happens under mu, so a bump between unlock and FUTEX_WAIT makes the
 * wait return at once: no lost wake-up. Callers re-check their condition. */
static int ring_wait(ml_ring *r, uint32_t *word, const struct timespec *deadline) {
    uint32_t seen = __atomic_load_n(word, __ATOMIC_RELAXED);
    ring_unlock(r);
    int timed_out = ml_futex_wait(word, seen, deadline, r->futex_private);
    ring_lock(r);
    return timed_out;
}

/* Wake every waiter on *word (in every process). Caller holds mu. */
static void ring_wake_all(ml_ring *r, uint32_t *word) { ml_futex_wake_all(word, r->futex_private); }

/* Initialise the header's lock and counters (region zeroed up to data_off). */
static int init_header(ml_ring *r, int pshared) {
    ring_hdr *h = r->h;
    int e = ml_shm_mutex_init(&h->mu, pshared);
    if (e < 0)
        return e;
    h->n_free = r->n_slots;
    h->wake_free = r->n_slots / 4 > 1 ? r->n_slots / 4 : 1;
    h->next_seq = h->next_take = h->taken = r->first;
    return 0;
}

int ml_ring_new(ml_ring **out, const ml_ring_config *cfg) {
    unsigned n = cfg->n_slots;
    if (n < 1 || cfg->first > cfg->limit ||
        (cfg->backing != ML_RING_PRIVATE && cfg->backing != ML_RING_SHARED))
        return -ML_EINVAL;
    if (cfg->slot_bytes > SIZE_MAX - ALIGN)
        return -ENOMEM;
    size_t sb = (cfg->slot_bytes + ALIGN - 1) / ALIGN * ALIGN;
    if (sb == 0)
        sb = ALIGN;
    if (sb > SIZE_MAX / n)
        return -ENOMEM;
    uint64_t slots_off, data_off, total;
    if (geometry(n, sb, &slots_off, &data_off, &total) < 0)
        return -ENOMEM;
    int rc = -ENOMEM;
    ml_ring *r = calloc(1, sizeof *r);
    void *region = NULL;
    if (r) {
        r->fd = -1;
        ml_event_init(&r->event);
    }
    if (!r || ml_fault_alloc() < 0)
        goto fail;
    r->backing = cfg->backing;
    r->futex_private = cfg->backing == ML_RING_PRIVATE ? FUTEX_PRIVATE_FLAG : 0;
    if (cfg->backing == ML_RING_PRIVATE) {
        if (posix_memalign(&region, ALIGN, total) != 0) {
            region = NULL;
            goto fail;
        }
        /* Only header and table: the data pages stay untouched (uncommitted). */
        memset(region, 0, data_off);
    } else {
        if (total > SIZE_MAX || (rc = ml_shm_create("multiload-ring", (size_t)total, &r->fd, &region)) < 0) {
            region = NULL;
            rc = total > SIZE_MAX ? -ENOMEM : rc;
            goto fail;
        }
    }
    bind_region(r, region, n, sb, slots_off, data_off, total, cfg->first, cfg->limit);
    ring_hdr *h = r->h;
    rc = init_header(r, cfg->backing == ML_RING_SHARED);
    if (rc < 0)
        goto fail;
    h->n_slots = n;
    h->slot_bytes = sb;
    h->slots_off = slots_off;
    h->data_off = data_off;
    h->map_bytes = total;
    h->first = cfg->first;
    h->limit = cfg->limit;
    h->hdr_bytes = sizeof(ring_hdr);
    h->slot_rec_bytes = sizeof(ring_slot);
    h->version = RING_VERSION;
    /* Last, so a half-made region never looks like a ring. Release: an
     * attacher in this process that reads the magic sees the rest (other
     * processes get the fd only after create returns). */
    __atomic_store_n(&h->magic, RING_MAGIC, __ATOMIC_RELEASE);
    atomic_init(&r->refcount, 1);
    *out = r;
    return 0;
fail:
    if (region && cfg->backing == ML_RING_PRIVATE)
        free(region);
    else if (region)
        munmap(region, total);
    if (r && r->fd >= 0)
        close(r->fd);
    free(r);
    return rc;
}

int ml_ring_create(ml_ring **out, unsigned n_slots, size_t slot_bytes, uint64_t limit) {
    ml_ring_config cfg = {.n_slots = n_slots, .slot_bytes = slot_bytes, .limit = limit};
    return ml_ring_new(out, &cfg);
}

int ml_ring_attach(ml_ring **out, int fd) {
    void *region = MAP_FAILED;
    size_t len = 0;
    ml_ring *r = calloc(1, sizeof *r);
    if (!r)
        return -ENOMEM;
    r->fd = -1;
    ml_event_init(&r->event);
    int rc = ml_shm_map(fd, sizeof(ring_hdr), &region, &len);
    if (rc < 0) {
        region = MAP_FAILED;
        goto fail;
    }
    rc = -ML_EINVAL;
    /* Copy each field once (another process may write the region while we
     * look), then check the copies and use only them. */
    const ring_hdr *h = region;
    uint64_t magic = __atomic_load_n(&h->magic, __ATOMIC_ACQUIRE);
    uint32_t version = h->version, hdr_bytes = h->hdr_bytes, rec = h->slot_rec_bytes;
    uint32_t n = h->n_slots;
    uint64_t sb = h->slot_bytes, slots_off = h->slots_off, data_off = h->data_off;
    uint64_t total = h->map_bytes, first = h->first, limit = h->limit;
    uint64_t want_slots, want_data, want_total;
    if (magic != RING_MAGIC || version != RING_VERSION || hdr_bytes != sizeof(ring_hdr) ||
        rec != sizeof(ring_slot) || n < 1 || sb < ALIGN || sb % ALIGN || sb > SIZE_MAX ||
        first > limit || geometry(n, sb, &want_slots, &want_data, &want_total) < 0 ||
        slots_off != want_slots || data_off != want_data || total != want_total || total > len)
        goto fail;
    r->fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (r->fd < 0) {
        rc = -errno;
        goto fail;
    }
    r->backing = ML_RING_SHARED;
    bind_region(r, region, n, (size_t)sb, slots_off, data_off, len, first, limit);
    atomic_init(&r->refcount, 1);
    *out = r;
    return 0;
fail:
    if (region != MAP_FAILED)
        munmap(region, len);
    free(r);
    return rc;
}

int ml_ring_fd(const ml_ring *r) { return r->fd; }

void ml_ring_ref(ml_ring *r) {
    /* Relaxed: the caller already holds a reference. */
    atomic_fetch_add_explicit(&r->refcount, 1, memory_order_relaxed);
}

void ml_ring_unref(ml_ring *r) {
    if (!r)
        return;
    /* acq_rel: the last owner sees all writes into slots before freeing. */
    if (atomic_fetch_sub_explicit(&r->refcount, 1, memory_order_acq_rel) != 1)
        return;
    if (r->backing == ML_RING_PRIVATE) {
        pthread_mutex_destroy(&r->h->mu);
        free(r->h);
    } else {
        /* Other processes may still use the locks: only this mapping goes. */
        munmap(r->h, r->map_bytes);
        close(r->fd);
    }
    ml_event_close(&r->event);
    free(r);
}

static uint64_t now_ns(void) { return (uint64_t)ml_clock_now_ns(); }

/* FREE -> LOADING for the first free slot at or after *from, with the
 * next block number. Returns 1, or 0 if no slot is free. Caller holds mu
 * and has checked closed and the limit. */
static int claim_free(ml_ring *r, unsigned *from, unsigned *slot_out, uint64_t *seq, void **data) {
    ring_hdr *h = r->h;
    for (unsigned i = *from; i < r->n_slots; i++) {
        if (r->slots[i].state == ML_SLOT_FREE) {
            ring_slot *s = &r->slots[i];
            s->state = ML_SLOT_LOADING;
            h->n_free--;
            s->seq = h->next_seq++;
            ml_error_clear(&s->error);
            *slot_out = i;
            *seq = s->seq;
            *data = r->mem + (size_t)i * r->slot_bytes;
            *from = i + 1;
            return 1;
        }
    }
    *from = r->n_slots;
    return 0;
}

int ml_ring_claim(ml_ring *r, unsigned *slot_out, uint64_t *seq, void **data) {
    ring_hdr *h = r->h;
    ring_lock(r);
    for (;;) {
        if (h->closed) {
            ring_unlock(r);
            return -ML_ECLOSED;
        }
        if (h->next_seq >= r->limit) {
            ring_unlock(r);
            return -ML_EEND;
        }
        unsigned from = 0;
        if (claim_free(r, &from, slot_out, seq, data)) {
            ring_unlock(r);
            return 0;
        }
        h->producers_waiting++;
        ring_wait(r, &h->space, NULL);
        h->producers_waiting--;
    }
}

unsigned ml_ring_claim_more(ml_ring *r, unsigned max, unsigned *slots, uint64_t *seqs, void **datas) {
    ring_hdr *h = r->h;
    unsigned n = 0, from = 0;
    ring_lock(r);
    while (n < max && !h->closed && h->next_seq < r->limit && h->n_free > 0 &&
           claim_free(r, &from, &slots[n], &seqs[n], &datas[n]))
        n++;
    ring_unlock(r);
    return n;
}

void ml_ring_publish(ml_ring *r, unsigned i, uint64_t rows, const ml_error *err) {
    ring_hdr *h = r->h;
    if (i >= r->n_slots)
        return;
    ring_lock(r);
    ring_slot *s = &r->slots[i];
    s->rows = rows;
    if (err && err->code)
        s->error = *err;
    s->done_order = h->done_counter++;
    s->state = ML_SLOT_READY;
    if (h->consumers_waiting)
        ring_wake_all(r, &h->ready);
    ring_unlock(r);
    ml_event_fire(&r->event);
}

/* Index of the slot to hand out next, or -1. Caller holds mu. */
static int pick(ml_ring *r, int ordered) {
    int best = -1;
    for (unsigned i = 0; i < r->n_slots; i++) {
        ring_slot *s = &r->slots[i];
        if (s->state != ML_SLOT_READY)
            continue;
        if (ordered) {
            if (s->seq == r->h->next_take)
                return (int)i;
        } else if (best < 0 || s->done_order < r->slots[best].done_order) {
            best = (int)i;
        }
    }
    return best;
}

static int all_reserved_by(ml_ring *r, uint64_t owner) {
    for (unsigned i = 0; i < r->n_slots; i++)
        if (r->slots[i].state != ML_SLOT_RESERVED || r->slots[i].owner != owner)
            return 0;
    return 1;
}

int ml_ring_take(ml_ring *r, int ordered, uint64_t owner, long timeout_ms, ml_taken *out,
                 uint64_t *waited_ns) {
    ring_hdr *h = r->h;
    uint64_t t0 = 0;
    int rc = 0, timed_out = 0;
    struct timespec deadline;
    if (timeout_ms >= 0)
        ml_clock_deadline_ms(&deadline, CLOCK_MONOTONIC, timeout_ms);
    ring_lock(r);
    for (;;) {
        if (h->closed) {
            rc = -ML_ECLOSED;
            break;
        }
        if (h->taken >= r->limit) {
            rc = -ML_EEND;
            break;
        }
        int i = pick(r, ordered);
        if (i >= 0) {
            ring_slot *s = &r->slots[i];
            s->state = ML_SLOT_RESERVED;
            s->owner = owner;
            h->taken++;
            if (ordered)
                h->next_take++;
            out->slot = (unsigned)i;
            out->seq = s->seq;
            out->rows = s->rows;
            out->data = r->mem + (size_t)i * r->slot_bytes;
            out->error = s->error;
            /* Shared: another process wrote it; keep the message a string. */
            out->error.msg[sizeof out->error.msg - 1] = '\0';
            break;
        }
        if (all_reserved_by(r, owner)) {
            rc = -ML_EDEADLOCK;
            break;
        }
        if (timed_out) { /* checked for a block once more after the timeout: none */
            rc = -ETIMEDOUT;
            break;
        }
        if (!t0)
            t0 = now_ns();
        /* About to sleep: producers held back by the wake_free hysteresis
         * must work now, or this wait could outlast the stream. */
        if (h->producers_waiting && h->n_free > 0)
            ring_wake_all(r, &h->space);
        h->consumers_waiting++;
        timed_out = ring_wait(r, &h->ready, timeout_ms < 0 ? NULL : &deadline);
        h->consumers_waiting--;
    }
    ring_unlock(r);
    if (waited_ns)
        *waited_ns = t0 ? now_ns() - t0 : 0;
    return rc;
}

void ml_ring_release(ml_ring *r, unsigned i) {
    ring_hdr *h = r->h;
    if (i >= r->n_slots)
        return;
    ring_lock(r);
    if (r->slots[i].state == ML_SLOT_RESERVED) {
        r->slots[i].state = ML_SLOT_FREE;
        h->n_free++;
        /* Wake producers in batches (fewer context switches per block), or
         * at once when a consumer is starved. A release never makes a
         * waiting consumer's deadlock check true, so consumers sleep on. */
        if (h->producers_waiting && (h->n_free >= h->wake_free || h->consumers_waiting))
            ring_wake_all(r, &h->space);
    }
    ring_unlock(r);
}

void ml_ring_close(ml_ring *r) {
    ring_hdr *h = r->h;
    ring_lock(r);
    h->closed = 1;
    ring_wake_all(r, &h->space);
    ring_wake_all(r, &h->ready);
    ring_unlock(r);
    ml_event_fire_always(&r->event); /* a close wakes asyncio consumers armed or not */
}

int ml_ring_event_fd(ml_ring *r) { return ml_event_fd(&r->event); }

/* The caller's take locks mu after this (event.h: what the order gives). */
void ml_ring_arm(ml_ring *r) { ml_event_arm(&r->event); }

/* Bumped in every forked child, so a thread that forked asks for a new id. */
static _Atomic unsigned fork_gen;
static pthread_once_t fork_once = PTHREAD_ONCE_INIT;
static void on_fork_child(void) { atomic_fetch_add_explicit(&fork_gen, 1, memory_order_relaxed); }
static void register_fork(void) { pthread_atfork(NULL, NULL, on_fork_child); }

uint64_t ml_ring_owner_id(void) {
    static _Atomic uint32_t next = 1; /* relaxed: only uniqueness matters */
    static _Thread_local uint64_t owner;
    static _Thread_local unsigned owner_gen;
    unsigned gen = atomic_load_explicit(&fork_gen, memory_order_relaxed);
    if (!owner || owner_gen != gen) { /* first call, or in a forked child */
        pthread_once(&fork_once, register_fork);
        gen = atomic_load_explicit(&fork_gen, memory_order_relaxed);
        owner = (uint64_t)(uint32_t)getpid() << 32 |
                atomic_fetch_add_explicit(&next, 1, memory_order_relaxed);
        owner_gen = gen;
    }
    return owner;
}

size_t ml_ring_slot_bytes(const ml_ring *r) { return r->slot_bytes; }
unsigned ml_ring_n_slots(const ml_ring *r) { return r->n_slots; }
ml_ring_backing ml_ring_backing_of(const ml_ring *r) { return r->backing; }
uint64_t ml_ring_first(const ml_ring *r) { return r->first; }
uint64_t ml_ring_limit(const ml_ring *r) { return r->limit; }

uint64_t ml_ring_position(ml_ring *r) {
    ring_lock(r);
    uint64_t p = r->h->taken;
    ring_unlock(r);
    return p;
}
