/* fetch.c - rows of any supported layout into a caller's buffer.
 *
 * Contiguous data is one read at its file offset. Chunked data reads every
 * chunk the rows touch in one batch, then decodes each into place:
 *   - a chunk that spans whole rows (its trailing dims equal the dataset's)
 *     and lies inside the requested rows is read or decoded straight into
 *     the destination: no intermediate copy;
 *   - any other chunk is decoded into a chunk buffer and the intersection
 *     copied out (an N-D copy with contiguous innermost runs).
 * Chunks that were never written read as the fill value, as HDF5 does.
 * Batches are bounded (MAX_BATCH chunks) so scratch memory stays small.
 *
 * Every byte comes from the layout's source (source.h) through this
 * fetcher's own read context. Direct mode reads the source's direct
 * variant (O_DIRECT for a file), widening every read to that source's
 * alignment (4 KiB) in offset and length, into an aligned bounce buffer,
 * and copies the wanted bytes out: a memcpy at ~10 GB/s is small beside storage at ~1 GB/s, and it
 * keeps one code path for contiguous data, chunks and wrapped blocks.
 */
#define _GNU_SOURCE
#include "fetch.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <unistd.h>

#include "convert.h"
#include "decode.h"
#include "fault.h"
#include "mapcopy.h"

#define MAX_BATCH 64

typedef struct plan {
    uint64_t index;      /* chunk linear index */
    uint64_t origin[ML_MAX_DIMS]; /* element coords of the chunk's corner */
    ml_chunk_info info;
    int direct;          /* 1: whole chunk maps to contiguous dest rows */
    unsigned char *dest; /* direct: where the chunk's first row goes */
    unsigned char *stored; /* where the stored bytes are read to */
    uint64_t row0, n;    /* the row range this chunk is read for ... */
    unsigned char *base; /* ... and where row row0 of it goes */
} plan;

struct ml_fetcher {
    ml_layout *L;            /* owned reference */
    ml_io *io;               /* owned: this thread's reads of L->src */
    ml_decoder *dec;         /* owned */
    unsigned char *scratch;  /* stored chunk bytes, scratch_cap bytes */
    size_t scratch_cap;
    unsigned char *chunkbuf; /* one decoded chunk, L->chunk_bytes */
    plan plans[MAX_BATCH];
    ml_io_req reqs[MAX_BATCH];
    ml_io *dio;              /* owned: reads of L->src's direct variant, or NULL */
    size_t align;            /* direct mode: the direct source's alignment, bytes */
    unsigned char *bounce;   /* direct mode: aligned, bounce_cap bytes */
    size_t bounce_cap;
    ml_io_req *dreqs;        /* direct mode: widened, merged requests, dreqs_cap */
    size_t *dmap;            /* direct mode: request i is read by dreqs[dmap[i]], dreqs_cap */
    size_t dreqs_cap;
    ml_budget_client *budget; /* borrowed, or NULL: tokens taken before each batch of reads */
};

int ml_fetcher_open(ml_fetcher **out, ml_layout *L, ml_io_mode mode, ml_error *err) {
    int rc;
    ml_fetcher *f = calloc(1, sizeof *f);
    if (!f || ml_fault_alloc() < 0) {
        free(f);
        return ml_error_set(err, -ENOMEM, "out of memory opening a reader for dataset '%s' in file '%s'",
                             L->path, L->filename);
    }
    /* The layout's source, not a new open by name: a file replaced or
     * deleted since the layout was opened is still the one we read. */
    if ((rc = ml_io_open(&f->io, L->src, MAX_BATCH, mode)) < 0 || (rc = ml_decoder_open(&f->dec)) < 0) {
        ml_error_set(err, rc, "cannot set up the read engine: %s", ml_strerror(rc));
        goto fail;
    }
    ml_layout_ref(L);
    f->L = L;
    *out = f;
    return 0;
fail:
    ml_fetcher_close(f);
    return rc;
}

void ml_fetcher_close(ml_fetcher *f) {
    if (!f)
        return;
    ml_io_close(f->dio);
    free(f->bounce);
    free(f->dreqs);
    free(f->dmap);
    ml_io_close(f->io);
    ml_decoder_close(f->dec);
    free(f->scratch);
    free(f->chunkbuf);
    ml_layout_unref(f->L);
    free(f);
}

ml_io_mode ml_fetcher_io_mode(const ml_fetcher *f) { return ml_io_get_mode(f->io); }

int ml_fetcher_set_direct(ml_fetcher *f, ml_error *err) {
    if (f->dio)
        return 0;
    ml_source *d = NULL;
    int rc = ml_source_direct(f->L->src, &d);
    if (rc == 0)
        rc = ml_io_open(&f->dio, d, MAX_BATCH, ml_io_get_mode(f->io));
    if (d)
        f->align = d->align;
    ml_source_unref(d); /* f->dio holds its own reference */
    if (rc < 0)
        return ml_error_set(err, rc, "cannot open '%s' with O_DIRECT: %s", f->L->filename, strerror(-rc));
    return 0;
}

/* Direct mode: bytes one merged read covers at most. */
#define DIRECT_MERGE_MAX (8u << 20)
/* Bounce buffers at least this large are aligned to it and asked for
 * transparent huge pages: a direct read into 4 KiB pages is split by the
 * device's segment limit (virtio here: 254 segments, so 1 MiB + 4 KiB
 * became a 1016 KiB and a 12 KiB request); 2 MiB pages make few segments. */
#define BOUNCE_HUGE (2u << 20)

