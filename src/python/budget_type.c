/* budget_type.c - _core.BudgetCore: one I/O budget (budget.c) seen from
 * Python; multiload/budget.py's Budget is the public face. The object owns
 * one reference to the core budget; every stream, reader or file loader
 * given it makes its own client (with its priority) and so its own
 * reference, which outlives this object if it must.
 *
 * BudgetCore(..., fake_clock=True) is the tests' hook: its budget runs on
 * a clock only _set_now() moves, and _poll()/_abandon() step up to
 * N_SIM waiters of its own through ml_budget_poll, so the bucket and the
 * queue are checked with no real time. A fake-clock budget is refused by
 * the engines (their sleeps are real). Nothing here releases the GIL or
 * waits: every call is the budget's lock and a few multiplications.
 */
#include "ml_python.h"

#include <errno.h>

#include "../budget.h"

#define N_SIM 16 /* fake-clock waiters, keys 0..N_SIM-1 */

typedef struct BudgetObject {
    PyObject_HEAD
    ml_budget *b;                    /* owned; NULL only while tp_new fails */
    int fake;                        /* 1: runs on `now` (tests) */
    int64_t *now;                    /* fake: the clock's time, ns (owned; read by the clock callback) */
    ml_budget_waiter sim[N_SIM];     /* fake: the tests' waiters (GIL held) */
} BudgetObject;

static int64_t fake_clock(void *ctx) { return __atomic_load_n((int64_t *)ctx, __ATOMIC_RELAXED); }

static PyObject *budget_new(PyTypeObject *tp, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"max_bytes_per_s", "max_iops", "fake_clock", NULL};
    unsigned long long bps = 0, iops = 0;
    int fake = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|KK$p:BudgetCore", kwlist, &bps, &iops, &fake))
        return NULL;
    BudgetObject *self = (BudgetObject *)tp->tp_alloc(tp, 0);
    if (!self)
        return NULL;
    self->fake = fake;
    if (fake && !(self->now = PyMem_RawCalloc(1, sizeof *self->now))) {
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    int rc = ml_budget_new(&self->b, bps, iops, fake ? fake_clock : NULL, self->now);
    if (rc < 0) {
        Py_DECREF(self);
        errno = -rc;
        return PyErr_SetFromErrno(rc == -ENOMEM ? PyExc_MemoryError : PyExc_OSError);
    }
    return (PyObject *)self;
}

