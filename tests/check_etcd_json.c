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
#define QKEY "lk/test:seq"
#define QKEY_B64 "bGsvdGVzdDpzZXE="      /* base64("lk/test:seq") */
#define PKEY "lk/test/"
#define PKEY_B64 "bGsvdGVzdC8="          /* base64("lk/test/") */
#define PEND_B64 "bGsvdGVzdDA="          /* base64("lk/test0"): the prefix's range_end */
/* Candidate keys as etcd_op.c names them: the prefix, the lease in 16 hex digits and 4 more. */
#define OWN "lk/test/000000000000002a0001"
#define OWN_B64 "bGsvdGVzdC8wMDAwMDAwMDAwMDAwMDJhMDAwMQ=="
#define OTHER "lk/test/00000000000000630002"
#define OTHER_B64 "bGsvdGVzdC8wMDAwMDAwMDAwMDAwMDYzMDAwMg=="

static const struct lk_etcd_look_keys look_keys = {
	.own = OWN, .own_len = sizeof(OWN) - 1,
	.prefix = PKEY, .prefix_len = sizeof(PKEY) - 1,
	.fence = FKEY, .fence_len = sizeof(FKEY) - 1,
	.state = TKEY, .state_len = sizeof(TKEY) - 1,
	.seq = QKEY, .seq_len = sizeof(QKEY) - 1,
	.legacy = KEY, .legacy_len = sizeof(KEY) - 1,
};

/* The five reads every look ends with, from array[from] on: our key, the fence, the marker
 * and the legacy key, each exactly (no range_end: a range_end would turn it into a range),
 * then the two oldest candidates. The parser relies on this order. */
static void assert_look_reads(json_t *array, size_t from)
{
	static const char *const keys[] = { OWN_B64, FKEY_B64, TKEY_B64, KEY_B64 };
	json_t *r;

	ck_assert_int_eq(json_array_size(array), from + 5);
	for (size_t i = 0; i < 4; i++) {
		r = json_object_get(json_array_get(array, from + i), "request_range");
		ck_assert_ptr_nonnull(r);
		ck_assert_str_eq(str_at(r, "key"), keys[i]);
		ck_assert_int_eq(json_object_size(r), 1);
	}
	r = json_object_get(json_array_get(array, from + 4), "request_range");
	ck_assert_ptr_nonnull(r);
	ck_assert_str_eq(str_at(r, "key"), PKEY_B64);
	ck_assert_str_eq(str_at(r, "range_end"), PEND_B64);
	ck_assert_str_eq(str_at(r, "sort_order"), "ASCEND");
	ck_assert_str_eq(str_at(r, "sort_target"), "CREATE");
	ck_assert_str_eq(str_at(r, "limit"), "2");
	/* The values are needed (the leader's identity): not keys_only, not count_only. */
	ck_assert_int_eq(json_object_size(r), 5);
}

START_TEST(test_txn_look_create_body)
{
	json_t *j, *success;
	char *s;

	ck_assert_int_eq(lk_etcd_json_txn_look(&look_keys, true, "alpha", 5, 42, 1765000000123456LL,
	                                       false, &s), 0);
	j = load(s);
	free(s);
	/* Create our key only if it does not exist; the zero must be sent: it selects the
	 * compare's target field. */
	ck_assert_int_eq(json_array_size(json_object_get(j, "compare")), 1);
	ck_assert_str_eq(str_at(j, "compare.0.key"), OWN_B64);
	ck_assert_str_eq(str_at(j, "compare.0.target"), "CREATE");
	ck_assert_str_eq(str_at(j, "compare.0.result"), "EQUAL");
	ck_assert_str_eq(str_at(j, "compare.0.create_revision"), "0");
	success = json_object_get(j, "success");
	/* The seq key is read before our put rewrites it. */
	ck_assert_str_eq(str_at(j, "success.0.request_range.key"), QKEY_B64);
	ck_assert_int_eq(json_object_size(json_object_get(json_array_get(success, 0),
	                                                  "request_range")), 1);
	ck_assert_str_eq(str_at(j, "success.1.request_put.key"), OWN_B64);
	ck_assert_str_eq(str_at(j, "success.1.request_put.value"), "YWxwaGE=");
	ck_assert_str_eq(str_at(j, "success.1.request_put.lease"), "42");
	/* The seq key is rewritten (empty value, on no lease): only its mod_revision matters. */
	ck_assert_str_eq(str_at(j, "success.2.request_put.key"), QKEY_B64);
	ck_assert_ptr_null(json_object_get(json_object_get(json_array_get(success, 2),
	                                                   "request_put"), "lease"));
	/* The fence key is seeded only where it is missing, inside the same txn. */
	ck_assert_str_eq(str_at(j, "success.3.request_txn.compare.0.key"), FKEY_B64);
	ck_assert_str_eq(str_at(j, "success.3.request_txn.compare.0.target"), "VERSION");
	ck_assert_str_eq(str_at(j, "success.3.request_txn.compare.0.result"), "EQUAL");
	ck_assert_str_eq(str_at(j, "success.3.request_txn.compare.0.version"), "0");
	ck_assert_str_eq(str_at(j, "success.3.request_txn.success.0.request_put.key"), FKEY_B64);
	/* base64("1765000000123456") */
	ck_assert_str_eq(str_at(j, "success.3.request_txn.success.0.request_put.value"),
	                 "MTc2NTAwMDAwMDEyMzQ1Ng==");
	ck_assert_int_eq(json_array_size(json_object_get(json_object_get(
		json_array_get(success, 3), "request_txn"), "success")), 1);
	ck_assert_ptr_null(json_object_get(json_object_get(json_array_get(success, 3),
	                                                   "request_txn"), "failure"));
	assert_look_reads(success, 4);
	/* A failed compare (our key exists) writes nothing and reads the same. */
	assert_look_reads(json_object_get(j, "failure"), 0);
	json_decref(j);

	/* After a replaced cluster the fence is overwritten with the clock, whatever it holds. */
	ck_assert_int_eq(lk_etcd_json_txn_look(&look_keys, true, "alpha", 5, 42, 7, true, &s), 0);
	j = load(s);
	free(s);
	success = json_object_get(j, "success");
	ck_assert_str_eq(str_at(j, "success.0.request_range.key"), QKEY_B64);
	ck_assert_str_eq(str_at(j, "success.3.request_put.key"), FKEY_B64);
	ck_assert_str_eq(str_at(j, "success.3.request_put.value"), "Nw=="); /* "7" */
	ck_assert_ptr_null(json_object_get(json_array_get(success, 3), "request_txn"));
	assert_look_reads(success, 4);
	assert_look_reads(json_object_get(j, "failure"), 0);
	json_decref(j);

	/* An empty identity is an empty value. */
	ck_assert_int_eq(lk_etcd_json_txn_look(&look_keys, true, NULL, 0, 42, 7, false, &s), 0);
	j = load(s);
	free(s);
	ck_assert_str_eq(str_at(j, "success.1.request_put.value"), "");
	json_decref(j);

	/* Keys are bytes: NULs and high bytes go through base64 untouched. */
	{
		struct lk_etcd_look_keys k = {
			.own = "a\0/\xff", .own_len = 4, .prefix = "a\0/", .prefix_len = 3,
			.fence = "f", .fence_len = 1, .state = "t", .state_len = 1,
			.seq = "q", .seq_len = 1, .legacy = "a\0", .legacy_len = 2,
		};

		ck_assert_int_eq(lk_etcd_json_txn_look(&k, true, "", 0, 1, 1, false, &s), 0);
		j = load(s);
		free(s);
		ck_assert_str_eq(str_at(j, "compare.0.key"), "YQAv/w==");
		ck_assert_str_eq(str_at(j, "failure.4.request_range.key"), "YQAv");
		ck_assert_str_eq(str_at(j, "failure.4.request_range.range_end"), "YQAw");
		json_decref(j);
	}
}
END_TEST

