#!/usr/bin/env python3
"""Pod-termination simulator: what the kubelet does to leasekeeper pods, with real processes.

A pod is a leasekeeper agent (the sidecar, `$LK_BIN agent -c CONFIG`) and an app (sim_app.py,
which speaks the protocol and reports its tenures). PodSim starts pods and deletes them the way
the kubelet does, and a rolling restart replaces them one by one, as a Deployment rollout does;
TenureChecker then reads what every app reported and fails on any overlap of two tenures, on a
token that is not greater than every earlier one, and reports each handoff's gap.

By hand (starts its own redis-server or etcd on loopback ports, in a temp dir):

    python3 tests/integration/podsim.py --pods 3 --rounds 20 --backend redis --sidecar native
    python3 tests/integration/podsim.py --backend etcd --sidecar classic --order leader -v

Pod start, for both sidecar styles: start the agent, wait until its socket answers with a
banner (the native sidecar's startupProbe; a classic sidecar's postStart hook in deploy/), then
start the app, which connects and sends CAMPAIGN. A pod is ready once its app knows who leads
(`FOLLOWER holder=<someone>`) or leads itself.

Pod deletion, as the kubelet's killPod does it (pkg/kubelet/kuberuntime: every container is
killed by its own goroutine, all at once, with the pod's terminationGracePeriodSeconds):

- the app container: run its preStop hook, `leasekeeper drain -s SOCK --timeout DRAIN_TIMEOUT`,
  until it exits or the grace period (counted from the start of the deletion) is over; then
  SIGTERM the app; SIGKILL it once the grace period is over;
- the agent, a native sidecar (an init container with restartPolicy: Always, Kubernetes 1.29+):
  it has no preStop hook; it waits for its turn, i.e. until every regular container (the app)
  has exited, then SIGTERM; SIGKILL at the end of the grace period;
- the agent, a classic sidecar (a regular container, before 1.29): it has no preStop hook, so
  it gets SIGTERM at once, at the start of the deletion, while the app's preStop hook runs
  (this is what deploy/README.md describes); SIGKILL at the end of the grace period;
- like the kubelet, a container always gets at least `min_kill_window` (2 s, the kubelet's
  minimumGracePeriodInSeconds) between its SIGTERM and a SIGKILL;
- a preStop hook still running when its container is killed dies with it (SIGKILL).

Every process is reaped; `leftovers()` finds any process that still refers to the simulator's
directory and `zombies()` any unreaped child.
"""

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import harness as H  # noqa: E402

SIM_APP = os.path.join(HERE, "sim_app.py")
KUBELET_MIN_GRACE = 2.0   # kubelet: minimumGracePeriodInSeconds
# What `leasekeeper drain` says when the agent is gone or closing (the real CLI, then the
# Python stand-in's wording).
LATE_HOOK_ERRORS = ("cannot talk to the agent", "no answer from the agent",
                    "No such file or directory", "Connection refused",
                    "closed the connection")
POLL = 0.002

DEFAULT_LOCK = dict(ttl="5s", retry_interval="10s", stepdown_timeout="3s", release_timeout="2s")


def _now():
    return time.monotonic()


