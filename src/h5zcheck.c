/* h5zcheck.c - the parameters of HDF5's own n-bit and scale-offset filters
 * checked before the slow path's H5Dread decodes with them.
 *
 * HDF5 computes these filters' client values itself, when the dataset is
 * created (their set_local callbacks), from the dataset's datatype and
 * chunk, and stores them in the filter pipeline message. On read, 1.10.8
 * trusts them: a damaged count, size or "nothing to compress" flag makes
 * it read past its own buffers (fuzz seed 7 cases 330, 2970, 4590, 4851:
 * H5Z_pipeline, H5VM_memcpyvv). So each value HDF5 derived is derived
 * again here, from the type HDF5 opened, and must be what the file holds;
 * the values the user chose (scale-offset's scale type and factor) must
 * be ones the filter handles. Then, per chunk, the bytes the filter will
 * decode must be at least what it reads (ml_h5z_chunk_check).
 *
 * Invariants:
 *  - The expected n-bit list is built by the rules of HDF5's set_local:
 *    [count, no-compress flag, elements per chunk], then the datatype's
 *    parameters (atomic: class, size, order, precision, offset; array:
 *    class, size, base; compound: class, size, members, each offset then
 *    type; anything else: class, size). Recursion is bounded by
 *    NBIT_MAX_DEPTH and the list by NBIT_MAX_VALUES; a type past either
 *    is refused (HDF5 writes no such list either: its message holds at
 *    most 65535 values, and our types nest far less).
 *  - The no-compress flag may be 0 where HDF5 would write 1 (the filter
 *    then decodes full-precision values, correctly); where it is 1, the
 *    filter hands the stored bytes on untouched, so each chunk must store
 *    at least a whole chunk (checked per chunk).
 *  - Per-chunk checks apply only where the filter is the first one the
 *    read undoes (the last in the pipeline that the chunk's mask does not
 *    skip): there the stored bytes are what it reads. Behind another
 *    filter (deflate, then n-bit) its input is only known after HDF5
 *    decoded it, and stays trusted to HDF5.
 *  - Every HDF5 call here runs with the HDF5 lock held by the caller.
 *
 * Workload: once per filter at open (a few H5T calls per type member);
 * per slow-path chunk at most one 21-byte read.
 */
#define _GNU_SOURCE
#include "h5zcheck.h"

#include "h5internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define NBIT_MAX_DEPTH 16     /* array/compound nesting followed */
#define NBIT_MAX_VALUES 4096  /* values in the expected list */
#define NBIT_ATOMIC 1
#define NBIT_ARRAY 2
#define NBIT_COMPOUND 3
#define NBIT_NOOP 4
#define SO_NPARMS 20          /* scale-offset's fixed value count */
#define SO_HEADER 21          /* bytes before a scale-offset chunk's packed values */
#define SO_INT 2              /* scale type: integer */

/* The growing expected list and the bits one element packs into. */
typedef struct nbit_list {
    unsigned v[NBIT_MAX_VALUES];
    size_t n;
    uint64_t bits;            /* bits the filter reads per element */
    int need_not_compress;    /* HDF5's flag as set_local computes it */
    const char *why;          /* why the type has no list */
} nbit_list;

static int put(nbit_list *l, uint64_t v) {
    if (l->n == NBIT_MAX_VALUES || v > UINT32_MAX) {
        l->why = "its datatype needs more n-bit parameters than HDF5 stores";
        return -1;
    }
    l->v[l->n++] = (unsigned)v;
    return 0;
}

static int nbit_type(hid_t t, nbit_list *l, unsigned depth, uint64_t *bits);

