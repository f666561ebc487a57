#!/usr/bin/env python3
"""A minimal leader-elected app for leasekeeper, in Python 3 (standard library only).

It campaigns for one lock and "works" (prints a line every 500 ms) only while the agent says it
leads. It keeps the whole contract of an app (proto/PROTOCOL.md):

  LEADER    start leader work, fenced with the token
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
  STEPDOWN token=42 -> ACK
  LOST token=42 reason=renew_deadline
  RELEASED token=42 outcome=released
  STOP
  EOF
"""

import argparse
import hashlib
import hmac
import os
import select
import signal
import socket
import sys
import time

WORK_INTERVAL = 0.5  # seconds between two slices of leader work
MAX_LINE = 4096      # the protocol's longest line, newline included


def say(*words):
    print(*words, flush=True)


def load_key(path):
    """The 32-byte key of a key file: 32 raw bytes, or 64 hex digits (whitespace around ok)."""
    with open(path, "rb") as f:
        data = f.read(4097)
    if len(data) == 32:
        return data
    text = data.strip()
    if len(text) != 64:
        raise ValueError("%s: expected 32 raw bytes or 64 hex digits" % path)
    return bytes.fromhex(text.decode("ascii"))


def mac_hex(key, nonce_hex):
    """HMAC-SHA-512-256 (libsodium's crypto_auth) of the 32 nonce bytes, as hex."""
    return hmac.new(key, bytes.fromhex(nonce_hex), hashlib.sha512).digest()[:32].hex()


def attributes(words):
    return dict(w.split("=", 1) for w in words if "=" in w)


class AgentConnection:
    """Lines to and from the agent over its Unix socket."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.buf = b""

    def send(self, line):
        self.sock.sendall(line.encode("ascii") + b"\n")

    def read_line(self, timeout=None):
        """The next line; None if none came within timeout seconds (None: wait for ever).
        Raises EOFError when the agent closed the connection."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self.buf:
            if len(self.buf) >= MAX_LINE:
                raise EOFError("line too long from the agent")
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not select.select([self.sock], [], [], left)[0]:
                return None
            data = self.sock.recv(65536)
            if not data:
                raise EOFError("the agent closed the connection")
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        return line.rstrip(b"\r").decode("ascii", "replace")

    def close(self):
        self.sock.close()


class LeaderWork:
    """Stands in for the app's real leader work: one slice every WORK_INTERVAL while leading."""

    def __init__(self):
        self.token = None  # the fencing token we lead under, or None
        self.n = 0
        self.next_at = 0.0

    def start(self, token):
        self.token, self.n = token, 0
        self.next_at = time.monotonic() + WORK_INTERVAL

    def stop(self):
        # A real app cancels or finishes its in-flight leader work here, before returning.
        self.token = None

    def seconds_to_next(self):
        if self.token is None:
            return None  # nothing to do: wait for the agent only
        return max(0.0, self.next_at - time.monotonic())

    def tick(self):
        if self.token is None or time.monotonic() < self.next_at:
            return
        self.n += 1
        say("WORK token=%s n=%d" % (self.token, self.n))  # e.g. write, fenced with the token
        self.next_at = max(self.next_at + WORK_INTERVAL, time.monotonic())


def connect(path, client_name):
    """Connect, read the banner, send HELLO (with a MAC if the agent asks for one) and read
    its reply."""
    conn = AgentConnection(path)
    banner = conn.read_line(timeout=10)
    if banner is None:
        raise EOFError("no banner from the agent")
    words = banner.split()
    if not words or words[0] != "LEASEKEEPER":
        raise ConnectionError(banner)  # e.g. ERR too_many_clients
    attrs = attributes(words)
    hello = "HELLO 1 client=" + client_name
    if attrs.get("auth") == "hmac":
        key_file = os.environ.get("LEASEKEEPER_AUTH_KEY_FILE")
        if not key_file:
            raise ConnectionError("the agent requires authentication: set "
                                  "LEASEKEEPER_AUTH_KEY_FILE to its key file")
        hello += " mac=" + mac_hex(load_key(key_file), attrs["nonce"])
    conn.send(hello)
    reply = conn.read_line(timeout=10)  # no events come before HELLO's reply
    if reply is None or not reply.startswith("OK HELLO"):
        raise ConnectionError(reply or "no reply to HELLO")  # e.g. ERR auth_failed
    return conn


class Signalled(Exception):
    pass


def on_signal(signum, frame):
    raise Signalled(signal.Signals(signum).name)


def main():
    ap = argparse.ArgumentParser(description="A minimal leader-elected app for leasekeeper.")
    ap.add_argument("-s", "--socket", help="the agent's socket (default: $LEASEKEEPER_SOCKET, "
                    "then /run/leasekeeper/agent.sock)")
    ap.add_argument("-n", "--name", default="python-example", help="client name for the logs")
    ap.add_argument("lock", help="the lock to campaign for")
    args = ap.parse_args()
    path = args.socket or os.environ.get("LEASEKEEPER_SOCKET") or "/run/leasekeeper/agent.sock"

    try:
        conn = connect(path, args.name)
        conn.send("CAMPAIGN " + args.lock)
    except (OSError, EOFError, ValueError) as e:
        print("leader_app: %s: %s" % (path, e), file=sys.stderr)
        return 1

    work = LeaderWork()
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        while True:
            line = conn.read_line(timeout=work.seconds_to_next())
            if line is None:
                work.tick()
                continue
            words = line.split()
            if not words:
                continue
            kind, attrs = words[0], attributes(words[1:])
            if kind == "ERR":  # our CAMPAIGN or ACK was refused
                work.stop()
                say(line)
                return 1
            elif kind == "OK" and words[1:2] == ["CAMPAIGN"]:
                say("CAMPAIGN lock=" + args.lock)
            elif kind == "LEADER":
                if work.token != attrs["token"]:
                    work.stop()
                    work.start(attrs["token"])
                    say("LEADER token=%s ttl_ms=%s" % (attrs["token"], attrs.get("ttl_ms")))
            elif kind == "FOLLOWER":
                work.stop()  # someone else leads (or nobody yet): never work as a follower
                say("FOLLOWER holder=" + attrs.get("holder", "-"))
            elif kind == "STEPDOWN":
                work.stop()  # first stop, then acknowledge: the agent waits for this ACK
                say("STEPDOWN token=%s -> ACK" % attrs["token"])
                conn.send("ACK %s %s" % (args.lock, attrs["token"]))
            elif kind == "LOST":
                work.stop()  # at once: another replica may lead already; no ACK
                say("LOST token=%s reason=%s" % (attrs.get("token"), attrs.get("reason")))
            elif kind == "RELEASED":
                say("RELEASED token=%s outcome=%s" % (attrs.get("token"), attrs.get("outcome")))
            elif kind == "STOP":
                work.stop()
                say("STOP")
                return 0
    except (EOFError, OSError) as e:
        # The agent is gone: nobody can prove our lease is still valid. Stop leader work at
        # once, then exit (or reconnect, in a real app).
        work.stop()
        say("EOF")
        print("leader_app: %s" % e, file=sys.stderr)
        return 1
    except Signalled as e:
        # Closing the connection counts as stepping down for the agent.
        work.stop()
        say("EXIT signal=%s" % e)
        return 0
    finally:
        work.stop()
        conn.close()


if __name__ == "__main__":
    sys.exit(main())
