"""The command line as an operator reads it (docs/cli.md): status columns sized to their
content, -o wide|json|yaml and --no-headers; watch's timestamps and -o json; usage errors that
say what is wrong and exit 64; one exit-code table for every command."""

import datetime
import json
import os
import re
import signal
import time
import unittest

from harness import LKTestCase, lock_config, status_locks, wait_until

try:
    import yaml  # PyYAML: an independent reader of what -o yaml writes, where installed
except ImportError:  # pragma: no cover - the text checks below still run
    yaml = None

EX_USAGE = 64
NOT_ASKED = 2

# Real pod names are long: a Deployment's pod is <deployment>-<replicaset hash>-<5 chars>.
POD = "payments-reconciler-worker-7f9c8d6b5-x2x9q"
LONG_LOCK = "payments.reconciler.nightly-settlement"
TS_RE = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"


def parse_ts(s):
    return datetime.datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc)


class UsageErrorTest(LKTestCase):
    """No agent is needed: nothing is tried when the command line is wrong."""

    CASES = [
        # (argv, what stderr must say)
        ([], "a COMMAND is required"),
        (["frobnicate"], 'unknown command "frobnicate"'),
        (["run", "--", "true"], "--lock NAME is required"),
        (["run", "--lock", "x"], "CMD is required"),
        (["run", "--lock", "bad/name", "--", "true"], '--lock "bad/name" is not a lock name'),
        (["run", "--lock"], "option --lock needs a value"),
        (["run", "--bogus", "--lock", "x", "--", "true"], "unknown option --bogus"),
        (["run", "-s", "", "--lock", "x", "--", "true"], "the socket path (-s) is empty"),
        (["status", "-o", "xml"], '-o "xml" is not an output format (wide, json or yaml)'),
        (["status", "--json=yes"], "option --json takes no value"),
        (["status", "-q"], "unknown option -q"),
        (["status", "a", "b"], 'unexpected argument "b"'),
        (["status", "no/such"], '"no/such" is not a lock name'),
        (["status", "--timeout", "1s"], "unknown option --timeout"),
        (["watch", "-o", "yaml"], '-o "yaml" is not an output format of watch'),
        (["watch", "-o"], "option -o needs a value"),
        (["watch", "x", "y"], 'unexpected argument "y"'),
        (["drain", "now"], 'unexpected argument "now"'),
        (["drain", "--timeout", "10"], '--timeout "10" has no unit'),
        (["drain", "-o", "json"], "unknown option -o"),
        (["agent"], "-c FILE is required"),
        (["agent", "-c", "x.yaml", "--log-level", "loud"], '--log-level "loud" is not one of'),
        (["check-config", "-c", "x.yaml", "extra"], 'unexpected argument "extra"'),
        (["check-config", "--log-level", "debug", "-c", "x.yaml"],
         "unknown option --log-level"),
        (["version", "--short"], "unknown option --short"),
    ]

    def test_usage_errors_exit_64_and_say_what_is_wrong(self):
        missing = os.path.join(self.tmp, "nobody.sock")
        for argv, says in self.CASES:
            with self.subTest(argv=argv):
                r = self.cli(*argv, env={"LEASEKEEPER_SOCKET": missing})
                self.assertEqual(r.rc, EX_USAGE, r)
                self.assertIn(says, r.stderr, r)
                self.assertEqual(r.stdout, "", r)
                # Nothing was asked: a usage error never reads as "the agent is gone".
                self.assertNotIn("cannot talk to the agent", r.stderr, r)
                if argv and argv[0] in ("run", "status", "watch", "drain", "agent",
                                        "check-config"):
                    self.assertRegex(r.stderr, r"(?m)^usage: leasekeeper %s " % argv[0], r)
                    self.assertIn("leasekeeper %s --help" % argv[0], r.stderr, r)
                    # The first line names the command and what is wrong, nothing else.
                    self.assertTrue(r.stderr.startswith("leasekeeper %s: " % argv[0]), r)

    def test_an_unreachable_agent_exits_2_from_every_client_command(self):
        missing = os.path.join(self.tmp, "nobody.sock")
        marker = os.path.join(self.tmp, "ran")
        for argv in (["drain"], ["status"], ["status", "-o", "yaml"], ["watch"],
                     ["watch", "-o", "json", "x"],
                     ["run", "--lock", "x", "--", "touch", marker]):
            with self.subTest(argv=argv):
                r = self.cli(*argv[:1], "-s", missing, *argv[1:])
                self.assertEqual(r.rc, NOT_ASKED, r)
                self.assertIn("cannot talk to the agent at %s" % missing, r.stderr, r)
                self.assertNotIn("usage:", r.stderr, r)
        self.assertFalse(os.path.exists(marker))

    def test_help_describes_the_output_options_and_the_exit_codes(self):
        r = self.cli("status", "--help")
        self.assertEqual(r.rc, 0, r)
        for opt in ("-o wide|json|yaml", "--no-headers", "--json"):
            self.assertIn(opt, r.stdout)
        r = self.cli("watch", "--help")
        self.assertEqual(r.rc, 0, r)
        self.assertIn("-o json", r.stdout)
        self.assertIn("RFC 3339", r.stdout)
        r = self.cli("--help")
        self.assertEqual(r.rc, 0, r)
        self.assertRegex(r.stdout, r"64 usage error")


