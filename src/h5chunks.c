/* h5chunks.c - where an HDF5 dataset's chunks lie: the chunk table's
 * look-ups, its one-pass fill and the protocol that publishes it.
 *
 * Invariants:
 *  - The table (chunk_table.c: its cache, and its one publication) and the
 *    fields that say how it fills (table_state, table_why, lookups) change
 *    only under the HDF5 lock. Answers for a chunk are written once (the
 *    first stands), so a reader never sees one change.
 *  - The table fills in one of two ways. One chunk at a time, at its first
 *    touch: in a v1 B-tree by our own descent by key (chunk_index.c,
 *    O(depth) reads, as H5Dread finds it); in other indices by asking HDF5
 *    (H5Dget_chunk_info_by_coord, which in 1.10 scans the index up to that
 *    chunk: O(n) per chunk, and in a damaged index may find an entry
 *    H5Dread, which descends by key, would not). Either answer is
 *    confirmed by key with H5Dget_chunk_storage_size, and one that differs
 *    is marked bad, which reads as corrupt data. In one pass: after
 *    LOOKUPS_BEFORE_FILL look-ups, one thread,
 *    holding the lock throughout, walks the index (chunk_index.c, for a
 *    layout-3 v1 B-tree, finding exactly what descent by key finds;
 *    chunk_index4.c for the layout 4/5 kinds; H5Dchunk_iter, where this
 *    HDF5 has it, for what neither walks),
 *    checks the result against HDF5 (the chunk count, a sample by key, the
 *    ends by coordinate, every answer already given), and only then
 *    publishes it. A v1 B-tree that is malformed or disagrees is CORRUPT:
 *    every chunk read of it is an error (H5Dread refuses such trees in
 *    part, and which part is not ours to guess). Any other pass that
 *    fails (a layout 4/5 index malformed or disagreeing with HDF5 too)
 *    publishes nothing and leaves the table to HDF5 for good (FALLBACK,
 *    the reason in table_why): slower, and still never a guess.
 *  - The table is sized by the chunks the index holds (bounded by HDF5's
 *    count and by the file's size), never by the grid the dataspace claims.
 *
 * Workload: a few look-ups by coordinate and, for a dataset read further,
 * one pass over its chunk index (for 10^6 chunks ~0.2 s with its check,
 * under the lock), after which every look-up is a lock-free binary search
 * of the table. Waiting LOOKUPS_BEFORE_FILL look-ups first keeps a dataset
 * of which one row is read from paying for the pass and its check (several
 * look-ups' worth), while a dataset that is streamed pays a few cheap
 * look-ups of its first chunks more.
 */
#include "h5internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* Look-ups one chunk at a time before the chunk table is filled in one
 * pass: the pass and its check cost about as much as this many look-ups
 * by coordinate. */
#define LOOKUPS_BEFORE_FILL 8

/* Element coordinates of chunk `index`'s corner. */
static void chunk_coord(const ml_layout *L, uint64_t index, hsize_t *coord) {
    uint64_t rest = index;
    for (int d = (int)L->ndim - 1; d >= 0; d--) {
        coord[d] = (rest % L->grid[d]) * L->chunk[d];
        rest /= L->grid[d];
    }
}

/* HDF5's address of a chunk as a file offset, UINT64_MAX if undefined or
 * past any file. */
static uint64_t file_offset(const ml_layout *L, haddr_t addr) {
    ml_h5_dataset *H = ml_h5(L);
    if (addr == HADDR_UNDEF || (uint64_t)addr > UINT64_MAX - 1 - H->api_base)
        return UINT64_MAX;
    return (uint64_t)addr + H->api_base;
}

/* H5Ewalk2's callback: count the frames, keep the innermost's text. */
typedef struct error_walk {
    unsigned frames;
    const char *innermost;
} error_walk;

static herr_t note_frame(unsigned n, const H5E_error2_t *e, void *ctx) {
    error_walk *w = ctx;
    (void)n;
    w->frames++;
    w->innermost = e->desc;
    return 0;
}

