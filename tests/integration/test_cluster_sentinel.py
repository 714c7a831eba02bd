"""Redis high availability, end to end: `tests/cluster/cluster.sh start --sentinel` runs a
Redis master and its replica, three Redis Sentinels (quorum 2, down-after-milliseconds 1000),
the mock upstream, two pollers, three proxy replicas and HAProxy; every client request goes
through the load balancer. The replicas and pollers know only the sentinels (REDIS_SENTINELS).

1. 64 clients of steady load; the Redis master is killed (SIGKILL); the sentinels promote the
   replica. Measured: when the sentinels switched, when each replica and each poller was on
   the new master (bound: 5 s after the switch). Client failures must fall inside the outage
   window (none are expected: replicas serve the keys they verified and hold usage in memory).
   Once settled, every usage view on every replica equals what the clients were served.
   Then the old master comes back (restarted as it was, a master with stale data, as after a
   crash): the sentinels turn it into a replica, and none of our processes writes to it (no
   script ever ran there, none of our connections is on it); its replication brings the
   batches written meanwhile to a second copy, which the replicas see acknowledged (WAIT).
2. A second failover; right after the sentinels switch, a key is disabled and the upstream's
   quota drops: every replica refuses the key and leaves the exhausted tier. A poller lease
   was running through the failover: afterwards exactly one poller is active, and stays so.

Every measured figure is printed with ">>> MEASURED". Skipped when haproxy or redis-sentinel
is missing.
"""

import os
import shutil
import threading
import time
import unittest

from lib import harness as h

import test_cluster as tc

DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 3000
FOLLOW_BOUND_S = 5.0            # every replica and poller on the new master this soon after the switch
MASTER = "mymaster"
POLLERS = ("poller1", "poller2")
COMPONENTS = tc.REPLICAS + POLLERS
NODES = ("redis", "redis2")
OUR_CLIENTS = ("api-proxy:", "api-poller:")     # CLIENT SETNAME of our connections


def find_sentinel():
    found = shutil.which("redis-sentinel")
    if found:
        return found
    return "/usr/bin/redis-sentinel" if os.access("/usr/bin/redis-sentinel", os.X_OK) else None


def info_fields(text):
    out = {}
    for line in text.splitlines():
        if ":" in line and not line.startswith("#"):
            k, _, v = line.partition(":")
            out[k] = v.strip()
    return out


@unittest.skipIf(tc.find_haproxy() is None or find_sentinel() is None,
                 "haproxy and redis-sentinel are needed (Debian: apt-get install haproxy "
                 "redis-sentinel; scripts/deps.sh test installs them)")
