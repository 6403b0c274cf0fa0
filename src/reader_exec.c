/* reader_exec.c - running one part of a planned request on one thread.
 *
 * How rows are read (a part runs one of these on its slice):
 *   - RANGE: a range of whole rows: ml_fetch_rows() straight into dest;
 *   - DIRECT: a strictly increasing list of whole rows of data read row by
 *     row: rows are merged into runs, all runs go to the I/O engine as one
 *     batch, straight into dest (no copy);
 *   - SCATTER: anything else on such data (unsorted, duplicates, a column
 *     of a compound row): the distinct rows are sorted, merged into runs
 *     (small gaps are read through, cheaper than another read), read as
 *     one batch into the thread's scratch buffer, then each requested row
 *     (or its column bytes) is copied to its place in dest;
 *   - BANDS: chunked data is read by "bands" (the chunk rows k*c0 ..
 *     (k+1)*c0, every chunk across the trailing dims): each band a request
 *     touches is decoded once, from the reader's cache of decoded bands
 *     when it is there, and the requested rows copied out. Ranges that
 *     cover whole bands are RANGE parts (ml_fetch_rows decodes into place).
 *
 * Rows of data that is in memory or mapped (fetch.h's views: contiguous
 * data of a file, compact data) are copied by workers straight from the
 * view, one memcpy per run or row and no system call (DIRECT and SCATTER;
 * numpy.memmap's gather, without numpy): a file truncated under the view
 * makes the copy fail (mapcopy.c) and the part is read again through the
 * fetcher, which names the error. Helpers copy from a view only when it
 * is local (a page not in memory then waits for a local disk, see
 * reader_dispatch.c), else read with RWF_NOWAIT. Chunked data stored
 * uncompressed in chunks of whole rows has a view too (BANDS parts of a
 * worker: each row copied from its chunk's bytes, no band decoded or
 * cached); its chunks are looked up before the copies, which a helper
 * must not wait for, so helpers leave those to the workers.
 *
 * Every byte comes through fetch.h: a worker reads with its ml_fetcher
 * (one per dataset, kept in a small LRU), a helper (w->nowait: a waiting
 * caller's thread that must never wait for a device) only with the
 * *_nowait reads and from bands already in the cache, returning -EAGAIN
 * for anything else. Invariants: a part writes only its own slice of
 * dest (pos_k of its k); after a stop (ml_request_stopped) a part skips
 * the bands it has not started. Workload: the hot loops of the Reader,
 * one memcpy per requested row.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "fault.h"
#include "mapcopy.h"
#include "reader_internal.h"

#define GAP_BYTES 2048        /* read through gaps smaller than this: random 256 B rows
                                 from the page cache cost the same CPU with 0, 2 and
                                 8 KiB; 16 KiB read ~7x the bytes for nothing */
#define BAND_GROUP 16         /* bands read in one I/O batch by a part */

ml_fetcher *ml_worker_fetcher(ml_worker *w, ml_layout *L, ml_error *err) {
    unsigned victim = 0;
    for (unsigned i = 0; i < N_FETCHERS; i++) {
        if (w->fetchers[i].L == L) {
            w->fetchers[i].tick = ++w->tick;
            return w->fetchers[i].f;
        }
        if (w->fetchers[i].tick < w->fetchers[victim].tick)
            victim = i;
    }
    ml_fetcher *f;
    if (ml_fetcher_open(&f, L, w->r->io_mode, err) < 0)
        return NULL;
    ml_fetcher_set_budget(f, w->r->budget); /* the reader outlives its workers' fetchers */
    ml_fetcher_close(w->fetchers[victim].f);
    w->fetchers[victim].L = L; /* the fetcher holds the reference */
    w->fetchers[victim].f = f;
    w->fetchers[victim].tick = ++w->tick;
    return f;
}

void ml_worker_release(ml_worker *w) {
    for (unsigned i = 0; i < N_FETCHERS; i++)
        ml_fetcher_close(w->fetchers[i].f);
    memset(w->fetchers, 0, sizeof w->fetchers);
    ml_nowait_ctx_release(&w->nio);
    free(w->scratch);
    free(w->runs);
    free(w->src);
    w->scratch = NULL;
    w->runs = NULL;
    w->src = NULL;
    w->scratch_cap = w->runs_cap = w->src_cap = 0;
}

static int grow(void **p, size_t *cap, size_t need) {
    if (*cap >= need)
        return 0;
    if (ml_fault_alloc() < 0)
        return -ENOMEM;
    if (need < 2 * *cap)
        need = 2 * *cap;
    void *n = realloc(*p, need);
    if (!n)
        return -ENOMEM;
    *p = n;
    *cap = need;
    return 0;
}

