#!/usr/bin/env python3
"""Run the integration scenarios: every tests/integration/test_*.py module as its own
`python3 -m unittest -v <module>` process, a few at a time, and report.

    LK_BIN=build/leasekeeper python3 tests/integration/run.py            # everything
    python3 tests/integration/run.py -k handoff                           # names matching
    python3 tests/integration/run.py -j 1 test_cli test_acquire          # given modules, serially
    python3 tests/integration/run.py --selftest                           # also the harness checks

-k PATTERN is passed to unittest (a substring or fnmatch pattern matched against
module.Class.test_name), so `-k test_handoff` selects a module and `-k exactly_once` a test.
Modules where nothing matches are left out of the report. Each module's output is printed when
it finishes; the exit status is non-zero if any module failed.

Modules start longest first (SLOW below: rough seconds on the 2-core CI machine), so that a
long module does not start last and stretch the run. --by-class runs each test class as its own
process instead (or name one: `run.py test_acquire.AcquireEtcdTest`); on 2 cores that does not
make the whole run faster, since it is CPU-bound.
"""

import argparse
import concurrent.futures
import fnmatch
import glob
import os
import re
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(HERE))


# Rough seconds per module (or module.Class), normal build, 3 at a time on 2 cores; anything not
# listed counts as DEFAULT_SECONDS. Only the order depends on it.
SLOW = {
    "test_renew_deadline": 38, "test_examples": 35, "test_ack_gating": 29, "test_acquire": 24,
    "test_disconnect": 21, "test_etcd": 20, "test_rolling_restart": 17, "test_run": 13,
    "test_deploy": 20, "test_dropped_reply": 10, "test_bad_input": 7, "test_exactly_once": 5,
    "test_self_fencing": 45, "test_client_python": 20, "test_log_stall": 15,
    "test_client_go": 30, "test_client_slots": 26, "test_config_limits": 2,
    "test_redis_loss": 45, "test_etcd_loss": 65, "test_app_freeze": 32,
    "test_handoff_telemetry": 15, "test_redis_sentinel": 45, "test_redis_acl": 10,
    "test_redis_tls": 8, "test_cli_output": 13, "test_http": 12,
}
DEFAULT_SECONDS = 3


def classes_of(module):
    """module.Class for every TestCase class with tests defined in module, or [module] if it
    has at most one such class or cannot be imported (its error then shows when it runs)."""
    import importlib
    import unittest
    if HERE not in sys.path:
        sys.path.insert(0, HERE)
    try:
        mod = importlib.import_module(module)
    except Exception:  # noqa: BLE001 - reported by the module's own run
        return [module]
    loader = unittest.TestLoader()
    names = sorted(n for n, obj in vars(mod).items()
                   if isinstance(obj, type) and issubclass(obj, unittest.TestCase)
                   and obj.__module__ == module and loader.getTestCaseNames(obj))
    if len(names) <= 1:
        return [module]
    return ["%s.%s" % (module, n) for n in names]


def discover(names):
    found = sorted(os.path.splitext(os.path.basename(p))[0]
                   for p in glob.glob(os.path.join(HERE, "test_*.py")))
    if not names:
        return found
    out = []
    for n in names:
        if n.endswith(".py"):
            n = n[:-3]
        n = os.path.basename(n)
        if "." in n and n.split(".", 1)[0] in found:   # module.Class
            out.append(n)
            continue
        matches = [m for m in found if m == n or fnmatch.fnmatch(m, n)]
        if not matches:
            sys.exit("run.py: no test module %r (have: %s)" % (n, ", ".join(found)))
        out += [m for m in matches if m not in out]
    return out