class StatusOutputTest(LKTestCase):
    def setUp(self):
        super().setUp()
        self.redis = self.start_redis()
        # Lock names a YAML reader would take for a number, an octal, a boolean, null.
        self.tricky = ["007", "1.5", "yes", "null", "1e3"]
        locks = [lock_config("x"), lock_config(LONG_LOCK)] + \
            [lock_config(n) for n in self.tricky]
        self.agent = self.start_agent(POD, self.redis, locks=locks)
        self.names = ["x", LONG_LOCK] + self.tricky
        self.app, self.lead = self.leader_app(self.agent, "x")

    def status(self, *args):
        r = self.cli("status", "-s", self.agent.sock_path, *args)
        self.assertEqual(r.rc, 0, r)
        self.assertEqual(r.stderr, "", r)
        return r.stdout

    def check_aligned(self, header, rows, ncols):
        """Every row has ncols blank-separated cells, each starting where its title does."""
        starts = [m.start() for m in re.finditer(r"\S+", header)]
        self.assertEqual(len(starts), ncols, header)
        for row in rows:
            self.assertEqual(row, row.rstrip(), "trailing blanks: %r" % row)
            cells = [(m.start(), m.group()) for m in re.finditer(r"\S+", row)]
            self.assertGreaterEqual(len(cells), ncols, row)
            self.assertEqual([s for s, _ in cells[:ncols]], starts,
                             "misaligned row:\n%s\n%s" % (header, row))
        # Columns are as wide as their widest cell plus three blanks, no wider.
        for c in range(ncols - 1):
            widest = max(len(re.findall(r"\S+", line)[c]) for line in [header] + rows)
            self.assertEqual(starts[c + 1] - starts[c], widest + 3, header)

    def test_table_columns_fit_long_pod_and_lock_names(self):
        out = self.status()
        lines = out.splitlines()
        self.assertEqual(lines[0], "identity: %s   draining: no" % POD)
        self.assertRegex(lines[1], r"^clients: \d+ of 128 slots ")
        self.assertEqual(lines[2], "backend main: redis %s, ready" % self.redis.address)
        header = next(l for l in lines if l.startswith("LOCK"))
        self.assertEqual(header.split(),
                         ["LOCK", "BACKEND", "STATE", "TOKEN", "HOLDER", "TTL_MS", "CLIENTS"])
        rows = [l for l in lines[lines.index(header) + 1:] if not l.startswith("  ")]
        self.assertEqual([r.split()[0] for r in rows], self.names)
        self.check_aligned(header, rows, 7)
        x = rows[0].split()
        self.assertEqual(x[:5], ["x", "main", "leader", str(self.lead.token), POD])
        self.assertEqual(x[6], "1")
        self.assertLessEqual(int(x[5]), self.lead.int("ttl_ms"))
        self.assertEqual(rows[1].split()[2:5], ["idle", "0", "-"])

    def test_wide_adds_the_deadline_and_the_holdoff(self):
        out = self.status("-o", "wide")
        lines = out.splitlines()
        header = next(l for l in lines if l.startswith("LOCK"))
        self.assertEqual(header.split()[7:], ["UNTIL_MONO_MS", "HOLDOFF_MS", "HOLDOFF_REASON"])
        rows = lines[lines.index(header) + 1:]
        self.assertEqual(len(rows), len(self.names), out)
        self.check_aligned(header, rows, 10)
        x, idle = rows[0].split(), rows[1].split()
        # The leader's deadline is on CLOCK_MONOTONIC, ahead of now by at most the ttl.
        now_ms = time.clock_gettime(time.CLOCK_MONOTONIC) * 1000
        self.assertGreater(int(x[7]), now_ms - 1000)
        self.assertLess(int(x[7]), now_ms + self.lead.int("ttl_ms") + 1000)
        self.assertEqual(x[8:], ["0", "-"])
        self.assertEqual(idle[7:], ["0", "0", "-"])

    def test_no_headers_prints_one_line_per_lock_and_nothing_else(self):
        for args in ((), ("-o", "wide")):
            with self.subTest(args=args):
                out = self.status("--no-headers", *args)
                lines = out.splitlines()
                self.assertEqual([l.split()[0] for l in lines], self.names, out)
                self.assertNotIn("LOCK", out)
                self.assertNotIn("identity:", out)
                self.assertEqual(len(lines[0].split()), 10 if args else 7, out)
                # Sized to the cells alone: the widest lock name plus three blanks.
                self.assertEqual(lines[0].index("main"), len(LONG_LOCK) + 3, out)

    def test_json_is_the_agents_status_on_one_line(self):
        out = self.status("-o", "json")
        self.assertEqual(out.count("\n"), 1, out)
        doc = json.loads(out)
        self.assertEqual(doc["identity"], POD)
        self.assertEqual([l["name"] for l in doc["locks"]], self.names)
        self.assertEqual(status_locks(doc)["x"]["token"], self.lead.token)
        self.assertEqual(json.loads(self.status("--json")).keys(), doc.keys())

    def test_yaml_is_the_same_document_with_strings_kept_strings(self):
        out = self.status("-o", "yaml")
        doc = json.loads(self.status("-o", "json"))
        self.assertTrue(out.startswith("identity: %s\n" % POD), out)
        self.assertIn("\nlocks:\n- name: x\n", out)
        # Names that would read back as numbers, booleans or null are quoted; others not.
        for n in self.tricky:
            self.assertIn("- name: '%s'\n" % n, out)
        self.assertIn("- name: %s\n" % LONG_LOCK, out)
        self.assertIn("  holder: null\n", out)
        self.assertRegex(out, r"\n  token: %d\n" % self.lead.token)
        self.assertIn("draining: false\n", out)
        if yaml is None:
            self.skipTest("PyYAML is not installed: the round trip is not checked")
        back = yaml.safe_load(out)
        self.assertEqual(list(back.keys()), list(doc.keys()))
        self.assertEqual([l["name"] for l in back["locks"]], self.names)
        for got, want in zip(back["locks"], doc["locks"]):
            for k in ("name", "backend", "state", "token", "holder", "campaign_clients"):
                self.assertEqual(got[k], want[k], (k, got, want))
            self.assertEqual(list(got.keys()), list(want.keys()))
        self.assertEqual(back["clients"]["max_clients"], 128)
        self.assertIsNone(back["clients"]["allowed_uids"])

    def test_one_lock_and_an_unknown_one(self):
        out = self.status("--no-headers", LONG_LOCK)
        self.assertEqual(len(out.splitlines()), 1, out)
        self.assertEqual(out.split()[0], LONG_LOCK)
        r = self.cli("status", "-s", self.agent.sock_path, "nope")
        self.assertEqual(r.rc, NOT_ASKED, r)
        self.assertIn("ERR unknown_lock nope", r.stderr, r)
        self.assertEqual(r.stdout, "", r)


