"""The etcd backend at the agent level: a three-member cluster (fail over, never two leaders),
TLS client certificates, username/password auth, what etcd grants versus what is configured,
and keys changed behind the agent's back. The scenarios shared with Redis (acquire, handoff,
ACK gating, ...) live in their own modules and run on both backends; the C tests
(tests/check_etcd.c) cover the backend itself.

Every class here needs the etcd binary (and `openssl` for TLS); they are skipped without it, or
when LK_BACKENDS leaves etcd out."""

import os
import re
import signal
import sys
import time
import unittest

from harness import (EtcdBackend, LKTestCase, backends_enabled, have_etcd, lock_config,
                     _unb64, status_locks, wait_until)

KEY = "leasekeeper/x"


class EtcdTestCase(LKTestCase):
    def setUp(self):
        super().setUp()
        if "etcd" not in backends_enabled():
            self.skipTest("etcd not in LK_BACKENDS")
        if not have_etcd():
            self.skipTest("no etcd binary (install etcd, or set ETCD)")

    def write_secret(self, name, text):
        path = os.path.join(self.tmp, name)
        with open(path, "w") as f:
            f.write(text + "\n")
        os.chmod(path, 0o600)
        return path

    def start_etcd_agent(self, identity, backend_cfg, **lock_kw):
        lock_kw.setdefault("ttl", "3s")
        lock_kw.setdefault("retry_interval", "300ms")
        return self.start_agent(identity, None, backends=[backend_cfg],
                                locks=[lock_config("x", **lock_kw)])

    def assertNeverLeads(self, agent, duration=2.0):
        """The agent, asked to campaign, stays a follower of nobody for `duration`."""
        app = self.connect(agent, label="app@" + agent.identity)
        app.call_ok("CAMPAIGN x")
        for e in app.events_for(duration):
            self.assertEqual(e.raw, "FOLLOWER x holder=-", "%s: %r" % (agent.identity, e.raw))
        x = status_locks(app.status())["x"]
        self.assertNotEqual(str(x["state"]).lower(), "leader")
        return app

    def problems_logged(self, agent):
        """The warn and error lines of the agent's log, as text."""
        return [" ".join(str(v) for k, v in e.items() if k in ("msg", "error"))
                for e in agent.log_entries() if e.get("level") in ("warn", "error")]

    def assertLogged(self, agent, pattern, what):
        lines = self.problems_logged(agent)
        self.assertTrue(any(re.search(pattern, ln) for ln in lines),
                        "%s: no warn/error line matching %r (%s) in:\n%s"
                        % (agent.identity, pattern, what, "\n".join(lines[:10]) or agent.tail(20)))


# ---------------------------------------------------------------------------------------------
# A three-member cluster


def tenures(app):
    """The app's tenures as (start, end, token) on the monotonic clock, from the events it
    consumed: a tenure starts at LEADER and ends at LOST, or when the app ACKed a STEPDOWN (it
    stops its work first), or at EOF; end None if it is still going."""
    out, cur = [], None
    acks = sorted(t for t, line in app.sent if line.startswith("ACK "))
    for m in app.history:
        if m.kind == "LEADER":
            if cur is None:
                cur = [m.t, None, m.token]
        elif m.kind in ("LOST", "STEPDOWN") and cur is not None:
            end = m.t
            if m.kind == "STEPDOWN":
                later = [t for t in acks if t >= m.t]
                end = later[0] if later else None
            cur[1] = end
            out.append(tuple(cur))
            cur = None
    if cur is not None:
        cur[1] = app.eof_at
        out.append(tuple(cur))
    return out


