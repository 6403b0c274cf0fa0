/* faults.h - the C tests' switch for the core's fault injection: set
 * MULTILOAD_FAULTS to `spec` (NULL: off) and make fault.c read it again. */
#ifndef ML_TEST_FAULTS_H
#define ML_TEST_FAULTS_H

#include <stdlib.h>

#include "fault.h"

static inline void set_faults(const char *spec) {
    if (spec)
        setenv("MULTILOAD_FAULTS", spec, 1);
    else
        unsetenv("MULTILOAD_FAULTS");
    ml_fault_reload();
}

#endif