def read_jsonl(path):
    """Every complete JSON line of path ([] if it does not exist)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return []
    out = []
    for line in data.split(b"\n"):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except ValueError:
            pass  # a line being written right now
    return out


def client_bin():
    """The binary the preStop hook runs: $LK_CLIENT (e.g. build/leasekeeper-static), else
    $LK_BIN, so that a sanitizer build checks the client side too."""
    p = os.environ.get("LK_CLIENT")
    if not p:
        return H.lk_bin()
    return p if os.path.isabs(p) else os.path.join(H.REPO_ROOT, p)


def redis_backend(address, timeout="500ms"):
    return {"name": "main", "type": "redis", "address": address, "timeout": timeout}


def etcd_backend(url, timeout="1s"):
    return {"name": "main", "type": "etcd", "endpoints": [url], "timeout": timeout}


# ---------------------------------------------------------------------------------------------
# Tenures and the checker


class Tenure:
    __slots__ = ("pod", "token", "start", "end", "how", "works")

    def __init__(self, pod, token, start, end=None, how=None, works=0):
        self.pod, self.token, self.start, self.end, self.how = pod, token, start, end, how
        self.works = works

    @property
    def open(self):
        return self.end is None

    def __repr__(self):
        return "Tenure(%s token=%d %.6f..%s %s)" % (
            self.pod, self.token, self.start,
            "open" if self.end is None else "%.6f" % self.end, self.how)


def tenures_from_records(records, pod, exit_t=None):
    """A pod's tenures from its app's records. A tenure still open in the records of an app
    that has exited (SIGKILL: no end record) ends at exit_t, how="killed"."""
    out, cur = [], None
    for r in records:
        if r.get("ev") == "start":
            if cur is not None:  # the app records this as an anomaly too
                cur.end, cur.how = r["t"], "superseded"
                out.append(cur)
            cur = Tenure(pod, int(r["token"]), float(r["t"]))
        elif r.get("ev") == "end" and cur is not None:
            cur.end, cur.how, cur.works = float(r["t"]), r.get("how"), r.get("works", 0)
            out.append(cur)
            cur = None
    if cur is not None:
        if exit_t is not None:
            cur.end, cur.how = exit_t, "killed"
        out.append(cur)
    return out


class TenureChecker:
    """Single-leader and token checks over every pod's tenures (a tenure is open from the
    LEADER's arrival to the app's ACK, LOST or EOF).

    overlaps: (a, b) pairs of tenures of which b started before a ended;
    token_errors: (earlier, t) where t's token is not greater than every earlier tenure's
    (earlier = the one with the greatest token so far);
    handoffs: (prev, next, gap_s) for consecutive tenures, gap = next.start - prev.end."""

    def __init__(self, tenures):
        self.tenures = sorted(tenures, key=lambda t: (t.start, t.token))
        self.overlaps = []
        self.token_errors = []
        self.handoffs = []
        inf = float("inf")
        open_until = []      # every earlier tenure whose end is after some later start
        best = None          # the earlier tenure with the greatest token
        for i, t in enumerate(self.tenures):
            open_until = [o for o in open_until if (inf if o.end is None else o.end) > t.start]
            for o in open_until:
                self.overlaps.append((o, t))
            if best is not None and t.token <= best.token:
                self.token_errors.append((best, t))
            if best is None or t.token > best.token:
                best = t
            open_until.append(t)
            prev = self.tenures[i - 1] if i else None
            if prev is not None and prev.end is not None:
                self.handoffs.append((prev, t, t.start - prev.end))

    @property
    def ok(self):
        return not self.overlaps and not self.token_errors

    def handoff_after(self, tenure):
        for prev, nxt, gap in self.handoffs:
            if prev is tenure:
                return nxt, gap
        return None, None

    def problems(self):
        out = []
        for a, b in self.overlaps:
            out.append("OVERLAP: %r and %r overlap by %.3f ms"
                       % (a, b, ((a.end if a.end is not None else b.end or b.start)
                                 - b.start) * 1000))
        for a, b in self.token_errors:
            out.append("TOKEN: %r started after %r but its token is not greater" % (b, a))
        return out


def check_store(path, tenures):
    """The leaders' work as the storage saw it (the shared O_APPEND file, in write order):
    tokens never go down (a fenced store would never have to reject a write), and every
    write was made inside its pod's tenure with that token. Returns (writes, problems)."""
    by_key = {(t.pod, t.token): t for t in tenures}
    problems, n, last = [], 0, None
    try:
        with open(path, "rb") as f:
            lines = f.read().decode(errors="replace").splitlines()
    except FileNotFoundError:
        lines = []
    for i, line in enumerate(lines):
        parts = line.split()
        if len(parts) != 3:
            problems.append("store line %d malformed: %r" % (i + 1, line))
            continue
        tok, pod, t = int(parts[0]), parts[1], float(parts[2])
        n += 1
        if last is not None and tok < last[0]:
            problems.append("store line %d: token %d (%s) written after token %d (%s)"
                            % (i + 1, tok, pod, last[0], last[1]))
        last = (tok, pod)
        ten = by_key.get((pod, tok))
        if ten is None:
            problems.append("store line %d: %s wrote with token %d, not one of its tenures"
                            % (i + 1, pod, tok))
        elif t < ten.start or (ten.end is not None and t > ten.end):
            problems.append("store line %d: %s token %d wrote at %.6f, outside its tenure %r"
                            % (i + 1, pod, tok, t, ten))
    return n, problems


# ---------------------------------------------------------------------------------------------
# Processes


