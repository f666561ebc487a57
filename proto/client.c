/* The blocking client of the agent's socket: see client.h.
 *
 * The socket is non-blocking and every wait is a poll(2) against one absolute deadline, so a
 * timeout bounds the whole operation (connect, banner and HELLO together) rather than each
 * syscall. Lines are framed in a fixed read buffer exactly one maximal line long: a line that
 * does not end within it is a protocol error, never a reason to grow.
 *
 * Two situations need bookkeeping beyond "send, read the reply":
 * - Events that arrive while a request waits for its reply are copied into a bounded FIFO,
 *   because the reply and the events share the one line buffer that results borrow.
 * - A request that timed out still gets its reply some day, and replies come in order; the
 *   client counts such stale replies and drops that many before taking one as the answer to
 *   a later request.
 * Once the byte stream can no longer be trusted (EOF, a partial write, a line that is not
 * protocol, an event the queue could not keep) the client is broken: every later call fails
 * with the same error, after the events queued before it have been handed out.
 */
#include "proto/client.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "proto/auth.h"
#include "proto/err.h"

#define LK_CLIENT_DEFAULT_TIMEOUT_MS 5000
/* One maximal line, its '\n' included: a line that has not ended when this is full is too
 * long, whatever comes after. */
#define LK_CLIENT_RBUF_CAP LK_LINE_MAX
/* How long to wait before retrying a connect that found the listen backlog full. */
#define LK_CLIENT_BACKLOG_RETRY_MS 10

#define SOCKET_ENV "LEASEKEEPER_SOCKET"
#define KEY_ENV    "LEASEKEEPER_AUTH_KEY_FILE"

struct queued_line {
	char *line;
	size_t len;
};

/* What this client was told about one lock's tenure here, for the deadline rule. */
struct tenure {
	char lock[LK_LOCK_NAME_MAX + 1];
	uint64_t token;
	int64_t until_ms;     /* our CLOCK_MONOTONIC; 0 once the tenure ended */
	bool stepping_down;   /* STEPDOWN came: no more leader work, but the deadline holds */
};

struct lk_client {
	int fd;
	int broken;          /* 0, or the negative errno every later call returns */
	unsigned stale;      /* replies still due to requests that timed out */
	char *id;
	size_t rlen;
	char rbuf[LK_CLIENT_RBUF_CAP];
	/* The last line read, as received (raw) and split in place by the parser (line). A
	 * returned lk_server_msg borrows line; raw is what an event is queued as. */
	char raw[LK_LINE_MAX + 1];
	size_t rawlen;
	char line[LK_LINE_MAX + 1];
	struct queued_line queue[LK_CLIENT_MAX_QUEUED];
	size_t qhead, qcount;
	bool shared_clock;   /* the banner's mono_ms matched ours: until_mono_ms applies as is */
	struct tenure tenures[LK_CLIENT_MAX_TENURES];
	size_t n_tenures;
};

const char *lk_client_socket_path(const char *explicit_path)
{
	const char *env;

	if (explicit_path && explicit_path[0])
		return explicit_path;
	env = getenv(SOCKET_ENV);
	if (env && env[0])
		return env;
	return LK_CLIENT_DEFAULT_SOCKET;
}

/* ---- time and waiting --------------------------------------------------------------------- */

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* An absolute deadline, or -1 for none. */
static int64_t deadline_in(int timeout_ms)
{
	return timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
}

static int ms_left(int64_t deadline)
{
	int64_t left;

	if (deadline < 0)
		return -1;
	left = deadline - now_ms();
	if (left < 0)
		return 0;
	return left > INT_MAX ? INT_MAX : (int)left;
}

/* Wait until fd is ready for events (or has an error or hangup, which the following read or
 * send reports), or the deadline passes. */
static int wait_fd(int fd, short events, int64_t deadline)
{
	struct pollfd p = {.fd = fd, .events = events};

	for (;;) {
		int n = poll(&p, 1, ms_left(deadline));

		if (n > 0)
			return 0;
		if (n == 0)
			return -ETIMEDOUT;
		if (errno != EINTR)
			return -errno;
	}
}

