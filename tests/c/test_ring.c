/* test_ring.c - the ring buffer: slot states, hand-out order, end of
 * stream, close, deadlock detection, timeouts, references, and a bounded
 * multi-threaded producer/consumer stress; every test on a private ring
 * and again on a shared (memfd) one, in one process. Then rings that start
 * at a saved position, owner ids, and what attach refuses. Two processes:
 * test_ring_shared.c. */
#include "check.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "ring.h"

/* ---- helpers ----------------------------------------------------------- */

static ml_ring_backing g_backing; /* the backing every test's ring has */

/* ml_ring_create with g_backing. */
static int mk(ml_ring **out, unsigned n_slots, size_t slot_bytes, uint64_t limit) {
    ml_ring_config cfg = {.n_slots = n_slots, .slot_bytes = slot_bytes, .limit = limit,
                          .backing = g_backing};
    int rc = ml_ring_new(out, &cfg);
    if (rc == 0)
        CHECK_EQ(ml_ring_backing_of(*out), g_backing);
    return rc;
}

typedef struct waiter {
    ml_ring *r;
    int ordered;
    uint64_t owner;
    _Atomic int done; /* 1 once the call returned */
    int rc;
    unsigned slot;
    uint64_t seq;
    ml_taken t;
} waiter;

static void *claim_thread(void *arg) {
    waiter *w = arg;
    void *data;
    w->rc = ml_ring_claim(w->r, &w->slot, &w->seq, &data);
    atomic_store(&w->done, 1);
    return NULL;
}

static void *take_thread(void *arg) {
    waiter *w = arg;
    w->rc = ml_ring_take(w->r, w->ordered, w->owner, -1, &w->t, NULL);
    atomic_store(&w->done, 1);
    return NULL;
}

/* Wait (bounded) for a thread's call to return. */
static int wait_done(waiter *w, unsigned ms) {
    uint64_t end = check_now_ms() + ms;
    while (!atomic_load(&w->done) && check_now_ms() < end)
        check_sleep_ms(2);
    return atomic_load(&w->done);
}

static void claim_ok(ml_ring *r, unsigned *slot, uint64_t want_seq) {
    uint64_t seq;
    void *data;
    CHECK_RC(ml_ring_claim(r, slot, &seq, &data));
    CHECK_U64_EQ(seq, want_seq);
    CHECK(data != NULL);
}

/* ---- tests ------------------------------------------------------------- */

static void test_create(void) {
    ml_ring *r = NULL;
    CHECK_ERR(mk(&r, 0, 100, 1), -ML_EINVAL);
    CHECK_RC(mk(&r, 3, 1, 10));
    CHECK_EQ(ml_ring_n_slots(r), 3);
    CHECK_EQ(ml_ring_slot_bytes(r), 4096);
    unsigned s;
    uint64_t seq;
    void *data;
    CHECK_RC(ml_ring_claim(r, &s, &seq, &data));
    CHECK_EQ((uintptr_t)data % 4096, 0);
    ml_ring_unref(r);
    CHECK_RC(mk(&r, 2, 4097, 10));
    CHECK_EQ(ml_ring_slot_bytes(r), 8192);
    ml_ring_unref(r);
    ml_ring_unref(NULL); /* accepts NULL */
}

