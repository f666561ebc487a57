/* The daemon's wiring: the one event loop, signals, backends, locks, the socket server, and the
 * drain that ends the process (README "The drain"). Everything here runs on the loop's only
 * thread. */
#include "agent/agent.h"

#include <errno.h>
#include <event2/event.h>
#include <inttypes.h>
#include <jansson.h>
#include <malloc.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "agent/config.h"
#include "agent/http.h"
#include "agent/lock.h"
#include "agent/log.h"
#include "agent/metrics.h"
#include "agent/server.h"
#include "agent/session.h"
#include "agent/status.h"
#include "locks/backend.h"
#include "proto/auth.h"

#define NS_PER_MS 1000000LL
/* How long the last log lines (the drain summary) may wait for a slow stderr at exit. */
#define LOG_FLUSH_AT_EXIT_MS 500

/* A lock's place in the config, found from the lock pointer the lock env's hooks get. */
struct lock_slot {
	const struct lk_lock *lock;
	size_t index;
};

/* A lock's timer. Locks have four each, and an agent may have 16384 locks: rather than a
 * libevent event per timer (an allocation of 128 bytes each, some 700 bytes a lock), the
 * agent keeps every armed timer in one binary min-heap on its deadline, under one libevent
 * timer armed for the earliest. Arming, re-arming and disarming are O(log n). */
struct agent_timer {
	struct lk_agent *agent;
	lk_timer_fn *fn;
	void *arg;
	int64_t at_ns;             /* CLOCK_MONOTONIC deadline while armed */
	/* 32 bits each keep the timer in a 48-byte heap chunk rather than 64, for four timers
	 * per lock: the heap holds at most 4 x LK_CONFIG_MAX_LOCKS, and a pass count that wraps
	 * only ever makes a timer armed 2^32 passes ago wait one more pass. */
	uint32_t slot;             /* index in the heap, or NOT_ARMED */
	uint32_t pass;             /* the agent's timer pass when armed */
};

#define NOT_ARMED UINT32_MAX

struct lk_agent {
	struct event_base *base;
	const struct lk_config *cfg;
	struct lk_backend **backends;
	struct lk_lock **locks;
	struct lock_slot *slots;        /* the locks sorted by address, for lock_index() */
	size_t *by_name;                /* the status view's name index */
	bool *settled;                  /* per lock: counted in n_settled */
	size_t n_settled;               /* locks DONE during the drain */
	struct lk_lock_env env;
	struct lk_status status;        /* what session, http and metrics read (status.h) */
	struct lk_server *server;
	struct lk_http *http;
	struct agent_timer **heap;      /* armed lock timers, earliest first (see agent_timer) */
	size_t n_heap, cap_heap;
	struct event *heap_ev;          /* fires at heap_ev_at, the earliest deadline when armed */
	int64_t heap_ev_at;             /* -1 when heap_ev is not armed */
	uint32_t timer_pass;            /* on_heap_timer runs, counted (wraps) */
	struct lk_metrics metrics;
	struct event *sig_term, *sig_int, *sig_quit, *shutdown_timer;

	bool draining;
	bool drain_done;
	bool clients_closed;            /* the drain closed every client */
	unsigned quiescing;             /* backends still giving back what they held */
	bool settling;          /* inside a loop over locks: completion is checked after it */
	int64_t drain_start_ns;
	int exit_status;
};

/* ---- lock environment: real time and libevent timers -------------------------------------- */

static int64_t env_now(void *ctx)
{
	return lk_mono_ns();
}

static void heap_set(struct lk_agent *a, size_t i, struct agent_timer *t)
{
	a->heap[i] = t;
	t->slot = (uint32_t)i;
}

static void heap_up(struct lk_agent *a, size_t i)
{
	struct agent_timer *t = a->heap[i];

	while (i > 0 && a->heap[(i - 1) / 2]->at_ns > t->at_ns) {
		heap_set(a, i, a->heap[(i - 1) / 2]);
		i = (i - 1) / 2;
	}
	heap_set(a, i, t);
}

