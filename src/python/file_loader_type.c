/* file_loader_type.c - FileRegion and FileEntry: the whole-file loader's
 * shared region and one taken entry (multiload/file_loader.py wraps them
 * as FileLoader, Worker and Entry).
 *
 * A FileRegion is this process's handle on the region (file_loader.h): it
 * creates or attaches the memfd, starts and stops loader threads in this
 * process, and does the consumer calls for any worker id. Every wait
 * releases the GIL and sleeps in slices of at most 100 ms (wait.c), so Ctrl-C
 * (PyErr_CheckSignals), the caller's deadline and the server's liveness
 * (a dead loader process, or nobody serving for `grace` seconds) are
 * checked between slices.
 *
 * A FileEntry holds a reference to its FileRegion, so the mapping outlives
 * every entry and every view of one (memoryview through the buffer
 * protocol, numpy arrays whose base is the entry): a view used after
 * release shows whatever the slot holds next, never unmapped memory. An
 * entry dropped without release gives its slot back in dealloc. Entries
 * and loader threads belong to the process that made them: in a child
 * made by fork() an inherited entry's release is a no-op (the parent owns
 * that slot) and inherited threads are never joined.
 *
 * The path a consumer requested is kept (the caller's str or bytes) per
 * entry in the handle that requested it, so get_filepath() returns it
 * exactly, at any length; an entry taken through another handle decodes
 * the region's copy.
 */
#include "ml_python.h"

#include <errno.h>
#include <time.h>
#include <unistd.h>

#include "../clock.h"
#include "../file_loader.h"


typedef struct FileRegionObject {
    PyObject_HEAD
    ml_floader *fl;        /* owned reference */
    ml_fserve *serve;      /* owned, or NULL: loader threads of this handle */
    pid_t serve_pid;       /* the process whose threads those are */
    PyObject **paths;      /* n_entries owned references (or NULL): requested paths; GIL */
    uint64_t *path_seq;    /* n_entries: the request number each path was stored for */
    unsigned n_entries;
    unsigned depth;
} FileRegionObject;

typedef struct FileEntryObject {
    PyObject_HEAD
    FileRegionObject *region; /* owned */
    unsigned worker, entry;
    uint64_t seq;
    void *data;               /* the slot (borrowed from region's mapping) */
    Py_ssize_t size;          /* bytes */
    int code;                 /* 0 or -errno */
    PyObject *msg;            /* owned str, or NULL when code == 0 */
    PyObject *path;           /* owned: str or bytes */
    pid_t pid;                /* the process that took it */
    int released;             /* GIL */
    Py_ssize_t exports;       /* live buffer exports (memoryviews) */
} FileEntryObject;


/* Timeout argument: None -> -1 (forever), else seconds >= 0. Returns 0 or -1 (exception set). */
/* Raise the liveness check's error: multiload.LoaderDiedError (a
 * RuntimeError, shared with LoaderProcess) for a dead loader, RuntimeError
 * for nobody serving. Returns NULL. */
static PyObject *raise_server(int rc, const char *msg) {
    PyObject *cls = NULL;
    if (rc == -EOWNERDEAD) {
        PyObject *mod = PyImport_ImportModule("multiload._signals");
        cls = mod ? PyObject_GetAttrString(mod, "LoaderDiedError") : NULL;
        Py_XDECREF(mod);
        if (!cls)
            PyErr_Clear(); /* an older package: the base class says the same */
    }
    PyErr_SetString(cls ? cls : PyExc_RuntimeError, msg);
    Py_XDECREF(cls);
    return NULL;
}

static PyObject *raise_core(int rc, const char *msg) {
    ml_error e;
    ml_error_clear(&e);
    e.code = rc;
    snprintf(e.msg, sizeof e.msg, "%s", msg);
    return ml_py_raise(&e, NULL);
}

/* ---- FileRegion ---------------------------------------------------------- */

static int region_init_paths(FileRegionObject *r) {
    r->n_entries = ml_floader_n_workers(r->fl) * ml_floader_queue_depth(r->fl);
    r->depth = ml_floader_queue_depth(r->fl);
    r->paths = PyMem_Calloc(r->n_entries, sizeof *r->paths);
    r->path_seq = PyMem_Calloc(r->n_entries, sizeof *r->path_seq);
    if (!r->paths || !r->path_seq) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

static PyObject *region_new(PyTypeObject *tp, PyObject *args, PyObject *kw) {
    static char *names[] = {"queue_depth", "max_file_size", "n_workers", NULL};
    long long depth, max, nw;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "LLL:FileRegion", names, &depth, &max, &nw))
        return NULL;
    if (depth < 1 || depth > 1 << 20 || nw < 1 || nw > 1 << 16) {
        PyErr_Format(PyExc_ValueError,
                     "queue_depth (%lld) and n_workers (%lld) must be positive (at most 2**20 and 2**16)", depth,
                     nw);
        return NULL;
    }
    if (max < 0) {
        PyErr_Format(PyExc_ValueError, "max_file_size must be >= 0, not %lld", max);
        return NULL;
    }
    FileRegionObject *r = (FileRegionObject *)tp->tp_alloc(tp, 0);
    if (!r)
        return NULL;
    ml_fl_config cfg = {.n_workers = (unsigned)nw, .queue_depth = (unsigned)depth, .max_file_size = (uint64_t)max};
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = ml_floader_new(&r->fl, &cfg);
    Py_END_ALLOW_THREADS
    if (rc < 0) {
        Py_DECREF(r);
        if (rc == -ML_EINVAL) {
            PyErr_Format(PyExc_ValueError,
                         "a FileLoader of %lld workers x %lld entries of %lld bytes does not fit in memory", nw,
                         depth, max);
            return NULL;
        }
        return raise_core(rc, "creating the FileLoader's shared region");
    }
    if (region_init_paths(r) < 0) {
        Py_DECREF(r);
        return NULL;
    }
    return (PyObject *)r;
}

