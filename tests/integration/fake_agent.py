#!/usr/bin/env python3
"""A stand-in for the `leasekeeper` binary, written from proto/PROTOCOL.md and the README, for checking the integration
tests themselves while (or whenever) the C agent cannot run:

    LK_BIN=tests/integration/fake_agent.py python3 tests/integration/run.py

It is a test double, not a reference implementation: threads and blocking Redis calls with
timeouts instead of one event loop, only the config subset the tests use, Redis backends only.
When a scenario fails against the C agent but passes here, read the test and the SPEC, not this
file, to decide who is right.
"""

import hashlib
import hmac
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

VERSION = "0.0-fake"
LINE_MAX = 4096
MAX_CLIENTS = 128
OUT_QUEUE_MAX = 1 << 20  # bytes queued for one client before it is dropped
LOCK_NAME_RE = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
DEFAULT_SOCKET = "/run/leasekeeper/agent.sock"
# Deliberate bugs, to check that the scenarios catch them (mutation testing of the tests):
# FAKE_BUGS=no_ack_gate,release_on_timeout,no_publish,blind_delete,late_lost,no_seed,
#           keep_on_disconnect,no_stop,drain_twice
BUGS = set(filter(None, os.environ.get("FAKE_BUGS", "").split(",")))


def mono():
    return time.monotonic()


# ---------------------------------------------------------------------------------------------
# durations and config

_UNITS = {"ns": 1e-6, "us": 1e-3, "µs": 1e-3, "ms": 1, "s": 1000, "m": 60000, "h": 3600000}


def parse_duration(s):
    s = str(s).strip()
    if s == "0":
        return 0
    if not s:
        raise ValueError("is empty")
    parts = re.findall(r"([0-9]+(?:\.[0-9]+)?)(ns|us|µs|ms|s|m|h)?", s)
    if "".join(n + (u or "") for n, u in parts) != s:
        raise ValueError("%s is not a duration" % json.dumps(s))
    total = 0.0
    for n, u in parts:
        if not u:
            raise ValueError("%s has no unit" % json.dumps(s))
        total += float(n) * _UNITS[u]
    return int(total)


class Node:
    def __init__(self, value, line, col, kcol=None):
        self.value, self.line, self.col, self.kcol = value, line, col, kcol or col


def _scalar(text, line, col):
    t = text.strip()
    if t.startswith('"'):
        return Node(json.loads(t), line, col)
    if t.startswith("'"):
        return Node(t[1:-1].replace("''", "'"), line, col)
    if t.startswith("["):
        items = [x.strip() for x in t[1:-1].split(",") if x.strip()]
        return Node([_scalar(x, line, col) for x in items], line, col)
    return Node(t, line, col)


def _strip_comment(s):
    out, q = [], None
    for i, c in enumerate(s):
        if q:
            if c == q:
                q = None
        elif c in "\"'":
            q = c
        elif c == "#" and (i == 0 or s[i - 1] in " \t"):
            break
        out.append(c)
    return "".join(out).rstrip()


def parse_yaml(text):
    """The block-style subset: mappings, lists of mappings, flow lists, scalars; with marks."""
    lines = []
    for no, raw in enumerate(text.splitlines(), 1):
        s = _strip_comment(raw)
        if s.strip():
            ind = len(s) - len(s.lstrip(" "))
            lines.append([no, ind, s.strip()])
    pos = [0]

    def block(indent):
        if lines[pos[0]][2].startswith("- ") or lines[pos[0]][2] == "-":
            return seq(indent)
        return mapping(indent)

    def mapping(indent):
        d, first = {}, lines[pos[0]]
        while pos[0] < len(lines) and lines[pos[0]][1] == indent \
                and not lines[pos[0]][2].startswith("- "):
            no, ind, s = lines[pos[0]]
            m = re.match(r"^([^:]+):(?:\s+(.*))?$", s)
            if not m:
                raise ValueError("%d:%d: expected key: value" % (no, ind + 1))
            k, rest = m.group(1).strip(), m.group(2)
            pos[0] += 1
            if rest is None or rest == "":
                if pos[0] < len(lines) and lines[pos[0]][1] > indent:
                    v = block(lines[pos[0]][1])
                    v.kcol = ind + 1
                    v.line_of_key = no
                    d[k] = v
                elif pos[0] < len(lines) and lines[pos[0]][1] == indent \
                        and lines[pos[0]][2].startswith("- "):
                    v = block(indent)
                    v.kcol = ind + 1
                    d[k] = v
                else:
                    d[k] = Node(None, no, ind + 1)
            else:
                n = _scalar(rest, no, s.index(rest, len(k)) + ind + 1)
                n.kcol = ind + 1
                d[k] = n
        return Node(d, first[0], first[1] + 1)

    def seq(indent):
        items, first = [], lines[pos[0]]
        while pos[0] < len(lines) and lines[pos[0]][1] == indent \
                and lines[pos[0]][2].startswith("- "):
            no, ind, s = lines[pos[0]]
            lines[pos[0]] = [no, ind + 2, s[2:].strip()]
            items.append(block(ind + 2))
        return Node(items, first[0], first[1] + 1)

    if not lines:
        return Node({}, 1, 1)
    root = block(lines[0][1])
    if pos[0] != len(lines):
        no, ind, _ = lines[pos[0]]
        raise ValueError("%d:%d: unexpected indentation" % (no, ind + 1))
    return root


