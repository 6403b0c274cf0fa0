/* chunk_index4.c - walk the chunk indices of layout message versions 4 and
 * 5: single chunk, implicit, fixed array, extensible array, version 2
 * B-tree (what HDF5 writes with libver v110 and later).
 *
 * HDF5 1.10.8 lists such an index only through H5Dget_chunk_info*, a scan
 * of the whole index per chunk, so h5chunks.c read them one chunk at a
 * time through HDF5 under its one lock. This file reads them itself, once,
 * through the caller's byte source, and hands the chunks out in strictly
 * increasing linear index (row-major over the dataspace's chunk grid), as
 * chunk_index.c does for the version 1 B-tree.
 *
 * Where the chunks are, per kind (HDF5's own arithmetic, H5D*idx.c):
 *  - single chunk: the message holds the address (and, filtered, the
 *    stored size and filter mask); the dataset has one chunk.
 *  - implicit: chunk e (row-major over the grid of the maximum dimensions)
 *    lies at index address + e * chunk bytes; no filters.
 *  - fixed array (FAHD header, FADB data block): one element per chunk of
 *    the maximum grid, row-major; past 2^page_bits elements the data
 *    block is paged, a bitmap in its prefix (most significant bit first)
 *    saying which pages were ever written, each page checksummed alone.
 *  - extensible array (EAHD, EAIB index block, EASB super blocks, EADB
 *    data blocks, pages): one element per chunk, indexed row-major over
 *    the maximum grid with the unlimited dimension moved first; the index
 *    block holds the first elements and the addresses of the first data
 *    blocks and of the super blocks, a super block those of its data
 *    blocks and their page bitmaps (one bit per page, data block after
 *    data block). Elements at or past the header's "max index set" are
 *    unwritten, as HDF5 reads them.
 *  - version 2 B-tree (BTHD, BTIN, BTLF): records (address, [stored size,
 *    filter mask,] the chunk's scaled coordinates) in internal nodes and
 *    leaves, in order of the coordinates, which is row-major order.
 * A filtered chunk's stored size takes 1 + (floor(log2(chunk bytes)) + 8)
 * / 8 bytes (at most 8) under layout version 4, sizeof_size bytes under
 * version 5 (HDF5 2.0 with libver v200: found from files h5py 3.16
 * writes); element and record sizes in the headers must agree.
 *
 * Invariants:
 *  - Nothing here trusts the file. Every read lies inside [0, f->size)
 *    once f->base is added and is at most BLOCK_MAX bytes; every
 *    structure's signature, version, client or record type, owner
 *    (the header address a block names) and Jenkins lookup3 checksum is
 *    verified before a byte of it is used; a header's parameters must
 *    equal the layout message's and the sizes they imply; counts are
 *    bounded by what the structure read holds.
 *  - Blocks cannot be reached twice unnoticed: every extensible-array
 *    super and data block states its offset in the array, which must be
 *    the one its place implies; a fixed array has one data block; a
 *    version 2 B-tree's records must come out in strictly increasing
 *    coordinates (the in-order walk of a well-formed tree, and what
 *    HDF5's descent by key finds), so a node reached twice is refused at
 *    its first record, and each node's record count must be in range and
 *    its parent's subtree totals must add up.
 *  - A chunk that lies off the dataspace's current chunk grid is refused
 *    (HDF5 removes such chunks when a dataset shrinks); chunks are
 *    emitted in strictly increasing linear index, sorted first where the
 *    structure's order differs (an extensible array whose unlimited
 *    dimension is not the first), and a chunk twice is refused.
 *  - No HDF5 call, no global state, no lock.
 *
 * Workload: once per dataset. A fixed array of 10^6 filtered chunks is one
 * header, one data block prefix and ~980 page reads of ~15 KiB; a version
 * 2 B-tree of 2 KiB nodes holds ~65 chunks a leaf.
 */
#define _GNU_SOURCE
#include "chunk_index4.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "h5meta.h"
#include "source.h"

#define UNDEF UINT64_MAX
#define MAXD ML_CHUNK_INDEX_MAX_DIMS
#define BLOCK_MAX (64u << 20)  /* bytes of one structure read whole */
#define BT2_MAX_DEPTH 64       /* HDF5's depth is 16 bits; 64 levels of 1-record nodes hold 2^64 */
#define EA_MAX_BITS 63         /* log2 of the elements an extensible array may hold (HDF5 writes 32) */
#define FIND_STOP (-ECANCELED) /* find's emit: the chunk asked for is passed */

/* One chunk, for the walks whose structure order is not linear order. */
typedef struct rec4 {
    uint64_t index, offset, size;
    unsigned mask;
} rec4;

/* A scratch buffer, grown as needed. */
typedef struct buf4 {
    unsigned char *p;
    size_t cap;
} buf4;

