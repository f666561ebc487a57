"""README's Quick start, run as written from a fresh shell (issue: `${HOSTNAME}` was unset there).

The block is read from README.md itself, so the test follows what a newcomer pastes. Only what
cannot be the same here is rewritten: the binaries are the suite's own build (`make` already
ran), the Redis address is the harness's private server, and `/tmp/lk.*` becomes this test's
temp dir. Every command runs under `env -i` with a bare PATH and HOME, as in a new login shell
that exports nothing else (bash sets HOSTNAME without exporting it). The app's line runs in the
background, as "in another terminal" means; status and drain then run as written.
"""

import os
import re
import subprocess
import time
import unittest

from harness import DEFAULT_TIMEOUT, LKTestCase, REPO_ROOT, lk_bin, wait_until

from test_examples import c_app_path

FRESH_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/root", "LANG": "C"}

# A Redis the harness has just started holds off the first tenure for the block's ttl (10s):
# the LEADER line may take that long, plus the agent's start.
LEADER_TIMEOUT = 10 + DEFAULT_TIMEOUT


def text_of(path):
    with open(path) as f:
        return f.read()


def quickstart_block():
    """The first ```sh block under '## Quick start' in README.md, as a list of lines."""
    with open(os.path.join(REPO_ROOT, "README.md")) as f:
        text = f.read()
    m = re.search(r"^## Quick start\n.*?^```sh\n(.*?)^```", text, re.S | re.M)
    if not m:
        raise AssertionError("README.md has no ```sh block under '## Quick start'")
    return m.group(1).splitlines()


class QuickStartTest(LKTestCase):
    def setUp(self):
        super().setUp()
        self.app = c_app_path()
        if self.app is None:
            raise unittest.SkipTest("the C example is not built: `make all` builds it")
        self.redis = self.start_redis()

    def rewrite(self, line):
        line = line.replace("/tmp/lk.", os.path.join(self.tmp, "lk."))
        line = line.replace('"127.0.0.1:6379"', '"%s"' % self.redis.address)
        line = re.sub(r"(^|\s)\./leasekeeper\b", lambda m: m.group(1) + lk_bin(), line)
        return re.sub(r"(^|\s)build/examples/app\b", lambda m: m.group(1) + self.app, line)

    def sh(self, script, **kw):
        return subprocess.run(["env", "-i"] + ["%s=%s" % kv for kv in FRESH_ENV.items()] +
                              ["bash", "--noprofile", "--norc", "-e", "-c", script],
                              cwd=REPO_ROOT, capture_output=True, text=True,
                              timeout=DEFAULT_TIMEOUT, **kw)

    def spawn(self, line, name):
        out = open(os.path.join(self.tmp, name + ".out"), "w+")
        self.addCleanup(out.close)
        p = subprocess.Popen(["env", "-i"] + ["%s=%s" % kv for kv in FRESH_ENV.items()] +
                             ["bash", "--noprofile", "--norc", "-c", "exec " + line],
                             cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT, text=True)

        def stop():
            if p.poll() is None:
                p.kill()
                p.wait()
        self.addCleanup(stop)
        return p, out

    def test_quick_start_as_written(self):
        lines = quickstart_block()
        # Its shape, so that a change to the README is a change to this test too.
        heredoc_end = lines.index("EOF")
        self.assertTrue(lines[0].startswith("make"), lines[0])
        self.assertTrue(lines[1].startswith("cat > /tmp/lk.yaml <<'EOF'"), lines[1])
        rest = [l.split("  #")[0].strip() for l in lines[heredoc_end + 1:]]
        check, agent, app, status, drain = rest
        self.assertIn("check-config", check)
        self.assertTrue(agent.endswith("&") and " agent " in agent, agent)

        r = self.sh("\n".join(self.rewrite(l) for l in lines[1:heredoc_end + 1]))
        self.assertEqual(r.returncode, 0, r)
        r = self.sh(self.rewrite(check))
        self.assertEqual(r.returncode, 0, "check-config rejects the quick start's config in a "
                         "fresh shell: %s" % (r.stdout + r.stderr))

        sock = os.path.join(self.tmp, "lk.sock")
        agent_p, agent_out = self.spawn(self.rewrite(agent[:-1].strip()), "agent")
        wait_until(lambda: os.path.exists(sock) or agent_p.poll() is not None,
                   timeout=DEFAULT_TIMEOUT, what="the agent's socket")
        self.assertIsNone(agent_p.poll(), "the agent exited: %s" % text_of(agent_out.name))

        app_p, app_out = self.spawn(self.rewrite(app), "app")
        wait_until(lambda: re.search(r"\] LEADER token=\d+", text_of(app_out.name)),
                   timeout=LEADER_TIMEOUT, what="the app's LEADER line")

        r = self.sh(self.rewrite(status))
        self.assertEqual(r.returncode, 0, r)
        self.assertRegex(r.stdout, r"(?m)^scheduler\s+main\s+leader\s", r.stdout)
        # The identity the block's default gave, not an environment this shell lacks.
        self.assertRegex(r.stdout, r"(?m)^identity: quickstart-1\s", r.stdout)

        t0 = time.monotonic()
        r = self.sh(self.rewrite(drain))
        self.assertEqual(r.returncode, 0, "drain: %s" % (r.stdout + r.stderr))
        self.assertEqual(agent_p.wait(DEFAULT_TIMEOUT), 0, text_of(agent_out.name))
        app_p.wait(DEFAULT_TIMEOUT)
        out = text_of(app_out.name)
        self.assertRegex(out, r"\] RELEASED token=\d+ outcome=released", out)
        print("\n[quickstart] drain as written: %.0f ms" % ((time.monotonic() - t0) * 1000))
