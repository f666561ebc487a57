#!/usr/bin/env python3
"""The soak: rolling restarts and client churn for SOAK_SECONDS, and the memory and descriptors
of an agent that lives through all of it (tests/soak/README.md).

    python3 tests/soak/run.py --seconds 600                 both backends, in parallel
    python3 tests/soak/run.py --seconds 600 --serial        in turn (each gets half the time)
    python3 tests/soak/run.py --backends redis --seconds 120 --keep

Per backend (Redis, one etcd member): three replicas, each an agent and an app (tests/chaos/
app.py: the Python client's LeaderElector, writing to the chaos suite's fenced store while it
leads). pod-0's agent is the long-lived one: it is never restarted, and it is the one whose
RSS (/proc/PID/status VmRSS and RssAnon) and descriptors (/proc/PID/fd) are sampled. Every few
seconds a rolling restart step: pod-1 or pod-2 is drained (SIGTERM to the agent: STEPDOWN, ACK,
release, STOP, the app exits) and started again; every third step pod-0's *app* is restarted
instead (its agent stays), so that the lock also moves away from pod-0. Meanwhile, on pod-0's
agent only: app-like sessions (HELLO, CAMPAIGN/WATCH/STATUS/PING/ACK, RESIGN, QUIT or a hang-up;
the lock `churn`, which only these sessions campaign for), idle connections that the agent
closes (client_idle_timeout 1s, the 5 s HELLO deadline), bad lines, bursts past max_clients
(evictions of idle connections, refusals when every slot is a watcher), and HTTP scrapes of
/metrics, /leader/<lock>, /healthz, /readyz.

At the end: the chaos checker (tests/chaos/checker.py) over the apps' leader intervals (no two
apps leading at once, tokens increasing, the fenced store), and one table per backend. Exit
status: 0 PASS; 1 FAIL (RSS growth over the limit, a descriptor leak, an overlap, a token
regression, a stale write accepted, an agent that exited by itself); 2 the run itself broke.
"""

import argparse
import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
CHAOS = os.path.join(REPO, "tests", "chaos")
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))
sys.path.insert(0, CHAOS)
sys.path.insert(0, os.path.join(REPO, "tests"))

import harness  # noqa: E402
from harness import AppClient, ConnectionClosed, EtcdServer, RedisServer  # noqa: E402
import checker  # noqa: E402
from runner import LeaderView  # noqa: E402
from store import FencedStore  # noqa: E402
from common import runs  # noqa: E402
from common.runs import EventLog, mono, pdeathsig, say  # noqa: E402

CHAOS_APP = os.path.join(CHAOS, "app.py")
LIMIT_KIB = 512
FD_SLACK = 4            # descriptors the quiet agent may hold more at the end than at the start
MAX_CLIENTS = 24
LOCK_X = dict(ttl="3s", retry_interval="500ms", stepdown_timeout="3s", release_timeout="2s")
LOCK_CHURN = dict(ttl="2s", retry_interval="500ms", stepdown_timeout="2s",
                  release_timeout="2s")


def proc_status(pid):
    """(VmRSS KiB, RssAnon KiB, open fds) of pid, or None if it is gone."""
    try:
        with open("/proc/%d/status" % pid) as f:
            text = f.read()
        fds = len(os.listdir("/proc/%d/fd" % pid))
    except OSError:
        return None
    vals = {}
    for line in text.splitlines():
        k, _, v = line.partition(":")
        if k in ("VmRSS", "RssAnon"):
            vals[k] = int(v.split()[0])
    return vals.get("VmRSS", 0), vals.get("RssAnon", 0), fds


def slope_per_min(samples):
    """Least-squares slope of (t seconds, value) pairs, per minute (None with < 3 points)."""
    if len(samples) < 3:
        return None
    n = len(samples)
    mt = sum(t for t, _ in samples) / n
    mv = sum(v for _, v in samples) / n
    den = sum((t - mt) ** 2 for t, _ in samples)
    if den == 0:
        return None
    return 60.0 * sum((t - mt) * (v - mv) for t, v in samples) / den


# ---------------------------------------------------------------------------------------------
# processes


class SoakAgent(harness.Agent):
    """harness.Agent whose stderr goes to the run's agents/<pod>.log (the checker reads the
    `lock acquired` lines there) and which dies with the runner (PR_SET_PDEATHSIG)."""

    def __init__(self, tmpdir, log_path, prefix=(), **kw):
        super().__init__(tmpdir, **kw)
        self.stderr_path = log_path
        self.prefix = list(prefix)

    def start(self, wait=True, timeout=harness.DEFAULT_TIMEOUT):
        self.close_files()
        self._errf = open(self.stderr_path, "ab")
        self.proc = subprocess.Popen(self.prefix + [harness.lk_bin(), "agent", "-c",
                                                    self.config_path],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=self._errf, cwd=self.dir, preexec_fn=pdeathsig)
        self._outf = None
        if wait:
            self.wait_ready(timeout)
        return self