/* The walk's fixed facts and running state. */
typedef struct w4 {
    const ml_chunk_file *f;
    const ml_chunk_index *ix;
    unsigned rank, sa, ss;
    uint64_t grid[MAXD];      /* chunks per dimension, current extent */
    uint64_t mgrid[MAXD];     /* chunks per dimension, maximum extent; UNDEF: unlimited */
    uint64_t n_grid;          /* chunks of the current grid */
    uint64_t chunk_bytes;     /* bytes of an unfiltered chunk */
    unsigned perm[MAXD];      /* the element index's dimension order, slowest first */
    int filtered;             /* elements carry a stored size and filter mask */
    unsigned size_len;        /* bytes of a filtered chunk's stored size */
    unsigned elsize;          /* bytes of an array element or the part of a record before
                                 the coordinates */
    uint64_t prev;            /* last index emitted, UNDEF before the first */
    int sorting;              /* collect into recs, sort, then emit */
    rec4 *recs;               /* owned */
    size_t n_recs, cap_recs;
    buf4 b[BT2_MAX_DEPTH + 1]; /* owned: b[0..2] for array blocks, one per B-tree level */
    ml_chunk_emit_fn emit;
    void *ctx;
} w4;

static unsigned log2_floor(uint64_t x) { return x ? 63u - (unsigned)__builtin_clzll(x) : 0; }

static int is_pow2(uint64_t x) { return x && !(x & (x - 1)); }

/* Read `len` bytes at HDF5 address `addr` into b (grown). Returns 0,
 * -ML_ECORRUPT (undefined, past the end of the file, or longer than
 * BLOCK_MAX), -ENOMEM or -errno. */
static int read_block(const w4 *w, buf4 *b, uint64_t addr, uint64_t len) {
    const ml_chunk_file *f = w->f;
    if (addr == UNDEF || addr > UINT64_MAX - f->base || f->base + addr > f->size || len > BLOCK_MAX ||
        len > f->size - (f->base + addr) || len == 0)
        return -ML_ECORRUPT;
    if (b->cap < len) {
        unsigned char *p = realloc(b->p, len);
        if (!p)
            return -ENOMEM;
        b->p = p;
        b->cap = len;
    }
    ml_io_req r = {.offset = f->base + addr, .len = len, .buf = b->p};
    int rc = ml_source_read(f->src, &r);
    return rc == -ML_ETRUNC ? -ML_ECORRUPT : rc < 0 ? rc : 0;
}

/* HDF5's metadata checksum: the last 4 bytes of p[0..len) over the rest. */
static int checksum_ok(const unsigned char *p, size_t len) {
    return len >= 4 && ml_meta_le(p + len - 4, 4) == ml_meta_checksum(p, len - 4);
}

/* Hand one chunk on (or keep it, when sorting). addr: HDF5 address,
 * UNDEF = never written (skipped). Returns 0, -ML_ECORRUPT (out of order,
 * an address that wraps), -ENOMEM or emit's code. */
static int put(w4 *w, uint64_t index, uint64_t addr, uint64_t size, unsigned mask) {
    if (addr == UNDEF)
        return 0;
    if (addr > UINT64_MAX - 1 - w->f->base || index >= w->n_grid)
        return -ML_ECORRUPT;
    uint64_t off = w->f->base + addr;
    if (w->sorting) {
        if (w->n_recs == w->cap_recs) {
            size_t cap = w->cap_recs ? 2 * w->cap_recs : 256;
            rec4 *r = cap > SIZE_MAX / sizeof *r ? NULL : realloc(w->recs, cap * sizeof *r);
            if (!r)
                return -ENOMEM;
            w->recs = r;
            w->cap_recs = cap;
        }
        w->recs[w->n_recs++] = (rec4){.index = index, .offset = off, .size = size, .mask = mask};
        return 0;
    }
    if (w->prev != UNDEF && index <= w->prev)
        return -ML_ECORRUPT;
    w->prev = index;
    return w->emit(w->ctx, index, off, size, mask);
}

/* The linear index (row-major over the current grid) of array element e,
 * which counts row-major over the maximum grid in the order w->perm.
 * Returns 1, or 0 if e is off the current grid. */
static int elem_index(const w4 *w, uint64_t e, uint64_t *index) {
    uint64_t c[MAXD];
    for (unsigned p = w->rank; p-- > 1;) {
        unsigned d = w->perm[p];
        c[d] = e % w->mgrid[d];
        e /= w->mgrid[d];
    }
    c[w->perm[0]] = e;
    uint64_t i = 0;
    for (unsigned d = 0; d < w->rank; d++) {
        if (c[d] >= w->grid[d])
            return 0;
        i = i * w->grid[d] + c[d];
    }
    *index = i;
    return 1;
}

/* Array element e at p: an address, and for filtered chunks the stored
 * size and filter mask. */
static int put_elem(w4 *w, uint64_t e, const unsigned char *p) {
    uint64_t addr = ml_meta_addr(p, w->sa), index = 0;
    if (addr == UNDEF)
        return 0;
    if (!elem_index(w, e, &index))
        return -ML_ECORRUPT; /* a chunk outside the dataspace */
    if (!w->filtered)
        return put(w, index, addr, w->chunk_bytes, 0);
    return put(w, index, addr, ml_meta_le(p + w->sa, w->size_len), (unsigned)ml_meta_le(p + w->sa + w->size_len, 4));
}

