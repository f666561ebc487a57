/* Tests for agent/lock: the per-lock state machine (the invariants in ARCHITECTURE.md, the
 * drain in README), driven by a
 * fake clock, fake timers and a fake backend whose requests the tests answer one by one.
 *
 * Nothing here is real: time moves only when a test calls advance(), timers fire in due order
 * while it does, and a backend request stays in flight until the test answers it with the
 * lk_reply of its choice. Every event line the lock sends is recorded with the fake time it was
 * sent at, so tests assert exact lines ("LEADER sched token=7 ttl_ms=10000\n") and exact times.
 * The deadline a LEADER or RENEWED carries (until_mono_ms) and the RENEWED lines themselves are
 * recorded apart (renewals[], last_until_ms) and checked by the deadline tests.
 */
#include <check.h>
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/config.h"
#include "agent/lock.h"
#include "agent/log.h"
#include "locks/backend.h"

#define MS ((int64_t)1000000)
/* The fake clock starts far from zero so that a time mistaken for a duration shows. */
#define T0 (1000000 * MS)

/* ---- the lock under test and its config ---------------------------------------------------- */

static char lock_name[] = "sched";
static char lock_key[] = "app/sched";
static char backend_name[] = "main";
static const char identity[] = "me";

static struct lk_config_lock cfg;
static struct lk_lock *L;

/* Campaign clients are opaque pointers to the lock: any distinct addresses will do. */
static char client_slots[LK_LOCK_MAX_CAMPAIGNERS + 2];
#define C1 ((void *)&client_slots[0])
#define C2 ((void *)&client_slots[1])
#define WATCHER ((void *)&client_slots[2])

/* ---- fake clock and timers ------------------------------------------------------------------ */

struct ftimer {
	lk_timer_fn *fn;
	void *arg;
	bool armed, freed;
	int64_t due;
	uint64_t seq;            /* arming order: ties fire first-armed first */
};

#define MAX_TIMERS 16
static struct ftimer timers[MAX_TIMERS];
static int n_timers;
static uint64_t arm_seq;
static int64_t now;

static int64_t f_now(void *ctx)
{
	(void)ctx;
	return now;
}

static void *f_timer_new(void *ctx, lk_timer_fn *fn, void *arg)
{
	(void)ctx;
	ck_assert_int_lt(n_timers, MAX_TIMERS);
	timers[n_timers] = (struct ftimer){ .fn = fn, .arg = arg };
	return &timers[n_timers++];
}

static void f_timer_arm(void *ctx, void *timer, int64_t at_ns)
{
	struct ftimer *t = timer;

	(void)ctx;
	ck_assert(!t->freed);
	t->armed = true;
	t->due = at_ns;
	t->seq = ++arm_seq;
}

static void f_timer_disarm(void *ctx, void *timer)
{
	struct ftimer *t = timer;

	(void)ctx;
	ck_assert(!t->freed);
	t->armed = false;
}

static void f_timer_free(void *ctx, void *timer)
{
	struct ftimer *t = timer;

	(void)ctx;
	ck_assert(!t->freed);
	t->freed = true;
	t->armed = false;
}

/* Move the clock to `target`, firing every timer due by then in time order. The list is read
 * again after each callback, since callbacks arm and disarm timers. A timer armed in the past
 * fires at the current time: the clock never goes back. */
static void advance_to(int64_t target)
{
	for (int fired = 0;; fired++) {
		struct ftimer *next = NULL;

		ck_assert_msg(fired < 100000, "timers keep firing: a loop?");
		for (int i = 0; i < n_timers; i++) {
			struct ftimer *t = &timers[i];
			if (!t->armed || t->due > target)
				continue;
			if (!next || t->due < next->due || (t->due == next->due && t->seq < next->seq))
				next = t;
		}
		if (!next)
			break;
		if (next->due > now)
			now = next->due;
		next->armed = false;
		next->fn(next->arg);
	}
	now = target;
}

static void advance(int64_t ms)
{
	advance_to(now + ms * MS);
}

/* ---- fake event sink ------------------------------------------------------------------------- */

struct fevent {
	char line[LK_LINE_MAX];
	int64_t at;
};

#define MAX_EVENTS 64
static struct fevent events[MAX_EVENTS];
static int n_events, seen_events;
/* RENEWED lines, and the until_mono_ms of every LEADER and RENEWED, are kept apart so that
 * the other tests read the tenure's story without them; the deadline tests check these. */
static struct fevent renewals[MAX_EVENTS];
static int n_renewals;
static int64_t last_until_ms;  /* until_mono_ms of the last LEADER or RENEWED, -1 if none */
static int settled_calls;
static int64_t settled_at;
static int backend_errors;

static void f_emit(void *ctx, struct lk_lock *l, const char *line, size_t len)
{
	(void)ctx;
	ck_assert_ptr_eq(l, L);
	ck_assert_int_lt(n_events, MAX_EVENTS);
	ck_assert_uint_gt(len, 0);
	ck_assert_uint_lt(len, sizeof(events[0].line));
	ck_assert_msg(line[len - 1] == '\n', "event line without its newline");
	if (strncmp(line, "LEADER ", 7) == 0 || strncmp(line, "RENEWED ", 8) == 0) {
		const char *u = strstr(line, " until_mono_ms=");
		char *end;

		ck_assert_msg(u != NULL, "no until_mono_ms in \"%.*s\"", (int)len - 1, line);
		last_until_ms = strtoll(u + 15, &end, 10);
		ck_assert_msg(*end == '\n', "until_mono_ms is not the last word: \"%s\"", line);
		len = (size_t)(u - line);
		if (line[0] == 'R') {
			ck_assert_int_lt(n_renewals, MAX_EVENTS);
			memcpy(renewals[n_renewals].line, line, len);
			renewals[n_renewals].line[len] = '\0';
			renewals[n_renewals++].at = now;
			return;
		}
		memcpy(events[n_events].line, line, len);
		memcpy(events[n_events].line + len, "\n", 2);
		events[n_events++].at = now;
		return;
	}
	memcpy(events[n_events].line, line, len);
	events[n_events].line[len] = '\0';
	events[n_events].at = now;
	n_events++;
}

static void f_settled(void *ctx, struct lk_lock *l)
{
	(void)ctx;
	ck_assert_ptr_eq(l, L);
	ck_assert_int_eq(lk_lock_state(l), LK_LOCK_DONE);
	settled_calls++;
	settled_at = now;
}

static void f_backend_error(void *ctx, struct lk_lock *l)
{
	(void)ctx;
	ck_assert_ptr_eq(l, L);
	backend_errors++;
}

/* What the lock observed for the histograms, by kind: how often, and the last value (ns). */
static int observed[LK_OBSERVE__COUNT];
static int64_t observed_ns[LK_OBSERVE__COUNT];

static int announced[LK_OBSERVE__COUNT]; /* ns -1: the series should exist from now on */

static void f_observe(void *ctx, struct lk_lock *l, enum lk_lock_observation what, int64_t ns)
{
	ck_assert_ptr_eq(l, L);
	ck_assert_int_lt(what, LK_OBSERVE__COUNT);
	ck_assert_int_ge(ns, -1);
	if (ns < 0) {
		announced[what]++;
		return;
	}
	observed[what]++;
	observed_ns[what] = ns;
}

static const struct lk_lock_env env = {
	.ctx = NULL,
	.observe = f_observe,
	.now_ns = f_now,
	.timer_new = f_timer_new,
	.timer_arm = f_timer_arm,
	.timer_disarm = f_timer_disarm,
	.timer_free = f_timer_free,
	.emit = f_emit,
	.settled = f_settled,
	.backend_error = f_backend_error,
};

/* Assert that the lines sent since the last check are exactly `want` (NULL-terminated), in
 * order, and mark them checked. */
static void expect_lines_(int at_line, const char *const *want)
{
	int n = 0;

	for (; want[n]; n++) {
		ck_assert_msg(seen_events + n < n_events, "line %d: event %d: want \"%s\", none was sent",
		              at_line, n, want[n]);
		ck_assert_msg(strcmp(events[seen_events + n].line, want[n]) == 0,
		              "line %d: event %d: want \"%s\", got \"%s\"", at_line, n, want[n],
		              events[seen_events + n].line);
	}
	ck_assert_msg(seen_events + n == n_events, "line %d: unexpected extra event \"%s\"", at_line,
	              events[seen_events + n].line);
	seen_events = n_events;
}

#define EXPECT_LINES(...) expect_lines_(__LINE__, (const char *const[]){ __VA_ARGS__, NULL })
#define EXPECT_NO_LINES() expect_lines_(__LINE__, (const char *const[]){ NULL })

/* ---- fake backend ------------------------------------------------------------------------------ */

enum rkind { R_ACQUIRE, R_RENEW, R_RELEASE, R__COUNT };

struct freq {
	enum rkind kind;
	lk_backend_reply_fn *cb;
	void *arg;
	uint64_t token;          /* renew, release */
	int64_t ttl_ms;          /* acquire, renew */
	int64_t sent;            /* fake time of the call */
	bool done;
};

struct lk_backend_key {
	char key[64];
	char identity[64];
	lk_backend_notify_fn *notify;
	void *arg;
	bool freed;
};

#define MAX_REQS 256
static struct freq reqs[MAX_REQS];
static int n_reqs;
static int calls[R__COUNT];       /* every call, accepted or refused */
static int refuse[R__COUNT];      /* refuse this many of the next calls with -ENOTCONN */
static bool watching;
static int watch_calls;
static int64_t holdoff_until;     /* what fb_holdoff_until answers */
static int holdoff_calls;
static struct lk_backend_key fkey;
static int keys_made;

static struct lk_backend_key *fb_key_new(struct lk_backend *b, const char *key, const char *id,
                                         lk_backend_notify_fn *notify, void *arg)
{
	(void)b;
	ck_assert_int_eq(keys_made, 0);
	keys_made++;
	memset(&fkey, 0, sizeof(fkey));
	snprintf(fkey.key, sizeof(fkey.key), "%s", key);
	snprintf(fkey.identity, sizeof(fkey.identity), "%s", id);
	fkey.notify = notify;
	fkey.arg = arg;
	return &fkey;
}

static void fb_key_free(struct lk_backend_key *k)
{
	if (!k)
		return;
	ck_assert_ptr_eq(k, &fkey);
	ck_assert(!k->freed);
	k->freed = true;
}

static int fb_request(enum rkind kind, struct lk_backend_key *k, uint64_t token, int64_t ttl_ms,
                      lk_backend_reply_fn *cb, void *arg)
{
	ck_assert_ptr_eq(k, &fkey);
	ck_assert(!k->freed);
	calls[kind]++;
	if (refuse[kind] > 0) {
		refuse[kind]--;
		return -ENOTCONN;
	}
	ck_assert_int_lt(n_reqs, MAX_REQS);
	reqs[n_reqs++] = (struct freq){ .kind = kind, .cb = cb, .arg = arg, .token = token,
	                                .ttl_ms = ttl_ms, .sent = now };
	return 0;
}

static int fb_acquire(struct lk_backend_key *k, int64_t ttl_ms, lk_backend_reply_fn *cb, void *arg)
{
	return fb_request(R_ACQUIRE, k, 0, ttl_ms, cb, arg);
}

static int fb_renew(struct lk_backend_key *k, uint64_t token, int64_t ttl_ms,
                    lk_backend_reply_fn *cb, void *arg)
{
	return fb_request(R_RENEW, k, token, ttl_ms, cb, arg);
}

static int fb_release(struct lk_backend_key *k, uint64_t token, lk_backend_reply_fn *cb, void *arg)
{
	return fb_request(R_RELEASE, k, token, 0, cb, arg);
}

static void fb_watch(struct lk_backend_key *k, bool on)
{
	ck_assert_ptr_eq(k, &fkey);
	watching = on;
	watch_calls++;
}

static int64_t fb_holdoff_until(struct lk_backend_key *k, int64_t ttl_ms, char *why, size_t cap)
{
	ck_assert_ptr_eq(k, &fkey);
	ck_assert_int_eq(ttl_ms, cfg.ttl_ms);
	holdoff_calls++;
	snprintf(why, cap, "fake server restarted");
	return holdoff_until;
}

static bool fb_ready(const struct lk_backend *b)
{
	(void)b;
	return true;
}

static void fb_free(struct lk_backend *b)
{
	(void)b;
}

static const struct lk_backend_ops fake_ops = {
	.type = "fake",
	.key_new = fb_key_new,
	.key_free = fb_key_free,
	.acquire = fb_acquire,
	.renew = fb_renew,
	.release = fb_release,
	.watch = fb_watch,
	.holdoff_until = fb_holdoff_until,
	.ready = fb_ready,
	.free = fb_free,
};

static struct lk_backend fake_backend = { .ops = &fake_ops, .name = backend_name };

/* Deterministic stand-in for the jittered backoff of locks/backend.c: base << attempt, capped. */
int64_t lk_backoff_ms(unsigned attempt, int64_t base_ms, int64_t cap_ms)
{
	int64_t d = attempt >= 30 ? cap_ms : base_ms << attempt;

	return d < cap_ms ? d : cap_ms;
}

static int n_pending(enum rkind kind)
{
	int n = 0;

	for (int i = 0; i < n_reqs; i++)
		n += reqs[i].kind == kind && !reqs[i].done;
	return n;
}

/* The one request of this kind in flight; fails unless there is exactly one. */
static struct freq *pending_one_(int at_line, enum rkind kind)
{
	struct freq *q = NULL;

