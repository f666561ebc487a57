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

#define LK_ETCD_JSON_INT_DIGITS 19 /* INT64_MAX has 19 digits: more can only overflow */

enum lk_etcd_event_type { LK_ETCD_EVENT_PUT, LK_ETCD_EVENT_DELETE };

/* Parse a whole body as one JSON object. -EPROTO if it is an etcd error object. */
static int lk_etcd_json_load(const char *body, size_t len, json_t **ret, char *err, size_t errlen)
{
	char text[LK_ETCD_JSON_MAX_TEXT + 1];
	json_error_t je;
	json_t *root, *error;

	if (!body || len == 0) {
		lk_set_err(err, errlen, "empty response");
		return -EINVAL;
	}
	if (len > LK_ETCD_JSON_MAX_BODY) {
		lk_set_err(err, errlen, "response larger than %d bytes", LK_ETCD_JSON_MAX_BODY);
		return -EINVAL;
	}
	root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
	if (!root) {
		/* jansson's text may quote the input: show it like any other server text. */
		lk_backend_shown(text, sizeof(text), je.text, strnlen(je.text, sizeof(je.text)));
		lk_set_err(err, errlen, "invalid JSON at line %d column %d: %s", je.line,
		                 je.column, text);
		return -EINVAL;
	}
	if (!json_is_object(root)) {
		json_decref(root);
		lk_set_err(err, errlen, "response is not a JSON object");
		return -EINVAL;
	}
	/* A success body never carries "error" (a grant's error string is omitted when empty).
	 * Only the two forms lk_etcd_json_parse_error() reads make an error response; any other
	 * "error" member is garbage. */
	error = json_object_get(root, "error");
	if (json_is_string(error) || json_is_object(error)) {
		json_decref(root);
		lk_set_err(err, errlen, "error response");
		return -EPROTO;
	}
	if (error) {
		json_decref(root);
		lk_set_err(err, errlen, "\"error\" is neither a string nor an object");
		return -EINVAL;
	}
	*ret = root;
	return 0;
}

/* A decimal int64 in a JSON string or a JSON integer; absent or null keeps *out. */
static int lk_etcd_json_int(const json_t *obj, const char *name, int64_t *out,
                            char *err, size_t errlen)
{
	const json_t *v = json_object_get(obj, name);
	const char *s;
	size_t n, i = 0;
	uint64_t acc = 0, limit;
	bool neg = false;

	if (!v || json_is_null(v))
		return 0;
	if (json_is_integer(v)) {
		*out = (int64_t)json_integer_value(v);
		return 0;
	}
	if (!json_is_string(v))
		goto bad;
	s = json_string_value(v);
	n = json_string_length(v);
	if (n > 0 && s[0] == '-') {
		neg = true;
		i = 1;
	}
	if (n == i || n - i > LK_ETCD_JSON_INT_DIGITS)
		goto bad;
	limit = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
	for (; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			goto bad;
		/* 19 digits fit in a uint64_t; the limit check catches the int64 overflow. */
		acc = acc * 10 + (uint64_t)(s[i] - '0');
	}
	if (acc > limit)
		goto bad;
	*out = neg ? (acc == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)acc) : (int64_t)acc;
	return 0;
bad:
	lk_set_err(err, errlen, "field \"%s\" is not a 64-bit integer", name);
	return -EINVAL;
}

/* Like lk_etcd_json_int, for fields that cannot be negative (revisions, lease IDs). */
static int lk_etcd_json_uint(const json_t *obj, const char *name, int64_t *out,
                             char *err, size_t errlen)
{
	int64_t v = *out;
	int rc = lk_etcd_json_int(obj, name, &v, err, errlen);

	if (rc < 0)
		return rc;
	if (v < 0) {
		lk_set_err(err, errlen, "field \"%s\" is negative", name);
		return -EINVAL;
	}
	*out = v;
	return 0;
}

/* Absent or null means false. */
static int lk_etcd_json_bool(const json_t *obj, const char *name, bool *out,
                             char *err, size_t errlen)
{
	const json_t *v = json_object_get(obj, name);

	if (!v || json_is_null(v)) {
		*out = false;
		return 0;
	}
	if (!json_is_boolean(v)) {
		lk_set_err(err, errlen, "field \"%s\" is not a boolean", name);
		return -EINVAL;
	}
	*out = json_is_true(v);
	return 0;
}