class EtcdClusterTest(EtcdTestCase):
    def setUp(self):
        super().setUp()
        self.cluster = self.start_etcd_cluster()
        self.backend = EtcdBackend(self.cluster)

    def test_leader_survives_the_death_of_its_first_endpoint_and_never_two_leaders(self):
        c = self.cluster
        li = c.leader_index()
        # The raft leader's member first: killing it costs the agents their endpoint and the
        # cluster its leader (an election) at the same time.
        eps = [c.members[li].url] + [m.url for i, m in enumerate(c.members) if i != li]
        cfg = self.backend.config(endpoints=eps, timeout="1s")
        lock = dict(ttl="3s", retry_interval="10s", stepdown_timeout="5s")
        a = self.start_etcd_agent("pod-a", cfg, **lock)
        b = self.start_etcd_agent("pod-b", cfg, **lock)
        app_a, lead = self.leader_app(a)
        app_b = self.connect(b, label="app@pod-b")
        app_b.call_ok("CAMPAIGN x")
        app_b.await_follower("x", "pod-a")
        wait_until(lambda: c.members[li].watchers() >= 1, what="pod-b's watch")

        t_kill = time.monotonic()
        c.members[li].kill()
        # Longer than a TTL: the leader either kept renewing through another member, or lost
        # the lock cleanly (LOST) and someone leads again with a greater token.
        evs = {app_a: app_a.events_for(3.5), app_b: app_b.events_for(0.0)}
        lost = [e for e in evs[app_a] if e.kind == "LOST"]
        for e in evs[app_a]:
            self.assertIn(e.kind, ("LOST", "LEADER", "FOLLOWER"), e.raw)
        if lost:
            self.assertLess(lost[0].t - t_kill, 3.0, "LOST after the lease could have expired")
        self.assertGreaterEqual(len(c.alive_members()), 2)

        # Who leads now? Its tenure is the key's, as the surviving members see it.
        cur = wait_until(lambda: self.current_leader(app_a, app_b), timeout=15,
                         what="a leader after the member died")
        app_l, ev_l = cur
        app_f = app_b if app_l is app_a else app_a
        ident = "pod-a" if app_l is app_a else "pod-b"
        self.assertHeld(self.backend, KEY, ident, ev_l.token)
        if not lost and app_l is app_a:
            self.assertEqual(ev_l.token, lead.token, "the tenure was kept")
            self.assertLogged(a, re.escape(eps[0]), "it left the dead endpoint")

        # Then a graceful handoff through the surviving members: the follower hears the
        # release on its (resumed) watch, not its 10s retry.
        agent_l = a if app_l is app_a else b
        agent_l.send_signal(signal.SIGTERM)
        sd, _ = app_l.await_event("STEPDOWN", "x", allow=("FOLLOWER",))
        app_l.call_ok("ACK x %d" % sd.token)
        rel, _ = app_l.await_event("RELEASED", "x", outcome="released")
        nxt, _ = app_f.await_event("LEADER", "x", allow=("FOLLOWER", "LOST"), timeout=9)
        self.assertLess(nxt.t - rel.t, 3.0, "takeover %.2fs after the release: the watch did "
                        "not fail over (retry_interval is 10s)" % (nxt.t - rel.t))
        self.assertEqual(agent_l.wait(20), 0)
        app_l.until_eof(timeout=10)

        # The apps never saw two leaders at once, and every tenure's token is greater than
        # the ones before it.
        ta, tb = tenures(app_a), tenures(app_b)
        for x in ta:
            for y in tb:
                xe, ye = x[1] or float("inf"), y[1] or float("inf")
                self.assertFalse(x[0] < ye and y[0] < xe,
                                 "two leaders at once: pod-a %r, pod-b %r" % (x, y))
        ordered = sorted(ta + tb)
        tokens = [t[2] for t in ordered]
        self.assertEqual(tokens, sorted(set(tokens)), "tokens must increase: %r" % ordered)
        sys.stderr.write("\nCLUSTER %s; tenures pod-a %s pod-b %s\n" % (
            "pod-a kept its tenure" if not lost else
            "pod-a lost its tenure %.2fs after the kill" % (lost[0].t - t_kill),
            [(round(s - t_kill, 3), e and round(e - t_kill, 3), t) for s, e, t in ta],
            [(round(s - t_kill, 3), e and round(e - t_kill, 3), t) for s, e, t in tb]))

    def current_leader(self, app_a, app_b):
        """(app, LEADER event) of the app whose last lock event is LEADER, if exactly one."""
        found = []
        for app in (app_a, app_b):
            app.events_for(0.05)
            evs = [m for m in app.history if m.kind in ("LEADER", "LOST", "STEPDOWN")]
            if evs and evs[-1].kind == "LEADER":
                found.append((app, evs[-1]))
        if len(found) > 1:
            raise AssertionError("two apps lead at once: %r" % found)
        return found[0] if found else None

    def test_agent_starts_and_leads_while_its_first_endpoint_is_down(self):
        c = self.cluster
        c.members[0].kill()
        cfg = self.backend.config(endpoints=c.endpoints, timeout="1s")
        a = self.start_etcd_agent("pod-a", cfg)
        app, lead = self.leader_app(a)
        self.assertHeld(self.backend, KEY, "pod-a", lead.token)
        self.assertLogged(a, re.escape(c.endpoints[0]), "the dead endpoint")