	ck_assert_msg(n_pending(kind) == 1, "line %d: want exactly one request of kind %d in flight, "
	              "have %d", at_line, (int)kind, n_pending(kind));
	for (int i = 0; i < n_reqs; i++)
		if (reqs[i].kind == kind && !reqs[i].done)
			q = &reqs[i];
	return q;
}
#define PENDING(kind) pending_one_(__LINE__, kind)

/* Requests of this kind ever accepted for this token (0: any). */
static int n_sent(enum rkind kind, uint64_t token)
{
	int n = 0;

	for (int i = 0; i < n_reqs; i++)
		n += reqs[i].kind == kind && (token == 0 || reqs[i].token == token);
	return n;
}

static void answer(struct freq *q, struct lk_reply r)
{
	ck_assert(!q->done);
	q->done = true;
	q->cb(q->arg, &r);
}

static struct lk_reply status(enum lk_reply_status st)
{
	return (struct lk_reply){
		.status = st,
		.err = st == LK_REPLY_ERROR || st == LK_REPLY_FATAL ? "fake failure" : NULL,
	};
}

static struct lk_reply holder_reply(enum lk_reply_status st, const char *holder)
{
	return (struct lk_reply){ .status = st, .holder = holder };
}

/* OK for an acquire (token is the new tenure's) or a renew/release, proving validity from the
 * moment the request was sent, for the ttl it asked for. */
static void answer_ok(struct freq *q, uint64_t token)
{
	answer(q, (struct lk_reply){ .status = LK_REPLY_OK, .token = token, .sent_ns = q->sent,
	                             .ttl_ms = q->ttl_ms ? q->ttl_ms : cfg.ttl_ms });
}

/* Fire the key's notify hook, as a release notice or a watch would. */
static void notice(void)
{
	ck_assert_ptr_nonnull(fkey.notify);
	fkey.notify(fkey.arg, LK_NOTICE_MAYBE_FREE);
}

/* Fire it as the backend does after every new connection. */
static void reconnected(void)
{
	ck_assert_ptr_nonnull(fkey.notify);
	fkey.notify(fkey.arg, LK_NOTICE_RECONNECTED);
}

/* ---- fixture ---------------------------------------------------------------------------------- */

static FILE *log_sink;

static void new_lock(void)
{
	L = lk_lock_new(&cfg, &fake_backend, identity, &env);
	ck_assert_ptr_nonnull(L);
}

static void setup(void)
{
	/* The lock logs warnings on purpose in many tests; keep the output readable. Set
	 * LK_TEST_LOG=1 to see them. */
	if (!getenv("LK_TEST_LOG")) {
		log_sink = fopen("/dev/null", "w");
		lk_log_setup(LK_LOG_TEXT, LK_DEBUG, log_sink);
	}
	cfg = (struct lk_config_lock){
		.name = lock_name,
		.backend = 0,
		.key = lock_key,
		.ttl_ms = 10000,
		.renew_interval_ms = 3000,
		.renew_deadline_ms = 6000,
		.retry_interval_ms = 1000,
		.stepdown_timeout_ms = 5000,
		.release_timeout_ms = 3000,
		.campaign = LK_CAMPAIGN_WHEN_APP_CONNECTED,
	};
	memset(timers, 0, sizeof(timers));
	n_timers = 0;
	arm_seq = 0;
	now = T0;
	n_events = seen_events = 0;
	n_renewals = 0;
	last_until_ms = -1;
	settled_calls = 0;
	settled_at = -1;
	backend_errors = 0;
	memset(observed, 0, sizeof(observed));
	memset(observed_ns, 0, sizeof(observed_ns));
	memset(announced, 0, sizeof(announced));
	n_reqs = 0;
	memset(calls, 0, sizeof(calls));
	memset(refuse, 0, sizeof(refuse));
	watching = false;
	watch_calls = 0;
	holdoff_until = 0;
	holdoff_calls = 0;
	keys_made = 0;
	new_lock();
}

static void teardown(void)
{
	if (L) {
		L = lk_lock_free(L);
		ck_assert_ptr_null(L);
		ck_assert(fkey.freed);
		for (int i = 0; i < n_timers; i++)
			ck_assert_msg(timers[i].freed, "timer %d not freed", i);
	}
	if (log_sink)
		fclose(log_sink);
	log_sink = NULL;
	lk_log_setup(LK_LOG_TEXT, LK_INFO, NULL);
}

/* Campaign with C1 and win tenure `token` with a reply at the moment of sending, so that the
 * LEADER line carries the full ttl. Returns the time the acquire was sent. */
static int64_t lead(uint64_t token)
{
	struct freq *q;
	char want[128];

	ck_assert_int_eq(lk_lock_campaign(L, C1), 0);
	q = PENDING(R_ACQUIRE);
	answer_ok(q, token);
	snprintf(want, sizeof(want), "LEADER sched token=%" PRIu64 " ttl_ms=10000\n", token);
	EXPECT_LINES(want);
	ck_assert_int_eq(lk_lock_state(L), LK_LOCK_LEADER);
	return q->sent;
}

/* Lead tenure 7 with C1, then drain: STEPDOWN goes out. Returns when the acquire was sent. */
static int64_t lead_and_drain(void)
{
	int64_t t = lead(7);

	lk_lock_drain(L);
	EXPECT_LINES("STEPDOWN sched token=7 deadline_ms=5000\n");
	ck_assert_int_eq(lk_lock_state(L), LK_LOCK_STEPPING_DOWN);
	return t;
}

/* ---- idle and campaigning ------------------------------------------------------------------- */

START_TEST(new_lock_registers_its_key_and_starts_idle)
{
	ck_assert_str_eq(fkey.key, "app/sched");
	ck_assert_str_eq(fkey.identity, "me");
	ck_assert_int_eq(n_timers, LK_TIMER__COUNT);
	ck_assert_int_eq(lk_lock_state(L), LK_LOCK_IDLE);
	ck_assert_str_eq(lk_lock_name(L), "sched");
	ck_assert_str_eq(lk_lock_backend_name(L), "main");
	ck_assert_str_eq(lk_lock_holder(L), "-");
	ck_assert_uint_eq(lk_lock_token(L), 0);
	ck_assert(!lk_lock_is_leader(L));
	ck_assert_int_eq(lk_lock_ttl_ms(L), 0);
	ck_assert_uint_eq(lk_lock_campaigners(L), 0);
	ck_assert_int_eq(lk_lock_stats(L)->last_release_ms, -1);
	ck_assert_int_eq(lk_lock_stats(L)->last_stepdown_ms, -1);
}
END_TEST

START_TEST(idle_lock_does_not_acquire_without_a_campaign_client)
{
	lk_lock_start(L);
	notice();
	advance(60000);
	ck_assert_int_eq(calls[R_ACQUIRE], 0);
	ck_assert_int_eq(lk_lock_state(L), LK_LOCK_IDLE);
	ck_assert(!watching);
	EXPECT_NO_LINES();
}
END_TEST

START_TEST(campaign_always_acquires_at_start_without_clients)
{
	L = lk_lock_free(L);
	keys_made = 0;
	cfg.campaign = LK_CAMPAIGN_ALWAYS;
	new_lock();
	ck_assert_int_eq(calls[R_ACQUIRE], 0); /* nothing before start */
	lk_lock_start(L);
	ck_assert_int_eq(PENDING(R_ACQUIRE)->ttl_ms, 10000);
	ck_assert_int_eq(lk_lock_state(L), LK_LOCK_FOLLOWER);
	ck_assert(watching);
}
END_TEST

START_TEST(campaign_always_keeps_leading_when_the_last_client_leaves)
{
	L = lk_lock_free(L);
	keys_made = 0;
	cfg.campaign = LK_CAMPAIGN_ALWAYS;
	new_lock();
	lk_lock_start(L);
	lead(7);
	lk_lock_leave(L, C1);
	ck_assert_int_eq(lk_lock_state(L), LK_LOCK_LEADER);
	ck_assert_int_eq(calls[R_RELEASE], 0);
	advance(3000);
	ck_assert_uint_eq(PENDING(R_RENEW)->token, 7);
}
END_TEST

START_TEST(campaign_sends_one_acquire_and_watches_the_key)
{
	ck_assert_int_eq(lk_lock_campaign(L, C1), 0);
	ck_assert_int_eq(lk_lock_state(L), LK_LOCK_FOLLOWER);
	ck_assert(watching);
	ck_assert_int_eq(PENDING(R_ACQUIRE)->ttl_ms, 10000);
	/* The same client again, and a second client: still one client each, one attempt. */
	ck_assert_int_eq(lk_lock_campaign(L, C1), 0);
	ck_assert_int_eq(lk_lock_campaign(L, C2), 0);
	ck_assert_uint_eq(lk_lock_campaigners(L), 2);
	ck_assert_int_eq(calls[R_ACQUIRE], 1);
	/* Nobody is known to hold it: no FOLLOWER line yet (the server sends the current event). */
	EXPECT_NO_LINES();
}
END_TEST

START_TEST(campaigners_are_capped)
{
	for (int i = 0; i < LK_LOCK_MAX_CAMPAIGNERS; i++)
		ck_assert_int_eq(lk_lock_campaign(L, &client_slots[i]), 0);
	ck_assert_int_eq(lk_lock_campaign(L, &client_slots[LK_LOCK_MAX_CAMPAIGNERS]), -ENOSPC);
	ck_assert_uint_eq(lk_lock_campaigners(L), LK_LOCK_MAX_CAMPAIGNERS);
	/* Leaving makes room again; unknown clients leaving change nothing. */
	lk_lock_leave(L, &client_slots[LK_LOCK_MAX_CAMPAIGNERS + 1]);
	ck_assert_uint_eq(lk_lock_campaigners(L), LK_LOCK_MAX_CAMPAIGNERS);
	lk_lock_leave(L, &client_slots[3]);
	ck_assert_int_eq(lk_lock_campaign(L, &client_slots[LK_LOCK_MAX_CAMPAIGNERS]), 0);
	ck_assert_int_eq(calls[R_ACQUIRE], 1);
}
END_TEST

/* ---- acquiring ---------------------------------------------------------------------------------- */

START_TEST(acquire_ok_announces_leader_with_token_and_ttl)
{
	lead(7);
	ck_assert(lk_lock_is_leader(L));
	ck_assert_uint_eq(lk_lock_token(L), 7);
	ck_assert_str_eq(lk_lock_holder(L), "me");
	ck_assert_int_eq(lk_lock_ttl_ms(L), 10000);
	ck_assert(!watching);
	ck_assert_uint_eq(lk_lock_stats(L)->acquisitions, 1);
	ck_assert_int_eq(backend_errors, 0);
}
END_TEST

START_TEST(leader_ttl_counts_from_when_the_acquire_was_sent)
{
	struct freq *q;

	ck_assert_int_eq(lk_lock_campaign(L, C1), 0);
	q = PENDING(R_ACQUIRE);
	advance(2000);
	answer_ok(q, 7);
	/* I1: 2s of the 10s went by in flight. */
	EXPECT_LINES("LEADER sched token=7 ttl_ms=8000\n");
	ck_assert_int_eq(lk_lock_ttl_ms(L), 8000);
	advance(500);
	ck_assert_int_eq(lk_lock_ttl_ms(L), 7500);
	/* The renewal, too, is due renew_interval after sending, not after the reply. */
	advance(499);
	ck_assert_int_eq(calls[R_RENEW], 0);
	advance(1);
	ck_assert_int_eq(PENDING(R_RENEW)->sent, q->sent + 3000 * MS);
}
END_TEST

/* I8: the apps' own deadline is the proving request's send time + renew_deadline. */
START_TEST(leader_carries_the_deadline_counted_from_the_acquire_send)
{
	struct freq *q;

	ck_assert_int_eq(lk_lock_campaign(L, C1), 0);
	q = PENDING(R_ACQUIRE);
	advance(2000);
	answer_ok(q, 7);
	EXPECT_LINES("LEADER sched token=7 ttl_ms=8000\n");
	ck_assert_int_eq(last_until_ms, (q->sent + 6000 * MS) / MS);
	ck_assert_int_eq(lk_lock_until_mono_ms(L), last_until_ms);
}
END_TEST

START_TEST(each_proven_renewal_sends_renewed_with_a_later_deadline)
{
	int64_t sent, first;
	struct freq *q;

	lead(7);
	first = last_until_ms;
	advance(3000);
	q = PENDING(R_RENEW);
	sent = q->sent;
	advance(400);
	ck_assert_int_eq(n_renewals, 0);
	answer_ok(q, 7);
	ck_assert_int_eq(n_renewals, 1);
	ck_assert_str_eq(renewals[0].line, "RENEWED sched token=7 ttl_ms=9600");
	ck_assert_int_eq(last_until_ms, (sent + 6000 * MS) / MS);
	ck_assert_int_gt(last_until_ms, first);
	/* Nothing else goes out with it. */
	EXPECT_NO_LINES();
	/* And again for the next one. */
	advance(2600);
	answer_ok(PENDING(R_RENEW), 7);
	ck_assert_int_eq(n_renewals, 2);
	ck_assert_int_eq(last_until_ms, (sent + 9000 * MS) / MS);
}
END_TEST

START_TEST(renewals_while_stepping_down_send_renewed)
{
	lead(7);
	ck_assert_int_eq(lk_lock_campaign(L, C2), 0);
	lk_lock_drain(L);
	EXPECT_LINES("STEPDOWN sched token=7 deadline_ms=5000\n");
	advance(3000);
	answer_ok(PENDING(R_RENEW), 7);
	ck_assert_int_eq(n_renewals, 1);
	ck_assert_str_eq(renewals[0].line, "RENEWED sched token=7 ttl_ms=10000");
}
END_TEST