/* FREE -> LOADING -> READY -> RESERVED -> FREE on a one-slot ring. */
static void test_states(void) {
    ml_ring *r;
    ml_taken t;
    CHECK_RC(mk(&r, 1, 64, 3));
    unsigned s;
    claim_ok(r, &s, 0); /* FREE -> LOADING */
    CHECK_EQ(s, 0);
    /* LOADING is not takable. */
    CHECK_ERR(ml_ring_take(r, 1, 1, 0, &t, NULL), -ETIMEDOUT);
    CHECK_ERR(ml_ring_take(r, 0, 1, 0, &t, NULL), -ETIMEDOUT);
    /* Releasing a LOADING slot is a no-op. */
    ml_ring_release(r, s);
    CHECK_ERR(ml_ring_take(r, 0, 1, 0, &t, NULL), -ETIMEDOUT);

    ml_ring_publish(r, s, 5, NULL); /* LOADING -> READY */
    CHECK_RC(ml_ring_take(r, 1, 1, 0, &t, NULL)); /* READY -> RESERVED */
    CHECK_EQ(t.slot, 0);
    CHECK_U64_EQ(t.seq, 0);
    CHECK_U64_EQ(t.rows, 5);
    CHECK_EQ(t.error.code, 0);

    /* RESERVED is neither claimable nor takable: a producer blocks. */
    waiter w = {.r = r};
    pthread_t th;
    CHECK_EQ(pthread_create(&th, NULL, claim_thread, &w), 0);
    check_sleep_ms(50);
    CHECK_EQ(atomic_load(&w.done), 0);
    CHECK_ERR(ml_ring_take(r, 0, 1, 0, &t, NULL), -ML_EDEADLOCK);
    CHECK_ERR(ml_ring_take(r, 0, 2, 0, &t, NULL), -ETIMEDOUT);
    ml_ring_release(r, s); /* RESERVED -> FREE: the producer proceeds */
    CHECK(wait_done(&w, 5000));
    pthread_join(th, NULL);
    CHECK_RC(w.rc);
    CHECK_U64_EQ(w.seq, 1);
    /* Releasing twice (now LOADING by the new claim) changes nothing. */
    ml_ring_release(r, s);
    CHECK_ERR(ml_ring_take(r, 0, 1, 0, &t, NULL), -ETIMEDOUT);
    ml_ring_release(r, 99); /* out of range: ignored */

    /* An error travels with its block. */
    ml_error e;
    ml_error_clear(&e);
    ml_error_set(&e, -EIO, "block %d failed", 1);
    ml_ring_publish(r, w.slot, 0, &e);
    CHECK_RC(ml_ring_take(r, 1, 1, 0, &t, NULL));
    CHECK_U64_EQ(t.seq, 1);
    CHECK_EQ(t.error.code, -EIO);
    CHECK(strcmp(t.error.msg, "block 1 failed") == 0);
    ml_ring_release(r, t.slot);

    /* The next claim of that slot starts with a clean error. */
    claim_ok(r, &s, 2);
    ml_ring_publish(r, s, 1, NULL);
    CHECK_RC(ml_ring_take(r, 1, 1, 0, &t, NULL));
    CHECK_EQ(t.error.code, 0);
    ml_ring_release(r, t.slot);
    ml_ring_unref(r);
}

/* Publish in the order `pub`, take everything, return the taken seqs. */
static void publish_and_take(int ordered, const unsigned *pub, uint64_t *got) {
    ml_ring *r;
    ml_taken t;
    unsigned slot_of[4];
    CHECK_RC(mk(&r, 4, 16, 4));
    for (uint64_t k = 0; k < 4; k++)
        claim_ok(r, &slot_of[k], k);
    for (int i = 0; i < 4; i++) {
        ml_ring_publish(r, slot_of[pub[i]], pub[i] + 1, NULL);
        if (ordered && i == 0 && pub[0] != 0)
            CHECK_ERR(ml_ring_take(r, 1, 1, 0, &t, NULL), -ETIMEDOUT);
    }
    for (int i = 0; i < 4; i++) {
        CHECK_RC(ml_ring_take(r, ordered, 1, 0, &t, NULL));
        CHECK_U64_EQ(t.rows, t.seq + 1);
        CHECK_EQ(t.slot, slot_of[t.seq]);
        got[i] = t.seq;
    }
    CHECK_ERR(ml_ring_take(r, ordered, 1, 0, &t, NULL), -ML_EEND);
    ml_ring_unref(r);
}

static void test_order(void) {
    static const unsigned pub[4] = {3, 1, 2, 0};
    uint64_t got[4];
    publish_and_take(1, pub, got); /* ordered: dataset order */
    for (int i = 0; i < 4; i++)
        CHECK_U64_EQ(got[i], i);
    publish_and_take(0, pub, got); /* unordered: completion order */
    for (int i = 0; i < 4; i++)
        CHECK_U64_EQ(got[i], pub[i]);
}

