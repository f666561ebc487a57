"""I5: a new tenure's token is greater than every earlier one, also after Redis lost its data
(the fence counter is then seeded from Redis's TIME in microseconds; SPEC section 0)."""

import time
import unittest

from harness import LKTestCase, fence_key, lock_config

KEY = "leasekeeper/x"
FENCE = fence_key(KEY)


def redis_time_us(redis):
    sec, usec = redis.call("TIME")
    return int(sec) * 1000000 + int(usec)


class TokenMonotonicTest(LKTestCase):
    def setUp(self):
        super().setUp()
        self.redis = self.start_redis()
        self.locks = [lock_config("x", ttl="3s", retry_interval="300ms")]

    def tenure(self, agent):
        """Lead once (a fresh app), check Redis, then disconnect so the lock is released."""
        app, lead = self.leader_app(agent)
        self.assertEqual(self.redis.get(KEY), agent.value(lead.token))
        self.assertEqual(int(self.redis.get(FENCE)), lead.token)
        app.close()
        self.wait_key_gone(self.redis, KEY, timeout=5)
        return lead.token

    def test_tokens_increase_across_a_redis_restart_that_lost_the_fence_counter(self):
        a = self.start_agent("pod-a", self.redis, locks=self.locks)
        t1 = self.tenure(a)
        self.redis.restart()
        self.assertIsNone(self.redis.get(FENCE), "the restart must have lost the counter")
        app, lead = self.leader_app(a)  # the agent reconnects by itself
        t2 = lead.token
        self.assertGreater(t2, t1)
        self.assertEqual(self.redis.get(KEY), "pod-a:%d" % t2)
        self.assertEqual(int(self.redis.get(FENCE)), t2)

    def test_missing_fence_counter_is_seeded_from_redis_time(self):
        before = redis_time_us(self.redis)
        a = self.start_agent("pod-a", self.redis, locks=self.locks)
        app, lead = self.leader_app(a)
        after = redis_time_us(self.redis)
        self.assertGreaterEqual(lead.token, before)
        self.assertLessEqual(lead.token, after + 1000000)

    def test_successive_tenures_get_increasing_tokens(self):
        a = self.start_agent("pod-a", self.redis, locks=self.locks)
        tokens = [self.tenure(a) for _ in range(3)]
        self.assertEqual(tokens, sorted(set(tokens)), tokens)

    def test_tokens_increase_across_agents_and_a_deleted_fence_counter(self):
        a = self.start_agent("pod-a", self.redis, locks=self.locks)
        b = self.start_agent("pod-b", self.redis, locks=self.locks)
        t1 = self.tenure(a)
        t2 = self.tenure(b)
        self.assertGreater(t2, t1)
        self.redis.call("DEL", FENCE)
        time.sleep(0.01)
        t3 = self.tenure(a)
        self.assertGreater(t3, t2)

    def test_tokens_increase_after_restart_with_a_second_agent(self):
        a = self.start_agent("pod-a", self.redis, locks=self.locks)
        b = self.start_agent("pod-b", self.redis, locks=self.locks)
        t1 = self.tenure(a)
        self.redis.restart()
        app, lead = self.leader_app(b)
        self.assertGreater(lead.token, t1)


if __name__ == "__main__":
    unittest.main(verbosity=2)
