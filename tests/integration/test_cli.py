"""The command line (docs/cli.md): check-config, version, --help, status, drain, watch and run.
Output formats, usage errors and the exit codes of every command: test_cli_output.py."""

import json
import os
import re
import signal
import time
import unittest

from harness import LKTestCase, lock_config, status_locks, wait_until

COMMANDS = ("agent", "drain", "status", "watch", "run", "check-config", "version")

BAD_TTL = """\
identity: pod-a
socket: /tmp/lk-cli-bad.sock
backends:
  - name: main
    type: redis
    address: "127.0.0.1:6379"
locks:
  - name: x
    backend: main
    ttl: "10"
"""

BAD_TWO_ERRORS = """\
identity: pod-a
socket: /tmp/lk-cli-bad.sock
backends:
  - name: main
    type: redis
    address: "127.0.0.1:6379"
locks:
  - name: x
    backend: main
    ttl: 3s
    tll: 3s
  - name: y
    backend: nope
"""


class ConfigCliTest(LKTestCase):
    def write(self, name, text):
        path = os.path.join(self.tmp, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_check_config_accepts_a_good_config(self):
        a = self.make_agent("pod-a", "127.0.0.1:6379",
                            locks=[lock_config("x", ttl="10s", renew_interval="3s",
                                               renew_deadline="6s", retry_interval="1s",
                                               stepdown_timeout="5s", release_timeout="3s",
                                               campaign="when_app_connected",
                                               key="myapp/scheduler"),
                                   lock_config("y", ttl="1m30s", campaign="always")],
                            socket_mode="0660", shutdown_timeout="25s")
        r = self.cli("check-config", "-c", a.config_path)
        self.assertEqual(r.rc, 0, r)

    def test_check_config_names_file_line_column_and_field(self):
        path = self.write("bad.yaml", BAD_TTL)
        r = self.cli("check-config", "-c", path)
        self.assertEqual(r.rc, 1, r)
        # ttl is on line 10; the column may be the key's (5) or the value's (10).
        self.assertRegex(r.output, r'(?m)(^|/)bad\.yaml:10:(5|10): locks\[0\]\.ttl: \S')
        self.assertIn("unit", r.output)

    def test_check_config_reports_every_error_at_once(self):
        path = self.write("bad2.yaml", BAD_TWO_ERRORS)
        r = self.cli("check-config", "-c", path)
        self.assertEqual(r.rc, 1, r)
        self.assertRegex(r.output, r'(?m)(^|/)bad2\.yaml:11:(5|10): locks\[0\]\.tll: \S')
        self.assertRegex(r.output, r'(?m)(^|/)bad2\.yaml:13:(5|14): locks\[1\]\.backend: \S')

    def test_agent_refuses_a_bad_config(self):
        path = self.write("bad.yaml", BAD_TTL)
        r = self.cli("agent", "-c", path, timeout=15)
        self.assertNotEqual(r.rc, 0)
        self.assertRegex(r.output, r"bad\.yaml:10:\d+: locks\[0\]\.ttl")

    def test_version(self):
        r = self.cli("version")
        self.assertEqual(r.rc, 0, r)
        self.assertRegex(r.stdout, r"\d")

    def test_help_for_every_command_exits_zero(self):
        r = self.cli("--help")
        self.assertEqual(r.rc, 0, r)
        for c in COMMANDS:
            self.assertIn(c, r.stdout, "`leasekeeper --help` does not mention %s" % c)
        for c in COMMANDS:
            r = self.cli(c, "--help")
            self.assertEqual(r.rc, 0, r)
            self.assertTrue(r.stdout.strip(), "`%s --help` printed nothing on stdout" % c)

    def test_drain_against_a_missing_socket_exits_2(self):
        missing = os.path.join(self.tmp, "nobody.sock")
        r = self.cli("drain", "-s", missing, timeout=20)
        self.assertEqual(r.rc, 2, r)
        r = self.cli("drain", timeout=20, env={"LEASEKEEPER_SOCKET": missing})
        self.assertEqual(r.rc, 2, r)

    def test_status_against_a_missing_socket_exits_2(self):
        r = self.cli("status", "-s", os.path.join(self.tmp, "nobody.sock"))
        self.assertEqual(r.rc, 2, r)

    def test_drain_usage_error_exits_64_not_2(self):
        # A typo in a preStop hook must not read as "the agent had already gone" (2).
        r = self.cli("drain", "--timeout", "soon", timeout=20)
        self.assertEqual(r.rc, 64, r)
        self.assertIn('leasekeeper drain: --timeout "soon"', r.stderr)


class AgentCliTest(LKTestCase):
    def setUp(self):
        super().setUp()
        self.redis = self.start_redis()

    def test_status_table_and_json(self):
        a = self.start_agent("pod-a", self.redis, locks=[lock_config("x"), lock_config("y")])
        app, lead = self.leader_app(a, "x")
        r = self.cli("status", "-s", a.sock_path)
        self.assertEqual(r.rc, 0, r)
        x_lines = [l for l in r.stdout.splitlines() if re.search(r"(^|\s)x(\s|$)", l)]
        self.assertEqual(len(x_lines), 1, r.stdout)
        self.assertIn(str(lead.token), x_lines[0])
        self.assertRegex(x_lines[0].lower(), r"leader")
        self.assertTrue([l for l in r.stdout.splitlines() if re.search(r"(^|\s)y(\s|$)", l)],
                        r.stdout)

        r = self.cli("status", "-s", a.sock_path, "--json")
        self.assertEqual(r.rc, 0, r)
        st = json.loads(r.stdout)
        self.assertEqual(st.get("identity"), "pod-a")
        x = status_locks(st)["x"]
        self.assertEqual(str(x["state"]).lower(), "leader")
        self.assertEqual(int(x["token"]), lead.token)

    def test_status_uses_leasekeeper_socket_from_the_environment(self):
        a = self.start_agent("pod-a", self.redis)
        r = self.cli("status", "--json", env={"LEASEKEEPER_SOCKET": a.sock_path})
        self.assertEqual(r.rc, 0, r)
        self.assertEqual(json.loads(r.stdout).get("identity"), "pod-a")

    def test_drain_blocks_until_drained_and_exits_zero(self):
        a = self.start_agent("pod-a", self.redis, locks=[lock_config("x", stepdown_timeout="5s")])
        app, lead = self.leader_app(a)
        d = self.start_cli("drain", "-s", a.sock_path)
        app.expect("STEPDOWN", "x", token=lead.token)
        time.sleep(0.5)
        self.assertIsNone(d.proc.poll(), "drain returned before the app acknowledged")
        app.call_ok("ACK x %d" % lead.token)
        self.assertEqual(d.wait(20), 0, d.stderr())
        self.assertEqual(a.wait(20), 0)

    def test_watch_prints_events_as_they_come(self):
        a = self.start_agent("pod-a", self.redis)
        w = self.start_cli("watch", "-s", a.sock_path, "x")
        wait_until(lambda: "FOLLOWER" in w.stdout(), timeout=10,
                   what="watch to print the current state")
        app, lead = self.leader_app(a)
        wait_until(lambda: re.search(r"LEADER x token=%d" % lead.token, w.stdout()), timeout=10,
                   what="watch to print LEADER (unbuffered)")

    def test_run_starts_the_command_only_while_leader_and_acks_stepdown(self):
        locks = [lock_config("x", ttl="3s", retry_interval="10s", stepdown_timeout="8s")]
        a = self.start_agent("pod-a", self.redis, locks=locks)
        b = self.start_agent("pod-b", self.redis, locks=locks)
        app_a, lead_a = self.leader_app(a)
        d = os.path.join(self.tmp, "run")
        os.mkdir(d)
        script = ('trap \'echo term >> "$D/signals"; exit 0\' TERM; '
                  'echo "$LEASEKEEPER_TOKEN" > "$D/token.tmp"; mv "$D/token.tmp" "$D/token"; '
                  'while :; do sleep 0.1; done')
        run = self.start_cli("run", "-s", b.sock_path, "--lock", "x", "--", "sh", "-c", script,
                             env={"D": d})
        token_file = os.path.join(d, "token")
        self.wait_release_subscriber(self.redis, "leasekeeper/x")
        time.sleep(1.0)
        self.assertFalse(os.path.exists(token_file), "CMD started while pod-a leads")
        # Hand the lock over: pod-b's run starts its command with the new token.
        a.send_signal(signal.SIGTERM)
        app_a.expect("STEPDOWN", "x")
        app_a.call_ok("ACK x %d" % lead_a.token)
        self.assertEqual(a.wait(20), 0)
        wait_until(lambda: os.path.exists(token_file), timeout=10, what="run to start CMD")
        with open(token_file) as f:
            tok = int(f.read().strip())
        self.assertGreater(tok, lead_a.token)
        self.assertEqual(self.redis.get("leasekeeper/x"), "pod-b:%d" % tok)
        # Drain pod-b: run gets STEPDOWN, SIGTERMs CMD, waits for it, ACKs: a clean release.
        b.send_signal(signal.SIGTERM)
        self.assertEqual(b.wait(20), 0, b.tail())
        with open(os.path.join(d, "signals")) as f:
            self.assertIn("term", f.read())
        s = b.drain_summary()
        self.assertEqual((s.get("exit_reason"), s.get("released")), ("drained", 1))
        self.assertIsNone(self.redis.get("leasekeeper/x"))
        run.wait(15)


if __name__ == "__main__":
    unittest.main(verbosity=2)