START_TEST(failed_or_late_renewals_send_no_renewed)
{
	struct freq *q;

	lead(7);
	advance(3000);
	answer(PENDING(R_RENEW), (struct lk_reply){ .status = LK_REPLY_ERROR, .err = "boom" });
	ck_assert_int_eq(n_renewals, 0);
	/* The retry is answered only after the deadline: it proves nothing, so no RENEWED. */
	advance(60);
	q = PENDING(R_RENEW);
	advance(5999 - 3060);
	advance(1);
	EXPECT_LINES("LOST sched token=7 reason=renew_deadline\n");
	answer_ok(q, 7);
	ck_assert_int_eq(n_renewals, 0);
}
END_TEST

/* A loop that was busy past the deadline acts on it before it reports (I9). */
START_TEST(catch_up_acts_on_a_deadline_the_timer_has_not_fired_for)
{
	lead(7);
	/* Move the clock without running timers, as a frozen process would see it. */
	now += 7000 * MS;
	ck_assert(lk_lock_is_leader(L));
	lk_lock_catch_up(L);
	EXPECT_LINES("LOST sched token=7 reason=renew_deadline\n");
	ck_assert(!lk_lock_is_leader(L));
	ck_assert_int_eq(lk_lock_until_mono_ms(L), 0);
}
END_TEST

START_TEST(acquire_answered_just_before_the_renew_deadline_is_announced)
{
	struct freq *q;

	ck_assert_int_eq(lk_lock_campaign(L, C1), 0);
	q = PENDING(R_ACQUIRE);
	advance(5999);
	answer_ok(q, 7);
	EXPECT_LINES("LEADER sched token=7 ttl_ms=4001\n");
	/* The renewal is overdue already: it goes out at once. */
	advance(0);
	ck_assert_uint_eq(PENDING(R_RENEW)->token, 7);
	/* And the deadline is 1ms away. */
	advance(1);
	EXPECT_LINES("LOST sched token=7 reason=renew_deadline\n");
}
END_TEST

START_TEST(acquire_answered_after_the_renew_deadline_is_not_announced_and_is_given_back)
{
	struct freq *q;

	ck_assert_int_eq(lk_lock_campaign(L, C1), 0);
	q = PENDING(R_ACQUIRE);
	advance(6000);
	answer_ok(q, 7);
	/* I1: nothing proves the lease is still valid: never LEADER. */
	EXPECT_NO_LINES();
	ck_assert(!lk_lock_is_leader(L));
	ck_assert_int_eq(lk_lock_ttl_ms(L), 0);
	ck_assert_uint_eq(lk_lock_stats(L)->acquisitions, 0);
	ck_assert_int_eq(lk_lock_state(L), LK_LOCK_RELEASING);
	q = PENDING(R_RELEASE);
	ck_assert_uint_eq(q->token, 7);
	ck_assert_int_eq(calls[R_RENEW], 0);
	answer_ok(q, 0);
	/* Still campaigning: back to following, and trying again. */
	ck_assert_int_eq(lk_lock_state(L), LK_LOCK_FOLLOWER);
	ck_assert(watching);
	advance(cfg.retry_interval_ms);
	ck_assert_int_eq(n_pending(R_ACQUIRE), 1);
	EXPECT_NO_LINES();
}
END_TEST

START_TEST(held_reports_the_holder_once_and_retries_after_retry_interval)
{
	struct freq *q;

	ck_assert_int_eq(lk_lock_campaign(L, C1), 0);
	answer(PENDING(R_ACQUIRE), holder_reply(LK_REPLY_HELD, "other"));
	EXPECT_LINES("FOLLOWER sched holder=other\n");
	ck_assert_str_eq(lk_lock_holder(L), "other");
	ck_assert_int_eq(lk_lock_state(L), LK_LOCK_FOLLOWER);
	ck_assert_int_eq(backend_errors, 0);

	advance(999);
	ck_assert_int_eq(n_pending(R_ACQUIRE), 0);
	advance(1);
	q = PENDING(R_ACQUIRE);
	ck_assert_int_eq(q->sent, T0 + 1000 * MS);

	/* The same holder again is not news. */
	answer(q, holder_reply(LK_REPLY_HELD, "other"));
	EXPECT_NO_LINES();
	advance(1000);
	answer(PENDING(R_ACQUIRE), holder_reply(LK_REPLY_HELD, "third"));
	EXPECT_LINES("FOLLOWER sched holder=third\n");
	advance(1000);
	answer(PENDING(R_ACQUIRE), holder_reply(LK_REPLY_HELD, NULL));
	EXPECT_LINES("FOLLOWER sched holder=-\n");
	ck_assert_str_eq(lk_lock_holder(L), "-");
}
END_TEST

/* A backend that knows when the holder's key runs out (Redis's PTTL) moves the next try to
 * just after that, when it comes before retry_interval: a crashed holder's successor leads
 * within moments of the expiry. A later expiry changes nothing. */
START_TEST(held_with_an_expiry_retries_just_after_it)
{
	struct freq *q;

	ck_assert_int_eq(lk_lock_campaign(L, C1), 0);
	answer(PENDING(R_ACQUIRE), (struct lk_reply){ .status = LK_REPLY_HELD, .holder = "other",
	                                              .free_in_ms = 300 });
	EXPECT_LINES("FOLLOWER sched holder=other\n");
	advance(304);
	ck_assert_int_eq(n_pending(R_ACQUIRE), 0);
	advance(1);
	q = PENDING(R_ACQUIRE);
	ck_assert_int_eq(q->sent, T0 + 305 * MS);
	answer(q, (struct lk_reply){ .status = LK_REPLY_HELD, .holder = "other",
	                             .free_in_ms = 5000 });
	advance(999);
	ck_assert_int_eq(n_pending(R_ACQUIRE), 0);
	advance(1);
	ck_assert_int_eq(n_pending(R_ACQUIRE), 1);
}
END_TEST

START_TEST(holder_identities_are_sanitised_for_the_wire)
{
	ck_assert_int_eq(lk_lock_campaign(L, C1), 0);
	answer(PENDING(R_ACQUIRE), holder_reply(LK_REPLY_HELD, "pod a\n\x01z"));
	EXPECT_LINES("FOLLOWER sched holder=pod?a??z\n");
}
END_TEST

START_TEST(acquire_errors_count_and_retry_after_retry_interval)
{
	ck_assert_int_eq(lk_lock_campaign(L, C1), 0);
	answer(PENDING(R_ACQUIRE), status(LK_REPLY_ERROR));
	ck_assert_int_eq(backend_errors, 1);
	ck_assert_int_eq(lk_lock_state(L), LK_LOCK_FOLLOWER);
	advance(999);
	ck_assert_int_eq(calls[R_ACQUIRE], 1);
	advance(1);
	answer(PENDING(R_ACQUIRE), status(LK_REPLY_FATAL));
	ck_assert_int_eq(backend_errors, 2);
	advance(1000);
	ck_assert_int_eq(n_pending(R_ACQUIRE), 1);
	EXPECT_NO_LINES();
}
END_TEST

START_TEST(acquire_refused_while_disconnected_retries_on_timer_or_notice)
{
	refuse[R_ACQUIRE] = 2;
	ck_assert_int_eq(lk_lock_campaign(L, C1), 0);
	ck_assert_int_eq(calls[R_ACQUIRE], 1);
	ck_assert_int_eq(n_pending(R_ACQUIRE), 0);
	/* Refusals while disconnected are the backend's outage, which the backend counts. */
	ck_assert_int_eq(backend_errors, 0);
	advance(1000);
	ck_assert_int_eq(calls[R_ACQUIRE], 2);
	ck_assert_int_eq(backend_errors, 0);
	/* The backend reconnected and says so: try at once. */
	advance(300);
	notice();
	ck_assert_int_eq(calls[R_ACQUIRE], 3);
	ck_assert_int_eq(n_pending(R_ACQUIRE), 1);
	/* The retry timer was cancelled by that attempt. */
	advance(5000);
	ck_assert_int_eq(calls[R_ACQUIRE], 3);
}
END_TEST

START_TEST(release_notice_triggers_an_immediate_attempt)
{
	ck_assert_int_eq(lk_lock_campaign(L, C1), 0);
	answer(PENDING(R_ACQUIRE), holder_reply(LK_REPLY_HELD, "other"));
	advance(200);
	notice();
	ck_assert_int_eq(PENDING(R_ACQUIRE)->sent, T0 + 200 * MS);
	/* One attempt at a time: neither the old retry timer nor another notice adds one. */
	notice();
	advance(5000);
	ck_assert_int_eq(calls[R_ACQUIRE], 2);
	answer_ok(PENDING(R_ACQUIRE), 8);
	EXPECT_LINES("FOLLOWER sched holder=other\n", "LEADER sched token=8 ttl_ms=5000\n");
}
END_TEST

START_TEST(notice_during_an_attempt_that_returns_held_retries_at_once)
{
	struct freq *q;

	ck_assert_int_eq(lk_lock_campaign(L, C1), 0);
	q = PENDING(R_ACQUIRE);
	advance(100);
	notice();
	ck_assert_int_eq(calls[R_ACQUIRE], 1);
	/* The HELD answer may predate the release the notice announced. */
	answer(q, holder_reply(LK_REPLY_HELD, "other"));
	q = PENDING(R_ACQUIRE);
	ck_assert_int_eq(q->sent, T0 + 100 * MS);
	/* The notice is used up: a second HELD waits for the timer. */
	answer(q, holder_reply(LK_REPLY_HELD, "other"));
	ck_assert_int_eq(n_pending(R_ACQUIRE), 0);
	advance(1000);
	ck_assert_int_eq(n_pending(R_ACQUIRE), 1);
}
END_TEST

START_TEST(notices_while_idle_or_leading_are_ignored)
{
	notice();
	ck_assert_int_eq(calls[R_ACQUIRE], 0);
	lead(7);
	notice();
	ck_assert_int_eq(calls[R_ACQUIRE], 1);
	ck_assert_int_eq(lk_lock_state(L), LK_LOCK_LEADER);
	EXPECT_NO_LINES();
}
END_TEST

/* ---- backends that restarted (I10) -------------------------------------------------------------- */

START_TEST(no_acquire_is_sent_while_the_backend_holds_off)
{
	const char *why = NULL;

	holdoff_until = T0 + 4000 * MS;
	ck_assert_int_eq(lk_lock_campaign(L, C1), 0);
	ck_assert_int_eq(calls[R_ACQUIRE], 0);
	ck_assert_int_eq(lk_lock_holdoff_ms(L, &why), 4000);
	ck_assert_str_eq(why, "fake server restarted");
	/* Neither notices nor the usual retry interval start one early. */
	notice();
	reconnected();
	advance(3999);
	ck_assert_int_eq(calls[R_ACQUIRE], 0);
	ck_assert_int_eq(lk_lock_holdoff_ms(L, NULL), 1);
	advance(1);
	ck_assert_int_eq(PENDING(R_ACQUIRE)->sent, T0 + 4000 * MS);
	ck_assert_int_eq(lk_lock_holdoff_ms(L, NULL), 0);
	answer_ok(PENDING(R_ACQUIRE), 8);
	EXPECT_LINES("LEADER sched token=8 ttl_ms=10000\n");
}
END_TEST

START_TEST(a_hold_off_that_grows_while_waiting_is_waited_out)
{
	holdoff_until = T0 + 1000 * MS;
	ck_assert_int_eq(lk_lock_campaign(L, C1), 0);
	advance(500);
	/* Another restart seen meanwhile: the backend moves the end. */
	holdoff_until = T0 + 3000 * MS;
	reconnected();
	advance(2499);
	ck_assert_int_eq(calls[R_ACQUIRE], 0);
	advance(1);
	ck_assert_int_eq(n_pending(R_ACQUIRE), 1);
}
END_TEST

START_TEST(after_a_loss_the_next_tenure_waits_for_the_hold_off)
{
	struct freq *q;

	lead(7);
	advance(1000);
	/* The server restarted empty: the leader re-proves at once on the new connection. */
	holdoff_until = now + 10000 * MS;
	reconnected();
	q = PENDING(R_RENEW);
	ck_assert_int_eq(q->sent, T0 + 1000 * MS);
	ck_assert_uint_eq(q->token, 7);
	answer(q, status(LK_REPLY_GONE));
	EXPECT_LINES("LOST sched token=7 reason=expired\n");
	advance(9999);
	ck_assert_int_eq(calls[R_ACQUIRE], 1);
	advance(1);
	ck_assert_int_eq(calls[R_ACQUIRE], 2);
	ck_assert_int_eq(PENDING(R_ACQUIRE)->sent, T0 + 11000 * MS);
}
END_TEST

START_TEST(a_leader_reproves_on_every_reconnect_and_keeps_a_tenure_that_is_still_there)
{
	lead(7);
	advance(500);
	reconnected();
	answer_ok(PENDING(R_RENEW), 7);
	ck_assert_int_eq(n_renewals, 1);
	EXPECT_NO_LINES();
	/* A renewal already in flight is the proof: no second one. */
	advance(3000);
	ck_assert_int_eq(n_pending(R_RENEW), 1);
	reconnected();
	ck_assert_int_eq(n_pending(R_RENEW), 1);
	ck_assert_int_eq(lk_lock_state(L), LK_LOCK_LEADER);
	/* The hold-off is for new tenures only. */
	ck_assert_int_eq(holdoff_calls, 1);
}
END_TEST