def _expand(s):
    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", lambda m: os.environ.get(m.group(1), ""), s)


def load_config(path):
    """Returns (config dict, errors list)."""
    errs = []
    try:
        text = open(path).read()
    except OSError as e:
        return None, ["%s: %s" % (path, e.strerror)]
    try:
        root = parse_yaml(text)
    except ValueError as e:
        return None, ["%s:%s" % (path, e)]
    if not isinstance(root.value, dict):
        return None, ["%s:1:1: top level must be a mapping" % path]

    def err(node, field, msg, key=False):
        errs.append("%s:%d:%d: %s: %s" % (path, node.line, node.kcol if key else node.col,
                                         field, msg))

    def s(node):
        return _expand(str(node.value)) if node.value is not None else ""

    top = root.value
    cfg = {"identity": os.environ.get("HOSTNAME") or socket.gethostname(),
           "socket": DEFAULT_SOCKET, "socket_mode": 0o660, "http_listen": "127.0.0.1:9440",
           "log_format": "text", "shutdown_timeout": 25000, "auth_key_file": None,
           "backends": [], "locks": []}
    known = {"identity", "socket", "socket_mode", "http_listen", "log_format",
             "shutdown_timeout", "auth_key_file", "backends", "locks"}
    for k, n in top.items():
        if k not in known:
            err(n, k, "unknown field", key=True)
        elif k == "shutdown_timeout":
            try:
                cfg[k] = parse_duration(s(n))
            except ValueError as e:
                err(n, k, str(e))
        elif k == "socket_mode":
            try:
                cfg[k] = int(s(n), 8)
            except ValueError:
                err(n, k, "not an octal mode")
        elif k == "log_format":
            if s(n) not in ("json", "text"):
                err(n, k, "must be json or text")
            cfg[k] = s(n)
        elif k == "auth_key_file":
            cfg[k] = s(n)
            if not os.access(cfg[k], os.R_OK):
                err(n, k, "cannot read %s" % cfg[k])
        elif k in ("backends", "locks"):
            pass
        else:
            cfg[k] = s(n)
    bnames = {}
    bnode = top.get("backends")
    for i, b in enumerate(bnode.value if bnode and isinstance(bnode.value, list) else []):
        f = "backends[%d]" % i
        d = {"name": None, "type": "redis", "address": "127.0.0.1:6379", "timeout": 500}
        for k, n in (b.value or {}).items():
            if k not in ("name", "type", "address", "timeout", "password_file", "endpoints",
                         "username", "ca_file", "cert_file", "key_file"):
                err(n, "%s.%s" % (f, k), "unknown field", key=True)
            elif k == "timeout":
                try:
                    d[k] = parse_duration(s(n))
                except ValueError as e:
                    err(n, "%s.%s" % (f, k), str(e))
            elif k == "endpoints":
                d[k] = [s(x) for x in n.value]
            else:
                d[k] = s(n)
        if not d["name"]:
            err(b, f + ".name", "missing")
        bnames[d["name"]] = d
        cfg["backends"].append(d)
    lnode = top.get("locks")
    names = set()
    for i, l in enumerate(lnode.value if lnode and isinstance(lnode.value, list) else []):
        f = "locks[%d]" % i
        d = {"name": None, "backend": None, "key": None, "ttl": 10000, "renew_interval": None,
             "renew_deadline": None, "retry_interval": 1000, "stepdown_timeout": 5000,
             "release_timeout": 3000, "campaign": "when_app_connected"}
        for k, n in (l.value or {}).items():
            if k not in d:
                err(n, "%s.%s" % (f, k), "unknown field", key=True)
            elif k in ("ttl", "renew_interval", "renew_deadline", "retry_interval",
                       "stepdown_timeout", "release_timeout"):
                try:
                    d[k] = parse_duration(s(n))
                except ValueError as e:
                    err(n, "%s.%s" % (f, k), str(e))
            elif k == "backend":
                d[k] = s(n)
                if d[k] not in bnames:
                    err(n, "%s.%s" % (f, k), "no backend named %s" % json.dumps(d[k]))
            elif k == "campaign":
                d[k] = s(n)
                if d[k] not in ("when_app_connected", "always"):
                    err(n, "%s.%s" % (f, k), "must be when_app_connected or always")
            else:
                d[k] = s(n)
        if not d["name"] or not LOCK_NAME_RE.match(d["name"]):
            err(l, f + ".name", "missing or invalid")
        elif d["name"] in names:
            err(l, f + ".name", "duplicate")
        names.add(d["name"])
        if d["backend"] is None and len(bnames) == 1:
            d["backend"] = next(iter(bnames))
        d["key"] = d["key"] or "leasekeeper/%s" % d["name"]
        d["renew_interval"] = d["renew_interval"] or d["ttl"] // 3
        d["renew_deadline"] = d["renew_deadline"] or 2 * d["ttl"] // 3
        if "late_lost" in BUGS:
            d["renew_deadline"] = d["ttl"] + 1000
        cfg["locks"].append(d)
    return cfg, errs


