/* Prometheus rendering (agent/metrics.c) and the agent's other reports (agent/status.c) from a
 * hand-made status view: no agent, no sockets. */
#include <check.h>
#include <event2/buffer.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "agent/config.h"
#include "agent/lock.h"
#include "agent/metrics.h"
#include "agent/status.h"
#include "locks/backend.h"

static bool odd_ready;

static bool main_is_ready(const struct lk_backend *b) { return true; }
static bool odd_is_ready(const struct lk_backend *b) { return odd_ready; }

static const char *main_server(const struct lk_backend *b) { return "10.0.0.1:6379"; }

static const struct lk_backend_ops main_ops = { .type = "redis", .ready = main_is_ready,
                                                .server = main_server };
/* Without a server op: STATUS says "". */
static const struct lk_backend_ops odd_ops = { .type = "etcd", .ready = odd_is_ready };
static char name_main[] = "main";
static char name_odd[] = "we\"ird\\";
static struct lk_backend b_main = { .ops = &main_ops, .name = name_main };
static struct lk_backend b_odd = { .ops = &odd_ops, .name = name_odd };
static struct lk_backend *const backends[] = { &b_main, &b_odd };
static uint64_t backend_errors[2];
static struct lk_metrics metrics;

static void client_counts(void *ctx, size_t *campaign, size_t *watch, size_t *other)
{
	*campaign = 3;
	*watch = 2;
	*other = 1;
}

static bool draining;

static bool is_draining(void *ctx) { return draining; }

static json_t *clients_json(void *ctx)
{
	return json_pack("{s:i}", "connected", 6);
}

static const struct lk_status status = {
	.identity = "pod-a", .version = "9.9.9", .backends = backends, .n_backends = 2,
	.metrics = &metrics, .draining = is_draining, .client_counts = client_counts,
	.clients_json = clients_json,
};

/* Two real locks on a backend that does nothing, for the per-lock series: the lock only needs
 * a key and timers to exist, and nothing here makes it act. */
static int dummy;

static struct lk_backend_key *fake_key_new(struct lk_backend *b, const char *key,
                                           const char *identity, lk_backend_notify_fn *notify,
                                           void *arg)
{
	return (struct lk_backend_key *)&dummy;
}

static void fake_key_free(struct lk_backend_key *k) { }
static void *fake_timer_new(void *ctx, lk_timer_fn *fn, void *arg) { return &dummy; }
static void fake_timer_free(void *ctx, void *timer) { }

static const struct lk_backend_ops lock_ops = {
	.key_new = fake_key_new, .key_free = fake_key_free, .ready = main_is_ready,
};
static struct lk_backend b_locks = { .ops = &lock_ops, .name = name_main };
static const struct lk_lock_env lock_env = {
	.timer_new = fake_timer_new, .timer_free = fake_timer_free,
};
static char lock_a[] = "alpha", lock_b[] = "beta", key_a[] = "k/a", key_b[] = "k/b";
static const struct lk_config_lock lock_cfgs[2] = {
	{ .name = lock_a, .key = key_a }, { .name = lock_b, .key = key_b },
};
static struct lk_lock *locks[2];
static struct lk_status status_locks;

/* The whole exposition of st as a string the caller frees. */
static char *render_of(const struct lk_status *st)
{
	struct evbuffer *b = evbuffer_new();
	size_t n;
	char *s;

	ck_assert_ptr_nonnull(b);
	lk_metrics_render(st, b);
	n = evbuffer_get_length(b);
	s = malloc(n + 1);
	ck_assert_ptr_nonnull(s);
	evbuffer_remove(b, s, n);
	s[n] = '\0';
	evbuffer_free(b);
	return s;
}

static char *render(void)
{
	return render_of(&status);
}

static void setup(void)
{
	memset(&metrics, 0, sizeof(metrics));
	odd_ready = false;
	draining = false;
	memset(backend_errors, 0, sizeof(backend_errors));
	metrics.backend_errors = backend_errors;
}

static void setup_locks(void)
{
	setup();
	for (int i = 0; i < 2; i++) {
		locks[i] = lk_lock_new(&lock_cfgs[i], &b_locks, "pod-a", &lock_env);
		ck_assert_ptr_nonnull(locks[i]);
	}
	ck_assert_int_eq(lk_metrics_init(&metrics, 2), 0);
	status_locks = status;
	status_locks.locks = locks;
	status_locks.n_locks = 2;
}

