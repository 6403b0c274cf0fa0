/* h5layout.c - HDF5 metadata to an ml_layout.
 *
 * Invariants:
 *  - Every HDF5 call in the process (ours) runs with h5_mutex held. HDF5 is
 *    not thread-safe, and a serial build crashes if two threads enter it.
 *    The mutex lives here; vlen.c, the only other file that calls HDF5,
 *    takes it through h5internal.h (ml_h5_lock), which also shares the
 *    dataset opener and the type mapping, so both open files and name
 *    types one way.
 *  - An ml_layout is immutable after ml_layout_open() except for the chunk
 *    table (chunk_table.c: its cache, and its one publication) and the
 *    fields that say how it fills: table_state, table_why, lookups, all
 *    under h5_mutex. Answers for a chunk are written once (the first
 *    stands), so a reader never sees one change.
 *  - The table fills in one of two ways. One chunk at a time, at its first
 *    touch: in a v1 B-tree by our own descent by key (chunk_index.c,
 *    O(depth) reads, as H5Dread finds it); in other indices by asking HDF5
 *    (H5Dget_chunk_info_by_coord, which in 1.10 scans the index up to that
 *    chunk: O(n) per chunk, and in a damaged index may find an entry
 *    H5Dread, which descends by key, would not). Either answer is
 *    confirmed by key with H5Dget_chunk_storage_size, and one that differs
 *    is marked bad, which reads as corrupt data. In one pass: after
 *    LOOKUPS_BEFORE_FILL look-ups, one thread,
 *    holding h5_mutex throughout, walks the index (chunk_index.c, for a
 *    layout-3 v1 B-tree, finding exactly what descent by key finds;
 *    H5Dchunk_iter, where this HDF5 has it, for the other index types),
 *    checks the result against HDF5 (the chunk count, a sample by key, the
 *    ends by coordinate, every answer already given), and only then
 *    publishes it. A v1 B-tree that is malformed or disagrees is CORRUPT:
 *    every chunk read of it is an error (H5Dread refuses such trees in
 *    part, and which part is not ours to guess). Any other pass that
 *    fails publishes nothing and leaves the table by coordinate for good
 *    (FALLBACK): slower, and still never a guess.
 *  - Nothing the file says sizes an allocation or a read unchecked: shape
 *    products are overflow-checked and the dataset's bytes must fit in an
 *    int64_t; the chunk table is sized by the chunks the index holds, not
 *    by the grid; contiguous and compact data must be exactly the bytes
 *    the shape needs and lie inside the file (eof: the smaller of its size
 *    and the superblock's end-of-allocation); filter parameters HDF5's
 *    filters refuse are refused at open.
 *  - HDF5 before 1.14.4 reports chunk addresses relative to the file's
 *    base address (the user block's size), H5Dget_offset absolute ones:
 *    api_base makes every chunk address a file offset.
 *  - Types and storage the core cannot read byte-exactly are refused
 *    (-ML_ETYPE) or routed to ML_STORE_SLOW, which calls H5Dread with the
 *    file's own type as the memory type (no conversion): never wrong bytes.
 *
 * Workload: one open per queue or dataset (milliseconds); then a few
 * look-ups by coordinate and, for a dataset read further, one pass over its
 * chunk index (for 10^6 chunks ~0.2 s with its check, under the lock), after
 * which every look-up is a lock-free binary search of the table. Waiting LOOKUPS_BEFORE_FILL
 * look-ups first keeps a dataset of which one row is read from paying for
 * the pass and its check (several look-ups' worth), while a dataset that
 * is streamed pays a few cheap look-ups of its first chunks more.
 */
#define _GNU_SOURCE
#include "h5layout.h"

#include "codec.h"
#include "h5internal.h"
#include "io.h"

#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

/* H5Dchunk_iter, with this callback signature, came with 1.10.10, 1.12.3
 * and 1.14.0. */
#if H5_VERSION_GE(1, 14, 0) || (H5_VERSION_GE(1, 12, 3) && !H5_VERSION_GE(1, 13, 0)) || \
    (H5_VERSION_GE(1, 10, 10) && !H5_VERSION_GE(1, 11, 0))
#define ML_HAVE_CHUNK_ITER 1
#endif

/* Look-ups one chunk at a time before the chunk table is filled in one
 * pass: the pass and its check cost about as much as this many look-ups
 * by coordinate. */
#define LOOKUPS_BEFORE_FILL 8

static pthread_mutex_t h5_mutex = PTHREAD_MUTEX_INITIALIZER;
/* Per thread: a thread-safe HDF5 build keeps one error stack, and one
 * auto-print setting, per thread, so each worker must silence its own. */
static _Thread_local int h5_quiet_done;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

/* fork() while a worker is inside HDF5 would leave the child with a held
 * lock and half-updated HDF5 state: hold the lock across fork instead. */
static void fork_prepare(void) { pthread_mutex_lock(&h5_mutex); }
static void fork_release(void) { pthread_mutex_unlock(&h5_mutex); }
static void register_atfork(void) { pthread_atfork(fork_prepare, fork_release, fork_release); }

void ml_h5_lock(void) {
    pthread_once(&atfork_once, register_atfork);
    pthread_mutex_lock(&h5_mutex);
    if (!h5_quiet_done) {
        /* Errors are reported through ml_error, not printed to stderr. */
        H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
        h5_quiet_done = 1;
    }
}

void ml_h5_unlock(void) { pthread_mutex_unlock(&h5_mutex); }

void ml_h5_version(unsigned *major, unsigned *minor, unsigned *release) {
    *major = *minor = *release = 0;
    ml_h5_lock();
    H5get_libversion(major, minor, release);
    ml_h5_unlock();
}

void ml_type_free(ml_type *t) {
    if (!t)
        return;
    for (unsigned i = 0; i < t->n_members; i++) {
        free(t->member_names ? t->member_names[i] : NULL);
        ml_type_free(t->members ? t->members[i] : NULL);
    }
    free(t->member_names);
    free(t->member_offsets);
    free(t->members);
    ml_type_free(t->base);
    free(t);
}

/* 1 and *out = a * b, or 0 if that overflows 64 bits. */
static int mul_ok(uint64_t a, uint64_t b, uint64_t *out) { return !__builtin_mul_overflow(a, b, out); }

/* Is this float type laid out as IEEE binary16/32/64? */
static int float_is_ieee(hid_t tid, size_t size) {
    size_t spos, epos, esize, mpos, msize;
    if (H5Tget_fields(tid, &spos, &epos, &esize, &mpos, &msize) < 0)
        return 0;
    if (size == 2)
        return spos == 15 && epos == 10 && esize == 5 && mpos == 0 && msize == 10;
    if (size == 4)
        return spos == 31 && epos == 23 && esize == 8 && mpos == 0 && msize == 23;
    if (size == 8)
        return spos == 63 && epos == 52 && esize == 11 && mpos == 0 && msize == 52;
    return 0;
}

/* h5py stores numpy bool as enum {FALSE=0, TRUE=1} over a 1-byte integer. */
static int enum_is_bool(hid_t tid) {
    if (H5Tget_size(tid) != 1 || H5Tget_nmembers(tid) != 2)
        return 0;
    int ok = 1;
    for (unsigned i = 0; i < 2 && ok; i++) {
        char *name = H5Tget_member_name(tid, i);
        signed char v = 0;
        if (!name || H5Tget_member_value(tid, i, &v) < 0) {
            ok = 0;
        } else if (!((strcmp(name, "FALSE") == 0 && v == 0) ||
                     (strcmp(name, "TRUE") == 0 && v == 1))) {
            ok = 0;
        }
        if (name)
            H5free_memory(name);
    }
    return ok;
}