/* ---- the byte stream ---------------------------------------------------------------------- */

static int client_break(struct lk_client *c, int err)
{
	c->broken = err;
	return err;
}

/* The agent going away and the agent resetting the connection mean the same to a caller:
 * leadership can no longer be proven (I6). */
static int peer_errno(int e)
{
	return e == EPIPE || e == ECONNRESET ? -EPIPE : -e;
}

static int write_all(struct lk_client *c, const char *buf, size_t len, int64_t deadline)
{
	size_t off = 0;
	int r;

	while (off < len) {
		/* MSG_NOSIGNAL: an agent that went away must give us EPIPE, not kill the caller
		 * with SIGPIPE. */
		ssize_t n = send(c->fd, buf + off, len - off, MSG_NOSIGNAL);

		if (n >= 0) {
			off += (size_t)n;
			continue;
		}
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK) {
			r = wait_fd(c->fd, POLLOUT, deadline);
			if (r < 0)
				goto fail;
			continue;
		}
		r = peer_errno(errno);
		goto fail;
	}
	return 0;

fail:
	/* Half a line on the wire cannot be taken back: the agent would read our next request
	 * as its continuation. A timeout before the first byte left is harmless. */
	if (r != -ETIMEDOUT)
		client_break(c, r);
	else if (off > 0)
		client_break(c, -EPIPE);
	return r;
}

/* Read the next line into c->raw (chomped, NUL-terminated). */
static int read_line(struct lk_client *c, int64_t deadline)
{
	for (;;) {
		char *nl = memchr(c->rbuf, '\n', c->rlen);
		ssize_t n;
		int r;

		if (nl) {
			size_t len = (size_t)(nl - c->rbuf) + 1;

			memcpy(c->raw, c->rbuf, len);
			c->rlen -= len;
			memmove(c->rbuf, c->rbuf + len, c->rlen);
			lk_codec_chomp(c->raw, &len);
			c->raw[len] = '\0';
			c->rawlen = len;
			return 0;
		}
		if (c->rlen == sizeof(c->rbuf))
			return client_break(c, -EPROTO);

		r = wait_fd(c->fd, POLLIN, deadline);
		if (r < 0)
			return r == -ETIMEDOUT ? r : client_break(c, r);
		n = read(c->fd, c->rbuf + c->rlen, sizeof(c->rbuf) - c->rlen);
		if (n > 0)
			c->rlen += (size_t)n;
		else if (n == 0)
			return client_break(c, -EPIPE);
		else if (errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK)
			return client_break(c, peer_errno(errno));
	}
}

/* Parse c->raw into c->line; the message borrows c->line. */
static int parse_raw(struct lk_client *c, struct lk_server_msg *m)
{
	memcpy(c->line, c->raw, c->rawlen + 1);
	if (lk_codec_parse_server_msg(c->line, c->rawlen, m) < 0)
		return client_break(c, -EPROTO);
	return 0;
}

/* ---- the deadline rule --------------------------------------------------------------------- */

static struct tenure *find_tenure(struct lk_client *c, const char *lock, bool add)
{
	for (size_t i = 0; i < c->n_tenures; i++)
		if (strcmp(c->tenures[i].lock, lock) == 0)
			return &c->tenures[i];
	if (!add || c->n_tenures == LK_CLIENT_MAX_TENURES)
		return NULL;
	struct tenure *t = &c->tenures[c->n_tenures++];
	snprintf(t->lock, sizeof(t->lock), "%s", lock);
	t->until_ms = 0;
	return t;
}

/* floor(ms * 2 / 3) for any ms >= 0 (the codec parses no sign) without the overflow of
 * ms * 2: the agent controls ttl_ms, and a value past INT64_MAX / 2 made the product wrap to a
 * deadline in the past or, as signed overflow, undefined behaviour (found by fuzzing). The
 * result is at most 2/3 of INT64_MAX, so adding a CLOCK_MONOTONIC reading cannot overflow. */
