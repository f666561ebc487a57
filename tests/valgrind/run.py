#!/usr/bin/env python3
"""valgrind memcheck over one integration scenario per backend (tests/valgrind/README.md).

Four scenarios, one scenario (ValgrindScenario) on four backends: Redis and etcd, each also over
TLS with client certificates, each a private server started through
tests/integration/harness.py. Two agents run under `valgrind --tool=memcheck` (pod-a; pod-b
with HMAC auth): apps campaign on both (pod-a leads x, pod-b follows x and leads y), renewals,
SIGQUIT, bad input on both sockets, STATUS and HTTP, a backend restart under both, a graceful
handoff (SIGTERM to the leader of x, the other leads) and a drain of the other agent (DRAIN).

Then each agent's valgrind log must show 0 errors and 0 bytes definitely or indirectly lost
(still reachable is allowed: libcurl, OpenSSL and libevent may keep memory until exit), and
the agent must have exited 0 (valgrind exits 99 on any error). One summary line per agent:

  valgrind <scenario> <agent>: errors=0 definite=0 indirect=0 possible=0 reachable=N ... OK

Usage: LK_BIN=build/vg/leasekeeper python3 tests/valgrind/run.py [-k redis|etcd|tls] [-v]
Environment: LK_BIN, VALGRIND (the valgrind binary), LK_VALGRIND_FLAGS (extra flags),
LK_BACKENDS, LK_KEEP_TMP=1 (keep the agents' dirs and valgrind logs), and the harness's own.
Exit status 0 when every scenario passed and every log is clean.
"""

import glob
import os
import re
import shlex
import shutil
import signal
import sys
import time
import unittest
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))

# The harness reads these at import. Waits for events are doubled (valgrind slows the agent's
# replies, not much: it idles most of the time); the agent's own startup and exit waits are
# scaled by Agent.slowdown (LK_AGENT_WRAPPER_SLOWDOWN) because it runs under a wrapper.
os.environ.setdefault("LK_TIMEOUT_SCALE", "2")
os.environ.setdefault("LK_BIN", os.path.join(REPO, "build", "vg", "leasekeeper"))
os.environ.setdefault("LK_REDIS_POOL", "1")  # one spare: the Redis scenario uses one

from harness import (DEFAULT_TIMEOUT, EtcdBackend, EtcdScenario, LKTestCase,  # noqa: E402
                     RedisBackend, RedisScenario, backends_enabled, free_port, lock_config,
                     status_locks, wait_until)

SUPP = os.path.join(HERE, "leasekeeper.supp")
KEY = "leasekeeper/x"
RESULTS = []  # (scenario, agent, summary dict, problems)


def valgrind_wrapper():
    vg = os.environ.get("VALGRIND") or shutil.which("valgrind") or "valgrind"
    args = [vg, "--tool=memcheck", "--leak-check=full",
            "--show-leak-kinds=definite,indirect,possible",
            "--errors-for-leak-kinds=definite,indirect", "--error-exitcode=99",
            "--track-origins=no", "--num-callers=30", "--child-silent-after-fork=yes",
            "--suppressions=" + SUPP, "--log-file={dir}/valgrind.%p.log"]
    args += shlex.split(os.environ.get("LK_VALGRIND_FLAGS", ""))
    return args


_NUM = r"([0-9,]+)"


def parse_valgrind_log(text):
    """The figures of a memcheck log: errors, definite/indirect/possible/reachable bytes,
    whether all blocks were freed, and whether the summaries were found at all."""
    def num(s):
        return int(s.replace(",", ""))
    d = {"errors": None, "definite": 0, "indirect": 0, "possible": 0, "reachable": 0,
         "suppressed": 0, "all_freed": False, "leak_summary": False}
    m = re.search(r"ERROR SUMMARY: %s errors from %s contexts" % (_NUM, _NUM), text)
    if m:
        d["errors"] = num(m.group(1))
    if "All heap blocks were freed -- no leaks are possible" in text:
        d["all_freed"] = True
    for key, label in (("definite", "definitely lost"), ("indirect", "indirectly lost"),
                       ("possible", "possibly lost"), ("reachable", "still reachable"),
                       ("suppressed", "suppressed")):
        m = re.search(r"%s: %s bytes in %s blocks" % (label, _NUM, _NUM), text)
        if m:
            d[key] = num(m.group(1))
            d["leak_summary"] = True
    return d


