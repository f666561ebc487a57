/* libFuzzer target: the wire codec (proto/codec.c).
 *
 * Every input is used three ways:
 * 1. as a request line (lk_codec_parse_request), raw and after lk_codec_chomp;
 * 2. as a line from the agent (lk_codec_parse_server_msg), raw and chomped;
 * 3. as a source of field values for a request, an event and a banner built by hand.
 *
 * Properties, each checked with abort() so that libFuzzer keeps the reproducer:
 * - parse -> format -> parse: whatever parses formats back (the one exception is a banner
 *   whose line would outgrow LK_LINE_MAX once the omitted mono_ms=0 is spelt out, and a
 *   banner of a version other than 1, which the formatter cannot speak), and the second
 *   parse gives a struct equal to the first;
 * - format -> parse: whatever the formatters accept, the parser reads back as the same struct
 *   (the sender and the reader cannot disagree about a line one of them produced);
 * - a failed request parse names a wire error code and gives a text; a failed server-line
 *   parse is -EINVAL or -ENOMSG, nothing else.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/codec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                 \
	do {                                                                        \
		if (!(cond)) {                                                      \
			fprintf(stderr, "fuzz_codec: %s:%d: property failed: %s\n", \
			        __FILE__, __LINE__, #cond);                         \
			abort();                                                    \
		}                                                                   \
	} while (0)

/* A line that takes more than this (twice the protocol's cap) only exercises the length check,
 * which a 4 KiB input already reaches. */
#define MAX_INPUT (2 * LK_LINE_MAX)

static bool str_eq(const char *a, const char *b)
{
	if (!a || !b)
		return a == b;
	return strcmp(a, b) == 0;
}

static bool request_eq(const struct lk_request *a, const struct lk_request *b)
{
	return a->verb == b->verb && a->version == b->version && str_eq(a->client, b->client) &&
	       str_eq(a->mac, b->mac) && str_eq(a->lock, b->lock) && a->token == b->token;
}

/* Events compare on what their kind carries; a FOLLOWER's absent or empty holder is the wire's
 * "-" (nobody), which is what a reader gets back. */
static bool event_eq(const struct lk_event *a, const struct lk_event *b)
{
	const char *ha, *hb;

	if (a->kind != b->kind)
		return false;
	if (a->kind != LK_EV_STOP && a->kind != LK_EV_DRAINED && !str_eq(a->lock, b->lock))
		return false;
	switch (a->kind) {
	case LK_EV_LEADER:
	case LK_EV_RENEWED:
		return a->token == b->token && a->ttl_ms == b->ttl_ms &&
		       a->until_mono_ms == b->until_mono_ms;
	case LK_EV_FOLLOWER:
		ha = a->holder && a->holder[0] ? a->holder : "-";
		hb = b->holder && b->holder[0] ? b->holder : "-";
		return strcmp(ha, hb) == 0;
	case LK_EV_STEPDOWN:
		return a->token == b->token && a->deadline_ms == b->deadline_ms;
	case LK_EV_LOST:
		return a->token == b->token && a->reason == b->reason;
	case LK_EV_RELEASED:
		return a->token == b->token && a->outcome == b->outcome;
	case LK_EV_STOP:
		return a->deadline_ms == b->deadline_ms;
	case LK_EV_DRAINED:
		return a->released == b->released && a->expired == b->expired &&
		       a->failed == b->failed && a->elapsed_ms == b->elapsed_ms;
	default:
		return false;
	}
}

static bool msg_eq(const struct lk_server_msg *a, const struct lk_server_msg *b)
{
	if (a->kind != b->kind)
		return false;
	switch (a->kind) {
	case LK_MSG_BANNER:
		return a->version == b->version && str_eq(a->id, b->id) &&
		       str_eq(a->nonce, b->nonce) && a->auth_hmac == b->auth_hmac &&
		       a->mono_ms == b->mono_ms;
	case LK_MSG_OK:
		return a->ok_verb == b->ok_verb && str_eq(a->rest, b->rest);
	case LK_MSG_ERR:
		return a->err == b->err && str_eq(a->err_text, b->err_text);
	case LK_MSG_EVENT:
		return event_eq(&a->ev, &b->ev);
	}
	return false;
}

/* The formatted line, '\n' included, goes back through the parser without its '\n'. */
static void reparse_request(char *line, int n, const struct lk_request *want)
{
	struct lk_request again;
	const char *text = NULL;
	size_t len = (size_t)n;

	CHECK(n > 0 && line[n - 1] == '\n' && (size_t)n <= LK_LINE_MAX);
	lk_codec_chomp(line, &len);
	CHECK(len == (size_t)n - 1);
	CHECK(lk_codec_parse_request(line, len, &again, &text) == LK_ERR_NONE);
	CHECK(request_eq(want, &again));
}

