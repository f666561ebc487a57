"""Wrapper mode: `leasekeeper run [-s SOCK] --lock NAME -- CMD [ARG...]` (SPEC section 5,
docs/cli.md, "run: wrapper mode"), with real child processes against a real agent and a real redis.

CMD is a small sh script (CMD_SCRIPT) that records, as files in the test's temp dir, when it
started (pid, LEASEKEEPER_TOKEN, LEASEKEEPER_LOCK, its arguments) and which signals it saw, with
wall-clock times (`date +%s.%N`) that can be compared with Redis's MONITOR timestamps. The
process tree is checked in /proc: CMD's process group must be empty after a stop, and `run` must
never keep a zombie child for long (a ZombieWatch thread samples /proc during every scenario).

Readings this module relies on (where the README and proto/PROTOCOL.md leave room):
1. CMD's process group is CMD's pid (run makes it a group leader), and "stop CMD" means the
   whole group: nothing of that group may survive a LOST, a STEPDOWN or CMD's own exit, since
   the lock is handed over right after.
2. `run` exits 0 on STOP, 1 when the agent goes away, CMD's status when CMD exits (also after a
   forwarded SIGTERM/SIGINT), 128+N for a signal N that killed CMD, 2 when it could not start
   campaigning (bad usage, unknown lock, no agent). After a forwarded signal, a LOST that
   kills CMD ends run too (128+9), since run no longer starts CMD.
3. "Nothing survives" is checked as: no member of the group is alive without SIGKILL pending.
   A process SIGKILLed a moment ago may not have been scheduled to finish dying yet on a loaded
   machine, but it never runs its own code again. Zombies are dead: orphaned grandchildren go
   to the namespace's init, which need not reap them (it does not in every test VM).
"""

import os
import re
import signal
import threading
import time
import unittest
import urllib.request

from harness import (DEFAULT_TIMEOUT, LKTestCase, free_port, lock_config, scaled,
                     wait_until)

KEY = "leasekeeper/x"

# The CMD used everywhere. Environment (set by the tests):
#   D            directory for the records
#   ON_TERM      exit   : on SIGTERM/SIGINT record it, sleep TERM_DELAY, record exit, exit
#                         TERM_STATUS (INT_STATUS for SIGINT)
#                ignore : on SIGTERM record it and go on working (only SIGKILL stops it)
#   GO_FILE      when this file appears, record exit and exit with EXIT_STATUS
# Records (each written to a temp name and renamed, so a reader never sees half a file):
#   start.<pid>  "<pid> <token> <lock> <pgid> <walltime>" (token/lock "unset" when missing)
#   args.<pid>   the arguments, one per line
#   term.<pid> / int.<pid> / exit.<pid>   the wall time of that moment
CMD_SCRIPT = r'''
rec() { date +%s.%N > "$D/$1.$$.tmp" && mv "$D/$1.$$.tmp" "$D/$1.$$"; }
on_sig() {
    rec "$1"
    if [ "$ON_TERM" = exit ]; then
        sleep "${TERM_DELAY:-0}"
        rec exit
        if [ "$1" = int ]; then exit "${INT_STATUS:-0}"; fi
        exit "${TERM_STATUS:-0}"
    fi
}
trap 'on_sig term' TERM
trap 'on_sig int' INT
printf '%s\n' "$@" > "$D/args.$$.tmp" && mv "$D/args.$$.tmp" "$D/args.$$"
pgid=$(cut -d' ' -f5 /proc/$$/stat)
printf '%s %s %s %s %s\n' "$$" "${LEASEKEEPER_TOKEN-unset}" "${LEASEKEEPER_LOCK-unset}" \
    "${pgid:-?}" "$(date +%s.%N)" > "$D/start.$$.tmp" && mv "$D/start.$$.tmp" "$D/start.$$"
while :; do
    if [ -n "$GO_FILE" ] && [ -e "$GO_FILE" ]; then
        rec exit
        exit "${EXIT_STATUS:-0}"
    fi
    sleep 0.05
done
'''


# ---------------------------------------------------------------------------------------------
# /proc