# ---------------------------------------------------------------------------------------------
# TLS


class EtcdTlsTest(EtcdTestCase):
    def setUp(self):
        super().setUp()
        self.certs = self.make_certs()
        self.etcd = self.start_etcd(tls=self.certs)
        self.backend = EtcdBackend(self.etcd)

    def tls_config(self, ca, cert=None, key=None):
        cfg = self.backend.config(timeout="1s")
        cfg["ca_file"] = self.certs[ca]
        if cert:
            cfg["cert_file"], cfg["key_file"] = self.certs[cert], self.certs[key]
        return cfg

    def test_right_ca_and_client_certificate_lead(self):
        self.assertTrue(self.etcd.url.startswith("https://"))
        a = self.start_etcd_agent("pod-a", self.tls_config("ca", "client", "client_key"))
        app, lead = self.leader_app(a)
        self.assertHeld(self.backend, KEY, "pod-a", lead.token)
        # It renews and releases over TLS too.
        time.sleep(1.2)
        a.send_signal(signal.SIGTERM)
        app.expect("STEPDOWN", "x", token=lead.token)
        app.call_ok("ACK x %d" % lead.token)
        app.expect("RELEASED", "x", token=lead.token, outcome="released")
        self.assertEqual(a.wait(20), 0)
        self.assertIsNone(self.backend.value(KEY))

    def test_wrong_certificates_never_lead_and_say_why(self):
        wrong = {
            # etcd's certificate is not signed by the CA we trust.
            "pod-wrong-ca": (self.tls_config("other_ca", "client", "client_key"),
                             r"(?i)certificate", "server certificate not trusted"),
            # Our client certificate is from a CA etcd does not trust.
            "pod-other-client": (self.tls_config("ca", "other_client", "other_client_key"),
                                 r"(?i)client certificate", "client certificate refused"),
            # No client certificate at all, while etcd requires one.
            "pod-no-client": (self.tls_config("ca"),
                              r"(?i)certificate", "no client certificate"),
        }
        agents = {name: self.start_etcd_agent(name, cfg) for name, (cfg, _, _) in wrong.items()}
        apps = {}
        for name, a in agents.items():
            apps[name] = self.connect(a, label="app@" + name)
            apps[name].call_ok("CAMPAIGN x")
        time.sleep(2.0)
        for name, a in agents.items():
            for e in apps[name].events_for(0.05):
                self.assertEqual(e.raw, "FOLLOWER x holder=-", "%s: %r" % (name, e.raw))
            self.assertNotEqual(str(status_locks(apps[name].status())["x"]["state"]).lower(),
                                "leader")
            _, pattern, what = wrong[name]
            self.assertLogged(a, pattern, what)
            self.assertLogged(a, re.escape(self.etcd.url), "the endpoint")
            self.assertTrue(a.alive())
        self.assertIsNone(self.backend.value(KEY), "nobody may have acquired the key")


# ---------------------------------------------------------------------------------------------
# Username and password