static int grow_bounce(ml_fetcher *f, size_t need) {
    if (need <= f->bounce_cap)
        return 0;
    free(f->bounce);
    f->bounce = NULL;
    f->bounce_cap = 0;
    size_t align = f->align < sizeof(void *) ? sizeof(void *) : f->align;
    if (need >= BOUNCE_HUGE) {
        align = BOUNCE_HUGE;
        need = (need + BOUNCE_HUGE - 1) / BOUNCE_HUGE * BOUNCE_HUGE;
    }
    if (ml_fault_alloc() < 0 || posix_memalign((void **)&f->bounce, align, need) != 0) {
        f->bounce = NULL;
        return -ENOMEM;
    }
    if (need >= BOUNCE_HUGE)
        madvise(f->bounce, need, MADV_HUGEPAGE); /* a hint: 4 KiB pages still work */
    f->bounce_cap = need;
    return 0;
}

/* Direct mode: widen each request to aligned bounds, merge requests whose
 * widened ranges touch or overlap in file order (one read instead of
 * several, and the shared page read once), read them all in one batch into
 * the bounce buffer, copy the wanted bytes out. A read may end short at end
 * of file as long as it covered the bytes wanted. */
static int read_direct(ml_fetcher *f, ml_io_req *reqs, size_t n) {
    const uint64_t A = f->align;
    if (n > f->dreqs_cap) {
        ml_io_req *d = realloc(f->dreqs, n * sizeof *d);
        if (!d)
            return -ENOMEM;
        f->dreqs = d;
        size_t *m = realloc(f->dmap, n * sizeof *m);
        if (!m)
            return -ENOMEM;
        f->dmap = m;
        f->dreqs_cap = n;
    }
    size_t nd = 0, need = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t a = reqs[i].offset / A * A;
        uint64_t b = (reqs[i].offset + reqs[i].len + A - 1) / A * A;
        ml_io_req *d = nd ? &f->dreqs[nd - 1] : NULL;
        if (d && a >= d->offset && a <= d->offset + d->len && b - d->offset <= DIRECT_MERGE_MAX) {
            if (b > d->offset + d->len) {
                need += b - (d->offset + d->len);
                d->len = b - d->offset;
            }
        } else {
            f->dreqs[nd++] = (ml_io_req){.offset = a, .len = b - a, .no_resume = 1};
            need += b - a;
        }
        f->dmap[i] = nd - 1;
    }
    if (grow_bounce(f, need) < 0)
        return -ENOMEM;
    size_t off = 0;
    for (size_t j = 0; j < nd; j++) {
        f->dreqs[j].buf = f->bounce + off;
        off += f->dreqs[j].len;
    }
    int rc = ml_io_read(f->dio, f->dreqs, nd);
    if (rc < 0 && rc != -ML_ETRUNC)
        return rc;
    for (size_t i = 0; i < n; i++) {
        const ml_io_req *d = &f->dreqs[f->dmap[i]];
        size_t pad = reqs[i].offset - d->offset;
        if (d->result < 0)
            return (int)d->result;
        if ((size_t)d->result < pad + reqs[i].len)
            return -ML_ETRUNC;
        memcpy(reqs[i].buf, (unsigned char *)d->buf + pad, reqs[i].len);
        reqs[i].result = (ssize_t)reqs[i].len;
    }
    return 0;
}

/* Every data read of this file goes through here: a budgeted fetcher
 * first takes the batch's bytes and one I/O per request (budget.h; it may
 * sleep, and fails with -ECANCELED once the stream closes). */
static int read_reqs(ml_fetcher *f, ml_io_req *reqs, size_t n) {
    if (f->budget) {
        uint64_t bytes = 0;
        for (size_t i = 0; i < n; i++)
            bytes += reqs[i].len;
        int rc = ml_budget_client_take(f->budget, bytes, n);
        if (rc < 0)
            return rc;
    }
    return f->dio ? read_direct(f, reqs, n) : ml_io_read(f->io, reqs, n);
}

void ml_fetcher_set_budget(ml_fetcher *f, ml_budget_client *c) { f->budget = c; }

/* Bytes just read or decoded from storage made the reported dtype
 * (convert.c): exactly once, never over fill values (converted at open). */
static void convert_stored(const ml_layout *L, void *p, uint64_t n_elems) {
    if (L->convert)
        ml_convert_apply(L->convert, p, n_elems);
}

static void fill_elems(unsigned char *dst, size_t n_elems, const unsigned char *fill, size_t size) {
    if (!fill) {
        memset(dst, 0, n_elems * size);
        return;
    }
    for (size_t i = 0; i < n_elems; i++)
        memcpy(dst + i * size, fill, size);
}


/* Message for a failed read or decode of rows [row0, row0+n). */
static int report(ml_error *err, ml_fetcher *f, int rc, uint64_t row0, uint64_t n,
                  const char *what, uint64_t chunk) {
    const ml_layout *L = f->L;
    /* OS errors get their strerror text; our own codes are already said by `what`. */
    const char *sep = ml_error_is_errno(rc) ? ": " : "";
    const char *why = *sep ? ml_strerror(rc) : "";
    if (chunk == UINT64_MAX)
        return ml_error_set(err, rc, "%s reading rows %llu..%llu of dataset '%s' in file '%s'%s%s",
                            what, (unsigned long long)row0, (unsigned long long)(row0 + n),
                            L->path, L->filename, sep, why);
    /* Name the chunk's own rows, not the whole range being read. */
    uint64_t c_row0 = (chunk / (L->n_chunks / L->grid[0])) * L->chunk[0];
    uint64_t c_end = c_row0 + L->chunk[0] < L->n_rows ? c_row0 + L->chunk[0] : L->n_rows;
    (void)row0;
    (void)n;
    return ml_error_set(err, rc, "%s in chunk %llu (rows %llu..%llu) of dataset '%s' in file '%s'%s%s",
                        what, (unsigned long long)chunk, (unsigned long long)c_row0,
                        (unsigned long long)c_end, L->path, L->filename, sep, why);
}