/* Did the HDF5 call that just failed fail only because the chunk it
 * looked up by key has no storage? HDF5 1.10 says so with an error of two
 * frames; a failed descent (a damaged index) leaves deeper ones. Caller
 * holds h5_mutex. */
static int failed_unallocated(void) {
    error_walk w = {0};
    if (H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, note_frame, &w) < 0)
        return 0;
    return w.frames <= 2 && w.innermost && strstr(w.innermost, "not allocated");
}

/* The stored size of chunk `index` as HDF5's read finds it: by key from
 * the index's root (H5Dget_chunk_storage_size, O(log n) in a B-tree),
 * 0 if never written. *written (if not NULL) says whether the index holds
 * the chunk at all: HDF5 1.10 fails with "not allocated" for a chunk it
 * does not hold, so a 0 it returns is a chunk stored with size 0 (corrupt;
 * newer HDF5 may return 0 for both, and then it counts as not written).
 * Caller holds h5_mutex. Returns 0 or -ML_EHDF5. */
static int keyed_size_ex(ml_layout *L, uint64_t index, uint64_t *size, int *written) {
    ml_h5_dataset *H = ml_h5(L);
    hsize_t coord[H5S_MAX_RANK], nbytes = 0;
    int held = 1;
    chunk_coord(L, index, coord);
    if (H5Dget_chunk_storage_size((hid_t)H->h5_dset, coord, &nbytes) < 0) {
        if (!failed_unallocated())
            return -ML_EHDF5;
        nbytes = 0;
        held = 0;
    } else if (nbytes == 0 && (ml_h5_lib_ge(1, 11, 0) || H->cindex.kind == ML_CHUNK_INDEX_NONE ||
                                H->cindex.addr == UINT64_MAX)) {
        held = 0; /* (1.10 also returns 0 when no chunk is stored at all: no index yet) */
    }
    *size = nbytes;
    if (written)
        *written = held;
    return 0;
}

static int keyed_size(ml_layout *L, uint64_t index, uint64_t *size) { return keyed_size_ex(L, index, size, NULL); }

/* Does a keyed size agree with an entry's? For unfiltered data HDF5's
 * keyed look-up reports the chunk's full size whatever the index stores
 * (and H5Dread reads that many bytes), so only "written or not" can be
 * compared there. */
static int keyed_agrees(const ml_layout *L, uint64_t keyed, const ml_chunk_info *ci) {
    if (ci->addr == UINT64_MAX)
        return keyed == 0;
    return L->pipeline.n_filters == 0 ? keyed != 0 || ci->size == 0 : keyed == ci->size;
}

/* Ask HDF5 where chunk `index` is. HDF5 1.10's answer by coordinate comes
 * from a scan over every entry of the index, where H5Dread descends by
 * key: in a damaged index the two can differ, so the answer is confirmed
 * by key (same stored size; never written both ways) and marked bad when
 * it is not. Caller holds h5_mutex. Returns 0 or -ML_EHDF5. */
static int lookup_by_coord(ml_layout *L, uint64_t index, ml_chunk_info *out) {
    ml_h5_dataset *H = ml_h5(L);
    hsize_t coord[H5S_MAX_RANK];
    chunk_coord(L, index, coord);
    unsigned mask = 0;
    haddr_t addr = HADDR_UNDEF;
    hsize_t size = 0;
    uint64_t keyed = 0;
    if (H5Dget_chunk_info_by_coord((hid_t)H->h5_dset, coord, &mask, &addr, &size) < 0 ||
        keyed_size(L, index, &keyed) < 0)
        return -ML_EHDF5;
    uint64_t off = file_offset(L, addr);
    *out = (ml_chunk_info){.addr = off, .size = off == UINT64_MAX ? 0 : size, .filter_mask = mask};
    if (addr != HADDR_UNDEF && off == UINT64_MAX)
        out->bad = "its address lies past any file";
    else if (!keyed_agrees(L, keyed, out))
        out->bad = "the chunk index answers differently by key than by coordinate";
    return 0;
}

