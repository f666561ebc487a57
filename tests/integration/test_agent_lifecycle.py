"""The agent process itself: its socket file, signals, log formats and secrets (SPEC sections 3,
4, 5, 8)."""

import json
import os
import re
import signal
import socket
import stat
import unittest

from harness import LKTestCase, lock_config, wait_until


class SocketFileTest(LKTestCase):
    def setUp(self):
        super().setUp()
        self.redis = self.start_redis()

    def test_stale_socket_file_of_a_dead_agent_is_replaced(self):
        path = os.path.join(self.tmp, "stale.sock")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(path)          # a socket file nobody listens on: what a crashed agent leaves
        s.close()
        self.assertTrue(stat.S_ISSOCK(os.lstat(path).st_mode))
        a = self.start_agent("pod-a", self.redis, socket=path)
        app, lead = self.leader_app(a)
        self.assertGreater(lead.token, 0)

    def test_agent_refuses_a_socket_a_live_agent_owns(self):
        a = self.start_agent("pod-a", self.redis)
        b = self.make_agent("pod-b", self.redis, socket=a.sock_path)
        b.start(wait=False)
        self.assertEqual(b.wait(10), 1)
        self.assertIn("another agent is listening", b.logs())
        # The first agent is undisturbed and still owns its socket.
        c = self.connect(a)
        self.assertEqual(c.call("PING").raw, "OK PONG")

    def test_agent_refuses_a_path_that_is_not_a_socket(self):
        path = os.path.join(self.tmp, "plain-file")
        with open(path, "w") as f:
            f.write("precious\n")
        b = self.make_agent("pod-b", self.redis, socket=path)
        b.start(wait=False)
        self.assertEqual(b.wait(10), 1)
        self.assertIn("is not a socket", b.logs())
        with open(path) as f:
            self.assertEqual(f.read(), "precious\n", "the file must be left alone")

    def test_socket_mode_is_applied_and_the_file_removed_at_exit(self):
        a = self.start_agent("pod-a", self.redis, socket_mode="0600")
        self.assertEqual(stat.S_IMODE(os.stat(a.sock_path).st_mode), 0o600)
        a.send_signal(signal.SIGTERM)
        self.assertEqual(a.wait(10), 0)
        self.assertFalse(os.path.exists(a.sock_path))

    def test_default_socket_mode_is_0660(self):
        a = self.start_agent("pod-a", self.redis)
        self.assertEqual(stat.S_IMODE(os.stat(a.sock_path).st_mode), 0o660)


class SignalsAndLogsTest(LKTestCase):
    def setUp(self):
        super().setUp()
        self.redis = self.start_redis()

    def test_sigquit_logs_a_state_dump_and_keeps_running(self):
        a = self.start_agent("pod-a", self.redis, locks=[lock_config("x"), lock_config("y")])
        app, lead = self.leader_app(a, "x")
        a.send_signal(signal.SIGQUIT)
        wait_until(lambda: len(a.find_logs("state dump: lock")) == 2, what="a state dump")
        dump = {e["lock"]: e for e in a.find_logs("state dump: lock")}
        self.assertEqual(dump["x"]["state"], "leader")
        self.assertEqual(dump["x"]["token"], lead.token)
        self.assertEqual(dump["y"]["state"], "idle")
        self.assertEqual(a.find_logs("state dump")[0]["campaign_clients"], 1)
        self.assertTrue(a.alive())
        self.assertEqual(app.call("PING").raw, "OK PONG")

    def drain_with_ack(self, a):
        app, lead = self.leader_app(a)
        a.send_signal(signal.SIGTERM)
        app.expect("STEPDOWN", "x", token=lead.token)
        app.call_ok("ACK x %d" % lead.token)
        self.assertEqual(a.wait(10), 0)

    def test_json_logs_are_one_object_per_line(self):
        a = self.start_agent("pod-a", self.redis, log_format="json")
        self.drain_with_ack(a)
        lines = [l for l in a.logs().splitlines() if l.strip()]
        self.assertGreater(len(lines), 2)
        for l in lines:
            o = json.loads(l)
            self.assertTrue({"ts", "level", "msg"} <= set(o), l)
        s = a.drain_summary()
        for field in ("exit_reason", "wait_duration_ms", "released", "expired", "failed"):
            self.assertIn(field, s)

    def test_text_logs_are_logfmt_with_the_drain_summary(self):
        a = self.start_agent("pod-a", self.redis, log_format="text")
        self.drain_with_ack(a)
        summary = [l for l in a.logs().splitlines() if 'msg="drain complete"' in l]
        self.assertEqual(len(summary), 1, a.logs())
        self.assertRegex(summary[0], r'^ts=\S+ level=info msg="drain complete" '
                                     r'exit_reason=drained wait_duration_ms=\d+ released=1 '
                                     r'expired=0 failed=0')


class SecretsTest(LKTestCase):
    PASSWORD = "s3cret-redis-password-do-not-log"

    def test_redis_password_from_file_works_and_never_appears_in_logs(self):
        redis = self.start_redis()
        # Set after start: the harness checks the server with a PING that has no password.
        redis.call("CONFIG", "SET", "requirepass", self.PASSWORD)
        pw = os.path.join(self.tmp, "redis-password")
        with open(pw, "w") as f:
            f.write(self.PASSWORD + "\n")
        backends = [{"name": "main", "type": "redis", "address": redis.address,
                     "password_file": pw, "timeout": "500ms"}]
        a = self.start_agent("pod-a", redis, backends=backends)
        app, lead = self.leader_app(a)
        # A wrong password: refused, reported, and still not logged.
        bad = os.path.join(self.tmp, "wrong-password")
        with open(bad, "w") as f:
            f.write(self.PASSWORD + "-wrong\n")
        b = self.start_agent("pod-b", redis, backends=[dict(backends[0], password_file=bad)])
        wait_until(lambda: re.search(r"auth|AUTH|password", b.logs()), what="an AUTH error")
        app.close()
        for agent in (a, b):
            agent.send_signal(signal.SIGTERM)
            agent.wait(10)
            self.assertNotIn(self.PASSWORD, agent.logs())


if __name__ == "__main__":
    unittest.main()