static void test_limit(void) {
    ml_ring *r;
    ml_taken t;
    unsigned s;
    uint64_t seq;
    void *data;
    CHECK_RC(mk(&r, 4, 16, 2));
    claim_ok(r, &s, 0);
    ml_ring_publish(r, s, 1, NULL);
    claim_ok(r, &s, 1);
    CHECK_ERR(ml_ring_claim(r, &s, &seq, &data), -ML_EEND); /* free slots, no blocks */
    ml_ring_publish(r, s, 1, NULL);
    CHECK_RC(ml_ring_take(r, 0, 1, 0, &t, NULL));
    ml_ring_release(r, t.slot);
    CHECK_RC(ml_ring_take(r, 0, 1, 0, &t, NULL));
    CHECK_ERR(ml_ring_take(r, 0, 1, -1, &t, NULL), -ML_EEND); /* does not block */
    ml_ring_release(r, t.slot);
    CHECK_ERR(ml_ring_take(r, 1, 1, -1, &t, NULL), -ML_EEND);
    ml_ring_unref(r);

    /* An empty stream ends at once on both sides. */
    CHECK_RC(mk(&r, 1, 16, 0));
    CHECK_ERR(ml_ring_claim(r, &s, &seq, &data), -ML_EEND);
    CHECK_ERR(ml_ring_take(r, 1, 1, -1, &t, NULL), -ML_EEND);
    ml_ring_unref(r);
}

/* claim_more takes the free slots with the next block numbers, never
 * waits, stops at the limit and after close, and blocks claimed together
 * are handed out in order whatever order they are published in. */
static void test_claim_more(void) {
    ml_ring *r;
    ml_taken t;
    unsigned s0, slots[8];
    uint64_t seq0, seqs[8];
    void *d0, *datas[8];
    CHECK_RC(mk(&r, 5, 64, 9));
    CHECK_RC(ml_ring_claim(r, &s0, &seq0, &d0));
    CHECK_EQ(seq0, 0);
    CHECK_EQ(ml_ring_claim_more(r, 2, slots, seqs, datas), 2); /* max respected */
    CHECK_EQ(seqs[0], 1);
    CHECK_EQ(seqs[1], 2);
    CHECK_EQ(ml_ring_claim_more(r, 8, slots + 2, seqs + 2, datas + 2), 2); /* only 2 slots left */
    CHECK_EQ(seqs[2], 3);
    CHECK_EQ(seqs[3], 4);
    CHECK_EQ(ml_ring_claim_more(r, 8, slots + 4, seqs + 4, datas + 4), 0); /* none free: no wait */
    unsigned seen = 1u << s0;
    for (int i = 0; i < 4; i++) {
        CHECK(!(seen & (1u << slots[i]))); /* distinct slots */
        seen |= 1u << slots[i];
        CHECK(datas[i] != d0);
    }
    /* Published last to first: an ordered consumer still gets 0, 1, 2, 3, 4. */
    for (int i = 3; i >= 0; i--)
        ml_ring_publish(r, slots[i], 1, NULL);
    ml_ring_publish(r, s0, 1, NULL);
    for (uint64_t k = 0; k < 5; k++) {
        CHECK_RC(ml_ring_take(r, 1, 1, 0, &t, NULL));
        CHECK_EQ(t.seq, k);
        ml_ring_release(r, t.slot);
    }
    /* Four blocks remain (limit 9): claim_more stops at the limit. */
    CHECK_RC(ml_ring_claim(r, &s0, &seq0, &d0));
    CHECK_EQ(seq0, 5);
    CHECK_EQ(ml_ring_claim_more(r, 8, slots, seqs, datas), 3);
    CHECK_EQ(seqs[2], 8);
    CHECK_EQ(ml_ring_claim_more(r, 8, slots + 3, seqs + 3, datas + 3), 0);
    ml_ring_close(r);
    ml_ring_unref(r);

    /* Closed: nothing. */
    CHECK_RC(mk(&r, 4, 64, UINT64_MAX));
    ml_ring_close(r);
    CHECK_EQ(ml_ring_claim_more(r, 4, slots, seqs, datas), 0);
    ml_ring_unref(r);
}

