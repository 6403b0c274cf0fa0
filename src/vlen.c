/* vlen.c - rows of variable-length datasets (PyTables VLArray) through
 * H5Dread.
 *
 * Invariants:
 *  - Every HDF5 call here runs under the one HDF5 lock, taken through
 *    h5internal.h (ml_h5_lock); files are opened by the same opener as
 *    ml_layout_open and element types named by the same mapping
 *    (ml_type_from_h5), so errors and dtypes are the same as for any
 *    other dataset.
 *  - No conversion: the memory type is the vlen of the file's own element
 *    type (what ML_STORE_SLOW does with the file type), so each row's
 *    bytes come out as stored, in the file's byte order, and the dtype the
 *    caller builds from V->base describes them.
 *  - An ml_vlen is immutable after ml_vlen_open(): reads only use its
 *    handles under the lock, so concurrent reads need no other locking.
 *  - HDF5 allocates each row's sequence during H5Dread (its default
 *    allocator); the lock is dropped while we copy them out (plain memory
 *    we own until reclaimed) and taken again to reclaim them, on failure
 *    too, so a read leaks nothing and blocks other HDF5 users only for
 *    the HDF5 calls themselves.
 *
 * Workload: VLArrays are a slow path. The byte offsets of the rows live
 * in the file's global heap, which only HDF5 reads, so there is no native
 * parallel path: one H5Dread per request, of the distinct rows requested
 * (sorted: a hyperslab when they are one run, else a point selection).
 */
#define _GNU_SOURCE
#include "vlen.h"

#include "decode.h"
#include "h5internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* HDF5 1.12 renamed H5Dvlen_reclaim; 1.10.8's header declares H5Treclaim
 * but its library does not export it. */
#if H5_VERSION_GE(1, 12, 0)
#define vlen_reclaim(type, space, buf) H5Treclaim((type), (space), H5P_DEFAULT, (buf))
#else
#define vlen_reclaim(type, space, buf) H5Dvlen_reclaim((type), (space), H5P_DEFAULT, (buf))
#endif

/* H5Dread decodes the row descriptors' chunks: refuse up front a filter
 * the HDF5 library cannot load (PyTables' blosc, which only its own HDF5
 * copy has), rather than fail on every read. Caller holds the lock. */
static int check_filters(ml_vlen *V, ml_error *err) {
    hid_t dcpl = H5Dget_create_plist((hid_t)V->h5_dset);
    int rc = 0;
    if (dcpl < 0)
        return ml_error_set(err, -ML_EHDF5, "cannot read the creation properties of dataset '%s' of file '%s'",
                            V->path, V->filename);
    int nf = H5Pget_nfilters(dcpl);
    for (int i = 0; i < nf && rc == 0; i++) {
        unsigned flags = 0, values[8], cfg = 0;
        size_t nv = 8;
        char name[64] = "";
        H5Z_filter_t id = H5Pget_filter2(dcpl, (unsigned)i, &flags, &nv, values, sizeof name, name, &cfg);
        if (id < 0)
            rc = ml_error_set(err, -ML_EHDF5, "cannot read filter %d of dataset '%s' of file '%s'", i, V->path,
                              V->filename);
        else if (H5Zfilter_avail(id) <= 0)
            rc = ml_error_set(err, -ML_EFILTER,
                              "variable-length dataset '%s' of file '%s' uses filter '%s' (id %d), which the "
                              "HDF5 library cannot decode (%s)", V->path, V->filename, name, (int)id,
                              ml_decode_supports(id) ? "multiload decodes it natively in fixed-size datasets "
                                                       "only: variable-length rows are read by HDF5"
                                                     : "is its HDF5 plugin installed?");
    }
    H5Pclose(dcpl);
    return nf < 0 && rc == 0
               ? ml_error_set(err, -ML_EHDF5, "cannot read the filter pipeline of dataset '%s' of file '%s'",
                              V->path, V->filename)
               : rc;
}

/* Check the dataset's type and shape and build V's element type and memory
 * type. Sets *is_vlen = 0 (and returns 0) when the type is not a
 * variable-length sequence. Caller holds the lock. */
