"""The Python client library (clients/python) against real agents, on Redis and on etcd.

Self-fencing (I8 in proto/PROTOCOL.md): two agents, pod-a and pod-b, and on each an app that
uses leasekeeper.LeaderElector (a subprocess printing its transitions, timed with
time.monotonic(), the same CLOCK_MONOTONIC as this process's). pod-a's agent is frozen with
SIGSTOP for 8 s while its app leads: the agent says nothing any more, yet its app must stop at
its tenure's deadline (on_stopped_leading("deadline")), before pod-b's app gets LEADER; the two
tenures never overlap. The measured margin (pod-b's LEADER minus pod-a's deadline stop) is
printed. After SIGCONT pod-a's app follows pod-b, and leads again when pod-b's agent drains.
"""

import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
import unittest

from harness import (DEFAULT_TIMEOUT, REPO_ROOT, EtcdScenario, LKTestCase, RedisScenario,
                     lock_config)

KEY = "leasekeeper/x"
TTL = 3.0
RENEW_DEADLINE = TTL * 2 / 3  # the agent's default renew_deadline
FREEZE = 8.0
CLIENT_DIR = os.path.join(REPO_ROOT, "clients", "python")

APP = textwrap.dedent(r'''
    import signal, sys, time
    import leasekeeper

    def say(*words):
        print("%.6f" % time.monotonic(), *words, flush=True)

    e = None

    def started(token):
        say("STARTED token=%d deadline=%.6f shares_clock=%s"
            % (token, e.deadline(), e.client.shares_clock))

    def stopped(reason):
        say("STOPPED reason=%s deadline=%.6f" % (reason, e.last_deadline))

    def new_leader(holder):
        say("NEW_LEADER holder=%s" % holder)

    def message(m):
        say("MSG", m.raw)

    e = leasekeeper.LeaderElector(sys.argv[1], socket_path=sys.argv[2], client_name="py-app",
                                  on_started_leading=started, on_stopped_leading=stopped,
                                  on_new_leader=new_leader, on_message=message)
    signal.signal(signal.SIGTERM, lambda *_: e.stop())
    with e:
        say("RUN_RETURNED", e.run())
''')


class Line:
    def __init__(self, index, t, word, rest, raw):
        self.index, self.t, self.word, self.rest, self.raw = index, t, word, rest, raw
        self.attrs = dict(w.split("=", 1) for w in rest.split() if "=" in w)

    def __getitem__(self, k):
        return self.attrs[k]

    def __repr__(self):
        return "Line(%d, %r)" % (self.index, self.raw)


class PyApp:
    """The app subprocess; a thread collects its stdout lines ("<monotonic> WORD rest")."""

    def __init__(self, script, lock, agent, tmpdir):
        self.label = "py-app@" + agent.identity
        self.err_path = os.path.join(tmpdir, "py-app-%s.err" % agent.name)
        self._err = open(self.err_path, "wb")
        env = dict(os.environ)
        env["PYTHONPATH"] = CLIENT_DIR + os.pathsep + env.get("PYTHONPATH", "")
        env.pop("LEASEKEEPER_SOCKET", None)
        self.proc = subprocess.Popen([sys.executable, script, lock, agent.sock_path],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=self._err, env=env)
        self.lines = []
        self.eof = False
        self.cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for raw in iter(self.proc.stdout.readline, b""):
            text = raw.decode(errors="replace").rstrip("\n")
            m = re.match(r"(\d+\.\d+) (\S+) ?(.*)$", text)
            with self.cond:
                if m:
                    self.lines.append(Line(len(self.lines), float(m.group(1)), m.group(2),
                                           m.group(3), text))
                self.cond.notify_all()
        with self.cond:
            self.eof = True
            self.cond.notify_all()

    def find(self, word, after=-1, pred=None):
        with self.cond:
            return [ln for ln in self.lines[after + 1:]
                    if ln.word == word and (pred is None or pred(ln))]

    def wait(self, word, after=-1, pred=None, timeout=DEFAULT_TIMEOUT):
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                found = self.find(word, after, pred)
                if found:
                    return found[0]
                left = deadline - time.monotonic()
                if left <= 0 or self.eof:
                    raise AssertionError("%s: no %s after line %d within %.0fs\n%s"
                                         % (self.label, word, after, timeout, self.describe()))
                self.cond.wait(min(left, 0.2))

    def describe(self):
        with self.cond:
            out = "\n".join(ln.raw for ln in self.lines)
        with open(self.err_path, "rb") as f:
            err = f.read().decode(errors="replace")
        return "----- %s stdout -----\n%s\n----- stderr -----\n%s" % (
            self.label, out[-6000:], err[-3000:])

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._reader.join(5)
        self.proc.stdout.close()
        self._err.close()


