"""An etcd that loses tenures it granted, or sits at the end of a slow link (docs/etcd.md), with
real etcd processes and agents:

1. wiped during a tenure (the data dir deleted, the member started again on the same ports),
   three replicas: the old leader hears LOST; tokens keep increasing (the new cluster has no
   "<key>:fence" key, so the next acquire seeds it from the wall clock in microseconds); every
   agent saw a higher revision than the new cluster has, so the followers hold off one ttl
   and say so in STATUS (holdoff_ms, holdoff_reason); no two apps lead at once; the same
   over two wipes in a row;
2. restored from a snapshot taken two handoffs earlier (old fence key, lower revisions): the
   agents saw higher revisions, hold off, and re-seed the fence, so no token comes twice;
3. behind a loopback proxy that delays every byte: at a 400 ms round trip with `timeout: 1s`
   replicas acquire within a few seconds, keep their tenures, and hand over; at 1 s and 2 s
   round trips `timeout: 1s` never acquires (every request times out, as docs/etcd.md says),
   while the timeout and ttl its rule gives do.

A leader interval, as an app sees it: from LEADER's arrival until the first of LOST,
STEPDOWN, the app's own disconnect and its deadline (until_mono_ms, moved only by a RENEWED
that arrived before it passed). Lines are stamped with time.monotonic(), which is
CLOCK_MONOTONIC, the clock of until_mono_ms. Each test prints what it measured.
"""

import os
import shutil
import subprocess
import time
import unittest

from harness import (DEFAULT_TIMEOUT, EtcdBackend, LKTestCase, TcpProxy,
                     _b64, etcdctl_bin, lock_config, wait_until)
from tenures import TenureAssertions, Tenures

KEY = "leasekeeper/x"
TTL = 3.0
TTL_S = "3s"


class EtcdLossTestCase(TenureAssertions, LKTestCase):
    def agent(self, identity, backend_cfg, lock="x", **kw):
        kw.setdefault("ttl", TTL_S)
        kw.setdefault("retry_interval", "300ms")
        return self.start_agent(identity, None, backends=[backend_cfg],
                                locks=[lock_config(lock, **kw)])

    def replicas(self, cfg, names, **kw):
        """An agent pod-<n> for each n in names and an app campaigning on each: (agents, apps,
        their Tenures)."""
        agents = [self.agent("pod-%s" % n, cfg, **kw) for n in names]
        tr = Tenures(self)
        return agents, [tr.campaign(a) for a in agents], tr


