/* etcd's JSON gateway, the request side: the bodies the backend POSTs (see etcd_json.h for the
 * rules). Built with jansson, except the one that carries a password. */
#include "locks/etcd_json.h"
#include "locks/etcd_json_int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <sodium.h>

static char *lk_etcd_json_b64(const void *bin, size_t len)
{
	size_t cap = sodium_base64_ENCODED_LEN(len, sodium_base64_VARIANT_ORIGINAL);
	char *s = malloc(cap);

	if (s)
		sodium_bin2base64(s, cap, bin, len, sodium_base64_VARIANT_ORIGINAL);
	return s;
}

static void lk_etcd_json_i64(char buf[24], int64_t v)
{
	snprintf(buf, 24, "%" PRId64, v);
}

/* Serialise and free root; -ENOMEM covers jansson's refusals too (our strings are ASCII). */
static int lk_etcd_json_dump(json_t *root, char **ret)
{
	char *s;

	if (!root)
		return -ENOMEM;
	s = json_dumps(root, JSON_COMPACT);
	json_decref(root);
	if (!s)
		return -ENOMEM;
	*ret = s;
	return 0;
}

/* The end of the range of every key below prefix: the prefix with its last byte below 0xff
 * incremented (and what follows it dropped). NULL for a prefix of 0xff bytes only. */
static char *lk_etcd_json_range_end(const void *prefix, size_t plen)
{
	unsigned char buf[LK_ETCD_JSON_MAX_KEY];
	size_t n = plen;

	memcpy(buf, prefix, plen);
	while (n > 0 && buf[n - 1] == 0xff)
		n--;
	if (n == 0)
		return NULL;
	buf[n - 1]++;
	return lk_etcd_json_b64(buf, n);
}

int lk_etcd_json_grant(int64_t ttl_s, char **ret)
{
	char ttl[24];

	if (ttl_s <= 0 || !ret)
		return -EINVAL;
	lk_etcd_json_i64(ttl, ttl_s);
	return lk_etcd_json_dump(json_pack("{s:s}", "TTL", ttl), ret);
}

int lk_etcd_json_lease_id(int64_t id, char **ret)
{
	char s[24];

	if (id <= 0 || !ret)
		return -EINVAL;
	lk_etcd_json_i64(s, id);
	return lk_etcd_json_dump(json_pack("{s:s}", "ID", s), ret);
}

int lk_etcd_json_txn_history(const void *prefix, size_t plen, const void *seq, size_t slen,
                             int64_t revision, char **ret)
{
	char *p64 = NULL, *e64 = NULL, *q64 = NULL, rev[24];
	int rc = -ENOMEM;

	if (!lk_etcd_json_key_ok(prefix, plen) || !lk_etcd_json_key_ok(seq, slen) ||
	    revision <= 0 || !ret)
		return -EINVAL;
	p64 = lk_etcd_json_b64(prefix, plen);
	e64 = lk_etcd_json_range_end(prefix, plen);
	q64 = lk_etcd_json_b64(seq, slen);
	lk_etcd_json_i64(rev, revision);
	if (p64 && e64 && q64)
		rc = lk_etcd_json_dump(json_pack("{s:[{s:{s:s, s:s, s:s, s:b}}, {s:{s:s, s:s}}]}",
		                                 "success",
		                                 "request_range", "key", p64, "range_end", e64,
		                                 "revision", rev, "count_only", 1,
		                                 "request_range", "key", q64, "revision", rev), ret);
	else if (!e64 && p64)
		rc = -EINVAL;
	free(p64);
	free(e64);
	free(q64);
	return rc;
}

