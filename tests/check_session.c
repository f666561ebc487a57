/* The per-client protocol (agent/session.c) without a socket: lines go in through an evbuffer,
 * and a fake transport records what the session sends and asks for. */
#include <check.h>
#include <event2/buffer.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/config.h"
#include "agent/lock.h"
#include "agent/log.h"
#include "agent/session.h"
#include "agent/status.h"
#include "locks/backend.h"
#include "proto/auth.h"
#include "proto/codec.h"

/* ---- a fake transport and agent ------------------------------------------------------------ */

struct conn {
	char out[16384];
	size_t len;
	unsigned closes, hellos, actives;
	bool cut_off;
};

static struct conn conn;
static struct lk_session *S;
static struct evbuffer *in;
static unsigned drains;
static bool draining;
static uint8_t key[LK_AUTH_KEY_BYTES] = { 1, 2, 3 };

static void io_send(void *c, const char *line, size_t len)
{
	struct conn *k = c;

	ck_assert_uint_lt(k->len + len, sizeof(k->out));
	memcpy(k->out + k->len, line, len);
	k->len += len;
	k->out[k->len] = '\0';
}

static void io_close(void *c, bool cut_off)
{
	struct conn *k = c;

	k->closes++;
	k->cut_off = cut_off;
}

static void io_hello(void *c) { ((struct conn *)c)->hellos++; }
static void io_active(void *c) { ((struct conn *)c)->actives++; }

/* The transport's subscriptions as the session asked for them, in order: "+3 -3 +*". */
static char wants[256];

static int io_want(void *c, size_t lock_index, bool on)
{
	size_t n = strlen(wants);

	if (lock_index == LK_SESSION_ALL_LOCKS)
		snprintf(wants + n, sizeof(wants) - n, "%s%c*", n ? " " : "", on ? '+' : '-');
	else
		snprintf(wants + n, sizeof(wants) - n, "%s%c%zu", n ? " " : "", on ? '+' : '-',
		         lock_index);
	return 0;
}

static const struct lk_session_io io = {
	.send = io_send, .close = io_close, .hello = io_hello, .active = io_active,
	.want = io_want,
};

static bool is_draining(void *ctx) { return draining; }
static void do_drain(void *ctx, const char *trigger) { drains++; draining = true; }

static const struct lk_status status = {
	.identity = "pod-a", .version = "9.9.9", .draining = is_draining,
};

static struct lk_session_env env = { .status = &status, .drain = do_drain };

/* ---- helpers --------------------------------------------------------------------------------- */

/* What the session sent since the last call. */
static const char *sent(void)
{
	static char copy[sizeof(conn.out)];

	memcpy(copy, conn.out, conn.len + 1);
	conn.len = 0;
	conn.out[0] = '\0';
	return copy;
}

/* Feed bytes, and let the session take every complete line, as server.c's reader does. */
static void feed(const char *bytes)
{
	evbuffer_add(in, bytes, strlen(bytes));
	while (lk_session_read_line(S, in))
		;
}

static void start(const uint8_t *with_key)
{
	env.key = with_key;
	S = lk_session_new(&env, &io, &conn, 1);
	ck_assert_ptr_nonnull(S);
}

static void start_and_hello(void)
{
	start(NULL);
	feed("HELLO 1 client=test\n");
	ck_assert_ptr_nonnull(strstr(sent(), "OK HELLO 1 agent=9.9.9 id=pod-a\n"));
}

static FILE *log_sink;

static void setup(void)
{
	/* Failed authentications are logged on purpose: keep the output readable. */
	log_sink = fopen("/dev/null", "w");
	lk_log_setup(LK_LOG_TEXT, LK_INFO, log_sink);
	memset(&conn, 0, sizeof(conn));
	in = evbuffer_new();
	ck_assert_ptr_nonnull(in);
	drains = 0;
	draining = false;
	wants[0] = '\0';
	S = NULL;
	ck_assert_int_eq(lk_auth_init(), 0);
}

static void teardown(void)
{
	S = lk_session_free(S, false);
	evbuffer_free(in);
	lk_log_setup(LK_LOG_TEXT, LK_INFO, NULL);
	if (log_sink)
		fclose(log_sink);
}

/* ---- tests ----------------------------------------------------------------------------------- */

START_TEST(banner_comes_first_with_a_nonce)
{
	const char *out;

	start(NULL);
	out = sent();
	ck_assert_msg(strncmp(out, "LEASEKEEPER 1 id=pod-a nonce=", 29) == 0, "%s", out);
	ck_assert_ptr_nonnull(strstr(out, " auth=none "));
	ck_assert_uint_eq(conn.hellos, 0);
}
END_TEST

