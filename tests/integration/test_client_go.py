"""The Go client library (clients/go) against real agents, on Redis and on etcd.

The app on each agent is the Go test TestRealAgentApp (clients/go/real_agent_test.go), compiled
once with `go test -c`: an Elector printing its transitions timed with CLOCK_MONOTONIC (the clock
of time.monotonic() here), which also fails on its own (exit status 1) if its work outlived a
deadline, if IsLeader() was true after the work's context was done, or if OnStoppedLeading came
before the work returned. Skipped when `go` is not on PATH.

Self-fencing (I8 in proto/PROTOCOL.md): two agents, pod-a and pod-b, ttl 3 s. pod-a's agent is
frozen with SIGSTOP for 8 s while its app leads: the agent says nothing any more, yet its app's
context is cancelled at its tenure's deadline (OnStoppedLeading("deadline")) and its work has
returned before pod-b's app gets LEADER; the two tenures never overlap. The measured margin is
printed. After SIGCONT pod-a's app follows pod-b; then pod-b's agent drains: pod-b's app winds
down for 500 ms after its context is cancelled, the lock stays held until it returned (the ACK
comes after the work returned), and pod-a's app leads again.
"""

import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import unittest

from harness import (DEFAULT_TIMEOUT, REPO_ROOT, EtcdScenario, LKTestCase, RedisScenario,
                     lock_config)

KEY = "leasekeeper/x"
TTL = 3.0
RENEW_DEADLINE = TTL * 2 / 3  # the agent's default renew_deadline
FREEZE = 8.0
WINDDOWN_MS = 500  # pod-b's app winds down that long after its context is cancelled
CLIENT_DIR = os.path.join(REPO_ROOT, "clients", "go")

_build = {}  # "dir", "binary", or "error": built once per process (python3 -m unittest)


def go_env(tmp):
    """The environment of the go tool: offline, standard library only; a GOCACHE in tmp unless
    one is set or the default one (under $HOME) can be written."""
    env = dict(os.environ)
    env.update({"GOFLAGS": "-mod=mod", "GOPROXY": "off", "GOTOOLCHAIN": "local",
                "GOWORK": "off", "GO111MODULE": "on", "CGO_ENABLED": "0"})
    home = env.get("HOME", "")
    if not home or not os.access(home, os.W_OK):
        env.update({"HOME": tmp, "GOPATH": os.path.join(tmp, "gopath")})
    if "GOCACHE" not in env and (not home or not os.access(home, os.W_OK)):
        env["GOCACHE"] = os.path.join(tmp, "gocache")
    return env


