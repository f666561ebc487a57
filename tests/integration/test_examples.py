"""The client examples against a real agent and a real redis-server (SPEC section 3, I2, I6).

Each example runs as a real subprocess, exactly as a user would run it:
- examples/python/leader_app.py, with this interpreter;
- examples/go (main.go), built with `go build` into a temp dir; skipped when go is not on PATH;
- examples/app.c, the binary that `make all` builds ($LK_APP, else next to $LK_BIN in
  <build>/examples/app, else build/examples/app); skipped when it has not been built.

The scenarios, for every example:
- drain handoff: LEADER with the token that is in Redis, work while leading; on the agent's
  SIGTERM: STEPDOWN, ACK (the drain ends `released`, exit status 0, the key is gone), STOP and
  exit 0, with no leader work after the STEPDOWN;
- no leader work after STEPDOWN while the drain still waits for another campaign client's ACK,
  and the release follows that ACK at once (the example's own ACK came first);
- two replicas: the follower's app leads after the leader's drain, with a greater token;
- LOST (the key deleted in Redis): the app reports LOST and does no more work for that tenure;
- EOF (the agent SIGKILLed): the app stops leader work and exits non-zero at once (I6);
- HMAC auth: with the key from $LEASEKEEPER_AUTH_KEY_FILE (hex or raw) the app leads; with a
  wrong key it is refused, without a key file it says which variable to set.
The examples' stdout is read line by line as it comes (they must flush it themselves:
PYTHONUNBUFFERED is removed from their environment).
"""

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest

from harness import (DEFAULT_TIMEOUT, LKTestCase, REPO_ROOT, SANITIZER_ENV, SANITIZER_PATTERNS,
                     lk_bin, lock_config)

KEY = "leasekeeper/x"

# What each example prints, as regular expressions (group 1: the token where there is one).
# The Python and Go examples print the same lines; the C example has its own wording.
PY_GO_LINES = {
    "campaign": r"^CAMPAIGN lock=x$",
    "leader": r"^LEADER token=(\d+) ttl_ms=\d+$",
    "work": r"^WORK token=(\d+) n=\d+$",
    "follower": r"^FOLLOWER holder=(\S+)$",
    "stepdown": r"^STEPDOWN token=(\d+) -> ACK$",
    "lost": r"^LOST token=(\d+) reason=(\w+)$",
    "released": r"^RELEASED token=(\d+) outcome=(\w+)$",
    "stop": r"^STOP$",
    "eof": r"^EOF$",
    "auth_refused": r"ERR auth_failed\b",  # on stderr
}
C_LINES = {
    "campaign": r"\] campaigning for x$",
    "leader": r"\] LEADER token=(\d+) ",
    "work": r"\] leader \(token (\d+)\): doing work",
    "follower": r"\] follower: (\S+) holds x$",
    "stepdown": r"\] STEPDOWN token=(\d+):",
    "lost": r"\] LOST token=(\d+) \((\w+)\)",
    "released": r"\] RELEASED token=(\d+) outcome=(\w+)$",
    "stop": r"\] STOP: exiting$",
    "eof": r"\] agent gone",
    "auth_refused": r"rejected our MAC",  # on stderr, from lk_client_connect()
}


class Line:
    __slots__ = ("index", "t", "text", "match")

    def __init__(self, index, t, text, match=None):
        self.index, self.t, self.text, self.match = index, t, text, match

    def group(self, n=1):
        return self.match.group(n)

    def __repr__(self):
        return "Line(%d, %r)" % (self.index, self.text)


