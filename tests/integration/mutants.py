#!/usr/bin/env python3
"""Mutation check of the scenarios: run them against fake_agent.py with one deliberate bug at a
time (FAKE_BUGS) and require that the scenarios meant to catch that bug fail, and that the
unmutated fake passes them. Takes a few minutes.

    python3 tests/integration/mutants.py [BUG...]
"""

import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

# bug -> the tests (unittest -k patterns) that must catch it
MUTANTS = {
    "no_ack_gate": ["test_release_waits_for_a_late_ack", "test_release_waits_for_every_campaign"],
    "release_on_timeout": ["test_no_ack_means_no_release_and_expiry_by_ttl"],
    "no_publish": ["test_graceful_handoff_follower_takes_over_via_release_notice"],
    "blind_delete": ["test_lost_release_reply_is_retried_without_deleting"],
    "late_lost": ["test_frozen_server_gives_lost_before_the_lease_can_expire"],
    "no_seed": ["test_tokens_increase_across_a_redis_restart",
                "test_missing_fence_counter_is_seeded"],
    "keep_on_disconnect": ["test_app_disconnect_while_leading_releases_at_once",
                           "test_without_campaign_clients_the_key_is_never_created"],
    "no_stop": ["test_concurrent_drain_triggers_join_one_drain"],
    "drain_twice": ["test_concurrent_drain_triggers_join_one_drain"],
}


def run(patterns, bugs):
    env = dict(os.environ, LK_BIN=os.path.join(HERE, "fake_agent.py"), FAKE_BUGS=bugs)
    cmd = [sys.executable, os.path.join(HERE, "run.py"), "-q"]
    for p in patterns:
        cmd += ["-k", p]
    return subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT).returncode


def main():
    bugs = sys.argv[1:] or list(MUTANTS)
    bad = 0
    for bug in bugs:
        for pattern in MUTANTS[bug]:
            clean = run([pattern], "")
            mutated = run([pattern], bug)
            ok = clean == 0 and mutated != 0
            bad += not ok
            print("%-5s %-20s %-60s clean=%s mutant=%s" % ("ok" if ok else "MISS", bug, pattern,
                                                           clean, mutated), flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
