"""The protocol helpers and the low-level Client against the fake agent; the build backend."""

import os
import shutil
import sys
import tempfile
import threading
import unittest
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

import leasekeeper  # noqa: E402
from leasekeeper import protocol  # noqa: E402
from fakeagent import FakeAgent  # noqa: E402

# The test vector of proto/PROTOCOL.md (and tests/check_auth.c).
KEY = b"leasekeeper-test-key-32-bytes!!!"
NONCE = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
MAC = "ddd566d49d16ac64bc3ee2b7a09fc87bd955f4cf8457a5a4c3ccce35d4d197ff"


class ProtocolTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="lk-py-")
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def test_mac_test_vector(self):
        self.assertEqual(leasekeeper.mac_hex(KEY, NONCE), MAC)
        with self.assertRaises(ValueError):
            leasekeeper.mac_hex(KEY[:31], NONCE)

    def test_load_key(self):
        p = os.path.join(self.tmp, "k")
        for content in (KEY, (KEY.hex() + "\n").encode(), ("  " + KEY.hex().upper() + "\n\n").encode()):
            with open(p, "wb") as f:
                f.write(content)
            self.assertEqual(leasekeeper.load_key(p), KEY)
        for bad in (b"short", KEY + b"x", b"zz" * 32):
            with open(p, "wb") as f:
                f.write(bad)
            with self.assertRaises(ValueError):
                leasekeeper.load_key(p)

    def test_parse_line(self):
        m = leasekeeper.parse_line(b"LEADER  x token=42 ttl_ms=9950 until_mono_ms=7 new=a=b\r", 1.5)
        self.assertEqual((m.kind, m.lock, m.args, m.t), ("LEADER", "x", ["x"], 1.5))
        self.assertEqual(m.attrs, {"token": "42", "ttl_ms": "9950", "until_mono_ms": "7",
                                   "new": "a=b"})
        self.assertEqual((m.token(), m.ms("ttl_ms")), (42, 9950))
        self.assertIsNone(m.ms("absent", required=False))
        r = leasekeeper.parse_line(b"OK CAMPAIGN x")
        self.assertTrue(r.ok and r.is_reply and not r.is_event)
        self.assertEqual((r.verb, r.lock), ("CAMPAIGN", "x"))
        e = leasekeeper.parse_line(b"ERR unknown_lock no such lock")
        self.assertEqual((e.ok, e.code), (False, "unknown_lock"))
        self.assertIsNone(leasekeeper.parse_line(b"   "))
        for bad in (b"A\x00B", b"caf\xc3\xa9", b"A x k=1 k=2", b"A" * 4096):
            with self.assertRaises(leasekeeper.ProtocolError):
                leasekeeper.parse_line(bad)
        for tok in ("-1", "18446744073709551616", "1e3", "", "0x10"):
            with self.assertRaises(leasekeeper.ProtocolError):
                leasekeeper.parse_line(("LOST x token=%s" % tok).encode()).token()
        self.assertEqual(leasekeeper.parse_line(b"LOST x token=18446744073709551615").token(),
                         2 ** 64 - 1)

    def test_default_socket(self):
        old = os.environ.pop("LEASEKEEPER_SOCKET", None)
        try:
            self.assertEqual(leasekeeper.default_socket_path(), "/run/leasekeeper/agent.sock")
            os.environ["LEASEKEEPER_SOCKET"] = "/tmp/x.sock"
            self.assertEqual(leasekeeper.default_socket_path(), "/tmp/x.sock")
        finally:
            os.environ.pop("LEASEKEEPER_SOCKET", None)
            if old is not None:
                os.environ["LEASEKEEPER_SOCKET"] = old

    def test_monotonic_is_time_monotonic(self):
        import time
        self.assertLess(abs(leasekeeper.monotonic() - time.monotonic()), 0.05)


class ClientTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="lk-py-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.agent = FakeAgent(self.tmp, key=KEY)
        self.addCleanup(self.agent.close)

    def connect(self, **kw):
        """Client.connect() in a thread while the fake agent does its side."""
        c = leasekeeper.Client(self.agent.path, client_name="unit test", auth_key=KEY, **kw)
        out = {}

        def go():
            try:
                out["c"] = c.connect()
            except BaseException as e:  # noqa: BLE001
                out["e"] = e
        th = threading.Thread(target=go)
        th.start()
        conn = self.agent.accept()
        hello = conn.handshake(campaign=False)
        th.join(5)
        if "e" in out:
            raise out["e"]
        self.addCleanup(c.close)
        return c, conn, hello

    def test_handshake(self):
        c, conn, hello = self.connect()
        self.assertIn("client=unit_test", hello)
        self.assertIn("mac=", hello)
        self.assertEqual((c.identity, c.agent_version, c.auth), ("pod-a", "0.0-fake", "hmac"))
        self.assertTrue(c.shares_clock)
        self.assertLess(abs(c.clock_offset_ms), 1000)

    def test_call_queues_events_in_order(self):
        c, conn, _ = self.connect()
        th = threading.Thread(target=lambda: (conn.expect("STATUS"),
                                              conn.send("FOLLOWER x holder=-"),
                                              conn.send("SHINY new event"),
                                              conn.send('OK STATUS {"locks":[]}')))
        th.start()
        r = c.call("STATUS")
        th.join()
        self.assertEqual(r.raw, 'OK STATUS {"locks":[]}')
        self.assertEqual(r.request, "STATUS")
        self.assertTrue(c.has_queued())
        self.assertEqual(c.next_event(1).raw, "FOLLOWER x holder=-")
        self.assertEqual(c.next_event(1).kind, "SHINY")
        self.assertIsNone(c.next_event(0.05))

    def test_request_reply_comes_back_in_order(self):
        c, conn, _ = self.connect()
        c.request("CAMPAIGN x")
        c.request("PING")
        conn.expect("CAMPAIGN x")
        conn.expect("PING")
        conn.send("OK CAMPAIGN x")
        conn.send("LEADER x token=1 ttl_ms=3000 until_mono_ms=%d" % conn.until(2000))
        conn.send("ERR bad_request whatever")
        m1, m2, m3 = (c.read_message(1) for _ in range(3))
        self.assertEqual((m1.verb, m1.request), ("CAMPAIGN", "CAMPAIGN x"))
        self.assertEqual(m2.kind, "LEADER")
        self.assertAlmostEqual(c.deadline_of(m2), leasekeeper.monotonic() + 2.0, delta=0.2)
        self.assertEqual((m3.code, m3.request), ("bad_request", "PING"))
        with self.assertRaises(leasekeeper.RequestError):
            th = threading.Thread(target=lambda: (conn.expect("ACK"),
                                                  conn.send("ERR bad_token nope")))
            th.start()
            try:
                c.call_ok("ACK x 1")
            finally:
                th.join()

    def test_eof_after_queued_lines(self):
        c, conn, _ = self.connect()
        conn.send("FOLLOWER x holder=pod-b")
        conn.send_raw(b"LOST x tok")  # a partial line, then EOF
        conn.close()
        self.assertEqual(c.next_event(2).raw, "FOLLOWER x holder=pod-b")
        with self.assertRaises(leasekeeper.ConnectionClosed):
            c.next_event(2)
        with self.assertRaises(leasekeeper.ConnectionClosed):
            c.send_line("PING")

    def test_protocol_error_after_queued_lines(self):
        c, conn, _ = self.connect()
        conn.send_raw(b"FOLLOWER x holder=pod-b\nFOLLOWER x holder=\x01\nFOLLOWER x holder=c\n")
        self.assertEqual(c.next_event(2).raw, "FOLLOWER x holder=pod-b")
        with self.assertRaises(leasekeeper.ProtocolError):
            c.next_event(2)
        with self.assertRaises(leasekeeper.ProtocolError):
            c.next_event(2)

    def test_call_timeout(self):
        c, conn, _ = self.connect()
        with self.assertRaises(TimeoutError):
            c.call("PING", timeout=0.1)

    def test_refused_before_the_banner(self):
        c = leasekeeper.Client(self.agent.path)
        th = threading.Thread(target=lambda: self.agent.accept().send(
            "ERR too_many_clients 128 clients"))
        th.start()
        with self.assertRaises(leasekeeper.ConnectionClosed) as cm:
            c.connect()
        th.join()
        self.assertIn("too_many_clients", str(cm.exception))
        th = threading.Thread(target=lambda: self.agent.accept().send(
            "ERR auth_failed peer uid 1000 not allowed"))
        th.start()
        with self.assertRaises(leasekeeper.AuthError):
            leasekeeper.Client(self.agent.path).connect()
        th.join()

    def test_no_socket(self):
        with self.assertRaises(OSError):
            leasekeeper.Client(os.path.join(self.tmp, "none.sock")).connect()


class BuildBackendTest(unittest.TestCase):
    """_build/lk_backend.py: what `pip install ./clients/python` runs, offline."""

    def test_wheel_sdist_editable(self):
        sys.path.insert(0, os.path.join(ROOT, "_build"))
        import lk_backend
        out = tempfile.mkdtemp(prefix="lk-py-build-")
        self.addCleanup(shutil.rmtree, out, True)
        self.assertEqual(lk_backend.get_requires_for_build_wheel(), [])
        whl = lk_backend.build_wheel(out)
        self.assertEqual(whl, "leasekeeper-%s-py3-none-any.whl" % leasekeeper.__version__)
        with zipfile.ZipFile(os.path.join(out, whl)) as z:
            names = z.namelist()
            record = z.read("leasekeeper-%s.dist-info/RECORD" % leasekeeper.__version__).decode()
        for n in ("leasekeeper/__init__.py", "leasekeeper/elector.py", "leasekeeper/client.py",
                  "leasekeeper/protocol.py"):
            self.assertIn(n, names)
            self.assertIn(n + ",sha256=", record)
        self.assertFalse([n for n in names if "__pycache__" in n or n.startswith("tests/")])
        self.assertTrue(lk_backend.build_sdist(out).endswith(".tar.gz"))
        ed = lk_backend.build_editable(out)
        with zipfile.ZipFile(os.path.join(out, ed)) as z:
            pth = [n for n in z.namelist() if n.endswith(".pth")]
            self.assertEqual(len(pth), 1)
            self.assertEqual(z.read(pth[0]).decode().strip(), ROOT)

    def test_pyproject_without_tomllib(self):
        sys.path.insert(0, os.path.join(ROOT, "_build"))
        import lk_backend
        saved = sys.modules.get("tomllib")
        sys.modules["tomllib"] = None  # as on Python 3.9/3.10
        try:
            p = lk_backend._project()
        finally:
            if saved is None:
                sys.modules.pop("tomllib", None)
            else:
                sys.modules["tomllib"] = saved
        self.assertEqual((p["name"], p["version"]), ("leasekeeper", leasekeeper.__version__))
        self.assertEqual(p["requires-python"], ">=3.9")


if __name__ == "__main__":
    unittest.main()
