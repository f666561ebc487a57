/* Tests for proto/codec: every verb, every event, every error path, and the boundaries. */
#include <check.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/codec.h"

/* The parser works in place and results borrow the buffer, so each parse gets its own copy
 * in a buffer that lives as long as the test. */
static char linebuf[LK_LINE_MAX * 2 + 16];

static enum lk_err preq_n(const char *s, size_t len, struct lk_request *r, const char **text)
{
	ck_assert_uint_lt(len, sizeof(linebuf));
	memcpy(linebuf, s, len);
	return lk_codec_parse_request(linebuf, len, r, text);
}

static enum lk_err preq(const char *s, struct lk_request *r, const char **text)
{
	return preq_n(s, strlen(s), r, text);
}

/* A request line that must fail with want; also checks the error text and that *ret stays
 * untouched. */
static void req_fails(const char *s, size_t len, enum lk_err want)
{
	struct lk_request r, sentinel;
	const char *text = NULL;

	memset(&r, 0xa5, sizeof(r));
	memcpy(&sentinel, &r, sizeof(r));
	ck_assert_msg(preq_n(s, len, &r, &text) == want, "line \"%.*s\": want %s",
	              (int)(len > 60 ? 60 : len), s, lk_err_name(want));
	ck_assert_ptr_nonnull(text);
	ck_assert_uint_gt(strlen(text), 0);
	ck_assert_mem_eq(&r, &sentinel, sizeof(r));
}

static void req_fails_s(const char *s, enum lk_err want)
{
	req_fails(s, strlen(s), want);
}

static int psrv(const char *s, struct lk_server_msg *m)
{
	size_t len = strlen(s);

	ck_assert_uint_lt(len, sizeof(linebuf));
	memcpy(linebuf, s, len + 1);
	return lk_codec_parse_server_msg(linebuf, len, m);
}

static void srv_fails(const char *s)
{
	struct lk_server_msg m, sentinel;

	memset(&m, 0x5a, sizeof(m));
	memcpy(&sentinel, &m, sizeof(m));
	ck_assert_msg(psrv(s, &m) == -EINVAL, "server line \"%s\" should be -EINVAL", s);
	ck_assert_mem_eq(&m, &sentinel, sizeof(m));
}

/* dst = prefix, then n copies of c, then suffix. */
static char *fill(char *dst, size_t cap, const char *prefix, char c, size_t n, const char *suffix)
{
	size_t p = strlen(prefix), q = strlen(suffix);

	ck_assert_uint_lt(p + n + q, cap);
	memcpy(dst, prefix, p);
	memset(dst + p, c, n);
	memcpy(dst + p + n, suffix, q + 1);
	return dst;
}

/* ---- names and helpers -------------------------------------------------------------------- */

START_TEST(names_cover_every_value_and_refuse_out_of_range)
{
	for (int i = 0; i < LK_VERB__COUNT; i++)
		ck_assert_ptr_nonnull(lk_verb_name((enum lk_verb)i));
	for (int i = 1; i < LK_ERR__COUNT; i++)
		ck_assert_ptr_nonnull(lk_err_name((enum lk_err)i));
	for (int i = 0; i < LK_EV__COUNT; i++)
		ck_assert_ptr_nonnull(lk_event_name((enum lk_event_kind)i));
	for (int i = 0; i < LK_LOST__COUNT; i++)
		ck_assert_ptr_nonnull(lk_lost_reason_name((enum lk_lost_reason)i));
	for (int i = 0; i < LK_OUTCOME__COUNT; i++)
		ck_assert_ptr_nonnull(lk_outcome_name((enum lk_outcome)i));
	ck_assert_ptr_null(lk_err_name(LK_ERR_NONE));
	ck_assert_ptr_null(lk_verb_name(LK_VERB__COUNT));
	ck_assert_ptr_null(lk_verb_name((enum lk_verb)-1));
	ck_assert_ptr_null(lk_err_name(LK_ERR__COUNT));
	ck_assert_ptr_null(lk_event_name(LK_EV__COUNT));
	ck_assert_ptr_null(lk_lost_reason_name(LK_LOST__COUNT));
	ck_assert_ptr_null(lk_outcome_name(LK_OUTCOME__COUNT));
	ck_assert_str_eq(lk_verb_name(LK_VERB_CAMPAIGN), "CAMPAIGN");
	ck_assert_str_eq(lk_err_name(LK_ERR_TOO_MANY_CLIENTS), "too_many_clients");
	ck_assert_str_eq(lk_event_name(LK_EV_STEPDOWN), "STEPDOWN");
	ck_assert_str_eq(lk_lost_reason_name(LK_LOST_RENEW_DEADLINE), "renew_deadline");
	ck_assert_str_eq(lk_outcome_name(LK_OUTCOME_ALREADY_GONE), "already_gone");
}
END_TEST

START_TEST(lock_names_are_1_to_128_of_the_allowed_characters)
{
	char name[LK_LOCK_NAME_MAX + 2];

	ck_assert(lk_codec_lock_name_valid("a"));
	ck_assert(lk_codec_lock_name_valid("Az09._-"));
	ck_assert(lk_codec_lock_name_valid("-"));
	ck_assert(!lk_codec_lock_name_valid(NULL));
	ck_assert(!lk_codec_lock_name_valid(""));
	ck_assert(!lk_codec_lock_name_valid("*"));
	ck_assert(!lk_codec_lock_name_valid("a b"));
	ck_assert(!lk_codec_lock_name_valid("a/b"));
	ck_assert(!lk_codec_lock_name_valid("a=b"));
	ck_assert(!lk_codec_lock_name_valid("caf\xc3\xa9"));
	memset(name, 'x', LK_LOCK_NAME_MAX);
	name[LK_LOCK_NAME_MAX] = '\0';
	ck_assert(lk_codec_lock_name_valid(name));
	name[LK_LOCK_NAME_MAX] = 'x';
	name[LK_LOCK_NAME_MAX + 1] = '\0';
	ck_assert(!lk_codec_lock_name_valid(name));
}
END_TEST

START_TEST(chomp_strips_one_newline_and_a_cr_before_it)
{
	size_t n;

	n = 4; lk_codec_chomp("abc\n", &n); ck_assert_uint_eq(n, 3);
	n = 5; lk_codec_chomp("abc\r\n", &n); ck_assert_uint_eq(n, 3);
	n = 3; lk_codec_chomp("abc", &n); ck_assert_uint_eq(n, 3);
	n = 4; lk_codec_chomp("abc\r", &n); ck_assert_uint_eq(n, 4);
	n = 1; lk_codec_chomp("\n", &n); ck_assert_uint_eq(n, 0);
	n = 2; lk_codec_chomp("\r\n", &n); ck_assert_uint_eq(n, 0);
	n = 0; lk_codec_chomp("", &n); ck_assert_uint_eq(n, 0);
	n = 3; lk_codec_chomp("a\n\n", &n); ck_assert_uint_eq(n, 2);
}
END_TEST

/* ---- requests ----------------------------------------------------------------------------- */

START_TEST(hello_with_version_only)
{
	struct lk_request r;

	ck_assert_int_eq(preq("HELLO 1", &r, NULL), LK_ERR_NONE);
	ck_assert_int_eq(r.verb, LK_VERB_HELLO);
	ck_assert_uint_eq(r.version, 1);
	ck_assert_ptr_null(r.client);
	ck_assert_ptr_null(r.mac);
}
END_TEST

START_TEST(hello_with_client_and_mac_passes_mac_through_raw)
{
	struct lk_request r;

	ck_assert_int_eq(preq("HELLO 1 client=my-app mac=not-even-hex", &r, NULL), LK_ERR_NONE);
	ck_assert_str_eq(r.client, "my-app");
	ck_assert_str_eq(r.mac, "not-even-hex");
	ck_assert_int_eq(preq("HELLO 1 mac= client=a=b", &r, NULL), LK_ERR_NONE);
	ck_assert_str_eq(r.mac, "");
	ck_assert_str_eq(r.client, "a=b");
}
END_TEST