static int64_t two_thirds(int64_t ms)
{
	return ms / 3 * 2 + ms % 3 * 2 / 3;
}

/* Follow the tenures an event tells of, when it arrives (not when the caller takes it from
 * the queue): a LOST must end leadership even while it waits behind a reply. */
static void track(struct lk_client *c, const struct lk_event *ev, int64_t arrived_ms)
{
	struct tenure *t;
	int64_t until;

	switch (ev->kind) {
	case LK_EV_LEADER:
	case LK_EV_RENEWED:
		/* A client whose clock is not the agent's (or an agent older than the rule) counts
		 * the deadline from the line's arrival, with the agent's default share of the ttl. */
		if (c->shared_clock && ev->until_mono_ms > 0)
			until = ev->until_mono_ms;
		else
			until = arrived_ms + two_thirds(ev->ttl_ms);
		t = find_tenure(c, ev->lock, ev->kind == LK_EV_LEADER);
		if (!t)
			return;
		/* A RENEWED moves only the tenure it belongs to, and only one still running. */
		if (ev->kind == LK_EV_RENEWED && (t->token != ev->token || t->until_ms == 0 ||
		                                  arrived_ms >= t->until_ms))
			return;
		if (ev->kind == LK_EV_LEADER)
			t->stepping_down = false;
		t->token = ev->token;
		t->until_ms = until > 0 ? until : 1;
		return;
	case LK_EV_STEPDOWN:
		t = find_tenure(c, ev->lock, false);
		if (t)
			t->stepping_down = true;
		return;
	case LK_EV_LOST:
	case LK_EV_RELEASED:
	case LK_EV_FOLLOWER:
		t = find_tenure(c, ev->lock, false);
		if (t)
			t->until_ms = 0;
		return;
	case LK_EV_STOP:
		for (size_t i = 0; i < c->n_tenures; i++)
			c->tenures[i].until_ms = 0;
		return;
	default:
		return;
	}
}

static int read_msg(struct lk_client *c, int64_t deadline, struct lk_server_msg *m)
{
	for (;;) {
		int r = read_line(c, deadline);

		if (r < 0)
			return r;
		memcpy(c->line, c->raw, c->rawlen + 1);
		r = lk_codec_parse_server_msg(c->line, c->rawlen, m);
		/* An event newer than this client: ignored, as the protocol asks. */
		if (r == -ENOMSG)
			continue;
		if (r < 0)
			return client_break(c, -EPROTO);
		if (m->kind == LK_MSG_EVENT)
			track(c, &m->ev, now_ms());
		return 0;
	}
}

static const struct tenure *running(const struct lk_client *c, const char *lock)
{
	for (size_t i = 0; i < c->n_tenures; i++)
		if (strcmp(c->tenures[i].lock, lock) == 0)
			return !c->broken && c->tenures[i].until_ms > now_ms() ? &c->tenures[i] : NULL;
	return NULL;
}

bool lk_client_leads(const struct lk_client *c, const char *lock)
{
	const struct tenure *t = running(c, lock);

	return t && !t->stepping_down;
}

int64_t lk_client_until_mono_ms(const struct lk_client *c, const char *lock)
{
	const struct tenure *t = running(c, lock);

	return t ? t->until_ms : 0;
}

int lk_client_deadline_timeout(const struct lk_client *c)
{
	int64_t first = -1, now = now_ms();

	if (c->broken)
		return -1;
	for (size_t i = 0; i < c->n_tenures; i++) {
		int64_t u = c->tenures[i].until_ms;

		if (u > now && (first < 0 || u < first))
			first = u;
	}
	if (first < 0)
		return -1;
	return first - now > INT_MAX ? INT_MAX : (int)(first - now);
}

/* ---- the event queue ---------------------------------------------------------------------- */

