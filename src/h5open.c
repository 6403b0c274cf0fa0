/* h5open.c - an HDF5 dataset opened and described as an ml_layout, and
 * the reads only HDF5 can do (the slow path).
 *
 * Invariants:
 *  - Every HDF5 call in the process (ours) runs with h5_mutex held. HDF5 is
 *    not thread-safe, and a serial build crashes if two threads enter it.
 *    The mutex lives here; h5chunks.c, h5type.c and vlen.c take it through
 *    h5internal.h (ml_h5_lock), which also shares the dataset opener and
 *    the type mapping, so every HDF5 user opens files and names types one
 *    way.
 *  - An ml_layout is immutable after ml_layout_open() except for its HDF5
 *    state's chunk table and the fields that say how it fills
 *    (h5chunks.c). Metadata and data come from one file: the layout's
 *    source is our own descriptor of the file HDF5 opened (checked by
 *    identity after H5Fopen), or of the file an external link leads to.
 *  - Nothing the file says sizes an allocation or a read unchecked: shape
 *    products are overflow-checked and the dataset's bytes must fit in an
 *    int64_t; contiguous and compact data must be exactly the bytes the
 *    shape needs and lie inside the file (eof: the smaller of its size
 *    and the superblock's end-of-allocation); filter parameters HDF5's
 *    filters refuse are refused at open (the codec table's checks); a
 *    layout message that disagrees with HDF5 makes the chunk table
 *    CORRUPT.
 *  - HDF5 before 1.14.4 reports chunk addresses relative to the file's
 *    base address (the user block's size), H5Dget_offset absolute ones:
 *    api_base makes every chunk address a file offset.
 *  - A scalar (0-d) dataset opens only when asked (ML_LAYOUT_SCALAR, for
 *    the Reader): a layout of ndim 0 with one row of one element, whose
 *    storage is checked as any other's (never chunked); the Streamer's
 *    open refuses it, since it has no rows to stream.
 *  - Types and storage the core cannot read byte-exactly are refused
 *    (-ML_ETYPE) or routed to ML_STORE_SLOW, which calls H5Dread with the
 *    file's own type as the memory type (no conversion): never wrong bytes.
 *    Before H5Dread decodes v1 B-tree chunks, the chunks it would misread
 *    are refused (check_slow_chunks).
 *
 * Workload: one open per queue or dataset (milliseconds), under the lock;
 * slow reads are H5Dread under the lock, one request at a time.
 */
#define _GNU_SOURCE
#include "h5.h"

#include "codec.h"
#include "h5internal.h"
#include "h5meta.h"
#include "h5native.h"
#include "io.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <link.h>
#include <hdf5.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

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

int ml_h5_lib_ge(unsigned maj, unsigned min, unsigned rel) {
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
    /* H5Fget_eoa is an absolute file offset, unlike every other HDF5
     * address: the superblock stores it so ("account for the stored EOA
     * being absolute", HDF5's own reading of it), and HDF5 refuses a read
     * whose end, base included, passes it (seed userblock, fuzz seed 7
     * case 4119: with 2 bytes off the EOA, adding the base again let the
     * last chunk through). */
    uint64_t end = (uint64_t)eoa;
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
    ml_h5_dataset *H = ml_h5(L);
    ml_h5_file_facts ff;
    int rc = ml_h5_file_facts_get((hid_t)H->h5_dset, L->src, &ff);
    if (rc == -ML_EHDF5)
        return ml_error_set(err, rc, "cannot read the file creation properties of %s", where);
    if (rc < 0)
        return ml_error_set(err, rc, "cannot stat the file of %s: %s", where, strerror(-rc));
    L->eof = ff.eof;
    H->api_base = ml_h5_lib_ge(1, 14, 4) ? 0 : ff.base;
    H->cfile = (ml_chunk_file){.src = L->src, .base = ff.base, .size = ff.eof, .sizeof_addr = ff.sizeof_addr,
                               .sizeof_size = ff.sizeof_size, .btree_k = ff.btree_k};
    return 0;
}

/* Does the fixed array hold one element per chunk of the grid of the
 * dataspace's maximum dimensions, as HDF5 indexes it? Caller holds
 * h5_mutex. */
static int farray_fits(ml_layout *L) {
    ml_h5_dataset *H = ml_h5(L);
    hsize_t dims[H5S_MAX_RANK], maxdims[H5S_MAX_RANK];
    uint64_t count = 0, want = 1;
    hid_t space = H5Dget_space((hid_t)H->h5_dset);
    int nd = space < 0 ? -1 : H5Sget_simple_extent_dims(space, dims, maxdims);
    if (space >= 0)
        H5Sclose(space);
    if (nd != (int)L->ndim || ml_chunk_index_farray_count(&H->cfile, &H->cindex, &count) < 0)
        return 0;
    for (unsigned d = 0; d < L->ndim; d++) {
        if (maxdims[d] == H5S_UNLIMITED || maxdims[d] < dims[d])
            return 0;
        uint64_t g = maxdims[d] / L->chunk[d] + (maxdims[d] % L->chunk[d] != 0);
        if (!ml_mul_ok(want, g, &want))
            return 0;
    }
    return count == want;
}

/* Parse the dataset's object header once, at open (chunk_index.c: the
 * layout message, the fill value message's size), into H->cindex and
 * H->header_rc, for the fill value's check and the chunk index. Caller
 * holds h5_mutex. */
