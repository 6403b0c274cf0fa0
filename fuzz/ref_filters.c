/* ref_filters.c - the lzf (h5py, id 32000) and blosc (PyTables, id 32001)
 * decoders for ref_read.c: the system HDF5 has neither, so without them
 * the oracle could not read two of the filters the core decodes, and every
 * such block would go to the slow second opinion (h5py_read.py).
 *
 * Decode only, framed as h5py's lzf_filter.c and PyTables' blosc_filter.c
 * frame them, on the same liblzf and blosc libraries. Defensive about the
 * chunk bytes (they come from a hostile file): every size is checked, and a
 * failure is a filter failure (HDF5 then fails the read), never a guess.
 */
#include <blosc.h>
#include <errno.h>
#include <hdf5.h>
#include <lzf.h>
#include <stdlib.h>

#include "ref_filters.h"

#define MAX_CHUNK ((size_t)1 << 32) /* HDF5's own limit on a chunk */

static size_t lzf_decode(unsigned flags, size_t n_values, const unsigned values[], size_t nbytes,
                         size_t *buf_size, void **buf) {
    if (!(flags & H5Z_FLAG_REVERSE))
        return 0; /* decode only */
    size_t out_size = n_values >= 3 && values[2] ? values[2] : *buf_size;
    for (;;) {
        if (out_size == 0 || out_size > MAX_CHUNK)
            return 0;
        void *out = malloc(out_size);
        if (!out)
            return 0;
        unsigned got = lzf_decompress(*buf, (unsigned)nbytes, out, (unsigned)out_size);
        if (got) {
            free(*buf);
            *buf = out;
            *buf_size = out_size;
            return got;
        }
        free(out);
        if (errno != E2BIG)
            return 0;
        out_size *= 2; /* as h5py's filter grows its buffer */
    }
}

static size_t blosc_decode(unsigned flags, size_t n_values, const unsigned values[], size_t nbytes,
                           size_t *buf_size, void **buf) {
    (void)n_values;
    (void)values;
    if (!(flags & H5Z_FLAG_REVERSE))
        return 0;
    /* As PyTables' blosc_filter.c reads: the sizes in the blosc header, the
     * stored size only bounding them (it may hold bytes past the stream,
     * which PyTables ignores; a validate of cbytes == nbytes would refuse
     * chunks PyTables, the writer of these files, reads). */
    size_t out_size = 0, cbytes = 0, blocksize = 0;
    if (nbytes < BLOSC_MIN_HEADER_LENGTH)
        return 0;
    blosc_cbuffer_sizes(*buf, &out_size, &cbytes, &blocksize);
    if (cbytes > nbytes || out_size == 0 || out_size > MAX_CHUNK)
        return 0;
    void *out = malloc(out_size);
    if (!out)
        return 0;
    int got = blosc_decompress_ctx(*buf, out, out_size, 1);
    if (got <= 0) {
        free(out);
        return 0;
    }
    free(*buf);
    *buf = out;
    *buf_size = out_size;
    return (size_t)got;
}

int ref_filters_register(void) {
    static const H5Z_class2_t lzf = {H5Z_CLASS_T_VERS, 32000, 1, 1, "lzf", NULL, NULL, lzf_decode};
    static const H5Z_class2_t bl = {H5Z_CLASS_T_VERS, 32001, 1, 1, "blosc", NULL, NULL, blosc_decode};
    return H5Zregister(&lzf) < 0 || H5Zregister(&bl) < 0 ? -1 : 0;
}
