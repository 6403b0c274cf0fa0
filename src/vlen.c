/* vlen.c - rows of variable-length datasets (PyTables VLArray) through
 * H5Dread, after checking what HDF5 would trust.
 *
 * Invariants:
 *  - Every HDF5 call here runs under the one HDF5 lock, taken through
 *    h5internal.h (ml_h5_lock); files are opened by the same opener as
 *    ml_layout_open and element types named by the same mapping
 *    (ml_type_from_h5), so errors and dtypes are the same as for any
 *    other dataset.
 *  - No conversion: the memory type is the vlen of the file's own element
 *    type (what ML_STORE_SLOW does with the file type), so each row's
 *    bytes come out as stored, in the file's byte order, and the dtype the
 *    caller builds from V->base describes them.
 *  - An ml_vlen is immutable after ml_vlen_open(): reads only use its
 *    handles under the lock and its byte source, so concurrent
 *    reads need no other locking.
 *  - HDF5 allocates each row's sequence during H5Dread (its default
 *    allocator); the lock is dropped while we copy them out (plain memory
 *    we own until reclaimed) and taken again to reclaim them, on failure
 *    too, so a read leaks nothing and blocks other HDF5 users only for
 *    the HDF5 calls themselves.
 *  - Nothing HDF5 1.10.8's heap reader only asserts reaches it. A row is
 *    stored as a descriptor (4-byte element count, heap collection address,
 *    4-byte object index); H5Dread follows every descriptor whose address
 *    is not 0 (a count of 0 too) into H5HG_read, which parses the whole
 *    collection and memcpy's the object's stored size into a buffer sized
 *    by count × element size. So before H5Dread, check_rows() reads the
 *    requested rows' descriptors itself (contiguous: from the source; chunked: the
 *    raw chunk from H5Dread_chunk, its deflate, shuffle and fletcher32
 *    undone here) and, for each address not 0, requires: a collection
 *    inside min(file size, EOA) with signature, version and a size of at
 *    least 4096 that ends inside the file; collections that do not
 *    overlap; objects that walk exactly as HDF5 walks them (gheap.c); the
 *    object index present (never 0, the free space); and the object's size
 *    exactly count × element size (what newer HDF5 demands; a larger one
 *    overflows 1.10's buffer, a smaller one leaves stale bytes in the row).
 *    Anything else is -ML_ECORRUPT naming the file, the dataset and the
 *    row. A pipeline with a filter only HDF5 can undo (szip, n-bit,
 *    scale-offset, plugins) leaves the descriptors unread: those datasets
 *    are trusted to HDF5 (V->unchecked), and so is what HDF5 reads for
 *    itself (superblock, object headers, the chunk index, fill values).
 *
 * Workload: VLArrays are a slow path. The byte offsets of the rows live
 * in the file's global heap, so there is no native parallel path: one
 * H5Dread per request, of the distinct rows requested (sorted: a
 * hyperslab when they are one run, else a point selection). The checks
 * cost one read of the descriptors (spans of up to DESC_SPAN rows, or one
 * raw chunk per chunk touched) and one walk of each distinct collection
 * (rows of a VLArray share few: hundreds of small rows to one), in the
 * page cache HDF5 then reads from.
 */
#define _GNU_SOURCE
#include "vlen.h"

#include "decode.h"
#include "gheap.h"
#include "h5internal.h"
#include "io.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Contiguous descriptors are read in spans of at most this many rows
 * (64 KiB of 16-byte descriptors): rows near each other cost one read,
 * rows far apart one small read each. */
#define DESC_SPAN 4096

/* HDF5 1.12 renamed H5Dvlen_reclaim; 1.10.8's header declares H5Treclaim
 * but its library does not export it. */
#if H5_VERSION_GE(1, 12, 0)
#define vlen_reclaim(type, space, buf) H5Treclaim((type), (space), H5P_DEFAULT, (buf))
#else
#define vlen_reclaim(type, space, buf) H5Dvlen_reclaim((type), (space), H5P_DEFAULT, (buf))
#endif

/* H5Dread decodes the row descriptors' chunks: refuse up front a filter
 * the HDF5 library cannot load (PyTables' blosc, which only its own HDF5
 * copy has), rather than fail on every read. Record the pipeline for
 * check_rows(), which undoes deflate, shuffle and fletcher32 itself; any
 * other filter sets V->unchecked. Caller holds the lock. */
static int check_filters(ml_vlen *V, ml_error *err) {
    hid_t dcpl = H5Dget_create_plist((hid_t)V->h5_dset);
    int rc = 0;
    if (dcpl < 0)
        return ml_error_set(err, -ML_EHDF5, "cannot read the creation properties of dataset '%s' of file '%s'",
                            V->path, V->filename);
    int nf = H5Pget_nfilters(dcpl);
    for (int i = 0; i < nf && rc == 0; i++) {
        unsigned flags = 0, values[8] = {0}, cfg = 0;
        size_t nv = 8;
        char name[64] = "";
        H5Z_filter_t id = H5Pget_filter2(dcpl, (unsigned)i, &flags, &nv, values, sizeof name, name, &cfg);
        if (id < 0)
            rc = ml_error_set(err, -ML_EHDF5, "cannot read filter %d of dataset '%s' of file '%s'", i, V->path,
                              V->filename);
        else if (!ml_h5_filter_loadable((int)id))
            rc = ml_error_set(err, -ML_EFILTER,
                              "variable-length dataset '%s' of file '%s' uses filter '%s' (id %d), which the "
                              "HDF5 library cannot decode (%s)", V->path, V->filename, name, (int)id,
                              ml_decode_supports(id) ? "multiload decodes it natively in fixed-size datasets "
                                                       "only: variable-length rows are read by HDF5"
                                                     : "is its HDF5 plugin installed?");
        else if ((id == H5Z_FILTER_DEFLATE || id == H5Z_FILTER_SHUFFLE || id == H5Z_FILTER_FLETCHER32) &&
                 V->n_filters < (int)(sizeof V->filters / sizeof V->filters[0])) {
            V->filters[V->n_filters].id = (int)id;
            /* A shuffle without its element size (PyTables writes VLArrays so:
             * the optional filter failed on write, and each chunk's mask says
             * it was skipped) is refused per chunk, where it is not skipped. */
            V->filters[V->n_filters].elem = id == H5Z_FILTER_SHUFFLE && nv == 1 ? values[0] : 0;
            V->n_filters++;
        } else
            V->unchecked = 1;
    }
    H5Pclose(dcpl);
    return nf < 0 && rc == 0
               ? ml_error_set(err, -ML_EHDF5, "cannot read the filter pipeline of dataset '%s' of file '%s'",
                              V->path, V->filename)
               : rc;
}