START_TEST(hello_is_answered_with_version_and_identity)
{
	start_and_hello();
	ck_assert_uint_eq(conn.hellos, 1);
	ck_assert(lk_session_said_hello(S));
	ck_assert_str_eq(lk_session_name(S), "test");
	ck_assert_uint_eq(conn.closes, 0);
}
END_TEST

START_TEST(a_verb_before_hello_is_hello_required_and_closes)
{
	start(NULL);
	sent();
	feed("PING\n");
	ck_assert_str_eq(sent(), "ERR hello_required say HELLO 1 first\n");
	ck_assert_uint_eq(conn.closes, 1);
	ck_assert(!conn.cut_off);
	/* Nothing more is taken from a closing session. */
	feed("HELLO 1\n");
	ck_assert_str_eq(sent(), "");
	ck_assert(!lk_session_said_hello(S));
}
END_TEST

START_TEST(an_unsupported_version_is_said_so)
{
	start(NULL);
	sent();
	feed("HELLO 2\n");
	ck_assert_ptr_nonnull(strstr(sent(), "ERR unsupported_version"));
	ck_assert_uint_eq(conn.closes, 1);
}
END_TEST

START_TEST(a_second_hello_is_a_bad_request)
{
	start_and_hello();
	feed("HELLO 1\n");
	ck_assert_str_eq(sent(), "ERR bad_request HELLO was already said\n");
	ck_assert_uint_eq(conn.closes, 0);
}
END_TEST

START_TEST(an_unknown_verb_is_err_unknown_verb_and_the_session_goes_on)
{
	start_and_hello();
	feed("FROB x\n");
	ck_assert_ptr_nonnull(strstr(sent(), "ERR unknown_verb"));
	ck_assert_uint_eq(conn.closes, 0);
	feed("PING\r\n");
	ck_assert_str_eq(sent(), "OK PONG\n");
}
END_TEST

START_TEST(an_unknown_lock_is_err_unknown_lock)
{
	start_and_hello();
	feed("CAMPAIGN nope\n");
	ck_assert_str_eq(sent(), "ERR unknown_lock nope\n");
	feed("WATCH nope\n");
	ck_assert_str_eq(sent(), "ERR unknown_lock nope\n");
	ck_assert_uint_eq(conn.actives, 0);
	ck_assert_int_eq(lk_session_kind(S), LK_SESSION_OTHER);
}
END_TEST

START_TEST(a_line_at_the_cap_is_read)
{
	char line[LK_LINE_MAX + 1];

	start_and_hello();
	memset(line, 'X', LK_LINE_MAX - 1);
	line[LK_LINE_MAX - 1] = '\n';
	line[LK_LINE_MAX] = '\0';
	feed(line);
	ck_assert_ptr_null(strstr(sent(), "line_too_long"));
	ck_assert_uint_eq(conn.closes, 0);
}
END_TEST

START_TEST(a_line_past_the_cap_is_line_too_long_and_cuts_the_client_off)
{
	char line[LK_LINE_MAX + 1];

	start_and_hello();
	memset(line, 'X', LK_LINE_MAX);
	line[LK_LINE_MAX] = '\0';
	/* No newline yet: the cap is reached all the same. */
	feed(line);
	ck_assert_str_eq(sent(), "ERR line_too_long lines are at most 4096 bytes\n");
	ck_assert_uint_eq(conn.closes, 1);
	ck_assert(conn.cut_off);
	feed("\nPING\n");
	ck_assert_str_eq(sent(), "");
}
END_TEST

START_TEST(a_short_partial_line_waits_for_its_newline)
{
	start_and_hello();
	feed("PI");
	ck_assert_str_eq(sent(), "");
	feed("NG\n");
	ck_assert_str_eq(sent(), "OK PONG\n");
}
END_TEST

START_TEST(auth_requires_the_mac_of_the_nonce)
{
	char mac[LK_AUTH_KEY_BYTES * 2 + 1], nonce[LK_NONCE_HEX_LEN + 1], line[256];
	const char *banner;

	start(key);
	banner = sent();
	ck_assert_ptr_nonnull(strstr(banner, " auth=hmac "));
	snprintf(nonce, sizeof(nonce), "%s", strstr(banner, "nonce=") + 6);
	ck_assert_int_eq(lk_auth_mac_hex(key, nonce, mac), 0);
	snprintf(line, sizeof(line), "HELLO 1 mac=%s\n", mac);
	feed(line);
	ck_assert_ptr_nonnull(strstr(sent(), "OK HELLO 1"));
	ck_assert_uint_eq(conn.closes, 0);
}
END_TEST

