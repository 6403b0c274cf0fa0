/* remote_stream_type.c - RemoteStream: the consumer's end of a stream that
 * a loader process fills (multiload/loader_process.py). The loader's
 * workers write blocks into a shared ring (one sealed memfd, ring.c); this
 * process maps that ring (ml_ring_attach, which checks the header and
 * trusts nothing in it), takes blocks from it under its own owner id and
 * hands them out as the same Guards a local Stream gives. The schedule is
 * rebuilt here from the stream's parameters (schedule.c is a pure
 * function of them), so a guard's start row needs nothing from the loader.
 *
 * Liveness: take() waits in 100 ms steps, as Stream.take does for Ctrl-C.
 * After each step that found nothing it polls `live_fd`, this process's
 * duplicate of its connection to the loader: the loader never writes on
 * it unasked, so a hang-up or EOF there means the loader process is gone
 * (it died, or exited without closing the ring). take() then raises
 * BrokenPipeError, which the Python side turns into LoaderDiedError with
 * the exit status. A loader that shuts down cleanly closes the ring
 * first, so its consumers see the end of the stream instead.
 *
 * Nothing the other process wrote is trusted: a block's row count is
 * checked against what its slot can hold before a view is made of it. */
#include "ml_python.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <stdatomic.h>
#include <unistd.h>

#include "../schedule.h"

typedef struct RemoteStreamObject {
    PyObject_HEAD
    ml_ring *ring;           /* owned; NULL once closed (guards hold their own references) */
    ml_schedule sch;         /* the loader's schedule, rebuilt from its parameters */
    PyArray_Descr *descr;    /* owned: dtype of a row */
    PyObject *field;         /* owned or NULL */
    PyObject *filename;      /* owned str: for errors */
    int ndim;
    npy_intp row_dims[ML_MAX_DIMS];
    uint64_t row_bytes;      /* bytes of one row in a slot, >= 1 */
    int ordered;
    int live_fd;             /* owned duplicate of the loader connection, or -1 */
    int closed;              /* GIL-protected */
    pid_t pid;               /* process that attached the ring */
    _Atomic uint64_t st_blocks, st_bytes, st_wait_ns, st_errors;
} RemoteStreamObject;

static int remote_forked(RemoteStreamObject *self) {
    if (self->pid == ml_py_pid())
        return 0;
    PyErr_SetString(PyExc_RuntimeError,
                    "this loader queue was connected in another process (before fork()); "
                    "connect to the loader again in this process");
    return 1;
}

static PyObject *remote_new(PyTypeObject *tp, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"fd", "live_fd", "dtype", "row_shape", "row_bytes", "ordered", "kind",
                             "n_rows", "block_rows", "remainder", "seed", "epoch", "shard_rank",
                             "shard_count", "field", "filename", NULL};
    int fd, live_fd, ordered, kind, remainder;
    PyObject *dtype_obj, *row_shape, *field = Py_None, *filename = Py_None;
    unsigned long long row_bytes, n_rows, block_rows, seed, epoch;
    unsigned shard_rank, shard_count;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "iiOOKpiKKpKKII|OO:RemoteStream", kwlist, &fd, &live_fd,
                                     &dtype_obj, &row_shape, &row_bytes, &ordered, &kind, &n_rows,
                                     &block_rows, &remainder, &seed, &epoch, &shard_rank,
                                     &shard_count, &field, &filename))
        return NULL;
    PyArray_Descr *descr = NULL;
    if (!PyArray_DescrConverter(dtype_obj, &descr))
        return NULL;
    RemoteStreamObject *self = (RemoteStreamObject *)tp->tp_alloc(tp, 0);
    if (!self) {
        Py_DECREF(descr);
        return NULL;
    }
    self->descr = descr;
    self->live_fd = -1;
    self->pid = ml_py_pid();
    if (field != Py_None) {
        Py_INCREF(field);
        self->field = field;
    }
    self->filename = PyObject_Str(filename);
    if (!self->filename)
        goto fail;
    Py_ssize_t nd = PySequence_Size(row_shape);
    if (nd < 0)
        goto fail;
    if (nd + 1 > ML_MAX_DIMS) {
        PyErr_Format(PyExc_ValueError, "rows of %zd dimensions: at most %d", nd, ML_MAX_DIMS - 1);
        goto fail;
    }
    self->ndim = (int)nd + 1;
    uint64_t elems = 1;
    for (Py_ssize_t i = 0; i < nd; i++) {
        PyObject *d = PySequence_GetItem(row_shape, i);
        if (!d)
            goto fail;
        Py_ssize_t v = PyNumber_AsSsize_t(d, PyExc_OverflowError);
        Py_DECREF(d);
        if (v < 0) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_ValueError, "row_shape holds a negative dimension");
            goto fail;
        }
        self->row_dims[i] = v;
        if (v && elems > UINT64_MAX / (uint64_t)v) {
            PyErr_SetString(PyExc_OverflowError, "row_shape overflows");
            goto fail;
        }
        elems *= (uint64_t)v;
    }
    if (row_bytes == 0 || (uint64_t)PyDataType_ELSIZE(descr) * elems != row_bytes) {
        PyErr_Format(PyExc_ValueError, "row_bytes %llu is not the dtype's %zd bytes times the row's %llu elements",
                     row_bytes, (Py_ssize_t)PyDataType_ELSIZE(descr), (unsigned long long)elems);
        goto fail;
    }
    self->row_bytes = row_bytes;
    self->ordered = ordered;
    ml_schedule_params sp = {.kind = (ml_schedule_kind)kind, .n_rows = n_rows, .block_rows = block_rows,
                             .remainder = remainder, .seed = seed, .epoch = epoch,
                             .shard_rank = shard_rank, .shard_count = shard_count};
    if (kind < ML_SCHEDULE_SEQUENTIAL || kind > ML_SCHEDULE_PERMUTED || ml_schedule_init(&self->sch, &sp) < 0) {
        PyErr_SetString(PyExc_ValueError, "invalid stream schedule parameters");
        goto fail;
    }
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = ml_ring_attach(&self->ring, fd);
    Py_END_ALLOW_THREADS
    if (rc < 0) {
        ml_error e;
        ml_error_clear(&e);
        ml_error_set(&e, rc, "attaching the loader's shared ring failed: %s", ml_strerror(rc));
        ml_py_raise(&e, NULL);
        goto fail;
    }
    /* The ring must hand out this schedule's blocks, each fitting a slot. */
    uint64_t max_rows = ml_schedule_max_rows(&self->sch);
    uint64_t limit = ml_schedule_n_blocks(&self->sch);
    if (ml_ring_limit(self->ring) != limit || ml_ring_first(self->ring) > limit ||
        max_rows > ml_ring_slot_bytes(self->ring) / row_bytes) {
        PyErr_SetString(PyExc_ValueError, "the loader's shared ring does not match its stream's schedule");
        goto fail;
    }
    if (live_fd >= 0) {
        self->live_fd = fcntl(live_fd, F_DUPFD_CLOEXEC, 3);
        if (self->live_fd < 0) {
            PyErr_SetFromErrno(PyExc_OSError);
            goto fail;
        }
    }
    return (PyObject *)self;
