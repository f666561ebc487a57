"""Acquisition, followers, WATCH, STATUS, RESIGN and the basic verbs (SPEC sections 0, 3, 6).

AcquireScenarios run on Redis and on etcd (AcquireRedisTest, AcquireEtcdTest); the verbs that do
not depend on the backend run on Redis only."""

import time
import unittest

from harness import EtcdScenario, LKTestCase, RedisScenario, as_int, lock_config, status_locks, wait_until

KEY = "leasekeeper/x"


class AcquireScenarios:
    """Backend-neutral: holder and token as the backend stores them (Redis: the value
    <identity>:<token>; etcd: the value <identity>, token = "<key>:fence" + create_revision)."""

    def test_campaign_gets_ok_then_leader_with_the_token_stored_in_the_backend(self):
        a = self.start_agent("pod-a", self.backend, locks=[lock_config("x", ttl="3s")])
        app = self.connect(a, client_name="app")
        self.assertEqual(app.call("CAMPAIGN x").raw, "OK CAMPAIGN x")
        ev, skipped = app.await_event("LEADER", "x", allow=("FOLLOWER",))
        for s in skipped:  # nobody held it: a FOLLOWER update can only say "nobody"
            self.assertEqual(s.raw, "FOLLOWER x holder=-")
        self.assertRegex(ev.raw, r"^LEADER x token=[0-9]+ ttl_ms=[0-9]+ until_mono_ms=[0-9]+$")
        self.assertGreater(ev.token, 0)
        self.assertGreater(ev.int("ttl_ms"), 0)
        self.assertLessEqual(ev.int("ttl_ms"), self.backend.granted_ttl(3) * 1000)
        self.assertTenureRecord(KEY, "pod-a", ev.token)
        left = self.backend.remaining(KEY)
        self.assertIsNotNone(left, "the key must expire by itself")
        self.assertLessEqual(left, 3.0)

    def test_leader_keeps_renewing_past_the_ttl_without_further_events(self):
        a = self.start_agent("pod-a", self.backend, locks=[lock_config("x", ttl="2s")])
        app, ev = self.leader_app(a)
        deadline = time.monotonic() + 4.5  # more than two TTLs
        while time.monotonic() < deadline:
            self.assertHeld(self.backend, KEY, "pod-a", ev.token)
            self.assertIsNone(app.next_event(timeout=0.25), "no event expected while leading")
        self.assertTenureRecord(KEY, "pod-a", ev.token)

    def test_second_agent_campaigning_is_follower_naming_the_holder(self):
        locks = [lock_config("x", ttl="3s", retry_interval="300ms")]
        a = self.start_agent("pod-a", self.backend, locks=locks)
        app_a, lead = self.leader_app(a)
        b = self.start_agent("pod-b", self.backend, locks=locks)
        app_b = self.connect(b, label="app@pod-b")
        self.assertEqual(app_b.call("CAMPAIGN x").raw, "OK CAMPAIGN x")
        ev, _ = app_b.await_follower("x", "pod-a")
        self.assertEqual(ev.raw, "FOLLOWER x holder=pod-a")
        # Several retries later, still a follower, and the key is still pod-a's tenure.
        for e in app_b.events_for(1.5):
            self.assertEqual(e.raw, "FOLLOWER x holder=pod-a")
        self.assertHeld(self.backend, KEY, "pod-a", lead.token)
        app_a.assert_no_event(0.1)
        x = status_locks(app_b.status())["x"]
        self.assertEqual(str(x["state"]).lower(), "follower")
        self.assertEqual(x["holder"], "pod-a")

    def test_resign_releases_the_lock_when_no_other_client_campaigns(self):
        a = self.start_agent("pod-a", self.backend,
                             locks=[lock_config("x", retry_interval="200ms")])
        app, lead = self.leader_app(a)
        mark = self.backend.mark()
        t_resign = time.monotonic()
        left = self.backend.remaining(KEY)
        self.assertEqual(app.call("RESIGN x").raw, "OK RESIGN x")
        gone = self.wait_key_gone(self.backend, KEY, timeout=5)
        self.assertLess(gone - t_resign, min(2.0, left),
                        "the release must not wait for the lease to run out")
        self.assertReleasedOnce(KEY, mark)
        # No longer campaigning: the key is not taken again, and the client is not told LEADER.
        for e in app.events_for(1.2):
            self.assertNotEqual(e.kind, "LEADER", "LEADER after RESIGN: %r" % e.raw)
        self.assertIsNone(self.backend.value(KEY))
        self.assertEqual(app.call("PING").raw, "OK PONG")

    def test_resign_keeps_the_lock_while_another_client_campaigns(self):
        a = self.start_agent("pod-a", self.backend)
        app1, lead = self.leader_app(a)
        app2 = self.connect(a, label="app2")
        app2.call_ok("CAMPAIGN x")
        app2.expect("LEADER", "x")
        mark = self.backend.mark()
        self.assertEqual(app1.call("RESIGN x").raw, "OK RESIGN x")
        app2.assert_no_event(1.0)
        self.assertHeld(self.backend, KEY, "pod-a", lead.token)
        self.assertEqual(self.backend.deletions(KEY, mark), [])

    def test_configured_key_is_the_one_held(self):
        a = self.start_agent("pod-a", self.backend,
                             locks=[lock_config("sched", key="myapp/scheduler")])
        app, lead = self.leader_app(a, "sched")
        self.assertTenureRecord("myapp/scheduler", "pod-a", lead.token)
        self.assertIsNone(self.backend.value("leasekeeper/sched"))

    def test_two_locks_are_held_independently(self):
        a = self.start_agent("pod-a", self.backend, locks=[lock_config("x"), lock_config("y")])
        app = self.connect(a)
        app.call_ok("CAMPAIGN x")
        app.call_ok("CAMPAIGN y")
        got = {}
        while len(got) < 2:
            ev, _ = app.await_event("LEADER", None, allow=("FOLLOWER",))
            got[ev.lock] = ev.token
        self.assertNotEqual(got["x"], got["y"])
        self.assertTenureRecord("leasekeeper/x", "pod-a", got["x"])
        self.assertTenureRecord("leasekeeper/y", "pod-a", got["y"])


