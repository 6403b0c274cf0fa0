/* order.c - the order of an epoch, version 1 (order.h).
 *
 * Invariants: an order is a pure function of its parameters, so every
 * rank, worker and machine that builds one from the same parameters agrees
 * on every row; it holds O(1) state (a 2^40-row order costs what a 4-row
 * one does); row() is a bijection of [0, N); and the global sequence does
 * not depend on the world size, so ranks of any R dividing S partition
 * each global batch. Work per row: at most three keyed permutations
 * (perm.c), a few dozen multiplications. Changing anything below changes
 * recorded orders: it is the contract of version 1, pinned by the golden
 * vectors of tests/test_order.py and tests/c/test_order.c.
 *
 * Notation: N rows, B block_rows, S num_streams, GB global_batch, W
 * window_rows (default: 8 blocks, or as many blocks as fit in 64 bits),
 * seed, epoch; P[n, salt] is perm.c's bijection of [0, n) keyed by (seed,
 * epoch, salt); / and % are integer division and remainder.
 *
 * 1. The epoch sequence seq(j), j < N. F = N / B full blocks; the rows
 *    [F*B, N) are the short block (none when B divides N).
 *      none:          seq(j) = j
 *      block, window: seq(j) = P[F, 0](j / B) * B + j % B   for j < F*B,
 *                     seq(j) = j                            otherwise
 *      global:        seq(j) = P[N, 0](j)
 * 2. Streams and tail. Each stream has L = (F / S) * B rows (whole blocks,
 *    the same count for all): stream s is seq positions [s*L, (s+1)*L).
 *    The tail is seq positions [S*L, N): T = N - S*L < S*B rows, with the
 *    short block at its end.
 * 3. Windows (window shuffle only). A segment (a stream, or the tail as
 *    segment number S) of length len is cut into windows of W rows, the
 *    last one shorter; offset o in window w = o / W, of size
 *    m = min(W, len - w*W), moves to w*W + P[m, 1 + w*(S+1) + s](o % W)
 *    (salt mod 2^64). Other shuffles leave offsets as they are. So a row
 *    never leaves its window, and a window needs W rows of memory.
 * 4. The global sequence row(k), k < N: the tail and the streams, the
 *    streams interleaved one row each in turn, position k always in
 *    stream k % S. w() is step 3's window move (the identity without
 *    windows).
 *      none (tail last, so that S = 1 is dataset order):
 *        k < S*L:  s = k % S, row = seq(s*L + w(s, k / S))
 *        k >= S*L: row = seq(S*L + w(S, k - S*L))
 *      block, window, global (tail first: tail="drop" drops the last
 *      positions, so it drops the ends of the streams, different rows each
 *      epoch, and not the short block unless N < T + GB):
 *        k < T:    row = seq(S*L + w(S, k))
 *        k >= T:   s = k % S, row = seq(s*L + w(s, (k - T) / S))
 *      (for k >= T the k with k % S = s are L consecutive offsets (k - T)
 *      / S = 0 .. L-1 of stream s, so this is a bijection.)
 * 5. Batches. Global batch t is the positions [t*GB, (t+1)*GB). Rank r of
 *    R (R divides S and GB) takes the positions k = t*GB + r + i*R,
 *    i < GB/R, in that order: as S % R = 0, k % S = r (mod R), so outside
 *    the tail a rank reads only the streams s = r (mod R); tail positions
 *    are dealt the same way.
 *      drop:   steps = N / GB; positions >= steps*GB (fewer than GB) dropped
 *      pad:    steps = ceil(N / GB); position k >= N holds row(k % N),
 *              marked invalid, so every row appears at least once
 *      uneven: rank r holds the positions k = r + i*R < N, steps_r =
 *              ceil(c_r / (GB/R)) with c_r = the count of them; its batch t
 *              is those with t*(GB/R) <= i < (t+1)*(GB/R): the same rows
 *              as above, the last batch short, ranks differing by <= 1 step
 */
#include "order.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>

#include "error.h"

static int refuse(char *why, size_t why_len, const char *fmt, ...) {
    if (why && why_len) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(why, why_len, fmt, ap);
        va_end(ap);
    }
    return -ML_EINVAL;
}

int ml_order_init(ml_order *o, const ml_order_params *p, char *why, size_t why_len) {
    if (p->version != ML_ORDER_VERSION)
        return refuse(why, why_len, "version must be %d (the only order version), not %u", ML_ORDER_VERSION,
                      p->version);
    if (p->block_rows < 1)
        return refuse(why, why_len, "block_rows must be >= 1");
    if (p->global_batch < 1)
        return refuse(why, why_len, "global_batch must be >= 1");
    if (p->num_streams < 1)
        return refuse(why, why_len, "num_streams must be >= 1");
    if (p->shuffle != ML_ORDER_NONE && p->shuffle != ML_ORDER_BLOCK && p->shuffle != ML_ORDER_WINDOW &&
        p->shuffle != ML_ORDER_GLOBAL)
        return refuse(why, why_len, "shuffle must be 'none', 'block', 'window' or 'global'");
    if (p->tail != ML_ORDER_DROP && p->tail != ML_ORDER_PAD && p->tail != ML_ORDER_UNEVEN)
        return refuse(why, why_len, "tail must be 'drop', 'pad' or 'uneven'");
    if (p->shuffle != ML_ORDER_WINDOW && p->window_rows != 0)
        return refuse(why, why_len, "window_rows applies only to shuffle='window'");
    if (p->window_rows % p->block_rows != 0)
        return refuse(why, why_len, "window_rows (%llu) must be a multiple of block_rows (%llu)",
                      (unsigned long long)p->window_rows, (unsigned long long)p->block_rows);
    if (p->n_rows > UINT64_MAX - p->global_batch)
        return refuse(why, why_len, "n_rows + global_batch must be below 2**64");
    *o = (ml_order){.p = *p};
    if (p->shuffle == ML_ORDER_WINDOW && p->window_rows == 0) {
        uint64_t fit = UINT64_MAX / p->block_rows;
        o->p.window_rows = p->block_rows * (fit < 8 ? fit : 8);
    }
    uint64_t N = p->n_rows, B = p->block_rows, S = p->num_streams, GB = p->global_batch;
    o->n_full = N / B;
    o->stream_rows = o->n_full / S * B;  /* <= n_full * B <= N */
    o->body_rows = S * o->stream_rows;   /* <= n_full * B: no overflow */
    o->steps = p->tail == ML_ORDER_DROP ? N / GB : N / GB + (N % GB ? 1 : 0);
    if (p->shuffle == ML_ORDER_BLOCK || p->shuffle == ML_ORDER_WINDOW)
        ml_perm_init(&o->blocks, o->n_full, p->seed, p->epoch, 0);
    if (p->shuffle == ML_ORDER_GLOBAL)
        ml_perm_init(&o->rows, N, p->seed, p->epoch, 0);
    return 0;
}

