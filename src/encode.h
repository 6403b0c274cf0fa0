/* encode.h - the forward filters the Writer applies to a chunk before
 * HDF5's direct chunk write: byte shuffle, deflate (libdeflate; zlib
 * framing, as HDF5's deflate filter stores it), h5py's lzf (liblzf) and
 * fletcher32 (a trailer, as HDF5's filter 3 appends it). The inverses are
 * codec.c's; tests/c/test_encode.c round-trips through them.
 */
#ifndef ML_ENCODE_H
#define ML_ENCODE_H

#include <stddef.h>
#include <stdint.h>

#include "codec.h"

/* HDF5's byte shuffle of n_bytes with element size `size` (the inverse of
 * ml_unshuffle): byte k of every element, then byte k+1, ...; a tail of
 * n_bytes % size bytes is copied as is. src and dst must not overlap. */
void ml_shuffle(const void *src, void *dst, size_t n_bytes, size_t size);

/* Per-thread encoder state: a compressor per deflate level and scratch
 * buffers. Not thread-safe; one per worker. */
typedef struct ml_encoder ml_encoder;

/* Returns 0 (*out owned by the caller, free with ml_encoder_close) or -ENOMEM. */
int ml_encoder_open(ml_encoder **out);
void ml_encoder_close(ml_encoder *e); /* accepts NULL */

/* Run pipeline p (shuffle, deflate, lzf, fletcher32 in any order HDF5
 * allows; any other id is -ML_EFILTER) forward over n bytes at `in`, one
 * chunk of elements of elem_size bytes. On success *out points at the
 * stored bytes (in the encoder's buffers, valid until its next run, or at
 * `in` if no filter changed it), *out_len is their count and *mask the
 * filter mask to store with the chunk: bit i set when optional filter i
 * was skipped (lzf, when the chunk does not shrink, as h5py's filter
 * skips it). Borrows in. Returns 0, -ENOMEM or -ML_EFILTER (with a static
 * reason in *why). */
int ml_encoder_run(ml_encoder *e, const ml_pipeline *p, size_t elem_size, const void *in, size_t n,
                   const void **out, size_t *out_len, unsigned *mask, const char **why);

#endif
