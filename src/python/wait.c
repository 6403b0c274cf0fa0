/* wait.c - the binding's one way to wait on the core: in steps of at most
 * 100 ms with the GIL released, so that between steps Python runs its
 * signal handlers (Ctrl-C interrupts a blocked get()) and the caller can
 * look at the world (a closed queue, a dead loader process), until the
 * wait succeeds, fails or its timeout passes (TimeoutError). */
#include "ml_python.h"

#include <errno.h>
#include <time.h>

static double mono_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

int ml_py_timeout_arg(PyObject *obj, double *out) {
    *out = -1;
    if (obj == Py_None)
        return 0;
    double t = PyFloat_AsDouble(obj);
    if (t == -1 && PyErr_Occurred())
        return -1;
    if (!(t >= 0)) { /* also refuses NaN, which would wait forever */
        PyErr_SetString(PyExc_ValueError, "timeout must be a non-negative number or None");
        return -1;
    }
    *out = t;
    return 0;
}

int ml_py_wait_steps(double timeout, int (*step)(void *arg, long ms), int (*between)(void *arg), void *arg,
                     const char *what, int *rc) {
    double deadline = timeout >= 0 ? mono_seconds() + timeout : 0;
    for (;;) {
        long ms = 100;
        if (timeout >= 0) {
            double left = deadline - mono_seconds();
            /* Rounded up, so a wait with time left never becomes a 0 ms
             * poll (which some steps answer "nothing", not "timed out"). */
            ms = left <= 0 ? 0 : left < 0.1 ? (long)(left * 1000) + 1 : 100;
        }
        int r;
        Py_BEGIN_ALLOW_THREADS
        r = step(arg, ms);
        Py_END_ALLOW_THREADS
        if (r != -ETIMEDOUT) {
            *rc = r;
            return 0;
        }
        if (between) {
            int b = between(arg);
            if (b < 0)
                return -1;
            if (b > 0) {
                *rc = -ML_ECLOSED;
                return 0;
            }
        }
        if (PyErr_CheckSignals() < 0)
            return -1;
        if (timeout >= 0 && mono_seconds() >= deadline) {
            if (!what) {
                *rc = -ETIMEDOUT;
                return 1;
            }
            PyObject *t = PyFloat_FromDouble(timeout);
            if (t) {
                /* PyErr_Format has no %g: format the float object with %R. */
                PyErr_Format(PyExc_TimeoutError, "no %s within %R s", what, t);
                Py_DECREF(t);
            }
            return -1;
        }
    }
}
