/* chunk_index4.h - internal to the chunk index reader: the walk and the
 * look-up of the index kinds of layout message versions 4 and 5
 * (chunk_index4.c), which chunk_index.c's ml_chunk_index_walk and
 * ml_chunk_index_find hand them to. Callers use chunk_index.h only.
 */
#ifndef ML_CHUNK_INDEX4_H
#define ML_CHUNK_INDEX4_H

#include "chunk_index.h"

/* ml_chunk_index_walk for kinds SINGLE..BTREE2; maxdims never NULL. */
int ml_chunk_index4_walk(const ml_chunk_file *f, const ml_chunk_index *ix, unsigned rank, const uint64_t *dims,
                         const uint64_t *maxdims, ml_chunk_emit_fn emit, void *ctx);

/* ml_chunk_index_find for kinds SINGLE..BTREE2; maxdims never NULL. */
int ml_chunk_index4_find(const ml_chunk_file *f, const ml_chunk_index *ix, unsigned rank, const uint64_t *dims,
                         const uint64_t *maxdims, uint64_t index, uint64_t *offset, uint64_t *size,
                         unsigned *mask);

#endif
