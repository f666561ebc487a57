"""The history checker: reads one chaos run directory and reports what happened.

    python3 tests/chaos/checker.py RUN_DIR [RUN_DIR...]      exit 1 on any violation

A run directory (written by runner.py) holds:
    run.json            seed, backend, ttl, replicas, the schedule
    events.jsonl        the runner's record: process starts/kills and fault start/heal times
    apps/<pod>.jsonl    each replica's app log (app.py), across restarts of the app
    agents/<pod>.log    each replica's agent stderr (JSON lines), across restarts
    store.jsonl         the fenced store's decisions (store.py)
All times are CLOCK_MONOTONIC seconds (one kernel, so one clock for every process), except the
agents' "ts" (wall clock, ms), used only to order the agents' own "lock acquired" lines.

## The rules

Leader intervals (what each app believes). An interval starts when on_started_leading ran
("start") and ends at min(stop.t, deadline): "stop" is logged when on_stopped_leading returned
(leader work stopped), and the deadline is the tenure's until_mono_ms as the Python client
tracked it, moved by each RENEWED that arrived before it ("deadline" lines). The client's rule
(clients/python/leasekeeper/elector.py) is that is_leader() turns False at the deadline, read
from the clock, and run() calls on_stopped_leading("deadline") once it gets to run again: so
an app frozen by SIGSTOP past its deadline stopped believing it leads at the deadline, not when
it was thawed, and its interval ends there. An interval left open (the app was SIGKILLed, or
the run ended) ends at min(deadline, the time the runner's SIGKILL returned or the run ended).

1. overlaps (must be 0): two intervals of different apps that share any time.
2. token regressions (must be 0): intervals ordered by start must have strictly increasing
   tokens; every "lock acquired" line of the agents, ordered by its time stamp, must have a
   token greater than every earlier one's; a token acquired twice (by any agents) counts too.
3. stale writes accepted (must be 0): replaying store.jsonl in order, an accepted write whose
   token is below the highest accepted before it. Also must be 0: an accepted write whose
   token no app ever received in a LEADER line (a token nobody was given).
3b. agents that exited by themselves (must be 0): the runner restarts whatever it finds dead
   after a fault, and records it; an agent that nobody killed or drained crashed or failed.
4. stale writes rejected (reported): writes the fence refused. Every one is a write an old
   leader sent after a newer tenure had written: the fence doing its job (after a SIGSTOP of
   an app mid-write, say).
5. late writes (reported): writes the store received after the writer's own interval had
   ended (the one write PROTOCOL.md says an app frozen between its check and its send can
   make). Accepted ones are harmless as long as 3. holds: no newer token had written yet.
6. leaderless after heal: for each fault, the time from its heal until some interval covers
   that moment (0 if one already does; until the end of the run if none does); p50 and max
   per fault kind. Stretches of more than 5 ttl without any leader are listed as LIVENESS
   lines (reported, not failures). Intervals that started after run_end (during teardown)
   are left out of 6 and 7.
7. handoff gaps: for consecutive intervals (by start), next.start - previous.end; p50, p99 and
   max. A gap, an overlap, a regression or a stale write is attributed to the fault in
   progress at its time (from the fault's start to its heal + 2 ttl), else to "(none)".
"""

import bisect
import calendar
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from store import read_log  # noqa: E402

MUST_BE_ZERO = ("overlaps", "token_regressions", "stale_accepted", "unknown_token_accepted",
                "agent_exits")


def read_jsonl(path):
    return read_log(path)


def parse_ts(ts):
    """Agent log "2026-12-07T00:13:50.123Z" -> epoch seconds."""
    try:
        base, frac = ts.rstrip("Z").split(".")
        return calendar.timegm(time.strptime(base, "%Y-%m-%dT%H:%M:%S")) + int(frac) / 1000.0
    except (ValueError, AttributeError):
        return None


