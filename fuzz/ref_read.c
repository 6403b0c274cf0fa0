/* ref_read.c - the oracle of one fuzz case: HDF5's own read of the blocks
 * fuzz_read.c reads (plan.h), on the same HDF5 library the core links.
 *
 * Each block is one H5Dread of a hyperslab of whole rows with the file's
 * own datatype as the memory type, exactly as the core's slow path
 * (ml_layout_read_slow, src/h5open.c) asks for it, so no conversion
 * stands between the bytes HDF5 returns and the ones multiload should.
 * Variable-length datasets are read as vlen.c reads them (a vlen of the
 * file's base type), hashed as counts (uint64) then elements.
 *
 * A separate, unsanitized process: HDF5 1.10.8 itself crashes or loops on
 * some hostile files, and that must cost only this process (run.py calls
 * the outcome hdf5-crash and still requires multiload not to crash).
 *
 * Usage: ref_read FILE [PATH...]   (no paths: every dataset, by H5Ovisit)
 */
#include <hdf5.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plan.h"
#include "ref_filters.h"
#include "visit.h"

/* What the read buffer holds before each H5Dread (REF_FILL, default 0).
 * HDF5 leaves some bytes unwritten (a fill time of "never", some damaged
 * chunks): run.py reads twice with two fills, and a block whose bytes
 * change with the fill is undefined, not a disagreement. */
static int g_fill;

/* Row bytes as HDF5 sees them, or 0 with *overflow set. */
static uint64_t row_bytes_of(hid_t space, hid_t type, uint64_t *n_rows, int *overflow) {
    hsize_t dims[H5S_MAX_RANK];
    int nd = H5Sget_simple_extent_dims(space, dims, NULL);
    uint64_t rb = H5Tget_size(type);
    *overflow = nd < 0 || rb == 0;
    *n_rows = nd > 0 ? dims[0] : 1; /* a scalar is one row */
    for (int d = 1; d < nd; d++) {
        if (dims[d] && rb > UINT64_MAX / dims[d])
            *overflow = 1;
        rb *= dims[d];
    }
    return rb;
}

static int select_rows(hid_t fspace, hsize_t row0, hsize_t n, hid_t *mspace) {
    hsize_t start[H5S_MAX_RANK] = {0}, count[H5S_MAX_RANK];
    int nd = H5Sget_simple_extent_ndims(fspace);
    if (nd <= 0) { /* scalar: the whole dataspace */
        *mspace = H5Screate(H5S_SCALAR);
        return *mspace < 0 ? -1 : 0;
    }
    H5Sget_simple_extent_dims(fspace, count, NULL);
    start[0] = row0;
    count[0] = n;
    *mspace = H5Screate_simple(nd, count, NULL);
    if (*mspace < 0)
        return -1;
    return H5Sselect_hyperslab(fspace, H5S_SELECT_SET, start, NULL, count, NULL) < 0 ? -1 : 0;
}

static void read_fixed(hid_t dset, hid_t space, hid_t type, const char *path) {
    uint64_t n_rows;
    int overflow;
    uint64_t rb = row_bytes_of(space, type, &n_rows, &overflow);
    if (overflow) {
        plan_print_open_err(stdout, path, "H", -1, "row size overflows or is zero");
        return;
    }
    plan_print_shape(stdout, path, n_rows, rb);
    plan p;
    if (plan_make(&p, n_rows, rb)) {
        printf("S ");
        plan_print_path(stdout, path);
        printf(" * skip row too large\n");
        return;
    }
    void *buf = malloc(PLAN_BLOCK_BYTES + 1);
    for (unsigned k = 0; k < p.n && buf; k++) {
        hid_t mspace = -1, fspace = H5Scopy(space);
        memset(buf, g_fill, p.count[k] * rb);
        if (fspace >= 0 && select_rows(fspace, p.row0[k], p.count[k], &mspace) == 0 &&
            H5Dread(dset, type, mspace, fspace, H5P_DEFAULT, buf) >= 0)
            plan_print_ok(stdout, path, "H", k, p.row0[k], p.count[k], buf, p.count[k] * rb);
        else
            plan_print_err(stdout, path, "H", k, p.row0[k], p.count[k], -1, "H5Dread failed");
        if (mspace >= 0)
            H5Sclose(mspace);
        if (fspace >= 0)
            H5Sclose(fspace);
    }
    free(buf);
}

