/* The daemon: one libevent loop wiring config, backends, locks, the socket server and signals,
 * and the drain that ends it (README "The drain"). */
#ifndef LK_AGENT_AGENT_H
#define LK_AGENT_AGENT_H

#define LK_VERSION "0.1.0"

struct lk_config;

/* Run the agent described by cfg until its drain ends. Returns the process exit status:
 * 0 after a drain that released everything, 1 otherwise or if it could not start. */
int lk_agent_run(const struct lk_config *cfg);

#endif
