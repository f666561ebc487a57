"""I6 liveness link and the campaign modes (SPEC sections 1 and 2, config `campaign`).

DisconnectScenarios run on Redis and on etcd; `campaign: always` runs on Redis only (it does
not depend on the backend)."""

import signal
import socket
import time
import unittest

from harness import EtcdScenario, LKTestCase, RedisScenario, lock_config, status_locks, wait_until

KEY = "leasekeeper/x"


class DisconnectScenarios:
    def test_leader_cut_off_for_not_reading_is_not_released_but_left_to_expire(self):
        """A leader the agent disconnects (it stopped reading) may still be working: unlike an
        app that left, its lock must not be handed over before the lease runs out (I2)."""
        locks = [lock_config("x", ttl="3s", retry_interval="200ms")]
        a = self.start_agent("pod-a", self.backend, locks=locks)
        b = self.start_agent("pod-b", self.backend, locks=locks)
        raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(raw.close)
        raw.connect(a.sock_path)
        f = raw.makefile("rb")
        f.readline()                                        # banner
        raw.sendall(b"HELLO 1 client=sloth\nCAMPAIGN x\n")
        lines = []
        while not any(l.startswith(b"LEADER") for l in lines):
            lines.append(f.readline())
        token = int([l for l in lines if l.startswith(b"LEADER")][0].split(b"token=")[1].split()[0])
        app_b = self.connect(b, label="app@pod-b")
        app_b.call_ok("CAMPAIGN x")
        app_b.await_follower("x", "pod-a")
        mark = self.backend.mark()
        # Ask for STATUS over and over and never read an answer: the agent cuts us off.
        raw.settimeout(10)
        try:
            raw.sendall(b"STATUS\n" * 20000)
        except OSError:
            pass
        wait_until(lambda: a.find_logs("client reads too slowly; disconnecting"),
                   what="the agent to cut the client off")
        t_cut = time.monotonic()
        left = self.backend.remaining(KEY)
        self.assertHeld(self.backend, KEY, "pod-a", token,
                        "I2: a client cut off by the agent must not get its lock released")
        # On etcd a lease that ran out is no release: pod-b says FOLLOWER holder=- and waits
        # one more ttl (docs/etcd.md) before it leads.
        lead_b, _ = app_b.await_event("LEADER", "x", allow=("FOLLOWER",), timeout=10)
        self.assertGreater(lead_b.t - t_cut, 1.0, "pod-b led before the lease could run out")
        self.assertGreaterEqual(lead_b.t, t_cut + left - 0.05,
                                "pod-b led %.2fs before pod-a's lease ran out"
                                % (t_cut + left - lead_b.t))
        self.assertGreater(lead_b.token, token)
        self.assertNeverDeleted(KEY, mark)
        self.assertTrue(a.alive())

    def test_app_disconnect_while_leading_releases_at_once_and_another_agent_takes_over(self):
        locks = [lock_config("x", ttl="3s", retry_interval="10s")]
        a = self.start_agent("pod-a", self.backend, locks=locks)
        app_a, lead = self.leader_app(a)
        b = self.start_agent("pod-b", self.backend, locks=locks)
        app_b = self.connect(b, label="app@pod-b")
        app_b.call_ok("CAMPAIGN x")
        app_b.await_follower("x", "pod-a")
        self.backend.wait_listening(KEY)
        mark = self.backend.mark()
        left = self.backend.remaining(KEY)
        t_close = time.monotonic()
        app_a.close()
        lead_b = app_b.expect("LEADER", "x", timeout=5)
        # A release (a compare-and-delete), not an expiry: well before the lease ran out.
        self.assertLess(lead_b.t - t_close, min(2.5, max(left, 1.0) - 0.2),
                        "release on disconnect must be prompt (the lease had %.1fs left)" % left)
        self.assertGreater(lead_b.token, lead.token)
        self.assertTenureRecord(KEY, "pod-b", lead_b.token)
        self.assertReleasedOnce(KEY, mark)
        self.assertTrue(a.alive(), "an app leaving does not stop the agent")
        c = self.connect(a, label="probe")
        self.assertEqual(c.call("PING").raw, "OK PONG")
        self.assertNotEqual(str(status_locks(c.status())["x"]["state"]).lower(), "leader")

    def test_lock_is_kept_while_another_campaign_client_remains(self):
        a = self.start_agent("pod-a", self.backend)
        app1, lead = self.leader_app(a)
        app2 = self.connect(a, label="app2")
        app2.call_ok("CAMPAIGN x")
        app2.expect("LEADER", "x", token=lead.token)
        mark = self.backend.mark()
        app1.close()
        app2.assert_no_event(1.0)
        self.assertHeld(self.backend, KEY, "pod-a", lead.token)
        self.assertEqual(self.backend.deletions(KEY, mark), [])
        t_close = time.monotonic()
        app2.close()
        gone = self.wait_key_gone(self.backend, KEY, timeout=5)
        self.assertLess(gone - t_close, 1.5, "the last campaign client left: release at once")
        self.assertReleasedOnce(KEY, mark)

    def test_agent_stops_campaigning_after_its_last_app_left(self):
        a = self.start_agent("pod-a", self.backend,
                             locks=[lock_config("x", ttl="3s", retry_interval="200ms")])
        app, lead = self.leader_app(a)
        app.close()
        self.wait_key_gone(self.backend, KEY, timeout=5)
        mark = self.backend.mark()
        time.sleep(1.5)  # several retry intervals
        self.assertIsNone(self.backend.value(KEY))
        self.assertNoAttempts(KEY, mark)
        # A campaign client returns: a new tenure.
        app2, lead2 = self.leader_app(a)
        self.assertGreater(lead2.token, lead.token)
        self.assertTenureRecord(KEY, "pod-a", lead2.token)

    def test_without_campaign_clients_the_key_is_never_created(self):
        mark = self.backend.mark()
        a = self.start_agent("pod-a", self.backend,
                             locks=[lock_config("x", ttl="2s", retry_interval="200ms")])
        w = self.connect(a, label="watcher")
        w.call_ok("WATCH x")
        w.expect("FOLLOWER", "x", holder="-")
        idle = self.connect(a, label="idle")
        idle.call_ok("PING")
        w.assert_no_event(1.5)
        self.assertFalse(self.backend.exists(KEY))
        self.assertNoAttempts(KEY, mark)
        self.assertNotEqual(str(status_locks(idle.status())["x"]["state"]).lower(), "leader")


