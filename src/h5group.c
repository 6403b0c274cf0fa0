/* h5group.c - look a name up in an HDF5 group the way HDF5 1.10's
 * H5G__obj_lookup does, checking every structure it reads on the way
 * (h5meta.h: ml_meta_group_lookup).
 *
 * A group is one of:
 *  - old-style (a Symbol Table message): a version 1 B-tree of group
 *    nodes whose keys and symbol nodes name their entries by offsets into
 *    one local heap. HDF5 descends by binary search (H5B_find, then
 *    H5G__node_found, comparing with strcmp); this file makes the same
 *    descent, so it reads exactly the nodes HDF5 reads, and checks each
 *    whole before using it: signature, node type, level one below its
 *    parent's, at most 2K children (2 x leaf K symbols), every key and
 *    every symbol's name a NUL-terminated string inside the heap, every
 *    child address inside the file. The heap: signature, version, its
 *    data inside the file, its free list inside the data and acyclic
 *    (HDF5 walks it when it loads the heap). A soft link's value (cache
 *    type 2) must be a string inside the heap too (HDF5 strdup's it).
 *  - new-style compact (a Link Info message without a fractal heap):
 *    the header's Link messages, each decoded as H5O_link_decode does,
 *    inside the message's size.
 *  - new-style dense (a fractal heap and a v2 B-tree of names): not
 *    parsed here (ML_META_UNCHECKED): trusted to HDF5.
 *
 * Invariants: every loop is bounded by a count from a checked structure
 * (B-tree levels by the root's level, at most 255; free-list blocks by
 * the heap's size); no recursion. The local heap is read whole once per
 * look-up, at most MAX_HEAP bytes (a larger one: ML_META_UNCHECKED).
 *
 * Workload: one look-up per path component at open: a heap and a node
 * per B-tree level, a few KiB.
 */
#define _GNU_SOURCE
#include "h5meta.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define MSG_LINFO 0x0002
#define MSG_LINK 0x0006
#define MSG_STAB 0x0011
#define MAX_HEAP (64u << 20)
#define FREE_NULL 1 /* H5HL_FREE_NULL: the end of a local heap's free list */

typedef struct lheap {
    unsigned char *data; /* owned: the data segment */
    uint64_t size;
} lheap;

/* Is `off` the start of a NUL-terminated string inside the heap? */
static int heap_str(const lheap *h, uint64_t off) {
    return off < h->size && memchr(h->data + off, 0, (size_t)(h->size - off)) != NULL;
}

static const char *heap_at(const lheap *h, uint64_t off) { return (const char *)h->data + off; }

static int heap_load(const ml_meta_file *f, uint64_t addr, lheap *h) {
    unsigned char pre[32];
    size_t plen = 8 + 2 * (size_t)f->ss + f->sa;
    int rc = ml_meta_read(f, addr, pre, plen, "local heap of a group");
    h->data = NULL;
    h->size = 0;
    if (rc < 0)
        return rc;
    if (memcmp(pre, "HEAP", 4) != 0 || pre[4] != 0)
        return ml_meta_bad(f, "no local heap at address %llu (bad signature or version)", (unsigned long long)addr);
    h->size = ml_meta_le(pre + 8, f->ss);
    uint64_t free_head = ml_meta_le(pre + 8 + f->ss, f->ss), daddr = ml_meta_addr(pre + 8 + 2 * f->ss, f->sa);
    if (!ml_meta_inside(f, daddr, h->size))
        return ml_meta_bad(f, "the data of the local heap at address %llu (%llu bytes) lies outside the file",
                           (unsigned long long)addr, (unsigned long long)h->size);
    if (h->size > MAX_HEAP)
        return ML_META_UNCHECKED;
    if (!(h->data = malloc(h->size ? (size_t)h->size : 1)))
        return -ENOMEM;
    if ((rc = ml_meta_read(f, daddr, h->data, (size_t)h->size, "local heap data")) < 0 ||
        (rc = ml_meta_claim(f, addr, plen, "local heap")) < 0 ||
        (rc = ml_meta_claim(f, daddr, h->size, "local heap's data")) < 0)
        goto fail;
    /* the free list, as HDF5 walks it on load: inside the data, acyclic */
    uint64_t fb = free_head, steps = 0, max_steps = h->size / (2 * f->ss) + 1;
    while (fb != FREE_NULL) {
        if (fb >= h->size || h->size - fb < 2 * (uint64_t)f->ss || ++steps > max_steps) {
            rc = ml_meta_bad(f, "the free list of the local heap at address %llu is malformed",
                             (unsigned long long)addr);
            goto fail;
        }
        uint64_t next = ml_meta_le(h->data + fb, f->ss), len = ml_meta_le(h->data + fb + f->ss, f->ss);
        if (len > h->size - fb) {
            rc = ml_meta_bad(f, "a free block of the local heap at address %llu passes its end",
                             (unsigned long long)addr);
            goto fail;
        }
        fb = next;
    }
    return 0;
fail:
    free(h->data);
    h->data = NULL;
    return rc;
}

