/* chunk_index.c - find a chunked dataset's Data Layout message and walk its
 * version 1 B-tree chunk index (the layout 4/5 kinds: chunk_index4.c).
 *
 * HDF5 1.10's only ways to learn a chunk's address, H5Dget_chunk_info and
 * H5Dget_chunk_info_by_coord, iterate the index up to the chunk asked for,
 * so a pass over a dataset of n chunks costs O(n^2) under the HDF5 lock.
 * This file reads the index itself, once: the object header (to find the
 * Data Layout message and the B-tree's address), then the B-tree depth
 * first, left to right, so the leaves' entries come out in key order,
 * which is row-major chunk order.
 *
 * Invariants:
 *  - Nothing here trusts the file. Every read lies inside [0, f->size)
 *    once f->base is added, and is re-checked against what the bytes
 *    claim (sizes, counts, levels); a read that would go past the end of
 *    the file, a missing signature, an impossible count is -ML_ECORRUPT.
 *  - The walk finds exactly what HDF5's read finds by descending from the
 *    root by key (visit() says why): every node's keys (all n + 1 of them,
 *    the right-most too) strictly increase, lie on the chunk grid (a left
 *    key with the element-size offset 0), and nest inside the keys around
 *    the node in its parent; each child is one level below its parent. A file that
 *    breaks any of these is -ML_ECORRUPT, never a guess.
 *  - Work is bounded by the file, not by what it claims: object header
 *    chunks are at most HDR_MAX_CHUNKS of at most HDR_MAX_CHUNK_BYTES; a
 *    B-tree is at most BTREE_MAX_LEVEL deep and a node has 1..2K entries.
 *    Nesting makes the key ranges of the nodes on a level disjoint, so a
 *    node reached twice (a cycle or a shared child) breaks it: no node is
 *    read twice, and the walk reads at most the nodes the file holds, plus
 *    the one that fails. Leaf keys must lie on the chunk grid.
 *  - No HDF5 call, no global state, no lock: the caller decides when the
 *    walk runs and what the answers are worth (h5chunks.c checks a sample
 *    of them against HDF5).
 *
 * Workload: once per dataset. A node holds up to 2K = 64 chunks (HDF5's
 * default K), so a dataset of 10^6 chunks is ~17 000 reads of ~2.6 KiB,
 * tens of milliseconds from the page cache.
 */
#define _GNU_SOURCE
#include "chunk_index.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "chunk_index4.h"
#include "error.h"
#include "source.h"

#define UNDEF UINT64_MAX
#define HDR_MAX_CHUNKS 256              /* object header chunks followed (continuations) */
#define HDR_MAX_CHUNK_BYTES (16u << 20) /* bytes of one object header chunk */
#define HDR_PREFIX_MAX 34               /* longest v2 prefix: OHDR, version, flags, times,
                                           attribute phase, an 8-byte chunk size */
#define BTREE_MAX_LEVEL 255             /* the level is one byte; HDF5 with K=1 builds trees
                                           one level per chunk or two */
#define MSG_LAYOUT 0x0008
#define MSG_FILL 0x0005                 /* the fill value message (not the old 0x0004) */
#define MSG_CONTINUATION 0x0010

/* Little-endian unsigned integer of n <= 8 bytes. */
static uint64_t get_le(const unsigned char *p, unsigned n) {
    uint64_t v = 0;
    for (unsigned i = n; i-- > 0;)
        v = v << 8 | p[i];
    return v;
}

/* A file address of n bytes; all ones is "undefined" (UNDEF). */
static uint64_t get_addr(const unsigned char *p, unsigned n) {
    uint64_t v = get_le(p, n);
    return (n < 8 && v == (UINT64_C(1) << (8 * n)) - 1) ? UNDEF : v;
}

/* Read up to `want` bytes at HDF5 address `addr` (relative to the base),
 * stopping at the end of the file; *got = bytes read. Returns 0,
 * -ML_ECORRUPT (address undefined or past the end), -errno. */