static void heap_down(struct lk_agent *a, size_t i)
{
	struct agent_timer *t = a->heap[i];

	for (;;) {
		size_t c = 2 * i + 1;

		if (c >= a->n_heap)
			break;
		if (c + 1 < a->n_heap && a->heap[c + 1]->at_ns < a->heap[c]->at_ns)
			c++;
		if (a->heap[c]->at_ns >= t->at_ns)
			break;
		heap_set(a, i, a->heap[c]);
		i = c;
	}
	heap_set(a, i, t);
}

static void heap_remove(struct lk_agent *a, struct agent_timer *t)
{
	size_t i = t->slot;
	struct agent_timer *last = a->heap[--a->n_heap];

	t->slot = NOT_ARMED;
	if (last == t)
		return;
	heap_set(a, i, last);
	heap_up(a, i);
	heap_down(a, last->slot);
}

/* Arm heap_ev for the earliest deadline, unless it already fires by then (firing early is
 * harmless: on_heap_timer only runs what is due and arms it again). */
static void heap_schedule(struct lk_agent *a)
{
	struct timeval tv = { 0, 0 };
	int64_t at, in_ns;

	if (a->n_heap == 0)
		return;
	at = a->heap[0]->at_ns;
	if (a->heap_ev_at >= 0 && a->heap_ev_at <= at)
		return;
	in_ns = at - lk_mono_ns();
	if (in_ns > 0) {
		tv.tv_sec = in_ns / 1000000000;
		/* Round up: a timer that fires a hair early would find its deadline not yet due. */
		tv.tv_usec = (in_ns % 1000000000 + 999) / 1000;
		if (tv.tv_usec >= 1000000) {
			tv.tv_sec++;
			tv.tv_usec -= 1000000;
		}
	}
	evtimer_add(a->heap_ev, &tv);
	a->heap_ev_at = at;
}

/* Run every timer due by the deadline heap_ev was armed for (as a libevent timer of its own
 * would have run at that time) or by now. Each is taken off the heap before its callback,
 * which may arm, disarm or free any timer, this one included. A timer armed during this pass
 * waits for the next turn of the loop, as a libevent timer added from a callback would: a
 * callback that keeps arming its timer in the past cannot keep the loop from its I/O. */
static void on_heap_timer(evutil_socket_t fd, short what, void *arg)
{
	struct lk_agent *a = arg;
	int64_t due = a->heap_ev_at, now = lk_mono_ns();
	uint32_t pass = ++a->timer_pass;

	a->heap_ev_at = -1;
	if (now > due)
		due = now;
	while (a->n_heap > 0 && a->heap[0]->at_ns <= due && a->heap[0]->pass != pass) {
		struct agent_timer *t = a->heap[0];

		heap_remove(a, t);
		t->fn(t->arg);
	}
	heap_schedule(a);
}

static void *env_timer_new(void *ctx, lk_timer_fn *fn, void *arg)
{
	struct lk_agent *a = ctx;
	struct agent_timer *t = calloc(1, sizeof(*t));

	if (!t)
		return NULL;
	t->agent = a;
	t->fn = fn;
	t->arg = arg;
	t->slot = NOT_ARMED;
	return t;
}

static void env_timer_arm(void *ctx, void *timer, int64_t at_ns)
{
	struct lk_agent *a = ctx;
	struct agent_timer *t = timer;

	t->pass = a->timer_pass;
	if (t->slot == NOT_ARMED) {
		if (a->n_heap == a->cap_heap) {
			size_t cap = a->cap_heap ? a->cap_heap * 2 : 64;
			struct agent_timer **v = realloc(a->heap, cap * sizeof(*v));

			if (!v) {
				/* Cannot happen with the heap sized for every timer at start; a lock
				 * whose timer is lost would stall, so say so loudly. */
				LK_LOG(LK_ERROR, "out of memory arming a timer");
				return;
			}
			a->heap = v;
			a->cap_heap = cap;
		}
		t->at_ns = at_ns;
		heap_set(a, a->n_heap++, t);
		heap_up(a, t->slot);
	} else {
		t->at_ns = at_ns;
		heap_up(a, t->slot);
		heap_down(a, t->slot);
	}
	heap_schedule(a);
}

static void env_timer_disarm(void *ctx, void *timer)
{
	struct agent_timer *t = timer;

	if (t->slot != NOT_ARMED)
		heap_remove(t->agent, t);
}