static PyObject *region_attach(PyObject *cls, PyObject *arg) {
    int fd = PyObject_AsFileDescriptor(arg);
    if (fd < 0)
        return NULL;
    PyTypeObject *tp = (PyTypeObject *)cls;
    FileRegionObject *r = (FileRegionObject *)tp->tp_alloc(tp, 0);
    if (!r)
        return NULL;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = ml_floader_attach(&r->fl, fd);
    Py_END_ALLOW_THREADS
    if (rc < 0) {
        Py_DECREF(r);
        if (rc == -ML_EINVAL) {
            PyErr_SetString(PyExc_ValueError, "that descriptor is not a FileLoader's shared region");
            return NULL;
        }
        return raise_core(rc, "mapping the FileLoader's shared region");
    }
    if (region_init_paths(r) < 0) {
        Py_DECREF(r);
        return NULL;
    }
    return (PyObject *)r;
}

static void region_stop_serving(FileRegionObject *r) {
    if (!r->serve)
        return;
    ml_fserve *s = r->serve;
    r->serve = NULL;
    if (r->serve_pid != ml_py_pid())
        return; /* a forked child: those threads are the parent's */
    Py_BEGIN_ALLOW_THREADS
    ml_fserve_stop(s);
    Py_END_ALLOW_THREADS
}

static int region_traverse(FileRegionObject *r, visitproc visit, void *arg) {
    Py_VISIT(Py_TYPE(r));
    for (unsigned i = 0; r->paths && i < r->n_entries; i++)
        Py_VISIT(r->paths[i]);
    return 0;
}

static int region_clear(FileRegionObject *r) {
    for (unsigned i = 0; r->paths && i < r->n_entries; i++)
        Py_CLEAR(r->paths[i]);
    return 0;
}

static void region_dealloc(FileRegionObject *r) {
    PyTypeObject *tp = Py_TYPE(r);
    PyObject_GC_UnTrack(r);
    region_stop_serving(r);
    region_clear(r);
    PyMem_Free(r->paths);
    PyMem_Free(r->path_seq);
    ml_floader_unref(r->fl);
    tp->tp_free((PyObject *)r);
    Py_DECREF(tp);
}

static int check_worker(FileRegionObject *r, long long w) {
    if (w < 0 || w >= (long long)ml_floader_n_workers(r->fl)) {
        PyErr_Format(PyExc_ValueError, "worker id %lld is out of range: this FileLoader has %u workers (0..%u)", w,
                     ml_floader_n_workers(r->fl), ml_floader_n_workers(r->fl) - 1);
        return -1;
    }
    return 0;
}

typedef struct region_request_wait {
    FileRegionObject *r;   /* in a step only r->fl, which lives as long as r */
    unsigned w;
    const char *path;
    size_t len;
    int forever;
    int bound;             /* 1: ml_floader_submit (a FileRequest handle) */
    unsigned entry;        /* out */
    uint64_t seq;          /* out */
} region_request_wait;

static int region_request_step(void *arg, long ms) {
    region_request_wait *q = arg;
    if (q->bound)
        return ml_floader_submit(q->r->fl, q->w, q->path, q->len, ms, q->forever, &q->entry, &q->seq);
    return ml_floader_request(q->r->fl, q->w, q->path, q->len, ms, q->forever, &q->entry, &q->seq);
}

/* request(worker, path, timeout) -> bool: queued, or False (no free entry
 * in time). With bound (submit): (entry, seq) or None. */
