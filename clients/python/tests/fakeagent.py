"""A scripted stand-in for the leasekeeper agent's socket, for the library's unit tests.

The test drives every connection by hand: FakeAgent accepts connections on a Unix socket in a
temp dir, a FakeConn sends the banner, checks HELLO (and its MAC), and then sends whatever
lines the test wants and reads what the client sends, every line timestamped."""

import hashlib
import hmac
import os
import queue
import select
import socket
import threading
import time

NOW_MS = lambda: time.clock_gettime(time.CLOCK_MONOTONIC) * 1000.0  # noqa: E731


class FakeConn:
    def __init__(self, agent, sock):
        self.agent = agent
        self.sock = sock
        self.buf = b""
        self.nonce = os.urandom(32).hex()
        self.lines = []  # (t, line) read from the client

    def send(self, line):
        self.sock.sendall(line.encode("ascii") + b"\n")

    def send_raw(self, data):
        self.sock.sendall(data)

    def read_line(self, timeout=5.0):
        """The next line from the client (str); None on timeout; EOFError at EOF."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.sock], [], [], left)[0]:
                return None
            data = self.sock.recv(65536)
            if not data:
                raise EOFError("client closed")
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        text = line.decode("ascii")
        self.lines.append((time.monotonic(), text))
        return text

    def expect(self, prefix, timeout=5.0):
        line = self.read_line(timeout)
        if line is None or not line.startswith(prefix):
            raise AssertionError("expected %r from the client, got %r" % (prefix, line))
        return line

    def expect_eof(self, timeout=5.0):
        try:
            line = self.read_line(timeout)
        except (EOFError, ConnectionResetError):
            return True
        raise AssertionError("expected EOF from the client, got %r" % (line,))

    def banner(self, mono_ms="now", auth=None):
        a = self.agent
        auth = auth or ("hmac" if a.key else "none")
        line = "LEASEKEEPER 1 id=%s nonce=%s auth=%s" % (a.identity, self.nonce, auth)
        if mono_ms == "now":
            line += " mono_ms=%d" % int(NOW_MS() + a.mono_offset_ms)
        elif mono_ms is not None:
            line += " mono_ms=%d" % mono_ms
        self.send(line)

    def handshake(self, lock="x", campaign=True, mono_ms="now"):
        """Banner, HELLO (checking the MAC when the agent has a key), OK HELLO, then CAMPAIGN
        <lock> and its OK. Returns the HELLO line."""
        self.banner(mono_ms)
        hello = self.expect("HELLO 1")
        if self.agent.key is not None:
            want = hmac.new(self.agent.key, bytes.fromhex(self.nonce),
                            hashlib.sha512).digest()[:32].hex()
            words = dict(w.split("=", 1) for w in hello.split() if "=" in w)
            if words.get("mac") != want:
                self.send("ERR auth_failed bad mac")
                self.close()
                raise AssertionError("bad mac in %r" % hello)
        self.send("OK HELLO 1 agent=0.0-fake id=%s" % self.agent.identity)
        if campaign:
            self.expect("CAMPAIGN %s" % lock)
            self.send("OK CAMPAIGN %s" % lock)
        return hello

    def until(self, ms_from_now):
        """until_mono_ms for a deadline ms_from_now from now, on the agent's clock."""
        return int(NOW_MS() + self.agent.mono_offset_ms + ms_from_now)

    def leader(self, token, ttl_ms=3000, in_ms=None, lock="x", extra=""):
        """LEADER with until_mono_ms in_ms from now (default 2/3 of ttl_ms)."""
        in_ms = ttl_ms * 2 // 3 if in_ms is None else in_ms
        self.send("LEADER %s token=%d ttl_ms=%d until_mono_ms=%d%s"
                  % (lock, token, ttl_ms, self.until(in_ms), extra))

    def renewed(self, token, ttl_ms=3000, in_ms=None, lock="x"):
        in_ms = ttl_ms * 2 // 3 if in_ms is None else in_ms
        self.send("RENEWED %s token=%d ttl_ms=%d until_mono_ms=%d"
                  % (lock, token, ttl_ms, self.until(in_ms)))

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


class FakeAgent:
    def __init__(self, tmpdir, identity="pod-a", key=None, mono_offset_ms=0):
        self.identity = identity
        self.key = key
        self.mono_offset_ms = mono_offset_ms
        self.path = os.path.join(tmpdir, "agent.sock")
        self.lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.lsock.bind(self.path)
        self.lsock.listen(16)
        self.conns = queue.Queue()
        self.all = []
        self._stop = False
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while not self._stop:
            try:
                r = select.select([self.lsock], [], [], 0.1)[0]
                if not r:
                    continue
                s, _ = self.lsock.accept()
            except OSError:
                return
            c = FakeConn(self, s)
            self.all.append(c)
            self.conns.put(c)

    def accept(self, timeout=5.0):
        try:
            return self.conns.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("no connection from the client within %.1fs" % timeout)

    def close(self):
        self._stop = True
        self.thread.join(2)
        self.lsock.close()
        for c in self.all:
            c.close()
