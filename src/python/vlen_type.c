/* vlen_type.c - VLen: an opened variable-length dataset (PyTables VLArray,
 * or a dataset of variable-length strings) and its row reader, over
 * vlen.c. `vlen_open(filename, path)` makes one, or returns None when the
 * path is not a variable-length dataset (the caller then reports its own
 * error). Opening, reading and closing take the HDF5 lock, so they run
 * with the GIL released and touch no Python object meanwhile; a string
 * read's bytes objects are made afterwards, with the GIL, from the
 * buffer the core copied them into.
 *
 * A string dataset's dtype is h5py's string_dtype: object, with the
 * metadata {'vlen': str} (UTF-8) or {'vlen': bytes} (ASCII), so that
 * h5py.check_string_dtype() reads its encoding.
 */
#include "ml_python.h"

#include "../vlen.h"

typedef struct VLenObject {
    PyObject_HEAD
    ml_vlen *V;            /* owned */
    PyArray_Descr *descr;  /* owned: element dtype, as h5py reports it (strings: h5py's string_dtype) */
} VLenObject;

/* h5py.string_dtype(encoding): object, metadata {'vlen': str or bytes}. */
static PyArray_Descr *string_descr(int utf8) {
    PyObject *meta = Py_BuildValue("{sO}", "vlen", utf8 ? (PyObject *)&PyUnicode_Type : (PyObject *)&PyBytes_Type);
    PyObject *args = meta ? Py_BuildValue("(s)", "O") : NULL;
    PyObject *kw = args ? Py_BuildValue("{sO}", "metadata", meta) : NULL;
    PyObject *d = kw ? PyObject_Call((PyObject *)&PyArrayDescr_Type, args, kw) : NULL;
    Py_XDECREF(kw);
    Py_XDECREF(args);
    Py_XDECREF(meta);
    return (PyArray_Descr *)d;
}

PyObject *ml_py_vlen_open(PyObject *m, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"filename", "path", NULL};
    PyObject *fname_obj = NULL;
    const char *path;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O&s:vlen_open", kwlist, PyUnicode_FSConverter, &fname_obj,
                                     &path))
        return NULL;
    ml_module_state *st = PyModule_GetState(m);
    const char *fname = PyBytes_AS_STRING(fname_obj);
    ml_error err;
    ml_error_clear(&err);
    ml_vlen *V = NULL;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = ml_vlen_open(fname, path, &V, &err);
    Py_END_ALLOW_THREADS
    if (rc < 0) {
        ml_py_raise(&err, fname);
        Py_DECREF(fname_obj);
        return NULL;
    }
    Py_DECREF(fname_obj);
    if (!V)
        Py_RETURN_NONE;
    PyArray_Descr *descr = V->is_string ? string_descr(V->str_utf8) : ml_py_descr(V->base);
    PyTypeObject *tp = st->vlen_type;
    VLenObject *self = descr ? (VLenObject *)tp->tp_alloc(tp, 0) : NULL;
    if (!self) {
        Py_XDECREF(descr);
        Py_BEGIN_ALLOW_THREADS
        ml_vlen_close(V);
        Py_END_ALLOW_THREADS
        return NULL;
    }
    self->V = V;
    self->descr = descr;
    return (PyObject *)self;
}

static void vlen_dealloc(VLenObject *self) {
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    Py_CLEAR(self->descr);
    if (self->V) {
        ml_vlen *V = self->V;
        self->V = NULL;
        Py_BEGIN_ALLOW_THREADS
        ml_vlen_close(V);
        Py_END_ALLOW_THREADS
    }
    tp->tp_free(self);
    Py_DECREF(tp);
}

static int vlen_traverse(VLenObject *self, visitproc visit, void *arg) {
    Py_VISIT(Py_TYPE(self));
    return 0;
}

static PyObject *vlen_get_dtype(VLenObject *self, void *c) {
    (void)c;
    Py_INCREF(self->descr);
    return (PyObject *)self->descr;
}

static PyObject *vlen_get_shape(VLenObject *self, void *c) {
    (void)c;
    PyObject *t = PyTuple_New(self->V->ndim);
    for (unsigned d = 0; t && d < self->V->ndim; d++) {
        PyObject *v = PyLong_FromUnsignedLongLong(self->V->dims[d]);
        if (!v) {
            Py_CLEAR(t);
            break;
        }
        PyTuple_SET_ITEM(t, d, v);
    }
    return t;
}

static PyObject *vlen_get_is_string(VLenObject *self, void *c) {
    (void)c;
    return PyBool_FromLong(self->V->is_string);
}

