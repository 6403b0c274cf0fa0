/* h5.h - HDF5 datasets as layouts (layout.h): what the core reads of an
 * HDF5 file without the HDF5 library once it is open - type, shape,
 * storage, chunk grid, chunk addresses, filter pipeline and fill value.
 *
 * Every HDF5 call in multiload goes through the h5*.c files (or vlen.c,
 * which shares their lock through h5internal.h) and runs under
 * ml_h5_lock(): the HDF5 library is not thread-safe.
 */
#ifndef ML_H5_H
#define ML_H5_H

#include "error.h"
#include "layout.h"

/* How an HDF5 dataset's chunk table is being filled (h5chunks.c's opening
 * comment). */
typedef enum ml_table_state {
    ML_TABLE_LAZY = 0,  /* by coordinate on first touch; a one-pass fill may follow */
    ML_TABLE_WALKED,    /* filled from our own walk of the index (chunk_index.c), checked
                           against HDF5 */
    ML_TABLE_ITERATED,  /* filled by H5Dchunk_iter (HDF5 1.10.10+, 1.12.3+, 1.14+) */
    ML_TABLE_FALLBACK,  /* no one-pass fill (index type, or the walk or its check failed
                           for want of memory or a read, or a layout 4/5 index malformed or
                           disagreeing with HDF5): through HDF5 one chunk at a time for good */
    ML_TABLE_CORRUPT,   /* the v1 B-tree is malformed, or disagrees with HDF5: no chunk can
                           be located as H5Dread would, so every chunk read is corrupt data */
} ml_table_state;

/* Open `path` in `filename` read-only and describe it. On success *out owns
 * one reference. Errors: -ENOENT (file), -ML_ENOTHDF5, -ML_ENOTFOUND,
 * -ML_ENOTDSET, -ML_ETYPE, -ML_ESHAPE, -ML_EHDF5; detail in err. */
int ml_layout_open(const char *filename, const char *path, ml_layout **out, ml_error *err);

/* Fill the whole chunk table of L (an HDF5 layout) in one pass now, if the
 * index allows and no pass was tried yet (ml_layout_chunk does this by
 * itself after a few look-ups). Thread-safe; takes the HDF5 lock. Returns
 * the table state after the attempt: WALKED, ITERATED or FALLBACK (then
 * the state's table_why says why; look-ups by coordinate go on, correct
 * but O(n) each), or CORRUPT (then every ml_layout_chunk is -ML_ECORRUPT,
 * naming why). */
ml_table_state ml_layout_fill_table(ml_layout *L);

/* Fill the chunk table as ml_layout_fill_table does, and say why it is not
 * WALKED or ITERATED: *why is a static string, or NULL. Takes the HDF5
 * lock. (Tests: which path a dataset's chunks take.) */
ml_table_state ml_layout_table_state(ml_layout *L, const char **why);

/* The HDF5 library's version (major, minor, release), as linked at run time. */
void ml_h5_version(unsigned *major, unsigned *minor, unsigned *release);

#endif
