/* ring.h - the ring buffer: `n_slots` aligned slots that carry blocks from
 * worker threads to consumers, with reservations that pin a slot until the
 * consumer releases it. */
#ifndef ML_RING_H
#define ML_RING_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"

typedef enum ml_slot_state {
    ML_SLOT_FREE = 0,
    ML_SLOT_LOADING,
    ML_SLOT_READY,
    ML_SLOT_RESERVED,
} ml_slot_state;

typedef struct ml_ring ml_ring;

/* What a consumer gets from ml_ring_take(). */
typedef struct ml_taken {
    unsigned slot;   /* slot index, to pass to ml_ring_release() */
    uint64_t seq;    /* block sequence number */
    void *data;      /* slot memory (borrowed; valid while the ring lives) */
    uint64_t rows;   /* rows the producer stored */
    ml_error error;  /* error.code != 0: the block failed, data is garbage */
} ml_taken;

/* Create a ring of n_slots slots of slot_bytes each (rounded up to 4 KiB,
 * 4 KiB aligned). `limit` is the number of blocks in the stream
 * (UINT64_MAX: endless). Returns 0 or -ENOMEM / -ML_EINVAL. The caller
 * owns one reference. */
int ml_ring_create(ml_ring **out, unsigned n_slots, size_t slot_bytes, uint64_t limit);

/* References: the stream holds one, each consumer reservation wrapper may
 * hold one, so slot memory outlives every view. unref accepts NULL. */
void ml_ring_ref(ml_ring *r);
void ml_ring_unref(ml_ring *r);

/* Producer: wait for a FREE slot and claim the next block number with it
 * (FREE -> LOADING). Returns 0, -ML_EEND when every block is claimed, or
 * -ML_ECLOSED. */
int ml_ring_claim(ml_ring *r, unsigned *slot, uint64_t *seq, void **data);

/* Producer: LOADING -> READY with `rows` rows, or with an error (err may be
 * NULL for success). */
void ml_ring_publish(ml_ring *r, unsigned slot, uint64_t rows, const ml_error *err);

/* Consumer: wait up to timeout_ms (<0: forever) for a READY block, in
 * sequence order when `ordered`, else in completion order; mark it
 * RESERVED for `owner` (a thread identity). Returns 0; -ML_EEND once every
 * block was taken; -ML_ECLOSED; -ETIMEDOUT; or -ML_EDEADLOCK when every
 * slot is RESERVED by `owner` itself, so waiting could never end.
 * *waited_ns receives the time spent blocked. */
int ml_ring_take(ml_ring *r, int ordered, uint64_t owner, long timeout_ms, ml_taken *out,
                 uint64_t *waited_ns);

/* Consumer: RESERVED -> FREE. Releasing twice is a no-op. */
void ml_ring_release(ml_ring *r, unsigned slot);

/* Wake every waiter; later claim/take return -ML_ECLOSED. Idempotent. */
void ml_ring_close(ml_ring *r);

size_t ml_ring_slot_bytes(const ml_ring *r);
unsigned ml_ring_n_slots(const ml_ring *r);

#endif