/* Bytes of a filtered chunk's stored size in the index. */
static unsigned size_len(const w4 *w) {
    if (w->ix->layout_version >= 5)
        return w->ss;
    unsigned n = 1 + (log2_floor(w->chunk_bytes) + 8) / 8;
    return n > 8 ? 8 : n;
}

/* Elements of the maximum grid (0 if a dimension is unlimited or the
 * product overflows). */
static uint64_t max_elems(const w4 *w) {
    uint64_t n = 1;
    for (unsigned d = 0; d < w->rank; d++)
        if (w->mgrid[d] == UNDEF || __builtin_mul_overflow(n, w->mgrid[d], &n))
            return 0;
    return n;
}

/* Check the index and the dataset, fill the walk's fixed facts. Returns 0,
 * 1 (no chunk to walk: an empty grid), -ML_EINVAL or -ML_ECORRUPT. */
static int setup(w4 *w, const ml_chunk_file *f, const ml_chunk_index *ix, unsigned rank, const uint64_t *dims,
                 const uint64_t *maxdims) {
    memset(w, 0, sizeof *w);
    w->f = f;
    w->ix = ix;
    w->rank = rank;
    w->prev = UNDEF;
    if (ix->kind < ML_CHUNK_INDEX_SINGLE || ix->kind > ML_CHUNK_INDEX_BTREE2 || rank == 0 ||
        rank + 1 > MAXD || ix->ndims != rank + 1)
        return -ML_EINVAL;
    if (f->sizeof_addr < 2 || f->sizeof_addr > 8 || f->sizeof_size < 2 || f->sizeof_size > 8)
        return -ML_ECORRUPT;
    w->sa = f->sizeof_addr;
    w->ss = f->sizeof_size;
    w->chunk_bytes = 1;
    for (unsigned d = 0; d <= rank; d++) {
        if (ix->dims[d] == 0)
            return -ML_EINVAL;
        if (__builtin_mul_overflow(w->chunk_bytes, ix->dims[d], &w->chunk_bytes))
            return -ML_ECORRUPT;
    }
    if (w->chunk_bytes > UINT64_C(0xFFFFFFFF)) /* HDF5: "chunk size must be < 4GB" */
        return -ML_ECORRUPT;
    w->n_grid = 1;
    for (unsigned d = 0; d < rank; d++) {
        uint64_t c = ix->dims[d];
        if (maxdims[d] != ML_CHUNK_UNLIMITED && maxdims[d] < dims[d])
            return -ML_ECORRUPT;
        w->grid[d] = dims[d] / c + (dims[d] % c != 0);
        w->mgrid[d] = maxdims[d] == ML_CHUNK_UNLIMITED ? UNDEF : maxdims[d] / c + (maxdims[d] % c != 0);
        w->perm[d] = d;
        if (w->grid[d] && w->n_grid > UINT64_MAX / w->grid[d])
            return -ML_ECORRUPT;
        w->n_grid *= w->grid[d];
    }
    w->size_len = size_len(w);
    return w->n_grid == 0 ? 1 : 0;
}

static void w4_free(w4 *w) {
    free(w->recs);
    for (unsigned i = 0; i <= BT2_MAX_DEPTH; i++)
        free(w->b[i].p);
}

static int single_walk(w4 *w) {
    const ml_chunk_index *ix = w->ix;
    if (w->n_grid != 1)
        return -ML_ECORRUPT; /* HDF5 1.10 would hand this one chunk out for every chunk */
    if (ix->flags & ML_CHUNK_FLAG_SINGLE_FILTERED)
        return put(w, 0, ix->addr, ix->single_size, ix->single_mask);
    return put(w, 0, ix->addr, w->chunk_bytes, 0);
}

static int implicit_walk(w4 *w) {
    const ml_chunk_index *ix = w->ix;
    uint64_t n_max = max_elems(w), span, down[MAXD], c[MAXD] = {0};
    if (ix->addr == UNDEF)
        return 0;
    /* Every chunk of the maximum grid is allocated, one after another. */
    if (n_max == 0 || __builtin_mul_overflow(n_max, w->chunk_bytes, &span) || ix->addr > UINT64_MAX - w->f->base ||
        w->f->base + ix->addr > w->f->size || span > w->f->size - (w->f->base + ix->addr))
        return -ML_ECORRUPT;
    down[w->rank - 1] = 1;
    for (unsigned d = w->rank - 1; d-- > 0;)
        down[d] = down[d + 1] * w->mgrid[d + 1];
    for (uint64_t i = 0; i < w->n_grid; i++) {
        uint64_t e = 0;
        for (unsigned d = 0; d < w->rank; d++)
            e += c[d] * down[d];
        int rc = put(w, i, ix->addr + e * w->chunk_bytes, w->chunk_bytes, 0);
        if (rc < 0)
            return rc;
        for (unsigned d = w->rank; d-- > 0;) { /* the next chunk, row-major */
            if (++c[d] < w->grid[d])
                break;
            c[d] = 0;
        }
    }
    return 0;
}

