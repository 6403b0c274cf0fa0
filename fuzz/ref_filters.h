/* ref_filters.h - decoders of the third-party filters the core reads (lzf,
 * blosc), registered with HDF5 for the reference reader (ref_read.c). */
#ifndef FUZZ_REF_FILTERS_H
#define FUZZ_REF_FILTERS_H

/* Register the lzf (32000) and blosc (32001) decoders. Returns 0 or -1. */
int ref_filters_register(void);

#endif
