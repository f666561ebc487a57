#!/usr/bin/env python3
"""Checks of the integration harness itself, runnable without the agent binary.

Real redis-server for RedisServer, RespClient, Monitor and TcpProxy; a small fake agent (a Python
script posing as `leasekeeper`) for Agent, AppClient, logs, sanitizer detection and run_cli.

    python3 tests/integration/selftest_harness.py -v
"""

import hashlib
import hmac
import os
import shutil
import signal
import socket
import stat
import sys
import textwrap
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402
from harness import (AppClient, ConnectionClosed, EtcdBackend, LKTestCase, RespError,  # noqa: E402
                     backends_enabled, dur_ms, lock_config, parse_log_line, to_yaml,
                     wait_until)


class RedisServerSelfTest(LKTestCase):
    def test_start_answers_ping_and_round_trips_reply_types(self):
        r = self.start_redis()
        self.assertEqual(r.call("PING"), "PONG")
        self.assertEqual(r.call("SET", "k", "v"), "OK")
        self.assertEqual(r.get("k"), "v")
        self.assertIsNone(r.get("missing"))
        self.assertEqual(r.call("INCR", "n"), 1)
        self.assertEqual(r.call("RPUSH", "l", "a", "b"), 2)
        self.assertEqual(r.call("LRANGE", "l", 0, -1), ["a", "b"])
        self.assertEqual(r.call("EVAL", "return {1, 'x', false}", 0), [1, "x", None])
        with self.assertRaises(RespError) as cm:
            r.call("INCR", "k")
        self.assertIn("not an integer", str(cm.exception))
        # A large bulk string arrives in several recv() calls.
        big = "y" * 300000
        r.call("SET", "big", big)
        self.assertEqual(r.get("big"), big)
        # No persistence configured.
        self.assertEqual(r.call("CONFIG", "GET", "save"), ["save", ""])
        self.assertEqual(r.call("CONFIG", "GET", "appendonly"), ["appendonly", "no"])

    def test_stop_terminates_and_reaps_the_process(self):
        r = self.start_redis()
        pid = r.proc.pid
        r.stop()
        self.assertIsNotNone(r.proc.returncode)
        with self.assertRaises(ProcessLookupError):
            os.kill(pid, 0)
        with self.assertRaises(OSError):
            socket.create_connection(("127.0.0.1", r.port), timeout=1).close()

    def test_restart_keeps_the_port_and_loses_the_data(self):
        r = self.start_redis()
        port = r.port
        r.call("SET", "k:fence", 41)
        old_pid = r.proc.pid
        r.restart()
        self.assertEqual(r.port, port)
        self.assertNotEqual(r.proc.pid, old_pid)
        self.assertIsNone(r.get("k:fence"))
        self.assertEqual(r.call("PING"), "PONG")

    def test_restart_works_while_clients_are_connected(self):
        r = self.start_redis()
        c = r.client()
        self.addCleanup(c.close)
        c.call("SET", "a", "1")
        r.restart()
        with self.assertRaises((EOFError, OSError)):
            c.call("PING")
        self.assertEqual(r.call("PING"), "PONG")

    def test_sigstop_freezes_and_sigcont_thaws(self):
        r = self.start_redis()
        c = r.client(timeout=0.5)
        self.addCleanup(c.close)
        c.call("SET", "k", "v", "PX", 100000)
        r.sigstop()
        t0 = time.monotonic()
        with self.assertRaises(socket.timeout):
            c.call("GET", "k", timeout=0.5)
        self.assertGreaterEqual(time.monotonic() - t0, 0.45)
        # A new connection is accepted by the kernel but never answered.
        c2 = r.client(timeout=0.3)
        self.addCleanup(c2.close)
        with self.assertRaises(socket.timeout):
            c2.call("PING")
        r.sigcont()
        # The GET sent while frozen is answered after SIGCONT; read it, then go on.
        self.assertEqual(c.read_reply(timeout=5), "v")
        self.assertEqual(c.call("PING", timeout=5), "PONG")

    def test_stop_works_on_a_frozen_server(self):
        r = self.start_redis()
        r.sigstop()
        t0 = time.monotonic()
        r.stop()
        self.assertLess(time.monotonic() - t0, 5.5)
        self.assertIsNotNone(r.proc.returncode)

    def test_extra_args_are_passed(self):
        r = self.start_redis(extra_args=["--maxclients", "77"])
        self.assertEqual(r.call("CONFIG", "GET", "maxclients"), ["maxclients", "77"])

    def test_two_servers_get_distinct_ports(self):
        a, b = self.start_redis(), self.start_redis()
        self.assertNotEqual(a.port, b.port)
        a.call("SET", "k", "a")
        self.assertIsNone(b.get("k"))


