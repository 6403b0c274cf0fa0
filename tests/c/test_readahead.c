/* test_readahead.c - the Streamer's read-ahead of cold data (readahead.c)
 * and the hints it gives (fetch.c's ml_fetch_prefetch / ml_fetch_resident),
 * on real HDF5 layouts whose source is wrapped by a hint recorder: it
 * passes reads on, records every prefetch range, and answers "what is
 * resident" as a test sets it (all, nothing, cannot tell).
 *
 * Checked: a contiguous hint is exactly the rows' bytes, a chunked one
 * exactly the chunks the rows touch (adjacent chunks merged); the sample
 * is the page of the rows' last byte. With the cold path forced on, after
 * a worker has read block k every block up to k + window is hinted and none
 * past the step that covers it; each row (chunk) is hinted exactly once
 * over a stream, whether the schedule is sequential, permuted or cyclic
 * (hints never leave the dataset), and when two threads claim blocks at
 * once. AUTO: a resident stream gets no hint and is sampled less and less
 * often (1, 2, 4 steps skipped); a cold one gets a hint every step; a
 * source that cannot tell gets none. OFF: nothing. And the direct batch
 * and slot arithmetic. */
#include "check.h"

#include <pthread.h>
#include <stdatomic.h>

#include "fetch.h"
#include "h5.h"
#include "h5gen.h"
#include "h5internal.h"
#include "readahead.h"
#include "source.h"

/* ---- the hint recorder ---- */

enum { MAX_HINTS = 4096 };

typedef enum answer { ALL = 0, NOTHING = 1, UNKNOWN = 2 } answer;

typedef struct hint_source {
    ml_source base;
    ml_source *inner;            /* owned reference */
    pthread_mutex_t mu;          /* guards the fields below */
    uint64_t off[MAX_HINTS], len[MAX_HINTS];
    size_t n_hints;
    size_t n_samples;            /* resident calls */
    uint64_t last_sample;        /* offset of the last resident call */
    answer ans;                  /* what resident says */
} hint_source;

static int hint_io_open(ml_source *s, unsigned depth, ml_io_mode mode, ml_io **out) {
    return ml_io_open(out, ((hint_source *)s)->inner, depth, mode);
}

static int hint_read(ml_source *s, ml_io_req *r) { return ml_source_read(((hint_source *)s)->inner, r); }

static int hint_resident(ml_source *s, uint64_t off, uint64_t len, uint64_t *out) {
    hint_source *h = (hint_source *)s;
    pthread_mutex_lock(&h->mu);
    h->n_samples++;
    h->last_sample = off;
    answer a = h->ans;
    pthread_mutex_unlock(&h->mu);
    *out = a == ALL ? len : 0;
    return a == UNKNOWN ? -EOPNOTSUPP : 0;
}

static int hint_prefetch(ml_source *s, uint64_t off, uint64_t len) {
    hint_source *h = (hint_source *)s;
    pthread_mutex_lock(&h->mu);
    if (h->n_hints == MAX_HINTS)
        FAIL("more than %d hints", MAX_HINTS);
    h->off[h->n_hints] = off;
    h->len[h->n_hints++] = len;
    pthread_mutex_unlock(&h->mu);
    return 0;
}

static void hint_destroy(ml_source *s) {
    hint_source *h = (hint_source *)s;
    ml_source_unref(h->inner);
    pthread_mutex_destroy(&h->mu);
    free(h);
}

static const ml_source_ops hint_ops = {.kind = "hints", .io_open = hint_io_open, .read = hint_read,
                                       .resident = hint_resident, .prefetch = hint_prefetch,
                                       .destroy = hint_destroy};

static const char *g_file;

/* A layout of `path` whose source is a fresh recorder over its file. */
static ml_layout *open_hinted(const char *path, hint_source **out) {
    ml_layout *L = NULL;
    CHECK_RC(ml_layout_open(g_file, path, &L, NULL));
    hint_source *h = calloc(1, sizeof *h);
    h->inner = L->src; /* takes the layout's reference */
    pthread_mutex_init(&h->mu, NULL);
    ml_source_init(&h->base, &hint_ops, 1);
    L->src = &h->base;
    ml_h5(L)->cfile.src = &h->base; /* the chunk index reads through it too */
    *out = h;
    return L;
}

