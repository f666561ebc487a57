/* The etcd v3 backend: etcd's JSON gateway over libcurl's multi-socket API, driven
 * by the agent's libevent loop. No thread of ours, no blocking call: curl tells us which sockets
 * to watch and when to wake it (lk_etcd_sock_cb, lk_etcd_timer_cb in etcd_http.c), and finished
 * transfers are collected with curl_multi_info_read() after every curl_multi_socket_action().
 *
 * The files of this backend share locks/etcd_int.h, and nothing else includes it:
 *   etcd.c          keys, the cluster seen and the hold-off it implies (I10),
 *                   the vtable, lk_etcd_new() and free;
 *   etcd_op.c       the lock operations (acquire, renew, release) as chains of requests;
 *   etcd_elect.c    the election per key those requests run, and what their answers mean;
 *   etcd_lease.c    the leases every key shares, their keepalives, quiesce at the drain's end;
 *   etcd_batch.c    renewals' proving reads, many keys to one txn;
 *   etcd_watch.c    one watch stream per following key, over its candidates' prefix;
 *   etcd_session.c  what stands in for a connection: the endpoint, readiness and its
 *                   probe, the auth token;
 *   etcd_http.c     curl on the libevent loop, transfers and what their outcomes mean;
 *   etcd_json.c     the JSON mapping, without I/O (unit-tested on its own).
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
 * curl_global_init() runs once, in the first lk_etcd_new(); curl_global_cleanup() never runs.
 * It may only run when no curl handle is left anywhere in the process, which this file cannot
 * know (another etcd backend, a backend created later, other code using curl); the global
 * state it would free stays reachable, so LeakSanitizer does not count it, and exiting
 * reclaims it anyway.
 */

#include "locks/etcd_int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <sodium.h>

static bool lk_etcd_curl_ready;

static void lk_etcd_finalize(struct lk_etcd *e);

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

void lk_etcd_timeval(struct timeval *tv, int64_t ms)
{
	if (ms < 0)
		ms = 0;
	tv->tv_sec = (time_t)(ms / 1000);
	tv->tv_usec = (suseconds_t)((ms % 1000) * 1000);
}

/* Arm timer for the next try after *attempt failed ones (the probe, a watch's resume) and count
 * this one. Returns the delay in ms, for the log line. */
int64_t lk_etcd_backoff(struct event *timer, unsigned *attempt)
{
	struct timeval tv;
	int64_t delay = lk_backoff_ms(*attempt, LK_ETCD_BACKOFF_BASE_MS, LK_ETCD_BACKOFF_CAP_MS);

	if (*attempt < LK_ETCD_MAX_ATTEMPT)
		(*attempt)++;
	lk_etcd_timeval(&tv, delay);
	evtimer_add(timer, &tv);
	return delay;
}

/* ---- the cluster answering (I10) -------------------------------------------------------- */

/* What an answer's header says about the cluster behind it (I10). x: the transfer of a
 * linearizable request (a range or a txn), whose answer's revision is at least every revision
 * this backend had seen when it sent the request (x->rev_floor), unless the data went back;
 * NULL for an answer that promises no such thing. Answers to requests in flight together may
 * come back in any order: comparing with the highest revision seen by the time the answer
 * arrives would take a slow answer for a restored cluster. Returns true if this answer shows
 * that the cluster was replaced (wiped, or restored from an older snapshot): hold-off from now
 * on. */
bool lk_etcd_seen(struct lk_etcd *e, uint64_t cluster_id, int64_t revision,
                  const struct lk_etcd_xfer *x)
{
	return lk_etcd_seen_write(e, cluster_id, revision, x, false);
}

/* The same for the answer to a txn that wrote (wrote): it made the revision one higher than
 * the data it found, which must not be below the floor either, so a write cannot hide that a
 * wiped cluster started again just below where we were. */
