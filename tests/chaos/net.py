"""Network pieces of the chaos suite: a fault-injecting TCP proxy and network namespaces.

ChaosProxy: a TCP forwarder (listen address -> upstream on 127.0.0.1) with
  - delay: seconds added to every chunk in each direction (order kept);
  - loss: probability that a chunk is held back for `loss_stall` seconds (order kept). This
    kernel has no sch_netem, so the suite cannot drop packets; what a lost segment does to a
    TCP stream is a head-of-line stall until the retransmission, and that is what this does;
  - blackhole: data in both directions is read and discarded, and new connections are
    accepted but never connected upstream (a silent peer: the fallback partition when network
    namespaces cannot be made);
  - cut(): close every current connection (a reset).

Namespaces: each replica's agent runs in a network namespace of its own (`ip netns exec`),
joined to the root namespace by a veth pair. The agent reaches its backend through a
ChaosProxy listening on the root side of that veth pair, so `ip link set <veth> down` is a
real partition of that one replica from its backend (packets vanish: no reset, only silence),
and delay/loss are added by the proxy on the same path. Names carry the runner's pid
(lkc<pid>r<i>), so stale ones from a killed runner are found and removed.
"""

import fcntl
import os
import random
import re
import socket
import subprocess
import threading
import time
from collections import deque


def mono():
    return time.clock_gettime(time.CLOCK_MONOTONIC)


class ChaosProxy:
    def __init__(self, upstream_port, listen_host="127.0.0.1", listen_port=0, seed=0,
                 upstream_host="127.0.0.1", loss_stall=0.4):
        self.upstream = (upstream_host, upstream_port)
        self.delay = 0.0
        self.loss = 0.0
        self.loss_stall = loss_stall
        self.blackhole = False
        self.rng = random.Random(seed)
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind((listen_host, listen_port))
        self.lsock.listen(64)
        self.lsock.settimeout(0.2)
        self.host, self.port = self.lsock.getsockname()[:2]
        self._pairs = {}          # id -> [client socket, upstream socket or None]
        self._lock = threading.Lock()
        self._closed = False
        self.accepted = 0
        self._t = threading.Thread(target=self._accept_loop, name="chaos-proxy", daemon=True)
        self._t.start()

    @property
    def address(self):
        return "%s:%d" % (self.host, self.port)

    def _accept_loop(self):
        while not self._closed:
            try:
                c, _ = self.lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                break
            c.settimeout(None)
            if self.blackhole:
                u = None
            else:
                try:
                    u = socket.create_connection(self.upstream, timeout=2)
                    u.settimeout(None)
                except OSError:
                    c.close()
                    continue
            pair = [c, u]
            with self._lock:
                if self._closed:
                    c.close()
                    if u:
                        u.close()
                    break
                self._pairs[id(pair)] = pair
                self.accepted += 1
            if u is None:
                threading.Thread(target=self._sink, args=(pair, c), daemon=True).start()
                continue
            for s in (c, u):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for src, dst in ((c, u), (u, c)):
                q = (deque(), threading.Condition())
                threading.Thread(target=self._pump, args=(pair, src, q), daemon=True).start()
                threading.Thread(target=self._send, args=(pair, dst, q), daemon=True).start()

    def _sink(self, pair, c):
        try:
            while c.recv(65536):
                pass
        except OSError:
            pass
        self._close_pair(pair)

    def _pump(self, pair, src, q):
        last_due = 0.0
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if self.blackhole:
                    continue
                due = mono() + self.delay
                if self.loss > 0 and self.rng.random() < self.loss:
                    due += self.loss_stall
                due = max(due, last_due)
                last_due = due
                with q[1]:
                    q[0].append((due, data))
                    q[1].notify()
        except OSError:
            pass
        with q[1]:
            q[0].append((None, None))
            q[1].notify()

    def _send(self, pair, dst, q):
        try:
            while True:
                with q[1]:
                    while not q[0]:
                        q[1].wait()
                    due, data = q[0].popleft()
                if data is None:
                    break
                w = due - mono()
                if w > 0:
                    time.sleep(w)
                if self.blackhole:
                    continue
                dst.sendall(data)
        except OSError:
            pass
        self._close_pair(pair)

    def _close_pair(self, pair):
        with self._lock:
            self._pairs.pop(id(pair), None)
        for s in pair:
            if s is None:
                continue
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                s.close()
            except OSError:
                pass

    def cut(self):
        with self._lock:
            pairs = list(self._pairs.values())
        for p in pairs:
            self._close_pair(p)

    def heal(self):
        self.delay = 0.0
        self.loss = 0.0
        was = self.blackhole
        self.blackhole = False
        if was:
            self.cut()   # blackholed connections carry nothing any more: start afresh

    def close(self):
        self._closed = True
        try:
            self.lsock.close()
        except OSError:
            pass
        self.cut()
        self._t.join(timeout=2)


