/* The etcd backend's batched renewals. A renewal is the shared lease's keepalive (etcd_lease.c,
 * itself shared) and then a read proving that our candidate key is still there, at the
 * tenure's create_revision, on our lease. With 10,000 locks that read would be 3,000 requests a
 * second; instead the renewals that reach it in one turn of the loop (the lock's renewals line
 * up on a 50 ms grid) share one read-only txn of up to LK_ETCD_BATCH_MAX keys. A key that is
 * not plainly ours in the answer falls back to the single look (etcd_op.c, step CHECK), which
 * tells TAKEN from GONE and names the new holder; a failed txn fails its renewals as a single
 * request would, and the lock retries.
 */

#include "locks/etcd_int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

static void lk_etcd_batch_send(struct lk_etcd *e);

static void lk_etcd_batch_cb(evutil_socket_t fd, short what, void *arg)
{
	struct lk_etcd *e = arg;

	lk_etcd_enter(e);
	if (!e->closing)
		lk_etcd_batch_send(e);
	lk_etcd_leave(e);
}

int lk_etcd_batch_join(struct lk_etcd_op *op)
{
	static const struct timeval now = { 0, 0 };
	struct lk_etcd *e = op->e;

	if (!e->batch_ev && !(e->batch_ev = evtimer_new(e->base, lk_etcd_batch_cb, e)))
		return -ENOMEM;
	op->step = LK_ETCD_STEP_BATCH;
	op->bwaiting = true;
	TAILQ_INSERT_TAIL(&e->batch_wait, op, lwait);
	/* At the end of this loop turn: every renewal of this tick is in by then. */
	if (!evtimer_pending(e->batch_ev, NULL))
		evtimer_add(e->batch_ev, &now);
	return 0;
}

void lk_etcd_batch_leave(struct lk_etcd_op *op)
{
	if (op->bwaiting) {
		TAILQ_REMOVE(&op->e->batch_wait, op, lwait);
		op->bwaiting = false;
	}
	if (op->bx) {
		op->bx->batch[op->bslot] = NULL;
		op->bx = NULL;
	}
}

/* One txn for up to LK_ETCD_BATCH_MAX waiting renewals; again until none waits. A txn that
 * cannot be sent fails its renewals with ERROR. */
static void lk_etcd_batch_send(struct lk_etcd *e)
{
	char *names[LK_ETCD_BATCH_MAX], *body = NULL;
	const char *legacy[LK_ETCD_BATCH_MAX];
	size_t lens[LK_ETCD_BATCH_MAX], llens[LK_ETCD_BATCH_MAX];
	struct lk_etcd_op *op, **ops;
	struct lk_etcd_xfer *x = NULL;
	size_t n = 0;
	int rc = -ENOMEM;

	if (TAILQ_EMPTY(&e->batch_wait))
		return;
	ops = calloc(LK_ETCD_BATCH_MAX, sizeof(*ops));
	memset(names, 0, sizeof(names));
	while (ops && n < LK_ETCD_BATCH_MAX && (op = TAILQ_FIRST(&e->batch_wait))) {
		TAILQ_REMOVE(&e->batch_wait, op, lwait);
		op->bwaiting = false;
		ops[n] = op;
		names[n] = malloc(LK_ETCD_JSON_MAX_KEY + 1);
		if (!names[n]) {
			n++;
			goto fail;
		}
		lens[n] = lk_etcd_cand_key(op->k, op->lease, names[n]);
		legacy[n] = op->k->key;
		llens[n] = op->k->key_len;
		n++;
	}
	if (!ops)
		goto fail;
	rc = lk_etcd_json_txn_batch((const char *const *)names, lens, legacy, llens, n, &body);
	if (rc == 0) {
		x = lk_etcd_xfer_start(e, LK_ETCD_X_BATCH, LK_ETCD_CALL_TXN, body, false,
		                       e->timeout_ms);
		rc = x ? 0 : -ENOMEM;
	}
	if (rc < 0)
		goto fail;
	x->batch = ops;
	x->n_batch = n;
	for (size_t i = 0; i < n; i++) {
		ops[i]->bx = x;
		ops[i]->bslot = i;
	}
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	/* More than one txn's worth: the next one now. */
	if (!TAILQ_EMPTY(&e->batch_wait))
		lk_etcd_batch_send(e);
	return;

fail:
	/* Back in the queue, then failed from it one by one: a callback may free other keys, and
	 * their ops leave the queue as they go. */
	for (size_t i = n; i-- > 0;) {
		free(names[i]);
		ops[i]->bwaiting = true;
		TAILQ_INSERT_HEAD(&e->batch_wait, ops[i], lwait);
	}
	free(ops);
	while (!e->closing && (op = TAILQ_FIRST(&e->batch_wait))) {
		lk_etcd_batch_leave(op);
		lk_etcd_op_fail(op, LK_REPLY_ERROR, "renew failed: %s", strerror(-rc));
	}
}

