/* target_util.h - what the coverage-guided parser targets (fuzz/index,
 * fuzz/gheap) share: reading a little-endian field of an input, and
 * aborting with the broken promise named, so the engine saves the input.
 * Header-only. */
#ifndef FUZZ_TARGET_UTIL_H
#define FUZZ_TARGET_UTIL_H

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* Little-endian unsigned integer of n <= 8 bytes. */
static inline uint64_t fuzz_le(const uint8_t *p, unsigned n) {
    uint64_t v = 0;
    for (unsigned i = n; i-- > 0;)
        v = v << 8 | p[i];
    return v;
}

/* A promise of the parser's header does not hold: say which (as
 * "TARGET: invariant broken: ..."), then abort. */
__attribute__((format(printf, 2, 3), noreturn)) static inline void fuzz_broken(const char *target, const char *fmt,
                                                                                ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: invariant broken: ", target);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    abort();
}

#endif