START_TEST(test_txn_look_without_create_only_reads)
{
	json_t *j;
	char *s;

	/* Value, lease and seed are not used: a read-only txn, which etcd serves without a raft
	 * write. */
	ck_assert_int_eq(lk_etcd_json_txn_look(&look_keys, false, NULL, 0, 0, 0, false, &s), 0);
	j = load(s);
	free(s);
	ck_assert_ptr_null(json_object_get(j, "compare"));
	ck_assert_ptr_null(json_object_get(j, "failure"));
	assert_look_reads(json_object_get(j, "success"), 0);
	ck_assert_int_eq(json_object_size(j), 1);
	json_decref(j);

	/* overwrite_fence writes nothing without create either. */
	ck_assert_int_eq(lk_etcd_json_txn_look(&look_keys, false, "alpha", 5, 42, 7, true, &s), 0);
	ck_assert_ptr_null(strstr(s, "request_put"));
	ck_assert_ptr_null(strstr(s, "request_txn"));
	j = load(s);
	free(s);
	assert_look_reads(json_object_get(j, "success"), 0);
	json_decref(j);
}
END_TEST

START_TEST(test_txn_look_rejects_bad_arguments)
{
	char big[LK_ETCD_JSON_MAX_KEY + 2];
	struct lk_etcd_look_keys k;
	char *s = NULL;

	memset(big, 'k', sizeof(big));
#define LOOK(create, v, vl, lease, seed) \
	lk_etcd_json_txn_look(&k, create, v, vl, lease, seed, false, &s)
	ck_assert_int_eq(lk_etcd_json_txn_look(NULL, false, NULL, 0, 0, 0, false, &s), -EINVAL);
	ck_assert_int_eq(lk_etcd_json_txn_look(&look_keys, false, NULL, 0, 0, 0, false, NULL),
	                 -EINVAL);
	/* Our key must be a candidate: strictly below the prefix. */
	k = look_keys;
	k.own = "lk/other/000000000000002a0001";
	k.own_len = strlen(k.own);
	ck_assert_int_eq(LOOK(false, NULL, 0, 0, 0), -EINVAL);
	ck_assert_int_eq(LOOK(true, "a", 1, 42, 7), -EINVAL);
	k.own = PKEY;
	k.own_len = strlen(PKEY);
	ck_assert_int_eq(LOOK(false, NULL, 0, 0, 0), -EINVAL);
	k.own = KEY;
	k.own_len = strlen(KEY);
	ck_assert_int_eq(LOOK(false, NULL, 0, 0, 0), -EINVAL);
	/* Every key: not NULL, not empty, not over the cap. */
	k = look_keys; k.own = NULL;
	ck_assert_int_eq(LOOK(false, NULL, 0, 0, 0), -EINVAL);
	k = look_keys; k.prefix = NULL;
	ck_assert_int_eq(LOOK(false, NULL, 0, 0, 0), -EINVAL);
	k = look_keys; k.fence = NULL;
	ck_assert_int_eq(LOOK(false, NULL, 0, 0, 0), -EINVAL);
	k = look_keys; k.state = NULL;
	ck_assert_int_eq(LOOK(false, NULL, 0, 0, 0), -EINVAL);
	k = look_keys; k.seq = NULL;
	ck_assert_int_eq(LOOK(false, NULL, 0, 0, 0), -EINVAL);
	k = look_keys; k.legacy = NULL;
	ck_assert_int_eq(LOOK(false, NULL, 0, 0, 0), -EINVAL);
	k = look_keys; k.fence_len = 0;
	ck_assert_int_eq(LOOK(false, NULL, 0, 0, 0), -EINVAL);
	k = look_keys; k.state = big; k.state_len = LK_ETCD_JSON_MAX_KEY + 1;
	ck_assert_int_eq(LOOK(false, NULL, 0, 0, 0), -EINVAL);
	k = look_keys; k.own = big; k.own_len = LK_ETCD_JSON_MAX_KEY + 1;
	ck_assert_int_eq(LOOK(false, NULL, 0, 0, 0), -EINVAL);
	/* With create: a lease to put our key on, a positive seed, a value within its cap. */
	k = look_keys;
	ck_assert_int_eq(LOOK(true, "a", 1, 0, 7), -EINVAL);
	ck_assert_int_eq(LOOK(true, "a", 1, -42, 7), -EINVAL);
	ck_assert_int_eq(LOOK(true, "a", 1, 42, 0), -EINVAL);
	ck_assert_int_eq(LOOK(true, "a", 1, 42, -7), -EINVAL);
	ck_assert_int_eq(LOOK(true, NULL, 1, 42, 7), -EINVAL);
	ck_assert_int_eq(LOOK(true, big, LK_ETCD_JSON_MAX_VALUE + 1, 42, 7), -EINVAL);
	ck_assert_ptr_null(s); /* out-parameters only on success */
	/* The caps themselves are fine. */
	ck_assert_int_eq(LOOK(true, big, LK_ETCD_JSON_MAX_VALUE, 42, 7), 0);
	free(s);
	memcpy(big, PKEY, strlen(PKEY));
	k.own = big;
	k.own_len = LK_ETCD_JSON_MAX_KEY;
	ck_assert_int_eq(LOOK(false, NULL, 0, 0, 0), 0);
	free(s);
#undef LOOK
}
END_TEST

START_TEST(test_txn_history_body)
{
	json_t *j;
	char *s;

	ck_assert_int_eq(lk_etcd_json_txn_history(PKEY, strlen(PKEY), QKEY, strlen(QKEY), 20, &s),
	                 0);
	j = load(s);
	free(s);
	/* Read only, both ranges at the revision asked about. */
	ck_assert_ptr_null(json_object_get(j, "compare"));
	ck_assert_ptr_null(json_object_get(j, "failure"));
	ck_assert_int_eq(json_array_size(json_object_get(j, "success")), 2);
	ck_assert_str_eq(str_at(j, "success.0.request_range.key"), PKEY_B64);
	ck_assert_str_eq(str_at(j, "success.0.request_range.range_end"), PEND_B64);
	ck_assert_str_eq(str_at(j, "success.0.request_range.revision"), "20");
	/* How many candidates there were, without their values. */
	ck_assert(json_is_true(json_object_get(json_object_get(json_array_get(
		json_object_get(j, "success"), 0), "request_range"), "count_only")));
	ck_assert_str_eq(str_at(j, "success.1.request_range.key"), QKEY_B64);
	ck_assert_str_eq(str_at(j, "success.1.request_range.revision"), "20");
	ck_assert_ptr_null(json_object_get(json_object_get(json_array_get(
		json_object_get(j, "success"), 1), "request_range"), "range_end"));
	ck_assert_ptr_null(json_object_get(json_object_get(json_array_get(
		json_object_get(j, "success"), 1), "request_range"), "count_only"));
	json_decref(j);

	/* The range_end of a prefix ending in 0xff bytes increments the byte before them. */
	ck_assert_int_eq(lk_etcd_json_txn_history("a\xff", 2, QKEY, strlen(QKEY), 1, &s), 0);
	j = load(s);
	free(s);
	ck_assert_str_eq(str_at(j, "success.0.request_range.range_end"), "Yg=="); /* "b" */
	json_decref(j);

	s = NULL;
	ck_assert_int_eq(lk_etcd_json_txn_history(PKEY, strlen(PKEY), QKEY, strlen(QKEY), 0, &s),
	                 -EINVAL);
	ck_assert_int_eq(lk_etcd_json_txn_history(PKEY, strlen(PKEY), QKEY, strlen(QKEY), -1, &s),
	                 -EINVAL);
	ck_assert_int_eq(lk_etcd_json_txn_history(PKEY, 0, QKEY, strlen(QKEY), 20, &s), -EINVAL);
	ck_assert_int_eq(lk_etcd_json_txn_history(PKEY, strlen(PKEY), NULL, 3, 20, &s), -EINVAL);
	ck_assert_int_eq(lk_etcd_json_txn_history(PKEY, strlen(PKEY), QKEY, strlen(QKEY), 20,
	                                          NULL), -EINVAL);
	/* A prefix of 0xff bytes only has no range_end. */
	ck_assert_int_eq(lk_etcd_json_txn_history("\xff\xff", 2, QKEY, strlen(QKEY), 20, &s),
	                 -EINVAL);
	ck_assert_ptr_null(s);
}
END_TEST

