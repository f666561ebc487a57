/* The wire codec, formatting: requests, events, banners and replies into one line each, every
 * word checked so that no value can break the line (see codec.h; parsing is in codec.c). No
 * I/O, no allocation. */
#include "proto/codec.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* A line under construction. It is built here, not in the caller's buffer, so that a line
 * that turns out not to fit leaves the caller's buffer untouched. A line that does not fit in
 * LK_LINE_MAX would be refused by the peer, so that counts as not fitting even when the
 * caller's buffer is larger. */
struct out {
	char buf[LK_LINE_MAX + 1];
	size_t len;
	bool full;
};

static void out_str(struct out *o, const char *s)
{
	size_t n = strlen(s);

	if (o->full || n > LK_LINE_MAX - o->len) {
		o->full = true;
		return;
	}
	memcpy(o->buf + o->len, s, n);
	o->len += n;
}

static void out_fmt(struct out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void out_fmt(struct out *o, const char *fmt, ...)
{
	char tmp[64]; /* only ever numbers and short names */
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(tmp)) {
		o->full = true;
		return;
	}
	out_str(o, tmp);
}

static int out_finish(struct out *o, char *buf, size_t cap)
{
	out_str(o, "\n");
	if (o->full || o->len + 1 > cap)
		return -ENOSPC;
	memcpy(buf, o->buf, o->len);
	buf[o->len] = '\0';
	return (int)o->len;
}

/* A word: printable ASCII without spaces, so that the reader splits it back the same way. */
static bool word_valid(const char *s, bool empty_ok)
{
	if (!s)
		return false;
	if (!*s)
		return empty_ok;
	for (; *s; s++)
		if (*s <= 0x20 || *s > 0x7e)
			return false;
	return true;
}

/* Free text (the rest of an OK line, an ERR text): printable ASCII, spaces allowed. */
static bool text_valid(const char *s)
{
	for (; *s; s++)
		if (*s < 0x20 || *s > 0x7e)
			return false;
	return true;
}

int lk_codec_format_request(char *buf, size_t cap, const struct lk_request *req)
{
	struct out o = {.len = 0};
	const char *verb = lk_verb_name(req->verb);

	if (!verb)
		return -EINVAL;
	out_str(&o, verb);
	switch (req->verb) {
	case LK_VERB_HELLO:
		out_fmt(&o, " %u", req->version);
		/* '=' is fine inside a value: the reader splits an attribute at its first '='. */
		if (req->client) {
			if (!word_valid(req->client, true))
				return -EINVAL;
			out_str(&o, " client=");
			out_str(&o, req->client);
		}
		if (req->mac) {
			if (!word_valid(req->mac, true))
				return -EINVAL;
			out_str(&o, " mac=");
			out_str(&o, req->mac);
		}
		break;
	case LK_VERB_WATCH:
		if (!(req->lock && strcmp(req->lock, "*") == 0) && !lk_codec_lock_name_valid(req->lock))
			return -EINVAL;
		out_str(&o, " ");
		out_str(&o, req->lock);
		break;
	case LK_VERB_CAMPAIGN:
	case LK_VERB_RESIGN:
	case LK_VERB_ACK:
		if (!lk_codec_lock_name_valid(req->lock))
			return -EINVAL;
		out_str(&o, " ");
		out_str(&o, req->lock);
		if (req->verb == LK_VERB_ACK)
			out_fmt(&o, " %" PRIu64, req->token);
		break;
	case LK_VERB_STATUS:
		if ((req->status_lock && !lk_codec_lock_name_valid(req->status_lock)) ||
		    (req->after && !lk_codec_lock_name_valid(req->after)) ||
		    (req->status_lock && req->after))
			return -EINVAL;
		if (req->status_lock) {
			out_str(&o, " lock=");
			out_str(&o, req->status_lock);
		}
		if (req->after) {
			out_str(&o, " after=");
			out_str(&o, req->after);
		}
		break;
	default:
		break;
	}
	return out_finish(&o, buf, cap);
}

