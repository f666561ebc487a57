/* The Unix socket server: the transport (accept, client slots, per-client buffers and caps,
 * timers, closing) and the socket file. What each client says is its session's (session.c). */
#include "agent/server.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "agent/log.h"
#include "agent/ptrset.h"
#include "agent/session.h"
#include "agent/sockfile.h"
#include "agent/status.h"
#include "locks/backend.h"
#include "proto/auth.h"
#include "proto/codec.h"

#define ACCEPT_PAUSE_MS   100  /* out of file descriptors: stop accepting for this long */
#define ACCEPT_BATCH      64   /* connections accepted before the rest of the loop gets a turn */
#define PEER_SCAN_MAX     256  /* idle connections checked for a departed peer per accept */

struct client {
	TAILQ_ENTRY(client) link;  /* clients (live) or dead */
	TAILQ_ENTRY(client) idle_link; /* idle, while live and idle */
	struct lk_server *srv;
	struct lk_session *sess;   /* the protocol; NULL only while being built */
	struct bufferevent *bev;
	struct event *timer;       /* HELLO deadline, then the idle deadline, then close-flush */
	uint64_t id;               /* for logs */
	int64_t accepted_ms;       /* CLOCK_MONOTONIC */
	int64_t hello_ms;
	uint32_t uid;              /* the peer's, from SO_PEERCRED, for logs */
	int32_t pid;
	bool hello;                /* HELLO accepted: the idle deadline replaced the HELLO one */
	bool active;               /* sent CAMPAIGN, WATCH or DRAIN once: never idle again */
	bool in_idle;              /* on the idle list */
	bool closing;              /* no more input; close once output is flushed */
	bool dead;                 /* waiting to be reaped */
	bool evicted;              /* closed by the agent, not by the app: see free_client */
	bool watch_all;            /* on the server's `all` list (WATCH *) */
};

TAILQ_HEAD(client_list, client);


struct lk_server {
	struct event_base *base;
	struct lk_session_env env;      /* key points at key when auth is on */
	struct evconnlistener *listener;
	char *path;
	struct lk_sockfile file;        /* which file at path is ours */
	uint8_t key[LK_AUTH_KEY_BYTES];
	struct lk_server_limits limits; /* allowed_uids points at uids */
	uint32_t *uids;
	struct client_list clients;     /* live: served, or closing while their output flushes */
	struct client_list dead;        /* waiting for the reaper */
	struct client_list idle;        /* live and idle (see server.h), oldest first */
	/* Who gets each lock's events: a lock's event costs its own subscribers, not a look at
	 * every client (with thousands of locks and clients, one event per renewal each). */
	struct lk_ptrset *by_lock;      /* [n_locks]: campaign clients and watchers of the lock */
	size_t n_locks;
	size_t outbuf_max;              /* LK_CLIENT_OUTBUF_MAX + LK_CLIENT_OUTBUF_PER_LOCK each */
	struct lk_ptrset all;           /* WATCH *: every lock's events (struct client *) */
	size_t n_live;                  /* on clients: what max_clients caps */
	uint64_t next_id;
	struct event *reaper;
	struct event *accept_pause;     /* re-enables the listener after EMFILE or a batch */
	unsigned accepted_in_turn;      /* accepted since the listener was last re-enabled */
	/* counters for STATUS */
	uint64_t n_idle_closed, n_evicted, n_hello_timeouts, n_refused_full, n_refused_uid;
	/* lines a local process can cause at will, rate-limited */
	struct lk_log_rate log_idle, log_hello, log_evicted, log_full, log_uid, log_accept;
	/* close_all */
	void (*all_closed)(void *arg);
	void *all_closed_arg;
	struct event *close_timer;
};

/* ---- transport ------------------------------------------------------------------------------ */

static const char *client_name(const struct client *c)
{
	return c->sess ? lk_session_name(c->sess) : "-";
}

static int64_t mono_ms(void)
{
	return lk_mono_ns() / 1000000;
}

static struct timeval ms_tv(int64_t ms)
{
	return (struct timeval){ (time_t)(ms / 1000), (suseconds_t)((ms % 1000) * 1000) };
}

