/* The etcd backend's HTTP: libcurl's multi-socket API on the agent's libevent loop (curl
 * says which sockets to watch and when to wake it), one transfer per request, what a
 * finished transfer means (struct lk_etcd_outcome), and the dispatch of completions and of
 * the notifications curl callbacks recorded, after curl_multi_socket_action() returns.
 *
 * A step's transfer gets CURLOPT_TIMEOUT_MS (and the connect timeout) = what is left of the
 * operation's deadline, at most the backend timeout. Watch streams have no total timeout (they
 * are meant to stay open) but must be confirmed within the timeout, and TCP keepalive probes
 * their idle connections.
 *
 * Endpoint host names are resolved by libcurl itself (Debian's build uses its threaded
 * resolver: a short-lived helper thread inside libcurl); CURLOPT_QUICK_EXIT keeps curl from
 * joining that thread when a transfer is aborted mid-lookup, which would block the loop for as
 * long as a slow DNS takes. IP literals need no resolution at all.
 */

#include "locks/etcd_int.h"

#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <malloc.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/event.h>
#include <sodium.h>

/* TCP keepalive on every connection. A watch stream is idle for as long as nobody releases
 * the lock and has no total timeout, so a silently dropped connection (a NAT or conntrack
 * entry expiring, a dead host) is only found by the kernel's probes. */
#define LK_ETCD_KEEPALIVE_IDLE_S   15
#define LK_ETCD_KEEPALIVE_INTVL_S  5
#define LK_ETCD_KEEPALIVE_CNT      3

static const char *const lk_etcd_paths[] = {
	[LK_ETCD_CALL_GRANT] = "/v3/lease/grant",
	[LK_ETCD_CALL_KEEPALIVE] = "/v3/lease/keepalive",
	[LK_ETCD_CALL_REVOKE] = "/v3/lease/revoke",
	[LK_ETCD_CALL_TXN] = "/v3/kv/txn",
	[LK_ETCD_CALL_RANGE] = "/v3/kv/range",
	[LK_ETCD_CALL_WATCH] = "/v3/watch",
	[LK_ETCD_CALL_AUTH] = "/v3/auth/authenticate",
	[LK_ETCD_CALL_STATUS] = "/v3/maintenance/status",
};

/* One socket curl asked us to watch. */
struct lk_etcd_sock {
	TAILQ_ENTRY(lk_etcd_sock) link;
	struct lk_etcd *e;
	curl_socket_t fd;
	struct event *ev;
};

static void lk_etcd_process(struct lk_etcd *e);
static bool lk_etcd_xfer_easy(struct lk_etcd_xfer *x);

/* ---- what a failure means --------------------------------------------------------------- */

/* Curl results that say the endpoint itself is in trouble, as opposed to the request. */
static bool lk_etcd_conn_level(CURLcode res)
{
	switch (res) {
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_CONNECT:
	case CURLE_OPERATION_TIMEDOUT:
	case CURLE_GOT_NOTHING:
	case CURLE_SEND_ERROR:
	case CURLE_RECV_ERROR:
	case CURLE_PARTIAL_FILE:
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_PEER_FAILED_VERIFICATION:
	case CURLE_HTTP2:
	case CURLE_HTTP2_STREAM:
		return true;
	default:
		return false;
	}
}

/* Failures before a single byte of the request could have reached etcd: retrying them on
 * another endpoint cannot apply anything twice. */
static bool lk_etcd_never_sent(CURLcode res)
{
	return res == CURLE_COULDNT_RESOLVE_HOST || res == CURLE_COULDNT_CONNECT ||
	       res == CURLE_SSL_CONNECT_ERROR || res == CURLE_PEER_FAILED_VERIFICATION;
}

/* Which error answers are worth retrying: etcd is electing, overloaded, or timed out inside
 * (Canceled, DeadlineExceeded, ResourceExhausted, Aborted, Unavailable, Unauthenticated after
 * the one re-authentication), or the HTTP status
 * says the trouble is on the server's side. Anything else (a bad request, permission denied)
 * fails the same way again. */
enum lk_reply_status lk_etcd_error_status(long http, int64_t code)
{
	switch (code) {
	case 1: case 4: case 8: case 10: case LK_ETCD_GRPC_UNAVAILABLE:
	case LK_ETCD_GRPC_UNAUTHENTICATED: /* a token that expired again: churn, not a refusal */
		return LK_REPLY_ERROR;
	default:
		break;
	}
	if (http >= 500 || http == 408 || http == 429)
		return LK_REPLY_ERROR;
	return LK_REPLY_FATAL;
}