static void budget_dealloc(BudgetObject *self) {
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    if (self->b && self->fake)
        for (int k = 0; k < N_SIM; k++)
            ml_budget_abandon(self->b, &self->sim[k]);
    ml_budget_unref(self->b); /* a fake budget has no other holder, so `now` may go too */
    PyMem_RawFree(self->now);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static int budget_traverse(BudgetObject *self, visitproc visit, void *arg) {
    Py_VISIT(Py_TYPE(self));
    return 0;
}

PyObject *ml_py_budget_stats_dict(const ml_budget_stats *st) {
    double secs = st->elapsed_ns > 0 ? st->elapsed_ns * 1e-9 : 0.0;
    return Py_BuildValue("{sKsKsKsKsdsdsdsdsI}", "bytes", (unsigned long long)st->bytes, "ios",
                         (unsigned long long)st->ios, "takes", (unsigned long long)st->takes, "throttled",
                         (unsigned long long)st->throttled, "throttled_seconds", st->throttled_ns * 1e-9,
                         "elapsed_seconds", secs, "bytes_per_s", secs > 0 ? st->bytes / secs : 0.0, "iops",
                         secs > 0 ? st->ios / secs : 0.0, "waiting", st->waiting);
}

static PyObject *budget_stats(BudgetObject *self, PyObject *Py_UNUSED(ignored)) {
    ml_budget_stats st;
    ml_budget_get_stats(self->b, &st);
    return ml_py_budget_stats_dict(&st);
}

static PyObject *budget_get_bps(BudgetObject *self, void *c) {
    (void)c;
    return PyLong_FromUnsignedLongLong(ml_budget_bytes_per_s(self->b));
}

static PyObject *budget_get_iops(BudgetObject *self, void *c) {
    (void)c;
    return PyLong_FromUnsignedLongLong(ml_budget_iops(self->b));
}

static int need_fake(BudgetObject *self) {
    if (self->fake)
        return 0;
    PyErr_SetString(PyExc_RuntimeError, "only a BudgetCore(fake_clock=True) has a test clock");
    return -1;
}

static int sim_key(PyObject *o, int *out) {
    long k = PyLong_AsLong(o);
    if (k == -1 && PyErr_Occurred())
        return -1;
    if (k < 0 || k >= N_SIM) {
        PyErr_Format(PyExc_ValueError, "waiter key must be in [0, %d)", N_SIM);
        return -1;
    }
    *out = (int)k;
    return 0;
}

/* _set_now(ns): the fake clock's time. */
static PyObject *budget_set_now(BudgetObject *self, PyObject *arg) {
    long long t = PyLong_AsLongLong(arg);
    if ((t == -1 && PyErr_Occurred()) || need_fake(self) < 0)
        return NULL;
    __atomic_store_n(self->now, (int64_t)t, __ATOMIC_RELAXED);
    Py_RETURN_NONE;
}

/* _poll(key, bytes, ios, priority=0) -> (taken, ready_at): one step of
 * waiter `key` (ml_budget_poll); ready_at is None when it waits for the
 * requests ahead of it, else the fake time to poll again. A waiter not
 * queued starts a new request with these arguments. */
static PyObject *budget_poll(BudgetObject *self, PyObject *args) {
    PyObject *key_o;
    unsigned long long bytes, ios;
    int prio = 0, key;
    if (!PyArg_ParseTuple(args, "OKK|i:_poll", &key_o, &bytes, &ios, &prio) || need_fake(self) < 0 ||
        sim_key(key_o, &key) < 0)
        return NULL;
    ml_budget_waiter *w = &self->sim[key];
    if (!w->queued)
        *w = (ml_budget_waiter){.bytes = bytes, .ios = ios, .priority = prio};
    int64_t ready = 0;
    int rc = ml_budget_poll(self->b, w, &ready);
    if (rc == 0)
        return Py_BuildValue("(OO)", Py_True, Py_None);
    if (ready == INT64_MAX)
        return Py_BuildValue("(OO)", Py_False, Py_None);
    return Py_BuildValue("(OL)", Py_False, (long long)ready);
}

/* _abandon(key): unqueue waiter `key`. */
static PyObject *budget_abandon(BudgetObject *self, PyObject *arg) {
    int key;
    if (need_fake(self) < 0 || sim_key(arg, &key) < 0)
        return NULL;
    ml_budget_abandon(self->b, &self->sim[key]);
    Py_RETURN_NONE;
}

static PyMethodDef budget_methods[] = {
    {"stats", (PyCFunction)budget_stats, METH_NOARGS,
     "stats() -> dict: bytes, ios, takes, throttled, throttled_seconds, elapsed_seconds, bytes_per_s, iops, "
     "waiting (the whole budget, every stream of it)."},
    {"_set_now", (PyCFunction)budget_set_now, METH_O, "_set_now(ns): move the fake clock (tests only)."},
    {"_poll", (PyCFunction)budget_poll, METH_VARARGS,
     "_poll(key, bytes, ios, priority=0) -> (taken, ready_at): one non-blocking step of a fake-clock waiter "
     "(tests only)."},
    {"_abandon", (PyCFunction)budget_abandon, METH_O, "_abandon(key): unqueue a fake-clock waiter (tests only)."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef budget_getset[] = {
    {"max_bytes_per_s", (getter)budget_get_bps, NULL, "Bytes per second; 0: unlimited.", NULL},
    {"max_iops", (getter)budget_get_iops, NULL, "I/Os per second; 0: unlimited.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot budget_slots[] = {
    {Py_tp_new, budget_new},
    {Py_tp_dealloc, budget_dealloc},
    {Py_tp_traverse, budget_traverse},
    {Py_tp_methods, budget_methods},
    {Py_tp_getset, budget_getset},
    {Py_tp_doc, "BudgetCore(max_bytes_per_s=0, max_iops=0, *, fake_clock=False): token buckets shared by the "
                "streams given this object (0: unlimited). Internal; see multiload.Budget."},
    {0, NULL},
};

static PyType_Spec budget_spec = {
    .name = "multiload._core.BudgetCore",
    .basicsize = sizeof(BudgetObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = budget_slots,
};

int ml_py_add_budget_type(PyObject *m, ml_module_state *st) {
    st->budget_type = (PyTypeObject *)PyType_FromModuleAndSpec(m, &budget_spec, NULL);
    if (!st->budget_type)
        return -1;
    return PyModule_AddType(m, st->budget_type);
}

int ml_py_budget_arg(ml_module_state *st, PyObject *o, ml_budget **out) {
    *out = NULL;
    if (o == NULL || o == Py_None)
        return 0;
    if (!PyObject_TypeCheck(o, st->budget_type)) {
        PyErr_Format(PyExc_TypeError, "budget must be a multiload.Budget, not %s", Py_TYPE(o)->tp_name);
        return -1;
    }
    BudgetObject *b = (BudgetObject *)o;
    if (b->fake) {
        PyErr_SetString(PyExc_ValueError, "a fake-clock budget is for tests of the bucket only, not for reads");
        return -1;
    }
    *out = b->b;
    return 0;
}