class Replica:
    def __init__(self, soak, idx, long_lived):
        self.soak = soak
        self.idx = idx
        self.name = "pod-%d" % idx
        self.long_lived = long_lived
        self.app = None
        self.app_log = os.path.join(soak.dir, "apps", self.name + ".jsonl")
        self.http_port = harness.free_port() if long_lived else None
        top = dict(shutdown_timeout="8s")
        prefix = ()
        self.vg_log = None
        if long_lived and soak.valgrind:
            self.vg_log = os.path.join(soak.dir, "valgrind-%s.log" % self.name)
            prefix = ("valgrind", "--leak-check=full", "--show-leak-kinds=definite,indirect",
                      "--errors-for-leak-kinds=definite,indirect", "--num-callers=30",
                      "--log-file=" + self.vg_log)
        if long_lived:
            top.update(http_listen="127.0.0.1:%d" % self.http_port, client_idle_timeout="1s",
                       max_clients=MAX_CLIENTS)
        self.agent = SoakAgent(soak.tmp, os.path.join(soak.dir, "logs", self.name + ".log"),
                               prefix=prefix,
                               identity=self.name, backends=[soak.agent_backend()],
                               locks=[harness.lock_config("x", **LOCK_X),
                                      harness.lock_config("churn", **LOCK_CHURN)], **top)

    @property
    def sock(self):
        return self.agent.sock_path

    def start_agent(self):
        self.agent.start(wait=True, timeout=60 if self.vg_log else 20)
        self.soak.evlog("spawn", who="agent-" + self.name, pid=self.agent.pid)

    def start_app(self):
        out = open(os.path.join(self.soak.dir, "apps", self.name + ".out"), "ab")
        self.app = subprocess.Popen(
            [sys.executable, CHAOS_APP, "--socket", self.sock, "--lock", "x",
             "--name", self.name, "--store-port", str(self.soak.store.port),
             "--log", self.app_log, "--write-interval", "0.2", "--work", "0.02"],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            preexec_fn=pdeathsig, env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"))
        out.close()
        self.soak.evlog("spawn", who="app-" + self.name, pid=self.app.pid)

    def stop_app(self, timeout=8.0):
        """SIGTERM the app (the elector stops leading and hangs up); SIGKILL after timeout.
        Returns True if it exited by itself."""
        p = self.app
        if p is None or p.poll() is not None:
            return True
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=timeout)
            return True
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            self.soak.evlog("killed", who="app-" + self.name, pid=p.pid)
            return False

    def close(self):
        for p in (self.app, self.agent.proc):
            if p is not None and p.poll() is None:
                try:
                    p.kill()
                    p.wait(timeout=5)
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    pass
        self.agent.close_files()


# ---------------------------------------------------------------------------------------------
# client churn against the long-lived agent


class Counters:
    def __init__(self):
        self._lock = threading.Lock()
        self.c = {}
        self.errors = []

    def add(self, k, n=1):
        with self._lock:
            self.c[k] = self.c.get(k, 0) + n

    def get(self, k):
        return self.c.get(k, 0)

    def error(self, what):
        with self._lock:
            self.c["errors"] = self.c.get("errors", 0) + 1
            if len(self.errors) < 20:
                self.errors.append(what)


BAD_LINES = [
    b"FOO bar\n", b"campaign x\n", b"CAMPAIGN\n", b"CAMPAIGN bad/name\n",
    b"CAMPAIGN nosuchlock\n", b"WATCH nosuchlock\n", b"ACK x abc\n",
    b"ACK x 99999999999999999999999\n", b"PING extra\n", b"STATUS now\n",
    b"CAMPAIGN nosuchlock a=1 a=2\n", b" ".join([b"PING"] + [b"w"] * 40) + b"\n",
    b"PING \x01\x7f\xff\n", b"RESIGN\n", b"ACK\n", b"QUIT now\n",
    b"RESIGN x" + b"y" * 200 + b"\n",
]
# lines after which the agent closes the connection
CLOSING_LINES = [b"X" * 5000 + b"\n"]
FIRST_LINES = [b"PING\n", b"HELLO 2\n", b"HELLO one\n", b"CAMPAIGN x\n"]


