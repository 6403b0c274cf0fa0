/* h5layout.h - what the core needs to know about one HDF5 dataset to read
 * its bytes without the HDF5 library: dtype, shape, storage layout, chunk
 * grid, chunk addresses, filter pipeline and fill value.
 *
 * Every HDF5 call in multiload goes through this module (or vlen.c, which
 * shares its lock through h5internal.h) and runs under ml_h5_lock(): the
 * HDF5 library is not thread-safe.
 */
#ifndef ML_H5LAYOUT_H
#define ML_H5LAYOUT_H

#include <stdatomic.h>
#include <stdint.h>
#include <stddef.h>
#include <pthread.h>

#include "chunk_index.h"
#include "chunk_table.h"
#include "codec.h"
#include "error.h"
#include "source.h"

#define ML_MAX_DIMS 32

/* Element type, a tree for compound and array types. */
typedef enum ml_type_kind {
    ML_T_INT,      /* signed integer (also enums other than bool) */
    ML_T_UINT,     /* unsigned integer */
    ML_T_FLOAT,    /* IEEE float, 2/4/8 bytes */
    ML_T_BOOL,     /* h5py's enum {FALSE=0, TRUE=1} on a 1-byte int */
    ML_T_STRING,   /* fixed-length byte string */
    ML_T_COMPOUND, /* struct with named members at offsets */
    ML_T_ARRAY,    /* fixed-shape array of a base type */
} ml_type_kind;

typedef struct ml_type {
    ml_type_kind kind;
    size_t size;             /* bytes of one element */
    int big_endian;          /* numeric kinds: 1 = stored big-endian */
    unsigned n_members;      /* compound: number of members */
    char **member_names;     /* compound: owned strings */
    size_t *member_offsets;  /* compound: byte offsets */
    struct ml_type **members;/* compound: owned member types */
    unsigned ndim;           /* array: number of dims */
    uint64_t dims[ML_MAX_DIMS]; /* array: shape */
    struct ml_type *base;    /* array: owned element type */
} ml_type;

/* How the data is stored, and so how fetch.c reads it. */
typedef enum ml_storage {
    ML_STORE_CONTIGUOUS, /* one extent at `offset`, or unallocated */
    ML_STORE_CHUNKED,    /* chunks, decoded natively */
    ML_STORE_MEMORY,     /* compact layout: held in `mem` */
    ML_STORE_SLOW,       /* H5Dread under the lock (other filters, external, virtual) */
} ml_storage;

/* How the chunk table is being filled (h5layout.c's opening comment). */
typedef enum ml_table_state {
    ML_TABLE_LAZY = 0,  /* by coordinate on first touch; a one-pass fill may follow */
    ML_TABLE_WALKED,    /* filled from our own walk of the v1 B-tree, checked against HDF5 */
    ML_TABLE_ITERATED,  /* filled by H5Dchunk_iter (HDF5 1.10.10+, 1.12.3+, 1.14+) */
    ML_TABLE_FALLBACK,  /* no one-pass fill (index type, or the walk or its check failed
                           for want of memory or a read): by coordinate for good */
    ML_TABLE_CORRUPT,   /* the v1 B-tree is malformed, or disagrees with HDF5: no chunk can
                           be located as H5Dread would, so every chunk read is corrupt data */
} ml_table_state;

