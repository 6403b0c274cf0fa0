/* test_file_loader.c - the whole-file loader's region, reads and loader
 * threads: files of random sizes (0 and exactly the limit included) read
 * back byte-exact in both I/O modes and with O_DIRECT, each failure kind
 * on its entry, back-pressure, the deadlock checks, close with requests in
 * flight, a consumer in another process, and a loader process killed with
 * SIGKILL seen by check_server; cancellation in each state (queued,
 * loading, completed), driven by hand so each state is certain. */
#include "check.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "file_loader.h"

#define MAXF (64 * 1024 + 100)

static unsigned char truth[MAXF + 4096];

/* A file of n bytes (pattern from seed) at name; its bytes into out. */
static const char *make_file(const char *name, size_t n, unsigned seed, unsigned char *out) {
    const char *p = check_path(name);
    check_write_pattern(p, n, 2 * seed + 1, seed, out);
    return p;
}

static ml_floader *new_loader(unsigned nw, unsigned depth, uint64_t max) {
    ml_fl_config cfg = {.n_workers = nw, .queue_depth = depth, .max_file_size = max};
    ml_floader *fl = NULL;
    CHECK_RC(ml_floader_new(&fl, &cfg));
    return fl;
}

static void get_one(ml_floader *fl, unsigned w, ml_fl_got *g) { CHECK_RC(ml_floader_get(fl, w, 10000, 0, g)); }

/* Many files of random sizes through 2 workers and 2 threads, checked byte for byte. */
static void roundtrip(ml_io_mode mode, int direct) {
    enum { N = 300, DEPTH = 8 };
    static size_t sizes[N];
    uint64_t rs = 42 + mode * 7 + direct;
    for (unsigned i = 0; i < N; i++) {
        sizes[i] = i == 0 ? 0 : i == 1 ? MAXF : check_rand(&rs) % (MAXF + 1);
        char name[32];
        snprintf(name, sizeof name, "f%u", i);
        make_file(name, sizes[i], i, NULL);
    }
    ml_floader *fl = new_loader(2, DEPTH, MAXF);
    ml_fserve *s = NULL;
    ml_fserve_config sc = {.n_threads = 2, .batch = 4, .direct = direct, .mode = mode};
    CHECK_RC(ml_fserve_start(&s, fl, &sc));
    if (mode == ML_IO_PREAD)
        CHECK_EQ(ml_fserve_mode(s), ML_IO_PREAD);
    unsigned next[2] = {0, 1}, got_n = 0; /* worker w requests files w, w+2, ... */
    static unsigned char buf[MAXF + 4096];
    while (got_n < N) {
        for (unsigned w = 0; w < 2; w++) {
            unsigned e;
            while (next[w] < N) {
                char name[32];
                snprintf(name, sizeof name, "f%u", next[w]);
                const char *p = check_path(name);
                int rc = ml_floader_request(fl, w, p, strlen(p), 0, 0, &e, NULL);
                if (rc == -EAGAIN)
                    break;
                CHECK_RC(rc);
                next[w] += 2;
            }
            ml_fl_got g;
            int rc = ml_floader_get(fl, w, 10000, 1, &g);
            if (rc == -ML_EDEADLOCK)
                continue; /* nothing outstanding on w: it is done */
            CHECK_RC(rc);
            CHECK_EQ(g.error.code, 0);
            char path[ML_FL_PATH_BYTES];
            CHECK_GT(ml_floader_entry_path(fl, w, g.entry, path, sizeof path), 0);
            unsigned idx = (unsigned)atoi(strrchr(path, '/') + 2);
            CHECK_LT(idx, N);
            CHECK_U64_EQ(g.size, sizes[idx]);
            check_write_pattern(check_path("scratch"), sizes[idx], 2 * idx + 1, idx, buf);
            CHECK_MEM_EQ(g.data, buf, sizes[idx]);
            ml_floader_release(fl, w, g.entry);
            ml_floader_release(fl, w, g.entry); /* twice: a no-op */
            got_n++;
        }
    }
    ml_fl_stats st;
    ml_floader_stats(fl, &st);
    CHECK_U64_EQ(st.completed, N);
    CHECK_U64_EQ(st.failed, 0);
    CHECK_EQ(st.in_flight + st.ready + st.unreleased, 0);
    CHECK_EQ(st.serving, 1);
    ml_fserve_stop(s);
    ml_floader_stats(fl, &st);
    CHECK_EQ(st.serving, 0);
    ml_floader_unref(fl);
}

