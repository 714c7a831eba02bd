"""The quota poller, black-box: leadership through {p}poller:leader (exactly one active poller,
a standby takes over after a crash within two intervals and at once after a SIGTERM, which
releases the lease), what a failed /health poll leaves in {p}quota, SIGHUP reloading
FALLBACK_CONFIG into {p}fallback:config and the replicas, and bad configuration at startup.

Each poller gets its own UPSTREAM_API_KEY, which it sends to /health as x-api-key, so the mock's
request log tells which poller polled.
"""

import json
import signal
import time
import unittest

from lib import harness as h

OPUS = "claude-opus-4-6-thinking"
GEMINI = "gemini-3-pro-high"
KIMI = "kimi-k2.5"
PREFIX = "ap:"
LEADER_KEY = PREFIX + "poller:leader"


def chain(mock, interval, **over):
    cfg = {
        "enabled": True, "health_poll_interval_seconds": interval,
        "min_remaining_fraction": 0.05, "reactive_cooldown_seconds": 60, "recovery_margin": 0.0,
        "tiers": [
            {"name": "Claude Opus 4.6", "model": OPUS, "type": "antigravity", "health_key": OPUS},
            {"name": "Gemini 3 Pro High", "model": GEMINI, "type": "upstream"},
            {"name": "Kimi K2.5", "model": KIMI, "type": "external",
             "base_url": mock.url + "/v1", "api_key": "ext-key", "max_tokens_limit": 8192},
        ]}
    cfg.update(over)
    return cfg


def health(opus=1.0, gemini=1.0):
    return {"status": "ok", "timestamp": "2026-02-11T10:00:00Z", "accounts": [
        {"email": "a@x", "status": "ok", "modelRateLimits": {}, "models": {
            OPUS: {"remaining": "%d%%" % round(opus * 100), "remainingFraction": opus,
                   "resetTime": None},
            GEMINI: {"remaining": "%d%%" % round(gemini * 100), "remainingFraction": gemini,
                     "resetTime": None}}}]}


def banner(text):
    print("\n  >>> MEASURED: %s" % text, flush=True)


class PollerBase(h.TestCase):
    INTERVAL = 0.5

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.redis = cls.start_redis()
        cls.rc = cls.redis.client()
        cls.mock = cls.start_mock()

    @classmethod
    def tearDownClass(cls):
        cls.rc.close()
        super().tearDownClass()

    def setUp(self):
        super().setUp()
        self.mock.reset()
        self.mock.set_health(health())
        self.rc.cmd("DEL", LEADER_KEY, PREFIX + "quota", PREFIX + "fallback:config")

    def poller(self, ident, config=None, env=None, **kw):
        e = {"INSTANCE_ID": ident, "UPSTREAM_API_KEY": "key-" + ident}
        e.update(env or {})
        cfg = config if config is not None else chain(self.mock, self.INTERVAL)
        return self.start_poller(self.mock, self.redis, fallback_config=cfg, env=e,
                                 name=ident, **kw)

    def leader(self):
        return self.rc.cmd("GET", LEADER_KEY)

    def quota(self):
        v = self.rc.cmd("GET", PREFIX + "quota")
        return json.loads(v) if v else None

    def health_polls(self, since=0.0):
        """[(time, poller id)] of the /health requests the mock got after `since`."""
        out = []
        for r in self.mock.requests("/health"):
            if r["time"] >= since:
                key = r["headers"].get("x-api-key", "")
                out.append((r["time"], key[4:] if key.startswith("key-") else key))
        return out


