/* h5ohdr.c - parse an HDF5 object header (version 1 or 2) into its
 * messages for the core's metadata checks (h5meta.h), as HDF5 1.10's
 * H5O__cache_deserialize and H5O__chunk_deserialize read it.
 *
 * Invariants:
 *  - Every chunk lies inside the file: chunk 0 after the prefix, each
 *    continuation where its message says (at most MAX_CHUNKS, no address
 *    twice, at most MAX_BYTES in all). v2 chunks carry a signature (OCHK
 *    after the first) and a lookup3 checksum, which must match (HDF5
 *    refuses a mismatch too).
 *  - Every message lies inside its chunk: a v1 message's size is a
 *    multiple of 8 (HDF5 refuses others), a v2 chunk may end in a gap
 *    shorter than a message header. A continuation message holds an
 *    address and a length.
 *  - Message data is never interpreted here beyond continuations: each
 *    check reads the messages it knows (h5group.c, h5dmsg.c).
 *
 * Workload: one header per object on the path, a few hundred bytes each.
 */
#define _GNU_SOURCE
#include "h5meta.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define MAX_CHUNKS 4096
#define MAX_BYTES (64u << 20)
#define MAX_MSGS (1u << 20)
#define MSG_CONTINUATION 0x0010
#define V2_PREFIX_MAX 34

void ml_meta_ohdr_free(ml_meta_ohdr *oh) {
    if (!oh)
        return;
    free(oh->buf);
    free(oh->msgs);
    oh->buf = NULL;
    oh->msgs = NULL;
    oh->n_msgs = 0;
}

const ml_meta_msg *ml_meta_ohdr_find(const ml_meta_ohdr *oh, unsigned type) {
    for (size_t i = 0; i < oh->n_msgs; i++)
        if (oh->msgs[i].type == type)
            return &oh->msgs[i];
    return NULL;
}

typedef struct chunk_list {
    uint64_t at[MAX_CHUNKS], len[MAX_CHUNKS];
    size_t off[MAX_CHUNKS]; /* where each chunk's bytes begin in oh->buf */
    unsigned n;
} chunk_list;

static int add_msg(const ml_meta_file *f, ml_meta_ohdr *oh, size_t *cap, unsigned type, unsigned flags,
                   size_t data_off, size_t size) {
    if (oh->n_msgs == *cap) {
        if (*cap >= MAX_MSGS)
            return ml_meta_bad(f, "the object header at address %llu has more than %u messages",
                               (unsigned long long)oh->addr, MAX_MSGS);
        size_t ncap = *cap ? *cap * 2 : 32;
        ml_meta_msg *m = realloc(oh->msgs, ncap * sizeof *m);
        if (!m)
            return -ENOMEM;
        oh->msgs = m;
        *cap = ncap;
    }
    /* data points into buf once every chunk is read: store the offset for now */
    oh->msgs[oh->n_msgs++] = (ml_meta_msg){.type = type, .flags = flags,
                                           .data = (const unsigned char *)(uintptr_t)data_off, .size = size};
    return 0;
}

