"""Lines of the leasekeeper socket protocol (proto/PROTOCOL.md), with no I/O.

A line is printable ASCII ending in "\\n" (a "\\r" before it is dropped), at most 4096 bytes
with the newline; words are separated by runs of spaces; a word "key=value" is an attribute
(split at its first "="), any other word after the first is positional.
"""

import hashlib
import hmac
import os
import re
import time

__all__ = [
    "MAX_LINE", "DEFAULT_SOCKET", "LeaseKeeperError", "ProtocolError", "ConnectionClosed",
    "AuthError", "RequestError", "Message", "parse_line", "load_key", "mac_hex",
    "default_socket_path", "monotonic", "monotonic_ms", "valid_lock_name",
]

MAX_LINE = 4096  # the longest line, newline included
DEFAULT_SOCKET = "/run/leasekeeper/agent.sock"
MAX_TOKEN = 2 ** 64

_LOCK_RE = re.compile(r"[A-Za-z0-9._-]{1,128}\Z")
_DECIMAL_RE = re.compile(r"[0-9]{1,20}\Z")
_PRINTABLE = bytes(range(0x20, 0x7F))


class LeaseKeeperError(Exception):
    """Base class of this library's errors."""


class ProtocolError(LeaseKeeperError):
    """The agent sent something this client cannot trust (not protocol, an over-long line, a
    known event with missing or malformed attributes). The connection is done: treat it like
    EOF (stop leader work at once) and reconnect."""


class ConnectionClosed(LeaseKeeperError, ConnectionError):
    """EOF from the agent, or the connection failed: stop leader work at once."""


class AuthError(LeaseKeeperError):
    """The agent refused our MAC (ERR auth_failed), or wants one and no key is configured.
    Retrying with the same key cannot help."""


class RequestError(LeaseKeeperError):
    """The agent answered a request with ERR. `.code` is the error code, `.reply` the
    Message."""

    def __init__(self, reply, request=None):
        self.reply = reply
        self.code = reply.code
        self.request = request
        text = reply.raw if request is None else "%s: %s" % (request, reply.raw)
        super().__init__(text)


def monotonic():
    """CLOCK_MONOTONIC in seconds: the clock of the agent's until_mono_ms (divided by 1000).
    On Linux this is also what time.monotonic() reads."""
    return time.clock_gettime(time.CLOCK_MONOTONIC)


if not hasattr(time, "clock_gettime") or not hasattr(time, "CLOCK_MONOTONIC"):  # not POSIX
    monotonic = time.monotonic  # noqa: F811


def monotonic_ms():
    """CLOCK_MONOTONIC in milliseconds (a float)."""
    return monotonic() * 1000.0


def valid_lock_name(name):
    return isinstance(name, str) and _LOCK_RE.match(name) is not None


def parse_token(text):
    """A token: an unsigned 64-bit decimal number. ValueError otherwise."""
    if text is None or not _DECIMAL_RE.match(text) or int(text) >= MAX_TOKEN:
        raise ValueError("not a token: %r" % (text,))
    return int(text)


def parse_ms(text):
    """A non-negative decimal number of milliseconds. ValueError otherwise."""
    if text is None or not _DECIMAL_RE.match(text):
        raise ValueError("not a number of milliseconds: %r" % (text,))
    return int(text)


