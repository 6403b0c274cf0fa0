/* test_io.c - the POSIX source (io.c): ml_io_read in both modes (io_uring
 * and pread) on a temp file: batches larger than the queue depth, offsets,
 * end of file, bad descriptors; the synchronous and cached-only reads,
 * identity and the direct variant; and fault injection through MULTILOAD_FAULTS: eio@N,
 * short@N (the data must still arrive intact), eagain@N (retried) and
 * probabilistic eio~p/seed. The io_uring half is skipped, with a message,
 * where io_uring cannot be set up. */
#include "check.h"
#include "faults.h"

#include <fcntl.h>
#include <liburing.h>
#include <sys/stat.h>

#include "fault.h"
#include "io.h"
#include "ring.h"

#define FILE_BYTES (1u << 20)

static unsigned char expect_byte(uint64_t off) { return (unsigned char)((off * 131u) ^ (off >> 9)); }

static int make_file(const char *path) {
    unsigned char *buf = malloc(FILE_BYTES);
    for (uint64_t i = 0; i < FILE_BYTES; i++)
        buf[i] = expect_byte(i);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    CHECK_GE(fd, 0);
    CHECK_EQ(write(fd, buf, FILE_BYTES), FILE_BYTES);
    free(buf);
    return fd;
}

static void check_bytes(const ml_io_req *r, size_t n) {
    const unsigned char *b = r->buf;
    for (size_t i = 0; i < n; i++)
        if (b[i] != expect_byte(r->offset + i))
            FAIL("byte %zu of a read at offset %llu: %02x, want %02x", i,
                 (unsigned long long)r->offset, b[i], expect_byte(r->offset + i));
}

/* One read of len bytes at off; returns ml_io_read's code. */
static int read_one(ml_io *io, uint64_t off, size_t len, unsigned char *buf, ml_io_req *r) {
    *r = (ml_io_req){.offset = off, .len = len, .buf = buf};
    return ml_io_read(io, r, 1);
}

static void test_reads(ml_io *io, ml_io_mode mode) {
    /* A batch of 100 (depth is 8) at scattered offsets and odd lengths. */
    enum { N = 100 };
    ml_io_req reqs[N];
    unsigned char *bufs = malloc((size_t)N * 5000);
    uint64_t seed = 7;
    for (int i = 0; i < N; i++) {
        size_t len = 1 + check_rand(&seed) % 4999;
        uint64_t off = check_rand(&seed) % (FILE_BYTES - len);
        reqs[i] = (ml_io_req){.offset = off, .len = len, .buf = bufs + (size_t)i * 5000,
                              .result = -12345};
    }
    reqs[3].len = 0; /* an empty read is fine */
    CHECK_RC(ml_io_read(io, reqs, N));
    for (int i = 0; i < N; i++) {
        CHECK_EQ(reqs[i].result, (ssize_t)reqs[i].len);
        check_bytes(&reqs[i], reqs[i].len);
    }
    free(bufs);

    /* The whole file in one request. */
    ml_io_req r;
    unsigned char *all = malloc(FILE_BYTES);
    CHECK_RC(read_one(io, 0, FILE_BYTES, all, &r));
    CHECK_EQ(r.result, FILE_BYTES);
    check_bytes(&r, FILE_BYTES);

    /* End of file: the bytes before it arrive, the call says truncated. */
    CHECK_ERR(read_one(io, FILE_BYTES - 10, 100, all, &r), -ML_ETRUNC);
    CHECK_EQ(r.result, 10);
    check_bytes(&r, 10);
    CHECK_ERR(read_one(io, FILE_BYTES + 4096, 100, all, &r), -ML_ETRUNC);
    CHECK_EQ(r.result, 0);

    /* A read past the end fails alone; the others in the batch complete. */
    ml_io_req mix[3] = {
        {.offset = 100, .len = 50, .buf = all},
        {.offset = FILE_BYTES + 1, .len = 50, .buf = all + 100},
        {.offset = 300, .len = 50, .buf = all + 200},
    };
    CHECK_ERR(ml_io_read(io, mix, 3), -ML_ETRUNC);
    CHECK_EQ(mix[0].result, 50);
    CHECK_EQ(mix[1].result, 0);
    CHECK_EQ(mix[2].result, 50);
    check_bytes(&mix[0], 50);
    check_bytes(&mix[2], 50);

    /* A bad descriptor fails every request of its source. */
    ml_source *bad = NULL;
    ml_io *bio = NULL;
    CHECK_RC(ml_source_posix_adopt(1000000, &bad));
    CHECK_RC(ml_io_open(&bio, bad, 8, mode));
    ml_source_unref(bad); /* the context holds its own reference */
    mix[1].offset = 0;
    CHECK_ERR(ml_io_read(bio, mix, 3), -EBADF);
    for (int i = 0; i < 3; i++)
        CHECK_EQ(mix[i].result, -EBADF);
    CHECK_ERR(read_one(bio, 0, 10, all, &r), -EBADF);
    ml_io_close(bio);
    free(all);
}

