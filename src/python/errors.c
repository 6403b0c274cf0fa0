/* errors.c - the one place that turns core error codes into Python
 * exceptions. Built-in classes, but for running out of memory (a
 * MemoryError that is also an OSError): callers catch what they know. */
#include "ml_python.h"

#include <errno.h>

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

static PyObject *os_error(int errnum, const char *msg, const char *filename) {
    return os_error_of(PyExc_OSError, errnum, msg, filename);
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

PyObject *ml_py_raise(const ml_error *err, const char *filename) {
    int code = err->code;
    const char *msg = err->msg[0] ? err->msg : ml_strerror(code);
    switch (-code) {
    case ML_ENOTFOUND:
        PyErr_SetString(PyExc_KeyError, msg);
        return NULL;
    case ML_ENOTDSET:
    case ML_ETYPE:
    case ML_ESHAPE:
        PyErr_SetString(PyExc_TypeError, msg);
        return NULL;
    case ML_EINVAL:
        PyErr_SetString(PyExc_ValueError, msg);
        return NULL;
    case ML_EDEADLOCK:
        PyErr_SetString(PyExc_RuntimeError, msg);
        return NULL;
    case ML_ENOTHDF5:
        PyErr_SetString(PyExc_OSError, msg);
        return NULL;
    case ML_ECORRUPT:
    case ML_ECHECKSUM:
    case ML_ETRUNC:
    case ML_EHDF5:
    case ML_EFILTER:
        return os_error(EIO, msg, filename);
    case ENOMEM:
        return out_of_memory(msg, filename);
    default:
        if (code < 0 && -code < 10000)
            return os_error(-code, msg, filename);
        PyErr_SetString(PyExc_RuntimeError, msg);
        return NULL;
    }
}
