/* ml_python.h - declarations shared by the CPython binding files. */
#ifndef ML_PYTHON_H
#define ML_PYTHON_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
#define PY_ARRAY_UNIQUE_SYMBOL multiload_ARRAY_API
#ifndef ML_IMPORT_ARRAY_HERE
#define NO_IMPORT_ARRAY
#endif
#include <numpy/arrayobject.h>

#include "../error.h"
#include "../h5.h"
#include "../ring.h"
#include "../streamer.h"

#define ML_PY_N_SUBMIT_KW 9 /* ReaderCore.submit()'s keyword arguments */

/* Per-module state (multi-phase init): the heap types. */
typedef struct ml_module_state {
    PyTypeObject *layout_type;
    PyTypeObject *stream_type;
    PyTypeObject *guard_type;
    PyTypeObject *reader_type;   /* reader_type.c: ReaderCore */
    PyTypeObject *request_type;  /* reader_type.c: Request */
    PyTypeObject *vlen_type;     /* vlen_type.c: VLen */
    PyTypeObject *order_type;    /* order_type.c: Order */
    PyTypeObject *remote_stream_type; /* remote_stream_type.c: RemoteStream */
    PyTypeObject *file_region_type; /* file_loader_type.c: FileRegion */
    PyTypeObject *file_entry_type;  /* file_loader_type.c: FileEntry */
    PyTypeObject *writer_type;      /* writer_type.c: WriterCore */
    PyTypeObject *budget_type;      /* budget_type.c: BudgetCore */
    PyObject *submit_kw[ML_PY_N_SUBMIT_KW];      /* reader_type.c: submit()'s keyword names, interned (owned) */
} ml_module_state;

extern PyModuleDef ml_moduledef;

static inline ml_module_state *ml_state_of_type(PyTypeObject *tp) {
    return (ml_module_state *)PyType_GetModuleState(tp);
}

/* Where a core error surfaces, for the few codes that raise differently
 * there (errors.c's site rules). */
typedef enum ml_py_site {
    ML_PY_ANY = 0, /* every call without rules of its own */
    ML_PY_SUBMIT,  /* ReaderCore.submit(): bad rows IndexError, closed reader RuntimeError */
} ml_py_site;

/* Raise the Python exception that matches a core error (errors.c, the one
 * map from codes to classes). `filename` may be NULL. Always returns NULL. */
PyObject *ml_py_raise(const ml_error *err, const char *filename);

/* ml_py_raise() with the rules of one call site. Always returns NULL. */
PyObject *ml_py_raise_at(ml_py_site site, const ml_error *err, const char *filename);

/* numpy dtype for a core type (dtype.c). Returns a new reference or NULL. */
PyArray_Descr *ml_py_descr(const ml_type *t);

/* A guard over one reserved slot (guard_type.c). Takes a ring reference
 * and a descr reference of its own. row_dims: the trailing dims. */
PyObject *ml_py_guard_new(PyTypeObject *tp, ml_ring *ring, const ml_taken *t,
                          PyArray_Descr *descr, int ndim, const npy_intp *row_dims,
                          PyObject *field, uint64_t start_row);

/* A take()/wait() timeout argument: None -> -1 (forever), else a number
 * >= 0 (wait.c). Returns 0, or -1 with ValueError/TypeError set. */
int ml_py_timeout_arg(PyObject *obj, double *out);

/* Wait as wait.c says: step(arg, ms) runs without the GIL and returns
 * -ETIMEDOUT to go on waiting; between steps between(arg) (may be NULL;
 * GIL held) returns 0 to go on, 1 to end the wait as closed (-ML_ECLOSED)
 * or -1 with an exception set; then signals and the timeout (TimeoutError
 * "no <what> within T s"; timeout < 0: none). Returns 0 with *rc the
 * step's result, -1 with an exception set, or, when `what` is NULL, 1 with
 * *rc = -ETIMEDOUT once the timeout passed (a timeout that is no error). */
int ml_py_wait_steps(double timeout, int (*step)(void *arg, long ms), int (*between)(void *arg), void *arg,
                     const char *what, int *rc);

/* Raise the RuntimeError of a take that could never end: every slot of
 * `ring` is held by the calling thread's guards (stream_type.c). NULL. */
PyObject *ml_py_raise_self_deadlock(ml_ring *ring);

/* The core layout and dtype of a Layout object (borrowed). */
ml_layout *ml_py_layout_core(PyObject *layout, PyArray_Descr **descr);

/* This process's id without a system call (glibc's getpid() makes one
 * each time): read at import and again in every child fork() makes. The
 * hot paths that check "made in another process?" ask it. */
pid_t ml_py_pid(void);

int ml_py_add_layout_type(PyObject *m, ml_module_state *st);
int ml_py_add_stream_type(PyObject *m, ml_module_state *st);
int ml_py_add_guard_type(PyObject *m, ml_module_state *st);
int ml_py_add_reader_types(PyObject *m, ml_module_state *st);
int ml_py_add_vlen_type(PyObject *m, ml_module_state *st);
int ml_py_add_order_type(PyObject *m, ml_module_state *st);
int ml_py_add_remote_stream_type(PyObject *m, ml_module_state *st);
int ml_py_add_file_loader_types(PyObject *m, ml_module_state *st);
int ml_py_add_writer_type(PyObject *m, ml_module_state *st);
int ml_py_add_budget_type(PyObject *m, ml_module_state *st);

/* A `budget=` argument (budget_type.c): None or NULL -> *out NULL; a
 * BudgetCore -> its core budget (borrowed: the caller makes its own client,
 * which holds a reference). Returns 0, or -1 with TypeError (not a
 * BudgetCore) or ValueError (a fake-clock budget) set. */
struct ml_budget;
int ml_py_budget_arg(ml_module_state *st, PyObject *o, struct ml_budget **out);

/* The dict of a budget's or a client's stats (budget_type.c): new reference or NULL. */
struct ml_budget_stats;
PyObject *ml_py_budget_stats_dict(const struct ml_budget_stats *st);

/* _core.vlen_open(filename, path) -> VLen or None (vlen_type.c). */
PyObject *ml_py_vlen_open(PyObject *m, PyObject *args, PyObject *kw);

#endif