static int lookup_via_hdf5(ml_layout *L, uint64_t index, ml_chunk_info *out);

/* Look chunk `index` up in a v1 B-tree ourselves, descending by key as
 * H5Dread does (chunk_index.c: O(depth) reads, each node checked), and
 * confirm the answer by key with HDF5. A malformed node on the way makes
 * the table CORRUPT; a failure to read the index falls back to HDF5's
 * answer by coordinate. Caller holds h5_mutex. Returns 0, -ML_ECORRUPT
 * or -ML_EHDF5. */
static int lookup_by_key(ml_layout *L, uint64_t index, ml_chunk_info *out) {
    ml_h5_dataset *H = ml_h5(L);
    uint64_t off = UINT64_MAX, size = 0, keyed = 0;
    unsigned mask = 0;
    int rc = ml_chunk_index_find(&H->cfile, &H->cindex, L->ndim, L->dims, NULL, index, &off, &size, &mask);
    if (rc == -ML_ECORRUPT) {
        H->table_state = ML_TABLE_CORRUPT;
        H->table_why = "a node of the chunk index is malformed";
        return rc;
    }
    if (rc < 0)
        return lookup_via_hdf5(L, index, out);
    if (keyed_size(L, index, &keyed) < 0)
        return -ML_EHDF5;
    *out = (ml_chunk_info){.addr = off, .size = size, .filter_mask = mask};
    if (!keyed_agrees(L, keyed, out))
        out->bad = "the chunk index disagrees with HDF5's keyed look-up";
    return 0;
}

int ml_h5_read_chunk(ml_layout *L, uint64_t index, void *buf, uint64_t size, unsigned *mask, ml_error *err) {
    ml_h5_dataset *H = ml_h5(L);
    hsize_t coord[H5S_MAX_RANK];
    uint64_t now = 0;
    uint32_t filters = 0;
    int rc = 0;
    chunk_coord(L, index, coord);
    ml_h5_lock();
    /* H5Dread_chunk writes as many bytes as HDF5's look-up finds: the same
     * look-up must still find `size`, the buffer's. */
    if (keyed_size(L, index, &now) < 0)
        rc = -ML_EHDF5;
    else if (now != size)
        rc = -ML_ECORRUPT;
    else if (H5Dread_chunk((hid_t)H->h5_dset, H5P_DEFAULT, coord, &filters, buf) < 0)
        rc = -ML_EHDF5;
    ml_h5_unlock();
    *mask = filters;
    if (rc < 0)
        return ml_error_set(err, rc, "%s chunk %llu of dataset '%s' in file '%s'",
                            rc == -ML_ECORRUPT ? "HDF5 finds another stored size for" : "HDF5 cannot read",
                            (unsigned long long)index, L->path, L->filename);
    return 0;
}

/* Chunk `index` of an index the core does not read itself: by HDF5's
 * descent by key (H5Dget_chunk_storage_size: O(log n) in a v2 B-tree,
 * O(1) in a fixed array), its bytes read the same way later
 * (ml_layout_read_chunk). Never HDF5's answer by coordinate, which scans
 * every entry of the index: O(n) a chunk, and in a damaged index it finds
 * chunks H5Dread does not, and touches (and crashes on) parts of the
 * index a read never would. Caller holds h5_mutex. Returns 0 or
 * -ML_EHDF5. */