int lk_etcd_json_txn_release(const void *key, size_t klen, const void *tkey, size_t tklen,
                             int64_t create_revision, int64_t lease, char **ret)
{
	json_t *root, *cmp, *mark;
	char *k64, *t64 = NULL, *r64 = NULL, rev[24], id[24], val[48];
	int rc;

	if (!lk_etcd_json_key_ok(key, klen) || (tkey && !lk_etcd_json_key_ok(tkey, tklen)) ||
	    (tkey && lk_etcd_json_same(key, klen, tkey, tklen)) || create_revision <= 0 ||
	    lease < 0 || !ret)
		return -EINVAL;
	k64 = lk_etcd_json_b64(key, klen);
	snprintf(val, sizeof(val), "%s %" PRId64, LK_ETCD_STATE_RELEASED, create_revision);
	if (tkey) {
		t64 = lk_etcd_json_b64(tkey, tklen);
		r64 = lk_etcd_json_b64(val, strlen(val));
	}
	if (!k64 || (tkey && (!t64 || !r64))) {
		rc = -ENOMEM;
		goto out;
	}
	lk_etcd_json_i64(rev, create_revision);
	lk_etcd_json_i64(id, lease);
	root = json_pack(
		"{s:[{s:s, s:s, s:s, s:s}], s:[{s:{s:s}}]}",
		"compare", "key", k64, "target", "CREATE", "result", "EQUAL", "create_revision", rev,
		"success", "request_delete_range", "key", k64);
	cmp = root && lease > 0 ? json_pack("{s:s, s:s, s:s, s:s}", "key", k64, "target", "LEASE",
	                                    "result", "EQUAL", "lease", id) : NULL;
	if (root && lease > 0 &&
	    (!cmp || json_array_append_new(json_object_get(root, "compare"), cmp) < 0)) {
		json_decref(root);
		root = NULL;
	}
	mark = root && tkey ? json_pack("{s:{s:s, s:s}}", "request_put", "key", t64, "value",
	                                r64) : NULL;
	if (root && tkey &&
	    (!mark || json_array_append_new(json_object_get(root, "success"), mark) < 0)) {
		json_decref(root);
		root = NULL;
	}
	rc = lk_etcd_json_dump(root, ret);
out:
	free(k64);
	free(t64);
	free(r64);
	return rc;
}

int lk_etcd_json_range(const void *key, size_t klen, char **ret)
{
	char *k64;
	int rc;

	if (!lk_etcd_json_key_ok(key, klen) || !ret)
		return -EINVAL;
	k64 = lk_etcd_json_b64(key, klen);
	if (!k64)
		return -ENOMEM;
	rc = lk_etcd_json_dump(json_pack("{s:s}", "key", k64), ret);
	free(k64);
	return rc;
}

int lk_etcd_json_watch_range(const void *key, size_t klen, const void *end, size_t elen,
                             int64_t start_revision, char **ret)
{
	json_t *req;
	char *k64, *e64 = NULL, rev[24];
	int rc;

	if (!lk_etcd_json_key_ok(key, klen) || (end && !lk_etcd_json_key_ok(end, elen)) ||
	    start_revision < 0 || !ret)
		return -EINVAL;
	k64 = lk_etcd_json_b64(key, klen);
	if (end)
		e64 = lk_etcd_json_b64(end, elen);
	if (!k64 || (end && !e64)) {
		rc = -ENOMEM;
		goto out;
	}
	lk_etcd_json_i64(rev, start_revision);
	req = json_pack("{s:s}", "key", k64);
	if (req && end && json_object_set_new(req, "range_end", json_string(e64)) < 0)
		req = (json_decref(req), NULL);
	if (req && start_revision > 0 &&
	    json_object_set_new(req, "start_revision", json_string(rev)) < 0)
		req = (json_decref(req), NULL);
	rc = lk_etcd_json_dump(req ? json_pack("{s:o}", "create_request", req) : NULL, ret);
out:
	free(k64);
	free(e64);
	return rc;
}

int lk_etcd_json_watch_create(const void *key, size_t klen, bool under, int64_t start_revision,
                              char **ret)
{
	unsigned char end[LK_ETCD_JSON_MAX_KEY];
	size_t n = klen;

	if (!lk_etcd_json_key_ok(key, klen))
		return -EINVAL;
	if (!under)
		return lk_etcd_json_watch_range(key, klen, NULL, 0, start_revision, ret);
	/* Every key below the prefix: its last byte below 0xff incremented. */
	memcpy(end, key, klen);
	while (n > 0 && end[n - 1] == 0xff)
		n--;
	if (n == 0)
		return -EINVAL;
	end[n - 1]++;
	return lk_etcd_json_watch_range(key, klen, end, n, start_revision, ret);
}

/* {"request_range":{"key":k64}} */
static json_t *lk_etcd_json_get(const char *k64)
{
	return json_pack("{s:{s:s}}", "request_range", "key", k64);
}

/* Append item to array (taking item, NULL included); returns array, or NULL on failure with
 * item freed and array left to its owner. */
static json_t *lk_etcd_json_add(json_t *array, json_t *item)
{
	if (array && item && json_array_append_new(array, item) == 0)
		return array;
	json_decref(item);
	return NULL;
}

/* json_array_extend that takes (and frees) other, NULL included. */
static int lk_etcd_json_extend(json_t *array, json_t *other)
{
	int rc = other ? json_array_extend(array, other) : -1;

	json_decref(other);
	return rc;
}

