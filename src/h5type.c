/* h5type.c - HDF5 datatypes to ml_type trees, as h5py names them.
 *
 * Invariants: a type is accepted only if the core can hand its bytes out
 * as the numpy dtype h5py reports, unconverted or converted in place
 * without changing the element size (convert.c): integers of 1, 2, 4, 8
 * bytes (any precision and bit offset inside them), IEEE binary16/32/64
 * floats, h5py's bool enum, fixed-length strings (any padding), PyTables'
 * Time32 and Time64, compounds whose members lie inside them, arrays
 * whose size is their shape times their base; everything else is
 * -ML_ETYPE naming the type. Sizes from the file are overflow-checked. Called under the HDF5
 * lock (h5internal.h) by h5open.c and vlen.c, so both name types one way.
 *
 * Workload: once per open, recursing over compound members and array
 * bases.
 */
#include "h5internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* Is this float type laid out as IEEE binary16/32/64? */
static int float_is_ieee(hid_t tid, size_t size) {
    size_t spos, epos, esize, mpos, msize;
    if (H5Tget_fields(tid, &spos, &epos, &esize, &mpos, &msize) < 0)
        return 0;
    if (size == 2)
        return spos == 15 && epos == 10 && esize == 5 && mpos == 0 && msize == 10;
    if (size == 4)
        return spos == 31 && epos == 23 && esize == 8 && mpos == 0 && msize == 23;
    if (size == 8)
        return spos == 63 && epos == 52 && esize == 11 && mpos == 0 && msize == 52;
    return 0;
}

/* h5py stores numpy bool as enum {FALSE=0, TRUE=1} over a 1-byte integer. */
static int enum_is_bool(hid_t tid) {
    if (H5Tget_size(tid) != 1 || H5Tget_nmembers(tid) != 2)
        return 0;
    int ok = 1;
    for (unsigned i = 0; i < 2 && ok; i++) {
        char *name = H5Tget_member_name(tid, i);
        signed char v = 0;
        if (!name || H5Tget_member_value(tid, i, &v) < 0) {
            ok = 0;
        } else if (!((strcmp(name, "FALSE") == 0 && v == 0) ||
                     (strcmp(name, "TRUE") == 0 && v == 1))) {
            ok = 0;
        }
        if (name)
            H5free_memory(name);
    }
    return ok;
}

