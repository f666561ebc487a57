/* etcd's JSON gateway, the answer side: response bodies mapped to plain structs with jansson
 * (see etcd_json.h for the rules; the request bodies are built in etcd_json_req.c). */
#include "locks/etcd_json.h"
#include "locks/etcd_json_int.h"
#include "locks/backend_int.h"
#include "proto/err.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <sodium.h>

enum lk_etcd_event_type { LK_ETCD_EVENT_PUT, LK_ETCD_EVENT_DELETE };

int lk_etcd_json_parse_grant(const char *body, size_t len, struct lk_etcd_grant *out,
                             char *err, size_t errlen)
{
	struct lk_etcd_grant g = { 0 };
	json_t *root;
	int rc = lk_etcd_json_load(body, len, &root, err, errlen);

	if (rc < 0)
		return rc;
	if ((rc = lk_etcd_json_header(root, false, &g.revision, &g.cluster_id, err, errlen)) < 0 ||
	    (rc = lk_etcd_json_uint(root, "ID", &g.id, err, errlen)) < 0 ||
	    (rc = lk_etcd_json_int(root, "TTL", &g.ttl, err, errlen)) < 0)
		goto out;
	rc = -EINVAL;
	if (g.id == 0)
		lk_set_err(err, errlen, "lease grant without an ID");
	else if (g.ttl <= 0)
		lk_set_err(err, errlen, "lease grant without a TTL");
	else if (g.ttl > LK_ETCD_JSON_MAX_TTL)
		lk_set_err(err, errlen, "lease grant with an absurd TTL");
	else
		rc = 0;
out:
	json_decref(root);
	if (rc == 0 && out)
		*out = g;
	return rc;
}

int lk_etcd_json_parse_keepalive(const char *body, size_t len, struct lk_etcd_keepalive *out,
                                 char *err, size_t errlen)
{
	struct lk_etcd_keepalive ka = { 0 };
	json_t *root, *result;
	int rc = lk_etcd_json_load(body, len, &root, err, errlen);

	if (rc < 0)
		return rc;
	rc = lk_etcd_json_child(root, "result", JSON_OBJECT, &result, err, errlen);
	if (rc < 0)
		goto out;
	if (!result) {
		rc = -EINVAL;
		lk_set_err(err, errlen, "keepalive response without a result");
		goto out;
	}
	/* No TTL is the documented answer for a lease that expired or was revoked. */
	if ((rc = lk_etcd_json_header(result, false, &ka.revision, &ka.cluster_id, err,
	                              errlen)) < 0 ||
	    (rc = lk_etcd_json_uint(result, "ID", &ka.id, err, errlen)) < 0 ||
	    (rc = lk_etcd_json_int(result, "TTL", &ka.ttl, err, errlen)) < 0)
		goto out;
	if (ka.ttl > LK_ETCD_JSON_MAX_TTL) {
		rc = -EINVAL;
		lk_set_err(err, errlen, "keepalive with an absurd TTL");
	}
out:
	json_decref(root);
	if (rc == 0 && out)
		*out = ka;
	return rc;
}

/* What every answer about a key starts with: the key checked, the body loaded (*root), and a
 * zeroed struct of `size` bytes on the heap (*obj: value buffers are too big for the stack).
 * On failure nothing is left to free. */
static int lk_etcd_json_open(const char *body, size_t len, const void *key, size_t klen,
                             size_t size, json_t **root, void **obj, char *err, size_t errlen)
{
	int rc;

	if (!lk_etcd_json_key_ok(key, klen)) {
		lk_set_err(err, errlen, "invalid key");
		return -EINVAL;
	}
	rc = lk_etcd_json_load(body, len, root, err, errlen);
	if (rc < 0)
		return rc;
	*obj = calloc(1, size);
	if (!*obj) {
		json_decref(*root);
		lk_set_err(err, errlen, "out of memory");
		return -ENOMEM;
	}
	return 0;
}

int lk_etcd_json_parse_range(const char *body, size_t len, const void *key, size_t klen,
                             struct lk_etcd_range *out, char *err, size_t errlen)
{
	struct lk_etcd_range *r;
	json_t *root;
	int rc;