# ---------------------------------------------------------------------------------------------
# network namespaces


def _ip(*args, check=True):
    r = subprocess.run(["ip"] + list(args), capture_output=True, text=True,
                       stdin=subprocess.DEVNULL, timeout=20)
    if check and r.returncode != 0:
        raise OSError("ip %s: %s" % (" ".join(args), (r.stderr or r.stdout).strip()))
    return r


def sweep_stale_netns():
    """Remove lkc<pid>r<i> namespaces whose runner is gone."""
    r = _ip("netns", "list", check=False)
    for line in r.stdout.splitlines():
        m = re.match(r"^(lkc(\d+)r\d+)\b", line)
        if not m:
            continue
        try:
            os.kill(int(m.group(2)), 0)
            continue
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        _ip("netns", "del", m.group(1), check=False)


def _used_v4():
    r = _ip("-4", "-o", "addr", check=False)
    return set(re.findall(r"inet (\d+\.\d+\.\d+\.\d+)/", r.stdout))


_subnet_lock = threading.Lock()


class NetNS:
    """One namespace lkc<pid>r<i> with a veth pair: host side <host_ip>/30 in the root
    namespace, <ns_ip>/30 inside, lo up. link_down()/link_up() cut and restore it."""

    def __init__(self, index):
        pid = os.getpid()
        self.name = "lkc%dr%d" % (pid, index)
        self.host_if = ("lkc%dh%d" % (pid % 1000000, index))[:15]
        self.ns_if = ("lkc%dn%d" % (pid % 1000000, index))[:15]
        # The choice of a free subnet and its use are one step across processes (the
        # backends run in parallel, each runner making its own namespaces).
        with _subnet_lock, open("/tmp/lk-chaos-net.lock", "a") as lockf:
            fcntl.flock(lockf, fcntl.LOCK_EX)
            used = _used_v4()
            start = (pid * 31 + index) % (250 * 64)
            for k in range(250 * 64):
                c = (start + k) % (250 * 64)
                o3, o4 = 1 + c // 64, (c % 64) * 4
                host_ip, ns_ip = "10.213.%d.%d" % (o3, o4 + 1), "10.213.%d.%d" % (o3, o4 + 2)
                if host_ip not in used and ns_ip not in used:
                    break
            self.host_ip, self.ns_ip = host_ip, ns_ip
            _ip("netns", "add", self.name)
            try:
                _ip("link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if)
                _ip("link", "set", self.ns_if, "netns", self.name)
                _ip("addr", "add", self.host_ip + "/30", "dev", self.host_if)
                _ip("link", "set", self.host_if, "up")
                _ip("netns", "exec", self.name, "ip", "addr", "add", self.ns_ip + "/30",
                    "dev", self.ns_if)
                _ip("netns", "exec", self.name, "ip", "link", "set", self.ns_if, "up")
                _ip("netns", "exec", self.name, "ip", "link", "set", "lo", "up")
            except OSError:
                self.close()
                raise
        self.down = False

    def prefix(self):
        return ["ip", "netns", "exec", self.name]

    def link_down(self):
        _ip("link", "set", self.host_if, "down")
        self.down = True

    def link_up(self):
        _ip("link", "set", self.host_if, "up")
        self.down = False

    def close(self):
        _ip("link", "del", self.host_if, check=False)
        _ip("netns", "del", self.name, check=False)


def netns_available():
    """Can this process make a namespace with a veth pair? (root, iproute2, kernel support)"""
    if os.geteuid() != 0:
        return False, "not root"
    try:
        ns = NetNS(99)
    except (OSError, subprocess.SubprocessError) as e:
        return False, str(e)
    try:
        s = socket.socket()
        s.bind((ns.host_ip, 0))
        s.listen(1)
        port = s.getsockname()[1]
        r = subprocess.run(ns.prefix() + ["python3", "-c",
                           "import socket; socket.create_connection(('%s', %d), timeout=2)"
                           % (ns.host_ip, port)], capture_output=True, timeout=10)
        s.close()
        if r.returncode != 0:
            return False, "no route over the veth pair: %s" % r.stderr.decode()[-200:]
        return True, ""
    finally:
        ns.close()
