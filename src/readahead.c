/* readahead.c - read-ahead of cold data for block streams.
 *
 * Why: with the page cache dropped, a stream's workers each had one read
 * in flight (1 MiB blocks: 2 MiB for 2 workers), and the kernel's own
 * readahead, which sees the workers' interleaved reads of one open file,
 * kept the device's queue short; the virtual disk here needs about 8 MiB
 * in flight to reach its rate (fio O_DIRECT 1 MiB: iodepth 2 0.89 GB/s,
 * 8 1.44; benchmarks/notes.md has the profile).
 *
 * Buffered streams: the blocks ahead of the readers are handed to the
 * source as prefetch hints (posix_fadvise WILLNEED for a file), one step
 * (ML_READAHEAD_STEP_BYTES of blocks) at a time, keeping
 * ML_READAHEAD_WINDOW_BYTES ahead of the block a worker has just read,
 * so the device always has a deep queue and the workers' reads find the
 * page cache filled. The schedule is a pure function, so the blocks ahead
 * are known for every schedule (sequential, cyclic, permuted, sharded):
 * the read-ahead walks block numbers, not file offsets. Each step is taken
 * by exactly one worker (a CAS on `next`), so a block is hinted once.
 *
 * Warm data must not pay: a hint for 8 MiB already cached costs ~150 us
 * here (the kernel looks up every page), ~20% of the time W1 takes to copy
 * it. So in AUTO mode a step is first sampled: the last page of its last
 * block (ml_fetch_resident, mincore: ~2 us); resident means the step is
 * left alone, and so are the next 1, 2, 4 ... ML_READAHEAD_MAX_SKIP steps
 * while samples stay resident (a warm 512 MiB stream: 12 samples, not 64;
 * at 64 they cost ~1% of W1 warm here, where a system call costs ~1.6 us).
 * A sample that is not resident resets that, so a file half in the cache
 * gets hints for the other half (from at most 8 steps late). A source that cannot tell
 * what is resident gets no hints in AUTO mode (the behaviour before this
 * file); ON hints every step unsampled (MULTILOAD_COLD=1, for tests and
 * for storage mincore cannot see).
 *
 * Direct streams bypass the page cache, so a hint would only fill memory
 * nobody reads; their queue depth comes from batches instead: a worker
 * claims several free slots at once (ml_ring_claim_more) and reads their
 * blocks in one ml_fetch_rows_multi batch (streamer.c).
 *
 * Invariants: `next` only grows, from the stream's first block to its
 * limit; every step in [first, next) was considered once. Nothing here
 * allocates, locks or reports: a failed hint only loses speed.
 */
#define _GNU_SOURCE
#include "readahead.h"

#include <stdlib.h>
#include <string.h>

#include "fetch.h"

ml_cold_mode ml_cold_mode_env(void) {
    const char *v = getenv("MULTILOAD_COLD");
    if (!v)
        return ML_COLD_AUTO;
    if (strcmp(v, "1") == 0 || strcmp(v, "on") == 0)
        return ML_COLD_ON;
    if (strcmp(v, "0") == 0 || strcmp(v, "off") == 0)
        return ML_COLD_OFF;
    return ML_COLD_AUTO;
}

static uint64_t blocks_for(uint64_t bytes, uint64_t block_bytes) {
    uint64_t n = (bytes + block_bytes - 1) / block_bytes;
    return n ? n : 1;
}

void ml_readahead_init(ml_readahead *ra, ml_cold_mode mode, uint64_t block_bytes, uint64_t first,
                       uint64_t limit) {
    memset(ra, 0, sizeof *ra);
    ra->mode = block_bytes ? mode : ML_COLD_OFF;
    ra->step = block_bytes ? blocks_for(ML_READAHEAD_STEP_BYTES, block_bytes) : 1;
    ra->window = block_bytes ? blocks_for(ML_READAHEAD_WINDOW_BYTES, block_bytes) : 1;
    if (ra->window < ra->step)
        ra->window = ra->step;
    ra->limit = limit;
    atomic_init(&ra->next, first);
    atomic_init(&ra->prefetched, 0);
    atomic_init(&ra->resident, 0);
    atomic_init(&ra->blind, 0);
    atomic_init(&ra->skip, 0);
    atomic_init(&ra->run, 0);
}

/* 1 if every run of block k looks resident, 0 if one does not, -1 if the
 * source cannot tell. */