START_TEST(a_reconnect_wakes_a_follower_like_a_notice)
{
	ck_assert_int_eq(lk_lock_campaign(L, C1), 0);
	answer(PENDING(R_ACQUIRE), holder_reply(LK_REPLY_HELD, "other"));
	advance(300);
	reconnected();
	ck_assert_int_eq(PENDING(R_ACQUIRE)->sent, T0 + 300 * MS);
	lk_lock_leave(L, C1);
	advance(100);
	reconnected();
	ck_assert_int_eq(calls[R_ACQUIRE], 2);
}
END_TEST

/* ---- leading and renewing ----------------------------------------------------------------------- */

START_TEST(renewal_is_sent_renew_interval_after_the_acquire_was_sent)
{
	struct freq *q;

	ck_assert_int_eq(lk_lock_campaign(L, C1), 0);
	q = PENDING(R_ACQUIRE);
	advance(500);
	answer_ok(q, 7);
	advance(2499);
	ck_assert_int_eq(calls[R_RENEW], 0);
	advance(1);
	q = PENDING(R_RENEW);
	ck_assert_uint_eq(q->token, 7);
	ck_assert_int_eq(q->ttl_ms, 10000);
	ck_assert_int_eq(q->sent, T0 + 3000 * MS);
}
END_TEST

START_TEST(renew_ok_extends_the_deadline_from_when_it_was_sent)
{
	struct freq *q;

	lead(7);
	advance(3000);
	q = PENDING(R_RENEW);
	advance(100);
	answer_ok(q, 0);
	EXPECT_NO_LINES();
	ck_assert_int_eq(lk_lock_ttl_ms(L), 9900);
	/* The next renewal is due 3s after the last was sent, and goes unanswered... */
	advance(2899);
	ck_assert_int_eq(calls[R_RENEW], 1);
	advance(1);
	ck_assert_int_eq(PENDING(R_RENEW)->sent, T0 + 6000 * MS);
	/* ...so the tenure ends 6s after the last successful renewal was sent, not at the first
	 * deadline (T0+6s) and not 6s after its reply. */
	advance(2999);
	EXPECT_NO_LINES();
	ck_assert_int_eq(lk_lock_state(L), LK_LOCK_LEADER);
	advance(1);
	EXPECT_LINES("LOST sched token=7 reason=renew_deadline\n");
	ck_assert_int_eq(events[n_events - 1].at, T0 + 9000 * MS);
}
END_TEST

START_TEST(renew_errors_retry_with_backoff_and_lose_at_the_renew_deadline)
{
	static const int64_t want_sent_ms[] = { 3000, 3050, 3150, 3350, 3750, 4550 };
	int n = 0;

	lead(7);
	/* Answer every renewal with an error as soon as it is sent, until the tenure ends. */
	while (n_events == seen_events && now < T0 + 20000 * MS) {
		advance(1);
		if (n_pending(R_RENEW))
			answer(PENDING(R_RENEW), status(LK_REPLY_ERROR));
	}
	EXPECT_LINES("LOST sched token=7 reason=renew_deadline\n");
	/* I4: at sent + renew_deadline of the last success (the acquire), before the ttl. */
	ck_assert_int_eq(events[n_events - 1].at, T0 + 6000 * MS);
	for (int i = 0; i < n_reqs; i++) {
		if (reqs[i].kind != R_RENEW)
			continue;
		ck_assert_int_lt(n, 6);
		ck_assert_uint_eq(reqs[i].token, 7);
		ck_assert_int_eq(reqs[i].sent, T0 + want_sent_ms[n] * MS);
		n++;
	}
	ck_assert_int_eq(n, 6);
	ck_assert_int_eq(backend_errors, 6);
	ck_assert(!lk_lock_is_leader(L));
	ck_assert_int_eq(lk_lock_state(L), LK_LOCK_FOLLOWER);
	ck_assert(watching);
	ck_assert_uint_eq(lk_lock_stats(L)->lost[LK_LOST_RENEW_DEADLINE], 1);
	/* No more renewals; the next attempt is an acquire after retry_interval. */
	advance(999);
	ck_assert_int_eq(calls[R_RENEW], 6);
	ck_assert_int_eq(calls[R_ACQUIRE], 1);
	advance(1);
	ck_assert_int_eq(n_pending(R_ACQUIRE), 1);
	advance(20000);
	ck_assert_int_eq(calls[R_RENEW], 6);
}
END_TEST

START_TEST(renew_refused_while_disconnected_retries_with_backoff)
{
	lead(7);
	refuse[R_RENEW] = 2;
	advance(3000);
	ck_assert_int_eq(calls[R_RENEW], 1);
	ck_assert_int_eq(backend_errors, 0);
	advance(50);
	ck_assert_int_eq(calls[R_RENEW], 2);
	advance(99);
	ck_assert_int_eq(calls[R_RENEW], 2);
	advance(1);
	answer_ok(PENDING(R_RENEW), 0);
	ck_assert_int_eq(lk_lock_state(L), LK_LOCK_LEADER);
	/* A success resets the backoff for the next trouble. */
	refuse[R_RENEW] = 1;
	advance(3000);
	ck_assert_int_eq(calls[R_RENEW], 4);
	advance(50);
	ck_assert_int_eq(n_pending(R_RENEW), 1);
	EXPECT_NO_LINES();
}
END_TEST

START_TEST(renewal_granting_a_shorter_ttl_shrinks_the_deadline)
{
	struct freq *q;

	lead(7);
	advance(3000);
	q = PENDING(R_RENEW);
	advance(2500);
	/* 4s granted from T0+3s: the deadline keeps its 6/10 share, 2.4s: T0+5.4s, passed. */
	answer(q, (struct lk_reply){ .status = LK_REPLY_OK, .sent_ns = q->sent, .ttl_ms = 4000 });
	EXPECT_LINES("LOST sched token=7 reason=renew_deadline\n");
	ck_assert(!lk_lock_is_leader(L));
}
END_TEST

START_TEST(renew_taken_is_lost_taken_and_follows_the_new_holder)
{
	lead(7);
	advance(3000);
	answer(PENDING(R_RENEW), holder_reply(LK_REPLY_TAKEN, "other"));
	EXPECT_LINES("LOST sched token=7 reason=taken\n");
	ck_assert_int_eq(lk_lock_state(L), LK_LOCK_FOLLOWER);
	ck_assert_str_eq(lk_lock_holder(L), "other");
	ck_assert(watching);
	ck_assert_uint_eq(lk_lock_stats(L)->lost[LK_LOST_TAKEN], 1);
	/* No hammering: the next attempt waits for the timer. */
	ck_assert_int_eq(n_pending(R_ACQUIRE), 0);
	advance(1000);
	/* After a LOST, the FOLLOWER line goes out even for the holder already known. */
	answer(PENDING(R_ACQUIRE), holder_reply(LK_REPLY_HELD, "other"));
	EXPECT_LINES("FOLLOWER sched holder=other\n");
	/* No renewals for the lost tenure. */
	advance(20000);
	ck_assert_int_eq(calls[R_RENEW], 1);
}
END_TEST

START_TEST(renew_gone_is_lost_expired)
{
	lead(7);
	advance(3000);
	answer(PENDING(R_RENEW), status(LK_REPLY_GONE));
	EXPECT_LINES("LOST sched token=7 reason=expired\n");
	ck_assert_int_eq(lk_lock_state(L), LK_LOCK_FOLLOWER);
	ck_assert_uint_eq(lk_lock_stats(L)->lost[LK_LOST_EXPIRED], 1);
	ck_assert_int_eq(backend_errors, 0);
}
END_TEST

START_TEST(renew_fatal_is_lost_backend_error)
{
	lead(7);
	advance(3000);
	answer(PENDING(R_RENEW), status(LK_REPLY_FATAL));
	EXPECT_LINES("LOST sched token=7 reason=backend_error\n");
	ck_assert_int_eq(lk_lock_state(L), LK_LOCK_FOLLOWER);
	ck_assert_uint_eq(lk_lock_stats(L)->lost[LK_LOST_BACKEND_ERROR], 1);
	ck_assert_int_eq(backend_errors, 1);
}
END_TEST

START_TEST(renew_reply_for_a_tenure_that_already_ended_is_ignored)
{
	struct freq *old;

	lead(7);
	advance(3000);
	old = PENDING(R_RENEW);
	advance(3000);
	EXPECT_LINES("LOST sched token=7 reason=renew_deadline\n");
	/* A success that comes after the deadline proves nothing. */
	answer_ok(old, 0);
	EXPECT_NO_LINES();
	ck_assert_int_eq(lk_lock_state(L), LK_LOCK_FOLLOWER);
	ck_assert(!lk_lock_is_leader(L));
	advance(1000);
	ck_assert_int_eq(calls[R_RENEW], 1);
	ck_assert_int_eq(n_pending(R_ACQUIRE), 1);
}
END_TEST

START_TEST(stale_renew_reply_does_not_end_the_next_tenure)
{
	struct freq *old;

	lead(7);
	advance(3000);
	old = PENDING(R_RENEW);
	advance(3000);
	advance(1000);
	answer_ok(PENDING(R_ACQUIRE), 8);
	EXPECT_LINES("LOST sched token=7 reason=renew_deadline\n", "LEADER sched token=8 ttl_ms=10000\n");
	/* The old tenure's key was taken meanwhile: that says nothing about tenure 8. */
	answer(old, holder_reply(LK_REPLY_TAKEN, "other"));
	EXPECT_NO_LINES();
	ck_assert_int_eq(lk_lock_state(L), LK_LOCK_LEADER);
	ck_assert_uint_eq(lk_lock_token(L), 8);
	advance(3000);
	ck_assert_uint_eq(PENDING(R_RENEW)->token, 8);
}
END_TEST

START_TEST(next_tenure_after_lost_gets_a_new_token_and_renews)
{
	struct freq *old, *q;

	lead(7);
	advance(3000);
	old = PENDING(R_RENEW);                 /* never answered in time */
	advance(3000);                          /* T0+6s: LOST */
	advance(1000);                          /* T0+7s: acquire */
	answer_ok(PENDING(R_ACQUIRE), 8);
	EXPECT_LINES("LOST sched token=7 reason=renew_deadline\n", "LEADER sched token=8 ttl_ms=10000\n");
	ck_assert_uint_eq(lk_lock_stats(L)->acquisitions, 2);
	/* T0+10s: tenure 8's renewal is due while tenure 7's is still out. Whether it goes out now
	 * or as soon as the old one returns, it must go out. */
	advance(3000);
	advance(100);
	answer_ok(old, 0);
	EXPECT_NO_LINES();
	q = NULL;
	for (int i = 0; i < n_reqs; i++)
		if (reqs[i].kind == R_RENEW && reqs[i].token == 8)
			q = &reqs[i];
	ck_assert_msg(q != NULL, "tenure 8 was never renewed");
	ck_assert_int_eq(n_pending(R_RENEW), 1);
	answer_ok(q, 0);
	/* Renewed: no LOST at tenure 8's first deadline (T0+13s), renewals keep coming. */
	advance(3500);
	EXPECT_NO_LINES();
	ck_assert_int_eq(lk_lock_state(L), LK_LOCK_LEADER);
	ck_assert_int_eq(n_sent(R_RENEW, 8), 2);
}
END_TEST

START_TEST(next_tenure_renews_on_time_when_the_old_renewal_returned_first)
{
	struct freq *old;

	lead(7);
	advance(3000);
	old = PENDING(R_RENEW);
	advance(3000);
	answer(old, status(LK_REPLY_ERROR));
	advance(1000);
	answer_ok(PENDING(R_ACQUIRE), 8);
	advance(3000);
	ck_assert_uint_eq(PENDING(R_RENEW)->token, 8);
	ck_assert_int_eq(PENDING(R_RENEW)->sent, T0 + 10000 * MS);
}
END_TEST

/* A renewal deferred behind an old tenure's must not be sent once its own tenure is over. */
START_TEST(deferred_renewal_is_dropped_when_its_tenure_is_lost_first)
{
	struct freq *old;

	lead(7);
	advance(3000);
	old = PENDING(R_RENEW);
	advance(4000);                          /* LOST 7 at T0+6s, acquire at T0+7s */
	answer_ok(PENDING(R_ACQUIRE), 8);
	advance(6000);                          /* renewal of 8 due at T0+10s; LOST 8 at T0+13s */
	EXPECT_LINES("LOST sched token=7 reason=renew_deadline\n", "LEADER sched token=8 ttl_ms=10000\n",
	             "LOST sched token=8 reason=renew_deadline\n");
	int before = n_sent(R_RENEW, 8);
	answer_ok(old, 0);
	/* Tenure 8 is over and its app was told so: renewing its key now would keep others out. */
	ck_assert_int_eq(n_sent(R_RENEW, 8), before);
	ck_assert_int_eq(lk_lock_state(L), LK_LOCK_FOLLOWER);
}
END_TEST