int ml_meta_ohdr_read(const ml_meta_file *f, uint64_t addr, ml_meta_ohdr *oh) {
    unsigned char pre[V2_PREFIX_MAX];
    chunk_list *cl = calloc(1, sizeof *cl);
    size_t cap = 0, used = 0, msg_hdr;
    uint64_t total = 0;
    int rc = 0;
    memset(oh, 0, sizeof *oh);
    oh->addr = addr;
    if (!cl)
        return -ENOMEM;
    if (!ml_meta_inside(f, addr, 16)) {
        rc = ml_meta_bad(f, "an object header address (%llu) lies outside the file", (unsigned long long)addr);
        goto out;
    }
    size_t got = ml_meta_inside(f, addr, sizeof pre) ? sizeof pre : (size_t)(f->end - f->base - addr);
    if ((rc = ml_meta_read(f, addr, pre, got, "object header")) < 0)
        goto out;
    if (memcmp(pre, "OHDR", 4) == 0) {
        unsigned flags = pre[5], pos = 6, csz = 1u << (flags & 3);
        if (pre[4] != 2) {
            rc = pre[4] > 2 ? ML_META_UNCHECKED /* newer: HDF5 1.10.8 refuses it itself */
                            : ml_meta_bad(f, "the object header at address %llu has version %u",
                                          (unsigned long long)addr, pre[4]);
            goto out;
        }
        pos += (flags & 0x20) ? 16 : 0;
        pos += (flags & 0x10) ? 4 : 0;
        if (got < pos + csz) {
            rc = ml_meta_bad(f, "the object header at address %llu is cut short", (unsigned long long)addr);
            goto out;
        }
        oh->version = 2;
        /* chunk 0 as read and checksummed: prefix, messages, gap, checksum */
        cl->at[0] = addr;
        uint64_t size0 = ml_meta_le(pre + pos, csz);
        cl->len[0] = size0 > f->end ? f->end : pos + csz + size0 + 4; /* past the end either way */
        cl->off[0] = pos + csz; /* messages start after the prefix */
        msg_hdr = (flags & 0x04) ? 6 : 4;
    } else if (pre[0] == 1) {
        oh->version = 1;
        cl->at[0] = addr + 16;
        cl->len[0] = ml_meta_le(pre + 8, 4);
        cl->off[0] = 0;
        msg_hdr = 8;
    } else {
        rc = ml_meta_bad(f, "no object header at address %llu (no signature, version %u)", (unsigned long long)addr,
                         pre[0]);
        goto out;
    }
    cl->n = 1;
    for (unsigned c = 0; c < cl->n; c++) {
        uint64_t len = cl->len[c];
        size_t start, end;
        if (!ml_meta_inside(f, cl->at[c], len)) {
            rc = ml_meta_bad(f, "a chunk of the object header at address %llu (%llu bytes) lies past the end of "
                             "the file", (unsigned long long)addr, (unsigned long long)len);
            goto out;
        }
        if (len > MAX_BYTES || total + len > MAX_BYTES) {
            rc = ML_META_UNCHECKED; /* larger than any header we expect: HDF5 decides */
            goto out;
        }
        if (len == 0 || (oh->version == 2 && c > 0 && len < 8)) {
            rc = ml_meta_bad(f, "an object header chunk at address %llu has %llu bytes", (unsigned long long)cl->at[c],
                             (unsigned long long)len);
            goto out;
        }
        unsigned char *nb = realloc(oh->buf, used + (size_t)len);
        if (!nb) {
            rc = -ENOMEM;
            goto out;
        }
        oh->buf = nb;
        unsigned char *p = oh->buf + used;
        if ((rc = ml_meta_read(f, cl->at[c], p, (size_t)len, "object header chunk")) < 0)
            goto out;
        /* HDF5 caches chunk 0 with the prefix (v1: 16 bytes before it) */
        uint64_t cat = c == 0 && oh->version == 1 ? addr : cl->at[c], clen = c == 0 && oh->version == 1 ? len + 16 : len;
        if ((rc = ml_meta_claim(f, cat, clen, "object header")) < 0)
            goto out;
        if (oh->version == 2) {
            if (c > 0 && memcmp(p, "OCHK", 4) != 0) {
                rc = ml_meta_bad(f, "an object header continuation at address %llu has no OCHK signature",
                                 (unsigned long long)cl->at[c]);
                goto out;
            }
            if (ml_meta_checksum(p, (size_t)len - 4) != (uint32_t)ml_meta_le(p + len - 4, 4)) {
                rc = ml_meta_bad(f, "the checksum of the object header chunk at address %llu does not match",
                                 (unsigned long long)cl->at[c]);
                goto out;
            }
            start = c == 0 ? cl->off[0] : 4;
            end = (size_t)len - 4;
        } else {
            start = 0;
            end = (size_t)len;
        }
        if (start > end) {
            rc = ml_meta_bad(f, "the object header at address %llu is malformed", (unsigned long long)addr);
            goto out;
        }
        for (size_t pos = start; end - pos >= msg_hdr;) {
            const unsigned char *m = p + pos;
            unsigned type = oh->version == 2 ? m[0] : (unsigned)ml_meta_le(m, 2);
            size_t size = oh->version == 2 ? (size_t)ml_meta_le(m + 1, 2) : (size_t)ml_meta_le(m + 2, 2);
            unsigned mflags = oh->version == 2 ? m[3] : m[4];
            if (size > end - pos - msg_hdr || (oh->version == 1 && size % 8 != 0)) {
                rc = ml_meta_bad(f, "message %zu (type %u, %zu bytes) of the object header at address %llu does "
                                 "not fit its chunk", oh->n_msgs, type, size, (unsigned long long)addr);
                goto out;
            }
            if ((rc = add_msg(f, oh, &cap, type, mflags, used + pos + msg_hdr, size)) < 0)
                goto out;
            if (type == MSG_CONTINUATION) {
                const unsigned char *d = m + msg_hdr;
                if (size < (size_t)f->sa + f->ss) {
                    rc = ml_meta_bad(f, "a continuation message of the object header at address %llu is too short",
                                     (unsigned long long)addr);
                    goto out;
                }
                uint64_t at = ml_meta_addr(d, f->sa), clen = ml_meta_le(d + f->sa, f->ss);
                if (cl->n == MAX_CHUNKS) {
                    rc = ML_META_UNCHECKED;
                    goto out;
                }
                for (unsigned k = 0; k < cl->n; k++)
                    if (cl->at[k] == at) {
                        rc = ml_meta_bad(f, "the object header at address %llu continues into a chunk it already "
                                         "has", (unsigned long long)addr);
                        goto out;
                    }
                if (!ml_meta_inside(f, at, clen)) {
                    rc = ml_meta_bad(f, "a continuation of the object header at address %llu lies past the end "
                                     "of the file", (unsigned long long)addr);
                    goto out;
                }
                cl->at[cl->n] = at;
                cl->len[cl->n] = clen;
                cl->n++;
            }
            pos += msg_hdr + size;
        }
        used += (size_t)len;
        total += len;
    }
    for (size_t i = 0; i < oh->n_msgs; i++)
        oh->msgs[i].data = oh->buf + (uintptr_t)oh->msgs[i].data;
out:
    free(cl);
    if (rc != 0)
        ml_meta_ohdr_free(oh);
    return rc;
}