/* ---- curl <-> libevent ------------------------------------------------------------------ */

static void lk_etcd_sock_event(evutil_socket_t fd, short what, void *arg)
{
	struct lk_etcd *e = arg;
	int flags = ((what & EV_READ) ? CURL_CSELECT_IN : 0) |
	            ((what & EV_WRITE) ? CURL_CSELECT_OUT : 0);
	int running;

	lk_etcd_enter(e);
	if (!e->closing) {
		curl_multi_socket_action(e->multi, fd, flags, &running);
		lk_etcd_process(e);
	}
	lk_etcd_leave(e);
}

static void lk_etcd_timer_event(evutil_socket_t fd, short what, void *arg)
{
	struct lk_etcd *e = arg;
	int running;

	lk_etcd_enter(e);
	if (!e->closing) {
		curl_multi_socket_action(e->multi, CURL_SOCKET_TIMEOUT, 0, &running);
		lk_etcd_process(e);
	}
	lk_etcd_leave(e);
}

static void lk_etcd_sock_free(struct lk_etcd_sock *s)
{
	TAILQ_REMOVE(&s->e->socks, s, link);
	if (s->ev)
		event_free(s->ev);
	free(s);
}

/* CURLMOPT_SOCKETFUNCTION: keep one persistent libevent event per socket in step with what
 * curl wants to wait for. Runs inside curl: it only touches events. */
static int lk_etcd_sock_cb(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
	struct lk_etcd *e = userp;
	struct lk_etcd_sock *s = socketp;
	short kind;

	if (what == CURL_POLL_REMOVE) {
		if (s) {
			curl_multi_assign(e->multi, fd, NULL);
			lk_etcd_sock_free(s);
		}
		return 0;
	}
	kind = EV_PERSIST | ((what & CURL_POLL_IN) ? EV_READ : 0) |
	       ((what & CURL_POLL_OUT) ? EV_WRITE : 0);
	if (!s) {
		s = calloc(1, sizeof(*s));
		if (!s)
			return -1;
		s->e = e;
		s->fd = fd;
		TAILQ_INSERT_TAIL(&e->socks, s, link);
		curl_multi_assign(e->multi, fd, s);
	} else if (s->ev) {
		event_free(s->ev);
		s->ev = NULL;
	}
	s->ev = event_new(e->base, fd, kind, lk_etcd_sock_event, e);
	if (!s->ev || event_add(s->ev, NULL) < 0)
		return -1;
	return 0;
}

/* CURLMOPT_TIMERFUNCTION: curl never wants to be called from inside itself, so even a zero
 * timeout goes through the loop. */
static int lk_etcd_timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
	struct lk_etcd *e = userp;
	struct timeval tv;

	if (timeout_ms < 0) {
		evtimer_del(e->timer);
		return 0;
	}
	lk_etcd_timeval(&tv, timeout_ms);
	return evtimer_add(e->timer, &tv) < 0 ? -1 : 0;
}

static int lk_etcd_sockopt_cb(void *arg, curl_socket_t fd, curlsocktype purpose)
{
	int on = 1, idle = LK_ETCD_KEEPALIVE_IDLE_S, intvl = LK_ETCD_KEEPALIVE_INTVL_S;
	int cnt = LK_ETCD_KEEPALIVE_CNT;

	/* Best effort: without it a dead peer is found later, not never (streams still end when
	 * the endpoint fails over or the kernel gives up). */
	if (purpose == CURLSOCKTYPE_IPCXN) {
		(void)setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof(on));
		(void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
		(void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl));
		(void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
	}
	return CURL_SOCKOPT_OK;
}

/* curl's multi handle on e's loop, and the timer curl asks for. Returns 0, -ENOMEM, or -EIO
 * if libcurl refuses the callbacks; lk_etcd_http_cleanup() frees what it made, on failure too. */
