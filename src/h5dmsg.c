/* h5dmsg.c - check the messages HDF5 1.10.8 decodes when it opens a
 * dataset (H5D__open_oid: datatype, dataspace, filter pipeline, layout,
 * fill values, external file list), against their own sizes and each
 * other, before HDF5 decodes them (h5meta.h: ml_meta_dataset_check).
 *
 * 1.10.8's decoders read fields without checking them against the
 * message's end, copy names with strlen/strdup, divide by chunk
 * dimensions and recurse into datatypes without a bound. So:
 *  - every field lies inside its message; every name HDF5 takes with
 *    strlen or strdup is NUL-terminated inside its field;
 *  - datatypes: version 1..3, class 0..10, size > 0, nesting at most
 *    MAX_DEPTH and at most MAX_MEMBERS members in all; atomic offsets and
 *    precisions inside the size; compound members inside the compound;
 *    an enum as large as its base type, its values inside the message;
 *    an array exactly its elements' size;
 *  - dataspace rank at most 32; layout: version 1..4, chunk rank 2..33 and
 *    the dataspace's rank + 1, no chunk dimension 0, the element-size
 *    dimension the datatype's size, a chunk under 4 GiB; compact data
 *    inside the message;
 *  - filter pipeline: at most 32 filters, each inside the message;
 *  - fill value: its value inside the message;
 *  - external file list: used slots at most the allocated ones, each
 *    name a string of its local heap.
 * A shared (committed or SOHM) message is not followed: ML_META_UNCHECKED.
 * What is checked is "HDF5 can decode this inside its buffers", not that
 * the values are meaningful: HDF5 refuses those itself.
 *
 * Workload: once per open; a few hundred bytes of messages.
 */
#define _GNU_SOURCE
#include "h5meta.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DEPTH 32
#define MAX_MEMBERS 65536
#define MAX_RANK 32

/* A cursor over one message. */
typedef struct cur {
    const unsigned char *p, *end;
} cur;

static int have(const cur *c, uint64_t n) { return n <= (uint64_t)(c->end - c->p); }

typedef struct dtype_walk {
    const ml_meta_file *f;
    unsigned members;          /* members seen so far, all levels */
} dtype_walk;

#define BAD(...) ml_meta_bad(w->f, __VA_ARGS__)

/* A NUL-terminated name at c->p; v < 3: padded to a multiple of 8. */
static int take_name(dtype_walk *w, cur *c, unsigned version) {
    const unsigned char *nul = memchr(c->p, 0, (size_t)(c->end - c->p));
    if (!nul)
        return BAD("a datatype member's name is not terminated inside its message");
    size_t n = (size_t)(nul - c->p) + 1;
    if (version < 3)
        n = (n + 7) / 8 * 8;
    if (!have(c, n))
        return BAD("a datatype member's name passes the end of its message");
    c->p += n;
    return 0;
}

/* Bytes that encode an offset inside a compound of `size` bytes (v3). */
static unsigned offset_bytes(uint64_t size) {
    unsigned n = 1;
    while (n < 8 && (size >> (8 * n)) != 0)
        n++;
    return n;
}

