"""LeaderElector against a scripted fake agent (fakeagent.py): callbacks, the I8 deadline
(proto/PROTOCOL.md), STEPDOWN then ACK, HMAC, reconnects, unknown and bad lines."""

import os
import shutil
import sys
import tempfile
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # clients/python: the source tree, not an install
sys.path.insert(0, HERE)

import leasekeeper  # noqa: E402
from fakeagent import FakeAgent  # noqa: E402

mono = leasekeeper.monotonic

# Timing slack for a loaded 2-core machine: the deadline must fire no earlier than it is due
# and at most this much later.
LATE = 0.25


class Recorder:
    """Callbacks that record (what, arg, t) and can be waited for."""

    def __init__(self):
        self.events = []
        self.cond = threading.Condition()
        self.stop_delay = 0.0
        self.stop_returned = None

    def add(self, what, arg):
        with self.cond:
            self.events.append((what, arg, mono()))
            self.cond.notify_all()

    def started(self, token):
        self.add("started", token)

    def stopped(self, reason):
        self.add("stopped", reason)
        if self.stop_delay:
            time.sleep(self.stop_delay)
        self.stop_returned = mono()

    def new_leader(self, holder):
        self.add("new_leader", holder)

    def wait(self, what, arg=None, n=1, timeout=5.0):
        deadline = mono() + timeout
        with self.cond:
            while True:
                found = [e for e in self.events
                         if e[0] == what and (arg is None or e[1] == arg)]
                if len(found) >= n:
                    return found[n - 1]
                left = deadline - mono()
                if left <= 0:
                    raise AssertionError("no %s %s within %.1fs: %r"
                                         % (what, arg, timeout, self.events))
                self.cond.wait(left)

    def kinds(self):
        with self.cond:
            return [(e[0], e[1]) for e in self.events]


class FakeAgentCase(unittest.TestCase):
    """A fake agent per test, and an elector running in a thread (start())."""

    agent_kw = {}

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="lk-py-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.agent = FakeAgent(self.tmp, **self.agent_kw)
        self.addCleanup(self.agent.close)
        self.rec = Recorder()

    def start(self, **kw):
        kw.setdefault("socket_path", self.agent.path)
        kw.setdefault("backoff_initial", 0.05)
        kw.setdefault("backoff_max", 0.2)
        self.elector = leasekeeper.LeaderElector(
            "x", on_started_leading=self.rec.started, on_stopped_leading=self.rec.stopped,
            on_new_leader=self.rec.new_leader, **kw)
        self.result = {}

        def run():
            try:
                self.result["value"] = self.elector.run()
            except BaseException as e:  # noqa: BLE001
                self.result["error"] = e
        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        self.addCleanup(self._finish)
        return self.elector

    def _finish(self):
        self.elector.close()
        self.thread.join(5)
        self.assertFalse(self.thread.is_alive(), "run() did not return after close()")

    def join(self, timeout=5.0):
        self.thread.join(timeout)
        self.assertFalse(self.thread.is_alive(), "run() still running")
        if "error" in self.result:
            raise self.result["error"]
        return self.result.get("value")

    def connected(self, **kw):
        c = self.agent.accept()
        c.handshake(**kw)
        return c