def proc_stat(pid):
    """(state, ppid, pgrp) of pid from /proc/<pid>/stat, or None if there is no such process
    (gone and reaped)."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            data = f.read().decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError):
        return None
    except OSError:
        return None
    rp = data.rfind(")")
    fields = data[rp + 2:].split()
    try:
        return fields[0], int(fields[1]), int(fields[2])
    except (IndexError, ValueError):
        return None


def all_procs():
    """{pid: (state, ppid, pgrp)} of every process now."""
    out = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = proc_stat(int(name))
            if st is not None:
                out[int(name)] = st
    return out


def is_live(pid):
    """pid exists and is not a zombie (a zombie has exited; it only waits to be reaped)."""
    st = proc_stat(pid)
    return st is not None and st[0] not in ("Z", "X", "x")


def live_group(pgid):
    """The pids of live (non-zombie) processes in process group pgid."""
    return sorted(p for p, (state, _, pg) in all_procs().items()
                  if pg == pgid and state not in ("Z", "X", "x"))


def sigkill_pending(pid):
    """Whether pid has SIGKILL pending: it is doomed and never runs its own code again, even
    if, on a loaded machine, it has not been scheduled to finish dying yet."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(("SigPnd:", "ShdPnd:")):
                    if int(line.split()[1], 16) & (1 << (signal.SIGKILL - 1)):
                        return True
    except OSError:
        return True  # gone
    return False


def surviving_group(pgid):
    """The members of process group pgid that are alive and not already SIGKILLed."""
    return [p for p in live_group(pgid) if not sigkill_pending(p)]


def children_of(pid, live=True):
    return sorted(p for p, (state, ppid, _) in all_procs().items()
                  if ppid == pid and (not live or state not in ("Z", "X", "x")))


def zombie_children(pid):
    return sorted(p for p, (state, ppid, _) in all_procs().items()
                  if ppid == pid and state == "Z")


def kill_group(pgid):
    """SIGKILL process group pgid, never our own (a CMD that shares it would take the test
    process down with it)."""
    if not pgid or pgid <= 1 or pgid == os.getpgrp():
        return
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


class ZombieWatch:
    """Samples /proc in a thread: a zombie child of `pid` that stays unreaped for longer than
    `grace` seconds is a violation (a child that just exited is a zombie for a moment before
    run's SIGCHLD handling reaps it)."""

    def __init__(self, pid, grace=1.0, interval=0.05):
        self.pid, self.grace, self.interval = pid, grace, interval
        self.first_seen = {}
        self.violations = []
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="zombie-watch", daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def sample(self):
        now = time.monotonic()
        zs = set(zombie_children(self.pid))
        for z in list(self.first_seen):
            if z not in zs:
                del self.first_seen[z]
        for z in zs:
            t0 = self.first_seen.setdefault(z, now)
            if now - t0 > self.grace and z not in [v[0] for v in self.violations]:
                self.violations.append((z, now - t0))
        self.samples += 1

    def stop(self):
        self._stop.set()
        self._thread.join(timeout=5)


def metric(text, name, **labels):
    """The value of one series in a Prometheus text exposition, or None."""
    want = ",".join('%s="%s"' % kv for kv in sorted(labels.items()))
    for line in text.splitlines():
        m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$', line)
        if not m or m.group(1) != name:
            continue
        got = ",".join(sorted(m.group(2).split(","))) if m.group(2) else ""
        if got == want:
            return float(m.group(3))
    return None


# ---------------------------------------------------------------------------------------------
# The test base


class Start:
    """One start of CMD, from its start.<pid> record."""

    def __init__(self, line):
        f = line.split()
        self.pid = int(f[0])
        self.token_text = f[1]
        self.lock = f[2]
        self.pgid = int(f[3]) if f[3].isdigit() else None
        self.wall = float(f[4])

    @property
    def token(self):
        return int(self.token_text)

    def __repr__(self):
        return "Start(pid=%d token=%s lock=%s pgid=%s)" % (self.pid, self.token_text,
                                                          self.lock, self.pgid)


