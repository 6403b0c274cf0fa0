/* convert.c - stored elements made the numpy dtype h5py reports, in place.
 *
 * Invariants: a plan is a flat list of operations, each on `count` items
 * of `size` bytes at `offset` inside one element (items `size` apart), all
 * inside the element (the type tree's members lie inside their compounds:
 * h5type.c checks it). Applying a plan never changes an element's size
 * and must happen exactly once per stored byte: the operations are not
 * idempotent (an integer shifted twice is wrong), so fetch.c applies them
 * where bytes leave storage and never to fill values or compact data,
 * which the layout converts at open. The rules are HDF5's conversions to
 * the memory type h5py builds from the dtype:
 *  - integers (H5T__conv_i_i into a full-precision integer of the same
 *    size and order): the `precision` bits at `bit_offset`, sign-extended
 *    if signed, the padding bits dropped;
 *  - fixed strings (H5T__conv_s_s into h5py's NUL-padded type of the same
 *    size): NUL-terminated text ends at its first NUL, the rest zeroed;
 *    space-padded text loses its trailing spaces to NULs. A NUL-padded
 *    string is h5py's own type: no conversion, bytes as stored;
 *  - PyTables' Time64 (stored seconds << 32 | microseconds, two signed
 *    32-bit halves): the float64 seconds + microseconds * 1e-6 PyTables
 *    computes, in the machine's byte order.
 *
 * Workload: one pass over the converted bytes of every read of a dataset
 * whose type needs it (a few types in real files); none for the others.
 */
#include "convert.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* A type tree flattened past this many operations is refused: an array of
 * compounds repeats its members' operations once per item. */
#define MAX_OPS 65536

typedef enum op_kind { OP_INT_BITS, OP_STR_NULLTERM, OP_STR_SPACEPAD, OP_TIME64 } op_kind;

typedef struct op {
    op_kind kind;
    size_t offset;       /* bytes from the element's start */
    size_t count;        /* items, `size` bytes apart */
    size_t size;         /* bytes of one item */
    unsigned precision;  /* OP_INT_BITS: value bits */
    unsigned bit_offset; /* OP_INT_BITS: first value bit */
    int is_signed;       /* OP_INT_BITS */
    int big_endian;      /* OP_INT_BITS, OP_TIME64: stored order */
} op;

struct ml_convert {
    size_t elem_size;    /* bytes of one element */
    size_t n_ops, cap;
    op *ops;             /* owned, n_ops */
};

static int int_needs(const ml_type *t) {
    return t->precision && (t->precision < t->size * 8 || t->bit_offset);
}

static int add(ml_convert *c, op o) {
    if (c->n_ops == MAX_OPS)
        return -E2BIG;
    if (c->n_ops == c->cap) {
        size_t cap = c->cap ? 2 * c->cap : 8;
        op *p = realloc(c->ops, cap * sizeof *p);
        if (!p)
            return -ENOMEM;
        c->ops = p;
        c->cap = cap;
    }
    c->ops[c->n_ops++] = o;
    return 0;
}

/* The operations of `count` items of type t at `offset`, t->size apart. */
static int plan(ml_convert *c, const ml_type *t, size_t offset, size_t count) {
    switch (t->kind) {
    case ML_T_INT:
    case ML_T_UINT:
        if (!int_needs(t))
            return 0;
        return add(c, (op){.kind = OP_INT_BITS, .offset = offset, .count = count, .size = t->size,
                           .precision = t->precision, .bit_offset = t->bit_offset,
                           .is_signed = t->kind == ML_T_INT, .big_endian = t->big_endian});
    case ML_T_STRING:
        if (t->pad == ML_STR_NULLPAD)
            return 0;
        return add(c, (op){.kind = t->pad == ML_STR_SPACEPAD ? OP_STR_SPACEPAD : OP_STR_NULLTERM,
                           .offset = offset, .count = count, .size = t->size});
    case ML_T_TIME64:
        return add(c, (op){.kind = OP_TIME64, .offset = offset, .count = count, .size = 8,
                           .big_endian = t->big_endian});
    case ML_T_ARRAY: {
        uint64_t n = 1;
        for (unsigned i = 0; i < t->ndim; i++)
            n *= t->dims[i]; /* h5type.c checked n * base size == t->size */
        /* Items of an atomic base are consecutive: one operation each
         * array; a structured base repeats its operations per item. */
        int atomic = t->base->kind != ML_T_COMPOUND && t->base->kind != ML_T_ARRAY;
        for (size_t k = 0; k < count; k++)
            for (uint64_t i = 0; i < (atomic ? 1 : n); i++) {
                int rc = plan(c, t->base, offset + k * t->size + (size_t)i * t->base->size,
                              atomic ? (size_t)n : 1);
                if (rc < 0)
                    return rc;
            }
        return 0;
    }
    case ML_T_COMPOUND:
        for (size_t k = 0; k < count; k++)
            for (unsigned i = 0; i < t->n_members; i++) {
                int rc = plan(c, t->members[i], offset + k * t->size + t->member_offsets[i], 1);
                if (rc < 0)
                    return rc;
            }
        return 0;
    case ML_T_FLOAT:
    case ML_T_BOOL:
        return 0;
    }
    return 0;
}

