"""Loopback TCP for the test suites: a listening socket served by a thread (Listener), and a
relay built on it (Relay) that forwards every connection to an upstream, chunk by chunk, with
hooks to delay or drop each chunk. harness.TcpProxy (integration tests: dropped replies,
delays, failover) and net.ChaosProxy (chaos suite: delay, loss, blackhole) are Relays; the
chaos suite's fenced store is a Listener."""

import socket
import threading
import time
from collections import deque


def listen(host="127.0.0.1", port=0, backlog=64):
    """A listening TCP socket whose accept() times out every 0.2 s (so a loop can stop)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, port))
    s.listen(backlog)
    s.settimeout(0.2)
    return s


def close_socket(s):
    """Shut a socket down both ways and close it; a socket already gone is no error."""
    if s is None:
        return
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        s.close()
    except OSError:
        pass


class Listener:
    """A listening socket (host, port: the address it got) and a thread that accepts on it
    once start_accepting() is called: on_accept(conn) runs in that thread for each connection,
    in blocking mode; it starts a thread of its own for anything that takes time."""

    def __init__(self, host="127.0.0.1", port=0, name="accept"):
        self.lsock = listen(host, port)
        self.host, self.port = self.lsock.getsockname()[:2]
        self.closed = False
        self._threads = []
        self._accept_thread = threading.Thread(target=self._accept_loop, name=name,
                                               daemon=True)

    @property
    def address(self):
        return "%s:%d" % (self.host, self.port)

    def start_accepting(self):
        self._accept_thread.start()
        return self

    def spawn(self, target, *args, name=None):
        """A daemon thread, remembered so that close() can wait for it."""
        t = threading.Thread(target=target, args=args, name=name, daemon=True)
        t.start()
        self._threads = [x for x in self._threads if x.is_alive()] + [t]
        return t

    def _accept_loop(self):
        while not self.closed:
            try:
                c, _ = self.lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                break
            c.settimeout(None)
            self.on_accept(c)

    def on_accept(self, conn):
        raise NotImplementedError

    def stop_accepting(self):
        """No more connections: the listening socket is closed."""
        self.closed = True
        try:
            self.lsock.close()
        except OSError:
            pass

    def join(self, timeout=2.0):
        """Wait (at most timeout seconds in all) for the accept thread and every thread
        spawn() started."""
        deadline = time.monotonic() + timeout
        for t in [self._accept_thread] + self._threads:
            if t.is_alive() and t is not threading.current_thread():
                t.join(timeout=max(0.0, deadline - time.monotonic()))


class Relay(Listener):
    """A TCP forwarder: every accepted connection gets one to upstream_target() (connected
    within connect_timeout, or the client is closed), and each chunk read on either side is
    passed to due(direction, data), direction "c2s" or "s2c": None drops the chunk, a
    time.monotonic() value is when it may go (at once if it has passed). Order holds in each
    direction: once a chunk has waited, later ones queue behind it. A connection whose
    upstream_target() is None is read and discarded (a silent peer). When either side closes,
    what was queued still goes out, late, then both close.

    kill_all(): close every current connection (new ones are still accepted); connections():
    how many are open; accepted: how many were made."""

    connect_timeout = 5.0

    def __init__(self, upstream, host="127.0.0.1", port=0, name="relay"):
        super().__init__(host, port, name=name + "-accept")
        self.name = name
        self.upstream = upstream
        self.accepted = 0
        self._pairs = set()
        self._lock = threading.Lock()

    # -- hooks

    def upstream_target(self):
        return self.upstream

    def due(self, direction, data):
        return 0.0

    def deliverable(self):
        """Checked again when a queued chunk's time comes (False: it is dropped then)."""
        return True

    def connected(self, client, up):
        """Called under the relay's lock for each new connection."""

    def sent(self, direction, n):
        """n bytes went out in direction."""

    # -- the relay

    def on_accept(self, c):
        target = self.upstream_target()
        u = None
        if target is not None:
            try:
                u = socket.create_connection(target, timeout=self.connect_timeout)
                u.settimeout(None)
            except OSError:
                c.close()
                return
        pair = (c, u)
        with self._lock:
            if self.closed:
                close_socket(c)
                close_socket(u)
                return
            self._pairs.add(pair)
            self.accepted += 1
            self.connected(c, u)
        if u is None:
            self.spawn(self._sink, pair, name=self.name + "-sink")
            return
        for s in (c, u):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for src, dst, d in ((c, u, "c2s"), (u, c, "s2c")):
            self.spawn(self._pump, pair, src, dst, d, name=self.name + "-" + d)

    def _sink(self, pair):
        try:
            while pair[0].recv(65536):
                pass
        except OSError:
            pass
        self._close_pair(pair)

    def _pump(self, pair, src, dst, direction):
        later = None     # (deque, condition) once a chunk had to wait: order must hold
        last_due = 0.0
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                due = self.due(direction, data)
                if due is None:
                    continue
                if later is None and due > time.monotonic():
                    later = (deque(), threading.Condition())
                    self.spawn(self._send_later, pair, dst, direction, later,
                               name=self.name + "-later-" + direction)
                if later is not None:
                    last_due = due = max(due, last_due)
                    with later[1]:
                        later[0].append((due, data))
                        later[1].notify()
                    continue
                dst.sendall(data)
                self.sent(direction, len(data))
        except OSError:
            pass
        if later is not None:
            with later[1]:
                later[0].append((None, None))
                later[1].notify()
            return
        self._close_pair(pair)

    def _send_later(self, pair, dst, direction, later):
        q, cond = later
        try:
            while True:
                with cond:
                    while not q:
                        cond.wait()
                    due, data = q.popleft()
                if data is None:
                    break
                wait = due - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                if not self.deliverable():
                    continue
                dst.sendall(data)
                self.sent(direction, len(data))
        except OSError:
            pass
        self._close_pair(pair)

    def _close_pair(self, pair):
        with self._lock:
            self._pairs.discard(pair)
        for s in pair:
            close_socket(s)

    def connections(self):
        with self._lock:
            return len(self._pairs)

    def kill_all(self):
        with self._lock:
            pairs = list(self._pairs)
        for p in pairs:
            self._close_pair(p)

    def close(self):
        self.stop_accepting()
        self.kill_all()
        self.join()
