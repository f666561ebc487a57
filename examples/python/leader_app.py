#!/usr/bin/env python3
"""A minimal leader-elected app for leasekeeper, in Python 3, using the `leasekeeper` client
library (clients/python: `pip install ./clients/python`; run from the repository, this script
finds it there by itself).

It campaigns for one lock and "works" (prints a line every 500 ms) only while it leads. The
library keeps the app's side of the contract (proto/PROTOCOL.md):

  LEADER    start leader work, fenced with the token
  RENEWED   the tenure's deadline moves on; without one, work stops at the deadline by itself
  STEPDOWN  stop leader work, then ACK the token (the agent releases the lock only after that)
  LOST      stop leader work at once; no ACK
  STOP      the agent's drain is over: exit 0
  EOF       the agent is gone and nobody can prove the lease any more: stop at once, exit 1

usage: leader_app.py [-s SOCKET] [-n NAME] LOCK

The socket defaults to $LEASEKEEPER_SOCKET, then /run/leasekeeper/agent.sock. If the agent
requires authentication (its banner says auth=hmac), the key is read from the file named by
$LEASEKEEPER_AUTH_KEY_FILE (32 raw bytes or 64 hex digits).

Every transition is printed on stdout as one line, a word then key=value pairs:
  CAMPAIGN lock=scheduler
  FOLLOWER holder=pod-b
  LEADER token=42 ttl_ms=9950
  WORK token=42 n=1
  DEADLINE token=42
  STEPDOWN token=42 -> ACK
  LOST token=42 reason=renew_deadline
  RELEASED token=42 outcome=released
  STOP
  EOF
"""

import argparse
import os
import signal
import sys
import threading

try:
    import leasekeeper
except ImportError:  # run from a checkout without installing the library
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                    "..", "..", "clients", "python"))
    import leasekeeper

WORK_INTERVAL = 0.5  # seconds between two slices of leader work


def say(*words):
    print(*words, flush=True)


class LeaderWork:
    """Stands in for the app's real leader work: a thread that does one slice every
    WORK_INTERVAL while leading. start() and stop() are the elector's callbacks; stop() returns
    only once no slice is running, so nothing is done after it (nor after the ACK that follows
    a STEPDOWN)."""

    def __init__(self, elector_ref):
        self.elector = elector_ref  # a callable returning the LeaderElector
        self.lock = threading.Lock()
        self.wake = threading.Condition(self.lock)
        self.token = None  # the fencing token we lead under, or None
        self.n = 0
        self.thread = threading.Thread(target=self._loop, name="leader-work", daemon=True)
        self.thread.start()

    def start(self, token):
        with self.lock:
            self.token, self.n = token, 0
            self.wake.notify_all()

    def stop(self, reason=None):
        # A real app cancels or finishes its in-flight leader work here, before returning.
        with self.lock:
            if self.token is not None and reason == "deadline":
                say("DEADLINE token=%s" % self.token)
            self.token = None

    def _loop(self):
        with self.lock:
            while True:
                self.wake.wait(None if self.token is None else WORK_INTERVAL)
                # is_leader() checks the tenure's deadline against the clock: no slice after
                # it, even before the elector has called stop().
                if self.token is not None and self.elector().is_leader():
                    self.n += 1
                    say("WORK token=%s n=%d" % (self.token, self.n))  # e.g. a fenced write


def main():
    ap = argparse.ArgumentParser(description="A minimal leader-elected app for leasekeeper.")
    ap.add_argument("-s", "--socket", help="the agent's socket (default: $LEASEKEEPER_SOCKET, "
                    "then /run/leasekeeper/agent.sock)")
    ap.add_argument("-n", "--name", default="python-example", help="client name for the logs")
    ap.add_argument("lock", help="the lock to campaign for")
    args = ap.parse_args()
    path = args.socket or leasekeeper.default_socket_path()

    elector = None
    work = LeaderWork(lambda: elector)

    def on_message(m):
        """Print the agent's lines as they come (the elector acts on them after this)."""
        if m.kind == "OK" and m.verb == "CAMPAIGN":
            say("CAMPAIGN lock=" + args.lock)
        elif m.kind == "ERR":
            say(m.raw)
        elif m.kind == "LEADER":
            say("LEADER token=%s ttl_ms=%s" % (m.get("token"), m.get("ttl_ms")))
        elif m.kind == "FOLLOWER":
            say("FOLLOWER holder=" + m.get("holder", "-"))
        elif m.kind == "STEPDOWN":
            work.stop()  # first stop, then acknowledge (the elector ACKs after its callback)
            say("STEPDOWN token=%s -> ACK" % m.get("token"))
        elif m.kind == "LOST":
            work.stop()  # at once: another replica may lead already; no ACK
            say("LOST token=%s reason=%s" % (m.get("token"), m.get("reason")))
        elif m.kind == "RELEASED":
            say("RELEASED token=%s outcome=%s" % (m.get("token"), m.get("outcome")))
        elif m.kind == "STOP":
            work.stop()
            say("STOP")

    elector = leasekeeper.LeaderElector(
        args.lock, socket_path=path, client_name=args.name,
        on_started_leading=work.start, on_stopped_leading=work.stop,
        on_message=on_message, reconnect=False)
    signalled = []

    def on_signal(signum, frame):
        signalled.append(signal.Signals(signum).name)
        elector.stop()  # closing the connection counts as stepping down for the agent

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with elector:
        try:
            result = elector.run()
        except leasekeeper.RequestError as e:  # our CAMPAIGN was refused
            print("leader_app: %s" % e, file=sys.stderr)
            return 1
        except (OSError, leasekeeper.LeaseKeeperError, ValueError) as e:
            print("leader_app: %s: %s" % (path, e), file=sys.stderr)
            return 1
    work.stop()
    if result == "stop":
        return 0
    if result == "closed":
        say("EXIT signal=%s" % (signalled[0] if signalled else "-"))
        return 0
    # EOF (or a line we cannot trust): nobody can prove our lease is still valid. The library
    # stopped leader work at once; exit (or reconnect: reconnect=True does that).
    say("EOF")
    return 1


if __name__ == "__main__":
    sys.exit(main())
