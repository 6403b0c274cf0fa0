/* test_source.c - the byte-source seam (source.h). Two sources of this
 * file's own, a few dozen lines each, stand in for the POSIX source under
 * real HDF5 layouts: a memory source (the file's bytes in a buffer, as a
 * remote source would hold a fetched range) and a wrapping source that
 * counts every read it passes on and fails the n-th batched request with
 * EIO (what fault.c does inside the POSIX engine). Checked: rows fetched
 * through them equal rows fetched from the file, for contiguous data and
 * for deflated chunks found by the core's own B-tree descent and one-pass
 * walk; those walks and the data reads both reach the source (counted);
 * an injected failure comes back as the fetch's error naming the dataset,
 * and the next fetch succeeds; the last reference frees each source once.
 * Then the optional ops: a source without them says it cannot tell what is
 * resident and takes prefetch hints as no-ops; the POSIX source counts
 * resident bytes exactly (partial pages too), sees pages dropped from the
 * page cache, brings them back with a prefetch, and answers for a range
 * past the mapping it made before the file grew. */
#include "check.h"

#include <fcntl.h>
#include <stdatomic.h>

#include "fetch.h"
#include "h5.h"
#include "h5gen.h"
#include "h5internal.h"
#include "io.h"
#include "source.h"

/* ---- a memory source ---- */

typedef struct mem_source {
    ml_source base;
    unsigned char *data; /* owned */
    size_t size;
} mem_source;

typedef struct mem_io {
    ml_io base;
} mem_io;

static int destroyed_mem, destroyed_wrap;

static int mem_copy(const mem_source *m, ml_io_req *r) {
    size_t avail = r->offset < m->size ? m->size - (size_t)r->offset : 0;
    size_t n = avail < r->len ? avail : r->len;
    if (n)
        memcpy(r->buf, m->data + r->offset, n);
    r->result = (ssize_t)n;
    return n < r->len ? -ML_ETRUNC : 0;
}

static int mem_io_read(ml_io *io, ml_io_req *reqs, size_t n) {
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        int one = mem_copy((mem_source *)io->src, &reqs[i]);
        rc = rc < 0 ? rc : one;
    }
    return rc;
}

static void mem_io_close(ml_io *io) { free(io); }

static const ml_io_ops mem_io_ops = {.read = mem_io_read, .close = mem_io_close};

static int mem_io_open(ml_source *s, unsigned depth, ml_io_mode mode, ml_io **out) {
    (void)depth, (void)mode;
    mem_io *io = calloc(1, sizeof *io);
    if (!io)
        return -ENOMEM;
    ml_io_init(&io->base, &mem_io_ops, s);
    *out = &io->base;
    return 0;
}

static int mem_read(ml_source *s, ml_io_req *r) { return mem_copy((mem_source *)s, r); }

static int mem_identify(ml_source *s, ml_source_id *out) {
    mem_source *m = (mem_source *)s;
    *out = (ml_source_id){.dev = 0, .ino = (uint64_t)(uintptr_t)m->data, .size = m->size};
    return 0;
}

static void mem_destroy(ml_source *s) {
    mem_source *m = (mem_source *)s;
    free(m->data);
    free(m);
    destroyed_mem++;
}

static const ml_source_ops mem_ops = {.kind = "memory", .io_open = mem_io_open, .read = mem_read,
                                      .identify = mem_identify, .destroy = mem_destroy};

static ml_source *mem_source_of_file(const char *path) {
    FILE *fp = fopen(path, "rb");
    CHECK(fp != NULL);
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    mem_source *m = calloc(1, sizeof *m);
    m->data = malloc((size_t)n);
    m->size = (size_t)n;
    CHECK_EQ(fread(m->data, 1, (size_t)n, fp), (size_t)n);
    fclose(fp);
    ml_source_init(&m->base, &mem_ops, 1);
    return &m->base;
}

/* ---- a wrapping source: counts, and fails the fail_at-th batched request ---- */

typedef struct wrap_source {
    ml_source base;
    ml_source *inner;               /* owned reference */
    _Atomic unsigned long sync_reads;   /* ml_source_read calls */
    _Atomic unsigned long batch_reqs;   /* requests in ml_io_read batches */
    unsigned long fail_at;          /* 0: none; else this batched request (1-based) fails with EIO */
} wrap_source;

typedef struct wrap_io {
    ml_io base;
    ml_io *inner;                   /* owned */
} wrap_io;

static int wrap_io_read(ml_io *io_, ml_io_req *reqs, size_t n) {
    wrap_io *io = (wrap_io *)io_;
    wrap_source *w = (wrap_source *)io_->src;
    unsigned long first = atomic_fetch_add(&w->batch_reqs, n) + 1;
    int rc = ml_io_read(io->inner, reqs, n);
    if (w->fail_at >= first && w->fail_at < first + n) {
        reqs[w->fail_at - first].result = -EIO;
        return -EIO;
    }
    return rc;
}