static int read_upto(const ml_chunk_file *f, uint64_t addr, void *buf, size_t want, size_t *got) {
    if (addr == UNDEF || addr > UINT64_MAX - f->base || f->base + addr >= f->size)
        return -ML_ECORRUPT;
    uint64_t off = f->base + addr;
    size_t len = want < f->size - off ? want : (size_t)(f->size - off);
    ml_io_req r = {.offset = off, .len = len, .buf = buf};
    int rc = ml_source_read(f->src, &r);
    if (rc == -ML_ETRUNC)
        return -ML_ECORRUPT; /* the file shrank under us */
    if (rc < 0)
        return rc;
    *got = len;
    return 0;
}

/* Exactly `len` bytes at `addr`, or -ML_ECORRUPT if the file ends first. */
static int read_exact(const ml_chunk_file *f, uint64_t addr, void *buf, size_t len) {
    size_t got = 0;
    int rc = read_upto(f, addr, buf, len, &got);
    return rc < 0 ? rc : got == len ? 0 : -ML_ECORRUPT;
}

/* Decode a Data Layout message of n bytes. A layout this file does not
 * parse (version 1/2, not chunked) leaves out->kind NONE and returns 0. */
static int parse_layout(const ml_chunk_file *f, const unsigned char *p, size_t n, ml_chunk_index *out) {
    unsigned sa = f->sizeof_addr;
    if (n < 2)
        return -ML_ECORRUPT;
    out->layout_version = p[0];
    if (p[0] < 3 || p[0] > 5 || p[1] != 2)
        return 0;
    if (p[0] == 3) {
        /* version, class, dimensionality, B-tree address, 4-byte chunk dims */
        if (n < 3 + (size_t)sa)
            return -ML_ECORRUPT;
        unsigned nd = p[2];
        if (nd < 2 || nd > ML_CHUNK_INDEX_MAX_DIMS || n < 3 + sa + 4 * (size_t)nd)
            return -ML_ECORRUPT;
        out->ndims = nd;
        out->addr = get_addr(p + 3, sa);
        for (unsigned d = 0; d < nd; d++) {
            out->dims[d] = get_le(p + 3 + sa + 4 * d, 4);
            if (out->dims[d] == 0)
                return -ML_ECORRUPT;
        }
        out->kind = ML_CHUNK_INDEX_BTREE1;
        return 0;
    }
    /* versions 4 and 5: version, class, flags, dimensionality, bytes per
     * dim, dims, index type, index-specific fields, index address (5
     * differs only inside the index: chunk_index4.c) */
    if (n < 5)
        return -ML_ECORRUPT;
    unsigned flags = p[2], nd = p[3], enc = p[4];
    if (nd < 2 || nd > ML_CHUNK_INDEX_MAX_DIMS || enc < 1 || enc > 8)
        return -ML_ECORRUPT;
    size_t pos = 5 + (size_t)nd * enc;
    if (n < pos + 1)
        return -ML_ECORRUPT;
    for (unsigned d = 0; d < nd; d++) {
        out->dims[d] = get_le(p + 5 + (size_t)d * enc, enc);
        if (out->dims[d] == 0)
            return -ML_ECORRUPT;
    }
    unsigned type = p[pos++];
    size_t extra;
    switch (type) {
    case ML_CHUNK_INDEX_SINGLE: extra = (flags & ML_CHUNK_FLAG_SINGLE_FILTERED) ? f->sizeof_size + 4 : 0; break;
    case ML_CHUNK_INDEX_IMPLICIT: extra = 0; break;
    case ML_CHUNK_INDEX_FARRAY: extra = 1; break;  /* page bits */
    case ML_CHUNK_INDEX_EARRAY: extra = 5; break;  /* max bits, index elements, min pointers,
                                                      min elements, page bits */
    case ML_CHUNK_INDEX_BTREE2: extra = 6; break;  /* node size, split and merge percent */
    default: return -ML_ECORRUPT;
    }
    if (n < pos + extra + sa || (flags & ~3u) != 0)
        return -ML_ECORRUPT;
    const unsigned char *q = p + pos;
    switch (type) {
    case ML_CHUNK_INDEX_SINGLE:
        if (flags & ML_CHUNK_FLAG_SINGLE_FILTERED) {
            out->single_size = get_le(q, f->sizeof_size);
            out->single_mask = (unsigned)get_le(q + f->sizeof_size, 4);
        }
        break;
    case ML_CHUNK_INDEX_FARRAY: out->farray_page_bits = q[0]; break;
    case ML_CHUNK_INDEX_EARRAY:
        out->earray.max_bits = q[0];
        out->earray.index_elmts = q[1];
        out->earray.min_ptrs = q[2];
        out->earray.min_elmts = q[3];
        out->earray.page_bits = q[4];
        break;
    case ML_CHUNK_INDEX_BTREE2:
        out->btree2.node_size = (uint32_t)get_le(q, 4);
        out->btree2.split_percent = q[4];
        out->btree2.merge_percent = q[5];
        break;
    default: break;
    }
    out->flags = flags;
    out->ndims = nd;
    out->addr = get_addr(q + extra, sa);
    out->kind = (ml_chunk_index_kind)type;
    return 0;
}

