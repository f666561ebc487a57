/* The etcd backend's election: what the answers to the lock operations (etcd_op.c) mean for a
 * key's candidacy and tenure.
 *
 * The lock protocol is an election, as etcd's own concurrency.Election runs one. Every
 * campaigning agent keeps a candidate key "<key>/<lease>" (value: its identity) on its shared
 * lease (etcd_lease.c); the candidates form a queue by create_revision, and the oldest leads.
 * A handoff is one DELETE event and no write: the next candidate, watching the prefix, looks
 * (a read-only txn), finds its key oldest, and leads. FIFO order among candidates comes with
 * it. The token is base + our key's create_revision, where the base is the value of
 * "<key>:fence", seeded from the wall clock in microseconds whenever it is missing: a key
 * leads only once every older key is gone, so tokens increase from tenure to tenure, and a
 * cluster rebuilt empty (revisions from 1 again) has lost its fence key too, which is then
 * seeded with a far larger base.
 *   acquire = create our key if missing (txn; also seeds the fence key and rewrites
 *             "<key>:seq"), or a read-only look once it exists; either reads our key, the
 *             fence key, the release marker and the two oldest candidates. Oldest: lead, with
 *             validity counted from the lease's last keepalive (I1).
 *   renew   = the shared lease's keepalive + range of our key: still ours, same revision.
 *   release = txn "delete our key if its create_revision and lease are the tenure's, and set
 *             <key>:state to released <create_revision>".
 *   withdraw = the same delete without the marker, when a candidate stops campaigning.
 *
 * The guard against an end without a release. etcd 3.4.30 and older and 3.5.12 and older
 * revoke a lease early when their frozen raft leader wakes up (etcd#15247): a holder whose
 * keepalives the new leader answered still believes it leads until its renew deadline, less
 * than one ttl after its last keepalive. So the next candidate leads at once only when it
 * knows the previous tenure ended with a release; otherwise it waits one ttl (lk_etcd_oldest):
 * - a candidate whose only older key was P leads at once if the marker names P's release;
 * - a new candidate that finds no older key leads at once if the marker names the release of
 *   the candidate that arrived just before it ("<key>:seq" was last rewritten by it), or if
 *   the lock never had a candidate;
 * - anything else (an expiry, a revoke, a crash, a candidate that withdrew while oldest)
 *   waits one ttl from the look that first found our key oldest.
 * A tenure whose lock stopped renewing it (LOST, a stepdown timeout) keeps its key until its
 * lease as last proven would have run out, as a lease of its own would (texp), and that key
 * never leads again: a new candidacy gets a new key.
 */

#include "locks/etcd_int.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