static void wrap_io_close(ml_io *io_) {
    wrap_io *io = (wrap_io *)io_;
    ml_io_close(io->inner);
    free(io);
}

static const ml_io_ops wrap_io_ops = {.read = wrap_io_read, .close = wrap_io_close};

static int wrap_io_open(ml_source *s, unsigned depth, ml_io_mode mode, ml_io **out) {
    wrap_io *io = calloc(1, sizeof *io);
    if (!io)
        return -ENOMEM;
    int rc = ml_io_open(&io->inner, ((wrap_source *)s)->inner, depth, mode);
    if (rc < 0) {
        free(io);
        return rc;
    }
    ml_io_init(&io->base, &wrap_io_ops, s);
    *out = &io->base;
    return 0;
}

static int wrap_read(ml_source *s, ml_io_req *r) {
    wrap_source *w = (wrap_source *)s;
    atomic_fetch_add(&w->sync_reads, 1);
    return ml_source_read(w->inner, r);
}

static int wrap_identify(ml_source *s, ml_source_id *out) { return ml_source_identify(((wrap_source *)s)->inner, out); }

static void wrap_destroy(ml_source *s) {
    ml_source_unref(((wrap_source *)s)->inner);
    free(s);
    destroyed_wrap++;
}

static const ml_source_ops wrap_ops = {.kind = "wrap", .io_open = wrap_io_open, .read = wrap_read,
                                       .identify = wrap_identify, .destroy = wrap_destroy};

/* Takes over the caller's reference to inner. */
static wrap_source *wrap(ml_source *inner) {
    wrap_source *w = calloc(1, sizeof *w);
    w->inner = inner;
    ml_source_init(&w->base, &wrap_ops, inner->align);
    return w;
}

/* ---- the tests ---- */

static const char *g_file;

static h5spec specs[] = {
    {.path = "/contig", .tc = TC_I32, .ndim = 2, .dims = {500, 3}},
    {.path = "/zip", .tc = TC_I64, .ndim = 2, .dims = {1000, 4}, .chunk = {10, 4}, .deflate = 4, .shuffle = 1},
};

/* Every row of `path` read from the file as the layout opened it. */
static void *rows_from_file(const char *path, size_t *bytes) {
    ml_layout *L = NULL;
    ml_fetcher *f = NULL;
    CHECK_RC(ml_layout_open(g_file, path, &L, NULL));
    *bytes = L->n_rows * L->row_bytes;
    void *buf = malloc(*bytes);
    CHECK_RC(ml_fetcher_open(&f, L, ML_IO_AUTO, NULL));
    CHECK_RC(ml_fetch_rows(f, 0, L->n_rows, buf, NULL));
    ml_fetcher_close(f);
    ml_layout_unref(L);
    return buf;
}

/* Point a freshly opened layout at another source, before anything read
 * it: the source is otherwise fixed at open. The HDF5 state's index walk
 * reads the layout's source too. */
static void swap_source(ml_layout *L, ml_source *src) {
    ml_source_unref(L->src);
    L->src = src;
    ml_h5(L)->cfile.src = src;
}

static void test_through(const char *path) {
    size_t bytes = 0;
    unsigned char *want = rows_from_file(path, &bytes);
    int mem0 = destroyed_mem, wrap0 = destroyed_wrap;
    ml_layout *L = NULL;
    ml_fetcher *f = NULL;
    ml_error err;
    CHECK_RC(ml_layout_open(g_file, path, &L, NULL));
    ml_source *file_src = ml_source_ref(L->src);
    wrap_source *w = wrap(mem_source_of_file(g_file));
    CHECK(ml_source_same(&w->base, &w->base));
    CHECK(!ml_source_same(&w->base, file_src));
    swap_source(L, &w->base);
    ml_source_unref(file_src);

    /* Row by row in blocks, so chunked data is looked up one chunk at a
     * time first and then walked in one pass. */
    unsigned char *got = calloc(1, bytes);
    CHECK_RC(ml_fetcher_open(&f, L, ML_IO_AUTO, NULL));
    for (uint64_t r = 0; r < L->n_rows; r += 37) {
        uint64_t n = L->n_rows - r < 37 ? L->n_rows - r : 37;
        CHECK_RC(ml_fetch_rows(f, r, n, got + r * L->row_bytes, NULL));
    }
    CHECK_MEM_EQ(got, want, bytes);
    CHECK_GT(atomic_load(&w->batch_reqs), 0);
    if (L->storage == ML_STORE_CHUNKED) {
        /* The B-tree descent and the one-pass walk read through it too. */
        CHECK_GT(atomic_load(&w->sync_reads), 0);
        CHECK_EQ(ml_h5(L)->table_state, ML_TABLE_WALKED);
    }

    /* A failure the source injects is the fetch's error; the next read is whole. */
    w->fail_at = atomic_load(&w->batch_reqs) + 1;
    ml_error_clear(&err);
    memset(got, 0, bytes);
    CHECK_ERR(ml_fetch_rows(f, 0, L->n_rows, got, &err), -EIO);
    CHECK(strstr(err.msg, "read failed") != NULL);
    CHECK(strstr(err.msg, path) != NULL);
    CHECK_RC(ml_fetch_rows(f, 0, L->n_rows, got, NULL));
    CHECK_MEM_EQ(got, want, bytes);

    /* The fetcher's read context holds a reference: the source outlives the
     * layout's until the fetcher closes. */
    ml_layout_ref(L);
    ml_layout_unref(L);
    CHECK_EQ(destroyed_wrap, wrap0);
    ml_fetcher_close(f);
    ml_layout_unref(L);
    CHECK_EQ(destroyed_wrap, wrap0 + 1);
    CHECK_EQ(destroyed_mem, mem0 + 1);
    free(got);
    free(want);
}

