/* The wire protocol of proto/PROTOCOL.md as a pure codec: see codec.h.
 *
 * Parsing splits the caller's buffer in place and returns pointers into it; formatting builds
 * the line in a private stack buffer first and copies it out only when it is complete, so a
 * caller's buffer is never left holding half a line. Nothing here allocates, blocks or logs.
 */
#include "proto/codec.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* The longest line body: LK_LINE_MAX counts the '\n', and a '\r' before it is part of the
 * body, so a peer that ends its lines with "\r\n" gets one byte less. */
#define LINE_BODY_MAX (LK_LINE_MAX - 1)

static const char *const verb_names[LK_VERB__COUNT] = {
	[LK_VERB_HELLO] = "HELLO",     [LK_VERB_CAMPAIGN] = "CAMPAIGN", [LK_VERB_WATCH] = "WATCH",
	[LK_VERB_ACK] = "ACK",         [LK_VERB_RESIGN] = "RESIGN",     [LK_VERB_STATUS] = "STATUS",
	[LK_VERB_DRAIN] = "DRAIN",     [LK_VERB_PING] = "PING",         [LK_VERB_QUIT] = "QUIT",
};

/* The word after "OK": the verb itself, except that PING is answered by PONG and QUIT by BYE. */
static const char *const ok_names[LK_VERB__COUNT] = {
	[LK_VERB_HELLO] = "HELLO",     [LK_VERB_CAMPAIGN] = "CAMPAIGN", [LK_VERB_WATCH] = "WATCH",
	[LK_VERB_ACK] = "ACK",         [LK_VERB_RESIGN] = "RESIGN",     [LK_VERB_STATUS] = "STATUS",
	[LK_VERB_DRAIN] = "DRAIN",     [LK_VERB_PING] = "PONG",         [LK_VERB_QUIT] = "BYE",
};

static const char *const err_names[LK_ERR__COUNT] = {
	[LK_ERR_NONE] = NULL, /* not a wire code */
	[LK_ERR_BAD_REQUEST] = "bad_request",
	[LK_ERR_UNKNOWN_VERB] = "unknown_verb",
	[LK_ERR_UNKNOWN_LOCK] = "unknown_lock",
	[LK_ERR_HELLO_REQUIRED] = "hello_required",
	[LK_ERR_AUTH_FAILED] = "auth_failed",
	[LK_ERR_UNSUPPORTED_VERSION] = "unsupported_version",
	[LK_ERR_LINE_TOO_LONG] = "line_too_long",
	[LK_ERR_BAD_TOKEN] = "bad_token",
	[LK_ERR_DRAINING] = "draining",
	[LK_ERR_TOO_MANY_CLIENTS] = "too_many_clients",
};

static const char *const event_names[LK_EV__COUNT] = {
	[LK_EV_LEADER] = "LEADER",     [LK_EV_FOLLOWER] = "FOLLOWER", [LK_EV_STEPDOWN] = "STEPDOWN",
	[LK_EV_LOST] = "LOST",         [LK_EV_RELEASED] = "RELEASED", [LK_EV_STOP] = "STOP",
	[LK_EV_DRAINED] = "DRAINED",   [LK_EV_RENEWED] = "RENEWED",
};

static const char *const reason_names[LK_LOST__COUNT] = {
	[LK_LOST_RENEW_DEADLINE] = "renew_deadline", [LK_LOST_TAKEN] = "taken",
	[LK_LOST_EXPIRED] = "expired",               [LK_LOST_BACKEND_ERROR] = "backend_error",
};

static const char *const outcome_names[LK_OUTCOME__COUNT] = {
	[LK_OUTCOME_RELEASED] = "released", [LK_OUTCOME_ALREADY_GONE] = "already_gone",
	[LK_OUTCOME_EXPIRED] = "expired",   [LK_OUTCOME_FAILED] = "failed",
};

/* The enums come from callers and, through casts, from anywhere: an out-of-range value gets
 * NULL rather than a read past the table, and the formatters turn that NULL into -EINVAL. */
const char *lk_verb_name(enum lk_verb v)
{
	return (unsigned)v < LK_VERB__COUNT ? verb_names[v] : NULL;
}

const char *lk_ok_name(enum lk_verb v)
{
	return (unsigned)v < LK_VERB__COUNT ? ok_names[v] : NULL;
}

const char *lk_err_name(enum lk_err e)
{
	return (unsigned)e < LK_ERR__COUNT ? err_names[e] : NULL;
}

