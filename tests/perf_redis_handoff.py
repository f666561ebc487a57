#!/usr/bin/env python3
"""Graceful handoff latency on Redis, measured on its own (issue 11 item 3).

A private redis-server, a leader agent and a follower agent, each with one app campaigning on
lock x. Each round SIGTERMs the leader's agent, its app ACKs the STEPDOWN as it arrives, and the round
records RELEASED (the old leader's app) -> LEADER (the follower's app) and SIGTERM -> LEADER;
a fresh agent then joins as the next follower. Printed as p50/p90/p99/max; nothing asserted.

Usage: LK_BIN=build/leasekeeper python3 tests/perf_redis_handoff.py [--rounds N]
       [--locks N] [--json FILE]

--locks N gives every agent N-1 more locks (campaign: always) on the same backend: the drain
hands them over together with x, and their renewals run alongside (ttl --ttl).

--strace FILTER attaches strace to redis-server and every agent (--keep keeps the logs); the
rounds' times (monotonic and wall) are in --json, to line the traces up with the app's view.
"""

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "integration"))

import harness  # noqa: E402
from harness import Agent, AppClient, RedisServer, lock_config  # noqa: E402


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(round(p / 100.0 * (len(v) - 1))))]


def summary(name, values):
    print("%-28s n=%-4d p50 %6.3f ms  p90 %6.3f ms  p99 %6.3f ms  max %7.3f ms"
          % (name, len(values), statistics.median(values), pct(values, 90), pct(values, 99),
             max(values)))
    return {"n": len(values), "p50": statistics.median(values), "p90": pct(values, 90),
            "p99": pct(values, 99), "max": max(values)}


class Run:
    def __init__(self, args):
        self.args = args
        self.tmp = tempfile.mkdtemp(prefix="lk-perf-", dir="/tmp")
        self.redis = None
        self.agents = []
        self.clients = []
        self.marks = []

    def close(self):
        for c in self.clients:
            c.close()
        for a in self.agents:
            if a.proc and a.proc.poll() is None:
                a.stop()
            a.close_files()
        if self.redis:
            self.redis.stop()
        if self.args.keep:
            print("kept", self.tmp)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def agent(self, n):
        locks = [lock_config("x", ttl=self.args.ttl, retry_interval="10s",
                             stepdown_timeout="5s")]
        for i in range(1, self.args.locks):
            locks.append(lock_config("l%d" % i, ttl=self.args.ttl, campaign="always"))
        backend = {"name": "main", "type": "redis", "address": self.redis.address,
                   "timeout": "500ms"}
        a = Agent(self.tmp, identity="pod-%d" % n, locks=locks, backends=[backend],
                  log_format="json")
        a.start()
        self.agents.append(a)
        if self.args.strace:
            # Attached, not wrapped: signals must reach the agent itself.
            a.strace = subprocess.Popen(
                ["strace", "-f", "-T", "-ttt", "-e", self.args.strace, "-p", str(a.proc.pid),
                 "-o", os.path.join(self.tmp, "strace-pod-%d.log" % n)],
                stderr=subprocess.DEVNULL)
            time.sleep(0.3)
        app = AppClient(a.sock_path, client_name="perf", label="app@pod-%d" % n)
        app.auto_ack = True  # the ACK leaves as STEPDOWN arrives: the app costs ~0
        self.clients.append(app)
        app.call_ok("CAMPAIGN x")
        return a, app

    def retire(self, a, app):
        a.wait(30)
        app.close()
        a.close_files()
        self.clients.remove(app)
        self.agents.remove(a)


    def run(self):
        self.redis = RedisServer(self.tmp)
        self.redis.start()
        if self.args.strace:
            self.redis_strace = subprocess.Popen(
                ["strace", "-f", "-T", "-ttt", "-e", self.args.strace, "-p",
                 str(self.redis.proc.pid), "-o", os.path.join(self.tmp, "strace-redis.log")],
                stderr=subprocess.DEVNULL)
        a, app = self.agent(0)
        lead = app.await_event("LEADER", "x", timeout=30)[0]
        fa, fapp = self.agent(1)
        gaps, totals, acks = [], [], []
        for n in range(2, self.args.rounds + 2):
            fapp.await_follower("x", a.identity, timeout=30)
            time.sleep(self.args.settle)
            t0, w0 = time.monotonic(), time.time()
            a.send_signal(signal.SIGTERM)
            sd = app.await_event("STEPDOWN", "x", timeout=30)[0]
            rel = app.await_event("RELEASED", "x", timeout=30)[0]
            new = fapp.await_event("LEADER", "x", timeout=30)[0]
            gaps.append((new.t - rel.t) * 1000)
            totals.append((new.t - t0) * 1000)
            acks.append((sd.t - t0) * 1000)
            self.marks.append({"round": n - 1, "leader": a.identity, "follower": fa.identity,
                               "sigterm": w0, "stepdown": sd.wall, "released": rel.wall,
                               "leader_line": new.wall, "mono": [t0, sd.t, rel.t, new.t]})
            if new.token <= lead.token:
                print("TOKEN DID NOT INCREASE: %d -> %d" % (lead.token, new.token))
            self.retire(a, app)
            a, app, lead = fa, fapp, new
            fa, fapp = self.agent(n)
        print("redis handoff, %d rounds, %d lock(s) per agent, binary %s"
              % (self.args.rounds, self.args.locks, harness.lk_bin()))
        out = {"released_to_leader": summary("RELEASED -> LEADER", gaps),
               "sigterm_to_leader": summary("SIGTERM -> LEADER", totals),
               "sigterm_to_stepdown": summary("SIGTERM -> STEPDOWN", acks)}
        out["rounds"] = self.marks
        if self.args.json:
            with open(self.args.json, "w") as f:
                json.dump(out, f, indent=1)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=100)
    p.add_argument("--locks", type=int, default=1)
    p.add_argument("--ttl", default="10s")
    p.add_argument("--settle", type=float, default=0.05,
                   help="seconds between the follower's FOLLOWER line and the SIGTERM")
    p.add_argument("--json", default=None)
    p.add_argument("--strace", default=None, metavar="FILTER",
                   help="attach strace -f -T -ttt -e FILTER to every agent (tmp/strace-*.log)")
    p.add_argument("--keep", action="store_true", help="keep the agents' directories")
    args = p.parse_args()
    # The apps' reader threads timestamp each line: keep the GIL from delaying them.
    sys.setswitchinterval(0.0002)
    r = Run(args)
    try:
        r.run()
    finally:
        r.close()


if __name__ == "__main__":
    main()
