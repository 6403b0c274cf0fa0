/* stream_type.c - Stream: one running block stream. take() waits for the
 * next block with the GIL released, waking every 100 ms to let Python run
 * signal handlers, so Ctrl-C interrupts a blocked get(). */
#include "ml_python.h"

#include <errno.h>
#include <stdatomic.h>
#include <unistd.h>

typedef struct StreamObject {
    PyObject_HEAD
    ml_stream *s;            /* owned */
    ml_layout *L;            /* borrowed from `layout` */
    PyObject *layout;        /* owned: keeps L and descr alive */
    PyArray_Descr *descr;    /* owned */
    PyObject *field;         /* owned or NULL */
    int ndim;
    npy_intp row_dims[ML_MAX_DIMS];
    pid_t pid;               /* process that started the workers */
} StreamObject;

/* After fork() the child has the stream's memory but none of its worker
 * threads, and its locks may have been held by them: never touch it. */
static int stream_forked(StreamObject *self) {
    if (self->pid == ml_py_pid())
        return 0;
    PyErr_SetString(PyExc_RuntimeError,
                    "this multiload queue was created in another process (before fork()); "
                    "create a new Streamer queue in this process");
    return 1;
}

static PyObject *stream_new(PyTypeObject *tp, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"layout", "n_workers", "read_ahead", "block_rows", "cyclic", "ordered",
                             "remainder", "field", "io_mode", "direct", "permuted", "seed",
                             "epoch", "shard_rank", "shard_count", "shared", "budget", "budget_priority", NULL};
    PyObject *layout, *field = Py_None, *budget = Py_None;
    ml_stream_config cfg = {0};
    unsigned read_ahead;
    unsigned long long block_rows;
    int cyclic, ordered, remainder, io_mode = 0, direct = 0, permuted = 0, shared = 0;
    unsigned long long seed = 0, epoch = 0;
    unsigned shard_rank = 0, shard_count = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OIIKppp|OippKKIIpOi:Stream", kwlist, &layout, &cfg.n_workers,
                                     &read_ahead, &block_rows, &cyclic, &ordered, &remainder, &field,
                                     &io_mode, &direct, &permuted, &seed, &epoch, &shard_rank,
                                     &shard_count, &shared, &budget, &cfg.budget_priority))
        return NULL;
    if (permuted && cyclic) {
        PyErr_SetString(PyExc_ValueError, "a permuted stream cannot be cyclic");
        return NULL;
    }
    if (shard_count < 1 || shard_rank >= shard_count || (cyclic && shard_count > 1)) {
        PyErr_SetString(PyExc_ValueError,
                        "shards need shard_count >= 1, 0 <= shard_rank < shard_count, and cyclic=False "
                        "when shard_count > 1");
        return NULL;
    }
    ml_module_state *st = ml_state_of_type(tp);
    if (!PyObject_TypeCheck(layout, st->layout_type)) {
        PyErr_SetString(PyExc_TypeError, "Stream() needs a Layout");
        return NULL;
    }
    if (ml_py_budget_arg(st, budget, &cfg.budget) < 0)
        return NULL;
    cfg.ordered = ordered;
    cfg.io_mode = (ml_io_mode)io_mode;
    cfg.direct = direct;
    PyArray_Descr *descr;
    ml_layout *L = ml_py_layout_core(layout, &descr);
    StreamObject *self = (StreamObject *)tp->tp_alloc(tp, 0);
    if (!self)
        return NULL;
    Py_INCREF(layout);
    self->layout = layout;
    self->L = L;
    Py_INCREF(descr);
    self->descr = descr;
    if (field != Py_None) {
        Py_INCREF(field);
        self->field = field;
    }
    self->ndim = (int)L->ndim;
    for (unsigned i = 1; i < L->ndim; i++)
        self->row_dims[i - 1] = (npy_intp)L->dims[i];
    self->pid = ml_py_pid();
    ml_error err;
    ml_error_clear(&err);
    /* Sequential, cyclic or permuted (seed, epoch) blocks, optionally one
     * shard of them, from block 0, in a ring this stream alone fills:
     * private, or (shared=True) one memfd a consumer process attaches
     * (ring_fd(); loader_process.py). The defaults are the sequential or
     * cyclic stream, one shard, a private ring. */
    ml_schedule sch;
    ml_schedule_params sp = {.kind = cyclic     ? ML_SCHEDULE_CYCLIC
                                     : permuted ? ML_SCHEDULE_PERMUTED
                                                : ML_SCHEDULE_SEQUENTIAL,
                             .n_rows = L->n_rows, .block_rows = block_rows, .remainder = remainder,
                             .seed = seed, .epoch = epoch, .shard_rank = shard_rank,
                             .shard_count = shard_count};
    int rc = ml_schedule_init(&sch, &sp);
    if (rc < 0) {
        Py_DECREF(self);
        ml_error_set(&err, rc, "invalid stream configuration");
        return ml_py_raise(&err, L->filename);
    }
    ml_ring *ring = NULL;
    Py_BEGIN_ALLOW_THREADS
    rc = ml_stream_ring_new(&ring, L, &sch, read_ahead, shared ? ML_RING_SHARED : ML_RING_PRIVATE, &err);
    if (rc == 0)
        rc = ml_stream_open(&self->s, L, ring, &sch, &cfg, &err);
    ml_ring_unref(ring); /* the stream holds its own reference */
    Py_END_ALLOW_THREADS
    if (rc < 0) {
        Py_DECREF(self);
        return ml_py_raise(&err, L->filename);
    }
    return (PyObject *)self;
}