/* Absent or null gives NULL without error; anything else must have the given type. */
static int lk_etcd_json_child(const json_t *obj, const char *name, json_type type,
                              json_t **ret, char *err, size_t errlen)
{
	json_t *v = json_object_get(obj, name);

	*ret = NULL;
	if (!v || json_is_null(v))
		return 0;
	if (json_typeof(v) != type) {
		lk_set_err(err, errlen, "field \"%s\" is not %s", name,
		                 type == JSON_OBJECT ? "an object" :
		                 type == JSON_ARRAY ? "an array" : "a string");
		return -EINVAL;
	}
	*ret = v;
	return 0;
}

/* Decode a base64 field into buf (cap bytes at most, plus a NUL). Absent means empty. A value
 * over cap sets *too_long and leaves buf empty rather than failing: a holder we cannot show
 * is still a holder. */
static int lk_etcd_json_bytes(const json_t *obj, const char *name, char *buf, size_t cap,
                              size_t *len, bool *too_long, char *err, size_t errlen)
{
	json_t *v;
	const char *s;
	size_t n, want, got = 0;
	int rc = lk_etcd_json_child(obj, name, JSON_STRING, &v, err, errlen);

	*len = 0;
	*too_long = false;
	buf[0] = '\0';
	if (rc < 0 || !v)
		return rc;
	s = json_string_value(v);
	n = json_string_length(v);
	/* Padded base64 comes in groups of four; the size it decodes to is known up front, so a
	 * value too long for buf is told apart from a broken one without decoding it. */
	if (n % 4 != 0)
		goto bad;
	want = n / 4 * 3 - (n > 0 && s[n - 1] == '=') - (n > 1 && s[n - 2] == '=');
	if (want > cap) {
		*too_long = true;
		return 0;
	}
	/* No ignore set and no end pointer: every character must be base64, padding included. */
	if (sodium_base642bin((unsigned char *)buf, cap, s, n, NULL, &got, NULL,
	                      sodium_base64_VARIANT_ORIGINAL) != 0 || got != want)
		goto bad;
	buf[got] = '\0';
	*len = got;
	return 0;
bad:
	buf[0] = '\0';
	lk_set_err(err, errlen, "field \"%s\" is not valid base64", name);
	return -EINVAL;
}

/* header.cluster_id: a uint64 as a decimal string (or a plain JSON integer). Absent means 0. */
static int lk_etcd_json_cluster(const json_t *h, uint64_t *out, char *err, size_t errlen)
{
	const json_t *v = json_object_get(h, "cluster_id");
	const char *s;
	uint64_t acc = 0;
	size_t n;

	*out = 0;
	if (!v || json_is_null(v))
		return 0;
	if (json_is_integer(v) && json_integer_value(v) >= 0) {
		*out = (uint64_t)json_integer_value(v);
		return 0;
	}
	if (!json_is_string(v))
		goto bad;
	s = json_string_value(v);
	n = json_string_length(v);
	if (n == 0 || n > 20)
		goto bad;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9' || acc > (UINT64_MAX - (uint64_t)(s[i] - '0')) / 10)
			goto bad;
		acc = acc * 10 + (uint64_t)(s[i] - '0');
	}
	*out = acc;
	return 0;
bad:
	lk_set_err(err, errlen, "field \"cluster_id\" is not a 64-bit unsigned integer");
	return -EINVAL;
}

/* header.revision and header.cluster_id. Every real answer has a header (cluster and member
 * IDs are never zero), so where the defaults of a missing body would read as a meaningful
 * answer (a txn that "did not succeed", a range that "found nothing"), a missing header marks
 * the body as garbage. */
static int lk_etcd_json_header(const json_t *obj, bool required, int64_t *revision,
                               uint64_t *cluster_id, char *err, size_t errlen)
{
	json_t *h;
	int rc = lk_etcd_json_child(obj, "header", JSON_OBJECT, &h, err, errlen);

	*revision = 0;
	*cluster_id = 0;
	if (rc < 0)
		return rc;
	if (!h) {
		if (!required)
			return 0;
		lk_set_err(err, errlen, "response without a header");
		return -EINVAL;
	}
	rc = lk_etcd_json_uint(h, "revision", revision, err, errlen);
	if (rc == 0)
		rc = lk_etcd_json_cluster(h, cluster_id, err, errlen);
	return rc;
}

