/* write_block.c - the Writer's buffer blocks, their states and the worker
 * threads that filter and write them (writer.h).
 *
 * A block is one band of a dataset: chunks[0] rows of the dataset's full
 * row (every chunk across the other axes), in C order, as the user's rows
 * lie. Its states, after Arvados' BlockManager:
 *
 *     WRITABLE --submit--> PENDING --every chunk written--> COMMITTED (freed)
 *        |                    \--a chunk failed-----------> ERROR (freed; its
 *        |                                                  ml_wfail kept)
 *        \--ml_wblock_free (abort, or the binding's flush copy)
 *
 * WRITABLE: owned by the binding, which copies rows in (ml_wblock_put);
 * nothing else sees it. PENDING: owned by the writer, on the in-flight
 * list in submission order, immutable: a worker reads it, nobody writes
 * it. A worker takes the first PENDING block not taken whose band no
 * earlier block on the list shares, so two blocks of one band are written
 * in the order submitted (a flushed partial block before the full one).
 * For each chunk across the other axes it gathers the chunk's box (the
 * parts past the dataset's edge as fill), runs the filters (encode.c),
 * then under the HDF5 lock grows axis 0 to the block's last row of data
 * if HDF5's extent is short of it and writes the chunk (h5write.c). The
 * first failure ends the block: ERROR, with file, dataset, rows and the
 * error kept on the failure list; from then on ml_writer_reserve refuses
 * (appends after a failure raise at once).
 *
 * Bounded memory: ml_writer_reserve counts a block's bytes as pending
 * before it is submitted and waits while the sum would pass max_pending
 * (unless nothing is pending, so one block always fits); commit and
 * failure give the bytes back and wake the waiters. WRITABLE blocks are
 * the binding's (one tail block per appended dataset, one per edge of a
 * slice assignment in progress).
 *
 * Locks: w->mu guards the in-flight list, the counters, the failure list,
 * `stop` and the datasets' HDF5 extent (p.shape[0], also read under the
 * HDF5 lock's shelter, since only workers and ml_writer_grow change it,
 * holding both: mu first, then never the HDF5 lock while waiting on mu).
 * In fact the HDF5 lock is always taken with mu released, and p.shape[0]
 * is changed only under the HDF5 lock and read by workers under it, and by
 * the binding (ml_writer_info) only with no block PENDING. Waits are on
 * condition variables (work: a block or stop; done: a block left the
 * list); no busy waiting. The eventfd is written after each block leaves
 * the list and at close.
 *
 * Workload: blocks of about a MiB to tens of MiB, a few to a few hundred
 * in flight, one worker per core.
 */
#define _GNU_SOURCE
#include "writer.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "budget.h"
#include "clock.h"
#include "encode.h"
#include "event.h"
#include "h5internal.h"
#include "h5write.h"
#include "workers.h"

#define MAX_WORKERS 256

typedef struct wdset {
    char *name;            /* path in the file (owned) */
    hid_t dset;            /* HDF5 handle; used under the HDF5 lock; -1 after close */
    ml_wparams p;          /* parameters; p.shape[0] changes under the HDF5 lock only */
    ml_type *t;            /* element type (owned) */
    unsigned char *fill;   /* t->size bytes of fill value (owned) */
    int fill_zero;         /* every byte of fill is 0: fills are one memset */
    uint64_t row_bytes;    /* bytes of one row (all axes but 0) */
    uint64_t block_bytes;  /* chunks[0] * row_bytes: one band's buffer */
    uint64_t row_elems;    /* elements of one row */
    uint64_t chunk_elems;  /* elements of one chunk */
    uint64_t n_across;     /* chunks across the other axes */
} wdset;

struct ml_wblock {
    ml_wblock *next;       /* in-flight list; guarded by mu */
    ml_writer *w;          /* owner */
    int ds;                /* dataset index */
    wdset *d;              /* its dataset (never moves: datasets are allocated one by one) */
    uint64_t band;         /* rows band*chunks[0] .. */
    uint64_t valid;        /* rows of the band holding data (set at submit) */
    uint64_t init_rows;    /* rows [0, init_rows) of buf hold data or fill; the rest are
                              uninitialised until a put or the submit fills them (so a
                              block appended whole is never filled first) */
    int taken;             /* a worker writes it; guarded by mu */
    unsigned char *buf;    /* chunks[0] * row_bytes bytes, immutable while PENDING */
};

