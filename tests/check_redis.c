/* The Redis backend against real redis-server processes (one per test): the backend contract
 * (tests/backend_contract.c) through the adapter below, then what only Redis does: the fence
 * counter across data loss, the hold-off from run_id and uptime, own orphans and late
 * renewals, WRONGTYPE and the NOSCRIPT fallback, subscriptions, unix sockets, garbage RESP. */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <check.h>

#include "locks/backend.h"
#include "locks/redis_int.h"
#include "tests/backend_contract.h"
#include "tests/harness.h"

/* The shared suite, compiled here: the Makefile links only locks/ and the harness. */
#include "tests/backend_contract.c"

#define KEY LK_TEST_KEY

static struct lk_test_server srv, srv2;
static struct event_base *base;
static struct lk_backend *be;
static struct lk_test_log logs;

/* ---- backends and keys ----------------------------------------------------------------- */

static int make_backend(const char *address, int64_t timeout_ms, const char *password_file,
                        char *err, size_t errlen)
{
	struct lk_config_backend cfg = {
		.name = (char *)"main",
		.type = LK_BACKEND_REDIS,
		.address = (char *)address,
		.timeout_ms = timeout_ms,
		.password_file = (char *)password_file,
	};
	struct lk_backend_hooks hooks = lk_test_hooks();

	return lk_backend_new(base, &cfg, &hooks, &be, err, errlen);
}

static void start_backend(const char *address, int64_t timeout_ms)
{
	char err[256];

	ck_assert_msg(make_backend(address, timeout_ms, NULL, err, sizeof(err)) == 0, "%s", err);
	ck_assert_msg(lk_test_ready_within(LK_TEST_READY_MS), "backend never became ready:\n%s",
	              logs.text);
}

static long long redis_int(const char *fmt, const char *arg)
{
	redisReply *rep = lk_test_redis_command(&srv, fmt, arg);
	long long v;

	ck_assert_ptr_nonnull(rep);
	ck_assert_int_eq(rep->type, REDIS_REPLY_INTEGER);
	v = rep->integer;
	freeReplyObject(rep);
	return v;
}

/* ---- fixtures -------------------------------------------------------------------------- */

static void setup_loop(void)
{
	lk_test_kit_setup(&base, &be, &logs);
}

static void teardown_loop(void)
{
	lk_test_kit_teardown();
	lk_test_server_stop(&srv);
	lk_test_server_stop(&srv2);
}

static void setup_redis(void)
{
	setup_loop();
	ck_assert_int_eq(lk_test_redis_start(&srv, NULL), 0);
}

static void setup_redis_auth(void)
{
	static const char *const args[] = { "--requirepass", "s3cret-pw", NULL };

	setup_loop();
	ck_assert_int_eq(lk_test_redis_start(&srv, args), 0);
}

/* ---- the contract suite's view of Redis ------------------------------------------------ */

static int contract_make(const char *address, int64_t timeout_ms, char *err, size_t errlen)
{
	return make_backend(address, timeout_ms, NULL, err, errlen);
}

/* The value is "<identity>:<token>"; the holder is everything up to the last colon. */
static struct lk_contract_stored contract_stored(void)
{
	struct lk_contract_stored st = { 0 };
	char *v = lk_test_redis_get(&srv, KEY), *colon = v ? strrchr(v, ':') : NULL;

	if (v) {
		st.found = true;
		if (colon) {
			*colon = '\0';
			st.token = strtoull(colon + 1, NULL, 10);
		}
		snprintf(st.holder, sizeof(st.holder), "%s", v);
	}
	free(v);
	return st;
}

static int64_t contract_ttl_left_ms(void)
{
	return redis_int("PTTL %s", KEY);
}

static void contract_put(const char *holder)
{
	char v[300];

	snprintf(v, sizeof(v), "%s:77", holder);
	ck_assert(lk_test_redis_ok(&srv, "SET %s %s", KEY, v));
}

static void contract_del(void)
{
	ck_assert(lk_test_redis_ok(&srv, "DEL %s", KEY));
}

static void contract_expire(void)
{
	ck_assert(lk_test_redis_ok(&srv, "PEXPIRE %s 1", KEY));
	lk_test_run_for(20);
}

/* Our Redis has no persistence: it comes back empty, another instance (a new run_id). */
static void contract_lose_data(void)
{
	ck_assert_int_eq(lk_test_server_restart(&srv), 0);
}

static void contract_acquired(const struct lk_test_reply *g)
{
	char *v = lk_test_redis_get(&srv, KEY ":fence");

	/* The fence counter beside the key, seeded from TIME in microseconds: about 1.7e15 in
	 * 2024, and the value holds it as a plain integer (contract_stored parsed it whole). */
	ck_assert_ptr_nonnull(v);
	ck_assert_uint_eq(strtoull(v, NULL, 10), g->token);
	free(v);
	ck_assert_uint_gt(g->token, 1000000000000000ULL);
}

/* A renewal sets the ttl it asks for, longer too. */
static void contract_renewed(struct lk_backend_key *k, uint64_t tok)
{
	struct lk_test_reply g = lk_test_renew(k, tok, 20000);

	ck_assert_int_eq(g.status, LK_REPLY_OK);
	ck_assert_int_eq(g.ttl_ms, 20000);
	ck_assert_int_gt(redis_int("PTTL %s", KEY), 15000);
}

static int contract_make_auth(const char *password_file, char *err, size_t errlen)
{
	return make_backend(srv.address, 500, password_file, err, errlen);
}

static const struct lk_contract redis_contract = {
	.srv = &srv,
	.setup = setup_redis,
	.teardown = teardown_loop,
	.scheme = "",
	.timeout_ms = 500,
	.refuses_while_down = true,
	.max_outage_warns = 2, /* the command and the subscriber connection */
	.restart_log = "connection lost",
	.make = contract_make,
	.stored = contract_stored,
	.ttl_left_ms = contract_ttl_left_ms,
	.put = contract_put,
	.del = contract_del,
	.expire = contract_expire,
	.lose_data = contract_lose_data,
	.loss_why = "run_id changed",
	.loss_log = "another server instance",
	.acquired = contract_acquired,
	.renewed = contract_renewed,
	.setup_auth = setup_redis_auth,
	.make_auth = contract_make_auth,
	.wrong_password_msg = { "authentication failed", "WRONGPASS" },
	.no_password_msg = "NOAUTH",
};

/* ---- the lock scripts ------------------------------------------------------------------ */

static uint64_t wall_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

/* HELD says when the holder's key runs out (its PTTL), so that a crashed holder's successor
 * tries again just then; a key without an expiry says nothing. */
START_TEST(test_held_tells_when_the_holder_key_runs_out)
{
	struct lk_backend_key *a, *b;
	struct lk_test_reply g;

	start_backend(srv.address, 500);
	a = lk_test_key_new("alpha", NULL);
	b = lk_test_key_new("beta", NULL);
	lk_test_acquire_ok(a, 3000);
	lk_test_run_for(500);
	g = lk_test_acquire(b, 3000);
	ck_assert_int_eq(g.status, LK_REPLY_HELD);
	ck_assert_int_le(g.free_in_ms, 2600);
	ck_assert_int_ge(g.free_in_ms, 1500);
	ck_assert(lk_test_redis_ok(&srv, "PERSIST %s", KEY));
	g = lk_test_acquire(b, 3000);
	ck_assert_int_eq(g.status, LK_REPLY_HELD);
	ck_assert_int_eq(g.free_in_ms, 0);
}
END_TEST

