/* The etcd backend's watches: one streaming POST /v3/watch per watching key, over its
 * candidates' prefix (a DELETE of any candidate may make ours the oldest), resumed from the
 * last revision seen when it breaks (with backoff), and started over from now when that
 * revision is gone (compacted, or a replaced cluster). A stream must be confirmed ("created")
 * within the backend timeout; after that it has no deadline of its own (TCP keepalive looks
 * after its idle connection). Its lines are parsed inside curl's write callback, which only
 * records what they say: the follower hears of a DELETE after curl returns.
 */

#include "locks/etcd_int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include <event2/event.h>

/* The stream also carries the fence key and the release marker (they sit just after the
 * candidates' prefix). A changed fence voids what the last look read; a release that names our
 * only older candidate makes us the oldest, after a release: the next acquire may lead at once,
 * without a look (etcd_op.c lk_etcd_acquire()). A line that cannot be read that way only costs
 * the fast path. */
static void lk_etcd_watch_markers(struct lk_backend_key *k, const char *line, size_t len)
{
	struct lk_etcd_watch_key m;
	char err[LK_ETCD_MAX_ERR_LEN];

	if (lk_etcd_json_parse_watch_key(line, len, k->fkey, k->fkey_len, &m, err,
	                                 sizeof(err)) < 0 || m.put || m.deleted) {
		k->fence_known = false;
		k->fast_lead = false;
	}
	if (lk_etcd_json_parse_watch_key(line, len, k->tkey, k->tkey_len, &m, err,
	                                 sizeof(err)) == 0 && m.put && k->cand_rev &&
	    k->pred_for == k->cand_rev && k->pred_rev && m.released_rev == k->pred_rev) {
		/* The start of the handoff gap as we can see it (etcd_op.c lk_etcd_op_reply()). */
		k->release_seen_ns = lk_mono_ns();
		k->release_seen_for = k->cand_rev;
		if (k->fence_known) {
			k->fast_lead = true;
			k->notify_pending = true;
			k->e->notify_any = true;
		}
	}
}

/* One line of a watch stream. Runs inside curl's write callback: it only records. Returns
 * false to end the stream (x->why says why). */
static bool lk_etcd_watch_line(struct lk_etcd_xfer *x, const char *line, size_t len)
{
	struct lk_backend_key *k = x->k;
	struct lk_etcd_error error;
	struct lk_etcd_watch w;
	char err[LK_ETCD_MAX_ERR_LEN];
	int rc;

	while (len > 0 && (line[len - 1] == '\r' || line[len - 1] == ' '))
		len--;
	if (len == 0)
		return true;
	rc = lk_etcd_json_parse_watch(line, len, k->pkey, k->pkey_len, true, &w, err,
	                              sizeof(err));
	if (rc == -EPROTO) {
		if (lk_etcd_json_parse_error(line, len, &error) < 0)
			snprintf(error.message, sizeof(error.message), "error response");
		x->token_invalid = lk_etcd_stale_token(error.code, error.message);
		x->conn_level = error.code == LK_ETCD_GRPC_UNAVAILABLE;
		snprintf(x->why, sizeof(x->why), "watch failed: %s", error.message);
		return false;
	}
	if (rc < 0) {
		x->garbage = true;
		snprintf(x->why, sizeof(x->why), "bad watch response: %s", err);
		return false;
	}
	if (w.canceled) {
		/* Compacted past where we would resume: start over from now (the confirmation of
		 * the new stream notifies, covering whatever was missed). */
		if (w.compact_revision > 0)
			k->wlast = 0;
		x->token_invalid = lk_etcd_stale_token(0, w.cancel_reason);
		x->conn_level = strstr(w.cancel_reason, "no leader") != NULL;
		snprintf(x->why, sizeof(x->why), "watch canceled: %s",
		         w.cancel_reason[0] ? w.cancel_reason : "no reason given");
		return false;
	}
	if (w.created) {
		/* A fresh stream starts after the revision it was created at. */
		if (x->start_revision == 0 && w.revision > k->wlast)
			k->wlast = w.revision;
		k->wcreated = true;
		k->wattempt = 0;
		/* Deletions may have happened while there was no stream. */
		k->notify_pending = true;
		k->e->notify_any = true;
		x->e->watch_ok = true;
	}
	if (w.max_mod_revision > k->wlast)
		k->wlast = w.max_mod_revision;
	if (w.n_deletes > 0) {
		k->notify_pending = true;
		k->e->notify_any = true;
	}
	if (w.n_events > 0)
		lk_etcd_watch_markers(k, line, len);
	return true;
}