class AcquireEtcdTest(AcquireScenarios, EtcdScenario, LKTestCase):
    def test_key_is_on_a_lease_of_the_configured_ttl_and_tokens_are_fence_plus_create_revision(
            self):
        locks = [lock_config("x", ttl="3s", retry_interval="200ms")]
        a = self.start_agent("pod-a", self.backend, locks=locks)
        app, lead = self.leader_app(a)
        kv = self.etcd.kv(KEY)
        # The base was seeded from the wall clock in microseconds by the first acquire.
        fence = int(self.etcd.get(KEY + ":fence"))
        self.assertLess(abs(fence - time.time() * 1e6), 120e6, fence)
        self.assertEqual(fence + int(kv["create_revision"]), lead.token)
        r = self.etcd.call("/v3/lease/timetolive", {"ID": kv["lease"]})
        self.assertEqual(int(r["grantedTTL"]), 3, r)
        # Another tenure: a new candidate key (a new create_revision). The agent's lease went
        # when nothing used it any more; the new key is on a new one.
        app.close()
        self.wait_key_gone(self.backend, KEY, timeout=5)
        wait_until(lambda: self.etcd.lease_ttl(int(kv["lease"])) is None, timeout=5,
                   what="the unused lease to be revoked")
        app2, lead2 = self.leader_app(a)
        kv2 = self.etcd.kv(KEY)
        self.assertGreater(lead2.token, lead.token)
        self.assertEqual(int(self.etcd.get(KEY + ":fence")), fence, "the base is kept")
        self.assertEqual(fence + int(kv2["create_revision"]), lead2.token)
        self.assertNotEqual(kv2["lease"], kv["lease"])


