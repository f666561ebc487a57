/* One lock's life (new, free, start), its clients (campaign, leave, evict, ack), its part in
 * the drain, and what it reports. Each input goes to the state machine in lock.c. */
#include "agent/lock.h"
#include "agent/lock_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/config.h"
#include "locks/backend.h"

static const char *const state_names[LK_LOCK__STATE_COUNT] = {
	[LK_LOCK_IDLE] = "idle",
	[LK_LOCK_FOLLOWER] = "follower",
	[LK_LOCK_LEADER] = "leader",
	[LK_LOCK_STEPPING_DOWN] = "stepping_down",
	[LK_LOCK_RELEASING] = "releasing",
	[LK_LOCK_DONE] = "done",
};

/* ---- timers ------------------------------------------------------------------------------- */

static void on_timer_retry(void *arg) { lk_lock_step(arg, IN_TIMER_RETRY, NULL); }
static void on_timer_renew(void *arg) { lk_lock_step(arg, IN_TIMER_RENEW, NULL); }
static void on_timer_deadline(void *arg) { lk_lock_step(arg, IN_TIMER_DEADLINE, NULL); }
static void on_timer_phase(void *arg) { lk_lock_step(arg, IN_TIMER_PHASE, NULL); }

static void on_notify(void *arg, enum lk_backend_notice what)
{
	lk_lock_step(arg, what == LK_NOTICE_RECONNECTED ? IN_RECONNECTED : IN_NOTIFY, NULL);
}

/* ---- public API ----------------------------------------------------------------------------- */

struct lk_lock *lk_lock_new(const struct lk_config_lock *cfg, struct lk_backend *b,
                            const char *identity, const struct lk_lock_env *env)
{
	static lk_timer_fn *const timer_fns[LK_TIMER__COUNT] = {
		[LK_TIMER_RETRY] = on_timer_retry,
		[LK_TIMER_RENEW] = on_timer_renew,
		[LK_TIMER_DEADLINE] = on_timer_deadline,
		[LK_TIMER_PHASE] = on_timer_phase,
	};
	struct lk_lock *l = calloc(1, sizeof(*l));

	if (!l)
		return NULL;
	l->cfg = cfg;
	l->backend = b;
	l->env = env;
	l->state = LK_LOCK_IDLE; /* where every lock starts: not a transition */
	l->stats.last_release_ms = -1;
	l->stats.last_stepdown_ms = -1;
	l->identity = identity;
	for (int t = 0; t < LK_TIMER__COUNT; t++) {
		l->timers[t] = env->timer_new(env->ctx, timer_fns[t], l);
		if (!l->timers[t])
			goto fail;
	}
	l->key = b->ops->key_new(b, cfg->key, identity, on_notify, l);
	if (!l->key)
		goto fail;
	return l;
fail:
	return lk_lock_free(l);
}

struct lk_lock *lk_lock_free(struct lk_lock *l)
{
	if (!l)
		return NULL;
	if (l->key)
		l->backend->ops->key_free(l->key);
	for (int t = 0; t < LK_TIMER__COUNT; t++)
		if (l->timers[t])
			l->env->timer_free(l->env->ctx, l->timers[t]);
	free(l->members);
	free(l->holder);
	free(l->announced_holder);
	free(l->holdoff_why);
	free(l);
	return NULL;
}

/* Make a histogram this lock will observe exist from now on, at zero (observe with ns -1):
 * rate() and increase() count nothing of a series' first sample, so a series that appeared
 * with its first observation would never show it. A lock campaigns before it can be handed
 * over, leads before it releases or steps down. */
static void will_observe(struct lk_lock *l, enum lk_lock_observation what)
{
	if (l->env->observe)
		l->env->observe(l->env->ctx, l, what, -1);
}

void lk_lock_start(struct lk_lock *l)
{
	if (l->cfg->campaign == LK_CAMPAIGN_ALWAYS)
		will_observe(l, LK_OBSERVE_HANDOFF_GAP);
	lk_lock_step(l, IN_START, NULL);
}