START_TEST(test_tokens_never_repeat_when_the_counter_goes_back)
{
	struct lk_backend_key *k;
	uint64_t t0, t1, t2, t3, ahead;
	char v[32];

	start_backend(srv.address, 500);
	k = lk_test_key_new("alpha", NULL);
	t0 = lk_test_acquire_ok(k, 10000);
	/* Data loss: the counter is re-seeded from the clock, still above what was handed out. */
	ck_assert(lk_test_redis_ok(&srv, "FLUSHALL"));
	t1 = lk_test_acquire_ok(k, 10000);
	ck_assert_uint_gt(t1, t0);
	ck_assert_int_eq(lk_test_release(k, t1).status, LK_REPLY_OK);

	/* An older snapshot, or a replica that lagged: the counter is far behind. */
	ck_assert(lk_test_redis_ok(&srv, "SET %s 5", KEY ":fence"));
	t2 = lk_test_acquire_ok(k, 10000);
	printf("tokens: %" PRIu64 " then, after the counter went back to 5, %" PRIu64 "\n", t1, t2);
	ck_assert_uint_gt(t2, t1);
	ck_assert_uint_ge(t2 + 5000000, wall_us()); /* the server's clock, in microseconds */
	ck_assert_int_eq(lk_test_release(k, t2).status, LK_REPLY_OK);

	/* A counter ahead of the clock (tokens issued fast, or a clock stepped back) goes on
	 * counting. */
	ahead = wall_us() + 3600ULL * 1000000;
	snprintf(v, sizeof(v), "%" PRIu64, ahead);
	ck_assert(lk_test_redis_ok(&srv, "SET %s %s", KEY ":fence", v));
	t3 = lk_test_acquire_ok(k, 10000);
	ck_assert_uint_eq(t3, ahead + 1);
}
END_TEST

/* Handoff telemetry: a fresh key's first tenure is "first"; the release writes the marker
 * "<token>:<TIME µs>" beside the key, and the next acquire reads it as a release, with the gap
 * on the server's clock; a tenure that ran out (or was deleted) is an expiry. A marker of
 * another type costs the telemetry, not the acquire. */
START_TEST(test_acquire_tells_what_came_before_and_the_gap_since_the_release)
{
	struct lk_backend_key *k;
	struct lk_test_reply g;
	uint64_t t0, t1;
	char *marker, want[64];

	start_backend(srv.address, 500);
	k = lk_test_key_new("alpha", NULL);
	g = lk_test_acquire(k, 10000);
	ck_assert_int_eq(g.status, LK_REPLY_OK);
	ck_assert_int_eq(g.after, LK_AFTER_FIRST);
	ck_assert_int_eq(g.gap_ns, -1);
	t0 = g.token;
	ck_assert_int_eq(lk_test_release(k, t0).status, LK_REPLY_OK);
	marker = lk_test_redis_get(&srv, KEY ":released");
	ck_assert_ptr_nonnull(marker);
	snprintf(want, sizeof(want), "%" PRIu64 ":", t0);
	ck_assert_msg(strncmp(marker, want, strlen(want)) == 0, "%s", marker);
	ck_assert_uint_ge(strtoull(marker + strlen(want), NULL, 10) + 5000000, wall_us());
	free(marker);

	lk_test_run_for(20);
	g = lk_test_acquire(k, 10000);
	ck_assert_int_eq(g.status, LK_REPLY_OK);
	ck_assert_int_eq(g.after, LK_AFTER_RELEASE);
	printf("gap from a release to the next acquire, Redis TIME: %.3f ms\n", g.gap_ns / 1e6);
	ck_assert_int_ge(g.gap_ns, 15 * 1000000);
	ck_assert_int_lt(g.gap_ns, 2000 * 1000000LL);
	t1 = g.token;

	/* Gone without a release (as an expiry would): the marker names an older tenure. */
	ck_assert(lk_test_redis_ok(&srv, "DEL %s", KEY));
	g = lk_test_acquire(k, 10000);
	ck_assert_int_eq(g.status, LK_REPLY_OK);
	ck_assert_int_eq(g.after, LK_AFTER_EXPIRY);
	ck_assert_int_eq(g.gap_ns, -1);
	ck_assert_uint_gt(g.token, t1);

	ck_assert(lk_test_redis_ok(&srv, "DEL %s", KEY));
	ck_assert(lk_test_redis_ok(&srv, "DEL %s", KEY ":released"));
	ck_assert(lk_test_redis_ok(&srv, "HSET %s f v", KEY ":released"));
	g = lk_test_acquire(k, 10000);
	ck_assert_int_eq(g.status, LK_REPLY_OK);
	ck_assert_int_eq(g.after, LK_AFTER_EXPIRY);
	/* The release writes over it. */
	ck_assert_int_eq(lk_test_release(k, g.token).status, LK_REPLY_OK);
	g = lk_test_acquire(k, 10000);
	ck_assert_int_eq(g.after, LK_AFTER_RELEASE);
}
END_TEST

/* The script's answer read by hand-made replies: anything unreadable is LK_AFTER_UNKNOWN with
 * a message, never a crash or a failed acquire. */
static enum lk_reply_after handoff_of(const char *prev, const char *marker, const char *now,
                                      size_t n, int64_t *gap_ns, char *why, size_t cap)
{
	redisReply e[5] = {
		{ .type = REDIS_REPLY_INTEGER, .integer = 1 },
		{ .type = REDIS_REPLY_INTEGER, .integer = 99 },
		{ .type = REDIS_REPLY_STRING, .str = (char *)prev, .len = prev ? strlen(prev) : 0 },
		{ .type = REDIS_REPLY_STRING, .str = (char *)marker, .len = marker ? strlen(marker) : 0 },
		{ .type = REDIS_REPLY_STRING, .str = (char *)now, .len = now ? strlen(now) : 0 },
	};
	redisReply *el[5] = { &e[0], &e[1], &e[2], &e[3], &e[4] };
	redisReply r = { .type = REDIS_REPLY_ARRAY, .elements = n, .element = el };

	for (int i = 2; i < 5; i++)
		if (!e[i].str)
			e[i].type = REDIS_REPLY_NIL;
	why[0] = '\0';
	return lk_redis_handoff(&r, gap_ns, why, cap);
}

START_TEST(test_handoff_answer_garbage_is_unknown_and_never_a_crash)
{
	char why[128];
	int64_t gap;

	ck_assert_int_eq(handoff_of("", "", "1700000000000000", 5, &gap, why, sizeof(why)),
	                 LK_AFTER_FIRST);
	ck_assert_int_eq(handoff_of("41", "", "1700000000000000", 5, &gap, why, sizeof(why)),
	                 LK_AFTER_EXPIRY);
	ck_assert_int_eq(handoff_of("41", "40:1700000000000000", "1700000000000000", 5, &gap, why,
	                            sizeof(why)), LK_AFTER_EXPIRY);
	ck_assert_int_eq(handoff_of("41", "41:1700000000000000", "1700000000000412", 5, &gap, why,
	                            sizeof(why)), LK_AFTER_RELEASE);
	ck_assert_int_eq(gap, 412000);
	/* A clock that stepped back between release and acquire: a release, gap unknown. */
	ck_assert_int_eq(handoff_of("41", "41:1700000000000412", "1700000000000000", 5, &gap, why,
	                            sizeof(why)), LK_AFTER_RELEASE);
	ck_assert_int_eq(gap, -1);
	ck_assert_int_eq(handoff_of("41", "41:1700000000000412", "soon", 5, &gap, why,
	                            sizeof(why)), LK_AFTER_RELEASE);
	ck_assert_int_eq(gap, -1);

	/* Garbage. */
	ck_assert_int_eq(handoff_of("41", "41:", "1", 5, &gap, why, sizeof(why)), LK_AFTER_UNKNOWN);
	ck_assert_msg(strstr(why, "release marker"), "%s", why);
	ck_assert_int_eq(handoff_of("41", "released", "1", 5, &gap, why, sizeof(why)),
	                 LK_AFTER_UNKNOWN);
	ck_assert_int_eq(handoff_of("41", ":1700000000000000", "1", 5, &gap, why, sizeof(why)),
	                 LK_AFTER_UNKNOWN);
	ck_assert_int_eq(handoff_of("41", "41:99999999999999999999999", "1", 5, &gap, why,
	                            sizeof(why)), LK_AFTER_UNKNOWN);
	ck_assert_int_eq(handoff_of("-3", "", "1", 5, &gap, why, sizeof(why)), LK_AFTER_UNKNOWN);
	ck_assert_msg(strstr(why, "fence counter"), "%s", why);
	ck_assert_int_eq(handoff_of("41", NULL, "1", 5, &gap, why, sizeof(why)), LK_AFTER_UNKNOWN);
	ck_assert_int_eq(handoff_of("41", "", "1", 2, &gap, why, sizeof(why)), LK_AFTER_UNKNOWN);
	ck_assert_msg(strstr(why, "2 elements"), "%s", why);
	ck_assert_int_eq(gap, -1);
}
END_TEST