class AcquireRedisTest(AcquireScenarios, RedisScenario, LKTestCase):
    """The scenarios on Redis, and the verbs that do not depend on the backend."""

    def test_second_campaign_client_of_the_same_agent_gets_the_same_tenure(self):
        a = self.start_agent("pod-a", self.redis)
        app1, lead1 = self.leader_app(a)
        app2 = self.connect(a, label="app2")
        self.assertEqual(app2.call("CAMPAIGN x").raw, "OK CAMPAIGN x")
        lead2 = app2.expect("LEADER", "x")  # the current state, at once
        self.assertEqual(lead2.token, lead1.token)
        self.assertGreater(lead2.int("ttl_ms"), 0)
        app1.assert_no_event(0.2)

    def test_watch_star_reports_current_state_then_changes_of_every_lock(self):
        a = self.start_agent("pod-a", self.redis, locks=[lock_config("x"), lock_config("y")])
        w = self.connect(a, label="watcher")
        self.assertEqual(w.call("WATCH *").raw, "OK WATCH *")
        first = [w.expect("FOLLOWER"), w.expect("FOLLOWER")]
        self.assertEqual(sorted(e.raw for e in first),
                         ["FOLLOWER x holder=-", "FOLLOWER y holder=-"])
        app, lead = self.leader_app(a, "x")
        ev, skipped = w.await_event("LEADER", "x", allow=("FOLLOWER",))
        self.assertEqual(ev.token, lead.token)
        for s in skipped:
            self.assertEqual(s.lock, "x")
        # A watcher is not a campaign client: the lock is held for the app only.
        self.assertEqual(self.redis.get("leasekeeper/y"), None)

    def test_watch_one_lock_reports_only_that_lock(self):
        a = self.start_agent("pod-a", self.redis, locks=[lock_config("x"), lock_config("y")])
        app, lead = self.leader_app(a, "x")
        w = self.connect(a, label="watcher")
        self.assertEqual(w.call("WATCH x").raw, "OK WATCH x")
        ev = w.expect("LEADER", "x")
        self.assertEqual(ev.token, lead.token)
        app_y = self.connect(a, label="app-y")
        app_y.campaign("y")
        for e in w.events_for(0.5):
            self.assertEqual(e.lock, "x", "watcher of x got %r" % e.raw)

    def test_status_reports_identity_draining_and_every_lock(self):
        a = self.start_agent("pod-a", self.redis,
                             locks=[lock_config("x", ttl="3s"), lock_config("y", ttl="2s")])
        app, lead = self.leader_app(a, "x")
        st = app.status()
        self.assertEqual(st.get("identity"), "pod-a")
        self.assertIs(st.get("draining"), False)
        locks = status_locks(st)
        self.assertEqual(set(locks), {"x", "y"})
        x, y = locks["x"], locks["y"]
        for l in (x, y):
            for field in ("name", "backend", "state", "token", "holder", "ttl_ms"):
                self.assertIn(field, l, "STATUS lock entry lacks %s: %r" % (field, l))
            self.assertEqual(l["backend"], "main")
        self.assertEqual(str(x["state"]).lower(), "leader")
        self.assertEqual(as_int(x["token"]), lead.token)
        self.assertEqual(x["holder"], "pod-a")
        self.assertGreater(as_int(x["ttl_ms"]), 0)
        self.assertLessEqual(as_int(x["ttl_ms"]), 3000)
        self.assertNotEqual(str(y["state"]).lower(), "leader")
        self.assertIn(y["token"], (0, "0", None))
        self.assertIn(y["holder"], ("-", None, ""))
        self.assertIn(y["ttl_ms"], (0, "0", None))

    def test_banner_and_hello_reply_identify_the_agent(self):
        a = self.start_agent("pod-a", self.redis)
        c1 = self.connect(a, hello=False)
        b1 = c1.read_banner()
        self.assertRegex(b1.raw, r"^LEASEKEEPER 1 id=pod-a nonce=[0-9a-f]{64} auth=none mono_ms=[0-9]+$")
        r = c1.hello(client_name="probe")
        self.assertRegex(r.raw, r"^OK HELLO 1 agent=\S+ id=pod-a$")
        c2 = self.connect(a, hello=False)
        b2 = c2.read_banner()
        self.assertNotEqual(b1["nonce"], b2["nonce"], "nonces must be fresh per connection")
        # client= is optional.
        r = c2.hello(client_name=None)
        self.assertTrue(r.ok, r.raw)

    def test_ping_and_quit(self):
        a = self.start_agent("pod-a", self.redis)
        c = self.connect(a)
        self.assertEqual(c.call("PING").raw, "OK PONG")
        self.assertEqual(c.call("QUIT").raw, "OK BYE")
        c.expect_eof(timeout=5)
        c2 = self.connect(a)
        self.assertEqual(c2.call("PING").raw, "OK PONG")

    def test_identity_expands_from_the_environment(self):
        a = self.start_agent("${POD_NAME}", self.redis, env={"POD_NAME": "pod-env-7"})
        a.identity = "pod-env-7"
        app, lead = self.leader_app(a)
        self.assertEqual(app.banner_attrs["id"], "pod-env-7")
        self.assertEqual(self.redis.get("leasekeeper/x"), "pod-env-7:%d" % lead.token)

    def test_identity_defaults_to_hostname(self):
        a = self.make_agent(None, self.redis, env={"HOSTNAME": "pod-from-hostname"})
        a.identity = "pod-from-hostname"
        a.start()
        app, lead = self.leader_app(a)
        self.assertEqual(app.banner_attrs["id"], "pod-from-hostname")
        self.assertEqual(self.redis.get("leasekeeper/x"), "pod-from-hostname:%d" % lead.token)


if __name__ == "__main__":
    unittest.main(verbosity=2)
