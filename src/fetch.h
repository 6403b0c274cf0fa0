/* fetch.h - read whole rows of a dataset into memory, whatever its storage:
 * the one data path that the Streamer and the Reader share. */
#ifndef ML_FETCH_H
#define ML_FETCH_H

#include <stdint.h>

#include "error.h"
#include "layout.h"
#include "io.h"

/* Per-thread read state: a read context on the layout's source, a
 * decoder and scratch buffers. Not thread-safe; one per worker. */
typedef struct ml_fetcher ml_fetcher;

/* Open a fetcher on L (takes its own reference). Reads L->src through a
 * read context of its own. Returns 0 or -errno with detail in err. */
int ml_fetcher_open(ml_fetcher **out, ml_layout *L, ml_io_mode mode,
                    ml_error *err);

/* Accepts NULL. */
void ml_fetcher_close(ml_fetcher *f);

/* Read rows [row0, row0 + n) of the dataset into dest, which must hold
 * n * L->row_bytes bytes, row-major. Unallocated storage reads as the fill
 * value. Returns 0 or a negative code with file, dataset and rows in err. */
int ml_fetch_rows(ml_fetcher *f, uint64_t row0, uint64_t n, void *dest,
                  ml_error *err);

ml_io_mode ml_fetcher_io_mode(const ml_fetcher *f);

/* Read through the source's direct variant from now on (O_DIRECT,
 * bypassing the page cache), through a bounce buffer aligned as that
 * source requires. For a file it reopens the layout's descriptor, so it is
 * the same file. Returns 0, or -EINVAL where the source (the filesystem)
 * has no direct variant (the fetcher then keeps reading buffered). */
int ml_fetcher_set_direct(ml_fetcher *f, ml_error *err);

/* A run of consecutive rows: [start, start + count). */
typedef struct ml_row_run {
    uint64_t start;
    uint64_t count;
} ml_row_run;

/* Read n runs of rows, one after another, into dest (which must hold the
 * sum of the counts times L->row_bytes). Contiguous data goes to the I/O
 * engine as one batch of n reads; other storage reads run by run through
 * ml_fetch_rows(). Runs must lie inside the dataset. Borrows runs and dest.
 * Returns 0 or a negative code with file, dataset and rows in err. */
int ml_fetch_runs(ml_fetcher *f, const ml_row_run *runs, size_t n, void *dest,
                  ml_error *err);

/* Read n row ranges, range i into dests[i] (runs[i].count * L->row_bytes
 * bytes each). For chunked data the chunks of all ranges are read in
 * shared I/O batches (up to the engine's depth per submission) and decoded
 * one by one; contiguous data up to 64 ranges is one batch of reads;
 * other storage reads range by range. Borrows runs and dests.
 * Returns 0 or a negative code with file, dataset, chunk and rows in err. */
int ml_fetch_rows_multi(ml_fetcher *f, const ml_row_run *runs, void *const *dests, size_t n,
                        ml_error *err);

#endif
