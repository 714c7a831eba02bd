"""The fleet: each replica's heartbeat in Redis and GET /admin/fleet.

Three replicas on one Redis beat every 200 ms (FLEET_HEARTBEAT_MS); any of them lists
all three with the same numbers. A replica busy with a slow request shows it in flight,
a replica stopped with SIGTERM shows "draining" and then leaves the list at once, a
replica killed outright leaves it when its heartbeat is older than the 30 s window (the
window is checked by ageing the heartbeat in Redis, not by waiting 30 s).
"""

import datetime
import re
import shutil
import socket
import signal
import threading
import time

from lib import harness as h

BEAT_MS = 200
ISO_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}[+-]\d{2}:\d{2}$")
SLOW_MODEL = "claude-sonnet-4-5"


def body(model=SLOW_MODEL):
    return {"model": model, "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}


class FleetTest(h.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.redis = cls.start_redis()
        cls.mock = cls.start_mock()
        cls.proxies = {}
        for name in ("fleet-a", "fleet-b"):
            cls.proxies[name] = cls.start_proxy(cls.mock, cls.redis, name=name, usage_tz="+08:00",
                                                env={"INSTANCE_ID": name, "FLEET_HEARTBEAT_MS": BEAT_MS})
        cls.a, cls.b = cls.proxies["fleet-a"], cls.proxies["fleet-b"]
        cls.rc = cls.redis.client()

    def setUp(self):
        super().setUp()
        self.mock.reset()

    def fleet(self, proxy=None):
        status, doc = (proxy or self.a).admin("GET", "/admin/fleet")
        self.assertEqual(status, 200, doc)
        return doc

    def ids(self, proxy=None):
        return [r["id"] for r in self.fleet(proxy)["replicas"]]

    def record(self, rid, proxy=None):
        for r in self.fleet(proxy)["replicas"]:
            if r["id"] == rid:
                return r
        return None

    def extra(self, name, **env):
        env.setdefault("INSTANCE_ID", name)
        env.setdefault("FLEET_HEARTBEAT_MS", BEAT_MS)
        return self.start_proxy(self.mock, self.redis, name=name, usage_tz="+08:00", env=env)

    def test_every_replica_lists_the_fleet(self):
        c = self.extra("fleet-c")
        t0 = time.time()
        h.wait_until(lambda: self.ids() == ["fleet-a", "fleet-b", "fleet-c"], 5, message="three replicas")
        version = h.request("GET", self.a.url + "/health").json()["version"]
        self.assertTrue(version)
        for proxy in (self.a, self.b, c):
            doc = self.fleet(proxy)
            self.assertEqual([r["id"] for r in doc["replicas"]], ["fleet-a", "fleet-b", "fleet-c"])
            self.assertEqual(doc["answered_by"], proxy.name)
            self.assertEqual(doc["window_seconds"], 30)
            self.assertEqual(doc["usage_tz"], "+08:00")
            self.assertRegex(doc["now"], ISO_RE)
            self.assertTrue(doc["now"].endswith("+08:00"), doc["now"])
            now8 = datetime.datetime.now(datetime.timezone(datetime.timedelta(hours=8)))
            self.assertIn(doc["today"], {now8.strftime("%Y-%m-%d"),
                                         (now8 - datetime.timedelta(seconds=5)).strftime("%Y-%m-%d")})
            for r in doc["replicas"]:
                p = self.proxies.get(r["id"]) or c
                self.assertEqual(r["version"], version)
                self.assertEqual(r["pid"], p.pid)
                self.assertEqual(r["port"], p.port)
                self.assertEqual(r["host"], socket.gethostname()[:63])
                self.assertRegex(r["started"], ISO_RE)
                self.assertRegex(r["last_seen"], ISO_RE)
                self.assertFalse(r["draining"])
                self.assertEqual((r["in_flight"], r["streams"], r["usage_pending"]), (0, 0, 0))
                # Heartbeats every 200 ms: never more than a beat or two old.
                self.assertGreaterEqual(r["age_seconds"], 0)
                self.assertLess(r["age_seconds"], 1.5, r)
                self.assertGreaterEqual(r["uptime_seconds"], r["age_seconds"] - 0.01)
        rec = self.record("fleet-c")
        self.assertLess(abs(rec["started_ms"] / 1000 - t0), 3, rec)
        # The record lives in Redis with a TTL of the window.
        ttl = self.rc.cmd("PTTL", "ap:fleet:fleet-c")
        self.assertTrue(25000 < ttl <= 30000, ttl)
        self.assertIsNotNone(self.rc.cmd("ZSCORE", "ap:fleet", "fleet-c"))
        c.stop()

    def test_in_flight_requests(self):
        self.mock.behaviour(SLOW_MODEL, delay_ms=1500)
        key = self.b.create_key("fleet-inflight")
        results = []

        def one():
            results.append(h.request("POST", self.b.url + "/v1/messages", headers={"x-api-key": key},
                                     body=body()).status)

        threads = [threading.Thread(target=one) for _ in range(2)]
        for t in threads:
            t.start()
        busy = h.wait_until(lambda: (self.record("fleet-b") or {}).get("in_flight", 0) >= 2 and self.record("fleet-b"),
                            3, message="two requests in flight on fleet-b")
        self.assertEqual(self.record("fleet-a")["in_flight"], 0)
        self.assertFalse(busy["draining"])
        for t in threads:
            t.join(10)
        self.assertEqual(results, [200, 200])
        h.wait_until(lambda: self.record("fleet-b")["in_flight"] == 0, 3, message="nothing in flight")

    def test_graceful_stop_drains_then_leaves(self):
        d = self.extra("fleet-d", SHUTDOWN_GRACE_SECONDS=10)
        h.wait_until(lambda: "fleet-d" in self.ids(), 5, message="fleet-d listed")
        key = d.create_key("fleet-drain")
        self.mock.behaviour(SLOW_MODEL, delay_ms=1500)
        out = []
        t = threading.Thread(target=lambda: out.append(
            h.request("POST", d.url + "/v1/messages", headers={"x-api-key": key}, body=body()).status))
        t.start()
        h.wait_until(lambda: self.record("fleet-d")["in_flight"] >= 1, 3, message="fleet-d busy")
        d.signal(signal.SIGTERM)
        # Seen draining at once (the heartbeat is written on the signal, not a beat later).
        rec = h.wait_until(lambda: (self.record("fleet-d") or {}).get("draining") and self.record("fleet-d"),
                           1.0, interval=0.02, message="fleet-d draining")
        self.assertGreaterEqual(rec["in_flight"], 1)
        t.join(10)
        self.assertEqual(out, [200])
        self.assertEqual(d.wait(10), 0)
        # Gone from the list as it exits, not 30 s later.
        self.assertNotIn("fleet-d", self.ids())
        self.assertIsNone(self.rc.cmd("GET", "ap:fleet:fleet-d"))
        self.assertIsNone(self.rc.cmd("ZSCORE", "ap:fleet", "fleet-d"))

    def test_a_dead_replica_leaves_after_the_window(self):
        e = self.extra("fleet-e")
        h.wait_until(lambda: "fleet-e" in self.ids(), 5, message="fleet-e listed")
        e.kill()
        # Its last heartbeat stays (the record has a TTL of the window) ...
        time.sleep(0.5)
        self.assertIn("fleet-e", self.ids())
        self.assertGreater(self.record("fleet-e")["age_seconds"], 0.3)
        # ... until it is older than 30 s: age it by 31 s in Redis instead of waiting.
        score = int(self.rc.cmd("ZSCORE", "ap:fleet", "fleet-e"))
        self.rc.cmd("ZADD", "ap:fleet", score - 31000, "fleet-e")
        self.assertNotIn("fleet-e", self.ids())
        self.assertEqual(self.ids(), ["fleet-a", "fleet-b"])
        # The next heartbeat of a live replica forgets it in the index as well.
        h.wait_until(lambda: self.rc.cmd("ZSCORE", "ap:fleet", "fleet-e") is None, 2,
                     message="fleet-e pruned from ap:fleet")

    def test_a_record_that_expired_is_not_listed(self):
        """A seen time inside the window but no record (it expired or was removed): skipped."""
        self.rc.cmd("ZADD", "ap:fleet", int(time.time() * 1000), "ghost")
        self.assertNotIn("ghost", self.ids())
        self.rc.cmd("SET", "ap:fleet:ghost", "not json", "PX", 5000)
        self.assertNotIn("ghost", self.ids())
        self.rc.cmd("DEL", "ap:fleet:ghost")
        self.rc.cmd("ZREM", "ap:fleet", "ghost")

    def test_admin_only(self):
        self.assertEqual(h.request("GET", self.a.url + "/admin/fleet").status, 401)
        key = self.a.create_key("fleet-user")
        r = h.request("GET", self.a.url + "/admin/fleet", headers={"x-api-key": key})
        self.assertEqual(r.status, 403)
        r = h.request("POST", self.a.url + "/admin/fleet", headers={"x-api-key": self.a.admin_key})
        self.assertEqual(r.status, 404)

    def test_heartbeat_interval_is_validated(self):
        for value in ("50", "10001", "soon"):
            with self.subTest(value=value):
                p = self.track(h.Proxy(self.workdir, self.mock, self.redis, name="fleet-bad-%s" % value,
                                       env={"FLEET_HEARTBEAT_MS": value}))
                p.spawn()
                self.assertNotEqual(p.wait(5), 0, p.log())
                self.assertIn("FLEET_HEARTBEAT_MS", p.log())


class FleetRedisOutageTest(h.TestCase):
    """While Redis is away the listing says so; when it returns every replica is back at once."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.redis = cls.start_redis()
        cls.mock = cls.start_mock()
        # A slow heartbeat: coming back must not wait for the next beat.
        cls.proxy = cls.start_proxy(cls.mock, cls.redis, env={"INSTANCE_ID": "lonely",
                                                              "FLEET_HEARTBEAT_MS": 10000})

    def test_outage(self):
        h.wait_until(lambda: [r["id"] for r in self.proxy.admin("GET", "/admin/fleet")[1]["replicas"]] == ["lonely"],
                     5, message="listed")
        self.redis.stop()
        h.wait_until(lambda: self.proxy.admin("GET", "/admin/fleet")[0] == 503, 5, message="503 without Redis")
        status, doc = self.proxy.admin("GET", "/admin/fleet")
        self.assertEqual(doc, {"detail": "Redis is unavailable; try again shortly"})
        # A Redis that comes back empty (its AOF lost): the replica writes itself back on
        # reconnect, not at its next beat 10 s later.
        shutil.rmtree(self.redis.workdir / "appendonlydir")
        t0 = time.monotonic()
        self.redis.start()
        h.wait_until(lambda: self.proxy.admin("GET", "/admin/fleet")[0] == 200, 10, message="back")
        h.wait_until(lambda: [r["id"] for r in self.proxy.admin("GET", "/admin/fleet")[1]["replicas"]] == ["lonely"],
                     5, message="listed again")
        self.assertLess(time.monotonic() - t0, 8, "came back with the reconnect, not a 10 s beat later")
