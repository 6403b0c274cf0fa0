/* module.c - multiload._core: multi-phase init, module state, and the few
 * module-level functions. */
#define ML_IMPORT_ARRAY_HERE
#include "ml_python.h"

#include "../fault.h"
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../chunk_index.h"
#include "../h5.h"
#include "../io.h"
#include "../readahead.h"

static PyObject *mod_default_io_mode(PyObject *m, PyObject *Py_UNUSED(ignored)) {
    (void)m;
    return PyUnicode_FromString(ml_io_default_mode() == ML_IO_URING ? "io_uring" : "pread");
}

static PyObject *mod_direct_slots(PyObject *m, PyObject *args) {
    (void)m;
    unsigned long long block_bytes;
    unsigned n_workers;
    if (!PyArg_ParseTuple(args, "KI:direct_slots", &block_bytes, &n_workers))
        return NULL;
    return PyLong_FromUnsignedLong(ml_direct_slots(block_bytes, n_workers));
}

static PyObject *mod_fault_reload(PyObject *m, PyObject *Py_UNUSED(ignored)) {
    (void)m;
    ml_fault_reload();
    Py_RETURN_NONE;
}

/* The schedule today's streams use for (cyclic, remainder). */
static int block_schedule(ml_schedule *s, uint64_t n_rows, uint64_t block_rows, int cyclic, int remainder) {
    ml_schedule_params p = {.kind = cyclic ? ML_SCHEDULE_CYCLIC : ML_SCHEDULE_SEQUENTIAL,
                            .n_rows = n_rows, .block_rows = block_rows, .remainder = remainder};
    return ml_schedule_init(s, &p);
}

static PyObject *mod_block_runs(PyObject *m, PyObject *args) {
    (void)m;
    unsigned long long n_rows, block_rows, k;
    int cyclic;
    if (!PyArg_ParseTuple(args, "KKpK:block_runs", &n_rows, &block_rows, &cyclic, &k))
        return NULL;
    if (n_rows == 0 || block_rows == 0) {
        PyErr_SetString(PyExc_ValueError, "n_rows and block_rows must be positive");
        return NULL;
    }
    ml_schedule s;
    ml_block_runs r;
    /* With the remainder: every block a non-cyclic stream can have. */
    if (block_schedule(&s, n_rows, block_rows, cyclic, 1) < 0) {
        PyErr_SetString(PyExc_ValueError, "a cyclic block cannot have more rows than the dataset");
        return NULL;
    }
    if (ml_schedule_block(&s, k, &r) < 0) {
        PyErr_Format(PyExc_ValueError, "block %llu is past the end of the stream", k);
        return NULL;
    }
    PyObject *out = PyList_New(r.n);
    for (unsigned i = 0; out && i < r.n; i++)
        PyList_SET_ITEM(out, i, Py_BuildValue("(KK)", (unsigned long long)r.start[i],
                                              (unsigned long long)r.count[i]));
    return out;
}

static PyObject *mod_n_blocks(PyObject *m, PyObject *args) {
    (void)m;
    unsigned long long n_rows, block_rows;
    int cyclic, remainder;
    if (!PyArg_ParseTuple(args, "KKpp:n_blocks", &n_rows, &block_rows, &cyclic, &remainder))
        return NULL;
    if (n_rows == 0 || block_rows == 0)
        return PyLong_FromLong(0);
    if (cyclic)
        Py_RETURN_NONE; /* endless; not UINT64_MAX, which a huge finite stream can also reach */
    ml_schedule s;
    if (block_schedule(&s, n_rows, block_rows, 0, remainder) < 0) {
        PyErr_SetString(PyExc_ValueError, "invalid block schedule");
        return NULL;
    }
    return PyLong_FromUnsignedLongLong(ml_schedule_n_blocks(&s));
}

/* _error_codes() -> ((name, value, message), ...): the core's error table,
 * so a test can walk every code (tests/test_error_map.py). */
