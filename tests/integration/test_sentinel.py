"""Redis Sentinel support of one replica, one poller and the admin command line (README,
"Redis high availability"), against a real master, its replica and three real sentinels
(quorum 2).

- bad REDIS_SENTINELS / REDIS_SENTINEL_MASTER: a clear startup error from every binary;
  sentinels given by host name are resolved (without blocking the event loop);
- the admin command line finds the master through the sentinels (the first listed is down),
  and, started right after the master died, waits for the failover and writes to the new one;
- the replica of Redis lost: replies stop waiting for its acknowledgement after
  REDIS_WAIT_TIMEOUT_MS, the usage stays counted and is kept until a replica has it; once the
  replica is back, WAIT acknowledges everything;
- a graceful failover (SENTINEL FAILOVER) under traffic: the proxy and the poller follow,
  nothing fails, nothing is lost or counted twice, /health and /metrics count the failover;
- the sentinel being watched dies, then the master: the watch has moved to another sentinel
  and the proxy follows the failover all the same.

Runs under AP_VALGRIND=1 as well (the proxy and the poller under valgrind).
"""

import json
import os
import re
import shutil
import subprocess
import threading
import time
import unittest

from lib import harness as h

MASTER = "ap-main"
DOWN_AFTER_MS = 1000
MODEL = "claude-sonnet-4-5"


def find_sentinel():
    return shutil.which("redis-sentinel") or (
        "/usr/bin/redis-sentinel" if os.access("/usr/bin/redis-sentinel", os.X_OK) else None)


class Sentinel(h.Proc):
    """redis-sentinel on 127.0.0.1:<free port> watching `master` (quorum 2)."""

    def __init__(self, workdir, master_port, name):
        self.port = h.free_port()
        self.conf = workdir / ("%s.conf" % name)
        self.conf.write_text(
            "port %d\nbind 127.0.0.1\ndaemonize no\nlogfile \"\"\ndir %s\n"
            "sentinel monitor %s 127.0.0.1 %d 2\n"
            "sentinel down-after-milliseconds %s %d\n"
            "sentinel failover-timeout %s 3000\n"
            % (self.port, workdir, MASTER, master_port, MASTER, DOWN_AFTER_MS, MASTER))
        super().__init__([find_sentinel(), self.conf], workdir, name=name)

    def start(self, timeout=10.0):
        self.spawn()
        h.wait_until(lambda: self.client().cmd("PING") == "PONG", timeout,
                     message="%s to answer PING" % self.name)
        return self

    def client(self):
        return h.Redis("127.0.0.1", self.port, timeout=2)

    def view(self):
        with self.client() as c:
            r = c.cmd("SENTINEL", "master", MASTER)
        return dict(zip(r[::2], r[1::2]))


@unittest.skipIf(find_sentinel() is None,
                 "redis-sentinel is not installed (Debian: apt-get install redis-sentinel)")
