/* ring.c - slots, states and reservations.
 *
 *          claim            publish           take            release
 *   FREE ---------> LOADING ---------> READY -------> RESERVED -------> FREE
 *  (producer takes    (worker reads     (waits for a   (consumer holds
 *   next block seq)    and decodes)      consumer)      a guard/view)
 *
 * Invariants (all fields below guarded by r->mu):
 *  - A block sequence number is handed out together with a FREE slot, in
 *    increasing order, so in ordered mode the block the consumer waits for
 *    always owns a slot already and will become READY: no deadlock.
 *  - next_seq <= limit; taken counts blocks handed to consumers; when
 *    taken == limit the stream has ended.
 *  - Every wait is on a condition variable and every wait is woken by
 *    close(): producers wait on `space`, consumers on `ready`.
 *  - Producers are woken in batches: a release wakes them once wake_free
 *    (a quarter of the slots) are FREE, or at once if a consumer waits;
 *    a consumer about to wait wakes them if any slot is FREE. So a FREE
 *    slot never sits idle while a consumer starves, and a fast consumer
 *    does not cost a producer wake-up per block.
 * Slot memory is one 4 KiB-aligned allocation freed with the last
 * reference, not at close, so numpy views outlive the stream safely.
 */
#define _GNU_SOURCE
#include "ring.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "fault.h"

#define ALIGN 4096

typedef struct slot {
    ml_slot_state state; /* guarded by mu */
    uint64_t seq;        /* block number while LOADING..RESERVED */
    uint64_t rows;       /* rows stored, set at publish */
    uint64_t done_order; /* publish counter, for completion order */
    uint64_t owner;      /* consumer identity while RESERVED */
    ml_error error;      /* set at publish */
} slot;

struct ml_ring {
    _Atomic int refcount;    /* ref/unref; memory freed at 0 */
    pthread_mutex_t mu;
    pthread_cond_t space;    /* a slot became FREE, or closed */
    pthread_cond_t ready;    /* a slot became READY, or closed */
    unsigned n_slots;        /* >= 1 */
    size_t slot_bytes;       /* multiple of ALIGN */
    unsigned char *mem;      /* n_slots * slot_bytes, owned */
    slot *slots;             /* n_slots, owned */
    uint64_t limit;          /* blocks in the stream; UINT64_MAX endless */
    uint64_t next_seq;       /* next block to claim; guarded by mu */
    uint64_t next_take;      /* ordered mode: next block to hand out; guarded by mu */
    uint64_t taken;          /* blocks handed out; guarded by mu */
    uint64_t done_counter;   /* publish counter; guarded by mu */
    int closed;              /* guarded by mu */
    unsigned n_free;         /* slots in FREE; guarded by mu */
    unsigned wake_free;      /* wake sleeping producers once this many are FREE */
    unsigned producers_waiting; /* threads in claim's wait; guarded by mu */
    unsigned consumers_waiting; /* threads in take's wait; guarded by mu */
};

int ml_ring_create(ml_ring **out, unsigned n_slots, size_t slot_bytes, uint64_t limit) {
    if (n_slots < 1)
        return -ML_EINVAL;
    size_t sb = (slot_bytes + ALIGN - 1) / ALIGN * ALIGN;
    if (sb == 0)
        sb = ALIGN;
    if (sb > SIZE_MAX / n_slots)
        return -ENOMEM;
    ml_ring *r = calloc(1, sizeof *r);
    if (!r || ml_fault_alloc() < 0)
        goto fail;
    r->slots = calloc(n_slots, sizeof *r->slots);
    if (!r->slots || posix_memalign((void **)&r->mem, ALIGN, sb * n_slots) != 0) {
        r->mem = NULL;
        goto fail;
    }
    atomic_init(&r->refcount, 1);
    pthread_mutex_init(&r->mu, NULL);
    ml_clock_cond_init(&r->space);
    ml_clock_cond_init(&r->ready);
    r->n_slots = n_slots;
    r->n_free = n_slots;
    r->wake_free = n_slots / 4 > 1 ? n_slots / 4 : 1;
    r->slot_bytes = sb;
    r->limit = limit;
    *out = r;
    return 0;
fail:
    if (r)
        free(r->slots);
    free(r);
    return -ENOMEM;
}

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
    pthread_cond_destroy(&r->space);
    pthread_cond_destroy(&r->ready);
    pthread_mutex_destroy(&r->mu);
    free(r->mem);
    free(r->slots);
    free(r);
}