static void read_header(ml_layout *L) {
    ml_h5_dataset *H = ml_h5(L);
    uint64_t ohdr;
    H->header_rc = object_header_addr((hid_t)H->h5_dset, &ohdr) < 0 ? -ML_EHDF5
                   : ml_chunk_index_locate(&H->cfile, ohdr, &H->cindex);
    if (H->header_rc < 0)
        H->cindex.kind = ML_CHUNK_INDEX_NONE;
}

/* What the chunk table's one-pass fill needs beside the file's bounds:
 * the layout message's index. Anything that cannot be had leaves the
 * table by coordinate (FALLBACK, with a reason). Caller holds h5_mutex. */
static void setup_chunk_index(ml_layout *L) {
    ml_h5_dataset *H = ml_h5(L);
    const char *corrupt = NULL; /* why no chunk of it can be read as HDF5 reads it */
    if (H->header_rc == -ML_EHDF5) {
        H->table_why = "the object header's address is unknown";
    } else if (H->header_rc < 0) {
        H->table_why = "the object header could not be read";
        /* HDF5 opened what our parser calls malformed (a chunk dimension
         * of 0, a message past its header chunk): damaged, and HDF5 1.10
         * reads such layouts wrongly. */
        if (H->header_rc == -ML_ECORRUPT)
            corrupt = "its object header or layout message is malformed";
    }
    if (H->cindex.kind != ML_CHUNK_INDEX_NONE) {
        /* The message must describe the dataset HDF5 describes. */
        int same = H->cindex.ndims == L->ndim + 1 && H->cindex.dims[L->ndim] == L->type->size;
        for (unsigned d = 0; d < L->ndim && same; d++)
            same = H->cindex.dims[d] == L->chunk[d];
        if (!same) {
            H->cindex.kind = ML_CHUNK_INDEX_NONE;
            corrupt = H->table_why = "the layout message disagrees with HDF5";
        }
    }
    if (!ml_h5_walks_index(L) && !H->table_why)
        H->table_why = H->cindex.kind == ML_CHUNK_INDEX_NONE ? "a layout message of version 1 or 2"
                                                             : "partial edge chunks stored unfiltered";
#ifndef ML_HAVE_CHUNK_ITER
    /* Without H5Dchunk_iter only the indices we walk can be read in one pass. */
    if (!ml_h5_walks_index(L))
        H->table_state = ML_TABLE_FALLBACK;
#endif
    if (H->cindex.kind == ML_CHUNK_INDEX_FARRAY && H->cindex.addr != UINT64_MAX && !farray_fits(L)) {
        H->table_state = ML_TABLE_CORRUPT;
        H->table_why = "a fixed-array index of another size than the dataspace's maximum chunk grid";
    }
    /* Index kinds that only fit some datasets: HDF5 1.10 returns the one
     * chunk of a single-chunk index for every chunk asked for, and an
     * implicit index holds no stored sizes to decode filtered chunks by. */
    if (corrupt) {
        H->table_state = ML_TABLE_CORRUPT;
        H->table_why = corrupt;
    }
    if ((H->cindex.kind == ML_CHUNK_INDEX_SINGLE && L->n_chunks > 1) ||
        (H->cindex.kind == ML_CHUNK_INDEX_IMPLICIT && L->pipeline.n_filters > 0)) {
        H->table_state = ML_TABLE_CORRUPT;
        H->table_why = H->cindex.kind == ML_CHUNK_INDEX_SINGLE ? "a single-chunk index for a dataset of several chunks"
                                                                : "an implicit index for filtered chunks";
    }
}

/* hdf5plugin's plugin folder, found without Python: hdf5plugin sits in
 * the site-packages of the interpreter's own extension modules (numpy's
 * is always loaded beside ours), as <site-packages>/hdf5plugin/plugins.
 * Its plugins resolve HDF5's symbols at run time and, loaded by a plain
 * H5PL search as here, call none (their HDF5 calls are no-ops until
 * hdf5plugin's init_filter runs, which only h5py's registration does):
 * their decode paths use only cd_values, so any HDF5 1.10+ loads them.
 * HDF5_PLUGIN_PATH, if set, is searched before (HDF5 reads it itself). */
static int plugin_dir_cb(struct dl_phdr_info *info, size_t size, void *data) {
    (void)size;
    char *found = data;
    const char *n = info->dlpi_name;
    const char *markers[] = {"/site-packages/", "/dist-packages/"};
    for (int m = 0; n && m < 2; m++) {
        const char *at = strstr(n, markers[m]);
        size_t prefix = at ? (size_t)(at - n) + strlen(markers[m]) : 0;
        struct stat st;
        if (at && prefix + sizeof "hdf5plugin/plugins" <= PATH_MAX) {
            memcpy(found, n, prefix);
            strcpy(found + prefix, "hdf5plugin/plugins");
            if (stat(found, &st) == 0 && S_ISDIR(st.st_mode))
                return 1;
        }
    }
    return 0;
}

/* Put hdf5plugin's folder first in HDF5's plugin search path, the first
 * time a filter is missing (later calls return what the first did): the
 * folders HDF5 had (HDF5_PLUGIN_PATH's, or its default) have been searched
 * by then and did not have it. First, because HDF5 1.10.8 ends a search at
 * the first folder it cannot search (H5PL__find_plugin_in_path fails
 * rather than moving on): its default folder (.../hdf5/serial/plugins)
 * usually does not exist, and netCDF4's, which importing netCDF4 puts in
 * HDF5_PLUGIN_PATH, stops it too. Returns 1 if it was added, so a retry
 * may find the filter. HDF5 lock held. */