START_TEST(hello_ignores_unknown_attributes)
{
	struct lk_request r;

	ck_assert_int_eq(preq("HELLO 1 color=blue client=x =odd", &r, NULL), LK_ERR_NONE);
	ck_assert_str_eq(r.client, "x");
	ck_assert_ptr_null(r.mac);
}
END_TEST

START_TEST(hello_errors)
{
	req_fails_s("HELLO", LK_ERR_BAD_REQUEST);
	req_fails_s("HELLO client=x", LK_ERR_BAD_REQUEST);
	req_fails_s("HELLO one", LK_ERR_BAD_REQUEST);
	req_fails_s("HELLO -1", LK_ERR_BAD_REQUEST);
	req_fails_s("HELLO +1", LK_ERR_BAD_REQUEST);
	req_fails_s("HELLO 1x", LK_ERR_BAD_REQUEST);
	req_fails_s("HELLO 0x1", LK_ERR_BAD_REQUEST);
	req_fails_s("HELLO 1 extra", LK_ERR_BAD_REQUEST);
	req_fails_s("HELLO 1 2", LK_ERR_BAD_REQUEST);
	req_fails_s("HELLO 1 mac=aa mac=bb", LK_ERR_BAD_REQUEST);
	req_fails_s("HELLO 1 client=a client=b", LK_ERR_BAD_REQUEST);
	req_fails_s("HELLO 2", LK_ERR_UNSUPPORTED_VERSION);
	req_fails_s("HELLO 0", LK_ERR_UNSUPPORTED_VERSION);
	req_fails_s("HELLO 4294967297", LK_ERR_UNSUPPORTED_VERSION);
	req_fails_s("HELLO 99999999999999999999999999", LK_ERR_UNSUPPORTED_VERSION);
}
END_TEST

START_TEST(campaign_and_resign_take_one_lock_name)
{
	struct lk_request r;

	ck_assert_int_eq(preq("CAMPAIGN scheduler", &r, NULL), LK_ERR_NONE);
	ck_assert_int_eq(r.verb, LK_VERB_CAMPAIGN);
	ck_assert_str_eq(r.lock, "scheduler");
	ck_assert_int_eq(preq("RESIGN a.b_c-D9", &r, NULL), LK_ERR_NONE);
	ck_assert_int_eq(r.verb, LK_VERB_RESIGN);
	ck_assert_str_eq(r.lock, "a.b_c-D9");
	ck_assert_int_eq(preq("CAMPAIGN x future=1", &r, NULL), LK_ERR_NONE);
	ck_assert_str_eq(r.lock, "x");

	req_fails_s("CAMPAIGN", LK_ERR_BAD_REQUEST);
	req_fails_s("CAMPAIGN a b", LK_ERR_BAD_REQUEST);
	req_fails_s("CAMPAIGN a/b", LK_ERR_BAD_REQUEST);
	req_fails_s("CAMPAIGN *", LK_ERR_BAD_REQUEST);
	req_fails_s("CAMPAIGN lock=a", LK_ERR_BAD_REQUEST);
	req_fails_s("RESIGN", LK_ERR_BAD_REQUEST);
	req_fails_s("RESIGN *", LK_ERR_BAD_REQUEST);
	req_fails_s("RESIGN a b", LK_ERR_BAD_REQUEST);
}
END_TEST

START_TEST(lock_name_of_128_chars_is_accepted_and_129_refused)
{
	char line[300];
	struct lk_request r;

	fill(line, sizeof(line), "CAMPAIGN ", 'L', LK_LOCK_NAME_MAX, "");
	ck_assert_int_eq(preq(line, &r, NULL), LK_ERR_NONE);
	ck_assert_uint_eq(strlen(r.lock), LK_LOCK_NAME_MAX);
	fill(line, sizeof(line), "CAMPAIGN ", 'L', LK_LOCK_NAME_MAX + 1, "");
	req_fails_s(line, LK_ERR_BAD_REQUEST);
	fill(line, sizeof(line), "ACK ", 'L', LK_LOCK_NAME_MAX + 1, " 1");
	req_fails_s(line, LK_ERR_BAD_REQUEST);
}
END_TEST

START_TEST(watch_takes_a_lock_name_or_star)
{
	struct lk_request r;

	ck_assert_int_eq(preq("WATCH *", &r, NULL), LK_ERR_NONE);
	ck_assert_int_eq(r.verb, LK_VERB_WATCH);
	ck_assert_str_eq(r.lock, "*");
	ck_assert_int_eq(preq("WATCH jobs", &r, NULL), LK_ERR_NONE);
	ck_assert_str_eq(r.lock, "jobs");
	req_fails_s("WATCH", LK_ERR_BAD_REQUEST);
	req_fails_s("WATCH **", LK_ERR_BAD_REQUEST);
	req_fails_s("WATCH * a", LK_ERR_BAD_REQUEST);
	req_fails_s("WATCH a;b", LK_ERR_BAD_REQUEST);
}
END_TEST

START_TEST(ack_takes_lock_and_decimal_token)
{
	struct lk_request r;

	ck_assert_int_eq(preq("ACK scheduler 42", &r, NULL), LK_ERR_NONE);
	ck_assert_int_eq(r.verb, LK_VERB_ACK);
	ck_assert_str_eq(r.lock, "scheduler");
	ck_assert_uint_eq(r.token, 42);
	ck_assert_int_eq(preq("ACK a 0", &r, NULL), LK_ERR_NONE);
	ck_assert_uint_eq(r.token, 0);
	ck_assert_int_eq(preq("ACK a 18446744073709551615", &r, NULL), LK_ERR_NONE);
	ck_assert(r.token == UINT64_MAX);
}
END_TEST

START_TEST(ack_with_bad_token_is_bad_token)
{
	req_fails_s("ACK a 18446744073709551616", LK_ERR_BAD_TOKEN);
	req_fails_s("ACK a 99999999999999999999", LK_ERR_BAD_TOKEN);
	req_fails_s("ACK a -1", LK_ERR_BAD_TOKEN);
	req_fails_s("ACK a +1", LK_ERR_BAD_TOKEN);
	req_fails_s("ACK a 12x", LK_ERR_BAD_TOKEN);
	req_fails_s("ACK a 0x10", LK_ERR_BAD_TOKEN);
	req_fails_s("ACK a 1.0", LK_ERR_BAD_TOKEN);
	req_fails_s("ACK a x", LK_ERR_BAD_TOKEN);
}
END_TEST

START_TEST(ack_with_wrong_arguments_is_bad_request)
{
	req_fails_s("ACK", LK_ERR_BAD_REQUEST);
	req_fails_s("ACK a", LK_ERR_BAD_REQUEST);
	req_fails_s("ACK a token=5", LK_ERR_BAD_REQUEST);
	req_fails_s("ACK a 1 2", LK_ERR_BAD_REQUEST);
	req_fails_s("ACK a/b 1", LK_ERR_BAD_REQUEST);
	req_fails_s("ACK * 1", LK_ERR_BAD_REQUEST);
}
END_TEST

START_TEST(verbs_without_arguments)
{
	static const struct {
		const char *line;
		enum lk_verb verb;
	} ok[] = {
		{"STATUS", LK_VERB_STATUS}, {"DRAIN", LK_VERB_DRAIN},
		{"PING", LK_VERB_PING},     {"QUIT", LK_VERB_QUIT},
		{"PING later=1", LK_VERB_PING},
	};
	struct lk_request r;

	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		ck_assert_int_eq(preq(ok[i].line, &r, NULL), LK_ERR_NONE);
		ck_assert_int_eq(r.verb, ok[i].verb);
	}
	req_fails_s("STATUS x", LK_ERR_BAD_REQUEST);
	req_fails_s("DRAIN now", LK_ERR_BAD_REQUEST);
	req_fails_s("PING 1", LK_ERR_BAD_REQUEST);
	req_fails_s("QUIT bye", LK_ERR_BAD_REQUEST);
}
END_TEST

