/* The agent's reports, from the view in struct lk_status. */
#include "agent/status.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/lock.h"
#include "locks/backend.h"
#include "proto/codec.h"

/* The sort of lk_status_index_new(): qsort has no context argument, so the one being sorted is
 * here for the length of the call (one thread, and the sort calls nothing of ours). */
static const struct lk_status *sorting;

static int by_name_cmp(const void *a, const void *b)
{
	return strcmp(lk_lock_name(sorting->locks[*(const size_t *)a]),
	              lk_lock_name(sorting->locks[*(const size_t *)b]));
}

size_t *lk_status_index_new(const struct lk_status *st)
{
	size_t *ix = calloc(st->n_locks ? st->n_locks : 1, sizeof(*ix));

	if (!ix)
		return NULL;
	for (size_t i = 0; i < st->n_locks; i++)
		ix[i] = i;
	sorting = st;
	qsort(ix, st->n_locks, sizeof(*ix), by_name_cmp);
	sorting = NULL;
	return ix;
}

int lk_status_find_lock(const struct lk_status *st, const char *name)
{
	size_t lo = 0, hi = st->n_locks;

	if (!st->by_name) {
		for (size_t i = 0; i < st->n_locks; i++)
			if (strcmp(lk_lock_name(st->locks[i]), name) == 0)
				return (int)i;
		return -1;
	}
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2, i = st->by_name[mid];
		int c = strcmp(lk_lock_name(st->locks[i]), name);

		if (c == 0)
			return (int)i;
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return -1;
}

void lk_status_catch_up(const struct lk_status *st)
{
	for (size_t i = 0; i < st->n_locks; i++)
		lk_lock_catch_up(st->locks[i]);
}

bool lk_status_ready(const struct lk_status *st, char *why, size_t cap)
{
	if (st->draining(st->ctx)) {
		snprintf(why, cap, "draining");
		return false;
	}
	for (size_t i = 0; i < st->n_backends; i++) {
		const struct lk_backend *b = st->backends[i];
		if (!b->ops->ready(b)) {
			snprintf(why, cap, "backend %s has not answered yet", b->name);
			return false;
		}
	}
	return true;
}

/* STATUS's "backends": which server each backend talks to now, and whether it answers. */
static json_t *backends_json(const struct lk_status *st)
{
	json_t *a = json_array();

	for (size_t i = 0; a && i < st->n_backends; i++) {
		const struct lk_backend *b = st->backends[i];

		json_array_append_new(a, json_pack("{s:s, s:s, s:b, s:s}", "name", b->name,
		                                   "type", b->ops->type, "ready", b->ops->ready(b),
		                                   "server", b->ops->server ? b->ops->server(b) : ""));
	}
	return a;
}

/* The holder as every report shows it: null when unknown. */
static json_t *holder_json(const struct lk_lock *l)
{
	const char *holder = lk_lock_holder(l);

	return strcmp(holder, "-") ? json_string(holder) : json_null();
}

/* One lock in STATUS's "locks" array. */
static json_t *lock_json(const struct lk_lock *l)
{
	const char *why = "";
	int64_t holdoff_ms = lk_lock_holdoff_ms(l, &why);
	json_t *o = json_pack("{s:s, s:s, s:s, s:I, s:o, s:I, s:I, s:I, s:I}",
	                      "name", lk_lock_name(l), "backend", lk_lock_backend_name(l),
	                      "state", lk_lock_state_name(lk_lock_state(l)),
	                      "token", (json_int_t)lk_lock_token(l), "holder", holder_json(l),
	                      "ttl_ms", (json_int_t)lk_lock_ttl_ms(l),
	                      "until_mono_ms", (json_int_t)lk_lock_until_mono_ms(l),
	                      "campaign_clients", (json_int_t)lk_lock_campaigners(l),
	                      "holdoff_ms", (json_int_t)holdoff_ms);

	if (o && holdoff_ms > 0)
		json_object_set_new(o, "holdoff_reason", json_string(why));
	return o;
}

