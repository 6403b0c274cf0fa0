/* layout_type.c - Layout: one opened dataset (dtype, shape, storage), the
 * factory for streams, and a synchronous row reader. Opening runs with the
 * GIL released (HDF5 metadata reads can take milliseconds).
 *
 * read() goes through the one data path (fetch.h), with one fetcher per
 * Layout: made by the first read(), kept until the Layout is freed, used
 * by one thread at a time under its lock, which is only ever waited for
 * with the GIL released. A fetcher is per-thread state (an I/O engine, a
 * decoder, scratch), so concurrent read()s of one Layout take turns; each
 * Layout (the Streamer opens one per get_remainder) has its own. After
 * fork() the child never touches the parent's fetcher (its lock may be
 * held, its io_uring ring is shared with the parent): it leaks it and
 * makes its own. A Layout opened with scalar=True may be 0-d (shape (),
 * one row): read(0, 1) gives it as a 0-d array. */
#include "ml_python.h"

#include <pthread.h>
#include <unistd.h>

#include "../fetch.h"

/* The fetcher behind read(). Heap-allocated, so a forked child can drop
 * the parent's whole, lock included, and make a fresh one. */
typedef struct layout_reader {
    pthread_mutex_t lock; /* guards f; taken only with the GIL released */
    ml_fetcher *f;        /* owned; NULL until a read() opens it (again after a failed open) */
    pid_t pid;            /* process that made this */
} layout_reader;

typedef struct LayoutObject {
    PyObject_HEAD
    ml_layout *L;          /* owned reference */
    PyArray_Descr *descr;  /* owned */
    layout_reader *rd;     /* owned; NULL until the first read(); set and replaced with the GIL held */
} LayoutObject;

/* Free a reader made in this process (no thread may hold it). Accepts NULL. */
static void layout_reader_free(layout_reader *rd) {
    if (!rd)
        return;
    ml_fetcher_close(rd->f);
    pthread_mutex_destroy(&rd->lock);
    PyMem_RawFree(rd);
}

/* The Layout's reader for this process, made on first use (GIL held).
 * A parent's, inherited through fork(), is leaked: see the file comment.
 * Returns a borrowed pointer, or NULL with MemoryError set. */
static layout_reader *layout_reader_of(LayoutObject *self) {
    if (self->rd && self->rd->pid == ml_py_pid())
        return self->rd;
    layout_reader *rd = PyMem_RawCalloc(1, sizeof *rd);
    if (!rd || pthread_mutex_init(&rd->lock, NULL) != 0) {
        PyMem_RawFree(rd);
        PyErr_NoMemory();
        return NULL;
    }
    rd->pid = ml_py_pid();
    self->rd = rd; /* a parent's, if any, is dropped unfreed */
    return rd;
}

static PyObject *layout_new(PyTypeObject *tp, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"filename", "path", "scalar", NULL};
    PyObject *fname_obj = NULL;
    const char *path;
    int scalar = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O&s|$p:Layout", kwlist, PyUnicode_FSConverter, &fname_obj, &path,
                                     &scalar))
        return NULL;
    const char *fname = PyBytes_AS_STRING(fname_obj);
    ml_error err;
    ml_error_clear(&err);
    ml_layout *L = NULL;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = ml_layout_open_flags(fname, path, scalar ? ML_LAYOUT_SCALAR : 0, &L, &err);
    Py_END_ALLOW_THREADS
    if (rc < 0) {
        ml_py_raise(&err, fname);
        Py_DECREF(fname_obj);
        return NULL;
    }
    Py_DECREF(fname_obj);
    PyArray_Descr *descr = ml_py_descr(L->type);
    if (!descr) {
        ml_layout_unref(L);
        return NULL;
    }
    LayoutObject *self = (LayoutObject *)tp->tp_alloc(tp, 0);
    if (!self) {
        Py_DECREF(descr);
        ml_layout_unref(L);
        return NULL;
    }
    self->L = L;
    self->descr = descr;
    self->rd = NULL;
    return (PyObject *)self;
}

