/* writer.h - the Writer's core: datasets of one HDF5 file written behind
 * the producer through bounded buffer blocks (write_block.c), each block a
 * band of whole chunks along axis 0 filtered on worker threads
 * (encode.c) and stored with HDF5's direct chunk write (h5write.c).
 *
 * A block is WRITABLE while the binding fills it (ml_wblock_put); handed
 * to ml_writer_submit it is PENDING (immutable, owned by the writer), then
 * COMMITTED (every chunk written) or ERROR (its failure kept, naming file,
 * dataset, rows and the error). write_block.c's opening comment holds the
 * diagram and the locks.
 */
#ifndef ML_WRITER_H
#define ML_WRITER_H

#include <stddef.h>
#include <stdint.h>

#include "codec.h"
#include "error.h"
#include "layout.h"

struct ml_budget;
struct ml_budget_stats;

#define ML_WRITER_UNLIMITED UINT64_MAX /* a maxshape entry: no bound (h5py's None) */

typedef struct ml_writer ml_writer;
typedef struct ml_wblock ml_wblock;

/* A dataset's creation parameters, h5py's meanings. */
typedef struct ml_wparams {
    unsigned ndim;                      /* 1..ML_MAX_DIMS */
    uint64_t shape[ML_MAX_DIMS];        /* current extent */
    uint64_t maxshape[ML_MAX_DIMS];     /* >= shape, or ML_WRITER_UNLIMITED */
    uint64_t chunks[ML_MAX_DIMS];       /* >= 1 each */
    ml_pipeline pipe;                   /* filters in the order applied on write */
} ml_wparams;

/* One failed block: what was lost and why. */
typedef struct ml_wfail {
    char dataset[256];  /* the dataset's path in the file (truncated if longer) */
    uint64_t row0;      /* first row of the block */
    uint64_t n_rows;    /* rows of the block that held data */
    int code;           /* -errno or -ML_E* */
    char msg[ML_ERROR_MSG_MAX]; /* names file, dataset, rows and the error */
} ml_wfail;

/* Open (truncate = 0: mode "a", creating it if absent) or create
 * (truncate = 1: mode "w") `path` for writing, with n_workers filter
 * threads (>= 1) and at most max_pending bytes of PENDING blocks (>= 1).
 * HDF5's file lock is released after the open (other processes may open it;
 * what they see is consistent after ml_writer_sync). Returns 0 (*out owned
 * by the caller: ml_writer_close, then ml_writer_free) or -errno
 * (-EACCES, -EROFS, -ENOENT of the folder, -EBUSY: this process has the
 * file open read-only through HDF5), -ML_ENOTHDF5, -ML_EHDF5; err names
 * the file. budget (borrowed; NULL: none): every chunk write first takes
 * its stored bytes and one I/O from it at `priority` (budget.h); an
 * aborting close cancels the waits. */
int ml_writer_open(const char *path, int truncate, unsigned n_workers, uint64_t max_pending,
                   struct ml_budget *budget, int priority, ml_writer **out, ml_error *err);

/* The writer's budget stats (budget.h) into *st: 0, or -ENOENT when it
 * was opened without a budget. */
int ml_writer_budget_stats(ml_writer *w, struct ml_budget_stats *st);

/* Create dataset `name` (intermediate groups too) of type t (borrowed)
 * with parameters p and fill value `fill` (t->size bytes, or NULL: HDF5's
 * default, zeros). *ds is its index for the calls below. Returns 0,
 * -EEXIST (the name exists), -ML_ETYPE (t has no HDF5 equivalent here),
 * -ML_EINVAL, -ML_EHDF5; err names file and dataset. */
int ml_writer_create(ml_writer *w, const char *name, const ml_type *t, const ml_wparams *p, const void *fill,
                     int *ds, ml_error *err);

/* Open the existing dataset `name` for writing (made by us, h5py or
 * anyone): chunked, filters the Writer encodes, a type whose bytes the
 * Writer can write as read. *ds as for ml_writer_create; an already open
 * name gives its index again. Returns 0, -ML_ENOTFOUND, -ML_ENOTDSET,
 * -ML_ETYPE, -ML_EFILTER (a filter the Writer cannot encode, or
 * contiguous storage), -ML_EHDF5; err names file and dataset. */
int ml_writer_find(ml_writer *w, const char *name, int *ds, ml_error *err);

/* Dataset ds's parameters (copied into *p; p->shape is the extent HDF5 has
 * now), type and fill value (t->size bytes; both borrowed for the writer's
 * life). Takes the HDF5 lock. 0, or -ML_EINVAL when the writer has no
 * dataset ds. */
int ml_writer_info(ml_writer *w, int ds, ml_wparams *p, const ml_type **t, const unsigned char **fill);