/* The element size an array header must state: an address, and for
 * filtered chunks the stored size and the filter mask. Sets w->filtered. */
static int client_ok(w4 *w, unsigned client, unsigned elsize) {
    if (client > 1)
        return 0;
    w->filtered = client == 1;
    w->elsize = w->sa + (w->filtered ? w->size_len + 4 : 0);
    return elsize == w->elsize;
}

static int farray_walk(w4 *w) {
    const ml_chunk_index *ix = w->ix;
    unsigned sa = w->sa, ss = w->ss;
    int rc;
    if (ix->addr == UNDEF)
        return 0;
    /* FAHD, version, client, element size, page bits, elements, data block, checksum */
    size_t hlen = 8 + (size_t)ss + sa + 4;
    if ((rc = read_block(w, &w->b[0], ix->addr, hlen)) < 0)
        return rc;
    const unsigned char *h = w->b[0].p;
    if (memcmp(h, "FAHD", 4) != 0 || h[4] != 0 || !checksum_ok(h, hlen) || !client_ok(w, h[5], h[6]))
        return -ML_ECORRUPT;
    unsigned page_bits = h[7];
    uint64_t nelmts = ml_meta_le(h + 8, ss), dblk = ml_meta_addr(h + 8 + ss, sa);
    if (page_bits != ix->farray_page_bits || page_bits == 0 || page_bits > 32 || nelmts != max_elems(w) ||
        nelmts == 0)
        return -ML_ECORRUPT;
    if (dblk == UNDEF)
        return 0; /* no chunk written yet */
    uint64_t page_n = UINT64_C(1) << page_bits, es = w->elsize;
    size_t pre = 6 + (size_t)sa; /* FADB, version, client, header address */
    if (nelmts <= page_n) {
        if (nelmts > (BLOCK_MAX - pre - 4) / es)
            return -ML_ECORRUPT;
        size_t len = pre + nelmts * es + 4;
        if ((rc = read_block(w, &w->b[1], dblk, len)) < 0)
            return rc;
        const unsigned char *b = w->b[1].p;
        if (memcmp(b, "FADB", 4) != 0 || b[4] != 0 || b[5] != h[5] || ml_meta_addr(b + 6, sa) != ix->addr ||
            !checksum_ok(b, len))
            return -ML_ECORRUPT;
        for (uint64_t e = 0; e < nelmts; e++)
            if ((rc = put_elem(w, e, b + pre + e * es)) < 0)
                return rc;
        return 0;
    }
    /* Paged: the prefix holds a bitmap of the pages written; the pages
     * follow it, each its elements and a checksum. */
    uint64_t npages = nelmts / page_n + (nelmts % page_n != 0), bm = (npages + 7) / 8;
    if (bm > BLOCK_MAX || page_n > (BLOCK_MAX - 4) / es)
        return -ML_ECORRUPT;
    size_t plen = pre + bm + 4, page_bytes = page_n * es + 4;
    if ((rc = read_block(w, &w->b[1], dblk, plen)) < 0)
        return rc;
    const unsigned char *b = w->b[1].p;
    if (memcmp(b, "FADB", 4) != 0 || b[4] != 0 || b[5] != h[5] || ml_meta_addr(b + 6, sa) != ix->addr ||
        !checksum_ok(b, plen))
        return -ML_ECORRUPT;
    const unsigned char *bits = b + pre;
    for (uint64_t p = 0; p < npages; p++) {
        if (!(bits[p / 8] & (0x80u >> (p % 8))))
            continue; /* never written: every chunk of it unwritten */
        uint64_t n = nelmts - p * page_n < page_n ? nelmts - p * page_n : page_n, at;
        if (__builtin_mul_overflow(p, page_bytes, &at) || __builtin_add_overflow(at, dblk + plen, &at) ||
            dblk > UINT64_MAX - plen)
            return -ML_ECORRUPT;
        size_t len = n * es + 4;
        if ((rc = read_block(w, &w->b[2], at, len)) < 0)
            return rc;
        if (!checksum_ok(w->b[2].p, len))
            return -ML_ECORRUPT;
        for (uint64_t j = 0; j < n; j++)
            if ((rc = put_elem(w, p * page_n + j, w->b[2].p + j * es)) < 0)
                return rc;
    }
    return 0;
}

/* The extensible array's fixed facts (H5EA__hdr_init's arithmetic). */
typedef struct ea {
    unsigned char client;
    unsigned aos;          /* bytes of a block's offset in the array */
    unsigned nsblks;       /* super blocks of the largest array */
    unsigned ib_nsblks;    /* super blocks whose data blocks the index block points to */
    uint64_t page_n;       /* elements of a data block page */
    uint64_t max_idx;      /* elements at or past this are unwritten */
    uint64_t hdr;          /* the header's address, which every block names */
} ea;

