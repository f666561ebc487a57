/* One lock's state machine. Every input (a client, a backend reply or notice, a timer) enters
 * through lk_lock_step(), and the state changes only in set_state(), called by the state
 * entries that lk_lock_step() chooses; everything else performs the actions they choose. The
 * lock's life, its clients and its reports are in lock_api.c. See lock.h for the invariants
 * this file carries. */
#include "agent/lock.h"
#include "agent/lock_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/config.h"
#include "agent/log.h"
#include "locks/backend.h"

/* Retry pacing for renewals and releases after a failed attempt: fast first, never hammering. */
#define RENEW_RETRY_BASE_MS   50
#define RELEASE_RETRY_BASE_MS 50
#define RELEASE_RETRY_CAP_MS  1000

/* Renewals line up on a grid of this period (or of an eighth of the renew interval, if that is
 * shorter): see renew_at(). */
#define RENEW_TICK_MS 50

/* A follower told when the holder's key runs out tries that long after it: the server's
 * expiry and our timer are not one clock, and a try a moment early costs a whole retry. */
#define EXPIRY_MARGIN_MS 5

static const char *const input_names[IN__COUNT] = {
	[IN_START] = "start",
	[IN_CAMPAIGN] = "campaign",
	[IN_LEAVE] = "leave",
	[IN_EVICT] = "evict",
	[IN_ACK] = "ack",
	[IN_DRAIN] = "drain",
	[IN_ABORT] = "abort",
	[IN_NOTIFY] = "notify",
	[IN_RECONNECTED] = "reconnected",
	[IN_ACQUIRED] = "acquired",
	[IN_RENEWED] = "renewed",
	[IN_RELEASED] = "released",
	[IN_TIMER_RETRY] = "timer_retry",
	[IN_TIMER_RENEW] = "timer_renew",
	[IN_TIMER_DEADLINE] = "timer_deadline",
	[IN_TIMER_PHASE] = "timer_phase",
};

/* ---- small helpers: time, timers, events ------------------------------------------------ */

static void timer_at(struct lk_lock *l, enum lk_lock_timer t, int64_t at_ns)
{
	l->env->timer_arm(l->env->ctx, l->timers[t], at_ns);
}

static void timer_in(struct lk_lock *l, enum lk_lock_timer t, int64_t ms)
{
	timer_at(l, t, now_ns(l) + ms * NS_PER_MS);
}

static void timer_off(struct lk_lock *l, enum lk_lock_timer t)
{
	l->env->timer_disarm(l->env->ctx, l->timers[t]);
}

static void emit(struct lk_lock *l, const struct lk_event *ev)
{
	char line[LK_LINE_MAX];
	int n = lk_codec_format_event(line, sizeof(line), ev);

	if (n > 0)
		l->env->emit(l->env->ctx, l, line, (size_t)n);
}

static void emit_follower(struct lk_lock *l)
{
	if (!l->announce_due && strcmp(l->announced_holder ? l->announced_holder : "-",
	                               lk_lock_holder(l)) == 0)
		return;
	l->announce_due = false;
	lk_lock_set_text(&l->announced_holder, l->holder);
	emit(l, &(struct lk_event){ .kind = LK_EV_FOLLOWER, .lock = l->cfg->name,
	                            .holder = lk_lock_holder(l) });
}

/* LEADER or RENEWED for the current tenure: the validity left, and the moment the apps must
 * stop on their own unless another RENEWED comes first (I8). */
static void emit_tenure(struct lk_lock *l, enum lk_event_kind kind)
{
	emit(l, &(struct lk_event){ .kind = kind, .lock = l->cfg->name, .token = l->token,
	                            .ttl_ms = lk_lock_ttl_ms(l),
	                            .until_mono_ms = lk_lock_until_mono_ms(l) });
}

