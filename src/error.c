/* error.c - the single table of multiload error messages and the helper
 * that fills an ml_error. No global state: each failure's detail lives in
 * the ml_error that the caller passed down. */
#include "error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

const char *ml_strerror(int code) {
    switch (code) { /* on code itself: negating INT_MIN would overflow */
#define ML_ERR_CASE(name, value, msg, pyclass) \
    case -value:                               \
        return msg;
        ML_ERRNO_MAP(ML_ERR_CASE)
#undef ML_ERR_CASE
    default:
        break;
    }
    if (ml_error_is_errno(code))
        return strerror(-code);
    return code == 0 ? "success" : "unknown error";
}

int ml_error_set(ml_error *err, int code, const char *fmt, ...) {
    if (!err || err->code != 0)
        return code;
    err->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    return code;
}
