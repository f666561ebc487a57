/* The checks every backend passes through struct lk_backend_ops (tests/backend_contract.h):
 * the answers of acquire, renew and release, fencing tokens, release notices to followers, the
 * lifetime rules (no callback from inside a call, after key_free or after free) and behaviour
 * during outages. Each test runs against a fresh server of the backend under test. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include <check.h>

#include "locks/backend.h"
#include "tests/backend_contract.h"
#include "tests/harness.h"

static const struct lk_contract *ct;

static const struct lk_backend_ops *ct_ops(void)
{
	return lk_test_backend()->ops;
}

static const char *ct_log(void)
{
	return lk_test_logs()->text;
}

/* Make the backend on address (the server's if NULL; timeout_ms 0: the usual) and wait until it
 * is ready. */
static void ct_start_at(const char *address, int64_t timeout_ms)
{
	char err[256];

	ck_assert_msg(ct->make(address ? address : ct->srv->address,
	                       timeout_ms ? timeout_ms : ct->timeout_ms, err, sizeof(err)) == 0,
	              "%s", err);
	ck_assert_msg(lk_test_ready_within(LK_TEST_READY_MS), "backend never became ready:\n%s",
	              ct_log());
}

static void ct_start(void)
{
	ct_start_at(NULL, 0);
}

/* ---- acquire, renew, release ------------------------------------------------------------ */

/* What the server stores is still what it was (the same holder's same tenure). */
static void ct_unchanged(const struct lk_contract_stored *was)
{
	struct lk_contract_stored now = ct->stored();

	ck_assert(now.found);
	ck_assert_str_eq(now.holder, was->holder);
	ck_assert_uint_eq(now.token, was->token);
}

static int64_t ct_holdoff(struct lk_backend_key *k, int64_t ttl_ms, char *why, size_t cap)
{
	return ct_ops()->holdoff_until(k, ttl_ms, why, cap);
}

START_TEST(test_contract_acquire_returns_token_valid_from_send)
{
	struct lk_contract_stored st;
	struct lk_backend_key *k;
	struct lk_test_reply g;
	int64_t before;

	ct_start();
	k = lk_test_key_new("alpha", NULL);
	before = lk_mono_ns();
	g = lk_test_acquire(k, 10000);
	ck_assert_int_eq(g.status, LK_REPLY_OK);
	ck_assert_uint_gt(g.token, 0);
	ck_assert_int_eq(g.ttl_ms, 10000);
	/* Validity counts from when the request was sent, not from the reply (I1). */
	ck_assert_int_ge(g.sent_ns, before);
	ck_assert_int_le(g.sent_ns, g.at_ns);
	st = ct->stored();
	ck_assert(st.found);
	ck_assert_str_eq(st.holder, "alpha");
	ck_assert_uint_eq(st.token, g.token);
	ck_assert_int_ge(ct->ttl_left_ms(), 9000);
	if (ct->acquired)
		ct->acquired(&g);
}
END_TEST

START_TEST(test_contract_second_identity_sees_held_with_the_holder_if_showable)
{
	struct lk_backend_key *a, *b;
	struct lk_test_reply g;

	ct_start();
	a = lk_test_key_new("pod:with:colons", NULL);
	b = lk_test_key_new("beta", NULL);
	lk_test_acquire_ok(a, 10000);
	g = lk_test_acquire(b, 10000);
	ck_assert_int_eq(g.status, LK_REPLY_HELD);
	ck_assert(g.has_holder);
	ck_assert_str_eq(g.holder, "pod:with:colons");
	ck_assert_str_eq(ct->stored().holder, "pod:with:colons");

	/* A value with bytes that could break a log or protocol line has no holder to show. */
	ct->put("evil\nLEADER x");
	g = lk_test_acquire(b, 10000);
	ck_assert_int_eq(g.status, LK_REPLY_HELD);
	ck_assert(!g.has_holder);
}
END_TEST

/* Another process with the same identity (a misconfiguration) must not lose its key: without
 * the mark of an unanswered acquire of ours, it is HELD, not deleted. */
START_TEST(test_contract_own_identity_without_a_lost_acquire_is_held)
{
	struct lk_contract_stored st;
	struct lk_backend_key *k;
	struct lk_test_reply g;

	ct_start();
	k = lk_test_key_new("alpha", NULL);
	ct->put("alpha");
	st = ct->stored();
	g = lk_test_acquire(k, 30000);
	ck_assert_int_eq(g.status, LK_REPLY_HELD);
	ck_assert_str_eq(g.holder, "alpha");
	ct_unchanged(&st);
}
END_TEST

