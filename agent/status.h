/* What the agent reports about itself (STATUS, /readyz, /leader/<lock>, /metrics), read through
 * one view, struct lk_status, that the agent fills once at start. The modules that report
 * (session.c, http.c, metrics.c) reach the agent only through it, never through agent.h, as
 * lock.c reaches its host only through struct lk_lock_env. A lock's JSON is written here only.
 */
#ifndef LK_AGENT_STATUS_H
#define LK_AGENT_STATUS_H

#include <stdbool.h>
#include <stddef.h>

struct json_t;
struct lk_backend;
struct lk_lock;
struct lk_metrics;

/* The agent as the reports see it. Everything is borrowed from the agent and lives as long as
 * it; the arrays do not change once the agent has started. Hooks get ctx first. */
struct lk_status {
	void *ctx;
	const char *identity;
	const char *version;                /* the agent's, for HELLO and leasekeeper_build_info */
	struct lk_lock *const *locks;
	size_t n_locks;
	struct lk_backend *const *backends;
	size_t n_backends;
	const struct lk_metrics *metrics;
	/* The lock indexes sorted by name (lk_status_index_new()), so that a name is found in
	 * O(log n) on every protocol line and HTTP request; NULL: a linear scan (tests). */
	const size_t *by_name;
	bool (*draining)(void *ctx);
	/* Connected clients by kind: campaigning on any lock, watching, other. */
	void (*client_counts)(void *ctx, size_t *campaign, size_t *watch, size_t *other);
	/* STATUS's "clients" object, a new reference; NULL leaves it out. May be NULL. */
	struct json_t *(*clients_json)(void *ctx);
};

/* Index of the lock called name, or -1. */
int lk_status_find_lock(const struct lk_status *st, const char *name);

/* st's lock indexes sorted by lock name, for st->by_name: a new array the caller frees, or NULL
 * (out of memory). Lock names are unique (the config checks). */
size_t *lk_status_index_new(const struct lk_status *st);

/* Act on every renew deadline the loop has not got to yet (LOST first), before reporting
 * state: STATUS, /leader and metrics never show a tenure past its deadline (I9). */
void lk_status_catch_up(const struct lk_status *st);

/* True once every backend answered, and not draining; otherwise false with the reason in
 * why[cap]. */
bool lk_status_ready(const struct lk_status *st, char *why, size_t cap);

/* Both forms of STATUS catch up (lk_lock_catch_up()) each lock they report, and only those.
 *
 * The STATUS reply's one-line JSON, at most max_len bytes: locks that do not fit are left out
 * and counted in "truncated", and "next_after" names the last lock that fitted (the cursor of
 * STATUS after=<lock>). Returns a string the caller frees, or NULL. */
char *lk_status_json(const struct lk_status *st, size_t max_len);

/* One page of STATUS (proto/PROTOCOL.md, "STATUS with many locks"): identity, draining and the
 * locks from index first on (config order), as many as fit in max_len bytes (at least one if
 * any is left, or NULL when even one does not fit), with "truncated" and "next_after" as above
 * when some are left; no "clients". only: just the lock at first. Returns a string the caller
 * frees, or NULL. */
char *lk_status_json_page(const struct lk_status *st, size_t first, bool only, size_t max_len);

/* /leader/<lock>'s JSON: the lock, and its token and deadline only while it leads (not while
 * stepping down: routing follows LEADER). *leads says which. A new reference, or NULL. */
struct json_t *lk_status_leader_json(const struct lk_lock *l, bool *leads);

#endif
