/* The per-client protocol (agent/session.c) without a socket: lines go in through an evbuffer,
 * and a fake transport records what the session sends and asks for. */
#include <check.h>
#include <event2/buffer.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/log.h"
#include "agent/session.h"
#include "agent/status.h"
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

static const struct lk_session_io io = {
	.send = io_send, .close = io_close, .hello = io_hello, .active = io_active,
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
	ck_assert_str_eq(sent(), "OK STATUS {\"identity\":\"pod-a\",\"draining\":false,\"locks\":[]}\n");
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