int ml_type_from_h5(hid_t tid, ml_type **out, ml_error *err,
                    const char *where) {
    ml_type *t = calloc(1, sizeof *t);
    int rc = 0;
    if (!t)
        return ml_error_set(err, -ENOMEM, "out of memory");
    t->size = H5Tget_size(tid);
    H5T_class_t cls = H5Tget_class(tid);
    if (t->size == 0) {
        free(t);
        return ml_error_set(err, -ML_EHDF5, "cannot read the size of a datatype in %s", where);
    }
    switch (cls) {
    case H5T_INTEGER:
    case H5T_BITFIELD:
        t->kind = (cls == H5T_INTEGER && H5Tget_sign(tid) == H5T_SGN_2)
                      ? ML_T_INT : ML_T_UINT;
        t->big_endian = H5Tget_order(tid) == H5T_ORDER_BE;
        if (t->size != 1 && t->size != 2 && t->size != 4 && t->size != 8)
            rc = ml_error_set(err, -ML_ETYPE,
                              "unsupported datatype: %zu-byte integer in %s",
                              t->size, where);
        break;
    case H5T_FLOAT:
        t->kind = ML_T_FLOAT;
        t->big_endian = H5Tget_order(tid) == H5T_ORDER_BE;
        if (!float_is_ieee(tid, t->size))
            rc = ml_error_set(err, -ML_ETYPE,
                              "unsupported datatype: %zu-byte non-IEEE float in %s",
                              t->size, where);
        break;
    case H5T_STRING:
        if (H5Tis_variable_str(tid) > 0) {
            rc = ml_error_set(err, -ML_ETYPE,
                              "unsupported datatype: variable-length string in %s",
                              where);
            break;
        }
        t->kind = ML_T_STRING;
        break;
    case H5T_ENUM: {
        if (enum_is_bool(tid)) {
            t->kind = ML_T_BOOL;
            break;
        }
        hid_t super = H5Tget_super(tid);
        ml_type *base = NULL;
        rc = super < 0 ? ml_error_set(err, -ML_EHDF5, "cannot read enum base type in %s", where)
                       : ml_type_from_h5(super, &base, err, where);
        if (super >= 0)
            H5Tclose(super);
        if (rc == 0) {
            /* Enums read as their base integer, as h5py reports them. */
            *t = *base;
            free(base);
        }
        break;
    }
    case H5T_COMPOUND: {
        int n = H5Tget_nmembers(tid);
        t->kind = ML_T_COMPOUND;
        if (n <= 0) {
            rc = ml_error_set(err, -ML_ETYPE, "unsupported datatype: empty compound in %s", where);
            break;
        }
        t->member_names = calloc((size_t)n, sizeof(char *));
        t->member_offsets = calloc((size_t)n, sizeof(size_t));
        t->members = calloc((size_t)n, sizeof(ml_type *));
        if (!t->member_names || !t->member_offsets || !t->members) {
            rc = ml_error_set(err, -ENOMEM, "out of memory");
            break;
        }
        t->n_members = (unsigned)n;
        for (unsigned i = 0; i < (unsigned)n && rc == 0; i++) {
            char *name = H5Tget_member_name(tid, i);
            t->member_names[i] = name ? strdup(name) : NULL;
            if (name)
                H5free_memory(name);
            if (!t->member_names[i]) {
                rc = ml_error_set(err, -ML_EHDF5, "cannot read compound member name in %s", where);
                break;
            }
            t->member_offsets[i] = H5Tget_member_offset(tid, i);
            hid_t mt = H5Tget_member_type(tid, i);
            if (mt < 0) {
                rc = ml_error_set(err, -ML_EHDF5, "cannot read compound member type in %s", where);
                break;
            }
            rc = ml_type_from_h5(mt, &t->members[i], err, where);
            H5Tclose(mt);
            /* Every member inside the compound: what numpy's dtype requires. */
            if (rc == 0 && (t->member_offsets[i] > t->size || t->members[i]->size > t->size - t->member_offsets[i]))
                rc = ml_error_set(err, -ML_ETYPE, "compound member '%s' lies outside its %zu-byte compound in %s",
                                  t->member_names[i], t->size, where);
        }
        break;
    }
    case H5T_ARRAY: {
        int nd = H5Tget_array_ndims(tid);
        hsize_t dims[H5S_MAX_RANK];
        t->kind = ML_T_ARRAY;
        if (nd <= 0 || nd > ML_MAX_DIMS || H5Tget_array_dims2(tid, dims) < 0) {
            rc = ml_error_set(err, -ML_ETYPE, "unsupported datatype: array member in %s", where);
            break;
        }
        t->ndim = (unsigned)nd;
        for (int i = 0; i < nd; i++)
            t->dims[i] = dims[i];
        hid_t super = H5Tget_super(tid);
        if (super < 0) {
            rc = ml_error_set(err, -ML_EHDF5, "cannot read array base type in %s", where);
            break;
        }
        rc = ml_type_from_h5(super, &t->base, err, where);
        H5Tclose(super);
        /* The array's size must be its shape times its base: a numpy subarray. */
        uint64_t n = 1;
        for (unsigned i = 0; rc == 0 && i < t->ndim; i++)
            if (!mul_ok(n, t->dims[i], &n))
                n = 0;
        if (rc == 0 && (!mul_ok(n, t->base->size, &n) || n != t->size))
            rc = ml_error_set(err, -ML_ETYPE, "array type of %zu bytes is not its shape times its %zu-byte base in %s",
                              t->size, t->base->size, where);
        break;
    }
    case H5T_VLEN:
        rc = ml_error_set(err, -ML_ETYPE, "unsupported datatype: variable-length sequence in %s", where);
        break;
    case H5T_REFERENCE:
        rc = ml_error_set(err, -ML_ETYPE, "unsupported datatype: object/region reference in %s", where);
        break;
    case H5T_OPAQUE:
        rc = ml_error_set(err, -ML_ETYPE, "unsupported datatype: opaque in %s", where);
        break;
    case H5T_TIME:
        /* h5py cannot read HDF5 time types. PyTables' Time32Col stores
         * plain int32 seconds: read as int32, as PyTables does. Its
         * Time64Col stores (seconds << 32 | microseconds) and PyTables
         * converts that to float64 on read: not a zero-copy type, refused. */
        t->big_endian = H5Tget_order(tid) == H5T_ORDER_BE;
        if (t->size == 4)
            t->kind = ML_T_INT;
        else
            rc = ml_error_set(err, -ML_ETYPE,
                              "unsupported datatype: %zu-byte time (PyTables Time64, converted on read) in %s",
                              t->size, where);
        break;
    default:
        rc = ml_error_set(err, -ML_ETYPE, "unsupported datatype class %d in %s", (int)cls, where);
        break;
    }
    if (rc < 0) {
        ml_type_free(t);
        return rc;
    }
    *out = t;
    return 0;
}

/* Open the file for our own reads, so the caller gets the OS's errno
 * (ENOENT, EACCES, EISDIR) rather than HDF5's generic failure. On success
 * *fd_out is an O_RDONLY descriptor the caller owns. */