class EtcdAuthTest(EtcdTestCase):
    PASSWORD = "s3cret-Pw-7c1e"

    def setUp(self):
        super().setUp()
        self.etcd = self.start_etcd()
        self.etcd.enable_auth(self.PASSWORD)
        self.backend = EtcdBackend(self.etcd)

    def auth_config(self, password):
        cfg = self.backend.config(timeout="1s")
        cfg["username"] = "root"
        cfg["password_file"] = self.write_secret("pw-%s" % password[:6], password)
        return cfg

    def test_right_password_leads_and_never_appears_in_the_logs(self):
        a = self.start_etcd_agent("pod-a", self.auth_config(self.PASSWORD))
        app, lead = self.leader_app(a)
        self.assertHeld(self.backend, KEY, "pod-a", lead.token)
        time.sleep(1.2)  # renewals, authenticated
        a.send_signal(signal.SIGTERM)
        app.expect("STEPDOWN", "x", token=lead.token)
        app.call_ok("ACK x %d" % lead.token)
        app.expect("RELEASED", "x", token=lead.token, outcome="released")
        self.assertEqual(a.wait(20), 0)
        self.assertIsNone(self.backend.value(KEY))
        self.assertNotIn(self.PASSWORD, a.logs())

    def test_wrong_password_never_leads_and_says_why(self):
        wrong = "not-the-" + self.PASSWORD
        a = self.start_etcd_agent("pod-a", self.auth_config(wrong))
        self.assertNeverLeads(a)
        self.assertLogged(a, r"(?i)authenticat\w* .*root.*failed|authentication failed",
                          "authentication failed")
        self.assertIsNone(self.backend.value(KEY))
        self.assertNotIn(wrong, a.logs())
        self.assertNotIn(self.PASSWORD, a.logs())
        self.assertTrue(a.alive())


# ---------------------------------------------------------------------------------------------
# TTLs and keys changed behind the agent's back


