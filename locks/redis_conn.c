/* The Redis backend's connections (see redis.c for the backend as a whole; redis_dial.c gets
 * an attempt connected): the handshake (AUTH, SELECT, ROLE, SCRIPT LOAD, INFO server,
 * SUBSCRIBE), the in-flight FIFO with its deadlines, and reconnects with backoff.
 *
 * hiredis's own timeout (redisAsyncSetTimeout) is one idle timer per context; the agent
 * wants each request answered within `timeout` of its own sending, and the connect, TLS
 * handshake and setup commands within one attempt's deadline. So each connection keeps its own
 * FIFO of in-flight requests (Redis answers in order) with one libevent timer for the oldest
 * deadline; when it passes, the connection is treated as broken and freed, which makes hiredis
 * fail every pending callback with a NULL reply. A frozen server thus yields ERROR replies
 * about `timeout` after the request, never a hang.
 *
 * Lifetimes are the delicate part, because hiredis calls into us from places where freeing
 * things is not allowed:
 * - After a failed connect, hiredis frees the context itself once the connect callback returns
 *   (and calls no disconnect callback). After a successful connect, the context dies by calling
 *   every pending callback with NULL and then the disconnect callback: that is the moment
 *   hiredis lets go of our pointers. redisAsyncFree() inside a reply callback is deferred until
 *   the callback returns; inside the connect callback it is NOT, so we never free there.
 * - Any user callback may call key_free() or even free() of the whole backend. So every entry
 *   from the loop into the backend (here or in redis.c) brackets itself with
 *   lk_redis_enter()/lk_redis_leave(), and
 *   the backend's memory is released only when no such frame is active and hiredis has
 *   finished with every context (r->n_ctx == 0).
 * - A request holds a reference on its key; key_free() only marks the key dead.
 */
#include "locks/redis_int.h"

#include <errno.h>
#include <inttypes.h>
#include <malloc.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <arpa/inet.h>

#include <event2/dns.h>
#include <event2/event.h>
#include <event2/util.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

/* ---- small helpers ---------------------------------------------------------------------- */

void lk_redis_enter(struct lk_redis *r)
{
	r->depth++;
}

void lk_redis_leave(struct lk_redis *r)
{
	if (--r->depth == 0 && r->closing && r->n_ctx == 0)
		lk_redis_finalize(r);
}

void lk_redis_log(struct lk_redis *r, enum lk_backend_log_level level, const char *fmt, ...)
{
	char msg[LK_REDIS_MAX_LOG_LEN];
	va_list ap;

	if (!r->b.hooks.log)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	r->b.hooks.log(r->b.hooks.arg, &r->b, level, msg);
}

/* hiredis's reason for a failed context. It may quote a spontaneous error reply from the
 * server, so it is shown like any other server text. */
const char *lk_redis_errstr(const redisAsyncContext *ac, char *buf, size_t cap,
                            const char *fallback)
{
	if (ac->data && lk_redis_tls_errstr(ac->data, ac, buf, cap))
		return buf;
	if (!ac->errstr[0])
		return fallback;
	lk_backend_shown(buf, LK_REDIS_SHOWN_CAP(cap), ac->errstr,
	                 strnlen(ac->errstr, sizeof(ac->c.errstr)));
	return buf;
}