static void leave_idle(struct client *c)
{
	if (!c->in_idle)
		return;
	TAILQ_REMOVE(&c->srv->idle, c, idle_link);
	c->in_idle = false;
}

static void kill_client(struct client *c)
{
	if (c->dead)
		return;
	c->dead = true;
	c->closing = true;
	bufferevent_disable(c->bev, EV_READ | EV_WRITE);
	leave_idle(c);
	TAILQ_REMOVE(&c->srv->clients, c, link);
	TAILQ_INSERT_TAIL(&c->srv->dead, c, link);
	c->srv->n_live--;
	/* Freed from the loop, never from inside a lock's emit or a libevent callback of its own:
	 * leaving a lock can make the lock emit to other clients. */
	event_active(c->srv->reaper, EV_TIMEOUT, 0);
}

static void send_line(struct client *c, const char *line, size_t len)
{
	struct evbuffer *out;

	if (c->closing)
		return;
	out = bufferevent_get_output(c->bev);
	if (evbuffer_get_length(out) + len > c->srv->outbuf_max) {
		LK_LOG(LK_WARN, "client reads too slowly; disconnecting", LKF_U64("client", c->id)
		       LKF_STR("name", client_name(c)));
		c->evicted = true;
		kill_client(c);
		return;
	}
	bufferevent_write(c->bev, line, len);
}

static void close_after_flush(struct client *c)
{
	struct timeval tv = ms_tv(LK_CLOSE_FLUSH_MS);

	if (c->closing)
		return;
	c->closing = true;
	bufferevent_disable(c->bev, EV_READ);
	if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0) {
		kill_client(c);
		return;
	}
	/* The write callback fires when the output is flushed; the timer caps the wait. */
	evtimer_add(c->timer, &tv);
}

static void on_read(struct bufferevent *bev, void *arg)
{
	struct client *c = arg;
	struct evbuffer *in = bufferevent_get_input(bev);

	while (!c->closing && lk_session_read_line(c->sess, in))
		;
	/* Whatever a closing client still sends is ignored. */
	if (c->closing)
		evbuffer_drain(in, evbuffer_get_length(in));
}

static void on_write(struct bufferevent *bev, void *arg)
{
	struct client *c = arg;

	if (c->closing && evbuffer_get_length(bufferevent_get_output(bev)) == 0)
		kill_client(c);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
	struct client *c = arg;

	if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
		kill_client(c);
}

static void on_client_timer(evutil_socket_t fd, short what, void *arg)
{
	struct client *c = arg;
	struct lk_server *s = c->srv;
	uint64_t skipped;
	char buf[128];
	int n;

	if (c->closing) {
		kill_client(c);
		return;
	}
	if (!c->hello) {
		s->n_hello_timeouts++;
		if (lk_log_rate_due(&s->log_hello, &skipped))
			LK_LOG(LK_INFO, "closing a client that sent no HELLO in time",
			       LKF_U64("client", c->id) LKF_U64("uid", c->uid) LKF_I64("pid", c->pid)
			       LKF_I64("hello_timeout_ms", LK_HELLO_TIMEOUT_MS)
			       LKF_U64("not_logged", skipped));
		n = lk_codec_format_err(buf, sizeof(buf), LK_ERR_HELLO_REQUIRED, "no HELLO within 5s");
		if (n > 0)
			send_line(c, buf, (size_t)n);
		close_after_flush(c);
		return;
	}
	if (c->active)
		return;
	/* No error code says "idle" (and an ERR out of the blue would be read as the reply to a
	 * request in flight): the connection just ends, and the log says why. */
	s->n_idle_closed++;
	if (lk_log_rate_due(&s->log_idle, &skipped))
		LK_LOG(LK_INFO, "closing a client that did not campaign, watch or drain in time",
		       LKF_U64("client", c->id) LKF_STR("name", client_name(c)) LKF_U64("uid", c->uid)
		       LKF_I64("pid", c->pid) LKF_I64("idle_ms", mono_ms() - c->hello_ms)
		       LKF_I64("client_idle_timeout_ms", s->limits.idle_timeout_ms)
		       LKF_U64("not_logged", skipped));
	close_after_flush(c);
}