START_TEST(auth_without_or_with_a_wrong_mac_fails_and_closes)
{
	start(key);
	sent();
	feed("HELLO 1\n");
	ck_assert_str_eq(sent(), "ERR auth_failed mac required\n");
	ck_assert_uint_eq(conn.closes, 1);
	S = lk_session_free(S, false);
	start(key);
	sent();
	feed("HELLO 1 mac=0000000000000000000000000000000000000000000000000000000000000000\n");
	ck_assert_str_eq(sent(), "ERR auth_failed wrong mac\n");
	ck_assert(!lk_session_said_hello(S));
}
END_TEST

START_TEST(status_is_one_line_of_json)
{
	start_and_hello();
	feed("STATUS\n");
	ck_assert_str_eq(sent(), "OK STATUS {\"identity\":\"pod-a\",\"draining\":false,"
	                         "\"backends\":[],\"locks\":[]}\n");
}
END_TEST

START_TEST(drain_asks_the_agent_and_keeps_the_slot)
{
	start_and_hello();
	feed("DRAIN\n");
	ck_assert_str_eq(sent(), "OK DRAIN\n");
	ck_assert_uint_eq(drains, 1);
	ck_assert_uint_eq(conn.actives, 1);
	ck_assert(lk_session_asked_to_drain(S));
}
END_TEST

START_TEST(quit_is_answered_then_closed)
{
	start_and_hello();
	feed("QUIT\nPING\n");
	ck_assert_str_eq(sent(), "OK BYE\n");
	ck_assert_uint_eq(conn.closes, 1);
	ck_assert(!conn.cut_off);
}
END_TEST

/* ---- an agent with many locks: a fake backend that never answers, timers that never fire -- */

#define N_MANY 300

struct lk_backend_key {
	int unused;
};

static struct lk_backend_key *fake_key_new(struct lk_backend *b, const char *k, const char *id,
                                           lk_backend_notify_fn *notify, void *arg)
{
	return calloc(1, sizeof(struct lk_backend_key));
}

static void fake_key_free(struct lk_backend_key *k) { free(k); }
static int fake_acquire(struct lk_backend_key *k, int64_t ttl, lk_backend_reply_fn *cb, void *a)
{
	return 0;
}
static int fake_renew(struct lk_backend_key *k, uint64_t t, int64_t ttl, lk_backend_reply_fn *cb,
                      void *a)
{
	return 0;
}
static int fake_release(struct lk_backend_key *k, uint64_t t, lk_backend_reply_fn *cb, void *a)
{
	return 0;
}
static void fake_watch(struct lk_backend_key *k, bool on) {}
static int64_t fake_holdoff(struct lk_backend_key *k, int64_t ttl, char *why, size_t cap)
{
	return 0;
}
static bool fake_ready(const struct lk_backend *b) { return true; }

static const struct lk_backend_ops fake_ops = {
	.type = "fake", .key_new = fake_key_new, .key_free = fake_key_free,
	.acquire = fake_acquire, .renew = fake_renew, .release = fake_release,
	.watch = fake_watch, .holdoff_until = fake_holdoff, .ready = fake_ready,
};

static int timer_token;
static int64_t env_now(void *ctx) { return lk_mono_ns(); }
static void *env_timer_new(void *ctx, lk_timer_fn *fn, void *arg) { return &timer_token; }
static void env_timer_arm(void *ctx, void *t, int64_t at_ns) {}
static void env_timer_disarm(void *ctx, void *t) {}
static void env_timer_free(void *ctx, void *t) {}
static void env_emit(void *ctx, struct lk_lock *l, const char *line, size_t len) {}
static void env_settled(void *ctx, struct lk_lock *l) {}

static const struct lk_lock_env lock_env = {
	.now_ns = env_now, .timer_new = env_timer_new, .timer_arm = env_timer_arm,
	.timer_disarm = env_timer_disarm, .timer_free = env_timer_free, .emit = env_emit,
	.settled = env_settled,
};

static struct lk_backend fake_backend = { .ops = &fake_ops, .name = "fake" };
static struct lk_config_lock many_cfg[N_MANY];
static struct lk_lock *many_locks[N_MANY];
static struct lk_status many;
static size_t *many_index;