class Churn:
    """Threads that hammer one agent (the long-lived replica) until stop is set."""

    def __init__(self, soak, rep, seed):
        self.soak = soak
        self.rep = rep
        self.sock = rep.sock
        self.port = rep.http_port
        self.stop = threading.Event()
        self.n = Counters()
        self.seed = seed
        self.threads = []
        self.last_burst = 0.0

    def burst_since(self, t):
        """A burst past max_clients ran at some time since t (it may evict idle ones)."""
        return self.n.get("burst_active") or self.last_burst >= t

    KINDS = ("sessions", "sessions", "idle", "badlines", "http", "bursts")

    def start(self):
        only = self.soak.churn_kinds
        for name in self.KINDS:
            if only and name not in only:
                continue
            t = threading.Thread(target=self._guard, args=(name, len(self.threads)),
                                 name="churn-" + name, daemon=True)
            self.threads.append(t)
            t.start()

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)

    def _guard(self, name, i):
        rnd = random.Random("%s/%s/%d" % (self.seed, name, i))
        fn = getattr(self, "t_" + name)
        while not self.stop.is_set():
            try:
                fn(rnd)
            except ConnectionClosed as e:
                # the agent hung up: only expected while its slots are full (a burst)
                if "too_many_clients" in str(e) or self.burst_since(mono() - 2):
                    self.n.add("refused")
                else:
                    self.n.error("%s: %s" % (name, str(e).splitlines()[0]))
            except (AssertionError, OSError) as e:
                if self.burst_since(mono() - 2):
                    self.n.add("refused")
                else:
                    self.n.error("%s: %s" % (name, str(e).splitlines()[0] if str(e) else
                                             repr(e)))
            except Exception as e:  # noqa: BLE001
                self.n.error("%s: %r" % (name, e))
            self.stop.wait(rnd.uniform(0.02, 0.1))

    def _raw(self, timeout=5.0):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        s.connect(self.sock)
        return s

    @staticmethod
    def _read_line(s, buf):
        while b"\n" not in buf[0]:
            d = s.recv(4096)
            if not d:
                raise ConnectionClosed("EOF")
            buf[0] += d
        line, buf[0] = buf[0].split(b"\n", 1)
        return line.decode(errors="replace")

    # -- app-like sessions (AppClient)

    def _req(self, c, line, ok=True):
        self.n.add("requests")
        r = c.call(line, timeout=10)
        if ok and not r.ok:
            self.n.error("session: %r -> %r" % (line, r.raw))
        return r

    def t_sessions(self, rnd):
        c = AppClient(self.sock, client_name="churn", timeout=10, label="churn")
        self.n.add("sessions")
        self.n.add("requests")   # HELLO
        try:
            kind = rnd.random()
            if kind < 0.55:
                self.n.add("campaign_sessions")
                self._req(c, "CAMPAIGN churn")
                # the lock's state comes first (FOLLOWER holder=... or LEADER)
                ev = c.next_event(timeout=10)
                deadline = mono() + 4
                while ev is not None and ev.kind != "LEADER" and mono() < deadline:
                    ev = c.next_event(timeout=max(0.05, deadline - mono()))
                if ev is not None and ev.kind == "LEADER":
                    self.n.add("churn_leader")
                    if rnd.random() < 0.3:
                        self._req(c, "ACK churn %s" % ev.get("token"))  # early: ignored
                for line in rnd.sample(["WATCH x", "STATUS", "PING", "STATUS", "PING"],
                                       rnd.randint(1, 4)):
                    self._req(c, line)
                if rnd.random() < 0.7:
                    self._req(c, "RESIGN churn")
            elif kind < 0.8:
                self.n.add("watch_sessions")
                self._req(c, rnd.choice(["WATCH x", "WATCH *", "WATCH churn"]))
                c.events_for(rnd.uniform(0.05, 0.5))
                self._req(c, "STATUS")
            else:
                self.n.add("status_sessions")
                for _ in range(rnd.randint(1, 5)):
                    self._req(c, rnd.choice(["PING", "STATUS"]))
            if rnd.random() < 0.5:
                self.n.add("requests")
                c.call("QUIT", timeout=10)
        finally:
            c.close()

    # -- idle connections the agent closes

    def t_idle(self, rnd):
        conns = []
        for _ in range(rnd.randint(1, 3)):
            s = self._raw()
            buf = [b""]
            self._read_line(s, buf)               # the banner
            k = rnd.random()
            if k < 0.5:
                s.sendall(b"HELLO 1 client=idle\n")
                self._read_line(s, buf)
                self.n.add("requests")
                if rnd.random() < 0.5:
                    s.sendall(b"PING\n")          # does not extend the idle time
                    self._read_line(s, buf)
                    self.n.add("requests")
                conns.append((s, buf, "idle", mono()))
            elif k < 0.7:
                conns.append((s, buf, "nohello", mono()))   # 5 s HELLO deadline
            else:
                s.close()                          # a departed peer
                self.n.add("hangups")
        self.n.add("idle_conns", len(conns))
        for s, buf, why, t0 in conns:
            try:
                s.settimeout(12)
                rest = b""
                while True:
                    d = s.recv(4096)
                    if not d:
                        break
                    rest += d
                waited = mono() - t0
                if why == "idle":
                    self.n.add("idle_closed")
                    if rest.strip():
                        self.n.error("idle: a line before the idle close: %r" % rest[:80])
                else:
                    self.n.add("hello_timeouts")
                    if b"hello_required" not in rest and not self.burst_since(t0):
                        self.n.error("nohello: closed with %r after %.1fs" % (rest[:80], waited))
            except socket.timeout:
                self.n.error("%s: the agent did not close an idle connection in 12 s" % why)
            finally:
                s.close()

    # -- bad lines

    def t_badlines(self, rnd):
        s = self._raw()
        buf = [b""]
        try:
            self._read_line(s, buf)
            self.n.add("bad_sessions")
            k = rnd.random()
            if k < 0.15:
                s.sendall(rnd.choice(FIRST_LINES))
                self.n.add("requests")
                self.n.add("bad_lines")
                line = self._read_line(s, buf)
                if not line.startswith("ERR"):
                    self.n.error("badlines: first line answered %r" % line)
                return
            s.sendall(b"HELLO 1 client=bad\n")
            self._read_line(s, buf)
            self.n.add("requests")
            for _ in range(rnd.randint(1, 6)):
                bad = rnd.choice(BAD_LINES)
                s.sendall(bad)
                self.n.add("requests")
                self.n.add("bad_lines")
                line = self._read_line(s, buf)
                while not line.startswith(("OK", "ERR")):
                    line = self._read_line(s, buf)      # events (there should be none)
                if bad.startswith(b"QUIT now") and line.startswith("OK"):
                    return
                if not line.startswith("ERR"):
                    self.n.error("badlines: %r answered %r" % (bad[:40], line))
            k = rnd.random()
            if k < 0.2:
                s.sendall(rnd.choice(CLOSING_LINES))
                self.n.add("requests")
                self.n.add("bad_lines")
                line = self._read_line(s, buf)
                while not line.startswith(("OK", "ERR")):
                    line = self._read_line(s, buf)
                if "line_too_long" not in line:
                    self.n.error("badlines: long line answered %r" % line)
            elif k < 0.4:
                s.sendall(b"PING")                   # half a line, then hang up
        finally:
            s.close()

    # -- HTTP

    def t_http(self, rnd):
        path = rnd.choice(["/metrics", "/metrics", "/leader/x", "/leader/churn",
                           "/leader/nosuch", "/healthz", "/readyz", "/nothing"])
        if rnd.random() < 0.05:
            s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
            try:
                s.sendall(rnd.choice([b"GARBAGE\r\n\r\n", b"GET /metrics HTTP/1.1\r\n",
                                      b"\x00\x01\x02\r\n\r\n"]))
                try:
                    s.recv(4096)
                except socket.timeout:
                    pass
            finally:
                s.close()
            self.n.add("http_bad")
            return
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            c.request("GET", path)
            r = c.getresponse()
            body = r.read()
            self.n.add("http")
            if r.status not in (200, 404, 503):
                self.n.error("http %s: status %d" % (path, r.status))
            if path == "/metrics" and r.status == 200 and b"leasekeeper" not in body:
                self.n.error("http /metrics: no leasekeeper metrics")
        finally:
            c.close()
        self.stop.wait(rnd.uniform(0.1, 0.4))

    # -- bursts past max_clients

    def t_bursts(self, rnd):
        if self.stop.wait(rnd.uniform(8, 15)):
            return
        watch = rnd.random() < 0.4
        conns = []
        self.n.add("burst_active")
        try:
            for _ in range(MAX_CLIENTS + 8):
                try:
                    s = self._raw()
                    buf = [b""]
                    line = self._read_line(s, buf)
                    if line.startswith("ERR too_many_clients"):
                        self.n.add("refused")
                        s.close()
                        continue
                    s.sendall(b"HELLO 1 client=burst\n" + (b"WATCH x\n" if watch else b""))
                    conns.append(s)
                except (OSError, ConnectionClosed):
                    self.n.add("refused")
            self.n.add("bursts")
            self.stop.wait(0.5)
        finally:
            for s in conns:
                s.close()
            self.last_burst = mono()
            self.n.add("burst_active", -1)