/* Request p on worker 0 and return its error code (entry released). */
static int fails_with(ml_floader *fl, const char *p, size_t len, char *msg, size_t cap) {
    unsigned e;
    ml_fl_got g;
    CHECK_RC(ml_floader_request(fl, 0, p, len, 0, 0, &e, NULL));
    get_one(fl, 0, &g);
    CHECK_EQ(g.entry, e);
    if (msg)
        snprintf(msg, cap, "%s", g.error.msg);
    ml_floader_release(fl, 0, g.entry);
    return g.error.code;
}

static void failures(void) {
    ml_floader *fl = new_loader(1, 4, 4096);
    ml_fserve *s = NULL;
    ml_fserve_config sc = {.n_threads = 1, .batch = 4, .mode = ML_IO_AUTO};
    CHECK_RC(ml_fserve_start(&s, fl, &sc));
    char msg[ML_ERROR_MSG_MAX];
    const char *missing = check_path("no-such-file");
    CHECK_EQ(fails_with(fl, missing, strlen(missing), msg, sizeof msg), -ENOENT);
    CHECK(strstr(msg, "no-such-file") != NULL);
    CHECK_EQ(fails_with(fl, check_tmpdir(), strlen(check_tmpdir()), NULL, 0), -EISDIR);
    const char *big = make_file("big", 5000, 3, NULL);
    CHECK_EQ(fails_with(fl, big, strlen(big), msg, sizeof msg), -EFBIG);
    CHECK(strstr(msg, "5000") != NULL && strstr(msg, "4096") != NULL);
    const char *fifo = check_path("fifo");
    CHECK_EQ(mkfifo(fifo, 0600), 0);
    CHECK_EQ(fails_with(fl, fifo, strlen(fifo), NULL, 0), -EINVAL); /* never blocks in open */
    static char longp[ML_FL_PATH_BYTES + 10];
    memset(longp, 'a', sizeof longp - 1);
    longp[0] = '/';
    CHECK_EQ(fails_with(fl, longp, strlen(longp), NULL, 0), -ENAMETOOLONG);
    /* exactly the limit, and a shorter file, still read */
    const char *edge = make_file("edge", 4096, 5, truth);
    unsigned e;
    ml_fl_got g;
    CHECK_RC(ml_floader_request(fl, 0, edge, strlen(edge), 0, 0, &e, NULL));
    get_one(fl, 0, &g);
    CHECK_EQ(g.error.code, 0);
    CHECK_U64_EQ(g.size, 4096);
    CHECK_MEM_EQ(g.data, truth, 4096);
    ml_floader_release(fl, 0, g.entry);
    ml_fserve_stop(s);
    ml_floader_unref(fl);
}

/* Back-pressure and the waits that could never end. No server: entries stay queued. */
static void backpressure(void) {
    ml_floader *fl = new_loader(1, 2, 4096);
    const char *p = make_file("bp", 10, 1, NULL);
    unsigned e;
    ml_fl_got g;
    CHECK_ERR(ml_floader_get(fl, 0, 1000, 1, &g), -ML_EDEADLOCK); /* nothing requested */
    CHECK_RC(ml_floader_request(fl, 0, p, strlen(p), 0, 0, &e, NULL));
    CHECK_RC(ml_floader_request(fl, 0, p, strlen(p), 0, 0, &e, NULL));
    CHECK_ERR(ml_floader_request(fl, 0, p, strlen(p), 0, 0, &e, NULL), -EAGAIN);
    uint64_t t0 = check_now_ms();
    CHECK_ERR(ml_floader_request(fl, 0, p, strlen(p), 50, 0, &e, NULL), -ETIMEDOUT);
    CHECK_ERR(ml_floader_get(fl, 0, 50, 1, &g), -ETIMEDOUT);
    CHECK_LT(check_now_ms() - t0, 5000);
    ml_error err;
    ml_error_clear(&err);
    CHECK_EQ(ml_floader_check_server(fl, 10, 1000, &err), 0);
    CHECK_EQ(ml_floader_check_server(fl, 2000, 1000, &err), -ENOTCONN);
    CHECK_ERR(ml_floader_get(fl, 5, 0, 1, &g), -ML_EINVAL);
    /* Serve now: both complete; taking both leaves every entry with us. */
    ml_fserve *s = NULL;
    ml_fserve_config sc = {.n_threads = 1, .batch = 2, .mode = ML_IO_AUTO};
    CHECK_RC(ml_fserve_start(&s, fl, &sc));
    ml_fserve *s2 = NULL;
    CHECK_ERR(ml_fserve_start(&s2, fl, &sc), -EBUSY);
    ml_fl_got g2;
    get_one(fl, 0, &g);
    get_one(fl, 0, &g2);
    CHECK_ERR(ml_floader_request(fl, 0, p, strlen(p), -1, 1, &e, NULL), -ML_EDEADLOCK);
    ml_floader_release(fl, 0, g.entry);
    CHECK_RC(ml_floader_request(fl, 0, p, strlen(p), -1, 1, &e, NULL));
    ml_fl_stats st;
    ml_floader_stats(fl, &st);
    CHECK_EQ(st.unreleased, 1);
    ml_floader_close(fl);
    CHECK_ERR(ml_floader_get(fl, 0, -1, 1, &g), -ML_ECLOSED);
    CHECK_ERR(ml_floader_request(fl, 0, p, strlen(p), 0, 0, &e, NULL), -ML_ECLOSED);
    ml_fserve_stop(s);
    ml_floader_unref(fl);
}