START_TEST(test_contract_renew_ok_extends_validity_from_send)
{
	struct lk_backend_key *k;
	struct lk_test_reply g;
	int64_t before;
	uint64_t tok;

	ct_start();
	k = lk_test_key_new("alpha", NULL);
	tok = lk_test_acquire_ok(k, 3000);
	lk_test_run_for(1100);
	ck_assert_int_le(ct->ttl_left_ms(), 2000);
	before = lk_mono_ns();
	g = lk_test_renew(k, tok, 3000);
	ck_assert_int_eq(g.status, LK_REPLY_OK);
	ck_assert_uint_eq(g.token, tok);
	ck_assert_int_eq(g.ttl_ms, 3000);
	ck_assert_int_ge(g.sent_ns, before);
	ck_assert_int_le(g.sent_ns, g.at_ns);
	ck_assert_int_ge(ct->ttl_left_ms(), 2000);
	ck_assert_uint_eq(ct->stored().token, tok);
	if (ct->renewed)
		ct->renewed(k, tok);
}
END_TEST

START_TEST(test_contract_renew_after_expiry_is_gone_for_good)
{
	struct lk_backend_key *k;
	uint64_t tok;

	ct_start();
	k = lk_test_key_new("alpha", NULL);
	tok = lk_test_acquire_ok(k, 10000);
	ct->expire();
	ck_assert(!ct->stored().found);
	ck_assert_int_eq(lk_test_renew(k, tok, 10000).status, LK_REPLY_GONE);
	/* The tenure is over: a later renewal knows it too. */
	ck_assert_int_eq(lk_test_renew(k, tok, 10000).status, LK_REPLY_GONE);
}
END_TEST

START_TEST(test_contract_renew_after_delete_is_gone_and_leaves_nothing)
{
	struct lk_contract_stored st;
	struct lk_backend_key *k;
	uint64_t tok;

	ct_start();
	k = lk_test_key_new("alpha", NULL);
	tok = lk_test_acquire_ok(k, 10000);
	st = ct->stored();
	ct->del();
	ck_assert_int_eq(lk_test_renew(k, tok, 10000).status, LK_REPLY_GONE);
	/* Not recreated, and no orphaned lease either (revoked, fire and forget). */
	lk_test_run_for(200);
	ck_assert(!ct->stored().found);
	if (ct->lease_alive)
		ck_assert(!ct->lease_alive(st.lease));
}
END_TEST

/* Another client overwrote the key (recreate: deleted it first); our renewal says TAKEN and
 * neither extends nor touches what is there now. */
static void ct_renew_is_taken(bool recreate)
{
	struct lk_contract_stored st;
	struct lk_backend_key *k;
	struct lk_test_reply g;
	uint64_t tok;

	ct_start();
	k = lk_test_key_new("alpha", NULL);
	tok = lk_test_acquire_ok(k, 10000);
	if (recreate)
		ct->del();
	ct->put("gamma");
	st = ct->stored();
	g = lk_test_renew(k, tok, 10000);
	ck_assert_int_eq(g.status, LK_REPLY_TAKEN);
	ck_assert_str_eq(g.holder, "gamma");
	lk_test_run_for(200);
	ct_unchanged(&st);
	ck_assert_int_eq(ct->ttl_left_ms(), -1);
}

START_TEST(test_contract_renew_after_overwrite_is_taken)
{
	ct_renew_is_taken(false);
}
END_TEST

START_TEST(test_contract_renew_after_recreated_by_another_is_taken)
{
	ct_renew_is_taken(true);
}
END_TEST

START_TEST(test_contract_release_ok_then_gone)
{
	struct lk_contract_stored st;
	struct lk_backend_key *k;
	uint64_t tok;

	ct_start();
	k = lk_test_key_new("alpha", NULL);
	tok = lk_test_acquire_ok(k, 10000);
	st = ct->stored();
	ck_assert_int_eq(lk_test_release(k, tok).status, LK_REPLY_OK);
	ck_assert(!ct->stored().found);
	lk_test_run_for(200);
	if (ct->lease_alive)
		ck_assert(!ct->lease_alive(st.lease));
	/* Idempotent (I3): the retry of a release finds nothing of ours. */
	ck_assert_int_eq(lk_test_release(k, tok).status, LK_REPLY_GONE);
}
END_TEST