/* close() wakes a producer blocked in claim and consumers blocked in take. */
static void test_close_wakes(void) {
    ml_ring *r;
    unsigned s;
    CHECK_RC(mk(&r, 1, 16, UINT64_MAX));
    claim_ok(r, &s, 0); /* the only slot is LOADING */
    waiter wc = {.r = r}, wt1 = {.r = r, .ordered = 1, .owner = 1},
           wt2 = {.r = r, .ordered = 0, .owner = 2};
    pthread_t tc, t1, t2;
    CHECK_EQ(pthread_create(&tc, NULL, claim_thread, &wc), 0);
    CHECK_EQ(pthread_create(&t1, NULL, take_thread, &wt1), 0);
    CHECK_EQ(pthread_create(&t2, NULL, take_thread, &wt2), 0);
    check_sleep_ms(50);
    CHECK_EQ(atomic_load(&wc.done) + atomic_load(&wt1.done) + atomic_load(&wt2.done), 0);
    ml_ring_close(r);
    CHECK(wait_done(&wc, 5000));
    CHECK(wait_done(&wt1, 5000));
    CHECK(wait_done(&wt2, 5000));
    pthread_join(tc, NULL);
    pthread_join(t1, NULL);
    pthread_join(t2, NULL);
    CHECK_ERR(wc.rc, -ML_ECLOSED);
    CHECK_ERR(wt1.rc, -ML_ECLOSED);
    CHECK_ERR(wt2.rc, -ML_ECLOSED);
    /* Later calls fail at once; close is idempotent; the worker may still
     * publish its block and a consumer may still release. */
    ml_ring_close(r);
    ml_ring_publish(r, s, 1, NULL);
    ml_taken t;
    uint64_t seq;
    void *data;
    CHECK_ERR(ml_ring_take(r, 0, 1, -1, &t, NULL), -ML_ECLOSED);
    CHECK_ERR(ml_ring_claim(r, &s, &seq, &data), -ML_ECLOSED);
    ml_ring_release(r, s);
    ml_ring_unref(r);
}

/* EDEADLOCK when every slot is reserved by the caller, not otherwise. */
static void test_deadlock(void) {
    ml_ring *r;
    ml_taken t1, t2, t;
    unsigned s;
    for (int ordered = 0; ordered <= 1; ordered++) {
        CHECK_RC(mk(&r, 2, 16, 10));
        claim_ok(r, &s, 0);
        ml_ring_publish(r, s, 1, NULL);
        claim_ok(r, &s, 1);
        ml_ring_publish(r, s, 1, NULL);
        CHECK_RC(ml_ring_take(r, ordered, 7, 0, &t1, NULL));
        CHECK_RC(ml_ring_take(r, ordered, 7, 0, &t2, NULL));
        uint64_t t0 = check_now_ms();
        CHECK_ERR(ml_ring_take(r, ordered, 7, 5000, &t, NULL), -ML_EDEADLOCK);
        CHECK_LT(check_now_ms() - t0, 4000); /* at once, not after the timeout */
        CHECK_ERR(ml_ring_take(r, ordered, 7, -1, &t, NULL), -ML_EDEADLOCK);
        /* Another owner would just wait: someone else can release. */
        CHECK_ERR(ml_ring_take(r, ordered, 8, 20, &t, NULL), -ETIMEDOUT);
        /* Slots held by two owners: nobody is told it deadlocked. */
        ml_ring_release(r, t2.slot);
        claim_ok(r, &s, 2);
        ml_ring_publish(r, s, 1, NULL);
        CHECK_RC(ml_ring_take(r, ordered, 8, 0, &t2, NULL));
        CHECK_ERR(ml_ring_take(r, ordered, 7, 20, &t, NULL), -ETIMEDOUT);
        CHECK_ERR(ml_ring_take(r, ordered, 8, 20, &t, NULL), -ETIMEDOUT);
        ml_ring_unref(r);
    }
}

static void test_timeout(void) {
    ml_ring *r;
    ml_taken t;
    uint64_t waited = 0;
    CHECK_RC(mk(&r, 2, 16, 10));
    uint64_t t0 = check_now_ms();
    CHECK_ERR(ml_ring_take(r, 1, 1, 120, &t, &waited), -ETIMEDOUT);
    uint64_t el = check_now_ms() - t0;
    CHECK_GE(el, 110);
    CHECK_GE(waited, 100 * 1000000ull);
    CHECK_ERR(ml_ring_take(r, 0, 1, 0, &t, &waited), -ETIMEDOUT);
    /* 1500 ms exercises the nanosecond carry of the deadline. */
    unsigned s;
    claim_ok(r, &s, 0);
    ml_ring_publish(r, s, 1, NULL);
    CHECK_RC(ml_ring_take(r, 1, 1, 1500, &t, &waited));
    CHECK_U64_EQ(waited, 0); /* no wait: ready at once */
    ml_ring_unref(r);
}

