#!/usr/bin/env python3
"""The app container of a simulated pod (podsim.py): a small leader-elected app that speaks the
leasekeeper protocol (SPEC section 3) and reports every tenure. Python 3 standard library only.

    sim_app.py --socket SOCK --pod NAME --lock x --record FILE [--store FILE] [--work-ms 20]

It behaves as deploy/README.md asks of an app:

- connects, HELLO, `CAMPAIGN <lock>`;
- `LEADER`: the tenure starts (timestamped when the line arrived); it does "work" while it leads:
  every --work-ms it appends `<token> <pod> <t>` to the shared --store file (O_APPEND, so the
  file's order is the real order of the writes, like a storage that sees fenced writes);
- `STEPDOWN`: stops work, records the tenure's end, then sends `ACK <lock> <token>`;
- `LOST`: records the end at once (no ACK);
- `STOP`: exits 0 (a tenure still open then is recorded as ended by `stop`);
- EOF from the agent: records the end of an open tenure and exits 1;
- SIGTERM: recorded, and otherwise ignored: the app keeps running until `STOP` or EOF (the drain
  is under way; the agent tells it when to go).

Every record is one JSON object on one line, appended to --record with a single write() on an
O_APPEND descriptor (so a SIGKILL never leaves half a record, and nothing is lost in a buffer).
Times are time.monotonic(), i.e. CLOCK_MONOTONIC, comparable between processes on one machine.

Records ("ev"): start {token, ttl_ms}, end {token, how: stepdown|lost|eof|stop}, ready (OK
CAMPAIGN), follower {holder}, stepdown {token, deadline_ms}, released {token, outcome},
sigterm, stop {deadline_ms}, reply (an ERR, or an unexpected OK), anomaly {what}, exit {code}.
Every record has "pod", "pid" and "t".
"""

import argparse
import json
import os
import select
import signal
import socket
import sys
import time