class MonitorSelfTest(LKTestCase):
    def test_monitor_sees_commands_with_their_source(self):
        r = self.start_redis()
        m = self.monitor(r)
        c = r.client()
        self.addCleanup(c.close)
        c.call("SET", "leasekeeper/x", 'pod-a:"1"\n')
        m.sync(r)
        sets = m.select(lambda ln: ln.cmd == "SET")
        self.assertEqual(len(sets), 1)
        self.assertEqual(sets[0].args, ["SET", "leasekeeper/x", 'pod-a:"1"\n'])
        self.assertRegex(sets[0].source, r"^127\.0\.0\.1:\d+$")
        self.assertFalse(sets[0].from_script)
        self.assertAlmostEqual(sets[0].ts, time.time(), delta=5)

    def test_monitor_shows_deletes_made_inside_scripts(self):
        r = self.start_redis()
        m = self.monitor(r)
        r.call("SET", "leasekeeper/x", "pod-a:7")
        release = ("if redis.call('GET', KEYS[1]) == ARGV[1] then "
                   "redis.call('PUBLISH', KEYS[1] .. ':released', ARGV[1]); "
                   "return redis.call('DEL', KEYS[1]) else return 0 end")
        sha = r.call("SCRIPT", "LOAD", release)
        self.assertEqual(r.call("EVALSHA", sha, 1, "leasekeeper/x", "pod-b:9"), 0)
        self.assertEqual(r.call("EVALSHA", sha, 1, "leasekeeper/x", "pod-a:7"), 1)
        self.assertEqual(r.call("EVAL", release, 1, "leasekeeper/x", "pod-a:7"), 0)
        r.call("DEL", "leasekeeper/x")
        m.sync(r)
        self.assertEqual(len(m.dels("leasekeeper/x", from_script=True)), 1)
        self.assertEqual(len(m.dels("leasekeeper/x")), 2)
        self.assertEqual(len(m.script_calls("leasekeeper/x")), 3)
        self.assertEqual(m.script_calls("leasekeeper/x")[0].script_keys(), ["leasekeeper/x"])
        self.assertEqual(len(m.publishes("leasekeeper/x:released")), 1)

    def test_monitor_wait_for_and_mark(self):
        r = self.start_redis()
        m = self.monitor(r)
        r.call("SET", "a", "1")
        m.sync(r)
        mark = m.mark()
        threading.Timer(0.3, lambda: r.call("DEL", "a")).start()
        ln = m.wait_for(lambda ln: ln.cmd == "DEL", timeout=5, since=mark)
        self.assertEqual(ln.args, ["DEL", "a"])
        self.assertEqual(m.select(lambda ln: ln.cmd == "SET", since=mark), [])
        with self.assertRaises(AssertionError):
            m.wait_for(lambda ln: ln.cmd == "FLUSHALL", timeout=0.3)

    def test_monitor_survives_its_server_stopping(self):
        r = self.start_redis()
        m = self.monitor(r)
        r.stop()
        wait_until(lambda: m.error is not None or not m._thread.is_alive(), timeout=5,
                   what="the monitor thread to notice EOF")


