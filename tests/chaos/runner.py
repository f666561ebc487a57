"""The chaos runner: three replicas (agent + app) on one backend, random faults from a seed,
then the history checker (checker.py) over what happened.

    python3 tests/chaos/runner.py [--backends redis,etcd,etcd3] [--seconds N | --smoke]
                                  [--seed S] [--out DIR] [--serial] [--keep]

--smoke: every fault kind of the backend a fixed number of times (--each, default 1), in an
order shuffled by the seed. Otherwise faults come in rounds (every kind once per round, in an
order shuffled by the seed) until --seconds (per backend) have passed. The backends run in parallel (each in its own process) unless --serial.
Exit status: 0 all clean, 1 a must-be-0 figure was not 0 (the run dir is kept and printed),
2 the run itself failed (a process would not start...).

See tests/chaos/README.md for the fault list and how to read the tables.
"""

import argparse
import fcntl
import json
import os
import random
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))
sys.path.insert(0, os.path.join(REPO, "tests"))

import harness  # noqa: E402
from harness import (EtcdServer, RedisServer, lock_config, wait_until)  # noqa: E402
import checker  # noqa: E402
import net  # noqa: E402
from net import ChaosProxy, NetNS  # noqa: E402
from store import FencedStore  # noqa: E402
from common import runs  # noqa: E402
from common.runs import EventLog, mono, pdeathsig, say  # noqa: E402

F_SETPIPE_SZ = 1031
FILLER = b"#stderr-blocked-filler " + b"." * 100 + b"\n"


# ---------------------------------------------------------------------------------------------
# an agent whose stderr is a pipe the runner reads (and can stop reading), possibly in a netns


class ChaosAgent(harness.Agent):
    def __init__(self, tmpdir, log_path, prefix=(), **kw):
        super().__init__(tmpdir, **kw)
        self.stderr_path = log_path
        self.prefix = list(prefix)
        self.blocked = threading.Event()
        self._reader = None
        self._fill_fd = None

    def start(self, wait=True, timeout=harness.DEFAULT_TIMEOUT):
        r, w = os.pipe()
        try:
            fcntl.fcntl(r, F_SETPIPE_SZ, 4096)
        except OSError:
            pass
        self.proc = subprocess.Popen(self.prefix + [harness.lk_bin(), "agent", "-c",
                                                    self.config_path],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=w, cwd=self.dir, preexec_fn=pdeathsig)
        os.set_blocking(w, False)
        self._fill_fd = w           # kept: block_stderr() fills the pipe through it
        self.blocked.clear()
        self._reader = threading.Thread(target=self._read, args=(r, w, self.proc),
                                        name="agent-stderr", daemon=True)
        self._reader.start()
        if wait:
            self.wait_ready(timeout)
        return self

    def _read(self, r, w, proc):
        out = open(self.stderr_path, "ab")
        rest = b""
        try:
            while True:
                if self.blocked.is_set() and proc.poll() is None:
                    time.sleep(0.05)
                    continue
                ready, _, _ = select.select([r], [], [], 0.2)
                if not ready:
                    if proc.poll() is not None:
                        break
                    continue
                data = os.read(r, 65536)
                if not data:
                    break
                rest += data
                lines = rest.split(b"\n")
                rest = lines.pop()
                for ln in lines:
                    if not ln.startswith(FILLER[:22]):
                        out.write(ln + b"\n")
                out.flush()
            # the agent is gone: what is left in the pipe
            os.set_blocking(r, False)
            try:
                while True:
                    data = os.read(r, 65536)
                    if not data:
                        break
                    rest += data
            except OSError:
                pass
            for ln in rest.split(b"\n"):
                if ln and not ln.startswith(FILLER[:22]):
                    out.write(ln + b"\n")
        finally:
            out.close()
            os.close(r)
            if self._fill_fd == w:
                self._fill_fd = None
            try:
                os.close(w)
            except OSError:
                pass

    def block_stderr(self):
        """Stop reading the agent's stderr and fill the pipe (4 KiB): its next log line finds
        it full."""
        self.blocked.set()
        fd = self._fill_fd
        n = 0
        if fd is not None:
            try:
                while n < 1 << 20:
                    os.write(fd, FILLER)
                    n += len(FILLER)
            except (BlockingIOError, OSError):
                pass
        return n

    def unblock_stderr(self):
        self.blocked.clear()