static int dtype(dtype_walk *w, cur *c, unsigned depth, uint64_t *size_out, unsigned *class_out) {
    if (depth > MAX_DEPTH)
        return BAD("a datatype nests more than %d levels deep", MAX_DEPTH);
    if (!have(c, 8))
        return BAD("a datatype message is cut short");
    unsigned version = c->p[0] >> 4, cls = c->p[0] & 0x0f;
    uint32_t flags = (uint32_t)ml_meta_le(c->p + 1, 3);
    uint64_t size = ml_meta_le(c->p + 4, 4);
    c->p += 8;
    if (version > 3)
        return ML_META_UNCHECKED; /* newer than 1.10.8 knows: it refuses it itself */
    if (version < 1)
        return BAD("a datatype has version 0");
    if (size == 0 && cls != 9 /* a vlen's size is HDF5's own */)
        return BAD("a datatype (class %u) has size 0", cls);
    *size_out = size;
    *class_out = cls;
    switch (cls) {
    case 0: /* fixed-point: offset, precision */
    case 4: /* bitfield */
    {
        if (!have(c, 4))
            return BAD("a datatype message is cut short");
        uint64_t off = ml_meta_le(c->p, 2), prec = ml_meta_le(c->p + 2, 2);
        c->p += 4;
        if (prec == 0 || off + prec > size * 8)
            return BAD("an integer datatype's precision (%llu bits at offset %llu) does not fit its %llu bytes",
                       (unsigned long long)prec, (unsigned long long)off, (unsigned long long)size);
        return 0;
    }
    case 1: /* float: offset, precision, exponent location and size, mantissa location and size, bias */
    {
        if (!have(c, 12))
            return BAD("a datatype message is cut short");
        uint64_t off = ml_meta_le(c->p, 2), prec = ml_meta_le(c->p + 2, 2);
        unsigned epos = c->p[4], esize = c->p[5], mpos = c->p[6], msize = c->p[7], spos = (flags >> 8) & 0xff;
        c->p += 12;
        if (prec == 0 || off + prec > size * 8 || esize == 0 || msize == 0 || epos + esize > prec ||
            mpos + msize > prec || spos >= prec)
            return BAD("a float datatype's bit fields do not fit its precision or size");
        return 0;
    }
    case 2: /* time: precision */
        if (!have(c, 2))
            return BAD("a datatype message is cut short");
        c->p += 2;
        return 0;
    case 3: /* string */
    case 7: /* reference */
        return 0;
    case 5: /* opaque: a tag of (flags & 0xff) bytes */
    {
        size_t n = flags & 0xff;
        if (!have(c, n))
            return BAD("an opaque datatype's tag passes the end of its message");
        c->p += n;
        return 0;
    }
    case 6: /* compound */
    {
        unsigned nm = flags & 0xffff;
        if (nm == 0 && version < 3)
            nm = 0;
        for (unsigned i = 0; i < nm; i++) {
            if (++w->members > MAX_MEMBERS)
                return BAD("a datatype has more than %d members", MAX_MEMBERS);
            int rc = take_name(w, c, version);
            if (rc < 0)
                return rc;
            unsigned ob = version >= 3 ? offset_bytes(size) : 4;
            if (!have(c, ob))
                return BAD("a compound datatype's member is cut short");
            uint64_t moff = ml_meta_le(c->p, ob);
            c->p += ob;
            uint64_t nelem = 1;
            if (version == 1) {
                /* dimensionality, reserved, permutation, reserved, four dimension sizes */
                if (!have(c, 28))
                    return BAD("a compound datatype's member is cut short");
                unsigned nd = c->p[0];
                if (nd > 4)
                    return BAD("a compound datatype's member has %u dimensions", nd);
                for (unsigned d = 0; d < nd; d++) {
                    uint64_t dim = ml_meta_le(c->p + 12 + 4 * d, 4);
                    if (dim == 0 || !ml_mul_ok64(nelem, dim, &nelem))
                        return BAD("a compound datatype's member has a dimension 0 or too large");
                }
                c->p += 28;
            }
            uint64_t msize = 0, total = 0;
            unsigned mcls = 0;
            if ((rc = dtype(w, c, depth + 1, &msize, &mcls)) != 0)
                return rc;
            if (!ml_mul_ok64(msize, nelem, &total) || moff > size || total > size - moff)
                return BAD("a compound datatype's member (%llu bytes at offset %llu) passes its %llu bytes",
                           (unsigned long long)total, (unsigned long long)moff, (unsigned long long)size);
        }
        return 0;
    }
    case 8: /* enum: base type, names, values */
    {
        unsigned nm = flags & 0xffff, bcls = 0;
        uint64_t bsize = 0, vbytes = 0;
        int rc = dtype(w, c, depth + 1, &bsize, &bcls);
        if (rc != 0)
            return rc;
        if (bcls != 0 || bsize != size)
            return BAD("an enum datatype of %llu bytes has a base type of %llu bytes (class %u)",
                       (unsigned long long)size, (unsigned long long)bsize, bcls);
        for (unsigned i = 0; i < nm; i++) {
            if (++w->members > MAX_MEMBERS)
                return BAD("a datatype has more than %d members", MAX_MEMBERS);
            if ((rc = take_name(w, c, version)) < 0)
                return rc;
        }
        if (!ml_mul_ok64(nm, bsize, &vbytes) || !have(c, vbytes))
            return BAD("an enum datatype's values pass the end of its message");
        c->p += vbytes;
        return 0;
    }
    case 9: /* vlen: base type */
    {
        uint64_t bsize = 0;
        unsigned bcls = 0;
        return dtype(w, c, depth + 1, &bsize, &bcls);
    }
    case 10: /* array: rank, [reserved], dims, [permutation], base type */
    {
        if (version < 2)
            return BAD("an array datatype has version 1");
        if (!have(c, 1))
            return BAD("a datatype message is cut short");
        unsigned nd = c->p[0];
        size_t skip = version == 2 ? 4 : 1, need = skip + 4 * (size_t)nd * (version == 2 ? 2 : 1);
        if (nd == 0 || nd > MAX_RANK || !have(c, need))
            return BAD("an array datatype has %u dimensions or is cut short", nd);
        uint64_t nelem = 1, bsize = 0, total = 0;
        for (unsigned d = 0; d < nd; d++) {
            uint64_t dim = ml_meta_le(c->p + skip + 4 * d, 4);
            if (dim == 0 || !ml_mul_ok64(nelem, dim, &nelem))
                return BAD("an array datatype has a dimension 0 or too large");
        }
        c->p += need;
        unsigned bcls = 0;
        int rc = dtype(w, c, depth + 1, &bsize, &bcls);
        if (rc != 0)
            return rc;
        if (!ml_mul_ok64(nelem, bsize, &total) || total != size)
            return BAD("an array datatype of %llu bytes holds %llu elements of %llu bytes",
                       (unsigned long long)size, (unsigned long long)nelem, (unsigned long long)bsize);
        return 0;
    }
    default: return BAD("a datatype has class %u", cls);
    }
}
#undef BAD