static PyObject *vlen_get_encoding(VLenObject *self, void *c) {
    (void)c;
    if (!self->V->is_string)
        Py_RETURN_NONE;
    return PyUnicode_FromString(self->V->str_utf8 ? "utf-8" : "ascii");
}

/* Frees the rows' buffer when the last array viewing it goes. */
static void free_capsule(PyObject *cap) { free(PyCapsule_GetPointer(cap, "multiload.vlen_rows")); }

/* The rows argument as a new C-contiguous int64 array, every row checked
 * in range (IndexError), or NULL with an exception set. */
static PyArrayObject *rows_arg(VLenObject *self, PyObject *arg) {
    PyArrayObject *any = (PyArrayObject *)PyArray_FROM_O(arg);
    if (!any)
        return NULL;
    if (!PyArray_ISINTEGER(any) && PyArray_SIZE(any) > 0) {
        PyErr_Format(PyExc_TypeError, "rows must be integers, not %s", PyArray_DESCR(any)->typeobj->tp_name);
        Py_DECREF(any);
        return NULL;
    }
    PyArrayObject *rows = (PyArrayObject *)PyArray_FROMANY((PyObject *)any, NPY_INT64, 1, 1, NPY_ARRAY_CARRAY_RO);
    Py_DECREF(any);
    if (!rows)
        return NULL;
    ml_vlen *V = self->V;
    npy_intp n = PyArray_DIM(rows, 0);
    const int64_t *r = PyArray_DATA(rows);
    for (npy_intp i = 0; i < n; i++) {
        if (r[i] < 0 || (uint64_t)r[i] >= V->n_rows) {
            PyErr_Format(PyExc_IndexError, "row %lld is out of range of variable-length dataset '%s' with %llu rows",
                         (long long)r[i], V->path, (unsigned long long)V->n_rows);
            Py_DECREF(rows);
            return NULL;
        }
    }
    return rows;
}

static PyObject *vlen_read(VLenObject *self, PyObject *arg) {
    if (self->V->is_string) {
        PyErr_SetString(PyExc_TypeError, "a dataset of variable-length strings is read by read_strings()");
        return NULL;
    }
    PyArrayObject *rows = rows_arg(self, arg);
    if (!rows)
        return NULL;
    ml_vlen *V = self->V;
    npy_intp n = PyArray_DIM(rows, 0);
    PyArrayObject *counts = (PyArrayObject *)PyArray_SimpleNew(1, &n, NPY_INT64);
    if (!counts) {
        Py_DECREF(rows);
        return NULL;
    }
    /* int64 and uint64 share a representation; every value is below 2**63. */
    const uint64_t *urows = PyArray_DATA(rows);
    uint64_t *ucounts = PyArray_DATA(counts);
    void *data = NULL;
    size_t nbytes = 0;
    ml_error err;
    ml_error_clear(&err);
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = ml_vlen_read(V, urows, (size_t)n, ucounts, &data, &nbytes, &err);
    Py_END_ALLOW_THREADS
    Py_DECREF(rows);
    if (rc < 0) {
        Py_DECREF(counts);
        return ml_py_raise(&err, V->filename);
    }
    /* The data array views the core's buffer; a capsule frees it. */
    PyObject *cap = PyCapsule_New(data, "multiload.vlen_rows", free_capsule);
    if (!cap) {
        free(data);
        Py_DECREF(counts);
        return NULL;
    }
    npy_intp n_elems = (npy_intp)(nbytes / V->base->size);
    Py_INCREF(self->descr);
    /* A subarray dtype (PyTables' atom shape) gives the array its trailing dims. */
    PyObject *arr = PyArray_NewFromDescr(&PyArray_Type, self->descr, 1, &n_elems, NULL, data,
                                         NPY_ARRAY_CARRAY, NULL);
    if (!arr) {
        Py_DECREF(cap);
        Py_DECREF(counts);
        return NULL;
    }
    if (PyArray_SetBaseObject((PyArrayObject *)arr, cap) < 0) { /* steals cap */
        Py_DECREF(arr);
        Py_DECREF(counts);
        return NULL;
    }
    PyObject *res = PyTuple_Pack(2, (PyObject *)counts, arr);
    Py_DECREF(counts);
    Py_DECREF(arr);
    return res;
}

/* read_strings(rows): an object array of shape (len(rows),) + shape[1:]
 * (a 0-d dataset: (1,), its one row) of bytes objects, dtype the
 * dataset's string dtype, as h5py's ds[...] gives them. */