static void set_holder(struct lk_lock *l, const char *holder)
{
	/* Holder identities come from the backend: keep only what the protocol can carry. */
	char buf[LK_HOLDER_MAX];
	size_t n = 0;

	if (holder)
		for (; holder[n] && n + 1 < sizeof(buf); n++)
			buf[n] = (holder[n] > ' ' && holder[n] < 0x7f) ? holder[n] : '?';
	buf[n] = '\0';
	lk_lock_set_text(&l->holder, n && strcmp(buf, "-") ? buf : NULL);
}

/* A failed request. r is NULL when the backend refused it synchronously because it is not
 * connected: the backend has already reported that outage, so it is only worth a debug line. */
static void backend_failed(struct lk_lock *l, const char *what, const struct lk_reply *r)
{
	if (!r) {
		LK_LOG(LK_DEBUG, what, LKF_STR("lock", l->cfg->name)
		       LKF_STR("backend", l->backend->name) LKF_STR("error", "not connected"));
		return;
	}
	if (l->env->backend_error)
		l->env->backend_error(l->env->ctx, l);
	LK_LOG(LK_WARN, what, LKF_STR("lock", l->cfg->name) LKF_STR("backend", l->backend->name)
	       LKF_STR("error", r->err ? r->err : "unknown error"));
}

static void stepdown_over(struct lk_lock *l)
{
	int64_t ns = now_ns(l) - l->stepdown_start_ns;

	l->stats.last_stepdown_ms = ns / NS_PER_MS;
	if (l->env->observe)
		l->env->observe(l->env->ctx, l, LK_OBSERVE_STEPDOWN, ns);
}

/* Whether anybody here wants this lock led right now. */
static bool wanted(const struct lk_lock *l)
{
	return !l->draining && (l->n_members > 0 || l->cfg->campaign == LK_CAMPAIGN_ALWAYS);
}

static bool all_acked(const struct lk_lock *l)
{
	for (size_t i = 0; i < l->n_members; i++)
		if (l->members[i].acked != l->token)
			return false;
	return true;
}

/* ---- backend requests -------------------------------------------------------------------- */

/* The reply handlers only note that the request is no longer in flight: what the reply means,
 * for the current tenure or an ended one, is lk_lock_step()'s to decide. */
static void on_acquire_reply(void *arg, const struct lk_reply *r)
{
	struct lk_lock *l = arg;

	l->acquiring = false;
	lk_lock_step(l, IN_ACQUIRED, r);
}

static void on_renew_reply(void *arg, const struct lk_reply *r)
{
	struct lk_lock *l = arg;

	l->renewing = false;
	lk_lock_step(l, IN_RENEWED, r);
}

static void on_release_reply(void *arg, const struct lk_reply *r)
{
	struct lk_lock *l = arg;

	l->releasing = false;
	lk_lock_step(l, IN_RELEASED, r);
}

/* I10: whether the backend may have lost tenures it granted, so that a new one must wait; if
 * so, the retry timer is set for the moment the wait is over. Said once per hold-off. */
static bool holding_off(struct lk_lock *l)
{
	char why[LK_HOLDOFF_WHY_MAX] = "";
	int64_t until = l->backend->ops->holdoff_until(l->key, l->cfg->ttl_ms, why, sizeof(why));
	int64_t now = now_ns(l);

	if (until <= now) {
		l->holdoff_until_ns = 0;
		return false;
	}
	if (until != l->holdoff_until_ns) {
		lk_lock_set_text(&l->holdoff_why, why[0] ? why : "unknown");
		LK_LOG(LK_WARN, "holding off: no new tenure until the old ones have expired",
		       LKF_STR("lock", l->cfg->name) LKF_STR("backend", l->backend->name)
		       LKF_I64("holdoff_ms", (until - now + NS_PER_MS - 1) / NS_PER_MS)
		       LKF_STR("reason", why[0] ? why : "unknown"));
	}
	l->holdoff_until_ns = until;
	timer_at(l, LK_TIMER_RETRY, until);
	return true;
}