const char *lk_event_name(enum lk_event_kind k)
{
	return (unsigned)k < LK_EV__COUNT ? event_names[k] : NULL;
}

const char *lk_lost_reason_name(enum lk_lost_reason r)
{
	return (unsigned)r < LK_LOST__COUNT ? reason_names[r] : NULL;
}

const char *lk_outcome_name(enum lk_outcome o)
{
	return (unsigned)o < LK_OUTCOME__COUNT ? outcome_names[o] : NULL;
}

/* Index of s in a name table, or -1. */
static int name_lookup(const char *const *names, int count, const char *s)
{
	for (int i = 0; i < count; i++)
		if (names[i] && strcmp(names[i], s) == 0)
			return i;
	return -1;
}

static bool lock_char(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       c == '.' || c == '_' || c == '-';
}

bool lk_codec_lock_name_valid(const char *s)
{
	size_t n = 0;

	if (!s)
		return false;
	for (; s[n]; n++)
		if (n >= LK_LOCK_NAME_MAX || !lock_char(s[n]))
			return false;
	return n > 0;
}

void lk_codec_chomp(const char *line, size_t *len)
{
	size_t n = *len;

	if (n == 0 || line[n - 1] != '\n')
		return;
	n--;
	if (n > 0 && line[n - 1] == '\r')
		n--;
	*len = n;
}

/* ---- parsing ------------------------------------------------------------------------------ */

enum line_fault {
	LINE_OK,
	LINE_TOO_LONG,
	LINE_NOT_PRINTABLE,
	LINE_TOO_MANY_WORDS,
};

/* Check the bytes of line[0..len), drop one trailing '\r' and NUL-terminate. Every byte is
 * checked, the NULs included: a NUL inside a line would otherwise cut it short silently. */
static enum line_fault line_prepare(char *line, size_t len)
{
	if (len > LINE_BODY_MAX)
		return LINE_TOO_LONG;
	if (len > 0 && line[len - 1] == '\r')
		len--;
	for (size_t i = 0; i < len; i++)
		if (line[i] < 0x20 || line[i] > 0x7e)
			return LINE_NOT_PRINTABLE;
	line[len] = '\0';
	return LINE_OK;
}

static char *skip_spaces(char *p)
{
	while (*p == ' ')
		p++;
	return p;
}

/* Cut the next space-delimited word out of *cur, or return NULL at the end of the line. */
static char *next_word(char **cur)
{
	char *w = skip_spaces(*cur), *p = w;

	if (*w == '\0') {
		*cur = w;
		return NULL;
	}
	while (*p && *p != ' ')
		p++;
	if (*p)
		*p++ = '\0';
	*cur = p;
	return w;
}

/* The words after the first one, sorted into positionals and key=value attributes. The
 * counts cannot exceed LK_MAX_WORDS, which split_words enforces for the whole line. */
struct words {
	char *pos[LK_MAX_WORDS];
	size_t npos;
	char *key[LK_MAX_WORDS];
	char *val[LK_MAX_WORDS];
	size_t nattr;
};

/* Split what is left of the line at *cur; `used` words were already taken off its front. */
static enum line_fault split_words(char *cur, size_t used, struct words *w)
{
	char *word;

	w->npos = w->nattr = 0;
	while ((word = next_word(&cur))) {
		char *eq = strchr(word, '=');

		if (++used > LK_MAX_WORDS)
			return LINE_TOO_MANY_WORDS;
		if (eq) {
			*eq = '\0';
			w->key[w->nattr] = word;
			w->val[w->nattr++] = eq + 1;
		} else {
			w->pos[w->npos++] = word;
		}
	}
	return LINE_OK;
}

/* The value of attribute key: 1 with *ret set, 0 if absent, -1 if given more than once. Two
 * values for one key would leave the reader guessing which one the sender meant (two mac=
 * in one HELLO, say), so that is an error rather than first- or last-wins. */
static int attr_get(const struct words *w, const char *key, const char **ret)
{
	const char *found = NULL;

	for (size_t i = 0; i < w->nattr; i++) {
		if (strcmp(w->key[i], key) != 0)
			continue;
		if (found)
			return -1;
		found = w->val[i];
	}
	if (!found)
		return 0;
	*ret = found;
	return 1;
}

/* Plain decimal: digits only, at least one, no sign or spaces; 0, -ERANGE on overflow, or
 * -EINVAL for anything that is not a number at all. */
