/* writer_type.c - _core.WriterCore: the Writer's core (writer.h) seen from
 * Python; multiload/writer.py's Writer is the public face and does the
 * row arithmetic (which band, which rows, when a block is full). Blocks
 * travel as capsules ("multiload.wblock") owned by the binding while
 * WRITABLE: a capsule's destructor frees a block never submitted; after
 * submit(keep=False) the capsule is spent (its context says so) and any
 * use raises. The GIL is released around every wait (reserve, wait_idle,
 * a block's edge read, close), every copy of rows into a block, and
 * flush; no Python object is touched while it is released. Datatypes come
 * in as spec tuples multiload/writer.py builds from numpy dtypes and go
 * out as numpy dtypes (dtype.c), so numpy's C API for fields is not used.
 */
#include "ml_python.h"

#include <errno.h>

#include "../budget.h"
#include "../writer.h"

typedef struct WriterObject {
    PyObject_HEAD
    ml_writer *w; /* NULL after dealloc; closed once close() ran */
    int closed;   /* close() ran (with the GIL held: no lock needed) */
} WriterObject;

static const char *const BLOCK_CAPSULE = "multiload.wblock";
static char spent_mark; /* a capsule's context after submit: the block is the writer's */

static int ready(WriterObject *self) {
    if (!self->w || self->closed) {
        PyErr_SetString(PyExc_RuntimeError, "the writer is closed");
        return 0;
    }
    return 1;
}

/* A type spec tuple into a new ml_type; TypeError on a bad spec. */
static ml_type *type_from_spec(PyObject *spec) {
    const char *kind;
    PyObject *a = NULL, *b = NULL;
    if (!PyTuple_Check(spec) || !PyArg_ParseTuple(spec, "s|OO", &kind, &a, &b)) {
        PyErr_SetString(PyExc_TypeError, "bad datatype spec");
        return NULL;
    }
    ml_type *t = calloc(1, sizeof *t);
    if (!t)
        return (ml_type *)PyErr_NoMemory();
    switch (kind[0]) {
    case 'i':
    case 'u':
    case 'f':
        t->kind = kind[0] == 'i' ? ML_T_INT : kind[0] == 'u' ? ML_T_UINT : ML_T_FLOAT;
        t->size = PyLong_AsSize_t(a);
        t->big_endian = PyObject_IsTrue(b);
        t->precision = (unsigned)(t->size * 8);
        break;
    case 'b':
        t->kind = ML_T_BOOL;
        t->size = 1;
        break;
    case 'S':
        t->kind = ML_T_STRING;
        t->size = PyLong_AsSize_t(a);
        t->pad = ML_STR_NULLPAD;
        break;
    case 'c': {
        t->kind = ML_T_COMPOUND;
        t->size = PyLong_AsSize_t(a);
        Py_ssize_t n = PyList_Check(b) ? PyList_GET_SIZE(b) : -1;
        if (n < 1)
            goto bad;
        t->member_names = calloc((size_t)n, sizeof(char *));
        t->member_offsets = calloc((size_t)n, sizeof(size_t));
        t->members = calloc((size_t)n, sizeof(ml_type *));
        if (!t->member_names || !t->member_offsets || !t->members) {
            ml_type_free(t);
            return (ml_type *)PyErr_NoMemory();
        }
        t->n_members = (unsigned)n;
        for (Py_ssize_t i = 0; i < n; i++) {
            const char *name;
            Py_ssize_t off;
            PyObject *sub;
            if (!PyArg_ParseTuple(PyList_GET_ITEM(b, i), "snO", &name, &off, &sub))
                goto bad;
            t->member_names[i] = strdup(name);
            t->member_offsets[i] = (size_t)off;
            if (!t->member_names[i] || !(t->members[i] = type_from_spec(sub)))
                goto bad;
        }
        break;
    }
    case 'a': {
        t->kind = ML_T_ARRAY;
        Py_ssize_t n = PyTuple_Check(a) ? PyTuple_GET_SIZE(a) : -1;
        if (n < 1 || n > ML_MAX_DIMS)
            goto bad;
        t->ndim = (unsigned)n;
        for (Py_ssize_t i = 0; i < n; i++)
            t->dims[i] = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(a, i));
        if (!(t->base = type_from_spec(b)))
            goto bad;
        t->size = t->base->size;
        for (unsigned i = 0; i < t->ndim; i++)
            t->size *= t->dims[i];
        break;
    }
    default:
        goto bad;
    }
    if (PyErr_Occurred())
        goto bad;
    return t;