/* When to try again after an acquire that did not lead: a retry_interval later, or just after
 * the holder's tenure runs out if the backend knows that is sooner (a crashed holder's
 * successor then leads within moments of the expiry, not up to a retry_interval after it). */
static int64_t retry_ms(const struct lk_lock *l, const struct lk_reply *r)
{
	if (r->status == LK_REPLY_HELD && r->free_in_ms > 0 &&
	    r->free_in_ms + EXPIRY_MARGIN_MS < l->cfg->retry_interval_ms)
		return r->free_in_ms + EXPIRY_MARGIN_MS;
	return l->cfg->retry_interval_ms;
}

static void start_acquire(struct lk_lock *l)
{
	if (l->acquiring)
		return;
	timer_off(l, LK_TIMER_RETRY);
	l->notified = false;
	if (holding_off(l))
		return;
	if (l->backend->ops->acquire(l->key, l->cfg->ttl_ms, on_acquire_reply, l) == 0) {
		l->acquiring = true;
		return;
	}
	/* Not connected: the backend notifies us when it is back; the timer is the fallback. */
	backend_failed(l, "acquire failed", NULL);
	timer_in(l, LK_TIMER_RETRY, l->cfg->retry_interval_ms);
}

static void start_renew(struct lk_lock *l)
{
	l->renew_again = false;
	if (l->renewing) {
		l->renew_again = l->renew_token != l->token;
		return;
	}
	l->renew_token = l->token;
	if (l->backend->ops->renew(l->key, l->token, l->ttl_ms, on_renew_reply, l) == 0) {
		l->renewing = true;
		return;
	}
	backend_failed(l, "renew failed", NULL);
	timer_in(l, LK_TIMER_RENEW, lk_backoff_ms(l->renew_failures++, RENEW_RETRY_BASE_MS,
	                                          l->cfg->renew_interval_ms));
}

static void start_release(struct lk_lock *l)
{
	l->release_again = false;
	if (l->releasing) {
		l->release_again = l->release_token != l->token;
		return;
	}
	l->release_token = l->token;
	if (l->backend->ops->release(l->key, l->token, on_release_reply, l) == 0) {
		l->releasing = true;
		return;
	}
	backend_failed(l, "release failed", NULL);
	timer_in(l, LK_TIMER_RETRY, lk_backoff_ms(l->release_failures++, RELEASE_RETRY_BASE_MS,
	                                          RELEASE_RETRY_CAP_MS));
}

/* ---- state entries ------------------------------------------------------------------------ */

/* The one place the state changes. Every change is logged at debug level with the input that
 * caused it, so that a lock's history can be read back from the log. */
static void set_state(struct lk_lock *l, enum lk_lock_state to)
{
	enum lk_lock_state from = l->state;

	l->state = to;
	LK_LOG(LK_DEBUG, "lock state", LKF_STR("lock", l->cfg->name)
	       LKF_STR("from", lk_lock_state_name(from)) LKF_STR("to", lk_lock_state_name(to))
	       LKF_STR("input", input_names[l->input]));
}

static void enter_follower(struct lk_lock *l)
{
	set_state(l, LK_LOCK_FOLLOWER);
	l->backend->ops->watch(l->key, true);
	start_acquire(l);
}

static void enter_done(struct lk_lock *l);

static void enter_idle(struct lk_lock *l)
{
	/* A drain that finds nothing to release is over for this lock. */
	if (l->draining) {
		enter_done(l);
		return;
	}
	set_state(l, LK_LOCK_IDLE);
	l->backend->ops->watch(l->key, false);
	for (int t = 0; t < LK_TIMER__COUNT; t++)
		timer_off(l, t);
}

/* After a tenure ended outside of a drain: campaign on, or rest. */
static void enter_follower_or_idle(struct lk_lock *l)
{
	if (wanted(l))
		enter_follower(l);
	else
		enter_idle(l);
}

