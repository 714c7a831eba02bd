"""A key changed on one replica takes effect on the others at once (pub/sub), even though
every replica serves verified keys from its cache."""

import time
import unittest

from lib import harness as h

BODY = {"model": "claude-sonnet-4-5", "max_tokens": 16,
        "messages": [{"role": "user", "content": "revocation"}]}
LIMIT_S = 1.0


class RevocationTest(h.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.redis = cls.start_redis()
        cls.mock = cls.start_mock()
        cls.a = cls.start_proxy(cls.mock, cls.redis, name="proxy-a")
        cls.b = cls.start_proxy(cls.mock, cls.redis, name="proxy-b")

    def status(self, replica, key):
        return h.request("POST", replica.url + "/v1/messages", headers={"x-api-key": key},
                         body=BODY, timeout=5).status

    def time_until(self, replica, key, want, what):
        """Poll until `replica` answers `want` for `key`; print and return the delay."""
        t0 = time.monotonic()
        h.wait_until(lambda: self.status(replica, key) == want, 5,
                     interval=0.005, message="%s to answer %d (%s)" % (replica.name, want, what))
        dt = time.monotonic() - t0
        print("    %s: %s took effect after %.1f ms" % (replica.name, what, dt * 1000))
        return dt

    def test_disable_enable_delete_reach_the_other_replica(self):
        st, doc = self.a.admin("POST", "/admin/keys", {"name": "revoke-me"})
        self.assertEqual(st, 200, doc)
        key = doc["api_key"]
        # Both replicas verify (and cache) it.
        self.assertEqual(self.status(self.a, key), 200)
        self.assertEqual(self.status(self.b, key), 200)
        self.assertEqual(self.status(self.b, key), 200)

        st, doc = self.a.admin("POST", "/admin/keys/%s/disable" % key)
        self.assertEqual((st, doc.get("status")), (200, "disabled"))
        self.assertLess(self.time_until(self.b, key, 403, "disable"), LIMIT_S)
        self.assertLess(self.time_until(self.a, key, 403, "disable"), LIMIT_S)
        # And it stays refused (no stale cache entry coming back).
        for _ in range(5):
            self.assertEqual(self.status(self.b, key), 403)
            self.assertEqual(self.status(self.a, key), 403)

        st, doc = self.b.admin("POST", "/admin/keys/%s/enable" % doc["id"])
        self.assertEqual((st, doc.get("status")), (200, "enabled"))
        self.assertLess(self.time_until(self.a, key, 200, "enable"), LIMIT_S)
        self.assertLess(self.time_until(self.b, key, 200, "enable"), LIMIT_S)

        st, doc = self.a.admin("DELETE", "/admin/keys/%s" % key)
        self.assertEqual((st, doc.get("status")), (200, "deleted"))
        self.assertLess(self.time_until(self.b, key, 401, "delete"), LIMIT_S)
        self.assertLess(self.time_until(self.a, key, 401, "delete"), LIMIT_S)
        for _ in range(5):
            self.assertEqual(self.status(self.b, key), 401)

    def test_key_created_on_one_replica_works_on_the_other_at_once(self):
        st, doc = self.a.admin("POST", "/admin/keys", {"name": "new-elsewhere"})
        self.assertEqual(st, 200)
        # An unknown key is not cached as unknown: B sees the new key on first use.
        self.assertEqual(self.status(self.b, doc["api_key"]), 200)

    def test_refused_key_is_accepted_once_it_exists(self):
        # A key B has refused as unknown is accepted as soon as it is imported elsewhere
        # (unknown keys must not be cached as unknown).
        key = "sk-revocation-imported-0123456789abcdef"
        self.assertEqual(self.status(self.b, key), 401)
        st, doc = self.a.admin("POST", "/admin/import",
                               {"keys": {key: {"name": "imported-later", "enabled": True}}})
        self.assertEqual((st, doc.get("imported")), (200, 1), doc)
        self.assertEqual(self.status(self.b, key), 200)


class MissedEventTest(h.TestCase):
    """Pub/sub drops what is published while a replica is disconnected: a replica that comes
    back must re-read what it cached. Replica B logs in to Redis as its own ACL user, so the
    test can shut B (and only B) out while A disables a key."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.redis = cls.start_redis()
        cls.admin_redis = cls.redis.client()
        cls.acl("on")
        cls.mock = cls.start_mock()
        cls.a = cls.start_proxy(cls.mock, cls.redis, name="proxy-a")
        cls.b = cls.start_proxy(cls.mock, "redis://replica-b:pw-b@127.0.0.1:%d/0" % cls.redis.port,
                                name="proxy-b")

    @classmethod
    def acl(cls, state):
        cls.admin_redis.cmd("ACL", "SETUSER", "replica-b", state, ">pw-b", "~*", "&*", "+@all")

    def status(self, replica, key):
        return h.request("POST", replica.url + "/v1/messages", headers={"x-api-key": key},
                         body=BODY, timeout=5).status

    def health(self, replica):
        return h.request("GET", replica.url + "/health", timeout=5).status

    def test_disable_missed_while_disconnected_is_seen_on_reconnect(self):
        st, doc = self.a.admin("POST", "/admin/keys", {"name": "missed"})
        key = doc["api_key"]
        self.assertEqual(self.status(self.b, key), 200)  # B has it cached now

        self.acl("off")
        self.admin_redis.cmd("CLIENT", "KILL", "USER", "replica-b")
        h.wait_until(lambda: self.health(self.b) == 503, 10, message="B to lose Redis")
        st, doc = self.a.admin("POST", "/admin/keys/%s/disable" % key)
        self.assertEqual((st, doc.get("status")), (200, "disabled"))
        h.wait_until(lambda: self.status(self.a, key) == 403, 2)
        self.assertEqual(self.health(self.b), 503, "B got back in too early for this test")

        self.acl("on")
        h.wait_until(lambda: self.health(self.b) == 200, 10, message="B to reconnect")
        t0 = time.monotonic()
        h.wait_until(lambda: self.status(self.b, key) == 403, 5, interval=0.005,
                     message="B to refuse the key disabled while it was away")
        dt = time.monotonic() - t0
        print("    B refused the key %.1f ms after it reported Redis up" % (dt * 1000))
        self.assertLess(dt, LIMIT_S)


if __name__ == "__main__":
    unittest.main()