static int lookup_via_hdf5(ml_layout *L, uint64_t index, ml_chunk_info *out) {
    ml_h5_dataset *H = ml_h5(L);
    uint64_t keyed = 0;
    /* An unfiltered chunk of a v1 B-tree (or of an index not located):
     * HDF5's keyed size is the full chunk size, but H5Dread_chunk would
     * read the size the key stores, past a buffer of the keyed size. Ask
     * for its address instead (by coordinate, confirmed by key). */
    if (L->pipeline.n_filters == 0 && (H->cindex.kind == ML_CHUNK_INDEX_BTREE1 || H->cindex.kind == ML_CHUNK_INDEX_NONE))
        return lookup_by_coord(L, index, out) < 0 ? -ML_EHDF5 : 0;
    int written = 0;
    if (keyed_size_ex(L, index, &keyed, &written) < 0)
        return -ML_EHDF5;
    /* A chunk held with a stored size of 0 stays "read through HDF5" with
     * size 0: the reader refuses it, as H5Dread does. */
    *out = (ml_chunk_info){.addr = written ? ML_CHUNK_VIA_FORMAT : UINT64_MAX, .size = keyed};
    return 0;
}

/* The one-pass fill's state: the entries the index gave, sorted by index. */
typedef struct fill_ctx {
    ml_layout *L;
    ml_chunk_entry *entries; /* owned until published */
    uint64_t count, cap;     /* entries given; allocated */
    uint64_t expect;         /* chunks HDF5 counts (H5Dget_num_chunks) */
    int no_coord;            /* HDF5's answers by coordinate are wrong for this index */
    const char *why;         /* static reason of a refusal */
} fill_ctx;

/* One chunk of the index into the fill's entries. Caller (the fill) holds
 * h5_mutex. Returns 0, -ML_ECORRUPT or -ENOMEM. */
static int fill_one(void *ctx_, uint64_t index, uint64_t offset, uint64_t size, unsigned mask) {
    fill_ctx *c = ctx_;
    if (index >= c->L->n_chunks || c->count >= c->expect) {
        c->why = "the chunk index holds more chunks than HDF5 counts";
        return -ML_ECORRUPT;
    }
    if (c->count == c->cap) {
        /* Bounded by HDF5's count, itself bounded by what the file holds. */
        uint64_t cap = c->cap ? 2 * c->cap : 64;
        cap = cap < c->expect ? cap : c->expect;
        ml_chunk_entry *grown = cap > SIZE_MAX / sizeof *grown ? NULL : realloc(c->entries, cap * sizeof *grown);
        if (!grown) {
            c->why = "out of memory for the chunk table";
            return -ENOMEM;
        }
        c->entries = grown;
        c->cap = cap;
    }
    c->entries[c->count++] = (ml_chunk_entry){
        .index = index, .info = {.addr = offset, .size = offset == UINT64_MAX ? 0 : size, .filter_mask = mask}};
    return 0;
}

#ifdef ML_HAVE_CHUNK_ITER
/* H5Dchunk_iter's callback: a chunk by element offsets, HDF5's address. */
static int iter_one(const hsize_t *offset, unsigned mask, haddr_t addr, hsize_t size, void *ctx_) {
    fill_ctx *c = ctx_;
    ml_layout *L = c->L;
    uint64_t index = 0;
    for (unsigned d = 0; d < L->ndim; d++) {
        if (offset[d] % L->chunk[d] != 0 || offset[d] / L->chunk[d] >= L->grid[d]) {
            c->why = "H5Dchunk_iter gave a chunk off the chunk grid";
            return H5_ITER_ERROR;
        }
        index = index * L->grid[d] + offset[d] / L->chunk[d];
    }
    uint64_t off = file_offset(L, addr);
    if (addr != HADDR_UNDEF && off == UINT64_MAX) {
        c->why = "H5Dchunk_iter gave an address past any file";
        return H5_ITER_ERROR;
    }
    return fill_one(c, index, off, size, mask) < 0 ? H5_ITER_ERROR : H5_ITER_CONT;
}

static int entry_cmp(const void *a, const void *b) {
    uint64_t x = ((const ml_chunk_entry *)a)->index, y = ((const ml_chunk_entry *)b)->index;
    return x < y ? -1 : x > y;
}
#endif

/* Entries sampled against HDF5's keyed look-up (cheap: O(log n) each). */
#define KEYED_SAMPLES 64

