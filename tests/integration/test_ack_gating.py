"""I2: a held lock is released only after every campaign client ACKed (or left); without ACKs
the agent releases nothing and lets the lease expire (SPEC sections 1 and 2).

AckGatingScenarios run on Redis and on etcd; the variants about who is waited for run on Redis
only (they do not depend on the backend)."""

import signal
import time
import unittest

from harness import EtcdScenario, LKTestCase, RedisScenario, lock_config


KEY = "leasekeeper/x"


class AckGatingScenarios:
    def assertNoReleaseYet(self, identity, token, since):
        self.assertHeld(self.backend, KEY, identity, token, "the key must still be held")
        self.assertEqual(self.backend.deletions(KEY, since), [],
                         "nothing may be deleted before the ACK")

    def test_release_waits_for_a_late_ack(self):
        a = self.start_agent("pod-a", self.backend,
                             locks=[lock_config("x", ttl="3s", stepdown_timeout="5s")])
        app, lead = self.leader_app(a)
        t = lead.token
        start = self.backend.mark()
        a.send_signal(signal.SIGTERM)
        sd = app.expect("STEPDOWN", "x", token=t)
        time.sleep(1.0)  # the app takes a second to stop its leader work
        self.assertNoReleaseYet("pod-a", t, start)
        mark = self.backend.mark()
        t_ack = time.monotonic()
        app.call_ok("ACK x %d" % t)
        rel = app.expect("RELEASED", "x", token=t, outcome="released")
        self.assertGreaterEqual(rel.t - sd.t, 0.95)
        self.assertGreaterEqual(rel.t, t_ack)
        self.assertLess(rel.t - t_ack, 3.0, "the release should follow the ACK promptly")
        self.assertIsNone(self.backend.value(KEY))
        self.assertReleasedOnce(KEY, mark)
        self.assertEqual(len(self.backend.deletions(KEY, start)), 1)
        app.expect("STOP")
        app.expect_eof()
        self.assertEqual(a.wait(20), 0)
        self.assertEqual(a.drain_summary().get("exit_reason"), "drained")

    def test_lease_is_renewed_while_waiting_for_a_slow_ack(self):
        a = self.start_agent("pod-a", self.backend,
                             locks=[lock_config("x", ttl="2s", stepdown_timeout="6s")])
        app, lead = self.leader_app(a)
        t = lead.token
        start = self.backend.mark()
        a.send_signal(signal.SIGTERM)
        app.expect("STEPDOWN", "x", token=t)
        # Longer than the TTL: only renewals during STEPDOWN keep the key.
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            self.assertHeld(self.backend, KEY, "pod-a", t)
            self.assertIsNone(app.next_event(timeout=0.2), "no event before the ACK")
        self.assertNoReleaseYet("pod-a", t, start)
        app.call_ok("ACK x %d" % t)
        app.expect("RELEASED", "x", token=t, outcome="released")
        app.expect("STOP")
        self.assertEqual(a.wait(20), 0)

    def test_no_ack_means_no_release_and_expiry_by_ttl(self):
        stepdown, ttl = 1.0, 3.0
        a = self.start_agent("pod-a", self.backend, shutdown_timeout="15s",
                             locks=[lock_config("x", ttl="3s", stepdown_timeout="1s")])
        app, lead = self.leader_app(a)
        t = lead.token
        mark = self.backend.mark()
        drain = self.start_cli("drain", "-s", a.sock_path)
        sd = app.expect("STEPDOWN", "x", token=t)
        self.assertLessEqual(sd.int("deadline_ms"), 1000)
        # The app never ACKs. Past the stepdown deadline the key is still there: not released.
        time.sleep(max(0.0, sd.t + stepdown + 0.3 - time.monotonic()))
        t_left = time.monotonic()
        left = self.backend.remaining(KEY)
        self.assertHeld(self.backend, KEY, "pod-a", t,
                        "I2: after a stepdown timeout the lock must not be released")
        self.assertIsNotNone(left, "the key must still be on its lease")
        # The app that ignored STEPDOWN is told its tenure is over at once (I4): the lease is
        # no longer renewed, and another replica will take it when it runs out.
        lost = app.expect("LOST", "x", token=t, reason="expired")
        self.assertLess(lost.t - sd.t, stepdown + 1.0)
        rel = app.expect("RELEASED", "x", token=t, outcome="expired")
        v = self.backend.value(KEY)
        self.assertIn(v, (self.backend.expected_value("pod-a", t), None),
                      "the key was touched: %r" % v)
        if rel.t - sd.t < stepdown + ttl - 0.5:
            # Reported before the lease could have run out: the key must still be there.
            self.assertHeld(self.backend, KEY, "pod-a", t)
        # It disappears by itself: not before its lease runs out (remaining() is a lower
        # bound), and within a TTL of the last renewal.
        gone = self.wait_key_gone(self.backend, KEY, timeout=stepdown + ttl + 5)
        self.assertGreaterEqual(gone, t_left + left - 0.05,
                                "the key went %.2fs before its lease ran out: it was deleted"
                                % (t_left + left - gone))
        self.assertLess(gone - sd.t, stepdown + ttl + 1.5,
                        "renewals must stop at the stepdown timeout")
        self.assertNeverDeleted(KEY, mark)
        self.assertRenewalsStoppedAt(sd.wall + stepdown + 0.5)
        stop = app.expect("STOP")
        self.assertGreaterEqual(stop.int("deadline_ms"), 0)
        app.expect_eof(timeout=10)
        self.assertEqual(a.wait(20), 1)
        self.assertEqual(drain.wait(20), 1, "leasekeeper drain exits 1 when a lock expired")
        s = a.drain_summary()
        self.assertEqual(s.get("exit_reason"), "stepdown_timeout")
        self.assertEqual((s.get("released"), s.get("expired"), s.get("failed")), (0, 1, 0))

    def test_shutdown_timeout_bounds_the_drain_and_releases_nothing(self):
        a = self.start_agent("pod-a", self.backend, shutdown_timeout="2s",
                             locks=[lock_config("x", ttl="3s", stepdown_timeout="5s")])
        app, lead = self.leader_app(a)
        mark = self.backend.mark()
        t0 = time.monotonic()
        a.send_signal(signal.SIGTERM)
        app.expect("STEPDOWN", "x", token=lead.token)
        # The app never ACKs; the stepdown timeout (5s) is beyond the shutdown timeout (2s).
        self.assertEqual(a.wait(15), 1)
        t_exit = time.monotonic()
        elapsed = t_exit - t0
        left = self.backend.remaining(KEY)
        self.assertGreaterEqual(elapsed, 1.8, "exited before shutdown_timeout")
        self.assertLess(elapsed, 4.5, "shutdown_timeout must bound the drain")
        app.until_eof(timeout=5)
        s = a.drain_summary()
        self.assertEqual(s.get("exit_reason"), "shutdown_timeout")
        # A lock whose app did not step down is never released: the key is left to expire.
        self.assertIn(self.backend.value(KEY),
                      (self.backend.expected_value("pod-a", lead.token), None))
        self.assertLeftToExpire(KEY, mark, t_exit, left)


