/* The etcd backend's lock operations: acquire, renew and release, each a chain of steps
 * (one HTTP request each), and what their answers mean for the key's tenure.
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
 * Orphans: an acquire txn that got no answer (timeout, broken connection) may still have
 * created the key. The key remembers that, and the next acquire that finds the key held under
 * its own identity by a tenure it never reported deletes exactly that key revision (txn
 * compare create_revision and lease), revokes its lease, and goes on acquiring.
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

static int lk_etcd_op_send(struct lk_etcd_op *op);
static void lk_etcd_op_parsed(struct lk_etcd_op *op, struct lk_etcd_xfer *x,
                              struct lk_etcd_outcome *o);

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

/* ---- fire and forget -------------------------------------------------------------------- */

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

/* Forget the tenure a key holds once it has ended (released, gone, taken). */
static void lk_etcd_key_end_tenure(struct lk_backend_key *k, uint64_t token)
{
	if (k->token == token)
		k->ended = true;
}

/* ---- operations ------------------------------------------------------------------------- */

void lk_etcd_op_free(struct lk_etcd_op *op)
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

void lk_etcd_op_fail(struct lk_etcd_op *op, enum lk_reply_status status,
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
void lk_etcd_op_next(struct lk_etcd_op *op)
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

static void lk_etcd_op_parsed(struct lk_etcd_op *op, struct lk_etcd_xfer *x,
                              struct lk_etcd_outcome *o);

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
		if (lk_etcd_seen(e, pk.cluster_id, pk.revision, x)) {
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
		if (lk_etcd_seen(e, g.cluster_id, g.revision, NULL)) {
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
		if (lk_etcd_seen(e, aq.cluster_id, aq.revision, x)) {
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
		if (lk_etcd_seen(e, t.cluster_id, t.revision, x)) {
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
		(void)lk_etcd_seen(e, ka.cluster_id, ka.revision, NULL);
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
		(void)lk_etcd_seen(e, rg.cluster_id, rg.revision, x);
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
		(void)lk_etcd_seen(e, t.cluster_id, t.revision, x);
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

/* ---- acquire, renew, release ------------------------------------------------------------ */

int lk_etcd_acquire(struct lk_backend_key *k, int64_t ttl_ms, lk_backend_reply_fn *cb,
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

int lk_etcd_renew(struct lk_backend_key *k, uint64_t token, int64_t ttl_ms,
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
	 * on the lease is what makes this safe (I3); the lease is revoked afterwards. */
	if (k->token != token || k->rev <= 0)
		return lk_etcd_op_defer(op, LK_REPLY_GONE);
	op->rev = k->rev;
	op->lease = k->lease;
	return lk_etcd_op_start(op);
}
