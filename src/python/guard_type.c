/* guard_type.c - Guard: the reservation of one ring slot, handed out by
 * queue.get(). `with guard as block` gives a zero-copy numpy view of the
 * slot and releases the reservation on exit.
 *
 * Each view's base is the guard, and the guard holds a ring reference, so
 * slot memory lives as long as any view: a view used after release shows
 * whatever the slot holds next (stale data), never freed memory. A guard
 * dropped without release gives its slot back in dealloc.
 */
#include "ml_python.h"

#include <unistd.h>

typedef struct GuardObject {
    PyObject_HEAD
    ml_ring *ring;           /* owned reference */
    unsigned slot;
    int released;            /* 1 once the slot went back; GIL-protected */
    void *data;              /* slot memory (borrowed from ring) */
    PyArray_Descr *descr;    /* owned */
    PyObject *field;         /* owned or NULL: column to view */
    int ndim;
    npy_intp dims[ML_MAX_DIMS];
    uint64_t seq;            /* block number */
    uint64_t start;          /* first row of the block */
    pid_t pid;               /* process that took the block */
} GuardObject;

PyObject *ml_py_guard_new(PyTypeObject *tp, ml_ring *ring, const ml_taken *t,
                          PyArray_Descr *descr, int ndim, const npy_intp *row_dims,
                          PyObject *field, uint64_t start_row) {
    GuardObject *g = PyObject_New(GuardObject, tp);
    if (!g)
        return NULL;
    ml_ring_ref(ring);
    g->ring = ring;
    g->slot = t->slot;
    g->released = 0;
    g->data = t->data;
    Py_INCREF(descr);
    g->descr = descr;
    Py_XINCREF(field);
    g->field = field;
    g->ndim = ndim;
    g->dims[0] = (npy_intp)t->rows;
    for (int i = 1; i < ndim; i++)
        g->dims[i] = row_dims[i - 1];
    g->seq = t->seq;
    g->start = start_row;
    g->pid = ml_py_pid();
    return (PyObject *)g;
}

static void guard_release_slot(GuardObject *g) {
    if (g->pid != ml_py_pid()) {
        g->released = 1; /* forked child: the ring's lock may be held by a thread that no longer exists */
        return;
    }
    if (!g->released) {
        g->released = 1;
        ml_ring_release(g->ring, g->slot);
    }
}

static void guard_dealloc(GuardObject *g) {
    PyTypeObject *tp = Py_TYPE(g);
    guard_release_slot(g);
    if (g->pid == ml_py_pid())
        ml_ring_unref(g->ring);
    Py_XDECREF(g->descr);
    Py_XDECREF(g->field);
    PyObject_Free(g);
    Py_DECREF(tp);
}

static PyObject *guard_view(GuardObject *g) {
    if (g->released) {
        PyErr_SetString(PyExc_RuntimeError,
                        "this guard was already released; its block may have been reused");
        return NULL;
    }
    Py_INCREF(g->descr); /* stolen by PyArray_NewFromDescr */
    PyObject *arr = PyArray_NewFromDescr(&PyArray_Type, g->descr, g->ndim, g->dims, NULL,
                                         g->data, NPY_ARRAY_CARRAY, NULL);
    if (!arr)
        return NULL;
    Py_INCREF(g);
    if (PyArray_SetBaseObject((PyArrayObject *)arr, (PyObject *)g) < 0) {
        Py_DECREF(arr);
        return NULL;
    }
    if (g->field) {
        PyObject *col = PyObject_GetItem(arr, g->field);
        Py_DECREF(arr);
        return col;
    }
    return arr;
}

static PyObject *guard_enter(GuardObject *g, PyObject *Py_UNUSED(ignored)) { return guard_view(g); }

static PyObject *guard_exit(GuardObject *g, PyObject *args) {
    (void)args;
    guard_release_slot(g);
    Py_RETURN_FALSE;
}

static PyObject *guard_release(GuardObject *g, PyObject *Py_UNUSED(ignored)) {
    guard_release_slot(g);
    Py_RETURN_NONE;
}

static PyObject *guard_get_array(GuardObject *g, void *closure) {
    (void)closure;
    return guard_view(g);
}

static PyObject *guard_get_released(GuardObject *g, void *closure) {
    (void)closure;
    return PyBool_FromLong(g->released);
}

static PyObject *guard_get_index(GuardObject *g, void *closure) {
    (void)closure;
    return PyLong_FromUnsignedLongLong(g->seq);
}

static PyObject *guard_get_start(GuardObject *g, void *closure) {
    (void)closure;
    return PyLong_FromUnsignedLongLong(g->start);
}

static PyObject *guard_get_rows(GuardObject *g, void *closure) {
    (void)closure;
    return PyLong_FromSsize_t(g->dims[0]);
}

static PyObject *guard_repr(GuardObject *g) {
    return PyUnicode_FromFormat("<multiload Guard block=%llu rows=%zd%s>", (unsigned long long)g->seq,
                                g->dims[0], g->released ? " released" : "");
}

static PyMethodDef guard_methods[] = {
    {"__enter__", (PyCFunction)guard_enter, METH_NOARGS, "Reserve: return the block as a numpy view."},
    {"__exit__", (PyCFunction)guard_exit, METH_VARARGS, "Release the slot back to the ring."},
    {"release", (PyCFunction)guard_release, METH_NOARGS,
     "Release the slot back to the ring (idempotent). Views made earlier may then show newer data."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef guard_getset[] = {
    {"array", (getter)guard_get_array, NULL, "A new numpy view of the block (valid until release).", NULL},
    {"released", (getter)guard_get_released, NULL, "True once the slot was released.", NULL},
    {"index", (getter)guard_get_index, NULL, "Block number in the stream (0, 1, ...).", NULL},
    {"start", (getter)guard_get_start, NULL, "Dataset row of the block's first row.", NULL},
    {"rows", (getter)guard_get_rows, NULL, "Number of rows in the block.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot guard_slots[] = {
    {Py_tp_dealloc, guard_dealloc},
    {Py_tp_methods, guard_methods},
    {Py_tp_getset, guard_getset},
    {Py_tp_repr, guard_repr},
    {Py_tp_doc, "Reservation of one block in a queue's ring buffer.\n\n"
                "Use as ``with guard as block:``; the block is a zero-copy numpy view\n"
                "that is valid until the with-statement ends (or release() is called)."},
    {0, NULL},
};

/* No GC: a guard references no container that could point back to it. */
static PyType_Spec guard_spec = {
    .name = "multiload._core.Guard",
    .basicsize = sizeof(GuardObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = guard_slots,
};

int ml_py_add_guard_type(PyObject *m, ml_module_state *st) {
    st->guard_type = (PyTypeObject *)PyType_FromModuleAndSpec(m, &guard_spec, NULL);
    if (!st->guard_type)
        return -1;
    return PyModule_AddType(m, st->guard_type);
}
