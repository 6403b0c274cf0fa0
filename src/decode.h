/* decode.h - a stored chunk's filter pipeline undone on a worker thread,
 * each filter by its codec (codec.h). No layout here: the caller passes
 * the pipeline and the chunk's decoded size. */
#ifndef ML_DECODE_H
#define ML_DECODE_H

#include <stddef.h>
#include <stdint.h>

#include "codec.h"
#include "error.h"

/* Per-thread decode state (one context per codec that keeps one, and
 * scratch). Not thread-safe. */
typedef struct ml_decoder ml_decoder;

/* Returns 0 or -ENOMEM. */
int ml_decoder_open(ml_decoder **out);
void ml_decoder_close(ml_decoder *d); /* accepts NULL */

/* Undo pipeline p on one stored chunk.
 * src/src_len: the stored bytes (may be modified in place).
 * dst: receives exactly chunk_bytes decoded bytes.
 * mask: the chunk's filter mask (bit i set = filter i skipped).
 * Returns 0, -ML_ECHECKSUM, -ML_ECORRUPT (a damaged stream, parameters
 * HDF5's filter refuses, or a wrong decoded size), -ML_EFILTER (a filter
 * this build does not decode) or -ENOMEM. */
int ml_decode_chunk(ml_decoder *d, const ml_pipeline *p, size_t chunk_bytes, unsigned mask, void *src,
                    size_t src_len, void *dst);

#endif
