"""Per-key limits hold exactly across the fleet (tests/cluster/cluster.sh: Redis, the mock
upstream, two pollers, three replicas, HAProxy). Client traffic goes through the load balancer
unless a test spreads it over the replicas itself:

- rpm=100, 64 concurrent clients, 1,000 requests within 30 s: exactly 100 admitted, every other
  one 429 rate_limit_error with retry-after; the same with the clients split 60/30/10 over the
  replicas directly;
- max_concurrent=5 with 2 s streams: never more than 5 in flight at the mock upstream (its
  high-water mark), and once a replica holding all 5 slots is killed with SIGKILL mid-stream
  they come back when its leases lapse (POLICY_LEASE_SECONDS=3 here; the default's bound is
  checked in test_policy.py);
- daily_tokens=N with 64 clients: the tokens counted never pass N (the mock's usage stays
  within each reservation); monthly_usd likewise, priced with PRICES_CONFIG;
- an allow-list of the first two tiers: requests fail over between them and never reach the
  third (a key without the list does, under the same failures);
- expiry set through the load balancer takes effect on every replica within 1 s of the
  instant;
- Redis frozen (SIGSTOP) in POLICY_FAIL_MODE=open: limited keys are served unchecked and
  counted when it returns (the closed mode: test_policy.py).

Every measured figure is printed with ">>> MEASURED". Skipped only when haproxy is missing.
"""

import json
import os
import signal
import threading
import time
import unittest

from lib import fleet
from lib import harness as h
from lib.fleet import PREFIX, REPLICAS, banner, find_haproxy

OPUS = "claude-opus-4-6-thinking"
GEMINI = "gemini-3-pro-high"
KIMI = "kimi-k2.5"
LEASE_S = 3
PRICES = {"claude-usd-test": {"input": 3, "output": 15}, "claude-*": {"input": 3, "output": 15},
          "gemini-*": {"input": 1.25, "output": 10}, KIMI: {"input": 0.6, "output": 2.5}}


def msg(model, text="hello", max_tokens=64, stream=False):
    return {"model": model, "max_tokens": max_tokens, "stream": stream,
            "messages": [{"role": "user", "content": text}]}


class Outcomes:
    """What a crowd of clients got: statuses, and the 429s' retry-after and error types."""

    def __init__(self):
        self.lock = threading.Lock()
        self.status = {}
        self.bad_refusals = []
        self.errors = []

    def add(self, r, want_type="rate_limit_error"):
        with self.lock:
            self.status[r.status] = self.status.get(r.status, 0) + 1
            if r.status == 429:
                try:
                    e = r.json()["error"]
                except (ValueError, KeyError, TypeError):
                    e = {}
                if "retry-after" not in r.headers or e.get("type") != want_type:
                    self.bad_refusals.append((r.headers.get("retry-after"), r.text[:200]))

    def fail(self, what):
        with self.lock:
            self.errors.append(what)


def crowd(urls, n_threads, total, make_request, on_refused_sleep=0.0, outcomes=None):
    """n_threads clients, each on its own keep-alive connection to urls[i % len(urls)], sending
    `total` requests between them (make_request(client, i) -> Response, or None: this client
    stops). Returns Outcomes."""
    out = outcomes or Outcomes()
    lock = threading.Lock()
    nxt = [0]

    def take():
        with lock:
            if nxt[0] >= total:
                return None
            nxt[0] += 1
            return nxt[0] - 1

    def run(url):
        c = h.Client(url, timeout=60)
        try:
            while True:
                i = take()
                if i is None:
                    return
                try:
                    r = make_request(c, i)
                except Exception as e:  # counted, never hanging the test
                    out.fail(repr(e))
                    continue
                if r is None:
                    return
                out.add(r)
                if r.status == 429 and on_refused_sleep:
                    time.sleep(on_refused_sleep)
        finally:
            c.close()
    ths = [threading.Thread(target=run, args=(urls[i % len(urls)],), daemon=True) for i in range(n_threads)]
    for t in ths:
        t.start()
    for t in ths:
        t.join(300)
    return out


