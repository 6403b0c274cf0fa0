/* visit.h - the datasets of a file, by H5Ovisit: the default list of paths
 * for fuzz_read.c and ref_read.c when run.py gives none. Header-only.
 * H5Ovisit does not cross external links: the runner adds the seed's own
 * list of paths (seeds.py's manifest) for those.
 */
#ifndef FUZZ_VISIT_H
#define FUZZ_VISIT_H

#include <hdf5.h>
#include <stdlib.h>
#include <string.h>

#include "plan.h"

typedef struct visit_list {
    unsigned n;
    char *paths[PLAN_MAX_DATASETS]; /* owned, "/"-rooted */
} visit_list;

static herr_t visit_one(hid_t obj, const char *name, const H5O_info_t *info, void *op_data) {
    (void)obj;
    visit_list *v = op_data;
    if (info->type != H5O_TYPE_DATASET)
        return 0;
    if (v->n == PLAN_MAX_DATASETS)
        return 1; /* enough: stop */
    size_t len = strlen(name);
    char *p = malloc(len + 2);
    if (!p)
        return -1;
    p[0] = '/';
    memcpy(p + 1, name, len + 1);
    v->paths[v->n++] = p;
    return 0;
}

/* Fill v with the file's datasets (at most PLAN_MAX_DATASETS). Returns 0,
 * or -1 when the file does not open (v is then empty). */
static int visit_datasets(const char *filename, visit_list *v) {
    memset(v, 0, sizeof *v);
    hid_t f = H5Fopen(filename, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0)
        return -1;
    H5Ovisit2(f, H5_INDEX_NAME, H5_ITER_NATIVE, visit_one, v, H5O_INFO_BASIC);
    H5Fclose(f);
    return 0;
}

/* The paths a reader's command line names (argv[2..]), or, when it names
 * none, every dataset of the file argv[1] (visit_datasets). */
static void visit_args(int argc, char **argv, visit_list *v) {
    memset(v, 0, sizeof *v);
    if (argc == 2)
        visit_datasets(argv[1], v);
    else
        for (int i = 2; i < argc && v->n < PLAN_MAX_DATASETS; i++)
            v->paths[v->n++] = strdup(argv[i]);
}

static void visit_free(visit_list *v) {
    for (unsigned i = 0; i < v->n; i++)
        free(v->paths[i]);
    v->n = 0;
}

#endif