def error_excerpt(text, limit=200):
    """The error and leak records of a memcheck log (what follows the banner), for a report."""
    lines = [re.sub(r"^==[0-9]+== ?", "", ln) for ln in text.splitlines()]
    try:
        start = max(i for i, ln in enumerate(lines) if ln.startswith("Command:")) + 1
    except ValueError:
        start = 0
    body = [ln for ln in lines[start:] if not ln.startswith(("Parent PID:", "HEAP SUMMARY"))]
    return "\n".join(body[:limit])


def http_get(url, timeout):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


class ValgrindScenario:
    """Campaign, bad input, STATUS and HTTP, a graceful handoff and a drain, on two agents
    running under memcheck; then their logs are read."""

    def agent_under_valgrind(self, identity, **kw):
        port = free_port()
        a = self.make_agent(identity, self.backend, wrapper=valgrind_wrapper(),
                            locks=[lock_config("x", ttl="4s", stepdown_timeout="10s",
                                               retry_interval="2s"),
                                   lock_config("y", ttl="4s", retry_interval="2s")],
                            http_listen="127.0.0.1:%d" % port, shutdown_timeout="20s", **kw)
        a.http_base = "http://127.0.0.1:%d" % port
        return a

    def test_campaign_handoff_drain_bad_input(self):
        t0 = time.monotonic()
        key_path, key = self.write_key_file()
        agents = []
        # Registered before the agents' own teardowns, so it runs after them: when the
        # scenario failed half-way, the logs of the stopped agents are still read and shown.
        self.addCleanup(self.check_logs_after_failure, agents, t0)
        a = self.agent_under_valgrind("pod-a", client_idle_timeout="2s")
        b = self.agent_under_valgrind("pod-b", auth_key_file=key_path)
        b.auth_key = key
        agents += [a, b]
        # Both start at once: valgrind's startup is the slow part.
        a.start(wait=False)
        b.start(wait=False)
        a.wait_ready(DEFAULT_TIMEOUT * a.slowdown)
        b.wait_ready(DEFAULT_TIMEOUT * b.slowdown)

        # Campaign: pod-a leads x, pod-b follows x (listening for its release notice: Redis
        # pub/sub, an etcd watch) and leads y. A local watcher of x on each.
        app_a, lead_a = self.leader_app(a, "x")
        app_b = self.connect(b, label="app@pod-b")
        app_b.call_ok("CAMPAIGN x")
        app_b.await_follower("x", "pod-a")
        self.backend.wait_listening(KEY)
        for ag in (a, b):
            self.connect(ag, label="watch@" + ag.identity).call_ok("WATCH x")
        app_b.call_ok("CAMPAIGN y")
        app_b.await_event("LEADER", "y", allow=("FOLLOWER",))
        apps = {a: app_a, b: app_b}
        # A renewal on each leader.
        for app, lock in ((app_a, "x"), (app_b, "y")):
            app.keep_renewed = True
            app.expect("RENEWED", lock)
            app.keep_renewed = False

        # SIGQUIT: the state dump.
        for ag in (a, b):
            n = len(ag.find_logs("state dump"))
            ag.send_signal(signal.SIGQUIT)
            wait_until(lambda: len(ag.find_logs("state dump")) > n,
                       what="a state dump from " + ag.identity)

        # Bad input on both sockets.
        self.bad_input(a)
        self.bad_input(b, key=key)

        # STATUS and HTTP.
        for ag, state in ((a, "leader"), (b, "follower")):
            st = status_locks(apps[ag].status())
            self.assertEqual(str(st["x"]["state"]).lower(), state)
            self.scrape(ag)

        # The backend restarts under both: connections drop, what was pending fails (pod-b's
        # release-notice subscription or etcd watch among them), both reconnect. Redis comes
        # back empty (LOST, a hold-off of a ttl, then whoever retries first leads x again);
        # etcd keeps its data and leases (pod-a goes on leading, pod-b's watch resumes).
        led = self.restart_backend(apps)

        # Graceful handoff: SIGTERM drains the leader of x (the signal reaches the agent:
        # valgrind runs it in its own pid), its app ACKs, the other agent leads x.
        leader = a if "x" in led[a] else b
        other = b if leader is a else a
        self.backend.wait_listening(KEY)
        leader.send_signal(signal.SIGTERM)
        rc = {leader: self.drained(leader, apps[leader], led[leader])}
        apps[other].await_event("LEADER", "x", allow=("FOLLOWER",))
        led[other].add("x")

        # Drain the other agent through DRAIN on its socket.
        d = self.connect(other, label="drain@" + other.identity)
        d.call_ok("DRAIN")
        rc[other] = self.drained(other, apps[other], led[other], requester=d)
        self.assertIsNone(self.backend.value(KEY))
        self.assertIsNone(self.backend.value("leasekeeper/y"))

        self.check_logs([(a, rc[a]), (b, rc[b])], time.monotonic() - t0)

    def scrape(self, ag):
        """/metrics, /healthz, /readyz, /leader/x and a 404 over HTTP."""
        code, text = http_get(ag.http_base + "/metrics", DEFAULT_TIMEOUT)
        self.assertEqual(code, 200)
        self.assertIn("leasekeeper_", text)
        self.assertEqual(http_get(ag.http_base + "/healthz", DEFAULT_TIMEOUT)[0], 200)
        wait_until(lambda: http_get(ag.http_base + "/readyz", DEFAULT_TIMEOUT)[0] == 200,
                   what="/readyz 200 on " + ag.identity)
        self.assertIn(http_get(ag.http_base + "/leader/x", DEFAULT_TIMEOUT)[0], (200, 503))
        self.assertEqual(http_get(ag.http_base + "/nosuchpath", DEFAULT_TIMEOUT)[0], 404)

    def drained(self, agent, app, led, requester=None):
        """The drain as the agent's campaign app sees it: a STEPDOWN per lock it leads, each
        ACKed, a RELEASED each, STOP, EOF; the agent exits; one `drain complete` line with
        every lock released. Returns the exit status."""
        acked = set()
        while acked != led:
            sd, _ = app.await_event("STEPDOWN", allow=("FOLLOWER", "LEADER"))
            app.call_ok("ACK %s %d" % (sd.lock, sd.token))
            acked.add(sd.lock)
        rest = app.until_eof(timeout=DEFAULT_TIMEOUT)
        self.assertEqual(sorted(m.lock for m in rest if m.kind == "RELEASED"), sorted(led),
                         [m.raw for m in rest])
        self.assertTrue(all(m.get("outcome") == "released" for m in rest
                            if m.kind == "RELEASED"), [m.raw for m in rest])
        self.assertIn("STOP", [m.kind for m in rest])
        if requester is not None:
            self.assertIn("DRAINED", [m.kind for m in requester.until_eof(DEFAULT_TIMEOUT)])
        rc = agent.wait(30)
        s = agent.drain_summary()
        self.assertEqual((s.get("exit_reason"), s.get("released"), s.get("expired"),
                          s.get("failed")), ("drained", len(led), 0, 0))
        return rc

    def restart_backend(self, apps):
        """Restart the backend, then wait until x has a leader again and y is led by pod-b,
        each proven after the restart (the lock's latest event since then on the leading
        app is LEADER or RENEWED) and shown by STATUS. Returns {agent: set of locks led}."""
        for app in apps.values():
            app.events_for(0.1)
            app.keep_renewed = True
        self.backend.restart()
        t_restarted = time.monotonic()
        last = {ag: {} for ag in apps}
        seen = []
        deadline = time.monotonic() + DEFAULT_TIMEOUT * 3

        def proven(ag, lock):
            return last[ag].get(lock) in ("LEADER", "RENEWED")
        a, b = list(apps)
        while not ((proven(a, "x") or proven(b, "x")) and proven(b, "y")):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("no leaders proven after the %s restart; events: %s"
                                     % (self.backend_kind, seen))
            for ag, app in apps.items():
                ev = app.next_event(0.1)
                if ev is not None:
                    seen.append("%s: %s" % (ag.identity, ev.raw))
                    if ev.t > t_restarted and ev.lock:
                        last[ag][ev.lock] = ev.kind
        led = {}
        for ag, app in apps.items():
            app.keep_renewed = False
            st = status_locks(app.status())
            led[ag] = {l for l in ("x", "y") if str(st[l]["state"]).lower() == "leader"}
        self.assertEqual(led[a] & led[b], set(), "one leader per lock")
        self.assertIn("y", led[b])
        self.assertIn("x", led[a] | led[b])
        self.recovery_events = seen
        return led

    def bad_input(self, agent, key=None):
        # A client that says HELLO and then nothing: closed after client_idle_timeout.
        idle = None
        if agent.config.get("client_idle_timeout"):
            idle = self.connect(agent, label="idle@" + agent.identity)

        # After HELLO: garbage, an unknown verb, malformed arguments, an unknown lock, an
        # ACK without a tenure; the connection stays; then an over-long line closes it.
        c = self.connect(agent, label="bad@" + agent.identity)
        for line, code in ((b"\x00\x01\x02\xff\xfe\x7f\x1b[0m garbage\n", "bad_request"),
                           (b"FROB x\n", "unknown_verb"),
                           (b"ACK x notanumber\n", None),
                           (b"CAMPAIGN nosuchlock\n", "unknown_lock"),
                           (b"CAMPAIGN bad/name!\n", None),
                           (b"ACK x 12345\n", None)):
            c.send_raw(line)
            r = c.read_line()
            self.assertEqual(r.kind, "ERR", "%r answered %r" % (line, r.raw))
            if code:
                self.assertEqual(r.code, code, "%r answered %r" % (line, r.raw))
        self.assertEqual(c.call("PING").raw, "OK PONG")
        c.send_raw(b"PING " + b"A" * 5000 + b"\n")
        self.assertEqual(c.read_line().code, "line_too_long")
        c.expect_eof(timeout=DEFAULT_TIMEOUT)

        # Over-long without any newline.
        c = self.connect(agent, label="long@" + agent.identity)
        c.send_raw(b"B" * 6000)
        self.assertEqual(c.read_line().code, "line_too_long")
        c.expect_eof(timeout=DEFAULT_TIMEOUT)

        # Bad HELLOs: a version we do not speak; no mac / a wrong mac where auth is on, a
        # request before HELLO where it is off.
        c = self.connect(agent, hello=False, label="hello2@" + agent.identity)
        c.read_banner()
        c.send("HELLO 2")
        self.assertEqual(c.read_line().code, "unsupported_version")
        c.expect_eof(timeout=DEFAULT_TIMEOUT)
        c = self.connect(agent, hello=False, label="badhello@" + agent.identity)
        c.read_banner()
        if key:
            r = c.hello(mac="00" * 32)
            self.assertEqual((r.kind, r.code), ("ERR", "auth_failed"))
            c.expect_eof(timeout=DEFAULT_TIMEOUT)
            c = self.connect(agent, hello=False, label="nomac@" + agent.identity)
            c.read_banner()
            r = c.hello(client_name="nomac")
            self.assertEqual((r.kind, r.code), ("ERR", "auth_failed"))
        else:
            c.send("CAMPAIGN x")
            self.assertEqual(c.read_line().code, "hello_required")
        c.expect_eof(timeout=DEFAULT_TIMEOUT)

        # Clients that vanish: mid-line after HELLO, and before HELLO.
        c = self.connect(agent, label="cut@" + agent.identity)
        c.send_raw(b"CAMP")
        c.close()
        c = self.connect(agent, hello=False, label="silent@" + agent.identity)
        c.read_banner()
        c.close()
        if idle is not None:
            idle.expect_eof(timeout=DEFAULT_TIMEOUT, allow_lines=True)

    def check_logs_after_failure(self, agents, t0):
        if self._logs_checked:
            return
        for ag in agents:
            if ag.proc is not None and ag.proc.poll() is None:
                ag.stop()
        try:
            self.check_logs([(ag, ag.proc.returncode if ag.proc else None) for ag in agents],
                            time.monotonic() - t0, scenario_failed=True)
        except AssertionError as e:
            sys.stderr.write("\n[valgrind] after the failure:\n%s\n" % e)

    _logs_checked = False

    def check_logs(self, agents, elapsed, scenario_failed=False):
        self._logs_checked = True
        problems_all = []
        for ag, rc in agents:
            logs = sorted(glob.glob(os.path.join(ag.dir, "valgrind.*.log")))
            problems = []
            text = ""
            if len(logs) != 1:
                problems.append("expected one valgrind log in %s, found %r" % (ag.dir, logs))
            if logs:
                with open(logs[0], errors="replace") as f:
                    text = f.read()
            s = parse_valgrind_log(text)
            s["rc"] = rc
            s["log"] = logs[0] if logs else None
            if s["errors"] is None:
                problems.append("no ERROR SUMMARY in the valgrind log (did valgrind finish?)")
            elif s["errors"]:
                problems.append("%d valgrind errors" % s["errors"])
            if not (s["leak_summary"] or s["all_freed"]):
                problems.append("no LEAK SUMMARY in the valgrind log")
            if s["definite"]:
                problems.append("definitely lost: %d bytes" % s["definite"])
            if s["indirect"]:
                problems.append("indirectly lost: %d bytes" % s["indirect"])
            if rc != 0:
                problems.append("agent exited %r (99: valgrind errors)" % rc)
            if scenario_failed:
                problems.append("the scenario failed (see above)")
            RESULTS.append((self.backend_kind, ag.identity, s, problems, elapsed))
            if problems:
                problems_all.append("%s: %s\n----- %s -----\n%s" % (
                    ag.identity, "; ".join(problems), s["log"], error_excerpt(text)))
        if problems_all:
            self.fail("\n".join(problems_all))


