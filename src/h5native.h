/* h5native.h - an HDF5 dataset opened without the HDF5 library: for the
 * datasets the linked HDF5 (1.10.8) refuses because a newer HDF5 wrote
 * their messages in versions it does not know (datatype messages of
 * version 4 and 5, layout messages of version 5). The dataset's object
 * header is decoded by the core's own bounded reader (h5meta.h) into an
 * ml_layout (layout.h) that fetch.c reads as it reads HDF5's: contiguous,
 * compact, and chunked through a chunk table walked at open.
 * docs/newer-hdf5.md has what is read and what is refused.
 */
#ifndef ML_H5NATIVE_H
#define ML_H5NATIVE_H

#include <stdint.h>

#include "chunk_index.h"
#include "error.h"
#include "layout.h"

/* Describe the dataset whose object header is at HDF5 address `ohdr` in
 * L->src, and make L a native layout. L comes from ml_layout_new with
 * filename, path and src set, and no ops or fmt; cf is the file as the
 * HDF5 library measured it (base, eof as cf->size, sizes of addresses and
 * lengths, B-tree K; cf->src is ignored: L->src is read). On success L
 * has every field a format's open fills, and ops/fmt of its own; on
 * failure L may hold some of them (ml_layout_unref frees them). Errors
 * name the file and dataset in err: -ML_ETYPE and -ML_ESHAPE (what h5type.c
 * and h5open.c refuse), -ML_EFILTER (a filter the codec table does not
 * decode), -ML_ECORRUPT (a message that does not hold together, or a
 * storage this reader does not know), -ENOMEM or -errno. Takes no lock,
 * calls no HDF5. */
int ml_h5_native_open(ml_layout *L, const ml_chunk_file *cf, uint64_t ohdr, ml_error *err);

#endif