static PyObject *region_request_impl(FileRegionObject *r, PyObject *args, int bound) {
    long long w;
    PyObject *path_o, *timeout_o = Py_None, *bytes = NULL;
    double timeout;
    if (!PyArg_ParseTuple(args, bound ? "LO|O:submit" : "LO|O:request", &w, &path_o, &timeout_o) ||
        check_worker(r, w) < 0 || ml_py_timeout_arg(timeout_o, &timeout) < 0)
        return NULL;
    PyObject *fs = PyOS_FSPath(path_o); /* str or bytes, as open() takes */
    if (!fs)
        return NULL;
    if (!PyUnicode_FSConverter(fs, &bytes)) { /* ValueError for an embedded NUL, as open() */
        Py_DECREF(fs);
        return NULL;
    }
    const char *p = PyBytes_AS_STRING(bytes);
    size_t len = (size_t)PyBytes_GET_SIZE(bytes);
    region_request_wait q = {.r = r, .w = (unsigned)w, .path = p, .len = len, .forever = timeout < 0,
                             .bound = bound};
    int rc;
    int waited = ml_py_wait_steps(timeout, region_request_step, NULL, &q, NULL, &rc);
    if (waited < 0)
        goto fail;
    unsigned entry = q.entry;
    uint64_t seq = q.seq;
    Py_DECREF(bytes);
    if (rc == 0) {
        /* Another thread may have taken the entry already (the GIL was
         * released): entry_new uses a path only for its own request number. */
        unsigned i = (unsigned)w * r->depth + entry;
        Py_XSETREF(r->paths[i], fs);
        r->path_seq[i] = seq;
        if (bound)
            return Py_BuildValue("(IK)", entry, (unsigned long long)seq);
        Py_RETURN_TRUE;
    }
    Py_DECREF(fs);
    if (rc == -EAGAIN || rc == -ETIMEDOUT) {
        if (bound)
            Py_RETURN_NONE;
        Py_RETURN_FALSE;
    }
    if (rc == -ML_ECLOSED) {
        PyErr_SetString(PyExc_RuntimeError, "this FileLoader is closed");
        return NULL;
    }
    if (rc == -ML_EDEADLOCK) {
        PyErr_Format(PyExc_RuntimeError,
                     "worker %lld has no free entry and only this thread could free one (every entry is "
                     "completed or held by it): take or release entries before a blocking request",
                     w);
        return NULL;
    }
    return raise_core(rc, "request");
fail:
    Py_DECREF(bytes);
    Py_DECREF(fs);
    return NULL;
}

static PyObject *region_request(FileRegionObject *r, PyObject *args) { return region_request_impl(r, args, 0); }

static PyObject *region_submit(FileRegionObject *r, PyObject *args) { return region_request_impl(r, args, 1); }

static PyObject *entry_new(FileRegionObject *r, unsigned w, const ml_fl_got *g);

typedef struct region_get_wait {
    FileRegionObject *r;   /* in a step only r->fl */
    unsigned w;
    int forever;
    ml_fl_got *got;        /* out */
    uint64_t t0_ns;        /* when the wait began: the grace for a loader that never serves */
    double grace;          /* seconds */
} region_get_wait;

static int region_get_step(void *arg, long ms) {
    region_get_wait *q = arg;
    return ml_floader_get(q->r->fl, q->w, ms, q->forever, q->got);
}

/* Between waits: is a loader serving (or has it died)? */
static int region_get_between(void *arg) {
    region_get_wait *q = arg;
    ml_error err;
    ml_error_clear(&err);
    int64_t waited = (int64_t)((ml_clock_now_ns() - q->t0_ns) / 1000000);
    int lrc;
    Py_BEGIN_ALLOW_THREADS
    lrc = ml_floader_check_server(q->r->fl, waited, (int64_t)(q->grace * 1000), &err);
    Py_END_ALLOW_THREADS
    if (lrc < 0) {
        raise_server(lrc, err.msg);
        return -1;
    }
    return 0;
}

/* get(worker, timeout, grace) -> FileEntry, None (nothing within timeout 0) or False (closed). */
static PyObject *region_get(FileRegionObject *r, PyObject *args) {
    long long w;
    PyObject *timeout_o = Py_None;
    double timeout, grace = 10.0;
    if (!PyArg_ParseTuple(args, "L|Od:get", &w, &timeout_o, &grace) || check_worker(r, w) < 0 ||
        ml_py_timeout_arg(timeout_o, &timeout) < 0)
        return NULL;
    ml_fl_got g;
    char what[64];
    snprintf(what, sizeof what, "file of worker %lld completed", w);
    region_get_wait q = {.r = r, .w = (unsigned)w, .forever = timeout < 0, .got = &g,
                         .t0_ns = ml_clock_now_ns(), .grace = grace};
    int rc;
    if (ml_py_wait_steps(timeout, region_get_step, region_get_between, &q, what, &rc) < 0)
        return NULL;
    if (rc == 0)
        return entry_new(r, (unsigned)w, &g);
    if (rc == -EAGAIN) {
        /* Nothing completed; a dead server is worth saying at once. */
        ml_error err;
        ml_error_clear(&err);
        int lrc;
        Py_BEGIN_ALLOW_THREADS
        lrc = ml_floader_check_server(r->fl, 0, 1, &err);
        Py_END_ALLOW_THREADS
        if (lrc == -EOWNERDEAD)
            return raise_server(lrc, err.msg);
        Py_RETURN_NONE;
    }
    if (rc == -ML_ECLOSED)
        Py_RETURN_FALSE;
    if (rc == -ML_EDEADLOCK) {
        PyErr_Format(PyExc_RuntimeError,
                     "worker %lld has nothing requested or loading: waiting for a file would never end", w);
        return NULL;
    }
    return raise_core(rc, "get");
}

