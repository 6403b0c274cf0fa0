/* h5write.c - the Writer's HDF5 calls (h5write.h).
 *
 * Invariants: every HDF5 call here runs under ml_h5_lock(), the one lock
 * of the process (h5internal.h); functions say whether they take it or
 * expect it held. Datasets are made as h5py makes them: chunked, the
 * filters in the order given (the binding passes h5py's: shuffle,
 * compression, fletcher32), deflate and shuffle and fletcher32 through
 * HDF5's own property calls (so HDF5 fills their client data as it would
 * for h5py), lzf as filter 32000, optional, with h5py's client data
 * (version 4, liblzf's version, the chunk's bytes). A process that has no
 * lzf filter in its HDF5 gets ours registered, so HDF5 here can read an
 * lzf chunk back for an edge merge. HDF5's exclusive file lock is
 * released right after the open (what another process sees is consistent
 * after ml_h5w_sync; the Writer's documentation says so); the file keeps
 * HDF5's default locking setting, which a read-only open in this process
 * must match. An existing dataset is written only if
 * the type built back from what it reads as is the very type stored
 * (H5Tequal): then the bytes the binding hands in are the bytes stored.
 *
 * Workload: a handful of calls per dataset, one H5Dwrite_chunk per chunk,
 * one flush per ml_writer_sync.
 */
#include "h5write.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#ifdef ML_HAVE_LZF
#include <lzf.h>
#endif

#include "fault.h"
#include "h5internal.h"

#define LZF_FILTER_VERSION 4 /* h5py's H5PY_FILTER_LZF_VERSION */
#ifndef LZF_VERSION
#define LZF_VERSION 0x0105
#endif

#ifdef ML_HAVE_LZF
/* h5py's lzf filter (lzf_filter.c), both directions, for an HDF5 that has
 * none: compress into at most the input's size (failing, so HDF5 skips
 * the optional filter, when it does not shrink); decompress into the
 * chunk's size from cd_values[2], growing on E2BIG. */
static size_t lzf_h5_filter(unsigned flags, size_t cd_nelmts, const unsigned cd_values[], size_t nbytes,
                            size_t *buf_size, void **buf) {
    void *out = NULL;
    size_t out_size = 0;
    unsigned n = 0;
    if (!(flags & H5Z_FLAG_REVERSE)) {
        out_size = nbytes;
        if (!(out = malloc(out_size)))
            return 0;
        n = lzf_compress(*buf, (unsigned)nbytes, out, (unsigned)out_size);
        if (n == 0) {
            free(out);
            return 0;
        }
    } else {
        out_size = cd_nelmts >= 3 && cd_values[2] ? cd_values[2] : *buf_size;
        for (;;) {
            if (!(out = malloc(out_size)))
                return 0;
            n = lzf_decompress(*buf, (unsigned)nbytes, out, (unsigned)out_size);
            if (n != 0)
                break;
            free(out);
            if (errno != E2BIG || out_size > ((size_t)1 << 31))
                return 0;
            out_size *= 2;
        }
    }
    free(*buf);
    *buf = out;
    *buf_size = out_size;
    return n;
}

static const H5Z_class2_t lzf_class = {
    H5Z_CLASS_T_VERS, (H5Z_filter_t)ML_FILTER_LZF, 1, 1, "lzf (multiload)", NULL, NULL, lzf_h5_filter,
};
#endif

/* Register our lzf filter with HDF5 if it has none. Caller holds the lock. */
static void lzf_register(void) {
#ifdef ML_HAVE_LZF
    static int done; /* guarded by the HDF5 lock */
    if (!done && H5Zfilter_avail((H5Z_filter_t)ML_FILTER_LZF) <= 0)
        H5Zregister(&lzf_class);
    done = 1;
#endif
}

