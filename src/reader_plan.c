/* reader_plan.c - how a request is read: its mode, its parts, and the
 * sort of its rows.
 *
 * The thread that takes a request (its executor) plans it before any byte
 * is read: it picks one of the four modes that reader_exec.c runs --
 * RANGE (a range of whole rows, or of whole bands), DIRECT (a strictly
 * increasing list of whole rows, read straight into dest), SCATTER (any
 * other list on data read row by row: sorted, merged into runs, copied to
 * place) or BANDS (data read by bands of c0 rows: each band decoded once)
 * -- sorts the rows when the list is not increasing, and cuts the work
 * into parts: disjoint slices of it, each written to its own bytes of
 * dest, which several threads may run at once (reader_dispatch.c).
 *
 * Invariants: parts cover [0, n) in order without overlap; parts of data
 * read by bands never split a band (so every band is read and decoded once
 * per request); a request is cut only when nothing else was queued when it
 * was taken (q->may_split: otherwise every worker has a request of its own
 * and parts would only add hand-offs) and only on data read in parallel.
 * The plan asks fetch.h how data is read (rows per band, parallel, one
 * read), never how it is stored. Workload: once per request, O(n) but for
 * the sort; the sort is a radix sort in the pairs' own memory.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "fault.h"
#include "reader_internal.h"

#define PART_MIN_ROWS 64      /* contiguous row lists: rows per part, at least */
#define PART_MIN_BYTES (256u << 10) /* ranges: bytes per part, at least */

static int pair_cmp(const void *a, const void *b) {
    const ml_pair *x = a, *y = b;
    if (x->row != y->row)
        return x->row < y->row ? -1 : 1;
    return x->pos < y->pos ? -1 : x->pos > y->pos;
}

/* Pairs pack into one 64-bit key (row above the bits of pos) when they
 * fit, and the keys are radix sorted inside p's own memory (2n words:
 * keys, then scratch) skipping bytes that are equal in every key: ~10x
 * faster than qsort for a few hundred rows, measured 3-4% of a random
 * 256-row request. */
void ml_pairs_sort(ml_pair *p, uint64_t n) {
    uint64_t maxrow = 0;
    for (uint64_t i = 0; i < n; i++)
        maxrow = p[i].row > maxrow ? p[i].row : maxrow;
    unsigned posbits = 1, rowbits = 1;
    while (posbits < 64 && (n - 1) >> posbits)
        posbits++;
    while (rowbits < 64 && maxrow >> rowbits)
        rowbits++;
    if (n < 2 || rowbits + posbits > 64) {
        if (n > 1)
            qsort(p, n, sizeof *p, pair_cmp);
        return;
    }
    uint64_t *k = (uint64_t *)p, *tmp = k + n, all_or = 0, all_and = ~(uint64_t)0;
    /* p[i] occupies words 2i, 2i+1 >= i: pack front to back */
    for (uint64_t i = 0; i < n; i++) {
        uint64_t key = p[i].row << posbits | p[i].pos;
        k[i] = key;
        all_or |= key;
        all_and &= key;
    }
    uint64_t *src = k, *dst = tmp;
    for (unsigned shift = 0; shift < 64; shift += 8) {
        if ((((all_or ^ all_and) >> shift) & 0xff) == 0)
            continue; /* this byte is the same in every key */
        size_t count[257] = {0};
        for (uint64_t i = 0; i < n; i++)
            count[((src[i] >> shift) & 0xff) + 1]++;
        for (unsigned b = 0; b < 256; b++)
            count[b + 1] += count[b];
        for (uint64_t i = 0; i < n; i++)
            dst[count[(src[i] >> shift) & 0xff]++] = src[i];
        uint64_t *t = src;
        src = dst;
        dst = t;
    }
    if (src != k)
        memcpy(k, src, n * sizeof *k);
    /* unpack back to front: p[i] overwrites words 2i, 2i+1 >= i, already read */
    uint64_t mask = ((uint64_t)1 << posbits) - 1;
    for (uint64_t i = n; i-- > 0;) {
        uint64_t key = k[i];
        p[i] = (ml_pair){key >> posbits, key & mask};
    }
}

/* Cut [0, n) into at most `max` parts of at least `min` rows; with c0,
 * only at k where row_k(q, k) starts a new band of c0 rows. */