static void teardown_locks(void)
{
	for (int i = 0; i < 2; i++)
		locks[i] = lk_lock_free(locks[i]);
	metrics.backend_errors = NULL; /* static, not the metrics' to free */
	lk_metrics_release(&metrics);
}

#define HAS(text, line) ck_assert_msg(strstr((text), (line)), "missing: %s", (line))
#define HASNT(text, line) ck_assert_msg(!strstr((text), (line)), "unexpected: %s", (line))

START_TEST(build_info_carries_the_version)
{
	char *s = render();

	HAS(s, "# TYPE leasekeeper_build_info gauge\n");
	HAS(s, "leasekeeper_build_info{version=\"9.9.9\"} 1\n");
	free(s);
}
END_TEST

START_TEST(histogram_buckets_are_cumulative_with_sum_and_count)
{
	char *s;

	lk_histogram_observe(&metrics.shutdown_duration, 0.002);  /* le 0.0025 */
	lk_histogram_observe(&metrics.shutdown_duration, 0.02);   /* le 0.025 */
	lk_histogram_observe(&metrics.shutdown_duration, 100);    /* only +Inf */
	s = render();
	HAS(s, "# TYPE leasekeeper_shutdown_duration_seconds histogram\n");
	HAS(s, "leasekeeper_shutdown_duration_seconds_bucket{le=\"0.0001\"} 0\n");
	HAS(s, "leasekeeper_shutdown_duration_seconds_bucket{le=\"0.00025\"} 0\n");
	HAS(s, "leasekeeper_shutdown_duration_seconds_bucket{le=\"0.001\"} 0\n");
	HAS(s, "leasekeeper_shutdown_duration_seconds_bucket{le=\"0.0025\"} 1\n");
	HAS(s, "leasekeeper_shutdown_duration_seconds_bucket{le=\"0.01\"} 1\n");
	HAS(s, "leasekeeper_shutdown_duration_seconds_bucket{le=\"0.025\"} 2\n");
	HAS(s, "leasekeeper_shutdown_duration_seconds_bucket{le=\"30\"} 2\n");
	HAS(s, "leasekeeper_shutdown_duration_seconds_bucket{le=\"+Inf\"} 3\n");
	HAS(s, "leasekeeper_shutdown_duration_seconds_sum 100.022000\n");
	HAS(s, "leasekeeper_shutdown_duration_seconds_count 3\n");
	free(s);
}
END_TEST

/* Per-lock histograms carry the lock's name and exist once announced or observed: a lock that
 * never led has no release series, and nothing was allocated for it. */