class ElectorTest(FakeAgentCase):
    # -- the deadline (I8)

    def test_deadline_fires_while_the_agent_says_nothing(self):
        e = self.start()
        c = self.connected()
        c.leader(7, ttl_ms=3000, in_ms=400)
        t_sent = mono()
        self.rec.wait("started", 7)
        self.assertTrue(e.is_leader())
        self.assertEqual(e.token, 7)
        dl = e.deadline()
        self.assertAlmostEqual(dl, t_sent + 0.4, delta=0.1)
        self.assertGreater(e.time_left(), 0)
        # The agent says nothing (frozen): the elector must stop on its own at the deadline.
        _, reason, t_stop = self.rec.wait("stopped")
        self.assertEqual(reason, "deadline")
        self.assertGreaterEqual(t_stop, dl)
        self.assertLess(t_stop - dl, LATE, "on_stopped_leading(deadline) fired late")
        self.assertFalse(e.is_leader())
        self.assertIsNone(e.token)
        # The LOST the agent sends later changes nothing; a RENEWED for it neither.
        c.renewed(7, in_ms=2000)
        c.send("LOST x token=7 reason=renew_deadline")
        c.send("PING-ISH")
        time.sleep(0.2)
        self.assertEqual(self.rec.kinds(), [("started", 7), ("new_leader", "pod-a"),
                                            ("stopped", "deadline")])
        self.assertFalse(e.is_leader())

    def test_is_leader_checks_the_clock_even_while_a_callback_blocks(self):
        release = threading.Event()
        self.rec.new_leader = lambda holder: release.wait(5)  # blocks the loop
        e = self.start()
        c = self.connected()
        c.leader(3, in_ms=300)
        self.rec.wait("started", 3)
        self.assertTrue(e.is_leader())
        dl = e.deadline()
        while mono() < dl:
            time.sleep(0.01)
        self.assertFalse(e.is_leader(), "is_leader() after the deadline")
        self.assertIsNone(e.token)
        release.set()
        self.assertEqual(self.rec.wait("stopped")[1], "deadline")

    def test_renewed_moves_the_deadline(self):
        e = self.start()
        c = self.connected()
        c.leader(9, in_ms=400)
        self.rec.wait("started", 9)
        first = e.deadline()
        time.sleep(0.2)
        c.renewed(9, ttl_ms=2000, in_ms=500)
        t_renew = mono()
        wait_until(lambda: e.deadline() != first)
        second = e.deadline()
        self.assertAlmostEqual(second, t_renew + 0.5, delta=0.1)
        self.assertEqual(e.ttl_ms, 2000)
        # A RENEWED of another token or lock does not move it.
        c.renewed(8, in_ms=5000)
        c.renewed(9, in_ms=5000, lock="y")
        _, reason, t_stop = self.rec.wait("stopped", timeout=3)
        self.assertEqual(reason, "deadline")
        self.assertGreaterEqual(t_stop, second)
        self.assertLess(t_stop - second, LATE)
        self.assertGreater(t_stop, first + 0.2, "stopped at the first deadline")

    def test_leader_past_its_deadline_is_not_started(self):
        e = self.start()
        c = self.connected()
        c.send("LEADER x token=4 ttl_ms=3000 until_mono_ms=%d" % c.until(-50))
        c.send("FOLLOWER x holder=pod-b")
        self.rec.wait("new_leader", "pod-b")
        self.assertNotIn(("started", 4), self.rec.kinds())
        self.assertFalse(e.is_leader())

    # -- handing the lock back after the deadline (the agent kept renewing for a frozen app)

    def test_deadline_without_lost_resigns_then_campaigns(self):
        self.rec.stop_delay = 0.2
        e = self.start()
        c = self.connected()
        c.leader(7, in_ms=300)
        self.rec.wait("started", 7)
        # The agent was not frozen and says nothing: the tenure ends at the deadline, and only
        # after on_stopped_leading returned, the lock is handed back and campaigned for again.
        self.assertEqual(c.expect("RESIGN ", timeout=3), "RESIGN x")
        t_resign = c.lines[-1][0]
        self.assertEqual(c.expect("CAMPAIGN "), "CAMPAIGN x")
        self.assertEqual(self.rec.wait("stopped")[1], "deadline")
        self.assertGreaterEqual(t_resign, self.rec.stop_returned,
                                "RESIGN sent before on_stopped_leading returned")
        # Lines the agent sent before it read the RESIGN: a late RENEWED and a LEADER of a
        # tenure the RESIGN gives up; neither starts anything.
        c.renewed(7, in_ms=2000)
        c.leader(8, in_ms=2000)
        c.send("OK RESIGN x")
        c.send("OK CAMPAIGN x")
        c.send("FOLLOWER x holder=-")
        c.leader(9, in_ms=2000)
        self.rec.wait("started", 9)
        self.assertEqual([k for k in self.rec.kinds() if k[0] != "new_leader"],
                         [("started", 7), ("stopped", "deadline"), ("started", 9)])
        self.assertEqual(e.token, 9)
        self.assertEqual(e.resigns, 1)
        # Once per tenure: nothing else was sent.
        self.assertIsNone(c.read_line(timeout=0.3))

    def test_deadline_then_a_waiting_lost_does_not_resign(self):
        self.rec.stop_delay = 0.4
        e = self.start()
        c = self.connected()
        c.leader(7, in_ms=300)
        self.rec.wait("started", 7)
        self.assertEqual(self.rec.wait("stopped")[1], "deadline")
        # While the app stops, a late RENEWED and the LOST come in: read before the elector
        # decides, the LOST makes the RESIGN moot.
        c.renewed(7, in_ms=2000)
        c.send("LOST x token=7 reason=renew_deadline")
        c.send("FOLLOWER x holder=pod-b")
        self.rec.wait("new_leader", "pod-b")
        self.assertIsNone(c.read_line(timeout=0.3))
        self.assertEqual(e.resigns, 0)

    def test_deadline_then_stepdown_acks_and_does_not_resign(self):
        self.rec.stop_delay = 0.4
        self.start()
        c = self.connected()
        c.leader(7, in_ms=300)
        self.rec.wait("started", 7)
        self.assertEqual(self.rec.wait("stopped")[1], "deadline")
        c.send("STEPDOWN x token=7 deadline_ms=5000")
        self.assertEqual(c.expect("ACK "), "ACK x 7")
        self.assertIsNone(c.read_line(timeout=0.3))

    def test_stepdown_after_the_resign_is_acked(self):
        self.start()
        c = self.connected()
        c.leader(7, in_ms=300)
        self.rec.wait("started", 7)
        c.expect("RESIGN x", timeout=3)
        c.expect("CAMPAIGN x")
        # A drain started before the agent read the RESIGN: the STEPDOWN is still answered.
        c.send("STEPDOWN x token=7 deadline_ms=5000")
        self.assertEqual(c.expect("ACK "), "ACK x 7")
        c.send("OK RESIGN x")
        c.send("ERR draining the agent is draining")
        c.send("OK ACK x")
        c.send("STOP deadline_ms=1000")
        self.assertEqual(self.join(), "stop")
        self.assertEqual([k for k in self.rec.kinds() if k[0] != "new_leader"],
                         [("started", 7), ("stopped", "deadline")])

    def test_frozen_agent_lost_after_the_resign(self):
        e = self.start()
        c = self.connected()
        c.leader(7, in_ms=300)
        self.rec.wait("started", 7)
        # The agent is frozen: the RESIGN and CAMPAIGN wait in the socket. After the thaw it
        # sends what it had queued, then LOST, then answers them; then a new tenure.
        c.expect("RESIGN x", timeout=3)
        c.expect("CAMPAIGN x")
        c.renewed(7, in_ms=2000)
        c.send("LOST x token=7 reason=renew_deadline")
        c.send("FOLLOWER x holder=pod-b")
        c.send("OK RESIGN x")
        c.send("OK CAMPAIGN x")
        c.send("FOLLOWER x holder=pod-b")
        self.rec.wait("new_leader", "pod-b")
        c.leader(12, in_ms=2000)
        self.rec.wait("started", 12)
        self.assertTrue(e.is_leader())
        self.assertEqual([k for k in self.rec.kinds() if k[0] != "new_leader"],
                         [("started", 7), ("stopped", "deadline"), ("started", 12)])
        self.assertIsNone(c.read_line(timeout=0.3))

    def test_leader_past_its_deadline_is_handed_back(self):
        e = self.start()
        c = self.connected()
        c.send("LEADER x token=4 ttl_ms=3000 until_mono_ms=%d" % c.until(-50))
        self.assertEqual(c.expect("RESIGN ", timeout=3), "RESIGN x")
        self.assertEqual(c.expect("CAMPAIGN "), "CAMPAIGN x")
        c.renewed(4, in_ms=2000)
        c.send("OK RESIGN x")
        c.send("OK CAMPAIGN x")
        c.leader(4, in_ms=2000)  # the same tenure again: still over for us
        c.leader(5, in_ms=2000)
        self.rec.wait("started", 5)
        self.assertEqual([k for k in self.rec.kinds() if k[0] != "new_leader"],
                         [("started", 5)])
        self.assertEqual(e.resigns, 1)

    # -- STEPDOWN, LOST, FOLLOWER, STOP, stop()

    def test_stepdown_calls_back_then_acks(self):
        self.rec.stop_delay = 0.3
        e = self.start()
        c = self.connected()
        c.leader(11)
        self.rec.wait("started", 11)
        c.send("STEPDOWN x token=11 deadline_ms=5000")
        ack = c.expect("ACK ")
        t_ack = c.lines[-1][0]
        self.assertEqual(ack, "ACK x 11")
        _, reason, t_cb = self.rec.wait("stopped")
        self.assertEqual(reason, "stepdown")
        self.assertGreaterEqual(t_ack, self.rec.stop_returned,
                                "ACK sent before on_stopped_leading returned")
        self.assertFalse(e.is_leader())
        # RENEWED while stepping down does not restart leadership; a second STEPDOWN (not
        # leading) is ACKed at once; then RELEASED and STOP end run().
        c.renewed(11)
        c.send("STEPDOWN x token=11 deadline_ms=5000")
        self.assertEqual(c.expect("ACK "), "ACK x 11")
        c.send("OK ACK x")
        c.send("RELEASED x token=11 outcome=released")
        c.send("STOP deadline_ms=1000")
        self.assertEqual(self.join(), "stop")
        self.assertEqual([k for k in self.rec.kinds() if k[0] != "new_leader"],
                         [("started", 11), ("stopped", "stepdown")])

    def test_lost_stops_at_once(self):
        self.start()
        c = self.connected()
        c.leader(5)
        self.rec.wait("started", 5)
        t = mono()
        c.send("LOST x token=5 reason=taken")
        _, reason, t_stop = self.rec.wait("stopped")
        self.assertEqual(reason, "lost:taken")
        self.assertLess(t_stop - t, 0.5)
        c.send("FOLLOWER x holder=pod-b")
        self.rec.wait("new_leader", "pod-b")
        # A new tenure after it.
        c.leader(6)
        self.rec.wait("started", 6)
        self.rec.wait("new_leader", "pod-a", n=2)

    def test_follower_updates_new_leader_only_on_change(self):
        self.start()
        c = self.connected()
        c.send("FOLLOWER x holder=-")
        c.send("FOLLOWER x holder=pod-b")
        c.send("FOLLOWER x holder=pod-b")
        c.send("FOLLOWER x holder=pod-c")
        self.rec.wait("new_leader", "pod-c")
        self.assertEqual(self.rec.kinds(), [("new_leader", "pod-b"), ("new_leader", "pod-c")])

    def test_stop_event_returns_from_run(self):
        self.start()
        c = self.connected()
        c.leader(2)
        self.rec.wait("started", 2)
        c.send("STOP deadline_ms=20000")
        self.assertEqual(self.join(), "stop")
        self.assertEqual(self.rec.wait("stopped")[1], "stop")
        c.expect_eof()

    def test_stop_from_another_thread_closes_the_connection(self):
        e = self.start()
        c = self.connected()
        c.leader(2)
        self.rec.wait("started", 2)
        e.stop()
        self.assertEqual(self.join(), "closed")
        self.assertEqual(self.rec.wait("stopped")[1], "closed")
        c.expect_eof()  # the agent counts that as a step-down

    def test_context_manager_and_stop_before_run(self):
        with leasekeeper.LeaderElector("x", socket_path=self.agent.path) as e:
            e.stop()
            self.assertEqual(e.run(), "closed")
        with self.assertRaises(leasekeeper.LeaseKeeperError):
            e.run()
        with self.assertRaises(ValueError):
            leasekeeper.LeaderElector("bad lock", socket_path=self.agent.path)

    def test_a_callback_that_raises_ends_leadership_and_run(self):
        def boom(token):
            self.rec.started(token)
            raise RuntimeError("app bug")
        e = self.start()
        e.on_started_leading = boom
        c = self.connected()
        c.leader(8)
        with self.assertRaises(RuntimeError):
            self.join()
        self.assertEqual(self.rec.wait("stopped")[1], "error")
        self.assertFalse(e.is_leader())
        c.expect_eof()  # the agent counts that as a step-down

    # -- EOF and reconnects

    def test_reconnects_after_eof(self):
        self.start()
        c = self.connected()
        c.leader(20)
        self.rec.wait("started", 20)
        t = mono()
        c.close()
        _, reason, t_stop = self.rec.wait("stopped")
        self.assertEqual(reason, "eof")
        self.assertLess(t_stop - t, 0.5, "I6: stop at once at EOF")
        # The agent is back: HELLO and CAMPAIGN again, and a new tenure.
        c2 = self.connected()
        c2.leader(21)
        self.rec.wait("started", 21)

    def test_reconnects_while_the_agent_is_away(self):
        e = self.start()
        c = self.connected()
        c.close()
        self.agent.close()
        os.unlink(self.agent.path)
        time.sleep(0.5)  # a few failed connects (no socket file)
        self.agent = FakeAgent(self.tmp)
        self.addCleanup(self.agent.close)
        c2 = self.connected()
        c2.leader(30)
        self.rec.wait("started", 30)
        self.assertTrue(e.is_leader())

    def test_no_reconnect_returns_eof(self):
        self.start(reconnect=False)
        c = self.connected()
        c.leader(1)
        self.rec.wait("started", 1)
        c.close()
        self.assertEqual(self.join(), "eof")
        self.assertEqual(self.rec.wait("stopped")[1], "eof")

    def test_no_reconnect_first_connect_fails(self):
        self.start(reconnect=False, socket_path=os.path.join(self.tmp, "nothing.sock"))
        with self.assertRaises(OSError):
            self.join()

    def test_campaign_refused_raises(self):
        self.start()
        c = self.agent.accept()
        c.handshake(campaign=False)
        c.expect("CAMPAIGN x")
        c.send("ERR unknown_lock no lock x in the config")
        with self.assertRaises(leasekeeper.RequestError) as cm:
            self.join()
        self.assertEqual(cm.exception.code, "unknown_lock")

    def test_events_before_the_campaign_reply(self):
        self.start()
        c = self.agent.accept()
        c.handshake(campaign=False)
        c.expect("CAMPAIGN x")
        c.send("FOLLOWER x holder=-")
        c.leader(40)
        c.send("OK CAMPAIGN x")
        self.rec.wait("started", 40)

    # -- unknown and bad lines

    def test_unknown_events_and_attributes_are_ignored(self):
        e = self.start()
        c = self.connected()
        c.send("SHINY x token=1 colour=blue")
        c.send("DRAINED released=0 expired=0 failed=0 elapsed_ms=3")
        c.leader(12, extra=" shard=3 future=yes")
        self.rec.wait("started", 12)
        c.send("LEADER y token=99 ttl_ms=3000 until_mono_ms=%d" % c.until(2000))  # other lock
        c.send("LOST y token=99 reason=taken")
        c.send("")
        c.send_raw(b"RENEWED x token=12 ttl_ms=3000 until_mono_ms=%d hint=1\r\n" % c.until(3000))
        wait_until(lambda: e.time_left() is not None and e.time_left() > 2.5)
        self.assertEqual(self.rec.kinds(), [("started", 12), ("new_leader", "pod-a")])
        self.assertTrue(e.is_leader())

    def bad_line_drops_the_connection(self, raw):
        self.start()
        c = self.connected()
        c.leader(50)
        self.rec.wait("started", 50)
        c.send_raw(raw)
        _, reason, _ = self.rec.wait("stopped")
        self.assertEqual(reason, "protocol_error")
        c.expect_eof()
        # ...and reconnects.
        c2 = self.connected()
        c2.leader(51)
        self.rec.wait("started", 51)

    def test_bad_bytes(self):
        self.bad_line_drops_the_connection(b"FOLLOWER x holder=p\xc3\xa9\n")

    def test_control_character(self):
        self.bad_line_drops_the_connection(b"FOLLOWER x\tholder=p\n")

    def test_line_too_long(self):
        self.bad_line_drops_the_connection(b"FOLLOWER x holder=" + b"a" * 5000 + b"\n")

    def test_renewed_without_a_token(self):
        self.bad_line_drops_the_connection(b"RENEWED x ttl_ms=3000 until_mono_ms=5\n")

    def test_renewed_with_a_bad_deadline(self):
        self.bad_line_drops_the_connection(b"RENEWED x token=50 ttl_ms=3000 until_mono_ms=-5\n")

    def test_attribute_twice(self):
        self.bad_line_drops_the_connection(b"LOST x token=50 token=51 reason=taken\n")

    def test_bad_banner(self):
        self.start()
        c = self.agent.accept()
        c.send("HTTP/1.1 400 Bad Request")
        c.expect_eof()
        c2 = self.agent.accept()  # it tries again
        c2.handshake()
        c2.leader(1)
        self.rec.wait("started", 1)