static void env_timer_free(void *ctx, void *timer)
{
	env_timer_disarm(ctx, timer);
	free(timer);
}

static int slot_cmp(const void *a, const void *b)
{
	uintptr_t x = (uintptr_t)((const struct lock_slot *)a)->lock;
	uintptr_t y = (uintptr_t)((const struct lock_slot *)b)->lock;

	return x < y ? -1 : x > y;
}

/* The index of l, or -1: every event a lock emits asks, so a binary search over the locks sorted
 * by address rather than a scan of every lock. */
static int lock_index(const struct lk_agent *a, const struct lk_lock *l)
{
	const struct lock_slot key = { .lock = l };
	const struct lock_slot *hit = bsearch(&key, a->slots, a->cfg->n_locks, sizeof(*a->slots),
	                                      slot_cmp);

	return hit ? (int)hit->index : -1;
}

static void env_emit(void *ctx, struct lk_lock *l, const char *line, size_t len)
{
	struct lk_agent *a = ctx;
	int i = lock_index(a, l);

	if (a->server && i >= 0)
		lk_server_emit_lock(a->server, (size_t)i, line, len);
}

static void env_backend_error(void *ctx, struct lk_lock *l)
{
	struct lk_agent *a = ctx;
	int i = lock_index(a, l);

	if (i >= 0)
		a->metrics.backend_errors[a->cfg->locks[i].backend]++;
}

static void env_observe(void *ctx, struct lk_lock *l, enum lk_lock_observation what,
                        int64_t ns)
{
	struct lk_agent *a = ctx;
	int i = lock_index(a, l);

	if (i >= 0)
		lk_metrics_observe_lock(&a->metrics, (size_t)i, what, (double)ns / 1e9);
}

static void maybe_finish_drain(struct lk_agent *a, bool timed_out);

/* Counting the locks that settled lets each settle cost O(log n) instead of a look at every
 * lock (a drain of n locks was O(n^2)); the full look happens once, when all have. */
static void env_settled(void *ctx, struct lk_lock *l)
{
	struct lk_agent *a = ctx;
	int i = lock_index(a, l);

	if (i >= 0 && !a->settled[i] && lk_lock_state(l) == LK_LOCK_DONE) {
		a->settled[i] = true;
		a->n_settled++;
	}
	if (!a->settling)
		maybe_finish_drain(a, false);
}

/* ---- drain ---------------------------------------------------------------------------------- */

/* The loop ends once the clients are closed and every backend has given back what it held
 * for the agent as a whole (etcd's shared leases). */
static void maybe_exit(struct lk_agent *a)
{
	if (a->clients_closed && a->quiescing == 0)
		event_base_loopexit(a->base, NULL);
}

static void on_all_closed(void *arg)
{
	struct lk_agent *a = arg;

	a->clients_closed = true;
	maybe_exit(a);
}

static void on_quiesced(void *arg)
{
	struct lk_agent *a = arg;

	a->quiescing--;
	maybe_exit(a);
}

/* Once the loop is over nothing this process still does is urgent (freeing, and the exit's
 * teardown: half a millisecond of kernel time here), while the successor's agent or the backend
 * may share this CPU and be waiting for it: the Redis server, woken by our release, was
 * preempted by our reply's wakeup before it wrote the successor's notice, and the handoff
 * waited for our exit (measured 0.5 to 0.7 ms of a 1 ms handoff; ARCHITECTURE.md, Drain).
 * SCHED_IDLE lets any ordinary task run first; the call fails harmlessly where unsupported.
 * Not earlier: STOP, DRAINED and the backends' quiesce still go out at normal priority, so a
 * busy node cannot starve them. */
static void yield_cpu_for_good(void)
{
#ifdef SCHED_IDLE
	struct sched_param p = { .sched_priority = 0 };

	/* The change of policy alone does not hand over the CPU (the kernel keeps running us until
	 * its next tick or wakeup); the yield does. */
	if (sched_setscheduler(0, SCHED_IDLE, &p) == 0)
		sched_yield();
	else
		LK_LOG(LK_DEBUG, "could not lower the agent's priority for its exit",
		       LKF_STR("error", strerror(errno)));
#endif
}