static int grow_scratch(ml_fetcher *f, size_t need) {
    if (f->scratch_cap >= need)
        return 0;
    free(f->scratch);
    f->scratch = NULL;
    f->scratch_cap = 0;
    if (ml_fault_alloc() < 0)
        return -ENOMEM;
    f->scratch = malloc(need);
    if (!f->scratch)
        return -ENOMEM;
    f->scratch_cap = need;
    return 0;
}

/* Copy the part of a decoded chunk (shape L->chunk, corner `origin`) that
 * falls in rows [row0, row0+n) into dest (shape (n, dims[1:])). If chunk
 * is NULL, write the fill value there instead. */
static void copy_region(const ml_layout *L, const unsigned char *chunk, const uint64_t *origin,
                        uint64_t row0, uint64_t n, unsigned char *dest) {
    unsigned nd = L->ndim;
    size_t esz = L->type->size;
    uint64_t lo[ML_MAX_DIMS], cnt[ML_MAX_DIMS];
    size_t sstride[ML_MAX_DIMS], dstride[ML_MAX_DIMS];
    uint64_t row_end = row0 + n < L->n_rows ? row0 + n : L->n_rows;
    for (unsigned d = 0; d < nd; d++) {
        uint64_t a = origin[d], b = origin[d] + L->chunk[d];
        uint64_t lim_lo = d == 0 ? row0 : 0, lim_hi = d == 0 ? row_end : L->dims[d];
        lo[d] = a > lim_lo ? a : lim_lo;
        uint64_t hi = b < lim_hi ? b : lim_hi;
        if (hi <= lo[d])
            return;
        cnt[d] = hi - lo[d];
    }
    sstride[nd - 1] = dstride[nd - 1] = esz;
    for (int d = (int)nd - 2; d >= 0; d--) {
        sstride[d] = sstride[d + 1] * L->chunk[d + 1];
        dstride[d] = dstride[d + 1] * L->dims[d + 1];
    }
    size_t run = cnt[nd - 1] * esz;
    uint64_t idx[ML_MAX_DIMS] = {0};
    for (;;) {
        size_t so = 0, dof = 0;
        for (unsigned d = 0; d < nd; d++) {
            so += (lo[d] - origin[d] + idx[d]) * sstride[d];
            dof += (lo[d] - (d == 0 ? row0 : 0) + idx[d]) * dstride[d];
        }
        if (chunk)
            memcpy(dest + dof, chunk + so, run);
        else
            fill_elems(dest + dof, cnt[nd - 1], L->fill, esz);
        /* odometer over all dims but the innermost */
        int d = (int)nd - 2;
        for (; d >= 0; d--) {
            if (++idx[d] < cnt[d])
                break;
            idx[d] = 0;
        }
        if (d < 0)
            break;
    }
}

/* Read and decode one batch of planned chunks. */
static int run_batch(ml_fetcher *f, plan *p, size_t np, ml_error *err) {
    const ml_layout *L = f->L;
    /* Errors that concern the whole batch name the rows of all its ranges. */
    uint64_t row0 = UINT64_MAX, end = 0;
    for (size_t i = 0; i < np; i++) {
        row0 = p[i].row0 < row0 ? p[i].row0 : row0;
        end = p[i].row0 + p[i].n > end ? p[i].row0 + p[i].n : end;
    }
    uint64_t n = end - row0;
    size_t req_plan[MAX_BATCH]; /* plan of each read, to name a failed chunk */
    size_t need = 0, nreq = 0;
    int rc;
    for (size_t i = 0; i < np; i++)
        if (p[i].info.addr != UINT64_MAX && !(p[i].direct && L->pipeline.n_filters == 0)) {
            /* Each size is bounded by the file (check_chunk); their sum is
             * still checked, so it cannot wrap. */
            uint64_t padded = (p[i].info.size + 63) & ~(uint64_t)63;
            if (padded > SIZE_MAX - need)
                return report(err, f, -ENOMEM, row0, n, "out of memory", UINT64_MAX);
            need += (size_t)padded;
        }
    if ((rc = grow_scratch(f, need)) < 0)
        return report(err, f, rc, row0, n, "out of memory", UINT64_MAX);
    size_t off = 0;
    for (size_t i = 0; i < np; i++) {
        plan *c = &p[i];
        if (c->info.addr == UINT64_MAX)
            continue;
        if (c->direct && L->pipeline.n_filters == 0) {
            if (c->info.size != L->chunk_bytes)
                return report(err, f, -ML_ECORRUPT, c->row0, c->n, "stored size differs from chunk size", c->index);
            c->stored = c->dest;
        } else {
            c->stored = f->scratch + off;
            off += (c->info.size + 63) & ~(size_t)63;
        }
        if (c->info.addr == ML_CHUNK_VIA_FORMAT) {
            /* Only HDF5 knows where it is: it reads it, under its lock. */
            if ((rc = ml_layout_read_chunk(f->L, c->index, c->stored, c->info.size, &c->info.filter_mask, err)) < 0)
                return rc;
            continue;
        }
        req_plan[nreq] = i;
        f->reqs[nreq++] = (ml_io_req){.offset = c->info.addr,
                                      .len = c->info.size, .buf = c->stored};
    }
    if (nreq && (rc = read_reqs(f, f->reqs, nreq)) < 0) {
        size_t bad = 0;
        while (bad + 1 < nreq && f->reqs[bad].result >= 0 && (size_t)f->reqs[bad].result == f->reqs[bad].len)
            bad++;
        const plan *c = &p[req_plan[bad]];
        return report(err, f, rc, c->row0, c->n, rc == -ML_ETRUNC ? "chunk past the end of the file" : "read failed",
                      c->index);
    }
    for (size_t i = 0; i < np; i++) {
        plan *c = &p[i];
        if (c->info.addr == UINT64_MAX) {
            if (L->fill_undefined)
                return report(err, f, -ML_ECORRUPT, c->row0, c->n, "never written and without a fill value", c->index);
            if (c->direct)
                fill_elems(c->dest, L->chunk_bytes / L->type->size, L->fill, L->type->size);
            else
                copy_region(L, NULL, c->origin, c->row0, c->n, c->base);
            continue;
        }
        if (c->direct && L->pipeline.n_filters == 0) {
            convert_stored(L, c->dest, L->chunk_bytes / L->type->size); /* read in place */
            continue;
        }
        const unsigned char *decoded = c->stored;
        if (L->pipeline.n_filters > 0) {
            unsigned char *to = c->direct ? c->dest : f->chunkbuf;
            if (!c->direct && !f->chunkbuf) {
                f->chunkbuf = malloc(L->chunk_bytes);
                if (!f->chunkbuf)
                    return report(err, f, -ENOMEM, c->row0, c->n, "out of memory", c->index);
                to = f->chunkbuf;
            }
            rc = ml_decode_chunk(f->dec, &L->pipeline, L->chunk_bytes, c->info.filter_mask, c->stored, c->info.size, to);
            if (rc < 0)
                return report(err, f, rc, c->row0, c->n,
                              rc == -ML_ECHECKSUM ? "fletcher32 checksum mismatch" : "cannot decode corrupt data", c->index);
            convert_stored(L, to, L->chunk_bytes / L->type->size);
            if (c->direct)
                continue;
            decoded = to;
        } else if (c->info.size < L->chunk_bytes) {
            return report(err, f, -ML_ECORRUPT, c->row0, c->n, "stored chunk is shorter than the chunk size", c->index);
        } else {
            convert_stored(L, c->stored, L->chunk_bytes / L->type->size); /* our scratch copy */
        }
        copy_region(L, decoded, c->origin, c->row0, c->n, c->base);
    }
    return 0;
}

