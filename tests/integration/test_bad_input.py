"""Hostile and broken clients (SPEC section 3): every bad input gets its error code, the
connections that must be closed are closed, and nothing disturbs a leading app meanwhile."""

import os
import select
import signal
import socket
import time
import unittest

from harness import (DEFAULT_TIMEOUT, LKTestCase, lock_config, status_locks,
                     wait_until)

KEY = "leasekeeper/x"
MANY = int(os.environ.get("LK_TEST_CLIENTS", "200"))


class GuardedLeaderMixin:
    """A leading app that every test checks at the end: no event (no LOST), key intact,
    PING answered, agent alive."""

    def start_guarded(self, **agent_kw):
        self.redis = self.start_redis()
        self.agent = self.start_agent("pod-a", self.redis,
                                      locks=[lock_config("x", ttl="3s"), lock_config("y")],
                                      **agent_kw)
        self.leader, lead = self.leader_app(self.agent, "x")
        self.token = lead.token

    def assertLeaderUndisturbed(self):
        self.assertTrue(self.agent.alive(), "the agent died:\n" + self.agent.tail())
        self.leader.assert_no_event(0.2)
        self.assertEqual(self.leader.call("PING", timeout=5).raw, "OK PONG")
        self.assertEqual(self.redis.get(KEY), self.agent.value(self.token))
        x = status_locks(self.leader.status())["x"]
        self.assertEqual(str(x["state"]).lower(), "leader")
        self.assertEqual(int(x["token"]), self.token)