START_TEST(test_contract_release_never_deletes_another_holders_key)
{
	struct lk_backend_key *k;
	struct lk_contract_stored st;
	uint64_t tok;

	ct_start();
	k = lk_test_key_new("alpha", NULL);
	tok = lk_test_acquire_ok(k, 10000);

	/* Our own identity but an older tenure's token is not ours either. */
	st = ct->stored();
	ck_assert_uint_eq(st.token, tok);
	ck_assert_int_eq(lk_test_release(k, tok - 1).status, LK_REPLY_GONE);
	ct_unchanged(&st);

	/* Overwritten by another client. */
	ct->put("gamma");
	st = ct->stored();
	ck_assert_int_eq(lk_test_release(k, tok).status, LK_REPLY_GONE);
	ct_unchanged(&st);

	/* Deleted and created again by someone else. */
	ct->del();
	ct->put("delta");
	st = ct->stored();
	ck_assert_int_eq(lk_test_release(k, tok).status, LK_REPLY_GONE);
	ct_unchanged(&st);
}
END_TEST

START_TEST(test_contract_tokens_strictly_increase_across_holders_and_restart)
{
	struct lk_backend_key *a, *b;
	uint64_t t1, t2, t3, t4;

	ct_start();
	a = lk_test_key_new("alpha", NULL);
	b = lk_test_key_new("beta", NULL);
	t1 = lk_test_acquire_ok(a, 10000);
	ck_assert_int_eq(lk_test_release(a, t1).status, LK_REPLY_OK);
	t2 = lk_test_acquire_ok(b, 10000);
	ck_assert_uint_gt(t2, t1);
	ck_assert_int_eq(lk_test_release(b, t2).status, LK_REPLY_OK);
	t3 = lk_test_acquire_ok(a, 10000);
	ck_assert_uint_gt(t3, t2);
	ck_assert_int_eq(lk_test_release(a, t3).status, LK_REPLY_OK);

	/* Whether the server keeps its data (etcd) or comes back empty (our Redis). */
	ck_assert_int_eq(lk_test_server_restart(ct->srv), 0);
	t4 = lk_test_acquire_answered(b, 10000).token;
	ck_assert_uint_gt(t4, t3);
}
END_TEST

START_TEST(test_contract_bad_arguments_fail_at_once_and_an_unknown_tenure_is_gone)
{
	struct lk_backend_key *k;
	struct lk_test_reply g = { 0 };

	ct_start();
	k = lk_test_key_new("alpha", NULL);
	/* Never acquired here. Answered from the loop, not inline (lk_test_renew checks). */
	ck_assert_int_eq(lk_test_renew(k, 12345, 10000).status, LK_REPLY_GONE);
	ck_assert_int_eq(ct_ops()->acquire(k, 0, lk_test_on_reply, &g), -EINVAL);
	ck_assert_int_eq(ct_ops()->renew(k, 0, 1000, lk_test_on_reply, &g), -EINVAL);
	ck_assert_int_eq(ct_ops()->release(k, 0, lk_test_on_reply, &g), -EINVAL);
	lk_test_run_for(100);
	ck_assert_int_eq(g.n, 0);
}
END_TEST

/* Once the server has been up longer than the ttl and nothing was lost, nothing holds off. */
START_TEST(test_contract_no_holdoff_after_a_release_on_a_settled_server)
{
	struct lk_backend_key *k;
	char why[256] = "";
	uint64_t tok;

	ct_start();
	k = lk_test_key_new("alpha", NULL);
	tok = lk_test_acquire_ok(k, 1000);
	ck_assert_int_eq(lk_test_release(k, tok).status, LK_REPLY_OK);
	lk_test_run_for(1100);
	ck_assert_int_le(ct_holdoff(k, 1000, why, sizeof(why)), lk_mono_ns());
	lk_test_acquire_ok(k, 1000);
}
END_TEST

/* A server that lost its data may have granted tenures that still run: new ones wait one ttl
 * from when the backend learned of it (Redis: at the reconnect, etcd: from the next answer).
 * Every key hears RECONNECTED, watched or not, and tokens go on increasing. */
