/* dtype.c - core type tree to numpy dtype, matching what h5py reports:
 * byte order kept (zero copy), compounds with their file offsets and
 * itemsize, h5py's complex compounds {r, i} as complex, fixed strings
 * with h5py's encoding metadata. */
#include "ml_python.h"

static char order_char(const ml_type *t) {
    if (t->size == 1)
        return '|';
    return t->big_endian ? '>' : '<';
}

static int is_h5py_complex(const ml_type *t) {
    if (t->kind != ML_T_COMPOUND || t->n_members != 2)
        return 0;
    const ml_type *a = t->members[0], *b = t->members[1];
    return strcmp(t->member_names[0], "r") == 0 && strcmp(t->member_names[1], "i") == 0 &&
           a->kind == ML_T_FLOAT && b->kind == ML_T_FLOAT && a->size == b->size &&
           a->size >= 4 && a->big_endian == b->big_endian && t->member_offsets[0] == 0 &&
           t->member_offsets[1] == a->size && t->size == 2 * a->size;
}

/* New reference to an object np.dtype() accepts. */
static PyObject *spec(const ml_type *t) {
    switch (t->kind) {
    case ML_T_INT:
    case ML_T_UINT:
    case ML_T_FLOAT:
        return PyUnicode_FromFormat("%c%c%zu", order_char(t),
                                    t->kind == ML_T_INT ? 'i' : t->kind == ML_T_UINT ? 'u' : 'f',
                                    t->size);
    case ML_T_BOOL:
        return PyUnicode_FromString("?");
    case ML_T_TIME64: /* converted to float64 in the machine's order on read (convert.c) */
        return PyUnicode_FromString("=f8");
    case ML_T_STRING: {
        /* np.dtype('S<n>', metadata={'h5py_encoding': ...}): what h5py gives, so
         * h5py.check_string_dtype() names the character set. */
        PyObject *s = PyUnicode_FromFormat("S%zu", t->size);
        PyObject *args = s ? PyTuple_Pack(1, s) : NULL;
        PyObject *md = Py_BuildValue("{ss}", "h5py_encoding", t->cset ? "utf-8" : "ascii");
        PyObject *kw = md ? Py_BuildValue("{sO}", "metadata", md) : NULL;
        PyObject *d = args && kw ? PyObject_Call((PyObject *)&PyArrayDescr_Type, args, kw) : NULL;
        Py_XDECREF(s);
        Py_XDECREF(args);
        Py_XDECREF(md);
        Py_XDECREF(kw);
        return d;
    }
    case ML_T_ARRAY: {
        PyObject *base = spec(t->base), *shape = PyTuple_New(t->ndim);
        if (!base || !shape) {
            Py_XDECREF(base);
            Py_XDECREF(shape);
            return NULL;
        }
        for (unsigned i = 0; i < t->ndim; i++)
            PyTuple_SET_ITEM(shape, i, PyLong_FromUnsignedLongLong(t->dims[i]));
        PyObject *r = PyTuple_Pack(2, base, shape);
        Py_DECREF(base);
        Py_DECREF(shape);
        return r;
    }
    case ML_T_COMPOUND: {
        if (is_h5py_complex(t))
            return PyUnicode_FromFormat("%cc%zu", t->members[0]->big_endian ? '>' : '<', t->size);
        PyObject *names = PyList_New(t->n_members), *formats = PyList_New(t->n_members),
                 *offsets = PyList_New(t->n_members), *d = NULL;
        if (!names || !formats || !offsets)
            goto done;
        for (unsigned i = 0; i < t->n_members; i++) {
            PyObject *n = PyUnicode_DecodeUTF8(t->member_names[i], strlen(t->member_names[i]), "replace");
            PyObject *f = spec(t->members[i]);
            PyObject *o = PyLong_FromSize_t(t->member_offsets[i]);
            if (!n || !f || !o) {
                Py_XDECREF(n);
                Py_XDECREF(f);
                Py_XDECREF(o);
                goto done;
            }
            PyList_SET_ITEM(names, i, n);
            PyList_SET_ITEM(formats, i, f);
            PyList_SET_ITEM(offsets, i, o);
        }
        d = Py_BuildValue("{sOsOsOsn}", "names", names, "formats", formats, "offsets", offsets,
                          "itemsize", (Py_ssize_t)t->size);
    done:
        Py_XDECREF(names);
        Py_XDECREF(formats);
        Py_XDECREF(offsets);
        return d;
    }
    }
    PyErr_SetString(PyExc_TypeError, "unknown core type");
    return NULL;
}

PyArray_Descr *ml_py_descr(const ml_type *t) {
    PyObject *s = spec(t);
    if (!s)
        return NULL;
    PyArray_Descr *d = NULL;
    if (!PyArray_DescrConverter(s, &d))
        d = NULL;
    Py_DECREF(s);
    return d;
}