# ---------------------------------------------------------------------------------------------
# backends


class ChaosEtcdServer(EtcdServer):
    """EtcdServer that can join an existing cluster (after `etcdctl member add`)."""

    cluster_state = "new"

    def _spawn(self):
        if self._logf:
            self._logf.close()
        self._logf = open(self.log_path, "ab")
        self._log_offset = self._logf.tell()
        args = [harness.etcd_bin(),
                "--name", self.name, "--data-dir", self.data_dir,
                "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
                "--listen-peer-urls", self.peer_url,
                "--initial-advertise-peer-urls", self.peer_url,
                "--initial-cluster", self.initial_cluster or "%s=%s" % (self.name, self.peer_url),
                "--initial-cluster-state", self.cluster_state,
                "--initial-cluster-token", self.cluster_token,
                "--logger", "zap", "--log-level", "info"]
        args += list(harness.ETCD_FAST_ARGS if self.fast else harness.ETCD_DEFAULT_ARGS)
        args += self.extra_args
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=self._logf,
                                     stderr=subprocess.STDOUT, cwd=self.dir,
                                     preexec_fn=pdeathsig)
        self.stopped = False


class RedisTarget:
    kind = "redis"
    faults = ("redis_restart_empty", "redis_restart_snapshot", "redis_sigstop")

    def __init__(self, tmp, evlog):
        self.evlog = evlog
        self.server = RedisServer(tmp)
        self.snaps = []
        self.snapdir = os.path.join(tmp, "snapshots")
        os.makedirs(self.snapdir)

    def start(self):
        self.server.start()
        self.evlog("backend_start", who="redis", pid=self.server.proc.pid)

    def ports(self):
        return [self.server.port]

    def agent_backend(self, proxies):
        return {"name": "main", "type": "redis", "address": proxies[0].address,
                "timeout": "500ms"}

    def members(self):
        return [self.server]

    def snapshot(self):
        """SAVE, keep a copy aside, and remove dump.rdb (a restart is empty unless a fault puts
        one back)."""
        try:
            if not self.server.alive() or self.server.stopped:
                return
            self.server.call("SAVE", timeout=2.0)
        except Exception:  # noqa: BLE001
            return
        src = os.path.join(self.server.dir, "dump.rdb")
        if os.path.exists(src):
            dst = os.path.join(self.snapdir, "%03d.rdb" % len(self.snaps))
            shutil.move(src, dst)
            self.snaps.append(dst)

    def close(self):
        try:
            self.server.stop(grace=2.0)
        except Exception:  # noqa: BLE001
            pass


class EtcdTarget:
    faults = ("etcd_kill", "etcd_sigstop", "etcd_wipe")

    def __init__(self, tmp, evlog, n):
        self.evlog = evlog
        self.n = n
        self.kind = "etcd" if n == 1 else "etcd3"
        parent = harness._etcd_data_parent()
        if n == 1:
            self.cluster = None
            self.list = [ChaosEtcdServer(tmp, name="n0", data_parent=parent)]
        else:
            self.cluster = harness.EtcdCluster(tmp, n=n, data_parent=parent)
            self.list = None

    def start(self):
        if self.cluster is None:
            self.list[0].start()
        else:
            # EtcdCluster makes harness EtcdServers; make them ours (same attributes), so a
            # member can rejoin with --initial-cluster-state existing.
            c = self.cluster
            orig = harness.EtcdServer
            harness.EtcdServer = ChaosEtcdServer
            try:
                c.start()
            finally:
                harness.EtcdServer = orig
            self.list = c.members
        for m in self.list:
            self.evlog("backend_start", who="etcd-" + m.name, pid=m.proc.pid)

    def ports(self):
        return [m.client_port for m in self.list]

    def agent_backend(self, proxies):
        return {"name": "main", "type": "etcd",
                "endpoints": ["http://" + p.address for p in proxies], "timeout": "500ms"}

    def members(self):
        return self.list

    def snapshot(self):
        pass

    def close(self):
        for m in self.list or []:
            try:
                m.close()
            except Exception:  # noqa: BLE001
                pass


