/* The agent's reports, from the view in struct lk_status. */
#include "agent/status.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/lock.h"
#include "locks/backend.h"

int lk_status_find_lock(const struct lk_status *st, const char *name)
{
	for (size_t i = 0; i < st->n_locks; i++)
		if (strcmp(lk_lock_name(st->locks[i]), name) == 0)
			return (int)i;
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

char *lk_status_json(const struct lk_status *st, size_t max_len)
{
	json_t *root = json_object(), *locks = json_array();
	char *s = NULL;
	size_t i;

	if (!root || !locks)
		goto out;
	json_object_set_new(root, "identity", json_string(st->identity));
	json_object_set_new(root, "draining", json_boolean(st->draining(st->ctx)));
	if (st->clients_json) {
		json_t *clients = st->clients_json(st->ctx);
		if (clients)
			json_object_set_new(root, "clients", clients);
	}
	json_object_set(root, "locks", locks);
	for (i = 0; i < st->n_locks; i++) {
		json_t *o = lock_json(st->locks[i]);

		if (!o)
			goto out;
		json_array_append_new(locks, o);
		/* The reply is one protocol line: with many locks (or long names) say how many did
		 * not fit rather than send nothing. Quadratic, but STATUS is rare and n is capped. */
		char *line = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
		bool fits = line && strlen(line) + sizeof("\"truncated\":99999,") <= max_len;

		free(line);
		if (!fits) {
			json_array_remove(locks, json_array_size(locks) - 1);
			json_object_set_new(root, "truncated",
			                    json_integer((json_int_t)(st->n_locks - i)));
			break;
		}
	}
	s = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
out:
	json_decref(locks);
	json_decref(root);
	return s;
}
