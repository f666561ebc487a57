/* A small unordered set of pointers (see ptrset.h). */
#include "agent/ptrset.h"

#include <errno.h>
#include <stdlib.h>

int lk_ptrset_add(struct lk_ptrset *s, void *p)
{
	if (s->n == s->cap) {
		size_t cap = s->cap ? s->cap * 2 : 2;
		void **v = realloc(s->v, cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		s->v = v;
		s->cap = cap;
	}
	s->v[s->n++] = p;
	return 0;
}

void lk_ptrset_remove(struct lk_ptrset *s, const void *p)
{
	for (size_t k = 0; k < s->n; k++) {
		if (s->v[k] == p) {
			s->v[k] = s->v[--s->n];
			return;
		}
	}
}

void lk_ptrset_clear(struct lk_ptrset *s)
{
	free(s->v);
	s->v = NULL;
	s->n = s->cap = 0;
}