/* CURLOPT_WRITEFUNCTION of a watch stream: split into lines and record what they say. */
size_t lk_etcd_watch_write_cb(char *data, size_t size, size_t nmemb, void *arg)
{
	struct lk_etcd_xfer *x = arg;
	size_t n = size * nmemb, start = 0;
	long http = 0;
	char *nl;

	if (!x->http_checked) {
		curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &http);
		x->http_checked = true;
		x->http_ok = http >= 200 && http < 300;
	}
	if (!x->http_ok) {
		/* An error body: keep it (capped) for the completion to report. */
		if (!lk_etcd_append(x, data, n, LK_ETCD_MAX_RESPONSE)) {
			x->too_big = true;
			return 0;
		}
		return n;
	}
	if (!lk_etcd_append(x, data, n, LK_ETCD_MAX_WATCH_PENDING)) {
		x->garbage = true;
		snprintf(x->why, sizeof(x->why), "watch response line longer than %d bytes",
		         LK_ETCD_JSON_MAX_BODY);
		return 0;
	}
	while ((nl = memchr(x->resp + start, '\n', x->resp_len - start))) {
		size_t len = (size_t)(nl - (x->resp + start));

		if (!lk_etcd_watch_line(x, x->resp + start, len))
			return 0;
		start += len + 1;
	}
	memmove(x->resp, x->resp + start, x->resp_len - start);
	x->resp_len -= start;
	x->resp[x->resp_len] = '\0';
	if (x->resp_len > LK_ETCD_JSON_MAX_BODY) {
		x->garbage = true;
		snprintf(x->why, sizeof(x->why), "watch response line longer than %d bytes",
		         LK_ETCD_JSON_MAX_BODY);
		return 0;
	}
	return n;
}

void lk_etcd_watch_schedule(struct lk_backend_key *k, const char *why, bool was_created)
{
	struct lk_etcd *e = k->e;
	int64_t delay;

	if (e->closing || k->dead || !k->watching || k->wx || evtimer_pending(k->wretry, NULL))
		return;
	delay = lk_etcd_backoff(k->wretry, &k->wattempt);
	lk_etcd_log(e, was_created ? LK_BLOG_INFO : LK_BLOG_DEBUG,
	            "watch on %s broken: %s; resuming in %" PRId64 "ms", k->key, why, delay);
}

/* Stop the stream (if any) without reporting anything; the resume state (wlast) stays. */
void lk_etcd_watch_stop(struct lk_backend_key *k)
{
	if (k->wx)
		lk_etcd_xfer_abort(k->wx);
	k->wx = NULL;
	k->wcreated = false;
	k->wwaiting_auth = false;
	if (k->wretry)
		evtimer_del(k->wretry);
	if (k->wdeadline)
		evtimer_del(k->wdeadline);
}

void lk_etcd_watch_start(struct lk_backend_key *k)
{
	struct lk_etcd *e = k->e;
	int64_t start = k->wlast > 0 ? k->wlast + 1 : 0;
	char end[LK_ETCD_MAX_KEY_LEN + 1];
	struct lk_etcd_xfer *x;
	struct timeval tv;
	char *body;

	if (e->closing || k->dead || !k->watching || k->wx)
		return;
	evtimer_del(k->wretry);
	if (lk_etcd_need_auth(e)) {
		k->wwaiting_auth = true;
		if (lk_etcd_auth_start(e) < 0) {
			k->wwaiting_auth = false;
			lk_etcd_watch_schedule(k, "out of memory", false);
		}
		return;
	}
	/* [<key>/, <key>;): the candidates, and beside them "<key>:fence" and "<key>:state". */
	memcpy(end, k->key, k->key_len);
	end[k->key_len] = ';';
	if (lk_etcd_json_watch_range(k->pkey, k->pkey_len, end, k->key_len + 1, start,
	                             &body) < 0) {
		lk_etcd_watch_schedule(k, "out of memory", false);
		return;
	}
	x = lk_etcd_xfer_start(e, LK_ETCD_X_WATCH, LK_ETCD_CALL_WATCH, body, false, 0);
	if (!x) {
		lk_etcd_watch_schedule(k, "out of memory", false);
		return;
	}
	x->k = k;
	x->start_revision = start;
	k->wx = x;
	k->wcreated = false;
	/* A stream etcd never confirms (a frozen member accepts connections and says nothing)
	 * counts as broken. */
	lk_etcd_timeval(&tv, e->timeout_ms);
	evtimer_add(k->wdeadline, &tv);
}