int lk_etcd_http_init(struct lk_etcd *e)
{
	e->timer = evtimer_new(e->base, lk_etcd_timer_event, e);
	e->multi = curl_multi_init();
	if (!e->timer || !e->multi)
		return -ENOMEM;
	if (curl_multi_setopt(e->multi, CURLMOPT_SOCKETFUNCTION, lk_etcd_sock_cb) != CURLM_OK ||
	    curl_multi_setopt(e->multi, CURLMOPT_SOCKETDATA, e) != CURLM_OK ||
	    curl_multi_setopt(e->multi, CURLMOPT_TIMERFUNCTION, lk_etcd_timer_cb) != CURLM_OK ||
	    curl_multi_setopt(e->multi, CURLMOPT_TIMERDATA, e) != CURLM_OK ||
	    /* curl's default keeps four idle connections per transfer it has seen: after a burst
	     * of watch streams (every lock campaigning at start), thousands of sockets and their
	     * buffers, idle for the agent's life. Requests need at most LK_ETCD_MAX_RUNNING. */
	    curl_multi_setopt(e->multi, CURLMOPT_MAXCONNECTS, (long)LK_ETCD_MAX_IDLE_CONNS)
	    != CURLM_OK)
		return -EIO;
	return 0;
}

void lk_etcd_http_cleanup(struct lk_etcd *e)
{
	struct lk_etcd_sock *s;

	/* Closes pooled connections, telling lk_etcd_sock_cb to drop their events. */
	if (e->multi)
		curl_multi_cleanup(e->multi);
	while ((s = TAILQ_FIRST(&e->socks)))
		lk_etcd_sock_free(s);
	if (e->timer)
		event_free(e->timer);
}

/* ---- transfers -------------------------------------------------------------------------- */

bool lk_etcd_append(struct lk_etcd_xfer *x, const char *data, size_t n, size_t cap)
{
	size_t want;
	char *p;

	if (n > cap || x->resp_len > cap - n)
		return false;
	want = x->resp_len + n + 1;
	if (want > x->resp_cap) {
		size_t c = x->resp_cap ? x->resp_cap : LK_ETCD_RESPONSE_INITIAL;

		while (c < want)
			c *= 2;
		p = realloc(x->resp, c);
		if (!p)
			return false;
		x->resp = p;
		x->resp_cap = c;
	}
	memcpy(x->resp + x->resp_len, data, n);
	x->resp_len += n;
	x->resp[x->resp_len] = '\0';
	return true;
}

/* CURLOPT_WRITEFUNCTION for everything but watch streams: collect the body, capped. */
static size_t lk_etcd_write_cb(char *data, size_t size, size_t nmemb, void *arg)
{
	struct lk_etcd_xfer *x = arg;
	size_t n = size * nmemb;

	if (!lk_etcd_append(x, data, n, LK_ETCD_MAX_RESPONSE)) {
		x->too_big = true; /* or out of memory: either way, give up on this answer */
		return 0;
	}
	return n;
}

static void lk_etcd_xfer_free(struct lk_etcd_xfer *x)
{
	if (!x)
		return;
	if (x->easy)
		curl_easy_cleanup(x->easy);
	/* One of them carries the auth token. */
	for (struct curl_slist *h = x->headers; h; h = h->next)
		sodium_memzero(h->data, strlen(h->data));
	curl_slist_free_all(x->headers);
	if (x->body) {
		if (x->secret)
			sodium_memzero(x->body, strlen(x->body));
		free(x->body);
	}
	free(x->resp);
	free(x->batch);
	free(x);
}

/* Take the transfer away from curl (it may be running: that aborts it) and from our list. */
/* Hand queued requests to curl while slots are free. Never from inside a curl callback: the
 * callers are completions and aborts, which run outside them. */
static void lk_etcd_xfer_dequeue(struct lk_etcd *e)
{
	struct lk_etcd_xfer *x;

	/* A burst (every lock acquiring at start, or again after an outage) has drained: the
	 * memory its requests held is free, but the heap keeps it resident unless told. */
	if (TAILQ_EMPTY(&e->xqueue) && e->queued_peak > LK_ETCD_MAX_RUNNING) {
		e->queued_peak = 0;
		malloc_trim(0);
	}
	while (e->n_running < LK_ETCD_MAX_RUNNING && (x = TAILQ_FIRST(&e->xqueue))) {
		TAILQ_REMOVE(&e->xqueue, x, qlink);
		x->queued = false;
		if (lk_etcd_xfer_easy(x) && curl_multi_add_handle(e->multi, x->easy) == CURLM_OK) {
			e->n_running++;
			continue;
		}
		/* Nothing will ever finish it: it fails from the loop (here we may be inside
		 * another request's completion), as a request curl could not run would. */
		x->failed = true;
		TAILQ_INSERT_TAIL(&e->xfailed, x, qlink);
		event_active(e->timer, EV_TIMEOUT, 0);
	}
}

