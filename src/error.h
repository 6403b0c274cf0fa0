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

/* X(name, value, message). Values are positive; functions return -value. */
#define ML_ERRNO_MAP(X)                                                      \
    X(ML_EHDF5, 10001, "HDF5 library error")                                 \
    X(ML_ENOTHDF5, 10002, "not an HDF5 file")                                \
    X(ML_ENOTFOUND, 10003, "no such dataset")                                \
    X(ML_ENOTDSET, 10004, "path is not a dataset")                           \
    X(ML_ETYPE, 10005, "unsupported datatype")                               \
    X(ML_ESHAPE, 10006, "unsupported dataset shape")                         \
    X(ML_ECORRUPT, 10007, "corrupt chunk")                                   \
    X(ML_ECHECKSUM, 10008, "fletcher32 checksum mismatch")                   \
    X(ML_ETRUNC, 10009, "file is truncated")                                 \
    X(ML_ECLOSED, 10010, "closed")                                           \
    X(ML_EEND, 10011, "end of stream")                                       \
    X(ML_EDEADLOCK, 10012, "every slot is held by the calling thread")       \
    X(ML_EFILTER, 10013, "filter failed")                                    \
    X(ML_EINVAL, 10014, "invalid argument")

enum {
#define ML_ERR_ENUM(name, value, msg) name = value,
    ML_ERRNO_MAP(ML_ERR_ENUM)
#undef ML_ERR_ENUM
};

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
