/* io.h - the POSIX byte source: a file descriptor, read in batches by
 * io_uring or, where io_uring cannot be set up, by plain pread on the
 * calling thread (source.h says what a source is). */
#ifndef ML_IO_H
#define ML_IO_H

#include "error.h"
#include "source.h"

/* A source reading through `fd`, which it takes over (closed when the last
 * reference goes) on success; on failure fd stays the caller's. Returns 0
 * or -ENOMEM. Read contexts (ml_io_open) pick their engine from the mode:
 * explicit argument, else MULTILOAD_IO=uring|pread, else io_uring with
 * fallback to pread. */
int ml_source_posix_adopt(int fd, ml_source **out);

/* The descriptor a POSIX source reads (borrowed: valid while the source
 * is), or -1 if s is another kind. For what only a descriptor can do
 * (HDF5's file lock probe); data reads go through the source. */
int ml_source_posix_fd(const ml_source *s);

/* Which mode ML_IO_AUTO picks on this machine (probes io_uring once). */
ml_io_mode ml_io_default_mode(void);

#endif