/* ---- the session's hooks -------------------------------------------------------------------- */

static void io_send(void *conn, const char *line, size_t len)
{
	send_line(conn, line, len);
}

static void io_close(void *conn, bool cut_off)
{
	struct client *c = conn;

	c->evicted |= cut_off;
	close_after_flush(c);
}

static void io_hello(void *conn)
{
	struct client *c = conn;

	c->hello = true;
	c->hello_ms = mono_ms();
	if (!c->active) {
		struct timeval tv = ms_tv(c->srv->limits.idle_timeout_ms);

		evtimer_add(c->timer, &tv); /* replaces the HELLO deadline */
	}
}

/* The client did what apps do (CAMPAIGN, WATCH, DRAIN): from now on it keeps its slot. */
static void io_active(void *conn)
{
	struct client *c = conn;

	if (c->active)
		return;
	c->active = true;
	leave_idle(c);
	if (!c->closing)
		evtimer_del(c->timer);
}

static int io_want(void *conn, size_t lock_index, bool on)
{
	struct client *c = conn;
	struct lk_server *s = c->srv;
	struct lk_ptrset *l;

	if (lock_index == LK_SESSION_ALL_LOCKS) {
		l = &s->all;
		if (on == c->watch_all)
			return 0;
	} else if (lock_index < s->n_locks) {
		l = &s->by_lock[lock_index];
	} else {
		return on ? -EINVAL : 0;
	}
	if (!on) {
		lk_ptrset_remove(l, c);
		if (l == &s->all)
			c->watch_all = false;
		return 0;
	}
	if (lk_ptrset_add(l, c) < 0)
		return -ENOMEM;
	if (l == &s->all)
		c->watch_all = true;
	return 0;
}

static const struct lk_session_io session_io = {
	.send = io_send, .close = io_close, .hello = io_hello, .active = io_active,
	.want = io_want,
};

/* Free a client's memory and close its socket; accepts a half-built one. */
static void destroy_client(struct client *c)
{
	if (c->bev)
		bufferevent_free(c->bev);
	if (c->timer)
		event_free(c->timer);
	free(c);
}

static void free_client(struct client *c)
{
	/* I6: leaving its locks is the session's; one the agent cut off may still be working. */
	c->sess = lk_session_free(c->sess, c->evicted);
	destroy_client(c);
}

static void maybe_all_closed(struct lk_server *s)
{
	void (*done)(void *) = s->all_closed;

	if (!done || !TAILQ_EMPTY(&s->clients) || !TAILQ_EMPTY(&s->dead))
		return;
	s->all_closed = NULL;
	evtimer_del(s->close_timer);
	done(s->all_closed_arg);
}

static void on_reap(evutil_socket_t fd, short what, void *arg)
{
	struct lk_server *s = arg;
	struct client *c;

	while ((c = TAILQ_FIRST(&s->dead))) {
		TAILQ_REMOVE(&s->dead, c, link);
		free_client(c);
	}
	maybe_all_closed(s);
}

/* close_all's deadline: whoever is still flushing is cut off now. */
static void on_close_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct lk_server *s = arg;
	struct client *c;

	while ((c = TAILQ_FIRST(&s->clients)))
		kill_client(c);
	on_reap(fd, what, s);
}

/* True if the peer has already closed its end (an EOF or a reset waits to be read): the
 * connection holds its slot for nobody. Data waiting to be read means a live peer. */
