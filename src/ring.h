/* ring.h - the ring buffer: `n_slots` aligned slots that carry blocks from
 * worker threads to consumers, with reservations that pin a slot until the
 * consumer releases it. The caller creates the ring, from private memory
 * or from one shared mapping (memfd) that other processes can attach. */
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

/* Where the ring's memory comes from. */
typedef enum ml_ring_backing {
    ML_RING_PRIVATE = 0, /* this process's heap; process-private locks (the default) */
    ML_RING_SHARED = 1,  /* one sealed memfd mapped MAP_SHARED; process-shared robust locks */
} ml_ring_backing;

typedef struct ml_ring_config {
    unsigned n_slots;        /* >= 1 */
    size_t slot_bytes;       /* bytes per slot, rounded up to 4 KiB */
    uint64_t first;          /* first block number handed out (a saved position) */
    uint64_t limit;          /* one past the last block number, >= first; UINT64_MAX endless */
    ml_ring_backing backing;
} ml_ring_config;

/* What a consumer gets from ml_ring_take(). */
typedef struct ml_taken {
    unsigned slot;   /* slot index, to pass to ml_ring_release() */
    uint64_t seq;    /* block sequence number */
    void *data;      /* slot memory (borrowed; valid while the ring lives) */
    uint64_t rows;   /* rows the producer stored */
    ml_error error;  /* error.code != 0: the block failed, data is garbage */
} ml_taken;

/* Create a ring as cfg says: slots 4 KiB aligned, block numbers
 * [first, limit) handed out. Returns 0 or -ENOMEM / -ML_EINVAL (or
 * -errno from memfd_create/ftruncate/mmap for a shared ring). The caller
 * owns one reference. */
int ml_ring_new(ml_ring **out, const ml_ring_config *cfg);

/* A private ring of n_slots slots of slot_bytes each for blocks
 * [0, limit) (UINT64_MAX: endless): ml_ring_new's common case. */
int ml_ring_create(ml_ring **out, unsigned n_slots, size_t slot_bytes, uint64_t limit);

/* Map the shared ring behind fd (borrowed; the ring keeps a duplicate) in
 * this process. The header is checked, never trusted: magic, version,
 * layout sizes, geometry recomputed and compared, the file's size and its
 * seals. Returns 0, -ML_EINVAL for anything that is not a ring this build
 * made, or -errno. The caller owns one reference. */
int ml_ring_attach(ml_ring **out, int fd);

/* The shared ring's memfd (borrowed: valid while the ring lives), for
 * handing to another process; -1 for a private ring. */
int ml_ring_fd(const ml_ring *r);

/* References: the stream holds one, each consumer reservation wrapper may
 * hold one, so slot memory outlives every view. unref accepts NULL. */
void ml_ring_ref(ml_ring *r);
void ml_ring_unref(ml_ring *r);

/* Producer: wait for a FREE slot and claim the next block number with it
 * (FREE -> LOADING). Returns 0, -ML_EEND when every block is claimed, or
 * -ML_ECLOSED. */
int ml_ring_claim(ml_ring *r, unsigned *slot, uint64_t *seq, void **data);

/* Producer, never waiting: claim up to `max` more FREE slots with the next
 * block numbers (consecutive, increasing), as ml_ring_claim does one, into
 * slots[i], seqs[i], datas[i]. Returns how many were claimed: 0 when no
 * slot is free, every block is claimed, or the ring is closed. A producer
 * holding several claimed slots must publish each (in any order). */
unsigned ml_ring_claim_more(ml_ring *r, unsigned max, unsigned *slots, uint64_t *seqs, void **datas);

/* Producer: LOADING -> READY with `rows` rows, or with an error (err may be
 * NULL for success). */
void ml_ring_publish(ml_ring *r, unsigned slot, uint64_t rows, const ml_error *err);

/* Consumer: wait up to timeout_ms (<0: forever) for a READY block, in
 * sequence order when `ordered`, else in completion order; mark it
 * RESERVED for `owner` (ml_ring_owner_id()). Returns 0; -ML_EEND once every
 * block was taken; -ML_ECLOSED; -ETIMEDOUT; or -ML_EDEADLOCK when every
 * slot is RESERVED by `owner` itself, so waiting could never end.
 * *waited_ns receives the time spent blocked. */
int ml_ring_take(ml_ring *r, int ordered, uint64_t owner, long timeout_ms, ml_taken *out,
                 uint64_t *waited_ns);

/* Consumer: RESERVED -> FREE. Releasing twice is a no-op. */
void ml_ring_release(ml_ring *r, unsigned slot);

/* Wake every waiter (in every process); later claim/take return
 * -ML_ECLOSED. Idempotent. */
void ml_ring_close(ml_ring *r);

/* This handle's event fd for asyncio (an eventfd, EFD_NONBLOCK|EFD_CLOEXEC,
 * made on the first call; borrowed: closed with the handle's last
 * reference). Written once per ml_ring_arm by the next publish or close
 * through this handle -- so it serves consumers whose producers run in
 * this process (a Stream), not a ring another process fills. Sync users
 * never arm it and pay one atomic load per publish. Returns the fd or
 * -errno. */
int ml_ring_event_fd(ml_ring *r);

/* An asyncio consumer found nothing to take and will wait for the event
 * fd: arm it, then try ml_ring_take(timeout 0) once more before waiting. */
void ml_ring_arm(ml_ring *r);

/* The calling thread's reservation identity: unique across the threads
 * of every process alive (pid in the high 32 bits, a per-process count
 * in the low), never 0, not reused within a process before 2^32 threads
 * have asked. Cached per thread; a forked child gets a new one. */
uint64_t ml_ring_owner_id(void);

size_t ml_ring_slot_bytes(const ml_ring *r);
unsigned ml_ring_n_slots(const ml_ring *r);
ml_ring_backing ml_ring_backing_of(const ml_ring *r);
/* The block numbers the ring hands out: [first, limit). */
uint64_t ml_ring_first(const ml_ring *r);
uint64_t ml_ring_limit(const ml_ring *r);
/* Blocks handed out so far, counted from first: first + taken. For an
 * ordered consumer, the number of the next block take() returns (the
 * position to save). */
uint64_t ml_ring_position(ml_ring *r);

#endif