static void reset(hint_source *h, answer a) {
    h->n_hints = h->n_samples = 0;
    h->ans = a;
}

/* Byte range [a, a + n) lies inside hint i. */
static int inside(const hint_source *h, size_t i, uint64_t a, uint64_t n) {
    return a >= h->off[i] && a + n <= h->off[i] + h->len[i];
}

/* How many hints cover row r of contiguous L (whole). */
static unsigned row_hits(const ml_layout *L, const hint_source *h, uint64_t r) {
    unsigned n = 0;
    for (size_t i = 0; i < h->n_hints; i++)
        n += inside(h, i, L->offset + r * L->row_bytes, L->row_bytes);
    return n;
}

/* How many hints cover chunk c of L (whole); *size gets its stored bytes. */
static unsigned chunk_hits(ml_layout *L, const hint_source *h, uint64_t c, uint64_t *size) {
    ml_chunk_info ci;
    CHECK_RC(ml_layout_chunk(L, c, &ci, NULL));
    unsigned n = 0;
    for (size_t i = 0; i < h->n_hints; i++)
        n += inside(h, i, ci.addr, ci.size);
    *size = ci.size;
    return n;
}

/* Every hinted byte is a byte of the dataset. */
static void check_hints_inside(const ml_layout *L, const hint_source *h) {
    for (size_t i = 0; i < h->n_hints; i++) {
        CHECK_GE(h->off[i], L->offset);
        CHECK_LE(h->off[i] + h->len[i], L->offset + L->n_rows * L->row_bytes);
        CHECK_EQ((h->off[i] - L->offset) % L->row_bytes, 0);
        CHECK_EQ(h->len[i] % L->row_bytes, 0);
    }
}

static ml_schedule sched(const ml_layout *L, ml_schedule_kind kind, uint64_t block_rows) {
    ml_schedule s;
    ml_schedule_params p = {.kind = kind, .n_rows = L->n_rows, .block_rows = block_rows, .remainder = 1,
                            .seed = 99};
    CHECK_RC(ml_schedule_init(&s, &p));
    return s;
}

/* ---- the tests ---- */

enum { ROW_INTS = 16384, ROWS = 1024, BLOCK_ROWS = 16 }; /* 64 KiB rows, 1 MiB blocks, 64 MiB */
#define BLOCK_BYTES ((uint64_t)BLOCK_ROWS * ROW_INTS * 4)

static h5spec specs[] = {
    {.path = "/contig", .tc = TC_I32, .ndim = 2, .dims = {ROWS, ROW_INTS}},
    {.path = "/chunked", .tc = TC_I32, .ndim = 2, .dims = {256, ROW_INTS}, .chunk = {4, ROW_INTS}},
    {.path = "/tiles", .tc = TC_I32, .ndim = 2, .dims = {256, ROW_INTS}, .chunk = {8, 4096}},
};

static void test_hints_contiguous(void) {
    hint_source *h;
    ml_layout *L = open_hinted("/contig", &h);
    CHECK_EQ(L->storage, ML_STORE_CONTIGUOUS);
    CHECK_EQ(ml_fetch_prefetch(L, 5, 7), 1);
    CHECK_EQ(h->n_hints, 1);
    CHECK_U64_EQ(h->off[0], L->offset + 5 * L->row_bytes);
    CHECK_U64_EQ(h->len[0], 7 * L->row_bytes);
    CHECK_EQ(ml_fetch_prefetch(L, ROWS - 1, 2), 0); /* outside the dataset: nothing */
    CHECK_EQ(ml_fetch_prefetch(L, 0, 0), 0);
    /* The sample is the page of the rows' last byte. */
    CHECK_EQ(ml_fetch_resident(L, 5, 7), 1);
    CHECK_U64_EQ(h->last_sample, (L->offset + 12 * L->row_bytes - 1) / 4096 * 4096);
    h->ans = NOTHING;
    CHECK_EQ(ml_fetch_resident(L, 5, 7), 0);
    h->ans = UNKNOWN;
    CHECK_ERR(ml_fetch_resident(L, 5, 7), -EOPNOTSUPP);
    ml_layout_unref(L);
}