/* The byte size a fill value message (version 1..3) declares for its
 * value: 0 if it defines none, -1 if the message is malformed or of
 * another version. */
static int64_t parse_fill(const unsigned char *p, uint64_t n) {
    if (n < 2)
        return -1;
    if (p[0] == 1 || p[0] == 2) {
        /* version, allocation time, fill time, defined, [size (4), value] */
        if (n < 4)
            return -1;
        if (p[0] == 2 && !p[3])
            return 0;
        return n < 8 ? -1 : (int64_t)get_le(p + 4, 4);
    }
    if (p[0] == 3) {
        /* version, flags (bit 5: a value is defined), [size (4), value] */
        if (!(p[1] & 0x20))
            return 0;
        return n < 6 ? -1 : (int64_t)get_le(p + 2, 4);
    }
    return -1;
}

int ml_chunk_index_locate(const ml_chunk_file *f, uint64_t ohdr, ml_chunk_index *out) {
    unsigned char pre[HDR_PREFIX_MAX];
    uint64_t at[HDR_MAX_CHUNKS], len[HDR_MAX_CHUNKS]; /* header chunks to scan */
    unsigned n_chunks = 1, v2, msg_hdr;
    unsigned char *buf = NULL;
    size_t got = 0;
    int rc;

    int have_layout = 0, layout_rc = 0;
    memset(out, 0, sizeof *out);
    out->addr = UNDEF;
    out->fill_size = -2; /* not seen yet */
    if (f->sizeof_addr < 2 || f->sizeof_addr > 8 || f->sizeof_size < 2 || f->sizeof_size > 8)
        return -ML_ECORRUPT;
    if ((rc = read_upto(f, ohdr, pre, sizeof pre, &got)) < 0)
        return rc;
    if (got >= 6 && memcmp(pre, "OHDR", 4) == 0 && pre[4] == 2) {
        /* v2: signature, version, flags, [4 times], [2 attribute limits], chunk 0 size */
        unsigned flags = pre[5], pos = 6, csz = 1u << (flags & 3);
        pos += (flags & 0x20) ? 16 : 0;
        pos += (flags & 0x10) ? 4 : 0;
        if (got < pos + csz)
            return -ML_ECORRUPT;
        at[0] = ohdr + pos + csz;
        len[0] = get_le(pre + pos, csz); /* messages and gap; the checksum follows */
        v2 = 1;
        msg_hdr = (flags & 0x04) ? 6 : 4; /* type, size, flags, [creation order] */
    } else if (got >= 16 && pre[0] == 1) {
        /* v1: version, reserved, message count, refcount, header size, 4 bytes padding */
        at[0] = ohdr + 16;
        len[0] = get_le(pre + 8, 4);
        v2 = 0;
        msg_hdr = 8; /* type (2), size (2), flags, 3 reserved */
    } else {
        return -ML_ECORRUPT;
    }
    for (unsigned c = 0; c < n_chunks; c++) {
        uint64_t start = 0, end = len[c];
        if (len[c] > HDR_MAX_CHUNK_BYTES || len[c] < (v2 && c > 0 ? 8u : 1u)) {
            rc = -ML_ECORRUPT;
            goto out;
        }
        free(buf);
        if (!(buf = malloc(len[c]))) {
            rc = -ENOMEM;
            goto out;
        }
        if ((rc = read_exact(f, at[c], buf, len[c])) < 0)
            goto out;
        if (v2 && c > 0) {
            /* continuation block: OCHK, messages and gap, checksum */
            if (memcmp(buf, "OCHK", 4) != 0) {
                rc = -ML_ECORRUPT;
                goto out;
            }
            start = 4;
            end = len[c] - 4;
        }
        /* Fewer bytes left than a message header: the gap at a v2 chunk's end. */
        for (uint64_t pos = start; end - pos >= msg_hdr;) {
            const unsigned char *m = buf + pos;
            unsigned type = v2 ? m[0] : (unsigned)get_le(m, 2);
            uint64_t size = v2 ? get_le(m + 1, 2) : get_le(m + 2, 2);
            unsigned mflags = v2 ? m[3] : m[4];
            if (size > end - pos - msg_hdr) {
                rc = -ML_ECORRUPT;
                goto out;
            }
            const unsigned char *data = m + msg_hdr;
            if (type == MSG_FILL && !(mflags & 0x02) && out->fill_size == -2)
                out->fill_size = parse_fill(data, size);
            if (type == MSG_LAYOUT && !have_layout) {
                /* A shared layout message (flag 0x02) holds a reference, not
                 * the layout: not ours to follow. */
                layout_rc = (mflags & 0x02) ? 0 : parse_layout(f, data, size, out);
                have_layout = 1;
            }
            if (have_layout && out->fill_size != -2) {
                rc = layout_rc;
                goto out;
            }
            if (type == MSG_CONTINUATION) {
                if (size < f->sizeof_addr + f->sizeof_size || n_chunks == HDR_MAX_CHUNKS) {
                    rc = -ML_ECORRUPT;
                    goto out;
                }
                at[n_chunks] = get_addr(data, f->sizeof_addr);
                len[n_chunks] = get_le(data + f->sizeof_addr, f->sizeof_size);
                n_chunks++;
            }
            pos += msg_hdr + size;
        }
    }
    rc = have_layout ? layout_rc : -ML_ECORRUPT; /* a dataset without a layout message */
out:
    if (out->fill_size == -2)
        out->fill_size = -1;
    free(buf);
    return rc;
}