@unittest.skipIf(find_haproxy() is None, "haproxy is not installed (Debian: apt-get install haproxy)")
class PolicyFleetTest(fleet.FleetCase):

    @classmethod
    def fleet_env(cls):
        prices = h.write_json(cls.workdir / "prices.json", PRICES)
        return {"PRICES_CONFIG": str(prices), "POLICY_LEASE_SECONDS": str(LEASE_S)}

    def key(self, policy, name="pol"):
        st, doc = self.admin(self.lb, "POST", "/admin/keys", {"name": name, "policy": policy})
        self.assertEqual(st, 200, doc)
        return doc["api_key"], doc["id"]

    def usage_of(self, kid, replica="proxy1"):
        return self.admin_ok(self.replica_url[replica], "/admin/keys/%s/usage" % kid)["usage"]

    def mock_stats(self):
        return self.mock("GET", "/_stats")

    def post(self, client, key, b, path="/v1/messages"):
        return client.post(path, b, headers={"x-api-key": key})

    # ==================================================================================
    def test_1_rpm_exactly_100_of_1000_through_the_lb_and_split_over_replicas(self):
        for how, urls, threads in (("through HAProxy", [self.lb], 64),
                                   ("split 60/30/10 over the replicas",
                                    [self.replica_url["proxy1"]] * 6 + [self.replica_url["proxy2"]] * 3 +
                                    [self.replica_url["proxy3"]], 60)):
            with self.subTest(how):
                key, kid = self.key({"rpm": 100})
                model = "claude-rpm-%s" % kid[:6]  # counted apart at the mock
                before = self.mock_stats()["by_model"].get(model, 0)
                t0 = time.monotonic()
                out = crowd(urls, threads, 1000, lambda c, i: self.post(c, key, msg(model, "r%d" % i)))
                took = time.monotonic() - t0
                served = self.mock_stats()["by_model"].get(model, 0) - before
                banner("rpm=100 %s: 1000 requests from %d clients in %.1f s: %r; mock served %d"
                       % (how, threads, took, out.status, served))
                self.assertLess(took, 30)
                self.assertEqual(out.errors, [])
                self.assertEqual(out.status, {200: 100, 429: 900})
                self.assertEqual(served, 100)
                self.assertEqual(out.bad_refusals, [])
                self.settle()
                for name in REPLICAS:
                    u = self.usage_of(kid, name)
                    self.assertEqual((u["total_requests"], u["total_refused"], u["total_errors"]),
                                     (100, 900, 0), name)

    # ==================================================================================
    def test_2_max_concurrent_5_never_exceeded_and_slots_return_after_sigkill(self):
        key, kid = self.key({"max_concurrent": 5})
        model = "claude-cc-%s" % kid[:6]
        # ~2 s streams: 10 words of text, about 16 events, 130 ms apart.
        self.mock("POST", "/_control/behaviour", {"model": model, "chunk_delay_ms": 130,
                                                  "text": "one two three four five six seven eight nine ten"})
        self.mock("DELETE", "/_requests")
        stop = time.monotonic() + 6
        out = Outcomes()

        def stream_request(c, i):
            r = self.post(c, key, msg(model, stream=True))
            if r.status == 200 and b"message_stop" not in r.body:
                out.fail("incomplete stream")
            return r
        t0 = time.monotonic()
        # Clients keep sending until the deadline (a 429 backs off 100 ms).
        crowd([self.lb], 64, 10**6, lambda c, i: stream_request(c, i) if time.monotonic() < stop else None,
              on_refused_sleep=0.1, outcomes=out)
        took = time.monotonic() - t0
        st = self.mock_stats()
        peak = st["inflight_max_by_model"].get(model, 0)
        banner("max_concurrent=5, 64 clients, 2 s streams for %.1f s: %r; in flight at the mock at most %d"
               % (took, out.status, peak))
        self.assertEqual(out.errors, [])
        self.assertEqual(out.bad_refusals, [])
        self.assertLessEqual(peak, 5)
        self.assertEqual(peak, 5)  # the limit was reached, not merely respected
        self.assertGreaterEqual(out.status.get(200, 0), 10)
        self.assertGreater(out.status.get(429, 0), 0)

        # Five long streams held by proxy1, which is then killed mid-stream.
        self.mock("POST", "/_control/behaviour", {"model": model, "chunk_delay_ms": 1000,
                                                  "text": "one two three four five six seven eight nine ten"})
        streams = []
        for _ in range(5):
            s = h.stream("POST", self.replica_url["proxy1"] + "/v1/messages", headers={"x-api-key": key},
                         body=msg(model, stream=True), timeout=60)
            self.assertEqual(s.status, 200)
            streams.append(s)
        h.wait_until(lambda: self.mock_stats()["inflight"] >= 5, 10, message="5 streams at the mock")
        r = h.request("POST", self.replica_url["proxy2"] + "/v1/messages", headers={"x-api-key": key},
                      body=msg(model))
        self.assertEqual(r.status, 429, r.text)
        self.assertIn("concurrency limit", r.json()["error"]["message"])
        self.sigkill("proxy1")
        t_kill = time.monotonic()
        for s in streams:
            s.close()

        def admitted():
            r = h.request("POST", self.replica_url["proxy2"] + "/v1/messages", headers={"x-api-key": key},
                          body=msg(model, max_tokens=8), timeout=30)
            return r.status == 200
        self.mock("POST", "/_control/behaviour", {"model": model})  # quick answers again
        h.wait_until(admitted, LEASE_S + 5, interval=0.1, message="the dead replica's slots back")
        back = time.monotonic() - t_kill
        banner("replica holding all 5 slots killed with SIGKILL: slots back after %.2f s "
               "(POLICY_LEASE_SECONDS=%d)" % (back, LEASE_S))
        self.assertLessEqual(back, LEASE_S + 1.5)
        self.assertGreaterEqual(back, 0.5)  # freed by the lease, not by the killed connections
        self.cluster("restart", "proxy1")

    # ==================================================================================
    def budget_run(self, policy, model, total):
        """64 clients through the LB on a key with a budget; the mock's usage per request (30 in,
        90 out) stays within each reservation (a ~200-byte body: ~50 + max_tokens 100)."""
        key, kid = self.key(policy)
        self.mock("POST", "/_control/behaviour", {"model": model,
                                                  "usage": {"input_tokens": 30, "output_tokens": 90}})
        text = "budget " * 20
        out = crowd([self.lb], 64, total,
                    lambda c, i: self.post(c, key, msg(model, text, max_tokens=100)))
        self.mock("POST", "/_control/behaviour", {"model": model})
        self.settle()
        return key, kid, out

    def test_3_daily_tokens_never_exceeded_by_64_clients(self):
        N = 30000
        key, kid, out = self.budget_run({"daily_tokens": N}, "claude-budget-test", 600)
        ok = out.status.get(200, 0)
        tokens = [sum(d["input"] + d["output"] for d in self.usage_of(kid, n)["daily"].values()) for n in REPLICAS]
        banner("daily_tokens=%d, 64 clients, 600 requests of 120 tokens: %r; tokens counted %r"
               % (N, out.status, tokens))
        self.assertEqual(out.errors, [])
        self.assertEqual(out.bad_refusals, [])
        self.assertEqual(set(out.status), {200, 429})
        self.assertEqual(tokens, [ok * 120] * 3)
        self.assertLessEqual(ok * 120, N)
        # Refusals start only near the limit (each request reserves ~150 tokens, 64 at once).
        self.assertGreaterEqual(ok * 120, N - 64 * 150)
        # A request whose reservation cannot fit what is left is refused until tomorrow. (How
        # much is left varies: near the end, reservations in flight refuse some requests.)
        c = h.Client(self.lb)
        r = c.post("/v1/chat/completions", {"model": "claude-budget-test", "max_tokens": N - ok * 120 + 1,
                                            "messages": [{"role": "user", "content": "x" * 400}]},
                   headers={"x-api-key": key})
        self.assertEqual(r.status, 429, r.text)
        self.assertEqual(r.json()["error"]["type"], "insufficient_quota")
        self.assertGreater(int(r.headers["retry-after"]), 1)

    def test_4_monthly_usd_never_exceeded_by_64_clients(self):
        limit = 0.25
        key, kid, out = self.budget_run({"monthly_usd": limit}, "claude-usd-test", 400)
        ok = out.status.get(200, 0)
        one = 30 * 3000 + 90 * 15000  # nano-dollars at 3 / 15 USD per million tokens
        self.rc.cmd("EVAL", h.admin_script("fold"), 0, PREFIX)  # the usage journal into the counters read below
        days = self.rc.cmd("SMEMBERS", PREFIX + "u:kdays:" + kid)
        spent = sum(int(self.rc.cmd("HGET", PREFIX + "u:kd:%s:%s" % (kid, d), "cost") or 0) for d in days)
        views = [self.usage_of(kid, n)["cost_usd"] for n in REPLICAS]
        banner("monthly_usd=%s, 64 clients, 400 requests of USD %.6f: %r; spent USD %.6f, views %r"
               % (limit, one / 1e9, out.status, spent / 1e9, views))
        self.assertEqual(out.errors, [])
        self.assertEqual(out.bad_refusals, [])
        self.assertEqual(spent, ok * one)
        self.assertLessEqual(spent, int(limit * 1e9))
        self.assertGreaterEqual(spent, int(limit * 1e9) - 64 * 2 * one)
        self.assertEqual(views, [spent / 1e9] * 3)

    # ==================================================================================
    def test_5_allow_list_of_two_tiers_never_reaches_the_third(self):
        self.rc.cmd("DEL", PREFIX + "exhausted")
        self.rc.cmd("PUBLISH", PREFIX + "events", json.dumps({"type": "config"}))
        for m in (OPUS, GEMINI):
            self.mock("POST", "/_control/behaviour", {"model": m, "status": 429})
        try:
            limited, _ = self.key({"models": [OPUS, GEMINI]})
            free, _ = self.key({"rpm": 1000}, name="free")
            before = self.mock_stats()["by_model"]
            c = h.Client(self.lb)
            statuses = [self.post(c, limited, msg(OPUS, "f%d" % i)).status for i in range(12)]
            after = self.mock_stats()["by_model"]
            tried = {m: after.get(m, 0) - before.get(m, 0) for m in (OPUS, GEMINI, KIMI)}
            banner("allow-list [opus, gemini], both answering 429: statuses %r, upstream tries %r"
                   % (sorted(set(statuses)), tried))
            self.assertEqual(set(statuses), {429})
            self.assertEqual(tried[KIMI], 0)
            self.assertGreater(tried[GEMINI], 0)  # it did fail over, within the list
            # The same failures with a key that may use every model: the third tier answers.
            r = self.post(c, free, msg(OPUS))
            self.assertEqual(r.status, 200, r.text)
            self.assertEqual(r.headers["x-api-proxy-model"], KIMI)
            # The allow-list is the requested model's too.
            r = self.post(c, limited, msg(KIMI))
            self.assertEqual(r.status, 403)
        finally:
            for m in (OPUS, GEMINI):
                self.mock("POST", "/_control/behaviour", {"model": m})
            self.rc.cmd("DEL", PREFIX + "exhausted")
            self.rc.cmd("PUBLISH", PREFIX + "events", json.dumps({"type": "config"}))

    # ==================================================================================
    def test_6_expiry_takes_effect_on_every_replica_within_1s(self):
        key, kid = self.key({"rpm": 100000}, name="expiring")
        for n in REPLICAS:  # cached everywhere: the change must travel by pub/sub
            r = h.request("POST", self.replica_url[n] + "/v1/messages", headers={"x-api-key": key},
                          body=msg("claude-exp-test"))
            self.assertEqual(r.status, 200)
        at = time.time() + 1.5
        iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at)) + ".%03dZ" % int((at % 1) * 1000)
        st, pol = self.admin(self.lb, "PUT", "/admin/keys/%s/policy" % kid, {"rpm": 100000, "expires_at": iso})
        self.assertEqual(st, 200, pol)
        seen = {}

        def watch(name):
            c = h.Client(self.replica_url[name], headers={"x-api-key": key})
            last_ok = first_refused = None
            deadline = at + 3
            while time.time() < deadline:
                sent = time.time()
                r = c.post("/v1/messages", msg("claude-exp-test", max_tokens=4))
                if r.status == 200:
                    last_ok = sent
                elif r.status == 403 and first_refused is None:
                    first_refused = time.time()
                    self.assertIn("expired", r.json()["error"]["message"])
                    break
                time.sleep(0.01)
            seen[name] = (last_ok, first_refused)
            c.close()
        ths = [threading.Thread(target=watch, args=(n,)) for n in REPLICAS]
        for t in ths:
            t.start()
        for t in ths:
            t.join(30)
        lags = {n: (v[1] - at if v[1] else None) for n, v in seen.items()}
        banner("expires_at set through the LB 1.5 s ahead: refused on each replica %r s after the instant"
               % {n: round(v, 3) if v is not None else None for n, v in lags.items()})
        for n, (last_ok, first_refused) in seen.items():
            self.assertIsNotNone(first_refused, n)
            self.assertLessEqual(first_refused - at, 1.0, n)
            self.assertIsNotNone(last_ok, n)
            self.assertLess(last_ok, at + 0.05, n)  # nothing served after the instant

    # ==================================================================================
    def test_7_redis_frozen_open_mode_serves_limited_keys_and_counts_them_later(self):
        key, kid = self.key({"rpm": 100000, "daily_tokens": 10**7})
        c = h.Client(self.lb, headers={"x-api-key": key})
        for n in REPLICAS:  # cached everywhere
            self.assertEqual(h.request("POST", self.replica_url[n] + "/v1/messages", headers={"x-api-key": key},
                                       body=msg("claude-stop-test")).status, 200)
        self.settle()
        before = self.usage_of(kid)["total_requests"]
        pid = self.pid("redis")
        os.kill(pid, signal.SIGSTOP)
        served = 0
        try:
            t0 = time.monotonic()
            # The first requests wait until the replicas see Redis gone (durable usage waits for
            # Redis while it seems up); the rest are served at once.
            while time.monotonic() - t0 < 6:
                r = c.post("/v1/messages", msg("claude-stop-test", max_tokens=8))
                self.assertEqual(r.status, 200, r.text)
                served += 1
            unchecked = sum(h.request("GET", self.replica_url[n] + "/health").json()["policy"]["unchecked"]
                            for n in REPLICAS)
        finally:
            os.kill(pid, signal.SIGCONT)
        banner("Redis frozen 6 s, POLICY_FAIL_MODE=open: %d requests of a limited key served (%d unchecked)"
               % (served, unchecked))
        self.assertGreater(served, 5)
        self.assertEqual(unchecked, served)
        h.wait_until(lambda: self.usage_of(kid)["total_requests"] - before == served, 20,
                     message="every request served meanwhile counted")


if __name__ == "__main__":
    unittest.main()
