"""Per-key policies on real replicas, a real Redis and the mock upstream (README "Per-key
policy"): the admin API and command line, every refusal in both endpoint formats, the
x-ratelimit-* headers, refusals counted apart, exact costs, export and import, keys without a
policy costing no Redis command, policy changes reaching another replica, leases of the
default length renewed, and POLICY_FAIL_MODE with Redis frozen (SIGSTOP).

The fleet-wide proofs (HAProxy over three replicas) are test_policy_cluster.py; the
admission script's invariants under random interleavings are test_policy_lua.py.
"""

import json
import os
import signal
import subprocess
import threading
import time
import unittest

from lib import harness as h

SONNET = "claude-sonnet-4-5"
GEMINI = "gemini-3-flash"
# USD per million tokens (three decimals at most); sonnet's cache prices are explicit.
PRICES = {
    "_note": "test prices",
    SONNET: {"input": 3, "output": 15, "cache_read": 0.3, "cache_write": 3.75},
    "gemini-*": {"input": 0.125, "output": 0.5},
}


def nano(tokens, usd_per_mtok):
    """Exact cost in nano-dollars of `tokens` at a price (USD per million, <= 3 decimals)."""
    return tokens * round(usd_per_mtok * 1000)


def usd_text(n):
    """Nano-dollars as the decimal text the views print."""
    s = "%d.%09d" % (n // 10**9, n % 10**9)
    return s.rstrip("0").rstrip(".")


def body(model=SONNET, text="hello", max_tokens=64, stream=False):
    return {"model": model, "max_tokens": max_tokens, "stream": stream,
            "messages": [{"role": "user", "content": text}]}


def chat(model=SONNET, text="hello", max_tokens=64):
    return {"model": model, "max_tokens": max_tokens,
            "messages": [{"role": "user", "content": text}]}


def admin_cli(redis, *args, timeout=20):
    env = dict(os.environ, REDIS_URL=redis.url)
    env.pop("REDIS_PREFIX", None)
    return subprocess.run([str(h.bin_dir() / "api-proxy-admin")] + list(args), env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=timeout)


class PolicyTest(h.TestCase):
    """One replica with PRICES_CONFIG, another (same Redis) to see changes propagate."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.redis = cls.start_redis()
        cls.mock = cls.start_mock()
        prices = h.write_json(cls.workdir / "prices.json", PRICES)
        env = {"PRICES_CONFIG": str(prices), "LOG_LEVEL": "info"}
        cls.proxy = cls.start_proxy(cls.mock, cls.redis, env=env)
        cls.proxy2 = cls.start_proxy(cls.mock, cls.redis, env=env, name="proxy2")
        cls.rc = cls.redis.client()

    def create(self, policy=None, proxy=None, name="p"):
        b = {"name": name}
        if policy is not None:
            b["policy"] = policy
        st, doc = (proxy or self.proxy).admin("POST", "/admin/keys", b)
        self.assertEqual(st, 200, doc)
        return doc

    def send(self, key, b=None, path="/v1/messages", proxy=None, headers=None):
        hdrs = {"x-api-key": key}
        hdrs.update(headers or {})
        return h.request("POST", (proxy or self.proxy).url + path, headers=hdrs,
                         body=b if b is not None else body())

    def settle(self):
        for p in (self.proxy, self.proxy2):
            h.wait_until(lambda p=p: h.request("GET", p.url + "/health").json()["usage_pending"] == 0,
                         10, message="usage written")

    def key_usage(self, key_id):
        st, doc = self.proxy.admin("GET", "/admin/keys/%s/usage" % key_id)
        self.assertEqual(st, 200, doc)
        return doc

    # ---- admin API -------------------------------------------------------------------
    def test_admin_api_sets_shows_and_clears_a_policy(self):
        pol = {"models": [SONNET, "gemini-*"], "expires_at": "2099-01-01T08:00:00+08:00",
               "rpm": 100, "tpm": 50000, "max_concurrent": 5, "daily_tokens": 10**6,
               "monthly_tokens": 2 * 10**7, "daily_usd": 5.25, "monthly_usd": 100}
        doc = self.create(pol)
        canonical = dict(pol, expires_at="2099-01-01T00:00:00Z")
        self.assertEqual(doc["policy"], canonical)
        kid = doc["id"]
        for ref in (kid, doc["api_key"]):  # by id or by the key itself
            st, got = self.proxy.admin("GET", "/admin/keys/%s/policy" % ref)
            self.assertEqual((st, got), (200, canonical))
        listed = {k["id"]: k for k in self.proxy.admin("GET", "/admin/keys")[1]["keys"]}
        self.assertEqual(listed[kid]["policy"], canonical)
        self.assertEqual(self.key_usage(kid)["policy"], canonical)

        st, got = self.proxy.admin("PUT", "/admin/keys/%s/policy" % kid, {"rpm": 7, "tpm": None})
        self.assertEqual((st, got), (200, {"rpm": 7}))  # replaced, nulls dropped
        st, got = self.proxy.admin("PUT", "/admin/keys/%s/policy" % kid, {})
        self.assertEqual((st, got), (200, {}))
        self.assertEqual(self.proxy.admin("GET", "/admin/keys/%s/policy" % kid), (200, {}))
        self.assertIsNone(self.rc.cmd("HGET", "ap:key:" + h_hash(doc["api_key"]), "policy"))

    def test_bad_policies_are_400_with_the_field_named_and_nothing_changes(self):
        doc = self.create({"rpm": 3})
        kid = doc["id"]
        cases = [({"rmp": 1}, 'unknown policy field "rmp"'),
                 ({"rpm": -1}, "rpm: must be an integer"),
                 ({"rpm": 2.5}, "rpm: must be an integer"),
                 ({"models": []}, "models: must be a list"),
                 ({"models": ["gpt-*-x"]}, "models[0]"),
                 ({"expires_at": "2030-01-01 00:00"}, "expires_at: must be an ISO 8601 instant"),
                 ({"daily_usd": "5"}, "daily_usd: must be a number of USD"),
                 ([1, 2], "must be a JSON object")]
        for pol, want in cases:
            st, got = self.proxy.admin("PUT", "/admin/keys/%s/policy" % kid, pol)
            self.assertEqual(st, 400, (pol, got))
            self.assertIn(want, got["detail"], pol)
            st, got = self.proxy.admin("POST", "/admin/keys", {"name": "x", "policy": pol})
            self.assertEqual(st, 400, (pol, got))
            self.assertIn(want, got["detail"])
        r = h.request("PUT", self.proxy.url + "/admin/keys/%s/policy" % kid,
                      headers={"x-api-key": self.proxy.admin_key}, body=b"{not json")
        self.assertEqual(r.status, 400)
        self.assertEqual(self.proxy.admin("GET", "/admin/keys/%s/policy" % kid), (200, {"rpm": 3}))
        self.assertEqual(self.proxy.admin("GET", "/admin/keys/%s/policy" % ("0" * 16))[0], 404)
        self.assertEqual(self.proxy.admin("PUT", "/admin/keys/%s/policy" % ("0" * 16), {})[0], 404)
        # A user key cannot touch policies.
        r = h.request("PUT", self.proxy.url + "/admin/keys/%s/policy" % kid,
                      headers={"x-api-key": doc["api_key"]}, body={})
        self.assertEqual(r.status, 403)

    def test_command_line_policy_show_set_and_create(self):
        r = admin_cli(self.redis, "create", "cli", '{"rpm": 2, "models": ["claude-*"]}')
        self.assertEqual(r.returncode, 0, r.stderr)
        doc = json.loads(r.stdout)
        self.assertEqual(doc["policy"], {"models": ["claude-*"], "rpm": 2})
        r = admin_cli(self.redis, "policy", "show", doc["id"])
        self.assertEqual((r.returncode, json.loads(r.stdout)), (0, {"models": ["claude-*"], "rpm": 2}))
        # Every replica applies a change made from the command line (pub/sub), at once.
        self.assertEqual(self.send(doc["api_key"]).status, 200)
        self.assertEqual(self.send(doc["api_key"], proxy=self.proxy2).status, 200)
        r = admin_cli(self.redis, "policy", "set", doc["api_key"], '{"models": ["gemini-*"]}')
        self.assertEqual((r.returncode, json.loads(r.stdout)), (0, {"models": ["gemini-*"]}))
        for p in (self.proxy, self.proxy2):
            h.wait_until(lambda p=p: self.send(doc["api_key"], proxy=p).status == 403, 2,
                         message="the new allow-list on %s" % p.name)
        r = admin_cli(self.redis, "policy", "set", doc["id"], '{"rpm": "x"}')
        self.assertEqual(r.returncode, 2)
        self.assertIn("rpm: must be an integer", r.stderr)
        r = admin_cli(self.redis, "policy", "show", "f" * 16)
        self.assertEqual(r.returncode, 1)
        self.assertIn("key not found", r.stderr)

    # ---- refusals -------------------------------------------------------------------
    def test_model_allow_list_and_expiry_are_403_permission_error_in_each_format(self):
        doc = self.create({"models": ["gemini-*"]})
        k = doc["api_key"]
        self.assertEqual(self.send(k, body(GEMINI)).status, 200)
        r = self.send(k, body(SONNET))
        self.assertEqual(r.status, 403)
        self.assertEqual(r.json(), {"type": "error", "error": {
            "type": "permission_error",
            "message": "model %s is not allowed for this API key" % SONNET}})
        self.assertNotIn("retry-after", r.headers)
        r = self.send(k, chat(SONNET), path="/v1/chat/completions")
        self.assertEqual(r.status, 403)
        self.assertEqual(r.json(), {"error": {
            "message": "model %s is not allowed for this API key" % SONNET,
            "type": "permission_error", "code": None}})

        past = self.create({"expires_at": "2020-01-01T00:00:00Z"})["api_key"]
        r = self.send(past, body(GEMINI))
        self.assertEqual((r.status, r.json()["error"]["type"]), (403, "permission_error"))
        self.assertEqual(r.json()["error"]["message"], "API key expired at 2020-01-01T00:00:00Z")
        # Expiry applies to the pass-through routes too.
        r = h.request("GET", self.proxy.url + "/v1/models", headers={"x-api-key": past})
        self.assertEqual(r.status, 403)
        r = h.request("GET", self.proxy.url + "/v1/models", headers={"x-api-key": k})
        self.assertEqual(r.status, 200)

    def test_rpm_is_429_with_retry_after_headers_count_down_refused_counted_apart(self):
        doc = self.create({"rpm": 3, "tpm": 100000})
        k, kid = doc["api_key"], doc["id"]
        seen = []
        for i in range(3):
            r = self.send(k, body(text="n%d" % i))
            self.assertEqual(r.status, 200, r.text)
            seen.append((r.headers["x-ratelimit-limit-requests"], r.headers["x-ratelimit-remaining-requests"]))
            self.assertEqual(r.headers["x-ratelimit-limit-tokens"], "100000")
            self.assertLess(int(r.headers["x-ratelimit-remaining-tokens"]), 100000)
        self.assertEqual(seen, [("3", "2"), ("3", "1"), ("3", "0")])
        r = self.send(k)
        self.assertEqual(r.status, 429)
        self.assertEqual(r.json(), {"type": "error", "error": {
            "type": "rate_limit_error",
            "message": "rate limit reached: 3 requests per minute for this API key"}})
        self.assertTrue(1 <= int(r.headers["retry-after"]) <= 60, r.headers)
        r = self.send(k, chat(), path="/v1/chat/completions", proxy=self.proxy2)  # all replicas together
        self.assertEqual(r.status, 429)
        self.assertEqual(r.json()["error"]["type"], "rate_limit_error")
        self.assertEqual(r.json()["error"]["code"], "rate_limit_exceeded")
        self.assertIn("retry-after", r.headers)
        # Streams carry the headers too.
        other = self.create({"rpm": 5})["api_key"]
        with h.stream("POST", self.proxy.url + "/v1/messages", headers={"x-api-key": other},
                      body=body(stream=True)) as s:
            self.assertEqual(s.status, 200)
            self.assertEqual(s.headers["x-ratelimit-remaining-requests"], "4")
            s.read_all()

        self.settle()
        u = self.key_usage(kid)["usage"]
        self.assertEqual((u["total_requests"], u["total_refused"], u["total_errors"]), (3, 2, 0))
        day = next(iter(u["daily"].values()))
        self.assertEqual((day["requests"], day["refused"]), (3, 2))
        metrics = h.request("GET", self.proxy.url + "/metrics").text
        self.assertRegex(metrics, r'ap_policy_refused_total\{reason="rpm"\} [1-9]')
        self.assertRegex(metrics, r'ap_policy_admissions_total\{result="checked"\} [1-9]')

    def test_tpm_refuses_once_the_window_holds_the_limit(self):
        # Each request reserves ceil(len(body)/4) + max_tokens; the real usage replaces it.
        doc = self.create({"tpm": 300})
        k, kid = doc["api_key"], doc["id"]
        ok = 0
        for i in range(20):
            r = self.send(k, body(text="tpm %d" % i, max_tokens=10))
            if r.status != 200:
                break
            ok += 1
        self.assertEqual(r.status, 429, r.text)
        self.assertIn("300 tokens per minute", r.json()["error"]["message"])
        self.assertTrue(1 <= int(r.headers["retry-after"]) <= 60)
        self.assertGreater(ok, 1)
        # What the window holds is real usage (the mock's), not the estimates.
        base = "ap:pl:%s:" % kid
        held = int(self.rc.cmd("HGET", base + "tv", "sum"))
        self.settle()
        u = self.key_usage(kid)["usage"]
        self.assertEqual(held, u["total_input"] + u["total_output"])
        self.assertGreaterEqual(held, 300)

    def test_budgets_refuse_in_each_format_and_hold(self):
        # Anthropic: rate_limit_error; OpenAI: insufficient_quota. The request that would pass
        # the budget is refused before it is sent.
        k = self.create({"daily_tokens": 250})["api_key"]
        statuses = [self.send(k, body(text="b%d" % i, max_tokens=60)).status for i in range(8)]
        self.assertIn(429, statuses)
        first = statuses.index(429)
        self.assertTrue(all(s == 200 for s in statuses[:first]))
        r = self.send(k, body(max_tokens=60))
        self.assertEqual(r.status, 429)
        self.assertEqual(r.json()["error"]["type"], "rate_limit_error")
        self.assertIn("daily token budget", r.json()["error"]["message"])
        self.assertGreater(int(r.headers["retry-after"]), 0)
        r = self.send(k, chat(max_tokens=60), path="/v1/chat/completions")
        self.assertEqual(r.status, 429)
        e = r.json()["error"]
        self.assertEqual((e["type"], e["code"]), ("insufficient_quota", "insufficient_quota"))
        self.settle()
        kid = [x for x in self.proxy.admin("GET", "/admin/keys")[1]["keys"] if x["key"] == mask(k)][0]["id"]
        u = self.key_usage(kid)["usage"]
        self.assertLessEqual(u["total_input"] + u["total_output"], 250)

        # A spend budget on a model without a price: refused, that model and its tiers alike.
        ku = self.create({"daily_usd": 1})["api_key"]
        r = self.send(ku, body("claude-opus-4-6-thinking"))
        self.assertEqual(r.status, 403)
        self.assertIn("has no price in PRICES_CONFIG", r.json()["error"]["message"])
        self.assertEqual(self.send(ku, body(GEMINI)).status, 200)

    def test_costs_are_exact_in_every_view(self):
        doc = self.create(name="cost")
        k, kid = doc["api_key"], doc["id"]
        self.mock.behaviour(SONNET, usage={"input_tokens": 1234, "output_tokens": 567,
                                           "cache_creation_input_tokens": 89,
                                           "cache_read_input_tokens": 1000})
        self.mock.behaviour(GEMINI, usage={"input_tokens": 7, "output_tokens": 3})
        try:
            for _ in range(3):
                self.assertEqual(self.send(k, body(SONNET)).status, 200)
            self.assertEqual(self.send(k, chat(GEMINI), path="/v1/chat/completions").status, 200)
        finally:
            self.mock.behaviour(SONNET)
            self.mock.behaviour(GEMINI)
        self.settle()
        one_sonnet = nano(1234, 3) + nano(567, 15) + nano(89, 3.75) + nano(1000, 0.3)
        gem = nano(7, 0.125) + nano(3, 0.5)  # the gemini-* prefix
        total = 3 * one_sonnet + gem
        u = self.key_usage(kid)["usage"]
        raw = self.key_usage_raw(kid)
        self.assertIn('"cost_usd":%s' % usd_text(total), raw)  # exact decimal text
        self.assertEqual(u["total_by_model"][SONNET]["cost_usd"], float(usd_text(3 * one_sonnet)))
        self.assertEqual(u["total_by_model"][GEMINI]["cost_usd"], float(usd_text(gem)))
        day = next(iter(u["daily"].values()))
        self.assertEqual(day["cost_usd"], float(usd_text(total)))
        hour = next(iter(u["hourly"].values()))
        self.assertEqual(hour["by_model"][SONNET]["cost_usd"], float(usd_text(3 * one_sonnet)))
        listed = [x for x in self.proxy.admin("GET", "/admin/keys")[1]["keys"] if x["id"] == kid][0]
        self.assertEqual(listed["cost_usd"], float(usd_text(total)))
        daily = self.proxy.admin("GET", "/admin/usage/daily")[1]["days"]
        keyrow = [x for d in daily for x in d["keys"] if x["id"] == kid]
        self.assertEqual(sum(x["cost_usd"] for x in keyrow), float(usd_text(total)))
        hourly = self.proxy.admin("GET", "/admin/usage/hourly")[1]["hours"]
        self.assertTrue(any(hh["by_tenant"].get("cost", {}).get(SONNET, {}).get("cost_usd")
                            == float(usd_text(3 * one_sonnet)) for hh in hourly))
        # An hour's key entries carry their own cost (the sum of their models).
        hourkeys = [x for hh in hourly for x in hh["keys"] if x["id"] == kid]
        self.assertEqual(sum(x["cost_usd"] for x in hourkeys), float(usd_text(total)), hourkeys)
        self.assertGreaterEqual(self.proxy.admin("GET", "/admin/usage")[1]["cost_usd"],
                                float(usd_text(total)))

    def key_usage_raw(self, kid):
        return h.request("GET", self.proxy.url + "/admin/keys/%s/usage" % kid,
                         headers={"x-api-key": self.proxy.admin_key}).text

    # ---- costs of keys without policy: nothing -----------------------------------------
    def test_keys_without_policy_send_no_admission_to_redis(self):
        k = self.create(name="plain")["api_key"]
        limited = self.create({"rpm": 1000})["api_key"]
        admit_sha = sha1(admin_cli(self.redis, "script", "admit").stdout)
        for kk in (k, limited):  # cached first
            self.assertEqual(self.send(kk).status, 200)
        seen = monitor(self.redis, lambda: [self.send(k) for _ in range(20)])
        self.assertFalse([c for c in seen if admit_sha in c or "pl:" in c], seen[:5])
        seen = monitor(self.redis, lambda: [self.send(limited) for _ in range(5)])
        self.assertEqual(len([c for c in seen if admit_sha in c]), 5)

    # ---- export / import --------------------------------------------------------------
    def test_export_then_import_into_a_fresh_redis_keeps_keys_policies_and_history(self):
        doc = self.create({"rpm": 50, "models": [SONNET]}, name="moving")
        k = doc["api_key"]
        # Every counter an export carries: cache tokens, an error, a refusal, costs.
        self.mock.behaviour(SONNET, count=2, usage={"input_tokens": 11, "output_tokens": 7,
                                                    "cache_creation_input_tokens": 5,
                                                    "cache_read_input_tokens": 3})
        for _ in range(2):
            self.assertEqual(self.send(k).status, 200)
        self.mock.behaviour(SONNET, count=1, status=400)
        self.assertEqual(self.send(k).status, 400)
        self.assertEqual(self.send(k, body(GEMINI)).status, 403)
        self.settle()
        st, exp = self.proxy.admin("GET", "/admin/export")
        self.assertEqual(st, 200)
        self.assertEqual(exp["format"], "api-proxy-export")
        self.assertNotIn(k, json.dumps(exp))  # never a full key
        entry = exp["keys"]["sha256:" + h_hash(k)]
        self.assertEqual(entry["policy"], {"models": [SONNET], "rpm": 50})
        u = entry["usage"]
        self.assertEqual((u["total_requests"], u["total_cache_creation"], u["total_cache_read"],
                          u["total_errors"], u["total_refused"]), (2, 10, 6, 1, 1), u)
        cli = admin_cli(self.redis, "export")
        self.assertEqual(cli.returncode, 0, cli.stderr)
        self.assertEqual(json.loads(cli.stdout)["keys"]["sha256:" + h_hash(k)]["policy"], entry["policy"])

        fresh = self.start_redis(name="fresh")
        p = self.start_proxy(self.mock, fresh, name="fresh-proxy")
        st, res = p.admin("POST", "/admin/import", exp)
        self.assertEqual(st, 200, res)
        self.assertEqual(res["imported"], len(exp["keys"]))
        self.assertEqual(p.admin("GET", "/admin/keys/%s/policy" % doc["id"]), (200, entry["policy"]))
        u = p.admin("GET", "/admin/keys/%s/usage" % doc["id"])[1]["usage"]
        self.assertEqual((u["total_requests"], u["total_input"]), (2, entry["usage"]["total_input"]))
        # The whole history came across: the new deployment exports the same entry.
        again = p.admin("GET", "/admin/export")[1]["keys"]["sha256:" + h_hash(k)]
        self.assertEqual(again, entry)
        # The same secret works there, under the same policy.
        self.assertEqual(self.send(k, proxy=p).status, 200)
        self.assertEqual(self.send(k, body(GEMINI), proxy=p).status, 403)
        # Importing again changes nothing.
        st, res = p.admin("POST", "/admin/import", exp)
        self.assertEqual((res["imported"], res["already_present"], res["id_taken"]),
                         (0, len(exp["keys"]), 0), res)
        # Another secret claiming that id is reported, not imported.
        st, res = p.admin("POST", "/admin/import", dict(exp, keys={"sha256:" + "0" * 64: entry}))
        self.assertEqual((st, res["imported"], res["already_present"], res["id_taken"]), (200, 0, 0, 1), res)
        # The command line imports the same file.
        f = h.write_json(self.workdir / "export.json", exp)
        fresh2 = self.start_redis(name="fresh2")
        r = admin_cli(fresh2, "import", str(f))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(json.loads(r.stdout)["imported"], len(exp["keys"]))
        r = admin_cli(fresh2, "policy", "show", doc["id"])
        self.assertEqual(json.loads(r.stdout), entry["policy"])

    # ---- leases of the default length -------------------------------------------------
    def test_default_lease_is_within_30s_and_renewed_while_the_request_lives(self):
        doc = self.create({"max_concurrent": 3})
        self.mock.behaviour(SONNET, chunk_delay_ms=400)
        try:
            with h.stream("POST", self.proxy.url + "/v1/messages", headers={"x-api-key": doc["api_key"]},
                          body=body(stream=True, text="a b c d e f g h i j k l m n o p q")) as s:
                self.assertEqual(s.status, 200)
                live = "ap:pl:%s:live" % doc["id"]

                def lease():
                    got = self.rc.cmd("ZRANGE", live, 0, -1, "WITHSCORES")
                    sec, usec = self.rc.cmd("TIME")
                    return int(got[1]) - (int(sec) * 1000 + int(usec) // 1000) if got else None
                first = lease()
                self.assertIsNotNone(first)
                self.assertTrue(15000 <= first <= 30000, first)  # default 20 s, never past 30 s
                t0 = time.monotonic()
                expiry0 = int(self.rc.cmd("ZRANGE", live, 0, -1, "WITHSCORES")[1])
                h.wait_until(lambda: int(self.rc.cmd("ZRANGE", live, 0, -1, "WITHSCORES")[1]) > expiry0,
                             8, interval=0.1, message="the lease renewed")
                renewed_after = time.monotonic() - t0
                self.assertLess(renewed_after, 7.5)
                # The client leaves mid-stream: the upstream transfer ends and so does the slot.
        finally:
            self.mock.behaviour(SONNET)
        h.wait_until(lambda: self.rc.cmd("ZCARD", "ap:pl:%s:live" % doc["id"]) == 0, 5,
                     message="the slot released when the client left")


class PricesConfigTest(h.TestCase):
    """The shipped example loads; a broken PRICES_CONFIG stops the replica with the reason."""

    def test_example_loads_and_bad_files_are_startup_errors(self):
        redis = self.start_redis()
        example = h.ROOT / "prices.json.example"
        models = [k for k in json.loads(example.read_text()) if not k.startswith("_")]
        p = self.start_proxy("http://127.0.0.1:9", redis, env={"PRICES_CONFIG": str(example)})
        self.assertEqual(h.request("GET", p.url + "/health").json()["policy"]["prices"], len(models))
        for name, text, want in (("missing", None, "cannot read"),
                                 ("bad", '{"m": {"input": 1}}', "m: output: required")):
            path = self.workdir / ("%s.json" % name)
            if text is not None:
                path.write_text(text)
            bad = h.Proxy(self.workdir, "http://127.0.0.1:9", redis, env={"PRICES_CONFIG": str(path)},
                          name="bad-" + name, valgrind=False)
            bad.spawn()
            self.assertNotEqual(bad.wait(10), 0)
            self.assertIn("PRICES_CONFIG", bad.log())
            self.assertIn(want, bad.log())


class FailModeTest(h.TestCase):
    """Redis frozen with SIGSTOP: open serves limited keys unchecked and counts them when
    Redis returns; closed answers 503; keys without counted limits are not affected."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.redis = cls.start_redis()
        cls.mock = cls.start_mock()
        env = {"POLICY_TIMEOUT_MS": "300", "LOG_LEVEL": "info"}
        cls.open = cls.start_proxy(cls.mock, cls.redis, env=dict(env, POLICY_FAIL_MODE="open"), name="open")
        cls.closed = cls.start_proxy(cls.mock, cls.redis, env=dict(env, POLICY_FAIL_MODE="closed"),
                                     name="closed")

    def test_bad_mode_is_a_startup_error(self):
        p = h.Proxy(self.workdir, self.mock, self.redis, env={"POLICY_FAIL_MODE": "maybe"}, name="bad",
                    valgrind=False)
        p.spawn()
        self.assertNotEqual(p.wait(10), 0)
        self.assertIn("POLICY_FAIL_MODE=maybe must be open or closed", p.log())

    def test_sigstop_open_serves_and_counts_later_closed_refuses_503(self):
        keys = {}
        for name, pol in (("limited", {"rpm": 1000, "daily_tokens": 10**6}), ("plain", None),
                          ("models", {"models": [SONNET]})):
            b = {"name": name}
            if pol:
                b["policy"] = pol
            doc = self.open.admin("POST", "/admin/keys", b)[1]
            keys[name] = (doc["api_key"], doc["id"])
        for p in (self.open, self.closed):
            for k, _ in keys.values():  # cached on both
                self.assertEqual(send(p, k).status, 200)
            self.assertEqual(h.request("GET", p.url + "/health").json()["policy"]["fail_mode"], p.name)
            self.assertIn('ap_policy_fail_mode{mode="%s"} 1' % p.name,
                          h.request("GET", p.url + "/metrics").text)
        before = self.open.admin("GET", "/admin/keys/%s/usage" % keys["limited"][1])[1]["usage"]

        os.kill(self.redis.pid, signal.SIGSTOP)
        try:
            r = send(self.open, keys["limited"][0])
            self.assertEqual(r.status, 200, r.text)
            self.assertEqual(r.headers.get("x-ratelimit-remaining-requests"), None)
            for _ in range(3):
                self.assertEqual(send(self.open, keys["limited"][0]).status, 200)
            r = send(self.closed, keys["limited"][0])
            self.assertEqual(r.status, 503, r.text)
            self.assertEqual(r.json()["error"]["type"], "overloaded_error")
            self.assertIn("cannot be checked right now", r.json()["error"]["message"])
            self.assertEqual(r.headers["retry-after"], "1")
            r = send(self.closed, keys["limited"][0], path="/v1/chat/completions")
            self.assertEqual((r.status, r.json()["error"]["type"]), (503, "server_error"))
            # Keys without counted limits are decided from memory, in either mode.
            for p in (self.open, self.closed):
                self.assertEqual(send(p, keys["plain"][0]).status, 200)
                self.assertEqual(send(p, keys["models"][0]).status, 200)
            h.wait_until(lambda: h.request("GET", self.open.url + "/health").json()["redis"] == "down", 10,
                         message="the replica to notice")
            self.assertEqual(send(self.open, keys["limited"][0]).status, 200)  # at once now
            self.assertEqual(send(self.closed, keys["limited"][0]).status, 503)
            hp = h.request("GET", self.open.url + "/health").json()["policy"]
            self.assertEqual(hp["unchecked"], 5)
            self.assertEqual(h.request("GET", self.closed.url + "/health").json()["policy"]
                             ["refused_unavailable"], 3)
            self.assertIn('ap_policy_admissions_total{result="unchecked"} 5',
                          h.request("GET", self.open.url + "/metrics").text)
        finally:
            os.kill(self.redis.pid, signal.SIGCONT)
        # Served unchecked, counted when Redis returns; reported in the log.
        def counted():
            u = self.open.admin("GET", "/admin/keys/%s/usage" % keys["limited"][1])[1]["usage"]
            return u["total_requests"] - before["total_requests"] == 5
        h.wait_until(counted, 15, message="the unchecked requests counted")
        h.wait_until(lambda: "were served unchecked" in self.open.log(), 5, message="the report")
        h.wait_until(lambda: "refused with 503" in self.closed.log(), 10, message="the closed replica's report")
        # Checked again.
        self.assertEqual(send(self.closed, keys["limited"][0]).status, 200)


def send(p, key, path="/v1/messages"):
    b = chat() if path == "/v1/chat/completions" else body()
    return h.request("POST", p.url + path, headers={"x-api-key": key}, body=b, timeout=15)


def h_hash(key):
    import hashlib
    return hashlib.sha256(key.encode()).hexdigest()


def sha1(text):
    import hashlib
    return hashlib.sha1(text.encode()).hexdigest()


def mask(key):
    return key[:8] + "..." + key[-4:]


def monitor(redis, action):
    """Commands Redis executed while action() ran (MONITOR lines)."""
    import socket
    s = socket.create_connection(("127.0.0.1", redis.port), timeout=5)
    s.sendall(b"MONITOR\r\n")
    buf = b""
    while not buf.endswith(b"+OK\r\n"):
        buf += s.recv(100)
    lines = []
    stop = threading.Event()

    def reader():
        data = b""
        s.settimeout(0.2)
        while not stop.is_set():
            try:
                chunk = s.recv(65536)
            except OSError:
                continue
            if not chunk:
                break
            data += chunk
        lines.extend(data.decode("utf-8", "replace").splitlines())
    t = threading.Thread(target=reader, daemon=True)
    t.start()
    action()
    time.sleep(0.4)  # the usage batches of the last requests
    stop.set()
    t.join(5)
    s.close()
    return lines


if __name__ == "__main__":
    unittest.main()