int ml_h5w_file_open(const char *path, int truncate, hid_t *file, ml_error *err) {
    struct stat st;
    int exists = stat(path, &st) == 0;
    if (exists && S_ISDIR(st.st_mode))
        return ml_error_set(err, -EISDIR, "cannot open '%s' for writing: is a directory", path);
    if (exists) {
        int fd = open(path, O_RDWR | O_CLOEXEC);
        if (fd < 0)
            return ml_error_set(err, -errno, "cannot open '%s' for writing: %s", path, strerror(errno));
        close(fd);
    } else {
        int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (fd < 0)
            return ml_error_set(err, -errno, "cannot create '%s': %s", path, strerror(errno));
        close(fd);
        unlink(path); /* HDF5 creates it; we only asked the folder */
        truncate = 1;
    }
    int rc = 0;
    ml_h5_lock();
    lzf_register();
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (fapl < 0) {
        rc = ml_error_set(err, -ML_EHDF5, "cannot open '%s': HDF5 property list", path);
        goto out;
    }
    if (!truncate && H5Fis_hdf5(path) <= 0) {
        rc = ml_error_set(err, -ML_ENOTHDF5, "cannot open '%s' for appending: not an HDF5 file", path);
        goto out;
    }
    *file = truncate ? H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, fapl) : H5Fopen(path, H5F_ACC_RDWR, fapl);
    if (*file < 0) {
        /* The file is writable (checked above): HDF5 refuses RDWR when
         * this process has it open read-only already. */
        rc = ml_error_set(err, -EBUSY,
                          "cannot open '%s' for writing: this process has it open read-only "
                          "(a multiload Reader, Streamer or FileLoader); close that first",
                          path);
    } else {
        /* HDF5 took its exclusive flock for the file's life; give it back
         * so other processes can open the file (consistent after each
         * ml_h5w_sync). The file's own locking setting stays the default,
         * which a Reader of this process opening it read-only must match. */
        int *fdp = NULL;
        if (H5Fget_vfd_handle(*file, H5P_DEFAULT, (void **)&fdp) >= 0 && fdp)
            flock(*fdp, LOCK_UN);
    }
out:
    if (fapl >= 0)
        H5Pclose(fapl);
    ml_h5_unlock();
    return rc;
}

/* The HDF5 type of core type t, or -1 (-ML_ETYPE). Caller holds the lock. */
static hid_t type_to_h5(const ml_type *t) {
    hid_t h = -1, base;
    switch (t->kind) {
    case ML_T_INT:
    case ML_T_UINT: {
        hid_t le[2][4] = {{H5T_STD_I8LE, H5T_STD_I16LE, H5T_STD_I32LE, H5T_STD_I64LE},
                          {H5T_STD_U8LE, H5T_STD_U16LE, H5T_STD_U32LE, H5T_STD_U64LE}};
        hid_t be[2][4] = {{H5T_STD_I8BE, H5T_STD_I16BE, H5T_STD_I32BE, H5T_STD_I64BE},
                          {H5T_STD_U8BE, H5T_STD_U16BE, H5T_STD_U32BE, H5T_STD_U64BE}};
        int u = t->kind == ML_T_UINT, k = t->size == 1 ? 0 : t->size == 2 ? 1 : t->size == 4 ? 2 : t->size == 8 ? 3 : -1;
        if (k < 0 || (t->precision && t->precision != t->size * 8) || t->bit_offset)
            return -1;
        return H5Tcopy(t->big_endian ? be[u][k] : le[u][k]);
    }
    case ML_T_FLOAT:
        if (t->size == 4)
            return H5Tcopy(t->big_endian ? H5T_IEEE_F32BE : H5T_IEEE_F32LE);
        if (t->size == 8)
            return H5Tcopy(t->big_endian ? H5T_IEEE_F64BE : H5T_IEEE_F64LE);
        if (t->size == 2) { /* h5py's IEEE binary16 */
            h = H5Tcopy(t->big_endian ? H5T_IEEE_F32BE : H5T_IEEE_F32LE);
            if (h < 0 || H5Tset_fields(h, 15, 10, 5, 0, 10) < 0 || H5Tset_size(h, 2) < 0 || H5Tset_ebias(h, 15) < 0) {
                if (h >= 0)
                    H5Tclose(h);
                return -1;
            }
            return h;
        }
        return -1;
    case ML_T_BOOL: {
        signed char f = 0, tr = 1;
        h = H5Tenum_create(H5T_NATIVE_INT8);
        if (h < 0 || H5Tenum_insert(h, "FALSE", &f) < 0 || H5Tenum_insert(h, "TRUE", &tr) < 0) {
            if (h >= 0)
                H5Tclose(h);
            return -1;
        }
        return h;
    }
    case ML_T_STRING:
        h = H5Tcopy(H5T_C_S1);
        if (h < 0 || H5Tset_size(h, t->size) < 0 ||
            H5Tset_strpad(h, (H5T_str_t)t->pad) < 0 ||
            H5Tset_cset(h, t->cset ? H5T_CSET_UTF8 : H5T_CSET_ASCII) < 0) {
            if (h >= 0)
                H5Tclose(h);
            return -1;
        }
        return h;
    case ML_T_COMPOUND:
        h = H5Tcreate(H5T_COMPOUND, t->size);
        if (h < 0)
            return -1;
        for (unsigned i = 0; i < t->n_members; i++) {
            hid_t m = type_to_h5(t->members[i]);
            herr_t e = m < 0 ? -1 : H5Tinsert(h, t->member_names[i], t->member_offsets[i], m);
            if (m >= 0)
                H5Tclose(m);
            if (e < 0) {
                H5Tclose(h);
                return -1;
            }
        }
        return h;
    case ML_T_ARRAY: {
        hsize_t dims[ML_MAX_DIMS];
        for (unsigned i = 0; i < t->ndim; i++)
            dims[i] = t->dims[i];
        base = type_to_h5(t->base);
        if (base < 0)
            return -1;
        h = H5Tarray_create2(base, t->ndim, dims);
        H5Tclose(base);
        return h;
    }
    default:
        return -1;
    }
}

