/* test_order.c - the order of an epoch (order.h): parameters it refuses,
 * the golden vectors of tests/test_order.py (computed there by an
 * independent Python reading of order.c's contract), a bijection of the
 * rows for every shuffle, drop/pad/uneven batches that partition the
 * epoch for every world size dividing num_streams, and O(1) state for a
 * 2^40-row order. */
#include "check.h"

#include "order.h"

static ml_order make(uint64_t n, uint64_t B, uint64_t seed, uint64_t epoch, ml_order_shuffle sh, uint64_t W,
                     uint64_t S, uint64_t GB, ml_order_tail tail) {
    ml_order o;
    ml_order_params p = {.n_rows = n, .block_rows = B, .seed = seed, .epoch = epoch, .shuffle = sh,
                         .window_rows = W, .num_streams = S, .global_batch = GB, .tail = tail,
                         .version = ML_ORDER_VERSION};
    char why[160] = "";
    if (ml_order_init(&o, &p, why, sizeof why) < 0)
        FAIL("ml_order_init: %s", why);
    return o;
}

static void test_refused(void) {
    ml_order o;
    char why[160];
    ml_order_params ok = {.n_rows = 10, .block_rows = 2, .num_streams = 1, .global_batch = 4, .version = 1};
    ml_order_params p = ok;
    CHECK_RC(ml_order_init(&o, &p, why, sizeof why));
    p.version = 2;
    CHECK_ERR(ml_order_init(&o, &p, why, sizeof why), -ML_EINVAL);
    CHECK(strstr(why, "version must be 1") != NULL);
    p = ok, p.block_rows = 0;
    CHECK_ERR(ml_order_init(&o, &p, NULL, 0), -ML_EINVAL);
    p = ok, p.global_batch = 0;
    CHECK_ERR(ml_order_init(&o, &p, NULL, 0), -ML_EINVAL);
    p = ok, p.num_streams = 0;
    CHECK_ERR(ml_order_init(&o, &p, NULL, 0), -ML_EINVAL);
    p = ok, p.shuffle = (ml_order_shuffle)4;
    CHECK_ERR(ml_order_init(&o, &p, NULL, 0), -ML_EINVAL);
    p = ok, p.tail = (ml_order_tail)3;
    CHECK_ERR(ml_order_init(&o, &p, NULL, 0), -ML_EINVAL);
    p = ok, p.window_rows = 4; /* not a window shuffle */
    CHECK_ERR(ml_order_init(&o, &p, NULL, 0), -ML_EINVAL);
    p.shuffle = ML_ORDER_WINDOW, p.window_rows = 3;
    CHECK_ERR(ml_order_init(&o, &p, why, sizeof why), -ML_EINVAL);
    CHECK(strstr(why, "multiple of block_rows") != NULL);
    p = ok, p.n_rows = UINT64_MAX - 3;
    CHECK_ERR(ml_order_init(&o, &p, NULL, 0), -ML_EINVAL);
    o = make(10, 2, 0, 0, ML_ORDER_NONE, 0, 4, 4, ML_ORDER_DROP);
    CHECK_ERR(ml_order_check_shard(&o, 0, 0, NULL, 0), -ML_EINVAL);
    CHECK_ERR(ml_order_check_shard(&o, 2, 2, NULL, 0), -ML_EINVAL);
    CHECK_ERR(ml_order_check_shard(&o, 0, 3, NULL, 0), -ML_EINVAL); /* 3 does not divide 4 */
    CHECK_RC(ml_order_check_shard(&o, 1, 2, NULL, 0));
    uint64_t rows[4], n;
    CHECK_ERR(ml_order_local_batch(&o, 2, 0, 1, rows, NULL, &n), -ERANGE); /* 10 / 4 = 2 steps */
    CHECK_RC(ml_order_local_batch(&o, 1, 0, 1, rows, NULL, &n));
    CHECK_U64_EQ(n, 4);
}

