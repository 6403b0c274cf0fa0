/* file_read.h - read whole files by path into caller slots, a batch at a
 * time: open, fstat, check, then every read of the batch in one io_uring
 * submit (or pread, one after another). Used by file_serve.c. */
#ifndef ML_FILE_READ_H
#define ML_FILE_READ_H

#include <stddef.h>
#include <stdint.h>

#include "budget.h"
#include "error.h"
#include "source.h"

typedef struct ml_fread ml_fread;

/* One file to read. */
typedef struct ml_fread_job {
    const char *path;     /* borrowed, NUL-terminated */
    void *dst;            /* borrowed slot, 4 KiB aligned, slot_bytes long */
    size_t slot_bytes;    /* multiple of 4 KiB, >= max_size rounded up */
    uint64_t max_size;    /* a larger file fails with EFBIG */
    uint64_t size;        /* out: bytes read (the file's size) */
    int direct_fallback;  /* out: 1 if O_DIRECT was refused and the read went buffered */
    ml_error err;         /* out: code 0 or -errno, msg names path and cause */
    /* engine-private */
    int fd;
    uint64_t done;
} ml_fread_job;

/* A reader for batches of up to `depth` jobs (1..256) on the calling
 * thread; mode ML_IO_AUTO picks as ml_io_default_mode() does (MULTILOAD_IO
 * overrides), io_uring falling back to pread if its setup fails. direct:
 * open with O_DIRECT where the filesystem allows. Returns 0 or -ENOMEM. */
int ml_fread_new(ml_fread **out, unsigned depth, ml_io_mode mode, int direct);
void ml_fread_free(ml_fread *r); /* accepts NULL */
ml_io_mode ml_fread_mode(const ml_fread *r);

/* Read each job's whole file into its dst; every job ends with size set or
 * err set, never retried forever: EINTR and EAGAIN retry the same
 * transfer, short reads continue where they stopped, and a file that ends
 * before its fstat size fails with EIO ("shrank"). n <= depth. */
void ml_fread_batch(ml_fread *r, ml_fread_job *jobs, unsigned n);

/* Take tokens from c (borrowed: it must outlive r; NULL: none) before
 * each batch's reads: the opened files' bytes and one I/O per file. */
void ml_fread_set_budget(ml_fread *r, ml_budget_client *c);

#endif