/* HDF5's binary search (H5B_find over a node's keys, H5G__node_found over
 * a symbol node's entries): halve [0, n) by probe's sign as HDF5 halves
 * it. Returns the index whose probe is 0, or -1 (HDF5 finds nothing). */
typedef struct probe {
    const lheap *h;
    const unsigned char *base; /* the first key or entry */
    size_t stride;             /* bytes from one to the next */
    unsigned width;            /* bytes of a heap offset */
    const char *name;
    int keys;                  /* 1: a B-tree node's keys (name in (key i, key i + 1]); 0: entries */
} probe;

static int probe_at(const probe *p, size_t i) {
    const char *at = heap_at(p->h, ml_meta_le(p->base + i * p->stride, p->width));
    if (!p->keys)
        return strcmp(p->name, at);
    const char *right = heap_at(p->h, ml_meta_le(p->base + (i + 1) * p->stride, p->width));
    return strcmp(p->name, at) <= 0 ? -1 : strcmp(p->name, right) > 0 ? 1 : 0;
}

static long hdf5_bsearch(const probe *p, size_t n) {
    size_t lt = 0, rt = n, idx = 0;
    int cmp = 1;
    while (lt < rt && cmp) {
        idx = (lt + rt) / 2;
        cmp = probe_at(p, idx);
        if (cmp < 0)
            rt = idx;
        else
            lt = idx + 1;
    }
    return cmp ? -1 : (long)idx;
}

/* A symbol table entry: name offset, header address, cache type, reserved, scratch (16). */
static size_t entry_bytes(const ml_meta_file *f) { return 2 * (size_t)f->sa + 24; }

