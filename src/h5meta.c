/* h5meta.c - bounded reads of HDF5 metadata for the core's own parsers
 * (h5meta.h), and HDF5's metadata checksum.
 *
 * Invariants: a read lies inside [0, f->end) once f->base is added, or it
 * is not made (-ML_ECORRUPT, the reason in f->why); an address of all ones
 * is undefined and never read. No state beyond the ml_meta_file the
 * caller owns.
 *
 * Workload: tens of small reads per dataset open, from the page cache.
 */
#define _GNU_SOURCE
#include "h5meta.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int ml_meta_bad(const ml_meta_file *f, const char *fmt, ...) {
    if (f->why && !f->why[0]) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(f->why, ML_META_WHY_MAX, fmt, ap);
        va_end(ap);
    }
    return -ML_ECORRUPT;
}

uint64_t ml_meta_le(const unsigned char *p, unsigned n) {
    uint64_t v = 0;
    for (unsigned i = n; i-- > 0;)
        v = v << 8 | p[i];
    return v;
}

uint64_t ml_meta_addr(const unsigned char *p, unsigned n) {
    uint64_t v = ml_meta_le(p, n);
    return (n < 8 && v == (UINT64_C(1) << (8 * n)) - 1) ? ML_META_UNDEF : v;
}

int ml_meta_inside(const ml_meta_file *f, uint64_t addr, uint64_t len) {
    return addr != ML_META_UNDEF && addr <= UINT64_MAX - f->base && f->base + addr <= f->end &&
           len <= f->end - (f->base + addr);
}

int ml_meta_read(const ml_meta_file *f, uint64_t addr, void *buf, size_t len, const char *what) {
    if (addr == ML_META_UNDEF)
        return ml_meta_bad(f, "the %s has an undefined address", what);
    if (!ml_meta_inside(f, addr, len))
        return ml_meta_bad(f, "the %s (%zu bytes at address %llu) lies past the end of the file", what, len,
                           (unsigned long long)addr);
    ml_io_req r = {.offset = f->base + addr, .len = len, .buf = buf};
    int rc = ml_source_read(f->src, &r);
    if (rc == -ML_ETRUNC)
        return ml_meta_bad(f, "the file shrank while its %s was read", what);
    return rc < 0 ? rc : 0;
}

int ml_meta_claim(const ml_meta_file *f, uint64_t addr, uint64_t len, const char *what) {
    ml_meta_extents *x = f->ext;
    if (!x || len == 0)
        return 0;
    for (unsigned i = 0; i < x->n; i++) {
        if (x->at[i] == addr && x->len[i] == len)
            return 0;
        if (addr < x->at[i] + x->len[i] && x->at[i] < addr + len)
            return ml_meta_bad(f, "the %s at address %llu (%llu bytes) overlaps another structure at address %llu",
                               what, (unsigned long long)addr, (unsigned long long)len,
                               (unsigned long long)x->at[i]);
    }
    if (x->n < ML_META_MAX_EXTENTS) {
        x->at[x->n] = addr;
        x->len[x->n] = len;
        x->n++;
    }
    return 0;
}

/* Bob Jenkins' lookup3 (hashlittle, byte by byte), as HDF5 checksums
 * its metadata. */
#define ROT(x, k) (((x) << (k)) | ((x) >> (32 - (k))))
uint32_t ml_meta_checksum(const void *key, size_t n) {
    const unsigned char *k = key;
    uint32_t a, b, c;
    a = b = c = 0xdeadbeefu + (uint32_t)n;
    while (n > 12) {
        a += k[0] + ((uint32_t)k[1] << 8) + ((uint32_t)k[2] << 16) + ((uint32_t)k[3] << 24);
        b += k[4] + ((uint32_t)k[5] << 8) + ((uint32_t)k[6] << 16) + ((uint32_t)k[7] << 24);
        c += k[8] + ((uint32_t)k[9] << 8) + ((uint32_t)k[10] << 16) + ((uint32_t)k[11] << 24);
        a -= c; a ^= ROT(c, 4); c += b;
        b -= a; b ^= ROT(a, 6); a += c;
        c -= b; c ^= ROT(b, 8); b += a;
        a -= c; a ^= ROT(c, 16); c += b;
        b -= a; b ^= ROT(a, 19); a += c;
        c -= b; c ^= ROT(b, 4); b += a;
        n -= 12;
        k += 12;
    }
    switch (n) {
    case 12: c += (uint32_t)k[11] << 24; /* fall through */
    case 11: c += (uint32_t)k[10] << 16; /* fall through */
    case 10: c += (uint32_t)k[9] << 8; /* fall through */
    case 9: c += k[8]; /* fall through */
    case 8: b += (uint32_t)k[7] << 24; /* fall through */
    case 7: b += (uint32_t)k[6] << 16; /* fall through */
    case 6: b += (uint32_t)k[5] << 8; /* fall through */
    case 5: b += k[4]; /* fall through */
    case 4: a += (uint32_t)k[3] << 24; /* fall through */
    case 3: a += (uint32_t)k[2] << 16; /* fall through */
    case 2: a += (uint32_t)k[1] << 8; /* fall through */
    case 1: a += k[0]; break;
    case 0: return c;
    }
    c ^= b; c -= ROT(b, 14);
    a ^= c; a -= ROT(c, 11);
    b ^= a; b -= ROT(a, 25);
    c ^= b; c -= ROT(b, 16);
    a ^= c; a -= ROT(c, 4);
    b ^= a; b -= ROT(a, 14);
    c ^= b; c -= ROT(b, 24);
    return c;
}