static int check_space(const ml_meta_file *f, const ml_meta_msg *m, unsigned *rank) {
    const unsigned char *p = m->data;
    if (m->size >= 1 && p[0] > 2)
        return ML_META_UNCHECKED; /* a newer version: HDF5 1.10.8 refuses it itself */
    if (m->size < 4 || p[0] < 1)
        return ml_meta_bad(f, "the dataspace message is malformed (version %u)", m->size ? p[0] : 0);
    unsigned nd = p[1], flags = p[2];
    size_t pos = p[0] == 1 ? 8 : 4;
    size_t need = pos + (size_t)nd * f->ss * ((flags & 1) ? 2 : 1);
    if (nd > MAX_RANK)
        return ml_meta_bad(f, "the dataspace has %u dimensions, more than 32", nd);
    if (m->size < need)
        return ml_meta_bad(f, "the dataspace message (%zu bytes) is too short for its %u dimensions", m->size, nd);
    *rank = (p[0] == 2 && p[3] != 1) ? 0 : nd; /* v2 type: 0 scalar, 1 simple, 2 null */
    return 0;
}

/* The header ("BTHD") of a version 2 B-tree chunk index, as the layout
 * message describes it: HDF5 1.10.8 sizes its node buffers and record
 * decoding by the header's node and record sizes without checking them
 * (a record size of another dataset crashes it, a node size of 2^31
 * hangs it). So: signature, version 0, checksum, record type 10
 * (unfiltered) or 11 (filtered) as the pipeline says, node size and split
 * and merge percents the layout message's, the record size the one HDF5
 * computes for this dataset (address, [chunk size in as many bytes as the
 * chunk's size needs, filter mask], a scaled offset per dimension), depth
 * at most 64, the root inside the file. ix: the layout's index fields;
 * filtered: -1 unknown (a shared pipeline: the record type is not checked). */