static void setup_many(void)
{
	static char names[N_MANY][32];

	setup();
	for (size_t i = 0; i < N_MANY; i++) {
		/* Listed out of name order, so that the name index is not the config order. */
		snprintf(names[i], sizeof(names[i]), "lock-%03zu-of-the-many", (i * 7) % N_MANY);
		many_cfg[i] = (struct lk_config_lock){ .name = names[i], .key = names[i],
		                                       .ttl_ms = 10000, .renew_interval_ms = 3000,
		                                       .renew_deadline_ms = 6000,
		                                       .retry_interval_ms = 1000,
		                                       .stepdown_timeout_ms = 5000,
		                                       .release_timeout_ms = 3000 };
		many_locks[i] = lk_lock_new(&many_cfg[i], &fake_backend, "pod-a", &lock_env);
		ck_assert_ptr_nonnull(many_locks[i]);
	}
	many = status;
	many.locks = many_locks;
	many.n_locks = N_MANY;
	many_index = lk_status_index_new(&many);
	ck_assert_ptr_nonnull(many_index);
	many.by_name = many_index;
	env.status = &many;
}

static void teardown_many(void)
{
	teardown();
	for (size_t i = 0; i < N_MANY; i++)
		many_locks[i] = lk_lock_free(many_locks[i]);
	free(many_index);
	env.status = &status;
}

/* The JSON of the one "OK STATUS" line sent since the last call, a new reference. */
static json_t *status_reply(void)
{
	const char *out = sent();
	json_error_t jerr;
	json_t *root;

	ck_assert_msg(strncmp(out, "OK STATUS {", 11) == 0, "not a STATUS reply: %s", out);
	ck_assert_msg(strlen(out) <= LK_LINE_MAX, "a line of %zu bytes", strlen(out));
	ck_assert_ptr_nonnull(strchr(out, '\n'));
	ck_assert_ptr_eq(strchr(out, '\n'), out + strlen(out) - 1);
	root = json_loads(out + strlen("OK STATUS "), 0, &jerr);
	ck_assert_msg(root != NULL, "bad JSON: %s", jerr.text);
	return root;
}

START_TEST(status_pages_list_every_lock_once_in_config_order)
{
	char line[LK_LINE_MAX];
	size_t seen = 0, pages = 0;
	json_t *root, *l;
	size_t i;

	start_and_hello();
	feed("STATUS\n");
	root = status_reply();
	/* The plain form as before: clients would be here, and the locks that fit. */
	ck_assert_str_eq(json_string_value(json_object_get(root, "identity")), "pod-a");
	for (;;) {
		json_t *locks = json_object_get(root, "locks");
		const char *next = json_string_value(json_object_get(root, "next_after"));
		json_int_t left = json_integer_value(json_object_get(root, "truncated"));

		pages++;
		ck_assert_uint_gt(json_array_size(locks), 0);
		json_array_foreach(locks, i, l) {
			ck_assert_uint_lt(seen, N_MANY);
			ck_assert_str_eq(json_string_value(json_object_get(l, "name")),
			                 lk_lock_name(many_locks[seen]));
			ck_assert_str_eq(json_string_value(json_object_get(l, "state")), "idle");
			seen++;
		}
		ck_assert_int_eq(left, (json_int_t)(N_MANY - seen));
		if (!next) {
			ck_assert_int_eq(left, 0);
			json_decref(root);
			break;
		}
		ck_assert_str_eq(next, lk_lock_name(many_locks[seen - 1]));
		snprintf(line, sizeof(line), "STATUS after=%s\n", next);
		json_decref(root);
		feed(line);
		root = status_reply();
		ck_assert_ptr_null(json_object_get(root, "clients"));
	}
	ck_assert_uint_eq(seen, N_MANY);
	ck_assert_uint_gt(pages, 5);
	/* After the last lock: an empty page. */
	snprintf(line, sizeof(line), "STATUS after=%s\n", lk_lock_name(many_locks[N_MANY - 1]));
	feed(line);
	root = status_reply();
	ck_assert_uint_eq(json_array_size(json_object_get(root, "locks")), 0);
	ck_assert_ptr_null(json_object_get(root, "truncated"));
	ck_assert_ptr_null(json_object_get(root, "next_after"));
	json_decref(root);
	/* STATUS never makes the connection an app's. */
	ck_assert_uint_eq(conn.actives, 0);
}
END_TEST