/* -1, 0, 1: lexicographic order of two keys' chunk offsets (all nd of
 * them, the element-size dimension too, as HDF5's comparison does). */
static int key_cmp(const unsigned char *a, const unsigned char *b, unsigned nd) {
    for (unsigned d = 0; d < nd; d++) {
        uint64_t x = get_le(a + 8 + 8 * d, 8), y = get_le(b + 8 + 8 * d, 8);
        if (x != y)
            return x < y ? -1 : 1;
    }
    return 0;
}

/* The walk's fixed facts and running state. */
typedef struct walk {
    const ml_chunk_file *f;
    const ml_chunk_index *ix;
    unsigned rank, nd, sa;          /* dataset rank; key dims (rank + 1); address bytes */
    uint64_t grid[ML_CHUNK_INDEX_MAX_DIMS]; /* chunks per dimension */
    size_t key, max_entries, node_max; /* bytes of a key; 2K; bytes of the largest node */
    unsigned char *buf[BTREE_MAX_LEVEL + 1]; /* one node buffer per depth (owned) */
    uint64_t prev_index;            /* last chunk emitted, UNDEF before the first */
    ml_chunk_emit_fn emit;
    void *ctx;
} walk;

/* A key HDF5 could have written: every offset, the element-size
 * dimension's too, a multiple of its chunk dimension (HDF5 divides by it
 * and would silently round). A left key (every key but a node's last)
 * names a chunk, so its element-size offset is 0; the last key of the
 * tree's right-most nodes is the last chunk's key plus one element there
 * (HDF5's right key; its comparison is lexicographic over all nd). */