/* Read and check the symbol node at addr; find `name` in it by HDF5's binary search. */
static int snod_lookup(const ml_meta_file *f, const lheap *h, uint64_t addr, const char *name, ml_meta_link *out) {
    size_t eb = entry_bytes(f), max = 2 * (size_t)f->sym_leaf_k;
    unsigned char hdr[8];
    int rc = ml_meta_read(f, addr, hdr, 8, "symbol node of a group");
    if (rc < 0)
        return rc;
    if (memcmp(hdr, "SNOD", 4) != 0 || hdr[4] != 1)
        return ml_meta_bad(f, "no group symbol node at address %llu (bad signature or version)",
                           (unsigned long long)addr);
    size_t n = (size_t)ml_meta_le(hdr + 6, 2);
    if (n > max)
        return ml_meta_bad(f, "the group symbol node at address %llu holds %zu entries, more than 2K = %zu",
                           (unsigned long long)addr, n, max);
    unsigned char *e = malloc(n * eb + 1);
    if (!e)
        return -ENOMEM;
    if ((rc = ml_meta_read(f, addr + 8, e, n * eb, "symbol node of a group")) < 0 ||
        (rc = ml_meta_claim(f, addr, 8 + max * eb, "group symbol node")) < 0)
        goto out;
    for (size_t i = 0; i < n; i++) {
        const unsigned char *p = e + i * eb;
        unsigned cache = (unsigned)ml_meta_le(p + 2 * f->sa, 4);
        if (!heap_str(h, ml_meta_le(p, f->sa))) {
            rc = ml_meta_bad(f, "entry %zu of the group symbol node at address %llu names no string of the "
                             "group's local heap", i, (unsigned long long)addr);
            goto out;
        }
        if (cache == 2 && !heap_str(h, ml_meta_le(p + 2 * f->sa + 8, 4))) {
            rc = ml_meta_bad(f, "the soft link of entry %zu of the group symbol node at address %llu has no "
                             "value in the group's local heap", i, (unsigned long long)addr);
            goto out;
        }
        if (cache > 2) {
            rc = ml_meta_bad(f, "entry %zu of the group symbol node at address %llu has cache type %u", i,
                             (unsigned long long)addr, cache);
            goto out;
        }
    }
    probe pr = {.h = h, .base = e, .stride = eb, .width = f->sa, .name = name, .keys = 0};
    long idx = hdf5_bsearch(&pr, n);
    if (idx < 0) {
        rc = -ML_ENOTFOUND;
        goto out;
    }
    const unsigned char *p = e + (size_t)idx * eb;
    if (ml_meta_le(p + 2 * f->sa, 4) == 2) {
        const char *v = heap_at(h, ml_meta_le(p + 2 * f->sa + 8, 4));
        if (strlen(v) >= sizeof out->target) {
            rc = ML_META_UNCHECKED;
            goto out;
        }
        out->kind = ML_META_LINK_SOFT;
        strcpy(out->target, v);
    } else {
        out->kind = ML_META_LINK_HARD;
        out->addr = ml_meta_addr(p + f->sa, f->sa);
    }
out:
    free(e);
    return rc;
}

/* H5B_find over the group's B-tree, then the symbol node. */
static int stab_lookup(const ml_meta_file *f, const ml_meta_msg *stab, const char *name, ml_meta_link *out) {
    if (stab->size < 2 * (size_t)f->sa)
        return ml_meta_bad(f, "a group's symbol table message is too short");
    uint64_t node = ml_meta_addr(stab->data, f->sa), heap = ml_meta_addr(stab->data + f->sa, f->sa);
    lheap h;
    int rc = heap_load(f, heap, &h);
    if (rc != 0)
        return rc;
    size_t two_k = 2 * (size_t)f->sym_internal_k, ks = f->ss, sa = f->sa;
    size_t max_bytes = 8 + 2 * sa + two_k * sa + (two_k + 1) * ks;
    unsigned char *b = malloc(max_bytes);
    int level = -1; /* the level the next node must have; -1: the root, any */
    if (!b) {
        rc = -ENOMEM;
        goto out;
    }
    for (unsigned depth = 0;; depth++) {
        if ((rc = ml_meta_read(f, node, b, 8, "B-tree node of a group")) < 0)
            goto out;
        if (memcmp(b, "TREE", 4) != 0 || b[4] != 0) {
            rc = ml_meta_bad(f, "no group B-tree node at address %llu (bad signature or node type)",
                             (unsigned long long)node);
            goto out;
        }
        int nlevel = b[5];
        size_t n = (size_t)ml_meta_le(b + 6, 2);
        if ((level >= 0 && nlevel != level) || depth > 255) {
            rc = ml_meta_bad(f, "the group B-tree node at address %llu is at level %d where %d belongs",
                             (unsigned long long)node, nlevel, level);
            goto out;
        }
        if (n > two_k || (n == 0 && level >= 0)) {
            rc = ml_meta_bad(f, "the group B-tree node at address %llu has %zu children (2K = %zu)",
                             (unsigned long long)node, n, two_k);
            goto out;
        }
        size_t used = 8 + 2 * sa + n * sa + (n + 1) * ks;
        if ((rc = ml_meta_read(f, node, b, used, "B-tree node of a group")) < 0 ||
            (rc = ml_meta_claim(f, node, max_bytes, "group B-tree node")) < 0)
            goto out;
        const unsigned char *kp = b + 8 + 2 * sa; /* key 0, child 0, key 1, ... key n */
        for (size_t i = 0; i <= n; i++)
            if (!heap_str(&h, ml_meta_le(kp + i * (ks + sa), (unsigned)ks))) {
                rc = ml_meta_bad(f, "key %zu of the group B-tree node at address %llu names no string of the "
                                 "group's local heap", i, (unsigned long long)node);
                goto out;
            }
        for (size_t i = 0; i < n; i++)
            if (!ml_meta_inside(f, ml_meta_addr(kp + i * (ks + sa) + ks, (unsigned)sa), 8)) {
                rc = ml_meta_bad(f, "child %zu of the group B-tree node at address %llu lies outside the file", i,
                                 (unsigned long long)node);
                goto out;
            }
        probe pr = {.h = &h, .base = kp, .stride = ks + sa, .width = (unsigned)ks, .name = name, .keys = 1};
        long idx = hdf5_bsearch(&pr, n);
        if (idx < 0) {
            rc = -ML_ENOTFOUND;
            goto out;
        }
        uint64_t child = ml_meta_addr(kp + (size_t)idx * (ks + sa) + ks, (unsigned)sa);
        if (nlevel == 0) {
            rc = snod_lookup(f, &h, child, name, out);
            goto out;
        }
        node = child;
        level = nlevel - 1;
    }
out:
    free(b);
    free(h.data);
    return rc;
}

