"""I8 self-fencing: every LEADER and RENEWED carries until_mono_ms, the CLOCK_MONOTONIC time
at which the tenure's renew deadline passes, so that an app can stop leader work on its own
while its agent is frozen and says nothing (proto/PROTOCOL.md, docs/cli.md, "run: wrapper mode").

Scenarios, on Redis and on etcd:
- the deadline itself: the banner's mono_ms is this machine's CLOCK_MONOTONIC; LEADER's
  until_mono_ms is renew_deadline after a moment between the CAMPAIGN's sending and LEADER's
  arrival (validity counts from the acquiring request's send time); every renewal sends
  RENEWED, to the campaign client and to watchers, with a strictly later until_mono_ms, at
  most renew_deadline after its arrival and close to it; STATUS shows that deadline;
- `leasekeeper run` with a frozen agent (SIGSTOP): CMD's whole process group is dead once the
  deadline passes, before the other replica's app is told LEADER;
- the C example app (examples/app.c) with a frozen agent: it prints DEADLINE and stops its
  work before the other replica's app is told LEADER, and its work never overlaps that tenure.

Times are compared on one clock: AppClient and the example's stdout reader stamp lines with
time.monotonic(), which is CLOCK_MONOTONIC on Linux, the clock until_mono_ms is given in.
"""

import os
import signal
import time
import unittest

from harness import (DEFAULT_TIMEOUT, EtcdScenario, LKTestCase, RedisScenario, lock_config,
                     scaled, status_locks, wait_until)
from test_examples import C_LINES, AppProcess, c_app_path
from test_run import kill_group, live_group, surviving_group

KEY = "leasekeeper/x"
TTL_MS = 3000
RENEW_DEADLINE_MS = TTL_MS * 2 // 3   # the default: 2/3 of the ttl
FREEZE = 8.0                          # seconds the leader's agent stays SIGSTOPped

# What the C example prints when it stops leader work on its own at the deadline.
C_PATTERNS = dict(C_LINES, deadline=r"\] DEADLINE token=(\d+)")

# CMD for `run`: records its pid, then sleeps with two children in its process group.
CMD = 'echo $$ > "$0.tmp" && mv "$0.tmp" "$0"; sleep 1000 & sleep 1000 & wait'


def mono_ms():
    return time.clock_gettime(time.CLOCK_MONOTONIC) * 1000.0


def read_pid(path):
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (FileNotFoundError, ValueError):
        return None


def until(ev):
    return ev.int("until_mono_ms")


