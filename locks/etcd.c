/* The etcd v3 backend: etcd's JSON gateway over libcurl's multi-socket API, driven
 * by the agent's libevent loop. No thread of ours, no blocking call: curl tells us which sockets
 * to watch and when to wake it (lk_etcd_sock_cb, lk_etcd_timer_cb), and finished transfers are
 * collected with curl_multi_info_read() after every curl_multi_socket_action().
 *
 * The files of this backend share locks/etcd_int.h, and nothing else includes it:
 *   etcd.c          keys, readiness, the cluster seen and the hold-off it implies (I10),
 *                   the vtable, lk_etcd_new() and free;
 *   etcd_watch.c    one watch stream per watching key;
 *   etcd_json.c     the JSON mapping, without I/O (unit-tested on its own).
 *
 * The lock protocol. A tenure is identified by the key's create_revision (and its lease); its
 * token is base + create_revision, where the base is the value of the key "<key>:fence",
 * seeded from the wall clock in microseconds whenever it is missing. Revisions increase within
 * one cluster, and a cluster rebuilt empty starts again at 1 but also without the fence key,
 * which is then seeded with a far larger base: tokens are never issued twice.
 *   acquire = range (a held key costs a follower no write) + lease grant (validity counts from
 *             its send time) + one txn "if the key does not exist, put identity attached to the
 *             lease and seed the fence key if it is missing; read back both"; a lost race
 *             revokes the unused lease.
 *   renew   = lease keepalive (validity from its send time) + range to prove the key is still
 *             the one created at the tenure's create_revision, still on our lease.
 *   release = txn "delete if create_revision == the tenure's (and lease == ours)" + revoke of
 *             the tenure's lease.
 *   watch   = a streaming POST /v3/watch per watching key; a DELETE wakes the follower.
 * A lock operation is a short chain of HTTP requests (struct lk_etcd_op). Each request gets
 * the whole backend timeout of its own: on a link with a 400ms round trip a three-request
 * acquire must not share one second between its steps (it would never succeed).
 *
 * Wiped and replaced clusters (I10): every answer's header carries the cluster id and the
 * revision. Another cluster id than the one seen before, or a linearizable read or txn that
 * answers with a revision below the highest one seen, means the data may have lost tenures it
 * granted: holdoff_until() then holds new tenures off for one ttl from that moment, every key
 * hears LK_NOTICE_RECONNECTED (a leader re-proves its tenure at once), and the next acquire of
 * each key overwrites its fence key with the wall clock, so that a cluster restored from an
 * older snapshot (whose fence and revisions are old) does not reissue tokens either.
 * Keepalive, grant and status answers come from whichever member answers and may lag: only
 * their cluster id counts.
 *
 * Orphans: an acquire txn that got no answer (timeout, broken connection) may still have
 * created the key. The key remembers that, and the next acquire that finds the key held under
 * its own identity by a tenure it never reported deletes exactly that key revision (txn
 * compare create_revision and lease), revokes its lease, and goes on acquiring.
 *
 * Unlike Redis there is no connection to keep: curl pools connections per transfer. What the
 * backend keeps instead is the current endpoint (failed over on connection-level errors), the
 * auth token, a readiness flag with a probe that retries with backoff while etcd is
 * unreachable, and one watch stream per watching key, resumed with backoff when it breaks.
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
 *
 * curl_global_init() runs once, in the first lk_etcd_new(); curl_global_cleanup() never runs.
 * It may only run when no curl handle is left anywhere in the process, which this file cannot
 * know (another etcd backend, a backend created later, other code using curl); the global
 * state it would free stays reachable, so LeakSanitizer does not count it, and exiting
 * reclaims it anyway.
 */

#include "locks/etcd_int.h"

#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

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

static const char *const lk_etcd_step_names[] = {
	[LK_ETCD_STEP_PEEK] = "acquire read",
	[LK_ETCD_STEP_GRANT] = "lease grant",
	[LK_ETCD_STEP_CREATE] = "acquire txn",
	[LK_ETCD_STEP_KEEPALIVE] = "lease keepalive",
	[LK_ETCD_STEP_CHECK] = "renew range",
	[LK_ETCD_STEP_DELETE] = "release txn",
	[LK_ETCD_STEP_RECLAIM] = "orphan delete txn",
};

static const char *const lk_etcd_op_names[] = {
	[LK_ETCD_ACQUIRE] = "acquire",
	[LK_ETCD_RENEW] = "renew",
	[LK_ETCD_RELEASE] = "release",
};

/* One socket curl asked us to watch. */
struct lk_etcd_sock {
	TAILQ_ENTRY(lk_etcd_sock) link;
	struct lk_etcd *e;
	curl_socket_t fd;
	struct event *ev;
};

static bool lk_etcd_curl_ready;

static void lk_etcd_finalize(struct lk_etcd *e);
static void lk_etcd_process(struct lk_etcd *e);
static int lk_etcd_op_send(struct lk_etcd_op *op);
static void lk_etcd_op_parsed(struct lk_etcd_op *op, struct lk_etcd_xfer *x,
                              struct lk_etcd_outcome *o);

/* ---- small helpers ---------------------------------------------------------------------- */

void lk_etcd_enter(struct lk_etcd *e)
{
	e->depth++;
}

void lk_etcd_leave(struct lk_etcd *e)
{
	if (--e->depth == 0 && e->closing)
		lk_etcd_finalize(e);
}

void lk_etcd_log(struct lk_etcd *e, enum lk_backend_log_level level, const char *fmt, ...)
{
	char msg[LK_ETCD_MAX_LOG_LEN];
	va_list ap;

	if (!e->b.hooks.log || e->closing)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	e->b.hooks.log(e->b.hooks.arg, &e->b, level, msg);
}

/* A stored value as a holder identity: NULL when it is not something we could show safely
 * (too long, or bytes that would break a log line or a protocol line). */
static const char *lk_etcd_holder(const struct lk_etcd_kv *kv)
{
	if (kv->value_too_long || kv->value_len == 0 || kv->value_len > LK_ETCD_MAX_IDENTITY_LEN)
		return NULL;
	for (size_t i = 0; i < kv->value_len; i++)
		if ((unsigned char)kv->value[i] <= 0x20 || (unsigned char)kv->value[i] >= 0x7f)
			return NULL;
	return kv->value;
}

void lk_etcd_timeval(struct timeval *tv, int64_t ms)
{
	if (ms < 0)
		ms = 0;
	tv->tv_sec = (time_t)(ms / 1000);
	tv->tv_usec = (suseconds_t)((ms % 1000) * 1000);
}

bool lk_etcd_need_auth(const struct lk_etcd *e)
{
	return e->username && !e->token;
}

/* Forget the auth token (expired, or replaced): the next request authenticates first. */
void lk_etcd_drop_token(struct lk_etcd *e)
{
	if (e->token) {
		sodium_memzero(e->token, strlen(e->token));
		free(e->token);
		e->token = NULL;
	}
}

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
static enum lk_reply_status lk_etcd_error_status(long http, int64_t code)
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

/* ---- readiness, endpoints --------------------------------------------------------------- */

static void lk_etcd_mark_up(struct lk_etcd *e)
{
	if (e->ready || e->closing)
		return;
	e->ready = true;
	e->attempt = 0;
	event_del(e->probe);
	lk_etcd_log(e, LK_BLOG_INFO, "%s %s", e->was_ready ? "reconnected to" : "connected to",
	            e->endpoints[e->cur]);
	e->was_ready = true;
	e->outage = false;
	/* After an outage or a failover the member answering may be another one, or another
	 * cluster: a leader re-proves its tenure, a follower looks again (I10). */
	e->reconnected = true;
}