def _procs():
    """(pid, ppid, state, cmdline) of every process we can see."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                stat = f.read()
            with open("/proc/%s/cmdline" % d, "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        rest = stat.rsplit(")", 1)[1].split()
        out.append((int(d), int(rest[1]), rest[0], cmd))
    return out


class Deletion:
    """What happened when one pod was deleted; times are monotonic seconds."""

    def __init__(self, pod, sidecar):
        self.pod = pod
        self.sidecar = sidecar
        self.t0 = None
        self.was_leader = False
        self.tenure = None           # the tenure open when the deletion started
        self.hook_rc = None
        self.hook_out = ""
        self.hook_err = ""
        self.hook_end = None
        self.hook_timed_out = False  # still running at the end of the grace period
        self.hook_killed = False
        self.app_sigterm = None
        self.app_exit = None
        self.app_rc = None
        self.app_killed = False
        self.agent_sigterm = None
        self.agent_exit = None
        self.agent_rc = None
        self.agent_killed = False
        self.end = None
        self.summary = None          # the agent's "drain complete" log line
        self.drained = None          # the hook's "drained: ..." numbers

    @property
    def duration(self):
        return self.end - self.t0

    @property
    def late_hook(self):
        """Classic sidecar: the hook could not ask (exit 2, "cannot talk to the agent" / "no
        answer") because the agent's own drain, started by its SIGTERM, was already over and
        the agent gone or going (Kubernetes reports a harmless FailedPreStopHook;
        deploy/README.md, Termination)."""
        if self.sidecar != "classic" or self.hook_rc != 2 or self.agent_rc != 0:
            return False
        started = self.pod.agent.find_logs("drain started")
        return (bool(started) and started[0].get("trigger", "SIGTERM") == "SIGTERM"
                and self.summary is not None and self.summary.get("exit_reason") == "drained"
                and any(s in self.hook_err for s in LATE_HOOK_ERRORS))

    @property
    def exit_race(self):
        """The agent died from a SIGTERM (default action) that was sent once its drain was
        complete: the drain summary says drained, the app had exited on STOP before the
        SIGTERM (native sidecar: the kubelet's SIGTERM after the app container exited). An
        agent bug (the exit status must be the drain's, 0), fixed in 690dbe3."""
        return (self.agent_rc == -signal.SIGTERM and not self.agent_killed
                and self.summary is not None and self.summary.get("exit_reason") == "drained"
                and self.app_exit is not None and self.agent_sigterm is not None
                and self.agent_sigterm >= self.app_exit
                and any(r.get("ev") == "stop" for r in self.pod.records()))

    def stepped_down(self):
        """Tenures of this pod that ended by STEPDOWN during the deletion."""
        return [t for t in self.pod.tenures()
                if t.how == "stepdown" and t.end is not None and t.end >= self.t0]

    def unannounced(self):
        """Tokens the app got `RELEASED` for but never `LEADER`: an acquisition that completed
        after the drain had started, which the agent released without announcing it (legal:
        nobody did leader work under it). Seen with etcd, when a follower's drain starts
        while its acquire request is in flight just after the leader's release."""
        led = {t.token for t in self.pod.tenures()}
        return [r["token"] for r in self.pod.records()
                if r.get("ev") == "released" and r.get("outcome") in ("released", "already_gone")
                and r.get("token") not in led]

    def expected_released(self):
        """What DRAINED / the drain summary must count as released."""
        return len(self.stepped_down()) + len(self.unannounced())

    def problems(self):
        """Everything that differs from a clean deletion, as readable lines."""
        p, name = [], self.pod.name
        released = self.expected_released()
        if released > 1:
            p.append("%s: %d releases in one drain of one lock: %r, unannounced %r"
                     % (name, released, self.stepped_down(), self.unannounced()))
        if self.hook_timed_out:
            p.append("%s: preStop hook still running after the grace period" % name)
        if self.late_hook:
            pass
        elif self.hook_rc != 0:
            p.append("%s: preStop `leasekeeper drain` exited %s (stdout %r, stderr %r)"
                     % (name, self.hook_rc, self.hook_out.strip(), self.hook_err.strip()))
        elif self.drained is None:
            p.append("%s: preStop drain printed no result: %r" % (name, self.hook_out))
        elif (self.drained["released"], self.drained["expired"], self.drained["failed"]) != \
                (released, 0, 0):
            p.append("%s: preStop drain printed %r, expected released=%d expired=0 failed=0"
                     % (name, self.hook_out.strip(), released))
        if self.was_leader and released != 1:
            p.append("%s: was leading (%r) but no tenure ended by STEPDOWN during the deletion"
                     % (name, self.tenure))
        if self.app_killed or self.app_rc != 0:
            p.append("%s: app exit %s%s" % (name, self.app_rc,
                                             " (SIGKILLed)" if self.app_killed else ""))
        if not any(r.get("ev") == "stop" for r in self.pod.records()):
            p.append("%s: app never got STOP" % name)
        if self.exit_race:
            p.append("%s: agent died from the SIGTERM sent after its drain was complete "
                     "(exit %s instead of the drain's 0: SIGTERM back to its default action "
                     "while the agent exits; fixed in 690dbe3)" % (name, self.agent_rc))
        elif self.agent_killed or self.agent_rc != 0:
            p.append("%s: agent exit %s%s" % (name, self.agent_rc,
                                               " (SIGKILLed)" if self.agent_killed else ""))
        s = self.summary
        if s is None:
            p.append("%s: no 'drain complete' line in the agent's log" % name)
        elif (s.get("exit_reason"), s.get("released"), s.get("expired"), s.get("failed")) != \
                ("drained", released, 0, 0):
            p.append("%s: agent drain summary %r, expected drained released=%d"
                     % (name, s, released))
        for what, text in (("agent", self.pod.agent.logs()), ("preStop hook", self.hook_err)):
            bad = [ln for ln in text.splitlines() if any(s in ln for s in H.SANITIZER_PATTERNS)]
            if bad:
                p.append("%s: sanitizer reports from the %s:\n%s"
                         % (name, what, "\n".join(bad[:30])))
        if self.end - self.t0 > self.pod.sim.grace:
            p.append("%s: deletion took %.2fs, beyond the %.0fs grace period"
                     % (name, self.end - self.t0, self.pod.sim.grace))
        return p

    def describe(self):
        def rel(t):
            return "-" if t is None else "%+.1fms" % ((t - self.t0) * 1000)
        return ("%s deletion (%s%s): hook rc=%s at %s%s, app SIGTERM %s exit %s rc=%s, "
                "agent SIGTERM %s exit %s rc=%s" % (
                    self.pod.name, self.sidecar, ", leader" if self.was_leader else "",
                    self.hook_rc, rel(self.hook_end), " (late)" if self.late_hook else "",
                    rel(self.app_sigterm), rel(self.app_exit), self.app_rc,
                    rel(self.agent_sigterm), rel(self.agent_exit), self.agent_rc))


class Pod:
    def __init__(self, sim, name, seq):
        self.sim = sim
        self.name = name
        self.seq = seq
        self.agent = None
        self.app = None
        self.app_exit_t = None
        self.record_path = os.path.join(sim.dir, "records", name + ".jsonl")
        self.deletion = None
        self.started = None
        self.ready_at = None

    @property
    def sock(self):
        return self.agent.sock_path

    def records(self):
        return read_jsonl(self.record_path)

    def tenures(self):
        return tenures_from_records(self.records(), self.name, self.app_exit_t)

    def open_tenure(self):
        ts = self.tenures()
        return ts[-1] if ts and ts[-1].open else None

    def alive(self):
        return any(p is not None and p.poll() is None
                   for p in (self.app, self.agent.proc if self.agent else None))

    def __repr__(self):
        return "Pod(%s)" % self.name


class PodSim:
    """N pods of one lock against one backend.

    backend: a backend entry for the agent config (redis_backend() / etcd_backend()).
    sidecar: "native" or "classic" (see the module docstring).
    grace: terminationGracePeriodSeconds; shutdown_timeout: the agent's; drain_timeout: the
    preStop hook's --timeout (default = shutdown_timeout, as deploy/ does)."""

    def __init__(self, workdir, backend, sidecar="native", lock=None, lock_name="x",
                 grace=8.0, shutdown_timeout="6s", drain_timeout=None, work_ms=20.0,
                 ack_delay_ms=0.0, min_kill_window=KUBELET_MIN_GRACE, app_bug=None,
                 log=None):
        if sidecar not in ("native", "classic"):
            raise ValueError("sidecar must be native or classic, not %r" % (sidecar,))
        self.dir = tempfile.mkdtemp(prefix="sim-%s-" % sidecar, dir=workdir)
        os.makedirs(os.path.join(self.dir, "records"))
        self.store_path = os.path.join(self.dir, "store.log")
        self.backend = dict(backend)
        self.sidecar = sidecar
        self.lock_name = lock_name
        lk = dict(DEFAULT_LOCK)
        lk.update(lock or {})
        self.lock = H.lock_config(lock_name, **lk)
        self.grace = float(grace)
        self.shutdown_timeout = shutdown_timeout
        self.drain_timeout = drain_timeout or shutdown_timeout
        self.work_ms = work_ms
        self.ack_delay_ms = ack_delay_ms
        self.min_kill_window = min_kill_window
        self.app_bug = app_bug      # sim_app.py --bug, for checking the checker
        self.log = log or (lambda msg: None)
        self.pods = []          # running (not deleted) pods, oldest first
        self.all_pods = []
        self.deletions = []
        self.rounds = []
        self._seq = 0
        self._lock = threading.Lock()

    @property
    def retry_interval(self):
        return H.dur_ms(self.lock.get("retry_interval", "1s")) / 1000.0

    @property
    def ttl(self):
        return H.dur_ms(self.lock.get("ttl", "10s")) / 1000.0

    # -- pod start

    def start_pod(self, name=None, wait_ready=True):
        with self._lock:
            self._seq += 1
            seq = self._seq
        pod = Pod(self, name or "pod-%d" % seq, seq)
        pod.started = _now()
        pod.agent = H.Agent(self.dir, identity=pod.name, backends=[self.backend],
                            locks=[self.lock], shutdown_timeout=self.shutdown_timeout)
        with self._lock:
            self.all_pods.append(pod)
            self.pods.append(pod)
        pod.agent.start(wait=True, timeout=H.scaled(15))
        out = open(os.path.join(pod.agent.dir, "app.out"), "wb")
        env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
        pod.app = subprocess.Popen(
            [sys.executable, SIM_APP, "--socket", pod.sock, "--pod", pod.name,
             "--lock", self.lock_name, "--record", pod.record_path, "--store", self.store_path,
             "--work-ms", str(self.work_ms), "--ack-delay-ms", str(self.ack_delay_ms)]
            + (["--bug", self.app_bug] if self.app_bug else []),
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
            cwd=pod.agent.dir)
        out.close()
        if wait_ready:
            self.wait_ready(pod)
        return pod

    def wait_ready(self, pod, timeout=None):
        """Until the app knows who leads (FOLLOWER holder=<someone>) or leads."""
        def ready():
            if pod.app.poll() is not None:
                raise AssertionError("%s: the app exited with %s before it was ready:\n%s"
                                     % (pod.name, pod.app.returncode, self.pod_report(pod)))
            for r in pod.records():
                if r.get("ev") == "start" or (r.get("ev") == "follower"
                                              and r.get("holder") not in (None, "-")):
                    return r["t"]
            return None
        pod.ready_at = H.wait_until(ready, timeout=timeout or H.scaled(15), interval=0.005,
                                    what="%s to be ready" % pod.name)
        return pod

    # -- who leads

    def leaders(self):
        return [p for p in list(self.pods) if p.open_tenure() is not None]

    def wait_leader(self, timeout=None):
        def one():
            ls = self.leaders()
            if len(ls) > 1:
                raise AssertionError("two pods lead at once: %s" % ls)
            return ls[0] if ls else None
        return H.wait_until(one, timeout=timeout or H.scaled(15), interval=0.005,
                            what="a leader among %s" % self.pods)

    def wait_tenure_after(self, t, timeout):
        """The first tenure (of any pod) that starts after t; None on timeout."""
        deadline = _now() + timeout
        while True:
            starts = [x for p in list(self.all_pods) for x in p.tenures() if x.start > t]
            if starts:
                return min(starts, key=lambda x: x.start)
            if _now() >= deadline:
                return None
            time.sleep(0.005)

    # -- pod deletion

    def delete_pod(self, pod):
        """Delete pod as the kubelet does; blocks until every container is gone. Returns the
        Deletion (its problems() lists what was not clean)."""
        d = Deletion(pod, self.sidecar)
        pod.deletion = d
        ten = pod.open_tenure()
        d.was_leader, d.tenure = ten is not None, ten
        agent = pod.agent.proc
        hook_out = os.path.join(pod.agent.dir, "prestop.out")
        hook_err = os.path.join(pod.agent.dir, "prestop.err")
        d.t0 = _now()
        deadline = d.t0 + self.grace
        with open(hook_out, "wb") as o, open(hook_err, "wb") as e:
            hook = subprocess.Popen([client_bin(), "drain", "-s", pod.sock, "--timeout",
                                     self.drain_timeout], stdin=subprocess.DEVNULL,
                                    stdout=o, stderr=e, env=H._cli_env())
        if self.sidecar == "classic":
            # No preStop hook on the agent's container: its SIGTERM comes straight away.
            d.agent_sigterm = _now()
            self._signal(agent, signal.SIGTERM)
        app_kill_at = agent_kill_at = None
        if self.sidecar == "classic":
            agent_kill_at = max(deadline, d.agent_sigterm + self.min_kill_window)
        while True:
            now = _now()
            if d.hook_end is None:
                if hook.poll() is not None:
                    d.hook_end, d.hook_rc = _now(), hook.returncode
                elif now >= deadline:
                    d.hook_end, d.hook_timed_out = now, True
                if d.hook_end is not None:
                    d.app_sigterm = _now()
                    self._signal(pod.app, signal.SIGTERM)
                    app_kill_at = max(deadline, d.app_sigterm + self.min_kill_window)
            if d.app_sigterm is not None and d.app_exit is None:
                if pod.app.poll() is not None:
                    d.app_exit, d.app_rc = _now(), pod.app.returncode
                elif now >= app_kill_at:
                    d.app_killed = True
                    pod.app.kill()
                    pod.app.wait()
                    d.app_exit, d.app_rc = _now(), pod.app.returncode
                if d.app_exit is not None:
                    pod.app_exit_t = d.app_exit
                    if self.sidecar == "native":
                        # The sidecar's turn: every regular container has exited.
                        d.agent_sigterm = _now()
                        self._signal(agent, signal.SIGTERM)
                        agent_kill_at = max(deadline, d.agent_sigterm + self.min_kill_window)
            if d.agent_exit is None and agent.poll() is not None:
                d.agent_exit, d.agent_rc = _now(), agent.returncode
            elif d.agent_exit is None and agent_kill_at is not None and now >= agent_kill_at:
                d.agent_killed = True
                agent.kill()
                agent.wait()
                d.agent_exit, d.agent_rc = _now(), agent.returncode
            if d.app_exit is not None and d.agent_exit is not None:
                break
            time.sleep(POLL)
        if hook.poll() is None:  # its container is gone: so is the exec'd hook
            d.hook_killed = True
            hook.kill()
            hook.wait()
            if d.hook_rc is None:
                d.hook_rc = hook.returncode
        d.end = _now()
        pod.agent.close_files()
        with open(hook_out, "rb") as f:
            d.hook_out = f.read().decode(errors="replace")
        with open(hook_err, "rb") as f:
            d.hook_err = f.read().decode(errors="replace")
        m = re.search(r"released=(\d+) expired=(\d+) failed=(\d+) elapsed_ms=(\d+)", d.hook_out)
        if m:
            d.drained = dict(zip(("released", "expired", "failed", "elapsed_ms"),
                                 map(int, m.groups())))
        s = pod.agent.drain_summaries()
        d.summary = s[-1] if len(s) == 1 else None
        with self._lock:
            if pod in self.pods:
                self.pods.remove(pod)
            self.deletions.append(d)
        return d

    @staticmethod
    def _signal(proc, sig):
        if proc.poll() is None:
            try:
                proc.send_signal(sig)
            except ProcessLookupError:
                pass

    def delete_all(self):
        """Delete every running pod at once (a Deployment deleted, or scaled to 0)."""
        pods = list(self.pods)
        out = [None] * len(pods)
        errors = []

        def one(i, p):
            try:
                out[i] = self.delete_pod(p)
            except BaseException as e:  # reported by the caller
                errors.append(e)
        threads = [threading.Thread(target=one, args=(i, p), name="delete-" + p.name)
                   for i, p in enumerate(pods)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        return out

    # -- the rolling restart

    def choose_victim(self, order, rnd, exclude):
        pods = [p for p in self.pods if p not in exclude]
        if not pods:
            raise AssertionError("no pod to delete")
        lead = [p for p in pods if p.open_tenure() is not None]
        if order == "leader" or (order == "mixed" and rnd % 2 == 1):
            if not lead:
                raise AssertionError("no leader among %s" % pods)
            return lead[0]
        if order == "mixed":
            followers = [p for p in pods if p not in lead]
            return followers[0] if followers else pods[0]
        return pods[0]  # rolling: oldest first

    def rolling_restart(self, rounds, order="mixed", surge=True, on_round=None):
        """`rounds` times: start a replacement (first, when surge: maxSurge=1,
        maxUnavailable=0, what a Deployment of 3 does), delete one old pod, and when it led,
        wait for the next tenure. order: "leader" (always the leader), "rolling" (oldest
        first), "mixed" (odd rounds the leader, even rounds the oldest follower)."""
        for rnd in range(1, rounds + 1):
            r = {"round": rnd}
            new = self.start_pod() if surge else None
            self.wait_leader()
            victim = self.choose_victim(order, rnd, exclude=(new,) if new else ())
            r["victim"] = victim.name
            d = self.delete_pod(victim)
            r["deletion"] = d
            r["was_leader"] = d.was_leader
            if not surge:
                new = self.start_pod()
            r["new"] = new.name
            r["gap"] = r["next"] = None
            if d.was_leader:
                prev = [t for t in victim.tenures() if t.token == d.tenure.token][0]
                r["prev"] = prev
                if prev.end is not None:
                    # The next tenure: the first to start after prev did (so that an overlap
                    # shows as a negative gap rather than as no takeover at all).
                    nxt = self.wait_tenure_after(prev.start,
                                                 self.retry_interval + self.ttl + 5)
                    r["next"] = nxt
                    if nxt is not None:
                        r["gap"] = nxt.start - prev.end
            self.rounds.append(r)
            if on_round:
                on_round(r)
        return self.rounds

    # -- checks

    def tenures(self):
        return [t for p in self.all_pods for t in p.tenures()]

    def check(self):
        """(TenureChecker, store writes, store problems) over everything recorded so far."""
        ts = self.tenures()
        n, sp = check_store(self.store_path, ts)
        return TenureChecker(ts), n, sp

    def our_pids(self):
        pids = []
        for p in self.all_pods:
            for proc in (p.app, p.agent.proc if p.agent else None):
                if proc is not None:
                    pids.append(proc.pid)
        return pids

    def leftovers(self):
        """Processes still running that belong to the simulation (their command line names
        its directory), or that it started and that are still alive."""
        me = os.getpid()
        ours = set(self.our_pids())
        out = []
        for pid, ppid, state, cmd in _procs():
            if pid == me:
                continue
            if self.dir in cmd or (pid in ours and state != "Z"):
                out.append("pid %d (%s) %s" % (pid, state, cmd))
        return out

    def zombies(self):
        """Unreaped children: of this process, or of any process the simulation started."""
        parents = {os.getpid()} | set(self.our_pids())
        return ["pid %d (parent %d) %s" % (pid, ppid, cmd)
                for pid, ppid, state, cmd in _procs() if state == "Z" and ppid in parents]

    def close(self):
        """Stop everything still running, without checks (for cleanups): SIGTERM, then
        SIGKILL after the grace period."""
        for p in list(self.all_pods):
            for proc in (p.app, p.agent.proc if p.agent else None):
                if proc is not None and proc.poll() is None:
                    H._kill_wait(proc, signal.SIGTERM, self.grace)
            if p.agent:
                p.agent.close_files()

    def pod_report(self, pod, lines=25):
        recs = pod.records()
        return ("--- %s app records (last %d) ---\n%s\n--- %s agent stderr (last %d) ---\n%s"
                % (pod.name, lines, "\n".join(json.dumps(r, sort_keys=True)
                                              for r in recs[-lines:]),
                   pod.name, lines, pod.agent.tail(lines) if pod.agent else ""))

    def report(self, pods=None, lines=25):
        return "\n".join(self.pod_report(p, lines) for p in (pods or self.all_pods))


# ---------------------------------------------------------------------------------------------
# Backend probe


def probe_agent(workdir, backend, lock=None, timeout=None):
    """Start an agent with this backend and see whether it runs. Returns (True, "") or
    (False, why): a config it rejects, or a backend type it cannot set up, make it exit."""
    a = H.Agent(workdir, identity="probe", backends=[backend],
                locks=[H.lock_config("x", **dict(DEFAULT_LOCK, **(lock or {})))],
                shutdown_timeout="3s")
    try:
        try:
            a.start(wait=True, timeout=timeout or H.scaled(5))
        except AssertionError:
            rc = a.proc.poll() if a.proc else None
            if rc is not None and rc < 0:
                raise AssertionError("the agent died from signal %d on a %s backend:\n%s"
                                     % (-rc, backend.get("type"), a.tail(20)))
            return False, "the agent exited with %s:\n%s" % (rc, a.tail(8))
        # Running. Supported means an app that campaigns becomes leader.
        try:
            app = H.AppClient(a.sock_path, client_name="probe")
            try:
                app.campaign("x", timeout=H.scaled(5))
            finally:
                app.close()
        except AssertionError as e:
            if a.proc.poll() is not None:
                return False, "the agent exited with %s:\n%s" % (a.proc.returncode, a.tail(8))
            return False, ("the agent runs, but an app that campaigns never leads (%s):\n%s"
                           % (str(e).splitlines()[0], a.tail(8)))
        return True, ""
    finally:
        if a.proc is not None:
            a.stop(grace=10)
        a.close_files()


# ---------------------------------------------------------------------------------------------
# Summary and the command line


def median_max_ms(values):
    if not values:
        return None, None
    return statistics.median(values) * 1000, max(values) * 1000


def summarize(sim, checker, label):
    gaps = [r["gap"] for r in sim.rounds if r.get("gap") is not None]
    med, mx = median_max_ms(gaps)
    durs = [d.duration for d in sim.deletions]
    dmed, dmx = median_max_ms(durs)
    late = sum(1 for d in sim.deletions if d.late_hook)
    s = ("%s: %d rounds, %d leader handoffs, %d tenures, overlaps %d, token errors %d, "
         "handoff gap median %s ms max %s ms, deletion median %s ms max %s ms"
         % (label, len(sim.rounds), len(gaps), len(checker.tenures), len(checker.overlaps),
            len(checker.token_errors), _fmt(med), _fmt(mx), _fmt(dmed), _fmt(dmx)))
    unann = sum(len(d.unannounced()) for d in sim.deletions)
    if unann:
        s += ", acquisitions released unannounced during a drain: %d" % unann
    if sim.sidecar == "classic":
        s += ", preStop hooks too late to ask (agent already drained): %d of %d" % (
            late, len(sim.deletions))
    return s


def _fmt(v):
    return "-" if v is None else "%.1f" % v


def describe_round(r):
    d = r["deletion"]
    s = "round %2d: deleted %-7s" % (r["round"], r["victim"])
    if r["was_leader"]:
        nxt = r.get("next")
        s += " (leader, token %d)" % d.tenure.token
        if nxt is not None:
            s += " -> %s leads (token %d), gap %.2f ms" % (nxt.pod, nxt.token, r["gap"] * 1000)
        else:
            s += " -> NOBODY took over"
    else:
        s += " (follower)"
    s += "; drain rc=%s%s%s; pod gone in %.0f ms; new %s" % (
        d.hook_rc, " " + d.hook_out.strip().replace("drained: ", "") if d.drained else "",
        " (late hook)" if d.late_hook else "", d.duration * 1000, r["new"])
    return s


def run_simulation(workdir, backend_kind, sidecar, pods=3, rounds=20, order="mixed",
                   surge=True, log=print, verbose=False, **simkw):
    """Start a private backend, N pods, the rolling restart, delete all pods; return
    (sim, checker, problems). Used by the command line."""
    if backend_kind == "redis":
        srv = H.RedisServer(workdir).start()
        backend = redis_backend(srv.address)
    else:
        srv = H.EtcdServer(workdir).start()
        backend = etcd_backend(srv.url)
    sim = PodSim(workdir, backend, sidecar=sidecar, log=log, **simkw)
    problems = []
    try:
        for _ in range(pods):
            sim.start_pod()
        sim.wait_leader()

        def on_round(r):
            log(describe_round(r))
            if verbose:
                log("          " + r["deletion"].describe())
            problems.extend(r["deletion"].problems())
            if r["was_leader"] and (r["gap"] is None or r["gap"] > 1.0):
                problems.append("round %d: no takeover within 1s of the release (gap %s)"
                                % (r["round"], r["gap"]))
        sim.rolling_restart(rounds, order=order, surge=surge, on_round=on_round)
        for d in sim.delete_all():
            if verbose:
                log("teardown: " + d.describe())
            problems.extend(d.problems())
        checker, n, sp = sim.check()
        if verbose:
            for t in checker.tenures:
                log("tenure: %s token %d, %.1f ms, ended by %s" % (
                    t.pod, t.token, ((t.end or t.start) - t.start) * 1000, t.how))
        problems += checker.problems() + sp
        problems += ["left running: " + x for x in sim.leftovers()]
        problems += ["zombie: " + x for x in sim.zombies()]
        log("store: %d fenced writes by the leaders, %d problems" % (n, len(sp)))
        log(summarize(sim, checker, "%s/%s" % (backend_kind, sidecar)))
        return sim, checker, problems
    finally:
        sim.close()
        srv.stop()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pods", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--backend", choices=("redis", "etcd"), default="redis")
    ap.add_argument("--sidecar", choices=("native", "classic"), default="native")
    ap.add_argument("--order", choices=("mixed", "leader", "rolling"), default="mixed",
                    help="which pod each round deletes (default: the leader every other round)")
    ap.add_argument("--no-surge", action="store_true",
                    help="delete first, then start the replacement (default: surge first)")
    ap.add_argument("--grace", type=float, default=8.0, help="terminationGracePeriodSeconds")
    ap.add_argument("--ttl", default="5s")
    ap.add_argument("--stepdown-timeout", default="3s")
    ap.add_argument("--retry-interval", default="10s")
    ap.add_argument("--shutdown-timeout", default="6s")
    ap.add_argument("--ack-delay-ms", type=float, default=0.0,
                    help="how long the app takes to stop leader work after STEPDOWN")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (configs, logs)")
    ap.add_argument("-v", "--verbose", action="store_true", help="every deletion's timeline")
    args = ap.parse_args(argv)
    if not os.access(H.lk_bin(), os.X_OK):
        print("podsim: no leasekeeper binary at %s (make, or set LK_BIN)" % H.lk_bin(),
              file=sys.stderr)
        return 2
    workdir = tempfile.mkdtemp(prefix="podsim-", dir="/tmp")
    lock = dict(ttl=args.ttl, stepdown_timeout=args.stepdown_timeout,
                retry_interval=args.retry_interval)
    ok = False
    try:
        if args.backend == "etcd":
            srv_probe_dir = tempfile.mkdtemp(prefix="probe-", dir=workdir)
            e = H.EtcdServer(srv_probe_dir).start()
            try:
                supported, why = probe_agent(srv_probe_dir, etcd_backend(e.url), lock)
            finally:
                e.stop()
            if not supported:
                print("podsim: this agent does not run with an etcd backend: %s" % why)
                return 2
        print("podsim: %d pods, %d rounds, backend %s, %s sidecar, order %s, LK_BIN=%s"
              % (args.pods, args.rounds, args.backend, args.sidecar, args.order, H.lk_bin()),
              flush=True)
        sim, checker, problems = run_simulation(
            workdir, args.backend, args.sidecar, pods=args.pods, rounds=args.rounds,
            order=args.order, surge=not args.no_surge,
            log=lambda m: print(m, flush=True), verbose=args.verbose, lock=lock,
            grace=args.grace, shutdown_timeout=args.shutdown_timeout,
            ack_delay_ms=args.ack_delay_ms)
        if problems:
            print("\nPROBLEMS (%d):" % len(problems))
            for p in problems:
                print("  " + p)
            print("\n" + sim.report(lines=15))
        else:
            print("OK: no overlaps, tokens strictly increasing, every pod deleted cleanly")
        ok = not problems
        return 0 if ok else 1
    finally:
        if args.keep or not ok:
            print("podsim: kept %s" % workdir)
        else:
            import shutil
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