int ml_type_from_h5(hid_t tid, ml_type **out, ml_error *err,
                    const char *where) {
    ml_type *t = calloc(1, sizeof *t);
    int rc = 0;
    if (!t)
        return ml_error_set(err, -ENOMEM, "out of memory");
    t->size = H5Tget_size(tid);
    H5T_class_t cls = H5Tget_class(tid);
    if (t->size == 0) {
        free(t);
        return ml_error_set(err, -ML_EHDF5, "cannot read the size of a datatype in %s", where);
    }
    switch (cls) {
    case H5T_INTEGER:
    case H5T_BITFIELD:
        t->kind = (cls == H5T_INTEGER && H5Tget_sign(tid) == H5T_SGN_2)
                      ? ML_T_INT : ML_T_UINT;
        t->big_endian = H5Tget_order(tid) == H5T_ORDER_BE;
        if (t->size != 1 && t->size != 2 && t->size != 4 && t->size != 8) {
            rc = ml_error_set(err, -ML_ETYPE,
                              "unsupported datatype: %zu-byte integer in %s",
                              t->size, where);
            break;
        }
        {
            size_t prec = H5Tget_precision(tid);
            int off = H5Tget_offset(tid);
            if (prec == 0 || off < 0 || prec > t->size * 8 || (size_t)off > t->size * 8 - prec) {
                rc = ml_error_set(err, -ML_ETYPE, "integer datatype of %zu bits at bit %d does not fit its %zu bytes in %s",
                                  prec, off, t->size, where);
                break;
            }
            t->precision = (unsigned)prec;
            t->bit_offset = (unsigned)off;
        }
        break;
    case H5T_FLOAT:
        t->kind = ML_T_FLOAT;
        t->big_endian = H5Tget_order(tid) == H5T_ORDER_BE;
        if (!float_is_ieee(tid, t->size)) {
            /* HDF5 rounds such floats into IEEE ones on read; we do not imitate its rounding. */
            size_t spos = 0, epos = 0, esize = 0, mpos = 0, msize = 0;
            H5Tget_fields(tid, &spos, &epos, &esize, &mpos, &msize);
            rc = ml_error_set(err, -ML_ETYPE,
                              "unsupported datatype: %zu-byte float with a non-IEEE layout (sign bit %zu, "
                              "%zu exponent bits at %zu, %zu mantissa bits at %zu) in %s",
                              t->size, spos, esize, epos, msize, mpos, where);
        }
        break;
    case H5T_STRING:
        if (H5Tis_variable_str(tid) > 0) {
            /* Python objects, one per element: never in a ring slot or a
             * stage. vlen.c reads them for Reader.read and get_generator. */
            rc = ml_error_set(err, -ML_ETYPE,
                              "unsupported datatype: variable-length string in %s (a Python object per "
                              "element, which cannot live in a ring slot or a stage; a dataset of strings is "
                              "read by Reader.read() and Streamer.get_generator())",
                              where);
            break;
        }
        t->kind = ML_T_STRING;
        {
            H5T_str_t pad = H5Tget_strpad(tid);
            H5T_cset_t cs = H5Tget_cset(tid);
            if (pad != H5T_STR_NULLTERM && pad != H5T_STR_NULLPAD && pad != H5T_STR_SPACEPAD) {
                rc = ml_error_set(err, -ML_ETYPE, "unsupported datatype: string padding %d in %s", (int)pad, where);
                break;
            }
            t->pad = (ml_str_pad)pad;
            t->cset = cs == H5T_CSET_UTF8;
        }
        break;
    case H5T_ENUM: {
        if (enum_is_bool(tid)) {
            t->kind = ML_T_BOOL;
            break;
        }
        hid_t super = H5Tget_super(tid);
        ml_type *base = NULL;
        rc = super < 0 ? ml_error_set(err, -ML_EHDF5, "cannot read enum base type in %s", where)
                       : ml_type_from_h5(super, &base, err, where);
        if (super >= 0)
            H5Tclose(super);
        if (rc == 0) {
            /* Enums read as their base integer, as h5py reports them. */
            *t = *base;
            free(base);
        }
        break;
    }
    case H5T_COMPOUND: {
        int n = H5Tget_nmembers(tid);
        t->kind = ML_T_COMPOUND;
        if (n <= 0) {
            rc = ml_error_set(err, -ML_ETYPE, "unsupported datatype: empty compound in %s", where);
            break;
        }
        t->member_names = calloc((size_t)n, sizeof(char *));
        t->member_offsets = calloc((size_t)n, sizeof(size_t));
        t->members = calloc((size_t)n, sizeof(ml_type *));
        if (!t->member_names || !t->member_offsets || !t->members) {
            rc = ml_error_set(err, -ENOMEM, "out of memory");
            break;
        }
        t->n_members = (unsigned)n;
        for (unsigned i = 0; i < (unsigned)n && rc == 0; i++) {
            char *name = H5Tget_member_name(tid, i);
            t->member_names[i] = name ? strdup(name) : NULL;
            if (name)
                H5free_memory(name);
            if (!t->member_names[i]) {
                rc = ml_error_set(err, -ML_EHDF5, "cannot read compound member name in %s", where);
                break;
            }
            t->member_offsets[i] = H5Tget_member_offset(tid, i);
            hid_t mt = H5Tget_member_type(tid, i);
            if (mt < 0) {
                rc = ml_error_set(err, -ML_EHDF5, "cannot read compound member type in %s", where);
                break;
            }
            rc = ml_type_from_h5(mt, &t->members[i], err, where);
            H5Tclose(mt);
            /* Every member inside the compound: what numpy's dtype requires. */
            if (rc == 0 && (t->member_offsets[i] > t->size || t->members[i]->size > t->size - t->member_offsets[i]))
                rc = ml_error_set(err, -ML_ETYPE, "compound member '%s' lies outside its %zu-byte compound in %s",
                                  t->member_names[i], t->size, where);
        }
        break;
    }
    case H5T_ARRAY: {
        int nd = H5Tget_array_ndims(tid);
        hsize_t dims[H5S_MAX_RANK];
        t->kind = ML_T_ARRAY;
        if (nd <= 0 || nd > ML_MAX_DIMS || H5Tget_array_dims2(tid, dims) < 0) {
            rc = ml_error_set(err, -ML_ETYPE, "unsupported datatype: array member in %s", where);
            break;
        }
        t->ndim = (unsigned)nd;
        for (int i = 0; i < nd; i++)
            t->dims[i] = dims[i];
        hid_t super = H5Tget_super(tid);
        if (super < 0) {
            rc = ml_error_set(err, -ML_EHDF5, "cannot read array base type in %s", where);
            break;
        }
        rc = ml_type_from_h5(super, &t->base, err, where);
        H5Tclose(super);
        /* The array's size must be its shape times its base: a numpy subarray. */
        uint64_t n = 1;
        for (unsigned i = 0; rc == 0 && i < t->ndim; i++)
            if (!ml_mul_ok(n, t->dims[i], &n))
                n = 0;
        if (rc == 0 && (!ml_mul_ok(n, t->base->size, &n) || n != t->size))
            rc = ml_error_set(err, -ML_ETYPE, "array type of %zu bytes is not its shape times its %zu-byte base in %s",
                              t->size, t->base->size, where);
        break;
    }
    case H5T_VLEN:
        rc = ml_error_set(err, -ML_ETYPE, "unsupported datatype: variable-length sequence in %s", where);
        break;
    case H5T_REFERENCE:
        rc = ml_error_set(err, -ML_ETYPE, "unsupported datatype: object/region reference in %s", where);
        break;
    case H5T_OPAQUE:
        rc = ml_error_set(err, -ML_ETYPE, "unsupported datatype: opaque in %s", where);
        break;
    case H5T_TIME:
        /* h5py cannot read HDF5 time types. PyTables' Time32Col stores
         * plain int32 seconds: read as int32, as PyTables does. Its
         * Time64Col stores (seconds << 32 | microseconds), which PyTables
         * converts to float64 seconds on read: so do we (convert.c). */
        t->big_endian = H5Tget_order(tid) == H5T_ORDER_BE;
        if (t->size == 4) {
            t->kind = ML_T_INT;
            t->precision = 32;
        } else if (t->size == 8) {
            t->kind = ML_T_TIME64;
        } else {
            rc = ml_error_set(err, -ML_ETYPE,
                              "unsupported datatype: %zu-byte time (PyTables Time64, converted on read) in %s",
                              t->size, where);
        }
        break;
    default:
        rc = ml_error_set(err, -ML_ETYPE, "unsupported datatype class %d in %s", (int)cls, where);
        break;
    }
    if (rc < 0) {
        ml_type_free(t);
        return rc;
    }
    *out = t;
    return 0;
}