class AppProcess:
    """One example app as a subprocess. A thread reads its stdout and timestamps every line on
    arrival (time.monotonic()); stderr goes to a file."""

    def __init__(self, argv, env, patterns, label, tmpdir):
        self.argv, self.patterns, self.label = list(argv), patterns, label
        fd, self.err_path = tempfile.mkstemp(prefix="app-err-", dir=tmpdir)
        self._err = os.fdopen(fd, "wb")
        self.lines = []
        self.eof = False
        self._cond = threading.Condition()
        self.started = time.monotonic()
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=self._err, env=env)
        self._reader = threading.Thread(target=self._read, name="app-stdout", daemon=True)
        self._reader.start()

    def _read(self):
        for raw in iter(self.proc.stdout.readline, b""):
            t = time.monotonic()
            text = raw.decode(errors="replace").rstrip("\r\n")
            with self._cond:
                self.lines.append(Line(len(self.lines), t, text))
                self._cond.notify_all()
        with self._cond:
            self.eof = True
            self._cond.notify_all()

    def stderr(self):
        with open(self.err_path, "rb") as f:
            return f.read().decode(errors="replace")

    def output(self):
        with self._cond:
            return "\n".join(ln.text for ln in self.lines)

    def describe(self):
        return ("%s (%s), exit status %s\n----- stdout -----\n%s\n----- stderr -----\n%s"
                % (self.label, " ".join(self.argv), self.proc.poll(), self.output()[-4000:],
                   self.stderr()[-2000:]))

    def find(self, kind, after=-1, before=None):
        """Every line printed for `kind` (a key of the patterns) after line index `after` and
        before index `before`."""
        rx = re.compile(self.patterns[kind])
        out = []
        with self._cond:
            lines = self.lines[after + 1:before]
        for ln in lines:
            m = rx.search(ln.text)
            if m:
                out.append(Line(ln.index, ln.t, ln.text, m))
        return out

    def wait(self, kind, after=-1, timeout=DEFAULT_TIMEOUT, required=True):
        """The first line for `kind` after index `after`, waiting up to timeout seconds for it.
        On timeout (or when the app's stdout closed first): AssertionError, or None if not
        required."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = self.find(kind, after)
                if found:
                    return found[0]
                left = deadline - time.monotonic()
                if self.eof or left <= 0:
                    break
                self._cond.wait(min(left, 0.2))
        if not required:
            return None
        raise AssertionError("%s: %s waiting for a %s line /%s/\n%s"
                             % (self.label, "stdout closed" if self.eof else
                                "timed out after %.1fs" % timeout, kind, self.patterns[kind],
                                self.describe()))

    def wait_exit(self, timeout=DEFAULT_TIMEOUT):
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError("%s still running after %.1fs\n%s"
                                 % (self.label, timeout, self.describe()))
        self._reader.join(timeout=5)
        return rc

    def sanitizer_reports(self):
        return [ln for ln in self.stderr().splitlines()
                if any(p in ln for p in SANITIZER_PATTERNS)]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(timeout=5)
        self.proc.stdout.close()
        self._err.close()


class ExampleScenarios:
    """The scenarios, for any example: a subclass (also an LKTestCase) sets `patterns` and
    implements app_argv()."""

    patterns = PY_GO_LINES
    handles_sigterm = True   # the app stops and exits 0 on its own SIGTERM

    def app_argv(self):
        raise NotImplementedError

    # -- helpers

    def start_app(self, agent=None, lock="x", name=None, use_flag=False, env=None):
        """Run the example for `lock`, pointing it at agent's socket with -s (use_flag) or
        $LEASEKEEPER_SOCKET."""
        e = dict(os.environ)
        for k in ("LEASEKEEPER_SOCKET", "LEASEKEEPER_AUTH_KEY_FILE", "PYTHONUNBUFFERED"):
            e.pop(k, None)
        e.update(SANITIZER_ENV)
        argv = self.app_argv()
        name = name or "example-" + (agent.name if agent else "none")
        argv += ["-n", name]
        if agent is not None:
            if use_flag:
                argv += ["-s", agent.sock_path]
            else:
                e["LEASEKEEPER_SOCKET"] = agent.sock_path
        e.update(env or {})
        argv.append(lock)
        app = AppProcess(argv, e, self.patterns, "%s app@%s" % (
            self.example, agent.identity if agent else "-"), self.tmp)
        self.addCleanup(self._teardown_app, app)
        return app

    def _teardown_app(self, app):
        app.stop()
        if self._failed():
            sys.stderr.write("\n----- %s -----\n" % app.describe())
        reports = app.sanitizer_reports()
        if reports:
            raise AssertionError("sanitizer reports in %s stderr:\n%s"
                                 % (app.label, "\n".join(reports[:40])))

    def leading(self, app, agent, after=-1):
        """Wait for LEADER and a slice of work under its token; check the token is Redis's."""
        lead = app.wait("leader", after)
        token = int(lead.group())
        self.assertEqual(self.redis.get(KEY), agent.value(token),
                         "the token %s printed must be the one in redis" % token)
        work = app.wait("work", lead.index)
        self.assertEqual(int(work.group()), token, work.text)
        return lead, token

    def assertNoWork(self, app, after, before=None, why=""):
        work = app.find("work", after, before)
        self.assertEqual(work, [], "%s: leader work after line %d %s\n%s"
                         % (app.label, after, why, app.describe()))

    # -- scenarios

    def test_drain_stepdown_ack_stop(self):
        self.redis = self.start_redis()
        a = self.start_agent("pod-a", self.redis, locks=[
            lock_config("x", ttl="3s", stepdown_timeout="5s")], shutdown_timeout="15s")
        app = self.start_app(a)
        lead, token = self.leading(app, a)

        a.send_signal(signal.SIGTERM)
        sd = app.wait("stepdown", lead.index)
        self.assertEqual(int(sd.group()), token)
        rel = app.wait("released", sd.index)
        self.assertEqual((int(rel.group(1)), rel.group(2)), (token, "released"))
        stop = app.wait("stop", rel.index)
        self.assertEqual(app.wait_exit(), 0, app.describe())
        self.assertEqual(a.wait(20), 0, "agent exit status after a drain that released all")
        self.assertEqual(self.redis.call("EXISTS", KEY), 0, "the lock's key is released")

        # The app was still connected when the lock was released (it printed RELEASED and STOP
        # after it), and the drain did not wait for stepdown_timeout: the release followed its ACK.
        s = a.drain_summary()
        self.assertEqual(s.get("exit_reason"), "drained", s)
        self.assertEqual((s.get("released"), s.get("expired"), s.get("failed")), (1, 0, 0))
        self.assertLess(s.get("wait_duration_ms"), 4000, s)
        self.assertNoWork(app, sd.index, why="its STEPDOWN")
        self.assertLess(sd.index, rel.index)
        self.assertLess(rel.index, stop.index)

    def test_no_work_after_stepdown_while_drain_waits_for_another_client(self):
        """A second campaign client of the same lock holds the drain up after the example's
        ACK: the example must do no leader work in that time."""
        self.redis = self.start_redis()
        a = self.start_agent("pod-a", self.redis, locks=[
            lock_config("x", ttl="3s", stepdown_timeout="8s")], shutdown_timeout="15s")
        app = self.start_app(a)
        lead, token = self.leading(app, a)
        other = self.connect(a, label="second campaign client")
        other.call_ok("CAMPAIGN x")
        other.expect("LEADER", "x", token=token)

        a.send_signal(signal.SIGTERM)
        other.expect("STEPDOWN", "x", token=token)
        sd = app.wait("stepdown", lead.index)
        # Four work intervals with the lock still held (the agent awaits the second ACK).
        self.assertIsNone(app.wait("work", sd.index, timeout=2.0, required=False),
                          "leader work after STEPDOWN\n" + app.describe())
        self.assertEqual(self.redis.get(KEY), a.value(token), "I2: not released before all ACKs")
        t_ack = time.monotonic()
        self.assertEqual(other.call("ACK x %d" % token).raw, "OK ACK x")
        rel = app.wait("released", sd.index)
        self.assertEqual(rel.group(2), "released")
        self.assertLess(rel.t - t_ack, 3.0, "the release waited for stepdown_timeout: the "
                        "example's ACK did not arrive")
        app.wait("stop", rel.index)
        self.assertEqual(app.wait_exit(), 0, app.describe())
        self.assertEqual(a.wait(20), 0)
        self.assertNoWork(app, sd.index, why="its STEPDOWN")

    def test_two_replicas_follower_leads_after_drain(self):
        self.redis = self.start_redis()
        locks = [lock_config("x", ttl="3s", retry_interval="1s", stepdown_timeout="5s")]
        a = self.start_agent("pod-a", self.redis, locks=locks)
        app_a = self.start_app(a, use_flag=True)
        lead_a, token_a = self.leading(app_a, a)
        b = self.start_agent("pod-b", self.redis, locks=locks)
        app_b = self.start_app(b, use_flag=True)
        fol = app_b.wait("follower")
        while fol.group() == "-":  # "nobody yet", before the agent's first attempt returned
            fol = app_b.wait("follower", fol.index)
        self.assertEqual(fol.group(), "pod-a", fol.text)
        self.assertNoWork(app_b, -1, why="as a follower")

        a.send_signal(signal.SIGTERM)
        sd = app_a.wait("stepdown", lead_a.index)
        app_a.wait("stop", sd.index)
        self.assertEqual(app_a.wait_exit(), 0, app_a.describe())
        self.assertEqual(a.wait(20), 0)
        lead_b, token_b = self.leading(app_b, b, fol.index)
        self.assertGreater(token_b, token_a, "I5: the next tenure's token is greater")
        self.assertGreater(lead_b.t, sd.t, "B leads only after A stepped down")

    def test_lost_when_key_deleted_stops_work(self):
        self.redis = self.start_redis()
        # A long retry interval: after the loss the agent does not lead again during the test.
        a = self.start_agent("pod-a", self.redis, locks=[
            lock_config("x", ttl="3s", retry_interval="60s")])
        app = self.start_app(a)
        lead, token = self.leading(app, a)

        self.redis.call("DEL", KEY)
        lost = app.wait("lost", lead.index)
        self.assertEqual(int(lost.group(1)), token, lost.text)
        self.assertIn(lost.group(2), ("expired", "taken", "renew_deadline", "backend_error"))
        # Four work intervals without a work line (nor a new LEADER to explain one).
        self.assertIsNone(app.wait("leader", lost.index, timeout=2.0, required=False),
                          "the agent led again: the scenario needs a longer retry_interval")
        self.assertNoWork(app, lost.index, why="its LOST")
        self.assertIsNone(app.proc.poll(), "LOST is no reason to exit\n" + app.describe())

        # Nothing is held any more: a drain goes straight to STOP.
        a.send_signal(signal.SIGTERM)
        app.wait("stop", lost.index)
        self.assertEqual(app.wait_exit(), 0, app.describe())
        self.assertEqual(a.wait(20), 0)
        self.assertEqual(app.find("stepdown", lost.index), [], "no STEPDOWN for a lost tenure")

    def test_eof_when_agent_killed_stops_work_and_exits_nonzero(self):
        self.redis = self.start_redis()
        a = self.start_agent("pod-a", self.redis, locks=[lock_config("x", ttl="3s")])
        app = self.start_app(a)
        lead, token = self.leading(app, a)

        t_kill = time.monotonic()
        a.send_signal(signal.SIGKILL)
        eof = app.wait("eof", lead.index)
        rc = app.wait_exit()
        self.assertNotEqual(rc, 0, "exit status after EOF from the agent\n" + app.describe())
        self.assertGreater(rc, 0, "the app must exit on its own, not die from a signal")
        self.assertLess(eof.t - t_kill, 2.0, "I6: the app must stop at once at EOF")
        self.assertNoWork(app, eof.index, why="EOF")
        self.assertEqual(a.wait(10), -signal.SIGKILL)

    def _auth_agent(self, hex_format=True):
        self.redis = self.start_redis()
        path, key = self.write_key_file(hex_format=hex_format)
        a = self.make_agent("pod-a", self.redis, locks=[lock_config("x", ttl="3s")],
                            auth_key_file=path)
        a.auth_key = key
        a.start()
        return a, path

    def test_auth_hmac_hex_key_file(self):
        a, path = self._auth_agent(hex_format=True)
        app = self.start_app(a, env={"LEASEKEEPER_AUTH_KEY_FILE": path})
        self.leading(app, a)

    def test_auth_hmac_raw_key_file(self):
        a, path = self._auth_agent(hex_format=False)
        with open(path, "rb") as f:
            self.assertEqual(len(f.read()), 32)
        app = self.start_app(a, env={"LEASEKEEPER_AUTH_KEY_FILE": path}, use_flag=True)
        self.leading(app, a)

    def test_auth_wrong_key_is_refused(self):
        a, _ = self._auth_agent()
        wrong = os.path.join(self.tmp, "wrong.key")
        with open(wrong, "w") as f:
            f.write(os.urandom(32).hex() + "\n")
        app = self.start_app(a, env={"LEASEKEEPER_AUTH_KEY_FILE": wrong})
        rc = app.wait_exit()
        self.assertGreater(rc, 0, app.describe())
        self.assertRegex(app.output() + app.stderr(), self.patterns["auth_refused"])
        self.assertEqual(app.find("leader"), [])
        self.assertIsNone(self.redis.get(KEY))

    def test_auth_without_key_file_names_the_variable(self):
        a, _ = self._auth_agent()
        app = self.start_app(a)
        rc = app.wait_exit()
        self.assertGreater(rc, 0, app.describe())
        self.assertIn("LEASEKEEPER_AUTH_KEY_FILE", app.output() + app.stderr())
        self.assertEqual(app.find("leader"), [])

    def test_app_sigterm_disconnect_counts_as_stepdown(self):
        if not self.handles_sigterm:
            self.skipTest("this example keeps the default SIGTERM action")
        self.redis = self.start_redis()
        a = self.start_agent("pod-a", self.redis, locks=[lock_config("x", ttl="3s")])
        app = self.start_app(a)
        lead, token = self.leading(app, a)
        app.proc.send_signal(signal.SIGTERM)
        self.assertEqual(app.wait_exit(), 0, app.describe())
        self.assertRegex(app.output(), r"(?m)^EXIT signal=SIGTERM$")
        # I6: the agent counts the disconnect as a step-down and releases the lock at once.
        self.wait_key_gone(self.redis, KEY)
        self.assertTrue(a.alive(), "the agent keeps running without its app")


