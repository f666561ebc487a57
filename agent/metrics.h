/* Prometheus metrics (docs/metrics.md): the agent's own counters and histograms,
 * and the text
 * exposition of everything, lock and client state included. */
#ifndef LK_AGENT_METRICS_H
#define LK_AGENT_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "agent/lock.h"

struct evbuffer;
struct lk_status;

/* Up to this many locks, a lock's histograms are exposed at zero from its first campaign or
 * tenure, so that rate() sees their first observation; beyond, from that first observation
 * only: at zero, 10,000 campaigning locks made every scrape 50 MB (630,000 more series), and
 * 1,000 kept 4.7 MB of heap for it. */
#define LK_METRICS_ZERO_SERIES_MAX_LOCKS 100

/* Buckets from 100 µs to half a minute: Redis releases and handoffs take a few hundred µs, a
 * stepdown wait or a whole drain takes up to shutdown_timeout. */
#define LK_HIST_BUCKETS 18

struct lk_histogram {
	uint64_t counts[LK_HIST_BUCKETS]; /* cumulative is computed when rendering */
	uint64_t count;
	double sum;
};

struct lk_metrics {
	struct lk_histogram shutdown_duration;
	/* Per lock (label `lock`), by kind: lock_hist[what][lock index], exposed (at zero) from
	 * when the lock first may observe it (it campaigns: handoff gap; it leads: release,
	 * stepdown; with more than LK_METRICS_ZERO_SERIES_MAX_LOCKS locks, from its first
	 * observation), allocated at its first observation. An agent with 10,000 locks keeps 8 bytes
	 * per lock and kind until then, and a scrape grows only with the locks this replica
	 * campaigned for, not with every one. */
	struct lk_histogram **lock_hist[LK_OBSERVE__COUNT];
	size_t n_locks;
	uint64_t graceful_exit_failed;
	uint64_t *backend_errors;        /* one per configured backend */
};

/* Count one observation of `seconds`. */
void lk_histogram_observe(struct lk_histogram *h, double seconds);

/* Allocate m's per-lock arrays for n_locks locks: 0 or -ENOMEM. */
int lk_metrics_init(struct lk_metrics *m, size_t n_locks);

/* Count one observation of lock `i` (its index in the agent's lock array); seconds < 0: only
 * make the series exist, at zero (up to LK_METRICS_ZERO_SERIES_MAX_LOCKS locks). An
 * allocation that fails loses the observation, and the next one tries again. */
void lk_metrics_observe_lock(struct lk_metrics *m, size_t i, enum lk_lock_observation what,
                             double seconds);

/* Free what init and observe_lock allocated; the struct itself is the caller's. */
void lk_metrics_release(struct lk_metrics *m);

/* Append the whole exposition (text format 0.0.4) of the agent that st shows to out. An
 * allocation that fails only shortens the scrape; Prometheus then reports a parse error for it.
 */
void lk_metrics_render(const struct lk_status *st, struct evbuffer *out);

#endif
