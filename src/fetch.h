/* fetch.h - read whole rows of a dataset into memory, whatever its storage:
 * the one data path that the Streamer and the Reader share. */
#ifndef ML_FETCH_H
#define ML_FETCH_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "layout.h"
#include "io.h"
#include "budget.h"

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

/* Take tokens from budget client c (borrowed: it must outlive f; NULL:
 * none) before every read from now on: each batch of reads takes its bytes
 * and one I/O per request, a slow-path read (the format's library) its
 * rows' bytes and one I/O; data in memory takes nothing. A read whose wait
 * is cancelled (ml_budget_client_cancel) fails with -ECANCELED. */
void ml_fetcher_set_budget(ml_fetcher *f, ml_budget_client *c);

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

/* ---- read-ahead hints (streamer.c's read-ahead of cold data) --------- */

/* Hints about rows that will be read soon; they read nothing into a
 * destination, check nothing and report nothing: the fetch that reads the
 * rows later does all that. Borrow L. */

/* Ask L's source to start reading the stored bytes of rows [row0, row0 +
 * n) without waiting (the page cache, for a file): contiguous data is one
 * range, chunked data the written chunks the rows touch (adjacent ones
 * merged into one range; at most ML_PREFETCH_MAX_CHUNKS look-ups a call),
 * memory and slow-path data nothing. Rows outside the dataset, chunks the
 * index cannot give or that lie past the file's end are skipped. Returns
 * the number of ranges handed to the source. */
#define ML_PREFETCH_MAX_CHUNKS 4096
size_t ml_fetch_prefetch(ml_layout *L, uint64_t row0, uint64_t n);

/* Whether the stored bytes of rows [row0, row0 + n) look resident (a read
 * would not wait for a device): the page of their last byte is sampled
 * (the one a sequential reader reaches last).
 * Returns 1 (resident, or nothing of them is read from the source), 0 (not
 * resident), or -EOPNOTSUPP (the source cannot tell). */
int ml_fetch_resident(ml_layout *L, uint64_t row0, uint64_t n);

/* ---- what the Reader asks of storage, and reads that never wait ------ */

/* Storage-neutral questions a planner may ask instead of testing
 * L->storage. */

/* Rows of L that are read and decoded together (a band: one row of
 * chunks, every chunk across the trailing dims), or 0 if any row can be
 * read on its own. */
uint64_t ml_fetch_band_rows(const ml_layout *L);

/* 1 if threads reading disjoint rows of L at once read in parallel (the
 * native readers of file data), 0 if parts would gain nothing (data held
 * in memory, or read by HDF5 under its one lock). */
int ml_fetch_parallel(const ml_layout *L);

/* 1 if any range of L's rows is one read of the file straight into the
 * destination (one allocated extent): ml_fetch_rows_multi then reads
 * several ranges as one batch of reads. */
int ml_fetch_range_is_one_read(const ml_layout *L);

/* Rows in memory: where a layout's rows can be copied from directly
 * (contiguous data through the source's view of the file, compact data
 * from the layout), for gathers of many small rows without a read each.
 * Copies out of a view must run inside ml_map_protect (mapcopy.h): a file
 * truncated under its view faults, and the copy then returns -EFAULT;
 * the caller reads those rows through a fetcher instead, which names the
 * error. Touching a page that is not in memory waits for the device, so
 * only threads that may wait copy from a view. */
typedef struct ml_rows_view {
    const unsigned char *rows; /* contiguous: row 0's bytes, row i at rows + i * L->row_bytes;
                                  chunked (band_rows > 0): NULL, ask ml_fetch_view_band */
    uint64_t n_rows;           /* contiguous: rows [0, n_rows) lie in the view (all of L's,
                                  unless the file grew past its view or shrank) */
    uint64_t band_rows;        /* chunked: rows per chunk (each chunk whole rows); 0: contiguous */
    const unsigned char *base; /* the view's first byte */
    uint64_t end;              /* bytes of the view that exist now (file size, view, L->eof) */
    int local;                 /* 1: a page not in memory waits only for a local device
                                  (ml_source_view.local) */
} ml_rows_view;

