"""Graceful handoff on drain (SPEC section 2, invariants I2, I3, I7).

HandoffScenarios run on Redis and on etcd (HandoffRedisTest, HandoffEtcdTest): the follower
hears the release through the backend's notice (Redis pub/sub, an etcd watch), not its retry
timer. The drain variants that do not depend on the backend run on Redis only."""

import signal
import time
import unittest

from harness import EtcdScenario, LKTestCase, RedisScenario, lock_config

KEY = "leasekeeper/x"


class HandoffScenarios:
    def setUp(self):
        super().setUp()
        # A long retry interval: only the release notice can explain a fast takeover.
        self.locks = [lock_config("x", ttl="3s", retry_interval="10s", stepdown_timeout="5s")]

    def _leader_and_follower(self):
        a = self.start_agent("pod-a", self.backend, locks=self.locks, shutdown_timeout="15s")
        app_a, lead_a = self.leader_app(a)
        b = self.start_agent("pod-b", self.backend, locks=self.locks)
        app_b = self.connect(b, label="app@pod-b")
        app_b.call_ok("CAMPAIGN x")
        fol, _ = app_b.await_follower("x", "pod-a")
        self.backend.wait_listening(KEY)
        return a, app_a, lead_a, b, app_b, fol

    def test_graceful_handoff_follower_takes_over_via_release_notice(self):
        a, app_a, lead_a, b, app_b, fol = self._leader_and_follower()
        t = lead_a.token
        mark = self.backend.mark()

        a.send_signal(signal.SIGTERM)
        sd = app_a.expect("STEPDOWN", "x", token=t)
        self.assertGreater(sd.int("deadline_ms"), 0)
        self.assertLessEqual(sd.int("deadline_ms"), 5000)
        # I2: nothing is released before the app acknowledges.
        self.assertHeld(self.backend, KEY, "pod-a", t)
        t_ack = time.monotonic()
        self.assertEqual(app_a.call("ACK x %d" % t).raw, "OK ACK x")
        rel = app_a.expect("RELEASED", "x", token=t, outcome="released")
        stop = app_a.expect("STOP")
        self.assertGreaterEqual(stop.int("deadline_ms"), 0)
        self.assertLessEqual(stop.int("deadline_ms"), 15000)
        app_a.expect_eof(timeout=10)
        self.assertEqual(a.wait(20), 0)

        lead_b = app_b.expect("LEADER", "x", timeout=9)
        self.assertGreater(lead_b.token, t, "I5: the next tenure's token is greater")
        self.assertGreater(lead_b.t, t_ack, "I1: B cannot lead before A stepped down")
        self.assertLess(lead_b.t - rel.t, 3.0,
                        "takeover %.2fs after the release: the release notice was not used "
                        "(retry_interval is 10s)" % (lead_b.t - rel.t))
        self.assertLess(lead_b.t - fol.t, 9.0)
        self.assertTenureRecord(KEY, "pod-b", lead_b.token)

        s = a.drain_summary()
        self.assertEqual(s.get("exit_reason"), "drained")
        self.assertEqual((s.get("released"), s.get("expired"), s.get("failed")), (1, 0, 0))
        self.assertIsInstance(s.get("wait_duration_ms"), int)
        self.assertGreaterEqual(s.get("wait_duration_ms"), 0)
        self.assertReleasedOnce(KEY, mark)

    def test_drain_steps_down_all_locks_in_parallel(self):
        locks = [lock_config("x", ttl="3s", stepdown_timeout="5s"),
                 lock_config("y", ttl="3s", stepdown_timeout="5s")]
        a = self.start_agent("pod-a", self.backend, locks=locks)
        app = self.connect(a, label="app")
        app.call_ok("CAMPAIGN x")
        app.call_ok("CAMPAIGN y")
        tokens = {}
        while len(tokens) < 2:
            ev, _ = app.await_event("LEADER", None, allow=("FOLLOWER",))
            tokens[ev.lock] = ev.token
        a.send_signal(signal.SIGTERM)
        # Both STEPDOWNs come without waiting for the first ACK.
        sds = [app.expect("STEPDOWN"), app.expect("STEPDOWN")]
        self.assertEqual(sorted(e.lock for e in sds), ["x", "y"])
        for e in sds:
            self.assertEqual(e.token, tokens[e.lock])
        self.assertHeld(self.backend, "leasekeeper/y", "pod-a", tokens["y"])
        app.call_ok("ACK x %d" % tokens["x"])
        rel_x = app.expect("RELEASED", "x", outcome="released")
        self.assertEqual(rel_x.token, tokens["x"])
        self.assertIsNone(self.backend.value("leasekeeper/x"))
        # y is still held until its own ACK.
        self.assertHeld(self.backend, "leasekeeper/y", "pod-a", tokens["y"])
        app.call_ok("ACK y %d" % tokens["y"])
        app.expect("RELEASED", "y", outcome="released")
        app.expect("STOP")
        app.expect_eof()
        self.assertEqual(a.wait(20), 0)
        self.assertIsNone(self.backend.value("leasekeeper/y"))
        s = a.drain_summary()
        self.assertEqual((s.get("exit_reason"), s.get("released"), s.get("expired"),
                          s.get("failed")), ("drained", 2, 0, 0))


