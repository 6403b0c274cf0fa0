/* h5internal.h - what the HDF5 files of the core share (h5open.c,
 * h5type.c, h5chunks.c, and vlen.c): the one HDF5 lock, the dataset
 * opener, the file facts, the type mapping, and an HDF5 layout's own
 * state behind ml_layout.fmt. Internal to the core: the bindings and
 * fetch.c never call HDF5.
 *
 * The lock lives in h5open.c and is the only one: every HDF5 call in
 * the process runs between ml_h5_lock() and ml_h5_unlock(), whichever
 * file makes it. Sharing the opener and the type mapping means every
 * dataset is opened, and every type named, one way (the same errors, the
 * same numpy dtypes).
 */
#ifndef ML_H5INTERNAL_H
#define ML_H5INTERNAL_H

#include <hdf5.h>

#include "chunk_index.h"
#include "chunk_table.h"
#include "error.h"
#include "codec.h"
#include "h5.h"
#include "h5zcheck.h"
#include "source.h"

/* H5Dchunk_iter, with this callback signature, came with 1.10.10, 1.12.3
 * and 1.14.0. */
#if H5_VERSION_GE(1, 14, 0) || (H5_VERSION_GE(1, 12, 3) && !H5_VERSION_GE(1, 13, 0)) || \
    (H5_VERSION_GE(1, 10, 10) && !H5_VERSION_GE(1, 11, 0))
#define ML_HAVE_CHUNK_ITER 1
#endif

/* An HDF5 layout's own state (ml_layout.fmt). Set at open, then read-only,
 * except the chunk table (chunk_table.c: its cache, and its one
 * publication) and the fields that say how it fills, guarded by the HDF5
 * lock as marked. */
typedef struct ml_h5_dataset {
    int64_t h5_file, h5_dset, h5_type; /* HDF5 handles, used only under ml_h5_lock() */
    ml_chunk_table table;        /* where the chunks lie (chunk_table.h); initialised for
                                    every layout, used by ML_STORE_CHUNKED */
    ml_chunk_file cfile;         /* the file as the index walk reads it (src = the layout's) */
    int header_rc;               /* what parsing the object header at open gave: 0 (cindex holds
                                    it), -ML_EHDF5 (no address), -ML_ECORRUPT (malformed) or
                                    another error */
    ml_chunk_index cindex;       /* the layout message's index; kind NONE if not found */
    uint64_t api_base;           /* added to HDF5's chunk addresses to make file offsets:
                                    the user block size (0 with HDF5 >= 1.14.4) */
    ml_table_state table_state;  /* guarded by the HDF5 lock */
    const char *table_why;       /* static string: why FALLBACK; guarded by the HDF5 lock */
    unsigned lookups;            /* look-ups by coordinate so far; guarded by the HDF5 lock */
    ml_h5z_check zcheck[ML_MAX_FILTERS]; /* per filter of the pipeline: what a chunk must hold
                                    for HDF5's n-bit or scale-offset (h5zcheck.h); set at open */
} ml_h5_dataset;

/* The HDF5 state of L, a layout ml_layout_open made. */
static inline ml_h5_dataset *ml_h5(const ml_layout *L) { return (ml_h5_dataset *)L->fmt; }

/* 1 and *out = a * b, or 0 if that overflows 64 bits. */
static inline int ml_mul_ok(uint64_t a, uint64_t b, uint64_t *out) { return !__builtin_mul_overflow(a, b, out); }

/* Take / drop the process-wide HDF5 mutex. The first take in a thread
 * also switches off HDF5's automatic error printing for that thread.
 * Held across fork(), so a child never inherits it locked mid-call. */
void ml_h5_lock(void);
void ml_h5_unlock(void);

/* Is the HDF5 library this process runs at least maj.min.rel? Caller holds the lock. */
int ml_h5_lib_ge(unsigned maj, unsigned min, unsigned rel);

/* Open `filename` read-only, with our own descriptor and with HDF5, and
 * the object at `path`, which must be a dataset. Takes and drops the lock
 * itself: call it without the lock. On success the caller owns *src (one
 * reference to a POSIX source on the very file HDF5 opened), *file and
 * *dset (close them under the lock). Errors: -errno from opening the file
 * (-ENOENT, -EISDIR, -EACCES), -EAGAIN (a writer holds HDF5's file lock),
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
 * file's size, as `src` sees it, and the superblock's end of allocation,
 * an absolute offset: HDF5 refuses reads past its EOA), sizes of addresses and
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

/* Can HDF5 decode filter `id`, once hdf5plugin's plugin folder (when
 * installed) is in its search path? Caller holds the HDF5 lock. 1 or 0. */
int ml_h5_filter_loadable(int id);

/* Build an ml_type from an HDF5 type, as the numpy dtype h5py reports.
 * Returns 0 (*out owned by the caller, free with ml_type_free) or
 * -ML_ETYPE / -ML_EHDF5 / -ENOMEM with a message naming the offending type
 * and `where`. Caller holds the lock. (h5type.c) */
int ml_type_from_h5(hid_t tid, ml_type **out, ml_error *err, const char *where);

/* The chunk table (h5chunks.c). */

/* ml_layout_ops.chunk of HDF5 layouts (index < n_chunks). Takes the lock
 * unless the table answers. */
int ml_h5_chunk(ml_layout *L, uint64_t index, ml_chunk_info *info, ml_error *err);

/* Does the chunk table's one-pass fill walk L's chunk index itself
 * (chunk_index.c: the v1 B-tree and the layout 4/5 kinds)? (h5chunks.c) */
int ml_h5_walks_index(const ml_layout *L);

/* ml_layout_ops.read_chunk of HDF5 layouts: H5Dread_chunk, by HDF5's
 * descent by key, under the lock, after checking HDF5 still finds `size`. */
int ml_h5_read_chunk(ml_layout *L, uint64_t index, void *buf, uint64_t size, unsigned *mask, ml_error *err);

#endif
