"""The admin API (docs/contract.md section 3): every endpoint, its JSON shape, and admin auth."""

import datetime
import re
import unittest

from lib import harness as h

MODEL = "claude-sonnet-4-5"
MODEL2 = "gemini-3-flash"
ID_RE = re.compile(r"[0-9a-f]{16}")
ISO_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?([+-]\d{2}:\d{2}|Z)")


def anthropic_body(text="hello", model=MODEL):
    return {"model": model, "max_tokens": 64, "messages": [{"role": "user", "content": text}]}


def today_utc():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")


def mask(key):
    return key[:8] + "..." + key[-4:]


class AdminTest(h.TestCase):
    FALLBACK = {
        "enabled": True, "health_poll_interval_seconds": 30, "min_remaining_fraction": 0.05,
        "tiers": [
            {"name": "Claude Opus 4.6", "model": "claude-opus-4-6-thinking",
             "type": "antigravity", "health_key": "claude-opus-4-6-thinking"},
            {"name": "Gemini 3 Pro High", "model": "gemini-3-pro-high", "type": "upstream"},
            {"name": "Kimi K2.5", "model": "kimi-k2.5", "type": "external",
             "base_url": "http://127.0.0.1:9/v1", "api_key": "sk-tier-secret-kimi-0001",
             "max_tokens_limit": 8192},
        ]}

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.redis = cls.start_redis()
        cls.mock = cls.start_mock()
        cls.proxy = cls.start_proxy(cls.mock, cls.redis, fallback_config=cls.FALLBACK)

    def admin(self, method, path, body=None, key=None):
        return h.request(method, self.proxy.url + path, body=body,
                         headers={"x-api-key": self.proxy.admin_key if key is None else key})

    def ok(self, method, path, body=None):
        r = self.admin(method, path, body)
        self.assertEqual(r.status, 200, "%s %s -> %d %s" % (method, path, r.status, r.text))
        self.assertIn("application/json", r.headers.get("content-type", ""))
        return r.json()

    def create(self, name):
        return self.ok("POST", "/admin/keys", {"name": name})

    def use(self, key, text="hello", model=MODEL):
        r = h.request("POST", self.proxy.url + "/v1/messages", headers={"x-api-key": key},
                      body=anthropic_body(text, model))
        self.assertEqual(r.status, 200, r.body)
        u = r.json()["usage"]
        return u["input_tokens"], u["output_tokens"]

    def listing(self):
        return {k["id"]: k for k in self.ok("GET", "/admin/keys")["keys"]}

    def wait_requests(self, key_or_id, n):
        """Usage is flushed asynchronously: wait until the key shows n requests."""
        def counted():
            doc = self.ok("GET", "/admin/keys/%s/usage" % key_or_id)
            return doc if doc["usage"]["total_requests"] == n else None

        return h.wait_until(counted, 5, message="%d requests in the key's usage" % n)

    # ---- admin auth ----

    def test_admin_auth(self):
        user = self.create("auth-probe")["api_key"]
        endpoints = [("GET", "/admin/keys"), ("POST", "/admin/keys"), ("GET", "/admin/usage"),
                     ("GET", "/admin/usage/daily"), ("GET", "/admin/usage/hourly"),
                     ("GET", "/admin/fallback"), ("GET", "/admin/keys/%s/usage" % user),
                     ("POST", "/admin/keys/%s/disable" % user)]
        for method, path in endpoints:
            body = {"name": "x"} if method == "POST" else None
            r = h.request(method, self.proxy.url + path, body=body)
            self.assertEqual(r.status, 401, (method, path, r.text))
            self.assertIsInstance(r.json(), dict)
            r = self.admin(method, path, body, key=user)
            self.assertEqual(r.status, 403, (method, path, r.text))
            r = self.admin(method, path, body, key="sk-not-the-admin-key")
            self.assertEqual(r.status, 403, (method, path, r.text))
            r = self.admin(method, path, body, key=self.proxy.admin_key + "x")
            self.assertEqual(r.status, 403, (method, path, r.text))
        # None of that created a key or disabled the user key.
        names = [k["name"] for k in self.listing().values()]
        self.assertNotIn("x", names)
        self.assertTrue(self.ok("GET", "/admin/keys/%s/usage" % user)["enabled"])
        # Bearer carries the admin key too.
        r = h.request("GET", self.proxy.url + "/admin/usage",
                      headers={"Authorization": "Bearer " + self.proxy.admin_key})
        self.assertEqual(r.status, 200, r.text)

    # ---- keys ----

    def test_create_and_list(self):
        created = [self.create("list-%d" % i) for i in range(3)]
        for doc in created:
            for field in ("api_key", "id", "name"):
                self.assertIn(field, doc)
            # Extra fields are fine, but only api_key may hold the full key.
            self.assertEqual([f for f, v in doc.items() if f != "api_key"
                              and isinstance(v, str) and doc["api_key"] in v], [], doc)
            self.assertTrue(doc["api_key"].startswith("sk-"), doc)
            self.assertGreaterEqual(len(doc["api_key"]), 32)
            self.assertRegex(doc["id"], ID_RE)
        self.assertEqual([d["name"] for d in created], ["list-0", "list-1", "list-2"])
        self.assertEqual(len({d["api_key"] for d in created}), 3)
        self.assertEqual(len({d["id"] for d in created}), 3)
        # A body without a name still creates a key.
        unnamed = self.ok("POST", "/admin/keys", {})
        self.assertIn("api_key", unnamed)

        r = self.admin("GET", "/admin/keys")
        self.assertEqual(r.status, 200)
        for d in created + [unnamed]:
            self.assertNotIn(d["api_key"], r.text, "full key in the listing")
            self.assertNotIn(d["api_key"][3:], r.text, "full key (sans prefix) in the listing")
        keys = self.listing()
        for d in created:
            k = keys[d["id"]]
            for field in ("key", "id", "name", "enabled", "created", "total_input",
                          "total_output", "total_requests", "last_used"):
                self.assertIn(field, k)
            self.assertEqual(k["key"], mask(d["api_key"]))
            self.assertEqual(k["name"], d["name"])
            self.assertIs(k["enabled"], True)
            self.assertRegex(k["created"], ISO_RE)
            self.assertEqual((k["total_input"], k["total_output"], k["total_requests"]), (0, 0, 0))
            self.assertIsNone(k["last_used"])
        # The listing is in creation order (as the original's keys.json was), even for keys
        # created within the same millisecond.
        ids = [k["id"] for k in self.ok("GET", "/admin/keys")["keys"]]
        pos = [ids.index(d["id"]) for d in created]
        self.assertEqual(pos, sorted(pos))
        # The new key works at once.
        self.use(created[0]["api_key"])

    def test_names_survive_json_escaping(self):
        name = 'Zo\u00eb "the admin" \\ \u540d\u524d\n\ttab </script>'
        d = self.create(name)
        self.assertEqual(d["name"], name)
        self.assertEqual(self.listing()[d["id"]]["name"], name)
        self.assertEqual(self.ok("GET", "/admin/keys/%s/usage" % d["id"])["name"], name)
        self.use(d["api_key"])
        self.wait_requests(d["id"], 1)
        day = self.ok("GET", "/admin/usage/daily?date=%s" % today_utc())["days"][0]
        self.assertIn(name, [k["name"] for k in day["keys"]])
        doc = self.ok("POST", "/admin/keys/%s/disable" % d["api_key"])
        self.assertEqual(doc["name"], name)

    def test_create_rejects_bad_bodies(self):
        for body in (b"{nope", b"[1]", b'{"name": 5}'):
            r = self.admin("POST", "/admin/keys", body)
            self.assertEqual(r.status, 400, (body, r.text))
            self.assertIsInstance(r.json(), dict)

    def test_key_usage_by_key_and_by_id(self):
        d = self.create("usage-user")
        key, kid = d["api_key"], d["id"]
        i1, o1 = self.use(key, "first request", MODEL)
        i2, o2 = self.use(key, "second one, a bit longer", MODEL)
        i3, o3 = self.use(key, "third", MODEL2)
        by_key = self.wait_requests(key, 3)
        by_id = self.ok("GET", "/admin/keys/%s/usage" % kid)
        self.assertEqual(by_key, by_id)
        self.assertEqual(by_key["name"], "usage-user")
        self.assertIs(by_key["enabled"], True)
        u = by_key["usage"]
        self.assertEqual(u["total_input"], i1 + i2 + i3)
        self.assertEqual(u["total_output"], o1 + o2 + o3)
        self.assertEqual(u["total_requests"], 3)
        self.assertRegex(u["last_used"], ISO_RE)
        day = today_utc()
        self.assertEqual(list(u["daily"]), [day])
        dd = u["daily"][day]
        self.assertEqual((dd["input"], dd["output"], dd["requests"]),
                         (i1 + i2 + i3, o1 + o2 + o3, 3))
        expect_models = {MODEL: {"total": i1 + o1 + i2 + o2, "requests": 2},
                         MODEL2: {"total": i3 + o3, "requests": 1}}

        def totals(by_model):
            return {m: {"total": v["total"], "requests": v["requests"]}
                    for m, v in by_model.items()}

        self.assertEqual(totals(dd["by_model"]), expect_models)
        self.assertEqual(len(u["hourly"]), 1)
        (hour, hv), = u["hourly"].items()
        self.assertRegex(hour, r"^%s \d{2}:00$" % day)
        self.assertEqual(totals(hv["by_model"]), expect_models)
        self.assertEqual(totals(u["total_by_model"]), expect_models)
        # The listing agrees.
        k = self.listing()[kid]
        self.assertEqual((k["total_input"], k["total_output"], k["total_requests"]),
                         (i1 + i2 + i3, o1 + o2 + o3, 3))
        self.assertEqual(k["last_used"], u["last_used"])
        # GET /admin/keys/<key> alone is not required, but must never leak the full key.
        r = self.admin("GET", "/admin/keys/%s/usage" % key)
        self.assertNotIn(key, r.text)

    def test_disable_enable_delete(self):
        d = self.create("lifecycle")
        key, kid = d["api_key"], d["id"]
        self.use(key)
        # By key, then (idempotently) by id.
        for ref in (key, kid):
            doc = self.ok("POST", "/admin/keys/%s/disable" % ref)
            self.assertEqual((doc["status"], doc["name"]), ("disabled", "lifecycle"))
        self.assertIs(self.listing()[kid]["enabled"], False)
        self.assertIs(self.ok("GET", "/admin/keys/%s/usage" % kid)["enabled"], False)
        r = h.request("POST", self.proxy.url + "/v1/messages", headers={"x-api-key": key},
                      body=anthropic_body())
        self.assertEqual(r.status, 403, r.text)

        doc = self.ok("POST", "/admin/keys/%s/enable" % kid)
        self.assertEqual((doc["status"], doc["name"]), ("enabled", "lifecycle"))
        self.assertIs(self.listing()[kid]["enabled"], True)
        self.use(key)

        doc = self.ok("DELETE", "/admin/keys/%s" % key)
        self.assertEqual((doc["status"], doc["name"]), ("deleted", "lifecycle"))
        self.assertNotIn(kid, self.listing())
        r = h.request("POST", self.proxy.url + "/v1/messages", headers={"x-api-key": key},
                      body=anthropic_body())
        self.assertEqual(r.status, 401, r.text)
        for method, path in (("GET", "/admin/keys/%s/usage" % key),
                             ("GET", "/admin/keys/%s/usage" % kid),
                             ("POST", "/admin/keys/%s/enable" % key),
                             ("POST", "/admin/keys/%s/disable" % kid),
                             ("DELETE", "/admin/keys/%s" % key),
                             ("DELETE", "/admin/keys/%s" % kid)):
            r = self.admin(method, path)
            self.assertEqual(r.status, 404, (method, path, r.text))

    def test_unknown_keys_are_404(self):
        for ref in ("sk-" + "ab" * 24, "0123456789abcdef", "nope"):
            for method, path in (("GET", "/admin/keys/%s/usage" % ref),
                                 ("POST", "/admin/keys/%s/disable" % ref),
                                 ("POST", "/admin/keys/%s/enable" % ref),
                                 ("DELETE", "/admin/keys/%s" % ref)):
                r = self.admin(method, path)
                self.assertEqual(r.status, 404, (method, path, r.text))
                self.assertIsInstance(r.json(), dict)

    # ---- usage views ----

    def test_usage_totals(self):
        doc = self.ok("GET", "/admin/usage")
        for f in ("total_input_tokens", "total_output_tokens", "total_requests", "total_keys",
                  "active_keys"):
            self.assertIsInstance(doc.get(f), int, (f, doc))
        keys = self.ok("GET", "/admin/keys")["keys"]
        self.assertEqual(doc["total_keys"], len(keys))
        self.assertEqual(doc["active_keys"], sum(1 for k in keys if k["enabled"]))
        # A disabled key stops being active; a new key is counted.
        d = self.create("totals-probe")
        before = self.ok("GET", "/admin/usage")
        self.ok("POST", "/admin/keys/%s/disable" % d["id"])
        after = self.ok("GET", "/admin/usage")
        self.assertEqual(after["total_keys"], before["total_keys"])
        self.assertEqual(after["active_keys"], before["active_keys"] - 1)
        # Requests add up.
        d2 = self.create("totals-user")
        base = h.wait_until(self.settled_usage, 5)
        i, o = self.use(d2["api_key"], "count me")
        h.wait_until(lambda: self.ok("GET", "/admin/usage")["total_requests"]
                     == base["total_requests"] + 1, 5)
        now = self.ok("GET", "/admin/usage")
        self.assertEqual(now["total_input_tokens"], base["total_input_tokens"] + i)
        self.assertEqual(now["total_output_tokens"], base["total_output_tokens"] + o)

    def settled_usage(self):
        """/admin/usage once nothing is waiting to be flushed."""
        health = h.request("GET", self.proxy.url + "/health").json()
        if health.get("usage_pending", 0) != 0:
            return None
        return self.ok("GET", "/admin/usage")

    def test_usage_daily(self):
        d = self.create("daily-user")
        i, o = self.use(d["api_key"], "daily words here", MODEL2)
        self.wait_requests(d["id"], 1)
        day = today_utc()
        doc = self.ok("GET", "/admin/usage/daily")
        self.assertIsInstance(doc.get("days"), list)
        dates = [x["date"] for x in doc["days"]]
        self.assertEqual(dates, sorted(dates))
        self.assertIn(day, dates)
        entry = doc["days"][dates.index(day)]
        for f in ("total_input", "total_output", "total_requests"):
            self.assertIsInstance(entry[f], int)
        self.assertIsInstance(entry["by_model"], dict)
        self.assertIn(MODEL2, entry["by_model"])
        for m in entry["by_model"].values():
            self.assertIsInstance(m["total"], int)
            self.assertIsInstance(m["requests"], int)
        totals = [m["total"] for m in entry["by_model"].values()]
        self.assertEqual(totals, sorted(totals, reverse=True), "by_model not by total descending")
        names = [k["name"] for k in entry["keys"]]
        self.assertIn("daily-user", names)
        k = entry["keys"][names.index("daily-user")]
        self.assertEqual((k["input"], k["output"], k["requests"]), (i, o, 1))
        ktotals = [x["input"] + x["output"] for x in entry["keys"]]
        self.assertEqual(ktotals, sorted(ktotals, reverse=True), "keys not by total descending")
        self.assertEqual(entry["total_requests"], sum(x["requests"] for x in entry["keys"]))
        self.assertEqual(entry["total_input"], sum(x["input"] for x in entry["keys"]))

        one = self.ok("GET", "/admin/usage/daily?date=%s" % day)
        self.assertEqual([x["date"] for x in one["days"]], [day])
        self.assertEqual(one["days"][0]["total_requests"], entry["total_requests"])
        self.assertEqual(self.ok("GET", "/admin/usage/daily?date=2001-01-01"), {"days": []})
        for bad in ("yesterday", "2024-1-1", "2024-01-011", "2024/01/01", "", "20240101"):
            r = self.admin("GET", "/admin/usage/daily?date=%s" % bad)
            self.assertEqual(r.status, 400, (bad, r.text))
            self.assertIsInstance(r.json(), dict)

    def test_usage_hourly(self):
        d = self.create("hourly-user")
        i, o = self.use(d["api_key"], "hourly", MODEL)
        self.wait_requests(d["id"], 1)
        doc = self.ok("GET", "/admin/usage/hourly")
        self.assertIsInstance(doc.get("hours"), list)
        self.assertTrue(doc["hours"])
        hours = [x["hour"] for x in doc["hours"]]
        self.assertEqual(hours, sorted(hours))
        for x in doc["hours"]:
            self.assertRegex(x["hour"], r"^\d{4}-\d{2}-\d{2} \d{2}:00$")
            self.assertIsInstance(x["by_model"], dict)
            for m in x["by_model"].values():
                self.assertIsInstance(m["total"], int)
                self.assertIsInstance(m["requests"], int)
        self.assertTrue(any(MODEL in x["by_model"] for x in doc["hours"]))
        day = today_utc()
        one = self.ok("GET", "/admin/usage/hourly?date=%s" % day)
        self.assertTrue(one["hours"])
        self.assertTrue(all(x["hour"].startswith(day + " ") for x in one["hours"]))
        self.assertEqual(self.ok("GET", "/admin/usage/hourly?date=2001-01-01"), {"hours": []})
        r = self.admin("GET", "/admin/usage/hourly?date=soon")
        self.assertEqual(r.status, 400, r.text)

    def test_fallback_shape(self):
        r = self.admin("GET", "/admin/fallback")
        self.assertEqual(r.status, 200, r.text)
        self.assertNotIn("sk-tier-secret-kimi-0001", r.text)
        doc = r.json()
        self.assertIs(doc["enabled"], True)
        self.assertIn("last_health_poll", doc)
        if doc["last_health_poll"] is not None:
            self.assertRegex(doc["last_health_poll"], ISO_RE)
        tiers = doc["tiers"]
        self.assertEqual([(t["name"], t["model"], t["type"]) for t in tiers],
                         [(t["name"], t["model"], t["type"]) for t in self.FALLBACK["tiers"]])
        for t in tiers:
            self.assertIsInstance(t["available"], bool)
            self.assertTrue(t["remaining"] in ("unknown", "unlimited")
                            or re.fullmatch(r"\d+(\.\d+)?%", t["remaining"]), t)
            self.assertNotIn("api_key", t)
        self.assertEqual(tiers[2]["remaining"], "unlimited")
        self.assertIs(tiers[2]["available"], True)

    def test_unknown_admin_path_is_404(self):
        self.assertEqual(self.admin("GET", "/admin/nothing-here").status, 404)


class AdminDisabledTest(h.TestCase):
    """Without ADMIN_KEY (and no KEYS_FILE admin key) the admin API says why it is off."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.redis = cls.start_redis()
        cls.mock = cls.start_mock()
        cls.proxy = cls.start_proxy(cls.mock, cls.redis, admin_key=None)

    def test_admin_answers_503_with_a_reason(self):
        for key in (None, "", "sk-test-admin-key", "anything"):
            hdrs = {} if key is None else {"x-api-key": key}
            for method, path in (("GET", "/admin/keys"), ("POST", "/admin/keys"),
                                 ("GET", "/admin/usage"), ("GET", "/admin/fallback")):
                r = h.request(method, self.proxy.url + path, headers=hdrs,
                              body={"name": "x"} if method == "POST" else None)
                self.assertEqual(r.status, 503, (key, path, r.text))
                self.assertIn("ADMIN_KEY", r.text)
                self.assertIsInstance(r.json(), dict)
        # The proxy itself still serves.
        self.assertEqual(h.request("GET", self.proxy.url + "/health").status, 200)


if __name__ == "__main__":
    unittest.main()