static pid_t fake_backend(const char *reply);

/* A server whose acquire answer is an acquisition with garbage where the handoff should be:
 * the tenure is ours (OK, its token), the garbage is logged. */
START_TEST(test_acquired_with_a_garbage_handoff_is_ok_and_logged)
{
	struct lk_backend_key *k;
	struct lk_test_reply g;
	pid_t pid;

	pid = fake_backend("*5\r\n:1\r\n:5\r\n$2\r\n41\r\n$3\r\nx:y\r\n:7\r\n");
	k = lk_test_key_new("alpha", NULL);
	g = lk_test_acquire(k, 10000);
	ck_assert_int_eq(g.status, LK_REPLY_OK);
	ck_assert_uint_eq(g.token, 5);
	ck_assert_int_eq(g.after, LK_AFTER_UNKNOWN);
	ck_assert_msg(strstr(logs.text, "acquired, but the answer does not say what came before"),
	              "%s", logs.text);
	be = lk_backend_free(be);
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
}
END_TEST

START_TEST(test_holdoff_while_a_new_server_is_younger_than_the_ttl)
{
	struct lk_backend_key *k;
	char why[192] = "";
	int64_t now, until;

	start_backend(srv.address, 500);
	k = lk_test_key_new("alpha", NULL);
	/* The server started moments ago: a tenure it granted before a restart we could not
	 * see may still run, so nothing starts before it has been up one ttl. */
	until = be->ops->holdoff_until(k, 10000, why, sizeof(why));
	now = lk_mono_ns();
	printf("young server: hold-off %" PRId64 "ms (%s)\n", (until - now) / 1000000, why);
	ck_assert_int_gt(until, now + 7000 * 1000000LL);
	ck_assert_int_le(until, now + 10000 * 1000000LL);
	ck_assert_ptr_nonnull(strstr(why, "up only"));
	/* Once the server has been up one ttl, the hold-off is over. */
	lk_test_run_for(1100);
	ck_assert_int_le(be->ops->holdoff_until(k, 1000, why, sizeof(why)), lk_mono_ns());
}
END_TEST

static double wall_frac(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return ts.tv_nsec / 1e9;
}

/* Redis's uptime_in_seconds is the difference of two whole-second wall clock readings: a
 * server started just before a second began says 1 moments later. The hold-off must still
 * last until it has really been up one ttl. */
START_TEST(test_holdoff_of_a_server_started_just_before_a_second_began)
{
	struct lk_backend_key *k;
	char why[192] = "";
	int64_t started = 0, until;
	int tries;

	for (tries = 0; tries < 5; tries++) {
		/* Restart it late in a second, then ask after the next second has begun. */
		while (wall_frac() < 0.90 || wall_frac() > 0.93)
			usleep(2000);
		started = lk_mono_ns();
		ck_assert_int_eq(lk_test_server_restart(&srv), 0);
		if (wall_frac() > 0.93)
			break;   /* still the same second (otherwise try again) */
	}
	ck_assert_msg(tries < 5, "could not restart Redis within 70ms");
	while (wall_frac() > 0.5)
		usleep(2000);
	start_backend(srv.address, 500);
	k = lk_test_key_new("alpha", NULL);
	until = be->ops->holdoff_until(k, 2000, why, sizeof(why));
	printf("started %" PRId64 "ms ago, says %s; hold-off until %" PRId64 "ms after the start\n",
	       (lk_mono_ns() - started) / 1000000, why, (until - started) / 1000000);
	ck_assert_int_ge(until, started + 2000 * 1000000LL);
}
END_TEST

/* An acquire that timed out on a frozen server runs when it resumes: a tenure nobody heard of.
 * The next acquire deletes that orphan and acquires in one script, so no release notice wakes
 * the other followers, which would race us for a key that was never released. */
START_TEST(test_own_orphan_of_a_timed_out_acquire_is_reclaimed_without_a_release_notice)
{
	struct lk_backend_key *k, *other;
	struct lk_test_notified nt = { 0 };
	struct lk_test_reply g = { 0 };
	char *orphan, *now_held;

	start_backend(srv.address, 300);
	k = lk_test_key_new("alpha", NULL);
	other = lk_test_key_new("beta", &nt);
	be->ops->watch(other, true);
	lk_test_run_for(300);
	ck_assert_int_eq(lk_test_server_sigstop(&srv), 0);
	ck_assert_int_eq(be->ops->acquire(k, 30000, lk_test_on_reply, &g), 0);
	lk_test_wait_reply(&g);
	ck_assert_int_eq(g.status, LK_REPLY_ERROR);
	ck_assert_int_eq(lk_test_server_sigcont(&srv), 0);
	ck_assert_msg(lk_test_ready_within(LK_TEST_READY_MS), "no reconnect:\n%s", logs.text);
	orphan = lk_test_redis_get(&srv, KEY);
	ck_assert_msg(orphan && strncmp(orphan, "alpha:", 6) == 0, "no orphan: %s", orphan);
	lk_test_run_for(300); /* notices of the reconnect, if any */

	nt.n = 0;
	g = lk_test_acquire(k, 30000);
	ck_assert_msg(g.status == LK_REPLY_OK, "status %d holder %s err %s", g.status, g.holder,
	              g.err);
	lk_test_run_for(300);
	now_held = lk_test_redis_get(&srv, KEY);
	printf("orphan %s reclaimed as %s; release notices to the other key: %d\n", orphan,
	       now_held, nt.n);
	ck_assert_str_ne(orphan, now_held);
	ck_assert_int_eq(nt.n, 0);
	ck_assert_ptr_nonnull(strstr(logs.text, "deleting it"));
	ck_assert_int_eq(lk_test_release(k, g.token).status, LK_REPLY_OK);
	free(orphan);
	free(now_held);
}
END_TEST

/* A renewal that timed out on a frozen server runs when it resumes and keeps our ended
 * tenure's key alive for another ttl. It is ours and over: not shown as held by ourselves,
 * and deleted once its lease as we last proved it has run out, not a ttl after the resume. */