/* Whether a base64 key field decodes to exactly key[klen]. */
static int lk_etcd_json_key_is(const json_t *obj, const void *key, size_t klen, bool *is,
                               char *err, size_t errlen)
{
	char buf[LK_ETCD_JSON_MAX_KEY + 1];
	size_t n;
	bool too_long;
	int rc = lk_etcd_json_bytes(obj, "key", buf, LK_ETCD_JSON_MAX_KEY, &n, &too_long,
	                            err, errlen);

	if (rc < 0)
		return rc;
	*is = !too_long && n == klen && memcmp(buf, key, klen) == 0;
	return 0;
}

static int lk_etcd_json_kv(const json_t *kv, const void *key, size_t klen, struct lk_etcd_kv *out,
                           char *err, size_t errlen)
{
	bool is;
	int rc;

	memset(out, 0, sizeof(*out));
	if (!json_is_object(kv)) {
		lk_set_err(err, errlen, "a key-value is not an object");
		return -EINVAL;
	}
	rc = lk_etcd_json_key_is(kv, key, klen, &is, err, errlen);
	if (rc < 0)
		return rc;
	if (!is) {
		lk_set_err(err, errlen, "response is about another key");
		return -EINVAL;
	}
	if ((rc = lk_etcd_json_uint(kv, "create_revision", &out->create_revision, err, errlen)) < 0 ||
	    (rc = lk_etcd_json_uint(kv, "mod_revision", &out->mod_revision, err, errlen)) < 0 ||
	    (rc = lk_etcd_json_uint(kv, "lease", &out->lease, err, errlen)) < 0)
		return rc;
	/* Every existing key was created at some revision >= 1: zero would be a forged token. */
	if (out->create_revision == 0) {
		lk_set_err(err, errlen, "key-value without create_revision");
		return -EINVAL;
	}
	return lk_etcd_json_bytes(kv, "value", out->value, LK_ETCD_JSON_MAX_VALUE, &out->value_len,
	                          &out->value_too_long, err, errlen);
}

/* The "kvs" of a range response: found and the first kv. */
static int lk_etcd_json_kvs(const json_t *obj, const void *key, size_t klen, bool *found,
                            struct lk_etcd_kv *kv, char *err, size_t errlen)
{
	json_t *kvs;
	int rc = lk_etcd_json_child(obj, "kvs", JSON_ARRAY, &kvs, err, errlen);

	*found = false;
	if (rc < 0 || !kvs || json_array_size(kvs) == 0)
		return rc;
	rc = lk_etcd_json_kv(json_array_get(kvs, 0), key, klen, kv, err, errlen);
	if (rc == 0)
		*found = true;
	return rc;
}

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

int lk_etcd_json_parse_range(const char *body, size_t len, const void *key, size_t klen,
                             struct lk_etcd_range *out, char *err, size_t errlen)
{
	struct lk_etcd_range *r;
	json_t *root;
	int rc;

	if (!lk_etcd_json_key_ok(key, klen)) {
		lk_set_err(err, errlen, "invalid key");
		return -EINVAL;
	}
	rc = lk_etcd_json_load(body, len, &root, err, errlen);
	if (rc < 0)
		return rc;
	/* The struct holds a value buffer: build it on the heap rather than the stack twice. */
	r = calloc(1, sizeof(*r));
	if (!r) {
		json_decref(root);
		lk_set_err(err, errlen, "out of memory");
		return -ENOMEM;
	}
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

	if (!lk_etcd_json_key_ok(key, klen)) {
		lk_set_err(err, errlen, "invalid key");
		return -EINVAL;
	}
	rc = lk_etcd_json_load(body, len, &root, err, errlen);
	if (rc < 0)
		return rc;
	t = calloc(1, sizeof(*t));
	if (!t) {
		json_decref(root);
		lk_set_err(err, errlen, "out of memory");
		return -ENOMEM;
	}
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

/* What the acquire and the peek txns answer: a header, "succeeded", and as the branch's last two
 * ranges the lock key's and a second key's (the fence key, the tenure marker). */
struct lk_etcd_json_pair {
	int64_t revision;
	uint64_t cluster_id;
	bool succeeded;
	bool found, found2;
	struct lk_etcd_kv kv, kv2;
};

/* Parse such an answer into *ret, a new struct the caller frees (also on failure, if set). */
static int lk_etcd_json_parse_pair(const char *body, size_t len, const void *key, size_t klen,
                                   const void *key2, size_t k2len, const char *what,
                                   struct lk_etcd_json_pair **ret, char *err, size_t errlen)
{
	struct lk_etcd_json_pair *p;
	json_t *root, *ranges[2] = { NULL, NULL };
	int rc;