class ValgrindRedisTest(ValgrindScenario, RedisScenario, LKTestCase):
    pass


class ValgrindEtcdTest(ValgrindScenario, EtcdScenario, LKTestCase):
    pass


class ValgrindEtcdTlsTest(ValgrindScenario, LKTestCase):
    """On an etcd that serves https only and requires client certificates: the agents go
    through libcurl's OpenSSL backend (handshakes, session reuse, reconnects after the
    restart)."""

    backend_kind = "etcd-tls"

    def setUp(self):
        super().setUp()
        if "etcd" not in backends_enabled():
            self.skipTest("backend etcd not enabled (LK_BACKENDS=%s)"
                          % ",".join(backends_enabled()))
        certs = self.make_certs()
        self.etcd = self.start_etcd(tls=certs)
        self.backend = EtcdBackend(self.etcd, extra_config={
            "ca_file": certs["ca"], "cert_file": certs["client"],
            "key_file": certs["client_key"]})


class TlsRedisBackend(RedisBackend):
    """A Redis whose agents come in on its TLS port with a client certificate."""

    def __init__(self, server, monitor, tls_port, certs):
        super().__init__(server, monitor)
        self.tls_port, self.certs = tls_port, certs

    def config(self, name="main", timeout=None):
        b = super().config(name, timeout)
        b.update(address="rediss://127.0.0.1:%d" % self.tls_port, ca_file=self.certs["ca"],
                 cert_file=self.certs["client"], key_file=self.certs["client_key"])
        return b


