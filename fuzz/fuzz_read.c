/* fuzz_read.c - the multiload side of one fuzz case: open every dataset of
 * a (mutated) file with the core and read the plan's blocks (plan.h)
 * through every way the core reads rows, printing a CRC or the error of
 * each. fuzz/run.py compares the lines with ref_read.c's, HDF5's own read.
 *
 * Built with ASan + UBSan against the core's sources (Makefile, like the C
 * tests), so a bad access is a report and a non-zero exit, not a silent
 * wrong byte. One case per process: nothing of one hostile file can leak
 * into the next. The paths through the core, each tagged in the output:
 *   A  ml_fetch_rows, block by block (the one data path)
 *   M  ml_fetch_rows_multi, every block in one call (shared I/O batches)
 *   S  the Streamer (worker threads, ring), when the plan covers all rows
 *   R  the Reader engine, one range request per block
 *   L  the Reader engine, the block's rows as a reversed list (its list
 *      path), put back in order before the CRC
 *   V  ml_vlen_read, for variable-length datasets (PyTables VLArray)
 * Every wait is bounded (WAIT_MS), so a stuck worker shows as an error
 * line, and run.py's time limit catches a stuck read.
 *
 * Usage: fuzz_read FILE [PATH...]   (no paths: every dataset, by H5Ovisit)
 * Exit 0 whatever the file holds; a sanitizer report exits non-zero.
 */
#include <errno.h>
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "fetch.h"
#include "h5.h"
#include "reader.h"
#include "ring.h"
#include "streamer.h"
#include "vlen.h"

#include "plan.h"
#include "visit.h"

#define WAIT_MS 8000

static ml_reader *g_reader;

static void read_fetcher(ml_layout *L, const char *path, const plan *p, void **bufs) {
    ml_error err;
    ml_fetcher *f = NULL;
    ml_error_clear(&err);
    int rc = ml_fetcher_open(&f, L, ML_IO_AUTO, &err);
    if (rc) {
        plan_print_open_err(stdout, path, "A", rc, err.msg);
        return;
    }
    for (unsigned k = 0; k < p->n; k++) {
        ml_error_clear(&err);
        rc = ml_fetch_rows(f, p->row0[k], p->count[k], bufs[k], &err);
        if (rc)
            plan_print_err(stdout, path, "A", k, p->row0[k], p->count[k], rc, err.msg);
        else
            plan_print_ok(stdout, path, "A", k, p->row0[k], p->count[k], bufs[k],
                          p->count[k] * L->row_bytes);
    }
    ml_row_run runs[PLAN_BLOCKS];
    for (unsigned k = 0; k < p->n; k++)
        runs[k] = (ml_row_run){.start = p->row0[k], .count = p->count[k]};
    for (unsigned k = 0; k < p->n; k++)
        memset(bufs[k], 0xa5, p->count[k] * L->row_bytes);
    ml_error_clear(&err);
    rc = ml_fetch_rows_multi(f, runs, bufs, p->n, &err);
    for (unsigned k = 0; k < p->n; k++) {
        if (rc)
            plan_print_err(stdout, path, "M", k, p->row0[k], p->count[k], rc, err.msg);
        else
            plan_print_ok(stdout, path, "M", k, p->row0[k], p->count[k], bufs[k],
                          p->count[k] * L->row_bytes);
    }
    ml_fetcher_close(f);
}

static void read_streamer(ml_layout *L, const char *path, const plan *p) {
    if (!p->whole) {
        printf("S ");
        plan_print_path(stdout, path);
        printf(" S skip sampled\n");
        return;
    }
    ml_stream_config cfg = {.n_workers = 2, .ordered = 1, .io_mode = ML_IO_AUTO};
    ml_schedule sch;
    ml_schedule_params sp = {.n_rows = L->n_rows, .block_rows = p->block_rows, .remainder = 1};
    ml_stream *s = NULL;
    ml_ring *ring = NULL;
    ml_error err;
    ml_error_clear(&err);
    int rc = ml_schedule_init(&sch, &sp);
    if (rc)
        ml_error_set(&err, rc, "invalid stream configuration");
    if (rc == 0)
        rc = ml_stream_ring_new(&ring, L, &sch, 2, ML_RING_PRIVATE, &err);
    if (rc == 0)
        rc = ml_stream_open(&s, L, ring, &sch, &cfg, &err);
    ml_ring_unref(ring);
    if (rc) {
        plan_print_open_err(stdout, path, "S", rc, err.msg);
        return;
    }
    for (unsigned got = 0; got <= p->n; got++) {
        ml_taken t;
        rc = ml_stream_take(s, 1, WAIT_MS, &t);
        if (rc == -ML_EEND)
            break;
        if (rc) {
            plan_print_open_err(stdout, path, "S", rc, "ml_stream_take failed");
            break;
        }
        uint64_t row0 = t.seq * p->block_rows;
        unsigned k = (unsigned)t.seq;
        if (t.error.code)
            plan_print_err(stdout, path, "S", k, row0, t.rows, t.error.code, t.error.msg);
        else
            plan_print_ok(stdout, path, "S", k, row0, t.rows, t.data, t.rows * L->row_bytes);
        ml_ring_release(ml_stream_ring(s), t.slot);
    }
    ml_stream_free(s);
}