static int open_file(const char *filename, int *fd_out, ml_error *err) {
    struct stat st;
    if (stat(filename, &st) < 0)
        return ml_error_set(err, -errno, "cannot open '%s': %s", filename, strerror(errno));
    if (S_ISDIR(st.st_mode))
        return ml_error_set(err, -EISDIR, "cannot open '%s': is a directory", filename);
    int fd = open(filename, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return ml_error_set(err, -errno, "cannot open '%s': %s", filename, strerror(errno));
    *fd_out = fd;
    return 0;
}

/* Does another process hold HDF5's exclusive (writer's) lock on the file?
 * Probes with a shared flock, released at once. */
static int file_locked(int fd) {
    if (flock(fd, LOCK_SH | LOCK_NB) == 0) {
        flock(fd, LOCK_UN);
        return 0;
    }
    return errno == EWOULDBLOCK;
}

/* Is `src` still the file that `filename` names (same device and inode)?
 * Checked after H5Fopen so that metadata and data come from one file. */
static int same_file(ml_source *src, const char *filename) {
    ml_source_id a;
    struct stat b;
    return ml_source_identify(src, &a) == 0 && stat(filename, &b) == 0 && a.dev == (uint64_t)b.st_dev &&
           a.ino == (uint64_t)b.st_ino;
}

/* HDF5 address of an object's header. Caller holds h5_mutex. */
static int object_header_addr(hid_t obj, uint64_t *out) {
    haddr_t addr;
#if H5_VERSION_GE(1, 12, 0)
    H5O_info2_t oi;
    if (H5Oget_info3(obj, &oi, H5O_INFO_BASIC) < 0 || H5VLnative_token_to_addr(obj, oi.token, &addr) < 0)
        return -ML_EHDF5;
#else
    H5O_info_t oi;
    if (H5Oget_info2(obj, &oi, H5O_INFO_BASIC) < 0)
        return -ML_EHDF5;
    addr = oi.addr;
#endif
    if (addr == HADDR_UNDEF)
        return -ML_EHDF5;
    *out = (uint64_t)addr;
    return 0;
}

/* Is the HDF5 library this process runs at least maj.min.rel? */
static int h5_lib_ge(unsigned maj, unsigned min, unsigned rel) {
    unsigned a, b, c;
    if (H5get_libversion(&a, &b, &c) < 0)
        return 0;
    return a != maj ? a > maj : b != min ? b > min : c >= rel;
}

int ml_h5_file_facts_get(hid_t obj, ml_source *src, ml_h5_file_facts *out) {
    hid_t file = H5Iget_file_id(obj);
    hid_t fcpl = file < 0 ? -1 : H5Fget_create_plist(file);
    hsize_t userblock = 0;
    haddr_t eoa = HADDR_UNDEF;
    size_t sa = 0, ss = 0;
    unsigned k = 0;
    ml_source_id st;
    int rc = 0;
    if (fcpl < 0 || H5Pget_userblock(fcpl, &userblock) < 0 || H5Pget_sizes(fcpl, &sa, &ss) < 0 ||
        H5Pget_istore_k(fcpl, &k) < 0 || H5Fget_eoa(file, &eoa) < 0 || eoa == HADDR_UNDEF) {
        rc = -ML_EHDF5;
        goto out;
    }
    if ((rc = ml_source_identify(src, &st)) < 0)
        goto out;
    /* H5Fget_eoa is relative to the base, like every HDF5 address. */
    uint64_t end = (uint64_t)eoa > UINT64_MAX - userblock ? UINT64_MAX : userblock + (uint64_t)eoa;
    *out = (ml_h5_file_facts){.base = userblock, .eof = st.size < end ? st.size : end,
                              .sizeof_addr = (unsigned)sa, .sizeof_size = (unsigned)ss, .btree_k = k};
out:
    if (fcpl >= 0)
        H5Pclose(fcpl);
    if (file >= 0)
        H5Fclose(file);
    return rc;
}

/* The file as every data read sees it (ml_h5_file_facts): HDF5's chunk
 * addresses are relative to the base before 1.14.4, so without it nothing
 * can be read; every read stops at eof (a crafted superblock can put the
 * EOA before the data). The dataset's own file, which an external link
 * makes another than `filename`, is the one L->src reads. Caller holds
 * h5_mutex. Returns 0 or -ML_EHDF5 / -errno. */
static int read_file_bounds(ml_layout *L, ml_error *err, const char *where) {
    ml_h5_file_facts ff;
    int rc = ml_h5_file_facts_get((hid_t)L->h5_dset, L->src, &ff);
    if (rc == -ML_EHDF5)
        return ml_error_set(err, rc, "cannot read the file creation properties of %s", where);
    if (rc < 0)
        return ml_error_set(err, rc, "cannot stat the file of %s: %s", where, strerror(-rc));
    L->eof = ff.eof;
    L->api_base = h5_lib_ge(1, 14, 4) ? 0 : ff.base;
    L->cfile = (ml_chunk_file){.src = L->src, .base = ff.base, .size = ff.eof, .sizeof_addr = ff.sizeof_addr,
                               .sizeof_size = ff.sizeof_size, .btree_k = ff.btree_k};
    return 0;
}

/* Does the fixed array hold one element per chunk of the grid of the
 * dataspace's maximum dimensions, as HDF5 indexes it? Caller holds
 * h5_mutex. */
static int farray_fits(ml_layout *L) {
    hsize_t dims[H5S_MAX_RANK], maxdims[H5S_MAX_RANK];
    uint64_t count = 0, want = 1;
    hid_t space = H5Dget_space((hid_t)L->h5_dset);
    int nd = space < 0 ? -1 : H5Sget_simple_extent_dims(space, dims, maxdims);
    if (space >= 0)
        H5Sclose(space);
    if (nd != (int)L->ndim || ml_chunk_index_farray_count(&L->cfile, &L->cindex, &count) < 0)
        return 0;
    for (unsigned d = 0; d < L->ndim; d++) {
        if (maxdims[d] == H5S_UNLIMITED || maxdims[d] < dims[d])
            return 0;
        uint64_t g = maxdims[d] / L->chunk[d] + (maxdims[d] % L->chunk[d] != 0);
        if (!mul_ok(want, g, &want))
            return 0;
    }
    return count == want;
}

/* Parse the dataset's object header once, at open (chunk_index.c: the
 * layout message, the fill value message's size), into L->cindex and
 * L->header_rc, for the fill value's check and the chunk index. Caller
 * holds h5_mutex. */
static void read_header(ml_layout *L) {
    uint64_t ohdr;
    L->header_rc = object_header_addr((hid_t)L->h5_dset, &ohdr) < 0 ? -ML_EHDF5
                   : ml_chunk_index_locate(&L->cfile, ohdr, &L->cindex);
    if (L->header_rc < 0)
        L->cindex.kind = ML_CHUNK_INDEX_NONE;
}

/* What the chunk table's one-pass fill needs beside the file's bounds:
 * the layout message's index. Anything that cannot be had leaves the
 * table by coordinate (FALLBACK, with a reason). Caller holds h5_mutex. */
static void setup_chunk_index(ml_layout *L) {
    const char *corrupt = NULL; /* why no chunk of it can be read as HDF5 reads it */
    if (L->header_rc == -ML_EHDF5) {
        L->table_why = "the object header's address is unknown";
    } else if (L->header_rc < 0) {
        L->table_why = "the object header could not be read";
        /* HDF5 opened what our parser calls malformed (a chunk dimension
         * of 0, a message past its header chunk): damaged, and HDF5 1.10
         * reads such layouts wrongly. */
        if (L->header_rc == -ML_ECORRUPT)
            corrupt = "its object header or layout message is malformed";
    }
    if (L->cindex.kind != ML_CHUNK_INDEX_NONE) {
        /* The message must describe the dataset HDF5 describes. */
        int same = L->cindex.ndims == L->ndim + 1 && L->cindex.dims[L->ndim] == L->type->size;
        for (unsigned d = 0; d < L->ndim && same; d++)
            same = L->cindex.dims[d] == L->chunk[d];
        if (!same) {
            L->cindex.kind = ML_CHUNK_INDEX_NONE;
            corrupt = L->table_why = "the layout message disagrees with HDF5";
        }
    }
    if (L->cindex.kind != ML_CHUNK_INDEX_BTREE1 && !L->table_why) {
        switch (L->cindex.kind) {
        case ML_CHUNK_INDEX_SINGLE: L->table_why = "a single-chunk index (one look-up)"; break;
        case ML_CHUNK_INDEX_IMPLICIT: L->table_why = "an implicit index"; break;
        case ML_CHUNK_INDEX_FARRAY: L->table_why = "a fixed-array index"; break;
        case ML_CHUNK_INDEX_EARRAY: L->table_why = "an extensible-array index"; break;
        case ML_CHUNK_INDEX_BTREE2: L->table_why = "a version 2 B-tree index"; break;
        default: L->table_why = "a layout message of version 1 or 2"; break;
        }
    }
#ifndef ML_HAVE_CHUNK_ITER
    /* Without H5Dchunk_iter only the v1 B-tree can be read in one pass. */
    if (L->cindex.kind != ML_CHUNK_INDEX_BTREE1)
        L->table_state = ML_TABLE_FALLBACK;
#endif
    if (L->cindex.kind == ML_CHUNK_INDEX_FARRAY && L->cindex.addr != UINT64_MAX && !farray_fits(L)) {
        L->table_state = ML_TABLE_CORRUPT;
        L->table_why = "a fixed-array index of another size than the dataspace's maximum chunk grid";
    }
    /* Index kinds that only fit some datasets: HDF5 1.10 returns the one
     * chunk of a single-chunk index for every chunk asked for, and an
     * implicit index holds no stored sizes to decode filtered chunks by. */
    if (corrupt) {
        L->table_state = ML_TABLE_CORRUPT;
        L->table_why = corrupt;
    }
    if ((L->cindex.kind == ML_CHUNK_INDEX_SINGLE && L->n_chunks > 1) ||
        (L->cindex.kind == ML_CHUNK_INDEX_IMPLICIT && L->pipeline.n_filters > 0)) {
        L->table_state = ML_TABLE_CORRUPT;
        L->table_why = L->cindex.kind == ML_CHUNK_INDEX_SINGLE ? "a single-chunk index for a dataset of several chunks"
                                                                : "an implicit index for filtered chunks";
    }
}

/* HDF5 refuses a chunk of 4 GiB or more (H5Pset_chunk: "chunk size must be < 4GB"). */
#define CHUNK_BYTES_MAX UINT64_C(0xFFFFFFFF)

/* Refuse filter parameters HDF5's own filter would refuse on every read,
 * so a chunk is never decoded with parameters HDF5 calls invalid (a
 * shuffle of element size 0 would leave the bytes shuffled). nv: the
 * number of client values the file holds, of which `values` has the
 * first 8. Returns 0 or -ML_ECORRUPT. */
static int check_filter(const ml_filter *f, const char *name, ml_error *err, const char *where) {
    /* Optional filters too (h5py marks deflate and shuffle optional): HDF5
     * fails every chunk that applies one with bad parameters. (PyTables'
     * VLArrays carry a never-applied parameterless shuffle; vlen.c, not
     * this check, reads those.) decode.c checks again per chunk. */
    const ml_codec *c = ml_codec_find(f->id);
    const char *bad = c && c->check ? c->check(f) : NULL;
    if (!bad)
        return 0;
    return ml_error_set(err, -ML_ECORRUPT, "%s has invalid parameters for filter '%s' (id %d, %zu value%s): %s",
                        where, name, f->id, f->n_values, f->n_values == 1 ? "" : "s", bad);
}

static int read_chunk_meta(ml_layout *L, hid_t dcpl, ml_error *err,
                           const char *where) {
    hsize_t chunk[H5S_MAX_RANK];
    if (H5Pget_chunk(dcpl, (int)L->ndim, chunk) != (int)L->ndim)
        return ml_error_set(err, -ML_EHDF5, "cannot read chunk shape of %s", where);
    uint64_t n_chunks = 1, chunk_bytes = L->type->size;
    for (unsigned d = 0; d < L->ndim; d++) {
        if (chunk[d] == 0)
            return ml_error_set(err, -ML_ESHAPE, "zero chunk dimension in %s", where);
        L->chunk[d] = chunk[d];
        /* ceil without dims + chunk - 1, which can wrap */
        L->grid[d] = L->dims[d] / chunk[d] + (L->dims[d] % chunk[d] != 0);
        if (!mul_ok(n_chunks, L->grid[d], &n_chunks))
            return ml_error_set(err, -ML_ECORRUPT, "%s has more chunks than 2^64 (its chunk grid overflows)", where);
        if (!mul_ok(chunk_bytes, chunk[d], &chunk_bytes) || chunk_bytes > CHUNK_BYTES_MAX)
            return ml_error_set(err, -ML_ECORRUPT, "%s has chunks of 4 GiB or more, which HDF5 does not allow", where);
    }
    L->n_chunks = n_chunks;
    L->chunk_bytes = (size_t)chunk_bytes;
    int nf = H5Pget_nfilters(dcpl);
    if (nf < 0 || nf > ML_MAX_FILTERS)
        return ml_error_set(err, -ML_EHDF5, "cannot read filter pipeline of %s", where);
    L->pipeline.n_filters = (unsigned)nf;
    for (int i = 0; i < nf; i++) {
        ml_filter *f = &L->pipeline.filters[i];
        size_t nv = 8;
        unsigned cfg = 0;
        char name[64] = "";
        f->id = H5Pget_filter2(dcpl, (unsigned)i, &f->flags, &nv, f->values,
                               sizeof name, name, &cfg);
        f->n_values = nv; /* the file's count: values[] holds the first 8 */
        if (f->id < 0)
            return ml_error_set(err, -ML_EHDF5, "cannot read filter %d of %s", i, where);
        if (!ml_decode_supports(f->id)) {
            /* The slow path decodes with HDF5: refuse up front a filter HDF5
             * cannot load either, rather than fail on every block. */
            if (H5Zfilter_avail((H5Z_filter_t)f->id) <= 0)
                return ml_error_set(err, -ML_EFILTER,
                                    "%s uses filter '%s' (id %d), which neither multiload nor the "
                                    "HDF5 library can decode (is its HDF5 plugin installed?)",
                                    where, name, f->id);
            L->storage = ML_STORE_SLOW;
            L->slow_reason = "a filter multiload does not decode natively";
        } else {
            int rc = check_filter(f, name, err, where);
            if (rc < 0)
                return rc;
        }
    }
    /* The slow path needs the index too: its chunks are checked before
     * H5Dread decodes them (check_slow_chunks). */
    setup_chunk_index(L);
    return 0;
}

static int read_fill(ml_layout *L, hid_t dcpl, ml_error *err, const char *where) {
    H5D_fill_value_t status;
    if (H5Pfill_value_defined(dcpl, &status) < 0)
        return ml_error_set(err, -ML_EHDF5, "cannot read fill value of %s", where);
    /* No fill value at all: HDF5 leaves rows never written undefined (or,
     * with a damaged fill message, fails the read): refused, not zeros. */
    L->fill_undefined = status == H5D_FILL_VALUE_UNDEFINED;
    if (status != H5D_FILL_VALUE_USER_DEFINED)
        return 0; /* zeros */
    /* HDF5 1.10.8 copies a whole element out of the stored fill value
     * whatever size its message declares: check the size first. */
    if (L->header_rc == 0 && L->cindex.fill_size >= 0 && (uint64_t)L->cindex.fill_size != L->type->size)
        return ml_error_set(err, -ML_ECORRUPT, "the fill value of %s is %lld bytes for %zu-byte elements "
                            "(damaged fill value message)", where, (long long)L->cindex.fill_size, L->type->size);
    L->fill = calloc(1, L->type->size);
    if (!L->fill)
        return ml_error_set(err, -ENOMEM, "out of memory");
    if (H5Pget_fill_value(dcpl, (hid_t)L->h5_type, L->fill) < 0)
        return ml_error_set(err, -ML_EHDF5, "cannot read fill value of %s", where);
    /* An all-zero fill is the same as none: keep the memset fast path. */
    for (size_t i = 0; i < L->type->size; i++)
        if (L->fill[i])
            return 0;
    free(L->fill);
    L->fill = NULL;
    return 0;
}

/* An external link can put the dataset in another file than `filename`:
 * then read from that file, through a source on a duplicate of the
 * descriptor HDF5 opened for it, so data offsets and data always come from one file. If
 * HDF5 reads the file with a driver other than sec2 (no plain descriptor
 * to compare), a dataset in a file of another name is read by H5Dread
 * (*slow = 1). Caller holds h5_mutex. Returns 0 or -errno. */
static int follow_external_file(ml_layout *L, int *slow, ml_error *err) {
    hid_t of = H5Iget_file_id((hid_t)L->h5_dset);
    hid_t fapl = of < 0 ? -1 : H5Fget_access_plist(of);
    void *handle = NULL;
    struct stat a;
    ml_source_id b;
    int rc = 0;
    *slow = 0;
    if (fapl >= 0 && H5Pget_driver(fapl) == H5FD_SEC2 && H5Fget_vfd_handle(of, fapl, &handle) >= 0 &&
        handle && fstat(*(int *)handle, &a) == 0 && ml_source_identify(L->src, &b) == 0) {
        if ((uint64_t)a.st_dev != b.dev || (uint64_t)a.st_ino != b.ino) {
            ml_source *src = NULL;
            int fd = fcntl(*(int *)handle, F_DUPFD_CLOEXEC, 0);
            rc = fd < 0 ? -errno : ml_source_posix_adopt(fd, &src);
            if (rc < 0) {
                if (fd >= 0)
                    close(fd);
                rc = ml_error_set(err, rc, "cannot open the file that '%s' in '%s' links to: %s",
                                  L->path, L->filename, strerror(-rc));
            } else {
                ml_source_unref(L->src);
                L->src = src;
            }
        }
    } else {
        char name[4096];
        ssize_t n = of < 0 ? -1 : H5Fget_name(of, name, sizeof name);
        *slow = !(n >= 0 && (size_t)n < sizeof name && strcmp(name, L->filename) == 0);
    }
    if (fapl >= 0)
        H5Pclose(fapl);
    if (of >= 0)
        H5Fclose(of);
    return rc;
}

/* A contiguous extent must be exactly the bytes the dataspace needs: newer
 * HDF5 refuses a size that disagrees, and 1.10 reads past the extent's end
 * with it. That it lies inside the file is checked per read, as HDF5 does
 * (rows before a cut still read). Caller holds h5_mutex. Returns 0 or
 * -ML_ECORRUPT. */
static int check_contiguous(ml_layout *L, hid_t dset, uint64_t total, ml_error *err, const char *where) {
    if (L->offset == UINT64_MAX || total == 0)
        return 0;
    hsize_t stored = H5Dget_storage_size(dset);
    if ((uint64_t)stored != total)
        return ml_error_set(err, -ML_ECORRUPT, "%s stores %llu bytes, but its shape needs %llu (damaged layout "
                            "or dataspace)", where, (unsigned long long)stored, (unsigned long long)total);
    if (L->offset > UINT64_MAX - total)
        return ml_error_set(err, -ML_ECORRUPT, "the data of %s lies past the end of any file (address %llu)",
                            where, (unsigned long long)L->offset);
    return 0;
}

/* HDF5's limit on a compact dataset's data: the layout message holds its
 * size in 16 bits. */
#define COMPACT_BYTES_MAX 65535u

/* Read a compact dataset whole into L->mem. Its stored size must equal the
 * (overflow-checked) bytes of its shape before HDF5 reads it: 1.10.8 reads
 * past its own buffer when they disagree. Caller holds h5_mutex. Returns 0,
 * -ML_ECORRUPT, -ENOMEM or -ML_EHDF5. */
static int read_compact(ml_layout *L, hid_t dset, uint64_t total, ml_error *err, const char *where) {
    hsize_t stored = H5Dget_storage_size(dset);
    if ((uint64_t)stored != total || total > COMPACT_BYTES_MAX)
        return ml_error_set(err, -ML_ECORRUPT, "compact %s stores %llu bytes, but its shape needs %llu (damaged "
                            "layout or dataspace)", where, (unsigned long long)stored, (unsigned long long)total);
    L->mem = malloc(total ? (size_t)total : 1);
    if (!L->mem)
        return ml_error_set(err, -ENOMEM, "out of memory");
    if (total && H5Dread(dset, (hid_t)L->h5_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, L->mem) < 0)
        return ml_error_set(err, -ML_EHDF5, "cannot read compact %s", where);
    return 0;
}

/* Fill everything after the HDF5 handles are open. Caller holds h5_mutex. */
static int describe(ml_layout *L, ml_error *err) {
    char where[600];
    snprintf(where, sizeof where, "dataset '%s' of file '%s'", L->path, L->filename);
    hid_t dset = (hid_t)L->h5_dset;
    hid_t space = -1, dcpl = -1;
    int rc = 0;

    L->h5_type = H5Dget_type(dset);
    if (L->h5_type < 0) {
        rc = ml_error_set(err, -ML_EHDF5, "cannot read the datatype of %s", where);
        goto out;
    }
    rc = ml_type_from_h5((hid_t)L->h5_type, &L->type, err, where);
    if (rc < 0)
        goto out;

    space = H5Dget_space(dset);
    int nd = space < 0 ? -1 : H5Sget_simple_extent_ndims(space);
    if (nd < 0) {
        rc = ml_error_set(err, -ML_EHDF5, "cannot read the shape of %s", where);
        goto out;
    }
    if (nd == 0 || H5Sget_simple_extent_type(space) != H5S_SIMPLE) {
        rc = ml_error_set(err, -ML_ESHAPE, "%s is scalar or empty-typed and has no rows to stream", where);
        goto out;
    }
    if (nd > ML_MAX_DIMS) {
        rc = ml_error_set(err, -ML_ESHAPE, "%s has %d dimensions, more than %d", where, nd, ML_MAX_DIMS);
        goto out;
    }
    hsize_t dims[H5S_MAX_RANK];
    H5Sget_simple_extent_dims(space, dims, NULL);
    L->ndim = (unsigned)nd;
    /* Every size below is a product of numbers from the file: each is
     * overflow-checked, and the whole dataset's bytes must fit in an
     * int64_t, so n * row_bytes is safe anywhere for n <= n_rows. */
    uint64_t row_elems = 1, row_bytes = 0, total = 0;
    int fits = 1;
    for (int d = 0; d < nd; d++) {
        L->dims[d] = dims[d];
        if (d > 0)
            fits = fits && mul_ok(row_elems, dims[d], &row_elems);
    }
    L->n_rows = dims[0];
    if (!fits || !mul_ok(row_elems, L->type->size, &row_bytes) ||
        !mul_ok(row_bytes, L->n_rows, &total) || total > (uint64_t)INT64_MAX || row_bytes > SIZE_MAX) {
        rc = ml_error_set(err, -ML_ECORRUPT, "%s is too large to address: its shape times its %zu-byte elements "
                          "overflows 2^63 bytes (a damaged dataspace?)", where, L->type->size);
        goto out;
    }
    L->row_elems = (size_t)row_elems;
    L->row_bytes = (size_t)row_bytes;
    rc = read_file_bounds(L, err, where);
    if (rc < 0)
        goto out;
    read_header(L);

    dcpl = H5Dget_create_plist(dset);
    if (dcpl < 0) {
        rc = ml_error_set(err, -ML_EHDF5, "cannot read the creation properties of %s", where);
        goto out;
    }
    rc = read_fill(L, dcpl, err, where);
    if (rc < 0)
        goto out;

    H5D_layout_t lay = H5Pget_layout(dcpl);
    if (H5Pget_external_count(dcpl) > 0) {
        L->storage = ML_STORE_SLOW;
        L->slow_reason = "external storage";
    } else if (lay == H5D_CONTIGUOUS) {
        L->storage = ML_STORE_CONTIGUOUS;
        haddr_t off = H5Dget_offset(dset);
        L->offset = off == HADDR_UNDEF ? UINT64_MAX : (uint64_t)off;
        rc = check_contiguous(L, dset, total, err, where);
    } else if (lay == H5D_CHUNKED) {
        L->storage = ML_STORE_CHUNKED;
        rc = read_chunk_meta(L, dcpl, err, where);
    } else if (lay == H5D_COMPACT) {
        L->storage = ML_STORE_MEMORY;
        rc = read_compact(L, dset, total, err, where);
    } else {
        L->storage = ML_STORE_SLOW;
        L->slow_reason = "a virtual dataset";
    }
out:
    if (dcpl >= 0)
        H5Pclose(dcpl);
    if (space >= 0)
        H5Sclose(space);
    return rc;
}

int ml_h5_dataset_open(const char *filename, const char *path, ml_source **src_out, hid_t *file_out,
                       hid_t *dset_out, ml_error *err) {
    hid_t file = -1, obj = -1;
    ml_source *src = NULL;
    int fd = -1;
    int rc = open_file(filename, &fd, err);
    if (rc < 0)
        return rc;
    if ((rc = ml_source_posix_adopt(fd, &src)) < 0) {
        close(fd);
        return ml_error_set(err, rc, "out of memory");
    }
    ml_h5_lock();
    htri_t is = H5Fis_hdf5(filename);
    if (is <= 0) {
        rc = ml_error_set(err, -ML_ENOTHDF5, "'%s' is not an HDF5 file (no valid superblock)", filename);
        goto fail;
    }
    file = H5Fopen(filename, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (file < 0) {
        rc = file_locked(ml_source_posix_fd(src))
                 ? ml_error_set(err, -EAGAIN,
                                "'%s' is locked by a process writing it (HDF5 file locking): open it once "
                                "the writer has closed it, or set HDF5_USE_FILE_LOCKING=FALSE if the writer "
                                "uses SWMR or the file system's locks are unreliable", filename)
                 : ml_error_set(err, -ML_ENOTHDF5, "HDF5 cannot open '%s' (damaged or locked file)", filename);
        goto fail;
    }
    if (!same_file(src, filename)) {
        rc = ml_error_set(err, -ML_EHDF5, "'%s' was replaced or removed while it was being opened", filename);
        goto fail;
    }
    obj = H5Oopen(file, path, H5P_DEFAULT);
    if (obj < 0) {
        /* A hard link that resolves but an object HDF5 cannot open: the
         * object exists, in a format this HDF5 cannot read (a newer one). */
        H5L_info_t li;
        if (H5Lget_info(file, path, &li, H5P_DEFAULT) >= 0 && li.type == H5L_TYPE_HARD) {
            unsigned maj = 0, min = 0, rel = 0;
            H5get_libversion(&maj, &min, &rel);
            rc = ml_error_set(err, -ML_EHDF5, "dataset '%s' in file '%s' exists, but HDF5 %u.%u.%u cannot open "
                              "it (its object header or layout is in a format this HDF5 does not know: "
                              "written by a newer HDF5, or damaged)", path, filename, maj, min, rel);
        } else {
            rc = ml_error_set(err, -ML_ENOTFOUND, "no dataset '%s' in file '%s' (missing path or dangling link)",
                              path, filename);
        }
        goto fail;
    }
    H5I_type_t it = H5Iget_type(obj);
    if (it != H5I_DATASET) {
        rc = ml_error_set(err, -ML_ENOTDSET, "'%s' in file '%s' is a %s, not a dataset", path, filename,
                          it == H5I_GROUP ? "group" : it == H5I_DATATYPE ? "named datatype" : "non-dataset object");
        goto fail;
    }
    ml_h5_unlock();
    *src_out = src;
    *file_out = file;
    *dset_out = obj;
    return 0;
fail:
    if (obj >= 0)
        H5Oclose(obj);
    if (file >= 0)
        H5Fclose(file);
    ml_h5_unlock();
    ml_source_unref(src);
    return rc;
}

int ml_layout_open(const char *filename, const char *path, ml_layout **out,
                   ml_error *err) {
    ml_layout *L = calloc(1, sizeof *L);
    hid_t file = -1, dset = -1;
    int rc = 0;
    if (!L)
        return ml_error_set(err, -ENOMEM, "out of memory");
    atomic_init(&L->refcount, 1);
    L->h5_file = L->h5_dset = L->h5_type = -1;
    L->offset = UINT64_MAX;
    if ((rc = ml_chunk_table_init(&L->table)) < 0) {
        free(L);
        return ml_error_set(err, rc, "cannot set up the chunk table: %s", ml_strerror(rc));
    }
    L->filename = strdup(filename);
    L->path = strdup(path);
    if (!L->filename || !L->path) {
        rc = ml_error_set(err, -ENOMEM, "out of memory");
        goto fail;
    }
    rc = ml_h5_dataset_open(filename, path, &L->src, &file, &dset, err);
    if (rc < 0)
        goto fail;
    L->h5_file = file;
    L->h5_dset = dset;
    ml_h5_lock();
    int slow = 0;
    rc = follow_external_file(L, &slow, err);
    if (rc == 0)
        rc = describe(L, err);
    if (rc == 0 && slow) {
        L->storage = ML_STORE_SLOW;
        L->slow_reason = "an external link to a file HDF5 reads with a driver other than sec2";
        L->cindex.kind = ML_CHUNK_INDEX_NONE; /* L->src is not the dataset's file */
    }
    ml_h5_unlock();
    if (rc < 0)
        goto fail;
    *out = L;
    return 0;
fail:
    ml_layout_unref(L);
    return rc;
}

void ml_h5_close_handles(hid_t type, hid_t dset, hid_t file) {
    if (type < 0 && dset < 0 && file < 0)
        return;
    ml_h5_lock();
    if (type >= 0)
        H5Tclose(type);
    if (dset >= 0)
        H5Dclose(dset);
    if (file >= 0)
        H5Fclose(file);
    ml_h5_unlock();
}

void ml_layout_ref(ml_layout *L) {
    /* Relaxed: the caller already holds a reference, so L cannot vanish. */
    atomic_fetch_add_explicit(&L->refcount, 1, memory_order_relaxed);
}

void ml_layout_unref(ml_layout *L) {
    if (!L)
        return;
    /* acq_rel: the last owner must see every other owner's writes before freeing. */
    if (atomic_fetch_sub_explicit(&L->refcount, 1, memory_order_acq_rel) != 1)
        return;
    ml_h5_close_handles((hid_t)L->h5_type, (hid_t)L->h5_dset, (hid_t)L->h5_file);
    ml_source_unref(L->src);
    ml_type_free(L->type);
    free(L->fill);
    ml_chunk_table_destroy(&L->table);
    free(L->mem);
    free(L->filename);
    free(L->path);
    free(L);
}

/* Element coordinates of chunk `index`'s corner. */
static void chunk_coord(const ml_layout *L, uint64_t index, hsize_t *coord) {
    uint64_t rest = index;
    for (int d = (int)L->ndim - 1; d >= 0; d--) {
        coord[d] = (rest % L->grid[d]) * L->chunk[d];
        rest /= L->grid[d];
    }
}

/* HDF5's address of a chunk as a file offset, UINT64_MAX if undefined or
 * past any file. */
static uint64_t file_offset(const ml_layout *L, haddr_t addr) {
    if (addr == HADDR_UNDEF || (uint64_t)addr > UINT64_MAX - 1 - L->api_base)
        return UINT64_MAX;
    return (uint64_t)addr + L->api_base;
}

/* H5Ewalk2's callback: count the frames, keep the innermost's text. */
typedef struct error_walk {
    unsigned frames;
    const char *innermost;
} error_walk;

static herr_t note_frame(unsigned n, const H5E_error2_t *e, void *ctx) {
    error_walk *w = ctx;
    (void)n;
    w->frames++;
    w->innermost = e->desc;
    return 0;
}

/* Did the HDF5 call that just failed fail only because the chunk it
 * looked up by key has no storage? HDF5 1.10 says so with an error of two
 * frames; a failed descent (a damaged index) leaves deeper ones. Caller
 * holds h5_mutex. */
static int failed_unallocated(void) {
    error_walk w = {0};
    if (H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, note_frame, &w) < 0)
        return 0;
    return w.frames <= 2 && w.innermost && strstr(w.innermost, "not allocated");
}

/* The stored size of chunk `index` as HDF5's read finds it: by key from
 * the index's root (H5Dget_chunk_storage_size, O(log n) in a B-tree),
 * 0 if never written. *written (if not NULL) says whether the index holds
 * the chunk at all: HDF5 1.10 fails with "not allocated" for a chunk it
 * does not hold, so a 0 it returns is a chunk stored with size 0 (corrupt;
 * newer HDF5 may return 0 for both, and then it counts as not written).
 * Caller holds h5_mutex. Returns 0 or -ML_EHDF5. */
static int keyed_size_ex(ml_layout *L, uint64_t index, uint64_t *size, int *written) {
    hsize_t coord[H5S_MAX_RANK], nbytes = 0;
    int held = 1;
    chunk_coord(L, index, coord);
    if (H5Dget_chunk_storage_size((hid_t)L->h5_dset, coord, &nbytes) < 0) {
        if (!failed_unallocated())
            return -ML_EHDF5;
        nbytes = 0;
        held = 0;
    } else if (nbytes == 0 && (h5_lib_ge(1, 11, 0) || L->cindex.kind == ML_CHUNK_INDEX_NONE ||
                                L->cindex.addr == UINT64_MAX)) {
        held = 0; /* (1.10 also returns 0 when no chunk is stored at all: no index yet) */
    }
    *size = nbytes;
    if (written)
        *written = held;
    return 0;
}

static int keyed_size(ml_layout *L, uint64_t index, uint64_t *size) { return keyed_size_ex(L, index, size, NULL); }

/* Does a keyed size agree with an entry's? For unfiltered data HDF5's
 * keyed look-up reports the chunk's full size whatever the index stores
 * (and H5Dread reads that many bytes), so only "written or not" can be
 * compared there. */
static int keyed_agrees(const ml_layout *L, uint64_t keyed, const ml_chunk_info *ci) {
    if (ci->addr == UINT64_MAX)
        return keyed == 0;
    return L->pipeline.n_filters == 0 ? keyed != 0 || ci->size == 0 : keyed == ci->size;
}

/* Ask HDF5 where chunk `index` is. HDF5 1.10's answer by coordinate comes
 * from a scan over every entry of the index, where H5Dread descends by
 * key: in a damaged index the two can differ, so the answer is confirmed
 * by key (same stored size; never written both ways) and marked bad when
 * it is not. Caller holds h5_mutex. Returns 0 or -ML_EHDF5. */
static int lookup_by_coord(ml_layout *L, uint64_t index, ml_chunk_info *out) {
    hsize_t coord[H5S_MAX_RANK];
    chunk_coord(L, index, coord);
    unsigned mask = 0;
    haddr_t addr = HADDR_UNDEF;
    hsize_t size = 0;
    uint64_t keyed = 0;
    if (H5Dget_chunk_info_by_coord((hid_t)L->h5_dset, coord, &mask, &addr, &size) < 0 ||
        keyed_size(L, index, &keyed) < 0)
        return -ML_EHDF5;
    uint64_t off = file_offset(L, addr);
    *out = (ml_chunk_info){.addr = off, .size = off == UINT64_MAX ? 0 : size, .filter_mask = mask};
    if (addr != HADDR_UNDEF && off == UINT64_MAX)
        out->bad = "its address lies past any file";
    else if (!keyed_agrees(L, keyed, out))
        out->bad = "the chunk index answers differently by key than by coordinate";
    return 0;
}

static int lookup_via_hdf5(ml_layout *L, uint64_t index, ml_chunk_info *out);

/* Look chunk `index` up in a v1 B-tree ourselves, descending by key as
 * H5Dread does (chunk_index.c: O(depth) reads, each node checked), and
 * confirm the answer by key with HDF5. A malformed node on the way makes
 * the table CORRUPT; a failure to read the index falls back to HDF5's
 * answer by coordinate. Caller holds h5_mutex. Returns 0, -ML_ECORRUPT
 * or -ML_EHDF5. */
static int lookup_by_key(ml_layout *L, uint64_t index, ml_chunk_info *out) {
    uint64_t off = UINT64_MAX, size = 0, keyed = 0;
    unsigned mask = 0;
    int rc = ml_chunk_index_find(&L->cfile, &L->cindex, L->ndim, L->dims, index, &off, &size, &mask);
    if (rc == -ML_ECORRUPT) {
        L->table_state = ML_TABLE_CORRUPT;
        L->table_why = "a node of the chunk index is malformed";
        return rc;
    }
    if (rc < 0)
        return lookup_via_hdf5(L, index, out);
    if (keyed_size(L, index, &keyed) < 0)
        return -ML_EHDF5;
    *out = (ml_chunk_info){.addr = off, .size = size, .filter_mask = mask};
    if (!keyed_agrees(L, keyed, out))
        out->bad = "the chunk index disagrees with HDF5's keyed look-up";
    return 0;
}

int ml_layout_read_chunk(ml_layout *L, uint64_t index, void *buf, uint64_t size, unsigned *mask,
                         ml_error *err) {
    hsize_t coord[H5S_MAX_RANK];
    uint64_t now = 0;
    uint32_t filters = 0;
    int rc = 0;
    chunk_coord(L, index, coord);
    ml_h5_lock();
    /* H5Dread_chunk writes as many bytes as HDF5's look-up finds: the same
     * look-up must still find `size`, the buffer's. */
    if (keyed_size(L, index, &now) < 0)
        rc = -ML_EHDF5;
    else if (now != size)
        rc = -ML_ECORRUPT;
    else if (H5Dread_chunk((hid_t)L->h5_dset, H5P_DEFAULT, coord, &filters, buf) < 0)
        rc = -ML_EHDF5;
    ml_h5_unlock();
    *mask = filters;
    if (rc < 0)
        return ml_error_set(err, rc, "%s chunk %llu of dataset '%s' in file '%s'",
                            rc == -ML_ECORRUPT ? "HDF5 finds another stored size for" : "HDF5 cannot read",
                            (unsigned long long)index, L->path, L->filename);
    return 0;
}

/* Chunk `index` of an index the core does not read itself: by HDF5's
 * descent by key (H5Dget_chunk_storage_size: O(log n) in a v2 B-tree,
 * O(1) in a fixed array), its bytes read the same way later
 * (ml_layout_read_chunk). Never HDF5's answer by coordinate, which scans
 * every entry of the index: O(n) a chunk, and in a damaged index it finds
 * chunks H5Dread does not, and touches (and crashes on) parts of the
 * index a read never would. Caller holds h5_mutex. Returns 0 or
 * -ML_EHDF5. */
static int lookup_via_hdf5(ml_layout *L, uint64_t index, ml_chunk_info *out) {
    uint64_t keyed = 0;
    /* An unfiltered chunk of a v1 B-tree (or of an index not located):
     * HDF5's keyed size is the full chunk size, but H5Dread_chunk would
     * read the size the key stores, past a buffer of the keyed size. Ask
     * for its address instead (by coordinate, confirmed by key). */
    if (L->pipeline.n_filters == 0 && (L->cindex.kind == ML_CHUNK_INDEX_BTREE1 || L->cindex.kind == ML_CHUNK_INDEX_NONE))
        return lookup_by_coord(L, index, out) < 0 ? -ML_EHDF5 : 0;
    int written = 0;
    if (keyed_size_ex(L, index, &keyed, &written) < 0)
        return -ML_EHDF5;
    /* A chunk held with a stored size of 0 stays "read through HDF5" with
     * size 0: the reader refuses it, as H5Dread does. */
    *out = (ml_chunk_info){.addr = written ? ML_CHUNK_VIA_HDF5 : UINT64_MAX, .size = keyed};
    return 0;
}

/* The one-pass fill's state: the entries the index gave, sorted by index. */
typedef struct fill_ctx {
    ml_layout *L;
    ml_chunk_entry *entries; /* owned until published */
    uint64_t count, cap;     /* entries given; allocated */
    uint64_t expect;         /* chunks HDF5 counts (H5Dget_num_chunks) */
    const char *why;         /* static reason of a refusal */
} fill_ctx;

/* One chunk of the index into the fill's entries. Caller (the fill) holds
 * h5_mutex. Returns 0, -ML_ECORRUPT or -ENOMEM. */
static int fill_one(void *ctx_, uint64_t index, uint64_t offset, uint64_t size, unsigned mask) {
    fill_ctx *c = ctx_;
    if (index >= c->L->n_chunks || c->count >= c->expect) {
        c->why = "the chunk index holds more chunks than HDF5 counts";
        return -ML_ECORRUPT;
    }
    if (c->count == c->cap) {
        /* Bounded by HDF5's count, itself bounded by what the file holds. */
        uint64_t cap = c->cap ? 2 * c->cap : 64;
        cap = cap < c->expect ? cap : c->expect;
        ml_chunk_entry *grown = cap > SIZE_MAX / sizeof *grown ? NULL : realloc(c->entries, cap * sizeof *grown);
        if (!grown) {
            c->why = "out of memory for the chunk table";
            return -ENOMEM;
        }
        c->entries = grown;
        c->cap = cap;
    }
    c->entries[c->count++] = (ml_chunk_entry){
        .index = index, .info = {.addr = offset, .size = offset == UINT64_MAX ? 0 : size, .filter_mask = mask}};
    return 0;
}

#ifdef ML_HAVE_CHUNK_ITER
/* H5Dchunk_iter's callback: a chunk by element offsets, HDF5's address. */
static int iter_one(const hsize_t *offset, unsigned mask, haddr_t addr, hsize_t size, void *ctx_) {
    fill_ctx *c = ctx_;
    ml_layout *L = c->L;
    uint64_t index = 0;
    for (unsigned d = 0; d < L->ndim; d++) {
        if (offset[d] % L->chunk[d] != 0 || offset[d] / L->chunk[d] >= L->grid[d]) {
            c->why = "H5Dchunk_iter gave a chunk off the chunk grid";
            return H5_ITER_ERROR;
        }
        index = index * L->grid[d] + offset[d] / L->chunk[d];
    }
    uint64_t off = file_offset(L, addr);
    if (addr != HADDR_UNDEF && off == UINT64_MAX) {
        c->why = "H5Dchunk_iter gave an address past any file";
        return H5_ITER_ERROR;
    }
    return fill_one(c, index, off, size, mask) < 0 ? H5_ITER_ERROR : H5_ITER_CONT;
}

static int entry_cmp(const void *a, const void *b) {
    uint64_t x = ((const ml_chunk_entry *)a)->index, y = ((const ml_chunk_entry *)b)->index;
    return x < y ? -1 : x > y;
}
#endif

/* Entries sampled against HDF5's keyed look-up (cheap: O(log n) each). */
#define KEYED_SAMPLES 64

/* The filled entries against HDF5: the count, a sample of entries and a
 * chunk the index lacks by key, the first and last by coordinate (with
 * their addresses), and every answer already given by coordinate. Caller
 * holds h5_mutex. Returns 1 if all agree. */
static int fill_agrees(ml_layout *L, fill_ctx *c) {
    if (c->count != c->expect) {
        c->why = "the chunk index holds fewer chunks than HDF5 counts";
        return 0;
    }
    for (uint64_t i = 1; i < c->count; i++)
        if (c->entries[i].index <= c->entries[i - 1].index) {
            c->why = "the chunk index lists a chunk twice";
            return 0;
        }
    uint64_t step = c->count / KEYED_SAMPLES + 1;
    for (uint64_t i = 0; i < c->count; i += step) {
        uint64_t size = 0;
        if (keyed_size(L, c->entries[i].index, &size) < 0 || !keyed_agrees(L, size, &c->entries[i].info)) {
            c->why = "the chunk index disagrees with HDF5's keyed look-up";
            return 0;
        }
    }
    /* The first chunk the index lacks must be unwritten by key too. */
    uint64_t gap = 0;
    while (gap < c->count && c->entries[gap].index == gap)
        gap++;
    uint64_t size = 0;
    if (gap < L->n_chunks && (keyed_size(L, gap, &size) < 0 || size != 0)) {
        c->why = "HDF5 finds a chunk that the chunk index lacks";
        return 0;
    }
    uint64_t ends[2] = {0, c->count ? c->count - 1 : 0};
    for (unsigned e = 0; e < 2 && c->count; e++) {
        ml_chunk_info h;
        const ml_chunk_info *w = &c->entries[ends[e]].info;
        if (lookup_by_coord(L, c->entries[ends[e]].index, &h) < 0 || h.bad || h.addr != w->addr ||
            h.size != w->size || h.filter_mask != w->filter_mask) {
            c->why = "the walked chunk index disagrees with HDF5";
            return 0;
        }
    }
    if (!ml_chunk_table_agrees(&L->table, c->entries, c->count)) {
        c->why = "the chunk index disagrees with HDF5's answer for a chunk";
        return 0;
    }
    return 1;
}

/* Fill the whole table in one pass over the index, check, publish (the
 * protocol in the opening comment). Caller holds h5_mutex. */
static void fill_table(ml_layout *L) {
    if (L->table_state != ML_TABLE_LAZY)
        return;
    int walk = L->cindex.kind == ML_CHUNK_INDEX_BTREE1;
    /* Every leaf entry takes more than 16 bytes of the file: a bound on the
     * entries before HDF5 has counted them. */
    uint64_t bound = L->eof / 16 + 1;
    fill_ctx c = {.L = L, .expect = bound < L->n_chunks ? bound : L->n_chunks};
    int rc = 0;
    if (walk) {
        /* Our walk first: a B-tree it finds malformed is never handed to
         * HDF5's iteration, which crashes on some (a child address of all
         * ones: a memmove in H5F__accum_read). */
        rc = ml_chunk_index_walk(&L->cfile, &L->cindex, L->ndim, L->dims, fill_one, &c);
        if (rc < 0 && !c.why)
            c.why = rc == -ENOMEM ? "out of memory walking the chunk index"
                    : rc == -ML_ECORRUPT ? "the chunk index is malformed"
                                         : "the chunk index could not be read";
    }
    hsize_t expect = 0;
    if (rc == 0) {
        hid_t space = H5Dget_space((hid_t)L->h5_dset);
        int ok = space >= 0 && H5Dget_num_chunks((hid_t)L->h5_dset, space, &expect) >= 0;
        if (space >= 0)
            H5Sclose(space);
        if (!ok) {
            /* HDF5 cannot iterate the index: a v1 B-tree it cannot iterate
             * is damaged. */
            free(c.entries);
            L->table_state = walk ? ML_TABLE_CORRUPT : ML_TABLE_FALLBACK;
            L->table_why = "HDF5 cannot count the chunks";
            return;
        }
        if (!walk)
            c.expect = expect;
    }
#ifdef ML_HAVE_CHUNK_ITER
    if (rc == 0 && !walk) {
        if (H5Dchunk_iter((hid_t)L->h5_dset, H5P_DEFAULT, iter_one, &c) < 0) {
            rc = -ML_EHDF5;
            if (!c.why)
                c.why = "H5Dchunk_iter failed";
        } else if (c.count > 1) {
            qsort(c.entries, c.count, sizeof *c.entries, entry_cmp);
        }
    }
#endif
    c.expect = expect;
    if (rc < 0 || !fill_agrees(L, &c)) {
        free(c.entries);
        /* A v1 B-tree that is malformed or disagrees with HDF5 cannot be
         * read as H5Dread reads it; any other failure (memory, an I/O
         * error, an index kind only HDF5 iterates) leaves look-ups by
         * coordinate, each confirmed by key. */
        int corrupt = walk && rc != -ENOMEM && (rc == 0 || rc == -ML_ECORRUPT);
        L->table_state = corrupt ? ML_TABLE_CORRUPT : ML_TABLE_FALLBACK;
        L->table_why = c.why;
        return;
    }
    ml_chunk_table_publish(&L->table, c.entries, c.count);
    L->table_state = walk ? ML_TABLE_WALKED : ML_TABLE_ITERATED;
    L->table_why = NULL;
}

ml_table_state ml_layout_fill_table(ml_layout *L) {
    if (L->storage != ML_STORE_CHUNKED)
        return ML_TABLE_FALLBACK;
    ml_h5_lock();
    fill_table(L);
    ml_table_state st = L->table_state;
    ml_h5_unlock();
    return st;
}

int ml_layout_chunk(ml_layout *L, uint64_t index, ml_chunk_info *info,
                    ml_error *err) {
    if (index >= L->n_chunks)
        return ml_error_set(err, -ML_EINVAL, "chunk %llu is off the grid of dataset '%s' in file '%s' (%llu chunks)",
                            (unsigned long long)index, L->path, L->filename, (unsigned long long)L->n_chunks);
    if (ml_chunk_table_get(&L->table, index, info))
        return 0;
    ml_h5_lock();
    if (L->table_state == ML_TABLE_LAZY && L->lookups >= LOOKUPS_BEFORE_FILL)
        fill_table(L);
    if (L->table_state == ML_TABLE_CORRUPT) {
        ml_h5_unlock();
        return ml_error_set(err, -ML_ECORRUPT, "corrupt chunk index (%s): chunk %llu of dataset '%s' in file "
                            "'%s' cannot be located as HDF5 reads it", L->table_why, (unsigned long long)index,
                            L->path, L->filename);
    }
    /* Another thread (or the fill just above) may have answered while we
     * waited for the lock: the first answer stands. */
    if (ml_chunk_table_get(&L->table, index, info)) {
        ml_h5_unlock();
        return 0;
    }
    L->lookups++;
    ml_chunk_info ci;
    int rc = L->table_state == ML_TABLE_LAZY && L->cindex.kind == ML_CHUNK_INDEX_BTREE1
                 ? lookup_by_key(L, index, &ci)
                 : lookup_via_hdf5(L, index, &ci);
    if (rc == -ML_ECORRUPT) {
        ml_h5_unlock();
        return ml_error_set(err, rc, "corrupt chunk index (%s): chunk %llu of dataset '%s' in file '%s' cannot "
                            "be located as HDF5 reads it", L->table_why, (unsigned long long)index, L->path,
                            L->filename);
    }
    if (rc == 0)
        rc = ml_chunk_table_remember(&L->table, index, &ci);
    ml_h5_unlock();
    if (rc < 0)
        return ml_error_set(err, rc, "cannot look up chunk %llu of dataset '%s' in file '%s'%s",
                            (unsigned long long)index, L->path, L->filename, rc == -ENOMEM ? ": out of memory" : "");
    *info = ci;
    return 0;
}

/* Before H5Dread decodes the chunks of rows [row0, row0 + n) of a v1
 * B-tree (found by our descent by key), refuse what HDF5 1.10.8 would
 * read past its buffers on: a stored size of 0, bytes past the file's
 * end, or every filter skipped (the mask) with a stored size other than
 * the chunk's (it copies a whole chunk out of the stored bytes). Other
 * index kinds stay trusted to HDF5. Returns 0 or -ML_ECORRUPT with the
 * chunk named in err. */
static int check_slow_chunks(ml_layout *L, uint64_t row0, uint64_t n, ml_error *err) {
    if (L->cindex.kind != ML_CHUNK_INDEX_BTREE1 || n == 0 || L->n_chunks == 0)
        return 0;
    uint64_t inner = L->n_chunks / L->grid[0];
    unsigned all = L->pipeline.n_filters >= 32 ? ~0u : (1u << L->pipeline.n_filters) - 1;
    for (uint64_t cr = row0 / L->chunk[0]; cr <= (row0 + n - 1) / L->chunk[0]; cr++)
        for (uint64_t j = 0; j < inner; j++) {
            uint64_t index = cr * inner + j, off = 0, size = 0;
            unsigned mask = 0;
            const char *why = NULL;
            int rc = ml_chunk_index_find(&L->cfile, &L->cindex, L->ndim, L->dims, index, &off, &size, &mask);
            if (rc == -ML_ECORRUPT)
                why = "a node of the chunk index is malformed";
            else if (rc < 0 || off == UINT64_MAX)
                continue; /* unreadable index (HDF5 will say) or never written */
            else if (size == 0)
                why = "a defined address with a stored size of 0";
            else if (!ml_layout_in_file(L, off, size))
                why = "its stored bytes lie past the end of the file";
            else if (L->pipeline.n_filters && (mask & all) == all && size != L->chunk_bytes)
                why = "every filter skipped, but a stored size other than the chunk's";
            if (why)
                return ml_error_set(err, -ML_ECORRUPT, "corrupt chunk index (%s) in chunk %llu of dataset '%s' "
                                    "in file '%s'", why, (unsigned long long)index, L->path, L->filename);
        }
    return 0;
}

int ml_layout_read_slow(ml_layout *L, uint64_t row0, uint64_t n, void *dest,
                        ml_error *err) {
    if (L->storage == ML_STORE_SLOW && L->n_chunks && L->table_state == ML_TABLE_CORRUPT)
        return ml_error_set(err, -ML_ECORRUPT, "corrupt chunk index (%s): rows %llu..%llu of dataset '%s' in "
                            "file '%s' cannot be read as HDF5 reads them", L->table_why, (unsigned long long)row0,
                            (unsigned long long)(row0 + n), L->path, L->filename);
    int bad = L->storage == ML_STORE_SLOW && L->n_chunks ? check_slow_chunks(L, row0, n, err) : 0;
    if (bad < 0)
        return bad;
    hsize_t start[H5S_MAX_RANK] = {0}, count[H5S_MAX_RANK];
    for (unsigned d = 0; d < L->ndim; d++)
        count[d] = L->dims[d];
    start[0] = row0;
    count[0] = n;
    int rc = 0;
    ml_h5_lock();
    hid_t fspace = H5Dget_space((hid_t)L->h5_dset);
    hid_t mspace = H5Screate_simple((int)L->ndim, count, NULL);
    if (fspace < 0 || mspace < 0 ||
        H5Sselect_hyperslab(fspace, H5S_SELECT_SET, start, NULL, count, NULL) < 0 ||
        H5Dread((hid_t)L->h5_dset, (hid_t)L->h5_type, mspace, fspace, H5P_DEFAULT, dest) < 0)
        rc = -ML_EHDF5;
    if (mspace >= 0)
        H5Sclose(mspace);
    if (fspace >= 0)
        H5Sclose(fspace);
    ml_h5_unlock();
    if (rc < 0)
        ml_error_set(err, rc, "HDF5 failed to read rows %llu..%llu of dataset '%s' in file '%s'",
                     (unsigned long long)row0, (unsigned long long)(row0 + n), L->path, L->filename);
    return rc;
}
