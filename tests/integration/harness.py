"""Integration test harness for leasekeeper (Python 3 standard library only).

Everything a scenario needs to run the real agent against a real, private redis-server:

- free_port(), a temp dir per test (LKTestCase.tmp), removed afterwards (LK_KEEP_TMP=1 keeps it);
- RedisServer: a private redis-server on a loopback port, without persistence, that can be
  stopped, restarted (data lost), killed (SIGKILL), frozen (SIGSTOP) and thawed (SIGCONT);
- RedisPool: a few warm, empty redis-servers per process, so that LKTestCase.start_redis()
  hands out one that has been up a while (the agent holds off new tenures on a Redis that has
  been up less than a lock's ttl: docs/safety.md, "I10 restart hold-off"); Agent.start()
  waits, if need be, until a warm server it uses has been up for its locks' ttl;
- RespClient: a tiny RESP2 client; Monitor: MONITOR on its own connection, collected by a thread;
- TcpProxy: a loopback TCP proxy that can drop the server's replies or cut every connection;
- acl_user_args(), SentinelServer, SentinelSetup: Redis ACL users, and a master with replicas
  and redis-sentinels on loopback (Debian's redis-sentinel) for failover scenarios;
- Agent: writes a YAML config (SPEC section 4), runs `$LK_BIN agent -c CONFIG`, waits for its
  socket, reads its logs, and on teardown stops it and fails the test on sanitizer reports;
- AppClient: the Unix socket protocol (SPEC section 3) as an app sees it, with every line
  timestamped on arrival by a reader thread so that tests can reason about timing;
- LKTestCase: a unittest.TestCase that starts all of the above with addCleanup, so everything
  started is stopped, also when a test fails.

Timeouts are generous everywhere: tests wait for events, never on tight sleeps, because the
suite also runs under ASan on a 2-core machine with three modules in parallel.
"""

import atexit
import hashlib
import hmac
import math
import http.client
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import weakref
from collections import deque

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO_ROOT, "tests"))

from common import tcp  # noqa: E402  (tests/common: shared with the chaos suite and the soak)

# Default wait for anything that should happen "soon". Scaled by LK_TIMEOUT_SCALE for slow
# machines (e.g. LK_TIMEOUT_SCALE=2 under valgrind); timing *assertions* are not scaled.
TIMEOUT_SCALE = float(os.environ.get("LK_TIMEOUT_SCALE", "1") or "1")
DEFAULT_TIMEOUT = 10.0 * TIMEOUT_SCALE

SANITIZER_PATTERNS = (
    "ERROR: AddressSanitizer",
    "ERROR: LeakSanitizer",
    "AddressSanitizer:",
    "LeakSanitizer:",
    "UndefinedBehaviorSanitizer",
    "runtime error:",
)

SANITIZER_ENV = {
    "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0",
    "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1",
}

EVENT_KINDS = ("LEADER", "RENEWED", "FOLLOWER", "STEPDOWN", "LOST", "RELEASED", "STOP",
               "DRAINED")
LOCK_EVENTS = ("LEADER", "RENEWED", "FOLLOWER", "STEPDOWN", "LOST", "RELEASED")


def lk_bin():
    """The leasekeeper binary: $LK_BIN (relative paths are taken from the repo root)."""
    path = os.environ.get("LK_BIN") or "build/leasekeeper"
    if not os.path.isabs(path):
        path = os.path.join(REPO_ROOT, path)
    return path


def redis_server_bin():
    return os.environ.get("REDIS_SERVER") or shutil.which("redis-server") or "redis-server"