# ---------------------------------------------------------------------------------------------
# replicas


class Replica:
    def __init__(self, run, idx):
        self.run = run
        self.idx = idx
        self.name = "pod-%d" % idx
        self.ns = None
        self.proxies = []
        self.agent = None
        self.app = None
        self.app_log = os.path.join(run.dir, "apps", self.name + ".jsonl")

    def setup(self):
        r = self.run
        if r.use_netns:
            self.ns = NetNS(self.idx)
            host = self.ns.host_ip
        else:
            host = "127.0.0.1"
        for j, port in enumerate(r.backend.ports()):
            self.proxies.append(ChaosProxy(port, listen_host=host,
                                           seed=r.seed * 1000 + self.idx * 10 + j))
        ttl = r.ttl_s
        lock = lock_config("x", ttl="%dms" % (ttl * 1000), retry_interval="300ms",
                           stepdown_timeout="3s", release_timeout="2s")
        self.agent = ChaosAgent(r.tmp, os.path.join(r.dir, "agents", self.name + ".log"),
                                prefix=self.ns.prefix() if self.ns else (),
                                identity=self.name, locks=[lock],
                                backends=[r.backend.agent_backend(self.proxies)],
                                shutdown_timeout="8s")

    def start_agent(self):
        self.agent.start(wait=True, timeout=15)
        self.run.evlog("spawn", who="agent-" + self.name, pid=self.agent.pid)

    def start_app(self):
        out = open(os.path.join(self.run.dir, "apps", self.name + ".out"), "ab")
        self.app = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "app.py"), "--socket", self.agent.sock_path,
             "--lock", "x", "--name", self.name, "--store-port", str(self.run.store.port),
             "--log", self.app_log],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            preexec_fn=pdeathsig)
        out.close()
        self.run.evlog("spawn", who="app-" + self.name, pid=self.app.pid)

    def kill_app(self):
        if self.app and self.app.poll() is None:
            try:
                os.kill(self.app.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
            self.app.kill()
            # The app's tenure ends when the signal is sent: it runs no more code, and its
            # agent sees EOF only once it is dead. After wait() would be too late: the agent
            # may have released and a successor led meanwhile (a false overlap, seen once).
            t_kill = mono()
            self.app.wait()
            self.run.evlog("killed", who="app-" + self.name, pid=self.app.pid, t=t_kill)

    def kill_agent(self):
        a = self.agent
        if a.proc and a.proc.poll() is None:
            a.proc.kill()
            a.proc.wait()
            self.run.evlog("killed", who="agent-" + self.name, pid=a.proc.pid)

    def close(self):
        for p in (self.app, self.agent.proc if self.agent else None):
            if p is not None and p.poll() is None:
                try:
                    os.kill(p.pid, signal.SIGCONT)
                    p.kill()
                    p.wait(timeout=5)
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    pass
        for p in self.proxies:
            p.close()
        if self.ns:
            self.ns.close()


# ---------------------------------------------------------------------------------------------
# the run on one backend

COMMON_FAULTS = ("agent_kill9", "app_kill9", "agent_sigstop", "app_sigstop", "pod_sigstop",
                 "stderr_block", "partition", "delay", "loss", "rolling_restart")


class LeaderView:
    """Who leads now, from the apps' logs (read incrementally)."""

    def __init__(self, replicas):
        self.reps = replicas
        self.pos = {r.name: 0 for r in replicas}
        self.state = {r.name: None for r in replicas}  # (token, deadline) or None

    def update(self):
        for r in self.reps:
            try:
                with open(r.app_log, "rb") as f:
                    f.seek(self.pos[r.name])
                    data = f.read()
            except FileNotFoundError:
                continue
            end = data.rfind(b"\n")
            if end < 0:
                continue
            self.pos[r.name] += end + 1
            for ln in data[:end].split(b"\n"):
                try:
                    e = json.loads(ln)
                except ValueError:
                    continue
                ev = e.get("ev")
                if ev == "start":
                    self.state[r.name] = (e["token"], e.get("deadline") or 0)
                elif ev == "deadline" and self.state[r.name]:
                    self.state[r.name] = (e["token"], e["deadline"])
                elif ev in ("stop", "proc"):
                    self.state[r.name] = None

    def leader(self):
        self.update()
        now = mono()
        for r in self.reps:
            s = self.state[r.name]
            if s and s[1] > now and r.app is not None and r.app.poll() is None:
                return r
        return None


class Run:
    def __init__(self, backend_kind, seed, out_dir, seconds, smoke, each, ttl_s=2.0, only=None):
        self.kind = backend_kind
        self.only = only
        self.smoke_budget = float(os.environ.get("CHAOS_SMOKE_BUDGET") or 135)
        self.seed = seed
        self.rng = random.Random("%s/%s" % (seed, backend_kind))
        self.dir = out_dir
        self.seconds = seconds
        self.smoke = smoke
        self.each = each
        self.ttl_s = ttl_s
        for d in ("apps", "agents"):
            os.makedirs(os.path.join(out_dir, d), exist_ok=True)
        self.tmp = tempfile.mkdtemp(prefix="work-", dir=out_dir)
        self.evlog = EventLog(os.path.join(out_dir, "events.jsonl"))
        self.store = None
        self.backend = None
        self.replicas = []
        if os.environ.get("CHAOS_NO_NETNS"):
            ok, why = False, "CHAOS_NO_NETNS is set"
        else:
            ok, why = net.netns_available()
        self.use_netns = ok
        self.net_note = ("netns+veth partitions" if ok else
                         "NO netns (%s): partitions are proxy blackholes"
                         % (why.strip().splitlines() or ["?"])[-1][:80])
        self.fault_seq = 0
        self.fault_errors = 0

    # -- schedule

    def fault_kinds(self):
        kinds = list(COMMON_FAULTS) + list(self.backend_faults())
        if self.only:
            kinds = [k for k in kinds if k in self.only]
        return kinds

    def backend_faults(self):
        return RedisTarget.faults if self.kind == "redis" else EtcdTarget.faults

    def make_schedule(self):
        kinds = self.fault_kinds()
        rng = self.rng
        if self.smoke:
            sched = [k for k in kinds for _ in range(self.each)]
            rng.shuffle(sched)
        else:
            # Enough for the time budget (the run stops when time is up), drawn in rounds that
            # hold every kind once in a random order: a long run injects every kind about as
            # often as any other, so "every fault N times" needs N rounds, not luck.
            sched = []
            while len(sched) < int(self.seconds) + 10:
                rnd = list(kinds)
                rng.shuffle(rnd)
                sched += rnd
        out = []
        for k in sched:
            out.append({"kind": k,
                        "target": "leader" if rng.random() < 0.75 else rng.randrange(3),
                        "hold": round(self.ttl_s * rng.uniform(1.3, 2.0), 3),
                        "short": round(rng.uniform(0.2, 1.0), 3),
                        "member": rng.randrange(3),
                        "delay": round(rng.uniform(0.02, 0.08), 3),
                        "loss": round(rng.uniform(0.05, 0.2), 3),
                        "all": rng.random() < 0.3,
                        # a rolling restart of another replica during this fault's hold
                        "roll": rng.random() < 0.3,
                        "pause": round(rng.uniform(0.2, 1.0), 3)})
        return out

    # -- setup / teardown

    def setup(self):
        self.store = FencedStore(os.path.join(self.dir, "store.jsonl")).start()
        if self.kind == "redis":
            self.backend = RedisTarget(self.tmp, self.evlog)
        else:
            self.backend = EtcdTarget(self.tmp, self.evlog, 1 if self.kind == "etcd" else 3)
        self.backend.start()
        self.replicas = [Replica(self, i) for i in range(3)]
        for r in self.replicas:
            r.setup()
        for r in self.replicas:
            r.start_agent()
            r.start_app()
        self.view = LeaderView(self.replicas)

    def close(self):
        for r in self.replicas:
            try:
                r.close()
            except Exception:  # noqa: BLE001
                traceback.print_exc()
        if self.backend:
            self.backend.close()
        # the backends' own logs go with the run (the temp dir is removed)
        keep = os.path.join(self.dir, "backend-logs")
        for root, _, files in os.walk(self.tmp):
            for fn in files:
                if fn.endswith(".log"):
                    os.makedirs(keep, exist_ok=True)
                    name = os.path.basename(root) + "-" + fn
                    n = 0
                    while os.path.exists(os.path.join(keep, name)):
                        n += 1
                        name = "%s.%d" % (name, n)
                    shutil.copy(os.path.join(root, fn), os.path.join(keep, name))
        if self.store:
            self.store.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    # -- helpers

    def pick(self, f):
        if f["target"] == "leader":
            r = self.view.leader()
            if r is not None:
                return r
            return self.replicas[f["member"]]
        return self.replicas[f["target"]]

    def wait_leader(self, timeout):
        try:
            return wait_until(self.view.leader, timeout=timeout, interval=0.05)
        except AssertionError:
            return None

    def ensure_running(self):
        """Whatever a fault left down comes back (a safety net; faults heal themselves)."""
        for r in self.replicas:
            if r.agent.proc is None or r.agent.proc.poll() is not None:
                # nobody stopped it: a crash or a fatal exit (the checker counts these)
                rc = r.agent.proc.returncode if r.agent.proc else None
                self.evlog("unexpected_exit", who="agent-" + r.name, rc=rc)
                say("  %6.1fs  agent %s EXITED by itself (status %s): restarting it"
                    % (mono() - self.t0, r.name, rc))
                r.start_agent()
            if r.app is None or r.app.poll() is not None:
                rc = r.app.returncode if r.app else None
                self.evlog("unexpected_exit", who="app-" + r.name, rc=rc)
                say("  %6.1fs  app %s exited by itself (status %s): restarting it"
                    % (mono() - self.t0, r.name, rc))
                r.start_app()

    def heal_backend(self):
        for m in self.backend.members():
            try:
                if m.stopped:
                    m.sigcont()
                if not m.alive():
                    m.restart()
            except Exception as e:  # noqa: BLE001
                say("  healing the backend: %r" % (e,))
        for r in self.replicas:
            if r.ns and r.ns.down:
                r.ns.link_up()
            for p in r.proxies:
                p.heal()
            r.agent.unblock_stderr()
            for p in (r.app, r.agent.proc):
                if p is not None and p.poll() is None:
                    os.kill(p.pid, signal.SIGCONT)

    def member(self, f):
        ms = self.backend.members()
        if len(ms) == 1:
            return ms[0]
        if f["target"] == "leader":  # the raft leader
            try:
                return ms[self.backend.cluster.leader_index(timeout=3)]
            except AssertionError:
                pass
        return ms[f["member"] % len(ms)]

    # -- faults: each injects, holds, heals; returns a short description of its target

    def inject(self, f):
        k = f["kind"]
        self.fault_seq += 1
        fid = self.fault_seq
        r = self.pick(f)
        target = r.name
        hold = f["hold"]
        if k in ("redis_restart_empty", "redis_restart_snapshot", "redis_sigstop"):
            target = "redis"
        elif k.startswith("etcd_"):
            target = "etcd-" + self.member(f).name
        elif k in ("delay", "loss") and f["all"]:
            target = "all"
        self.evlog("fault_start", id=fid, kind=k, target=target)
        try:
            note = getattr(self, "f_" + k)(f, r)
        except BaseException as e:
            self.evlog("fault_heal", id=fid, kind=k, target=target, note="error: %r" % (e,))
            raise
        self.evlog("fault_heal", id=fid, kind=k, target=target, note=note)
        say("  %6.1fs  %-22s %-10s %s" % (mono() - self.t0, k, target, note or ""))

    def f_agent_kill9(self, f, r):
        r.kill_agent()
        time.sleep(f["short"])
        r.start_agent()

    def f_app_kill9(self, f, r):
        r.kill_app()
        time.sleep(f["short"])
        r.start_app()

    def hold(self, f, r, seconds):
        """Sleep through a fault; with f["roll"], a graceful rolling restart of another
        replica happens meanwhile (logged as a fault of its own, "rolling_restart+")."""
        end = mono() + seconds
        if f.get("roll") and f["kind"] != "rolling_restart":
            time.sleep(min(seconds / 4, 0.5))
            other = self.replicas[(r.idx + 1 + f["member"] % 2) % 3]
            self.fault_seq += 1
            fid = self.fault_seq
            self.evlog("fault_start", id=fid, kind="rolling_restart+", target=other.name)
            try:
                note = self.f_rolling_restart(f, other)
            finally:
                self.evlog("fault_heal", id=fid, kind="rolling_restart+", target=other.name)
            say("  %6.1fs    + rolling_restart    %-10s %s (during %s)"
                % (mono() - self.t0, other.name, note, f["kind"]))
        left = end - mono()
        if left > 0:
            time.sleep(left)

    def f_agent_sigstop(self, f, r):
        r.agent.proc.send_signal(signal.SIGSTOP)
        self.hold(f, r, f["hold"])
        r.agent.proc.send_signal(signal.SIGCONT)

    def f_app_sigstop(self, f, r):
        r.app.send_signal(signal.SIGSTOP)
        self.hold(f, r, f["hold"])
        r.app.send_signal(signal.SIGCONT)

    def f_pod_sigstop(self, f, r):
        """The whole pod frozen (agent and app), then thawed: the agent's LOST and the app's
        in-flight write arrive after another replica took over."""
        r.app.send_signal(signal.SIGSTOP)
        r.agent.proc.send_signal(signal.SIGSTOP)
        self.hold(f, r, f["hold"])
        r.agent.proc.send_signal(signal.SIGCONT)
        r.app.send_signal(signal.SIGCONT)

    def f_stderr_block(self, f, r):
        n = r.agent.block_stderr()
        time.sleep(f["hold"] / 2)
        for p in r.proxies:      # make it log: its backend connections break mid-block
            p.cut()
        self.hold(f, r, f["hold"] / 2)
        r.agent.unblock_stderr()
        return "filled %d bytes" % n

    def f_partition(self, f, r):
        if r.ns:
            r.ns.link_down()
            self.hold(f, r, f["hold"])
            r.ns.link_up()
            return "ip link set %s down" % r.ns.host_if
        for p in r.proxies:
            p.blackhole = True
        self.hold(f, r, f["hold"])
        for p in r.proxies:
            p.heal()
        return "proxy blackhole"

    def _proxies(self, f, r):
        if f["all"]:
            return [p for x in self.replicas for p in x.proxies]
        return r.proxies

    def f_delay(self, f, r):
        ps = self._proxies(f, r)
        for p in ps:
            p.delay = f["delay"]
        self.hold(f, r, f["hold"])
        for p in ps:
            p.heal()
        return "%.0fms each way" % (f["delay"] * 1000)

    def f_loss(self, f, r):
        ps = self._proxies(f, r)
        for p in ps:
            p.loss = f["loss"]
        self.hold(f, r, f["hold"])
        for p in ps:
            p.heal()
        return "p=%.2f stall %.2fs" % (f["loss"], ps[0].loss_stall)

    def f_rolling_restart(self, f, r):
        a = r.agent
        a.proc.send_signal(signal.SIGTERM)
        try:
            rc = a.proc.wait(timeout=12)
        except subprocess.TimeoutExpired:
            rc = "timeout"
            r.kill_agent()
        try:
            r.app.wait(timeout=3)   # it exits after STOP
        except subprocess.TimeoutExpired:
            r.kill_app()
        self.evlog("exited", who="agent-" + r.name, rc=rc)
        time.sleep(f["short"] / 2)
        r.start_agent()
        r.start_app()
        return "drain exit %s" % rc

    def f_redis_restart_empty(self, f, r):
        s = self.backend.server
        s.stop()
        time.sleep(f["short"] / 2)
        s.restart()

    def f_redis_restart_snapshot(self, f, r):
        b = self.backend
        s = b.server
        s.stop()
        snap = None
        if len(b.snaps) >= 3:
            snap = b.snaps[-3]
        elif b.snaps:
            snap = b.snaps[0]
        if snap:
            shutil.copy(snap, os.path.join(s.dir, "dump.rdb"))
        time.sleep(f["short"] / 2)
        s.restart()
        try:
            os.unlink(os.path.join(s.dir, "dump.rdb"))
        except FileNotFoundError:
            pass
        return "from %s" % (os.path.basename(snap) if snap else "nothing (no snapshot yet)")

    def f_redis_sigstop(self, f, r):
        s = self.backend.server
        s.sigstop()
        self.hold(f, r, f["hold"])
        s.sigcont()

    def f_etcd_kill(self, f, r):
        m = self.member(f)
        m.kill()
        time.sleep(f["short"])
        m.restart()

    def f_etcd_sigstop(self, f, r):
        m = self.member(f)
        m.sigstop()
        self.hold(f, r, f["hold"])
        m.sigcont()

    def f_etcd_wipe(self, f, r):
        m = self.member(f)
        if len(self.backend.members()) == 1:
            m.stop()
            shutil.rmtree(m.data_dir, ignore_errors=True)
            time.sleep(f["short"] / 2)
            m.restart(wipe=True)
            return "single member wiped: a new cluster"
        others = [x for x in self.backend.members() if x is not m and x.alive()]
        mid = m.member_id()
        # etcdctl may time out while the cluster elects a leader (the removed member may have
        # been it): try again, checking the member list, for up to 20s.
        self._etcdctl_until(others, ("member", "remove", "%x" % mid),
                            lambda ids, urls: mid not in ids)
        m.kill()
        shutil.rmtree(m.data_dir, ignore_errors=True)
        time.sleep(f["short"] / 2)
        self._etcdctl_until(others, ("member", "add", m.name, "--peer-urls=" + m.peer_url),
                            lambda ids, urls: m.peer_url in urls)
        # the same names and peer URLs as at the start: the original --initial-cluster
        m.cluster_state = "existing"
        m._spawn()
        m._wait_ready(30)
        return "member %x removed, data wiped, re-added as a new member" % mid

    def _etcdctl_until(self, others, args, done):
        deadline = mono() + 20
        last = None
        while mono() < deadline:
            for o in others:
                try:
                    ids, urls = self._member_list(o)
                    if done(ids, urls):
                        return
                    r = o.etcdctl(*args, timeout=10)
                    last = (r.stdout + r.stderr).strip()[-300:]
                    ids, urls = self._member_list(o)
                    if done(ids, urls):
                        return
                except (OSError, subprocess.SubprocessError, ValueError) as e:
                    last = str(e)
            time.sleep(0.5)
        raise RuntimeError("etcdctl %s did not take effect: %s" % (" ".join(args), last))

    @staticmethod
    def _member_list(o):
        r = o.etcdctl("member", "list", "-w", "json", timeout=10)
        if r.returncode != 0:
            raise ValueError(r.stderr.strip()[-200:])
        ms = json.loads(r.stdout).get("members", [])
        return ({int(x["ID"]) for x in ms},
                {u for x in ms for u in x.get("peerURLs", [])})

    # -- the run

    def run(self):
        sched = self.make_schedule()
        meta = {"backend": self.kind, "seed": self.seed, "ttl": self.ttl_s,
                "smoke": self.smoke, "seconds": self.seconds, "net": self.net_note,
                "replicas": ["pod-0", "pod-1", "pod-2"], "agent": harness.lk_bin(),
                "schedule": sched if self.smoke else sched[:200]}
        with open(os.path.join(self.dir, "run.json"), "w") as fp:
            json.dump(meta, fp, indent=1)
        self.t0 = mono()
        say("[%s] seed %s, %s, %s" % (self.kind, self.seed, self.net_note,
                                      "smoke: %d faults" % len(sched) if self.smoke
                                      else "%ss" % self.seconds))
        self.setup()
        if not self.wait_leader(15 + 2 * self.ttl_s):
            raise RuntimeError("no leader within %.0fs of the start" % (15 + 2 * self.ttl_s))
        say("  %6.1fs  first leader: %s" % (mono() - self.t0, self.view.leader().name))
        # the smoke profile has a fixed number of faults, and a time budget as a safety net
        # (what it could not inject is said, and counted in run.json)
        end = self.t0 + (self.seconds if not self.smoke else self.smoke_budget)
        skipped = 0
        for f in sched:
            if mono() >= end:
                if not self.smoke:
                    break
                skipped += 1
                continue
            self.backend.snapshot()
            self.wait_leader(3 * self.ttl_s)
            time.sleep(f["pause"])
            try:
                self.inject(f)
            except Exception as e:  # noqa: BLE001
                # the fault could not be made (a tool failed): say so, heal, go on
                self.fault_errors += 1
                self.evlog("fault_error", kind=f["kind"], error=repr(e))
                say("  %6.1fs  %-22s ERROR %r" % (mono() - self.t0, f["kind"], e))
                self.heal_backend()
            self.ensure_running()
        # the end: a leader again (6 ttl at most: longer is a LIVENESS line), then one ttl
        self.wait_leader(6 * self.ttl_s)
        time.sleep(self.ttl_s)
        self.ensure_running()
        self.evlog("run_end")
        meta["elapsed"] = mono() - self.t0
        meta["fault_errors"] = self.fault_errors
        meta["skipped"] = skipped
        if skipped:
            say("  smoke budget of %.0fs spent: %d faults not injected" % (self.smoke_budget,
                                                                         skipped))
        with open(os.path.join(self.dir, "run.json"), "w") as fp:
            json.dump(meta, fp, indent=1)


def run_one(args):
    """One backend in this process: returns the exit status."""
    out = args.out
    os.makedirs(out, exist_ok=True)
    only = [k.strip() for k in (args.faults or "").split(",") if k.strip()]
    run = Run(args.backends, args.seed, out, args.seconds, args.smoke, args.each, only=only)
    return runs.run_and_close(run)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backends", default="redis,etcd,etcd3")
    ap.add_argument("--seconds", type=float, default=300)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--each", type=int, default=1)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--out", default=None)
    ap.add_argument("--serial", action="store_true")
    ap.add_argument("--faults", default="",
                    help="only these fault kinds (comma-separated; default all)")
    ap.add_argument("--keep", action="store_true", help="keep the run dirs even when clean")
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()

    runs.sigterm_interrupts()
    if args.one:
        return run_one(args)

    if runs.agent_missing(harness.lk_bin(), "build/chaos"):
        return 2
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1, 1 << 31)
    net.sweep_stale_netns()
    backends = runs.backends_from(args.backends, ("redis", "etcd", "etcd3"))
    if backends is None:
        return 2
    top = args.out or tempfile.mkdtemp(prefix="lk-chaos-")
    os.makedirs(top, exist_ok=True)
    say("chaos: seed %d, backends %s, %s, agent %s, runs in %s" % (
        args.seed, ",".join(backends),
        "smoke (each fault x%d)" % args.each if args.smoke else "%.0fs per backend" % args.seconds,
        harness.lk_bin(), top))
    t0 = mono()

    def argv_of(b):
        return ([sys.executable, os.path.abspath(__file__), "--one", "--backends", b,
                 "--seed", str(args.seed), "--out", os.path.join(top, b),
                 "--seconds", str(args.seconds), "--each", str(args.each),
                 "--faults", args.faults] + (["--smoke"] if args.smoke else []))
    status = runs.run_per_backend(backends, argv_of, args.serial, 30, top,
                                  keep=args.keep or args.out)
    if status is None:
        return 130
    elapsed = mono() - t0
    say("")
    worst = 0
    violations = []
    for b in backends:
        d = os.path.join(top, b)
        if status[b] != 0:
            say("== backend %s: the run failed (status %s), see above" % (b, status[b]))
            worst = max(worst, 2)
        if not os.path.exists(os.path.join(d, "run.json")):
            continue
        try:
            res = checker.check(d)
        except Exception:  # noqa: BLE001
            traceback.print_exc()
            worst = max(worst, 2)
            continue
        say(checker.render(res))
        say("")
        if checker.violated(res):
            violations.append(b)
    say("chaos: seed %d, %s, %.0fs in all" % (args.seed, ",".join(backends), elapsed))
    if violations:
        say("VIOLATION on %s: run dirs kept in %s; reproduce with --seed %d --backends %s%s"
            % (",".join(violations), top, args.seed, ",".join(violations),
               " --smoke" if args.smoke else " --seconds %g" % args.seconds))
        return 1
    if worst:
        say("run dirs kept in %s" % top)
        return worst
    if args.keep or args.out:
        say("run dirs in %s" % top)
    else:
        shutil.rmtree(top, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
