"""Many locks on one agent (issue 11, item 4): a real redis-server and a real agent holding
LK_MANY_LOCKS locks (default 2000) with `campaign: always`. Every lock is acquired; the paged
STATUS (`STATUS`, then `STATUS after=<lock>`; `STATUS lock=<lock>` for one), `leasekeeper status --json` and /metrics each
list every lock; a drain releases them all within shutdown_timeout. The measured times, the
agent's memory (RSS and RssAnon, per lock against a one-lock agent) and its CPU while idle are
printed, not asserted beyond generous bounds: `make bench` is where targets are checked."""

import json
import os
import re
import resource
import selectors
import signal
import socket
import sys
import time
import unittest
import urllib.request

from harness import LKTestCase, free_port, lock_config, wait_until

N_LOCKS = int(os.environ.get("LK_MANY_LOCKS") or 2000)
N_APPS = int(os.environ.get("LK_MANY_APPS") or 1000)  # locks with a campaign client each
LINE_MAX = 4096                  # proto/codec.h LK_LINE_MAX
IDLE_WINDOW_S = 3.0
SHUTDOWN_TIMEOUT_S = 10.0
CLK_TCK = os.sysconf("SC_CLK_TCK")


def name(i):
    return "lock-%05d" % i


def proc_status(pid):
    """VmRSS and RssAnon of pid, in KiB."""
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "RssAnon"):
                out[k] = int(v.split()[0])
    return out


def cpu_seconds(pid):
    """utime + stime of pid, in seconds."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def report(what, value):
    sys.stderr.write("  [many locks] %-42s %s\n" % (what, value))


class StatusClient:
    """The protocol's STATUS forms on a raw socket, every line checked against the line cap.
    STATUS keeps a connection idle, so nothing but replies arrives on it."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(path)
        self.buf = b""
        banner = self.line()
        assert banner.startswith("LEASEKEEPER 1 "), banner
        self.send("HELLO 1 client=many-locks")
        ok = self.line()
        assert ok.startswith("OK HELLO 1 "), ok

    def send(self, line):
        self.sock.sendall(line.encode() + b"\n")

    def line(self):
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise AssertionError("the agent closed the connection")
            self.buf += chunk
        raw, self.buf = self.buf.split(b"\n", 1)
        assert len(raw) + 1 <= LINE_MAX, "a line of %d bytes" % (len(raw) + 1)
        return raw.decode()

    def status(self, arg=None):
        """The JSON of STATUS [arg], or the ERR line as a string."""
        self.send("STATUS" + (" " + arg if arg else ""))
        reply = self.line()
        if reply.startswith("ERR "):
            return reply
        assert reply.startswith("OK STATUS "), reply
        return json.loads(reply[len("OK STATUS "):])

    def all_pages(self):
        """Every page from the plain STATUS on: (list of pages)."""
        pages = [self.status()]
        while pages[-1].get("next_after"):
            pages.append(self.status("after=" + pages[-1]["next_after"]))
            assert len(pages) <= N_LOCKS + 1, "the cursor does not move on"
        return pages

    def close(self):
        self.sock.close()


class Apps:
    """n app connections on one selector, each campaigning on its own lock and following the
    protocol's rules: ACK every STEPDOWN. Lines are kept per connection."""

    def __init__(self, path, locks):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = len(locks) + 256
        if soft < want and (hard == resource.RLIM_INFINITY or hard >= want):
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        self.sel = selectors.DefaultSelector()
        self.conns = []
        for lock in locks:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(path)
            s.setblocking(False)
            c = {"sock": s, "lock": lock, "buf": b"", "lines": [], "eof": False}
            self.conns.append(c)
            self.sel.register(s, selectors.EVENT_READ, c)
            s.sendall(("HELLO 1 client=app-%s\nCAMPAIGN %s\n" % (lock, lock)).encode())

    def pump(self, timeout):
        for key, _ in self.sel.select(timeout):
            c = key.data
            try:
                data = c["sock"].recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if not data:
                c["eof"] = True
                self.sel.unregister(c["sock"])
                continue
            c["buf"] += data
            while b"\n" in c["buf"]:
                raw, c["buf"] = c["buf"].split(b"\n", 1)
                line = raw.decode()
                c["lines"].append(line)
                if line.startswith("STEPDOWN "):
                    token = line.split("token=")[1].split()[0]
                    c["sock"].sendall(("ACK %s %s\n" % (c["lock"], token)).encode())

    def wait(self, pred, timeout, what):
        deadline = time.monotonic() + timeout
        while not all(pred(c) for c in self.conns):
            if time.monotonic() > deadline:
                bad = [c for c in self.conns if not pred(c)]
                raise AssertionError("%d apps not %s, e.g. %s: %r"
                                     % (len(bad), what, bad[0]["lock"], bad[0]["lines"][-5:]))
            self.pump(0.1)

    def close(self):
        for c in self.conns:
            c["sock"].close()
        self.sel.close()


def has(c, prefix):
    return any(l.startswith(prefix) for l in c["lines"])