class RunTestBase(LKTestCase):
    """Helpers: a records dir with CMD_SCRIPT, start_run() (the CLI process plus a ZombieWatch
    on it), reading CMD's records, and waiting on processes."""

    def setUp(self):
        super().setUp()
        self.d = os.path.join(self.tmp, "cmd")
        os.mkdir(self.d)
        self.script = os.path.join(self.tmp, "cmd.sh")
        with open(self.script, "w") as f:
            f.write(CMD_SCRIPT)
        self.watches = []
        # Registered first, so it runs last: whatever a failed test left of CMD's groups dies.
        self.addCleanup(self._kill_leftover_groups)

    def _kill_leftover_groups(self):
        for s in self.starts():
            if s.pgid == s.pid:
                kill_group(s.pid)
            else:  # not a group of its own (a run that does not make one): CMD alone
                try:
                    os.kill(s.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass

    # -- run

    def cmd_env(self, **kw):
        env = {"D": self.d}
        env.update({k: str(v) for k, v in kw.items()})
        return env

    def start_run(self, agent, cmd=None, lock="x", env=None, extra=()):
        """`leasekeeper run -s SOCK --lock LOCK -- CMD`; CMD defaults to CMD_SCRIPT."""
        if cmd is None:
            cmd = ["sh", self.script]
        args = ["run"]
        if agent is not None:
            args += ["-s", agent.sock_path if hasattr(agent, "sock_path") else agent]
        args += list(extra) + ["--lock", lock, "--"] + list(cmd)
        p = self.start_cli(*args, env=self.cmd_env(**(env or {})))
        w = ZombieWatch(p.proc.pid)
        self.watches.append(w)
        self.addCleanup(w.stop)
        return p

    def assert_no_zombies(self, run):
        """No zombie child of run now (if it still runs), and none was left unreaped for more
        than the watch's grace at any sample so far."""
        for w in self.watches:
            if w.pid == run.proc.pid:
                if run.proc.poll() is None:
                    w.sample()
                self.assertEqual(w.violations, [],
                                 "zombie children of run (pid, seconds unreaped): %r"
                                 % w.violations)
                self.assertGreater(w.samples, 0)

    def wait_run_exit(self, run, timeout=DEFAULT_TIMEOUT):
        rc = run.wait(timeout)
        self.assert_no_zombies(run)
        return rc

    # -- CMD's records

    def starts(self):
        out = []
        for name in os.listdir(self.d):
            if name.startswith("start.") and not name.endswith(".tmp"):
                with open(os.path.join(self.d, name)) as f:
                    out.append(Start(f.read()))
        return sorted(out, key=lambda s: s.wall)

    def wait_start(self, n=1, timeout=DEFAULT_TIMEOUT):
        """Wait for the n-th start of CMD; returns it."""
        ss = wait_until(lambda: len(self.starts()) >= n and self.starts(), timeout=timeout,
                        what="CMD to be started (start #%d)" % n)
        return ss[n - 1]

    def record(self, what, pid):
        """The wall time in <what>.<pid>, or None."""
        try:
            with open(os.path.join(self.d, "%s.%d" % (what, pid))) as f:
                return float(f.read().strip())
        except FileNotFoundError:
            return None

    def wait_record(self, what, pid, timeout=DEFAULT_TIMEOUT):
        wait_until(lambda: self.record(what, pid) is not None, timeout=timeout,
                   what="CMD (pid %d) to record %s" % (pid, what))
        return self.record(what, pid)

    def args_of(self, pid):
        with open(os.path.join(self.d, "args.%d" % pid)) as f:
            return f.read().splitlines()

    # -- processes

    def wait_reaped(self, pid, timeout=DEFAULT_TIMEOUT, what=None):
        """Wait until pid has no /proc entry (exited and reaped by its parent); returns the
        monotonic time it was seen gone."""
        wait_until(lambda: proc_stat(pid) is None, timeout=timeout, interval=0.01,
                   what=what or "process %d to be gone and reaped" % pid)
        return time.monotonic()

    def wait_group_empty(self, pgid, timeout=DEFAULT_TIMEOUT, what=None):
        wait_until(lambda: not live_group(pgid), timeout=timeout, interval=0.01,
                   what=what or "process group %d to be empty (left: %r)"
                   % (pgid, live_group(pgid)))
        return time.monotonic()

    def redis_key(self, redis):
        return redis.get(KEY)

    def watcher(self, agent, lock="x"):
        w = self.connect(agent, client_name="watch", label="watch@" + agent.identity)
        w.call_ok("WATCH %s" % lock)
        return w


# ---------------------------------------------------------------------------------------------
# Scenarios


class RunLeadershipTest(RunTestBase):
    def setUp(self):
        super().setUp()
        self.redis = self.start_redis()

    def test_cmd_starts_only_while_leader_with_token_and_lock_in_its_environment(self):
        locks = [lock_config("x", ttl="10s", retry_interval="10s", stepdown_timeout="5s")]
        a = self.start_agent("pod-a", self.redis, locks=locks)
        port = free_port()
        b = self.start_agent("pod-b", self.redis, locks=locks,
                             http_listen="127.0.0.1:%d" % port)
        app_a, lead_a = self.leader_app(a)
        # CMD's own options come after "--" and stay CMD's, even ones that look like run's.
        run = self.start_run(None, cmd=["sh", self.script, "-s", "--lock", "y", "a b"],
                             env={"LEASEKEEPER_SOCKET": b.sock_path})

        def campaigners():
            with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5) as r:
                return metric(r.read().decode(), "leasekeeper_clients", kind="campaign")
        wait_until(lambda: campaigners() == 1, what="run to campaign at pod-b")
        self.wait_release_subscriber(self.redis, KEY)
        # pod-a leads: however long we wait, pod-b's run does not start CMD.
        time.sleep(1.0)
        self.assertEqual(self.starts(), [], "CMD started while another replica leads")
        self.assertIsNone(run.proc.poll(), run.stderr())
        self.assertEqual(children_of(run.proc.pid), [], "run has children while a follower")
        self.assertEqual(self.redis.get(KEY), "pod-a:%d" % lead_a.token)

        # pod-a's app leaves: the lock is released and handed over; now CMD starts.
        app_a.close()
        s = self.wait_start()
        self.assertEqual(s.lock, "x", "LEASEKEEPER_LOCK")
        self.assertRegex(s.token_text, r"^[0-9]+$", "LEASEKEEPER_TOKEN")
        self.assertGreater(s.token, lead_a.token)
        self.assertEqual(self.redis_token(self.redis, KEY, "pod-b"), s.token,
                         "LEASEKEEPER_TOKEN is not the token in Redis")
        self.assertEqual(self.args_of(s.pid), ["-s", "--lock", "y", "a b"])
        self.assertEqual(s.pgid, s.pid, "CMD does not lead its own process group")
        self.assertEqual(children_of(run.proc.pid), [s.pid])
        self.assertEqual(len(self.starts()), 1)
        self.assert_no_zombies(run)

    def test_stepdown_sigterms_cmd_waits_for_its_exit_then_acks(self):
        mon = self.monitor(self.redis)
        a = self.start_agent("pod-a", self.redis,
                             locks=[lock_config("x", ttl="10s", stepdown_timeout="8s")])
        # CMD exits with 4 after its SIGTERM: run must still exit 0, on STOP, after the drain
        # (CMD's status is run's only when CMD ends by itself or after a forwarded signal).
        run = self.start_run(a, env={"ON_TERM": "exit", "TERM_DELAY": "1.2", "TERM_STATUS": "4"})
        s = self.wait_start()
        self.assertEqual(self.redis.get(KEY), "pod-a:%s" % s.token_text)
        mark = mon.mark()

        a.send_signal(signal.SIGTERM)              # drain: STEPDOWN to run
        self.wait_record("term", s.pid)
        t_term = time.monotonic()
        # CMD is shutting down (it takes 1.2s): the lock must stay held all that time.
        # Read the key first, then CMD's state: a key gone while CMD still runs is a violation.
        checked_half_way = False
        while True:
            key = self.redis.get(KEY)
            st = proc_stat(s.pid)
            cmd_running = st is not None and st[0] != "Z"
            if not cmd_running:
                break
            self.assertEqual(key, "pod-a:%s" % s.token_text,
                             "the lock was released while CMD was still shutting down")
            if not checked_half_way and time.monotonic() - t_term >= 0.5:
                checked_half_way = True
                self.assertIsNotNone(self.record("term", s.pid))
                self.assertIsNone(self.record("exit", s.pid), "CMD exited before its delay")
                self.assertIsNone(run.proc.poll(), "run exited while CMD was shutting down")
            if time.monotonic() - t_term > scaled(10):
                self.fail("CMD did not exit after its SIGTERM")
            time.sleep(0.02)
        self.assertTrue(checked_half_way, "CMD exited sooner than its 1.2s delay")
        t_exit = self.wait_record("exit", s.pid)

        self.assertEqual(a.wait(20), 0, a.tail())
        summ = a.drain_summary()
        self.assertEqual((summ.get("exit_reason"), summ.get("released"), summ.get("expired")),
                         ("drained", 1, 0), summ)
        self.assertIsNone(self.redis.get(KEY))
        self.assertEqual(self.wait_run_exit(run), 0, run.stderr())
        # The release came after CMD exited: Redis's DEL is later than CMD's last record.
        mon.sync(self.redis)
        dels = mon.dels(KEY, since=mark)
        self.assertEqual(len(dels), 1, mon.dump(mark))
        self.assertGreater(dels[0].ts, t_exit, "the key was deleted before CMD exited")
        self.assertIsNone(self.record("int", s.pid))
        self.assertEqual(len(self.starts()), 1)
        err = run.stderr()
        self.assertLess(err.index("exited with status 4"), err.index("stepped down"), err)

    def test_stepdown_kills_a_cmd_that_ignores_sigterm_near_the_deadline_then_acks(self):
        a = self.start_agent("pod-a", self.redis,
                             locks=[lock_config("x", ttl="10s", stepdown_timeout="2s")])
        run = self.start_run(a, env={"ON_TERM": "ignore"})
        s = self.wait_start()
        watch = self.watcher(a)
        a.send_signal(signal.SIGTERM)
        ev, _ = watch.await_event("STEPDOWN", "x", allow=("FOLLOWER", "LEADER"))
        self.assertEqual(ev.int("deadline_ms"), 2000)
        self.wait_record("term", s.pid)              # it got SIGTERM, and went on
        t_gone = self.wait_reaped(s.pid, timeout=scaled(10))
        waited = t_gone - ev.t
        self.assertGreater(waited, 1.4, "CMD was killed long before the stepdown deadline")
        # (Whether the kill and the ACK beat the agent's deadline shows in the outcome below.)
        self.assertLess(waited, 2.5, "CMD was not killed at the stepdown deadline")
        self.assertIsNone(self.record("exit", s.pid))
        self.assertEqual(a.wait(20), 0, a.tail())
        summ = a.drain_summary()
        self.assertEqual((summ.get("exit_reason"), summ.get("released"), summ.get("expired")),
                         ("drained", 1, 0),
                         "the kill must come before the deadline, with an ACK: %r" % summ)
        self.assertIsNone(self.redis.get(KEY))
        self.assertEqual(self.wait_run_exit(run), 0, run.stderr())

    def test_lost_kills_cmd_at_once_and_restarts_it_with_the_next_token(self):
        a = self.start_agent("pod-a", self.redis,
                             locks=[lock_config("x", ttl="6s", renew_interval="200ms",
                                                retry_interval="300ms", stepdown_timeout="5s")])
        run = self.start_run(a, env={"ON_TERM": "exit", "TERM_DELAY": "0"})
        s1 = self.wait_start()
        watch = self.watcher(a)
        self.assertEqual(self.redis.call("DEL", KEY), 1)
        lost, _ = watch.await_event("LOST", "x", allow=("FOLLOWER", "LEADER"))
        self.assertEqual(lost.token, s1.token)
        # SIGKILL at once: gone (and reaped) within a second, and its TERM trap never ran.
        wait_until(lambda: proc_stat(s1.pid) is None, timeout=1.0, interval=0.01,
                   what="CMD to be killed and reaped within 1s of LOST")
        self.assertLess(time.monotonic() - lost.t, 1.0)
        self.assertIsNone(self.record("term", s1.pid), "CMD got SIGTERM on LOST, not SIGKILL")
        self.assertIsNone(self.record("exit", s1.pid))
        # run keeps campaigning: the next LEADER starts CMD again, with the new token.
        lead, _ = watch.await_event("LEADER", "x", allow=("FOLLOWER",))
        s2 = self.wait_start(2)
        self.assertNotEqual(s2.pid, s1.pid)
        self.assertGreater(s2.token, s1.token)
        self.assertEqual(s2.token, lead.token)
        self.assertEqual(self.redis_token(self.redis, KEY, "pod-a"), s2.token)
        self.assertIsNone(run.proc.poll())
        self.assertEqual(children_of(run.proc.pid), [s2.pid])
        self.assert_no_zombies(run)
        # And a drain still ends cleanly.
        a.send_signal(signal.SIGTERM)
        self.assertEqual(a.wait(20), 0, a.tail())
        self.assertEqual(a.drain_summary().get("released"), 1)
        self.assertEqual(self.wait_run_exit(run), 0, run.stderr())
        self.assertIsNotNone(self.record("term", s2.pid))

    def test_cmd_exit_status_is_runs_and_the_lock_is_handed_over_at_once(self):
        locks = [lock_config("x", ttl="10s", retry_interval="10s", stepdown_timeout="5s")]
        a = self.start_agent("pod-a", self.redis, locks=locks)
        go = os.path.join(self.tmp, "go")
        run = self.start_run(a, env={"GO_FILE": go, "EXIT_STATUS": "3"})
        s = self.wait_start()
        b = self.start_agent("pod-b", self.redis, locks=locks)
        app_b = self.connect(b, label="app@pod-b")
        app_b.call_ok("CAMPAIGN x")
        app_b.await_follower("x", "pod-a")
        self.wait_release_subscriber(self.redis, KEY)
        with open(go, "w"):
            pass
        self.assertEqual(self.wait_run_exit(run), 3, run.stderr())
        t_exit = time.monotonic()
        self.assertIsNone(proc_stat(s.pid), "run exited without reaping CMD")
        # run's disconnect counts as a stepdown: released now, not left to the 10s TTL.
        lead = app_b.expect("LEADER", "x", timeout=5)
        self.assertLess(lead.t - t_exit, 3.0, "the lock was not handed over promptly")
        self.assertGreater(lead.token, s.token)
        self.assertEqual(self.redis.get(KEY), "pod-b:%d" % lead.token)
        self.assertTrue(a.alive())

    def _sigterm_or_sigint_to_run_is_forwarded(self, sig, name, status):
        a = self.start_agent("pod-a", self.redis,
                             locks=[lock_config("x", ttl="10s", stepdown_timeout="5s")])
        run = self.start_run(a, env={"ON_TERM": "exit", "TERM_DELAY": "0.6",
                                     "TERM_STATUS": "7", "INT_STATUS": "5"})
        s = self.wait_start()
        run.proc.send_signal(sig)
        # If it never comes, say what run saw (whether it got the signal and forwarded it).
        try:
            self.wait_record(name, s.pid)
        except AssertionError as e:
            raise AssertionError("%s\nrun's stderr:\n%s" % (e, run.stderr())) from None
        # CMD is in its 0.6s shutdown: run waits for it.
        self.assertIsNone(run.proc.poll(), "run exited before CMD did")
        self.assertTrue(is_live(s.pid))
        self.assertEqual(self.redis.get(KEY), "pod-a:%s" % s.token_text,
                         "the lock was let go while CMD was still shutting down")
        self.assertEqual(self.wait_run_exit(run), status, run.stderr())
        self.assertIsNotNone(self.record("exit", s.pid))
        self.assertIsNone(proc_stat(s.pid), "run exited without reaping CMD")
        # run's campaign ended with it: the lock is released at once (TTL is 10s).
        self.wait_key_gone(self.redis, KEY, timeout=3)
        self.assertTrue(a.alive())

    def test_sigterm_to_run_is_forwarded_and_run_exits_with_cmds_status(self):
        self._sigterm_or_sigint_to_run_is_forwarded(signal.SIGTERM, "term", 7)

    def test_sigint_to_run_is_forwarded_and_run_exits_with_cmds_status(self):
        self._sigterm_or_sigint_to_run_is_forwarded(signal.SIGINT, "int", 5)

    def test_forwarded_sigint_reaches_cmd_when_run_was_started_with_it_ignored(self):
        """A background job of a shell starts with SIGINT ignored, and a shell CMD could not
        even trap it: run gives CMD the default dispositions of what it forwards."""
        old = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            self._sigterm_or_sigint_to_run_is_forwarded(signal.SIGINT, "int", 5)
        finally:
            signal.signal(signal.SIGINT, old)

    def test_lost_while_a_forwarded_sigterm_is_pending_still_ends_run(self):
        """run got SIGTERM (forwarded; CMD takes its time), then the lock is LOST: CMD is
        killed, and run, which was asked to end, ends (it neither hangs nor restarts CMD)."""
        a = self.start_agent("pod-a", self.redis,
                             locks=[lock_config("x", ttl="6s", renew_interval="200ms",
                                                retry_interval="300ms", stepdown_timeout="5s")])
        run = self.start_run(a, env={"ON_TERM": "exit", "TERM_DELAY": "30"})
        s = self.wait_start()
        watch = self.watcher(a)
        run.proc.send_signal(signal.SIGTERM)
        self.wait_record("term", s.pid)
        self.assertEqual(self.redis.call("DEL", KEY), 1)
        watch.await_event("LOST", "x", allow=("FOLLOWER", "LEADER"))
        self.wait_reaped(s.pid, timeout=2.0)
        rc = self.wait_run_exit(run, timeout=5)
        self.assertEqual(rc, 128 + signal.SIGKILL, run.stderr())
        self.assertEqual(len(self.starts()), 1, "CMD was started again after run's SIGTERM")
        self.assertIsNone(self.record("exit", s.pid))

    def test_agent_death_kills_cmd_at_once_and_run_exits_nonzero(self):
        a = self.start_agent("pod-a", self.redis,
                             locks=[lock_config("x", ttl="10s", stepdown_timeout="5s")])
        run = self.start_run(a, env={"ON_TERM": "exit", "TERM_DELAY": "0"})
        s = self.wait_start()
        a.proc.kill()
        a.wait(10)
        t_kill = time.monotonic()
        wait_until(lambda: proc_stat(s.pid) is None, timeout=1.0, interval=0.01,
                   what="CMD to be killed and reaped within 1s of the agent's death")
        self.assertLess(time.monotonic() - t_kill, 1.0)
        self.assertIsNone(self.record("term", s.pid), "CMD got SIGTERM, not SIGKILL")
        rc = self.wait_run_exit(run, timeout=5)
        self.assertNotEqual(rc, 0, run.stderr())
        self.assertNotIn(rc, (2,), "2 means 'could not ask'; the agent went away later")
        self.assertEqual(surviving_group(s.pid), [])


