"""A connection to the leasekeeper agent: banner, HELLO (with the MAC when the agent wants
one), requests and events (proto/PROTOCOL.md). Not thread-safe: use one Client per thread."""

import collections
import logging
import os
import select
import socket

from .protocol import (MAX_LINE, AuthError, ConnectionClosed, LeaseKeeperError, ProtocolError,
                       RequestError, default_socket_path, load_key, mac_hex, monotonic,
                       parse_line)

__all__ = ["Client", "CLOCK_TOLERANCE_MS", "FALLBACK_FRACTION"]

log = logging.getLogger("leasekeeper")

# The banner's mono_ms and our own CLOCK_MONOTONIC may differ by this much (the time the banner
# took to reach us) for the two to count as one clock; otherwise deadlines are counted from
# each line's arrival: arrival + FALLBACK_FRACTION * ttl_ms.
CLOCK_TOLERANCE_MS = 1000
FALLBACK_FRACTION = 2.0 / 3.0


class Client:
    """One connection to the agent.

        c = Client(client_name="scheduler").connect()
        c.call("CAMPAIGN scheduler")          # -> Message "OK CAMPAIGN scheduler"
        while True:
            ev = c.next_event(timeout=1.0)    # None on timeout; ConnectionClosed at EOF

    The socket defaults to $LEASEKEEPER_SOCKET, then /run/leasekeeper/agent.sock. When the
    agent's banner says auth=hmac, the key is `auth_key` (32 bytes), else read from
    `auth_key_file`, else from the file named by $LEASEKEEPER_AUTH_KEY_FILE.

    After connect(): `identity` (the agent's), `agent_version`, `auth` ("none" or "hmac"),
    `agent_mono_ms` (the banner's mono_ms, None from an agent that does not send it),
    `clock_offset_ms` (our CLOCK_MONOTONIC minus the agent's at the banner's arrival) and
    `shares_clock` (whether deadlines in until_mono_ms can be used as they are).
    """

    def __init__(self, socket_path=None, client_name=None, auth_key=None, auth_key_file=None,
                 timeout=10.0):
        self.socket_path = socket_path or default_socket_path()
        self.client_name = client_name
        self.auth_key = auth_key
        self.auth_key_file = auth_key_file
        self.timeout = timeout
        self.sock = None
        self.identity = None
        self.agent_version = None
        self.auth = None
        self.nonce = None
        self.agent_mono_ms = None
        self.clock_offset_ms = None
        self.shares_clock = False
        self._buf = b""
        self._incoming = collections.deque()   # parsed lines not handed out yet
        self._events = collections.deque()     # events that arrived during call()
        self._pending = collections.deque()    # requests sent, replies not read yet
        self._failure = None                   # ConnectionClosed/ProtocolError once done
        self._closed = False

    # -- connection

    def connect(self):
        """Connect, read the banner, send HELLO and read its reply, all within `timeout`.
        Returns self. Raises AuthError (ERR auth_failed, or a MAC wanted and no key),
        ConnectionClosed (the agent refused us, e.g. ERR too_many_clients, or went away),
        ProtocolError (not a leasekeeper agent) or OSError (no socket, say)."""
        if self.sock is not None:
            raise LeaseKeeperError("already connected")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.settimeout(self.timeout)
            s.connect(self.socket_path)
        except OSError:
            s.close()
            raise
        self.sock = s
        try:
            self._handshake()
        except BaseException:
            self.close()
            raise
        return self

    def _handshake(self):
        banner = self._read_raw(self.timeout)
        if banner is None:
            raise ConnectionClosed("%s: no banner from the agent within %.1fs"
                                   % (self.socket_path, self.timeout))
        if banner.kind == "ERR":
            if banner.code == "auth_failed":
                raise AuthError("%s: the agent refused us: %s" % (self.socket_path, banner.raw))
            raise ConnectionClosed("%s: the agent refused us: %s"
                                   % (self.socket_path, banner.raw))
        if banner.kind != "LEASEKEEPER" or not banner.args:
            raise ProtocolError("%s: not a leasekeeper agent: %r" % (self.socket_path, banner.raw))
        if banner.args[0] != "1":
            raise ProtocolError("%s: unsupported protocol version %s"
                                % (self.socket_path, banner.args[0]))
        self.identity = banner.get("id")
        self.auth = banner.get("auth", "none")
        self.nonce = banner.get("nonce")
        mono = banner.get("mono_ms")
        if mono is not None:
            try:
                self.agent_mono_ms = int(mono)
            except ValueError:
                raise ProtocolError("bad mono_ms in the banner %r" % banner.raw) from None
            self.clock_offset_ms = banner.t * 1000.0 - self.agent_mono_ms
            self.shares_clock = abs(self.clock_offset_ms) <= CLOCK_TOLERANCE_MS
            if not self.shares_clock:
                log.warning("the agent's CLOCK_MONOTONIC differs from ours by %.0f ms: counting "
                            "deadlines from each line's arrival (2/3 of ttl_ms)",
                            self.clock_offset_ms)
        hello = "HELLO 1"
        if self.client_name:
            hello += " client=" + _word(self.client_name)
        if self.auth == "hmac":
            if self.nonce is None:
                raise ProtocolError("auth=hmac without a nonce in %r" % banner.raw)
            hello += " mac=" + mac_hex(self._key(), self.nonce)
        reply = self.call(hello, timeout=self.timeout)
        if not reply.ok:
            if reply.code == "auth_failed":
                raise AuthError("%s: the agent rejected our MAC: %s"
                                % (self.socket_path, reply.raw))
            raise ConnectionClosed("%s: HELLO refused: %s" % (self.socket_path, reply.raw))
        self.agent_version = reply.get("agent")
        self.identity = reply.get("id", self.identity)

    def _key(self):
        if self.auth_key is not None:
            return self.auth_key
        path = self.auth_key_file or os.environ.get("LEASEKEEPER_AUTH_KEY_FILE")
        if not path:
            raise AuthError("the agent requires authentication (auth=hmac): set "
                            "LEASEKEEPER_AUTH_KEY_FILE to its key file (or pass auth_key_file)")
        try:
            return load_key(path)
        except (OSError, ValueError) as e:
            raise AuthError("cannot read the auth key: %s" % e) from None

    def fileno(self):
        return self.sock.fileno()

    def close(self):
        if self.sock is not None and not self._closed:
            self._closed = True
            try:
                self.sock.close()
            except OSError:
                pass

    def __enter__(self):
        return self if self.sock is not None else self.connect()

    def __exit__(self, *exc):
        self.close()

    # -- deadlines (I8 in proto/PROTOCOL.md)

    def deadline_of(self, msg):
        """The CLOCK_MONOTONIC time in seconds (time.monotonic() on Linux) at which leader work
        must stop for a LEADER or RENEWED line, unless a later RENEWED moves it: its
        until_mono_ms when we share the agent's clock, else its arrival + 2/3 of ttl_ms.
        Never later than arrival + ttl_ms."""
        ttl_ms = msg.ms("ttl_ms")
        until_ms = msg.ms("until_mono_ms", required=False)
        latest = msg.t + ttl_ms / 1000.0
        if self.shares_clock and until_ms is not None:
            return min(until_ms / 1000.0, latest)
        return msg.t + FALLBACK_FRACTION * ttl_ms / 1000.0

    # -- sending

    def send_line(self, line):
        """Send one raw line (no reply bookkeeping: use request() or call() for requests)."""
        self._check_open()
        data = line.encode("ascii") + b"\n"
        if len(data) > MAX_LINE:
            raise ValueError("line longer than %d bytes" % MAX_LINE)
        try:
            self.sock.sendall(data)
        except OSError as e:
            self._fail(ConnectionClosed("sending to the agent: %s" % e))
            raise self._failure from None

    def request(self, line):
        """Send a request without waiting: its reply comes back from read_message() in
        order, with `reply.request` set to this line."""
        self.send_line(line)
        self._pending.append(line)

    def call(self, line, timeout=None):
        """Send a request and return its reply (OK or ERR: check `reply.ok`). Events that
        arrive meanwhile are kept for next_event()/read_message(); replies to earlier
        request()s too. Raises TimeoutError when no reply comes within `timeout` (default:
        the client's timeout)."""
        timeout = self.timeout if timeout is None else timeout
        self.request(line)
        mine = len(self._pending)
        deadline = monotonic() + timeout
        while True:
            m = self._read_raw(max(0.0, deadline - monotonic()))
            if m is None:
                raise TimeoutError("no reply to %r within %.1fs" % (line.split(" ")[0], timeout))
            if m.is_reply:
                m.request = self._pending.popleft() if self._pending else None
                mine -= 1
                if mine == 0:
                    return m
            self._events.append(m)

    def call_ok(self, line, timeout=None):
        """call(), raising RequestError for an ERR reply."""
        r = self.call(line, timeout)
        if not r.ok:
            raise RequestError(r, line.split(" ")[0])
        return r

    # -- receiving

    def has_queued(self):
        """Whether read_message() has a line to hand out without reading the socket."""
        return bool(self._events or self._incoming)

    def read_message(self, timeout=None, wake_fd=None):
        """The next event, or reply to a request(), in arrival order. None when nothing came
        within `timeout` seconds (None: wait for ever) or when `wake_fd` became readable.
        Raises ConnectionClosed at EOF and ProtocolError on a line that is not protocol
        (after every line that came before it)."""
        if self._events:
            return self._events.popleft()
        m = self._read_raw(timeout, wake_fd)
        if m is not None and m.is_reply:
            m.request = self._pending.popleft() if self._pending else None
        return m

    def next_event(self, timeout=None):
        """The next event (replies to request()s are dropped). None on timeout."""
        deadline = None if timeout is None else monotonic() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - monotonic())
            m = self.read_message(left)
            if m is None:
                return None
            if m.is_event:
                return m
            if deadline is not None and left <= 0:
                return None

    # -- internals

    def _check_open(self):
        if self._failure is not None:
            raise self._failure
        if self.sock is None or self._closed:
            raise ConnectionClosed("not connected")

    def _fail(self, exc):
        if self._failure is None:
            self._failure = exc

    def _read_raw(self, timeout, wake_fd=None):
        """The next parsed line from the socket (queued ones first)."""
        deadline = None if timeout is None else monotonic() + timeout
        while True:
            if self._incoming:
                return self._incoming.popleft()
            if self._failure is not None:
                raise self._failure
            if self.sock is None or self._closed:
                raise ConnectionClosed("not connected")
            left = None if deadline is None else max(0.0, deadline - monotonic())
            fds = [self.sock] if wake_fd is None else [self.sock, wake_fd]
            try:
                ready = select.select(fds, [], [], left)[0]
            except (OSError, ValueError) as e:
                self._fail(ConnectionClosed("waiting for the agent: %s" % e))
                continue
            if self.sock not in ready:
                if ready or (deadline is not None and monotonic() >= deadline):
                    return None  # woken up, or timed out
                continue
            try:
                data = self.sock.recv(65536)
            except (BlockingIOError, InterruptedError, socket.timeout):
                continue
            except OSError as e:
                self._fail(ConnectionClosed("reading from the agent: %s" % e))
                continue
            if not data:
                self._fail(ConnectionClosed("the agent closed the connection"))
                continue
            self._parse(data, monotonic())

    def _parse(self, data, t):
        self._buf += data
        while self._failure is None:
            nl = self._buf.find(b"\n")
            if nl < 0:
                if len(self._buf) >= MAX_LINE:
                    self._fail(ProtocolError("line over %d bytes from the agent" % MAX_LINE))
                return
            line, self._buf = self._buf[:nl], self._buf[nl + 1:]
            try:
                m = parse_line(line, t)
            except ProtocolError as e:
                self._fail(e)
                return
            if m is not None:
                self._incoming.append(m)


def _word(s):
    """A value usable as one attribute word: printable ASCII without spaces."""
    out = "".join(c if 0x21 <= ord(c) <= 0x7E else "_" for c in str(s))
    return out[:200] or "_"