static void lk_etcd_xfer_detach(struct lk_etcd_xfer *x)
{
	struct lk_etcd *e = x->e;

	if (x->queued) {
		TAILQ_REMOVE(&e->xqueue, x, qlink);
		x->queued = false;
	} else if (x->failed) {
		TAILQ_REMOVE(&e->xfailed, x, qlink);
		x->failed = false;
	} else {
		curl_multi_remove_handle(e->multi, x->easy);
		if (x->kind != LK_ETCD_X_WATCH && e->n_running > 0)
			e->n_running--;
	}
	TAILQ_REMOVE(&e->xfers, x, link);
	if (!e->closing)
		lk_etcd_xfer_dequeue(e);
}

void lk_etcd_xfer_abort(struct lk_etcd_xfer *x)
{
	struct lk_etcd *e = x->e;

	lk_etcd_xfer_detach(x);
	if (x == e->auth_x)
		e->auth_x = NULL;
	if (x == e->probe_x)
		e->probe_x = NULL;
	if (x->op)
		x->op->xfer = NULL;
	if (x->lease && x->lease->x == x)
		x->lease->x = NULL;
	if (x->kind == LK_ETCD_X_BATCH)
		lk_etcd_batch_abort(x);
	if (x->k && x->k->wx == x)
		x->k->wx = NULL;
	lk_etcd_xfer_free(x);
}

/* Give x its curl handle, for the current endpoint and token: done when it leaves the queue,
 * not when it joins it, for a curl handle with its buffers is ~25 KB and a burst queues one
 * request per lock (10,000 of them held 250 MB). Returns false out of memory. */
static bool lk_etcd_xfer_easy(struct lk_etcd_xfer *x)
{
	char url[LK_BACKEND_MAX_ENDPOINT_LEN + 32];
	struct lk_etcd *e = x->e;
	enum lk_etcd_xfer_kind kind = x->kind;
	int64_t timeout_ms = x->timeout_ms;
	struct curl_slist *h;
	CURL *c;

	x->endpoint = e->cur;
	x->token_gen = e->token_gen;
	x->rev_floor = e->max_revision;
	x->easy = c = curl_easy_init();
	if (!c)
		return false;

	snprintf(url, sizeof(url), "%s%s", e->endpoints[e->cur], lk_etcd_paths[x->call]);
	/* Expect: curl would wait for "100 Continue" before sending a larger body. */
	h = curl_slist_append(NULL, "Content-Type: application/json");
	if (h)
		x->headers = h;
	h = h ? curl_slist_append(h, "Expect:") : NULL;
	/* gRPC metadata "hasleader": a member that loses its leader (a partition, a lost quorum)
	 * ends the stream with "no leader" instead of keeping it open and silent forever. */
	if (h && kind == LK_ETCD_X_WATCH)
		h = curl_slist_append(h, "Grpc-Metadata-hasleader: true");
	if (h && e->token && kind != LK_ETCD_X_AUTH) {
		char auth[LK_ETCD_JSON_MAX_TOKEN + 32];

		snprintf(auth, sizeof(auth), "Authorization: %s", e->token);
		h = curl_slist_append(h, auth);
		sodium_memzero(auth, sizeof(auth));
	}
	if (!h)
		return false;

	if (curl_easy_setopt(c, CURLOPT_URL, url) != CURLE_OK ||
	    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https") != CURLE_OK ||
	    /* A proxy from the environment (http_proxy) has no business between us and etcd. */
	    curl_easy_setopt(c, CURLOPT_PROXY, "") != CURLE_OK ||
	    curl_easy_setopt(c, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1) != CURLE_OK ||
	    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L) != CURLE_OK ||
	    /* A transfer aborted (timeout, free) while its name is still being resolved must not
	     * make curl join the resolver thread: that would stall the loop for as long as DNS
	     * takes, renew deadline included (I4). */
	    curl_easy_setopt(c, CURLOPT_QUICK_EXIT, 1L) != CURLE_OK ||
	    /* etcd's answers and watch events are a few hundred bytes: curl's 16 KB receive
	     * buffer, per transfer and per watch stream, is most of a follower's memory. */
	    curl_easy_setopt(c, CURLOPT_BUFFERSIZE, (long)LK_ETCD_RECV_BUFFER) != CURLE_OK ||
	    curl_easy_setopt(c, CURLOPT_HTTPHEADER, x->headers) != CURLE_OK ||
	    curl_easy_setopt(c, CURLOPT_POSTFIELDS, x->body) != CURLE_OK ||
	    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(x->body)) != CURLE_OK ||
	    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION,
	                     kind == LK_ETCD_X_WATCH ? lk_etcd_watch_write_cb : lk_etcd_write_cb)
	    != CURLE_OK ||
	    curl_easy_setopt(c, CURLOPT_WRITEDATA, x) != CURLE_OK ||
	    curl_easy_setopt(c, CURLOPT_PRIVATE, x) != CURLE_OK ||
	    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, x->errbuf) != CURLE_OK ||
	    curl_easy_setopt(c, CURLOPT_SOCKOPTFUNCTION, lk_etcd_sockopt_cb) != CURLE_OK ||
	    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS,
	                     (long)(timeout_ms > 0 ? timeout_ms : e->timeout_ms)) != CURLE_OK ||
	    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)timeout_ms) != CURLE_OK)
		return false;
	if ((e->ca_file && curl_easy_setopt(c, CURLOPT_CAINFO, e->ca_file) != CURLE_OK) ||
	    (e->cert_file && curl_easy_setopt(c, CURLOPT_SSLCERT, e->cert_file) != CURLE_OK) ||
	    (e->key_file && curl_easy_setopt(c, CURLOPT_SSLKEY, e->key_file) != CURLE_OK))
		return false;
	return true;
}