class RunProcessGroupTest(RunTestBase):
    """CMD's children and grandchildren: nothing of CMD's process group outlives a stop."""

    GRANDCHILDREN = ["sh", "-c", "sleep 1000 & sleep 1000 & wait"]

    def setUp(self):
        super().setUp()
        self.redis = self.start_redis()
        self.agent = self.start_agent(
            "pod-a", self.redis, locks=[lock_config("x", ttl="6s", renew_interval="200ms",
                                                    retry_interval="300ms",
                                                    stepdown_timeout="3s")])

    def cmd_group(self, run, exclude=(), members=3):
        """CMD (the one child of run, other than `exclude`) once its group has `members` live
        processes; returns (pid, group pids)."""
        def found():
            kids = [k for k in children_of(run.proc.pid) if k not in exclude]
            if len(kids) != 1:
                return None
            g = live_group(kids[0])
            return (kids[0], g) if len(g) >= members else None
        pid, group = wait_until(found, what="CMD and its %d-process group" % members)
        self.addCleanup(kill_group, pid)
        return pid, group


    def test_no_grandchild_survives_lost_or_stepdown(self):
        run = self.start_run(self.agent, cmd=self.GRANDCHILDREN)
        pid1, group1 = self.cmd_group(run)
        self.assertEqual(len(group1), 3, group1)
        watch = self.watcher(self.agent)
        self.redis.call("DEL", KEY)
        watch.await_event("LOST", "x", allow=("FOLLOWER", "LEADER"))
        self.wait_group_empty(pid1, timeout=2.0)
        for p in group1:
            self.assertFalse(is_live(p), "process %d of CMD's group survived the LOST" % p)
        # Started again on the next LEADER; a drain (STEPDOWN) then stops that whole group.
        watch.await_event("LEADER", "x", allow=("FOLLOWER",))
        pid2, group2 = self.cmd_group(run, exclude=(pid1,))
        self.assertNotEqual(pid2, pid1)
        self.assertEqual(len(group2), 3, group2)
        self.assert_no_zombies(run)
        self.agent.send_signal(signal.SIGTERM)
        self.wait_group_empty(pid2, timeout=5.0)
        self.assertEqual(self.agent.wait(20), 0, self.agent.tail())
        self.assertEqual(self.agent.drain_summary().get("released"), 1)
        self.assertEqual(self.wait_run_exit(run), 0, run.stderr())
        self.assertEqual(live_group(pid2), [])

    def test_stepdown_sigterm_reaches_the_whole_group(self):
        """A wrapper shell that, on SIGTERM, waits for its workers to finish: the workers get
        the SIGTERM too (it goes to the group), so CMD ends gracefully long before the
        stepdown deadline instead of being SIGKILLed at it."""
        done = os.path.join(self.tmp, "graceful")
        cmd = ["sh", "-c", 'trap \'wait; echo ok > "$0"; exit 0\' TERM; '
               'sleep 1000 & sleep 1000 & wait', done]
        run = self.start_run(self.agent, cmd=cmd)
        pid, group = self.cmd_group(run)
        t0 = time.monotonic()
        self.agent.send_signal(signal.SIGTERM)
        self.wait_group_empty(pid, timeout=10)
        self.assertLess(time.monotonic() - t0, 2.0, "the workers did not get SIGTERM: CMD "
                        "was only stopped at the 3s stepdown deadline")
        self.assertTrue(os.path.exists(done), "CMD did not end gracefully")
        self.assertEqual(self.agent.wait(20), 0, self.agent.tail())
        self.assertEqual(self.wait_run_exit(run), 0, run.stderr())

    def test_stepdown_acks_only_once_a_grandchild_that_ignores_sigterm_is_gone(self):
        """CMD exits on SIGTERM, but something it started ignores SIGTERM and keeps working:
        acknowledging then would hand the lock over while part of CMD still does leader
        work. The whole group must be gone first."""
        mon = self.monitor(self.redis)
        stubborn = ["sh", "-c", "(trap '' TERM; exec sleep 1000) & sleep 1000 & wait"]
        run = self.start_run(self.agent, cmd=stubborn)
        pid, group = self.cmd_group(run)
        mark = mon.mark()
        self.agent.send_signal(signal.SIGTERM)
        self.wait_key_gone(self.redis, KEY, interval=0.01)
        left = surviving_group(pid)
        self.assertEqual(left, [], "processes of CMD's group outlived the stepdown and the "
                         "release: %r" % left)
        self.assertEqual(self.agent.wait(20), 0, self.agent.tail())
        self.assertEqual(self.agent.drain_summary().get("released"), 1)
        self.assertEqual(len(mon.dels(KEY, since=mark)), 1)
        self.assertEqual(self.wait_run_exit(run), 0, run.stderr())

    def test_nothing_of_cmds_group_outlives_cmds_own_exit(self):
        """CMD exits by itself (status 3) and leaves a background job behind: run exits with
        3 and hands the lock over, so that job must not go on."""
        go = os.path.join(self.tmp, "go")
        cmd = ["sh", "-c", 'sleep 1000 & while [ ! -e "$0" ]; do sleep 0.05; done; exit 3', go]
        run = self.start_run(self.agent, cmd=cmd)
        pid, group = self.cmd_group(run, members=2)
        with open(go, "w"):
            pass
        self.assertEqual(self.wait_run_exit(run), 3, run.stderr())
        self.wait_key_gone(self.redis, KEY, timeout=3)
        self.assertEqual(surviving_group(pid), [], "CMD's background job outlived run")