START_TEST(status_takes_a_lock_or_an_after_cursor)
{
	struct lk_request r;

	ck_assert_int_eq(preq("STATUS", &r, NULL), LK_ERR_NONE);
	ck_assert_ptr_null(r.status_lock);
	ck_assert_ptr_null(r.after);
	ck_assert_int_eq(preq("STATUS lock=db.main", &r, NULL), LK_ERR_NONE);
	ck_assert_str_eq(r.status_lock, "db.main");
	ck_assert_ptr_null(r.after);
	ck_assert_ptr_null(r.lock);
	ck_assert_int_eq(preq("STATUS after=lock-0041", &r, NULL), LK_ERR_NONE);
	ck_assert_ptr_null(r.status_lock);
	ck_assert_str_eq(r.after, "lock-0041");
	/* Other attributes are ignored, as on every verb. */
	ck_assert_int_eq(preq("STATUS after=a page=2", &r, NULL), LK_ERR_NONE);
	ck_assert_str_eq(r.after, "a");
	req_fails_s("STATUS a", LK_ERR_BAD_REQUEST);
	req_fails_s("STATUS lock=*", LK_ERR_BAD_REQUEST);
	req_fails_s("STATUS lock=bad/name", LK_ERR_BAD_REQUEST);
	req_fails_s("STATUS after=", LK_ERR_BAD_REQUEST);
	req_fails_s("STATUS after=a/b", LK_ERR_BAD_REQUEST);
	req_fails_s("STATUS after=a after=b", LK_ERR_BAD_REQUEST);
	req_fails_s("STATUS lock=a lock=b", LK_ERR_BAD_REQUEST);
	req_fails_s("STATUS lock=a after=b", LK_ERR_BAD_REQUEST);
	req_fails_s("STATUS a after=b", LK_ERR_BAD_REQUEST);
}
END_TEST

START_TEST(unknown_or_lower_case_verb_is_unknown_verb)
{
	req_fails_s("FOO", LK_ERR_UNKNOWN_VERB);
	req_fails_s("hello 1", LK_ERR_UNKNOWN_VERB);
	req_fails_s("Ping", LK_ERR_UNKNOWN_VERB);
	req_fails_s("PONG", LK_ERR_UNKNOWN_VERB);
	req_fails_s("OK HELLO", LK_ERR_UNKNOWN_VERB);
	req_fails_s("a=b", LK_ERR_UNKNOWN_VERB);
}
END_TEST

START_TEST(empty_or_blank_line_is_bad_request)
{
	req_fails("", 0, LK_ERR_BAD_REQUEST);
	req_fails_s("    ", LK_ERR_BAD_REQUEST);
	req_fails_s("\r", LK_ERR_BAD_REQUEST);
}
END_TEST

START_TEST(runs_of_spaces_separate_words)
{
	struct lk_request r;

	ck_assert_int_eq(preq("   ACK    a     7   ", &r, NULL), LK_ERR_NONE);
	ck_assert_str_eq(r.lock, "a");
	ck_assert_uint_eq(r.token, 7);
}
END_TEST

START_TEST(one_trailing_cr_is_stripped)
{
	struct lk_request r;

	ck_assert_int_eq(preq("PING\r", &r, NULL), LK_ERR_NONE);
	ck_assert_int_eq(r.verb, LK_VERB_PING);
	ck_assert_int_eq(preq("CAMPAIGN a\r", &r, NULL), LK_ERR_NONE);
	ck_assert_str_eq(r.lock, "a");
	ck_assert_int_eq(preq("ACK a 5\r", &r, NULL), LK_ERR_NONE);
	ck_assert_uint_eq(r.token, 5);
	req_fails_s("PING\r\r", LK_ERR_BAD_REQUEST);
	req_fails_s("PI\rNG", LK_ERR_BAD_REQUEST);
	req_fails_s("\rPING", LK_ERR_BAD_REQUEST);
}
END_TEST