/* An integer or float: class, size, order, precision, offset. */
static int nbit_atomic(hid_t t, nbit_list *l, uint64_t *bits) {
    size_t size = H5Tget_size(t), prec = H5Tget_precision(t);
    int off = H5Tget_offset(t);
    H5T_order_t order = H5Tget_order(t);
    if (size == 0 || prec == 0 || off < 0 || (order != H5T_ORDER_LE && order != H5T_ORDER_BE) ||
        prec > size * 8 || prec + (size_t)off > size * 8) {
        l->why = "its datatype's size, precision, offset or byte order is invalid for n-bit";
        return -1;
    }
    if ((size_t)off != 0 || prec != size * 8)
        l->need_not_compress = 0;
    *bits = prec;
    return put(l, NBIT_ATOMIC) || put(l, size) || put(l, order == H5T_ORDER_BE) || put(l, prec) ||
                   put(l, (unsigned)off)
               ? -1
               : 0;
}

/* Any other class: class, size; the filter copies its bytes. */
static int nbit_noop(hid_t t, nbit_list *l, uint64_t *bits) {
    size_t size = H5Tget_size(t);
    if (size == 0) {
        l->why = "a member of its datatype has size 0";
        return -1;
    }
    *bits = (uint64_t)size * 8;
    return put(l, NBIT_NOOP) || put(l, size) ? -1 : 0;
}

static int nbit_array(hid_t t, nbit_list *l, unsigned depth, uint64_t *bits) {
    size_t size = H5Tget_size(t);
    hid_t base = H5Tget_super(t);
    size_t bsize = base < 0 ? 0 : H5Tget_size(base);
    uint64_t b = 0;
    int rc = -1;
    if (base < 0 || size == 0 || bsize == 0 || size % bsize != 0)
        l->why = "its array datatype's size is not a multiple of its base type's";
    else if (put(l, NBIT_ARRAY) == 0 && put(l, size) == 0 && nbit_type(base, l, depth + 1, &b) == 0)
        rc = ml_mul_ok(b, size / bsize, bits) ? 0 : -1;
    if (base >= 0)
        H5Tclose(base);
    return rc;
}

static int nbit_compound(hid_t t, nbit_list *l, unsigned depth, uint64_t *bits) {
    size_t size = H5Tget_size(t);
    int nm = H5Tget_nmembers(t);
    if (size == 0 || nm < 0 || put(l, NBIT_COMPOUND) || put(l, size) || put(l, (unsigned)nm))
        return -1;
    *bits = 0;
    for (int i = 0; i < nm; i++) {
        hid_t m = H5Tget_member_type(t, (unsigned)i);
        size_t off = H5Tget_member_offset(t, (unsigned)i);
        uint64_t b = 0;
        int rc = m < 0 || put(l, off) ? -1 : nbit_type(m, l, depth + 1, &b);
        if (m >= 0)
            H5Tclose(m);
        if (rc < 0)
            return -1;
        *bits += b; /* at most NBIT_MAX_VALUES members of < 2^32 bytes each */
    }
    return 0;
}

/* A type inside an array or compound (or the top-level atomic one). */
static int nbit_type(hid_t t, nbit_list *l, unsigned depth, uint64_t *bits) {
    if (depth > NBIT_MAX_DEPTH) {
        l->why = "its datatype nests too deeply";
        return -1;
    }
    switch (H5Tget_class(t)) {
    case H5T_INTEGER:
    case H5T_FLOAT: return nbit_atomic(t, l, bits);
    case H5T_ARRAY: return nbit_array(t, l, depth, bits);
    case H5T_COMPOUND: return nbit_compound(t, l, depth, bits);
    case H5T_NO_CLASS:
    case H5T_NCLASSES: l->why = "its datatype has no class"; return -1;
    default: return nbit_noop(t, l, bits);
    }
}