/* A chunk the index gives is read only if HDF5 would read those bytes:
 * its answer is not marked bad, a defined address has a stored size, and
 * the stored bytes lie inside the file (L->eof). Else -ML_ECORRUPT naming
 * the chunk; never a guess. */
static int check_chunk(ml_fetcher *f, const plan *c, ml_error *err) {
    const ml_chunk_info *ci = &c->info;
    if (ci->addr == UINT64_MAX)
        return 0;
    const char *why = ci->bad ? ci->bad
                      : ci->size == 0 ? "a defined address with a stored size of 0"
                      : ci->addr == ML_CHUNK_VIA_FORMAT /* HDF5 bounds its own reads by its EOA */
                          ? (ci->size > f->L->eof ? "a stored size larger than the file" : NULL)
                      : !ml_layout_in_file(f->L, ci->addr, ci->size) ? "its stored bytes lie past the end of the file"
                                                                     : NULL;
    if (!why)
        return 0;
    char what[160];
    snprintf(what, sizeof what, "corrupt chunk index (%s)", why);
    return report(err, f, -ML_ECORRUPT, c->row0, c->n, what, c->index);
}

/* Plan the chunks of rows [row0, row0 + n) into f->plans after *np,
 * running a batch whenever MAX_BATCH chunks are planned: several ranges
 * planned one after another share the I/O batches. */
static int plan_chunked(ml_fetcher *f, uint64_t row0, uint64_t n, unsigned char *dest, size_t *np,
                        ml_error *err) {
    ml_layout *L = f->L;
    uint64_t c0 = L->chunk[0];
    uint64_t inner = L->n_chunks / L->grid[0];
    uint64_t first = row0 / c0, last = (row0 + n - 1) / c0;
    /* A chunk maps onto whole destination rows when its trailing dims equal
     * the dataset's (then its rows are contiguous, like the destination's). */
    int whole_rows = inner == 1;
    for (unsigned d = 1; d < L->ndim && whole_rows; d++)
        whole_rows = L->chunk[d] == L->dims[d];
    for (uint64_t cr = first; cr <= last; cr++) {
        for (uint64_t j = 0; j < inner; j++) {
            plan *c = &f->plans[*np];
            c->index = cr * inner + j;
            int rc = ml_layout_chunk(L, c->index, &c->info, err);
            if (rc < 0)
                return rc;
            c->row0 = row0;
            c->n = n;
            if ((rc = check_chunk(f, c, err)) < 0)
                return rc;
            uint64_t rest = c->index;
            for (int d = (int)L->ndim - 1; d >= 0; d--) {
                c->origin[d] = (rest % L->grid[d]) * L->chunk[d];
                rest /= L->grid[d];
            }
            c->direct = whole_rows && c->origin[0] >= row0 && c->origin[0] + c0 <= row0 + n &&
                        c->origin[0] + c0 <= L->n_rows;
            c->dest = dest + (c->origin[0] - (c->direct ? row0 : c->origin[0])) * L->row_bytes;
            c->base = dest;
            if (++*np == MAX_BATCH) {
                if ((rc = run_batch(f, f->plans, *np, err)) < 0)
                    return rc;
                *np = 0;
            }
        }
    }
    return 0;
}

static int fetch_chunked(ml_fetcher *f, uint64_t row0, uint64_t n, unsigned char *dest,
                         ml_error *err) {
    size_t np = 0;
    int rc = plan_chunked(f, row0, n, dest, &np, err);
    if (rc < 0)
        return rc;
    return np ? run_batch(f, f->plans, np, err) : 0;
}

