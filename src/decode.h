/* decode.h - HDF5 filter pipeline, read direction: fletcher32, deflate,
 * shuffle, applied natively on worker threads. */
#ifndef ML_DECODE_H
#define ML_DECODE_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "h5layout.h"

/* HDF5 filter ids we may decode natively. */
enum {
    ML_FILTER_DEFLATE = 1,
    ML_FILTER_SHUFFLE = 2,
    ML_FILTER_FLETCHER32 = 3,
    ML_FILTER_LZF = 32000,   /* h5py */
    ML_FILTER_BLOSC = 32001, /* PyTables */
};

/* 1 if this build decodes filter_id natively (blosc and lzf depend on the
 * libraries the build found). */
int ml_decode_supports(int filter_id);

/* Per-thread decode state (decompressor, scratch). Not thread-safe. */
typedef struct ml_decoder ml_decoder;

int ml_decoder_open(ml_decoder **out);
void ml_decoder_close(ml_decoder *d); /* accepts NULL */

/* Undo L's filter pipeline on one stored chunk.
 * src/src_len: the stored bytes (may be modified in place).
 * dst: receives exactly L->chunk_bytes decoded bytes.
 * mask: the chunk's filter mask (bit i set = filter i skipped).
 * Returns 0, -ML_ECHECKSUM, -ML_ECORRUPT (bad deflate stream or wrong
 * decoded size) or -ENOMEM. */
int ml_decode_chunk(ml_decoder *d, const ml_layout *L, unsigned mask,
                    void *src, size_t src_len, void *dst);

/* HDF5's Fletcher-32 over len bytes (big-endian 16-bit words). */
uint32_t ml_fletcher32(const void *data, size_t len);

/* Inverse of HDF5's byte shuffle of n_bytes with element size `size`. */
void ml_unshuffle(const void *src, void *dst, size_t n_bytes, size_t size);

#endif
