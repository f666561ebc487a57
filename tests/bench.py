#!/usr/bin/env python3
"""make bench: leasekeeper next to its peers, in one run on the same private servers.

Printed and written to bench/results.json (plot: bench/handoff.svg), never asserted:

- graceful handoff: the leader's agent gets SIGTERM, its app ACKs the STEPDOWN as it arrives;
  time until the successor's app hears LEADER, from the SIGTERM and from the old app's RELEASED; Redis and etcd,
  next to `etcdctl elect` (SIGINT the leader; time until the waiting one prints that it won) and
  redis-py's `redis.lock.Lock` (the holder releases; a waiter blocked in acquire() gets it);
- acquire: CAMPAIGN -> LEADER on a free lock;
- crash handoff: kill -9 of the leader's agent right after a renewal (the whole ttl left) ->
  successor's LEADER, against the ttl;
- client-go's leader election defaults, as figures on paper (not measured);
- footprint with 1, 100, 1,000 and 10,000 locks (`campaign: always`), as far as the config's cap
  allows: RSS, RssAnon, idle CPU, renew misses, time to acquire and to drain them all.

Usage: LK_BIN=build/leasekeeper python3 tests/bench.py [--quick] [--rounds N] [--idle S]
       (BENCH_ROUNDS=N in the environment sets --rounds; --quick: 20 rounds, 10 s windows)
"""

import argparse
import datetime
import http.client
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "integration"))

import harness  # noqa: E402
from harness import Agent, AppClient, EtcdServer, RedisServer, free_port, lock_config  # noqa: E402

OUT_DIR = os.path.join(harness.REPO_ROOT, "bench")
HANDOFF_TTL = "10s"
SIZES = (1, 100, 1000, 10000)

# Kubernetes client-go leaderelection defaults (LeaseDuration 15s, RenewDeadline 10s,
# RetryPeriod 2s, JitterFactor 1.2): a candidate retries every 2 to 2 * 2.2 = 4.4 s, and after a
# crash the lease runs up to 15 s before the next retry may take it. Figures, not measured.
CLIENT_GO = {"lease_duration_s": 15, "retry_period_s": 2, "jitter_factor": 1.2,
             "after_crash_s": [15, 19], "after_release_s": [2, 4.4]}


def redis_py():
    """redis-py from Debian's python3-redis, also when python3 is not Debian's own."""
    try:
        import redis
    except ImportError:
        sys.path.append("/usr/lib/python3/dist-packages")
        try:
            import redis
        except ImportError:
            return None
    return redis