class ValgrindRedisTlsTest(ValgrindScenario, LKTestCase):
    """On a Redis whose agents use its TLS port with client certificates: the agents go
    through hiredis's TLS layer and the agent's own OpenSSL context (handshakes, the restart's
    reconnects)."""

    backend_kind = "redis-tls"

    def setUp(self):
        super().setUp()
        if "redis" not in backends_enabled():
            self.skipTest("backend redis not enabled (LK_BACKENDS=%s)"
                          % ",".join(backends_enabled()))
        certs = self.make_certs()
        port = free_port()
        self.redis = self.start_redis(extra_args=[
            "--tls-port", str(port), "--tls-auth-clients", "yes",
            "--tls-cert-file", certs["server"], "--tls-key-file", certs["server_key"],
            "--tls-ca-cert-file", certs["ca"]])
        self.backend = TlsRedisBackend(self.redis, self.monitor(self.redis), port, certs)


def summary_line(kind, identity, s, problems, elapsed):
    return ("valgrind %-9s %s: errors=%s definite=%d indirect=%d possible=%d reachable=%d "
            "suppressed=%d rc=%s scenario=%.1fs %s" % (
                kind, identity, s["errors"], s["definite"], s["indirect"], s["possible"],
                s["reachable"], s["suppressed"], s["rc"], elapsed,
                "OK" if not problems else "FAIL (" + "; ".join(problems) + ")"))