/* A view's reference keeps slot memory alive after the stream dropped its own. */
static void test_refcount(void) {
    ml_ring *r;
    ml_taken t;
    unsigned s;
    uint64_t seq;
    void *data;
    CHECK_RC(mk(&r, 2, 4096, 10));
    CHECK_RC(ml_ring_claim(r, &s, &seq, &data));
    memset(data, 0xab, 4096);
    ml_ring_publish(r, s, 1, NULL);
    CHECK_RC(ml_ring_take(r, 1, 1, 0, &t, NULL));
    ml_ring_ref(r); /* the "view" */
    ml_ring_close(r);
    ml_ring_unref(r); /* the stream's reference */
    /* Still readable and writable (ASan/valgrind would flag a free). */
    unsigned char *p = t.data;
    CHECK_EQ(p[0], 0xab);
    CHECK_EQ(p[4095], 0xab);
    p[17] = 1;
    ml_ring_release(r, t.slot);
    ml_ring_unref(r); /* last: frees */
}

/* ---- stress ------------------------------------------------------------ */

#define STRESS_BLOCKS 3000
#define STRESS_PRODUCERS 3
#define STRESS_CONSUMERS 3

typedef struct stress {
    ml_ring *r;
    int ordered;
    _Atomic unsigned seen[STRESS_BLOCKS];
    _Atomic int bad;
} stress;

typedef struct consumer_arg {
    stress *st;
    uint64_t owner;
} consumer_arg;

static void *producer(void *arg) {
    stress *st = arg;
    unsigned s;
    uint64_t seq;
    void *data;
    while (ml_ring_claim(st->r, &s, &seq, &data) == 0) {
        uint64_t *p = data;
        for (int i = 0; i < 8; i++)
            p[i] = seq * 8 + (uint64_t)i;
        if (seq % 7 == 3)
            sched_yield();
        ml_ring_publish(st->r, s, seq % 5, NULL);
    }
    return NULL;
}

static void *consumer(void *arg) {
    consumer_arg *ca = arg;
    stress *st = ca->st;
    ml_taken t;
    uint64_t last = 0;
    int first = 1;
    int rc;
    while ((rc = ml_ring_take(st->r, st->ordered, ca->owner, 10000, &t, NULL)) == 0) {
        const uint64_t *p = t.data;
        int ok = t.seq < STRESS_BLOCKS && t.rows == t.seq % 5 && t.error.code == 0;
        for (int i = 0; i < 8 && ok; i++)
            ok = p[i] == t.seq * 8 + (uint64_t)i;
        /* In ordered mode each consumer sees increasing block numbers. */
        if (st->ordered && !first && t.seq <= last)
            ok = 0;
        first = 0;
        last = t.seq;
        if (!ok)
            atomic_store(&st->bad, 1);
        else
            atomic_fetch_add(&st->seen[t.seq], 1);
        ml_ring_release(st->r, t.slot);
    }
    if (rc != -ML_EEND)
        atomic_store(&st->bad, 2);
    return NULL;
}

static void test_stress(int ordered) {
    static stress st; /* large: keep it off the stack */
    memset(&st, 0, sizeof st);
    st.ordered = ordered;
    CHECK_RC(mk(&st.r, 3, 64, STRESS_BLOCKS));
    pthread_t pt[STRESS_PRODUCERS], ct[STRESS_CONSUMERS];
    consumer_arg ca[STRESS_CONSUMERS];
    for (int i = 0; i < STRESS_PRODUCERS; i++)
        CHECK_EQ(pthread_create(&pt[i], NULL, producer, &st), 0);
    for (int i = 0; i < STRESS_CONSUMERS; i++) {
        ca[i] = (consumer_arg){.st = &st, .owner = (uint64_t)i + 1};
        CHECK_EQ(pthread_create(&ct[i], NULL, consumer, &ca[i]), 0);
    }
    for (int i = 0; i < STRESS_PRODUCERS; i++)
        pthread_join(pt[i], NULL);
    for (int i = 0; i < STRESS_CONSUMERS; i++)
        pthread_join(ct[i], NULL);
    CHECK_EQ(atomic_load(&st.bad), 0);
    for (int k = 0; k < STRESS_BLOCKS; k++)
        if (atomic_load(&st.seen[k]) != 1)
            FAIL("block %d taken %u times", k, atomic_load(&st.seen[k]));
    ml_ring_unref(st.r);
}

