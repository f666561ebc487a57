/* libFuzzer target: the etcd JSON gateway decoders (locks/etcd_json.c).
 *
 * The input is one response body (or one watch-stream line), handed to every parser the
 * header exports, each on its own exact-size copy without a trailing NUL (curl's buffers have
 * none either): grant, keepalive, range, txn, look (with create and without: the two shapes
 * of the election's answer), history, the renewals' batch read (two keys), auth, watch (of
 * one key and of a prefix), a watch line's last event on the release marker, status and
 * error. The keys are the ones the seeds use, as in tests/check_etcd_json.c: "lk/test" for
 * range, txn and the single-key watch; for a look, our candidate "lk/test/000000000000002a0001"
 * below the prefix "lk/test/", with "lk/test:fence", "lk/test:state", "lk/test:seq" and the
 * legacy "lk/test"; the seq key for history; the prefix for the watch with under.
 *
 * Properties (abort() on failure), from etcd_json.h's contract:
 * - a parser returns 0, -EPROTO or -EINVAL; on -EINVAL err holds a NUL-terminated message;
 *   on failure *out is untouched ("written only on success");
 * - -EPROTO means "an etcd error object": the body is a JSON object with an "error" member,
 *   and (the header: "read it with lk_etcd_json_parse_error()") that parser accepts it
 *   (corpus/etcd_json/regress-error-neither-string-nor-object: {"error":2} broke this once).
 * - on success the values keep the header's bounds: a grant's ID and TTL are positive and
 *   the TTL at most LK_ETCD_JSON_MAX_TTL; a keepalive's TTL is within [0, MAX_TTL]; a kv's
 *   value fits its cap and is NUL-terminated (and empty when value_too_long); revisions are
 *   not negative; an auth token is printable ASCII without spaces; a watch counts no more
 *   deletes than events; an error message is printable ASCII;
 * - a look's queue keeps its shape: at most the two oldest candidates (n_first <= 2, never
 *   more than n_candidates), strictly in create_revision order; a fence found and not bad
 *   is positive; a release named by the marker is a revision (>= 0, and 0 without a marker);
 *   the seq key is only reported by a look that created our key.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "locks/etcd_json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                     \
	do {                                                                            \
		if (!(cond)) {                                                          \
			fprintf(stderr, "fuzz_etcd_json: %s:%d: property failed: %s\n", \
			        __FILE__, __LINE__, #cond);                             \
			abort();                                                        \
		}                                                                       \
	} while (0)

#define KEY  "lk/test"
#define FKEY "lk/test:fence"
#define TKEY "lk/test:state"
#define QKEY "lk/test:seq"
#define PKEY "lk/test/"
#define OWN  "lk/test/000000000000002a0001"
#define SENTINEL 0xa5

/* A copy of the body in a buffer of exactly its size, so that ASan sees a read past it. */
static char *body_copy(const uint8_t *data, size_t size)
{
	char *b = malloc(size ? size : 1);

	if (b)
		memcpy(b, data, size);
	return b;
}

static const struct lk_etcd_look_keys look_keys = {
	.own = OWN, .own_len = sizeof(OWN) - 1,
	.prefix = PKEY, .prefix_len = sizeof(PKEY) - 1,
	.fence = FKEY, .fence_len = sizeof(FKEY) - 1,
	.state = TKEY, .state_len = sizeof(TKEY) - 1,
	.seq = QKEY, .seq_len = sizeof(QKEY) - 1,
	.legacy = KEY, .legacy_len = sizeof(KEY) - 1,
};

static bool untouched(const void *p, size_t n)
{
	const unsigned char *c = p;

	for (size_t i = 0; i < n; i++)
		if (c[i] != SENTINEL)
			return false;
	return true;
}

static bool printable(const char *s, size_t cap, bool space_ok)
{
	size_t n = strnlen(s, cap);

	if (n == cap)
		return false; /* not NUL-terminated within its buffer */
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] < (space_ok ? 0x20 : 0x21) || (unsigned char)s[i] > 0x7e)
			return false;
	return true;
}

