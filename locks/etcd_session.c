/* The etcd backend's stand-in for a connection: the endpoint, readiness, the probe, the
 * auth token.
 *
 * Unlike Redis there is no connection to keep: curl pools connections per transfer. What the
 * backend keeps instead is the current endpoint (failed over on connection-level errors), the
 * auth token, a readiness flag with a probe that retries with backoff while etcd is
 * unreachable, and one watch stream per watching key, resumed with backoff when it breaks.
 */

#include "locks/etcd_int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <sodium.h>

/* ---- readiness, endpoints --------------------------------------------------------------- */

void lk_etcd_mark_up(struct lk_etcd *e)
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

/* Something failed the way an unreachable etcd fails (why names the endpoint): not ready until
 * a request succeeds again. A probe retries with backoff meanwhile, so that readiness comes
 * back without waiting for the locks' own retries, and the outage is logged once, not per
 * request. */
void lk_etcd_mark_down(struct lk_etcd *e, const char *why)
{
	int64_t delay;
	bool warn;

	if (e->closing)
		return;
	e->ready = false;
	if (evtimer_pending(e->probe, NULL) || e->probe_x || e->auth_x)
		return;
	delay = lk_etcd_backoff(e->probe, &e->attempt);
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

/* ---- authentication --------------------------------------------------------------------- */

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

void lk_etcd_auth_done(struct lk_etcd *e, struct lk_etcd_xfer *x,
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

void lk_etcd_probe_cb(evutil_socket_t fd, short what, void *arg)
{
	struct lk_etcd *e = arg;

	lk_etcd_enter(e);
	if (!e->closing && !e->probe_x && !e->auth_x)
		lk_etcd_probe_start(e);
	lk_etcd_leave(e);
}

void lk_etcd_probe_done(struct lk_etcd *e, struct lk_etcd_xfer *x,
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
			(void)lk_etcd_seen(e, st.cluster_id, st.revision, NULL);
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
