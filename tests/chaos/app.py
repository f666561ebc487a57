"""A chaos replica's app: campaigns through its agent with the project's Python client
(clients/python, LeaderElector) and, while it leads, writes to the fenced store with its token
several times a second. It logs its own view of leadership to a JSONL file (--log), every line
with "t" = CLOCK_MONOTONIC seconds:

  {"ev":"proc", "pid"}                          the process started
  {"ev":"line", "raw"}                          LEADER/LOST/STEPDOWN/FOLLOWER/RELEASED/STOP
                                                lines from the agent, as they were read
  {"ev":"start", "token", "deadline"}           on_started_leading: the interval starts
  {"ev":"deadline", "token", "deadline"}        a RENEWED moved the tenure's deadline
  {"ev":"stop", "token", "reason", "deadline"}  on_stopped_leading returned: leader work has
                                                stopped (the writer is idle); "t" is the
                                                return time, "deadline" the tenure's last one
  {"ev":"w", "token", "seq", "tc", "res"}       one write: tc = when is_leader() was checked
                                                (--work seconds before the write is sent),
                                                res = OK/REJECT/ERR

The interval the app believes it leads is [start.t, min(stop.t, stop.deadline)]: is_leader()
turns False at the deadline (it reads the clock), and the writer checks it before each write.
"""

import argparse
import os
import signal
import socket
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "clients", "python"))
sys.path.insert(0, os.path.join(REPO, "tests"))

import leasekeeper  # noqa: E402
from common.runs import EventLog as Log, mono  # noqa: E402


class TracingElector(leasekeeper.LeaderElector):
    """LeaderElector that logs every deadline move (after the library handled the line)."""

    def __init__(self, *a, logger=None, **kw):
        super().__init__(*a, **kw)
        self._logger = logger

    def _handle(self, c, m):
        before = self._tenure
        r = super()._handle(c, m)
        after = self._tenure
        if (before is not None and after is not None and before[0] == after[0]
                and before[1] != after[1]):
            self._logger("deadline", token=after[0], deadline=after[1])
        return r


class App:
    def __init__(self, args):
        self.args = args
        self.log = Log(args.log)
        self.name = args.name
        self.cur = None                 # the token we lead under, or None
        self.wlock = threading.Lock()   # held for the whole of one write
        self.elector = None
        self.seq = 0
        self.store = None
        self.quit = False

    # -- leader callbacks (the elector's thread)

    def started(self, token):
        self.log("start", token=token, deadline=self.elector.deadline())
        self.cur = token

    def stopped(self, reason):
        tok = self.cur
        self.cur = None
        with self.wlock:                # an in-flight write finishes first
            pass
        self.log("stop", token=tok, reason=reason, deadline=self.elector.last_deadline)

    def on_message(self, m):
        if m.kind in ("LEADER", "LOST", "STEPDOWN", "FOLLOWER", "RELEASED", "STOP"):
            self.log("line", t=m.t, raw=m.raw)

    # -- the writer thread

    def _store_call(self, line):
        for attempt in (0, 1):
            try:
                if self.store is None:
                    s = socket.create_connection(("127.0.0.1", self.args.store_port), timeout=2)
                    self.store = (s, s.makefile("rb"))
                s, f = self.store
                s.sendall(line.encode() + b"\n")
                reply = f.readline()
                if not reply:
                    raise OSError("store closed")
                return reply.decode().split()[0]
            except OSError:
                if self.store:
                    try:
                        self.store[0].close()
                    except OSError:
                        pass
                self.store = None
        return "ERR"

    def writer(self):
        period = self.args.write_interval
        while not self.quit:
            tok = self.cur
            e = self.elector
            if tok is None or e is None:
                time.sleep(0.01)
                continue
            with self.wlock:
                if self.cur != tok or not e.is_leader() or e.token != tok:
                    pass
                else:
                    tc = mono()
                    self.seq += 1
                    # the leader work between the check and the write: a freeze (SIGSTOP)
                    # often lands here, and the write then goes out after the deadline
                    time.sleep(self.args.work)
                    res = self._store_call("W %d %s %d" % (tok, self.name, self.seq))
                    self.log("w", token=tok, seq=self.seq, tc=tc, res=res)
            time.sleep(period)

    def run(self):
        self.log("proc", pid=os.getpid())
        threading.Thread(target=self.writer, name="writer", daemon=True).start()
        while not self.quit:
            self.elector = TracingElector(
                self.args.lock, socket_path=self.args.socket, client_name=self.name,
                on_started_leading=self.started, on_stopped_leading=self.stopped,
                on_message=self.on_message, reconnect=True, backoff_initial=0.05,
                backoff_max=0.3, connect_timeout=3.0, logger=self.log)
            try:
                r = self.elector.run()
            finally:
                self.elector.close()
            self.log("run", result=r)
            if r == "stop":
                break   # the agent drained: the pod's app exits (the runner restarts both)
        self.quit = True


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--socket", required=True)
    ap.add_argument("--lock", default="x")
    ap.add_argument("--name", required=True)
    ap.add_argument("--store-port", type=int, required=True)
    ap.add_argument("--log", required=True)
    ap.add_argument("--write-interval", type=float, default=0.04)
    ap.add_argument("--work", type=float, default=0.06,
                    help="seconds between the is_leader() check and the write")
    args = ap.parse_args()
    import logging
    logging.basicConfig(level=logging.ERROR)
    app = App(args)

    def term(*_):
        app.quit = True
        if app.elector is not None:
            app.elector.stop()
    signal.signal(signal.SIGTERM, term)
    signal.signal(signal.SIGINT, term)
    app.run()
    os._exit(0)


if __name__ == "__main__":
    main()
