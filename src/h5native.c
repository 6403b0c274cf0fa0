/* h5native.c - open an HDF5 dataset from its object header alone, for the
 * datasets HDF5 1.10.8 refuses: a newer HDF5 writes datatype messages of
 * version 4 (libver v112, v114) and 5 (v200) for compound, enum (h5py's
 * bool) and array types, and layout messages of version 5 (v200) for
 * chunked data, and 1.10.8 knows neither (h5native.h; the matrix of what
 * is read is in docs/newer-hdf5.md). h5open.c calls this only when
 * H5Oopen fails on a hard link: HDF5 stays the opener of everything it
 * can open.
 *
 * Invariants:
 *  - No HDF5 call. Every byte comes from the object header as h5ohdr.c
 *    read it (every message inside its header chunk, chunks inside the
 *    file); every field is read through a cursor that refuses to pass its
 *    message's end; every size, count and product of them from the file
 *    is overflow-checked before it sizes an allocation or a read; every
 *    address handed to fetch.c is a file offset it checks against L->eof
 *    (the smaller of the file's size and the superblock's end of
 *    allocation) before it reads. A message that does not hold together is
 *    -ML_ECORRUPT naming it, never a guess.
 *  - The type tree is the one h5type.c builds from HDF5 for the same type:
 *    the same kinds, sizes, byte orders, precisions, offsets, paddings and
 *    character sets, so the same numpy dtypes as h5py reports, and the
 *    same refusals (-ML_ETYPE) with the same words.
 *  - Fill values follow h5open.c's read_fill: undefined (or never written)
 *    fill makes unwritten rows unreadable; a user-defined fill must be
 *    exactly one element.
 *  - Storage is contiguous (one extent of exactly the shape's bytes),
 *    compact (the message's bytes, copied) or chunked, whose chunks are
 *    walked once at open into a published chunk table (chunk_table.h):
 *    look-ups are lock-free binary searches. There is no slow path: a
 *    filter the codec table does not decode, an external file list, a
 *    virtual layout, a shared message, an index kind this build does not
 *    walk are refused at open with the reason.
 *
 * Workload: once per open; a few hundred bytes of messages, and for a
 * chunked dataset one walk of its index (chunk_index.c).
 */
#define _GNU_SOURCE
#include "h5native.h"

#include "chunk_table.h"
#include "codec.h"
#include "h5meta.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


#define TYPE_MAX_DEPTH 32      /* nesting of compound, array and enum types */
#define TYPE_MAX_MEMBERS 65536 /* members of all compounds and enums of one type */
#define CHUNK_BYTES_MAX UINT64_C(0xFFFFFFFF) /* HDF5: "chunk size must be < 4GB" */
#define COMPACT_BYTES_MAX 65535u              /* the layout message holds it in 16 bits */

/* The format's own state of a native layout (ml_layout.fmt). */
typedef struct native_state {
    ml_chunk_table table; /* published at open for chunked data; empty otherwise */
} native_state;

/* A cursor over one message's bytes. */
typedef struct cur {
    const unsigned char *p, *end;
} cur;

static int have(const cur *c, uint64_t n) { return n <= (uint64_t)(c->end - c->p); }

/* What every decoder below reports through. */
typedef struct ctx {
    ml_error *err;
    const char *where;  /* "dataset 'x' of file 'f'" */
    unsigned members;   /* datatype members seen so far, all levels */
    unsigned sa, ss;    /* bytes of an address, of a length */
    uint64_t ohdr;      /* the object header's HDF5 address */
    uint64_t maxdims[ML_MAX_DIMS]; /* the dataspace's maximum dims (ML_CHUNK_UNLIMITED: none) */
} ctx;

#define CORRUPT(x, ...) corrupt(x, __VA_ARGS__)