/* The list set_local writes for `type` and chunks of `elems` elements. */
static int nbit_expected(hid_t type, uint64_t elems, nbit_list *l) {
    l->n = 0;
    l->bits = 0;
    l->need_not_compress = 1;
    l->why = NULL;
    if (put(l, 0) || put(l, 0) || put(l, elems))
        return -1;
    H5T_class_t c = H5Tget_class(type);
    if (c == H5T_INTEGER || c == H5T_FLOAT || c == H5T_ARRAY || c == H5T_COMPOUND) {
        if (nbit_type(type, l, 0, &l->bits) < 0)
            return -1;
    } else {
        l->bits = (uint64_t)H5Tget_size(type) * 8; /* nothing to pack: only the flag is read */
    }
    l->v[0] = (unsigned)l->n;
    l->v[1] = (unsigned)l->need_not_compress;
    return 0;
}

/* All the client values of filter `i` of dcpl: *vals (malloc'd, the
 * caller frees) and *n. Returns 0, -ML_EHDF5 or -ENOMEM. */
static int filter_values(hid_t dcpl, unsigned i, unsigned **vals, size_t *n) {
    size_t cap = 64;
    for (;;) {
        unsigned *v = calloc(cap, sizeof *v), flags = 0, cfg = 0;
        size_t nv = cap;
        char name[8];
        if (!v)
            return -ENOMEM;
        if (H5Pget_filter2(dcpl, i, &flags, &nv, v, sizeof name, name, &cfg) < 0) {
            free(v);
            return -ML_EHDF5;
        }
        if (nv <= cap) {
            *vals = v;
            *n = nv;
            return 0;
        }
        free(v);
        if (nv > 65535)
            return -ML_EHDF5;
        cap = nv;
    }
}

static int check_nbit(const unsigned *v, size_t n, hid_t type, uint64_t elems, size_t chunk_bytes,
                      ml_h5z_check *out, ml_error *err, const char *where) {
    nbit_list *l = malloc(sizeof *l);
    const char *bad = NULL;
    if (!l)
        return ml_error_set(err, -ENOMEM, "out of memory");
    if (nbit_expected(type, elems, l) < 0)
        bad = l->why;
    else if (n != l->n)
        bad = "its parameter count is not the one the datatype needs";
    else if (n >= 2 && v[1] > 1)
        bad = "its no-compression flag is neither 0 nor 1";
    else if (n == 3 && v[1] != 1)
        bad = "it must not compress a datatype it has no parameters for";
    else
        for (size_t k = 0; k < n && !bad; k++)
            if (k != 1 && v[k] != l->v[k])
                bad = k == 2 ? "its element count is not the chunk's" : "its parameters do not describe the datatype";
    /* Flag 0 where HDF5 writes 1 decodes correctly; 1 where it writes 0 passes the stored bytes on. */
    if (!bad) {
        out->kind = ML_H5Z_NBIT;
        out->pass = v[1];
        uint64_t bits = 0;
        if (!ml_mul_ok(l->bits, elems, &bits))
            bad = "a chunk packs more than 2^64 bits";
        out->need = bits / 8 + (bits % 8 != 0);
        out->chunk_bytes = chunk_bytes;
    }
    free(l);
    if (bad)
        return ml_error_set(err, -ML_ECORRUPT, "%s has invalid parameters for filter 'nbit' (id 5, %zu value%s): %s",
                            where, n, n == 1 ? "" : "s", bad);
    return 0;
}