/* The rows of band `index` of L (c0 rows per band). */
static void band_rows(const ml_layout *L, uint64_t c0, uint64_t index, uint64_t *row0, uint64_t *n) {
    *row0 = index * c0;
    *n = *row0 + c0 <= L->n_rows ? c0 : L->n_rows - *row0;
}

/* BANDS: rows k0..k1 (in reading order) out of their decoded bands, up to
 * BAND_GROUP bands at a time, the missing ones read in one I/O batch. */
static int exec_bands(ml_worker *w, ml_fetcher *f, ml_request *q, uint64_t k0, uint64_t k1, ml_error *err) {
    ml_band_cache *cache = &w->r->cache;
    ml_layout *L = q->L;
    uint64_t c0 = ml_fetch_band_rows(L);
    /* A band of one row, requested whole once in a row, is decoded straight
     * into its place in dest and not cached: caching costs a look-up, an
     * insertion and a copy (measured: a gather of 256 one-image gzip chunks
     * ran at a third of the speed of a range read), for a row that, read
     * again, costs one chunk's decode. */
    int whole_rows = c0 == 1 && q->col_offset == 0 && q->out_size == L->row_bytes;
    int rc = 0;
    for (uint64_t k = k0; k < k1 && rc == 0;) {
        if (ml_request_stopped(q))
            return 0; /* q already failed: skip the rest */
        ml_band_ref refs[BAND_GROUP];
        uint64_t kend[BAND_GROUP];
        ml_row_run miss[BAND_GROUP];
        void *mdest[BAND_GROUP];
        size_t mi[BAND_GROUP], nb = 0, nm = 0;
        int in_place[BAND_GROUP];
        uint64_t j = k;
        while (j < k1 && nb < BAND_GROUP) {
            uint64_t b = row_k(q, j) / c0, e = j + 1;
            while (e < k1 && row_k(q, e) / c0 == b)
                e++;
            kend[nb] = e;
            in_place[nb] = whole_rows && e == j + 1;
            if (in_place[nb]) {
                atomic_fetch_add_explicit(&cache->misses, 1, memory_order_relaxed);
                refs[nb] = (ml_band_ref){.index = b};
                miss[nm] = (ml_row_run){b, 1};
                mdest[nm] = q->dest + pos_k(q, j) * q->out_size;
                mi[nm++] = nb;
            } else if (!ml_band_cache_lookup(cache, L, b, &refs[nb], 1)) {
                uint64_t row0, n;
                band_rows(L, c0, b, &row0, &n);
                unsigned char *buf = ml_fault_alloc() < 0 ? NULL : malloc(n * L->row_bytes + 1);
                if (!buf) {
                    rc = ml_error_set(err, -ENOMEM, "out of memory decoding rows %llu..%llu of dataset '%s'",
                                      (unsigned long long)row0, (unsigned long long)(row0 + n), L->path);
                    break;
                }
                refs[nb] = (ml_band_ref){.buf = buf, .index = b, .private_buf = 1};
                miss[nm] = (ml_row_run){row0, n};
                mdest[nm] = buf;
                mi[nm++] = nb;
            }
            nb++;
            j = e;
        }
        if (rc == 0 && nm)
            rc = ml_fetch_rows_multi(f, miss, mdest, nm, err);
        for (size_t i = 0; rc == 0 && i < nm; i++)
            if (!in_place[mi[i]])
                ml_band_cache_insert(cache, L, &refs[mi[i]], miss[i].count * L->row_bytes);
        for (size_t i = 0, kk = k; rc == 0 && i < nb; i++) {
            if (in_place[i]) {
                kk = kend[i];
                continue;
            }
            for (; kk < kend[i]; kk++)
                memcpy(q->dest + pos_k(q, kk) * q->out_size,
                       refs[i].buf + (row_k(q, kk) % c0) * L->row_bytes + q->col_offset, q->out_size);
        }
        for (size_t i = 0; i < nb; i++)
            ml_band_cache_release(cache, &refs[i]);
        k = j;
    }
    return rc;
}

/* BANDS for a helper: rows k0..k1 copied out of decoded bands in the
 * cache; -EAGAIN at the first band that is not there (a worker decodes). */
static int exec_bands_cached(ml_worker *w, ml_request *q, uint64_t k0, uint64_t k1) {
    ml_band_cache *cache = &w->r->cache;
    ml_layout *L = q->L;
    uint64_t c0 = ml_fetch_band_rows(L), hits = 0;
    for (uint64_t k = k0; k < k1;) {
        uint64_t b = row_k(q, k) / c0, e = k + 1;
        while (e < k1 && row_k(q, e) / c0 == b)
            e++;
        ml_band_ref ref;
        if (!ml_band_cache_lookup(cache, L, b, &ref, 0))
            return -EAGAIN;
        for (; k < e; k++)
            memcpy(q->dest + pos_k(q, k) * q->out_size,
                   ref.buf + (row_k(q, k) % c0) * L->row_bytes + q->col_offset, q->out_size);
        ml_band_cache_release(cache, &ref);
        hits++;
    }
    atomic_fetch_add_explicit(&cache->hits, hits, memory_order_relaxed);
    return 0;
}

