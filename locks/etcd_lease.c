/* The etcd backend's shared leases: one per TTL for every key of the backend, as etcd's
 * concurrency.Session keeps one per client. Every candidate key and so every tenure hangs on
 * it; keepalives go out every third of its TTL whether or not a lock renews, and renewals that
 * come close together share one keepalive (its send time proves all of them, I1). So an agent
 * with 10,000 locks sends a handful of keepalives a second, not 10,000.
 *
 * When etcd says the lease is gone (a keepalive without a TTL, a put that names an unknown
 * lease), every key on it went too: the lease is forgotten, the next use grants another, and
 * every key hears LK_NOTICE_RECONNECTED, so that a leader re-proves its tenure (and finds it
 * gone) and a follower queues up again.
 */

#include "locks/etcd_int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

/* Renewals this close to a keepalive's send time share it: a keepalive per lock tick at
 * most, however many locks renew in it. */
#define LK_ETCD_LEASE_SHARE_NS (50 * 1000000LL)

static void lk_etcd_lease_tick_cb(evutil_socket_t fd, short what, void *arg);

static void lk_etcd_lease_arm(struct lk_etcd_lease *l)
{
	struct timeval tv;

	lk_etcd_timeval(&tv, (l->proven_ttl_s > 0 ? l->proven_ttl_s : l->ttl_s) * 1000 / 3);
	evtimer_add(l->tick, &tv);
}

struct lk_etcd_lease *lk_etcd_lease_get(struct lk_etcd *e, int64_t ttl_ms)
{
	/* Whole seconds, rounded up: etcd may still grant more (its minimum is ~2s). */
	int64_t ttl_s = ttl_ms / 1000 + (ttl_ms % 1000 != 0);
	struct lk_etcd_lease *l;

	TAILQ_FOREACH(l, &e->leases, link)
		if (l->ttl_s == ttl_s && !l->revoking)
			return l;
	l = calloc(1, sizeof(*l));
	if (!l)
		return NULL;
	l->tick = evtimer_new(e->base, lk_etcd_lease_tick_cb, l);
	if (!l->tick) {
		free(l);
		return NULL;
	}
	l->e = e;
	l->ttl_s = ttl_s;
	TAILQ_INIT(&l->waiters);
	TAILQ_INSERT_TAIL(&e->leases, l, link);
	return l;
}

/* Send a grant (no id yet) or a keepalive. */
static int lk_etcd_lease_send(struct lk_etcd_lease *l)
{
	struct lk_etcd *e = l->e;
	struct lk_etcd_xfer *x;
	char *body;
	int rc;

	if (l->x)
		return 0;
	rc = l->id ? lk_etcd_json_lease_id(l->id, &body) : lk_etcd_json_grant(l->ttl_s, &body);
	if (rc < 0)
		return rc;
	x = lk_etcd_xfer_start(e, LK_ETCD_X_LEASE, l->id ? LK_ETCD_CALL_KEEPALIVE
	                                                  : LK_ETCD_CALL_GRANT,
	                       body, false, e->timeout_ms);
	if (!x)
		return -ENOMEM;
	x->lease = l;
	l->x = x;
	/* Validity is counted from here (I1): the request leaves a little later, which only
	 * makes the proven lease shorter than the real one. */
	l->x_sent_ns = lk_mono_ns();
	return 0;
}

int lk_etcd_lease_join(struct lk_etcd_op *op, bool fresh, enum lk_etcd_step after)
{
	struct lk_etcd_lease *l = op->l;
	int rc;

	/* Granted, and alive recently enough for what op needs: go on at once. */
	if (l->id && (!fresh || lk_mono_ns() - l->proven_ns < LK_ETCD_LEASE_SHARE_NS)) {
		op->sent_ns = l->proven_ns;
		op->ttl_s = l->proven_ttl_s;
		op->step = after;
		op->lease = l->id;
		return 1;
	}
	rc = lk_etcd_lease_send(l);
	if (rc < 0)
		return rc;
	op->step = LK_ETCD_STEP_LEASE;
	op->after_lease = after;
	op->lwaiting = true;
	TAILQ_INSERT_TAIL(&l->waiters, op, lwait);
	return 0;
}

void lk_etcd_lease_leave(struct lk_etcd_op *op)
{
	if (!op->lwaiting)
		return;
	TAILQ_REMOVE(&op->l->waiters, op, lwait);
	op->lwaiting = false;
}

void lk_etcd_lease_gone(struct lk_etcd_lease *l)
{
	struct lk_etcd *e = l->e;

	if (!l->id)
		return;
	lk_etcd_log(e, LK_BLOG_WARN, "etcd lease %" PRIx64 " (ttl %" PRId64 "s) is gone: every "
	            "key on it went with it; granting another", (uint64_t)l->id, l->ttl_s);
	l->id = 0;
	l->proven_ns = 0;
	l->proven_ttl_s = 0;
	evtimer_del(l->tick);
	e->reconnected = true;
}

