/* harness.h - what fuzz_chunk_index.c tells a driver about the input it
 * just ran, beyond "it did not crash". libFuzzer ignores it; the plain
 * mutation loop (mutate_main.c), which has no coverage map, keeps inputs
 * that still walk cleanly as parents for further mutations and counts the
 * outcomes it reports.
 */
#ifndef ML_FUZZ_INDEX_HARNESS_H
#define ML_FUZZ_INDEX_HARNESS_H

#include <stddef.h>
#include <stdint.h>

/* The input's header, before the file image (all integers little-endian):
 *   0  1  sizeof_addr      ml_chunk_file.sizeof_addr, passed as is
 *   1  1  sizeof_size      ml_chunk_file.sizeof_size
 *   2  2  btree_k          chunk B-tree K (H5Pget_istore_k)
 *   4  1  rank             dataset rank, 0..FUZZ_INDEX_MAX_RANK (else the input is skipped)
 *   5  3  reserved         0
 *   8  8  base             user block size: file offset of HDF5 address 0
 *  16  8  ohdr             HDF5 address of the dataset's object header
 *  24  8*rank dims         dataset shape in elements
 * then the file image, which is the whole file the reader sees. */
#define FUZZ_INDEX_HEADER_FIXED 24
#define FUZZ_INDEX_MAX_RANK 32

/* Outcome of the last LLVMFuzzerTestOneInput call. */
typedef struct fuzz_index_outcome {
    int parsed;        /* 1 if the header decoded and locate ran */
    int locate_rc;     /* ml_chunk_index_locate's return */
    int kind;          /* the index kind it found (ml_chunk_index_kind) */
    int walked;        /* 1 if ml_chunk_index_walk ran */
    int walk_rc;       /* its return */
    uint64_t emitted;  /* chunks emit received */
    uint64_t reads;    /* pread calls the core made */
} fuzz_index_outcome;

extern fuzz_index_outcome fuzz_index_last;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#endif