class LeadershipTest(PollerBase):
    INTERVAL = 0.5

    def two_pollers(self):
        a = self.poller("poller-a")
        b = self.poller("poller-b")
        lead = h.wait_until(self.leader, 5, interval=0.01, message="a leader")
        self.assertIn(lead, ("poller-a", "poller-b"))
        procs = {"poller-a": a, "poller-b": b}
        other = "poller-b" if lead == "poller-a" else "poller-a"
        return procs[lead], procs[other], lead, other

    def test_exactly_one_leader(self):
        leader, standby, lid, sid = self.two_pollers()
        h.wait_until(lambda: self.quota() and self.quota()["ok"], 5, message="first poll")
        t0 = time.time()
        time.sleep(4 * self.INTERVAL)
        self.assertEqual(self.leader(), lid, "the lease moved without a reason")
        polls = self.health_polls(t0)
        who = {p for _, p in polls}
        self.assertEqual(who, {lid}, "only the leader may poll: %r" % polls)
        self.assertGreaterEqual(len(polls), 3)
        self.assertLessEqual(len(polls), 6)
        ttl = self.rc.cmd("PTTL", LEADER_KEY)
        self.assertGreater(ttl, 0, "the lease must expire by itself")
        self.assertLessEqual(ttl, 1.5 * self.INTERVAL * 1000 + 50)
        self.assertIn("now the active poller", leader.log())
        self.assertNotIn("now the active poller", standby.log())
        q = self.quota()
        self.assertEqual(q["interval"], self.INTERVAL)
        self.assertEqual(q["models"][OPUS]["f"], 1.0)

    def test_lapsed_lease_is_kept_unless_another_poller_took_it(self):
        # A Redis (or poller) stall longer than the TTL lets the lease lapse. Nobody else
        # took it, so the leader keeps leading: no step down and no second start. Only a
        # lease held by another poller makes it step down.
        p = self.poller("poller-lapse")
        h.wait_until(lambda: self.leader() == "poller-lapse", 5, interval=0.01, message="a leader")
        h.wait_until(lambda: self.quota() and self.quota()["ok"], 5, message="first poll")
        self.rc.cmd("DEL", LEADER_KEY)  # the lapse
        h.wait_until(lambda: self.leader() == "poller-lapse", 2 * self.INTERVAL, interval=0.005,
                     message="the leader's lease back")
        time.sleep(self.INTERVAL)
        self.assertNotIn("no longer the active poller", p.log())
        self.assertEqual(p.log().count("now the active poller"), 1, p.log_tail())
        # Another poller's lease: step down, stop polling, take it back once it lapses.
        self.rc.cmd("SET", LEADER_KEY, "poller-x", "PX", str(int(3 * self.INTERVAL * 1000)))
        h.wait_until(lambda: "no longer the active poller" in p.log(), 2 * self.INTERVAL,
                     interval=0.01, message="the step down")
        t0 = time.time()
        time.sleep(self.INTERVAL)
        self.assertEqual([x for x in self.health_polls(t0) if x[1] == "poller-lapse"], [],
                         "a poller that is not the leader polled")
        h.wait_until(lambda: self.leader() == "poller-lapse", 4 * self.INTERVAL, interval=0.01,
                     message="the lease taken back after poller-x's lapsed")
        self.assertEqual(p.stop(), 0)

    def test_interval_from_env_wins(self):
        p = self.poller("poller-env", config=chain(self.mock, 30),
                        env={"POLL_INTERVAL_SECONDS": "0.2"})
        h.wait_until(lambda: self.quota() and self.quota()["ok"], 5, message="first poll")
        self.assertEqual(self.quota()["interval"], 0.2)
        t0 = time.time()
        time.sleep(1.05)
        n = len(self.health_polls(t0))
        self.assertGreaterEqual(n, 3, "POLL_INTERVAL_SECONDS=0.2 should poll ~5 times a second")
        self.assertEqual(p.stop(), 0)

    def test_kill9_leader_standby_takes_over(self):
        leader, standby, lid, sid = self.two_pollers()
        h.wait_until(lambda: self.quota() and self.quota()["ok"], 5, message="first poll")
        time.sleep(self.INTERVAL)
        t_kill = time.time()
        t0 = time.monotonic()
        leader.kill()
        h.wait_until(lambda: self.leader() == sid, 4 * self.INTERVAL + 2, interval=0.005,
                     message="standby holds the lease")
        took_lease = time.monotonic() - t0
        h.wait_until(lambda: any(p == sid for _, p in self.health_polls(t_kill)), 5, interval=0.005,
                     message="standby polls")
        first_poll = min(t for t, p in self.health_polls(t_kill) if p == sid) - t_kill
        banner("kill -9 of the leader: standby took the lease after %.0f ms and polled after "
               "%.0f ms (interval %.0f ms, bound 2 intervals = %.0f ms)"
               % (took_lease * 1000, first_poll * 1000, self.INTERVAL * 1000, 2 * self.INTERVAL * 1000))
        self.assertLess(first_poll, 2 * self.INTERVAL)
        self.assertIn("now the active poller", standby.log())
        # and it keeps the data current
        self.mock.set_health(health(opus=0.3))
        h.wait_until(lambda: self.quota()["models"][OPUS]["f"] == 0.3, 3, message="new data")

    def test_failover_keeps_hysteresis(self):
        # a tier dropped for low quota needs min + margin to come back, whoever polls
        cfg = chain(self.mock, self.INTERVAL, recovery_margin=0.2)
        a = self.poller("poller-a", config=cfg)
        b = self.poller("poller-b", config=cfg)
        lid = h.wait_until(self.leader, 5, interval=0.01, message="a leader")
        leader, sid = (a, "poller-b") if lid == "poller-a" else (b, "poller-a")
        self.mock.set_health(health(opus=0.01))
        h.wait_until(lambda: (self.quota() or {}).get("models", {}).get(OPUS, {}).get("avail") is False,
                     5, message="opus dropped")
        self.mock.set_health(health(opus=0.15))
        h.wait_until(lambda: self.quota()["models"][OPUS]["f"] == 0.15, 5, message="0.15 polled")
        self.assertIs(self.quota()["models"][OPUS]["avail"], False)
        t_kill = time.time()
        leader.kill()
        h.wait_until(lambda: self.leader() == sid, 5, interval=0.01, message="standby leads")
        h.wait_until(lambda: sum(1 for _, p in self.health_polls(t_kill) if p == sid) >= 3, 5,
                     message="standby polled a few times")
        q = self.quota()
        self.assertEqual(q["models"][OPUS]["f"], 0.15)
        self.assertIs(q["models"][OPUS]["avail"], False,
                      "the new leader forgot the tier was dropped (0.15 < 0.05 + 0.2)")

    def test_sigterm_exits_0_and_releases_the_lease(self):
        leader, standby, lid, sid = self.two_pollers()
        h.wait_until(lambda: self.quota() and self.quota()["ok"], 5, message="first poll")
        time.sleep(self.INTERVAL / 2)
        t0 = time.monotonic()
        leader.signal(signal.SIGTERM)
        h.wait_until(lambda: self.leader() == sid, 3, interval=0.005, message="standby takes over")
        took = time.monotonic() - t0
        rc = leader.wait(5)
        banner("SIGTERM of the leader: standby took the lease after %.0f ms (lease TTL %.0f ms, "
               "standby checks every %.0f ms)" % (took * 1000, 1500 * self.INTERVAL, 250 * self.INTERVAL))
        self.assertEqual(rc, 0, leader.log_tail())
        # well before the TTL could have run out: the lease was released, not left to expire
        self.assertLess(took, 0.25 * self.INTERVAL + 0.3)
        self.assertLess(took, 1.5 * self.INTERVAL)
        self.assertEqual(standby.stop(), 0)
        self.assertIsNone(self.leader(), "a stopped poller must release the lease")


