/* Prometheus text exposition. Every series of a labelled counter is written even at zero, so
 * that rate() and alerts work from the first scrape. */
#include "agent/metrics.h"

#include <errno.h>
#include <event2/buffer.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "agent/lock.h"
#include "agent/log.h"
#include "agent/status.h"
#include "locks/backend.h"
#include "proto/codec.h"

/* From 100 µs: a Redis handoff gap or release is a few hundred µs, and would otherwise sit in
 * the first bucket whatever it was. */
static const double bucket_bounds[LK_HIST_BUCKETS] = {
	0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
	1, 2.5, 5, 10, 20, 30,
};

void lk_histogram_observe(struct lk_histogram *h, double seconds)
{
	for (size_t i = 0; i < LK_HIST_BUCKETS; i++) {
		if (seconds <= bucket_bounds[i]) {
			h->counts[i]++;
			break;
		}
	}
	h->count++;
	h->sum += seconds;
}

int lk_metrics_init(struct lk_metrics *m, size_t n_locks)
{
	m->n_locks = n_locks;
	for (int w = 0; w < LK_OBSERVE__COUNT; w++) {
		m->lock_hist[w] = calloc(n_locks ? n_locks : 1, sizeof(*m->lock_hist[w]));
		if (!m->lock_hist[w])
			return -ENOMEM;
	}
	return 0;
}

/* What a lock's histogram points at once it exists but has seen nothing: it renders as zeros,
 * and costs no memory until its first observation (at 10,000 locks, three real histograms
 * each would be ~5 MiB). Never written. */
static struct lk_histogram unobserved;

void lk_metrics_observe_lock(struct lk_metrics *m, size_t i, enum lk_lock_observation what,
                             double seconds)
{
	struct lk_histogram **h;

	if (what >= LK_OBSERVE__COUNT || !m->lock_hist[what] || i >= m->n_locks)
		return;
	h = &m->lock_hist[what][i];
	if (seconds < 0) {
		if (!*h && m->n_locks <= LK_METRICS_ZERO_SERIES_MAX_LOCKS)
			*h = &unobserved;
		return;
	}
	if (!*h || *h == &unobserved) {
		struct lk_histogram *fresh = calloc(1, sizeof(*fresh));

		if (!fresh)
			return;
		*h = fresh;
	}
	lk_histogram_observe(*h, seconds);
}

void lk_metrics_release(struct lk_metrics *m)
{
	for (int w = 0; w < LK_OBSERVE__COUNT; w++) {
		for (size_t i = 0; m->lock_hist[w] && i < m->n_locks; i++)
			if (m->lock_hist[w][i] != &unobserved)
				free(m->lock_hist[w][i]);
		free(m->lock_hist[w]);
		m->lock_hist[w] = NULL;
	}
	free(m->backend_errors);
	m->backend_errors = NULL;
}

/* s with Prometheus label-value escaping (\\, \", \n). */
static int escape(struct evbuffer *out, const char *s)
{
	for (; *s; s++) {
		int rc;
		if (*s == '\\')
			rc = evbuffer_add(out, "\\\\", 2);
		else if (*s == '"')
			rc = evbuffer_add(out, "\\\"", 2);
		else if (*s == '\n')
			rc = evbuffer_add(out, "\\n", 2);
		else
			rc = evbuffer_add(out, s, 1);
		if (rc < 0)
			return -ENOMEM;
	}
	return 0;
}