int lk_codec_format_event(char *buf, size_t cap, const struct lk_event *ev)
{
	struct out o = {.len = 0};
	const char *name = lk_event_name(ev->kind), *s;

	if (!name)
		return -EINVAL;
	out_str(&o, name);
	if (ev->kind != LK_EV_STOP && ev->kind != LK_EV_DRAINED) {
		if (!lk_codec_lock_name_valid(ev->lock))
			return -EINVAL;
		out_str(&o, " ");
		out_str(&o, ev->lock);
	}

	/* Negative durations are refused rather than clamped: the codec does not decide what a
	 * deadline in the past means, and a reader would refuse the line anyway. */
	switch (ev->kind) {
	case LK_EV_LEADER:
	case LK_EV_RENEWED:
		if (ev->ttl_ms < 0 || ev->until_mono_ms < 0)
			return -EINVAL;
		out_fmt(&o, " token=%" PRIu64 " ttl_ms=%" PRId64, ev->token, ev->ttl_ms);
		out_fmt(&o, " until_mono_ms=%" PRId64, ev->until_mono_ms);
		break;
	case LK_EV_FOLLOWER:
		/* No holder and an empty holder both mean nobody, which the wire spells "-". */
		s = ev->holder && ev->holder[0] ? ev->holder : "-";
		if (!word_valid(s, false))
			return -EINVAL;
		out_str(&o, " holder=");
		out_str(&o, s);
		break;
	case LK_EV_STEPDOWN:
		if (ev->deadline_ms < 0)
			return -EINVAL;
		out_fmt(&o, " token=%" PRIu64 " deadline_ms=%" PRId64, ev->token, ev->deadline_ms);
		break;
	case LK_EV_LOST:
		if (!(s = lk_lost_reason_name(ev->reason)))
			return -EINVAL;
		out_fmt(&o, " token=%" PRIu64 " reason=%s", ev->token, s);
		break;
	case LK_EV_RELEASED:
		if (!(s = lk_outcome_name(ev->outcome)))
			return -EINVAL;
		out_fmt(&o, " token=%" PRIu64 " outcome=%s", ev->token, s);
		break;
	case LK_EV_STOP:
		if (ev->deadline_ms < 0)
			return -EINVAL;
		out_fmt(&o, " deadline_ms=%" PRId64, ev->deadline_ms);
		break;
	case LK_EV_DRAINED:
		if (ev->elapsed_ms < 0)
			return -EINVAL;
		out_fmt(&o, " released=%u expired=%u failed=%u", ev->released, ev->expired,
		        ev->failed);
		out_fmt(&o, " elapsed_ms=%" PRId64, ev->elapsed_ms);
		break;
	default:
		return -EINVAL;
	}
	return out_finish(&o, buf, cap);
}

int lk_codec_format_banner(char *buf, size_t cap, const char *id, const char *nonce_hex,
                           bool auth_hmac, int64_t mono_ms)
{
	struct out o = {.len = 0};

	if (!word_valid(id, false) || !nonce_hex || strlen(nonce_hex) != LK_NONCE_HEX_LEN ||
	    strspn(nonce_hex, "0123456789abcdefABCDEF") != LK_NONCE_HEX_LEN || mono_ms < 0)
		return -EINVAL;
	out_fmt(&o, "LEASEKEEPER %d id=", LK_PROTO_VERSION);
	out_str(&o, id);
	out_str(&o, " nonce=");
	out_str(&o, nonce_hex);
	out_str(&o, auth_hmac ? " auth=hmac" : " auth=none");
	out_fmt(&o, " mono_ms=%" PRId64, mono_ms);
	return out_finish(&o, buf, cap);
}

int lk_codec_format_ok(char *buf, size_t cap, enum lk_verb verb, const char *rest)
{
	struct out o = {.len = 0};

	if ((unsigned)verb >= LK_VERB__COUNT || (rest && !text_valid(rest)))
		return -EINVAL;
	out_str(&o, "OK ");
	out_str(&o, lk_ok_name(verb));
	if (rest && rest[0]) {
		out_str(&o, " ");
		out_str(&o, rest);
	}
	return out_finish(&o, buf, cap);
}

int lk_codec_format_err(char *buf, size_t cap, enum lk_err code, const char *text)
{
	struct out o = {.len = 0};
	const char *name = lk_err_name(code);

	if (!name || (text && !text_valid(text)))
		return -EINVAL;
	out_str(&o, "ERR ");
	out_str(&o, name);
	if (text && text[0]) {
		out_str(&o, " ");
		out_str(&o, text);
	}
	return out_finish(&o, buf, cap);
}