static int add_hdf5plugin_path(void) {
    static int tried, added; /* guarded by h5_mutex */
    if (tried)
        return added;
    tried = 1;
    char dir[PATH_MAX];
    added = dl_iterate_phdr(plugin_dir_cb, dir) == 1 && H5PLprepend(dir) >= 0;
    return added;
}

int ml_h5_filter_loadable(int id) {
    return H5Zfilter_avail((H5Z_filter_t)id) > 0 || (add_hdf5plugin_path() && H5Zfilter_avail((H5Z_filter_t)id) > 0);
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
        if (!ml_mul_ok(n_chunks, L->grid[d], &n_chunks))
            return ml_error_set(err, -ML_ECORRUPT, "%s has more chunks than 2^64 (its chunk grid overflows)", where);
        if (!ml_mul_ok(chunk_bytes, chunk[d], &chunk_bytes) || chunk_bytes > CHUNK_BYTES_MAX)
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
            if (!ml_h5_filter_loadable(f->id)) {
                const char *provider, *known = ml_filter_known(f->id, &provider);
                if (known)
                    return ml_error_set(err, -ML_EFILTER, "%s uses filter %d (%s), which is not available: %s",
                                        where, f->id, known, provider);
                return ml_error_set(err, -ML_EFILTER,
                                    "%s uses filter %d ('%s'), which neither multiload nor the "
                                    "HDF5 library can decode (is its HDF5 plugin installed?)",
                                    where, f->id, name);
            }
            L->storage = ML_STORE_SLOW;
            L->slow_reason = "a filter multiload does not decode natively";
            /* HDF5 1.10.8 reads past its buffers with damaged n-bit or
             * scale-offset parameters: check them as set_local writes them. */
            int rc = ml_h5z_check_filter(dcpl, (unsigned)i, f->id, (hid_t)ml_h5(L)->h5_type,
                                         chunk_bytes / L->type->size, L->chunk_bytes, &ml_h5(L)->zcheck[i], err,
                                         where);
            if (rc < 0)
                return rc;
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
    ml_h5_dataset *H = ml_h5(L);
    H5D_fill_value_t status;
    if (H5Pfill_value_defined(dcpl, &status) < 0)
        return ml_error_set(err, -ML_EHDF5, "cannot read fill value of %s", where);
    /* No fill value at all: HDF5 leaves rows never written undefined (or,
     * with a damaged fill message, fails the read): refused, not zeros. */
    L->fill_undefined = status == H5D_FILL_VALUE_UNDEFINED;
    /* When HDF5 fills never-written rows at all: "never" leaves them as the
     * buffer held them (undefined: refused, as above); a fill time it does
     * not know (a damaged fill message) makes 1.10.8 write zeros into a
     * missing chunk (H5D__chunk_lock: fuzz seed 8 case 6940) but the fill
     * value into unallocated contiguous storage (H5D__read: case 2846). */
    H5D_fill_time_t when = H5D_FILL_TIME_IFSET;
    if (H5Pget_fill_time(dcpl, &when) < 0)
        return ml_error_set(err, -ML_EHDF5, "cannot read the fill time of %s", where);
    if (when == H5D_FILL_TIME_NEVER)
        L->fill_undefined = 1;
    int known = when == H5D_FILL_TIME_ALLOC || when == H5D_FILL_TIME_IFSET;
    if (status != H5D_FILL_VALUE_USER_DEFINED || (!known && H5Pget_layout(dcpl) == H5D_CHUNKED))
        return 0; /* zeros */
    /* HDF5 1.10.8 copies a whole element out of the stored fill value
     * whatever size its message declares: check the size first. */
    if (H->header_rc == 0 && H->cindex.fill_size >= 0 && (uint64_t)H->cindex.fill_size != L->type->size)
        return ml_error_set(err, -ML_ECORRUPT, "the fill value of %s is %lld bytes for %zu-byte elements "
                            "(damaged fill value message)", where, (long long)H->cindex.fill_size, L->type->size);
    L->fill = calloc(1, L->type->size);
    if (!L->fill)
        return ml_error_set(err, -ENOMEM, "out of memory");
    if (H5Pget_fill_value(dcpl, (hid_t)H->h5_type, L->fill) < 0)
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
    ml_h5_dataset *H = ml_h5(L);
    hid_t of = H5Iget_file_id((hid_t)H->h5_dset);
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
    ml_h5_dataset *H = ml_h5(L);
    hsize_t stored = H5Dget_storage_size(dset);
    if ((uint64_t)stored != total || total > COMPACT_BYTES_MAX)
        return ml_error_set(err, -ML_ECORRUPT, "compact %s stores %llu bytes, but its shape needs %llu (damaged "
                            "layout or dataspace)", where, (unsigned long long)stored, (unsigned long long)total);
    L->mem = malloc(total ? (size_t)total : 1);
    if (!L->mem)
        return ml_error_set(err, -ENOMEM, "out of memory");
    if (total && H5Dread(dset, (hid_t)H->h5_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, L->mem) < 0)
        return ml_error_set(err, -ML_EHDF5, "cannot read compact %s", where);
    return 0;
}

/* Fill everything after the HDF5 handles are open. A scalar dataspace is
 * refused unless `scalar` (ml_layout_open_flags' ML_LAYOUT_SCALAR): then it
 * is a layout of ndim 0 and one row of one element, its storage checked as
 * any other's. Caller holds h5_mutex. */