START_TEST(deferred_renewal_is_dropped_when_its_tenure_expires_in_stepdown)
{
	struct freq *old;

	lead(7);
	advance(3000);
	old = PENDING(R_RENEW);
	advance(4000);                          /* LOST 7 at T0+6s, acquire at T0+7s */
	answer_ok(PENDING(R_ACQUIRE), 8);
	advance(500);
	lk_lock_drain(L);                       /* stepdown times out at T0+12.5s */
	advance(5000);
	EXPECT_LINES("LOST sched token=7 reason=renew_deadline\n", "LEADER sched token=8 ttl_ms=10000\n",
	             "STEPDOWN sched token=8 deadline_ms=5000\n",
	             "LOST sched token=8 reason=expired\n",
	             "RELEASED sched token=8 outcome=expired\n");
	int before = n_sent(R_RENEW, 8);
	answer_ok(old, 0);
	/* I2: after a stepdown timeout the lease is left to expire: no renewal at all. */
	ck_assert_int_eq(n_sent(R_RENEW, 8), before);
	ck_assert_int_eq(n_sent(R_RELEASE, 0), 0);
}
END_TEST

/* ---- clients the agent cut off ---------------------------------------------------------------- */

START_TEST(evicted_leader_client_gives_the_tenure_up_without_release)
{
	lead(7);
	ck_assert_int_eq(lk_lock_campaign(L, C2), 0);
	advance(1000);
	lk_lock_evict(L, C1);
	/* C1 may still be working: no release; C2 must stop too, the lease is no longer renewed. */
	EXPECT_LINES("LOST sched token=7 reason=expired\n");
	ck_assert_int_eq(calls[R_RELEASE], 0);
	ck_assert_int_eq(lk_lock_state(L), LK_LOCK_FOLLOWER);
	advance(3000);
	ck_assert_int_eq(n_sent(R_RENEW, 7), 0);
	ck_assert_uint_eq(lk_lock_stats(L)->lost[LK_LOST_EXPIRED], 1);
}
END_TEST

START_TEST(evicted_last_client_leaves_the_lease_to_expire)
{
	lead(7);
	lk_lock_evict(L, C1);
	EXPECT_LINES("LOST sched token=7 reason=expired\n");
	ck_assert_int_eq(lk_lock_state(L), LK_LOCK_IDLE);
	advance(20000);
	ck_assert_int_eq(calls[R_RELEASE], 0);
	ck_assert_int_eq(calls[R_RENEW], 0);
	ck_assert_int_eq(calls[R_ACQUIRE], 1);
}
END_TEST

START_TEST(evicted_client_during_stepdown_is_expired_without_release)
{
	enum lk_outcome o;

	lead_and_drain();
	advance(500);
	lk_lock_evict(L, C1);
	EXPECT_LINES("LOST sched token=7 reason=expired\n",
	             "RELEASED sched token=7 outcome=expired\n");
	ck_assert(lk_lock_outcome(L, &o));
	ck_assert_int_eq(o, LK_OUTCOME_EXPIRED);
	ck_assert_int_eq(calls[R_RELEASE], 0);
	ck_assert_int_eq(settled_calls, 1);
}
END_TEST

START_TEST(evicted_follower_client_is_like_one_that_left)
{
	ck_assert_int_eq(lk_lock_campaign(L, C1), 0);
	answer(PENDING(R_ACQUIRE), holder_reply(LK_REPLY_HELD, "other"));
	EXPECT_LINES("FOLLOWER sched holder=other\n");
	lk_lock_evict(L, C1);
	ck_assert_int_eq(lk_lock_state(L), LK_LOCK_IDLE);
	EXPECT_NO_LINES();
}
END_TEST

START_TEST(ack_before_stepdown_does_not_count)
{
	lead(7);
	ck_assert_int_eq(lk_lock_ack(L, C1, 7), 0);
	lk_lock_drain(L);
	EXPECT_LINES("STEPDOWN sched token=7 deadline_ms=5000\n");
	/* The early ACK was not an answer to this STEPDOWN: still waiting. */
	ck_assert_int_eq(calls[R_RELEASE], 0);
	ck_assert_int_eq(lk_lock_ack(L, C1, 7), 0);
	ck_assert_int_eq(calls[R_RELEASE], 1);
}
END_TEST

START_TEST(newcomer_never_hears_leader_past_the_renew_deadline)
{
	char buf[LK_LINE_MAX];
	int n;

	lead(7);
	/* The loop stalled: the deadline timer has not run although its time has come. */
	now += 6500 * MS;
	n = lk_lock_current_event(L, buf, sizeof(buf));
	ck_assert_int_gt(n, 0);
	EXPECT_LINES("LOST sched token=7 reason=renew_deadline\n");
	ck_assert_str_eq(buf, "FOLLOWER sched holder=-\n");
}
END_TEST

/* ---- campaign clients leaving ------------------------------------------------------------------- */

START_TEST(last_campaign_client_leaving_a_leader_releases_at_once)
{
	struct freq *q;

	lead(7);
	ck_assert_int_eq(lk_lock_campaign(L, C2), 0);
	advance(1000);
	lk_lock_leave(L, C1);
	ck_assert_int_eq(lk_lock_state(L), LK_LOCK_LEADER);
	ck_assert_int_eq(calls[R_RELEASE], 0);
	lk_lock_leave(L, C2);
	/* I6: the app is gone; nobody does leader work; give the lock back now. */
	q = PENDING(R_RELEASE);
	ck_assert_uint_eq(q->token, 7);
	ck_assert_int_eq(q->sent, T0 + 1000 * MS);
	ck_assert_int_eq(lk_lock_state(L), LK_LOCK_RELEASING);
	/* No renewals once the release started. */
	advance(2500);
	ck_assert_int_eq(calls[R_RENEW], 0);
	answer_ok(q, 0);
	EXPECT_LINES("FOLLOWER sched holder=-\n");
	ck_assert_int_eq(lk_lock_state(L), LK_LOCK_IDLE);
	ck_assert(!watching);
	ck_assert_uint_eq(lk_lock_stats(L)->releases[LK_OUTCOME_RELEASED], 1);
	ck_assert_int_eq(lk_lock_stats(L)->last_release_ms, 2500);
	ck_assert_int_eq(settled_calls, 0);
	enum lk_outcome o;
	ck_assert(!lk_lock_outcome(L, &o));
	advance(60000);
	ck_assert_int_eq(calls[R_ACQUIRE], 1);
	ck_assert_int_eq(calls[R_RENEW], 0);
	ck_assert_int_eq(calls[R_RELEASE], 1);
	EXPECT_NO_LINES();
}
END_TEST

START_TEST(renew_reply_during_a_release_is_ignored)
{
	struct freq *renew;

	lead(7);
	advance(3000);
	renew = PENDING(R_RENEW);
	lk_lock_leave(L, C1);
	ck_assert_uint_eq(PENDING(R_RELEASE)->token, 7);
	/* The app already stepped away: a late verdict on the renewal changes nothing. */
	answer(renew, holder_reply(LK_REPLY_TAKEN, "other"));
	EXPECT_NO_LINES();
	ck_assert_int_eq(lk_lock_state(L), LK_LOCK_RELEASING);
	ck_assert_uint_eq(lk_lock_stats(L)->lost[LK_LOST_TAKEN], 0);
	answer(PENDING(R_RELEASE), status(LK_REPLY_GONE));
	EXPECT_LINES("FOLLOWER sched holder=-\n");
	ck_assert_uint_eq(lk_lock_stats(L)->releases[LK_OUTCOME_ALREADY_GONE], 1);
	ck_assert_int_eq(lk_lock_state(L), LK_LOCK_IDLE);
	advance(10000);
	ck_assert_int_eq(calls[R_RENEW], 1);
}
END_TEST

START_TEST(client_returning_during_a_release_campaigns_again_after_it)
{
	lead(7);
	lk_lock_leave(L, C1);
	ck_assert_int_eq(lk_lock_campaign(L, C2), 0);
	ck_assert_int_eq(calls[R_ACQUIRE], 1);  /* not while our release is out */
	answer_ok(PENDING(R_RELEASE), 0);
	EXPECT_LINES("FOLLOWER sched holder=-\n");
	ck_assert_int_eq(lk_lock_state(L), LK_LOCK_FOLLOWER);
	answer_ok(PENDING(R_ACQUIRE), 8);
	EXPECT_LINES("LEADER sched token=8 ttl_ms=10000\n");
}
END_TEST

/* A release wanted while an older one is still out waits for it (I3); if its own tenure has
 * ended by then (its release timed out, a new tenure is held), it is never sent. */
START_TEST(a_release_waiting_for_an_old_answer_is_dropped_once_its_tenure_ended)
{
	struct freq *old;

	lead(7);
	lk_lock_leave(L, C1);
	old = PENDING(R_RELEASE);
	advance(3000);
	EXPECT_LINES("FOLLOWER sched holder=-\n");
	ck_assert_int_eq(lk_lock_campaign(L, C1), 0);
	answer_ok(PENDING(R_ACQUIRE), 8);
	EXPECT_LINES("LEADER sched token=8 ttl_ms=10000\n");
	lk_lock_leave(L, C1);                      /* waits for the answer about 7 */
	ck_assert_int_eq(n_sent(R_RELEASE, 8), 0);
	advance(3000);
	EXPECT_LINES("FOLLOWER sched holder=-\n");
	ck_assert_int_eq(lk_lock_campaign(L, C1), 0);
	answer_ok(PENDING(R_ACQUIRE), 9);
	EXPECT_LINES("LEADER sched token=9 ttl_ms=10000\n");
	answer_ok(old, 0);
	ck_assert_int_eq(n_sent(R_RELEASE, 8), 0);
	ck_assert_int_eq(n_sent(R_RELEASE, 9), 0);
	ck_assert_int_eq(lk_lock_state(L), LK_LOCK_LEADER);
}
END_TEST

START_TEST(release_after_leaving_retries_then_gives_up_at_release_timeout)
{
	lead(7);
	lk_lock_leave(L, C1);
	answer(PENDING(R_RELEASE), status(LK_REPLY_ERROR));
	advance(50);
	answer(PENDING(R_RELEASE), status(LK_REPLY_ERROR));
	ck_assert_int_eq(n_sent(R_RELEASE, 7), 2);
	advance(3000);
	EXPECT_LINES("FOLLOWER sched holder=-\n");
	ck_assert_int_eq(lk_lock_state(L), LK_LOCK_IDLE);
	ck_assert_uint_eq(lk_lock_stats(L)->releases[LK_OUTCOME_FAILED], 1);
	int sent = calls[R_RELEASE];
	advance(10000);
	ck_assert_int_eq(calls[R_RELEASE], sent);
	ck_assert_int_eq(settled_calls, 0);
}
END_TEST

START_TEST(leaving_a_follower_goes_idle_and_stops_attempting)
{
	ck_assert_int_eq(lk_lock_campaign(L, C1), 0);
	answer(PENDING(R_ACQUIRE), holder_reply(LK_REPLY_HELD, "other"));
	lk_lock_leave(L, C1);
	ck_assert_int_eq(lk_lock_state(L), LK_LOCK_IDLE);
	ck_assert(!watching);
	notice();
	advance(60000);
	ck_assert_int_eq(calls[R_ACQUIRE], 1);
}
END_TEST

START_TEST(acquire_won_after_everyone_left_is_released_unannounced)
{
	struct freq *q;

	ck_assert_int_eq(lk_lock_campaign(L, C1), 0);
	q = PENDING(R_ACQUIRE);
	lk_lock_leave(L, C1);
	ck_assert_int_eq(lk_lock_state(L), LK_LOCK_IDLE);
	answer_ok(q, 7);
	EXPECT_NO_LINES();
	ck_assert_uint_eq(PENDING(R_RELEASE)->token, 7);
	answer_ok(PENDING(R_RELEASE), 0);
	ck_assert_int_eq(lk_lock_state(L), LK_LOCK_IDLE);
	ck_assert_uint_eq(lk_lock_stats(L)->acquisitions, 0);
	EXPECT_NO_LINES();
}
END_TEST

/* ---- drain -------------------------------------------------------------------------------------- */

START_TEST(drain_while_idle_settles_at_once_without_outcome)
{
	enum lk_outcome o;

	lk_lock_drain(L);
	ck_assert_int_eq(settled_calls, 1);
	ck_assert_int_eq(lk_lock_state(L), LK_LOCK_DONE);
	ck_assert(!lk_lock_outcome(L, &o));
	EXPECT_NO_LINES();
	ck_assert_int_eq(lk_lock_campaign(L, C1), -EBUSY);
	ck_assert_int_eq(calls[R_ACQUIRE], 0);
}
END_TEST

START_TEST(drain_while_following_settles_at_once_and_stops_attempting)
{
	enum lk_outcome o;

	ck_assert_int_eq(lk_lock_campaign(L, C1), 0);
	answer(PENDING(R_ACQUIRE), holder_reply(LK_REPLY_HELD, "other"));
	EXPECT_LINES("FOLLOWER sched holder=other\n");
	lk_lock_drain(L);
	ck_assert_int_eq(settled_calls, 1);
	ck_assert(!lk_lock_outcome(L, &o));
	ck_assert(!watching);
	notice();
	advance(60000);
	ck_assert_int_eq(calls[R_ACQUIRE], 1);
	EXPECT_NO_LINES();
}
END_TEST