/* ---- ring configuration, owners, attach -------------------------------- */

/* A ring can start at a saved position: block numbers first..limit-1. */
static void test_first(void) {
    for (int b = 0; b <= 1; b++) {
        ml_ring *r;
        ml_taken t;
        unsigned s;
        ml_ring_config cfg = {.n_slots = 2, .slot_bytes = 16, .first = 5, .limit = 7,
                              .backing = (ml_ring_backing)b};
        CHECK_RC(ml_ring_new(&r, &cfg));
        CHECK_U64_EQ(ml_ring_first(r), 5);
        CHECK_U64_EQ(ml_ring_limit(r), 7);
        CHECK_U64_EQ(ml_ring_position(r), 5);
        claim_ok(r, &s, 5);
        ml_ring_publish(r, s, 1, NULL);
        claim_ok(r, &s, 6);
        ml_ring_publish(r, s, 1, NULL);
        CHECK_RC(ml_ring_take(r, 1, 1, 0, &t, NULL));
        CHECK_U64_EQ(t.seq, 5);
        ml_ring_release(r, t.slot);
        CHECK_U64_EQ(ml_ring_position(r), 6);
        CHECK_RC(ml_ring_take(r, 1, 1, 0, &t, NULL));
        CHECK_U64_EQ(t.seq, 6);
        CHECK_ERR(ml_ring_take(r, 1, 1, 0, &t, NULL), -ML_EEND);
        ml_ring_unref(r);
        /* first past limit; an unknown backing */
        cfg.first = 8;
        CHECK_ERR(ml_ring_new(&r, &cfg), -ML_EINVAL);
        cfg.first = 0;
        cfg.backing = (ml_ring_backing)7;
        CHECK_ERR(ml_ring_new(&r, &cfg), -ML_EINVAL);
    }
    /* A private ring has no descriptor; a shared one has. */
    ml_ring *r;
    CHECK_RC(ml_ring_create(&r, 1, 16, 1));
    CHECK_EQ(ml_ring_fd(r), -1);
    CHECK_EQ(ml_ring_backing_of(r), ML_RING_PRIVATE);
    ml_ring_unref(r);
}

static void *owner_thread(void *arg) {
    uint64_t *out = arg;
    out[0] = ml_ring_owner_id();
    out[1] = ml_ring_owner_id();
    return NULL;
}

/* Owner ids: stable per thread, distinct between threads (also after a
 * thread ended), carrying the pid. */
static void test_owner_ids(void) {
    enum { N = 8 };
    uint64_t ids[N][2];
    for (int i = 0; i < N; i++) {
        pthread_t th;
        CHECK_EQ(pthread_create(&th, NULL, owner_thread, ids[i]), 0);
        pthread_join(th, NULL); /* ends before the next starts: idents may be reused, ids not */
        CHECK_U64_EQ(ids[i][0], ids[i][1]);
        CHECK_U64_EQ(ids[i][0] >> 32, (uint64_t)getpid());
        CHECK_NE(ids[i][0], 0);
        for (int j = 0; j < i; j++)
            CHECK(ids[i][0] != ids[j][0]);
    }
    uint64_t me = ml_ring_owner_id();
    CHECK_U64_EQ(me, ml_ring_owner_id());
    for (int i = 0; i < N; i++)
        CHECK(me != ids[i][0]);
}

/* A memfd holding `bytes` copied from `src` (len bytes), sealed or not. */
static int fake_fd(const void *src, size_t len, size_t bytes, int seal) {
    int fd = memfd_create("fake-ring", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    CHECK(fd >= 0);
    CHECK_EQ(ftruncate(fd, (off_t)bytes), 0);
    CHECK_EQ(pwrite(fd, src, len < bytes ? len : bytes, 0), (ssize_t)(len < bytes ? len : bytes));
    if (seal)
        CHECK_EQ(fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW), 0);
    return fd;
}