struct ml_writer {
    pthread_mutex_t mu;
    pthread_cond_t work;       /* signalled: a block was submitted, or stop */
    pthread_cond_t done;       /* broadcast: a block left the list, or stop */
    ml_wblock *head, *tail;    /* in-flight (PENDING) blocks, submission order; mu */
    uint64_t pending_bytes;    /* reserved + in flight; mu */
    uint64_t max_pending;      /* bytes; immutable */
    uint64_t n_pending;        /* blocks on the list; mu */
    uint64_t n_committed, n_failed; /* mu */
    ml_wfail *fails;           /* failure list; mu */
    size_t n_fails, cap_fails; /* mu */
    int stop;                  /* 1: workers leave once the list is empty (or at once, abort); mu */
    int abort;                 /* with stop: drop untaken blocks; mu */
    int closed;                /* ml_writer_close ran; mu */
    wdset **ds;                /* datasets, each allocated once and never moved (workers hold
                                  pointers without mu); the array grows under mu; entries
                                  immutable but p.shape[0] */
    int n_ds, cap_ds;          /* mu */
    char *path;                /* the file (owned) */
    hid_t file;                /* HDF5 handle; -1 after close */
    ml_event event;            /* its eventfd made at open, written (always, armed or not) after
                                  each block leaves the list and at close; closed in ml_writer_free */
    ml_budget_client *budget;  /* NULL: no budget; immutable; each chunk write takes its stored
                                  bytes and one I/O; cancelled by an aborting close */
    unsigned n_workers;
    pthread_t threads[MAX_WORKERS];
    _Atomic unsigned refs;     /* the handle + one per running worker (workers.h); the handle's
                                  is dropped only in ml_writer_free, after close joined them all */
};

/* A block left the list, or close: wake every asyncio waiter (event.h). */
static void notify(ml_writer *w) { ml_event_fire_always(&w->event); }

/* n_elems elements of the fill value at dst: one memset for a zero fill,
 * else one element copied and the filled part doubled (log n memcpys). */
static void fill_rows(const wdset *d, unsigned char *dst, uint64_t n_elems) {
    size_t es = d->t->size, total = (size_t)n_elems * es;
    if (total == 0)
        return;
    if (d->fill_zero) {
        memset(dst, 0, total);
        return;
    }
    memcpy(dst, d->fill, es);
    for (size_t done = es; done < total;) {
        size_t k = done < total - done ? done : total - done;
        memcpy(dst + done, dst, k);
        done += k;
    }
}

/* Make rows [b->init_rows, upto) of b's band hold the fill value. */
static void init_upto(ml_wblock *b, uint64_t upto) {
    const wdset *d = b->d;
    if (upto <= b->init_rows)
        return;
    fill_rows(d, b->buf + b->init_rows * d->row_bytes, (upto - b->init_rows) * d->row_elems);
    b->init_rows = upto;
}

/* Gather chunk `c` (index across axes 1..ndim-1, C order) of a band
 * buffer into dst (chunk_elems elements), fill where the chunk passes the
 * dataset's edge. Rows past the band's data are in the band already as fill. */
static void gather(const wdset *d, const unsigned char *band, uint64_t c, unsigned char *dst) {
    const ml_wparams *p = &d->p;
    unsigned nd = p->ndim;
    size_t es = d->t->size;
    uint64_t c0[ML_MAX_DIMS] = {0}, ext[ML_MAX_DIMS];
    for (int i = (int)nd - 1; i >= 1; i--) {
        uint64_t n_i = (p->shape[i] + p->chunks[i] - 1) / p->chunks[i];
        if (n_i == 0)
            n_i = 1;
        c0[i] = (c % n_i) * p->chunks[i];
        c /= n_i;
        ext[i] = p->shape[i] > c0[i] ? p->shape[i] - c0[i] : 0;
        if (ext[i] > p->chunks[i])
            ext[i] = p->chunks[i];
    }
    int partial = 0;
    for (unsigned i = 1; i < nd; i++)
        partial |= ext[i] < p->chunks[i];
    if (partial)
        fill_rows(d, dst, d->chunk_elems);
    /* Walk every run along the last axis: idx over axes 0..nd-2 of the chunk. */
    uint64_t idx[ML_MAX_DIMS] = {0};
    uint64_t lim[ML_MAX_DIMS];
    lim[0] = p->chunks[0];
    for (unsigned i = 1; i < nd; i++)
        lim[i] = ext[i];
    if (nd == 1) {
        memcpy(dst, band, p->chunks[0] * es);
        return;
    }
    for (unsigned i = 1; i < nd; i++)
        if (lim[i] == 0)
            return;
    uint64_t run = lim[nd - 1] * es;
    for (;;) {
        uint64_t so = 0, doff = 0;
        for (unsigned i = 0; i < nd; i++) {
            uint64_t x = idx[i] + (i ? c0[i] : 0);
            so = i ? so * p->shape[i] + x : x; /* (axis 0's extent, which workers grow, is never read) */
            doff = doff * p->chunks[i] + idx[i];
        }
        /* so as computed uses shape[0] for axis 0's multiplier only at i = 0 (so = x0): fine */
        memcpy(dst + doff * es, band + so * es, run);
        int k = (int)nd - 2;
        while (k >= 0 && ++idx[k] == lim[k]) {
            idx[k] = 0;
            k--;
        }
        if (k < 0)
            break;
    }
}

