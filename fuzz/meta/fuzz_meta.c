/* fuzz_meta.c - coverage-guided fuzz target for the core's pre-check of
 * what HDF5 reads to open a dataset (src/h5precheck.c and its parsers:
 * h5super.c, h5ohdr.c, h5group.c, h5dmsg.c, h5meta.c): ml_meta_precheck
 * on a file image and a dataset path.
 *
 * An input is one byte n (the path's length, at most 255), n bytes of path,
 * then the whole file image, served by a memory source (no file, no HDF5).
 * The target aborts (fuzz_broken) on a broken promise of h5meta.h:
 *  - a return other than 0, ML_META_UNCHECKED, -ML_ECORRUPT, -ML_ENOTHDF5
 *    (no allocation fails here, so never -ENOMEM);
 *  - -ML_ECORRUPT without a reason, or a reason not NUL-terminated inside
 *    its ML_META_WHY_MAX bytes;
 *  - a read that passes the image's end (every read must have been
 *    bounded by the file's size first: a short read means a missing
 *    check), or more reads than MAX_READS (work bounded by the file).
 * ASan and UBSan report the rest; LeakSanitizer leaks.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "h5meta.h"
#include "harness.h"
#include "source.h"
#include "target_util.h"

#define broken(...) fuzz_broken("fuzz_meta", __VA_ARGS__)
#define MAX_READS 200000

fuzz_index_outcome fuzz_index_last;

typedef struct img_source {
    ml_source base;
    const uint8_t *p;
    uint64_t n;
    uint64_t reads;
} img_source;

static int img_read(ml_source *s, ml_io_req *r) {
    img_source *m = (img_source *)s;
    if (++m->reads > MAX_READS)
        broken("more than %d reads", MAX_READS);
    if (r->offset > m->n || r->len > m->n - r->offset)
        broken("a read of %zu bytes at %llu passes the image's end (%llu bytes)", r->len,
               (unsigned long long)r->offset, (unsigned long long)m->n);
    memcpy(r->buf, m->p + r->offset, r->len);
    r->result = (ssize_t)r->len;
    return 0;
}

static int img_identify(ml_source *s, ml_source_id *out) {
    img_source *m = (img_source *)s;
    *out = (ml_source_id){.dev = 0, .ino = 1, .size = m->n};
    return 0;
}

static int img_io_open(ml_source *s, unsigned depth, ml_io_mode mode, ml_io **out) {
    (void)s, (void)depth, (void)mode, (void)out;
    return -EOPNOTSUPP;
}

static void img_destroy(ml_source *s) { (void)s; }

static const ml_source_ops img_ops = {.kind = "image", .io_open = img_io_open, .read = img_read,
                                      .identify = img_identify, .destroy = img_destroy};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    memset(&fuzz_index_last, 0, sizeof fuzz_index_last);
    if (size < 1 || size < 1 + (size_t)data[0])
        return 0;
    char path[256];
    memcpy(path, data + 1, data[0]);
    path[data[0]] = '\0';
    img_source src;
    memset(&src, 0, sizeof src);
    ml_source_init(&src.base, &img_ops, 1);
    src.p = data + 1 + data[0];
    src.n = size - 1 - data[0];
    char why[ML_META_WHY_MAX + 1];
    memset(why, 'x', sizeof why);
    why[0] = '\0';
    int rc = ml_meta_precheck(&src.base, path, why);
    fuzz_index_last.parsed = 1;
    fuzz_index_last.locate_rc = rc;
    fuzz_index_last.walked = rc == 0;
    fuzz_index_last.emitted = rc == 0;
    fuzz_index_last.reads = src.reads;
    if (rc != 0 && rc != ML_META_UNCHECKED && rc != -ML_ECORRUPT && rc != -ML_ENOTHDF5)
        broken("ml_meta_precheck returned %d", rc);
    if (!memchr(why, 0, ML_META_WHY_MAX))
        broken("the reason is not terminated inside its buffer");
    if (rc == -ML_ECORRUPT && !why[0])
        broken("-ML_ECORRUPT without a reason");
    return 0;
}