/* The data block of `n` elements at `addr`, element `e0` of the array,
 * which must state the block offset `off`, its page bitmap at bit `bit0`
 * of `bits` (NULL: not paged, or pointed to by the index block). Returns
 * 0, -ML_ECORRUPT, -ENOTSUP, -ENOMEM, -errno or emit's code. */
static int ea_dblock(w4 *w, const ea *a, uint64_t addr, uint64_t n, uint64_t e0, uint64_t off,
                     const unsigned char *bits, uint64_t bit0) {
    unsigned sa = w->sa;
    uint64_t es = w->elsize;
    size_t pre = 6 + (size_t)sa + a->aos; /* EADB, version, client, header, block offset */
    int paged = n > a->page_n, rc;
    if (paged && !bits)
        return -ENOTSUP;
    if (!paged && n > (BLOCK_MAX - pre - 4) / es)
        return -ML_ECORRUPT;
    size_t len = pre + (paged ? 0 : n * es) + 4;
    if ((rc = read_block(w, &w->b[2], addr, len)) < 0)
        return rc;
    const unsigned char *b = w->b[2].p;
    if (memcmp(b, "EADB", 4) != 0 || b[4] != 0 || b[5] != a->client || ml_meta_addr(b + 6, sa) != a->hdr ||
        ml_meta_le(b + 6 + sa, a->aos) != off || !checksum_ok(b, len))
        return -ML_ECORRUPT;
    if (!paged) {
        for (uint64_t j = 0; j < n && e0 + j < a->max_idx; j++)
            if ((rc = put_elem(w, e0 + j, b + pre + j * es)) < 0)
                return rc;
        return 0;
    }
    uint64_t npages = n / a->page_n, page_bytes = a->page_n * es + 4;
    if (a->page_n > (BLOCK_MAX - 4) / es)
        return -ML_ECORRUPT;
    for (uint64_t p = 0; p < npages && e0 + p * a->page_n < a->max_idx; p++) {
        uint64_t bit = bit0 + p, at;
        if (!(bits[bit / 8] & (0x80u >> (bit % 8))))
            continue;
        if (__builtin_mul_overflow(p, page_bytes, &at) || addr > UINT64_MAX - len ||
            __builtin_add_overflow(at, addr + len, &at))
            return -ML_ECORRUPT;
        if ((rc = read_block(w, &w->b[2], at, page_bytes)) < 0)
            return rc;
        if (!checksum_ok(w->b[2].p, page_bytes))
            return -ML_ECORRUPT;
        uint64_t first = e0 + p * a->page_n;
        for (uint64_t j = 0; j < a->page_n && first + j < a->max_idx; j++)
            if ((rc = put_elem(w, first + j, w->b[2].p + j * es)) < 0)
                return rc;
    }
    return 0;
}

