"""I3 under transport failures: a release whose reply was lost is retried with the same
compare-and-delete, which can never remove the next holder's key; I1/I4 when renewal replies
are lost (SPEC sections 1, 3 and 6). Agent A reaches Redis through a TcpProxy."""

import signal
import time
import unittest

from harness import LKTestCase, lock_config

KEY = "leasekeeper/x"


def is_del(ln):
    return ln.cmd in ("DEL", "UNLINK") and KEY in ln.args[1:]


class DroppedReplyTest(LKTestCase):
    def setUp(self):
        super().setUp()
        self.redis = self.start_redis()
        self.mon = self.monitor(self.redis)
        self.proxy = self.start_proxy(self.redis)

    def from_a(self, ln):
        return ln.source in self.proxy.upstream_sources

    def test_lost_release_reply_is_retried_without_deleting_the_next_holders_key(self):
        locks = [lock_config("x", ttl="3s", retry_interval="10s", stepdown_timeout="5s",
                             release_timeout="8s")]
        a = self.start_agent("pod-a", self.proxy.address, locks=locks, backend_timeout="300ms",
                             shutdown_timeout="20s")
        b = self.start_agent("pod-b", self.redis, locks=locks)
        app_a, lead_a = self.leader_app(a)
        t = lead_a.token
        app_b = self.connect(b, label="app@pod-b")
        app_b.call_ok("CAMPAIGN x")
        app_b.await_follower("x", "pod-a")
        self.wait_release_subscriber(self.redis, KEY)

        a.send_signal(signal.SIGTERM)
        app_a.expect("STEPDOWN", "x", token=t)
        self.mon.sync(self.redis)
        mark = self.mon.mark()
        self.proxy.drop_replies = True
        app_a.call_ok("ACK x %d" % t)

        # A's release runs in Redis; its reply never reaches A.
        first = self.mon.wait_for(is_del, since=mark, timeout=5, what="A's release DEL")
        self.assertTrue(first.from_script)
        # B takes over through the release notice.
        lead_b = app_b.expect("LEADER", "x", timeout=5)
        self.assertGreater(lead_b.token, t)
        b_value = "pod-b:%d" % lead_b.token
        self.assertEqual(self.redis.get(KEY), b_value)
        # A cannot know its release worked: it must retry (after its 300ms backend timeout).
        # Give it the time to retry at least once while the replies are still being dropped.
        time.sleep(1.0)
        self.assertEqual(self.redis.get(KEY), b_value)
        self.proxy.drop_replies = False

        rel = app_a.expect("RELEASED", "x", token=t, timeout=12)
        self.assertIn(rel["outcome"], ("released", "already_gone"),
                      "a release that ran must not be reported as %s" % rel["outcome"])
        app_a.expect("STOP")
        app_a.expect_eof(timeout=10)
        self.assertEqual(a.wait(25), 0)
        s = a.drain_summary()
        self.assertEqual((s.get("expired"), s.get("failed")), (0, 0))

        self.mon.sync(self.redis)
        self.assertEqual(self.redis.get(KEY), b_value, "I3: B's key must survive A's retries")
        dels = self.mon.dels(KEY, since=mark)
        self.assertEqual(len(dels), 1, "one DEL, A's first release:\n" + self.mon.dump(mark))
        retries = [ln for ln in self.mon.script_calls(KEY, since=mark)
                   if ln.seq > first.seq and self.from_a(ln)]
        self.assertGreaterEqual(len(retries), 1,
                                "A never retried its release:\n" + self.mon.dump(mark))
        app_b.assert_no_event(0.5)  # B was never disturbed

    def test_release_retry_after_a_connection_reset_completes(self):
        a = self.start_agent("pod-a", self.proxy.address, backend_timeout="300ms",
                             locks=[lock_config("x", ttl="3s", release_timeout="8s")])
        app, lead = self.leader_app(a)
        a.send_signal(signal.SIGTERM)
        app.expect("STEPDOWN", "x", token=lead.token)
        mark = self.mon.mark()
        self.proxy.drop_replies = True
        app.call_ok("ACK x %d" % lead.token)
        self.mon.wait_for(is_del, since=mark, timeout=5, what="the release DEL")
        self.proxy.kill_all()
        self.proxy.drop_replies = False
        rel = app.expect("RELEASED", "x", token=lead.token, timeout=12)
        self.assertIn(rel["outcome"], ("released", "already_gone"))
        app.expect("STOP")
        self.assertEqual(a.wait(25), 0)
        self.assertIsNone(self.redis.get(KEY))
        self.mon.sync(self.redis)
        self.assertEqual(len(self.mon.dels(KEY)), 1)

    def test_release_never_acknowledged_by_the_backend_is_failed(self):
        a = self.start_agent("pod-a", self.proxy.address, backend_timeout="300ms",
                             shutdown_timeout="15s",
                             locks=[lock_config("x", ttl="3s", release_timeout="2s")])
        app, lead = self.leader_app(a)
        a.send_signal(signal.SIGTERM)
        app.expect("STEPDOWN", "x", token=lead.token)
        self.proxy.drop_requests = True  # nothing reaches Redis any more
        t_ack = time.monotonic()
        app.call_ok("ACK x %d" % lead.token)
        rel = app.expect("RELEASED", "x", token=lead.token, outcome="failed", timeout=10)
        self.assertLess(rel.t - t_ack, 2.0 + 2.0, "release_timeout bounds the retries")
        app.expect("STOP")
        self.assertEqual(a.wait(20), 1)
        s = a.drain_summary()
        self.assertEqual(s.get("exit_reason"), "release_failed")
        self.assertEqual(s.get("failed"), 1)
        # Never released: the key is left to expire (it was not deleted).
        self.mon.sync(self.redis)
        self.assertEqual(self.mon.dels(KEY), [])

    def test_lost_renewal_replies_give_lost_before_the_ttl(self):
        a = self.start_agent("pod-a", self.proxy.address, backend_timeout="300ms",
                             locks=[lock_config("x", ttl="3s", retry_interval="500ms")])
        app, lead = self.leader_app(a)
        t_drop = time.monotonic()
        self.proxy.drop_replies = True  # renewals still run in Redis (and extend the key)
        lost = app.expect("LOST", "x", token=lead.token, timeout=10)
        self.assertIn(lost["reason"], ("renew_deadline", "backend_error"))
        self.assertLess(lost.t - t_drop, 3.0, "I1: the lease is proven only by replies")
        # While replies are lost, the agent cannot prove a new tenure either.
        for e in app.events_for(2.0):
            self.assertEqual(e.kind, "FOLLOWER", e.raw)
        self.proxy.drop_replies = False
        self.proxy.kill_all()
        lead2, _ = app.await_event("LEADER", "x", allow=("FOLLOWER",), timeout=20)
        self.assertGreater(lead2.token, lead.token)
        self.assertEqual(self.redis.get(KEY), "pod-a:%d" % lead2.token)


if __name__ == "__main__":
    unittest.main(verbosity=2)
