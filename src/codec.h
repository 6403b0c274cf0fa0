/* codec.h - the filter pipeline a chunk was stored through, and the one
 * table of codecs the core undoes natively (read direction).
 *
 * Everything that asks "can the core decode filter id X, and are its
 * parameters ones HDF5's own filter accepts?" reads the table: the
 * pipeline runner (decode.c), the open-time check and slow-path decision
 * (h5open.c), ml_decode_supports, and vlen.c's own undoing of the
 * descriptors' chunks. A codec the build lacks the library for
 * is still in the table, with available = 0 (its chunks then read through
 * HDF5, if HDF5 has the filter).
 *
 * How to add a codec: write its decode (and, if it keeps state between
 * chunks, a per-thread context open/close; if the filter refuses some
 * parameters, a check) behind its ML_HAVE_* flag, in codec.c or, for a
 * family of its own, a file of its own (codec_plugins.c: hdf5plugin's
 * zstd, lz4, bzip2; bitshuffle.c) declared in codec_impl.h; add one row
 * to the table in codec.c, its id to the enum below and its probe to
 * probe_libs.py (the Makefile and setup.py both read it). The decode must
 * bound every size the stored bytes hold by len and cap; check each
 * parameter as the filter's own plugin does.
 */
#ifndef ML_CODEC_H
#define ML_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"

#define ML_MAX_FILTERS 16

/* HDF5 filter ids with a row in the table. */
enum {
    ML_FILTER_DEFLATE = 1,
    ML_FILTER_SHUFFLE = 2,
    ML_FILTER_FLETCHER32 = 3,
    ML_FILTER_BZIP2 = 307,        /* hdf5plugin (PyTables' bzip2) */
    ML_FILTER_LZF = 32000,        /* h5py */
    ML_FILTER_BLOSC = 32001,      /* PyTables */
    ML_FILTER_LZ4 = 32004,        /* hdf5plugin (HDF5's registered lz4) */
    ML_FILTER_BITSHUFFLE = 32008, /* hdf5plugin, Dectris detectors */
    ML_FILTER_ZSTD = 32015,       /* hdf5plugin */
};

/* Bytes a check filter (fletcher32) appends to what it covers. */
#define ML_CHECK_TRAILER 4

/* One filter of a pipeline, as the file declares it. */
typedef struct ml_filter {
    int id;                  /* HDF5 filter id (1 deflate, 2 shuffle, 3 fletcher32, ...) */
    unsigned flags;          /* H5Z_FLAG_* */
    size_t n_values;         /* client data count, as the file says */
    unsigned values[8];      /* client data (the first 8) */
} ml_filter;

/* The filters applied on write, in order (undone in reverse). */
typedef struct ml_pipeline {
    unsigned n_filters;                  /* 0..ML_MAX_FILTERS */
    ml_filter filters[ML_MAX_FILTERS];
} ml_pipeline;

/* Per-thread codec state slots in a decoder: at least the table's rows. */
#define ML_CODEC_MAX 12

typedef struct ml_codec {
    int id;                  /* HDF5 filter id */
    const char *name;        /* for messages */
    int available;           /* 1: this build decodes it (its library was found) */
    int in_place;            /* 1: a check that strips a trailer in place (fletcher32):
                                decode gets dst == src and moves no bytes */
    /* NULL, or why HDF5's own filter refuses f's parameters on every read
     * (a static string). NULL function: every parameter is accepted. */
    const char *(*check)(const ml_filter *f);
    /* Per-thread state (a decompressor): NULL when the codec needs none.
     * ctx_open returns 0 or -ENOMEM. */
    int (*ctx_open)(void **ctx);
    void (*ctx_close)(void *ctx);
    /* Undo the filter on len stored bytes at src into dst (cap bytes at
     * most), *out_len the bytes produced. Returns 0, -ML_ECORRUPT (damaged
     * or too long) or -ML_ECHECKSUM. NULL where not available. */
    int (*decode)(void *ctx, const ml_filter *f, unsigned char *src, size_t len, unsigned char *dst, size_t cap,
                  size_t *out_len);
} ml_codec;

/* The table, ml_codec_count rows (at most ML_CODEC_MAX). */
extern const ml_codec ml_codecs[];
extern const size_t ml_codec_count;

/* The row for filter `id`, or NULL if the core has none. */
const ml_codec *ml_codec_find(int id);

/* 1 if this build decodes filter_id natively (the row is available). */
int ml_decode_supports(int filter_id);

/* The name of a filter known by id (NULL if unknown) and, in *provider,
 * what to install for it (a static string). */
const char *ml_filter_known(int id, const char **provider);

/* HDF5's Fletcher-32 over len bytes (big-endian 16-bit words). */
uint32_t ml_fletcher32(const void *data, size_t len);

/* Inverse of HDF5's byte shuffle of n_bytes with element size `size`. */
void ml_unshuffle(const void *src, void *dst, size_t n_bytes, size_t size);

#endif