/* Answer every op parked on the lease: go on with its next step, or fail with msg. */
static void lk_etcd_lease_wake(struct lk_etcd_lease *l, enum lk_reply_status fail,
                               const char *msg)
{
	struct lk_etcd *e = l->e;
	struct lk_etcd_op *op;

	while (!e->closing && (op = TAILQ_FIRST(&l->waiters))) {
		lk_etcd_lease_leave(op);
		if (msg && fail == LK_REPLY_GONE && op->kind == LK_ETCD_RENEW &&
		    op->k->token == op->token)
			op->k->ended = true;
		/* An acquire has no tenure to lose: it only failed, and may try again. */
		if (msg && fail == LK_REPLY_GONE && op->kind != LK_ETCD_RENEW)
			fail = LK_REPLY_ERROR;
		if (msg) {
			lk_etcd_op_fail(op, fail, "%s", msg);
			continue;
		}
		op->sent_ns = l->proven_ns;
		op->ttl_s = l->proven_ttl_s;
		op->lease = l->id;
		op->step = op->after_lease;
		lk_etcd_op_next(op);
	}
}

void lk_etcd_lease_done(struct lk_etcd *e, struct lk_etcd_xfer *x, struct lk_etcd_outcome *o)
{
	struct lk_etcd_lease *l = x->lease;
	const char *body = x->resp ? x->resp : "";
	bool grant = x->call == LK_ETCD_CALL_GRANT;
	char err[LK_ETCD_MAX_ERR_LEN], why[2 * LK_ETCD_MAX_LOG_LEN];
	struct lk_etcd_keepalive ka;
	struct lk_etcd_grant g;
	int rc;

	l->x = NULL;
	err[0] = '\0';
	if (!o->ok) {
		if (o->conn_level) {
			lk_etcd_endpoint_failed(e, x->endpoint, o->why);
			lk_etcd_mark_down(e, o->why);
		}
		if (o->stale_token && x->token_gen == e->token_gen && e->username)
			lk_etcd_drop_token(e);
		/* A keepalive for a lease etcd no longer knows answers NotFound on some versions. */
		if (!grant && !o->transport && o->code == 5)
			lk_etcd_lease_gone(l);
		snprintf(why, sizeof(why), "lease %s failed: %s", grant ? "grant" : "keepalive",
		         o->why);
		lk_etcd_lease_wake(l, o->transport || o->stale_token ? LK_REPLY_ERROR
		                      : lk_etcd_error_status(o->http, o->code), why);
		if (l->id && !e->closing)
			lk_etcd_lease_arm(l);
		return;
	}
	if (grant) {
		rc = lk_etcd_json_parse_grant(body, x->resp_len, &g, err, sizeof(err));
		if (rc == 0) {
			(void)lk_etcd_seen(e, g.cluster_id, g.revision, NULL);
			l->id = g.id;
			l->proven_ns = l->x_sent_ns;
			l->proven_ttl_s = g.ttl;
		}
	} else {
		rc = lk_etcd_json_parse_keepalive(body, x->resp_len, &ka, err, sizeof(err));
		if (rc == 0 && ka.id != 0 && ka.id != l->id) {
			rc = -EINVAL;
			snprintf(err, sizeof(err), "answer for lease %" PRId64, ka.id);
		}
		if (rc == 0) {
			(void)lk_etcd_seen(e, ka.cluster_id, ka.revision, NULL);
			if (ka.ttl <= 0) {
				/* No TTL: the lease expired or was revoked, and its keys with it. */
				lk_etcd_lease_gone(l);
				lk_etcd_lease_wake(l, LK_REPLY_GONE, "the lease expired or was revoked");
				return;
			}
			l->proven_ns = l->x_sent_ns;
			l->proven_ttl_s = ka.ttl;
		}
	}
	if (rc < 0) {
		snprintf(why, sizeof(why), "bad response to lease %s from %s: %s",
		         grant ? "grant" : "keepalive", e->endpoints[x->endpoint], err);
		lk_etcd_mark_down(e, why);
		lk_etcd_lease_wake(l, LK_REPLY_FATAL, why);
		if (l->id && !e->closing)
			lk_etcd_lease_arm(l);
		return;
	}
	lk_etcd_mark_up(e);
	lk_etcd_lease_arm(l);
	lk_etcd_lease_wake(l, LK_REPLY_OK, NULL);
}

/* Whether a key of ours hangs on the lease: a candidacy, or a tenure not over (with
 * tenure_only, only an unreleased tenure). */
