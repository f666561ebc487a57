"""Handoff telemetry measured by the successor (docs/metrics.md): every tenure an agent starts
is counted in leasekeeper_acquisitions_total{after="first|release|expiry"}, and a tenure that
follows a release observes leasekeeper_handoff_gap_seconds{lock=...} (Redis: the release
marker's TIME to the acquire's TIME, the server's clock; etcd: the watch event that showed the
release to the acquisition, the agent's clock). Per-lock histograms carry a `lock` label and
exist (at zero) from the lock's campaign on.

HandoffTelemetryScenarios run on Redis and on etcd, each test on a fresh server (so the key has
no history): the first leader counts `first`; the successor of a drained (SIGTERM) leader
counts `release` and one gap observation; the successor of a SIGKILLed leader counts `expiry`
and no gap. The measured gaps are printed."""

import re
import shutil
import signal
import subprocess
import sys
import unittest
import urllib.request

from harness import EtcdScenario, LKTestCase, RedisScenario, free_port, lock_config, wait_until

KEY = "leasekeeper/x"
AFTER = ("first", "release", "expiry")


def scrape(agent):
    with urllib.request.urlopen("http://%s/metrics" % agent.http, timeout=5) as r:
        return r.read().decode()


def metric(text, name, **labels):
    """The value of the series name{labels} (exactly those labels), or None."""
    want = sorted('%s="%s"' % kv for kv in labels.items())
    for line in text.splitlines():
        m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$', line)
        if m and m.group(1) == name and sorted(filter(None, (m.group(2) or "").split(","))) \
                == want:
            return float(m.group(3))
    return None


def acquisitions(text):
    return {a: metric(text, "leasekeeper_acquisitions_total", lock="x", after=a) for a in AFTER}