int ml_fetch_rows(ml_fetcher *f, uint64_t row0, uint64_t n, void *dest_, ml_error *err) {
    ml_layout *L = f->L;
    unsigned char *dest = dest_;
    if (n == 0 || L->row_bytes == 0)
        return 0;
    if (row0 > L->n_rows || n > L->n_rows - row0)
        return ml_error_set(err, -ML_EINVAL, "rows %llu..%llu are outside dataset '%s' (%llu rows)",
                            (unsigned long long)row0, (unsigned long long)(row0 + n), L->path,
                            (unsigned long long)L->n_rows);
    switch (L->storage) {
    case ML_STORE_CONTIGUOUS: {
        if (L->offset == UINT64_MAX) {
            if (L->fill_undefined)
                return report(err, f, -ML_ECORRUPT, row0, n, "never written and without a fill value", UINT64_MAX);
            fill_elems(dest, n * L->row_elems, L->fill, L->type->size);
            return 0;
        }
        ml_io_req r = {.offset = L->offset + row0 * L->row_bytes,
                       .len = n * L->row_bytes, .buf = dest};
        int rc = ml_layout_in_file(L, r.offset, r.len) ? read_reqs(f, &r, 1) : -ML_ETRUNC;
        if (rc < 0)
            return report(err, f, rc, row0, n, rc == -ML_ETRUNC ? "file truncated" : "read failed", UINT64_MAX);
        convert_stored(L, dest, n * L->row_elems);
        return 0;
    }
    case ML_STORE_CHUNKED:
        return fetch_chunked(f, row0, n, dest, err);
    case ML_STORE_MEMORY:
        memcpy(dest, (unsigned char *)L->mem + row0 * L->row_bytes, n * L->row_bytes);
        return 0;
    case ML_STORE_SLOW: {
        /* The format's library reads with the file's own type: converted here. */
        int rc = ml_budget_client_take(f->budget, n * L->row_bytes, 1);
        if (rc < 0)
            return report(err, f, rc, row0, n, "the read was cancelled", UINT64_MAX);
        rc = ml_layout_read_slow(L, row0, n, dest, err);
        if (rc == 0)
            convert_stored(L, dest, n * L->row_elems);
        return rc;
    }
    }
    return -ML_EINVAL;
}

/* Every run must lie inside the dataset; checked before any read starts. */
static int check_runs(const ml_layout *L, const ml_row_run *runs, size_t n, ml_error *err) {
    for (size_t i = 0; i < n; i++)
        if (runs[i].start > L->n_rows || runs[i].count > L->n_rows - runs[i].start)
            return ml_error_set(err, -ML_EINVAL, "rows %llu..%llu are outside dataset '%s' (%llu rows)",
                                (unsigned long long)runs[i].start,
                                (unsigned long long)(runs[i].start + runs[i].count), L->path,
                                (unsigned long long)L->n_rows);
    return 0;
}

int ml_fetch_runs(ml_fetcher *f, const ml_row_run *runs, size_t n, void *dest_, ml_error *err) {
    ml_layout *L = f->L;
    unsigned char *dest = dest_;
    int bad_range = check_runs(L, runs, n, err);
    if (bad_range < 0)
        return bad_range;
    if (L->storage != ML_STORE_CONTIGUOUS || L->offset == UINT64_MAX || n == 1 || L->row_bytes == 0) {
        for (size_t i = 0; i < n; i++) {
            int rc = ml_fetch_rows(f, runs[i].start, runs[i].count, dest, err);
            if (rc < 0)
                return rc;
            dest += runs[i].count * L->row_bytes;
        }
        return 0;
    }
    /* One batch: the engine keeps up to its depth in flight and resubmits
     * short reads, so n may exceed the depth. */
    ml_io_req *reqs = n <= MAX_BATCH ? f->reqs : NULL;
    if (!reqs && (ml_fault_alloc() < 0 || !(reqs = malloc(n * sizeof *reqs))))
        return report(err, f, -ENOMEM, runs[0].start, runs[0].count, "out of memory", UINT64_MAX);
    size_t bad = n;
    for (size_t i = 0; i < n; i++) {
        reqs[i] = (ml_io_req){.offset = L->offset + runs[i].start * L->row_bytes,
                              .len = runs[i].count * L->row_bytes, .buf = dest};
        dest += runs[i].count * L->row_bytes;
        if (bad == n && !ml_layout_in_file(L, reqs[i].offset, reqs[i].len))
            bad = i;
    }
    int rc = bad < n ? -ML_ETRUNC : read_reqs(f, reqs, n);
    if (rc < 0 && bad == n)
        for (bad = 0; bad + 1 < n && reqs[bad].result >= 0 && (size_t)reqs[bad].result == reqs[bad].len;)
            bad++;
    if (reqs != f->reqs)
        free(reqs);
    if (rc < 0)
        return report(err, f, rc, runs[bad].start, runs[bad].count,
                      rc == -ML_ETRUNC ? "file truncated" : "read failed", UINT64_MAX);
    uint64_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += runs[i].count; /* the runs' rows lie back to back in dest */
    convert_stored(L, dest_, total * L->row_elems);
    return 0;
}