/* attach checks the header and refuses what is not a ring this build made. */
static void test_attach_refuses(void) {
    ml_ring *r, *a = NULL;
    ml_ring_config cfg = {.n_slots = 3, .slot_bytes = 4096, .limit = 10, .backing = ML_RING_SHARED};
    CHECK_RC(ml_ring_new(&r, &cfg));
    int fd = ml_ring_fd(r);
    CHECK(fd >= 0);
    struct stat st;
    CHECK_EQ(fstat(fd, &st), 0);
    size_t size = (size_t)st.st_size;
    unsigned char *img = malloc(size);
    CHECK(img != NULL);
    CHECK_EQ(pread(fd, img, size, 0), (ssize_t)size);
    /* The genuine ring attaches, and a copy of its bytes too. */
    CHECK_RC(ml_ring_attach(&a, fd));
    CHECK_EQ(ml_ring_n_slots(a), 3);
    CHECK_EQ(ml_ring_slot_bytes(a), 4096);
    CHECK(ml_ring_fd(a) >= 0 && ml_ring_fd(a) != fd); /* its own duplicate */
    ml_ring_unref(a);
    int f = fake_fd(img, size, size, 1);
    CHECK_RC(ml_ring_attach(&a, f));
    ml_ring_unref(a);
    close(f);

    /* Each of these is refused with -ML_EINVAL. */
    CHECK_ERR(ml_ring_attach(&a, -1), -ML_EINVAL);
    f = fake_fd(img, size, size, 0); /* unsealed: could shrink under us */
    CHECK_ERR(ml_ring_attach(&a, f), -ML_EINVAL);
    close(f);
    f = fake_fd(img, size, 64, 1); /* shorter than a header */
    CHECK_ERR(ml_ring_attach(&a, f), -ML_EINVAL);
    close(f);
    f = fake_fd(img, size, size - 4096, 1); /* shorter than its slots */
    CHECK_ERR(ml_ring_attach(&a, f), -ML_EINVAL);
    close(f);
    static const char junk[8192] = "this is not a ring";
    f = fake_fd(junk, sizeof junk, sizeof junk, 1);
    CHECK_ERR(ml_ring_attach(&a, f), -ML_EINVAL);
    close(f);
    /* One header field changed at a time: magic, version, layout sizes,
     * geometry (n_slots 0 and huge, slot_bytes unaligned, offsets, size),
     * first past limit. Offsets from the start of the header: read as the
     * ring lays it out (uint64 magic, uint32 version, hdr_bytes, rec_bytes,
     * n_slots, then uint64 slot_bytes, slots_off, data_off, map_bytes,
     * first, limit). */
    struct { size_t off, len; uint64_t val; } bad[] = {
        {0, 8, 0x1234},                  /* magic */
        {8, 4, 2},                       /* version */
        {12, 4, 8},                      /* hdr_bytes */
        {16, 4, 8},                      /* slot record bytes */
        {20, 4, 0},                      /* n_slots 0 */
        {20, 4, 0xffffffffu},            /* n_slots huge: geometry past the file */
        {20, 4, 4},                      /* n_slots one more: offsets disagree */
        {24, 8, 4097},                   /* slot_bytes unaligned */
        {24, 8, 0},                      /* slot_bytes 0 */
        {24, 8, (uint64_t)1 << 62},      /* slot_bytes huge: overflows */
        {32, 8, 8},                      /* slots_off */
        {40, 8, 4096 * 9},               /* data_off */
        {48, 8, 1},                      /* map_bytes */
        {56, 8, 11},                     /* first > limit (10) */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        unsigned char *c = malloc(size);
        CHECK(c != NULL);
        memcpy(c, img, size);
        memcpy(c + bad[i].off, &bad[i].val, bad[i].len); /* little-endian */
        f = fake_fd(c, size, size, 1);
        int rc = ml_ring_attach(&a, f);
        if (rc != -ML_EINVAL)
            FAIL("header change %zu (offset %zu) was accepted: %d", i, bad[i].off, rc);
        close(f);
        free(c);
    }
    free(img);
    ml_ring_unref(r);
}

int main(void) {
    for (int b = 0; b <= 1; b++) {
        g_backing = (ml_ring_backing)b;
        test_create();
        test_states();
        test_order();
        test_limit();
        test_claim_more();
        test_close_wakes();
        test_deadlock();
        test_timeout();
        test_refcount();
        test_stress(0);
        test_stress(1);
    }
    test_first();
    test_owner_ids();
    test_attach_refuses();
    CHECK_DONE();
}