typedef struct region_take_wait {
    region_get_wait g;     /* first: region_get_between reads it */
    unsigned entry;
    uint64_t seq;
} region_take_wait;

static int region_take_step(void *arg, long ms) {
    region_take_wait *q = arg;
    return ml_floader_take(q->g.r->fl, q->g.w, q->entry, q->seq, ms, q->g.got);
}

/* take(worker, entry, seq, timeout, grace) -> FileEntry of that submitted
 * request, None (not completed, timeout 0), False (closed) or True (it
 * was cancelled: nothing to take). */
static PyObject *region_take(FileRegionObject *r, PyObject *args) {
    long long w;
    unsigned entry;
    unsigned long long seq;
    PyObject *timeout_o = Py_None;
    double timeout, grace = 10.0;
    if (!PyArg_ParseTuple(args, "LIK|Od:take", &w, &entry, &seq, &timeout_o, &grace) || check_worker(r, w) < 0 ||
        ml_py_timeout_arg(timeout_o, &timeout) < 0)
        return NULL;
    if (entry >= r->depth) {
        PyErr_Format(PyExc_ValueError, "entry %u is out of range (queue_depth %u)", entry, r->depth);
        return NULL;
    }
    ml_fl_got g;
    char what[80];
    snprintf(what, sizeof what, "completion of file request %llu", seq);
    region_take_wait q = {.g = {.r = r, .w = (unsigned)w, .forever = timeout < 0, .got = &g,
                                .t0_ns = ml_clock_now_ns(), .grace = grace},
                          .entry = entry, .seq = seq};
    int rc;
    if (ml_py_wait_steps(timeout, region_take_step, region_get_between, &q, what, &rc) < 0)
        return NULL;
    if (rc == 0)
        return entry_new(r, (unsigned)w, &g);
    if (rc == -EAGAIN)
        Py_RETURN_NONE;
    if (rc == -ML_ECLOSED)
        Py_RETURN_FALSE;
    if (rc == -ECANCELED)
        Py_RETURN_TRUE;
    return raise_core(rc, "take");
}

static const char *status_name(int st) {
    switch (st) {
    case ML_FL_ST_QUEUED:
        return "queued";
    case ML_FL_ST_RUNNING:
        return "running";
    case ML_FL_ST_DONE:
        return "done";
    case ML_FL_ST_TAKEN:
        return "taken";
    case ML_FL_ST_CANCELLED:
        return "cancelled";
    default:
        return "gone";
    }
}

/* cancel() and status(): parse (worker, entry, seq), run op on that
 * request without the GIL (it takes the region's lock only) and name the
 * status it returns. */
static PyObject *entry_op(FileRegionObject *r, PyObject *args, const char *fmt,
                          int (*op)(ml_floader *, unsigned, unsigned, uint64_t)) {
    long long w;
    unsigned entry;
    unsigned long long seq;
    if (!PyArg_ParseTuple(args, fmt, &w, &entry, &seq) || check_worker(r, w) < 0)
        return NULL;
    int st;
    Py_BEGIN_ALLOW_THREADS
    st = op(r->fl, (unsigned)w, entry, seq);
    Py_END_ALLOW_THREADS
    if (st < 0) {
        PyErr_Format(PyExc_ValueError, "entry %u is out of range (queue_depth %u)", entry, r->depth);
        return NULL;
    }
    return PyUnicode_FromString(status_name(st));
}

/* cancel(worker, entry, seq) -> the status the request had: 'queued',
 * 'running' or 'done' (cancelled now), or 'taken', 'cancelled', 'gone'
 * (nothing changed). Takes the region's lock only. */
static PyObject *region_cancel(FileRegionObject *r, PyObject *args) {
    return entry_op(r, args, "LIK:cancel", ml_floader_cancel);
}

/* status(worker, entry, seq) -> as cancel() names them; never waits. */
static PyObject *region_status(FileRegionObject *r, PyObject *args) {
    return entry_op(r, args, "LIK:status", ml_floader_status);
}

/* cancel_pending(worker) -> how many queued requests of the worker were cancelled. */
static PyObject *region_cancel_pending(FileRegionObject *r, PyObject *arg) {
    long long w = PyLong_AsLongLong(arg);
    if (w == -1 && PyErr_Occurred())
        return NULL;
    if (check_worker(r, w) < 0)
        return NULL;
    int n;
    Py_BEGIN_ALLOW_THREADS
    n = ml_floader_cancel_pending(r->fl, (unsigned)w);
    Py_END_ALLOW_THREADS
    return PyLong_FromLong(n);
}