	rc = lk_etcd_json_open(body, len, key, klen, sizeof(*r), &root, (void **)&r, err, errlen);
	if (rc < 0)
		return rc;
	if ((rc = lk_etcd_json_header(root, true, &r->revision, &r->cluster_id, err, errlen)) == 0)
		rc = lk_etcd_json_kvs(root, key, klen, &r->found, &r->kv, err, errlen);
	json_decref(root);
	if (rc == 0 && out)
		*out = *r;
	free(r);
	return rc;
}

/* The parts every txn answer has: the header, "succeeded", and the last two ranges among the
 * responses (an empty range says nothing about which key it was for: the order of the
 * requests in the branch does). last[1] is the last range, last[0] the one before; NULL where
 * there is none. */
static int lk_etcd_json_txn_head(json_t *root, int64_t *revision, uint64_t *cluster_id,
                                 bool *succeeded, json_t *last[2], char *err, size_t errlen)
{
	json_t *responses, *range;
	int rc;

	last[0] = last[1] = NULL;
	if ((rc = lk_etcd_json_header(root, true, revision, cluster_id, err, errlen)) < 0 ||
	    (rc = lk_etcd_json_bool(root, "succeeded", succeeded, err, errlen)) < 0 ||
	    (rc = lk_etcd_json_child(root, "responses", JSON_ARRAY, &responses, err, errlen)) < 0)
		return rc;
	for (size_t i = 0; responses && i < json_array_size(responses); i++) {
		json_t *op = json_array_get(responses, i);

		if (!json_is_object(op)) {
			lk_set_err(err, errlen, "a txn response is not an object");
			return -EINVAL;
		}
		rc = lk_etcd_json_child(op, "response_range", JSON_OBJECT, &range, err, errlen);
		if (rc < 0)
			return rc;
		if (range) {
			last[0] = last[1];
			last[1] = range;
		}
	}
	return 0;
}

int lk_etcd_json_parse_txn(const char *body, size_t len, const void *key, size_t klen,
                           struct lk_etcd_txn *out, char *err, size_t errlen)
{
	struct lk_etcd_txn *t;
	json_t *root, *last[2];
	int rc;

	rc = lk_etcd_json_open(body, len, key, klen, sizeof(*t), &root, (void **)&t, err, errlen);
	if (rc < 0)
		return rc;
	rc = lk_etcd_json_txn_head(root, &t->revision, &t->cluster_id, &t->succeeded, last, err,
	                           errlen);
	/* The branch's last range is what the key looks like after the branch ran. */
	if (rc == 0 && last[1])
		rc = lk_etcd_json_kvs(last[1], key, klen, &t->found, &t->kv, err, errlen);
	json_decref(root);
	if (rc == 0 && out)
		*out = *t;
	free(t);
	return rc;
}

/* A fence value: a positive decimal integer of at most 19 digits. */
static bool lk_etcd_json_fence(const struct lk_etcd_kv *kv, int64_t *out)
{
	int64_t v = 0;

	if (kv->value_too_long || kv->value_len == 0 || kv->value_len > LK_ETCD_JSON_INT_DIGITS)
		return false;
	for (size_t i = 0; i < kv->value_len; i++) {
		if (kv->value[i] < '0' || kv->value[i] > '9' ||
		    v > (INT64_MAX - (kv->value[i] - '0')) / 10)
			return false;
		v = v * 10 + (kv->value[i] - '0');
	}
	if (v <= 0)
		return false;
	*out = v;
	return true;
}

/* The marker's value: "released <create_revision>" names the release it records; anything
 * else (the single-key layout's "held" and "released" included) names none. */
static int64_t lk_etcd_json_released(const struct lk_etcd_kv *kv)
{
	static const char word[] = LK_ETCD_STATE_RELEASED " ";
	struct lk_etcd_kv num;

	if (kv->value_too_long || kv->value_len <= sizeof(word) - 1 ||
	    memcmp(kv->value, word, sizeof(word) - 1) != 0)
		return 0;
	memset(&num, 0, sizeof(num));
	num.value_len = kv->value_len - (sizeof(word) - 1);
	memcpy(num.value, kv->value + sizeof(word) - 1, num.value_len);
	return lk_etcd_json_fence(&num, &num.create_revision) ? num.create_revision : 0;
}

