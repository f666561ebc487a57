/* locks/etcd_json: every request body etcd's gateway gets from us, every answer it gives read
 * back with the gateway's habit of omitting zero fields, and garbage of every kind refused with
 * a message (never a crash: the mutation loops run under ASan too). */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <check.h>
#include <jansson.h>
#include <sodium.h>

#include "locks/etcd_json.h"

#define KEY "lk/test"
#define KEY_B64 "bGsvdGVzdA=="   /* base64("lk/test") */
#define HEADER "\"header\":{\"cluster_id\":\"14841639068965178418\",\"member_id\":" \
               "\"10276657743932975437\",\"revision\":\"7\",\"raft_term\":\"2\"}"

static char err[512];

static json_t *load(const char *s)
{
	json_error_t je;
	json_t *j = json_loads(s, 0, &je);

	ck_assert_msg(j != NULL, "built invalid JSON: %s (%s)", s, je.text);
	return j;
}

static const char *str_at(json_t *root, const char *path)
{
	json_t *j = root;
	char buf[256], *save = NULL, *tok;

	snprintf(buf, sizeof(buf), "%s", path);
	for (tok = strtok_r(buf, ".", &save); tok && j; tok = strtok_r(NULL, ".", &save)) {
		if (tok[0] >= '0' && tok[0] <= '9')
			j = json_array_get(j, (size_t)atoi(tok));
		else
			j = json_object_get(j, tok);
	}
	ck_assert_msg(json_is_string(j), "no string at %s", path);
	return json_string_value(j);
}

/* ---- builders ------------------------------------------------------------------------- */

START_TEST(test_grant_and_lease_bodies)
{
	char *s;

	ck_assert_int_eq(lk_etcd_json_grant(5, &s), 0);
	ck_assert_str_eq(s, "{\"TTL\":\"5\"}");
	free(s);
	ck_assert_int_eq(lk_etcd_json_lease_id(7587879341806712845LL, &s), 0);
	ck_assert_str_eq(s, "{\"ID\":\"7587879341806712845\"}");
	free(s);

	s = NULL;
	ck_assert_int_eq(lk_etcd_json_grant(0, &s), -EINVAL);
	ck_assert_int_eq(lk_etcd_json_grant(-1, &s), -EINVAL);
	ck_assert_int_eq(lk_etcd_json_lease_id(0, &s), -EINVAL);
	ck_assert_int_eq(lk_etcd_json_lease_id(-5, &s), -EINVAL);
	ck_assert_int_eq(lk_etcd_json_grant(5, NULL), -EINVAL);
	ck_assert_ptr_null(s); /* out-parameters only on success */
}
END_TEST

#define FKEY "lk/test:fence"
#define FKEY_B64 "bGsvdGVzdDpmZW5jZQ=="  /* base64("lk/test:fence") */
#define TKEY "lk/test:state"
#define TKEY_B64 "bGsvdGVzdDpzdGF0ZQ=="  /* base64("lk/test:state") */

START_TEST(test_txn_acquire_body)
{
	json_t *j;
	char *s;

	ck_assert_int_eq(lk_etcd_json_txn_acquire(KEY, strlen(KEY), FKEY, strlen(FKEY), TKEY, strlen(TKEY),
	                                          "alpha", 5, 42, 1765000000123456LL, false, &s),
	                 0);
	j = load(s);
	free(s);
	ck_assert_str_eq(str_at(j, "compare.0.key"), KEY_B64);
	ck_assert_str_eq(str_at(j, "compare.0.target"), "CREATE");
	ck_assert_str_eq(str_at(j, "compare.0.result"), "EQUAL");
	/* The zero must be there: it selects the compare's target field. */
	ck_assert_str_eq(str_at(j, "compare.0.create_revision"), "0");
	/* The fence key is seeded only where it is missing, inside the same txn. */
	ck_assert_str_eq(str_at(j, "success.0.request_txn.compare.0.key"), FKEY_B64);
	ck_assert_str_eq(str_at(j, "success.0.request_txn.compare.0.target"), "VERSION");
	ck_assert_str_eq(str_at(j, "success.0.request_txn.compare.0.version"), "0");
	ck_assert_str_eq(str_at(j, "success.0.request_txn.success.0.request_put.key"), FKEY_B64);
	/* base64("1765000000123456") */
	ck_assert_str_eq(str_at(j, "success.0.request_txn.success.0.request_put.value"),
	                 "MTc2NTAwMDAwMDEyMzQ1Ng==");
	ck_assert_str_eq(str_at(j, "success.1.request_put.key"), KEY_B64);
	ck_assert_str_eq(str_at(j, "success.1.request_put.value"), "YWxwaGE=");
	ck_assert_str_eq(str_at(j, "success.1.request_put.lease"), "42");
	/* The tenure marker says "held", on no lease: it outlives the key when the lease ends. */
	ck_assert_str_eq(str_at(j, "success.2.request_put.key"), TKEY_B64);
	ck_assert_str_eq(str_at(j, "success.2.request_put.value"), "aGVsZA==");
	ck_assert_ptr_null(json_object_get(json_object_get(json_array_get(
		json_object_get(j, "success"), 2), "request_put"), "lease"));
	ck_assert_str_eq(str_at(j, "success.3.request_range.key"), KEY_B64);
	ck_assert_str_eq(str_at(j, "success.4.request_range.key"), FKEY_B64);
	ck_assert_str_eq(str_at(j, "failure.0.request_range.key"), KEY_B64);
	ck_assert_str_eq(str_at(j, "failure.1.request_range.key"), FKEY_B64);
	ck_assert_int_eq(json_array_size(json_object_get(j, "compare")), 1);
	ck_assert_int_eq(json_array_size(json_object_get(j, "success")), 5);
	ck_assert_int_eq(json_array_size(json_object_get(j, "failure")), 2);
	json_decref(j);

	/* After a replaced cluster the fence is overwritten with the clock, whatever it holds. */
	ck_assert_int_eq(lk_etcd_json_txn_acquire(KEY, strlen(KEY), FKEY, strlen(FKEY), TKEY, strlen(TKEY),
	                                          "alpha", 5, 42, 7, true, &s), 0);
	j = load(s);
	free(s);
	ck_assert_str_eq(str_at(j, "success.0.request_put.key"), FKEY_B64);
	ck_assert_str_eq(str_at(j, "success.0.request_put.value"), "Nw==");
	json_decref(j);

	/* Keys are bytes: NULs and high bytes go through base64 untouched. */
	ck_assert_int_eq(lk_etcd_json_txn_acquire("a\0\xff", 3, "f", 1, "t", 1, "", 0, 1, 1, false,
	                                          &s), 0);
	j = load(s);
	free(s);
	ck_assert_str_eq(str_at(j, "compare.0.key"), "YQD/");
	ck_assert_str_eq(str_at(j, "success.1.request_put.value"), "");
	json_decref(j);
}
END_TEST