class BadInputTest(GuardedLeaderMixin, LKTestCase):
    def setUp(self):
        super().setUp()
        self.start_guarded()

    def raw(self, label="raw"):
        """Connected and banner read, no HELLO yet."""
        c = self.connect(self.agent, hello=False, label=label)
        c.read_banner()
        return c

    def expect_err(self, c, line, code, closes=False):
        if isinstance(line, bytes):
            c.send_raw(line)
        else:
            c.send(line)
        r = c.read_line()
        self.assertEqual((r.kind, r.code), ("ERR", code), "%r answered %r" % (line, r.raw))
        if closes:
            c.expect_eof(timeout=5)
        return r

    def test_request_before_hello_gets_hello_required_and_close(self):
        c = self.raw()
        self.expect_err(c, "PING", "hello_required", closes=True)
        c2 = self.raw()
        self.expect_err(c2, "CAMPAIGN x", "hello_required", closes=True)
        self.assertLeaderUndisturbed()

    def test_hello_with_unsupported_version_is_refused_and_closed(self):
        c = self.raw()
        self.expect_err(c, "HELLO 2", "unsupported_version", closes=True)
        self.assertLeaderUndisturbed()

    def test_line_over_4096_bytes_gets_line_too_long_and_close(self):
        c = self.connect(self.agent, label="long")
        self.expect_err(c, b"PING " + b"A" * 4995 + b"\n", "line_too_long", closes=True)
        # Without any newline at all, too.
        c2 = self.connect(self.agent, label="long2")
        c2.send_raw(b"B" * 5000)
        r = c2.read_line()
        self.assertEqual((r.kind, r.code), ("ERR", "line_too_long"))
        c2.expect_eof(timeout=5)
        # Before HELLO as well.
        c3 = self.raw("long3")
        self.expect_err(c3, b"HELLO 1 client=" + b"C" * 5000 + b"\n", "line_too_long",
                        closes=True)
        self.assertLeaderUndisturbed()

    def test_line_of_exactly_4096_bytes_is_not_too_long(self):
        c = self.connect(self.agent, label="edge")
        line = b"FROB " + b"a" * (4096 - 6) + b"\n"
        self.assertEqual(len(line), 4096)
        c.send_raw(line)
        r = c.read_line()
        self.assertEqual(r.kind, "ERR")
        self.assertNotEqual(r.code, "line_too_long")
        self.assertEqual(c.call("PING").raw, "OK PONG")
        self.assertLeaderUndisturbed()

    def test_binary_garbage_gets_bad_request(self):
        c = self.connect(self.agent, label="garbage")
        self.expect_err(c, b"\x00\x01\x02\xff\xfe\x7f\x1b[0m garbage\n", "bad_request")
        if c.is_open(0.2):  # the connection may stay
            self.assertEqual(c.call("PING").raw, "OK PONG")
        self.assertLeaderUndisturbed()

    def test_unknown_verb_gets_unknown_verb_and_the_connection_stays(self):
        c = self.connect(self.agent, label="frob")
        self.expect_err(c, "FROB x", "unknown_verb")
        self.assertEqual(c.call("PING").raw, "OK PONG")
        self.assertLeaderUndisturbed()

    def test_unknown_lock_gets_unknown_lock(self):
        c = self.connect(self.agent, label="nosuch")
        for line in ("CAMPAIGN nosuch", "WATCH nosuch", "ACK nosuch 1", "RESIGN nosuch"):
            self.expect_err(c, line, "unknown_lock")
        self.assertEqual(c.call("PING").raw, "OK PONG")
        self.assertLeaderUndisturbed()

    def test_malformed_lock_names_and_arguments_are_rejected(self):
        c = self.connect(self.agent, label="malformed")
        for line in ("CAMPAIGN bad/name", "CAMPAIGN " + "a" * 129, "CAMPAIGN", "WATCH",
                     "ACK x", "ACK x notanumber", "ACK x -1"):
            r = c.call(line)
            self.assertEqual(r.kind, "ERR", "%r answered %r" % (line, r.raw))
            self.assertIn(r.code, ("bad_request", "unknown_lock", "bad_token"),
                          "%r answered %r" % (line, r.raw))
        self.assertEqual(c.call("PING").raw, "OK PONG")
        self.assertLeaderUndisturbed()

    def test_ack_with_a_wrong_token_gets_bad_token(self):
        c = self.connect(self.agent, label="acker")
        self.expect_err(c, "ACK x %d" % (self.token + 12345), "bad_token")
        self.assertEqual(self.leader.call("ACK x %d" % (self.token + 1)).code, "bad_token")
        self.assertLeaderUndisturbed()

    def test_partial_lines_pipelining_and_crlf(self):
        c = self.connect(self.agent, label="bytes")
        c.send_raw(b"PI")
        time.sleep(0.2)
        c.send_raw(b"NG\n")
        self.assertEqual(c.read_line().raw, "OK PONG")
        c.send_raw(b"PING\r\n")
        self.assertEqual(c.read_line().raw, "OK PONG")
        c.send_raw(b"PING\nFROB\nSTATUS\nPING\n")
        replies = [c.read_line() for _ in range(4)]
        self.assertEqual(replies[0].raw, "OK PONG")
        self.assertEqual(replies[1].code, "unknown_verb")
        self.assertEqual((replies[2].kind, replies[2].verb), ("OK", "STATUS"))
        self.assertEqual(replies[3].raw, "OK PONG")
        self.assertLeaderUndisturbed()

    def test_clients_vanishing_at_any_point_do_not_disturb(self):
        for i in range(40):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(self.agent.sock_path)
            if i % 4 == 1:
                s.recv(200)
            elif i % 4 == 2:
                s.sendall(b"HELLO 1 cli")  # half a line
            elif i % 4 == 3:
                s.sendall(b"HELLO 1\nWATCH *\nCAMPAIGN y\n")  # then gone while campaigning
            s.close()
        self.assertLeaderUndisturbed()
        # The abandoned CAMPAIGN y did not leave y held.
        wait_until(lambda: self.redis.get("leasekeeper/y") is None, timeout=5,
                   what="y to be released after its campaigner vanished")

    def test_flooding_client_that_never_reads_does_not_affect_others(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(s.close)
        s.connect(self.agent.sock_path)
        s.sendall(b"HELLO 1\n")
        s.setblocking(False)
        chunk = b"STATUS\n" * 1000
        sent, deadline = 0, time.monotonic() + 3.0
        while time.monotonic() < deadline and sent < 2 * 1024 * 1024:
            try:
                sent += s.send(chunk)
            except BlockingIOError:
                select.select([], [s], [], 0.1)
            except OSError:
                break  # the agent dropped us: fine
        self.assertLeaderUndisturbed()

    def test_idle_clients_beyond_the_slots_give_way_oldest_first(self):
        # 200 connections that say nothing, against the default max_clients of 128: each new
        # one takes the slot of the oldest idle one, which is closed (no ERR: it asked for
        # nothing), so the newest 128 are served and nobody is refused.
        socks = []
        self.addCleanup(lambda: [x.close() for x in socks])
        for _ in range(MANY):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(DEFAULT_TIMEOUT)
            s.connect(self.agent.sock_path)
            socks.append(s)
        kept, evicted, live = [], [], []
        for s in socks:
            # One closed to make room before its banner left the agent reads EOF at once.
            first = _read_line(s, DEFAULT_TIMEOUT)
            if first == b"":
                evicted.append(s)
                continue
            self.assertTrue(first.startswith(b"LEASEKEEPER "), first)
            live.append(s)
        for s in live:
            try:
                s.sendall(b"HELLO 1\nPING\n")
            except OSError:
                pass  # closed meanwhile: reads EOF below
        for s in live:
            line = _read_line(s, DEFAULT_TIMEOUT)
            if line == b"":
                evicted.append(s)
                continue
            self.assertFalse(line.startswith(b"ERR"), line)
            self.assertTrue(line.startswith(b"OK HELLO"), line)
            self.assertEqual(_read_line(s, DEFAULT_TIMEOUT), b"OK PONG")
            kept.append(s)
        print("%d idle connections: %d served, %d closed to make room"
              % (MANY, len(kept), len(evicted)))
        # The test's own campaign client holds a slot that is never given away.
        active = self.leader.status()["clients"]["campaign"]
        self.assertGreaterEqual(active, 1)
        self.assertEqual(len(kept), 128 - active)
        self.assertEqual(len(evicted), MANY - len(kept))
        # The oldest were the ones closed.
        self.assertEqual(evicted, socks[:len(evicted)])
        self.assertLeaderUndisturbed()
        # An app still gets in while every slot is held by an idle client.
        app = self.connect(self.agent, label="late-app")
        self.assertEqual(app.call("PING").raw, "OK PONG")


def _read_line(s, timeout):
    s.settimeout(timeout)
    buf = b""
    while not buf.endswith(b"\n"):
        try:
            b = s.recv(1)
        except ConnectionResetError:
            b = b""
        if not b:
            return buf
        buf += b
    return buf.rstrip(b"\r\n")


def _read_until_eof(s, timeout):
    s.settimeout(timeout)
    data = b""
    while True:
        try:
            b = s.recv(4096)
        except ConnectionResetError:
            return data
        except socket.timeout:
            return data + b"<no EOF within %.0fs>" % timeout
        if not b:
            return data
        data += b


class DrainingTest(GuardedLeaderMixin, LKTestCase):
    def setUp(self):
        super().setUp()
        self.start_guarded()

    def test_campaign_during_drain_gets_draining(self):
        drainer = self.connect(self.agent, label="drainer")
        self.assertEqual(drainer.call("DRAIN").raw, "OK DRAIN")
        self.leader.expect("STEPDOWN", "x", token=self.token)
        late = self.connect(self.agent, label="late")
        for line in ("CAMPAIGN x", "CAMPAIGN y"):
            r = late.call(line)
            self.assertEqual((r.kind, r.code), ("ERR", "draining"), r.raw)
        self.assertEqual(late.call("PING").raw, "OK PONG")
        st = late.status()
        self.assertIs(st.get("draining"), True)
        self.assertEqual(self.redis.get("leasekeeper/y"), None)
        self.leader.call_ok("ACK x %d" % self.token)
        self.leader.expect("RELEASED", "x", outcome="released")
        self.leader.expect("STOP")
        msgs = drainer.until_eof(timeout=10)
        self.assertIn("DRAINED", [m.kind for m in msgs])
        self.assertEqual(self.agent.wait(20), 0)


class AuthTest(GuardedLeaderMixin, LKTestCase):
    def setUp(self):
        super().setUp()
        self.key_path, self.key = self.write_key_file()
        # The guarded leader authenticates through LKTestCase.connect() using agent.auth_key.
        self.redis = self.start_redis()
        self.agent = self.make_agent("pod-a", self.redis, auth_key_file=self.key_path,
                                     locks=[lock_config("x", ttl="3s"), lock_config("y")])
        self.agent.auth_key = self.key
        self.agent.start()
        self.leader, lead = self.leader_app(self.agent, "x")
        self.token = lead.token

    def raw(self):
        c = self.connect(self.agent, hello=False, label="raw")
        b = c.read_banner()
        self.assertEqual(b["auth"], "hmac")
        return c

    def test_hello_with_the_right_mac_is_accepted(self):
        c = self.raw()
        r = c.hello(key=self.key)
        self.assertTrue(r.ok, r.raw)
        self.assertEqual(c.call("PING").raw, "OK PONG")
        self.assertLeaderUndisturbed()

    def test_hello_with_a_bad_mac_gets_auth_failed_and_close(self):
        c = self.raw()
        r = c.hello(mac="00" * 32)
        self.assertEqual((r.kind, r.code), ("ERR", "auth_failed"))
        c.expect_eof(timeout=5)
        self.assertLeaderUndisturbed()

    def test_hello_without_a_mac_gets_auth_failed_and_close(self):
        c = self.raw()
        r = c.hello(client_name="nomac")
        self.assertEqual((r.kind, r.code), ("ERR", "auth_failed"))
        c.expect_eof(timeout=5)

    def test_mac_under_another_key_is_refused(self):
        c = self.raw()
        r = c.hello(key=os.urandom(32))
        self.assertEqual(r.code, "auth_failed")
        c.expect_eof(timeout=5)

    def test_mac_of_another_connections_nonce_is_refused(self):
        c1 = self.raw()
        stolen = c1.compute_mac(self.key, c1.banner["nonce"])
        c2 = self.raw()
        r = c2.hello(mac=stolen)
        self.assertEqual(r.code, "auth_failed", "a MAC must not be replayable")
        c2.expect_eof(timeout=5)
        self.assertLeaderUndisturbed()

    def test_malformed_mac_gets_auth_failed(self):
        for mac in ("zz" * 32, "ab", "0" * 65):
            c = self.raw()
            r = c.hello(mac=mac)
            self.assertEqual(r.kind, "ERR", r.raw)
            self.assertIn(r.code, ("auth_failed", "bad_request"), r.raw)
            c.expect_eof(timeout=5)
        self.assertLeaderUndisturbed()

    def test_key_never_appears_in_the_logs(self):
        c = self.raw()
        c.hello(mac="00" * 32)
        self.agent.send_signal(signal.SIGTERM)
        self.leader.expect("STEPDOWN", "x")
        self.leader.call_ok("ACK x %d" % self.token)
        self.leader.expect("RELEASED", "x")
        self.assertEqual(self.agent.wait(20), 0)
        logs = self.agent.logs()
        self.assertNotIn(self.key.hex(), logs.lower())
        self.assertNotIn(self.key.hex()[:16], logs.lower())


class RawKeyFileTest(LKTestCase):
    def test_key_file_with_32_raw_bytes_works(self):
        redis = self.start_redis()
        path, key = self.write_key_file(hex_format=False)
        a = self.make_agent("pod-a", redis, auth_key_file=path)
        a.auth_key = key
        a.start()
        app, lead = self.leader_app(a)
        self.assertEqual(app.banner["auth"], "hmac")
        self.assertEqual(redis.get(KEY), a.value(lead.token))


if __name__ == "__main__":
    unittest.main(verbosity=2)
