"""Redis behind Sentinel (docs/safety.md "Redis Sentinel"), with real processes: one master, two
replicas and three redis-sentinels on loopback, and three agents configured with `sentinels:`
and `master_name:` only.

1. The master is SIGKILLed while the replica that takes over lags: it stopped receiving the
   replication stream (through a proxy that drops it) before the last handoff, so it lacks the
   last tenure's key and its fence counter is older than the last token. The other replica
   cannot be promoted (replica-priority 0). Checked: no two apps lead at any time, every
   agent follows the new master, the restart hold-off applies there (the first new LEADER
   comes at least one ttl after its agent reached the new master), and tokens keep increasing
   although the promoted replica's counter went back.
2. A planned failover (SENTINEL FAILOVER) while a leader holds the lock: the old master stays
   up, still a master until Sentinel demotes it, and takes the old leader's renewals until
   that agent hears +switch-master. Set up as docs/safety.md recommends (min-replicas-to-write
   1, a ttl of 6 s), and with the agents' own min_replicas_acked: 1 (every acquire and renewal
   WAITs for a replica): +switch-master moves every agent to the new master, no two apps lead
   at any time, and a later tenure's token is larger.

3. Sentinels that require a password of their own: an agent with `sentinel_password_file` leads;
   one with the wrong password, and one with none, say why in their logs and never lead.
4. Everything over TLS (`tls: true`): servers and sentinels on TLS ports, replicating and
   watching over TLS. The master is SIGKILLed: every agent follows the promoted replica on its
   TLS port, no two apps lead, and tokens keep increasing.

Each test prints what it measured: the failover as the sentinels did it, and how long after
the switch each agent was on the new master.
"""

import os
import time
import unittest

from harness import (DEFAULT_TIMEOUT, LKTestCase, SentinelSetup, fence_key, lock_config,
                     redis_sentinel_bin, wait_until)
from test_redis_loss import log_wall, logs_since
from tenures import TenureAssertions, Tenures

KEY = "leasekeeper/x"
FENCE = fence_key(KEY)
TTL = 2.0
TTL_S = "2s"


