/* reader_type.c - ReaderCore and Request: the binding of src/reader.c.
 *
 * ReaderCore.submit() queues rows of a Layout into a writable buffer
 * (the stage) and returns a Request. The Request holds the buffer (a
 * Py_buffer export) and the layout, so the memory the workers write into
 * outlives them. Its dealloc never waits: it cancels a queued request, and
 * if a thread may still write the buffer (ml_request_busy: running, or
 * failed by stop() while its read is in flight) it hands the export to
 * the ReaderCore (an "orphan"), which releases it once the request lets
 * go of it: orphans are swept at every submit and notification poll and
 * when the core is freed. One still busy then (a worker detached in a
 * read that never returns) is leaked, never freed under the worker.
 * A wait first offers the waiting thread to the engine (ml_reader_help:
 * work on the request here, but only work that never waits for a device),
 * then releases the GIL in <= 100 ms steps and runs signal handlers in
 * between, so Ctrl-C interrupts a blocked get() and a timeout is kept.
 *
 * After fork() the child has the reader's memory but none of its worker
 * threads, and their locks may have been held at fork: a reader or request
 * from the parent raises RuntimeError in the child and is leaked, never
 * waited for (which would hang) or freed (which could deadlock).
 */
#include "ml_python.h"

#include <errno.h>
#include <time.h>
#include <unistd.h>

#include "../reader.h"

/* A dropped Request's destination, kept until no thread writes it. */
typedef struct orphan {
    struct orphan *next;
    ml_request *q;           /* owned reference */
    Py_buffer view;          /* owned export of the destination */
} orphan;

typedef struct ReaderCoreObject {
    PyObject_HEAD
    ml_reader *r;            /* owned */
    pid_t pid;               /* process that started the workers */
    orphan *orphans;         /* owned list; touched with the GIL held */
} ReaderCoreObject;

typedef struct RequestObject {
    PyObject_HEAD
    ml_request *q;           /* owned reference */
    PyObject *reader;        /* owned: keeps the core reader alive for cancel */
    PyObject *layout;        /* owned */
    Py_buffer view;          /* the destination, exported until dealloc */
    int have_view;
    pid_t pid;               /* process that submitted it */
} RequestObject;

static int forked(pid_t pid) {
    if (pid == ml_py_pid())
        return 0;
    PyErr_SetString(PyExc_RuntimeError,
                    "this multiload Reader was created in another process (before fork()); "
                    "create a new Reader in this process");
    return 1;
}

/* ReaderCore(*, n_workers, io_mode=IO_AUTO, cache_bytes=0, inline_reads=False, cache_budget=0) */
static PyObject *core_new(PyTypeObject *tp, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"n_workers", "io_mode", "cache_bytes", "inline_reads", "cache_budget",
                             "budget", "budget_priority", NULL};
    PyObject *n_workers_obj = NULL, *budget_obj = Py_None;
    int io_mode = ML_IO_AUTO, inline_reads = 0, budget_priority = 0;
    unsigned long long cache_bytes = 0, cache_budget = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|$OiKpKOi:ReaderCore", kwlist, &n_workers_obj, &io_mode,
                                     &cache_bytes, &inline_reads, &cache_budget, &budget_obj, &budget_priority))
        return NULL;
    ml_budget *budget;
    if (ml_py_budget_arg(ml_state_of_type(tp), budget_obj, &budget) < 0)
        return NULL;
    if (!n_workers_obj) {
        PyErr_SetString(PyExc_TypeError, "ReaderCore() missing required keyword argument 'n_workers'");
        return NULL;
    }
    unsigned n_workers = (unsigned)PyLong_AsUnsignedLongMask(n_workers_obj); /* "I": no overflow check */
    if (PyErr_Occurred())
        return NULL;
    if (n_workers < 1) {
        PyErr_SetString(PyExc_ValueError, "n_workers must be >= 1");
        return NULL;
    }
    if (io_mode != ML_IO_AUTO && io_mode != ML_IO_URING && io_mode != ML_IO_PREAD) {
        PyErr_Format(PyExc_ValueError, "io_mode must be IO_AUTO, IO_URING or IO_PREAD, got %d", io_mode);
        return NULL;
    }
    ReaderCoreObject *self = (ReaderCoreObject *)tp->tp_alloc(tp, 0);
    if (!self)
        return NULL;
    self->pid = ml_py_pid();
    ml_reader_config cfg = {.n_workers = n_workers, .io_mode = (ml_io_mode)io_mode,
                            .cache_bytes = (size_t)cache_bytes, .cache_budget = (size_t)cache_budget,
                            .inline_reads = inline_reads, .budget = budget, .budget_priority = budget_priority};
    ml_error err;
    ml_error_clear(&err);
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = ml_reader_open(&self->r, &cfg, &err);
    Py_END_ALLOW_THREADS
    if (rc < 0) {
        Py_DECREF(self);
        return ml_py_raise(&err, NULL);
    }
    return (PyObject *)self;
}