class Message:
    """One line from the agent.

    kind    the first word: an event (LEADER, RENEWED, ...), OK, ERR or LEASEKEEPER (banner)
    args    the positional words after the first (for OK: the verb first, then the rest)
    attrs   the key=value words, as a dict of strings
    raw     the line without its newline
    t       time.monotonic() when the line arrived (its last byte was read)
    request for a reply: the request line it answers (set by Client), else None
    """

    __slots__ = ("raw", "kind", "args", "attrs", "t", "request")

    def __init__(self, raw, kind, args, attrs, t):
        self.raw, self.kind, self.args, self.attrs, self.t = raw, kind, args, attrs, t
        self.request = None

    @property
    def is_reply(self):
        return self.kind in ("OK", "ERR")

    @property
    def is_event(self):
        return not self.is_reply and self.kind != "LEASEKEEPER"

    @property
    def ok(self):
        return self.kind == "OK"

    @property
    def verb(self):
        """OK <VERB> ...: the verb a reply answers (None for ERR, whose verb is implied by
        the order of requests)."""
        return self.args[0] if self.kind == "OK" and self.args else None

    @property
    def code(self):
        """ERR <code> ...: the error code."""
        return self.args[0] if self.kind == "ERR" and self.args else None

    @property
    def lock(self):
        """The lock of a lock event (LEADER, RENEWED, FOLLOWER, STEPDOWN, LOST, RELEASED)."""
        if self.kind in ("OK", "ERR"):
            return self.args[1] if len(self.args) > 1 else None
        return self.args[0] if self.args else None

    def get(self, key, default=None):
        return self.attrs.get(key, default)

    def __getitem__(self, key):
        return self.attrs[key]

    def token(self):
        """The token= attribute as an int (ProtocolError if missing or malformed)."""
        try:
            return parse_token(self.attrs.get("token"))
        except ValueError:
            raise ProtocolError("bad or missing token in %r" % self.raw) from None

    def ms(self, key, required=True):
        """A millisecond attribute as an int; None if absent and not required."""
        v = self.attrs.get(key)
        if v is None and not required:
            return None
        try:
            return parse_ms(v)
        except ValueError:
            raise ProtocolError("bad or missing %s in %r" % (key, self.raw)) from None

    def __repr__(self):
        return "Message(%r)" % self.raw


def parse_line(data, t=None):
    """Parse one line (bytes, without its "\\n"; a trailing "\\r" is dropped) into a Message.
    Returns None for an empty line. Raises ProtocolError for bytes outside 0x20-0x7e, a line
    over MAX_LINE or an attribute given twice."""
    if data.endswith(b"\r"):
        data = data[:-1]
    if len(data) >= MAX_LINE:
        raise ProtocolError("line of %d bytes from the agent (at most %d)"
                            % (len(data) + 1, MAX_LINE))
    if data.translate(None, _PRINTABLE):
        raise ProtocolError("non-printable bytes in a line from the agent: %r" % data[:200])
    raw = data.decode("ascii")
    words = raw.split()
    if not words:
        return None
    args, attrs = [], {}
    for w in words[1:]:
        if "=" in w:
            k, v = w.split("=", 1)
            if k in attrs:
                raise ProtocolError("attribute %s given twice in %r" % (k, raw))
            attrs[k] = v
        else:
            args.append(w)
    return Message(raw, words[0], args, attrs, monotonic() if t is None else t)


def load_key(path):
    """The 32-byte key in a key file: exactly 32 raw bytes, or 64 hex digits with optional
    whitespace around them. ValueError otherwise."""
    with open(path, "rb") as f:
        data = f.read(4097)
    if len(data) == 32:
        return data
    text = data.strip()
    if len(text) != 64:
        raise ValueError("%s: expected 32 raw bytes or 64 hex digits" % path)
    try:
        return bytes.fromhex(text.decode("ascii"))
    except ValueError:
        raise ValueError("%s: expected 32 raw bytes or 64 hex digits" % path) from None


def mac_hex(key, nonce_hex):
    """HELLO's mac: HMAC-SHA-512 of the 32 nonce bytes, truncated to 32 bytes (libsodium's
    crypto_auth, HMAC-SHA-512-256), as 64 lower-case hex digits."""
    if len(key) != 32:
        raise ValueError("the key must be 32 bytes, not %d" % len(key))
    nonce = bytes.fromhex(nonce_hex)
    if len(nonce) != 32:
        raise ValueError("the nonce must be 32 bytes, not %d" % len(nonce))
    return hmac.new(key, nonce, hashlib.sha512).digest()[:32].hex()


def default_socket_path():
    """$LEASEKEEPER_SOCKET, else /run/leasekeeper/agent.sock."""
    return os.environ.get("LEASEKEEPER_SOCKET") or DEFAULT_SOCKET