/* Chunked: the chunks the rows touch, each inside exactly one hint;
 * chunks written one after another merge. */
static void test_hints_chunked(const char *path) {
    hint_source *h;
    ml_layout *L = open_hinted(path, &h);
    CHECK_EQ(L->storage, ML_STORE_CHUNKED);
    uint64_t row0 = 6, n = 21; /* partial chunks at both ends */
    size_t ranges = ml_fetch_prefetch(L, row0, n);
    CHECK_EQ(ranges, h->n_hints);
    uint64_t inner = L->n_chunks / L->grid[0], hinted = 0, chunk_bytes = 0;
    for (size_t i = 0; i < h->n_hints; i++)
        hinted += h->len[i];
    for (uint64_t c = row0 / L->chunk[0] * inner; c < ((row0 + n - 1) / L->chunk[0] + 1) * inner; c++) {
        uint64_t size;
        CHECK_EQ(chunk_hits(L, h, c, &size), 1);
        chunk_bytes += size;
    }
    CHECK_U64_EQ(hinted, chunk_bytes); /* nothing else */
    CHECK_LT(h->n_hints, chunk_bytes / L->chunk_bytes); /* adjacent chunks merged */
    /* The sample is the last chunk's last page. */
    CHECK_EQ(ml_fetch_resident(L, row0, n), 1);
    ml_chunk_info last;
    CHECK_RC(ml_layout_chunk(L, ((row0 + n - 1) / L->chunk[0] + 1) * inner - 1, &last, NULL));
    CHECK_U64_EQ(h->last_sample, (last.addr + last.size - 1) / 4096 * 4096);
    ml_layout_unref(L);
}

/* Forced on, sequential: the window is kept, each row hinted once, one
 * merged hint per step. */
static void test_window_sequential(void) {
    hint_source *h;
    ml_layout *L = open_hinted("/contig", &h);
    ml_schedule s = sched(L, ML_SCHEDULE_SEQUENTIAL, BLOCK_ROWS);
    ml_readahead ra;
    ml_readahead_init(&ra, ML_COLD_ON, BLOCK_BYTES, 0, ml_schedule_n_blocks(&s));
    uint64_t step = ML_READAHEAD_STEP_BYTES / BLOCK_BYTES, window = ML_READAHEAD_WINDOW_BYTES / BLOCK_BYTES;
    CHECK_EQ(ra.step, step);
    CHECK_EQ(ra.window, window);
    uint64_t n_blocks = ml_schedule_n_blocks(&s);
    CHECK_GT(n_blocks, window + step); /* so the far edge is seen */
    for (uint64_t k = 0; k < n_blocks; k++) {
        ml_readahead_advance(&ra, L, &s, k);
        uint64_t want = k + window + 1 < n_blocks ? k + window + 1 : n_blocks; /* blocks [0, want) */
        for (uint64_t b = 0; b < n_blocks; b++) {
            unsigned hits = row_hits(L, h, b * BLOCK_ROWS);
            if (b < want)
                CHECK_EQ(hits, 1);
            else if (b >= want + step)
                CHECK_EQ(hits, 0);
        }
    }
    for (uint64_t r = 0; r < L->n_rows; r++)
        CHECK_EQ(row_hits(L, h, r), 1);
    CHECK_EQ(h->n_hints, n_blocks / step); /* one merged range per step */
    CHECK_EQ(h->n_samples, 0);             /* ON: unsampled */
    CHECK_EQ(atomic_load(&ra.prefetched), n_blocks / step);
    check_hints_inside(L, h);
    ml_layout_unref(L);
}

/* Permuted blocks (and a short last block): each row hinted once, in the
 * schedule's order; a resumed stream starts its hints where it stands. */