/* Close with many requests in flight, from another thread while a consumer waits. */
static void *closer(void *arg) {
    check_sleep_ms(30);
    ml_floader_close(arg);
    return NULL;
}

static void close_in_flight(void) {
    ml_floader *fl = new_loader(1, 64, MAXF);
    const char *p = make_file("cf", MAXF, 9, NULL);
    ml_fserve *s = NULL;
    ml_fserve_config sc = {.n_threads = 2, .batch = 8, .mode = ML_IO_AUTO};
    CHECK_RC(ml_fserve_start(&s, fl, &sc));
    unsigned e;
    for (int i = 0; i < 64; i++)
        CHECK_RC(ml_floader_request(fl, 0, p, strlen(p), 0, 0, &e, NULL));
    pthread_t t;
    CHECK_EQ(pthread_create(&t, NULL, closer, fl), 0);
    ml_fl_got g;
    int rc;
    /* Keep every entry busy: take, release, request again, until close. */
    while ((rc = ml_floader_get(fl, 0, 10000, 1, &g)) == 0) {
        ml_floader_release(fl, 0, g.entry);
        if ((rc = ml_floader_request(fl, 0, p, strlen(p), 0, 0, &e, NULL)) < 0)
            break;
    }
    CHECK_ERR(rc, -ML_ECLOSED);
    pthread_join(t, NULL);
    ml_fserve_stop(s); /* returns: threads finished their batch and left */
    ml_floader_unref(fl);
}

/* A consumer process attached by fd, and a loader process killed. */
static void processes(void) {
    ml_floader *fl = new_loader(2, 4, MAXF);
    const char *p = make_file("proc", 1234, 4, truth);
    pid_t loader = fork();
    if (loader == 0) {
        ml_floader *mine = NULL;
        if (ml_floader_attach(&mine, ml_floader_fd(fl)) < 0)
            _exit(3);
        ml_fserve *s = NULL;
        ml_fserve_config sc = {.n_threads = 1, .batch = 4, .mode = ML_IO_AUTO};
        if (ml_fserve_start(&s, mine, &sc) < 0)
            _exit(4);
        while (!ml_floader_wait_event(mine, 1000))
            ;
        ml_fserve_stop(s);
        ml_floader_unref(mine);
        _exit(0);
    }
    CHECK_GT(loader, 0);
    ml_fl_stats st;
    uint64_t t0 = check_now_ms();
    do {
        ml_floader_wait_event(fl, 100);
        ml_floader_stats(fl, &st);
    } while (!st.serving && check_now_ms() - t0 < 10000);
    CHECK_EQ(st.serving, 1);
    CHECK_EQ(st.server_pid, loader);
    unsigned e;
    ml_fl_got g;
    CHECK_RC(ml_floader_request(fl, 1, p, strlen(p), 0, 0, &e, NULL));
    get_one(fl, 1, &g);
    CHECK_EQ(g.error.code, 0);
    CHECK_U64_EQ(g.size, 1234);
    CHECK_MEM_EQ(g.data, truth, 1234);
    ml_floader_release(fl, 1, g.entry);
    ml_error err;
    ml_error_clear(&err);
    CHECK_EQ(ml_floader_check_server(fl, 100000, 10, &err), 0);
    kill(loader, SIGKILL);
    int status;
    CHECK_EQ(waitpid(loader, &status, 0), loader);
    CHECK_EQ(ml_floader_check_server(fl, 0, 1000, &err), -EOWNERDEAD);
    CHECK(strstr(err.msg, "died") != NULL);
    ml_fserve *s = NULL;
    ml_fserve_config sc = {.n_threads = 1, .batch = 4, .mode = ML_IO_AUTO};
    CHECK_ERR(ml_fserve_start(&s, fl, &sc), -EOWNERDEAD);
    /* attach refuses what is not a region */
    ml_floader *bad = NULL;
    int fd = memfd_create("x", MFD_ALLOW_SEALING);
    CHECK_GE(fd, 0);
    CHECK_EQ(ftruncate(fd, 65536), 0);
    CHECK_ERR(ml_floader_attach(&bad, fd), -ML_EINVAL); /* unsealed */
    CHECK_EQ(fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK), 0);
    CHECK_ERR(ml_floader_attach(&bad, fd), -ML_EINVAL); /* zeros, no magic */
    close(fd);
    ml_floader_unref(fl);
}

