/* One client's protocol: framing of its lines, the handshake, the verbs and their replies. */
#include "agent/session.h"

#include <errno.h>
#include <event2/buffer.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/lock.h"
#include "agent/log.h"
#include "agent/status.h"
#include "locks/backend.h"
#include "proto/auth.h"
#include "proto/codec.h"

#define FLAG_CAMPAIGN 1u
#define FLAG_WATCH    2u

struct sub {
	uint32_t lock;             /* index in the status view */
	uint8_t flags;             /* FLAG_CAMPAIGN | FLAG_WATCH, never 0 */
};

struct lk_session {
	const struct lk_session_env *env;
	const struct lk_session_io *io;
	void *conn;
	uint64_t id;               /* the transport's, for logs */
	char nonce[LK_NONCE_HEX_LEN + 1];
	char name[64];             /* HELLO client=, for logs */
	bool hello;
	bool closing;              /* asked the transport to close: take no more lines */
	bool drainer;              /* asked for the drain: gets DRAINED */
	bool watch_all;
	/* The locks this client campaigns on or watches, sorted by lock index. Most clients name
	 * one lock, and an agent may have thousands: a flag per configured lock in every session
	 * would cost locks x clients bytes and a scan of every lock per question. */
	struct sub *subs;
	size_t n_subs, cap_subs;
	size_t n_campaign, n_watch; /* subs with FLAG_CAMPAIGN, with FLAG_WATCH */
};

static struct lk_lock *lock_at(const struct lk_session *s, int i)
{
	return s->env->status->locks[i];
}