class TcpProxySelfTest(LKTestCase):
    def test_proxy_forwards_both_ways(self):
        r = self.start_redis()
        p = self.start_proxy(r)
        c = harness.RespClient(p.port, timeout=2)
        self.addCleanup(c.close)
        self.assertEqual(c.call("SET", "k", "via-proxy"), "OK")
        self.assertEqual(r.get("k"), "via-proxy")
        self.assertEqual(c.call("GET", "k"), "via-proxy")
        self.assertEqual(p.accepted, 1)
        self.assertEqual(p.connections(), 1)

    def test_drop_replies_executes_requests_but_loses_the_answers(self):
        r = self.start_redis()
        m = self.monitor(r)
        p = self.start_proxy(r)
        c = harness.RespClient(p.port, timeout=2)
        self.addCleanup(c.close)
        self.assertEqual(c.call("PING"), "PONG")
        p.drop_replies = True
        with self.assertRaises(socket.timeout):
            c.call("SET", "k", "executed", timeout=0.5)
        self.assertEqual(r.get("k"), "executed")  # it ran in redis
        self.assertGreater(p.dropped_reply_bytes, 0)
        # Which upstream connection sent it: MONITOR shows the proxy's upstream address.
        m.sync(r)
        sets = m.select(lambda ln: ln.cmd == "SET")
        self.assertEqual([ln.source for ln in sets], p.upstream_sources[:1])
        p.drop_replies = False
        # The dropped reply is gone for good; the next command gets its own reply.
        self.assertEqual(c.call("GET", "k", timeout=2), "executed")

    def test_drop_requests_blackholes_the_client(self):
        r = self.start_redis()
        p = self.start_proxy(r)
        c = harness.RespClient(p.port, timeout=2)
        self.addCleanup(c.close)
        p.drop_requests = True
        with self.assertRaises(socket.timeout):
            c.call("SET", "k", "never", timeout=0.5)
        self.assertIsNone(r.get("k"))

    def test_kill_all_closes_current_connections_and_accepts_new_ones(self):
        r = self.start_redis()
        p = self.start_proxy(r)
        c1 = harness.RespClient(p.port, timeout=2)
        self.addCleanup(c1.close)
        self.assertEqual(c1.call("PING"), "PONG")
        before = r.call("CLIENT", "LIST").count("\n")
        p.kill_all()
        with self.assertRaises((EOFError, OSError)):
            c1.call("PING")
        wait_until(lambda: p.connections() == 0, timeout=5, what="proxy pairs to close")
        # The upstream side was closed too.
        wait_until(lambda: r.call("CLIENT", "LIST").count("\n") < before, timeout=5,
                   what="redis to see the upstream connection close")
        c2 = harness.RespClient(p.port, timeout=2)
        self.addCleanup(c2.close)
        self.assertEqual(c2.call("PING"), "PONG")

    def test_proxy_to_a_dead_upstream_closes_the_client(self):
        r = self.start_redis()
        p = self.start_proxy(r)
        r.stop()
        s = socket.create_connection(("127.0.0.1", p.port), timeout=2)
        self.addCleanup(s.close)
        s.settimeout(5)
        try:
            self.assertEqual(s.recv(10), b"")
        except ConnectionResetError:
            pass


@unittest.skipUnless(shutil.which("etcd"), "etcd not installed")
class EtcdServerSelfTest(LKTestCase):
    def test_start_put_get_restart_and_wipe(self):
        e = self.start_etcd()
        self.assertIsNone(e.get("leasekeeper/x"))
        e.put("leasekeeper/x", "pod-a:1")
        self.assertEqual(e.get("leasekeeper/x"), "pod-a:1")
        self.assertIn("create_revision", e.kv("leasekeeper/x"))
        e.restart()
        self.assertEqual(e.get("leasekeeper/x"), "pod-a:1")
        e.restart(wipe=True)
        self.assertIsNone(e.get("leasekeeper/x"))
        e.sigstop()
        with self.assertRaises(OSError):
            e.call("/v3/kv/range", {"key": "eA=="}, timeout=0.5)
        e.sigcont()
        self.assertIsNone(e.get("leasekeeper/x"))