class PythonExampleTest(ExampleScenarios, LKTestCase):
    example = "python"
    SCRIPT = os.path.join(REPO_ROOT, "examples", "python", "leader_app.py")

    def app_argv(self):
        return [sys.executable, self.SCRIPT]


class GoExampleTest(ExampleScenarios, LKTestCase):
    example = "go"
    binary = None

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        go = shutil.which("go")
        if not go:
            raise unittest.SkipTest("`go` is not on PATH: the Go example is neither built nor "
                                    "tested (apt-get install golang-go)")
        cls.build_dir = tempfile.mkdtemp(prefix="lk-it-go-", dir="/tmp")
        src = os.path.join(REPO_ROOT, "examples", "go")
        env = dict(os.environ)
        env.update({
            "GOCACHE": os.path.join(cls.build_dir, "gocache"),
            "GOPATH": os.path.join(cls.build_dir, "gopath"),
            "GOFLAGS": "-mod=mod",
            "GOPROXY": "off",          # standard library only: nothing to download
            "GOTOOLCHAIN": "local",
            "GOWORK": "off",
            "GO111MODULE": "on",
            "CGO_ENABLED": "0",
            "HOME": cls.build_dir,
        })
        cls.binary = os.path.join(cls.build_dir, "leader-app")
        try:
            p = subprocess.run([go, "build", "-o", cls.binary, "."], cwd=src, env=env,
                               stdin=subprocess.DEVNULL, capture_output=True, timeout=600)
        except subprocess.TimeoutExpired:
            shutil.rmtree(cls.build_dir, ignore_errors=True)
            raise AssertionError("go build of examples/go did not finish within 600s")
        if p.returncode != 0:
            shutil.rmtree(cls.build_dir, ignore_errors=True)
            raise AssertionError("go build of examples/go failed (%d):\n%s%s"
                                 % (p.returncode, p.stdout.decode(errors="replace"),
                                    p.stderr.decode(errors="replace")))

    @classmethod
    def tearDownClass(cls):
        if getattr(cls, "build_dir", None):
            shutil.rmtree(cls.build_dir, ignore_errors=True)
        super().tearDownClass()

    def app_argv(self):
        return [self.binary]


