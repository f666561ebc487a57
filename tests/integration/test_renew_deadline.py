"""I1/I4: leadership is claimed only while a renewal proves it; a frozen, dead or overwritten
backend ends in LOST before the lease can expire (SPEC sections 1 and 6). Every scenario runs
on Redis and on etcd."""

import time
import unittest

from harness import EtcdScenario, LKTestCase, RedisScenario, lock_config, status_locks

KEY = "leasekeeper/x"
TTL = 3.0


class RenewDeadlineScenarios:
    def setUp(self):
        super().setUp()
        self.agent = self.start_agent(
            "pod-a", self.backend, backend_timeout="500ms",
            locks=[lock_config("x", ttl="3s", retry_interval="500ms")])

    def test_frozen_server_gives_lost_before_the_lease_can_expire(self):
        app, lead = self.leader_app(self.agent)
        t = lead.token
        self.assertLessEqual(lead.int("ttl_ms"), TTL * 1000)
        # Let at least one renewal happen, then freeze the server.
        self.wait_for_renewal(lead)
        t_stop = time.monotonic()
        self.backend.sigstop()

        lost = app.expect("LOST", "x", token=t, reason="renew_deadline", timeout=10)
        # No renewal can run while the server is frozen, so its lease ends within a TTL of the
        # SIGSTOP at the latest: LOST must come before.
        self.assertLess(lost.t - t_stop, TTL, "I4: LOST %.2fs after SIGSTOP" % (lost.t - t_stop))

        # The loop is not blocked by the frozen backend.
        probe = self.connect(self.agent, label="probe")
        self.assertEqual(probe.call("PING", timeout=3).raw, "OK PONG")
        self.assertNotEqual(str(status_locks(probe.status())["x"]["state"]).lower(), "leader")

        # While frozen, well past the TTL: no LEADER (only follower updates are acceptable).
        for e in app.events_for(TTL + 1.0):
            self.assertEqual(e.kind, "FOLLOWER", "while the server is frozen: %r" % e.raw)

        thawed = time.time()
        self.backend.sigcont()
        last_exec = self.last_renewal_before(thawed)
        if last_exec is not None:
            # The last renewal executed at last_exec, so it was sent no later: LOST must come
            # within a TTL of it (a necessary condition of "before the lease can expire").
            self.assertLess(lost.wall - last_exec, TTL,
                            "LOST %.2fs after the last renewal ran" % (lost.wall - last_exec))
        lead2, skipped = app.await_event("LEADER", "x", allow=("FOLLOWER",), timeout=20)
        self.assertGreater(lead2.token, t)
        self.assertTenureRecord(KEY, "pod-a", lead2.token)

    def test_server_down_gives_lost_and_a_new_tenure_after_restart(self):
        app, lead = self.leader_app(self.agent)
        t_stop = time.monotonic()
        self.backend.stop()
        lost = app.expect("LOST", "x", token=lead.token, timeout=10)
        self.assertIn(lost["reason"], ("renew_deadline", "backend_error"))
        self.assertLess(lost.t - t_stop, TTL)
        probe = self.connect(self.agent, label="probe")
        self.assertEqual(probe.call("PING", timeout=3).raw, "OK PONG")
        for e in app.events_for(1.0):
            self.assertEqual(e.kind, "FOLLOWER", e.raw)
        # Redis comes back empty (its fence counter is seeded from TIME again); etcd keeps its
        # data, and the old key until its lease runs out.
        self.backend.restart()
        lead2, _ = app.await_event("LEADER", "x", allow=("FOLLOWER",), timeout=20)
        self.assertGreater(lead2.token, lead.token)
        self.assertTenureRecord(KEY, "pod-a", lead2.token)

    def test_key_taken_by_another_holder_gives_lost_taken(self):
        app, lead = self.leader_app(self.agent)
        t_set = time.monotonic()
        self.backend.intrude(KEY, "intruder", ttl=2.5)
        lost = app.expect("LOST", "x", token=lead.token, reason="taken", timeout=10)
        # The next renewal (every ttl/3) finds out.
        self.assertLess(lost.t - t_set, 2.5)
        # Once the intruder's key expires, a new tenure with a greater token.
        lead2, followers = app.await_event("LEADER", "x", allow=("FOLLOWER",), timeout=15)
        for f in followers:
            self.assertIn(f["holder"], ("intruder", "-"), f.raw)
        self.assertGreater(lead2.token, lead.token)
        self.assertGreaterEqual(lead2.t - t_set, 2.0, "the intruder's key was still there")
        self.assertTenureRecord(KEY, "pod-a", lead2.token)

    def test_key_deleted_under_the_leader_gives_lost_expired(self):
        app, lead = self.leader_app(self.agent)
        t_del = time.monotonic()
        self.backend.delete(KEY)
        lost = app.expect("LOST", "x", token=lead.token, reason="expired", timeout=10)
        self.assertLess(lost.t - t_del, 2.5)
        lead2, _ = app.await_event("LEADER", "x", allow=("FOLLOWER",), timeout=10)
        self.assertGreater(lead2.token, lead.token)
        self.assertTenureRecord(KEY, "pod-a", lead2.token)

    def test_leader_ttl_ms_never_exceeds_the_ttl(self):
        app, lead = self.leader_app(self.agent)
        self.assertLessEqual(lead.int("ttl_ms"), 3000)
        st = status_locks(app.status())["x"]
        self.assertLessEqual(int(st["ttl_ms"]), 3000)
        self.assertGreater(int(st["ttl_ms"]), 0)


class RenewDeadlineEtcdTest(RenewDeadlineScenarios, EtcdScenario, LKTestCase):
    def wait_for_renewal(self, lead):
        # etcd does not show keepalives: wait a renew interval (ttl/3) and a bit.
        time.sleep(max(0.0, lead.t + 1.3 - time.monotonic()))

    def last_renewal_before(self, wall):
        return None


class RenewDeadlineRedisTest(RenewDeadlineScenarios, RedisScenario, LKTestCase):
    def wait_for_renewal(self, lead):
        self.mon.wait_for(lambda ln: KEY in ln.script_keys() and ln.ts > lead.wall + 0.3,
                          timeout=5, what="a renewal")

    def last_renewal_before(self, wall):
        """When the last script on KEY ran before `wall` (Redis's clock; after a SIGCONT,
        MONITOR shows everything that ran before the SIGSTOP)."""
        self.mon.sync(self.redis)
        return max(ln.ts for ln in self.mon.script_calls(KEY) if ln.ts < wall)


if __name__ == "__main__":
    unittest.main(verbosity=2)