@unittest.skipUnless(shutil.which("etcd"), "etcd not installed")
class EtcdHelpersSelfTest(LKTestCase):
    """What the backend-neutral scenarios and test_etcd.py rely on."""

    def test_events_replay_puts_and_deletes_after_a_mark(self):
        e = self.start_etcd()
        e.put("k", "v1")
        mark = e.revision()
        lease, granted = e.grant(3)
        self.assertEqual(granted, 3)
        e.put("k", "v2", lease=lease)   # an overwrite: not a create
        e.delete("k")
        e.put("k", "v3")                # a create
        e.put("k-other", "x")           # another key (after k in byte order): not reported
        evs = e.events("k", since=mark)
        self.assertEqual([(x.kind, x.value, x.is_create) for x in evs],
                         [("PUT", "v2", False), ("DELETE", None, False), ("PUT", "v3", True)])
        self.assertEqual(evs[0].lease, lease)
        self.assertEqual(e.token_of("k"), evs[2].revision)
        self.assertEqual(e.events("k", since=e.revision()), [])

    def test_remaining_is_a_lower_bound_and_expiry_shows_as_a_delete(self):
        e = self.start_etcd()
        b = EtcdBackend(e)
        lease, _ = e.grant(2)
        e.put("leasekeeper/x", "pod-a", lease=lease)
        mark = b.mark()
        t0 = time.monotonic()
        left = b.remaining("leasekeeper/x")
        self.assertIn(left, (1, 2))
        self.assertEqual((b.holder("leasekeeper/x"), b.token_of("leasekeeper/x")),
                         ("pod-a", e.token_of("leasekeeper/x")))
        gone = self.wait_key_gone(b, "leasekeeper/x", timeout=10)
        self.assertGreaterEqual(gone, t0 + left)
        self.assertEqual([x.kind for x in b.deletions("leasekeeper/x", mark)], ["DELETE"])
        self.assertIsNone(e.lease_ttl(lease))
        self.assertIsNone(b.remaining("leasekeeper/x"))

    def test_watchers_counts_open_watches(self):
        e = self.start_etcd()
        self.assertEqual(e.watchers(), 0)
        conn = e._connection(5)
        self.addCleanup(conn.close)
        conn.request("POST", "/v3/watch", '{"create_request":{"key":"eA=="}}',
                     {"Content-Type": "application/json"})
        resp = conn.getresponse()
        self.assertIn(b'"created":true', resp.readline())
        wait_until(lambda: e.watchers() == 1, timeout=5, what="one watcher")

    def test_tls_requires_the_client_certificate(self):
        certs = self.make_certs()
        for k in ("ca", "server", "client", "other_ca", "other_client", "other_client_key"):
            self.assertTrue(os.path.exists(certs[k]), k)
        e = self.start_etcd(tls=certs)
        self.assertTrue(e.url.startswith("https://127.0.0.1:"))
        e.put("k", "v")
        self.assertEqual(e.get("k"), "v")
        import ssl
        bare = ssl.create_default_context(cafile=certs["ca"])   # no client certificate
        import http.client
        conn = http.client.HTTPSConnection("127.0.0.1", e.client_port, timeout=5, context=bare)
        with self.assertRaises((OSError, http.client.HTTPException)):
            conn.request("POST", "/v3/kv/range", '{"key":"aw=="}')
            conn.getresponse().read()
        conn.close()

    def test_auth_enable_then_the_harness_authenticates(self):
        e = self.start_etcd()
        e.enable_auth("pw-1")
        e.put("k", "v")
        self.assertEqual(e.get("k"), "v")
        r = e.etcdctl("get", "k", "--print-value-only")
        self.assertEqual(r.stdout.strip(), "v", r)
        r = e.etcdctl("get", "k", user=False)
        self.assertNotEqual(r.returncode, 0)

    def test_cluster_starts_names_its_leader_and_survives_a_killed_member(self):
        c = self.start_etcd_cluster()
        self.assertEqual(len(c.endpoints), 3)
        li = c.leader_index()
        c.put("k", "v")
        c.members[li].kill()
        self.assertEqual(len(c.alive_members()), 2)
        wait_until(lambda: c.leader_index(timeout=5) != li, timeout=10, what="a new leader")
        self.assertEqual(c.get("k"), "v")
        self.assertEqual(EtcdBackend(c).config()["endpoints"], c.endpoints)