/* One request: a range, or (reversed = 1) the same rows listed last to first. */
static void read_request(ml_layout *L, const char *path, const plan *p, unsigned k, int reversed,
                         void *buf, void *tmp) {
    const char *tag = reversed ? "L" : "R";
    uint64_t n = p->count[k];
    uint64_t *rows = NULL;
    if (reversed) {
        rows = malloc(n * sizeof *rows);
        if (!rows) {
            plan_print_err(stdout, path, tag, k, p->row0[k], n, -ENOMEM, "no memory for rows");
            return;
        }
        for (uint64_t i = 0; i < n; i++)
            rows[i] = p->row0[k] + n - 1 - i;
    }
    size_t bytes = n * L->row_bytes;
    ml_request_spec spec = {.L = L, .rows = rows, .row0 = p->row0[k], .n_rows = n,
                            .dest = reversed ? tmp : buf, .dest_bytes = bytes};
    ml_request *q = NULL;
    ml_error err;
    ml_error_clear(&err);
    int rc = ml_request_submit(g_reader, &spec, &q, &err);
    if (rc == 0) {
        if (ml_request_wait(q, WAIT_MS)) {
            /* the worker may still write into buf: leave it (and the process) to run.py's limit */
            plan_print_err(stdout, path, tag, k, p->row0[k], n, -ETIMEDOUT, "request timed out");
            fflush(stdout);
            ml_request_wait(q, -1);
        }
        rc = ml_request_error(q)->code;
        if (rc)
            snprintf(err.msg, sizeof err.msg, "%s", ml_request_error(q)->msg);
    }
    if (rc) {
        plan_print_err(stdout, path, tag, k, p->row0[k], n, rc, err.msg);
    } else {
        if (reversed)
            for (uint64_t i = 0; i < n; i++)
                memcpy((char *)buf + i * L->row_bytes, (char *)tmp + (n - 1 - i) * L->row_bytes,
                       L->row_bytes);
        plan_print_ok(stdout, path, tag, k, p->row0[k], n, buf, bytes);
    }
    ml_request_free(q);
    free(rows);
}

static void read_layout(ml_layout *L, const char *path) {
    plan p;
    plan_print_shape(stdout, path, L->n_rows, L->row_bytes);
    if (plan_make(&p, L->n_rows, L->row_bytes)) {
        printf("S ");
        plan_print_path(stdout, path);
        printf(" * skip row too large\n");
        return;
    }
    void *bufs[PLAN_BLOCKS] = {0}, *tmp = malloc(PLAN_BLOCK_BYTES + 1);
    for (unsigned k = 0; k < p.n; k++)
        bufs[k] = malloc(p.count[k] * L->row_bytes + 1);
    read_fetcher(L, path, &p, bufs);
    read_streamer(L, path, &p);
    for (unsigned k = 0; k < p.n && g_reader; k++) {
        read_request(L, path, &p, k, 0, bufs[k], tmp);
        read_request(L, path, &p, k, 1, bufs[k], tmp);
    }
    for (unsigned k = 0; k < p.n; k++)
        free(bufs[k]);
    free(tmp);
}

static void read_vlen(ml_vlen *V, const char *path) {
    plan p;
    plan_print_shape(stdout, path, V->n_rows, 0);
    plan_make(&p, V->n_rows, PLAN_VLEN_ROW_BYTES);
    for (unsigned k = 0; k < p.n; k++) {
        uint64_t n = p.count[k], *rows = malloc(n * sizeof *rows), *counts = calloc(n, sizeof *counts);
        void *data = NULL;
        size_t nbytes = 0;
        ml_error err;
        ml_error_clear(&err);
        int rc = -ENOMEM;
        if (rows && counts) {
            for (uint64_t i = 0; i < n; i++)
                rows[i] = p.row0[k] + i;
            rc = ml_vlen_read(V, rows, n, counts, &data, &nbytes, &err);
        }
        if (rc) {
            plan_print_err(stdout, path, "V", k, p.row0[k], n, rc, err.msg);
        } else {
            /* the CRC of the counts (as uint64) then of the elements: what ref_read.c hashes */
            uint32_t crc = plan_crc(plan_crc(0, counts, n * sizeof *counts), data, nbytes);
            fputs("B ", stdout);
            plan_print_path(stdout, path);
            printf(" V %u %llu %llu ok %08x %zu\n", k, (unsigned long long)p.row0[k],
                   (unsigned long long)n, crc, nbytes + n * sizeof *counts);
        }
        free(data);
        free(rows);
        free(counts);
    }
}

static void read_dataset(const char *filename, const char *path) {
    ml_layout *L = NULL;
    ml_error err;
    ml_error_clear(&err);
    int rc = ml_layout_open(filename, path, &L, &err);
    if (rc == 0) {
        read_layout(L, path);
        ml_layout_unref(L);
        return;
    }
    if (rc != -ML_ETYPE) {
        plan_print_open_err(stdout, path, "*", rc, err.msg);
        return;
    }
    /* a type the streaming path refuses may be a VLArray's, as multiload/reader.py does it */
    ml_vlen *V = NULL;
    ml_error verr;
    ml_error_clear(&verr);
    rc = ml_vlen_open(filename, path, &V, &verr);
    if (rc)
        plan_print_open_err(stdout, path, "*", rc, verr.msg);
    else if (!V)
        plan_print_open_err(stdout, path, "*", -ML_ETYPE, err.msg);
    else
        read_vlen(V, path);
    ml_vlen_close(V);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s FILE [PATH...]\n", argv[0]);
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0); /* lines before a crash still reach run.py */
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    ml_reader_config rcfg = {.n_workers = 2, .cache_bytes = 1 << 20, .inline_reads = 1};
    ml_error err;
    ml_error_clear(&err);
    if (ml_reader_open(&g_reader, &rcfg, &err))
        fprintf(stderr, "fuzz_read: no Reader (%s): R and L paths skipped\n", err.msg);
    visit_list v;
    visit_args(argc, argv, &v);
    for (unsigned i = 0; i < v.n; i++)
        read_dataset(argv[1], v.paths[i]);
    visit_free(&v);
    ml_reader_free(g_reader);
    H5close(); /* HDF5's own allocations freed, so a leak report is ours */
    return 0;
}
