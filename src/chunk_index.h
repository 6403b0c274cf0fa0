/* chunk_index.h - a chunked dataset's chunk index, read straight from the
 * file: the Data Layout message of the dataset's object header, and the
 * index that maps chunk coordinates to file addresses: the version 1
 * B-tree of layout message version 3 (what h5py and PyTables write with
 * the default libver; chunk_index.c), and the single-chunk, implicit,
 * fixed-array, extensible-array and version 2 B-tree indices of layout
 * message versions 4 and 5 (libver v110 and later; chunk_index4.c). The
 * caller needs only an ml_chunk_file and the dataspace's dimensions and
 * maximum dimensions: no HDF5 handle, no HDF5 call: every byte comes from the caller's byte source
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

/* A maximum dimension without limit (HDF5's H5S_UNLIMITED). */
#define ML_CHUNK_UNLIMITED UINT64_MAX

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
    ML_CHUNK_INDEX_SINGLE = 1,   /* layout 4/5: one chunk, address in the message */
    ML_CHUNK_INDEX_IMPLICIT = 2, /* layout 4/5: chunks at fixed offsets (no filters, early allocation) */
    ML_CHUNK_INDEX_FARRAY = 3,   /* layout 4/5: fixed array (no unlimited dimension) */
    ML_CHUNK_INDEX_EARRAY = 4,   /* layout 4/5: extensible array (one unlimited dimension) */
    ML_CHUNK_INDEX_BTREE2 = 5,   /* layout 4/5: version 2 B-tree (several unlimited dimensions) */
    ML_CHUNK_INDEX_BTREE1 = 6,   /* layout 3: version 1 B-tree, walked by ml_chunk_index_walk */
} ml_chunk_index_kind;

/* Layout message flags (versions 4 and 5). */
#define ML_CHUNK_FLAG_PARTIAL_UNFILTERED 0x01 /* edge chunks that are partly outside the
                                                 dataspace are stored unfiltered */
#define ML_CHUNK_FLAG_SINGLE_FILTERED 0x02    /* the single chunk is filtered: its stored size
                                                 and filter mask are in the message */

/* What the Data Layout message says about a chunked dataset. */
typedef struct ml_chunk_index {
    ml_chunk_index_kind kind;
    unsigned layout_version;                 /* 1..5, as found; 5 (HDF5 2.0, libver v200) stores
                                                a filtered chunk's size in sizeof_size bytes in
                                                every index, where 4 stores it in the fewest
                                                bytes that hold the unfiltered chunk's size
                                                plus one */
    unsigned flags;                          /* ML_CHUNK_FLAG_* (versions 4, 5; else 0) */
    unsigned ndims;                          /* chunk dims in the message: dataset rank + 1 */
    uint64_t dims[ML_CHUNK_INDEX_MAX_DIMS];  /* chunk shape in elements; the last is the element
                                                size in bytes */
    int64_t fill_size;                       /* bytes of the value the fill value message
                                                declares (0: none; -1: no such message, or
                                                one this does not parse) */
    uint64_t addr;                           /* index address (HDF5 address, relative to base);
                                                UINT64_MAX = no chunk allocated yet */
    /* The index kind's own parameters, as the message states them (the
     * walk checks them against the index's header, as HDF5 uses the header's). */
    uint64_t single_size;                    /* SINGLE, filtered: the chunk's stored size */
    unsigned single_mask;                    /* SINGLE, filtered: its filter mask */
    unsigned farray_page_bits;               /* FARRAY: log2 of the elements in a data block page */
    struct {
        unsigned max_bits;                   /* log2 of the most elements the array may hold */
        unsigned index_elmts;                /* elements held in the index block */
        unsigned min_ptrs;                   /* data block pointers of the first super blocks */
        unsigned min_elmts;                  /* elements of the smallest data block */
        unsigned page_bits;                  /* log2 of the elements in a data block page */
    } earray;                                /* EARRAY */
    struct {
        uint32_t node_size;                  /* bytes of a node */
        unsigned split_percent, merge_percent;
    } btree2;                                /* BTREE2 */
} ml_chunk_index;

/* Parse the object header at HDF5 address `ohdr` (version 1, or version 2
 * with its OCHK continuation blocks) and describe its Data Layout message
 * (and the size its fill value message declares) in *out. out->kind is
 * ML_CHUNK_INDEX_NONE for a layout that is not chunked or whose message
 * version is not 3, 4 or 5. Returns 0, -ML_ECORRUPT
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

/* Walk the chunk index `ix` of a dataset of `rank` dimensions `dims`
 * (the dataspace's current extent) and maximum dimensions `maxdims`
 * (ML_CHUNK_UNLIMITED for an unlimited one; NULL: the same as dims),
 * calling emit once for every chunk it holds, in strictly increasing
 * linear index: exactly the chunks HDF5's read finds. Every kind is
 * walked: the version 1 B-tree (chunk_index.c; maxdims unused), and the
 * single chunk, implicit, fixed array, extensible array and version 2
 * B-tree of layouts 4 and 5 (chunk_index4.c, which says what it checks:
 * every checksum, every count, every block's place). A chunk of a
 * layout 4/5 index never written is not emitted. Returns 0,
 * -ML_ECORRUPT (anything but a well-formed index of this dataset: bad
 * signature, checksum, node type or level, keys out of order or twice,
 * off the chunk grid, a count the structure cannot hold, a block past
 * the end of the file), -ML_EINVAL (ix is of no kind walked here, its
 * rank is not `rank`, or a chunk dimension is 0), -ENOTSUP (a
 * well-formed index this reader does not walk: an extensible array whose
 * index block points to paged data blocks, which HDF5 never writes for
 * chunks), -ENOMEM, -errno from the source, or emit's code. Chunks
 * already emitted when it fails stay emitted: the caller discards them. */
int ml_chunk_index_walk(const ml_chunk_file *f, const ml_chunk_index *ix, unsigned rank,
                        const uint64_t *dims, const uint64_t *maxdims, ml_chunk_emit_fn emit, void *ctx);

/* Find chunk `index` (linear, row-major over the chunk grid) in `ix`. In
 * a version 1 B-tree by descending from the root by key, as HDF5's read
 * does: one node per level, each checked as the walk checks it (so a
 * damaged node on the way is -ML_ECORRUPT, never a guess). In a layout
 * 4/5 index: single chunk and implicit by arithmetic, a fixed array by
 * its header and the one page that holds the chunk; an extensible array
 * and a version 2 B-tree by the walk, stopped at the chunk (O(chunks
 * before it): callers that need many look-ups walk once instead).
 * *offset is the chunk's file offset (base included), UINT64_MAX if the
 * index does not hold it (never written; then *size and *mask are 0).
 * Returns what the walk returns, and -ML_EINVAL for an index off the
 * grid. */
int ml_chunk_index_find(const ml_chunk_file *f, const ml_chunk_index *ix, unsigned rank,
                        const uint64_t *dims, const uint64_t *maxdims, uint64_t index, uint64_t *offset,
                        uint64_t *size, unsigned *mask);

/* The element count a fixed-array index (kind ML_CHUNK_INDEX_FARRAY)
 * holds, read from its header ("FAHD"): HDF5 1.10 indexes the array by a
 * chunk's place in the grid of the dataspace's maximum dimensions without
 * checking it against this count, and reads past its own array when a
 * damaged dataspace makes them differ. Returns 0, -ML_ECORRUPT (no such
 * header), -ML_EINVAL (not a fixed array) or -errno. */
int ml_chunk_index_farray_count(const ml_chunk_file *f, const ml_chunk_index *ix, uint64_t *nelmts);

#endif