void lk_etcd_watch_retry_cb(evutil_socket_t fd, short what, void *arg)
{
	struct lk_backend_key *k = arg;
	struct lk_etcd *e = k->e;

	lk_etcd_enter(e);
	lk_etcd_watch_start(k);
	lk_etcd_leave(e);
}

void lk_etcd_watch_deadline_cb(evutil_socket_t fd, short what, void *arg)
{
	struct lk_backend_key *k = arg;
	struct lk_etcd *e = k->e;
	char why[LK_ETCD_MAX_LOG_LEN];
	size_t idx;

	lk_etcd_enter(e);
	if (!e->closing && k->wx && !k->wcreated) {
		idx = k->wx->endpoint;
		lk_etcd_xfer_abort(k->wx);
		snprintf(why, sizeof(why), "%s did not confirm a watch within %" PRId64 "ms",
		         e->endpoints[idx], e->timeout_ms);
		lk_etcd_endpoint_failed(e, idx, why);
		lk_etcd_mark_down(e, why);
		lk_etcd_watch_schedule(k, why, false);
	}
	lk_etcd_leave(e);
}

void lk_etcd_watch_done(struct lk_etcd *e, struct lk_etcd_xfer *x,
                        struct lk_etcd_outcome *o)
{
	struct lk_backend_key *k = x->k;
	bool was_created = k->wcreated;
	char why[2 * LK_ETCD_MAX_LOG_LEN];

	k->wx = NULL;
	k->wcreated = false;
	evtimer_del(k->wdeadline);
	if (x->why[0]) {
		/* What the stream itself said (an error line, a cancellation, garbage). */
		snprintf(why, sizeof(why), "%s: %s", e->endpoints[x->endpoint], x->why);
	} else if (o->ok) {
		/* A clean end of a stream that should never end: a member shutting down. */
		snprintf(why, sizeof(why), "%s closed the stream", e->endpoints[x->endpoint]);
		x->conn_level = true;
	} else {
		snprintf(why, sizeof(why), "%s", o->why);
		if (o->stale_token)
			x->token_invalid = true;
	}
	if (x->token_invalid && x->token_gen == e->token_gen && e->username)
		lk_etcd_drop_token(e);
	if (x->conn_level || o->conn_level) {
		lk_etcd_endpoint_failed(e, x->endpoint, why);
		lk_etcd_mark_down(e, why);
	}
	lk_etcd_watch_schedule(k, why, was_created);
}

void lk_etcd_watch(struct lk_backend_key *k, bool on)
{
	if (!k || k->dead || k->e->closing || k->watching == on)
		return;
	k->watching = on;
	if (on) {
		k->wattempt = 0;
		k->wlast = 0;
		lk_etcd_watch_start(k);
	} else {
		k->notify_pending = false;
		lk_etcd_watch_stop(k);
		/* Off outside a tenure (idle, done): the candidacy ends too, or our key would stand
		 * in the queue for nobody. A tenure's key stays until its release, or until its
		 * lease as last proven runs out (etcd_op.c lk_etcd_texp_cb()). */
		if (k->cand_rev && !(k->token && !k->ended && k->rev == k->cand_rev &&
		                     k->lease == k->cand_lease))
			lk_etcd_withdraw(k, k->cand_rev, k->cand_lease);
	}
}