class SelfFencingScenarios:

    # -- helpers

    def start_pair(self):
        """pod-a and pod-b on the same backend, ttl 3s; pod-b retries often, so it takes the
        lock soon after pod-a's lease runs out."""
        a = self.start_agent("pod-a", self.backend,
                             locks=[lock_config("x", ttl="3s", retry_interval="1s")])
        b = self.start_agent("pod-b", self.backend,
                             locks=[lock_config("x", ttl="3s", retry_interval="200ms")])
        return a, b

    def watcher(self, agent):
        w = self.connect(agent, client_name="watch", label="watch@" + agent.identity)
        w.keep_renewed = True
        w.call_ok("WATCH x")
        return w

    def follow_deadline(self, w, duration=0.3, last=None):
        """The latest until_mono_ms a watcher was told (LEADER or RENEWED) within duration
        seconds, starting from `last`."""
        for e in w.events_for(duration):
            if e.kind in ("LEADER", "RENEWED"):
                last = until(e)
        return last

    def freeze(self, agent):
        """SIGSTOP the agent; it is thawed on cleanup whatever happens."""
        self.addCleanup(self._thaw, agent)
        agent.proc.send_signal(signal.SIGSTOP)
        return time.monotonic()

    def _thaw(self, agent):
        if agent.alive():
            agent.proc.send_signal(signal.SIGCONT)

    def follower_app(self, agent, holder):
        app = self.connect(agent, client_name="app-b", label="app@" + agent.identity)
        app.call_ok("CAMPAIGN x")
        app.await_follower("x", holder)
        return app

    # -- scenarios

    def test_until_mono_ms_on_leader_and_renewed(self):
        a = self.start_agent("pod-a", self.backend, locks=[lock_config("x", ttl="3s")])
        app = self.connect(a, client_name="app", label="app@pod-a")
        # The agent reads its clock before it sends the banner, which then arrives here.
        skew = app.banner.int("mono_ms") - app.banner.t * 1000
        print("banner mono_ms - its arrival here: %+.1f ms" % skew)
        self.assertLess(abs(skew), 1000, "banner %r: not this machine's CLOCK_MONOTONIC"
                        % app.banner.raw)
        watch = self.watcher(a)

        app.keep_renewed = True
        t_sent = mono_ms()
        app.call_ok("CAMPAIGN x")
        lead, _ = app.await_event("LEADER", "x", allow=("FOLLOWER",))
        u = until(lead)
        arrived = lead.t * 1000
        # The acquiring request went out after the CAMPAIGN was sent and before LEADER
        # arrived; its deadline counts from its send time, so it is at most renew_deadline
        # after the arrival (and, the agent giving whole milliseconds, not before the
        # CAMPAIGN was sent + renew_deadline - 1 ms).
        print("LEADER: until_mono_ms - renew_deadline (%d ms) is %.1f ms after CAMPAIGN was "
              "sent, %.1f ms before LEADER arrived"
              % (RENEW_DEADLINE_MS, u - RENEW_DEADLINE_MS - t_sent,
                 arrived - (u - RENEW_DEADLINE_MS)))
        self.assertLessEqual(u - arrived, RENEW_DEADLINE_MS,
                             "%r: deadline more than renew_deadline after arrival" % lead.raw)
        self.assertGreaterEqual(u - t_sent, RENEW_DEADLINE_MS - 1,
                                "%r: deadline counted from before the CAMPAIGN" % lead.raw)
        self.assertGreater(u, arrived, "%r arrived after its own deadline" % lead.raw)
        self.assertLessEqual(lead.int("ttl_ms"), TTL_MS)

        # Renewals every ttl/3: each one a RENEWED with a later deadline.
        prev, prev_t = u, arrived
        renewed = []
        t_end = time.monotonic() + scaled(4.5)
        while len(renewed) < 3 or time.monotonic() < t_end:
            ev = app.next_event(timeout=DEFAULT_TIMEOUT)
            self.assertIsNotNone(ev, "no RENEWED within %.0fs of the last one" % DEFAULT_TIMEOUT)
            self.assertEqual(ev.kind, "RENEWED", "while leading undisturbed: %r" % ev.raw)
            self.assertEqual((ev.lock, ev.token), ("x", lead.token), ev.raw)
            self.assertLessEqual(ev.int("ttl_ms"), TTL_MS, ev.raw)
            self.assertGreater(ev.int("ttl_ms"), 0, ev.raw)
            v, t = until(ev), ev.t * 1000
            self.assertGreater(v, prev, "%r: not later than the deadline before" % ev.raw)
            # The renewal that proves it was sent before this line arrived: its deadline is
            # at most renew_deadline after the arrival.
            self.assertLessEqual(v - t, RENEW_DEADLINE_MS,
                                 "%r: deadline more than renew_deadline after arrival" % ev.raw)
            self.assertGreater(v - t, RENEW_DEADLINE_MS - 1000,
                               "%r: deadline far earlier than arrival + renew_deadline" % ev.raw)
            self.assertGreater(v, t, "%r arrived after its own deadline" % ev.raw)
            renewed.append((v - prev, t - prev_t, v - t))
            prev, prev_t = v, t
        print("RENEWED: %d in %.1fs; (deadline step, arrival step, deadline - arrival) ms: %s"
              % (len(renewed), (prev_t - arrived) / 1000,
                 ", ".join("(%d, %.0f, %.0f)" % r for r in renewed)))
        self.assertLess(len(renewed), 12, "RENEWED far more often than every ttl/3")

        # The watcher got the same events.
        got = [e for e in watch.events_for(0.5) if e.kind in ("LEADER", "RENEWED")]
        self.assertIn(u, [until(e) for e in got if e.kind == "LEADER"],
                      "the watcher's LEADER: %r" % [e.raw for e in got])
        w_until = [until(e) for e in got if e.kind == "RENEWED"]
        self.assertIn(prev, w_until, "watchers get RENEWED too: %r" % [e.raw for e in got])
        self.assertEqual(w_until, sorted(set(w_until)), "watcher's deadlines not increasing")

        # STATUS shows a deadline not older than the last RENEWED, and not passed.
        t_ask = mono_ms()
        st = status_locks(app.status())["x"]
        self.assertEqual(str(st["state"]).lower(), "leader", st)
        self.assertIn("until_mono_ms", st, st)
        self.assertGreaterEqual(int(st["until_mono_ms"]), prev, st)
        self.assertGreater(int(st["until_mono_ms"]), t_ask, st)

    def test_run_kills_cmd_when_the_deadline_passes_under_a_frozen_agent(self):
        a, b = self.start_pair()
        pidfile = os.path.join(self.tmp, "cmd.pid")
        run = self.start_cli("run", "-s", a.sock_path, "--lock", "x", "--", "sh", "-c", CMD,
                             pidfile)
        pid = wait_until(lambda: read_pid(pidfile), what="CMD to start")
        self.addCleanup(kill_group, pid)
        wait_until(lambda: len(live_group(pid)) >= 3, what="CMD's group of 3 processes")
        watch = self.watcher(a)
        app_b = self.follower_app(b, "pod-a")
        last = self.follow_deadline(watch)
        self.assertIsNotNone(last, "the watcher was told no deadline")

        t_stop = self.freeze(a)
        # Everything the agent sent before the SIGSTOP has arrived within a moment.
        last = self.follow_deadline(watch, 0.3, last)
        t_dead = wait_until(lambda: not surviving_group(pid) and time.monotonic(),
                            timeout=scaled(15), interval=0.005,
                            what="CMD's process group to be killed (left: %r)"
                            % surviving_group(pid))
        lead_b, _ = app_b.await_event("LEADER", "x", allow=("FOLLOWER",), timeout=scaled(15))
        print("run: CMD's group dead %.0f ms after the deadline (%.2fs after SIGSTOP); "
              "pod-b's LEADER %.0f ms later (margin)"
              % (t_dead * 1000 - last, t_dead - t_stop, (lead_b.t - t_dead) * 1000))
        self.assertLess(t_dead, lead_b.t, "CMD still ran when pod-b's app was told LEADER")
        self.assertGreaterEqual(t_dead * 1000, last - 50,
                                "CMD was killed before its tenure's deadline")
        # (1.5s: a RENEWED may have reached run but not yet the watcher at the SIGSTOP.)
        self.assertLess(t_dead * 1000 - last, 1500, "CMD outlived its deadline by over 1.5s")
        self.assertIsNone(run.proc.poll(), "run exited: %s" % run.stderr())
        self.assertIn("deadline", run.stderr().lower(),
                      "run's stderr does not say why CMD was killed: %r" % run.stderr())

        # Thawed: pod-a's agent catches up (LOST), run does not start CMD again while pod-b
        # leads.
        time.sleep(max(0.0, t_stop + FREEZE - time.monotonic()))
        a.proc.send_signal(signal.SIGCONT)
        t_thaw = time.monotonic()
        lost, skipped = watch.await_event("LOST", "x", allow=("FOLLOWER", "RENEWED"),
                                          timeout=scaled(10))
        for e in skipped:
            if e.kind == "RENEWED":
                self.assertGreater(until(e), e.t * 1000,
                                   "a RENEWED whose deadline had passed: %r" % e.raw)
        print("after SIGCONT: %s %.0f ms later" % (lost.raw, (lost.t - t_thaw) * 1000))
        app_b.assert_no_event(1.0)
        self.assertEqual(self.backend.holder(KEY), "pod-b")
        self.assertIsNone(run.proc.poll(), "run exited: %s" % run.stderr())
        self.assertEqual(read_pid(pidfile), pid, "CMD was started again")

    def test_c_example_stops_at_the_deadline_under_a_frozen_agent(self):
        binary = c_app_path()
        if binary is None:
            self.skipTest("the C example is not built (make build/examples/app)")
        a, b = self.start_pair()
        env = dict(os.environ, LEASEKEEPER_SOCKET=a.sock_path)
        env.pop("LEASEKEEPER_AUTH_KEY_FILE", None)
        app = AppProcess([binary, "-n", "example-a", "x"], env, C_PATTERNS, "C example@pod-a",
                         self.tmp)
        self.addCleanup(app.stop)
        lead = app.wait("leader")
        token = int(lead.group())
        app.wait("work", lead.index)
        watch = self.watcher(a)
        app_b = self.follower_app(b, "pod-a")
        last = self.follow_deadline(watch)

        t_stop = self.freeze(a)
        last = self.follow_deadline(watch, 0.3, last)
        dl = app.wait("deadline", lead.index, timeout=scaled(15))
        lead_b, _ = app_b.await_event("LEADER", "x", allow=("FOLLOWER",), timeout=scaled(15))
        print("C example: DEADLINE %.0f ms after the deadline (%.2fs after SIGSTOP); "
              "pod-b's LEADER %.0f ms later (margin)"
              % (dl.t * 1000 - last, dl.t - t_stop, (lead_b.t - dl.t) * 1000))
        self.assertEqual(int(dl.group()), token, dl.text)
        self.assertEqual(app.find("lost", lead.index, dl.index), [],
                         "a LOST from a frozen agent?\n" + app.describe())
        self.assertLess(dl.t, lead_b.t, "the example still worked when pod-b's app was told "
                        "LEADER\n" + app.describe())
        self.assertGreaterEqual(dl.t * 1000, last - 50, "DEADLINE before the deadline\n"
                                + app.describe())
        self.assertLess(dl.t * 1000 - last, 1500, "DEADLINE over 1.5s late\n" + app.describe())

        time.sleep(max(0.0, t_stop + FREEZE - time.monotonic()))
        a.proc.send_signal(signal.SIGCONT)
        watch.await_event("LOST", "x", allow=("FOLLOWER", "RENEWED"), timeout=scaled(10))
        app.wait("lost", dl.index, timeout=scaled(10))
        # The example's tenure ended at DEADLINE: no work after it, so no overlap with pod-b's.
        work_after = app.find("work", dl.index)
        overlap = max([0.0] + [w.t - lead_b.t for w in app.find("work", lead.index)
                               if w.t >= lead_b.t])
        print("C example: overlap with pod-b's tenure %.0f ms" % (overlap * 1000))
        self.assertEqual(work_after, [], "work after DEADLINE\n" + app.describe())
        self.assertEqual(overlap, 0.0)
        self.assertEqual(app.find("leader", lead.index), [], app.describe())


class SelfFencingRedisTest(SelfFencingScenarios, RedisScenario, LKTestCase):
    pass


class SelfFencingEtcdTest(SelfFencingScenarios, EtcdScenario, LKTestCase):
    pass


if __name__ == "__main__":
    unittest.main(verbosity=2)