class SimApp:
    def __init__(self, args):
        self.args = args
        self.pod = args.pod
        self.lock = args.lock
        self.rec_fd = os.open(args.record, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.store_fd = (os.open(args.store, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                         if args.store else None)
        self.work_s = max(0.001, args.work_ms / 1000.0)
        self.sock = None
        self.buf = b""
        self.token = None          # the open tenure's token, None when not leading
        self.next_work = 0.0
        self.works = 0             # work items done in the open tenure

    # -- records

    def record(self, ev, t=None, **fields):
        d = {"ev": ev, "pod": self.pod, "pid": os.getpid(),
             "t": time.monotonic() if t is None else t}
        d.update(fields)
        os.write(self.rec_fd, (json.dumps(d, sort_keys=True) + "\n").encode())

    def on_sigterm(self, signum, frame):
        # Keep running: the drain is under way, STOP (or EOF) says when to exit.
        self.record("sigterm")

    # -- the protocol

    def send(self, line):
        self.sock.sendall((line + "\n").encode())

    def connect(self):
        deadline = time.monotonic() + self.args.connect_timeout
        while True:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(self.args.socket)
                self.sock = s
                return
            except OSError as e:
                s.close()
                if time.monotonic() >= deadline:
                    self.record("anomaly", what="cannot connect: %s" % e)
                    self.exit(2)
                time.sleep(0.01)

    def read_lines(self, timeout):
        """Lines that arrived within timeout (possibly none), each with its arrival time;
        None on EOF."""
        try:
            r, _, _ = select.select([self.sock], [], [], timeout)
        except InterruptedError:  # pragma: no cover (PEP 475 retries select)
            return []
        if not r:
            return []
        try:
            data = self.sock.recv(65536)
        except OSError:
            data = b""
        now = time.monotonic()
        if not data:
            return None
        self.buf += data
        out = []
        while b"\n" in self.buf:
            line, self.buf = self.buf.split(b"\n", 1)
            out.append((line.rstrip(b"\r").decode(errors="replace"), now))
        return out

    def expect_line(self, prefix, timeout=10.0):
        """Wait for a line starting with prefix; returns it and the lines read after it."""
        deadline = time.monotonic() + timeout
        while True:
            lines = self.read_lines(max(0.0, deadline - time.monotonic()))
            if lines is None:
                self.record("anomaly", what="EOF during the handshake")
                self.exit(1)
            if lines:
                line, _ = lines[0]
                if not line.startswith(prefix):
                    self.record("anomaly", what="expected %s, got %r" % (prefix, line))
                    self.exit(2)
                # Whatever came after it in the same read is handled by the main loop.
                return line, lines[1:]
            if time.monotonic() >= deadline:
                self.record("anomaly", what="no %s within %.0fs" % (prefix, timeout))
                self.exit(2)

    def exit(self, code):
        if self.token is not None:
            self.end("exit")
        self.record("exit", code=code)
        try:
            if self.sock:
                self.sock.close()
        finally:
            os._exit(code)

    # -- leadership

    def work(self, now):
        """One item of leader work: a write tagged with the token, like a fenced write."""
        if self.store_fd is not None:
            os.write(self.store_fd, ("%d %s %.6f\n" % (self.token, self.pod, now)).encode())
        self.works += 1
        self.next_work = now + self.work_s

    def start(self, token, t, ttl_ms):
        if self.token is not None:
            self.record("anomaly", what="LEADER token=%d while leading with token=%d"
                        % (token, self.token))
            self.end("superseded")
        self.token = token
        self.works = 0
        self.record("start", t=t, token=token, ttl_ms=ttl_ms)
        self.work(time.monotonic())

    def end(self, how):
        """Stop leader work (nothing more is written after this) and record the end."""
        tok, self.token = self.token, None
        self.record("end", token=tok, how=how, works=self.works)

    @staticmethod
    def attrs(words):
        d = {}
        for w in words:
            if "=" in w:
                k, v = w.split("=", 1)
                d[k] = v
        return d

    def handle(self, line, t):
        words = line.split()
        if not words:
            return
        kind, a = words[0], self.attrs(words[1:])
        lock = words[1] if len(words) > 1 else None
        if kind == "LEADER" and lock == self.lock:
            self.start(int(a["token"]), t, int(a.get("ttl_ms", "0")))
        elif kind == "FOLLOWER" and lock == self.lock:
            self.record("follower", t=t, holder=a.get("holder"))
            if self.token is not None:
                self.record("anomaly", what="FOLLOWER while leading token=%d" % self.token)
                self.end("follower")
        elif kind == "STEPDOWN" and lock == self.lock:
            tok = int(a["token"])
            self.record("stepdown", t=t, token=tok, deadline_ms=int(a.get("deadline_ms", "0")))
            if self.args.ack_delay_ms:
                time.sleep(self.args.ack_delay_ms / 1000.0)
            if self.token == tok and self.args.bug == "ack-early":
                # Deliberately wrong, to show the checker catches it: ACK first, then go on
                # working for a while, and only then stop.
                self.send("ACK %s %d" % (self.lock, tok))
                until = time.monotonic() + 0.15
                while time.monotonic() < until:
                    self.work(time.monotonic())
                    time.sleep(self.work_s)
                self.end("stepdown")
                return
            if self.token == tok:
                self.end("stepdown")
            elif self.token is not None:
                self.record("anomaly", what="STEPDOWN token=%d while leading token=%d"
                            % (tok, self.token))
                self.end("stepdown-mismatch")
            self.send("ACK %s %d" % (self.lock, tok))
        elif kind == "LOST" and lock == self.lock:
            if self.token is not None:
                self.end("lost")
            self.record("lost", t=t, token=int(a.get("token", "0")), reason=a.get("reason"))
        elif kind == "RELEASED" and lock == self.lock:
            self.record("released", t=t, token=int(a.get("token", "0")),
                        outcome=a.get("outcome"))
        elif kind == "STOP":
            self.record("stop", t=t, deadline_ms=int(a.get("deadline_ms", "0")))
            if self.token is not None:
                self.end("stop")
            self.exit(0)
        elif kind == "OK" and len(words) > 1 and words[1] == "CAMPAIGN":
            self.record("ready", t=t)
        elif kind == "OK" and len(words) > 1 and words[1] == "ACK":
            pass
        else:
            self.record("reply", t=t, line=line)

    def run(self):
        signal.signal(signal.SIGTERM, self.on_sigterm)
        self.record("boot")
        self.connect()
        banner, rest = self.expect_line("LEASEKEEPER ")
        self.send("HELLO 1 client=sim-app-%s" % self.pod)
        _, rest2 = self.expect_line("OK HELLO")
        for line, t in rest + rest2:
            self.handle(line, t)
        self.send("CAMPAIGN %s" % self.lock)
        while True:
            timeout = None
            if self.token is not None:
                timeout = max(0.0, self.next_work - time.monotonic())
            lines = self.read_lines(timeout)
            if lines is None:
                if self.token is not None:
                    self.end("eof")
                self.record("eof")
                self.exit(1)
            for line, t in lines:
                self.handle(line, t)
            if self.token is not None and time.monotonic() >= self.next_work:
                self.work(time.monotonic())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--socket", required=True)
    ap.add_argument("--pod", required=True)
    ap.add_argument("--lock", default="x")
    ap.add_argument("--record", required=True, help="JSON lines file for the tenure records")
    ap.add_argument("--store", help="shared file the leader's work is appended to")
    ap.add_argument("--work-ms", type=float, default=20.0)
    ap.add_argument("--ack-delay-ms", type=float, default=0.0,
                    help="time spent finishing leader work between STEPDOWN and the end")
    ap.add_argument("--connect-timeout", type=float, default=10.0)
    ap.add_argument("--bug", choices=("ack-early",),
                    help="misbehave on purpose (ack-early: ACK, then stop working 150ms "
                    "later), for checking that the checker catches it")
    args = ap.parse_args(argv)
    SimApp(args).run()


if __name__ == "__main__":
    sys.exit(main())
