/* gheap.h - HDF5 global heap collections ("GCOL"), where the rows of
 * variable-length datasets live: read and checked the way HDF5's own
 * deserializer (H5HGcache.c) walks them, so that a collection HDF5 1.10
 * would misread (it only asserts) is refused before HDF5 is handed it.
 *
 * A collection on disk: "GCOL", version 1, 3 reserved bytes, its size
 * (sizeof_size bytes, header included, >= 4096), then objects, each a
 * 2-byte index, 2-byte reference count, 4 reserved bytes, its size
 * (sizeof_size bytes) and its data padded to 8; index 0 is the free space,
 * whose size includes its header and is not padded; a tail too short for
 * an object header is free space too.
 */
#ifndef ML_GHEAP_H
#define ML_GHEAP_H

#include <stddef.h>
#include <stdint.h>

/* HDF5's H5HG_MINSIZE: no collection is smaller (the file format says so,
 * and HDF5 first reads this many bytes of any collection). */
#define ML_GHEAP_MIN_SIZE 4096u

/* Reads len bytes at `off` (relative to the file's base address) into
 * buf. Returns 0, or -errno / -ML_ETRUNC (fewer bytes than asked). */
typedef int (*ml_gheap_read_fn)(void *ctx, uint64_t off, void *buf, size_t len);

typedef struct ml_gheap_obj {
    uint64_t size;                 /* bytes of the object's data */
    uint16_t idx;                  /* its index, 1..65535 */
} ml_gheap_obj;

typedef struct ml_gheap {
    uint64_t addr;                 /* relative to the base address */
    uint64_t size;                 /* bytes, header included: >= ML_GHEAP_MIN_SIZE */
    size_t n_objs;                 /* objects of index > 0 */
    ml_gheap_obj *objs;            /* owned, sorted by idx, no index twice */
} ml_gheap;

/* Read and check the header of the collection at `addr`: it lies in
 * [0, limit) (limit: what the file holds past its base, and at most its
 * end of allocation), says "GCOL" version 1, and its size is at least
 * ML_GHEAP_MIN_SIZE and ends by limit. Fills H->addr and H->size (objs
 * stay NULL). Returns 0, -ML_ECORRUPT (why[] says what is wrong), or the
 * read's error. */
int ml_gheap_read_header(ml_gheap *H, uint64_t addr, uint64_t limit, unsigned sizeof_size,
                         ml_gheap_read_fn rd, void *ctx, char *why, size_t why_len);

/* Walk the objects of H (its header read by ml_gheap_read_header), as
 * HDF5 does, and refuse what HDF5 would misread: an object header or an
 * object's padded data past the collection's end, a free space of a size
 * HDF5 would loop on (0, or not a multiple of 8, or less than a header),
 * an index twice. Reads the collection in windows of up to 64 KiB, so a
 * collection holding one large object costs two small reads; the work is
 * bounded by H->size / 16 objects. On success H->objs (owned by H, freed
 * by ml_gheap_free) lists every object. Returns 0, -ML_ECORRUPT (why[]),
 * -ENOMEM, or the read's error. */
int ml_gheap_walk(ml_gheap *H, unsigned sizeof_size, ml_gheap_read_fn rd, void *ctx, char *why,
                  size_t why_len);

/* The object of index idx in H, or NULL when there is none (index 0, the
 * free space, is never an object). */
const ml_gheap_obj *ml_gheap_find(const ml_gheap *H, uint64_t idx);

/* Free H's objects (not H itself). Accepts NULL. */
void ml_gheap_free(ml_gheap *H);

#endif