class PollFailureAndReloadTest(PollerBase):
    INTERVAL = 0.3

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.cfg_path = cls.workdir / "chain.json"
        h.write_json(cls.cfg_path, chain(cls.mock, cls.INTERVAL))
        cls.a = cls.start_proxy(cls.mock, cls.redis, fallback_config=cls.cfg_path, name="proxy-a")
        cls.b = cls.start_proxy(cls.mock, cls.redis, fallback_config=cls.cfg_path, name="proxy-b")
        cls.key = cls.a.create_key("poller")

    def setUp(self):
        super().setUp()
        h.write_json(self.cfg_path, chain(self.mock, self.INTERVAL))

    def fb(self, proxy):
        st, doc = proxy.admin("GET", "/admin/fallback")
        self.assertEqual(st, 200, doc)
        return doc

    def wait_both(self, pred, what, timeout=5.0):
        def check():
            docs = [self.fb(p) for p in (self.a, self.b)]
            return docs if all(pred(d) for d in docs) else None
        return h.wait_until(check, timeout, interval=0.01, message=what)

    def test_failed_poll_keeps_last_data_and_says_so(self):
        self.poller("poller-f", config=self.cfg_path)
        self.mock.set_health(health(opus=0.42))
        q = h.wait_until(lambda: (self.quota() or {}).get("models", {}).get(OPUS, {}).get("f") == 0.42
                         and self.quota(), 5, message="opus at 0.42")
        self.assertIs(q["ok"], True)
        self.assertNotIn("error", q)
        self.wait_both(lambda d: d["tiers"][0]["remaining"] == "42%", "replicas see 42%")

        for doc, why in (({"__status": 500}, "500"),
                         ({"status": "ok"}, "accounts"),
                         (dict(health(opus=0.9), __delay_ms=2000), "Timeout")):
            with self.subTest(failure=why):
                good = self.quota()
                self.mock.set_health(doc)
                q = h.wait_until(lambda: not self.quota()["ok"] and self.quota(), 3,
                                 message="failed poll recorded")
                self.assertIn(why, q["error"])
                self.assertEqual(q["models"], good["models"], "the last data must be kept")
                self.assertEqual(q["poll_ms"], good["poll_ms"], "poll time is that of the last good poll")
                docs = self.wait_both(lambda d: "last_poll_error" in d, "replicas see the error")
                for d in docs:
                    self.assertIn(why, d["last_poll_error"])
                    self.assertIs(d["stale"], True)
                    self.assertEqual(d["last_health_poll"], docs[0]["last_health_poll"])
                # the data ages towards stale: after 3 intervals, remaining is unknown
                docs = self.wait_both(lambda d: d["tiers"][0]["remaining"] == "unknown",
                                      "data too old", timeout=3 * self.INTERVAL + 3)
                for d in docs:
                    self.assertTrue(d["tiers"][0]["available"])
                    self.assertIs(d["tiers"][0]["stale"], True)
                # the upstream comes back
                self.mock.set_health(health(opus=0.42))
                q = h.wait_until(lambda: self.quota()["ok"] and self.quota(), 3, message="recovered")
                self.assertNotIn("error", q)
                self.assertGreater(q["poll_ms"], good["poll_ms"])
                docs = self.wait_both(lambda d: "last_poll_error" not in d and not d["stale"]
                                      and d["tiers"][0]["remaining"] == "42%", "replicas recovered")

    def test_sighup_reloads_the_chain(self):
        p = self.poller("poller-h", config=self.cfg_path)
        original = self.cfg_path.read_text()
        h.wait_until(lambda: self.rc.cmd("GET", PREFIX + "fallback:config") == original, 5,
                     message="chain in Redis")
        self.wait_both(lambda d: d["tiers"][0]["name"] == "Claude Opus 4.6", "original chain")

        new = chain(self.mock, self.INTERVAL, min_remaining_fraction=0.3)
        new["tiers"][0]["name"] = "Opus Primary"
        h.write_json(self.cfg_path, new)
        t0 = time.monotonic()
        p.signal(signal.SIGHUP)
        h.wait_until(lambda: "Opus Primary" in (self.rc.cmd("GET", PREFIX + "fallback:config") or ""),
                     5, interval=0.005, message="new chain in Redis")
        docs = self.wait_both(lambda d: d["tiers"][0]["name"] == "Opus Primary", "renamed tier",
                              timeout=5)
        banner("SIGHUP -> both replicas serve the new chain after %.0f ms" % ((time.monotonic() - t0) * 1000))
        for d in docs:
            self.assertEqual(d["min_remaining_fraction"], 0.3)
            self.assertEqual([t["model"] for t in d["tiers"]], [OPUS, GEMINI, KIMI])
        for proxy in (self.a, self.b):
            r = h.request("POST", proxy.url + "/v1/messages", headers={"x-api-key": self.key},
                          body={"model": OPUS, "max_tokens": 16,
                                "messages": [{"role": "user", "content": "hi"}]})
            self.assertEqual(r.status, 200, r.text)
            self.assertEqual(r.headers.get("x-api-proxy-tier"), "Opus Primary")
        # the new min applies: 0.2 is now too little
        self.mock.set_health(health(opus=0.2))
        self.wait_both(lambda d: not d["tiers"][0]["available"], "opus below the new min")

        # a broken file on SIGHUP: the poller says so, keeps running and keeps the chain
        self.cfg_path.write_text('{"tiers": [ this is not json')
        p.signal(signal.SIGHUP)
        h.wait_until(lambda: p.log().count("SIGHUP") >= 2 and "not a JSON object" in p.log(), 3,
                     message="reload error logged")
        time.sleep(2 * self.INTERVAL)
        self.assertTrue(p.alive(), p.log_tail())
        self.assertIn("Opus Primary", self.rc.cmd("GET", PREFIX + "fallback:config"))
        self.assertEqual(self.fb(self.a)["tiers"][0]["name"], "Opus Primary")
        self.assertEqual(p.stop(), 0)


