/* A small unordered set of pointers in a growable array: who subscribes to one lock's events.
 * Adding is amortised O(1); removing is linear in the set, which stays small (a lock's campaign
 * clients and watchers), and happens once per subscription, not per event. */
#ifndef LK_AGENT_PTRSET_H
#define LK_AGENT_PTRSET_H

#include <stddef.h>

struct lk_ptrset {
	void **v;
	size_t n, cap;
};

/* Add p (no check for duplicates): 0, or -ENOMEM with the set unchanged. */
int lk_ptrset_add(struct lk_ptrset *s, void *p);
/* Remove p if it is there; the order of the others may change. */
void lk_ptrset_remove(struct lk_ptrset *s, const void *p);
/* Free the array; the set is empty afterwards. */
void lk_ptrset_clear(struct lk_ptrset *s);

#endif