static void fail_record(ml_writer *w, ml_wblock *b, int rc, const char *why) {
    const wdset *d = b->d;
    uint64_t row0 = b->band * d->p.chunks[0];
    if (w->n_fails == w->cap_fails) {
        size_t cap = w->cap_fails ? 2 * w->cap_fails : 8;
        ml_wfail *f = realloc(w->fails, cap * sizeof *f);
        if (!f) { /* keep the count; the roll-up says some were not recorded */
            w->n_failed++;
            return;
        }
        w->fails = f;
        w->cap_fails = cap;
    }
    ml_wfail *f = &w->fails[w->n_fails++];
    memset(f, 0, sizeof *f);
    snprintf(f->dataset, sizeof f->dataset, "%s", d->name);
    f->row0 = row0;
    f->n_rows = b->valid;
    f->code = rc;
    snprintf(f->msg, sizeof f->msg, "'%s' dataset '%s': rows %llu..%llu not written: %s%s%s", w->path, d->name,
             (unsigned long long)row0, (unsigned long long)(row0 + b->valid), ml_strerror(rc), why ? ": " : "",
             why ? why : "");
    w->n_failed++;
}

/* Filter and write every chunk of PENDING block b. 0 or the first error
 * (*why a static reason or NULL). */
static int write_block(ml_wblock *b, ml_encoder *enc, unsigned char **chunk, size_t *cap,
                       const char **why) {
    wdset *d = b->d;
    size_t es = d->t->size;
    size_t cbytes = d->chunk_elems * es;
    int direct = d->n_across == 1 && (d->p.ndim == 1 || d->row_elems == d->chunk_elems / d->p.chunks[0]);
    if (!direct && *cap < cbytes) {
        unsigned char *nb = realloc(*chunk, cbytes);
        if (!nb)
            return -ENOMEM;
        *chunk = nb;
        *cap = cbytes;
    }
    uint64_t row0 = b->band * d->p.chunks[0];
    uint64_t end = row0 + b->valid;
    *why = NULL;
    for (uint64_t c = 0; c < d->n_across; c++) {
        const unsigned char *raw = b->buf;
        if (!direct) {
            gather(d, b->buf, c, *chunk);
            raw = *chunk;
        }
        const void *out;
        size_t out_len;
        unsigned mask;
        int rc = ml_encoder_run(enc, &d->p.pipe, es, raw, cbytes, &out, &out_len, &mask, why);
        if (rc < 0)
            return rc;
        uint64_t off[ML_MAX_DIMS] = {row0};
        uint64_t cc = c;
        for (int i = (int)d->p.ndim - 1; i >= 1; i--) {
            uint64_t n_i = (d->p.shape[i] + d->p.chunks[i] - 1) / d->p.chunks[i];
            if (n_i == 0)
                n_i = 1;
            off[i] = (cc % n_i) * d->p.chunks[i];
            cc /= n_i;
        }
        if ((rc = ml_budget_client_take(b->w->budget, out_len, 1)) < 0) { /* outside every lock */
            *why = "discarded: the writer was closed with abort=True";
            return rc;
        }
        ml_h5_lock();
        if (end > d->p.shape[0] && ml_h5w_grow(d->dset, &d->p, end) < 0) {
            ml_h5_unlock();
            *why = "cannot grow the dataset";
            return -ML_EHDF5;
        }
        rc = ml_h5w_chunk_write(d->dset, d->p.ndim, off, mask, out, out_len);
        ml_h5_unlock();
        if (rc < 0) {
            *why = "H5Dwrite_chunk failed";
            return rc;
        }
    }
    return 0;
}