class ClientPythonScenarios:
    def start_app(self, agent):
        script = os.path.join(self.tmp, "py_app.py")
        if not os.path.exists(script):
            with open(script, "w") as f:
                f.write(APP)
        app = PyApp(script, "x", agent, self.tmp)
        self.addCleanup(self._teardown_app, app)
        return app

    def _teardown_app(self, app):
        app.stop()
        if self._failed():
            sys.stderr.write("\n" + app.describe() + "\n")

    def test_frozen_agent_app_stops_at_its_deadline_before_the_successor_leads(self):
        locks = [lock_config("x", ttl="3s", retry_interval="500ms")]
        a = self.start_agent("pod-a", self.backend, locks=locks)
        app_a = self.start_app(a)
        start_a = app_a.wait("STARTED", timeout=DEFAULT_TIMEOUT * 2)
        token_a = int(start_a["token"])
        self.assertEqual(start_a["shares_clock"], "True",
                         "the agent's banner must carry mono_ms of our CLOCK_MONOTONIC")
        lead = app_a.find("MSG", pred=lambda ln: ln.rest.startswith("LEADER x "))
        self.assertTrue(lead and "until_mono_ms" in lead[0].attrs,
                        "LEADER without until_mono_ms: the agent predates I8\n" + app_a.describe())
        self.assertHeld(self.backend, KEY, "pod-a", token_a)

        b = self.start_agent("pod-b", self.backend, locks=locks)
        app_b = self.start_app(b)
        app_b.wait("NEW_LEADER", pred=lambda ln: ln["holder"] == "pod-a")
        self.assertEqual(app_b.find("STARTED"), [])

        # A renewal moved pod-a's deadline (RENEWED), then pod-a's agent freezes.
        renewed = app_a.wait("MSG", start_a.index,
                             pred=lambda ln: ln.rest.startswith("RENEWED x "))
        self.assertEqual(int(renewed["token"]), token_a)
        self.addCleanup(self._thaw, a)
        t_freeze = time.monotonic()
        a.send_signal(signal.SIGSTOP)

        stop_a = app_a.wait("STOPPED", start_a.index, timeout=DEFAULT_TIMEOUT)
        self.assertEqual(stop_a["reason"], "deadline",
                         "pod-a's app must stop on its own deadline\n" + app_a.describe())
        deadline_a = float(stop_a["deadline"])
        late = stop_a.t - deadline_a
        self.assertGreaterEqual(late, 0.0, "stopped before its deadline?")
        self.assertLess(late, 0.5, "on_stopped_leading(deadline) %.3fs after the deadline" % late)
        self.assertLess(stop_a.t - t_freeze, RENEW_DEADLINE + 0.5,
                        "the deadline was at most renew_deadline after the last renewal")

        start_b = app_b.wait("STARTED", timeout=DEFAULT_TIMEOUT * 2)
        token_b = int(start_b["token"])
        self.assertGreater(token_b, token_a, "I5")
        margin = start_b.t - stop_a.t
        overlap = max(0.0, stop_a.t - start_b.t)
        print("\n[%s] pod-a's app stopped at its deadline %.3fs after SIGSTOP (%.0f ms after "
              "the deadline); pod-b's app led %.3fs after that: margin %.3fs, overlap %.3fs"
              % (self.backend_kind, stop_a.t - t_freeze, late * 1000, margin, margin, overlap))
        self.assertEqual(overlap, 0.0, "I1: two apps led at once")
        self.assertGreater(margin, 0.0)
        self.assertHeld(self.backend, KEY, "pod-b", token_b)
        self.assertEqual(app_a.find("STARTED", stop_a.index), [])

        # Keep pod-a frozen for FREEZE seconds in all, then thaw it: its agent finds its
        # tenure gone (LOST), and its app follows pod-b without leading.
        left = t_freeze + FREEZE - time.monotonic()
        if left > 0:
            time.sleep(left)
        a.send_signal(signal.SIGCONT)
        thawed = app_a.find("MSG")[-1].index if app_a.find("MSG") else -1
        app_a.wait("NEW_LEADER", stop_a.index, pred=lambda ln: ln["holder"] == "pod-b",
                   timeout=DEFAULT_TIMEOUT * 2)
        # Whatever the thawed agent said (LOST, FOLLOWER), no LEADER for the old tenure.
        for ln in app_a.find("MSG", thawed):
            self.assertFalse(ln.rest.startswith("LEADER "), ln.raw)
        self.assertEqual(app_a.find("STARTED", stop_a.index), [],
                         "pod-a's app led again while pod-b holds the lock\n" + app_a.describe())
        self.assertEqual(app_b.find("STOPPED"), [], "pod-b's tenure must go on")
        self.assertTrue(a.alive() and b.alive())
        self.assertHeld(self.backend, KEY, "pod-b", token_b)

        # pod-b's agent drains: its app steps down (ACK), and pod-a's app leads again.
        b.send_signal(signal.SIGTERM)
        stop_b = app_b.wait("STOPPED", start_b.index, timeout=DEFAULT_TIMEOUT)
        self.assertEqual(stop_b["reason"], "stepdown")
        app_b.wait("RUN_RETURNED", stop_b.index)
        self.assertEqual(b.wait(DEFAULT_TIMEOUT * 2), 0, "pod-b's drain released the lock")
        start_a2 = app_a.wait("STARTED", stop_a.index, timeout=DEFAULT_TIMEOUT * 2)
        self.assertGreater(int(start_a2["token"]), token_b, "I5")
        self.assertGreater(start_a2.t, stop_b.t, "pod-a led before pod-b stepped down")
        self.assertHeld(self.backend, KEY, "pod-a", int(start_a2["token"]))

    def _thaw(self, agent):
        if agent.alive():
            agent.send_signal(signal.SIGCONT)


class ClientPythonRedisTest(ClientPythonScenarios, RedisScenario, LKTestCase):
    pass


class ClientPythonEtcdTest(ClientPythonScenarios, EtcdScenario, LKTestCase):
    pass


if __name__ == "__main__":
    unittest.main(verbosity=2)
