/* file_serve.c - the FileLoader's loader threads.
 *
 * n_threads threads each loop: take a share of the REQUESTED entries
 * (ml_floader_take_work: at most `batch`, about pending / n_threads so
 * work spreads over the threads), read them as one batch (file_read.c),
 * complete the batch under one lock (one wake-up per consumer). A thread sleeps on the
 * region's work futex when nothing is queued; close() or stop wakes it.
 *
 * Thread 0 holds the region's lifeline (ml_floader_serve_begin) from
 * before start returns until it exits, so a consumer anywhere sees this
 * process's death (file_region.c). start() returns only once thread 0
 * holds it: "returns once it serves" is then true for every consumer.
 *
 * Budgets: the threads share one client of the budget the config names
 * (file_read.c takes from it before each batch's reads); stop cancels it
 * first, so a thread asleep on the budget wakes at once.
 *
 * The threads touch only the region (through its API), their own reader
 * and their own job arrays: no lock of their own. The handshake at start
 * is one mutex + condvar, process-private.
 */
#define _GNU_SOURCE
#include "file_loader.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "file_read.h"

struct ml_fserve {
    ml_floader *fl;        /* owned reference */
    ml_fserve_config cfg;  /* copy, validated */
    int stop;              /* set by stop (atomic stores), read under the region lock by take_work */
    pthread_t *threads;    /* cfg.n_threads, started[0..n_started) */
    unsigned n_started;
    ml_io_mode mode;       /* what thread 0's reader got */
    pthread_mutex_t mu;    /* the start handshake */
    pthread_cond_t cv;
    int ready;             /* thread 0 serves (or failed: ready_rc); under mu */
    int ready_rc;
    ml_budget_client *budget; /* owned, or NULL; the threads borrow it; cancelled by stop */
};

typedef struct thread_arg {
    ml_fserve *s;
    unsigned id;
} thread_arg;

static void *serve_thread(void *arg_) {
    thread_arg *arg = arg_;
    ml_fserve *s = arg->s;
    unsigned id = arg->id;
    free(arg);
    ml_fread *r = NULL;
    unsigned batch = s->cfg.batch;
    unsigned *idx = calloc(batch, sizeof *idx);
    char *paths = malloc((size_t)batch * ML_FL_PATH_BYTES);
    ml_fread_job *jobs = calloc(batch, sizeof *jobs);
    uint64_t *sizes = calloc(batch, sizeof *sizes);
    const ml_error **errs = calloc(batch, sizeof *errs);
    int *fallbacks = calloc(batch, sizeof *fallbacks);
    int rc = (!idx || !paths || !jobs || !sizes || !errs || !fallbacks) ? -ENOMEM : ml_fread_new(&r, batch, s->cfg.mode, s->cfg.direct);
    if (rc == 0)
        ml_fread_set_budget(r, s->budget);
    if (id == 0) {
        if (rc == 0)
            ml_floader_serve_begin(s->fl);
        pthread_mutex_lock(&s->mu);
        s->ready = 1;
        s->ready_rc = rc;
        s->mode = r ? ml_fread_mode(r) : ML_IO_PREAD;
        pthread_cond_signal(&s->cv);
        pthread_mutex_unlock(&s->mu);
    }
    while (rc == 0) {
        unsigned n = ml_floader_take_work(s->fl, batch, s->cfg.n_threads, &s->stop, idx);
        if (n == 0)
            break;
        for (unsigned k = 0; k < n; k++) {
            ml_fread_job *j = &jobs[k];
            void *slot;
            size_t sb;
            ml_floader_work_item(s->fl, idx[k], paths + (size_t)k * ML_FL_PATH_BYTES, &slot, &sb);
            memset(j, 0, sizeof *j);
            j->path = paths + (size_t)k * ML_FL_PATH_BYTES;
            j->dst = slot;
            j->slot_bytes = sb;
            j->max_size = ml_floader_max_file_size(s->fl);
            j->fd = -1;
        }
        ml_fread_batch(r, jobs, n);
        for (unsigned k = 0; k < n; k++) {
            sizes[k] = jobs[k].size;
            errs[k] = &jobs[k].err;
            fallbacks[k] = jobs[k].direct_fallback;
        }
        ml_floader_complete_batch(s->fl, n, idx, sizes, errs, fallbacks);
    }
    if (id == 0 && r)
        ml_floader_serve_end(s->fl);
    ml_fread_free(r);
    free(fallbacks);
    free(errs);
    free(sizes);
    free(jobs);
    free(paths);
    free(idx);
    return NULL;
}

static void stop_threads(ml_fserve *s) {
    __atomic_store_n(&s->stop, 1, __ATOMIC_RELAXED); /* read under the region lock, after kick's bump */
    ml_budget_client_cancel(s->budget); /* a thread asleep on the budget wakes now */
    ml_floader_kick(s->fl);
    for (unsigned i = 0; i < s->n_started; i++)
        pthread_join(s->threads[i], NULL);
    s->n_started = 0;
}

int ml_fserve_start(ml_fserve **out, ml_floader *fl, const ml_fserve_config *cfg) {
    if (cfg->n_threads < 1 || cfg->n_threads > 1024 || cfg->batch < 1 || cfg->batch > 256)
        return -ML_EINVAL;
    int rc = ml_floader_serve_claim(fl);
    if (rc < 0)
        return rc;
    rc = -ENOMEM;
    ml_fserve *s = calloc(1, sizeof *s);
    if (!s || !(s->threads = calloc(cfg->n_threads, sizeof *s->threads)))
        goto fail;
    s->cfg = *cfg;
    if (cfg->budget && ml_budget_client_new(&s->budget, cfg->budget, cfg->budget_priority) < 0)
        goto fail;
    ml_floader_ref(fl);
    s->fl = fl;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    for (unsigned i = 0; i < cfg->n_threads; i++) {
        thread_arg *a = malloc(sizeof *a);
        int e = a ? 0 : ENOMEM;
        if (a) {
            a->s = s;
            a->id = i;
            e = pthread_create(&s->threads[i], NULL, serve_thread, a);
            if (e)
                free(a);
        }
        if (e) {
            rc = -e;
            if (i == 0)
                goto fail_threads;
            break; /* fewer threads than asked: still a server */
        }
        s->n_started++;
    }
    pthread_mutex_lock(&s->mu);
    while (!s->ready)
        pthread_cond_wait(&s->cv, &s->mu);
    rc = s->ready_rc;
    pthread_mutex_unlock(&s->mu);
    if (rc < 0)
        goto fail_threads;
    *out = s;
    return 0;
fail_threads:
    stop_threads(s);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    ml_floader_unref(s->fl);
fail:
    ml_floader_serve_unclaim(fl);
    if (s) {
        ml_budget_client_free(s->budget);
        free(s->threads);
    }
    free(s);
    return rc;
}

void ml_fserve_stop(ml_fserve *s) {
    if (!s)
        return;
    stop_threads(s);
    ml_floader_serve_unclaim(s->fl);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    ml_floader_unref(s->fl);
    ml_budget_client_free(s->budget);
    free(s->threads);
    free(s);
}

int ml_fserve_budget_stats(ml_fserve *s, ml_budget_stats *st) {
    if (!s->budget)
        return -ENOENT;
    ml_budget_client_get_stats(s->budget, st);
    return 0;
}

ml_io_mode ml_fserve_mode(const ml_fserve *s) { return s->mode; }
