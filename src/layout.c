/* layout.c - the storage-neutral layout: its life and the calls that go
 * to its format.
 *
 * Invariants: a layout lives while any reference does (Streamers,
 * Readers, fetchers and Python objects each hold one); the last unref
 * frees the format's state first (it may hold library handles that
 * read the source), then the source reference, then what the layout owns.
 * Nothing here knows a format: every chunk look-up, format read and slow
 * read goes through L->ops.
 *
 * Workload: one call through a pointer per chunk look-up (the HDF5
 * format answers from its published table, lock-free, after the first
 * few) and per slow read.
 */
#include "layout.h"

#include "convert.h"

#include <errno.h>
#include <stdlib.h>

ml_layout *ml_layout_new(void) {
    ml_layout *L = calloc(1, sizeof *L);
    if (!L)
        return NULL;
    atomic_init(&L->refcount, 1);
    L->offset = UINT64_MAX;
    return L;
}

void ml_layout_ref(ml_layout *L) {
    /* Relaxed: the caller already holds a reference, so L cannot vanish. */
    atomic_fetch_add_explicit(&L->refcount, 1, memory_order_relaxed);
}

void ml_layout_unref(ml_layout *L) {
    if (!L)
        return;
    /* acq_rel: the last owner must see every other owner's writes before freeing. */
    if (atomic_fetch_sub_explicit(&L->refcount, 1, memory_order_acq_rel) != 1)
        return;
    if (L->ops)
        L->ops->close(L);
    ml_source_unref(L->src);
    ml_type_free(L->type);
    ml_convert_free(L->convert);
    free(L->fill);
    free(L->mem);
    free(L->filename);
    free(L->path);
    free(L);
}

int ml_layout_convert_setup(ml_layout *L, ml_error *err) {
    int rc = ml_convert_plan(L->type, &L->convert);
    if (rc == -E2BIG)
        return ml_error_set(err, -ML_ETYPE, "unsupported datatype: too many members to convert in dataset '%s' of file '%s'",
                            L->path, L->filename);
    if (rc < 0)
        return ml_error_set(err, rc, "out of memory opening dataset '%s' in file '%s'", L->path, L->filename);
    if (L->fill)
        ml_convert_apply(L->convert, L->fill, 1);
    if (L->mem)
        ml_convert_apply(L->convert, L->mem, L->n_rows * L->row_elems);
    return 0;
}

int ml_layout_chunk(ml_layout *L, uint64_t index, ml_chunk_info *info, ml_error *err) {
    if (index >= L->n_chunks)
        return ml_error_set(err, -ML_EINVAL, "chunk %llu is off the grid of dataset '%s' in file '%s' (%llu chunks)",
                            (unsigned long long)index, L->path, L->filename, (unsigned long long)L->n_chunks);
    return L->ops->chunk(L, index, info, err);
}

int ml_layout_read_chunk(ml_layout *L, uint64_t index, void *buf, uint64_t size, unsigned *mask,
                         ml_error *err) {
    return L->ops->read_chunk(L, index, buf, size, mask, err);
}

int ml_layout_read_slow(ml_layout *L, uint64_t row0, uint64_t n, void *dest, ml_error *err) {
    return L->ops->read_slow(L, row0, n, dest, err);
}

void ml_type_free(ml_type *t) {
    if (!t)
        return;
    for (unsigned i = 0; i < t->n_members; i++) {
        free(t->member_names ? t->member_names[i] : NULL);
        ml_type_free(t->members ? t->members[i] : NULL);
    }
    free(t->member_names);
    free(t->member_offsets);
    free(t->members);
    ml_type_free(t->base);
    free(t);
}