static bool peer_gone(const struct client *c)
{
	char b;
	ssize_t n = recv(bufferevent_getfd(c->bev), &b, 1, MSG_PEEK | MSG_DONTWAIT);

	return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

/* Every slot is taken: free an idle connection whose peer has already left, else close the
 * oldest idle one, else the oldest one that is closing anyway. Returns false if every slot is
 * held by an active client.
 *
 * Departed peers come first because a connect/close burst fills the slots with them: the
 * listener accepts the whole backlog in one callback, before the agent reads the EOF of any
 * of them, so "the oldest idle" would otherwise be an app that connected just before the burst
 * and has not sent CAMPAIGN yet. They are looked for newest first (a burst's connections are
 * the newest, and usually the first one looked at is gone) and at most PEER_SCAN_MAX of them,
 * so that a full agent pays a bounded number of recv() calls per accept. */
static bool make_room(struct lk_server *s)
{
	struct client *c, *victim = NULL;
	size_t looked = 0;
	uint64_t skipped;

	TAILQ_FOREACH_REVERSE(c, &s->idle, client_list, idle_link) {
		if (looked++ == PEER_SCAN_MAX)
			break;
		if (!c->closing && peer_gone(c)) {
			victim = c;
			break;
		}
	}
	if (!victim && (victim = TAILQ_FIRST(&s->idle))) {
		s->n_evicted++;
		if (lk_log_rate_due(&s->log_evicted, &skipped))
			LK_LOG(LK_INFO, "client slots full; closing the oldest idle client for a new one",
			       LKF_U64("client", victim->id) LKF_STR("name", client_name(victim))
			       LKF_U64("uid", victim->uid) LKF_I64("pid", victim->pid)
			       LKF_BOOL("hello", victim->hello)
			       LKF_I64("age_ms", mono_ms() - victim->accepted_ms)
			       LKF_U64("max_clients", s->limits.max_clients)
			       LKF_U64("not_logged", skipped));
	}
	if (victim) {
		/* Idle means it never campaigned or watched: freeing it cannot reach a lock, so
		 * it need not wait for the reaper (whose turn may be thousands of accepts away). */
		leave_idle(victim);
		TAILQ_REMOVE(&s->clients, victim, link);
		s->n_live--;
		free_client(victim);
		return true;
	}
	/* Active clients that are closing (QUIT, an error) leave within LK_CLOSE_FLUSH_MS; one
	 * of them may go now. Its lock membership ends through the reaper as usual. */
	TAILQ_FOREACH(c, &s->clients, link) {
		if (c->closing) {
			kill_client(c);
			return true;
		}
	}
	return false;
}

static bool uid_allowed(const struct lk_server *s, uint32_t uid)
{
	if (!s->limits.allowed_uids)
		return true;
	for (size_t i = 0; i < s->limits.n_allowed_uids; i++)
		if (s->limits.allowed_uids[i] == uid)
			return true;
	return false;
}

static void refuse(evutil_socket_t fd, enum lk_err code, const char *text)
{
	char buf[256];
	int n = lk_codec_format_err(buf, sizeof(buf), code, text);

	/* A courtesy on a socket we are about to close: if it does not fit, so be it. */
	if (n > 0)
		send(fd, buf, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT);
	evutil_closesocket(fd);
}

/* Serve (or refuse) one accepted connection. */
static void accept_one(struct lk_server *s, evutil_socket_t fd)
{
	struct client *c;
	struct timeval tv = ms_tv(LK_HELLO_TIMEOUT_MS);
	struct ucred cred = { .pid = 0, .uid = (uid_t)-1, .gid = (gid_t)-1 };
	socklen_t cred_len = sizeof(cred);
	char text[128];
	uint64_t skipped;

	/* The peer's credentials are the kernel's, taken at connect(): nothing the peer sends
	 * can change them. Without them (never on Linux) an allow-list refuses. */
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cred_len) < 0)
		cred.uid = (uid_t)-1;
	if (!uid_allowed(s, (uint32_t)cred.uid)) {
		s->n_refused_uid++;
		if (lk_log_rate_due(&s->log_uid, &skipped))
			LK_LOG(LK_WARN, "refused a client: its uid is not in allowed_uids",
			       LKF_U64("uid", cred.uid) LKF_I64("pid", cred.pid)
			       LKF_U64("not_logged", skipped));
		snprintf(text, sizeof(text), "peer uid %lu not allowed", (unsigned long)cred.uid);
		refuse(fd, LK_ERR_AUTH_FAILED, text);
		return;
	}
	if (s->n_live >= s->limits.max_clients && !make_room(s)) {
		s->n_refused_full++;
		if (lk_log_rate_due(&s->log_full, &skipped))
			LK_LOG(LK_WARN, "client slots full of active clients; refused a connection",
			       LKF_U64("uid", cred.uid) LKF_I64("pid", cred.pid)
			       LKF_U64("max_clients", s->limits.max_clients)
			       LKF_U64("not_logged", skipped));
		snprintf(text, sizeof(text), "all %zu client slots are in use",
		         s->limits.max_clients);
		refuse(fd, LK_ERR_TOO_MANY_CLIENTS, text);
		return;
	}
	c = calloc(1, sizeof(*c));
	if (!c)
		goto fail;
	c->srv = s;
	c->id = ++s->next_id;
	c->accepted_ms = mono_ms();
	c->uid = (uint32_t)cred.uid;
	c->pid = (int32_t)cred.pid;
	c->bev = bufferevent_socket_new(s->base, fd, BEV_OPT_CLOSE_ON_FREE);
	c->timer = evtimer_new(s->base, on_client_timer, c);
	if (!c->bev || !c->timer) {
		if (c->bev)
			fd = -1; /* owned by the bufferevent now */
		goto fail;
	}
	bufferevent_setcb(c->bev, on_read, on_write, on_event, c);
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
	TAILQ_INSERT_TAIL(&s->clients, c, link);
	TAILQ_INSERT_TAIL(&s->idle, c, idle_link);
	c->in_idle = true;
	s->n_live++;
	evtimer_add(c->timer, &tv);
	c->sess = lk_session_new(&s->env, &session_io, c, c->id);
	if (!c->sess) {
		/* Listed already: the reaper frees it like any client. */
		LK_LOG(LK_ERROR, "out of memory accepting a client");
		kill_client(c);
	}
	return;
