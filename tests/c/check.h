/* check.h - the C unit tests' assertion macros and helpers.
 *
 * Each test is one program: exit 0 = pass, 1 = fail, 77 = skip (liburing's
 * test/helpers.h, automake's convention). A failed check prints both
 * operands, the expression, file and line (libuv's test/task.h), then
 * exits 1 at once: later checks usually depend on earlier ones.
 *
 *   CHECK(cond)              CHECK_EQ(a, b)  CHECK_NE(a, b)
 *   CHECK_LT(a, b) ...       CHECK_RC(expr)  (expr must return 0; prints ml_strerror)
 *   CHECK_MEM_EQ(a, b, n)    SKIP("why")     FAIL("why %d", x)
 *   check_tmpdir()           a fresh directory, removed at exit
 *   check_path("name")       a file path inside it (static buffer per call)
 *   check_write_pattern(...) a file of patterned bytes (and the bytes)
 */
#ifndef ML_CHECK_H
#define ML_CHECK_H

#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "error.h"

#define CHECK_PASS 0
#define CHECK_FAIL 1
#define CHECK_SKIP 77

#define FAIL(...)                                                                 \
    do {                                                                          \
        fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                      \
        fprintf(stderr, __VA_ARGS__);                                             \
        fputc('\n', stderr);                                                      \
        exit(CHECK_FAIL);                                                         \
    } while (0)

#define SKIP(...)                                                                 \
    do {                                                                          \
        printf("SKIP: ");                                                         \
        printf(__VA_ARGS__);                                                      \
        putchar('\n');                                                            \
        fflush(stdout);                                                           \
        exit(CHECK_SKIP);                                                         \
    } while (0)

#define CHECK(cond)                                                               \
    do {                                                                          \
        if (!(cond))                                                              \
            FAIL("CHECK(%s) is false", #cond);                                    \
    } while (0)

/* Integer comparisons; both operands are evaluated once and printed. */
#define CHECK_OP_(a, op, b)                                                       \
    do {                                                                          \
        long long ca_ = (long long)(a), cb_ = (long long)(b);                     \
        if (!(ca_ op cb_))                                                        \
            FAIL("CHECK(%s %s %s): %lld %s %lld is false", #a, #op, #b, ca_, #op, \
                 cb_);                                                            \
    } while (0)

#define CHECK_EQ(a, b) CHECK_OP_(a, ==, b)
#define CHECK_NE(a, b) CHECK_OP_(a, !=, b)
#define CHECK_LT(a, b) CHECK_OP_(a, <, b)
#define CHECK_LE(a, b) CHECK_OP_(a, <=, b)
#define CHECK_GT(a, b) CHECK_OP_(a, >, b)
#define CHECK_GE(a, b) CHECK_OP_(a, >=, b)

/* Unsigned 64-bit equality (values above LLONG_MAX print correctly). */
#define CHECK_U64_EQ(a, b)                                                        \
    do {                                                                          \
        uint64_t ca_ = (uint64_t)(a), cb_ = (uint64_t)(b);                        \
        if (ca_ != cb_)                                                           \
            FAIL("CHECK(%s == %s): %" PRIu64 " != %" PRIu64, #a, #b, ca_, cb_);   \
    } while (0)

/* A core call that must succeed: prints the code and its message. */
#define CHECK_RC(expr)                                                            \
    do {                                                                          \
        int crc_ = (expr);                                                        \
        if (crc_ != 0)                                                            \
            FAIL("%s returned %d (%s)", #expr, crc_, ml_strerror(crc_));          \
    } while (0)

/* A core call that must fail with `want` (a negative code). */
#define CHECK_ERR(expr, want)                                                     \
    do {                                                                          \
        int crc_ = (expr), cw_ = (want);                                          \
        if (crc_ != cw_)                                                          \
            FAIL("%s returned %d (%s), want %d (%s)", #expr, crc_,                \
                 ml_strerror(crc_), cw_, ml_strerror(cw_));                       \
    } while (0)

#define CHECK_MEM_EQ(a, b, n)                                                     \
    do {                                                                          \
        const unsigned char *cma_ = (const void *)(a), *cmb_ = (const void *)(b); \
        size_t cn_ = (n);                                                         \
        for (size_t ci_ = 0; ci_ < cn_; ci_++)                                    \
            if (cma_[ci_] != cmb_[ci_])                                           \
                FAIL("%s and %s differ at byte %zu of %zu: 0x%02x != 0x%02x", #a,  \
                     #b, ci_, cn_, cma_[ci_], cmb_[ci_]);                         \
    } while (0)

/* ---- temp directory ---------------------------------------------------- */

static char check_dir_[256];

static void check_rmdir_(void) {
    if (!check_dir_[0])
        return;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", check_dir_);
    if (system(cmd) != 0)
        fprintf(stderr, "warning: could not remove %s\n", check_dir_);
}

/* A fresh directory under $TMPDIR (or /tmp), removed when the program
 * exits normally. Returns the same path on every call. */
static inline const char *check_tmpdir(void) {
    if (check_dir_[0])
        return check_dir_;
    const char *base = getenv("TMPDIR");
    snprintf(check_dir_, sizeof check_dir_, "%s/ml-ctest-XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(check_dir_))
        FAIL("mkdtemp(%s): %s", check_dir_, strerror(errno));
    atexit(check_rmdir_);
    return check_dir_;
}

/* check_tmpdir()/name in one of a few rotating static buffers. */
static inline const char *check_path(const char *name) {
    static char bufs[8][320];
    static unsigned next;
    char *b = bufs[next++ % 8];
    snprintf(b, sizeof bufs[0], "%s/%s", check_tmpdir(), name);
    return b;
}

/* Write n bytes of the pattern (i * mul + add) & 0xff to path (made or
 * replaced) and, when out is not NULL, into out[0..n). */
static inline void check_write_pattern(const char *path, size_t n, unsigned mul, unsigned add, unsigned char *out) {
    FILE *f = fopen(path, "wb");
    if (!f)
        FAIL("fopen(%s): %s", path, strerror(errno));
    for (size_t i = 0; i < n; i++) {
        unsigned char b = (unsigned char)(i * mul + add);
        if (out)
            out[i] = b;
        if (fputc(b, f) == EOF)
            FAIL("write %s: %s", path, strerror(errno));
    }
    if (fclose(f) != 0)
        FAIL("close %s: %s", path, strerror(errno));
}

/* ---- small utilities ---------------------------------------------------- */

static inline uint64_t check_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static inline void check_sleep_ms(unsigned ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* Deterministic pseudo-random numbers (xorshift64*), for reproducible data. */
static inline uint64_t check_rand(uint64_t *state) {
    uint64_t x = *state ? *state : 0x9E3779B97F4A7C15ull;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545F4914F6CDD1Dull;
}

/* Each test file calls this at the end of main. */
#define CHECK_DONE()                                                              \
    do {                                                                          \
        printf("ok %s\n", __FILE__);                                              \
        return CHECK_PASS;                                                        \
    } while (0)

#endif