START_TEST(test_txn_release_body)
{
	json_t *j;
	char *s;

	ck_assert_int_eq(lk_etcd_json_txn_release(OWN, strlen(OWN), TKEY, strlen(TKEY), 1234, 0,
	                                          &s), 0);
	j = load(s);
	free(s);
	ck_assert_int_eq(json_array_size(json_object_get(j, "compare")), 1);
	ck_assert_str_eq(str_at(j, "compare.0.key"), OWN_B64);
	ck_assert_str_eq(str_at(j, "compare.0.target"), "CREATE");
	ck_assert_str_eq(str_at(j, "compare.0.result"), "EQUAL");
	ck_assert_str_eq(str_at(j, "compare.0.create_revision"), "1234");
	ck_assert_int_eq(json_array_size(json_object_get(j, "success")), 2);
	ck_assert_str_eq(str_at(j, "success.0.request_delete_range.key"), OWN_B64);
	/* A single key: a range_end would delete other candidates too. */
	ck_assert_int_eq(json_object_size(json_object_get(json_array_get(
		json_object_get(j, "success"), 0), "request_delete_range")), 1);
	/* ... and the marker names the released key, in the same branch, on no lease. */
	ck_assert_str_eq(str_at(j, "success.1.request_put.key"), TKEY_B64);
	ck_assert_str_eq(str_at(j, "success.1.request_put.value"),
	                 "cmVsZWFzZWQgMTIzNA=="); /* "released 1234" */
	ck_assert_ptr_null(json_object_get(json_object_get(json_array_get(
		json_object_get(j, "success"), 1), "request_put"), "lease"));
	ck_assert_ptr_null(json_object_get(j, "failure"));
	json_decref(j);

	/* Without a marker key (a withdrawal), only the delete. */
	ck_assert_int_eq(lk_etcd_json_txn_release(OWN, strlen(OWN), NULL, 0, 1234, 0, &s), 0);
	j = load(s);
	free(s);
	ck_assert_int_eq(json_array_size(json_object_get(j, "success")), 1);
	ck_assert_str_eq(str_at(j, "success.0.request_delete_range.key"), OWN_B64);
	ck_assert_int_eq(json_array_size(json_object_get(j, "compare")), 1);
	json_decref(j);

	/* With the tenure's lease known, the key must still be on it. */
	ck_assert_int_eq(lk_etcd_json_txn_release(OWN, strlen(OWN), TKEY, strlen(TKEY), 1234, 42,
	                                          &s), 0);
	j = load(s);
	free(s);
	ck_assert_int_eq(json_array_size(json_object_get(j, "compare")), 2);
	ck_assert_str_eq(str_at(j, "compare.0.create_revision"), "1234");
	ck_assert_str_eq(str_at(j, "compare.1.key"), OWN_B64);
	ck_assert_str_eq(str_at(j, "compare.1.target"), "LEASE");
	ck_assert_str_eq(str_at(j, "compare.1.result"), "EQUAL");
	ck_assert_str_eq(str_at(j, "compare.1.lease"), "42");
	ck_assert_int_eq(json_array_size(json_object_get(j, "success")), 2);
	json_decref(j);

	s = NULL;
	ck_assert_int_eq(lk_etcd_json_txn_release(OWN, strlen(OWN), TKEY, strlen(TKEY), 0, 0, &s),
	                 -EINVAL);
	ck_assert_int_eq(lk_etcd_json_txn_release(OWN, 0, TKEY, strlen(TKEY), 5, 0, &s), -EINVAL);
	ck_assert_int_eq(lk_etcd_json_txn_release(OWN, strlen(OWN), TKEY, 0, 5, 0, &s), -EINVAL);
	ck_assert_int_eq(lk_etcd_json_txn_release(OWN, strlen(OWN), TKEY, strlen(TKEY), 5, -1, &s),
	                 -EINVAL);
	/* The marker must not be the deleted key itself. */
	ck_assert_int_eq(lk_etcd_json_txn_release(OWN, strlen(OWN), OWN, strlen(OWN), 5, 0, &s),
	                 -EINVAL);
	ck_assert_ptr_null(s);
}
END_TEST