static int earray_walk(w4 *w) {
    const ml_chunk_index *ix = w->ix;
    unsigned sa = w->sa, ss = w->ss, unlim = MAXD, n_unlim = 0;
    int rc;
    for (unsigned d = 0; d < w->rank; d++)
        if (w->mgrid[d] == UNDEF) {
            unlim = d;
            n_unlim++;
        }
    if (n_unlim != 1)
        return -ML_ECORRUPT; /* HDF5 uses an extensible array for one unlimited dimension */
    /* Elements count with the unlimited dimension first. */
    for (unsigned d = 0, p = 1; d < w->rank; d++)
        if (d != unlim)
            w->perm[p++] = d;
    w->perm[0] = unlim;
    w->sorting = unlim != 0;
    if (ix->addr == UNDEF)
        return 0;
    /* EAHD, version, client, element size, max bits, index block elements,
     * data block min elements, super block min pointers, page bits, six
     * statistics, index block address, checksum */
    size_t hlen = 12 + 6 * (size_t)ss + sa + 4;
    if ((rc = read_block(w, &w->b[0], ix->addr, hlen)) < 0)
        return rc;
    const unsigned char *h = w->b[0].p;
    if (memcmp(h, "EAHD", 4) != 0 || h[4] != 0 || !checksum_ok(h, hlen) || !client_ok(w, h[5], h[6]))
        return -ML_ECORRUPT;
    unsigned max_bits = h[7], idx_elmts = h[8], min_elmts = h[9], min_ptrs = h[10], page_bits = h[11];
    if (max_bits != ix->earray.max_bits || idx_elmts != ix->earray.index_elmts ||
        min_elmts != ix->earray.min_elmts || min_ptrs != ix->earray.min_ptrs || page_bits != ix->earray.page_bits ||
        max_bits == 0 || max_bits > EA_MAX_BITS || idx_elmts == 0 || !is_pow2(min_elmts) || min_ptrs < 2 ||
        !is_pow2(min_ptrs) || log2_floor(min_elmts) > max_bits || page_bits == 0 || page_bits > max_bits ||
        page_bits > 32)
        return -ML_ECORRUPT;
    ea a = {.client = h[5], .aos = (max_bits + 7) / 8, .nsblks = 1 + max_bits - log2_floor(min_elmts),
            .ib_nsblks = 2 * log2_floor(min_ptrs), .page_n = UINT64_C(1) << page_bits,
            .max_idx = ml_meta_le(h + 12 + 4 * (size_t)ss, ss), .hdr = ix->addr};
    uint64_t iblock = ml_meta_addr(h + 12 + 6 * (size_t)ss, sa);
    if (a.ib_nsblks > a.nsblks)
        return -ML_ECORRUPT;
    /* Elements past the current grid name no chunk of the dataspace: a
     * header claiming more (a damaged count, 2^62) is refused, since HDF5
     * 1.10.8 counts chunks by iterating every element it claims (fuzz smoke
     * seed 1 case 147 hung in H5Dget_num_chunks). A dataset shrunk by
     * H5Dset_extent keeps its old count: it reads through HDF5 (FALLBACK). */
    uint64_t in_grid = w->grid[w->perm[0]];
    for (unsigned p = 1; p < w->rank; p++)
        if (__builtin_mul_overflow(in_grid, w->mgrid[w->perm[p]], &in_grid))
            in_grid = UINT64_MAX;
    if (a.max_idx > in_grid)
        return -ML_ECORRUPT;
    if (iblock == UNDEF || a.max_idx == 0)
        return 0;
    /* EAIB, version, client, header address, elements, data block
     * addresses, super block addresses, checksum */
    uint64_t es = w->elsize, n_dblk = 2 * ((uint64_t)min_ptrs - 1), n_sblk = a.nsblks - a.ib_nsblks;
    size_t ilen = 6 + (size_t)sa + idx_elmts * es + (n_dblk + n_sblk) * sa + 4;
    if ((rc = read_block(w, &w->b[0], iblock, ilen)) < 0)
        return rc;
    const unsigned char *ib = w->b[0].p;
    if (memcmp(ib, "EAIB", 4) != 0 || ib[4] != 0 || ib[5] != a.client || ml_meta_addr(ib + 6, sa) != a.hdr ||
        !checksum_ok(ib, ilen))
        return -ML_ECORRUPT;
    for (uint64_t e = 0; e < idx_elmts && e < a.max_idx; e++)
        if ((rc = put_elem(w, e, ib + 6 + sa + e * es)) < 0)
            return rc;
    const unsigned char *dblks = ib + 6 + sa + idx_elmts * es, *sblks = dblks + n_dblk * sa;
    uint64_t start = 0, dblk_i = 0; /* element offset (after the index block's) and data block of super block s */
    for (unsigned s = 0; s < a.nsblks; s++) {
        uint64_t nd = UINT64_C(1) << (s / 2), dn = (UINT64_C(1) << ((s + 1) / 2)) * min_elmts;
        uint64_t e0 = idx_elmts + start;
        if (e0 < start || e0 >= a.max_idx)
            break;
        if (s < a.ib_nsblks) {
            for (uint64_t d = 0; d < nd && e0 + d * dn < a.max_idx; d++) {
                /* HDF5 states these blocks' offsets counting data blocks
                 * from the array's first, not the super block's (H5EA.c's
                 * lookup): a quirk, but what every file holds. */
                uint64_t addr = ml_meta_addr(dblks + (dblk_i + d) * sa, sa);
                if (addr != UNDEF &&
                    (rc = ea_dblock(w, &a, addr, dn, e0 + d * dn, start + (dblk_i + d) * dn, NULL, 0)) < 0)
                    return rc;
            }
        } else {
            uint64_t saddr = ml_meta_addr(sblks + (uint64_t)(s - a.ib_nsblks) * sa, sa);
            if (saddr != UNDEF) {
                /* EASB, version, client, header address, block offset,
                 * page bitmaps, data block addresses, checksum */
                int paged = dn > a.page_n;
                uint64_t npages = paged ? dn / a.page_n : 0, init = (npages + 7) / 8;
                if (nd > BLOCK_MAX / (sa + init + 1))
                    return -ML_ECORRUPT;
                size_t slen = 6 + (size_t)sa + a.aos + nd * init + nd * sa + 4;
                if ((rc = read_block(w, &w->b[1], saddr, slen)) < 0)
                    return rc;
                const unsigned char *sb = w->b[1].p, *bits = sb + 6 + sa + a.aos;
                if (memcmp(sb, "EASB", 4) != 0 || sb[4] != 0 || sb[5] != a.client || ml_meta_addr(sb + 6, sa) != a.hdr ||
                    ml_meta_le(sb + 6 + sa, a.aos) != start || !checksum_ok(sb, slen))
                    return -ML_ECORRUPT;
                for (uint64_t d = 0; d < nd && e0 + d * dn < a.max_idx; d++) {
                    uint64_t addr = ml_meta_addr(bits + nd * init + d * sa, sa);
                    if (addr != UNDEF &&
                        (rc = ea_dblock(w, &a, addr, dn, e0 + d * dn, start + d * dn, paged ? bits : NULL,
                                        d * npages)) < 0)
                        return rc;
                }
            }
        }
        if (__builtin_add_overflow(start, nd * dn, &start))
            break;
        dblk_i += nd;
    }
    return 0;
}