int lk_etcd_json_parse_history(const char *body, size_t len, const void *seq, size_t slen,
                               struct lk_etcd_history *out, char *err, size_t errlen)
{
	struct lk_etcd_history h = { 0 };
	struct lk_etcd_kv *kv;
	json_t *root, *last[2];
	bool ok;
	int rc;

	rc = lk_etcd_json_open(body, len, seq, slen, sizeof(*kv), &root, (void **)&kv, err,
	                       errlen);
	if (rc < 0)
		return rc;
	rc = lk_etcd_json_txn_head(root, &h.revision, &h.cluster_id, &ok, last, err, errlen);
	if (rc == 0 && (!ok || !last[0] || !last[1] ||
	                json_array_size(json_object_get(root, "responses")) != 2)) {
		rc = -EINVAL;
		lk_set_err(err, errlen, "history txn response without its two ranges");
	}
	if (rc == 0)
		rc = lk_etcd_json_uint(last[0], "count", &h.n_candidates, err, errlen);
	if (rc == 0)
		rc = lk_etcd_json_kvs(last[1], seq, slen, &h.seq_found, kv, err, errlen);
	h.seq_mod_revision = h.seq_found ? kv->mod_revision : 0;
	json_decref(root);
	free(kv);
	if (rc == 0 && out)
		*out = h;
	return rc;
}

int lk_etcd_json_parse_batch(const char *body, size_t len, const char *const *keys,
                             const size_t *klens, const char *const *legacy,
                             const size_t *llens, size_t n, struct lk_etcd_kv *kv, bool *found,
                             bool *legacy_found, uint64_t *cluster_id, int64_t *revision,
                             char *err, size_t errlen)
{
	/* Parsed into t (n kvs, then one scratch kv, then the flags); copied out on success. */
	struct lk_etcd_kv *t;
	bool *f, *lf;
	json_t *root, *responses, *range;
	int64_t rev = 0;
	uint64_t cid = 0;
	bool ok;
	int rc;

	if (!keys || !klens || !legacy || !llens || n == 0 || n > 64 || !kv || !found ||
	    !legacy_found) {
		lk_set_err(err, errlen, "invalid key");
		return -EINVAL;
	}
	rc = lk_etcd_json_open(body, len, keys[0], klens[0], (n + 1) * sizeof(*t) + 2 * n,
	                       &root, (void **)&t, err, errlen);
	if (rc < 0)
		return rc;
	f = (bool *)(t + n + 1);
	lf = f + n;
	if ((rc = lk_etcd_json_header(root, true, &rev, &cid, err, errlen)) < 0 ||
	    (rc = lk_etcd_json_bool(root, "succeeded", &ok, err, errlen)) < 0 ||
	    (rc = lk_etcd_json_child(root, "responses", JSON_ARRAY, &responses, err, errlen)) < 0)
		goto out;
	if (!ok || !responses || json_array_size(responses) != 2 * n) {
		rc = -EINVAL;
		lk_set_err(err, errlen, "batch txn response without its %zu ranges", 2 * n);
		goto out;
	}
	for (size_t i = 0; i < 2 * n; i++) {
		json_t *op = json_array_get(responses, i);

		if (!json_is_object(op) ||
		    (rc = lk_etcd_json_child(op, "response_range", JSON_OBJECT, &range, err,
		                             errlen)) < 0 || !range) {
			rc = rc < 0 ? rc : -EINVAL;
			lk_set_err(err, errlen, "batch txn response %zu is not a range", i);
			goto out;
		}
		if (i % 2 == 0)
			rc = lk_etcd_json_kvs(range, keys[i / 2], klens[i / 2], &f[i / 2], &t[i / 2],
			                      err, errlen);
		else
			rc = lk_etcd_json_kvs(range, legacy[i / 2], llens[i / 2], &lf[i / 2], &t[n],
			                      err, errlen);
		if (rc < 0)
			goto out;
	}
	memcpy(kv, t, n * sizeof(*t));
	memcpy(found, f, n * sizeof(*f));
	memcpy(legacy_found, lf, n * sizeof(*lf));
	if (cluster_id)
		*cluster_id = cid;
	if (revision)
		*revision = rev;
out:
	json_decref(root);
	free(t);
	return rc;
}