static void test_golden(void) {
    static const uint64_t want_block[16] = {288, 289, 290, 291, 292, 293, 294, 295,
                                            1000, 1001, 1002, 872, 560, 976, 600, 873};
    static const uint64_t want_window[16] = {144, 1000, 151, 1001, 150, 145, 146, 1002,
                                             148, 147, 149, 843, 775, 862, 543, 25};
    static const uint64_t want_global[16] = {341, 981, 431, 619, 791, 7, 695, 715,
                                             729, 95, 40, 816, 79, 300, 13, 952};
    ml_order b = make(1003, 8, 7, 0, ML_ORDER_BLOCK, 0, 4, 32, ML_ORDER_DROP);
    ml_order w = make(1003, 8, 7, 1, ML_ORDER_WINDOW, 32, 4, 32, ML_ORDER_DROP);
    ml_order g = make(1003, 8, 7, 2, ML_ORDER_GLOBAL, 0, 4, 32, ML_ORDER_DROP);
    ml_order h = make(1ull << 40, 1024, 12345, 3, ML_ORDER_GLOBAL, 0, 8, 256, ML_ORDER_DROP);
    for (uint64_t k = 0; k < 16; k++) {
        CHECK_U64_EQ(ml_order_row(&b, k), want_block[k]);
        CHECK_U64_EQ(ml_order_row(&w, k), want_window[k]);
        CHECK_U64_EQ(ml_order_row(&g, k), want_global[k]);
    }
    CHECK_U64_EQ(ml_order_row(&h, 0), 443842090270ull);
    CHECK_U64_EQ(ml_order_row(&h, 15), 941819145285ull);
}

/* Every shuffle is a bijection of the rows; batches of every world size
 * dividing S cover the epoch as the tail rule says. */
static void test_partition(void) {
    static uint8_t seen[2100];
    static uint64_t rows[64];
    static uint8_t valid[64];
    for (int sh = 0; sh < 4; sh++)
        for (uint64_t n = 0; n < 2100; n += 349) {
            for (int tail = 0; tail < 3; tail++) {
                ml_order o = make(n, 8, n, 3, (ml_order_shuffle)sh, 0, 8, 48, (ml_order_tail)tail);
                memset(seen, 0, sizeof seen);
                for (uint64_t k = 0; k < n; k++) {
                    uint64_t r = ml_order_row(&o, k);
                    CHECK_LT(r, n);
                    CHECK_EQ(seen[r], 0);
                    seen[r] = 1;
                }
                for (uint64_t R = 1; R <= 8; R *= 2) {
                    memset(seen, 0, sizeof seen);
                    uint64_t total = 0, invalid = 0;
                    for (uint64_t r = 0; r < R; r++)
                        for (uint64_t t = 0; t < ml_order_steps(&o, r, R); t++) {
                            uint64_t got;
                            CHECK_RC(ml_order_local_batch(&o, t, r, R, rows, valid, &got));
                            if (tail != ML_ORDER_UNEVEN)
                                CHECK_U64_EQ(got, 48 / R);
                            for (uint64_t i = 0; i < got; i++) {
                                CHECK_U64_EQ(rows[i], ml_order_row(&o, (t * 48 + r + i * R) % n));
                                if (!valid[i]) {
                                    invalid++;
                                    continue;
                                }
                                CHECK_EQ(seen[rows[i]], 0);
                                seen[rows[i]] = 1;
                                total++;
                            }
                        }
                    if (tail == ML_ORDER_DROP)
                        CHECK_U64_EQ(total, n / 48 * 48);
                    else
                        CHECK_U64_EQ(total, n);
                    CHECK_U64_EQ(invalid, tail == ML_ORDER_PAD ? (n + 47) / 48 * 48 - n : 0);
                }
            }
        }
}

int main(void) {
    test_refused();
    test_golden();
    test_partition();
    CHECK(sizeof(ml_order) < 256); /* O(1) state whatever n_rows */
    printf("ok %s\n", __FILE__);
    return CHECK_PASS;
}