class ClockMismatchTest(unittest.TestCase):
    """An agent whose CLOCK_MONOTONIC is not ours (mono_ms 5 s off): deadlines count from each
    line's arrival, 2/3 of its ttl_ms."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="lk-py-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.rec = Recorder()

    def run_case(self, agent_kw, mono_ms="now", until=True):
        agent = FakeAgent(self.tmp, **agent_kw)
        self.addCleanup(agent.close)
        e = leasekeeper.LeaderElector("x", socket_path=agent.path,
                                      on_started_leading=self.rec.started,
                                      on_stopped_leading=self.rec.stopped)
        th = threading.Thread(target=e.run, daemon=True)
        th.start()
        self.addCleanup(th.join, 5)
        self.addCleanup(e.close)
        c = agent.accept()
        c.handshake(mono_ms=mono_ms)
        if until:
            # until_mono_ms 10 s from now on the agent's clock: unusable here.
            c.send("LEADER x token=3 ttl_ms=600 until_mono_ms=%d" % c.until(10000))
        else:
            c.send("LEADER x token=3 ttl_ms=600")
        t_sent = mono()
        self.rec.wait("started", 3)
        dl = e.deadline()
        self.assertAlmostEqual(dl, t_sent + 0.4, delta=0.1)
        _, reason, t_stop = self.rec.wait("stopped")
        self.assertEqual(reason, "deadline")
        self.assertGreaterEqual(t_stop, dl)
        self.assertLess(t_stop - dl, LATE)
        return e

    def test_agent_clock_ahead(self):
        self.run_case({"mono_offset_ms": 5000})

    def test_agent_clock_behind(self):
        self.run_case({"mono_offset_ms": -5000})

    def test_older_agent_without_mono_ms(self):
        self.run_case({}, mono_ms=None, until=False)

    def test_within_tolerance_uses_until(self):
        agent = FakeAgent(self.tmp, mono_offset_ms=600)
        self.addCleanup(agent.close)
        e = leasekeeper.LeaderElector("x", socket_path=agent.path,
                                      on_started_leading=self.rec.started)
        th = threading.Thread(target=e.run, daemon=True)
        th.start()
        self.addCleanup(th.join, 5)
        self.addCleanup(e.close)
        c = agent.accept()
        c.handshake()
        c.send("LEADER x token=3 ttl_ms=3000 until_mono_ms=%d" % c.until(1500))
        self.rec.wait("started", 3)
        # until_mono_ms as sent: 1.5 s on the agent's clock, which is 0.6 s ahead of ours.
        self.assertAlmostEqual(e.deadline(), mono() + 1.5 + 0.6, delta=0.15)


class AuthTest(FakeAgentCase):
    KEY = b"leasekeeper-test-key-32-bytes!!!"
    agent_kw = {"key": KEY}

    def key_file(self, raw=False, key=None):
        path = os.path.join(self.tmp, "key")
        with open(path, "wb") as f:
            f.write((key or self.KEY) if raw else ((key or self.KEY).hex() + "\n").encode())
        return path

    def test_hex_key_file(self):
        self.start(auth_key_file=self.key_file())
        c = self.connected()
        c.leader(1)
        self.rec.wait("started", 1)

    def test_raw_key_from_the_environment(self):
        path = self.key_file(raw=True)
        os.environ["LEASEKEEPER_AUTH_KEY_FILE"] = path
        self.addCleanup(os.environ.pop, "LEASEKEEPER_AUTH_KEY_FILE", None)
        self.start()
        c = self.connected()
        c.leader(1)
        self.rec.wait("started", 1)

    def test_wrong_key_raises(self):
        self.start(auth_key_file=self.key_file(key=os.urandom(32)))
        c = self.agent.accept()
        with self.assertRaises(AssertionError):
            c.handshake()
        with self.assertRaises(leasekeeper.AuthError) as cm:
            self.join()
        self.assertIn("auth_failed", str(cm.exception))

    def test_no_key_names_the_variable(self):
        os.environ.pop("LEASEKEEPER_AUTH_KEY_FILE", None)
        self.start()
        c = self.agent.accept()
        c.banner()
        with self.assertRaises(leasekeeper.AuthError) as cm:
            self.join()
        self.assertIn("LEASEKEEPER_AUTH_KEY_FILE", str(cm.exception))


def wait_until(pred, timeout=5.0):
    end = mono() + timeout
    while not pred():
        if mono() > end:
            raise AssertionError("condition not met within %.1fs" % timeout)
        time.sleep(0.01)


if __name__ == "__main__":
    unittest.main()
