"""Self-test of the history checker on made-up histories, and of the fenced store (no agent,
no backend):

    python3 tests/chaos/test_checker.py
"""

import json
import os
import shutil
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import checker  # noqa: E402


class History:
    def __init__(self, d):
        self.d = d
        os.makedirs(os.path.join(d, "apps"))
        os.makedirs(os.path.join(d, "agents"))
        self.apps = {}
        self.events = []
        self.store = []
        self.highest = 0

    def app(self, name, *recs):
        self.apps.setdefault(name, []).extend(recs)

    def write(self, t, token, writer, ok=None):
        if ok is None:
            ok = token >= self.highest
        self.store.append({"t": t, "token": token, "writer": writer, "seq": len(self.store),
                           "ok": ok, "highest": self.highest})
        if ok:
            self.highest = max(self.highest, token)

    def done(self, ttl=2.0):
        with open(os.path.join(self.d, "run.json"), "w") as f:
            json.dump({"backend": "test", "seed": 0, "ttl": ttl}, f)
        for name, recs in self.apps.items():
            with open(os.path.join(self.d, "apps", name + ".jsonl"), "w") as f:
                for r in recs:
                    f.write(json.dumps(r) + "\n")
        with open(os.path.join(self.d, "events.jsonl"), "w") as f:
            for e in self.events + [{"ev": "run_end", "t": 100.0}]:
                f.write(json.dumps(e) + "\n")
        with open(os.path.join(self.d, "store.jsonl"), "w") as f:
            for w in self.store:
                f.write(json.dumps(w) + "\n")
        return checker.check(self.d)


def leader(t, token):
    return {"ev": "line", "t": t, "raw": "LEADER x token=%d ttl_ms=2000 until_mono_ms=0" % token}


class CheckerTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="lk-chaos-test-")
        self.h = History(os.path.join(self.dir, "run"))

    def tearDown(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def test_clean_handoff(self):
        h = self.h
        h.app("a", {"ev": "proc", "t": 0, "pid": 1}, leader(1, 10),
              {"ev": "start", "t": 1, "token": 10, "deadline": 2.3},
              {"ev": "deadline", "t": 2, "token": 10, "deadline": 3.5},
              {"ev": "stop", "t": 3, "token": 10, "reason": "stepdown", "deadline": 3.5})
        h.app("b", {"ev": "proc", "t": 0, "pid": 2}, leader(3.2, 11),
              {"ev": "start", "t": 3.2, "token": 11, "deadline": 4.5})
        h.write(1.5, 10, "a")
        h.write(3.3, 11, "b")
        h.write(3.4, 10, "a")  # late, rejected by the fence
        r = h.done()
        t = r["totals"]
        self.assertEqual((t["overlaps"], t["token_regressions"], t["stale_accepted"],
                          t["unknown_token_accepted"]), (0, 0, 0, 0))
        self.assertEqual(t["stale_rejected"], 1)
        self.assertEqual(t["late_rejected"], 1)
        self.assertAlmostEqual(t["handoff_gaps"][0], 0.2, places=6)
        self.assertFalse(checker.violated(r))

    def test_overlap(self):
        h = self.h
        h.app("a", {"ev": "proc", "t": 0, "pid": 1},
              {"ev": "start", "t": 1, "token": 10, "deadline": 5},
              {"ev": "stop", "t": 4, "token": 10, "reason": "lost:taken", "deadline": 5})
        h.app("b", {"ev": "proc", "t": 0, "pid": 2},
              {"ev": "start", "t": 3, "token": 11, "deadline": 6})
        r = h.done()
        self.assertEqual(r["totals"]["overlaps"], 1)
        self.assertTrue(checker.violated(r))

    def test_frozen_app_ends_at_its_deadline(self):
        # a was SIGSTOPped: it ran its stop callback at 9, but its deadline was 2.5
        h = self.h
        h.app("a", {"ev": "proc", "t": 0, "pid": 1},
              {"ev": "start", "t": 1, "token": 10, "deadline": 2.5},
              {"ev": "stop", "t": 9, "token": 10, "reason": "deadline", "deadline": 2.5})
        h.app("b", {"ev": "proc", "t": 0, "pid": 2},
              {"ev": "start", "t": 4, "token": 11, "deadline": 6})
        r = h.done()
        self.assertEqual(r["totals"]["overlaps"], 0)
        iv = [i for i in r["intervals"] if i.app == "a"][0]
        self.assertEqual(iv.end, 2.5)

    def test_killed_app_ends_at_the_kill(self):
        h = self.h
        h.events.append({"ev": "killed", "who": "app-a", "pid": 1, "t": 1.5})
        h.app("a", {"ev": "proc", "t": 0, "pid": 1},
              {"ev": "start", "t": 1, "token": 10, "deadline": 3},
              {"ev": "proc", "t": 2, "pid": 7})
        h.app("b", {"ev": "proc", "t": 0, "pid": 2},
              {"ev": "start", "t": 1.6, "token": 11, "deadline": 6})
        r = h.done()
        self.assertEqual(r["totals"]["overlaps"], 0)
        # without the kill record, the interval runs to its deadline and overlaps
        h2 = History(os.path.join(self.dir, "run2"))
        h2.apps = dict(h.apps)
        self.assertEqual(h2.done()["totals"]["overlaps"], 1)

    def test_token_regression_and_stale_write(self):
        h = self.h
        h.app("a", {"ev": "proc", "t": 0, "pid": 1}, leader(1, 10),
              {"ev": "start", "t": 1, "token": 10, "deadline": 2},
              {"ev": "stop", "t": 2, "token": 10, "reason": "lost:expired", "deadline": 2})
        h.app("b", {"ev": "proc", "t": 0, "pid": 2}, leader(3, 9),
              {"ev": "start", "t": 3, "token": 9, "deadline": 4})
        h.write(1.5, 10, "a")
        h.write(3.5, 9, "b", ok=True)   # a broken fence
        h.write(3.6, 12, "b", ok=True)  # a token nobody was given
        r = h.done()
        t = r["totals"]
        self.assertEqual(t["token_regressions"], 1)
        self.assertEqual(t["stale_accepted"], 1)
        self.assertEqual(t["unknown_token_accepted"], 1)

    def test_agent_log_tokens(self):
        h = self.h
        with open(os.path.join(h.d, "agents", "pod-0.log"), "w") as f:
            f.write('{"ts":"2026-12-07T00:00:01.000Z","level":"info","msg":"lock acquired",'
                    '"lock":"x","token":5}\n')
            f.write('{"ts":"2026-12-07T00:00:03.000Z","level":"info","msg":"lock acquired",'
                    '"lock":"x","token":4}\n')
        with open(os.path.join(h.d, "agents", "pod-1.log"), "w") as f:
            f.write('{"ts":"2026-12-07T00:00:02.000Z","level":"info","msg":"lock acquired",'
                    '"lock":"x","token":5}\n')
        h.app("a", {"ev": "proc", "t": 0, "pid": 1})
        r = h.done()
        self.assertEqual(r["totals"]["token_regressions"], 2)  # 5 twice, then 4 after 5


class StoreTest(unittest.TestCase):
    def test_fence(self):
        import socket
        from store import FencedStore, read_log
        d = tempfile.mkdtemp(prefix="lk-chaos-store-")
        self.addCleanup(shutil.rmtree, d, True)
        st = FencedStore(os.path.join(d, "store.jsonl")).start()
        try:
            s = socket.create_connection(("127.0.0.1", st.port), timeout=5)
            f = s.makefile("rb")
            replies = []
            for line in ("W 5 a 1", "W 5 a 2", "W 7 b 1", "W 6 a 3", "W 7 b 2", "junk"):
                s.sendall(line.encode() + b"\n")
                replies.append(f.readline().decode().strip())
            s.close()
        finally:
            st.close()
        self.assertEqual(replies, ["OK 5", "OK 5", "OK 7", "REJECT 7", "OK 7", "ERR"])
        log = read_log(os.path.join(d, "store.jsonl"))
        self.assertEqual([(w["token"], w["writer"], w["ok"], w["highest"]) for w in log],
                         [(5, "a", True, 0), (5, "a", True, 5), (7, "b", True, 5),
                          (6, "a", False, 7), (7, "b", True, 7)])


if __name__ == "__main__":
    unittest.main()
