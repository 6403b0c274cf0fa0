/* test_ring_shared.c - a shared ring between two processes. The parent
 * creates the ring (memfd) and forks before any thread exists; the child
 * maps it with ml_ring_attach. One fills (claim, known bytes, publish), the
 * other takes, checks the bytes and releases, in both directions and in
 * ordered and unordered mode; the filler waits for the other process's
 * releases (two slots carry 300 blocks); reservations and the deadlock
 * report are per owner across processes; close in one process wakes a
 * waiter in the other; attach refuses a bad header in the child; and a
 * child killed (SIGKILL) while it works the ring never leaves the parent
 * hanging on the lock (robust mutex) or on a wake-up (futex waits). Every
 * wait is bounded: children by a timeout per call and alarm(), the parent
 * by alarm() and a bounded waitpid. */
#include "check.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "ring.h"

#define WAIT_MS 10000 /* per take in a child: a hang fails instead of stalling */
#define SLOT 8192

/* ---- processes ---------------------------------------------------------- */

/* Wait (bounded) for child pid; returns its exit code, or 100 + signal. */
static int wait_child(pid_t pid) {
    uint64_t end = check_now_ms() + 30000;
    int st;
    for (;;) {
        pid_t w = waitpid(pid, &st, WNOHANG);
        if (w == pid)
            break;
        if (w < 0)
            FAIL("waitpid: %s", strerror(errno));
        if (check_now_ms() > end) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            FAIL("child %d did not finish in 30 s", (int)pid);
        }
        check_sleep_ms(2);
    }
    if (WIFEXITED(st))
        return WEXITSTATUS(st);
    return 100 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
}

/* Run fn(fd, arg) in a child that exits with its return value. */
static pid_t spawn(int (*fn)(int fd, void *arg), int fd, void *arg) {
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        alarm(60);
        _exit(fn(fd, arg));
    }
    return pid;
}

static ml_ring *shared_ring(unsigned n_slots, uint64_t limit) {
    ml_ring *r;
    ml_ring_config cfg = {.n_slots = n_slots, .slot_bytes = SLOT, .limit = limit,
                          .backing = ML_RING_SHARED};
    CHECK_RC(ml_ring_new(&r, &cfg));
    CHECK(ml_ring_fd(r) >= 0);
    return r;
}

/* Pipes carry one byte per step between the two processes. */
static void send_byte(int fd, char c) { CHECK_EQ(write(fd, &c, 1), 1); }
static char recv_byte(int fd) {
    char c = 0;
    CHECK_EQ(read(fd, &c, 1), 1);
    return c;
}

/* ---- the block pattern ---------------------------------------------------- */

static void fill(unsigned char *p, uint64_t k) {
    for (size_t j = 0; j < SLOT; j++)
        p[j] = (unsigned char)(k * 31 + j * 7 + (j >> 8));
}

static int pattern_ok(const unsigned char *p, uint64_t k) {
    for (size_t j = 0; j < SLOT; j++)
        if (p[j] != (unsigned char)(k * 31 + j * 7 + (j >> 8)))
            return 0;
    return 1;
}

static void produce(ml_ring *r, uint64_t n) {
    for (uint64_t i = 0; i < n; i++) {
        unsigned s;
        uint64_t k;
        void *data;
        CHECK_RC(ml_ring_claim(r, &s, &k, &data));
        CHECK_U64_EQ(k, i);
        fill(data, k);
        ml_ring_publish(r, s, k % 13 + 1, NULL);
    }
}

/* Take n blocks, check each, release; then the end. Returns 0 or a step. */
static int consume(ml_ring *r, uint64_t n, int ordered) {
    static unsigned char seen[1000];
    memset(seen, 0, sizeof seen);
    uint64_t owner = ml_ring_owner_id();
    for (uint64_t i = 0; i < n; i++) {
        ml_taken t;
        if (ml_ring_take(r, ordered, owner, WAIT_MS, &t, NULL) != 0)
            return 2;
        if ((ordered && t.seq != i) || t.seq >= n || seen[t.seq]++ || t.rows != t.seq % 13 + 1 ||
            t.error.code || !pattern_ok(t.data, t.seq))
            return 3;
        ml_ring_release(r, t.slot);
    }
    ml_taken t;
    return ml_ring_take(r, ordered, owner, WAIT_MS, &t, NULL) == -ML_EEND ? 0 : 4;
}

/* ---- 1. one process fills, the other takes -------------------------------- */

#define N_BLOCKS 300

static int child_consume(int fd, void *arg) {
    ml_ring *r;
    if (ml_ring_attach(&r, fd) != 0)
        return 1;
    int rc = consume(r, N_BLOCKS, *(int *)arg);
    ml_ring_unref(r);
    return rc;
}