static bool lk_etcd_lease_used(const struct lk_etcd_lease *l, bool tenure_only)
{
	const struct lk_backend_key *k;
	const struct lk_etcd_op *op;

	TAILQ_FOREACH(op, &l->e->ops, link)
		if (op->l == l && !tenure_only)
			return true;
	TAILQ_FOREACH(k, &l->e->keys, link) {
		if (k->token && !k->ended && k->lease == l->id)
			return true;
		if (!tenure_only && !k->dead && k->cand_rev && k->cand_lease == l->id)
			return true;
	}
	return false;
}

/* A lease no key uses any more is revoked, so that an agent whose apps all left holds
 * nothing in etcd; the next campaign grants another. */
static void lk_etcd_idle_cb(evutil_socket_t fd, short what, void *arg)
{
	struct lk_etcd *e = arg;
	struct lk_etcd_lease *l;

	lk_etcd_enter(e);
	TAILQ_FOREACH(l, &e->leases, link) {
		if (e->closing || !l->id || l->x || !TAILQ_EMPTY(&l->waiters) ||
		    lk_etcd_lease_used(l, false))
			continue;
		evtimer_del(l->tick);
		lk_etcd_revoke(e, l->id);
		l->id = 0;
		l->proven_ns = 0;
		l->proven_ttl_s = 0;
	}
	lk_etcd_leave(e);
}

void lk_etcd_lease_idle_check(struct lk_etcd *e)
{
	static const struct timeval now = { 0, 0 };

	/* Once per loop turn however many keys let go: a drain of 10,000 locks scans once. */
	if (!e->closing && (e->idle_ev || (e->idle_ev = evtimer_new(e->base, lk_etcd_idle_cb, e))))
		evtimer_add(e->idle_ev, &now);
}

static void lk_etcd_lease_tick_cb(evutil_socket_t fd, short what, void *arg)
{
	struct lk_etcd_lease *l = arg;
	struct lk_etcd *e = l->e;

	lk_etcd_enter(e);
	/* Without a token the ops authenticate first: the keepalive waits for the next tick. */
	if (!e->closing && l->id && !l->revoking &&
	    (lk_etcd_need_auth(e) || lk_etcd_lease_send(l) < 0))
		lk_etcd_lease_arm(l);
	lk_etcd_leave(e);
}

void lk_etcd_leases_free(struct lk_etcd *e)
{
	struct lk_etcd_lease *l;

	while ((l = TAILQ_FIRST(&e->leases))) {
		TAILQ_REMOVE(&e->leases, l, link);
		event_free(l->tick);
		free(l);
	}
	if (e->quiesce_ev)
		event_free(e->quiesce_ev);
	if (e->idle_ev)
		event_free(e->idle_ev);
}

/* ---- quiesce ---------------------------------------------------------------------------- */

static void lk_etcd_quiesced_cb(evutil_socket_t fd, short what, void *arg)
{
	struct lk_etcd *e = arg;
	void (*done)(void *) = e->quiesced;

	e->quiesced = NULL;
	if (done && !e->closing)
		done(e->quiesced_arg);
}

void lk_etcd_quiesce_check(struct lk_etcd *e)
{
	static const struct timeval now = { 0, 0 };
	struct lk_etcd_xfer *x;

	if (!e->quiesced || e->closing)
		return;
	TAILQ_FOREACH(x, &e->xfers, link)
		if (x->kind == LK_ETCD_X_REVOKE)
			return;
	evtimer_add(e->quiesce_ev, &now);
}

/* The drain is over: revoke every shared lease, so that our remaining candidate keys go now
 * rather than a ttl later, where they would stand in the queue before live replicas. A lease
 * that still carries a tenure given up without a release (a stepdown timeout) is left to
 * expire instead: no keepalive from now on, and its key goes one ttl after the last (I2). */
int lk_etcd_quiesce(struct lk_backend *b, void (*done)(void *arg), void *arg)
{
	struct lk_etcd *e = (struct lk_etcd *)b;
	struct lk_etcd_lease *l;

	if (!e || e->closing || !done)
		return -EINVAL;
	if (!e->quiesce_ev && !(e->quiesce_ev = evtimer_new(e->base, lk_etcd_quiesced_cb, e)))
		return -ENOMEM;
	lk_etcd_enter(e);
	TAILQ_FOREACH(l, &e->leases, link) {
		l->revoking = true;
		evtimer_del(l->tick);
		if (l->id && !lk_etcd_lease_used(l, true))
			lk_etcd_revoke(e, l->id);
		l->id = 0;
	}
	e->quiesced = done;
	e->quiesced_arg = arg;
	lk_etcd_quiesce_check(e);
	lk_etcd_leave(e);
	return 0;
}