static int check_btree2(const ml_meta_file *f, const unsigned char *ix, unsigned nd, uint64_t chunk_bytes,
                        int filtered) {
    unsigned sa = f->sa, ss = f->ss;
    uint64_t node = ml_meta_le(ix, 4), addr = ml_meta_addr(ix + 6, sa);
    unsigned split = ix[4], merge = ix[5];
    unsigned char h[64];
    size_t hlen = 4 + 1 + 1 + 4 + 2 + 2 + 1 + 1 + sa + 2 + ss;
    if (addr == ML_META_UNDEF)
        return 0; /* no chunk written yet */
    int rc = ml_meta_read(f, addr, h, hlen + 4, "v2 B-tree header of the chunk index");
    if (rc < 0)
        return rc;
    if (memcmp(h, "BTHD", 4) != 0 || h[4] != 0)
        return ml_meta_bad(f, "no v2 B-tree header of the chunk index at address %llu", (unsigned long long)addr);
    if (ml_meta_checksum(h, hlen) != (uint32_t)ml_meta_le(h + hlen, 4))
        return ml_meta_bad(f, "the checksum of the chunk index's v2 B-tree header does not match");
    if ((rc = ml_meta_claim(f, addr, hlen + 4, "v2 B-tree header")) < 0)
        return rc;
    unsigned type = h[5], depth = (unsigned)ml_meta_le(h + 12, 2);
    uint64_t hnode = ml_meta_le(h + 6, 4), rec = ml_meta_le(h + 10, 2);
    uint64_t root = ml_meta_addr(h + 16, sa);
    unsigned len = 1;
    for (uint64_t b = chunk_bytes; b >>= 1;)
        len++; /* floor(log2) + 1 ... */
    len = 1 + (len - 1 + 8) / 8; /* HDF5: 1 + (log2(chunk size) + 8) / 8, at most 8 */
    if (len > 8)
        len = 8;
    uint64_t want = (uint64_t)sa + 8 * (uint64_t)(nd - 1) + (type == 11 ? len + 4 : 0);
    if ((type != 10 && type != 11) || (filtered >= 0 && type != (filtered ? 11u : 10u)))
        return ml_meta_bad(f, "the chunk index's v2 B-tree has record type %u", type);
    if (hnode != node || h[14] != split || h[15] != merge)
        return ml_meta_bad(f, "the chunk index's v2 B-tree header (node size %llu) disagrees with the layout "
                           "message (node size %llu)", (unsigned long long)hnode, (unsigned long long)node);
    if (rec != want)
        return ml_meta_bad(f, "the chunk index's v2 B-tree records are %llu bytes, not the %llu this dataset's "
                           "need", (unsigned long long)rec, (unsigned long long)want);
    if (node < 64 || node > (1u << 20) || node < 4 * rec)
        return ml_meta_bad(f, "the chunk index's v2 B-tree has nodes of %llu bytes", (unsigned long long)node);
    if (depth > 64 || (root != ML_META_UNDEF && !ml_meta_inside(f, root, 8)))
        return ml_meta_bad(f, "the chunk index's v2 B-tree has depth %u or a root outside the file", depth);
    return 0;
}