/* Decode a Link message as H5O_link_decode does, inside its size. */
static int link_decode(const ml_meta_file *f, const ml_meta_msg *m, const unsigned char **name, size_t *name_len,
                       ml_meta_link *out) {
    const unsigned char *p = m->data, *end = m->data + m->size;
    if (m->size >= 1 && p[0] > 1)
        return ML_META_UNCHECKED; /* a newer version: HDF5 1.10.8 refuses it itself */
    if (m->size < 2 || p[0] != 1 || (p[1] & ~0x1fu))
        return ml_meta_bad(f, "a link message has version %u or unknown flags", m->size ? p[0] : 0);
    unsigned flags = p[1], type = 0;
    p += 2;
    size_t need = ((flags & 0x08) ? 1 : 0) + ((flags & 0x04) ? 8 : 0) + ((flags & 0x10) ? 1 : 0) + (1u << (flags & 3));
    if ((size_t)(end - p) < need)
        return ml_meta_bad(f, "a link message is cut short");
    if (flags & 0x08)
        type = *p++;
    if (type > 1 && type < 64)
        return ml_meta_bad(f, "a link message has link type %u", type);
    p += (flags & 0x04) ? 8 : 0;
    if ((flags & 0x10) && *p++ > 1)
        return ml_meta_bad(f, "a link message has an unknown character set");
    uint64_t len = ml_meta_le(p, 1u << (flags & 3));
    p += 1u << (flags & 3);
    if (len == 0 || len > (uint64_t)(end - p))
        return ml_meta_bad(f, "a link message's name (%llu bytes) does not fit the message", (unsigned long long)len);
    *name = p;
    *name_len = (size_t)len;
    p += len;
    if (type == 0) {
        if ((size_t)(end - p) < f->sa)
            return ml_meta_bad(f, "a hard link message is cut short");
        out->kind = ML_META_LINK_HARD;
        out->addr = ml_meta_addr(p, f->sa);
        return 0;
    }
    if (end - p < 2)
        return ml_meta_bad(f, "a link message's value is cut short");
    uint64_t vlen = ml_meta_le(p, 2);
    p += 2;
    if (vlen > (uint64_t)(end - p) || (type == 1 && vlen == 0))
        return ml_meta_bad(f, "a link message's value (%llu bytes) does not fit the message", (unsigned long long)vlen);
    if (type == 1) {
        out->kind = ML_META_LINK_SOFT;
        size_t n = vlen < sizeof out->target ? (size_t)vlen : sizeof out->target - 1;
        memcpy(out->target, p, n);
        out->target[n] = '\0';
        if (vlen >= sizeof out->target || strlen(out->target) != vlen)
            out->kind = ML_META_LINK_OTHER; /* a path we would read otherwise than HDF5: not followed */
    } else {
        /* an external link (64): version and flags byte, then the file name and
         * the object's path, each NUL-terminated (HDF5 takes both with strlen) */
        const unsigned char *nul = type == 64 && vlen >= 1 ? memchr(p + 1, 0, (size_t)vlen - 1) : NULL;
        if (type == 64 && (vlen < 3 || (p[0] >> 4) != 0 || (p[0] & 0x0f) > 1 || !nul ||
                           !memchr(nul + 1, 0, (size_t)(p + vlen - (nul + 1)))))
            return ml_meta_bad(f, "an external link's value (%llu bytes) does not hold a file name and a path",
                               (unsigned long long)vlen);
        out->kind = ML_META_LINK_OTHER;
    }
    return 0;
}