/* The dataset's own file, which an external link makes another than
 * V->filename: a duplicate of the descriptor HDF5 reads it with (sec2, the
 * driver every file here is opened with), so the heap checked is the heap
 * HDF5 reads; its base address, sizes of addresses and lengths, and the
 * bound no heap may pass, the smaller of the file's size and its end of
 * allocation (HDF5 refuses reads past its EOA). Caller holds the lock.
 * Returns 0, -ML_EHDF5, -ML_ETYPE (another driver) or -errno. */
static int describe_file(ml_vlen *V, ml_error *err) {
    hid_t file = H5Iget_file_id((hid_t)V->h5_dset);
    hid_t fapl = file < 0 ? -1 : H5Fget_access_plist(file);
    ml_h5_file_facts ff;
    void *handle = NULL;
    int rc = 0;
    if (fapl < 0) {
        rc = ml_error_set(err, -ML_EHDF5, "cannot read the file properties of dataset '%s' of file '%s'", V->path,
                          V->filename);
        goto out;
    }
    if (H5Pget_driver(fapl) != H5FD_SEC2 || H5Fget_vfd_handle(file, fapl, &handle) < 0 || !handle) {
        rc = ml_error_set(err, -ML_ETYPE, "variable-length dataset '%s' of file '%s' lies in a file HDF5 reads "
                          "with a driver other than sec2, whose heap multiload cannot check", V->path, V->filename);
        goto out;
    }
    ml_source *src = NULL;
    int fd = fcntl(*(int *)handle, F_DUPFD_CLOEXEC, 0);
    rc = fd < 0 ? -errno : ml_source_posix_adopt(fd, &src);
    if (rc < 0) {
        if (fd >= 0)
            close(fd);
        rc = ml_error_set(err, rc, "cannot open the file of dataset '%s' of file '%s': %s", V->path,
                          V->filename, strerror(-rc));
        goto out;
    }
    ml_source_unref(V->src);
    V->src = src;
    rc = ml_h5_file_facts_get((hid_t)V->h5_dset, src, &ff);
    if (rc == -ML_EHDF5) {
        rc = ml_error_set(err, rc, "cannot read the file properties of dataset '%s' of file '%s'", V->path,
                          V->filename);
        goto out;
    }
    if (rc < 0) {
        rc = ml_error_set(err, rc, "cannot open the file of dataset '%s' of file '%s': %s", V->path, V->filename,
                          strerror(-rc));
        goto out;
    }
    if (ff.sizeof_addr < 2 || ff.sizeof_addr > 8 || ff.sizeof_size < 2 || ff.sizeof_size > 8) {
        rc = ml_error_set(err, -ML_ECORRUPT, "the file of dataset '%s' of file '%s' has %u-byte addresses and "
                          "%u-byte lengths (HDF5 writes 2 to 8)", V->path, V->filename, ff.sizeof_addr,
                          ff.sizeof_size);
        goto out;
    }
    V->h5_base = ff.base;
    V->limit = ff.eof > ff.base ? ff.eof - ff.base : 0; /* bytes past the base: min(file size, EOA) - base */
    V->sizeof_addr = ff.sizeof_addr;
    V->sizeof_size = ff.sizeof_size;
    V->desc_size = 4 + ff.sizeof_addr + 4;
out:
    if (fapl >= 0)
        H5Pclose(fapl);
    if (file >= 0)
        H5Fclose(file);
    return rc;
}

/* Where the descriptors are. Contiguous: one extent of exactly n_rows
 * descriptors (as for fixed-size data, 1.10 reads past an extent of
 * another size), or never written (fill: null descriptors, nothing to
 * check). Chunked: 1-D chunks of chunk_rows rows, each chunk's raw bytes
 * read with H5Dread_chunk. Compact data lives in the object header, which
 * HDF5 1.10 gives no raw access to, external and virtual storage in other
 * files: refused, since their heap references could not be checked before
 * HDF5 follows them. Caller holds the lock. Returns 0, -ML_ETYPE,
 * -ML_ECORRUPT or -ML_EHDF5. */
static int describe_storage(ml_vlen *V, ml_error *err) {
    hid_t dcpl = H5Dget_create_plist((hid_t)V->h5_dset);
    int rc = 0;
    if (dcpl < 0)
        return ml_error_set(err, -ML_EHDF5, "cannot read the creation properties of dataset '%s' of file '%s'",
                            V->path, V->filename);
    H5D_layout_t lay = H5Pget_layout(dcpl);
    const char *refused = H5Pget_external_count(dcpl) > 0 ? "external"
                          : lay == H5D_COMPACT            ? "compact"
                          : lay == H5D_VIRTUAL            ? "virtual"
                          : lay != H5D_CONTIGUOUS && lay != H5D_CHUNKED ? "unknown"
                                                                        : NULL;
    if (refused) {
        rc = ml_error_set(err, -ML_ETYPE, "variable-length dataset '%s' of file '%s' has %s storage: multiload "
                          "cannot check its rows' heap references before HDF5 follows them (only contiguous "
                          "and chunked ones are read)", V->path, V->filename, refused);
        goto out;
    }
    uint64_t total;
    if (__builtin_mul_overflow(V->n_elems, (uint64_t)V->desc_size, &total) || total > INT64_MAX) {
        rc = ml_error_set(err, -ML_ECORRUPT, "variable-length dataset '%s' of file '%s' claims %llu elements, "
                          "more than any file holds", V->path, V->filename, (unsigned long long)V->n_elems);
        goto out;
    }
    if (lay == H5D_CHUNKED) {
        hsize_t c[H5S_MAX_RANK];
        uint64_t elems = 1, bytes = 0;
        int ok = V->ndim >= 1 && H5Pget_chunk(dcpl, (int)V->ndim, c) == (int)V->ndim;
        V->chunked = 1;
        for (unsigned d = 0; ok && d < V->ndim; d++) {
            V->chunk_dims[d] = c[d];
            ok = c[d] > 0 && !__builtin_mul_overflow(elems, (uint64_t)c[d], &elems);
        }
        if (!ok || __builtin_mul_overflow(elems, (uint64_t)V->desc_size, &bytes) || bytes > UINT32_MAX) {
            rc = ml_error_set(err, -ML_ECORRUPT, "variable-length dataset '%s' of file '%s' has chunks of %llu "
                              "bytes or of no shape (HDF5 chunks are 1 byte to 4 GiB)", V->path, V->filename,
                              (unsigned long long)bytes);
            goto out;
        }
        V->chunk_rows = V->chunk_dims[0];
        V->chunk_elems = elems;
        goto out;
    }
    haddr_t off = H5Dget_offset((hid_t)V->h5_dset); /* absolute: a file offset */
    V->offset = off == HADDR_UNDEF ? UINT64_MAX : (uint64_t)off;
    hsize_t stored = H5Dget_storage_size((hid_t)V->h5_dset);
    if (V->offset != UINT64_MAX && (uint64_t)stored != total)
        rc = ml_error_set(err, -ML_ECORRUPT, "variable-length dataset '%s' of file '%s' stores %llu bytes of "
                          "descriptors, but its %llu elements need %llu (damaged layout or dataspace)", V->path,
                          V->filename, (unsigned long long)stored, (unsigned long long)V->n_elems,
                          (unsigned long long)total);
out:
    H5Pclose(dcpl);
    return rc;
}