static void stream_free_core(StreamObject *self) {
    if (self->s && self->pid != ml_py_pid()) {
        self->s = NULL; /* a forked child leaks the parent's stream rather than deadlock */
        return;
    }
    if (self->s) {
        ml_stream *s = self->s;
        self->s = NULL;
        Py_BEGIN_ALLOW_THREADS
        ml_stream_free(s);
        Py_END_ALLOW_THREADS
    }
}

static void stream_dealloc(StreamObject *self) {
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    stream_free_core(self);
    Py_CLEAR(self->descr);
    Py_CLEAR(self->field);
    Py_CLEAR(self->layout);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static int stream_traverse(StreamObject *self, visitproc visit, void *arg) {
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->layout);
    return 0;
}

typedef struct stream_wait {
    ml_stream *s;
    uint64_t owner;
    ml_taken *t;
} stream_wait;

static int stream_wait_step(void *arg, long ms) {
    stream_wait *w = arg;
    return ml_stream_take(w->s, w->owner, ms, w->t);
}

/* What take()/take_nowait() return for ml_stream_take's rc and block t:
 * a Guard, None (end of stream or closed), or NULL with the error set. */
static PyObject *stream_taken(StreamObject *self, int rc, ml_taken *tp) {
    ml_stream *s = self->s;
    ml_taken t = *tp;
    if (rc == -ML_EEND || rc == -ML_ECLOSED)
        Py_RETURN_NONE;
    if (rc == -ML_EDEADLOCK)
        return ml_py_raise_self_deadlock(ml_stream_ring(s));
    if (rc < 0) {
        ml_error e;
        ml_error_clear(&e);
        ml_error_set(&e, rc, "waiting for a block of dataset '%s' failed: %s", self->L->path, ml_strerror(rc));
        return ml_py_raise(&e, self->L->filename);
    }
    if (t.error.code) {
        /* The slot carries nothing usable: give it back, then raise. */
        ml_ring_release(ml_stream_ring(s), t.slot);
        return ml_py_raise(&t.error, self->L->filename);
    }
    ml_block_runs runs;
    if (ml_schedule_block(ml_stream_schedule(s), t.seq, &runs) < 0) { /* cannot happen: the ring ends with it */
        ml_ring_release(ml_stream_ring(s), t.slot);
        PyErr_SetString(PyExc_RuntimeError, "block number past the end of the stream's schedule");
        return NULL;
    }
    ml_module_state *st = ml_state_of_type(Py_TYPE(self));
    return ml_py_guard_new(st->guard_type, ml_stream_ring(s), &t, self->descr, self->ndim, self->row_dims,
                           self->field, runs.start[0]);
}