def scaled(seconds):
    return seconds * TIMEOUT_SCALE


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago (callers retry if it was taken)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(pred, timeout=DEFAULT_TIMEOUT, interval=0.02, what="condition"):
    """Poll pred() until it returns a truthy value, which is returned; AssertionError on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.1fs waiting for %s" % (timeout, what))
        time.sleep(interval)


def _kill_wait(proc, sig=signal.SIGTERM, grace=5.0):
    """Send sig, wait up to grace seconds, then SIGKILL and wait. Returns (returncode, killed)."""
    if proc.poll() is not None:
        return proc.returncode, False
    try:
        proc.send_signal(sig)
    except ProcessLookupError:
        pass
    try:
        return proc.wait(timeout=grace), False
    except subprocess.TimeoutExpired:
        pass
    try:
        proc.kill()
    except ProcessLookupError:
        pass
    return proc.wait(), True


# ---------------------------------------------------------------------------------------------
# RESP


class RespError(Exception):
    """An error reply from Redis (the reply's text is the message)."""


class _Incomplete(Exception):
    pass


def _encode_command(args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        if isinstance(a, bytes):
            b = a
        elif isinstance(a, str):
            b = a.encode()
        else:
            b = str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


def _parse_reply(buf, pos, decode):
    """Parse one RESP2 reply from buf[pos:]; returns (value, new_pos) or raises _Incomplete.
    Error replies are returned as RespError instances (raised by the caller at top level)."""
    end = buf.find(b"\r\n", pos)
    if end < 0:
        raise _Incomplete()
    t, line = buf[pos:pos + 1], buf[pos + 1:end]
    pos = end + 2
    if t == b"+":
        return (line.decode(errors="surrogateescape") if decode else line), pos
    if t == b"-":
        return RespError(line.decode(errors="replace")), pos
    if t == b":":
        return int(line), pos
    if t == b"$":
        n = int(line)
        if n < 0:
            return None, pos
        if len(buf) < pos + n + 2:
            raise _Incomplete()
        data = bytes(buf[pos:pos + n])
        return (data.decode(errors="surrogateescape") if decode else data), pos + n + 2
    if t == b"*":
        n = int(line)
        if n < 0:
            return None, pos
        items = []
        for _ in range(n):
            v, pos = _parse_reply(buf, pos, decode)
            items.append(v)
        return items, pos
    raise RespError("protocol error: unexpected reply type %r" % t)


class RespClient:
    """A minimal blocking RESP2 client. call(*args) returns the decoded reply (str for strings,
    int, None, lists) and raises RespError for error replies. A timeout while reading keeps the
    buffered bytes, so read_reply() can simply be called again (used by Monitor and pub/sub)."""

    def __init__(self, port, host="127.0.0.1", timeout=5.0, decode=True):
        self.decode = decode
        self.timeout = timeout
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()

    def send(self, *args):
        self.sock.settimeout(self.timeout)
        self.sock.sendall(_encode_command(args))

    def read_reply(self, timeout=None, raise_errors=True):
        """Next reply; socket.timeout if none within timeout (buffer kept); EOFError on EOF."""
        self.sock.settimeout(self.timeout if timeout is None else timeout)
        while True:
            if self.buf:
                try:
                    v, pos = _parse_reply(self.buf, 0, self.decode)
                    del self.buf[:pos]
                    if raise_errors and isinstance(v, RespError):
                        raise v
                    return v
                except _Incomplete:
                    pass
            data = self.sock.recv(65536)
            if not data:
                raise EOFError("redis closed the connection")
            self.buf += data

    def call(self, *args, timeout=None):
        self.send(*args)
        return self.read_reply(timeout=timeout)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


# MONITOR lines: 1700000000.123456 [0 127.0.0.1:5555] "SET" "k" "v"   (scripts: [0 lua])
_MONITOR_RE = re.compile(r'^(\d+\.\d+) \[(\d+) ([^\]]*)\] (.*)$')


def _parse_monitor_args(s):
    """Parse the quoted, escaped argument list of a MONITOR line (sdscatrepr format)."""
    args, i, n = [], 0, len(s)
    while i < n:
        while i < n and s[i] == " ":
            i += 1
        if i >= n:
            break
        if s[i] != '"':
            j = s.find(" ", i)
            j = n if j < 0 else j
            args.append(s[i:j])
            i = j
            continue
        i += 1
        out = []
        while i < n and s[i] != '"':
            c = s[i]
            if c == "\\" and i + 1 < n:
                e = s[i + 1]
                if e == "x" and i + 3 < n:
                    out.append(chr(int(s[i + 2:i + 4], 16)))
                    i += 4
                    continue
                out.append({"n": "\n", "r": "\r", "t": "\t", "a": "\a", "b": "\b"}.get(e, e))
                i += 2
                continue
            out.append(c)
            i += 1
        args.append("".join(out))
        i += 1
    return args


class MonitorLine:
    __slots__ = ("ts", "db", "source", "args", "raw", "seq")

    def __init__(self, raw, seq):
        self.raw, self.seq = raw, seq
        m = _MONITOR_RE.match(raw)
        if m:
            self.ts, self.db, self.source = float(m.group(1)), int(m.group(2)), m.group(3)
            self.args = _parse_monitor_args(m.group(4))
        else:
            self.ts, self.db, self.source, self.args = 0.0, 0, "", []

    @property
    def cmd(self):
        return self.args[0].upper() if self.args else ""

    @property
    def from_script(self):
        return self.source == "lua"

    def script_keys(self):
        """The KEYS of an EVAL/EVALSHA/FCALL line, [] for other commands."""
        if self.cmd in ("EVAL", "EVALSHA", "EVAL_RO", "EVALSHA_RO", "FCALL", "FCALL_RO") \
                and len(self.args) >= 3:
            try:
                nk = int(self.args[2])
            except ValueError:
                return []
            return self.args[3:3 + nk]
        return []

    def __repr__(self):
        return "MonitorLine(%r)" % self.raw


class Monitor:
    """MONITOR on its own connection; a thread collects every line. Lines carry Redis's wall
    clock timestamp (comparable with time.time() on this machine)."""

    def __init__(self, port):
        self.port = port
        self.client = RespClient(port, timeout=5.0)
        ok = self.client.call("MONITOR")
        if ok != "OK":
            raise RespError("MONITOR answered %r" % (ok,))
        self._lines = []
        self._cond = threading.Condition()
        self._stop = False
        self._seq = 0
        self.error = None
        self._thread = threading.Thread(target=self._run, name="redis-monitor", daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop:
            try:
                v = self.client.read_reply(timeout=0.2, raise_errors=False)
            except socket.timeout:
                continue
            except (EOFError, OSError) as e:
                if not self._stop:
                    self.error = e
                break
            if isinstance(v, (bytes, str)):
                line = v if isinstance(v, str) else v.decode(errors="replace")
                with self._cond:
                    self._lines.append(MonitorLine(line, self._seq))
                    self._seq += 1
                    self._cond.notify_all()

    def lines(self):
        with self._cond:
            return list(self._lines)

    def mark(self):
        """A position: pass to since= to look only at later lines."""
        with self._cond:
            return len(self._lines)

    def select(self, pred=None, since=0):
        return [ln for ln in self.lines()[since:] if pred is None or pred(ln)]

    def dels(self, key, since=0, from_script=None):
        """DEL/UNLINK lines naming key (from_script=True: only those run inside a script)."""
        def p(ln):
            if ln.cmd not in ("DEL", "UNLINK") or key not in ln.args[1:]:
                return False
            return from_script is None or ln.from_script == from_script
        return self.select(p, since)

    def script_calls(self, key, since=0, source=None):
        """EVAL/EVALSHA/FCALL lines whose KEYS include key (optionally from one client)."""
        return self.select(lambda ln: key in ln.script_keys()
                           and (source is None or ln.source == source), since)

    def publishes(self, channel, since=0):
        return self.select(lambda ln: ln.cmd in ("PUBLISH", "SPUBLISH")
                           and len(ln.args) >= 2 and ln.args[1] == channel, since)

    def wait_for(self, pred, timeout=DEFAULT_TIMEOUT, since=0, what="a MONITOR line"):
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for ln in self._lines[since:]:
                    if pred(ln):
                        return ln
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("timed out after %.1fs waiting for %s" % (timeout, what))
                self._cond.wait(min(left, 0.2))

    def sync(self, redis, timeout=DEFAULT_TIMEOUT):
        """Make sure every command Redis ran before this call is in lines(): send a unique
        marker through redis (a RespClient or RedisServer) and wait for it to show up."""
        marker = "lk-monitor-sync-%d-%f" % (os.getpid(), time.monotonic())
        redis.call("ECHO", marker)
        self.wait_for(lambda ln: ln.cmd == "ECHO" and marker in ln.args, timeout=timeout,
                      what="the MONITOR sync marker")

    def dump(self, since=0):
        return "\n".join(ln.raw for ln in self.lines()[since:])

    def stop(self):
        self._stop = True
        try:
            self.client.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._thread.join(timeout=5)
        self.client.close()


# ---------------------------------------------------------------------------------------------
# redis-server


# Every RedisServer started in this process (stopped at exit if still running), and the one
# last started on each port (Agent.start() looks its backends up here).
_ALL_REDIS = weakref.WeakSet()
_REDIS_BY_PORT = {}
# TcpProxy objects by listening port, so that an agent's address can be traced to its Redis.
_PROXIES_BY_PORT = weakref.WeakValueDictionary()


class RedisServer:
    """A private redis-server on 127.0.0.1 without persistence. call(*args) talks to it over a
    shared connection (re-opened after errors).

    spawn_t / ready_t: monotonic times of the current instance's exec and of its first PONG
    (its uptime is at least now - ready_t). generation counts the instances started.
    warm_generation: the generation that LKTestCase.start_redis() promised to be warm (None for
    fresh=True); Agent.start() waits for that instance to be up as long as the agent's ttl."""

    def __init__(self, tmpdir, port=None, extra_args=()):
        self.tmpdir = tmpdir
        self.dir = tempfile.mkdtemp(prefix="redis-", dir=tmpdir)
        self.fixed_port = port is not None
        self.port = port or free_port()
        self.extra_args = list(extra_args)
        self.proc = None
        self.stopped = False  # SIGSTOPped
        self._client = None
        self._lock = threading.Lock()
        self._logf = None
        self.generation = 0
        self.spawn_t = None
        self.ready_t = None
        self.pooled = False           # handed out by a RedisPool
        self.warm_generation = None

    @property
    def address(self):
        return "127.0.0.1:%d" % self.port

    @property
    def log_path(self):
        return os.path.join(self.dir, "redis.log")

    def start(self, timeout=DEFAULT_TIMEOUT):
        _ALL_REDIS.add(self)
        for attempt in range(5):
            self._spawn()
            try:
                self._wait_ready(timeout)
                self.ready_t = time.monotonic()
                _REDIS_BY_PORT[self.port] = self
                return self
            except _PortTaken:
                if self.fixed_port:
                    raise AssertionError("redis could not bind port %d" % self.port)
                self.port = free_port()
        raise AssertionError("redis-server did not start (ports kept being taken)")

    def age(self):
        """Seconds the current instance has surely been up (0 if it is not running)."""
        if not self.alive() or self.ready_t is None:
            return 0.0
        return max(0.0, time.monotonic() - self.ready_t)

    def _spawn(self):
        self.generation += 1
        if self._logf:
            self._logf.close()
        self._logf = open(self.log_path, "ab")
        self._log_offset = self._logf.tell()
        args = [redis_server_bin(), "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", self.dir,
                "--daemonize", "no", "--protected-mode", "no", "--loglevel", "notice"]
        args += self.extra_args
        self.ready_t = None
        self.spawn_t = time.monotonic()
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=self._logf,
                                     stderr=subprocess.STDOUT, cwd=self.dir)
        self.stopped = False

    def _wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                with open(self.log_path, "rb") as f:
                    f.seek(self._log_offset)
                    log = f.read().decode(errors="replace")
                if "Address already in use" in log:
                    raise _PortTaken()
                raise AssertionError("redis-server exited with %s:\n%s"
                                     % (self.proc.returncode, log[-2000:]))
            try:
                c = RespClient(self.port, timeout=1.0)
                try:
                    if c.call("PING") == "PONG":
                        return
                finally:
                    c.close()
            except (OSError, EOFError, RespError):
                pass
            if time.monotonic() >= deadline:
                raise AssertionError("redis-server on port %d did not answer PING within %.0fs"
                                     % (self.port, timeout))
            time.sleep(0.02)

    def client(self, timeout=5.0):
        """A new RespClient (caller closes it)."""
        return RespClient(self.port, timeout=timeout)

    def call(self, *args, timeout=5.0):
        with self._lock:
            for attempt in (0, 1):
                try:
                    if self._client is None:
                        self._client = RespClient(self.port, timeout=timeout)
                    return self._client.call(*args, timeout=timeout)
                except RespError:
                    raise
                except (OSError, EOFError):
                    if self._client:
                        self._client.close()
                    self._client = None
                    if attempt:
                        raise

    def get(self, key):
        return self.call("GET", key)

    def info(self, section="server"):
        """INFO <section> as a dict of strings."""
        out = {}
        for line in (self.call("INFO", section) or "").splitlines():
            if ":" in line and not line.startswith("#"):
                k, v = line.split(":", 1)
                out[k] = v.strip()
        return out

    def run_id(self):
        return self.info("server")["run_id"]

    def uptime(self):
        """uptime_in_seconds as Redis reports it (whole seconds, rounded down)."""
        return int(self.info("server")["uptime_in_seconds"])

    def monitor(self):
        """A started Monitor (the caller, usually LKTestCase.monitor(), stops it)."""
        return Monitor(self.port)

    def sigstop(self):
        self.proc.send_signal(signal.SIGSTOP)
        self.stopped = True

    def sigcont(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
        self.stopped = False

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def _drop_client(self):
        with self._lock:
            if self._client:
                self._client.close()
                self._client = None

    def stop(self, grace=5.0):
        self._drop_client()
        if self.proc is None:
            return
        if self.stopped:
            self.sigcont()
        _kill_wait(self.proc, signal.SIGTERM, grace)
        if self._logf:
            self._logf.close()
            self._logf = None

    def kill(self):
        """SIGKILL (a crash: no shutdown save, clients see a reset); restart() starts it again."""
        self._drop_client()
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.stopped = False

    def restart(self, timeout=DEFAULT_TIMEOUT):
        """Stop and start again on the same port. Without persistence, all data is lost."""
        self.stop()
        port_was_fixed, self.fixed_port = self.fixed_port, True
        try:
            self.start(timeout)
        finally:
            self.fixed_port = port_was_fixed
        return self


class _PortTaken(Exception):
    pass


def _sweep_stale_dirs(parent, prefix):
    """Remove <prefix><pid>-* dirs in parent whose process is gone (a killed test process
    cannot clean up after itself)."""
    try:
        names = os.listdir(parent)
    except OSError:
        return
    for n in names:
        m = re.match(r"^%s(\d+)-" % re.escape(prefix), n)
        if not m or int(m.group(1)) == os.getpid():
            continue
        try:
            os.kill(int(m.group(1)), 0)
            continue
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        shutil.rmtree(os.path.join(parent, n), ignore_errors=True)


def redis_pool_size():
    """$LK_REDIS_POOL: spare servers kept per process (default 2; 0 turns the pool off)."""
    try:
        return max(0, int(os.environ.get("LK_REDIS_POOL", "2") or "2"))
    except ValueError:
        return 2


class RedisPool:
    """Spare redis-servers, started in the background and kept running, so that a test gets one
    that has been up a while: an agent holds off new tenures on a Redis younger than the lock's
    ttl (docs/safety.md, "I10 restart hold-off"), and a suite of tests that each start Redis
    and then an agent would pay that on every test.

    Each spare is a plain RedisServer (own dir under the pool's temp dir, own port, nothing
    written to it), so restart(), stop(), kill(), sigstop() behave as for any other. take()
    hands out the oldest spare (it is the tester's from then on: never given back) and starts a
    replacement at once. close() stops every server the pool ever started, and atexit calls
    it."""

    def __init__(self, size=2, parent="/tmp"):
        self.size = size
        self.parent = parent
        self.dir = None
        self._spares = deque()
        self._starting = 0
        self._threads = []
        self._started = []           # every server the pool started
        self._cond = threading.Condition()
        self._closed = False
        self.taken = 0
        self.errors = []

    def _ensure_dir(self):
        if self.dir is None:
            prefix = "lk-redis-pool-"
            _sweep_stale_dirs(self.parent, prefix)
            self.dir = tempfile.mkdtemp(prefix="%s%d-" % (prefix, os.getpid()), dir=self.parent)

    def fill(self):
        """Start spares in the background until size are running or starting."""
        with self._cond:
            if self._closed:
                return
            self._ensure_dir()
            self._threads = [t for t in self._threads if t.is_alive()]
            while len(self._spares) + self._starting < self.size:
                self._starting += 1
                # Not a daemon: interpreter shutdown waits for it before atexit's close().
                t = threading.Thread(target=self._start_one, name="redis-pool-start")
                self._threads.append(t)
                t.start()

    def _start_one(self):
        r = None
        try:
            r = RedisServer(self.dir)
            r.pooled = True
            with self._cond:
                self._started.append(r)
            r.start()
        except Exception as e:  # noqa: BLE001 - take() falls back to a fresh server
            self.errors.append(repr(e))
            if r is not None:
                r.stop()
            r = None
        with self._cond:
            self._starting -= 1
            if r is not None:
                if self._closed:
                    r.stop()
                else:
                    self._spares.append(r)
            self._cond.notify_all()

    def spares(self):
        with self._cond:
            return list(self._spares)

    def wait_spares(self, n=None, min_age=0.0, timeout=DEFAULT_TIMEOUT * 2):
        """Until n (default: size) spares run, the youngest up at least min_age seconds."""
        n = self.size if n is None else n
        self.fill()
        wait_until(lambda: len(self.spares()) >= n
                   and all(r.age() >= min_age for r in self.spares()[:n]),
                   timeout=timeout, interval=0.05, what="%d pooled redis up %.1fs" % (n, min_age))

    def take(self, timeout=DEFAULT_TIMEOUT):
        """The oldest spare (None if the pool cannot give one within timeout); a replacement
        starts in the background."""
        deadline = time.monotonic() + timeout
        self.fill()
        while True:
            with self._cond:
                while not self._spares and self._starting and not self._closed:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return None
                    self._cond.wait(left)
                r = self._spares.popleft() if self._spares else None
            self.fill()
            if r is None:
                return None
            try:
                if r.alive() and not r.stopped and r.call("DBSIZE", timeout=2.0) == 0:
                    self.taken += 1
                    return r
            except (OSError, EOFError, RespError):
                pass
            r.stop()  # died or dirty: never hand it out
            if time.monotonic() >= deadline:
                return None

    def close(self):
        with self._cond:
            self._closed = True
            threads = list(self._threads)
            spares = list(self._spares)
            self._spares.clear()
        for t in threads:
            if t is not threading.current_thread():
                t.join(timeout=DEFAULT_TIMEOUT)
        for r in spares + list(self._started):
            try:
                r.stop()
            except Exception:  # noqa: BLE001 - stop the rest whatever happens
                pass
        if self.dir and not os.environ.get("LK_KEEP_TMP"):
            shutil.rmtree(self.dir, ignore_errors=True)

    def pids(self):
        """Pids of the pool's servers that are running (spares and handed-out ones)."""
        with self._cond:
            return [r.proc.pid for r in self._started if r.alive()]


_redis_pool = None
_redis_pool_lock = threading.Lock()


def redis_pool():
    """This process's RedisPool, created (and filled) on first use; None if LK_REDIS_POOL=0."""
    global _redis_pool
    size = redis_pool_size()
    if size <= 0:
        return None
    with _redis_pool_lock:
        if _redis_pool is None:
            _redis_pool = RedisPool(size)
            atexit.register(_close_redis_pool)
        pool = _redis_pool
    pool.fill()
    return pool


def _close_redis_pool():
    if _redis_pool is not None:
        _redis_pool.close()


def _stop_all_redis():
    """At exit: every RedisServer of this process still running (pooled or not) is stopped."""
    for r in list(_ALL_REDIS):
        try:
            if r.alive():
                r.stop(grace=2.0)
        except Exception:  # noqa: BLE001
            pass


atexit.register(_stop_all_redis)


def _redis_behind(address):
    """The RedisServer an agent reaches at address "host:port" (through TcpProxy objects of
    this process), or None."""
    try:
        port = int(str(address).rsplit(":", 1)[1])
    except (IndexError, ValueError):
        return None
    for _ in range(4):
        proxy = _PROXIES_BY_PORT.get(port)
        if proxy is None:
            break
        port = proxy.upstream[1]
    return _REDIS_BY_PORT.get(port)


def warm_redis_wait(backends, locks):
    """Seconds an agent with these backends and locks should wait before it starts so that no
    Redis that start_redis() handed out as warm is younger than the ttl of a lock on it (the
    agent would hold off its first tenure until then). 0 for fresh=True servers and for any
    server restarted since it was handed out: those hold-offs are what the test is about."""
    need = 0.0
    now = time.monotonic()
    for b in backends or []:
        if not isinstance(b, dict) or b.get("type", "redis") != "redis":
            continue
        r = _redis_behind(b.get("address"))
        if r is None or r.warm_generation is None or r.warm_generation != r.generation \
                or not r.alive() or r.stopped or r.ready_t is None:
            continue
        ttls = [dur_ms(l.get("ttl") or "3s") / 1000.0 for l in locks or []
                if isinstance(l, dict) and l.get("backend", "main") == b.get("name", "main")]
        if not ttls:
            continue
        # Redis reports whole seconds of uptime, from two wall-clock seconds subtracted, so
        # the agent counts one second less than it says (docs/safety.md, "I10 restart hold-off").
        need = max(need, r.ready_t + math.ceil(max(ttls)) + 1.05 - now)
    return need


# ---------------------------------------------------------------------------------------------
# etcd

# Faster than etcd's defaults (heartbeat 100ms, election timeout 1s): a single member elects
# itself in about half a second, a cluster recovers from a lost leader sooner, and the
# minimum lease TTL (1.5 election timeouts, rounded up to whole seconds) becomes 1s.
ETCD_FAST_ARGS = ("--heartbeat-interval", "50", "--election-timeout", "500")
ETCD_DEFAULT_ARGS = ("--heartbeat-interval", "100", "--election-timeout", "1000")


def etcd_bin():
    return os.environ.get("ETCD") or shutil.which("etcd") or "etcd"


def etcdctl_bin():
    return os.environ.get("ETCDCTL") or shutil.which("etcdctl") or "etcdctl"


def have_etcd():
    return bool(os.environ.get("ETCD") or shutil.which("etcd"))


def _etcd_data_parent():
    """Where etcd keeps its data: tmpfs (/dev/shm) when there is one, as fsync there costs
    nothing; $LK_ETCD_DATA overrides it; None means the test's own temp dir."""
    d = os.environ.get("LK_ETCD_DATA")
    if d:
        return d
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        return "/dev/shm"
    return None


def _sweep_stale_etcd_data(parent):
    """Remove lk-etcd-<pid>-* data dirs of test processes that are gone (a killed module
    cannot run its cleanups)."""
    try:
        names = os.listdir(parent)
    except OSError:
        return
    for n in names:
        m = re.match(r"^lk-etcd-(\d+)-", n)
        if not m:
            continue
        pid = int(m.group(1))
        if pid == os.getpid():
            continue
        try:
            os.kill(pid, 0)
            continue
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        shutil.rmtree(os.path.join(parent, n), ignore_errors=True)


_cert_lock = threading.Lock()


def make_test_certs(directory):
    """A throwaway PKI made with `openssl` in directory, as paths: ca, server (IP SAN
    127.0.0.1, serverAuth+clientAuth), client (clientAuth), all signed by ca; other_ca, an
    unrelated CA, and other_client signed by it. Keys are P-256, valid for 2 days."""
    os.makedirs(directory, exist_ok=True)
    p = lambda name: os.path.join(directory, name)  # noqa: E731

    def run(*args):
        r = subprocess.run(["openssl"] + list(args), cwd=directory, capture_output=True,
                           stdin=subprocess.DEVNULL, timeout=60)
        if r.returncode != 0:
            raise AssertionError("openssl %s failed:\n%s" % (" ".join(args),
                                                            r.stderr.decode(errors="replace")))

    def ca(name, cn):
        run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", p(name + "-key.pem"), "-out", p(name + ".pem"), "-days", "2",
            "-subj", "/CN=" + cn, "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")

    def leaf(name, cn, ca_name, ext):
        with open(p(name + ".ext"), "w") as f:
            f.write(ext)
        run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", p(name + "-key.pem"), "-out", p(name + ".csr"), "-subj", "/CN=" + cn)
        run("x509", "-req", "-in", p(name + ".csr"), "-CA", p(ca_name + ".pem"),
            "-CAkey", p(ca_name + "-key.pem"), "-CAcreateserial",
            "-CAserial", p(ca_name + ".srl"), "-out", p(name + ".pem"), "-days", "2",
            "-extfile", p(name + ".ext"))

    client_ext = "extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n"
    with _cert_lock:
        ca("ca", "lk-test-ca")
        leaf("server", "127.0.0.1", "ca", "subjectAltName=IP:127.0.0.1\n"
             "extendedKeyUsage=serverAuth,clientAuth\nbasicConstraints=CA:FALSE\n")
        leaf("client", "lk-test-client", "ca", client_ext)
        ca("other-ca", "lk-test-other-ca")
        leaf("other-client", "lk-test-client", "other-ca", client_ext)
    return {
        "ca": p("ca.pem"), "ca_key": p("ca-key.pem"),
        "server": p("server.pem"), "server_key": p("server-key.pem"),
        "client": p("client.pem"), "client_key": p("client-key.pem"),
        "other_ca": p("other-ca.pem"),
        "other_client": p("other-client.pem"), "other_client_key": p("other-client-key.pem"),
    }


class EtcdEvent:
    """One watch event on a key: kind "PUT" or "DELETE", the revision it happened at, and the
    key's record (create_revision, lease, value decoded; etcd omits zero fields)."""

    def __init__(self, raw):
        self.raw = raw
        self.kind = raw.get("type", "PUT")
        kv = raw.get("kv") or {}
        self.key = _unb64(kv.get("key", ""))
        self.revision = int(kv.get("mod_revision", 0))
        self.create_revision = int(kv.get("create_revision", 0))
        self.lease = int(kv.get("lease", 0))
        self.value = _unb64(kv["value"]) if "value" in kv else None

    @property
    def is_create(self):
        return self.kind == "PUT" and self.create_revision == self.revision

    def __repr__(self):
        return "EtcdEvent(%s %s rev=%d create=%d lease=%x value=%r)" % (
            self.kind, self.key, self.revision, self.create_revision, self.lease, self.value)


class EtcdServer:
    """A private etcd (3.4) member on loopback ports. Alone (the default) it is a one-member
    cluster; EtcdCluster makes three that know each other.

    call(path, body) POSTs to the JSON gateway (/v3/...): over https with the test client
    certificate when tls (a make_test_certs() dict) is given, and with an auth token once
    enable_auth() ran. get/kv/put/delete work on keys; token_of/holder read what an agent
    wrote; events() replays a key's history (puts and deletes, expiries included) from a
    revision on, which is how tests count releases."""

    _tokens = iter(range(1, 1 << 30))

    def __init__(self, tmpdir, extra_args=(), name="lk", tls=None, fast=True, data_parent=None,
                 initial_cluster=None, cluster_token=None, client_port=None, peer_port=None):
        self.dir = tempfile.mkdtemp(prefix="etcd-", dir=tmpdir)
        if data_parent:
            self._data_root = tempfile.mkdtemp(prefix="lk-etcd-%d-" % os.getpid(),
                                               dir=data_parent)
        else:
            self._data_root = None
        self.data_dir = os.path.join(self._data_root or self.dir, "data")
        self.extra_args = list(extra_args)
        self.name = name
        self.tls = tls
        self.fast = fast
        self.initial_cluster = initial_cluster
        self.cluster_token = cluster_token or "lk-%d-%d" % (os.getpid(), next(self._tokens))
        self.client_port = client_port or free_port()
        self.peer_port = peer_port or free_port()
        self.proc = None
        self.stopped = False
        self._logf = None
        self.auth = None            # (user, password) once auth is enabled
        self._auth_token = None
        self._ssl = None

    @property
    def scheme(self):
        return "https" if self.tls else "http"

    @property
    def url(self):
        return "%s://127.0.0.1:%d" % (self.scheme, self.client_port)

    @property
    def peer_url(self):
        return "http://127.0.0.1:%d" % self.peer_port

    @property
    def log_path(self):
        return os.path.join(self.dir, "etcd.log")

    def start(self, timeout=DEFAULT_TIMEOUT * 2):
        for attempt in range(5):
            self._spawn()
            try:
                self._wait_ready(timeout)
                return self
            except _PortTaken:
                self.client_port, self.peer_port = free_port(), free_port()
                shutil.rmtree(self.data_dir, ignore_errors=True)  # it would pin the old ports
        raise AssertionError("etcd did not start (ports kept being taken)")

    def _spawn(self):
        if self._logf:
            self._logf.close()
        self._logf = open(self.log_path, "ab")
        self._log_offset = self._logf.tell()
        args = [etcd_bin(),
                "--name", self.name, "--data-dir", self.data_dir,
                "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
                "--listen-peer-urls", self.peer_url,
                "--initial-advertise-peer-urls", self.peer_url,
                "--initial-cluster", self.initial_cluster or "%s=%s" % (self.name, self.peer_url),
                "--initial-cluster-state", "new",
                "--initial-cluster-token", self.cluster_token,
                "--logger", "zap", "--log-level", "warn"]
        args += list(ETCD_FAST_ARGS if self.fast else ETCD_DEFAULT_ARGS)
        if self.tls:
            args += ["--cert-file", self.tls["server"], "--key-file", self.tls["server_key"],
                     "--trusted-ca-file", self.tls["ca"], "--client-cert-auth"]
        args += self.extra_args
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=self._logf,
                                     stderr=subprocess.STDOUT, cwd=self.dir)
        self.stopped = False

    def _log_since_spawn(self):
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._log_offset)
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def check_alive(self):
        """AssertionError (or _PortTaken) if the process exited."""
        if self.proc.poll() is not None:
            log = self._log_since_spawn()
            if "address already in use" in log:
                raise _PortTaken()
            raise AssertionError("etcd %s exited with %s:\n%s" % (self.name, self.proc.returncode,
                                                                log[-2000:]))

    def ready(self):
        """Whether a linearizable read succeeds now (the member is up and has a leader)."""
        try:
            r = self.call("/v3/kv/range", {"key": _b64("lk-ready-probe")}, timeout=1.0)
            return "header" in r
        except (OSError, ValueError, http.client.HTTPException):
            return False

    def _wait_ready(self, timeout, deadline=None):
        deadline = deadline or time.monotonic() + timeout
        while True:
            self.check_alive()
            if self.ready():
                return
            if time.monotonic() >= deadline:
                raise AssertionError("etcd at %s not answering after %.0fs:\n%s"
                                     % (self.url, timeout, self._log_since_spawn()[-2000:]))
            time.sleep(0.05)

    # -- the gateway

    def ssl_context(self):
        if not self.tls:
            return None
        if self._ssl is None:
            ctx = ssl.create_default_context(cafile=self.tls["ca"])
            ctx.load_cert_chain(self.tls["client"], self.tls["client_key"])
            self._ssl = ctx
        return self._ssl

    def _connection(self, timeout):
        if self.tls:
            return http.client.HTTPSConnection("127.0.0.1", self.client_port, timeout=timeout,
                                               context=self.ssl_context())
        return http.client.HTTPConnection("127.0.0.1", self.client_port, timeout=timeout)

    def _headers(self):
        h = {"Content-Type": "application/json"}
        if self.auth:
            if self._auth_token is None:
                self._authenticate()
            h["Authorization"] = self._auth_token
        return h

    def _authenticate(self):
        r = self._post("/v3/auth/authenticate", {"name": self.auth[0], "password": self.auth[1]},
                       5.0, {"Content-Type": "application/json"})
        if "token" not in r:
            raise AssertionError("etcd authentication as %s failed: %r" % (self.auth[0], r))
        self._auth_token = r["token"]

    def _post(self, path, body, timeout, headers):
        conn = self._connection(timeout)
        try:
            conn.request("POST", path, json.dumps(body), headers)
            r = conn.getresponse()
            data = r.read().decode()
        finally:
            conn.close()
        return json.loads(data or "{}")

    def call(self, path, body, timeout=5.0):
        """POST JSON to the gateway; returns the decoded JSON answer (HTTP errors included:
        {"error", "code", "message"}). OSError when etcd cannot be reached in time."""
        r = self._post(path, body, timeout, self._headers())
        if self.auth and "invalid auth token" in str(r.get("error", "")):
            self._auth_token = None
            r = self._post(path, body, timeout, self._headers())
        return r

    def get(self, key):
        """The value of key as text, or None (for a lock key: its holder's identity, see
        kv())."""
        kv = self.kv(key)
        return _unb64(kv.get("value", "")) if kv else None

    def kv(self, key):
        """The key's whole record (create_revision, lease...; values as etcd sends them). A
        lock key itself does not exist: a lock is a queue of candidate keys "<key>/<id>", and
        its record is the oldest candidate's, the one that leads (docs/etcd.md)."""
        r = self.call("/v3/kv/range", {"key": _b64(key)})
        if "error" in r:
            raise AssertionError("etcd range %s: %r" % (key, r))
        kvs = r.get("kvs") or []
        if kvs:
            return kvs[0]
        c = self.candidates(key, limit=1)
        return c[0] if c else None

    def candidates(self, key, limit=0):
        """The candidate keys of lock key, oldest first; each record has "name" (the key
        decoded)."""
        body = {"key": _b64(key + "/"), "range_end": _b64(key + "0"),
                "sort_order": "ASCEND", "sort_target": "CREATE"}
        if limit:
            body["limit"] = str(limit)
        r = self.call("/v3/kv/range", body)
        if "error" in r:
            raise AssertionError("etcd range %s/: %r" % (key, r))
        out = []
        for kv in r.get("kvs") or []:
            kv = dict(kv)
            kv["name"] = _unb64(kv.get("key", ""))
            out.append(kv)
        return out

    def token_of(self, key):
        """The fencing token of the tenure holding key: the base in "<key>:fence" plus the
        key's create_revision; None if there is no key."""
        kv = self.kv(key)
        if not kv:
            return None
        fence = self.get(key + ":fence")
        return int(fence or 0) + int(kv.get("create_revision", 0))

    def lease_of(self, key):
        kv = self.kv(key)
        return int(kv.get("lease", 0)) if kv else None

    def revision(self):
        """The store's current revision."""
        r = self.call("/v3/kv/range", {"key": _b64("lk-revision-probe")})
        return int(r["header"]["revision"])

    def put(self, key, value, lease=None):
        body = {"key": _b64(key), "value": _b64(value)}
        if lease:
            body["lease"] = str(lease)
        return self.call("/v3/kv/put", body)

    def delete(self, key):
        """Delete key; for a lock key, its holder's candidate key (see kv())."""
        kv = self.kv(key)
        name = kv.get("name", key) if kv else key
        return self.call("/v3/kv/deleterange", {"key": _b64(name)})

    def grant(self, ttl):
        """A new lease of ttl seconds; returns (id, granted ttl)."""
        r = self.call("/v3/lease/grant", {"TTL": str(int(ttl))})
        return int(r["ID"]), int(r.get("TTL", 0))

    def lease_ttl(self, lease_id):
        """A lease's remaining TTL in whole seconds (etcd rounds down), None once it is gone."""
        r = self.call("/v3/lease/timetolive", {"ID": str(lease_id)})
        ttl = int(r.get("TTL", 0))
        return None if ttl < 0 else ttl

    def leases(self):
        r = self.call("/v3/lease/leases", {})
        return [int(l["ID"]) for l in r.get("leases") or []]

    def events(self, key, since=0, timeout=DEFAULT_TIMEOUT):
        """Every PUT and DELETE of key after revision `since`, oldest first (EtcdEvents); for
        a lock key, of its candidate keys "<key>/..." too (see kv()). A put on the sentinel
        key <key>\\0 marks the present, so the replay is known to be complete."""
        sentinel = key + "\0"
        marker = "lk-sync-%d-%f" % (os.getpid(), time.monotonic())
        r = self.put(sentinel, marker)
        if "header" not in r:
            raise AssertionError("etcd put %r: %r" % (sentinel, r))
        upto = int(r["header"]["revision"])
        # [key, key + "0") holds key, its sentinel and "<key>/...", not "<key>:fence".
        body = {"create_request": {"key": _b64(key), "range_end": _b64(key + "0"),
                                   "start_revision": str(since + 1)}}
        conn = self._connection(timeout)
        out = []
        try:
            conn.request("POST", "/v3/watch", json.dumps(body), self._headers())
            resp = conn.getresponse()
            deadline = time.monotonic() + timeout
            while True:
                if time.monotonic() > deadline:
                    raise AssertionError("etcd watch replay of %s did not reach revision %d"
                                         % (key, upto))
                line = resp.readline()
                if not line:
                    raise AssertionError("etcd watch of %s ended early" % key)
                if not line.strip():
                    continue
                m = json.loads(line)
                if "error" in m:
                    raise AssertionError("etcd watch of %s: %r" % (key, m))
                res = m.get("result") or {}
                if res.get("canceled") or res.get("compact_revision"):
                    raise AssertionError("etcd watch of %s canceled: %r" % (key, res))
                done = False
                for raw in res.get("events") or []:
                    ev = EtcdEvent(raw)
                    if ev.key == key or ev.key.startswith(key + "/"):
                        out.append(ev)
                    elif ev.revision >= upto:
                        done = True
                if done:
                    return out
        finally:
            conn.close()

    def metric(self, name):
        """A plain gauge or counter from /metrics (sum over its labels), None if absent."""
        conn = self._connection(5.0)
        try:
            conn.request("GET", "/metrics")
            text = conn.getresponse().read().decode(errors="replace")
        finally:
            conn.close()
        total, found = 0.0, False
        for line in text.splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                total += float(line.rsplit(" ", 1)[1])
                found = True
        return total if found else None

    def watchers(self):
        """Watches open on this member (every client's, including the gateway's)."""
        return int(self.metric("etcd_debugging_mvcc_watcher_total") or 0)

    def status(self):
        """/v3/maintenance/status: member_id (header), leader, raftTerm..."""
        return self.call("/v3/maintenance/status", {}, timeout=2.0)

    def member_id(self):
        return int(self.status()["header"]["member_id"])

    def etcdctl(self, *args, endpoints=None, user=True, timeout=30):
        """Run etcdctl against this member (TLS and auth flags added); returns CompletedProcess
        with text output."""
        argv = [etcdctl_bin(), "--endpoints=" + (endpoints or self.url), "--dial-timeout=3s",
                "--command-timeout=5s"]
        if self.tls:
            argv += ["--cacert=" + self.tls["ca"], "--cert=" + self.tls["client"],
                     "--key=" + self.tls["client_key"]]
        if user and self.auth:
            argv += ["--user=%s:%s" % self.auth]
        env = dict(os.environ, ETCDCTL_API="3")
        return subprocess.run(argv + list(args), capture_output=True, text=True, timeout=timeout,
                              env=env, stdin=subprocess.DEVNULL)

    def enable_auth(self, password, user="root"):
        """Create `root` with the given password (and the root role), then `auth enable`. The
        harness's own calls authenticate from then on."""
        for args in (("user", "add", "%s:%s" % (user, password)), ("role", "add", "root"),
                     ("user", "grant-role", user, "root"), ("auth", "enable")):
            r = self.etcdctl(*args, user=False)
            if r.returncode != 0:
                raise AssertionError("etcdctl %s: %s%s" % (" ".join(args), r.stdout, r.stderr))
        self.auth = (user, password)
        self._auth_token = None
        return self

    # -- process control

    def sigstop(self):
        self.proc.send_signal(signal.SIGSTOP)
        self.stopped = True

    def sigcont(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
        self.stopped = False

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace=5.0):
        if self.proc is None:
            return
        if self.stopped:
            self.sigcont()
        _kill_wait(self.proc, signal.SIGTERM, grace)
        if self._logf:
            self._logf.close()
            self._logf = None

    def kill(self):
        """SIGKILL (a crashed member); its data is kept."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.stopped = False

    def restart(self, wipe=False, timeout=DEFAULT_TIMEOUT * 2):
        """Stop and start on the same ports; wipe=True loses all data (a new cluster)."""
        self.stop()
        if wipe:
            shutil.rmtree(self.data_dir, ignore_errors=True)
        self._auth_token = None
        self._spawn()
        self._wait_ready(timeout)
        return self

    def close(self):
        """stop(), then remove the data dir if it lives outside the temp dir."""
        self.stop()
        if self._data_root:
            shutil.rmtree(self._data_root, ignore_errors=True)

    def log_tail(self, n=15):
        try:
            with open(self.log_path, "rb") as f:
                return "\n".join(f.read().decode(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


class EtcdCluster:
    """Three (n) etcd members on loopback that form one cluster; members[i].url are the
    endpoints. call/get/kv/... go to the first member that is alive."""

    def __init__(self, tmpdir, n=3, fast=True, data_parent=None, extra_args=()):
        self.tmpdir, self.n, self.fast = tmpdir, n, fast
        self.data_parent, self.extra_args = data_parent, list(extra_args)
        self.members = []

    def start(self, timeout=DEFAULT_TIMEOUT * 3):
        for attempt in range(5):
            self._make()
            for m in self.members:
                m._spawn()
            deadline = time.monotonic() + timeout
            try:
                for m in self.members:
                    m._wait_ready(timeout, deadline)
                return self
            except _PortTaken:
                self.close()
        raise AssertionError("the etcd cluster did not start (ports kept being taken)")

    def _make(self):
        token = "lk-%d-%d" % (os.getpid(), next(EtcdServer._tokens))
        ports = []
        while len(ports) < 2 * self.n:
            p = free_port()
            if p not in ports:
                ports.append(p)
        names = ["n%d" % i for i in range(self.n)]
        cluster = ",".join("%s=http://127.0.0.1:%d" % (names[i], ports[2 * i + 1])
                           for i in range(self.n))
        self.members = [EtcdServer(self.tmpdir, extra_args=self.extra_args, name=names[i],
                                   fast=self.fast, data_parent=self.data_parent,
                                   initial_cluster=cluster, cluster_token=token,
                                   client_port=ports[2 * i], peer_port=ports[2 * i + 1])
                        for i in range(self.n)]

    @property
    def endpoints(self):
        return [m.url for m in self.members]

    @property
    def url(self):
        return self.members[0].url

    def alive_members(self):
        return [m for m in self.members if m.alive() and not m.stopped]

    def leader_index(self, timeout=DEFAULT_TIMEOUT):
        """The index of the member that is the raft leader now (waiting for one)."""
        def find():
            for m in self.alive_members():
                try:
                    st = m.status()
                except (OSError, ValueError, http.client.HTTPException):
                    continue
                leader = int(st.get("leader", 0))
                for i, x in enumerate(self.members):
                    try:
                        if leader and x.alive() and x.member_id() == leader:
                            return i + 1
                    except (OSError, ValueError, KeyError, http.client.HTTPException):
                        continue
            return None
        return wait_until(find, timeout=timeout, interval=0.05, what="an etcd raft leader") - 1

    def _any(self):
        for m in self.alive_members():
            if m.ready():
                return m
        raise AssertionError("no etcd member answers")

    def __getattr__(self, name):
        # call, get, kv, put, delete, token_of, events, ... on an alive member.
        if name in ("call", "get", "kv", "put", "delete", "token_of", "lease_of", "revision",
                    "grant", "lease_ttl", "leases", "events", "etcdctl"):
            return getattr(self._any(), name)
        raise AttributeError(name)

    def stop(self):
        for m in self.members:
            m.stop()

    def close(self):
        for m in self.members:
            m.close()

    def log_tail(self, n=10):
        return "\n".join("--- %s ---\n%s" % (m.name, m.log_tail(n)) for m in self.members)


def _b64(s):
    import base64
    return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()


def _unb64(s):
    import base64
    return base64.b64decode(s).decode(errors="surrogateescape")


# ---------------------------------------------------------------------------------------------
# TCP proxy


class TcpProxy(tcp.Relay):
    """A loopback TCP proxy between a client (the agent) and an upstream (redis).

    drop_replies: forward client->server, silently discard server->client (the server executes
    requests, the client never hears back). drop_requests: the reverse. kill_all(): close every
    current connection (new ones are still accepted). upstream_sources: the "127.0.0.1:port"
    of every upstream connection made, as Redis's MONITOR shows the client.

    delay: seconds each chunk waits, in each direction (a round trip is twice that), order
    kept; may be changed at any time (new data gets the new delay). Connecting is not
    delayed: the proxy accepts at once (a real link would cost one more round trip)."""

    def __init__(self, upstream_port, upstream_host="127.0.0.1", delay=0.0):
        super().__init__((upstream_host, upstream_port), name="proxy")
        self.delay = delay
        self.drop_replies = False
        self.drop_requests = False
        self.dropped_reply_bytes = 0
        self.dropped_request_bytes = 0
        self.forwarded = {"c2s": 0, "s2c": 0}
        self.upstream_sources = []
        _PROXIES_BY_PORT[self.port] = self
        self.start_accepting()

    def set_upstream(self, upstream_port, upstream_host="127.0.0.1", kill=True):
        """Point new connections at another upstream (a failover); kill=True also closes the
        current ones, so that clients reconnect to it."""
        self.upstream = (upstream_host, upstream_port)
        if kill:
            self.kill_all()

    def connected(self, client, up):
        self.upstream_sources.append("%s:%d" % up.getsockname()[:2])

    def due(self, direction, data):
        if direction == "s2c" and self.drop_replies:
            self.dropped_reply_bytes += len(data)
            return None
        if direction == "c2s" and self.drop_requests:
            self.dropped_request_bytes += len(data)
            return None
        return time.monotonic() + self.delay

    def sent(self, direction, n):
        self.forwarded[direction] += n


# ---------------------------------------------------------------------------------------------
# Backends under test: one interface over Redis and etcd, for scenarios that run on both


def backends_enabled():
    """The backends scenarios run on: $LK_BACKENDS (comma-separated, default "redis,etcd")."""
    v = os.environ.get("LK_BACKENDS")
    if v:
        return [x.strip() for x in v.split(",") if x.strip()]
    return ["redis", "etcd"]


class BackendUnderTest:
    """What a backend-neutral scenario needs from the server behind the agent.

    config()           the agent's `backends:` entry for it
    value/holder/token_of(key)
                       the raw value; the holder's identity; the tenure's token (Redis: the
                       number after ':' in the value; etcd: "<key>:fence" + create_revision)
    mark(), deletions(key, since=mark), creations(key, since=mark)
                       writes that happened to a key after a mark: Redis through MONITOR (DEL
                       commands, i.e. releases; expiries do not show), etcd through a replay of
                       the key's watch history (DELETE events: releases *and* expiries)
    remaining(key)     seconds until the key's lease runs out if nobody renews it, as a lower
                       bound (Redis: PTTL; etcd: the lease's TTL, which etcd rounds down)
    wait_listening(key, n)
                       until n followers listen for the key's release notice (Redis: pub/sub
                       subscribers; etcd: open watches), so they are sure to hear the next one
    intrude(key, identity, ttl)
                       another holder's key, expiring after ttl seconds
    sigstop/sigcont/stop/restart/kill, delete(key)
    """

    kind = None
    min_ttl = 0.0          # the shortest lease the server grants, seconds
    remaining_step = 0.0   # remaining() is exact to within this many seconds

    def config(self, name="main", timeout=None):
        raise NotImplementedError

    def holder(self, key):
        raise NotImplementedError

    def token_of(self, key):
        raise NotImplementedError

    def exists(self, key):
        return self.value(key) is not None

    def granted_ttl(self, ttl):
        """The lease the server gives for a configured ttl (seconds)."""
        return max(float(ttl), self.min_ttl)

    def expected_value(self, identity, token):
        raise NotImplementedError

    def log_tail(self, n=15):
        return ""


class RedisBackend(BackendUnderTest):
    kind = "redis"
    remaining_step = 0.002

    def __init__(self, server, monitor):
        self.server, self.monitor = server, monitor

    def config(self, name="main", timeout=None):
        return {"name": name, "type": "redis", "address": self.server.address,
                "timeout": timeout or "500ms"}

    @property
    def address(self):
        return self.server.address

    def value(self, key):
        return self.server.get(key)

    def holder(self, key):
        v = self.value(key)
        return None if v is None else v.rpartition(":")[0]

    def token_of(self, key):
        v = self.value(key)
        if v is None:
            return None
        tok = v.rpartition(":")[2]
        if not re.fullmatch(r"[0-9]+", tok):
            raise AssertionError("value %r of %s is not <identity>:<token>" % (v, key))
        return int(tok)

    def expected_value(self, identity, token):
        return "%s:%d" % (identity, int(token))

    def exists(self, key):
        return self.server.call("EXISTS", key) == 1

    def delete(self, key):
        return self.server.call("DEL", key)

    def remaining(self, key):
        pttl = self.server.call("PTTL", key)
        return None if pttl < 0 else pttl / 1000.0

    def intrude(self, key, identity="intruder", ttl=2.5):
        self.server.call("SET", key, "%s:1" % identity, "PX", int(ttl * 1000))

    def mark(self):
        """A position after every command Redis ran so far."""
        self.monitor.sync(self.server)
        return self.monitor.mark()

    def deletions(self, key, since=0):
        self.monitor.sync(self.server)
        return self.monitor.dels(key, since=since)

    def creations(self, key, since=0):
        """The acquire scripts that ran on key (successful or not: MONITOR shows calls)."""
        self.monitor.sync(self.server)
        return self.monitor.script_calls(key, since=since)

    def wait_listening(self, key, n=1, timeout=DEFAULT_TIMEOUT):
        channel = release_channel(key)

        def subscribed():
            r = self.server.call("PUBSUB", "NUMSUB", channel)
            return int(r[1]) >= n or int(self.server.call("PUBSUB", "NUMPAT")) >= n
        wait_until(subscribed, timeout=timeout, what="%d subscriber(s) on %s" % (n, channel))

    def sigstop(self):
        self.server.sigstop()

    def sigcont(self):
        self.server.sigcont()

    def stop(self):
        self.server.stop()

    def kill(self):
        self.server.kill()

    def restart(self):
        """Redis restarts empty (no persistence)."""
        self.server.restart()
        return self

    def log_tail(self, n=15):
        try:
            with open(self.server.log_path, "rb") as f:
                return "\n".join(f.read().decode(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


class EtcdBackend(BackendUnderTest):
    kind = "etcd"
    remaining_step = 1.0

    def __init__(self, server, extra_config=None):
        self.server = server             # an EtcdServer or an EtcdCluster
        self.extra_config = dict(extra_config or {})
        self.min_ttl = 1.0 if getattr(server, "fast", True) else 2.0

    def config(self, name="main", timeout=None, endpoints=None):
        eps = endpoints or getattr(self.server, "endpoints", None) or [self.server.url]
        d = {"name": name, "type": "etcd", "endpoints": list(eps), "timeout": timeout or "1s"}
        d.update(self.extra_config)
        return d

    @property
    def url(self):
        return self.server.url

    def value(self, key):
        return self.server.get(key)

    def holder(self, key):
        return self.value(key)

    def token_of(self, key):
        return self.server.token_of(key)

    def expected_value(self, identity, token):
        return identity

    def exists(self, key):
        return self.server.kv(key) is not None

    def delete(self, key):
        return self.server.delete(key)

    def remaining(self, key):
        lease = self.server.lease_of(key)
        if not lease:
            return None
        return self.server.lease_ttl(lease)

    def intrude(self, key, identity="intruder", ttl=3):
        """Another holder takes the lock: its leader's candidate key written over, on a lease
        of its own."""
        lease, _ = self.server.grant(ttl)
        kv = self.server.kv(key)
        self.server.put(kv["name"] if kv and "name" in kv else key, identity, lease=lease)

    def mark(self):
        return self.server.revision()

    def deletions(self, key, since=0):
        return [e for e in self.server.events(key, since) if e.kind == "DELETE"]

    def creations(self, key, since=0):
        return [e for e in self.server.events(key, since) if e.is_create]

    def wait_listening(self, key, n=1, timeout=DEFAULT_TIMEOUT):
        # etcd counts watchers, not per key; tests open no watch of their own meanwhile.
        wait_until(lambda: self.server.watchers() >= n, timeout=timeout,
                   what="%d watcher(s) on etcd" % n)

    def sigstop(self):
        self.server.sigstop()

    def sigcont(self):
        self.server.sigcont()

    def stop(self):
        self.server.stop()

    def kill(self):
        self.server.kill()

    def restart(self):
        """etcd keeps its data across a restart."""
        self.server.restart()
        return self

    def log_tail(self, n=15):
        return self.server.log_tail(n)


# ---------------------------------------------------------------------------------------------
# Config (YAML) writing


def _yaml_scalar(v):
    if v is None:
        return '""'
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    return json.dumps(str(v))  # a JSON string is a valid YAML double-quoted scalar


def to_yaml(obj, indent=0):
    """A small YAML emitter for config dicts: mappings, lists, scalars (strings double-quoted)."""
    pad = " " * indent
    lines = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(v, dict) and v:
                lines.append("%s%s:" % (pad, k))
                lines.append(to_yaml(v, indent + 2))
            elif isinstance(v, list) and v and any(isinstance(x, dict) for x in v):
                lines.append("%s%s:" % (pad, k))
                lines.append(to_yaml(v, indent + 2))
            elif isinstance(v, list):
                lines.append("%s%s: [%s]" % (pad, k, ", ".join(_yaml_scalar(x) for x in v)))
            elif isinstance(v, dict):
                lines.append("%s%s: {}" % (pad, k))
            else:
                lines.append("%s%s: %s" % (pad, k, _yaml_scalar(v)))
    elif isinstance(obj, list):
        for item in obj:
            if isinstance(item, dict):
                sub = to_yaml(item, indent + 2).split("\n")
                sub[0] = pad + "- " + sub[0][indent + 2:]
                lines.append("\n".join(sub))
            else:
                lines.append("%s- %s" % (pad, _yaml_scalar(item)))
    else:
        lines.append(pad + _yaml_scalar(obj))
    return "\n".join(lines)


def dur_ms(s):
    """Parse a Go-style duration ("1m30s", "250ms", "3s") into milliseconds (for assertions)."""
    if isinstance(s, (int, float)):
        return int(s * 1000)
    total, units = 0.0, {"h": 3600000, "m": 60000, "s": 1000, "ms": 1, "us": 0.001,
                         "µs": 0.001, "ns": 0.000001}
    for num, unit in re.findall(r"([0-9.]+)(ms|us|µs|ns|h|m|s)", s):
        total += float(num) * units[unit]
    return int(total)


def lock_config(name="x", **kw):
    """One lock entry: backend main, ttl 3s unless given. Keys are the YAML field names."""
    d = {"name": name, "backend": "main", "ttl": "3s"}
    d.update({k: v for k, v in kw.items() if v is not None})
    return d


# ---------------------------------------------------------------------------------------------
# Agent process


class Agent:
    """One `leasekeeper agent -c CONFIG` process with its own config, socket and log file.

    wrapper: a command the agent runs under, as `wrapper + [LK_BIN, "agent", "-c", CONFIG]`
    (a list, or a string split like a shell would); default $LK_AGENT_WRAPPER, if set. Every
    "{dir}" in it becomes the agent's own directory (e.g. `valgrind --log-file={dir}/vg.log`).
    The wrapper must exec the agent in its own process (valgrind does): signals go to the pid.
    Under a wrapper the agent's own waits (startup, exit, the SIGKILL margin) are multiplied
    by `slowdown`: $LK_AGENT_WRAPPER_SLOWDOWN, default 8 (1 without a wrapper)."""

    def __init__(self, tmpdir, identity="pod-a", backend_address=None, locks=None,
                 backends=None, env=None, config_text=None, backend_timeout="500ms",
                 wrapper=None, **top):
        self.tmpdir = tmpdir
        self.identity = identity
        self.name = re.sub(r"[^A-Za-z0-9._-]", "_", identity or "agent")
        self.dir = tempfile.mkdtemp(prefix="agent-%s-" % self.name, dir=tmpdir)
        self.sock_path = top.pop("socket", None) or os.path.join(self.dir, "agent.sock")
        self.config_path = os.path.join(self.dir, "leasekeeper.yaml")
        self.stderr_path = os.path.join(self.dir, "stderr.log")
        self.stdout_path = os.path.join(self.dir, "stdout.log")
        self.proc = None
        self.env = dict(env or {})
        self._signals_sent = []
        self._killed = False
        if wrapper is None:
            wrapper = os.environ.get("LK_AGENT_WRAPPER") or None
        if isinstance(wrapper, str):
            import shlex
            wrapper = shlex.split(wrapper)
        self.wrapper = [str(w).replace("{dir}", self.dir) for w in (wrapper or [])]
        self.slowdown = float(os.environ.get("LK_AGENT_WRAPPER_SLOWDOWN") or 8) \
            if self.wrapper else 1.0
        # beyond shutdown_timeout before SIGKILL on teardown
        self.stop_margin = scaled(10) * self.slowdown
        self.auth_key = None           # bytes: AppClients made by LKTestCase.connect() use it
        self.warm_wait = 0.0           # seconds start() waited for a warm Redis
        if locks is None:
            locks = [lock_config("x")]
        self.locks = [lock_config(l) if isinstance(l, str) else dict(l) for l in locks]
        if backends is None:
            backends = [{"name": "main", "type": "redis", "address": backend_address,
                         "timeout": backend_timeout}]
        cfg = {"identity": identity, "socket": self.sock_path, "http_listen": "",
               "log_format": "json", "shutdown_timeout": "15s"}
        cfg.update({k: v for k, v in top.items()})
        cfg = {k: v for k, v in cfg.items() if v is not None or k == "http_listen"}
        cfg["backends"] = backends
        cfg["locks"] = self.locks
        self.config = cfg
        self.config_text = config_text if config_text is not None else to_yaml(cfg) + "\n"
        with open(self.config_path, "w") as f:
            f.write(self.config_text)

    # -- config facts, for assertions

    def lock(self, name="x"):
        for l in self.locks:
            if l["name"] == name:
                return l
        raise KeyError(name)

    def key(self, name="x"):
        return self.lock(name).get("key") or "leasekeeper/" + name

    def value(self, token):
        """The value this agent writes for a tenure: <identity>:<token>."""
        return "%s:%d" % (self.identity, int(token))

    @property
    def shutdown_timeout(self):
        return dur_ms(self.config.get("shutdown_timeout") or "25s") / 1000.0

    # -- process

    def start(self, wait=True, timeout=DEFAULT_TIMEOUT):
        binary = lk_bin()
        if not os.path.exists(binary):
            raise AssertionError("leasekeeper binary not found at %s: build it with "
                                 "`make build/leasekeeper` or set LK_BIN" % binary)
        # A Redis that start_redis() promised warm but that is younger than a lock's ttl:
        # wait until it is not, instead of the agent's restart hold-off (docs/safety.md).
        left = warm_redis_wait(self.config.get("backends"), self.locks)
        if left > 0:
            self.warm_wait = left
            if os.environ.get("LK_TIMINGS"):
                sys.stderr.write("[harness] agent %s: waiting %.2fs for its Redis to be warm\n"
                                 % (self.identity, left))
            time.sleep(left)
        env = dict(os.environ)
        env.update(SANITIZER_ENV)
        env.update(self.env)
        self._errf = open(self.stderr_path, "ab")
        self._outf = open(self.stdout_path, "ab")
        self.proc = subprocess.Popen(self.wrapper + [binary, "agent", "-c", self.config_path],
                                     stdin=subprocess.DEVNULL, stdout=self._outf,
                                     stderr=self._errf, env=env, cwd=self.dir)
        if wait:
            self.wait_ready(timeout * self.slowdown)
        return self

    def wait_ready(self, timeout=DEFAULT_TIMEOUT):
        """Wait until the socket accepts a connection and the agent sends its banner on it
        (then close that probe connection). A listening socket alone is not enough: the
        kernel accepts connections as soon as listen() returns, which may be before the agent
        has finished starting (HTTP listener, signal handlers) and runs its loop."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError("agent %s exited with %s before its socket was ready:\n%s"
                                     % (self.identity, self.proc.returncode, self.tail()))
            if os.path.exists(self.sock_path):
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.settimeout(max(0.1, min(2.0, deadline - time.monotonic())))
                try:
                    s.connect(self.sock_path)
                    data = b""
                    while b"\n" not in data:
                        chunk = s.recv(4096)
                        if not chunk:
                            break
                        data += chunk
                    # A banner, or (full of clients) an ERR: either way the loop runs.
                    if data.startswith((b"LEASEKEEPER ", b"ERR ")):
                        return self
                except OSError:
                    pass
                finally:
                    s.close()
            if time.monotonic() >= deadline:
                raise AssertionError("agent %s socket %s not accepting after %.0fs:\n%s"
                                     % (self.identity, self.sock_path, timeout, self.tail()))
            time.sleep(0.02)

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def send_signal(self, sig=signal.SIGTERM):
        self._signals_sent.append(sig)
        self.proc.send_signal(sig)

    def wait(self, timeout=DEFAULT_TIMEOUT):
        """Wait for exit (timeout times slowdown); returns the exit status. AssertionError if
        still running."""
        timeout *= self.slowdown
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError("agent %s still running after %.1fs:\n%s"
                                 % (self.identity, timeout, self.tail()))

    def stop(self, grace=None):
        """SIGTERM (a drain), wait up to shutdown_timeout + margin, then SIGKILL.
        Returns (returncode, killed)."""
        if self.proc is None:
            return None, False
        if grace is None:
            grace = self.shutdown_timeout + self.stop_margin
        if self.proc.poll() is None:
            self._signals_sent.append(signal.SIGTERM)
        rc, killed = _kill_wait(self.proc, signal.SIGTERM, grace)
        self._killed = self._killed or killed
        return rc, killed

    def close_files(self):
        for f in (getattr(self, "_errf", None), getattr(self, "_outf", None)):
            if f:
                f.close()

    # -- logs

    def logs(self):
        """stderr as text."""
        try:
            with open(self.stderr_path, "rb") as f:
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def log_entries(self):
        """Every stderr line that is a whole log line (JSON or logfmt), as parse_log_line()."""
        return [e for e in map(parse_log_line, self.logs().splitlines()) if e is not None]

    def find_logs(self, msg):
        return [e for e in self.log_entries() if e.get("msg") == msg]

    def drain_summaries(self):
        return self.find_logs("drain complete")

    def drain_summary(self):
        """The one `drain complete` line (AssertionError unless there is exactly one)."""
        s = self.drain_summaries()
        if len(s) != 1:
            raise AssertionError("expected exactly one 'drain complete' log line, found %d:\n%s"
                                 % (len(s), self.tail()))
        return s[0]

    def tail(self, n=60):
        return "\n".join(self.logs().splitlines()[-n:])

    def sanitizer_reports(self):
        text = self.logs()
        return [ln for ln in text.splitlines() if any(p in ln for p in SANITIZER_PATTERNS)]