def states(pages):
    return {l["name"]: l["state"] for p in pages for l in p["locks"]}


class ManyLocksRedisTest(LKTestCase):
    def start_many(self, n, http_port=None):
        locks = [lock_config(name(i), ttl="10s", campaign="always") for i in range(n)]
        return self.start_agent("pod-many", self.redis, locks=locks,
                                max_clients=256, shutdown_timeout="%ds" % SHUTDOWN_TIMEOUT_S,
                                http_listen="127.0.0.1:%d" % http_port if http_port else "")

    def setUp(self):
        super().setUp()
        self.redis = self.start_redis()

    def test_every_lock_is_held_listed_and_drained(self):
        # The baseline: what one lock costs the same agent, for memory per lock.
        one = self.start_many(1)
        wait_until(lambda: self.cli("status", "-s", one.sock_path, "--json").stdout.count(
            '"state":"leader"') == 1, what="the one lock to be held")
        base = proc_status(one.pid)
        one.stop()
        self.redis.call("FLUSHALL")

        port = free_port()
        t0 = time.monotonic()
        agent = self.start_many(N_LOCKS, http_port=port)
        t_ready = time.monotonic() - t0
        sc = StatusClient(agent.sock_path)
        self.addCleanup(sc.close)

        held = {}

        def all_held():
            held["pages"] = sc.all_pages()
            s = states(held["pages"])
            return len(s) == N_LOCKS and all(v == "leader" for v in s.values())
        wait_until(all_held, timeout=60, interval=0.1, what="every lock to be held")
        t_acquire = time.monotonic() - t0

        # The paged STATUS: the plain form as before (clients, and the locks that fit, the
        # rest counted), then pages after it; every lock once, in config order.
        pages = held["pages"]
        first = pages[0]
        self.assertIn("clients", first)
        self.assertEqual(first["truncated"], N_LOCKS - len(first["locks"]))
        names = [l["name"] for p in pages for l in p["locks"]]
        self.assertEqual(names, [name(i) for i in range(N_LOCKS)])
        self.assertNotIn("truncated", pages[-1])
        for p in pages[1:]:
            self.assertNotIn("clients", p)
        one_lock = sc.status("lock=" + name(N_LOCKS // 2))
        self.assertEqual([l["name"] for l in one_lock["locks"]], [name(N_LOCKS // 2)])
        self.assertEqual(sc.status("lock=nope"), "ERR unknown_lock nope")
        self.assertEqual(sc.status("after=" + name(N_LOCKS - 1))["locks"], [])

        # leasekeeper status pages through them all, text and JSON.
        t1 = time.monotonic()
        r = self.cli("status", "-s", agent.sock_path, "--json")
        t_cli = time.monotonic() - t1
        self.assertEqual(r.rc, 0, r.stderr)
        doc = json.loads(r.stdout)
        self.assertEqual([l["name"] for l in doc["locks"]], names)
        self.assertTrue(all(l["state"] == "leader" for l in doc["locks"]))
        self.assertNotIn("truncated", doc)
        self.assertNotIn("next_after", doc)
        self.assertIn("clients", doc)
        r = self.cli("status", "-s", agent.sock_path)
        self.assertEqual(r.rc, 0, r.stderr)
        self.assertEqual(len(re.findall(r"(?m)^lock-\d{5} +main +leader ", r.stdout)), N_LOCKS)
        self.assertNotIn("more locks", r.stdout)
        r = self.cli("status", "-s", agent.sock_path, "--json", name(7))
        self.assertEqual(r.rc, 0, r.stderr)
        self.assertEqual([l["name"] for l in json.loads(r.stdout)["locks"]], [name(7)])

        # WATCH * hears every lock's state at once (the output cap grows with the locks).
        w = StatusClient(agent.sock_path)
        self.addCleanup(w.close)
        w.send("WATCH *")
        self.assertEqual(w.line(), "OK WATCH *")
        heard = [w.line().split()[:2] for _ in range(N_LOCKS)]
        self.assertEqual(heard, [["LEADER", n] for n in names])
        w.close()

        # /metrics: every lock, held.
        t1 = time.monotonic()
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=10) as resp:
            body = resp.read().decode()
        t_metrics = time.monotonic() - t1
        held_series = re.findall(r'(?m)^leasekeeper_lock_held\{lock="(lock-\d{5})"\} 1$', body)
        self.assertEqual(sorted(held_series), names)

        # Idle: nothing to do but renewals (every ttl/3 per lock). CPU and memory then.
        time.sleep(1.0)
        c0, w0 = cpu_seconds(agent.pid), time.monotonic()
        time.sleep(IDLE_WINDOW_S)
        idle_cpu = (cpu_seconds(agent.pid) - c0) / (time.monotonic() - w0)
        mem = proc_status(agent.pid)
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=10) as resp:
            body = resp.read().decode()
        lost = [float(v) for v in re.findall(
            r'(?m)^leasekeeper_lock_lost_total\{lock="[^"]+",reason="[^"]+"\} (\S+)$', body)]
        self.assertEqual(len(lost), 4 * N_LOCKS)
        self.assertEqual(sum(lost), 0, "a lock lost its tenure while idle (a renew miss)")
        self.assertEqual(sum(1 for p in sc.all_pages() for l in p["locks"]
                             if l["state"] == "leader"), N_LOCKS)

        # The drain: every lock released, in parallel, well within shutdown_timeout.
        t1 = time.monotonic()
        agent.send_signal(signal.SIGTERM)
        rc = agent.wait(timeout=SHUTDOWN_TIMEOUT_S + 10)
        t_drain = time.monotonic() - t1
        self.assertEqual(rc, 0, agent.tail())
        summary = agent.drain_summary()
        self.assertEqual(int(summary["released"]), N_LOCKS)
        self.assertEqual(summary["exit_reason"], "drained")
        self.assertLess(t_drain, SHUTDOWN_TIMEOUT_S)
        left = self.redis.call("KEYS", "leasekeeper/lock-*")
        # What stays: each lock's fence counter and the release marker its release wrote.
        self.assertEqual([k for k in left if not k.endswith((":fence", ":released"))], [])
        self.assertEqual(len([k for k in left if k.endswith(":released")]), N_LOCKS)

        per_lock = (mem["RssAnon"] - base["RssAnon"]) * 1024.0 / (N_LOCKS - 1)
        report("locks", N_LOCKS)
        report("agent start (socket answers)", "%.2f s" % t_ready)
        report("start to every lock held (STATUS)", "%.2f s" % t_acquire)
        report("STATUS pages", "%d, %d locks in the first" % (len(pages), len(first["locks"])))
        report("leasekeeper status --json", "%.3f s" % t_cli)
        report("/metrics", "%.3f s, %d bytes" % (t_metrics, len(body)))
        report("RSS / RssAnon", "%d KiB / %d KiB (one lock: %d / %d KiB)"
               % (mem["VmRSS"], mem["RssAnon"], base["VmRSS"], base["RssAnon"]))
        report("agent's own memory per lock (RssAnon)", "%.0f bytes" % per_lock)
        report("idle CPU over %.0f s" % IDLE_WINDOW_S, "%.1f %% of a core" % (idle_cpu * 100))
        report("renew misses (LOST while idle)", "%d" % sum(lost))
        report("SIGTERM to exit (drain of all)", "%.3f s (shutdown_timeout %.0f s)"
               % (t_drain, SHUTDOWN_TIMEOUT_S))


    def test_a_campaign_client_per_lock_leads_and_drains(self):
        locks = [lock_config(name(i), ttl="10s") for i in range(N_APPS)]
        agent = self.start_agent("pod-apps", self.redis, locks=locks, max_clients=N_APPS + 64,
                                 shutdown_timeout="%ds" % SHUTDOWN_TIMEOUT_S)
        t0 = time.monotonic()
        apps = Apps(agent.sock_path, [name(i) for i in range(N_APPS)])
        self.addCleanup(apps.close)
        apps.wait(lambda c: has(c, "LEADER "), 60, "leading")
        t_lead = time.monotonic() - t0
        for c in apps.conns:
            self.assertEqual([l.split()[0] for l in c["lines"] if l.split()[0] == "LEADER"],
                             ["LEADER"], "one LEADER, for its own lock only")
            self.assertTrue(all(c["lock"] in l for l in c["lines"]
                                if l.startswith(("LEADER", "FOLLOWER", "RENEWED"))))
        r = self.cli("status", "-s", agent.sock_path, "--json")
        doc = json.loads(r.stdout)
        self.assertEqual(doc["clients"]["campaign"], N_APPS)
        self.assertEqual(sum(1 for l in doc["locks"] if l["state"] == "leader"
                             and l["campaign_clients"] == 1), N_APPS)
        mem = proc_status(agent.pid)

        t1 = time.monotonic()
        agent.send_signal(signal.SIGTERM)
        apps.wait(lambda c: has(c, "STOP ") or c["eof"], SHUTDOWN_TIMEOUT_S + 5, "stopped")
        rc = agent.wait(timeout=SHUTDOWN_TIMEOUT_S + 10)
        t_drain = time.monotonic() - t1
        self.assertEqual(rc, 0, agent.tail())
        self.assertEqual(int(agent.drain_summary()["released"]), N_APPS)
        for c in apps.conns:
            self.assertTrue(has(c, "STEPDOWN " + c["lock"]), c["lines"][-5:])
            self.assertTrue(has(c, "RELEASED %s " % c["lock"]), c["lines"][-5:])
        report("apps, one lock each", N_APPS)
        report("connect to every app leading", "%.2f s" % t_lead)
        report("RSS / RssAnon with the apps", "%d KiB / %d KiB" % (mem["VmRSS"], mem["RssAnon"]))
        report("SIGTERM to exit (STEPDOWN, ACK, release)", "%.3f s" % t_drain)

if __name__ == "__main__":
    unittest.main()