class BackendUnderTestSelfTest(LKTestCase):
    def test_redis_backend_reads_identity_and_token_from_the_value(self):
        b = self.start_backend("redis")
        b.server.call("SET", "leasekeeper/x", "pod-a:17", "PX", 3000)
        self.assertEqual((b.holder("leasekeeper/x"), b.token_of("leasekeeper/x")), ("pod-a", 17))
        self.assertEqual(b.expected_value("pod-a", 17), "pod-a:17")
        self.assertGreater(b.remaining("leasekeeper/x"), 2.5)
        mark = b.mark()
        b.delete("leasekeeper/x")
        self.assertEqual(len(b.deletions("leasekeeper/x", mark)), 1)
        self.assertIsNone(b.token_of("leasekeeper/x"))
        self.assertEqual(b.config()["type"], "redis")

    def test_lk_backends_selects_the_backends(self):
        old = os.environ.get("LK_BACKENDS")
        try:
            os.environ["LK_BACKENDS"] = "redis"
            self.assertEqual(backends_enabled(), ["redis"])
            with self.assertRaises(unittest.SkipTest):
                self.start_backend("etcd")
        finally:
            if old is None:
                os.environ.pop("LK_BACKENDS", None)
            else:
                os.environ["LK_BACKENDS"] = old


class UtilitiesSelfTest(unittest.TestCase):
    def test_yaml_emitter_writes_the_config_shape(self):
        cfg = {"identity": "pod-a", "socket": "/tmp/a.sock", "http_listen": "",
               "socket_mode": "0660",
               "backends": [{"name": "main", "type": "redis", "address": "127.0.0.1:1",
                             "timeout": "500ms"},
                            {"name": "coord", "type": "etcd", "endpoints": ["http://a:1"]}],
               "locks": [lock_config("x", retry_interval="10s"), lock_config("y")]}
        text = to_yaml(cfg)
        self.assertEqual(text, textwrap.dedent('''\
            identity: "pod-a"
            socket: "/tmp/a.sock"
            http_listen: ""
            socket_mode: "0660"
            backends:
              - name: "main"
                type: "redis"
                address: "127.0.0.1:1"
                timeout: "500ms"
              - name: "coord"
                type: "etcd"
                endpoints: ["http://a:1"]
            locks:
              - name: "x"
                backend: "main"
                ttl: "3s"
                retry_interval: "10s"
              - name: "y"
                backend: "main"
                ttl: "3s"'''))

    def test_durations(self):
        self.assertEqual(dur_ms("3s"), 3000)
        self.assertEqual(dur_ms("250ms"), 250)
        self.assertEqual(dur_ms("1m30s"), 90000)
        self.assertEqual(dur_ms("1.5s"), 1500)

    def test_log_lines_parse_in_both_formats(self):
        # As agent/log.c log_text() writes them: logfmt, values quoted only when needed.
        d = parse_log_line('ts=2026-01-01T00:00:00.000Z level=info msg="drain complete" '
                           'exit_reason=drained wait_duration_ms=12 released=1 expired=0 '
                           'failed=0 note="a \\"b\\" c\\\\d\\x01" empty="" ok=true')
        self.assertEqual(d["ts"], "2026-01-01T00:00:00.000Z")
        self.assertEqual(d["level"], "info")
        self.assertEqual(d["msg"], "drain complete")
        self.assertEqual(d["exit_reason"], "drained")
        self.assertEqual(d["released"], 1)
        self.assertEqual(d["note"], 'a "b" c\\d\x01')
        self.assertEqual(d["empty"], "")
        self.assertIs(d["ok"], True)
        d = parse_log_line("ts=2026-01-01T00:00:00.000Z level=warn msg=reconnecting "
                           "backend=main")
        self.assertEqual(d["msg"], "reconnecting")
        self.assertEqual(d["backend"], "main")
        d = parse_log_line('{"ts":"2026-01-01T00:00:00.000Z","level":"info",'
                           '"msg":"drain complete","released":1}')
        self.assertEqual(d["released"], 1)
        # Not whole log lines: cut short, the old "ts level msg" layout, no msg, other text.
        for bad in ('ts=2026-01-01T00:00:00.000Z level=info msg="drain comp',
                    '2026-01-01T00:00:00.000Z info  "drain complete" released=1',
                    'ts=2026-01-01T00:00:00.000Z level=info',
                    '{"ts":"x","level":"info"',
                    '==123==ERROR: AddressSanitizer: heap-use-after-free'):
            self.assertIsNone(parse_log_line(bad), bad)

    def test_hmac_matches_libsodium_crypto_auth_definition(self):
        key = bytes(range(32))
        nonce = bytes(range(100, 132))
        mac = AppClient.compute_mac(key, nonce.hex())
        self.assertEqual(len(mac), 64)
        self.assertEqual(mac, hmac.new(key, nonce, hashlib.sha512).hexdigest()[:64])