bad:
    ml_type_free(t);
    if (!PyErr_Occurred())
        PyErr_SetString(PyExc_TypeError, "bad datatype spec");
    return NULL;
}

/* A tuple of ints (None: unlimited, when none_ok) into out[ndim]. */
static int dims_arg(PyObject *seq, unsigned ndim, int none_ok, uint64_t *out, const char *what) {
    if (!PyTuple_Check(seq) || (unsigned)PyTuple_GET_SIZE(seq) != ndim) {
        PyErr_Format(PyExc_ValueError, "%s must be a tuple of %u entries", what, ndim);
        return -1;
    }
    for (unsigned i = 0; i < ndim; i++) {
        PyObject *v = PyTuple_GET_ITEM(seq, i);
        if (none_ok && v == Py_None) {
            out[i] = ML_WRITER_UNLIMITED;
            continue;
        }
        out[i] = PyLong_AsUnsignedLongLong(v);
        if (PyErr_Occurred())
            return -1;
    }
    return 0;
}

static int pipeline_arg(PyObject *list, ml_pipeline *pipe) {
    Py_ssize_t n = PyList_Check(list) ? PyList_GET_SIZE(list) : -1;
    if (n < 0 || n > ML_MAX_FILTERS) {
        PyErr_SetString(PyExc_ValueError, "bad filter list");
        return -1;
    }
    memset(pipe, 0, sizeof *pipe);
    pipe->n_filters = (unsigned)n;
    for (Py_ssize_t i = 0; i < n; i++) {
        ml_filter *f = &pipe->filters[i];
        PyObject *vals;
        if (!PyArg_ParseTuple(PyList_GET_ITEM(list, i), "iIO", &f->id, &f->flags, &vals) || !PyTuple_Check(vals))
            return -1;
        f->n_values = (size_t)PyTuple_GET_SIZE(vals) < 8 ? (size_t)PyTuple_GET_SIZE(vals) : 8;
        for (size_t k = 0; k < f->n_values; k++)
            f->values[k] = (unsigned)PyLong_AsUnsignedLong(PyTuple_GET_ITEM(vals, (Py_ssize_t)k));
        if (PyErr_Occurred())
            return -1;
    }
    return 0;
}

static int writer_init(WriterObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"path", "truncate", "n_workers", "max_pending", "budget", "budget_priority", NULL};
    PyObject *path_obj, *budget_obj = Py_None;
    int truncate, priority = 0;
    unsigned n_workers;
    unsigned long long max_pending;
    ml_budget *budget = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O&pIK|Oi", kwlist, PyUnicode_FSConverter, &path_obj, &truncate,
                                     &n_workers, &max_pending, &budget_obj, &priority))
        return -1;
    if (ml_py_budget_arg(ml_state_of_type(Py_TYPE(self)), budget_obj, &budget) < 0) {
        Py_DECREF(path_obj);
        return -1;
    }
    if (self->w) {
        Py_DECREF(path_obj);
        PyErr_SetString(PyExc_RuntimeError, "WriterCore is initialised once");
        return -1;
    }
    ml_error err = {0};
    ml_writer *w = NULL;
    int rc;
    const char *path = PyBytes_AS_STRING(path_obj);
    Py_BEGIN_ALLOW_THREADS
    rc = ml_writer_open(path, truncate, n_workers, max_pending, budget, priority, &w, &err);
    Py_END_ALLOW_THREADS
    if (rc < 0) {
        ml_py_raise(&err, path);
        Py_DECREF(path_obj);
        return -1;
    }
    Py_DECREF(path_obj);
    self->w = w;
    return 0;
}

