/* h5gen.h - write small HDF5 test files with the HDF5 C API, and read them
 * back with H5Dread as the independent truth the core is compared with.
 *
 * Call these only while no stream is running: the core serialises its own
 * HDF5 calls with a lock these helpers do not take.
 */
#ifndef ML_H5GEN_H
#define ML_H5GEN_H

#include <hdf5.h>

#include "check.h"

/* HDF5's type ids are run-time values, so static tables name types by code. */
typedef enum h5gen_tcode {
    TC_NONE = 0, TC_U8, TC_I16, TC_I32, TC_I64, TC_F64, TC_U16BE,
} h5gen_tcode;

typedef struct h5spec {
    const char *path;      /* dataset path (parent groups are created) */
    h5gen_tcode tc;        /* sets `type` (h5gen_type) when type is 0 */
    hid_t type;            /* file and memory type, e.g. H5T_NATIVE_INT32 */
    int ndim;
    hsize_t dims[8];
    hsize_t chunk[8];      /* chunk[0] == 0: contiguous (or compact) */
    int compact;           /* 1 (with chunk[0] == 0): compact layout, data in the object header */
    int deflate;           /* deflate level, 0: none */
    int shuffle;           /* 1: shuffle filter (before deflate) */
    int fletcher;          /* 1: fletcher32 filter (last) */
    const void *fill;      /* NULL: default fill (zeros) */
} h5spec;

#define H5_OK(expr)                                                             \
    do {                                                                          \
        if ((expr) < 0)                                                           \
            FAIL("HDF5 call failed: %s", #expr);                                  \
    } while (0)

static inline hid_t h5gen_type(h5spec *s) {
    if (!s->type) {
        switch (s->tc) {
        case TC_U8: s->type = H5T_NATIVE_UINT8; break;
        case TC_I16: s->type = H5T_NATIVE_INT16; break;
        case TC_I32: s->type = H5T_NATIVE_INT32; break;
        case TC_I64: s->type = H5T_NATIVE_INT64; break;
        case TC_F64: s->type = H5T_NATIVE_DOUBLE; break;
        case TC_U16BE: s->type = H5T_STD_U16BE; break;
        case TC_NONE: FAIL("h5spec %s has no type", s->path);
        }
    }
    return s->type;
}

static inline size_t h5gen_elems(const h5spec *s) {
    size_t n = 1;
    for (int d = 0; d < s->ndim; d++)
        n *= s->dims[d];
    return n;
}

/* Create (truncate) a file; returns its id. */
static inline hid_t h5gen_create(const char *file) {
    hid_t fid = H5Fcreate(file, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (fid < 0)
        FAIL("H5Fcreate(%s) failed", file);
    return fid;
}

/* Create (truncate) a file with a user block of `userblock` bytes (0:
 * none) and, if `latest`, HDF5's newest format (layout message version 4:
 * fixed and extensible array chunk indexes). Returns its id. */
static inline hid_t h5gen_create_ex(const char *file, hsize_t userblock, int latest) {
    hid_t fcpl = H5Pcreate(H5P_FILE_CREATE), fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (userblock)
        H5_OK(H5Pset_userblock(fcpl, userblock));
    if (latest)
        H5_OK(H5Pset_libver_bounds(fapl, H5F_LIBVER_LATEST, H5F_LIBVER_LATEST));
    hid_t fid = H5Fcreate(file, H5F_ACC_TRUNC, fcpl, fapl);
    if (fid < 0)
        FAIL("H5Fcreate(%s) failed", file);
    H5Pclose(fapl);
    H5Pclose(fcpl);
    return fid;
}

/* Create the dataset and write rows [row0, row0 + nrows) of `data` (the
 * whole dataset's buffer, row-major); other rows stay unwritten (with
 * chunked storage, chunks they alone cover stay unallocated). */
static inline void h5gen_dataset_rows(hid_t fid, const h5spec *s, const void *data,
                                      hsize_t row0, hsize_t nrows) {
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
    H5_OK(H5Pset_create_intermediate_group(lcpl, 1));
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    if (s->chunk[0]) {
        H5_OK(H5Pset_chunk(dcpl, s->ndim, s->chunk));
        if (s->shuffle)
            H5_OK(H5Pset_shuffle(dcpl));
        if (s->deflate)
            H5_OK(H5Pset_deflate(dcpl, (unsigned)s->deflate));
        if (s->fletcher)
            H5_OK(H5Pset_fletcher32(dcpl));
    } else if (s->compact) {
        H5_OK(H5Pset_layout(dcpl, H5D_COMPACT));
    }
    if (s->fill)
        H5_OK(H5Pset_fill_value(dcpl, s->type, s->fill));
    hid_t space = H5Screate_simple(s->ndim, s->dims, NULL);
    hid_t ds = H5Dcreate2(fid, s->path, s->type, space, lcpl, dcpl, H5P_DEFAULT);
    if (ds < 0)
        FAIL("H5Dcreate2(%s) failed", s->path);
    if (data && nrows > 0) {
        hsize_t start[8] = {0}, count[8];
        for (int d = 0; d < s->ndim; d++)
            count[d] = s->dims[d];
        start[0] = row0;
        count[0] = nrows;
        hid_t fsel = H5Scopy(space);
        H5_OK(H5Sselect_hyperslab(fsel, H5S_SELECT_SET, start, NULL, count, NULL));
        hid_t msel = H5Scopy(space);
        H5_OK(H5Sselect_hyperslab(msel, H5S_SELECT_SET, start, NULL, count, NULL));
        H5_OK(H5Dwrite(ds, s->type, msel, fsel, H5P_DEFAULT, data));
        H5Sclose(msel);
        H5Sclose(fsel);
    }
    H5Dclose(ds);
    H5Sclose(space);
    H5Pclose(dcpl);
    H5Pclose(lcpl);
}

static inline void h5gen_dataset(hid_t fid, const h5spec *s, const void *data) {
    h5gen_dataset_rows(fid, s, data, 0, s->dims[0]);
}

/* Rows [row0, row0 + n) of dataset `path` as HDF5 reads them, in `type`. */
static inline void h5gen_read_rows(const char *file, const char *path, hid_t type, hsize_t row0,
                                   hsize_t n, void *out) {
    hid_t fid = H5Fopen(file, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (fid < 0)
        FAIL("H5Fopen(%s) failed", file);
    hid_t ds = H5Dopen2(fid, path, H5P_DEFAULT);
    if (ds < 0)
        FAIL("H5Dopen2(%s) failed", path);
    hid_t fspace = H5Dget_space(ds);
    int nd = H5Sget_simple_extent_ndims(fspace);
    hsize_t dims[8], start[8] = {0};
    H5Sget_simple_extent_dims(fspace, dims, NULL);
    start[0] = row0;
    dims[0] = n;
    H5_OK(H5Sselect_hyperslab(fspace, H5S_SELECT_SET, start, NULL, dims, NULL));
    hid_t mspace = H5Screate_simple(nd, dims, NULL);
    H5_OK(H5Dread(ds, type, mspace, fspace, H5P_DEFAULT, out));
    H5Sclose(mspace);
    H5Sclose(fspace);
    H5Dclose(ds);
    H5Fclose(fid);
}

#endif