/* Cancellation, with this thread as the loader (take_work / complete by
 * hand), so every request is in the state the check says. */
static void cancellation(void) {
    ml_floader *fl = new_loader(1, 3, 4096);
    const char *p = make_file("cx", 100, 3, NULL);
    unsigned e0, e1, e2, e, idx[4];
    uint64_t s0, s1, s2, s;
    int stop = 0;
    ml_fl_got g;
    ml_fl_stats st;
    /* Queued: freed at once, never handed to a loader. */
    CHECK_RC(ml_floader_submit(fl, 0, p, strlen(p), 0, 0, &e0, &s0));
    CHECK_RC(ml_floader_submit(fl, 0, p, strlen(p), 0, 0, &e1, &s1));
    CHECK_RC(ml_floader_request(fl, 0, p, strlen(p), 0, 0, &e2, &s2));
    CHECK_ERR(ml_floader_request(fl, 0, p, strlen(p), 0, 0, &e, &s), -EAGAIN); /* full */
    CHECK_EQ(ml_floader_status(fl, 0, e0, s0), ML_FL_ST_QUEUED);
    CHECK_EQ(ml_floader_cancel(fl, 0, e0, s0), ML_FL_ST_QUEUED);
    CHECK_EQ(ml_floader_cancel(fl, 0, e0, s0), ML_FL_ST_CANCELLED); /* twice: nothing changes */
    CHECK_EQ(ml_floader_status(fl, 0, e0, s0), ML_FL_ST_CANCELLED);
    CHECK_ERR(ml_floader_take(fl, 0, e0, s0, 0, &g), -ECANCELED);
    ml_floader_stats(fl, &st);
    CHECK_EQ(st.cancelled, 1);
    CHECK_EQ(st.in_flight, 2);
    /* Its entry is free: a new request takes it (back-pressure counts it free). */
    CHECK_RC(ml_floader_submit(fl, 0, p, strlen(p), 0, 0, &e, &s));
    CHECK_EQ(e, e0);
    CHECK_EQ(ml_floader_status(fl, 0, e0, s0), ML_FL_ST_GONE); /* the old request is not the new one */
    CHECK_EQ(ml_floader_cancel(fl, 0, e0, s0), ML_FL_ST_GONE);
    CHECK_EQ(ml_floader_status(fl, 0, e, s), ML_FL_ST_QUEUED);
    /* The loader sees e1, e2 and the new e, in request order; never the cancelled one. */
    CHECK_EQ(ml_floader_take_work(fl, 4, 1, &stop, idx), 3);
    CHECK_EQ(idx[0], e1);
    CHECK_EQ(idx[1], e2);
    CHECK_EQ(idx[2], e);
    /* Running: abandoned; the read completes, then the core frees the entry. */
    CHECK_EQ(ml_floader_cancel(fl, 0, e1, s1), ML_FL_ST_RUNNING);
    CHECK_EQ(ml_floader_status(fl, 0, e1, s1), ML_FL_ST_CANCELLED);
    CHECK_ERR(ml_floader_take(fl, 0, e1, s1, 0, &g), -ECANCELED);
    ml_floader_stats(fl, &st);
    CHECK_EQ(st.abandoning, 1);
    CHECK_EQ(st.in_flight, 2);
    CHECK_ERR(ml_floader_request(fl, 0, p, strlen(p), 0, 0, &e0, NULL), -EAGAIN); /* its slot is the loader's */
    ml_floader_complete(fl, e1, 7, NULL, 0);
    ml_floader_complete(fl, e2, 8, NULL, 0);
    ml_floader_complete(fl, e, 9, NULL, 0);
    ml_floader_stats(fl, &st);
    CHECK_EQ(st.abandoned, 1);
    CHECK_EQ(st.abandoning, 0);
    CHECK_EQ(st.ready, 2);
    /* get returns the unbound request only: the bound one waits for its take. */
    CHECK_RC(ml_floader_get(fl, 0, 0, 0, &g));
    CHECK_EQ(g.entry, e2);
    CHECK_EQ(g.size, 8);
    CHECK_ERR(ml_floader_get(fl, 0, 0, 0, &g), -EAGAIN);
    ml_floader_release(fl, 0, e2);
    /* Completed, not taken: freed at once. */
    CHECK_EQ(ml_floader_status(fl, 0, e, s), ML_FL_ST_DONE);
    CHECK_EQ(ml_floader_cancel(fl, 0, e, s), ML_FL_ST_DONE);
    CHECK_ERR(ml_floader_take(fl, 0, e, s, 0, &g), -ECANCELED);
    ml_floader_stats(fl, &st);
    CHECK_EQ(st.abandoned, 2);
    CHECK_EQ(st.ready, 0);
    CHECK_EQ(st.in_flight, 0);
    /* All three entries free again; a request() completed then cancelled
     * leaves the done FIFO, so get never returns it. */
    CHECK_RC(ml_floader_request(fl, 0, p, strlen(p), 0, 0, &e0, &s0));
    CHECK_RC(ml_floader_submit(fl, 0, p, strlen(p), 0, 0, &e1, &s1));
    CHECK_RC(ml_floader_request(fl, 0, p, strlen(p), 0, 0, &e2, &s2));
    CHECK_EQ(ml_floader_take_work(fl, 4, 1, &stop, idx), 3);
    ml_floader_complete(fl, e0, 1, NULL, 0);
    ml_floader_complete(fl, e1, 2, NULL, 0);
    ml_floader_complete(fl, e2, 3, NULL, 0);
    CHECK_EQ(ml_floader_cancel(fl, 0, e0, s0), ML_FL_ST_DONE);
    CHECK_RC(ml_floader_take(fl, 0, e1, s1, 0, &g));
    CHECK_EQ(g.size, 2);
    CHECK_EQ(ml_floader_cancel(fl, 0, e1, s1), ML_FL_ST_TAKEN); /* handed out: never touched */
    CHECK_RC(ml_floader_get(fl, 0, 0, 0, &g));
    CHECK_EQ(g.entry, e2);
    CHECK_ERR(ml_floader_get(fl, 0, 0, 0, &g), -EAGAIN);
    ml_floader_release(fl, 0, e1);
    ml_floader_release(fl, 0, e2);
    /* cancel_pending: every queued request of the worker. */
    CHECK_RC(ml_floader_request(fl, 0, p, strlen(p), 0, 0, &e0, &s0));
    CHECK_RC(ml_floader_submit(fl, 0, p, strlen(p), 0, 0, &e1, &s1));
    CHECK_EQ(ml_floader_cancel_pending(fl, 0), 2);
    CHECK_EQ(ml_floader_status(fl, 0, e1, s1), ML_FL_ST_CANCELLED);
    ml_floader_stats(fl, &st);
    CHECK_EQ(st.cancelled, 3);
    CHECK_EQ(st.in_flight, 0);
    CHECK_ERR(ml_floader_get(fl, 0, 0, 1, &g), -EAGAIN);
    CHECK_ERR(ml_floader_get(fl, 0, 100, 1, &g), -ML_EDEADLOCK); /* nothing left to wait for */
    CHECK_EQ(ml_floader_cancel(fl, 0, 99, 0), -ML_EINVAL);
    ml_floader_close(fl);
    ml_floader_unref(fl);
}

int main(void) {
    cancellation();
    roundtrip(ML_IO_URING, 0);
    roundtrip(ML_IO_PREAD, 0);
    roundtrip(ML_IO_AUTO, 1);
    failures();
    backpressure();
    close_in_flight();
    processes();
    CHECK_DONE();
}