static void test_faults(ml_io *io) {
    enum { N = 5 };
    ml_io_req reqs[N], r;
    static unsigned char buf[N * 4096];

    /* eio@3: exactly one request fails with EIO; the rest are intact. */
    set_faults("eio@3");
    for (int i = 0; i < N; i++)
        reqs[i] = (ml_io_req){.offset = (uint64_t)i * 10000, .len = 4096,
                              .buf = buf + i * 4096};
    CHECK_ERR(ml_io_read(io, reqs, N), -EIO);
    int failed = 0;
    for (int i = 0; i < N; i++) {
        if (reqs[i].result == -EIO) {
            failed++;
            continue;
        }
        CHECK_EQ(reqs[i].result, 4096);
        check_bytes(&reqs[i], 4096);
    }
    CHECK_EQ(failed, 1);
    /* Only the 3rd transfer: the next batch is clean. */
    CHECK_RC(ml_io_read(io, reqs, N));

    /* short@1: the read continues where it stopped; data intact. */
    set_faults("short@1");
    memset(buf, 0, sizeof buf);
    CHECK_RC(read_one(io, 12345, 4096, buf, &r));
    CHECK_EQ(r.result, 4096);
    check_bytes(&r, 4096);
    /* Proof that it was resubmitted: the 2nd transfer is its continuation. */
    set_faults("short@1,eio@2");
    CHECK_ERR(read_one(io, 12345, 4096, buf, &r), -EIO);
    /* Every transfer short: progress by halves down to single bytes. */
    set_faults("short~1.0/3");
    memset(buf, 0, sizeof buf);
    CHECK_RC(read_one(io, 777, 3000, buf, &r));
    CHECK_EQ(r.result, 3000);
    check_bytes(&r, 3000);
    for (int i = 0; i < N; i++)
        reqs[i].result = 0;
    memset(buf, 0, sizeof buf);
    CHECK_RC(ml_io_read(io, reqs, N));
    for (int i = 0; i < N; i++)
        check_bytes(&reqs[i], 4096);

    /* eagain@1 and @2: retried, the caller never sees it. */
    set_faults("eagain@1,eagain@2");
    memset(buf, 0, sizeof buf);
    CHECK_RC(read_one(io, 5, 4096, buf, &r));
    check_bytes(&r, 4096);

    /* eio~0.3/seed: about 30% of reads fail, the same ones for the same seed. */
    enum { M = 200 };
    char pattern[2][M];
    for (int run = 0; run < 2; run++) {
        set_faults("eio~0.3/11");
        int fails = 0;
        for (int i = 0; i < M; i++) {
            memset(buf, 0, 512);
            int rc = read_one(io, (uint64_t)i * 512, 512, buf, &r);
            pattern[run][i] = rc < 0;
            if (rc < 0) {
                CHECK_ERR(rc, -EIO);
                CHECK_EQ(r.result, -EIO);
                fails++;
            } else {
                check_bytes(&r, 512);
            }
        }
        CHECK_GT(fails, M / 10);
        CHECK_LT(fails, M / 2);
    }
    CHECK_MEM_EQ(pattern[0], pattern[1], M);

    /* enomem@1: the first checked allocation fails, the next succeeds. */
    set_faults("enomem@1");
    ml_ring *ring = NULL;
    CHECK_ERR(ml_ring_create(&ring, 2, 64, 4), -ENOMEM);
    CHECK_RC(ml_ring_create(&ring, 2, 64, 4));
    ml_ring_unref(ring);
    /* A read is not an allocation: enomem rules leave reads alone. */
    CHECK_RC(read_one(io, 0, 100, buf, &r));

    /* Junk rules are ignored. */
    set_faults("bogus@1,eio,eio@");
    CHECK_RC(read_one(io, 0, 100, buf, &r));
    set_faults(NULL);
    CHECK_RC(read_one(io, 0, 100, buf, &r));
}

/* The source's own calls: one read on the calling thread (resumed, the
 * end reported), cached-only reads, identity, the direct variant. */