START_TEST(test_txn_acquire_rejects_bad_arguments)
{
	char big[LK_ETCD_JSON_MAX_KEY + 2];
	char *s = NULL;

	memset(big, 'k', sizeof(big));
#define ACQ(k, kl, f, fl, t, tl, v, vl, lease, seed) \
	lk_etcd_json_txn_acquire(k, kl, f, fl, t, tl, v, vl, lease, seed, false, &s)
	ck_assert_int_eq(ACQ("", 0, "f", 1, "t", 1, "a", 1, 1, 1), -EINVAL);
	ck_assert_int_eq(ACQ(NULL, 3, "f", 1, "t", 1, "a", 1, 1, 1), -EINVAL);
	ck_assert_int_eq(ACQ(big, LK_ETCD_JSON_MAX_KEY + 1, "f", 1, "t", 1, "a", 1, 1, 1), -EINVAL);
	ck_assert_int_eq(ACQ(KEY, 7, big, LK_ETCD_JSON_MAX_KEY + 1, "t", 1, "a", 1, 1, 1), -EINVAL);
	ck_assert_int_eq(ACQ(KEY, 7, "f", 1, big, LK_ETCD_JSON_MAX_KEY + 1, "a", 1, 1, 1), -EINVAL);
	ck_assert_int_eq(ACQ(KEY, 7, NULL, 3, "t", 1, "a", 1, 1, 1), -EINVAL);
	ck_assert_int_eq(ACQ(KEY, 7, "f", 1, NULL, 3, "a", 1, 1, 1), -EINVAL);
	/* The fence key and the marker are three different keys. */
	ck_assert_int_eq(ACQ(KEY, 7, KEY, 7, "t", 1, "a", 1, 1, 1), -EINVAL);
	ck_assert_int_eq(ACQ(KEY, 7, "f", 1, KEY, 7, "a", 1, 1, 1), -EINVAL);
	ck_assert_int_eq(ACQ(KEY, 7, "f", 1, "f", 1, "a", 1, 1, 1), -EINVAL);
	ck_assert_int_eq(ACQ(KEY, 7, "f", 1, "t", 1, big, LK_ETCD_JSON_MAX_VALUE + 1, 1, 1),
	                 -EINVAL);
	ck_assert_int_eq(ACQ(KEY, 7, "f", 1, "t", 1, "a", 1, 0, 1), -EINVAL);
	ck_assert_int_eq(ACQ(KEY, 7, "f", 1, "t", 1, "a", 1, 1, 0), -EINVAL);
	ck_assert_int_eq(ACQ(KEY, 7, "f", 1, "t", 1, NULL, 1, 1, 1), -EINVAL);
	ck_assert_ptr_null(s);
	ck_assert_int_eq(ACQ(big, LK_ETCD_JSON_MAX_KEY, "f", 1, "t", 1, "a", 1, 1, 1), 0);
#undef ACQ
	free(s);
}
END_TEST

START_TEST(test_txn_delete_body)
{
	json_t *j;
	char *s;

	ck_assert_int_eq(lk_etcd_json_txn_delete(KEY, strlen(KEY), TKEY, strlen(TKEY), 1234, 0, &s),
	                 0);
	j = load(s);
	free(s);
	ck_assert_str_eq(str_at(j, "compare.0.key"), KEY_B64);
	ck_assert_str_eq(str_at(j, "compare.0.target"), "CREATE");
	ck_assert_str_eq(str_at(j, "compare.0.result"), "EQUAL");
	ck_assert_str_eq(str_at(j, "compare.0.create_revision"), "1234");
	ck_assert_int_eq(json_array_size(json_object_get(j, "compare")), 1);
	ck_assert_str_eq(str_at(j, "success.0.request_delete_range.key"), KEY_B64);
	/* ... and says "released" in the same branch. */
	ck_assert_str_eq(str_at(j, "success.1.request_put.key"), TKEY_B64);
	ck_assert_str_eq(str_at(j, "success.1.request_put.value"), "cmVsZWFzZWQ=");
	ck_assert_int_eq(json_array_size(json_object_get(j, "success")), 2);
	ck_assert_ptr_null(json_object_get(j, "failure"));
	json_decref(j);

	/* Without a marker key, only the delete. */
	ck_assert_int_eq(lk_etcd_json_txn_delete(KEY, strlen(KEY), NULL, 0, 1234, 0, &s), 0);
	j = load(s);
	free(s);
	ck_assert_int_eq(json_array_size(json_object_get(j, "success")), 1);
	json_decref(j);

	/* With the tenure's lease known, the key must still be on it. */
	ck_assert_int_eq(lk_etcd_json_txn_delete(KEY, strlen(KEY), TKEY, strlen(TKEY), 1234, 42, &s),
	                 0);
	j = load(s);
	free(s);
	ck_assert_int_eq(json_array_size(json_object_get(j, "compare")), 2);
	ck_assert_str_eq(str_at(j, "compare.0.create_revision"), "1234");
	ck_assert_str_eq(str_at(j, "compare.1.key"), KEY_B64);
	ck_assert_str_eq(str_at(j, "compare.1.target"), "LEASE");
	ck_assert_str_eq(str_at(j, "compare.1.result"), "EQUAL");
	ck_assert_str_eq(str_at(j, "compare.1.lease"), "42");
	json_decref(j);

	ck_assert_int_eq(lk_etcd_json_txn_delete(KEY, strlen(KEY), TKEY, strlen(TKEY), 0, 0, &s),
	                 -EINVAL);
	ck_assert_int_eq(lk_etcd_json_txn_delete(KEY, 0, TKEY, strlen(TKEY), 5, 0, &s), -EINVAL);
	ck_assert_int_eq(lk_etcd_json_txn_delete(KEY, strlen(KEY), TKEY, strlen(TKEY), 5, -1, &s),
	                 -EINVAL);
	/* The marker must not be the lock key itself. */
	ck_assert_int_eq(lk_etcd_json_txn_delete(KEY, strlen(KEY), KEY, strlen(KEY), 5, 0, &s),
	                 -EINVAL);
}
END_TEST

START_TEST(test_range_and_watch_bodies)
{
	char *s;

	ck_assert_int_eq(lk_etcd_json_range(KEY, strlen(KEY), &s), 0);
	ck_assert_str_eq(s, "{\"key\":\"" KEY_B64 "\"}");
	free(s);
	ck_assert_int_eq(lk_etcd_json_watch_create(KEY, strlen(KEY), 0, &s), 0);
	ck_assert_str_eq(s, "{\"create_request\":{\"key\":\"" KEY_B64 "\"}}");
	free(s);
	ck_assert_int_eq(lk_etcd_json_watch_create(KEY, strlen(KEY), 99, &s), 0);
	ck_assert_ptr_nonnull(strstr(s, "\"start_revision\":\"99\""));
	ck_assert_ptr_nonnull(strstr(s, "\"key\":\"" KEY_B64 "\""));
	free(s);
	ck_assert_int_eq(lk_etcd_json_watch_create(KEY, strlen(KEY), -1, &s), -EINVAL);
	ck_assert_int_eq(lk_etcd_json_range(KEY, 0, &s), -EINVAL);
}
END_TEST

START_TEST(test_authenticate_body_escapes)
{
	static const char pw[] = "p\"w\\d\n\x01\xc3\xa9";
	json_t *j;
	char *s;

	ck_assert_int_eq(lk_etcd_json_authenticate("root", pw, sizeof(pw) - 1, &s), 0);
	j = load(s);
	ck_assert_str_eq(str_at(j, "name"), "root");
	ck_assert_str_eq(str_at(j, "password"), pw);
	ck_assert_ptr_null(strchr(s, '\n'));
	sodium_memzero(s, strlen(s));
	free(s);
	json_decref(j);

	ck_assert_int_eq(lk_etcd_json_authenticate("", "pw", 2, &s), -EINVAL);
	ck_assert_int_eq(lk_etcd_json_authenticate("root", "", 0, &s), -EINVAL);
	ck_assert_int_eq(lk_etcd_json_authenticate(NULL, "pw", 2, &s), -EINVAL);
	ck_assert_int_eq(lk_etcd_json_authenticate("root", "pw", LK_ETCD_JSON_MAX_PASSWORD + 1, &s),
	                 -EINVAL);
}
END_TEST

/* ---- parsers: real answers and omitted fields ------------------------------------------ */

START_TEST(test_parse_grant)
{
	static const char body[] = "{" HEADER ",\"ID\":\"7587879341806712845\",\"TTL\":\"2\"}";
	struct lk_etcd_grant g = { 0 };

	ck_assert_int_eq(lk_etcd_json_parse_grant(body, strlen(body), &g, err, sizeof(err)), 0);
	ck_assert_int_eq(g.id, 7587879341806712845LL);
	ck_assert_int_eq(g.ttl, 2);
	/* Plain JSON integers are accepted too. */
	ck_assert_int_eq(lk_etcd_json_parse_grant("{\"ID\":5,\"TTL\":3}", strlen("{\"ID\":5,\"TTL\":3}"), &g, err, sizeof(err)), 0);
	ck_assert_int_eq(g.id, 5);
	ck_assert_int_eq(g.ttl, 3);
}
END_TEST