_LOGFMT_KV = r'[A-Za-z0-9_.]+=(?:"(?:[^"\\]|\\.)*"|[^\s"]*)'
_LOGFMT_LINE_RE = re.compile(r'^%s(?: %s)*$' % (_LOGFMT_KV, _LOGFMT_KV))
_LOGFMT_PAIR_RE = re.compile(r'([A-Za-z0-9_.]+)=("(?:[^"\\]|\\.)*"|[^\s"]*)')
_LOGFMT_ESC_RE = re.compile(r'\\(x[0-9a-fA-F]{2}|.)')


def _logfmt_unquote(v):
    r"""A value as agent/log.c put_text_value() writes it: quoted when empty or holding a space,
    a quote, '=' or a control character; inside quotes '"' and '\\' are backslash-escaped and
    control characters are \xNN."""
    return _LOGFMT_ESC_RE.sub(lambda m: chr(int(m.group(1)[1:], 16)) if len(m.group(1)) == 3
                              else m.group(1), v[1:-1])


def parse_log_line(line):
    """One whole log line of the agent, in either log_format, as a dict with at least ts, level
    and msg; None for anything else (a partial line, a sanitizer report...).

    json: the object as is. text (logfmt, `ts=... level=... msg=... key=value ...`): unquoted
    values that are integers or true/false become int/bool, as the JSON format types them."""
    line = line.strip()
    if line.startswith("{"):
        try:
            v = json.loads(line)
        except ValueError:
            return None
    elif _LOGFMT_LINE_RE.match(line):
        v = {}
        for k, val in _LOGFMT_PAIR_RE.findall(line):
            if val.startswith('"'):
                val = _logfmt_unquote(val)
            elif re.fullmatch(r"-?\d+", val):
                val = int(val)
            elif val in ("true", "false"):
                val = val == "true"
            v[k] = val
    else:
        return None
    if not isinstance(v, dict) or not all(k in v for k in ("ts", "level", "msg")):
        return None
    return v