int ml_h5w_create(hid_t file, const char *path, const char *name, const ml_type *t, const ml_wparams *p,
                  const void *fill, hid_t *dset, ml_error *err) {
    hsize_t dims[ML_MAX_DIMS], maxd[ML_MAX_DIMS], chunk[ML_MAX_DIMS];
    hid_t type = -1, space = -1, dcpl = -1, lcpl = -1;
    int rc = 0;
    uint64_t chunk_bytes = t->size;
    for (unsigned i = 0; i < p->ndim; i++) {
        dims[i] = p->shape[i];
        maxd[i] = p->maxshape[i] == ML_WRITER_UNLIMITED ? H5S_UNLIMITED : p->maxshape[i];
        chunk[i] = p->chunks[i];
        chunk_bytes *= p->chunks[i];
    }
    ml_h5_lock();
    htri_t there = H5Lexists(file, name, H5P_DEFAULT);
    if (there > 0) {
        rc = ml_error_set(err, -EEXIST, "'%s' in '%s' exists already", name, path);
        goto out;
    }
    if ((type = type_to_h5(t)) < 0) {
        rc = ml_error_set(err, -ML_ETYPE, "dataset '%s' in '%s': the datatype has no HDF5 equivalent the Writer makes",
                          name, path);
        goto out;
    }
    if ((space = H5Screate_simple((int)p->ndim, dims, maxd)) < 0 || (dcpl = H5Pcreate(H5P_DATASET_CREATE)) < 0 ||
        (lcpl = H5Pcreate(H5P_LINK_CREATE)) < 0 || H5Pset_create_intermediate_group(lcpl, 1) < 0 ||
        H5Pset_chunk(dcpl, (int)p->ndim, chunk) < 0 || H5Pset_obj_track_times(dcpl, 0) < 0) {
        rc = ml_error_set(err, -ML_EHDF5, "dataset '%s' in '%s': HDF5 refused the shape or chunks", name, path);
        goto out;
    }
    for (unsigned i = 0; i < p->pipe.n_filters; i++) {
        const ml_filter *f = &p->pipe.filters[i];
        herr_t e = -1;
        if (f->id == ML_FILTER_DEFLATE)
            e = H5Pset_deflate(dcpl, f->n_values ? f->values[0] : 4);
        else if (f->id == ML_FILTER_SHUFFLE)
            e = H5Pset_shuffle(dcpl);
        else if (f->id == ML_FILTER_FLETCHER32)
            e = H5Pset_fletcher32(dcpl);
        else if (f->id == ML_FILTER_LZF) {
            unsigned cd[3] = {LZF_FILTER_VERSION, LZF_VERSION, (unsigned)chunk_bytes};
            e = H5Pset_filter(dcpl, (H5Z_filter_t)ML_FILTER_LZF, H5Z_FLAG_OPTIONAL, 3, cd);
        }
        if (e < 0) {
            rc = ml_error_set(err, -ML_EFILTER, "dataset '%s' in '%s': HDF5 refused filter %d", name, path, f->id);
            goto out;
        }
    }
    if (fill && H5Pset_fill_value(dcpl, type, fill) < 0) {
        rc = ml_error_set(err, -ML_EHDF5, "dataset '%s' in '%s': HDF5 refused the fill value", name, path);
        goto out;
    }
    *dset = H5Dcreate2(file, name, type, space, lcpl, dcpl, H5P_DEFAULT);
    if (*dset < 0)
        rc = ml_error_set(err, -ML_EHDF5, "cannot create dataset '%s' in '%s' (HDF5 refused it)", name, path);
out:
    if (lcpl >= 0)
        H5Pclose(lcpl);
    if (dcpl >= 0)
        H5Pclose(dcpl);
    if (space >= 0)
        H5Sclose(space);
    if (type >= 0)
        H5Tclose(type);
    ml_h5_unlock();
    return rc;
}