START_TEST(test_own_tenure_kept_alive_by_a_late_renewal_is_reclaimed_once_its_lease_ran_out)
{
	struct lk_backend_key *k;
	struct lk_test_reply g = { 0 };
	uint64_t t1;
	int64_t proven_until;
	char want[64], *v;

	start_backend(srv.address, 300);
	k = lk_test_key_new("alpha", NULL);
	g = lk_test_acquire(k, 2000);
	ck_assert_int_eq(g.status, LK_REPLY_OK);
	t1 = g.token;
	proven_until = g.sent_ns + 2000 * 1000000LL;
	snprintf(want, sizeof(want), "alpha:%" PRIu64, t1);

	ck_assert_int_eq(lk_test_server_sigstop(&srv), 0);
	memset(&g, 0, sizeof(g));
	ck_assert_int_eq(be->ops->renew(k, t1, 2000, lk_test_on_reply, &g), 0);
	lk_test_wait_reply(&g);
	ck_assert_int_eq(g.status, LK_REPLY_ERROR);
	lk_test_run_for(600);
	ck_assert_int_eq(lk_test_server_sigcont(&srv), 0); /* the renewal runs now */
	ck_assert_msg(lk_test_ready_within(LK_TEST_READY_MS), "no reconnect:\n%s", logs.text);

	/* Our tenure, still within its lease as last proven: held, but not by "alpha". */
	ck_assert_int_lt(lk_mono_ns(), proven_until - 200 * 1000000LL);
	g = lk_test_acquire(k, 2000);
	ck_assert_int_eq(g.status, LK_REPLY_HELD);
	ck_assert_msg(!g.has_holder || strcmp(g.holder, "alpha") != 0, "holder %s", g.holder);

	lk_test_run_for((int)((proven_until - lk_mono_ns()) / 1000000) + 50);
	v = lk_test_redis_get(&srv, KEY);
	ck_assert_msg(v && strcmp(v, want) == 0, "the late renewal must have kept %s: %s", want, v);
	free(v);
	g = lk_test_acquire(k, 2000);
	ck_assert_msg(g.status == LK_REPLY_OK, "status %d holder %s err %s", g.status, g.holder,
	              g.err);
	ck_assert_uint_gt(g.token, t1);
	ck_assert_ptr_nonnull(strstr(logs.text, "still holds our ended tenure"));
	printf("tenure %" PRIu64 " kept alive by a late renewal, reclaimed as %" PRIu64 "\n", t1,
	       g.token);
}
END_TEST

START_TEST(test_wrong_type_is_fatal)
{
	struct lk_backend_key *k;
	struct lk_test_reply g;

	start_backend(srv.address, 500);
	k = lk_test_key_new("alpha", NULL);
	ck_assert(lk_test_redis_ok(&srv, "HSET %s f v", KEY));
	g = lk_test_acquire(k, 10000);
	ck_assert_int_eq(g.status, LK_REPLY_FATAL);
	ck_assert_ptr_nonnull(strstr(g.err, "WRONGTYPE"));
}
END_TEST

START_TEST(test_script_flush_falls_back_to_eval)
{
	struct lk_backend_key *k;
	uint64_t tok;
	struct lk_test_reply g;

	start_backend(srv.address, 500);
	k = lk_test_key_new("alpha", NULL);
	tok = lk_test_acquire_ok(k, 10000);
	ck_assert(lk_test_redis_ok(&srv, "SCRIPT FLUSH"));
	g = lk_test_renew(k, tok, 10000);
	ck_assert_msg(g.status == LK_REPLY_OK, "renew after SCRIPT FLUSH: %d %s", g.status, g.err);
	ck_assert(lk_test_redis_ok(&srv, "SCRIPT FLUSH"));
	g = lk_test_release(k, tok);
	ck_assert_int_eq(g.status, LK_REPLY_OK);
	ck_assert(lk_test_redis_ok(&srv, "SCRIPT FLUSH"));
	lk_test_acquire_ok(k, 10000);
}
END_TEST

/* ---- release notices ------------------------------------------------------------------- */

START_TEST(test_key_added_later_is_subscribed)
{
	struct lk_backend_key *leader, *follower, *other;
	struct lk_test_notified nt = { 0 };
	uint64_t tok;

	start_backend(srv.address, 500);
	lk_test_run_for(300); /* the subscriber is up with no keys */
	/* Subscribe and unsubscribe a lone key: the subscriber goes back to no channels. */
	other = be->ops->key_new(be, "lk/other", "alpha", lk_test_on_notify, &nt);
	ck_assert_ptr_nonnull(other);
	lk_test_run_for(200);
	be->ops->key_free(other);
	lk_test_run_for(200);
	leader = lk_test_key_new("alpha", NULL);
	follower = lk_test_key_new("beta", &nt);
	be->ops->watch(follower, true);
	lk_test_run_for(300);
	tok = lk_test_acquire_ok(leader, 10000);
	nt.n = 0;
	ck_assert_int_eq(lk_test_release(leader, tok).status, LK_REPLY_OK);
	ck_assert_msg(lk_test_notified_within(&nt, LK_TEST_WAIT_MS), "follower not notified");
}
END_TEST

/* ---- timeouts and outages -------------------------------------------------------------- */

START_TEST(test_enotconn_before_connected_and_no_callback)
{
	struct lk_backend_key *k;
	struct lk_test_reply g = { 0 };
	char err[256];

	ck_assert_int_eq(make_backend(srv.address, 500, NULL, err, sizeof(err)), 0);
	k = lk_test_key_new("alpha", NULL);
	ck_assert(!be->ops->ready(be));
	ck_assert_int_eq(be->ops->acquire(k, 10000, lk_test_on_reply, &g), -ENOTCONN);
	ck_assert_int_eq(be->ops->renew(k, 5, 10000, lk_test_on_reply, &g), -ENOTCONN);
	ck_assert_int_eq(be->ops->release(k, 5, lk_test_on_reply, &g), -ENOTCONN);
	ck_assert(lk_test_ready_within(LK_TEST_READY_MS));
	lk_test_run_for(100);
	ck_assert_int_eq(g.n, 0);
	ck_assert_ptr_nonnull(strstr(logs.text, "connected to 127.0.0.1:"));
}
END_TEST

/* ---- addresses ------------------------------------------------------------------------- */

START_TEST(test_unix_socket_address)
{
	char addr[400];

	snprintf(addr, sizeof(addr), "unix:%s", srv.unix_path);
	start_backend(addr, 500);
	lk_contract_round_trip();
}
END_TEST

/* ---- passwords ------------------------------------------------------------------------- */

START_TEST(test_unreadable_password_file_fails_new)
{
	char err[256] = "";

	ck_assert_int_eq(make_backend("127.0.0.1:6379", 500, "/nonexistent/lk-pw", err, sizeof(err)),
	                 -ENOENT);
	ck_assert_ptr_null(be);
	ck_assert_ptr_nonnull(strstr(err, "/nonexistent/lk-pw"));
}
END_TEST

START_TEST(test_unreadable_sentinel_password_file_fails_new)
{
	char *list[] = { (char *)"127.0.0.1:26379" }, err[256] = "";
	struct lk_config_backend cfg = {
		.name = (char *)"main", .type = LK_BACKEND_REDIS, .timeout_ms = 500,
		.sentinels = list, .n_sentinels = 1, .master_name = (char *)"mymaster",
		.sentinel_password_file = (char *)"/nonexistent/lk-sentinel-pw",
	};

	ck_assert_int_eq(lk_backend_new(base, &cfg, NULL, &be, err, sizeof(err)), -ENOENT);
	ck_assert_ptr_null(be);
	ck_assert_msg(strstr(err, "/nonexistent/lk-sentinel-pw"), "%s", err);
}
END_TEST

/* ---- a server that answers garbage ----------------------------------------------------- */

/* Just enough RESP to get through the handshake (SCRIPT LOAD answers a well-formed SHA), then
 * `reply` to every EVALSHA. Runs in a child process; one client at a time suffices. */