class EtcdWipeTest(EtcdLossTestCase):
    def test_wiped_during_a_tenure_tokens_increase_followers_hold_off_no_two_leaders(self):
        etcd = self.start_etcd()
        for i in range(5):
            etcd.put("unrelated", str(i))   # history: revisions move on
        cfg = EtcdBackend(etcd).config()
        agents, apps, tr = self.replicas(cfg, "abc")

        # A handoff first, so that there is a token sequence before the wipe.
        first, lead1 = tr.first_leader(timeout=TTL + DEFAULT_TIMEOUT)
        t_close = time.monotonic()
        tr.close(first)
        second, lead2 = tr.first_leader(after=t_close, timeout=TTL + DEFAULT_TIMEOUT)
        tr.wait(lambda: second.of("RENEWED", after=lead2.t), what="a renewal")
        before = tr.tokens()

        t_loss = time.monotonic()
        etcd.restart(wipe=True)
        self.assertIsNone(etcd.get(KEY), "the wiped cluster must have lost the key")
        lost = tr.event(second, "LOST", after=t_loss, timeout=TTL + DEFAULT_TIMEOUT)

        # While the followers hold off, STATUS says so and why.
        followers = [a for a in apps if a is not first and a is not second]
        seen_at, lk = self.wait_holdoff(tr, followers + [second], TTL + DEFAULT_TIMEOUT)
        print("\n  status of %s while holding off: holdoff_ms=%d reason=%r"
              % (seen_at.name, lk["holdoff_ms"], lk["holdoff_reason"]))
        self.assertLessEqual(lk["holdoff_ms"], TTL * 1000)
        self.assertIn("revision went back", lk["holdoff_reason"])
        self.assertEqual(lk["state"], "follower")

        new_app, new_lead = tr.first_leader(after=t_loss, timeout=2 * TTL + DEFAULT_TIMEOUT)
        held_off = new_lead.t - t_loss
        tr.settle(1.0)
        after = [i.token for i in tr.intervals() if i.start >= t_loss]
        print("  wiped etcd: old leader %s token %d LOST reason=%s %.0f ms after the wipe; "
              "first new LEADER %s %.3fs after the wipe (ttl %.1fs); tokens before %s, "
              "after %s" % (second.name, lead2.token, lost["reason"], (lost.t - t_loss) * 1000,
                           new_app.name, held_off, TTL, before, after))
        self.assertEqual(lost.token, lead2.token)
        # Every agent saw a higher revision before the wipe: none may start a tenure until
        # one ttl after it found the revision gone back, which is after the wipe.
        self.assertGreaterEqual(held_off, TTL, "a tenure during the hold-off:%s" % tr.story())
        self.assertLess(held_off, TTL + 5.0, "the hold-off never ended:%s" % tr.story())
        self.assertGreater(new_lead.token, max(before))
        self.assertIncreasing(tr.tokens())
        self.assertNoOverlap(tr, "wiped etcd")
        self.assertHeld(EtcdBackend(etcd), KEY, new_app.agent.identity, new_lead.token)
        self.assertEqual(new_app.client.status()["locks"][0].get("holdoff_ms", 0), 0)
        # The agents still campaigning after the wipe (not pod-a, whose app left) said why.
        for a in [second.agent] + [f.agent for f in followers]:
            msgs = [str(e.get("msg", "")) + " " + str(e.get("reason", ""))
                    for e in a.log_entries()]
            self.assertTrue(any("holding off" in m and "revision went back" in m
                                for m in msgs),
                            "%s did not log its hold-off: %s" % (a.identity, msgs))

    def test_tokens_keep_increasing_over_two_wipes(self):
        etcd = self.start_etcd()
        cfg = EtcdBackend(etcd).config()
        a = self.agent("pod-a", cfg)
        tr = Tenures(self)
        app = tr.campaign(a)
        tokens = []
        for round_ in range(3):
            lead = tr.wait(lambda: [e for e in app.of("LEADER") if e.token not in tokens],
                           timeout=2 * TTL + DEFAULT_TIMEOUT, what="a new tenure")[0]
            tokens.append(lead.token)
            self.assertEqual(int(etcd.get(KEY + ":fence"))
                             + int(etcd.kv(KEY)["create_revision"]), lead.token)
            if round_ < 2:
                etcd.restart(wipe=True)
        print("\n  tokens over two wipes: %s" % tokens)
        self.assertIncreasing(tokens)
        self.assertNoOverlap(tr, "two wipes")

    def test_restored_from_an_older_snapshot_tokens_increase_no_two_leaders(self):
        """A snapshot taken during tenure 1, two handoffs, then the snapshot restored: its old
        fence key and lower revisions would hand out tokens 2 and 3 again. The agents saw the
        higher revisions, so they hold off and re-seed the fence from the clock."""
        etcd = self.start_etcd()
        cfg = EtcdBackend(etcd).config()
        agents, apps, tr = self.replicas(cfg, "ab")
        first, lead1 = tr.first_leader(timeout=TTL + DEFAULT_TIMEOUT)
        snap = os.path.join(self.tmp, "etcd.snap")
        r = etcd.etcdctl("snapshot", "save", snap)
        self.assertEqual(r.returncode, 0, r)
        fence_then = int(etcd.get(KEY + ":fence"))

        # Two handoffs after the snapshot.
        t = time.monotonic()
        tr.close(first)
        second, lead2 = tr.first_leader(after=t, timeout=TTL + DEFAULT_TIMEOUT)
        again = tr.campaign(first.agent)
        t = time.monotonic()
        tr.close(second)
        third, lead3 = tr.first_leader(after=t, timeout=TTL + DEFAULT_TIMEOUT)
        self.assertIs(third, again)
        before = tr.tokens()
        tr.wait(lambda: third.of("RENEWED", after=lead3.t), what="a renewal")

        t_loss = time.monotonic()
        etcd.stop()
        shutil.rmtree(etcd.data_dir)
        r = subprocess.run([etcdctl_bin(), "snapshot", "restore", snap,
                            "--data-dir", etcd.data_dir, "--name", etcd.name,
                            "--initial-cluster", "%s=%s" % (etcd.name, etcd.peer_url),
                            "--initial-cluster-token", etcd.cluster_token,
                            "--initial-advertise-peer-urls", etcd.peer_url],
                           env=dict(os.environ, ETCDCTL_API="3"), cwd=self.tmp,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
        self.assertEqual(r.returncode, 0, r.stdout)
        etcd.restart()
        self.assertEqual(int(etcd.get(KEY + ":fence")), fence_then, "the old fence is back")
        restored_rev = int(etcd.call("/v3/kv/range", {"key": _b64(KEY)})["header"]["revision"])

        lost = tr.event(third, "LOST", after=t_loss, timeout=TTL + DEFAULT_TIMEOUT)
        new_app, new_lead = tr.first_leader(after=t_loss, timeout=3 * TTL + DEFAULT_TIMEOUT)
        tr.settle(1.0)
        fence_now = int(etcd.get(KEY + ":fence"))
        print("\n  restored snapshot (revision %d): tokens before %s, first after %d "
              "(%s, %.3fs after the restore began); fence %d -> %d; old leader LOST reason=%s"
              % (restored_rev, before, new_lead.token, new_app.name, new_lead.t - t_loss,
                 fence_then, fence_now, lost["reason"]))
        self.assertEqual(lost.token, lead3.token)
        self.assertGreater(new_lead.token, max(before),
                           "a token issued again after a restore:%s" % tr.story())
        self.assertGreater(fence_now, fence_then)
        self.assertGreaterEqual(new_lead.t - t_loss, TTL)
        self.assertIncreasing(tr.tokens())
        self.assertNoOverlap(tr, "restored snapshot")
        self.assertHeld(EtcdBackend(etcd), KEY, new_app.agent.identity, new_lead.token)


class EtcdSlowLinkTest(EtcdLossTestCase):
    """etcd behind TcpProxy(delay=d): a round trip of 2d on every request."""

    def slow_etcd(self, rtt):
        etcd = self.start_etcd()
        proxy = TcpProxy(etcd.client_port, delay=rtt / 2.0)
        self.addCleanup(proxy.close)
        return etcd, proxy

    def cfg(self, etcd, proxy, timeout):
        return EtcdBackend(etcd).config(timeout=timeout,
                                        endpoints=["http://127.0.0.1:%d" % proxy.port])

    def test_400ms_round_trip_with_timeout_1s_acquires_renews_and_hands_over(self):
        etcd, proxy = self.slow_etcd(0.4)
        cfg = self.cfg(etcd, proxy, "1s")
        agents = [self.agent("pod-%s" % n, cfg, ttl="10s", retry_interval="1s") for n in "ab"]
        tr = Tenures(self)
        t0 = time.monotonic()
        apps = [tr.campaign(a) for a in agents]
        first, lead = tr.first_leader(timeout=20)
        acquire_s = lead.t - t0
        # Three renewals in a row (one every ttl/3), no LOST.
        tr.wait(lambda: len(first.of("RENEWED", after=lead.t)) >= 3, timeout=20,
                what="three renewals")
        self.assertEqual(first.of("LOST"), [], tr.story())
        # A handoff: the follower, told by its watch, acquires over the slow link.
        other = [a for a in apps if a is not first][0]
        t_close = time.monotonic()
        tr.close(first)
        _, lead2 = tr.first_leader(after=t_close, timeout=20)
        handoff_s = lead2.t - t_close
        print("\n  400 ms round trip, timeout 1s: first LEADER %.3fs after CAMPAIGN, "
              "handoff %.3fs; tokens %s" % (acquire_s, handoff_s, tr.tokens()))
        self.assertLess(acquire_s, 5.0)
        self.assertLess(handoff_s, 5.0)
        self.assertGreater(lead2.token, lead.token)
        self.assertIs(tr.leaders(after=t_close)[0][0], other)
        self.assertNoOverlap(tr, "400 ms round trip")

    def never_leads(self, tr, app, seconds):
        tr.settle(seconds)
        self.assertEqual(app.of("LEADER"), [], tr.story())

    def timed_out_logged(self, agent, ms):
        return any("timed out after %dms" % ms in " ".join(str(v) for v in e.values())
                   for e in agent.log_entries())

    def short_and_ruled(self, rtt, timeout, ttl, wait):
        """Two agents behind one link of round trip rtt: pod-a with `timeout: 1s`, below the
        round trip, campaigns for x; pod-b with the timeout and ttl the rule gives
        (docs/etcd.md: timeout >= 2.5 x round trip, ttl >= 3 x (2 x rtt + timeout)) for y.
        pod-b leads and renews within wait seconds each, without a LOST; pod-a never leads
        (every request times out) and logs its timeouts. Returns pod-b's LEADER, the seconds
        from CAMPAIGN to it, and its first RENEWED."""
        etcd, proxy = self.slow_etcd(rtt)
        short = self.agent("pod-a", self.cfg(etcd, proxy, "1s"), lock="x", ttl="10s")
        ruled = self.agent("pod-b", self.cfg(etcd, proxy, timeout), lock="y", ttl=ttl)
        tr = Tenures(self)
        t0 = time.monotonic()
        a = tr.campaign(short, lock="x")
        b = tr.campaign(ruled, lock="y")
        _, lead = tr.first_leader(timeout=wait)
        self.assertIs(tr.leaders()[0][0], b)
        acquire_s = lead.t - t0
        # The first renewal is due ttl/3 after the grant was sent and takes two round trips.
        renewed = tr.wait(lambda: b.of("RENEWED", after=lead.t), timeout=wait,
                          what="a renewal")[0]
        self.never_leads(tr, a, max(0.0, 8.0 - (time.monotonic() - t0)))
        wait_until(lambda: self.timed_out_logged(short, 1000), what="a timeout logged")
        self.assertEqual(b.of("LOST"), [], tr.story())
        return lead, acquire_s, renewed

    def test_1s_round_trip_needs_the_timeout_and_ttl_the_rule_gives(self):
        _, acquire_s, _ = self.short_and_ruled(1.0, "2500ms", "14s", wait=20)
        print("\n  1 s round trip: timeout 1s never leads (requests time out); timeout 2.5s "
              "ttl 14s: LEADER %.3fs after CAMPAIGN, renewed" % acquire_s)

    def test_2s_round_trip_needs_the_timeout_and_ttl_the_rule_gives(self):
        lead, acquire_s, renewed = self.short_and_ruled(2.0, "5s", "30s", wait=30)
        print("\n  2 s round trip: timeout 1s never leads (requests time out); timeout 5s "
              "ttl 30s: LEADER %.3fs after CAMPAIGN, first RENEWED %.3fs after LEADER, "
              "LEADER's validity %dms"
              % (acquire_s, renewed.t - lead.t, lead.int("ttl_ms")))
        self.assertGreaterEqual(acquire_s, 2 * 2.0 - 0.5)   # lease grant, candidate txn
        self.assertLess(acquire_s, 15.0)


class EarlyRevokeTest(EtcdLossTestCase):
    """docs/etcd.md, "Early lease revocation on a frozen etcd leader": an etcd leader that wakes
    up from a stall may revoke a lease whose holder is still renewing it through another
    member. Revoking the lease by hand does the same thing every time: the leader's candidate
    key goes without a release marker naming it, so the next candidate waits one ttl before a
    new tenure, while the old holder's app stops at its own deadline. A release writes
    "released <its key's create_revision>", and its successor does not wait."""

    def test_lease_revoked_under_a_leader_the_next_tenure_waits_one_ttl(self):
        etcd = self.start_etcd()
        cfg = EtcdBackend(etcd).config()
        agents, apps, tr = self.replicas(cfg, "ab")
        first, lead1 = tr.first_leader(timeout=TTL + DEFAULT_TIMEOUT)
        tr.wait(lambda: first.of("RENEWED", after=lead1.t), what="a renewal")
        self.assertEqual(len(etcd.candidates(KEY)), 2, "both agents queued")
        self.assertIsNone(etcd.get(KEY + ":state"), "nothing was released yet")

        t_revoke = time.monotonic()
        r = etcd.call("/v3/lease/revoke", {"ID": str(etcd.lease_of(KEY))})
        self.assertNotIn("error", r)
        lost = tr.event(first, "LOST", after=t_revoke, timeout=TTL + DEFAULT_TIMEOUT)
        seen_at, lk = self.wait_holdoff(tr, apps, TTL + DEFAULT_TIMEOUT)
        self.assertIn("ended without a release", lk["holdoff_reason"])
        self.assertLessEqual(lk["holdoff_ms"], TTL * 1000)

        new_app, new_lead = tr.first_leader(after=t_revoke, timeout=2 * TTL + DEFAULT_TIMEOUT)
        waited = new_lead.t - t_revoke
        tr.settle(1.0)
        print("\n  lease revoked under %s (token %d): LOST reason=%s %.0f ms later; %s said "
              "holdoff_ms=%d (%s); next LEADER %s %.3fs after the revoke (ttl %.1fs)"
              % (first.name, lead1.token, lost["reason"], (lost.t - t_revoke) * 1000,
                 seen_at.name, lk["holdoff_ms"], lk["holdoff_reason"], new_app.name, waited,
                 TTL))
        self.assertGreaterEqual(waited, TTL, "a tenure began inside the wait:%s" % tr.story())
        self.assertLess(waited, TTL + 5.0, "the wait never ended:%s" % tr.story())
        self.assertGreater(new_lead.token, lead1.token)
        self.assertNoOverlap(tr, "lease revoked under a leader")

        # A release: the successor leads at once.
        t_close = time.monotonic()
        tr.close(new_app)
        third, lead3 = tr.first_leader(after=t_close, timeout=TTL + DEFAULT_TIMEOUT)
        tr.settle(0.5)
        print("  after a release: next LEADER %s %.0f ms after the app closed"
              % (third.name, (lead3.t - t_close) * 1000))
        self.assertLess(lead3.t - t_close, TTL / 2, "a released lock was held off")
        self.assertEqual(etcd.get(KEY + ":state"),
                         "released %d" % (new_lead.token - int(etcd.get(KEY + ":fence"))))
        self.assertNoOverlap(tr, "after the release")


if __name__ == "__main__":
    unittest.main(verbosity=2)