static bool lk_redis_is_sha(const char *s, size_t len)
{
	if (len != LK_REDIS_SHA_LEN)
		return false;
	for (size_t i = 0; i < len; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	return true;
}

static void lk_redis_timeval(struct timeval *tv, int64_t ms)
{
	if (ms < 0)
		ms = 0;
	tv->tv_sec = (time_t)(ms / 1000);
	tv->tv_usec = (suseconds_t)((ms % 1000) * 1000);
}

/* ---- requests and the in-flight FIFO ---------------------------------------------------- */

void lk_redis_fifo_remove(struct lk_redis_req *req)
{
	struct lk_redis_conn *conn = req->conn;

	if (!req->in_fifo)
		return;
	TAILQ_REMOVE(&conn->fifo, req, link);
	req->in_fifo = false;
	/* A burst (every lock acquiring or renewing at once) has been answered: the memory its
	 * requests and buffers held is free, but the heap keeps it resident unless told (at
	 * 10,000 locks, 0.7 KB per lock). */
	if (--conn->n_fifo == 0 && conn->fifo_peak > LK_REDIS_TRIM_AFTER) {
		conn->fifo_peak = 0;
		malloc_trim(0);
	}
}

static void lk_redis_req_free(struct lk_redis_req *req)
{
	if (!req)
		return;
	lk_redis_fifo_remove(req);
	if (req->k)
		lk_redis_key_unref(req->k);
	free(req);
}

/* Hand a command to hiredis and track it. fn NULL means the reply is routed elsewhere
 * (SUBSCRIBE confirmations go to the channel's callback). */
int lk_redis_send(struct lk_redis_conn *conn, struct lk_redis_req *req,
                  redisCallbackFn *fn, void *privdata,
                  int argc, const char **argv, const size_t *lens)
{
	bool was_empty = TAILQ_EMPTY(&conn->fifo);

	if (!conn->ac)
		return -ENOTCONN;
	if (redisAsyncCommandArgv(conn->ac, fn, privdata, argc, argv, lens) != REDIS_OK)
		return (conn->ac->c.flags & (REDIS_DISCONNECTING | REDIS_FREEING)) ? -ENOTCONN : -ENOMEM;
	req->conn = conn;
	req->ac = conn->ac;
	TAILQ_INSERT_TAIL(&conn->fifo, req, link);
	req->in_fifo = true;
	if (++conn->n_fifo > conn->fifo_peak)
		conn->fifo_peak = conn->n_fifo;
	if (was_empty)
		lk_redis_conn_arm(conn);
	if (conn->flush && conn->state == LK_REDIS_UP)
		event_active(conn->flush, EV_TIMEOUT, 1);
	return 0;
}

/* Write what hiredis has buffered at the end of this turn of the loop rather than on the next.
 *
 * hiredis only buffers a command and asks the loop for a writable event, so a command goes out
 * after the loop's next epoll_wait, behind every other write that turn wakes up: on a handoff
 * the ACK's "OK" to the app went out before the release, and the follower's app lines before
 * its acquire. An event made active runs in this same turn, after the callbacks already due,
 * so that every command sent during the turn (the renewals of all the locks whose timers fired
 * together, the acquires after a reconnect) still leaves in one write, now ahead of the app
 * lines. It calls what the writable event would have called, from the loop like it, so a
 * failed write tears the context down the usual way. */
static void lk_redis_flush_cb(evutil_socket_t fd, short what, void *arg)
{
	struct lk_redis_conn *conn = arg;
	struct lk_redis *r = conn->r;
	redisAsyncContext *ac = conn->ac;

	lk_redis_enter(r);
	if (!r->closing && ac && conn->state == LK_REDIS_UP && (ac->c.flags & REDIS_CONNECTED) &&
	    !(ac->c.flags & (REDIS_FREEING | REDIS_DISCONNECTING)))
		redisAsyncHandleWrite(ac);
	lk_redis_leave(r);
}

/* ---- connections ------------------------------------------------------------------------ */

static const char *lk_redis_role(const struct lk_redis_conn *conn)
{
	return conn->role == LK_REDIS_SUB ? "subscriber " :
	       conn->role == LK_REDIS_SENTINEL ? "sentinel " : "";
}

/* Re-arm the deadline timer for whatever is due first. */
void lk_redis_conn_arm(struct lk_redis_conn *conn)
{
	struct lk_redis *r = conn->r;
	struct lk_redis_req *head;
	int64_t due;
	struct timeval tv;

	if (r->closing || !conn->deadline)
		return;
	switch (conn->state) {
	case LK_REDIS_RESOLVING:
	case LK_REDIS_CONNECTING:
		due = conn->attempt_deadline_ns;
		break;
	case LK_REDIS_HANDSHAKE:
		/* Usually the oldest handshake request, which carries the same deadline; the
		 * attempt's own deadline covers a handshake whose sends failed. */
		head = TAILQ_FIRST(&conn->fifo);
		due = head ? head->deadline_ns : conn->attempt_deadline_ns;
		break;
	case LK_REDIS_UP:
		head = TAILQ_FIRST(&conn->fifo);
		if (head) {
			due = head->deadline_ns;
			break;
		}
		/* fall through */
	case LK_REDIS_DOWN:
	default:
		event_del(conn->deadline);
		return;
	}
	/* Round up: a timer that fires a little early only re-arms itself. */
	lk_redis_timeval(&tv, (due - lk_mono_ns() + 999999) / 1000000);
	evtimer_add(conn->deadline, &tv);
}

/* Free a context we gave up on. A context that never connected gets no disconnect callback,
 * so it stops counting right here; a connected one counts until its disconnect callback. */
static void lk_redis_ctx_free(struct lk_redis *r, redisAsyncContext *ac)
{
	bool connected = ac->c.flags & REDIS_CONNECTED;

	redisAsyncFree(ac);
	if (!connected)
		r->n_ctx--;
}

/* The context is gone (or going): drop everything that pointed at it. A pending lookup is
 * abandoned rather than cancelled; requests still queued are dropped from the deadline FIFO,
 * and hiredis calls back (with NULL) those it owns. */
static void lk_redis_conn_forget(struct lk_redis_conn *conn)
{
	struct lk_redis_req *req;

	conn->ac = NULL;
	conn->state = LK_REDIS_DOWN;
	if (conn->resolve) {
		conn->resolve->conn = NULL;
		conn->resolve = NULL;
	}
	while ((req = TAILQ_FIRST(&conn->fifo))) {
		lk_redis_fifo_remove(req);
		if (req->kind == LK_REDIS_REQ_SUBSCRIBE)
			free(req); /* no hiredis callback owns it */
	}
}

/* The connection is gone or going: forget the context (hiredis or the caller frees it), drop
 * the FIFO (pending callbacks still arrive, with NULL) and schedule the next attempt. */
void lk_redis_conn_lost(struct lk_redis_conn *conn, const char *why)
{
	struct lk_redis *r = conn->r;
	bool was_up = conn->state == LK_REDIS_UP;
	int64_t delay;
	struct timeval tv;
	bool warn;

	if (why != conn->why)
		snprintf(conn->why, sizeof(conn->why), "%s", why);
	lk_redis_conn_forget(conn);
	if (r->closing)
		return;
	if (conn->deadline)
		event_del(conn->deadline);

	delay = lk_backoff_ms(conn->attempt, LK_REDIS_BACKOFF_BASE_MS, LK_REDIS_BACKOFF_CAP_MS);
	if (conn->attempt < LK_REDIS_MAX_ATTEMPT)
		conn->attempt++;
	lk_redis_timeval(&tv, delay);
	evtimer_add(conn->retry, &tv);

	/* One warning per outage, and for the subscriber only while the command connection looks
	 * fine (otherwise its own warning already tells the story). */
	warn = !conn->outage && (conn->role != LK_REDIS_SUB || r->cmd.state == LK_REDIS_UP);
	conn->outage = true;
	if (was_up)
		lk_redis_log(r, warn ? LK_BLOG_WARN : LK_BLOG_DEBUG,
		             "%sconnection lost: %s; reconnecting in %" PRId64 "ms",
		             lk_redis_role(conn), conn->why, delay);
	else
		lk_redis_log(r, warn ? LK_BLOG_WARN : LK_BLOG_DEBUG,
		             "%sconnection to %s failed: %s; retrying in %" PRId64 "ms",
		             lk_redis_role(conn), conn->addr.shown, conn->why, delay);
	if (conn->role == LK_REDIS_SENTINEL)
		lk_redis_sentinel_lost(conn);
}

void lk_redis_conn_kick(struct lk_redis_conn *conn, bool fresh)
{
	struct timeval now = { 0, 0 };

	if (fresh)
		conn->attempt = 0;
	if (!conn->r->closing && conn->state == LK_REDIS_DOWN && conn->retry)
		evtimer_add(conn->retry, &now);
}

/* Give up on the current attempt or connection ourselves. */
void lk_redis_conn_break(struct lk_redis_conn *conn, const char *fmt, ...)
{
	redisAsyncContext *ac = conn->ac;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(conn->why, sizeof(conn->why), fmt, ap);
	va_end(ap);
	lk_redis_conn_lost(conn, conn->why);
	/* Pending callbacks run now (or, inside a reply callback, when it returns) with NULL
	 * replies and see conn->why. */
	if (ac)
		lk_redis_ctx_free(conn->r, ac);
}

static void lk_redis_handshake_done(struct lk_redis_conn *conn, bool may_notify)
{
	struct lk_redis *r = conn->r;

	conn->state = LK_REDIS_UP;
	conn->attempt = 0;
	lk_redis_log(r, conn->role == LK_REDIS_CMD ? LK_BLOG_INFO : LK_BLOG_DEBUG, "%s%s to %s",
	             lk_redis_role(conn), conn->was_up ? "reconnected" : "connected",
	             conn->addr.shown);
	conn->outage = false;
	conn->was_up = true;
	lk_redis_conn_arm(conn);
	/* Release notices may have been missed while we were away, and the server may be another
	 * instance: leaders re-prove their tenures on the command connection at once. */
	if (may_notify && conn->role != LK_REDIS_SENTINEL)
		lk_redis_notify(r, conn->role == LK_REDIS_SUB ? LK_NOTICE_MAYBE_FREE :
		                LK_NOTICE_RECONNECTED, NULL, 0);
}

static void lk_redis_sub_cb(redisAsyncContext *ac, void *reply, void *privdata);

int lk_redis_subscribe(struct lk_redis_conn *conn, const char *channel)
{
	struct lk_redis_req *req = calloc(1, sizeof(*req));
	const char *argv[2] = { "SUBSCRIBE", channel };
	size_t lens[2] = { 9, strlen(channel) };
	int rc;

	if (!req)
		return -ENOMEM;
	req->kind = LK_REDIS_REQ_SUBSCRIBE;
	req->deadline_ns = lk_mono_ns() + conn->r->timeout_ms * 1000000;
	if (conn->state == LK_REDIS_HANDSHAKE && req->deadline_ns > conn->attempt_deadline_ns)
		req->deadline_ns = conn->attempt_deadline_ns;
	rc = lk_redis_send(conn, req, lk_redis_sub_cb, conn, 2, argv, lens);
	if (rc < 0)
		free(req);
	return rc;
}

/* Send one handshake request (AUTH, SELECT, ROLE, SCRIPT LOAD, INFO server, a sentinel's
 * question): it must complete within the connection attempt's deadline. */
int lk_redis_send_handshake(struct lk_redis_conn *conn, enum lk_redis_req_kind kind,
                            enum lk_redis_script script, int argc, const char **argv,
                            const size_t *lens)
{
	struct lk_redis_req *req = calloc(1, sizeof(*req));
	int rc;

	if (!req)
		return -ENOMEM;
	req->kind = kind;
	req->script = script;
	req->deadline_ns = conn->attempt_deadline_ns;
	rc = lk_redis_send(conn, req, lk_redis_cmd_cb, req, argc, argv, lens);
	if (rc < 0)
		free(req);
	return rc;
}

/* AUTH <password> as the default user, or AUTH <username> <password> (a Redis 6 ACL user). */
static int lk_redis_send_auth(struct lk_redis_conn *conn)
{
	struct lk_redis *r = conn->r;
	const char *argv[3] = { "AUTH", r->username, r->password };
	size_t lens[3] = { 4, r->username ? strlen(r->username) : 0, r->password_len };

	if (!r->username) {
		argv[1] = r->password;
		lens[1] = r->password_len;
	}
	return lk_redis_send_handshake(conn, LK_REDIS_REQ_AUTH, 0, r->username ? 3 : 2, argv, lens);
}

/* Keys live in the database SELECTed on the command connection; release notices need none,
 * since Pub/Sub channels are the same in every database. */
static int lk_redis_send_select(struct lk_redis_conn *conn)
{
	char db[16];
	const char *argv[2] = { "SELECT", db };
	size_t lens[2] = { 6, 0 };

	lens[1] = (size_t)snprintf(db, sizeof(db), "%u", conn->r->db);
	return lk_redis_send_handshake(conn, LK_REDIS_REQ_SELECT, 0, 2, argv, lens);
}

static int lk_redis_send_role(struct lk_redis_conn *conn)
{
	const char *argv[1] = { "ROLE" };
	size_t lens[1] = { 4 };

	return lk_redis_send_handshake(conn, LK_REDIS_REQ_ROLE, 0, 1, argv, lens);
}

static int lk_redis_send_load(struct lk_redis_conn *conn, enum lk_redis_script script)
{
	const char *argv[3] = { "SCRIPT", "LOAD", lk_redis_scripts[script] };
	size_t lens[3] = { 6, 4, strlen(lk_redis_scripts[script]) };

	return lk_redis_send_handshake(conn, LK_REDIS_REQ_LOAD, script, 3, argv, lens);
}

static int lk_redis_send_info(struct lk_redis_conn *conn)
{
	const char *argv[2] = { "INFO", "server" };
	size_t lens[2] = { 4, 6 };

	return lk_redis_send_handshake(conn, LK_REDIS_REQ_INFO, 0, 2, argv, lens);
}

static void lk_redis_keepalive(int fd)
{
	int on = 1, idle = LK_REDIS_KEEPALIVE_IDLE_S, intvl = LK_REDIS_KEEPALIVE_INTVL_S;
	int cnt = LK_REDIS_KEEPALIVE_CNT;

	/* Best effort: without it we are no worse off than hiredis's default. */
	(void)setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof(on));
	(void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
	(void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl));
	(void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
}

void lk_redis_on_connect(const redisAsyncContext *cac, int status)
{
	redisAsyncContext *ac = (redisAsyncContext *)cac;
	struct lk_redis_conn *conn = ac->data;
	struct lk_redis *r = conn->r;
	struct lk_backend_key *k;
	char why[LK_REDIS_MAX_SHOWN_LEN + 1];
	bool failed = false;

	lk_redis_enter(r);
	if (status != REDIS_OK) {
		/* hiredis frees this context as soon as we return, without a disconnect callback. */
		r->n_ctx--;
		if (conn->ac == ac)
			lk_redis_conn_lost(conn, lk_redis_errstr(ac, why, sizeof(why), "connect failed"));
		goto out;
	}
	if (conn->ac != ac || r->closing)
		goto out;
	if (conn->addr.port)
		lk_redis_keepalive(ac->c.fd);

	/* Pipeline the whole handshake. A send that fails here is left to the attempt's deadline:
	 * freeing the context inside the connect callback would pull it out from under hiredis. */
	conn->state = LK_REDIS_HANDSHAKE;
	if (conn->role == LK_REDIS_SENTINEL) {
		failed = !lk_redis_sentinel_handshake(conn);
		goto sent;
	}
	if (r->password && lk_redis_send_auth(conn) < 0)
		failed = true;
	if (conn->role == LK_REDIS_CMD) {
		if (r->db && lk_redis_send_select(conn) < 0)
			failed = true;
		if (r->sentinel && lk_redis_send_role(conn) < 0)
			failed = true;
		for (int i = 0; i < LK_REDIS_N_SCRIPTS; i++)
			if (lk_redis_send_load(conn, (enum lk_redis_script)i) < 0)
				failed = true;
		if (lk_redis_send_info(conn) < 0)
			failed = true;
	} else {
		TAILQ_FOREACH(k, &r->keys, link)
			if (!k->dead && lk_redis_subscribe(conn, k->channel) < 0)
				failed = true;
	}
sent:
	if (TAILQ_EMPTY(&conn->fifo) && !failed)
		/* Only a subscriber without keys gets here, so nobody would be notified anyway;
		 * user callbacks must not run inside the connect callback. */
		lk_redis_handshake_done(conn, false);
	else
		lk_redis_conn_arm(conn);
out:
	lk_redis_leave(r);
}

void lk_redis_on_disconnect(const redisAsyncContext *cac, int status)
{
	redisAsyncContext *ac = (redisAsyncContext *)cac;
	struct lk_redis_conn *conn = ac->data;
	struct lk_redis *r = conn->r;
	char why[LK_REDIS_MAX_SHOWN_LEN + 1];

	lk_redis_enter(r);
	/* hiredis is done with our pointers once this returns. */
	r->n_ctx--;
	if (conn->ac == ac)
		lk_redis_conn_lost(conn, lk_redis_errstr(ac, why, sizeof(why), "connection closed"));
	lk_redis_leave(r);
}

static void lk_redis_retry_cb(evutil_socket_t fd, short what, void *arg)
{
	struct lk_redis_conn *conn = arg;
	struct lk_redis *r = conn->r;

	lk_redis_enter(r);
	if (!r->closing && conn->state == LK_REDIS_DOWN)
		lk_redis_conn_start(conn);
	lk_redis_leave(r);
}

static void lk_redis_deadline_cb(evutil_socket_t fd, short what, void *arg)
{
	struct lk_redis_conn *conn = arg;
	struct lk_redis *r = conn->r;
	struct lk_redis_req *head;
	int64_t now = lk_mono_ns();

	lk_redis_enter(r);
	switch (conn->state) {
	case LK_REDIS_RESOLVING:
	case LK_REDIS_CONNECTING:
		if (now < conn->attempt_deadline_ns)
			break;
		lk_redis_conn_break(conn, "%s timed out after %" PRId64 "ms",
		                    conn->state == LK_REDIS_RESOLVING ? "resolving" : "connect",
		                    r->timeout_ms);
		goto out;
	case LK_REDIS_HANDSHAKE:
	case LK_REDIS_UP:
		head = TAILQ_FIRST(&conn->fifo);
		if (head ? now < head->deadline_ns :
		    conn->state == LK_REDIS_UP || now < conn->attempt_deadline_ns)
			break;
		lk_redis_conn_break(conn, "%stimed out after %" PRId64 "ms%s",
		                    conn->state == LK_REDIS_HANDSHAKE ? "handshake " : "",
		                    r->timeout_ms, lk_redis_tls_pending(conn, conn->ac) ?
		                    " (the TLS handshake never finished: is it a TLS port?)" : "");
		goto out;
	case LK_REDIS_DOWN:
		goto out;
	}
	lk_redis_conn_arm(conn);
out:
	lk_redis_leave(r);
}

static void lk_redis_handshake_reply(struct lk_redis_conn *conn, redisAsyncContext *ac,
                                     struct lk_redis_req *req, const redisReply *reply)
{
	struct lk_redis *r = conn->r;
	char text[LK_REDIS_MAX_DESC_LEN];
	struct lk_redis_req *o;

	if (!reply || conn->ac != ac || conn->state != LK_REDIS_HANDSHAKE)
		return;
	if (req->kind == LK_REDIS_REQ_AUTH || req->kind == LK_REDIS_REQ_SELECT) {
		if (reply->type == REDIS_REPLY_ERROR) {
			lk_backend_shown(text, LK_REDIS_SHOWN_CAP(sizeof(text)), reply->str, reply->len);
			if (req->kind == LK_REDIS_REQ_AUTH)
				lk_redis_conn_break(conn, "authentication%s%s failed: %s",
				                    lk_redis_conn_user(conn) ? " as " : "",
				                    lk_redis_conn_user(conn) ? lk_redis_conn_user(conn) : "",
				                    text);
			else
				lk_redis_conn_break(conn, "SELECT %u failed: %s", r->db, text);
			return;
		}
	} else if (req->kind == LK_REDIS_REQ_ROLE) {
		if (!lk_redis_sentinel_role_reply(conn, reply))
			return;
	} else if (req->kind == LK_REDIS_REQ_MASTER) {
		if (!lk_redis_sentinel_master_reply(conn, reply))
			return;
	} else if (req->kind == LK_REDIS_REQ_INFO) {
		lk_redis_info_reply(r, reply);
	} else if (reply->type == REDIS_REPLY_STRING && lk_redis_is_sha(reply->str, reply->len)) {
		memcpy(r->sha[req->script], reply->str, LK_REDIS_SHA_LEN);
		r->sha[req->script][LK_REDIS_SHA_LEN] = '\0';
	} else {
		lk_redis_describe(reply, text, sizeof(text));
		lk_redis_conn_break(conn, "SCRIPT LOAD failed: %s", text);
		return;
	}
	TAILQ_FOREACH(o, &conn->fifo, link)
		if (o->kind != LK_REDIS_REQ_SCRIPT && o->kind != LK_REDIS_REQ_WAIT)
			return; /* more to come */
	lk_redis_handshake_done(conn, true);
}

/* Reply callback for everything on the command connection, and for AUTH on the subscriber. */
void lk_redis_cmd_cb(redisAsyncContext *ac, void *reply, void *privdata)
{
	struct lk_redis_req *req = privdata;
	struct lk_redis_conn *conn = req->conn;
	struct lk_redis *r = conn->r;
	char why[LK_REDIS_MAX_SHOWN_LEN + 1];

	lk_redis_enter(r);
	lk_redis_fifo_remove(req);
	/* hiredis hands out NULL only while it tears the context down. */
	if (!reply && conn->ac == ac)
		lk_redis_conn_lost(conn, lk_redis_errstr(ac, why, sizeof(why), "connection closed"));
	if (r->closing)
		goto done;
	if (req->kind == LK_REDIS_REQ_SCRIPT) {
		const redisReply *rep = reply;
		bool readonly = rep && rep->type == REDIS_REPLY_ERROR && rep->len >= 8 &&
		                memcmp(rep->str, "READONLY", 8) == 0;

		if (lk_redis_script_reply(conn, ac, req, reply))
			req = NULL; /* re-sent: the new callback owns it */
		/* With Sentinel, the master we reached was demoted to a replica (it came back after
		 * a failover): ask the sentinels again rather than retry where no write can work. */
		else if (readonly && r->sentinel && !r->closing && conn->ac == ac &&
		         conn->state == LK_REDIS_UP)
			lk_redis_conn_break(conn, "%s is now a replica (READONLY)", conn->addr.shown);
	} else if (req->kind == LK_REDIS_REQ_WAIT) {
		lk_redis_wait_reply(r, req, reply);
	} else {
		lk_redis_handshake_reply(conn, ac, req, reply);
	}
	if (!r->closing && conn->ac == ac)
		lk_redis_conn_arm(conn);
done:
	lk_redis_req_free(req);
	lk_redis_leave(r);
}

/* Channel callback on the subscriber connection: subscribe confirmations and release notices. */
static void lk_redis_sub_cb(redisAsyncContext *ac, void *reply_, void *privdata)
{
	struct lk_redis_conn *conn = privdata;
	struct lk_redis *r = conn->r;
	const redisReply *reply = reply_, *kind, *chan;
	char why[LK_REDIS_MAX_SHOWN_LEN + 1];
	struct lk_redis_req *o;

	lk_redis_enter(r);
	if (!reply) {
		/* Called once per channel while the context is torn down. */
		if (conn->ac == ac)
			lk_redis_conn_lost(conn, lk_redis_errstr(ac, why, sizeof(why), "connection closed"));
		goto out;
	}
	if (r->closing || reply->type != REDIS_REPLY_ARRAY || reply->elements < 3)
		goto out;
	kind = reply->element[0];
	chan = reply->element[1];
	if (kind->type != REDIS_REPLY_STRING || chan->type != REDIS_REPLY_STRING)
		goto out;

	if (kind->len == 9 && memcmp(kind->str, "subscribe", 9) == 0) {
		if (conn->ac != ac)
			goto out;
		TAILQ_FOREACH(o, &conn->fifo, link) {
			if (o->kind == LK_REDIS_REQ_SUBSCRIBE) {
				lk_redis_fifo_remove(o);
				free(o);
				break;
			}
		}
		if (conn->state == LK_REDIS_HANDSHAKE && TAILQ_EMPTY(&conn->fifo))
			lk_redis_handshake_done(conn, true);
		else
			lk_redis_conn_arm(conn);
	} else if (kind->len == 7 && memcmp(kind->str, "message", 7) == 0) {
		if (conn->role == LK_REDIS_SENTINEL)
			lk_redis_sentinel_message(r, chan, reply->element[2]);
		else
			lk_redis_notify(r, LK_NOTICE_MAYBE_FREE, chan->str, chan->len);
	}
out:
	lk_redis_leave(r);
}

int lk_redis_conn_init(struct lk_redis *r, struct lk_redis_conn *conn, enum lk_redis_role role)
{
	TAILQ_INIT(&conn->fifo);
	conn->r = r;
	conn->role = role;
	conn->deadline = evtimer_new(r->base, lk_redis_deadline_cb, conn);
	conn->retry = evtimer_new(r->base, lk_redis_retry_cb, conn);
	conn->flush = event_new(r->base, -1, 0, lk_redis_flush_cb, conn);
	return conn->deadline && conn->retry && conn->flush ? 0 : -ENOMEM;
}

void lk_redis_conn_close(struct lk_redis_conn *conn)
{
	struct lk_redis *r = conn->r;
	redisAsyncContext *ac = conn->ac;

	if (conn->deadline)
		event_free(conn->deadline);
	if (conn->retry)
		event_free(conn->retry);
	if (conn->flush)
		event_free(conn->flush);
	conn->deadline = conn->retry = conn->flush = NULL;
	lk_redis_conn_forget(conn);
	/* Pending callbacks see r->closing and only free their requests. */
	if (ac)
		lk_redis_ctx_free(r, ac);
}