/* The filled entries against HDF5: the count, a sample of entries and a
 * chunk the index lacks by key, the first and last by coordinate (with
 * their addresses), and every answer already given by coordinate. Caller
 * holds h5_mutex. Returns 1 if all agree. */
static int fill_agrees(ml_layout *L, fill_ctx *c) {
    ml_h5_dataset *H = ml_h5(L);
    if (c->count != c->expect) {
        c->why = "the chunk index holds fewer chunks than HDF5 counts";
        return 0;
    }
    for (uint64_t i = 1; i < c->count; i++)
        if (c->entries[i].index <= c->entries[i - 1].index) {
            c->why = "the chunk index lists a chunk twice";
            return 0;
        }
    uint64_t step = c->count / KEYED_SAMPLES + 1;
    for (uint64_t i = 0; i < c->count; i += step) {
        uint64_t size = 0;
        if (keyed_size(L, c->entries[i].index, &size) < 0 || !keyed_agrees(L, size, &c->entries[i].info)) {
            c->why = "the chunk index disagrees with HDF5's keyed look-up";
            return 0;
        }
    }
    /* The first chunk the index lacks must be unwritten by key too. */
    uint64_t gap = 0;
    while (gap < c->count && c->entries[gap].index == gap)
        gap++;
    uint64_t size = 0;
    if (gap < L->n_chunks && (keyed_size(L, gap, &size) < 0 || size != 0)) {
        c->why = "HDF5 finds a chunk that the chunk index lacks";
        return 0;
    }
    /* HDF5 (1.10 to 2.0) names the chunks of an extensible array whose
     * unlimited dimension is not the first wrongly when it iterates (its
     * iteration never wraps the unlimited dimension's coordinate), so its
     * answers by coordinate are wrong there, while H5Dread's, by key, are
     * right: the ends are then compared by key only. */
    uint64_t ends[2] = {0, c->count ? c->count - 1 : 0};
    for (unsigned e = 0; e < 2 && c->count && c->no_coord; e++) {
        uint64_t keyed = 0;
        if (keyed_size(L, c->entries[ends[e]].index, &keyed) < 0 || !keyed_agrees(L, keyed, &c->entries[ends[e]].info)) {
            c->why = "the chunk index disagrees with HDF5's keyed look-up";
            return 0;
        }
    }
    for (unsigned e = 0; e < 2 && c->count && !c->no_coord; e++) {
        ml_chunk_info h;
        const ml_chunk_info *w = &c->entries[ends[e]].info;
        if (lookup_by_coord(L, c->entries[ends[e]].index, &h) < 0 || h.bad || h.addr != w->addr ||
            h.size != w->size || h.filter_mask != w->filter_mask) {
            c->why = "the walked chunk index disagrees with HDF5";
            return 0;
        }
    }
    if (!ml_chunk_table_agrees(&H->table, c->entries, c->count)) {
        c->why = "the chunk index disagrees with HDF5's answer for a chunk";
        return 0;
    }
    return 1;
}

/* Does chunk_index.c walk this dataset's index itself? The v1 B-tree and
 * every layout 4/5 kind, except where partial edge chunks are stored
 * unfiltered in a filtered dataset (the decoder would filter them). */
int ml_h5_walks_index(const ml_layout *L) {
    const ml_chunk_index *ix = &ml_h5(L)->cindex;
    if (ix->kind == ML_CHUNK_INDEX_BTREE1)
        return 1;
    return ix->kind >= ML_CHUNK_INDEX_SINGLE && ix->kind <= ML_CHUNK_INDEX_BTREE2 &&
           !((ix->flags & ML_CHUNK_FLAG_PARTIAL_UNFILTERED) && L->pipeline.n_filters > 0);
}

/* The dataspace's maximum dimensions (ML_CHUNK_UNLIMITED for unlimited
 * ones). Caller holds h5_mutex. Returns 0 or -ML_EHDF5. */