static int check_scaleoffset(const unsigned *v, size_t n, hid_t type, uint64_t elems, size_t chunk_bytes,
                             ml_h5z_check *out, ml_error *err, const char *where) {
    H5T_class_t c = H5Tget_class(type);
    size_t size = H5Tget_size(type);
    H5T_order_t order = H5Tget_order(type);
    const char *bad = NULL;
    if (n != SO_NPARMS)
        bad = "not the 20 parameters the filter reads";
    else if (c != H5T_INTEGER && c != H5T_FLOAT)
        bad = "its datatype is neither an integer nor a float";
    else if (v[3] != (c == H5T_FLOAT))
        bad = "its datatype class is not the dataset's";
    else if (v[4] != size || size == 0 || size > 8)
        bad = "its datatype size is not the dataset's";
    else if (c == H5T_INTEGER && v[5] != (H5Tget_sign(type) == H5T_SGN_2))
        bad = "its integer sign is not the dataset's";
    else if ((order != H5T_ORDER_LE && order != H5T_ORDER_BE) || v[6] != (order == H5T_ORDER_BE))
        bad = "its byte order is not the dataset's";
    else if (v[2] != elems)
        bad = "its element count is not the chunk's";
    else if (v[7] > 1)
        bad = "its fill-value flag is neither 0 nor 1";
    else if (c == H5T_INTEGER ? v[0] != SO_INT : v[0] > 1)
        bad = "its scale type does not fit the datatype";
    if (bad)
        return ml_error_set(err, -ML_ECORRUPT, "%s has invalid parameters for filter 'scaleoffset' (id 6, %zu "
                            "value%s): %s", where, n, n == 1 ? "" : "s", bad);
    out->kind = ML_H5Z_SCALEOFFSET;
    /* An integer scale factor of the full width: the filter hands the bytes on. */
    out->pass = c == H5T_INTEGER && (int)v[1] == (int)(size * 8);
    out->elems = elems;
    out->elem_size = (unsigned)size;
    out->chunk_bytes = chunk_bytes;
    return 0;
}

int ml_h5z_check_filter(hid_t dcpl, unsigned i, int id, hid_t type, uint64_t chunk_elems, size_t chunk_bytes,
                        ml_h5z_check *out, ml_error *err, const char *where) {
    memset(out, 0, sizeof *out);
    if (id != ML_H5Z_NBIT && id != ML_H5Z_SCALEOFFSET)
        return 0;
    unsigned *v = NULL;
    size_t n = 0;
    int rc = filter_values(dcpl, i, &v, &n);
    if (rc == -ENOMEM)
        return ml_error_set(err, rc, "out of memory");
    if (rc < 0)
        return ml_error_set(err, rc, "cannot read the parameters of filter %u of %s", i, where);
    rc = id == ML_H5Z_NBIT ? check_nbit(v, n, type, chunk_elems, chunk_bytes, out, err, where)
                           : check_scaleoffset(v, n, type, chunk_elems, chunk_bytes, out, err, where);
    free(v);
    return rc;
}

const char *ml_h5z_chunk_check(const ml_h5z_check *c, ml_source *src, uint64_t offset, uint64_t size) {
    if (c->kind == ML_H5Z_NONE)
        return NULL;
    if (c->pass)
        return size < c->chunk_bytes ? "fewer stored bytes than a chunk, for a filter that passes them on" : NULL;
    if (c->kind == ML_H5Z_NBIT)
        return size < c->need ? "fewer stored bytes than its n-bit values pack into" : NULL;
    /* scale-offset: 4 bytes of minimum bits, a length byte, the minimum, padding: 21 bytes */
    unsigned char h[SO_HEADER];
    if (size < SO_HEADER)
        return "fewer stored bytes than the scale-offset header";
    ml_io_req r = {.offset = offset, .len = sizeof h, .buf = h};
    if (ml_source_read(src, &r) < 0)
        return "its scale-offset header cannot be read";
    uint64_t minbits = (uint64_t)h[0] | (uint64_t)h[1] << 8 | (uint64_t)h[2] << 16 | (uint64_t)h[3] << 24;
    if (minbits > (uint64_t)c->elem_size * 8)
        return "its scale-offset bit width exceeds the datatype's";
    /* elems < 2^32 (HDF5 stores it in 32 bits) times minbits <= 64: no overflow */
    uint64_t bits = minbits == (uint64_t)c->elem_size * 8 ? c->elems * c->elem_size * 8 : c->elems * minbits;
    if (size - SO_HEADER < bits / 8 + (bits % 8 != 0))
        return "fewer stored bytes than its scale-offset values pack into";
    return NULL;
}