static void enter_done(struct lk_lock *l)
{
	set_state(l, LK_LOCK_DONE);
	l->backend->ops->watch(l->key, false);
	for (int t = 0; t < LK_TIMER__COUNT; t++)
		timer_off(l, t);
	l->env->settled(l->env->ctx, l);
}

/* A tenure's end during a drain: tell the clients how it ended, then DONE. */
static void finish_drain(struct lk_lock *l, enum lk_outcome o)
{
	l->has_outcome = true;
	l->outcome = o;
	l->stats.releases[o]++;
	emit(l, &(struct lk_event){ .kind = LK_EV_RELEASED, .lock = l->cfg->name,
	                            .token = l->token, .outcome = o });
	LK_LOG(o == LK_OUTCOME_RELEASED || o == LK_OUTCOME_ALREADY_GONE ? LK_INFO : LK_WARN,
	       "lock drained", LKF_STR("lock", l->cfg->name) LKF_U64("token", l->token)
	       LKF_STR("outcome", lk_outcome_name(o)));
	enter_done(l);
}

/* I1: validity counts from when the proving request was sent, never from its answer. */
static void set_validity(struct lk_lock *l, const struct lk_reply *r)
{
	int64_t deadline_ms = l->cfg->renew_deadline_ms;

	/* If the backend granted less than asked, keep the deadline's share of the ttl. */
	if (r->ttl_ms < l->cfg->ttl_ms)
		deadline_ms = deadline_ms * r->ttl_ms / l->cfg->ttl_ms;
	l->expires_ns = r->sent_ns + r->ttl_ms * NS_PER_MS;
	l->deadline_ns = r->sent_ns + deadline_ms * NS_PER_MS;
}

static void begin_tenure(struct lk_lock *l, const struct lk_reply *r)
{
	l->token = r->token;
	l->ttl_ms = r->ttl_ms;
	set_validity(l, r);
	l->renew_failures = 0;
	l->release_failures = 0;
	for (size_t i = 0; i < l->n_members; i++)
		l->members[i].acked = 0;
}

/* When to send the renewal due at due_ns: rounded down to the renew grid, which every lock in
 * the agent shares. A lock never renews later than its own time, and less than one tick earlier
 * (renewing early only moves its validity forward, counted from the earlier send: I1). What it
 * buys: the locks whose renewals fall within one tick fire in the same turn of the loop, and
 * the backend sends what it is handed in one turn together (Redis: one write of pipelined
 * scripts) rather than one write, and one wakeup of the server, per lock. */
static int64_t renew_at(int64_t due_ns, int64_t interval_ms)
{
	int64_t tick = RENEW_TICK_MS * NS_PER_MS;

	if (tick > interval_ms * NS_PER_MS / 8)
		tick = interval_ms * NS_PER_MS / 8;
	if (tick <= 0 || due_ns <= 0)
		return due_ns;
	return due_ns - due_ns % tick;
}

/* A successful acquire/renew: arm the deadline (I4) and the next renewal. */
static void proven(struct lk_lock *l, const struct lk_reply *r)
{
	int64_t interval_ms = l->cfg->renew_interval_ms;

	/* A shorter grant than asked shrinks the renew interval with the deadline, so that a
	 * renewal is still tried well before the deadline. */
	if (r->ttl_ms < l->cfg->ttl_ms)
		interval_ms = interval_ms * r->ttl_ms / l->cfg->ttl_ms;
	set_validity(l, r);
	l->renew_failures = 0;
	timer_at(l, LK_TIMER_DEADLINE, l->deadline_ns);
	timer_at(l, LK_TIMER_RENEW, renew_at(r->sent_ns + interval_ms * NS_PER_MS, interval_ms));
}