@unittest.skipUnless(redis_sentinel_bin(), "no redis-sentinel (apt-get install redis-sentinel)")
class RedisSentinelTest(TenureAssertions, LKTestCase):

    def start_agents(self, setup, n=3, ttl=TTL_S, **backend):
        locks = [lock_config("x", ttl=ttl, retry_interval="300ms")]
        agents = [self.start_agent("pod-%s" % chr(ord("a") + i), locks=locks,
                                   backends=[setup.config(**backend)]) for i in range(n)]
        tr = Tenures(self)
        for a in agents:
            tr.campaign(a)
        return agents, tr

    def on_master(self, agent, port, since_wall):
        """When the agent's command connection was up on 127.0.0.1:port after since_wall."""
        want = "reconnected to 127.0.0.1:%d" % port
        e = wait_until(lambda: [x for x in logs_since(agent, since_wall, want)
                                if x.get("msg") == want],
                       timeout=DEFAULT_TIMEOUT * 2, what="%s on the new master" % agent.identity)
        return log_wall(e[0])

    def moved_logged(self, agent, port, since_wall):
        lines = [e for e in agent.log_entries() if log_wall(e) >= since_wall - 0.0015 and
                 "master mymaster moved from" in str(e.get("msg")) and
                 str(e.get("msg")).endswith("to 127.0.0.1:%d" % port)]
        return lines

    # -- 1. the master dies; a lagging replica takes over --------------------------------------

    def test_master_killed_lagging_replica_promoted_agents_follow_and_hold_off(self):
        setup = SentinelSetup(self, replica_args={0: ["--replica-priority", "0"]},
                              replica_via_proxy=[1]).start()
        master, stuck, lagging = setup.servers
        proxy = setup.proxies[1]
        agents, tr = self.start_agents(setup)
        app1, lead1 = tr.first_leader(timeout=TTL + DEFAULT_TIMEOUT)
        tr.wait(lambda: app1.of("RENEWED"), what="a renewal")
        wait_until(lambda: lagging.get(FENCE) == str(lead1.token),
                   what="the replica to have the first token")

        # From now on the replica that will take over hears nothing from the master.
        proxy.drop_replies = True
        t = time.monotonic()
        tr.close(app1)
        app2, lead2 = tr.first_leader(after=t)
        tr.campaign(app1.agent)
        tr.wait(lambda: app2.of("RENEWED", after=lead2.t), what="a renewal of the second tenure")
        self.assertGreater(lead2.token, lead1.token)
        self.assertEqual(master.get(FENCE), str(lead2.token))
        self.assertEqual(lagging.get(FENCE), str(lead1.token), "the replica did not lag")

        t_kill, wall_kill = time.monotonic(), time.time()
        master.kill()
        new = setup.wait_new_master(master.port)
        t_switch, wall_switch = time.monotonic(), time.time()
        self.assertIs(new, lagging, "the lagging replica should have been promoted")
        print("failover: sentinels named :%d the master %.2fs after the kill"
              % (new.port, t_switch - t_kill))
        # What the promoted replica knew: the first token only, and no key.
        self.assertIsNone(new.get(KEY))

        lost = tr.event(app2, "LOST", after=t_kill, timeout=TTL + DEFAULT_TIMEOUT)
        first, lead3 = tr.first_leader(after=t_kill, timeout=4 * TTL + DEFAULT_TIMEOUT * 2)
        tr.settle(0.5)

        follow = {}
        for a in agents:
            follow[a.identity] = self.on_master(a, new.port, wall_kill)
        print("agents on the new master %s after the sentinels named it (%s after the kill)"
              % (", ".join("%s %+.0f ms" % (k, (v - wall_switch) * 1000)
                           for k, v in sorted(follow.items())),
                 ", ".join("%.2fs" % (v - wall_kill) for _, v in sorted(follow.items()))))
        for a in agents:
            # Followed the sentinels (+switch-master or their answer), not the old address.
            self.assertTrue(self.moved_logged(a, new.port, wall_kill),
                            "%s never logged the master's move:\n%s" % (a.identity, a.tail()))
            self.assertLess(follow[a.identity] - wall_switch, 5.0,
                            "%s followed the new master late" % a.identity)
            holdoff = wait_until(lambda a=a: logs_since(a, wall_kill, "holding off"),
                                 what="%s to hold off" % a.identity)
            self.assertIn("run_id changed", holdoff[0]["reason"], holdoff[0])
            # STATUS names the master the agent uses now.
            backends = self.connect(a).status()["backends"]
            self.assertEqual([(b["name"], b["type"], b["server"]) for b in backends],
                             [("main", "redis", "127.0.0.1:%d" % new.port)], backends)

        reached = follow[first.agent.identity]
        print("old leader %s token %d LOST reason=%s; first LEADER on the new master: %s token "
              "%d, %.3fs after its agent reached it (ttl %.1fs); promoted replica's counter "
              "was %d"
              % (app2.name, lead2.token, lost["reason"], first.name, lead3.token,
                 lead3.wall - reached, TTL, lead1.token))
        self.assertGreaterEqual(lead3.wall - reached, TTL - 0.005,
                                "I10: a tenure on the new master within one ttl of reaching "
                                "it:%s" % tr.story())
        # counter + 1 on the lagging replica would have been lead1.token + 1 <= lead2.token.
        self.assertGreater(lead3.token, lead2.token)
        self.assertIncreasing(tr.tokens())
        self.assertNoOverlap(tr, "master killed, lagging replica promoted")

    # -- 2. a planned failover -----------------------------------------------------------------

    def test_planned_failover_moves_every_agent_without_two_leaders(self):
        # The old master stops taking writes once Sentinel has moved its last replica away.
        setup = SentinelSetup(self, server_args=["--min-replicas-to-write", "1",
                                                 "--min-replicas-max-lag", "10"]).start()
        old = setup.master()
        ttl = 6.0
        agents, tr = self.start_agents(setup, ttl="6s", min_replicas_acked=1)
        app1, lead1 = tr.first_leader(timeout=ttl + DEFAULT_TIMEOUT)
        tr.wait(lambda: app1.of("RENEWED"), what="a renewal")
        # Both replicas have the tenure (a planned failover waits for the one it promotes).
        for r in setup.servers[1:]:
            wait_until(lambda r=r: r.get(KEY) == app1.agent.value(lead1.token),
                       what="replica :%d to have the tenure" % r.port)

        t0, wall0 = time.monotonic(), time.time()
        self.assertEqual(setup.sentinels[0].call("SENTINEL", "FAILOVER", "mymaster"), "OK")
        new = setup.wait_new_master(old.port)
        t_switch, wall_switch = time.monotonic(), time.time()
        follow = {a.identity: self.on_master(a, new.port, wall0) for a in agents}
        print("planned failover: sentinels named :%d the master %.2fs after SENTINEL FAILOVER; "
              "agents on it %s after that"
              % (new.port, t_switch - t0,
                 ", ".join("%s %+.0f ms" % (k, (v - wall_switch) * 1000)
                           for k, v in sorted(follow.items()))))
        for a in agents:
            self.assertTrue(self.moved_logged(a, new.port, wall0),
                            "%s never logged the master's move:\n%s" % (a.identity, a.tail()))
            self.assertLess(follow[a.identity] - wall_switch, 5.0)
        # The old master is a replica now: nobody's commands go there any more.
        # (Sentinel demotes it when it next looks at it: its INFO period is 10 s.)
        wait_until(lambda: old.info("replication").get("role") == "slave",
                   timeout=DEFAULT_TIMEOUT * 3, what="the old master to be a replica")

        # The leader keeps its tenure if the new master still has its key when the leader
        # re-proves it there, or loses it; either way, a later tenure has a larger token.
        lost = app1.of("LOST", after=t0)
        if not lost:
            tr.settle(1.0)
            lost = app1.of("LOST", after=t0)
        t = time.monotonic()
        if not lost:
            tr.close(app1)
        _, lead2 = tr.first_leader(after=t0 + 0.001, timeout=2 * ttl + DEFAULT_TIMEOUT)
        tr.settle(0.3)
        print("tenure %d %s; next tenure %d, %.2fs after SENTINEL FAILOVER"
              % (lead1.token, "ended with LOST reason=%s" % lost[0]["reason"] if lost else
                 "survived the failover (then its app left)", lead2.token, lead2.t - t0))
        self.assertGreater(lead2.token, lead1.token)
        self.assertEqual(new.get(KEY), tr.leaders(after=t0 + 0.001)[0][0].agent.value(
            lead2.token))
        self.assertIncreasing(tr.tokens())
        self.assertNoOverlap(tr, "planned failover")
        unproven = [e["msg"] for a in agents for e in a.log_entries()
                    if "not proven" in str(e.get("msg")) or "not proven" in str(e.get("err"))]
        print("renewals or acquires the replicas did not acknowledge: %d" % len(unproven))

    # -- 3. sentinels with a password ----------------------------------------------------------

    def test_sentinels_with_a_password(self):
        setup = SentinelSetup(self, sentinel_password="sentinel-pw-1").start()
        files = {}
        for name, pw in (("good", "sentinel-pw-1"), ("bad", "not-it")):
            files[name] = os.path.join(self.tmp, "sentinel-" + name)
            with open(files[name], "w") as f:
                f.write(pw + "\n")
        locks = [lock_config("x", ttl=TTL_S, retry_interval="300ms")]
        good = self.start_agent("pod-a", locks=locks, backends=[
            setup.config(sentinel_password_file=files["good"])])
        bad = self.start_agent("pod-b", locks=locks, backends=[
            setup.config(sentinel_password_file=files["bad"])])
        none = self.start_agent("pod-c", locks=locks, backends=[setup.config()])
        tr = Tenures(self)
        apps = [tr.campaign(a) for a in (good, bad, none)]
        first, lead = tr.first_leader(timeout=TTL + DEFAULT_TIMEOUT)
        self.assertIs(first, apps[0], tr.story())
        why = {}
        for a, want in ((bad, "sentinel connection to 127.0.0.1:"),
                        (none, "sentinel connection to 127.0.0.1:")):
            lines = wait_until(lambda a=a, want=want: [
                e for e in a.log_entries() if str(e.get("msg")).startswith(want)],
                what="%s to log why it cannot ask the sentinels" % a.identity)
            why[a.identity] = lines[0]["msg"]
        print("pod-a leads with token %d; pod-b: %s; pod-c: %s"
              % (lead.token, why["pod-b"], why["pod-c"]))
        self.assertIn("authentication failed: WRONGPASS", why["pod-b"])
        self.assertIn("NOAUTH", why["pod-c"])
        self.assertNotIn("not-it", bad.logs())
        tr.settle(1.0)
        self.assertEqual([a.name for a in tr.apps[1:] if a.of("LEADER")], [])

    # -- 4. TLS --------------------------------------------------------------------------------

    def test_over_tls_master_killed_agents_follow_on_tls_ports(self):
        setup = SentinelSetup(self, tls=True).start()
        master = setup.servers[0]
        agents, tr = self.start_agents(setup)
        app1, lead1 = tr.first_leader(timeout=TTL + DEFAULT_TIMEOUT)
        tr.wait(lambda: app1.of("RENEWED"), what="a renewal")
        laddrs = sorted({ln.split(" laddr=")[1].split()[0] for ln in
                         master.call("CLIENT", "LIST").splitlines()
                         if " laddr=" in ln and "cmd=client|list" not in ln and
                         "flags=S" not in ln and "flags=M" not in ln})
        print("clients of the master on %s (tls-port %d, plain %d)"
              % (", ".join(laddrs), master.tls_port, master.port))
        self.assertEqual(laddrs, ["127.0.0.1:%d" % master.tls_port], "a client not on TLS")

        t_kill, wall_kill = time.monotonic(), time.time()
        master.kill()
        new = setup.wait_new_master(master.tls_port)
        print("failover over TLS: sentinels named :%d (a TLS port) %.2fs after the kill"
              % (setup.master_port(), time.monotonic() - t_kill))
        first, lead2 = tr.first_leader(after=t_kill, timeout=4 * TTL + DEFAULT_TIMEOUT * 2)
        tr.settle(0.5)
        for a in agents:
            self.on_master(a, new.tls_port, wall_kill)
            backends = self.connect(a).status()["backends"]
            self.assertEqual([b["server"] for b in backends], ["127.0.0.1:%d" % new.tls_port])
            # The killed master's connections end with "TLS: unexpected eof while reading";
            # no certificate was ever refused.
            self.assertFalse([e for e in a.log_entries() if "certificate" in str(e.get("msg"))],
                             "%s had certificate errors:\n%s" % (a.identity, a.tail()))
        print("first LEADER after the failover: %s token %d" % (first.name, lead2.token))
        self.assertGreater(lead2.token, lead1.token)
        self.assertIncreasing(tr.tokens())
        self.assertNoOverlap(tr, "over TLS, master killed")


if __name__ == "__main__":
    unittest.main(verbosity=2)
