/* layout.h - the core's model of one dataset, whatever file format holds
 * it: element type, shape, how it is stored (one extent, chunks through a
 * filter pipeline, in memory, or only through the format's library), the
 * chunk grid, the fill value, the bound no read may pass, and the byte
 * source every data read goes through. No file format in it: what a
 * format needs for itself (HDF5's handles, its chunk index and chunk
 * table) sits behind `fmt`, reached only through `ops` (h5.h opens HDF5
 * datasets; h5internal.h is the HDF5 side).
 *
 * A layout is immutable after its format's open returns it, except for
 * what the format keeps behind fmt (the chunk table fills as it is read,
 * under the format's own lock): any thread may read it at once.
 *
 * How to add a format: an open function that fills an ml_layout (its
 * source, shape, type, storage, grid, pipeline, fill, eof) and an
 * ml_layout_ops whose chunk look-up gives each chunk's offset and stored
 * size in the source; fetch.c then reads and decodes its chunks as it does
 * HDF5's.
 */
#ifndef ML_LAYOUT_H
#define ML_LAYOUT_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

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
    ML_T_TIME64,   /* PyTables' Time64: 8 bytes, (seconds << 32 | microseconds) as stored,
                      read as a float64 of seconds in the machine's order (convert.c) */
} ml_type_kind;

/* A fixed-length string's padding, numbered as HDF5 numbers it. */
typedef enum ml_str_pad {
    ML_STR_NULLTERM = 0, /* ends at the first NUL (HDF5's C default) */
    ML_STR_NULLPAD = 1,  /* padded with NULs: numpy's S, h5py's default */
    ML_STR_SPACEPAD = 2, /* padded with spaces (HDF5's Fortran default) */
} ml_str_pad;

typedef struct ml_type {
    ml_type_kind kind;
    size_t size;             /* bytes of one element */
    int big_endian;          /* numeric kinds: 1 = stored big-endian */
    unsigned precision;      /* INT/UINT: bits of the value, 1..size*8 (size*8: a plain integer) */
    unsigned bit_offset;     /* INT/UINT: bit where the value starts, precision + bit_offset
                                <= size*8 (0: a plain integer). Anything else is converted
                                on read as HDF5 converts it (convert.c) */
    ml_str_pad pad;          /* STRING: padding as stored; read as NULLPAD (convert.c) */
    unsigned cset;           /* STRING: 0 ASCII, 1 UTF-8 (h5py's encoding) */
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
    ML_STORE_MEMORY,     /* held in `mem` (HDF5's compact layout) */
    ML_STORE_SLOW,       /* only the format's library reads it (ops->read_slow) */
} ml_storage;

/* addr of a chunk whose place only the format's library knows (an HDF5
 * index kind the core does not parse, on an HDF5 that cannot list it):
 * its stored bytes are read by ml_layout_read_chunk, not at an offset. */
#define ML_CHUNK_VIA_FORMAT (UINT64_MAX - 1)

/* One chunk's place in the source. */
typedef struct ml_chunk_info {
    uint64_t addr;           /* source offset; UINT64_MAX = never written (reads as fill);
                                ML_CHUNK_VIA_FORMAT = read through the format's library */
    uint64_t size;           /* stored bytes; 0 with a defined addr is corrupt (HDF5 raises) */
    unsigned filter_mask;    /* bit i set: filter i was skipped */
    const char *bad;         /* NULL, or why the index's answer for this chunk cannot be
                                trusted (static string): reading it is corrupt data */
} ml_chunk_info;

typedef struct ml_layout ml_layout;

/* What a file format does for its layouts. Every function may be called
 * from any thread at once; each says its errors in err, naming the file,
 * the dataset and the chunk or rows. */