# ---------------------------------------------------------------------------------------------
# The app side of the protocol


class ConnectionClosed(AssertionError):
    """The agent closed the connection (EOF) while a reply or event was awaited."""


class Msg:
    """One line from the agent, timestamped on arrival (t: monotonic, wall: time.time())."""

    def __init__(self, raw, t, wall):
        self.raw, self.t, self.wall = raw, t, wall
        self.words = raw.split(" ") if raw else []
        self.kind = self.words[0] if self.words else ""
        self.attrs = {}
        for w in self.words[1:]:
            if "=" in w:
                k, v = w.split("=", 1)
                self.attrs[k] = v

    @property
    def is_reply(self):
        return self.kind in ("OK", "ERR")

    @property
    def is_event(self):
        return self.kind in EVENT_KINDS

    @property
    def lock(self):
        if self.kind in LOCK_EVENTS and len(self.words) > 1:
            return self.words[1]
        return None

    # replies
    @property
    def ok(self):
        return self.kind == "OK"

    @property
    def verb(self):
        return self.words[1] if self.kind == "OK" and len(self.words) > 1 else None

    @property
    def code(self):
        return self.words[1] if self.kind == "ERR" and len(self.words) > 1 else None

    @property
    def rest(self):
        """The text after "OK <VERB> "."""
        parts = self.raw.split(" ", 2)
        return parts[2] if len(parts) > 2 else ""

    # event attributes
    def int(self, name):
        if name not in self.attrs:
            raise AssertionError("%r has no %s=" % (self.raw, name))
        try:
            return int(self.attrs[name])
        except ValueError:
            raise AssertionError("%r: %s= is not an integer" % (self.raw, name))

    @property
    def token(self):
        return self.int("token")

    def __getitem__(self, k):
        return self.attrs[k]

    def get(self, k, default=None):
        return self.attrs.get(k, default)

    def __repr__(self):
        return "<%s>" % self.raw