int ml_h5w_open(hid_t file, const char *path, const char *name, hid_t *dset_out, ml_wparams *p, ml_type **t_out,
                unsigned char **fill_out, ml_error *err) {
    hid_t dset = -1, type = -1, space = -1, dcpl = -1, back = -1;
    ml_type *t = NULL;
    unsigned char *fill = NULL;
    hsize_t dims[ML_MAX_DIMS], maxd[ML_MAX_DIMS], chunk[ML_MAX_DIMS];
    int rc = 0;
    memset(p, 0, sizeof *p);
    ml_h5_lock();
    htri_t there = H5Lexists(file, name, H5P_DEFAULT);
    if (there <= 0) {
        rc = ml_error_set(err, -ML_ENOTFOUND, "no dataset '%s' in '%s'", name, path);
        goto out;
    }
    H5O_info_t oi;
    if (H5Oget_info_by_name2(file, name, &oi, H5O_INFO_BASIC, H5P_DEFAULT) < 0 || oi.type != H5O_TYPE_DATASET) {
        rc = ml_error_set(err, -ML_ENOTDSET, "'%s' in '%s' is not a dataset", name, path);
        goto out;
    }
    if ((dset = H5Dopen2(file, name, H5P_DEFAULT)) < 0 || (type = H5Dget_type(dset)) < 0 ||
        (space = H5Dget_space(dset)) < 0 || (dcpl = H5Dget_create_plist(dset)) < 0) {
        rc = ml_error_set(err, -ML_EHDF5, "cannot open dataset '%s' in '%s'", name, path);
        goto out;
    }
    int nd = H5Sget_simple_extent_ndims(space);
    if (nd < 1 || nd > ML_MAX_DIMS) {
        rc = ml_error_set(err, -ML_ESHAPE, "dataset '%s' in '%s': the Writer writes datasets of 1 to %d dims", name,
                          path, ML_MAX_DIMS);
        goto out;
    }
    if (H5Pget_layout(dcpl) != H5D_CHUNKED) {
        rc = ml_error_set(err, -ML_EFILTER,
                          "dataset '%s' in '%s' is not chunked: the Writer writes whole chunks only", name, path);
        goto out;
    }
    p->ndim = (unsigned)nd;
    H5Sget_simple_extent_dims(space, dims, maxd);
    H5Pget_chunk(dcpl, nd, chunk);
    for (int i = 0; i < nd; i++) {
        p->shape[i] = dims[i];
        p->maxshape[i] = maxd[i] == H5S_UNLIMITED ? ML_WRITER_UNLIMITED : maxd[i];
        p->chunks[i] = chunk[i];
    }
    int nf = H5Pget_nfilters(dcpl);
    if (nf < 0 || nf > ML_MAX_FILTERS) {
        rc = ml_error_set(err, -ML_EHDF5, "dataset '%s' in '%s': cannot read its filters", name, path);
        goto out;
    }
    for (int i = 0; i < nf; i++) {
        ml_filter *f = &p->pipe.filters[i];
        size_t nv = 8;
        unsigned flags = 0;
        H5Z_filter_t id = H5Pget_filter2(dcpl, (unsigned)i, &flags, &nv, f->values, 0, NULL, NULL);
        f->id = (int)id;
        f->flags = flags;
        f->n_values = nv < 8 ? nv : 8;
        if (id != ML_FILTER_DEFLATE && id != ML_FILTER_SHUFFLE && id != ML_FILTER_FLETCHER32 &&
            id != ML_FILTER_LZF) {
            rc = ml_error_set(err, -ML_EFILTER,
                              "dataset '%s' in '%s' uses filter %d: the Writer encodes only gzip, lzf, shuffle "
                              "and fletcher32",
                              name, path, (int)id);
            goto out;
        }
    }
    p->pipe.n_filters = (unsigned)nf;
    char where[600];
    snprintf(where, sizeof where, "dataset '%s' in '%s'", name, path);
    if ((rc = ml_type_from_h5(type, &t, err, where)) < 0)
        goto out;
    back = type_to_h5(t);
    if (back < 0 || H5Tequal(back, type) <= 0) {
        rc = ml_error_set(err, -ML_ETYPE, "%s: its datatype is read converted; the Writer cannot write it", where);
        goto out;
    }
    if (!(fill = calloc(1, t->size ? t->size : 1))) {
        rc = ml_error_set(err, -ENOMEM, "%s: no memory", where);
        goto out;
    }
    H5D_fill_value_t def;
    if (H5Pfill_value_defined(dcpl, &def) >= 0 && def != H5D_FILL_VALUE_UNDEFINED)
        H5Pget_fill_value(dcpl, type, fill);
out:
    if (back >= 0)
        H5Tclose(back);
    if (dcpl >= 0)
        H5Pclose(dcpl);
    if (space >= 0)
        H5Sclose(space);
    if (type >= 0)
        H5Tclose(type);
    if (rc < 0 && dset >= 0)
        H5Dclose(dset);
    ml_h5_unlock();
    if (rc < 0) {
        ml_type_free(t);
        free(fill);
        return rc;
    }
    *dset_out = dset;
    *t_out = t;
    *fill_out = fill;
    return 0;
}