typedef struct ml_layout_ops {
    const char *format;  /* "HDF5": for messages */
    /* Chunk `index` (< n_chunks, checked by the caller): see ml_layout_chunk. */
    int (*chunk)(ml_layout *L, uint64_t index, ml_chunk_info *info, ml_error *err);
    /* The stored bytes of a chunk at ML_CHUNK_VIA_FORMAT: see ml_layout_read_chunk. */
    int (*read_chunk)(ml_layout *L, uint64_t index, void *buf, uint64_t size, unsigned *mask, ml_error *err);
    /* Rows of ML_STORE_SLOW data: see ml_layout_read_slow. */
    int (*read_slow)(ml_layout *L, uint64_t row0, uint64_t n, void *dest, ml_error *err);
    /* Free L->fmt (the last reference is going). Accepts L->fmt == NULL. */
    void (*close)(ml_layout *L);
} ml_layout_ops;

struct ml_layout {
    _Atomic int refcount;        /* ml_layout_ref / ml_layout_unref */
    char *filename;              /* owned, for messages */
    char *path;                  /* owned, dataset path as given */
    ml_source *src;              /* owned reference: the bytes (source.h); every data read
                                    uses it, so a file renamed over or deleted after open is
                                    still the one read (never mixed) */
    uint64_t eof;                /* source offset no data read may pass (for HDF5: the
                                    smaller of the file's size and the superblock's end of
                                    allocation, as HDF5 refuses reads past either) */
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
    /* compact */
    void *mem;                   /* whole dataset bytes, owned */
    /* conversion */
    struct ml_convert *convert;  /* owned: what bytes read from storage need to become the
                                    dtype reported (convert.h), applied once where they leave
                                    storage (fetch.c); NULL: nothing. fill and mem are
                                    converted already (ml_layout_convert_setup) */
    /* the format */
    const ml_layout_ops *ops;    /* set at open, then read-only */
    void *fmt;                   /* owned by ops (its close frees it): the format's own
                                    state, opaque here (HDF5: h5internal.h ml_h5_dataset) */
};

/* 1 if the bytes [off, off + len) lie inside what a read of L's source may
 * touch (L->eof), without overflow. */
static inline int ml_layout_in_file(const ml_layout *L, uint64_t off, uint64_t len) {
    return off <= L->eof && len <= L->eof - off;
}

/* A new, empty layout (one reference, refcount 1, offset UINT64_MAX, no
 * source, no format) for a format's open to fill. Returns NULL without
 * memory. */
ml_layout *ml_layout_new(void);

void ml_layout_ref(ml_layout *L);
/* Drop a reference; frees at zero (the format's state through ops->close,
 * then the source reference and everything owned). Accepts NULL. */
void ml_layout_unref(ml_layout *L);

/* Fill *info for the chunk at linear index `index` (row-major over grid).
 * Thread-safe; for HDF5 the first look-up of a chunk takes the HDF5 lock,
 * and may fill the whole chunk table in one pass. info->bad is set when
 * the format's answers for the chunk disagree (corrupt index). Returns 0,
 * -ML_EINVAL (index off the grid), -ML_ECORRUPT, -ENOMEM or -ML_EHDF5. */
int ml_layout_chunk(ml_layout *L, uint64_t index, ml_chunk_info *info, ml_error *err);

/* Read the stored bytes of chunk `index`, whose info said
 * ML_CHUNK_VIA_FORMAT with `size` stored bytes, into buf (size bytes),
 * through the format's library; *mask gets its filter mask. Returns 0,
 * -ML_ECORRUPT (the library now finds another size) or -ML_EHDF5, with the
 * chunk named in err. */
int ml_layout_read_chunk(ml_layout *L, uint64_t index, void *buf, uint64_t size, unsigned *mask,
                         ml_error *err);

/* Slow path: read rows [row0, row0+n) through the format's library into
 * dest (n*row_bytes bytes). Returns 0, -ML_ECORRUPT or -ML_EHDF5. */
int ml_layout_read_slow(ml_layout *L, uint64_t row0, uint64_t n, void *dest, ml_error *err);

/* Plan L->convert from L->type and convert L->fill and L->mem with it:
 * a format's open calls it last, once fill and compact data are read.
 * Returns 0, -ML_ETYPE (a type too large to plan) or -ENOMEM, named in err. */
int ml_layout_convert_setup(ml_layout *L, ml_error *err);

/* Free a type tree. Accepts NULL. */
void ml_type_free(ml_type *t);

#endif