class AckGatingEtcdTest(AckGatingScenarios, EtcdScenario, LKTestCase):
    def assertRenewalsStoppedAt(self, wall):
        """Covered by the expiry timing: renewed leases would outlive the bound."""


class AckGatingRedisTest(AckGatingScenarios, RedisScenario, LKTestCase):
    """The scenarios on Redis, and who the release waits for (not backend-specific)."""

    def assertRenewalsStoppedAt(self, wall):
        # Renewals stopped at the stepdown deadline (allowing one already in flight).
        late = [ln for ln in self.mon.script_calls(KEY) if ln.ts > wall]
        self.assertEqual(late, [], "script calls after the stepdown timeout")

    def test_drain_requester_is_told_expired(self):
        a = self.start_agent("pod-a", self.redis,
                             locks=[lock_config("x", ttl="3s", stepdown_timeout="1s")])
        app, lead = self.leader_app(a)
        d = self.connect(a, label="drainer")
        self.assertEqual(d.call("DRAIN").raw, "OK DRAIN")
        app.expect("STEPDOWN", "x", token=lead.token)
        msgs = d.until_eof(timeout=15)
        drained = [m for m in msgs if m.kind == "DRAINED"]
        self.assertEqual(len(drained), 1, msgs)
        self.assertEqual((drained[0]["released"], drained[0]["expired"], drained[0]["failed"]),
                         ("0", "1", "0"))
        self.assertEqual(a.wait(20), 1)

    def test_release_waits_for_every_campaign_client(self):
        a = self.start_agent("pod-a", self.redis,
                             locks=[lock_config("x", ttl="3s", stepdown_timeout="5s")])
        app1, lead = self.leader_app(a)
        t = lead.token
        app2 = self.connect(a, label="app2")
        app2.call_ok("CAMPAIGN x")
        app2.expect("LEADER", "x", token=t)
        a.send_signal(signal.SIGTERM)
        app1.expect("STEPDOWN", "x", token=t)
        app2.expect("STEPDOWN", "x", token=t)
        app1.call_ok("ACK x %d" % t)
        app1.assert_no_event(0.8)  # app2 has not acknowledged: no RELEASED yet
        self.assertNoReleaseYet("pod-a", t, 0)
        app2.call_ok("ACK x %d" % t)
        for app in (app1, app2):
            app.expect("RELEASED", "x", token=t, outcome="released")
            app.expect("STOP")
        self.assertEqual(a.wait(20), 0)
        self.assertIsNone(self.redis.get(KEY))

    def test_disconnect_counts_as_ack_during_stepdown(self):
        a = self.start_agent("pod-a", self.redis,
                             locks=[lock_config("x", ttl="3s", stepdown_timeout="5s")])
        app1, lead = self.leader_app(a)
        t = lead.token
        app2 = self.connect(a, label="app2")
        app2.call_ok("CAMPAIGN x")
        app2.expect("LEADER", "x", token=t)
        a.send_signal(signal.SIGTERM)
        app1.expect("STEPDOWN", "x", token=t)
        app2.expect("STEPDOWN", "x", token=t)
        app1.call_ok("ACK x %d" % t)
        t_close = time.monotonic()
        app2.close()
        rel = app1.expect("RELEASED", "x", token=t, outcome="released")
        self.assertLess(rel.t - t_close, 3.0)
        app1.expect("STOP")
        self.assertEqual(a.wait(20), 0)

    def test_watchers_are_not_waited_for(self):
        a = self.start_agent("pod-a", self.redis,
                             locks=[lock_config("x", ttl="3s", stepdown_timeout="5s")])
        app, lead = self.leader_app(a)
        w = self.connect(a, label="watcher")
        w.call_ok("WATCH x")
        w.expect("LEADER", "x", token=lead.token)
        a.send_signal(signal.SIGTERM)
        app.expect("STEPDOWN", "x", token=lead.token)
        t_ack = time.monotonic()
        app.call_ok("ACK x %d" % lead.token)
        rel = app.expect("RELEASED", "x", outcome="released")
        self.assertLess(rel.t - t_ack, 3.0)
        msgs = w.until_eof(timeout=10)
        self.assertIn("STOP", [m.kind for m in msgs])
        self.assertNotIn("ERR", [m.kind for m in msgs])
        self.assertEqual(a.wait(20), 0)



if __name__ == "__main__":
    unittest.main(verbosity=2)