static int key_aligned(const walk *w, const unsigned char *k, int left) {
    for (unsigned d = 0; d <= w->rank; d++)
        if (get_le(k + 8 + 8 * (size_t)d, 8) % w->ix->dims[d] != 0)
            return 0;
    return !left || get_le(k + 8 + 8 * (size_t)w->rank, 8) == 0;
}

/* Read the node at `addr`, `depth` levels below the root, into the
 * buffer of that depth and check it as HDF5's descent needs it: signature
 * and node type, `level` (-1: the root, any level), 1..2K entries, all
 * n + 1 keys aligned (key_aligned) and strictly increasing, and inside
 * [lo, hi] (the parent's keys around it; NULL at the root). On success
 * *k0 points at key 0 (then child 0, key 1, ..., key n), *entries and
 * *nlevel say what the node holds. Returns 0, -ML_ECORRUPT, -ENOMEM or
 * -errno. */
static int load_node(walk *w, uint64_t addr, int level, const unsigned char *lo, const unsigned char *hi,
                     unsigned depth, const unsigned char **k0_out, size_t *entries_out, int *nlevel_out) {
    unsigned char *node = w->buf[depth];
    size_t got = 0, sa = w->sa, key = w->key;
    int rc;
    if (!node) {
        if (!(node = w->buf[depth] = malloc(w->node_max)))
            return -ENOMEM;
    }
    if ((rc = read_upto(w->f, addr, node, w->node_max, &got)) < 0)
        return rc;
    /* TREE, node type 1 (raw data chunks), level, entries used, siblings */
    if (got < 8 + 2 * sa || memcmp(node, "TREE", 4) != 0 || node[4] != 1)
        return -ML_ECORRUPT;
    int nlevel = node[5];
    size_t entries = get_le(node + 6, 2);
    if ((level >= 0 && nlevel != level) || nlevel > BTREE_MAX_LEVEL || (unsigned)nlevel + depth > BTREE_MAX_LEVEL ||
        entries == 0 || entries > w->max_entries || got < 8 + 2 * sa + entries * (key + sa) + key)
        return -ML_ECORRUPT;
    const unsigned char *k0 = node + 8 + 2 * sa; /* key 0, child 0, key 1, ..., key n */
    for (size_t i = 0; i <= entries; i++) {
        const unsigned char *k = k0 + i * (key + sa);
        if (!key_aligned(w, k, i < entries) || (i > 0 && key_cmp(k - key - sa, k, w->nd) >= 0))
            return -ML_ECORRUPT;
    }
    const unsigned char *kn = k0 + entries * (key + sa);
    if ((lo && key_cmp(lo, k0, w->nd) > 0) || (hi && key_cmp(kn, hi, w->nd) > 0))
        return -ML_ECORRUPT;
    *k0_out = k0;
    *entries_out = entries;
    *nlevel_out = nlevel;
    return 0;
}

/* Visit the node at `addr` (load_node checks it) and every node below it,
 * emitting the leaves' chunks left to right. Descent by key,
 * as H5Dread does it, finds chunk c in a node by binary search for the
 * child i with key[i] <= c < key[i+1], and in a leaf only where c equals
 * key[i]. With every node's keys strictly increasing and nested inside its
 * parent's bounds, that finds exactly the leaf entries this visit emits,
 * left to right; any node that breaks those rules is -ML_ECORRUPT, so the
 * walk never reports a chunk H5Dread would not read, nor misses one. */
