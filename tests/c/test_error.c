/* test_error.c - the one error table (src/error.h ML_ERRNO_MAP): every
 * code lies above the errno boundary, has a message of its own and a
 * distinct value; ml_error_is_errno() draws the boundary in one place;
 * ml_error_set() keeps the first failure. The Python class of each code
 * is pinned by tests/test_error_map.py. */
#include "check.h"

#include <limits.h>

static const struct {
    const char *name;
    int value;
    const char *msg;
} table[] = {
#define ROW(name, value, msg, pyclass) {#name, value, msg},
    ML_ERRNO_MAP(ROW)
#undef ROW
};
#define N_CODES (sizeof table / sizeof table[0])

static void test_table(void) {
    CHECK_GT(N_CODES, 0);
    for (size_t i = 0; i < N_CODES; i++) {
        CHECK_GT(table[i].value, ML_ERRNO_MAX);
        CHECK_EQ(ml_error_is_errno(-table[i].value), 0);
        CHECK_EQ(strcmp(ml_strerror(-table[i].value), table[i].msg), 0);
        for (size_t j = 0; j < i; j++)
            CHECK_NE(table[i].value, table[j].value);
    }
}

static void test_errno_boundary(void) {
    CHECK_EQ(ml_error_is_errno(-EIO), 1);
    CHECK_EQ(ml_error_is_errno(-1), 1);
    CHECK_EQ(ml_error_is_errno(-ML_ERRNO_MAX), 1);
    CHECK_EQ(ml_error_is_errno(-ML_ERRNO_MAX - 1), 0);
    CHECK_EQ(ml_error_is_errno(0), 0);
    CHECK_EQ(ml_error_is_errno(EIO), 0);
    CHECK_EQ(ml_error_is_errno(INT_MIN), 0);
    CHECK_EQ(strcmp(ml_strerror(-ENOENT), strerror(ENOENT)), 0);
    CHECK_EQ(strcmp(ml_strerror(0), "success"), 0);
    CHECK_EQ(strcmp(ml_strerror(INT_MIN), "unknown error"), 0);
    CHECK_EQ(strcmp(ml_strerror(-ML_ERRNO_MAX - 1), "unknown error"), 0);
    CHECK_EQ(strcmp(ml_strerror(ML_EHDF5), "unknown error"), 0);
}

static void test_error_set(void) {
    ml_error e;
    ml_error_clear(&e);
    CHECK_EQ(ml_error_set(&e, -ML_ECORRUPT, "chunk %d", 3), -ML_ECORRUPT);
    CHECK_EQ(ml_error_set(&e, -EIO, "later"), -EIO); /* the first failure stays */
    CHECK_EQ(e.code, -ML_ECORRUPT);
    CHECK_EQ(strcmp(e.msg, "chunk 3"), 0);
    CHECK_EQ(ml_error_set(NULL, -EIO, "nowhere"), -EIO);
}

int main(void) {
    test_table();
    test_errno_boundary();
    test_error_set();
    CHECK_DONE();
}