static void maybe_finish_drain(struct lk_agent *a, bool timed_out)
{
	unsigned released = 0, expired = 0, failed = 0;
	int64_t wait_ms = 0, elapsed_ms, left_ms;
	const char *reason;
	char line[LK_LINE_MAX];
	int n;

	if (!a->draining || a->drain_done || (!timed_out && a->n_settled < a->cfg->n_locks))
		return;
	for (size_t i = 0; i < a->cfg->n_locks; i++) {
		enum lk_outcome o;
		const struct lk_lock_stats *st = lk_lock_stats(a->locks[i]);

		if (lk_lock_state(a->locks[i]) != LK_LOCK_DONE)
			return;
		if (st->last_stepdown_ms > wait_ms)
			wait_ms = st->last_stepdown_ms;
		if (!lk_lock_outcome(a->locks[i], &o))
			continue;
		if (o == LK_OUTCOME_RELEASED || o == LK_OUTCOME_ALREADY_GONE)
			released++;
		else if (o == LK_OUTCOME_EXPIRED)
			expired++;
		else
			failed++;
	}
	a->drain_done = true;
	event_del(a->shutdown_timer);
	elapsed_ms = (lk_mono_ns() - a->drain_start_ns) / NS_PER_MS;
	left_ms = a->cfg->shutdown_timeout_ms - elapsed_ms;
	if (timed_out)
		reason = "shutdown_timeout";
	else if (failed)
		reason = "release_failed";
	else if (expired)
		reason = "stepdown_timeout";
	else
		reason = "drained";
	a->exit_status = (timed_out || failed || expired) ? 1 : 0;
	a->metrics.graceful_exit_failed += (uint64_t)a->exit_status;
	lk_histogram_observe(&a->metrics.shutdown_duration, (double)elapsed_ms / 1000.0);

	n = lk_codec_format_event(line, sizeof(line), &(struct lk_event){
		.kind = LK_EV_STOP, .deadline_ms = left_ms > 0 ? left_ms : 0 });
	if (n > 0)
		lk_server_broadcast(a->server, line, (size_t)n);
	n = lk_codec_format_event(line, sizeof(line), &(struct lk_event){
		.kind = LK_EV_DRAINED, .released = released, .expired = expired, .failed = failed,
		.elapsed_ms = elapsed_ms });
	if (n > 0)
		lk_server_to_drainers(a->server, line, (size_t)n);
	LK_LOG(a->exit_status ? LK_WARN : LK_INFO, "drain complete", LKF_STR("exit_reason", reason)
	       LKF_I64("wait_duration_ms", wait_ms) LKF_U64("released", released)
	       LKF_U64("expired", expired) LKF_U64("failed", failed)
	       LKF_I64("elapsed_ms", elapsed_ms));
	/* The backend woken by our last release may be waiting for this CPU to tell the successor:
	 * let it go first (see yield_cpu_for_good()), then finish at normal priority. */
	sched_yield();
	for (size_t i = 0; i < a->cfg->n_backends; i++)
		if (a->backends[i]->ops->quiesce &&
		    a->backends[i]->ops->quiesce(a->backends[i], on_quiesced, a) == 0)
			a->quiescing++;
	lk_server_close_all(a->server, on_all_closed, a);
}

static void on_shutdown_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct lk_agent *a = arg;

	LK_LOG(LK_ERROR, "shutdown timeout: exiting, leases left to expire by TTL",
	       LKF_I64("shutdown_timeout_ms", a->cfg->shutdown_timeout_ms));
	a->settling = true;
	for (size_t i = 0; i < a->cfg->n_locks; i++)
		lk_lock_abort(a->locks[i]);
	a->settling = false;
	maybe_finish_drain(a, true);
}