static void layout_dealloc(LayoutObject *self) {
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    Py_CLEAR(self->descr);
    layout_reader *rd = self->rd && self->rd->pid == ml_py_pid() ? self->rd : NULL; /* a parent's: leaked */
    self->rd = NULL;
    if (self->L || rd) {
        ml_layout *L = self->L;
        self->L = NULL;
        Py_BEGIN_ALLOW_THREADS
        layout_reader_free(rd); /* its fetcher holds a reference to L: first */
        ml_layout_unref(L);
        Py_END_ALLOW_THREADS
    }
    tp->tp_free(self);
    Py_DECREF(tp);
}

static int layout_traverse(LayoutObject *self, visitproc visit, void *arg) {
    Py_VISIT(Py_TYPE(self));
    return 0;
}

static PyObject *dims_tuple(const uint64_t *dims, unsigned n) {
    PyObject *t = PyTuple_New(n);
    for (unsigned i = 0; t && i < n; i++)
        PyTuple_SET_ITEM(t, i, PyLong_FromUnsignedLongLong(dims[i]));
    return t;
}

static PyObject *layout_get_dtype(LayoutObject *self, void *c) {
    (void)c;
    Py_INCREF(self->descr);
    return (PyObject *)self->descr;
}

static PyObject *layout_get_shape(LayoutObject *self, void *c) {
    (void)c;
    return dims_tuple(self->L->dims, self->L->ndim);
}

static PyObject *layout_get_chunks(LayoutObject *self, void *c) {
    (void)c;
    if (self->L->storage != ML_STORE_CHUNKED && !(self->L->storage == ML_STORE_SLOW && self->L->n_chunks))
        Py_RETURN_NONE;
    return dims_tuple(self->L->chunk, self->L->ndim);
}

static PyObject *layout_get_storage(LayoutObject *self, void *c) {
    (void)c;
    static const char *names[] = {"contiguous", "chunked", "compact", "slow"};
    return PyUnicode_FromString(names[self->L->storage]);
}

static PyObject *layout_get_slow_reason(LayoutObject *self, void *c) {
    (void)c;
    if (self->L->storage != ML_STORE_SLOW)
        Py_RETURN_NONE;
    return PyUnicode_FromString(self->L->slow_reason);
}

static PyObject *layout_get_row_bytes(LayoutObject *self, void *c) {
    (void)c;
    return PyLong_FromSize_t(self->L->row_bytes);
}

static PyObject *layout_get_filters(LayoutObject *self, void *c) {
    (void)c;
    PyObject *l = PyList_New(self->L->pipeline.n_filters);
    for (unsigned i = 0; l && i < self->L->pipeline.n_filters; i++)
        PyList_SET_ITEM(l, i, PyLong_FromLong(self->L->pipeline.filters[i].id));
    return l;
}

static PyObject *layout_get_offset(LayoutObject *self, void *c) {
    (void)c;
    if (self->L->storage != ML_STORE_CONTIGUOUS || self->L->offset == UINT64_MAX)
        Py_RETURN_NONE;
    return PyLong_FromUnsignedLongLong(self->L->offset);
}

/* New C-contiguous array of `n` rows of this dataset. */
static PyArrayObject *new_rows_array(LayoutObject *self, uint64_t n) {
    npy_intp dims[ML_MAX_DIMS];
    dims[0] = (npy_intp)n;
    for (unsigned i = 1; i < self->L->ndim; i++)
        dims[i] = (npy_intp)self->L->dims[i];
    Py_INCREF(self->descr);
    return (PyArrayObject *)PyArray_NewFromDescr(&PyArray_Type, self->descr, (int)self->L->ndim, dims,
                                                 NULL, NULL, 0, NULL);
}

static PyObject *layout_read(LayoutObject *self, PyObject *args) {
    unsigned long long start, stop;
    if (!PyArg_ParseTuple(args, "KK:read", &start, &stop))
        return NULL;
    if (stop > self->L->n_rows || start > stop) {
        PyErr_Format(PyExc_IndexError, "rows %llu..%llu outside dataset '%s' with %llu rows", start, stop,
                     self->L->path, (unsigned long long)self->L->n_rows);
        return NULL;
    }
    PyArrayObject *arr = new_rows_array(self, stop - start);
    if (!arr)
        return NULL;
    layout_reader *rd = layout_reader_of(self);
    if (!rd) {
        Py_DECREF(arr);
        return NULL;
    }
    ml_error err;
    ml_error_clear(&err);
    int rc = 0;
    void *dest = PyArray_DATA(arr);
    ml_layout *L = self->L;
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&rd->lock);
    if (!rd->f) {
        ml_fetcher *f = NULL;
        rc = ml_fetcher_open(&f, L, ML_IO_AUTO, &err);
        rd->f = rc == 0 ? f : NULL;
    }
    if (rc == 0)
        rc = ml_fetch_rows(rd->f, start, stop - start, dest, &err);
    pthread_mutex_unlock(&rd->lock);
    Py_END_ALLOW_THREADS
    if (rc < 0) {
        Py_DECREF(arr);
        return ml_py_raise(&err, L->filename);
    }
    return (PyObject *)arr;
}

