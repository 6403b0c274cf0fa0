/* gheap_harness.h - the input format of fuzz_gheap.c.
 *
 * The target reports each input's outcome through fuzz/index/harness.h's
 * fuzz_index_outcome, so fuzz/index/mutate_main.c drives it unchanged
 * (its words for the chunk index map onto the global heap as below):
 *   parsed     1 when the input's header decoded
 *   locate_rc  ml_gheap_read_header's return
 *   kind       0 (there is one kind of collection)
 *   walked     1 when ml_gheap_walk ran (the header was read)
 *   walk_rc    its return
 *   emitted    objects in the collection (H->n_objs)
 *   reads      read-callback calls
 * mutate_main keeps an input that walks cleanly with at least one object
 * as a parent for further mutations, and prints "locate ok" (headers
 * read), "walk ok" and "with chunks" (with objects).
 */
#ifndef ML_FUZZ_GHEAP_HARNESS_H
#define ML_FUZZ_GHEAP_HARNESS_H

/* The input's header, before the image (integers little-endian):
 *   0  1  sizeof_size  passed to the core as is (HDF5 files: 2, 4 or 8)
 *   1  1  fail_at      0, or the read call (1-based) that fails with -EIO
 *   2  2  why_len      bytes of the why[] buffer, 0 -> 256 (exactly that
 *                      many are allocated, so ASan sees an overrun)
 *   4  1  alloc_fail_at  0, or the malloc/realloc call (1-based) of the walk
 *                      that fails (returns NULL)
 *   5  3  reserved     0
 *   8  8  limit        0 -> the image's length; else passed as is (past the
 *                      image, reads answer -ML_ETRUNC, as a short file would)
 *  16  8  addr         the collection's address, relative to the image
 * then the image: what the file holds from its base address on. */
#define FUZZ_GHEAP_HEADER 24

#endif
