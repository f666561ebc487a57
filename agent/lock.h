/* One lock's state machine: campaign, lead, renew, step down, release (docs/safety.md and
 * README "The drain").
 *
 * The states are one enum. Every input (a client, a backend reply or notice, a timer) goes
 * through one function (lock.c: lk_lock_step()), which chooses the transition; the state
 * itself changes only in lock.c set_state(), which logs each change at debug level (from, to,
 * input). So the safety invariants can be read in one place:
 *   I1  LEADER is sent only while now < sent + renew_deadline of the proving request;
 *   I2  a release starts only once every campaign client has ACKed the tenure or left;
 *       a stepdown timeout (or a client the agent cut off) ends the tenure with LOST and
 *       no release at all: the lease expires at its TTL;
 *   I3  one tenure is released by one compare-and-delete, repeated only after a transport error;
 *   I4  the renew deadline timer sends LOST before the lease can expire;
 *   I10 no acquire is sent while the backend says it may have lost tenures it granted
 *       (holding_off()), and a held tenure is re-proven on every new connection;
 *   I8  every LEADER and RENEWED carries the deadline (until_mono_ms) the apps keep on their
 *       own: never later than the proving request's send time + renew_deadline;
 *   I6  a campaign client that leaves counts as stepped down;
 *   I7  lk_lock_drain() is idempotent.
 *
 * The lock does no I/O of its own: time, timers and the delivery of event lines to clients come
 * through struct lk_lock_env, so the unit tests drive it with a fake clock and a fake backend.
 */
#ifndef LK_AGENT_LOCK_H
#define LK_AGENT_LOCK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto/codec.h"

struct lk_backend;
struct lk_config_lock;
struct lk_lock;

#define LK_LOCK_MAX_CAMPAIGNERS 1024
#define LK_HOLDER_MAX           256 /* longer holder identities are cut */
#define LK_HOLDOFF_WHY_MAX      192 /* a backend's reason for a hold-off, cut */

enum lk_lock_state {
	LK_LOCK_IDLE,          /* not campaigning: nobody here wants the lock */
	LK_LOCK_FOLLOWER,      /* campaigning: trying to acquire, another holder or none */
	LK_LOCK_LEADER,        /* holding a proven-valid tenure and renewing it */
	LK_LOCK_STEPPING_DOWN, /* drain: STEPDOWN sent, still renewing, waiting for ACKs */
	LK_LOCK_RELEASING,     /* compare-and-delete in flight or being retried */
	LK_LOCK_DONE,          /* drained: nothing more will happen */
	LK_LOCK__STATE_COUNT,
};

enum lk_lock_timer {
	LK_TIMER_RETRY,        /* next acquire attempt, or next release retry */
	LK_TIMER_RENEW,        /* next renewal, or renewal retry */
	LK_TIMER_DEADLINE,     /* renew deadline (I4) */
	LK_TIMER_PHASE,        /* stepdown_timeout, then release_timeout */
	LK_TIMER__COUNT,
};

typedef void lk_timer_fn(void *arg);

enum lk_lock_observation {
	LK_OBSERVE_RELEASE,    /* release start to the backend's answer (or giving up) */
	LK_OBSERVE_STEPDOWN,   /* STEPDOWN to the last ACK (or the timeout) */
	LK_OBSERVE_HANDOFF_GAP, /* the predecessor's release to our acquisition (lk_reply.gap_ns) */
	LK_OBSERVE__COUNT,
};

/* What came before a tenure this replica started (leasekeeper_acquisitions_total's `after`). */
enum lk_lock_after {
	LK_LOCK_AFTER_RELEASE, /* the holder before released it: a graceful handoff */
	LK_LOCK_AFTER_EXPIRY,  /* a tenure before that was not released (or the backend could not
	                          tell): its holder crashed or froze, its lease ran out */
	LK_LOCK_AFTER_FIRST,   /* the backend had no record of any tenure before */
	LK_LOCK_AFTER__COUNT,
};

/* What the lock needs from its host. All hooks get `ctx` as their first argument. */
struct lk_lock_env {
	void *ctx;
	int64_t (*now_ns)(void *ctx);                       /* CLOCK_MONOTONIC */
	void *(*timer_new)(void *ctx, lk_timer_fn *fn, void *arg);
	void (*timer_arm)(void *ctx, void *timer, int64_t at_ns); /* re-arming replaces */
	void (*timer_disarm)(void *ctx, void *timer);
	void (*timer_free)(void *ctx, void *timer);
	/* Deliver one event line ('\n' included) to this lock's campaign clients and watchers. */
	void (*emit)(void *ctx, struct lk_lock *l, const char *line, size_t len);
	/* During a drain: the lock reached DONE; lk_lock_outcome() tells how. */
	void (*settled)(void *ctx, struct lk_lock *l);
	/* A backend request failed (for leasekeeper_backend_errors_total). May be NULL. */
	void (*backend_error)(void *ctx, struct lk_lock *l);
	/* A release, a stepdown wait or a handoff finished, taking ns (for the histograms); ns -1:
	 * none yet, but one may come (the lock campaigns, or leads), so the series should exist
	 * from now on, at zero. May be NULL. */
	void (*observe)(void *ctx, struct lk_lock *l, enum lk_lock_observation what, int64_t ns);
};

