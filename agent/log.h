/* The agent's log: one line per event on stderr, as text or JSON (docs/cli.md, "Logs").
 *
 * Fields are typed so that JSON gets numbers as numbers. Usage, with no commas between fields:
 *
 *     LK_LOG(LK_INFO, "lock acquired", LKF_STR("lock", name) LKF_U64("token", tok));
 *
 * Secrets never reach this module: callers pass file paths, never file contents.
 */
#ifndef LK_AGENT_LOG_H
#define LK_AGENT_LOG_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "agent/config.h"

enum lk_log_level { LK_DEBUG, LK_INFO, LK_WARN, LK_ERROR };

enum lk_logf_type { LK_LOGF_END, LK_LOGF_STR, LK_LOGF_I64, LK_LOGF_U64, LK_LOGF_BOOL, LK_LOGF_MS };

struct lk_logf {
	const char *key;
	enum lk_logf_type type;
	const char *s;
	int64_t i;
	uint64_t u;
};

#define LKF_STR(k, v)  { .key = (k), .type = LK_LOGF_STR, .s = (v) },
#define LKF_I64(k, v)  { .key = (k), .type = LK_LOGF_I64, .i = (int64_t)(v) },
#define LKF_U64(k, v)  { .key = (k), .type = LK_LOGF_U64, .u = (uint64_t)(v) },
#define LKF_BOOL(k, v) { .key = (k), .type = LK_LOGF_BOOL, .i = !!(v) },
/* A duration in ns written as ms with three decimals (0.412); negative: unknown, "-" (null). */
#define LKF_MS(k, ns)  { .key = (k), .type = LK_LOGF_MS, .i = (int64_t)(ns) },

#define LK_LOG(level, msg, ...) \
	lk_log_fields((level), (msg), (const struct lk_logf[]){ __VA_ARGS__ { .type = LK_LOGF_END } })

struct event_base;

/* Choose the format and the lowest level written. out NULL (the default): stderr, never
 * blocking, behind a bounded queue (I9); otherwise written to out directly (tests). */
void lk_log_setup(enum lk_log_format fmt, enum lk_log_level min_level, FILE *out);

/* Drain the stderr queue from base's loop whenever stderr becomes writable. 0 or -ENOMEM. */
int lk_log_attach(struct event_base *base);

/* The loop is ending: stop using it, and wait at most timeout_ms for the queue to drain. */
void lk_log_detach(int timeout_ms);

/* Lines dropped because the queue was full (leasekeeper_log_lines_dropped_total). */
uint64_t lk_log_dropped(void);

/* A kind of log line that others can cause at will (a local process that connects in a loop):
 * written once per LK_LOG_RATE_MS at most, each saying how many were not written since. */
#define LK_LOG_RATE_MS 1000

struct lk_log_rate {
	int64_t next_ms;           /* CLOCK_MONOTONIC */
	uint64_t skipped;
};

/* True when a line of this kind may be written now; *skipped is then how many were not. */
bool lk_log_rate_due(struct lk_log_rate *r, uint64_t *skipped);

/* Write one line: msg plus the fields up to the LK_LOGF_END entry. */
void lk_log_fields(enum lk_log_level level, const char *msg, const struct lk_logf *fields);

#endif