static void enter_leader(struct lk_lock *l, const struct lk_reply *r)
{
	int64_t now = now_ns(l), gap_ns;
	enum lk_lock_after after = lk_lock_count_acquisition(l, r, &gap_ns);

	set_state(l, LK_LOCK_LEADER);
	l->backend->ops->watch(l->key, false);
	timer_off(l, LK_TIMER_RETRY);
	proven(l, r);
	set_holder(l, l->identity);
	lk_lock_set_text(&l->announced_holder, l->holder);
	l->announce_due = false;
	emit_tenure(l, LK_EV_LEADER);
	LK_LOG(LK_INFO, "lock acquired", LKF_STR("lock", l->cfg->name) LKF_U64("token", l->token)
	       LKF_I64("ttl_ms", ms_between(now, l->expires_ns))
	       LKF_I64("until_mono_ms", lk_lock_until_mono_ms(l))
	       LKF_STR("after", lk_lock_after_name(after)) LKF_MS("gap_ms", gap_ns));
}

static void enter_releasing(struct lk_lock *l)
{
	set_state(l, LK_LOCK_RELEASING);
	/* The app has stepped down: renewing would only delay whoever is next. */
	timer_off(l, LK_TIMER_RENEW);
	timer_off(l, LK_TIMER_DEADLINE);
	timer_off(l, LK_TIMER_RETRY);
	l->backend->ops->watch(l->key, false);
	l->release_failures = 0;
	l->release_start_ns = now_ns(l);
	timer_in(l, LK_TIMER_PHASE, l->cfg->release_timeout_ms);
	start_release(l);
}

static void enter_stepping_down(struct lk_lock *l)
{
	set_state(l, LK_LOCK_STEPPING_DOWN);
	l->stepdown_start_ns = now_ns(l);
	LK_LOG(LK_INFO, "stepping down", LKF_STR("lock", l->cfg->name) LKF_U64("token", l->token)
	       LKF_U64("campaign_clients", l->n_members));
	emit(l, &(struct lk_event){ .kind = LK_EV_STEPDOWN, .lock = l->cfg->name,
	                            .token = l->token,
	                            .deadline_ms = l->cfg->stepdown_timeout_ms });
	timer_in(l, LK_TIMER_PHASE, l->cfg->stepdown_timeout_ms);
	if (all_acked(l)) {
		stepdown_over(l);
		enter_releasing(l);
	}
}

/* The tenure is over without a release: tell the apps at once (I4). gone: the backend said
 * the key is no longer ours (rather than: we stopped being able to prove it). */
static void lose_tenure(struct lk_lock *l, enum lk_lost_reason reason, const char *holder,
                        bool gone)
{
	l->stats.lost[reason]++;
	timer_off(l, LK_TIMER_RENEW);
	timer_off(l, LK_TIMER_DEADLINE);
	timer_off(l, LK_TIMER_PHASE);
	/* The apps hear it before anything is logged: a slow log must never delay a LOST (I9). */
	emit(l, &(struct lk_event){ .kind = LK_EV_LOST, .lock = l->cfg->name, .token = l->token,
	                            .reason = reason });
	LK_LOG(LK_WARN, "lock lost", LKF_STR("lock", l->cfg->name) LKF_U64("token", l->token)
	       LKF_STR("reason", lk_lost_reason_name(reason)));
	set_holder(l, holder);
	/* The app was just told it is not the leader: the next FOLLOWER line must go out. */
	l->announce_due = true;
	if (l->state == LK_LOCK_STEPPING_DOWN) {
		stepdown_over(l);
		/* Taken, or gone as the backend says: nothing of ours is left. Otherwise the lease is
		 * still ours and runs out by itself. */
		finish_drain(l, gone ? LK_OUTCOME_ALREADY_GONE : LK_OUTCOME_EXPIRED);
		return;
	}
	/* Our old key may outlive the tenure (frozen backend): do not hammer, retry on the timer
	 * or on a release notice. */
	if (wanted(l)) {
		set_state(l, LK_LOCK_FOLLOWER);
		l->backend->ops->watch(l->key, true);
		timer_in(l, LK_TIMER_RETRY, l->cfg->retry_interval_ms);
	} else {
		enter_idle(l);
	}
}