class RunUsageTest(RunTestBase):
    """Exit status 64 for a wrong command line, 2 when run cannot start campaigning; no CMD
    either way."""

    def setUp(self):
        super().setUp()
        self.redis = self.start_redis()
        self.agent = self.start_agent("pod-a", self.redis,
                                      locks=[lock_config("x", ttl="10s")])
        self.marker = os.path.join(self.tmp, "cmd-ran")
        self.cmd = ["sh", "-c", 'touch "$0"', self.marker]

    def run_cli(self, *args, env=None):
        r = self.cli("run", *args, timeout=20, env=env)
        self.assertFalse(os.path.exists(self.marker), "CMD ran: %r" % r)
        return r

    def test_bad_usage_exits_64_with_usage(self):
        s = self.agent.sock_path
        cases = [
            [],                                                   # nothing
            ["-s", s, "--"] + self.cmd,                           # no --lock
            ["-s", s] + self.cmd,                                 # no --lock, no --
            ["-s", s, "--lock", "x"],                             # no CMD
            ["-s", s, "--lock", "x", "--"],                       # no CMD after --
            ["-s", s, "--lock", "bad/name", "--"] + self.cmd,     # invalid lock names
            ["-s", s, "--lock", "", "--"] + self.cmd,
            ["-s", s, "--lock", "a b", "--"] + self.cmd,
            ["-s", s, "--lock", "x" * 129, "--"] + self.cmd,
            ["-s", s, "--lock", "x", "--bogus", "--"] + self.cmd,  # unknown option
            ["-s", s, "--lock"],                                  # option without its value
        ]
        for args in cases:
            with self.subTest(args=args):
                r = self.run_cli(*args)
                self.assertEqual(r.rc, 64, r)
                self.assertIn("usage: leasekeeper run", r.stderr, r)
        # A valid name of the longest length is not a usage error (just an unknown lock).
        r = self.run_cli("-s", s, "--lock", "x" * 128, "--", *self.cmd)
        self.assertEqual(r.rc, 2, r)
        self.assertNotIn("usage:", r.stderr, r)

    def test_unknown_lock_exits_2_with_the_agents_error(self):
        r = self.run_cli("-s", self.agent.sock_path, "--lock", "nosuch", "--", *self.cmd)
        self.assertEqual(r.rc, 2, r)
        self.assertIn("nosuch", r.stderr, r)
        self.assertIn("unknown_lock", r.stderr, "the agent's error code is not shown: %r" % r)
        self.assertNotIn("usage:", r.stderr, r)
        self.assertTrue(self.agent.alive())

    def test_no_agent_exits_2(self):
        missing = os.path.join(self.tmp, "nobody.sock")
        r = self.run_cli("-s", missing, "--lock", "x", "--", *self.cmd)
        self.assertEqual(r.rc, 2, r)
        self.assertIn(missing, r.stderr, r)
        # The socket path from the environment.
        r = self.run_cli("--lock", "x", "--", *self.cmd, env={"LEASEKEEPER_SOCKET": missing})
        self.assertEqual(r.rc, 2, r)
        self.assertIn(missing, r.stderr, r)
        # A stale socket file nobody listens on (an agent that died).
        import socket
        stale = os.path.join(self.tmp, "stale.sock")
        sk = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sk.bind(stale)
        sk.close()
        r = self.run_cli("-s", stale, "--lock", "x", "--", *self.cmd)
        self.assertEqual(r.rc, 2, r)
        # An agent that has gone since (drained and exited).
        self.agent.send_signal(signal.SIGTERM)
        self.assertEqual(self.agent.wait(20), 0)
        r = self.run_cli("-s", self.agent.sock_path, "--lock", "x", "--", *self.cmd)
        self.assertEqual(r.rc, 2, r)

    def test_cmd_that_cannot_be_executed_exits_127_and_hands_the_lock_back(self):
        missing = os.path.join(self.tmp, "no-such-program")
        r = self.cli("run", "-s", self.agent.sock_path, "--lock", "x", "--", missing,
                     timeout=20)
        self.assertEqual(r.rc, 127, r)
        self.assertIn(missing, r.stderr, r)
        self.wait_key_gone(self.redis, KEY, timeout=3)
        self.assertTrue(self.agent.alive())


if __name__ == "__main__":
    unittest.main(verbosity=2)
