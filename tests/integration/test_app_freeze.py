"""A frozen *app* (not its agent): the lock must not stay held for nobody.

The chaos suite's app_sigstop fault found it (tests/chaos/README.md): an app frozen with
SIGSTOP past its tenure's deadline (until_mono_ms) ends the tenure on its own when it wakes
(the deadline rule, proto/PROTOCOL.md), but its agent was never frozen: it kept renewing the
lease, and said nothing, since for the agent nothing had happened. No replica led until that
agent lost the lock for some other reason (18 s to 70 s in the chaos runs). The fix is in the
clients: a tenure that ended at its deadline without a LOST or STEPDOWN from the agent is
handed back with RESIGN, then CAMPAIGN again (the client stays a candidate).

Two agents, pod-a and pod-b, on Redis and on etcd (ttl 3 s, renew_deadline 2 s). pod-a's app
leads; it is frozen for FREEZE seconds (longer than the renew deadline, and than the ttl), then
thawed. Checked, for the Python library (LeaderElector, the app of test_client_python) and
for `leasekeeper run` (run and CMD's process group frozen together, as a frozen container
would be):

- some replica leads again within LEAD_AGAIN seconds of SIGCONT (before the fix: not at all
  until pod-a's agent lost the lock for another reason); the time without a leader is printed;
- no overlap: the new tenure starts after the frozen app stopped (its stop callback ran, or
  CMD's group is dead);
- the woken app does not resume the old tenure: any tenure after it has a greater token.
"""

import os
import signal
import time
import unittest

from harness import (DEFAULT_TIMEOUT, EtcdScenario, LKTestCase, RedisScenario, lock_config,
                     scaled, wait_until)
from test_client_python import APP, PyApp
from test_run import kill_group, live_group, sigkill_pending

KEY = "leasekeeper/x"
TTL = 3.0
RENEW_DEADLINE = TTL * 2 / 3      # the agent's default
FREEZE = 6.0                      # > renew_deadline and > ttl: the agent renews meanwhile
LEAD_AGAIN = 5.0                  # bound on the time from SIGCONT to a new leader

# CMD for `run`: writes "<token> <pid>", then sleeps with two children in its process group.
CMD = ('echo "$LEASEKEEPER_TOKEN $$" > "$0.tmp" && mv "$0.tmp" "$0"; '
       'sleep 1000 & sleep 1000 & wait')


def read_cmd(path):
    """(token, pid) that CMD wrote, or None."""
    try:
        with open(path) as f:
            token, pid = f.read().split()
        return int(token), int(pid)
    except (FileNotFoundError, ValueError):
        return None


