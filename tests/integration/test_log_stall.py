"""I9: no write the agent makes can stall its loop, logging included. The agent's stderr is a
pipe that nobody reads (a log shipper that hangs): once the pipe (64 KiB) and the agent's own
queue (1 MiB) are full, log lines are dropped and counted, and the agent goes on answering,
renewing, and telling its app LOST on time. When the pipe drains, one "log lines dropped" line
says how many were lost, and /metrics counts them (leasekeeper_log_lines_dropped_total).

Log traffic comes from SIGQUIT state dumps (one line per configured lock) with many idle locks
with long names; the agent's own lines are what fills the pipe.

On Redis with JSON logs and on etcd with text logs.
"""

import fcntl
import json
import os
import re
import select
import signal
import struct
import subprocess
import termios
import threading
import time
import unittest
import urllib.error
import urllib.request

from harness import (DEFAULT_TIMEOUT, Agent, EtcdScenario, LKTestCase, RedisScenario,
                     SANITIZER_ENV, free_port, lk_bin, lock_config, parse_log_line,
                     scaled, status_locks, wait_until)

TTL = 3.0
PAD_LOCKS = 120          # idle locks, for big state dumps
PING_LIMIT = 1.0         # seconds: the loop answers within this, pipe full or not


def mono_ms():
    return time.clock_gettime(time.CLOCK_MONOTONIC) * 1000.0


def metric(text, name):
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == name:
            return float(parts[1])
    return None


_DROPPED_RE = re.compile(r'"msg":"log lines dropped".*?"dropped":(\d+)|'
                         r'msg="log lines dropped".*?\bdropped=(\d+)')


def dropped_reports(text):
    """The counts of every "log lines dropped" line in the agent's stderr (JSON or text)."""
    return [int(a or b) for a, b in _DROPPED_RE.findall(text)]


class StalledStderrAgent(Agent):
    """An Agent whose stderr is a pipe the test does not read until it says so (drain()).
    Whatever is read is appended to stderr_path, so logs(), tail() and the teardown's
    sanitizer check see it."""

    def start(self, wait=True, timeout=DEFAULT_TIMEOUT, args=()):
        env = dict(os.environ)
        env.update(SANITIZER_ENV)
        env.update(self.env)
        self._rfd, wfd = os.pipe()
        self._errf = open(self.stderr_path, "ab")
        self._outf = open(self.stdout_path, "ab")
        self._reader = None
        self._eof = False
        self._lock = threading.Lock()
        try:
            self.proc = subprocess.Popen(
                [lk_bin(), "agent", "-c", self.config_path] + list(args),
                stdin=subprocess.DEVNULL, stdout=self._outf, stderr=wfd,
                env=env, cwd=self.dir)
        finally:
            os.close(wfd)
        if wait:
            self.wait_ready(timeout)
        return self

    def pipe_bytes(self):
        """Bytes sitting unread in the pipe."""
        buf = fcntl.ioctl(self._rfd, termios.FIONREAD, struct.pack("i", 0))
        return struct.unpack("i", buf)[0]

    def _read_some(self, timeout):
        r, _, _ = select.select([self._rfd], [], [], timeout)
        if not r:
            return 0
        data = os.read(self._rfd, 1 << 16)
        if not data:
            self._eof = True
            return 0
        with self._lock:
            self._errf.write(data)
            self._errf.flush()
        return len(data)

    def drain(self):
        """Read the pipe from now on, in a thread, until the agent closes it."""
        if self._reader is None:
            self._reader = threading.Thread(target=self._drain_loop, daemon=True,
                                            name="stderr-" + self.name)
            self._reader.start()

    def _drain_loop(self):
        while not self._eof:
            self._read_some(0.2)

    def stop(self, grace=None):
        self.drain()
        return super().stop(grace)

    def close_files(self):
        if self._reader is not None:
            self._reader.join(timeout=5)
        try:
            os.close(self._rfd)
        except OSError:
            pass
        super().close_files()


