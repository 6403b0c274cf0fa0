/* reader.c - the random-access request engine behind multiload.Reader.
 *
 * Workload: many small requests ("these 256 rows, in this order") arriving
 * from Python threads, served by n_workers native threads that share one
 * FIFO queue. Requests are independent; a request is executed by one
 * worker from start to end, so its destination is written by one thread.
 *
 * Request life:  QUEUED --(worker pops)--> RUNNING --> DONE
 *                QUEUED --(cancel / shutdown without drain)--> DONE
 * A DONE request carries its outcome in `err` (-ECANCELED, -ML_ECLOSED
 * or a read error). Each request has its own mutex and condition variable
 * so that waiting on one never wakes the waiters of another, and so a
 * request outlives the reader that ran it. It is reference counted: the
 * caller holds one reference, the queue/worker another while it is queued
 * or running.
 *
 * How rows are read:
 *   - a range of whole rows: one ml_fetch_rows() straight into dest;
 *   - a strictly increasing list of whole rows of contiguous data: rows
 *     are merged into runs, all runs go to the I/O engine as one batch,
 *     straight into dest (no copy);
 *   - anything else on contiguous data (unsorted, duplicates, a column of
 *     a compound row): the distinct rows are sorted, merged into runs
 *     (small gaps are read through, cheaper than another read), read as
 *     one batch into the worker's scratch buffer, then each requested row
 *     (or its column bytes) is copied to its place in dest;
 *   - chunked data is read by "bands" (the chunk rows k*c0 .. (k+1)*c0,
 *     every chunk across the trailing dims): each band a request touches
 *     is decoded once, from the reader's cache of decoded bands when it is
 *     there, and the requested rows copied out. Ranges that cover whole
 *     bands bypass the cache (ml_fetch_rows decodes them into place).
 *
 * Locks: r->mu guards the queue, `closed`, `draining`, the notify tags
 * and n_exited. q->mu guards q->state and q->err. r->cache_mu guards the
 * band cache. Order: r->mu before q->mu; cache_mu is never held with
 * another lock. No wait is unbounded without a way to wake it: workers
 * wait on work_cv (shutdown broadcasts it), request waiters on q->cv
 * (completion or shutdown broadcasts it), pop_done on notify_cv.
 */
#define _GNU_SOURCE
#include "reader.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fault.h"
#include "fetch.h"

#define N_FETCHERS 8          /* fetchers (open files) cached per worker */
#define CACHE_ENTRIES 256     /* band cache slots */
#define AUTO_CACHE_BYTES (64u << 20)
#define GAP_BYTES 16384       /* read through gaps smaller than this */

enum { Q_QUEUED, Q_RUNNING, Q_DONE };

struct ml_request {
    _Atomic int refs;         /* caller + queue/worker */
    ml_request *next;         /* queue link; r->mu */
    pthread_mutex_t mu;
    pthread_cond_t cv;        /* signalled when state becomes Q_DONE */
    int state;                /* Q_*; mu */
    ml_error err;             /* outcome; written before state = Q_DONE under mu */
    ml_layout *L;             /* owned reference */
    uint64_t *rows;           /* owned, n_rows entries; NULL = range */
    uint64_t row0, n_rows;
    size_t col_offset, col_size, out_size; /* out_size: bytes per row in dest */
    unsigned char *dest;      /* borrowed from the caller */
    uint64_t tag;
    int notify;
};

typedef struct band {
    ml_layout *L;             /* owned reference while valid */
    uint64_t index;           /* band number: rows index*c0 .. */
    unsigned char *buf;       /* owned, decoded rows */
    size_t bytes;
    unsigned pins;            /* workers copying out of it */
    uint64_t tick;            /* last use, for LRU */
    int valid;
} band;

typedef struct worker {
    ml_reader *r;
    pthread_t thread;
    int started;
    struct { ml_layout *L; ml_fetcher *f; uint64_t tick; } fetchers[N_FETCHERS];
    uint64_t tick;
    unsigned char *scratch;   /* run buffer */
    size_t scratch_cap;
    ml_row_run *runs;
    size_t runs_cap;
} worker;