class AppFreezeScenarios:

    def start_pair(self):
        # pod-b retries often, so that it takes the lock soon after pod-a's agent let it go.
        a = self.start_agent("pod-a", self.backend,
                             locks=[lock_config("x", ttl="3s", retry_interval="1s")])
        b = self.start_agent("pod-b", self.backend,
                             locks=[lock_config("x", ttl="3s", retry_interval="200ms")])
        return a, b

    def start_app(self, agent):
        script = os.path.join(self.tmp, "py_app.py")
        if not os.path.exists(script):
            with open(script, "w") as f:
                f.write(APP)
        app = PyApp(script, "x", agent, self.tmp)
        self.addCleanup(self._teardown_app, app)
        return app

    def _teardown_app(self, app):
        if app.proc.poll() is None:
            app.proc.send_signal(signal.SIGCONT)
        app.stop()
        if self._failed():
            import sys
            sys.stderr.write("\n" + app.describe() + "\n")

    def first_started(self, apps, after, timeout):
        """The first STARTED line of any of apps (after the given line indexes), as
        (app, line); waits up to timeout seconds."""
        def found():
            got = [(ln.t, i, ln) for i, app in enumerate(apps)
                   for ln in app.find("STARTED", after[i])]
            return min(got, key=lambda g: g[0]) if got else None
        t, i, ln = wait_until(found, timeout=timeout, interval=0.02,
                              what="a replica to lead again\n" +
                              "\n".join(app.describe() for app in apps))
        return apps[i], ln

    # -- scenarios

    def test_python_app_frozen_past_its_deadline_hands_the_lock_back(self):
        a, b = self.start_pair()
        app_a = self.start_app(a)
        start_a = app_a.wait("STARTED", timeout=DEFAULT_TIMEOUT * 2)
        token_a = int(start_a["token"])
        app_b = self.start_app(b)
        app_b.wait("NEW_LEADER", pred=lambda ln: ln["holder"] == "pod-a")
        self.assertEqual(app_b.find("STARTED"), [])
        app_a.wait("MSG", start_a.index, pred=lambda ln: ln.rest.startswith("RENEWED x "))
        mark_b = len(app_b.lines) - 1

        t_freeze = time.monotonic()
        app_a.proc.send_signal(signal.SIGSTOP)
        time.sleep(FREEZE)
        # pod-a's agent was never frozen: it still holds the lock for the frozen app.
        self.assertTrue(a.alive() and b.alive())
        self.assertHeld(self.backend, KEY, "pod-a", token_a,
                        "pod-a's agent keeps renewing for its frozen app")
        self.assertEqual(app_b.find("STARTED"), [])
        t_cont = time.monotonic()
        app_a.proc.send_signal(signal.SIGCONT)

        stop_a = app_a.wait("STOPPED", start_a.index, timeout=DEFAULT_TIMEOUT)
        self.assertEqual(stop_a["reason"], "deadline", app_a.describe())
        deadline_a = float(stop_a["deadline"])
        self.assertLess(deadline_a, t_cont, "the deadline passed during the freeze")
        app, start = self.first_started([app_a, app_b], [stop_a.index, mark_b],
                                        scaled(LEAD_AGAIN) + 5)
        token = int(start["token"])
        who = "pod-a" if app is app_a else "pod-b"
        print("\n[%s] python app frozen %.1fs: it stopped %.3fs after SIGCONT; %s's app led "
              "%.3fs after SIGCONT, %.3fs after the old tenure's deadline (no leader for "
              "that long); token %d -> %d"
              % (self.backend_kind, FREEZE, stop_a.t - t_cont, who, start.t - t_cont,
                 start.t - deadline_a, token_a, token))
        self.assertLess(start.t - t_cont, scaled(LEAD_AGAIN),
                        "no replica led within %.0fs of SIGCONT" % scaled(LEAD_AGAIN))
        self.assertGreater(token, token_a, "I5: a new tenure, not the old one resumed")
        self.assertGreaterEqual(start.t, stop_a.t, "I1: the new tenure began before the "
                                "frozen app stopped")
        # The woken app handed the lock back: RESIGN answered, then CAMPAIGN again.
        app_a.wait("MSG", stop_a.index, pred=lambda ln: ln.rest == "OK RESIGN x")
        app_a.wait("MSG", stop_a.index, pred=lambda ln: ln.rest == "OK CAMPAIGN x")
        # Never the old tenure again, whatever came late (RENEWED of token_a).
        for ln in app_a.find("STARTED", stop_a.index):
            self.assertGreater(int(ln["token"]), token_a, ln.raw)
        self.assertHeld(self.backend, KEY, who, token)
        if app is app_b:
            self.assertEqual(app_a.find("STARTED", stop_a.index), [])
            app_a.wait("NEW_LEADER", stop_a.index, pred=lambda ln: ln["holder"] == "pod-b",
                       timeout=DEFAULT_TIMEOUT)
        self.assertLess(t_cont - t_freeze, FREEZE + 2)

    def test_run_frozen_past_its_deadline_hands_the_lock_back(self):
        a, b = self.start_pair()
        cmdfile = os.path.join(self.tmp, "cmd")
        run = self.start_cli("run", "-s", a.sock_path, "--lock", "x", "--", "sh", "-c", CMD,
                             cmdfile)
        token_a, pid = wait_until(lambda: read_cmd(cmdfile), what="CMD to start")
        self.addCleanup(kill_group, pid)
        group = wait_until(lambda: len(live_group(pid)) >= 3 and live_group(pid),
                           what="CMD's group of 3 processes")
        app_b = self.start_app(b)
        app_b.wait("NEW_LEADER", pred=lambda ln: ln["holder"] == "pod-a")
        # Let a renewal or two happen, so that the deadline is well after the start.
        time.sleep(1.2)

        # The container freezes: run and CMD's process group.
        t_freeze = time.monotonic()
        run.proc.send_signal(signal.SIGSTOP)
        os.killpg(pid, signal.SIGSTOP)
        self.addCleanup(self._thaw_run, run, pid)
        time.sleep(FREEZE)
        self.assertTrue(a.alive() and b.alive())
        self.assertHeld(self.backend, KEY, "pod-a", token_a,
                        "pod-a's agent keeps renewing for its frozen run")
        self.assertEqual(app_b.find("STARTED"), [])
        t_cont = time.monotonic()
        run.proc.send_signal(signal.SIGCONT)
        os.killpg(pid, signal.SIGCONT)

        # The last moment the old CMD's group was seen running (a check that finds a member
        # alive and not SIGKILLed proves it ran when the check began), and when it was seen
        # dead: the new tenure must begin after the former.
        last_alive, t_end = None, time.monotonic() + DEFAULT_TIMEOUT
        while True:
            t0 = time.monotonic()
            alive = live_group(pid)
            left = [p for p in group if p in alive and not sigkill_pending(p)]
            if not left:
                t_dead = time.monotonic()
                break
            last_alive = t0
            self.assertLess(t0, t_end, "the old CMD's group still runs: %r" % left)
            time.sleep(0.002)

        def new_leader():
            started = app_b.find("STARTED")
            if started:
                return "pod-b", started[0].t, int(started[0]["token"])
            got = read_cmd(cmdfile)
            if got and got[0] != token_a:
                return "pod-a", time.monotonic(), got[0]
            return None
        who, t_lead, token = wait_until(new_leader, timeout=scaled(LEAD_AGAIN) + 5,
                                        interval=0.01,
                                        what="a replica to lead again\n" + app_b.describe()
                                        + "\n----- run stderr -----\n" + run.stderr())
        print("\n[%s] run + CMD frozen %.1fs: the old CMD's group dead %.3fs after SIGCONT; "
              "%s led %.3fs after SIGCONT, about %.3fs after the old tenure's deadline "
              "(no leader for that long); token %d -> %d"
              % (self.backend_kind, FREEZE, t_dead - t_cont, who, t_lead - t_cont,
                 t_lead - (t_freeze + RENEW_DEADLINE), token_a, token))
        self.assertLess(t_lead - t_cont, scaled(LEAD_AGAIN),
                        "no replica led within %.0fs of SIGCONT\n%s" % (scaled(LEAD_AGAIN),
                                                                         run.stderr()))
        self.assertGreater(token, token_a, "I5: a new tenure, not the old one resumed")
        if last_alive is not None:
            self.assertGreater(t_lead, last_alive, "I1: the new tenure began while the old "
                               "CMD still ran")
        self.assertIn("RESIGN", run.stderr())
        self.assertHeld(self.backend, KEY, who, token)

    def _thaw_run(self, run, pgid):
        if run.proc.poll() is None:
            run.proc.send_signal(signal.SIGCONT)
        try:
            os.killpg(pgid, signal.SIGCONT)
        except (ProcessLookupError, PermissionError):
            pass


class AppFreezeRedisTest(AppFreezeScenarios, RedisScenario, LKTestCase):
    pass


class AppFreezeEtcdTest(AppFreezeScenarios, EtcdScenario, LKTestCase):
    pass


if __name__ == "__main__":
    unittest.main(verbosity=2)