# ---------------------------------------------------------------------------------------------
# A fake agent: just enough of SPEC section 3 to exercise AppClient, Agent and run_cli.

FAKE_AGENT = r'''#!/usr/bin/env python3
import json, os, re, signal, socket, sys, threading, time, hmac, hashlib
args = sys.argv[1:]
def log(msg, **f):
    d = {"ts": "2026-01-01T00:00:00.000Z", "level": "info", "msg": msg}
    d.update(f)
    sys.stderr.write(json.dumps(d) + "\n"); sys.stderr.flush()
if args[:1] == ["version"]:
    print("leasekeeper fake 0.0"); sys.exit(0)
if args[:1] == ["check-config"]:
    sys.stderr.write("bad.yaml:3:5: locks[0].ttl: \"10\" has no unit\n"); sys.exit(1)
if args[:1] != ["agent"]:
    sys.exit(2)
cfg = open(args[2]).read()
path = re.search(r'^socket: "(.*)"$', cfg, re.M).group(1)
ident = re.search(r'^identity: "(.*)"$', cfg, re.M).group(1)
key = os.environ.get("FAKE_KEY")
if os.environ.get("FAKE_SANITIZER"):
    sys.stderr.write("==1==ERROR: AddressSanitizer: heap-use-after-free on address 0x1\n")
if os.environ.get("FAKE_IGNORE_TERM"):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
srv = socket.socket(socket.AF_UNIX); srv.bind(path); srv.listen(16)
log("listening", socket=path)
clients = []
def serve(c):
    nonce = os.urandom(32)
    f = c.makefile("rb")
    c.sendall(("LEASEKEEPER 1 id=%s nonce=%s auth=%s\n" % (ident, nonce.hex(), "hmac" if key else "none")).encode())
    first = True
    for raw in f:
        line = raw.decode().rstrip("\r\n"); w = line.split(" ")
        if first:
            first = False
            if w[0] != "HELLO":
                c.sendall(b"ERR hello_required send HELLO first\n"); break
            if key:
                mac = dict(x.split("=", 1) for x in w[2:] if "=" in x).get("mac", "")
                good = hmac.new(bytes.fromhex(key), nonce, hashlib.sha512).digest()[:32].hex()
                if mac != good:
                    c.sendall(b"ERR auth_failed bad mac\n"); break
            c.sendall(("OK HELLO 1 agent=fake id=%s\n" % ident).encode()); continue
        if w[0] == "PING": c.sendall(b"OK PONG\n")
        elif w[0] == "QUIT": c.sendall(b"OK BYE\n"); break
        elif w[0] == "CAMPAIGN":
            # An event before the reply (allowed: events may come between replies), then two.
            c.sendall(("FOLLOWER %s holder=-\nOK CAMPAIGN %s\nLEADER %s token=42 ttl_ms=3000\n" % (w[1], w[1], w[1])).encode())
        elif w[0] == "STATUS":
            c.sendall(("OK STATUS " + json.dumps({"identity": ident, "draining": False, "locks": [{"name": "x", "backend": "main", "state": "leader", "token": 42, "holder": ident, "ttl_ms": 2000}]}) + "\n").encode())
        elif w[0] == "STOPME":
            c.sendall(b"STOP deadline_ms=100\n"); break
        else: c.sendall(b"ERR unknown_verb what\n")
    c.close()
def term(*a):
    log("drain complete", exit_reason="drained", released=0, expired=0, failed=0, wait_duration_ms=0)
    os._exit(0)
if not os.environ.get("FAKE_IGNORE_TERM"):
    signal.signal(signal.SIGTERM, term)
while True:
    c, _ = srv.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
'''