/* The reads that end every look, in the order lk_etcd_json_parse_look() expects them; NULL
 * without memory. */
static json_t *lk_etcd_json_look_reads(const char *own, const char *fence, const char *state,
                                       const char *legacy, const char *prefix, const char *end)
{
	json_t *a = json_array();

	if (!lk_etcd_json_add(a, lk_etcd_json_get(own)) ||
	    !lk_etcd_json_add(a, lk_etcd_json_get(fence)) ||
	    !lk_etcd_json_add(a, lk_etcd_json_get(state)) ||
	    !lk_etcd_json_add(a, lk_etcd_json_get(legacy)))
		return (json_decref(a), NULL);
	if (lk_etcd_json_add(a, json_pack("{s:{s:s, s:s, s:s, s:s, s:s}}", "request_range",
	                                     "key", prefix, "range_end", end,
	                                     "sort_order", "ASCEND", "sort_target", "CREATE",
	                                     "limit", "2")))
		return a;
	json_decref(a);
	return NULL;
}

static bool lk_etcd_json_look_keys_ok(const struct lk_etcd_look_keys *k)
{
	return k && lk_etcd_json_key_ok(k->own, k->own_len) &&
	       lk_etcd_json_key_ok(k->prefix, k->prefix_len) &&
	       lk_etcd_json_key_ok(k->fence, k->fence_len) &&
	       lk_etcd_json_key_ok(k->state, k->state_len) &&
	       lk_etcd_json_key_ok(k->seq, k->seq_len) &&
	       lk_etcd_json_key_ok(k->legacy, k->legacy_len) &&
	       k->own_len > k->prefix_len && memcmp(k->own, k->prefix, k->prefix_len) == 0;
}

int lk_etcd_json_txn_batch(const char *const *keys, const size_t *klens,
                           const char *const *legacy, const size_t *llens, size_t n,
                           char **ret)
{
	json_t *root, *success;

	if (!keys || !klens || !legacy || !llens || n == 0 || n > 64 || !ret)
		return -EINVAL;
	for (size_t i = 0; i < n; i++)
		if (!lk_etcd_json_key_ok(keys[i], klens[i]) ||
		    !lk_etcd_json_key_ok(legacy[i], llens[i]))
			return -EINVAL;
	root = json_object();
	success = json_array();
	if (!root || !success || json_object_set_new(root, "success", success) < 0) {
		json_decref(root);
		return -ENOMEM;
	}
	for (size_t i = 0; i < n; i++) {
		char *k64 = lk_etcd_json_b64(keys[i], klens[i]);
		char *l64 = lk_etcd_json_b64(legacy[i], llens[i]);
		bool ok = k64 && l64 && lk_etcd_json_add(success, lk_etcd_json_get(k64)) &&
		          lk_etcd_json_add(success, lk_etcd_json_get(l64));

		free(k64);
		free(l64);
		if (!ok) {
			json_decref(root);
			return -ENOMEM;
		}
	}
	return lk_etcd_json_dump(root, ret);
}

