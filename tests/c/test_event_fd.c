/* test_event_fd.c - the event fds asyncio waits on: a ring's (written once
 * per arming by the next publish, and by close armed or not; never when
 * unarmed) and a reader's (an armed request's completion puts its tag on
 * the popped list and writes the fd once for a burst; cancel and stop
 * complete armed requests too; arming a finished request reports it at
 * once; shutdown writes it). */
#include "check.h"

#include <poll.h>
#include <unistd.h>

#include "h5gen.h"
#include "h5.h"
#include "reader.h"
#include "ring.h"

#define ROWS 4096
#define COLS 4

/* 1 if fd is readable now (drains it), else 0. */
static int fired(int fd) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, 0) != 1)
        return 0;
    uint64_t v;
    CHECK_EQ(read(fd, &v, sizeof v), (ssize_t)sizeof v);
    return 1;
}

/* 1 once fd becomes readable within timeout_ms (drains it). */
static int fires_within(int fd, int timeout_ms) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, timeout_ms) != 1)
        return 0;
    return fired(fd);
}

static void test_ring(ml_ring_backing backing) {
    ml_ring *r;
    ml_ring_config cfg = {.n_slots = 4, .slot_bytes = 4096, .limit = 10, .backing = backing};
    CHECK_RC(ml_ring_new(&r, &cfg));
    int fd = ml_ring_event_fd(r);
    CHECK_GE(fd, 0);
    CHECK_EQ(ml_ring_event_fd(r), fd); /* made once */
    unsigned slot;
    uint64_t seq;
    void *data;
    CHECK_RC(ml_ring_claim(r, &slot, &seq, &data));
    ml_ring_publish(r, slot, 1, NULL);
    CHECK_EQ(fired(fd), 0); /* nobody armed it: no write */
    ml_taken t;
    CHECK_RC(ml_ring_take(r, 1, ml_ring_owner_id(), 0, &t, NULL));
    ml_ring_release(r, t.slot);
    CHECK_ERR(ml_ring_take(r, 1, ml_ring_owner_id(), 0, &t, NULL), -ETIMEDOUT);
    ml_ring_arm(r);
    CHECK_RC(ml_ring_claim(r, &slot, &seq, &data));
    ml_ring_publish(r, slot, 1, NULL);
    CHECK_EQ(fired(fd), 1); /* armed: the publish wrote it */
    CHECK_RC(ml_ring_claim(r, &slot, &seq, &data));
    ml_ring_publish(r, slot, 1, NULL);
    CHECK_EQ(fired(fd), 0); /* one write per arming */
    ml_ring_close(r);
    CHECK_EQ(fired(fd), 1); /* a close writes it, armed or not */
    ml_ring_unref(r);
}

static void test_reader(const char *file) {
    ml_error err;
    ml_layout *L;
    CHECK_RC(ml_layout_open(file, "/contig", &L, &err));
    ml_reader *r;
    ml_reader_config cfg = {.n_workers = 1, .io_mode = ML_IO_PREAD};
    CHECK_RC(ml_reader_open(&r, &cfg, &err));
    int fd = ml_reader_event_fd(r);
    CHECK_GE(fd, 0);
    static int32_t dest[64][ROWS / 64 * COLS];
    ml_request *q[64];
    for (int i = 0; i < 64; i++) {
        ml_request_spec s = {.L = L, .row0 = (uint64_t)i * (ROWS / 64), .n_rows = ROWS / 64, .dest = dest[i],
                             .dest_bytes = sizeof dest[i], .tag = 100 + (uint64_t)i};
        CHECK_RC(ml_request_submit(r, &s, &q[i], &err));
    }
    for (int i = 0; i < 64; i += 2) /* half of them armed */
        ml_reader_arm(r, q[i]);
    for (int i = 0; i < 64; i++)
        CHECK_RC(ml_request_wait(q[i], 10000));
    CHECK_EQ(fires_within(fd, 10000), 1);
    uint64_t tags[64], seen = 0;
    size_t n, total = 0;
    while ((n = ml_reader_pop_armed(r, tags, 64)) > 0) {
        for (size_t k = 0; k < n; k++) {
            CHECK_GE(tags[k], 100);
            CHECK_EQ((tags[k] - 100) % 2, 0); /* only armed ones */
            seen |= 1ull << (tags[k] - 100);
        }
        total += n;
    }
    CHECK_EQ(total, 32);
    CHECK_U64_EQ(seen, 0x5555555555555555ull);
    CHECK_EQ(fired(fd), 0); /* one write for the burst (drained above) */
    ml_reader_arm(r, q[1]); /* done already: reported at once */
    CHECK_EQ(fired(fd), 1);
    CHECK_EQ(ml_reader_pop_armed(r, tags, 64), 1);
    CHECK_U64_EQ(tags[0], 101);
    CHECK_EQ(ml_reader_pop_armed(r, tags, 64), 0);
    for (int i = 0; i < 64; i++)
        ml_request_free(q[i]);
    /* An armed request that is dropped before it is popped is freed with the reader. */
    ml_request_spec s = {.L = L, .row0 = 0, .n_rows = 1, .dest = dest[0], .dest_bytes = sizeof dest[0], .tag = 7};
    ml_request *last;
    CHECK_RC(ml_request_submit(r, &s, &last, &err));
    ml_reader_arm(r, last);
    CHECK_RC(ml_request_wait(last, 10000));
    ml_request_free(last);
    ml_reader_shutdown(r, 0);
    CHECK_EQ(fires_within(fd, 10000), 1); /* shutdown writes it */
    ml_reader_free(r);
    ml_layout_unref(L);
}

int main(void) {
    test_ring(ML_RING_PRIVATE);
    test_ring(ML_RING_SHARED);
    const char *file = check_path("event_fd.h5");
    static int32_t truth[ROWS * COLS];
    for (size_t i = 0; i < ROWS * COLS; i++)
        truth[i] = (int32_t)i;
    h5spec contig = {.path = "/contig", .type = H5T_NATIVE_INT32, .ndim = 2, .dims = {ROWS, COLS}};
    hid_t fid = h5gen_create(file);
    h5gen_dataset(fid, &contig, truth);
    H5Fclose(fid);
    test_reader(file);
    CHECK_DONE();
}
