/* chunk_index.h - a chunked dataset's chunk index, read straight from the
 * file: the Data Layout message of the dataset's object header, and the
 * version 1 B-tree that maps chunk coordinates to file addresses (layout
 * message version 3: what h5py and PyTables write with the default
 * libver). No HDF5 call: every byte comes from the caller's byte source
 * (source.h, one synchronous read at a time), and every read, count and depth is bounded by the file's
 * size and the format's limits.
 *
 * What this returns is what the file claims, not a fact: h5chunks.c
 * checks a sample of it against HDF5 before it trusts it.
 */
#ifndef ML_CHUNK_INDEX_H
#define ML_CHUNK_INDEX_H

#include <stdint.h>

/* HDF5's limit: 32 dataset dimensions plus the element-size dimension. */
#define ML_CHUNK_INDEX_MAX_DIMS 33

/* The file as the index reader needs it; filled by the caller. */
typedef struct ml_chunk_file {
    struct ml_source *src; /* borrowed: where the bytes come from */
    uint64_t base;        /* file offset of HDF5 address 0 (the user block's size) */
    uint64_t size;        /* file size, bytes: no read goes past it */
    unsigned sizeof_addr; /* bytes of a file address: 2..8 */
    unsigned sizeof_size; /* bytes of a length: 2..8 */
    unsigned btree_k;     /* chunk B-tree K (H5Pget_istore_k): a node has at most 2K children */
} ml_chunk_file;

/* Chunk index types; the layout-4 ones are numbered as in the format. */
typedef enum ml_chunk_index_kind {
    ML_CHUNK_INDEX_NONE = 0, /* not chunked, or a layout message version this does not parse */
    ML_CHUNK_INDEX_SINGLE = 1,   /* layout 4: one chunk, address in the message */
    ML_CHUNK_INDEX_IMPLICIT = 2, /* layout 4: chunks at fixed offsets (no filters, early allocation) */
    ML_CHUNK_INDEX_FARRAY = 3,   /* layout 4: fixed array (no unlimited dimension) */
    ML_CHUNK_INDEX_EARRAY = 4,   /* layout 4: extensible array (one unlimited dimension) */
    ML_CHUNK_INDEX_BTREE2 = 5,   /* layout 4: version 2 B-tree (several unlimited dimensions) */
    ML_CHUNK_INDEX_BTREE1 = 6,   /* layout 3: version 1 B-tree, walked by ml_chunk_index_walk */
} ml_chunk_index_kind;

/* What the Data Layout message says about a chunked dataset. */
typedef struct ml_chunk_index {
    ml_chunk_index_kind kind;
    unsigned layout_version;                 /* 1..4, as found */
    unsigned ndims;                          /* chunk dims in the message: dataset rank + 1 */
    uint64_t dims[ML_CHUNK_INDEX_MAX_DIMS];  /* chunk shape in elements; the last is the element
                                                size in bytes */
    int64_t fill_size;                       /* bytes of the value the fill value message
                                                declares (0: none; -1: no such message, or
                                                one this does not parse) */
    uint64_t addr;                           /* index address (HDF5 address, relative to base);
                                                UINT64_MAX = no chunk allocated yet */
} ml_chunk_index;

/* Parse the object header at HDF5 address `ohdr` (version 1, or version 2
 * with its OCHK continuation blocks) and describe its Data Layout message
 * (and the size its fill value message declares) in *out. out->kind is
 * ML_CHUNK_INDEX_NONE for a layout that is not chunked or whose message
 * version is not 3 or 4. Returns 0, -ML_ECORRUPT
 * (no well-formed header or layout message), -ENOMEM, or -errno from the source. */
int ml_chunk_index_locate(const ml_chunk_file *f, uint64_t ohdr, ml_chunk_index *out);

/* Receives one chunk of the index: its linear index (row-major over the
 * chunk grid), file offset (base included; UINT64_MAX if the index gives
 * no address: never written, size 0), stored size in bytes (0 at a defined
 * address is corrupt: the reader refuses it) and filter mask. Offset and
 * size are what the index claims: the reader checks them against the
 * file's end before it reads the chunk. Returns 0 to go on, or a
 * negative code, which stops the walk and is returned by it. */
typedef int (*ml_chunk_emit_fn)(void *ctx, uint64_t index, uint64_t offset, uint64_t size,
                                unsigned filter_mask);

/* Walk the version 1 B-tree of `ix` (kind ML_CHUNK_INDEX_BTREE1) of a
 * dataset of `rank` dimensions `dims`, calling emit once for every chunk
 * it holds, in strictly increasing linear index: exactly the chunks that
 * HDF5's read, descending by key, finds. Returns 0, -ML_ECORRUPT
 * (anything but a well-formed index of this dataset: bad signature, node
 * type or level, keys out of order, off the chunk grid or outside their
 * parent's bounds, a node past the end of the file), -ML_EINVAL (ix is not a v1 B-tree, its rank is not
 * `rank`, or a chunk dimension is 0), -ENOMEM, -errno from the source, or emit's code. Chunks already
 * emitted when it fails stay emitted: the caller discards them. */
int ml_chunk_index_walk(const ml_chunk_file *f, const ml_chunk_index *ix, unsigned rank,
                        const uint64_t *dims, ml_chunk_emit_fn emit, void *ctx);

/* Find chunk `index` (linear, row-major over the chunk grid) in the
 * version 1 B-tree of `ix` by descending from the root by key, as HDF5's
 * read does: one node per level, each checked as the walk checks it (so
 * a damaged node on the way is -ML_ECORRUPT, never a guess). *offset is
 * the chunk's file offset (base included), UINT64_MAX if the index does
 * not hold it (never written; then *size and *mask are 0). Returns 0,
 * -ML_ECORRUPT, -ML_EINVAL (not a v1 B-tree of this rank, or the index is
 * off the grid), -ENOMEM or -errno from the source. */
int ml_chunk_index_find(const ml_chunk_file *f, const ml_chunk_index *ix, unsigned rank,
                        const uint64_t *dims, uint64_t index, uint64_t *offset, uint64_t *size,
                        unsigned *mask);

/* The element count a fixed-array index (kind ML_CHUNK_INDEX_FARRAY)
 * holds, read from its header ("FAHD"): HDF5 1.10 indexes the array by a
 * chunk's place in the grid of the dataspace's maximum dimensions without
 * checking it against this count, and reads past its own array when a
 * damaged dataspace makes them differ. Returns 0, -ML_ECORRUPT (no such
 * header), -ML_EINVAL (not a fixed array) or -errno. */
int ml_chunk_index_farray_count(const ml_chunk_file *f, const ml_chunk_index *ix, uint64_t *nelmts);

#endif
