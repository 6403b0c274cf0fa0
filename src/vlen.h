/* vlen.h - variable-length datasets (PyTables VLArray): each row is a
 * sequence of any length of one element type. Rows are read with H5Dread
 * under the HDF5 lock and copied out concatenated, with one element count
 * per row. The element type is any type the core describes (ml_type), in
 * the file's byte order.
 */
#ifndef ML_VLEN_H
#define ML_VLEN_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "h5layout.h"

typedef struct ml_vlen {
    char *filename;          /* owned, for messages */
    char *path;              /* owned, dataset path as given */
    uint64_t n_rows;         /* the dataset's length (1-D only) */
    ml_type *base;           /* owned: element type, as h5py names it */
    /* HDF5 handles, used only under the HDF5 lock */
    int64_t h5_file, h5_dset;
    int64_t h5_mtype;        /* memory type: vlen of the file's own element type */
} ml_vlen;

/* Open `path` in `filename` read-only and describe it. The handle is
 * immutable after open: any number of threads may read through it at once
 * (each read takes the HDF5 lock). On success *out is a new handle the
 * caller owns (ml_vlen_close), or NULL when `path` names an object that is
 * not a variable-length dataset (a group, or a dataset of another type:
 * the caller says so in its own words). Errors: as ml_layout_open opening
 * the file and path (-ENOENT, -ML_ENOTHDF5, -ML_ENOTFOUND, ...), and for a
 * variable-length dataset the core cannot read: -ML_ETYPE (element type,
 * e.g. strings or nested sequences), -ML_ESHAPE (not 1-D); detail in err. */
int ml_vlen_open(const char *filename, const char *path, ml_vlen **out, ml_error *err);

/* Close a handle. Accepts NULL. Takes the HDF5 lock. */
void ml_vlen_close(ml_vlen *V);

/* Read the rows rows[0..n) (any order, duplicates allowed, each below
 * V->n_rows): counts[i] receives the element count of row rows[i], and
 * *data a new malloc'd buffer (the caller frees it with free(); never NULL
 * on success, even when empty) of every row's elements, row after row, in
 * the order given; *nbytes its length. Borrows rows and counts. Returns 0,
 * -ML_EINVAL (a row out of range), -ENOMEM or -ML_EHDF5; detail in err. */
int ml_vlen_read(ml_vlen *V, const uint64_t *rows, size_t n, uint64_t *counts, void **data,
                 size_t *nbytes, ml_error *err);

#endif