class LogStallScenarios:
    log_format = "json"

    def setUp(self):
        super().setUp()
        self.http_port = free_port()
        locks = [lock_config("x", ttl="3s", retry_interval="500ms")]
        locks += [lock_config("pad-%03d-%s" % (i, "p" * 116)) for i in range(PAD_LOCKS)]
        cfg = self.backend.config()
        self.agent = StalledStderrAgent(self.tmp, identity="pod-a", locks=locks,
                                        backends=[cfg], log_format=self.log_format,
                                        http_listen="127.0.0.1:%d" % self.http_port)
        self.agents.append(self.agent)
        self.addCleanup(self._teardown_agent, self.agent)
        self.agent.start()

    def metrics(self):
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % self.http_port,
                                    timeout=PING_LIMIT * 5) as r:
            return r.read().decode()

    def dropped_metric(self):
        return metric(self.metrics(), "leasekeeper_log_lines_dropped_total")

    def probe(self, c, lat):
        """PING (timed) and STATUS; STATUS may say leader only before until_mono_ms."""
        t0 = time.monotonic()
        self.assertEqual(c.call("PING", timeout=5).raw, "OK PONG")
        lat.append(time.monotonic() - t0)
        t_ask = mono_ms()
        st = status_locks(c.status(timeout=5))["x"]
        if str(st.get("state")).lower() == "leader":
            self.assertIn("until_mono_ms", st, st)
            self.assertGreater(int(st["until_mono_ms"]), t_ask,
                               "STATUS says leader past until_mono_ms: %r" % st)
        t_ask = mono_ms()
        code, body = self.leader_endpoint()
        if code == 200:
            self.assertGreater(int(body["until_mono_ms"]), t_ask,
                               "/leader/x says leader past until_mono_ms: %r" % body)
        else:
            self.assertEqual(code, 503, body)
        return st

    def leader_endpoint(self):
        """GET /leader/x: (status, JSON body or text)."""
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d/leader/x" % self.http_port,
                                        timeout=PING_LIMIT * 5) as r:
                return r.status, json.loads(r.read().decode())
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(errors="replace")

    def entries(self, text):
        """The log lines in text that are whole: a JSON object, or logfmt pairs, with ts,
        level and msg."""
        out = []
        for line in text.splitlines():
            e = parse_log_line(line)
            if e is not None:
                out.append(e)
        return out

    def test_a_stalled_stderr_never_stalls_the_agent(self):
        a = self.agent
        app, lead = self.leader_app(a)
        probe = self.connect(a, client_name="probe", label="probe")
        lat = []

        # Fill the pipe and the queue: state dumps until the agent counts drops.
        t0 = time.monotonic()
        dumps = 0
        while True:
            a.proc.send_signal(signal.SIGQUIT)
            dumps += 1
            self.probe(probe, lat)
            if dumps % 5 == 0:
                d = self.dropped_metric()
                if d and d > 0:
                    break
            self.assertLess(time.monotonic() - t0, scaled(60),
                            "no log line dropped after %d state dumps" % dumps)
        t_full = time.monotonic()
        in_pipe = a.pipe_bytes()
        print("log stall: %d state dumps (%.1fs) until lines were dropped; %d bytes unread in "
              "the pipe" % (dumps, t_full - t0, in_pipe))
        self.assertGreaterEqual(in_pipe, 4096, "the pipe is not full: is stderr read?")

        # Several seconds more of it: the loop answers, renews and tells no lies.
        while time.monotonic() - t_full < 4.0:
            a.proc.send_signal(signal.SIGQUIT)
            st = self.probe(probe, lat)
            time.sleep(0.05)
        self.assertEqual(str(st["state"]).lower(), "leader", "the tenure was lost: %r" % st)
        self.assertEqual([e.raw for e in app.events_for(0.2)], [],
                         "events for the app while leading undisturbed")
        self.assertGreater(len(app.renewals), 0, "no RENEWED while stderr was stalled")
        self.assertTrue(all(r.token == lead.token for r in app.renewals))
        print("log stall: %d probes, PING max %.1f ms; %d RENEWED meanwhile"
              % (len(lat), max(lat) * 1000, len(app.renewals)))
        self.assertLess(max(lat), PING_LIMIT, "PING took %.2fs with stderr stalled" % max(lat))

        # The backend goes away: LOST on time, with the pipe still full.
        t_stop = time.monotonic()
        self.backend.stop()
        lost = app.expect("LOST", "x", token=lead.token, timeout=scaled(10))
        print("log stall: %s %.0f ms after the backend stopped" % (lost.raw,
                                                                  (lost.t - t_stop) * 1000))
        self.assertIn(lost["reason"], ("renew_deadline", "backend_error"), lost.raw)
        self.assertLess(lost.t - t_stop, TTL, "LOST came %.2fs after the backend stopped"
                        % (lost.t - t_stop))
        self.probe(probe, lat)
        self.assertNotEqual(str(status_locks(probe.status())["x"]["state"]).lower(), "leader")
        self.assertEqual(self.leader_endpoint()[0], 503)
        self.assertLess(max(lat), PING_LIMIT)
        self.assertGreaterEqual(a.pipe_bytes(), 4096, "the pipe drained by itself?")

        # Now read the pipe: the agent catches up and reports what it dropped. (Found by
        # a search of the raw text, so that a garbled line around it fails the check of
        # whole lines below, with the evidence, rather than this wait.)
        a.drain()
        wait_until(lambda: dropped_reports(a.logs()), timeout=scaled(20),
                   what='the "log lines dropped" line')
        total = wait_until(lambda: self.dropped_metric() == sum(dropped_reports(a.logs()))
                           and self.dropped_metric(), timeout=scaled(10),
                           what="the reported drops (%r) to add up to the metric (%r)"
                           % (dropped_reports(a.logs()), self.dropped_metric()))
        counts = dropped_reports(a.logs())
        print("log stall: %d lines dropped (metric %d; reported by %d line(s): %s)"
              % (sum(counts), total, len(counts), counts))
        self.assertTrue(all(n > 0 for n in counts), counts)
        self.assertGreater(total, 0)

        # Lines were dropped whole: every line that reached the pipe is one whole log line.
        torn = [ln for ln in a.logs().splitlines() if not self.entries(ln)]
        self.assertEqual(["%r" % ln[:160] for ln in torn[:6]], [],
                         "%d of %d lines read from the agent's stderr are torn or garbled"
                         % (len(torn), len(a.logs().splitlines())))

        # And it logs normally again: a state dump arrives whole.
        n_before = len([e for e in self.entries(a.logs()) if e.get("msg") == "state dump"])
        a.proc.send_signal(signal.SIGQUIT)
        wait_until(lambda: len([e for e in self.entries(a.logs())
                                if e.get("msg") == "state dump: lock"]) and
                   len([e for e in self.entries(a.logs()) if e.get("msg") == "state dump"])
                   > n_before, timeout=scaled(10), what="a state dump after the stall")
        self.assertEqual(probe.call("PING", timeout=PING_LIMIT).raw, "OK PONG")
        self.assertEqual(self.dropped_metric(), total, "lines dropped with the pipe read")


class LogStallRedisTest(LogStallScenarios, RedisScenario, LKTestCase):
    log_format = "json"


class LogStallEtcdTest(LogStallScenarios, EtcdScenario, LKTestCase):
    log_format = "text"


if __name__ == "__main__":
    unittest.main(verbosity=2)