int ml_convert_plan(const ml_type *t, ml_convert **out) {
    *out = NULL;
    ml_convert *c = calloc(1, sizeof *c);
    if (!c)
        return -ENOMEM;
    c->elem_size = t->size;
    int rc = plan(c, t, 0, 1);
    if (rc < 0 || c->n_ops == 0) {
        ml_convert_free(c);
        return rc < 0 ? rc : 0;
    }
    *out = c;
    return 0;
}

void ml_convert_free(ml_convert *c) {
    if (!c)
        return;
    free(c->ops);
    free(c);
}

static uint64_t load(const unsigned char *p, size_t n, int big_endian) {
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++)
        v |= (uint64_t)p[big_endian ? n - 1 - i : i] << (8 * i);
    return v;
}

static void store(unsigned char *p, size_t n, int big_endian, uint64_t v) {
    for (size_t i = 0; i < n; i++)
        p[big_endian ? n - 1 - i : i] = (unsigned char)(v >> (8 * i));
}

static void int_bits(const op *o, unsigned char *p) {
    uint64_t mask = o->precision >= 64 ? UINT64_MAX : (UINT64_C(1) << o->precision) - 1;
    for (size_t i = 0; i < o->count; i++, p += o->size) {
        uint64_t v = (load(p, o->size, o->big_endian) >> o->bit_offset) & mask;
        if (o->is_signed && o->precision < 64 && (v >> (o->precision - 1)) & 1)
            v |= ~mask;
        store(p, o->size, o->big_endian, v);
    }
}

static void str_nullterm(const op *o, unsigned char *p) {
    for (size_t i = 0; i < o->count; i++, p += o->size) {
        unsigned char *nul = memchr(p, 0, o->size);
        if (nul)
            memset(nul, 0, o->size - (size_t)(nul - p));
    }
}

static void str_spacepad(const op *o, unsigned char *p) {
    for (size_t i = 0; i < o->count; i++, p += o->size)
        for (size_t n = o->size; n > 0 && p[n - 1] == ' '; n--)
            p[n - 1] = 0;
}

static void time64(const op *o, unsigned char *p) {
    for (size_t i = 0; i < o->count; i++, p += 8) {
        uint64_t v = load(p, 8, o->big_endian);
        int32_t sec = (int32_t)(uint32_t)(v >> 32), usec = (int32_t)(uint32_t)v;
        double d = (double)sec + (double)usec * 1e-6;
        memcpy(p, &d, 8);
    }
}

void ml_convert_apply(const ml_convert *c, void *buf, uint64_t n_elems) {
    if (!c)
        return;
    unsigned char *e = buf;
    for (uint64_t k = 0; k < n_elems; k++, e += c->elem_size)
        for (size_t i = 0; i < c->n_ops; i++) {
            const op *o = &c->ops[i];
            switch (o->kind) {
            case OP_INT_BITS: int_bits(o, e + o->offset); break;
            case OP_STR_NULLTERM: str_nullterm(o, e + o->offset); break;
            case OP_STR_SPACEPAD: str_spacepad(o, e + o->offset); break;
            case OP_TIME64: time64(o, e + o->offset); break;
            }
        }
}
