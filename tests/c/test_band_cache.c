/* test_band_cache.c - band_cache.c, the Reader's decoded-band cache: look-up
 * through the hash table across its growth (thousands of bands), LRU
 * eviction that skips pinned bands, a second insert of the same band left
 * private, the auto limit sized from the datasets seen (clamped by the
 * budget, floored at the minimum), an explicit limit, and the stats. */
#include "check.h"

#include "band_cache.h"

/* A layout that only carries what the cache looks at: a decoded size. */
static ml_layout *fake_layout(uint64_t n_rows, size_t row_bytes) {
    ml_layout *L = ml_layout_new();
    CHECK(L != NULL);
    L->n_rows = n_rows;
    L->row_bytes = row_bytes;
    return L;
}

/* A decoded band of `bytes` whose first byte is `tag`, handed to the cache. */
static void put(ml_band_cache *c, ml_layout *L, uint64_t index, size_t bytes, unsigned char tag, int expect_cached) {
    ml_band_ref b = {.buf = malloc(bytes), .index = index, .private_buf = 1};
    CHECK(b.buf != NULL);
    b.buf[0] = tag;
    ml_band_cache_insert(c, L, &b, bytes);
    CHECK_EQ(b.e != NULL, expect_cached);
    ml_band_cache_release(c, &b);
}

static int has(ml_band_cache *c, ml_layout *L, uint64_t index, int tag) {
    ml_band_ref r;
    if (!ml_band_cache_lookup(c, L, index, &r, 0))
        return 0;
    CHECK_EQ(r.buf[0], tag);
    ml_band_cache_release(c, &r);
    return 1;
}

static void test_many_bands_and_lru(void) {
    ml_band_cache c;
    ml_layout *L = fake_layout(1u << 20, 64), *M = fake_layout(1u << 20, 64);
    CHECK_RC(ml_band_cache_init(&c, 5000 * 64, 0, 2)); /* room for 5000 bands of 64 bytes */
    for (uint64_t i = 0; i < 5000; i++)
        put(&c, i % 2 ? L : M, i, 64, (unsigned char)i, 1);
    for (uint64_t i = 0; i < 5000; i++) {
        CHECK(has(&c, i % 2 ? L : M, i, (unsigned char)i));
        CHECK(!has(&c, i % 2 ? M : L, i, 0)); /* keyed by dataset too */
    }
    /* Touch band 0 (now the most recent), pin band 1, then insert more:
     * the oldest unpinned ones go first, never 0 or the pinned 1. */
    CHECK(has(&c, M, 0, 0));
    ml_band_ref pin;
    CHECK(ml_band_cache_lookup(&c, L, 1, &pin, 0));
    for (uint64_t i = 5000; i < 5010; i++)
        put(&c, L, i, 64, 7, 1);
    CHECK(has(&c, M, 0, 0));
    CHECK(has(&c, L, 1, 1));
    for (uint64_t i = 2; i < 12; i++)
        CHECK(!has(&c, i % 2 ? L : M, i, 0));
    CHECK(has(&c, M, 12, 12));
    ml_band_cache_release(&c, &pin);
    /* The same band again: the cached one stays, the new one stays private. */
    put(&c, M, 0, 64, 99, 0);
    CHECK(has(&c, M, 0, 0));
    ml_band_cache_stats st;
    ml_band_cache_get_stats(&c, &st);
    CHECK_EQ(st.evictions, 10);
    CHECK_EQ(st.bytes, 5000 * 64);
    CHECK_EQ(st.limit, 5000 * 64);
    CHECK_EQ(st.wanted, 2 * (size_t)(1u << 20) * 64);
    ml_band_cache_destroy(&c);
    ml_layout_unref(L);
    ml_layout_unref(M);
}

static void test_auto_limit(void) {
    ml_band_cache c;
    const size_t MiB = 1u << 20;
    /* Two datasets of 48 MiB decoded: the auto limit grows to hold both. */
    ml_layout *A = fake_layout(48 * 1024, 1024), *B = fake_layout(48 * 1024, 1024);
    CHECK_RC(ml_band_cache_init(&c, 0, 1024 * MiB, 2));
    ml_band_cache_stats st;
    ml_band_cache_get_stats(&c, &st);
    CHECK_EQ(st.limit, ML_BAND_CACHE_MIN_BYTES);
    put(&c, A, 0, MiB, 1, 1);
    ml_band_cache_get_stats(&c, &st);
    CHECK_EQ(st.limit, ML_BAND_CACHE_MIN_BYTES); /* 48 MiB seen: the floor */
    put(&c, B, 0, MiB, 2, 1);
    ml_band_cache_get_stats(&c, &st);
    CHECK_EQ(st.limit, 96 * MiB);
    CHECK_EQ(st.wanted, 96 * MiB);
    /* Every band of both fits: nothing is evicted. */
    for (uint64_t i = 1; i < 48; i++) {
        put(&c, A, i, MiB, 1, 1);
        put(&c, B, i, MiB, 2, 1);
    }
    ml_band_cache_get_stats(&c, &st);
    CHECK_EQ(st.evictions, 0);
    CHECK_EQ(st.bytes, 96 * MiB);
    ml_band_cache_destroy(&c);
    /* A budget below what the data wants caps it, below the floor too. */
    CHECK_RC(ml_band_cache_init(&c, 0, 8 * MiB, 2));
    for (uint64_t i = 0; i < 12; i++)
        put(&c, A, i, MiB, 1, 1);
    ml_band_cache_get_stats(&c, &st);
    CHECK_EQ(st.limit, 8 * MiB);
    CHECK_EQ(st.bytes, 8 * MiB);
    CHECK_EQ(st.evictions, 4);
    CHECK_EQ(st.wanted, 48 * MiB);
    /* A band larger than the limit is never cached. */
    put(&c, A, 100, 9 * MiB, 1, 0);
    ml_band_cache_destroy(&c);
    ml_layout_unref(A);
    ml_layout_unref(B);
}

int main(void) {
    test_many_bands_and_lru();
    test_auto_limit();
    CHECK_DONE();
}
