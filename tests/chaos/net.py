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
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/

from common import tcp  # noqa: E402


class ChaosProxy(tcp.Relay):
    connect_timeout = 2.0

    def __init__(self, upstream_port, listen_host="127.0.0.1", listen_port=0, seed=0,
                 upstream_host="127.0.0.1", loss_stall=0.4):
        super().__init__((upstream_host, upstream_port), listen_host, listen_port,
                         name="chaos-proxy")
        self.delay = 0.0
        self.loss = 0.0
        self.loss_stall = loss_stall
        self.blackhole = False
        self.rng = random.Random(seed)
        self.start_accepting()

    def upstream_target(self):
        return None if self.blackhole else self.upstream

    def due(self, direction, data):
        if self.blackhole:
            return None
        due = time.monotonic() + self.delay
        if self.loss > 0 and self.rng.random() < self.loss:
            due += self.loss_stall
        return due

    def deliverable(self):
        return not self.blackhole

    def cut(self):
        self.kill_all()

    def heal(self):
        self.delay = 0.0
        self.loss = 0.0
        was = self.blackhole
        self.blackhole = False
        if was:
            self.cut()   # blackholed connections carry nothing any more: start afresh


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