static int queue_push(struct lk_client *c)
{
	struct queued_line *q;
	char *copy;

	/* Dropping an event could hide a LOST from a leader; refusing to go on is the safe
	 * answer to an agent (or an app) that lets this many pile up. */
	if (c->qcount == LK_CLIENT_MAX_QUEUED)
		return client_break(c, -EPROTO);
	copy = malloc(c->rawlen + 1);
	if (!copy)
		return client_break(c, -ENOMEM);
	memcpy(copy, c->raw, c->rawlen + 1);
	q = &c->queue[(c->qhead + c->qcount) % LK_CLIENT_MAX_QUEUED];
	q->line = copy;
	q->len = c->rawlen;
	c->qcount++;
	return 0;
}

static int queue_pop(struct lk_client *c, struct lk_server_msg *m)
{
	struct queued_line *q = &c->queue[c->qhead];

	memcpy(c->raw, q->line, q->len + 1);
	c->rawlen = q->len;
	free(q->line);
	q->line = NULL;
	c->qhead = (c->qhead + 1) % LK_CLIENT_MAX_QUEUED;
	c->qcount--;
	return parse_raw(c, m);
}

/* ---- requests ----------------------------------------------------------------------------- */

static int call_until(struct lk_client *c, const struct lk_request *req, int64_t deadline,
                      struct lk_server_msg *reply)
{
	char buf[LK_LINE_MAX + 1];
	struct lk_server_msg m;
	int n, r;

	if (c->broken)
		return c->broken;
	n = lk_codec_format_request(buf, sizeof(buf), req);
	if (n < 0)
		return n;
	r = write_all(c, buf, (size_t)n, deadline);
	if (r < 0)
		return r;

	for (;;) {
		r = read_msg(c, deadline, &m);
		if (r == -ETIMEDOUT)
			c->stale++;
		if (r < 0)
			return r;
		switch (m.kind) {
		case LK_MSG_EVENT:
			r = queue_push(c);
			if (r < 0)
				return r;
			continue;
		case LK_MSG_OK:
		case LK_MSG_ERR:
			if (c->stale > 0) {
				c->stale--;
				continue;
			}
			/* Replies come in order: an OK for another verb means we lost count. */
			if (m.kind == LK_MSG_OK && m.ok_verb != req->verb)
				return client_break(c, -EPROTO);
			*reply = m;
			return 0;
		default:
			return client_break(c, -EPROTO);
		}
	}
}

int lk_client_call(struct lk_client *c, const struct lk_request *req, int timeout_ms,
                   struct lk_server_msg *reply)
{
	return call_until(c, req, deadline_in(timeout_ms), reply);
}

int lk_client_next_event(struct lk_client *c, int timeout_ms, struct lk_server_msg *ev)
{
	int64_t deadline = deadline_in(timeout_ms);
	struct lk_server_msg m;
	int r;

	if (c->qcount > 0) {
		r = queue_pop(c, &m);
		if (r < 0)
			return r;
		*ev = m;
		return 0;
	}
	if (c->broken)
		return c->broken;
	for (;;) {
		r = read_msg(c, deadline, &m);
		if (r < 0)
			return r;
		if (m.kind == LK_MSG_EVENT) {
			*ev = m;
			return 0;
		}
		if ((m.kind == LK_MSG_OK || m.kind == LK_MSG_ERR) && c->stale > 0) {
			c->stale--;
			continue;
		}
		return client_break(c, -EPROTO);
	}
}

/* ---- connecting --------------------------------------------------------------------------- */

static int connect_until(int fd, const struct sockaddr_un *sa, int64_t deadline)
{
	for (;;) {
		int r, soerr = 0;
		socklen_t sl = sizeof(soerr);

		if (connect(fd, (const struct sockaddr *)sa, sizeof(*sa)) == 0)
			return 0;
		if (errno == EINTR)
			continue;
		/* A Unix socket whose listen backlog is full says EAGAIN rather than queueing us:
		 * the agent is busy, not gone, so try again until the deadline. */
		if (errno == EAGAIN) {
			int left = ms_left(deadline);

			if (left == 0)
				return -ETIMEDOUT;
			poll(NULL, 0, left < 0 || left > LK_CLIENT_BACKLOG_RETRY_MS
			              ? LK_CLIENT_BACKLOG_RETRY_MS : left);
			continue;
		}
		if (errno != EINPROGRESS)
			return -errno;
		r = wait_fd(fd, POLLOUT, deadline);
		if (r < 0)
			return r;
		if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0)
			return -errno;
		return soerr ? -soerr : 0;
	}
}