fail:
	LK_LOG(LK_ERROR, "out of memory accepting a client");
	if (c)
		destroy_client(c);
	if (fd >= 0)
		evutil_closesocket(fd);
}

static void on_accept(struct evconnlistener *lst, evutil_socket_t fd, struct sockaddr *sa,
                      int salen, void *arg)
{
	struct lk_server *s = arg;
	struct timeval now = { 0, 0 };

	accept_one(s, fd);
	/* libevent's listener accepts until the listen queue is empty, and local processes that
	 * connect in a loop keep it from ever being empty: the loop would do nothing else, and a
	 * leader's renewals would miss their deadline (I9). After a batch, stop accepting until
	 * the next turn of the loop, so that backend replies, timers and the EOFs of clients
	 * that already left come first (libevent 2.1 leaves its accept loop once the listener
	 * is disabled). */
	if (++s->accepted_in_turn >= ACCEPT_BATCH) {
		evconnlistener_disable(lst);
		evtimer_add(s->accept_pause, &now);
	}
}

static void on_accept_resume(evutil_socket_t fd, short what, void *arg)
{
	struct lk_server *s = arg;

	s->accepted_in_turn = 0;
	if (s->listener)
		evconnlistener_enable(s->listener);
}

static void on_accept_error(struct evconnlistener *lst, void *arg)
{
	struct lk_server *s = arg;
	int err = EVUTIL_SOCKET_ERROR();
	struct timeval tv = ms_tv(ACCEPT_PAUSE_MS);
	uint64_t skipped;

	/* Out of descriptors, the pending connection stays queued and the listener would be
	 * readable again at once: pause it instead of spinning, while idle clients time out. */
	if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
		evconnlistener_disable(lst);
		evtimer_add(s->accept_pause, &tv);
	}
	if (lk_log_rate_due(&s->log_accept, &skipped))
		LK_LOG(LK_ERROR, "accept failed", LKF_STR("error", evutil_socket_error_to_string(err))
		       LKF_U64("not_logged", skipped));
}

/* ---- public API ----------------------------------------------------------------------------- */

int lk_server_new(struct event_base *base, const struct lk_session_env *env, const char *path,
                  unsigned mode, const struct lk_server_limits *limits,
                  struct lk_server **ret, char *err, size_t errlen)
{
	struct lk_server *s = calloc(1, sizeof(*s));
	int fd, rc = -ENOMEM;