static PyObject *mod_error_codes(PyObject *m, PyObject *Py_UNUSED(ignored)) {
    (void)m;
    return Py_BuildValue("("
#define ML_ERR_FMT(name, value, msg, pyclass) "(sis)"
                         ML_ERRNO_MAP(ML_ERR_FMT)
#undef ML_ERR_FMT
                         ")"
#define ML_ERR_ARGS(name, value, msg, pyclass) , #name, value, msg
                         ML_ERRNO_MAP(ML_ERR_ARGS)
#undef ML_ERR_ARGS
    );
}

/* _raise_error(code, msg="", filename=None): raise what the binding raises
 * for a core error (tests only). */
static PyObject *mod_raise_error(PyObject *m, PyObject *args) {
    (void)m;
    int code;
    const char *msg = "", *filename = NULL;
    if (!PyArg_ParseTuple(args, "i|sz:_raise_error", &code, &msg, &filename))
        return NULL;
    ml_error err;
    ml_error_clear(&err);
    err.code = code;
    snprintf(err.msg, sizeof err.msg, "%s", msg);
    return ml_py_raise(&err, filename);
}

static PyObject *mod_hdf5_version(PyObject *m, PyObject *noargs) {
    (void)m;
    (void)noargs;
    unsigned maj, min, rel;
    Py_BEGIN_ALLOW_THREADS
    ml_h5_version(&maj, &min, &rel);
    Py_END_ALLOW_THREADS
    return Py_BuildValue("(III)", maj, min, rel);
}

/* _chunk_table_state(filename, path) -> (state, why): fill the dataset's
 * chunk table in one pass and say how (tests only). */
static PyObject *mod_chunk_table_state(PyObject *m, PyObject *args) {
    static const char *names[] = {"lazy", "walked", "iterated", "fallback", "corrupt"};
    const char *fname, *path, *why = NULL;
    ml_layout *L = NULL;
    ml_error err;
    int rc;
    ml_table_state st = ML_TABLE_LAZY;
    (void)m;
    if (!PyArg_ParseTuple(args, "ss", &fname, &path))
        return NULL;
    ml_error_clear(&err);
    Py_BEGIN_ALLOW_THREADS
    rc = ml_layout_open(fname, path, &L, &err);
    if (rc == 0) {
        st = ml_layout_table_state(L, &why);
        ml_layout_unref(L);
    }
    Py_END_ALLOW_THREADS
    if (rc < 0)
        return ml_py_raise(&err, fname);
    return Py_BuildValue("(sz)", names[st], why);
}

/* _walk_chunk_index's emit: append (index, offset, size, mask) to a list.
 * Runs with the GIL held (the walk is short and only for tests). */
static int walk_emit_py(void *ctx, uint64_t index, uint64_t offset, uint64_t size, unsigned mask) {
    PyObject *t = Py_BuildValue("(KKKI)", (unsigned long long)index, (unsigned long long)offset,
                                (unsigned long long)size, mask);
    int rc = t ? PyList_Append((PyObject *)ctx, t) : -1;
    Py_XDECREF(t);
    return rc < 0 ? -ENOMEM : 0;
}

/* _walk_chunk_index(filename, ohdr, base, sizeof_addr, sizeof_size, dims,
 * maxdims) -> (layout_version, kind, [(index, offset, size, mask), ...]):
 * the core's own chunk index reader, without HDF5 (tests only: files
 * HDF5 1.10 cannot open). maxdims: None for unlimited. */