START_TEST(test_range_and_watch_bodies)
{
	json_t *j;
	char *s;

	ck_assert_int_eq(lk_etcd_json_range(KEY, strlen(KEY), &s), 0);
	ck_assert_str_eq(s, "{\"key\":\"" KEY_B64 "\"}");
	free(s);
	ck_assert_int_eq(lk_etcd_json_watch_create(KEY, strlen(KEY), false, 0, &s), 0);
	ck_assert_str_eq(s, "{\"create_request\":{\"key\":\"" KEY_B64 "\"}}");
	free(s);
	ck_assert_int_eq(lk_etcd_json_watch_create(KEY, strlen(KEY), false, 99, &s), 0);
	ck_assert_ptr_nonnull(strstr(s, "\"start_revision\":\"99\""));
	ck_assert_ptr_nonnull(strstr(s, "\"key\":\"" KEY_B64 "\""));
	ck_assert_ptr_null(strstr(s, "range_end"));
	free(s);

	/* Every key below the prefix: range_end is the prefix with its last byte + 1. */
	ck_assert_int_eq(lk_etcd_json_watch_create(PKEY, strlen(PKEY), true, 99, &s), 0);
	j = load(s);
	free(s);
	ck_assert_str_eq(str_at(j, "create_request.key"), PKEY_B64);
	ck_assert_str_eq(str_at(j, "create_request.range_end"), PEND_B64);
	ck_assert_str_eq(str_at(j, "create_request.start_revision"), "99");
	ck_assert_int_eq(json_object_size(json_object_get(j, "create_request")), 3);
	json_decref(j);
	ck_assert_int_eq(lk_etcd_json_watch_create(PKEY, strlen(PKEY), true, 0, &s), 0);
	ck_assert_str_eq(s, "{\"create_request\":{\"key\":\"" PKEY_B64 "\",\"range_end\":\""
	                 PEND_B64 "\"}}");
	free(s);
	/* Trailing 0xff bytes carry: "a\xff\xff" ends at "b". */
	ck_assert_int_eq(lk_etcd_json_watch_create("a\xff\xff", 3, true, 0, &s), 0);
	j = load(s);
	free(s);
	ck_assert_str_eq(str_at(j, "create_request.key"), "Yf//");
	ck_assert_str_eq(str_at(j, "create_request.range_end"), "Yg==");
	json_decref(j);

	s = NULL;
	/* A prefix of 0xff bytes only has no end. */
	ck_assert_int_eq(lk_etcd_json_watch_create("\xff\xff", 2, true, 0, &s), -EINVAL);
	ck_assert_int_eq(lk_etcd_json_watch_create(KEY, strlen(KEY), false, -1, &s), -EINVAL);
	ck_assert_int_eq(lk_etcd_json_watch_create(KEY, 0, true, 0, &s), -EINVAL);
	ck_assert_int_eq(lk_etcd_json_range(KEY, 0, &s), -EINVAL);
	ck_assert_ptr_null(s);
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

/* ---- the election: look and history answers, as etcd 3.4's gateway gives them ------------- */

/* One range response: its own header, then kvs and count, both omitted when the range is
 * empty. */
#define RANGE(kvs) "{\"response_range\":{\"header\":{\"revision\":\"30\"}" kvs "}}"
#define KVS1(kv) ",\"kvs\":[" kv "],\"count\":\"1\""
/* A key-value; version is there and ignored, value omitted when empty. */
#define KV(k64, cr, mr, rest) "{\"key\":\"" k64 "\",\"create_revision\":\"" cr "\"," \
	"\"mod_revision\":\"" mr "\",\"version\":\"1\"" rest "}"
#define VAL(v64) ",\"value\":\"" v64 "\""
#define OWN_KV KV(OWN_B64, "21", "21", VAL("YWxwaGE=") ",\"lease\":\"42\"")   /* "alpha" */
#define OTHER_KV KV(OTHER_B64, "10", "10", VAL("YmV0YQ==") ",\"lease\":\"99\"") /* "beta" */
#define FENCE_KV KV(FKEY_B64, "2", "2", VAL("MTc2NTAwMDAwMDEyMzQ1Ng==")) /* 1765000000123456 */
#define PUT "{\"response_put\":{\"header\":{\"revision\":\"21\"}}}"

/* Our key created: the seq key read first (the candidate before ours rewrote it at 18 and
 * was released at 19), two puts, the nested txn that found the fence present (a failed
 * compare without failure ops: nothing but a header), then the five reads. */
static const char look_created[] = "{" HEADER ",\"succeeded\":true,\"responses\":["
	RANGE(KVS1(KV(QKEY_B64, "3", "18", ""))) "," PUT "," PUT ","
	"{\"response_txn\":{\"header\":{\"revision\":\"21\"}}},"
	RANGE(KVS1(OWN_KV)) "," RANGE(KVS1(FENCE_KV)) ","
	RANGE(KVS1(KV(TKEY_B64, "4", "19", VAL("cmVsZWFzZWQgMTg=")))) "," /* "released 18" */
	RANGE("") "," RANGE(KVS1(OWN_KV)) "]}";

/* The first candidate ever: no seq key, no marker, and the nested txn seeded the fence
 * (its put's response nested inside, where no range is counted). */
static const char look_first_ever[] = "{" HEADER ",\"succeeded\":true,\"responses\":["
	RANGE("") "," PUT "," PUT ","
	"{\"response_txn\":{\"header\":{\"revision\":\"21\"},\"succeeded\":true,"
	"\"responses\":[" PUT "]}},"
	RANGE(KVS1(OWN_KV)) "," RANGE(KVS1(KV(FKEY_B64, "21", "21", VAL("MTc2NTAwMDAwMDEyMzQ1Ng=="))))
	"," RANGE("") "," RANGE("") "," RANGE(KVS1(OWN_KV)) "]}";

/* Our key existed already (no "succeeded": the failure branch's five reads). An older
 * candidate leads, a third is past the limit; the marker is the single-key layout's, and a
 * holder of that layout is still there. */
static const char look_failed[] = "{" HEADER ",\"responses\":["
	RANGE(KVS1(OWN_KV)) "," RANGE(KVS1(FENCE_KV)) ","
	RANGE(KVS1(KV(TKEY_B64, "4", "9", VAL("aGVsZA==")))) "," /* "held" */
	RANGE(KVS1(KV(KEY_B64, "3", "3", VAL("Z2FtbWE=") ",\"lease\":\"98\""))) "," /* "gamma" */
	RANGE(",\"kvs\":[" OTHER_KV "," OWN_KV "],\"more\":true,\"count\":\"3\"") "]}";

/* A read-only look (no compare: etcd says succeeded). */
static char *peek_body(const char *own, const char *fence, const char *state,
                       const char *legacy, const char *cands)
{
	char *s;

	ck_assert_int_ge(asprintf(&s, "{" HEADER ",\"succeeded\":true,\"responses\":["
	                          RANGE("%s") "," RANGE("%s") "," RANGE("%s") "," RANGE("%s") ","
	                          RANGE("%s") "]}", own, fence, state, legacy, cands), 0);
	return s;
}

static int parse_look(const char *body, bool create, struct lk_etcd_look *out)
{
	err[0] = '\0';
	return lk_etcd_json_parse_look(body, strlen(body), &look_keys, create, out, err,
	                               sizeof(err));
}

START_TEST(test_parse_look_created)
{
	struct lk_etcd_look *l = malloc(sizeof(*l));

	ck_assert_msg(parse_look(look_created, true, l) == 0, "%s", err);
	ck_assert(l->succeeded);
	ck_assert_int_eq(l->revision, 7);
	ck_assert(l->cluster_id == 14841639068965178418ULL);
	ck_assert(l->own_found);
	ck_assert_int_eq(l->own.create_revision, 21);
	ck_assert_int_eq(l->own.lease, 42);
	ck_assert_str_eq(l->own.value, "alpha");
	ck_assert(l->fence_found);
	ck_assert(!l->fence_bad);
	ck_assert_int_eq(l->fence, 1765000000123456LL);
	ck_assert(l->state_found);
	ck_assert_int_eq(l->released_rev, 18);
	ck_assert_int_eq(l->state_mod_revision, 19);
	ck_assert(!l->legacy_found);
	ck_assert_int_eq(l->n_candidates, 1);
	ck_assert_uint_eq(l->n_first, 1);
	ck_assert(l->first_own[0]);
	ck_assert_int_eq(l->first[0].create_revision, 21);
	ck_assert_str_eq(l->first[0].value, "alpha");
	/* Read before our put: when the candidate before ours arrived. */
	ck_assert(l->seq_found);
	ck_assert_int_eq(l->seq_mod_revision, 18);

	ck_assert_msg(parse_look(look_first_ever, true, l) == 0, "%s", err);
	ck_assert(l->succeeded);
	ck_assert(!l->seq_found);
	ck_assert_int_eq(l->seq_mod_revision, 0);
	ck_assert(!l->state_found);
	ck_assert_int_eq(l->released_rev, 0);
	ck_assert_int_eq(l->state_mod_revision, 0);
	ck_assert(l->fence_found);
	ck_assert_int_eq(l->fence, 1765000000123456LL);
	ck_assert_int_eq(l->n_candidates, 1);
	ck_assert(l->first_own[0]);
	free(l);
}
END_TEST

START_TEST(test_parse_look_failed_compare)
{
	struct lk_etcd_look *l = malloc(sizeof(*l));

	ck_assert_msg(parse_look(look_failed, true, l) == 0, "%s", err);
	ck_assert(!l->succeeded);
	ck_assert(l->own_found);
	ck_assert_int_eq(l->own.create_revision, 21);
	ck_assert(l->fence_found && !l->fence_bad);
	/* The single-key layout's "held" names no release. */
	ck_assert(l->state_found);
	ck_assert_int_eq(l->released_rev, 0);
	ck_assert_int_eq(l->state_mod_revision, 9);
	ck_assert(l->legacy_found);
	ck_assert_str_eq(l->legacy.value, "gamma");
	ck_assert_int_eq(l->legacy.lease, 98);
	/* "count" is every candidate, also those past the limit. */
	ck_assert_int_eq(l->n_candidates, 3);
	ck_assert_uint_eq(l->n_first, 2);
	ck_assert(!l->first_own[0]);
	ck_assert(l->first_own[1]);
	ck_assert_int_eq(l->first[0].create_revision, 10);
	ck_assert_str_eq(l->first[0].value, "beta");
	ck_assert_int_eq(l->first[0].lease, 99);
	ck_assert_int_eq(l->first[1].create_revision, 21);
	/* The seq key is read only where our key was created. */
	ck_assert(!l->seq_found);
	ck_assert_int_eq(l->seq_mod_revision, 0);

	/* The failure branch has no seq range, so the same body is a look without create too,
	 * but etcd always says succeeded for a txn without a compare. */
	ck_assert_int_eq(parse_look(look_failed, false, l), -EINVAL);
	ck_assert_ptr_nonnull(strstr(err, "ranges"));
	free(l);
}
END_TEST

START_TEST(test_parse_look_peek)
{
	struct lk_etcd_look *l = malloc(sizeof(*l));
	char *b;

	/* Nobody campaigns: every range empty. */
	b = peek_body("", "", "", "", "");
	ck_assert_msg(parse_look(b, false, l) == 0, "%s", err);
	free(b);
	ck_assert(l->succeeded);
	ck_assert(!l->own_found && !l->fence_found && !l->state_found && !l->legacy_found);
	ck_assert_int_eq(l->n_candidates, 0);
	ck_assert_uint_eq(l->n_first, 0);
	ck_assert(!l->seq_found);

	/* We lead, the previous tenure was released. */
	b = peek_body(KVS1(OWN_KV), KVS1(FENCE_KV),
	              KVS1(KV(TKEY_B64, "4", "43", VAL("cmVsZWFzZWQgNDI="))), /* "released 42" */
	              "", KVS1(OWN_KV));
	ck_assert_msg(parse_look(b, false, l) == 0, "%s", err);
	free(b);
	ck_assert(l->own_found);
	ck_assert_str_eq(l->own.value, "alpha");
	ck_assert(l->state_found);
	ck_assert_int_eq(l->released_rev, 42);
	ck_assert_int_eq(l->state_mod_revision, 43);
	ck_assert_int_eq(l->n_candidates, 1);
	ck_assert(l->first_own[0]);

	/* Second in line. */
	b = peek_body(KVS1(OWN_KV), KVS1(FENCE_KV), "", "",
	              ",\"kvs\":[" OTHER_KV "," OWN_KV "],\"count\":\"2\"");
	ck_assert_msg(parse_look(b, false, l) == 0, "%s", err);
	free(b);
	ck_assert_int_eq(l->n_candidates, 2);
	ck_assert_uint_eq(l->n_first, 2);
	ck_assert(!l->first_own[0] && l->first_own[1]);

	/* A look with create that etcd answered as a read-only one lacks its seq range. */
	b = peek_body("", "", "", "", "");
	ck_assert_int_eq(parse_look(b, true, l), -EINVAL);
	free(b);
	free(l);
}
END_TEST

/* What the marker's value says: only "released <positive create_revision>" names a release. */
START_TEST(test_parse_look_marker_values)
{
	static const struct {
		const char *value64;
		int64_t released_rev;
	} cases[] = {
		{ "cmVsZWFzZWQgNDI=", 42 },                  /* "released 42" */
		{ "cmVsZWFzZWQgOTIyMzM3MjAzNjg1NDc3NTgwNw==", INT64_MAX },
		{ "aGVsZA==", 0 },                           /* "held": the single-key layout */
		{ "cmVsZWFzZWQ=", 0 },                       /* "released": ditto, names no key */
		{ "cmVsZWFzZWQg", 0 },                       /* "released " */
		{ "cmVsZWFzZWQgMA==", 0 },                   /* "released 0" */
		{ "cmVsZWFzZWQgLTM=", 0 },                   /* "released -3" */
		{ "cmVsZWFzZWQgNDJ4", 0 },                   /* "released 42x" */
		{ "cmVsZWFzZWQgIDQy", 0 },                   /* "released  42" */
		{ "UkVMRUFTRUQgNDI=", 0 },                   /* "RELEASED 42" */
		{ "cmVsZWFzZWQgOTIyMzM3MjAzNjg1NDc3NTgwOA==", 0 }, /* INT64_MAX + 1 */
		{ "", 0 },                                   /* an empty value (omitted) */
	};
	struct lk_etcd_look *l = malloc(sizeof(*l));

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *state, *b;

		ck_assert_int_ge(asprintf(&state, KVS1(KV(TKEY_B64, "4", "50", "%s%s%s")),
		                          cases[i].value64[0] ? ",\"value\":\"" : "",
		                          cases[i].value64, cases[i].value64[0] ? "\"" : ""), 0);
		b = peek_body("", "", state, "", "");
		ck_assert_msg(parse_look(b, false, l) == 0, "%s: %s", cases[i].value64, err);
		ck_assert(l->state_found);
		ck_assert_int_eq(l->state_mod_revision, 50);
		ck_assert_msg(l->released_rev == cases[i].released_rev, "%s: %" PRId64,
		              cases[i].value64, l->released_rev);
		free(b);
		free(state);
	}
	free(l);
}
END_TEST

