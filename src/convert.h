/* convert.h - the element conversions a stored type needs to become the
 * numpy dtype h5py (or, for Time64, PyTables) reports, done as HDF5's own
 * conversion does them: integers of reduced precision or a bit offset
 * shifted, masked and sign-extended; fixed strings NUL-terminated or
 * space-padded made NUL-padded; PyTables' Time64 made float64 seconds.
 *
 * A conversion is planned once per layout from its type tree (a list of
 * operations at byte offsets inside one element, compounds and arrays
 * flattened) and applied in place to the bytes as they come from storage,
 * exactly once (fetch.c: after a read or a decode, never to a fill value
 * or compact data, which the layout converts at open). Every operation
 * keeps the element's size, so zero-copy reads into slots stay possible.
 */
#ifndef ML_CONVERT_H
#define ML_CONVERT_H

#include <stddef.h>
#include <stdint.h>

#include "layout.h"

typedef struct ml_convert ml_convert;

/* Plan the conversion of elements of type t into *out, or set *out = NULL
 * when the stored bytes are already what numpy reads. Returns 0 or
 * -ENOMEM. */
int ml_convert_plan(const ml_type *t, ml_convert **out);

/* Convert n_elems elements at buf in place. c may be NULL (nothing to do). */
void ml_convert_apply(const ml_convert *c, void *buf, uint64_t n_elems);

/* Accepts NULL. */
void ml_convert_free(ml_convert *c);

#endif