/* ---- the cluster answering (I10) ------------------------------------------------------------ */

/* What an answer's header says about the cluster behind it (I10). ordered: the answer comes
 * from a linearizable request (a range or a txn), so its revision is at least that of every
 * answer before it, unless the data went back. Returns true if this answer shows that the
 * cluster was replaced (wiped, or restored from an older snapshot): hold-off from now on. */
static bool lk_etcd_seen(struct lk_etcd *e, uint64_t cluster_id, int64_t revision, bool ordered)
{
	struct lk_backend_key *k;
	char why[LK_ETCD_MAX_LOG_LEN];

	if (e->closing)
		return false;
	if (cluster_id && e->cluster_id && cluster_id != e->cluster_id) {
		snprintf(why, sizeof(why), "etcd cluster id changed from %" PRIx64 " to %" PRIx64
		         ": the old cluster's tenures may still run", e->cluster_id, cluster_id);
	} else if (ordered && revision > 0 && revision < e->max_revision) {
		snprintf(why, sizeof(why), "etcd revision went back from %" PRId64 " to %" PRId64
		         " (wiped or restored): tenures it granted may be lost", e->max_revision,
		         revision);
	} else {
		if (cluster_id)
			e->cluster_id = cluster_id;
		if (ordered && revision > e->max_revision)
			e->max_revision = revision;
		return false;
	}
	if (cluster_id)
		e->cluster_id = cluster_id;
	e->max_revision = ordered ? revision : 0;
	e->replaced = true;
	e->reached_ns = lk_mono_ns();
	snprintf(e->replaced_why, sizeof(e->replaced_why), "%s", why);
	e->reconnected = true;
	TAILQ_FOREACH(k, &e->keys, link) {
		k->refence = true;
		/* A stream resumed after the old cluster's revisions would wait for the new one to
		 * get there, hearing none of its deletions meanwhile: start over from now. */
		k->wlast = 0;
		if (!k->dead && k->watching && k->wx) {
			lk_etcd_watch_stop(k);
			lk_etcd_watch_start(k);
		}
	}
	lk_etcd_log(e, LK_BLOG_WARN, "%s at %s", why, e->endpoints[e->cur]);
	return true;
}

/* Something failed the way an unreachable etcd fails (why names the endpoint): not ready until
 * a request succeeds again. A probe retries with backoff meanwhile, so that readiness comes
 * back without waiting for the locks' own retries, and the outage is logged once, not per
 * request. */
void lk_etcd_mark_down(struct lk_etcd *e, const char *why)
{
	struct timeval tv;
	int64_t delay;
	bool warn;

	if (e->closing)
		return;
	e->ready = false;
	if (evtimer_pending(e->probe, NULL) || e->probe_x || e->auth_x)
		return;
	delay = lk_backoff_ms(e->attempt, LK_ETCD_BACKOFF_BASE_MS, LK_ETCD_BACKOFF_CAP_MS);
	if (e->attempt < LK_ETCD_MAX_ATTEMPT)
		e->attempt++;
	lk_etcd_timeval(&tv, delay);
	evtimer_add(e->probe, &tv);
	warn = !e->outage;
	e->outage = true;
	lk_etcd_log(e, warn ? LK_BLOG_WARN : LK_BLOG_DEBUG,
	            "etcd unavailable: %s; retrying in %" PRId64 "ms", why, delay);
}

/* Endpoint idx failed at the connection level: later requests go to the next one. Only the
 * first failure of the current endpoint switches, so a burst of failures from one outage
 * does not skip over healthy endpoints. Watch streams on the failed endpoint move too: a
 * frozen member keeps their TCP connections alive forever. */
void lk_etcd_endpoint_failed(struct lk_etcd *e, size_t idx, const char *why)
{
	struct lk_backend_key *k;

	if (e->closing || e->n_endpoints < 2 || idx != e->cur)
		return;
	e->cur = (e->cur + 1) % e->n_endpoints;
	lk_etcd_log(e, LK_BLOG_WARN, "endpoint %s failed: %s; switching to %s", e->endpoints[idx],
	            why, e->endpoints[e->cur]);
	TAILQ_FOREACH(k, &e->keys, link) {
		if (!k->dead && k->watching && k->wx && k->wx->endpoint == idx) {
			lk_etcd_watch_stop(k);
			lk_etcd_watch_start(k);
		}
	}
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
	free(x);
}

/* Take the transfer away from curl (it may be running: that aborts it) and from our list. */
static void lk_etcd_xfer_detach(struct lk_etcd_xfer *x)
{
	struct lk_etcd *e = x->e;

	curl_multi_remove_handle(e->multi, x->easy);
	TAILQ_REMOVE(&e->xfers, x, link);
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
	if (x->k && x->k->wx == x)
		x->k->wx = NULL;
	lk_etcd_xfer_free(x);
}

/* Start a POST of body (taken, freed on failure too) to the current endpoint. timeout_ms 0
 * means no total timeout (watch streams); connecting is always bounded by the backend's. */