class EtcdLeaseTest(EtcdTestCase):
    def test_check_config_warns_about_a_ttl_etcd_will_not_grant_but_exits_0(self):
        backend = {"name": "main", "type": "etcd", "endpoints": ["http://127.0.0.1:1"]}
        a = self.make_agent("pod-a", None, backends=[backend], locks=[lock_config("x", ttl="1s")])
        r = self.cli("check-config", "-c", a.config_path)
        self.assertEqual(r.rc, 0, r)
        self.assertRegex(r.output, r"(?i)warn")
        self.assertRegex(r.output, r"locks\[0\]\.ttl")
        self.assertRegex(r.output, re.escape(a.config_path) + r":\d+:\d+:")
        ok = self.make_agent("pod-b", None, backends=[backend],
                             locks=[lock_config("x", ttl="3s")])
        r = self.cli("check-config", "-c", ok.config_path)
        self.assertEqual(r.rc, 0, r)
        self.assertNotRegex(r.output, r"(?i)warn")

    def test_a_longer_granted_ttl_is_what_the_agent_reports(self):
        # etcd with its default timings grants no lease under 2s.
        etcd = self.start_etcd(fast=False)
        backend = EtcdBackend(etcd)
        a = self.start_etcd_agent("pod-a", backend.config(), ttl="1s")
        app, lead = self.leader_app(a)
        lease = etcd.lease_of(KEY)
        granted = int(etcd.call("/v3/lease/timetolive", {"ID": str(lease)})["grantedTTL"])
        self.assertEqual(granted, 2)
        self.assertGreater(lead.int("ttl_ms"), 1000, "the agent should use the granted TTL")
        self.assertLessEqual(lead.int("ttl_ms"), granted * 1000)
        # It keeps the tenure past two of the TTLs it asked for.
        app.assert_no_event(2.2)
        self.assertHeld(backend, KEY, "pod-a", lead.token)
        x = status_locks(app.status())["x"]
        self.assertLessEqual(int(x["ttl_ms"]), granted * 1000)
        self.assertGreater(int(x["ttl_ms"]), 0)

    def test_plain_put_over_the_key_is_taken_and_its_deletion_is_heard_at_once(self):
        etcd = self.start_etcd()
        backend = EtcdBackend(etcd)
        a = self.start_etcd_agent("pod-a", backend.config(), retry_interval="10s")
        app, lead = self.leader_app(a)
        # Someone overwrites our candidate key with a plain put (no lease): not our tenure
        # any more, and it stands first in the queue under its new holder.
        etcd.put(etcd.kv(KEY)["name"], "intruder")
        lost = app.expect("LOST", "x", token=lead.token, reason="taken", timeout=5)
        app.await_follower("x", "intruder")
        # The key has no lease, so it stays until deleted; the watch hears the deletion at
        # once (retry_interval is 10s). A deletion is no release (no marker names it,
        # docs/etcd.md): the agent queues again and waits one ttl (3s), and no longer.
        time.sleep(0.3)
        t_del = time.monotonic()
        etcd.delete(KEY)
        nobody, _ = app.await_follower("x", "-", timeout=3)
        lead2, _ = app.await_event("LEADER", "x", allow=("FOLLOWER",), timeout=9)
        print("\n  plain put, then deleted: FOLLOWER holder=- %.0f ms and LEADER %.0f ms after "
              "the delete (ttl 3s)" % ((nobody.t - t_del) * 1000, (lead2.t - t_del) * 1000))
        self.assertLess(nobody.t - t_del, 2.0, "the deletion was not heard through the watch")
        self.assertGreaterEqual(lead2.t - t_del, 3.0, "a deletion is not a release")
        self.assertLess(lead2.t - t_del, 5.0, "the wait did not end at one ttl")
        self.assertGreater(lead2.token, lead.token)
        self.assertHeld(backend, KEY, "pod-a", lead2.token)
        self.assertGreater(lost.t, lead.t)

    def test_followers_hold_one_lease_each_and_retrying_writes_nothing(self):
        """Each agent keeps one lease (shared by its keys) and one candidate key per lock:
        followers retrying every retry_interval grant nothing and write nothing."""
        etcd = self.start_etcd()
        backend = EtcdBackend(etcd)
        locks = dict(ttl="3s", retry_interval="200ms")
        a = self.start_etcd_agent("pod-a", backend.config(), **locks)
        app, lead = self.leader_app(a)
        followers = [self.start_etcd_agent("pod-%s" % n, backend.config(), **locks)
                     for n in ("b", "c")]
        for f in followers:
            c = self.connect(f, label="app@" + f.identity)
            c.call_ok("CAMPAIGN x")
            c.await_follower("x", "pod-a")
        leases = sorted(etcd.leases())
        self.assertEqual(len(leases), 3, "one lease per agent")
        self.assertEqual([_unb64(c["value"]) for c in etcd.candidates(KEY)],
                         ["pod-a", "pod-b", "pod-c"], "queued in the order they came")
        mark = etcd.revision()
        time.sleep(2.5)
        self.assertEqual(sorted(etcd.leases()), leases)
        # The harness's probe of the revision writes nothing either.
        self.assertEqual(etcd.revision(), mark, "followers retrying wrote to etcd")
        self.assertHeld(backend, KEY, "pod-a", lead.token)

    def test_tokens_increase_after_etcd_lost_its_data(self):
        """A member that lost its data directory starts a new cluster whose revisions start
        again at 1. Tokens are "<key>:fence" + create_revision, and the new cluster has no
        fence key: the next acquire seeds it from the wall clock in microseconds, far above
        every token before. The agent, which saw a higher revision, also holds off one ttl."""
        etcd = self.start_etcd()
        for i in range(5):
            etcd.put("unrelated", str(i))  # history: revisions move on
        a = self.start_etcd_agent("pod-a", EtcdBackend(etcd).config())
        app, lead = self.leader_app(a)
        etcd.restart(wipe=True)
        wiped = time.monotonic()
        lost, _ = app.await_event("LOST", "x", allow=("RENEWED",), timeout=10)
        lead2, _ = app.await_event("LEADER", "x", allow=("FOLLOWER",), timeout=20)
        led = time.monotonic()
        print("\n  tokens %d -> %d; LOST %s, LEADER again %.0fms after the wipe"
              % (lead.token, lead2.token, lost.raw, (led - wiped) * 1000))
        self.assertGreater(lead2.token, lead.token,
                           "token %d after etcd lost its data, %d before" % (lead2.token,
                                                                          lead.token))
        self.assertHeld(EtcdBackend(etcd), KEY, "pod-a", lead2.token)
        # The hold-off: not before one ttl (3s) after the agent saw the revision go back.
        self.assertGreaterEqual(led - wiped, 3.0)
        self.assertTrue(any("revision went back" in p for p in self.problems_logged(a)),
                        self.problems_logged(a))


if __name__ == "__main__":
    unittest.main(verbosity=2)