struct ml_reader {
    pthread_mutex_t mu;
    pthread_cond_t work_cv;   /* queue non-empty or shutdown */
    pthread_cond_t notify_cv; /* a tag was queued or a worker exited */
    ml_request *head, *tail;  /* FIFO; mu */
    int closed;               /* no new requests; mu */
    int draining;             /* closed with drain=1; mu */
    unsigned n_exited;        /* workers that left their loop; mu */
    uint64_t *tags;           /* finished notify tags; mu */
    size_t n_tags, tags_cap;
    int joined;
    unsigned n_workers;
    worker *workers;
    ml_io_mode io_mode;
    pthread_mutex_t cache_mu;
    band cache[CACHE_ENTRIES];/* cache_mu */
    size_t cache_used;        /* bytes in valid entries; cache_mu */
    size_t cache_limit;       /* 0 = auto */
    uint64_t cache_tick;      /* cache_mu */
    _Atomic uint64_t n_requests, n_rows, n_hits, n_misses; /* stats, relaxed */
};

/* ---- requests ---------------------------------------------------------- */

static void deadline_after(struct timespec *ts, long ms) {
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

static void cond_init_mono(pthread_cond_t *cv) {
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(cv, &a);
    pthread_condattr_destroy(&a);
}


static void request_unref(ml_request *q) {
    if (!q || atomic_fetch_sub_explicit(&q->refs, 1, memory_order_acq_rel) != 1)
        return;
    ml_layout_unref(q->L);
    free(q->rows);
    pthread_mutex_destroy(&q->mu);
    pthread_cond_destroy(&q->cv);
    free(q);
}

/* Mark q done with outcome e (NULL = success) and queue its tag. Takes
 * r->mu itself, so call without it. */
static void request_finish(ml_reader *r, ml_request *q, const ml_error *e) {
    pthread_mutex_lock(&q->mu);
    if (e)
        q->err = *e;
    q->state = Q_DONE;
    pthread_cond_broadcast(&q->cv);
    pthread_mutex_unlock(&q->mu);
    atomic_fetch_add_explicit(&r->n_requests, 1, memory_order_relaxed);
    if (q->notify) {
        pthread_mutex_lock(&r->mu);
        if (r->n_tags == r->tags_cap) {
            size_t cap = r->tags_cap ? 2 * r->tags_cap : 64;
            uint64_t *t = realloc(r->tags, cap * sizeof *t);
            if (t) {
                r->tags = t;
                r->tags_cap = cap;
            }
        }
        if (r->n_tags < r->tags_cap) /* on ENOMEM the tag is lost; waiters still wake via q->cv */
            r->tags[r->n_tags++] = q->tag;
        pthread_cond_broadcast(&r->notify_cv);
        pthread_mutex_unlock(&r->mu);
    }
}

int ml_request_submit(ml_reader *r, const ml_request_spec *s, ml_request **out, ml_error *err) {
    ml_layout *L = s->L;
    size_t out_size = s->col_size ? s->col_size : L->row_bytes;
    if (s->col_size && (s->col_offset > L->row_bytes || s->col_size > L->row_bytes - s->col_offset))
        return ml_error_set(err, -ML_EINVAL, "column bytes %zu..%zu outside a row of %zu bytes",
                            s->col_offset, s->col_offset + s->col_size, L->row_bytes);
    if (s->n_rows && out_size > s->dest_bytes / s->n_rows)
        return ml_error_set(err, -ML_EINVAL, "%llu rows of %zu bytes do not fit in %zu bytes",
                            (unsigned long long)s->n_rows, out_size, s->dest_bytes);
    if (!s->rows && (s->row0 > L->n_rows || s->n_rows > L->n_rows - s->row0))
        return ml_error_set(err, -ML_EINVAL, "rows %llu..%llu are outside dataset '%s' (%llu rows)",
                            (unsigned long long)s->row0, (unsigned long long)(s->row0 + s->n_rows),
                            L->path, (unsigned long long)L->n_rows);
    for (uint64_t i = 0; s->rows && i < s->n_rows; i++)
        if (s->rows[i] >= L->n_rows)
            return ml_error_set(err, -ML_EINVAL, "row %llu is outside dataset '%s' (%llu rows)",
                                (unsigned long long)s->rows[i], L->path, (unsigned long long)L->n_rows);
    ml_request *q = ml_fault_alloc() < 0 ? NULL : calloc(1, sizeof *q);
    if (!q)
        return ml_error_set(err, -ENOMEM, "out of memory queueing a request");
    if (s->rows) {
        q->rows = malloc((s->n_rows ? s->n_rows : 1) * sizeof *q->rows);
        if (!q->rows) {
            free(q);
            return ml_error_set(err, -ENOMEM, "out of memory queueing a request");
        }
        memcpy(q->rows, s->rows, s->n_rows * sizeof *q->rows);
    }
    pthread_mutex_init(&q->mu, NULL);
    cond_init_mono(&q->cv);
    atomic_init(&q->refs, 2);
    ml_layout_ref(L);
    q->L = L;
    q->row0 = s->row0;
    q->n_rows = s->n_rows;
    q->col_offset = s->col_offset;
    q->col_size = s->col_size;
    q->out_size = out_size;
    q->dest = s->dest;
    q->tag = s->tag;
    q->notify = s->notify;
    q->state = Q_QUEUED;
    pthread_mutex_lock(&r->mu);
    if (r->closed) {
        pthread_mutex_unlock(&r->mu);
        atomic_store(&q->refs, 1);
        request_unref(q);
        return ml_error_set(err, -ML_ECLOSED, "the reader is closed");
    }
    if (r->tail)
        r->tail->next = q;
    else
        r->head = q;
    r->tail = q;
    pthread_cond_signal(&r->work_cv);
    pthread_mutex_unlock(&r->mu);
    *out = q;
    return 0;
}

int ml_request_wait(ml_request *q, long timeout_ms) {
    struct timespec ts;
    if (timeout_ms >= 0)
        deadline_after(&ts, timeout_ms);
    int rc = 0;
    pthread_mutex_lock(&q->mu);
    while (q->state != Q_DONE && rc != ETIMEDOUT)
        rc = timeout_ms < 0 ? pthread_cond_wait(&q->cv, &q->mu) : pthread_cond_timedwait(&q->cv, &q->mu, &ts);
    int done = q->state == Q_DONE;
    pthread_mutex_unlock(&q->mu);
    return done ? 0 : -ETIMEDOUT;
}

int ml_request_done(ml_request *q) {
    pthread_mutex_lock(&q->mu);
    int d = q->state == Q_DONE;
    pthread_mutex_unlock(&q->mu);
    return d;
}

int ml_request_running(ml_request *q) {
    pthread_mutex_lock(&q->mu);
    int running = q->state == Q_RUNNING;
    pthread_mutex_unlock(&q->mu);
    return running;
}

const ml_error *ml_request_error(const ml_request *q) { return &q->err; }

void ml_request_free(ml_request *q) { request_unref(q); }

/* ---- the band cache ---------------------------------------------------- */

typedef struct band_ref {
    band *e;                  /* pinned cache entry, or NULL */
    unsigned char *buf;       /* decoded rows of the band */
    uint64_t index;
    int private_buf;          /* 1: buf is ours to free */
} band_ref;

static void band_release(ml_reader *r, band_ref *b) {
    if (b->e) {
        pthread_mutex_lock(&r->cache_mu);
        b->e->pins--;
        pthread_mutex_unlock(&r->cache_mu);
    } else if (b->private_buf) {
        free(b->buf);
    }
    memset(b, 0, sizeof *b);
    b->index = UINT64_MAX;
}

/* Pin band `index` of L (decoding it on a miss). Returns 0 or an error. */
static int band_get(ml_reader *r, ml_fetcher *f, ml_layout *L, uint64_t index, band_ref *out,
                    ml_error *err) {
    uint64_t c0 = L->chunk[0];
    uint64_t row0 = index * c0, n = row0 + c0 <= L->n_rows ? c0 : L->n_rows - row0;
    size_t bytes = n * L->row_bytes;
    pthread_mutex_lock(&r->cache_mu);
    for (unsigned i = 0; i < CACHE_ENTRIES; i++) {
        band *e = &r->cache[i];
        if (e->valid && e->L == L && e->index == index) {
            e->pins++;
            e->tick = ++r->cache_tick;
            pthread_mutex_unlock(&r->cache_mu);
            atomic_fetch_add_explicit(&r->n_hits, 1, memory_order_relaxed);
            *out = (band_ref){.e = e, .buf = e->buf, .index = index};
            return 0;
        }
    }
    pthread_mutex_unlock(&r->cache_mu);
    atomic_fetch_add_explicit(&r->n_misses, 1, memory_order_relaxed);
    unsigned char *buf = ml_fault_alloc() < 0 ? NULL : malloc(bytes ? bytes : 1);
    if (!buf)
        return ml_error_set(err, -ENOMEM, "out of memory decoding rows %llu..%llu of dataset '%s'",
                            (unsigned long long)row0, (unsigned long long)(row0 + n), L->path);
    int rc = ml_fetch_rows(f, row0, n, buf, err);
    if (rc < 0) {
        free(buf);
        return rc;
    }
    *out = (band_ref){.buf = buf, .index = index, .private_buf = 1};
    /* Insert: evict unpinned least-recently-used bands until it fits. */
    size_t limit = r->cache_limit;
    if (!limit) {
        limit = AUTO_CACHE_BYTES;
        if (limit < 4 * (size_t)r->n_workers * bytes)
            limit = 4 * (size_t)r->n_workers * bytes;
    }
    if (bytes > limit)
        return 0;
    ml_layout *drop[CACHE_ENTRIES];
    unsigned n_drop = 0;
    pthread_mutex_lock(&r->cache_mu);
    band *slot = NULL;
    for (;;) {
        band *lru = NULL;
        slot = NULL;
        for (unsigned i = 0; i < CACHE_ENTRIES; i++) {
            band *e = &r->cache[i];
            if (!e->valid) {
                slot = slot ? slot : e;
            } else if (!e->pins && (!lru || e->tick < lru->tick)) {
                lru = e;
            }
        }
        if (slot && r->cache_used + bytes <= limit)
            break;
        if (!lru) {
            slot = NULL;
            break;
        }
        lru->valid = 0;
        r->cache_used -= lru->bytes;
        free(lru->buf);
        drop[n_drop++] = lru->L;
    }
    if (slot) {
        ml_layout_ref(L);
        *slot = (band){.L = L, .index = index, .buf = buf, .bytes = bytes, .pins = 1,
                       .tick = ++r->cache_tick, .valid = 1};
        r->cache_used += bytes;
        *out = (band_ref){.e = slot, .buf = buf, .index = index};
    }
    pthread_mutex_unlock(&r->cache_mu);
    for (unsigned i = 0; i < n_drop; i++)
        ml_layout_unref(drop[i]);
    return 0;
}

/* ---- workers ----------------------------------------------------------- */

static ml_fetcher *fetcher_for(worker *w, ml_layout *L, ml_error *err) {
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
    ml_fetcher_close(w->fetchers[victim].f);
    w->fetchers[victim].L = L; /* the fetcher holds the reference */
    w->fetchers[victim].f = f;
    w->fetchers[victim].tick = ++w->tick;
    return f;
}

static int grow(void **p, size_t *cap, size_t need) {
    if (*cap >= need)
        return 0;
    if (ml_fault_alloc() < 0)
        return -ENOMEM;
    void *n = realloc(*p, need);
    if (!n)
        return -ENOMEM;
    *p = n;
    *cap = need;
    return 0;
}

typedef struct pair {
    uint64_t row;             /* dataset row */
    uint64_t pos;             /* index in the request; later: scratch row */
} pair;

static int pair_cmp(const void *a, const void *b) {
    const pair *x = a, *y = b;
    if (x->row != y->row)
        return x->row < y->row ? -1 : 1;
    return x->pos < y->pos ? -1 : x->pos > y->pos;
}

static inline uint64_t row_at(const ml_request *q, uint64_t i) { return q->rows ? q->rows[i] : q->row0 + i; }

static int oom(ml_error *err, const ml_request *q) {
    return ml_error_set(err, -ENOMEM, "out of memory reading %llu rows of dataset '%s'",
                        (unsigned long long)q->n_rows, q->L->path);
}

/* Chunked data: copy each requested row out of its decoded band. */
static int exec_bands(worker *w, ml_fetcher *f, ml_request *q, pair *p, uint64_t n, ml_error *err) {
    ml_layout *L = q->L;
    uint64_t c0 = L->chunk[0];
    band_ref b = {.index = UINT64_MAX};
    int rc = 0;
    for (uint64_t k = 0; k < n; k++) {
        uint64_t row = p ? p[k].row : row_at(q, k), pos = p ? p[k].pos : k;
        if (row / c0 != b.index) {
            band_release(w->r, &b);
            if ((rc = band_get(w->r, f, L, row / c0, &b, err)) < 0)
                break;
        }
        memcpy(q->dest + pos * q->out_size, b.buf + (row % c0) * L->row_bytes + q->col_offset, q->out_size);
    }
    band_release(w->r, &b);
    return rc;
}

static int execute(worker *w, ml_request *q, ml_error *err) {
    ml_layout *L = q->L;
    uint64_t n = q->n_rows;
    if (n == 0 || q->out_size == 0)
        return 0;
    ml_fetcher *f = fetcher_for(w, L, err);
    if (!f)
        return err->code;
    int chunked = L->storage == ML_STORE_CHUNKED;
    int whole = q->col_size == 0;
    if (!q->rows && whole && (!chunked || n >= L->chunk[0]))
        return ml_fetch_rows(f, q->row0, n, q->dest, err);
    if (!q->rows && chunked)
        return exec_bands(w, f, q, NULL, n, err);
    int increasing = 1;
    for (uint64_t i = 1; q->rows && i < n && increasing; i++)
        increasing = q->rows[i] > q->rows[i - 1];
    if (chunked && increasing)
        return exec_bands(w, f, q, NULL, n, err);
    if (whole && q->rows && increasing) {
        /* Runs of adjacent rows, read straight into dest in one batch. */
        size_t nr = 0;
        for (uint64_t i = 0; i < n; i++) {
            if (nr && w->runs[nr - 1].start + w->runs[nr - 1].count == q->rows[i]) {
                w->runs[nr - 1].count++;
                continue;
            }
            if (grow((void **)&w->runs, &w->runs_cap, (nr + 1) * sizeof *w->runs) < 0)
                return oom(err, q);
            w->runs[nr++] = (ml_row_run){q->rows[i], 1};
        }
        return ml_fetch_runs(f, w->runs, nr, q->dest, err);
    }
    pair *p = ml_fault_alloc() < 0 ? NULL : malloc(n * sizeof *p);
    if (!p)
        return oom(err, q);
    for (uint64_t i = 0; i < n; i++)
        p[i] = (pair){row_at(q, i), i};
    if (!increasing)
        qsort(p, n, sizeof *p, pair_cmp);
    int rc;
    if (chunked) {
        rc = exec_bands(w, f, q, p, n, err);
        free(p);
        return rc;
    }
    /* Distinct rows into runs (reading through small gaps); row k of the
     * request comes from scratch row src[k]. */
    uint64_t gap = L->row_bytes ? GAP_BYTES / L->row_bytes : 0;
    uint64_t *src = ml_fault_alloc() < 0 ? NULL : malloc(n * sizeof *src);
    size_t nr = 0;
    uint64_t total = 0;
    rc = src ? 0 : oom(err, q);
    for (uint64_t k = 0; k < n && rc == 0; k++) {
        uint64_t row = p[k].row;
        ml_row_run *last = nr ? &w->runs[nr - 1] : NULL;
        if (last && row < last->start + last->count) {
            /* duplicate of a row already in the last run */
        } else if (last && row - (last->start + last->count) <= gap) {
            uint64_t add = row + 1 - (last->start + last->count);
            last->count += add;
            total += add;
        } else {
            if (grow((void **)&w->runs, &w->runs_cap, (nr + 1) * sizeof *w->runs) < 0) {
                rc = oom(err, q);
                break;
            }
            w->runs[nr++] = (ml_row_run){row, 1};
            total++;
        }
        last = &w->runs[nr - 1];
        src[k] = total - (last->start + last->count - row);
    }
    if (rc == 0 && grow((void **)&w->scratch, &w->scratch_cap, total * L->row_bytes) < 0)
        rc = oom(err, q);
    if (rc == 0)
        rc = ml_fetch_runs(f, w->runs, nr, w->scratch, err);
    for (uint64_t k = 0; k < n && rc == 0; k++)
        memcpy(q->dest + p[k].pos * q->out_size, w->scratch + src[k] * L->row_bytes + q->col_offset,
               q->out_size);
    free(src);
    free(p);
    /* Keep at most 16 MiB of scratch between requests. */
    if (w->scratch_cap > (16u << 20)) {
        free(w->scratch);
        w->scratch = NULL;
        w->scratch_cap = 0;
    }
    return rc;
}

static void *worker_main(void *arg) {
    worker *w = arg;
    ml_reader *r = w->r;
    for (;;) {
        pthread_mutex_lock(&r->mu);
        while (!r->head && !r->closed)
            pthread_cond_wait(&r->work_cv, &r->mu);
        ml_request *q = r->head;
        if (!q) { /* closed and nothing left */
            r->n_exited++;
            pthread_cond_broadcast(&r->notify_cv);
            pthread_mutex_unlock(&r->mu);
            break;
        }
        r->head = q->next;
        if (!r->head)
            r->tail = NULL;
        q->next = NULL;
        pthread_mutex_lock(&q->mu);
        q->state = Q_RUNNING;
        pthread_mutex_unlock(&q->mu);
        pthread_mutex_unlock(&r->mu);
        ml_error e;
        ml_error_clear(&e);
        int rc = execute(w, q, &e);
        if (rc < 0 && e.code == 0)
            ml_error_set(&e, rc, "reading dataset '%s': %s", q->L->path, ml_strerror(rc));
        if (rc == 0)
            atomic_fetch_add_explicit(&r->n_rows, q->n_rows, memory_order_relaxed);
        request_finish(r, q, rc < 0 ? &e : NULL);
        request_unref(q);
    }
    for (unsigned i = 0; i < N_FETCHERS; i++)
        ml_fetcher_close(w->fetchers[i].f);
    memset(w->fetchers, 0, sizeof w->fetchers);
    free(w->scratch);
    free(w->runs);
    w->scratch = NULL;
    w->runs = NULL;
    return NULL;
}

/* ---- the reader -------------------------------------------------------- */

int ml_reader_open(ml_reader **out, const ml_reader_config *cfg, ml_error *err) {
    unsigned nw = cfg->n_workers ? cfg->n_workers : 1;
    ml_reader *r = ml_fault_alloc() < 0 ? NULL : calloc(1, sizeof *r);
    worker *ws = r ? calloc(nw, sizeof *ws) : NULL;
    if (!ws) {
        free(r);
        return ml_error_set(err, -ENOMEM, "out of memory starting a reader");
    }
    pthread_mutex_init(&r->mu, NULL);
    pthread_mutex_init(&r->cache_mu, NULL);
    pthread_cond_init(&r->work_cv, NULL);
    cond_init_mono(&r->notify_cv);
    r->workers = ws;
    r->io_mode = cfg->io_mode;
    r->cache_limit = cfg->cache_bytes;
    for (unsigned i = 0; i < nw; i++) {
        ws[i].r = r;
        int rc = pthread_create(&ws[i].thread, NULL, worker_main, &ws[i]);
        if (rc != 0) {
            r->n_workers = i;
            ml_reader_free(r);
            return ml_error_set(err, -rc, "cannot start reader threads: %s", strerror(rc));
        }
        ws[i].started = 1;
        r->n_workers = i + 1;
    }
    *out = r;
    return 0;
}

void ml_reader_shutdown(ml_reader *r, int drain) {
    pthread_mutex_lock(&r->mu);
    r->closed = 1;
    ml_request *q = NULL;
    if (!drain) {
        q = r->head;
        r->head = r->tail = NULL;
    } else {
        r->draining = 1;
    }
    pthread_cond_broadcast(&r->work_cv);
    pthread_cond_broadcast(&r->notify_cv);
    pthread_mutex_unlock(&r->mu);
    ml_error e;
    ml_error_clear(&e);
    ml_error_set(&e, -ML_ECLOSED, "the reader was stopped before this request ran");
    while (q) {
        ml_request *next = q->next;
        q->next = NULL;
        request_finish(r, q, &e);
        request_unref(q);
        q = next;
    }
}

void ml_reader_join(ml_reader *r) {
    if (r->joined)
        return;
    for (unsigned i = 0; i < r->n_workers; i++)
        if (r->workers[i].started)
            pthread_join(r->workers[i].thread, NULL);
    r->joined = 1;
}

void ml_reader_free(ml_reader *r) {
    if (!r)
        return;
    ml_reader_shutdown(r, 0);
    ml_reader_join(r);
    for (unsigned i = 0; i < CACHE_ENTRIES; i++) {
        if (r->cache[i].valid) {
            free(r->cache[i].buf);
            ml_layout_unref(r->cache[i].L);
        }
    }
    free(r->tags);
    free(r->workers);
    pthread_mutex_destroy(&r->mu);
    pthread_mutex_destroy(&r->cache_mu);
    pthread_cond_destroy(&r->work_cv);
    pthread_cond_destroy(&r->notify_cv);
    free(r);
}

int ml_reader_cancel(ml_reader *r, ml_request *q) {
    pthread_mutex_lock(&r->mu);
    ml_request *prev = NULL, *it = r->head;
    while (it && it != q) {
        prev = it;
        it = it->next;
    }
    if (!it) {
        pthread_mutex_unlock(&r->mu);
        return 0;
    }
    if (prev)
        prev->next = q->next;
    else
        r->head = q->next;
    if (r->tail == q)
        r->tail = prev;
    q->next = NULL;
    pthread_mutex_unlock(&r->mu);
    ml_error e;
    ml_error_clear(&e);
    ml_error_set(&e, -ECANCELED, "the request was cancelled");
    request_finish(r, q, &e);
    request_unref(q);
    return 1;
}

int ml_reader_pop_done(ml_reader *r, long timeout_ms, uint64_t *tags, size_t max) {
    struct timespec ts;
    if (timeout_ms >= 0)
        deadline_after(&ts, timeout_ms);
    pthread_mutex_lock(&r->mu);
    int rc = 0;
    while (r->n_tags == 0 && !(r->closed && r->n_exited == r->n_workers) && rc != ETIMEDOUT)
        rc = timeout_ms < 0 ? pthread_cond_wait(&r->notify_cv, &r->mu)
                            : pthread_cond_timedwait(&r->notify_cv, &r->mu, &ts);
    int out;
    if (r->n_tags == 0) {
        out = r->closed && r->n_exited == r->n_workers ? -ML_ECLOSED : 0;
    } else {
        size_t k = r->n_tags < max ? r->n_tags : max;
        memcpy(tags, r->tags, k * sizeof *tags);
        memmove(r->tags, r->tags + k, (r->n_tags - k) * sizeof *tags);
        r->n_tags -= k;
        out = (int)k;
    }
    pthread_mutex_unlock(&r->mu);
    return out;
}

void ml_reader_get_stats(ml_reader *r, ml_reader_stats *st) {
    st->requests = atomic_load_explicit(&r->n_requests, memory_order_relaxed);
    st->rows = atomic_load_explicit(&r->n_rows, memory_order_relaxed);
    st->cache_hits = atomic_load_explicit(&r->n_hits, memory_order_relaxed);
    st->cache_misses = atomic_load_explicit(&r->n_misses, memory_order_relaxed);
}