	if (!s)
		goto nomem;
	s->base = base;
	s->env = *env;
	TAILQ_INIT(&s->clients);
	TAILQ_INIT(&s->dead);
	TAILQ_INIT(&s->idle);
	s->limits = *limits;
	if (s->limits.max_clients < 1)
		s->limits.max_clients = 1;
	if (s->limits.idle_timeout_ms <= 0)
		s->limits.idle_timeout_ms = 1;
	if (limits->allowed_uids) {
		s->uids = calloc(limits->n_allowed_uids ? limits->n_allowed_uids : 1, sizeof(*s->uids));
		if (!s->uids)
			goto nomem;
		memcpy(s->uids, limits->allowed_uids, limits->n_allowed_uids * sizeof(*s->uids));
		s->limits.allowed_uids = s->uids;
	}
	if (env->key) {
		memcpy(s->key, env->key, LK_AUTH_KEY_BYTES);
		s->env.key = s->key;
	}
	s->n_locks = env->status->n_locks;
	s->outbuf_max = LK_CLIENT_OUTBUF_MAX + s->n_locks * LK_CLIENT_OUTBUF_PER_LOCK;
	s->by_lock = calloc(s->n_locks ? s->n_locks : 1, sizeof(*s->by_lock));
	if (!s->by_lock)
		goto nomem;
	s->path = strdup(path);
	s->reaper = event_new(base, -1, 0, on_reap, s);
	s->close_timer = evtimer_new(base, on_close_timeout, s);
	s->accept_pause = evtimer_new(base, on_accept_resume, s);
	if (!s->path || !s->reaper || !s->close_timer || !s->accept_pause)
		goto nomem;
	lk_sockfile_fd_limit(s->limits.max_clients);
	fd = lk_sockfile_bind(s->path, mode, &s->file, err, errlen);
	if (fd < 0) {
		rc = fd;
		goto fail;
	}
	s->listener = evconnlistener_new(base, on_accept, s,
	                                 LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC,
	                                 LK_SERVER_BACKLOG(s->limits.max_clients), fd);
	if (!s->listener) {
		close(fd);
		unlink(s->path);
		snprintf(err, errlen, "cannot listen on %s", path);
		rc = -EIO;
		goto fail;
	}
	evconnlistener_set_error_cb(s->listener, on_accept_error);
	*ret = s;
	return 0;
nomem:
	snprintf(err, errlen, "out of memory");
fail:
	if (s) {
		s->path = (free(s->path), NULL);
		lk_server_free(s);
	}
	return rc;
}

/* Send a line to every client `want` picks. send_line may drop a slow client; the walk stays
 * valid because dropped clients only move to the dead list, which it does not visit. */
static void send_to(struct lk_server *s, bool (*want)(const struct client *c, size_t i),
                    size_t i, const char *line, size_t len)
{
	struct client *c, *next;

	for (c = TAILQ_FIRST(&s->clients); c; c = next) {
		next = TAILQ_NEXT(c, link);
		if (want(c, i))
			send_line(c, line, len);
	}
}

static bool said_hello(const struct client *c, size_t i)
{
	return c->hello;
}

static bool asked_to_drain(const struct client *c, size_t i)
{
	return c->sess && lk_session_asked_to_drain(c->sess);
}

/* send_line may drop a slow client: that only moves it to the dead list and leaves the
 * subscription lists alone (the session leaves them when the reaper frees it), so the walks stay
 * valid; a dropped client's later sends are ignored. A WATCH * client is on `all` alone as far
 * as delivery goes, so that it gets each line once even if it also named the lock. */
void lk_server_emit_lock(struct lk_server *s, size_t lock_index, const char *line, size_t len)
{
	const struct lk_ptrset *l;

	if (lock_index >= s->n_locks)
		return;
	l = &s->by_lock[lock_index];
	for (size_t k = 0; k < l->n; k++) {
		struct client *c = l->v[k];

		if (!c->watch_all)
			send_line(c, line, len);
	}
	for (size_t k = 0; k < s->all.n; k++)
		send_line(s->all.v[k], line, len);
}

void lk_server_broadcast(struct lk_server *s, const char *line, size_t len)
{
	send_to(s, said_hello, 0, line, len);
}