static PyObject *stream_take(StreamObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"timeout", NULL};
    PyObject *timeout_obj = Py_None;
    double timeout;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|O:take", kwlist, &timeout_obj) ||
        ml_py_timeout_arg(timeout_obj, &timeout) < 0)
        return NULL;
    if (!self->s)
        Py_RETURN_NONE;
    if (stream_forked(self))
        return NULL;
    ml_stream *s = self->s;
    ml_taken t;
    /* The owner id is unique across processes and never reused for a later
     * thread of this one: an ident of a finished thread (pthread_self) would
     * make a new thread look like the owner of its guards (a false deadlock
     * report). */
    stream_wait w = {.s = s, .owner = ml_ring_owner_id(), .t = &t};
    int rc;
    if (ml_py_wait_steps(timeout, stream_wait_step, NULL, &w, "block became ready", &rc) < 0)
        return NULL;
    return stream_taken(self, rc, &t);
}

PyObject *ml_py_raise_self_deadlock(ml_ring *ring) {
    ml_error e;
    ml_error_clear(&e);
    ml_error_set(&e, -ML_EDEADLOCK, /* RuntimeError, as the error table says */
                 "every one of the queue's %u slots is held by an unreleased guard of this thread; "
                 "a view kept from a guard (a numpy array from guard.array) pins its slot "
                 "until the guard is released, even once the guard itself is dropped. Release "
                 "guards (leave the with-block or call guard.release()), keep copies instead of "
                 "views (np.array(block) or block.copy()), or raise read_ahead",
                 ml_ring_n_slots(ring));
    return ml_py_raise(&e, NULL);
}

/* take_nowait() -> Guard, None (end of stream or closed) or False: no
 * block ready now, and the ring is armed, so its event fd fires when one
 * is published or the queue closes. Never waits (asyncio's take). */
static PyObject *stream_take_nowait(StreamObject *self, PyObject *Py_UNUSED(ignored)) {
    if (!self->s)
        Py_RETURN_NONE;
    if (stream_forked(self))
        return NULL;
    ml_stream *s = self->s;
    ml_taken t;
    uint64_t owner = ml_ring_owner_id();
    int rc;
    Py_BEGIN_ALLOW_THREADS /* the ring's lock is taken: never with the GIL held */
    rc = ml_stream_take(s, owner, 0, &t);
    if (rc == -ETIMEDOUT) {
        ml_ring_arm(ml_stream_ring(s)); /* then look once more: a publish in between fires the fd */
        rc = ml_stream_take(s, owner, 0, &t);
    }
    Py_END_ALLOW_THREADS
    if (rc == -ETIMEDOUT)
        Py_RETURN_FALSE;
    return stream_taken(self, rc, &t);
}

