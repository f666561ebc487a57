/* The daemon: one libevent loop wiring config, backends, locks, the socket server and signals,
 * and the drain that ends it (README "The drain"). */
#ifndef LK_AGENT_AGENT_H
#define LK_AGENT_AGENT_H

#include <stdbool.h>
#include <stddef.h>

#define LK_VERSION "0.1.0"

struct lk_agent;
struct lk_config;
struct lk_lock;

/* Run the agent described by cfg until its drain ends. Returns the process exit status:
 * 0 after a drain that released everything, 1 otherwise or if it could not start. */
int lk_agent_run(const struct lk_config *cfg);

/* For the socket server. */
const char *lk_agent_identity(const struct lk_agent *a);
size_t lk_agent_n_locks(const struct lk_agent *a);
struct lk_lock *lk_agent_lock(const struct lk_agent *a, size_t i);
/* Index of the lock called name, or -1. */
int lk_agent_find_lock(const struct lk_agent *a, const char *name);
bool lk_agent_draining(const struct lk_agent *a);

/* For the HTTP endpoints and metrics. */
struct lk_backend;
struct lk_metrics;
const struct lk_metrics *lk_agent_metrics(const struct lk_agent *a);
size_t lk_agent_n_backends(const struct lk_agent *a);
struct lk_backend *lk_agent_backend(const struct lk_agent *a, size_t i);
void lk_agent_client_counts(const struct lk_agent *a, size_t *campaign, size_t *watch,
                            size_t *other);
/* True once the socket listens and every backend answered, and not draining; otherwise
 * false with the reason in why[cap]. */
bool lk_agent_ready(const struct lk_agent *a, char *why, size_t cap);

/* Act on every renew deadline the loop has not got to yet (LOST first), before reporting
 * state: STATUS, /leader and metrics never show a tenure past its deadline (I9). */
void lk_agent_catch_up(struct lk_agent *a);

/* Start or join the one drain (I7). trigger says who asked, for the log. */
void lk_agent_drain(struct lk_agent *a, const char *trigger);

/* The STATUS reply's one-line JSON, at most max_len bytes: locks that do not fit are left out
 * and counted in "truncated". Returns a string the caller frees, or NULL. */
char *lk_agent_status_json(const struct lk_agent *a, size_t max_len);

#endif