START_TEST(drain_while_leading_waits_for_every_ack_before_releasing)
{
	struct freq *q;
	enum lk_outcome o;

	lead(7);
	ck_assert_int_eq(lk_lock_campaign(L, C2), 0);
	advance(500);
	lk_lock_drain(L);
	EXPECT_LINES("STEPDOWN sched token=7 deadline_ms=5000\n");
	ck_assert_int_eq(lk_lock_state(L), LK_LOCK_STEPPING_DOWN);
	ck_assert(lk_lock_is_leader(L));
	ck_assert_int_eq(settled_calls, 0);
	/* I2: one of two ACKs is not enough. */
	ck_assert_int_eq(lk_lock_ack(L, C1, 7), 0);
	advance(1000);
	ck_assert_int_eq(calls[R_RELEASE], 0);
	/* An ACK from a client that is not campaigning does not stand in for C2. */
	ck_assert_int_eq(lk_lock_ack(L, WATCHER, 7), 0);
	ck_assert_int_eq(calls[R_RELEASE], 0);
	ck_assert_int_eq(lk_lock_ack(L, C2, 7), 0);
	q = PENDING(R_RELEASE);
	ck_assert_uint_eq(q->token, 7);
	ck_assert_int_eq(lk_lock_state(L), LK_LOCK_RELEASING);
	ck_assert_int_eq(lk_lock_stats(L)->last_stepdown_ms, 1000);
	advance(200);
	answer_ok(q, 0);
	EXPECT_LINES("RELEASED sched token=7 outcome=released\n");
	ck_assert_int_eq(settled_calls, 1);
	ck_assert_int_eq(lk_lock_state(L), LK_LOCK_DONE);
	ck_assert(lk_lock_outcome(L, &o));
	ck_assert_int_eq(o, LK_OUTCOME_RELEASED);
	ck_assert_uint_eq(lk_lock_stats(L)->releases[LK_OUTCOME_RELEASED], 1);
	ck_assert_int_eq(lk_lock_stats(L)->last_release_ms, 200);
	ck_assert(!lk_lock_is_leader(L));
	/* Nothing more, ever. */
	advance(60000);
	ck_assert_int_eq(calls[R_RELEASE], 1);
	ck_assert_int_eq(calls[R_ACQUIRE], 1);
	EXPECT_NO_LINES();
}
END_TEST

START_TEST(stepping_down_keeps_renewing)
{
	struct freq *q;

	lead(7);
	advance(2000);
	lk_lock_drain(L);                       /* stepdown would time out at T0+7s */
	EXPECT_LINES("STEPDOWN sched token=7 deadline_ms=5000\n");
	advance(1000);
	q = PENDING(R_RENEW);
	ck_assert_uint_eq(q->token, 7);
	ck_assert_int_eq(q->sent, T0 + 3000 * MS);
	answer_ok(q, 0);
	/* The acquire's deadline (T0+6s) passes without LOST: the renewal moved it. */
	advance(3500);
	ck_assert_int_eq(lk_lock_state(L), LK_LOCK_STEPPING_DOWN);
	EXPECT_NO_LINES();
	ck_assert_int_eq(calls[R_RELEASE], 0);
}
END_TEST

START_TEST(disconnect_during_stepdown_counts_as_ack)
{
	lead(7);
	ck_assert_int_eq(lk_lock_campaign(L, C2), 0);
	lk_lock_drain(L);
	ck_assert_int_eq(lk_lock_ack(L, C1, 7), 0);
	ck_assert_int_eq(calls[R_RELEASE], 0);
	lk_lock_leave(L, C2);
	ck_assert_uint_eq(PENDING(R_RELEASE)->token, 7);
}
END_TEST

START_TEST(drain_of_a_leader_without_campaign_clients_releases_at_once)
{
	L = lk_lock_free(L);
	keys_made = 0;
	cfg.campaign = LK_CAMPAIGN_ALWAYS;
	new_lock();
	lk_lock_start(L);
	lead(7);
	lk_lock_leave(L, C1);
	ck_assert_int_eq(lk_lock_state(L), LK_LOCK_LEADER);
	lk_lock_drain(L);
	/* Nobody to wait for (watchers are told, but only campaign clients are awaited). */
	EXPECT_LINES("STEPDOWN sched token=7 deadline_ms=5000\n");
	ck_assert_uint_eq(PENDING(R_RELEASE)->token, 7);
	ck_assert_int_eq(lk_lock_stats(L)->last_stepdown_ms, 0);
	answer_ok(PENDING(R_RELEASE), 0);
	EXPECT_LINES("RELEASED sched token=7 outcome=released\n");
	ck_assert_int_eq(settled_calls, 1);
}
END_TEST

START_TEST(drain_during_a_release_after_the_app_left_waits_for_it)
{
	lead(7);
	lk_lock_leave(L, C1);
	ck_assert_int_eq(lk_lock_state(L), LK_LOCK_RELEASING);
	lk_lock_drain(L);
	/* The release that was already out decides the outcome. */
	ck_assert_int_eq(calls[R_RELEASE], 1);
	answer_ok(PENDING(R_RELEASE), 0);
	EXPECT_LINES("RELEASED sched token=7 outcome=released\n");
	ck_assert_int_eq(settled_calls, 1);
}
END_TEST

START_TEST(stepdown_timeout_never_releases_and_stops_renewing)
{
	enum lk_outcome o;

	lead_and_drain();
	advance(3000);
	answer_ok(PENDING(R_RENEW), 0);
	advance(1999);
	ck_assert_int_eq(settled_calls, 0);
	advance(1);
	EXPECT_LINES("LOST sched token=7 reason=expired\n",
	             "RELEASED sched token=7 outcome=expired\n");
	ck_assert_int_eq(settled_calls, 1);
	ck_assert_int_eq(settled_at, T0 + 5000 * MS);
	ck_assert(lk_lock_outcome(L, &o));
	ck_assert_int_eq(o, LK_OUTCOME_EXPIRED);
	ck_assert_uint_eq(lk_lock_stats(L)->releases[LK_OUTCOME_EXPIRED], 1);
	ck_assert_int_eq(lk_lock_stats(L)->last_stepdown_ms, 5000);
	/* I2: the lease is left to expire: no release, no more renewals, even if the app now
	 * acknowledges. */
	ck_assert_int_eq(lk_lock_ack(L, C1, 7), 0);
	advance(60000);
	ck_assert_int_eq(calls[R_RELEASE], 0);
	ck_assert_int_eq(calls[R_RENEW], 1);
	ck_assert_int_eq(settled_calls, 1);
	EXPECT_NO_LINES();
}
END_TEST

START_TEST(renewal_in_flight_at_stepdown_timeout_is_ignored)
{
	struct freq *q;

	lead_and_drain();
	advance(3000);
	q = PENDING(R_RENEW);
	advance(2000);
	EXPECT_LINES("LOST sched token=7 reason=expired\n",
	             "RELEASED sched token=7 outcome=expired\n");
	answer_ok(q, 0);
	advance(60000);
	ck_assert_int_eq(calls[R_RENEW], 1);
	ck_assert_int_eq(calls[R_RELEASE], 0);
	ck_assert_int_eq(lk_lock_state(L), LK_LOCK_DONE);
	EXPECT_NO_LINES();
}
END_TEST

START_TEST(release_error_retries_the_same_token_one_request_at_a_time)
{
	static const int64_t want_backoff_ms[] = { 50, 100, 200, 400 };
	int64_t failed_at;

	lead_and_drain();
	ck_assert_int_eq(lk_lock_ack(L, C1, 7), 0);
	answer(PENDING(R_RELEASE), status(LK_REPLY_ERROR));
	failed_at = now;
	for (int i = 0; i < 4; i++) {
		ck_assert_int_eq(n_pending(R_RELEASE), 0);
		advance(want_backoff_ms[i] - 1);
		ck_assert_int_eq(n_pending(R_RELEASE), 0);
		advance(1);
		struct freq *q = PENDING(R_RELEASE);
		ck_assert_int_eq(q->sent - failed_at, want_backoff_ms[i] * MS);
		/* One request at a time: time passing does not add another. */
		advance(10);
		ck_assert_int_eq(n_pending(R_RELEASE), 1);
		failed_at = now;
		if (i < 3)
			answer(q, status(LK_REPLY_ERROR));
		else
			answer_ok(q, 0);
	}
	EXPECT_LINES("RELEASED sched token=7 outcome=released\n");
	ck_assert_int_eq(backend_errors, 4);
	/* I3: every attempt was the same compare-and-delete of tenure 7. */
	ck_assert_int_eq(n_sent(R_RELEASE, 7), 5);
	ck_assert_int_eq(calls[R_RELEASE], 5);
	ck_assert_int_eq(settled_calls, 1);
}
END_TEST

START_TEST(release_refused_while_disconnected_retries)
{
	lead_and_drain();
	refuse[R_RELEASE] = 1;
	ck_assert_int_eq(lk_lock_ack(L, C1, 7), 0);
	ck_assert_int_eq(calls[R_RELEASE], 1);
	/* A refusal while disconnected is the backend's outage, already counted by the backend. */
	ck_assert_int_eq(backend_errors, 0);
	advance(50);
	answer_ok(PENDING(R_RELEASE), 0);
	ck_assert_int_eq(n_sent(R_RELEASE, 7), 1);
	EXPECT_LINES("RELEASED sched token=7 outcome=released\n");
}
END_TEST

START_TEST(release_gone_is_already_gone)
{
	enum lk_outcome o;

	lead_and_drain();
	ck_assert_int_eq(lk_lock_ack(L, C1, 7), 0);
	answer(PENDING(R_RELEASE), status(LK_REPLY_GONE));
	EXPECT_LINES("RELEASED sched token=7 outcome=already_gone\n");
	ck_assert(lk_lock_outcome(L, &o));
	ck_assert_int_eq(o, LK_OUTCOME_ALREADY_GONE);
	ck_assert_uint_eq(lk_lock_stats(L)->releases[LK_OUTCOME_ALREADY_GONE], 1);
	ck_assert_int_eq(settled_calls, 1);
}
END_TEST

START_TEST(release_fatal_is_failed)
{
	enum lk_outcome o;

	lead_and_drain();
	ck_assert_int_eq(lk_lock_ack(L, C1, 7), 0);
	answer(PENDING(R_RELEASE), status(LK_REPLY_FATAL));
	EXPECT_LINES("RELEASED sched token=7 outcome=failed\n");
	ck_assert(lk_lock_outcome(L, &o));
	ck_assert_int_eq(o, LK_OUTCOME_FAILED);
	ck_assert_int_eq(backend_errors, 1);
	advance(10000);
	ck_assert_int_eq(calls[R_RELEASE], 1);
}
END_TEST

START_TEST(release_timeout_is_failed_and_a_late_answer_changes_nothing)
{
	struct freq *q;
	enum lk_outcome o;

	lead_and_drain();
	ck_assert_int_eq(lk_lock_ack(L, C1, 7), 0);
	q = PENDING(R_RELEASE);
	advance(2999);
	ck_assert_int_eq(settled_calls, 0);
	advance(1);
	EXPECT_LINES("RELEASED sched token=7 outcome=failed\n");
	ck_assert_int_eq(settled_calls, 1);
	ck_assert(lk_lock_outcome(L, &o));
	ck_assert_int_eq(o, LK_OUTCOME_FAILED);
	ck_assert_uint_eq(lk_lock_stats(L)->releases[LK_OUTCOME_FAILED], 1);
	answer_ok(q, 0);
	ck_assert(lk_lock_outcome(L, &o));
	ck_assert_int_eq(o, LK_OUTCOME_FAILED);
	ck_assert_int_eq(settled_calls, 1);
	EXPECT_NO_LINES();
}
END_TEST

START_TEST(release_errors_until_release_timeout_are_failed)
{
	lead_and_drain();
	ck_assert_int_eq(lk_lock_ack(L, C1, 7), 0);
	while (settled_calls == 0 && now < T0 + 10000 * MS) {
		if (n_pending(R_RELEASE))
			answer(PENDING(R_RELEASE), status(LK_REPLY_ERROR));
		advance(1);
	}
	EXPECT_LINES("RELEASED sched token=7 outcome=failed\n");
	ck_assert_int_eq(settled_at, T0 + 3000 * MS);
	ck_assert_int_eq(n_sent(R_RELEASE, 7), calls[R_RELEASE]);
	int sent = calls[R_RELEASE];
	advance(10000);
	ck_assert_int_eq(calls[R_RELEASE], sent);
}
END_TEST

START_TEST(drain_any_number_of_times_is_one_drain)
{
	lead(7);
	lk_lock_drain(L);
	lk_lock_drain(L);
	EXPECT_LINES("STEPDOWN sched token=7 deadline_ms=5000\n");
	ck_assert_int_eq(lk_lock_ack(L, C1, 7), 0);
	lk_lock_drain(L);
	ck_assert_int_eq(lk_lock_ack(L, C1, 7), 0);
	ck_assert_int_eq(calls[R_RELEASE], 1);
	answer_ok(PENDING(R_RELEASE), 0);
	lk_lock_drain(L);
	lk_lock_abort(L);
	EXPECT_LINES("RELEASED sched token=7 outcome=released\n");
	ck_assert_int_eq(settled_calls, 1);
	ck_assert_int_eq(calls[R_RELEASE], 1);
	ck_assert_uint_eq(lk_lock_stats(L)->releases[LK_OUTCOME_RELEASED], 1);
}
END_TEST

START_TEST(drain_during_an_acquire_that_succeeds_releases_without_leader)
{
	struct freq *q;
	enum lk_outcome o;

	ck_assert_int_eq(lk_lock_campaign(L, C1), 0);
	q = PENDING(R_ACQUIRE);
	lk_lock_drain(L);
	ck_assert_int_eq(settled_calls, 0);
	/* A notice or the retry timer do not start anything new. */
	notice();
	advance(2000);
	ck_assert_int_eq(calls[R_ACQUIRE], 1);
	answer_ok(q, 9);
	ck_assert(!lk_lock_is_leader(L));
	ck_assert_uint_eq(PENDING(R_RELEASE)->token, 9);
	answer_ok(PENDING(R_RELEASE), 0);
	/* No LEADER, no STEPDOWN: only the outcome. */
	EXPECT_LINES("RELEASED sched token=9 outcome=released\n");
	ck_assert_int_eq(settled_calls, 1);
	ck_assert(lk_lock_outcome(L, &o));
	ck_assert_int_eq(o, LK_OUTCOME_RELEASED);
	ck_assert_uint_eq(lk_lock_stats(L)->acquisitions, 0);
}
END_TEST