static void cut_parts(ml_request *q, uint64_t n, uint64_t min, size_t max, uint64_t c0) {
    uint64_t want = n / max > min ? n / max : min;
    size_t np = 0;
    uint64_t k0 = 0;
    while (k0 < n) {
        uint64_t k1 = np + 1 == max || n - k0 <= want ? n : k0 + want;
        if (c0 && k1 < n) { /* move the cut to the next band boundary */
            uint64_t b = row_k(q, k1 - 1) / c0;
            while (k1 < n && row_k(q, k1) / c0 == b)
                k1++;
        }
        q->parts[np++] = (ml_part){k0, k1};
        k0 = k1;
    }
    q->n_parts = np;
}

int ml_request_plan(ml_request *q, unsigned n_threads, ml_error *err) {
    ml_layout *L = q->L;
    uint64_t n = q->n_rows;
    size_t max_parts = 2 * (size_t)n_threads < MAX_PARTS ? 2 * (size_t)n_threads : MAX_PARTS;
    /* With other requests queued, every worker has a request of its own:
     * cutting this one would only add hand-offs. */
    if (!q->may_split)
        max_parts = 1;
    uint64_t c0 = ml_fetch_band_rows(L); /* 0: rows are read one by one, not by bands */
    int chunked = c0 != 0;
    int splittable = ml_fetch_parallel(L);
    int whole = q->col_size == 0;
    q->n_parts = 1;
    q->parts[0] = (ml_part){0, n};
    if (!q->rows && whole && (!chunked || n >= c0)) {
        q->mode = M_RANGE;
        if (!splittable || n * L->row_bytes < 2 * (uint64_t)PART_MIN_BYTES)
            return 0;
        uint64_t min = PART_MIN_BYTES / L->row_bytes + 1;
        if (c0)
            min = (min + c0 - 1) / c0 * c0;
        /* cut at absolute band boundaries: every chunk stays in one part */
        uint64_t want = n / max_parts > min ? n / max_parts : min;
        size_t np = 0;
        uint64_t k0 = 0;
        while (k0 < n) {
            uint64_t k1 = np + 1 == max_parts || n - k0 <= want ? n : k0 + want;
            if (c0 && k1 < n)
                k1 = ((q->row0 + k1 + c0 - 1) / c0) * c0 - q->row0;
            if (k1 > n)
                k1 = n;
            q->parts[np++] = (ml_part){k0, k1};
            k0 = k1;
        }
        q->n_parts = np;
        return 0;
    }
    int increasing = 1;
    for (uint64_t i = 1; q->rows && i < n && increasing; i++)
        increasing = q->rows[i] > q->rows[i - 1];
    if (!chunked && whole && q->rows && increasing) {
        q->mode = M_DIRECT;
        if (splittable && n >= 2 * PART_MIN_ROWS)
            cut_parts(q, n, PART_MIN_ROWS, max_parts, 0);
        return 0;
    }
    if (!increasing) {
        q->pairs = ml_fault_alloc() < 0 ? NULL : malloc(n * sizeof *q->pairs);
        if (!q->pairs)
            return ml_request_oom(err, q);
        for (uint64_t i = 0; i < n; i++)
            q->pairs[i] = (ml_pair){row_at(q, i), i};
        ml_pairs_sort(q->pairs, n);
    }
    if (chunked) {
        q->mode = M_BANDS;
        if (row_k(q, 0) / c0 != row_k(q, n - 1) / c0)
            cut_parts(q, n, 1, max_parts, c0);
        return 0;
    }
    q->mode = M_SCATTER;
    if (splittable && n >= 2 * PART_MIN_ROWS)
        cut_parts(q, n, PART_MIN_ROWS, max_parts, 0);
    return 0;
}

int ml_request_small(const ml_request *q) {
    const ml_layout *L = q->L;
    return !q->rows && q->col_size == 0 && q->n_rows > 0 && ml_fetch_range_is_one_read(L) && L->row_bytes &&
           q->n_rows * L->row_bytes <= SMALL_BYTES;
}

uint64_t ml_request_work(const ml_request *q) {
    const ml_layout *L = q->L;
    uint64_t bytes = q->n_rows * L->row_bytes;
    uint64_t c0 = ml_fetch_band_rows(L);
    if (c0 && q->rows) {
        uint64_t bands = (L->n_rows + c0 - 1) / c0;
        bytes = (q->n_rows < bands ? q->n_rows : bands) * c0 * L->row_bytes;
    }
    return bytes;
}