/* Start a POST of body (taken, freed on failure too) to the current endpoint. timeout_ms 0
 * means no total timeout (watch streams); connecting is always bounded by the backend's. */
struct lk_etcd_xfer *lk_etcd_xfer_start(struct lk_etcd *e, enum lk_etcd_xfer_kind kind,
                                        enum lk_etcd_call call, char *body, bool secret,
                                        int64_t timeout_ms)
{
	struct lk_etcd_xfer *x;

	x = calloc(1, sizeof(*x));
	if (!x) {
		if (secret)
			sodium_memzero(body, strlen(body));
		free(body);
		return NULL;
	}
	x->e = e;
	x->kind = kind;
	x->call = call;
	x->body = body;
	x->secret = secret;
	x->timeout_ms = timeout_ms;
	x->endpoint = e->cur; /* what a failure names, if it never reaches curl */

	/* Starts nothing yet: curl asks for a timer, and the transfer begins from the loop. A
	 * lock operation's request beyond LK_ETCD_MAX_RUNNING waits its turn. What keeps tenures
	 * alive never waits behind a burst of acquires: keepalives, the renewals' shared reads,
	 * authentication and the probe; nor does a watch (it would wait for ever behind other
	 * watches). */
	if ((kind == LK_ETCD_X_OP || kind == LK_ETCD_X_REVOKE) &&
	    e->n_running >= LK_ETCD_MAX_RUNNING) {
		x->queued = true;
		TAILQ_INSERT_TAIL(&e->xqueue, x, qlink);
		e->queued_peak++;
	} else if (!lk_etcd_xfer_easy(x) || curl_multi_add_handle(e->multi, x->easy) != CURLM_OK) {
		goto fail;
	} else if (kind != LK_ETCD_X_WATCH) {
		e->n_running++;
	}
	TAILQ_INSERT_TAIL(&e->xfers, x, link);
	return x;

fail:
	lk_etcd_xfer_free(x);
	return NULL;
}

/* A server that refuses our client certificate (or the lack of one) does it after the TLS 1.3
 * handshake looks complete to us, so curl reports whatever the next socket call hit ("Send
 * failure", "getpeername() failed", a reset), not the TLS alert. A new https connection that
 * failed that way before any HTTP answer most likely met such a refusal: say so. */