static void reparse_msg(char *line, int n, const struct lk_server_msg *want)
{
	struct lk_server_msg again;
	size_t len = (size_t)n;

	CHECK(n > 0 && line[n - 1] == '\n' && (size_t)n <= LK_LINE_MAX);
	lk_codec_chomp(line, &len);
	CHECK(len == (size_t)n - 1);
	CHECK(lk_codec_parse_server_msg(line, len, &again) == 0);
	CHECK(msg_eq(want, &again));
}

static void request_roundtrip(char *line, size_t len)
{
	struct lk_request req;
	const char *text = NULL;
	char out[LK_LINE_MAX + 1];
	enum lk_err e;
	int n;

	e = lk_codec_parse_request(line, len, &req, &text);
	if (e != LK_ERR_NONE) {
		CHECK(lk_err_name(e) != NULL);
		CHECK(text != NULL && text[0] != '\0');
		return;
	}
	/* A parsed request is never longer once formatted (numbers lose their leading zeros,
	 * unknown attributes and extra spaces go), so formatting cannot fail. */
	n = lk_codec_format_request(out, sizeof(out), &req);
	CHECK(n > 0);
	reparse_request(out, n, &req);
}

static int format_msg(char *out, size_t cap, const struct lk_server_msg *m)
{
	switch (m->kind) {
	case LK_MSG_BANNER:
		return lk_codec_format_banner(out, cap, m->id, m->nonce, m->auth_hmac, m->mono_ms);
	case LK_MSG_OK:
		return lk_codec_format_ok(out, cap, m->ok_verb, m->rest);
	case LK_MSG_ERR:
		return lk_codec_format_err(out, cap, m->err, m->err_text);
	case LK_MSG_EVENT:
		return lk_codec_format_event(out, cap, &m->ev);
	}
	return -EINVAL;
}

static void server_roundtrip(char *line, size_t len)
{
	struct lk_server_msg m;
	char out[LK_LINE_MAX + 1];
	int r, n;

	r = lk_codec_parse_server_msg(line, len, &m);
	if (r != 0) {
		CHECK(r == -EINVAL || r == -ENOMSG);
		return;
	}
	/* The formatter speaks version 1 only: a newer agent's banner parses (so that the client
	 * can say which version it met) but has no way back. */
	if (m.kind == LK_MSG_BANNER && m.version != LK_PROTO_VERSION)
		return;
	n = format_msg(out, sizeof(out), &m);
	if (n == -ENOSPC && m.kind == LK_MSG_BANNER)
		return; /* an id near the line cap, once mono_ms=0 is added: see the top */
	CHECK(n > 0);
	reparse_msg(out, n, &m);
}

/* ---- structs built from the input -------------------------------------------------------- */

struct src {
	const uint8_t *p;
	size_t n;
};

static uint8_t take_u8(struct src *s)
{
	uint8_t v;

	if (s->n == 0)
		return 0;
	v = *s->p++;
	s->n--;
	return v;
}

static uint64_t take_u64(struct src *s)
{
	uint64_t v = 0;

	for (int i = 0; i < 8; i++)
		v = v << 8 | take_u8(s);
	return v;
}

/* A NUL-terminated string of up to a length byte's worth of input bytes, into buf. */
static const char *take_str(struct src *s, char *buf, size_t cap)
{
	size_t n = take_u8(s);

	if (n == 255)
		return NULL;
	if (n > s->n)
		n = s->n;
	if (n > cap - 1)
		n = cap - 1;
	memcpy(buf, s->p, n);
	buf[n] = '\0';
	s->p += n;
	s->n -= n;
	return buf;
}

/* Whatever a formatter accepts must parse back as the same thing; whatever it refuses, it
 * refuses with -EINVAL or -ENOSPC and without touching the caller's buffer. */
