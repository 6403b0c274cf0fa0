/* h5meta.h - the core's own bounded reader of HDF5 file metadata, run
 * before HDF5 opens a dataset (h5precheck.c): the superblock
 * (h5super.c), object headers (h5ohdr.c), groups on a path (h5group.c)
 * and a dataset's messages (h5dmsg.c). No HDF5 call: every byte comes
 * from an ml_source, every read lies inside [0, f->end), every count,
 * size and depth is bounded by the file and by HDF5's format limits.
 *
 * What these say is "HDF5 1.10.8 can parse this without reading outside
 * its buffers", not "this is valid": a structure they do not parse is
 * reported as not checked (ML_META_UNCHECKED), never refused.
 */
#ifndef ML_H5META_H
#define ML_H5META_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "source.h"

#define ML_META_UNDEF UINT64_MAX
/* Returned (positive) by a check that met a structure it does not parse:
 * the rest stays trusted to HDF5. */
#define ML_META_UNCHECKED 1
#define ML_META_WHY_MAX 200

/* The file extents the check has read structures from: HDF5 caches each
 * such structure as one entry, and two entries that overlap (a damaged
 * address pointing into another structure) crash 1.10.8 when it evicts
 * them at close. */
#define ML_META_MAX_EXTENTS 512
typedef struct ml_meta_extents {
    uint64_t at[ML_META_MAX_EXTENTS], len[ML_META_MAX_EXTENTS];
    unsigned n;
} ml_meta_extents;

/* The file as the metadata reader sees it. */
typedef struct ml_meta_file {
    ml_source *src;          /* borrowed */
    uint64_t base;           /* file offset of HDF5 address 0 (where the superblock is) */
    uint64_t end;            /* file offset no read passes: the file's size */
    unsigned sa, ss;         /* bytes of an address, of a length: 2, 4 or 8 */
    unsigned sb_version;     /* 0..3 */
    unsigned sym_leaf_k;     /* group symbol nodes hold up to 2 * this entries */
    unsigned sym_internal_k; /* group B-tree nodes hold up to 2 * this children */
    uint64_t root;           /* root group's object header address */
    int has_sohm;            /* the superblock extension has a shared message table */
    char *why;               /* ML_META_WHY_MAX bytes: what is wrong, set by the first failure */
    ml_meta_extents *ext;    /* borrowed: extents read so far (NULL: not tracked) */
} ml_meta_file;

/* Record that the structure `what` occupies [addr, addr + len). The same
 * extent twice is one structure read twice; an extent that overlaps
 * another is -ML_ECORRUPT. Past ML_META_MAX_EXTENTS, no longer tracked. */
int ml_meta_claim(const ml_meta_file *f, uint64_t addr, uint64_t len, const char *what);