START_TEST(test_parse_grant_requires_id_and_ttl)
{
	struct lk_etcd_grant g = { .id = 99, .ttl = 99 };
	const char *b;

	b = "{" HEADER ",\"TTL\":\"2\"}";
	ck_assert_int_eq(lk_etcd_json_parse_grant(b, strlen(b), &g, err, sizeof(err)), -EINVAL);
	ck_assert_str_eq(err, "lease grant without an ID");
	b = "{" HEADER ",\"ID\":\"5\"}";
	ck_assert_int_eq(lk_etcd_json_parse_grant(b, strlen(b), &g, err, sizeof(err)), -EINVAL);
	ck_assert_str_eq(err, "lease grant without a TTL");
	/* A grant that failed says so in "error" (a string). */
	b = "{" HEADER ",\"ID\":\"5\",\"TTL\":\"2\",\"error\":\"lease already exists\"}";
	ck_assert_int_eq(lk_etcd_json_parse_grant(b, strlen(b), &g, err, sizeof(err)), -EPROTO);
	ck_assert_int_eq(g.id, 99); /* untouched on failure */
}
END_TEST

START_TEST(test_parse_keepalive_without_ttl_is_zero)
{
	static const char alive[] = "{\"result\":{" HEADER ",\"ID\":\"42\",\"TTL\":\"10\"}}";
	static const char dead[] = "{\"result\":{" HEADER ",\"ID\":\"42\"}}";
	struct lk_etcd_keepalive ka;

	ck_assert_int_eq(lk_etcd_json_parse_keepalive(alive, strlen(alive), &ka, err, sizeof(err)), 0);
	ck_assert_int_eq(ka.id, 42);
	ck_assert_int_eq(ka.ttl, 10);
	ck_assert_int_eq(lk_etcd_json_parse_keepalive(dead, strlen(dead), &ka, err, sizeof(err)), 0);
	ck_assert_int_eq(ka.id, 42);
	ck_assert_int_eq(ka.ttl, 0);
	ck_assert_int_eq(lk_etcd_json_parse_keepalive("{\"result\":{}}", strlen("{\"result\":{}}"), &ka, err, sizeof(err)), 0);
	ck_assert_int_eq(ka.ttl, 0);
	ck_assert_int_eq(lk_etcd_json_parse_keepalive("{" HEADER "}", strlen("{" HEADER "}"), &ka,
	                                              err, sizeof(err)), -EINVAL);
	ck_assert_str_eq(err, "keepalive response without a result");
}
END_TEST

START_TEST(test_absurd_ttls_are_garbage)
{
	/* Trusted, these would overflow the nanosecond arithmetic of validity (I1). */
	static const char grant[] = "{" HEADER ",\"ID\":\"5\",\"TTL\":\"9223372036854775807\"}";
	static const char ka[] = "{\"result\":{" HEADER ",\"ID\":\"5\",\"TTL\":\"31708800\"}}";
	static const char year[] = "{" HEADER ",\"ID\":\"5\",\"TTL\":\"31622400\"}";
	struct lk_etcd_grant g = { .id = 99 };
	struct lk_etcd_keepalive k = { .id = 99 };

	ck_assert_int_eq(lk_etcd_json_parse_grant(grant, strlen(grant), &g, err, sizeof(err)),
	                 -EINVAL);
	ck_assert_str_eq(err, "lease grant with an absurd TTL");
	ck_assert_int_eq(g.id, 99);
	ck_assert_int_eq(lk_etcd_json_parse_keepalive(ka, strlen(ka), &k, err, sizeof(err)),
	                 -EINVAL);
	ck_assert_str_eq(err, "keepalive with an absurd TTL");
	ck_assert_int_eq(k.id, 99);
	/* A year is the most we believe, and still fine. */
	ck_assert_int_eq(lk_etcd_json_parse_grant(year, strlen(year), &g, err, sizeof(err)), 0);
	ck_assert_int_eq(g.ttl, LK_ETCD_JSON_MAX_TTL);
}
END_TEST

START_TEST(test_parse_range)
{
	static const char found[] =
		"{" HEADER ",\"kvs\":[{\"key\":\"" KEY_B64 "\",\"create_revision\":\"5\","
		"\"mod_revision\":\"6\",\"version\":\"2\",\"value\":\"YWxwaGE=\","
		"\"lease\":\"7587879341806712845\"}],\"count\":\"1\"}";
	static const char none[] = "{" HEADER "}";
	static const char empty[] = "{" HEADER ",\"kvs\":[]}";
	struct lk_etcd_range r;

	ck_assert_int_eq(lk_etcd_json_parse_range(found, strlen(found), KEY, strlen(KEY), &r, err,
	                                          sizeof(err)), 0);
	ck_assert(r.found);
	ck_assert_int_eq(r.revision, 7);
	ck_assert_int_eq(r.kv.create_revision, 5);
	ck_assert_int_eq(r.kv.mod_revision, 6);
	ck_assert_int_eq(r.kv.lease, 7587879341806712845LL);
	ck_assert_int_eq(r.kv.value_len, 5);
	ck_assert_str_eq(r.kv.value, "alpha");
	ck_assert(!r.kv.value_too_long);

	/* No match: no count, no kvs. */
	ck_assert_int_eq(lk_etcd_json_parse_range(none, strlen(none), KEY, strlen(KEY), &r, err,
	                                          sizeof(err)), 0);
	ck_assert(!r.found);
	ck_assert_int_eq(lk_etcd_json_parse_range(empty, strlen(empty), KEY, strlen(KEY), &r, err,
	                                          sizeof(err)), 0);
	ck_assert(!r.found);
}
END_TEST

START_TEST(test_parse_range_omitted_kv_fields)
{
	/* A key without lease or value: both omitted. */
	static const char body[] =
		"{" HEADER ",\"kvs\":[{\"key\":\"" KEY_B64 "\",\"create_revision\":\"5\","
		"\"mod_revision\":\"5\",\"version\":\"1\"}]}";
	struct lk_etcd_range r;

	ck_assert_int_eq(lk_etcd_json_parse_range(body, strlen(body), KEY, strlen(KEY), &r, err,
	                                          sizeof(err)), 0);
	ck_assert(r.found);
	ck_assert_int_eq(r.kv.lease, 0);
	ck_assert_int_eq(r.kv.value_len, 0);
	ck_assert_str_eq(r.kv.value, "");
}
END_TEST

START_TEST(test_parse_range_value_over_cap_is_flagged)
{
	size_t n = LK_ETCD_JSON_MAX_VALUE + 1;
	char *value = malloc(n), *b64, *body;
	size_t cap = sodium_base64_ENCODED_LEN(n, sodium_base64_VARIANT_ORIGINAL);
	struct lk_etcd_range r;

	memset(value, 'v', n);
	b64 = malloc(cap);
	sodium_bin2base64(b64, cap, (unsigned char *)value, n, sodium_base64_VARIANT_ORIGINAL);
	ck_assert_int_ge(asprintf(&body, "{" HEADER ",\"kvs\":[{\"key\":\"" KEY_B64 "\","
	                          "\"create_revision\":\"5\",\"value\":\"%s\"}]}", b64), 0);
	ck_assert_int_eq(lk_etcd_json_parse_range(body, strlen(body), KEY, strlen(KEY), &r, err,
	                                          sizeof(err)), 0);
	ck_assert(r.found);
	ck_assert(r.kv.value_too_long);
	ck_assert_int_eq(r.kv.value_len, 0);
	free(body);

	/* Exactly the cap fits. */
	sodium_bin2base64(b64, cap, (unsigned char *)value, n - 1, sodium_base64_VARIANT_ORIGINAL);
	ck_assert_int_ge(asprintf(&body, "{" HEADER ",\"kvs\":[{\"key\":\"" KEY_B64 "\","
	                          "\"create_revision\":\"5\",\"value\":\"%s\"}]}", b64), 0);
	ck_assert_msg(lk_etcd_json_parse_range(body, strlen(body), KEY, strlen(KEY), &r, err,
	                                       sizeof(err)) == 0, "%s", err);
	ck_assert(!r.kv.value_too_long);
	ck_assert_int_eq(r.kv.value_len, n - 1);
	free(body);
	free(b64);
	free(value);
}
END_TEST

