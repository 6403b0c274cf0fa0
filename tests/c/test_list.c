/* test_list.c - list.h, the intrusive list under the Reader's queue,
 * running and parallel lists: order of push_front / push_back, removal
 * from the middle and the ends, linked-ness, pop, splice (what a stop does
 * to the queue), and a random sequence of operations against an array
 * model. */
#include "check.h"

#include "list.h"

typedef struct item {
    int id;
    ml_list_node node;
} item;

static item *at(ml_list_node *n) { return n ? ml_list_entry(n, item, node) : NULL; }

/* The ids on l, in order, must be want[0..n). */
static void check_order(const ml_list *l, const int *want, size_t n) {
    size_t k = 0;
    for (ml_list_node *p = ml_list_first(l); p; p = ml_list_next(l, p)) {
        CHECK_LT(k, n);
        CHECK_EQ(at(p)->id, want[k]);
        CHECK(ml_list_linked(p));
        k++;
    }
    CHECK_EQ(k, n);
    CHECK_EQ(ml_list_empty(l), n == 0);
    /* and backwards, through prev */
    k = n;
    for (const ml_list_node *p = l->head.prev; p != &l->head; p = p->prev)
        CHECK_EQ(ml_list_entry(p, item, node)->id, want[--k]);
    CHECK_EQ(k, 0);
}

static void test_basic(void) {
    item it[6];
    for (int i = 0; i < 6; i++)
        it[i] = (item){.id = i};
    ml_list l;
    ml_list_init(&l);
    check_order(&l, NULL, 0);
    CHECK(ml_list_first(&l) == NULL);
    CHECK(ml_list_pop_front(&l) == NULL);
    CHECK(!ml_list_linked(&it[0].node)); /* zeroed: on no list */
    ml_list_push_back(&l, &it[1].node);
    ml_list_push_back(&l, &it[2].node);
    ml_list_push_front(&l, &it[0].node);
    ml_list_push_back(&l, &it[3].node);
    check_order(&l, (int[]){0, 1, 2, 3}, 4);
    ml_list_remove(&it[2].node); /* middle */
    CHECK(!ml_list_linked(&it[2].node));
    check_order(&l, (int[]){0, 1, 3}, 3);
    ml_list_remove(&it[0].node); /* first */
    ml_list_remove(&it[3].node); /* last */
    check_order(&l, (int[]){1}, 1);
    CHECK_EQ(at(ml_list_pop_front(&l))->id, 1);
    check_order(&l, NULL, 0);
    /* splice: every node moves, in order, to the end of the target */
    ml_list a, b;
    ml_list_init(&a);
    ml_list_init(&b);
    ml_list_splice(&a, &b); /* empty into empty */
    check_order(&a, NULL, 0);
    ml_list_push_back(&a, &it[4].node);
    ml_list_push_back(&b, &it[0].node);
    ml_list_push_back(&b, &it[1].node);
    ml_list_push_back(&b, &it[5].node);
    ml_list_splice(&a, &b);
    check_order(&a, (int[]){4, 0, 1, 5}, 4);
    check_order(&b, NULL, 0);
    ml_list_splice(&b, &a); /* into an empty list */
    check_order(&b, (int[]){4, 0, 1, 5}, 4);
    check_order(&a, NULL, 0);
    ml_list_push_back(&a, &it[2].node); /* the emptied list works again */
    check_order(&a, (int[]){2}, 1);
}

/* Random operations against an array model of the same list. */
static void test_model(void) {
    enum { N = 64, OPS = 20000 };
    item it[N];
    int model[N];
    size_t n = 0;
    for (int i = 0; i < N; i++)
        it[i] = (item){.id = i};
    ml_list l;
    ml_list_init(&l);
    uint64_t seed = 5;
    for (int op = 0; op < OPS; op++) {
        int i = (int)(check_rand(&seed) % N);
        unsigned kind = (unsigned)(check_rand(&seed) % 4);
        if (!ml_list_linked(&it[i].node)) {
            if (kind & 1) {
                ml_list_push_back(&l, &it[i].node);
                model[n++] = i;
            } else {
                ml_list_push_front(&l, &it[i].node);
                memmove(model + 1, model, n * sizeof *model);
                model[0] = i;
                n++;
            }
        } else if (kind == 0 && n) {
            CHECK_EQ(at(ml_list_pop_front(&l))->id, model[0]);
            memmove(model, model + 1, --n * sizeof *model);
        } else {
            ml_list_remove(&it[i].node);
            size_t k = 0;
            while (model[k] != i)
                k++;
            memmove(model + k, model + k + 1, (n - k - 1) * sizeof *model);
            n--;
        }
        if (op % 97 == 0)
            check_order(&l, model, n);
    }
    check_order(&l, model, n);
}

int main(void) {
    test_basic();
    test_model();
    CHECK_DONE();
}
