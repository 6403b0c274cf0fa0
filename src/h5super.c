/* h5super.c - find and parse an HDF5 file's superblock (versions 0 to 3)
 * for the core's metadata checks (h5meta.h).
 *
 * Invariants:
 *  - The signature is looked for where HDF5 looks: at 0, then 512, 1024,
 *    2048, ... below the file's size. Its offset is the base address (as
 *    HDF5 takes it whatever the superblock's base address field says).
 *  - Only fields the later checks need are taken: the sizes of addresses
 *    and lengths (2, 4 or 8: other sizes HDF5 refuses or we do not parse,
 *    ML_META_UNCHECKED), the group B-tree K's (v0/v1 fields; for v2/v3
 *    the superblock extension's "B-tree 'K' values" message, else HDF5's
 *    defaults 4 and 16), the root group's object header. v2/v3 checksums
 *    are verified (HDF5 refuses a mismatch too).
 *  - A v0/v1 driver information block (the multi and family drivers) is
 *    not parsed: ML_META_UNCHECKED.
 *
 * Workload: two or three reads per open.
 */
#define _GNU_SOURCE
#include "h5meta.h"

#include <errno.h>
#include <string.h>

#define SB_MAX 256 /* more than the longest superblock: v1 with 8-byte fields is 8 + 20 + 4*8 + 40 */
#define MSG_BTREEK 0x0013
#define MSG_SOHM 0x000F /* shared message table */

static const unsigned char SIGNATURE[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};

static int size_ok(unsigned n) { return n == 2 || n == 4 || n == 8; }

/* v2/v3: the superblock extension's group B-tree K's, if it has them. */
static int read_extension(ml_meta_file *f, uint64_t ext) {
    ml_meta_ohdr oh;
    int rc = ml_meta_ohdr_read(f, ext, &oh);
    if (rc != 0)
        return rc;
    f->has_sohm = ml_meta_ohdr_find(&oh, MSG_SOHM) != NULL;
    const ml_meta_msg *m = ml_meta_ohdr_find(&oh, MSG_BTREEK);
    if (m && !(m->flags & 0x02)) {
        /* version, chunk B-tree internal K, group internal K, group leaf K */
        if (m->size < 7 || m->data[0] != 0)
            rc = ml_meta_bad(f, "the superblock extension's B-tree K message is malformed");
        else {
            f->sym_internal_k = (unsigned)ml_meta_le(m->data + 3, 2);
            f->sym_leaf_k = (unsigned)ml_meta_le(m->data + 5, 2);
        }
    }
    ml_meta_ohdr_free(&oh);
    return rc;
}

int ml_meta_super_read(ml_source *src, char *why, ml_meta_extents *ext, ml_meta_file *f) {
    ml_source_id id;
    unsigned char sb[SB_MAX];
    int rc = ml_source_identify(src, &id);
    if (rc < 0)
        return rc;
    memset(f, 0, sizeof *f);
    f->src = src;
    f->why = why;
    f->ext = ext;
    if (ext)
        ext->n = 0;
    f->end = id.size;
    f->sa = f->ss = 8;
    why[0] = '\0';
    uint64_t at = 0;
    for (unsigned n = 8;; n++) {
        at = n == 8 ? 0 : UINT64_C(1) << n;
        if (n >= 63 || at >= id.size || id.size - at < 8)
            return -ML_ENOTHDF5;
        unsigned char sig[8];
        ml_io_req r = {.offset = at, .len = 8, .buf = sig};
        if ((rc = ml_source_read(src, &r)) < 0)
            return rc == -ML_ETRUNC ? -ML_ENOTHDF5 : rc;
        if (memcmp(sig, SIGNATURE, 8) == 0)
            break;
    }
    f->base = at;
    size_t got = id.size - at < SB_MAX ? (size_t)(id.size - at) : SB_MAX;
    ml_io_req r = {.offset = at, .len = got, .buf = sb};
    if ((rc = ml_source_read(src, &r)) < 0)
        return rc;
    if (got < 12)
        return ml_meta_bad(f, "the superblock is cut short by the end of the file");
    f->sb_version = sb[8];
    if (f->sb_version <= 1) {
        /* version, free-space, root group and shared header versions, reserved,
         * sizes of offsets and lengths, reserved, leaf K, internal K, flags, [v1: K, reserved] */
        f->sa = sb[13];
        f->ss = sb[14];
        if (!size_ok(f->sa) || !size_ok(f->ss))
            return ML_META_UNCHECKED;
        size_t pos = f->sb_version == 0 ? 24 : 28;
        size_t need = pos + 4 * (size_t)f->sa + 2 * (size_t)f->sa + 24;
        if (got < need)
            return ml_meta_bad(f, "the superblock is cut short by the end of the file");
        f->sym_leaf_k = (unsigned)ml_meta_le(sb + 16, 2);
        f->sym_internal_k = (unsigned)ml_meta_le(sb + 18, 2);
        uint64_t driver = ml_meta_addr(sb + pos + 3 * f->sa, f->sa);
        /* the root group's symbol table entry: name offset, header address, cache */
        f->root = ml_meta_addr(sb + pos + 4 * f->sa + f->sa, f->sa);
        if (driver != ML_META_UNDEF)
            return ML_META_UNCHECKED;
        if ((rc = ml_meta_claim(f, 0, need, "superblock")) < 0)
            return rc;
    } else if (f->sb_version <= 3) {
        f->sa = sb[9];
        f->ss = sb[10];
        if (!size_ok(f->sa) || !size_ok(f->ss))
            return ML_META_UNCHECKED;
        size_t body = 12 + 4 * (size_t)f->sa;
        if (got < body + 4)
            return ml_meta_bad(f, "the superblock is cut short by the end of the file");
        if (ml_meta_checksum(sb, body) != (uint32_t)ml_meta_le(sb + body, 4))
            return ml_meta_bad(f, "the superblock's checksum does not match");
        f->sym_leaf_k = 4;
        f->sym_internal_k = 16;
        if ((rc = ml_meta_claim(f, 0, body + 4, "superblock")) < 0)
            return rc;
        uint64_t ext = ml_meta_addr(sb + 12 + f->sa, f->sa);
        f->root = ml_meta_addr(sb + 12 + 3 * f->sa, f->sa);
        if (ext != ML_META_UNDEF && (rc = read_extension(f, ext)) != 0)
            return rc;
    } else {
        return ML_META_UNCHECKED; /* a newer version: HDF5 says what it makes of it */
    }
    if (f->sym_leaf_k == 0 || f->sym_internal_k == 0)
        return ml_meta_bad(f, "the superblock's group B-tree K is 0");
    if (f->root == ML_META_UNDEF)
        return ml_meta_bad(f, "the superblock has no root group");
    return 0;
}
