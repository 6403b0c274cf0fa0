/* h5internal.h - what h5layout.c shares with the core's other HDF5 user
 * (vlen.c): the one HDF5 lock, the dataset opener and the type mapping.
 * Internal to the core: the bindings and fetch.c never call HDF5.
 *
 * The lock lives in h5layout.c and is the only one: every HDF5 call in
 * the process runs between ml_h5_lock() and ml_h5_unlock(), whichever
 * file makes it. Sharing the opener and the type mapping means every
 * dataset is opened, and every type named, one way (the same errors, the
 * same numpy dtypes).
 */
#ifndef ML_H5INTERNAL_H
#define ML_H5INTERNAL_H

#include <hdf5.h>

#include "error.h"
#include "h5layout.h"

/* Take / drop the process-wide HDF5 mutex. The first take in a thread
 * also switches off HDF5's automatic error printing for that thread.
 * Held across fork(), so a child never inherits it locked mid-call. */
void ml_h5_lock(void);
void ml_h5_unlock(void);

/* Open `filename` read-only, with our own descriptor and with HDF5, and
 * the object at `path`, which must be a dataset. Takes and drops the lock
 * itself: call it without the lock. On success the caller owns *src (one
 * reference to a POSIX source on the very file HDF5 opened), *file and
 * *dset (close them under the lock). Errors: -errno from opening the file (-ENOENT,
 * -EISDIR, -EACCES), -EAGAIN (a writer holds HDF5's file lock),
 * -ML_ENOTHDF5, -ML_EHDF5 (file replaced while opening), -ML_ENOTFOUND,
 * -ML_ENOTDSET; detail, naming file and path, in err. */
int ml_h5_dataset_open(const char *filename, const char *path, ml_source **src, hid_t *file, hid_t *dset,
                       ml_error *err);

/* Close whichever of a type, a dataset and a file handle are valid (>= 0),
 * under the lock (take none: it is taken here). For the owners of
 * handles from ml_h5_dataset_open. */
void ml_h5_close_handles(hid_t type, hid_t dset, hid_t file);

/* What a reader of a dataset's bytes needs to know of the file they lie
 * in (for an external link, the dataset's own file): the base address
 * (the user block's size), the bound no read may pass (the smaller of the
 * file's size, as `src` sees it, and base + the superblock's end of
 * allocation: HDF5 refuses reads past its EOA), sizes of addresses and
 * lengths, and the chunk B-tree's K. */
typedef struct ml_h5_file_facts {
    uint64_t base;          /* file offset of HDF5 address 0 */
    uint64_t eof;           /* file offset no read may pass */
    unsigned sizeof_addr;   /* bytes of an address, as the file says (not checked) */
    unsigned sizeof_size;   /* bytes of a length, as the file says (not checked) */
    unsigned btree_k;       /* H5Pget_istore_k */
} ml_h5_file_facts;

/* Fill *out for the file of `obj` (a dataset), read through `src`. Caller
 * holds the lock. Returns 0, -ML_EHDF5 (the file's properties cannot be
 * had) or -errno (the source's identity). */
int ml_h5_file_facts_get(hid_t obj, ml_source *src, ml_h5_file_facts *out);

/* Build an ml_type from an HDF5 type, as the numpy dtype h5py reports.
 * Returns 0 (*out owned by the caller, free with ml_type_free) or
 * -ML_ETYPE / -ML_EHDF5 / -ENOMEM with a message naming the offending type
 * and `where`. Caller holds the lock. */
int ml_type_from_h5(hid_t tid, ml_type **out, ml_error *err, const char *where);

#endif