static pid_t fake_server(int *port, const char *reply)
{
	int lfd = -1;
	pid_t pid = lk_test_fork_listener(port, &lfd);

	if (pid > 0)
		return pid;
	for (;;) {
		int fd = accept(lfd, NULL, NULL);
		char buf[8192];
		ssize_t n;

		if (fd < 0)
			_exit(0);
		if (fork() == 0) {
			/* Each command arrives in one read on loopback; count EVALSHA and SCRIPT
			 * occurrences to know how many answers to give. */
			while ((n = read(fd, buf, sizeof(buf) - 1)) > 0) {
				buf[n] = '\0';
				for (char *p = buf; (p = strstr(p, "SCRIPT")); p += 6)
					(void)!write(fd, "$40\r\n0123456789012345678901234567890123456789\r\n", 47);
				for (char *p = buf; (p = strstr(p, "INFO")); p += 4)
					(void)!write(fd, "$49\r\nrun_id:0123456789012345678901234567890123456789\r\n"
					             "\r\n", 56);
				for (char *p = buf; (p = strstr(p, "EVALSHA")); p += 7)
					(void)!write(fd, reply, strlen(reply));
			}
			_exit(0);
		}
		close(fd);
	}
}

/* fake_server() answering `reply`, and the backend `be` connected to it: the server's pid. */
static pid_t fake_backend(const char *reply)
{
	char addr[64];
	int port;
	pid_t pid = fake_server(&port, reply);

	snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
	start_backend(addr, 500);
	return pid;
}

START_TEST(test_garbage_reply_is_fatal)
{
	struct lk_backend_key *k;
	struct lk_test_reply g;
	pid_t pid;

	pid = fake_backend(":7\r\n");
	k = lk_test_key_new("alpha", NULL);
	g = lk_test_acquire(k, 10000);
	ck_assert_int_eq(g.status, LK_REPLY_FATAL);
	ck_assert_msg(strstr(g.err, "unexpected reply to acquire: integer 7"), "%s", g.err);
	g = lk_test_renew(k, 5, 10000);
	ck_assert_int_eq(g.status, LK_REPLY_FATAL);
	g = lk_test_release(k, 5);
	ck_assert_int_eq(g.status, LK_REPLY_FATAL);
	be = lk_backend_free(be);
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
}
END_TEST

START_TEST(test_transient_error_reply_is_error)
{
	struct lk_backend_key *k;
	struct lk_test_reply g;
	pid_t pid;

	pid = fake_backend("-LOADING Redis is loading the dataset in memory\r\n");
	k = lk_test_key_new("alpha", NULL);
	g = lk_test_acquire(k, 10000);
	ck_assert_int_eq(g.status, LK_REPLY_ERROR);
	ck_assert_ptr_nonnull(strstr(g.err, "LOADING"));
	be = lk_backend_free(be);
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
}
END_TEST

/* ---- ACL users and databases ------------------------------------------------------------ */

/* A server with an ACL user besides the open default user (which the inspection client uses). */
static void start_acl_server(const char *databases)
{
	const char *args[] = { "--user", "lk-agent", "on", ">agent-pw", "~*", "&*", "+@all",
	                       "--databases", databases, NULL };

	ck_assert_int_eq(lk_test_redis_start(&srv, args), 0);
}

static int make_acl_backend(const char *password, unsigned db, char *err, size_t errlen)
{
	char path[400];
	struct lk_config_backend cfg = {
		.name = (char *)"main", .type = LK_BACKEND_REDIS, .address = srv.address,
		.timeout_ms = 500, .username = (char *)"lk-agent", .password_file = path, .db = db,
	};
	struct lk_backend_hooks hooks = lk_test_hooks();

	ck_assert_int_eq(lk_test_server_write_file(&srv, "pw", password, path, sizeof(path)), 0);
	return lk_backend_new(base, &cfg, &hooks, &be, err, errlen);
}

/* How many of the server's clients are logged in as user (CLIENT LIST's user=...). */
static int clients_as(const char *user)
{
	redisReply *rep = lk_test_redis_command(&srv, "CLIENT LIST");
	char want[64];
	int n = 0;

	ck_assert_ptr_nonnull(rep);
	ck_assert_int_eq(rep->type, REDIS_REPLY_STRING);
	snprintf(want, sizeof(want), " user=%s ", user);
	for (const char *p = rep->str; (p = strstr(p, want)); p++)
		n++;
	freeReplyObject(rep);
	return n;
}

static char *redis_info(const char *section)
{
	redisReply *rep = lk_test_redis_command(&srv, "INFO %s", section);
	char *text;

	ck_assert_ptr_nonnull(rep);
	ck_assert_int_eq(rep->type, REDIS_REPLY_STRING);
	text = strdup(rep->str);
	freeReplyObject(rep);
	ck_assert_ptr_nonnull(text);
	return text;
}

START_TEST(test_acl_user_logs_in_and_keys_live_in_the_selected_db)
{
	struct lk_backend_key *k;
	char err[256], *ks;
	uint64_t t;

	setup_loop();
	start_acl_server("16");
	ck_assert_msg(make_acl_backend("agent-pw\n", 7, err, sizeof(err)) == 0, "%s", err);
	ck_assert_msg(lk_test_ready_within(LK_TEST_READY_MS), "not ready:\n%s", logs.text);
	k = lk_test_key_new("alpha", NULL);
	t = lk_test_acquire_ok(k, 10000);
	ks = redis_info("keyspace");
	printf("ACL user lk-agent, db 7: token %" PRIu64 ", %d connections as lk-agent, "
	       "keyspace %s\n", t, clients_as("lk-agent"), strchr(ks, '\n') + 1);
	/* Both connections logged in as the ACL user, not as the default user. */
	ck_assert_int_eq(clients_as("lk-agent"), 2);
	/* The key and its fence counter are in db 7, nothing in db 0. */
	ck_assert_msg(strstr(ks, "db7:keys=2,"), "%s", ks);
	ck_assert_msg(!strstr(ks, "db0:"), "%s", ks);
	free(ks);
	ck_assert_int_eq(lk_test_renew(k, t, 10000).status, LK_REPLY_OK);
	ck_assert_int_eq(lk_test_release(k, t).status, LK_REPLY_OK);
	ck_assert_msg(!strstr(logs.text, "agent-pw"), "the password was logged:\n%s", logs.text);
}
END_TEST

START_TEST(test_acl_user_with_a_wrong_password_is_refused_and_logged)
{
	char err[256];

	setup_loop();
	start_acl_server("16");
	ck_assert_msg(make_acl_backend("not-the-pw", 0, err, sizeof(err)) == 0, "%s", err);
	ck_assert(!lk_test_ready_within(700));
	ck_assert_msg(strstr(logs.text, "authentication as lk-agent failed: WRONGPASS"), "%s",
	              logs.text);
	ck_assert_msg(!strstr(logs.text, "not-the-pw"), "the password was logged:\n%s", logs.text);
	ck_assert_int_eq(clients_as("lk-agent"), 0);
}
END_TEST

/* A db the server does not have: every attempt fails with the server's reason in the log. */
START_TEST(test_db_the_server_lacks_is_refused_and_logged)
{
	char err[256];

	setup_loop();
	start_acl_server("4");
	ck_assert_msg(make_acl_backend("agent-pw", 5, err, sizeof(err)) == 0, "%s", err);
	ck_assert(!lk_test_ready_within(700));
	ck_assert_msg(strstr(logs.text, "SELECT 5 failed: ERR DB index is out of range"), "%s",
	              logs.text);
}
END_TEST

/* ---- min_replicas_acked ---------------------------------------------------------------- */