/* Give a held tenure up without releasing it: an app that never confirmed it stopped may still
 * be working, so the key is left to expire at its TTL (I2). The apps still connected hear LOST
 * now, so that nobody here goes on leading on a lease that is no longer renewed (I4). */
static void abandon(struct lk_lock *l, const char *why)
{
	LK_LOG(LK_WARN, why, LKF_STR("lock", l->cfg->name) LKF_U64("token", l->token)
	       LKF_I64("expires_in_ms", ms_between(now_ns(l), l->expires_ns)));
	lose_tenure(l, LK_LOST_EXPIRED, NULL, false);
}

static void lose(struct lk_lock *l, enum lk_lost_reason reason, const char *holder)
{
	lose_tenure(l, reason, holder, reason == LK_LOST_TAKEN || reason == LK_LOST_EXPIRED);
}

/* A renew reply while LEADER or STEPPING_DOWN. */
static void renewed(struct lk_lock *l, const struct lk_reply *r)
{
	/* A renewal of a tenure that already ended (LOST, released) proves nothing now. The
	 * renewal that waited for this reply is for the tenure held now: send it. In any other
	 * state lk_lock_step() drops the reply, so that a tenure that ended meanwhile (LOST, or
	 * left to expire after a stepdown timeout, or being released) never has its lease
	 * extended (I2, I4). */
	if (l->renew_token != l->token) {
		if (l->renew_again)
			start_renew(l);
		return;
	}
	switch (r->status) {
	case LK_REPLY_OK:
		proven(l, r);
		/* I1: a renewal that comes back after its own deadline proves nothing. */
		if (now_ns(l) >= l->deadline_ns) {
			lose(l, LK_LOST_RENEW_DEADLINE, NULL);
			return;
		}
		/* I8: the apps move their own deadline only on this line. */
		emit_tenure(l, LK_EV_RENEWED);
		return;
	case LK_REPLY_TAKEN:
		lose(l, LK_LOST_TAKEN, r->holder);
		return;
	case LK_REPLY_GONE:
		lose(l, LK_LOST_EXPIRED, NULL);
		return;
	case LK_REPLY_FATAL:
		backend_failed(l, "renew failed", r);
		lose(l, LK_LOST_BACKEND_ERROR, NULL);
		return;
	case LK_REPLY_ERROR:
	case LK_REPLY_HELD:
		backend_failed(l, "renew failed", r);
		/* Retry soon; the deadline timer ends the tenure if this keeps failing. */
		timer_in(l, LK_TIMER_RENEW, lk_backoff_ms(l->renew_failures++, RENEW_RETRY_BASE_MS,
		                                          l->cfg->renew_interval_ms));
		return;
	}
}

/* A release reply (or the phase timer giving up) while RELEASING. */
static void released(struct lk_lock *l, const struct lk_reply *r)
{
	enum lk_outcome o;

	/* The answer for an ended tenure's release: the release of this one waited for it (I3:
	 * one request at a time). Outside RELEASING lk_lock_step() drops it: a release that ran
	 * out of time or was aborted is not sent after all. */
	if (r && l->release_token != l->token) {
		if (l->release_again)
			start_release(l);
		return;
	}
	if (!r) {
		o = LK_OUTCOME_FAILED;
	} else if (r->status == LK_REPLY_OK) {
		o = LK_OUTCOME_RELEASED;
	} else if (r->status == LK_REPLY_GONE) {
		o = LK_OUTCOME_ALREADY_GONE;
	} else if (r->status == LK_REPLY_FATAL) {
		backend_failed(l, "release failed", r);
		o = LK_OUTCOME_FAILED;
	} else {
		/* I3: the retry repeats the same compare-and-delete of the same tenure. */
		backend_failed(l, "release failed", r);
		timer_in(l, LK_TIMER_RETRY, lk_backoff_ms(l->release_failures++,
		                                          RELEASE_RETRY_BASE_MS, RELEASE_RETRY_CAP_MS));
		return;
	}
	timer_off(l, LK_TIMER_PHASE);
	timer_off(l, LK_TIMER_RETRY);
	l->stats.last_release_ms = (now_ns(l) - l->release_start_ns) / NS_PER_MS;
	if (l->env->observe)
		l->env->observe(l->env->ctx, l, LK_OBSERVE_RELEASE, now_ns(l) - l->release_start_ns);
	if (l->draining) {
		finish_drain(l, o);
		return;
	}
	l->stats.releases[o]++;
	LK_LOG(o == LK_OUTCOME_FAILED ? LK_WARN : LK_INFO, "lock released",
	       LKF_STR("lock", l->cfg->name) LKF_U64("token", l->token)
	       LKF_STR("outcome", lk_outcome_name(o))
	       LKF_I64("duration_ms", l->stats.last_release_ms));
	set_holder(l, NULL);
	enter_follower_or_idle(l);
	emit_follower(l);
}