static int parse_u64(const char *s, uint64_t *ret)
{
	uint64_t v = 0;

	if (*s == '\0')
		return -EINVAL;
	for (; *s; s++) {
		if (*s < '0' || *s > '9')
			return -EINVAL;
		if (v > (UINT64_MAX - (uint64_t)(*s - '0')) / 10)
			return -ERANGE;
		v = v * 10 + (uint64_t)(*s - '0');
	}
	*ret = v;
	return 0;
}

static int parse_i64(const char *s, int64_t *ret)
{
	uint64_t v;

	if (parse_u64(s, &v) < 0 || v > INT64_MAX)
		return -EINVAL;
	*ret = (int64_t)v;
	return 0;
}

static int parse_uint(const char *s, unsigned *ret)
{
	uint64_t v;

	if (parse_u64(s, &v) < 0 || v > UINT_MAX)
		return -EINVAL;
	*ret = (unsigned)v;
	return 0;
}

static enum lk_err req_fail(enum lk_err e, const char *text, const char **ret_text)
{
	if (ret_text)
		*ret_text = text;
	return e;
}

static enum lk_err parse_hello(const struct words *w, struct lk_request *req,
                               const char **ret_text)
{
	uint64_t v = 0;
	int r;

	if (w->npos == 0)
		return req_fail(LK_ERR_BAD_REQUEST, "HELLO needs a protocol version", ret_text);
	if (w->npos > 1)
		return req_fail(LK_ERR_BAD_REQUEST, "HELLO takes one version and attributes",
		                ret_text);
	r = parse_u64(w->pos[0], &v);
	if (r == -EINVAL)
		return req_fail(LK_ERR_BAD_REQUEST, "protocol version is not a number", ret_text);
	/* An overflowing number is still a number: a version we do not speak. */
	if (r < 0 || v != LK_PROTO_VERSION)
		return req_fail(LK_ERR_UNSUPPORTED_VERSION, "this agent speaks protocol version 1",
		                ret_text);
	req->version = (unsigned)v;
	if (attr_get(w, "client", &req->client) < 0 || attr_get(w, "mac", &req->mac) < 0)
		return req_fail(LK_ERR_BAD_REQUEST, "attribute given twice", ret_text);
	return LK_ERR_NONE;
}

static enum lk_err parse_lock_arg(const struct words *w, size_t want, bool star_ok,
                                  struct lk_request *req, const char **ret_text)
{
	if (w->npos != want)
		return req_fail(LK_ERR_BAD_REQUEST,
		                want == 1 ? "expected one lock name" : "expected a lock name and a token",
		                ret_text);
	if (!(star_ok && strcmp(w->pos[0], "*") == 0) && !lk_codec_lock_name_valid(w->pos[0]))
		return req_fail(LK_ERR_BAD_REQUEST, "lock names are [A-Za-z0-9._-]{1,128}", ret_text);
	req->lock = w->pos[0];
	return LK_ERR_NONE;
}

/* STATUS, STATUS lock=<lock> (one lock) or STATUS after=<lock> (a page). Attributes, not a
 * positional, so that an agent older than them, which ignores unknown attributes, still
 * answers (its one line); being known to this verb, they are checked rather than ignored. */
static enum lk_err parse_status(const struct words *w, struct lk_request *req,
                                const char **ret_text)
{
	int a = attr_get(w, "after", &req->after), l = attr_get(w, "lock", &req->status_lock);

	if (w->npos > 0)
		return req_fail(LK_ERR_BAD_REQUEST, "this verb takes no arguments", ret_text);
	if (a < 0 || l < 0)
		return req_fail(LK_ERR_BAD_REQUEST, "attribute given twice", ret_text);
	if ((a > 0 && !lk_codec_lock_name_valid(req->after)) ||
	    (l > 0 && !lk_codec_lock_name_valid(req->status_lock)))
		return req_fail(LK_ERR_BAD_REQUEST, "lock names are [A-Za-z0-9._-]{1,128}", ret_text);
	if (a > 0 && l > 0)
		return req_fail(LK_ERR_BAD_REQUEST, "STATUS takes lock= or after=, not both",
		                ret_text);
	return LK_ERR_NONE;
}

