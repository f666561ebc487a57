"""Redis with an ACL user and a database other than 0 (docs/configuration.md "Redis"), with a
real redis-server whose user `lk-agent` may run only what docs/configuration.md lists, on the
agent's keys and channels only:

1. two agents log in as that user, keep their keys in db 3, hand the lock over through the
   release notice (the channel permission works), and the server logs no ACL denial;
2. an agent with the wrong password never leads: it logs why (never the password), and the
   server's ACL LOG shows the failed logins.
"""

import os
import unittest

from harness import LKTestCase, acl_user_args, lock_config, wait_until

USER = "lk-agent"
PASSWORD = "agent-pw-7f3a"
# What docs/configuration.md says the agent's user needs, and nothing more.
COMMANDS = ("-@all +evalsha +eval +script|load +info +subscribe +unsubscribe +select "
            "+get +set +incr +time +pexpire +pttl +del +publish")
DB = 3


class RedisAclTest(LKTestCase):

    def acl_redis(self):
        return self.start_redis(extra_args=acl_user_args(
            USER, PASSWORD, keys="~leasekeeper/*", channels="&leasekeeper/*",
            commands=COMMANDS))

    def backend(self, redis, password):
        path = os.path.join(self.tmp, "pw-%d" % len(os.listdir(self.tmp)))
        with open(path, "w") as f:
            f.write(password + "\n")
        return [{"name": "main", "type": "redis", "address": redis.address, "username": USER,
                 "password_file": path, "db": DB}]

    def clients_as(self, redis, user):
        return [ln for ln in redis.call("CLIENT", "LIST").splitlines()
                if " user=%s " % user in ln]

    def test_acl_user_in_db_3_leads_and_hands_over_by_release_notice(self):
        redis = self.acl_redis()
        # retry_interval far above the handoff bound: only the release notice can be that fast.
        a, app_a, lead, app_b = self.lead_and_follow(self.backend(redis, PASSWORD), ttl="3s",
                                                     retry_interval="5s")

        keyspace = redis.info("keyspace")
        conns = self.clients_as(redis, USER)
        print("db %d keyspace %s; %d connections as %s"
              % (DB, keyspace, len(conns), USER))
        self.assertIn("db%d" % DB, keyspace)
        self.assertTrue(keyspace["db%d" % DB].startswith("keys=2,"), keyspace)
        self.assertNotIn("db0", keyspace)
        self.assertEqual(len(conns), 4, "two connections per agent as %s" % USER)
        self.assertEqual(redis.call("ACL", "LOG"), [], "the agents were denied something")

        ev, handoff = self.drain_handoff(a, app_a, lead, app_b)
        print("handoff through the release notice as %s: %.0f ms (retry_interval 5s)"
              % (USER, handoff * 1000))
        self.assertLess(handoff, 1.5)
        self.assertGreater(ev.token, lead.token)
        self.assertEqual(redis.call("ACL", "LOG"), [])

    def test_wrong_password_never_leads_and_says_why(self):
        redis = self.acl_redis()
        locks = [lock_config("x", ttl="3s", retry_interval="300ms")]
        a = self.start_agent("pod-a", locks=locks, backends=self.backend(redis, "wrong-pw"))
        app = self.connect(a)
        app.call_ok("CAMPAIGN x")
        lines = wait_until(lambda: [e for e in a.log_entries()
                                    if "authentication as %s failed: WRONGPASS" % USER
                                    in str(e.get("msg"))],
                           what="the agent to log the failed login")
        print("logged: %s" % lines[0]["msg"])
        evs = app.events_for(2.0)
        self.assertEqual([e.raw for e in evs if e.kind == "LEADER"], [])
        self.assertNotIn("wrong-pw", a.logs())
        self.assertEqual(self.clients_as(redis, USER), [])
        log = redis.call("ACL", "LOG")
        self.assertTrue(log, "the server saw no failed login")
        entry = dict(zip(log[0][0::2], log[0][1::2]))
        self.assertEqual((entry["reason"], entry["username"]), ("auth", USER), entry)


if __name__ == "__main__":
    unittest.main(verbosity=2)