static int describe(ml_vlen *V, int *is_vlen, ml_error *err) {
    char where[600];
    hid_t ftype = -1, super = -1, space = -1;
    int rc = 0;
    *is_vlen = 0;
    ftype = H5Dget_type((hid_t)V->h5_dset);
    if (ftype < 0) {
        rc = ml_error_set(err, -ML_EHDF5, "cannot read the datatype of dataset '%s' of file '%s'", V->path,
                          V->filename);
        goto out;
    }
    if (H5Tget_class(ftype) != H5T_VLEN)
        goto out; /* variable-length strings are H5T_STRING: not ours either */
    *is_vlen = 1;
    snprintf(where, sizeof where, "the elements of variable-length dataset '%s' of file '%s'", V->path,
             V->filename);
    super = H5Tget_super(ftype);
    if (super < 0) {
        rc = ml_error_set(err, -ML_EHDF5, "cannot read %s", where);
        goto out;
    }
    rc = ml_type_from_h5(super, &V->base, err, where);
    if (rc < 0)
        goto out;
    space = H5Dget_space((hid_t)V->h5_dset);
    int nd = space < 0 ? -1 : H5Sget_simple_extent_ndims(space);
    if (nd < 0) {
        rc = ml_error_set(err, -ML_EHDF5, "cannot read the shape of dataset '%s' of file '%s'", V->path,
                          V->filename);
        goto out;
    }
    if (nd != 1 || H5Sget_simple_extent_type(space) != H5S_SIMPLE) {
        rc = ml_error_set(err, -ML_ESHAPE,
                          "variable-length dataset '%s' of file '%s' has %d dimensions: only 1-D ones "
                          "(PyTables VLArray) are read", V->path, V->filename, nd);
        goto out;
    }
    hsize_t dim = 0;
    H5Sget_simple_extent_dims(space, &dim, NULL);
    V->n_rows = dim;
    rc = check_filters(V, err);
    if (rc < 0)
        goto out;
    V->h5_mtype = H5Tvlen_create(super);
    if (V->h5_mtype < 0)
        rc = ml_error_set(err, -ML_EHDF5, "cannot build the memory type of %s", where);
out:
    if (space >= 0)
        H5Sclose(space);
    if (super >= 0)
        H5Tclose(super);
    if (ftype >= 0)
        H5Tclose(ftype);
    return rc;
}

int ml_vlen_open(const char *filename, const char *path, ml_vlen **out, ml_error *err) {
    ml_vlen *V = calloc(1, sizeof *V);
    hid_t file = -1, dset = -1;
    int fd = -1, is_vlen = 0, rc = 0;
    *out = NULL;
    if (!V)
        return ml_error_set(err, -ENOMEM, "out of memory");
    V->h5_file = V->h5_dset = V->h5_mtype = -1;
    V->filename = strdup(filename);
    V->path = strdup(path);
    if (!V->filename || !V->path) {
        rc = ml_error_set(err, -ENOMEM, "out of memory");
        goto fail;
    }
    ml_error local;
    ml_error_clear(&local);
    rc = ml_h5_dataset_open(filename, path, &fd, &file, &dset, &local);
    if (rc == -ML_ENOTDSET) {
        rc = 0; /* a group or a named type: not a variable-length dataset */
        goto fail;
    }
    if (rc < 0) {
        ml_error_set(err, rc, "%s", local.msg);
        goto fail;
    }
    close(fd); /* HDF5 reads every byte here: our descriptor served to check the file */
    V->h5_file = file;
    V->h5_dset = dset;
    ml_h5_lock();
    rc = describe(V, &is_vlen, err);
    ml_h5_unlock();
    if (rc < 0 || !is_vlen)
        goto fail;
    *out = V;
    return 0;
fail:
    ml_vlen_close(V);
    return rc;
}

void ml_vlen_close(ml_vlen *V) {
    if (!V)
        return;
    ml_h5_close_handles((hid_t)V->h5_mtype, (hid_t)V->h5_dset, (hid_t)V->h5_file);
    ml_type_free(V->base);
    free(V->filename);
    free(V->path);
    free(V);
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* Index of `row` in the sorted distinct rows uniq[0..m) (it is there). */
static size_t find_row(const uint64_t *uniq, size_t m, uint64_t row) {
    size_t lo = 0, hi = m;
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (uniq[mid] <= row)
            lo = mid;
        else
            hi = mid;
    }
    return lo;
}