static struct member *find_member(const struct lk_lock *l, const void *client)
{
	for (size_t i = 0; i < l->n_members; i++)
		if (l->members[i].client == client)
			return &l->members[i];
	return NULL;
}

int lk_lock_campaign(struct lk_lock *l, void *client)
{
	if (l->draining || l->state == LK_LOCK_DONE)
		return -EBUSY;
	if (find_member(l, client))
		return 0;
	if (l->n_members == l->cap_members) {
		if (l->cap_members >= LK_LOCK_MAX_CAMPAIGNERS)
			return -ENOSPC;
		size_t cap = l->cap_members ? l->cap_members * 2 : 4;
		struct member *m = realloc(l->members, cap * sizeof(*m));
		if (!m)
			return -ENOMEM;
		l->members = m;
		l->cap_members = cap;
	}
	l->members[l->n_members++] = (struct member){ .client = client };
	will_observe(l, LK_OBSERVE_HANDOFF_GAP);
	lk_lock_step(l, IN_CAMPAIGN, NULL);
	return 0;
}

static void remove_member(struct lk_lock *l, void *client, enum lk_lock_input in)
{
	struct member *m = find_member(l, client);

	if (!m)
		return;
	*m = l->members[--l->n_members];
	lk_lock_step(l, in, NULL);
}

void lk_lock_leave(struct lk_lock *l, void *client)
{
	remove_member(l, client, IN_LEAVE);
}

void lk_lock_evict(struct lk_lock *l, void *client)
{
	remove_member(l, client, IN_EVICT);
}

int lk_lock_ack(struct lk_lock *l, void *client, uint64_t token)
{
	struct member *m;

	if (token == 0 || token != l->token)
		return -EINVAL;
	/* Only an answer to STEPDOWN counts: an ACK sent earlier by mistake must not let the next
	 * drain release at once. */
	m = find_member(l, client);
	if (m && l->state == LK_LOCK_STEPPING_DOWN) {
		m->acked = token;
		lk_lock_step(l, IN_ACK, NULL);
	}
	return 0;
}

void lk_lock_drain(struct lk_lock *l)
{
	/* I7: however many times the drain is asked for, each lock enters it once. The flag is set
	 * before the step so that every transition taken from here on sees it. */
	if (l->draining)
		return;
	l->draining = true;
	lk_lock_step(l, IN_DRAIN, NULL);
}

void lk_lock_abort(struct lk_lock *l)
{
	if (l->state == LK_LOCK_DONE)
		return;
	l->draining = true;
	lk_lock_step(l, IN_ABORT, NULL);
}

void lk_lock_catch_up(struct lk_lock *l)
{
	/* A stalled loop may not have run the deadline timer yet: act on it now (I1, I9). */
	if (lk_lock_is_leader(l) && now_ns(l) >= l->deadline_ns)
		lk_lock_step(l, IN_TIMER_DEADLINE, NULL);
}

int lk_lock_current_event(struct lk_lock *l, char *buf, size_t cap)
{
	int64_t now;

	lk_lock_catch_up(l);
	now = now_ns(l);
	switch (l->state) {
	case LK_LOCK_LEADER:
		return lk_codec_format_event(buf, cap, &(struct lk_event){
			.kind = LK_EV_LEADER, .lock = l->cfg->name, .token = l->token,
			.ttl_ms = lk_lock_ttl_ms(l), .until_mono_ms = lk_lock_until_mono_ms(l) });
	case LK_LOCK_STEPPING_DOWN: {
		int64_t left = l->cfg->stepdown_timeout_ms - ms_between(l->stepdown_start_ns, now);
		return lk_codec_format_event(buf, cap, &(struct lk_event){
			.kind = LK_EV_STEPDOWN, .lock = l->cfg->name, .token = l->token,
			.deadline_ms = left > 0 ? left : 0 });
	}
	default:
		return lk_codec_format_event(buf, cap, &(struct lk_event){
			.kind = LK_EV_FOLLOWER, .lock = l->cfg->name,
			.holder = l->state == LK_LOCK_RELEASING || l->state == LK_LOCK_DONE
			          ? "-" : lk_lock_holder(l) });
	}
}