static PyObject *mod_walk_chunk_index(PyObject *m, PyObject *args) {
    const char *fname;
    unsigned long long ohdr, base;
    unsigned sa, ss;
    PyObject *dims_o, *max_o, *list = NULL;
    uint64_t dims[ML_CHUNK_INDEX_MAX_DIMS], maxdims[ML_CHUNK_INDEX_MAX_DIMS];
    (void)m;
    if (!PyArg_ParseTuple(args, "sKKIIOO", &fname, &ohdr, &base, &sa, &ss, &dims_o, &max_o))
        return NULL;
    Py_ssize_t rank = PySequence_Length(dims_o);
    if (rank < 1 || rank >= ML_CHUNK_INDEX_MAX_DIMS || PySequence_Length(max_o) != rank) {
        PyErr_SetString(PyExc_ValueError, "dims and maxdims: one to 32 dimensions each");
        return NULL;
    }
    for (Py_ssize_t d = 0; d < rank; d++) {
        PyObject *a = PySequence_GetItem(dims_o, d), *b = PySequence_GetItem(max_o, d);
        dims[d] = a ? PyLong_AsUnsignedLongLong(a) : 0;
        maxdims[d] = b == Py_None ? ML_CHUNK_UNLIMITED : b ? PyLong_AsUnsignedLongLong(b) : 0;
        Py_XDECREF(a);
        Py_XDECREF(b);
        if (PyErr_Occurred())
            return NULL;
    }
    int fd = open(fname, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return PyErr_SetFromErrnoWithFilename(PyExc_OSError, fname);
    struct stat st;
    ml_source *src = NULL;
    if (fstat(fd, &st) < 0 || ml_source_posix_adopt(fd, &src) < 0) {
        close(fd);
        return PyErr_SetFromErrnoWithFilename(PyExc_OSError, fname);
    }
    ml_chunk_file cf = {.src = src, .base = base, .size = (uint64_t)st.st_size, .sizeof_addr = sa,
                        .sizeof_size = ss, .btree_k = 32};
    ml_chunk_index ix;
    int rc = ml_chunk_index_locate(&cf, ohdr, &ix);
    if (rc == 0 && (list = PyList_New(0)) != NULL)
        rc = ml_chunk_index_walk(&cf, &ix, (unsigned)rank, dims, maxdims, walk_emit_py, list);
    ml_source_unref(src);
    if (!list && rc == 0)
        return NULL;
    if (rc < 0) {
        Py_XDECREF(list);
        ml_error err;
        ml_error_clear(&err);
        err.code = rc;
        snprintf(err.msg, sizeof err.msg, "walking the chunk index: %s", ml_strerror(rc));
        return ml_py_raise(&err, fname);
    }
    PyObject *out = Py_BuildValue("(IIN)", ix.layout_version, (unsigned)ix.kind, list);
    return out;
}

static PyMethodDef module_methods[] = {
    {"_walk_chunk_index", mod_walk_chunk_index, METH_VARARGS,
     "_walk_chunk_index(filename, ohdr, base, sizeof_addr, sizeof_size, dims, maxdims) -> (version, kind, "
     "chunks): the core's chunk index walk, without HDF5 (tests only)."},
    {"_chunk_table_state", mod_chunk_table_state, METH_VARARGS,
     "_chunk_table_state(filename, path) -> (state, why): how the chunk table fills (tests only)."},
    {"hdf5_version", mod_hdf5_version, METH_NOARGS,
     "The HDF5 library's version, as linked at run time: (major, minor, release)."},
    {"default_io_mode", mod_default_io_mode, METH_NOARGS,
     "The I/O engine new streams use: 'io_uring' or 'pread' (MULTILOAD_IO overrides)."},
    {"direct_slots", mod_direct_slots, METH_VARARGS,
     "direct_slots(block_bytes, n_workers) -> ring slots a direct stream needs for full read batches."},
    {"fault_reload", mod_fault_reload, METH_NOARGS, "Re-read MULTILOAD_FAULTS (tests only)."},
    {"_error_codes", mod_error_codes, METH_NOARGS,
     "_error_codes() -> ((name, value, message), ...): the core's own error codes (tests only)."},
    {"_raise_error", mod_raise_error, METH_VARARGS,
     "_raise_error(code, msg='', filename=None): raise the exception a core error code maps to (tests only)."},
    {"block_runs", mod_block_runs, METH_VARARGS,
     "block_runs(n_rows, block_rows, cyclic, k) -> [(start, count), ...] rows of block k."},
    {"n_blocks", mod_n_blocks, METH_VARARGS,
     "n_blocks(n_rows, block_rows, cyclic, remainder) -> blocks per stream (None: endless)."},
    {"vlen_open", (PyCFunction)(void (*)(void))ml_py_vlen_open, METH_VARARGS | METH_KEYWORDS,
     "vlen_open(filename, path) -> VLen, or None when path is not a variable-length dataset.\n"
     "Raises TypeError for a variable-length dataset whose elements or shape the core cannot read."},
    {NULL, NULL, 0, NULL},
};

static _Atomic pid_t this_pid; /* set at exec, refreshed in the child of every fork() */

static void refresh_pid(void) { atomic_store_explicit(&this_pid, getpid(), memory_order_relaxed); }

pid_t ml_py_pid(void) { return atomic_load_explicit(&this_pid, memory_order_relaxed); }

static void register_refresh(void) { pthread_atfork(NULL, NULL, refresh_pid); }

static int module_exec(PyObject *m) {
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    refresh_pid();
    pthread_once(&once, register_refresh);
    import_array1(-1);
    ml_module_state *st = PyModule_GetState(m);
    if (ml_py_add_guard_type(m, st) < 0 || ml_py_add_layout_type(m, st) < 0 ||
        ml_py_add_stream_type(m, st) < 0)
        return -1;
    if (ml_py_add_reader_types(m, st) < 0 || ml_py_add_vlen_type(m, st) < 0 ||
        ml_py_add_order_type(m, st) < 0 || ml_py_add_remote_stream_type(m, st) < 0 ||
        ml_py_add_file_loader_types(m, st) < 0)
        return -1;
    if (ml_py_add_writer_type(m, st) < 0 || ml_py_add_budget_type(m, st) < 0)
        return -1;
    /* The I/O engine codes (ml_io_mode) Stream and ReaderCore take; the
     * user's strings map to them in one place, multiload/_io.py. */
    if (PyModule_AddIntConstant(m, "IO_AUTO", ML_IO_AUTO) < 0 ||
        PyModule_AddIntConstant(m, "IO_URING", ML_IO_URING) < 0 ||
        PyModule_AddIntConstant(m, "IO_PREAD", ML_IO_PREAD) < 0)
        return -1;
    return 0;
}

static int module_traverse(PyObject *m, visitproc visit, void *arg) {
    ml_module_state *st = PyModule_GetState(m);
    Py_VISIT(st->layout_type);
    Py_VISIT(st->stream_type);
    Py_VISIT(st->remote_stream_type);
    Py_VISIT(st->guard_type);
    Py_VISIT(st->reader_type);
    Py_VISIT(st->request_type);
    Py_VISIT(st->vlen_type);
    Py_VISIT(st->order_type);
    Py_VISIT(st->file_region_type);
    Py_VISIT(st->file_entry_type);
    Py_VISIT(st->writer_type);
    Py_VISIT(st->budget_type);
    for (size_t k = 0; k < sizeof st->submit_kw / sizeof st->submit_kw[0]; k++)
        Py_VISIT(st->submit_kw[k]);
    return 0;
}

static int module_clear(PyObject *m) {
    ml_module_state *st = PyModule_GetState(m);
    Py_CLEAR(st->layout_type);
    Py_CLEAR(st->stream_type);
    Py_CLEAR(st->remote_stream_type);
    Py_CLEAR(st->guard_type);
    Py_CLEAR(st->reader_type);
    Py_CLEAR(st->request_type);
    Py_CLEAR(st->vlen_type);
    Py_CLEAR(st->order_type);
    Py_CLEAR(st->file_region_type);
    Py_CLEAR(st->file_entry_type);
    Py_CLEAR(st->writer_type);
    Py_CLEAR(st->budget_type);
    for (size_t k = 0; k < sizeof st->submit_kw / sizeof st->submit_kw[0]; k++)
        Py_CLEAR(st->submit_kw[k]);
    return 0;
}

static void module_free(void *m) { module_clear((PyObject *)m); }

static PyModuleDef_Slot module_slots[] = {
    {Py_mod_exec, module_exec},
    {0, NULL},
};

PyModuleDef ml_moduledef = {
    PyModuleDef_HEAD_INIT,
    .m_name = "multiload._core",
    .m_doc = "multiload's native core: HDF5 layout, io_uring reads, decode, ring buffer.",
    .m_size = sizeof(ml_module_state),
    .m_methods = module_methods,
    .m_slots = module_slots,
    .m_traverse = module_traverse,
    .m_clear = module_clear,
    .m_free = module_free,
};

PyMODINIT_FUNC PyInit__core(void) { return PyModuleDef_Init(&ml_moduledef); }