/* The result of one parser call, checked the same way for all of them. */
/* Whether body is a JSON object with an "error" member, by jansson directly. */
static bool error_object(const char *body, size_t len)
{
	json_t *root = json_loadb(body, len, 0, NULL);
	bool yes = json_is_object(root) && json_object_get(root, "error");

	json_decref(root);
	return yes;
}

static void check_rc(int rc, const char *err, size_t errlen, const void *out, size_t outlen,
                     const char *body, size_t len)
{
	struct lk_etcd_error e;

	CHECK(rc == 0 || rc == -EPROTO || rc == -EINVAL);
	if (rc == 0)
		return;
	CHECK(untouched(out, outlen));
	if (rc == -EINVAL)
		CHECK(strnlen(err, errlen) < errlen);
	if (rc == -EPROTO)
		CHECK(error_object(body, len));
	if (rc == -EPROTO)
		CHECK(lk_etcd_json_parse_error(body, len, &e) == 0);
}

static void check_kv(const struct lk_etcd_kv *kv)
{
	CHECK(kv->value_len <= LK_ETCD_JSON_MAX_VALUE);
	CHECK(kv->value[kv->value_len] == '\0');
	CHECK(!kv->value_too_long || kv->value_len == 0);
	CHECK(kv->create_revision >= 0 && kv->mod_revision >= 0 && kv->lease >= 0);
}

static void check_look(const struct lk_etcd_look *lk, bool create)
{
	CHECK(lk->revision >= 0);
	if (lk->own_found)
		check_kv(&lk->own);
	if (lk->legacy_found)
		check_kv(&lk->legacy);
	/* "its value when found and not bad": a positive decimal integer. */
	CHECK(!lk->fence_bad || lk->fence_found);
	if (lk->fence_found && !lk->fence_bad)
		CHECK(lk->fence > 0);
	CHECK(lk->released_rev >= 0 && lk->state_mod_revision >= 0);
	CHECK(lk->state_found || (lk->released_rev == 0 && lk->state_mod_revision == 0));
	/* The two oldest of n_candidates, oldest first. */
	CHECK(lk->n_first <= 2 && (int64_t)lk->n_first <= lk->n_candidates);
	for (size_t i = 0; i < lk->n_first; i++)
		check_kv(&lk->first[i]);
	for (size_t i = lk->n_first; i < 2; i++)
		CHECK(!lk->first_own[i]);
	if (lk->n_first == 2)
		CHECK(lk->first[0].create_revision < lk->first[1].create_revision);
	/* Only the create branch reads the seq key; without create, etcd says succeeded. */
	CHECK(!lk->seq_found || (create && lk->succeeded));
	CHECK(lk->seq_found || lk->seq_mod_revision == 0);
	CHECK(lk->seq_mod_revision >= 0);
	CHECK(create || lk->succeeded);
}