static void test_permuted(void) {
    hint_source *h;
    ml_layout *L = open_hinted("/contig", &h);
    uint64_t B = 10; /* 1024 rows: 102 blocks and a remainder of 4 rows */
    ml_schedule s = sched(L, ML_SCHEDULE_PERMUTED, B);
    uint64_t n_blocks = ml_schedule_n_blocks(&s);
    ml_readahead ra;
    ml_readahead_init(&ra, ML_COLD_ON, B * L->row_bytes, 0, n_blocks);
    ml_readahead_advance(&ra, L, &s, 0);
    /* The blocks of the first window, whichever rows they are. */
    for (uint64_t k = 0; k <= ra.window && k < n_blocks; k++) {
        ml_block_runs runs;
        CHECK_RC(ml_schedule_block(&s, k, &runs));
        CHECK_EQ(row_hits(L, h, runs.start[0]), 1);
    }
    for (uint64_t k = 1; k < n_blocks; k++)
        ml_readahead_advance(&ra, L, &s, k);
    for (uint64_t r = 0; r < L->n_rows; r++)
        CHECK_EQ(row_hits(L, h, r), 1);
    check_hints_inside(L, h);

    /* Resumed at block 50: nothing before it is hinted. */
    reset(h, ALL);
    CHECK_RC(ml_schedule_seek(&s, 50));
    ml_readahead_init(&ra, ML_COLD_ON, B * L->row_bytes, 50, n_blocks);
    ml_readahead_advance(&ra, L, &s, 50);
    for (uint64_t k = 0; k < 50; k++) {
        ml_block_runs runs;
        CHECK_RC(ml_schedule_block(&s, k, &runs));
        CHECK_EQ(row_hits(L, h, runs.start[0]), 0);
    }
    ml_layout_unref(L);
}

/* Cyclic: endless, blocks wrap around the end; hints stay inside the
 * dataset and follow the claims. */
static void test_cyclic(void) {
    hint_source *h;
    ml_layout *L = open_hinted("/contig", &h);
    uint64_t B = 24; /* 1024 rows: wrapping blocks */
    ml_schedule s = sched(L, ML_SCHEDULE_CYCLIC, B);
    CHECK_EQ(ml_schedule_n_blocks(&s), UINT64_MAX);
    ml_readahead ra;
    ml_readahead_init(&ra, ML_COLD_ON, B * L->row_bytes, 0, UINT64_MAX);
    uint64_t k_last = 3 * L->n_rows / B; /* three passes */
    for (uint64_t k = 0; k <= k_last; k++)
        ml_readahead_advance(&ra, L, &s, k);
    check_hints_inside(L, h);
    /* Every row was hinted once per pass at least (3 passes and the window). */
    for (uint64_t r = 0; r < L->n_rows; r++)
        CHECK_GE(row_hits(L, h, r), 3);
    uint64_t next = atomic_load(&ra.next);
    CHECK_GE(next, k_last + ra.window + 1);
    CHECK_LT(next, k_last + ra.window + 1 + ra.step);
    ml_layout_unref(L);
}

/* AUTO: resident data gets no hint and fewer samples; cold data a hint
 * every step; a source that cannot tell, none. OFF: nothing. */