START_TEST(test_contract_data_loss_holds_off_one_ttl_and_tokens_still_increase)
{
	const int64_t ttl = 2000;
	struct lk_test_notified nt = { 0 };
	struct lk_backend_key *k;
	char why[256] = "";
	int64_t lost_at, until;
	uint64_t tok;

	ct_start();
	k = lk_test_key_new("alpha", &nt);
	tok = lk_test_acquire_ok(k, ttl);
	/* Settled first: a young Redis holds off by itself. */
	while ((until = ct_holdoff(k, ttl, why, sizeof(why))) > lk_mono_ns())
		lk_test_run_for((int)((until - lk_mono_ns()) / 1000000) + 10);
	lost_at = lk_mono_ns();
	ct->lose_data();
	for (int i = 0; i < 100 && (until = ct_holdoff(k, ttl, why, sizeof(why))) <= lk_mono_ns();
	     i++) {
		struct lk_test_reply g = { 0 };

		if (ct_ops()->acquire(k, ttl, lk_test_on_reply, &g) == 0) {
			lk_test_wait_reply(&g);
			ck_assert_msg(g.status != LK_REPLY_OK, "acquired before any hold-off:\n%s",
			              ct_log());
		}
		lk_test_run_for(100);
	}
	ck_assert_msg(until > lk_mono_ns(), "no hold-off after the loss:\n%s", ct_log());
	ck_assert_int_ge(until, lost_at + ttl * 1000000);
	ck_assert_int_le(until, lk_mono_ns() + ttl * 1000000);
	ck_assert_msg(strstr(why, ct->loss_why), "%s", why);
	ck_assert_msg(strstr(ct_log(), ct->loss_log), "%s", ct_log());
	ck_assert_msg(nt.reconnected > 0, "no RECONNECTED notice");
	ck_assert_int_eq(nt.n, 0);
	printf("%s lost its data: hold-off %" PRId64 "ms after the loss (%s)\n",
	       lk_test_backend()->ops->type, (until - lost_at) / 1000000, why);

	/* Once one ttl has passed, no hold-off; the next token is still larger. */
	lk_test_run_for((int)((until - lk_mono_ns()) / 1000000) + 20);
	ck_assert_int_le(ct_holdoff(k, ttl, why, sizeof(why)), lk_mono_ns());
	ck_assert_uint_gt(lk_test_acquire_answered(k, ttl).token, tok);
}
END_TEST

/* ---- notices to followers --------------------------------------------------------------- */

/* Watch and let the notices of the new subscription or stream pass. */
static void ct_watch(struct lk_backend_key *k, struct lk_test_notified *nt)
{
	ct_ops()->watch(k, true);
	/* A new stream notifies (etcd): deletions may have been missed before it. */
	if (ct->watch_notifies_on_start)
		ck_assert_msg(lk_test_notified_within(nt, LK_TEST_WAIT_MS), "no notify on watch");
	lk_test_run_for(300);
	nt->n = 0;
}

START_TEST(test_contract_release_notifies_watching_follower)
{
	struct lk_backend_key *leader, *follower;
	struct lk_test_notified nt = { 0 };
	uint64_t tok;

	ct_start();
	leader = lk_test_key_new("alpha", NULL);
	follower = lk_test_key_new("beta", &nt);
	tok = lk_test_acquire_ok(leader, 10000);
	ct_watch(follower, &nt);
	ck_assert_int_eq(lk_test_release(leader, tok).status, LK_REPLY_OK);
	ck_assert_msg(lk_test_notified_within(&nt, LK_TEST_WAIT_MS), "follower not notified");
	tok = lk_test_acquire_ok(follower, 10000);

	/* Not watching: no notice. */
	ct_ops()->watch(follower, false);
	nt.n = 0;
	ck_assert_int_eq(lk_test_release(follower, tok).status, LK_REPLY_OK);
	lk_test_run_for(300);
	ck_assert_int_eq(nt.n, 0);
}
END_TEST

START_TEST(test_contract_restart_notifies_watching_follower_and_notices_go_on)
{
	struct lk_backend_key *leader, *follower;
	struct lk_test_notified nt = { 0 };
	uint64_t tok;

	ct_start();
	leader = lk_test_key_new("alpha", NULL);
	follower = lk_test_key_new("beta", &nt);
	ct_watch(follower, &nt);

	/* Notices may have been missed while the server was away: the follower looks again. */
	ck_assert_int_eq(lk_test_server_restart(ct->srv), 0);
	ck_assert_msg(lk_test_notified_within(&nt, LK_TEST_READY_MS),
	              "no notify after the restart:\n%s", ct_log());
	ck_assert_msg(strstr(ct_log(), ct->restart_log), "no \"%s\" in:\n%s", ct->restart_log,
	              ct_log());

	/* And releases still reach it. */
	ck_assert(lk_test_ready_within(LK_TEST_READY_MS));
	tok = lk_test_acquire_answered(leader, 10000).token;
	ck_assert_uint_gt(tok, 0);
	lk_test_run_for(100);
	nt.n = 0;
	ck_assert_int_eq(lk_test_release(leader, tok).status, LK_REPLY_OK);
	ck_assert_msg(lk_test_notified_within(&nt, LK_TEST_WAIT_MS), "release missed after restart");
}
END_TEST

/* A notify hook that frees things: the backend must keep walking (or stop) safely. */
static struct lk_backend_key *ct_victim;
static bool ct_victim_freed;

