/* h5zcheck.h - HDF5's own n-bit and scale-offset filters' parameters,
 * checked against the dataset's datatype and chunk before the slow path's
 * H5Dread decodes with them (h5zcheck.c). Internal to the core's HDF5
 * files; every function runs with the HDF5 lock held by the caller.
 */
#ifndef ML_H5ZCHECK_H
#define ML_H5ZCHECK_H

#include <hdf5.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "source.h"

enum { ML_H5Z_NONE = 0, ML_H5Z_NBIT = 5, ML_H5Z_SCALEOFFSET = 6 };

/* What a chunk's stored bytes must hold for the filter to decode inside
 * them. Filled by ml_h5z_check_filter; kind NONE for any other filter. */
typedef struct ml_h5z_check {
    int kind;              /* ML_H5Z_* */
    int pass;              /* 1: the filter hands the stored bytes on untouched */
    uint64_t need;         /* n-bit: bytes the packed values of a chunk take */
    uint64_t elems;        /* scale-offset: elements per chunk (< 2^32) */
    unsigned elem_size;    /* scale-offset: bytes per element, 1..8 */
    size_t chunk_bytes;    /* bytes of a decoded chunk */
} ml_h5z_check;

/* If filter `i` of `dcpl` (HDF5 id `id`) is n-bit or scale-offset, check
 * all its client values against what HDF5's set_local derives from
 * `type` and chunks of `chunk_elems` elements (`chunk_bytes` bytes) and
 * describe in *out what each chunk must then hold; any other filter
 * leaves out->kind NONE. Returns 0, -ML_ECORRUPT (values HDF5 1.10 would
 * read past its buffers with; err names `where` and the value),
 * -ML_EHDF5 or -ENOMEM. */
int ml_h5z_check_filter(hid_t dcpl, unsigned i, int id, hid_t type, uint64_t chunk_elems, size_t chunk_bytes,
                        ml_h5z_check *out, ml_error *err, const char *where);

/* Is the chunk stored at file offset `offset` (`size` bytes, inside the
 * file: the caller checked) one the filter of `c` can decode as the first
 * filter of the read? Reads at most 21 bytes through `src`. Returns NULL
 * (yes, or nothing to check) or a static string saying why not. */
const char *ml_h5z_chunk_check(const ml_h5z_check *c, ml_source *src, uint64_t offset, uint64_t size);

#endif