def run_module(module, patterns, timeout, env):
    cmd = [sys.executable, "-m", "unittest", "-v"]
    for p in patterns:
        cmd += ["-k", p]
    cmd.append(module)
    t0 = time.monotonic()
    # Its own process group, so that a module that hangs is killed with everything it started.
    p = subprocess.Popen(cmd, cwd=HERE, env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                         start_new_session=True)
    try:
        out, _ = p.communicate(timeout=timeout)
        rc = p.returncode
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGTERM)
        try:
            out, _ = p.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            out, _ = p.communicate()
        out = (out or b"") + (b"\nrun.py: module %s timed out after %ds and was killed\n"
                              % (module.encode(), timeout))
        rc = -1
    else:
        # Reap anything the module left behind in its group (it should have stopped it all).
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    text = out.decode(errors="replace")
    m = re.search(r"^Ran (\d+) tests? in", text, re.M)
    ran = int(m.group(1)) if m else None
    return module, rc, text, time.monotonic() - t0, ran


def summary_of(text):
    m = re.search(r"^(OK|FAILED)(.*)$", text, re.M)
    return (m.group(1) + m.group(2)) if m else "no unittest summary"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("modules", nargs="*", help="test modules (names or globs) to run")
    ap.add_argument("-k", dest="patterns", action="append", default=[],
                    help="only tests matching this pattern (repeatable; see unittest -k)")
    ap.add_argument("-j", "--jobs", type=int, default=int(os.environ.get("LK_JOBS", "4")),
                    help="modules run at once (default 4, or $LK_JOBS)")
    ap.add_argument("--timeout", type=int, default=int(os.environ.get("LK_MODULE_TIMEOUT", "900")),
                    help="seconds before a module is killed (default 900)")
    ap.add_argument("--selftest", action="store_true",
                    help="also run selftest_harness.py (needs no agent)")
    ap.add_argument("-q", "--quiet", action="store_true",
                    help="print the output of failed modules only")
    ap.add_argument("--by-class", action="store_true",
                    help="run each test class as its own process, not whole modules")
    args = ap.parse_args()

    modules = discover(args.modules)
    if args.by_class:
        modules = [u for m in modules for u in (classes_of(m) if "." not in m else [m])]
    # Longest first (stable: equal hints keep the alphabetical order).
    modules.sort(key=lambda u: -SLOW.get(u, SLOW.get(u.split(".")[0], DEFAULT_SECONDS)))
    if args.selftest:
        modules = ["selftest_harness"] + modules
    env = dict(os.environ)
    lk = env.get("LK_BIN") or "build/leasekeeper"
    if not os.path.isabs(lk):
        lk = os.path.join(REPO_ROOT, lk)
    env["LK_BIN"] = lk
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    needs_bin = any(m != "selftest_harness" for m in modules)
    if needs_bin and not os.access(lk, os.X_OK):
        print("run.py: leasekeeper binary not found or not executable: %s\n"
              "        build it (make build/leasekeeper) or set LK_BIN" % lk, file=sys.stderr)
        return 2

    print("run.py: %d unit(s), %d at a time, LK_BIN=%s" % (len(modules), args.jobs, lk),
          flush=True)
    t0 = time.monotonic()
    results = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as ex:
        futs = [ex.submit(run_module, m, args.patterns, args.timeout, env) for m in modules]
        for fut in concurrent.futures.as_completed(futs):
            module, rc, text, secs, ran = fut.result()
            if ran == 0 and args.patterns:
                continue  # nothing matched -k here
            results.append((module, rc, secs, ran, summary_of(text)))
            if not args.quiet or rc != 0:
                print("\n===== %s (%.1fs, exit %s) =====" % (module, secs, rc))
                print(text.rstrip(), flush=True)

    print("\n===== summary (%.1fs) =====" % (time.monotonic() - t0))
    failed = 0
    for module, rc, secs, ran, summ in sorted(results):
        # unittest exits 5 when no tests ran (Python >= 3.12): not a failure under -k.
        bad = rc != 0 and not (rc == 5 and args.patterns)
        failed += bad
        print("%-6s %-44s %6.1fs  %s" % ("FAIL" if bad else "ok", module, secs, summ))
    if not results:
        print("no tests matched")
        return 1
    print("%d unit(s) failed" % failed if failed else "all %d unit(s) passed" % len(results))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