class HandoffEtcdTest(HandoffScenarios, EtcdScenario, LKTestCase):
    pass


class HandoffRedisTest(HandoffScenarios, RedisScenario, LKTestCase):
    """The scenarios on Redis, and drain variants that do not depend on the backend."""

    def test_sigint_drains_like_sigterm(self):
        a = self.start_agent("pod-a", self.redis, locks=self.locks)
        app, lead = self.leader_app(a)
        a.send_signal(signal.SIGINT)
        app.expect("STEPDOWN", "x", token=lead.token)
        app.call_ok("ACK x %d" % lead.token)
        app.expect("RELEASED", "x", token=lead.token, outcome="released")
        app.expect("STOP")
        app.expect_eof()
        self.assertEqual(a.wait(20), 0)
        self.assertIsNone(self.redis.get("leasekeeper/x"))
        self.assertEqual(a.drain_summary().get("exit_reason"), "drained")

    def test_app_requested_drain_gets_drained_after_stop(self):
        a = self.start_agent("pod-a", self.redis, locks=self.locks)
        app, lead = self.leader_app(a)
        self.assertEqual(app.call("DRAIN").raw, "OK DRAIN")
        app.expect("STEPDOWN", "x", token=lead.token)
        app.call_ok("ACK x %d" % lead.token)
        app.expect("RELEASED", "x", token=lead.token, outcome="released")
        rest = app.until_eof(timeout=10)
        self.assertEqual(sorted(m.kind for m in rest), ["DRAINED", "STOP"], rest)
        drained = [m for m in rest if m.kind == "DRAINED"][0]
        self.assertEqual((drained["released"], drained["expired"], drained["failed"]),
                         ("1", "0", "0"), drained.raw)
        self.assertGreaterEqual(drained.int("elapsed_ms"), 0)
        self.assertEqual(a.wait(20), 0)

    def test_drain_with_nothing_held_exits_zero_at_once(self):
        a = self.start_agent("pod-a", self.redis, locks=self.locks)
        w = self.connect(a, label="watcher")
        w.call_ok("WATCH x")
        w.expect("FOLLOWER", "x", holder="-")
        t0 = time.monotonic()
        a.send_signal(signal.SIGTERM)
        msgs = w.until_eof(timeout=10)
        self.assertEqual([m.kind for m in msgs], ["STOP"], msgs)
        self.assertEqual(a.wait(10), 0)
        self.assertLess(time.monotonic() - t0, 3.0)
        s = a.drain_summary()
        self.assertEqual((s.get("exit_reason"), s.get("released"), s.get("expired"),
                          s.get("failed")), ("drained", 0, 0, 0))


if __name__ == "__main__":
    unittest.main(verbosity=2)