static void test_auto_and_off(void) {
    hint_source *h;
    ml_layout *L = open_hinted("/contig", &h);
    ml_schedule s = sched(L, ML_SCHEDULE_SEQUENTIAL, BLOCK_ROWS);
    uint64_t n_blocks = ml_schedule_n_blocks(&s);
    ml_readahead ra;
    uint64_t steps = n_blocks / (ML_READAHEAD_STEP_BYTES / BLOCK_BYTES);

    reset(h, ALL);
    ml_readahead_init(&ra, ML_COLD_AUTO, BLOCK_BYTES, 0, n_blocks);
    for (uint64_t k = 0; k < n_blocks; k++)
        ml_readahead_advance(&ra, L, &s, k);
    CHECK_EQ(h->n_hints, 0);
    CHECK_EQ(atomic_load(&ra.resident), steps);
    CHECK_EQ(h->n_samples, 3); /* 8 steps: sampled at steps 0, 2 and 5 (1, 2, then 4 skipped) */

    reset(h, NOTHING);
    ml_readahead_init(&ra, ML_COLD_AUTO, BLOCK_BYTES, 0, n_blocks);
    for (uint64_t k = 0; k < n_blocks; k++)
        ml_readahead_advance(&ra, L, &s, k);
    CHECK_EQ(h->n_samples, steps);
    CHECK_EQ(atomic_load(&ra.prefetched), steps);
    for (uint64_t r = 0; r < L->n_rows; r++)
        CHECK_EQ(row_hits(L, h, r), 1);

    reset(h, UNKNOWN);
    ml_readahead_init(&ra, ML_COLD_AUTO, BLOCK_BYTES, 0, n_blocks);
    for (uint64_t k = 0; k < n_blocks; k++)
        ml_readahead_advance(&ra, L, &s, k);
    CHECK_EQ(h->n_hints, 0);
    CHECK_EQ(h->n_samples, 1); /* asked once, then blind */
    CHECK_EQ(atomic_load(&ra.blind), 1);

    reset(h, NOTHING);
    ml_readahead_init(&ra, ML_COLD_OFF, BLOCK_BYTES, 0, n_blocks);
    for (uint64_t k = 0; k < n_blocks; k++)
        ml_readahead_advance(&ra, L, &s, k);
    CHECK_EQ(h->n_hints + h->n_samples, 0);
    ml_readahead_init(&ra, ML_COLD_ON, 0, 0, n_blocks); /* rows of 0 bytes: off */
    CHECK_EQ(ra.mode, ML_COLD_OFF);
    ml_layout_unref(L);
}

/* Chunked, forced on: each chunk hinted exactly once over the stream. */
static void test_chunked_stream(void) {
    hint_source *h;
    ml_layout *L = open_hinted("/chunked", &h);
    uint64_t B = 6; /* blocks of 6 rows across chunks of 4: a chunk in two blocks is hinted in one step */
    ml_schedule s = sched(L, ML_SCHEDULE_SEQUENTIAL, B);
    uint64_t n_blocks = ml_schedule_n_blocks(&s);
    ml_readahead ra;
    ml_readahead_init(&ra, ML_COLD_ON, B * L->row_bytes, 0, n_blocks);
    for (uint64_t k = 0; k < n_blocks; k++)
        ml_readahead_advance(&ra, L, &s, k);
    for (uint64_t c = 0; c < L->n_chunks; c++) {
        uint64_t size;
        unsigned hits = chunk_hits(L, h, c, &size);
        CHECK_GE(hits, 1);
        CHECK_LE(hits, 2); /* a chunk cut by a step boundary: in the hints of both steps */
    }
    ml_layout_unref(L);
}

/* Two threads claiming blocks at once: every step taken once. */
typedef struct racer {
    ml_readahead *ra;
    ml_layout *L;
    const ml_schedule *s;
    _Atomic uint64_t *next_k;
    uint64_t n_blocks;
} racer;

static void *race(void *arg) {
    racer *r = arg;
    uint64_t k;
    while ((k = atomic_fetch_add(r->next_k, 1)) < r->n_blocks)
        ml_readahead_advance(r->ra, r->L, r->s, k);
    return NULL;
}

static void test_threads(void) {
    hint_source *h;
    ml_layout *L = open_hinted("/contig", &h);
    uint64_t B = 2; /* 128 KiB blocks: 64 a step, many CAS races */
    ml_schedule s = sched(L, ML_SCHEDULE_SEQUENTIAL, B);
    for (int round = 0; round < 20; round++) {
        reset(h, ALL);
        ml_readahead ra;
        ml_readahead_init(&ra, ML_COLD_ON, B * L->row_bytes, 0, ml_schedule_n_blocks(&s));
        _Atomic uint64_t next_k = 0;
        racer r = {&ra, L, &s, &next_k, ml_schedule_n_blocks(&s)};
        pthread_t t[2];
        for (int i = 0; i < 2; i++)
            CHECK_EQ(pthread_create(&t[i], NULL, race, &r), 0);
        for (int i = 0; i < 2; i++)
            pthread_join(t[i], NULL);
        for (uint64_t row = 0; row < L->n_rows; row++)
            CHECK_EQ(row_hits(L, h, row), 1);
    }
    ml_layout_unref(L);
}