#define CALL(out, expr)                                                                  \
	do {                                                                             \
		char err_[256];                                                          \
		char *b_ = body_copy(data, size);                                        \
		int rc_;                                                                 \
		if (!b_)                                                                 \
			return 0;                                                        \
		memset(&(out), SENTINEL, sizeof(out));                                   \
		memset(err_, 'E', sizeof(err_));                                         \
		err_[sizeof(err_) - 1] = '\0';                                           \
		{                                                                        \
			const char *body = b_;                                           \
			char *err = err_;                                                \
			size_t errlen = sizeof(err_);                                    \
			rc_ = (expr);                                                    \
		}                                                                        \
		check_rc(rc_, err_, sizeof(err_), &(out), sizeof(out), b_, size);        \
		free(b_);                                                                \
		ok = rc_ == 0;                                                           \
	} while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct lk_etcd_grant g;
	struct lk_etcd_keepalive ka;
	struct lk_etcd_range rg;
	struct lk_etcd_txn tx;
	struct lk_etcd_auth au;
	struct lk_etcd_watch w;
	struct lk_etcd_status st;
	struct lk_etcd_error e;
	char *b;
	bool ok;
	int rc;

	/* Bodies over the cap are refused before parsing; 64 KiB shows that as well as 1 MiB. */
	if (size > 65536)
		return 0;

	CALL(g, lk_etcd_json_parse_grant(body, size, &g, err, errlen));
	if (ok)
		CHECK(g.id > 0 && g.ttl > 0 && g.ttl <= LK_ETCD_JSON_MAX_TTL);

	CALL(ka, lk_etcd_json_parse_keepalive(body, size, &ka, err, errlen));
	if (ok)
		CHECK(ka.ttl >= 0 && ka.ttl <= LK_ETCD_JSON_MAX_TTL);

	CALL(rg, lk_etcd_json_parse_range(body, size, KEY, strlen(KEY), &rg, err, errlen));
	if (ok) {
		CHECK(rg.revision >= 0);
		if (rg.found)
			check_kv(&rg.kv);
	}

	CALL(tx, lk_etcd_json_parse_txn(body, size, KEY, strlen(KEY), &tx, err, errlen));
	if (ok) {
		CHECK(tx.revision >= 0);
		if (tx.found)
			check_kv(&tx.kv);
	}

	for (int create = 0; create < 2; create++) {
		struct lk_etcd_look lk;

		CALL(lk, lk_etcd_json_parse_look(body, size, &look_keys, create, &lk, err, errlen));
		if (ok)
			check_look(&lk, create);
	}

	{
		struct lk_etcd_history hs;

		CALL(hs, lk_etcd_json_parse_history(body, size, QKEY, strlen(QKEY), &hs, err,
		                                    errlen));
		if (ok) {
			CHECK(hs.revision >= 0 && hs.n_candidates >= 0 && hs.seq_mod_revision >= 0);
			CHECK(hs.seq_found || hs.seq_mod_revision == 0);
		}
	}

	CALL(au, lk_etcd_json_parse_auth(body, size, &au, err, errlen));
	if (ok)
		CHECK(au.token[0] && printable(au.token, sizeof(au.token), false));

	for (int under = 0; under < 2; under++) {
		CALL(w, lk_etcd_json_parse_watch(body, size, under ? PKEY : KEY,
		                                 strlen(under ? PKEY : KEY), under, &w, err, errlen));
		if (ok) {
			CHECK(w.revision >= 0 && w.compact_revision >= 0 && w.max_mod_revision >= 0);
			CHECK(w.n_deletes <= w.n_events);
			CHECK(strnlen(w.cancel_reason, sizeof(w.cancel_reason)) <
			      sizeof(w.cancel_reason));
		}
	}

	{
		/* Renewals' shared read, for two keys. */
		static const char *const keys[2] = { OWN, QKEY }, *const legacy[2] = { KEY, KEY };
		static const size_t klens[2] = { sizeof(OWN) - 1, sizeof(QKEY) - 1 };
		static const size_t llens[2] = { sizeof(KEY) - 1, sizeof(KEY) - 1 };
		struct {
			struct lk_etcd_kv kv[2];
			bool found[2], lfound[2];
		} bt;

		CALL(bt, lk_etcd_json_parse_batch(body, size, keys, klens, legacy, llens, 2, bt.kv,
		                                  bt.found, bt.lfound, NULL, NULL, err, errlen));
		for (int i = 0; ok && i < 2; i++)
			CHECK(!bt.found[i] || (bt.kv[i].create_revision > 0 &&
			                       bt.kv[i].value_len <= LK_ETCD_JSON_MAX_VALUE));
	}
	{
		struct lk_etcd_watch_key wk;

		CALL(wk, lk_etcd_json_parse_watch_key(body, size, TKEY, strlen(TKEY), &wk, err,
		                                      errlen));
		if (ok)
			CHECK(!(wk.put && wk.deleted) && wk.released_rev >= 0 &&
			      (wk.put || wk.released_rev == 0));
	}

	CALL(st, lk_etcd_json_parse_status(body, size, &st, err, errlen));
	if (ok)
		CHECK(st.revision >= 0);

	/* The error parser has no err buffer: checked by hand. */
	b = body_copy(data, size);
	if (!b)
		return 0;
	memset(&e, SENTINEL, sizeof(e));
	rc = lk_etcd_json_parse_error(b, size, &e);
	CHECK(rc == 0 || rc == -EINVAL);
	if (rc == 0)
		CHECK(printable(e.message, sizeof(e.message), true));
	else
		CHECK(untouched(&e, sizeof(e)));
	free(b);
	return 0;
}