/* A fence found but holding no positive decimal integer is flagged, not an error: the
 * backend decides what a broken base means. */
START_TEST(test_parse_look_fence_values)
{
	static const struct {
		const char *value64;
		bool bad;
		int64_t fence;
	} cases[] = {
		{ "MTc2NTAwMDAwMDEyMzQ1Ng==", false, 1765000000123456LL },
		{ "OTIyMzM3MjAzNjg1NDc3NTgwNw==", false, INT64_MAX }, /* "9223372036854775807" */
		{ "MTJhYg==", true, 0 },                          /* "12ab" */
		{ "MA==", true, 0 },                              /* "0" */
		{ "LTU=", true, 0 },                              /* "-5" */
		{ "OTIyMzM3MjAzNjg1NDc3NTgwOA==", true, 0 },      /* INT64_MAX + 1 */
		{ "", true, 0 },                                  /* empty */
	};
	struct lk_etcd_look *l = malloc(sizeof(*l));

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *fence, *b;

		ck_assert_int_ge(asprintf(&fence, KVS1(KV(FKEY_B64, "2", "2", "%s%s%s")),
		                          cases[i].value64[0] ? ",\"value\":\"" : "",
		                          cases[i].value64, cases[i].value64[0] ? "\"" : ""), 0);
		b = peek_body("", fence, "", "", "");
		ck_assert_msg(parse_look(b, false, l) == 0, "%s: %s", cases[i].value64, err);
		ck_assert(l->fence_found);
		ck_assert_msg(l->fence_bad == cases[i].bad, "%s", cases[i].value64);
		if (!cases[i].bad)
			ck_assert_int_eq(l->fence, cases[i].fence);
		free(b);
		free(fence);
	}
	free(l);
}
END_TEST