static void test_source(ml_source *src, int fd) {
    unsigned char buf[8192];
    ml_io_req r = {.offset = 4000, .len = 5000, .buf = buf};
    CHECK_RC(ml_source_read(src, &r));
    CHECK_EQ(r.result, 5000);
    check_bytes(&r, 5000);
    r = (ml_io_req){.offset = FILE_BYTES - 7, .len = 100, .buf = buf};
    CHECK_ERR(ml_source_read(src, &r), -ML_ETRUNC);
    CHECK_EQ(r.result, 7);
    check_bytes(&r, 7);
    /* Just written: in the page cache, so a cached-only read gets it all. */
    r = (ml_io_req){.offset = 123, .len = 4096, .buf = buf, .nowait = 1};
    int rc = ml_source_read(src, &r);
    if (rc == 0)
        check_bytes(&r, 4096);
    else
        CHECK(rc == -EAGAIN || rc == -EOPNOTSUPP); /* a kernel without RWF_NOWAIT on this fs */

    ml_source_id id;
    struct stat st;
    CHECK_RC(ml_source_identify(src, &id));
    CHECK_RC(fstat(fd, &st));
    CHECK_EQ(id.dev, (uint64_t)st.st_dev);
    CHECK_EQ(id.ino, (uint64_t)st.st_ino);
    CHECK_EQ(id.size, FILE_BYTES);
    CHECK_EQ(id.mtime_ns, (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec);
    CHECK_EQ(ml_source_posix_fd(src), fd);
    CHECK_EQ(src->align, 1);

    /* Another open of the same file is the same source; a copy is not. */
    ml_source *again = NULL, *other = NULL;
    CHECK_RC(ml_source_posix_adopt(open(check_path("data.bin"), O_RDONLY | O_CLOEXEC), &again));
    CHECK(ml_source_same(src, again));
    int ofd = make_file(check_path("copy.bin"));
    CHECK_RC(ml_source_posix_adopt(ofd, &other));
    CHECK(!ml_source_same(src, other));
    CHECK(ml_source_same(other, ml_source_ref(other)));
    ml_source_unref(other);
    ml_source_unref(other);
    ml_source_unref(again);
    ml_source_unref(NULL);

    /* The direct variant: the same bytes, aligned reads (tmpfs refuses O_DIRECT). */
    ml_source *d = NULL;
    rc = ml_source_direct(src, &d);
    if (rc == -EINVAL) {
        printf("O_DIRECT not supported here: direct variant skipped\n");
        return;
    }
    CHECK_RC(rc);
    CHECK_EQ(d->align, 4096);
    CHECK(ml_source_same(src, d));
    ml_io *dio = NULL;
    CHECK_RC(ml_io_open(&dio, d, 4, ML_IO_AUTO));
    CHECK(ml_io_source(dio) == d);
    void *abuf = NULL;
    CHECK_EQ(posix_memalign(&abuf, 4096, 8192), 0);
    ml_io_req dr = {.offset = 8192, .len = 8192, .buf = abuf, .no_resume = 1};
    CHECK_RC(ml_io_read(dio, &dr, 1));
    check_bytes(&dr, 8192);
    free(abuf);
    ml_io_close(dio);
    ml_source_unref(d);
}

static void run_mode(ml_io_mode mode, ml_source *src) {
    ml_io *io = NULL;
    CHECK_RC(ml_io_open(&io, src, 8, mode));
    CHECK_EQ(ml_io_get_mode(io), mode);
    CHECK(ml_io_source(io) == src);
    test_reads(io, mode);
    test_faults(io);
    ml_io_close(io);
}

int main(void) {
    unsetenv("MULTILOAD_IO");
    set_faults(NULL);
    int fd = make_file(check_path("data.bin"));
    ml_source *src = NULL;
    CHECK_RC(ml_source_posix_adopt(fd, &src));
    ml_io_close(NULL);
    test_source(src, fd);

    run_mode(ML_IO_PREAD, src);
    printf("pread: ok\n");

    struct io_uring probe;
    int e = io_uring_queue_init(4, &probe, 0);
    if (e < 0) {
        ml_source_unref(src);
        SKIP("io_uring unavailable (io_uring_queue_init: %s); pread mode passed", strerror(-e));
    }
    io_uring_queue_exit(&probe);
    CHECK_EQ(ml_io_default_mode(), ML_IO_URING);
    run_mode(ML_IO_URING, src);
    printf("io_uring: ok\n");

    /* MULTILOAD_IO overrides the automatic choice. */
    setenv("MULTILOAD_IO", "pread", 1);
    ml_io *io;
    CHECK_RC(ml_io_open(&io, src, 4, ML_IO_AUTO));
    CHECK_EQ(ml_io_get_mode(io), ML_IO_PREAD);
    ml_io_close(io);
    unsetenv("MULTILOAD_IO");
    ml_source_unref(src); /* closes fd */
    CHECK_DONE();
}