size_t lk_etcd_cand_key(const struct lk_backend_key *k, int64_t lease, char *buf)
{
	memcpy(buf, k->pkey, k->pkey_len);
	snprintf(buf + k->pkey_len, LK_ETCD_CAND_HEX + 1, "%016" PRIx64 "%04x", (uint64_t)lease,
	         k->num & 0xffff);
	return k->pkey_len + LK_ETCD_CAND_HEX;
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

/* ---- fire and forget -------------------------------------------------------------------- */

/* Delete one candidate key of ours (compare create_revision and lease); marker: as a release,
 * so that the next candidate need not wait. */
static void lk_etcd_delete_key(struct lk_backend_key *k, int64_t rev, int64_t lease, bool marker)
{
	struct lk_etcd *e = k->e;
	char name[LK_ETCD_JSON_MAX_KEY + 1];
	size_t n;
	char *body;

	if (e->closing || rev <= 0 || lease <= 0)
		return;
	n = lk_etcd_cand_key(k, lease, name);
	if (lk_etcd_json_txn_release(name, n, marker ? k->tkey : NULL, k->tkey_len, rev, lease,
	                             &body) == 0)
		(void)lk_etcd_xfer_start(e, LK_ETCD_X_REVOKE, LK_ETCD_CALL_TXN, body, false,
		                         e->timeout_ms);
}

void lk_etcd_withdraw(struct lk_backend_key *k, int64_t rev, int64_t lease)
{
	if (k->cand_rev == rev && k->cand_lease == lease)
		k->cand_rev = 0;
	lk_etcd_delete_key(k, rev, lease, false);
	lk_etcd_lease_idle_check(k->e);
}

/* The tenure's lease, as last proven, has run out: a lease of its own would have taken the
 * key now. Unless renewed or released meanwhile, the tenure is over and its key goes. */
void lk_etcd_texp_cb(evutil_socket_t fd, short what, void *arg)
{
	struct lk_backend_key *k = arg;
	struct lk_etcd *e = k->e;

	lk_etcd_enter(e);
	if (!e->closing && k->token && !k->ended) {
		k->ended = true;
		lk_etcd_withdraw(k, k->rev, k->lease);
	}
	/* key_free() kept a freed key for this moment. */
	if (!e->closing && k->dead)
		lk_etcd_key_unref(k);
	lk_etcd_leave(e);
}

void lk_etcd_tenure_proven(struct lk_backend_key *k, int64_t sent_ns, int64_t ttl_s)
{
	struct timeval tv;

	k->texp_ns = sent_ns + ttl_s * 1000000000;
	lk_etcd_timeval(&tv, (k->texp_ns - lk_mono_ns()) / 1000000 + 1);
	evtimer_add(k->texp, &tv);
}

/* Forget the tenure a key holds once it has ended (released, gone, taken). */
void lk_etcd_key_end_tenure(struct lk_backend_key *k, uint64_t token)
{
	if (k->token == token) {
		k->ended = true;
		evtimer_del(k->texp);
		if (k->cand_rev == k->rev && k->cand_lease == k->lease)
			k->cand_rev = 0;
		lk_etcd_lease_idle_check(k->e);
	}
}

/* The key op names (op->rev on op->lease) starts a tenure proven at op->sent_ns for op->ttl_s,
 * token op->token. A key freed meanwhile will never be renewed or released: its key goes now,
 * as a release, rather than a ttl later. */
static void lk_etcd_tenure_start(struct lk_etcd_op *op)
{
	struct lk_backend_key *k = op->k;

	if (k->dead) {
		lk_etcd_delete_key(k, op->rev, op->lease, true);
		return;
	}
	k->token = op->token;
	k->rev = op->rev;
	k->lease = op->lease;
	k->ended = false;
	k->given_up = false;
	lk_etcd_tenure_proven(k, op->sent_ns, op->ttl_s);
}

/* Our key was first found oldest now: record whether the tenure before ours is known to have
 * ended with a release (graceful; first: the lock never had a candidate, so no tenure at all),
 * and from when a wait of one ttl runs if not. */
void lk_etcd_history_known(struct lk_etcd_op *op, bool graceful, bool first)
{
	struct lk_backend_key *k = op->k;

	k->lowest_for = k->cand_rev;
	k->lowest_ns = lk_mono_ns();
	k->lowest_graceful = graceful || first;
	k->lowest_after = first ? LK_AFTER_FIRST : graceful ? LK_AFTER_RELEASE : LK_AFTER_EXPIRY;
	if (!graceful)
		lk_etcd_log(op->e, LK_BLOG_INFO, "%s: the last tenure ended without a release (an "
		            "expiry, a revoke, a crash, or a withdrawal): waiting one ttl before "
		            "leading", k->key);
}

static bool lk_etcd_oldest(struct lk_etcd_op *op, const struct lk_etcd_look *lk, bool created)
{
	struct lk_backend_key *k = op->k;

	if (k->lowest_for != k->cand_rev)
		lk_etcd_history_known(op,
			(k->pred_for == k->cand_rev && k->pred_rev && lk->released_rev == k->pred_rev) ||
			(created && lk->seq_found && lk->released_rev &&
			 lk->seq_mod_revision == lk->released_rev),
			created && !lk->seq_found && !lk->state_found);
	return !k->lowest_graceful && lk_mono_ns() - k->lowest_ns < op->ttl_ms * 1000000;
}

/* Lead with our key (lk->own), validity counted from the lease's last keepalive. */
static void lk_etcd_lead(struct lk_etcd_op *op, const struct lk_etcd_look *lk)
{
	struct lk_backend_key *k = op->k;

	if (!lk->fence_found || lk->fence_bad || lk->fence > INT64_MAX - k->cand_rev) {
		lk_etcd_op_fail(op, LK_REPLY_FATAL, "fence key %s %s: delete it, and the next "
		                "acquire seeds it again from the clock", k->fkey,
		                lk->fence_found ? "holds no usable token base" : "is missing");
		return;
	}
	op->token = (uint64_t)(lk->fence + k->cand_rev);
	op->rev = k->cand_rev;
	/* A proof older than a third of the ttl would make a short tenure: keep the lease alive
	 * first (no write), then check that our key is still there. */
	if (lk_mono_ns() - op->l->proven_ns > op->ttl_ms * 1000000 / 3 || op->l->id != op->lease) {
		op->step = LK_ETCD_STEP_LEASE;
		op->after_lease = LK_ETCD_STEP_CHECK;
		lk_etcd_op_next(op);
		return;
	}
	op->sent_ns = op->l->proven_ns;
	op->ttl_s = op->l->proven_ttl_s;
	lk_etcd_tenure_start(op);
	lk_etcd_op_reply(op, LK_REPLY_OK, NULL);
}

/* The answer to a look (CREATE or PEEK). */
void lk_etcd_looked(struct lk_etcd_op *op, const struct lk_etcd_look *lk)
{
	struct lk_backend_key *k = op->k;
	bool created = op->step == LK_ETCD_STEP_CREATE;

	k->fast_lead = false;
	k->fence_known = lk->fence_found && !lk->fence_bad;
	k->fence = k->fence_known ? lk->fence : 0;

	if (created && lk->succeeded)
		k->refence = false;
	/* A holder of the single-key layout (an agent older than the election): it cannot see
	 * our queue, so nobody here leads while it holds. */
	if (lk->legacy_found) {
		lk_etcd_op_reply(op, LK_REPLY_HELD, lk_etcd_holder(&lk->legacy));
		return;
	}
	if (!lk->own_found) {
		/* Our key went (its lease expired, someone deleted it): queue up again, once. */
		if (created || op->reclaimed) {
			lk_etcd_op_fail(op, LK_REPLY_FATAL, "our candidate key under %s reads back "
			                "missing", k->pkey);
			return;
		}
		op->reclaimed = true;
		k->cand_rev = 0;
		op->step = LK_ETCD_STEP_CREATE;
		lk_etcd_op_next(op);
		return;
	}
	if (lk->n_first == 0) {
		lk_etcd_op_fail(op, LK_REPLY_FATAL, "our candidate key under %s is missing from "
		                "the candidates", k->pkey);
		return;
	}
	/* Written over by someone else (a plain put keeps create_revision and drops the lease):
	 * not ours any more, and never ours to delete. It stands in the queue under its new
	 * holder until it goes; then we queue up again. */
	if (lk->own.lease != op->lease) {
		k->cand_rev = 0;
		lk_etcd_op_reply(op, LK_REPLY_HELD, lk_etcd_holder(&lk->own));
		return;
	}
	/* A key that led once never leads again (its token would repeat): while the lease of
	 * that tenure, as last proven, may still be counted on, wait; then delete it. */
	if (k->token && lk->own.create_revision == k->rev && op->lease == k->lease) {
		if (lk_mono_ns() < k->texp_ns && !k->ended) {
			lk_etcd_op_reply(op, LK_REPLY_HELD, NULL);
			return;
		}
		if (op->reclaimed) {
			lk_etcd_op_fail(op, LK_REPLY_ERROR, "our spent key under %s is still there",
			                k->pkey);
			return;
		}
		op->reclaimed = true;
		op->orphan_rev = k->rev;
		op->step = LK_ETCD_STEP_RECLAIM;
		lk_etcd_op_next(op);
		return;
	}
	k->cand_rev = lk->own.create_revision;
	k->cand_lease = op->lease;
	/* Oldest with a key whose creation we never saw answered (a lost answer, a replaced
	 * cluster): what the queue looked like then decides, read from etcd's history. */
	if (lk->first_own[0] && k->lowest_for != k->cand_rev && k->pred_for != k->cand_rev &&
	    !(created && lk->succeeded) && k->cand_rev > 1) {
		op->released_rev = lk->released_rev;
		op->state_found = lk->state_found;
		op->step = LK_ETCD_STEP_HISTORY;
		lk_etcd_op_next(op);
		return;
	}
	if (lk->first_own[0]) {
		if (lk_etcd_oldest(op, lk, created && lk->succeeded))
			lk_etcd_op_reply(op, LK_REPLY_HELD, NULL);
		else
			lk_etcd_lead(op, lk);
		return;
	}
	/* Behind someone: remember whether it is our only older candidate (a later look that
	 * finds us oldest then knows whose release to look for). */
	k->pred_for = k->cand_rev;
	k->pred_rev = lk->n_first == 2 && lk->first_own[1] ? lk->first[0].create_revision : 0;
	lk_etcd_op_reply(op, LK_REPLY_HELD, lk_etcd_holder(&lk->first[0]));
}

/* The look that proves a tenure (a renewal's, or an acquire's after a fresh keepalive): our
 * key, same create_revision, still on our lease. */
void lk_etcd_checked(struct lk_etcd_op *op, const struct lk_etcd_look *lk)
{
	struct lk_backend_key *k = op->k;
	const struct lk_etcd_kv *other = NULL;

	if (lk->own_found && lk->own.create_revision == op->rev && lk->own.lease == op->lease &&
	    !lk->legacy_found) {
		if (op->kind == LK_ETCD_ACQUIRE)
			lk_etcd_tenure_start(op);
		else if (!k->dead && k->token == op->token)
			lk_etcd_tenure_proven(k, op->sent_ns, op->ttl_s);
		lk_etcd_op_reply(op, LK_REPLY_OK, NULL);
		return;
	}
	if (op->kind == LK_ETCD_ACQUIRE) {
		/* Gone between the look and the keepalive: look again later. */
		k->cand_rev = 0;
		lk_etcd_op_fail(op, LK_REPLY_ERROR, "our candidate key went before we led");
		return;
	}
	/* A holder of the single-key layout appeared (an older agent, which cannot see our
	 * queue), our key was written over (a plain put keeps create_revision and drops the
	 * lease), or it is gone while another candidate now comes first. */
	if (lk->legacy_found)
		other = &lk->legacy;
	else if (lk->own_found && lk->own.create_revision == op->rev)
		other = &lk->own;
	else if (lk->n_first > 0 && !lk->first_own[0])
		other = &lk->first[0];
	lk_etcd_key_end_tenure(k, op->token);
	lk_etcd_op_reply(op, other ? LK_REPLY_TAKEN : LK_REPLY_GONE,
	                 other ? lk_etcd_holder(other) : NULL);
}

/* The watch saw our only older candidate released (lk_etcd_watch_markers): our key is the
 * oldest, after a release, and what a look would read is known (the fence unchanged since the
 * last look, the lease kept alive within a third of the ttl). Lead without asking etcd: the
 * handoff is the watch event alone, as in concurrency.Election. Returns false when anything
 * is less than certain, and the acquire looks as usual. */
bool lk_etcd_fast_lead(struct lk_etcd_op *op)
{
	struct lk_backend_key *k = op->k;
	struct lk_etcd_lease *l = op->l;

	if (!k->fast_lead || !k->fence_known || !k->cand_rev || k->refence || !l->id ||
	    k->cand_lease != l->id || k->pred_for != k->cand_rev ||
	    (k->token && k->rev == k->cand_rev) || k->fence > INT64_MAX - k->cand_rev ||
	    lk_mono_ns() - l->proven_ns > op->ttl_ms * 1000000 / 3)
		return false;
	k->fast_lead = false;
	op->token = (uint64_t)(k->fence + k->cand_rev);
	op->rev = k->cand_rev;
	op->lease = l->id;
	op->sent_ns = l->proven_ns;
	op->ttl_s = l->proven_ttl_s;
	k->lowest_for = k->cand_rev;
	k->lowest_ns = lk_mono_ns();
	k->lowest_graceful = true;
	k->lowest_after = LK_AFTER_RELEASE;
	lk_etcd_tenure_start(op);
	return true;
}