START_TEST(test_parse_look_garbage)
{
	/* The candidates' range is not the queue it was asked for, or the ranges are not the
	 * look's: each is garbage, never a misread answer. */
	static const char *const cands[] = {
		/* out of create_revision order, or two keys created at the same revision */
		",\"kvs\":[" OWN_KV "," OTHER_KV "],\"count\":\"2\"",
		",\"kvs\":[" OWN_KV "," KV(OTHER_B64, "21", "21", "") "],\"count\":\"2\"",
		/* a count smaller than the keys returned, or none at all */
		",\"kvs\":[" OTHER_KV "," OWN_KV "],\"count\":\"1\"",
		",\"kvs\":[" OTHER_KV "]",
		",\"kvs\":[" OTHER_KV "],\"count\":\"-1\"",
		/* a key not below the prefix: another lock's keys, the prefix itself, the legacy */
		KVS1(KV(FKEY_B64, "2", "2", "")),
		KVS1(KV(PKEY_B64, "2", "2", "")),
		KVS1(KV(KEY_B64, "2", "2", "")),
		/* a candidate without create_revision: a forged token of 0 */
		KVS1("{\"key\":\"" OTHER_B64 "\"}"),
	};
	static const char *const bodies[] = {
		/* four ranges, or six, without create */
		"{" HEADER ",\"succeeded\":true,\"responses\":[" RANGE("") "," RANGE("") ","
		RANGE("") "," RANGE("") "]}",
		"{" HEADER ",\"succeeded\":true,\"responses\":[" RANGE("") "," RANGE("") ","
		RANGE("") "," RANGE("") "," RANGE("") "," RANGE("") "]}",
		/* no ranges at all; no header */
		"{" HEADER ",\"succeeded\":true}",
		"{\"succeeded\":true,\"responses\":[" RANGE("") "," RANGE("") "," RANGE("") ","
		RANGE("") "," RANGE("") "]}",
		/* the reads out of order: the fence's range where ours belongs */
		"{" HEADER ",\"succeeded\":true,\"responses\":[" RANGE(KVS1(FENCE_KV)) "," RANGE("")
		"," RANGE("") "," RANGE("") "," RANGE("") "]}",
		/* the marker's range where the legacy key's belongs */
		"{" HEADER ",\"succeeded\":true,\"responses\":[" RANGE("") "," RANGE("") ","
		RANGE("") "," RANGE(KVS1(KV(TKEY_B64, "4", "4", ""))) "," RANGE("") "]}",
		/* the wrong types */
		"{" HEADER ",\"succeeded\":true,\"responses\":{}}",
		"{" HEADER ",\"succeeded\":true,\"responses\":[7," RANGE("") "," RANGE("") ","
		RANGE("") "," RANGE("") "," RANGE("") "]}",
		"{" HEADER ",\"succeeded\":\"true\",\"responses\":[" RANGE("") "," RANGE("") ","
		RANGE("") "," RANGE("") "," RANGE("") "]}",
	};
	/* A failed compare's answer with a sixth range. */
	static const char failed_six[] = "{" HEADER ",\"responses\":[" RANGE("") "," RANGE("")
		"," RANGE("") "," RANGE("") "," RANGE("") "," RANGE("") "]}";
	static const char unavailable[] = "{\"error\":\"etcdserver: request timed out\","
		"\"message\":\"etcdserver: request timed out\",\"code\":14}";
	struct lk_etcd_look *l = malloc(sizeof(*l)), *sentinel = malloc(sizeof(*l));
	char *b;

	memset(sentinel, 0xa5, sizeof(*sentinel));
	for (size_t i = 0; i < sizeof(cands) / sizeof(cands[0]); i++) {
		b = peek_body("", "", "", "", cands[i]);
		memcpy(l, sentinel, sizeof(*l));
		ck_assert_msg(parse_look(b, false, l) == -EINVAL, "accepted %s", cands[i]);
		ck_assert(err[0]);
		ck_assert(memcmp(l, sentinel, sizeof(*l)) == 0); /* untouched on failure */
		free(b);
	}
	for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
		memcpy(l, sentinel, sizeof(*l));
		ck_assert_msg(parse_look(bodies[i], false, l) == -EINVAL, "accepted %s", bodies[i]);
		ck_assert(err[0]);
		ck_assert(memcmp(l, sentinel, sizeof(*l)) == 0);
	}
	/* With create: a created key's answer has six ranges, a failed compare's five. */
	ck_assert_int_eq(parse_look(look_created, false, l), -EINVAL);
	ck_assert_str_eq(err, "look txn response with too many ranges");
	b = peek_body("", "", "", "", "");
	ck_assert_int_eq(parse_look(b, true, l), -EINVAL); /* succeeded, but no seq range */
	free(b);
	ck_assert_int_eq(parse_look(failed_six, true, l), -EINVAL);
	/* An error body is for parse_error. */
	memcpy(l, sentinel, sizeof(*l));
	ck_assert_int_eq(parse_look(unavailable, true, l), -EPROTO);
	ck_assert_int_eq(parse_look(unavailable, false, l), -EPROTO);
	ck_assert(memcmp(l, sentinel, sizeof(*l)) == 0);
	/* Keys the builder would refuse. */
	ck_assert_int_eq(lk_etcd_json_parse_look(look_created, strlen(look_created), NULL, true, l,
	                                         err, sizeof(err)), -EINVAL);
	{
		struct lk_etcd_look_keys k = look_keys;

		k.own_len = 0;
		ck_assert_int_eq(lk_etcd_json_parse_look(look_created, strlen(look_created), &k, true,
		                                         l, err, sizeof(err)), -EINVAL);
		k = look_keys;
		k.seq = NULL;
		ck_assert_int_eq(lk_etcd_json_parse_look(look_created, strlen(look_created), &k, true,
		                                         l, err, sizeof(err)), -EINVAL);
	}
	ck_assert(memcmp(l, sentinel, sizeof(*l)) == 0);
	free(sentinel);
	free(l);
}
END_TEST

/* Renewals' shared read: each key, then its lock's single-key holder, in order. */
START_TEST(test_txn_batch_body_and_answer)
{
	const char *keys[2] = { OWN, QKEY }, *legacy[2] = { KEY, KEY };
	size_t klens[2] = { strlen(OWN), strlen(QKEY) }, llens[2] = { strlen(KEY), strlen(KEY) };
	static const char answer[] = "{" HEADER ",\"succeeded\":true,\"responses\":["
		RANGE(KVS1(KV(OWN_B64, "12", "12", ",\"lease\":\"42\""))) "," RANGE("") ","
		RANGE("") "," RANGE(KVS1(KV(KEY_B64, "3", "3", ""))) "]}";
	static const char short_answer[] = "{" HEADER ",\"succeeded\":true,\"responses\":["
		RANGE("") "," RANGE("") "," RANGE("") "]}";
	struct lk_etcd_kv kv[2];
	bool found[2], lfound[2];
	uint64_t cid;
	int64_t rev;
	json_t *root;
	char *s;

	ck_assert_int_eq(lk_etcd_json_txn_batch(keys, klens, legacy, llens, 2, &s), 0);
	root = load(s);
	ck_assert_ptr_null(json_object_get(root, "compare"));
	ck_assert_int_eq(json_array_size(json_object_get(root, "success")), 4);
	ck_assert_str_eq(str_at(root, "success.0.request_range.key"), OWN_B64);
	ck_assert_str_eq(str_at(root, "success.1.request_range.key"), KEY_B64);
	ck_assert_str_eq(str_at(root, "success.2.request_range.key"), QKEY_B64);
	json_decref(root);
	free(s);
	ck_assert_int_eq(lk_etcd_json_txn_batch(keys, klens, legacy, llens, 0, &s), -EINVAL);
	ck_assert_int_eq(lk_etcd_json_txn_batch(keys, klens, legacy, llens, 65, &s), -EINVAL);

	ck_assert_int_eq(lk_etcd_json_parse_batch(answer, strlen(answer), keys, klens, legacy,
	                                          llens, 2, kv, found, lfound, &cid, &rev, err,
	                                          sizeof(err)), 0);
	ck_assert(found[0] && !lfound[0] && !found[1] && lfound[1]);
	ck_assert_int_eq(kv[0].create_revision, 12);
	ck_assert_int_eq(kv[0].lease, 42);
	ck_assert_int_eq(rev, 7);
	/* Too few ranges, or a range about another key, is garbage. */
	ck_assert_int_eq(lk_etcd_json_parse_batch(short_answer, strlen(short_answer), keys, klens,
	                                          legacy, llens, 2, kv, found, lfound, &cid, &rev,
	                                          err, sizeof(err)), -EINVAL);
	keys[0] = KEY;
	klens[0] = strlen(KEY);
	ck_assert_int_eq(lk_etcd_json_parse_batch(answer, strlen(answer), keys, klens, legacy,
	                                          llens, 2, kv, found, lfound, &cid, &rev, err,
	                                          sizeof(err)), -EINVAL);
}
END_TEST