static void ct_on_notify_free_key(void *arg, enum lk_backend_notice what)
{
	if (what != LK_NOTICE_MAYBE_FREE)
		return;
	((struct lk_test_notified *)arg)->n++;
	if (ct_victim) {
		ct_ops()->key_free(ct_victim);
		ct_victim = NULL;
		ct_victim_freed = true;
	}
}

static void ct_on_notify_victim(void *arg, enum lk_backend_notice what)
{
	ck_assert_msg(!ct_victim_freed, "notify after key_free");
	((struct lk_test_notified *)arg)->n++;
}

START_TEST(test_contract_notify_may_free_keys_and_backend)
{
	struct lk_backend_key *leader, *f1, *f2;
	struct lk_test_notified n1 = { 0 }, n2 = { 0 };
	uint64_t tok;

	ct_start();
	leader = lk_test_key_new("alpha", NULL);
	f1 = ct_ops()->key_new(lk_test_backend(), LK_TEST_KEY, "beta", ct_on_notify_free_key, &n1);
	f2 = ct_ops()->key_new(lk_test_backend(), LK_TEST_KEY, "gamma", ct_on_notify_victim, &n2);
	ck_assert_ptr_nonnull(f1);
	ck_assert_ptr_nonnull(f2);
	tok = lk_test_acquire_ok(leader, 10000);
	ct_ops()->watch(f1, true);
	ct_ops()->watch(f2, true);
	lk_test_run_for(300);

	/* f1's hook frees f2 (which may or may not have been told first): nothing may reach f2
	 * after. */
	ct_victim = f2;
	n1.n = 0;
	ck_assert_int_eq(lk_test_release(leader, tok).status, LK_REPLY_OK);
	ck_assert(lk_test_notified_within(&n1, LK_TEST_WAIT_MS));
	ck_assert(ct_victim_freed);
	lk_test_run_for(100);

	/* Now a hook that frees the whole backend: from a new stream's notice (etcd) or from the
	 * next release notice. */
	ct_ops()->key_free(f1);
	n1.n = 0;
	f1 = ct_ops()->key_new(lk_test_backend(), LK_TEST_KEY, "delta",
	                       lk_test_on_notify_free_backend, &n1);
	ck_assert_ptr_nonnull(f1);
	tok = lk_test_acquire_ok(leader, 10000);
	ct_ops()->watch(f1, true);
	lk_test_run_for(300);
	if (lk_test_backend())
		ck_assert_int_eq(lk_test_release(leader, tok).status, LK_REPLY_OK);
	ck_assert(lk_test_notified_within(&n1, LK_TEST_WAIT_MS));
	ck_assert_ptr_null(lk_test_backend());
	lk_test_run_for(100);
}
END_TEST

/* ---- timeouts, outages, lifetimes ------------------------------------------------------- */

START_TEST(test_contract_frozen_server_errors_within_timeout_then_recovers)
{
	const int64_t timeout = 300;
	struct lk_backend_key *k;
	struct lk_test_reply g = { 0 };
	uint64_t tok;
	int64_t sent;
	int rc;

	ct_start_at(NULL, timeout);
	k = lk_test_key_new("alpha", NULL);
	tok = lk_test_acquire_ok(k, 30000);

	ck_assert_int_eq(lk_test_server_sigstop(ct->srv), 0);
	sent = lk_mono_ns();
	ck_assert_int_eq(ct_ops()->renew(k, tok, 30000, lk_test_on_reply, &g), 0);
	lk_test_wait_reply(&g);
	ck_assert_int_eq(g.status, LK_REPLY_ERROR);
	ck_assert_msg(strstr(g.err, "timed out after 300ms"), "err: %s", g.err);
	ck_assert_int_ge((g.at_ns - sent) / 1000000, timeout - 5);
	ck_assert_int_lt((g.at_ns - sent) / 1000000, 3 * timeout);
	ck_assert(!ct_ops()->ready(lk_test_backend()));

	/* Meanwhile a request is refused at once, or fails within about one timeout. */
	memset(&g, 0, sizeof(g));
	sent = lk_mono_ns();
	rc = ct_ops()->acquire(lk_test_key_new("beta", NULL), 30000, lk_test_on_reply, &g);
	if (ct->refuses_while_down) {
		ck_assert_int_eq(rc, -ENOTCONN);
	} else {
		ck_assert_int_eq(rc, 0);
		lk_test_wait_reply(&g);
		ck_assert_msg(g.status == LK_REPLY_ERROR, "acquire while frozen: %d %s", g.status,
		              g.err);
		ck_assert_int_lt((g.at_ns - sent) / 1000000, 3 * timeout);
	}

	/* Reconnect attempts against the frozen server time out too. */
	lk_test_run_for(700);
	ck_assert(!ct_ops()->ready(lk_test_backend()));
	ck_assert_int_eq(lk_test_server_sigcont(ct->srv), 0);
	ck_assert_msg(lk_test_ready_within(LK_TEST_READY_MS), "not ready again:\n%s", ct_log());
	g = lk_test_renew(k, tok, 30000);
	ck_assert_msg(g.status == LK_REPLY_OK, "renew after thaw: %d %s", g.status, g.err);
	/* Warnings for the outage, not one per request or attempt. */
	ck_assert_int_le(lk_test_logs()->warns, ct->max_outage_warns);
	ck_assert_ptr_nonnull(strstr(ct_log(), "reconnected to"));
}
END_TEST