__attribute__((format(printf, 2, 3))) static int corrupt(ctx *x, const char *fmt, ...) {
    char what[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return ml_error_set(x->err, -ML_ECORRUPT, "%s cannot be opened: %s (a damaged object header?)", x->where, what);
}

/* ---- datatype (message 0x0003, versions 1..5) ---- */

/* Bytes of a NUL-terminated name at c->p, padding included: versions 1
 * and 2 pad it to a multiple of 8, later ones do not. 0 if it is not
 * terminated inside the message or its padding passes the end. */
static size_t name_bytes(const cur *c, unsigned version) {
    const unsigned char *nul = memchr(c->p, 0, (size_t)(c->end - c->p));
    if (!nul)
        return 0;
    size_t n = (size_t)(nul - c->p) + 1;
    if (version < 3)
        n = (n + 7) / 8 * 8;
    return have(c, n) ? n : 0;
}

/* Bytes that encode a member offset in a compound of `size` bytes
 * (version 3 on): HDF5's H5VM_limit_enc_size. */
static unsigned offset_bytes(uint64_t size) {
    unsigned n = 1;
    while (n < 8 && (size >> (8 * n)) != 0)
        n++;
    return n;
}

/* An array type of `nd` dims over `base` (taken), checked as h5type.c
 * checks arrays: its size is its shape times its base. */
static int make_array(ctx *x, unsigned nd, const uint64_t *dims, ml_type *base, uint64_t size, ml_type **out) {
    ml_type *t = calloc(1, sizeof *t);
    if (!t) {
        ml_type_free(base);
        return ml_error_set(x->err, -ENOMEM, "out of memory");
    }
    t->kind = ML_T_ARRAY;
    t->size = (size_t)size;
    t->ndim = nd;
    t->base = base;
    uint64_t n = 1;
    for (unsigned i = 0; i < nd; i++) {
        t->dims[i] = dims[i];
        if (!ml_mul_ok64(n, dims[i], &n))
            n = 0;
    }
    if (!ml_mul_ok64(n, base->size, &n) || n != size) {
        int rc = ml_error_set(x->err, -ML_ETYPE, "array type of %zu bytes is not its shape times its %zu-byte "
                              "base in %s", t->size, base->size, x->where);
        ml_type_free(t);
        return rc;
    }
    *out = t;
    return 0;
}

static int decode_type(ctx *x, cur *c, unsigned depth, ml_type **out);

/* Is the enum at c (n members over a 1-byte base, names then values)
 * h5py's bool, {FALSE=0, TRUE=1}, as h5type.c's enum_is_bool asks? */
static int enum_is_bool(const unsigned char *const *names, const unsigned char *values, unsigned n) {
    if (n != 2)
        return 0;
    for (unsigned i = 0; i < 2; i++) {
        const char *s = (const char *)names[i];
        signed char v = (signed char)values[i];
        if (!((strcmp(s, "FALSE") == 0 && v == 0) || (strcmp(s, "TRUE") == 0 && v == 1)))
            return 0;
    }
    return 1;
}

static int decode_compound(ctx *x, cur *c, unsigned depth, unsigned version, uint32_t flags, ml_type *t) {
    unsigned n = flags & 0xffff;
    t->kind = ML_T_COMPOUND;
    if (n == 0)
        return ml_error_set(x->err, -ML_ETYPE, "unsupported datatype: empty compound in %s", x->where);
    t->member_names = calloc(n, sizeof(char *));
    t->member_offsets = calloc(n, sizeof(size_t));
    t->members = calloc(n, sizeof(ml_type *));
    if (!t->member_names || !t->member_offsets || !t->members)
        return ml_error_set(x->err, -ENOMEM, "out of memory");
    for (unsigned i = 0; i < n; i++) {
        if (++x->members > TYPE_MAX_MEMBERS)
            return CORRUPT(x, "its datatype has more than %d members", TYPE_MAX_MEMBERS);
        size_t nb = name_bytes(c, version);
        if (nb == 0)
            return CORRUPT(x, "a compound member's name passes the end of the datatype message");
        if (!(t->member_names[i] = strdup((const char *)c->p)))
            return ml_error_set(x->err, -ENOMEM, "out of memory");
        t->n_members = i + 1; /* what ml_type_free frees */
        c->p += nb;
        unsigned ob = version >= 3 ? offset_bytes(t->size) : 4;
        if (!have(c, ob))
            return CORRUPT(x, "compound member '%s' is cut short", t->member_names[i]);
        uint64_t moff = ml_meta_le(c->p, ob);
        c->p += ob;
        unsigned nd = 0;
        uint64_t dims[4];
        if (version == 1) {
            /* dimensionality, reserved (3), permutation (4), reserved (4), four dimension sizes */
            if (!have(c, 28))
                return CORRUPT(x, "compound member '%s' is cut short", t->member_names[i]);
            nd = c->p[0];
            if (nd > 4)
                return CORRUPT(x, "compound member '%s' has %u dimensions (at most 4)", t->member_names[i], nd);
            for (unsigned d = 0; d < nd; d++)
                if ((dims[d] = ml_meta_le(c->p + 12 + 4 * d, 4)) == 0)
                    return CORRUPT(x, "compound member '%s' has a dimension of 0", t->member_names[i]);
            c->p += 28;
        }
        ml_type *m = NULL;
        int rc = decode_type(x, c, depth + 1, &m);
        if (rc < 0)
            return rc;
        if (nd > 0) {
            uint64_t total = m->size;
            for (unsigned d = 0; d < nd; d++)
                if (!ml_mul_ok64(total, dims[d], &total) || total > UINT32_MAX) {
                    ml_type_free(m);
                    return CORRUPT(x, "compound member '%s' is too large", t->member_names[i]);
                }
            if ((rc = make_array(x, nd, dims, m, total, &m)) < 0)
                return rc;
        }
        t->members[i] = m;
        t->member_offsets[i] = (size_t)moff;
        /* Every member inside the compound: what numpy's dtype requires. */
        if (moff > t->size || m->size > t->size - moff)
            return ml_error_set(x->err, -ML_ETYPE, "compound member '%s' lies outside its %zu-byte compound in %s",
                                t->member_names[i], t->size, x->where);
    }
    return 0;
}

static int decode_enum(ctx *x, cur *c, unsigned depth, unsigned version, uint32_t flags, ml_type *t) {
    unsigned n = flags & 0xffff;
    ml_type *base = NULL;
    int rc = decode_type(x, c, depth + 1, &base);
    if (rc < 0)
        return rc;
    if (base->size != t->size || (base->kind != ML_T_INT && base->kind != ML_T_UINT)) {
        rc = CORRUPT(x, "an enum datatype of %zu bytes has a base type of %zu bytes that is not an integer", t->size,
                     base->size);
        goto out;
    }
    const unsigned char *names[2] = {NULL, NULL};
    for (unsigned i = 0; i < n; i++) {
        if (++x->members > TYPE_MAX_MEMBERS) {
            rc = CORRUPT(x, "its datatype has more than %d members", TYPE_MAX_MEMBERS);
            goto out;
        }
        size_t nb = name_bytes(c, version);
        if (nb == 0) {
            rc = CORRUPT(x, "an enum member's name passes the end of the datatype message");
            goto out;
        }
        if (i < 2)
            names[i] = c->p;
        c->p += nb;
    }
    uint64_t vbytes;
    if (!ml_mul_ok64(n, base->size, &vbytes) || !have(c, vbytes)) {
        rc = CORRUPT(x, "an enum datatype's values pass the end of its message");
        goto out;
    }
    int is_bool = t->size == 1 && enum_is_bool(names, c->p, n);
    c->p += vbytes;
    if (is_bool) {
        t->kind = ML_T_BOOL;
    } else {
        /* Enums read as their base integer, as h5py reports them. */
        *t = *base;
        free(base);
        base = NULL;
    }
out:
    ml_type_free(base);
    return rc;
}

static int decode_array(ctx *x, cur *c, unsigned depth, unsigned version, ml_type **out, uint64_t size) {
    if (version < 2)
        return CORRUPT(x, "an array datatype has version 1");
    if (!have(c, 1))
        return CORRUPT(x, "the datatype message is cut short");
    unsigned nd = c->p[0];
    if (nd == 0 || nd > ML_MAX_DIMS)
        return ml_error_set(x->err, -ML_ETYPE, "unsupported datatype: array member in %s", x->where);
    /* version 2: rank, reserved (3), dims (4 each), permutation (4 each); later: rank, dims */
    size_t skip = version == 2 ? 4 : 1, need = skip + 4 * (size_t)nd * (version == 2 ? 2 : 1);
    if (!have(c, need))
        return CORRUPT(x, "an array datatype is cut short");
    uint64_t dims[ML_MAX_DIMS];
    for (unsigned d = 0; d < nd; d++)
        dims[d] = ml_meta_le(c->p + skip + 4 * d, 4);
    c->p += need;
    ml_type *base = NULL;
    int rc = decode_type(x, c, depth + 1, &base);
    if (rc < 0)
        return rc;
    return make_array(x, nd, dims, base, size, out);
}

/* Decode the datatype at c (advanced past it) into *out (owned by the
 * caller), as h5type.c maps the type HDF5 would decode from these bytes. */
static int decode_type(ctx *x, cur *c, unsigned depth, ml_type **out) {
    if (depth > TYPE_MAX_DEPTH)
        return CORRUPT(x, "its datatype nests more than %d levels deep", TYPE_MAX_DEPTH);
    if (!have(c, 8))
        return CORRUPT(x, "the datatype message is cut short");
    unsigned version = c->p[0] >> 4, cls = c->p[0] & 0x0f;
    uint32_t flags = (uint32_t)ml_meta_le(c->p + 1, 3);
    uint64_t size = ml_meta_le(c->p + 4, 4);
    c->p += 8;
    if (version < 1 || version > 5)
        return CORRUPT(x, "a datatype has version %u (HDF5 2.0 writes 1 to 5)", version);
    if (size == 0)
        return CORRUPT(x, "a datatype (class %u) has size 0", cls);
    ml_type *t = calloc(1, sizeof *t);
    if (!t)
        return ml_error_set(x->err, -ENOMEM, "out of memory");
    t->size = (size_t)size;
    int rc = 0;
    switch (cls) {
    case 0: /* fixed-point */
    case 4: /* bitfield */
    {
        t->kind = cls == 0 && (flags & 0x08) ? ML_T_INT : ML_T_UINT;
        t->big_endian = flags & 0x01;
        if (!have(c, 4)) {
            rc = CORRUPT(x, "the datatype message is cut short");
            break;
        }
        uint64_t off = ml_meta_le(c->p, 2), prec = ml_meta_le(c->p + 2, 2);
        c->p += 4;
        if (size != 1 && size != 2 && size != 4 && size != 8) {
            rc = ml_error_set(x->err, -ML_ETYPE, "unsupported datatype: %zu-byte integer in %s", t->size, x->where);
            break;
        }
        if (prec == 0 || prec > size * 8 || off > size * 8 - prec) {
            rc = ml_error_set(x->err, -ML_ETYPE, "integer datatype of %llu bits at bit %llu does not fit its %zu "
                              "bytes in %s", (unsigned long long)prec, (unsigned long long)off, t->size, x->where);
            break;
        }
        t->precision = (unsigned)prec;
        t->bit_offset = (unsigned)off; /* fewer bits than the size: converted on read (convert.c) */
        break;
    }
    case 1: /* float: offset, precision, exponent location and size, mantissa location and size, bias */
    {
        t->kind = ML_T_FLOAT;
        t->big_endian = flags & 0x01;
        if (!have(c, 12)) {
            rc = CORRUPT(x, "the datatype message is cut short");
            break;
        }
        unsigned spos = (flags >> 8) & 0xff, epos = c->p[4], esize = c->p[5], mpos = c->p[6], msize = c->p[7];
        c->p += 12;
        if (((flags >> 4) & 0x03) == 3 || esize == 0 || msize == 0) {
            rc = CORRUPT(x, "a float datatype has an unknown normalization or an empty exponent or mantissa");
            break;
        }
        /* IEEE binary16/32/64 in little- or big-endian order (VAX order is neither) */
        int ieee = !(flags & 0x40) &&
                   ((size == 2 && spos == 15 && epos == 10 && esize == 5 && mpos == 0 && msize == 10) ||
                    (size == 4 && spos == 31 && epos == 23 && esize == 8 && mpos == 0 && msize == 23) ||
                    (size == 8 && spos == 63 && epos == 52 && esize == 11 && mpos == 0 && msize == 52));
        if (!ieee)
            rc = ml_error_set(x->err, -ML_ETYPE, "unsupported datatype: %zu-byte non-IEEE float in %s", t->size,
                              x->where);
        break;
    }
    case 2: /* time: precision */
        if (!have(c, 2)) {
            rc = CORRUPT(x, "the datatype message is cut short");
            break;
        }
        c->p += 2;
        /* PyTables' Time32Col is plain int32 seconds (h5type.c) */
        t->big_endian = flags & 0x01;
        if (size == 4) {
            t->kind = ML_T_INT;
            t->precision = 32;
        } else if (size == 8) {
            t->kind = ML_T_TIME64; /* PyTables' Time64Col, read as float64 (convert.c) */
        } else {
            rc = ml_error_set(x->err, -ML_ETYPE, "unsupported datatype: %zu-byte time in %s", t->size, x->where);
        }
        break;
    case 3: /* string: padding, character set */
    {
        unsigned pad = flags & 0x0f, cs = (flags >> 4) & 0x0f;
        t->kind = ML_T_STRING;
        if (pad > ML_STR_SPACEPAD) {
            rc = ml_error_set(x->err, -ML_ETYPE, "unsupported datatype: string padding %u in %s", pad, x->where);
            break;
        }
        t->pad = (ml_str_pad)pad;
        t->cset = cs == 1;
        break;
    }
    case 5: rc = ml_error_set(x->err, -ML_ETYPE, "unsupported datatype: opaque in %s", x->where); break;
    case 6: rc = decode_compound(x, c, depth, version, flags, t); break;
    case 7: rc = ml_error_set(x->err, -ML_ETYPE, "unsupported datatype: object/region reference in %s", x->where);
        break;
    case 8: rc = decode_enum(x, c, depth, version, flags, t); break;
    case 9:
        rc = ml_error_set(x->err, -ML_ETYPE, "unsupported datatype: variable-length %s in %s",
                          (flags & 0x0f) == 1 ? "string" : "sequence", x->where);
        break;
    case 10: {
        ml_type *a = NULL;
        free(t);
        t = NULL;
        rc = decode_array(x, c, depth, version, &a, size);
        t = a;
        break;
    }
    case 11: rc = ml_error_set(x->err, -ML_ETYPE, "unsupported datatype: complex number in %s", x->where); break;
    default: rc = ml_error_set(x->err, -ML_ETYPE, "unsupported datatype class %u in %s", cls, x->where); break;
    }
    if (rc < 0) {
        ml_type_free(t);
        return rc;
    }
    *out = t;
    return 0;
}

/* ---- dataspace (message 0x0001, versions 1 and 2) ---- */

static int decode_space(ctx *x, const ml_meta_msg *m, ml_layout *L) {
    const unsigned char *p = m->data;
    if (m->size < 4 || p[0] < 1 || p[0] > 2)
        return CORRUPT(x, "the dataspace message (version %u) is malformed", m->size ? p[0] : 0);
    unsigned version = p[0], nd = p[1], flags = p[2];
    size_t pos = version == 1 ? 8 : 4;
    /* version 2's type: 0 scalar, 1 simple, 2 null; version 1 has no null */
    if (nd == 0 || (version == 2 && p[3] != 1))
        return ml_error_set(x->err, -ML_ESHAPE, "%s is scalar or empty-typed and has no rows to stream", x->where);
    if (nd > ML_MAX_DIMS)
        return ml_error_set(x->err, -ML_ESHAPE, "%s has %u dimensions, more than %d", x->where, nd, ML_MAX_DIMS);
    if (m->size < pos + (size_t)nd * x->ss * ((flags & 1) ? 2 : 1))
        return CORRUPT(x, "the dataspace message is too short for its %u dimensions", nd);
    L->ndim = nd;
    for (unsigned d = 0; d < nd; d++) {
        L->dims[d] = ml_meta_le(p + pos + (size_t)d * x->ss, x->ss);
        /* HDF5 refuses a dimension past its maximum (all ones: unlimited) */
        uint64_t max = (flags & 1) ? ml_meta_le(p + pos + (size_t)(nd + d) * x->ss, x->ss) : L->dims[d];
        int unlimited = x->ss == 8 ? max == UINT64_MAX : max == (UINT64_C(1) << (8 * x->ss)) - 1;
        x->maxdims[d] = unlimited ? ML_CHUNK_UNLIMITED : max;
        if (!unlimited && L->dims[d] > max)
            return CORRUPT(x, "dimension %u of its dataspace (%llu) is greater than its maximum (%llu)", d,
                           (unsigned long long)L->dims[d], (unsigned long long)max);
    }
    return 0;
}

/* ---- fill value (messages 0x0005, versions 1..3, and 0x0004) ---- */

/* What the fill messages say, as H5Pfill_value_defined and
 * H5Pget_fill_time would: size -1 undefined, 0 default (zeros), > 0 a
 * value of that many bytes at value; when: 0 on allocation, 1 never, 2 if
 * set, 3 unknown. */
typedef struct fill_info {
    int64_t size;
    const unsigned char *value;
    unsigned when;
} fill_info;

static int decode_fill(ctx *x, const ml_meta_ohdr *oh, fill_info *fi) {
    const ml_meta_msg *m = ml_meta_ohdr_find(oh, ML_META_MSG_FILL);
    *fi = (fill_info){.size = 0, .value = NULL, .when = 2};
    if (!m) {
        /* only the old message (before HDF5 1.6): a value, written if set */
        m = ml_meta_ohdr_find(oh, ML_META_MSG_FILL_OLD);
        if (!m) {
            /* No fill message at all (every HDF5 since 1.6 writes one): HDF5
             * 2.0 refuses to read such a dataset's unwritten data, so rows
             * never written are refused here too. */
            fi->size = -1;
            return 0;
        }
        if (m->flags & 0x02)
            return CORRUPT(x, "its old fill value message is shared, which this reader does not follow");
        if (m->size < 4 || ml_meta_le(m->data, 4) > m->size - 4)
            return CORRUPT(x, "the old fill value message is cut short");
        fi->size = (int64_t)ml_meta_le(m->data, 4);
        fi->value = m->data + 4;
        return 0;
    }
    if (m->flags & 0x02)
        return CORRUPT(x, "its fill value message is shared, which this reader does not follow");
    const unsigned char *p = m->data;
    size_t n = m->size, pos;
    if (n >= 4 && (p[0] == 1 || p[0] == 2)) {
        /* version, allocation time, fill time, defined, [size, value] */
        fi->when = p[2];
        if (!p[3]) {
            fi->size = -1;
            return 0;
        }
        pos = 4;
    } else if (n >= 2 && p[0] == 3) {
        /* version, flags (allocation time, fill time, undefined, have a value), [size, value] */
        if (p[1] & ~0x3fu)
            return CORRUPT(x, "the fill value message has unknown flags 0x%02x", p[1]);
        fi->when = (p[1] >> 2) & 3;
        if (p[1] & 0x10) {
            fi->size = -1;
            return 0;
        }
        if (!(p[1] & 0x20))
            return 0;
        pos = 2;
    } else {
        return CORRUPT(x, "the fill value message (version %u) is malformed", n ? p[0] : 0);
    }
    if (n < pos + 4)
        return CORRUPT(x, "the fill value message is cut short");
    uint64_t size = ml_meta_le(p + pos, 4);
    if (size > n - pos - 4)
        return CORRUPT(x, "the fill value (%llu bytes) passes the end of its message", (unsigned long long)size);
    fi->size = (int64_t)size;
    fi->value = p + pos + 4;
    return 0;
}

/* L->fill and L->fill_undefined as h5open.c's read_fill sets them. */
static int apply_fill(ctx *x, const fill_info *fi, int chunked, ml_layout *L) {
    L->fill_undefined = fi->size < 0 || fi->when == 1;
    int known = fi->when == 0 || fi->when == 2;
    if (fi->size <= 0 || (!known && chunked))
        return 0; /* zeros */
    if ((uint64_t)fi->size != L->type->size)
        return CORRUPT(x, "the fill value is %lld bytes for %zu-byte elements", (long long)fi->size, L->type->size);
    for (size_t i = 0; i < L->type->size; i++)
        if (fi->value[i]) {
            if (!(L->fill = malloc(L->type->size)))
                return ml_error_set(x->err, -ENOMEM, "out of memory");
            memcpy(L->fill, fi->value, L->type->size);
            return 0;
        }
    return 0; /* all zero: the memset fast path */
}

/* ---- filter pipeline (message 0x000B, versions 1 and 2) ---- */

static int decode_pipeline(ctx *x, const ml_meta_msg *m, ml_pipeline *pl) {
    cur c = {m->data, m->data + m->size};
    if (m->flags & 0x02)
        return CORRUPT(x, "its filter pipeline message is shared, which this reader does not follow");
    if (!have(&c, 2) || c.p[0] < 1 || c.p[0] > 2)
        return CORRUPT(x, "the filter pipeline message (version %u) is malformed", m->size ? c.p[0] : 0);
    unsigned version = c.p[0], nf = c.p[1];
    if (!have(&c, version == 1 ? 8 : 2))
        return CORRUPT(x, "the filter pipeline message is cut short");
    c.p += version == 1 ? 8 : 2;
    if (nf > 32)
        return CORRUPT(x, "the filter pipeline has %u filters (HDF5 allows 32)", nf);
    if (nf > ML_MAX_FILTERS)
        return ml_error_set(x->err, -ML_EFILTER, "%s has %u filters, more than the %d multiload decodes", x->where,
                            nf, ML_MAX_FILTERS);
    pl->n_filters = nf;
    for (unsigned i = 0; i < nf; i++) {
        ml_filter *f = &pl->filters[i];
        if (!have(&c, 2))
            return CORRUPT(x, "filter %u of the pipeline is cut short", i);
        unsigned id = (unsigned)ml_meta_le(c.p, 2);
        int named = version == 1 || id >= 256;
        size_t hdr = named ? 8 : 6;
        if (!have(&c, hdr))
            return CORRUPT(x, "filter %u of the pipeline is cut short", i);
        uint64_t name_len = named ? ml_meta_le(c.p + 2, 2) : 0;
        f->id = (int)id;
        f->flags = (unsigned)ml_meta_le(c.p + hdr - 4, 2);
        f->n_values = (size_t)ml_meta_le(c.p + hdr - 2, 2);
        c.p += hdr;
        char name[64] = "";
        if (name_len) {
            if (!have(&c, name_len) || !memchr(c.p, 0, (size_t)name_len))
                return CORRUPT(x, "the name of filter %u (id %u) is not terminated inside its %llu bytes", i, id,
                               (unsigned long long)name_len);
            snprintf(name, sizeof name, "%s", (const char *)c.p);
            c.p += name_len;
        }
        uint64_t vb = 4 * (uint64_t)f->n_values + (version == 1 && (f->n_values & 1) ? 4 : 0);
        if (!have(&c, vb))
            return CORRUPT(x, "the %zu parameters of filter %u (id %u) pass the pipeline message's end", f->n_values,
                           i, id);
        for (size_t v = 0; v < f->n_values && v < 8; v++)
            f->values[v] = (unsigned)ml_meta_le(c.p + 4 * v, 4);
        c.p += vb;
        const ml_codec *codec = ml_codec_find(f->id);
        if (!name[0])
            snprintf(name, sizeof name, "%s", codec ? codec->name : "unnamed");
        if (!ml_decode_supports(f->id))
            return ml_error_set(x->err, -ML_EFILTER, "%s uses filter '%s' (id %d), which multiload does not decode "
                                "natively, and the HDF5 library cannot open this dataset (written by a newer "
                                "HDF5)", x->where, name, f->id);
        const char *bad = codec->check ? codec->check(f) : NULL;
        if (bad)
            return ml_error_set(x->err, -ML_ECORRUPT, "%s has invalid parameters for filter '%s' (id %d, %zu "
                                "value%s): %s", x->where, name, f->id, f->n_values, f->n_values == 1 ? "" : "s",
                                bad);
    }
    return 0;
}

/* ---- layout (message 0x0008, versions 3..5) and the chunk table ---- */

/* What the walk gathers: every chunk the index holds, sorted. */
typedef struct gather {
    ml_chunk_entry *e;
    uint64_t n, cap;
    uint64_t n_chunks; /* grid size: no more entries than this */
} gather;

static int gather_emit(void *vctx, uint64_t index, uint64_t offset, uint64_t size, unsigned mask) {
    gather *g = vctx;
    if (g->n >= g->n_chunks)
        return -ML_ECORRUPT;
    if (g->n == g->cap) {
        uint64_t cap = g->cap ? g->cap * 2 : 64;
        if (cap > g->n_chunks)
            cap = g->n_chunks;
        ml_chunk_entry *e = realloc(g->e, (size_t)cap * sizeof *e);
        if (!e)
            return -ENOMEM;
        g->e = e;
        g->cap = cap;
    }
    ml_chunk_entry *en = &g->e[g->n++];
    en->index = index;
    en->info = (ml_chunk_info){.addr = offset, .size = offset == UINT64_MAX ? 0 : size, .filter_mask = mask};
    if (offset != UINT64_MAX && size == 0)
        en->info.bad = "a defined address with a stored size of 0";
    return 0;
}

/* Chunk shape from the message's dims (the last is the element size),
 * checked against the dataspace and the type as h5open.c checks HDF5's. */
static int set_chunk_shape(ctx *x, ml_layout *L, unsigned nd, const uint64_t *dims) {
    if (nd != L->ndim + 1)
        return CORRUPT(x, "the chunked layout has %u dimensions for a dataspace of rank %u", nd - 1, L->ndim);
    if (dims[nd - 1] != L->type->size)
        return CORRUPT(x, "the chunked layout's element size (%llu) is not the datatype's (%zu)",
                       (unsigned long long)dims[nd - 1], L->type->size);
    uint64_t n_chunks = 1, chunk_bytes = L->type->size;
    for (unsigned d = 0; d < L->ndim; d++) {
        if (dims[d] == 0)
            return CORRUPT(x, "its layout has a chunk dimension of 0");
        L->chunk[d] = dims[d];
        L->grid[d] = L->dims[d] / dims[d] + (L->dims[d] % dims[d] != 0);
        if (!ml_mul_ok64(n_chunks, L->grid[d], &n_chunks))
            return CORRUPT(x, "it has more chunks than 2^64 (its chunk grid overflows)");
        if (!ml_mul_ok64(chunk_bytes, dims[d], &chunk_bytes) || chunk_bytes > CHUNK_BYTES_MAX)
            return CORRUPT(x, "it has chunks of 4 GiB or more, which HDF5 does not allow");
    }
    L->n_chunks = n_chunks;
    L->chunk_bytes = (size_t)chunk_bytes;
    return 0;
}

static const char *index_name(ml_chunk_index_kind k) {
    switch (k) {
    case ML_CHUNK_INDEX_SINGLE: return "a single-chunk index";
    case ML_CHUNK_INDEX_IMPLICIT: return "an implicit index";
    case ML_CHUNK_INDEX_FARRAY: return "a fixed array";
    case ML_CHUNK_INDEX_EARRAY: return "an extensible array";
    case ML_CHUNK_INDEX_BTREE2: return "a version 2 B-tree";
    case ML_CHUNK_INDEX_BTREE1: return "a version 1 B-tree";
    default: return "an index of unknown kind";
    }
}

/* Walk the chunk index ix (any kind, chunk_index.h) into the published table. */
static int walk_chunks(ctx *x, ml_layout *L, const ml_chunk_file *cf, const ml_chunk_index *ix) {
    native_state *S = L->fmt;
    gather g = {.n_chunks = L->n_chunks};
    int rc = 0;
    if (ix->addr != UINT64_MAX && L->n_chunks > 0) {
        rc = ml_chunk_index_walk(cf, ix, L->ndim, L->dims, x->maxdims, gather_emit, &g);
        if (rc == -ML_ECORRUPT || rc == -ML_EINVAL)
            rc = CORRUPT(x, "its chunk index (%s at address %llu) is malformed", index_name(ix->kind),
                         (unsigned long long)ix->addr);
        else if (rc == -ENOTSUP)
            rc = ml_error_set(x->err, -ML_ECORRUPT, "%s has a chunk index (%s) laid out in a way this reader does "
                              "not walk", x->where, index_name(ix->kind));
        else if (rc < 0)
            rc = ml_error_set(x->err, rc, "cannot read the chunk index of %s: %s", x->where, ml_strerror(rc));
    }
    if (rc < 0) {
        free(g.e);
        return rc;
    }
    ml_chunk_table_publish(&S->table, g.e, g.n);
    return 0;
}

static int decode_layout(ctx *x, const ml_meta_msg *m, const ml_meta_ohdr *oh, const ml_chunk_file *cf,
                         uint64_t total, ml_layout *L) {
    const unsigned char *p = m->data;
    size_t n = m->size, sa = x->sa, ss = x->ss;
    if (m->flags & 0x02)
        return CORRUPT(x, "the layout message is marked shared");
    if (n < 2)
        return CORRUPT(x, "the layout message is cut short");
    unsigned version = p[0], cls = p[1];
    if (version < 3 || version > 5)
        return CORRUPT(x, "a layout message of version %u, which this reader does not decode", version);
    if (cls == 0) { /* compact: size (2), data */
        if (n < 4 || ml_meta_le(p + 2, 2) > n - 4)
            return CORRUPT(x, "the compact data passes the layout message's end");
        uint64_t stored = ml_meta_le(p + 2, 2);
        if (stored != total || total > COMPACT_BYTES_MAX)
            return ml_error_set(x->err, -ML_ECORRUPT, "compact %s stores %llu bytes, but its shape needs %llu "
                                "(damaged layout or dataspace)", x->where, (unsigned long long)stored,
                                (unsigned long long)total);
        L->storage = ML_STORE_MEMORY;
        if (!(L->mem = malloc(total ? (size_t)total : 1)))
            return ml_error_set(x->err, -ENOMEM, "out of memory");
        memcpy(L->mem, p + 4, (size_t)total);
        return 0;
    }
    if (cls == 1) { /* contiguous: address, size */
        if (n < 2 + sa + ss)
            return CORRUPT(x, "the contiguous layout message is cut short");
        uint64_t addr = ml_meta_addr(p + 2, (unsigned)sa), stored = ml_meta_le(p + 2 + sa, (unsigned)ss);
        L->storage = ML_STORE_CONTIGUOUS;
        if (addr == ML_META_UNDEF || total == 0)
            return 0; /* never written: all fill */
        if (stored != total)
            return ml_error_set(x->err, -ML_ECORRUPT, "%s stores %llu bytes, but its shape needs %llu (damaged "
                                "layout or dataspace)", x->where, (unsigned long long)stored,
                                (unsigned long long)total);
        if (addr > UINT64_MAX - cf->base || addr + cf->base > UINT64_MAX - total)
            return ml_error_set(x->err, -ML_ECORRUPT, "the data of %s lies past the end of any file (address %llu)",
                                x->where, (unsigned long long)addr);
        L->offset = addr + cf->base;
        return 0;
    }
    if (cls == 3)
        return ml_error_set(x->err, -ML_ECORRUPT, "%s is a virtual dataset, which this reader does not open "
                            "without the HDF5 library", x->where);
    if (cls != 2)
        return CORRUPT(x, "the layout message has class %u", cls);
    L->storage = ML_STORE_CHUNKED;
    uint64_t dims[ML_CHUNK_INDEX_MAX_DIMS];
    ml_chunk_index ix = {.kind = ML_CHUNK_INDEX_NONE, .layout_version = version, .fill_size = -1,
                         .addr = UINT64_MAX};
    unsigned nd, flags = 0, itype = 0;
    size_t pos;
    if (version == 3) { /* dimensionality, address, dims (4 each; the last the element size) */
        if (n < 3)
            return CORRUPT(x, "the layout message is cut short");
        nd = p[2];
        if (nd < 2 || nd > ML_CHUNK_INDEX_MAX_DIMS || n < 3 + sa + 4 * (size_t)nd)
            return CORRUPT(x, "the chunked layout message has %u dimensions or is cut short", nd);
        for (unsigned d = 0; d < nd; d++)
            dims[d] = ml_meta_le(p + 3 + sa + 4 * d, 4);
        ix.kind = ML_CHUNK_INDEX_BTREE1;
        ix.addr = ml_meta_addr(p + 3, (unsigned)sa);
        pos = 0;
    } else { /* flags, dimensionality, bytes per dim, dims, index type, its fields, address */
        if (n < 5)
            return CORRUPT(x, "the layout message is cut short");
        flags = p[2];
        nd = p[3];
        unsigned enc = p[4];
        if (nd < 2 || nd > ML_CHUNK_INDEX_MAX_DIMS || enc < 1 || enc > 8 || n < 5 + (size_t)nd * enc + 1)
            return CORRUPT(x, "the chunked layout message has %u dimensions of %u bytes or is cut short", nd, enc);
        if (flags & ~0x03u)
            return CORRUPT(x, "the chunked layout message has unknown flags 0x%02x", flags);
        for (unsigned d = 0; d < nd; d++)
            dims[d] = ml_meta_le(p + 5 + (size_t)d * enc, enc);
        pos = 5 + (size_t)nd * enc;
        itype = p[pos++];
        size_t extra = itype == 1 ? ((flags & 0x02) ? ss + 4 : 0) : itype == 2 ? 0 : itype == 3 ? 1
                     : itype == 4 ? 5 : itype == 5 ? 6 : (size_t)-1;
        if (extra == (size_t)-1 || n < pos + extra + sa)
            return CORRUPT(x, "the chunked layout message has index type %u or is cut short", itype);
        ix.kind = (ml_chunk_index_kind)itype;
        ix.addr = ml_meta_addr(p + pos + extra, (unsigned)sa);
    }
    int rc = set_chunk_shape(x, L, nd, dims);
    if (rc < 0)
        return rc;
    ix.ndims = nd;
    memcpy(ix.dims, dims, nd * sizeof dims[0]);
    const ml_meta_msg *pl = ml_meta_ohdr_find(oh, ML_META_MSG_PLINE);
    if (pl && (rc = decode_pipeline(x, pl, &L->pipeline)) < 0)
        return rc;
    if ((flags & 0x01) && L->pipeline.n_filters) {
        /* partial edge chunks stored unfiltered: refused where there are any */
        for (unsigned d = 0; d < L->ndim; d++)
            if (L->dims[d] % L->chunk[d])
                return ml_error_set(x->err, -ML_EFILTER, "%s stores its partial edge chunks unfiltered "
                                    "(H5D_CHUNK_DONT_FILTER_PARTIAL_CHUNKS), which multiload does not read",
                                    x->where);
    }
    /* The index kind's own parameters, as chunk_index.c parses the same
     * message: it must describe what was decoded here. */
    ml_chunk_index lix;
    rc = ml_chunk_index_locate(cf, x->ohdr, &lix);
    if (rc == -ML_ECORRUPT)
        return CORRUPT(x, "its layout message is malformed");
    if (rc < 0)
        return ml_error_set(x->err, rc, "cannot read the layout of %s: %s", x->where, ml_strerror(rc));
    int same = lix.kind == ix.kind && lix.ndims == ix.ndims && lix.addr == ix.addr;
    for (unsigned d = 0; same && d < nd; d++)
        same = lix.dims[d] == ix.dims[d];
    if (!same)
        return CORRUPT(x, "its layout message is read two ways");
    if (lix.kind == ML_CHUNK_INDEX_SINGLE && L->n_chunks > 1)
        return CORRUPT(x, "a single-chunk index for a dataset of %llu chunks", (unsigned long long)L->n_chunks);
    if (lix.kind == ML_CHUNK_INDEX_IMPLICIT && L->pipeline.n_filters > 0)
        return CORRUPT(x, "an implicit index for filtered chunks");
    return walk_chunks(x, L, cf, &lix);
}

/* ---- the object header's message flags ---- */

/* HDF5 (H5O__chunk_deserialize) refuses an object whose header holds a
 * message with a flag combination it calls bad, or a message of a type it
 * does not know marked "fail if unknown": so does this reader, so that it
 * never opens what the HDF5 that wrote the file would refuse. Message
 * types 0x00..0x18 are the ones HDF5 2.0 knows. */
static int check_msg_flags(ctx *x, const ml_meta_ohdr *oh) {
    for (size_t i = 0; i < oh->n_msgs; i++) {
        unsigned fl = oh->msgs[i].flags, type = oh->msgs[i].type;
        if (((fl & 0x02) && (fl & 0x04)) || ((fl & 0x20) && (fl & 0x08)) || ((fl & 0x20) && !(fl & 0x10)))
            return CORRUPT(x, "message %zu (type %u) of its object header has a bad flag combination 0x%02x", i,
                           type, fl);
        if (type > 0x18 && (fl & 0x80))
            return CORRUPT(x, "message %zu of its object header has type %u, which no HDF5 knows, and is marked "
                           "fail-if-unknown", i, type);
    }
    return 0;
}

/* ---- the layout's operations ---- */

static int native_chunk(ml_layout *L, uint64_t index, ml_chunk_info *info, ml_error *err) {
    native_state *S = L->fmt;
    (void)err;
    /* The table was published at open: a chunk it does not hold was never written. */
    if (!ml_chunk_table_get(&S->table, index, info))
        *info = (ml_chunk_info){.addr = UINT64_MAX};
    return 0;
}

static int native_read_chunk(ml_layout *L, uint64_t index, void *buf, uint64_t size, unsigned *mask, ml_error *err) {
    (void)buf, (void)size, (void)mask;
    return ml_error_set(err, -ML_EINVAL, "chunk %llu of dataset '%s' in file '%s' has no place in the file "
                        "(a natively opened dataset reads none through HDF5)", (unsigned long long)index, L->path,
                        L->filename);
}

static int native_read_slow(ml_layout *L, uint64_t row0, uint64_t n, void *dest, ml_error *err) {
    (void)row0, (void)n, (void)dest;
    return ml_error_set(err, -ML_EINVAL, "dataset '%s' in file '%s' was opened without HDF5 and has no slow path",
                        L->path, L->filename);
}

static void native_close(ml_layout *L) {
    native_state *S = L->fmt;
    if (!S)
        return;
    ml_chunk_table_destroy(&S->table);
    free(S);
    L->fmt = NULL;
}

static const ml_layout_ops native_ops = {.format = "HDF5", .chunk = native_chunk, .read_chunk = native_read_chunk,
                                         .read_slow = native_read_slow, .close = native_close};

/* ---- the open ---- */

int ml_h5_native_open(ml_layout *L, const ml_chunk_file *cf, uint64_t ohdr, ml_error *err) {
    char where[600], why[ML_META_WHY_MAX] = "";
    snprintf(where, sizeof where, "dataset '%s' of file '%s'", L->path, L->filename);
    ctx x = {.err = err, .where = where, .sa = cf->sizeof_addr, .ss = cf->sizeof_size, .ohdr = ohdr};
    ml_meta_file f;
    ml_meta_ohdr oh = {0};
    native_state *S = calloc(1, sizeof *S);
    int rc;
    if (!S)
        return ml_error_set(err, -ENOMEM, "out of memory");
    if ((rc = ml_chunk_table_init(&S->table)) < 0) {
        free(S);
        return ml_error_set(err, rc, "cannot set up the chunk table: %s", ml_strerror(rc));
    }
    L->ops = &native_ops;
    L->fmt = S;
    L->eof = cf->size;
    rc = ml_meta_super_read(L->src, why, NULL, &f);
    if (rc == 0 && (f.sa != cf->sizeof_addr || f.ss != cf->sizeof_size || f.base != cf->base))
        rc = ml_meta_bad(&f, "the superblock disagrees with HDF5's reading of it");
    if (rc == 0)
        rc = ml_meta_ohdr_read(&f, ohdr, &oh);
    if (rc != 0) {
        if (rc > 0 || rc == -ML_ENOTHDF5)
            rc = -ML_ECORRUPT;
        return rc == -ML_ECORRUPT ? ml_error_set(err, rc, "%s cannot be opened: %s", where, why[0] ? why : "its "
                                                 "object header is malformed")
                                  : ml_error_set(err, rc, "cannot read the object header of %s: %s", where,
                                                 ml_strerror(rc));
    }
    if ((rc = check_msg_flags(&x, &oh)) < 0)
        goto out;
    const ml_meta_msg *space = ml_meta_ohdr_find(&oh, ML_META_MSG_SPACE), *type = ml_meta_ohdr_find(&oh, ML_META_MSG_DTYPE);
    const ml_meta_msg *layout = ml_meta_ohdr_find(&oh, ML_META_MSG_LAYOUT);
    if (!space || !type || !layout) {
        rc = ml_error_set(err, -ML_ENOTDSET, "'%s' in file '%s' is not a dataset (its object header has no %s "
                          "message)", L->path, L->filename, !space ? "dataspace" : !type ? "datatype" : "layout");
        goto out;
    }
    if (type->flags & 0x02) {
        rc = ml_error_set(err, -ML_ETYPE, "%s has a committed (shared) datatype, which multiload does not read "
                          "without the HDF5 library", where);
        goto out;
    }
    if (space->flags & 0x02) {
        rc = CORRUPT(&x, "its dataspace message is shared, which this reader does not follow");
        goto out;
    }
    if (ml_meta_ohdr_find(&oh, ML_META_MSG_EFL)) {
        rc = ml_error_set(err, -ML_ECORRUPT, "%s has external storage, which multiload does not read without the "
                          "HDF5 library", where);
        goto out;
    }
    cur c = {type->data, type->data + type->size};
    if ((rc = decode_type(&x, &c, 0, &L->type)) < 0)
        goto out;
    if ((rc = decode_space(&x, space, L)) < 0)
        goto out;
    /* Every size below is a product of numbers from the file: each is
     * overflow-checked, and the whole dataset's bytes must fit in an
     * int64_t, so n * row_bytes is safe anywhere for n <= n_rows. */
    uint64_t row_elems = 1, row_bytes = 0, total = 0;
    int fits = 1;
    for (unsigned d = 1; d < L->ndim; d++)
        fits = fits && ml_mul_ok64(row_elems, L->dims[d], &row_elems);
    L->n_rows = L->dims[0];
    if (!fits || !ml_mul_ok64(row_elems, L->type->size, &row_bytes) || !ml_mul_ok64(row_bytes, L->n_rows, &total) ||
        total > (uint64_t)INT64_MAX || row_bytes > SIZE_MAX) {
        rc = ml_error_set(err, -ML_ECORRUPT, "%s is too large to address: its shape times its %zu-byte elements "
                          "overflows 2^63 bytes (a damaged dataspace?)", where, L->type->size);
        goto out;
    }
    L->row_elems = (size_t)row_elems;
    L->row_bytes = (size_t)row_bytes;
    fill_info fi;
    if ((rc = decode_fill(&x, &oh, &fi)) < 0)
        goto out;
    ml_chunk_file walk_file = *cf;
    walk_file.src = L->src;
    if ((rc = decode_layout(&x, layout, &oh, &walk_file, total, L)) < 0)
        goto out;
    rc = apply_fill(&x, &fi, L->storage == ML_STORE_CHUNKED, L);
    if (rc == 0)
        rc = ml_layout_convert_setup(L, err); /* last: fill and compact data are read */
out:
    ml_meta_ohdr_free(&oh);
    return rc;
}