const char *lk_lock_name(const struct lk_lock *l) { return l->cfg->name; }
const char *lk_lock_backend_name(const struct lk_lock *l) { return l->backend->name; }
enum lk_lock_state lk_lock_state(const struct lk_lock *l) { return l->state; }
uint64_t lk_lock_token(const struct lk_lock *l) { return l->token; }
const char *lk_lock_holder(const struct lk_lock *l) { return l->holder ? l->holder : "-"; }

void lk_lock_set_text(char **dst, const char *src)
{
	char *copy;

	if (src && *dst && strcmp(*dst, src) == 0)
		return;
	/* Out of memory the text is dropped ("-", or no reason): it only informs. */
	copy = src ? strdup(src) : NULL;
	free(*dst);
	*dst = copy;
}
size_t lk_lock_campaigners(const struct lk_lock *l) { return l->n_members; }
const struct lk_lock_stats *lk_lock_stats(const struct lk_lock *l) { return &l->stats; }

const char *lk_lock_state_name(enum lk_lock_state s)
{
	return s < LK_LOCK__STATE_COUNT ? state_names[s] : "?";
}

const char *lk_lock_after_name(enum lk_lock_after a)
{
	static const char *const names[LK_LOCK_AFTER__COUNT] = {
		[LK_LOCK_AFTER_RELEASE] = "release",
		[LK_LOCK_AFTER_EXPIRY] = "expiry",
		[LK_LOCK_AFTER_FIRST] = "first",
	};

	return a < LK_LOCK_AFTER__COUNT ? names[a] : "?";
}

/* A backend that cannot tell what came before counts as an expiry: only a handoff known to be
 * a release is graceful, and the alert on expiries would rather look once too often. The gap
 * means something only after a release. */
enum lk_lock_after lk_lock_count_acquisition(struct lk_lock *l, const struct lk_reply *r,
                                             int64_t *gap_ns)
{
	enum lk_lock_after a = r->after == LK_AFTER_FIRST   ? LK_LOCK_AFTER_FIRST :
	                       r->after == LK_AFTER_RELEASE ? LK_LOCK_AFTER_RELEASE :
	                                                      LK_LOCK_AFTER_EXPIRY;

	l->stats.acquisitions++;
	l->stats.acquired_after[a]++;
	will_observe(l, LK_OBSERVE_RELEASE);
	will_observe(l, LK_OBSERVE_STEPDOWN);
	*gap_ns = a == LK_LOCK_AFTER_RELEASE && r->gap_ns >= 0 ? r->gap_ns : -1;
	if (*gap_ns >= 0 && l->env->observe)
		l->env->observe(l->env->ctx, l, LK_OBSERVE_HANDOFF_GAP, *gap_ns);
	return a;
}

bool lk_lock_is_leader(const struct lk_lock *l)
{
	return l->state == LK_LOCK_LEADER || l->state == LK_LOCK_STEPPING_DOWN;
}

int64_t lk_lock_until_mono_ms(const struct lk_lock *l)
{
	/* Rounded down, so that an app's deadline is never later than the agent's own. */
	return lk_lock_is_leader(l) ? l->deadline_ns / NS_PER_MS : 0;
}

int64_t lk_lock_ttl_ms(const struct lk_lock *l)
{
	int64_t left;

	if (!lk_lock_is_leader(l))
		return 0;
	left = ms_between(now_ns(l), l->expires_ns);
	return left > 0 ? left : 0;
}

int64_t lk_lock_holdoff_ms(const struct lk_lock *l, const char **why)
{
	int64_t left;

	if (l->state != LK_LOCK_FOLLOWER || !l->holdoff_until_ns)
		return 0;
	left = (l->holdoff_until_ns - now_ns(l) + NS_PER_MS - 1) / NS_PER_MS;
	if (left <= 0)
		return 0;
	if (why)
		*why = l->holdoff_why ? l->holdoff_why : "unknown";
	return left;
}

bool lk_lock_outcome(const struct lk_lock *l, enum lk_outcome *ret)
{
	if (!l->has_outcome)
		return false;
	*ret = l->outcome;
	return true;
}