static int child_produce(int fd, void *arg) {
    (void)arg;
    ml_ring *r;
    if (ml_ring_attach(&r, fd) != 0)
        return 1;
    produce(r, N_BLOCKS);
    ml_ring_unref(r);
    return 0;
}

static void test_fill_take(void) {
    for (int ordered = 0; ordered <= 1; ordered++) {
        /* Parent fills, child takes: two slots, so the parent must wait
         * for the child's releases 298 times. */
        ml_ring *r = shared_ring(2, N_BLOCKS);
        pid_t pid = spawn(child_consume, ml_ring_fd(r), &ordered);
        produce(r, N_BLOCKS);
        CHECK_EQ(wait_child(pid), 0);
        ml_ring_unref(r);
        /* Child fills, parent takes. */
        r = shared_ring(3, N_BLOCKS);
        pid = spawn(child_produce, ml_ring_fd(r), NULL);
        CHECK_EQ(consume(r, N_BLOCKS, ordered), 0);
        CHECK_EQ(wait_child(pid), 0);
        ml_ring_unref(r);
    }
}

/* ---- 2. reservations across processes ------------------------------------- */

static int g_to_child[2], g_to_parent[2];

static int child_reserve(int fd, void *arg) {
    (void)arg;
    ml_ring *r;
    if (ml_ring_attach(&r, fd) != 0)
        return 1;
    uint64_t owner = ml_ring_owner_id();
    ml_taken a, b, t;
    if (ml_ring_take(r, 1, owner, WAIT_MS, &a, NULL) || ml_ring_take(r, 1, owner, WAIT_MS, &b, NULL))
        return 2;
    /* Both slots are this process's: asking for more is a deadlock here. */
    if (ml_ring_take(r, 1, owner, WAIT_MS, &t, NULL) != -ML_EDEADLOCK)
        return 3;
    if (write(g_to_parent[1], &owner, sizeof owner) != sizeof owner)
        return 4;
    char c;
    if (read(g_to_child[0], &c, 1) != 1) /* the parent now waits in claim */
        return 5;
    check_sleep_ms(30);
    ml_ring_release(r, a.slot);
    ml_ring_unref(r);
    return 0;
}

static void test_reservations(void) {
    CHECK_EQ(pipe(g_to_child), 0);
    CHECK_EQ(pipe(g_to_parent), 0);
    ml_ring *r = shared_ring(2, 10);
    produce(r, 2);
    uint64_t mine = ml_ring_owner_id();
    pid_t pid = spawn(child_reserve, ml_ring_fd(r), NULL);
    uint64_t theirs = 0;
    CHECK_EQ(read(g_to_parent[0], &theirs, sizeof theirs), (ssize_t)sizeof theirs);
    CHECK(theirs != mine);
    CHECK_U64_EQ(theirs >> 32, (uint64_t)pid);
    /* The slots are the other process's: this owner waits, it is not told
     * it deadlocked (someone else can release). */
    ml_taken t;
    CHECK_ERR(ml_ring_take(r, 1, mine, 50, &t, NULL), -ETIMEDOUT);
    /* The filler waits for the other process's release. */
    send_byte(g_to_child[1], 'r');
    unsigned s;
    uint64_t k;
    void *data;
    uint64_t t0 = check_now_ms();
    CHECK_RC(ml_ring_claim(r, &s, &k, &data));
    CHECK_GE(check_now_ms() - t0, 10); /* it did wait (the child sleeps 30 ms first) */
    CHECK_U64_EQ(k, 2);
    CHECK_EQ(wait_child(pid), 0);
    ml_ring_unref(r);
    close(g_to_child[0]);
    close(g_to_child[1]);
    close(g_to_parent[0]);
    close(g_to_parent[1]);
}

/* ---- 3. close wakes the other process ------------------------------------- */

static int child_wait_take(int fd, void *arg) {
    (void)arg;
    ml_ring *r;
    if (ml_ring_attach(&r, fd) != 0)
        return 1;
    ml_taken t;
    send_byte(g_to_parent[1], 'w');
    int rc = ml_ring_take(r, 1, ml_ring_owner_id(), -1, &t, NULL); /* only close can end it */
    ml_ring_unref(r);
    return rc == -ML_ECLOSED ? 0 : 2;
}

static int child_close(int fd, void *arg) {
    (void)arg;
    ml_ring *r;
    if (ml_ring_attach(&r, fd) != 0)
        return 1;
    check_sleep_ms(50);
    ml_ring_close(r);
    ml_ring_unref(r);
    return 0;
}