def pct(values, p):
    if not values:
        return None
    v = sorted(values)
    k = (len(v) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


class Interval:
    __slots__ = ("app", "token", "start", "end", "reason", "pid")

    def __init__(self, app, token, start, end, reason, pid):
        self.app, self.token, self.start, self.end = app, token, start, end
        self.reason, self.pid = reason, pid

    def __repr__(self):
        return "%s token=%s [%.3f, %.3f] (%s)" % (self.app, self.token, self.start, self.end,
                                                 self.reason)

    def as_dict(self):
        return {"app": self.app, "token": self.token, "start": round(self.start, 4),
                "end": round(self.end, 4), "reason": self.reason, "pid": self.pid}


def app_intervals(app, records, kills, run_end):
    """Intervals from one app log. kills: {pid: monotonic time the SIGKILL returned}."""
    out = []
    pid = None
    cur = None  # [token, start, deadline]

    def close_open(reason):
        nonlocal cur
        if cur is None:
            return
        end = cur[2]
        k = kills.get(pid)
        if k is not None and k >= cur[1]:
            end = min(end, k)
        else:
            end = min(end, run_end)
        out.append(Interval(app, cur[0], cur[1], end, reason, pid))
        cur = None

    for r in records:
        ev = r.get("ev")
        if ev == "proc":
            close_open("killed" if pid in kills else "process ended")
            pid = r.get("pid")
        elif ev == "start":
            close_open("restarted")
            cur = [r["token"], r["t"], r.get("deadline") or r["t"]]
        elif ev == "deadline" and cur is not None and r.get("token") == cur[0]:
            cur[2] = r["deadline"]
        elif ev == "stop" and cur is not None:
            dl = r.get("deadline") or cur[2]
            out.append(Interval(app, cur[0], cur[1], min(r["t"], dl), r.get("reason"), pid))
            cur = None
    close_open("killed" if pid in kills else "open at the end")
    return out


class Faults:
    """Fault windows from events.jsonl: (kind, start, heal, settle_end)."""

    def __init__(self, events, ttl):
        self.list = []
        starts = {}
        for e in events:
            if e.get("ev") == "fault_start":
                starts[e["id"]] = e
            elif e.get("ev") == "fault_heal" and e["id"] in starts:
                s = starts.pop(e["id"])
                self.list.append({"id": e["id"], "kind": s["kind"], "start": s["t"],
                                  "heal": e["t"], "settle": e["t"] + 2 * ttl,
                                  "target": s.get("target")})
        for s in starts.values():  # started, never healed (the run stopped)
            self.list.append({"id": s["id"], "kind": s["kind"], "start": s["t"], "heal": None,
                              "settle": float("inf"), "target": s.get("target")})
        self.list.sort(key=lambda f: f["start"])

    def at(self, t):
        best = None
        for f in self.list:
            if f["start"] <= t <= f["settle"]:
                best = f  # the latest one that started
        return best["kind"] if best else "(none)"

    def during(self, t):
        """Every fault whose window holds t, as text (for the problem lines)."""
        fs = ["%s %s" % (f["kind"], f.get("target") or "") for f in self.list
              if f["start"] <= t <= f["settle"]]
        return "during: " + (", ".join(fs) if fs else "no fault")

    def kinds(self):
        seen = []
        for f in self.list:
            if f["kind"] not in seen:
                seen.append(f["kind"])
        return seen


def check(run_dir):
    with open(os.path.join(run_dir, "run.json")) as f:
        meta = json.load(f)
    ttl = meta.get("ttl", 2.0)
    events = read_jsonl(os.path.join(run_dir, "events.jsonl"))
    run_end = max([e["t"] for e in events] or [0.0])
    for e in events:
        if e.get("ev") == "run_end":
            run_end = e["t"]
    kills = {}
    for e in events:
        if e.get("ev") == "killed" and e.get("who", "").startswith("app"):
            kills[e["pid"]] = e["t"]
    faults = Faults(events, ttl)
    exits = [e for e in events if e.get("ev") == "unexpected_exit"]

    intervals, leader_tokens = [], {}
    apps_dir = os.path.join(run_dir, "apps")
    for fn in sorted(os.listdir(apps_dir)):
        app = fn.rsplit(".", 1)[0]
        recs = read_jsonl(os.path.join(apps_dir, fn))
        intervals += app_intervals(app, recs, kills, run_end)
        for r in recs:
            if r.get("ev") == "line" and r.get("raw", "").startswith("LEADER "):
                for w in r["raw"].split()[2:]:
                    if w.startswith("token="):
                        leader_tokens.setdefault(int(w[6:]), set()).add(app)
    intervals.sort(key=lambda i: (i.start, i.end))

    problems = []  # (kind_of_problem, fault kind, detail)

    # 1. overlaps
    overlaps = []
    for i, a in enumerate(intervals):
        for b in intervals[i + 1:]:
            if b.start >= a.end:
                break  # sorted by start: no later interval can overlap a
            if a.app != b.app and b.start < a.end and a.start < b.end:
                ov = min(a.end, b.end) - max(a.start, b.start)
                if ov > 0:
                    overlaps.append((a, b, ov))
                    problems.append(("overlaps", faults.at(b.start),
                                     "OVERLAP %.3fs: %r and %r (%s)"
                                     % (ov, a, b, faults.during(b.start))))

    # 2. tokens: intervals by start, agents' acquisitions by time stamp, duplicates
    regressions = 0
    hi = None
    for iv in intervals:
        if hi is not None and iv.token <= hi[0]:
            regressions += 1
            problems.append(("token_regressions", faults.at(iv.start),
                             "TOKEN not increasing: %r started after %s's token %d"
                             % (iv, hi[1], hi[0])))
        if hi is None or iv.token > hi[0]:
            hi = (iv.token, iv.app)
    acquired = []
    agents_dir = os.path.join(run_dir, "agents")
    for fn in sorted(os.listdir(agents_dir)) if os.path.isdir(agents_dir) else []:
        with open(os.path.join(agents_dir, fn), errors="replace") as f:
            for line in f:
                if '"lock acquired"' not in line:
                    continue
                try:
                    e = json.loads(line)
                except ValueError:
                    continue
                ts = parse_ts(e.get("ts"))
                if ts is not None and "token" in e:
                    acquired.append((ts, int(e["token"]), fn.rsplit(".", 1)[0]))
    acquired.sort()
    seen = {}
    best = None
    for ts, tok, who in acquired:
        if tok in seen:
            regressions += 1
            problems.append(("token_regressions", "(agent log)",
                             "TOKEN %d acquired twice: by %s and by %s" % (tok, seen[tok], who)))
            continue
        seen[tok] = who
        if best is not None and tok <= best[0] and ts > best[1]:
            regressions += 1
            problems.append(("token_regressions", "(agent log)",
                             "TOKEN %d acquired by %s at %s after token %d by %s"
                             % (tok, who, ts, best[0], best[2])))
        if best is None or tok > best[0]:
            best = (tok, ts, who)

    # 3-5. the store
    store = read_jsonl(os.path.join(run_dir, "store.jsonl"))
    highest = 0
    stale_acc = unknown_acc = 0
    rejected = {}
    by_writer = {}
    for iv in intervals:
        by_writer.setdefault((iv.app, iv.token), []).append(iv)
    late_acc = late_rej = 0
    for w in store:
        tok = w["token"]
        fk = faults.at(w["t"])
        if w["ok"]:
            if tok < highest:
                stale_acc += 1
                problems.append(("stale_accepted", fk, "STALE write accepted: %r (highest %d)"
                                 % (w, highest)))
            if tok not in leader_tokens:
                unknown_acc += 1
                problems.append(("unknown_token_accepted", fk,
                                 "write accepted with a token no LEADER carried: %r" % (w,)))
            highest = max(highest, tok)
        else:
            rejected[fk] = rejected.get(fk, 0) + 1
        ivs = by_writer.get((w["writer"], tok), [])
        if ivs and all(w["t"] > iv.end for iv in ivs):
            if w["ok"]:
                late_acc += 1
            else:
                late_rej += 1

    # 6. leaderless time after each heal (6, 7 and liveness look only at intervals that
    # started before run_end: the teardown kills apps, and a tenure may start meanwhile)
    live = [iv for iv in intervals if iv.start <= run_end]
    starts = [iv.start for iv in live]
    after_heal = {}
    for f in faults.list:
        h = f["heal"]
        if h is None:
            continue
        covered = any(iv.start <= h < iv.end for iv in live)
        if covered:
            gap = 0.0
        else:
            k = bisect.bisect_left(starts, h)
            if k >= len(live):
                gap = run_end - h  # no leader again before the end of the run (at least)
            else:
                gap = live[k].start - h
        after_heal.setdefault(f["kind"], []).append(gap)

    # 7. handoff gaps
    gaps = {}
    reach = None  # (end, interval) of the furthest-reaching interval so far
    for iv in live:
        if reach is not None and iv.start > reach[0]:
            gaps.setdefault(faults.at(reach[0]), []).append(iv.start - reach[0])
        if reach is None or iv.end > reach[0]:
            reach = (iv.end, iv)

    # liveness (reported, not a failure): stretches without any leader longer than 5 ttl
    stuck = []
    if live:
        reach = live[0].end
        for iv in live[1:] + [None]:
            nxt = iv.start if iv is not None else run_end
            if nxt - reach > 5 * ttl:
                stuck.append((reach, nxt - reach, faults.during(reach), iv is None))
            if iv is not None:
                reach = max(reach, iv.end)

    counts = {}
    for f in faults.list:
        counts[f["kind"]] = counts.get(f["kind"], 0) + 1
    rows = {}
    kinds = faults.kinds() + ["(none)", "(agent log)"]
    for k in kinds:
        rows[k] = {"injected": counts.get(k, 0), "overlaps": 0, "token_regressions": 0,
                   "stale_accepted": 0, "unknown_token_accepted": 0,
                   "stale_rejected": rejected.get(k, 0),
                   "leaderless_after_heal": after_heal.get(k, []), "handoff_gaps": gaps.get(k, [])}
    for what, fk, _ in problems:
        row = rows.setdefault(fk, {"injected": 0, "overlaps": 0, "token_regressions": 0,
                                   "stale_accepted": 0, "unknown_token_accepted": 0,
                                   "stale_rejected": 0, "leaderless_after_heal": [],
                                   "handoff_gaps": []})
        if what in row:
            row[what] += 1
    all_gaps = [g for v in gaps.values() for g in v]
    totals = {"overlaps": len(overlaps), "token_regressions": regressions,
              "stale_accepted": stale_acc, "unknown_token_accepted": unknown_acc,
              "stale_rejected": sum(rejected.values()), "late_accepted": late_acc,
              "late_rejected": late_rej, "intervals": len(intervals),
              "writes": len(store), "accepted": sum(1 for w in store if w["ok"]),
              "tokens_acquired": len(acquired), "faults": len(faults.list),
              "handoff_gaps": all_gaps, "fault_errors": meta.get("fault_errors", 0),
              "agent_exits": sum(1 for e in exits if e["who"].startswith("agent")),
              "app_exits": sum(1 for e in exits if e["who"].startswith("app"))}
    for e in exits:
        problems.append(("agent_exits" if e["who"].startswith("agent") else "app_exits",
                         faults.at(e["t"]), "%s EXITED by itself with status %s (%s)"
                         % (e["who"], e.get("rc"), faults.during(e["t"]))))
    t0 = min([e["t"] for e in events] or [0.0])
    return {"run_dir": run_dir, "meta": meta, "rows": rows, "totals": totals, "t0": t0,
            "stuck": stuck,
            "problems": [p[2] for p in problems], "intervals": intervals}


def fmt_s(v):
    return "-" if v is None else "%.2f" % v


def render(res):
    m = res["meta"]
    t = res["totals"]
    out = []
    out.append("== backend %s  seed %s  ttl %.1fs  %s  run %.0fs  dir %s" % (
        m.get("backend"), m.get("seed"), m.get("ttl", 0), m.get("net", ""),
        m.get("elapsed", 0), res["run_dir"]))
    hdr = ("%-22s %4s %5s %5s %5s %5s %6s  %-13s  %-20s" %
           ("fault", "n", "ovl", "tok", "stAcc", "unkT", "stRej", "leaderless p50/max",
            "handoff p50/p99/max"))
    out.append(hdr)
    out.append("-" * len(hdr))
    for k, r in res["rows"].items():
        if not (r["injected"] or r["handoff_gaps"] or r["stale_rejected"] or r["overlaps"]
                or r["token_regressions"] or r["stale_accepted"] or r["unknown_token_accepted"]):
            continue
        lh, hg = r["leaderless_after_heal"], r["handoff_gaps"]
        out.append("%-22s %4d %5d %5d %5d %5d %6d  %-18s  %-20s" % (
            k, r["injected"], r["overlaps"], r["token_regressions"], r["stale_accepted"],
            r["unknown_token_accepted"], r["stale_rejected"],
            "%s/%s" % (fmt_s(pct(lh, 50)), fmt_s(max(lh) if lh else None)),
            "%s/%s/%s" % (fmt_s(pct(hg, 50)), fmt_s(pct(hg, 99)),
                          fmt_s(max(hg) if hg else None))))
    g = t["handoff_gaps"]
    out.append("-" * len(hdr))
    out.append("total: %d faults, %d intervals, %d tokens acquired, %d writes (%d accepted, "
               "%d rejected by the fence; late writes: %d accepted, %d rejected); handoff gaps "
               "p50/p99/max %s/%s/%s s" % (
                   t["faults"], t["intervals"], t["tokens_acquired"], t["writes"], t["accepted"],
                   t["stale_rejected"], t["late_accepted"], t["late_rejected"],
                   fmt_s(pct(g, 50)), fmt_s(pct(g, 99)), fmt_s(max(g) if g else None)))
    bad = [k for k in MUST_BE_ZERO if t[k]]
    out.append("must be 0: overlaps=%d token_regressions=%d stale_accepted=%d "
               "unknown_token_accepted=%d agent_exits=%d -> %s%s" % (
                   t["overlaps"], t["token_regressions"], t["stale_accepted"],
                   t["unknown_token_accepted"], t["agent_exits"], "VIOLATION" if bad else "ok",
                   "  (apps that exited by themselves: %d)" % t["app_exits"]
                   if t["app_exits"] else ""))
    for start, length, fk, to_end in res["stuck"]:
        out.append("  LIVENESS: no app led for %.1fs from +%.1fs%s (%s)"
                   % (length, start - res["t0"], " to the end of the run" if to_end else "",
                      fk))
    if m.get("skipped"):
        out.append("  %d scheduled fault(s) not injected: the smoke time budget ran out"
                   % m["skipped"])
    if t.get("fault_errors"):
        out.append("  %d fault(s) could not be injected (see the run's output)"
                   % t["fault_errors"])
    for p in res["problems"][:50]:
        out.append("  " + p)
    if len(res["problems"]) > 50:
        out.append("  ... %d more" % (len(res["problems"]) - 50))
    return "\n".join(out)


def violated(res):
    return any(res["totals"][k] for k in MUST_BE_ZERO)


def main(argv):
    if not argv:
        print(__doc__)
        return 2
    bad = False
    for d in argv:
        res = check(d)
        print(render(res))
        print()
        bad = bad or violated(res)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
