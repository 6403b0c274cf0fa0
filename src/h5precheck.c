/* h5precheck.c - before HDF5 opens a dataset, check with the core's own
 * bounded parsers what HDF5 1.10.8 will read to get there (h5meta.h:
 * ml_meta_precheck), so a damaged file is refused with a reason instead
 * of crashing the process inside HDF5 (issue 10).
 *
 * The walk is HDF5's: the superblock (h5super.c), the root group's
 * object header, then for each component of the path the group's look-up
 * (h5group.c: symbol table or link messages) and the next object header
 * (h5ohdr.c), soft links followed as HDF5 follows them (relative to the
 * group holding the link, or from the root; at most MAX_SOFT of them, as
 * HDF5's H5L_NUM_LINKS), and at the end the dataset's messages
 * (h5dmsg.c). "." components are skipped and repeated '/' collapse, as in
 * HDF5's traversal.
 *
 * Invariants: nothing is refused that HDF5 reads without passing its
 * buffers as far as these parsers know; what they do not parse (dense
 * groups, external and user-defined links, shared messages, a superblock
 * version or driver block they do not know) ends the check with
 * ML_META_UNCHECKED and leaves the rest to HDF5, as before this file. A
 * name HDF5 will not find ends it with 0 (HDF5 says "not found").
 * Bounded: components by the path's length, soft links by MAX_SOFT, one
 * object header in memory at a time.
 *
 * Workload: once per dataset open, before H5Fopen: a few reads per
 * component, from the page cache.
 */
#define _GNU_SOURCE
#include "h5meta.h"

#include <stdlib.h>
#include <string.h>

#define MAX_SOFT 16 /* H5L_NUM_LINKS */

typedef struct walk {
    ml_meta_file *f;
    unsigned soft;  /* soft links followed so far */
} walk;

/* Resolve `path` from the group at `start`: *out = the object's header address. */
static int resolve(walk *w, uint64_t start, const char *path, uint64_t *out) {
    uint64_t cur = path[0] == '/' ? w->f->root : start;
    const char *p = path;
    for (;;) {
        while (*p == '/')
            p++;
        if (!*p)
            break;
        const char *e = strchr(p, '/');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len == 1 && p[0] == '.') {
            p += len;
            continue;
        }
        ml_meta_ohdr grp;
        int rc = ml_meta_ohdr_read(w->f, cur, &grp);
        if (rc != 0)
            return rc;
        ml_meta_link l;
        rc = ml_meta_group_lookup(w->f, &grp, p, len, &l);
        ml_meta_ohdr_free(&grp);
        if (rc != 0)
            return rc;
        if (l.kind == ML_META_LINK_HARD) {
            cur = l.addr;
        } else if (l.kind == ML_META_LINK_SOFT) {
            if (++w->soft > MAX_SOFT)
                return ML_META_UNCHECKED; /* HDF5 refuses: too many links */
            uint64_t to;
            if ((rc = resolve(w, cur, l.target, &to)) != 0)
                return rc;
            cur = to;
        } else {
            return ML_META_UNCHECKED; /* an external or user-defined link */
        }
        p += len;
    }
    *out = cur;
    return 0;
}

int ml_meta_precheck(ml_source *src, const char *path, char *why) {
    ml_meta_file f;
    ml_meta_extents *ext = malloc(sizeof *ext); /* NULL: overlaps are not looked for */
    int rc = ml_meta_super_read(src, why, ext, &f);
    if (rc == ML_META_UNCHECKED && !why[0])
        strcpy(why, "a superblock this check does not parse");
    if (rc != 0) {
        free(ext);
        /* a superblock HDF5 cannot use: the file is not one it can open */
        return rc == -ML_ECORRUPT ? -ML_ENOTHDF5 : rc;
    }
    walk w = {.f = &f};
    uint64_t addr = 0;
    ml_meta_ohdr root, oh;
    /* HDF5 reads the root group's header when it opens the file */
    if ((rc = ml_meta_ohdr_read(&f, f.root, &root)) != 0)
        goto out;
    ml_meta_ohdr_free(&root);
    if ((rc = resolve(&w, f.root, path, &addr)) != 0)
        goto out;
    if ((rc = ml_meta_ohdr_read(&f, addr, &oh)) != 0)
        goto out;
    rc = ml_meta_dataset_check(&f, &oh);
    ml_meta_ohdr_free(&oh);
out:
    if (rc == -ML_ENOTFOUND)
        rc = 0; /* HDF5 finds nothing either, and says so */
    if (rc == ML_META_UNCHECKED && !why[0])
        strcpy(why, "a structure this check does not parse (a dense group, an external link or a shared message)");
    free(ext);
    return rc;
}