def c_app_path():
    """$LK_APP, else <dir of $LK_BIN>/examples/app (the same build), else build/examples/app;
    None when none of them exists."""
    if os.environ.get("LK_APP"):
        p = os.environ["LK_APP"]
        return p if os.path.isabs(p) else os.path.join(REPO_ROOT, p)
    for p in (os.path.join(os.path.dirname(lk_bin()), "examples", "app"),
              os.path.join(REPO_ROOT, "build", "examples", "app")):
        if os.access(p, os.X_OK):
            return p
    return None


class CExampleTest(ExampleScenarios, LKTestCase):
    example = "c"
    patterns = C_LINES
    handles_sigterm = False

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.binary = c_app_path()
        if cls.binary is None:
            raise unittest.SkipTest("the C example is not built: `make all` builds "
                                    "build/examples/app (or set LK_APP)")
        if not os.access(cls.binary, os.X_OK):
            raise AssertionError("LK_APP=%s is not an executable" % cls.binary)
        src = os.path.join(REPO_ROOT, "examples", "app.c")
        if os.path.exists(src) and os.path.getmtime(src) > os.path.getmtime(cls.binary):
            sys.stderr.write("\n[test_examples] warning: %s is older than examples/app.c "
                             "(run `make all`)\n" % cls.binary)

    def app_argv(self):
        return [self.binary]


if __name__ == "__main__":
    unittest.main(verbosity=2)