static PyObject *vlen_read_strings(VLenObject *self, PyObject *arg) {
    ml_vlen *V = self->V;
    if (!V->is_string) {
        PyErr_SetString(PyExc_TypeError, "read_strings() reads datasets of variable-length strings only");
        return NULL;
    }
    PyArrayObject *rows = rows_arg(self, arg);
    if (!rows)
        return NULL;
    npy_intp n = PyArray_DIM(rows, 0), dims[ML_MAX_DIMS];
    int nd = V->ndim ? (int)V->ndim : 1;
    dims[0] = n;
    for (int d = 1; d < nd; d++)
        dims[d] = (npy_intp)V->dims[d];
    size_t cells;
    if (__builtin_mul_overflow((size_t)n, (size_t)V->inner, &cells) || cells > (size_t)PY_SSIZE_T_MAX / 16) {
        Py_DECREF(rows);
        return PyErr_NoMemory();
    }
    uint64_t *counts = PyMem_Malloc(cells ? cells * sizeof *counts : 1);
    if (!counts) {
        Py_DECREF(rows);
        return PyErr_NoMemory();
    }
    const uint64_t *urows = PyArray_DATA(rows); /* int64 as uint64: every row checked >= 0 */
    void *data = NULL;
    size_t nbytes = 0;
    ml_error err;
    ml_error_clear(&err);
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = ml_vlen_read(V, urows, (size_t)n, counts, &data, &nbytes, &err);
    Py_END_ALLOW_THREADS
    Py_DECREF(rows);
    if (rc < 0) {
        PyMem_Free(counts);
        return ml_py_raise(&err, V->filename);
    }
    Py_INCREF(self->descr);
    PyObject *arr = PyArray_NewFromDescr(&PyArray_Type, self->descr, nd, dims, NULL, NULL, 0, NULL);
    if (arr) {
        /* A new object array holds None in each cell: replace them in order. */
        PyObject **cell = PyArray_DATA((PyArrayObject *)arr);
        const char *p = data;
        for (size_t i = 0; i < cells; i++) {
            PyObject *b = PyBytes_FromStringAndSize(p, (Py_ssize_t)counts[i]);
            if (!b) {
                Py_CLEAR(arr);
                break;
            }
            p += counts[i];
            Py_XSETREF(cell[i], b);
        }
    }
    free(data);
    PyMem_Free(counts);
    return arr;
}

static PyMethodDef vlen_methods[] = {
    {"read", (PyCFunction)vlen_read, METH_O,
     "read(rows) -> (counts, data): rows is a 1-D array of row numbers (any order, repeats allowed);\n"
     "counts[i] is the element count of row rows[i], data every row's elements concatenated\n"
     "(an array of the element dtype)."},
    {"read_strings", (PyCFunction)vlen_read_strings, METH_O,
     "read_strings(rows) -> an object array of shape (len(rows),) + shape[1:] of bytes, rows\n"
     "any order, repeats allowed (a 0-d dataset: rows [0], shape (1,)); strings only."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef vlen_getset[] = {
    {"dtype", (getter)vlen_get_dtype, NULL, "Element dtype, as h5py reports it.", NULL},
    {"shape", (getter)vlen_get_shape, NULL, "Dataset shape: (rows,) for a VLArray; a string dataset's own.", NULL},
    {"is_string", (getter)vlen_get_is_string, NULL, "True for a dataset of variable-length strings.", NULL},
    {"encoding", (getter)vlen_get_encoding, NULL, "Strings: 'utf-8' or 'ascii', the stored character set; else None.",
     NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot vlen_slots[] = {
    {Py_tp_dealloc, vlen_dealloc},
    {Py_tp_traverse, vlen_traverse},
    {Py_tp_methods, vlen_methods},
    {Py_tp_getset, vlen_getset},
    {Py_tp_doc, "An opened variable-length dataset (PyTables VLArray, or variable-length strings); made by "
                "vlen_open()."},
    {0, NULL},
};

static PyType_Spec vlen_spec = {
    .name = "multiload._core.VLen",
    .basicsize = sizeof(VLenObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE |
             Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = vlen_slots,
};

int ml_py_add_vlen_type(PyObject *m, ml_module_state *st) {
    st->vlen_type = (PyTypeObject *)PyType_FromModuleAndSpec(m, &vlen_spec, NULL);
    if (!st->vlen_type)
        return -1;
    return PyModule_AddType(m, st->vlen_type);
}