enum lk_err lk_codec_parse_request(char *line, size_t len, struct lk_request *ret,
                                   const char **ret_text)
{
	struct lk_request req = {0};
	struct words w;
	char *cur = line, *verb;
	enum lk_err e = LK_ERR_NONE;
	int v;

	switch (line_prepare(line, len)) {
	case LINE_OK:
		break;
	case LINE_TOO_LONG:
		return req_fail(LK_ERR_LINE_TOO_LONG, "line longer than 4096 bytes", ret_text);
	default:
		return req_fail(LK_ERR_BAD_REQUEST, "line holds a byte that is not printable ASCII",
		                ret_text);
	}
	verb = next_word(&cur);
	if (!verb)
		return req_fail(LK_ERR_BAD_REQUEST, "empty line", ret_text);
	if (split_words(cur, 1, &w) != LINE_OK)
		return req_fail(LK_ERR_BAD_REQUEST, "too many words", ret_text);
	v = name_lookup(verb_names, LK_VERB__COUNT, verb);
	if (v < 0)
		return req_fail(LK_ERR_UNKNOWN_VERB, "unknown verb", ret_text);
	req.verb = (enum lk_verb)v;

	/* Unknown attributes are ignored on every verb, as the server-line parser ignores them:
	 * a newer client can then add one without breaking older agents. Positionals are strict. */
	switch (req.verb) {
	case LK_VERB_HELLO:
		e = parse_hello(&w, &req, ret_text);
		break;
	case LK_VERB_CAMPAIGN:
	case LK_VERB_RESIGN:
		e = parse_lock_arg(&w, 1, false, &req, ret_text);
		break;
	case LK_VERB_WATCH:
		e = parse_lock_arg(&w, 1, true, &req, ret_text);
		break;
	case LK_VERB_ACK:
		e = parse_lock_arg(&w, 2, false, &req, ret_text);
		if (e == LK_ERR_NONE && parse_u64(w.pos[1], &req.token) < 0)
			e = req_fail(LK_ERR_BAD_TOKEN, "token must be a decimal number below 2^64",
			             ret_text);
		break;
	case LK_VERB_STATUS:
		e = parse_status(&w, &req, ret_text);
		break;
	case LK_VERB_DRAIN:
	case LK_VERB_PING:
	case LK_VERB_QUIT:
		if (w.npos > 0)
			e = req_fail(LK_ERR_BAD_REQUEST, "this verb takes no arguments", ret_text);
		break;
	default:
		e = req_fail(LK_ERR_UNKNOWN_VERB, "unknown verb", ret_text);
		break;
	}
	if (e == LK_ERR_NONE)
		*ret = req;
	return e;
}

/* An optional integer attribute, added after version 1.0: absent leaves *ret at 0. Returns 0,
 * or -EINVAL if present and not a number. */
static int opt_i64(const struct words *w, const char *key, int64_t *ret)
{
	const char *s;

	*ret = 0;
	switch (attr_get(w, key, &s)) {
	case 0: return 0;
	case 1: return parse_i64(s, ret) == 0 ? 0 : -EINVAL;
	default: return -EINVAL;
	}
}

static int parse_banner(const struct words *w, struct lk_server_msg *m)
{
	const char *auth = NULL;

	if (w->npos != 1 || parse_uint(w->pos[0], &m->version) < 0)
		return -EINVAL;
	if (attr_get(w, "id", &m->id) != 1 || m->id[0] == '\0')
		return -EINVAL;
	if (attr_get(w, "nonce", &m->nonce) != 1 || strlen(m->nonce) != LK_NONCE_HEX_LEN ||
	    strspn(m->nonce, "0123456789abcdefABCDEF") != LK_NONCE_HEX_LEN)
		return -EINVAL;
	if (attr_get(w, "auth", &auth) != 1)
		return -EINVAL;
	if (strcmp(auth, "hmac") == 0)
		m->auth_hmac = true;
	else if (strcmp(auth, "none") != 0)
		return -EINVAL;
	if (opt_i64(w, "mono_ms", &m->mono_ms) < 0 || m->mono_ms < 0)
		return -EINVAL;
	m->kind = LK_MSG_BANNER;
	return 0;
}

/* Required attribute helpers for events: each returns 0 or -EINVAL. */
static int attr_u64(const struct words *w, const char *key, uint64_t *ret)
{
	const char *s;

	return attr_get(w, key, &s) == 1 && parse_u64(s, ret) == 0 ? 0 : -EINVAL;
}

static int attr_i64(const struct words *w, const char *key, int64_t *ret)
{
	const char *s;

	return attr_get(w, key, &s) == 1 && parse_i64(s, ret) == 0 ? 0 : -EINVAL;
}

static int attr_uint(const struct words *w, const char *key, unsigned *ret)
{
	const char *s;

	return attr_get(w, key, &s) == 1 && parse_uint(s, ret) == 0 ? 0 : -EINVAL;
}