def stats(values):
    """n, min, p50, p99, max and mean in ms (nearest-rank percentiles) of values in ms."""
    v = sorted(values)
    if not v:
        return None

    def pct(p):
        return v[max(0, min(len(v) - 1, int(-(-p * len(v) // 100)) - 1))]
    return {"n": len(v), "min": v[0], "p50": pct(50), "p99": pct(99), "max": v[-1],
            "mean": sum(v) / len(v), "samples": [round(x, 4) for x in values]}


def show(name, st):
    print("  %-44s n=%-4d p50 %9.2f ms  p99 %9.2f ms  max %9.2f ms"
          % (name, st["n"], st["p50"], st["p99"], st["max"]), flush=True)


def proc_stats(pid):
    """(RSS kB, its anonymous part kB, CPU ms used so far)."""
    with open("/proc/%d/status" % pid) as f:
        st = {l.split(":")[0]: l.split()[1] for l in f if ":" in l and len(l.split()) > 1}
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    return int(st["VmRSS"]), int(st["RssAnon"]), ticks * 1000.0 / os.sysconf("SC_CLK_TCK")


def metrics(port, timeout=30):
    """/metrics as {name: sum over its series}, plus "held": series of lock_held at 1; held
    -1 when the agent does not answer in time (busy acquiring thousands of locks)."""
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=timeout) as r:
            text = r.read().decode()
    except (OSError, http.client.HTTPException):
        # A busy agent may also cut a long body short (its HTTP timeout): ask again later.
        return {"held": -1}
    out = {"held": 0}
    for ln in text.splitlines():
        if not ln or ln.startswith("#"):
            continue
        name, _, value = ln.rpartition(" ")
        base = name.split("{", 1)[0]
        out[base] = out.get(base, 0.0) + float(value)
        if base == "leasekeeper_lock_held" and float(value) == 1:
            out["held"] += 1
    return out


class FirstLine:
    """A child process whose first stdout line is timestamped on arrival (etcdctl elect)."""

    def __init__(self, args, env=None):
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     stdin=subprocess.DEVNULL, env=env)
        self.t = None
        self.seen = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self):
        for _ in iter(self.proc.stdout.readline, b""):
            if self.t is None:
                self.t = time.monotonic()
                self.seen.set()

    def wait_line(self, timeout):
        if not self.seen.wait(timeout):
            raise AssertionError("no output from %s within %.0fs" % (self.proc.args, timeout))
        return self.t

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._thread.join(5)
        self.proc.stdout.close()


class Bench:
    def __init__(self, args):
        self.args = args
        self.tmp = tempfile.mkdtemp(prefix="lk-bench-", dir="/tmp")
        self.servers, self.agents, self.clients, self.children = [], [], [], []
        self.res = {"handoff": {}, "acquire": {}, "peers": {}, "crash": {}, "footprint": {},
                    "client_go_paper": CLIENT_GO}
        self.n_agents = 0

    def close(self):
        for c in self.clients:
            c.close()
        for a in self.agents:
            if a.proc and a.proc.poll() is None:
                a.proc.kill()
                a.proc.wait()
            a.close_files()
        for c in self.children:
            c.stop()
        for s in self.servers:
            s.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)

    # -- servers, agents, apps

    def start_servers(self):
        self.redis = RedisServer(self.tmp)
        self.redis.start()
        self.etcd = EtcdServer(self.tmp)
        self.etcd.start()
        self.servers += [self.redis, self.etcd]
        self.backends = {
            "redis": {"name": "main", "type": "redis", "address": self.redis.address,
                      "timeout": "500ms"},
            "etcd": {"name": "main", "type": "etcd", "endpoints": [self.etcd.url],
                     "timeout": "1s"},
        }

    def agent(self, kind, locks, **top):
        self.n_agents += 1
        a = Agent(self.tmp, identity="%s-%d" % (kind, self.n_agents), locks=locks,
                  backends=[self.backends[kind]], **top)
        self.agents.append(a)
        return a

    def campaigner(self, kind, ttl, lock="x", **kw):
        """An agent with one lock and an app that campaigns for it: (agent, app)."""
        a = self.agent(kind, [lock_config(lock, ttl=ttl, stepdown_timeout="5s", **kw)])
        a.start()
        app = AppClient(a.sock_path, client_name="bench", label="app@" + a.identity)
        app.auto_ack = True  # the ACK leaves as STEPDOWN arrives: the app costs ~0
        self.clients.append(app)
        app.call_ok("CAMPAIGN " + lock)
        return a, app

    def retire(self, a, app):
        app.close()
        self.clients.remove(app)
        a.close_files()
        self.agents.remove(a)

    # -- graceful handoff and acquire

    def handoff(self, kind, rounds):
        a, app = self.campaigner(kind, HANDOFF_TTL, retry_interval="10s")
        lead = app.await_event("LEADER", "x", timeout=60)[0]
        released, sigterm, bad_tokens = [], [], 0
        for _ in range(rounds):
            fa, fapp = self.campaigner(kind, HANDOFF_TTL, retry_interval="10s")
            fapp.await_follower("x", a.identity, timeout=30)
            time.sleep(0.1)  # let the follower's watch or subscription settle
            t0 = time.monotonic()
            a.send_signal(signal.SIGTERM)
            sd = app.await_event("STEPDOWN", "x", timeout=30)[0]
            rel = app.await_event("RELEASED", "x", timeout=30)[0]
            new = fapp.await_event("LEADER", "x", timeout=30)[0]
            released.append((new.t - rel.t) * 1000)
            sigterm.append((new.t - t0) * 1000)
            bad_tokens += new.token <= lead.token
            a.wait(30)
            self.retire(a, app)
            a, app, lead = fa, fapp, new
        self.res["handoff"][kind] = {"sigterm_to_leader": stats(sigterm),
                                     "released_to_leader": stats(released),
                                     "tokens_not_increasing": bad_tokens}
        show("%s SIGTERM -> successor's LEADER" % kind, stats(sigterm))
        show("%s RELEASED -> successor's LEADER" % kind, stats(released))
        if bad_tokens:
            print("  TOKENS DID NOT INCREASE %d times" % bad_tokens)
        return a, app

    def acquire(self, kind, a, app, rounds):
        app.call_ok("WATCH x")  # so that the release shows up after RESIGN
        app.await_event("LEADER", "x", timeout=30)  # WATCH's snapshot
        lat = []
        for _ in range(rounds):
            app.call_ok("RESIGN x")
            app.await_follower("x", "-", timeout=30)
            t0 = time.monotonic()
            app.call_ok("CAMPAIGN x")
            lat.append((app.await_event("LEADER", "x", timeout=30)[0].t - t0) * 1000)
        self.res["acquire"][kind] = stats(lat)
        show("%s CAMPAIGN -> LEADER (free lock)" % kind, self.res["acquire"][kind])
        a.stop()
        self.retire(a, app)

    # -- peers

    def etcdctl_elect(self, rounds):
        env = dict(os.environ, ETCDCTL_API="3")
        prefix = "bench-elect"

        def candidate(n):
            c = FirstLine([harness.etcdctl_bin(), "--endpoints", self.etcd.url, "elect", prefix,
                           "p%d" % n], env=env)
            self.children.append(c)
            return c

        def candidates():
            r = self.etcd.call("/v3/kv/range", {"key": harness._b64(prefix + "/"),
                                                "range_end": harness._b64(prefix + "0"),
                                                "count_only": True})
            return int(r.get("count", 0))

        lead = candidate(0)
        lead.wait_line(30)
        gaps = []
        for i in range(rounds):
            nxt = candidate(i + 1)
            harness.wait_until(lambda: candidates() == 2, timeout=30, what="2 candidates")
            time.sleep(0.1)
            t0 = time.monotonic()
            lead.proc.send_signal(signal.SIGINT)
            gaps.append((nxt.wait_line(30) - t0) * 1000)
            lead.proc.wait(30)
            lead.stop()
            self.children.remove(lead)
            lead = nxt
        self.res["peers"]["etcdctl_elect"] = stats(gaps)
        self.res["peers"]["etcdctl_elect"]["version"] = subprocess.run(
            [harness.etcdctl_bin(), "version"], env=env, capture_output=True,
            text=True).stdout.split("\n")[0]
        show("etcdctl elect: SIGINT -> successor elected", self.res["peers"]["etcdctl_elect"])

    def redis_py_lock(self, rounds):
        redis = redis_py()
        if redis is None:
            print("  redis-py: not installed (Debian python3-redis): skipped")
            self.res["peers"]["redis_py_lock"] = {"skipped": "python3-redis not installed"}
            return
        host, port = self.redis.address.rsplit(":", 1)
        r = redis.Redis(host=host, port=int(port))
        name = "bench:redis-py"
        holder = r.lock(name, timeout=10, thread_local=False)
        holder.acquire()
        gaps = []
        for _ in range(rounds):
            waiter = r.lock(name, timeout=10, thread_local=False)
            got = {}

            def take(w=waiter, got=got):
                w.acquire(blocking=True, blocking_timeout=30)
                got["t"] = time.monotonic()
            th = threading.Thread(target=take)
            th.start()
            time.sleep(0.15)  # the waiter is now polling
            t0 = time.monotonic()
            holder.release()
            th.join(30)
            gaps.append((got["t"] - t0) * 1000)
            holder = waiter
        holder.release()
        r.close()
        self.res["peers"]["redis_py_lock"] = dict(stats(gaps), version=redis.__version__,
                                                  sleep_s=0.1)
        show("redis-py %s Lock: release -> waiter acquired" % redis.__version__,
             self.res["peers"]["redis_py_lock"])

    # -- crash handoff

    def crash(self, kind, rounds, ttl):
        a, app = self.campaigner(kind, ttl)
        app.await_event("LEADER", "x", timeout=60)
        gaps = []
        for _ in range(rounds):
            fa, fapp = self.campaigner(kind, ttl)
            fapp.await_follower("x", a.identity, timeout=30)
            app.keep_renewed, mark = True, time.monotonic()
            while app.await_event("RENEWED", "x", timeout=30)[0].t < mark:
                pass  # a renewal from before: wait for a fresh one
            t0 = time.monotonic()
            a.proc.kill()
            new = fapp.await_event("LEADER", "x", allow=("FOLLOWER",), timeout=10 * ttl_s(ttl))[0]
            gaps.append((new.t - t0) * 1000)
            a.proc.wait()
            self.retire(a, app)
            a, app = fa, fapp
        a.stop()
        self.retire(a, app)
        cfg = lock_config("x", ttl=ttl)
        self.res["crash"][kind] = dict(stats(gaps), ttl_ms=ttl_s(ttl) * 1000,
                                       retry_interval=cfg.get("retry_interval", "1s (default)"))
        show("%s kill -9 -> successor's LEADER (ttl %s)" % (kind, ttl), self.res["crash"][kind])

    # -- footprint

    def footprint(self, kind, n, window):
        port = free_port()
        locks = [lock_config("l%05d" % i, ttl="10s", campaign="always") for i in range(n)]
        a = self.agent(kind, locks, http_listen="127.0.0.1:%d" % port, shutdown_timeout="60s")
        chk = subprocess.run([harness.lk_bin(), "check-config", "-c", a.config_path],
                             capture_output=True, text=True)
        if chk.returncode != 0:
            self.agents.remove(a)
            err = (chk.stderr or chk.stdout).strip().splitlines()
            why = next((l for l in err if "too many locks" in l), err[0] if err else "rejected")
            cap = re.search(r"at most (\d+)", why)
            return {"skipped": why.split(": ", 1)[-1], "cap": int(cap.group(1)) if cap else None}
        t0 = time.monotonic()
        a.start(timeout=120)
        try:
            harness.wait_until(lambda: metrics(port)["held"] == n, timeout=self.args.acquire_max,
                               interval=0.05, what="%d locks held" % n)
        except AssertionError:
            held = metrics(port)["held"]
            a.stop()
            a.close_files()
            self.agents.remove(a)
            limit = self.args.acquire_max
            return {"skipped": "only %d of %d locks held after %ds" % (held, n, limit)
                    if held >= 0 else "/metrics did not answer after %ds" % limit}
        acquire_s = time.monotonic() - t0
        warnings = {}  # what the agent complained about while acquiring (hold-offs, errors)
        for e in a.log_entries():
            if e.get("level") in ("warn", "error"):
                warnings[e["msg"]] = warnings.get(e["msg"], 0) + 1
        m0, (_, _, cpu0), w0 = metrics(port), proc_stats(a.pid), time.monotonic()
        # Renewals come in bursts (every lock was acquired at once) and memory with them: the
        # window's peak is kept next to the value at its end.
        anon_max = 0
        while time.monotonic() < w0 + window:
            time.sleep(0.2)
            anon_max = max(anon_max, proc_stats(a.pid)[1])
        rss, anon, cpu1 = proc_stats(a.pid)
        anon_max = max(anon_max, anon)
        m1, elapsed = metrics(port), time.monotonic() - w0

        def delta(name):
            return int(m1.get(name, 0) - m0.get(name, 0))
        t1 = time.monotonic()
        a.send_signal(signal.SIGTERM)
        rc = a.wait(120)
        drain_s = time.monotonic() - t1
        a.close_files()
        self.agents.remove(a)
        return {"locks": n, "rss_kb": rss, "rss_anon_kb": anon, "rss_anon_max_kb": anon_max,
                "window_s": round(elapsed, 1),
                "idle_cpu_pct": round((cpu1 - cpu0) / (elapsed * 10.0), 3),
                "renew_misses": delta("leasekeeper_lock_lost_total"),
                "backend_errors": delta("leasekeeper_backend_errors_total"),
                "held_at_end": m1["held"], "acquire_all_s": round(acquire_s, 3),
                "drain_all_s": round(drain_s, 3), "drain_exit": rc, "warnings": warnings}

    def footprints(self, kind, window):
        rows, cap = [], None
        for n in self.args.sizes:
            try:
                r = self.footprint(kind, n, window)
            except Exception as e:  # noqa: BLE001 (one size failing does not end the run)
                r = {"skipped": "failed: %s" % e}
            if "skipped" in r:
                print("  %s %6d locks: skipped: %s" % (kind, n, r["skipped"]))
                cap = cap or r.get("cap")
                rows.append(dict(r, locks=n))
                continue
            rows.append(r)
            self.show_fp(kind, r)
        if cap and not any(r.get("locks") == cap for r in rows):
            r = self.footprint(kind, cap, window)
            if "skipped" not in r:
                r["at_cap"] = True
                rows.append(r)
                self.show_fp(kind, r, " (the cap)")
        base = next((r for r in rows if r.get("locks") == 1 and "rss_kb" in r), None)
        for r in rows:
            if base and "rss_kb" in r and r["locks"] > 1:
                r["anon_per_lock_kib"] = round((r["rss_anon_kb"] - base["rss_anon_kb"])
                                               / (r["locks"] - 1), 2)
                r["anon_max_per_lock_kib"] = round((r["rss_anon_max_kb"] - base["rss_anon_kb"])
                                                   / (r["locks"] - 1), 2)
        self.res["footprint"][kind] = rows

    @staticmethod
    def show_fp(kind, r, note=""):
        print("  %s %6d locks%s: RSS %d kB (own %d kB), idle CPU %.3f%% over %ds, renew misses "
              "%d, backend errors %d, acquire all %.2fs, drain all %.2fs"
              % (kind, r["locks"], note, r["rss_kb"], r["rss_anon_kb"], r["idle_cpu_pct"],
                 r["window_s"], r["renew_misses"], r["backend_errors"], r["acquire_all_s"],
                 r["drain_all_s"]), flush=True)

    # -- the whole run

    def run(self):
        a = self.args
        started = datetime.datetime.now(datetime.timezone.utc)
        self.res["run"] = machine(a, started)
        print("leasekeeper bench %s: %d handoffs, %d crashes, %ds idle windows, binary %s"
              % (started.strftime("%Y-%m-%d %H:%M UTC"), a.rounds, a.crash_rounds, a.idle,
                 harness.lk_bin()), flush=True)
        self.start_servers()
        only, kinds = a.only.split(","), a.kinds.split(",")
        if "handoff" in only:
            print("graceful handoff (ttl %s):" % HANDOFF_TTL)
            for kind in kinds:
                agent, app = self.handoff(kind, a.rounds)
                self.acquire(kind, agent, app, min(a.rounds, 50))
            if "etcd" in kinds:
                self.etcdctl_elect(a.rounds)
            if "redis" in kinds:
                self.redis_py_lock(a.rounds)
        if "crash" in only:
            print("crash handoff:")
            for kind in kinds:
                self.crash(kind, a.crash_rounds, a.crash_ttl)
        if "footprint" in only:
            print("footprint (campaign: always, ttl 10s):")
            for kind in kinds:
                self.footprints(kind, a.idle)
        self.res["run"]["seconds"] = round(time.monotonic() - self.t_start, 1)
        report(self.res)


def ttl_s(ttl):
    return harness.dur_ms(ttl) / 1000.0


def machine(args, started):
    model = ""
    with open("/proc/cpuinfo") as f:
        model = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "")
    commit = subprocess.run(["git", "-C", harness.REPO_ROOT, "describe", "--always", "--dirty"],
                            capture_output=True, text=True).stdout.strip()
    return {"date": started.strftime("%Y-%m-%dT%H:%M:%SZ"), "cpus": os.cpu_count(),
            "cpu_model": model, "kernel": platform.release(), "commit": commit,
            "rounds": args.rounds, "crash_rounds": args.crash_rounds, "crash_ttl": args.crash_ttl,
            "idle_window_s": args.idle, "handoff_ttl": HANDOFF_TTL}