/* Start or join the one drain (I7). trigger says who asked, for the log. */
static void agent_drain(struct lk_agent *a, const char *trigger)
{
	struct timeval tv = { a->cfg->shutdown_timeout_ms / 1000,
	                      (a->cfg->shutdown_timeout_ms % 1000) * 1000 };

	if (a->draining) {
		LK_LOG(LK_INFO, "drain already under way", LKF_STR("trigger", trigger));
		return;
	}
	a->draining = true;
	a->drain_start_ns = lk_mono_ns();
	LK_LOG(LK_INFO, "drain started", LKF_STR("trigger", trigger));
	evtimer_add(a->shutdown_timer, &tv);
	/* Locks that hold nothing settle at once; check for the end once, after all started. */
	a->settling = true;
	for (size_t i = 0; i < a->cfg->n_locks; i++)
		lk_lock_drain(a->locks[i]);
	a->settling = false;
	maybe_finish_drain(a, false);
}

/* ---- signals ------------------------------------------------------------------------------ */

static void on_sigterm(evutil_socket_t sig, short what, void *arg)
{
	agent_drain(arg, sig == SIGINT ? "SIGINT" : "SIGTERM");
}

static void on_sigquit(evutil_socket_t sig, short what, void *arg)
{
	struct lk_agent *a = arg;
	size_t camp = 0, watch = 0, other = 0;

	lk_server_count(a->server, &camp, &watch, &other);
	LK_LOG(LK_INFO, "state dump", LKF_STR("identity", a->cfg->identity)
	       LKF_BOOL("draining", a->draining) LKF_U64("campaign_clients", camp)
	       LKF_U64("watch_clients", watch) LKF_U64("other_clients", other));
	for (size_t i = 0; i < a->cfg->n_locks; i++) {
		struct lk_lock *l = a->locks[i];
		LK_LOG(LK_INFO, "state dump: lock", LKF_STR("lock", lk_lock_name(l))
		       LKF_STR("backend", lk_lock_backend_name(l))
		       LKF_STR("state", lk_lock_state_name(lk_lock_state(l)))
		       LKF_U64("token", lk_lock_token(l)) LKF_STR("holder", lk_lock_holder(l))
		       LKF_I64("ttl_ms", lk_lock_ttl_ms(l))
		       LKF_I64("holdoff_ms", lk_lock_holdoff_ms(l, NULL))
		       LKF_U64("campaign_clients", lk_lock_campaigners(l)));
	}
}

/* ---- backends' hooks ------------------------------------------------------------------------ */

static void on_backend_log(void *arg, struct lk_backend *b, enum lk_backend_log_level level,
                           const char *msg)
{
	static const enum lk_log_level map[] = {
		[LK_BLOG_DEBUG] = LK_DEBUG, [LK_BLOG_INFO] = LK_INFO,
		[LK_BLOG_WARN] = LK_WARN, [LK_BLOG_ERROR] = LK_ERROR,
	};
	struct lk_agent *a = arg;

	/* Backends report a connection failure once per outage at warn or error. */
	if (level >= LK_BLOG_WARN)
		for (size_t i = 0; i < a->cfg->n_backends; i++)
			if (a->backends[i] == b)
				a->metrics.backend_errors[i]++;
	LK_LOG(map[level], msg, LKF_STR("backend", b->name));
}

/* ---- what session, http and metrics see of the agent (status.h, session.h) ------------------ */

static bool status_draining(void *ctx)
{
	const struct lk_agent *a = ctx;

	return a->draining;
}

static void status_client_counts(void *ctx, size_t *campaign, size_t *watch, size_t *other)
{
	const struct lk_agent *a = ctx;

	*campaign = *watch = *other = 0;
	if (a->server)
		lk_server_count(a->server, campaign, watch, other);
}

static json_t *status_clients_json(void *ctx)
{
	const struct lk_agent *a = ctx;

	return lk_server_status_json(a->server);
}

static void session_drain(void *ctx, const char *trigger)
{
	agent_drain(ctx, trigger);
}

/* ---- life cycle ----------------------------------------------------------------------------- */

static void agent_free(struct lk_agent *a)
{
	a->http = lk_http_free(a->http);
	a->server = lk_server_free(a->server);
	for (size_t i = 0; a->locks && i < a->cfg->n_locks; i++)
		lk_lock_free(a->locks[i]);
	for (size_t i = 0; a->backends && i < a->cfg->n_backends; i++)
		lk_backend_free(a->backends[i]);
	free(a->locks);
	free(a->slots);
	free(a->by_name);
	free(a->settled);
	free(a->backends);
	lk_metrics_release(&a->metrics);
	free(a->heap);
	struct event *evs[] = { a->sig_term, a->sig_int, a->sig_quit, a->shutdown_timer,
	                        a->heap_ev };
	for (size_t i = 0; i < sizeof(evs) / sizeof(evs[0]); i++)
		if (evs[i])
			event_free(evs[i]);
	if (a->base) {
		lk_log_detach(LOG_FLUSH_AT_EXIT_MS);
		event_base_free(a->base);
	}
}