/* The first block a worker may take: not taken, no earlier block of its band. mu held. */
static ml_wblock *next_block(ml_writer *w) {
    for (ml_wblock *b = w->head; b; b = b->next) {
        if (b->taken)
            continue;
        int blocked = 0;
        for (ml_wblock *a = w->head; a != b && !blocked; a = a->next)
            blocked = a->ds == b->ds && a->band == b->band;
        if (!blocked)
            return b;
    }
    return NULL;
}

static void unlink_block(ml_writer *w, ml_wblock *b) {
    ml_wblock **pp = &w->head, *prev = NULL;
    while (*pp && *pp != b) {
        prev = *pp;
        pp = &(*pp)->next;
    }
    if (*pp) {
        *pp = b->next;
        if (w->tail == b)
            w->tail = prev;
    }
    w->n_pending--;
}

static void *worker(void *arg) {
    ml_writer *w = arg;
    ml_encoder *enc = NULL;
    unsigned char *chunk = NULL;
    size_t cap = 0;
    int enc_rc = ml_encoder_open(&enc);
    pthread_mutex_lock(&w->mu);
    for (;;) {
        ml_wblock *b = NULL;
        while (!(w->stop && (w->abort || !w->head)) && !(b = next_block(w)))
            pthread_cond_wait(&w->work, &w->mu);
        if (!b)
            break;
        b->taken = 1;
        pthread_mutex_unlock(&w->mu);
        const char *why = NULL;
        int rc = enc_rc < 0 ? enc_rc : write_block(b, enc, &chunk, &cap, &why);
        uint64_t bytes = b->d->block_bytes;
        pthread_mutex_lock(&w->mu);
        unlink_block(w, b);
        w->pending_bytes -= bytes < w->pending_bytes ? bytes : w->pending_bytes; /* (a binding that
                                                                                   did not reserve) */
        if (rc < 0)
            fail_record(w, b, rc, why);
        else
            w->n_committed++;
        pthread_cond_broadcast(&w->done);
        pthread_cond_broadcast(&w->work); /* a block of the same band may be free now */
        notify(w);
        free(b->buf);
        free(b);
    }
    pthread_mutex_unlock(&w->mu);
    free(chunk);
    ml_encoder_close(enc);
    ml_refs_put(&w->refs); /* never the last: the handle's outlives the join in ml_writer_close */
    return NULL;
}

int ml_writer_open(const char *path, int truncate, unsigned n_workers, uint64_t max_pending, ml_budget *budget,
                   int priority, ml_writer **out, ml_error *err) {
    if (n_workers < 1 || n_workers > MAX_WORKERS || max_pending < 1)
        return ml_error_set(err, -ML_EINVAL, "n_procs must be 1..%d and max_pending_bytes >= 1", MAX_WORKERS);
    ml_writer *w = calloc(1, sizeof *w);
    int rc = 0;
    if (!w)
        return ml_error_set(err, -ENOMEM, "no memory for a writer of '%s'", path);
    pthread_mutex_init(&w->mu, NULL);
    ml_clock_cond_init(&w->work); /* CLOCK_MONOTONIC deadlines (ml_clock_deadline_ms) */
    ml_clock_cond_init(&w->done);
    w->file = -1;
    w->max_pending = max_pending;
    atomic_init(&w->refs, 1);
    ml_event_init(&w->event);
    int efd = ml_event_fd(&w->event); /* made now: a flush's waiter never finds none */
    if (!(w->path = strdup(path)) || efd < 0) {
        rc = ml_error_set(err, efd < 0 ? efd : -ENOMEM, "cannot set up a writer of '%s'", path);
        goto fail;
    }
    if (budget && (rc = ml_budget_client_new(&w->budget, budget, priority)) < 0) {
        ml_error_set(err, rc, "no memory for the budget of a writer of '%s'", path);
        goto fail;
    }
    if ((rc = ml_h5w_file_open(path, truncate, &w->file, err)) < 0)
        goto fail;
    for (unsigned i = 0; i < n_workers; i++) {
        if ((rc = ml_worker_start(&w->threads[i], worker, w, &w->refs)) < 0) {
            ml_error_set(err, rc, "cannot start the writer's threads for '%s'", path);
            goto fail;
        }
        w->n_workers++;
    }
    *out = w;
    return 0;
fail:
    ml_writer_close(w, 1, NULL);
    ml_writer_free(w);
    return rc;
}