class BadConfigTest(h.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.redis = cls.start_redis()

    def check_refused(self, name, content, needle):
        path = self.workdir / (name + ".json")
        if content is not None:
            path.write_text(content)
        p = self.track(h.Poller(self.workdir, "http://127.0.0.1:9", self.redis,
                                fallback_config=path, name=name))
        p.spawn()
        rc = p.wait(5)
        log = p.log()
        self.assertNotEqual(rc, 0, log)
        self.assertIn("FALLBACK_CONFIG", log)
        self.assertIn(needle, log)
        return log

    def test_malformed_config_at_startup(self):
        ok_tier = {"name": "Opus", "model": OPUS, "type": "antigravity"}
        cases = [
            ("not-json", '{"enabled": true, "tiers": [', "not a JSON object"),
            ("missing", None, "cannot read"),
            ("no-base-url", json.dumps({"tiers": [ok_tier, {"model": KIMI, "type": "external"}]}),
             "base_url"),
            ("bad-type", json.dumps({"tiers": [{"model": OPUS, "type": "cloud"}]}), "unknown type"),
            ("bad-fraction", json.dumps({"min_remaining_fraction": "lots", "tiers": [ok_tier]}),
             "min_remaining_fraction"),
            ("dup-model", json.dumps({"tiers": [ok_tier, ok_tier]}), "appears twice"),
        ]
        for name, content, needle in cases:
            with self.subTest(case=name):
                self.check_refused(name, content, needle)
        self.assertIsNone(self.redis.client().cmd("GET", LEADER_KEY), "a refused poller took the lease")

    def test_proxy_refuses_malformed_config_too(self):
        path = self.workdir / "proxy-bad.json"
        path.write_text("[1, 2")
        p = self.track(h.Proxy(self.workdir, "http://127.0.0.1:9", self.redis,
                               fallback_config=path, name="proxy-bad"))
        p.spawn()
        rc = p.wait(5)
        self.assertNotEqual(rc, 0, p.log())
        self.assertIn("FALLBACK_CONFIG", p.log())


if __name__ == "__main__":
    unittest.main()