class SentinelTest(h.TestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.mock = cls.start_mock()
        cls.nodes = [cls.start_redis(name="node-a"), cls.start_redis(name="node-b")]
        cls.make_replica(cls.nodes[1], cls.nodes[0])
        cls.sentinels = [cls.track(Sentinel(cls.workdir, cls.nodes[0].port, "sentinel%d" % i)).start()
                         for i in (1, 2, 3)]
        h.wait_until(lambda: all(int(s.view()["num-other-sentinels"]) == 2 and
                                 int(s.view()["num-slaves"]) == 1 for s in cls.sentinels), 20,
                     interval=0.1, message="the sentinels to know each other and the replica")
        cls.env = {"REDIS_SENTINELS": ",".join("127.0.0.1:%d" % s.port for s in cls.sentinels),
                   "REDIS_SENTINEL_MASTER": MASTER, "REDIS_WAIT_TIMEOUT_MS": "100",
                   "USAGE_FLUSH_MS": "20"}
        # REDIS_URL's host is never used with Sentinel: point it at nothing.
        cls.proxy = cls.start_proxy(cls.mock, "redis://127.0.0.1:1/0", env=dict(cls.env, INSTANCE_ID="px"))
        cls.poller = cls.start_poller(cls.mock, "redis://127.0.0.1:1/0",
                                      env=dict(cls.env, INSTANCE_ID="pl", POLL_INTERVAL_SECONDS="0.2",
                                               POLLER_PORT=str(h.free_port()), POLLER_BIND="127.0.0.1"))
        cls.poller_url = "http://127.0.0.1:%s" % cls.poller.env_overrides["POLLER_PORT"]
        cls.poller.wait_http(cls.poller_url + "/health")
        cls.key = cls.proxy.create_key("sentinel-test")

    @staticmethod
    def make_replica(node, master):
        with node.client() as c:
            c.cmd("REPLICAOF", "127.0.0.1", str(master.port))
        with master.client() as m:
            h.wait_until(lambda: "state=online" in m.cmd("INFO", "replication"), 20,
                         message="%s online as a replica" % node.name)

    # ---- helpers ----
    def master(self):
        """(master node, replica node) as the sentinels see them."""
        for s in self.sentinels:
            if not s.alive():
                continue
            addr = s.client().cmd("SENTINEL", "get-master-addr-by-name", MASTER)
            m = next(n for n in self.nodes if n.port == int(addr[1]))
            return m, next(n for n in self.nodes if n is not m)
        raise AssertionError("no sentinel alive")

    def health(self):
        return h.request("GET", self.proxy.url + "/health", timeout=10).json()

    def poller_health(self):
        return h.request("GET", self.poller_url + "/health", timeout=10).json()

    def metric(self, name):
        text = h.request("GET", self.proxy.url + "/metrics", timeout=10).text
        m = re.search(r"^%s (\S+)$" % re.escape(name), text, re.M)
        self.assertIsNotNone(m, "%s not in /metrics" % name)
        return float(m.group(1))

    def send(self, n):
        """n requests, one after another; returns (tokens in, tokens out, slowest seconds)."""
        tin = tout = 0
        slowest = 0.0
        with h.Client(self.proxy.url, headers={"x-api-key": self.key}, timeout=30) as c:
            for i in range(n):
                t0 = time.monotonic()
                r = c.post("/v1/messages", {"model": MODEL, "max_tokens": 16,
                                            "messages": [{"role": "user", "content": "s %d" % i}]})
                slowest = max(slowest, time.monotonic() - t0)
                self.assertEqual(r.status, 200, r.text)
                u = r.json()["usage"]
                tin += u["input_tokens"]
                tout += u["output_tokens"]
        return tin, tout, slowest

    def totals(self, node):
        """The usage totals as `node` holds them, once the usage journal is folded (on the
        master, and replicated to `node` when it is a replica)."""
        fold = h.admin_script("fold")
        with node.client() as c:
            if c.cmd("ROLE")[0] == "master":
                c.cmd("EVAL", fold, 0, "ap:")
            else:
                m, _ = self.master()
                with m.client() as mc:
                    mc.cmd("EVAL", fold, 0, "ap:")
                    mc.cmd("WAIT", 1, 5000)
            d = c.cmd("HGETALL", "ap:u:all")
        d = dict(zip(d[::2], d[1::2]))
        return int(d.get("requests", 0)), int(d.get("input", 0)), int(d.get("output", 0))

    def settled(self):
        d = self.health()
        return d["redis"] == "up" and d["usage_pending"] == 0 and d["usage_unreplicated"] == 0

    # ---- tests ----
    def test_sentinels_by_host_name(self):
        # Names are resolved without blocking the loop (evdns; "localhost" from /etc/hosts).
        env = dict(self.env, REDIS_SENTINELS="localhost:%d" % self.sentinels[-1].port)
        p = self.start_proxy(self.mock, "redis://127.0.0.1:1/0", env=env)
        m, _ = self.master()
        # redis_master is named as soon as the sentinel answers; "up" once the connection to it
        # is verified (before that a key cannot be looked up: 503).
        def on_master():
            d = h.request("GET", p.url + "/health", timeout=5).json()
            return d.get("redis_master") == "127.0.0.1:%d" % m.port and d.get("redis") == "up"
        h.wait_until(on_master, 10, message="the proxy connected to the master")
        r = h.request("POST", p.url + "/v1/messages", headers={"x-api-key": self.key}, timeout=10,
                      body={"model": MODEL, "max_tokens": 8, "messages": [{"role": "user", "content": "x"}]})
        self.assertEqual(r.status, 200, r.text)

    def test_bad_configuration_is_a_startup_error(self):
        cases = [({"REDIS_SENTINELS": "127.0.0.1:0"}, "REDIS_SENTINELS"),
                 ({"REDIS_SENTINELS": "a:1,,b:2"}, "REDIS_SENTINELS"),
                 ({"REDIS_SENTINELS": "a:1,a:1"}, "listed twice"),
                 ({"REDIS_SENTINELS": "a:1", "REDIS_SENTINEL_MASTER": "two words"}, "REDIS_SENTINEL_MASTER"),
                 ({"REDIS_MIN_REPLICAS_ACK": "-1"}, "REDIS_MIN_REPLICAS_ACK"),
                 ({"REDIS_WAIT_TIMEOUT_MS": "0"}, "REDIS_WAIT_TIMEOUT_MS")]
        for env, says in cases:
            with self.subTest(env=env):
                p = self.track(h.Proxy(self.workdir, self.mock, "redis://127.0.0.1:1/0", env=env,
                                       name=self.unique_name("bad-proxy")))
                p.spawn()
                self.assertNotEqual(p.wait(10), 0)
                self.assertIn(says, p.log())
                if "REDIS_SENTINELS" in env or "REDIS_SENTINEL_MASTER" in env:
                    q = self.track(h.Poller(self.workdir, self.mock, "redis://127.0.0.1:1/0", env=env,
                                            name=self.unique_name("bad-poller")))
                    q.spawn()
                    self.assertNotEqual(q.wait(10), 0)
                    self.assertIn(says, q.log())
                    r = subprocess.run([str(h.bin_dir() / "api-proxy-admin"), "list"], capture_output=True,
                                       text=True, timeout=30, env=dict(os.environ, **env))
                    self.assertNotEqual(r.returncode, 0)
                    self.assertIn(says, r.stderr)

    def test_admin_command_line_finds_the_master(self):
        m, _ = self.master()
        dead = h.free_port()
        env = dict(os.environ, REDIS_URL="redis://127.0.0.1:1/0", REDIS_SENTINEL_MASTER=MASTER,
                   REDIS_SENTINELS="127.0.0.1:%d,%s" % (dead, self.env["REDIS_SENTINELS"]))
        r = subprocess.run([str(h.bin_dir() / "api-proxy-admin"), "create", "from-cli"],
                           capture_output=True, text=True, timeout=60, env=env)
        self.assertEqual(r.returncode, 0, r.stderr)
        kid = json.loads(r.stdout)["id"]
        with m.client() as c:
            self.assertIsNotNone(c.cmd("GET", "ap:keyid:%s" % kid), "the key is on the master")
        r = subprocess.run([str(h.bin_dir() / "api-proxy-admin"), "list"], capture_output=True,
                           text=True, timeout=60, env=env)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("from-cli", r.stdout)
        # no sentinel answers, or none knows the master: a clear error at once
        for sentinels, master, says in (("127.0.0.1:%d" % dead, MASTER, "unreachable"),
                                        (self.env["REDIS_SENTINELS"], "nosuch", "does not know")):
            env.update(REDIS_SENTINELS=sentinels, REDIS_SENTINEL_MASTER=master)
            r = subprocess.run([str(h.bin_dir() / "api-proxy-admin"), "list"], capture_output=True,
                               text=True, timeout=60, env=env)
            self.assertNotEqual(r.returncode, 0)
            self.assertIn(says, r.stderr)

    def test_replica_lost_replies_do_not_wait_and_usage_is_kept_until_acknowledged(self):
        h.wait_until(self.settled, 20, message="nothing pending")
        m, replica = self.master()
        before = self.totals(m)
        tin, tout, slowest = self.send(20)
        self.assertEqual(self.health()["usage_unreplicated"], 0)
        replica.kill()
        t0 = time.monotonic()
        tin2, tout2, slowest2 = self.send(60)
        took = time.monotonic() - t0
        d = self.health()
        h.wait_until(lambda: self.health()["usage_pending"] == 0, 10, message="usage written")
        held = self.health()["usage_unreplicated"]
        print("\n    replica lost: 60 requests in %.0f ms, slowest %.0f ms (REDIS_WAIT_TIMEOUT_MS 100); "
              "%d counter updates kept unreplicated" % (took * 1000, slowest2 * 1000, held), flush=True)
        self.assertLess(slowest2, 2.0, "a reply waited for a replica that is gone")
        self.assertGreater(held, 0)
        self.assertEqual(self.metric("ap_usage_unreplicated"), held)
        self.assertEqual(d["status"], "ok")
        # counted on the master meanwhile
        got = self.totals(m)
        self.assertEqual(tuple(a - b for a, b in zip(got, before)), (80, tin + tin2, tout + tout2))
        # the replica comes back: everything is acknowledged again
        replica.start()
        self.make_replica(replica, m)
        t1 = time.monotonic()
        h.wait_until(self.settled, 20, message="usage acknowledged by the replica")
        print("    replica back: everything acknowledged %.0f ms after it was online"
              % ((time.monotonic() - t1) * 1000), flush=True)
        self.assertEqual(self.totals(replica), self.totals(m))
        tin3, tout3, _ = self.send(10)
        h.wait_until(self.settled, 10)
        self.assertEqual(tuple(a - b for a, b in zip(self.totals(replica), before)),
                         (90, tin + tin2 + tin3, tout + tout2 + tout3))

    def run_traffic(self, stop, out):
        with h.Client(self.proxy.url, headers={"x-api-key": self.key}, timeout=30) as c:
            i = 0
            while not stop.is_set():
                i += 1
                try:
                    r = c.post("/v1/messages", {"model": MODEL, "max_tokens": 16,
                                                "messages": [{"role": "user", "content": "t %d" % i}]})
                except OSError as e:
                    out["failures"].append(repr(e))
                    continue
                if r.status != 200:
                    out["failures"].append((r.status, r.text[:200]))
                    continue
                u = r.json()["usage"]
                out["ok"] += 1
                out["in"] += u["input_tokens"]
                out["out"] += u["output_tokens"]

    def failover_under_traffic(self, trigger):
        """Traffic from 4 clients while trigger(master, replica) makes the sentinels switch;
        returns (new master, seconds until the proxy and the poller were on it)."""
        h.wait_until(self.settled, 20, message="nothing pending")
        m, replica = self.master()
        new_addr = "127.0.0.1:%d" % replica.port
        before = self.totals(m)
        fo_proxy, fo_poller = self.health()["redis_failovers"], self.poller_health()["redis_failovers"]
        stop = threading.Event()
        outs = [{"ok": 0, "in": 0, "out": 0, "failures": []} for _ in range(4)]
        ths = [threading.Thread(target=self.run_traffic, args=(stop, o), daemon=True) for o in outs]
        for t in ths:
            t.start()
        time.sleep(0.3)
        t0 = time.monotonic()
        trigger(m, replica)
        h.wait_until(lambda: self.health()["redis_master"] == new_addr and self.health()["redis"] == "up"
                     and self.poller_health()["redis_master"] == new_addr and self.poller_health()["redis"],
                     30, interval=0.01, message="the proxy and the poller on the new master")
        followed = time.monotonic() - t0
        time.sleep(0.3)
        stop.set()
        for t in ths:
            t.join(30)
        failures = [f for o in outs for f in o["failures"]]
        self.assertEqual(failures, [])
        served = (sum(o["ok"] for o in outs), sum(o["in"] for o in outs), sum(o["out"] for o in outs))
        h.wait_until(lambda: self.health()["usage_pending"] == 0, 10, message="usage written")
        got = tuple(a - b for a, b in zip(self.totals(replica), before))
        self.assertEqual(got, served, "counted on the new master / served to the clients")
        self.assertEqual(self.health()["redis_failovers"], fo_proxy + 1)
        self.assertEqual(self.poller_health()["redis_failovers"], fo_poller + 1)
        self.assertEqual(self.metric("ap_redis_failovers_total"), fo_proxy + 1)
        # The old master back as a replica of the new one (a graceful failover did that
        # already; one that was killed comes back stale, as a master, and is told to).
        if not m.alive():
            m.start()
        with m.client() as c:
            if c.cmd("ROLE")[0] != "slave":
                c.cmd("REPLICAOF", "127.0.0.1", str(replica.port))
        with replica.client() as c:
            h.wait_until(lambda: "state=online" in c.cmd("INFO", "replication"), 20,
                         message="the old master online as a replica")
        h.wait_until(self.settled, 20, message="usage acknowledged again")
        print("\n    failover: proxy and poller on the new master %.0f ms after it began; %d requests "
              "served, none failed, all counted once" % (followed * 1000, served[0]), flush=True)
        return replica, followed

    def test_graceful_failover_under_traffic(self):
        def trigger(m, replica):
            with self.sentinels[0].client() as s:
                self.assertEqual(s.cmd("SENTINEL", "FAILOVER", MASTER), "OK")
        _, followed = self.failover_under_traffic(trigger)
        self.assertLess(followed, 10 * (10 if h.under_valgrind() else 1))

    def test_admin_command_line_during_a_failover(self):
        env = dict(os.environ, REDIS_URL="redis://127.0.0.1:1/0", REDIS_SENTINEL_MASTER=MASTER,
                   REDIS_SENTINELS=self.env["REDIS_SENTINELS"])
        started = {}

        def trigger(m, replica):
            m.kill()
            # The sentinels still name the dead master for a while: the command waits it out.
            t0 = time.monotonic()

            def cli():
                started["r"] = subprocess.run([str(h.bin_dir() / "api-proxy-admin"), "create", "mid-failover"],
                                              capture_output=True, text=True, env=env, timeout=60)
                started["took"] = time.monotonic() - t0
            started["thread"] = threading.Thread(target=cli, daemon=True)
            started["thread"].start()
        new, _ = self.failover_under_traffic(trigger)
        started["thread"].join(60)
        r, took = started["r"], started["took"]
        self.assertEqual(r.returncode, 0, r.stderr)
        out = r.stdout
        kid = json.loads(out)["id"]
        with new.client() as c:
            self.assertIsNotNone(c.cmd("GET", "ap:keyid:%s" % kid), "the key is on the new master")
        print("    admin command line started with the master just killed: done on the new master "
              "(%.0f ms, including the failover)" % (took * 1000), flush=True)

    def test_watched_sentinel_dies_then_the_master(self):
        h.wait_until(self.settled, 20)
        watched = re.findall(r"watching \+switch-master on 127\.0\.0\.1:(\d+)", self.proxy.log())[-1]
        victim = next(s for s in self.sentinels if s.port == int(watched))
        victim.kill()
        h.wait_until(lambda: len(re.findall(r"watching \+switch-master on", self.proxy.log())) >= 2 and
                     re.findall(r"watching \+switch-master on 127\.0\.0\.1:(\d+)", self.proxy.log())[-1]
                     != watched, 10, message="the watch to move to another sentinel")
        try:
            self.failover_under_traffic(lambda m, replica: m.kill())
        finally:
            victim.start()