START_TEST(test_contract_free_while_requests_in_flight_calls_nothing)
{
	struct lk_backend_key *k;
	struct lk_test_reply g1 = { 0 }, g2 = { 0 }, g3 = { 0 };
	uint64_t tok;

	ct_start_at(NULL, 300);
	k = lk_test_key_new("alpha", NULL);
	ck_assert_int_eq(ct_ops()->acquire(k, 10000, lk_test_on_reply, &g1), 0);
	ct_ops()->watch(lk_test_key_new("beta", NULL), true);
	lk_test_free_backend();
	lk_test_run_for(200);
	ck_assert_int_eq(g1.n, 0);

	/* The same with the server frozen, so the requests are really pending: with a timeout far
	 * beyond the test's own waits, so that no request can time out and answer first (one did,
	 * with 300ms, on a loaded machine under ASan). */
	ct_start_at(NULL, 30000);
	k = lk_test_key_new("alpha", NULL);
	ct->del();
	tok = lk_test_acquire_ok(k, 10000);
	ck_assert_int_eq(lk_test_server_sigstop(ct->srv), 0);
	ck_assert_int_eq(ct_ops()->acquire(lk_test_key_new("beta", NULL), 10000, lk_test_on_reply,
	                                   &g2), 0);
	ck_assert_int_eq(ct_ops()->renew(k, tok, 10000, lk_test_on_reply, &g3), 0);
	lk_test_run_for(100);
	lk_test_free_backend();
	lk_test_run_for(500);
	ck_assert_int_eq(g2.n, 0);
	ck_assert_int_eq(g3.n, 0);
	ck_assert_int_eq(lk_test_server_sigcont(ct->srv), 0);
}
END_TEST

START_TEST(test_contract_free_from_inside_a_callback)
{
	struct lk_backend_key *k, *k2;
	struct lk_test_reply g = { .free_backend = true }, other = { 0 };

	/* Two requests time out together; the first callback frees the backend: the second
	 * must never run. */
	ct_start_at(NULL, 300);
	k = lk_test_key_new("alpha", NULL);
	k2 = lk_test_key_new("beta", NULL);
	ck_assert_int_eq(lk_test_server_sigstop(ct->srv), 0);
	ck_assert_int_eq(ct_ops()->acquire(k, 10000, lk_test_on_reply, &g), 0);
	ck_assert_int_eq(ct_ops()->acquire(k2, 10000, lk_test_on_reply, &other), 0);
	lk_test_wait_reply(&g);
	ck_assert_int_eq(g.status, LK_REPLY_ERROR);
	ck_assert_ptr_null(lk_test_backend());
	lk_test_run_for(200);
	ck_assert_int_eq(other.n, 0);
	ck_assert_int_eq(lk_test_server_sigcont(ct->srv), 0);
	/* The thawed server still executes what it had received: a request that timed out may
	 * have taken effect after all. */
	ct->del();

	/* And from a normal reply. */
	memset(&g, 0, sizeof(g));
	g.free_backend = true;
	ct_start();
	k = lk_test_key_new("gamma", NULL);
	ck_assert_int_eq(ct_ops()->acquire(k, 10000, lk_test_on_reply, &g), 0);
	lk_test_wait_reply(&g);
	ck_assert_msg(g.status == LK_REPLY_OK, "%d %s", g.status, g.err);
	ck_assert_ptr_null(lk_test_backend());
	lk_test_run_for(100);
}
END_TEST