static int check_layout(const ml_meta_file *f, const ml_meta_msg *m, unsigned rank, uint64_t elem, int filtered) {
    const unsigned char *btree2 = NULL;
    const unsigned char *p = m->data;
    size_t n = m->size, sa = f->sa;
    if (n >= 1 && p[0] > 4)
        return ML_META_UNCHECKED; /* a newer version: HDF5 1.10.8 refuses it itself */
    if (n < 2 || p[0] < 1)
        return ml_meta_bad(f, "the layout message has version %u", n ? p[0] : 0);
    unsigned version = p[0];
    uint64_t dims[34];
    unsigned nd = 0;
    if (version <= 2) {
        /* version, dimensionality, class, reserved (5), [address], dims (4 each; chunked: the
         * element size the last), [compact: size (4), data] */
        if (n < 8)
            return ml_meta_bad(f, "the layout message is cut short");
        unsigned cls = p[2];
        nd = p[1];
        size_t pos = 8 + (cls != 0 ? sa : 0);
        if (cls > 2 || nd < 1 || nd > 33 || n < pos + 4 * (size_t)nd + (cls == 0 ? 4 : 0))
            return ml_meta_bad(f, "the layout message (version %u) is malformed", version);
        for (unsigned d = 0; d < nd; d++)
            if ((dims[d] = ml_meta_le(p + pos + 4 * d, 4)) == 0 && cls == 2)
                return ml_meta_bad(f, "the layout message has a chunk dimension of 0");
        pos += 4 * (size_t)nd;
        if (cls == 0) {
            uint64_t sz = ml_meta_le(p + pos, 4);
            if (sz > n - pos - 4)
                return ml_meta_bad(f, "the compact data (%llu bytes) passes the layout message's end",
                                   (unsigned long long)sz);
        }
        if (cls != 2)
            return 0;
    } else {
        unsigned cls = p[1];
        if (cls == 0) {
            if (n < 4 || ml_meta_le(p + 2, 2) > n - 4)
                return ml_meta_bad(f, "the compact data passes the layout message's end");
            return 0;
        }
        if (cls == 1)
            return n < 2 + sa + f->ss ? ml_meta_bad(f, "the contiguous layout message is cut short") : 0;
        if (cls == 3)
            return version == 4 ? ML_META_UNCHECKED /* virtual: global heap */
                                : ml_meta_bad(f, "a virtual layout in a layout message of version 3");
        if (cls != 2)
            return ml_meta_bad(f, "the layout message has class %u", cls);
        if (version == 3) {
            if (n < 3)
                return ml_meta_bad(f, "the layout message is cut short");
            nd = p[2];
            if (nd < 2 || nd > 33 || n < 3 + sa + 4 * (size_t)nd)
                return ml_meta_bad(f, "the chunked layout message has %u dimensions or is cut short", nd);
            for (unsigned d = 0; d < nd; d++)
                dims[d] = ml_meta_le(p + 3 + sa + 4 * d, 4);
        } else {
            if (n < 5)
                return ml_meta_bad(f, "the layout message is cut short");
            unsigned enc = p[4];
            nd = p[3];
            if (nd < 2 || nd > 33 || enc < 1 || enc > 8 || n < 5 + (size_t)nd * enc + 1)
                return ml_meta_bad(f, "the chunked layout message has %u dimensions of %u bytes or is cut short",
                                   nd, enc);
            for (unsigned d = 0; d < nd; d++)
                dims[d] = ml_meta_le(p + 5 + (size_t)d * enc, enc);
            size_t pos = 5 + (size_t)nd * enc;
            unsigned type = p[pos++], flags = p[2];
            size_t extra = type == 1 ? ((flags & 0x02) ? f->ss + 4 : 0) : type == 2 ? 0 : type == 3 ? 1
                         : type == 4 ? 5 : type == 5 ? 6 : (size_t)-1;
            if (extra == (size_t)-1 || n < pos + extra + sa)
                return ml_meta_bad(f, "the chunked layout message has index type %u or is cut short", type);
            if (type == 5)
                btree2 = p + pos; /* node size (4), split and merge percent, then the address */
        }
    }
    uint64_t bytes = 1;
    for (unsigned d = 0; d < nd; d++)
        if (dims[d] == 0)
            return ml_meta_bad(f, "the layout message has a chunk dimension of 0");
    for (unsigned d = 0; d + 1 < nd; d++)
        if (!ml_mul_ok64(bytes, dims[d], &bytes))
            bytes = UINT64_MAX;
    if (nd != rank + 1)
        return ml_meta_bad(f, "the chunked layout has %u dimensions for a dataspace of rank %u", nd - 1, rank);
    if (dims[nd - 1] != elem)
        return ml_meta_bad(f, "the chunked layout's element size (%llu) is not the datatype's (%llu)",
                           (unsigned long long)dims[nd - 1], (unsigned long long)elem);
    if (!ml_mul_ok64(bytes, elem, &bytes) || bytes > UINT32_MAX)
        return ml_meta_bad(f, "the layout message's chunks are of 4 GiB or more");
    return btree2 ? check_btree2(f, btree2, nd, bytes, filtered) : 0;
}

static int check_pline(const ml_meta_file *f, const ml_meta_msg *m) {
    cur c = {m->data, m->data + m->size};
    if (have(&c, 1) && c.p[0] > 2)
        return ML_META_UNCHECKED;
    if (!have(&c, 2) || c.p[0] < 1)
        return ml_meta_bad(f, "the filter pipeline message is malformed");
    unsigned version = c.p[0], nf = c.p[1];
    c.p += version == 1 ? 8 : 2;
    if (nf > 32 || c.p > c.end)
        return ml_meta_bad(f, "the filter pipeline has %u filters (at most 32) or is cut short", nf);
    for (unsigned i = 0; i < nf; i++) {
        if (!have(&c, 2))
            return ml_meta_bad(f, "filter %u of the pipeline is cut short", i);
        uint64_t id = ml_meta_le(c.p, 2), name_len = 0;
        int named = version == 1 || id >= 256;
        size_t hdr = named ? 8 : 6;
        if (!have(&c, hdr))
            return ml_meta_bad(f, "filter %u of the pipeline is cut short", i);
        if (named)
            name_len = ml_meta_le(c.p + 2, 2);
        uint64_t nv = ml_meta_le(c.p + hdr - 2, 2);
        c.p += hdr;
        if (name_len) {
            if (!have(&c, name_len) || !memchr(c.p, 0, (size_t)name_len))
                return ml_meta_bad(f, "the name of filter %u (id %llu) is not terminated inside its %llu bytes", i,
                                   (unsigned long long)id, (unsigned long long)name_len);
            c.p += name_len;
        }
        uint64_t vb = 4 * nv + (version == 1 && (nv & 1) ? 4 : 0);
        if (!have(&c, vb))
            return ml_meta_bad(f, "the %llu parameters of filter %u (id %llu) pass the pipeline message's end",
                               (unsigned long long)nv, i, (unsigned long long)id);
        c.p += vb;
    }
    return 0;
}