# ---------------------------------------------------------------------------------------------
# one backend


class Soak:
    def __init__(self, kind, seconds, out_dir, seed, warmup, interval, limit_kib,
                 valgrind=False, churn_kinds=None, restarts=True):
        self.valgrind = valgrind
        self.churn_kinds = churn_kinds
        self.do_restarts = restarts
        self.kind = kind
        self.seconds = seconds
        self.dir = out_dir
        self.seed = seed
        self.warmup = warmup
        self.interval = interval
        self.limit_kib = limit_kib
        self.rng = random.Random("%s/%s" % (seed, kind))
        for d in ("apps", "agents", "logs"):
            os.makedirs(os.path.join(out_dir, d), exist_ok=True)
        self.tmp = tempfile.mkdtemp(prefix="w-", dir=out_dir)
        self.evlog = EventLog(os.path.join(out_dir, "events.jsonl"))
        self.store = None
        self.server = None
        self.replicas = []
        self.churn = None
        self.samples = []          # (t since churn start, rss, anon, fds)
        self.sampling = threading.Event()
        self.result = {"backend": kind, "errors": []}
        self.restarts = {"pod_drains": 0, "app_restarts": 0, "drain_rc_nonzero": 0,
                         "drain_killed": 0, "app_killed": 0}

    def agent_backend(self):
        if self.kind == "redis":
            return {"name": "main", "type": "redis", "address": self.server.address,
                    "timeout": "500ms"}
        return {"name": "main", "type": "etcd", "endpoints": [self.server.url], "timeout": "1s"}

    def setup(self):
        self.store = FencedStore(os.path.join(self.dir, "store.jsonl")).start()
        if self.kind == "redis":
            self.server = RedisServer(self.tmp).start()
        else:
            self.server = EtcdServer(self.tmp).start()
        self.replicas = [Replica(self, i, long_lived=(i == 0)) for i in range(3)]
        for r in self.replicas:
            r.start_agent()
            r.start_app()
        self.view = LeaderView(self.replicas)

    def close(self):
        self.sampling.set()
        if self.churn:
            self.churn.stop.set()
        for r in self.replicas:
            try:
                r.close()
            except Exception:  # noqa: BLE001
                traceback.print_exc()
        if self.server:
            try:
                self.server.close() if self.kind == "etcd" else self.server.stop()
            except Exception:  # noqa: BLE001
                traceback.print_exc()
        if self.store:
            self.store.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    # -- helpers

    @property
    def lived(self):
        return self.replicas[0]

    def status(self):
        c = AppClient(self.lived.sock, client_name="soak", timeout=10, label="soak-status")
        try:
            return c.status(timeout=10)
        finally:
            c.close()

    def wait_quiet(self, timeout=15.0):
        """Until the long-lived agent holds no connection but its app's (and the probe's)."""
        deadline = mono() + timeout
        st = None
        while mono() < deadline:
            try:
                st = self.status()
                if st["clients"]["connected"] <= 2:
                    time.sleep(0.3)
                    return st
            except (AssertionError, OSError):
                pass
            time.sleep(0.5)
        return st

    def wait_leader(self, timeout):
        try:
            return harness.wait_until(self.view.leader, timeout=timeout, interval=0.05)
        except AssertionError:
            return None

    def sampler(self, t0):
        pid = self.lived.agent.pid
        while True:
            st = proc_status(pid)
            if st is not None:
                self.samples.append((mono() - t0,) + st)
            if self.sampling.wait(2.0):
                return

    def ensure_running(self):
        for r in self.replicas:
            if r.agent.proc.poll() is not None:
                rc = r.agent.proc.returncode
                self.evlog("unexpected_exit", who="agent-" + r.name, rc=rc)
                self.result["errors"].append("agent %s exited by itself (status %s)"
                                             % (r.name, rc))
                say("  [%s] agent %s EXITED by itself (status %s)" % (self.kind, r.name, rc))
                if r.long_lived:
                    raise RuntimeError("the long-lived agent exited (status %s):\n%s"
                                       % (rc, r.agent.tail(30)))
                r.start_agent()
            if r.app is None or r.app.poll() is not None:
                rc = r.app.returncode if r.app else None
                self.evlog("unexpected_exit", who="app-" + r.name, rc=rc)
                r.start_app()

    # -- the rolling restart steps

    def drain_pod(self, r):
        """SIGTERM the agent (its drain: STEPDOWN, ACK, release, STOP; the app exits after
        STOP), wait for both, start both again."""
        a = r.agent.proc
        a.send_signal(signal.SIGTERM)
        try:
            rc = a.wait(timeout=15)
        except subprocess.TimeoutExpired:
            a.kill()
            rc = a.wait()
            self.restarts["drain_killed"] += 1
            self.result["errors"].append("%s: the drain took over 15 s (SIGKILL)" % r.name)
        if rc != 0:
            self.restarts["drain_rc_nonzero"] += 1
            if len(self.result["errors"]) < 20:
                self.result["errors"].append("%s: the agent's drain exited %s" % (r.name, rc))
        try:
            r.app.wait(timeout=5)
        except subprocess.TimeoutExpired:
            if not r.stop_app():
                self.restarts["app_killed"] += 1
        self.evlog("drained", who="agent-" + r.name, rc=rc)
        r.agent.close_files()
        r.start_agent()
        r.start_app()
        self.restarts["pod_drains"] += 1

    def restart_app(self, r):
        if not r.stop_app():
            self.restarts["app_killed"] += 1
        r.start_app()
        self.restarts["app_restarts"] += 1

    def step(self, n):
        lead = self.view.leader()
        if n % 3 == 2:
            r, kind = self.lived, "app_restart"
        else:
            rotating = self.replicas[1:]
            if lead in rotating and n % 2 == 0:
                r = lead
            else:
                r = rotating[(n // 3) % 2]
            kind = "rolling_restart"
        self.evlog("fault_start", id=n, kind=kind, target=r.name)
        if kind == "app_restart":
            self.restart_app(r)
        else:
            self.drain_pod(r)
        self.evlog("fault_heal", id=n, kind=kind, target=r.name)

    # -- the run

    def run(self):
        say("  [%s] starting Redis/etcd, 3 agents, 3 apps" % self.kind)
        self.setup()
        if self.wait_leader(30) is None:
            raise RuntimeError("no leader within 30 s of the start")
        st = self.wait_quiet()
        first = proc_status(self.lived.agent.pid)
        self.result["fds_start"] = first[2]
        self.result["quiet_start"] = {"connected": st and st["clients"]["connected"],
                                      "rss": first[0], "anon": first[1]}
        t0 = mono()
        self.t0 = t0
        meta = {"backend": self.kind, "seed": self.seed, "ttl": 3.0, "net": "soak",
                "seconds": self.seconds}
        say("  [%s] soaking for %.0f s (long-lived agent pod-0 pid %d, http :%d)"
            % (self.kind, self.seconds, self.lived.agent.pid, self.lived.http_port))
        sampler = threading.Thread(target=self.sampler, args=(t0,), daemon=True)
        sampler.start()
        self.churn = Churn(self, self.lived, self.seed)
        self.churn.start()
        n = 0
        next_report = t0 + 60
        while mono() - t0 < self.seconds:
            self.ensure_running()
            n += 1
            try:
                if self.do_restarts:
                    self.step(n)
            except (AssertionError, OSError) as e:
                self.result["errors"].append("step %d: %s" % (n, str(e).splitlines()[0]))
                say("  [%s] step %d: %s" % (self.kind, n, str(e).splitlines()[0]))
            self.wait_leader(10)
            left = self.seconds - (mono() - t0)
            time.sleep(max(0.0, min(left, self.rng.uniform(0.5, 1.0) * self.interval)))
            if mono() >= next_report:
                next_report += 60
                s = self.samples[-1] if self.samples else None
                say("  [%s] %4.0fs: %d restarts, %d sessions, RSS %s KiB, fds %s"
                    % (self.kind, mono() - t0,
                       self.restarts["pod_drains"] + self.restarts["app_restarts"],
                       self.churn.n.get("sessions"),
                       s[1] if s else "?", s[3] if s else "?"))
        elapsed = mono() - t0
        # the last in-churn sample is "end"; then stop everything and look at the quiet agent
        self.sampling.set()
        sampler.join()
        st = proc_status(self.lived.agent.pid)
        if st is not None:
            self.samples.append((mono() - t0,) + st)
        self.churn.finish()
        self.ensure_running()
        self.wait_leader(20)
        time.sleep(1.0)
        self.evlog("run_end")
        qst = self.wait_quiet()
        last = proc_status(self.lived.agent.pid)
        self.result["fds_end"] = last[2] if last else None
        self.result["quiet_end"] = {"connected": qst and qst["clients"]["connected"],
                                    "rss": last and last[0], "anon": last and last[1],
                                    "clients": qst and qst["clients"]}
        # the end: every agent drained (SIGTERM), the long-lived one too
        rcs = {}
        for r in reversed(self.replicas):
            if r.agent.proc.poll() is None:
                r.agent.proc.send_signal(signal.SIGTERM)
        for r in self.replicas:
            try:
                rcs[r.name] = r.agent.proc.wait(timeout=90 if r.vg_log else 20)
            except subprocess.TimeoutExpired:
                rcs[r.name] = "killed"
                r.agent.proc.kill()
                r.agent.proc.wait()
            r.stop_app(timeout=5)
        self.result["final_drain"] = rcs
        meta["elapsed"] = elapsed
        meta["restarts"] = n
        with open(os.path.join(self.dir, "run.json"), "w") as f:
            json.dump(meta, f, indent=1)
        self.result["elapsed"] = elapsed
        self.result["steps"] = n
        self.result["restarts"] = self.restarts
        self.result["churn"] = dict(self.churn.n.c)
        self.result["churn_errors"] = self.churn.n.errors
        self.result["samples"] = self.samples
        self.result["warmup"] = self.warmup
        self.result["limit_kib"] = self.limit_kib
        self.result["valgrind"] = self.valgrind_summary()

    def valgrind_summary(self):
        """pod-0 under valgrind: the leak summary and error count of its log, or None."""
        path = self.lived.vg_log
        if not path:
            return None
        try:
            with open(path, errors="replace") as f:
                text = f.read()
        except OSError:
            return {"log": path, "error": "no valgrind log"}
        out = {"log": path}
        for key, pat in (("definitely", r"definitely lost: ([\d,]+) bytes"),
                         ("indirectly", r"indirectly lost: ([\d,]+) bytes"),
                         ("possibly", r"possibly lost: ([\d,]+) bytes"),
                         ("reachable", r"still reachable: ([\d,]+) bytes"),
                         ("errors", r"ERROR SUMMARY: ([\d,]+) errors")):
            m = re.findall(pat, text)
            out[key] = int(m[-1].replace(",", "")) if m else 0
        return out


def analyse(res, chk):
    """Figures and the verdict for one backend's result (+ the checker's)."""
    s = res.get("samples") or []
    out = {}
    fails = []
    if len(s) >= 2:
        warm = [x for x in s if x[0] >= res["warmup"]] or s[-1:]
        w0 = warm[0]
        out["rss"] = (s[0][1], w0[1], s[-1][1], max(x[1] for x in s))
        out["anon"] = (s[0][2], w0[2], s[-1][2], max(x[2] for x in s))
        out["growth"] = s[-1][1] - w0[1]
        out["growth_anon"] = s[-1][2] - w0[2]
        out["slope"] = slope_per_min([(x[0], x[1]) for x in warm])
        out["slope_anon"] = slope_per_min([(x[0], x[2]) for x in warm])
        out["fds_max"] = max(x[3] for x in s)
        out["warm_t"] = w0[0]
        out["nsamples"] = len(s)
        if out["growth"] > res["limit_kib"] and not res.get("valgrind"):
            fails.append("RSS grew %d KiB after the warm-up (limit %d)"
                         % (out["growth"], res["limit_kib"]))
    else:
        fails.append("no RSS samples")
    fs, fe = res.get("fds_start"), res.get("fds_end")
    if fs is None or fe is None:
        fails.append("no descriptor count")
    elif fe > fs + FD_SLACK:
        fails.append("descriptors: %d at the start, %d at the end (quiet)" % (fs, fe))
    if chk is not None:
        t = chk["totals"]
        for k in checker.MUST_BE_ZERO:
            if t[k]:
                fails.append("%s=%d" % (k, t[k]))
    else:
        fails.append("no checker result")
    if res["final_drain"].get("pod-0") not in (0,):
        fails.append("the long-lived agent's final drain exited %s" % res["final_drain"]["pod-0"])
    vg = res.get("valgrind")
    if vg:
        if vg.get("error"):
            fails.append("valgrind: " + vg["error"])
        elif vg["definitely"] or vg["indirectly"] or vg["errors"]:
            fails.append("valgrind: %d errors, %d bytes definitely and %d indirectly lost (%s)"
                         % (vg["errors"], vg["definitely"], vg["indirectly"], vg["log"]))
    out["fails"] = fails
    return out


def fmt_t(v):
    return "-" if v is None else "%.3f" % v


def render(res, chk):
    a = analyse(res, chk)
    c = res["churn"]
    r = res["restarts"]
    rows = []

    def row(k, v):
        rows.append((k, v))
    row("duration", "%.0f s (warm-up %.0f s; %d RSS samples every 2 s)"
        % (res["elapsed"], a.get("warm_t", 0), a.get("nsamples", 0)))
    row("restarts", "%d pods drained and restarted, %d app restarts on pod-0 "
        "(drains exiting non-zero %d, SIGKILLed %d)"
        % (r["pod_drains"], r["app_restarts"], r["drain_rc_nonzero"], r["drain_killed"]))
    row("client sessions", "%d app-like (campaign %d, of which led `churn` %d; watch %d; "
        "status %d), %d idle (closed by idle timeout %d, HELLO deadline %d), %d hang-ups, "
        "%d bad-line, %d bursts past max_clients (%d refused)"
        % (c.get("sessions", 0), c.get("campaign_sessions", 0), c.get("churn_leader", 0),
           c.get("watch_sessions", 0), c.get("status_sessions", 0), c.get("idle_conns", 0),
           c.get("idle_closed", 0), c.get("hello_timeouts", 0), c.get("hangups", 0),
           c.get("bad_sessions", 0), c.get("bursts", 0), c.get("refused", 0)))
    row("requests", "%d on the socket (%d bad lines), %d HTTP scrapes (+%d garbage); "
        "errors %d" % (c.get("requests", 0), c.get("bad_lines", 0), c.get("http", 0),
                       c.get("http_bad", 0), c.get("errors", 0)))
    if chk is not None:
        t = chk["totals"]
        g = t["handoff_gaps"]
        row("handoffs", "%d leader intervals, %d handoffs, gap p50/max %s/%s s; overlaps %d, "
            "token regressions %d, stale writes accepted %d, agents exited %d"
            % (t["intervals"], max(0, t["intervals"] - 1), fmt_t(checker.pct(g, 50)),
               fmt_t(max(g) if g else None), t["overlaps"], t["token_regressions"],
               t["stale_accepted"], t["agent_exits"]))
    if "rss" in a:
        row("RSS KiB (VmRSS)", "start %d  after warm-up %d  end %d  max %d"
            % a["rss"])
        row("RssAnon KiB", "start %d  after warm-up %d  end %d  max %d" % a["anon"])
        sl = a["slope"]
        sla = a["slope_anon"]
        row("growth", "%+d KiB VmRSS (%+d KiB RssAnon), limit %d KiB"
            % (a["growth"], a["growth_anon"], res["limit_kib"]))
        row("slope", "%s KiB/min VmRSS, %s KiB/min RssAnon (after the warm-up)"
            % ("-" if sl is None else "%+.2f" % sl, "-" if sla is None else "%+.2f" % sla))
    qe = res.get("quiet_end") or {}
    row("fds", "start %s  end %s (quiet: connected %s -> %s)  max %s"
        % (res.get("fds_start"), res.get("fds_end"),
           (res.get("quiet_start") or {}).get("connected"), qe.get("connected"),
           a.get("fds_max")))
    cl = qe.get("clients") or {}
    if cl:
        row("agent counters", "idle_closed %s, evicted %s, hello_timeout %s, refused_full %s"
            % (cl.get("idle_closed_total"), cl.get("evicted_total"),
               cl.get("hello_timeout_total"), cl.get("refused_full_total")))
    vg = res.get("valgrind")
    if vg:
        row("valgrind (pod-0)", "%s errors; lost: definitely %s, indirectly %s, possibly %s "
            "bytes; still reachable %s bytes (RSS above is valgrind's: not judged)"
            % (vg.get("errors"), vg.get("definitely"), vg.get("indirectly"),
               vg.get("possibly"), vg.get("reachable")))
    row("verdict", "PASS" if not a["fails"] else "FAIL: " + "; ".join(a["fails"]))
    w = max(len(k) for k, _ in rows)
    out = ["== soak %s" % res["backend"]]
    out.append("+" + "-" * (w + 2) + "+" + "-" * 60)
    for k, v in rows:
        out.append("| %-*s | %s" % (w, k, v))
    out.append("+" + "-" * (w + 2) + "+" + "-" * 60)
    for e in (res.get("errors") or [])[:10]:
        out.append("  run: " + e)
    for e in (res.get("churn_errors") or [])[:10]:
        out.append("  churn error: " + e)
    if chk is not None:
        for p in chk["problems"][:10]:
            out.append("  " + p)
    return "\n".join(out), not a["fails"]


def agent_logs_for_checker(run_dir):
    """The checker reads every `lock acquired` line in agents/<pod>.log as one token sequence;
    the lock `churn` has a sequence of its own, so its lines are left out of those files (the
    full logs stay in logs/)."""
    src = os.path.join(run_dir, "logs")
    for fn in sorted(os.listdir(src)):
        with open(os.path.join(src, fn), "rb") as f, \
                open(os.path.join(run_dir, "agents", fn), "wb") as out:
            for line in f:
                if b'"lock":"churn"' not in line:
                    out.write(line)


def run_one(args):
    os.makedirs(args.out, exist_ok=True)
    soak = Soak(args.backends, args.seconds, args.out, args.seed, args.warmup, args.interval,
                args.limit_kib, valgrind=args.valgrind,
                churn_kinds=[k for k in args.churn.split(",") if k] or None,
                restarts=not args.no_restarts)
    status = runs.run_and_close(soak)
    if status == 0:
        agent_logs_for_checker(args.out)
        with open(os.path.join(args.out, "result.json"), "w") as f:
            json.dump(soak.result, f)
    return status


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=600)
    ap.add_argument("--backends", default="redis,etcd")
    ap.add_argument("--serial", action="store_true",
                    help="one backend after the other, each for seconds / number of backends")
    ap.add_argument("--warmup", type=float, default=None,
                    help="seconds of churn before the RSS baseline (default 10%%, >= 30 s)")
    ap.add_argument("--interval", type=float, default=4.0,
                    help="seconds between rolling restart steps (on average ~0.75 of it)")
    ap.add_argument("--limit-kib", type=int, default=LIMIT_KIB)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--out", default=None, help="keep the run dirs here")
    ap.add_argument("--keep", action="store_true", help="keep the run dirs after a PASS")
    ap.add_argument("--valgrind", action="store_true",
                    help="run the long-lived agent under valgrind memcheck (--leak-check=full): "
                    "the verdict then takes its leak summary instead of RSS growth")
    ap.add_argument("--churn", default="",
                    help="only these churn threads (comma-separated: sessions, idle, badlines, "
                    "http, bursts; default all): to find which churn makes RSS grow")
    ap.add_argument("--no-restarts", action="store_true",
                    help="no rolling restarts (churn only)")
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()

    runs.sigterm_interrupts()
    if args.one:
        return run_one(args)

    if runs.agent_missing(harness.lk_bin(), "build/soak"):
        return 2
    backends = runs.backends_from(args.backends, ("redis", "etcd"))
    if backends is None:
        return 2
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1, 1 << 31)
    per = args.seconds / len(backends) if args.serial else args.seconds
    warmup = args.warmup if args.warmup is not None else max(30.0, 0.1 * per)
    top = args.out or tempfile.mkdtemp(prefix="lk-soak-")
    os.makedirs(top, exist_ok=True)
    say("soak: %s, %.0f s each (%s), warm-up %.0f s, RSS limit %d KiB, seed %d, agent %s, "
        "runs in %s" % (",".join(backends), per, "in turn" if args.serial else "in parallel",
                        warmup, args.limit_kib, args.seed, harness.lk_bin(), top))
    t0 = mono()

    def argv_of(b):
        return ([sys.executable, os.path.abspath(__file__), "--one", "--backends", b,
                 "--seconds", str(per), "--warmup", str(warmup), "--interval",
                 str(args.interval), "--limit-kib", str(args.limit_kib),
                 "--seed", str(args.seed), "--out", os.path.join(top, b)]
                + (["--valgrind"] if args.valgrind else [])
                + (["--churn", args.churn] if args.churn else [])
                + (["--no-restarts"] if args.no_restarts else []))
    status = runs.run_per_backend(backends, argv_of, args.serial, 60, top,
                                  keep=args.out or args.keep)
    if status is None:
        return 130
    say("")
    worst = 0
    for b in backends:
        d = os.path.join(top, b)
        rp = os.path.join(d, "result.json")
        if status[b] != 0 or not os.path.exists(rp):
            say("== soak %s: the run failed (status %s), see above" % (b, status[b]))
            worst = 2
            continue
        with open(rp) as f:
            res = json.load(f)
        try:
            chk = checker.check(d)
        except Exception:  # noqa: BLE001
            traceback.print_exc()
            chk = None
        text, ok = render(res, chk)
        say(text)
        say("")
        if not ok:
            worst = max(worst, 1)
    say("soak: %s in %.0f s; %s" % (",".join(backends), mono() - t0,
                                    "PASS" if worst == 0 else "FAIL" if worst == 1 else
                                    "the run failed"))
    if worst or args.keep or args.out:
        say("run dirs in %s" % top)
    else:
        shutil.rmtree(top, ignore_errors=True)
    return worst


if __name__ == "__main__":
    sys.exit(main())
