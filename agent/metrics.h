/* Prometheus metrics (docs/metrics.md): the agent's own counters and histograms,
 * and the text
 * exposition of everything, lock and client state included. */
#ifndef LK_AGENT_METRICS_H
#define LK_AGENT_METRICS_H

#include <stddef.h>
#include <stdint.h>

struct evbuffer;
struct lk_status;

/* Buckets from a millisecond to half a minute: releases and handoffs take milliseconds, a
 * stepdown wait or a whole drain takes up to shutdown_timeout. */
#define LK_HIST_BUCKETS 15

struct lk_histogram {
	uint64_t counts[LK_HIST_BUCKETS]; /* cumulative is computed when rendering */
	uint64_t count;
	double sum;
};

struct lk_metrics {
	struct lk_histogram release_duration;
	struct lk_histogram shutdown_duration;
	struct lk_histogram stepdown_wait;
	uint64_t graceful_exit_failed;
	uint64_t *backend_errors;        /* one per configured backend */
};

/* Count one observation of `seconds`. */
void lk_histogram_observe(struct lk_histogram *h, double seconds);

/* Append the whole exposition (text format 0.0.4) of the agent that st shows to out. An
 * allocation that fails only shortens the scrape; Prometheus then reports a parse error for it.
 */
void lk_metrics_render(const struct lk_status *st, struct evbuffer *out);

#endif