int ml_vlen_read(ml_vlen *V, const uint64_t *rows, size_t n, uint64_t *counts, void **data,
                 size_t *nbytes, ml_error *err) {
    uint64_t *uniq = NULL;
    hsize_t *coords = NULL;
    hvl_t *seqs = NULL;
    unsigned char *outp = NULL;
    hid_t fspace = -1, mspace = -1;
    size_t m = 0, total = 0, esize = V->base->size;
    int rc = 0, read_done = 0;
    *data = NULL;
    *nbytes = 0;
    for (size_t i = 0; i < n; i++)
        if (rows[i] >= V->n_rows)
            return ml_error_set(err, -ML_EINVAL, "row %llu out of range of variable-length dataset '%s' "
                                "of file '%s' with %llu rows", (unsigned long long)rows[i], V->path,
                                V->filename, (unsigned long long)V->n_rows);
    if (n == 0) {
        *data = malloc(1);
        return *data ? 0 : ml_error_set(err, -ENOMEM, "out of memory");
    }
    /* The distinct rows, sorted: HDF5 reads each once, in file order. */
    uniq = malloc(n * sizeof *uniq);
    if (!uniq) {
        rc = ml_error_set(err, -ENOMEM, "out of memory for %zu rows", n);
        goto out;
    }
    memcpy(uniq, rows, n * sizeof *uniq);
    qsort(uniq, n, sizeof *uniq, cmp_u64);
    for (size_t i = 0; i < n; i++)
        if (m == 0 || uniq[i] != uniq[m - 1])
            uniq[m++] = uniq[i];
    seqs = calloc(m, sizeof *seqs); /* zeroed: reclaiming an entry never read is a no-op */
    int run = uniq[m - 1] - uniq[0] == m - 1;
    if (!run)
        coords = malloc(m * sizeof *coords);
    if (!seqs || (!run && !coords)) {
        rc = ml_error_set(err, -ENOMEM, "out of memory for %zu rows", m);
        goto out;
    }
    for (size_t i = 0; !run && i < m; i++)
        coords[i] = uniq[i];

    ml_h5_lock();
    hsize_t start = uniq[0], count = m;
    fspace = H5Dget_space((hid_t)V->h5_dset);
    mspace = H5Screate_simple(1, &count, NULL);
    if (fspace < 0 || mspace < 0 ||
        (run ? H5Sselect_hyperslab(fspace, H5S_SELECT_SET, &start, NULL, &count, NULL)
             : H5Sselect_elements(fspace, H5S_SELECT_SET, m, coords)) < 0)
        rc = -ML_EHDF5;
    else {
        read_done = 1; /* from here on, seqs may hold HDF5's allocations */
        if (H5Dread((hid_t)V->h5_dset, (hid_t)V->h5_mtype, mspace, fspace, H5P_DEFAULT, seqs) < 0)
            rc = -ML_EHDF5;
    }
    ml_h5_unlock();
    if (rc < 0) {
        ml_error_set(err, rc, "HDF5 failed to read %zu rows of variable-length dataset '%s' of file '%s'", m,
                     V->path, V->filename);
        goto out;
    }

    /* Copy out without the lock: seqs is ours until reclaimed. */
    for (size_t i = 0; i < n; i++) {
        size_t len = seqs[find_row(uniq, m, rows[i])].len, b;
        if (__builtin_mul_overflow(len, esize, &b) || __builtin_add_overflow(total, b, &total)) {
            rc = ml_error_set(err, -ENOMEM, "%zu rows of variable-length dataset '%s' exceed the address space",
                              n, V->path);
            goto out;
        }
    }
    outp = malloc(total ? total : 1);
    if (!outp) {
        rc = ml_error_set(err, -ENOMEM, "out of memory for %zu bytes of variable-length dataset '%s'", total,
                          V->path);
        goto out;
    }
    size_t off = 0;
    for (size_t i = 0; i < n; i++) {
        const hvl_t *s = &seqs[find_row(uniq, m, rows[i])];
        counts[i] = s->len;
        if (s->len) {
            memcpy(outp + off, s->p, s->len * esize);
            off += s->len * esize;
        }
    }
    *data = outp;
    *nbytes = total;
    outp = NULL;
out:
    if (read_done || fspace >= 0 || mspace >= 0) {
        ml_h5_lock();
        if (read_done && vlen_reclaim((hid_t)V->h5_mtype, mspace, seqs) < 0 && rc == 0)
            rc = ml_error_set(err, -ML_EHDF5, "HDF5 failed to free the rows read from '%s'", V->path);
        if (mspace >= 0)
            H5Sclose(mspace);
        if (fspace >= 0)
            H5Sclose(fspace);
        ml_h5_unlock();
    }
    if (rc < 0 && *data) {
        free(*data);
        *data = NULL;
        *nbytes = 0;
    }
    free(outp);
    free(seqs);
    free(coords);
    free(uniq);
    return rc;
}