START_TEST(non_printable_bytes_are_bad_request)
{
	static const char *const bad[] = {
		"PING\t", "CAMPAIGN\ta", "CAMPAIGN a\x01", "CAMPAIGN a\x7f", "CAMPAIGN a\x80",
		"CAMPAIGN caf\xc3\xa9", "CAMPAIGN a\xff", "PING\n", "PING\nPING", "\x1b[2J",
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		req_fails_s(bad[i], LK_ERR_BAD_REQUEST);
	/* A NUL inside the line must not cut it short into something valid. */
	req_fails("PING\0junk", 9, LK_ERR_BAD_REQUEST);
	req_fails("CAMPAIGN a\0", 11, LK_ERR_BAD_REQUEST);
}
END_TEST

START_TEST(at_most_max_words)
{
	char line[1024];
	size_t n = 0;
	struct lk_request r;

	/* HELLO, 1, and attributes up to exactly LK_MAX_WORDS words. */
	n += (size_t)snprintf(line + n, sizeof(line) - n, "HELLO 1");
	for (int i = 2; i < LK_MAX_WORDS; i++)
		n += (size_t)snprintf(line + n, sizeof(line) - n, " k%d=v", i);
	ck_assert_int_eq(preq(line, &r, NULL), LK_ERR_NONE);
	snprintf(line + n, sizeof(line) - n, " one=more");
	req_fails_s(line, LK_ERR_BAD_REQUEST);
	/* Counted in words, not in characters: spaces between them do not count. */
	fill(line, sizeof(line), "PING", ' ', 200, "");
	ck_assert_int_eq(preq(line, &r, NULL), LK_ERR_NONE);
}
END_TEST

START_TEST(line_of_4095_bytes_parses_and_4096_is_too_long)
{
	static char line[LK_LINE_MAX + 8];
	struct lk_request r;
	const char *prefix = "HELLO 1 client=";
	size_t plen = strlen(prefix);

	/* 4095 bytes plus the '\n' the transport stripped is exactly LK_LINE_MAX. */
	memcpy(line, prefix, plen);
	memset(line + plen, 'c', LK_LINE_MAX - 1 - plen);
	ck_assert_int_eq(preq_n(line, LK_LINE_MAX - 1, &r, NULL), LK_ERR_NONE);
	ck_assert_uint_eq(strlen(r.client), LK_LINE_MAX - 1 - plen);

	/* The '\r' of a "\r\n" line counts. */
	memcpy(line, prefix, plen);
	memset(line + plen, 'c', LK_LINE_MAX - 2 - plen);
	line[LK_LINE_MAX - 2] = '\r';
	ck_assert_int_eq(preq_n(line, LK_LINE_MAX - 1, &r, NULL), LK_ERR_NONE);
	ck_assert_uint_eq(strlen(r.client), LK_LINE_MAX - 2 - plen);

	memcpy(line, prefix, plen);
	memset(line + plen, 'c', LK_LINE_MAX - plen);
	req_fails(line, LK_LINE_MAX, LK_ERR_LINE_TOO_LONG);
}
END_TEST

START_TEST(parse_request_accepts_null_ret_text)
{
	struct lk_request r;

	ck_assert_int_eq(preq("BOGUS", &r, NULL), LK_ERR_UNKNOWN_VERB);
}
END_TEST

/* ---- server lines ------------------------------------------------------------------------- */

#define NONCE "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF"

START_TEST(banner_parses)
{
	struct lk_server_msg m;

	ck_assert_int_eq(psrv("LEASEKEEPER 1 id=pod-7 nonce=" NONCE " auth=none", &m), 0);
	ck_assert_int_eq(m.kind, LK_MSG_BANNER);
	ck_assert_uint_eq(m.version, 1);
	ck_assert_str_eq(m.id, "pod-7");
	ck_assert_str_eq(m.nonce, NONCE);
	ck_assert(!m.auth_hmac);
	ck_assert_int_eq(psrv("LEASEKEEPER 1 auth=hmac future=x nonce=" NONCE " id=a\r", &m), 0);
	ck_assert(m.auth_hmac);
	ck_assert_str_eq(m.id, "a");
	/* The version is reported, not judged: the client decides what it can speak. */
	ck_assert_int_eq(psrv("LEASEKEEPER 2 id=a nonce=" NONCE " auth=none", &m), 0);
	ck_assert_uint_eq(m.version, 2);
}
END_TEST

START_TEST(bad_banners)
{
	srv_fails("LEASEKEEPER");
	srv_fails("LEASEKEEPER 1");
	srv_fails("LEASEKEEPER one id=a nonce=" NONCE " auth=none");
	srv_fails("LEASEKEEPER 1 2 id=a nonce=" NONCE " auth=none");
	srv_fails("LEASEKEEPER 1 nonce=" NONCE " auth=none");
	srv_fails("LEASEKEEPER 1 id= nonce=" NONCE " auth=none");
	srv_fails("LEASEKEEPER 1 id=a auth=none");
	srv_fails("LEASEKEEPER 1 id=a nonce=" NONCE "0 auth=none");
	srv_fails("LEASEKEEPER 1 id=a nonce=0011 auth=none");
	srv_fails("LEASEKEEPER 1 id=a nonce=g0112233445566778899aabbccddeeff00112233445566778899aabbccddeeff auth=none");
	srv_fails("LEASEKEEPER 1 id=a nonce=" NONCE);
	srv_fails("LEASEKEEPER 1 id=a nonce=" NONCE " auth=rsa");
	srv_fails("LEASEKEEPER 1 id=a id=b nonce=" NONCE " auth=none");
	srv_fails("leasekeeper 1 id=a nonce=" NONCE " auth=none");
}
END_TEST

START_TEST(ok_lines_carry_verb_and_raw_rest)
{
	struct lk_server_msg m;

	ck_assert_int_eq(psrv("OK HELLO 1 agent=0.1.0 id=pod-7", &m), 0);
	ck_assert_int_eq(m.kind, LK_MSG_OK);
	ck_assert_int_eq(m.ok_verb, LK_VERB_HELLO);
	ck_assert_str_eq(m.rest, "1 agent=0.1.0 id=pod-7");
	ck_assert_int_eq(psrv("OK PONG", &m), 0);
	ck_assert_int_eq(m.ok_verb, LK_VERB_PING);
	ck_assert_str_eq(m.rest, "");
	ck_assert_int_eq(psrv("OK BYE\r", &m), 0);
	ck_assert_int_eq(m.ok_verb, LK_VERB_QUIT);
	ck_assert_str_eq(m.rest, "");
	ck_assert_int_eq(psrv("OK   DRAIN   ", &m), 0);
	ck_assert_int_eq(m.ok_verb, LK_VERB_DRAIN);
	ck_assert_str_eq(m.rest, "");
	ck_assert_int_eq(psrv("OK CAMPAIGN a", &m), 0);
	ck_assert_int_eq(m.ok_verb, LK_VERB_CAMPAIGN);
	ck_assert_str_eq(m.rest, "a");
	ck_assert_int_eq(psrv("OK WATCH *", &m), 0);
	ck_assert_int_eq(m.ok_verb, LK_VERB_WATCH);
	ck_assert_int_eq(psrv("OK ACK a", &m), 0);
	ck_assert_int_eq(m.ok_verb, LK_VERB_ACK);
	ck_assert_int_eq(psrv("OK RESIGN a", &m), 0);
	ck_assert_int_eq(m.ok_verb, LK_VERB_RESIGN);
}
END_TEST

START_TEST(ok_status_rest_keeps_spaces_and_is_not_word_limited)
{
	char line[LK_LINE_MAX];
	size_t n;
	struct lk_server_msg m;

	ck_assert_int_eq(psrv("OK STATUS {\"identity\": \"a b\",  \"locks\": []}", &m), 0);
	ck_assert_int_eq(m.ok_verb, LK_VERB_STATUS);
	ck_assert_str_eq(m.rest, "{\"identity\": \"a b\",  \"locks\": []}");

	n = (size_t)snprintf(line, sizeof(line), "OK STATUS");
	for (int i = 0; i < LK_MAX_WORDS * 3; i++)
		n += (size_t)snprintf(line + n, sizeof(line) - n, " w%d", i);
	ck_assert_int_eq(psrv(line, &m), 0);
	ck_assert_str_eq(m.rest, line + strlen("OK STATUS "));
}
END_TEST

START_TEST(bad_ok_lines)
{
	srv_fails("OK");
	srv_fails("OK   ");
	srv_fails("OK PING");
	srv_fails("OK QUIT");
	srv_fails("OK hello");
	srv_fails("OK FOO bar");
	srv_fails("OK STATUS \x01");
}
END_TEST

START_TEST(err_lines_carry_code_and_text)
{
	struct lk_server_msg m;

	ck_assert_int_eq(psrv("ERR unknown_lock no lock named x", &m), 0);
	ck_assert_int_eq(m.kind, LK_MSG_ERR);
	ck_assert_int_eq(m.err, LK_ERR_UNKNOWN_LOCK);
	ck_assert_str_eq(m.err_text, "no lock named x");
	ck_assert_int_eq(psrv("ERR draining", &m), 0);
	ck_assert_int_eq(m.err, LK_ERR_DRAINING);
	ck_assert_str_eq(m.err_text, "");
	srv_fails("ERR");
	srv_fails("ERR nope");
	srv_fails("ERR BAD_REQUEST x");
	srv_fails("ERR ok");
}
END_TEST

START_TEST(every_error_code_round_trips)
{
	char buf[LK_LINE_MAX];
	struct lk_server_msg m;

	for (int e = 1; e < LK_ERR__COUNT; e++) {
		int n = lk_codec_format_err(buf, sizeof(buf), (enum lk_err)e, "why it failed");
		size_t len;

		ck_assert_int_gt(n, 0);
		len = (size_t)n;
		lk_codec_chomp(buf, &len);
		ck_assert_int_eq(lk_codec_parse_server_msg(buf, len, &m), 0);
		ck_assert_int_eq(m.kind, LK_MSG_ERR);
		ck_assert_int_eq(m.err, e);
		ck_assert_str_eq(m.err_text, "why it failed");
	}
}
END_TEST

START_TEST(events_parse)
{
	struct lk_server_msg m;

	ck_assert_int_eq(psrv("LEADER sched token=12 ttl_ms=9800 until_mono_ms=123456", &m), 0);
	ck_assert_int_eq(m.kind, LK_MSG_EVENT);
	ck_assert_int_eq(m.ev.kind, LK_EV_LEADER);
	ck_assert_str_eq(m.ev.lock, "sched");
	ck_assert_uint_eq(m.ev.token, 12);
	ck_assert_int_eq(m.ev.ttl_ms, 9800);
	ck_assert_int_eq(m.ev.until_mono_ms, 123456);
	/* An agent older than the deadline rule leaves it out: 0 tells the client to fall back. */
	ck_assert_int_eq(psrv("LEADER sched token=12 ttl_ms=9800", &m), 0);
	ck_assert_int_eq(m.ev.until_mono_ms, 0);
	ck_assert_int_eq(psrv("LEADER sched token=12 ttl_ms=9800 until_mono_ms=-5", &m), -EINVAL);
	ck_assert_int_eq(psrv("LEADER sched token=12 ttl_ms=9800 until_mono_ms=x", &m), -EINVAL);
	ck_assert_int_eq(psrv("RENEWED sched token=12 ttl_ms=9000 until_mono_ms=7000", &m), 0);
	ck_assert_int_eq(m.ev.kind, LK_EV_RENEWED);
	ck_assert_uint_eq(m.ev.token, 12);
	ck_assert_int_eq(m.ev.ttl_ms, 9000);
	ck_assert_int_eq(m.ev.until_mono_ms, 7000);
	ck_assert_int_eq(psrv("RENEWED sched token=12", &m), -EINVAL);

	ck_assert_int_eq(psrv("FOLLOWER sched holder=pod-2", &m), 0);
	ck_assert_int_eq(m.ev.kind, LK_EV_FOLLOWER);
	ck_assert_str_eq(m.ev.holder, "pod-2");
	ck_assert_int_eq(psrv("FOLLOWER sched holder=-", &m), 0);
	ck_assert_str_eq(m.ev.holder, "-");

	ck_assert_int_eq(psrv("STEPDOWN sched token=12 deadline_ms=5000", &m), 0);
	ck_assert_int_eq(m.ev.kind, LK_EV_STEPDOWN);
	ck_assert_uint_eq(m.ev.token, 12);
	ck_assert_int_eq(m.ev.deadline_ms, 5000);

	for (int r = 0; r < LK_LOST__COUNT; r++) {
		char line[128];

		snprintf(line, sizeof(line), "LOST sched token=3 reason=%s",
		         lk_lost_reason_name((enum lk_lost_reason)r));
		ck_assert_int_eq(psrv(line, &m), 0);
		ck_assert_int_eq(m.ev.kind, LK_EV_LOST);
		ck_assert_int_eq(m.ev.reason, r);
		ck_assert_uint_eq(m.ev.token, 3);
	}
	for (int o = 0; o < LK_OUTCOME__COUNT; o++) {
		char line[128];

		snprintf(line, sizeof(line), "RELEASED sched token=4 outcome=%s",
		         lk_outcome_name((enum lk_outcome)o));
		ck_assert_int_eq(psrv(line, &m), 0);
		ck_assert_int_eq(m.ev.kind, LK_EV_RELEASED);
		ck_assert_int_eq(m.ev.outcome, o);
	}

	ck_assert_int_eq(psrv("STOP deadline_ms=0", &m), 0);
	ck_assert_int_eq(m.ev.kind, LK_EV_STOP);
	ck_assert_int_eq(m.ev.deadline_ms, 0);

	ck_assert_int_eq(psrv("DRAINED released=2 expired=1 failed=0 elapsed_ms=1234", &m), 0);
	ck_assert_int_eq(m.ev.kind, LK_EV_DRAINED);
	ck_assert_uint_eq(m.ev.released, 2);
	ck_assert_uint_eq(m.ev.expired, 1);
	ck_assert_uint_eq(m.ev.failed, 0);
	ck_assert_int_eq(m.ev.elapsed_ms, 1234);
}
END_TEST

START_TEST(events_ignore_unknown_attributes_in_any_order)
{
	struct lk_server_msg m;

	ck_assert_int_eq(psrv("LEADER   a  zone=eu ttl_ms=1 token=2  x=  \r", &m), 0);
	ck_assert_uint_eq(m.ev.token, 2);
	ck_assert_int_eq(m.ev.ttl_ms, 1);
	ck_assert_int_eq(psrv("STOP why=drain deadline_ms=7", &m), 0);
	ck_assert_int_eq(m.ev.deadline_ms, 7);
}
END_TEST

START_TEST(events_missing_or_bad_attributes_are_einval)
{
	static const char *const bad[] = {
		"LEADER", "LEADER token=1 ttl_ms=1", "LEADER a b token=1 ttl_ms=1",
		"LEADER a/b token=1 ttl_ms=1", "LEADER a ttl_ms=1", "LEADER a token=1",
		"LEADER a token=-1 ttl_ms=1", "LEADER a token=x ttl_ms=1",
		"LEADER a token=18446744073709551616 ttl_ms=1", "LEADER a token=1 ttl_ms=-5",
		"LEADER a token=1 ttl_ms=9223372036854775808", "LEADER a token= ttl_ms=1",
		"LEADER a token=1 token=2 ttl_ms=1",
		"FOLLOWER a", "FOLLOWER a holder=", "FOLLOWER holder=x",
		"STEPDOWN a token=1", "STEPDOWN a deadline_ms=1", "STEPDOWN a token=1 deadline_ms=1s",
		"LOST a token=1", "LOST a reason=taken", "LOST a token=1 reason=bored",
		"LOST a token=1 reason=TAKEN",
		"RELEASED a token=1", "RELEASED a outcome=released", "RELEASED a token=1 outcome=maybe",
		"STOP", "STOP a deadline_ms=1", "STOP deadline_ms=-1",
		"DRAINED", "DRAINED released=1 expired=0 failed=0",
		"DRAINED released=1 expired=0 elapsed_ms=1",
		"DRAINED released=4294967296 expired=0 failed=0 elapsed_ms=1",
		"DRAINED x released=1 expired=0 failed=0 elapsed_ms=1",
		"", "   ", "HELLO 1", "PING", "leader a token=1 ttl_ms=1", "LEADER a token=1 ttl_ms=1\t",
		"LEADER a token=1 ttl_ms=1 until_mono_ms=1x", "RENEWED a ttl_ms=1 until_mono_ms=1",
	};
	struct lk_server_msg m;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		srv_fails(bad[i]);
	/* An event verb from a newer agent is not an error: clients skip it. */
	ck_assert_int_eq(psrv("PONG", &m), -ENOMSG);
	ck_assert_int_eq(psrv("SOMEDAY a token=1 x=y", &m), -ENOMSG);
}
END_TEST

START_TEST(server_lines_have_the_same_limits)
{
	char line[LK_LINE_MAX * 2];
	size_t n;
	struct lk_server_msg m;

	n = (size_t)snprintf(line, sizeof(line), "STOP deadline_ms=1");
	for (int i = 2; i < LK_MAX_WORDS; i++)
		n += (size_t)snprintf(line + n, sizeof(line) - n, " k%d=v", i);
	ck_assert_int_eq(psrv(line, &m), 0);
	snprintf(line + n, sizeof(line) - n, " one=more");
	srv_fails(line);

	fill(line, sizeof(line), "OK STATUS ", 'x', LK_LINE_MAX - 1 - 10, "");
	ck_assert_uint_eq(strlen(line), LK_LINE_MAX - 1);
	ck_assert_int_eq(psrv(line, &m), 0);
	fill(line, sizeof(line), "OK STATUS ", 'x', LK_LINE_MAX - 10, "");
	srv_fails(line);
}
END_TEST

/* ---- formatting --------------------------------------------------------------------------- */

static void fmt_req_is(const struct lk_request *req, const char *want)
{
	char buf[LK_LINE_MAX];

	ck_assert_int_eq(lk_codec_format_request(buf, sizeof(buf), req), (int)strlen(want));
	ck_assert_str_eq(buf, want);
}

static void fmt_ev_is(const struct lk_event *ev, const char *want)
{
	char buf[LK_LINE_MAX];

	ck_assert_int_eq(lk_codec_format_event(buf, sizeof(buf), ev), (int)strlen(want));
	ck_assert_str_eq(buf, want);
}

START_TEST(format_requests_exactly)
{
	fmt_req_is(&(struct lk_request){.verb = LK_VERB_HELLO, .version = 1}, "HELLO 1\n");
	fmt_req_is(&(struct lk_request){.verb = LK_VERB_HELLO, .version = 1, .client = "app",
	                                .mac = "ab01"},
	           "HELLO 1 client=app mac=ab01\n");
	fmt_req_is(&(struct lk_request){.verb = LK_VERB_CAMPAIGN, .lock = "a"}, "CAMPAIGN a\n");
	fmt_req_is(&(struct lk_request){.verb = LK_VERB_WATCH, .lock = "*"}, "WATCH *\n");
	fmt_req_is(&(struct lk_request){.verb = LK_VERB_WATCH, .lock = "b"}, "WATCH b\n");
	fmt_req_is(&(struct lk_request){.verb = LK_VERB_ACK, .lock = "a", .token = UINT64_MAX},
	           "ACK a 18446744073709551615\n");
	fmt_req_is(&(struct lk_request){.verb = LK_VERB_RESIGN, .lock = "a"}, "RESIGN a\n");
	fmt_req_is(&(struct lk_request){.verb = LK_VERB_STATUS, .lock = "ignored"}, "STATUS\n");
	fmt_req_is(&(struct lk_request){.verb = LK_VERB_STATUS, .status_lock = "a"},
	           "STATUS lock=a\n");
	fmt_req_is(&(struct lk_request){.verb = LK_VERB_STATUS, .after = "a"},
	           "STATUS after=a\n");
	fmt_req_is(&(struct lk_request){.verb = LK_VERB_DRAIN, .lock = "ignored"}, "DRAIN\n");
	fmt_req_is(&(struct lk_request){.verb = LK_VERB_DRAIN}, "DRAIN\n");
	fmt_req_is(&(struct lk_request){.verb = LK_VERB_PING}, "PING\n");
	fmt_req_is(&(struct lk_request){.verb = LK_VERB_QUIT}, "QUIT\n");
}
END_TEST

START_TEST(format_request_refuses_unsendable_fields)
{
	char buf[LK_LINE_MAX];
	static const struct lk_request bad[] = {
		{.verb = LK_VERB__COUNT},
		{.verb = LK_VERB_CAMPAIGN},
		{.verb = LK_VERB_CAMPAIGN, .lock = "*"},
		{.verb = LK_VERB_CAMPAIGN, .lock = "a b"},
		{.verb = LK_VERB_WATCH},
		{.verb = LK_VERB_WATCH, .lock = "a\n"},
		{.verb = LK_VERB_ACK, .lock = ""},
		{.verb = LK_VERB_RESIGN, .lock = "x/y"},
		{.verb = LK_VERB_HELLO, .version = 1, .client = "my app"},
		{.verb = LK_VERB_HELLO, .version = 1, .client = "a\tb"},
		{.verb = LK_VERB_HELLO, .version = 1, .mac = "ab\n"},
		{.verb = LK_VERB_STATUS, .status_lock = "*"},
		{.verb = LK_VERB_STATUS, .after = "a b"},
		{.verb = LK_VERB_STATUS, .status_lock = "a", .after = "b"},
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		ck_assert_msg(lk_codec_format_request(buf, sizeof(buf), &bad[i]) == -EINVAL,
		              "bad request %zu formatted", i);
}
END_TEST

START_TEST(format_events_exactly)
{
	fmt_ev_is(&(struct lk_event){.kind = LK_EV_LEADER, .lock = "s", .token = 9, .ttl_ms = 9800,
	                             .until_mono_ms = 5000},
	          "LEADER s token=9 ttl_ms=9800 until_mono_ms=5000\n");
	fmt_ev_is(&(struct lk_event){.kind = LK_EV_RENEWED, .lock = "s", .token = 9, .ttl_ms = 9700,
	                             .until_mono_ms = 8000},
	          "RENEWED s token=9 ttl_ms=9700 until_mono_ms=8000\n");
	fmt_ev_is(&(struct lk_event){.kind = LK_EV_FOLLOWER, .lock = "s", .holder = "pod-2"},
	          "FOLLOWER s holder=pod-2\n");
	fmt_ev_is(&(struct lk_event){.kind = LK_EV_FOLLOWER, .lock = "s", .holder = NULL},
	          "FOLLOWER s holder=-\n");
	fmt_ev_is(&(struct lk_event){.kind = LK_EV_FOLLOWER, .lock = "s", .holder = ""},
	          "FOLLOWER s holder=-\n");
	fmt_ev_is(&(struct lk_event){.kind = LK_EV_STEPDOWN, .lock = "s", .token = 9,
	                             .deadline_ms = 5000},
	          "STEPDOWN s token=9 deadline_ms=5000\n");
	fmt_ev_is(&(struct lk_event){.kind = LK_EV_LOST, .lock = "s", .token = 9,
	                             .reason = LK_LOST_RENEW_DEADLINE},
	          "LOST s token=9 reason=renew_deadline\n");
	fmt_ev_is(&(struct lk_event){.kind = LK_EV_RELEASED, .lock = "s", .token = 9,
	                             .outcome = LK_OUTCOME_ALREADY_GONE},
	          "RELEASED s token=9 outcome=already_gone\n");
	fmt_ev_is(&(struct lk_event){.kind = LK_EV_STOP, .lock = "ignored", .deadline_ms = 100},
	          "STOP deadline_ms=100\n");
	fmt_ev_is(&(struct lk_event){.kind = LK_EV_DRAINED, .released = 3, .expired = 1,
	                             .failed = 2, .elapsed_ms = 42},
	          "DRAINED released=3 expired=1 failed=2 elapsed_ms=42\n");
}
END_TEST

START_TEST(format_event_refuses_unsendable_fields)
{
	char buf[LK_LINE_MAX];
	static const struct lk_event bad[] = {
		{.kind = LK_EV__COUNT, .lock = "a"},
		{.kind = LK_EV_LEADER},
		{.kind = LK_EV_LEADER, .lock = "*"},
		{.kind = LK_EV_LEADER, .lock = "a", .ttl_ms = -1},
		{.kind = LK_EV_RENEWED, .lock = "a", .until_mono_ms = -1},
		{.kind = LK_EV_FOLLOWER, .lock = "a", .holder = "two words"},
		{.kind = LK_EV_STEPDOWN, .lock = "a", .deadline_ms = -1},
		{.kind = LK_EV_LOST, .lock = "a", .reason = LK_LOST__COUNT},
		{.kind = LK_EV_RELEASED, .lock = "a", .outcome = LK_OUTCOME__COUNT},
		{.kind = LK_EV_STOP, .deadline_ms = -1},
		{.kind = LK_EV_DRAINED, .elapsed_ms = -1},
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		ck_assert_msg(lk_codec_format_event(buf, sizeof(buf), &bad[i]) == -EINVAL,
		              "bad event %zu formatted", i);
}
END_TEST

START_TEST(format_ok_names_pong_and_bye)
{
	char buf[LK_LINE_MAX];

	ck_assert_int_eq(lk_codec_format_ok(buf, sizeof(buf), LK_VERB_PING, NULL), 8);
	ck_assert_str_eq(buf, "OK PONG\n");
	ck_assert_int_eq(lk_codec_format_ok(buf, sizeof(buf), LK_VERB_QUIT, ""), 7);
	ck_assert_str_eq(buf, "OK BYE\n");
	lk_codec_format_ok(buf, sizeof(buf), LK_VERB_HELLO, "1 agent=0.1.0 id=pod-7");
	ck_assert_str_eq(buf, "OK HELLO 1 agent=0.1.0 id=pod-7\n");
	lk_codec_format_ok(buf, sizeof(buf), LK_VERB_DRAIN, NULL);
	ck_assert_str_eq(buf, "OK DRAIN\n");
	lk_codec_format_ok(buf, sizeof(buf), LK_VERB_STATUS, "{\"a\": 1}");
	ck_assert_str_eq(buf, "OK STATUS {\"a\": 1}\n");
	ck_assert_int_eq(lk_codec_format_ok(buf, sizeof(buf), LK_VERB__COUNT, NULL), -EINVAL);
	ck_assert_int_eq(lk_codec_format_ok(buf, sizeof(buf), LK_VERB_STATUS, "a\nb"), -EINVAL);
	ck_assert_int_eq(lk_codec_format_ok(buf, sizeof(buf), LK_VERB_STATUS, "\xc3\xa9"), -EINVAL);
	ck_assert_int_eq(lk_codec_format_ok(buf, sizeof(buf), LK_VERB_STATUS, "a\x7f"), -EINVAL);
}
END_TEST

START_TEST(format_err_and_banner_exactly)
{
	char buf[LK_LINE_MAX];

	lk_codec_format_err(buf, sizeof(buf), LK_ERR_UNKNOWN_VERB, "no such verb");
	ck_assert_str_eq(buf, "ERR unknown_verb no such verb\n");
	lk_codec_format_err(buf, sizeof(buf), LK_ERR_DRAINING, NULL);
	ck_assert_str_eq(buf, "ERR draining\n");
	lk_codec_format_err(buf, sizeof(buf), LK_ERR_DRAINING, "");
	ck_assert_str_eq(buf, "ERR draining\n");
	ck_assert_int_eq(lk_codec_format_err(buf, sizeof(buf), LK_ERR_NONE, "x"), -EINVAL);
	ck_assert_int_eq(lk_codec_format_err(buf, sizeof(buf), LK_ERR__COUNT, "x"), -EINVAL);
	ck_assert_int_eq(lk_codec_format_err(buf, sizeof(buf), LK_ERR_DRAINING, "a\rb"), -EINVAL);
	ck_assert_int_eq(lk_codec_format_err(buf, sizeof(buf), LK_ERR_DRAINING, "del\x7f"), -EINVAL);

	lk_codec_format_banner(buf, sizeof(buf), "pod-7", NONCE, true, 42);
	ck_assert_str_eq(buf, "LEASEKEEPER 1 id=pod-7 nonce=" NONCE " auth=hmac mono_ms=42\n");
	lk_codec_format_banner(buf, sizeof(buf), "pod-7", NONCE, false, 0);
	ck_assert_str_eq(buf, "LEASEKEEPER 1 id=pod-7 nonce=" NONCE " auth=none mono_ms=0\n");
	ck_assert_int_eq(lk_codec_format_banner(buf, sizeof(buf), "a", NONCE, false, -1), -EINVAL);
	ck_assert_int_eq(lk_codec_format_banner(buf, sizeof(buf), "pod 7", NONCE, false, 0), -EINVAL);
	ck_assert_int_eq(lk_codec_format_banner(buf, sizeof(buf), "", NONCE, false, 0), -EINVAL);
	ck_assert_int_eq(lk_codec_format_banner(buf, sizeof(buf), NULL, NONCE, false, 0), -EINVAL);
	ck_assert_int_eq(lk_codec_format_banner(buf, sizeof(buf), "a", "abc", false, 0), -EINVAL);
	ck_assert_int_eq(lk_codec_format_banner(buf, sizeof(buf), "a", NULL, false, 0), -EINVAL);
	ck_assert_int_eq(lk_codec_format_banner(buf, sizeof(buf), "a",
	                                        "zz112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
	                                        false, 0),
	                 -EINVAL);
}
END_TEST

START_TEST(small_buffers_get_enospc_and_stay_untouched)
{
	char buf[64];
	const char *want = "LEADER s token=9 ttl_ms=9800 until_mono_ms=1\n";
	size_t len = strlen(want);
	struct lk_event ev = {.kind = LK_EV_LEADER, .lock = "s", .token = 9, .ttl_ms = 9800,
	                      .until_mono_ms = 1};

	/* Exactly enough: the line plus its NUL. */
	ck_assert_int_eq(lk_codec_format_event(buf, len + 1, &ev), (int)len);
	ck_assert_str_eq(buf, want);
	memset(buf, '#', sizeof(buf));
	ck_assert_int_eq(lk_codec_format_event(buf, len, &ev), -ENOSPC);
	ck_assert_int_eq(lk_codec_format_event(buf, 0, &ev), -ENOSPC);
	for (size_t i = 0; i < sizeof(buf); i++)
		ck_assert_int_eq(buf[i], '#');
	ck_assert_int_eq(lk_codec_format_ok(buf, 8, LK_VERB_PING, NULL), -ENOSPC);
	ck_assert_int_eq(lk_codec_format_ok(buf, 9, LK_VERB_PING, NULL), 8);
	ck_assert_int_eq(lk_codec_format_err(buf, 5, LK_ERR_DRAINING, NULL), -ENOSPC);
	ck_assert_int_eq(lk_codec_format_banner(buf, sizeof(buf), "a", NONCE, true, 0), -ENOSPC);
	ck_assert_int_eq(lk_codec_format_request(buf, 5, &(struct lk_request){
		.verb = LK_VERB_PING}), -ENOSPC);
}
END_TEST

START_TEST(lines_longer_than_line_max_are_enospc_even_in_big_buffers)
{
	static char buf[LK_LINE_MAX * 2];
	static char rest[LK_LINE_MAX * 2];
	/* "OK STATUS " + rest + "\n" */
	size_t fits = LK_LINE_MAX - strlen("OK STATUS ") - 1;

	memset(rest, 'j', fits);
	rest[fits] = '\0';
	ck_assert_int_eq(lk_codec_format_ok(buf, sizeof(buf), LK_VERB_STATUS, rest), LK_LINE_MAX);
	ck_assert_uint_eq(strlen(buf), LK_LINE_MAX);
	rest[fits] = 'j';
	rest[fits + 1] = '\0';
	ck_assert_int_eq(lk_codec_format_ok(buf, sizeof(buf), LK_VERB_STATUS, rest), -ENOSPC);
}
END_TEST

/* format -> chomp -> parse must give back what went in, for every event and request. */
START_TEST(events_round_trip)
{
	const struct lk_event evs[] = {
		{.kind = LK_EV_LEADER, .lock = "a", .token = UINT64_MAX, .ttl_ms = INT64_MAX,
		 .until_mono_ms = INT64_MAX},
		{.kind = LK_EV_RENEWED, .lock = "a", .token = 3, .ttl_ms = 0, .until_mono_ms = 1},
		{.kind = LK_EV_FOLLOWER, .lock = "a", .holder = "node-1.example"},
		{.kind = LK_EV_FOLLOWER, .lock = "a", .holder = "-"},
		{.kind = LK_EV_STEPDOWN, .lock = "a", .token = 1, .deadline_ms = 0},
		{.kind = LK_EV_LOST, .lock = "a", .token = 7, .reason = LK_LOST_BACKEND_ERROR},
		{.kind = LK_EV_LOST, .lock = "a", .token = 7, .reason = LK_LOST_TAKEN},
		{.kind = LK_EV_RELEASED, .lock = "a", .token = 8, .outcome = LK_OUTCOME_FAILED},
		{.kind = LK_EV_RELEASED, .lock = "a", .token = 8, .outcome = LK_OUTCOME_EXPIRED},
		{.kind = LK_EV_STOP, .deadline_ms = INT64_MAX},
		{.kind = LK_EV_DRAINED, .released = UINT32_MAX, .expired = 0, .failed = 5,
		 .elapsed_ms = 25000},
	};
	char buf[LK_LINE_MAX];
	bool seen[LK_EV__COUNT] = {false};

	for (size_t i = 0; i < sizeof(evs) / sizeof(evs[0]); i++) {
		const struct lk_event *in = &evs[i];
		struct lk_server_msg m;
		int n = lk_codec_format_event(buf, sizeof(buf), in);
		size_t len;

		ck_assert_int_gt(n, 0);
		ck_assert_int_eq(buf[n - 1], '\n');
		len = (size_t)n;
		lk_codec_chomp(buf, &len);
		ck_assert_int_eq(lk_codec_parse_server_msg(buf, len, &m), 0);
		ck_assert_int_eq(m.kind, LK_MSG_EVENT);
		ck_assert_int_eq(m.ev.kind, in->kind);
		seen[in->kind] = true;
		switch (in->kind) {
		case LK_EV_LEADER:
		case LK_EV_RENEWED:
			ck_assert(m.ev.token == in->token);
			ck_assert(m.ev.ttl_ms == in->ttl_ms);
			ck_assert(m.ev.until_mono_ms == in->until_mono_ms);
			break;
		case LK_EV_FOLLOWER:
			ck_assert_str_eq(m.ev.holder, in->holder);
			break;
		case LK_EV_STEPDOWN:
			ck_assert(m.ev.token == in->token);
			ck_assert(m.ev.deadline_ms == in->deadline_ms);
			break;
		case LK_EV_LOST:
			ck_assert(m.ev.token == in->token);
			ck_assert_int_eq(m.ev.reason, in->reason);
			break;
		case LK_EV_RELEASED:
			ck_assert(m.ev.token == in->token);
			ck_assert_int_eq(m.ev.outcome, in->outcome);
			break;
		case LK_EV_STOP:
			ck_assert(m.ev.deadline_ms == in->deadline_ms);
			break;
		case LK_EV_DRAINED:
			ck_assert_uint_eq(m.ev.released, in->released);
			ck_assert_uint_eq(m.ev.expired, in->expired);
			ck_assert_uint_eq(m.ev.failed, in->failed);
			ck_assert(m.ev.elapsed_ms == in->elapsed_ms);
			break;
		default:
			ck_abort();
		}
		if (in->kind != LK_EV_STOP && in->kind != LK_EV_DRAINED)
			ck_assert_str_eq(m.ev.lock, in->lock);
	}
	for (int k = 0; k < LK_EV__COUNT; k++)
		ck_assert_msg(seen[k], "event %s not covered", lk_event_name((enum lk_event_kind)k));
}
END_TEST

START_TEST(requests_round_trip)
{
	const struct lk_request reqs[] = {
		{.verb = LK_VERB_HELLO, .version = 1, .client = "cli", .mac = NONCE},
		{.verb = LK_VERB_HELLO, .version = 1},
		{.verb = LK_VERB_CAMPAIGN, .lock = "x"},
		{.verb = LK_VERB_WATCH, .lock = "*"},
		{.verb = LK_VERB_ACK, .lock = "x", .token = 123456789012345ULL},
		{.verb = LK_VERB_RESIGN, .lock = "x"},
		{.verb = LK_VERB_STATUS},
		{.verb = LK_VERB_DRAIN},
		{.verb = LK_VERB_PING},
		{.verb = LK_VERB_QUIT},
	};
	char buf[LK_LINE_MAX];

	for (size_t i = 0; i < sizeof(reqs) / sizeof(reqs[0]); i++) {
		struct lk_request out;
		int n = lk_codec_format_request(buf, sizeof(buf), &reqs[i]);
		size_t len;

		ck_assert_int_gt(n, 0);
		len = (size_t)n;
		lk_codec_chomp(buf, &len);
		ck_assert_int_eq(lk_codec_parse_request(buf, len, &out, NULL), LK_ERR_NONE);
		ck_assert_int_eq(out.verb, reqs[i].verb);
		ck_assert_uint_eq(out.version, reqs[i].version);
		ck_assert_pstr_eq(out.client, reqs[i].client);
		ck_assert_pstr_eq(out.mac, reqs[i].mac);
		ck_assert_pstr_eq(out.lock, reqs[i].lock);
		ck_assert(out.token == reqs[i].token);
	}
}
END_TEST

START_TEST(ok_and_banner_round_trip)
{
	char buf[LK_LINE_MAX];
	struct lk_server_msg m;
	size_t len;

	for (int v = 0; v < LK_VERB__COUNT; v++) {
		int n = lk_codec_format_ok(buf, sizeof(buf), (enum lk_verb)v, "some rest");

		ck_assert_int_gt(n, 0);
		len = (size_t)n;
		lk_codec_chomp(buf, &len);
		ck_assert_int_eq(lk_codec_parse_server_msg(buf, len, &m), 0);
		ck_assert_int_eq(m.kind, LK_MSG_OK);
		ck_assert_int_eq(m.ok_verb, v);
		ck_assert_str_eq(m.rest, "some rest");
	}
	len = (size_t)lk_codec_format_banner(buf, sizeof(buf), "me", NONCE, true, 77);
	lk_codec_chomp(buf, &len);
	ck_assert_int_eq(lk_codec_parse_server_msg(buf, len, &m), 0);
	ck_assert_int_eq(m.kind, LK_MSG_BANNER);
	ck_assert_uint_eq(m.version, LK_PROTO_VERSION);
	ck_assert_str_eq(m.id, "me");
	ck_assert_str_eq(m.nonce, NONCE);
	ck_assert_int_eq(m.mono_ms, 77);
	ck_assert(m.auth_hmac);
}
END_TEST

static Suite *codec_suite(void)
{
	Suite *s = suite_create("codec");
	TCase *t;

	t = tcase_create("names");
	tcase_add_test(t, names_cover_every_value_and_refuse_out_of_range);
	tcase_add_test(t, lock_names_are_1_to_128_of_the_allowed_characters);
	tcase_add_test(t, chomp_strips_one_newline_and_a_cr_before_it);
	suite_add_tcase(s, t);

	t = tcase_create("requests");
	tcase_add_test(t, hello_with_version_only);
	tcase_add_test(t, hello_with_client_and_mac_passes_mac_through_raw);
	tcase_add_test(t, hello_ignores_unknown_attributes);
	tcase_add_test(t, hello_errors);
	tcase_add_test(t, campaign_and_resign_take_one_lock_name);
	tcase_add_test(t, lock_name_of_128_chars_is_accepted_and_129_refused);
	tcase_add_test(t, watch_takes_a_lock_name_or_star);
	tcase_add_test(t, ack_takes_lock_and_decimal_token);
	tcase_add_test(t, ack_with_bad_token_is_bad_token);
	tcase_add_test(t, ack_with_wrong_arguments_is_bad_request);
	tcase_add_test(t, verbs_without_arguments);
	tcase_add_test(t, status_takes_a_lock_or_an_after_cursor);
	tcase_add_test(t, unknown_or_lower_case_verb_is_unknown_verb);
	tcase_add_test(t, empty_or_blank_line_is_bad_request);
	tcase_add_test(t, runs_of_spaces_separate_words);
	tcase_add_test(t, one_trailing_cr_is_stripped);
	tcase_add_test(t, non_printable_bytes_are_bad_request);
	tcase_add_test(t, at_most_max_words);
	tcase_add_test(t, line_of_4095_bytes_parses_and_4096_is_too_long);
	tcase_add_test(t, parse_request_accepts_null_ret_text);
	suite_add_tcase(s, t);

	t = tcase_create("server_lines");
	tcase_add_test(t, banner_parses);
	tcase_add_test(t, bad_banners);
	tcase_add_test(t, ok_lines_carry_verb_and_raw_rest);
	tcase_add_test(t, ok_status_rest_keeps_spaces_and_is_not_word_limited);
	tcase_add_test(t, bad_ok_lines);
	tcase_add_test(t, err_lines_carry_code_and_text);
	tcase_add_test(t, every_error_code_round_trips);
	tcase_add_test(t, events_parse);
	tcase_add_test(t, events_ignore_unknown_attributes_in_any_order);
	tcase_add_test(t, events_missing_or_bad_attributes_are_einval);
	tcase_add_test(t, server_lines_have_the_same_limits);
	suite_add_tcase(s, t);

	t = tcase_create("format");
	tcase_add_test(t, format_requests_exactly);
	tcase_add_test(t, format_request_refuses_unsendable_fields);
	tcase_add_test(t, format_events_exactly);
	tcase_add_test(t, format_event_refuses_unsendable_fields);
	tcase_add_test(t, format_ok_names_pong_and_bye);
	tcase_add_test(t, format_err_and_banner_exactly);
	tcase_add_test(t, small_buffers_get_enospc_and_stay_untouched);
	tcase_add_test(t, lines_longer_than_line_max_are_enospc_even_in_big_buffers);
	tcase_add_test(t, events_round_trip);
	tcase_add_test(t, requests_round_trip);
	tcase_add_test(t, ok_and_banner_round_trip);
	suite_add_tcase(s, t);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(codec_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