static int agent_start(struct lk_agent *a)
{
	const struct lk_config *cfg = a->cfg;
	const struct lk_backend_hooks hooks = { .log = on_backend_log, .arg = a };
	uint8_t key[LK_AUTH_KEY_BYTES];
	char err[512];
	int rc;

	a->env = (struct lk_lock_env){
		.ctx = a, .now_ns = env_now, .timer_new = env_timer_new, .timer_arm = env_timer_arm,
		.timer_disarm = env_timer_disarm, .timer_free = env_timer_free, .emit = env_emit,
		.settled = env_settled, .backend_error = env_backend_error, .observe = env_observe,
	};
	a->base = event_base_new();
	a->backends = calloc(cfg->n_backends, sizeof(*a->backends));
	a->locks = calloc(cfg->n_locks, sizeof(*a->locks));
	a->slots = calloc(cfg->n_locks, sizeof(*a->slots));
	a->settled = calloc(cfg->n_locks, sizeof(*a->settled));
	a->metrics.backend_errors = calloc(cfg->n_backends, sizeof(*a->metrics.backend_errors));
	if (!a->base || !a->backends || !a->locks || !a->slots || !a->settled ||
	    !a->metrics.backend_errors || lk_metrics_init(&a->metrics, cfg->n_locks) < 0 ||
	    lk_log_attach(a->base) < 0) {
		LK_LOG(LK_ERROR, "out of memory");
		return -ENOMEM;
	}
	/* Signals first: a SIGTERM that arrives once the socket is visible must start a drain,
	 * not kill the process with its default action. libevent holds it until the loop runs. */
	a->sig_term = evsignal_new(a->base, SIGTERM, on_sigterm, a);
	a->sig_int = evsignal_new(a->base, SIGINT, on_sigterm, a);
	a->sig_quit = evsignal_new(a->base, SIGQUIT, on_sigquit, a);
	a->shutdown_timer = evtimer_new(a->base, on_shutdown_timeout, a);
	a->heap_ev = evtimer_new(a->base, on_heap_timer, a);
	a->heap_ev_at = -1;
	/* Room for every lock's every timer, so that arming never allocates. */
	a->cap_heap = cfg->n_locks * LK_TIMER__COUNT;
	a->heap = calloc(a->cap_heap ? a->cap_heap : 1, sizeof(*a->heap));
	if (!a->heap_ev || !a->heap) {
		LK_LOG(LK_ERROR, "out of memory");
		return -ENOMEM;
	}
	if (!a->sig_term || !a->sig_int || !a->sig_quit || !a->shutdown_timer ||
	    evsignal_add(a->sig_term, NULL) < 0 || evsignal_add(a->sig_int, NULL) < 0 ||
	    evsignal_add(a->sig_quit, NULL) < 0) {
		LK_LOG(LK_ERROR, "cannot set up signal handling");
		return -EIO;
	}
	if (cfg->auth_key_file &&
	    lk_auth_load_key(cfg->auth_key_file, key, err, sizeof(err)) < 0) {
		LK_LOG(LK_ERROR, "cannot load the auth key", LKF_STR("error", err));
		return -EINVAL;
	}
	for (size_t i = 0; i < cfg->n_backends; i++) {
		rc = lk_backend_new(a->base, &cfg->backends[i], &hooks, &a->backends[i], err,
		                    sizeof(err));
		if (rc < 0) {
			LK_LOG(LK_ERROR, "cannot set up backend", LKF_STR("backend", cfg->backends[i].name)
			       LKF_STR("error", err));
			return rc;
		}
	}
	for (size_t i = 0; i < cfg->n_locks; i++) {
		const struct lk_config_lock *lc = &cfg->locks[i];
		a->locks[i] = lk_lock_new(lc, a->backends[lc->backend], cfg->identity, &a->env);
		if (!a->locks[i]) {
			LK_LOG(LK_ERROR, "out of memory");
			return -ENOMEM;
		}
		a->slots[i] = (struct lock_slot){ .lock = a->locks[i], .index = i };
	}
	qsort(a->slots, cfg->n_locks, sizeof(*a->slots), slot_cmp);
	a->status = (struct lk_status){
		.ctx = a, .identity = cfg->identity, .version = LK_VERSION,
		.locks = a->locks, .n_locks = cfg->n_locks,
		.backends = a->backends, .n_backends = cfg->n_backends, .metrics = &a->metrics,
		.draining = status_draining, .client_counts = status_client_counts,
		.clients_json = status_clients_json,
	};
	a->by_name = lk_status_index_new(&a->status);
	if (!a->by_name) {
		LK_LOG(LK_ERROR, "out of memory");
		return -ENOMEM;
	}
	a->status.by_name = a->by_name;
	/* Copied by the server, the key too. */
	const struct lk_session_env session_env = {
		.status = &a->status, .ctx = a, .drain = session_drain,
		.key = cfg->auth_key_file ? key : NULL,
	};
	struct lk_server_limits limits = {
		.max_clients = cfg->max_clients,
		.idle_timeout_ms = cfg->client_idle_timeout_ms,
		.allowed_uids = cfg->allowed_uids,
		.n_allowed_uids = cfg->n_allowed_uids,
	};
	rc = lk_server_new(a->base, &session_env, cfg->socket_path, cfg->socket_mode, &limits,
	                   &a->server, err, sizeof(err));
	if (rc < 0) {
		LK_LOG(LK_ERROR, "cannot open the socket", LKF_STR("error", err));
		return rc;
	}
	if (cfg->http_listen) {
		rc = lk_http_new(a->base, &a->status, cfg->http_listen, &a->http, err, sizeof(err));
		if (rc < 0) {
			LK_LOG(LK_ERROR, "cannot serve HTTP", LKF_STR("error", err));
			return rc;
		}
	}
	return 0;
}