/* Read n runs of rows into dest, one after another: through the fetcher,
 * or for a helper from the page cache only (-EAGAIN otherwise). */
static int read_runs(ml_worker *w, ml_fetcher *f, ml_request *q, const ml_row_run *runs, size_t n,
                     unsigned char *dest, ml_error *err) {
    if (!w->nowait)
        return ml_fetch_runs(f, runs, n, dest, err);
    return ml_fetch_runs_nowait(&w->r->nowait, &w->nio, q->L, runs, n, dest);
}

/* A gather out of a view, run under ml_map_protect: rows k0..k1 of q (in
 * reading order), each to its place in dest. */
typedef struct view_gather {
    const ml_request *q;
    const unsigned char *rows; /* the view's row 0 (contiguous), or its first byte (offsets) */
    uint64_t k0, k1;
    const uint64_t *offsets;   /* NULL, or the byte of rows + offsets[k - k0] that row k's copy
                                  starts at (chunked data: looked up before the copies) */
} view_gather;

static void gather_rows(void *arg) {
    const view_gather *g = arg;
    const ml_request *q = g->q;
    size_t rb = q->L->row_bytes, out = q->out_size;
    if (g->offsets) {
        for (uint64_t k = g->k0; k < g->k1; k++)
            memcpy(q->dest + pos_k(q, k) * out, g->rows + g->offsets[k - g->k0], out);
        return;
    }
    if (q->mode == M_DIRECT) { /* whole rows, increasing, dest consecutive: runs */
        unsigned char *d = q->dest + g->k0 * out;
        for (uint64_t k = g->k0; k < g->k1;) {
            uint64_t row = q->rows[k], e = k + 1;
            while (e < g->k1 && q->rows[e] == row + (e - k))
                e++;
            memcpy(d, g->rows + row * rb, (e - k) * rb);
            d += (e - k) * rb;
            k = e;
        }
        return;
    }
    const unsigned char *src = g->rows + q->col_offset;
    for (uint64_t k = g->k0; k < g->k1; k++)
        memcpy(q->dest + pos_k(q, k) * out, src + row_k(q, k) * rb, out);
}

/* BANDS from the view of unfiltered whole-row chunks, for a worker: each
 * requested row (or its column) copied from its chunk's bytes in the view.
 * The chunks are looked up first (that may wait for the index), then the
 * copies run protected. 0 when done, or -EAGAIN (read the bands instead). */
static int exec_view_bands(ml_worker *w, ml_request *q, uint64_t k0, uint64_t k1) {
    ml_layout *L = q->L;
    ml_rows_view v;
    if (w->nowait || w->r->budget || ml_fetch_view(L, &v) < 0 || !v.band_rows)
        return -EAGAIN;
    uint64_t n = k1 - k0, c0 = v.band_rows, last = UINT64_MAX;
    if (grow((void **)&w->src, &w->src_cap, (n ? n : 1) * sizeof *w->src) < 0)
        return -EAGAIN;
    const unsigned char *band = NULL;
    for (uint64_t k = k0; k < k1; k++) {
        uint64_t row = row_k(q, k);
        if (row / c0 != last) {
            last = row / c0;
            if (!(band = ml_fetch_view_band(L, &v, last)))
                return -EAGAIN;
        }
        w->src[k - k0] = (uint64_t)(band - v.base) + (row % c0) * L->row_bytes + q->col_offset;
    }
    view_gather g = {.q = q, .rows = v.base, .k0 = k0, .k1 = k1, .offsets = w->src};
    if (ml_map_protect(gather_rows, &g) < 0)
        return -EAGAIN;
    atomic_fetch_add_explicit(&w->r->n_mapped, n, memory_order_relaxed);
    return 0;
}

/* DIRECT or SCATTER from L's view: 0 when done, or -EAGAIN (no view, a
 * helper and a view that is not local, rows past it, or the file shrank
 * under it): read instead. */
static int exec_view(ml_worker *w, ml_request *q, uint64_t k0, uint64_t k1) {
    ml_rows_view v;
    if (w->r->budget || ml_fetch_view(q->L, &v) < 0 || (w->nowait && !v.local))
        return -EAGAIN;
    /* Rows are sorted in both modes: the last is the largest. */
    if (k1 > k0 && row_k(q, k1 - 1) >= v.n_rows)
        return -EAGAIN;
    view_gather g = {.q = q, .rows = v.rows, .k0 = k0, .k1 = k1};
    if (ml_map_protect(gather_rows, &g) < 0)
        return -EAGAIN;
    atomic_fetch_add_explicit(&w->r->n_mapped, k1 - k0, memory_order_relaxed);
    return 0;
}