/* Add a dataset entry; takes ownership of name, t, fill (also on failure:
 * then freed). -ENOMEM, or -ML_EINVAL when a row, a chunk or a band's
 * buffer would not fit in 64 bits (a hostile file's dims). */
static int add_ds(ml_writer *w, char *name, hid_t dset, const ml_wparams *p, ml_type *t, unsigned char *fill,
                  int *out) {
    wdset *d = calloc(1, sizeof *d);
    if (!d) {
        free(name);
        ml_type_free(t);
        free(fill);
        return -ENOMEM;
    }
    d->name = name;
    d->dset = dset;
    d->p = *p;
    d->t = t;
    d->fill = fill;
    d->fill_zero = 1;
    for (size_t i = 0; i < t->size; i++)
        d->fill_zero &= fill[i] == 0;
    d->row_elems = 1;
    d->chunk_elems = p->chunks[0];
    d->n_across = 1;
    int ok = p->ndim >= 1 && p->chunks[0] >= 1;
    for (unsigned i = 1; ok && i < p->ndim; i++) {
        uint64_t n_i = p->chunks[i] ? (p->shape[i] + p->chunks[i] - 1) / p->chunks[i] : 0;
        ok = p->chunks[i] >= 1 && ml_mul_ok(d->row_elems, p->shape[i], &d->row_elems) &&
             ml_mul_ok(d->chunk_elems, p->chunks[i], &d->chunk_elems) &&
             ml_mul_ok(d->n_across, n_i ? n_i : 1, &d->n_across);
    }
    ok = ok && ml_mul_ok(d->row_elems, t->size, &d->row_bytes) &&
         ml_mul_ok(d->row_bytes, p->chunks[0], &d->block_bytes) && d->block_bytes <= SIZE_MAX / 2;
    int rc = ok ? 0 : -ML_EINVAL;
    pthread_mutex_lock(&w->mu);
    if (rc == 0 && w->n_ds == w->cap_ds) {
        int cap = w->cap_ds ? 2 * w->cap_ds : 8;
        wdset **nd = realloc(w->ds, (size_t)cap * sizeof *nd);
        if (nd) {
            w->ds = nd;
            w->cap_ds = cap;
        } else {
            rc = -ENOMEM;
        }
    }
    if (rc == 0) {
        w->ds[w->n_ds] = d;
        *out = w->n_ds++;
    }
    pthread_mutex_unlock(&w->mu);
    if (rc < 0) {
        free(d->name);
        ml_type_free(d->t);
        free(d->fill);
        free(d);
    }
    return rc;
}

/* Dataset `ds`, or NULL if no such index. Takes mu (the array may grow). */
static wdset *ds_of(ml_writer *w, int ds) {
    pthread_mutex_lock(&w->mu);
    wdset *d = ds >= 0 && ds < w->n_ds ? w->ds[ds] : NULL;
    pthread_mutex_unlock(&w->mu);
    return d;
}

/* Is the writer still open? Sets err if not. */
static int check_open(ml_writer *w, ml_error *err) {
    pthread_mutex_lock(&w->mu);
    int closed = w->closed;
    pthread_mutex_unlock(&w->mu);
    return closed ? ml_error_set(err, -ML_ECLOSED, "the writer of '%s' is closed", w->path) : 0;
}

int ml_writer_create(ml_writer *w, const char *name, const ml_type *t, const ml_wparams *p, const void *fill,
                     int *ds, ml_error *err) {
    int rc = check_open(w, err);
    if (rc < 0)
        return rc;
    if (p->ndim < 1 || p->ndim > ML_MAX_DIMS || t->size == 0)
        return ml_error_set(err, -ML_EINVAL, "dataset '%s': the Writer writes datasets of 1 to %d dims", name,
                            ML_MAX_DIMS);
    uint64_t bytes = t->size;
    for (unsigned i = 0; i < p->ndim; i++)
        if (p->chunks[i] < 1 || !ml_mul_ok(bytes, p->chunks[i], &bytes) || bytes > ((uint64_t)1 << 32) - 1)
            return ml_error_set(err, -ML_EINVAL, "dataset '%s': chunks of 4 GiB or more", name);
    hid_t dset = -1;
    if ((rc = ml_h5w_create(w->file, w->path, name, t, p, fill, &dset, err)) < 0)
        return rc;
    ml_h5w_close(dset);
    return ml_writer_find(w, name, ds, err);
}