/* The version 2 B-tree's fixed facts (H5B2_hdr_init's arithmetic). */
typedef struct bt2 {
    unsigned type;                       /* 10 (unfiltered chunks) or 11 (filtered) */
    size_t rec;                          /* bytes of a record */
    unsigned max_nrec_size;              /* bytes of a child's record count */
    uint64_t max_nrec[BT2_MAX_DEPTH + 1];  /* records a node of each depth holds at most */
    unsigned cum_size[BT2_MAX_DEPTH + 1];  /* bytes of a child's subtree total, by depth */
    uint64_t count;                      /* records walked so far */
} bt2;

/* H5VM_limit_enc_size: bytes that hold n. */
static unsigned enc_size(uint64_t n) { return log2_floor(n) / 8 + 1; }

/* One record: address, [stored size, filter mask,] scaled coordinates. */
static int bt2_record(w4 *w, const unsigned char *r) {
    uint64_t addr = ml_meta_addr(r, w->sa), index = 0;
    const unsigned char *sc = r + w->elsize;
    if (addr == UNDEF)
        return -ML_ECORRUPT;
    for (unsigned d = 0; d < w->rank; d++) {
        uint64_t s = ml_meta_le(sc + 8 * (size_t)d, 8);
        if (s >= w->grid[d])
            return -ML_ECORRUPT; /* off the chunk grid */
        index = index * w->grid[d] + s;
    }
    if (!w->filtered)
        return put(w, index, addr, w->chunk_bytes, 0);
    return put(w, index, addr, ml_meta_le(r + w->sa, w->size_len), (unsigned)ml_meta_le(r + w->sa + w->size_len, 4));
}

/* Visit the node at `addr`, `depth` levels above the leaves, holding
 * `nrec` records (its parent says), and everything below it, in order. */
static int bt2_visit(w4 *w, bt2 *t, uint64_t addr, unsigned depth, uint64_t nrec) {
    unsigned sa = w->sa;
    size_t ptr = depth ? sa + t->max_nrec_size + t->cum_size[depth - 1] : 0;
    int rc;
    if (nrec == 0 || nrec > t->max_nrec[depth])
        return -ML_ECORRUPT;
    size_t len = 6 + nrec * t->rec + (depth ? (nrec + 1) * ptr : 0) + 4;
    if (len > w->ix->btree2.node_size)
        return -ML_ECORRUPT;
    if ((rc = read_block(w, &w->b[depth], addr, len)) < 0)
        return rc;
    const unsigned char *n = w->b[depth].p; /* deeper visits use other buffers */
    if (memcmp(n, depth ? "BTIN" : "BTLF", 4) != 0 || n[4] != 0 || n[5] != t->type || !checksum_ok(n, len))
        return -ML_ECORRUPT;
    const unsigned char *recs = n + 6, *ptrs = recs + nrec * t->rec;
    for (uint64_t i = 0; i <= nrec; i++) {
        if (depth) {
            const unsigned char *p = ptrs + i * ptr;
            uint64_t child = ml_meta_addr(p, sa), cn = ml_meta_le(p + sa, t->max_nrec_size);
            uint64_t total = depth > 1 ? ml_meta_le(p + sa + t->max_nrec_size, t->cum_size[depth - 1]) : cn;
            uint64_t before = t->count;
            if ((rc = bt2_visit(w, t, child, depth - 1, cn)) < 0)
                return rc;
            if (t->count - before != total)
                return -ML_ECORRUPT;
        }
        if (i < nrec) {
            if ((rc = bt2_record(w, recs + i * t->rec)) < 0)
                return rc;
            t->count++;
        }
    }
    return 0;
}