static int describe(ml_layout *L, int scalar, ml_error *err) {
    ml_h5_dataset *H = ml_h5(L);
    char where[600];
    snprintf(where, sizeof where, "dataset '%s' of file '%s'", L->path, L->filename);
    hid_t dset = (hid_t)H->h5_dset;
    hid_t space = -1, dcpl = -1;
    int rc = 0;

    H->h5_type = H5Dget_type(dset);
    if (H->h5_type < 0) {
        rc = ml_error_set(err, -ML_EHDF5, "cannot read the datatype of %s", where);
        goto out;
    }
    rc = ml_type_from_h5((hid_t)H->h5_type, &L->type, err, where);
    if (rc < 0)
        goto out;

    space = H5Dget_space(dset);
    int nd = space < 0 ? -1 : H5Sget_simple_extent_ndims(space);
    if (nd < 0) {
        rc = ml_error_set(err, -ML_EHDF5, "cannot read the shape of %s", where);
        goto out;
    }
    H5S_class_t space_class = H5Sget_simple_extent_type(space);
    int is_scalar = scalar && nd == 0 && space_class == H5S_SCALAR;
    if (scalar && space_class == H5S_NULL) {
        rc = ml_error_set(err, -ML_ESHAPE, "%s has a null dataspace: it holds no value to read (h5py reads it "
                          "as h5py.Empty)", where);
        goto out;
    }
    if (!is_scalar && (nd == 0 || space_class != H5S_SIMPLE)) {
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
            fits = fits && ml_mul_ok(row_elems, dims[d], &row_elems);
    }
    L->n_rows = is_scalar ? 1 : dims[0]; /* a scalar: one row of one element */
    if (!fits || !ml_mul_ok(row_elems, L->type->size, &row_bytes) ||
        !ml_mul_ok(row_bytes, L->n_rows, &total) || total > (uint64_t)INT64_MAX || row_bytes > SIZE_MAX) {
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
    } else if (lay == H5D_CHUNKED && is_scalar) {
        rc = ml_error_set(err, -ML_ECORRUPT, "%s is scalar but claims chunked storage, which HDF5 never writes "
                          "for a scalar (damaged layout or dataspace)", where);
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
    if (rc == 0)
        rc = ml_layout_convert_setup(L, err); /* last: fill and compact data are read */
out:
    if (dcpl >= 0)
        H5Pclose(dcpl);
    if (space >= 0)
        H5Sclose(space);
    return rc;
}

/* ---------------------------------------------------------------- why an object does not open
 *
 * H5Oopen says only that it failed. explain_unopened() walks the path the
 * way HDF5 resolves it -- component by component, following soft links
 * (relative to the group that holds them) and external links (to the file
 * HDF5 would open) -- and says what is at its end: nothing (a missing path,
 * or a dangling link: the link named, and where it leads), or an object
 * this HDF5 cannot open, in the same words as for the target's own path,
 * with the links that led there. It only reads (link info and values,
 * H5Fopen of an external link's file); every step runs under h5_mutex. */

#define LINKS_MAX 16 /* HDF5's default limit on soft and external links in one traversal */

typedef struct link_walk {
    const char *file0;          /* the user's file (borrowed) */
    char via[ML_ERROR_MSG_MAX]; /* the links followed so far, in words; "" if none */
    unsigned links;             /* how many (<= LINKS_MAX) */
} link_walk;

/* Why nothing can be beneath `cur` (an object of `file`): it is not a
 * group, or it cannot be opened. "" if it is a group. */
static const char *not_a_group(hid_t file, const char *cur) {
    if (!cur[0])
        return "";
    hid_t o = H5Oopen(file, cur, H5P_DEFAULT);
    if (o < 0)
        return ", which HDF5 cannot open";
    H5I_type_t t = H5Iget_type(o);
    H5Oclose(o);
    return t == H5I_GROUP ? "" : t == H5I_DATASET ? ", a dataset, not a group" : ", not a group";
}

/* Append one link followed, in words (printf-style), to w->via and count
 * it; the words are cut at the buffer's end. */
static void walk_note(link_walk *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void walk_note(link_walk *w, const char *fmt, ...) {
    size_t n = strlen(w->via);
    if (n && n + 7 < sizeof w->via) {
        memcpy(w->via + n, ", then ", 8);
        n += 7;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->via + n, sizeof w->via - n, fmt, ap);
    va_end(ap);
    w->links++;
}

/* Where HDF5 finds the file of an external link: its name as given if
 * absolute, else in each directory of HDF5_EXT_PREFIX, beside the linking
 * file, and in the working directory (H5L__extern_traverse's order, less
 * the link-access prefix property, which multiload never sets). Writes
 * the first that exists into out; 0 if none does. */
static int find_external_file(const char *name, const char *linking_file, char *out, size_t size) {
    if (name[0] == '/') {
        snprintf(out, size, "%s", name);
        return access(out, F_OK) == 0;
    }
    const char *prefix = getenv("HDF5_EXT_PREFIX");
    while (prefix && *prefix) {
        size_t len = strcspn(prefix, ":");
        if (len && (size_t)snprintf(out, size, "%.*s/%s", (int)len, prefix, name) < size && access(out, F_OK) == 0)
            return 1;
        prefix += len + (prefix[len] == ':');
    }
    const char *slash = strrchr(linking_file, '/');
    if (slash && (size_t)snprintf(out, size, "%.*s/%s", (int)(slash - linking_file), linking_file, name) < size &&
        access(out, F_OK) == 0)
        return 1;
    snprintf(out, size, "%s", name);
    return access(out, F_OK) == 0;
}

static int explain_at(hid_t file, const char *filename, const char *asked, const char *path, size_t in_link,
                      link_walk *w, ml_error *err);

/* What is at `path` (an HDF5 path in `file`, named `filename`), which H5Oopen
 * could not open when asked for `asked` in the user's file; `w` holds the
 * links followed to get here, and the first `in_link` characters of `path`
 * are the last one's target (nothing there: the link dangles). Caller
 * holds h5_mutex. Returns the code set in err: -ML_ENOTFOUND (nothing
 * there, or a link HDF5 cannot follow) or -ML_EHDF5 (an object this HDF5
 * cannot open, or a link value it cannot read). */
static int explain_at(hid_t file, const char *filename, const char *asked, const char *path, size_t in_link,
                      link_walk *w, ml_error *err) {
    char cur[1024] = "", next[1024]; /* 3 buffers a level, LINKS_MAX levels at most: bounded stack */
    const char *p = path;
    while (*p) {
        while (*p == '/')
            p++;
        size_t len = strcspn(p, "/");
        if (len == 0)
            break;
        const char *rest = p + len; /* "" or "/..." */
        if (len == 1 && p[0] == '.') {
            p = rest;
            continue;
        }
        if ((size_t)snprintf(next, sizeof next, "%s/%.*s", cur, (int)len, p) >= sizeof next)
            return ml_error_set(err, -ML_ENOTFOUND, "no dataset '%s' in file '%s' (its path is too long to follow)",
                                asked, filename);
        H5L_info_t li;
        if (H5Lexists(file, next, H5P_DEFAULT) <= 0 || H5Lget_info(file, next, &li, H5P_DEFAULT) < 0) {
            const char *why = not_a_group(file, cur);
            char beneath[1100] = ""; /* ": '/x', a dataset, not a group" */
            if (why[0])
                snprintf(beneath, sizeof beneath, ": '%s'%s", cur, why);
            if (w->links && (size_t)(p - path) < in_link)
                return ml_error_set(err, -ML_ENOTFOUND, "no dataset '%s' in file '%s': it is a dangling link (%s; "
                                    "nothing is at '%s' in file '%s'%s)", asked, w->file0, w->via, next, filename,
                                    beneath);
            if (w->links)
                return ml_error_set(err, -ML_ENOTFOUND, "no dataset '%s' in file '%s' (nothing is at '%s' in file "
                                    "'%s'%s; reached through links: %s)", asked, w->file0, next, filename, beneath,
                                    w->via);
            return ml_error_set(err, -ML_ENOTFOUND, "no dataset '%s' in file '%s' (nothing is at '%s'%s)", asked,
                                filename, next, beneath);
        }
        if (li.type == H5L_TYPE_HARD) {
            snprintf(cur, sizeof cur, "%s", next);
            p = rest;
            continue;
        }
        if (w->links == LINKS_MAX)
            return ml_error_set(err, -ML_ENOTFOUND, "no dataset '%s' in file '%s': more than %d soft or external "
                                "links lead to it, HDF5's limit (a cycle of links?): %s", asked, w->file0, LINKS_MAX,
                                w->via);
        size_t vsize = li.u.val_size;
        char *val = vsize && vsize < 65536 ? calloc(1, vsize + 1) : NULL;
        if (!val || H5Lget_val(file, next, val, vsize, H5P_DEFAULT) < 0) {
            free(val);
            return ml_error_set(err, -ML_EHDF5, "dataset '%s' cannot be opened: the value of link '%s' in file "
                                "'%s' cannot be read", asked, next, filename);
        }
        char target[1024];
        int rc;
        if (li.type == H5L_TYPE_SOFT) {
            /* A relative soft link is resolved in the group that holds it. */
            int n = val[0] == '/' ? snprintf(target, sizeof target, "%s%s", val, rest)
                                  : snprintf(target, sizeof target, "%s/%s%s", cur, val, rest);
            walk_note(w, "'%s' is a soft link to '%s'", next, val);
            rc = n < 0 || (size_t)n >= sizeof target
                     ? ml_error_set(err, -ML_ENOTFOUND, "no dataset '%s' in file '%s' (the path %s leads to is too "
                                    "long)", asked, w->file0, w->via)
                     : explain_at(file, filename, asked, target, (size_t)n - strlen(rest), w, err);
        } else if (li.type == H5L_TYPE_EXTERNAL) {
            const char *efile = NULL, *eobj = NULL;
            unsigned flags = 0;
            char found[1024];
            if (H5Lunpack_elink_val(val, vsize, &flags, &efile, &eobj) < 0 || !efile || !eobj) {
                rc = ml_error_set(err, -ML_EHDF5, "dataset '%s' cannot be opened: external link '%s' in file '%s' "
                                  "is malformed", asked, next, filename);
            } else if (!find_external_file(efile, filename, found, sizeof found)) {
                walk_note(w, "'%s' in file '%s' is an external link to '%s' in file '%s'", next, filename, eobj,
                          efile);
                rc = ml_error_set(err, -ML_ENOTFOUND, "no dataset '%s' in file '%s': it is a dangling link (%s, and "
                                  "that file does not exist: HDF5 looks for it in HDF5_EXT_PREFIX, beside '%s' and in "
                                  "the working directory)", asked, w->file0, w->via, filename);
            } else {
                walk_note(w, "'%s' in file '%s' is an external link to '%s' in file '%s'", next, filename, eobj,
                          found);
                int n = snprintf(target, sizeof target, "%s%s", eobj, rest);
                hid_t other = (size_t)n < sizeof target ? H5Fopen(found, H5F_ACC_RDONLY, H5P_DEFAULT) : -1;
                if (other < 0)
                    rc = ml_error_set(err, -ML_EHDF5, "dataset '%s' cannot be opened: %s, which HDF5 cannot open "
                                      "(not HDF5, damaged or locked)", asked, w->via);
                else
                    rc = explain_at(other, found, asked, target, (size_t)n - strlen(rest), w, err);
                if (other >= 0)
                    H5Fclose(other);
            }
        } else {
            rc = ml_error_set(err, -ML_ENOTFOUND, "no dataset '%s' in file '%s': '%s' in file '%s' is a "
                              "user-defined link, which HDF5 cannot follow", asked, w->file0, next, filename);
        }
        free(val);
        return rc;
    }
    /* The path ends on an object reached by a hard link: it exists. */
    unsigned maj = 0, min = 0, rel = 0;
    H5get_libversion(&maj, &min, &rel);
    const char *name = cur[0] ? cur : "/";
    if (!w->links) /* as asked: the user's own path */
        return ml_error_set(err, -ML_EHDF5, "dataset '%s' in file '%s' exists, but HDF5 %u.%u.%u cannot open it (its "
                            "object header or layout is in a format this HDF5 does not know: written by a newer "
                            "HDF5, or damaged)", asked, filename, maj, min, rel);
    return ml_error_set(err, -ML_EHDF5, "dataset '%s' in file '%s' exists, but HDF5 %u.%u.%u cannot open it (its "
                        "object header or layout is in a format this HDF5 does not know: written by a newer HDF5, "
                        "or damaged); it was asked for as '%s', through links: %s", name, filename, maj, min, rel,
                        asked, w->via);
}

/* Why H5Oopen(file, path) failed, in err (see above). Caller holds h5_mutex. */
static int explain_unopened(hid_t file, const char *filename, const char *path, ml_error *err) {
    if (!path[0])
        return ml_error_set(err, -ML_ENOTFOUND, "no dataset '' in file '%s' (an empty path names nothing)", filename);
    link_walk w = {.file0 = filename, .via = "", .links = 0};
    return explain_at(file, filename, path, path, 0, &w, err);
}

/* Where the native open (h5native.c) is to read a dataset HDF5 cannot open. */
typedef struct native_target {
    uint64_t ohdr;       /* the object header's HDF5 address */
    ml_chunk_file file;  /* the file as HDF5 measured it (src: unset) */
} native_target;

/* Is the native open to be used for every dataset, not only those HDF5
 * refuses (MULTILOAD_NATIVE_OPEN=always: for tests, docs/newer-hdf5.md)? */
static int native_always(void) {
    const char *v = getenv("MULTILOAD_NATIVE_OPEN");
    return v && strcmp(v, "always") == 0;
}

/* HDF5 found a hard link at `path` but cannot open its object: fill *nt
 * for the native open. Caller holds h5_mutex. Returns 1 (a hard link:
 * *nt filled) or 0. */
static int native_target_get(hid_t file, const char *path, ml_source *src, native_target *nt) {
    ml_h5_file_facts ff;
    uint64_t addr;
    /* Soft links at the end of the path are followed here, as HDF5 follows
     * them (a relative one from its group; at most LINKS_MAX): the native
     * open reads the object they lead to. HDF5 itself follows the links
     * of the path's groups. External links are not followed. */
    char cur[1024], val[1024];
    if ((size_t)snprintf(cur, sizeof cur, "%s", path) >= sizeof cur)
        return 0;
    for (unsigned hop = 0;; hop++) {
#if H5_VERSION_GE(1, 12, 0)
        H5L_info2_t li;
        if (H5Lget_info2(file, cur, &li, H5P_DEFAULT) < 0)
            return 0;
        if (li.type == H5L_TYPE_HARD) {
            if (H5VLnative_token_to_addr(file, li.u.token, &addr) < 0)
                return 0;
            break;
        }
#else
        H5L_info_t li;
        if (H5Lget_info(file, cur, &li, H5P_DEFAULT) < 0)
            return 0;
        if (li.type == H5L_TYPE_HARD) {
            addr = (uint64_t)li.u.address;
            break;
        }
#endif
        if (li.type != H5L_TYPE_SOFT || hop == LINKS_MAX || li.u.val_size == 0 || li.u.val_size >= sizeof val ||
            H5Lget_val(file, cur, val, sizeof val, H5P_DEFAULT) < 0)
            return 0;
        val[li.u.val_size] = 0;
        char next[1024];
        const char *slash = strrchr(cur, '/');
        int n = val[0] == '/' || !slash ? snprintf(next, sizeof next, "%s", val)
                                        : snprintf(next, sizeof next, "%.*s/%s", (int)(slash - cur), cur, val);
        if (n < 0 || (size_t)n >= sizeof next)
            return 0;
        memcpy(cur, next, (size_t)n + 1);
    }
    if (ml_h5_file_facts_get(file, src, &ff) < 0)
        return 0;
    nt->ohdr = addr;
    nt->file = (ml_chunk_file){.base = ff.base, .size = ff.eof, .sizeof_addr = ff.sizeof_addr,
                               .sizeof_size = ff.sizeof_size, .btree_k = ff.btree_k};
    return 1;
}

/* ml_h5_dataset_open; with nt non-NULL, a hard link to an object HDF5
 * cannot open (a newer format) returns 1 with *src_out and *nt filled
 * and no HDF5 handle open, for the native open. */
static int dataset_open(const char *filename, const char *path, ml_source **src_out, hid_t *file_out,
                        hid_t *dset_out, native_target *nt, ml_error *err) {
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
    /* What HDF5 will read to open the dataset, checked first by our own
     * bounded parsers: HDF5 1.10.8 crashes on some damaged groups, object
     * headers and dataset messages (h5precheck.c). */
    char why[ML_META_WHY_MAX] = "";
    rc = ml_meta_precheck(src, path, why);
    /* A writer holding HDF5's lock may be mid-update: its error (below) is the one to give. */
    if ((rc == -ML_ECORRUPT || (rc == -ML_ENOTHDF5 && why[0])) && file_locked(ml_source_posix_fd(src)))
        rc = 0;
    if (rc == -ML_ECORRUPT) {
        ml_source_unref(src);
        return ml_error_set(err, rc, "dataset '%s' of file '%s' cannot be opened: the file is damaged (%s)", path,
                            filename, why);
    }
    if (rc == -ML_ENOTHDF5 && why[0]) {
        ml_source_unref(src);
        return ml_error_set(err, rc, "HDF5 cannot open '%s' (damaged superblock: %s)", filename, why);
    }
    if (rc < 0 && rc != -ML_ENOTHDF5) {
        ml_source_unref(src);
        return ml_error_set(err, rc, "cannot read the metadata of '%s': %s", filename, ml_strerror(rc));
    }
    rc = 0;
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
    /* MULTILOAD_NATIVE_OPEN=always: HDF5 opens only the file and the path's links */
    obj = nt && native_always() ? -1 : H5Oopen(file, path, H5P_DEFAULT);
    if (obj < 0) {
        /* A hard link that resolves but an object HDF5 cannot open: the
         * object exists, in a format this HDF5 cannot read (a newer one),
         * which the native open reads if it can (h5native.c). */
        if (nt && native_target_get(file, path, src, nt)) {
            H5Fclose(file);
            ml_h5_unlock();
            *src_out = src;
            return 1;
        }
        rc = explain_unopened(file, filename, path, err);
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

int ml_h5_dataset_open(const char *filename, const char *path, ml_source **src_out, hid_t *file_out,
                       hid_t *dset_out, ml_error *err) {
    return dataset_open(filename, path, src_out, file_out, dset_out, NULL, err);
}

static int h5_read_slow(ml_layout *L, uint64_t row0, uint64_t n, void *dest, ml_error *err);

/* Free the HDF5 state: its handles (under the lock) and its chunk table. */
static void h5_close(ml_layout *L) {
    ml_h5_dataset *H = ml_h5(L);
    if (!H)
        return;
    ml_h5_close_handles((hid_t)H->h5_type, (hid_t)H->h5_dset, (hid_t)H->h5_file);
    ml_chunk_table_destroy(&H->table);
    free(H);
    L->fmt = NULL;
}

static const ml_layout_ops h5_ops = {.format = "HDF5", .chunk = ml_h5_chunk, .read_chunk = ml_h5_read_chunk,
                                     .read_slow = h5_read_slow, .close = h5_close};

int ml_layout_open(const char *filename, const char *path, ml_layout **out, ml_error *err) {
    return ml_layout_open_flags(filename, path, 0, out, err);
}

int ml_layout_open_flags(const char *filename, const char *path, unsigned flags, ml_layout **out,
                         ml_error *err) {
    ml_layout *L = ml_layout_new();
    ml_h5_dataset *H = calloc(1, sizeof *H);
    hid_t file = -1, dset = -1;
    int rc = 0;
    if (!L || !H) {
        free(L);
        free(H);
        return ml_error_set(err, -ENOMEM, "out of memory");
    }
    H->h5_file = H->h5_dset = H->h5_type = -1;
    if ((rc = ml_chunk_table_init(&H->table)) < 0) {
        free(H);
        free(L);
        return ml_error_set(err, rc, "cannot set up the chunk table: %s", ml_strerror(rc));
    }
    L->ops = &h5_ops;
    L->fmt = H;
    L->filename = strdup(filename);
    L->path = strdup(path);
    if (!L->filename || !L->path) {
        rc = ml_error_set(err, -ENOMEM, "out of memory");
        goto fail;
    }
    native_target nt;
    rc = dataset_open(filename, path, &L->src, &file, &dset, &nt, err);
    if (rc == 1) {
        /* HDF5 cannot open it: the core's own reader of its object header does (h5native.c) */
        h5_close(L);
        L->ops = NULL;
        rc = ml_h5_native_open(L, &nt.file, nt.ohdr, err);
        if (rc < 0)
            goto fail;
        *out = L;
        return 0;
    }
    if (rc < 0)
        goto fail;
    H->h5_file = file;
    H->h5_dset = dset;
    ml_h5_lock();
    int slow = 0;
    rc = follow_external_file(L, &slow, err);
    if (rc == 0)
        rc = describe(L, (flags & ML_LAYOUT_SCALAR) != 0, err);
    if (rc == 0 && slow) {
        L->storage = ML_STORE_SLOW;
        L->slow_reason = "an external link to a file HDF5 reads with a driver other than sec2";
        H->cindex.kind = ML_CHUNK_INDEX_NONE; /* L->src is not the dataset's file */
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

/* The first filter the read of a chunk undoes: the last one of the
 * pipeline its mask does not skip; -1 if none. */
static int first_on_read(const ml_layout *L, unsigned mask) {
    for (int i = (int)L->pipeline.n_filters - 1; i >= 0; i--)
        if (i >= 32 || !(mask & (1u << i)))
            return i;
    return -1;
}

/* Does any filter of L need its chunks checked (h5zcheck.h)? */
static int has_zcheck(const ml_layout *L) {
    for (unsigned i = 0; i < L->pipeline.n_filters; i++)
        if (ml_h5(L)->zcheck[i].kind != ML_H5Z_NONE)
            return 1;
    return 0;
}

/* Before H5Dread decodes the chunks of rows [row0, row0 + n), refuse what
 * HDF5 1.10.8 would read past its buffers on. For a v1 B-tree (found by
 * our descent by key): a stored size of 0, bytes past the file's end, or
 * every filter skipped (the mask) with a stored size other than the
 * chunk's (it copies a whole chunk out of the stored bytes). For every
 * index kind: stored bytes too few for an n-bit or scale-offset filter
 * that is the first the read undoes (ml_h5z_chunk_check); other index
 * kinds are asked through ml_h5_chunk. Everything else stays trusted to
 * HDF5. Returns 0, -ML_ECORRUPT with the chunk named in err, or
 * ml_h5_chunk's error. */
static int check_slow_chunks(ml_layout *L, uint64_t row0, uint64_t n, ml_error *err) {
    ml_h5_dataset *H = ml_h5(L);
    int btree1 = H->cindex.kind == ML_CHUNK_INDEX_BTREE1, z = has_zcheck(L);
    if ((!btree1 && !z) || n == 0 || L->n_chunks == 0)
        return 0;
    uint64_t inner = L->n_chunks / L->grid[0];
    unsigned all = L->pipeline.n_filters >= 32 ? ~0u : (1u << L->pipeline.n_filters) - 1;
    for (uint64_t cr = row0 / L->chunk[0]; cr <= (row0 + n - 1) / L->chunk[0]; cr++)
        for (uint64_t j = 0; j < inner; j++) {
            uint64_t index = cr * inner + j, off = 0, size = 0;
            unsigned mask = 0;
            const char *why = NULL;
            if (btree1) {
                int rc = ml_chunk_index_find(&H->cfile, &H->cindex, L->ndim, L->dims, NULL, index, &off, &size, &mask);
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
            } else {
                ml_chunk_info ci;
                int rc = ml_h5_chunk(L, index, &ci, err);
                if (rc < 0)
                    return rc;
                if (ci.bad)
                    why = ci.bad;
                else if (ci.addr == UINT64_MAX || ci.addr == ML_CHUNK_VIA_FORMAT || ci.size == 0 ||
                         !ml_layout_in_file(L, ci.addr, ci.size))
                    continue; /* never written, or HDF5 refuses it itself */
                off = ci.addr;
                size = ci.size;
                mask = ci.filter_mask;
            }
            int first = why || !z ? -1 : first_on_read(L, mask);
            const char *zwhy = first >= 0 ? ml_h5z_chunk_check(&H->zcheck[first], L->src, off, size) : NULL;
            if (zwhy)
                return ml_error_set(err, -ML_ECORRUPT, "corrupt chunk %llu of dataset '%s' in file '%s' (%s): "
                                    "HDF5's filter '%s' would read past it", (unsigned long long)index, L->path,
                                    L->filename, zwhy, H->zcheck[first].kind == ML_H5Z_NBIT ? "nbit" : "scaleoffset");
            if (why)
                return ml_error_set(err, -ML_ECORRUPT, "corrupt chunk index (%s) in chunk %llu of dataset '%s' "
                                    "in file '%s'", why, (unsigned long long)index, L->path, L->filename);
        }
    return 0;
}

/* ml_layout_ops.read_slow: H5Dread with the file's own type, after the
 * checks above. Takes the lock. */
static int h5_read_slow(ml_layout *L, uint64_t row0, uint64_t n, void *dest, ml_error *err) {
    ml_h5_dataset *H = ml_h5(L);
    if (L->storage == ML_STORE_SLOW && L->n_chunks && H->table_state == ML_TABLE_CORRUPT)
        return ml_error_set(err, -ML_ECORRUPT, "corrupt chunk index (%s): rows %llu..%llu of dataset '%s' in "
                            "file '%s' cannot be read as HDF5 reads them", H->table_why, (unsigned long long)row0,
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
    if (L->ndim == 0) { /* a scalar (ML_LAYOUT_SCALAR): its one element; no hyperslab of it exists */
        if (H5Dread((hid_t)H->h5_dset, (hid_t)H->h5_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, dest) < 0)
            rc = -ML_EHDF5;
        ml_h5_unlock();
        if (rc < 0)
            ml_error_set(err, rc, "HDF5 failed to read scalar dataset '%s' in file '%s'", L->path, L->filename);
        return rc;
    }
    hid_t fspace = H5Dget_space((hid_t)H->h5_dset);
    hid_t mspace = H5Screate_simple((int)L->ndim, count, NULL);
    if (fspace < 0 || mspace < 0 ||
        H5Sselect_hyperslab(fspace, H5S_SELECT_SET, start, NULL, count, NULL) < 0 ||
        H5Dread((hid_t)H->h5_dset, (hid_t)H->h5_type, mspace, fspace, H5P_DEFAULT, dest) < 0)
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
