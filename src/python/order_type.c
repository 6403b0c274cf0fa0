/* order_type.c - _core.Order: the order of an epoch (order.c) seen from
 * Python; multiload/order.py's Order is the public face. Pure arithmetic,
 * no I/O: nothing here releases the GIL (a batch of a few thousand rows
 * takes microseconds). The rules an argument breaks are the core's
 * (ml_order_init, ml_order_check_shard): the binding only turns Python
 * values into integers and strings into enum values, and raises the
 * core's sentence as ValueError; a step or row past the end is IndexError.
 */
#include "ml_python.h"

#include "../order.h"

typedef struct OrderObject {
    PyObject_HEAD
    ml_order o; /* immutable after __init__ */
    int ready;  /* o was initialised */
} OrderObject;

static const char *const shuffle_names[] = {"none", "block", "window", "global"};
static const char *const tail_names[] = {"drop", "pad", "uneven"};

/* A Python int into *out, >= 0 and below 2^64; TypeError / ValueError naming `name`. */
static int to_u64(PyObject *v, const char *name, uint64_t *out) {
    PyObject *i = PyNumber_Index(v);
    if (!i) {
        PyErr_Format(PyExc_TypeError, "%s must be an integer, not %s", name, Py_TYPE(v)->tp_name);
        return -1;
    }
    int neg = PyObject_RichCompareBool(i, Py_False, Py_LT); /* False == 0 */
    if (neg != 0) {
        Py_DECREF(i);
        if (neg > 0)
            PyErr_Format(PyExc_ValueError, "%s must be >= 0", name);
        return -1;
    }
    unsigned long long u = PyLong_AsUnsignedLongLong(i);
    Py_DECREF(i);
    if (u == (unsigned long long)-1 && PyErr_Occurred()) {
        PyErr_Format(PyExc_ValueError, "%s must be below 2**64", name);
        return -1;
    }
    *out = u;
    return 0;
}

/* A name from names[] into its index; an unknown string gives n (which the
 * core refuses with its rule). */
static int to_enum(PyObject *v, const char *what, const char *const *names, int n, int *out) {
    if (!PyUnicode_Check(v)) {
        PyErr_Format(PyExc_TypeError, "%s must be a string, not %s", what, Py_TYPE(v)->tp_name);
        return -1;
    }
    const char *s = PyUnicode_AsUTF8(v);
    if (!s)
        return -1;
    *out = n;
    for (int k = 0; k < n; k++)
        if (strcmp(s, names[k]) == 0)
            *out = k;
    return 0;
}

static int order_init(OrderObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"n_rows", "block_rows", "seed", "epoch", "shuffle", "window_rows",
                             "num_streams", "global_batch", "tail", "version", NULL};
    PyObject *n_rows, *block_rows, *seed, *epoch, *shuffle, *window_rows = Py_None, *num_streams = Py_None;
    PyObject *global_batch, *tail, *version;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O$OOOOOOOOO:Order", kwlist, &n_rows, &block_rows, &seed,
                                     &epoch, &shuffle, &window_rows, &num_streams, &global_batch, &tail,
                                     &version))
        return -1;
    ml_order_params p = {0};
    int sh, tl;
    if (to_u64(n_rows, "n_rows", &p.n_rows) < 0 || to_u64(seed, "seed", &p.seed) < 0 ||
        to_u64(epoch, "epoch", &p.epoch) < 0 || to_u64(block_rows, "block_rows", &p.block_rows) < 0 ||
        to_u64(global_batch, "global_batch", &p.global_batch) < 0)
        return -1;
    if (to_enum(shuffle, "shuffle", shuffle_names, 4, &sh) < 0 || to_enum(tail, "tail", tail_names, 3, &tl) < 0)
        return -1;
    p.shuffle = (ml_order_shuffle)sh;
    p.tail = (ml_order_tail)tl;
    if (window_rows != Py_None) {
        if (to_u64(window_rows, "window_rows", &p.window_rows) < 0)
            return -1;
        if (p.window_rows < 1) { /* 0 is the core's "default" */
            PyErr_SetString(PyExc_ValueError, "window_rows must be >= 1 (a multiple of block_rows)");
            return -1;
        }
    }
    p.num_streams = 1;
    if (num_streams != Py_None && to_u64(num_streams, "num_streams", &p.num_streams) < 0)
        return -1;
    uint64_t v;
    if (to_u64(version, "version", &v) < 0) {
        if (!PyErr_ExceptionMatches(PyExc_ValueError))
            return -1;
        PyErr_Clear();
        v = 0;
    }
    p.version = v > 1000 ? 0 : (unsigned)v;
    char why[160];
    if (ml_order_init(&self->o, &p, why, sizeof why) < 0) {
        PyErr_SetString(PyExc_ValueError, why);
        return -1;
    }
    self->ready = 1;
    return 0;
}

