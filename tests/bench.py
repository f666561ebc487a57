#!/usr/bin/env python3
"""make bench: the numbers behind leasekeeper's claims, printed, not asserted.

- handoff: a leader is drained (SIGTERM, its app ACKs); how long until the follower's app hears
  LEADER, measured from the leader's RELEASED and from the SIGTERM;
- acquire: CAMPAIGN to LEADER on a free lock;
- footprint: the agent's RSS and CPU time while holding a lock.

Usage: LK_BIN=build/leasekeeper python3 tests/bench.py [--rounds N] [--backend redis|etcd]
"""

import argparse
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "integration"))

import harness  # noqa: E402
from harness import Agent, AppClient, RedisServer, lock_config  # noqa: E402


def summary(name, values, unit="ms"):
    v = sorted(values)
    p95 = v[min(len(v) - 1, int(round(0.95 * (len(v) - 1))))]
    print("%-34s n=%-3d median %8.2f %s   p95 %8.2f %s   max %8.2f %s"
          % (name, len(v), statistics.median(v), unit, p95, unit, v[-1], unit))


def proc_stats(pid):
    """(RSS kB, of which anonymous kB, CPU ms used so far)."""
    with open("/proc/%d/status" % pid) as f:
        st = {l.split(":")[0]: l.split()[1] for l in f if ":" in l and len(l.split()) > 1}
    rss, anon = int(st["VmRSS"]), int(st["RssAnon"])
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    return rss, anon, ticks * 1000.0 / os.sysconf("SC_CLK_TCK")


class Bench:
    def __init__(self, args):
        self.args = args
        self.tmp = tempfile.mkdtemp(prefix="lk-bench-", dir="/tmp")
        self.servers = []
        self.agents = []
        self.clients = []

    def close(self):
        for c in self.clients:
            c.close()
        for a in self.agents:
            if a.proc and a.proc.poll() is None:
                a.stop()
            a.close_files()
        for s in self.servers:
            s.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def backend(self):
        if self.args.backend == "etcd":
            srv = harness.EtcdServer(self.tmp)
            srv.start()
            self.servers.append(srv)
            return {"name": "main", "type": "etcd", "endpoints": [srv.url], "timeout": "1s"}
        srv = RedisServer(self.tmp)
        srv.start()
        self.servers.append(srv)
        return {"name": "main", "type": "redis", "address": srv.address, "timeout": "500ms"}

    def agent(self, identity, backend, ttl):
        locks = [lock_config("x", ttl=ttl, retry_interval="10s", stepdown_timeout="5s")]
        a = Agent(self.tmp, identity=identity, locks=locks, backends=[backend],
                  log_format="json")
        a.start()
        self.agents.append(a)
        app = AppClient(a.sock_path, client_name="bench", label="app@" + identity)
        self.clients.append(app)
        app.call_ok("CAMPAIGN x")
        return a, app

    def handoff(self, backend):
        ttl = "10s"
        first = self.agent("pod-0", backend, ttl)
        leader = (first[0], first[1], first[1].await_event("LEADER", "x", timeout=30)[0])
        n = 1
        follower = self.agent("pod-%d" % n, backend, ttl)
        gaps, totals = [], []
        for _ in range(self.args.rounds):
            a, app, lead = leader
            fa, fapp = follower
            fapp.await_follower("x", a.identity, timeout=30)
            time.sleep(0.2)  # let the follower's watch/subscription settle
            t0 = time.monotonic()
            a.send_signal(signal.SIGTERM)
            sd = app.await_event("STEPDOWN", "x", timeout=30)[0]
            app.call_ok("ACK x %d" % sd.token)
            rel = app.await_event("RELEASED", "x", timeout=30)[0]
            new = fapp.await_event("LEADER", "x", timeout=30)[0]
            gaps.append((new.t - rel.t) * 1000)
            totals.append((new.t - t0) * 1000)
            if new.token <= lead.token:
                print("TOKEN DID NOT INCREASE: %d -> %d" % (lead.token, new.token))
            a.wait(30)
            leader = (fa, fapp, new)
            n += 1
            follower = self.agent("pod-%d" % n, backend, ttl)
        summary("handoff: RELEASED -> LEADER", gaps)
        summary("handoff: SIGTERM -> LEADER", totals)
        print("%-34s %s (what a follower waits without a release)" % ("lease ttl", ttl))
        return leader

    def acquire_latency(self, leader):
        a, app, _ = leader
        # Alone on the lock now, and watching it so that the release shows up after RESIGN.
        self.agents[-1].stop()
        app.call_ok("WATCH x")
        app.await_event("LEADER", "x", timeout=30)
        lat = []
        for _ in range(self.args.rounds):
            app.call_ok("RESIGN x")
            app.await_follower("x", "-", timeout=30)
            t0 = time.monotonic()
            app.call_ok("CAMPAIGN x")
            ev = app.await_event("LEADER", "x", timeout=30)[0]
            lat.append((ev.t - t0) * 1000)
        summary("acquire: CAMPAIGN -> LEADER", lat)

    def footprint(self, leader, seconds):
        a = leader[0]
        _, _, cpu0 = proc_stats(a.proc.pid)
        time.sleep(seconds)
        rss1, anon1, cpu1 = proc_stats(a.proc.pid)
        print("%-34s %d kB (%d kB its own; the rest is shared library pages)"
              % ("agent RSS holding a lock", rss1, anon1))
        print("%-34s %.1f ms over %ds (%.3f%% of a core)"
              % ("agent CPU holding a lock", cpu1 - cpu0, seconds,
                 (cpu1 - cpu0) / (seconds * 10.0)))

    def run(self):
        print("leasekeeper bench: backend=%s rounds=%d binary=%s"
              % (self.args.backend, self.args.rounds, harness.lk_bin()))
        backend = self.backend()
        leader = self.handoff(backend)
        self.acquire_latency(leader)
        self.footprint(leader, self.args.idle)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--idle", type=int, default=10, help="seconds to measure CPU while leading")
    p.add_argument("--backend", choices=("redis", "etcd"), default="redis")
    args = p.parse_args()
    b = Bench(args)
    try:
        b.run()
    finally:
        b.close()


if __name__ == "__main__":
    main()