struct lk_etcd_xfer *lk_etcd_xfer_start(struct lk_etcd *e, enum lk_etcd_xfer_kind kind,
                                        enum lk_etcd_call call, char *body, bool secret,
                                        int64_t timeout_ms)
{
	char url[LK_ETCD_MAX_ENDPOINT_LEN + 32];
	struct lk_etcd_xfer *x;
	struct curl_slist *h;
	CURL *c;

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
	x->endpoint = e->cur;
	x->token_gen = e->token_gen;
	x->easy = c = curl_easy_init();
	if (!c)
		goto fail;

	snprintf(url, sizeof(url), "%s%s", e->endpoints[e->cur], lk_etcd_paths[call]);
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
		goto fail;

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
		goto fail;
	if ((e->ca_file && curl_easy_setopt(c, CURLOPT_CAINFO, e->ca_file) != CURLE_OK) ||
	    (e->cert_file && curl_easy_setopt(c, CURLOPT_SSLCERT, e->cert_file) != CURLE_OK) ||
	    (e->key_file && curl_easy_setopt(c, CURLOPT_SSLKEY, e->key_file) != CURLE_OK))
		goto fail;

	/* Starts nothing yet: curl asks for a timer, and the transfer begins from the loop. */
	if (curl_multi_add_handle(e->multi, c) != CURLM_OK)
		goto fail;
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
static void lk_etcd_outcome_error_body(const struct lk_etcd_xfer *x, struct lk_etcd_outcome *o)
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

/* Revoke a lease nobody will use: an acquire that lost the race, a tenure that ended. Its key
 * (if any) goes with it at once instead of at the TTL. Failures are ignored: the lease then
 * expires by itself. */
static void lk_etcd_revoke(struct lk_etcd *e, int64_t lease)
{
	char *body;

	if (e->closing || lease <= 0 || lk_etcd_json_lease_id(lease, &body) < 0)
		return;
	(void)lk_etcd_xfer_start(e, LK_ETCD_X_REVOKE, LK_ETCD_CALL_REVOKE, body, false,
	                         e->timeout_ms);
}

/* A tenure nobody was told of and nobody will renew: release it as a release would (so that
 * the marker says "released" and the next replica need not wait), then revoke its lease,
 * whatever the txn's fate: fire and forget. */
static void lk_etcd_give_back(struct lk_etcd *e, const struct lk_backend_key *k, int64_t rev,
                              int64_t lease)
{
	struct lk_etcd_xfer *x = NULL;
	char *body;

	if (!e->closing && lk_etcd_json_txn_delete(k->key, k->key_len, k->tkey, k->tkey_len, rev,
	                                           lease, &body) == 0)
		x = lk_etcd_xfer_start(e, LK_ETCD_X_REVOKE, LK_ETCD_CALL_TXN, body, false,
		                       e->timeout_ms);
	if (x)
		x->then_revoke = lease;
	else
		lk_etcd_revoke(e, lease);
}

/* ---- keys ------------------------------------------------------------------------------- */

static void lk_etcd_key_destroy(struct lk_backend_key *k)
{
	TAILQ_REMOVE(&k->e->keys, k, link);
	if (k->wretry)
		event_free(k->wretry);
	if (k->wdeadline)
		event_free(k->wdeadline);
	free(k->key);
	free(k->fkey);
	free(k->tkey);
	free(k->identity);
	free(k);
}

static void lk_etcd_key_unref(struct lk_backend_key *k)
{
	if (--k->refs == 0 && k->dead)
		lk_etcd_key_destroy(k);
}

/* Forget the tenure a key holds once it has ended (released, gone, taken). */
static void lk_etcd_key_end_tenure(struct lk_backend_key *k, uint64_t token)
{
	if (k->token == token)
		k->ended = true;
}

/* Deliver the notifications the curl callbacks recorded. Any hook may free keys or the
 * backend; holding a reference on the current key keeps it, and so its place in the list,
 * valid until we have moved on. */
static void lk_etcd_notify_sweep(struct lk_etcd *e)
{
	struct lk_backend_key *k = TAILQ_FIRST(&e->keys), *next;
	bool reconnected = e->reconnected;

	e->reconnected = false;
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

/* ---- operations ------------------------------------------------------------------------- */

static void lk_etcd_op_free(struct lk_etcd_op *op)
{
	struct lk_etcd *e = op->e;

	if (op->xfer)
		lk_etcd_xfer_abort(op->xfer);
	TAILQ_REMOVE(&e->ops, op, link);
	if (op->defer)
		event_free(op->defer);
	lk_etcd_key_unref(op->k);
	free(op);
}

/* The end of an operation: bookkeeping first, then the callback (which may free anything),
 * then the operation's memory, which nothing else can reach any more. */
static void lk_etcd_op_done(struct lk_etcd_op *op, const struct lk_reply *rep)
{
	struct lk_etcd *e = op->e;
	struct lk_backend_key *k = op->k;

	if (op->xfer)
		lk_etcd_xfer_abort(op->xfer);
	TAILQ_REMOVE(&e->ops, op, link);
	if (op->defer)
		event_free(op->defer);
	if (!e->closing && !k->dead && op->cb)
		op->cb(op->arg, rep);
	lk_etcd_key_unref(k);
	free(op);
}

static void lk_etcd_op_fail(struct lk_etcd_op *op, enum lk_reply_status status,
                            const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void lk_etcd_op_fail(struct lk_etcd_op *op, enum lk_reply_status status,
                            const char *fmt, ...)
{
	char msg[LK_ETCD_MAX_LOG_LEN];
	struct lk_reply rep = { .status = status, .err = msg };
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	/* An acquire that got a lease but no lock: the txn may even have gone through unseen
	 * (a timeout after etcd applied it), and revoking the lease deletes such a key too, so
	 * that nobody holds a lock it does not know about. The revoke may fail as well: the key
	 * remembers that an orphan of ours may exist. */
	if (op->kind == LK_ETCD_ACQUIRE && op->create_unanswered && !op->k->dead)
		op->k->unsure = true;
	if (op->kind == LK_ETCD_ACQUIRE && op->lease)
		lk_etcd_revoke(op->e, op->lease);
	lk_etcd_op_done(op, &rep);
}

static void lk_etcd_op_reply(struct lk_etcd_op *op, enum lk_reply_status status,
                             const char *holder)
{
	struct lk_reply rep = { .status = status, .holder = holder, .token = op->token };

	if (status == LK_REPLY_OK && op->kind != LK_ETCD_RELEASE) {
		rep.sent_ns = op->sent_ns;
		rep.ttl_ms = op->ttl_s * 1000;
	}
	lk_etcd_op_done(op, &rep);
}

/* Send the next step, or report why it could not be sent. */
static void lk_etcd_op_next(struct lk_etcd_op *op)
{
	int rc = lk_etcd_op_send(op);

	if (rc < 0)
		lk_etcd_op_fail(op, LK_REPLY_ERROR, "%s failed: %s", lk_etcd_op_names[op->kind],
		                strerror(-rc));
}

static int lk_etcd_op_send(struct lk_etcd_op *op)
{
	struct lk_etcd *e = op->e;
	struct lk_backend_key *k = op->k;
	enum lk_etcd_call call;
	struct lk_etcd_xfer *x;
	struct timespec now;
	int64_t ttl_s, seed, sent = 0;
	char *body = NULL;
	int rc;

	if (lk_etcd_need_auth(e)) {
		rc = lk_etcd_auth_start(e);
		if (rc == 0)
			op->waiting_auth = true;
		return rc;
	}

	switch (op->step) {
	case LK_ETCD_STEP_GRANT:
		/* Whole seconds, rounded up: etcd may still grant more (its minimum is ~2s). */
		ttl_s = op->ttl_ms / 1000 + (op->ttl_ms % 1000 != 0);
		call = LK_ETCD_CALL_GRANT;
		rc = lk_etcd_json_grant(ttl_s, &body);
		sent = lk_mono_ns();
		break;
	case LK_ETCD_STEP_CREATE:
		/* The base a missing fence key gets: the wall clock in microseconds, which has
		 * grown by far more than any cluster's revision since the fence it replaces was
		 * seeded (as long as the clock does not step back). */
		clock_gettime(CLOCK_REALTIME, &now);
		seed = (int64_t)now.tv_sec * 1000000 + now.tv_nsec / 1000;
		call = LK_ETCD_CALL_TXN;
		rc = lk_etcd_json_txn_acquire(k->key, k->key_len, k->fkey, k->fkey_len, k->tkey,
		                              k->tkey_len, k->identity, k->identity_len, op->lease,
		                              seed, k->refence, &body);
		break;
	case LK_ETCD_STEP_RECLAIM:
		call = LK_ETCD_CALL_TXN;
		/* An orphan was never announced: nobody can still believe in it. */
		rc = lk_etcd_json_txn_delete(k->key, k->key_len, k->tkey, k->tkey_len, op->orphan_rev,
		                             op->orphan_lease, &body);
		break;
	case LK_ETCD_STEP_KEEPALIVE:
		call = LK_ETCD_CALL_KEEPALIVE;
		rc = lk_etcd_json_lease_id(op->lease, &body);
		sent = lk_mono_ns();
		break;
	case LK_ETCD_STEP_PEEK:
		call = LK_ETCD_CALL_TXN;
		rc = lk_etcd_json_txn_peek(k->key, k->key_len, k->tkey, k->tkey_len, &body);
		break;
	case LK_ETCD_STEP_CHECK:
		call = LK_ETCD_CALL_RANGE;
		rc = lk_etcd_json_range(k->key, k->key_len, &body);
		break;
	case LK_ETCD_STEP_DELETE:
	default:
		call = LK_ETCD_CALL_TXN;
		/* The app has stepped down (or never heard of this tenure): "released" lets the next
		 * replica lead at once. */
		rc = lk_etcd_json_txn_delete(k->key, k->key_len, k->tkey, k->tkey_len, op->rev,
		                             op->lease, &body);
		break;
	}
	if (rc < 0)
		return rc;
	x = lk_etcd_xfer_start(e, LK_ETCD_X_OP, call, body, false, e->timeout_ms);
	if (!x)
		return -ENOMEM;
	x->op = op;
	op->xfer = x;
	if (op->step == LK_ETCD_STEP_CREATE)
		op->create_unanswered = true;
	/* Validity is counted from here (I1): the request leaves a little later, which only
	 * makes the proven lease shorter than the real one. */
	if (sent)
		op->sent_ns = sent;
	return 0;
}

/* A step's transfer finished. */
static void lk_etcd_op_xfer_done(struct lk_etcd_op *op, struct lk_etcd_xfer *x,
                                 struct lk_etcd_outcome *o)
{
	struct lk_etcd *e = op->e;
	const char *step = lk_etcd_step_names[op->step];

	op->xfer = NULL;
	if (o->ok) {
		lk_etcd_op_parsed(op, x, o);
		return;
	}
	/* An error answer means the txn was not applied, unless etcd gave up waiting for its
	 * own proposal (canceled, deadline exceeded, a leader lost on the way): that one may
	 * still apply, like a request that got no answer at all. */
	if (op->step == LK_ETCD_STEP_CREATE && !o->transport && o->code != 1 && o->code != 4 &&
	    o->code != LK_ETCD_GRPC_UNAVAILABLE && o->http < 500)
		op->create_unanswered = false;
	if (o->conn_level) {
		lk_etcd_endpoint_failed(e, x->endpoint, o->why);
		lk_etcd_mark_down(e, o->why);
	}
	/* Never sent: safe to try the next endpoint at once, while the operation has time. */
	if (o->transport && o->never_sent && op->hops + 1 < e->n_endpoints) {
		op->hops++;
		if (lk_etcd_op_send(op) == 0)
			return;
	}
	/* Tokens expire (--auth-token-ttl, a restarted member): get a new one, try once more. */
	if (o->stale_token && e->username && !op->reauthed) {
		op->reauthed = true;
		if (x->token_gen == e->token_gen)
			lk_etcd_drop_token(e);
		if (lk_etcd_op_send(op) == 0)
			return;
	}
	if (o->transport)
		lk_etcd_op_fail(op, LK_REPLY_ERROR, "%s failed: %s", step, o->why);
	else if (o->garbage)
		lk_etcd_op_fail(op, LK_REPLY_FATAL, "bad response to %s from %s", step, o->why);
	else
		lk_etcd_op_fail(op, o->stale_token ? LK_REPLY_ERROR
		                                   : lk_etcd_error_status(o->http, o->code),
		                "%s failed: %s", step, o->why);
}

/* Whether kv is an orphan of ours: our identity, after an acquire whose outcome we never
 * learnt, and not the tenure we hold. Without the unsure mark, a key under our identity is
 * left alone: it may belong to another process that was given the same identity. */
static bool lk_etcd_own_orphan(const struct lk_backend_key *k, const struct lk_etcd_kv *kv)
{
	if (!k->unsure || kv->value_too_long || kv->value_len != k->identity_len ||
	    memcmp(kv->value, k->identity, k->identity_len) != 0)
		return false;
	return !(k->lease && !k->ended && kv->create_revision == k->rev);
}

/* Delete exactly our orphan's key revision (compare create_revision and lease), revoke its
 * lease, then go on with the acquire. */
static void lk_etcd_reclaim(struct lk_etcd_op *op, const struct lk_etcd_kv *kv)
{
	op->reclaimed = true;
	op->orphan_rev = kv->create_revision;
	op->orphan_lease = kv->lease;
	op->step = LK_ETCD_STEP_RECLAIM;
	lk_etcd_log(op->e, LK_BLOG_WARN, "key %s holds our own unannounced tenure (create_revision "
	            "%" PRId64 "; an acquire whose answer was lost went through): deleting it",
	            op->k->key, kv->create_revision);
	lk_etcd_op_next(op);
}

/* The key is free, but its tenure marker says the last tenure ended without a release: its
 * lease expired, or was revoked early. etcd 3.4.30 and older and 3.5.12 and older revoke a
 * lease early when their frozen raft leader wakes up (etcd#15247): its holder, whose
 * keepalives the new leader answered, still believes it leads until its renew deadline,
 * which is less than one ttl after its last keepalive was sent, so before one ttl from now.
 * Returns true while that ttl runs, counted from the first time this marker was seen. */
static bool lk_etcd_unreleased(struct lk_etcd_op *op, const struct lk_etcd_peek *pk)
{
	struct lk_backend_key *k = op->k;
	int64_t now = lk_mono_ns();

	if (!pk->tenure_held)
		return false;
	if (k->unreleased_rev != pk->tenure_mod_revision || !k->unreleased_ns) {
		k->unreleased_rev = pk->tenure_mod_revision;
		k->unreleased_ns = now;
	}
	return now - k->unreleased_ns < op->ttl_ms * 1000000;
}

/* Somebody else holds the key (ours would have been reclaimed): a pending orphan of ours can
 * no longer appear while it does. */
static void lk_etcd_held(struct lk_etcd_op *op, const struct lk_etcd_kv *kv)
{
	struct lk_backend_key *k = op->k;

	if (kv->value_len != k->identity_len || memcmp(kv->value, k->identity, k->identity_len))
		k->unsure = false;
	lk_etcd_op_reply(op, LK_REPLY_HELD, lk_etcd_holder(kv));
}

/* A 2xx answer to a step: parse it and move on. */
static void lk_etcd_op_parsed(struct lk_etcd_op *op, struct lk_etcd_xfer *x,
                              struct lk_etcd_outcome *o)
{
	struct lk_etcd *e = op->e;
	struct lk_backend_key *k = op->k;
	const char *step = lk_etcd_step_names[op->step];
	const char *body = x->resp ? x->resp : "";
	char err[LK_ETCD_MAX_ERR_LEN];
	struct lk_etcd_keepalive ka;
	struct lk_etcd_acquired aq;
	struct lk_etcd_grant g;
	struct lk_etcd_range rg;
	struct lk_etcd_peek pk;
	struct lk_etcd_txn t;
	int rc;

	err[0] = '\0';
	switch (op->step) {
	case LK_ETCD_STEP_PEEK:
		rc = lk_etcd_json_parse_peek(body, x->resp_len, k->key, k->key_len, k->tkey,
		                             k->tkey_len, &pk, err, sizeof(err));
		if (rc < 0)
			break;
		lk_etcd_mark_up(e);
		if (lk_etcd_seen(e, pk.cluster_id, pk.revision, true)) {
			lk_etcd_op_fail(op, LK_REPLY_ERROR, "%s", e->replaced_why);
			return;
		}
		if (pk.found && lk_etcd_own_orphan(k, &pk.kv) && !op->reclaimed) {
			lk_etcd_reclaim(op, &pk.kv);
			return;
		}
		/* Held: say so without granting (and revoking) a lease, three raft writes that a
		 * follower retrying every retry_interval would otherwise cost the cluster. Free:
		 * the txn below still decides, so a race with another replica stays safe. */
		if (pk.found) {
			lk_etcd_held(op, &pk.kv);
			return;
		}
		/* Free but not released: held by nobody, and holdoff_until() says until when. */
		if (lk_etcd_unreleased(op, &pk)) {
			lk_etcd_op_reply(op, LK_REPLY_HELD, NULL);
			return;
		}
		op->step = LK_ETCD_STEP_GRANT;
		lk_etcd_op_next(op);
		return;

	case LK_ETCD_STEP_GRANT:
		rc = lk_etcd_json_parse_grant(body, x->resp_len, &g, err, sizeof(err));
		if (rc < 0)
			break;
		lk_etcd_mark_up(e);
		op->lease = g.id;
		op->ttl_s = g.ttl;
		if (lk_etcd_seen(e, g.cluster_id, g.revision, false)) {
			lk_etcd_op_fail(op, LK_REPLY_ERROR, "%s", e->replaced_why);
			return;
		}
		op->step = LK_ETCD_STEP_CREATE;
		lk_etcd_op_next(op);
		return;

	case LK_ETCD_STEP_CREATE:
		rc = lk_etcd_json_parse_acquire(body, x->resp_len, k->key, k->key_len, k->fkey,
		                                k->fkey_len, &aq, err, sizeof(err));
		if (rc < 0)
			break;
		op->create_unanswered = false;
		lk_etcd_mark_up(e);
		/* A tenure on a cluster that was just found replaced must not start: op_fail
		 * revokes the lease, and the key goes with it. */
		if (lk_etcd_seen(e, aq.cluster_id, aq.revision, true)) {
			lk_etcd_op_fail(op, LK_REPLY_ERROR, "%s", e->replaced_why);
			return;
		}
		if (aq.succeeded && aq.found && aq.kv.lease == op->lease &&
		    aq.kv.create_revision > 0) {
			if (!aq.fence_found || aq.fence_bad ||
			    aq.fence > INT64_MAX - aq.kv.create_revision) {
				lk_etcd_op_fail(op, LK_REPLY_FATAL, "fence key %s %s: delete it, and "
				                "the next acquire seeds it again from the clock",
				                k->fkey, aq.fence_found ? "holds no usable token base"
				                                        : "is missing");
				return;
			}
			op->token = (uint64_t)(aq.fence + aq.kv.create_revision);
			if (k->dead) {
				/* Nobody will ever renew or release this: let it go now, not at TTL. */
				lk_etcd_give_back(e, k, aq.kv.create_revision, op->lease);
			} else {
				if (k->lease && k->lease != op->lease)
					lk_etcd_revoke(e, k->lease);
				k->token = op->token;
				k->rev = aq.kv.create_revision;
				k->lease = op->lease;
				k->ended = false;
				k->unsure = false;
				k->refence = false;
			}
			op->lease = 0; /* the tenure's now: op_fail must not revoke it */
			lk_etcd_op_reply(op, LK_REPLY_OK, NULL);
			return;
		}
		if (!aq.succeeded && aq.found) {
			/* Our own acquire that timed out may have landed in between. */
			if (lk_etcd_own_orphan(k, &aq.kv) && !op->reclaimed) {
				lk_etcd_reclaim(op, &aq.kv);
				return;
			}
			lk_etcd_revoke(e, op->lease);
			op->lease = 0;
			lk_etcd_held(op, &aq.kv);
			return;
		}
		lk_etcd_op_fail(op, LK_REPLY_FATAL, "unexpected response to %s: %s", step,
		                aq.succeeded ? "our key reads back wrong" : "failed without a holder");
		return;

	case LK_ETCD_STEP_RECLAIM:
		rc = lk_etcd_json_parse_txn(body, x->resp_len, k->key, k->key_len, &t, err,
		                            sizeof(err));
		if (rc < 0)
			break;
		lk_etcd_mark_up(e);
		if (lk_etcd_seen(e, t.cluster_id, t.revision, true)) {
			lk_etcd_op_fail(op, LK_REPLY_ERROR, "%s", e->replaced_why);
			return;
		}
		/* Deleted, or changed meanwhile (then it was not ours to delete): the create txn
		 * decides either way. */
		lk_etcd_revoke(e, op->orphan_lease);
		k->unsure = false;
		op->step = op->lease ? LK_ETCD_STEP_CREATE : LK_ETCD_STEP_GRANT;
		lk_etcd_op_next(op);
		return;

	case LK_ETCD_STEP_KEEPALIVE:
		rc = lk_etcd_json_parse_keepalive(body, x->resp_len, &ka, err, sizeof(err));
		if (rc < 0)
			break;
		lk_etcd_mark_up(e);
		(void)lk_etcd_seen(e, ka.cluster_id, ka.revision, false);
		if (ka.id != 0 && ka.id != op->lease) {
			lk_etcd_op_fail(op, LK_REPLY_FATAL, "unexpected response to %s: lease %" PRId64,
			                step, ka.id);
			return;
		}
		if (ka.ttl <= 0) {
			/* No TTL: the lease expired or was revoked, and its key went with it. */
			lk_etcd_key_end_tenure(k, op->token);
			lk_etcd_op_reply(op, LK_REPLY_GONE, NULL);
			return;
		}
		op->ttl_s = ka.ttl;
		op->step = LK_ETCD_STEP_CHECK;
		lk_etcd_op_next(op);
		return;

	case LK_ETCD_STEP_CHECK:
		rc = lk_etcd_json_parse_range(body, x->resp_len, k->key, k->key_len, &rg, err,
		                              sizeof(err));
		if (rc < 0)
			break;
		lk_etcd_mark_up(e);
		(void)lk_etcd_seen(e, rg.cluster_id, rg.revision, true);
		/* Same create_revision and still on our lease: our key. A plain put over it (keeps
		 * the create_revision, drops the lease) made it someone else's: it would no longer
		 * expire with us. */
		if (rg.found && rg.kv.create_revision == op->rev && rg.kv.lease == op->lease) {
			lk_etcd_op_reply(op, LK_REPLY_OK, NULL);
			return;
		}
		/* The key is gone or someone else's: our lease only keeps an orphan alive. */
		lk_etcd_revoke(e, op->lease);
		lk_etcd_key_end_tenure(k, op->token);
		lk_etcd_op_reply(op, rg.found ? LK_REPLY_TAKEN : LK_REPLY_GONE,
		                 rg.found ? lk_etcd_holder(&rg.kv) : NULL);
		return;

	case LK_ETCD_STEP_DELETE:
	default:
		rc = lk_etcd_json_parse_txn(body, x->resp_len, k->key, k->key_len, &t, err,
		                            sizeof(err));
		if (rc < 0)
			break;
		lk_etcd_mark_up(e);
		(void)lk_etcd_seen(e, t.cluster_id, t.revision, true);
		/* Deleted or not ours any more: either way the tenure's lease has no use left. */
		lk_etcd_revoke(e, op->lease);
		lk_etcd_key_end_tenure(k, op->token);
		lk_etcd_op_reply(op, t.succeeded ? LK_REPLY_OK : LK_REPLY_GONE, NULL);
		return;
	}

	if (rc == -EPROTO) {
		lk_etcd_outcome_error_body(x, o);
		lk_etcd_op_xfer_done(op, x, o);
		return;
	}
	/* Garbage is not an outage, but it is no answer either: not ready. */
	snprintf(o->why, sizeof(o->why), "bad response to %s from %s: %s", step,
	         e->endpoints[x->endpoint], err);
	lk_etcd_mark_down(e, o->why);
	lk_etcd_op_fail(op, LK_REPLY_FATAL, "%s", o->why);
}

static void lk_etcd_defer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct lk_etcd_op *op = arg;
	struct lk_etcd *e = op->e;

	lk_etcd_enter(e);
	if (!e->closing)
		lk_etcd_op_reply(op, op->deferred, NULL);
	lk_etcd_leave(e);
}

static struct lk_etcd_op *lk_etcd_op_new(struct lk_backend_key *k, enum lk_etcd_op_kind kind,
                                         enum lk_etcd_step step, lk_backend_reply_fn *cb,
                                         void *arg)
{
	struct lk_etcd *e = k->e;
	struct lk_etcd_op *op = calloc(1, sizeof(*op));

	if (!op)
		return NULL;
	op->e = e;
	op->kind = kind;
	op->step = step;
	op->k = k;
	op->cb = cb;
	op->arg = arg;
	k->refs++;
	TAILQ_INSERT_TAIL(&e->ops, op, link);
	return op;
}

/* Start an operation's first step. On failure nothing was accepted and nothing calls back. */
static int lk_etcd_op_start(struct lk_etcd_op *op)
{
	int rc = lk_etcd_op_send(op);

	if (rc < 0) {
		op->cb = NULL;
		op->lease = 0;
		lk_etcd_op_done(op, NULL);
	}
	return rc;
}

/* An answer known without asking etcd, delivered from the loop (never from inside the call
 * that started the operation). */
static int lk_etcd_op_defer(struct lk_etcd_op *op, enum lk_reply_status status)
{
	static const struct timeval now = { 0, 0 };

	op->deferred = status;
	op->defer = evtimer_new(op->e->base, lk_etcd_defer_cb, op);
	if (!op->defer || evtimer_add(op->defer, &now) < 0) {
		op->cb = NULL;
		lk_etcd_op_done(op, NULL);
		return -ENOMEM;
	}
	return 0;
}

/* ---- authentication --------------------------------------------------------------------- */

int lk_etcd_auth_start(struct lk_etcd *e)
{
	char *body;
	int rc;

	if (e->auth_x)
		return 0;
	rc = lk_etcd_json_authenticate(e->username, e->password, e->password_len, &body);
	if (rc < 0)
		return rc;
	e->auth_x = lk_etcd_xfer_start(e, LK_ETCD_X_AUTH, LK_ETCD_CALL_AUTH, body, true,
	                               e->timeout_ms);
	return e->auth_x ? 0 : -ENOMEM;
}

static struct lk_etcd_op *lk_etcd_first_waiting(struct lk_etcd *e)
{
	struct lk_etcd_op *op;

	TAILQ_FOREACH(op, &e->ops, link)
		if (op->waiting_auth)
			return op;
	return NULL;
}

static void lk_etcd_auth_done(struct lk_etcd *e, struct lk_etcd_xfer *x,
                              struct lk_etcd_outcome *o)
{
	enum lk_reply_status status = LK_REPLY_ERROR;
	struct lk_etcd_auth auth;
	struct lk_backend_key *k;
	struct lk_etcd_op *op;
	char err[LK_ETCD_MAX_ERR_LEN];
	const char *why = o->why;
	char *token;
	int rc;

	e->auth_x = NULL;
	if (o->ok) {
		rc = lk_etcd_json_parse_auth(x->resp ? x->resp : "", x->resp_len, &auth, err,
		                             sizeof(err));
		if (rc == 0 && (token = strdup(auth.token))) {
			lk_etcd_drop_token(e);
			e->token = token;
			e->token_gen++;
			e->auth_failing = false;
			sodium_memzero(&auth, sizeof(auth));
			lk_etcd_mark_up(e);
			/* Watches first: starting them calls nobody back, failing an op may. */
			TAILQ_FOREACH(k, &e->keys, link) {
				if (k->wwaiting_auth) {
					k->wwaiting_auth = false;
					if (!k->dead && k->watching && !k->wx)
						lk_etcd_watch_start(k);
				}
			}
			while (!e->closing && !lk_etcd_need_auth(e) && (op = lk_etcd_first_waiting(e))) {
				op->waiting_auth = false;
				lk_etcd_op_next(op);
			}
			return;
		}
		if (rc == -EPROTO) {
			lk_etcd_outcome_error_body(x, o);
		} else {
			o->garbage = true;
			snprintf(o->why, sizeof(o->why), "bad response from %s: %s",
			         e->endpoints[x->endpoint], rc < 0 ? err : "out of memory");
		}
	}

	if (o->conn_level)
		lk_etcd_endpoint_failed(e, x->endpoint, why);
	if (!o->transport)
		status = o->garbage ? LK_REPLY_FATAL : lk_etcd_error_status(o->http, o->code);
	/* A refused password is logged once per run of failures, not per retry. */
	if (!e->auth_failing || o->transport)
		lk_etcd_log(e, o->transport ? LK_BLOG_DEBUG : LK_BLOG_WARN,
		            "authentication as %s failed: %s", e->username, why);
	if (!o->transport)
		e->auth_failing = true;
	lk_etcd_mark_down(e, why);

	TAILQ_FOREACH(k, &e->keys, link) {
		if (k->wwaiting_auth) {
			k->wwaiting_auth = false;
			lk_etcd_watch_schedule(k, why, false);
		}
	}
	while (!e->closing && (op = lk_etcd_first_waiting(e))) {
		op->waiting_auth = false;
		lk_etcd_op_fail(op, status, "authentication as %s failed: %s", e->username, why);
	}
}

/* ---- the reachability probe ------------------------------------------------------------- */

static void lk_etcd_probe_start(struct lk_etcd *e)
{
	char *body;

	/* With auth, authenticating is the probe: it also proves the password. */
	if (lk_etcd_need_auth(e)) {
		if (lk_etcd_auth_start(e) < 0)
			lk_etcd_mark_down(e, "out of memory");
		return;
	}
	body = strdup("{}");
	e->probe_x = body ? lk_etcd_xfer_start(e, LK_ETCD_X_PROBE, LK_ETCD_CALL_STATUS, body, false,
	                                       e->timeout_ms) : NULL;
	if (!e->probe_x)
		lk_etcd_mark_down(e, "out of memory");
}

static void lk_etcd_probe_cb(evutil_socket_t fd, short what, void *arg)
{
	struct lk_etcd *e = arg;

	lk_etcd_enter(e);
	if (!e->closing && !e->probe_x && !e->auth_x)
		lk_etcd_probe_start(e);
	lk_etcd_leave(e);
}

static void lk_etcd_probe_done(struct lk_etcd *e, struct lk_etcd_xfer *x,
                               struct lk_etcd_outcome *o)
{
	char err[LK_ETCD_MAX_ERR_LEN];
	struct lk_etcd_status st;
	int rc;

	e->probe_x = NULL;
	if (o->ok) {
		rc = lk_etcd_json_parse_status(x->resp ? x->resp : "", x->resp_len, &st, err,
		                               sizeof(err));
		if (rc == 0 && st.has_leader) {
			lk_etcd_mark_up(e);
			/* An idle backend learns of a replaced cluster here first. */
			(void)lk_etcd_seen(e, st.cluster_id, st.revision, false);
			return;
		}
		if (rc == 0) {
			/* It answers but cannot serve (an election, a partition): try another. */
			o->conn_level = true;
			snprintf(o->why, sizeof(o->why), "%s has no leader", e->endpoints[x->endpoint]);
		} else if (rc == -EPROTO) {
			lk_etcd_outcome_error_body(x, o);
		} else {
			snprintf(o->why, sizeof(o->why), "bad response to a status request from %s: %s",
			         e->endpoints[x->endpoint], err);
		}
	}
	if (o->conn_level)
		lk_etcd_endpoint_failed(e, x->endpoint, o->why);
	lk_etcd_mark_down(e, o->why);
}

/* ---- completions ------------------------------------------------------------------------ */

static void lk_etcd_xfer_done(struct lk_etcd *e, struct lk_etcd_xfer *x, CURLcode res)
{
	struct lk_etcd_outcome o;
	long http = 0;

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
	case LK_ETCD_X_REVOKE:
	default:
		lk_etcd_revoke(e, x->then_revoke);
		break;
	}
	lk_etcd_xfer_free(x);
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

/* ---- the operations --------------------------------------------------------------------- */

static struct lk_backend_key *lk_etcd_key_new(struct lk_backend *b, const char *key,
                                              const char *identity,
                                              lk_backend_notify_fn *notify, void *arg)
{
	struct lk_etcd *e = (struct lk_etcd *)b;
	struct lk_backend_key *k;
	size_t klen, ilen;

	if (!e || e->closing || !key || !identity)
		return NULL;
	klen = strlen(key);
	ilen = strlen(identity);
	if (klen == 0 || klen > LK_ETCD_MAX_KEY_LEN || ilen == 0 || ilen > LK_ETCD_MAX_IDENTITY_LEN)
		return NULL;

	k = calloc(1, sizeof(*k));
	if (!k)
		return NULL;
	k->e = e;
	k->key = strdup(key);
	k->fkey_len = klen + strlen(LK_ETCD_FENCE_SUFFIX);
	k->fkey = malloc(k->fkey_len + 1);
	k->tkey_len = klen + strlen(LK_ETCD_TENURE_SUFFIX);
	k->tkey = malloc(k->tkey_len + 1);
	k->identity = strdup(identity);
	k->wretry = evtimer_new(e->base, lk_etcd_watch_retry_cb, k);
	k->wdeadline = evtimer_new(e->base, lk_etcd_watch_deadline_cb, k);
	if (!k->key || !k->fkey || !k->tkey || !k->identity || !k->wretry || !k->wdeadline)
		goto fail;
	/* Beside the lock key, not under it: "<key>/..." could be someone's prefix. */
	snprintf(k->fkey, k->fkey_len + 1, "%s%s", key, LK_ETCD_FENCE_SUFFIX);
	snprintf(k->tkey, k->tkey_len + 1, "%s%s", key, LK_ETCD_TENURE_SUFFIX);
	k->key_len = klen;
	k->identity_len = ilen;
	k->notify = notify;
	k->notify_arg = arg;
	TAILQ_INSERT_TAIL(&e->keys, k, link);
	return k;

fail:
	if (k->wretry)
		event_free(k->wretry);
	if (k->wdeadline)
		event_free(k->wdeadline);
	free(k->key);
	free(k->fkey);
	free(k->tkey);
	free(k->identity);
	free(k);
	return NULL;
}

static void lk_etcd_key_free(struct lk_backend_key *k)
{
	if (!k || k->dead)
		return;
	k->dead = true;
	k->watching = false;
	k->notify_pending = false;
	lk_etcd_watch_stop(k);
	if (k->refs == 0)
		lk_etcd_key_destroy(k);
}

static int lk_etcd_acquire(struct lk_backend_key *k, int64_t ttl_ms, lk_backend_reply_fn *cb,
                           void *arg)
{
	struct lk_etcd_op *op;

	if (!k || k->dead || !cb || ttl_ms <= 0)
		return -EINVAL;
	if (k->e->closing)
		return -ESHUTDOWN;
	op = lk_etcd_op_new(k, LK_ETCD_ACQUIRE, LK_ETCD_STEP_PEEK, cb, arg);
	if (!op)
		return -ENOMEM;
	op->ttl_ms = ttl_ms;
	return lk_etcd_op_start(op);
}

static int lk_etcd_renew(struct lk_backend_key *k, uint64_t token, int64_t ttl_ms,
                         lk_backend_reply_fn *cb, void *arg)
{
	struct lk_etcd_op *op;

	if (!k || k->dead || !cb || ttl_ms <= 0 || token == 0 || token > INT64_MAX)
		return -EINVAL;
	if (k->e->closing)
		return -ESHUTDOWN;
	op = lk_etcd_op_new(k, LK_ETCD_RENEW, LK_ETCD_STEP_KEEPALIVE, cb, arg);
	if (!op)
		return -ENOMEM;
	op->token = token;
	op->ttl_ms = ttl_ms;
	/* etcd extends leases, not keys: without the tenure's lease there is nothing of ours
	 * left to extend (ttl_ms is unused for the same reason: a keepalive restores the TTL
	 * the lease was granted with). */
	if (k->token != token || k->lease == 0 || k->ended)
		return lk_etcd_op_defer(op, LK_REPLY_GONE);
	op->lease = k->lease;
	op->rev = k->rev;
	return lk_etcd_op_start(op);
}

static int lk_etcd_release(struct lk_backend_key *k, uint64_t token, lk_backend_reply_fn *cb,
                           void *arg)
{
	struct lk_etcd_op *op;

	if (!k || k->dead || !cb || token == 0 || token > INT64_MAX)
		return -EINVAL;
	if (k->e->closing)
		return -ESHUTDOWN;
	op = lk_etcd_op_new(k, LK_ETCD_RELEASE, LK_ETCD_STEP_DELETE, cb, arg);
	if (!op)
		return -ENOMEM;
	op->token = token;
	/* A token is base + create_revision: only the tenure this key holds (or held last) can
	 * be mapped back, and nothing else is ours to delete. The compare on create_revision and
	 * on the lease is what makes this safe (I3); the lease is revoked afterwards. */
	if (k->token != token || k->rev <= 0)
		return lk_etcd_op_defer(op, LK_REPLY_GONE);
	op->rev = k->rev;
	op->lease = k->lease;
	return lk_etcd_op_start(op);
}

static bool lk_etcd_ready(const struct lk_backend *b)
{
	const struct lk_etcd *e = (const struct lk_etcd *)b;

	return e && !e->closing && e->ready;
}

/* ---- life and death --------------------------------------------------------------------- */

static void lk_etcd_finalize(struct lk_etcd *e)
{
	struct lk_backend_key *k;
	struct lk_etcd_sock *s;

	/* Closes pooled connections, telling lk_etcd_sock_cb to drop their events. */
	if (e->multi)
		curl_multi_cleanup(e->multi);
	while ((s = TAILQ_FIRST(&e->socks)))
		lk_etcd_sock_free(s);
	while ((k = TAILQ_FIRST(&e->keys)))
		lk_etcd_key_destroy(k);
	if (e->timer)
		event_free(e->timer);
	if (e->probe)
		event_free(e->probe);
	for (size_t i = 0; i < e->n_endpoints; i++)
		free(e->endpoints[i]);
	free(e->endpoints);
	if (e->password) {
		sodium_memzero(e->password, e->password_len);
		free(e->password);
	}
	lk_etcd_drop_token(e);
	free(e->username);
	free(e->ca_file);
	free(e->cert_file);
	free(e->key_file);
	free(e->b.name);
	free(e);
}

static void lk_etcd_free(struct lk_backend *b)
{
	struct lk_etcd *e = (struct lk_etcd *)b;
	struct lk_backend_key *k;
	struct lk_etcd_xfer *x;
	struct lk_etcd_op *op;

	if (!e || e->closing)
		return;
	e->closing = true;
	lk_etcd_enter(e);
	/* Abort everything silently: no callback runs after free(). */
	while ((op = TAILQ_FIRST(&e->ops)))
		lk_etcd_op_free(op);
	TAILQ_FOREACH(k, &e->keys, link)
		lk_etcd_watch_stop(k);
	while ((x = TAILQ_FIRST(&e->xfers)))
		lk_etcd_xfer_abort(x);
	if (e->probe)
		evtimer_del(e->probe);
	if (e->timer)
		evtimer_del(e->timer);
	lk_etcd_leave(e);
}

/* I10: after this backend saw the cluster replaced (its id changed, or its revision went
 * back), one ttl from that moment. A cluster met for the first time says nothing about its
 * past (etcd reports no uptime worth trusting for this), so there is no hold-off then. And
 * one ttl from the moment the key was first found gone without a release (see
 * lk_etcd_unreleased()). The later of the two wins. */
static int64_t lk_etcd_holdoff_until(struct lk_backend_key *k, int64_t ttl_ms, char *why,
                                     size_t cap)
{
	const struct lk_etcd *e;
	int64_t replaced = 0, unreleased = 0, now = lk_mono_ns();

	if (!k || k->dead || ttl_ms <= 0)
		return 0;
	e = k->e;
	if (e->replaced)
		replaced = lk_holdoff_until(e->reached_ns, -1, true, ttl_ms);
	if (k->unreleased_ns)
		unreleased = k->unreleased_ns + ttl_ms * 1000000;
	if (replaced <= now && unreleased <= now)
		return 0;
	if (why && cap && replaced >= unreleased)
		snprintf(why, cap, "%s", e->replaced_why);
	else if (why && cap)
		snprintf(why, cap, "the last tenure of %s ended without a release (its lease expired "
		         "or was revoked early): its holder may believe it leads for up to one ttl",
		         k->key);
	return replaced > unreleased ? replaced : unreleased;
}

static const struct lk_backend_ops lk_etcd_ops = {
	.type = "etcd",
	.key_new = lk_etcd_key_new,
	.key_free = lk_etcd_key_free,
	.acquire = lk_etcd_acquire,
	.renew = lk_etcd_renew,
	.release = lk_etcd_release,
	.watch = lk_etcd_watch,
	.holdoff_until = lk_etcd_holdoff_until,
	.ready = lk_etcd_ready,
	.free = lk_etcd_free,
};

/* An endpoint as curl will get it: http(s)://host[:port] with no path, no credentials, no
 * bytes that could end up somewhere unexpected. A trailing '/' is dropped. */
static int lk_etcd_endpoint(const char *url, char **ret, char *err, size_t errlen)
{
	size_t n = strlen(url), scheme;
	char *s;

	if (strncmp(url, "http://", 7) == 0)
		scheme = 7;
	else if (strncmp(url, "https://", 8) == 0)
		scheme = 8;
	else
		goto bad;
	while (n > scheme && url[n - 1] == '/')
		n--;
	if (n == scheme || n > LK_ETCD_MAX_ENDPOINT_LEN)
		goto bad;
	for (size_t i = scheme; i < n; i++) {
		unsigned char c = (unsigned char)url[i];

		/* '@' would be credentials (kept out of URLs, which end up in logs); a path, query
		 * or fragment would be glued to /v3/... */
		if (c <= 0x20 || c >= 0x7f || c == '@' || c == '/' || c == '?' || c == '#')
			goto bad;
	}
	s = strndup(url, n);
	if (!s) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	*ret = s;
	return 0;
bad:
	if (strchr(url, '@'))
		snprintf(err, errlen, "invalid endpoint: credentials in a URL are not supported "
		         "(use username and password_file)");
	else
		snprintf(err, errlen, "invalid endpoint \"%.*s\": want http://host:port or "
		         "https://host:port", LK_ETCD_MAX_SHOWN_LEN, url);
	return -EINVAL;
}

static int lk_etcd_dup(const char *src, char **dst, char *err, size_t errlen)
{
	if (!src)
		return 0;
	*dst = strdup(src);
	if (*dst)
		return 0;
	snprintf(err, errlen, "out of memory");
	return -ENOMEM;
}

int lk_etcd_new(struct event_base *base, const struct lk_config_backend *cfg,
                const struct lk_backend_hooks *hooks, struct lk_backend **ret,
                char *err, size_t errlen)
{
	static const char *const default_endpoint = "http://127.0.0.1:2379";
	char scratch[LK_ETCD_MAX_LOG_LEN];
	struct timeval now = { 0, 0 };
	size_t n_endpoints;
	struct lk_etcd *e;
	int rc;

	if (!err || errlen == 0) {
		err = scratch;
		errlen = sizeof(scratch);
	}
	if (!base || !cfg || !ret) {
		snprintf(err, errlen, "invalid arguments");
		return -EINVAL;
	}
	if (cfg->timeout_ms <= 0) {
		snprintf(err, errlen, "timeout must be positive");
		return -EINVAL;
	}
	if (cfg->n_endpoints > LK_CONFIG_MAX_ENDPOINTS || (cfg->n_endpoints && !cfg->endpoints)) {
		snprintf(err, errlen, "invalid endpoints list");
		return -EINVAL;
	}
	if (!cfg->username != !cfg->password_file) {
		snprintf(err, errlen, "%s", cfg->username ? "username requires password_file" :
		         "password_file requires username on an etcd backend");
		return -EINVAL;
	}
	if (!cfg->cert_file != !cfg->key_file) {
		snprintf(err, errlen, "cert_file and key_file go together");
		return -EINVAL;
	}
	/* Once per process, before the first handle (see the top of this file for why it is
	 * never undone). Not thread-safe, like everything on the agent's one thread. */
	if (!lk_etcd_curl_ready) {
		if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
			snprintf(err, errlen, "cannot initialise libcurl");
			return -EIO;
		}
		lk_etcd_curl_ready = true;
	}

	e = calloc(1, sizeof(*e));
	if (!e) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	e->b.ops = &lk_etcd_ops;
	e->base = base;
	e->timeout_ms = cfg->timeout_ms;
	TAILQ_INIT(&e->xfers);
	TAILQ_INIT(&e->ops);
	TAILQ_INIT(&e->keys);
	TAILQ_INIT(&e->socks);
	if (hooks)
		e->b.hooks = *hooks;
	e->b.name = strdup(cfg->name ? cfg->name : "etcd");
	if (!e->b.name) {
		rc = -ENOMEM;
		snprintf(err, errlen, "out of memory");
		goto fail;
	}

	n_endpoints = cfg->n_endpoints ? cfg->n_endpoints : 1;
	e->endpoints = calloc(n_endpoints, sizeof(*e->endpoints));
	if (!e->endpoints) {
		rc = -ENOMEM;
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	for (size_t i = 0; i < n_endpoints; i++) {
		rc = lk_etcd_endpoint(cfg->n_endpoints ? cfg->endpoints[i] : default_endpoint,
		                      &e->endpoints[i], err, errlen);
		if (rc < 0)
			goto fail;
		e->n_endpoints++;
	}

	if ((rc = lk_etcd_dup(cfg->username, &e->username, err, errlen)) < 0 ||
	    (rc = lk_etcd_dup(cfg->ca_file, &e->ca_file, err, errlen)) < 0 ||
	    (rc = lk_etcd_dup(cfg->cert_file, &e->cert_file, err, errlen)) < 0 ||
	    (rc = lk_etcd_dup(cfg->key_file, &e->key_file, err, errlen)) < 0)
		goto fail;
	if (e->username && strlen(e->username) > LK_ETCD_JSON_MAX_NAME) {
		rc = -EINVAL;
		snprintf(err, errlen, "username longer than %d bytes", LK_ETCD_JSON_MAX_NAME);
		goto fail;
	}
	if (cfg->password_file) {
		rc = lk_backend_read_secret(cfg->password_file, LK_ETCD_MAX_PASSWORD_LEN,
		                            &e->password, &e->password_len, err, errlen);
		if (rc < 0)
			goto fail;
	}

	e->timer = evtimer_new(base, lk_etcd_timer_event, e);
	e->probe = evtimer_new(base, lk_etcd_probe_cb, e);
	e->multi = curl_multi_init();
	if (!e->timer || !e->probe || !e->multi) {
		rc = -ENOMEM;
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	if (curl_multi_setopt(e->multi, CURLMOPT_SOCKETFUNCTION, lk_etcd_sock_cb) != CURLM_OK ||
	    curl_multi_setopt(e->multi, CURLMOPT_SOCKETDATA, e) != CURLM_OK ||
	    curl_multi_setopt(e->multi, CURLMOPT_TIMERFUNCTION, lk_etcd_timer_cb) != CURLM_OK ||
	    curl_multi_setopt(e->multi, CURLMOPT_TIMERDATA, e) != CURLM_OK) {
		rc = -EIO;
		snprintf(err, errlen, "cannot set up libcurl");
		goto fail;
	}

	/* Probe from the loop, not from here: the caller gets its backend before any hook. */
	evtimer_add(e->probe, &now);
	*ret = &e->b;
	return 0;

fail:
	lk_etcd_free(&e->b);
	return rc;
}