static int block_resident(ml_layout *L, const ml_schedule *sch, uint64_t k) {
    ml_block_runs runs;
    if (ml_schedule_block(sch, k, &runs) < 0)
        return 1; /* no such block: nothing to read */
    for (unsigned i = 0; i < runs.n; i++) {
        int r = ml_fetch_resident(L, runs.start[i], runs.count[i]);
        if (r != 1)
            return r < 0 ? -1 : 0;
    }
    return 1;
}

/* Hint blocks [a, b): their runs, a run that continues the previous one
 * merged into it (a sequential schedule's step is one range). */
static void prefetch_blocks(ml_layout *L, const ml_schedule *sch, uint64_t a, uint64_t b) {
    uint64_t start = 0, count = 0;
    for (uint64_t k = a; k < b; k++) {
        ml_block_runs runs;
        if (ml_schedule_block(sch, k, &runs) < 0)
            break;
        for (unsigned i = 0; i < runs.n; i++) {
            if (count && runs.start[i] == start + count) {
                count += runs.count[i];
                continue;
            }
            if (count)
                ml_fetch_prefetch(L, start, count);
            start = runs.start[i];
            count = runs.count[i];
        }
    }
    if (count)
        ml_fetch_prefetch(L, start, count);
}

void ml_readahead_advance(ml_readahead *ra, ml_layout *L, const ml_schedule *sch, uint64_t k) {
    if (ra->mode == ML_COLD_OFF)
        return;
    uint64_t want = ra->limit - k > ra->window ? k + ra->window + 1 : ra->limit; /* k < limit */
    /* relaxed: `next` only hands out steps; what a step reads is immutable. */
    uint64_t a = atomic_load_explicit(&ra->next, memory_order_relaxed);
    while (a < want) {
        uint64_t b = ra->limit - a > ra->step ? a + ra->step : ra->limit;
        if (!atomic_compare_exchange_weak_explicit(&ra->next, &a, b, memory_order_relaxed,
                                                   memory_order_relaxed))
            continue; /* a now holds the new value */
        if (ra->mode == ML_COLD_AUTO) {
            if (atomic_load_explicit(&ra->blind, memory_order_relaxed))
                return;
            /* Relaxed, and racy between two step winners: they only decide
             * how often to sample. */
            unsigned skip = atomic_load_explicit(&ra->skip, memory_order_relaxed);
            int r = skip ? 1 : block_resident(L, sch, b - 1);
            if (r < 0) {
                atomic_store_explicit(&ra->blind, 1, memory_order_relaxed);
                return;
            }
            if (skip) {
                atomic_store_explicit(&ra->skip, skip - 1, memory_order_relaxed);
            } else {
                unsigned run = atomic_load_explicit(&ra->run, memory_order_relaxed);
                run = r == 0 ? 0 : run == 0 ? 1 : run * 2 > ML_READAHEAD_MAX_SKIP ? ML_READAHEAD_MAX_SKIP : run * 2;
                atomic_store_explicit(&ra->run, run, memory_order_relaxed);
                atomic_store_explicit(&ra->skip, run, memory_order_relaxed);
            }
            if (r == 1) {
                atomic_fetch_add_explicit(&ra->resident, 1, memory_order_relaxed);
                a = b;
                continue;
            }
        }
        prefetch_blocks(L, sch, a, b);
        atomic_fetch_add_explicit(&ra->prefetched, 1, memory_order_relaxed);
        a = b;
    }
}

/* A worker's full batch: its share of the bytes in flight, in blocks. */
static uint64_t full_batch(uint64_t block_bytes, unsigned n_workers) {
    uint64_t n = ML_DIRECT_INFLIGHT_BYTES / (n_workers ? n_workers : 1) / block_bytes;
    return n < 1 ? 1 : n > ML_DIRECT_BATCH_BLOCKS ? ML_DIRECT_BATCH_BLOCKS : n;
}

unsigned ml_direct_batch_blocks(ml_cold_mode mode, uint64_t block_bytes, unsigned n_slots,
                                unsigned n_workers) {
    if (mode == ML_COLD_OFF || block_bytes == 0)
        return 1;
    uint64_t n = full_batch(block_bytes, n_workers);
    uint64_t share = n_slots / ((uint64_t)n_workers + 1);
    if (n > share)
        n = share;
    return n ? (unsigned)n : 1;
}

unsigned ml_direct_slots(uint64_t block_bytes, unsigned n_workers) {
    if (block_bytes == 0)
        return 1;
    uint64_t n = ((uint64_t)n_workers + 1) * full_batch(block_bytes, n_workers);
    return n > UINT32_MAX ? UINT32_MAX : (unsigned)n;
}