START_TEST(per_lock_histograms_carry_the_lock_label_from_their_first_observation)
{
	char *s = render_of(&status_locks);

	HAS(s, "# TYPE leasekeeper_release_duration_seconds histogram\n");
	HAS(s, "# TYPE leasekeeper_handoff_gap_seconds histogram\n");
	HASNT(s, "leasekeeper_release_duration_seconds_bucket");
	HASNT(s, "leasekeeper_handoff_gap_seconds_count");
	free(s);
	for (int w = 0; w < LK_OBSERVE__COUNT; w++)
		for (int i = 0; i < 2; i++)
			ck_assert_ptr_null(metrics.lock_hist[w][i]);

	/* Announced (the lock campaigns): the series is there, at zero. */
	lk_metrics_observe_lock(&metrics, 1, LK_OBSERVE_HANDOFF_GAP, -1);
	s = render_of(&status_locks);
	HAS(s, "leasekeeper_handoff_gap_seconds_bucket{lock=\"beta\",le=\"+Inf\"} 0\n");
	HAS(s, "leasekeeper_handoff_gap_seconds_count{lock=\"beta\"} 0\n");
	HASNT(s, "leasekeeper_handoff_gap_seconds_count{lock=\"alpha\"}");
	free(s);
	/* Announced locks share one zero histogram: no memory until the first observation. */
	lk_metrics_observe_lock(&metrics, 0, LK_OBSERVE_HANDOFF_GAP, -1);
	ck_assert_ptr_nonnull(metrics.lock_hist[LK_OBSERVE_HANDOFF_GAP][0]);
	ck_assert_ptr_eq(metrics.lock_hist[LK_OBSERVE_HANDOFF_GAP][0],
	                 metrics.lock_hist[LK_OBSERVE_HANDOFF_GAP][1]);
	lk_metrics_observe_lock(&metrics, 0, LK_OBSERVE_RELEASE, 0.002);
	lk_metrics_observe_lock(&metrics, 0, LK_OBSERVE_RELEASE, 0.02);
	lk_metrics_observe_lock(&metrics, 0, LK_OBSERVE_RELEASE, 100);
	lk_metrics_observe_lock(&metrics, 1, LK_OBSERVE_HANDOFF_GAP, 0.0004);
	lk_metrics_observe_lock(&metrics, 2, LK_OBSERVE_HANDOFF_GAP, 1); /* no such lock */
	ck_assert_ptr_null(metrics.lock_hist[LK_OBSERVE_RELEASE][1]);
	ck_assert_ptr_null(metrics.lock_hist[LK_OBSERVE_STEPDOWN][0]);
	s = render_of(&status_locks);
	HAS(s, "leasekeeper_release_duration_seconds_bucket{lock=\"alpha\",le=\"0.001\"} 0\n");
	HAS(s, "leasekeeper_release_duration_seconds_bucket{lock=\"alpha\",le=\"0.0025\"} 1\n");
	HAS(s, "leasekeeper_release_duration_seconds_bucket{lock=\"alpha\",le=\"0.025\"} 2\n");
	HAS(s, "leasekeeper_release_duration_seconds_bucket{lock=\"alpha\",le=\"+Inf\"} 3\n");
	HAS(s, "leasekeeper_release_duration_seconds_sum{lock=\"alpha\"} 100.022000\n");
	HAS(s, "leasekeeper_release_duration_seconds_count{lock=\"alpha\"} 3\n");
	HASNT(s, "leasekeeper_release_duration_seconds_count{lock=\"beta\"}");
	HASNT(s, "leasekeeper_stepdown_wait_seconds_count{");
	HAS(s, "leasekeeper_handoff_gap_seconds_bucket{lock=\"beta\",le=\"0.001\"} 1\n");
	HAS(s, "leasekeeper_handoff_gap_seconds_sum{lock=\"beta\"} 0.000400\n");
	HAS(s, "leasekeeper_handoff_gap_seconds_count{lock=\"beta\"} 1\n");
	HAS(s, "leasekeeper_handoff_gap_seconds_count{lock=\"alpha\"} 0\n");
	/* The drain's histogram stays agent-wide. */
	HAS(s, "leasekeeper_shutdown_duration_seconds_count 0\n");
	free(s);
}
END_TEST

/* Every lock has its three acquisition series from the first scrape, at zero. */
START_TEST(acquisitions_have_a_series_per_lock_and_kind_of_handoff)
{
	char *s = render_of(&status_locks);

	HAS(s, "leasekeeper_acquisitions_total{lock=\"alpha\",after=\"release\"} 0\n");
	HAS(s, "leasekeeper_acquisitions_total{lock=\"alpha\",after=\"expiry\"} 0\n");
	HAS(s, "leasekeeper_acquisitions_total{lock=\"alpha\",after=\"first\"} 0\n");
	HAS(s, "leasekeeper_acquisitions_total{lock=\"beta\",after=\"first\"} 0\n");
	HASNT(s, "leasekeeper_acquisitions_total{lock=\"alpha\"} ");
	free(s);
}
END_TEST

START_TEST(backend_errors_have_one_series_per_backend_with_escaped_labels)
{
	char *s;

	backend_errors[1] = 7;
	s = render();
	HAS(s, "leasekeeper_backend_errors_total{backend=\"main\"} 0\n");
	HAS(s, "leasekeeper_backend_errors_total{backend=\"we\\\"ird\\\\\"} 7\n");
	free(s);
}
END_TEST

START_TEST(clients_and_counters_are_written_even_at_zero)
{
	char *s;

	metrics.graceful_exit_failed = 2;
	s = render();
	HAS(s, "leasekeeper_clients{kind=\"campaign\"} 3\n");
	HAS(s, "leasekeeper_clients{kind=\"watch\"} 2\n");
	HAS(s, "leasekeeper_clients{kind=\"other\"} 1\n");
	HAS(s, "leasekeeper_graceful_exit_failed_total 2\n");
	HAS(s, "# TYPE leasekeeper_log_lines_dropped_total counter\n");
	/* No locks: the lock families are declared, with no series. */
	HAS(s, "# TYPE leasekeeper_lock_held gauge\n# HELP leasekeeper_lock_token");
	free(s);
}
END_TEST

