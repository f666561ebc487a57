"""What an operator sees while a lock holds off after a backend may have lost tenures (I10):
the log line, `status` (table and JSON) and the metric, on a Redis that was started moments
ago, and the first LEADER no earlier than the server's start + ttl."""

import json
import re
import time
import unittest
import urllib.request

from harness import LKTestCase, RedisServer, free_port, lock_config, wait_until


def metric(text, name, lock):
    m = re.search(r'^%s\{lock="%s"\} (\S+)$' % (re.escape(name), re.escape(lock)), text, re.M)
    return float(m.group(1)) if m else None


class HoldoffStatusTest(LKTestCase):
    def test_a_young_redis_holds_off_visibly_until_it_has_been_up_one_ttl(self):
        # A brand-new server (not a pooled one that has been up a while).
        redis = RedisServer(self.tmp)
        self.addCleanup(redis.stop)
        started = time.monotonic()
        redis.start()
        port = free_port()
        agent = self.start_agent("pod-a", redis, locks=[lock_config("x", ttl="4s")],
                                 http_listen="127.0.0.1:%d" % port, log_format="json")
        app = self.connect(agent, label="app")
        app.call_ok("CAMPAIGN x")

        def holding_off():
            lk = app.status()["locks"][0]
            return lk if lk.get("holdoff_ms", 0) > 0 else None
        lk = wait_until(holding_off, what="STATUS to show a hold-off")
        print("status while holding off: holdoff_ms=%d reason=%r"
              % (lk["holdoff_ms"], lk["holdoff_reason"]))
        self.assertEqual(lk["state"], "follower")
        self.assertLessEqual(lk["holdoff_ms"], 4000)
        self.assertIn("up only", lk["holdoff_reason"])

        table = self.cli("status", "-s", agent.sock_path).stdout
        self.assertRegex(table, r"holding off for \d+ms: redis instance \w+ was up only")
        js = json.loads(self.cli("status", "-s", agent.sock_path, "--json").stdout)
        self.assertGreater(js["locks"][0]["holdoff_ms"], 0)

        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5) as r:
            held_off = metric(r.read().decode(), "leasekeeper_lock_holdoff_seconds", "x")
        self.assertIsNotNone(held_off)
        self.assertGreater(held_off, 0)
        self.assertLessEqual(held_off, 4.0)

        logged = [e for e in agent.log_entries() if e.get("msg", "").startswith("holding off")]
        self.assertEqual(len(logged), 1, "one line per hold-off: %r" % logged)
        self.assertEqual(logged[0]["lock"], "x")
        self.assertGreater(logged[0]["holdoff_ms"], 0)

        lead = app.await_event("LEADER", "x", timeout=15)[0]
        waited = time.monotonic() - started
        print("first LEADER %.3fs after the server was started (ttl 4s)" % waited)
        self.assertGreaterEqual(waited, 4.0)
        self.assertEqual(app.status()["locks"][0]["holdoff_ms"], 0)
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5) as r:
            self.assertEqual(metric(r.read().decode(), "leasekeeper_lock_holdoff_seconds", "x"),
                             0)
        self.assertGreater(lead.token, 0)


if __name__ == "__main__":
    unittest.main()
