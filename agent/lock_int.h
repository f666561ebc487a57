/* What lock.c (the transitions) and lock_api.c (the lock's life, its clients, what it reports)
 * share. For those two files only. */
#ifndef LK_AGENT_LOCK_INT_H
#define LK_AGENT_LOCK_INT_H

#include <stdbool.h>
#include <stdint.h>

#include "agent/lock.h"

#define NS_PER_MS 1000000LL

struct lk_reply;

enum lk_lock_input {
	IN_START,         /* the agent is up: campaign now if the mode is `always` */
	IN_CAMPAIGN,      /* a campaign client arrived */
	IN_LEAVE,         /* a campaign client left */
	IN_EVICT,         /* the agent cut a campaign client off: it may still be working */
	IN_ACK,           /* a campaign client ACKed the current tenure */
	IN_DRAIN,
	IN_ABORT,         /* shutdown_timeout: stop now */
	IN_NOTIFY,        /* backend: the key may be free */
	IN_RECONNECTED,   /* backend: a new connection is up (maybe to another server instance) */
	IN_ACQUIRED,      /* acquire reply, any status */
	IN_RENEWED,       /* renew reply, any status, for the current tenure or an ended one */
	IN_RELEASED,      /* release reply, any status, for the current tenure or an ended one */
	IN_TIMER_RETRY,
	IN_TIMER_RENEW,
	IN_TIMER_DEADLINE,
	IN_TIMER_PHASE,
	IN__COUNT,
};

/* For the transition log. */
struct member {
	void *client;
	uint64_t acked;            /* token this client ACKed, 0 if none */
};

struct lk_lock {
	const struct lk_config_lock *cfg;
	struct lk_backend *backend;
	struct lk_backend_key *key;
	const struct lk_lock_env *env;
	const char *identity;      /* the agent's, shared by its locks */

	enum lk_lock_state state;  /* written by set_state() only */
	enum lk_lock_input input;  /* the input lk_lock_step() is handling, for the log */
	bool draining;
	bool has_outcome;
	enum lk_outcome outcome;

	struct member *members;
	size_t n_members, cap_members;

	/* The current (or most recent) tenure. */
	uint64_t token;
	int64_t expires_ns;        /* sent + granted ttl of the last successful acquire/renew */
	int64_t deadline_ns;       /* sent + renew_deadline of the same (I4) */
	int64_t ttl_ms;            /* granted ttl, what renewals ask for */

	/* One request of each kind at most is in flight; replies for a tenure that ended are
	 * recognised by comparing the token they were sent for. A renewal or release wanted for a
	 * new tenure while an old one's request is still out is sent when that one returns
	 * (renew_again, release_again: meaningful only while renewing, releasing). */
	bool acquiring, renewing, releasing;
	bool renew_again, release_again;
	uint64_t renew_token, release_token;
	bool notified;             /* a notice came while an acquire was in flight */
	unsigned renew_failures, release_failures;

	/* I10: no new tenure before this time (0: none), and why, as the backend said. */
	int64_t holdoff_until_ns;
	char *holdoff_why;

	/* Text is kept on the heap, sized to what it holds: fixed buffers for the longest holder
	 * were 700 of a lock's 1,000 bytes, at 10,000 locks most of the agent's memory. */
	char *holder;              /* last known holder, NULL if none ("-" to the apps) */
	char *announced_holder;    /* last FOLLOWER holder sent (NULL: "-"), to send changes only */
	bool announce_due;         /* the next FOLLOWER goes out even if the holder is the same */

	int64_t stepdown_start_ns, release_start_ns;
	struct lk_lock_stats stats;
	void *timers[LK_TIMER__COUNT];
};

/* Set *dst to a heap copy of src (NULL: none), freeing the old text; a no-op if unchanged. */
void lk_lock_set_text(char **dst, const char *src);

/* A tenure started (reply r, acquire OK): count it by what came before and observe the handoff
 * gap; *gap_ns is the gap, or -1 when the backend could not tell (lock_api.c). */
enum lk_lock_after lk_lock_count_acquisition(struct lk_lock *l, const struct lk_reply *r,
                                             int64_t *gap_ns);

/* Feed the lock one input: the only way in to its state machine (lock.c). */
void lk_lock_step(struct lk_lock *l, enum lk_lock_input in, const struct lk_reply *r);

static inline int64_t now_ns(const struct lk_lock *l)
{
	return l->env->now_ns(l->env->ctx);
}

static inline int64_t ms_between(int64_t from_ns, int64_t to_ns)
{
	return (to_ns - from_ns) / NS_PER_MS;
}

#endif