#define LK_ETCD_LOOK_READS 5 /* own, fence, state, legacy, candidates */

int lk_etcd_json_parse_look(const char *body, size_t len, const struct lk_etcd_look_keys *keys,
                            bool create, struct lk_etcd_look *out, char *err, size_t errlen)
{
	struct lk_etcd_look *l;
	struct lk_etcd_kv *kv = NULL;
	json_t *root, *responses, *range, *r[LK_ETCD_LOOK_READS + 1];
	size_t n = 0, want;
	bool found;
	int rc;

	if (!keys || !lk_etcd_json_key_ok(keys->prefix, keys->prefix_len) ||
	    !lk_etcd_json_key_ok(keys->fence, keys->fence_len) ||
	    !lk_etcd_json_key_ok(keys->state, keys->state_len) ||
	    !lk_etcd_json_key_ok(keys->seq, keys->seq_len) ||
	    !lk_etcd_json_key_ok(keys->legacy, keys->legacy_len)) {
		lk_set_err(err, errlen, "invalid key");
		return -EINVAL;
	}
	rc = lk_etcd_json_open(body, len, keys ? keys->own : NULL, keys ? keys->own_len : 0,
	                       sizeof(*l) + sizeof(*kv), &root, (void **)&l, err, errlen);
	if (rc < 0)
		return rc;
	kv = (struct lk_etcd_kv *)(l + 1);
	if ((rc = lk_etcd_json_header(root, true, &l->revision, &l->cluster_id, err, errlen)) < 0 ||
	    (rc = lk_etcd_json_bool(root, "succeeded", &l->succeeded, err, errlen)) < 0 ||
	    (rc = lk_etcd_json_child(root, "responses", JSON_ARRAY, &responses, err, errlen)) < 0)
		goto out;
	/* The ranges at the top level, in order; a nested txn's are inside its response_txn. */
	want = LK_ETCD_LOOK_READS + (create && l->succeeded);
	for (size_t i = 0; responses && i < json_array_size(responses); i++) {
		json_t *op = json_array_get(responses, i);

		if (!json_is_object(op)) {
			rc = -EINVAL;
			lk_set_err(err, errlen, "a txn response is not an object");
			goto out;
		}
		if ((rc = lk_etcd_json_child(op, "response_range", JSON_OBJECT, &range, err,
		                             errlen)) < 0)
			goto out;
		if (range && n < want)
			r[n++] = range;
		else if (range) {
			rc = -EINVAL;
			lk_set_err(err, errlen, "look txn response with too many ranges");
			goto out;
		}
	}
	if (n != want || (!create && !l->succeeded)) {
		rc = -EINVAL;
		lk_set_err(err, errlen, "look txn response without its %zu ranges", want);
		goto out;
	}
	n = want - LK_ETCD_LOOK_READS;
	if (n == 1) {
		if ((rc = lk_etcd_json_kvs(r[0], keys->seq, keys->seq_len, &l->seq_found, kv, err,
		                           errlen)) < 0)
			goto out;
		l->seq_mod_revision = l->seq_found ? kv->mod_revision : 0;
	}
	if ((rc = lk_etcd_json_kvs(r[n], keys->own, keys->own_len, &l->own_found, &l->own, err,
	                           errlen)) < 0 ||
	    (rc = lk_etcd_json_kvs(r[n + 1], keys->fence, keys->fence_len, &l->fence_found, kv,
	                           err, errlen)) < 0)
		goto out;
	if (l->fence_found)
		l->fence_bad = !lk_etcd_json_fence(kv, &l->fence);
	if ((rc = lk_etcd_json_kvs(r[n + 2], keys->state, keys->state_len, &found, kv, err,
	                           errlen)) < 0)
		goto out;
	l->state_found = found;
	if (found) {
		l->released_rev = lk_etcd_json_released(kv);
		l->state_mod_revision = kv->mod_revision;
	}
	if ((rc = lk_etcd_json_kvs(r[n + 3], keys->legacy, keys->legacy_len, &l->legacy_found,
	                           &l->legacy, err, errlen)) < 0 ||
	    (rc = lk_etcd_json_kvs_under(r[n + 4], keys->prefix, keys->prefix_len, keys->own,
	                                 keys->own_len, l->first, l->first_own, 2, &l->n_first,
	                                 &l->n_candidates, err, errlen)) < 0)
		goto out;
	/* Sorted by create_revision, as asked: anything else is not the queue. Our key is
	 * among the candidates exactly when it exists. */
	if (l->n_first == 2 && l->first[0].create_revision >= l->first[1].create_revision) {
		rc = -EINVAL;
		lk_set_err(err, errlen, "candidates out of create_revision order");
	} else if (((l->n_first > 0 && l->first_own[0]) || (l->n_first > 1 && l->first_own[1])) &&
	           !l->own_found) {
		rc = -EINVAL;
		lk_set_err(err, errlen, "our key among the candidates but not found");
	}
out:
	json_decref(root);
	if (rc == 0 && out)
		*out = *l;
	free(l);
	return rc;
}