/* ---- the transition function ------------------------------------------------------------- */

/* Inputs that keep a held tenure alive, handled alike while LEADER and STEPPING_DOWN: renewals
 * go on while the app steps down, and the renew deadline (I4) holds all along. */
static bool keep_alive(struct lk_lock *l, enum lk_lock_input in, const struct lk_reply *r)
{
	switch (in) {
	case IN_TIMER_RENEW:
		start_renew(l);
		return true;
	case IN_RENEWED:
		renewed(l, r);
		return true;
	case IN_TIMER_DEADLINE:
		lose(l, LK_LOST_RENEW_DEADLINE, NULL);
		return true;
	case IN_RECONNECTED:
		/* I10: the new connection may lead to a server that never heard of this tenure:
		 * prove it there now, so that a GONE or TAKEN ends it within a round trip. */
		if (!l->renewing)
			start_renew(l);
		return true;
	default:
		return false;
	}
}

/* What input `in` does in the current state: the whole state table, read by state, then
 * input. The state entries it reaches (enter_*(), lose_tenure()) alone call set_state(). */
static void transition(struct lk_lock *l, enum lk_lock_input in, const struct lk_reply *r)
{
	/* Cutting a client off matters only while it may be doing leader work. */
	if (in == IN_EVICT && !lk_lock_is_leader(l))
		in = IN_LEAVE;
	switch (l->state) {
	case LK_LOCK_IDLE:
		switch (in) {
		case IN_START:
			if (wanted(l))
				enter_follower(l);
			return;
		case IN_CAMPAIGN:
			enter_follower(l);
			return;
		case IN_DRAIN:
			/* An acquire sent before the last campaign client left may still win: as in
			 * FOLLOWER, its reply finishes the drain, so that a won lock is given back
			 * rather than left held until its TTL runs out. */
			if (!l->acquiring)
				enter_done(l);
			return;
		case IN_ABORT:
			enter_done(l);
			return;
		case IN_ACQUIRED:
			/* An acquire sent while campaigning came back after everyone left: nobody was
			 * told LEADER, so giving the lock back at once is safe. */
			if (r->status == LK_REPLY_OK) {
				begin_tenure(l, r);
				enter_releasing(l);
			} else if (l->draining) {
				enter_done(l);
			}
			return;
		default:
			return;
		}

	case LK_LOCK_FOLLOWER:
		switch (in) {
		case IN_ACQUIRED:
			if (r->status == LK_REPLY_OK) {
				begin_tenure(l, r);
				if (l->draining || !wanted(l)) {
					enter_releasing(l);
				} else if (now_ns(l) >= l->deadline_ns) {
					/* I1: the reply came too late to prove anything; nobody was told. */
					LK_LOG(LK_WARN, "acquire answered after its renew deadline; giving it back",
					       LKF_STR("lock", l->cfg->name) LKF_U64("token", l->token));
					enter_releasing(l);
				} else {
					enter_leader(l, r);
				}
				return;
			}
			if (l->draining) {
				enter_done(l);
				return;
			}
			if (r->status == LK_REPLY_HELD) {
				set_holder(l, r->holder);
				emit_follower(l);
			} else {
				backend_failed(l, "acquire failed", r);
			}
			/* A HELD may come from a backend that found the key free but must wait (I10,
			 * an end without a release): retry when the wait is over, not a retry_interval
			 * later. */
			if (r->status == LK_REPLY_HELD && holding_off(l))
				return;
			if (r->status == LK_REPLY_HELD && l->notified)
				start_acquire(l); /* the notice may postdate what this attempt saw */
			else
				timer_in(l, LK_TIMER_RETRY, retry_ms(l, r));
			return;
		case IN_NOTIFY:
		case IN_RECONNECTED:
			if (l->acquiring)
				l->notified = true;
			else
				start_acquire(l);
			return;
		case IN_TIMER_RETRY:
			start_acquire(l);
			return;
		case IN_LEAVE:
			/* While draining, the acquire in flight decides when this lock is done. */
			if (!wanted(l) && !l->draining)
				enter_idle(l);
			return;
		case IN_DRAIN:
			timer_off(l, LK_TIMER_RETRY);
			/* An acquire in flight may still succeed; its reply finishes the drain. */
			if (!l->acquiring)
				enter_done(l);
			return;
		case IN_ABORT:
			enter_done(l);
			return;
		default:
			return;
		}

	case LK_LOCK_LEADER:
		if (keep_alive(l, in, r))
			return;
		switch (in) {
		case IN_LEAVE:
			/* The app is gone (I6): nobody does leader work, release at once. */
			if (!wanted(l))
				enter_releasing(l);
			return;
		case IN_EVICT:
			abandon(l, "a campaign client was cut off: leaving the lease to expire");
			return;
		case IN_DRAIN:
			enter_stepping_down(l);
			return;
		case IN_ABORT:
			abandon(l, "shutdown timeout: leaving the lease to expire");
			return;
		default:
			return;
		}

	case LK_LOCK_STEPPING_DOWN:
		if (keep_alive(l, in, r))
			return;
		switch (in) {
		case IN_ACK:
		case IN_LEAVE:
			if (all_acked(l)) {
				timer_off(l, LK_TIMER_PHASE);
				stepdown_over(l);
				enter_releasing(l);
			}
			return;
		case IN_TIMER_PHASE:
			/* I2: an app that never acknowledged may still be working: do not release. */
			abandon(l, "stepdown timeout: leaving the lease to expire");
			return;
		case IN_EVICT:
			abandon(l, "a campaign client was cut off: leaving the lease to expire");
			return;
		case IN_ABORT:
			abandon(l, "shutdown timeout: leaving the lease to expire");
			return;
		default:
			return;
		}

	case LK_LOCK_RELEASING:
		switch (in) {
		case IN_RELEASED:
			released(l, r);
			return;
		case IN_TIMER_RETRY:
			start_release(l);
			return;
		case IN_TIMER_PHASE:
			LK_LOG(LK_ERROR, "release timeout: the lease will expire by itself",
			       LKF_STR("lock", l->cfg->name) LKF_U64("token", l->token));
			released(l, NULL);
			return;
		case IN_ABORT:
			finish_drain(l, LK_OUTCOME_FAILED);
			return;
		default:
			return;
		}

	case LK_LOCK_DONE:
	case LK_LOCK__STATE_COUNT:
		return;
	}
}

/* Every input enters here. The input is kept while it is handled for set_state()'s log, and
 * restored after, since an action may feed the lock a nested input (a backend that answers a
 * request synchronously, the host reacting to settled()). */
void lk_lock_step(struct lk_lock *l, enum lk_lock_input in, const struct lk_reply *r)
{
	enum lk_lock_input outer = l->input;

	l->input = in;
	transition(l, in, r);
	l->input = outer;
}