/* The first member of compound `tid` (at any depth, inside arrays too)
 * that is a variable-length string, its path written into name[] as
 * PyTables names nested fields ('outer/inner'). Returns 1 when found, 0
 * when none, -1 on an HDF5 failure. Caller holds the lock. */
static int find_vlen_string_member(hid_t tid, char *name, size_t len, unsigned depth) {
    H5T_class_t cls = H5Tget_class(tid);
    if (depth > 32)
        return 0; /* h5dmsg.c bounds the nesting HDF5 decodes; deeper is not ours to refuse */
    if (cls == H5T_STRING)
        return H5Tis_variable_str(tid) > 0;
    if (cls == H5T_ARRAY) {
        hid_t super = H5Tget_super(tid);
        int r = super < 0 ? -1 : find_vlen_string_member(super, name, len, depth + 1);
        if (super >= 0)
            H5Tclose(super);
        return r;
    }
    if (cls != H5T_COMPOUND)
        return 0;
    int n = H5Tget_nmembers(tid);
    for (int i = 0; i < n; i++) {
        char *mname = H5Tget_member_name(tid, (unsigned)i);
        hid_t mt = H5Tget_member_type(tid, (unsigned)i);
        size_t used = strlen(name);
        int r = mname && mt >= 0 ? 0 : -1;
        if (r == 0) {
            snprintf(name + used, len - used, "%s%s", used ? "/" : "", mname);
            r = find_vlen_string_member(mt, name, len, depth + 1);
            if (r == 0)
                name[used] = '\0';
        }
        if (mname)
            H5free_memory(mname);
        if (mt >= 0)
            H5Tclose(mt);
        if (r != 0)
            return r;
    }
    return n < 0 ? -1 : 0;
}

/* The shape: VLArrays 1-D only; strings any simple dataspace (scalar: 0-d,
 * one row). Fills V->ndim, dims, n_rows, inner and n_elems, every product
 * overflow-checked. Caller holds the lock. */
static int describe_shape(ml_vlen *V, ml_error *err) {
    hid_t space = H5Dget_space((hid_t)V->h5_dset);
    H5S_class_t cls = space < 0 ? H5S_NO_CLASS : H5Sget_simple_extent_type(space);
    int nd = space < 0 ? -1 : H5Sget_simple_extent_ndims(space);
    hsize_t dims[H5S_MAX_RANK];
    int rc = 0;
    if (nd < 0 || nd > H5S_MAX_RANK || (cls != H5S_NULL && H5Sget_simple_extent_dims(space, dims, NULL) < 0)) {
        rc = ml_error_set(err, -ML_EHDF5, "cannot read the shape of dataset '%s' of file '%s'", V->path,
                          V->filename);
        goto out;
    }
    if (!V->is_string && (nd != 1 || cls != H5S_SIMPLE)) {
        rc = ml_error_set(err, -ML_ESHAPE,
                          "variable-length dataset '%s' of file '%s' has %d dimensions: only 1-D ones "
                          "(PyTables VLArray) are read", V->path, V->filename, nd);
        goto out;
    }
    if (cls != H5S_SIMPLE && cls != H5S_SCALAR) {
        rc = ml_error_set(err, -ML_ESHAPE, "variable-length string dataset '%s' of file '%s' has a null "
                          "dataspace: it holds no value to read", V->path, V->filename);
        goto out;
    }
    if (cls == H5S_SCALAR)
        nd = 0;
    if (nd > ML_MAX_DIMS) {
        rc = ml_error_set(err, -ML_ESHAPE, "dataset '%s' of file '%s' has %d dimensions (at most %d are read)",
                          V->path, V->filename, nd, ML_MAX_DIMS);
        goto out;
    }
    V->ndim = (unsigned)nd;
    V->n_rows = nd ? dims[0] : 1;
    V->inner = 1;
    for (int d = 0; d < nd; d++) {
        V->dims[d] = dims[d];
        if (d > 0 && __builtin_mul_overflow(V->inner, (uint64_t)dims[d], &V->inner))
            V->inner = UINT64_MAX;
    }
    uint64_t bytes;
    if (__builtin_mul_overflow(V->n_rows, V->inner, &V->n_elems) ||
        __builtin_mul_overflow(V->n_elems, (uint64_t)(4 + 8 + 4), &bytes) || bytes > INT64_MAX) {
        rc = ml_error_set(err, -ML_ECORRUPT, "variable-length dataset '%s' of file '%s' claims more elements "
                          "than any file holds", V->path, V->filename);
        goto out;
    }
out:
    if (space >= 0)
        H5Sclose(space);
    return rc;
}

/* Check the dataset's type and shape and build V's element type and memory
 * type. Sets *is_vlen = 0 (and returns 0) when the type is neither a
 * variable-length sequence nor a variable-length string, nor a compound
 * holding one (refused, naming the field). Caller holds the lock. */