class FakeAgentSelfTest(LKTestCase):
    def setUp(self):
        super().setUp()
        path = os.path.join(self.tmp, "fake-leasekeeper")
        with open(path, "w") as f:
            f.write(FAKE_AGENT)
        os.chmod(path, 0o755)
        old = os.environ.get("LK_BIN")
        os.environ["LK_BIN"] = path

        def restore():
            if old is None:
                os.environ.pop("LK_BIN", None)
            else:
                os.environ["LK_BIN"] = old
        self.addCleanup(restore)

    def test_agent_starts_writes_config_and_waits_for_its_socket(self):
        a = self.start_agent("pod-a", redis="127.0.0.1:1",
                             locks=[lock_config("x", stepdown_timeout="1s")])
        self.assertTrue(a.alive())
        self.assertTrue(stat.S_ISSOCK(os.stat(a.sock_path).st_mode))
        with open(a.config_path) as f:
            text = f.read()
        self.assertIn('identity: "pod-a"', text)
        self.assertIn('stepdown_timeout: "1s"', text)
        self.assertIn('http_listen: ""', text)
        self.assertEqual(a.key("x"), "leasekeeper/x")
        self.assertEqual(a.value(5), "pod-a:5")
        self.assertEqual(a.find_logs("listening")[0]["socket"], a.sock_path)

    def test_app_client_handshake_replies_and_event_queueing(self):
        a = self.start_agent("pod-a", redis="127.0.0.1:1")
        app = self.connect(a)
        self.assertEqual(app.banner_attrs["id"], "pod-a")
        self.assertEqual(app.banner_attrs["auth"], "none")
        self.assertTrue(app.hello_reply.ok)
        self.assertEqual(app.call_ok("PING").raw, "OK PONG")
        r = app.call("CAMPAIGN x")
        self.assertEqual(r.raw, "OK CAMPAIGN x")
        # FOLLOWER came before the reply: it was queued, not lost.
        ev = app.expect("FOLLOWER", "x", holder="-")
        ev2 = app.expect("LEADER", "x")
        self.assertEqual(ev2.token, 42)
        self.assertEqual(ev2.int("ttl_ms"), 3000)
        self.assertLessEqual(ev.t, ev2.t)
        self.assertIsNone(app.next_event(timeout=0.2))
        r = app.call("BOGUS")
        self.assertEqual((r.kind, r.code), ("ERR", "unknown_verb"))
        st = app.status()
        self.assertEqual(harness.status_locks(st)["x"]["token"], 42)

    def test_expect_fails_on_the_wrong_kind_instead_of_skipping(self):
        a = self.start_agent("pod-a", redis="127.0.0.1:1")
        app = self.connect(a)
        app.call_ok("CAMPAIGN x")
        with self.assertRaises(AssertionError):
            app.expect("LEADER", "x")  # the first event is FOLLOWER

    def test_campaign_helper_allows_follower_before_leader(self):
        a = self.start_agent("pod-a", redis="127.0.0.1:1")
        app, ev = self.leader_app(a)
        self.assertEqual(ev.raw, "LEADER x token=42 ttl_ms=3000")

    def test_await_event_rejects_kinds_not_allowed(self):
        a = self.start_agent("pod-a", redis="127.0.0.1:1")
        app = self.connect(a)
        app.call_ok("CAMPAIGN x")
        with self.assertRaises(AssertionError):
            app.await_event("LEADER", "x", allow=())

    def test_eof_handling(self):
        a = self.start_agent("pod-a", redis="127.0.0.1:1")
        app = self.connect(a)
        app.send("STOPME")
        app.expect("STOP")
        with self.assertRaises(ConnectionClosed):
            app.next_event(timeout=5)
        app2 = self.connect(a)
        self.assertEqual(app2.call("QUIT").raw, "OK BYE")
        app2.expect_eof(timeout=5)
        self.assertFalse(app2.is_open())
        app3 = self.connect(a, hello=False)
        app3.read_banner()
        app3.send("PING")
        self.assertEqual(app3.read_line().code, "hello_required")
        app3.expect_eof()
        app4 = self.connect(a)
        app4.send("STOPME")
        msgs = app4.until_eof(timeout=5)
        self.assertEqual([m.kind for m in msgs], ["STOP"])

    def test_hmac_hello(self):
        key = os.urandom(32)
        a = self.start_agent("pod-a", redis="127.0.0.1:1", env={"FAKE_KEY": key.hex()})
        app = self.connect(a, key=key)
        self.assertEqual(app.banner_attrs["auth"], "hmac")
        self.assertTrue(app.hello_reply.ok)
        bad = self.connect(a, hello=False)
        bad.read_banner()
        r = bad.hello(mac="0" * 64)
        self.assertEqual(r.code, "auth_failed")
        bad.expect_eof()

    def test_agent_stop_drain_summary_and_exit_status(self):
        a = self.start_agent("pod-a", redis="127.0.0.1:1")
        a.send_signal(signal.SIGTERM)
        self.assertEqual(a.wait(5), 0)
        s = a.drain_summary()
        self.assertEqual(s["exit_reason"], "drained")

    def test_teardown_fails_on_sanitizer_reports(self):
        a = self.make_agent("pod-a", redis="127.0.0.1:1", env={"FAKE_SANITIZER": "1"})
        a.start()
        with self.assertRaises(AssertionError) as cm:
            self._teardown_agent(a)
        self.assertIn("AddressSanitizer", str(cm.exception))

    def test_teardown_kills_an_agent_that_ignores_sigterm_and_fails(self):
        a = self.make_agent("pod-a", redis="127.0.0.1:1", env={"FAKE_IGNORE_TERM": "1"},
                            shutdown_timeout="1s")
        a.stop_margin = 0.5
        a.start()
        t0 = time.monotonic()
        with self.assertRaises(AssertionError) as cm:
            self._teardown_agent(a)
        self.assertIn("was killed", str(cm.exception))
        self.assertLess(time.monotonic() - t0, 5)
        self.assertFalse(a.alive())

    def test_teardown_fails_when_the_agent_crashed(self):
        a = self.make_agent("pod-a", redis="127.0.0.1:1")
        a.start()
        os.kill(a.pid, signal.SIGSEGV)
        a.wait(5)
        with self.assertRaises(AssertionError) as cm:
            self._teardown_agent(a)
        self.assertIn("signal 11", str(cm.exception))

    def test_agent_that_exits_early_is_reported_with_its_log(self):
        a = self.make_agent("pod-a", redis="127.0.0.1:1")
        with open(a.config_path, "w") as f:
            f.write("garbage\n")
        with self.assertRaises(AssertionError) as cm:
            a.start(timeout=5)
        self.assertIn("exited", str(cm.exception))

    def test_run_cli_captures_rc_and_output(self):
        r = self.cli("version")
        self.assertEqual(r.rc, 0)
        self.assertIn("fake", r.stdout)
        r = self.cli("check-config", "-c", "bad.yaml")
        self.assertEqual(r.rc, 1)
        self.assertRegex(r.stderr, r"bad\.yaml:3:5: locks\[0\]\.ttl: ")
        p = self.start_cli("version")
        self.assertEqual(p.wait(5), 0)
        self.assertIn("fake", p.stdout())