static int compact_lookup(const ml_meta_file *f, const ml_meta_ohdr *grp, const char *name, size_t len,
                          ml_meta_link *out) {
    int found = 0;
    for (size_t i = 0; i < grp->n_msgs; i++) {
        const ml_meta_msg *m = &grp->msgs[i];
        if (m->type != MSG_LINK)
            continue;
        if (m->flags & 0x02)
            return ML_META_UNCHECKED; /* a shared link message */
        const unsigned char *lname = NULL;
        size_t llen = 0;
        ml_meta_link l;
        int rc = link_decode(f, m, &lname, &llen, &l);
        if (rc != 0)
            return rc;
        /* HDF5 compares the name as a C string (it may hold a NUL) */
        const unsigned char *nul = memchr(lname, 0, llen);
        size_t clen = nul ? (size_t)(nul - lname) : llen;
        if (!found && clen == len && memcmp(lname, name, len) == 0) {
            *out = l;
            found = 1;
        }
    }
    return found ? 0 : -ML_ENOTFOUND;
}

int ml_meta_group_lookup(const ml_meta_file *f, const ml_meta_ohdr *grp, const char *name, size_t len,
                         ml_meta_link *out) {
    memset(out, 0, sizeof *out);
    const ml_meta_msg *linfo = ml_meta_ohdr_find(grp, MSG_LINFO);
    if (linfo) {
        if (linfo->flags & 0x02)
            return ML_META_UNCHECKED;
        /* version 0, flags, [max creation index], fractal heap, name index, [creation order index] */
        const unsigned char *p = linfo->data;
        size_t need = 2 + ((linfo->size && (p[1] & 1)) ? 8 : 0) + 2 * (size_t)f->sa +
                      ((linfo->size > 1 && (p[1] & 2)) ? f->sa : 0);
        if (linfo->size >= 1 && p[0] > 0)
            return ML_META_UNCHECKED;
        if (linfo->size < 2 || (p[1] & ~3u) || linfo->size < need)
            return ml_meta_bad(f, "a group's link info message is malformed");
        uint64_t fheap = ml_meta_addr(p + 2 + ((p[1] & 1) ? 8 : 0), f->sa);
        if (fheap != ML_META_UNDEF)
            return ML_META_UNCHECKED; /* dense: fractal heap and v2 B-tree, trusted to HDF5 */
        return compact_lookup(f, grp, name, len, out);
    }
    const ml_meta_msg *stab = ml_meta_ohdr_find(grp, MSG_STAB);
    if (!stab)
        return -ML_ENOTFOUND; /* not a group: HDF5 says so */
    if (stab->flags & 0x02)
        return ML_META_UNCHECKED;
    /* the name as a C string, as HDF5 has it */
    char buf[1024];
    if (len >= sizeof buf || memchr(name, 0, len))
        return ML_META_UNCHECKED;
    memcpy(buf, name, len);
    buf[len] = '\0';
    return stab_lookup(f, stab, buf, out);
}