/* Record the first reason (printf-style) in f->why. Returns -ML_ECORRUPT. */
int ml_meta_bad(const ml_meta_file *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Exactly len bytes at HDF5 address addr (base added). Returns 0,
 * -ML_ECORRUPT (undefined, or past the end: f->why says what `what` is)
 * or -errno. */
int ml_meta_read(const ml_meta_file *f, uint64_t addr, void *buf, size_t len, const char *what);

/* Is [addr, addr + len) inside the file? */
int ml_meta_inside(const ml_meta_file *f, uint64_t addr, uint64_t len);

/* Little-endian unsigned of n <= 8 bytes; an address of n bytes (all ones: ML_META_UNDEF). */
uint64_t ml_meta_le(const unsigned char *p, unsigned n);
uint64_t ml_meta_addr(const unsigned char *p, unsigned n);

/* 1 and *out = a * b, or 0 if that overflows 64 bits. */
static inline int ml_mul_ok64(uint64_t a, uint64_t b, uint64_t *out) { return !__builtin_mul_overflow(a, b, out); }

/* HDF5's metadata checksum: Jenkins' lookup3 hash of n bytes, initval 0. */
uint32_t ml_meta_checksum(const void *p, size_t n);

/* Find and parse the superblock (versions 0..3) of src: at 0, 512, 1024,
 * ... as HDF5 searches. Fills *f (why: the caller's buffer; ext: the
 * caller's extents, emptied here, or NULL). Returns 0,
 * -ML_ENOTHDF5 (no signature: let HDF5 say so), -ML_ECORRUPT, ML_META_UNCHECKED
 * (a version this does not parse) or -errno. (h5super.c) */
int ml_meta_super_read(ml_source *src, char *why, ml_meta_extents *ext, ml_meta_file *f);

/* Object header message types a dataset's open reads. */
#define ML_META_MSG_SPACE 0x0001
#define ML_META_MSG_DTYPE 0x0003
#define ML_META_MSG_FILL_OLD 0x0004
#define ML_META_MSG_FILL 0x0005
#define ML_META_MSG_EFL 0x0007
#define ML_META_MSG_LAYOUT 0x0008
#define ML_META_MSG_PLINE 0x000B

/* One message of an object header. */
typedef struct ml_meta_msg {
    unsigned type;             /* message type */
    unsigned flags;            /* message flags (0x02: shared) */
    const unsigned char *data; /* inside the header's buffer */
    size_t size;               /* bytes of data */
} ml_meta_msg;

#define ML_META_MAX_MSGS 4096

/* An object header, parsed (h5ohdr.c). */
typedef struct ml_meta_ohdr {
    uint64_t addr;             /* where it starts */
    unsigned version;          /* 1 or 2 */
    unsigned char *buf;        /* owned: every chunk's bytes, one after another */
    ml_meta_msg *msgs;         /* owned */
    size_t n_msgs;
} ml_meta_ohdr;

/* Parse the object header at addr: v1 or v2 prefix, every chunk
 * (continuations followed, at most 256, no chunk twice), every message
 * inside its chunk, v2 checksums. Returns 0, -ML_ECORRUPT, -ENOMEM or
 * -errno; on failure *oh owns nothing. */
int ml_meta_ohdr_read(const ml_meta_file *f, uint64_t addr, ml_meta_ohdr *oh);
void ml_meta_ohdr_free(ml_meta_ohdr *oh);
/* The first message of `type`, or NULL. */
const ml_meta_msg *ml_meta_ohdr_find(const ml_meta_ohdr *oh, unsigned type);

/* What a group's link to a name leads to (h5group.c). */
typedef enum ml_meta_link_kind {
    ML_META_LINK_HARD = 0,   /* addr: the object's header */
    ML_META_LINK_SOFT = 1,   /* target: a path */
    ML_META_LINK_OTHER = 2,  /* external or user-defined: another file, not followed */
} ml_meta_link_kind;

typedef struct ml_meta_link {
    ml_meta_link_kind kind;
    uint64_t addr;
    char target[1024];       /* soft link's path, NUL-terminated */
} ml_meta_link;

/* Look `name` (len bytes) up in the group whose header is `grp`, checking
 * every structure HDF5's look-up reads: symbol table (B-tree nodes, symbol
 * nodes, local heap and its names, keys bounding their children) or link
 * messages. Returns 0 (found: *out), -ML_ENOTFOUND (HDF5 will say so),
 * -ML_ECORRUPT, ML_META_UNCHECKED (a dense group: trusted to HDF5),
 * -ENOMEM or -errno. */
int ml_meta_group_lookup(const ml_meta_file *f, const ml_meta_ohdr *grp, const char *name, size_t len,
                         ml_meta_link *out);

/* Check the messages HDF5 decodes when it opens the dataset whose header
 * is `oh`: dataspace, datatype (nesting bounded), layout, filter
 * pipeline, fill values, external file list. Returns 0, -ML_ECORRUPT,
 * ML_META_UNCHECKED (a shared message: trusted to HDF5), -ENOMEM or
 * -errno. (h5dmsg.c) */
int ml_meta_dataset_check(const ml_meta_file *f, const ml_meta_ohdr *oh);

/* Check what HDF5 reads to open `path` in the file of `src`: the
 * superblock, each group on the path and the link to the next, each
 * object header, and the dataset's messages (h5precheck.c). why: the
 * caller's ML_META_WHY_MAX bytes. Returns 0 (nothing found that HDF5
 * 1.10.8 would read past its buffers on), ML_META_UNCHECKED (something
 * on the way this does not parse: why says what; the rest is trusted to
 * HDF5), -ML_ECORRUPT (why says what), -ML_ENOTHDF5 (no superblock, or,
 * with why set, a damaged one), -ENOMEM or -errno. */
int ml_meta_precheck(ml_source *src, const char *path, char *why);

#endif
