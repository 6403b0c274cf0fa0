/* h5write.h - the HDF5 calls of the Writer (h5write.c): open or create the
 * file, create or open a dataset and describe it, grow it, write a stored
 * chunk, read rows back for an edge merge, flush and fsync. Internal to
 * the core (write_block.c calls them). Each says whether it takes the one
 * HDF5 lock (h5internal.h) or wants the caller to hold it.
 */
#ifndef ML_H5WRITE_H
#define ML_H5WRITE_H

#include <hdf5.h>

#include "writer.h"

/* Open or create `path` (writer.h's ml_writer_open says how). Takes the
 * lock. 0 and *file, or -errno / -ML_ENOTHDF5 / -ML_EHDF5 naming it. */
int ml_h5w_file_open(const char *path, int truncate, hid_t *file, ml_error *err);

/* Create dataset `name` in `file` (`path` names the file in messages).
 * Takes the lock. 0 and *dset, or -EEXIST / -ML_ETYPE / -ML_EHDF5. */
int ml_h5w_create(hid_t file, const char *path, const char *name, const ml_type *t, const ml_wparams *p,
                  const void *fill, hid_t *dset, ml_error *err);

/* Open dataset `name` and describe it: *p, *t (owned: ml_type_free) and
 * *fill (owned: free(), t->size bytes). Takes the lock. 0, or -ML_ENOTFOUND,
 * -ML_ENOTDSET, -ML_ETYPE, -ML_EFILTER, -ML_EHDF5, -ENOMEM naming it. */
int ml_h5w_open(hid_t file, const char *path, const char *name, hid_t *dset, ml_wparams *p, ml_type **t,
                unsigned char **fill, ml_error *err);

/* Set the extent along axis 0 to rows0 (the other axes as p->shape) and
 * record it in p->shape[0]. Caller holds the lock. 0 or -ML_EHDF5. */
int ml_h5w_grow(hid_t dset, ml_wparams *p, uint64_t rows0);

/* Write one stored chunk at element offset `offset` with filter mask
 * `mask` (H5Dwrite_chunk). Caller holds the lock. 0, -ENOSPC (injected
 * by MULTILOAD_FAULTS=enospc@N, or the OS's), -errno the OS gave, or
 * -ML_EHDF5. */
int ml_h5w_chunk_write(hid_t dset, unsigned ndim, const uint64_t *offset, unsigned mask, const void *buf,
                       size_t len);

/* Read rows [row0, row0 + n) (all of the other axes) into buf, as stored
 * (the dataset's own type). Takes the lock. 0 or -ML_EHDF5. */
int ml_h5w_rows_read(hid_t dset, const ml_wparams *p, uint64_t row0, uint64_t n, void *buf);

/* H5Fflush then fsync. Takes the lock. 0, -errno or -ML_EHDF5 naming it. */
int ml_h5w_sync(hid_t file, const char *path, ml_error *err);

/* Close a dataset or file handle (>= 0). Takes the lock. 0 or -ML_EHDF5. */
int ml_h5w_close(hid_t id);

#endif
