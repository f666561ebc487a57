"""HTTP endpoints on http_listen (SPEC section 7): health, readiness, leader routing, metrics."""

import json
import re
import shutil
import signal
import subprocess
import time
import unittest
import urllib.error
import urllib.request

from harness import LKTestCase, free_port, lock_config, wait_until


def get(url, timeout=5):
    """(status, content type, body) of a GET, whatever the status."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read().decode()


def metric(text, name, **labels):
    """The value of one series in a Prometheus text exposition, or None."""
    want = ",".join('%s="%s"' % kv for kv in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$', line)
        if not m or m.group(1) != name:
            continue
        got = ",".join(sorted((m.group(2) or "").split(","))) if m.group(2) else ""
        if got == want:
            return float(m.group(3))
    return None


class HttpTest(LKTestCase):
    def setUp(self):
        super().setUp()
        self.redis = self.start_redis()
        self.port = free_port()
        self.base = "http://127.0.0.1:%d" % self.port
        self.locks = [lock_config("x", ttl="3s", retry_interval="10s", stepdown_timeout="5s"),
                      lock_config("y", ttl="3s")]
        self.agent = self.start_agent("pod-a", self.redis, locks=self.locks,
                                      http_listen="127.0.0.1:%d" % self.port)

    def test_healthz_and_readyz_answer_200_once_redis_answered(self):
        self.assertEqual(get(self.base + "/healthz")[0], 200)
        wait_until(lambda: get(self.base + "/readyz")[0] == 200, what="/readyz to be 200")

    def test_readyz_is_503_while_the_backend_is_down(self):
        wait_until(lambda: get(self.base + "/readyz")[0] == 200, what="/readyz to be 200")
        self.redis.stop()
        wait_until(lambda: get(self.base + "/readyz")[0] == 503, what="/readyz to be 503")
        status, _, body = get(self.base + "/readyz")
        self.assertIn("main", body)
        self.assertEqual(get(self.base + "/healthz")[0], 200, "the loop still runs")

    def test_leader_endpoint_follows_leadership(self):
        status, ctype, body = get(self.base + "/leader/x")
        self.assertEqual(status, 503)
        self.assertEqual(json.loads(body)["lock"], "x")
        app, lead = self.leader_app(self.agent, "x")
        status, ctype, body = get(self.base + "/leader/x")
        self.assertEqual(status, 200)
        self.assertIn("application/json", ctype)
        doc = json.loads(body)
        until = doc.pop("until_mono_ms")
        self.assertEqual(doc, {"lock": "x", "token": lead.token, "holder": "pod-a"})
        # The deadline of the newest proof, never past the LEADER's plus a renewal's worth.
        now_ms = time.clock_gettime(time.CLOCK_MONOTONIC) * 1000
        self.assertGreater(until, now_ms)
        self.assertGreaterEqual(until, lead.int("until_mono_ms"))
        self.assertEqual(get(self.base + "/leader/y")[0], 503, "y is not campaigned for")
        self.assertEqual(get(self.base + "/leader/nope")[0], 404)
        # Stepping down is not leading for routing purposes.
        self.agent.send_signal(signal.SIGTERM)
        app.expect("STEPDOWN", "x")
        self.assertEqual(get(self.base + "/leader/x")[0], 503)
        app.call_ok("ACK x %d" % lead.token)

    def test_unknown_path_is_404_and_post_is_refused(self):
        self.assertEqual(get(self.base + "/nope")[0], 404)
        req = urllib.request.Request(self.base + "/metrics", data=b"", method="POST")
        with self.assertRaises(urllib.error.HTTPError) as cm:
            urllib.request.urlopen(req, timeout=5)
        # evhttp answers a method it was told not to allow with 501 Not Implemented.
        self.assertIn(cm.exception.code, (405, 501))

    def test_metrics_count_acquisitions_releases_and_clients(self):
        app, lead = self.leader_app(self.agent, "x")
        watcher = self.connect(self.agent, label="watcher")
        watcher.call_ok("WATCH *")
        status, ctype, text = get(self.base + "/metrics")
        self.assertEqual(status, 200)
        self.assertIn("text/plain", ctype)
        self.assertEqual(metric(text, "leasekeeper_lock_held", lock="x"), 1)
        self.assertEqual(metric(text, "leasekeeper_lock_held", lock="y"), 0)
        self.assertEqual(metric(text, "leasekeeper_lock_token", lock="x"), float(lead.token))
        self.assertEqual(metric(text, "leasekeeper_acquisitions_total", lock="x",
                                after="first"), 1)
        for after in ("release", "expiry"):
            self.assertEqual(metric(text, "leasekeeper_acquisitions_total", lock="x",
                                    after=after), 0)
        self.assertEqual(metric(text, "leasekeeper_clients", kind="campaign"), 1)
        self.assertEqual(metric(text, "leasekeeper_clients", kind="watch"), 1)
        for reason in ("renew_deadline", "taken", "expired", "backend_error"):
            self.assertEqual(metric(text, "leasekeeper_lock_lost_total", lock="x",
                                    reason=reason), 0)
        for name in ("leasekeeper_release_duration_seconds",
                     "leasekeeper_shutdown_duration_seconds",
                     "leasekeeper_stepdown_wait_seconds",
                     "leasekeeper_handoff_gap_seconds"):
            self.assertIn("# TYPE %s histogram" % name, text)
        # The drain's histogram is agent-wide; the per-lock ones exist from a lock's campaign
        # on (release, stepdown: from its first tenure), not for a lock nobody campaigns for.
        self.assertIsNotNone(metric(text, "leasekeeper_shutdown_duration_seconds_bucket",
                                    le="+Inf"))
        for name in ("leasekeeper_release_duration_seconds_count",
                     "leasekeeper_stepdown_wait_seconds_count",
                     "leasekeeper_handoff_gap_seconds_count"):
            self.assertEqual(metric(text, name, lock="x"), 0, name)
            self.assertIsNone(metric(text, name, lock="y"), name)
        self.assertEqual(metric(text, "leasekeeper_graceful_exit_failed_total"), 0)
        self.assertEqual(metric(text, "leasekeeper_backend_errors_total", backend="main"), 0)
        self.assertEqual(metric(text, "leasekeeper_backend_up", backend="main"), 1)
        # A release by the last campaign client leaving shows up in the counters.
        app.close()
        wait_until(lambda: metric(get(self.base + "/metrics")[2], "leasekeeper_release_total",
                                  lock="x", outcome="released") == 1,
                   what="release_total{outcome=released} to count the release")
        text = get(self.base + "/metrics")[2]
        self.assertEqual(metric(text, "leasekeeper_release_duration_seconds_count", lock="x"), 1)
        self.assertIsNone(metric(text, "leasekeeper_release_duration_seconds_count", lock="y"))
        self.assertEqual(metric(text, "leasekeeper_lock_held", lock="x"), 0)

    def test_lost_and_backend_errors_are_counted(self):
        app, lead = self.leader_app(self.agent, "x")
        self.redis.call("DEL", "leasekeeper/x")
        app.expect("LOST", "x", reason="expired", timeout=10)
        text = get(self.base + "/metrics")[2]
        self.assertEqual(metric(text, "leasekeeper_lock_lost_total", lock="x", reason="expired"),
                         1)
        self.redis.stop()
        wait_until(lambda: (metric(get(self.base + "/metrics")[2],
                                   "leasekeeper_backend_errors_total", backend="main") or 0) >= 1,
                   what="backend_errors_total to count the outage")
        wait_until(lambda: metric(get(self.base + "/metrics")[2], "leasekeeper_backend_up",
                                  backend="main") == 0, what="backend_up to fall to 0")

    @unittest.skipUnless(shutil.which("promtool"), "promtool (Debian prometheus) not installed")
    def test_promtool_accepts_a_real_scrape(self):
        app, lead = self.leader_app(self.agent, "x")
        app.close()
        wait_until(lambda: metric(get(self.base + "/metrics")[2], "leasekeeper_release_total",
                                  lock="x", outcome="released") == 1, what="a release")
        text = get(self.base + "/metrics")[2]
        p = subprocess.run(["promtool", "check", "metrics"], input=text.encode(),
                           capture_output=True, timeout=30)
        self.assertEqual(p.returncode, 0, p.stdout.decode() + p.stderr.decode())


if __name__ == "__main__":
    unittest.main()