static int visit(walk *w, uint64_t addr, int level, const unsigned char *lo, const unsigned char *hi,
                 unsigned depth) {
    size_t sa = w->sa, key = w->key, entries;
    const unsigned char *k0;
    int nlevel, rc;
    if ((rc = load_node(w, addr, level, lo, hi, depth, &k0, &entries, &nlevel)) < 0)
        return rc;
    for (size_t i = 0; i < entries; i++) {
        const unsigned char *k = k0 + i * (key + sa);
        uint64_t child = get_addr(k + key, sa);
        if (nlevel > 0) {
            if (child == UNDEF)
                return -ML_ECORRUPT;
            if ((rc = visit(w, child, nlevel - 1, k, k + key + sa, depth + 1)) < 0)
                return rc;
            /* The buffer of this depth is still ours: deeper visits use their own. */
            continue;
        }
        /* Leaf: the chunk whose corner is this key, which must lie on the
         * dataset's chunk grid (off it, no read of the dataset reaches it). */
        uint64_t index = 0;
        for (unsigned d = 0; d < w->rank; d++) {
            uint64_t o = get_le(k + 8 + 8 * (size_t)d, 8) / w->ix->dims[d];
            if (o >= w->grid[d])
                return -ML_ECORRUPT;
            index = index * w->grid[d] + o;
        }
        if ((w->prev_index != UNDEF && index <= w->prev_index) || (child != UNDEF && child > UINT64_MAX - 1 - w->f->base))
            return -ML_ECORRUPT;
        w->prev_index = index;
        /* An undefined address is a chunk H5Dread reads as never written;
         * a stored size of 0 at a defined one is for the reader to refuse. */
        uint64_t size = get_le(k, 4);
        unsigned mask = (unsigned)get_le(k + 4, 4);
        if ((rc = w->emit(w->ctx, index, child == UNDEF ? UNDEF : w->f->base + child, child == UNDEF ? 0 : size,
                          mask)) < 0)
            return rc;
    }
    return 0;
}

/* Check the index and the dataset, and fill the walk's fixed facts.
 * Returns 0, 1 (no chunk written yet: nothing to read), -ML_EINVAL or
 * -ML_ECORRUPT. */
static int walk_setup(walk *w, const ml_chunk_file *f, const ml_chunk_index *ix, unsigned rank,
                      const uint64_t *dims) {
    uint64_t n_grid = 1;
    *w = (walk){.f = f, .ix = ix, .rank = rank, .prev_index = UNDEF};
    if (ix->kind != ML_CHUNK_INDEX_BTREE1 || ix->ndims != rank + 1 || rank + 1 > ML_CHUNK_INDEX_MAX_DIMS)
        return -ML_EINVAL;
    for (unsigned d = 0; d <= rank; d++)
        if (ix->dims[d] == 0)
            return -ML_EINVAL;
    for (unsigned d = 0; d < rank; d++) {
        w->grid[d] = dims[d] / ix->dims[d] + (dims[d] % ix->dims[d] != 0);
        if (w->grid[d] && n_grid > UINT64_MAX / w->grid[d])
            return -ML_ECORRUPT;
        n_grid *= w->grid[d];
    }
    if (ix->addr == UNDEF || n_grid == 0)
        return 1;
    if (f->btree_k == 0 || f->btree_k > 32767 || f->sizeof_addr < 2 || f->sizeof_addr > 8)
        return -ML_ECORRUPT;
    w->sa = f->sizeof_addr;
    w->nd = ix->ndims;
    w->key = 8 + 8 * (size_t)w->nd; /* stored size, filter mask, nd offsets */
    w->max_entries = 2 * (size_t)f->btree_k;
    w->node_max = 8 + 2 * (size_t)w->sa + w->max_entries * (w->key + w->sa) + w->key;
    return 0;
}

static void walk_free(walk *w) {
    for (unsigned i = 0; i <= BTREE_MAX_LEVEL; i++)
        free(w->buf[i]);
}

int ml_chunk_index_walk(const ml_chunk_file *f, const ml_chunk_index *ix, unsigned rank,
                        const uint64_t *dims, const uint64_t *maxdims, ml_chunk_emit_fn emit, void *ctx) {
    walk w;
    if (ix->kind >= ML_CHUNK_INDEX_SINGLE && ix->kind <= ML_CHUNK_INDEX_BTREE2)
        return ml_chunk_index4_walk(f, ix, rank, dims, maxdims ? maxdims : dims, emit, ctx);
    int rc = walk_setup(&w, f, ix, rank, dims);
    if (rc != 0)
        return rc < 0 ? rc : 0;
    w.emit = emit;
    w.ctx = ctx;
    rc = visit(&w, ix->addr, -1, NULL, NULL, 0);
    walk_free(&w);
    return rc;
}