static int check_fill(const ml_meta_file *f, const ml_meta_msg *m) {
    const unsigned char *p = m->data;
    size_t n = m->size, pos;
    if (m->type == ML_META_MSG_FILL_OLD)
        pos = 0;
    else if (n >= 1 && (p[0] == 1 || p[0] == 2)) {
        if (n < 4)
            return ml_meta_bad(f, "the fill value message is cut short");
        if (p[0] == 2 && !p[3])
            return 0;
        pos = 4;
    } else if (n >= 2 && p[0] == 3) {
        if (p[1] & ~0x3fu)
            return ml_meta_bad(f, "the fill value message has unknown flags");
        if (!(p[1] & 0x20))
            return 0;
        pos = 2;
    } else if (n >= 1 && p[0] > 3) {
        return ML_META_UNCHECKED;
    } else {
        return ml_meta_bad(f, "the fill value message has version %u", n ? p[0] : 0);
    }
    if (n < pos + 4)
        return ml_meta_bad(f, "the fill value message is cut short");
    uint64_t size = ml_meta_le(p + pos, 4);
    if (size < (UINT64_C(1) << 31) && size > n - pos - 4)
        return ml_meta_bad(f, "the fill value (%llu bytes) passes the end of its message", (unsigned long long)size);
    return 0;
}

static int check_efl(const ml_meta_file *f, const ml_meta_msg *m) {
    const unsigned char *p = m->data;
    size_t ss = f->ss, n = m->size;
    if (n < 8 + f->sa || p[0] != 1)
        return ml_meta_bad(f, "the external file list message is malformed");
    uint64_t nalloc = ml_meta_le(p + 4, 2), nused = ml_meta_le(p + 6, 2);
    uint64_t heap = ml_meta_addr(p + 8, f->sa);
    if (nused > nalloc || n < 8 + f->sa + nused * 3 * ss)
        return ml_meta_bad(f, "the external file list holds %llu of %llu slots or is cut short",
                           (unsigned long long)nused, (unsigned long long)nalloc);
    /* the names, in a local heap: "HEAP", version, reserved, data size, free list, data address */
    unsigned char pre[32];
    int rc = ml_meta_read(f, heap, pre, 8 + 2 * ss + f->sa, "external file list's local heap");
    if (rc < 0)
        return rc;
    uint64_t size = ml_meta_le(pre + 8, (unsigned)ss), daddr = ml_meta_addr(pre + 8 + 2 * ss, f->sa);
    if (memcmp(pre, "HEAP", 4) != 0 || pre[4] != 0 || !ml_meta_inside(f, daddr, size))
        return ml_meta_bad(f, "the external file list's local heap is malformed");
    if ((rc = ml_meta_claim(f, heap, 8 + 2 * ss + f->sa, "local heap")) < 0 ||
        (rc = ml_meta_claim(f, daddr, size, "local heap's data")) < 0)
        return rc;
    if (size > (64u << 20))
        return ML_META_UNCHECKED;
    unsigned char *d = malloc(size ? (size_t)size : 1);
    if (!d)
        return -ENOMEM;
    rc = ml_meta_read(f, daddr, d, (size_t)size, "external file list's names");
    for (uint64_t i = 0; rc == 0 && i < nused; i++) {
        uint64_t off = ml_meta_le(p + 8 + f->sa + i * 3 * ss, (unsigned)ss);
        if (off >= size || !memchr(d + off, 0, (size_t)(size - off)))
            rc = ml_meta_bad(f, "external file %llu's name is not a string of the list's local heap",
                             (unsigned long long)i);
    }
    free(d);
    return rc;
}

/* The body of message m: m itself or, if it is shared, the message of its
 * type in the committed object's header it names (read into *store,
 * which the caller frees). HDF5 decodes a shared message this way
 * (H5O__shared_decode, then H5O_msg_read on the committed object).
 * Returns 0, ML_META_UNCHECKED (shared through the shared message table,
 * or shared twice), -ML_ECORRUPT, -ENOMEM or -errno. */