START_TEST(ready_waits_for_every_backend_and_ends_with_the_drain)
{
	char why[128];

	ck_assert(!lk_status_ready(&status, why, sizeof(why)));
	ck_assert_str_eq(why, "backend we\"ird\\ has not answered yet");
	odd_ready = true;
	ck_assert(lk_status_ready(&status, why, sizeof(why)));
	draining = true;
	ck_assert(!lk_status_ready(&status, why, sizeof(why)));
	ck_assert_str_eq(why, "draining");
}
END_TEST

START_TEST(status_json_has_identity_draining_clients_backends_and_locks)
{
	char *s = lk_status_json(&status, 4096);

	ck_assert_str_eq(s, "{\"identity\":\"pod-a\",\"draining\":false,"
	                    "\"clients\":{\"connected\":6},\"backends\":["
	                    "{\"name\":\"main\",\"type\":\"redis\",\"ready\":true,"
	                    "\"server\":\"10.0.0.1:6379\"},"
	                    "{\"name\":\"we\\\"ird\\\\\",\"type\":\"etcd\",\"ready\":false,"
	                    "\"server\":\"\"}],\"locks\":[]}");
	free(s);
	ck_assert_int_eq(lk_status_find_lock(&status, "x"), -1);
}
END_TEST

/* Past LK_METRICS_ZERO_SERIES_MAX_LOCKS locks, a histogram exists only from its first
 * observation: 10,000 campaigning locks at zero would be a 50 MB scrape. */
START_TEST(many_locks_expose_histograms_only_once_observed)
{
	struct lk_metrics many = { 0 };
	size_t n = LK_METRICS_ZERO_SERIES_MAX_LOCKS + 1;

	ck_assert_int_eq(lk_metrics_init(&many, n), 0);
	lk_metrics_observe_lock(&many, 0, LK_OBSERVE_HANDOFF_GAP, -1);
	ck_assert_ptr_null(many.lock_hist[LK_OBSERVE_HANDOFF_GAP][0]);
	lk_metrics_observe_lock(&many, n - 1, LK_OBSERVE_HANDOFF_GAP, 0.0003);
	ck_assert_ptr_nonnull(many.lock_hist[LK_OBSERVE_HANDOFF_GAP][n - 1]);
	ck_assert_uint_eq(many.lock_hist[LK_OBSERVE_HANDOFF_GAP][n - 1]->count, 1);
	ck_assert_uint_eq(many.lock_hist[LK_OBSERVE_HANDOFF_GAP][n - 1]->counts[2], 1); /* le 0.0005 */
	lk_metrics_release(&many);
	/* At the limit, still at zero from the announcement. */
	ck_assert_int_eq(lk_metrics_init(&many, n - 1), 0);
	lk_metrics_observe_lock(&many, 0, LK_OBSERVE_HANDOFF_GAP, -1);
	ck_assert_ptr_nonnull(many.lock_hist[LK_OBSERVE_HANDOFF_GAP][0]);
	ck_assert_uint_eq(many.lock_hist[LK_OBSERVE_HANDOFF_GAP][0]->count, 0);
	lk_metrics_release(&many);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("metrics");
	TCase *t = tcase_create("render");
	SRunner *sr;
	int failed;

	tcase_add_checked_fixture(t, setup, NULL);
	tcase_add_test(t, build_info_carries_the_version);
	tcase_add_test(t, histogram_buckets_are_cumulative_with_sum_and_count);
	tcase_add_test(t, backend_errors_have_one_series_per_backend_with_escaped_labels);
	tcase_add_test(t, clients_and_counters_are_written_even_at_zero);
	tcase_add_test(t, ready_waits_for_every_backend_and_ends_with_the_drain);
	tcase_add_test(t, status_json_has_identity_draining_clients_backends_and_locks);
	suite_add_tcase(s, t);
	t = tcase_create("per_lock");
	tcase_add_checked_fixture(t, setup_locks, teardown_locks);
	tcase_add_test(t, per_lock_histograms_carry_the_lock_label_from_their_first_observation);
	tcase_add_test(t, many_locks_expose_histograms_only_once_observed);
	tcase_add_test(t, acquisitions_have_a_series_per_lock_and_kind_of_handoff);
	suite_add_tcase(s, t);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