static int ready(OrderObject *self) {
    if (!self->ready)
        PyErr_SetString(PyExc_RuntimeError, "Order.__init__ was not called");
    return self->ready;
}

static PyObject *order_row(OrderObject *self, PyObject *arg) {
    if (!ready(self))
        return NULL;
    long long k = PyLong_AsLongLong(arg);
    if (k == -1 && PyErr_Occurred())
        return NULL;
    if (k < 0 || (uint64_t)k >= self->o.p.n_rows)
        return PyErr_Format(PyExc_IndexError, "position %lld is out of range of an order of %llu rows", k,
                            (unsigned long long)self->o.p.n_rows);
    return PyLong_FromUnsignedLongLong(ml_order_row(&self->o, (uint64_t)k));
}

/* (step, rank, world_size) from the arguments, the shard checked. */
static int shard_args(OrderObject *self, PyObject *args, PyObject *kw, const char *fmt, long long *step,
                      uint64_t *rank, uint64_t *world) {
    static char *kw_batch[] = {"step", "rank", "world_size", NULL};
    static char *kw_steps[] = {"rank", "world_size", NULL};
    long long r = 0, w = 1;
    int ok = step ? PyArg_ParseTupleAndKeywords(args, kw, fmt, kw_batch, step, &r, &w)
                  : PyArg_ParseTupleAndKeywords(args, kw, fmt, kw_steps, &r, &w);
    if (!ok)
        return -1;
    if (w >= 1 && (r < 0 || r >= w)) {
        PyErr_Format(PyExc_ValueError, "rank (%lld) must be in [0, world_size) = [0, %lld)", r, w);
        return -1;
    }
    *rank = (uint64_t)(r < 0 ? 0 : r);
    *world = (uint64_t)(w < 0 ? 0 : w);
    char why[160];
    if (ml_order_check_shard(&self->o, *rank, *world, why, sizeof why) < 0) {
        PyErr_SetString(PyExc_ValueError, why);
        return -1;
    }
    return 0;
}

static PyObject *order_steps(OrderObject *self, PyObject *args, PyObject *kw) {
    uint64_t rank, world;
    if (!ready(self) || shard_args(self, args, kw, "|LL:steps", NULL, &rank, &world) < 0)
        return NULL;
    return PyLong_FromUnsignedLongLong(ml_order_steps(&self->o, rank, world));
}

static PyObject *order_local_batch(OrderObject *self, PyObject *args, PyObject *kw) {
    long long step;
    uint64_t rank, world;
    if (!ready(self) || shard_args(self, args, kw, "L|LL:local_batch", &step, &rank, &world) < 0)
        return NULL;
    uint64_t steps = ml_order_steps(&self->o, rank, world);
    if (step < 0 || (uint64_t)step >= steps)
        return PyErr_Format(PyExc_IndexError, "step %lld is out of range: rank %llu of %llu has %llu steps", step,
                            (unsigned long long)rank, (unsigned long long)world, (unsigned long long)steps);
    npy_intp n = (npy_intp)(self->o.p.global_batch / world);
    PyArrayObject *rows = (PyArrayObject *)PyArray_SimpleNew(1, &n, NPY_INT64);
    PyArrayObject *valid = rows ? (PyArrayObject *)PyArray_SimpleNew(1, &n, NPY_BOOL) : NULL;
    if (!valid) {
        Py_XDECREF(rows);
        return NULL;
    }
    uint64_t got = 0;
    /* Every row is below N < 2^64 - GB; an int64 array holds it when N < 2^63. */
    int rc = ml_order_local_batch(&self->o, (uint64_t)step, rank, world, PyArray_DATA(rows),
                                  PyArray_DATA(valid), &got);
    if (rc < 0) { /* checked above: unreachable */
        Py_DECREF(rows);
        Py_DECREF(valid);
        return PyErr_Format(PyExc_RuntimeError, "ml_order_local_batch failed (%d)", rc);
    }
    if ((npy_intp)got < n) { /* uneven: the last batch is short; a copy, not a view of the buffer */
        PyObject *part = PySequence_GetSlice((PyObject *)rows, 0, (Py_ssize_t)got);
        PyObject *c = part ? PyArray_NewCopy((PyArrayObject *)part, NPY_CORDER) : NULL;
        Py_XDECREF(part);
        Py_DECREF(rows);
        Py_DECREF(valid);
        return c;
    }
    if (self->o.p.tail == ML_ORDER_PAD) {
        PyObject *res = PyTuple_Pack(2, (PyObject *)rows, (PyObject *)valid);
        Py_DECREF(rows);
        Py_DECREF(valid);
        return res;
    }
    Py_DECREF(valid);
    return (PyObject *)rows;
}