START_TEST(test_parse_txn_success_and_failure)
{
	static const char ok[] =
		"{" HEADER ",\"succeeded\":true,\"responses\":[{\"response_put\":{\"header\":"
		"{\"revision\":\"2\"}}},{\"response_range\":{\"header\":{\"revision\":\"2\"},"
		"\"kvs\":[{\"key\":\"" KEY_B64 "\",\"create_revision\":\"2\",\"mod_revision\":\"2\","
		"\"version\":\"1\",\"value\":\"YWxwaGE=\",\"lease\":\"99\"}],\"count\":\"1\"}}]}";
	/* A failed txn has no "succeeded" at all. */
	static const char held[] =
		"{" HEADER ",\"responses\":[{\"response_range\":{\"header\":{\"revision\":\"2\"},"
		"\"kvs\":[{\"key\":\"" KEY_B64 "\",\"create_revision\":\"2\",\"mod_revision\":\"2\","
		"\"version\":\"1\",\"value\":\"YmV0YQ==\",\"lease\":\"98\"}],\"count\":\"1\"}}]}";
	static const char deleted[] =
		"{" HEADER ",\"succeeded\":true,\"responses\":[{\"response_delete_range\":"
		"{\"header\":{\"revision\":\"3\"},\"deleted\":\"1\"}}]}";
	static const char not_ours[] = "{" HEADER "}";
	struct lk_etcd_txn t;

	ck_assert_int_eq(lk_etcd_json_parse_txn(ok, strlen(ok), KEY, strlen(KEY), &t, err,
	                                        sizeof(err)), 0);
	ck_assert(t.succeeded);
	ck_assert(t.found);
	ck_assert_int_eq(t.kv.create_revision, 2);
	ck_assert_int_eq(t.kv.lease, 99);
	ck_assert_str_eq(t.kv.value, "alpha");

	ck_assert_int_eq(lk_etcd_json_parse_txn(held, strlen(held), KEY, strlen(KEY), &t, err,
	                                        sizeof(err)), 0);
	ck_assert(!t.succeeded);
	ck_assert(t.found);
	ck_assert_str_eq(t.kv.value, "beta");

	ck_assert_int_eq(lk_etcd_json_parse_txn(deleted, strlen(deleted), KEY, strlen(KEY), &t, err,
	                                        sizeof(err)), 0);
	ck_assert(t.succeeded);
	ck_assert(!t.found);
	ck_assert_int_eq(lk_etcd_json_parse_txn(not_ours, strlen(not_ours), KEY, strlen(KEY), &t,
	                                        err, sizeof(err)), 0);
	ck_assert(!t.succeeded);
	ck_assert(!t.found);
}
END_TEST

/* The acquire txn, as etcd 3.4's gateway answered it (a nested txn seeded the fence). */
START_TEST(test_parse_acquire_key_and_fence)
{
	static const char ok[] =
		"{" HEADER ",\"succeeded\":true,\"responses\":[{\"response_txn\":{\"header\":{},"
		"\"succeeded\":true,\"responses\":[{\"response_put\":{\"header\":{\"revision\":\"5\"}}}]}},"
		"{\"response_put\":{\"header\":{\"revision\":\"5\"}}},"
		"{\"response_range\":{\"header\":{\"revision\":\"5\"},\"kvs\":[{\"key\":\"" KEY_B64 "\","
		"\"create_revision\":\"5\",\"mod_revision\":\"5\",\"version\":\"1\",\"value\":\"YWxwaGE=\","
		"\"lease\":\"99\"}],\"count\":\"1\"}},"
		"{\"response_range\":{\"header\":{\"revision\":\"5\"},\"kvs\":[{\"key\":\"" FKEY_B64 "\","
		"\"create_revision\":\"5\",\"mod_revision\":\"5\",\"version\":\"1\","
		"\"value\":\"MTc2NTAwMDAwMDEyMzQ1Ng==\"}],\"count\":\"1\"}}]}";
	/* Failed: the key is held, the fence missing (an empty range has no kvs at all). */
	static const char held[] =
		"{" HEADER ",\"responses\":[{\"response_range\":{\"header\":{\"revision\":\"7\"},"
		"\"kvs\":[{\"key\":\"" KEY_B64 "\",\"create_revision\":\"2\",\"mod_revision\":\"2\","
		"\"version\":\"1\",\"value\":\"YmV0YQ==\",\"lease\":\"98\"}],\"count\":\"1\"}},"
		"{\"response_range\":{\"header\":{\"revision\":\"7\"}}}]}";
	static const char bad_fence[] =
		"{" HEADER ",\"responses\":[{\"response_range\":{\"header\":{\"revision\":\"7\"}}},"
		"{\"response_range\":{\"header\":{\"revision\":\"7\"},\"kvs\":[{\"key\":\"" FKEY_B64 "\","
		"\"create_revision\":\"5\",\"mod_revision\":\"5\",\"version\":\"1\","
		"\"value\":\"MTJhYg==\"}],\"count\":\"1\"}}]}";
	static const char one_range[] =
		"{" HEADER ",\"responses\":[{\"response_range\":{\"header\":{\"revision\":\"7\"}}}]}";
	/* The fence range must be about the fence key. */
	static const char swapped[] =
		"{" HEADER ",\"responses\":[{\"response_range\":{\"header\":{\"revision\":\"7\"}}},"
		"{\"response_range\":{\"header\":{\"revision\":\"7\"},\"kvs\":[{\"key\":\"" KEY_B64 "\","
		"\"create_revision\":\"5\",\"value\":\"MQ==\"}],\"count\":\"1\"}}]}";
	struct lk_etcd_acquired t;

	ck_assert_int_eq(lk_etcd_json_parse_acquire(ok, strlen(ok), KEY, strlen(KEY), FKEY,
	                                            strlen(FKEY), &t, err, sizeof(err)), 0);
	ck_assert(t.succeeded);
	ck_assert(t.found);
	ck_assert_int_eq(t.kv.create_revision, 5);
	ck_assert_int_eq(t.kv.lease, 99);
	ck_assert_str_eq(t.kv.value, "alpha");
	ck_assert(t.fence_found);
	ck_assert(!t.fence_bad);
	ck_assert_int_eq(t.fence, 1765000000123456LL);
	ck_assert_int_eq(t.revision, 7);
	ck_assert(t.cluster_id == 14841639068965178418ULL);

	ck_assert_int_eq(lk_etcd_json_parse_acquire(held, strlen(held), KEY, strlen(KEY), FKEY,
	                                            strlen(FKEY), &t, err, sizeof(err)), 0);
	ck_assert(!t.succeeded);
	ck_assert(t.found);
	ck_assert_str_eq(t.kv.value, "beta");
	ck_assert(!t.fence_found);

	ck_assert_int_eq(lk_etcd_json_parse_acquire(bad_fence, strlen(bad_fence), KEY, strlen(KEY),
	                                            FKEY, strlen(FKEY), &t, err, sizeof(err)), 0);
	ck_assert(!t.found);
	ck_assert(t.fence_found);
	ck_assert(t.fence_bad);

	ck_assert_int_eq(lk_etcd_json_parse_acquire(one_range, strlen(one_range), KEY, strlen(KEY),
	                                            FKEY, strlen(FKEY), &t, err, sizeof(err)),
	                 -EINVAL);
	ck_assert_int_eq(lk_etcd_json_parse_acquire(swapped, strlen(swapped), KEY, strlen(KEY),
	                                            FKEY, strlen(FKEY), &t, err, sizeof(err)),
	                 -EINVAL);
}
END_TEST

START_TEST(test_txn_peek_body)
{
	json_t *j;
	char *s;

	ck_assert_int_eq(lk_etcd_json_txn_peek(KEY, strlen(KEY), TKEY, strlen(TKEY), &s), 0);
	j = load(s);
	free(s);
	/* No compare: a read-only txn, which etcd serves without a raft write. */
	ck_assert_ptr_null(json_object_get(j, "compare"));
	ck_assert_str_eq(str_at(j, "success.0.request_range.key"), KEY_B64);
	ck_assert_str_eq(str_at(j, "success.1.request_range.key"), TKEY_B64);
	ck_assert_int_eq(json_array_size(json_object_get(j, "success")), 2);
	json_decref(j);
	s = NULL;
	ck_assert_int_eq(lk_etcd_json_txn_peek(KEY, strlen(KEY), KEY, strlen(KEY), &s), -EINVAL);
	ck_assert_int_eq(lk_etcd_json_txn_peek(KEY, 0, TKEY, strlen(TKEY), &s), -EINVAL);
	ck_assert_int_eq(lk_etcd_json_txn_peek(KEY, strlen(KEY), NULL, 3, &s), -EINVAL);
	ck_assert_ptr_null(s);
}
END_TEST