START_TEST(test_contract_no_callback_after_key_free)
{
	struct lk_backend_key *k, *k2;
	struct lk_test_reply g = { 0 }, g2;

	ct_start();
	k = lk_test_key_new("alpha", NULL);
	k2 = lk_test_key_new("beta", NULL);
	ck_assert_int_eq(ct_ops()->acquire(k, 10000, lk_test_on_reply, &g), 0);
	ct_ops()->key_free(k);
	lk_test_run_for(500);
	ck_assert_int_eq(g.n, 0);
	/* The acquire went through: the tenure it got is given back (etcd), or held by the
	 * identity until it expires. */
	g2 = lk_test_acquire(k2, 10000);
	if (ct->gives_back_freed_tenure) {
		ck_assert_msg(g2.status == LK_REPLY_OK, "%d %s holder %s", g2.status, g2.err,
		              g2.holder);
	} else {
		ck_assert_int_eq(g2.status, LK_REPLY_HELD);
		ck_assert_str_eq(g2.holder, "alpha");
	}
}
END_TEST

void lk_contract_round_trip(void)
{
	struct lk_backend_key *k = lk_test_key_new("alpha", NULL), *f;
	struct lk_test_notified nt = { 0 };
	uint64_t tok;

	f = lk_test_key_new("beta", &nt);
	tok = lk_test_acquire_ok(k, 10000);
	ck_assert_uint_eq(ct->stored().token, tok);
	ck_assert_int_eq(lk_test_renew(k, tok, 10000).status, LK_REPLY_OK);
	ct_watch(f, &nt);
	ck_assert_int_eq(lk_test_release(k, tok).status, LK_REPLY_OK);
	ck_assert_msg(lk_test_notified_within(&nt, LK_TEST_WAIT_MS), "follower not notified");
}

START_TEST(test_contract_hostname_address_resolves)
{
	char addr[64];

	/* localhost comes from /etc/hosts: no DNS traffic leaves the machine. */
	snprintf(addr, sizeof(addr), "%slocalhost:%d", ct->scheme, ct->srv->port);
	ct_start_at(addr, 0);
	lk_contract_round_trip();
}
END_TEST

START_TEST(test_contract_unreachable_server_fails_requests_and_warns_once)
{
	struct lk_backend_key *k;
	struct lk_test_reply g = { 0 };
	char err[256], addr[64];
	int port = ct->srv->port, rc;

	/* A port where nothing listens any more. */
	lk_test_server_stop(ct->srv);
	snprintf(addr, sizeof(addr), "%s127.0.0.1:%d", ct->scheme, port);
	ck_assert_int_eq(ct->make(addr, 300, err, sizeof(err)), 0);
	k = lk_test_key_new("alpha", NULL);
	for (int i = 0; i < 2; i++) {
		memset(&g, 0, sizeof(g));
		rc = ct_ops()->acquire(k, 10000, lk_test_on_reply, &g);
		if (ct->refuses_while_down) {
			ck_assert_int_eq(rc, -ENOTCONN);
		} else {
			ck_assert_int_eq(rc, 0);
			lk_test_wait_reply(&g);
			ck_assert_int_eq(g.status, LK_REPLY_ERROR);
			ck_assert_msg(i > 0 || strstr(g.err, "connect"), "%s", g.err);
		}
		if (i == 0)
			lk_test_run_for(1500);
		ck_assert(!ct_ops()->ready(lk_test_backend()));
	}
	ck_assert_int_ge(lk_test_logs()->warns, 1);
	ck_assert_int_le(lk_test_logs()->warns, ct->max_outage_warns);
	ck_assert_ptr_nonnull(strstr(ct_log(), "retrying in"));
}
END_TEST

/* ---- authentication --------------------------------------------------------------------- */

static void ct_make_auth(const char *password)
{
	char path[400], err[256];

	ck_assert_int_eq(lk_test_server_write_file(ct->srv, "pw", password, path, sizeof(path)), 0);
	ck_assert_msg(ct->make_auth(path, err, sizeof(err)) == 0, "%s", err);
}

START_TEST(test_contract_auth_with_password_file)
{
	ct_make_auth("s3cret-pw\n");
	ck_assert_msg(lk_test_ready_within(LK_TEST_READY_MS), "%s", ct_log());
	lk_contract_round_trip();
	ck_assert_ptr_null(strstr(ct_log(), "s3cret"));
}
END_TEST

/* Refused at once, or answered FATAL: retrying will not fix a password. */
static void ct_refused(struct lk_backend_key *k, const char *msg, const char *msg2)
{
	struct lk_test_reply g = { 0 };
	int rc = ct_ops()->acquire(k, 10000, lk_test_on_reply, &g);

	if (ct->refuses_while_down) {
		ck_assert_int_eq(rc, -ENOTCONN);
		return;
	}
	ck_assert_int_eq(rc, 0);
	lk_test_wait_reply(&g);
	ck_assert_int_eq(g.status, LK_REPLY_FATAL);
	ck_assert_msg(strstr(g.err, msg) && (!msg2 || strstr(g.err, msg2)), "%s", g.err);
	ck_assert_ptr_null(strstr(g.err, "not-the-pw"));
}