/* Describe a failed read of the banner or the HELLO reply. */
static void handshake_err(int r, const char *what, int timeout_ms, char *err, size_t errlen)
{
	if (r == -ETIMEDOUT)
		lk_set_err(err, errlen, "no %s from the agent within %d ms", what, timeout_ms);
	else if (r == -EPIPE)
		lk_set_err(err, errlen, "the agent closed the connection before its %s", what);
	else if (r == -EPROTO)
		lk_set_err(err, errlen, "the agent's %s is not leasekeeper protocol", what);
	else
		lk_set_err(err, errlen, "reading the agent's %s: %s", what, strerror(-r));
}

int lk_client_connect(const struct lk_client_opts *opts, struct lk_client **ret,
                      char *err, size_t errlen)
{
	static const struct lk_client_opts no_opts;
	struct lk_client *c = NULL;
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	struct lk_server_msg m;
	char nonce[LK_NONCE_HEX_LEN + 1];
	char mac[LK_MAC_HEX_LEN + 1];
	uint8_t key[LK_AUTH_KEY_BYTES];
	const char *path, *key_file = NULL;
	bool auth_hmac, have_mac = false;
	int timeout_ms;
	int64_t deadline;
	int r;

	if (!opts)
		opts = &no_opts;
	timeout_ms = opts->timeout_ms > 0 ? opts->timeout_ms : LK_CLIENT_DEFAULT_TIMEOUT_MS;
	deadline = deadline_in(timeout_ms);
	path = lk_client_socket_path(opts->socket_path);
	if (strlen(path) >= sizeof(sa.sun_path)) {
		lk_set_err(err, errlen, "socket path %s is longer than %zu bytes", path,
		        sizeof(sa.sun_path) - 1);
		return -ENAMETOOLONG;
	}
	memcpy(sa.sun_path, path, strlen(path) + 1);

	c = calloc(1, sizeof(*c));
	if (!c) {
		lk_set_err(err, errlen, "out of memory");
		return -ENOMEM;
	}
	c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (c->fd < 0) {
		r = -errno;
		lk_set_err(err, errlen, "socket: %s", strerror(-r));
		goto fail;
	}
	r = connect_until(c->fd, &sa, deadline);
	if (r < 0) {
		lk_set_err(err, errlen, "cannot connect to %s: %s%s", path, strerror(-r),
		        r == -ENOENT ? " (is the agent running? the path comes from -s, then "
		                       SOCKET_ENV ", then " LK_CLIENT_DEFAULT_SOCKET ")" : "");
		goto fail;
	}

	r = read_msg(c, deadline, &m);
	if (r < 0) {
		handshake_err(r, "banner", timeout_ms, err, errlen);
		goto fail;
	}
	if (m.kind == LK_MSG_ERR) {
		/* Refused before any conversation, e.g. too_many_clients. */
		r = -ECONNREFUSED;
		lk_set_err(err, errlen, "the agent refused the connection: %s%s%s", lk_err_name(m.err),
		        m.err_text[0] ? ": " : "", m.err_text);
		goto fail;
	}
	if (m.kind != LK_MSG_BANNER) {
		r = -EPROTO;
		lk_set_err(err, errlen, "the agent's first line is not a leasekeeper banner");
		goto fail;
	}
	if (m.version != LK_PROTO_VERSION) {
		r = -EPROTONOSUPPORT;
		lk_set_err(err, errlen, "the agent speaks protocol version %u; this client speaks %d",
		        m.version, LK_PROTO_VERSION);
		goto fail;
	}
	c->id = strdup(m.id);
	if (!c->id) {
		r = -ENOMEM;
		lk_set_err(err, errlen, "out of memory");
		goto fail;
	}
	/* Containers of one pod share the kernel's CLOCK_MONOTONIC; a client elsewhere does not,
	 * and falls back to counting deadlines from arrival (PROTOCOL.md, "Deadlines"). */
	c->shared_clock = m.mono_ms > 0 && llabs(m.mono_ms - now_ms()) <= LK_CLIENT_CLOCK_SLACK_MS;
	/* m borrows the line buffer, which the HELLO exchange reuses. */
	memcpy(nonce, m.nonce, sizeof(nonce));
	auth_hmac = m.auth_hmac;

	if (auth_hmac) {
		key_file = opts->auth_key_file;
		if (!key_file || !key_file[0])
			key_file = getenv(KEY_ENV);
		if (key_file && !key_file[0])
			key_file = NULL;
	}
	/* Without a key we still say HELLO: the agent's auth_failed then yields a message that
	 * says what to configure, which beats guessing here. */
	if (key_file) {
		if (lk_auth_init() < 0) {
			r = -EIO;
			lk_set_err(err, errlen, "cannot initialise libsodium");
			goto fail;
		}
		r = lk_auth_load_key(key_file, key, err, errlen);
		if (r < 0)
			goto fail;
		r = lk_auth_mac_hex(key, nonce, mac);
		sodium_memzero(key, sizeof(key));
		if (r < 0) {
			lk_set_err(err, errlen, "the agent's nonce is not 64 hex digits");
			r = -EPROTO;
			goto fail;
		}
		have_mac = true;
	}

	r = call_until(c, &(struct lk_request){ .verb = LK_VERB_HELLO, .version = LK_PROTO_VERSION,
	                                        .client = opts->client_name,
	                                        .mac = have_mac ? mac : NULL },
	               deadline, &m);
	if (r == -EINVAL || r == -ENOSPC) {
		lk_set_err(err, errlen, "client name \"%.64s\" is not one short word of printable ASCII",
		        opts->client_name);
		goto fail;
	}
	if (r < 0) {
		handshake_err(r, "answer to HELLO", timeout_ms, err, errlen);
		goto fail;
	}
	if (m.kind == LK_MSG_ERR) {
		r = -ECONNREFUSED;
		if (m.err == LK_ERR_AUTH_FAILED && !key_file)
			lk_set_err(err, errlen, "the agent requires authentication (auth=hmac) and no key "
			        "is configured: set " KEY_ENV " to a file holding the agent's key "
			        "(its auth_key_file)");
		else if (m.err == LK_ERR_AUTH_FAILED)
			lk_set_err(err, errlen, "the agent rejected our MAC: the key in %s is not the "
			        "agent's auth_key_file", key_file);
		else
			lk_set_err(err, errlen, "the agent refused HELLO: %s%s%s", lk_err_name(m.err),
			        m.err_text[0] ? ": " : "", m.err_text);
		goto fail;
	}

	*ret = c;
	return 0;

fail:
	sodium_memzero(key, sizeof(key));
	lk_client_free(c);
	return r;
}

/* ---- accessors ---------------------------------------------------------------------------- */

int lk_client_fd(const struct lk_client *c)
{
	return c->fd;
}

int lk_client_has_queued(const struct lk_client *c)
{
	/* A complete line already in the read buffer counts: the socket would not poll readable
	 * for it, and a caller that polled first would wait for nothing. A broken client counts
	 * too, so that the caller comes and collects the error. */
	return c->qcount > 0 || memchr(c->rbuf, '\n', c->rlen) != NULL || c->broken != 0;
}

const char *lk_client_agent_id(const struct lk_client *c)
{
	return c->id;
}

struct lk_client *lk_client_free(struct lk_client *c)
{
	if (!c)
		return NULL;
	while (c->qcount > 0) {
		free(c->queue[c->qhead].line);
		c->qhead = (c->qhead + 1) % LK_CLIENT_MAX_QUEUED;
		c->qcount--;
	}
	if (c->fd >= 0)
		close(c->fd);
	free(c->id);
	free(c);
	return NULL;
}