int ml_fetch_rows_multi(ml_fetcher *f, const ml_row_run *runs, void *const *dests, size_t n,
                        ml_error *err) {
    ml_layout *L = f->L;
    int bad_range = check_runs(L, runs, n, err);
    if (bad_range < 0)
        return bad_range;
    if (L->storage == ML_STORE_CONTIGUOUS && L->offset != UINT64_MAX && L->row_bytes && n > 1 &&
        n <= MAX_BATCH) {
        /* One batch of reads, each straight into its destination. */
        size_t bad = n;
        for (size_t i = 0; i < n; i++) {
            f->reqs[i] = (ml_io_req){.offset = L->offset + runs[i].start * L->row_bytes,
                                     .len = runs[i].count * L->row_bytes, .buf = dests[i]};
            if (bad == n && !ml_layout_in_file(L, f->reqs[i].offset, f->reqs[i].len))
                bad = i;
        }
        int rc = bad < n ? -ML_ETRUNC : read_reqs(f, f->reqs, n);
        if (rc < 0) {
            if (bad == n)
                for (bad = 0; bad + 1 < n && f->reqs[bad].result >= 0 && (size_t)f->reqs[bad].result == f->reqs[bad].len;)
                    bad++;
            return report(err, f, rc, runs[bad].start, runs[bad].count,
                          rc == -ML_ETRUNC ? "file truncated" : "read failed", UINT64_MAX);
        }
        for (size_t i = 0; i < n; i++)
            convert_stored(L, dests[i], runs[i].count * L->row_elems);
        return 0;
    }
    if (L->storage != ML_STORE_CHUNKED || L->row_bytes == 0) {
        for (size_t i = 0; i < n; i++) {
            int rc = ml_fetch_rows(f, runs[i].start, runs[i].count, dests[i], err);
            if (rc < 0)
                return rc;
        }
        return 0;
    }
    size_t np = 0;
    for (size_t i = 0; i < n; i++) {
        if (runs[i].count == 0)
            continue;
        int rc = plan_chunked(f, runs[i].start, runs[i].count, dests[i], &np, err);
        if (rc < 0)
            return rc;
    }
    return np ? run_batch(f, f->plans, np, err) : 0;
}

/* ---- read-ahead hints ------------------------------------------------ */

/* A chunk whose stored bytes a hint may name: written, at an address of
 * the source, inside the file. Anything else is the fetch's to report. */
static int hint_chunk(ml_layout *L, uint64_t index, ml_chunk_info *ci) {
    ml_error ignored;
    ml_error_clear(&ignored);
    return ml_layout_chunk(L, index, ci, &ignored) == 0 && ci->addr != UINT64_MAX &&
           ci->addr != ML_CHUNK_VIA_FORMAT && !ci->bad && ci->size > 0 && ml_layout_in_file(L, ci->addr, ci->size);
}

/* Calls fn(L, off, len, arg) for the stored byte ranges of rows [row0,
 * row0 + n), adjacent chunks merged, until fn returns nonzero (which is
 * returned). Chunked data: at most ML_PREFETCH_MAX_CHUNKS look-ups. */
typedef int (*range_fn)(ml_layout *L, uint64_t off, uint64_t len, void *arg);

static int stored_ranges(ml_layout *L, uint64_t row0, uint64_t n, range_fn fn, void *arg) {
    if (n == 0 || L->row_bytes == 0 || row0 > L->n_rows || n > L->n_rows - row0)
        return 0;
    if (L->storage == ML_STORE_CONTIGUOUS) {
        if (L->offset == UINT64_MAX || !ml_layout_in_file(L, L->offset + row0 * L->row_bytes, n * L->row_bytes))
            return 0;
        return fn(L, L->offset + row0 * L->row_bytes, n * L->row_bytes, arg);
    }
    if (L->storage != ML_STORE_CHUNKED)
        return 0;
    uint64_t inner = L->n_chunks / L->grid[0];
    uint64_t first = row0 / L->chunk[0] * inner, end = ((row0 + n - 1) / L->chunk[0] + 1) * inner;
    if (end - first > ML_PREFETCH_MAX_CHUNKS)
        end = first + ML_PREFETCH_MAX_CHUNKS;
    uint64_t off = 0, len = 0; /* the range being merged */
    for (uint64_t c = first; c < end; c++) {
        ml_chunk_info ci;
        if (!hint_chunk(L, c, &ci))
            continue;
        if (len && ci.addr == off + len) {
            len += ci.size;
            continue;
        }
        int stop = len ? fn(L, off, len, arg) : 0;
        if (stop)
            return stop;
        off = ci.addr;
        len = ci.size;
    }
    return len ? fn(L, off, len, arg) : 0;
}

static int prefetch_range(ml_layout *L, uint64_t off, uint64_t len, void *arg) {
    ml_source_prefetch(L->src, off, len);
    ++*(size_t *)arg;
    return 0;
}

size_t ml_fetch_prefetch(ml_layout *L, uint64_t row0, uint64_t n) {
    size_t ranges = 0;
    stored_ranges(L, row0, n, prefetch_range, &ranges);
    return ranges;
}

/* The page holding byte `off` of the source: 1 resident, 0 not, or -errno. */
static int page_resident(ml_layout *L, uint64_t off) {
    uint64_t got;
    int rc = ml_source_resident(L->src, off / 4096 * 4096, 4096, &got);
    return rc < 0 ? rc : got > 0;
}

int ml_fetch_resident(ml_layout *L, uint64_t row0, uint64_t n) {
    if (n == 0 || L->row_bytes == 0 || row0 > L->n_rows || n > L->n_rows - row0)
        return 1;
    uint64_t end; /* one past the last stored byte of the rows */
    if (L->storage == ML_STORE_CONTIGUOUS) {
        end = L->offset + (row0 + n) * L->row_bytes;
        if (L->offset == UINT64_MAX || !ml_layout_in_file(L, L->offset + row0 * L->row_bytes, n * L->row_bytes))
            return 1;
    } else if (L->storage == ML_STORE_CHUNKED) {
        /* The rows' last chunk (one look-up, whatever the chunk count). */
        uint64_t inner = L->n_chunks / L->grid[0];
        ml_chunk_info ci;
        if (!hint_chunk(L, ((row0 + n - 1) / L->chunk[0] + 1) * inner - 1, &ci))
            return 1;
        end = ci.addr + ci.size;
    } else {
        return 1;
    }
    int r = page_resident(L, end - 1);
    return r < 0 ? -EOPNOTSUPP : r;
}