/* The transfer goes without an answer (the backend is closing): its renewals are owned by
 * their ops, which the caller frees; only forget them here. */
void lk_etcd_batch_abort(struct lk_etcd_xfer *x)
{
	for (size_t i = 0; i < x->n_batch; i++)
		if (x->batch[i])
			x->batch[i]->bx = NULL;
	free(x->batch);
	x->batch = NULL;
	x->n_batch = 0;
}

void lk_etcd_batch_done(struct lk_etcd *e, struct lk_etcd_xfer *x, struct lk_etcd_outcome *o)
{
	char *names[LK_ETCD_BATCH_MAX], err[LK_ETCD_MAX_ERR_LEN];
	const char *legacy[LK_ETCD_BATCH_MAX];
	size_t lens[LK_ETCD_BATCH_MAX], llens[LK_ETCD_BATCH_MAX], n = x->n_batch;
	bool found[LK_ETCD_BATCH_MAX], lfound[LK_ETCD_BATCH_MAX], named = true;
	struct lk_etcd_kv *kv = NULL;
	uint64_t cluster_id = 0;
	int64_t revision = 0;
	int rc = -ENOMEM;

	/* The names asked for, in order; a slot whose op went meanwhile still has its ranges in
	 * the answer: any valid key stands in for it. */
	for (size_t i = 0; i < n; i++) {
		const struct lk_etcd_op *op = x->batch[i];

		names[i] = malloc(LK_ETCD_JSON_MAX_KEY + 1);
		named = named && names[i];
		if (names[i] && op) {
			lens[i] = lk_etcd_cand_key(op->k, op->lease, names[i]);
			legacy[i] = op->k->key;
			llens[i] = op->k->key_len;
		} else if (names[i]) {
			names[i][0] = '-';
			lens[i] = 1;
			legacy[i] = "-";
			llens[i] = 1;
		}
	}
	if (o->ok) {
		kv = named ? calloc(n ? n : 1, sizeof(*kv)) : NULL;
		if (kv)
			rc = lk_etcd_json_parse_batch(x->resp ? x->resp : "", x->resp_len,
			                              (const char *const *)names, lens, legacy, llens,
			                              n, kv, found, lfound, &cluster_id, &revision, err,
			                              sizeof(err));
		else
			snprintf(err, sizeof(err), "out of memory");
		if (rc == 0) {
			lk_etcd_mark_up(e);
			(void)lk_etcd_seen(e, cluster_id, revision, x);
		} else if (rc == -EPROTO) {
			lk_etcd_outcome_error_body(x, o);
		} else {
			snprintf(o->why, sizeof(o->why), "bad response to a batch of renewals from %s: "
			         "%s", e->endpoints[x->endpoint], err);
			if (rc != -ENOMEM)
				lk_etcd_mark_down(e, o->why);
		}
	} else if (o->conn_level) {
		lk_etcd_endpoint_failed(e, x->endpoint, o->why);
		lk_etcd_mark_down(e, o->why);
	}
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	/* Each op leaves the batch before its callback runs, which may free other keys and so
	 * their ops: those leave through lk_etcd_batch_leave() and empty their slots. */
	for (size_t i = 0; i < n && !e->closing; i++) {
		struct lk_etcd_op *op = x->batch[i];

		if (!op)
			continue;
		x->batch[i] = NULL;
		op->bx = NULL;
		/* Plainly ours: proven. Anything else: the single look says what happened. */
		if (rc == 0 && found[i] && !lfound[i] && kv[i].create_revision == op->rev &&
		    kv[i].lease == op->lease) {
			if (op->k->token == op->token && !op->k->dead)
				lk_etcd_tenure_proven(op->k, op->sent_ns, op->ttl_s);
			lk_etcd_op_reply(op, LK_REPLY_OK, NULL);
		} else if (rc == 0) {
			op->step = LK_ETCD_STEP_CHECK;
			lk_etcd_op_next(op);
		} else if (o->ok && rc != -EPROTO) {
			lk_etcd_op_fail(op, rc == -ENOMEM ? LK_REPLY_ERROR : LK_REPLY_FATAL, "%s",
			                o->why);
		} else {
			lk_etcd_op_fail(op, o->transport || o->stale_token ? LK_REPLY_ERROR
			                    : lk_etcd_error_status(o->http, o->code),
			                "renew failed: %s", o->why);
		}
	}
	free(kv);
	lk_etcd_batch_abort(x);
}

void lk_etcd_batch_free(struct lk_etcd *e)
{
	if (e->batch_ev)
		event_free(e->batch_ev);
}