int ml_chunk_index_find(const ml_chunk_file *f, const ml_chunk_index *ix, unsigned rank,
                        const uint64_t *dims, const uint64_t *maxdims, uint64_t index, uint64_t *offset,
                        uint64_t *size, unsigned *mask) {
    walk w;
    if (ix->kind >= ML_CHUNK_INDEX_SINGLE && ix->kind <= ML_CHUNK_INDEX_BTREE2)
        return ml_chunk_index4_find(f, ix, rank, dims, maxdims ? maxdims : dims, index, offset, size, mask);
    unsigned char target[8 + 8 * ML_CHUNK_INDEX_MAX_DIMS] = {0};
    const unsigned char *lo = NULL, *hi = NULL;
    int rc = walk_setup(&w, f, ix, rank, dims), level = -1;
    *offset = UNDEF;
    *size = 0;
    *mask = 0;
    if (rc != 0)
        return rc < 0 ? rc : 0;
    /* The chunk's key: its corner's element offsets, element-size offset 0. */
    uint64_t rest = index;
    for (int d = (int)rank - 1; d >= 0; d--) {
        uint64_t o = (rest % w.grid[d]) * ix->dims[d];
        rest /= w.grid[d];
        for (unsigned b = 0; b < 8; b++)
            target[8 + 8 * (size_t)d + b] = (unsigned char)(o >> (8 * b));
    }
    if (rest != 0)
        return -ML_EINVAL; /* index off the grid */
    uint64_t addr = ix->addr;
    for (unsigned depth = 0;; depth++) {
        const unsigned char *k0;
        size_t entries, step = w.key + w.sa;
        int nlevel;
        if ((rc = load_node(&w, addr, level, lo, hi, depth, &k0, &entries, &nlevel)) < 0)
            break;
        /* The child i with key[i] <= target < key[i+1]: keys strictly
         * increase (load_node), so this is HDF5's binary search. */
        if (key_cmp(target, k0, w.nd) < 0 || key_cmp(target, k0 + entries * step, w.nd) >= 0)
            break; /* outside the node: never written */
        size_t a = 0, b = entries; /* key[a] <= target < key[b] */
        while (b - a > 1) {
            size_t m = a + (b - a) / 2;
            if (key_cmp(k0 + m * step, target, w.nd) <= 0)
                a = m;
            else
                b = m;
        }
        const unsigned char *k = k0 + a * step;
        uint64_t child = get_addr(k + w.key, w.sa);
        if (nlevel > 0) {
            if (child == UNDEF) {
                rc = -ML_ECORRUPT;
                break;
            }
            addr = child;
            level = nlevel - 1;
            lo = k;
            hi = k + step;
            continue;
        }
        /* A leaf holds the chunk only where its key is the chunk's. */
        if (key_cmp(k, target, w.nd) == 0 && child != UNDEF) {
            if (child > UINT64_MAX - 1 - f->base) {
                rc = -ML_ECORRUPT;
                break;
            }
            *offset = f->base + child;
            *size = get_le(k, 4);
            *mask = (unsigned)get_le(k + 4, 4);
        }
        break;
    }
    walk_free(&w);
    return rc;
}

int ml_chunk_index_farray_count(const ml_chunk_file *f, const ml_chunk_index *ix, uint64_t *nelmts) {
    /* FAHD, version 0, client id, element size, page bits, element count
     * (sizeof_size), data block address, checksum */
    unsigned char h[8 + 8 + 8 + 4];
    if (ix->kind != ML_CHUNK_INDEX_FARRAY)
        return -ML_EINVAL;
    if (ix->addr == UNDEF)
        return -ML_ECORRUPT;
    if (f->sizeof_size < 2 || f->sizeof_size > 8 || f->sizeof_addr < 2 || f->sizeof_addr > 8)
        return -ML_ECORRUPT;
    size_t len = 8 + f->sizeof_size + f->sizeof_addr + 4;
    int rc = read_exact(f, ix->addr, h, len);
    if (rc < 0)
        return rc;
    if (memcmp(h, "FAHD", 4) != 0 || h[4] != 0)
        return -ML_ECORRUPT;
    *nelmts = get_le(h + 8, f->sizeof_size);
    return 0;
}