static PyObject *w_create(WriterObject *self, PyObject *args) {
    const char *name;
    PyObject *spec, *shape, *maxshape, *chunks, *filters, *fill;
    if (!ready(self) || !PyArg_ParseTuple(args, "sOOOOOO", &name, &spec, &shape, &maxshape, &chunks, &filters, &fill))
        return NULL;
    ml_wparams p;
    memset(&p, 0, sizeof p);
    Py_ssize_t nd = PyTuple_Check(shape) ? PyTuple_GET_SIZE(shape) : -1;
    if (nd < 1 || nd > ML_MAX_DIMS)
        return PyErr_Format(PyExc_ValueError, "dataset '%s': shape must have 1 to %d dims", name, ML_MAX_DIMS);
    p.ndim = (unsigned)nd;
    if (dims_arg(shape, p.ndim, 0, p.shape, "shape") < 0 || dims_arg(maxshape, p.ndim, 1, p.maxshape, "maxshape") < 0 ||
        dims_arg(chunks, p.ndim, 0, p.chunks, "chunks") < 0 || pipeline_arg(filters, &p.pipe) < 0)
        return NULL;
    ml_type *t = type_from_spec(spec);
    if (!t)
        return NULL;
    Py_buffer fb = {0};
    if (fill != Py_None) {
        if (PyObject_GetBuffer(fill, &fb, PyBUF_SIMPLE) < 0) {
            ml_type_free(t);
            return NULL;
        }
        if ((size_t)fb.len != t->size) {
            PyBuffer_Release(&fb);
            ml_type_free(t);
            return PyErr_Format(PyExc_ValueError, "dataset '%s': fill value of the wrong size", name);
        }
    }
    ml_error err = {0};
    int ds = -1, rc;
    Py_BEGIN_ALLOW_THREADS
    rc = ml_writer_create(self->w, name, t, &p, fill != Py_None ? fb.buf : NULL, &ds, &err);
    Py_END_ALLOW_THREADS
    if (fill != Py_None)
        PyBuffer_Release(&fb);
    ml_type_free(t);
    if (rc == -EEXIST) {
        PyErr_SetString(PyExc_ValueError, err.msg);
        return NULL;
    }
    if (rc < 0)
        return ml_py_raise(&err, NULL);
    return PyLong_FromLong(ds);
}

static PyObject *w_find(WriterObject *self, PyObject *args) {
    const char *name;
    if (!ready(self) || !PyArg_ParseTuple(args, "s", &name))
        return NULL;
    ml_error err = {0};
    int ds = -1, rc;
    Py_BEGIN_ALLOW_THREADS
    rc = ml_writer_find(self->w, name, &ds, &err);
    Py_END_ALLOW_THREADS
    if (rc == -ML_EFILTER || rc == -ML_ESHAPE) {
        PyErr_SetString(PyExc_ValueError, err.msg);
        return NULL;
    }
    if (rc < 0)
        return ml_py_raise(&err, NULL);
    return PyLong_FromLong(ds);
}

static PyObject *dims_tuple(const uint64_t *d, unsigned n, int none_unlimited) {
    PyObject *t = PyTuple_New(n);
    for (unsigned i = 0; t && i < n; i++) {
        PyObject *v = none_unlimited && d[i] == ML_WRITER_UNLIMITED ? Py_NewRef(Py_None)
                                                                    : PyLong_FromUnsignedLongLong(d[i]);
        if (!v) {
            Py_DECREF(t);
            return NULL;
        }
        PyTuple_SET_ITEM(t, i, v);
    }
    return t;
}

static PyObject *w_info(WriterObject *self, PyObject *arg) {
    if (!ready(self))
        return NULL;
    long v = PyLong_AsLong(arg);
    if (v == -1 && PyErr_Occurred())
        return NULL;
    if (v < 0 || v > INT_MAX)
        return PyErr_Format(PyExc_ValueError, "no dataset %ld in this writer", v);
    int ds = (int)v;
    ml_wparams pv;
    const ml_wparams *p = &pv;
    const ml_type *t;
    const unsigned char *fill;
    int rc;
    Py_BEGIN_ALLOW_THREADS /* it takes the HDF5 lock: never with the GIL held */
    rc = ml_writer_info(self->w, ds, &pv, &t, &fill);
    Py_END_ALLOW_THREADS
    if (rc < 0)
        return PyErr_Format(PyExc_ValueError, "no dataset %d in this writer", ds);
    PyObject *filters = PyList_New(p->pipe.n_filters);
    for (unsigned i = 0; filters && i < p->pipe.n_filters; i++) {
        const ml_filter *f = &p->pipe.filters[i];
        PyObject *vals = PyTuple_New((Py_ssize_t)f->n_values);
        for (size_t k = 0; vals && k < f->n_values; k++)
            PyTuple_SET_ITEM(vals, (Py_ssize_t)k, PyLong_FromUnsignedLong(f->values[k]));
        PyObject *e = vals ? Py_BuildValue("(iIN)", f->id, f->flags, vals) : NULL;
        if (!e) {
            Py_CLEAR(filters);
            break;
        }
        PyList_SET_ITEM(filters, i, e);
    }
    PyArray_Descr *descr = ml_py_descr(t);
    if (!filters || !descr) {
        Py_XDECREF(filters);
        Py_XDECREF(descr);
        return NULL;
    }
    return Py_BuildValue("{s:N,s:N,s:N,s:N,s:N,s:y#,s:K}", "shape", dims_tuple(p->shape, p->ndim, 0), "maxshape",
                         dims_tuple(p->maxshape, p->ndim, 1), "chunks", dims_tuple(p->chunks, p->ndim, 0), "filters",
                         filters, "dtype", (PyObject *)descr, "fill", (const char *)fill, (Py_ssize_t)t->size,
                         "block_bytes", (unsigned long long)ml_writer_block_bytes(self->w, ds));
}