class DisconnectEtcdTest(DisconnectScenarios, EtcdScenario, LKTestCase):
    pass


class DisconnectRedisTest(DisconnectScenarios, RedisScenario, LKTestCase):
    """The scenarios on Redis, and `campaign: always` (not backend-specific)."""

    def test_without_campaign_clients_nothing_but_our_reads_touch_the_key(self):
        a = self.start_agent("pod-a", self.redis,
                             locks=[lock_config("x", ttl="2s", retry_interval="200ms")])
        w = self.connect(a, label="watcher")
        w.call_ok("WATCH x")
        w.expect("FOLLOWER", "x", holder="-")
        w.assert_no_event(1.0)
        self.assertEqual(self.redis.call("EXISTS", KEY), 0)
        self.mon.sync(self.redis)
        self.assertEqual(self.mon.select(lambda ln: KEY in ln.args[1:]
                                         and ln.cmd not in ("EXISTS", "GET", "PTTL")), [])

    def test_campaign_always_acquires_without_any_client(self):
        a = self.start_agent("pod-a", self.redis,
                             locks=[lock_config("x", ttl="3s", campaign="always")])
        v = wait_until(lambda: self.redis.get(KEY), timeout=10, what="the key to be acquired")
        ident, _, tok = v.rpartition(":")
        self.assertEqual(ident, "pod-a")
        c = self.connect(a, label="probe")
        x = status_locks(c.status())["x"]
        self.assertEqual(str(x["state"]).lower(), "leader")
        self.assertEqual(int(x["token"]), int(tok))
        w = self.connect(a, label="watcher")
        w.call_ok("WATCH x")
        w.expect("LEADER", "x", token=int(tok))
        # A watcher leaving changes nothing.
        w.close()
        time.sleep(0.5)
        self.assertEqual(self.redis.get(KEY), v)
        # Nobody to step down: the drain releases at once.
        c.close()
        t0 = time.monotonic()
        a.send_signal(signal.SIGTERM)
        self.assertEqual(a.wait(10), 0)
        self.assertLess(time.monotonic() - t0, 5)
        self.assertIsNone(self.redis.get(KEY))
        s = a.drain_summary()
        self.assertEqual((s.get("exit_reason"), s.get("released")), ("drained", 1))

    def test_campaign_always_keeps_leading_after_an_app_leaves(self):
        # SPEC: `always` campaigns regardless of apps. Whether the app leaving ends the tenure
        # (released, then re-acquired) or not is left open; the agent must still hold it.
        a = self.start_agent("pod-a", self.redis,
                             locks=[lock_config("x", ttl="3s", campaign="always")])
        app, lead = self.leader_app(a)
        app.close()
        time.sleep(1.0)
        v = wait_until(lambda: self.redis.get(KEY), timeout=5, what="the key to be held")
        self.assertTrue(v.startswith("pod-a:"), v)
        c = self.connect(a, label="probe")
        self.assertEqual(str(status_locks(c.status())["x"]["state"]).lower(), "leader")



if __name__ == "__main__":
    unittest.main(verbosity=2)