/* Fill *out for L, with the bytes that exist now (one fstat: a file cut
 * under the view would read as zeros to the end of its last page). Ask
 * again for each batch of copies. Contiguous data and chunked data stored
 * without filters in chunks of whole rows (the trailing dims whole) have
 * views. Returns 0, or -EAGAIN where rows must be read: compressed or
 * partial-row chunks, unallocated storage, bytes that need a conversion
 * (convert.c), a source without a view (MULTILOAD_MMAP=0, fault
 * injection, not a regular file). Borrows L; the view lives as long as L. */
int ml_fetch_view(const ml_layout *L, ml_rows_view *out);

/* Chunked views: the bytes of band (chunk) `band` of L in view v, or
 * NULL where they must be read (a chunk never written, one only the
 * format's library finds, a corrupt or short entry, bytes past v->end).
 * May look the chunk up in the index (the chunk table, or HDF5 for a lazy
 * one): call it outside ml_map_protect, from a thread that may wait. */
const unsigned char *ml_fetch_view_band(ml_layout *L, const ml_rows_view *v, uint64_t band);

/* Rows [row0, row0 + n) of L into dest (n * L->row_bytes bytes) copied
 * from L's view if it is local, without a system call: after the copy it
 * touches the page after the rows' last one, which faults if the file now
 * ends in or before the rows' last page (so a truncated file never reads
 * as zeros), instead of asking fstat. A page not in memory waits for the
 * local disk. Returns 0, or -EAGAIN (no local view, rows past it or past
 * the view's last page, or the file shrank): read them instead. */
int ml_fetch_rows_mapped(const ml_layout *L, uint64_t row0, uint64_t n, void *dest);

/* Reads that never wait for a device, for threads that must stay able to
 * give up at any moment (the Reader's submit and its helping waiter): rows
 * come from memory or from the page cache only (RWF_NOWAIT). Anything that
 * would wait for the device, fail, or pass the end of the file returns
 * -EAGAIN and reports nothing: the caller hands the work to a thread that
 * may wait (an ml_fetcher's), which reads it again and names any error.
 * With fault injection on they always return -EAGAIN (the faults model a
 * device, and must hit the engine they test). */

/* What cached-only reads have shown about this kernel and filesystem,
 * shared by the threads of one engine. */
typedef struct ml_nowait {
    _Atomic int ok;     /* RWF_NOWAIT works here; cleared (relaxed) if the kernel or
                           filesystem lacks it: every cached-only read is -EAGAIN */
    _Atomic int batch;  /* ... and in one submission of several reads (io_uring); cleared
                           (relaxed) if not: runs are then read one by one */
    ml_io_mode io_mode; /* engine for batches; immutable */
} ml_nowait;

void ml_nowait_init(ml_nowait *nw, ml_io_mode io_mode);

/* 1 if cached-only reads are worth trying: RWF_NOWAIT works here and
 * fault injection is off. */
int ml_nowait_usable(ml_nowait *nw);

/* One thread's state for cached-only batches: zero it to start, free it
 * with ml_nowait_ctx_release (which leaves it zeroed; accepts NULL). Not
 * thread-safe. */
typedef struct ml_nowait_ctx {
    ml_io *io;          /* owned engine, opened at the first batch, or NULL */
    ml_io_req *reqs;    /* owned, reqs_cap entries */
    size_t reqs_cap;
} ml_nowait_ctx;

void ml_nowait_ctx_release(ml_nowait_ctx *c);

/* Rows [row0, row0 + n) of L into dest (n * L->row_bytes bytes) without
 * waiting for a device: compact data from memory, contiguous data from
 * the page cache. Borrows L and dest. Returns 0 or -EAGAIN. */
int ml_fetch_rows_nowait(ml_nowait *nw, const ml_layout *L, uint64_t row0, uint64_t n, void *dest);

/* n runs of rows, one after another, into dest (the sum of the counts
 * times L->row_bytes), without waiting for a device: several runs of one
 * extent in one submission of RWF_NOWAIT reads (one io_uring submission,
 * where a read each would cost a system call each), else run by run as
 * ml_fetch_rows_nowait. Borrows L, runs and dest. Returns 0 or -EAGAIN. */
int ml_fetch_runs_nowait(ml_nowait *nw, ml_nowait_ctx *c, const ml_layout *L, const ml_row_run *runs,
                         size_t n, void *dest);

#endif