fail:
    Py_DECREF(self);
    return NULL;
}

/* Close the ring for every process (the loader's workers stop) and drop
 * this handle's reference; guards keep the mapping while they live. */
static void remote_close_core(RemoteStreamObject *self) {
    self->closed = 1;
    ml_ring *ring = self->ring;
    self->ring = NULL;
    if (!ring)
        return;
    if (self->pid != ml_py_pid())
        return; /* a forked child leaks its copy of the handle rather than touch shared locks */
    Py_BEGIN_ALLOW_THREADS
    ml_ring_close(ring);
    ml_ring_unref(ring);
    Py_END_ALLOW_THREADS
}

static void remote_dealloc(RemoteStreamObject *self) {
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    remote_close_core(self);
    if (self->live_fd >= 0)
        close(self->live_fd);
    Py_CLEAR(self->descr);
    Py_CLEAR(self->field);
    Py_CLEAR(self->filename);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static int remote_traverse(RemoteStreamObject *self, visitproc visit, void *arg) {
    Py_VISIT(Py_TYPE(self));
    return 0;
}

/* True when the loader's end of the connection is gone: a hang-up, or
 * EOF. Bytes waiting there are a stats() reply another thread is about to
 * read, not a sign of death. */
static int loader_gone(int fd) {
    if (fd < 0)
        return 0;
    struct pollfd p = {.fd = fd, .events = POLLIN | POLLRDHUP};
    if (poll(&p, 1, 0) <= 0)
        return 0;
    if (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL))
        return 1;
    char c;
    return (p.revents & POLLIN) && recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT) == 0;
}

typedef struct remote_wait {
    RemoteStreamObject *self; /* in a step only its immutable fields and atomics; `closed` between steps */
    ml_ring *ring;
    uint64_t owner;
    ml_taken *t;
} remote_wait;

static int remote_wait_step(void *arg, long ms) {
    remote_wait *w = arg;
    uint64_t waited = 0;
    int rc = ml_ring_take(w->ring, w->self->ordered, w->owner, ms, w->t, &waited);
    atomic_fetch_add_explicit(&w->self->st_wait_ns, waited, memory_order_relaxed);
    return rc;
}

/* Between waits: closed here (another thread), or the loader gone. */
static int remote_wait_between(void *arg) {
    remote_wait *w = arg;
    if (w->self->closed)
        return 1;
    if (loader_gone(w->self->live_fd)) {
        PyErr_SetString(PyExc_BrokenPipeError, "the loader process is gone");
        return -1;
    }
    return 0;
}