static int describe(ml_vlen *V, int *is_vlen, ml_error *err) {
    char where[600];
    hid_t ftype = -1, super = -1;
    int rc = 0;
    *is_vlen = 0;
    ftype = H5Dget_type((hid_t)V->h5_dset);
    if (ftype < 0) {
        rc = ml_error_set(err, -ML_EHDF5, "cannot read the datatype of dataset '%s' of file '%s'", V->path,
                          V->filename);
        goto out;
    }
    H5T_class_t cls = H5Tget_class(ftype);
    if (cls == H5T_COMPOUND || cls == H5T_ARRAY) {
        char field[1024] = "";
        if (find_vlen_string_member(ftype, field, sizeof field, 0) > 0) {
            *is_vlen = 1;
            rc = ml_error_set(err, -ML_ETYPE, "unsupported datatype: variable-length string in field '%s' of "
                              "the %s of dataset '%s' of file '%s' (variable-length strings are read in datasets "
                              "of strings only, not inside compounds or arrays)", field,
                              cls == H5T_COMPOUND ? "compound" : "array", V->path, V->filename);
        }
        goto out;
    }
    V->is_string = cls == H5T_STRING && H5Tis_variable_str(ftype) > 0;
    if (cls != H5T_VLEN && !V->is_string)
        goto out;
    *is_vlen = 1;
    snprintf(where, sizeof where, "the elements of variable-length dataset '%s' of file '%s'", V->path,
             V->filename);
    if (V->is_string) {
        H5T_cset_t cs = H5Tget_cset(ftype);
        H5T_str_t pad = H5Tget_strpad(ftype);
        if ((cs != H5T_CSET_ASCII && cs != H5T_CSET_UTF8) ||
            (pad != H5T_STR_NULLTERM && pad != H5T_STR_NULLPAD && pad != H5T_STR_SPACEPAD)) {
            rc = ml_error_set(err, -ML_ETYPE, "unsupported datatype: variable-length string of character set "
                              "%d and padding %d in dataset '%s' of file '%s'", (int)cs, (int)pad, V->path,
                              V->filename);
            goto out;
        }
        V->str_utf8 = cs == H5T_CSET_UTF8;
        V->str_pad = (int)pad;
        V->base = calloc(1, sizeof *V->base);
        if (!V->base) {
            rc = ml_error_set(err, -ENOMEM, "out of memory");
            goto out;
        }
        V->base->kind = ML_T_UINT; /* one char: a string's heap object is its bytes */
        V->base->size = 1;
        V->base->precision = 8;
        V->elem_size = 1;
    } else {
        super = H5Tget_super(ftype);
        if (super < 0) {
            rc = ml_error_set(err, -ML_EHDF5, "cannot read %s", where);
            goto out;
        }
        rc = ml_type_from_h5(super, &V->base, err, where);
        if (rc < 0)
            goto out;
        V->elem_size = H5Tget_size(super);
        if (V->elem_size == 0) {
            rc = ml_error_set(err, -ML_EHDF5, "cannot read the size of %s", where);
            goto out;
        }
    }
    rc = describe_shape(V, err);
    if (rc == 0)
        rc = check_filters(V, err);
    if (rc == 0)
        rc = describe_file(V, err);
    if (rc == 0)
        rc = describe_storage(V, err);
    if (rc < 0)
        goto out;
    if (V->is_string) {
        /* char *: HDF5 allocates each string NUL-terminated; no conversion
         * between string types of one character set and padding. */
        hid_t mt = H5Tcopy(H5T_C_S1);
        if (mt < 0 || H5Tset_size(mt, H5T_VARIABLE) < 0 ||
            H5Tset_cset(mt, V->str_utf8 ? H5T_CSET_UTF8 : H5T_CSET_ASCII) < 0 ||
            H5Tset_strpad(mt, (H5T_str_t)V->str_pad) < 0) {
            if (mt >= 0)
                H5Tclose(mt);
            mt = -1;
        }
        V->h5_mtype = mt;
    } else
        V->h5_mtype = H5Tvlen_create(super);
    if (V->h5_mtype < 0)
        rc = ml_error_set(err, -ML_EHDF5, "cannot build the memory type of %s", where);
out:
    if (super >= 0)
        H5Tclose(super);
    if (ftype >= 0)
        H5Tclose(ftype);
    return rc;
}

int ml_vlen_open(const char *filename, const char *path, ml_vlen **out, ml_error *err) {
    ml_vlen *V = calloc(1, sizeof *V);
    hid_t file = -1, dset = -1;
    ml_source *src = NULL;
    int is_vlen = 0, rc = 0;
    *out = NULL;
    if (!V)
        return ml_error_set(err, -ENOMEM, "out of memory");
    V->h5_file = V->h5_dset = V->h5_mtype = -1;
    V->offset = UINT64_MAX;
    V->filename = strdup(filename);
    V->path = strdup(path);
    if (!V->filename || !V->path) {
        rc = ml_error_set(err, -ENOMEM, "out of memory");
        goto fail;
    }
    ml_error local;
    ml_error_clear(&local);
    rc = ml_h5_dataset_open(filename, path, &src, &file, &dset, &local);
    if (rc == -ML_ENOTDSET) {
        rc = 0; /* a group or a named type: not a variable-length dataset */
        goto fail;
    }
    if (rc < 0) {
        ml_error_set(err, rc, "%s", local.msg);
        goto fail;
    }
    V->src = src; /* replaced by a source on the descriptor HDF5 reads the dataset's own file with */
    V->h5_file = file;
    V->h5_dset = dset;
    ml_h5_lock();
    rc = describe(V, &is_vlen, err);
    ml_h5_unlock();
    if (rc < 0 || !is_vlen)
        goto fail;
    *out = V;
    return 0;
fail:
    ml_vlen_close(V);
    return rc;
}

void ml_vlen_close(ml_vlen *V) {
    if (!V)
        return;
    ml_h5_close_handles((hid_t)V->h5_mtype, (hid_t)V->h5_dset, (hid_t)V->h5_file);
    ml_source_unref(V->src);
    ml_type_free(V->base);
    free(V->filename);
    free(V->path);
    free(V);
}

/* All of len bytes at file offset off from the source. Returns 0, -errno
 * or -ML_ETRUNC (the file ends first). */
static int read_full(ml_source *src, void *buf, size_t len, uint64_t off) {
    ml_io_req r = {.offset = off, .len = len, .buf = buf};
    return ml_source_read(src, &r);
}

/* The heap reader's source: the dataset's file, at addresses relative to
 * its base (V->limit bounds them before any read). */
static int heap_read(void *ctx, uint64_t off, void *buf, size_t len) {
    const ml_vlen *V = ctx;
    return read_full(V->src, buf, len, V->h5_base + off);
}

static uint64_t get_le(const unsigned char *p, unsigned n) {
    uint64_t v = 0;
    for (unsigned i = n; i-- > 0;)
        v = v << 8 | p[i];
    return v;
}