bool lk_etcd_seen_write(struct lk_etcd *e, uint64_t cluster_id, int64_t revision,
                        const struct lk_etcd_xfer *x, bool wrote)
{
	bool ordered = x != NULL;
	/* Lowered by a replacement seen since the request left: its old floor no longer holds. */
	int64_t floor = x && x->rev_floor < e->max_revision ? x->rev_floor : e->max_revision;
	struct lk_backend_key *k;
	char why[LK_ETCD_MAX_LOG_LEN];

	if (e->closing)
		return false;
	if (cluster_id && e->cluster_id && cluster_id != e->cluster_id) {
		snprintf(why, sizeof(why), "etcd cluster id changed from %" PRIx64 " to %" PRIx64
		         ": the old cluster's tenures may still run", e->cluster_id, cluster_id);
	} else if (ordered && revision > 0 && revision - wrote < floor) {
		snprintf(why, sizeof(why), "etcd revision went back from %" PRId64 " to %" PRId64
		         " (wiped or restored): tenures it granted may be lost", floor,
		         revision - wrote);
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

/* ---- keys ------------------------------------------------------------------------------- */

/* A key's memory; k may be half built. */
static void lk_etcd_key_free_mem(struct lk_backend_key *k)
{
	if (k->wretry)
		event_free(k->wretry);
	if (k->wdeadline)
		event_free(k->wdeadline);
	if (k->texp)
		event_free(k->texp);
	free(k->key);
	free(k->fkey);
	free(k->tkey);
	free(k->pkey);
	free(k->qkey);
	free(k->identity);
	free(k);
}

static void lk_etcd_key_destroy(struct lk_backend_key *k)
{
	TAILQ_REMOVE(&k->e->keys, k, link);
	lk_etcd_key_free_mem(k);
}

void lk_etcd_key_unref(struct lk_backend_key *k)
{
	if (--k->refs == 0 && k->dead)
		lk_etcd_key_destroy(k);
}

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
	k->num = e->n_keys_made++;
	k->key = strdup(key);
	k->fkey_len = klen + strlen(LK_ETCD_FENCE_SUFFIX);
	k->fkey = malloc(k->fkey_len + 1);
	k->tkey_len = klen + strlen(LK_ETCD_TENURE_SUFFIX);
	k->tkey = malloc(k->tkey_len + 1);
	k->pkey_len = klen + strlen(LK_ETCD_CANDIDATE_SEP);
	k->pkey = malloc(k->pkey_len + 1);
	k->qkey_len = klen + strlen(LK_ETCD_SEQ_SUFFIX);
	k->qkey = malloc(k->qkey_len + 1);
	k->identity = strdup(identity);
	k->wretry = evtimer_new(e->base, lk_etcd_watch_retry_cb, k);
	k->wdeadline = evtimer_new(e->base, lk_etcd_watch_deadline_cb, k);
	k->texp = evtimer_new(e->base, lk_etcd_texp_cb, k);
	if (!k->key || !k->fkey || !k->tkey || !k->pkey || !k->qkey || !k->identity ||
	    !k->wretry || !k->wdeadline || !k->texp)
		goto fail;
	/* The candidates live under "<key>/"; the fence, the marker and the seq key beside
	 * them, outside the candidates' prefix. */
	snprintf(k->fkey, k->fkey_len + 1, "%s%s", key, LK_ETCD_FENCE_SUFFIX);
	snprintf(k->tkey, k->tkey_len + 1, "%s%s", key, LK_ETCD_TENURE_SUFFIX);
	snprintf(k->pkey, k->pkey_len + 1, "%s%s", key, LK_ETCD_CANDIDATE_SEP);
	snprintf(k->qkey, k->qkey_len + 1, "%s%s", key, LK_ETCD_SEQ_SUFFIX);
	k->key_len = klen;
	k->identity_len = ilen;
	k->notify = notify;
	k->notify_arg = arg;
	TAILQ_INSERT_TAIL(&e->keys, k, link);
	return k;

fail:
	lk_etcd_key_free_mem(k);
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
	/* A tenure nobody released keeps its key until its lease as last proven runs out (the
	 * shared lease would keep it forever): the key lives on until texp fires. A candidacy
	 * without one goes now. */
	if (k->token && !k->ended && k->texp_ns > lk_mono_ns()) {
		k->refs++;
	} else if (k->cand_rev) {
		lk_etcd_withdraw(k, k->cand_rev, k->cand_lease);
	}
	if (k->refs == 0)
		lk_etcd_key_destroy(k);
}

/* ---- life and death --------------------------------------------------------------------- */

static void lk_etcd_finalize(struct lk_etcd *e)
{
	struct lk_backend_key *k;

	lk_etcd_http_cleanup(e);
	while ((k = TAILQ_FIRST(&e->keys)))
		lk_etcd_key_destroy(k);
	lk_etcd_leases_free(e);
	lk_etcd_batch_free(e);
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
 * one ttl from the look that found our key oldest after an end without a release (etcd_op.c
 * lk_etcd_oldest()); and while a tenure of ours that the lock gave up still has its key, until
 * that key's lease as last proven runs out. The latest wins. */
static int64_t lk_etcd_holdoff_until(struct lk_backend_key *k, int64_t ttl_ms, char *why,
                                     size_t cap)
{
	const struct lk_etcd *e;
	int64_t replaced = 0, unreleased = 0, spent = 0, until, now = lk_mono_ns();

	if (!k || k->dead || ttl_ms <= 0)
		return 0;
	e = k->e;
	if (e->replaced)
		replaced = lk_holdoff_until(e->reached_ns, -1, true, ttl_ms);
	if (k->cand_rev && k->lowest_for == k->cand_rev && !k->lowest_graceful)
		unreleased = k->lowest_ns + ttl_ms * 1000000;
	if (k->token && !k->ended && k->given_up)
		spent = k->texp_ns;
	until = replaced > unreleased ? replaced : unreleased;
	until = spent > until ? spent : until;
	if (until <= now)
		return 0;
	if (why && cap && until == replaced)
		snprintf(why, cap, "%s", e->replaced_why);
	else if (why && cap && until == unreleased)
		snprintf(why, cap, "the last tenure of %s ended without a release (its lease expired "
		         "or was revoked early, or its candidate withdrew): its holder may believe it "
		         "leads for up to one ttl", k->key);
	else if (why && cap)
		snprintf(why, cap, "our own last tenure of %s was given up without a release: its key "
		         "stays until its lease as last proven runs out", k->key);
	return until;
}

static bool lk_etcd_ready(const struct lk_backend *b)
{
	const struct lk_etcd *e = (const struct lk_etcd *)b;

	return e && !e->closing && e->ready;
}

static const char *lk_etcd_server(const struct lk_backend *b)
{
	const struct lk_etcd *e = (const struct lk_etcd *)b;

	return e->endpoints[e->cur];
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
	.server = lk_etcd_server,
	.quiesce = lk_etcd_quiesce,
	.free = lk_etcd_free,
};

/* An endpoint as curl will get it: the factory checked it against lk_backend_endpoint_len();
 * trailing '/'s dropped. */
static int lk_etcd_endpoint(const char *url, char **ret, char *err, size_t errlen)
{
	size_t n = strlen(url);
	char *s;

	(void)lk_backend_endpoint_len(url, &n);
	s = strndup(url, n);
	if (!s) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	*ret = s;
	return 0;
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
	struct timeval now = { 0, 0 };
	size_t n_endpoints;
	struct lk_etcd *e;
	int rc;

	/* The factory checked the arguments and cfg (backend_int.h). */
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
	TAILQ_INIT(&e->xqueue);
	TAILQ_INIT(&e->xfailed);
	TAILQ_INIT(&e->ops);
	TAILQ_INIT(&e->keys);
	TAILQ_INIT(&e->leases);
	TAILQ_INIT(&e->batch_wait);
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
		rc = lk_etcd_endpoint(cfg->n_endpoints ? cfg->endpoints[i]
		                                      : LK_BACKEND_ETCD_DEFAULT_ENDPOINT,
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

	e->probe = evtimer_new(base, lk_etcd_probe_cb, e);
	rc = e->probe ? lk_etcd_http_init(e) : -ENOMEM;
	if (rc < 0) {
		snprintf(err, errlen, "%s", rc == -ENOMEM ? "out of memory" : "cannot set up libcurl");
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