static PyObject *remote_take(RemoteStreamObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"timeout", NULL};
    PyObject *timeout_obj = Py_None;
    double timeout;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|O:take", kwlist, &timeout_obj) ||
        ml_py_timeout_arg(timeout_obj, &timeout) < 0)
        return NULL;
    if (!self->ring)
        Py_RETURN_NONE;
    if (remote_forked(self))
        return NULL;
    ml_ring *ring = self->ring;
    ml_ring_ref(ring); /* close() from another thread must not unmap it under this wait */
    PyObject *result = NULL;
    ml_taken t;
    remote_wait w = {.self = self, .ring = ring, .owner = ml_ring_owner_id(), .t = &t};
    int rc;
    if (ml_py_wait_steps(timeout, remote_wait_step, remote_wait_between, &w, "block became ready", &rc) < 0)
        goto out;
    if (rc == -ML_EEND || rc == -ML_ECLOSED) {
        Py_INCREF(Py_None);
        result = Py_None;
        goto out;
    }
    if (rc == -ML_EDEADLOCK) {
        ml_py_raise_self_deadlock(ring);
        goto out;
    }
    if (rc < 0) {
        ml_error e;
        ml_error_clear(&e);
        ml_error_set(&e, rc, "waiting for a block from the loader failed: %s", ml_strerror(rc));
        ml_py_raise(&e, PyUnicode_AsUTF8(self->filename));
        goto out;
    }
    atomic_fetch_add_explicit(&self->st_blocks, 1, memory_order_relaxed);
    if (t.error.code) {
        atomic_fetch_add_explicit(&self->st_errors, 1, memory_order_relaxed);
        ml_ring_release(ring, t.slot);
        ml_py_raise(&t.error, PyUnicode_AsUTF8(self->filename));
        goto out;
    }
    ml_block_runs runs;
    uint64_t want = 0; /* the rows the schedule says block t.seq holds */
    int bad = ml_schedule_block(&self->sch, t.seq, &runs) < 0;
    for (unsigned i = 0; !bad && i < runs.n; i++)
        want += runs.count[i];
    if (bad || t.rows != want || t.rows > ml_ring_slot_bytes(ring) / self->row_bytes) {
        ml_ring_release(ring, t.slot);
        PyErr_Format(PyExc_RuntimeError, "the loader handed out block %llu of %llu rows, which its stream "
                     "cannot hold", (unsigned long long)t.seq, (unsigned long long)t.rows);
        goto out;
    }
    atomic_fetch_add_explicit(&self->st_bytes, t.rows * self->row_bytes, memory_order_relaxed);
    ml_module_state *st = ml_state_of_type(Py_TYPE(self));
    result = ml_py_guard_new(st->guard_type, ring, &t, self->descr, self->ndim, self->row_dims, self->field,
                             runs.start[0]);
    if (!result)
        ml_ring_release(ring, t.slot);
out:
    ml_ring_unref(ring);
    return result;
}

static PyObject *remote_close(RemoteStreamObject *self, PyObject *Py_UNUSED(ignored)) {
    remote_close_core(self);
    Py_RETURN_NONE;
}

static PyObject *remote_stats(RemoteStreamObject *self, PyObject *Py_UNUSED(ignored)) {
    return Py_BuildValue("{sKsKsdsK}", "blocks", (unsigned long long)atomic_load(&self->st_blocks), "bytes",
                         (unsigned long long)atomic_load(&self->st_bytes), "wait_seconds",
                         atomic_load(&self->st_wait_ns) * 1e-9, "errors",
                         (unsigned long long)atomic_load(&self->st_errors));
}

static PyObject *remote_get_closed(RemoteStreamObject *self, void *closure) {
    (void)closure;
    return PyBool_FromLong(self->closed);
}

static PyMethodDef remote_methods[] = {
    {"take", (PyCFunction)(void (*)(void))remote_take, METH_VARARGS | METH_KEYWORDS,
     "take(timeout=None) -> Guard, or None at the end of the stream or after close(); BrokenPipeError "
     "when the loader process is gone."},
    {"close", (PyCFunction)remote_close, METH_NOARGS,
     "Close the shared ring (the loader's workers stop) and drop this process's reference."},
    {"stats", (PyCFunction)remote_stats, METH_NOARGS, "Consumer-side counters: blocks, bytes, wait_seconds, errors."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef remote_getset[] = {
    {"closed", (getter)remote_get_closed, NULL, "True once close() ran.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot remote_slots[] = {
    {Py_tp_new, remote_new},
    {Py_tp_dealloc, remote_dealloc},
    {Py_tp_traverse, remote_traverse},
    {Py_tp_methods, remote_methods},
    {Py_tp_getset, remote_getset},
    {Py_tp_doc, "The consumer's end of a loader process's shared ring (internal; see multiload.LoaderProcess)."},
    {0, NULL},
};

static PyType_Spec remote_spec = {
    .name = "multiload._core.RemoteStream",
    .basicsize = sizeof(RemoteStreamObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = remote_slots,
};

int ml_py_add_remote_stream_type(PyObject *m, ml_module_state *st) {
    st->remote_stream_type = (PyTypeObject *)PyType_FromModuleAndSpec(m, &remote_spec, NULL);
    if (!st->remote_stream_type)
        return -1;
    return PyModule_AddType(m, st->remote_stream_type);
}