static void start_acked_backend(unsigned n)
{
	char err[256];
	struct lk_config_backend cfg = {
		.name = (char *)"main", .type = LK_BACKEND_REDIS, .address = srv.address,
		.timeout_ms = 500, .min_replicas_acked = n,
	};
	struct lk_backend_hooks hooks = lk_test_hooks();

	ck_assert_msg(lk_backend_new(base, &cfg, &hooks, &be, err, sizeof(err)) == 0, "%s", err);
	ck_assert_msg(lk_test_ready_within(LK_TEST_READY_MS), "not ready:\n%s", logs.text);
}

static bool replica_in_sync(void)
{
	redisReply *rep = lk_test_redis_command(&srv2, "INFO replication");
	bool up = rep && rep->type == REDIS_REPLY_STRING && strstr(rep->str, "master_link_status:up");

	freeReplyObject(rep);
	return up;
}

/* With a replica that answers, acquire and renew are proven after WAIT; with the replica
 * frozen, neither is (ERROR, not OK), and the acquire's value left on the master is deleted
 * by the next acquire at once, as an orphan. Asking for more replicas than there are never
 * proves anything. */
START_TEST(test_min_replicas_acked_waits_for_the_replicas)
{
	struct lk_backend_key *k, *k2;
	char port[16];
	const char *args[] = { "--replicaof", "127.0.0.1", port, NULL };
	struct lk_test_reply g;
	uint64_t t, t2;
	int64_t t0;

	snprintf(port, sizeof(port), "%d", srv.port);
	ck_assert_int_eq(lk_test_redis_start(&srv2, args), 0);
	for (int i = 0; i < 500 && !replica_in_sync(); i++)
		usleep(10000);
	ck_assert(replica_in_sync());
	start_acked_backend(1);
	k = lk_test_key_new("alpha", NULL);
	t = lk_test_acquire_ok(k, 10000);
	ck_assert_int_eq(lk_test_renew(k, t, 10000).status, LK_REPLY_OK);

	ck_assert_int_eq(lk_test_server_sigstop(&srv2), 0);
	t0 = lk_mono_ns();
	g = lk_test_renew(k, t, 10000);
	printf("renewal with the replica frozen: %s after %.0f ms\n", g.err,
	       (lk_mono_ns() - t0) / 1e6);
	ck_assert_int_eq(g.status, LK_REPLY_ERROR);
	ck_assert_msg(strstr(g.err, "renewal not proven: 0 of 1 replicas acknowledged it"), "%s",
	              g.err);
	k2 = be->ops->key_new(be, "lk-test-other", "alpha", lk_test_on_notify, NULL);
	ck_assert_ptr_nonnull(k2);
	g = lk_test_acquire(k2, 10000);
	ck_assert_int_eq(g.status, LK_REPLY_ERROR);
	ck_assert_msg(strstr(g.err, "acquire not proven: 0 of 1"), "%s", g.err);
	{
		char *v = lk_test_redis_get(&srv, "lk-test-other");

		ck_assert_ptr_nonnull(v); /* on the master, unproven */
		free(v);
	}

	ck_assert_int_eq(lk_test_server_sigcont(&srv2), 0);
	t2 = lk_test_acquire_ok(k2, 10000);
	ck_assert_msg(strstr(logs.text, "holds our own unannounced tenure"), "%s", logs.text);
	ck_assert_uint_gt(t2, t);
	be = lk_backend_free(be);

	/* Two replicas asked for, one there: never proven. */
	start_acked_backend(2);
	k = be->ops->key_new(be, "lk-test-third", "beta", lk_test_on_notify, NULL);
	ck_assert_ptr_nonnull(k);
	g = lk_test_acquire(k, 10000);
	ck_assert_int_eq(g.status, LK_REPLY_ERROR);
	ck_assert_msg(strstr(g.err, "1 of 2 replicas"), "%s", g.err);
	be = lk_backend_free(be);
}
END_TEST

/* ---- Sentinel -------------------------------------------------------------------------- */

#define MASTER_NAME "mymaster"

/* A fake sentinel in a child process. Its answer to SENTINEL get-master-addr-by-name is read
 * from <srv dir>/<name>.master at each question: a port (127.0.0.1:<port>), "nil" (no such
 * master) or "garbage". Once a connection has SUBSCRIBEd, the first time <name>.switch holds
 * a port it publishes +switch-master to 127.0.0.1:<port>. Each question is counted in
 * <name>.asked (one byte per question). */
static pid_t fake_sentinel(const char *name, int *port)
{
	int lfd = -1;
	pid_t pid = lk_test_fork_listener(port, &lfd);
	char mpath[400], spath[400], apath[400];

	if (pid > 0)
		return pid;
	snprintf(mpath, sizeof(mpath), "%s/%s.master", srv.dir, name);
	snprintf(spath, sizeof(spath), "%s/%s.switch", srv.dir, name);
	snprintf(apath, sizeof(apath), "%s/%s.asked", srv.dir, name);
	for (;;) {
		int fd = accept(lfd, NULL, NULL);

		if (fd < 0)
			_exit(0);
		if (fork() != 0) {
			close(fd);
			continue;
		}
		bool subscribed = false, switched = false;
		char buf[8192], out[512], what[64];

		for (;;) {
			struct pollfd pfd = { .fd = fd, .events = POLLIN };
			ssize_t n;
			FILE *f;

			if (poll(&pfd, 1, 10) == 0) {
				if (!subscribed || switched || !(f = fopen(spath, "r")))
					continue;
				if (fscanf(f, "%63s", what) == 1) {
					char m[128];
					int ml = snprintf(m, sizeof(m), MASTER_NAME " 127.0.0.1 1 127.0.0.1 %s",
					                  what);

					switched = true;
					n = snprintf(out, sizeof(out), "*3\r\n$7\r\nmessage\r\n$14\r\n"
					             "+switch-master\r\n$%d\r\n%s\r\n", ml, m);
					(void)!write(fd, out, (size_t)n);
				}
				fclose(f);
				continue;
			}
			n = read(fd, buf, sizeof(buf) - 1);
			if (n <= 0)
				_exit(0);
			buf[n] = '\0';
			/* Answer in the order the commands came. */
			for (char *p = buf;;) {
				char *q = strstr(p, "get-master-addr-by-name"), *sub = strstr(p, "SUBSCRIBE");

				if (!q && !sub)
					break;
				if (q && (!sub || q < sub)) {
					int fa = open(apath, O_WRONLY | O_APPEND | O_CREAT, 0600);

					(void)!write(fa, "x", 1);
					close(fa);
					strcpy(what, "nil");
					if ((f = fopen(mpath, "r"))) {
						if (fscanf(f, "%63s", what) != 1)
							strcpy(what, "nil");
						fclose(f);
					}
					if (strcmp(what, "nil") == 0)
						n = snprintf(out, sizeof(out), "*-1\r\n");
					else if (strcmp(what, "garbage") == 0)
						n = snprintf(out, sizeof(out), ":7\r\n");
					else
						n = snprintf(out, sizeof(out), "*2\r\n$9\r\n127.0.0.1\r\n$%zu\r\n"
						             "%s\r\n", strlen(what), what);
					p = q + 23;
				} else {
					subscribed = true;
					n = snprintf(out, sizeof(out), "*3\r\n$9\r\nsubscribe\r\n$14\r\n"
					             "+switch-master\r\n:1\r\n");
					p = sub + 9;
				}
				(void)!write(fd, out, (size_t)n);
			}
		}
	}
}

static void fake_set(const char *name, const char *what, const char *value)
{
	char file[64], path[400];

	snprintf(file, sizeof(file), "%s.%s", name, what);
	ck_assert_int_eq(lk_test_server_write_file(&srv, file, value, path, sizeof(path)), 0);
}