static int dataset_maxdims(ml_layout *L, uint64_t *maxdims) {
    hsize_t dims[H5S_MAX_RANK], max[H5S_MAX_RANK];
    hid_t space = H5Dget_space((hid_t)ml_h5(L)->h5_dset);
    int nd = space < 0 ? -1 : H5Sget_simple_extent_dims(space, dims, max);
    if (space >= 0)
        H5Sclose(space);
    if (nd != (int)L->ndim)
        return -ML_EHDF5;
    for (unsigned d = 0; d < L->ndim; d++) {
        if (dims[d] != L->dims[d])
            return -ML_EHDF5;
        maxdims[d] = max[d] == H5S_UNLIMITED ? ML_CHUNK_UNLIMITED : (uint64_t)max[d];
    }
    return 0;
}

/* Fill the whole table in one pass over the index, check, publish (the
 * protocol in the opening comment). Caller holds h5_mutex. */
static void fill_table(ml_layout *L) {
    ml_h5_dataset *H = ml_h5(L);
    if (H->table_state != ML_TABLE_LAZY)
        return;
    int btree1 = H->cindex.kind == ML_CHUNK_INDEX_BTREE1, walk = ml_h5_walks_index(L);
    /* A bound on the entries before HDF5 has counted them: a v1 B-tree's
     * leaf entry takes more than 16 bytes of the file, a layout 4/5 chunk
     * at least one (its element or record, or for an implicit index its
     * bytes, all inside the file). */
    uint64_t bound = (btree1 ? L->eof / 16 : L->eof) + 1;
    fill_ctx c = {.L = L, .expect = bound < L->n_chunks ? bound : L->n_chunks};
    int rc = 0;
    if (walk) {
        /* Our walk first: an index it finds malformed is never handed to
         * HDF5's iteration, which crashes on some v1 B-trees (a child
         * address of all ones: a memmove in H5F__accum_read). */
        uint64_t maxdims[ML_MAX_DIMS];
        rc = dataset_maxdims(L, maxdims);
        if (rc < 0) {
            c.why = "HDF5 cannot describe the dataspace";
        } else {
            rc = ml_chunk_index_walk(&H->cfile, &H->cindex, L->ndim, L->dims, maxdims, fill_one, &c);
            c.no_coord = H->cindex.kind == ML_CHUNK_INDEX_EARRAY && maxdims[0] != ML_CHUNK_UNLIMITED;
        }
        if (rc < 0 && !c.why)
            c.why = rc == -ENOMEM ? "out of memory walking the chunk index"
                    : rc == -ML_ECORRUPT ? "the chunk index is malformed"
                    : rc == -ENOTSUP ? "an extensible array of paged data blocks in its index block"
                                         : "the chunk index could not be read";
    }
    hsize_t expect = 0;
    if (rc == 0) {
        hid_t space = H5Dget_space((hid_t)H->h5_dset);
        int ok = space >= 0 && H5Dget_num_chunks((hid_t)H->h5_dset, space, &expect) >= 0;
        if (space >= 0)
            H5Sclose(space);
        if (!ok) {
            /* HDF5 cannot iterate the index: a v1 B-tree it cannot iterate
             * is damaged. */
            free(c.entries);
            H->table_state = btree1 ? ML_TABLE_CORRUPT : ML_TABLE_FALLBACK;
            H->table_why = "HDF5 cannot count the chunks";
            return;
        }
        if (!walk)
            c.expect = expect;
        else if (c.count > expect)
            rc = -ML_ECORRUPT, c.why = "the chunk index holds more chunks than HDF5 counts";
    }
#ifdef ML_HAVE_CHUNK_ITER
    if (rc == 0 && !walk) {
        if (H5Dchunk_iter((hid_t)H->h5_dset, H5P_DEFAULT, iter_one, &c) < 0) {
            rc = -ML_EHDF5;
            if (!c.why)
                c.why = "H5Dchunk_iter failed";
        } else if (c.count > 1) {
            qsort(c.entries, c.count, sizeof *c.entries, entry_cmp);
        }
    }
#endif
    c.expect = expect;
    if (rc < 0 || !fill_agrees(L, &c)) {
        free(c.entries);
        /* A v1 B-tree that is malformed or disagrees with HDF5 cannot be
         * read as H5Dread reads it; any other failure (memory, an I/O
         * error, a layout 4/5 index we find malformed or that disagrees
         * with HDF5, an index kind only HDF5 iterates) leaves look-ups
         * through HDF5, each confirmed by key. */
        int corrupt = btree1 && rc != -ENOMEM && (rc == 0 || rc == -ML_ECORRUPT);
        H->table_state = corrupt ? ML_TABLE_CORRUPT : ML_TABLE_FALLBACK;
        H->table_why = c.why;
        return;
    }
    ml_chunk_table_publish(&H->table, c.entries, c.count);
    H->table_state = walk ? ML_TABLE_WALKED : ML_TABLE_ITERATED;
    H->table_why = NULL;
}