int ml_ring_claim(ml_ring *r, unsigned *slot_out, uint64_t *seq, void **data) {
    pthread_mutex_lock(&r->mu);
    for (;;) {
        if (r->closed) {
            pthread_mutex_unlock(&r->mu);
            return -ML_ECLOSED;
        }
        if (r->next_seq >= r->limit) {
            pthread_mutex_unlock(&r->mu);
            return -ML_EEND;
        }
        for (unsigned i = 0; i < r->n_slots; i++) {
            if (r->slots[i].state == ML_SLOT_FREE) {
                slot *s = &r->slots[i];
                s->state = ML_SLOT_LOADING;
                r->n_free--;
                s->seq = r->next_seq++;
                ml_error_clear(&s->error);
                *slot_out = i;
                *seq = s->seq;
                *data = r->mem + (size_t)i * r->slot_bytes;
                pthread_mutex_unlock(&r->mu);
                return 0;
            }
        }
        r->producers_waiting++;
        pthread_cond_wait(&r->space, &r->mu);
        r->producers_waiting--;
    }
}

void ml_ring_publish(ml_ring *r, unsigned i, uint64_t rows, const ml_error *err) {
    pthread_mutex_lock(&r->mu);
    slot *s = &r->slots[i];
    s->rows = rows;
    if (err && err->code)
        s->error = *err;
    s->done_order = r->done_counter++;
    s->state = ML_SLOT_READY;
    if (r->consumers_waiting)
        pthread_cond_broadcast(&r->ready);
    pthread_mutex_unlock(&r->mu);
}

/* Index of the slot to hand out next, or -1. Caller holds mu. */
static int pick(ml_ring *r, int ordered) {
    int best = -1;
    for (unsigned i = 0; i < r->n_slots; i++) {
        slot *s = &r->slots[i];
        if (s->state != ML_SLOT_READY)
            continue;
        if (ordered) {
            if (s->seq == r->next_take)
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
    uint64_t t0 = 0;
    int rc = 0, timed_out = 0;
    struct timespec deadline;
    if (timeout_ms >= 0)
        ml_clock_deadline_ms(&deadline, CLOCK_MONOTONIC, timeout_ms);
    pthread_mutex_lock(&r->mu);
    for (;;) {
        if (r->closed) {
            rc = -ML_ECLOSED;
            break;
        }
        if (r->taken >= r->limit) {
            rc = -ML_EEND;
            break;
        }
        int i = pick(r, ordered);
        if (i >= 0) {
            slot *s = &r->slots[i];
            s->state = ML_SLOT_RESERVED;
            s->owner = owner;
            r->taken++;
            if (ordered)
                r->next_take++;
            out->slot = (unsigned)i;
            out->seq = s->seq;
            out->rows = s->rows;
            out->data = r->mem + (size_t)i * r->slot_bytes;
            out->error = s->error;
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
            t0 = (uint64_t)ml_clock_now_ns();
        /* About to sleep: producers held back by the wake_free hysteresis
         * must work now, or this wait could outlast the stream. */
        if (r->producers_waiting && r->n_free > 0)
            pthread_cond_broadcast(&r->space);
        r->consumers_waiting++;
        if (timeout_ms < 0)
            pthread_cond_wait(&r->ready, &r->mu);
        else if (pthread_cond_timedwait(&r->ready, &r->mu, &deadline) == ETIMEDOUT)
            timed_out = 1;
        r->consumers_waiting--;
    }
    pthread_mutex_unlock(&r->mu);
    if (waited_ns)
        *waited_ns = t0 ? (uint64_t)ml_clock_now_ns() - t0 : 0;
    return rc;
}

void ml_ring_release(ml_ring *r, unsigned i) {
    pthread_mutex_lock(&r->mu);
    if (i < r->n_slots && r->slots[i].state == ML_SLOT_RESERVED) {
        r->slots[i].state = ML_SLOT_FREE;
        r->n_free++;
        /* Wake producers in batches (fewer context switches per block), or
         * at once when a consumer is starved. A release never makes a
         * waiting consumer's deadlock check true, so consumers sleep on. */
        if (r->producers_waiting && (r->n_free >= r->wake_free || r->consumers_waiting))
            pthread_cond_broadcast(&r->space);
    }
    pthread_mutex_unlock(&r->mu);
}

void ml_ring_close(ml_ring *r) {
    pthread_mutex_lock(&r->mu);
    r->closed = 1;
    pthread_cond_broadcast(&r->space);
    pthread_cond_broadcast(&r->ready);
    pthread_mutex_unlock(&r->mu);
}

size_t ml_ring_slot_bytes(const ml_ring *r) { return r->slot_bytes; }
unsigned ml_ring_n_slots(const ml_ring *r) { return r->n_slots; }