/* Step 1: the epoch sequence. */
static uint64_t seq(const ml_order *o, uint64_t j) {
    uint64_t B = o->p.block_rows;
    switch (o->p.shuffle) {
    case ML_ORDER_BLOCK:
    case ML_ORDER_WINDOW:
        if (j / B < o->n_full)
            return ml_perm_apply(&o->blocks, j / B) * B + j % B;
        return j;
    case ML_ORDER_GLOBAL:
        return ml_perm_apply(&o->rows, j);
    default:
        return j;
    }
}

/* Step 3: offset off of segment s (length len) after the window shuffle. */
static uint64_t window_move(const ml_order *o, uint64_t s, uint64_t len, uint64_t off) {
    if (o->p.shuffle != ML_ORDER_WINDOW)
        return off;
    uint64_t W = o->p.window_rows, w = off / W, start = w * W;
    uint64_t m = len - start < W ? len - start : W;
    ml_perm p;
    ml_perm_init(&p, m, o->p.seed, o->p.epoch, 1 + w * (o->p.num_streams + 1) + s);
    return start + ml_perm_apply(&p, off - start);
}

uint64_t ml_order_row(const ml_order *o, uint64_t k) {
    uint64_t S = o->p.num_streams, L = o->stream_rows, body = o->body_rows;
    uint64_t T = o->p.n_rows - body;
    if (o->p.shuffle == ML_ORDER_NONE) { /* step 4: tail last */
        if (k < body)
            return seq(o, k % S * L + window_move(o, k % S, L, k / S));
        return seq(o, body + window_move(o, S, T, k - body));
    }
    if (k < T) /* tail first */
        return seq(o, body + window_move(o, S, T, k));
    return seq(o, k % S * L + window_move(o, k % S, L, (k - T) / S));
}

int ml_order_check_shard(const ml_order *o, uint64_t rank, uint64_t world_size, char *why, size_t why_len) {
    if (world_size < 1)
        return refuse(why, why_len, "world_size must be >= 1");
    if (rank >= world_size)
        return refuse(why, why_len, "rank (%llu) must be in [0, world_size) = [0, %llu)",
                      (unsigned long long)rank, (unsigned long long)world_size);
    if (o->p.num_streams % world_size != 0)
        return refuse(why, why_len, "world_size (%llu) must divide num_streams (%llu)",
                      (unsigned long long)world_size, (unsigned long long)o->p.num_streams);
    if (o->p.global_batch % world_size != 0)
        return refuse(why, why_len, "global_batch (%llu) must be divisible by world_size (%llu)",
                      (unsigned long long)o->p.global_batch, (unsigned long long)world_size);
    return 0;
}

/* uneven: the positions r + i*R below N that rank r holds. */
static uint64_t rank_positions(const ml_order *o, uint64_t rank, uint64_t world_size) {
    uint64_t N = o->p.n_rows;
    return N > rank ? (N - rank - 1) / world_size + 1 : 0;
}

uint64_t ml_order_steps(const ml_order *o, uint64_t rank, uint64_t world_size) {
    if (o->p.tail != ML_ORDER_UNEVEN)
        return o->steps;
    uint64_t c = rank_positions(o, rank, world_size), b = o->p.global_batch / world_size;
    return c / b + (c % b ? 1 : 0);
}

int ml_order_local_batch(const ml_order *o, uint64_t step, uint64_t rank, uint64_t world_size,
                         uint64_t *rows, uint8_t *valid, uint64_t *n_out) {
    int rc = ml_order_check_shard(o, rank, world_size, NULL, 0);
    if (rc < 0)
        return rc;
    if (step >= ml_order_steps(o, rank, world_size))
        return -ERANGE;
    uint64_t N = o->p.n_rows, b = o->p.global_batch / world_size;
    uint64_t n = b;
    if (o->p.tail == ML_ORDER_UNEVEN) {
        uint64_t c = rank_positions(o, rank, world_size);
        n = c - step * b < b ? c - step * b : b;
    }
    /* step < steps, so step*GB < N + GB, which init bounds below 2^64. */
    uint64_t k = step * o->p.global_batch + rank;
    for (uint64_t i = 0; i < n; i++, k += world_size) {
        rows[i] = ml_order_row(o, k < N ? k : k % N);
        if (valid)
            valid[i] = k < N;
    }
    *n_out = n;
    return 0;
}