static void test_close_wakes(void) {
    CHECK_EQ(pipe(g_to_parent), 0);
    /* A consumer in the child, woken by the parent's close. */
    ml_ring *r = shared_ring(2, UINT64_MAX);
    pid_t pid = spawn(child_wait_take, ml_ring_fd(r), NULL);
    recv_byte(g_to_parent[0]);
    check_sleep_ms(50);
    ml_ring_close(r);
    CHECK_EQ(wait_child(pid), 0);
    ml_ring_unref(r);
    /* A producer in the parent (ring full), woken by the child's close. */
    r = shared_ring(1, UINT64_MAX);
    unsigned s;
    uint64_t k;
    void *data;
    CHECK_RC(ml_ring_claim(r, &s, &k, &data));
    pid = spawn(child_close, ml_ring_fd(r), NULL);
    CHECK_ERR(ml_ring_claim(r, &s, &k, &data), -ML_ECLOSED);
    CHECK_EQ(wait_child(pid), 0);
    ml_ring_unref(r);
    close(g_to_parent[0]);
    close(g_to_parent[1]);
}

/* ---- 4. attach in another process checks the header ----------------------- */

static int child_attach_bad(int fd, void *arg) {
    int junk = *(int *)arg;
    ml_ring *r;
    if (ml_ring_attach(&r, junk) != -ML_EINVAL)
        return 2;
    if (ml_ring_attach(&r, fd) != 0)
        return 3;
    ml_ring_unref(r);
    return 0;
}

static void test_bad_header(void) {
    ml_ring *r = shared_ring(2, 4);
    /* The ring's own bytes with the version changed: sealed and sized like a ring. */
    struct stat st;
    CHECK_EQ(fstat(ml_ring_fd(r), &st), 0);
    unsigned char *img = malloc((size_t)st.st_size);
    CHECK(img != NULL);
    CHECK_EQ(pread(ml_ring_fd(r), img, (size_t)st.st_size, 0), (ssize_t)st.st_size);
    uint32_t v = 77;
    memcpy(img + 8, &v, sizeof v);
    int junk = memfd_create("bad-ring", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    CHECK(junk >= 0);
    CHECK_EQ(pwrite(junk, img, (size_t)st.st_size, 0), (ssize_t)st.st_size);
    CHECK_EQ(fcntl(junk, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW), 0);
    pid_t pid = spawn(child_attach_bad, ml_ring_fd(r), &junk);
    CHECK_EQ(wait_child(pid), 0);
    close(junk);
    free(img);
    ml_ring_unref(r);
}

/* ---- 5. a process killed while it works the ring -------------------------- */

static int child_hammer(int fd, void *arg) {
    (void)arg;
    ml_ring *r;
    if (ml_ring_attach(&r, fd) != 0)
        return 1;
    uint64_t owner = ml_ring_owner_id();
    send_byte(g_to_parent[1], 'h');
    for (;;) { /* until killed */
        unsigned s;
        uint64_t k;
        void *data;
        ml_taken t;
        if (ml_ring_claim(r, &s, &k, &data) == 0)
            ml_ring_publish(r, s, 1, NULL);
        if (ml_ring_take(r, 0, owner, 0, &t, NULL) == 0)
            ml_ring_release(r, t.slot);
    }
}

static void test_killed_peer(void) {
    CHECK_EQ(pipe(g_to_parent), 0);
    for (unsigned round = 0; round < 20; round++) {
        ml_ring *r = shared_ring(4, UINT64_MAX);
        pid_t pid = spawn(child_hammer, ml_ring_fd(r), NULL);
        recv_byte(g_to_parent[0]);
        check_sleep_ms(1 + round % 7);
        kill(pid, SIGKILL);
        CHECK_EQ(wait_child(pid), 100 + SIGKILL);
        /* The dead process may have held the lock, or slept in a wait: the
         * ring still works here (alarm() fails a hang). It may have left
         * one slot LOADING or RESERVED; three are free or ready. */
        uint64_t owner = ml_ring_owner_id();
        for (int i = 0; i < 6; i++) {
            unsigned s;
            uint64_t k;
            void *data;
            ml_taken t;
            CHECK_RC(ml_ring_claim(r, &s, &k, &data));
            ml_ring_publish(r, s, 1, NULL);
            CHECK_RC(ml_ring_take(r, 0, owner, WAIT_MS, &t, NULL));
            ml_ring_release(r, t.slot);
        }
        ml_ring_close(r);
        ml_ring_unref(r);
    }
    close(g_to_parent[0]);
    close(g_to_parent[1]);
}

int main(void) {
    alarm(120); /* a hang in the parent fails the test */
    test_fill_take();
    test_reservations();
    test_close_wakes();
    test_bad_header();
    test_killed_peer();
    CHECK_DONE();
}