class WatchOutputTest(LKTestCase):
    def setUp(self):
        super().setUp()
        self.redis = self.start_redis()
        self.agent = self.start_agent("pod-a", self.redis,
                                      locks=[lock_config("x", stepdown_timeout="5s")])

    def test_each_line_starts_with_its_arrival_time_in_utc(self):
        w = self.start_cli("watch", "-s", self.agent.sock_path, "x")
        wait_until(lambda: "FOLLOWER" in w.stdout(), timeout=10, what="the current state")
        before = datetime.datetime.now(datetime.timezone.utc)
        app, lead = self.leader_app(self.agent)
        wait_until(lambda: "LEADER" in w.stdout(), timeout=10, what="LEADER")
        after = datetime.datetime.now(datetime.timezone.utc)
        lines = w.stdout().splitlines()
        for line in lines:
            self.assertRegex(line, r"^%s (FOLLOWER|LEADER|RENEWED) x " % TS_RE)
        stamps = [parse_ts(l.split(" ", 1)[0]) for l in lines]
        self.assertEqual(stamps, sorted(stamps))
        leader = [l for l in lines if " LEADER " in l][0]
        # The protocol line as the app got it, after the time.
        self.assertEqual(leader.split(" ", 1)[1], lead.raw)
        ts = parse_ts(leader.split(" ", 1)[0])
        slack = datetime.timedelta(milliseconds=50)
        self.assertTrue(before - slack <= ts <= after + slack, (before, ts, after))

    def test_json_lines_through_a_drain_then_exit_0(self):
        w = self.start_cli("watch", "-s", self.agent.sock_path, "-o", "json", "x")
        wait_until(lambda: "FOLLOWER" in w.stdout(), timeout=10, what="the current state")
        app, lead = self.leader_app(self.agent)
        self.agent.send_signal(signal.SIGTERM)
        app.expect("STEPDOWN", "x", token=lead.token)
        app.call_ok("ACK x %d" % lead.token)
        self.assertEqual(w.wait(20), 0, w.stderr())
        events = [json.loads(l) for l in w.stdout().splitlines()]
        for e in events:
            self.assertRegex(e["ts"], "^%s$" % TS_RE)
        kinds = [e["event"] for e in events if e["event"] != "RENEWED"]
        self.assertEqual(kinds, ["FOLLOWER", "LEADER", "STEPDOWN", "RELEASED", "STOP"], events)
        by = {e["event"]: e for e in events}
        self.assertEqual(by["FOLLOWER"], {"ts": by["FOLLOWER"]["ts"], "event": "FOLLOWER",
                                          "lock": "x", "holder": None})
        self.assertEqual({k: v for k, v in by["LEADER"].items() if k != "ts"},
                         {"event": "LEADER", "lock": "x", "token": lead.token,
                          "ttl_ms": lead.int("ttl_ms"),
                          "until_mono_ms": lead.int("until_mono_ms")})
        self.assertEqual((by["STEPDOWN"]["token"], by["STEPDOWN"]["deadline_ms"]),
                         (lead.token, 5000))
        self.assertEqual((by["RELEASED"]["token"], by["RELEASED"]["outcome"]),
                         (lead.token, "released"))
        self.assertNotIn("lock", by["STOP"])
        self.assertIsInstance(by["STOP"]["deadline_ms"], int)

    def test_an_unknown_lock_prints_the_agents_error_and_exits_2(self):
        r = self.cli("watch", "-s", self.agent.sock_path, "nope")
        self.assertEqual(r.rc, NOT_ASKED, r)
        self.assertIn("ERR unknown_lock nope", r.stderr, r)
        self.assertNotEqual(r.stderr.strip(), "leasekeeper watch: nope", r)
        self.assertEqual(r.stdout, "", r)
        self.assertTrue(self.agent.alive())


if __name__ == "__main__":
    unittest.main(verbosity=2)