class SentinelClusterTest(tc.Fleet):
    START_ARGS = ("--sentinel",)
    EXTRA_PORTS = ("CLUSTER_REDIS2_PORT", "CLUSTER_SENTINEL1_PORT", "CLUSTER_SENTINEL2_PORT",
                   "CLUSTER_SENTINEL3_PORT")
    EXTRA_ENV = {"CLUSTER_SENTINEL_DOWN_AFTER_MS": str(DOWN_AFTER_MS),
                 "CLUSTER_SENTINEL_FAILOVER_TIMEOUT_MS": str(FAILOVER_TIMEOUT_MS),
                 "CLUSTER_SENTINEL_MASTER": MASTER}

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        comps = cls.info["components"]
        cls.node_port = {n: comps[n]["port"] for n in NODES}
        cls.sentinel_ports = [comps["sentinel%d" % i]["port"] for i in (1, 2, 3)]
        cls.follow_master()

    # ---- Redis topology ----
    @classmethod
    def sentinel_master(cls):
        """host:port of the master as the first sentinel that answers names it."""
        for port in cls.sentinel_ports:
            try:
                with h.Redis("127.0.0.1", port, timeout=2) as s:
                    r = s.cmd("SENTINEL", "get-master-addr-by-name", MASTER)
                if r:
                    return "%s:%s" % (r[0], r[1])
            except (OSError, h.RedisError):
                continue
        return None

    @classmethod
    def node_at(cls, addr):
        port = int(addr.rsplit(":", 1)[1])
        return next(n for n, p in cls.node_port.items() if p == port)

    @classmethod
    def follow_master(cls):
        """Points cls.rc (the tests' own Redis client) at the current master."""
        if getattr(cls, "rc", None) is not None:
            cls.rc.close()
        cls.rc = h.Redis("127.0.0.1", cls.node_port[cls.node_at(cls.sentinel_master())])

    def node(self, name):
        return h.Redis("127.0.0.1", self.node_port[name], timeout=5)

    def role(self, name):
        try:
            with self.node(name) as c:
                return c.cmd("ROLE")[0]
        except (OSError, h.RedisError):
            return None

    def wait_in_sync(self, master, replica):
        """Until `replica` has synced with `master` and holds every write it acknowledged (a
        master killed before its replica's first sync loses everything, by design of Redis)."""
        def synced():
            with self.node(master) as m:
                offset = m.cmd("ROLE")[1]
            with self.node(replica) as r:
                role = r.cmd("ROLE")
            return role[0] == "slave" and role[3] == "connected" and role[4] >= offset
        h.wait_until(synced, 30, interval=0.02, message="%s in sync with %s" % (replica, master))

    def health(self, name):
        url = self.replica_url.get(name) or self.poller_url[name]
        return h.request("GET", url + "/health", timeout=5).json()

    def on_master(self, doc, addr):
        return doc.get("redis_master") == addr and doc.get("redis") in ("up", True)

    def fail_over(self, what):
        """SIGKILLs the master; returns (old name, new name, new addr, t_kill, seconds to the
        switch, {component: seconds from the kill to being on the new master})."""
        old_addr = self.sentinel_master()
        old = self.node_at(old_addr)
        new = next(n for n in NODES if n != old)
        new_addr = "127.0.0.1:%d" % self.node_port[new]
        self.assertEqual(self.role(new), "slave", "%s must be the replica before the failover" % new)
        self.wait_in_sync(old, new)
        t0 = time.monotonic()
        ths, seen = self.watch_replicas(lambda d: self.on_master(d, new_addr), t0, timeout=30,
                                        names=COMPONENTS, path="/health")
        self.sigkill(old, expect="redis")
        h.wait_until(lambda: self.sentinel_master() == new_addr, 30, interval=0.005,
                     message="the sentinels to promote %s" % new)
        switch = time.monotonic() - t0
        for t in ths:
            t.join(30)
        after = {n: seen[n] - switch for n in seen}
        tc.banner("%s: master %s (%s) killed (SIGKILL); the sentinels switched to %s after %.0f ms "
                  "(down-after-milliseconds %d); on the new master: %s; the slowest %.0f ms after "
                  "the switch (bound %.0f ms)"
                  % (what, old, old_addr, new, switch * 1000, DOWN_AFTER_MS,
                     ", ".join("%s %.0f ms" % (n, seen[n] * 1000) for n in COMPONENTS if n in seen),
                     max(after.values() or [0]) * 1000, FOLLOW_BOUND_S * 1000))
        self.assertEqual(sorted(seen), sorted(COMPONENTS), "components that never reached the new master")
        self.assertLessEqual(max(after.values()), FOLLOW_BOUND_S)
        for n in COMPONENTS:
            self.assertGreaterEqual(self.health(n)["redis_failovers"], 1, n)
        type(self).follow_master()
        return old, new, new_addr, t0, switch, seen

    def old_master_returns(self, old, new):
        """Restarts the killed node as it was (a master, stale), waits for the sentinels to
        make it a replica of `new`; returns the seconds that took."""
        t0 = time.monotonic()
        self.cluster("restart", old)
        first = self.role(old)
        h.wait_until(lambda: self.role(old) == "slave", 40, interval=0.05,
                     message="the sentinels to turn %s into a replica" % old)
        became = time.monotonic() - t0
        with self.node(new) as c:
            h.wait_until(lambda: "state=online" in c.cmd("INFO", "replication"), 20,
                         message="%s online as a replica of %s" % (old, new))
        tc.banner("old master %s restarted: it came up as a %s; the sentinels made it a replica "
                  "of %s after %.0f ms" % (old, first, new, became * 1000))
        return became

    def assert_never_written_by_us(self, name):
        """No script ever ran on the node (usage flushes, key reads, leases are scripts) and
        none of our connections is on it; what it holds came by replication."""
        with self.node(name) as c:
            stats = info_fields(c.cmd("INFO", "commandstats"))
            errors = info_fields(c.cmd("INFO", "errorstats"))
            clients = c.cmd("CLIENT", "LIST")
        ours = [line for line in clients.splitlines()
                if any(" name=%s" % p in line for p in OUR_CLIENTS)]
        scripts = {k: v for k, v in stats.items() if k in ("cmdstat_eval", "cmdstat_evalsha")}
        self.assertEqual(ours, [], "our connections on the old master %s" % name)
        self.assertEqual(scripts, {}, "scripts ran on the old master %s" % name)
        self.assertNotIn("errorstat_READONLY", errors, "writes refused by %s" % name)

    def settle_replicated(self, timeout=30):
        """Every replica: nothing pending, nothing written without a replica's acknowledgement."""
        def done():
            for n in tc.REPLICAS:
                d = self.health(n)
                if d.get("usage_pending") != 0 or d.get("usage_unreplicated") != 0:
                    return False
            return True
        t0 = time.monotonic()
        h.wait_until(done, timeout, interval=0.05, message="usage acknowledged by a Redis replica "
                     "on every proxy replica")
        return time.monotonic() - t0

    # ==================================================================================
    # 1. the master killed under load
    # ==================================================================================
    def test_1_master_killed_under_load_fleet_follows_nothing_lost(self):
        keys = self.create_keys("ha", 4)
        self.settle_replicated()
        before = self.usage_snapshot("proxy1")
        load = tc.Load(self.lb, keys, tc.CONCURRENCY).start()
        self.addCleanup(load.stop)
        load.wait_ok(1500)
        ok_at_kill = load.count()
        old, new, new_addr, t0, switch, seen = self.fail_over("failover under load")
        followed = max(seen.values())
        load.wait_ok(load.count() + 1500, what="traffic on the new master")
        load.stop()
        with load.lock:
            failed = list(load.failed_on)
        late = [t - t0 for t, _, _ in failed if t - t0 > followed + 1.0]
        statuses = sorted({s for _, s, _ in load.refused})
        self.settle()
        req, tin, tout = load.totals()
        got = self.redis_delta(before)
        tc.banner("%d clients, %d answers before the kill, %d in all (%.0f requests/s); client "
                  "failures: %d (refused %d %r, broken %d), %d of them after the outage window "
                  "(kill + %.0f ms); Redis counted %d requests / %d in / %d out, clients were "
                  "served %d / %d / %d"
                  % (tc.CONCURRENCY, ok_at_kill, load.ok, load.ok / load.elapsed(), len(failed),
                     len(load.refused), statuses, len(load.ambiguous), len(late),
                     followed * 1000, got[0], got[1], got[2], req, tin, tout))
        self.assertEqual(late, [], "client failures outside the outage window")
        if load.ambiguous:
            # A request cut in flight may have been counted: bound it (none is expected).
            self.assertGreaterEqual(got[0], req, "completed requests lost")
            self.assertLessEqual(got[0], req + len(load.ambiguous), "requests counted twice")
        else:
            self.assert_usage_exact(load, before, keys)
        unrep = {n: self.health(n)["usage_unreplicated"] for n in tc.REPLICAS}
        tc.banner("after the failover the new master has no replica: usage written but not yet "
                  "on a second node, kept by each proxy replica for a rewrite: %r" % unrep)

        # The old master comes back, stale and a master at first, while clients keep going.
        keys2 = self.create_keys("ha-back", 2)
        before2 = self.usage_snapshot("proxy1")
        load2 = tc.Load(self.lb, keys2, 16).start()
        self.addCleanup(load2.stop)
        self.old_master_returns(old, new)
        load2.wait_ok(load2.count() + 300, what="traffic with the old master back")
        load2.stop()
        self.assertEqual(self.role(new), "master")
        self.assert_never_written_by_us(old)
        took = self.settle_replicated()
        tc.banner("with %s back as a replica every proxy replica had its usage acknowledged "
                  "(WAIT) %.0f ms later; %d more requests served meanwhile, failures %d"
                  % (old, took * 1000, load2.ok, len(load2.failed_on)))
        self.assertEqual(load2.failed_on, [], "client failures while the old master came back")
        self.assert_usage_exact(load2, before2, keys2)
        # The replica holds everything the master does.
        with self.node(new) as m, self.node(old) as r:
            h.wait_until(lambda: m.cmd("HGETALL", tc.PREFIX + "u:all")
                         == r.cmd("HGETALL", tc.PREFIX + "u:all"), 10,
                         message="the usage totals on the replica")

    # ==================================================================================
    # 2. changes right after a failover; the poller lease
    # ==================================================================================
    def test_2_revocation_and_quota_right_after_failover_one_active_poller(self):
        (key, kid, name), = self.create_keys("ha-revoke", 1)
        hdr = {"x-api-key": key}
        for n in tc.REPLICAS:   # every replica has verified (and cached) the key
            r = h.request("GET", self.replica_url[n] + "/v1/models", headers=hdr, timeout=10)
            self.assertEqual(r.status, 200, "%s: %s" % (n, r.text))
        self.healthy_quota()
        leader_key = tc.PREFIX + "poller:leader"
        lead = self.rc.cmd("GET", leader_key)
        self.assertIn(lead, POLLERS)
        low = {"status": "ok", "timestamp": "2026-01-01T00:00:00Z", "accounts": [{
            "email": "mock@example.com", "status": "ok", "modelRateLimits": {},
            "models": {tc.OPUS: {"remaining": "1%", "remainingFraction": 0.01, "resetTime": None},
                       tc.GEMINI: {"remaining": "100%", "remainingFraction": 1.0,
                                   "resetTime": None}}}]}

        old, new, new_addr, t0, switch, seen = self.fail_over("failover during a poller lease "
                                                              "(%s active)" % lead)
        # Right after the switch (some replicas may still be on their way): through the LB.
        t1 = time.monotonic()
        h.wait_until(lambda: self.admin(self.lb, "POST", "/admin/keys/%s/disable" % kid)[0] == 200,
                     10, interval=0.01, message="the disable to be accepted")
        t_disabled = time.monotonic() - t1
        self.mock("POST", "/_control/health", low)
        refused, off = {}, {}

        def watch(n):
            deadline = time.monotonic() + 15
            with h.Client(self.replica_url[n]) as c:
                while time.monotonic() < deadline and (n not in refused or n not in off):
                    if n not in refused and c.get("/v1/models", headers=hdr).status == 403:
                        refused[n] = time.monotonic() - t1
                    if n not in off:
                        doc = c.get("/admin/fallback", headers={"x-api-key": self.admin_key}).json()
                        if not tc.tier_of(doc, tc.OPUS)["available"]:
                            off[n] = time.monotonic() - t1
                    time.sleep(0.005)
        ths = [threading.Thread(target=watch, args=(n,), daemon=True) for n in tc.REPLICAS]
        for t in ths:
            t.start()
        for t in ths:
            t.join(20)
        tc.banner("right after the switch: the key disable was accepted through the LB after "
                  "%.0f ms; refused (403) by %s; the quota drop reached %s (poll interval %.0f ms)"
                  % (t_disabled * 1000,
                     ", ".join("%s after %.0f ms" % (n, refused[n] * 1000) for n in tc.REPLICAS if n in refused),
                     ", ".join("%s after %.0f ms" % (n, off[n] * 1000) for n in tc.REPLICAS if n in off),
                     tc.INTERVAL * 1000))
        self.assertEqual(sorted(refused), list(tc.REPLICAS), "replicas still accepting the disabled key")
        self.assertEqual(sorted(off), list(tc.REPLICAS), "replicas that never saw the quota drop")
        self.assertLessEqual(max(refused.values()), 5.0)
        self.assertLessEqual(max(off.values()), 5.0)

        # Exactly one active poller, the one holding the lease on the new master, and it stays so.
        def leaders():
            return [p for p in POLLERS if self.health(p)["leader"]]
        h.wait_until(lambda: len(leaders()) == 1 and self.rc.cmd("GET", leader_key) == leaders()[0],
                     10, interval=0.02, message="one active poller holding the lease")
        active = leaders()[0]
        samples, t2 = 0, time.monotonic()
        while time.monotonic() - t2 < 4 * tc.INTERVAL:
            self.assertEqual(leaders(), [active], "active pollers")
            self.assertEqual(self.rc.cmd("GET", leader_key), active)
            samples += 1
            time.sleep(0.02)
        tc.banner("poller lease (TTL %.0f ms) through a %.0f ms outage: %s was active before, %s "
                  "after; exactly one active over %d samples in %.0f ms"
                  % (1.5 * tc.INTERVAL * 1000, seen[active] * 1000, lead, active, samples,
                     4 * tc.INTERVAL * 1000))

        self.old_master_returns(old, new)
        self.assert_never_written_by_us(old)
        self.settle_replicated()
        self.healthy_quota()


if __name__ == "__main__":
    unittest.main()