int lk_etcd_json_parse_auth(const char *body, size_t len, struct lk_etcd_auth *out,
                            char *err, size_t errlen)
{
	json_t *root, *tok = NULL;
	const char *s;
	uint64_t cluster;
	int64_t rev;
	size_t n;
	int rc = lk_etcd_json_load(body, len, &root, err, errlen);

	if (rc < 0)
		return rc;
	rc = lk_etcd_json_header(root, false, &rev, &cluster, err, errlen);
	if (rc == 0)
		rc = lk_etcd_json_child(root, "token", JSON_STRING, &tok, err, errlen);
	if (rc < 0)
		goto out;
	rc = -EINVAL;
	if (!tok) {
		lk_set_err(err, errlen, "authenticate response without a token");
		goto out;
	}
	s = json_string_value(tok);
	n = json_string_length(tok);
	if (n == 0 || n > LK_ETCD_JSON_MAX_TOKEN) {
		lk_set_err(err, errlen, "auth token of %zu bytes", n);
		goto out;
	}
	/* It becomes an HTTP header value: a CR or LF in it would inject headers. */
	for (size_t i = 0; i < n; i++) {
		if ((unsigned char)s[i] <= 0x20 || (unsigned char)s[i] >= 0x7f) {
			lk_set_err(err, errlen, "auth token with unexpected characters");
			goto out;
		}
	}
	rc = 0;
	if (out) {
		memcpy(out->token, s, n);
		out->token[n] = '\0';
	}
out:
	json_decref(root);
	return rc;
}

static int lk_etcd_json_event(const json_t *ev, const void *key, size_t klen, bool under,
                              struct lk_etcd_watch *w, char *err, size_t errlen)
{
	const json_t *type;
	json_t *kv;
	int64_t mod = 0, t = LK_ETCD_EVENT_PUT;
	bool is = false;
	int rc;