class HandoffTelemetryScenarios:
    def setUp(self):
        super().setUp()
        # A long retry interval: the successor of a release must get there by the notice.
        self.locks = [lock_config("x", ttl="3s", retry_interval="10s", stepdown_timeout="5s")]

    def agent(self, identity, **kw):
        port = free_port()
        a = self.start_agent(identity, self.backend, locks=self.locks,
                             http_listen="127.0.0.1:%d" % port, **kw)
        a.http = "127.0.0.1:%d" % port
        return a

    def leader_and_follower(self):
        a = self.agent("pod-a", shutdown_timeout="15s")
        app_a, lead_a = self.leader_app(a)
        b = self.agent("pod-b")
        app_b = self.connect(b, label="app@pod-b")
        app_b.call_ok("CAMPAIGN x")
        app_b.await_follower("x", "pod-a")
        self.backend.wait_listening(KEY)
        return a, app_a, lead_a, b, app_b

    def assertPromtoolAccepts(self, text):
        if not shutil.which("promtool"):
            return
        p = subprocess.run(["promtool", "check", "metrics"], input=text.encode(),
                           capture_output=True, timeout=30)
        self.assertEqual(p.returncode, 0, p.stdout.decode() + p.stderr.decode() + text)

    def test_first_leader_of_a_fresh_key_counts_first(self):
        a = self.agent("pod-a")
        self.leader_app(a)
        text = scrape(a)
        self.assertEqual(acquisitions(text), {"first": 1, "release": 0, "expiry": 0}, text)
        # The series exist from the campaign (release, stepdown: from the tenure) at zero, so
        # that rate() sees their first observation.
        for h in ("handoff_gap", "release_duration", "stepdown_wait"):
            self.assertEqual(metric(text, "leasekeeper_%s_seconds_count" % h, lock="x"), 0, h)
        acq = a.find_logs("lock acquired")
        self.assertEqual([e.get("after") for e in acq], ["first"], acq)
        self.assertPromtoolAccepts(text)

    def test_successor_of_a_drained_leader_counts_release_and_one_small_gap(self):
        self.drained_handoff()

    def drained_handoff(self):
        """A drains (SIGTERM), B takes over: B's metrics and log. Returns A's LEADER."""
        a, app_a, lead_a, b, app_b = self.leader_and_follower()
        a.send_signal(signal.SIGTERM)
        app_a.expect("STEPDOWN", "x", token=lead_a.token)
        app_a.call_ok("ACK x %d" % lead_a.token)
        app_a.expect("RELEASED", "x", token=lead_a.token, outcome="released")
        app_b.expect("LEADER", "x", timeout=9)
        self.assertEqual(a.wait(20), 0)
        text = scrape(b)
        self.assertEqual(acquisitions(text), {"first": 0, "release": 1, "expiry": 0}, text)
        count = metric(text, "leasekeeper_handoff_gap_seconds_count", lock="x")
        gap = metric(text, "leasekeeper_handoff_gap_seconds_sum", lock="x")
        self.assertEqual(count, 1, text)
        self.assertEqual(metric(text, "leasekeeper_handoff_gap_seconds_bucket", lock="x",
                                le="+Inf"), 1)
        self.assertGreaterEqual(gap, 0)
        self.assertLess(gap, 1.0, "a handoff by the release notice takes milliseconds")
        acq = b.find_logs("lock acquired")
        self.assertEqual(len(acq), 1, acq)
        self.assertEqual(acq[0].get("after"), "release", acq)
        self.assertAlmostEqual(float(acq[0].get("gap_ms")), gap * 1000, delta=0.002)
        print("\n%s: handoff gap after a drain (SIGTERM): %.3f ms (%s)"
              % (self.backend_kind, gap * 1000, self.gap_means), file=sys.stderr)
        self.assertPromtoolAccepts(text)
        return lead_a

    def test_release_by_a_running_agent_is_labelled_with_the_lock(self):
        a, app_a, lead_a, b, app_b = self.leader_and_follower()
        app_a.close()  # the last campaign client leaves: a releases and keeps running
        app_b.expect("LEADER", "x", timeout=9)
        wait_until(lambda: metric(scrape(a), "leasekeeper_release_total", lock="x",
                                  outcome="released") == 1, what="a's release to be counted")
        text = scrape(a)
        self.assertEqual(metric(text, "leasekeeper_release_duration_seconds_count", lock="x"), 1,
                         text)
        self.assertEqual(metric(text, "leasekeeper_release_duration_seconds_bucket", lock="x",
                                le="+Inf"), 1)
        self.assertIsNone(metric(text, "leasekeeper_release_duration_seconds_count"),
                          "no series without the lock label")
        self.assertEqual(metric(text, "leasekeeper_stepdown_wait_seconds_count", lock="x"), 0,
                         "no stepdown happened")
        self.assertEqual(metric(text, "leasekeeper_shutdown_duration_seconds_count"), 0,
                         "the drain histogram stays agent-wide")
        self.assertPromtoolAccepts(text)
        text_b = scrape(b)
        self.assertEqual(acquisitions(text_b), {"first": 0, "release": 1, "expiry": 0}, text_b)
        self.assertEqual(metric(text_b, "leasekeeper_handoff_gap_seconds_count", lock="x"), 1)

    def test_successor_of_a_killed_leader_counts_expiry_and_no_gap(self):
        a, app_a, lead_a, b, app_b = self.leader_and_follower()
        a.send_signal(signal.SIGKILL)
        self.assertEqual(a.wait(10), -signal.SIGKILL)
        app_b.await_event("LEADER", "x", timeout=20)
        text = scrape(b)
        self.assertEqual(acquisitions(text), {"first": 0, "release": 0, "expiry": 1}, text)
        self.assertEqual(metric(text, "leasekeeper_handoff_gap_seconds_count", lock="x"), 0,
                         "an expiry has no release to measure a gap from")
        acq = b.find_logs("lock acquired")
        self.assertEqual([(e.get("after"), e.get("gap_ms")) for e in acq], [("expiry", None)],
                         acq)
        self.assertPromtoolAccepts(text)


class HandoffTelemetryRedisTest(HandoffTelemetryScenarios, RedisScenario, LKTestCase):
    gap_means = "Redis TIME at the release to Redis TIME at the acquire"

    def test_successor_of_a_drained_leader_counts_release_and_one_small_gap(self):
        lead_a = self.drained_handoff()
        # The marker the release wrote: the released token and the server's time in µs.
        tok, us = self.redis.get(KEY + ":released").split(":")
        self.assertEqual(int(tok), lead_a.token)
        self.assertGreater(int(us), 1700000000 * 10**6)


class HandoffTelemetryEtcdTest(HandoffTelemetryScenarios, EtcdScenario, LKTestCase):
    gap_means = "the watch event of the release to the acquisition, on the agent's clock"


if __name__ == "__main__":
    unittest.main(verbosity=2)