int ml_writer_find(ml_writer *w, const char *name, int *ds, ml_error *err) {
    int rc = check_open(w, err);
    if (rc < 0)
        return rc;
    pthread_mutex_lock(&w->mu);
    for (int i = 0; i < w->n_ds; i++)
        if (strcmp(w->ds[i]->name, name) == 0) {
            *ds = i;
            pthread_mutex_unlock(&w->mu);
            return 0;
        }
    pthread_mutex_unlock(&w->mu);
    hid_t dset = -1;
    ml_wparams p;
    ml_type *t = NULL;
    unsigned char *fill = NULL;
    char *copy = NULL;
    if ((rc = ml_h5w_open(w->file, w->path, name, &dset, &p, &t, &fill, err)) < 0)
        return rc;
    if (!(copy = strdup(name))) {
        ml_type_free(t);
        free(fill);
        ml_h5w_close(dset);
        return ml_error_set(err, -ENOMEM, "dataset '%s': no memory", name);
    }
    if ((rc = add_ds(w, copy, dset, &p, t, fill, ds)) < 0) { /* add_ds freed copy, t, fill */
        ml_h5w_close(dset);
        return rc == -ENOMEM ? ml_error_set(err, rc, "dataset '%s': no memory", name)
                             : ml_error_set(err, rc, "'%s' dataset '%s': a row or a band of chunks is too large "
                                                     "to address (its shape or chunks)", w->path, name);
    }
    return 0;
}

int ml_writer_info(ml_writer *w, int ds, ml_wparams *p, const ml_type **t, const unsigned char **fill) {
    wdset *d = ds_of(w, ds);
    if (!d)
        return -ML_EINVAL;
    ml_h5_lock(); /* p.shape[0] changes under it (a worker growing the extent) */
    *p = d->p;
    ml_h5_unlock();
    *t = d->t;
    *fill = d->fill;
    return 0;
}

uint64_t ml_writer_block_bytes(ml_writer *w, int ds) {
    wdset *d = ds_of(w, ds);
    return d ? d->block_bytes : 0;
}

uint64_t ml_wblock_rows(const ml_wblock *b) { return b->d->p.chunks[0]; }

uint64_t ml_wblock_row_bytes(const ml_wblock *b) { return b->d->row_bytes; }

ml_writer *ml_wblock_writer(const ml_wblock *b) { return b->w; }

/* Wait until no in-flight block of (ds, band). mu held. */
static void wait_band(ml_writer *w, int ds, uint64_t band) {
    for (;;) {
        int busy = 0;
        for (ml_wblock *a = w->head; a && !busy; a = a->next)
            busy = a->ds == ds && a->band == band;
        if (!busy)
            return;
        pthread_cond_wait(&w->done, &w->mu);
    }
}

int ml_wblock_new(ml_writer *w, int ds, uint64_t band, int load, ml_wblock **out, ml_error *err) {
    wdset *d = ds_of(w, ds);
    uint64_t row0;
    if (!d)
        return ml_error_set(err, -ML_EINVAL, "'%s': no dataset %d in this writer", w->path, ds);
    if (!ml_mul_ok(band, d->p.chunks[0], &row0) || row0 > UINT64_MAX - d->p.chunks[0])
        return ml_error_set(err, -ML_EINVAL, "'%s' dataset '%s': band %llu is past any row", w->path, d->name,
                            (unsigned long long)band);
    uint64_t bytes = d->block_bytes;
    ml_wblock *b = calloc(1, sizeof *b);
    unsigned char *buf = NULL;
    int rc = 0;
    if (!b || posix_memalign((void **)&buf, 64, bytes ? bytes : 1) != 0) {
        free(b);
        return ml_error_set(err, -ENOMEM, "dataset '%s': no memory for a block of %llu bytes", d->name,
                            (unsigned long long)bytes);
    }
    b->w = w;
    b->ds = ds;
    b->d = d;
    b->band = band;
    b->buf = buf;
    b->init_rows = 0; /* filled as rows arrive (ml_wblock_put) or at submit */
    if (load) {
        init_upto(b, d->p.chunks[0]);
        pthread_mutex_lock(&w->mu);
        wait_band(w, ds, band);
        pthread_mutex_unlock(&w->mu);
        ml_h5_lock();
        uint64_t ext = d->p.shape[0];
        ml_h5_unlock();
        if (row0 < ext) {
            uint64_t n = ext - row0 < d->p.chunks[0] ? ext - row0 : d->p.chunks[0];
            if ((rc = ml_h5w_rows_read(d->dset, &d->p, row0, n, buf)) < 0) {
                ml_error_set(err, rc, "'%s' dataset '%s': cannot read rows %llu..%llu back to merge them", w->path,
                             d->name, (unsigned long long)row0, (unsigned long long)(row0 + n));
                ml_wblock_free(b);
                return rc;
            }
        }
    }
    *out = b;
    return 0;
}