static int body_of(const ml_meta_file *f, const ml_meta_msg *m, ml_meta_ohdr *store, const ml_meta_msg **out) {
    memset(store, 0, sizeof *store);
    *out = m;
    if (!(m->flags & 0x02))
        return 0;
    const unsigned char *p = m->data;
    size_t n = m->size;
    if (n >= 1 && p[0] > 3)
        return ML_META_UNCHECKED;
    if (n < 2 || p[0] < 1)
        return ml_meta_bad(f, "a shared message (type %u) has version %u", m->type, n ? p[0] : 0);
    unsigned version = p[0], kind = version >= 3 ? p[1] : 2;
    uint64_t addr;
    if (version == 3 && kind == 1) {
        if (n < 10 || !f->has_sohm)
            return ml_meta_bad(f, "a message (type %u) is shared through a shared message table the file does "
                               "not have", m->type);
        return ML_META_UNCHECKED; /* the table's fractal heap: trusted to HDF5 */
    }
    if (version == 3 && kind != 2)
        return ml_meta_bad(f, "a shared message (type %u) has sharing type %u", m->type, kind);
    size_t at = version == 1 ? 8 : 2;
    if (n < at + f->sa)
        return ml_meta_bad(f, "a shared message (type %u) is cut short", m->type);
    addr = ml_meta_addr(p + at, f->sa);
    int rc = ml_meta_ohdr_read(f, addr, store);
    if (rc != 0)
        return rc;
    const ml_meta_msg *b = ml_meta_ohdr_find(store, m->type);
    if (!b) {
        ml_meta_ohdr_free(store);
        return ml_meta_bad(f, "the committed object a shared message (type %u) names has no such message", m->type);
    }
    if (b->flags & 0x02) {
        ml_meta_ohdr_free(store);
        return ML_META_UNCHECKED;
    }
    *out = b;
    return 0;
}

int ml_meta_dataset_check(const ml_meta_file *f, const ml_meta_ohdr *oh) {
    const ml_meta_msg *space = ml_meta_ohdr_find(oh, ML_META_MSG_SPACE), *type = ml_meta_ohdr_find(oh, ML_META_MSG_DTYPE);
    const ml_meta_msg *layout = ml_meta_ohdr_find(oh, ML_META_MSG_LAYOUT);
    unsigned rank = 0, cls = 0;
    uint64_t elem = 0;
    int rc, unchecked = 0;
    ml_meta_ohdr store;
    const ml_meta_msg *b;
    if (!space || !type || !layout)
        return 0; /* not a dataset: HDF5 says what it is */
    if ((rc = body_of(f, type, &store, &b)) == 0) {
        dtype_walk w = {.f = f};
        cur c = {b->data, b->data + b->size};
        rc = dtype(&w, &c, 0, &elem, &cls);
        ml_meta_ohdr_free(&store);
    }
    if (rc != 0)
        return rc; /* without the datatype's size the layout cannot be checked */
    if ((rc = body_of(f, space, &store, &b)) == 0) {
        rc = check_space(f, b, &rank);
        ml_meta_ohdr_free(&store);
    }
    if (rc != 0)
        return rc;
    if (layout->flags & 0x02)
        return ml_meta_bad(f, "the layout message is marked shared"); /* HDF5 refuses it too */
    const ml_meta_msg *pl = ml_meta_ohdr_find(oh, ML_META_MSG_PLINE);
    int filtered = !pl ? 0 : (pl->flags & 0x02) ? -1 : pl->size >= 2 && pl->data[1] > 0;
    if ((rc = check_layout(f, layout, rank, elem, filtered)) < 0)
        return rc;
    unchecked |= rc == ML_META_UNCHECKED;
    for (size_t i = 0; i < oh->n_msgs; i++) {
        const ml_meta_msg *m = &oh->msgs[i];
        if (m->type != ML_META_MSG_PLINE && m->type != ML_META_MSG_FILL && m->type != ML_META_MSG_FILL_OLD && m->type != ML_META_MSG_EFL)
            continue;
        if ((rc = body_of(f, m, &store, &b)) == 0) {
            rc = b->type == ML_META_MSG_PLINE ? check_pline(f, b) : b->type == ML_META_MSG_EFL ? check_efl(f, b) : check_fill(f, b);
            ml_meta_ohdr_free(&store);
        }
        if (rc < 0)
            return rc;
        unchecked |= rc == ML_META_UNCHECKED;
    }
    return unchecked ? ML_META_UNCHECKED : 0;
}