static size_t fake_asked(const char *name)
{
	char path[400];
	struct stat st;

	snprintf(path, sizeof(path), "%s/%s.asked", srv.dir, name);
	return stat(path, &st) == 0 ? (size_t)st.st_size : 0;
}

static void stop_child(pid_t pid)
{
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
}

static int make_sentinel_backend(int *ports, size_t n, char *err, size_t errlen)
{
	char addrs[4][32], *list[4];
	struct lk_config_backend cfg = {
		.name = (char *)"main", .type = LK_BACKEND_REDIS, .timeout_ms = 500,
		.sentinels = list, .n_sentinels = n, .master_name = (char *)MASTER_NAME,
	};
	struct lk_backend_hooks hooks = lk_test_hooks();

	for (size_t i = 0; i < n; i++) {
		snprintf(addrs[i], sizeof(addrs[i]), "127.0.0.1:%d", ports[i]);
		list[i] = addrs[i];
	}
	return lk_backend_new(base, &cfg, &hooks, &be, err, errlen);
}

static bool logged(const void *what)
{
	return strstr(logs.text, what) != NULL;
}

/* The sentinel names the master; +switch-master moves both connections to the new one, which
 * is another instance: the restart hold-off applies, the old tenure is gone there, and the
 * next token is larger. */
START_TEST(test_sentinel_names_the_master_and_switch_master_moves_to_the_new_one)
{
	struct lk_backend_key *k;
	char err[256], port2[16], want[96], why[192] = "", *v;
	int sport;
	uint64_t t1, t2;
	int64_t until, t0;
	pid_t pid;

	ck_assert_int_eq(lk_test_redis_start(&srv2, NULL), 0);
	snprintf(port2, sizeof(port2), "%d", srv2.port);
	snprintf(want, sizeof(want), "%d", srv.port);
	fake_set("s1", "master", want);
	pid = fake_sentinel("s1", &sport);
	ck_assert_msg(make_sentinel_backend(&sport, 1, err, sizeof(err)) == 0, "%s", err);
	ck_assert_msg(lk_test_ready_within(LK_TEST_READY_MS), "not ready:\n%s", logs.text);
	ck_assert_msg(strstr(logs.text, "master " MASTER_NAME " is 127.0.0.1:"), "%s", logs.text);
	k = lk_test_key_new("alpha", NULL);
	t1 = lk_test_acquire_ok(k, 10000);
	v = lk_test_redis_get(&srv, KEY);
	ck_assert_ptr_nonnull(v);
	free(v);

	t0 = lk_mono_ns();
	fake_set("s1", "switch", port2);
	snprintf(want, sizeof(want), "reconnected to 127.0.0.1:%d", srv2.port);
	ck_assert_msg(lk_test_run_until(logged, want, LK_TEST_WAIT_MS), "no move:\n%s", logs.text);
	ck_assert_msg(lk_test_ready_within(LK_TEST_READY_MS), "not ready:\n%s", logs.text);
	printf("+switch-master: on the new master %.0f ms after the event was sent\n",
	       (lk_mono_ns() - t0) / 1e6);
	ck_assert_ptr_nonnull(strstr(logs.text, "+switch-master: master " MASTER_NAME " moved"));
	until = be->ops->holdoff_until(k, 10000, why, sizeof(why));
	ck_assert_msg(until > lk_mono_ns() + 9000 * 1000000LL, "no hold-off (%s)", why);
	ck_assert_msg(strstr(why, "run_id changed"), "%s", why);
	/* The new master never saw the tenure; a new one there has a larger token. */
	ck_assert_int_eq(lk_test_renew(k, t1, 10000).status, LK_REPLY_GONE);
	t2 = lk_test_acquire_ok(k, 10000);
	ck_assert_uint_gt(t2, t1);
	v = lk_test_redis_get(&srv2, KEY);
	ck_assert_ptr_nonnull(v);
	free(v);
	be = lk_backend_free(be);
	stop_child(pid);
}
END_TEST

/* A sentinel that knows no such master, or answers garbage: logged, and the next sentinel is
 * asked; a server the sentinels name that is a replica (ROLE) is not used, and the sentinels
 * are asked again. */
START_TEST(test_sentinel_garbage_unknown_master_and_a_replica_are_not_used)
{
	char err[256], port1[16], repl[64], want[96];
	int ports[2];
	pid_t p1, p2;

	snprintf(port1, sizeof(port1), "%d", srv.port);
	snprintf(repl, sizeof(repl), "%d", srv.port);
	{
		const char *args[] = { "--replicaof", "127.0.0.1", repl, NULL };

		ck_assert_int_eq(lk_test_redis_start(&srv2, args), 0);
	}
	fake_set("bad", "master", "nil");
	fake_set("good", "master", "garbage");
	p1 = fake_sentinel("bad", &ports[0]);
	p2 = fake_sentinel("good", &ports[1]);
	ck_assert_msg(make_sentinel_backend(ports, 2, err, sizeof(err)) == 0, "%s", err);
	ck_assert(!lk_test_ready_within(1500));
	ck_assert_msg(strstr(logs.text, "this sentinel knows no master named " MASTER_NAME), "%s",
	              logs.text);
	ck_assert_msg(strstr(logs.text, "unexpected answer to SENTINEL get-master-addr-by-name: "
	                     "integer 7"), "%s", logs.text);
	ck_assert_uint_ge(fake_asked("bad"), 1);
	ck_assert_uint_ge(fake_asked("good"), 1);

	/* Now it names the replica: ROLE says so, and the sentinels are asked again. */
	snprintf(want, sizeof(want), "%d", srv2.port);
	fake_set("good", "master", want);
	snprintf(want, sizeof(want), "127.0.0.1:%d is not the master (ROLE: slave)", srv2.port);
	ck_assert_msg(lk_test_run_until(logged, want, LK_TEST_WAIT_MS), "%s", logs.text);
	ck_assert(!lk_test_ready(NULL));

	fake_set("good", "master", port1);
	ck_assert_msg(lk_test_ready_within(LK_TEST_WAIT_MS), "not ready:\n%s", logs.text);
	snprintf(want, sizeof(want), "connected to 127.0.0.1:%d", srv.port);
	ck_assert_msg(strstr(logs.text, want), "%s", logs.text);
	lk_contract_round_trip();
	be = lk_backend_free(be);
	stop_child(p1);
	stop_child(p2);
}
END_TEST

/* The master the agent uses becomes a replica while it is connected (it came back after a
 * failover and Sentinel demoted it): the script's READONLY is an ERROR, and the agent asks the
 * sentinels again instead of retrying there. */