_EOF = object()


class AppClient:
    """A protocol client over the agent's Unix socket, as an app would use it.

    A reader thread timestamps every line on arrival. call() waits for the reply and queues
    events that come first; next_event()/expect() hand events out in order and skip nothing
    unless a caller explicitly allows it (await_event(allow=...)). raw access: send_raw(),
    read_line(), expect_eof(), and the socket itself (.sock)."""

    def __init__(self, path, hello=True, client_name="test", key=None, mac=None,
                 timeout=DEFAULT_TIMEOUT, label=None):
        self.path = path
        # auto_ack: the reader thread answers each STEPDOWN with its ACK at once, as an app
        # with nothing to finish would; its "OK ACK" reply is kept out of call()'s way. The
        # benchmarks use it so that a handoff's time is not the GIL's hop to the main thread.
        self.auto_ack = False
        self._auto_acks = 0
        self.label = label or client_name or "client"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.sock.settimeout(None)
        self._q = deque()
        self._cond = threading.Condition()
        self.history = []        # every Msg received, in order (for failure messages)
        self.sent = []           # (monotonic time, line) of everything sent
        self.pending_events = deque()
        self.pending_replies = deque()
        # RENEWED events come after every renewal; the scenarios that are not about them read
        # the tenure's story without them. They are kept here, or handed out like any other
        # event when keep_renewed is set.
        self.renewals = []
        self.keep_renewed = False
        self.eof = False
        self.eof_at = None
        self.eof_error = None
        self.closed = False
        self._reader = threading.Thread(target=self._read_loop, name="app-" + self.label,
                                        daemon=True)
        self._reader.start()
        self.banner = None
        self.banner_attrs = {}
        self.hello_reply = None
        if hello is not False:
            self.read_banner(timeout)
            r = self.hello(client_name=client_name, key=key, mac=mac, timeout=timeout)
            if not r.ok:
                raise AssertionError("HELLO refused: %s" % r.raw)

    # -- transport

    def _read_loop(self):
        buf = b""
        while True:
            try:
                data = self.sock.recv(65536)
            except OSError as e:
                data = b""
                self.eof_error = e
            now, wall = time.monotonic(), time.time()
            if not data:
                with self._cond:
                    if buf:
                        self._q.append(Msg(buf.decode(errors="backslashreplace"), now, wall))
                    self._q.append(_EOF)
                    self._cond.notify_all()
                return
            buf += data
            with self._cond:
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if line.endswith(b"\r"):
                        line = line[:-1]
                    m = Msg(line.decode(errors="backslashreplace"), now, wall)
                    if self.auto_ack and self._auto_ack(m):
                        continue
                    self._q.append(m)
                self._cond.notify_all()

    def _auto_ack(self, m):
        """The reader's half of auto_ack: True if m is the reply to an ACK it sent."""
        if self._auto_acks and m.raw.startswith("OK ACK "):
            self._auto_acks -= 1
            self.history.append(m)
            return True
        f = m.raw.split()
        if len(f) >= 3 and f[0] == "STEPDOWN" and f[2].startswith("token="):
            self._auto_acks += 1
            self.send("ACK %s %s" % (f[1], f[2][len("token="):]))
        return False

    def _next_line(self, timeout):
        """Next Msg from the wire, None on timeout, _EOF on EOF."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._q:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)
            m = self._q.popleft()
            if m is _EOF:
                self._q.appendleft(_EOF)  # EOF is sticky
                if not self.eof:
                    self.eof, self.eof_at = True, time.monotonic()
                return _EOF
            self.history.append(m)
            return m

    def send(self, line):
        if isinstance(line, str):
            line = line.encode()
        if not line.endswith(b"\n"):
            line += b"\n"
        self.sent.append((time.monotonic(), line.decode(errors="replace").rstrip("\n")))
        self.sock.sendall(line)

    def send_raw(self, data):
        self.sent.append((time.monotonic(), repr(data)))
        self.sock.sendall(data)

    def read_line(self, timeout=DEFAULT_TIMEOUT):
        """The next line whatever it is (for raw tests). ConnectionClosed on EOF,
        AssertionError on timeout."""
        if self.pending_replies or self.pending_events:
            raise AssertionError("read_line() with queued messages; use call()/next_event()")
        m = self._next_line(timeout)
        if m is None:
            raise AssertionError("%s: no line within %.1fs%s" % (self.label, timeout,
                                                                self._context()))
        if m is _EOF:
            raise ConnectionClosed("%s: connection closed by the agent%s"
                                   % (self.label, self._context()))
        return m

    def expect_eof(self, timeout=DEFAULT_TIMEOUT, allow_lines=False):
        """Assert the agent closes the connection within timeout. Lines before EOF are an
        error unless allow_lines (then they are returned)."""
        extra = list(self.pending_replies) + list(self.pending_events)
        self.pending_replies.clear()
        self.pending_events.clear()
        deadline = time.monotonic() + timeout
        while True:
            m = self._next_line(max(0.0, deadline - time.monotonic()))
            if m is _EOF:
                break
            if m is None:
                raise AssertionError("%s: connection not closed within %.1fs%s"
                                     % (self.label, timeout, self._context()))
            extra.append(m)
        if extra and not allow_lines:
            raise AssertionError("%s: unexpected lines before EOF: %s" % (self.label, extra))
        return extra

    def is_open(self, wait=0.2):
        """True if no EOF has arrived (waiting up to `wait` for one); does not consume lines."""
        deadline = time.monotonic() + wait
        with self._cond:
            while True:
                if self._q and self._q[-1] is _EOF:
                    return False
                left = deadline - time.monotonic()
                if left <= 0:
                    return True
                self._cond.wait(left)

    def _context(self):
        h = self.history[-12:]
        s = self.sent[-6:]
        return "\n  last lines received: %s\n  last lines sent: %s" % (
            [m.raw for m in h], [x[1] for x in s])

    # -- handshake

    def read_banner(self, timeout=DEFAULT_TIMEOUT):
        m = self.read_line(timeout)
        if m.kind != "LEASEKEEPER":
            raise AssertionError("%s: expected the banner, got %r" % (self.label, m.raw))
        self.banner = m
        self.banner_attrs = m.attrs
        if len(m.words) < 2 or m.words[1] != "1":
            raise AssertionError("banner does not announce protocol 1: %r" % m.raw)
        nonce = m.attrs.get("nonce", "")
        if not re.fullmatch(r"[0-9a-fA-F]{64}", nonce):
            raise AssertionError("banner nonce is not 64 hex digits: %r" % m.raw)
        if m.attrs.get("auth") not in ("none", "hmac"):
            raise AssertionError("banner auth= is not none|hmac: %r" % m.raw)
        return m

    @staticmethod
    def compute_mac(key, nonce_hex):
        """HMAC-SHA-512-256 as libsodium crypto_auth: HMAC-SHA-512 truncated to 32 bytes."""
        return hmac.new(key, bytes.fromhex(nonce_hex), hashlib.sha512).digest()[:32].hex()

    def hello(self, client_name="test", key=None, mac=None, version=1,
              timeout=DEFAULT_TIMEOUT):
        line = "HELLO %s" % version
        if client_name:
            line += " client=%s" % client_name
        if mac is None and key is not None:
            mac = self.compute_mac(key, self.banner_attrs["nonce"])
        if mac:
            line += " mac=%s" % mac
        self.hello_reply = self.call(line, timeout=timeout)
        return self.hello_reply

    # -- requests

    def read_reply(self, timeout=DEFAULT_TIMEOUT):
        """The next reply (OK/ERR), queueing events that come before it."""
        if self.pending_replies:
            return self.pending_replies.popleft()
        deadline = time.monotonic() + timeout
        while True:
            m = self._next_line(max(0.0, deadline - time.monotonic()))
            if m is None:
                raise AssertionError("%s: no reply within %.1fs%s"
                                     % (self.label, timeout, self._context()))
            if m is _EOF:
                raise ConnectionClosed("%s: connection closed while awaiting a reply%s"
                                       % (self.label, self._context()))
            if m.is_reply:
                return m
            if m.kind == "RENEWED" and not self.keep_renewed:
                self.renewals.append(m)
            elif m.is_event:
                self.pending_events.append(m)
            else:
                raise AssertionError("%s: line that is neither reply nor event: %r"
                                     % (self.label, m.raw))

    def call(self, line, timeout=DEFAULT_TIMEOUT):
        self.send(line)
        return self.read_reply(timeout)

    def call_ok(self, line, timeout=DEFAULT_TIMEOUT):
        """call() and assert `OK <VERB>` for the request's verb; returns the reply."""
        r = self.call(line, timeout)
        verb = line.split(" ", 1)[0].upper()
        expect = {"PING": "PONG", "QUIT": "BYE"}.get(verb, verb)
        if not (r.ok and r.verb == expect):
            raise AssertionError("%s: %r answered %r, expected OK %s"
                                 % (self.label, line, r.raw, expect))
        return r

    def status(self, timeout=DEFAULT_TIMEOUT):
        """STATUS, parsed: the JSON object after `OK STATUS `."""
        r = self.call_ok("STATUS", timeout)
        try:
            return json.loads(r.rest)
        except ValueError as e:
            raise AssertionError("STATUS reply is not one-line JSON: %r (%s)" % (r.raw, e))

    # -- events

    def next_event(self, timeout=DEFAULT_TIMEOUT):
        """The next event, or None on timeout. ConnectionClosed on EOF. A reply that arrives
        meanwhile is kept for read_reply()."""
        if self.pending_events:
            return self.pending_events.popleft()
        deadline = time.monotonic() + timeout
        while True:
            m = self._next_line(max(0.0, deadline - time.monotonic()))
            if m is None:
                return None
            if m is _EOF:
                raise ConnectionClosed("%s: connection closed while awaiting an event%s"
                                       % (self.label, self._context()))
            if m.kind == "RENEWED" and not self.keep_renewed:
                self.renewals.append(m)
                continue
            if m.is_event:
                return m
            if m.is_reply:
                self.pending_replies.append(m)
            else:
                raise AssertionError("%s: line that is neither reply nor event: %r"
                                     % (self.label, m.raw))

    def expect(self, kind, lock=None, timeout=DEFAULT_TIMEOUT, **attrs):
        """The next event, asserting its kind (and lock, and any attrs given as strings or
        ints). Nothing is skipped."""
        ev = self.next_event(timeout)
        if ev is None:
            raise AssertionError("%s: no event within %.1fs, expected %s%s"
                                 % (self.label, timeout, kind, self._context()))
        self._check(ev, kind, lock, attrs)
        return ev

    def _check(self, ev, kind, lock, attrs):
        if ev.kind != kind or (lock is not None and ev.lock != lock):
            raise AssertionError("%s: expected %s%s, got %r%s" % (
                self.label, kind, " " + lock if lock else "", ev.raw, self._context()))
        for k, v in attrs.items():
            if ev.attrs.get(k) != str(v):
                raise AssertionError("%s: expected %s=%s in %r" % (self.label, k, v, ev.raw))

    def await_event(self, kind, lock=None, allow=("FOLLOWER",), timeout=DEFAULT_TIMEOUT,
                    **attrs):
        """Wait for an event of `kind`, skipping only events whose kind is in `allow` (an
        explicit list, e.g. FOLLOWER updates while waiting for LEADER). Returns (event,
        skipped). Any other event fails the test."""
        deadline = time.monotonic() + timeout
        skipped = []
        while True:
            left = deadline - time.monotonic()
            ev = self.next_event(max(0.0, left))
            if ev is None:
                raise AssertionError("%s: no %s within %.1fs (skipped %s)%s" % (
                    self.label, kind, timeout, [e.raw for e in skipped], self._context()))
            if ev.kind == kind and (lock is None or ev.lock == lock):
                self._check(ev, kind, lock, attrs)
                return ev, skipped
            if ev.kind in allow and (lock is None or ev.lock in (lock, None)):
                skipped.append(ev)
                continue
            raise AssertionError("%s: while waiting for %s got %r%s"
                                 % (self.label, kind, ev.raw, self._context()))

    def await_follower(self, lock, holder, timeout=DEFAULT_TIMEOUT):
        """Wait for `FOLLOWER <lock> holder=<holder>`, accepting only `FOLLOWER <lock> holder=-`
        updates before it (the agent may report "nobody known" before its first attempt
        returns). Returns (event, skipped)."""
        deadline = time.monotonic() + timeout
        skipped = []
        while True:
            ev = self.expect("FOLLOWER", lock, timeout=max(0.05, deadline - time.monotonic()))
            if ev.get("holder") == holder:
                return ev, skipped
            if ev.get("holder") != "-":
                raise AssertionError("%s: expected FOLLOWER %s holder=%s, got %r%s"
                                     % (self.label, lock, holder, ev.raw, self._context()))
            skipped.append(ev)

    def events_for(self, duration):
        """Every event that arrives within `duration` seconds (stops early at EOF)."""
        out = []
        deadline = time.monotonic() + duration
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return out
            try:
                ev = self.next_event(left)
            except ConnectionClosed:
                return out
            if ev is None:
                return out
            out.append(ev)

    def until_eof(self, timeout=DEFAULT_TIMEOUT):
        """Every event and reply until the agent closes the connection (which must happen
        within timeout)."""
        out = list(self.pending_events) + list(self.pending_replies)
        self.pending_events.clear()
        self.pending_replies.clear()
        out.sort(key=lambda m: m.t)
        deadline = time.monotonic() + timeout
        while True:
            m = self._next_line(max(0.0, deadline - time.monotonic()))
            if m is _EOF:
                return out
            if m is None:
                raise AssertionError("%s: no EOF within %.1fs; got %s%s"
                                     % (self.label, timeout, [x.raw for x in out],
                                        self._context()))
            out.append(m)

    def assert_no_event(self, duration=0.3):
        evs = self.events_for(duration)
        if evs:
            raise AssertionError("%s: unexpected events %s" % (self.label, [e.raw for e in evs]))

    # -- conveniences

    def campaign(self, lock="x", timeout=DEFAULT_TIMEOUT):
        """CAMPAIGN and wait to lead; FOLLOWER updates before LEADER are allowed. Returns the
        LEADER event."""
        self.call_ok("CAMPAIGN %s" % lock, timeout)
        ev, _ = self.await_event("LEADER", lock, allow=("FOLLOWER",), timeout=timeout)
        return ev

    def close(self):
        if self.closed:
            return
        self.closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self._reader.join(timeout=5)