static void format_side(const uint8_t *data, size_t size)
{
	struct src s = {data, size};
	char out[LK_LINE_MAX + 1], a[300], b[300], c[300];
	struct lk_request req = {0};
	struct lk_server_msg m = {0};
	size_t cap;
	int n;

	/* A request. */
	req.verb = (enum lk_verb)(take_u8(&s) % (LK_VERB__COUNT + 1));
	req.version = (unsigned)take_u64(&s);
	req.client = take_str(&s, a, sizeof(a));
	req.mac = take_str(&s, b, sizeof(b));
	req.lock = take_str(&s, c, sizeof(c));
	req.token = take_u64(&s);
	cap = take_u8(&s) & 1 ? sizeof(out) : (size_t)take_u8(&s) + 1;
	memset(out, 'X', sizeof(out));
	n = lk_codec_format_request(out, cap, &req);
	if (n < 0) {
		CHECK(n == -EINVAL || n == -ENOSPC);
		CHECK(out[0] == 'X');
	} else {
		CHECK((size_t)n < cap && out[n] == '\0');
		/* A HELLO of another version formats (a client may offer it) but is refused. */
		if (!(req.verb == LK_VERB_HELLO && req.version != LK_PROTO_VERSION)) {
			/* The parser gives no client/mac/lock for verbs that carry none. */
			if (req.verb != LK_VERB_HELLO)
				req.client = req.mac = NULL;
			if (req.verb != LK_VERB_CAMPAIGN && req.verb != LK_VERB_WATCH &&
			    req.verb != LK_VERB_ACK && req.verb != LK_VERB_RESIGN)
				req.lock = NULL;
			if (req.verb != LK_VERB_ACK)
				req.token = 0;
			if (req.verb != LK_VERB_HELLO)
				req.version = 0;
			reparse_request(out, n, &req);
		}
	}

	/* An event. */
	m.kind = LK_MSG_EVENT;
	m.ev.kind = (enum lk_event_kind)(take_u8(&s) % (LK_EV__COUNT + 1));
	m.ev.lock = take_str(&s, a, sizeof(a));
	m.ev.token = take_u64(&s);
	m.ev.ttl_ms = (int64_t)take_u64(&s);
	m.ev.until_mono_ms = (int64_t)take_u64(&s);
	m.ev.holder = take_str(&s, b, sizeof(b));
	m.ev.deadline_ms = (int64_t)take_u64(&s);
	m.ev.reason = (enum lk_lost_reason)(take_u8(&s) % (LK_LOST__COUNT + 1));
	m.ev.outcome = (enum lk_outcome)(take_u8(&s) % (LK_OUTCOME__COUNT + 1));
	m.ev.released = (unsigned)take_u64(&s);
	m.ev.expired = (unsigned)take_u64(&s);
	m.ev.failed = (unsigned)take_u64(&s);
	m.ev.elapsed_ms = (int64_t)take_u64(&s);
	memset(out, 'X', sizeof(out));
	n = lk_codec_format_event(out, sizeof(out), &m.ev);
	if (n < 0)
		CHECK((n == -EINVAL || n == -ENOSPC) && out[0] == 'X');
	else
		reparse_msg(out, n, &m);

	/* A banner, an OK and an ERR. */
	memset(&m, 0, sizeof(m));
	m.kind = LK_MSG_BANNER;
	m.version = LK_PROTO_VERSION;
	m.id = take_str(&s, a, sizeof(a));
	m.nonce = take_str(&s, b, sizeof(b));
	m.auth_hmac = take_u8(&s) & 1;
	m.mono_ms = (int64_t)take_u64(&s);
	n = lk_codec_format_banner(out, sizeof(out), m.id, m.nonce, m.auth_hmac, m.mono_ms);
	if (n < 0)
		CHECK(n == -EINVAL || n == -ENOSPC);
	else
		reparse_msg(out, n, &m);

	memset(&m, 0, sizeof(m));
	m.kind = LK_MSG_OK;
	m.ok_verb = (enum lk_verb)(take_u8(&s) % (LK_VERB__COUNT + 1));
	m.rest = take_str(&s, c, sizeof(c));
	n = lk_codec_format_ok(out, sizeof(out), m.ok_verb, m.rest);
	if (n < 0) {
		CHECK(n == -EINVAL || n == -ENOSPC);
	} else {
		/* The reader skips the spaces before the rest, and gives "" for none. */
		const char *want = m.rest ? m.rest : "";

		while (*want == ' ')
			want++;
		m.rest = want;
		reparse_msg(out, n, &m);
	}

	memset(&m, 0, sizeof(m));
	m.kind = LK_MSG_ERR;
	m.err = (enum lk_err)(take_u8(&s) % (LK_ERR__COUNT + 1));
	m.err_text = take_str(&s, a, sizeof(a));
	n = lk_codec_format_err(out, sizeof(out), m.err, m.err_text);
	if (n < 0) {
		CHECK(n == -EINVAL || n == -ENOSPC);
	} else {
		const char *want = m.err_text ? m.err_text : "";

		while (*want == ' ')
			want++;
		m.err_text = want;
		reparse_msg(out, n, &m);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *line;
	size_t len;

	if (size > MAX_INPUT)
		return 0;
	/* The parsers write a NUL at line[len] and split in place: each gets its own copy, in a
	 * buffer of exactly len + 1 bytes so that ASan sees any write past it. */
	line = malloc(size + 1);
	if (!line)
		return 0;

	memcpy(line, data, size);
	request_roundtrip(line, size);
	memcpy(line, data, size);
	server_roundtrip(line, size);

	memcpy(line, data, size);
	len = size;
	lk_codec_chomp(line, &len);
	CHECK(len <= size && size - len <= 2);
	if (len != size) {
		request_roundtrip(line, len);
		memcpy(line, data, size);
		server_roundtrip(line, len);
	}
	free(line);

	format_side(data, size);
	return 0;
}