static void test_direct_arithmetic(void) {
    const uint64_t MiB = 1 << 20;
    /* 2 workers, 1 MiB blocks: 8 each (16 MiB in flight), 24 slots for full batches. */
    CHECK_EQ(ml_direct_slots(MiB, 2), 24);
    CHECK_EQ(ml_direct_batch_blocks(ML_COLD_AUTO, MiB, 24, 2), 8);
    CHECK_EQ(ml_direct_batch_blocks(ML_COLD_ON, MiB, 24, 2), 8);
    CHECK_EQ(ml_direct_batch_blocks(ML_COLD_OFF, MiB, 24, 2), 1);
    CHECK_EQ(ml_direct_batch_blocks(ML_COLD_AUTO, MiB, 5, 2), 1);   /* 5 slots: no room */
    CHECK_EQ(ml_direct_batch_blocks(ML_COLD_AUTO, MiB, 12, 2), 4);  /* a share of the slots */
    CHECK_EQ(ml_direct_batch_blocks(ML_COLD_AUTO, 64 * MiB, 99, 2), 1); /* blocks past the budget */
    CHECK_EQ(ml_direct_batch_blocks(ML_COLD_AUTO, 4096, 1000, 1), ML_DIRECT_BATCH_BLOCKS);
    CHECK_EQ(ml_direct_batch_blocks(ML_COLD_AUTO, 0, 1000, 1), 1);
    CHECK_EQ(ml_direct_slots(4096, 1), 2 * ML_DIRECT_BATCH_BLOCKS);
    CHECK_EQ(ml_direct_slots(64 * MiB, 4), 5);
    CHECK_EQ(ml_direct_slots(MiB, 0xffffffffu), 0xffffffffu); /* saturates */
    for (unsigned w = 1; w <= 8; w++)
        for (uint64_t bb = 4096; bb <= 32 * MiB; bb *= 2)
            CHECK_EQ(ml_direct_batch_blocks(ML_COLD_AUTO, bb, ml_direct_slots(bb, w), w) * (uint64_t)(w + 1),
                     ml_direct_slots(bb, w));
}

static void test_env(void) {
    static const struct { const char *v; ml_cold_mode m; } cases[] = {
        {"1", ML_COLD_ON}, {"on", ML_COLD_ON}, {"0", ML_COLD_OFF}, {"off", ML_COLD_OFF},
        {"auto", ML_COLD_AUTO}, {"", ML_COLD_AUTO}, {"yes", ML_COLD_AUTO},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        setenv("MULTILOAD_COLD", cases[i].v, 1);
        CHECK_EQ(ml_cold_mode_env(), cases[i].m);
    }
    unsetenv("MULTILOAD_COLD");
    CHECK_EQ(ml_cold_mode_env(), ML_COLD_AUTO);
}

int main(void) {
    g_file = check_path("readahead.h5");
    hid_t fid = h5gen_create(g_file);
    for (size_t i = 0; i < sizeof specs / sizeof specs[0]; i++) {
        h5gen_type(&specs[i]);
        size_t n = h5gen_elems(&specs[i]);
        int32_t *data = malloc(n * sizeof *data);
        for (size_t k = 0; k < n; k++)
            data[k] = (int32_t)k;
        h5gen_dataset(fid, &specs[i], data);
        free(data);
    }
    H5Fclose(fid);
    test_hints_contiguous();
    test_hints_chunked("/chunked");
    test_hints_chunked("/tiles");
    test_window_sequential();
    test_permuted();
    test_cyclic();
    test_auto_and_off();
    test_chunked_stream();
    test_threads();
    test_direct_arithmetic();
    test_env();
    CHECK_DONE();
}