static void capsule_free(PyObject *cap) {
    if (PyCapsule_GetContext(cap) != &spent_mark)
        ml_wblock_free(PyCapsule_GetPointer(cap, BLOCK_CAPSULE));
}

/* The live block of a capsule made by this writer, or NULL with an exception. */
static ml_wblock *block_of(WriterObject *self, PyObject *cap) {
    ml_wblock *b = PyCapsule_GetPointer(cap, BLOCK_CAPSULE);
    if (b && PyCapsule_GetContext(cap) == &spent_mark) {
        PyErr_SetString(PyExc_RuntimeError, "block already submitted");
        return NULL;
    }
    if (b && ml_wblock_writer(b) != self->w) {
        PyErr_SetString(PyExc_ValueError, "a block of another writer");
        return NULL;
    }
    return b;
}

static PyObject *w_block_new(WriterObject *self, PyObject *args) {
    int ds, load;
    unsigned long long band;
    if (!ready(self) || !PyArg_ParseTuple(args, "iKp", &ds, &band, &load))
        return NULL;
    ml_error err = {0};
    ml_wblock *b = NULL;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = ml_wblock_new(self->w, ds, band, load, &b, &err);
    Py_END_ALLOW_THREADS
    if (rc < 0)
        return ml_py_raise(&err, NULL);
    PyObject *cap = PyCapsule_New(b, BLOCK_CAPSULE, capsule_free);
    if (!cap)
        ml_wblock_free(b);
    return cap;
}

static PyObject *w_block_put(WriterObject *self, PyObject *args) {
    PyObject *cap, *src;
    unsigned long long at, n_rows;
    if (!ready(self) || !PyArg_ParseTuple(args, "OKOK", &cap, &at, &src, &n_rows))
        return NULL;
    ml_wblock *b = block_of(self, cap);
    if (!b)
        return NULL;
    uint64_t rows = ml_wblock_rows(b), need;
    if (at > rows || n_rows > rows - at || __builtin_mul_overflow(n_rows, ml_wblock_row_bytes(b), &need))
        return PyErr_Format(PyExc_ValueError, "rows %llu..+%llu are not in a block of %llu rows",
                            (unsigned long long)at, (unsigned long long)n_rows, (unsigned long long)rows);
    Py_buffer v;
    if (PyObject_GetBuffer(src, &v, PyBUF_C_CONTIGUOUS) < 0)
        return NULL;
    if ((uint64_t)v.len < need) {
        PyBuffer_Release(&v);
        return PyErr_Format(PyExc_ValueError, "%llu rows need %llu bytes; the buffer has %zd",
                            (unsigned long long)n_rows, (unsigned long long)need, v.len);
    }
    Py_BEGIN_ALLOW_THREADS
    ml_wblock_put(b, at, v.buf, n_rows);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&v);
    Py_RETURN_NONE;
}

/* reserve(): the wait's step and its arguments. */
typedef struct reserve_arg {
    ml_writer *w;
    uint64_t bytes;
} reserve_arg;

static int reserve_step(void *arg, long ms) {
    reserve_arg *a = arg;
    return ml_writer_reserve(a->w, a->bytes, ms);
}

static PyObject *w_reserve(WriterObject *self, PyObject *args) {
    unsigned long long bytes;
    PyObject *tmo = Py_None;
    double timeout;
    if (!ready(self) || !PyArg_ParseTuple(args, "K|O", &bytes, &tmo) || ml_py_timeout_arg(tmo, &timeout) < 0)
        return NULL;
    reserve_arg a = {self->w, bytes};
    int rc = 0;
    if (ml_py_wait_steps(timeout, reserve_step, NULL, &a, "room for a block under max_pending_bytes", &rc) < 0)
        return NULL;
    if (rc == -ECANCELED)
        Py_RETURN_FALSE;
    if (rc < 0) {
        ml_error err = {0};
        ml_error_set(&err, rc, "the writer is closed");
        return ml_py_raise(&err, NULL);
    }
    Py_RETURN_TRUE;
}