/* Bytes of one block of ds: chunks[0] rows of the dataset's full row
 * (0 when the writer has no dataset ds). */
uint64_t ml_writer_block_bytes(ml_writer *w, int ds);

/* A block's rows (chunks[0]), bytes per row, and the writer it belongs
 * to: what the binding checks every put and submit against. */
uint64_t ml_wblock_rows(const ml_wblock *b);
uint64_t ml_wblock_row_bytes(const ml_wblock *b);
ml_writer *ml_wblock_writer(const ml_wblock *b);

/* A WRITABLE block for band `band` of ds (rows band*chunks[0] ..), every
 * row the fill value; with load = 1, the rows the file holds (below the
 * extent) are read into it first, after every PENDING block of that band
 * has committed (an edge merge). Waits without bound only for those
 * blocks. Returns 0 (*out owned by the caller until submitted or freed) or
 * -ENOMEM, -ML_EHDF5, -ML_ECLOSED, -ML_EINVAL (no dataset ds, or a band past
 * 2^64 rows); err names dataset and rows. */
int ml_wblock_new(ml_writer *w, int ds, uint64_t band, int load, ml_wblock **out, ml_error *err);

/* Copy n_rows whole rows from src into WRITABLE block b at row `at` of
 * the band (at + n_rows <= chunks[0]). Borrows src. Thread-safe for
 * distinct blocks; no lock taken. */
void ml_wblock_put(ml_wblock *b, uint64_t at, const void *src, uint64_t n_rows);


/* Free a WRITABLE block never submitted. Accepts NULL. */
void ml_wblock_free(ml_wblock *b);

/* Wait up to ms milliseconds (< 0: forever) until `bytes` more PENDING
 * bytes fit under max_pending (always when nothing is pending), then
 * count them as pending. Returns 0, -ETIMEDOUT, -ECANCELED (a block has
 * failed: nothing more is accepted) or -ML_ECLOSED. */
int ml_writer_reserve(ml_writer *w, uint64_t bytes, long ms);

/* Hand WRITABLE block b, with valid_rows rows of data (1..chunks[0]), to
 * the workers, under a reservation of ml_writer_block_bytes(ds) from
 * ml_writer_reserve. With keep = 0 b is PENDING and owned by the writer
 * (the caller's pointer is invalid after the call); with keep = 1 a copy
 * is submitted and b stays WRITABLE with the caller (a flush of a partial
 * block). Blocks of one band are written in submission order. Returns 0
 * or -ENOMEM (keep = 1: the copy; the reservation is given back). */
int ml_writer_submit(ml_writer *w, ml_wblock *b, uint64_t valid_rows, int keep);

/* Give back a reservation that will not be submitted. */
void ml_writer_unreserve(ml_writer *w, uint64_t bytes);

/* Wait up to ms (< 0: forever) until no block is PENDING. 0 or -ETIMEDOUT. */
int ml_writer_wait_idle(ml_writer *w, long ms);

/* Set dataset ds's extent along axis 0 to at least n_rows (a flush of a
 * grown dataset whose tail block is not written yet). 0 or -ML_EHDF5. */
int ml_writer_grow(ml_writer *w, int ds, uint64_t n_rows, ml_error *err);

/* H5Fflush the file, then fsync it: after this returns 0 what committed
 * is on disk, readable by another process. Call with no block PENDING.
 * Returns 0, -errno (fsync's; -ENOSPC) or -ML_EHDF5; err names the file. */
int ml_writer_sync(ml_writer *w, ml_error *err);

/* Failures so far, and the k-th of them (k < the count) into *out. */
size_t ml_writer_n_failures(ml_writer *w);
void ml_writer_failure(ml_writer *w, size_t k, ml_wfail *out);

/* Counters: bytes and blocks PENDING now, blocks committed and failed. */
void ml_writer_stats(ml_writer *w, uint64_t *pending_bytes, uint64_t *n_pending, uint64_t *n_committed,
                     uint64_t *n_failed);

/* A non-blocking eventfd written whenever a block commits or fails and at
 * close (asyncio waits on it). Valid until ml_writer_free. */
int ml_writer_event_fd(ml_writer *w);

/* Stop: with abort = 0 wait for every PENDING block (call sync first for
 * durability), with abort = 1 discard those no worker has started; join
 * the workers, close the datasets and the file. Idempotent; later calls
 * that need the file give -ML_ECLOSED. Returns 0 or the first error of
 * closing the file (-ML_EHDF5, err names it). Always returns. */
int ml_writer_close(ml_writer *w, int abort, ml_error *err);

/* Free a writer (closing it with abort = 1 first if needed). Accepts NULL. */
void ml_writer_free(ml_writer *w);

#endif
