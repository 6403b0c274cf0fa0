/* source.c - the byte source interface: reference counts and dispatch.
 *
 * Invariants: a source lives while any reference does; every read context
 * (ml_io) holds one, so a source outlives the contexts reading it. A
 * source's ops and align never change after ml_source_init, so any thread
 * may call ml_source_read / ml_source_identify at once (implementations
 * keep those thread-safe); an ml_io is one thread's at a time.
 *
 * Workload: one call through a function pointer per batch or synchronous
 * read; nothing here allocates or locks.
 */
#include "source.h"

#include <errno.h>

void ml_source_init(ml_source *s, const ml_source_ops *ops, unsigned align) {
    s->ops = ops;
    s->align = align ? align : 1;
    atomic_init(&s->refcount, 1);
}

void ml_io_init(ml_io *io, const ml_io_ops *ops, ml_source *src) {
    io->ops = ops;
    io->src = ml_source_ref(src);
}

ml_source *ml_source_ref(ml_source *s) {
    /* Relaxed: the caller holds a reference, so s cannot vanish meanwhile. */
    atomic_fetch_add_explicit(&s->refcount, 1, memory_order_relaxed);
    return s;
}

void ml_source_unref(ml_source *s) {
    if (!s)
        return;
    /* acq_rel: the last owner sees every other owner's writes before destroy. */
    if (atomic_fetch_sub_explicit(&s->refcount, 1, memory_order_acq_rel) == 1)
        s->ops->destroy(s);
}

int ml_source_read(ml_source *s, ml_io_req *r) { return s->ops->read(s, r); }

int ml_source_identify(ml_source *s, ml_source_id *out) {
    return s->ops->identify ? s->ops->identify(s, out) : -EOPNOTSUPP;
}

int ml_source_same(ml_source *a, ml_source *b) {
    ml_source_id x, y;
    if (a == b)
        return 1;
    return ml_source_identify(a, &x) == 0 && ml_source_identify(b, &y) == 0 && x.dev == y.dev && x.ino == y.ino;
}

int ml_source_map(ml_source *s, ml_source_view *out) {
    return s->ops->map ? s->ops->map(s, out) : -EOPNOTSUPP;
}

int ml_source_direct(ml_source *s, ml_source **out) {
    return s->ops->direct ? s->ops->direct(s, out) : -EINVAL;
}

int ml_source_resident(ml_source *s, uint64_t off, uint64_t len, uint64_t *out) {
    return s->ops->resident ? s->ops->resident(s, off, len, out) : -EOPNOTSUPP;
}

int ml_source_prefetch(ml_source *s, uint64_t off, uint64_t len) {
    return s->ops->prefetch ? s->ops->prefetch(s, off, len) : 0;
}

int ml_io_open(ml_io **out, ml_source *s, unsigned depth, ml_io_mode mode) {
    return s->ops->io_open(s, depth, mode, out);
}

void ml_io_close(ml_io *io) {
    if (!io)
        return;
    ml_source *src = io->src;
    io->ops->close(io);
    ml_source_unref(src);
}

int ml_io_read(ml_io *io, ml_io_req *reqs, size_t n) { return io->ops->read(io, reqs, n); }

ml_io_mode ml_io_get_mode(const ml_io *io) { return io->ops->mode ? io->ops->mode(io) : ML_IO_PREAD; }

ml_source *ml_io_source(const ml_io *io) { return io->src; }