static void order_dealloc(OrderObject *self) {
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static int order_traverse(OrderObject *self, visitproc visit, void *arg) {
    Py_VISIT(Py_TYPE(self));
    return 0;
}

#define U64_GETTER(name, expr)                                                     \
    static PyObject *get_##name(OrderObject *self, void *c) {                      \
        (void)c;                                                                   \
        if (!ready(self))                                                          \
            return NULL;                                                           \
        return PyLong_FromUnsignedLongLong(expr);                                  \
    }
U64_GETTER(n_rows, self->o.p.n_rows)
U64_GETTER(block_rows, self->o.p.block_rows)
U64_GETTER(seed, self->o.p.seed)
U64_GETTER(epoch, self->o.p.epoch)
U64_GETTER(num_streams, self->o.p.num_streams)
U64_GETTER(global_batch, self->o.p.global_batch)
U64_GETTER(version, self->o.p.version)
U64_GETTER(steps_per_epoch, self->o.steps)
U64_GETTER(stream_rows, self->o.stream_rows)
U64_GETTER(tail_rows, self->o.p.n_rows - self->o.body_rows)

static PyObject *get_window_rows(OrderObject *self, void *c) {
    (void)c;
    if (!ready(self))
        return NULL;
    if (self->o.p.shuffle != ML_ORDER_WINDOW)
        Py_RETURN_NONE;
    return PyLong_FromUnsignedLongLong(self->o.p.window_rows);
}

static PyObject *get_shuffle(OrderObject *self, void *c) {
    (void)c;
    return ready(self) ? PyUnicode_FromString(shuffle_names[self->o.p.shuffle]) : NULL;
}

static PyObject *get_tail(OrderObject *self, void *c) {
    (void)c;
    return ready(self) ? PyUnicode_FromString(tail_names[self->o.p.tail]) : NULL;
}

static PyMethodDef order_methods[] = {
    {"row", (PyCFunction)order_row, METH_O, "row(k) -> the k-th row of the epoch's global sequence."},
    {"local_batch", (PyCFunction)(void (*)(void))order_local_batch, METH_VARARGS | METH_KEYWORDS,
     "local_batch(step, rank=0, world_size=1) -> int64 rows; under tail='pad' (rows, valid)."},
    {"steps", (PyCFunction)(void (*)(void))order_steps, METH_VARARGS | METH_KEYWORDS,
     "steps(rank=0, world_size=1) -> batches that rank gets in the epoch."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef order_getset[] = {
    {"n_rows", (getter)get_n_rows, NULL, NULL, NULL},
    {"block_rows", (getter)get_block_rows, NULL, NULL, NULL},
    {"seed", (getter)get_seed, NULL, NULL, NULL},
    {"epoch", (getter)get_epoch, NULL, NULL, NULL},
    {"shuffle", (getter)get_shuffle, NULL, NULL, NULL},
    {"window_rows", (getter)get_window_rows, NULL, "Rows per window (shuffle='window'), else None.", NULL},
    {"num_streams", (getter)get_num_streams, NULL, NULL, NULL},
    {"global_batch", (getter)get_global_batch, NULL, NULL, NULL},
    {"tail", (getter)get_tail, NULL, NULL, NULL},
    {"version", (getter)get_version, NULL, NULL, NULL},
    {"steps_per_epoch", (getter)get_steps_per_epoch, NULL, "Global batches per epoch.", NULL},
    {"stream_rows", (getter)get_stream_rows, NULL, "Rows of each stream.", NULL},
    {"tail_rows", (getter)get_tail_rows, NULL, "Rows after the interleaved streams.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot order_slots[] = {
    {Py_tp_dealloc, order_dealloc},
    {Py_tp_traverse, order_traverse},
    {Py_tp_init, order_init},
    {Py_tp_new, PyType_GenericNew},
    {Py_tp_methods, order_methods},
    {Py_tp_getset, order_getset},
    {Py_tp_doc, "The order of an epoch (order.c); multiload.Order is the public face."},
    {0, NULL},
};

static PyType_Spec order_spec = {
    .name = "multiload._core.Order",
    .basicsize = sizeof(OrderObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = order_slots,
};

int ml_py_add_order_type(PyObject *m, ml_module_state *st) {
    st->order_type = (PyTypeObject *)PyType_FromModuleAndSpec(m, &order_spec, NULL);
    if (!st->order_type)
        return -1;
    return PyModule_AddType(m, st->order_type);
}
