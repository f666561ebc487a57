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

int lk_etcd_json_txn_acquire(const void *key, size_t klen, const void *fkey, size_t fklen,
                             const void *tkey, size_t tklen, const void *value, size_t vlen,
                             int64_t lease, int64_t seed, bool overwrite_fence, char **ret)
{
	char *k64 = NULL, *f64 = NULL, *t64 = NULL, *v64 = NULL, *s64 = NULL, *h64 = NULL;
	char id[24], num[24];
	json_t *fence;
	int rc;

	if (!lk_etcd_json_key_ok(key, klen) || !lk_etcd_json_key_ok(fkey, fklen) ||
	    !lk_etcd_json_key_ok(tkey, tklen) || lk_etcd_json_same(key, klen, fkey, fklen) ||
	    lk_etcd_json_same(key, klen, tkey, tklen) || lk_etcd_json_same(fkey, fklen, tkey, tklen) ||
	    (!value && vlen) || vlen > LK_ETCD_JSON_MAX_VALUE || lease <= 0 || seed <= 0 || !ret)
		return -EINVAL;
	lk_etcd_json_i64(num, seed);
	k64 = lk_etcd_json_b64(key, klen);
	f64 = lk_etcd_json_b64(fkey, fklen);
	t64 = lk_etcd_json_b64(tkey, tklen);
	v64 = lk_etcd_json_b64(value ? value : "", vlen);
	s64 = lk_etcd_json_b64(num, strlen(num));
	h64 = lk_etcd_json_b64(LK_ETCD_TENURE_HELD, strlen(LK_ETCD_TENURE_HELD));
	if (!k64 || !f64 || !t64 || !v64 || !s64 || !h64) {
		rc = -ENOMEM;
		goto out;
	}
	lk_etcd_json_i64(id, lease);
	/* A missing fence key is seeded inside the same txn (a nested one: "if version == 0,
	 * put"), so that a tenure never starts without a base and one round trip does it all. */
	if (overwrite_fence)
		fence = json_pack("{s:{s:s, s:s}}", "request_put", "key", f64, "value", s64);
	else
		fence = json_pack("{s:{s:[{s:s, s:s, s:s, s:s}], s:[{s:{s:s, s:s}}]}}",
		                  "request_txn", "compare", "key", f64, "target", "VERSION",
		                  "result", "EQUAL", "version", "0",
		                  "success", "request_put", "key", f64, "value", s64);
	/* "create_revision":"0" and "version":"0" must be sent although they are the zero
	 * values: they select the compare's target field. */
	rc = lk_etcd_json_dump(fence ? json_pack(
		"{s:[{s:s, s:s, s:s, s:s}],"
		" s:[o, {s:{s:s, s:s, s:s}}, {s:{s:s, s:s}}, {s:{s:s}}, {s:{s:s}}],"
		" s:[{s:{s:s}}, {s:{s:s}}]}",
		"compare", "key", k64, "target", "CREATE", "result", "EQUAL", "create_revision", "0",
		"success", fence, "request_put", "key", k64, "value", v64, "lease", id,
		"request_put", "key", t64, "value", h64,
		"request_range", "key", k64, "request_range", "key", f64,
		"failure", "request_range", "key", k64, "request_range", "key", f64) : NULL, ret);
out:
	free(k64);
	free(f64);
	free(t64);
	free(v64);
	free(s64);
	free(h64);
	return rc;
}

int lk_etcd_json_txn_delete(const void *key, size_t klen, const void *tkey, size_t tklen,
                            int64_t create_revision, int64_t lease, char **ret)
{
	json_t *root, *cmp, *mark;
	char *k64, *t64 = NULL, *r64 = NULL, rev[24], id[24];
	int rc;

	if (!lk_etcd_json_key_ok(key, klen) || (tkey && !lk_etcd_json_key_ok(tkey, tklen)) ||
	    (tkey && lk_etcd_json_same(key, klen, tkey, tklen)) || create_revision <= 0 ||
	    lease < 0 || !ret)
		return -EINVAL;
	k64 = lk_etcd_json_b64(key, klen);
	if (tkey) {
		t64 = lk_etcd_json_b64(tkey, tklen);
		r64 = lk_etcd_json_b64(LK_ETCD_TENURE_RELEASED, strlen(LK_ETCD_TENURE_RELEASED));
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

int lk_etcd_json_txn_peek(const void *key, size_t klen, const void *tkey, size_t tklen,
                          char **ret)
{
	char *k64, *t64;
	int rc;

	if (!lk_etcd_json_key_ok(key, klen) || !lk_etcd_json_key_ok(tkey, tklen) ||
	    lk_etcd_json_same(key, klen, tkey, tklen) || !ret)
		return -EINVAL;
	k64 = lk_etcd_json_b64(key, klen);
	t64 = lk_etcd_json_b64(tkey, tklen);
	rc = k64 && t64 ? lk_etcd_json_dump(json_pack("{s:[{s:{s:s}}, {s:{s:s}}]}", "success",
	                                              "request_range", "key", k64,
	                                              "request_range", "key", t64), ret)
	                : -ENOMEM;
	free(k64);
	free(t64);
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

int lk_etcd_json_watch_create(const void *key, size_t klen, int64_t start_revision, char **ret)
{
	json_t *req;
	char *k64, rev[24];
	int rc;

	if (!lk_etcd_json_key_ok(key, klen) || start_revision < 0 || !ret)
		return -EINVAL;
	k64 = lk_etcd_json_b64(key, klen);
	if (!k64)
		return -ENOMEM;
	lk_etcd_json_i64(rev, start_revision);
	req = start_revision > 0 ? json_pack("{s:s, s:s}", "key", k64, "start_revision", rev)
	                         : json_pack("{s:s}", "key", k64);
	rc = lk_etcd_json_dump(req ? json_pack("{s:o}", "create_request", req) : NULL, ret);
	free(k64);
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