/* A row's descriptor, decoded (the layout H5T_vlen_disk_* read). */
typedef struct desc {
    uint64_t count; /* elements */
    uint64_t addr;  /* collection address, relative to the base; 0: null row, HDF5 reads nothing */
    uint64_t idx;   /* object index in the collection */
} desc;

static desc desc_at(const ml_vlen *V, const unsigned char *p) {
    desc d = {.count = get_le(p, 4), .addr = get_le(p + 4, V->sizeof_addr),
              .idx = get_le(p + 4 + V->sizeof_addr, 4)};
    return d;
}

/* An error about element e (VLArrays: row e): "row R" for 1-D datasets,
 * "element [i, j, ...]" for others. */
static int row_error(const ml_vlen *V, ml_error *err, int rc, uint64_t e, const char *why) {
    char at[ML_MAX_DIMS * 22 + 16] = "the value"; /* 0-d */
    if (V->ndim == 1)
        snprintf(at, sizeof at, "row %llu", (unsigned long long)e);
    else if (V->ndim > 1) {
        uint64_t x[ML_MAX_DIMS];
        size_t used = 0;
        for (unsigned d = V->ndim; d-- > 0;) {
            x[d] = e % V->dims[d];
            e /= V->dims[d];
        }
        used += (size_t)snprintf(at, sizeof at, "element [");
        for (unsigned d = 0; d < V->ndim && used < sizeof at; d++)
            used += (size_t)snprintf(at + used, sizeof at - used, "%s%llu", d ? ", " : "", (unsigned long long)x[d]);
        if (used < sizeof at)
            snprintf(at + used, sizeof at - used, "]");
    }
    return ml_error_set(err, rc, "variable-length %sdataset '%s' of file '%s', %s: %s", V->is_string ? "string " : "",
                        V->path, V->filename, at, why);
}

/* Contiguous: the descriptors of elements uniq[0..m) (sorted, distinct) into
 * out[i * desc_size], read in spans of at most DESC_SPAN rows. Never
 * written: all null. Returns 0, -errno, -ML_ETRUNC or -ENOMEM. */
static int read_contiguous(ml_vlen *V, const uint64_t *uniq, size_t m, unsigned char *out, ml_error *err) {
    size_t ds = V->desc_size;
    unsigned char *span = NULL;
    int rc = 0;
    if (V->offset == UINT64_MAX) {
        memset(out, 0, m * ds);
        return 0;
    }
    span = malloc((size_t)DESC_SPAN * ds);
    if (!span)
        return ml_error_set(err, -ENOMEM, "out of memory reading the rows of '%s'", V->path);
    uint64_t end = V->h5_base + V->limit; /* file offset no read passes */
    for (size_t i = 0, j; i < m; i = j) {
        for (j = i + 1; j < m && uniq[j] - uniq[i] < DESC_SPAN; j++)
            ;
        /* Elements are below n_elems, whose descriptors' bytes were
         * checked at open to fit in 2^63: only the sum with the offset can wrap. */
        uint64_t first = uniq[i], len = (uniq[j - 1] - first + 1) * ds, at;
        if (__builtin_add_overflow(V->offset, first * ds, &at) || at > end || len > end - at) {
            rc = row_error(V, err, -ML_ETRUNC, uniq[j - 1], "its descriptor lies past the end of the file");
            goto out;
        }
        rc = read_full(V->src, span, (size_t)len, at);
        if (rc < 0) {
            row_error(V, err, rc, first, rc == -ML_ETRUNC ? "the file ends inside its descriptor"
                                                          : "cannot read its descriptor");
            goto out;
        }
        for (size_t k = i; k < j; k++)
            memcpy(out + k * ds, span + (uniq[k] - first) * ds, ds);
    }
out:
    free(span);
    return rc;
}

/* Undo the pipeline (last filter first, skipping those `mask` says were
 * skipped on write) on the raw chunk *buf of *len bytes (owned; replaced
 * by the decoded bytes). Returns 0, -ML_ECORRUPT, -ML_ECHECKSUM or -ENOMEM
 * with *why set. */
static int decode_chunk(const ml_vlen *V, unsigned mask, unsigned char **buf, size_t *len, size_t want,
                        const char **why) {
    size_t cap = want + 4 * (size_t)V->n_filters; /* fletcher32 adds 4 bytes; nothing else grows */
    for (int f = V->n_filters - 1; f >= 0; f--) {
        if (mask & (1u << f))
            continue;
        /* The codec table's decoders (codec.h); check_filters recorded only
         * deflate, shuffle and fletcher32, each available in every build. */
        const ml_codec *c = ml_codec_find(V->filters[f].id);
        ml_filter fl = {.id = V->filters[f].id, .n_values = 1, .values = {V->filters[f].elem}};
        unsigned char *cur = *buf, *out = NULL;
        size_t n = *len, got = 0;
        void *ctx = NULL;
        int rc;
        if (!c || !c->available) {
            *why = "a filter multiload does not undo";
            return -ML_ECORRUPT;
        }
        if (c->in_place) { /* fletcher32: HDF5 accepts the sum and, as written before 1.6.3, its bytes swapped in pairs */
            if ((rc = c->decode(NULL, &fl, cur, n, cur, n, len)) < 0) {
                *why = rc == -ML_ECHECKSUM ? "its chunk fails its fletcher32 checksum"
                                           : "its chunk is too short for its fletcher32 checksum";
                return rc;
            }
            continue;
        }
        if (fl.id == ML_FILTER_SHUFFLE && fl.values[0] == 0) {
            *why = "its chunk is shuffled, but the shuffle filter has no element size (HDF5 refuses it: "
                   "invalid shuffle parameters)";
            return -ML_ECORRUPT;
        }
        size_t out_cap = fl.id == ML_FILTER_SHUFFLE ? n : cap;
        out = malloc(out_cap ? out_cap : 1);
        if (!out || (c->ctx_open && c->ctx_open(&ctx) < 0)) {
            free(out);
            *why = "out of memory";
            return -ENOMEM;
        }
        rc = c->decode(ctx, &fl, cur, n, out, out_cap, &got);
        if (ctx)
            c->ctx_close(ctx);
        if (rc < 0) {
            free(out);
            *why = "its chunk's deflate stream is damaged";
            return -ML_ECORRUPT;
        }
        free(cur);
        *buf = out;
        *len = got;
    }
    if (*len != want) {
        *why = "its chunk decodes to another size than its rows' descriptors";
        return -ML_ECORRUPT;
    }
    return 0;
}