/* Counters and last durations, for logs and metrics. */
struct lk_lock_stats {
	uint64_t acquisitions;
	uint64_t acquired_after[LK_LOCK_AFTER__COUNT]; /* the same, by what came before */
	uint64_t lost[LK_LOST__COUNT];
	uint64_t releases[LK_OUTCOME__COUNT];
	int64_t last_release_ms;   /* release start to backend answer, -1 if none yet */
	int64_t last_stepdown_ms;  /* STEPDOWN to the last ACK (or timeout), -1 if none yet */
};

/* Create a lock in IDLE. cfg, b, identity and env are borrowed and must outlive the lock.
 * Returns NULL on allocation failure. */
struct lk_lock *lk_lock_new(const struct lk_config_lock *cfg, struct lk_backend *b,
                            const char *identity, const struct lk_lock_env *env);

/* Free; accepts NULL; returns NULL. Does not release anything: drain first. */
struct lk_lock *lk_lock_free(struct lk_lock *l);

/* Begin life: campaign at once if the lock's mode is `always`. */
void lk_lock_start(struct lk_lock *l);

/* A client wants to lead (CAMPAIGN). Idempotent per client. Returns 0, -EBUSY while draining,
 * -ENOSPC past LK_LOCK_MAX_CAMPAIGNERS. */
int lk_lock_campaign(struct lk_lock *l, void *client);

/* A campaign client resigned or disconnected (I6). Unknown clients are ignored. */
void lk_lock_leave(struct lk_lock *l, void *client);

/* The agent cut a campaign client off (it read too slowly, sent garbage): unlike a client that
 * left, it may still be doing leader work, so a held tenure is given up WITHOUT a release and
 * left to expire at its TTL; the other clients get LOST. */
void lk_lock_evict(struct lk_lock *l, void *client);

/* A client ACKed `token`. It counts only as the answer to a STEPDOWN. Returns 0, or -EINVAL if
 * token is not this lock's current or most recent tenure (bad_token). */
int lk_lock_ack(struct lk_lock *l, void *client, uint64_t token);

/* Start (or join: idempotent) this lock's part of the drain. env->settled is called when it is
 * DONE, possibly before this returns. */
void lk_lock_drain(struct lk_lock *l);

/* shutdown_timeout passed: stop at once, releasing nothing more (leases expire by TTL). */
void lk_lock_abort(struct lk_lock *l);

/* Act on a renew deadline that passed while the loop was busy (LOST to the clients), so that
 * what is reported next (STATUS, HTTP, metrics) is never a tenure past its deadline (I9). */
void lk_lock_catch_up(struct lk_lock *l);

/* The event line that tells a newcomer this lock's state (LEADER, STEPDOWN or FOLLOWER), into
 * buf[cap]. Returns its length or -ENOSPC. A renew deadline that passed while the loop was busy
 * is acted on first (LOST goes to the existing clients), so a newcomer never hears a stale
 * LEADER. */
int lk_lock_current_event(struct lk_lock *l, char *buf, size_t cap);

/* Introspection. Strings are borrowed from the lock. */
const char *lk_lock_name(const struct lk_lock *l);
const char *lk_lock_backend_name(const struct lk_lock *l);
enum lk_lock_state lk_lock_state(const struct lk_lock *l);
const char *lk_lock_state_name(enum lk_lock_state s);
const char *lk_lock_after_name(enum lk_lock_after a); /* "release", "expiry", "first" */
bool lk_lock_is_leader(const struct lk_lock *l);    /* LEADER or STEPPING_DOWN */
uint64_t lk_lock_token(const struct lk_lock *l);    /* current or last tenure, 0 if none */
const char *lk_lock_holder(const struct lk_lock *l); /* identity, or "-" if unknown */
int64_t lk_lock_ttl_ms(const struct lk_lock *l);    /* proven validity left, 0 unless leader */
/* CLOCK_MONOTONIC ms at which the tenure's renew deadline passes (I8), 0 unless leader. */
int64_t lk_lock_until_mono_ms(const struct lk_lock *l);
size_t lk_lock_campaigners(const struct lk_lock *l);
/* I10: ms until a follower may start a new tenure, 0 if it is not holding off; the backend's
 * reason, borrowed, in *why when nonzero. */
int64_t lk_lock_holdoff_ms(const struct lk_lock *l, const char **why);
/* True once DONE with a tenure to report, with its outcome in *ret. */
bool lk_lock_outcome(const struct lk_lock *l, enum lk_outcome *ret);
const struct lk_lock_stats *lk_lock_stats(const struct lk_lock *l);

#endif
