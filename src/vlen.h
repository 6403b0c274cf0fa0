/* vlen.h - variable-length datasets (PyTables VLArray): each row is a
 * sequence of any length of one element type. Rows are read with H5Dread
 * under the HDF5 lock and copied out concatenated, with one element count
 * per row. The element type is any type the core describes (ml_type), in
 * the file's byte order. Variable-length strings (H5T_STRING of variable
 * size: h5py's string_dtype, netCDF4's str) are the same storage, one
 * string per element, of any shape (0-d to ML_MAX_DIMS): they are read
 * by rows of the first axis (a 0-d dataset is one row), each row its
 * `inner` strings, one byte count per string. Before HDF5 follows a row's reference into the
 * global heap, the core reads the row's descriptor and the heap itself and
 * checks them (vlen.c, gheap.c): a damaged heap is corrupt data, never a
 * crash inside HDF5.
 */
#ifndef ML_VLEN_H
#define ML_VLEN_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "layout.h"

typedef struct ml_vlen {
    char *filename;          /* owned, for messages */
    char *path;              /* owned, dataset path as given */
    uint64_t n_rows;         /* VLArrays: the dataset's length (1-D only); strings: dims[0], 1 when 0-d */
    ml_type *base;           /* owned: element type, as h5py names it (strings: a 1-byte uint, a char) */
    size_t elem_size;        /* bytes of one element in the file: a row's heap object is count × this */
    int is_string;           /* 1: variable-length strings (H5T_STRING); 0: a VLArray (H5T_VLEN) */
    int str_utf8;            /* strings: 1 UTF-8, 0 ASCII (the character set HDF5 stores) */
    int str_pad;             /* strings: H5T_str_t, the padding HDF5 stores (h5py writes NULLTERM) */
    unsigned ndim;           /* dimensions: 1 for VLArrays; strings 0..ML_MAX_DIMS */
    uint64_t dims[ML_MAX_DIMS]; /* the shape (ndim of them) */
    uint64_t inner;          /* descriptors per row: product of dims[1..ndim) (1 when ndim <= 1; 0 when one is 0) */
    uint64_t n_elems;        /* descriptors in all: n_rows × inner, × desc_size below 2^63 */
    /* Where the rows' descriptors (count, heap address, object index) are */
    int chunked;             /* 0: contiguous at `offset`; 1: chunks of chunk_rows rows */
    uint64_t offset;         /* contiguous: file offset of row 0's descriptor; UINT64_MAX: never written */
    uint64_t chunk_rows;     /* chunked: rows per chunk, >= 1 (chunk_dims[0]) */
    uint64_t chunk_dims[ML_MAX_DIMS]; /* chunked: the chunk's shape, ndim entries, each >= 1 */
    uint64_t chunk_elems;    /* chunked: descriptors per chunk, their bytes below 4 GiB */
    int n_filters;           /* chunked: the pipeline, in the order applied on write */
    struct {
        int id;              /* ML_FILTER_DEFLATE / _SHUFFLE / _FLETCHER32 */
        unsigned elem;       /* shuffle: its element size; 0: none (refused where applied) */
    } filters[8];
    int unchecked;           /* 1: a filter only HDF5 can undo: descriptors and heap trusted to HDF5 */
    /* The dataset's own file (an external link's target), read through a byte source */
    ml_source *src;          /* owned reference: on a duplicate of the descriptor HDF5 reads the file with */
    uint64_t h5_base;        /* the user block's size: heap addresses are relative to it */
    uint64_t limit;          /* bytes a heap may reach past h5_base: min(file size - base, EOA) */
    unsigned sizeof_addr, sizeof_size; /* bytes of an address (2..8) and a length (2..8) */
    size_t desc_size;        /* bytes of one descriptor: 4 + sizeof_addr + 4 */
    /* HDF5 handles, used only under the HDF5 lock */
    int64_t h5_file, h5_dset;
    int64_t h5_mtype;        /* memory type: vlen of the file's own element type; strings: char *,
                              * a variable-length string of the file's character set and padding */
} ml_vlen;

/* Open `path` in `filename` read-only and describe it. The handle is
 * immutable after open: any number of threads may read through it at once
 * (each read takes the HDF5 lock). On success *out is a new handle the
 * caller owns (ml_vlen_close), or NULL when `path` names an object that is
 * not a variable-length dataset (a group, or a dataset of another type:
 * the caller says so in its own words). Errors: as ml_layout_open opening
 * the file and path (-ENOENT, -ML_ENOTHDF5, -ML_ENOTFOUND, ...), and for a
 * variable-length dataset the core cannot read: -ML_ETYPE (element type,
 * e.g. nested sequences, or a compound holding a variable-length string,
 * named; compact, external or virtual storage, whose descriptors cannot be
 * read raw), -ML_ESHAPE (a VLArray not 1-D; a null dataspace),
 * -ML_ECORRUPT (contiguous storage of another size than the rows need);
 * detail in err. */
int ml_vlen_open(const char *filename, const char *path, ml_vlen **out, ml_error *err);

/* Close a handle. Accepts NULL. Takes the HDF5 lock. */
void ml_vlen_close(ml_vlen *V);

/* Read the rows rows[0..n) (any order, duplicates allowed, each below
 * V->n_rows): counts[i] receives the element count of row rows[i], and
 * *data a new malloc'd buffer (the caller frees it with free(); never NULL
 * on success, even when empty) of every row's elements, row after row, in
 * the order given; *nbytes its length. Borrows rows and counts. Before
 * H5Dread, every requested row's descriptor and the global heap collection
 * it names are checked (vlen.c's opening comment lists what). Returns 0,
 * -ML_EINVAL (a row out of range), -ML_ECORRUPT (a damaged descriptor or
 * heap: err names file, dataset, row and what is wrong), -ML_ECHECKSUM,
 * -ML_ETRUNC, -errno from reading the file, -ENOMEM or -ML_EHDF5.
 * Strings: counts has n × V->inner entries, row i's strings at
 * counts[i × inner ..], each the byte count of one string (what h5py
 * gives: the bytes up to the first NUL; a null element, never written,
 * 0), and *data their bytes, one after another in the same order. */
int ml_vlen_read(ml_vlen *V, const uint64_t *rows, size_t n, uint64_t *counts, void **data,
                 size_t *nbytes, ml_error *err);

#endif