/* event_fd() -> the ring's eventfd (borrowed: valid while the stream lives). */
static PyObject *stream_event_fd(StreamObject *self, PyObject *Py_UNUSED(ignored)) {
    if (!self->s) {
        PyErr_SetString(PyExc_ValueError, "the stream is closed");
        return NULL;
    }
    if (stream_forked(self))
        return NULL;
    int fd = ml_ring_event_fd(ml_stream_ring(self->s));
    if (fd < 0) {
        errno = -fd;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    return PyLong_FromLong(fd);
}

/* The shared ring's memfd (borrowed: the caller dups it to send it), for
 * the loader process to hand to its consumer. */
static PyObject *stream_ring_fd(StreamObject *self, PyObject *Py_UNUSED(ignored)) {
    if (!self->s) {
        PyErr_SetString(PyExc_ValueError, "the stream is closed");
        return NULL;
    }
    if (stream_forked(self))
        return NULL;
    int fd = ml_ring_fd(ml_stream_ring(self->s));
    if (fd < 0) {
        PyErr_SetString(PyExc_ValueError, "the stream's ring is private (made without shared=True)");
        return NULL;
    }
    return PyLong_FromLong(fd);
}

static PyObject *stream_close(StreamObject *self, PyObject *Py_UNUSED(ignored)) {
    if (self->s && self->pid != ml_py_pid()) {
        self->s = NULL; /* closing in a forked child: just forget the parent's stream */
        Py_RETURN_NONE;
    }
    if (self->s) {
        ml_stream *s = self->s;
        Py_BEGIN_ALLOW_THREADS
        ml_stream_close(s);
        Py_END_ALLOW_THREADS
    }
    Py_RETURN_NONE;
}

static PyObject *stream_stats(StreamObject *self, PyObject *Py_UNUSED(ignored)) {
    ml_stream_stats st = {0};
    const char *mode = "closed";
    if (self->s && stream_forked(self))
        return NULL;
    if (self->s) {
        ml_stream_get_stats(self->s, &st);
        mode = ml_stream_io_mode(self->s) == ML_IO_URING ? "io_uring" : "pread";
    }
    PyObject *d = Py_BuildValue("{sKsKsdsKsssKsKsKsI}", "blocks", (unsigned long long)st.blocks, "bytes",
                                (unsigned long long)st.bytes, "wait_seconds", st.wait_ns * 1e-9, "errors",
                                (unsigned long long)st.errors, "io_mode", mode, "prefetch_steps",
                                (unsigned long long)st.prefetch_steps, "resident_steps",
                                (unsigned long long)st.resident_steps, "batched_blocks",
                                (unsigned long long)st.batched_blocks, "batch_blocks", st.batch_blocks);
    ml_budget_stats bst;
    if (d && self->s && ml_stream_budget_stats(self->s, &bst) == 0) { /* a budgeted stream: "budget" too */
        PyObject *b = ml_py_budget_stats_dict(&bst);
        if (!b || PyDict_SetItemString(d, "budget", b) < 0)
            Py_CLEAR(d);
        Py_XDECREF(b);
    }
    return d;
}

static PyMethodDef stream_methods[] = {
    {"take", (PyCFunction)(void (*)(void))stream_take, METH_VARARGS | METH_KEYWORDS,
     "take(timeout=None) -> Guard, or None at the end of the stream or after close()."},
    {"take_nowait", (PyCFunction)stream_take_nowait, METH_NOARGS,
     "take_nowait() -> Guard, None (end or closed), or False: nothing ready; the event fd is armed."},
    {"event_fd", (PyCFunction)stream_event_fd, METH_NOARGS,
     "event_fd() -> the ring's eventfd (borrowed), written after take_nowait() returned False once a\n"
     "block is published or the stream closes."},
    {"close", (PyCFunction)stream_close, METH_NOARGS, "Stop the workers and wait for them."},
    {"ring_fd", (PyCFunction)stream_ring_fd, METH_NOARGS,
     "ring_fd() -> the shared ring's memfd (borrowed; a stream made with shared=True)."},
    {"stats", (PyCFunction)stream_stats, METH_NOARGS, "Counters: blocks, bytes, wait_seconds, errors, io_mode, prefetch_steps, resident_steps, batched_blocks, batch_blocks."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot stream_slots[] = {
    {Py_tp_new, stream_new},
    {Py_tp_dealloc, stream_dealloc},
    {Py_tp_traverse, stream_traverse},
    {Py_tp_methods, stream_methods},
    {Py_tp_doc, "A running block stream over one dataset (internal; see multiload.Streamer)."},
    {0, NULL},
};

static PyType_Spec stream_spec = {
    .name = "multiload._core.Stream",
    .basicsize = sizeof(StreamObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = stream_slots,
};

int ml_py_add_stream_type(PyObject *m, ml_module_state *st) {
    st->stream_type = (PyTypeObject *)PyType_FromModuleAndSpec(m, &stream_spec, NULL);
    if (!st->stream_type)
        return -1;
    return PyModule_AddType(m, st->stream_type);
}