/* DIRECT: strictly increasing whole rows k0..k1, merged into runs, read in
 * one batch straight to their place in dest. */
static int exec_direct(ml_worker *w, ml_fetcher *f, ml_request *q, uint64_t k0, uint64_t k1, ml_error *err) {
    size_t nr = 0;
    for (uint64_t i = k0; i < k1; i++) {
        if (nr && w->runs[nr - 1].start + w->runs[nr - 1].count == q->rows[i]) {
            w->runs[nr - 1].count++;
            continue;
        }
        if (grow((void **)&w->runs, &w->runs_cap, (nr + 1) * sizeof *w->runs) < 0)
            return ml_request_oom(err, q);
        w->runs[nr++] = (ml_row_run){q->rows[i], 1};
    }
    return read_runs(w, f, q, w->runs, nr, q->dest + k0 * q->out_size, err);
}

/* SCATTER: sorted pairs k0..k1: distinct rows into runs (reading through
 * small gaps) into scratch, then each row (or its column) to its place. */
static int exec_scatter(ml_worker *w, ml_fetcher *f, ml_request *q, uint64_t k0, uint64_t k1, ml_error *err) {
    ml_layout *L = q->L;
    uint64_t n = k1 - k0;
    uint64_t gap = L->row_bytes ? GAP_BYTES / L->row_bytes : 0;
    if (grow((void **)&w->src, &w->src_cap, n * sizeof *w->src) < 0)
        return ml_request_oom(err, q);
    uint64_t *src = w->src;
    size_t nr = 0;
    uint64_t total = 0;
    for (uint64_t k = 0; k < n; k++) {
        uint64_t row = row_k(q, k0 + k);
        ml_row_run *last = nr ? &w->runs[nr - 1] : NULL;
        if (last && row < last->start + last->count) {
            /* duplicate of a row already in the last run */
        } else if (last && row - (last->start + last->count) <= gap) {
            uint64_t add = row + 1 - (last->start + last->count);
            last->count += add;
            total += add;
        } else {
            if (grow((void **)&w->runs, &w->runs_cap, (nr + 1) * sizeof *w->runs) < 0)
                return ml_request_oom(err, q);
            w->runs[nr++] = (ml_row_run){row, 1};
            total++;
        }
        last = &w->runs[nr - 1];
        src[k] = total - (last->start + last->count - row);
    }
    if (grow((void **)&w->scratch, &w->scratch_cap, total * L->row_bytes) < 0)
        return ml_request_oom(err, q);
    int rc = read_runs(w, f, q, w->runs, nr, w->scratch, err);
    for (uint64_t k = 0; k < n && rc == 0; k++)
        memcpy(q->dest + pos_k(q, k0 + k) * q->out_size, w->scratch + src[k] * L->row_bytes + q->col_offset,
               q->out_size);
    /* Keep at most 16 MiB of scratch between requests. */
    if (w->scratch_cap > (16u << 20)) {
        free(w->scratch);
        w->scratch = NULL;
        w->scratch_cap = 0;
    }
    return rc;
}

int ml_part_exec(ml_worker *w, ml_request *q, const ml_part *pt, ml_error *err) {
    if ((q->mode == M_DIRECT || q->mode == M_SCATTER) && exec_view(w, q, pt->k0, pt->k1) == 0)
        return 0;
    if (q->mode == M_BANDS && exec_view_bands(w, q, pt->k0, pt->k1) == 0)
        return 0;
    if (w->nowait) {
        switch (q->mode) {
        case M_RANGE:
            if (ml_fetch_band_rows(q->L))
                return exec_bands_cached(w, q, pt->k0, pt->k1);
            return ml_fetch_rows_nowait(&w->r->nowait, q->L, q->row0 + pt->k0, pt->k1 - pt->k0,
                                        q->dest + pt->k0 * q->out_size);
        case M_DIRECT:
            return exec_direct(w, NULL, q, pt->k0, pt->k1, err);
        case M_SCATTER:
            return exec_scatter(w, NULL, q, pt->k0, pt->k1, err);
        default:
            return exec_bands_cached(w, q, pt->k0, pt->k1);
        }
    }
    ml_fetcher *f = ml_worker_fetcher(w, q->L, err);
    if (!f)
        return err->code;
    switch (q->mode) {
    case M_RANGE:
        return ml_fetch_rows(f, q->row0 + pt->k0, pt->k1 - pt->k0, q->dest + pt->k0 * q->out_size, err);
    case M_DIRECT:
        return exec_direct(w, f, q, pt->k0, pt->k1, err);
    case M_SCATTER:
        return exec_scatter(w, f, q, pt->k0, pt->k1, err);
    default:
        return exec_bands(w, f, q, pt->k0, pt->k1, err);
    }
}
