/* The etcd backend's lock operations as chains of steps (one HTTP request each): building
 * each step's request, classifying its answer, retrying on another endpoint or with a new auth
 * token, and delivering exactly one reply per accepted operation. What the answers mean for
 * the election (who leads, when to wait) is etcd_elect.c's.
 *
 * Each request gets the whole backend timeout of its own: on a link with a 400ms round trip a
 * two-request acquire must not share one second between its steps (it would never succeed).
 */
#include "locks/etcd_int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>

static const char *const lk_etcd_step_names[] = {
	[LK_ETCD_STEP_LEASE] = "lease",
	[LK_ETCD_STEP_CREATE] = "candidate txn",
	[LK_ETCD_STEP_PEEK] = "look",
	[LK_ETCD_STEP_CHECK] = "range of our key",
	[LK_ETCD_STEP_DELETE] = "release txn",
	[LK_ETCD_STEP_RECLAIM] = "delete of our spent key",
	[LK_ETCD_STEP_HISTORY] = "history read",
	[LK_ETCD_STEP_BATCH] = "batch of renewals",
};

static const char *const lk_etcd_op_names[] = {
	[LK_ETCD_ACQUIRE] = "acquire",
	[LK_ETCD_RENEW] = "renew",
	[LK_ETCD_RELEASE] = "release",
};

static int lk_etcd_op_send(struct lk_etcd_op *op);
static void lk_etcd_op_parsed(struct lk_etcd_op *op, struct lk_etcd_xfer *x,
                              struct lk_etcd_outcome *o);

/* ---- operations ------------------------------------------------------------------------- */