/* Where an element's descriptor lies in the chunked layout: its chunk (a
 * row-major index over the grid of chunks) and its index inside that
 * chunk (row-major over the chunk's shape, as HDF5 stores a chunk). */
typedef struct chunk_pos {
    uint64_t chunk;  /* chunk number; its origin is recomputed from it */
    uint64_t local;  /* descriptor index inside the chunk, < chunk_elems */
    size_t i;        /* the element's place in uniq */
} chunk_pos;

static chunk_pos chunk_pos_of(const ml_vlen *V, uint64_t e, size_t i) {
    uint64_t x[ML_MAX_DIMS];
    chunk_pos p = {.i = i};
    for (unsigned d = V->ndim; d-- > 0;) {
        x[d] = e % V->dims[d];
        e /= V->dims[d];
    }
    for (unsigned d = 0; d < V->ndim; d++) {
        uint64_t grid = (V->dims[d] + V->chunk_dims[d] - 1) / V->chunk_dims[d]; /* dims < 2^63: no wrap */
        p.chunk = p.chunk * grid + x[d] / V->chunk_dims[d];
        p.local = p.local * V->chunk_dims[d] + x[d] % V->chunk_dims[d];
    }
    return p;
}

/* The chunk origin (element coordinates) of chunk number `chunk`. */
static void chunk_origin(const ml_vlen *V, uint64_t chunk, hsize_t *coord) {
    for (unsigned d = V->ndim; d-- > 0;) {
        uint64_t grid = (V->dims[d] + V->chunk_dims[d] - 1) / V->chunk_dims[d];
        coord[d] = (hsize_t)(chunk % grid * V->chunk_dims[d]);
        chunk /= grid;
    }
}

static int cmp_chunk_pos(const void *a, const void *b) {
    const chunk_pos *x = a, *y = b;
    if (x->chunk != y->chunk)
        return (x->chunk > y->chunk) - (x->chunk < y->chunk);
    return (x->i > y->i) - (x->i < y->i);
}

/* Chunked: the descriptors of elements uniq[0..m) (sorted, distinct) into
 * out[i * desc_size], one raw chunk read (under the lock) and decoded
 * (without it) per chunk touched; a chunk never written holds null
 * descriptors (HDF5 reads the fill value). Returns 0 or an error for the
 * chunk's first element. */
static int read_chunked(ml_vlen *V, const uint64_t *uniq, size_t m, unsigned char *out, ml_error *err) {
    size_t ds = V->desc_size, want = (size_t)(V->chunk_elems * ds);
    chunk_pos *pos = malloc(m * sizeof *pos);
    int rc = 0;
    if (!pos)
        return ml_error_set(err, -ENOMEM, "out of memory reading the descriptors of '%s'", V->path);
    for (size_t i = 0; i < m; i++)
        pos[i] = chunk_pos_of(V, uniq[i], i);
    if (V->ndim > 1) /* 1-D: element order is chunk order already */
        qsort(pos, m, sizeof *pos, cmp_chunk_pos);
    for (size_t i = 0, j; i < m && rc == 0; i = j) {
        for (j = i + 1; j < m && pos[j].chunk == pos[i].chunk; j++)
            ;
        hsize_t coord[ML_MAX_DIMS], nbytes = 0;
        uint32_t mask = 0;
        unsigned char *buf = NULL;
        size_t len = 0;
        const char *why = NULL;
        chunk_origin(V, pos[i].chunk, coord);
        haddr_t caddr = HADDR_UNDEF;
        unsigned cmask = 0;
        ml_h5_lock();
        /* The size the chunk index stores, which H5Dread_chunk writes
         * (H5Dget_chunk_storage_size reports an unfiltered chunk's full size
         * whatever the index stores, and fails on a chunk never written in
         * 1.10.8); an address HADDR_UNDEF: never written. */
        if (H5Dget_chunk_info_by_coord((hid_t)V->h5_dset, coord, &cmask, &caddr, &nbytes) < 0) {
            rc = -ML_EHDF5;
            why = "HDF5 cannot find the chunk of its descriptor";
        } else if (caddr == HADDR_UNDEF) {
            /* never written: fill, nothing for HDF5 to follow but the fill value */
        } else if (nbytes > V->limit || (V->n_filters == 0 && nbytes != want)) {
            rc = -ML_ECORRUPT;
            why = "the chunk of its descriptor claims a size larger than the file, or, unfiltered, other "
                  "than its descriptors";
        } else if (!(buf = malloc(nbytes ? (size_t)nbytes : 1))) {
            rc = -ENOMEM;
            why = "out of memory for the chunk of its descriptor";
        } else if (H5Dread_chunk((hid_t)V->h5_dset, H5P_DEFAULT, coord, &mask, buf) < 0) {
            rc = -ML_EHDF5;
            why = "HDF5 cannot read the chunk of its descriptor";
        }
        ml_h5_unlock();
        len = (size_t)nbytes;
        if (rc == 0 && buf)
            rc = decode_chunk(V, mask, &buf, &len, want, &why);
        if (rc < 0)
            row_error(V, err, rc, uniq[pos[i].i], why);
        else
            for (size_t k = i; k < j; k++) {
                if (buf)
                    memcpy(out + pos[k].i * ds, buf + pos[k].local * ds, ds);
                else
                    memset(out + pos[k].i * ds, 0, ds);
            }
        free(buf);
    }
    free(pos);
    return rc;
}

static int cmp_u64(const void *a, const void *b);

/* The collection at addr among heaps[0..nh) (sorted by addr; it is there). */
static ml_gheap *find_heap(ml_gheap *heaps, size_t nh, uint64_t addr) {
    size_t lo = 0, hi = nh;
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (heaps[mid].addr <= addr)
            lo = mid;
        else
            hi = mid;
    }
    return &heaps[lo];
}

/* The first row (of uniq) whose descriptor names the collection at addr. */
static uint64_t row_of_heap(const ml_vlen *V, const uint64_t *uniq, size_t m, const unsigned char *descs,
                            uint64_t addr) {
    for (size_t i = 0; i < m; i++)
        if (desc_at(V, descs + i * V->desc_size).addr == addr)
            return uniq[i];
    return uniq[0];
}

/* Everything H5Dread will follow from the elements uniq[0..m) (sorted,
 * distinct; a VLArray's rows, a string dataset's strings), checked as the
 * opening comment says. Each collection is read and walked once, however
 * many elements share it; collections may not overlap, so the walks
 * together cover at most the file. Returns 0 or an error naming the first
 * element concerned. */