#define PEEK_RANGE(kvs) "{\"response_range\":{\"header\":{\"revision\":\"9\"}" kvs "}}"
#define PEEK_KV(k64, v64) ",\"kvs\":[{\"key\":\"" k64 "\",\"create_revision\":\"4\"," \
	"\"mod_revision\":\"6\",\"version\":\"2\",\"value\":\"" v64 "\"}],\"count\":\"1\""

START_TEST(test_parse_peek_key_and_marker)
{
	static const char held_gone[] = "{" HEADER ",\"succeeded\":true,\"responses\":["
		PEEK_RANGE("") "," PEEK_RANGE(PEEK_KV(TKEY_B64, "aGVsZA==")) "]}";
	static const char released[] = "{" HEADER ",\"succeeded\":true,\"responses\":["
		PEEK_RANGE("") "," PEEK_RANGE(PEEK_KV(TKEY_B64, "cmVsZWFzZWQ=")) "]}";
	static const char held_by_beta[] = "{" HEADER ",\"succeeded\":true,\"responses\":["
		PEEK_RANGE(PEEK_KV(KEY_B64, "YmV0YQ==")) "," PEEK_RANGE(PEEK_KV(TKEY_B64, "aGVsZA=="))
		"]}";
	static const char no_marker[] = "{" HEADER ",\"succeeded\":true,\"responses\":["
		PEEK_RANGE("") "," PEEK_RANGE("") "]}";
	/* Garbage: one range; the marker's range about another key; not succeeded. */
	static const char one_range[] = "{" HEADER ",\"succeeded\":true,\"responses\":["
		PEEK_RANGE("") "]}";
	static const char swapped[] = "{" HEADER ",\"succeeded\":true,\"responses\":["
		PEEK_RANGE("") "," PEEK_RANGE(PEEK_KV(KEY_B64, "aGVsZA==")) "]}";
	static const char failed[] = "{" HEADER ",\"responses\":[" PEEK_RANGE("") ","
		PEEK_RANGE("") "]}";
	struct lk_etcd_peek p;

#define PEEK(body) lk_etcd_json_parse_peek(body, strlen(body), KEY, strlen(KEY), TKEY, \
	                                   strlen(TKEY), &p, err, sizeof(err))
	ck_assert_int_eq(PEEK(held_gone), 0);
	ck_assert(!p.found);
	ck_assert(p.tenure_held);
	ck_assert_int_eq(p.tenure_mod_revision, 6);
	ck_assert_int_eq(p.revision, 7);
	ck_assert(p.cluster_id == 14841639068965178418ULL);
	ck_assert_int_eq(PEEK(released), 0);
	ck_assert(!p.found);
	ck_assert(!p.tenure_held);
	ck_assert_int_eq(p.tenure_mod_revision, 6);
	ck_assert_int_eq(PEEK(held_by_beta), 0);
	ck_assert(p.found);
	ck_assert_str_eq(p.kv.value, "beta");
	ck_assert(p.tenure_held);
	ck_assert_int_eq(PEEK(no_marker), 0);
	ck_assert(!p.found);
	ck_assert(!p.tenure_held);
	ck_assert_int_eq(p.tenure_mod_revision, 0);
	ck_assert_int_eq(PEEK(one_range), -EINVAL);
	ck_assert_int_eq(PEEK(swapped), -EINVAL);
	ck_assert_int_eq(PEEK(failed), -EINVAL);
#undef PEEK
}
END_TEST

/* Every header's cluster id, a uint64 that does not fit an int64, and its revision. */
START_TEST(test_headers_carry_cluster_id)
{
	static const char range[] = "{" HEADER "}";
	static const char grant[] = "{" HEADER ",\"ID\":\"5\",\"TTL\":\"3\"}";
	static const char ka[] = "{\"result\":{" HEADER ",\"ID\":\"5\",\"TTL\":\"3\"}}";
	static const char huge[] = "{\"header\":{\"cluster_id\":\"18446744073709551616\","
	                           "\"revision\":\"1\"}}";
	static const char word[] = "{\"header\":{\"cluster_id\":\"x1\",\"revision\":\"1\"}}";
	struct lk_etcd_range r;
	struct lk_etcd_grant g;
	struct lk_etcd_keepalive k;

	ck_assert_int_eq(lk_etcd_json_parse_range(range, strlen(range), KEY, strlen(KEY), &r, err,
	                                          sizeof(err)), 0);
	ck_assert(r.cluster_id == 14841639068965178418ULL);
	ck_assert_int_eq(r.revision, 7);
	ck_assert_int_eq(lk_etcd_json_parse_grant(grant, strlen(grant), &g, err, sizeof(err)), 0);
	ck_assert(g.cluster_id == 14841639068965178418ULL);
	ck_assert_int_eq(g.revision, 7);
	ck_assert_int_eq(lk_etcd_json_parse_keepalive(ka, strlen(ka), &k, err, sizeof(err)), 0);
	ck_assert(k.cluster_id == 14841639068965178418ULL);
	ck_assert_int_eq(lk_etcd_json_parse_range(huge, strlen(huge), KEY, strlen(KEY), &r, err,
	                                          sizeof(err)), -EINVAL);
	ck_assert_int_eq(lk_etcd_json_parse_range(word, strlen(word), KEY, strlen(KEY), &r, err,
	                                          sizeof(err)), -EINVAL);
	ck_assert_ptr_nonnull(strstr(err, "cluster_id"));
}
END_TEST

START_TEST(test_parse_auth)
{
	static const char body[] = "{" HEADER ",\"token\":\"kzUEGHdUibrwbOkl.22\"}";
	struct lk_etcd_auth a;
	char big[LK_ETCD_JSON_MAX_TOKEN + 64];
	const char *b;

	ck_assert_int_eq(lk_etcd_json_parse_auth(body, strlen(body), &a, err, sizeof(err)), 0);
	ck_assert_str_eq(a.token, "kzUEGHdUibrwbOkl.22");
	b = "{" HEADER "}";
	ck_assert_int_eq(lk_etcd_json_parse_auth(b, strlen(b), &a, err, sizeof(err)), -EINVAL);
	/* A token goes into a header line: no CR/LF, no spaces, nothing unprintable. */
	b = "{\"token\":\"abc\\r\\nX-Evil: 1\"}";
	ck_assert_int_eq(lk_etcd_json_parse_auth(b, strlen(b), &a, err, sizeof(err)), -EINVAL);
	b = "{\"token\":\"a b\"}";
	ck_assert_int_eq(lk_etcd_json_parse_auth(b, strlen(b), &a, err, sizeof(err)), -EINVAL);
	b = "{\"token\":\"\"}";
	ck_assert_int_eq(lk_etcd_json_parse_auth(b, strlen(b), &a, err, sizeof(err)), -EINVAL);
	b = "{\"token\":7}";
	ck_assert_int_eq(lk_etcd_json_parse_auth(b, strlen(b), &a, err, sizeof(err)), -EINVAL);
	snprintf(big, sizeof(big), "{\"token\":\"%0*d\"}", LK_ETCD_JSON_MAX_TOKEN + 1, 0);
	ck_assert_int_eq(lk_etcd_json_parse_auth(big, strlen(big), &a, err, sizeof(err)), -EINVAL);
}
END_TEST

