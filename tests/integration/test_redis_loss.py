"""A Redis that loses tenures it granted (README "When a backend restarts, rolls back or is
wiped"; I5 monotonic tokens, I10 restart hold-off, I8 the apps' own deadlines), with real
redis-server processes:

1. restarted empty during a tenure (SIGTERM, and SIGKILL), three replicas; and an agent that
   first meets a Redis that restarted moments before it started: no two leaders (the apps'
   leader intervals never overlap), the old leader hears LOST within 1 s of its reconnect, the
   first new LEADER comes no earlier than one ttl after the new instance started;
2. restarted from an older RDB snapshot (three handoffs later): every later token is greater
   than every earlier one, and the hold-off applies;
3. a lagging replica promoted (REPLICAOF NO ONE) and the agents pointed at it through a
   proxy: the same, and no overlap;
4. frozen (SIGSTOP) past the backend timeout while a follower's acquire was on its way, then
   resumed: that acquire runs late and leaves the follower's own value, which the follower
   deletes and then leads, without ever telling its app `FOLLOWER holder=<itself>` and without
   waiting a ttl for its own key; and frozen past the leader's renew deadline but not its
   ttl: its renewal runs late and keeps the ended tenure's key, which its agent neither shows
   as held by itself nor waits a ttl for.

A leader interval, as an app sees it: from LEADER's arrival until the first of LOST,
STEPDOWN, EOF (or the app's own disconnect) and its deadline (until_mono_ms, moved only by a
RENEWED that arrived before it passed). Lines are stamped with time.monotonic(), which is
CLOCK_MONOTONIC, the clock of until_mono_ms. Each test prints what it measured.
"""

import datetime
import os
import shutil
import time
import unittest

from harness import (DEFAULT_TIMEOUT, LKTestCase, fence_key, lock_config,
                     wait_until)
from tenures import TenureAssertions, Tenures

KEY = "leasekeeper/x"
FENCE = fence_key(KEY)
TTL = 3.0
TTL_S = "3s"
# A leader re-proves its tenure with the first request on a new connection: its LOST comes a
# round trip after the reconnect. The bound the issue asks for is 1 s; this one is tighter
# because the next scheduled renewal (every ttl/3 = 1 s) would also come within 1 s of a
# reconnect, so only a tighter bound tells "at once" from "at the next renewal".
AT_ONCE = 0.3