/* The first sub whose lock is >= i (n_subs if none). */
static size_t sub_pos(const struct lk_session *s, size_t i)
{
	size_t lo = 0, hi = s->n_subs;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (s->subs[mid].lock < i)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static uint8_t sub_flags(const struct lk_session *s, size_t i)
{
	size_t p = sub_pos(s, i);

	return p < s->n_subs && s->subs[p].lock == i ? s->subs[p].flags : 0;
}

static void count_flags(struct lk_session *s, uint8_t flags, int by)
{
	if (flags & FLAG_CAMPAIGN)
		s->n_campaign += (size_t)by;
	if (flags & FLAG_WATCH)
		s->n_watch += (size_t)by;
}

/* Set flag on lock i, telling the transport when the client starts wanting the lock's events.
 * Returns 0 or -ENOMEM (nothing changed). */
static int sub_set(struct lk_session *s, size_t i, uint8_t flag)
{
	size_t p = sub_pos(s, i);

	if (p < s->n_subs && s->subs[p].lock == i) {
		count_flags(s, flag & (uint8_t)~s->subs[p].flags, 1);
		s->subs[p].flags |= flag;
		return 0;
	}
	if (s->n_subs == s->cap_subs) {
		size_t cap = s->cap_subs ? s->cap_subs * 2 : 2;
		struct sub *v = realloc(s->subs, cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		s->subs = v;
		s->cap_subs = cap;
	}
	if (s->io->want && s->io->want(s->conn, i, true) < 0)
		return -ENOMEM;
	memmove(&s->subs[p + 1], &s->subs[p], (s->n_subs - p) * sizeof(*s->subs));
	s->subs[p] = (struct sub){ .lock = (uint32_t)i, .flags = flag };
	s->n_subs++;
	count_flags(s, flag, 1);
	return 0;
}

/* Clear flag on lock i; the last flag gone, the client no longer wants the lock's events. */
static void sub_clear(struct lk_session *s, size_t i, uint8_t flag)
{
	size_t p = sub_pos(s, i);

	if (p == s->n_subs || s->subs[p].lock != i)
		return;
	count_flags(s, flag & s->subs[p].flags, -1);
	s->subs[p].flags &= (uint8_t)~flag;
	if (s->subs[p].flags)
		return;
	memmove(&s->subs[p], &s->subs[p + 1], (s->n_subs - p - 1) * sizeof(*s->subs));
	s->n_subs--;
	if (s->io->want)
		s->io->want(s->conn, i, false);
}

static void send_fmt(struct lk_session *s, int n, const char *buf)
{
	if (n > 0)
		s->io->send(s->conn, buf, (size_t)n);
}

static void send_ok(struct lk_session *s, enum lk_verb verb, const char *rest)
{
	char buf[LK_LINE_MAX];

	send_fmt(s, lk_codec_format_ok(buf, sizeof(buf), verb, rest), buf);
}

static void close_session(struct lk_session *s, bool cut_off)
{
	s->closing = true;
	s->io->close(s->conn, cut_off);
}

static void send_err(struct lk_session *s, enum lk_err code, const char *text)
{
	char buf[LK_LINE_MAX];

	send_fmt(s, lk_codec_format_err(buf, sizeof(buf), code, text), buf);
	switch (code) {
	case LK_ERR_LINE_TOO_LONG:
		close_session(s, true);
		break;
	case LK_ERR_HELLO_REQUIRED:
	case LK_ERR_AUTH_FAILED:
	case LK_ERR_UNSUPPORTED_VERSION:
		close_session(s, false);
		break;
	default:
		break;
	}
}

static void send_lock_state(struct lk_session *s, size_t i)
{
	char buf[LK_LINE_MAX];

	send_fmt(s, lk_lock_current_event(lock_at(s, (int)i), buf, sizeof(buf)), buf);
}

static void do_hello(struct lk_session *s, const struct lk_request *req)
{
	const struct lk_status *st = s->env->status;
	char rest[LK_LINE_MAX];

	if (s->hello) {
		send_err(s, LK_ERR_BAD_REQUEST, "HELLO was already said");
		return;
	}
	if (s->env->key && (!req->mac || !lk_auth_verify(s->env->key, s->nonce, req->mac))) {
		LK_LOG(LK_WARN, "client failed authentication", LKF_U64("client", s->id));
		send_err(s, LK_ERR_AUTH_FAILED, req->mac ? "wrong mac" : "mac required");
		return;
	}
	s->hello = true;
	if (req->client)
		snprintf(s->name, sizeof(s->name), "%s", req->client);
	s->io->hello(s->conn);
	snprintf(rest, sizeof(rest), "%d agent=%s id=%s", LK_PROTO_VERSION, st->version,
	         st->identity);
	send_ok(s, LK_VERB_HELLO, rest);
}

static void do_campaign(struct lk_session *s, int i, const struct lk_request *req)
{
	const struct lk_status *st = s->env->status;
	int rc;

	if (st->draining(st->ctx)) {
		send_err(s, LK_ERR_DRAINING, "the agent is draining");
		return;
	}
	/* Joined before this client is flagged, so that whatever the lock says while taking the
	 * client in cannot overtake the OK. */
	rc = lk_lock_campaign(lock_at(s, i), s);
	if (rc == -EBUSY) {
		send_err(s, LK_ERR_DRAINING, "the agent is draining");
		return;
	}
	if (rc < 0) {
		send_err(s, LK_ERR_BAD_REQUEST, "too many campaign clients");
		return;
	}
	if (sub_set(s, (size_t)i, FLAG_CAMPAIGN) < 0) {
		/* Joined but not flagged: leave again, or the lock would wait for this client. */
		lk_lock_leave(lock_at(s, i), s);
		send_err(s, LK_ERR_BAD_REQUEST, "out of memory");
		return;
	}
	s->io->active(s->conn);
	send_ok(s, LK_VERB_CAMPAIGN, req->lock);
	send_lock_state(s, (size_t)i);
}

static void do_watch(struct lk_session *s, const struct lk_request *req)
{
	const struct lk_status *st = s->env->status;
	int i;

	if (strcmp(req->lock, "*") == 0) {
		if (!s->watch_all && s->io->want &&
		    s->io->want(s->conn, LK_SESSION_ALL_LOCKS, true) < 0) {
			send_err(s, LK_ERR_BAD_REQUEST, "out of memory");
			return;
		}
		s->watch_all = true;
		s->io->active(s->conn);
		send_ok(s, LK_VERB_WATCH, req->lock);
		for (size_t j = 0; j < st->n_locks; j++)
			send_lock_state(s, j);
		return;
	}
	i = lk_status_find_lock(st, req->lock);
	if (i < 0) {
		send_err(s, LK_ERR_UNKNOWN_LOCK, req->lock);
		return;
	}
	if (sub_set(s, (size_t)i, FLAG_WATCH) < 0) {
		send_err(s, LK_ERR_BAD_REQUEST, "out of memory");
		return;
	}
	s->io->active(s->conn);
	send_ok(s, LK_VERB_WATCH, req->lock);
	send_lock_state(s, (size_t)i);
}

/* STATUS, STATUS lock=<lock> (that lock alone) or STATUS after=<lock> (the next page: the
 * locks after it in config order, as many as fit in a line). */
static void do_status(struct lk_session *s, const struct lk_request *req)
{
	const struct lk_status *st = s->env->status;
	const char *name = req->status_lock ? req->status_lock : req->after;
	size_t max = LK_LINE_MAX - sizeof("OK STATUS \n");
	char *json;
	int i = -1;

	if (name) {
		i = lk_status_find_lock(st, name);
		if (i < 0) {
			send_err(s, LK_ERR_UNKNOWN_LOCK, name);
			return;
		}
	}
	if (req->status_lock)
		json = lk_status_json_page(st, (size_t)i, true, max);
	else if (req->after)
		json = lk_status_json_page(st, (size_t)i + 1, false, max);
	else
		json = lk_status_json(st, max);
	if (!json) {
		send_err(s, LK_ERR_BAD_REQUEST, "out of memory");
		return;
	}
	send_ok(s, LK_VERB_STATUS, json);
	free(json);
}

static void handle_line(struct lk_session *s, char *line, size_t len)
{
	struct lk_request req;
	const char *text = NULL;
	enum lk_err e = lk_codec_parse_request(line, len, &req, &text);
	int i = -1;

	if (!s->hello) {
		if (e == LK_ERR_NONE && req.verb == LK_VERB_HELLO)
			do_hello(s, &req);
		else if (e == LK_ERR_UNSUPPORTED_VERSION || (e == LK_ERR_BAD_REQUEST &&
		         len >= 6 && strncmp(line, "HELLO", 5) == 0))
			send_err(s, e, text);
		else
			send_err(s, LK_ERR_HELLO_REQUIRED, "say HELLO 1 first");
		return;
	}
	if (e != LK_ERR_NONE) {
		send_err(s, e, text);
		return;
	}
	switch (req.verb) {
	case LK_VERB_CAMPAIGN:
	case LK_VERB_ACK:
	case LK_VERB_RESIGN:
		i = lk_status_find_lock(s->env->status, req.lock);
		if (i < 0) {
			send_err(s, LK_ERR_UNKNOWN_LOCK, req.lock);
			return;
		}
		break;
	default:
		break;
	}
	switch (req.verb) {
	case LK_VERB_HELLO:
		do_hello(s, &req);
		return;
	case LK_VERB_CAMPAIGN:
		do_campaign(s, i, &req);
		return;
	case LK_VERB_WATCH:
		do_watch(s, &req);
		return;
	case LK_VERB_ACK:
		if (lk_lock_ack(lock_at(s, i), s, req.token) < 0) {
			send_err(s, LK_ERR_BAD_TOKEN, "not the lock's current tenure");
			return;
		}
		send_ok(s, LK_VERB_ACK, req.lock);
		return;
	case LK_VERB_RESIGN:
		send_ok(s, LK_VERB_RESIGN, req.lock);
		if (sub_flags(s, (size_t)i) & FLAG_CAMPAIGN) {
			sub_clear(s, (size_t)i, FLAG_CAMPAIGN);
			lk_lock_leave(lock_at(s, i), s);
		}
		return;
	case LK_VERB_STATUS:
		do_status(s, &req);
		return;
	case LK_VERB_DRAIN:
		s->drainer = true;
		s->io->active(s->conn);
		send_ok(s, LK_VERB_DRAIN, NULL);
		s->env->drain(s->env->ctx, "DRAIN request");
		return;
	case LK_VERB_PING:
		send_ok(s, LK_VERB_PING, NULL);
		return;
	case LK_VERB_QUIT:
		send_ok(s, LK_VERB_QUIT, NULL);
		close_session(s, false);
		return;
	case LK_VERB__COUNT:
		break;
	}
	send_err(s, LK_ERR_UNKNOWN_VERB, "unknown verb");
}

bool lk_session_read_line(struct lk_session *s, struct evbuffer *in)
{
	char line[LK_LINE_MAX + 1];
	size_t eol_len = 0, len;
	struct evbuffer_ptr p;

	if (s->closing)
		return false;
	p = evbuffer_search_eol(in, NULL, &eol_len, EVBUFFER_EOL_LF);
	if (p.pos < 0) {
		/* No newline in LK_LINE_MAX bytes: whatever follows, the line is too long. */
		if (evbuffer_get_length(in) >= LK_LINE_MAX)
			send_err(s, LK_ERR_LINE_TOO_LONG, "lines are at most 4096 bytes");
		return false;
	}
	len = (size_t)p.pos;
	if (len + 1 > LK_LINE_MAX) {
		send_err(s, LK_ERR_LINE_TOO_LONG, "lines are at most 4096 bytes");
		return false;
	}
	evbuffer_remove(in, line, len + 1);
	line[len] = '\0';
	if (len > 0 && line[len - 1] == '\r')
		line[--len] = '\0';
	handle_line(s, line, len);
	return true;
}

struct lk_session *lk_session_new(const struct lk_session_env *env,
                                  const struct lk_session_io *io, void *conn, uint64_t id)
{
	const struct lk_status *st = env->status;
	struct lk_session *s = calloc(1, sizeof(*s));
	char banner[LK_LINE_MAX];

	if (!s)
		return NULL;
	s->env = env;
	s->io = io;
	s->conn = conn;
	s->id = id;
	snprintf(s->name, sizeof(s->name), "-");
	lk_auth_new_nonce(s->nonce);
	send_fmt(s, lk_codec_format_banner(banner, sizeof(banner), st->identity, s->nonce,
	                                   env->key != NULL, lk_mono_ns() / 1000000), banner);
	return s;
}

struct lk_session *lk_session_free(struct lk_session *s, bool cut_off)
{
	if (!s)
		return NULL;
	/* The transport forgets the client first: leaving a lock can make it emit to the others. */
	if (s->io->want) {
		if (s->watch_all)
			s->io->want(s->conn, LK_SESSION_ALL_LOCKS, false);
		for (size_t k = 0; k < s->n_subs; k++)
			s->io->want(s->conn, s->subs[k].lock, false);
	}
	for (size_t k = 0; k < s->n_subs; k++) {
		struct lk_lock *l = lock_at(s, (int)s->subs[k].lock);

		if (!(s->subs[k].flags & FLAG_CAMPAIGN))
			continue;
		if (cut_off)
			lk_lock_evict(l, s);
		else
			lk_lock_leave(l, s);
	}
	free(s->subs);
	free(s);
	return NULL;
}

bool lk_session_said_hello(const struct lk_session *s) { return s->hello; }
bool lk_session_asked_to_drain(const struct lk_session *s) { return s->drainer; }
const char *lk_session_name(const struct lk_session *s) { return s->name; }

bool lk_session_wants_lock(const struct lk_session *s, size_t lock_index)
{
	return s->hello && (s->watch_all || sub_flags(s, lock_index));
}

enum lk_session_kind lk_session_kind(const struct lk_session *s)
{
	if (s->n_campaign)
		return LK_SESSION_CAMPAIGN;
	return s->watch_all || s->n_watch ? LK_SESSION_WATCH : LK_SESSION_OTHER;
}