static int btree2_walk(w4 *w) {
    const ml_chunk_index *ix = w->ix;
    unsigned sa = w->sa, ss = w->ss;
    int rc;
    if (ix->addr == UNDEF)
        return 0;
    /* BTHD, version, type, node size, record size, depth, split and merge
     * percent, root address, root records, total records, checksum */
    size_t hlen = 16 + (size_t)sa + 2 + ss + 4;
    if ((rc = read_block(w, &w->b[0], ix->addr, hlen)) < 0)
        return rc;
    const unsigned char *h = w->b[0].p;
    bt2 t = {.type = h[5]};
    if (memcmp(h, "BTHD", 4) != 0 || h[4] != 0 || !checksum_ok(h, hlen) || (t.type != 10 && t.type != 11))
        return -ML_ECORRUPT;
    w->filtered = t.type == 11;
    w->elsize = sa + (w->filtered ? w->size_len + 4 : 0);
    t.rec = w->elsize + 8 * (size_t)w->rank;
    uint64_t node_size = ml_meta_le(h + 6, 4), depth = ml_meta_le(h + 12, 2);
    uint64_t root = ml_meta_addr(h + 16, sa), root_n = ml_meta_le(h + 16 + sa, 2), total = ml_meta_le(h + 18 + sa, ss);
    if (node_size != ix->btree2.node_size || h[14] != ix->btree2.split_percent ||
        h[15] != ix->btree2.merge_percent || ml_meta_le(h + 10, 2) != t.rec || node_size > BLOCK_MAX ||
        node_size < 10 + t.rec || depth > BT2_MAX_DEPTH)
        return -ML_ECORRUPT;
    t.max_nrec[0] = (node_size - 10) / t.rec;
    t.max_nrec_size = enc_size(t.max_nrec[0]);
    uint64_t cum = t.max_nrec[0];
    for (unsigned u = 1; u <= depth; u++) {
        size_t ptr = sa + t.max_nrec_size + t.cum_size[u - 1];
        if (node_size < 10 + ptr || (t.max_nrec[u] = (node_size - 10 - ptr) / (t.rec + ptr)) == 0 ||
            __builtin_mul_overflow(t.max_nrec[u] + 1, cum, &cum) || __builtin_add_overflow(cum, t.max_nrec[u], &cum))
            return -ML_ECORRUPT;
        t.cum_size[u] = enc_size(cum);
    }
    if (root == UNDEF || (root_n == 0 && depth == 0 && total == 0))
        return 0; /* an empty tree */
    if ((rc = bt2_visit(w, &t, root, (unsigned)depth, root_n)) < 0)
        return rc;
    return t.count == total ? 0 : -ML_ECORRUPT;
}

static int rec_cmp(const void *a, const void *b) {
    uint64_t x = ((const rec4 *)a)->index, y = ((const rec4 *)b)->index;
    return x < y ? -1 : x > y;
}

/* Emit what a sorting walk collected, in order; a chunk twice is corrupt. */
static int flush_sorted(w4 *w) {
    if (w->n_recs > 1)
        qsort(w->recs, w->n_recs, sizeof *w->recs, rec_cmp);
    for (size_t i = 0; i < w->n_recs; i++) {
        const rec4 *r = &w->recs[i];
        if (i > 0 && r->index == w->recs[i - 1].index)
            return -ML_ECORRUPT;
        int rc = w->emit(w->ctx, r->index, r->offset, r->size, r->mask);
        if (rc < 0)
            return rc;
    }
    return 0;
}

int ml_chunk_index4_walk(const ml_chunk_file *f, const ml_chunk_index *ix, unsigned rank, const uint64_t *dims,
                         const uint64_t *maxdims, ml_chunk_emit_fn emit, void *ctx) {
    w4 w;
    int rc = setup(&w, f, ix, rank, dims, maxdims);
    if (rc != 0)
        return rc < 0 ? rc : 0;
    w.emit = emit;
    w.ctx = ctx;
    switch (ix->kind) {
    case ML_CHUNK_INDEX_SINGLE: rc = single_walk(&w); break;
    case ML_CHUNK_INDEX_IMPLICIT: rc = implicit_walk(&w); break;
    case ML_CHUNK_INDEX_FARRAY: rc = farray_walk(&w); break;
    case ML_CHUNK_INDEX_EARRAY: rc = earray_walk(&w); break;
    default: rc = btree2_walk(&w); break;
    }
    if (rc == 0 && w.sorting)
        rc = flush_sorted(&w);
    w4_free(&w);
    return rc;
}

/* find's emit: keep the chunk asked for, stop once it is passed. */
typedef struct find_ctx {
    uint64_t target, offset, size;
    unsigned mask;
} find_ctx;

static int find_one(void *ctx_, uint64_t index, uint64_t offset, uint64_t size, unsigned mask) {
    find_ctx *c = ctx_;
    if (index < c->target)
        return 0;
    if (index == c->target) {
        c->offset = offset;
        c->size = size;
        c->mask = mask;
    }
    return FIND_STOP;
}

int ml_chunk_index4_find(const ml_chunk_file *f, const ml_chunk_index *ix, unsigned rank, const uint64_t *dims,
                         const uint64_t *maxdims, uint64_t index, uint64_t *offset, uint64_t *size,
                         unsigned *mask) {
    w4 w;
    *offset = UNDEF;
    *size = 0;
    *mask = 0;
    int rc = setup(&w, f, ix, rank, dims, maxdims);
    w4_free(&w);
    if (rc != 0)
        return rc < 0 ? rc : -ML_EINVAL; /* an empty grid holds no chunk `index` */
    if (index >= w.n_grid)
        return -ML_EINVAL;
    find_ctx c = {.target = index, .offset = UNDEF};
    rc = ml_chunk_index4_walk(f, ix, rank, dims, maxdims, find_one, &c);
    if (rc == FIND_STOP)
        rc = 0;
    if (rc == 0 && c.offset != UNDEF) {
        *offset = c.offset;
        *size = c.size;
        *mask = c.mask;
    }
    return rc;
}