void lk_etcd_op_free(struct lk_etcd_op *op)
{
	struct lk_etcd *e = op->e;

	lk_etcd_lease_leave(op);
	lk_etcd_batch_leave(op);
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

	lk_etcd_lease_leave(op);
	lk_etcd_batch_leave(op);
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

void lk_etcd_op_fail(struct lk_etcd_op *op, enum lk_reply_status status,
                     const char *fmt, ...)
{
	char msg[LK_ETCD_MAX_LOG_LEN];
	struct lk_reply rep = { .status = status, .err = msg };
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	lk_etcd_op_done(op, &rep);
}

void lk_etcd_op_reply(struct lk_etcd_op *op, enum lk_reply_status status,
                      const char *holder)
{
	struct lk_backend_key *k = op->k;
	struct lk_reply rep = { .status = status, .holder = holder, .token = op->token,
	                        .gap_ns = -1 };

	if (status == LK_REPLY_OK && op->kind != LK_ETCD_RELEASE) {
		rep.sent_ns = op->sent_ns;
		rep.ttl_ms = op->ttl_s * 1000;
	}
	/* What came before: recorded when our key was first found oldest. The gap runs from
	 * when the watch showed us the release, as etcd has no clock to ask: without such an
	 * event (the release came before we queued, a look found it) there is no gap to tell. */
	if (status == LK_REPLY_OK && op->kind == LK_ETCD_ACQUIRE) {
		rep.after = k->lowest_for == op->rev ? k->lowest_after : LK_AFTER_UNKNOWN;
		if (rep.after == LK_AFTER_RELEASE && k->release_seen_for == op->rev &&
		    k->release_seen_ns)
			rep.gap_ns = lk_mono_ns() - k->release_seen_ns;
		k->release_seen_ns = 0;
	}
	lk_etcd_op_done(op, &rep);
}

/* Send the next step, or report why it could not be sent. */
void lk_etcd_op_next(struct lk_etcd_op *op)
{
	int rc = lk_etcd_op_send(op);

	if (rc < 0)
		lk_etcd_op_fail(op, LK_REPLY_ERROR, "%s failed: %s", lk_etcd_op_names[op->kind],
		                strerror(-rc));
}

/* The keys a look reads, with our key's name in own[]. */
static void lk_etcd_look_keys(const struct lk_backend_key *k, int64_t lease, char *own,
                              struct lk_etcd_look_keys *keys)
{
	keys->own = own;
	keys->own_len = lk_etcd_cand_key(k, lease, own);
	keys->prefix = k->pkey;
	keys->prefix_len = k->pkey_len;
	keys->fence = k->fkey;
	keys->fence_len = k->fkey_len;
	keys->state = k->tkey;
	keys->state_len = k->tkey_len;
	keys->seq = k->qkey;
	keys->seq_len = k->qkey_len;
	keys->legacy = k->key;
	keys->legacy_len = k->key_len;
}

static int lk_etcd_op_send(struct lk_etcd_op *op)
{
	struct lk_etcd *e = op->e;
	struct lk_backend_key *k = op->k;
	char own[LK_ETCD_JSON_MAX_KEY + 1];
	struct lk_etcd_look_keys keys;
	enum lk_etcd_call call;
	struct lk_etcd_xfer *x;
	struct timespec now;
	int64_t seed;
	char *body = NULL;
	size_t n;
	int rc;

	if (lk_etcd_need_auth(e)) {
		rc = lk_etcd_auth_start(e);
		if (rc == 0)
			op->waiting_auth = true;
		return rc;
	}

	switch (op->step) {
	case LK_ETCD_STEP_LEASE:
		rc = lk_etcd_lease_join(op, op->kind == LK_ETCD_RENEW || op->token != 0,
		                        op->after_lease);
		return rc == 1 ? lk_etcd_op_send(op) : rc;
	case LK_ETCD_STEP_CREATE:
	case LK_ETCD_STEP_PEEK:
	case LK_ETCD_STEP_CHECK:
		/* The base a missing fence key gets: the wall clock in microseconds, which has
		 * grown by far more than any cluster's revision since the fence it replaces was
		 * seeded (as long as the clock does not step back). */
		clock_gettime(CLOCK_REALTIME, &now);
		seed = (int64_t)now.tv_sec * 1000000 + now.tv_nsec / 1000;
		call = LK_ETCD_CALL_TXN;
		lk_etcd_look_keys(k, op->lease, own, &keys);
		rc = lk_etcd_json_txn_look(&keys, op->step == LK_ETCD_STEP_CREATE, k->identity,
		                           k->identity_len, op->lease, seed, k->refence, &body);
		break;
	case LK_ETCD_STEP_BATCH:
		return lk_etcd_batch_join(op);
	case LK_ETCD_STEP_HISTORY:
		call = LK_ETCD_CALL_TXN;
		rc = lk_etcd_json_txn_history(k->pkey, k->pkey_len, k->qkey, k->qkey_len,
		                              k->cand_rev - 1, &body);
		break;
	case LK_ETCD_STEP_RECLAIM:
		call = LK_ETCD_CALL_TXN;
		n = lk_etcd_cand_key(k, op->lease, own);
		rc = lk_etcd_json_txn_release(own, n, NULL, 0, op->orphan_rev, op->lease, &body);
		break;
	case LK_ETCD_STEP_DELETE:
	default:
		call = LK_ETCD_CALL_TXN;
		/* The app has stepped down (or never heard of this tenure): the marker lets the
		 * next candidate lead at once. */
		n = lk_etcd_cand_key(k, op->lease, own);
		rc = lk_etcd_json_txn_release(own, n, k->tkey, k->tkey_len, op->rev, op->lease,
		                              &body);
		break;
	}
	if (rc < 0)
		return rc;
	x = lk_etcd_xfer_start(e, LK_ETCD_X_OP, call, body, false, e->timeout_ms);
	if (!x)
		return -ENOMEM;
	x->op = op;
	op->xfer = x;
	return 0;
}

/* A step's transfer finished. */
void lk_etcd_op_xfer_done(struct lk_etcd_op *op, struct lk_etcd_xfer *x,
                          struct lk_etcd_outcome *o)
{
	struct lk_etcd *e = op->e;
	const char *step = lk_etcd_step_names[op->step];

	op->xfer = NULL;
	if (o->ok) {
		lk_etcd_op_parsed(op, x, o);
		return;
	}
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
	/* History compacted away (or any refusal): nothing known, so the wait applies. */
	if (op->step == LK_ETCD_STEP_HISTORY && !o->transport) {
		lk_etcd_history_known(op, false, false);
		op->step = LK_ETCD_STEP_PEEK;
		lk_etcd_op_next(op);
		return;
	}
	/* "requested lease not found": our shared lease is gone, and every key on it. Grant
	 * another and create our key on it, once. */
	if (op->step == LK_ETCD_STEP_CREATE && !o->transport && o->code == 5 && !op->reclaimed &&
	    op->l) {
		op->reclaimed = true;
		if (op->l->id == op->lease)
			lk_etcd_lease_gone(op->l);
		op->step = LK_ETCD_STEP_LEASE;
		op->after_lease = LK_ETCD_STEP_CREATE;
		if (lk_etcd_op_send(op) >= 0)
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

/* Our key is the oldest candidate. Lead at once when the tenure before ours is known to have
 * ended with a release (see the top of this file); otherwise one ttl after the look that first
 * found our key oldest. Returns true while that wait runs (holdoff_until() says until when). */
/* A 2xx answer to a step: parse it and move on. */
static void lk_etcd_op_parsed(struct lk_etcd_op *op, struct lk_etcd_xfer *x,
                              struct lk_etcd_outcome *o)
{
	struct lk_etcd *e = op->e;
	struct lk_backend_key *k = op->k;
	const char *step = lk_etcd_step_names[op->step];
	const char *body = x->resp ? x->resp : "";
	char err[LK_ETCD_MAX_ERR_LEN], own[LK_ETCD_JSON_MAX_KEY + 1];
	struct lk_etcd_look_keys keys;
	struct lk_etcd_history h;
	struct lk_etcd_look *lk;
	struct lk_etcd_txn t;
	size_t n;
	int rc;

	err[0] = '\0';
	switch (op->step) {
	case LK_ETCD_STEP_CREATE:
	case LK_ETCD_STEP_PEEK:
	case LK_ETCD_STEP_CHECK:
		lk = malloc(sizeof(*lk));
		if (!lk) {
			lk_etcd_op_fail(op, LK_REPLY_ERROR, "%s: out of memory", step);
			return;
		}
		lk_etcd_look_keys(k, op->lease, own, &keys);
		rc = lk_etcd_json_parse_look(body, x->resp_len, &keys,
		                             op->step == LK_ETCD_STEP_CREATE, lk, err, sizeof(err));
		if (rc == 0) {
			lk_etcd_mark_up(e);
			/* A tenure on a cluster that was just found replaced must not start. */
			if (lk_etcd_seen_write(e, lk->cluster_id, lk->revision, x,
			                       op->step == LK_ETCD_STEP_CREATE && lk->succeeded) &&
			    op->kind == LK_ETCD_ACQUIRE)
				lk_etcd_op_fail(op, LK_REPLY_ERROR, "%s", e->replaced_why);
			else if (op->step == LK_ETCD_STEP_CHECK)
				lk_etcd_checked(op, lk);
			else
				lk_etcd_looked(op, lk);
		}
		free(lk);
		if (rc == 0)
			return;
		break;

	case LK_ETCD_STEP_HISTORY:
		rc = lk_etcd_json_parse_history(body, x->resp_len, k->qkey, k->qkey_len, &h, err,
		                                sizeof(err));
		if (rc < 0)
			break;
		lk_etcd_mark_up(e);
		/* As at creation (lk_etcd_oldest): nobody older, and the release the marker names
		 * was of the candidate that came just before ours. */
		lk_etcd_history_known(op, h.n_candidates == 0 && h.seq_found && op->released_rev &&
		                          h.seq_mod_revision == op->released_rev,
		                      h.n_candidates == 0 && !h.seq_found && !op->state_found);
		op->step = LK_ETCD_STEP_PEEK;
		lk_etcd_op_next(op);
		return;

	case LK_ETCD_STEP_RECLAIM:
		n = lk_etcd_cand_key(k, op->lease, own);
		rc = lk_etcd_json_parse_txn(body, x->resp_len, own, n, &t, err, sizeof(err));
		if (rc < 0)
			break;
		lk_etcd_mark_up(e);
		if (lk_etcd_seen(e, t.cluster_id, t.revision, x)) {
			lk_etcd_op_fail(op, LK_REPLY_ERROR, "%s", e->replaced_why);
			return;
		}
		/* Deleted, or gone meanwhile: queue up again with a new key. */
		k->cand_rev = 0;
		op->step = LK_ETCD_STEP_CREATE;
		lk_etcd_op_next(op);
		return;

	case LK_ETCD_STEP_DELETE:
	default:
		n = lk_etcd_cand_key(k, op->lease, own);
		rc = lk_etcd_json_parse_txn(body, x->resp_len, own, n, &t, err, sizeof(err));
		if (rc < 0)
			break;
		lk_etcd_mark_up(e);
		(void)lk_etcd_seen(e, t.cluster_id, t.revision, x);
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

/* ---- acquire, renew, release ------------------------------------------------------------ */

int lk_etcd_acquire(struct lk_backend_key *k, int64_t ttl_ms, lk_backend_reply_fn *cb,
                    void *arg)
{
	struct lk_etcd_op *op;
	struct lk_etcd_lease *l;

	if (!k || k->dead || !cb || ttl_ms <= 0)
		return -EINVAL;
	if (k->e->closing)
		return -ESHUTDOWN;
	l = lk_etcd_lease_get(k->e, ttl_ms);
	if (!l)
		return -ENOMEM;
	op = lk_etcd_op_new(k, LK_ETCD_ACQUIRE, LK_ETCD_STEP_LEASE, cb, arg);
	if (!op)
		return -ENOMEM;
	op->ttl_ms = ttl_ms;
	op->l = l;
	/* Asked to acquire while a tenure of ours runs: the lock gave it up (LOST, a stepdown
	 * timeout). Its key stays until its lease as last proven runs out (lk_etcd_texp_cb). */
	if (k->token && !k->ended)
		k->given_up = true;
	/* After a replaced cluster, a key of ours it kept could name an old revision: queue up
	 * with a new one, created with a fence re-seeded from the clock. */
	if (k->refence && k->cand_rev && !(k->token && !k->ended && k->rev == k->cand_rev))
		lk_etcd_withdraw(k, k->cand_rev, k->cand_lease);
	/* With a key on the current lease, a look costs no write; else create one. */
	op->after_lease = k->cand_rev && k->cand_lease == l->id && l->id ? LK_ETCD_STEP_PEEK
	                                                                   : LK_ETCD_STEP_CREATE;
	if (lk_etcd_fast_lead(op))
		return lk_etcd_op_defer(op, LK_REPLY_OK);
	return lk_etcd_op_start(op);
}

int lk_etcd_renew(struct lk_backend_key *k, uint64_t token, int64_t ttl_ms,
                  lk_backend_reply_fn *cb, void *arg)
{
	struct lk_etcd_op *op;
	struct lk_etcd_lease *l;

	if (!k || k->dead || !cb || ttl_ms <= 0 || token == 0 || token > INT64_MAX)
		return -EINVAL;
	if (k->e->closing)
		return -ESHUTDOWN;
	/* etcd extends leases, not keys: the tenure's lease restores the TTL it was granted
	 * with, whatever ttl_ms says. Without it (replaced since, when etcd said it was gone)
	 * there is nothing of ours left to extend. */
	TAILQ_FOREACH(l, &k->e->leases, link)
		if (l->id && l->id == k->lease)
			break;
	op = lk_etcd_op_new(k, LK_ETCD_RENEW, LK_ETCD_STEP_LEASE, cb, arg);
	if (!op)
		return -ENOMEM;
	op->token = token;
	op->ttl_ms = ttl_ms;
	op->l = l;
	op->after_lease = LK_ETCD_STEP_BATCH;
	if (k->token != token || k->lease == 0 || k->ended || !l)
		return lk_etcd_op_defer(op, LK_REPLY_GONE);
	op->rev = k->rev;
	return lk_etcd_op_start(op);
}

int lk_etcd_release(struct lk_backend_key *k, uint64_t token, lk_backend_reply_fn *cb,
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
	 * on the lease is what makes this safe (I3). */
	if (k->token != token || k->rev <= 0)
		return lk_etcd_op_defer(op, LK_REPLY_GONE);
	op->rev = k->rev;
	op->lease = k->lease;
	return lk_etcd_op_start(op);
}