ml_table_state ml_layout_fill_table(ml_layout *L) {
    ml_h5_dataset *H = ml_h5(L);
    if (L->storage != ML_STORE_CHUNKED)
        return ML_TABLE_FALLBACK;
    ml_h5_lock();
    fill_table(L);
    ml_table_state st = H->table_state;
    ml_h5_unlock();
    return st;
}

ml_table_state ml_layout_table_state(ml_layout *L, const char **why) {
    ml_h5_dataset *H = ml_h5(L);
    if (L->storage != ML_STORE_CHUNKED) {
        *why = "not chunked";
        return ML_TABLE_FALLBACK;
    }
    ml_h5_lock();
    fill_table(L);
    ml_table_state st = H->table_state;
    *why = H->table_why;
    ml_h5_unlock();
    return st;
}

int ml_h5_chunk(ml_layout *L, uint64_t index, ml_chunk_info *info, ml_error *err) {
    ml_h5_dataset *H = ml_h5(L);
    if (ml_chunk_table_get(&H->table, index, info))
        return 0;
    ml_h5_lock();
    if (H->table_state == ML_TABLE_LAZY && H->lookups >= LOOKUPS_BEFORE_FILL)
        fill_table(L);
    if (H->table_state == ML_TABLE_CORRUPT) {
        ml_h5_unlock();
        return ml_error_set(err, -ML_ECORRUPT, "corrupt chunk index (%s): chunk %llu of dataset '%s' in file "
                            "'%s' cannot be located as HDF5 reads it", H->table_why, (unsigned long long)index,
                            L->path, L->filename);
    }
    /* Another thread (or the fill just above) may have answered while we
     * waited for the lock: the first answer stands. */
    if (ml_chunk_table_get(&H->table, index, info)) {
        ml_h5_unlock();
        return 0;
    }
    H->lookups++;
    ml_chunk_info ci;
    int rc = H->table_state == ML_TABLE_LAZY && H->cindex.kind == ML_CHUNK_INDEX_BTREE1
                 ? lookup_by_key(L, index, &ci)
                 : lookup_via_hdf5(L, index, &ci);
    if (rc == -ML_ECORRUPT) {
        ml_h5_unlock();
        return ml_error_set(err, rc, "corrupt chunk index (%s): chunk %llu of dataset '%s' in file '%s' cannot "
                            "be located as HDF5 reads it", H->table_why, (unsigned long long)index, L->path,
                            L->filename);
    }
    if (rc == 0)
        rc = ml_chunk_table_remember(&H->table, index, &ci);
    ml_h5_unlock();
    if (rc < 0)
        return ml_error_set(err, rc, "cannot look up chunk %llu of dataset '%s' in file '%s'%s",
                            (unsigned long long)index, L->path, L->filename, rc == -ENOMEM ? ": out of memory" : "");
    *info = ci;
    return 0;
}