def app_binary():
    """Compile clients/go's tests once (the app is one of them); SkipTest without go."""
    if "binary" in _build:
        return _build["binary"]
    if "error" in _build:
        raise AssertionError(_build["error"])
    go = shutil.which("go")
    if not go:
        raise unittest.SkipTest("`go` is not on PATH: the Go client is not tested "
                                "(apt-get install golang-go)")
    tmp = tempfile.mkdtemp(prefix="lk-it-goclient-", dir="/tmp")
    _build["dir"] = tmp
    binary = os.path.join(tmp, "leasekeeper.test")
    try:
        p = subprocess.run([go, "test", "-c", "-o", binary, "."], cwd=CLIENT_DIR, env=go_env(tmp),
                           stdin=subprocess.DEVNULL, capture_output=True, timeout=600)
    except subprocess.TimeoutExpired:
        _build["error"] = "go test -c in clients/go did not finish within 600s"
        raise AssertionError(_build["error"])
    if p.returncode != 0:
        _build["error"] = "go test -c in clients/go failed (%d):\n%s%s" % (
            p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace"))
        raise AssertionError(_build["error"])
    _build["binary"] = binary
    return binary


def tearDownModule():
    if "dir" in _build:
        shutil.rmtree(_build["dir"], ignore_errors=True)


class Line:
    def __init__(self, index, t, word, rest, raw):
        self.index, self.t, self.word, self.rest, self.raw = index, t, word, rest, raw
        self.attrs = dict(w.split("=", 1) for w in rest.split() if "=" in w)

    def __getitem__(self, k):
        return self.attrs[k]

    def __repr__(self):
        return "Line(%d, %r)" % (self.index, self.raw)


class GoApp:
    """TestRealAgentApp on one agent; a thread collects its stdout ("<monotonic> WORD rest")."""

    def __init__(self, binary, agent, tmpdir, winddown_ms=0):
        self.label = "go-app@" + agent.identity
        self.err_path = os.path.join(tmpdir, "go-app-%s.err" % agent.name)
        self._err = open(self.err_path, "wb")
        env = dict(os.environ)
        env.pop("LEASEKEEPER_SOCKET", None)
        env.pop("LEASEKEEPER_AUTH_KEY_FILE", None)
        env.update({"LK_TEST_SOCKET": agent.sock_path, "LK_TEST_LOCK": "x",
                    "LK_TEST_WINDDOWN_MS": str(winddown_ms)})
        self.proc = subprocess.Popen(
            [binary, "-test.run", "^TestRealAgentApp$", "-test.v", "-test.count=1",
             "-test.timeout=10m"], cwd=CLIENT_DIR, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=self._err, env=env)
        self.lines = []  # the timestamped ones
        self.raw = []    # all of them (go test's own too)
        self.eof = False
        self.cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for raw in iter(self.proc.stdout.readline, b""):
            text = raw.decode(errors="replace").rstrip("\n")
            m = re.match(r"(\d+\.\d+) (\S+) ?(.*)$", text)
            with self.cond:
                self.raw.append(text)
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
            out = "\n".join(self.raw)
        with open(self.err_path, "rb") as f:
            err = f.read().decode(errors="replace")
        return "----- %s stdout -----\n%s\n----- stderr -----\n%s" % (
            self.label, out[-6000:], err[-3000:])

    def finish(self, timeout=DEFAULT_TIMEOUT, grace=0.0):
        """The exit status (0: the Go test passed), after SIGTERM if it has not exited
        within `grace` seconds: a test whose Run has returned still has to print its
        verdict and exit, so the caller that expects an exit gives it time."""
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            pass
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait(5)
        self._reader.join(5)
        return rc

    def close(self):
        self.finish()
        self.proc.stdout.close()
        self._err.close()


class ClientGoScenarios:
    def setUp(self):
        super().setUp()
        self.binary = app_binary()

    def start_app(self, agent, winddown_ms=0):
        app = GoApp(self.binary, agent, self.tmp, winddown_ms)
        self.addCleanup(self._teardown_app, app)
        return app

    def _teardown_app(self, app):
        app.close()
        if self._failed():
            print("\n" + app.describe())

    def _thaw(self, agent):
        if agent.alive():
            agent.send_signal(signal.SIGCONT)

    def test_frozen_agent_go_app_stops_at_its_deadline_before_the_successor_leads(self):
        locks = [lock_config("x", ttl="3s", retry_interval="500ms")]
        a = self.start_agent("pod-a", self.backend, locks=locks)
        app_a = self.start_app(a)
        start_a = app_a.wait("STARTED", timeout=DEFAULT_TIMEOUT * 2)
        token_a = int(start_a["token"])
        self.assertEqual(start_a["shares_clock"], "true",
                         "the agent's banner must carry mono_ms of our CLOCK_MONOTONIC")
        self.assertEqual(start_a["leader"], "true", "IsLeader() in OnStartedLeading")
        lead = app_a.find("MSG", pred=lambda ln: ln.rest.startswith("LEADER x "))
        self.assertTrue(lead and "until_mono_ms" in lead[0].attrs,
                        "LEADER without until_mono_ms: the agent predates I8\n" + app_a.describe())
        self.assertAlmostEqual(float(start_a["deadline"]),
                               int(lead[0]["until_mono_ms"]) / 1000, delta=0.002)
        self.assertHeld(self.backend, KEY, "pod-a", token_a)

        b = self.start_agent("pod-b", self.backend, locks=locks)
        app_b = self.start_app(b, winddown_ms=WINDDOWN_MS)
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
        cancel_a = app_a.find("CANCELLED", start_a.index)[0]
        returned_a = app_a.find("RETURNED", start_a.index)[0]
        self.assertLess(cancel_a.index, returned_a.index)
        self.assertLess(returned_a.index, stop_a.index)
        deadline_a = float(stop_a["deadline"])
        late = cancel_a.t - deadline_a
        self.assertGreaterEqual(late, -0.001, "cancelled before its deadline?")
        self.assertLess(late, 0.5, "the work's context was cancelled %.3fs after the deadline"
                        % late)
        self.assertLess(cancel_a.t - t_freeze, RENEW_DEADLINE + 0.5,
                        "the deadline was at most renew_deadline after the last renewal")

        start_b = app_b.wait("STARTED", timeout=DEFAULT_TIMEOUT * 2)
        token_b = int(start_b["token"])
        self.assertGreater(token_b, token_a, "I5")
        margin = start_b.t - returned_a.t
        overlap = max(0.0, returned_a.t - start_b.t)
        print("\n[%s] pod-a's Go app: context cancelled %.3fs after SIGSTOP (%.1f ms after the "
              "deadline), work returned %.1f ms later; pod-b's Go app led %.3fs after that: "
              "margin %.3fs, overlap %.3fs"
              % (self.backend_kind, cancel_a.t - t_freeze, late * 1000,
                 (returned_a.t - cancel_a.t) * 1000, margin, margin, overlap))
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
        msgs = app_a.find("MSG")
        thawed = msgs[-1].index if msgs else -1
        app_a.wait("NEW_LEADER", stop_a.index, pred=lambda ln: ln["holder"] == "pod-b",
                   timeout=DEFAULT_TIMEOUT * 2)
        # Whatever the thawed agent said (LOST, a late RENEWED, FOLLOWER): no new tenure.
        for ln in app_a.find("MSG", thawed):
            self.assertFalse(ln.rest.startswith("LEADER "), ln.raw)
        self.assertEqual(app_a.find("STARTED", stop_a.index), [],
                         "pod-a's app led again while pod-b holds the lock\n" + app_a.describe())
        self.assertEqual(app_b.find("CANCELLED"), [], "pod-b's tenure must go on")
        self.assertTrue(a.alive() and b.alive())
        self.assertHeld(self.backend, KEY, "pod-b", token_b)

        # pod-b's agent drains: STEPDOWN cancels its app's context; the app winds down for
        # WINDDOWN_MS, and only then ACKs: the lock is held until the work returned.
        b.send_signal(signal.SIGTERM)
        cancel_b = app_b.wait("CANCELLED", start_b.index, timeout=DEFAULT_TIMEOUT)
        t_query = time.monotonic()
        holder = self.backend.holder(KEY)
        returned_b = app_b.wait("RETURNED", cancel_b.index)
        if returned_b.t > t_query:
            self.assertEqual(holder, "pod-b", "the lock went before pod-b's work returned")
        stop_b = app_b.wait("STOPPED", returned_b.index)
        self.assertEqual(stop_b["reason"], "stepdown")
        run_b = app_b.wait("RUN_RETURNED", stop_b.index)
        self.assertEqual(run_b["err"], '"<nil>"', "STOP ends Run with nil")
        self.assertEqual(b.wait(DEFAULT_TIMEOUT * 2), 0, "pod-b's drain released the lock")
        self.assertEqual(app_b.finish(grace=DEFAULT_TIMEOUT), 0, "pod-b's Go app failed\n" + app_b.describe())
        start_a2 = app_a.wait("STARTED", stop_a.index, timeout=DEFAULT_TIMEOUT * 2)
        self.assertGreater(int(start_a2["token"]), token_b, "I5")
        self.assertGreater(start_a2.t, returned_b.t, "pod-a led before pod-b's work returned")
        print("[%s] pod-b's drain: the lock was held until its Go app's work returned (%.0f ms "
              "after the cancel); pod-a's app led %.3fs after that"
              % (self.backend_kind, (returned_b.t - cancel_b.t) * 1000,
                 start_a2.t - returned_b.t))
        self.assertHeld(self.backend, KEY, "pod-a", int(start_a2["token"]))

        # SIGTERM: Run's context is cancelled, the tenure ends ("closed"), the Go test passes.
        self.assertEqual(app_a.finish(), 0, "pod-a's Go app failed\n" + app_a.describe())
        self.assertEqual(app_a.find("STOPPED", start_a2.index)[0]["reason"], "closed")
        self.assertEqual(app_a.find("VIOLATION") + app_b.find("VIOLATION"), [])


class ClientGoRedisTest(ClientGoScenarios, RedisScenario, LKTestCase):
    pass


class ClientGoEtcdTest(ClientGoScenarios, EtcdScenario, LKTestCase):
    pass


if __name__ == "__main__":
    unittest.main(verbosity=2)