static int check_rows(ml_vlen *V, const uint64_t *uniq, size_t m, ml_error *err) {
    unsigned char *descs = NULL;
    uint64_t *addrs = NULL;
    ml_gheap *heaps = NULL;
    size_t na = 0, nh = 0, ds = V->desc_size;
    char why[300];
    int rc = 0;
    if (V->unchecked)
        return 0;
    descs = malloc(m * ds); /* m distinct rows: at most the 2^63 bytes checked at open */
    addrs = malloc(m * sizeof *addrs);
    heaps = calloc(m, sizeof *heaps);
    if (!descs || !addrs || !heaps) {
        rc = ml_error_set(err, -ENOMEM, "out of memory checking %zu elements of '%s'", m, V->path);
        goto out;
    }
    rc = V->chunked ? read_chunked(V, uniq, m, descs, err) : read_contiguous(V, uniq, m, descs, err);
    if (rc < 0)
        goto out;
    for (size_t i = 0; i < m; i++) {
        desc d = desc_at(V, descs + i * ds);
        if (d.addr != 0)
            addrs[na++] = d.addr;
    }
    qsort(addrs, na, sizeof *addrs, cmp_u64);
    for (size_t i = 0; i < na; i++) {
        if (nh && heaps[nh - 1].addr == addrs[i])
            continue;
        rc = ml_gheap_read_header(&heaps[nh], addrs[i], V->limit, V->sizeof_size, heap_read, V, why, sizeof why);
        if (rc < 0) {
            row_error(V, err, rc, row_of_heap(V, uniq, m, descs, addrs[i]), why);
            goto out;
        }
        /* HDF5 never lays two collections over each other: overlapping
         * ones are crafted, and would let a few bytes be walked many times. */
        if (nh && heaps[nh - 1].addr + heaps[nh - 1].size > addrs[i]) {
            snprintf(why, sizeof why, "its global heap collection at address %llu overlaps the one at %llu",
                     (unsigned long long)addrs[i], (unsigned long long)heaps[nh - 1].addr);
            rc = row_error(V, err, -ML_ECORRUPT, row_of_heap(V, uniq, m, descs, addrs[i]), why);
            goto out;
        }
        nh++;
    }
    for (size_t h = 0; h < nh; h++) {
        rc = ml_gheap_walk(&heaps[h], V->sizeof_size, heap_read, V, why, sizeof why);
        if (rc < 0) {
            row_error(V, err, rc, row_of_heap(V, uniq, m, descs, heaps[h].addr), why);
            goto out;
        }
    }
    for (size_t i = 0; i < m; i++) {
        desc d = desc_at(V, descs + i * ds);
        if (d.addr == 0)
            continue;
        const ml_gheap *H = find_heap(heaps, nh, d.addr);
        const ml_gheap_obj *o = ml_gheap_find(H, d.idx);
        uint64_t need = 0;
        if (!o) {
            snprintf(why, sizeof why, "object %llu is not in its global heap collection at address %llu%s",
                     (unsigned long long)d.idx, (unsigned long long)d.addr,
                     d.idx == 0 ? " (index 0 is the collection's free space)" : "");
            rc = row_error(V, err, -ML_ECORRUPT, uniq[i], why);
            goto out;
        }
        if (__builtin_mul_overflow(d.count, (uint64_t)V->elem_size, &need) || o->size != need) {
            if (V->is_string)
                snprintf(why, sizeof why, "its string has %llu bytes, but its object %llu in the global heap "
                         "collection at address %llu holds %llu bytes", (unsigned long long)d.count,
                         (unsigned long long)d.idx, (unsigned long long)d.addr, (unsigned long long)o->size);
            else
                snprintf(why, sizeof why, "it has %llu elements of %zu bytes, but its object %llu in the global heap "
                         "collection at address %llu holds %llu bytes", (unsigned long long)d.count, V->elem_size,
                         (unsigned long long)d.idx, (unsigned long long)d.addr, (unsigned long long)o->size);
            rc = row_error(V, err, -ML_ECORRUPT, uniq[i], why);
            goto out;
        }
    }
out:
    for (size_t h = 0; heaps && h < nh; h++)
        ml_gheap_free(&heaps[h]);
    free(heaps);
    free(addrs);
    free(descs);
    return rc;
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* Index of `row` in the sorted distinct rows uniq[0..m) (it is there). */
static size_t find_row(const uint64_t *uniq, size_t m, uint64_t row) {
    size_t lo = 0, hi = m;
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (uniq[mid] <= row)
            lo = mid;
        else
            hi = mid;
    }
    return lo;
}

/* Is uniq[0..m) an arithmetic progression? Its step in *step (1 for m = 1). */
static int is_progression(const uint64_t *uniq, size_t m, uint64_t *step) {
    *step = m > 1 ? uniq[1] - uniq[0] : 1;
    for (size_t i = 2; i < m; i++)
        if (uniq[i] - uniq[i - 1] != *step)
            return 0;
    return 1;
}

/* Select the rows uniq[0..m) (sorted, distinct) of the file space, every
 * element of each: one hyperslab when they are evenly spaced (a run, a
 * slice's step), else the points, in order (HDF5 then reads the elements
 * in the order the memory space lists them: row after row). elems[0..me)
 * are the elements, for the points. Caller holds the lock. Returns 0 or
 * -ML_EHDF5 / -ENOMEM. */
static int select_rows(const ml_vlen *V, hid_t fspace, const uint64_t *uniq, size_t m, const uint64_t *elems,
                       size_t me) {
    uint64_t step;
    if (V->ndim == 0)
        return H5Sselect_all(fspace) < 0 ? -ML_EHDF5 : 0;
    if (is_progression(uniq, m, &step)) {
        hsize_t start[ML_MAX_DIMS], stride[ML_MAX_DIMS], count[ML_MAX_DIMS];
        for (unsigned d = 0; d < V->ndim; d++) {
            start[d] = 0;
            stride[d] = 1;
            count[d] = V->dims[d];
        }
        start[0] = uniq[0];
        stride[0] = step;
        count[0] = m;
        return H5Sselect_hyperslab(fspace, H5S_SELECT_SET, start, stride, count, NULL) < 0 ? -ML_EHDF5 : 0;
    }
    size_t nd = V->ndim, bytes;
    hsize_t *coords = NULL;
    if (__builtin_mul_overflow(me, nd * sizeof *coords, &bytes) || !(coords = malloc(bytes)))
        return -ENOMEM;
    for (size_t i = 0; i < me; i++) {
        uint64_t e = elems[i];
        for (size_t d = nd; d-- > 0;) {
            coords[i * nd + d] = e % V->dims[d];
            e /= V->dims[d];
        }
    }
    int rc = H5Sselect_elements(fspace, H5S_SELECT_SET, me, coords) < 0 ? -ML_EHDF5 : 0;
    free(coords);
    return rc;
}