def log_wall(entry):
    """A log line's ts (UTC, ms) as a time.time() value."""
    return datetime.datetime.strptime(entry["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc).timestamp()


def logs_since(agent, wall, prefix):
    """The agent's log entries whose msg starts with prefix, logged at or after wall."""
    return [e for e in agent.log_entries()
            if str(e.get("msg", "")).startswith(prefix) and log_wall(e) >= wall - 0.0015]


def start_again(redis):
    """Start a stopped RedisServer on its port again (what restart() does after its stop)."""
    fixed, redis.fixed_port = redis.fixed_port, True
    try:
        redis.start()
    finally:
        redis.fixed_port = fixed


class RedisLossTest(TenureAssertions, LKTestCase):

    def lock(self, **kw):
        kw.setdefault("ttl", TTL_S)
        kw.setdefault("retry_interval", "300ms")
        return [lock_config("x", **kw)]

    def replicas(self, address, n=3, **lockkw):
        agents = [self.start_agent("pod-%s" % chr(ord("a") + i), address,
                                   locks=self.lock(**lockkw)) for i in range(n)]
        tr = Tenures(self)
        apps = [tr.campaign(a) for a in agents]
        return agents, apps, tr

    def reconnect_wall(self, agent, since_wall):
        """When the agent's command connection was up again after since_wall (its log)."""
        e = wait_until(lambda: logs_since(agent, since_wall, "reconnected to"),
                       what="%s to log its reconnect" % agent.identity)
        return log_wall(e[0])

    def check_holdoff_logged(self, agent, since_wall, reason):
        lines = wait_until(lambda: logs_since(agent, since_wall, "holding off"),
                           what="%s to log its hold-off" % agent.identity)
        self.assertIn(reason, lines[0]["reason"], lines[0])
        return lines[0]

    # -- 1. restarted empty during a tenure ---------------------------------------------------

    def restart_during_tenure(self, crash):
        redis = self.start_redis()
        agents, apps, tr = self.replicas(redis)
        leader_app, lead = tr.first_leader(timeout=TTL + DEFAULT_TIMEOUT)
        by_agent = {a.agent: a for a in apps}
        # Mid-tenure: after a renewal (the apps' deadlines move), so the tenure has a past.
        tr.wait(lambda: leader_app.of("RENEWED"), what="a renewal")
        t_loss, wall_loss = time.monotonic(), time.time()
        if crash:
            redis.kill()
            tr.settle(0.3)      # the agents find nobody listening for a while
        redis.restart()         # SIGTERM + start on the same port; empty either way
        spawn = redis.spawn_t
        self.assertIsNone(redis.get(KEY), "the new instance must have lost the key")

        lost = tr.event(leader_app, "LOST", after=t_loss, timeout=TTL + DEFAULT_TIMEOUT)
        first, new_lead = tr.first_leader(after=t_loss, timeout=2 * TTL + DEFAULT_TIMEOUT)
        tr.settle(0.5)
        reconnect = self.reconnect_wall(leader_app.agent, wall_loss)
        lost_after_reconnect = lost.wall - reconnect
        after_start = new_lead.t - spawn
        what = "redis %s" % ("SIGKILLed and restarted" if crash else "restarted")
        print("%s: old leader %s token %d; LOST reason=%s %.0f ms after its reconnect "
              "(%.0f ms after the loss); first new LEADER %s token %d %.3fs after the new "
              "instance started (ttl %.1fs)"
              % (what, leader_app.name, lead.token, lost["reason"],
                 lost_after_reconnect * 1000, (lost.t - t_loss) * 1000, first.name,
                 new_lead.token, after_start, TTL))

        self.assertEqual(lost.token, lead.token)
        # Re-proven on the new connection, not left to the renew deadline.
        self.assertEqual(lost["reason"], "expired", lost.raw)
        self.assertLess(lost_after_reconnect, AT_ONCE, "the leader did not re-prove its tenure "
                        "at once on the new connection")
        self.assertGreaterEqual(lost_after_reconnect, -0.005, "LOST before the reconnect?")
        self.assertGreaterEqual(after_start, TTL, "I10: a new tenure before the new instance "
                                "had been up one ttl:%s" % tr.story())
        self.assertLess(after_start, TTL + 5.0, "the hold-off never ended")
        self.assertGreater(new_lead.token, lead.token)
        self.assertNoOverlap(tr, what)
        for a in agents:
            self.check_holdoff_logged(a, wall_loss, "run_id changed")
        for app in by_agent.values():
            self.assertEqual([e.raw for e in app.events if e.kind == "LEADER" and e.t >= t_loss
                              and e is not new_lead], [], "a second LEADER after the loss")

    def test_redis_restarted_empty_during_a_tenure(self):
        self.restart_during_tenure(crash=False)

    def test_redis_sigkilled_and_restarted_during_a_tenure(self):
        self.restart_during_tenure(crash=True)

    def test_agent_first_meets_a_redis_that_restarted_moments_before(self):
        redis = self.start_redis()
        old = self.start_agent("pod-a", redis, locks=self.lock())
        tr = Tenures(self)
        old_app = tr.campaign(old)
        _, lead = tr.first_leader()
        t_loss, wall_loss = time.monotonic(), time.time()
        redis.stop()
        # Start it late in a second of the wall clock: Redis's uptime_in_seconds (now and the
        # start time in whole seconds, subtracted) then says 1 a few ms after the start.
        wait_until(lambda: 0.975 <= time.time() % 1 <= 0.985, interval=0.001,
                   what="late in a second")
        start_again(redis)
        spawn = redis.spawn_t
        # pod-b never saw the old instance; all it can know is that this one is young.
        new = self.start_agent("pod-b", redis, locks=self.lock())
        new_app = tr.campaign(new)
        started = time.monotonic()
        said = redis.uptime()
        lost = tr.event(old_app, "LOST", after=t_loss)
        # The old leader's app goes away, so that pod-b is the one to lead next (pod-a holds
        # off as long, but would lead again as often as not).
        tr.close(old_app)
        first, new_lead = tr.first_leader(after=t_loss, timeout=2 * TTL + DEFAULT_TIMEOUT)
        tr.settle(0.3)
        self.assertIs(first, new_app, tr.story())
        b_first = new_lead
        print("agent started %.3fs after the restart (Redis said uptime %ds then); old leader "
              "LOST reason=%s; first new LEADER %s %.3fs after the new instance started; "
              "pod-b's first LEADER %.3fs after it (ttl %.1fs)"
              % (started - spawn, said, lost["reason"], first.name, new_lead.t - spawn,
                 b_first.t - spawn, TTL))
        self.assertLess(started - spawn, TTL / 2, "the agent must start on a young Redis")
        self.assertGreaterEqual(new_lead.t - spawn, TTL, tr.story())
        self.assertGreaterEqual(b_first.t - spawn, TTL, tr.story())
        line = self.check_holdoff_logged(new, wall_loss, "was up only")
        print("pod-b held off %d ms: %s" % (line["holdoff_ms"], line["reason"]))
        self.assertGreater(new_lead.token, lead.token)
        self.assertNoOverlap(tr, "agent started on a young Redis")

    # -- 2. an older RDB snapshot -------------------------------------------------------------

    def handoff(self, tr, leader):
        """The leader's app leaves; the other agent leads; a new app campaigns in its place.
        Returns (new leader app, its LEADER event)."""
        t = time.monotonic()
        tr.close(leader)
        nxt, ev = tr.first_leader(after=t)
        self.assertIsNot(nxt.agent, leader.agent)
        tr.campaign(leader.agent)
        return nxt, ev

    def three_handoffs(self, tr, leader, tokens):
        """Three handoffs (their tokens appended to tokens), then every app but the leader's
        follows. Returns the leader's app."""
        for _ in range(3):
            leader, ev = self.handoff(tr, leader)
            tokens.append(ev.token)
        tr.wait(lambda: all(a.of("FOLLOWER") for a in tr.apps if a.closed_t is None
                            and a is not leader), what="followers")
        return leader

    def check_gone_back(self, tr, agents, leader, earlier, t_loss, wall_loss, since, what,
                        since_what):
        """After the server went back in time under leader (at t_loss): the leader hears LOST
        (expired or taken) at once on its new connection; the next tenure comes a ttl after
        `since` (the hold-off, which every agent logs) and, with one more handoff, every token
        is greater than every earlier one; no two apps led at once."""
        lost = tr.event(leader, "LOST", after=t_loss, timeout=TTL + DEFAULT_TIMEOUT)
        first, new_lead = tr.first_leader(after=t_loss, timeout=2 * TTL + DEFAULT_TIMEOUT)
        later = [new_lead.token]
        # One more handoff on the new instance.
        first, ev = self.handoff(tr, first)
        later.append(ev.token)
        tr.settle(0.3)
        reconnect = self.reconnect_wall(leader.agent, wall_loss)
        print("%s: old leader LOST reason=%s %.0f ms after its reconnect; first LEADER %.3fs "
              "after %s (ttl %.1fs); tokens after: %s"
              % (what, lost["reason"], (lost.wall - reconnect) * 1000, new_lead.t - since,
                 since_what, TTL, later))
        self.assertIn(lost["reason"], ("expired", "taken"), lost.raw)
        self.assertLess(lost.wall - reconnect, AT_ONCE, "the leader did not re-prove its tenure "
                        "at once on the new connection")
        self.assertGreater(min(later), max(earlier), "I5: a token reissued after %s" % what)
        self.assertIncreasing(later)
        self.assertGreaterEqual(new_lead.t - since, TTL, "I10 hold-off:%s" % tr.story())
        for a in agents:
            self.check_holdoff_logged(a, wall_loss, "run_id changed")
        self.assertNoOverlap(tr, what)
        self.assertIncreasing(tr.tokens(), tr.intervals())

    def test_redis_restored_from_an_older_rdb_snapshot(self):
        redis = self.start_redis(extra_args=("--save", "3600 1", "--dbfilename", "dump.rdb"))
        agents, apps, tr = self.replicas(redis, n=2)
        leader, lead = tr.first_leader()
        earlier = [lead.token]
        # The backup: taken while the first tenure is held.
        self.assertEqual(redis.call("SAVE"), "OK")
        backup = os.path.join(self.tmp, "backup.rdb")
        shutil.copy(os.path.join(redis.dir, "dump.rdb"), backup)
        leader = self.three_handoffs(tr, leader, earlier)

        # Restore the backup: stop, put the old dump.rdb in place, start on the same port.
        t_loss, wall_loss = time.monotonic(), time.time()
        redis.stop()
        shutil.copy(backup, os.path.join(redis.dir, "dump.rdb"))
        start_again(redis)
        spawn = redis.spawn_t
        restored = int(redis.get(FENCE))
        print("tokens before the restore: %s; fence counter in the restored snapshot: %d"
              % (earlier, restored))
        self.assertEqual(restored, earlier[0], "the snapshot must roll the counter back")
        self.check_gone_back(tr, agents, leader, earlier, t_loss, wall_loss, since=spawn,
                             what="RDB rollback", since_what="the restored instance started")

    # -- 3. a lagging replica promoted --------------------------------------------------------

    def test_lagging_replica_promoted(self):
        master = self.start_redis()
        link = self.start_proxy(master)          # the replication link, to make it lag
        replica = self.start_redis(extra_args=("--replicaof", "127.0.0.1", str(link.port)))
        wait_until(lambda: replica.info("replication").get("master_link_status") == "up",
                   what="the replica to sync")
        front = self.start_proxy(master)         # what the agents reach
        agents, apps, tr = self.replicas(front.address, n=2)
        leader, lead = tr.first_leader()
        earlier = [lead.token]
        wait_until(lambda: replica.get(FENCE) == str(lead.token), what="the replica to catch up")

        # The replica stops hearing from the master (its link stays up: it only lags).
        link.drop_replies = True
        leader = self.three_handoffs(tr, leader, earlier)
        lagging = int(replica.get(FENCE))
        print("tokens on the master: %s; fence counter on the replica: %d"
              % (earlier, lagging))
        self.assertLess(lagging, earlier[-1], "the replica must lag behind")

        # Failover: promote the replica, point the agents at it.
        self.assertEqual(replica.call("REPLICAOF", "NO", "ONE"), "OK")
        t_loss, wall_loss = time.monotonic(), time.time()
        front.set_upstream(replica.port, kill=True)
        # The replica has been up longer than the ttl: one ttl from when it was reached.
        self.check_gone_back(tr, agents, leader, earlier, t_loss, wall_loss, since=t_loss,
                             what="promoted replica", since_what="the failover (replica up "
                             "%ds)" % replica.uptime())

    # -- 4. frozen with a follower's acquire on its way ---------------------------------------

    def leader_and_follower(self, redis, retry_a, retry_b):
        """pod-a leads, pod-b (asking every retry_b) follows it. Returns (pod-a's agent,
        pod-b's, the Tenures, pod-a's app, pod-b's app, pod-a's LEADER)."""
        a = self.start_agent("pod-a", redis, locks=self.lock(retry_interval=retry_a))
        b = self.start_agent("pod-b", redis, locks=self.lock(retry_interval=retry_b))
        tr = Tenures(self)
        app_a = tr.campaign(a)
        _, lead = tr.first_leader()
        app_b = tr.campaign(b)
        tr.wait(lambda: [e for e in app_b.of("FOLLOWER") if e["holder"] == "pod-a"],
                what="pod-b to follow pod-a")
        return a, b, tr, app_a, app_b, lead

    def test_frozen_redis_resumed_with_a_follower_acquire_in_flight(self):
        redis = self.start_redis()
        mon = self.monitor(redis)
        a, b, tr, app_a, app_b, lead = self.leader_and_follower(redis, "1s", "200ms")
        # pod-b asks every 200ms; freeze Redis just after one of its acquires ran, so that the
        # next one goes out into the freeze.
        mark = mon.mark()
        mon.wait_for(lambda ln: ln.cmd == "EVALSHA" and "pod-b" in ln.args, since=mark,
                     what="an acquire by pod-b")
        t_stop, wall_stop = time.monotonic(), time.time()
        redis.sigstop()
        freeze = TTL + 1.0   # pod-a's key expires meanwhile (Redis counts wall time)
        tr.settle(freeze)
        t_cont, wall_cont = time.monotonic(), time.time()
        redis.sigcont()
        lead_b = tr.event(app_b, "LEADER", after=t_cont, timeout=2 * TTL + DEFAULT_TIMEOUT)
        tr.settle(0.5)

        orphan = wait_until(lambda: logs_since(b, wall_stop, "key %s holds our own" % KEY),
                            what="pod-b to find its own orphan")[0]
        orphan_token = int(orphan["msg"].split("unannounced tenure ")[1].split(" ")[0])
        reconnect = self.reconnect_wall(b, wall_cont)
        lost_a = app_a.of("LOST", after=t_stop)
        a_saw = [e.raw for e in app_a.events if e.kind == "FOLLOWER" and e.t >= t_stop]
        print("frozen %.1fs: pod-a LOST %s; pod-b's orphan token %d (its acquire ran after "
              "the resume); pod-b LEADER token %d %.0f ms after SIGCONT, %.0f ms after its "
              "reconnect (%.0f ms after SIGCONT); ttl %.1fs; pod-a's app meanwhile: %s"
              % (freeze, [e.raw for e in lost_a], orphan_token, lead_b.token,
                 (lead_b.t - t_cont) * 1000, (lead_b.wall - reconnect) * 1000,
                 (reconnect - wall_cont) * 1000, TTL, a_saw))
        self.assertEqual([e["reason"] for e in lost_a], ["renew_deadline"])
        own = [e.raw for e in app_b.events if e.kind == "FOLLOWER" and e["holder"] == "pod-b"]
        self.assertEqual(own, [], "pod-b told its app that pod-b holds the lock")
        self.assertGreater(lead_b.token, orphan_token)
        self.assertGreater(orphan_token, lead.token)
        # Its own key would have lived a ttl from the resume: pod-b did not wait for it.
        self.assertLess(lead_b.t - t_cont, TTL, "pod-b waited for its own orphan to expire")
        self.assertLess(lead_b.wall - reconnect, 0.5, "pod-b did not lead at once after its "
                        "reconnect:%s" % tr.story())
        self.assertEqual(app_a.of("LEADER", after=t_stop), [], tr.story())
        self.assertNoOverlap(tr, "frozen Redis")

    def test_frozen_redis_runs_the_lost_leaders_renewal_late(self):
        """Frozen past the leader's renew deadline, resumed within its ttl: the renewal that
        timed out runs at the resume and keeps the old tenure's key for another ttl. The old
        leader's agent knows that tenure is over (its app heard LOST): it neither tells its app
        `FOLLOWER holder=<itself>` nor makes everybody wait a ttl for that key."""
        redis = self.start_redis()
        a, b, tr, app_a, app_b, lead = self.leader_and_follower(redis, "500ms", "200ms")
        # Freeze just after a renewal: the next one (ttl/3 later) goes out into the freeze, the
        # renew deadline (2/3 ttl) passes during it, the key's ttl does not.
        renewed = tr.wait(lambda: app_a.of("RENEWED", after=time.monotonic() - 0.05),
                          what="a renewal")[0]
        t_stop, wall_stop = time.monotonic(), time.time()
        redis.sigstop()
        tr.settle(TTL * 5 / 6)
        t_cont = time.monotonic()
        redis.sigcont()
        first, new_lead = tr.first_leader(after=t_cont, timeout=2 * TTL + DEFAULT_TIMEOUT)
        tr.settle(0.5)
        lost = app_a.of("LOST", after=t_stop)
        kept = logs_since(a, wall_stop, "key %s still holds our ended tenure" % KEY)
        own = [e.raw for e in app_a.events if e.kind == "FOLLOWER" and e.t >= t_stop
               and e["holder"] == "pod-a"]
        print("frozen %.1fs from %.0f ms after pod-a's renewal: pod-a %s; its late renewal "
              "kept the key (%s); %s LEADER token %d %.0f ms after SIGCONT (the kept key would "
              "have lived until %.0f ms after it); pod-a's app after the LOST: %s"
              % (t_cont - t_stop, (t_stop - renewed.t) * 1000, [e.raw for e in lost],
                 kept[0]["msg"] if kept else "no reclaim logged", first.name, new_lead.token,
                 (new_lead.t - t_cont) * 1000, TTL * 1000,
                 [e.raw for e in app_a.events if e.kind == "FOLLOWER" and e.t >= t_stop]))
        self.assertEqual([e["reason"] for e in lost], ["renew_deadline"], tr.story())
        self.assertEqual(own, [], "pod-a told its app that pod-a holds the lock")
        self.assertTrue(kept, "the scenario did not happen: no late renewal kept the key")
        self.assertEqual(int(kept[0]["msg"].split("ended tenure ")[1].split(",")[0]),
                         lead.token)
        self.assertGreater(new_lead.token, lead.token)
        self.assertLess(new_lead.t - t_cont, TTL - 0.5, "everybody waited for the key that "
                        "pod-a's late renewal kept:%s" % tr.story())
        self.assertNoOverlap(tr, "late renewal")


if __name__ == "__main__":
    unittest.main(verbosity=2)