def ratio(a, b):
    return "%.2fx" % (a / b) if b else "-"


def report(res):
    h, p = res["handoff"], res["peers"]
    el, rp = p.get("etcdctl_elect"), p.get("redis_py_lock", {})
    print("\n| graceful handoff | p50 | p99 | max | vs peer p50 |")
    print("| --- | ---: | ---: | ---: | --- |")

    def row(name, st, peer=None, peer_name=""):
        cmp = ""
        if peer and "p50" in peer:
            cmp = "%s of %s" % (ratio(st["p50"], peer["p50"]), peer_name)
        print("| %s | %.2f ms | %.2f ms | %.2f ms | %s |"
              % (name, st["p50"], st["p99"], st["max"], cmp))
    if "etcd" in h:
        row("etcd: SIGTERM -> successor's LEADER", h["etcd"]["sigterm_to_leader"], el,
            "etcdctl elect")
        row("etcd: RELEASED -> LEADER", h["etcd"]["released_to_leader"], el, "etcdctl elect")
        row("`etcdctl elect`: SIGINT -> elected", el)
    if "redis" in h:
        row("Redis: SIGTERM -> successor's LEADER", h["redis"]["sigterm_to_leader"], rp,
            "redis-py Lock")
        row("Redis: RELEASED -> LEADER", h["redis"]["released_to_leader"], rp, "redis-py Lock")
    if "p50" in rp:
        row("redis-py %s `Lock`: release -> acquired" % rp["version"], rp)
    for kind in res["acquire"]:
        row("%s: CAMPAIGN -> LEADER, free lock" % kind, res["acquire"][kind])
    print("\n| crash handoff (kill -9, right after a renewal) | ttl | p50 | max |")
    print("| --- | ---: | ---: | ---: |")
    for kind, c in res["crash"].items():
        print("| %s | %.0f ms | %.0f ms | %.0f ms |" % (kind, c["ttl_ms"], c["p50"], c["max"]))
    g = CLIENT_GO
    print("| client-go defaults (paper: lease %ds, retry %ds x jitter %.1f) | %d s | %d-%d s; "
          "after a release %d-%.1f s | |" % (g["lease_duration_s"], g["retry_period_s"],
                                            g["jitter_factor"], g["lease_duration_s"],
                                            g["after_crash_s"][0], g["after_crash_s"][1],
                                            g["after_release_s"][0], g["after_release_s"][1]))
    print("\n| footprint | locks | RSS | own (RssAnon) | per lock (window's end / peak) "
          "| idle CPU | renew misses | acquire all | drain all |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for kind, rows in res["footprint"].items():
        for r in rows:
            if "skipped" in r:
                print("| %s | %d | skipped: %s | | | | | | |" % (kind, r["locks"], r["skipped"]))
                continue
            print("| %s | %d | %.1f MB | %.2f MB | %s | %.2f %% | %d | %.2f s | %.2f s |"
                  % (kind, r["locks"], r["rss_kb"] / 1024.0, r["rss_anon_kb"] / 1024.0,
                     "%.1f / %.1f KiB" % (r["anon_per_lock_kib"], r["anon_max_per_lock_kib"])
                     if "anon_per_lock_kib" in r else "-",
                     r["idle_cpu_pct"], r["renew_misses"], r["acquire_all_s"], r["drain_all_s"]))
    res["targets"] = targets(res)
    print("\nissue 11 targets:")
    for t in res["targets"]:
        print("  [%s] %s: %s" % ("met" if t["met"] else "NOT met", t["target"], t["measured"]))


def targets(res):
    h, el = res["handoff"], res["peers"].get("etcdctl_elect", {})
    out = []
    if "etcd" in h:
        e = h["etcd"]["sigterm_to_leader"]
        out += [
            ("etcd SIGTERM -> LEADER p50 < 3 ms", "%.2f ms" % e["p50"], e["p50"] < 3),
            ("etcd SIGTERM -> LEADER p50 below etcdctl elect's", "%.2f vs %.2f ms"
             % (e["p50"], el.get("p50", 0)), e["p50"] < el.get("p50", 0)),
            ("etcd SIGTERM -> LEADER p99 < 10 ms", "%.2f ms" % e["p99"], e["p99"] < 10)]
    if "redis" in h:
        r, rr = h["redis"]["sigterm_to_leader"], h["redis"]["released_to_leader"]
        out += [
            ("Redis SIGTERM -> LEADER p50 < 1 ms", "%.2f ms" % r["p50"], r["p50"] < 1),
            ("Redis SIGTERM -> LEADER p99 < 3 ms", "%.2f ms" % r["p99"], r["p99"] < 3),
            ("Redis RELEASED -> LEADER p50 < 0.5 ms", "%.2f ms" % rr["p50"], rr["p50"] < 0.5)]
    for kind, c in res["crash"].items():
        out.append(("%s crash handoff <= ttl + 300 ms" % kind, "max %.0f ms, ttl %.0f ms"
                    % (c["max"], c["ttl_ms"]), c["max"] <= c["ttl_ms"] + 300))
    for kind, rows in res["footprint"].items():
        big = [x for x in rows if x.get("locks") == 10000]
        if not big or "skipped" in big[0]:
            why = big[0]["skipped"] if big else "not run"
            out.append(("%s 10,000 locks: 0 misses, < 2 %% CPU, < 2 KiB/lock (peak)" % kind,
                        "not measured: " + why, False))
            continue
        x = big[0]
        out.append(("%s 10,000 locks: 0 misses, < 2 %% CPU, < 2 KiB/lock (peak), drain < 5 s"
                    % kind,
                    "%d misses, %.2f %%, %.2f KiB, %.2f s" % (
                        x["renew_misses"], x["idle_cpu_pct"], x.get("anon_max_per_lock_kib", 0),
                        x["drain_all_s"]),
                    x["renew_misses"] == 0 and x["idle_cpu_pct"] < 2
                    and x.get("anon_max_per_lock_kib", 99) < 2 and x["drain_all_s"] < 5))
    return [{"target": t, "measured": m, "met": bool(ok)} for t, m, ok in out]


def write_results(res):
    os.makedirs(OUT_DIR, exist_ok=True)
    with open(os.path.join(OUT_DIR, "results.json"), "w") as f:
        json.dump(res, f, indent=1, sort_keys=True)
        f.write("\n")
    print("wrote %s" % os.path.join(OUT_DIR, "results.json"))


def plot(res):
    """bench/handoff.svg: the distribution (CDF) of every graceful handoff series, log x."""
    if not shutil.which("gnuplot"):
        print("gnuplot not installed (Debian gnuplot-nox): no plot")
        return
    h, p = res["handoff"], res["peers"]
    series = [("leasekeeper etcd, SIGTERM -> LEADER", h["etcd"]["sigterm_to_leader"]),
              ("leasekeeper etcd, RELEASED -> LEADER", h["etcd"]["released_to_leader"]),
              ("etcdctl elect, SIGINT -> elected", p.get("etcdctl_elect")),
              ("leasekeeper Redis, SIGTERM -> LEADER", h["redis"]["sigterm_to_leader"]),
              ("leasekeeper Redis, RELEASED -> LEADER", h["redis"]["released_to_leader"]),
              ("redis-py Lock, release -> acquired", p.get("redis_py_lock"))]
    d = tempfile.mkdtemp(prefix="lk-bench-plot-")
    plots = []
    for i, (title, st) in enumerate(series):
        if not st or "samples" not in st:
            continue
        path = os.path.join(d, "%d.dat" % i)
        v = sorted(st["samples"])
        with open(path, "w") as f:
            for k, x in enumerate(v):
                # RELEASED -> LEADER is below 0 when the successor leads before the old app
                # has read its RELEASED: drawn at the left edge
                f.write("%g %g\n" % (max(x, 0.05), (k + 1) / len(v)))
        plots.append("'%s' using 1:2 with steps lw 2 title '%s (p50 %.2f ms)'"
                     % (path, title, st["p50"]))
    run = res["run"]
    script = "\n".join([
        "set terminal svg size 900,560 dynamic font 'sans,12' background rgb 'white'",
        "set output '%s'" % os.path.join(OUT_DIR, "handoff.svg"),
        "set title 'graceful handoff, %d rounds each, %s, %d cores, loopback'"
        % (run["rounds"], run["date"][:10], run["cpus"]),
        "set logscale x", "set grid", "set key below maxrows 3", "set xrange [0.05:*]",
        "set xlabel 'latency (ms, log scale)'", "set ylabel 'fraction of handoffs'",
        "set yrange [0:1.02]", "plot " + ", ".join(plots), ""])
    subprocess.run(["gnuplot"], input=script, text=True, check=True)
    shutil.rmtree(d, ignore_errors=True)
    print("wrote %s" % os.path.join(OUT_DIR, "handoff.svg"))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="a short run: 20 handoffs, 2 crashes, 10 s idle windows")
    p.add_argument("--rounds", type=int, default=int(os.environ.get("BENCH_ROUNDS") or 0),
                   help="graceful handoffs per series (default 200, BENCH_ROUNDS)")
    p.add_argument("--crash-rounds", type=int, default=0, help="crash handoffs (default 5)")
    p.add_argument("--crash-ttl", default="2s", help="the ttl of the crash bench (default 2s)")
    p.add_argument("--idle", type=int, default=0, help="seconds of each idle CPU window "
                   "(default 60)")
    p.add_argument("--sizes", type=lambda v: [int(x) for x in v.split(",")], default=SIZES,
                   help="lock counts of the footprint (default 1,100,1000,10000)")
    p.add_argument("--acquire-max", type=int, default=240,
                   help="seconds a footprint agent may take to hold all its locks")
    p.add_argument("--only", default="handoff,crash,footprint",
                   help="the parts to run, for a look at one (implies --no-write unless all)")
    p.add_argument("--kinds", default="redis,etcd", help="the backends to run (same)")
    p.add_argument("--no-write", action="store_true", help="print only: no results.json, svg")
    p.add_argument("--plot-only", action="store_true",
                   help="redraw bench/handoff.svg from bench/results.json, run nothing")
    args = p.parse_args()
    if set(args.only.split(",")) != {"handoff", "crash", "footprint"} or \
            set(args.kinds.split(",")) != {"redis", "etcd"}:
        args.no_write = True
    if args.plot_only:
        with open(os.path.join(OUT_DIR, "results.json")) as f:
            plot(json.load(f))
        return
    args.rounds = args.rounds or (20 if args.quick else 200)
    args.crash_rounds = args.crash_rounds or (2 if args.quick else 5)
    args.idle = args.idle or (10 if args.quick else 60)
    b = Bench(args)
    b.t_start = time.monotonic()
    try:
        b.run()
    finally:
        b.close()
        if not args.no_write:  # also what a failed run measured so far
            write_results(b.res)
    if not args.no_write:
        plot(b.res)


if __name__ == "__main__":
    main()