	if (!json_is_object(ev)) {
		lk_set_err(err, errlen, "a watch event is not an object");
		return -EINVAL;
	}
	/* PUT is the zero value, so only DELETE says its type. */
	type = json_object_get(ev, "type");
	if (json_is_string(type) && strcmp(json_string_value(type), "DELETE") == 0)
		t = LK_ETCD_EVENT_DELETE;
	else if (json_is_string(type) && strcmp(json_string_value(type), "PUT") == 0)
		t = LK_ETCD_EVENT_PUT;
	else if (json_is_integer(type) && (json_integer_value(type) == 0 ||
	                                   json_integer_value(type) == 1))
		t = json_integer_value(type);
	else if (type && !json_is_null(type)) {
		lk_set_err(err, errlen, "unknown watch event type");
		return -EINVAL;
	}
	rc = lk_etcd_json_child(ev, "kv", JSON_OBJECT, &kv, err, errlen);
	if (rc < 0)
		return rc;
	if (kv) {
		if ((rc = lk_etcd_json_key_is(kv, key, klen, under, &is, err, errlen)) < 0 ||
		    (rc = lk_etcd_json_uint(kv, "mod_revision", &mod, err, errlen)) < 0)
			return rc;
	}
	w->n_events++;
	if (mod > w->max_mod_revision)
		w->max_mod_revision = mod;
	if (t == LK_ETCD_EVENT_DELETE && is)
		w->n_deletes++;
	return 0;
}

int lk_etcd_json_parse_watch(const char *body, size_t len, const void *key, size_t klen,
                             bool under, struct lk_etcd_watch *out, char *err, size_t errlen)
{
	struct lk_etcd_watch w = { 0 };
	json_t *root, *result, *events, *reason;
	int rc;

	if (!lk_etcd_json_key_ok(key, klen)) {
		lk_set_err(err, errlen, "invalid key");
		return -EINVAL;
	}
	rc = lk_etcd_json_load(body, len, &root, err, errlen);
	if (rc < 0)
		return rc;
	rc = lk_etcd_json_child(root, "result", JSON_OBJECT, &result, err, errlen);
	if (rc < 0)
		goto out;
	if (!result) {
		rc = -EINVAL;
		lk_set_err(err, errlen, "watch response without a result");
		goto out;
	}
	if ((rc = lk_etcd_json_header(result, false, &w.revision, &w.cluster_id, err, errlen)) < 0 ||
	    (rc = lk_etcd_json_bool(result, "created", &w.created, err, errlen)) < 0 ||
	    (rc = lk_etcd_json_bool(result, "canceled", &w.canceled, err, errlen)) < 0 ||
	    (rc = lk_etcd_json_uint(result, "compact_revision", &w.compact_revision, err,
	                            errlen)) < 0 ||
	    (rc = lk_etcd_json_child(result, "cancel_reason", JSON_STRING, &reason, err,
	                             errlen)) < 0 ||
	    (rc = lk_etcd_json_child(result, "events", JSON_ARRAY, &events, err, errlen)) < 0)
		goto out;
	if (reason)
		lk_backend_shown(w.cancel_reason, sizeof(w.cancel_reason), json_string_value(reason),
		                   json_string_length(reason));
	for (size_t i = 0; events && i < json_array_size(events); i++)
		if ((rc = lk_etcd_json_event(json_array_get(events, i), key, klen, under, &w,
		                             err, errlen)) < 0)
			goto out;
out:
	json_decref(root);
	if (rc == 0 && out)
		*out = w;
	return rc;
}

int lk_etcd_json_parse_watch_key(const char *body, size_t len, const void *key, size_t klen,
                                 struct lk_etcd_watch_key *out, char *err, size_t errlen)
{
	struct lk_etcd_watch_key w = { 0 };
	struct lk_etcd_kv *kv;
	json_t *root, *result, *events;
	int rc;