static PyObject *w_unreserve(WriterObject *self, PyObject *args) {
    unsigned long long bytes;
    if (!self->w || !PyArg_ParseTuple(args, "K", &bytes))
        return NULL;
    ml_writer_unreserve(self->w, bytes);
    Py_RETURN_NONE;
}

static PyObject *w_submit(WriterObject *self, PyObject *args) {
    PyObject *cap;
    unsigned long long valid;
    int keep;
    if (!ready(self) || !PyArg_ParseTuple(args, "OKp", &cap, &valid, &keep))
        return NULL;
    ml_wblock *b = block_of(self, cap);
    if (!b)
        return NULL;
    if (valid > ml_wblock_rows(b))
        return PyErr_Format(PyExc_ValueError, "%llu valid rows in a block of %llu",
                            (unsigned long long)valid, (unsigned long long)ml_wblock_rows(b));
    if (!keep && PyCapsule_SetContext(cap, &spent_mark) < 0)
        return NULL;
    if (ml_writer_submit(self->w, b, valid, keep) < 0)
        return PyErr_NoMemory();
    Py_RETURN_NONE;
}

static int idle_step(void *arg, long ms) { return ml_writer_wait_idle(arg, ms); }

static PyObject *w_wait_idle(WriterObject *self, PyObject *args) {
    PyObject *tmo = Py_None;
    double timeout;
    if (!ready(self) || !PyArg_ParseTuple(args, "|O", &tmo) || ml_py_timeout_arg(tmo, &timeout) < 0)
        return NULL;
    int rc = 0;
    int r = ml_py_wait_steps(timeout, idle_step, NULL, self->w, NULL, &rc);
    if (r < 0)
        return NULL;
    return PyBool_FromLong(r == 0 && rc == 0);
}

static PyObject *w_grow(WriterObject *self, PyObject *args) {
    int ds;
    unsigned long long n;
    if (!ready(self) || !PyArg_ParseTuple(args, "iK", &ds, &n))
        return NULL;
    ml_error err = {0};
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = ml_writer_grow(self->w, ds, n, &err);
    Py_END_ALLOW_THREADS
    if (rc < 0)
        return ml_py_raise(&err, NULL);
    Py_RETURN_NONE;
}

/* sync() -> None, or (errno or None, message) when the flush failed. */
static PyObject *w_sync(WriterObject *self, PyObject *unused) {
    (void)unused;
    if (!ready(self))
        return NULL;
    ml_error err = {0};
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = ml_writer_sync(self->w, &err);
    Py_END_ALLOW_THREADS
    if (rc < 0)
        return Py_BuildValue("(Ns)", ml_error_is_errno(rc) ? PyLong_FromLong(-rc) : Py_NewRef(Py_None), err.msg);
    Py_RETURN_NONE;
}

static PyObject *w_failures(WriterObject *self, PyObject *unused) {
    (void)unused;
    if (!self->w)
        return PyList_New(0);
    size_t n = ml_writer_n_failures(self->w);
    PyObject *list = PyList_New((Py_ssize_t)n);
    for (size_t k = 0; list && k < n; k++) {
        ml_wfail f;
        ml_writer_failure(self->w, k, &f);
        PyObject *e = Py_BuildValue("(sKKNs)", f.dataset, (unsigned long long)f.row0, (unsigned long long)f.n_rows,
                                    ml_error_is_errno(f.code) ? PyLong_FromLong(-f.code) : Py_NewRef(Py_None), f.msg);
        if (!e) {
            Py_CLEAR(list);
            break;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)k, e);
    }
    return list;
}

static PyObject *w_stats(WriterObject *self, PyObject *unused) {
    (void)unused;
    uint64_t pb = 0, np = 0, nc = 0, nf = 0;
    if (self->w)
        ml_writer_stats(self->w, &pb, &np, &nc, &nf);
    PyObject *d = Py_BuildValue("{s:K,s:K,s:K,s:K}", "pending_bytes", (unsigned long long)pb, "pending_blocks",
                                (unsigned long long)np, "committed_blocks", (unsigned long long)nc,
                                "failed_blocks", (unsigned long long)nf);
    ml_budget_stats bst;
    if (d && self->w && ml_writer_budget_stats(self->w, &bst) == 0) { /* a budgeted writer: "budget" too */
        PyObject *b = ml_py_budget_stats_dict(&bst);
        if (!b || PyDict_SetItemString(d, "budget", b) < 0)
            Py_CLEAR(d);
        Py_XDECREF(b);
    }
    return d;
}

