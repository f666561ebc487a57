/* etcd's JSON gateway, reading: the gateway's JSON values with its defaults for omitted
 * fields (a zero is left out, an int64 comes as a string), shared by the answers' mappings in
 * etcd_json.c. */
#include "locks/etcd_json.h"
#include "locks/etcd_json_int.h"
#include "locks/backend_int.h"
#include "proto/err.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <sodium.h>

/* Parse a whole body as one JSON object. -EPROTO if it is an etcd error object. */
int lk_etcd_json_load(const char *body, size_t len, json_t **ret, char *err, size_t errlen)
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
int lk_etcd_json_int(const json_t *obj, const char *name, int64_t *out,
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
int lk_etcd_json_uint(const json_t *obj, const char *name, int64_t *out,
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
int lk_etcd_json_bool(const json_t *obj, const char *name, bool *out,
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
int lk_etcd_json_child(const json_t *obj, const char *name, json_type type,
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
int lk_etcd_json_header(const json_t *obj, bool required, int64_t *revision,
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

/* Whether a base64 key field decodes to key[klen] (under: to something starting with it). */
static int lk_etcd_json_key_match(const json_t *obj, const void *key, size_t klen, bool under,
                                  char *buf, size_t *n, bool *is, char *err, size_t errlen)
{
	bool too_long;
	int rc = lk_etcd_json_bytes(obj, "key", buf, LK_ETCD_JSON_MAX_KEY, n, &too_long,
	                            err, errlen);

	if (rc < 0)
		return rc;
	*is = !too_long && (under ? *n > klen : *n == klen) && memcmp(buf, key, klen) == 0;
	return 0;
}

int lk_etcd_json_key_is(const json_t *obj, const void *key, size_t klen, bool under, bool *is,
                        char *err, size_t errlen)
{
	char buf[LK_ETCD_JSON_MAX_KEY + 1];
	size_t n;

	return lk_etcd_json_key_match(obj, key, klen, under, buf, &n, is, err, errlen);
}

/* One key-value about key[klen] (under: a key below that prefix). */
static int lk_etcd_json_kv_of(const json_t *kv, const void *key, size_t klen, bool under,
                              struct lk_etcd_kv *out, char *name, size_t *name_len,
                              char *err, size_t errlen)
{
	bool is;
	int rc;

	memset(out, 0, sizeof(*out));
	if (!json_is_object(kv)) {
		lk_set_err(err, errlen, "a key-value is not an object");
		return -EINVAL;
	}
	rc = lk_etcd_json_key_match(kv, key, klen, under, name, name_len, &is, err, errlen);
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
int lk_etcd_json_kvs(const json_t *obj, const void *key, size_t klen, bool *found,
                     struct lk_etcd_kv *kv, char *err, size_t errlen)
{
	char name[LK_ETCD_JSON_MAX_KEY + 1];
	size_t n;
	json_t *kvs;
	int rc = lk_etcd_json_child(obj, "kvs", JSON_ARRAY, &kvs, err, errlen);

	*found = false;
	if (rc < 0 || !kvs || json_array_size(kvs) == 0)
		return rc;
	rc = lk_etcd_json_kv_of(json_array_get(kvs, 0), key, klen, false, kv, name, &n, err,
	                        errlen);
	if (rc == 0)
		*found = true;
	return rc;
}

int lk_etcd_json_kvs_under(const json_t *obj, const void *prefix, size_t plen, const void *own,
                           size_t olen, struct lk_etcd_kv *kv, bool *is_own, size_t max,
                           size_t *n, int64_t *count, char *err, size_t errlen)
{
	char name[LK_ETCD_JSON_MAX_KEY + 1];
	size_t len;
	json_t *kvs;
	int rc;

	*n = 0;
	*count = 0;
	if ((rc = lk_etcd_json_child(obj, "kvs", JSON_ARRAY, &kvs, err, errlen)) < 0 ||
	    (rc = lk_etcd_json_uint(obj, "count", count, err, errlen)) < 0)
		return rc;
	if (kvs && json_array_size(kvs) > max) {
		lk_set_err(err, errlen, "range response with more keys than its limit");
		return -EINVAL;
	}
	for (size_t i = 0; kvs && i < json_array_size(kvs); i++) {
		rc = lk_etcd_json_kv_of(json_array_get(kvs, i), prefix, plen, true, &kv[i], name,
		                        &len, err, errlen);
		if (rc < 0)
			return rc;
		is_own[i] = lk_etcd_json_same(name, len, own, olen);
		*n = i + 1;
	}
	/* count is every key in the range, kvs at most the limit: fewer kvs than count is fine,
	 * more is not. */
	if (*count < (int64_t)*n) {
		lk_set_err(err, errlen, "range response with more keys than its count");
		return -EINVAL;
	}
	return 0;
}