static int attr_enum(const struct words *w, const char *key, const char *const *names,
                     int count, int *ret)
{
	const char *s;
	int i;

	if (attr_get(w, key, &s) != 1 || (i = name_lookup(names, count, s)) < 0)
		return -EINVAL;
	*ret = i;
	return 0;
}

static int parse_event(enum lk_event_kind kind, const struct words *w, struct lk_event *ev)
{
	int i = 0;

	ev->kind = kind;
	if (kind == LK_EV_STOP || kind == LK_EV_DRAINED) {
		if (w->npos != 0)
			return -EINVAL;
	} else {
		if (w->npos != 1 || !lk_codec_lock_name_valid(w->pos[0]))
			return -EINVAL;
		ev->lock = w->pos[0];
	}

	switch (kind) {
	case LK_EV_LEADER:
	case LK_EV_RENEWED:
		return attr_u64(w, "token", &ev->token) || attr_i64(w, "ttl_ms", &ev->ttl_ms) ||
		       opt_i64(w, "until_mono_ms", &ev->until_mono_ms) || ev->until_mono_ms < 0
		       ? -EINVAL : 0;
	case LK_EV_FOLLOWER:
		if (attr_get(w, "holder", &ev->holder) != 1 || ev->holder[0] == '\0')
			return -EINVAL;
		return 0;
	case LK_EV_STEPDOWN:
		return attr_u64(w, "token", &ev->token) || attr_i64(w, "deadline_ms", &ev->deadline_ms)
		       ? -EINVAL : 0;
	case LK_EV_LOST:
		if (attr_u64(w, "token", &ev->token) ||
		    attr_enum(w, "reason", reason_names, LK_LOST__COUNT, &i))
			return -EINVAL;
		ev->reason = (enum lk_lost_reason)i;
		return 0;
	case LK_EV_RELEASED:
		if (attr_u64(w, "token", &ev->token) ||
		    attr_enum(w, "outcome", outcome_names, LK_OUTCOME__COUNT, &i))
			return -EINVAL;
		ev->outcome = (enum lk_outcome)i;
		return 0;
	case LK_EV_STOP:
		return attr_i64(w, "deadline_ms", &ev->deadline_ms) ? -EINVAL : 0;
	case LK_EV_DRAINED:
		return attr_uint(w, "released", &ev->released) ||
		       attr_uint(w, "expired", &ev->expired) ||
		       attr_uint(w, "failed", &ev->failed) ||
		       attr_i64(w, "elapsed_ms", &ev->elapsed_ms) ? -EINVAL : 0;
	default:
		return -EINVAL;
	}
}

int lk_codec_parse_server_msg(char *line, size_t len, struct lk_server_msg *ret)
{
	struct lk_server_msg m = {0};
	struct words w;
	char *cur = line, *first, *second;
	int i;

	if (line_prepare(line, len) != LINE_OK)
		return -EINVAL;
	first = next_word(&cur);
	if (!first)
		return -EINVAL;

	/* Replies are cut by hand: the rest of an OK line (STATUS's JSON) and the text of an ERR
	 * line are free text that may hold any number of spaces, so they are not split. */
	if (strcmp(first, "OK") == 0 || strcmp(first, "ERR") == 0) {
		second = next_word(&cur);
		if (!second)
			return -EINVAL;
		if (first[0] == 'O') {
			if ((i = name_lookup(ok_names, LK_VERB__COUNT, second)) < 0)
				return -EINVAL;
			m.kind = LK_MSG_OK;
			m.ok_verb = (enum lk_verb)i;
			m.rest = skip_spaces(cur);
		} else {
			if ((i = name_lookup(err_names, LK_ERR__COUNT, second)) < 0)
				return -EINVAL;
			m.kind = LK_MSG_ERR;
			m.err = (enum lk_err)i;
			m.err_text = skip_spaces(cur);
		}
		*ret = m;
		return 0;
	}

	if (split_words(cur, 1, &w) != LINE_OK)
		return -EINVAL;
	if (strcmp(first, "LEASEKEEPER") == 0) {
		if (parse_banner(&w, &m) < 0)
			return -EINVAL;
	} else {
		if ((i = name_lookup(event_names, LK_EV__COUNT, first)) < 0)
			return strspn(first, "ABCDEFGHIJKLMNOPQRSTUVWXYZ") == strlen(first) &&
			       name_lookup(verb_names, LK_VERB__COUNT, first) < 0 ? -ENOMSG : -EINVAL;
		if (parse_event((enum lk_event_kind)i, &w, &m.ev) < 0)
			return -EINVAL;
		m.kind = LK_MSG_EVENT;
	}
	*ret = m;
	return 0;
}