int lk_etcd_json_txn_look(const struct lk_etcd_look_keys *keys, bool create, const void *value,
                          size_t vlen, int64_t lease, int64_t seed, bool overwrite_fence,
                          char **ret)
{
	char *o64 = NULL, *p64 = NULL, *e64 = NULL, *f64 = NULL, *t64 = NULL, *q64 = NULL;
	char *l64 = NULL, *v64 = NULL, *s64 = NULL, id[24], num[24];
	json_t *root = NULL, *success = NULL, *fence;
	bool owned = false;
	int rc = -ENOMEM;

	if (!lk_etcd_json_look_keys_ok(keys) || !ret || (!value && vlen) ||
	    vlen > LK_ETCD_JSON_MAX_VALUE || (create && (lease <= 0 || seed <= 0)))
		return -EINVAL;
	o64 = lk_etcd_json_b64(keys->own, keys->own_len);
	p64 = lk_etcd_json_b64(keys->prefix, keys->prefix_len);
	e64 = lk_etcd_json_range_end(keys->prefix, keys->prefix_len);
	f64 = lk_etcd_json_b64(keys->fence, keys->fence_len);
	t64 = lk_etcd_json_b64(keys->state, keys->state_len);
	q64 = lk_etcd_json_b64(keys->seq, keys->seq_len);
	l64 = lk_etcd_json_b64(keys->legacy, keys->legacy_len);
	v64 = lk_etcd_json_b64(value ? value : "", vlen);
	lk_etcd_json_i64(num, seed);
	s64 = lk_etcd_json_b64(num, strlen(num));
	if (!o64 || !p64 || !e64 || !f64 || !t64 || !q64 || !l64 || !v64 || !s64) {
		/* A prefix of 0xff bytes only has no end; anything else is memory. */
		if (p64 && !e64)
			rc = -EINVAL;
		goto out;
	}
	/* Every piece below goes into root or is freed on the spot: out frees root alone. */
	root = json_object();
	success = json_array();
	if (!root || !success)
		goto out;
	/* Set (or freed by a failed set): root owns it from here on. */
	owned = true;
	if (json_object_set_new(root, "success", success) < 0)
		goto out;
	if (create) {
		lk_etcd_json_i64(id, lease);
		/* A missing fence key is seeded inside the same txn (a nested "if version == 0,
		 * put"), so that a tenure never starts without a base. */
		if (overwrite_fence)
			fence = json_pack("{s:{s:s, s:s}}", "request_put", "key", f64, "value", s64);
		else
			fence = json_pack("{s:{s:[{s:s, s:s, s:s, s:s}], s:[{s:{s:s, s:s}}]}}",
			                  "request_txn", "compare", "key", f64, "target", "VERSION",
			                  "result", "EQUAL", "version", "0",
			                  "success", "request_put", "key", f64, "value", s64);
		/* The seq key is read before our put rewrites it: its mod_revision then says when
		 * the candidate before ours arrived. "create_revision":"0" must be sent although
		 * it is the zero value: it selects the compare's target field. */
		if (!lk_etcd_json_add(success, lk_etcd_json_get(q64)) ||
		    !lk_etcd_json_add(success, json_pack("{s:{s:s, s:s, s:s}}", "request_put", "key",
		                                         o64, "value", v64, "lease", id)) ||
		    !lk_etcd_json_add(success, json_pack("{s:{s:s}}", "request_put", "key", q64)) ||
		    !lk_etcd_json_add(success, fence) ||
		    json_object_set_new(root, "compare", json_pack(
			    "[{s:s, s:s, s:s, s:s}]", "key", o64, "target", "CREATE", "result",
			    "EQUAL", "create_revision", "0")) < 0 ||
		    json_object_set_new(root, "failure", lk_etcd_json_look_reads(
			    o64, f64, t64, l64, p64, e64)) < 0)
			goto out;
	}
	if (lk_etcd_json_extend(success, lk_etcd_json_look_reads(o64, f64, t64, l64, p64,
	                                                            e64)) < 0)
		goto out;
	rc = lk_etcd_json_dump(root, ret);
	root = NULL;
out:
	if (!owned)
		json_decref(success);
	json_decref(root);
	free(o64);
	free(p64);
	free(e64);
	free(f64);
	free(t64);
	free(q64);
	free(l64);
	free(v64);
	free(s64);
	return rc;
}

/* Append s[len] as a JSON string to out (which has room for 6 bytes per input byte + 2). */
static size_t lk_etcd_json_escape(char *out, const char *s, size_t len)
{
	static const char hex[] = "0123456789abcdef";
	size_t n = 0;

	out[n++] = '"';
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c == '"' || c == '\\') {
			out[n++] = '\\';
			out[n++] = (char)c;
		} else if (c < 0x20) {
			memcpy(out + n, "\\u00", 4);
			out[n + 4] = hex[c >> 4];
			out[n + 5] = hex[c & 15];
			n += 6;
		} else {
			out[n++] = (char)c; /* UTF-8 passes through; etcd judges its validity */
		}
	}
	out[n++] = '"';
	return n;
}

int lk_etcd_json_authenticate(const char *name, const char *password, size_t pwlen, char **ret)
{
	size_t nlen, cap, n = 0;
	char *s;

	if (!name || !password || !ret)
		return -EINVAL;
	nlen = strlen(name);
	if (nlen == 0 || nlen > LK_ETCD_JSON_MAX_NAME || pwlen == 0 ||
	    pwlen > LK_ETCD_JSON_MAX_PASSWORD)
		return -EINVAL;
	cap = sizeof("{\"name\":,\"password\":}") + 6 * (nlen + pwlen) + 4;
	s = malloc(cap);
	if (!s)
		return -ENOMEM;
	memcpy(s + n, "{\"name\":", 8);
	n += 8;
	n += lk_etcd_json_escape(s + n, name, nlen);
	memcpy(s + n, ",\"password\":", 12);
	n += 12;
	n += lk_etcd_json_escape(s + n, password, pwlen);
	s[n++] = '}';
	s[n] = '\0';
	*ret = s;
	return 0;
}