void lk_server_to_drainers(struct lk_server *s, const char *line, size_t len)
{
	send_to(s, asked_to_drain, 0, line, len);
}

void lk_server_close_all(struct lk_server *s, void (*done)(void *arg), void *arg)
{
	struct timeval tv = ms_tv(LK_CLOSE_FLUSH_MS);
	struct client *c, *next;

	if (s->listener)
		s->listener = (evconnlistener_free(s->listener), NULL);
	s->all_closed = done;
	s->all_closed_arg = arg;
	for (c = TAILQ_FIRST(&s->clients); c; c = next) {
		next = TAILQ_NEXT(c, link);
		close_after_flush(c);
	}
	/* Each client's own timer bounds its flush; the close timer bounds the whole wait. */
	evtimer_add(s->close_timer, &tv);
	event_active(s->reaper, EV_TIMEOUT, 0);
}

void lk_server_count(const struct lk_server *s, size_t *campaign, size_t *watch, size_t *other)
{
	const struct client *c;

	*campaign = *watch = *other = 0;
	TAILQ_FOREACH(c, &s->clients, link) {
		switch (c->sess ? lk_session_kind(c->sess) : LK_SESSION_OTHER) {
		case LK_SESSION_CAMPAIGN: (*campaign)++; break;
		case LK_SESSION_WATCH: (*watch)++; break;
		case LK_SESSION_OTHER: (*other)++; break;
		}
	}
}

json_t *lk_server_status_json(const struct lk_server *s)
{
	json_t *o, *uids = NULL;
	const struct client *c;
	size_t camp, watch, other, waiting = 0;

	if (!s)
		return NULL;
	if (s->limits.allowed_uids) {
		uids = json_array();
		for (size_t i = 0; uids && i < s->limits.n_allowed_uids; i++)
			json_array_append_new(uids, json_integer((json_int_t)s->limits.allowed_uids[i]));
	} else {
		uids = json_null();
	}
	lk_server_count(s, &camp, &watch, &other);
	TAILQ_FOREACH(c, &s->clients, link)
		waiting += !c->hello;
	o = json_pack("{s:I, s:I, s:I, s:o?, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}",
	              "max_clients", (json_int_t)s->limits.max_clients,
	              "client_idle_timeout_ms", (json_int_t)s->limits.idle_timeout_ms,
	              "hello_timeout_ms", (json_int_t)LK_HELLO_TIMEOUT_MS,
	              "allowed_uids", uids,
	              "connected", (json_int_t)s->n_live,
	              "campaign", (json_int_t)camp, "watch", (json_int_t)watch,
	              "other", (json_int_t)other, "awaiting_hello", (json_int_t)waiting,
	              "idle_closed_total", (json_int_t)s->n_idle_closed,
	              "evicted_total", (json_int_t)s->n_evicted,
	              "hello_timeout_total", (json_int_t)s->n_hello_timeouts,
	              "refused_full_total", (json_int_t)s->n_refused_full,
	              "refused_uid_total", (json_int_t)s->n_refused_uid);
	return o;
}

struct lk_server *lk_server_free(struct lk_server *s)
{
	struct client *c;

	if (!s)
		return NULL;
	while ((c = TAILQ_FIRST(&s->clients))) {
		TAILQ_REMOVE(&s->clients, c, link);
		free_client(c);
	}
	while ((c = TAILQ_FIRST(&s->dead))) {
		TAILQ_REMOVE(&s->dead, c, link);
		free_client(c);
	}
	if (s->listener)
		evconnlistener_free(s->listener);
	if (s->path)
		lk_sockfile_remove(s->path, &s->file);
	if (s->reaper)
		event_free(s->reaper);
	if (s->close_timer)
		event_free(s->close_timer);
	if (s->accept_pause)
		event_free(s->accept_pause);
	for (size_t i = 0; s->by_lock && i < s->n_locks; i++)
		lk_ptrset_clear(&s->by_lock[i]);
	free(s->by_lock);
	lk_ptrset_clear(&s->all);
	free(s->uids);
	free(s->path);
	free(s);
	return NULL;
}