static PyObject *layout_stream(LayoutObject *self, PyObject *args, PyObject *kw) {
    /* Same arguments as Stream(), with this layout first. */
    ml_module_state *st = ml_state_of_type(Py_TYPE(self));
    Py_ssize_t n = PyTuple_GET_SIZE(args);
    PyObject *full = PyTuple_New(n + 1);
    if (!full)
        return NULL;
    Py_INCREF(self);
    PyTuple_SET_ITEM(full, 0, (PyObject *)self);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *a = PyTuple_GET_ITEM(args, i);
        Py_INCREF(a);
        PyTuple_SET_ITEM(full, i + 1, a);
    }
    PyObject *r = PyObject_Call((PyObject *)st->stream_type, full, kw);
    Py_DECREF(full);
    return r;
}

static PyMethodDef layout_methods[] = {
    {"read", (PyCFunction)layout_read, METH_VARARGS,
     "read(start, stop) -> new array of rows [start, stop), through this Layout's one fetcher."},
    {"stream", (PyCFunction)(void (*)(void))layout_stream, METH_VARARGS | METH_KEYWORDS,
     "stream(n_workers, read_ahead, block_rows, cyclic, ordered, remainder, field=None, io_mode=0, "
     "direct=False, permuted=False, seed=0, epoch=0, shard_rank=0, shard_count=1) -> Stream"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef layout_getset[] = {
    {"dtype", (getter)layout_get_dtype, NULL, "numpy dtype, as h5py reports it.", NULL},
    {"shape", (getter)layout_get_shape, NULL, "Dataset shape.", NULL},
    {"chunks", (getter)layout_get_chunks, NULL, "Chunk shape, or None.", NULL},
    {"storage", (getter)layout_get_storage, NULL, "'contiguous', 'chunked', 'compact' or 'slow'.", NULL},
    {"slow_reason", (getter)layout_get_slow_reason, NULL, "Why the slow path is used, or None.", NULL},
    {"row_bytes", (getter)layout_get_row_bytes, NULL, "Bytes in one row.", NULL},
    {"filters", (getter)layout_get_filters, NULL, "HDF5 filter ids of the pipeline.", NULL},
    {"offset", (getter)layout_get_offset, NULL, "File offset of contiguous data, or None.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot layout_slots[] = {
    {Py_tp_new, layout_new},
    {Py_tp_dealloc, layout_dealloc},
    {Py_tp_traverse, layout_traverse},
    {Py_tp_methods, layout_methods},
    {Py_tp_getset, layout_getset},
    {Py_tp_doc, "Layout(filename, path, *, scalar=False): an opened HDF5 dataset described for native reads. "
                "scalar=True opens a 0-d dataset too (shape (), one row of one element: read(0, 1) is a 0-d "
                "array); without it a 0-d dataset is refused (TypeError), having no rows to stream."},
    {0, NULL},
};

static PyType_Spec layout_spec = {
    .name = "multiload._core.Layout",
    .basicsize = sizeof(LayoutObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = layout_slots,
};

int ml_py_add_layout_type(PyObject *m, ml_module_state *st) {
    st->layout_type = (PyTypeObject *)PyType_FromModuleAndSpec(m, &layout_spec, NULL);
    if (!st->layout_type)
        return -1;
    return PyModule_AddType(m, st->layout_type);
}

/* For stream_type.c: the core layout and dtype of a Layout object. */
ml_layout *ml_py_layout_core(PyObject *o, PyArray_Descr **descr) {
    LayoutObject *self = (LayoutObject *)o;
    *descr = self->descr;
    return self->L;
}