int ml_h5w_grow(hid_t dset, ml_wparams *p, uint64_t rows0) {
    hsize_t dims[ML_MAX_DIMS];
    for (unsigned i = 0; i < p->ndim; i++)
        dims[i] = p->shape[i];
    dims[0] = rows0;
    if (H5Dset_extent(dset, dims) < 0)
        return -ML_EHDF5;
    p->shape[0] = rows0;
    return 0;
}

int ml_h5w_chunk_write(hid_t dset, unsigned ndim, const uint64_t *offset, unsigned mask, const void *buf,
                       size_t len) {
    hsize_t off[ML_MAX_DIMS];
    for (unsigned i = 0; i < ndim; i++)
        off[i] = offset[i];
    int rc = ml_fault_write();
    if (rc < 0)
        return rc;
    errno = 0;
    if (H5Dwrite_chunk(dset, H5P_DEFAULT, mask, off, len, buf) < 0) {
        int e = errno;
        return e == ENOSPC || e == EDQUOT || e == EIO || e == EFBIG || e == EROFS ? -e : -ML_EHDF5;
    }
    return 0;
}

int ml_h5w_rows_read(hid_t dset, const ml_wparams *p, uint64_t row0, uint64_t n, void *buf) {
    hsize_t start[ML_MAX_DIMS] = {0}, count[ML_MAX_DIMS];
    for (unsigned i = 0; i < p->ndim; i++)
        count[i] = p->shape[i];
    start[0] = row0;
    count[0] = n;
    int rc = 0;
    ml_h5_lock();
    hid_t type = H5Dget_type(dset), fspace = H5Dget_space(dset), mspace = H5Screate_simple((int)p->ndim, count, NULL);
    if (type < 0 || fspace < 0 || mspace < 0 ||
        H5Sselect_hyperslab(fspace, H5S_SELECT_SET, start, NULL, count, NULL) < 0 ||
        H5Dread(dset, type, mspace, fspace, H5P_DEFAULT, buf) < 0)
        rc = -ML_EHDF5;
    if (mspace >= 0)
        H5Sclose(mspace);
    if (fspace >= 0)
        H5Sclose(fspace);
    if (type >= 0)
        H5Tclose(type);
    ml_h5_unlock();
    return rc;
}

int ml_h5w_sync(hid_t file, const char *path, ml_error *err) {
    int rc = 0;
    ml_h5_lock();
    errno = 0;
    if (H5Fflush(file, H5F_SCOPE_GLOBAL) < 0) {
        int e = errno;
        rc = e == ENOSPC || e == EDQUOT || e == EIO ? -e : -ML_EHDF5;
        ml_error_set(err, rc, "cannot flush '%s': HDF5 failed writing its metadata%s%s", path, e ? ": " : "",
                     e ? strerror(e) : "");
        goto out;
    }
    int *fdp = NULL;
    if (H5Fget_vfd_handle(file, H5P_DEFAULT, (void **)&fdp) < 0 || !fdp) {
        rc = ml_error_set(err, -ML_EHDF5, "cannot fsync '%s': no descriptor from HDF5", path);
        goto out;
    }
    if (fsync(*fdp) < 0)
        rc = ml_error_set(err, -errno, "cannot fsync '%s': %s", path, strerror(errno));
out:
    ml_h5_unlock();
    return rc;
}

int ml_h5w_close(hid_t id) {
    if (id < 0)
        return 0;
    int rc = 0;
    ml_h5_lock();
    H5I_type_t k = H5Iget_type(id);
    if ((k == H5I_DATASET ? H5Dclose(id) : k == H5I_FILE ? H5Fclose(id) : 0) < 0)
        rc = -ML_EHDF5;
    ml_h5_unlock();
    return rc;
}
