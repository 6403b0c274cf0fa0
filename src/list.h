/* list.h - an intrusive doubly linked list (the Linux kernel's list_head,
 * liburing's and libuv's queues): the object carries its own links, so
 * putting it on a list or taking it off never allocates and is O(1).
 *
 * A list is a circular ring through a sentinel node (ml_list.head). A node
 * that is on no list has next == prev == NULL, so ml_list_linked() tells
 * whether it is on one; a node is on at most one list at a time (an object
 * that can be on several has a node per list). No locking here: the list's
 * owner says which lock guards it. Nothing is freed here.
 */
#ifndef ML_LIST_H
#define ML_LIST_H

#include <stddef.h>

typedef struct ml_list_node {
    struct ml_list_node *prev, *next; /* NULL, NULL: on no list */
} ml_list_node;

typedef struct ml_list {
    ml_list_node head; /* sentinel: head.next is the first node, head.prev the last */
} ml_list;

/* The object of type `type` whose member `member` is node n. */
#define ml_list_entry(n, type, member) ((type *)(void *)((char *)(n) - offsetof(type, member)))

static inline void ml_list_init(ml_list *l) { l->head.prev = l->head.next = &l->head; }

static inline int ml_list_empty(const ml_list *l) { return l->head.next == &l->head; }

/* 1 if n is on a list. */
static inline int ml_list_linked(const ml_list_node *n) { return n->next != NULL; }

/* First node, or NULL if l is empty. */
static inline ml_list_node *ml_list_first(const ml_list *l) {
    return ml_list_empty(l) ? NULL : l->head.next;
}

/* The node after n on l, or NULL if n is the last. */
static inline ml_list_node *ml_list_next(const ml_list *l, const ml_list_node *n) {
    return n->next == &l->head ? NULL : n->next;
}

static inline void ml_list_insert_(ml_list_node *n, ml_list_node *prev, ml_list_node *next) {
    n->prev = prev;
    n->next = next;
    prev->next = n;
    next->prev = n;
}

/* Put n (on no list) first / last on l. */
static inline void ml_list_push_front(ml_list *l, ml_list_node *n) { ml_list_insert_(n, &l->head, l->head.next); }
static inline void ml_list_push_back(ml_list *l, ml_list_node *n) { ml_list_insert_(n, l->head.prev, &l->head); }

/* Take n off its list; it is then on none. n must be on a list. */
static inline void ml_list_remove(ml_list_node *n) {
    n->prev->next = n->next;
    n->next->prev = n->prev;
    n->prev = n->next = NULL;
}

/* Take the first node off l and return it, or NULL if l is empty. */
static inline ml_list_node *ml_list_pop_front(ml_list *l) {
    ml_list_node *n = ml_list_first(l);
    if (n)
        ml_list_remove(n);
    return n;
}

/* Move every node of `from` to the end of `to`, in order; `from` is then
 * empty. */
static inline void ml_list_splice(ml_list *to, ml_list *from) {
    if (ml_list_empty(from))
        return;
    ml_list_node *first = from->head.next, *last = from->head.prev;
    first->prev = to->head.prev;
    to->head.prev->next = first;
    last->next = &to->head;
    to->head.prev = last;
    ml_list_init(from);
}

#endif