static void read_vlen(hid_t dset, hid_t space, hid_t type, const char *path) {
    hsize_t dims[H5S_MAX_RANK];
    if (H5Sget_simple_extent_ndims(space) != 1 || H5Sget_simple_extent_dims(space, dims, NULL) != 1) {
        plan_print_open_err(stdout, path, "H", -1, "vlen dataset not 1-D");
        return;
    }
    plan_print_shape(stdout, path, dims[0], 0);
    hid_t super = H5Tget_super(type);
    hid_t mtype = super >= 0 ? H5Tvlen_create(super) : -1;
    size_t esize = super >= 0 ? H5Tget_size(super) : 0;
    plan p;
    plan_make(&p, dims[0], PLAN_VLEN_ROW_BYTES);
    for (unsigned k = 0; k < p.n; k++) {
        uint64_t n = p.count[k];
        hvl_t *seqs = calloc(n, sizeof *seqs);
        uint64_t *counts = calloc(n, sizeof *counts);
        hid_t mspace = -1, fspace = H5Scopy(space);
        int ok = mtype >= 0 && seqs && counts && fspace >= 0 &&
                 select_rows(fspace, p.row0[k], n, &mspace) == 0 &&
                 H5Dread(dset, mtype, mspace, fspace, H5P_DEFAULT, seqs) >= 0;
        if (ok) {
            size_t total = 0;
            for (uint64_t i = 0; i < n; i++) {
                counts[i] = seqs[i].len;
                total += seqs[i].len * esize;
            }
            uint32_t crc = plan_crc(0, counts, n * sizeof *counts);
            for (uint64_t i = 0; i < n; i++)
                crc = plan_crc(crc, seqs[i].p, seqs[i].len * esize);
            fputs("B ", stdout);
            plan_print_path(stdout, path);
            printf(" H %u %llu %llu ok %08x %zu\n", k, (unsigned long long)p.row0[k],
                   (unsigned long long)n, crc, total + n * sizeof *counts);
            H5Dvlen_reclaim(mtype, mspace, H5P_DEFAULT, seqs);
        } else {
            plan_print_err(stdout, path, "H", k, p.row0[k], n, -1, "H5Dread failed");
        }
        if (mspace >= 0)
            H5Sclose(mspace);
        if (fspace >= 0)
            H5Sclose(fspace);
        free(seqs);
        free(counts);
    }
    if (mtype >= 0)
        H5Tclose(mtype);
    if (super >= 0)
        H5Tclose(super);
}

static void read_dataset(const char *filename, const char *path) {
    hid_t f = H5Fopen(filename, H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t dset = f >= 0 ? H5Dopen2(f, path, H5P_DEFAULT) : -1;
    hid_t space = dset >= 0 ? H5Dget_space(dset) : -1;
    hid_t type = dset >= 0 ? H5Dget_type(dset) : -1;
    if (f < 0)
        plan_print_open_err(stdout, path, "H", -1, "H5Fopen failed");
    else if (dset < 0 || space < 0 || type < 0)
        plan_print_open_err(stdout, path, "H", -1, "H5Dopen failed");
    else if (H5Tget_class(type) == H5T_VLEN)
        read_vlen(dset, space, type, path);
    else
        read_fixed(dset, space, type, path);
    if (type >= 0)
        H5Tclose(type);
    if (space >= 0)
        H5Sclose(space);
    if (dset >= 0)
        H5Dclose(dset);
    if (f >= 0)
        H5Fclose(f);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s FILE [PATH...]\n", argv[0]);
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0); /* lines before a crash still reach run.py */
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    g_fill = getenv("REF_FILL") ? atoi(getenv("REF_FILL")) & 0xff : 0;
    if (ref_filters_register())
        fprintf(stderr, "ref_read: cannot register the lzf and blosc decoders\n");
    visit_list v;
    visit_args(argc, argv, &v);
    for (unsigned i = 0; i < v.n; i++)
        read_dataset(argv[1], v.paths[i]);
    visit_free(&v);
    return 0;
}