typedef struct ml_layout {
    _Atomic int refcount;        /* ml_layout_ref / ml_layout_unref */
    char *filename;              /* owned */
    char *path;                  /* owned, dataset path as given */
    ml_source *src;              /* owned reference: the file HDF5 opened, as a byte source
                                    (io.h); every data read uses it, so a file renamed over
                                    or deleted after open is still the one read (never mixed) */
    uint64_t eof;                /* file offset no data read may pass: the smaller of the
                                    file's size and the superblock's end of allocation
                                    (HDF5 refuses reads past either) */
    unsigned ndim;               /* >= 1 */
    uint64_t dims[ML_MAX_DIMS];  /* dataset shape */
    uint64_t n_rows;             /* dims[0] */
    size_t row_elems;            /* elements in one row (product of dims[1:]) */
    size_t row_bytes;            /* row_elems * type->size; n_rows * row_bytes fits in
                                    int64_t (checked at open), so does n * row_bytes for
                                    any n <= n_rows */
    ml_type *type;               /* owned */
    ml_storage storage;
    const char *slow_reason;     /* static string, set when storage == SLOW */
    /* contiguous */
    uint64_t offset;             /* UINT64_MAX = not allocated (all fill) */
    /* chunked */
    uint64_t chunk[ML_MAX_DIMS]; /* chunk shape */
    uint64_t grid[ML_MAX_DIMS];  /* chunks per dim (ceil) */
    uint64_t n_chunks;           /* product of grid (overflow-checked) */
    size_t chunk_bytes;          /* decoded bytes of one chunk, < 4 GiB as HDF5 requires */
    ml_pipeline pipeline;        /* the filters chunks were stored through (codec.h) */
    unsigned char *fill;         /* type->size bytes, NULL = zeros; owned */
    int fill_undefined;          /* 1: no fill value (H5D_FILL_VALUE_UNDEFINED): rows never
                                    written cannot be read (HDF5 leaves them undefined) */
    ml_chunk_table table;        /* where the chunks lie (chunk_table.h); initialised for
                                    every layout, used by ML_STORE_CHUNKED */
    ml_chunk_file cfile;         /* the file as the index walk reads it (src = the layout's);
                                    set at open, then read-only */
    int header_rc;               /* what parsing the object header at open gave: 0 (cindex holds
                                    it), -ML_EHDF5 (no address), -ML_ECORRUPT (malformed) or
                                    another error; set at open, then read-only */
    ml_chunk_index cindex;       /* the layout message's index; kind NONE if not found.
                                    Set at open, then read-only */
    uint64_t api_base;           /* added to HDF5's chunk addresses to make file offsets:
                                    the user block size (0 with HDF5 >= 1.14.4) */
    ml_table_state table_state;  /* guarded by the HDF5 lock */
    const char *table_why;       /* static string: why FALLBACK; guarded by the HDF5 lock */
    unsigned lookups;            /* look-ups by coordinate so far; guarded by the HDF5 lock */
    /* compact */
    void *mem;                   /* whole dataset bytes, owned */
    /* HDF5 handles, used only under ml_h5_lock() */
    int64_t h5_file, h5_dset, h5_type;
} ml_layout;

/* 1 if the bytes [off, off + len) lie inside what a read of L's file may
 * touch (L->eof), without overflow. */
static inline int ml_layout_in_file(const ml_layout *L, uint64_t off, uint64_t len) {
    return off <= L->eof && len <= L->eof - off;
}

/* Open `path` in `filename` read-only and describe it. On success *out owns
 * one reference. Errors: -ENOENT (file), -ML_ENOTHDF5, -ML_ENOTFOUND,
 * -ML_ENOTDSET, -ML_ETYPE, -ML_ESHAPE, -ML_EHDF5; detail in err. */
int ml_layout_open(const char *filename, const char *path, ml_layout **out,
                   ml_error *err);

void ml_layout_ref(ml_layout *L);
/* Drop a reference; frees at zero. Accepts NULL. */
void ml_layout_unref(ml_layout *L);

/* Fill *info for the chunk at linear index `index` (row-major over grid,
 * < n_chunks). Thread-safe; the first look-up of a chunk takes the HDF5
 * lock, and may fill the whole table in one pass. info->bad is set when
 * HDF5's answers for the chunk disagree (corrupt index). Returns 0,
 * -ML_EINVAL (index off the grid), -ENOMEM or -ML_EHDF5. */
int ml_layout_chunk(ml_layout *L, uint64_t index, ml_chunk_info *info,
                    ml_error *err);

/* Fill the whole chunk table in one pass now, if the index allows and no
 * pass was tried yet (ml_layout_chunk does this by itself after a few
 * look-ups). Thread-safe; takes the HDF5 lock. Returns the table state
 * after the attempt: WALKED, ITERATED or FALLBACK (then L->table_why says
 * why; look-ups by coordinate go on, correct but O(n) each). */
ml_table_state ml_layout_fill_table(ml_layout *L);
/* (CORRUPT too: then every ml_layout_chunk is -ML_ECORRUPT, naming why.) */

/* Read the stored bytes of chunk `index`, whose info said
 * ML_CHUNK_VIA_HDF5 with `size` stored bytes, into buf (size bytes), by
 * HDF5's descent by key (H5Dread_chunk), under the HDF5 lock; *mask gets
 * its filter mask. Returns 0, -ML_ECORRUPT (HDF5 now finds another size)
 * or -ML_EHDF5, with the chunk named in err. */
int ml_layout_read_chunk(ml_layout *L, uint64_t index, void *buf, uint64_t size, unsigned *mask,
                         ml_error *err);

/* Slow path: read rows [row0, row0+n) with H5Dread into dest (n*row_bytes
 * bytes) under the HDF5 lock. Returns 0 or -ML_EHDF5. */
int ml_layout_read_slow(ml_layout *L, uint64_t row0, uint64_t n, void *dest,
                        ml_error *err);

/* Free a type tree. Accepts NULL. */
void ml_type_free(ml_type *t);

/* The HDF5 library's version (major, minor, release), as linked at run time. */
void ml_h5_version(unsigned *major, unsigned *minor, unsigned *release);

#endif