	rc = lk_etcd_json_open(body, len, key, klen, sizeof(*kv), &root, (void **)&kv, err,
	                       errlen);
	if (rc < 0)
		return rc;
	if ((rc = lk_etcd_json_child(root, "result", JSON_OBJECT, &result, err, errlen)) < 0 ||
	    (result && (rc = lk_etcd_json_child(result, "events", JSON_ARRAY, &events, err,
	                                        errlen)) < 0))
		goto out;
	for (size_t i = 0; result && events && i < json_array_size(events); i++) {
		const json_t *ev = json_array_get(events, i), *type;
		json_t *one;
		bool is = false;

		if (!json_is_object(ev) ||
		    (rc = lk_etcd_json_child(ev, "kv", JSON_OBJECT, &one, err, errlen)) < 0) {
			rc = rc < 0 ? rc : -EINVAL;
			lk_set_err(err, errlen, "a watch event is not an object");
			goto out;
		}
		if (!one || (rc = lk_etcd_json_key_is(one, key, klen, false, &is, err, errlen)) < 0)
			goto out;
		if (!is)
			continue;
		type = json_object_get(ev, "type");
		w.deleted = (json_is_string(type) && strcmp(json_string_value(type), "DELETE") == 0) ||
		            (json_is_integer(type) && json_integer_value(type) == LK_ETCD_EVENT_DELETE);
		w.put = !w.deleted;
		w.released_rev = 0;
		if (w.put) {
			/* A PUT's kv is whole: read it as a range's would be. */
			json_t *kvs = json_pack("{s:[O]}", "kvs", one);
			bool found;

			if (!kvs) {
				rc = -ENOMEM;
				lk_set_err(err, errlen, "out of memory");
				goto out;
			}
			rc = lk_etcd_json_kvs(kvs, key, klen, &found, kv, err, errlen);
			json_decref(kvs);
			if (rc < 0)
				goto out;
			w.released_rev = found ? lk_etcd_json_released(kv) : 0;
		}
	}
out:
	json_decref(root);
	free(kv);
	if (rc == 0 && out)
		*out = w;
	return rc;
}

int lk_etcd_json_parse_status(const char *body, size_t len, struct lk_etcd_status *out,
                              char *err, size_t errlen)
{
	struct lk_etcd_status st = { 0 };
	const json_t *leader;
	json_t *root;
	const char *s;
	int rc = lk_etcd_json_load(body, len, &root, err, errlen);

	if (rc < 0)
		return rc;
	rc = lk_etcd_json_header(root, true, &st.revision, &st.cluster_id, err, errlen);
	/* Member IDs are uint64 and may not fit an int64: only "is it zero" matters here. */
	leader = json_object_get(root, "leader");
	if (rc == 0 && json_is_string(leader)) {
		s = json_string_value(leader);
		if (!s[0] || strspn(s, "0123456789") != strlen(s)) {
			rc = -EINVAL;
			lk_set_err(err, errlen, "field \"leader\" is not a member ID");
		} else {
			st.has_leader = strspn(s, "0") != strlen(s);
		}
	} else if (rc == 0 && json_is_integer(leader)) {
		st.has_leader = json_integer_value(leader) != 0;
	} else if (rc == 0 && leader && !json_is_null(leader)) {
		rc = -EINVAL;
		lk_set_err(err, errlen, "field \"leader\" is not a member ID");
	}
	json_decref(root);
	if (rc == 0 && out)
		*out = st;
	return rc;
}

int lk_etcd_json_parse_error(const char *body, size_t len, struct lk_etcd_error *out)
{
	struct lk_etcd_error e = { 0 };
	const json_t *error, *msg, *code;
	json_error_t je;
	json_t *root;
	int rc = -EINVAL;

	if (!body || len == 0 || len > LK_ETCD_JSON_MAX_BODY)
		return -EINVAL;
	root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
	if (!root)
		return -EINVAL;
	error = json_object_get(root, "error");
	if (json_is_string(error)) {
		/* {"error":"...","code":N,"message":"..."}: message and error say the same. */
		msg = json_object_get(root, "message");
		code = json_object_get(root, "code");
		if (!json_is_string(msg))
			msg = error;
	} else if (json_is_object(error)) {
		/* The streaming form: {"error":{"grpc_code":N,"http_code":N,"message":"..."}}. */
		msg = json_object_get(error, "message");
		code = json_object_get(error, "grpc_code");
		if (!code)
			code = json_object_get(error, "code");
	} else {
		goto out;
	}
	if (json_is_integer(code))
		e.code = (int64_t)json_integer_value(code);
	if (json_is_string(msg))
		lk_backend_shown(e.message, sizeof(e.message), json_string_value(msg),
		                   json_string_length(msg));
	if (!e.message[0])
		snprintf(e.message, sizeof(e.message), "no message");
	rc = 0;
	if (out)
		*out = e;
out:
	json_decref(root);
	return rc;
}