START_TEST(test_parse_history)
{
	/* A count_only range has a count and no kvs; the seq key as it was then. */
	static const char then[] = "{" HEADER ",\"succeeded\":true,\"responses\":["
		RANGE(",\"count\":\"2\"") "," RANGE(KVS1(KV(QKEY_B64, "3", "19", ""))) "]}";
	static const char empty[] = "{" HEADER ",\"succeeded\":true,\"responses\":[" RANGE("") ","
		RANGE("") "]}";
	static const char *const bad[] = {
		"{" HEADER ",\"succeeded\":true,\"responses\":[" RANGE(",\"count\":\"2\"") "]}",
		"{" HEADER ",\"responses\":[" RANGE("") "," RANGE("") "]}",
		"{" HEADER ",\"succeeded\":true}",
		"{\"succeeded\":true,\"responses\":[" RANGE("") "," RANGE("") "]}",
		"{" HEADER ",\"succeeded\":true,\"responses\":[" RANGE("") ","
		RANGE(KVS1(KV(TKEY_B64, "3", "19", ""))) "]}",
		"{" HEADER ",\"succeeded\":true,\"responses\":[" RANGE(",\"count\":\"-2\"") ","
		RANGE("") "]}",
		"{" HEADER ",\"succeeded\":true,\"responses\":[" RANGE(",\"count\":\"two\"") ","
		RANGE("") "]}",
	};
	static const char compacted[] =
		"{\"error\":\"etcdserver: mvcc: required revision has been compacted\","
		"\"message\":\"etcdserver: mvcc: required revision has been compacted\",\"code\":11}";
	struct lk_etcd_history h, sentinel;

	ck_assert_int_eq(lk_etcd_json_parse_history(then, strlen(then), QKEY, strlen(QKEY), &h, err,
	                                            sizeof(err)), 0);
	ck_assert_int_eq(h.revision, 7);
	ck_assert(h.cluster_id == 14841639068965178418ULL);
	ck_assert_int_eq(h.n_candidates, 2);
	ck_assert(h.seq_found);
	ck_assert_int_eq(h.seq_mod_revision, 19);
	ck_assert_int_eq(lk_etcd_json_parse_history(empty, strlen(empty), QKEY, strlen(QKEY), &h,
	                                            err, sizeof(err)), 0);
	ck_assert_int_eq(h.n_candidates, 0);
	ck_assert(!h.seq_found);
	ck_assert_int_eq(h.seq_mod_revision, 0);

	memset(&sentinel, 0xa5, sizeof(sentinel));
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		h = sentinel;
		err[0] = '\0';
		ck_assert_msg(lk_etcd_json_parse_history(bad[i], strlen(bad[i]), QKEY, strlen(QKEY),
		                                         &h, err, sizeof(err)) == -EINVAL,
		              "accepted %s", bad[i]);
		ck_assert(err[0]);
		ck_assert(memcmp(&h, &sentinel, sizeof(h)) == 0);
	}
	/* The revision asked about was compacted away. */
	ck_assert_int_eq(lk_etcd_json_parse_history(compacted, strlen(compacted), QKEY,
	                                            strlen(QKEY), &h, err, sizeof(err)), -EPROTO);
	ck_assert(memcmp(&h, &sentinel, sizeof(h)) == 0);
	ck_assert_int_eq(lk_etcd_json_parse_history(then, strlen(then), QKEY, 0, &h, err,
	                                            sizeof(err)), -EINVAL);
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

	ck_assert_int_eq(lk_etcd_json_parse_watch(created, strlen(created), KEY, strlen(KEY), false, &w,
	                                          err, sizeof(err)), 0);
	ck_assert(w.created);
	ck_assert(!w.canceled);
	ck_assert_int_eq(w.revision, 7);
	ck_assert_int_eq(w.n_events, 0);

	/* A PUT has no "type". */
	ck_assert_int_eq(lk_etcd_json_parse_watch(put, strlen(put), KEY, strlen(KEY), false, &w, err,
	                                          sizeof(err)), 0);
	ck_assert(!w.created);
	ck_assert_int_eq(w.n_events, 1);
	ck_assert_int_eq(w.n_deletes, 0);
	ck_assert_int_eq(w.max_mod_revision, 4);

	ck_assert_int_eq(lk_etcd_json_parse_watch(del, strlen(del), KEY, strlen(KEY), false, &w, err,
	                                          sizeof(err)), 0);
	ck_assert_int_eq(w.n_events, 2);
	ck_assert_int_eq(w.n_deletes, 1);
	ck_assert_int_eq(w.max_mod_revision, 9);

	ck_assert_int_eq(lk_etcd_json_parse_watch(other, strlen(other), KEY, strlen(KEY), false, &w, err,
	                                          sizeof(err)), 0);
	ck_assert_int_eq(w.n_events, 1);
	ck_assert_int_eq(w.n_deletes, 0);

	ck_assert_int_eq(lk_etcd_json_parse_watch(canceled, strlen(canceled), KEY, strlen(KEY), false, &w,
	                                          err, sizeof(err)), 0);
	ck_assert(w.canceled);
	ck_assert_int_eq(w.compact_revision, 4);
	ck_assert_int_eq(w.revision, 0);
	ck_assert_str_eq(w.cancel_reason, "");

	ck_assert_int_eq(lk_etcd_json_parse_watch(unauth, strlen(unauth), KEY, strlen(KEY), false, &w, err,
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
	ck_assert_int_eq(lk_etcd_json_parse_watch(b, strlen(b), KEY, strlen(KEY), false, &w, err,
	                                          sizeof(err)), 0);
	ck_assert_int_eq(w.n_events, 2);
	ck_assert_int_eq(w.n_deletes, 1);
	b = "{\"result\":{\"events\":[{\"type\":\"EXPLODE\",\"kv\":{\"key\":\"" KEY_B64 "\"}}]}}";
	ck_assert_int_eq(lk_etcd_json_parse_watch(b, strlen(b), KEY, strlen(KEY), false, &w, err,
	                                          sizeof(err)), -EINVAL);
	ck_assert_str_eq(err, "unknown watch event type");
	b = "{\"result\":{\"events\":{}}}";
	ck_assert_int_eq(lk_etcd_json_parse_watch(b, strlen(b), KEY, strlen(KEY), false, &w, err,
	                                          sizeof(err)), -EINVAL);
	b = "{\"result\":{\"events\":[5]}}";
	ck_assert_int_eq(lk_etcd_json_parse_watch(b, strlen(b), KEY, strlen(KEY), false, &w, err,
	                                          sizeof(err)), -EINVAL);
	b = "{\"created\":true}";
	ck_assert_int_eq(lk_etcd_json_parse_watch(b, strlen(b), KEY, strlen(KEY), false, &w, err,
	                                          sizeof(err)), -EINVAL);
}
END_TEST

/* A watch on the candidates' prefix: a DELETE of any candidate is a handoff to look at; the
 * prefix itself and the lock's other keys are not candidates. */
START_TEST(test_parse_watch_under_prefix)
{
	static const char line[] = "{\"result\":{" HEADER ",\"events\":["
		"{\"type\":\"DELETE\",\"kv\":{\"key\":\"" OWN_B64 "\",\"mod_revision\":\"31\"}},"
		"{\"type\":\"DELETE\",\"kv\":{\"key\":\"" OTHER_B64 "\",\"mod_revision\":\"32\"}},"
		"{\"type\":\"DELETE\",\"kv\":{\"key\":\"" PKEY_B64 "\",\"mod_revision\":\"33\"}},"
		"{\"type\":\"DELETE\",\"kv\":{\"key\":\"" KEY_B64 "\",\"mod_revision\":\"34\"}},"
		"{\"type\":\"DELETE\",\"kv\":{\"key\":\"" TKEY_B64 "\",\"mod_revision\":\"35\"}},"
		"{\"kv\":{\"key\":\"" OTHER_B64 "\",\"create_revision\":\"36\","
		"\"mod_revision\":\"36\",\"version\":\"1\",\"value\":\"YmV0YQ==\",\"lease\":\"99\"}}"
		"]}}";
	struct lk_etcd_watch w;

	ck_assert_msg(lk_etcd_json_parse_watch(line, strlen(line), PKEY, strlen(PKEY), true, &w,
	                                       err, sizeof(err)) == 0, "%s", err);
	ck_assert_int_eq(w.n_events, 6);
	ck_assert_int_eq(w.n_deletes, 2);
	ck_assert_int_eq(w.max_mod_revision, 36);
	/* Without under, only the key itself. */
	ck_assert_int_eq(lk_etcd_json_parse_watch(line, strlen(line), PKEY, strlen(PKEY), false,
	                                          &w, err, sizeof(err)), 0);
	ck_assert_int_eq(w.n_events, 6);
	ck_assert_int_eq(w.n_deletes, 1);
	ck_assert_int_eq(lk_etcd_json_parse_watch(line, strlen(line), OWN, strlen(OWN), false, &w,
	                                          err, sizeof(err)), 0);
	ck_assert_int_eq(w.n_deletes, 1);
	/* A candidate's key is below its lock's prefix, not below its own name. */
	ck_assert_int_eq(lk_etcd_json_parse_watch(line, strlen(line), OWN, strlen(OWN), true, &w,
	                                          err, sizeof(err)), 0);
	ck_assert_int_eq(w.n_deletes, 0);
	ck_assert_int_eq(lk_etcd_json_parse_watch(line, strlen(line), PKEY, 0, true, &w, err,
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
	struct lk_etcd_look *l = malloc(sizeof(*l));
	struct lk_etcd_history h;
	struct lk_etcd_keepalive ka;
	struct lk_etcd_watch w;
	struct lk_etcd_grant g;
	struct lk_etcd_auth a;
	struct lk_etcd_error e;
	struct lk_etcd_status st;

	for (size_t round = 0; round < len * 4 + len; round++) {
		size_t n = len;
		int rc[12];

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
		rc[5] = lk_etcd_json_parse_watch(copy, n, KEY, strlen(KEY), false, &w, err,
		                                 sizeof(err));
		rc[6] = lk_etcd_json_parse_status(copy, n, &st, err, sizeof(err));
		rc[7] = lk_etcd_json_parse_look(copy, n, &look_keys, true, l, err, sizeof(err));
		rc[8] = lk_etcd_json_parse_look(copy, n, &look_keys, false, l, err, sizeof(err));
		rc[9] = lk_etcd_json_parse_history(copy, n, QKEY, strlen(QKEY), &h, err,
		                                   sizeof(err));
		rc[10] = lk_etcd_json_parse_watch(copy, n, PKEY, strlen(PKEY), true, &w, err,
		                                  sizeof(err));
		rc[11] = lk_etcd_json_parse_error(copy, n, &e);
		for (int i = 0; i < 12; i++)
			ck_assert_msg(rc[i] == 0 || rc[i] == -EINVAL || rc[i] == -EPROTO,
			              "parser %d returned %d", i, rc[i]);
		/* No prefix of a JSON object (without trailing blanks) is one. */
		if (round < len && round > 0)
			for (int i = 0; i < 12; i++)
				ck_assert_msg(rc[i] != 0, "parser %d accepted a truncated body", i);
	}
	free(copy);
	free(r);
	free(t);
	free(l);
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
		"{\"result\":{" HEADER ",\"events\":[{\"type\":\"DELETE\",\"kv\":{\"key\":\"" OTHER_B64
		"\",\"mod_revision\":\"9\"}}]}}",
		"{" HEADER ",\"token\":\"kzUEGHdUibrwbOkl.22\"}",
		look_created,
		look_failed,
		"{" HEADER ",\"succeeded\":true,\"responses\":[" RANGE("") "," RANGE(KVS1(FENCE_KV)) ","
		RANGE(KVS1(KV(TKEY_B64, "4", "43", VAL("cmVsZWFzZWQgNDI=")))) "," RANGE("") ","
		RANGE(",\"kvs\":[" OTHER_KV "],\"count\":\"1\"") "]}",
		"{" HEADER ",\"succeeded\":true,\"responses\":[" RANGE(",\"count\":\"2\"") ","
		RANGE(KVS1(KV(QKEY_B64, "3", "19", ""))) "]}",
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
	tcase_add_test(tc, test_txn_look_create_body);
	tcase_add_test(tc, test_txn_look_without_create_only_reads);
	tcase_add_test(tc, test_txn_look_rejects_bad_arguments);
	tcase_add_test(tc, test_txn_history_body);
	tcase_add_test(tc, test_txn_release_body);
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
	tcase_add_test(tc, test_parse_look_created);
	tcase_add_test(tc, test_parse_look_failed_compare);
	tcase_add_test(tc, test_parse_look_peek);
	tcase_add_test(tc, test_parse_look_marker_values);
	tcase_add_test(tc, test_parse_look_fence_values);
	tcase_add_test(tc, test_parse_history);
	tcase_add_test(tc, test_txn_batch_body_and_answer);
	tcase_add_test(tc, test_headers_carry_cluster_id);
	tcase_add_test(tc, test_parse_auth);
	tcase_add_test(tc, test_parse_watch_lines);
	tcase_add_test(tc, test_parse_watch_event_types);
	tcase_add_test(tc, test_parse_watch_under_prefix);
	tcase_add_test(tc, test_parse_status);
	tcase_add_test(tc, test_parse_error_bodies);
	suite_add_tcase(s, tc);

	tc = tcase_create("garbage");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_garbage_is_einval_with_a_message);
	tcase_add_test(tc, test_garbage_wrong_types);
	tcase_add_test(tc, test_garbage_bad_keys_and_values);
	tcase_add_test(tc, test_parse_look_garbage);
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