static bool lk_etcd_tls_dropped(const struct lk_etcd_xfer *x, CURLcode res)
{
	long connects = 0, http = 0;

	if (strncmp(x->e->endpoints[x->endpoint], "https://", 8) != 0)
		return false;
	if (res != CURLE_SEND_ERROR && res != CURLE_RECV_ERROR && res != CURLE_GOT_NOTHING &&
	    res != CURLE_SSL_CONNECT_ERROR)
		return false;
	if (!x->easy)
		return false;
	curl_easy_getinfo(x->easy, CURLINFO_NUM_CONNECTS, &connects);
	curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &http);
	return connects > 0 && http == 0;
}

/* Whether an error says our auth token is no longer good: expired or invalid (Unauthenticated),
 * or issued before an auth change ("revision of auth store is old", InvalidArgument). Both are
 * fixed by a new token; clientv3 does the same. */
bool lk_etcd_stale_token(int64_t code, const char *message)
{
	return code == LK_ETCD_GRPC_UNAUTHENTICATED || strstr(message, "invalid auth token") ||
	       strstr(message, "auth store is old");
}

static void lk_etcd_outcome(const struct lk_etcd_xfer *x, CURLcode res, long http,
                            struct lk_etcd_outcome *o)
{
	const struct lk_etcd *e = x->e;
	struct lk_etcd_error err;
	char text[LK_ETCD_MAX_SHOWN_LEN + 1];

	memset(o, 0, sizeof(*o));
	o->http = http;
	if (x->too_big) {
		o->garbage = true;
		snprintf(o->why, sizeof(o->why), "%s: response larger than %d bytes",
		         e->endpoints[x->endpoint], LK_ETCD_MAX_RESPONSE);
		return;
	}
	if (res != CURLE_OK) {
		o->transport = true;
		o->conn_level = lk_etcd_conn_level(res);
		o->never_sent = lk_etcd_never_sent(res);
		if (res == CURLE_OPERATION_TIMEDOUT && x->kind != LK_ETCD_X_WATCH) {
			snprintf(o->why, sizeof(o->why), "%s timed out after %" PRId64 "ms",
			         e->endpoints[x->endpoint], e->timeout_ms);
		} else {
			lk_backend_shown(text, sizeof(text), x->errbuf[0] ? x->errbuf : curl_easy_strerror(res),
			                 strlen(x->errbuf[0] ? x->errbuf : curl_easy_strerror(res)));
			snprintf(o->why, sizeof(o->why), "%s: %s%s", e->endpoints[x->endpoint], text,
			         lk_etcd_tls_dropped(x, res) ?
			         " (etcd dropped a new TLS connection: does it accept our client "
			         "certificate? check cert_file, key_file and the CA etcd trusts)" : "");
		}
		return;
	}
	if (http >= 200 && http < 300) {
		o->ok = true;
		return;
	}
	if (x->resp && lk_etcd_json_parse_error(x->resp, x->resp_len, &err) == 0) {
		o->code = err.code;
		o->stale_token = lk_etcd_stale_token(err.code, err.message);
		snprintf(o->why, sizeof(o->why), "%s: HTTP %ld: %s", e->endpoints[x->endpoint], http,
		         err.message);
	} else {
		lk_backend_shown(text, sizeof(text), x->resp ? x->resp : "", x->resp_len);
		snprintf(o->why, sizeof(o->why), "%s: HTTP %ld%s%s", e->endpoints[x->endpoint], http,
		         text[0] ? ": " : "", text);
	}
	/* A member that lost its leader (or its quorum) cannot serve: try another. */
	if (o->code == LK_ETCD_GRPC_UNAVAILABLE || http >= 500)
		o->conn_level = true;
}

/* A 2xx body that turned out to be an error object: the same as an error answer. */
void lk_etcd_outcome_error_body(const struct lk_etcd_xfer *x, struct lk_etcd_outcome *o)
{
	struct lk_etcd_error err = { 0 };

	(void)lk_etcd_json_parse_error(x->resp, x->resp_len, &err);
	o->ok = false;
	o->code = err.code;
	o->stale_token = lk_etcd_stale_token(err.code, err.message);
	snprintf(o->why, sizeof(o->why), "%s: %s", x->e->endpoints[x->endpoint],
	         err.message[0] ? err.message : "error response");
	if (o->code == LK_ETCD_GRPC_UNAVAILABLE)
		o->conn_level = true;
}

/* ---- fire and forget -------------------------------------------------------------------- */