static PyObject *w_event_fd(WriterObject *self, PyObject *unused) {
    (void)unused;
    if (!self->w) {
        PyErr_SetString(PyExc_RuntimeError, "the writer is closed");
        return NULL;
    }
    return PyLong_FromLong(ml_writer_event_fd(self->w));
}

static PyObject *w_close(WriterObject *self, PyObject *args) {
    int abort = 0;
    if (!PyArg_ParseTuple(args, "|p", &abort))
        return NULL;
    if (!self->w || self->closed)
        Py_RETURN_NONE;
    self->closed = 1;
    ml_error err = {0};
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = ml_writer_close(self->w, abort, &err);
    Py_END_ALLOW_THREADS
    if (rc < 0)
        return ml_py_raise(&err, NULL);
    Py_RETURN_NONE;
}

static void writer_dealloc(WriterObject *self) {
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    if (self->w) {
        ml_writer *w = self->w;
        self->w = NULL;
        Py_BEGIN_ALLOW_THREADS
        ml_writer_free(w); /* closes with abort = 1 if close() never ran */
        Py_END_ALLOW_THREADS
    }
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static int writer_traverse(WriterObject *self, visitproc visit, void *arg) {
    Py_VISIT(Py_TYPE(self));
    return 0;
}

static PyMethodDef writer_methods[] = {
    {"create", (PyCFunction)w_create, METH_VARARGS,
     "create(name, type_spec, shape, maxshape, chunks, filters, fill) -> dataset index."},
    {"find", (PyCFunction)w_find, METH_VARARGS, "find(name) -> dataset index of an existing dataset."},
    {"info", (PyCFunction)w_info, METH_O, "info(ds) -> dict of shape, maxshape, chunks, filters, dtype, fill."},
    {"block_new", (PyCFunction)w_block_new, METH_VARARGS, "block_new(ds, band, load) -> a WRITABLE block."},
    {"block_put", (PyCFunction)w_block_put, METH_VARARGS, "block_put(block, at, rows, n_rows): copy rows in."},
    {"reserve", (PyCFunction)w_reserve, METH_VARARGS,
     "reserve(bytes, timeout=None) -> True, or False when a block has failed."},
    {"unreserve", (PyCFunction)w_unreserve, METH_VARARGS, "unreserve(bytes): give a reservation back."},
    {"submit", (PyCFunction)w_submit, METH_VARARGS, "submit(block, valid_rows, keep): PENDING."},
    {"wait_idle", (PyCFunction)w_wait_idle, METH_VARARGS, "wait_idle(timeout=None) -> True once nothing is PENDING."},
    {"grow", (PyCFunction)w_grow, METH_VARARGS, "grow(ds, n_rows): extent along axis 0 at least n_rows."},
    {"sync", (PyCFunction)w_sync, METH_NOARGS, "sync() -> None, or (errno, message) on failure: H5Fflush + fsync."},
    {"failures", (PyCFunction)w_failures, METH_NOARGS,
     "failures() -> [(dataset, row0, n_rows, errno or None, message)]."},
    {"stats", (PyCFunction)w_stats, METH_NOARGS, "stats() -> dict of counters."},
    {"event_fd", (PyCFunction)w_event_fd, METH_NOARGS,
     "event_fd() -> an eventfd written whenever a block commits or fails, and at close."},
    {"close", (PyCFunction)w_close, METH_VARARGS, "close(abort=False): stop the workers, close the file."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot writer_slots[] = {
    {Py_tp_dealloc, writer_dealloc},
    {Py_tp_traverse, writer_traverse},
    {Py_tp_init, writer_init},
    {Py_tp_new, PyType_GenericNew},
    {Py_tp_methods, writer_methods},
    {Py_tp_doc, "The Writer's core (writer.h); multiload.Writer is the public face."},
    {0, NULL},
};

static PyType_Spec writer_spec = {
    .name = "multiload._core.WriterCore",
    .basicsize = sizeof(WriterObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = writer_slots,
};

int ml_py_add_writer_type(PyObject *m, ml_module_state *st) {
    st->writer_type = (PyTypeObject *)PyType_FromModuleAndSpec(m, &writer_spec, NULL);
    if (!st->writer_type)
        return -1;
    return PyModule_AddType(m, st->writer_type);
}