json_t *lk_status_leader_json(const struct lk_lock *l, bool *leads)
{
	bool leading = lk_lock_state(l) == LK_LOCK_LEADER;
	json_t *o = json_pack("{s:s, s:o, s:o, s:o}", "lock", lk_lock_name(l),
	                      "token", leading ? json_integer((json_int_t)lk_lock_token(l))
	                                       : json_null(),
	                      "holder", holder_json(l),
	                      "until_mono_ms", leading ? json_integer(lk_lock_until_mono_ms(l))
	                                               : json_null());

	*leads = leading;
	return o;
}

/* Room kept at the end of a page that leaves locks out: ,"truncated":N,"next_after":"<lock>".
 * Lock names need no JSON escaping ([A-Za-z0-9._-]). */
#define PAGE_TAIL_MAX (sizeof(",\"truncated\":18446744073709551615,\"next_after\":\"\"") + \
                       LK_LOCK_NAME_MAX)

/* The locks from first on that fit, with the fields around them in root; clients: include the
 * "clients" object (the plain STATUS). The length of the line is counted as it grows (the
 * root's dump without locks, plus each lock's dump and a comma), so a page costs one dump per
 * lock rather than one dump of the whole line per lock. A page that can hold no lock at all is
 * NULL unless no lock was asked for. */
static char *status_page(const struct lk_status *st, size_t first, size_t last, bool clients,
                         size_t max_len)
{
	json_t *root = json_object(), *locks = json_array();
	char *s = NULL, *base;
	size_t i, len;

	if (!root || !locks)
		goto out;
	json_object_set_new(root, "identity", json_string(st->identity));
	json_object_set_new(root, "draining", json_boolean(st->draining(st->ctx)));
	if (clients && st->clients_json) {
		json_t *c = st->clients_json(st->ctx);
		if (c)
			json_object_set_new(root, "clients", c);
	}
	if (clients)
		json_object_set_new(root, "backends", backends_json(st));
	json_object_set(root, "locks", locks);
	base = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
	if (base && clients && strlen(base) + PAGE_TAIL_MAX > max_len / 2) {
		/* Dozens of backends with long endpoints: the locks matter more. */
		free(base);
		json_object_del(root, "backends");
		base = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
	}
	if (!base)
		goto out;
	len = strlen(base);
	free(base);
	for (i = first; i < last; i++) {
		json_t *o;
		char *one;
		size_t add, need;

		/* Only what is reported must be caught up (I9): a page of a 10,000-lock agent
		 * costs its own locks, not a look at every lock. */
		lk_lock_catch_up(st->locks[i]);
		o = lock_json(st->locks[i]);
		one = o ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
		add = one ? strlen(one) + (i > first) : 0;
		/* The last lock needs no room for the tail; any other may be followed by it. */
		need = len + add + (i + 1 < last ? PAGE_TAIL_MAX : 0);

		free(one);
		if (!one || need > max_len) {
			json_decref(o);
			if (!one)
				goto out;
			break;
		}
		json_array_append_new(locks, o);
		len += add;
	}
	if (i == first && first < last && !clients)
		goto out;
	if (i < last) {
		json_object_set_new(root, "truncated", json_integer((json_int_t)(last - i)));
		if (i > first)
			json_object_set_new(root, "next_after", json_string(lk_lock_name(st->locks[i - 1])));
	}
	s = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
out:
	json_decref(locks);
	json_decref(root);
	return s;
}

char *lk_status_json(const struct lk_status *st, size_t max_len)
{
	return status_page(st, 0, st->n_locks, true, max_len);
}

char *lk_status_json_page(const struct lk_status *st, size_t first, bool only, size_t max_len)
{
	size_t last = st->n_locks;

	if (first > last)
		first = last;
	if (only && first < last)
		last = first + 1;
	return status_page(st, first, last, false, max_len);
}
