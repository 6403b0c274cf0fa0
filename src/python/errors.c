/* errors.c - the one place that turns core error codes into Python
 * exceptions. Built-in classes, but for running out of memory (a
 * MemoryError that is also an OSError): callers catch what they know.
 *
 * A code's class comes from one of three rules, in this order:
 *   1. a site rule: a few codes mean something else where they surface
 *      (ReaderCore.submit: bad rows are an IndexError, as numpy says, and
 *      a closed reader is named as such) -- the site_rules table;
 *   2. our own codes: the pyclass token of src/error.h's ML_ERRNO_MAP
 *      (KEY, TYPE, VALUE, RUNTIME, OS, IO), mapped by class_of();
 *   3. -errno: OSError(errno, message, filename), whose subclass CPython
 *      picks (FileNotFoundError, ...); ENOMEM is multiload.OutOfMemoryError.
 * Anything else (0, positive, out of every range) is a RuntimeError. The
 * message is the core's detail, or the table's words when it has none.
 * To give a code another class: change its token in src/error.h (and its
 * pin in tests/test_error_map.py); a new token needs a line in class_of().
 */
#include "ml_python.h"

#include <errno.h>

/* What a code raises: a class built from the message alone, or an OSError
 * with errno and filename. */
typedef enum py_kind {
    PY_KEY,     /* KeyError(message) */
    PY_TYPE,    /* TypeError(message) */
    PY_VALUE,   /* ValueError(message) */
    PY_RUNTIME, /* RuntimeError(message) */
    PY_INDEX,   /* IndexError(message); site rules only */
    PY_OS,      /* OSError(message): no errno, no filename */
    PY_IO,      /* OSError(EIO, message, filename) */
    PY_ERRNO,   /* OSError(-code, message, filename) */
    PY_NOMEM,   /* multiload.OutOfMemoryError(ENOMEM, message, filename) */
} py_kind;

/* Codes that raise differently at one site. msg: the text to raise
 * instead of the core's detail; NULL keeps the detail as it is. */
static const struct site_rule {
    ml_py_site site;
    int code;        /* a negative return value */
    py_kind kind;
    const char *msg; /* NULL: err->msg, even if empty */
} site_rules[] = {
    {ML_PY_SUBMIT, -ML_ECLOSED, PY_RUNTIME, "Attempt to request data from a closed reader."},
    {ML_PY_SUBMIT, -ML_EINVAL, PY_INDEX, NULL},
};

/* The kind of a code by rules 2 and 3 above. */
static py_kind kind_of(int code) {
    switch (code) { /* on code itself: negating INT_MIN would overflow */
#define ML_ERR_KIND(name, value, msg, pyclass) \
    case -value:                               \
        return PY_##pyclass;
        ML_ERRNO_MAP(ML_ERR_KIND)
#undef ML_ERR_KIND
    case -ENOMEM:
        return PY_NOMEM;
    default:
        return ml_error_is_errno(code) ? PY_ERRNO : PY_RUNTIME;
    }
}

/* The class of a message-only kind (borrowed). */
static PyObject *class_of(py_kind kind) {
    switch (kind) {
    case PY_KEY:
        return PyExc_KeyError;
    case PY_TYPE:
        return PyExc_TypeError;
    case PY_VALUE:
        return PyExc_ValueError;
    case PY_INDEX:
        return PyExc_IndexError;
    case PY_OS:
        return PyExc_OSError;
    default:
        return PyExc_RuntimeError;
    }
}

/* Raise cls(errno, msg[, filename]); for OSError, CPython picks the
 * subclass (FileNotFoundError, ...). Borrows cls. */
static PyObject *os_error_of(PyObject *cls, int errnum, const char *msg, const char *filename) {
    PyObject *args = filename ? Py_BuildValue("(iss)", errnum, msg, filename)
                              : Py_BuildValue("(is)", errnum, msg);
    if (args) {
        PyErr_SetObject(cls, args);
        Py_DECREF(args);
    }
    return NULL;
}

/* ENOMEM: multiload.OutOfMemoryError, both MemoryError (what Python code
 * catches for memory) and OSError (errno, filename, as for every other
 * failure of a block). The class lives in multiload/_signals.py; should
 * that import fail, a plain MemoryError still says what happened. */
static PyObject *out_of_memory(const char *msg, const char *filename) {
    PyObject *mod = PyImport_ImportModule("multiload._signals");
    PyObject *cls = mod ? PyObject_GetAttrString(mod, "OutOfMemoryError") : NULL;
    Py_XDECREF(mod);
    if (!cls) {
        PyErr_Clear();
        PyErr_SetString(PyExc_MemoryError, msg);
        return NULL;
    }
    os_error_of(cls, ENOMEM, msg, filename);
    Py_DECREF(cls);
    return NULL;
}

PyObject *ml_py_raise_at(ml_py_site site, const ml_error *err, const char *filename) {
    int code = err->code;
    const char *msg = err->msg[0] ? err->msg : ml_strerror(code);
    py_kind kind = kind_of(code);
    for (size_t i = 0; i < sizeof site_rules / sizeof site_rules[0]; i++) {
        if (site_rules[i].site == site && site_rules[i].code == code) {
            kind = site_rules[i].kind;
            msg = site_rules[i].msg ? site_rules[i].msg : err->msg;
            break;
        }
    }
    switch (kind) {
    case PY_IO:
        return os_error_of(PyExc_OSError, EIO, msg, filename);
    case PY_ERRNO:
        return os_error_of(PyExc_OSError, -code, msg, filename);
    case PY_NOMEM:
        return out_of_memory(msg, filename);
    default:
        PyErr_SetString(class_of(kind), msg);
        return NULL;
    }
}

PyObject *ml_py_raise(const ml_error *err, const char *filename) {
    return ml_py_raise_at(ML_PY_ANY, err, filename);
}
