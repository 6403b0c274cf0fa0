/* plan.h - what fuzz_read.c (multiload) and ref_read.c (plain HDF5) both
 * read from each dataset, and how they print it, so that fuzz/run.py can
 * compare the two line by line.
 *
 * The plan depends only on the dataset's row count and row size, which
 * both programs learn independently (the core from its own parse, the
 * reference from HDF5): when they disagree the "D" lines differ and the
 * runner says so before comparing any block. A plan reads at most
 * PLAN_BLOCKS blocks of at most PLAN_BLOCK_BYTES each, so a file that
 * claims 2^62 rows costs the same as a small one: all rows of a small
 * dataset, else blocks spread from the first row to the last.
 *
 * Output lines (one per fact; fields separated by one space):
 *   D <path> rows <n_rows> rb <row_bytes>
 *   B <path> <tag> <k> <row0> <n> ok <crc32> <bytes>
 *   B <path> <tag> <k> <row0> <n> err <code> <message>
 *   E <path> <tag> err <code> <message>        (open failed: no blocks)
 *   S <path> <tag> skip <why>                  (this path not run, e.g. too large)
 * Paths are printed escaped (plan_print_path) since a mutated heap can give
 * a name any bytes; run.py unescapes them to pass them back as arguments.
 * Header-only: both programs are one translation unit each.
 */
#ifndef FUZZ_PLAN_H
#define FUZZ_PLAN_H

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <zlib.h>

#define PLAN_BLOCKS 8
#define PLAN_BLOCK_BYTES (128u << 10)
#define PLAN_MAX_DATASETS 32
/* A variable-length dataset's rows have no fixed size: plan them as if
 * they had this many bytes, on both sides. */
#define PLAN_VLEN_ROW_BYTES 64

typedef struct plan {
    unsigned n;                   /* blocks, 0..PLAN_BLOCKS */
    int whole;                    /* 1: the blocks cover every row, in order */
    uint64_t block_rows;          /* rows in a full block */
    uint64_t row0[PLAN_BLOCKS];
    uint64_t count[PLAN_BLOCKS];
} plan;

/* 0, or -1 when one row alone is larger than a block (nothing is read). */
static inline int plan_make(plan *p, uint64_t n_rows, uint64_t row_bytes) {
    memset(p, 0, sizeof *p);
    if (n_rows == 0)
        return 0;
    uint64_t cap = row_bytes ? PLAN_BLOCK_BYTES / row_bytes : UINT64_MAX;
    if (cap == 0)
        return -1;
    uint64_t b = (n_rows + PLAN_BLOCKS - 1) / PLAN_BLOCKS;
    if (b > cap)
        b = cap;
    p->block_rows = b;
    if (n_rows <= (uint64_t)PLAN_BLOCKS * b) {
        p->whole = 1;
        for (uint64_t r = 0; r < n_rows; r += b, p->n++) {
            p->row0[p->n] = r;
            p->count[p->n] = n_rows - r < b ? n_rows - r : b;
        }
        return 0;
    }
    /* sampled: the first block at row 0, the last one ending at the last row */
    uint64_t stride = (n_rows - b) / (PLAN_BLOCKS - 1);
    for (p->n = 0; p->n < PLAN_BLOCKS; p->n++) {
        p->row0[p->n] = p->n == PLAN_BLOCKS - 1 ? n_rows - b : p->n * stride;
        p->count[p->n] = b;
    }
    return 0;
}

static inline uint32_t plan_crc(uint32_t crc, const void *data, size_t len) {
    const unsigned char *d = data;
    while (len) {
        unsigned step = len > (1u << 30) ? 1u << 30 : (unsigned)len;
        crc = (uint32_t)crc32(crc, d, step);
        d += step;
        len -= step;
    }
    return crc;
}

/* Bytes other than [!-~] except '%' as %XX: one token, reversible. */
static inline void plan_print_path(FILE *out, const char *path) {
    for (const unsigned char *c = (const unsigned char *)path; *c; c++) {
        if (*c > ' ' && *c < 0x7f && *c != '%')
            fputc(*c, out);
        else
            fprintf(out, "%%%02X", *c);
    }
}

/* A message on one line: newlines and other control bytes become '?'. */
static inline void plan_print_msg(FILE *out, const char *msg) {
    for (const unsigned char *c = (const unsigned char *)msg; *c; c++)
        fputc(*c < ' ' ? '?' : *c, out);
}

static inline void plan_print_ok(FILE *out, const char *path, const char *tag, unsigned k,
                                 uint64_t row0, uint64_t n, const void *data, size_t len) {
    fputs("B ", out);
    plan_print_path(out, path);
    fprintf(out, " %s %u %llu %llu ok %08x %zu\n", tag, k, (unsigned long long)row0,
            (unsigned long long)n, plan_crc(0, data, len), len);
}

static inline void plan_print_err(FILE *out, const char *path, const char *tag, unsigned k,
                                  uint64_t row0, uint64_t n, int code, const char *msg) {
    fputs("B ", out);
    plan_print_path(out, path);
    fprintf(out, " %s %u %llu %llu err %d ", tag, k, (unsigned long long)row0,
            (unsigned long long)n, code);
    plan_print_msg(out, msg);
    fputc('\n', out);
}

static inline void plan_print_open_err(FILE *out, const char *path, const char *tag, int code,
                                       const char *msg) {
    fputs("E ", out);
    plan_print_path(out, path);
    fprintf(out, " %s err %d ", tag, code);
    plan_print_msg(out, msg);
    fputc('\n', out);
}

static inline void plan_print_shape(FILE *out, const char *path, uint64_t n_rows,
                                    uint64_t row_bytes) {
    fputs("D ", out);
    plan_print_path(out, path);
    fprintf(out, " rows %llu rb %llu\n", (unsigned long long)n_rows,
            (unsigned long long)row_bytes);
}

#endif