/* ---- what the Reader asks of storage, and reads that never wait ------ */

/* The Reader plans with the answers below instead of testing L->storage,
 * and its threads that must never block (submit, the helping waiter) read
 * through the *_nowait functions: a read that would wait for the device is
 * -EAGAIN, and the work goes to a thread with an ml_fetcher, which reads
 * it again through the functions above and reports any error. So the
 * nowait path never names an error of its own, and every byte the Reader
 * reads, cached or not, is read here, through the layout's byte source
 * (ml_source_read with `nowait`, or a batch on a read context bound to
 * that source). */

/* The runs' requests as one batch of cached-only reads, in one submission
 * where the context's engine can (io_uring). Returns as ml_io_read. */
static int nowait_read_batch(ml_io *io, ml_io_req *reqs, size_t n) {
    for (size_t i = 0; i < n; i++)
        reqs[i].nowait = 1;
    return ml_io_read(io, reqs, n);
}

/* Contiguous data with storage allocated: one extent at L->offset. */
static int one_extent(const ml_layout *L) {
    return L->storage == ML_STORE_CONTIGUOUS && L->offset != UINT64_MAX;
}

uint64_t ml_fetch_band_rows(const ml_layout *L) {
    return L->storage == ML_STORE_CHUNKED ? L->chunk[0] : 0;
}

int ml_fetch_parallel(const ml_layout *L) {
    return L->storage == ML_STORE_CHUNKED || L->storage == ML_STORE_CONTIGUOUS;
}

int ml_fetch_range_is_one_read(const ml_layout *L) { return one_extent(L); }

/* Chunked data a view serves: unfiltered chunks of whole rows, each
 * stored as its decoded bytes. */
static int whole_row_chunks(const ml_layout *L) {
    if (L->storage != ML_STORE_CHUNKED || L->pipeline.n_filters != 0 || L->n_chunks / L->grid[0] != 1)
        return 0;
    for (unsigned d = 1; d < L->ndim; d++)
        if (L->chunk[d] != L->dims[d])
            return 0;
    return 1;
}

int ml_fetch_view(const ml_layout *L, ml_rows_view *out) {
    if (L->row_bytes == 0)
        return -EAGAIN;
    if (L->storage == ML_STORE_MEMORY) { /* converted at open */
        *out = (ml_rows_view){.rows = L->mem, .n_rows = L->n_rows, .local = 1};
        return 0;
    }
    ml_source_view v;
    int chunked = whole_row_chunks(L);
    if (L->convert || !(one_extent(L) || chunked) || ml_source_map(L->src, &v) < 0)
        return -EAGAIN;
    /* Rows wholly inside the view, the file's end as the layout knows it
     * (fetch_rows refuses rows past L->eof) and the file as it is now: a
     * file truncated under the view faults past its last page, but the
     * rest of that page reads as zeros, bytes no read would return. */
    ml_source_id id;
    if (ml_source_identify(L->src, &id) < 0)
        return -EAGAIN;
    uint64_t end = v.len < L->eof ? v.len : L->eof;
    end = id.size < end ? id.size : end;
    if (chunked) {
        *out = (ml_rows_view){.n_rows = L->n_rows, .band_rows = L->chunk[0], .base = v.base, .end = end,
                              .local = v.local};
        return 0;
    }
    if (end <= L->offset)
        return -EAGAIN; /* no row lies in the file: the fetch names the error */
    uint64_t n = (end - L->offset) / L->row_bytes;
    *out = (ml_rows_view){.rows = v.base + L->offset, .n_rows = n < L->n_rows ? n : L->n_rows, .base = v.base,
                          .end = end, .local = v.local};
    return 0;
}

const unsigned char *ml_fetch_view_band(ml_layout *L, const ml_rows_view *v, uint64_t band) {
    ml_chunk_info ci;
    ml_error err;
    ml_error_clear(&err);
    if (!v->band_rows || band >= L->grid[0] || ml_layout_chunk(L, band, &ci, &err) < 0)
        return NULL;
    if (ci.bad || ci.addr == UINT64_MAX || ci.addr == ML_CHUNK_VIA_FORMAT || ci.size != L->chunk_bytes ||
        ci.addr > v->end || ci.size > v->end - ci.addr)
        return NULL; /* the fetch reads it, and names what is wrong */
    return v->base + ci.addr;
}

typedef struct mapped_copy {
    void *dest;
    const unsigned char *src;
    size_t n;
    const volatile unsigned char *probe; /* a byte of the page after src's last */
} mapped_copy;

static void copy_and_probe(void *arg) {
    const mapped_copy *c = arg;
    memcpy(c->dest, c->src, c->n);
    (void)*c->probe; /* faults if the file ends in or before src's last page */
}