/* Revoke a lease nobody will use (the shared leases at the drain's end): its keys go with it
 * at once instead of at the TTL. Failures are ignored: the lease then expires by itself. */
void lk_etcd_revoke(struct lk_etcd *e, int64_t lease)
{
	char *body;

	if (e->closing || lease <= 0 || lk_etcd_json_lease_id(lease, &body) < 0)
		return;
	(void)lk_etcd_xfer_start(e, LK_ETCD_X_REVOKE, LK_ETCD_CALL_REVOKE, body, false,
	                         e->timeout_ms);
}

/* ---- completions ------------------------------------------------------------------------ */

/* Deliver the notifications the curl callbacks recorded. Any hook may free keys or the
 * backend; holding a reference on the current key keeps it, and so its place in the list,
 * valid until we have moved on. */
static void lk_etcd_notify_sweep(struct lk_etcd *e)
{
	struct lk_backend_key *k = TAILQ_FIRST(&e->keys), *next;
	bool reconnected = e->reconnected;

	/* Most turns of the loop owe nothing: a walk of 10,000 keys after every socket event
	 * would make a burst of acquires quadratic. */
	if (!reconnected && !e->notify_any)
		return;
	e->reconnected = false;
	e->notify_any = false;
	if (k)
		k->refs++;
	while (k) {
		if (reconnected && !e->closing && !k->dead && k->notify)
			k->notify(k->notify_arg, LK_NOTICE_RECONNECTED);
		if (k->notify_pending && !e->closing && !k->dead && k->watching && k->notify) {
			k->notify_pending = false;
			k->notify(k->notify_arg, LK_NOTICE_MAYBE_FREE);
		}
		k->notify_pending = false;
		next = TAILQ_NEXT(k, link);
		if (next)
			next->refs++;
		lk_etcd_key_unref(k);
		k = next;
	}
}

static void lk_etcd_xfer_done(struct lk_etcd *e, struct lk_etcd_xfer *x, CURLcode res)
{
	enum lk_etcd_xfer_kind kind;
	struct lk_etcd_outcome o;
	long http = 0;

	if (x->easy)
		curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &http);
	lk_etcd_xfer_detach(x);
	lk_etcd_outcome(x, res, http, &o);
	switch (x->kind) {
	case LK_ETCD_X_OP:
		lk_etcd_op_xfer_done(x->op, x, &o);
		break;
	case LK_ETCD_X_AUTH:
		lk_etcd_auth_done(e, x, &o);
		break;
	case LK_ETCD_X_PROBE:
		lk_etcd_probe_done(e, x, &o);
		break;
	case LK_ETCD_X_WATCH:
		lk_etcd_watch_done(e, x, &o);
		break;
	case LK_ETCD_X_LEASE:
		lk_etcd_lease_done(e, x, &o);
		break;
	case LK_ETCD_X_BATCH:
		lk_etcd_batch_done(e, x, &o);
		break;
	case LK_ETCD_X_REVOKE:
	default:
		break;
	}
	kind = x->kind;
	lk_etcd_xfer_free(x);
	if (kind == LK_ETCD_X_REVOKE)
		lk_etcd_quiesce_check(e);
}

/* After curl ran: dispatch finished transfers, then the notifications curl callbacks
 * recorded. Stops as soon as a callback frees the backend. */
static void lk_etcd_process(struct lk_etcd *e)
{
	char *priv;
	CURLMsg *msg;
	CURLcode res;
	CURL *easy;
	int left;

	struct lk_etcd_xfer *x;

	while (!e->closing && (x = TAILQ_FIRST(&e->xfailed)))
		lk_etcd_xfer_done(e, x, CURLE_OUT_OF_MEMORY);
	while (!e->closing && (msg = curl_multi_info_read(e->multi, &left))) {
		if (msg->msg != CURLMSG_DONE)
			continue;
		easy = msg->easy_handle;
		res = msg->data.result;
		priv = NULL;
		curl_easy_getinfo(easy, CURLINFO_PRIVATE, &priv);
		if (priv)
			lk_etcd_xfer_done(e, (struct lk_etcd_xfer *)(void *)priv, res);
	}
	if (!e->closing && e->watch_ok) {
		e->watch_ok = false;
		lk_etcd_mark_up(e);
	}
	if (!e->closing)
		lk_etcd_notify_sweep(e);
}