START_TEST(test_sentinel_master_turned_replica_is_left_on_readonly)
{
	struct lk_backend_key *k;
	char err[256], port[16], want[96];
	struct lk_test_reply g;
	int sport;
	size_t asked;
	pid_t pid;

	ck_assert_int_eq(lk_test_redis_start(&srv2, NULL), 0);
	snprintf(port, sizeof(port), "%d", srv.port);
	fake_set("s1", "master", port);
	pid = fake_sentinel("s1", &sport);
	ck_assert_msg(make_sentinel_backend(&sport, 1, err, sizeof(err)) == 0, "%s", err);
	ck_assert_msg(lk_test_ready_within(LK_TEST_READY_MS), "not ready:\n%s", logs.text);
	k = lk_test_key_new("alpha", NULL);
	lk_test_acquire_ok(k, 10000);
	asked = fake_asked("s1");

	/* srv becomes a replica of srv2, and the sentinel names srv2 from now on. */
	snprintf(port, sizeof(port), "%d", srv2.port);
	fake_set("s1", "master", port);
	ck_assert(lk_test_redis_ok(&srv, "REPLICAOF 127.0.0.1 %d", srv2.port));
	/* Once synced, srv holds srv2's (empty) data: the acquire gets as far as its first write. */
	for (int i = 0; i < 500; i++) {
		redisReply *rep = lk_test_redis_command(&srv, "INFO replication");
		bool up = rep && rep->type == REDIS_REPLY_STRING &&
		          strstr(rep->str, "master_link_status:up");

		freeReplyObject(rep);
		if (up)
			break;
		usleep(10000);
	}
	g = lk_test_acquire(k, 10000);
	ck_assert_int_eq(g.status, LK_REPLY_ERROR);
	ck_assert_msg(strstr(g.err, "READONLY"), "%s", g.err);
	snprintf(want, sizeof(want), "connected to 127.0.0.1:%d", srv2.port);
	ck_assert_msg(lk_test_run_until(logged, want, LK_TEST_WAIT_MS), "%s", logs.text);
	ck_assert_msg(strstr(logs.text, "is now a replica (READONLY)"), "%s", logs.text);
	ck_assert_uint_gt(fake_asked("s1"), asked);
	ck_assert_msg(lk_test_ready_within(LK_TEST_READY_MS), "not ready:\n%s", logs.text);
	lk_test_acquire_ok(k, 10000);
	be = lk_backend_free(be);
	stop_child(pid);
}
END_TEST

/* ---- the shared helpers in backend.c --------------------------------------------------- */

START_TEST(test_parse_address)
{
	char host[64];
	int port;

	ck_assert_int_eq(lk_parse_address("127.0.0.1:6379", host, sizeof(host), &port), 0);
	ck_assert_str_eq(host, "127.0.0.1");
	ck_assert_int_eq(port, 6379);
	ck_assert_int_eq(lk_parse_address("redis.svc.local:1", host, sizeof(host), &port), 0);
	ck_assert_str_eq(host, "redis.svc.local");
	ck_assert_int_eq(port, 1);
	ck_assert_int_eq(lk_parse_address("[::1]:65535", host, sizeof(host), &port), 0);
	ck_assert_str_eq(host, "::1");
	ck_assert_int_eq(port, 65535);
	ck_assert_int_eq(lk_parse_address("unix:/run/redis.sock", host, sizeof(host), &port), 0);
	ck_assert_str_eq(host, "/run/redis.sock");
	ck_assert_int_eq(port, 0);

	static const char *const bad[] = {
		"", ":6379", "host", "host:", "host:0", "host:65536", "host:-1", "host:+80",
		"host:80x", "host:123456", "::1:6379", "[::1]", "[::1]6379", "[]:6379",
		"[nonsense]:6379", "ho st:80", "unix:", " 127.0.0.1:6379", "127.0.0.1:6379 ",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		ck_assert_msg(lk_parse_address(bad[i], host, sizeof(host), &port) == -EINVAL,
		              "accepted \"%s\"", bad[i]);
	/* Does not fit: refused, not truncated. */
	ck_assert_int_eq(lk_parse_address("averyveryverylonghostname:80", host, 8, &port), -EINVAL);
}
END_TEST

START_TEST(test_backoff_doubles_to_cap_with_equal_jitter)
{
	for (unsigned attempt = 0; attempt < 40; attempt++) {
		int64_t full = 100;

		for (unsigned i = 0; i < attempt && full < 5000; i++)
			full *= 2;
		if (full > 5000)
			full = 5000;
		for (int i = 0; i < 50; i++) {
			int64_t d = lk_backoff_ms(attempt, 100, 5000);

			ck_assert_int_ge(d, full / 2);
			ck_assert_int_le(d, full);
		}
	}
	ck_assert_int_le(lk_backoff_ms(UINT32_MAX, 100, 5000), 5000);
}
END_TEST

START_TEST(test_factory_dispatches_on_type)
{
	struct lk_config_backend cfg = { .name = (char *)"coord", .type = LK_BACKEND_ETCD,
	                                 .timeout_ms = 1000 };
	struct lk_backend *b = NULL;
	char err[128] = "";

	/* The factory hands etcd configs to the etcd backend (tested in check_etcd.c). No
	 * endpoints at all means etcd's usual local address; nothing is contacted here. */
	ck_assert_int_eq(lk_backend_new(base, &cfg, NULL, &b, err, sizeof(err)), 0);
	ck_assert_ptr_nonnull(b);
	ck_assert_str_eq(b->ops->type, "etcd");
	ck_assert_str_eq(b->name, "coord");
	ck_assert_ptr_null(lk_backend_free(b));
	cfg.type = (enum lk_backend_type)42;
	ck_assert_int_eq(lk_backend_new(base, &cfg, NULL, &b, err, sizeof(err)), -EINVAL);
	ck_assert_ptr_null(lk_backend_free(NULL));
}
END_TEST

static Suite *redis_suite(void)
{
	Suite *s = suite_create("redis");
	TCase *tc;

	lk_contract_add(s, &redis_contract);

	tc = tcase_create("redis");
	tcase_add_checked_fixture(tc, setup_redis, teardown_loop);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_held_tells_when_the_holder_key_runs_out);
	tcase_add_test(tc, test_tokens_never_repeat_when_the_counter_goes_back);
	tcase_add_test(tc, test_acquire_tells_what_came_before_and_the_gap_since_the_release);
	tcase_add_test(tc, test_holdoff_while_a_new_server_is_younger_than_the_ttl);
	tcase_add_test(tc, test_holdoff_of_a_server_started_just_before_a_second_began);
	tcase_add_test(tc, test_own_orphan_of_a_timed_out_acquire_is_reclaimed_without_a_release_notice);
	tcase_add_test(tc,
	               test_own_tenure_kept_alive_by_a_late_renewal_is_reclaimed_once_its_lease_ran_out);
	tcase_add_test(tc, test_wrong_type_is_fatal);
	tcase_add_test(tc, test_script_flush_falls_back_to_eval);
	tcase_add_test(tc, test_key_added_later_is_subscribed);
	tcase_add_test(tc, test_enotconn_before_connected_and_no_callback);
	tcase_add_test(tc, test_unix_socket_address);
	tcase_add_test(tc, test_sentinel_names_the_master_and_switch_master_moves_to_the_new_one);
	tcase_add_test(tc, test_sentinel_garbage_unknown_master_and_a_replica_are_not_used);
	tcase_add_test(tc, test_sentinel_master_turned_replica_is_left_on_readonly);
	tcase_add_test(tc, test_min_replicas_acked_waits_for_the_replicas);
	suite_add_tcase(s, tc);

	tc = tcase_create("acl");
	tcase_add_checked_fixture(tc, NULL, teardown_loop);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_acl_user_logs_in_and_keys_live_in_the_selected_db);
	tcase_add_test(tc, test_acl_user_with_a_wrong_password_is_refused_and_logged);
	tcase_add_test(tc, test_db_the_server_lacks_is_refused_and_logged);
	suite_add_tcase(s, tc);

	tc = tcase_create("offline");
	tcase_add_checked_fixture(tc, setup_loop, teardown_loop);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_unreadable_password_file_fails_new);
	tcase_add_test(tc, test_unreadable_sentinel_password_file_fails_new);
	tcase_add_test(tc, test_garbage_reply_is_fatal);
	tcase_add_test(tc, test_transient_error_reply_is_error);
	tcase_add_test(tc, test_handoff_answer_garbage_is_unknown_and_never_a_crash);
	tcase_add_test(tc, test_acquired_with_a_garbage_handoff_is_ok_and_logged);
	tcase_add_test(tc, test_parse_address);
	tcase_add_test(tc, test_backoff_doubles_to_cap_with_equal_jitter);
	tcase_add_test(tc, test_factory_dispatches_on_type);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return lk_test_run_suite(redis_suite());
}