/* Optional ops absent: resident cannot tell, prefetch does nothing. */
static void test_optional_ops_absent(void) {
    ml_source *m = mem_source_of_file(g_file);
    uint64_t got = 7;
    CHECK_ERR(ml_source_resident(m, 0, 4096, &got), -EOPNOTSUPP);
    CHECK_RC(ml_source_prefetch(m, 0, 4096));
    ml_source_unref(m);
}

static uint64_t resident_of(ml_source *s, uint64_t off, uint64_t len) {
    uint64_t got = UINT64_MAX;
    CHECK_RC(ml_source_resident(s, off, len, &got));
    CHECK_LE(got, len);
    return got;
}

/* The POSIX source: mincore through its map, fadvise for prefetch. */
static void test_posix_resident(void) {
    const char *path = check_path("resident.bin");
    enum { SIZE = 1 << 20 };
    unsigned char *buf = malloc(SIZE);
    for (size_t i = 0; i < SIZE; i++)
        buf[i] = (unsigned char)(i * 13);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    CHECK(fd >= 0);
    CHECK_EQ(write(fd, buf, SIZE), SIZE);
    CHECK_RC(fsync(fd));
    ml_source *src = NULL;
    CHECK_RC(ml_source_posix_adopt(fd, &src));
    /* Just written: in the page cache, to the byte (partial pages too). */
    CHECK_EQ(resident_of(src, 0, SIZE), SIZE);
    CHECK_EQ(resident_of(src, 100, 50), 50);
    CHECK_EQ(resident_of(src, 4000, 5000), 5000);
    CHECK_EQ(resident_of(src, 123, 0), 0);
    uint64_t got;
    CHECK_ERR(ml_source_resident(src, UINT64_MAX - 10, 100, &got), -EINVAL);
    /* Past the end of the file: nothing resident there. */
    CHECK_EQ(resident_of(src, SIZE, 8192), 0);

    /* Dropped from the cache (clean pages after fsync), then prefetched
     * back. A filesystem that keeps its pages (tmpfs) cannot show the drop. */
    CHECK_EQ(posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED), 0);
    uint64_t left = resident_of(src, 0, SIZE);
    if (left < SIZE) {
        CHECK_RC(ml_source_prefetch(src, 0, SIZE));
        uint64_t end = check_now_ms() + 10000;
        while (resident_of(src, 0, SIZE) < SIZE && check_now_ms() < end)
            usleep(1000);
        CHECK_EQ(resident_of(src, 0, SIZE), SIZE);
    } else {
        printf("note: pages stay resident after POSIX_FADV_DONTNEED here (tmpfs?)\n");
    }
    CHECK_RC(ml_source_prefetch(src, 0, 0));
    CHECK_RC(ml_source_prefetch(src, UINT64_MAX - 10, 100)); /* out of range: ignored */

    /* The file grows past the map made above: its new bytes are answered
     * through a map of their own. */
    CHECK_EQ(pwrite(fd, buf, SIZE, SIZE), SIZE);
    CHECK_EQ(resident_of(src, SIZE + 10, 4096), 4096);
    CHECK_EQ(resident_of(src, SIZE - 4096, 8192), 8192); /* across the map's end */
    ml_source_unref(src); /* closes fd, unmaps */
    free(buf);
}

int main(void) {
    g_file = check_path("source.h5");
    hid_t fid = h5gen_create(g_file);
    for (size_t i = 0; i < sizeof specs / sizeof specs[0]; i++) {
        h5gen_type(&specs[i]);
        size_t n = h5gen_elems(&specs[i]), esz = H5Tget_size(specs[i].type);
        unsigned char *data = malloc(n * esz);
        for (size_t k = 0; k < n * esz; k++)
            data[k] = (unsigned char)(k * 7 + k / 13);
        h5gen_dataset(fid, &specs[i], data);
        free(data);
    }
    H5Fclose(fid);
    for (size_t i = 0; i < sizeof specs / sizeof specs[0]; i++)
        test_through(specs[i].path);
    test_optional_ops_absent();
    test_posix_resident();
    CHECK_DONE();
}