class FailureDetectionSelfTest(unittest.TestCase):
    def test_cleanups_know_whether_the_test_failed(self):
        seen = {}

        class Inner(LKTestCase):
            def test_fails(self):
                self.addCleanup(lambda: seen.__setitem__("fails", self._failed()))
                self.fail("on purpose")

            def test_passes(self):
                self.addCleanup(lambda: seen.__setitem__("passes", self._failed()))

        result = unittest.TestResult()
        import io
        import contextlib
        with contextlib.redirect_stderr(io.StringIO()):
            unittest.defaultTestLoader.loadTestsFromTestCase(Inner).run(result)
        self.assertEqual(seen, {"fails": True, "passes": False})
        self.assertEqual(len(result.failures), 1)


class MissingBinarySelfTest(LKTestCase):
    def test_a_missing_binary_gives_a_clear_error(self):
        old = os.environ.get("LK_BIN")
        os.environ["LK_BIN"] = os.path.join(self.tmp, "nope")
        try:
            a = self.make_agent("pod-a", redis="127.0.0.1:1")
            with self.assertRaises(AssertionError) as cm:
                a.start()
            self.assertIn("not found", str(cm.exception))
        finally:
            if old is None:
                os.environ.pop("LK_BIN", None)
            else:
                os.environ["LK_BIN"] = old


if __name__ == "__main__":
    unittest.main(verbosity=2)
