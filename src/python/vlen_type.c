/* vlen_type.c - VLen: an opened variable-length dataset (PyTables VLArray)
 * and its row reader, over vlen.c. `vlen_open(filename, path)` makes one,
 * or returns None when the path is not a variable-length dataset (the
 * caller then reports its own error). Opening, reading and closing take
 * the HDF5 lock, so they run with the GIL released and touch no Python
 * object meanwhile.
 */
#include "ml_python.h"

#include "../vlen.h"

typedef struct VLenObject {
    PyObject_HEAD
    ml_vlen *V;            /* owned */
    PyArray_Descr *descr;  /* owned: element dtype, as h5py reports it */
} VLenObject;

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
    PyArray_Descr *descr = ml_py_descr(V->base);
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
    return Py_BuildValue("(K)", (unsigned long long)self->V->n_rows);
}

/* Frees the rows' buffer when the last array viewing it goes. */
static void free_capsule(PyObject *cap) { free(PyCapsule_GetPointer(cap, "multiload.vlen_rows")); }

static PyObject *vlen_read(VLenObject *self, PyObject *arg) {
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

static PyMethodDef vlen_methods[] = {
    {"read", (PyCFunction)vlen_read, METH_O,
     "read(rows) -> (counts, data): rows is a 1-D array of row numbers (any order, repeats allowed);\n"
     "counts[i] is the element count of row rows[i], data every row's elements concatenated\n"
     "(an array of the element dtype)."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef vlen_getset[] = {
    {"dtype", (getter)vlen_get_dtype, NULL, "Element dtype, as h5py reports it.", NULL},
    {"shape", (getter)vlen_get_shape, NULL, "Dataset shape: (rows,).", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot vlen_slots[] = {
    {Py_tp_dealloc, vlen_dealloc},
    {Py_tp_traverse, vlen_traverse},
    {Py_tp_methods, vlen_methods},
    {Py_tp_getset, vlen_getset},
    {Py_tp_doc, "An opened variable-length dataset (PyTables VLArray); made by vlen_open()."},
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