START_TEST(test_contract_auth_wrong_password_reports_errors_without_it)
{
	struct lk_test_notified nt = { 0 };
	struct lk_backend_key *k;

	ct_make_auth("not-the-pw\n");
	k = lk_test_key_new("alpha", &nt);
	ct_ops()->watch(k, true);
	lk_test_run_for(1500);
	ct_refused(k, ct->wrong_password_msg[0], ct->wrong_password_msg[1]);
	ck_assert(!ct_ops()->ready(lk_test_backend()));
	ck_assert_int_eq(nt.n, 0);
	for (int i = 0; i < 2; i++)
		ck_assert_msg(!ct->wrong_password_msg[i] || strstr(ct_log(), ct->wrong_password_msg[i]),
		              "no \"%s\" in:\n%s", ct->wrong_password_msg[i], ct_log());
	ck_assert_ptr_null(strstr(ct_log(), "not-the-pw"));
}
END_TEST

START_TEST(test_contract_auth_missing_password_reports_errors)
{
	char err[256];

	ck_assert_msg(ct->make(ct->srv->address, 500, err, sizeof(err)) == 0, "%s", err);
	lk_test_run_for(1000);
	/* Redis cannot finish its handshake; etcd's probe needs no login, its requests do. */
	ck_assert(ct_ops()->ready(lk_test_backend()) != ct->refuses_while_down);
	ct_refused(lk_test_key_new("alpha", NULL), ct->no_password_msg, NULL);
	if (ct->refuses_while_down)
		ck_assert_ptr_nonnull(strstr(ct_log(), ct->no_password_msg));
}
END_TEST

void lk_contract_add(Suite *s, const struct lk_contract *c)
{
	TCase *tc = tcase_create("contract");

	ct = c;
	tcase_add_checked_fixture(tc, c->setup, c->teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_contract_acquire_returns_token_valid_from_send);
	tcase_add_test(tc, test_contract_second_identity_sees_held_with_the_holder_if_showable);
	tcase_add_test(tc, test_contract_own_identity_without_a_lost_acquire_is_held);
	tcase_add_test(tc, test_contract_renew_ok_extends_validity_from_send);
	tcase_add_test(tc, test_contract_renew_after_expiry_is_gone_for_good);
	tcase_add_test(tc, test_contract_renew_after_delete_is_gone_and_leaves_nothing);
	tcase_add_test(tc, test_contract_renew_after_overwrite_is_taken);
	tcase_add_test(tc, test_contract_renew_after_recreated_by_another_is_taken);
	tcase_add_test(tc, test_contract_release_ok_then_gone);
	tcase_add_test(tc, test_contract_release_never_deletes_another_holders_key);
	tcase_add_test(tc, test_contract_tokens_strictly_increase_across_holders_and_restart);
	tcase_add_test(tc, test_contract_bad_arguments_fail_at_once_and_an_unknown_tenure_is_gone);
	tcase_add_test(tc, test_contract_no_holdoff_after_a_release_on_a_settled_server);
	tcase_add_test(tc, test_contract_data_loss_holds_off_one_ttl_and_tokens_still_increase);
	tcase_add_test(tc, test_contract_release_notifies_watching_follower);
	tcase_add_test(tc, test_contract_restart_notifies_watching_follower_and_notices_go_on);
	tcase_add_test(tc, test_contract_notify_may_free_keys_and_backend);
	tcase_add_test(tc, test_contract_frozen_server_errors_within_timeout_then_recovers);
	tcase_add_test(tc, test_contract_free_while_requests_in_flight_calls_nothing);
	tcase_add_test(tc, test_contract_free_from_inside_a_callback);
	tcase_add_test(tc, test_contract_no_callback_after_key_free);
	tcase_add_test(tc, test_contract_hostname_address_resolves);
	tcase_add_test(tc, test_contract_unreachable_server_fails_requests_and_warns_once);
	suite_add_tcase(s, tc);
	if (!c->setup_auth)
		return;
	tc = tcase_create("contract-auth");
	tcase_add_checked_fixture(tc, c->setup_auth, c->teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_contract_auth_with_password_file);
	tcase_add_test(tc, test_contract_auth_wrong_password_reports_errors_without_it);
	tcase_add_test(tc, test_contract_auth_missing_password_reports_errors);
	suite_add_tcase(s, tc);
}