START_TEST(drain_during_an_acquire_that_is_held_settles_without_outcome)
{
	enum lk_outcome o;

	ck_assert_int_eq(lk_lock_campaign(L, C1), 0);
	lk_lock_drain(L);
	answer(PENDING(R_ACQUIRE), holder_reply(LK_REPLY_HELD, "other"));
	ck_assert_int_eq(settled_calls, 1);
	ck_assert(!lk_lock_outcome(L, &o));
	advance(10000);
	ck_assert_int_eq(calls[R_ACQUIRE], 1);
}
END_TEST

/* The last client left while an acquire was out (IDLE, attempt in flight), then the drain
 * came: if that attempt wins, the lock must still be given back, as from FOLLOWER. */
START_TEST(drain_after_everyone_left_still_releases_an_acquire_in_flight)
{
	struct freq *q;
	enum lk_outcome o;

	ck_assert_int_eq(lk_lock_campaign(L, C1), 0);
	q = PENDING(R_ACQUIRE);
	lk_lock_leave(L, C1);
	lk_lock_drain(L);
	ck_assert_int_eq(settled_calls, 0);
	answer_ok(q, 9);
	ck_assert_int_eq(n_sent(R_RELEASE, 9), 1);
	answer_ok(PENDING(R_RELEASE), 0);
	ck_assert_int_eq(settled_calls, 1);
	ck_assert(lk_lock_outcome(L, &o));
	ck_assert_int_eq(o, LK_OUTCOME_RELEASED);
	EXPECT_LINES("RELEASED sched token=9 outcome=released\n");
}
END_TEST

START_TEST(drain_after_everyone_left_settles_when_the_attempt_fails)
{
	struct freq *q;
	enum lk_outcome o;

	ck_assert_int_eq(lk_lock_campaign(L, C1), 0);
	q = PENDING(R_ACQUIRE);
	lk_lock_leave(L, C1);
	lk_lock_drain(L);
	advance(100);
	answer(q, status(LK_REPLY_ERROR));
	ck_assert_int_eq(settled_calls, 1);
	ck_assert_int_eq(settled_at, T0 + 100 * MS);
	ck_assert_int_eq(lk_lock_state(L), LK_LOCK_DONE);
	ck_assert(!lk_lock_outcome(L, &o));
	ck_assert_int_eq(calls[R_RELEASE], 0);
}
END_TEST

START_TEST(abort_while_a_drain_waits_for_an_acquire_settles_once)
{
	struct freq *q;

	ck_assert_int_eq(lk_lock_campaign(L, C1), 0);
	q = PENDING(R_ACQUIRE);
	lk_lock_leave(L, C1);
	lk_lock_drain(L);
	lk_lock_abort(L);
	ck_assert_int_eq(settled_calls, 1);
	ck_assert_int_eq(lk_lock_state(L), LK_LOCK_DONE);
	/* shutdown_timeout has passed: nothing more is sent, even for a win. */
	answer_ok(q, 9);
	ck_assert_int_eq(calls[R_RELEASE], 0);
	ck_assert_int_eq(settled_calls, 1);
	EXPECT_NO_LINES();
}
END_TEST

START_TEST(abort_during_stepdown_is_expired_without_release)
{
	enum lk_outcome o;

	lead_and_drain();
	advance(1000);
	lk_lock_abort(L);
	EXPECT_LINES("LOST sched token=7 reason=expired\n",
	             "RELEASED sched token=7 outcome=expired\n");
	ck_assert_int_eq(settled_calls, 1);
	ck_assert(lk_lock_outcome(L, &o));
	ck_assert_int_eq(o, LK_OUTCOME_EXPIRED);
	ck_assert_int_eq(lk_lock_ack(L, C1, 7), 0);
	advance(60000);
	ck_assert_int_eq(calls[R_RELEASE], 0);
	ck_assert_int_eq(calls[R_RENEW], 0);
	lk_lock_abort(L);
	ck_assert_int_eq(settled_calls, 1);
	EXPECT_NO_LINES();
}
END_TEST

START_TEST(abort_during_release_is_failed)
{
	struct freq *q;
	enum lk_outcome o;

	lead_and_drain();
	ck_assert_int_eq(lk_lock_ack(L, C1, 7), 0);
	q = PENDING(R_RELEASE);
	lk_lock_abort(L);
	EXPECT_LINES("RELEASED sched token=7 outcome=failed\n");
	ck_assert_int_eq(settled_calls, 1);
	ck_assert(lk_lock_outcome(L, &o));
	ck_assert_int_eq(o, LK_OUTCOME_FAILED);
	answer_ok(q, 0);
	ck_assert(lk_lock_outcome(L, &o));
	ck_assert_int_eq(o, LK_OUTCOME_FAILED);
	advance(60000);
	ck_assert_int_eq(calls[R_RELEASE], 1);
	ck_assert_int_eq(settled_calls, 1);
	EXPECT_NO_LINES();
}
END_TEST

START_TEST(abort_while_idle_or_following_settles_without_outcome)
{
	enum lk_outcome o;

	ck_assert_int_eq(lk_lock_campaign(L, C1), 0);
	answer(PENDING(R_ACQUIRE), holder_reply(LK_REPLY_HELD, "other"));
	lk_lock_abort(L);
	ck_assert_int_eq(settled_calls, 1);
	ck_assert_int_eq(lk_lock_state(L), LK_LOCK_DONE);
	ck_assert(!lk_lock_outcome(L, &o));
	ck_assert_int_eq(lk_lock_campaign(L, C2), -EBUSY);
	advance(10000);
	ck_assert_int_eq(calls[R_ACQUIRE], 1);
}
END_TEST

START_TEST(ack_with_a_wrong_token_is_einval)
{
	ck_assert_int_eq(lk_lock_ack(L, C1, 7), -EINVAL); /* no tenure yet */
	ck_assert_int_eq(lk_lock_ack(L, C1, 0), -EINVAL);
	lead_and_drain();
	ck_assert_int_eq(lk_lock_ack(L, C1, 6), -EINVAL);
	ck_assert_int_eq(lk_lock_ack(L, C1, 8), -EINVAL);
	ck_assert_int_eq(lk_lock_ack(L, C1, 0), -EINVAL);
	ck_assert_int_eq(calls[R_RELEASE], 0);
	ck_assert_int_eq(lk_lock_ack(L, C1, 7), 0);
	ck_assert_int_eq(calls[R_RELEASE], 1);
}
END_TEST

START_TEST(campaign_during_drain_is_ebusy)
{
	lead_and_drain();
	ck_assert_int_eq(lk_lock_campaign(L, C2), -EBUSY);
	ck_assert_uint_eq(lk_lock_campaigners(L), 1);
	/* C2 is not awaited: C1's ACK alone releases. */
	ck_assert_int_eq(lk_lock_ack(L, C1, 7), 0);
	ck_assert_int_eq(calls[R_RELEASE], 1);
}
END_TEST

START_TEST(renew_deadline_during_stepdown_is_lost_then_expired)
{
	enum lk_outcome o;

	lead(7);
	advance(2000);
	lk_lock_drain(L);                       /* stepdown would time out at T0+7s */
	advance(1000);
	ck_assert_int_eq(n_pending(R_RENEW), 1);  /* never answered */
	advance(3000);                          /* T0+6s: renew deadline */
	EXPECT_LINES("STEPDOWN sched token=7 deadline_ms=5000\n",
	             "LOST sched token=7 reason=renew_deadline\n",
	             "RELEASED sched token=7 outcome=expired\n");
	ck_assert_int_eq(settled_at, T0 + 6000 * MS);
	ck_assert(lk_lock_outcome(L, &o));
	ck_assert_int_eq(o, LK_OUTCOME_EXPIRED);
	ck_assert_uint_eq(lk_lock_stats(L)->lost[LK_LOST_RENEW_DEADLINE], 1);
	ck_assert_uint_eq(lk_lock_stats(L)->releases[LK_OUTCOME_EXPIRED], 1);
	ck_assert_int_eq(calls[R_RELEASE], 0);
	advance(60000);
	ck_assert_int_eq(calls[R_RELEASE], 0);
	ck_assert_int_eq(calls[R_ACQUIRE], 1);
}
END_TEST

START_TEST(taken_during_stepdown_is_lost_then_already_gone)
{
	enum lk_outcome o;

	lead_and_drain();
	advance(3000);
	answer(PENDING(R_RENEW), holder_reply(LK_REPLY_TAKEN, "other"));
	EXPECT_LINES("LOST sched token=7 reason=taken\n",
	             "RELEASED sched token=7 outcome=already_gone\n");
	ck_assert(lk_lock_outcome(L, &o));
	ck_assert_int_eq(o, LK_OUTCOME_ALREADY_GONE);
	ck_assert_int_eq(settled_calls, 1);
	ck_assert_int_eq(calls[R_RELEASE], 0);
}
END_TEST

/* ---- introspection -------------------------------------------------------------------------- */

static const char *current_event(void)
{
	static char buf[LK_LINE_MAX];
	int n = lk_lock_current_event(L, buf, sizeof(buf));

	ck_assert_int_gt(n, 0);
	ck_assert_uint_eq((size_t)n, strlen(buf));
	return buf;
}

START_TEST(current_event_tells_each_state)
{
	char small[8];

	ck_assert_str_eq(current_event(), "FOLLOWER sched holder=-\n");          /* idle */
	ck_assert_int_eq(lk_lock_campaign(L, C1), 0);
	answer(PENDING(R_ACQUIRE), holder_reply(LK_REPLY_HELD, "other"));
	ck_assert_str_eq(current_event(), "FOLLOWER sched holder=other\n");      /* follower */
	advance(1000);
	answer_ok(PENDING(R_ACQUIRE), 7);
	advance(1500);
	ck_assert_str_eq(current_event(), "LEADER sched token=7 ttl_ms=8500 until_mono_ms=1007000\n");
	lk_lock_drain(L);
	advance(2000);
	ck_assert_str_eq(current_event(), "STEPDOWN sched token=7 deadline_ms=3000\n");
	ck_assert_int_eq(lk_lock_ack(L, C1, 7), 0);
	ck_assert_int_eq(lk_lock_state(L), LK_LOCK_RELEASING);
	ck_assert_str_eq(current_event(), "FOLLOWER sched holder=-\n");          /* releasing */
	answer_ok(PENDING(R_RELEASE), 0);
	ck_assert_int_eq(lk_lock_state(L), LK_LOCK_DONE);
	ck_assert_str_eq(current_event(), "FOLLOWER sched holder=-\n");          /* done */
	ck_assert_int_eq(lk_lock_current_event(L, small, sizeof(small)), -ENOSPC);
}
END_TEST

START_TEST(state_names_are_stable)
{
	ck_assert_str_eq(lk_lock_state_name(LK_LOCK_IDLE), "idle");
	ck_assert_str_eq(lk_lock_state_name(LK_LOCK_FOLLOWER), "follower");
	ck_assert_str_eq(lk_lock_state_name(LK_LOCK_LEADER), "leader");
	ck_assert_str_eq(lk_lock_state_name(LK_LOCK_STEPPING_DOWN), "stepping_down");
	ck_assert_str_eq(lk_lock_state_name(LK_LOCK_RELEASING), "releasing");
	ck_assert_str_eq(lk_lock_state_name(LK_LOCK_DONE), "done");
	ck_assert_str_eq(lk_lock_state_name(LK_LOCK__STATE_COUNT), "?");
}
END_TEST

/* Read back what the lock logged at debug level during f(). */
static void logged_during(void (*f)(void), char *buf, size_t cap)
{
	FILE *mem = tmpfile();
	size_t n;

	ck_assert_ptr_nonnull(mem);
	lk_log_setup(LK_LOG_TEXT, LK_DEBUG, mem);
	f();
	rewind(mem);
	n = fread(buf, 1, cap - 1, mem);
	buf[n] = '\0';
	lk_log_setup(LK_LOG_TEXT, LK_DEBUG, log_sink);
	fclose(mem);
}

static void campaign_c1(void)
{
	ck_assert_int_eq(lk_lock_campaign(L, C1), 0);
}

static void leave_c1(void)
{
	lk_lock_leave(L, C1);
}

START_TEST(every_transition_is_logged_with_from_to_and_input)
{
	char log[4096];

	logged_during(campaign_c1, log, sizeof(log));
	ck_assert_ptr_nonnull(strstr(log, "lock=sched from=idle to=follower input=campaign"));
	answer_ok(PENDING(R_ACQUIRE), 7);
	EXPECT_LINES("LEADER sched token=7 ttl_ms=10000\n");
	logged_during(leave_c1, log, sizeof(log));
	ck_assert_ptr_nonnull(strstr(log, "from=leader to=releasing input=leave"));
}
END_TEST