START_TEST(status_of_one_lock_shows_that_lock_alone)
{
	json_t *root, *locks;

	start_and_hello();
	feed("STATUS lock=lock-123-of-the-many\n");
	root = status_reply();
	locks = json_object_get(root, "locks");
	ck_assert_uint_eq(json_array_size(locks), 1);
	ck_assert_str_eq(json_string_value(json_object_get(json_array_get(locks, 0), "name")),
	                 "lock-123-of-the-many");
	ck_assert_ptr_null(json_object_get(root, "truncated"));
	ck_assert_ptr_null(json_object_get(root, "next_after"));
	json_decref(root);
	feed("STATUS lock=nope\nSTATUS after=nope\nSTATUS lock=a after=b\n");
	ck_assert_str_eq(sent(), "ERR unknown_lock nope\nERR unknown_lock nope\n"
	                 "ERR bad_request STATUS takes lock= or after=, not both\n");
}
END_TEST

START_TEST(lock_names_are_found_through_the_index)
{
	for (size_t i = 0; i < N_MANY; i++)
		ck_assert_int_eq(lk_status_find_lock(&many, lk_lock_name(many_locks[i])), (int)i);
	ck_assert_int_eq(lk_status_find_lock(&many, "lock-000"), -1);
	ck_assert_int_eq(lk_status_find_lock(&many, "lock-999-of-the-many"), -1);
	ck_assert_int_eq(lk_status_find_lock(&many, ""), -1);
}
END_TEST

START_TEST(the_transport_hears_which_locks_a_client_wants)
{
	start_and_hello();
	/* many_locks[3] is lock-021-of-the-many, [5] lock-035-of-the-many. */
	feed("CAMPAIGN lock-021-of-the-many\nWATCH lock-021-of-the-many\n"
	     "WATCH lock-035-of-the-many\n");
	ck_assert_str_eq(wants, "+3 +5");
	ck_assert_int_eq(lk_session_kind(S), LK_SESSION_CAMPAIGN);
	ck_assert(lk_session_wants_lock(S, 3));
	ck_assert(!lk_session_wants_lock(S, 4));
	feed("RESIGN lock-021-of-the-many\n");
	/* Still watching it: no change. */
	ck_assert_str_eq(wants, "+3 +5");
	ck_assert_int_eq(lk_session_kind(S), LK_SESSION_WATCH);
	sent();
	feed("WATCH *\n");
	sent();
	feed("WATCH *\n");
	ck_assert_str_eq(wants, "+3 +5 +*");
	ck_assert(lk_session_wants_lock(S, 299));
	sent();
	S = lk_session_free(S, false);
	ck_assert_str_eq(wants, "+3 +5 +* -* -3 -5");
}
END_TEST

static Suite *session_suite(void)
{
	Suite *s = suite_create("session");
	TCase *t = tcase_create("protocol");

	tcase_add_checked_fixture(t, setup, teardown);
	tcase_add_test(t, banner_comes_first_with_a_nonce);
	tcase_add_test(t, hello_is_answered_with_version_and_identity);
	tcase_add_test(t, a_verb_before_hello_is_hello_required_and_closes);
	tcase_add_test(t, an_unsupported_version_is_said_so);
	tcase_add_test(t, a_second_hello_is_a_bad_request);
	tcase_add_test(t, an_unknown_verb_is_err_unknown_verb_and_the_session_goes_on);
	tcase_add_test(t, an_unknown_lock_is_err_unknown_lock);
	tcase_add_test(t, a_line_at_the_cap_is_read);
	tcase_add_test(t, a_line_past_the_cap_is_line_too_long_and_cuts_the_client_off);
	tcase_add_test(t, a_short_partial_line_waits_for_its_newline);
	tcase_add_test(t, auth_requires_the_mac_of_the_nonce);
	tcase_add_test(t, auth_without_or_with_a_wrong_mac_fails_and_closes);
	tcase_add_test(t, status_is_one_line_of_json);
	tcase_add_test(t, drain_asks_the_agent_and_keeps_the_slot);
	tcase_add_test(t, quit_is_answered_then_closed);
	suite_add_tcase(s, t);
	t = tcase_create("many locks");
	tcase_add_checked_fixture(t, setup_many, teardown_many);
	tcase_add_test(t, status_pages_list_every_lock_once_in_config_order);
	tcase_add_test(t, status_of_one_lock_shows_that_lock_alone);
	tcase_add_test(t, lock_names_are_found_through_the_index);
	tcase_add_test(t, the_transport_hears_which_locks_a_client_wants);
	suite_add_tcase(s, t);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(session_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