/* Release the orphans no thread writes any more. forget=1 (the reader is
 * gone): drop the rest too, but leak their exports, since a detached
 * worker may still write them. */
static void core_sweep(ReaderCoreObject *self, int forget) {
    orphan **pp = &self->orphans;
    while (*pp) {
        orphan *o = *pp;
        int busy = ml_request_busy(o->q);
        if (busy && !forget) {
            pp = &o->next;
            continue;
        }
        *pp = o->next;
        if (!busy)
            PyBuffer_Release(&o->view);
        ml_request_free(o->q);
        PyMem_Free(o);
    }
}

static void core_dealloc(ReaderCoreObject *self) {
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    if (self->r && self->pid != ml_py_pid()) {
        self->r = NULL; /* forked child: leak the parent's reader rather than deadlock */
        self->orphans = NULL;
    }
    if (self->r) {
        ml_reader *r = self->r;
        self->r = NULL;
        Py_BEGIN_ALLOW_THREADS
        ml_reader_free(r); /* waits at most ~0.5 s from the stop */
        Py_END_ALLOW_THREADS
    }
    core_sweep(self, 1);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static int core_traverse(ReaderCoreObject *self, visitproc visit, void *arg) {
    Py_VISIT(Py_TYPE(self));
    return 0;
}

/* submit()'s keywords. A hand-written METH_FASTCALL parser: no dict and
 * no string made per call (submit is on every request's path). */
enum { KW_ROWS, KW_ROW0, KW_N, KW_COL_OFFSET, KW_COL_SIZE, KW_DEST, KW_TAG, KW_NOTIFY, KW_WRAP, N_SUBMIT_KW };
static const char *const submit_kw[N_SUBMIT_KW] = {"rows", "row0", "n", "col_offset", "col_size",
                                                   "dest", "tag", "notify", "wrap"};
_Static_assert(N_SUBMIT_KW == ML_PY_N_SUBMIT_KW, "ml_module_state.submit_kw holds each keyword");

/* Sort the keyword arguments of one call into vals[KW_*] (borrowed; NULL
 * where not given). 0, or -1 with TypeError set. */
static int submit_parse(ml_module_state *st, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
                        PyObject **vals) {
    if (nargs != 1) {
        PyErr_Format(PyExc_TypeError, "submit() takes exactly 1 positional argument (%zd given)", nargs);
        return -1;
    }
    Py_ssize_t n_kw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    for (Py_ssize_t i = 0; i < n_kw; i++) {
        PyObject *name = PyTuple_GET_ITEM(kwnames, i);
        /* Names in code are interned: try their identity first, at the
         * place the documented order puts them, then the rest. */
        int k = i < N_SUBMIT_KW && name == st->submit_kw[i] ? (int)i : 0;
        while (k < N_SUBMIT_KW && name != st->submit_kw[k])
            k++;
        if (k == N_SUBMIT_KW) {
            k = 0;
            while (k < N_SUBMIT_KW && PyUnicode_CompareWithASCIIString(name, submit_kw[k]) != 0)
                k++;
        }
        if (k == N_SUBMIT_KW) {
            PyErr_Format(PyExc_TypeError, "submit() got an unexpected keyword argument '%U'", name);
            return -1;
        }
        if (vals[k]) {
            PyErr_Format(PyExc_TypeError, "submit() got multiple values for argument '%s'", submit_kw[k]);
            return -1;
        }
        vals[k] = args[nargs + i];
    }
    static const int required[] = {KW_N, KW_DEST};
    for (size_t i = 0; i < sizeof required / sizeof required[0]; i++) {
        if (!vals[required[i]]) {
            PyErr_Format(PyExc_TypeError, "submit() missing required keyword argument '%s'",
                         submit_kw[required[i]]);
            return -1;
        }
    }
    return 0;
}

/* An unsigned keyword value as "K" reads it (no overflow check); absent: dflt. */
static int kw_u64(PyObject *o, unsigned long long dflt, unsigned long long *out) {
    *out = o ? PyLong_AsUnsignedLongLongMask(o) : dflt;
    return o && PyErr_Occurred() ? -1 : 0;
}

/* A Py_ssize_t keyword value as "n" reads it; absent: 0. */
static int kw_ssize(PyObject *o, Py_ssize_t *out) {
    *out = o ? PyNumber_AsSsize_t(o, PyExc_OverflowError) : 0;
    return o && *out == -1 && PyErr_Occurred() ? -1 : 0;
}

/* A truth keyword value as "p" reads it; absent: 0. */
static int kw_bool(PyObject *o, int *out) {
    *out = o ? PyObject_IsTrue(o) : 0;
    return *out < 0 ? -1 : 0;
}

/* submit(layout, *, rows=None, row0=0, n, col_offset=0, col_size=0, dest, tag=0, notify=False, wrap=False) */
static PyObject *core_submit(ReaderCoreObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    ml_module_state *st = ml_state_of_type(Py_TYPE(self));
    PyObject *vals[N_SUBMIT_KW] = {NULL};
    if (submit_parse(st, args, nargs, kwnames, vals) < 0)
        return NULL;
    PyObject *layout = args[0], *rows_obj = vals[KW_ROWS] ? vals[KW_ROWS] : Py_None, *dest = vals[KW_DEST];
    unsigned long long row0, n, tag;
    Py_ssize_t col_offset, col_size;
    int notify, wrap;
    if (kw_u64(vals[KW_ROW0], 0, &row0) < 0 || kw_u64(vals[KW_N], 0, &n) < 0 ||
        kw_ssize(vals[KW_COL_OFFSET], &col_offset) < 0 || kw_ssize(vals[KW_COL_SIZE], &col_size) < 0 ||
        kw_u64(vals[KW_TAG], 0, &tag) < 0 || kw_bool(vals[KW_NOTIFY], &notify) < 0 ||
        kw_bool(vals[KW_WRAP], &wrap) < 0)
        return NULL;
    if (!PyObject_TypeCheck(layout, st->layout_type)) {
        PyErr_SetString(PyExc_TypeError, "submit() needs a Layout");
        return NULL;
    }
    if (!self->r) {
        PyErr_SetString(PyExc_RuntimeError, "the reader is closed");
        return NULL;
    }
    if (forked(self->pid))
        return NULL;
    if (self->orphans)
        core_sweep(self, 0);
    PyArray_Descr *descr;
    ml_layout *L = ml_py_layout_core(layout, &descr);
    PyArrayObject *rows = NULL;
    if (rows_obj != Py_None) {
        rows = (PyArrayObject *)PyArray_FROMANY(rows_obj, NPY_INT64, 1, 1, NPY_ARRAY_CARRAY_RO) /* negatives read as huge: refused as out of range */;
        if (!rows)
            return NULL;
        n = (unsigned long long)PyArray_DIM(rows, 0);
    }
    RequestObject *req = PyObject_GC_New(RequestObject, st->request_type);
    if (!req) {
        Py_XDECREF(rows);
        return NULL;
    }
    req->q = NULL;
    req->have_view = 0;
    req->pid = ml_py_pid();
    Py_INCREF(self);
    req->reader = (PyObject *)self;
    Py_INCREF(layout);
    req->layout = layout;
    PyObject_GC_Track(req);
    if (PyObject_GetBuffer(dest, &req->view, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0) {
        Py_XDECREF(rows);
        Py_DECREF(req);
        return NULL;
    }
    req->have_view = 1;
    ml_request_spec spec = {.L = L, .rows = rows ? (const uint64_t *)PyArray_DATA(rows) : NULL,
                            .row0 = row0, .n_rows = n, .col_offset = (size_t)col_offset,
                            .col_size = (size_t)col_size, .dest = req->view.buf,
                            .dest_bytes = (size_t)req->view.len, .tag = tag, .notify = notify,
                            .wrap = wrap};
    ml_error err;
    ml_error_clear(&err);
    int rc;
    ml_reader *r = self->r;
    if (n <= 4096) {
        rc = ml_request_submit(r, &spec, &req->q, &err);
    } else {
        Py_BEGIN_ALLOW_THREADS
        rc = ml_request_submit(r, &spec, &req->q, &err);
        Py_END_ALLOW_THREADS
    }
    Py_XDECREF(rows);
    if (rc < 0) {
        Py_DECREF(req);
        if (err.code == 0)
            err.code = rc;
        return ml_py_raise_at(ML_PY_SUBMIT, &err, L->filename);
    }
    return (PyObject *)req;
}

/* read_now(layout, row0, n, dest) -> True when dest (a writable C-contiguous
 * buffer) holds rows row0..row0+n, read on this thread with the GIL held
 * (a small read from a local view or the page cache: no request, no
 * worker); False for anything it does not do (then submit). */
static PyObject *core_read_now(ReaderCoreObject *self, PyObject *const *args, Py_ssize_t nargs) {
    ml_module_state *st = ml_state_of_type(Py_TYPE(self));
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "read_now(layout, row0, n, dest) takes 4 arguments");
        return NULL;
    }
    if (!PyObject_TypeCheck(args[0], st->layout_type)) {
        PyErr_SetString(PyExc_TypeError, "read_now() needs a Layout");
        return NULL;
    }
    unsigned long long row0 = PyLong_AsUnsignedLongLong(args[1]), n = PyLong_AsUnsignedLongLong(args[2]);
    if (PyErr_Occurred()) {
        PyErr_Clear();
        Py_RETURN_FALSE; /* negative or not an int: the usual path says what is wrong */
    }
    if (!self->r || self->pid != ml_py_pid())
        Py_RETURN_FALSE;
    Py_buffer view;
    if (PyObject_GetBuffer(args[3], &view, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0)
        return NULL;
    PyArray_Descr *descr;
    ml_layout *L = ml_py_layout_core(args[0], &descr);
    int rc = ml_reader_read_now(self->r, L, row0, n, view.buf, (size_t)view.len);
    PyBuffer_Release(&view);
    return PyBool_FromLong(rc == 0);
}

/* shutdown(drain, wait=0.0) -> True once every worker has left */
static PyObject *core_shutdown(ReaderCoreObject *self, PyObject *args) {
    int drain;
    double wait = 0;
    if (!PyArg_ParseTuple(args, "p|d:shutdown", &drain, &wait))
        return NULL;
    if (self->r && self->pid != ml_py_pid()) {
        self->r = NULL; /* forked child: just forget the parent's reader */
        self->orphans = NULL;
    }
    int rc = 0;
    if (self->r) {
        ml_reader *r = self->r;
        Py_BEGIN_ALLOW_THREADS
        ml_reader_shutdown(r, drain);
        rc = ml_reader_join(r, (long)(wait * 1000));
        Py_END_ALLOW_THREADS
        core_sweep(self, 0);
    }
    return PyBool_FromLong(rc == 0);
}

/* join(timeout) -> True once every worker has left (after shutdown) */
static PyObject *core_join(ReaderCoreObject *self, PyObject *args) {
    double timeout;
    if (!PyArg_ParseTuple(args, "d:join", &timeout))
        return NULL;
    if (!self->r || self->pid != ml_py_pid())
        Py_RETURN_TRUE;
    ml_reader *r = self->r;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = ml_reader_join(r, timeout < 0 ? -1 : (long)(timeout * 1000));
    Py_END_ALLOW_THREADS
    core_sweep(self, 0);
    return PyBool_FromLong(rc == 0);
}

static PyObject *core_pop_done(ReaderCoreObject *self, PyObject *args) {
    double timeout;
    if (!PyArg_ParseTuple(args, "d:pop_done", &timeout))
        return NULL;
    if (!self->r || self->pid != ml_py_pid())
        Py_RETURN_NONE;
    if (self->orphans)
        core_sweep(self, 0);
    uint64_t tags[256];
    int n;
    ml_reader *r = self->r;
    Py_BEGIN_ALLOW_THREADS
    n = ml_reader_pop_done(r, (long)(timeout * 1000), tags, 256);
    Py_END_ALLOW_THREADS
    if (n == -ML_ECLOSED)
        Py_RETURN_NONE;
    PyObject *l = PyList_New(n);
    for (int i = 0; l && i < n; i++)
        PyList_SET_ITEM(l, i, PyLong_FromUnsignedLongLong(tags[i]));
    return l;
}

/* event_fd() -> the reader's eventfd (borrowed: valid while this core
 * lives), written when an armed request completes and at shutdown. */
static PyObject *core_event_fd(ReaderCoreObject *self, PyObject *Py_UNUSED(ignored)) {
    if (!self->r) {
        PyErr_SetString(PyExc_RuntimeError, "the reader is closed");
        return NULL;
    }
    if (forked(self->pid))
        return NULL;
    int fd = ml_reader_event_fd(self->r);
    if (fd < 0) {
        errno = -fd;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    return PyLong_FromLong(fd);
}

/* pop_armed() -> [tags] of armed requests that completed (never waits). */
static PyObject *core_pop_armed(ReaderCoreObject *self, PyObject *Py_UNUSED(ignored)) {
    PyObject *l = PyList_New(0);
    if (!l || !self->r || self->pid != ml_py_pid())
        return l;
    if (self->orphans)
        core_sweep(self, 0);
    uint64_t tags[64];
    size_t n;
    do {
        n = ml_reader_pop_armed(self->r, tags, 64);
        for (size_t i = 0; i < n; i++) {
            PyObject *t = PyLong_FromUnsignedLongLong(tags[i]);
            if (!t || PyList_Append(l, t) < 0) {
                Py_XDECREF(t);
                Py_DECREF(l);
                return NULL; /* (the tags taken are lost: their waiters look again at the next event) */
            }
            Py_DECREF(t);
        }
    } while (n == 64);
    return l;
}

static PyObject *core_stats(ReaderCoreObject *self, PyObject *Py_UNUSED(ignored)) {
    ml_reader_stats s = {0};
    if (self->r)
        ml_reader_get_stats(self->r, &s);
    PyObject *d = Py_BuildValue("{sKsKsKsKsKsKsKsKsKsKsKsKsK}", "requests", (unsigned long long)s.requests, "rows",
                         (unsigned long long)s.rows, "cache_hits", (unsigned long long)s.cache_hits,
                         "cache_misses", (unsigned long long)s.cache_misses,
                         "cache_evictions", (unsigned long long)s.cache_evictions,
                         "cache_bytes", (unsigned long long)s.cache_bytes,
                         "cache_limit", (unsigned long long)s.cache_limit,
                         "cache_wanted", (unsigned long long)s.cache_wanted,
                         "parallel", (unsigned long long)s.parallel, "helped", (unsigned long long)s.helped,
                         "batched", (unsigned long long)s.batched, "inlined", (unsigned long long)s.inlined,
                         "mapped", (unsigned long long)s.mapped);
    ml_budget_stats bst;
    if (d && self->r && ml_reader_budget_stats(self->r, &bst) == 0) { /* a budgeted reader: "budget" too */
        PyObject *b = ml_py_budget_stats_dict(&bst);
        if (!b || PyDict_SetItemString(d, "budget", b) < 0)
            Py_CLEAR(d);
        Py_XDECREF(b);
    }
    return d;
}

static PyMethodDef core_methods[] = {
    {"submit", (PyCFunction)(void (*)(void))core_submit, METH_FASTCALL | METH_KEYWORDS,
     "submit(layout, *, rows=None, row0=0, n, col_offset=0, col_size=0, dest, tag=0, notify=False, wrap=False)\n"
     "-> Request: rows (int64 indices) or rows row0..row0+n, bytes col_offset..+col_size of each\n"
     "(col_size 0: whole rows), into the writable buffer dest. tag: reported by pop_done() when\n"
     "notify. wrap: negative rows count from the end (numpy's rule)."},
    {"read_now", (PyCFunction)(void (*)(void))core_read_now, METH_FASTCALL,
     "read_now(layout, row0, n, dest) -> bool: rows row0..row0+n read into dest now, on this thread,\n"
     "if they are a small cached range (no request); False: submit instead."},
    {"shutdown", (PyCFunction)core_shutdown, METH_VARARGS,
     "shutdown(drain, wait=0.0) -> bool: refuse new requests; drain=False fails the queued and running ones.\n"
     "Waits up to `wait` seconds for the workers to leave; True if they have."},
    {"join", (PyCFunction)core_join, METH_VARARGS,
     "join(timeout) -> bool: wait up to timeout seconds (<0: forever) for the workers to leave."},
    {"pop_done", (PyCFunction)core_pop_done, METH_VARARGS,
     "pop_done(timeout) -> [tags] of finished notify-requests ([] on timeout, None once closed)."},
    {"event_fd", (PyCFunction)core_event_fd, METH_NOARGS,
     "event_fd() -> the reader's eventfd (borrowed), written when an armed request completes and at shutdown."},
    {"pop_armed", (PyCFunction)core_pop_armed, METH_NOARGS,
     "pop_armed() -> [tags] of armed requests that completed since the last call (never waits)."},
    {"stats", (PyCFunction)core_stats, METH_NOARGS, "Counters: requests, rows, cache_hits, cache_misses, cache_evictions, parallel, helped, batched,\n"
     "inlined, mapped (rows copied from the file's mapping); and cache_bytes (held), cache_limit (its most now), cache_wanted (all datasets, decoded)."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot core_slots[] = {
    {Py_tp_new, core_new},
    {Py_tp_dealloc, core_dealloc},
    {Py_tp_traverse, core_traverse},
    {Py_tp_methods, core_methods},
    {Py_tp_doc, "ReaderCore(*, n_workers, io_mode=IO_AUTO, cache_bytes=0, inline_reads=False, cache_budget=0):\n"
                  "request worker threads (internal). cache_bytes 0: sized from the datasets, within cache_budget\n"
                  "(0: an eighth of memory, at most 2 GiB).\n"
                  "threads (internal). io_mode: _core.IO_AUTO, IO_URING or IO_PREAD."},
    {0, NULL},
};

static PyType_Spec core_spec = {
    .name = "multiload._core.ReaderCore",
    .basicsize = sizeof(ReaderCoreObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = core_slots,
};

/* ---- Request ----------------------------------------------------------- */

static void request_dealloc(RequestObject *self) {
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    ReaderCoreObject *core = (ReaderCoreObject *)self->reader;
    if (self->q && self->pid == ml_py_pid()) {
        /* Never wait here: a queued request is cancelled (its dest never
         * touched); one that a thread may still write goes to the core. */
        if (core && core->r)
            ml_reader_cancel(core->r, self->q);
        if (ml_request_busy(self->q) && self->have_view) {
            orphan *o = core ? PyMem_Malloc(sizeof *o) : NULL;
            if (o) {
                o->q = self->q;
                o->view = self->view;
                o->next = core->orphans;
                core->orphans = o;
                self->q = NULL;
            }
            self->have_view = 0; /* the core owns it now, or (no memory) it is leaked */
        }
        ml_request_free(self->q);
        if (core && core->orphans)
            core_sweep(core, 0);
    }
    self->q = NULL; /* forked child: no worker will write into dest */
    if (self->have_view)
        PyBuffer_Release(&self->view);
    Py_CLEAR(self->layout);
    Py_CLEAR(self->reader);
    PyObject_GC_Del(self);
    Py_DECREF(tp);
}

static int request_traverse(RequestObject *self, visitproc visit, void *arg) {
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->reader);
    Py_VISIT(self->layout);
    if (self->have_view)
        Py_VISIT(self->view.obj);
    return 0;
}

static PyObject *request_wait(RequestObject *self, PyObject *args) {
    PyObject *timeout_obj = Py_None;
    if (!PyArg_ParseTuple(args, "|O:wait", &timeout_obj))
        return NULL;
    double timeout = -1;
    if (timeout_obj != Py_None) {
        timeout = PyFloat_AsDouble(timeout_obj);
        if (timeout == -1 && PyErr_Occurred())
            return NULL;
        if (timeout < 0)
            timeout = 0;
    }
    ml_request *q = self->q;
    if (ml_request_done(q))
        Py_RETURN_TRUE;
    if (forked(self->pid))
        return NULL;
    ReaderCoreObject *core = (ReaderCoreObject *)self->reader;
    ml_reader *r = timeout != 0 ? core->r : NULL; /* a zero timeout is a poll */
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        long step = 100;
        if (timeout >= 0) {
            struct timespec now;
            clock_gettime(CLOCK_MONOTONIC, &now);
            double left = timeout - ((double)(now.tv_sec - t0.tv_sec) + (now.tv_nsec - t0.tv_nsec) * 1e-9);
            if (left <= 0)
                return PyBool_FromLong(ml_request_done(q));
            if (left < 0.1)
                step = (long)(left * 1000) + 1;
        }
        int rc, helped = 0;
        Py_BEGIN_ALLOW_THREADS
        /* Work on the request here if no worker has started it, or on some
         * of its parts: two thread hand-offs fewer than waiting for a
         * worker. Only work that never waits for a device, so signals and
         * the timeout are checked again within milliseconds. */
        if (r)
            helped = ml_reader_help(r, q);
        rc = ml_request_wait(q, helped ? 0 : step);
        Py_END_ALLOW_THREADS
        if (rc == 0)
            Py_RETURN_TRUE;
        if (PyErr_CheckSignals() < 0)
            return NULL;
    }
}

static PyObject *request_done(RequestObject *self, PyObject *Py_UNUSED(ignored)) {
    return PyBool_FromLong(ml_request_done(self->q));
}

static PyObject *request_cancel(RequestObject *self, PyObject *Py_UNUSED(ignored)) {
    ReaderCoreObject *core = (ReaderCoreObject *)self->reader;
    if (!core->r || self->pid != ml_py_pid())
        Py_RETURN_FALSE;
    return PyBool_FromLong(ml_reader_cancel(core->r, self->q));
}

static PyObject *request_busy(RequestObject *self, PyObject *Py_UNUSED(ignored)) {
    if (self->pid != ml_py_pid())
        Py_RETURN_FALSE; /* forked child: no worker writes the child's copy */
    return PyBool_FromLong(ml_request_busy(self->q));
}

static PyObject *request_watch(RequestObject *self, PyObject *Py_UNUSED(ignored)) {
    ReaderCoreObject *core = (ReaderCoreObject *)self->reader;
    if (core->r && self->pid == ml_py_pid())
        ml_reader_watch(core->r, self->q);
    Py_RETURN_NONE;
}

/* arm(): report this request's tag through pop_armed() and the event fd
 * once it is done (at once if it is). False if the reader is gone. */
static PyObject *request_arm(RequestObject *self, PyObject *Py_UNUSED(ignored)) {
    ReaderCoreObject *core = (ReaderCoreObject *)self->reader;
    if (!core->r || self->pid != ml_py_pid())
        Py_RETURN_FALSE;
    ml_reader_arm(core->r, self->q);
    Py_RETURN_TRUE;
}

/* Raise the request's error, if it has one (call when done). */
static PyObject *request_check(RequestObject *self, PyObject *Py_UNUSED(ignored)) {
    const ml_error *e = ml_request_error(self->q);
    if (!ml_request_done(self->q)) {
        PyErr_SetString(PyExc_RuntimeError, "the request is not done");
        return NULL;
    }
    if (e->code == 0)
        Py_RETURN_NONE;
    PyArray_Descr *descr;
    ml_layout *L = ml_py_layout_core(self->layout, &descr);
    return ml_py_raise(e, L->filename);
}

static PyObject *request_status(RequestObject *self, PyObject *Py_UNUSED(ignored)) {
    /* 'pending', 'ok', 'cancelled', 'closed' or 'error' */
    if (!ml_request_done(self->q))
        return PyUnicode_FromString(ml_request_running(self->q) ? "running" : "pending");
    int code = ml_request_error(self->q)->code;
    return PyUnicode_FromString(code == 0 ? "ok" : code == -ECANCELED ? "cancelled"
                                                 : code == -ML_ECLOSED ? "closed" : "error");
}

static PyMethodDef request_methods[] = {
    {"wait", (PyCFunction)request_wait, METH_VARARGS, "wait(timeout=None) -> True once done, False on timeout."},
    {"done", (PyCFunction)request_done, METH_NOARGS, "True once the request finished (any outcome)."},
    {"cancel", (PyCFunction)request_cancel, METH_NOARGS, "Cancel if still queued; True if it was."},
    {"busy", (PyCFunction)request_busy, METH_NOARGS,
     "True while a thread may still write the destination (running, or stopped while being read)."},
    {"watch", (PyCFunction)request_watch, METH_NOARGS,
     "Have the reader's pop_done() report this request's tag once it is done (at once if it is)."},
    {"arm", (PyCFunction)request_arm, METH_NOARGS,
     "Have the reader's pop_armed() report this request's tag, and its event fd fire, once it is done."},
    {"check", (PyCFunction)request_check, METH_NOARGS, "Raise the request's error, if any."},
    {"status", (PyCFunction)request_status, METH_NOARGS, "'pending', 'running', 'ok', 'cancelled', 'closed' or 'error'."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot request_slots[] = {
    {Py_tp_dealloc, request_dealloc},
    {Py_tp_traverse, request_traverse},
    {Py_tp_methods, request_methods},
    {Py_tp_doc, "One queued read into a stage (internal; see multiload.Reader)."},
    {0, NULL},
};

static PyType_Spec request_spec = {
    .name = "multiload._core.Request",
    .basicsize = sizeof(RequestObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = request_slots,
};

int ml_py_add_reader_types(PyObject *m, ml_module_state *st) {
    for (int k = 0; k < N_SUBMIT_KW; k++) {
        st->submit_kw[k] = PyUnicode_InternFromString(submit_kw[k]);
        if (!st->submit_kw[k])
            return -1;
    }
    st->reader_type = (PyTypeObject *)PyType_FromModuleAndSpec(m, &core_spec, NULL);
    if (!st->reader_type || PyModule_AddType(m, st->reader_type) < 0)
        return -1;
    st->request_type = (PyTypeObject *)PyType_FromModuleAndSpec(m, &request_spec, NULL);
    if (!st->request_type)
        return -1;
    return PyModule_AddType(m, st->request_type);
}