def main():
    import argparse
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-k", dest="pattern", action="append", default=[],
                    help="only the scenarios whose class name contains this "
                         "(redis, etcd, tls)")
    ap.add_argument("-v", dest="verbosity", action="store_const", const=2, default=1)
    args = ap.parse_args()
    if not os.path.exists(os.environ["LK_BIN"]):
        sys.exit("no binary at %s: make BUILD=build/vg build/vg/leasekeeper, or set LK_BIN"
                 % os.environ["LK_BIN"])
    if not (os.environ.get("VALGRIND") or shutil.which("valgrind")):
        sys.exit("valgrind not found (apt-get install valgrind, or set VALGRIND)")
    suite = unittest.TestSuite()
    for cls in (ValgrindRedisTest, ValgrindRedisTlsTest, ValgrindEtcdTest, ValgrindEtcdTlsTest):
        if not args.pattern or any(p.lower() in cls.__name__.lower() for p in args.pattern):
            suite.addTests(unittest.TestLoader().loadTestsFromTestCase(cls))
    t0 = time.monotonic()
    result = unittest.TextTestRunner(verbosity=args.verbosity).run(suite)
    print()
    for kind, identity, s, problems, elapsed in RESULTS:
        print(summary_line(kind, identity, s, problems, elapsed))
    bad = any(p for _, _, _, p, _ in RESULTS)
    print("valgrind: %d scenario(s), %d agent log(s), %.1fs, %s" % (
        result.testsRun, len(RESULTS), time.monotonic() - t0,
        "FAILED" if bad or not result.wasSuccessful() else "OK"))
    if result.skipped:
        for t, why in result.skipped:
            print("valgrind: skipped %s: %s" % (t.id(), why))
    sys.exit(0 if result.wasSuccessful() and not bad else 1)


if __name__ == "__main__":
    main()