# ---------------------------------------------------------------------------------------------
# logging

LOG_FORMAT = "text"
_log_lock = threading.Lock()


def log(level, msg, **fields):
    ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + ".%03dZ" % (time.time() % 1 * 1000)
    with _log_lock:
        if LOG_FORMAT == "json":
            d = {"ts": ts, "level": level, "msg": msg}
            d.update(fields)
            sys.stderr.write(json.dumps(d) + "\n")
        else:
            sys.stderr.write("%s %-5s %s %s\n" % (ts, level, json.dumps(msg), " ".join(
                "%s=%s" % (k, v) for k, v in fields.items())))
        sys.stderr.flush()


# ---------------------------------------------------------------------------------------------
# Redis

def _mutate_scripts():
    global ACQUIRE, RELEASE
    if "no_seed" in BUGS:
        ACQUIRE = ACQUIRE.replace("if redis.call('EXISTS', KEYS[2]) == 0 then", "if false then")
    if "no_publish" in BUGS:
        RELEASE = RELEASE.replace("redis.call('PUBLISH'", "-- redis.call('PUBLISH'")
    if "blind_delete" in BUGS:
        RELEASE = "redis.call('DEL', KEYS[1]) return 1"


class RedisError(Exception):
    pass


def _enc(args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        b = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


class Redis:
    """Blocking, with a timeout per request; any transport error closes the connection."""

    def __init__(self, address, timeout_ms):
        host, _, port = address.rpartition(":")
        self.addr = (host or "127.0.0.1", int(port))
        self.timeout = timeout_ms / 1000.0
        self.sock, self.f = None, None

    def close(self):
        if self.sock:
            try:
                self.sock.close()
            except OSError:
                pass
        self.sock, self.f = None, None

    def call(self, *args):
        try:
            if self.sock is None:
                self.sock = socket.create_connection(self.addr, timeout=self.timeout)
                self.f = self.sock.makefile("rb")
            self.sock.settimeout(self.timeout)
            self.sock.sendall(_enc(args))
            return self._read()
        except (OSError, EOFError, ValueError) as e:
            self.close()
            raise ConnectionError(str(e) or e.__class__.__name__)

    def _read(self):
        line = self.f.readline()
        if not line:
            raise EOFError("redis closed the connection")
        t, rest = line[:1], line[1:-2]
        if t == b"+":
            return rest.decode()
        if t == b"-":
            raise RedisError(rest.decode())
        if t == b":":
            return int(rest)
        if t == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.f.read(n + 2)
            return data[:-2].decode()
        if t == b"*":
            n = int(rest)
            return None if n < 0 else [self._read() for _ in range(n)]
        raise ValueError("bad reply")


ACQUIRE = """
local cur = redis.call('GET', KEYS[1])
if cur then return {0, cur} end
if redis.call('EXISTS', KEYS[2]) == 0 then
  local t = redis.call('TIME')
  redis.call('SET', KEYS[2], t[1] .. string.format('%06d', tonumber(t[2])))
end
local tok = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. ':' .. string.format('%d', tok), 'PX', ARGV[2])
return {1, tok}
"""

RENEW = """
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
if cur then return cur end
return 0
"""

RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', KEYS[1] .. ':released', ARGV[1])
  return 1
end
return 0
"""


# ---------------------------------------------------------------------------------------------
# the agent

G = threading.Condition(threading.RLock())

IDLE, FOLLOWER, LEADER, STEPPING_DOWN, RELEASING, DONE = (
    "idle", "follower", "leader", "stepping_down", "releasing", "done")


class Client:
    def __init__(self, agent, sock):
        self.agent, self.sock = agent, sock
        self.hello = False
        self.watches = set()
        self.out = []
        self.out_bytes = 0
        self.cv = threading.Condition()
        self.closing = False
        self.dead = False
        self.nonce = os.urandom(32)

    def send(self, line):
        with self.cv:
            if self.dead or self.closing:
                return
            b = (line + "\n").encode()
            if self.out_bytes + len(b) > OUT_QUEUE_MAX:
                self.dead = True
                try:
                    self.sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                self.cv.notify_all()
                return
            self.out.append(b)
            self.out_bytes += len(b)
            self.cv.notify_all()

    def close_after_flush(self):
        with self.cv:
            self.closing = True
            self.cv.notify_all()

    def writer(self):
        while True:
            with self.cv:
                while not self.out and not self.closing and not self.dead:
                    self.cv.wait()
                if self.dead:
                    break
                if not self.out and self.closing:
                    break
                data = b"".join(self.out)
                self.out, self.out_bytes = [], 0
            try:
                self.sock.sendall(data)
            except OSError:
                break
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.dead = True
        self.agent.client_gone(self)

    def reader(self):
        buf = b""
        try:
            while not self.closing and not self.dead:
                data = self.sock.recv(65536)
                if not data:
                    break
                buf += data
                while b"\n" in buf and not self.closing:
                    line, buf = buf.split(b"\n", 1)
                    if len(line) + 1 > LINE_MAX:
                        self.fail("line_too_long", "line longer than 4096 bytes")
                        return
                    if line.endswith(b"\r"):
                        line = line[:-1]
                    self.agent.handle(self, line)
                if len(buf) >= LINE_MAX:
                    self.fail("line_too_long", "line longer than 4096 bytes")
                    return
        except OSError:
            pass
        self.agent.client_gone(self)
        self.close_after_flush()

    def fail(self, code, text):
        self.send("ERR %s %s" % (code, text))
        self.close_after_flush()
        self.agent.client_gone(self)


class Lock:
    def __init__(self, agent, cfg):
        self.agent, self.cfg = agent, cfg
        self.name = cfg["name"]
        self.key = cfg["key"]
        b = agent.backends[cfg["backend"]]
        self.backend = b
        self.redis = Redis(b["address"], b["timeout"])
        self.state = IDLE
        self.token = 0
        self.holder = "-"
        self.emitted_holder = None
        self.campaigners = set()
        self.acked = set()
        self.sent = 0.0
        self.deadline = 0.0
        self.next_renew = 0.0
        self.next_attempt = 0.0
        self.stepdown_deadline = 0.0
        self.notified = False
        self.outcome = None
        self.always = cfg["campaign"] == "always" or "keep_on_disconnect" in BUGS
        self.drain_release = False
        self.stepdown_started = 0.0

    # -- called with G held

    def targets(self):
        return set(self.campaigners) | {c for c in self.agent.clients
                                        if "*" in c.watches or self.name in c.watches}

    def emit(self, line):
        for c in self.targets():
            c.send(line)

    def current_event(self):
        now = mono()
        if self.state == LEADER and now < self.deadline:
            return "LEADER %s token=%d ttl_ms=%d" % (self.name, self.token,
                                                     int((self.sent + self.cfg["ttl"] / 1000.0
                                                          - now) * 1000))
        if self.state == STEPPING_DOWN:
            return "STEPDOWN %s token=%d deadline_ms=%d" % (
                self.name, self.token, max(0, int((self.stepdown_deadline - now) * 1000)))
        return "FOLLOWER %s holder=%s" % (self.name, self.holder if self.state == FOLLOWER
                                          else "-")

    def wants(self):
        return self.always or bool(self.campaigners)

    def add_campaigner(self, c):
        self.campaigners.add(c)
        if self.state == IDLE:
            self.state = FOLLOWER
            self.next_attempt = 0
        c.send(self.current_event())
        G.notify_all()

    def leave(self, c):
        self.campaigners.discard(c)
        self.acked.discard(c)
        G.notify_all()

    def ack(self, c, token):
        if token != self.token or self.token == 0:
            return False
        if self.state == STEPPING_DOWN:
            self.acked.add(c)
            G.notify_all()
        return True

    def start_drain(self):
        if self.state == STEPPING_DOWN and "drain_twice" in BUGS:
            self.emit("STEPDOWN %s token=%d deadline_ms=%d" % (self.name, self.token, 1))
        if self.state == LEADER:
            self.state = STEPPING_DOWN
            self.acked = set()
            sd = self.cfg["stepdown_timeout"]
            self.stepdown_started = mono()
            self.stepdown_deadline = mono() + sd / 1000.0
            self.emit("STEPDOWN %s token=%d deadline_ms=%d" % (self.name, self.token, sd))
        G.notify_all()

    def settle(self, outcome):
        self.state = DONE
        self.outcome = outcome
        if outcome:
            self.emit("RELEASED %s token=%d outcome=%s" % (self.name, self.token, outcome))
            log("info", "lock released", lock=self.name, token=self.token, outcome=outcome)
        G.notify_all()

    def lost(self, reason):
        self.emit("LOST %s token=%d reason=%s" % (self.name, self.token, reason))
        log("warn", "leadership lost", lock=self.name, token=self.token, reason=reason)
        self.emitted_holder = None
        if self.agent.draining:
            self.settle("expired")
        else:
            self.state = FOLLOWER if self.wants() else IDLE
            self.next_attempt = 0

    # -- the lock's thread

    def run(self):
        while True:
            with G:
                action = self.decide()
                if action == "exit":
                    return
                if isinstance(action, float):
                    G.wait(max(0.0, min(action, 0.5)))
                    continue
            getattr(self, "do_" + action)()

    def decide(self):
        """With G held: what to do next ("exit", an action name, or seconds to wait)."""
        now = mono()
        a = self.agent
        if self.state == DONE:
            return "exit"
        if self.state == IDLE:
            if a.draining:
                self.settle(None)
                return "exit"
            if self.wants():
                self.state = FOLLOWER
                return 0.0
            return 0.5
        if self.state == FOLLOWER:
            if a.draining:
                self.settle(None)
                return "exit"
            if not self.wants():
                self.state = IDLE
                return 0.0
            if self.notified or now >= self.next_attempt:
                self.notified = False
                return "acquire"
            return self.next_attempt - now
        if self.state in (LEADER, STEPPING_DOWN):
            if now >= self.deadline:
                self.lost("renew_deadline")
                return 0.0
            if self.state == LEADER and not self.wants() and not a.draining:
                self.drain_release = False
                self.state = RELEASING
                return "release"
            if self.state == STEPPING_DOWN:
                if self.campaigners <= self.acked or "no_ack_gate" in BUGS:
                    self.state = RELEASING
                    self.drain_release = True
                    return "release"
                if now >= self.stepdown_deadline:
                    if "release_on_timeout" in BUGS:
                        self.state = RELEASING
                        self.drain_release = True
                        return "release"
                    # The tenure is abandoned: LOST at once, the lease is left to expire.
                    self.emit("LOST %s token=%d reason=expired" % (self.name, self.token))
                    self.settle("expired")
                    return "exit"
            if now >= self.next_renew:
                return "renew"
            t = min(self.next_renew, self.deadline)
            if self.state == STEPPING_DOWN:
                t = min(t, self.stepdown_deadline)
            return t - now
        if self.state == RELEASING:
            return "release"
        return 0.5

    def do_acquire(self):
        cfg = self.cfg
        sent = mono()
        try:
            r = self.redis.call("EVAL", ACQUIRE, 2, self.key, self.key + ":fence",
                                self.agent.identity, cfg["ttl"])
        except (ConnectionError, RedisError) as e:
            with G:
                self.next_attempt = mono() + min(0.5, cfg["retry_interval"] / 1000.0)
                log("warn", "acquire failed", lock=self.name, error=str(e))
            return
        with G:
            if r[0] == 1:
                self.token = int(r[1])
                self.sent = sent
                self.deadline = sent + cfg["renew_deadline"] / 1000.0
                self.next_renew = sent + cfg["renew_interval"] / 1000.0
                self.holder = self.agent.identity
                self.state = LEADER
                log("info", "lock acquired", lock=self.name, token=self.token)
                if self.agent.draining:
                    self.drain_release = True
                    self.state = RELEASING
                elif mono() < self.deadline and self.wants():
                    self.emit(self.current_event())
            else:
                holder = str(r[1]).rpartition(":")[0] or "-"
                self.holder = holder
                if holder != self.emitted_holder:
                    self.emitted_holder = holder
                    self.emit("FOLLOWER %s holder=%s" % (self.name, holder))
                self.next_attempt = mono() + cfg["retry_interval"] / 1000.0
            G.notify_all()

    def do_renew(self):
        cfg = self.cfg
        sent = mono()
        value = "%s:%d" % (self.agent.identity, self.token)
        try:
            r = self.redis.call("EVAL", RENEW, 1, self.key, value, cfg["ttl"])
        except (ConnectionError, RedisError) as e:
            with G:
                self.next_renew = mono() + 0.2
                log("warn", "renew failed", lock=self.name, error=str(e))
            return
        with G:
            if self.state not in (LEADER, STEPPING_DOWN):
                return
            if r == 1:
                self.sent = sent
                self.deadline = sent + cfg["renew_deadline"] / 1000.0
                self.next_renew = sent + cfg["renew_interval"] / 1000.0
            elif r == 0:
                self.lost("expired")
            else:
                self.holder = str(r).rpartition(":")[0]
                self.lost("taken")
            G.notify_all()

    def do_release(self):
        cfg = self.cfg
        value = "%s:%d" % (self.agent.identity, self.token)
        start, attempt, outcome = mono(), 0, "failed"
        deadline = start + cfg["release_timeout"] / 1000.0
        while True:
            try:
                r = self.redis.call("EVAL", RELEASE, 1, self.key, value)
                outcome = "released" if r == 1 else "already_gone"
                break
            except (ConnectionError, RedisError) as e:
                log("warn", "release failed", lock=self.name, error=str(e), attempt=attempt)
            attempt += 1
            if mono() >= deadline:
                break
            time.sleep(min(1.0, 0.05 * 2 ** attempt, max(0.0, deadline - mono())))
        with G:
            if self.drain_release or self.agent.draining:
                self.settle(outcome)
            else:
                log("info", "lock released", lock=self.name, token=self.token, outcome=outcome)
                self.state = FOLLOWER if self.wants() else IDLE
                self.next_attempt = 0
                self.emitted_holder = None
            G.notify_all()

    def subscriber(self):
        channel = self.key + ":released"
        while not self.agent.finished:
            try:
                s = socket.create_connection(self.redis.addr, timeout=2)
                s.sendall(_enc(["SUBSCRIBE", channel]))
                s.settimeout(0.5)
                buf = b""
                while not self.agent.finished:
                    try:
                        d = s.recv(65536)
                    except socket.timeout:
                        continue
                    if not d:
                        break
                    buf += d
                    if b"message" in buf:
                        buf = b""
                        with G:
                            self.notified = True
                            G.notify_all()
                s.close()
            except OSError:
                pass
            time.sleep(0.2)


class Agent:
    def __init__(self, cfg):
        self.cfg = cfg
        self.identity = cfg["identity"]
        self.backends = {b["name"]: b for b in cfg["backends"]}
        self.clients = set()
        self.key = None
        if cfg["auth_key_file"]:
            raw = open(cfg["auth_key_file"], "rb").read()
            txt = raw.strip()
            self.key = bytes.fromhex(txt.decode()) if len(txt) == 64 else raw[:32]
        self.locks = {l["name"]: Lock(self, l) for l in cfg["locks"]}
        self.draining = False
        self.drain_started = 0.0
        self.drain_requesters = set()
        self.finished = False

    def client_gone(self, c):
        with G:
            if c in self.clients:
                self.clients.discard(c)
                for l in self.locks.values():
                    l.leave(c)

    def handle(self, c, raw):
        try:
            line = raw.decode("ascii")
        except UnicodeDecodeError:
            line = None
        if line is None or any(ch < " " or ch > "~" for ch in line):
            if not c.hello:
                c.fail("hello_required", "send HELLO first")
            else:
                c.send("ERR bad_request not printable ASCII")
            return
        w = line.split(" ")
        verb = w[0]
        if not c.hello:
            if verb != "HELLO":
                c.fail("hello_required", "send HELLO first")
                return
            if len(w) < 2 or w[1] != "1":
                c.fail("unsupported_version", "this agent speaks protocol 1")
                return
            attrs = dict(x.split("=", 1) for x in w[2:] if "=" in x)
            if self.key is not None:
                good = hmac.new(self.key, c.nonce, hashlib.sha512).digest()[:32].hex()
                if not hmac.compare_digest(attrs.get("mac", ""), good):
                    c.fail("auth_failed", "bad or missing mac")
                    return
            c.hello = True
            c.send("OK HELLO 1 agent=%s id=%s" % (VERSION, self.identity))
            return
        if "" in w:
            c.send("ERR bad_request empty word")
            return
        with G:
            if c in self.clients:  # not after it was found gone (by its writer, say)
                self._request(c, verb, w)

    def _lock_arg(self, c, w, n):
        if len(w) != n:
            c.send("ERR bad_request wrong number of words")
            return None
        if not LOCK_NAME_RE.match(w[1]):
            c.send("ERR bad_request bad lock name")
            return None
        if w[1] not in self.locks:
            c.send("ERR unknown_lock %s" % w[1])
            return None
        return self.locks[w[1]]

    def _request(self, c, verb, w):
        if verb == "PING":
            c.send("OK PONG")
        elif verb == "QUIT":
            c.send("OK BYE")
            c.close_after_flush()
        elif verb == "CAMPAIGN":
            l = self._lock_arg(c, w, 2)
            if l:
                if self.draining:
                    c.send("ERR draining the agent is draining")
                    return
                c.send("OK CAMPAIGN %s" % l.name)
                l.add_campaigner(c)
        elif verb == "WATCH":
            if len(w) == 2 and w[1] == "*":
                c.send("OK WATCH *")
                c.watches.add("*")
                for l in self.locks.values():
                    c.send(l.current_event())
                return
            l = self._lock_arg(c, w, 2)
            if l:
                c.send("OK WATCH %s" % l.name)
                c.watches.add(l.name)
                c.send(l.current_event())
        elif verb == "ACK":
            l = self._lock_arg(c, w[:2], 2) if len(w) == 3 else self._lock_arg(c, w, 3)
            if l:
                if not re.match(r"^[0-9]{1,20}$", w[2]):
                    c.send("ERR bad_request bad token")
                elif not l.ack(c, int(w[2])):
                    c.send("ERR bad_token not this lock's tenure")
                else:
                    c.send("OK ACK %s" % l.name)
        elif verb == "RESIGN":
            l = self._lock_arg(c, w, 2)
            if l:
                c.send("OK RESIGN %s" % l.name)
                l.leave(c)
        elif verb == "STATUS":
            c.send("OK STATUS " + json.dumps(self.status(), separators=(",", ":")))
        elif verb == "DRAIN":
            c.send("OK DRAIN")
            self.drain_requesters.add(c)
            self.start_drain()
        elif re.match(r"^[A-Z]+$", verb):
            c.send("ERR unknown_verb %s" % verb)
        else:
            c.send("ERR bad_request not a verb")

    def status(self):
        now = mono()
        locks = []
        for l in self.locks.values():
            leading = l.state in (LEADER, STEPPING_DOWN) and now < l.deadline
            locks.append({"name": l.name, "backend": l.cfg["backend"], "state": l.state,
                          "token": l.token, "holder": l.holder if l.state != IDLE else "-",
                          "ttl_ms": int((l.sent + l.cfg["ttl"] / 1000.0 - now) * 1000)
                          if leading else 0})
        return {"identity": self.identity, "draining": self.draining, "locks": locks}

    def start_drain(self):
        with G:
            if self.draining and "drain_twice" not in BUGS:
                return
            self.draining = True
            self.drain_started = mono()
            log("info", "drain started")
            for l in self.locks.values():
                l.start_drain()
            G.notify_all()

    def serve(self):
        path = self.cfg["socket"]
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(path)
        os.chmod(path, self.cfg["socket_mode"])
        srv.listen(256)
        srv.settimeout(0.2)
        self.srv = srv
        log("info", "listening", socket=path)
        while not self.finished:
            try:
                s, _ = srv.accept()
            except socket.timeout:
                continue
            except OSError:
                break
            c = Client(self, s)
            with G:
                if len(self.clients) >= MAX_CLIENTS:
                    try:
                        s.sendall(b"ERR too_many_clients try again later\n")
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                    s.close()
                    continue
                self.clients.add(c)
            c.send("LEASEKEEPER 1 id=%s nonce=%s auth=%s"
                   % (self.identity, c.nonce.hex(), "hmac" if self.key else "none"))
            threading.Thread(target=c.writer, daemon=True).start()
            threading.Thread(target=c.reader, daemon=True).start()

    def main(self):
        sigs = []
        signal.signal(signal.SIGTERM, lambda *a: sigs.append(1))
        signal.signal(signal.SIGINT, lambda *a: sigs.append(1))
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        threading.Thread(target=self.serve, daemon=True).start()
        for l in self.locks.values():
            threading.Thread(target=l.run, daemon=True).start()
            threading.Thread(target=l.subscriber, daemon=True).start()
        while True:
            if sigs:
                self.start_drain()
            with G:
                if self.draining:
                    over = mono() >= self.drain_started + self.cfg["shutdown_timeout"] / 1000.0
                    if over or all(l.state == DONE for l in self.locks.values()):
                        return self.finish(over)
                G.wait(0.05)

    def finish(self, timed_out):
        outs = [l.outcome for l in self.locks.values() if l.outcome]
        released = sum(o in ("released", "already_gone") for o in outs)
        expired = sum(o == "expired" for o in outs)
        failed = sum(o == "failed" for o in outs)
        if timed_out:
            reason = "shutdown_timeout"
        elif failed:
            reason = "release_failed"
        elif expired:
            reason = "stepdown_timeout"
        else:
            reason = "drained"
        elapsed = int((mono() - self.drain_started) * 1000)
        left = max(0, self.cfg["shutdown_timeout"] - elapsed)
        for c in list(self.clients):
            if "no_stop" not in BUGS:
                c.send("STOP deadline_ms=%d" % left)
        for c in list(self.drain_requesters):
            c.send("DRAINED released=%d expired=%d failed=%d elapsed_ms=%d"
                   % (released, expired, failed, elapsed))
        log("info", "drain complete", exit_reason=reason, wait_duration_ms=elapsed,
            released=released, expired=expired, failed=failed)
        self.finished = True
        for c in list(self.clients):
            c.close_after_flush()
        deadline = mono() + 1.0
        while mono() < deadline and any(c.out for c in list(self.clients)):
            time.sleep(0.01)
        try:
            os.unlink(self.cfg["socket"])
        except OSError:
            pass
        return 0 if reason == "drained" else 1


# ---------------------------------------------------------------------------------------------
# command line

USAGE = {
    None: "usage: leasekeeper COMMAND [ARGS]\n\ncommands:\n  agent -c FILE\n"
          "  drain [-s SOCKET] [--timeout DUR]\n  status [-s SOCKET] [--json]\n"
          "  watch [-s SOCKET] [LOCK]\n  run [-s SOCKET] --lock NAME -- CMD [ARG...]\n"
          "  check-config -c FILE\n  version\n",
    "agent": "usage: leasekeeper agent -c FILE\n",
    "drain": "usage: leasekeeper drain [-s SOCKET] [--timeout DUR]\n",
    "status": "usage: leasekeeper status [-s SOCKET] [--json]\n",
    "watch": "usage: leasekeeper watch [-s SOCKET] [LOCK]\n",
    "run": "usage: leasekeeper run [-s SOCKET] --lock NAME -- CMD [ARG...]\n",
    "check-config": "usage: leasekeeper check-config -c FILE\n",
    "version": "usage: leasekeeper version\n",
}


class Conn:
    def __init__(self, path, timeout=5.0):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(timeout)
        self.s.connect(path)
        self.f = self.s.makefile("rb")
        banner = self.line()
        if not banner or not banner.startswith("LEASEKEEPER "):
            raise OSError("no banner: %r" % banner)
        attrs = dict(x.split("=", 1) for x in banner.split(" ") if "=" in x)
        hello = "HELLO 1 client=cli"
        kf = os.environ.get("LEASEKEEPER_AUTH_KEY_FILE")
        if attrs.get("auth") == "hmac" and kf:
            raw = open(kf, "rb").read()
            key = bytes.fromhex(raw.strip().decode()) if len(raw.strip()) == 64 else raw[:32]
            hello += " mac=" + hmac.new(key, bytes.fromhex(attrs["nonce"]),
                                        hashlib.sha512).digest()[:32].hex()
        self.send(hello)
        r = self.line()
        if not r or not r.startswith("OK HELLO"):
            raise OSError("HELLO refused: %r" % r)
        self.s.settimeout(None)

    def send(self, line):
        self.s.sendall((line + "\n").encode())

    def line(self):
        b = self.f.readline()
        return b.decode().rstrip("\r\n") if b else None


def opts(args, flags=("-s", "-c", "--timeout", "--lock")):
    o, rest = {}, []
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--":
            rest += args[i:]
            break
        if a in flags and i + 1 < len(args):
            o[a] = args[i + 1]
            i += 2
            continue
        if a.startswith("-"):
            o[a] = True
        else:
            rest.append(a)
        i += 1
    return o, rest


def sock_path(o):
    return o.get("-s") or os.environ.get("LEASEKEEPER_SOCKET") or DEFAULT_SOCKET


def cmd_drain(o, rest):
    try:
        c = Conn(sock_path(o))
        c.send("DRAIN")
    except OSError as e:
        print("leasekeeper drain: %s" % e, file=sys.stderr)
        return 2
    while True:
        line = c.line()
        if line is None:
            print("leasekeeper drain: the agent closed the connection", file=sys.stderr)
            return 2
        if line.startswith("DRAINED "):
            print(line)
            a = dict(x.split("=", 1) for x in line.split(" ")[1:])
            return 0 if a["failed"] == "0" and a["expired"] == "0" else 1


def cmd_status(o, rest):
    try:
        c = Conn(sock_path(o))
        c.send("STATUS")
        while True:
            line = c.line()
            if line is None:
                return 2
            if line.startswith("OK STATUS "):
                break
    except OSError as e:
        print("leasekeeper status: %s" % e, file=sys.stderr)
        return 2
    st = json.loads(line[len("OK STATUS "):])
    if "--json" in o:
        print(json.dumps(st))
        return 0
    print("LOCK  BACKEND  STATE  TOKEN  HOLDER  TTL_MS")
    for l in st["locks"]:
        print("%s  %s  %s  %s  %s  %s" % (l["name"], l["backend"], l["state"], l["token"],
                                          l["holder"], l["ttl_ms"]))
    return 0


def cmd_watch(o, rest):
    try:
        c = Conn(sock_path(o))
        c.send("WATCH %s" % (rest[0] if rest else "*"))
    except OSError as e:
        print("leasekeeper watch: %s" % e, file=sys.stderr)
        return 2
    while True:
        line = c.line()
        if line is None:
            return 0
        if not line.startswith("OK "):
            print(line, flush=True)


def cmd_run(o, rest):
    lock = o.get("--lock")
    cmd = rest[1:] if rest and rest[0] == "--" else rest
    if not lock or not cmd:
        print(USAGE["run"], file=sys.stderr)
        return 2
    try:
        c = Conn(sock_path(o))
        c.send("CAMPAIGN %s" % lock)
    except OSError as e:
        print("leasekeeper run: %s" % e, file=sys.stderr)
        return 2
    child = None
    while True:
        line = c.line()
        if line is None or line.startswith("STOP"):
            if child and child.poll() is None:
                child.kill()
                child.wait()
            return 0
        w = line.split(" ")
        a = dict(x.split("=", 1) for x in w[1:] if "=" in x)
        if w[0] == "LEADER" and (child is None or child.poll() is not None):
            env = dict(os.environ, LEASEKEEPER_TOKEN=a["token"])
            child = subprocess.Popen(cmd, env=env)
        elif w[0] == "STEPDOWN":
            if child and child.poll() is None:
                child.terminate()
                child.wait()
            c.send("ACK %s %s" % (lock, a["token"]))
        elif w[0] == "LOST":
            if child and child.poll() is None:
                child.kill()
                child.wait()


def main(argv):
    global LOG_FORMAT
    if not argv or argv[0] in ("-h", "--help", "help"):
        sys.stdout.write(USAGE[None])
        return 0 if argv else 2
    cmd, args = argv[0], argv[1:]
    if cmd not in USAGE:
        sys.stderr.write(USAGE[None])
        return 2
    if "--help" in args or "-h" in args:
        sys.stdout.write(USAGE[cmd])
        return 0
    o, rest = opts(args)
    if cmd == "version":
        print("leasekeeper %s" % VERSION)
        return 0
    if cmd in ("check-config", "agent"):
        if "-c" not in o:
            sys.stderr.write(USAGE[cmd])
            return 2
        cfg, errs = load_config(o["-c"])
        for e in errs:
            print(e, file=sys.stderr)
        if errs:
            return 1
        if cmd == "check-config":
            return 0
        LOG_FORMAT = cfg["log_format"]
        _mutate_scripts()
        return Agent(cfg).main()
    return {"drain": cmd_drain, "status": cmd_status, "watch": cmd_watch,
            "run": cmd_run}[cmd](o, rest)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