START_TEST(test_parse_watch_lines)
{
	static const char created[] = "{\"result\":{" HEADER ",\"created\":true}}";
	static const char put[] =
		"{\"result\":{" HEADER ",\"events\":[{\"kv\":{\"key\":\"" KEY_B64 "\","
		"\"create_revision\":\"4\",\"mod_revision\":\"4\",\"version\":\"1\","
		"\"value\":\"YWxwaGE=\"}}]}}";
	static const char del[] =
		"{\"result\":{" HEADER ",\"events\":[{\"kv\":{\"key\":\"" KEY_B64 "\","
		"\"create_revision\":\"4\",\"mod_revision\":\"4\",\"version\":\"1\"}},"
		"{\"type\":\"DELETE\",\"kv\":{\"key\":\"" KEY_B64 "\",\"mod_revision\":\"9\"}}]}}";
	static const char other[] =
		"{\"result\":{" HEADER ",\"events\":[{\"type\":\"DELETE\",\"kv\":"
		"{\"key\":\"b3RoZXI=\",\"mod_revision\":\"11\"}}]}}";
	static const char canceled[] =
		"{\"result\":{\"header\":{\"raft_term\":\"2\"},\"canceled\":true,"
		"\"compact_revision\":\"4\"}}";
	static const char unauth[] =
		"{\"result\":{" HEADER ",\"watch_id\":\"-1\",\"created\":true,\"canceled\":true,"
		"\"cancel_reason\":\"rpc error: code = Unauthenticated desc = etcdserver: invalid "
		"auth token\"}}";
	struct lk_etcd_watch w;

	ck_assert_int_eq(lk_etcd_json_parse_watch(created, strlen(created), KEY, strlen(KEY), &w,
	                                          err, sizeof(err)), 0);
	ck_assert(w.created);
	ck_assert(!w.canceled);
	ck_assert_int_eq(w.revision, 7);
	ck_assert_int_eq(w.n_events, 0);

	/* A PUT has no "type". */
	ck_assert_int_eq(lk_etcd_json_parse_watch(put, strlen(put), KEY, strlen(KEY), &w, err,
	                                          sizeof(err)), 0);
	ck_assert(!w.created);
	ck_assert_int_eq(w.n_events, 1);
	ck_assert_int_eq(w.n_deletes, 0);
	ck_assert_int_eq(w.max_mod_revision, 4);

	ck_assert_int_eq(lk_etcd_json_parse_watch(del, strlen(del), KEY, strlen(KEY), &w, err,
	                                          sizeof(err)), 0);
	ck_assert_int_eq(w.n_events, 2);
	ck_assert_int_eq(w.n_deletes, 1);
	ck_assert_int_eq(w.max_mod_revision, 9);

	ck_assert_int_eq(lk_etcd_json_parse_watch(other, strlen(other), KEY, strlen(KEY), &w, err,
	                                          sizeof(err)), 0);
	ck_assert_int_eq(w.n_events, 1);
	ck_assert_int_eq(w.n_deletes, 0);

	ck_assert_int_eq(lk_etcd_json_parse_watch(canceled, strlen(canceled), KEY, strlen(KEY), &w,
	                                          err, sizeof(err)), 0);
	ck_assert(w.canceled);
	ck_assert_int_eq(w.compact_revision, 4);
	ck_assert_int_eq(w.revision, 0);
	ck_assert_str_eq(w.cancel_reason, "");

	ck_assert_int_eq(lk_etcd_json_parse_watch(unauth, strlen(unauth), KEY, strlen(KEY), &w, err,
	                                          sizeof(err)), 0);
	ck_assert(w.created && w.canceled);
	ck_assert_ptr_nonnull(strstr(w.cancel_reason, "invalid auth token"));
}
END_TEST

START_TEST(test_parse_watch_event_types)
{
	struct lk_etcd_watch w;
	const char *b;

	b = "{\"result\":{\"events\":[{\"type\":\"PUT\",\"kv\":{\"key\":\"" KEY_B64 "\"}},"
	    "{\"type\":1,\"kv\":{\"key\":\"" KEY_B64 "\"}}]}}";
	ck_assert_int_eq(lk_etcd_json_parse_watch(b, strlen(b), KEY, strlen(KEY), &w, err,
	                                          sizeof(err)), 0);
	ck_assert_int_eq(w.n_events, 2);
	ck_assert_int_eq(w.n_deletes, 1);
	b = "{\"result\":{\"events\":[{\"type\":\"EXPLODE\",\"kv\":{\"key\":\"" KEY_B64 "\"}}]}}";
	ck_assert_int_eq(lk_etcd_json_parse_watch(b, strlen(b), KEY, strlen(KEY), &w, err,
	                                          sizeof(err)), -EINVAL);
	ck_assert_str_eq(err, "unknown watch event type");
	b = "{\"result\":{\"events\":{}}}";
	ck_assert_int_eq(lk_etcd_json_parse_watch(b, strlen(b), KEY, strlen(KEY), &w, err,
	                                          sizeof(err)), -EINVAL);
	b = "{\"result\":{\"events\":[5]}}";
	ck_assert_int_eq(lk_etcd_json_parse_watch(b, strlen(b), KEY, strlen(KEY), &w, err,
	                                          sizeof(err)), -EINVAL);
	b = "{\"created\":true}";
	ck_assert_int_eq(lk_etcd_json_parse_watch(b, strlen(b), KEY, strlen(KEY), &w, err,
	                                          sizeof(err)), -EINVAL);
}
END_TEST

START_TEST(test_parse_status)
{
	static const char body[] = "{" HEADER ",\"version\":\"3.4.23\","
	                           "\"leader\":\"13668033151171901709\"}";
	static const char electing[] = "{" HEADER ",\"version\":\"3.4.23\"}";
	struct lk_etcd_status st;
	const char *b;

	ck_assert_int_eq(lk_etcd_json_parse_status(body, strlen(body), &st, err, sizeof(err)), 0);
	ck_assert_int_eq(st.revision, 7);
	ck_assert(st.has_leader); /* a uint64 beyond INT64_MAX is fine */
	/* No leader: the field is omitted. */
	ck_assert_int_eq(lk_etcd_json_parse_status(electing, strlen(electing), &st, err,
	                                           sizeof(err)), 0);
	ck_assert(!st.has_leader);
	b = "{" HEADER ",\"leader\":\"0\"}";
	ck_assert_int_eq(lk_etcd_json_parse_status(b, strlen(b), &st, err, sizeof(err)), 0);
	ck_assert(!st.has_leader);
	b = "{" HEADER ",\"leader\":\"x1\"}";
	ck_assert_int_eq(lk_etcd_json_parse_status(b, strlen(b), &st, err, sizeof(err)), -EINVAL);
	b = "{" HEADER ",\"leader\":[]}";
	ck_assert_int_eq(lk_etcd_json_parse_status(b, strlen(b), &st, err, sizeof(err)), -EINVAL);
	ck_assert_int_eq(lk_etcd_json_parse_status("{}", strlen("{}"), &st, err, sizeof(err)),
	                 -EINVAL);
	ck_assert_str_eq(err, "response without a header");
}
END_TEST

START_TEST(test_parse_error_bodies)
{
	static const char plain[] =
		"{\"error\":\"etcdserver: invalid auth token\",\"message\":\"etcdserver: invalid auth "
		"token\",\"code\":16}";
	static const char stream[] =
		"{\"error\":{\"grpc_code\":14,\"http_code\":503,\"message\":\"etcdserver: no leader\","
		"\"http_status\":\"Service Unavailable\"}}";
	static const char nasty[] = "{\"error\":\"x\",\"message\":\"line1\\nline2\\u0007\",\"code\":2}";
	struct lk_etcd_error e;
	struct lk_etcd_grant g;

	ck_assert_int_eq(lk_etcd_json_parse_error(plain, strlen(plain), &e), 0);
	ck_assert_int_eq(e.code, 16);
	ck_assert_str_eq(e.message, "etcdserver: invalid auth token");
	ck_assert_int_eq(lk_etcd_json_parse_error(stream, strlen(stream), &e), 0);
	ck_assert_int_eq(e.code, 14);
	ck_assert_str_eq(e.message, "etcdserver: no leader");
	/* Server text comes back printable. */
	ck_assert_int_eq(lk_etcd_json_parse_error(nasty, strlen(nasty), &e), 0);
	ck_assert_str_eq(e.message, "line1?line2?");
	ck_assert_int_eq(lk_etcd_json_parse_error("{\"error\":\"only\"}", strlen("{\"error\":\"only\"}"), &e), 0);
	ck_assert_str_eq(e.message, "only");
	ck_assert_int_eq(e.code, 0);

	/* Any parser sends an error body to parse_error. */
	ck_assert_int_eq(lk_etcd_json_parse_grant(plain, strlen(plain), &g, err, sizeof(err)),
	                 -EPROTO);
	ck_assert_int_eq(lk_etcd_json_parse_keepalive(stream, strlen(stream), NULL, err,
	                                              sizeof(err)), -EPROTO);

	ck_assert_int_eq(lk_etcd_json_parse_error("{\"ID\":\"5\"}", strlen("{\"ID\":\"5\"}"), &e), -EINVAL);
	ck_assert_int_eq(lk_etcd_json_parse_error("{\"error\":5}", strlen("{\"error\":5}"), &e), -EINVAL);
	/* ... and so is it for the decoders: -EPROTO always means parse_error() can read it. */
	ck_assert_int_eq(lk_etcd_json_parse_grant("{\"error\":5}", strlen("{\"error\":5}"), &g, err,
	                                          sizeof(err)), -EINVAL);
	ck_assert_ptr_nonnull(strstr(err, "neither a string nor an object"));
	ck_assert_int_eq(lk_etcd_json_parse_error("nope", strlen("nope"), &e), -EINVAL);
	ck_assert_int_eq(lk_etcd_json_parse_error(NULL, 0, &e), -EINVAL);
}
END_TEST

