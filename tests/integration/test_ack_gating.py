"""I2: a held lock is released only after every campaign client ACKed (or left); without ACKs
the agent releases nothing and lets the lease expire (SPEC sections 1 and 2)."""

import signal
import time
import unittest

from harness import LKTestCase, lock_config


KEY = "leasekeeper/x"


class AckGatingTest(LKTestCase):
    def setUp(self):
        super().setUp()
        self.redis = self.start_redis()
        self.mon = self.monitor(self.redis)

    def assertNoReleaseYet(self, value):
        self.assertEqual(self.redis.get(KEY), value, "the key must still be held")
        self.mon.sync(self.redis)
        self.assertEqual(self.mon.dels(KEY), [], "nothing may be deleted before the ACK")

    def test_release_waits_for_a_late_ack(self):
        a = self.start_agent("pod-a", self.redis,
                             locks=[lock_config("x", ttl="3s", stepdown_timeout="5s")])
        app, lead = self.leader_app(a)
        t = lead.token
        a.send_signal(signal.SIGTERM)
        sd = app.expect("STEPDOWN", "x", token=t)
        time.sleep(1.0)  # the app takes a second to stop its leader work
        self.assertNoReleaseYet(a.value(t))
        mark = self.mon.mark()
        t_ack = time.monotonic()
        app.call_ok("ACK x %d" % t)
        rel = app.expect("RELEASED", "x", token=t, outcome="released")
        self.assertGreaterEqual(rel.t - sd.t, 0.95)
        self.assertGreaterEqual(rel.t, t_ack)
        self.assertLess(rel.t - t_ack, 3.0, "the release should follow the ACK promptly")
        self.mon.sync(self.redis)
        self.assertEqual(len(self.mon.dels(KEY, since=mark, from_script=True)), 1)
        self.assertEqual(len(self.mon.dels(KEY)), 1)
        app.expect("STOP")
        app.expect_eof()
        self.assertEqual(a.wait(20), 0)
        self.assertEqual(a.drain_summary().get("exit_reason"), "drained")

    def test_lease_is_renewed_while_waiting_for_a_slow_ack(self):
        a = self.start_agent("pod-a", self.redis,
                             locks=[lock_config("x", ttl="2s", stepdown_timeout="6s")])
        app, lead = self.leader_app(a)
        t = lead.token
        a.send_signal(signal.SIGTERM)
        app.expect("STEPDOWN", "x", token=t)
        # Longer than the TTL: only renewals during STEPDOWN keep the key.
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            self.assertEqual(self.redis.get(KEY), a.value(t))
            self.assertIsNone(app.next_event(timeout=0.2), "no event before the ACK")
        self.assertNoReleaseYet(a.value(t))
        app.call_ok("ACK x %d" % t)
        app.expect("RELEASED", "x", token=t, outcome="released")
        app.expect("STOP")
        self.assertEqual(a.wait(20), 0)

    def test_no_ack_means_no_release_and_expiry_by_ttl(self):
        stepdown, ttl = 1.0, 3.0
        a = self.start_agent("pod-a", self.redis, shutdown_timeout="15s",
                             locks=[lock_config("x", ttl="3s", stepdown_timeout="1s")])
        app, lead = self.leader_app(a)
        t = lead.token
        drain = self.start_cli("drain", "-s", a.sock_path)
        sd = app.expect("STEPDOWN", "x", token=t)
        self.assertLessEqual(sd.int("deadline_ms"), 1000)
        # The app never ACKs. Past the stepdown deadline the key is still there: not released.
        time.sleep(max(0.0, sd.t + stepdown + 0.3 - time.monotonic()))
        self.assertEqual(self.redis.get(KEY), a.value(t),
                         "I2: after a stepdown timeout the lock must not be released")
        # The app that ignored STEPDOWN is told its tenure is over at once (I4): the lease is
        # no longer renewed, and another replica will take it when it runs out.
        lost = app.expect("LOST", "x", token=t, reason="expired")
        self.assertLess(lost.t - sd.t, stepdown + 1.0)
        rel = app.expect("RELEASED", "x", token=t, outcome="expired")
        v = self.redis.get(KEY)
        self.assertIn(v, (a.value(t), None), "the key was touched: %r" % v)
        if rel.t - sd.t < stepdown + ttl - 0.5:
            # Reported before the lease could have run out: the key must still be there.
            self.assertEqual(v, a.value(t))
        # It disappears by itself, within a TTL of the last renewal.
        gone = self.wait_key_gone(self.redis, KEY, timeout=stepdown + ttl + 5)
        self.assertLess(gone - sd.t, stepdown + ttl + 1.5,
                        "renewals must stop at the stepdown timeout")
        self.mon.sync(self.redis)
        self.assertEqual(self.mon.dels(KEY), [], "expired, never deleted:\n" + self.mon.dump())
        # Renewals stopped at the stepdown deadline (allowing one already in flight).
        late = [ln for ln in self.mon.script_calls(KEY) if ln.ts > sd.wall + stepdown + 0.5]
        self.assertEqual(late, [], "script calls after the stepdown timeout")
        stop = app.expect("STOP")
        self.assertGreaterEqual(stop.int("deadline_ms"), 0)
        app.expect_eof(timeout=10)
        self.assertEqual(a.wait(20), 1)
        self.assertEqual(drain.wait(20), 1, "leasekeeper drain exits 1 when a lock expired")
        s = a.drain_summary()
        self.assertEqual(s.get("exit_reason"), "stepdown_timeout")
        self.assertEqual((s.get("released"), s.get("expired"), s.get("failed")), (0, 1, 0))

    def test_shutdown_timeout_bounds_the_drain_and_releases_nothing(self):
        a = self.start_agent("pod-a", self.redis, shutdown_timeout="2s",
                             locks=[lock_config("x", ttl="3s", stepdown_timeout="5s")])
        app, lead = self.leader_app(a)
        t0 = time.monotonic()
        a.send_signal(signal.SIGTERM)
        app.expect("STEPDOWN", "x", token=lead.token)
        # The app never ACKs; the stepdown timeout (5s) is beyond the shutdown timeout (2s).
        self.assertEqual(a.wait(15), 1)
        elapsed = time.monotonic() - t0
        self.assertGreaterEqual(elapsed, 1.8, "exited before shutdown_timeout")
        self.assertLess(elapsed, 4.5, "shutdown_timeout must bound the drain")
        app.until_eof(timeout=5)
        s = a.drain_summary()
        self.assertEqual(s.get("exit_reason"), "shutdown_timeout")
        self.assertIn(self.redis.get(KEY), (a.value(lead.token), None))
        self.mon.sync(self.redis)
        self.assertEqual(self.mon.dels(KEY), [], "a lock whose app did not step down is "
                                                 "never released")

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
        self.assertNoReleaseYet(a.value(t))
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
