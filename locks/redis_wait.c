/* min_replicas_acked: an acquire or renewal counts as proven only once N replicas have it
 * (see redis.c for the backend as a whole).
 *
 * Redis replicates asynchronously: a tenure the master acknowledged may be missing on the
 * replica that Sentinel promotes, and a master cut off from its replicas (or whose replicas
 * Sentinel moved to a new master) still takes the old leader's renewals. `WAIT N timeout`,
 * sent on the same connection right after the script, answers how many replicas have every
 * write made before it; the script's OK waits for that answer and becomes an ERROR when fewer
 * than N did. Validity still counts from the script's send time (I1).
 *
 * Lifetimes: the WAIT request is sent after its script and answered after it (a connection
 * answers in order), so a script's `wait` pointer is valid whenever the script's reply is
 * handled. A script sent again (NOSCRIPT, a reclaim) detaches its old WAIT and sends a new
 * one after itself. The WAIT holds its own reference on the key.
 *
 * Cost: WAIT blocks the command connection on the server until the replicas answer (a round
 * trip to them) or half the backend `timeout` passes, and every lock's requests queue behind
 * it; with replicas gone, every acquire and renewal fails after that half timeout. */
#include "locks/redis_int.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/async.h>
#include <hiredis/hiredis.h>

void lk_redis_wait_send(struct lk_redis_conn *conn, struct lk_redis_req *req)
{
	struct lk_redis *r = conn->r;
	struct lk_backend_key *k = req->k;
	char n[16], ms[24];
	const char *argv[3] = { "WAIT", n, ms };
	size_t lens[3] = { 4, 0, 0 };
	struct lk_redis_req *w;

	if (req->wait) {
		req->wait->detached = true;
		req->wait = NULL;
	}
	if (!r->min_acked || req->script == LK_REDIS_RELEASE)
		return;
	/* Without memory for it, no WAIT goes out, and lk_redis_wait_hold() refuses the OK. */
	w = calloc(1, sizeof(*w));
	if (!w)
		return;
	w->kind = LK_REDIS_REQ_WAIT;
	w->script = req->script;
	w->cb = req->cb;
	w->arg = req->arg;
	w->prev_token = k->proven_token;
	w->prev_until_ns = k->proven_until_ns;
	w->deadline_ns = lk_mono_ns() + r->timeout_ms * 1000000;
	/* The server answers within half the backend timeout, before our own deadline. */
	lens[1] = (size_t)snprintf(n, sizeof(n), "%u", r->min_acked);
	lens[2] = (size_t)snprintf(ms, sizeof(ms), "%" PRId64,
	                           r->timeout_ms / 2 > 0 ? r->timeout_ms / 2 : 1);
	if (lk_redis_send(conn, w, lk_redis_cmd_cb, w, 3, argv, lens) < 0) {
		free(w);
		return;
	}
	w->k = k;
	k->refs++;
	req->wait = w;
}

bool lk_redis_wait_hold(struct lk_redis_req *req, struct lk_reply *rep, char *msg, size_t cap)
{
	struct lk_redis *r = req->k->r;
	struct lk_redis_req *w = req->wait;

	if (!r->min_acked || req->script == LK_REDIS_RELEASE)
		return false;
	if (rep->status != LK_REPLY_OK) {
		if (w)
			w->detached = true;
		return false;
	}
	if (!w || w->detached) {
		snprintf(msg, cap, "%s not proven: no WAIT for %u replicas could be sent",
		         req->script == LK_REDIS_ACQUIRE ? "acquire" : "renewal", r->min_acked);
		rep->status = LK_REPLY_ERROR;
		rep->err = msg;
		if (req->script == LK_REDIS_ACQUIRE)
			req->k->unsure = true;
		return false;
	}
	w->held = true;
	w->token = rep->token;
	w->sent_ns = rep->sent_ns;
	w->ttl_ms = rep->ttl_ms;
	return true;
}

void lk_redis_wait_reply(struct lk_redis *r, struct lk_redis_req *w, const redisReply *reply)
{
	struct lk_backend_key *k = w->k;
	const char *op = w->script == LK_REDIS_ACQUIRE ? "acquire" : "renewal";
	char msg[LK_REDIS_MAX_LOG_LEN], text[LK_REDIS_MAX_DESC_LEN];
	struct lk_reply rep = { .status = LK_REPLY_ERROR, .err = msg };

	if (!w->held || w->detached)
		return;
	if (reply && reply->type == REDIS_REPLY_INTEGER && reply->integer >= (long long)r->min_acked) {
		rep.status = LK_REPLY_OK;
		rep.token = w->token;
		rep.sent_ns = w->sent_ns;
		rep.ttl_ms = w->ttl_ms;
		rep.err = NULL;
	} else {
		if (!reply)
			snprintf(msg, sizeof(msg), "%s not proven: the connection went before %u "
			         "replicas acknowledged it", op, r->min_acked);
		else if (reply->type == REDIS_REPLY_INTEGER)
			snprintf(msg, sizeof(msg), "%s not proven: %lld of %u replicas acknowledged it "
			         "within %" PRId64 "ms", op, reply->integer, r->min_acked,
			         r->timeout_ms / 2 > 0 ? r->timeout_ms / 2 : 1);
		else {
			lk_redis_describe(reply, text, sizeof(text));
			snprintf(msg, sizeof(msg), "%s not proven: WAIT failed: %s", op, text);
		}
		/* The master has the tenure, the replicas may not: nothing was proven. An acquire
		 * leaves our value there, which the next acquire deletes at once (an orphan). */
		k->proven_token = w->prev_token;
		k->proven_until_ns = w->prev_until_ns;
		if (w->script == LK_REDIS_ACQUIRE)
			k->unsure = true;
	}
	if (!r->closing && !k->dead && w->cb)
		w->cb(w->arg, &rep);
}