void ml_wblock_put(ml_wblock *b, uint64_t at, const void *src, uint64_t n_rows) {
    const wdset *d = b->d;
    init_upto(b, at); /* a gap before these rows: fill, never stale memory */
    memcpy(b->buf + at * d->row_bytes, src, n_rows * d->row_bytes);
    if (at + n_rows > b->init_rows)
        b->init_rows = at + n_rows;
}


void ml_wblock_free(ml_wblock *b) {
    if (!b)
        return;
    free(b->buf);
    free(b);
}

int ml_writer_reserve(ml_writer *w, uint64_t bytes, long ms) {
    struct timespec dl;
    if (ms >= 0)
        ml_clock_deadline_ms(&dl, CLOCK_MONOTONIC, ms);
    int rc = 0;
    pthread_mutex_lock(&w->mu);
    for (;;) {
        if (w->closed || w->stop) {
            rc = -ML_ECLOSED;
            break;
        }
        if (w->n_failed) {
            rc = -ECANCELED;
            break;
        }
        if (w->pending_bytes == 0 || w->pending_bytes + bytes <= w->max_pending) {
            w->pending_bytes += bytes;
            break;
        }
        if (ms < 0)
            pthread_cond_wait(&w->done, &w->mu);
        else if (pthread_cond_timedwait(&w->done, &w->mu, &dl) == ETIMEDOUT) {
            rc = -ETIMEDOUT;
            break;
        }
    }
    pthread_mutex_unlock(&w->mu);
    return rc;
}

void ml_writer_unreserve(ml_writer *w, uint64_t bytes) {
    pthread_mutex_lock(&w->mu);
    w->pending_bytes -= bytes < w->pending_bytes ? bytes : w->pending_bytes;
    pthread_cond_broadcast(&w->done);
    pthread_mutex_unlock(&w->mu);
}

int ml_writer_submit(ml_writer *w, ml_wblock *b, uint64_t valid_rows, int keep) {
    init_upto(b, b->d->p.chunks[0]); /* rows never put hold the fill value */
    if (keep) {
        uint64_t bytes = b->d->block_bytes;
        ml_wblock *c = malloc(sizeof *c);
        unsigned char *buf = NULL;
        if (!c || posix_memalign((void **)&buf, 64, bytes ? bytes : 1) != 0) {
            free(c);
            ml_writer_unreserve(w, bytes);
            return -ENOMEM;
        }
        *c = *b;
        c->buf = buf;
        memcpy(buf, b->buf, bytes);
        b = c;
    }
    b->valid = valid_rows;
    b->taken = 0;
    b->next = NULL;
    pthread_mutex_lock(&w->mu);
    if (w->tail)
        w->tail->next = b;
    else
        w->head = b;
    w->tail = b;
    w->n_pending++;
    pthread_cond_broadcast(&w->work);
    pthread_mutex_unlock(&w->mu);
    return 0;
}

int ml_writer_wait_idle(ml_writer *w, long ms) {
    struct timespec dl;
    if (ms >= 0)
        ml_clock_deadline_ms(&dl, CLOCK_MONOTONIC, ms);
    int rc = 0;
    pthread_mutex_lock(&w->mu);
    while (w->head) {
        if (ms < 0)
            pthread_cond_wait(&w->done, &w->mu);
        else if (pthread_cond_timedwait(&w->done, &w->mu, &dl) == ETIMEDOUT) {
            rc = w->head ? -ETIMEDOUT : 0;
            break;
        }
    }
    pthread_mutex_unlock(&w->mu);
    return rc;
}