int ml_fetch_rows_mapped(const ml_layout *L, uint64_t row0, uint64_t n, void *dest) {
    static _Atomic uint64_t page;
    uint64_t pg = atomic_load_explicit(&page, memory_order_relaxed);
    if (!pg) {
        long p = sysconf(_SC_PAGESIZE);
        pg = p > 0 ? (uint64_t)p : 4096;
        atomic_store_explicit(&page, pg, memory_order_relaxed);
    }
    ml_source_view v;
    if (n == 0 || L->row_bytes == 0 || L->convert || !one_extent(L) || ml_source_map(L->src, &v) < 0 || !v.local)
        return -EAGAIN;
    if (row0 >= L->n_rows || n > L->n_rows - row0 || row0 * L->row_bytes > UINT64_MAX - L->offset)
        return -EAGAIN;
    uint64_t off = L->offset + row0 * L->row_bytes, len = n * L->row_bytes;
    if (!ml_layout_in_file(L, off, len))
        return -EAGAIN;
    uint64_t next_page = (off + len - 1) / pg * pg + pg; /* the page after the last byte's */
    if (next_page >= v.len) /* the view's last page: fstat would be needed */
        return -EAGAIN;
    mapped_copy c = {dest, v.base + off, (size_t)len, v.base + next_page};
    return ml_map_protect(copy_and_probe, &c) == 0 ? 0 : -EAGAIN;
}

void ml_nowait_init(ml_nowait *nw, ml_io_mode io_mode) {
    atomic_init(&nw->ok, 1);
    atomic_init(&nw->batch, 1);
    nw->io_mode = io_mode;
}

int ml_nowait_usable(ml_nowait *nw) {
    return !ml_fault_active() && atomic_load_explicit(&nw->ok, memory_order_relaxed);
}

void ml_nowait_ctx_release(ml_nowait_ctx *c) {
    if (!c)
        return;
    ml_io_close(c->io);
    free(c->reqs);
    *c = (ml_nowait_ctx){0};
}

/* len bytes at file offset off into buf from the page cache only,
 * resuming a partial read (RWF_NOWAIT returns the cached prefix). Returns
 * 0, or -EAGAIN when any of it would wait for the device or the read
 * fails. */
static int extent_nowait(ml_nowait *nw, const ml_layout *L, uint64_t off, size_t len, void *buf) {
    if (!ml_nowait_usable(nw))
        return -EAGAIN;
    ml_io_req q = {.offset = off, .len = len, .buf = buf, .nowait = 1};
    int rc = ml_source_read(L->src, &q);
    if (rc == -EOPNOTSUPP || rc == -ENOSYS || rc == -EINVAL)
        atomic_store_explicit(&nw->ok, 0, memory_order_relaxed); /* stop trying */
    return rc < 0 ? -EAGAIN : 0;
}

int ml_fetch_rows_nowait(ml_nowait *nw, const ml_layout *L, uint64_t row0, uint64_t n, void *dest) {
    if (n == 0 || L->row_bytes == 0)
        return 0;
    if (L->storage == ML_STORE_MEMORY) {
        memcpy(dest, (const unsigned char *)L->mem + row0 * L->row_bytes, n * L->row_bytes);
        return 0;
    }
    if (!one_extent(L) || !ml_layout_in_file(L, L->offset + row0 * L->row_bytes, n * L->row_bytes))
        return -EAGAIN; /* past the file's end: the worker's fetch names the error */
    int rc = extent_nowait(nw, L, L->offset + row0 * L->row_bytes, n * L->row_bytes, dest);
    if (rc == 0)
        convert_stored(L, dest, n * L->row_elems);
    return rc;
}

/* The runs as one batch of RWF_NOWAIT reads. Returns 0, -EAGAIN (not all
 * cached, or it failed), or 1: no batch here, read run by run. */
static int runs_nowait_batch(ml_nowait *nw, ml_nowait_ctx *c, const ml_layout *L, const ml_row_run *runs,
                             size_t n, unsigned char *dest) {
    if (n < 2 || !one_extent(L) || !atomic_load_explicit(&nw->batch, memory_order_relaxed))
        return 1;
    if (!ml_nowait_usable(nw))
        return -EAGAIN;
    if (c->io && ml_io_source(c->io) != L->src) { /* a context reads one source: another file's */
        ml_io_close(c->io);
        c->io = NULL;
    }
    if (!c->io && ml_io_open(&c->io, L->src, MAX_BATCH, nw->io_mode) < 0)
        return 1;
    if (c->reqs_cap < n) {
        size_t cap = n < 2 * c->reqs_cap ? 2 * c->reqs_cap : n;
        ml_io_req *r = ml_fault_alloc() < 0 ? NULL : realloc(c->reqs, cap * sizeof *r);
        if (!r)
            return -EAGAIN;
        c->reqs = r;
        c->reqs_cap = cap;
    }
    for (size_t i = 0; i < n; i++) {
        size_t len = runs[i].count * L->row_bytes;
        c->reqs[i] = (ml_io_req){.offset = L->offset + runs[i].start * L->row_bytes, .len = len, .buf = dest};
        dest += len;
        if (!ml_layout_in_file(L, c->reqs[i].offset, len))
            return -EAGAIN; /* past the file's end: the worker's fetch names the error */
    }
    int rc = nowait_read_batch(c->io, c->reqs, n);
    if (rc == -EOPNOTSUPP || rc == -EINVAL || rc == -ENOSYS) {
        atomic_store_explicit(&nw->batch, 0, memory_order_relaxed); /* run by run from now on */
        return 1;
    }
    if (rc < 0)
        return -EAGAIN;
    for (size_t i = 0; i < n; i++)
        convert_stored(L, c->reqs[i].buf, runs[i].count * L->row_elems);
    return 0;
}

int ml_fetch_runs_nowait(ml_nowait *nw, ml_nowait_ctx *c, const ml_layout *L, const ml_row_run *runs,
                         size_t n, void *dest_) {
    unsigned char *dest = dest_;
    int rc = runs_nowait_batch(nw, c, L, runs, n, dest);
    if (rc <= 0)
        return rc;
    for (size_t i = 0; i < n; i++) {
        if ((rc = ml_fetch_rows_nowait(nw, L, runs[i].start, runs[i].count, dest)) < 0)
            return rc;
        dest += runs[i].count * L->row_bytes;
    }
    return 0;
}