/* ---- garbage ------------------------------------------------------------------------- */

START_TEST(test_garbage_is_einval_with_a_message)
{
	static const char *const bodies[] = {
		"", "not json", "[1,2]", "\"str\"", "42", "null", "{", "{\"ID\":", "{}{}",
		"{\"ID\":\"5\",\"ID\":\"6\",\"TTL\":\"2\"}",
	};
	struct lk_etcd_grant g;

	for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
		err[0] = '\0';
		ck_assert_msg(lk_etcd_json_parse_grant(bodies[i], strlen(bodies[i]), &g, err,
		                                       sizeof(err)) == -EINVAL, "accepted %s", bodies[i]);
		ck_assert_msg(err[0], "no message for %s", bodies[i]);
	}
	ck_assert_int_eq(lk_etcd_json_parse_grant(NULL, 0, &g, err, sizeof(err)), -EINVAL);
	ck_assert_str_eq(err, "empty response");
	/* No message buffer is fine too. */
	ck_assert_int_eq(lk_etcd_json_parse_grant("x", strlen("x"), &g, NULL, 0), -EINVAL);
}
END_TEST

START_TEST(test_garbage_wrong_types)
{
	static const char *const grants[] = {
		"{\"ID\":true,\"TTL\":\"2\"}", "{\"ID\":\"5\",\"TTL\":[]}", "{\"ID\":{},\"TTL\":\"2\"}",
		"{\"ID\":1.5,\"TTL\":\"2\"}", "{\"ID\":\"1.5\",\"TTL\":\"2\"}",
		"{\"ID\":\"0x10\",\"TTL\":\"2\"}", "{\"ID\":\" 5\",\"TTL\":\"2\"}",
		"{\"ID\":\"5 \",\"TTL\":\"2\"}", "{\"ID\":\"\",\"TTL\":\"2\"}",
		"{\"ID\":\"-\",\"TTL\":\"2\"}", "{\"ID\":\"+5\",\"TTL\":\"2\"}",
		"{\"ID\":\"-5\",\"TTL\":\"2\"}", "{\"header\":[],\"ID\":\"5\",\"TTL\":\"2\"}",
	};
	static const char *const txns[] = {
		"{" HEADER ",\"succeeded\":\"yes\"}", "{" HEADER ",\"succeeded\":1}",
		"{" HEADER ",\"responses\":{}}", "{" HEADER ",\"responses\":[7]}",
		"{" HEADER ",\"responses\":[{\"response_range\":[]}]}",
		"{" HEADER ",\"responses\":[{\"response_range\":{\"kvs\":{}}}]}",
		"{" HEADER ",\"responses\":[{\"response_range\":{\"kvs\":[7]}}]}",
		"{\"header\":{\"revision\":\"-3\"}}", "{\"header\":{\"revision\":true}}",
		"{\"succeeded\":true}",
	};
	struct lk_etcd_grant g;
	struct lk_etcd_txn t;

	for (size_t i = 0; i < sizeof(grants) / sizeof(grants[0]); i++)
		ck_assert_msg(lk_etcd_json_parse_grant(grants[i], strlen(grants[i]), &g, err,
		                                       sizeof(err)) == -EINVAL, "accepted %s", grants[i]);
	for (size_t i = 0; i < sizeof(txns) / sizeof(txns[0]); i++)
		ck_assert_msg(lk_etcd_json_parse_txn(txns[i], strlen(txns[i]), KEY, strlen(KEY), &t,
		                                     err, sizeof(err)) == -EINVAL, "accepted %s", txns[i]);
}
END_TEST

START_TEST(test_garbage_bad_keys_and_values)
{
	static const char *const ranges[] = {
		/* another key */
		"{" HEADER ",\"kvs\":[{\"key\":\"b3RoZXI=\",\"create_revision\":\"5\"}]}",
		/* no key at all */
		"{" HEADER ",\"kvs\":[{\"create_revision\":\"5\"}]}",
		/* no create_revision: a forged token of 0 */
		"{" HEADER ",\"kvs\":[{\"key\":\"" KEY_B64 "\"}]}",
		/* bad base64: alphabet, padding, length */
		"{" HEADER ",\"kvs\":[{\"key\":\"" KEY_B64 "\",\"create_revision\":\"5\","
		"\"value\":\"%%%%\"}]}",
		"{" HEADER ",\"kvs\":[{\"key\":\"" KEY_B64 "\",\"create_revision\":\"5\","
		"\"value\":\"YWxwaGE\"}]}",
		"{" HEADER ",\"kvs\":[{\"key\":\"" KEY_B64 "\",\"create_revision\":\"5\","
		"\"value\":\"YWxwaGE=x\"}]}",
		"{" HEADER ",\"kvs\":[{\"key\":\"" KEY_B64 "\",\"create_revision\":\"5\","
		"\"value\":\"YW-w_GE=\"}]}",
		"{" HEADER ",\"kvs\":[{\"key\":\"" KEY_B64 "\",\"create_revision\":\"5\",\"value\":5}]}",
		"{" HEADER ",\"kvs\":[{\"key\":\"bGsvdGVzd\",\"create_revision\":\"5\"}]}",
	};
	struct lk_etcd_range r;

	for (size_t i = 0; i < sizeof(ranges) / sizeof(ranges[0]); i++) {
		err[0] = '\0';
		ck_assert_msg(lk_etcd_json_parse_range(ranges[i], strlen(ranges[i]), KEY, strlen(KEY), &r,
		                                       err, sizeof(err)) == -EINVAL,
		              "accepted %s", ranges[i]);
		ck_assert(err[0]);
	}
	ck_assert_int_eq(lk_etcd_json_parse_range("{}", strlen("{}"), "", 0, &r, err, sizeof(err)), -EINVAL);
}
END_TEST

START_TEST(test_huge_numbers)
{
	struct lk_etcd_grant g;
	struct lk_etcd_keepalive ka;
	const char *b;

	b = "{\"ID\":\"9223372036854775807\",\"TTL\":\"2\"}";
	ck_assert_int_eq(lk_etcd_json_parse_grant(b, strlen(b), &g, err, sizeof(err)), 0);
	ck_assert_int_eq(g.id, INT64_MAX);
	b = "{\"ID\":\"9223372036854775808\",\"TTL\":\"2\"}";
	ck_assert_int_eq(lk_etcd_json_parse_grant(b, strlen(b), &g, err, sizeof(err)), -EINVAL);
	ck_assert_str_eq(err, "field \"ID\" is not a 64-bit integer");
	b = "{\"ID\":\"99999999999999999999\",\"TTL\":\"2\"}";
	ck_assert_int_eq(lk_etcd_json_parse_grant(b, strlen(b), &g, err, sizeof(err)), -EINVAL);
	b = "{\"ID\":\"18446744073709551616\",\"TTL\":\"2\"}";
	ck_assert_int_eq(lk_etcd_json_parse_grant(b, strlen(b), &g, err, sizeof(err)), -EINVAL);
	b = "{\"ID\":\"000000000000000000000001\",\"TTL\":\"2\"}";
	ck_assert_int_eq(lk_etcd_json_parse_grant(b, strlen(b), &g, err, sizeof(err)), -EINVAL);
	/* As JSON numbers: jansson refuses what does not fit, and reals are not integers. */
	b = "{\"ID\":99999999999999999999,\"TTL\":2}";
	ck_assert_int_eq(lk_etcd_json_parse_grant(b, strlen(b), &g, err, sizeof(err)), -EINVAL);
	b = "{\"ID\":1e400,\"TTL\":2}";
	ck_assert_int_eq(lk_etcd_json_parse_grant(b, strlen(b), &g, err, sizeof(err)), -EINVAL);
	b = "{\"ID\":5e3,\"TTL\":2}";
	ck_assert_int_eq(lk_etcd_json_parse_grant(b, strlen(b), &g, err, sizeof(err)), -EINVAL);

	/* A signed field takes the whole int64 range. */
	b = "{\"result\":{\"ID\":\"1\",\"TTL\":\"-9223372036854775808\"}}";
	ck_assert_int_eq(lk_etcd_json_parse_keepalive(b, strlen(b), &ka, err, sizeof(err)), 0);
	ck_assert_int_eq(ka.ttl, INT64_MIN);
	b = "{\"result\":{\"ID\":\"1\",\"TTL\":\"-9223372036854775809\"}}";
	ck_assert_int_eq(lk_etcd_json_parse_keepalive(b, strlen(b), &ka, err, sizeof(err)), -EINVAL);
}
END_TEST