	*ret = NULL;
	if (!lk_etcd_json_key_ok(key, klen) || !lk_etcd_json_key_ok(key2, k2len)) {
		lk_set_err(err, errlen, "invalid key");
		return -EINVAL;
	}
	rc = lk_etcd_json_load(body, len, &root, err, errlen);
	if (rc < 0)
		return rc;
	/* Two value buffers: on the heap rather than the stack. */
	p = calloc(1, sizeof(*p));
	if (!p) {
		json_decref(root);
		lk_set_err(err, errlen, "out of memory");
		return -ENOMEM;
	}
	*ret = p;
	rc = lk_etcd_json_txn_head(root, &p->revision, &p->cluster_id, &p->succeeded, ranges, err,
	                           errlen);
	if (rc == 0 && (!ranges[0] || !ranges[1])) {
		rc = -EINVAL;
		lk_set_err(err, errlen, "%s txn response without its two ranges", what);
	}
	if (rc == 0 &&
	    (rc = lk_etcd_json_kvs(ranges[0], key, klen, &p->found, &p->kv, err, errlen)) == 0)
		rc = lk_etcd_json_kvs(ranges[1], key2, k2len, &p->found2, &p->kv2, err, errlen);
	json_decref(root);
	return rc;
}

int lk_etcd_json_parse_acquire(const char *body, size_t len, const void *key, size_t klen,
                               const void *fkey, size_t fklen, struct lk_etcd_acquired *out,
                               char *err, size_t errlen)
{
	struct lk_etcd_json_pair *p;
	struct lk_etcd_acquired *t = NULL;
	int rc;

	/* The key's range, then the fence key's, last in either branch. */
	rc = lk_etcd_json_parse_pair(body, len, key, klen, fkey, fklen, "acquire", &p, err,
	                             errlen);
	if (rc == 0 && !(t = calloc(1, sizeof(*t)))) {
		rc = -ENOMEM;
		lk_set_err(err, errlen, "out of memory");
	}
	if (rc == 0) {
		t->revision = p->revision;
		t->cluster_id = p->cluster_id;
		t->succeeded = p->succeeded;
		t->found = p->found;
		t->kv = p->kv;
		t->fence_found = p->found2;
		if (p->found2)
			t->fence_bad = !lk_etcd_json_fence(&p->kv2, &t->fence);
		if (out)
			*out = *t;
	}
	free(t);
	free(p);
	return rc;
}

int lk_etcd_json_parse_peek(const char *body, size_t len, const void *key, size_t klen,
                            const void *tkey, size_t tklen, struct lk_etcd_peek *out,
                            char *err, size_t errlen)
{
	struct lk_etcd_json_pair *p;
	int rc;

	rc = lk_etcd_json_parse_pair(body, len, key, klen, tkey, tklen, "peek", &p, err, errlen);
	if (rc == 0 && !p->succeeded) {
		rc = -EINVAL;
		lk_set_err(err, errlen, "a peek txn (no compare) that did not succeed");
	}
	if (rc == 0 && out) {
		out->revision = p->revision;
		out->cluster_id = p->cluster_id;
		out->found = p->found;
		out->kv = p->kv;
		out->tenure_held = p->found2 && !p->kv2.value_too_long &&
		                   lk_etcd_json_same(p->kv2.value, p->kv2.value_len,
		                                     LK_ETCD_TENURE_HELD, strlen(LK_ETCD_TENURE_HELD));
		out->tenure_mod_revision = p->found2 ? p->kv2.mod_revision : 0;
	}
	free(p);
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

static int lk_etcd_json_event(const json_t *ev, const void *key, size_t klen,
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
		if ((rc = lk_etcd_json_key_is(kv, key, klen, &is, err, errlen)) < 0 ||
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
                             struct lk_etcd_watch *out, char *err, size_t errlen)
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
		if ((rc = lk_etcd_json_event(json_array_get(events, i), key, klen, &w, err,
		                             errlen)) < 0)
			goto out;
out:
	json_decref(root);
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