static void header(struct evbuffer *out, const char *name, const char *type, const char *help)
{
	evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* name{label="value"} or name{label="value",label2="value2"} followed by a space. */
static void series(struct evbuffer *out, const char *name, const char *l1, const char *v1,
                   const char *l2, const char *v2)
{
	evbuffer_add_printf(out, "%s{%s=\"", name, l1);
	escape(out, v1);
	if (l2) {
		evbuffer_add_printf(out, "\",%s=\"", l2);
		escape(out, v2);
	}
	evbuffer_add(out, "\"} ", 3);
}

static void histogram(struct evbuffer *out, const char *name, const char *help,
                      const struct lk_histogram *h)
{
	uint64_t cum = 0;

	header(out, name, "histogram", help);
	for (size_t i = 0; i < LK_HIST_BUCKETS; i++) {
		cum += h->counts[i];
		evbuffer_add_printf(out, "%s_bucket{le=\"%g\"} %" PRIu64 "\n", name, bucket_bounds[i],
		                    cum);
	}
	evbuffer_add_printf(out, "%s_bucket{le=\"+Inf\"} %" PRIu64 "\n", name, h->count);
	evbuffer_add_printf(out, "%s_sum %.6f\n%s_count %" PRIu64 "\n", name, h->sum, name,
	                    h->count);
}

/* One histogram family with a `lock` label: the series of every lock that may observe it (see
 * struct lk_metrics). Others have none, rather than 21 zero lines per lock and scrape. */
static void lock_histograms(struct evbuffer *out, const struct lk_status *st, const char *name,
                            const char *help, enum lk_lock_observation what)
{
	struct lk_histogram *const *hs = st->metrics->lock_hist[what];
	char series_name[96], le[32];

	header(out, name, "histogram", help);
	for (size_t i = 0; hs && i < st->n_locks && i < st->metrics->n_locks; i++) {
		const struct lk_histogram *h = hs[i];
		const char *lock = lk_lock_name(st->locks[i]);
		uint64_t cum = 0;

		if (!h)
			continue;
		snprintf(series_name, sizeof(series_name), "%s_bucket", name);
		for (size_t b = 0; b < LK_HIST_BUCKETS; b++) {
			cum += h->counts[b];
			snprintf(le, sizeof(le), "%g", bucket_bounds[b]);
			series(out, series_name, "lock", lock, "le", le);
			evbuffer_add_printf(out, "%" PRIu64 "\n", cum);
		}
		series(out, series_name, "lock", lock, "le", "+Inf");
		evbuffer_add_printf(out, "%" PRIu64 "\n", h->count);
		snprintf(series_name, sizeof(series_name), "%s_sum", name);
		series(out, series_name, "lock", lock, NULL, NULL);
		evbuffer_add_printf(out, "%.6f\n", h->sum);
		snprintf(series_name, sizeof(series_name), "%s_count", name);
		series(out, series_name, "lock", lock, NULL, NULL);
		evbuffer_add_printf(out, "%" PRIu64 "\n", h->count);
	}
}

void lk_metrics_render(const struct lk_status *st, struct evbuffer *out)
{
	const struct lk_metrics *m = st->metrics;
	size_t n = st->n_locks, camp, watch, other;

	header(out, "leasekeeper_build_info", "gauge", "Version of the running agent.");
	evbuffer_add_printf(out, "leasekeeper_build_info{version=\"%s\"} 1\n", st->version);

	header(out, "leasekeeper_lock_held", "gauge",
	       "1 while this replica holds the lock (leading or stepping down), else 0.");
	for (size_t i = 0; i < n; i++) {
		const struct lk_lock *l = st->locks[i];
		series(out, "leasekeeper_lock_held", "lock", lk_lock_name(l), NULL, NULL);
		evbuffer_add_printf(out, "%d\n", lk_lock_is_leader(l) ? 1 : 0);
	}
	header(out, "leasekeeper_lock_token", "gauge",
	       "Fencing token of this replica's current or most recent tenure (0 if none).");
	for (size_t i = 0; i < n; i++) {
		const struct lk_lock *l = st->locks[i];
		series(out, "leasekeeper_lock_token", "lock", lk_lock_name(l), NULL, NULL);
		evbuffer_add_printf(out, "%" PRIu64 "\n", lk_lock_token(l));
	}
	header(out, "leasekeeper_lock_holdoff_seconds", "gauge",
	       "Time left before this replica may start a tenure of the lock, because the backend "
	       "restarted, was replaced or wiped (0 if none).");
	for (size_t i = 0; i < n; i++) {
		const struct lk_lock *l = st->locks[i];
		series(out, "leasekeeper_lock_holdoff_seconds", "lock", lk_lock_name(l), NULL, NULL);
		evbuffer_add_printf(out, "%.3f\n", (double)lk_lock_holdoff_ms(l, NULL) / 1000.0);
	}
	header(out, "leasekeeper_acquisitions_total", "counter",
	       "Tenures this replica started (LEADER sent), by what came before: a release, an "
	       "expiry, or no tenure at all.");
	for (size_t i = 0; i < n; i++) {
		const struct lk_lock *l = st->locks[i];
		for (int a = 0; a < LK_LOCK_AFTER__COUNT; a++) {
			series(out, "leasekeeper_acquisitions_total", "lock", lk_lock_name(l), "after",
			       lk_lock_after_name(a));
			evbuffer_add_printf(out, "%" PRIu64 "\n", lk_lock_stats(l)->acquired_after[a]);
		}
	}
	header(out, "leasekeeper_lock_lost_total", "counter",
	       "Tenures that ended with LOST, by reason.");
	for (size_t i = 0; i < n; i++) {
		const struct lk_lock *l = st->locks[i];
		for (int r = 0; r < LK_LOST__COUNT; r++) {
			series(out, "leasekeeper_lock_lost_total", "lock", lk_lock_name(l), "reason",
			       lk_lost_reason_name(r));
			evbuffer_add_printf(out, "%" PRIu64 "\n", lk_lock_stats(l)->lost[r]);
		}
	}
	header(out, "leasekeeper_release_total", "counter",
	       "Tenures that ended in a release attempt or a drain, by outcome.");
	for (size_t i = 0; i < n; i++) {
		const struct lk_lock *l = st->locks[i];
		for (int o = 0; o < LK_OUTCOME__COUNT; o++) {
			series(out, "leasekeeper_release_total", "lock", lk_lock_name(l), "outcome",
			       lk_outcome_name(o));
			evbuffer_add_printf(out, "%" PRIu64 "\n", lk_lock_stats(l)->releases[o]);
		}
	}
	lock_histograms(out, st, "leasekeeper_release_duration_seconds",
	                "Time from starting a release to the backend's answer, by lock.",
	                LK_OBSERVE_RELEASE);
	histogram(out, "leasekeeper_shutdown_duration_seconds",
	          "Time from the start of the drain to its end.", &m->shutdown_duration);
	lock_histograms(out, st, "leasekeeper_stepdown_wait_seconds",
	                "Time from STEPDOWN to the last ACK (or the stepdown timeout), by lock.",
	                LK_OBSERVE_STEPDOWN);
	lock_histograms(out, st, "leasekeeper_handoff_gap_seconds",
	                "Time from the previous holder's release to this replica's acquisition "
	                "(Redis: the server's clock; etcd: from the watch event, a lower bound).",
	                LK_OBSERVE_HANDOFF_GAP);
	header(out, "leasekeeper_backend_up", "gauge",
	       "1 while the backend has answered since its last (re)connect, as /readyz counts it.");
	for (size_t i = 0; i < st->n_backends; i++) {
		const struct lk_backend *b = st->backends[i];

		series(out, "leasekeeper_backend_up", "backend", b->name, NULL, NULL);
		evbuffer_add_printf(out, "%d\n", b->ops->ready(b) ? 1 : 0);
	}
	header(out, "leasekeeper_backend_errors_total", "counter",
	       "Failed backend requests and connection failures, by backend.");
	for (size_t i = 0; i < st->n_backends; i++) {
		series(out, "leasekeeper_backend_errors_total", "backend", st->backends[i]->name,
		       NULL, NULL);
		evbuffer_add_printf(out, "%" PRIu64 "\n", m->backend_errors[i]);
	}
	st->client_counts(st->ctx, &camp, &watch, &other);
	header(out, "leasekeeper_clients", "gauge",
	       "Connected socket clients: campaigning for a lock, only watching, other.");
	evbuffer_add_printf(out, "leasekeeper_clients{kind=\"campaign\"} %zu\n", camp);
	evbuffer_add_printf(out, "leasekeeper_clients{kind=\"watch\"} %zu\n", watch);
	evbuffer_add_printf(out, "leasekeeper_clients{kind=\"other\"} %zu\n", other);
	header(out, "leasekeeper_log_lines_dropped_total", "counter",
	       "Log lines dropped because stderr was not read fast enough (the queue was full).");
	evbuffer_add_printf(out, "leasekeeper_log_lines_dropped_total %" PRIu64 "\n",
	                    lk_log_dropped());
	header(out, "leasekeeper_graceful_exit_failed_total", "counter",
	       "Drains that ended with an expired or failed lock, or past shutdown_timeout.");
	evbuffer_add_printf(out, "leasekeeper_graceful_exit_failed_total %" PRIu64 "\n",
	                    m->graceful_exit_failed);
}