int ml_vlen_read(ml_vlen *V, const uint64_t *rows, size_t n, uint64_t *counts, void **data,
                 size_t *nbytes, ml_error *err) {
    uint64_t *uniq = NULL, *elems = NULL;
    void *seqs = NULL; /* hvl_t[m] (VLArrays) or char *[me] (strings): HDF5's allocations until reclaimed */
    unsigned char *outp = NULL;
    hid_t fspace = -1, mspace = -1;
    size_t m = 0, me = 0, total = 0, esize = V->base->size, inner = (size_t)V->inner, cells;
    int rc = 0, read_done = 0;
    *data = NULL;
    *nbytes = 0;
    for (size_t i = 0; i < n; i++)
        if (rows[i] >= V->n_rows)
            return ml_error_set(err, -ML_EINVAL, "row %llu out of range of variable-length dataset '%s' "
                                "of file '%s' with %llu rows", (unsigned long long)rows[i], V->path,
                                V->filename, (unsigned long long)V->n_rows);
    if (__builtin_mul_overflow(n, inner, &cells) || cells > SIZE_MAX / 16)
        return ml_error_set(err, -ENOMEM, "%zu rows of dataset '%s' exceed the address space", n, V->path);
    if (cells == 0) {
        *data = malloc(1);
        return *data ? 0 : ml_error_set(err, -ENOMEM, "out of memory");
    }
    /* The distinct rows, sorted: HDF5 reads each once, in file order. */
    uniq = malloc(n * sizeof *uniq);
    if (!uniq) {
        rc = ml_error_set(err, -ENOMEM, "out of memory for %zu rows", n);
        goto out;
    }
    memcpy(uniq, rows, n * sizeof *uniq);
    qsort(uniq, n, sizeof *uniq, cmp_u64);
    for (size_t i = 0; i < n; i++)
        if (m == 0 || uniq[i] != uniq[m - 1])
            uniq[m++] = uniq[i];
    me = m * inner; /* <= cells */
    if (inner == 1)
        elems = uniq;
    else if ((elems = malloc(me * sizeof *elems)))
        for (size_t k = 0; k < m; k++)
            for (size_t j = 0; j < inner; j++)
                elems[k * inner + j] = uniq[k] * inner + j;
    /* zeroed: reclaiming an entry never read is a no-op */
    seqs = V->is_string ? calloc(me, sizeof(char *)) : calloc(m, sizeof(hvl_t));
    if (!seqs || !elems) {
        rc = ml_error_set(err, -ENOMEM, "out of memory for %zu rows", m);
        goto out;
    }
    rc = check_rows(V, elems, me, err); /* before HDF5 follows any heap reference */
    if (rc < 0)
        goto out;

    ml_h5_lock();
    hsize_t count = me;
    fspace = H5Dget_space((hid_t)V->h5_dset);
    mspace = H5Screate_simple(1, &count, NULL);
    if (fspace < 0 || mspace < 0)
        rc = -ML_EHDF5;
    else
        rc = select_rows(V, fspace, uniq, m, elems, me);
    if (rc == 0) {
        read_done = 1; /* from here on, seqs may hold HDF5's allocations */
        if (H5Dread((hid_t)V->h5_dset, (hid_t)V->h5_mtype, mspace, fspace, H5P_DEFAULT, seqs) < 0)
            rc = -ML_EHDF5;
    }
    ml_h5_unlock();
    if (rc < 0) {
        ml_error_set(err, rc, "HDF5 failed to read %zu rows of variable-length dataset '%s' of file '%s'", m,
                     V->path, V->filename);
        goto out;
    }

    /* Copy out without the lock: seqs is ours until reclaimed. A string is
     * its bytes up to the NUL HDF5 ends it with (what h5py gives); a null
     * element (never written) is empty. */
    char **strs = seqs;
    const hvl_t *vl = seqs;
    for (size_t i = 0; i < n; i++) {
        size_t k = find_row(uniq, m, rows[i]), b;
        for (size_t j = 0; j < inner; j++) {
            if (V->is_string)
                b = strs[k * inner + j] ? strlen(strs[k * inner + j]) : 0;
            else if (__builtin_mul_overflow(vl[k].len, esize, &b))
                b = SIZE_MAX;
            counts[i * inner + j] = V->is_string ? b : vl[k].len;
            if (__builtin_add_overflow(total, b, &total)) {
                rc = ml_error_set(err, -ENOMEM, "%zu rows of variable-length dataset '%s' exceed the address space",
                                  n, V->path);
                goto out;
            }
        }
    }
    outp = malloc(total ? total : 1);
    if (!outp) {
        rc = ml_error_set(err, -ENOMEM, "out of memory for %zu bytes of variable-length dataset '%s'", total,
                          V->path);
        goto out;
    }
    size_t off = 0;
    for (size_t i = 0; i < n; i++) {
        size_t k = find_row(uniq, m, rows[i]);
        for (size_t j = 0; j < inner; j++) {
            size_t b = V->is_string ? (size_t)counts[i * inner + j] : vl[k].len * esize;
            if (b)
                memcpy(outp + off, V->is_string ? (const void *)strs[k * inner + j] : vl[k].p, b);
            off += b;
        }
    }
    *data = outp;
    *nbytes = total;
    outp = NULL;
out:
    if (read_done || fspace >= 0 || mspace >= 0) {
        ml_h5_lock();
        if (read_done && vlen_reclaim((hid_t)V->h5_mtype, mspace, seqs) < 0 && rc == 0)
            rc = ml_error_set(err, -ML_EHDF5, "HDF5 failed to free the rows read from '%s'", V->path);
        if (mspace >= 0)
            H5Sclose(mspace);
        if (fspace >= 0)
            H5Sclose(fspace);
        ml_h5_unlock();
    }
    if (rc < 0 && *data) {
        free(*data);
        *data = NULL;
        *nbytes = 0;
    }
    free(outp);
    free(seqs);
    if (elems != uniq)
        free(elems);
    free(uniq);
    return rc;
}