START_TEST(stats_count_acquisitions_losses_and_releases)
{
	const struct lk_lock_stats *st = lk_lock_stats(L);

	lead(7);
	advance(3000);
	answer(PENDING(R_RENEW), holder_reply(LK_REPLY_TAKEN, "other"));
	advance(1000);
	answer_ok(PENDING(R_ACQUIRE), 8);
	advance(3000);
	answer(PENDING(R_RENEW), status(LK_REPLY_GONE));
	advance(1000);
	answer_ok(PENDING(R_ACQUIRE), 9);
	lk_lock_leave(L, C1);
	answer_ok(PENDING(R_RELEASE), 0);
	ck_assert_uint_eq(st->acquisitions, 3);
	ck_assert_uint_eq(st->lost[LK_LOST_TAKEN], 1);
	ck_assert_uint_eq(st->lost[LK_LOST_EXPIRED], 1);
	ck_assert_uint_eq(st->lost[LK_LOST_RENEW_DEADLINE], 0);
	ck_assert_uint_eq(st->lost[LK_LOST_BACKEND_ERROR], 0);
	ck_assert_uint_eq(st->releases[LK_OUTCOME_RELEASED], 1);
	ck_assert_uint_eq(st->releases[LK_OUTCOME_FAILED], 0);
	ck_assert_uint_eq(lk_lock_token(L), 9);
	EXPECT_LINES("LOST sched token=7 reason=taken\n", "LEADER sched token=8 ttl_ms=10000\n",
	             "LOST sched token=8 reason=expired\n", "LEADER sched token=9 ttl_ms=10000\n",
	             "FOLLOWER sched holder=-\n");
}
END_TEST

/* The acquire reply the next acquired_with_reply() gives: what came before, and the gap. */
static struct lk_reply next_acquire;

static void acquired_with_reply(void)
{
	struct freq *q = PENDING(R_ACQUIRE);

	next_acquire.status = LK_REPLY_OK;
	next_acquire.sent_ns = q->sent;
	next_acquire.ttl_ms = cfg.ttl_ms;
	answer(q, next_acquire);
}

/* Each tenure counts by what the backend says came before it (a backend that cannot tell
 * counts as an expiry); the handoff gap is observed, in ns, and logged, only after a release. */
START_TEST(acquisitions_count_what_came_before_and_observe_the_gap_after_a_release)
{
	const struct lk_lock_stats *st = lk_lock_stats(L);
	char log[4096];

	ck_assert_int_eq(lk_lock_campaign(L, C1), 0);
	/* Campaigning: the gap's series exists from now on, before the handoff it will show. */
	ck_assert_int_eq(announced[LK_OBSERVE_HANDOFF_GAP], 1);
	ck_assert_int_eq(announced[LK_OBSERVE_RELEASE], 0);
	next_acquire = (struct lk_reply){ .token = 7, .after = LK_AFTER_RELEASE, .gap_ns = 412345 };
	logged_during(acquired_with_reply, log, sizeof(log));
	ck_assert_msg(strstr(log, "msg=\"lock acquired\" lock=sched token=7 ") &&
	              strstr(log, " after=release gap_ms=0.412\n"), "%s", log);
	ck_assert_int_eq(observed[LK_OBSERVE_HANDOFF_GAP], 1);
	ck_assert_int_eq(observed_ns[LK_OBSERVE_HANDOFF_GAP], 412345);
	ck_assert_int_eq(announced[LK_OBSERVE_RELEASE], 1);
	ck_assert_int_eq(announced[LK_OBSERVE_STEPDOWN], 1);
	ck_assert_int_eq(observed[LK_OBSERVE_RELEASE] + observed[LK_OBSERVE_STEPDOWN], 0);
	ck_assert_uint_eq(st->acquired_after[LK_LOCK_AFTER_RELEASE], 1);

	struct { enum lk_reply_after after; int64_t gap_ns; const char *logged; } next[] = {
		{ LK_AFTER_EXPIRY, 5000, " after=expiry gap_ms=-\n" },
		{ LK_AFTER_UNKNOWN, 0, " after=expiry gap_ms=-\n" },
		{ LK_AFTER_RELEASE, -1, " after=release gap_ms=-\n" }, /* a gap it cannot tell */
		{ LK_AFTER_FIRST, 0, " after=first gap_ms=-\n" },
	};
	for (size_t i = 0; i < sizeof(next) / sizeof(next[0]); i++) {
		advance(3000);
		answer(PENDING(R_RENEW), holder_reply(LK_REPLY_TAKEN, "other"));
		ck_assert_int_eq(lk_lock_state(L), LK_LOCK_FOLLOWER);
		advance(1000);
		next_acquire = (struct lk_reply){ .token = 8 + i, .after = next[i].after,
		                                  .gap_ns = next[i].gap_ns };
		logged_during(acquired_with_reply, log, sizeof(log));
		ck_assert_msg(strstr(log, next[i].logged), "%zu: %s", i, log);
		ck_assert_int_eq(lk_lock_state(L), LK_LOCK_LEADER);
	}
	ck_assert_int_eq(observed[LK_OBSERVE_HANDOFF_GAP], 1);
	ck_assert_uint_eq(st->acquired_after[LK_LOCK_AFTER_RELEASE], 2);
	ck_assert_uint_eq(st->acquired_after[LK_LOCK_AFTER_EXPIRY], 2);
	ck_assert_uint_eq(st->acquired_after[LK_LOCK_AFTER_FIRST], 1);
	ck_assert_uint_eq(st->acquisitions, 5);
	ck_assert_str_eq(lk_lock_after_name(LK_LOCK_AFTER_EXPIRY), "expiry");
	ck_assert_str_eq(lk_lock_after_name(LK_LOCK_AFTER__COUNT), "?");
}
END_TEST

/* ---- suite ------------------------------------------------------------------------------------ */

static TCase *tcase(Suite *s, const char *name)
{
	TCase *t = tcase_create(name);

	tcase_add_checked_fixture(t, setup, teardown);
	suite_add_tcase(s, t);
	return t;
}

static Suite *lock_suite(void)
{
	Suite *s = suite_create("lock");
	TCase *t;

	t = tcase(s, "campaign");
	tcase_add_test(t, new_lock_registers_its_key_and_starts_idle);
	tcase_add_test(t, idle_lock_does_not_acquire_without_a_campaign_client);
	tcase_add_test(t, campaign_always_acquires_at_start_without_clients);
	tcase_add_test(t, campaign_always_keeps_leading_when_the_last_client_leaves);
	tcase_add_test(t, campaign_sends_one_acquire_and_watches_the_key);
	tcase_add_test(t, campaigners_are_capped);

	t = tcase(s, "holdoff");
	tcase_add_test(t, no_acquire_is_sent_while_the_backend_holds_off);
	tcase_add_test(t, a_hold_off_that_grows_while_waiting_is_waited_out);
	tcase_add_test(t, after_a_loss_the_next_tenure_waits_for_the_hold_off);
	tcase_add_test(t, a_leader_reproves_on_every_reconnect_and_keeps_a_tenure_that_is_still_there);
	tcase_add_test(t, a_reconnect_wakes_a_follower_like_a_notice);

	t = tcase(s, "acquire");
	tcase_add_test(t, acquire_ok_announces_leader_with_token_and_ttl);
	tcase_add_test(t, leader_ttl_counts_from_when_the_acquire_was_sent);
	tcase_add_test(t, acquire_answered_just_before_the_renew_deadline_is_announced);
	tcase_add_test(t, leader_carries_the_deadline_counted_from_the_acquire_send);
	tcase_add_test(t, each_proven_renewal_sends_renewed_with_a_later_deadline);
	tcase_add_test(t, renewals_while_stepping_down_send_renewed);
	tcase_add_test(t, failed_or_late_renewals_send_no_renewed);
	tcase_add_test(t, catch_up_acts_on_a_deadline_the_timer_has_not_fired_for);
	tcase_add_test(t, acquire_answered_after_the_renew_deadline_is_not_announced_and_is_given_back);
	tcase_add_test(t, held_reports_the_holder_once_and_retries_after_retry_interval);
	tcase_add_test(t, held_with_an_expiry_retries_just_after_it);
	tcase_add_test(t, holder_identities_are_sanitised_for_the_wire);
	tcase_add_test(t, acquire_errors_count_and_retry_after_retry_interval);
	tcase_add_test(t, acquire_refused_while_disconnected_retries_on_timer_or_notice);
	tcase_add_test(t, release_notice_triggers_an_immediate_attempt);
	tcase_add_test(t, notice_during_an_attempt_that_returns_held_retries_at_once);
	tcase_add_test(t, notices_while_idle_or_leading_are_ignored);

	t = tcase(s, "renew");
	tcase_add_test(t, renewal_is_sent_renew_interval_after_the_acquire_was_sent);
	tcase_add_test(t, renew_ok_extends_the_deadline_from_when_it_was_sent);
	tcase_add_test(t, renew_errors_retry_with_backoff_and_lose_at_the_renew_deadline);
	tcase_add_test(t, renew_refused_while_disconnected_retries_with_backoff);
	tcase_add_test(t, renewal_granting_a_shorter_ttl_shrinks_the_deadline);
	tcase_add_test(t, renew_taken_is_lost_taken_and_follows_the_new_holder);
	tcase_add_test(t, renew_gone_is_lost_expired);
	tcase_add_test(t, renew_fatal_is_lost_backend_error);
	tcase_add_test(t, renew_reply_for_a_tenure_that_already_ended_is_ignored);
	tcase_add_test(t, stale_renew_reply_does_not_end_the_next_tenure);
	tcase_add_test(t, next_tenure_after_lost_gets_a_new_token_and_renews);
	tcase_add_test(t, next_tenure_renews_on_time_when_the_old_renewal_returned_first);
	tcase_add_test(t, deferred_renewal_is_dropped_when_its_tenure_is_lost_first);
	tcase_add_test(t, deferred_renewal_is_dropped_when_its_tenure_expires_in_stepdown);

	t = tcase(s, "evict");
	tcase_add_test(t, evicted_leader_client_gives_the_tenure_up_without_release);
	tcase_add_test(t, evicted_last_client_leaves_the_lease_to_expire);
	tcase_add_test(t, evicted_client_during_stepdown_is_expired_without_release);
	tcase_add_test(t, evicted_follower_client_is_like_one_that_left);
	tcase_add_test(t, ack_before_stepdown_does_not_count);
	tcase_add_test(t, newcomer_never_hears_leader_past_the_renew_deadline);

	t = tcase(s, "leave");
	tcase_add_test(t, last_campaign_client_leaving_a_leader_releases_at_once);
	tcase_add_test(t, renew_reply_during_a_release_is_ignored);
	tcase_add_test(t, client_returning_during_a_release_campaigns_again_after_it);
	tcase_add_test(t, release_after_leaving_retries_then_gives_up_at_release_timeout);
	tcase_add_test(t, a_release_waiting_for_an_old_answer_is_dropped_once_its_tenure_ended);
	tcase_add_test(t, leaving_a_follower_goes_idle_and_stops_attempting);
	tcase_add_test(t, acquire_won_after_everyone_left_is_released_unannounced);

	t = tcase(s, "drain");
	tcase_add_test(t, drain_while_idle_settles_at_once_without_outcome);
	tcase_add_test(t, drain_while_following_settles_at_once_and_stops_attempting);
	tcase_add_test(t, drain_while_leading_waits_for_every_ack_before_releasing);
	tcase_add_test(t, stepping_down_keeps_renewing);
	tcase_add_test(t, disconnect_during_stepdown_counts_as_ack);
	tcase_add_test(t, drain_of_a_leader_without_campaign_clients_releases_at_once);
	tcase_add_test(t, drain_during_a_release_after_the_app_left_waits_for_it);
	tcase_add_test(t, stepdown_timeout_never_releases_and_stops_renewing);
	tcase_add_test(t, renewal_in_flight_at_stepdown_timeout_is_ignored);
	tcase_add_test(t, release_error_retries_the_same_token_one_request_at_a_time);
	tcase_add_test(t, release_refused_while_disconnected_retries);
	tcase_add_test(t, release_gone_is_already_gone);
	tcase_add_test(t, release_fatal_is_failed);
	tcase_add_test(t, release_timeout_is_failed_and_a_late_answer_changes_nothing);
	tcase_add_test(t, release_errors_until_release_timeout_are_failed);
	tcase_add_test(t, drain_any_number_of_times_is_one_drain);
	tcase_add_test(t, drain_during_an_acquire_that_succeeds_releases_without_leader);
	tcase_add_test(t, drain_during_an_acquire_that_is_held_settles_without_outcome);
	tcase_add_test(t, drain_after_everyone_left_still_releases_an_acquire_in_flight);
	tcase_add_test(t, drain_after_everyone_left_settles_when_the_attempt_fails);
	tcase_add_test(t, abort_while_a_drain_waits_for_an_acquire_settles_once);
	tcase_add_test(t, abort_during_stepdown_is_expired_without_release);
	tcase_add_test(t, abort_during_release_is_failed);
	tcase_add_test(t, abort_while_idle_or_following_settles_without_outcome);
	tcase_add_test(t, ack_with_a_wrong_token_is_einval);
	tcase_add_test(t, campaign_during_drain_is_ebusy);
	tcase_add_test(t, renew_deadline_during_stepdown_is_lost_then_expired);
	tcase_add_test(t, taken_during_stepdown_is_lost_then_already_gone);

	t = tcase(s, "introspection");
	tcase_add_test(t, current_event_tells_each_state);
	tcase_add_test(t, state_names_are_stable);
	tcase_add_test(t, every_transition_is_logged_with_from_to_and_input);
	tcase_add_test(t, stats_count_acquisitions_losses_and_releases);
	tcase_add_test(t, acquisitions_count_what_came_before_and_observe_the_gap_after_a_release);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(lock_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
