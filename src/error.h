/* error.h - multiload's own error codes and the detail struct that carries
 * file / dataset / block context from the core to the bindings.
 *
 * Core functions return 0 on success and a negative value on failure:
 * either -errno (from the OS) or one of the -ML_E* codes below, which sit
 * far below any errno value so the two ranges never collide.
 */
#ifndef ML_ERROR_H
#define ML_ERROR_H

#include <stddef.h>

/* The one table of our codes: X(name, value, message, pyclass).
 * Values are positive; functions return -value. pyclass names the Python
 * exception the binding raises for the code, as a bare token the core
 * never reads (src/python/errors.c maps each token to a class, once):
 *   KEY, TYPE, VALUE, RUNTIME  KeyError, TypeError, ValueError, RuntimeError(message)
 *   OS                         OSError(message): no errno, no filename
 *   IO                         OSError(EIO, message, filename)
 * To add a code: one X line here, with the next value and its class; the
 * binding and tests/test_error_map.py (which pins each code's class) follow. */
#define ML_ERRNO_MAP(X)                                                       \
    X(ML_EHDF5, 10001, "HDF5 library error", IO)                              \
    X(ML_ENOTHDF5, 10002, "not an HDF5 file", OS)                             \
    X(ML_ENOTFOUND, 10003, "no such dataset", KEY)                            \
    X(ML_ENOTDSET, 10004, "path is not a dataset", TYPE)                      \
    X(ML_ETYPE, 10005, "unsupported datatype", TYPE)                          \
    X(ML_ESHAPE, 10006, "unsupported dataset shape", TYPE)                    \
    X(ML_ECORRUPT, 10007, "corrupt chunk", IO)                                \
    X(ML_ECHECKSUM, 10008, "fletcher32 checksum mismatch", IO)                \
    X(ML_ETRUNC, 10009, "file is truncated", IO)                              \
    X(ML_ECLOSED, 10010, "closed", RUNTIME)                                   \
    X(ML_EEND, 10011, "end of stream", RUNTIME)                               \
    X(ML_EDEADLOCK, 10012, "every slot is held by the calling thread", RUNTIME) \
    X(ML_EFILTER, 10013, "filter failed", IO)                                 \
    X(ML_EINVAL, 10014, "invalid argument", VALUE)

/* The errno boundary: a negative code down to -ML_ERRNO_MAX is -errno;
 * every ML_E* value lies above it. */
#define ML_ERRNO_MAX 9999

enum {
#define ML_ERR_ENUM(name, value, msg, pyclass) name = value,
    ML_ERRNO_MAP(ML_ERR_ENUM)
#undef ML_ERR_ENUM
};

#define ML_ERR_ABOVE_ERRNO(name, value, msg, pyclass) \
    _Static_assert(value > ML_ERRNO_MAX, #name " must lie above the errno range");
ML_ERRNO_MAP(ML_ERR_ABOVE_ERRNO)
#undef ML_ERR_ABOVE_ERRNO

/* 1 if code (a negative return value) is -errno from the OS, 0 if it is
 * one of ours (-ML_E*), zero, positive or out of any range. */
static inline int ml_error_is_errno(int code) {
    return code < 0 && code >= -ML_ERRNO_MAX;
}

#define ML_ERROR_MSG_MAX 512

/* Detail of the first failure, filled by the function that failed.
 * code is 0 or a negative return value; msg names file, dataset, block. */
typedef struct ml_error {
    int code;                   /* 0 or -errno / -ML_E* */
    char msg[ML_ERROR_MSG_MAX]; /* human-readable, NUL-terminated */
} ml_error;

/* Message for a code (-errno or -ML_E*); never NULL. */
const char *ml_strerror(int code);

/* Record code and a printf-style message in err (if err is non-NULL and
 * holds no earlier error). Returns code so callers can `return ml_error_set(...)`. */
int ml_error_set(ml_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static inline void ml_error_clear(ml_error *err) {
    if (err) {
        err->code = 0;
        err->msg[0] = '\0';
    }
}

#endif
