"""I3/I7: any number of drain triggers join one drain, and each tenure is released once.
Every scenario runs on Redis and on etcd."""

import os
import signal
import time
import unittest

from harness import EtcdScenario, LKTestCase, RedisScenario, lock_config

KEY = "leasekeeper/x"


class ExactlyOnceScenarios:
    def test_concurrent_drain_triggers_join_one_drain_with_one_release(self):
        a = self.start_agent("pod-a", self.backend, shutdown_timeout="15s",
                             locks=[lock_config("x", ttl="3s", stepdown_timeout="8s")])
        app, lead = self.leader_app(a)
        t = lead.token
        d1 = self.connect(a, label="drainer1")
        d2 = self.connect(a, label="drainer2")
        mark = self.backend.mark()

        # Everything at once: the CLI, signals, and two DRAIN requests.
        cli = self.start_cli("drain", "-s", a.sock_path)
        a.send_signal(signal.SIGTERM)
        d1.send("DRAIN")
        d2.send("DRAIN")
        a.send_signal(signal.SIGINT)
        a.send_signal(signal.SIGTERM)

        self.assertEqual(d1.read_reply().raw, "OK DRAIN")
        self.assertEqual(d2.read_reply().raw, "OK DRAIN")
        app.expect("STEPDOWN", "x", token=t)
        # The app is slow to stop, which leaves the CLI time to connect and join.
        time.sleep(1.5)
        self.assertHeld(self.backend, KEY, "pod-a", t)
        app.call_ok("ACK x %d" % t)

        msgs = app.until_eof(timeout=15)
        self.assertEqual([m.kind for m in msgs], ["RELEASED", "STOP"], msgs)
        self.assertEqual((msgs[0].lock, msgs[0].token, msgs[0]["outcome"]), ("x", t, "released"))
        for d in (d1, d2):
            msgs = d.until_eof(timeout=15)
            self.assertEqual(sorted(m.kind for m in msgs), ["DRAINED", "STOP"],
                             "%s: %s" % (d.label, msgs))
            dr = [m for m in msgs if m.kind == "DRAINED"][0]
            self.assertEqual((dr["released"], dr["expired"], dr["failed"]), ("1", "0", "0"),
                             dr.raw)
            self.assertGreaterEqual(dr.int("elapsed_ms"), 1000)
        self.assertEqual(cli.wait(20), 0, "leasekeeper drain: %s %s" % (cli.stdout(),
                                                                      cli.stderr()))
        self.assertEqual(a.wait(20), 0)

        self.assertIsNone(self.backend.value(KEY))
        self.assertReleasedOnce(KEY, mark)
        self.assertEqual(len(a.drain_summaries()), 1)
        self.assertEqual(a.drain_summary().get("exit_reason"), "drained")

    def test_late_drain_request_joins_the_running_drain(self):
        a = self.start_agent("pod-a", self.backend,
                             locks=[lock_config("x", ttl="3s", stepdown_timeout="8s")])
        app, lead = self.leader_app(a)
        mark = self.backend.mark()
        a.send_signal(signal.SIGTERM)
        app.expect("STEPDOWN", "x", token=lead.token)
        late = self.connect(a, label="late")
        self.assertEqual(late.call("DRAIN").raw, "OK DRAIN")
        os.kill(a.pid, signal.SIGTERM)
        app.call_ok("ACK x %d" % lead.token)
        msgs = late.until_eof(timeout=15)
        dr = [m for m in msgs if m.kind == "DRAINED"]
        self.assertEqual(len(dr), 1, msgs)
        self.assertEqual(dr[0]["released"], "1")
        self.assertEqual(a.wait(20), 0)
        self.assertReleasedOnce(KEY, mark)
        self.assertEqual(len(a.drain_summaries()), 1)

    def test_drain_with_two_locks_releases_each_once(self):
        a = self.start_agent("pod-a", self.backend,
                             locks=[lock_config("x", ttl="3s"), lock_config("y", ttl="3s")])
        app = self.connect(a, label="app")
        app.call_ok("CAMPAIGN x")
        app.call_ok("CAMPAIGN y")
        tokens = {}
        while len(tokens) < 2:
            ev, _ = app.await_event("LEADER", None, allow=("FOLLOWER",))
            tokens[ev.lock] = ev.token
        mark = self.backend.mark()
        cli1 = self.start_cli("drain", "-s", a.sock_path)
        cli2 = self.start_cli("drain", "-s", a.sock_path)
        a.send_signal(signal.SIGTERM)
        for _ in range(2):
            sd = app.expect("STEPDOWN")
            app.call_ok("ACK %s %d" % (sd.lock, tokens[sd.lock]))
        rels = [app.expect("RELEASED"), app.expect("RELEASED")]
        self.assertEqual(sorted((r.lock, r["outcome"]) for r in rels),
                         [("x", "released"), ("y", "released")])
        app.expect("STOP")
        self.assertEqual(a.wait(20), 0)
        # Both CLIs either joined (exit 0) or came too late to reach the agent (exit 2).
        for c in (cli1, cli2):
            self.assertIn(c.wait(20), (0, 2))
        self.assertReleasedOnce("leasekeeper/x", mark)
        self.assertReleasedOnce("leasekeeper/y", mark)
        s = a.drain_summary()
        self.assertEqual((s.get("released"), s.get("expired"), s.get("failed")), (2, 0, 0))


class ExactlyOnceEtcdTest(ExactlyOnceScenarios, EtcdScenario, LKTestCase):
    pass


class ExactlyOnceRedisTest(ExactlyOnceScenarios, RedisScenario, LKTestCase):
    pass


if __name__ == "__main__":
    unittest.main(verbosity=2)