int ml_writer_grow(ml_writer *w, int ds, uint64_t n_rows, ml_error *err) {
    wdset *d = ds_of(w, ds);
    int rc = 0;
    if (!d)
        return ml_error_set(err, -ML_EINVAL, "'%s': no dataset %d in this writer", w->path, ds);
    ml_h5_lock();
    if (n_rows > d->p.shape[0] && ml_h5w_grow(d->dset, &d->p, n_rows) < 0)
        rc = ml_error_set(err, -ML_EHDF5, "'%s' dataset '%s': cannot grow it to %llu rows", w->path, d->name,
                          (unsigned long long)n_rows);
    ml_h5_unlock();
    return rc;
}

int ml_writer_sync(ml_writer *w, ml_error *err) {
    int rc = check_open(w, err);
    return rc < 0 ? rc : ml_h5w_sync(w->file, w->path, err);
}

size_t ml_writer_n_failures(ml_writer *w) {
    pthread_mutex_lock(&w->mu);
    size_t n = w->n_fails;
    pthread_mutex_unlock(&w->mu);
    return n;
}

void ml_writer_failure(ml_writer *w, size_t k, ml_wfail *out) {
    pthread_mutex_lock(&w->mu);
    *out = w->fails[k];
    pthread_mutex_unlock(&w->mu);
}

void ml_writer_stats(ml_writer *w, uint64_t *pending_bytes, uint64_t *n_pending, uint64_t *n_committed,
                     uint64_t *n_failed) {
    pthread_mutex_lock(&w->mu);
    *pending_bytes = w->pending_bytes;
    *n_pending = w->n_pending;
    *n_committed = w->n_committed;
    *n_failed = w->n_failed;
    pthread_mutex_unlock(&w->mu);
}

int ml_writer_event_fd(ml_writer *w) { return ml_event_fd(&w->event); }

int ml_writer_budget_stats(ml_writer *w, ml_budget_stats *st) {
    if (!w->budget)
        return -ENOENT;
    ml_budget_client_get_stats(w->budget, st);
    return 0;
}

int ml_writer_close(ml_writer *w, int abort, ml_error *err) {
    pthread_mutex_lock(&w->mu);
    if (w->closed) {
        pthread_mutex_unlock(&w->mu);
        return 0;
    }
    w->closed = 1;
    w->stop = 1;
    w->abort = abort;
    if (abort) { /* discard what no worker has started */
        ml_wblock **pp = &w->head;
        w->tail = NULL;
        while (*pp) {
            ml_wblock *b = *pp;
            if (b->taken) {
                w->tail = b;
                pp = &b->next;
                continue;
            }
            *pp = b->next;
            w->n_pending--;
            w->pending_bytes -= b->d->block_bytes;
            ml_wblock_free(b);
        }
    }
    pthread_cond_broadcast(&w->work);
    pthread_cond_broadcast(&w->done);
    pthread_mutex_unlock(&w->mu);
    if (abort) /* a worker asleep on the budget gives its block up now */
        ml_budget_client_cancel(w->budget);
    for (unsigned i = 0; i < w->n_workers; i++)
        pthread_join(w->threads[i], NULL); /* each finishes the chunk write it is in */
    w->n_workers = 0;
    int rc = 0;
    for (int i = 0; i < w->n_ds; i++) {
        if (ml_h5w_close(w->ds[i]->dset) < 0 && rc == 0)
            rc = ml_error_set(err, -ML_EHDF5, "'%s': cannot close dataset '%s'", w->path, w->ds[i]->name);
        w->ds[i]->dset = -1;
    }
    if (ml_h5w_close(w->file) < 0 && rc == 0)
        rc = ml_error_set(err, -ML_EHDF5, "cannot close '%s' (HDF5 failed writing its metadata)", w->path);
    w->file = -1;
    notify(w);
    return rc;
}

void ml_writer_free(ml_writer *w) {
    if (!w)
        return;
    if (!w->closed) /* joins the workers */
        ml_writer_close(w, 1, NULL);
    for (int i = 0; i < w->n_ds; i++) {
        free(w->ds[i]->name);
        ml_type_free(w->ds[i]->t);
        free(w->ds[i]->fill);
        free(w->ds[i]);
    }
    free(w->ds);
    free(w->fails);
    free(w->path);
    ml_event_close(&w->event);
    ml_budget_client_free(w->budget);
    pthread_cond_destroy(&w->work);
    pthread_cond_destroy(&w->done);
    pthread_mutex_destroy(&w->mu);
    free(w);
}