static PyObject *region_release(FileRegionObject *r, PyObject *args) {
    unsigned w, e;
    if (!PyArg_ParseTuple(args, "II:release", &w, &e))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    ml_floader_release(r->fl, w, e);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyObject *region_close(FileRegionObject *r, PyObject *Py_UNUSED(ignored)) {
    Py_BEGIN_ALLOW_THREADS
    ml_floader_close(r->fl);
    Py_END_ALLOW_THREADS
    region_stop_serving(r);
    Py_RETURN_NONE;
}

/* serve_start(n_threads, batch, direct, io_mode): loader threads in this process. */
static PyObject *region_serve_start(FileRegionObject *r, PyObject *args) {
    unsigned n_threads, batch;
    int direct, mode, budget_priority = 0;
    PyObject *budget_obj = Py_None;
    if (!PyArg_ParseTuple(args, "IIpi|Oi:serve_start", &n_threads, &batch, &direct, &mode, &budget_obj,
                          &budget_priority))
        return NULL;
    ml_budget *budget;
    if (ml_py_budget_arg(ml_state_of_type(Py_TYPE(r)), budget_obj, &budget) < 0)
        return NULL;
    if (n_threads < 1 || n_threads > 1024 || batch < 1 || batch > 256) {
        PyErr_Format(PyExc_ValueError, "n_threads must be 1..1024 (got %u) and dispatch_n 1..256 (got %u)",
                     n_threads, batch);
        return NULL;
    }
    if (r->serve && r->serve_pid == ml_py_pid()) {
        PyErr_SetString(PyExc_RuntimeError, "this FileLoader is already served by this process");
        return NULL;
    }
    ml_fserve_config cfg = {.n_threads = n_threads, .batch = batch, .direct = direct, .mode = (ml_io_mode)mode,
                            .budget = budget, .budget_priority = budget_priority};
    ml_fserve *s = NULL;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = ml_fserve_start(&s, r->fl, &cfg);
    Py_END_ALLOW_THREADS
    if (rc == -EBUSY) {
        ml_fl_stats st;
        Py_BEGIN_ALLOW_THREADS
        ml_floader_stats(r->fl, &st);
        Py_END_ALLOW_THREADS
        PyErr_Format(PyExc_RuntimeError, "this FileLoader is already served (by process %d)", st.server_pid);
        return NULL;
    }
    if (rc == -EOWNERDEAD) {
        PyErr_SetString(PyExc_RuntimeError,
                        "this FileLoader's loader died earlier; its entries are lost: make a new FileLoader");
        return NULL;
    }
    if (rc == -ML_ECLOSED) {
        PyErr_SetString(PyExc_RuntimeError, "this FileLoader is closed");
        return NULL;
    }
    if (rc < 0)
        return raise_core(rc, "starting the FileLoader's threads");
    r->serve = s;
    r->serve_pid = ml_py_pid();
    return PyUnicode_FromString(ml_fserve_mode(s) == ML_IO_URING ? "io_uring" : "pread");
}

static PyObject *region_serve_stop(FileRegionObject *r, PyObject *Py_UNUSED(ignored)) {
    region_stop_serving(r);
    Py_RETURN_NONE;
}

/* wait_event(timeout_s) -> bool closed: sleep until close or a server change. */
static PyObject *region_wait_event(FileRegionObject *r, PyObject *arg) {
    double t = PyFloat_AsDouble(arg);
    if (t == -1.0 && PyErr_Occurred())
        return NULL;
    long ms = t < 0 ? 0 : t > 3600 ? 3600000 : (long)(t * 1000);
    int closed;
    Py_BEGIN_ALLOW_THREADS
    closed = ml_floader_wait_event(r->fl, ms);
    Py_END_ALLOW_THREADS
    return PyBool_FromLong(closed);
}

/* event_fd() -> this handle's eventfd (borrowed: valid while the region lives). */
static PyObject *region_event_fd(FileRegionObject *r, PyObject *Py_UNUSED(ignored)) {
    int fd = ml_floader_event_fd(r->fl);
    if (fd < 0) {
        errno = -fd;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    return PyLong_FromLong(fd);
}

/* arm(): the next completion or close through this handle writes the event fd. */
static PyObject *region_arm(FileRegionObject *r, PyObject *Py_UNUSED(ignored)) {
    ml_floader_arm(r->fl);
    Py_RETURN_NONE;
}

/* outstanding(worker) -> entries of the worker requested or loading. */
static PyObject *region_outstanding(FileRegionObject *r, PyObject *arg) {
    long long w = PyLong_AsLongLong(arg);
    if (w == -1 && PyErr_Occurred())
        return NULL;
    if (check_worker(r, w) < 0)
        return NULL;
    unsigned n;
    Py_BEGIN_ALLOW_THREADS
    n = ml_floader_outstanding(r->fl, (unsigned)w);
    Py_END_ALLOW_THREADS
    return PyLong_FromUnsignedLong(n);
}

static PyObject *region_stats(FileRegionObject *r, PyObject *Py_UNUSED(ignored)) {
    ml_fl_stats s;
    Py_BEGIN_ALLOW_THREADS
    ml_floader_stats(r->fl, &s);
    Py_END_ALLOW_THREADS
    PyObject *d = Py_BuildValue("{sKsKsKsKsIsIsIsOsisOsOsKsKsKsI}", "requested", (unsigned long long)s.requested, "completed",
                         (unsigned long long)s.completed, "failed", (unsigned long long)s.failed, "bytes",
                         (unsigned long long)s.bytes, "in_flight", s.in_flight, "ready", s.ready, "unreleased",
                         s.unreleased, "serving", s.serving ? Py_True : Py_False, "server_pid", s.server_pid,
                         "server_dead", s.server_dead ? Py_True : Py_False, "closed",
                         s.closed ? Py_True : Py_False, "direct_fallbacks",
                         (unsigned long long)s.direct_fallbacks, "cancelled", (unsigned long long)s.cancelled,
                         "abandoned", (unsigned long long)s.abandoned, "abandoning", s.abandoning);
    ml_budget_stats bst;
    if (d && r->serve && r->serve_pid == ml_py_pid() && ml_fserve_budget_stats(r->serve, &bst) == 0) {
        PyObject *b = ml_py_budget_stats_dict(&bst); /* this process's loader threads are budgeted */
        if (!b || PyDict_SetItemString(d, "budget", b) < 0)
            Py_CLEAR(d);
        Py_XDECREF(b);
    }
    return d;
}

static PyObject *region_get_fd(FileRegionObject *r, void *c) {
    (void)c;
    return PyLong_FromLong(ml_floader_fd(r->fl));
}

static PyObject *region_get_geometry(FileRegionObject *r, void *c) {
    (void)c;
    return Py_BuildValue("(IKI)", ml_floader_queue_depth(r->fl), (unsigned long long)ml_floader_max_file_size(r->fl),
                         ml_floader_n_workers(r->fl));
}

static PyObject *region_get_serving_here(FileRegionObject *r, void *c) {
    (void)c;
    return PyBool_FromLong(r->serve != NULL && r->serve_pid == ml_py_pid());
}

static PyMethodDef region_methods[] = {
    {"attach", (PyCFunction)region_attach, METH_O | METH_CLASS,
     "attach(fd) -> FileRegion: map the region behind fd (validated; fd stays the caller's)."},
    {"request", (PyCFunction)region_request, METH_VARARGS,
     "request(worker, path, timeout=None) -> bool: queue path; False when no entry freed in time."},
    {"submit", (PyCFunction)region_submit, METH_VARARGS,
     "submit(worker, path, timeout=None) -> (entry, seq) of a request only take() returns, or None."},
    {"take", (PyCFunction)region_take, METH_VARARGS,
     "take(worker, entry, seq, timeout=None, grace=10.0) -> FileEntry, None (not yet, timeout 0), False "
     "(closed) or True (cancelled)."},
    {"cancel", (PyCFunction)region_cancel, METH_VARARGS,
     "cancel(worker, entry, seq) -> 'queued'|'running'|'done' (cancelled now) or 'taken'|'cancelled'|'gone'."},
    {"status", (PyCFunction)region_status, METH_VARARGS,
     "status(worker, entry, seq) -> 'queued'|'running'|'done'|'taken'|'cancelled'|'gone'."},
    {"cancel_pending", (PyCFunction)region_cancel_pending, METH_O,
     "cancel_pending(worker) -> number of queued requests of the worker cancelled."},
    {"get", (PyCFunction)region_get, METH_VARARGS,
     "get(worker, timeout=None, grace=10.0) -> FileEntry, None (nothing, timeout 0) or False (closed)."},
    {"release", (PyCFunction)region_release, METH_VARARGS, "release(worker, entry): give a taken entry back."},
    {"close", (PyCFunction)region_close, METH_NOARGS, "Close the region for every process; stop this process's threads."},
    {"serve_start", (PyCFunction)region_serve_start, METH_VARARGS,
     "serve_start(n_threads, batch, direct, io_mode, budget=None, budget_priority=0) -> engine: loader threads "
     "in this process."},
    {"serve_stop", (PyCFunction)region_serve_stop, METH_NOARGS, "Stop and join this process's loader threads."},
    {"wait_event", (PyCFunction)region_wait_event, METH_O,
     "wait_event(timeout_s) -> closed: sleep until close or a server change (or the timeout)."},
    {"stats", (PyCFunction)region_stats, METH_NOARGS, "Counters and entry states, as a dict."},
    {"event_fd", (PyCFunction)region_event_fd, METH_NOARGS,
     "event_fd() -> this handle's eventfd (borrowed), written after arm() by the next completion or close\n"
     "through this handle (loader threads of this process)."},
    {"arm", (PyCFunction)region_arm, METH_NOARGS, "arm(): have the next completion or close write the event fd."},
    {"outstanding", (PyCFunction)region_outstanding, METH_O,
     "outstanding(worker) -> entries of the worker requested or loading."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef region_getset[] = {
    {"fd", (getter)region_get_fd, NULL, "The region's memfd (borrowed).", NULL},
    {"geometry", (getter)region_get_geometry, NULL, "(queue_depth, max_file_size, n_workers).", NULL},
    {"serving_here", (getter)region_get_serving_here, NULL, "Loader threads of this handle run in this process.",
     NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot region_slots[] = {
    {Py_tp_new, region_new},
    {Py_tp_dealloc, region_dealloc},
    {Py_tp_traverse, region_traverse},
    {Py_tp_clear, region_clear},
    {Py_tp_methods, region_methods},
    {Py_tp_getset, region_getset},
    {Py_tp_doc, "The whole-file loader's shared region (multiload.FileLoader wraps it)."},
    {0, NULL},
};

static PyType_Spec region_spec = {
    .name = "multiload._core.FileRegion",
    .basicsize = sizeof(FileRegionObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .slots = region_slots,
};

/* ---- FileEntry ------------------------------------------------------------ */

static PyObject *entry_new(FileRegionObject *r, unsigned w, const ml_fl_got *g) {
    ml_module_state *st = ml_state_of_type(Py_TYPE(r));
    FileEntryObject *e = PyObject_New(FileEntryObject, st->file_entry_type);
    if (!e) {
        Py_BEGIN_ALLOW_THREADS
        ml_floader_release(r->fl, w, g->entry);
        Py_END_ALLOW_THREADS
        return NULL;
    }
    Py_INCREF(r);
    e->region = r;
    e->worker = w;
    e->entry = g->entry;
    e->seq = g->seq;
    e->data = g->data;
    e->size = (Py_ssize_t)g->size;
    e->code = g->error.code;
    e->msg = NULL;
    e->path = NULL;
    e->pid = ml_py_pid();
    e->released = 0;
    e->exports = 0;
    unsigned i = w * r->depth + g->entry;
    if (r->paths[i] && r->path_seq[i] == g->seq) {
        e->path = r->paths[i]; /* the handle's reference moves to the entry */
        r->paths[i] = NULL;
    } else {
        char buf[ML_FL_PATH_BYTES];
        int n;
        ml_floader *fl = r->fl;
        unsigned k = g->entry;
        Py_BEGIN_ALLOW_THREADS
        n = ml_floader_entry_path(fl, w, k, buf, sizeof buf);
        Py_END_ALLOW_THREADS
        e->path = PyUnicode_DecodeFSDefaultAndSize(buf, n < 0 ? 0 : n);
    }
    if (e->code)
        e->msg = PyUnicode_DecodeUTF8(g->error.msg, (Py_ssize_t)strlen(g->error.msg), "replace");
    if (!e->path || (e->code && !e->msg)) {
        Py_DECREF(e);
        return NULL;
    }
    return (PyObject *)e;
}

static void entry_release_slot(FileEntryObject *e) {
    if (e->released)
        return;
    e->released = 1;
    if (e->pid != ml_py_pid())
        return; /* forked child: the slot is the parent's */
    ml_floader *fl = e->region->fl;
    unsigned w = e->worker, k = e->entry;
    Py_BEGIN_ALLOW_THREADS
    ml_floader_release(fl, w, k);
    Py_END_ALLOW_THREADS
}

static void entry_dealloc(FileEntryObject *e) {
    PyTypeObject *tp = Py_TYPE(e);
    if (e->region)
        entry_release_slot(e);
    Py_XDECREF(e->path);
    Py_XDECREF(e->msg);
    Py_XDECREF(e->region);
    PyObject_Free(e);
    Py_DECREF(tp);
}

/* Raise the entry's OSError (errno, message, path). Returns NULL. */
static PyObject *entry_raise(FileEntryObject *e) {
    PyObject *exc = PyObject_CallFunction(PyExc_OSError, "iOO", -e->code, e->msg, e->path);
    if (exc) {
        PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
        Py_DECREF(exc);
    }
    return NULL;
}

/* 0 if the entry's bytes may be handed out, else -1 with the exception set. */
static int entry_check(FileEntryObject *e) {
    if (e->released) {
        PyErr_SetString(PyExc_RuntimeError, "this entry was already released; its slot may hold another file now");
        return -1;
    }
    if (e->code) {
        entry_raise(e);
        return -1;
    }
    return 0;
}

static PyObject *entry_get_data(FileEntryObject *e, PyObject *Py_UNUSED(ignored)) {
    if (entry_check(e) < 0)
        return NULL;
    return PyBytes_FromStringAndSize(e->data, e->size);
}

static PyObject *entry_view(FileEntryObject *e, PyObject *Py_UNUSED(ignored)) {
    return PyMemoryView_FromObject((PyObject *)e);
}

static PyObject *entry_get_array(FileEntryObject *e, void *c) {
    (void)c;
    if (entry_check(e) < 0)
        return NULL;
    npy_intp dims[1] = {e->size};
    PyObject *arr = PyArray_New(&PyArray_Type, 1, dims, NPY_UINT8, NULL, e->data, 0, NPY_ARRAY_CARRAY, NULL);
    if (!arr)
        return NULL;
    Py_INCREF(e);
    if (PyArray_SetBaseObject((PyArrayObject *)arr, (PyObject *)e) < 0) {
        Py_DECREF(arr);
        return NULL;
    }
    return arr;
}

static PyObject *entry_get_filepath(FileEntryObject *e, PyObject *Py_UNUSED(ignored)) {
    Py_INCREF(e->path);
    return e->path;
}

static PyObject *entry_release(FileEntryObject *e, PyObject *Py_UNUSED(ignored)) {
    entry_release_slot(e);
    Py_RETURN_NONE;
}

static PyObject *entry_enter(FileEntryObject *e, PyObject *Py_UNUSED(ignored)) {
    Py_INCREF(e);
    return (PyObject *)e;
}

static PyObject *entry_exit(FileEntryObject *e, PyObject *args) {
    (void)args;
    entry_release_slot(e);
    Py_RETURN_FALSE;
}

static PyObject *entry_get_error(FileEntryObject *e, void *c) {
    (void)c;
    if (!e->code)
        Py_RETURN_NONE;
    return PyObject_CallFunction(PyExc_OSError, "iOO", -e->code, e->msg, e->path);
}

static PyObject *entry_get_ok(FileEntryObject *e, void *c) {
    (void)c;
    return PyBool_FromLong(e->code == 0);
}

static PyObject *entry_get_size(FileEntryObject *e, void *c) {
    (void)c;
    return PyLong_FromSsize_t(e->code ? 0 : e->size);
}

static PyObject *entry_get_released(FileEntryObject *e, void *c) {
    (void)c;
    return PyBool_FromLong(e->released);
}

static PyObject *entry_get_index(FileEntryObject *e, void *c) {
    (void)c;
    return PyLong_FromUnsignedLongLong(e->seq);
}

static PyObject *entry_repr(FileEntryObject *e) {
    if (e->code)
        return PyUnicode_FromFormat("<multiload Entry %R failed: %U%s>", e->path, e->msg,
                                    e->released ? " released" : "");
    return PyUnicode_FromFormat("<multiload Entry %R %zd bytes%s>", e->path, e->size, e->released ? " released" : "");
}

static int entry_getbuffer(FileEntryObject *e, Py_buffer *view, int flags) {
    if (entry_check(e) < 0) {
        view->obj = NULL;
        return -1;
    }
    if (PyBuffer_FillInfo(view, (PyObject *)e, e->data, e->size, 0, flags) < 0)
        return -1;
    e->exports++;
    return 0;
}

static void entry_releasebuffer(FileEntryObject *e, Py_buffer *view) {
    (void)view;
    e->exports--;
}

static PyMethodDef entry_methods[] = {
    {"get_filepath", (PyCFunction)entry_get_filepath, METH_NOARGS, "The path as requested (str or bytes)."},
    {"get_data", (PyCFunction)entry_get_data, METH_NOARGS,
     "The file's bytes (a copy). Raises OSError (errno, message, path) for a failed entry."},
    {"view", (PyCFunction)entry_view, METH_NOARGS,
     "A zero-copy memoryview of the file's bytes, valid until release (after it: stale bytes, never unmapped)."},
    {"release", (PyCFunction)entry_release, METH_NOARGS, "Give the slot back (idempotent)."},
    {"__enter__", (PyCFunction)entry_enter, METH_NOARGS, "Return the entry."},
    {"__exit__", (PyCFunction)entry_exit, METH_VARARGS, "Release the entry."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef entry_getset[] = {
    {"array", (getter)entry_get_array, NULL, "The file's bytes as a zero-copy numpy uint8 array (until release).",
     NULL},
    {"error", (getter)entry_get_error, NULL, "The entry's OSError, or None.", NULL},
    {"ok", (getter)entry_get_ok, NULL, "True unless the entry failed.", NULL},
    {"size", (getter)entry_get_size, NULL, "Bytes of the file (0 for a failed entry).", NULL},
    {"released", (getter)entry_get_released, NULL, "True once released.", NULL},
    {"index", (getter)entry_get_index, NULL, "The request's number, counted over the loader from 0.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot entry_slots[] = {
    {Py_tp_dealloc, entry_dealloc},
    {Py_tp_methods, entry_methods},
    {Py_tp_getset, entry_getset},
    {Py_tp_repr, entry_repr},
    {Py_bf_getbuffer, entry_getbuffer},
    {Py_bf_releasebuffer, entry_releasebuffer},
    {Py_tp_doc, "One completed file of a FileLoader worker: bytes or the error, until release."},
    {0, NULL},
};

static PyType_Spec entry_spec = {
    .name = "multiload._core.FileEntry",
    .basicsize = sizeof(FileEntryObject),
    /* Not GC-tracked (as Guard): an entry references only its region, which
     * never references entries, and strings, so it can be in no cycle; one
     * entry per file would otherwise feed the collector's generations. */
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = entry_slots,
};

int ml_py_add_file_loader_types(PyObject *m, ml_module_state *st) {
    st->file_region_type = (PyTypeObject *)PyType_FromModuleAndSpec(m, &region_spec, NULL);
    if (!st->file_region_type || PyModule_AddType(m, st->file_region_type) < 0)
        return -1;
    st->file_entry_type = (PyTypeObject *)PyType_FromModuleAndSpec(m, &entry_spec, NULL);
    if (!st->file_entry_type || PyModule_AddType(m, st->file_entry_type) < 0)
        return -1;
    return 0;
}
