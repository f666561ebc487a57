"""The Go client (clients/go) against a real agent: `go test` freezes its own agent with SIGSTOP
and the leader work's context is cancelled at the tenure's deadline, before the other replica
leads. Skipped when `go` is not on PATH. Redis and etcd."""

import os
import re
import shutil
import subprocess
import tempfile
import time
import unittest

from harness import REPO_ROOT, EtcdScenario, LKTestCase, RedisScenario, lock_config, wait_until

KEY = "leasekeeper/x"
FREEZE_MS = 8000


def go_env(build_dir):
    env = dict(os.environ)
    env.update({
        "GOCACHE": os.path.join(build_dir, "gocache"), "GOPATH": os.path.join(build_dir, "gopath"),
        "GOFLAGS": "-mod=mod", "GOPROXY": "off", "GOTOOLCHAIN": "local", "GOWORK": "off",
        "GO111MODULE": "on", "CGO_ENABLED": "0", "HOME": build_dir,
    })
    return env


class GoClientScenarios:
    def test_frozen_agent_go_app_stops_at_its_deadline_before_the_successor_leads(self):
        go = shutil.which("go")
        if not go:
            raise unittest.SkipTest("`go` is not on PATH (apt-get install golang-go)")
        locks = [lock_config("x", ttl="3s", retry_interval="200ms")]
        a = self.start_agent("pod-a", self.backend, locks=locks)
        b = self.start_agent("pod-b", self.backend, locks=locks)
        build = tempfile.mkdtemp(prefix="lk-it-gotest-", dir="/tmp")
        self.addCleanup(shutil.rmtree, build, True)
        env = go_env(build)
        env.update({"LK_TEST_SOCKET": a.sock_path, "LK_TEST_AGENT_PID": str(a.pid),
                    "LK_TEST_FREEZE_MS": str(FREEZE_MS), "LK_TEST_STOP_AFTER_MS": "1500"})
        # Compile first, so that the test's own timing does not include the build.
        subprocess.run([go, "test", "-count=1", "-run", "^$", "./..."],
                       cwd=os.path.join(REPO_ROOT, "clients", "go"), env=env, check=True,
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=600)
        proc = subprocess.Popen([go, "test", "-count=1", "-v", "-run", "TestRealAgentFrozen",
                                 "./..."], cwd=os.path.join(REPO_ROOT, "clients", "go"), env=env,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        self.addCleanup(lambda: proc.poll() is None and proc.kill())
        wait_until(lambda: self.backend.holder(KEY) == "pod-a", timeout=30,
                   what="pod-a's Go app leading")
        follower = self.connect(b, label="app@pod-b", client_name="app-pod-b")
        follower.call_ok("CAMPAIGN x")
        lead, _ = follower.await_event("LEADER", "x", allow=("FOLLOWER",), timeout=30)
        out, _ = proc.communicate(timeout=120)
        print(out)
        self.assertEqual(proc.returncode, 0, "go test failed:\n" + out)
        m = re.search(r"GO_STOPPED_MS=(\d+) REASON=(\S+) DEADLINE_MS=(\d+) SIGSTOP_MS=(\d+)", out)
        self.assertIsNotNone(m, out)
        stopped_ms, reason, deadline_ms, sigstop_ms = (int(m.group(1)), m.group(2),
                                                      int(m.group(3)), int(m.group(4)))
        successor_ms = lead.t * 1000
        margin = successor_ms - stopped_ms
        print("go app: stopped (%s) %d ms after SIGSTOP, %d ms after its deadline; pod-b led "
              "%.0f ms later (margin); overlap %d ms" % (reason, stopped_ms - sigstop_ms,
                                                         stopped_ms - deadline_ms, margin,
                                                         max(0, -margin)))
        self.assertEqual(reason, "deadline")
        self.assertGreater(margin, 0, "pod-b led before pod-a's Go app stopped")


class GoClientRedisTest(GoClientScenarios, RedisScenario, LKTestCase):
    pass


class GoClientEtcdTest(GoClientScenarios, EtcdScenario, LKTestCase):
    pass


if __name__ == "__main__":
    unittest.main()