START_TEST(test_body_over_cap_is_refused)
{
	size_t n = LK_ETCD_JSON_MAX_BODY + 1;
	char *body = malloc(n);
	struct lk_etcd_grant g;
	struct lk_etcd_error e;

	memset(body, ' ', n);
	body[0] = '{';
	body[n - 1] = '}';
	ck_assert_int_eq(lk_etcd_json_parse_grant(body, n, &g, err, sizeof(err)), -EINVAL);
	ck_assert_ptr_nonnull(strstr(err, "larger than"));
	ck_assert_int_eq(lk_etcd_json_parse_error(body, n, &e), -EINVAL);
	free(body);
}
END_TEST

/* Every parser on every prefix and on byte-flipped copies of real bodies: each answer is 0,
 * -EINVAL or -EPROTO, and nothing crashes or leaks (ASan checks the rest). */
static void torture(const char *body)
{
	size_t len = strlen(body);
	char *copy = malloc(len + 1);
	struct lk_etcd_range *r = malloc(sizeof(*r));
	struct lk_etcd_txn *t = malloc(sizeof(*t));
	struct lk_etcd_acquired *aq = malloc(sizeof(*aq));
	struct lk_etcd_keepalive ka;
	struct lk_etcd_watch w;
	struct lk_etcd_grant g;
	struct lk_etcd_auth a;
	struct lk_etcd_error e;
	struct lk_etcd_status st;

	for (size_t round = 0; round < len * 4 + len; round++) {
		size_t n = len;
		int rc[9];

		memcpy(copy, body, len + 1);
		if (round < len) {
			n = round; /* truncated */
		} else {
			size_t at = randombytes_uniform((uint32_t)len);

			copy[at] = (char)randombytes_uniform(256);
		}
		rc[0] = lk_etcd_json_parse_grant(copy, n, &g, err, sizeof(err));
		rc[1] = lk_etcd_json_parse_keepalive(copy, n, &ka, err, sizeof(err));
		rc[2] = lk_etcd_json_parse_range(copy, n, KEY, strlen(KEY), r, err, sizeof(err));
		rc[3] = lk_etcd_json_parse_txn(copy, n, KEY, strlen(KEY), t, err, sizeof(err));
		rc[4] = lk_etcd_json_parse_auth(copy, n, &a, err, sizeof(err));
		rc[5] = lk_etcd_json_parse_watch(copy, n, KEY, strlen(KEY), &w, err, sizeof(err));
		rc[6] = lk_etcd_json_parse_status(copy, n, &st, err, sizeof(err));
		rc[7] = lk_etcd_json_parse_error(copy, n, &e);
		rc[8] = lk_etcd_json_parse_acquire(copy, n, KEY, strlen(KEY), FKEY, strlen(FKEY), aq,
		                                   err, sizeof(err));
		for (int i = 0; i < 9; i++)
			ck_assert_msg(rc[i] == 0 || rc[i] == -EINVAL || rc[i] == -EPROTO,
			              "parser %d returned %d", i, rc[i]);
		if (round < len && round > 0)
			for (int i = 0; i < 7; i++)
				ck_assert_msg(rc[i] != 0, "parser %d accepted a truncated body", i);
	}
	free(copy);
	free(r);
	free(t);
	free(aq);
}

START_TEST(test_truncated_and_mutated_bodies_never_crash)
{
	static const char *const bodies[] = {
		"{" HEADER ",\"ID\":\"7587879341806712845\",\"TTL\":\"2\"}",
		"{\"result\":{" HEADER ",\"ID\":\"42\",\"TTL\":\"10\"}}",
		"{" HEADER ",\"succeeded\":true,\"responses\":[{\"response_put\":{}},{\"response_range\":"
		"{\"kvs\":[{\"key\":\"" KEY_B64 "\",\"create_revision\":\"2\",\"value\":\"YWxwaGE=\","
		"\"lease\":\"99\"}]}}]}",
		"{\"result\":{" HEADER ",\"events\":[{\"type\":\"DELETE\",\"kv\":{\"key\":\"" KEY_B64 "\","
		"\"mod_revision\":\"9\"}}]}}",
		"{" HEADER ",\"token\":\"kzUEGHdUibrwbOkl.22\"}",
		"{" HEADER ",\"succeeded\":true,\"responses\":[{\"response_txn\":{}},{\"response_put\":{}},"
		"{\"response_range\":{\"kvs\":[{\"key\":\"" KEY_B64 "\",\"create_revision\":\"2\","
		"\"value\":\"YWxwaGE=\",\"lease\":\"99\"}]}},{\"response_range\":{\"kvs\":[{\"key\":\""
		FKEY_B64 "\",\"create_revision\":\"2\",\"value\":\"MTIz\"}]}}]}",
		"{\"error\":\"etcdserver: no leader\",\"message\":\"etcdserver: no leader\",\"code\":14}",
	};

	ck_assert_int_ge(sodium_init(), 0);
	for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++)
		torture(bodies[i]);
}
END_TEST

static Suite *etcd_json_suite(void)
{
	Suite *s = suite_create("etcd_json");
	TCase *tc;

	tc = tcase_create("build");
	tcase_add_test(tc, test_grant_and_lease_bodies);
	tcase_add_test(tc, test_txn_acquire_body);
	tcase_add_test(tc, test_txn_acquire_rejects_bad_arguments);
	tcase_add_test(tc, test_txn_delete_body);
	tcase_add_test(tc, test_txn_peek_body);
	tcase_add_test(tc, test_parse_peek_key_and_marker);
	tcase_add_test(tc, test_range_and_watch_bodies);
	tcase_add_test(tc, test_authenticate_body_escapes);
	suite_add_tcase(s, tc);

	tc = tcase_create("parse");
	tcase_add_test(tc, test_parse_grant);
	tcase_add_test(tc, test_parse_grant_requires_id_and_ttl);
	tcase_add_test(tc, test_parse_keepalive_without_ttl_is_zero);
	tcase_add_test(tc, test_absurd_ttls_are_garbage);
	tcase_add_test(tc, test_parse_range);
	tcase_add_test(tc, test_parse_range_omitted_kv_fields);
	tcase_add_test(tc, test_parse_range_value_over_cap_is_flagged);
	tcase_add_test(tc, test_parse_txn_success_and_failure);
	tcase_add_test(tc, test_parse_acquire_key_and_fence);
	tcase_add_test(tc, test_headers_carry_cluster_id);
	tcase_add_test(tc, test_parse_auth);
	tcase_add_test(tc, test_parse_watch_lines);
	tcase_add_test(tc, test_parse_watch_event_types);
	tcase_add_test(tc, test_parse_status);
	tcase_add_test(tc, test_parse_error_bodies);
	suite_add_tcase(s, tc);

	tc = tcase_create("garbage");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_garbage_is_einval_with_a_message);
	tcase_add_test(tc, test_garbage_wrong_types);
	tcase_add_test(tc, test_garbage_bad_keys_and_values);
	tcase_add_test(tc, test_huge_numbers);
	tcase_add_test(tc, test_body_over_cap_is_refused);
	tcase_add_test(tc, test_truncated_and_mutated_bodies_never_crash);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(etcd_json_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