int lk_agent_run(const struct lk_config *cfg)
{
	struct lk_agent a = { .cfg = cfg, .exit_status = 1 };

	/* A client that vanishes mid-write must cost us an EPIPE, not the process. */
	signal(SIGPIPE, SIG_IGN);
	if (lk_auth_init() < 0) {
		LK_LOG(LK_ERROR, "cannot initialise libsodium");
		return 1;
	}
	if (agent_start(&a) < 0) {
		agent_free(&a);
		return 1;
	}
	LK_LOG(LK_INFO, "agent started", LKF_STR("version", LK_VERSION)
	       LKF_STR("identity", cfg->identity) LKF_STR("socket", cfg->socket_path)
	       LKF_STR("http", cfg->http_listen ? cfg->http_listen : "")
	       LKF_U64("locks", cfg->n_locks) LKF_BOOL("auth", cfg->auth_key_file != NULL));
	/* Parsing the config peaked at ~2.5 KB per lock (libyaml's document), all free by now;
	 * the heap keeps freed pages resident unless told, and would count them against us for
	 * the agent's whole life. */
	malloc_trim(0);
	for (size_t i = 0; i < cfg->n_locks; i++)
		lk_lock_start(a.locks[i]);
	event_base_dispatch(a.base);
	/* The drain is over and more SIGTERMs may come (I7: any number): freeing the signal events
	 * puts the default action back, which would turn the exit status 0 into a death by signal.
	 * Blocked, they stay pending until the process is gone. */
	sigset_t late;
	sigemptyset(&late);
	sigaddset(&late, SIGTERM);
	sigaddset(&late, SIGINT);
	sigprocmask(SIG_BLOCK, &late, NULL);
	if (!a.drain_done)
		LK_LOG(LK_ERROR, "drain complete", LKF_STR("exit_reason", "fatal")
		       LKF_I64("wait_duration_ms", 0) LKF_U64("released", 0) LKF_U64("expired", 0)
		       LKF_U64("failed", 0) LKF_I64("elapsed_ms", 0));
	yield_cpu_for_good();
	agent_free(&a);
	return a.exit_status;
}