# ---------------------------------------------------------------------------------------------
# CLI


class CliResult:
    def __init__(self, args, rc, stdout, stderr, elapsed):
        self.args, self.rc, self.stdout, self.stderr, self.elapsed = args, rc, stdout, stderr, \
            elapsed

    @property
    def output(self):
        return self.stdout + self.stderr

    def __repr__(self):
        return "CliResult(%s rc=%s stdout=%r stderr=%r)" % (
            " ".join(self.args), self.rc, self.stdout[-2000:], self.stderr[-2000:])


def _cli_env(env=None):
    e = dict(os.environ)
    e.update(SANITIZER_ENV)
    e.pop("LEASEKEEPER_SOCKET", None)
    if env:
        e.update(env)
    return e


def run_cli(args, timeout=30.0, env=None, input=None):
    """Run `leasekeeper ARGS...`; returns a CliResult (rc, stdout, stderr)."""
    argv = [lk_bin()] + list(args)
    t0 = time.monotonic()
    try:
        p = subprocess.run(argv, capture_output=True, timeout=timeout, env=_cli_env(env),
                           input=input, stdin=None if input is not None else subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        raise AssertionError("`%s` did not finish within %.0fs (stdout=%r stderr=%r)"
                             % (" ".join(args), timeout, e.stdout, e.stderr))
    return CliResult(list(args), p.returncode, p.stdout.decode(errors="replace"),
                     p.stderr.decode(errors="replace"), time.monotonic() - t0)


class CliProcess:
    """A CLI command running in the background (e.g. `leasekeeper drain` fired concurrently)."""

    def __init__(self, args, env=None, tmpdir=None):
        self.args = list(args)
        d = tmpdir or tempfile.gettempdir()
        fd, self.out_path = tempfile.mkstemp(prefix="cli-out-", dir=d)
        os.close(fd)
        fd, self.err_path = tempfile.mkstemp(prefix="cli-err-", dir=d)
        os.close(fd)
        self._out = open(self.out_path, "wb")
        self._err = open(self.err_path, "wb")
        self.started = time.monotonic()
        self.proc = subprocess.Popen([lk_bin()] + self.args, stdin=subprocess.DEVNULL,
                                     stdout=self._out, stderr=self._err, env=_cli_env(env))

    def wait(self, timeout=DEFAULT_TIMEOUT):
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError("`%s` still running after %.0fs (stdout=%r stderr=%r)"
                                 % (" ".join(self.args), timeout, self.stdout(), self.stderr()))
        self.ended = time.monotonic()
        return rc

    def stdout(self):
        with open(self.out_path, "rb") as f:
            return f.read().decode(errors="replace")

    def stderr(self):
        with open(self.err_path, "rb") as f:
            return f.read().decode(errors="replace")

    def stop(self):
        _kill_wait(self.proc, signal.SIGTERM, 3.0)
        self._out.close()
        self._err.close()


# ---------------------------------------------------------------------------------------------
# Test case base


class LKTestCase(unittest.TestCase):
    """Base class: a temp dir per test, and start_* helpers whose products are always stopped
    (addCleanup, in reverse order of creation: clients, then agents, then proxies and redis).

    After a failure the tail of every agent's log is printed, to make CI failures readable."""

    maxDiff = None

    def setUp(self):
        super().setUp()
        self.tmp = tempfile.mkdtemp(prefix="lk-it-", dir="/tmp")  # short: socket paths < 108
        if os.environ.get("LK_TIMINGS"):
            t0 = time.monotonic()
            self.addCleanup(lambda: sys.stderr.write("[timing] %6.2fs %s\n"
                                                     % (time.monotonic() - t0, self.id())))
        self.addCleanup(self._remove_tmp)
        self.agents = []
        self.redises = []
        self.etcds = []
        self.addCleanup(self._dump_on_failure)
        redis_pool()  # warm spares up early (no-op once filled)

    # -- cleanup helpers

    def _failed(self):
        """Whether this test has failed so far (usable from cleanups, where unittest's own
        outcome.success is reset for each cleanup)."""
        outcome = getattr(self, "_outcome", None)
        if outcome is None:
            return False
        result = getattr(outcome, "result", None)
        if result is not None:
            for t, _ in list(getattr(result, "failures", [])) + list(getattr(result, "errors", [])):
                if t is self or getattr(t, "test_case", None) is self:
                    return True
        return not getattr(outcome, "success", True)

    def _remove_tmp(self):
        # Pooled redis-servers live outside self.tmp (they were started before the test).
        pooled = [r.dir for r in self.redises if r.pooled]
        if os.environ.get("LK_KEEP_TMP") or (self._failed() and
                                             os.environ.get("LK_KEEP_FAILED_TMP")):
            sys.stderr.write("\n[harness] kept temp dir %s%s\n" % (
                self.tmp, "".join(" and " + d for d in pooled)))
            return
        shutil.rmtree(self.tmp, ignore_errors=True)
        for d in pooled:
            shutil.rmtree(d, ignore_errors=True)

    def _dump_on_failure(self):
        if not self._failed():
            return
        for a in self.agents:
            sys.stderr.write("\n----- agent %s (pid %s) stderr, last lines -----\n%s\n"
                             % (a.identity, a.proc.pid if a.proc else "-", a.tail(80)))
        for r in self.redises:
            try:
                with open(r.log_path, "rb") as f:
                    tail = f.read().decode(errors="replace").splitlines()[-15:]
                sys.stderr.write("----- redis :%d log, last lines -----\n%s\n"
                                 % (r.port, "\n".join(tail)))
            except OSError:
                pass
        for e in self.etcds:
            sys.stderr.write("----- etcd %s log, last lines -----\n%s\n"
                             % (getattr(e, "url", "?"), e.log_tail(15)))

    # -- starters

    def start_redis(self, extra_args=(), port=None, fresh=False):
        """A running, empty redis-server, stopped after the test. With default arguments it
        comes from this process's RedisPool: it has been up a while, so agents need not hold
        off their first tenure (and Agent.start() waits for the rest, if any). fresh=True (or a
        port, or extra args) starts a new one now: an agent's first tenure then waits until it
        has been up for the lock's ttl."""
        r = None
        if not fresh and port is None and not extra_args:
            pool = redis_pool()
            if pool is not None:
                r = pool.take()
        if r is None:
            r = RedisServer(self.tmp, port=port, extra_args=extra_args)
            self.addCleanup(r.stop)
            r.start()
        else:
            self.addCleanup(r.stop)
        r.warm_generation = None if fresh else r.generation
        self.redises.append(r)
        return r

    def _etcd_data_parent(self):
        parent = _etcd_data_parent()
        if parent:
            _sweep_stale_etcd_data(parent)
        return parent

    def start_etcd(self, extra_args=(), tls=None, fast=True):
        """A one-member etcd; tls=make_certs() serves https and requires client certs."""
        if not have_etcd():
            self.skipTest("no etcd binary (install etcd, or set ETCD)")
        e = EtcdServer(self.tmp, extra_args=extra_args, tls=tls, fast=fast,
                       data_parent=self._etcd_data_parent())
        self.addCleanup(e.close)
        self.etcds.append(e)
        e.start()
        return e

    def start_etcd_cluster(self, n=3, fast=True):
        if not have_etcd():
            self.skipTest("no etcd binary (install etcd, or set ETCD)")
        c = EtcdCluster(self.tmp, n=n, fast=fast, data_parent=self._etcd_data_parent())
        self.addCleanup(c.close)
        self.etcds.append(c)
        c.start()
        return c

    def make_certs(self):
        """make_test_certs() in this test's temp dir (made once per test)."""
        if getattr(self, "_certs", None) is None:
            self._certs = make_test_certs(os.path.join(self.tmp, "pki"))
        return self._certs

    def start_backend(self, kind, **kw):
        """A BackendUnderTest of that kind ("redis" or "etcd"), started; the test is skipped
        when the kind is not in backends_enabled() or its server is not installed."""
        if kind not in backends_enabled():
            self.skipTest("backend %s not enabled (LK_BACKENDS=%s)"
                          % (kind, ",".join(backends_enabled())))
        if kind == "redis":
            r = self.start_redis(**kw)
            return RedisBackend(r, self.monitor(r))
        if kind == "etcd":
            return EtcdBackend(self.start_etcd(**kw))
        raise ValueError("unknown backend kind %r" % kind)

    def start_proxy(self, upstream):
        port = upstream.port if hasattr(upstream, "port") else int(upstream)
        p = TcpProxy(port)
        self.addCleanup(p.close)
        return p

    def monitor(self, redis):
        m = redis.monitor()
        self.addCleanup(m.stop)
        return m

    def make_agent(self, identity="pod-a", redis=None, locks=None, **kw):
        """An Agent whose config is written but which is not started yet."""
        if isinstance(redis, (EtcdServer, EtcdCluster)):
            redis = EtcdBackend(redis)
        if isinstance(redis, BackendUnderTest):
            if "backends" not in kw:
                kw["backends"] = [redis.config(timeout=kw.pop("backend_timeout", None))]
        elif redis is not None and "backend_address" not in kw and "backends" not in kw:
            kw["backend_address"] = redis.address if hasattr(redis, "address") else redis
        a = Agent(self.tmp, identity=identity, locks=locks, **kw)
        self.agents.append(a)
        self.addCleanup(self._teardown_agent, a)
        return a

    def start_agent(self, identity="pod-a", redis=None, locks=None, **kw):
        a = self.make_agent(identity, redis, locks, **kw)
        a.start()
        return a

    def _teardown_agent(self, a):
        """Stop the agent (SIGTERM, then SIGKILL) and fail on crashes and sanitizer reports."""
        if a.proc is None or getattr(a, "_torn_down", False):
            return
        a._torn_down = True
        problems = []
        if a.proc.poll() is None:
            rc, killed = a.stop()
            if killed:
                problems.append("agent %s did not exit within shutdown_timeout + margin after "
                                "SIGTERM and was killed" % a.identity)
        rc = a.proc.returncode
        a.close_files()
        if rc is not None and rc < 0 and -rc != signal.SIGKILL:
            problems.append("agent %s died from signal %d" % (a.identity, -rc))
        reports = a.sanitizer_reports()
        if reports:
            problems.append("sanitizer reports in agent %s stderr:\n%s"
                            % (a.identity, "\n".join(reports[:40])))
        if problems:
            raise AssertionError("\n".join(problems) + "\n----- stderr tail -----\n" + a.tail(120))

    def connect(self, agent, **kw):
        """An AppClient connected to agent (HELLO done unless hello=False)."""
        path = agent.sock_path if isinstance(agent, Agent) else agent
        if isinstance(agent, Agent) and "key" not in kw and getattr(agent, "auth_key", None) \
                and kw.get("hello", True):
            kw["key"] = agent.auth_key
        c = AppClient(path, **kw)
        self.addCleanup(c.close)
        return c

    def leader_app(self, agent, lock="x", **kw):
        """Connect, CAMPAIGN, and wait for LEADER. Returns (client, LEADER event)."""
        kw.setdefault("client_name", "app-" + agent.name)
        kw.setdefault("label", "app@" + agent.identity)
        app = self.connect(agent, **kw)
        ev = app.campaign(lock)
        return app, ev

    def lead_and_follow(self, backends, lock="x", **lock_kw):
        """Two agents on `backends` (whose config check-config must take): pod-a's app leads
        `lock`, pod-b's follows it. Returns (pod-a's agent, its app, its LEADER event, pod-b's
        app)."""
        locks = [lock_config(lock, **lock_kw)]
        a = self.start_agent("pod-a", locks=locks, backends=backends)
        b = self.start_agent("pod-b", locks=locks, backends=backends)
        res = self.cli("check-config", "-c", a.config_path)
        self.assertEqual(res.rc, 0, res.output)
        app_a, lead = self.leader_app(a, lock)
        app_b = self.connect(b)
        app_b.call_ok("CAMPAIGN %s" % lock)
        app_b.await_follower(lock, "pod-a")
        return a, app_a, lead, app_b

    def drain_handoff(self, agent, app, lead, successor, lock="x"):
        """SIGTERM agent, whose app leads lock with the LEADER event lead; the app ACKs its
        STEPDOWN; wait for successor's LEADER. Returns (that event, seconds since the
        SIGTERM)."""
        t = time.monotonic()
        agent.send_signal()
        app.expect("STEPDOWN", lock)
        app.call_ok("ACK %s %d" % (lock, lead.token))
        ev, _ = successor.await_event("LEADER", lock, timeout=DEFAULT_TIMEOUT)
        return ev, ev.t - t

    def cli(self, *args, timeout=30.0, env=None):
        """run_cli, failing the test on sanitizer reports in the CLI's stderr."""
        r = run_cli(args, timeout=timeout, env=env)
        self.assertNoSanitizerReports(r.stderr, "leasekeeper " + " ".join(args))
        return r

    def start_cli(self, *args, env=None):
        p = CliProcess(args, env=env, tmpdir=self.tmp)
        self.addCleanup(self._teardown_cli, p)
        return p

    def _teardown_cli(self, p):
        p.stop()
        self.assertNoSanitizerReports(p.stderr(), "leasekeeper " + " ".join(p.args))

    # -- assertions

    def assertNoSanitizerReports(self, text, what):
        bad = [ln for ln in text.splitlines() if any(p in ln for p in SANITIZER_PATTERNS)]
        if bad:
            self.fail("sanitizer reports from %s:\n%s" % (what, "\n".join(bad[:40])))

    def assertKeyValue(self, redis, key, value, msg=None):
        self.assertEqual(redis.get(key), value, msg or "value of %s in redis" % key)

    def wait_key_gone(self, redis, key, timeout=DEFAULT_TIMEOUT, interval=0.02):
        """Wait until key is gone (redis: a RedisServer or any BackendUnderTest); returns the
        monotonic time it was first seen gone."""
        if isinstance(redis, BackendUnderTest):
            gone = lambda: not redis.exists(key)  # noqa: E731
        else:
            gone = lambda: redis.call("EXISTS", key) == 0  # noqa: E731
        wait_until(gone, timeout=timeout, interval=interval,
                   what="%s to disappear from %s" % (key, getattr(redis, "kind", "redis")))
        return time.monotonic()

    def assertHeld(self, backend, key, identity, token, msg=None):
        """The key in backend is this tenure's: holder identity and token (Redis: the value
        <identity>:<token>; etcd: value identity, token "<key>:fence" + create_revision)."""
        v = backend.value(key)
        self.assertIsNotNone(v, msg or "no key %s in %s" % (key, backend.kind))
        self.assertEqual(v, backend.expected_value(identity, token),
                         msg or "value of %s in %s" % (key, backend.kind))
        self.assertEqual(backend.token_of(key), int(token),
                         msg or "token of %s in %s" % (key, backend.kind))

    def redis_token(self, redis, key, identity):
        v = redis.get(key)
        self.assertIsNotNone(v, "no key %s in redis" % key)
        ident, sep, tok = v.rpartition(":")
        self.assertEqual(sep, ":", "value %r is not <identity>:<token>" % v)
        self.assertEqual(ident, identity, "holder in %s = %r" % (key, v))
        self.assertRegex(tok, r"^[0-9]+$", "token in %r" % v)
        return int(tok)

    def wait_release_subscriber(self, redis, key, n=1, timeout=DEFAULT_TIMEOUT):
        """Wait until n connections listen for key's release notice (`<key>:released`): a
        follower that has subscribed is sure to hear the next release."""
        channel = release_channel(key)

        def subscribed():
            r = redis.call("PUBSUB", "NUMSUB", channel)
            return int(r[1]) >= n or int(redis.call("PUBSUB", "NUMPAT")) >= n
        wait_until(subscribed, timeout=timeout,
                   what="%d subscriber(s) on %s" % (n, channel))

    def write_key_file(self, key_bytes=None, hex_format=True):
        key_bytes = key_bytes or os.urandom(32)
        path = os.path.join(self.tmp, "auth.key")
        with open(path, "wb") as f:
            f.write((key_bytes.hex() + "\n").encode() if hex_format else key_bytes)
        os.chmod(path, 0o600)
        return path, key_bytes


class RedisScenario:
    """Mixin for a scenario class that runs on Redis: self.backend (RedisBackend), and, for
    Redis-only checks, self.redis (RedisServer) and self.mon (its Monitor). List it after the
    scenario mixin and before LKTestCase: class FooRedisTest(FooScenarios, RedisScenario,
    LKTestCase), so the backend is up when the scenario's own setUp runs."""

    backend_kind = "redis"

    def setUp(self):
        super().setUp()
        self.backend = self.start_backend("redis")
        self.redis = self.backend.server
        self.mon = self.backend.monitor

    def assertTenureRecord(self, key, identity, token):
        """What the backend stores for a tenure, beyond holder and token: the fence counter
        equals the token and the key expires."""
        self.assertHeld(self.backend, key, identity, token)
        self.assertEqual(int(self.redis.get(fence_key(key))), int(token), "fence counter")
        self.assertGreater(self.redis.call("PTTL", key), 0, "the key must expire")

    def assertReleasedOnce(self, key, since):
        """Exactly one release of key since the mark: one DEL, run by the compare-and-delete
        script, and one release notice."""
        dels = self.backend.deletions(key, since)
        self.assertEqual(len(dels), 1, "exactly one release:\n" + self.mon.dump(since))
        self.assertTrue(dels[0].from_script, "the release is the compare-and-delete script")
        self.assertEqual(len(self.mon.publishes(release_channel(key), since=since)), 1,
                         self.mon.dump(since))

    def assertNeverDeleted(self, key, since):
        """No client deleted key since the mark (an expiry is not a DEL)."""
        self.assertEqual(self.backend.deletions(key, since), [],
                         "expired, never deleted:\n" + self.mon.dump(since))

    def assertLeftToExpire(self, key, since, t_left=None, left=None):
        """The tenure's key was not released since the mark but left to expire: no DEL
        (MONITOR shows every one; no need to wait for the expiry)."""
        self.assertNeverDeleted(key, since)

    def assertNoAttempts(self, key, since):
        """No acquisition (or any script) touched key since the mark."""
        self.assertEqual(self.backend.creations(key, since), [], self.mon.dump(since))


class EtcdScenario:
    """Mixin for a scenario class that runs on a one-member etcd: self.backend (EtcdBackend)
    and self.etcd (EtcdServer). Skipped without an etcd binary or when LK_BACKENDS leaves etcd
    out. The etcd twins of assertions that Redis proves with MONITOR prove what the store's
    history can show: etcd cannot tell a deletion by a client from a lease expiry, so "never
    released" is checked by timing (the key lived out its lease) in the scenarios themselves."""

    backend_kind = "etcd"

    def setUp(self):
        super().setUp()
        self.backend = self.start_backend("etcd")
        self.etcd = self.backend.server

    def assertTenureRecord(self, key, identity, token):
        """The key holds the identity, was created at revision token and is attached to a live
        lease that nothing else uses."""
        self.assertHeld(self.backend, key, identity, token)
        lease = self.etcd.lease_of(key)
        self.assertTrue(lease, "the key must be attached to a lease")
        self.assertIsNotNone(self.etcd.lease_ttl(lease), "the key's lease must be alive")

    def assertReleasedOnce(self, key, since):
        """Exactly one deletion of key since the mark, and nothing created it again."""
        evs = self.etcd.events(key, since)
        dels = [e for e in evs if e.kind == "DELETE"]
        self.assertEqual(len(dels), 1, "exactly one release: %r" % evs)

    def assertNeverDeleted(self, key, since):
        """Nothing to add: an expiry shows as a DELETE too (see the class comment)."""

    def assertLeftToExpire(self, key, since, t_left, left):
        """The key, which had at least `left` seconds of lease at monotonic time t_left, is
        not deleted before that lease runs out (waits for it)."""
        if left is None:
            return
        gone = self.wait_key_gone(self.backend, key, timeout=left + DEFAULT_TIMEOUT)
        self.assertGreaterEqual(gone, t_left + left - 0.05,
                                "%s went %.2fs before its lease ran out: it was deleted"
                                % (key, t_left + left - gone))

    def assertNoAttempts(self, key, since):
        """Nothing wrote key since the mark, and no lease exists (every acquisition attempt
        grants one)."""
        self.assertEqual(self.etcd.events(key, since), [])
        self.assertEqual(self.etcd.leases(), [], "leases granted without a campaign")


def release_channel(key):
    return key + ":released"


def fence_key(key):
    return key + ":fence"


def status_locks(st):
    """The per-lock entries of a STATUS JSON as {name: entry}: accepts a list of objects with
    "name" or an object keyed by lock name."""
    locks = st.get("locks")
    if isinstance(locks, list):
        return {l.get("name"): l for l in locks}
    if isinstance(locks, dict):
        return {k: dict(v, name=v.get("name", k)) for k, v in locks.items()}
    raise AssertionError("STATUS JSON has no locks list/object: %r" % (st,))


def as_int(v):
    """A JSON number, or a string of digits (64-bit values are sometimes sent as strings)."""
    if isinstance(v, bool):
        raise AssertionError("not an integer: %r" % (v,))
    if isinstance(v, int):
        return v
    if isinstance(v, str) and re.fullmatch(r"-?[0-9]+", v):
        return int(v)
    raise AssertionError("not an integer: %r" % (v,))


# ---------------------------------------------------------------------------------------------
# Redis ACL users and Redis Sentinel


def acl_user_args(user, password, keys="~*", channels="&*", commands="+@all"):
    """redis-server arguments that define an ACL user (the default user stays open, so that
    RedisServer.call() and Monitor keep working)."""
    return ["--user", user, "on", ">" + password] + keys.split() + channels.split() + \
        commands.split()


def redis_sentinel_bin():
    return os.environ.get("REDIS_SENTINEL") or shutil.which("redis-sentinel")


class SentinelServer:
    """A private redis-sentinel on 127.0.0.1 watching one master (name `master_name`).
    Sentinel rewrites its config file, so each has its own in its own directory. With
    `password`, clients (and the other sentinels) must AUTH with it."""

    def __init__(self, tmpdir, master_port, master_name="mymaster", quorum=2,
                 down_after_ms=1000, failover_timeout_ms=6000, password=None, tls=None):
        self.dir = tempfile.mkdtemp(prefix="sentinel-", dir=tmpdir)
        self.port = free_port()
        # With tls (make_test_certs()): a TLS port too, and TLS to the servers and the other
        # sentinels (which then must be on their TLS ports); the plain port stays for call().
        self.tls = tls
        self.tls_port = free_port() if tls else None
        self.master_port = master_port
        self.master_name = master_name
        self.quorum = quorum
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.password = password
        self.proc = None
        self._logf = None

    @property
    def address(self):
        return "127.0.0.1:%d" % self.port

    @property
    def tls_address(self):
        return "127.0.0.1:%d" % self.tls_port

    @property
    def log_path(self):
        return os.path.join(self.dir, "sentinel.log")

    def start(self, timeout=DEFAULT_TIMEOUT):
        binary = redis_sentinel_bin()
        if not binary:
            raise unittest.SkipTest("no redis-sentinel (apt-get install redis-sentinel)")
        for attempt in range(5):
            conf = os.path.join(self.dir, "sentinel.conf")
            with open(conf, "w") as f:
                f.write("port %d\nbind 127.0.0.1\nprotected-mode no\ndir %s\n"
                        "sentinel monitor %s 127.0.0.1 %d %d\n"
                        "sentinel down-after-milliseconds %s %d\n"
                        "sentinel failover-timeout %s %d\n"
                        "sentinel parallel-syncs %s 1\n"
                        % (self.port, self.dir, self.master_name, self.master_port,
                           self.quorum, self.master_name, self.down_after_ms,
                           self.master_name, self.failover_timeout_ms, self.master_name))
                if self.password:
                    f.write("requirepass %s\nsentinel sentinel-pass %s\n"
                            % (self.password, self.password))
                if self.tls:
                    f.write("tls-port %d\ntls-replication yes\ntls-auth-clients no\n"
                            "tls-cert-file %s\ntls-key-file %s\ntls-ca-cert-file %s\n"
                            % (self.tls_port, self.tls["server"], self.tls["server_key"],
                               self.tls["ca"]))
            if self._logf:
                self._logf.close()
            self._logf = open(self.log_path, "ab")
            self.proc = subprocess.Popen([binary, conf], stdin=subprocess.DEVNULL,
                                         stdout=self._logf, stderr=subprocess.STDOUT,
                                         cwd=self.dir)
            deadline = time.monotonic() + timeout
            while True:
                if self.proc.poll() is not None:
                    with open(self.log_path, "rb") as f:
                        log = f.read().decode(errors="replace")
                    if "Address already in use" in log:
                        self.port = free_port()
                        self.tls_port = free_port() if self.tls else None
                        break
                    raise AssertionError("redis-sentinel exited with %s:\n%s"
                                         % (self.proc.returncode, log[-2000:]))
                try:
                    if self.call("PING", timeout=1.0) == "PONG":
                        return self
                except (OSError, EOFError, RespError):
                    pass
                if time.monotonic() >= deadline:
                    raise AssertionError("redis-sentinel on port %d did not answer PING"
                                         % self.port)
                time.sleep(0.02)
        raise AssertionError("redis-sentinel did not start (ports kept being taken)")

    def call(self, *args, timeout=5.0):
        c = RespClient(self.port, timeout=timeout)
        try:
            if self.password:
                c.call("AUTH", self.password)
            return c.call(*args)
        finally:
            c.close()

    def master_addr(self):
        """(host, port) this sentinel names as the master, or None."""
        r = self.call("SENTINEL", "get-master-addr-by-name", self.master_name)
        return (r[0], int(r[1])) if r else None

    def master_info(self):
        r = self.call("SENTINEL", "master", self.master_name)
        return dict(zip(r[0::2], r[1::2]))

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace=5.0):
        if self.proc is not None:
            _kill_wait(self.proc, signal.SIGTERM, grace)
        if self._logf:
            self._logf.close()
            self._logf = None

    def log_tail(self, n=15):
        try:
            with open(self.log_path, "rb") as f:
                return "\n".join(f.read().decode(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


class SentinelSetup:
    """A master, replicas and sentinels on loopback, as Redis usually runs highly available:
    `replica_args[i]` are extra arguments of replica i (e.g. "--replica-priority", "0"), and
    `replica_via_proxy` lists replicas that reach the master through a TcpProxy (then in
    .proxies[i]), so that a test can make that replica lag (proxy.drop_replies = True).
    `server_args` go to every server, master and replicas (e.g. min-replicas-to-write);
    with `sentinel_password` the sentinels require it (requirepass, sentinel-pass).

    start() returns once every replica is in sync and every sentinel knows every replica and
    every other sentinel (a failover needs their majority). config() is the agent's backend."""

    def __init__(self, test, n_replicas=2, n_sentinels=3, master_name="mymaster",
                 down_after_ms=1000, replica_args=None, replica_via_proxy=(), master_args=(),
                 server_args=(), sentinel_password=None, tls=False):
        self.test = test
        # tls: every server and sentinel also has a TLS port, and they replicate and watch
        # over TLS, so the sentinels name the servers' TLS ports; the harness keeps using the
        # plain ones.
        self.tls = test.make_certs() if tls else None
        self.master_name = master_name
        self.n_replicas = n_replicas
        self.n_sentinels = n_sentinels
        self.down_after_ms = down_after_ms
        self.replica_args = replica_args or {}
        self.replica_via_proxy = set(replica_via_proxy)
        self.master_args = list(master_args)
        self.server_args = list(server_args)
        self.sentinel_password = sentinel_password
        self.servers = []       # RedisServer: [0] the first master, then the replicas
        self.proxies = {}       # replica index -> TcpProxy it replicates through
        self.sentinels = []

    def start(self, timeout=DEFAULT_TIMEOUT * 3):
        t = self.test
        # A full sync waits 5 s by default for more replicas to share it: not here.
        fast = ["--repl-diskless-sync-delay", "0"] + self.server_args

        def tls_args():
            if not self.tls:
                return [], None
            port = free_port()
            return ["--tls-port", str(port), "--tls-replication", "yes",
                    "--tls-auth-clients", "no", "--tls-cert-file", self.tls["server"],
                    "--tls-key-file", self.tls["server_key"],
                    "--tls-ca-cert-file", self.tls["ca"]], port
        targs, tport = tls_args()
        master = t.start_redis(extra_args=fast + targs + self.master_args, fresh=True)
        master.tls_port = tport
        self.servers.append(master)
        for i in range(self.n_replicas):
            up = master.tls_port or master.port
            if i in self.replica_via_proxy:
                proxy = t.start_proxy(master)
                self.proxies[i] = proxy
                up = proxy.port
            targs, tport = tls_args()
            args = fast + targs + ["--replicaof", "127.0.0.1", str(up)] + \
                list(self.replica_args.get(i, ()))
            self.servers.append(t.start_redis(extra_args=args, fresh=True))
            self.servers[-1].tls_port = tport
        wait_until(lambda: master.info("replication").get("connected_slaves")
                   == str(self.n_replicas), timeout=timeout, what="the replicas to connect")
        for r in self.servers[1:]:
            wait_until(lambda r=r: r.info("replication").get("master_link_status") == "up",
                       timeout=timeout, what="replica :%d in sync" % r.port)
        for _ in range(self.n_sentinels):
            sn = SentinelServer(t.tmp, master.tls_port or master.port, self.master_name,
                                quorum=self.n_sentinels // 2 + 1,
                                down_after_ms=self.down_after_ms,
                                password=self.sentinel_password, tls=self.tls)
            t.addCleanup(sn.stop)
            self.sentinels.append(sn)
            sn.start()

        def converged():
            for sn in self.sentinels:
                m = sn.master_info()
                if int(m.get("num-slaves", 0)) != self.n_replicas or \
                        int(m.get("num-other-sentinels", 0)) != self.n_sentinels - 1:
                    return False
            return True
        wait_until(converged, timeout=timeout, interval=0.1,
                   what="the sentinels to know every replica and each other")
        return self

    def config(self, name="main", timeout="500ms", **kw):
        b = {"name": name, "type": "redis", "timeout": timeout,
             "sentinels": [s.tls_address if self.tls else s.address for s in self.sentinels],
             "master_name": self.master_name}
        if self.tls:
            b.update(tls=True, ca_file=self.tls["ca"])
        b.update(kw)
        return b

    def server(self, port):
        """The server on port, plain or TLS (the sentinels name TLS ports with tls)."""
        for r in self.servers:
            if port in (r.port, getattr(r, "tls_port", None)):
                return r
        raise KeyError(port)

    def master_port(self):
        """The master's port as the live sentinels agree on it (None while they disagree)."""
        seen = set()
        for sn in self.sentinels:
            if sn.alive():
                a = sn.master_addr()
                seen.add(a[1] if a else None)
        return seen.pop() if len(seen) == 1 else None

    def master(self):
        return self.server(self.master_port())

    def wait_new_master(self, old_port, timeout=DEFAULT_TIMEOUT * 3):
        """Wait until every live sentinel names a master other than old_port and that server
        says it is a master; returns its RedisServer."""
        def moved():
            p = self.master_port()
            if p is None or p == old_port:
                return None
            r = self.server(p)
            return r if r.info("replication").get("role") == "master" else None
        return wait_until(moved, timeout=timeout, interval=0.05, what="a failover")

    def logs(self, n=15):
        return "\n".join("----- sentinel :%d -----\n%s" % (s.port, s.log_tail(n))
                         for s in self.sentinels)


def main():
    unittest.main(verbosity=2)
