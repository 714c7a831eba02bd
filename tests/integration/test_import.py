"""Importing the original service's keys.json (docs/contract.md section 2, KEYS_FILE; ap_import.h).

tests/fixtures/keys.json is a keys.json as the original wrote it: an admin_key, keys enabled
as 1 / true / false, usage with daily by_model (one day in the older input/output form),
hourly, total_by_model, and last_used with a +08:00 offset. Every admin view must show exactly
the file's history, however many times and by however many replicas it is imported.
"""

import collections
import copy
import datetime
import json
import unittest
from pathlib import Path

from lib import harness as h

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "keys.json"
DOC = json.loads(FIXTURE.read_text())
ADMIN_KEY = DOC["admin_key"]
TZ = "+08:00"  # the original bucketed days and hours in UTC+8


def mask(key):
    return key[:8] + "..." + key[-4:]


def is_enabled(v):
    return v is None or v is True or (isinstance(v, (int, float)) and not isinstance(v, bool)
                                      and v != 0)


def model_view(by_model):
    """{model: (total, requests)}; older entries carry input/output instead of total."""
    out = {}
    for m, v in by_model.items():
        total = v["total"] if "total" in v else v.get("input", 0) + v.get("output", 0)
        out[m] = (total, v.get("requests", 0))
    return out


def add_models(acc, view):
    for m, (t, r) in view.items():
        t0, r0 = acc.get(m, (0, 0))
        acc[m] = (t0 + t, r0 + r)


def instant(s):
    """An ISO 8601 time as (UTC instant truncated to the second, UTC offset)."""
    t = datetime.datetime.fromisoformat(s.replace("Z", "+00:00"))
    return int(t.timestamp()), t.utcoffset()


def start_importing_proxy(case, redis, mock, keys_file, name=None):
    """A proxy with KEYS_FILE and no ADMIN_KEY: its admin key is the file's."""
    p = case.start_proxy(mock, redis, admin_key=None, usage_tz=TZ, name=name,
                         env={"KEYS_FILE": str(keys_file)})
    p.admin_key = ADMIN_KEY
    return p


def with_marker(doc, n):
    """The document plus one marker key, put last. Import commands run in file order on
    one connection, so once the marker is listed the whole file has been applied."""
    d = copy.deepcopy(doc)
    marker = "sk-import-marker-%d-0123456789abcdef" % n
    d["keys"][marker] = {"name": "marker-%d" % n, "enabled": 1,
                         "created": "2026-02-12T00:00:00+08:00",
                         "usage": {"total_input": 0, "total_output": 0, "total_requests": 0,
                                   "daily": {}, "hourly": {}, "total_by_model": {}}}
    return d, "marker-%d" % n


def list_keys(proxy):
    """{name: listing entry} from GET /admin/keys."""
    st, doc = proxy.admin("GET", "/admin/keys")
    if st != 200:
        raise AssertionError("GET /admin/keys -> %s %r" % (st, doc))
    return {k["name"]: k for k in doc["keys"]}


class ImportCheck:
    """Assertions that every admin view equals the file (mixed into the test classes)."""

    def listing(self, proxy):
        return list_keys(proxy)

    def wait_listed(self, proxy, name, timeout=10):
        h.wait_until(lambda: name in self.listing(proxy), timeout,
                     message="key %r to be imported" % name)

    def check_listing(self, proxy):
        listing = self.listing(proxy)
        st, raw = proxy.admin("GET", "/admin/keys")
        raw = json.dumps(raw)
        for key, info in DOC["keys"].items():
            self.assertNotIn(key, raw, "full key in the listing")
            k = listing[info["name"]]
            u = info["usage"]
            self.assertEqual(k["key"], mask(key))
            self.assertIs(k["enabled"], is_enabled(info.get("enabled")), info["name"])
            self.assertEqual(k["created"], info["created"])
            self.assertEqual((k["total_input"], k["total_output"], k["total_requests"]),
                             (u["total_input"], u["total_output"], u["total_requests"]),
                             info["name"])
            self.check_last_used(k["last_used"], u.get("last_used"))

    def check_last_used(self, got, want):
        if want is None:
            self.assertIsNone(got)
            return
        self.assertIsInstance(got, str)
        self.assertEqual(instant(got), instant(want), (got, want))

    def check_key_usage(self, proxy):
        for key, info in DOC["keys"].items():
            st, doc = proxy.admin("GET", "/admin/keys/%s/usage" % key)
            self.assertEqual(st, 200, doc)
            self.assertEqual(doc["name"], info["name"])
            self.assertIs(doc["enabled"], is_enabled(info.get("enabled")))
            want, got = info["usage"], doc["usage"]
            self.assertEqual((got["total_input"], got["total_output"], got["total_requests"]),
                             (want["total_input"], want["total_output"], want["total_requests"]))
            self.check_last_used(got["last_used"], want.get("last_used"))
            self.assertEqual(sorted(got["daily"]), sorted(want["daily"]), info["name"])
            for day, d in want["daily"].items():
                g = got["daily"][day]
                self.assertEqual((g["input"], g["output"], g["requests"]),
                                 (d["input"], d["output"], d["requests"]), (info["name"], day))
                self.assertEqual(model_view(g["by_model"]), model_view(d["by_model"]),
                                 (info["name"], day))
            self.assertEqual(sorted(got["hourly"]), sorted(want["hourly"]), info["name"])
            for hour, hv in want["hourly"].items():
                self.assertEqual(model_view(got["hourly"][hour]["by_model"]),
                                 model_view(hv["by_model"]), (info["name"], hour))
            self.assertEqual(model_view(got["total_by_model"]),
                             model_view(want["total_by_model"]), info["name"])

    def check_rollups(self, proxy, extra_keys=0):
        keys = DOC["keys"].values()
        st, total = proxy.admin("GET", "/admin/usage")
        self.assertEqual(st, 200)
        self.assertEqual(total["total_input_tokens"], sum(k["usage"]["total_input"] for k in keys))
        self.assertEqual(total["total_output_tokens"],
                         sum(k["usage"]["total_output"] for k in keys))
        self.assertEqual(total["total_requests"], sum(k["usage"]["total_requests"] for k in keys))
        self.assertEqual(total["total_keys"], len(DOC["keys"]) + extra_keys)
        self.assertEqual(total["active_keys"],
                         sum(1 for k in keys if is_enabled(k.get("enabled"))) + extra_keys)

        days = collections.defaultdict(lambda: {"in": 0, "out": 0, "req": 0, "models": {},
                                                "keys": {}})
        hours = collections.defaultdict(dict)
        for k in keys:
            for day, d in k["usage"]["daily"].items():
                e = days[day]
                e["in"] += d["input"]
                e["out"] += d["output"]
                e["req"] += d["requests"]
                add_models(e["models"], model_view(d["by_model"]))
                e["keys"][k["name"]] = (d["input"], d["output"], d["requests"])
            for hour, hv in k["usage"]["hourly"].items():
                add_models(hours[hour], model_view(hv["by_model"]))
        st, doc = proxy.admin("GET", "/admin/usage/daily")
        self.assertEqual(st, 200)
        self.assertEqual([d["date"] for d in doc["days"]], sorted(days))
        for d in doc["days"]:
            e = days[d["date"]]
            self.assertEqual((d["total_input"], d["total_output"], d["total_requests"]),
                             (e["in"], e["out"], e["req"]), d["date"])
            self.assertEqual(model_view(d["by_model"]), e["models"], d["date"])
            self.assertEqual({k["name"]: (k["input"], k["output"], k["requests"])
                              for k in d["keys"]}, e["keys"], d["date"])
        st, doc = proxy.admin("GET", "/admin/usage/hourly")
        self.assertEqual(st, 200)
        self.assertEqual([x["hour"] for x in doc["hours"]], sorted(hours))
        for x in doc["hours"]:
            self.assertEqual(model_view(x["by_model"]), hours[x["hour"]], x["hour"])
        # ?date= picks one day of the file.
        st, doc = proxy.admin("GET", "/admin/usage/daily?date=2026-02-10")
        self.assertEqual([d["date"] for d in doc["days"]], ["2026-02-10"])

    def check_all(self, proxy, extra_keys=0):
        self.check_listing(proxy)
        self.check_key_usage(proxy)
        self.check_rollups(proxy, extra_keys)


class KeysFileImportTest(ImportCheck, h.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.redis = cls.start_redis()
        cls.mock = cls.start_mock()
        cls.keys_file = h.write_json(cls.workdir / "keys.json", DOC)
        cls.proxy = start_importing_proxy(cls, cls.redis, cls.mock, cls.keys_file)
        h.wait_until(lambda: len(list_keys(cls.proxy)) == len(DOC["keys"]), 10,
                     message="the keys of keys.json to be listed")

    def test_admin_key_comes_from_the_file(self):
        st, _ = self.proxy.admin("GET", "/admin/usage")
        self.assertEqual(st, 200)
        r = h.request("GET", self.proxy.url + "/admin/usage",
                      headers={"x-api-key": h.DEFAULT_ADMIN_KEY})
        self.assertEqual(r.status, 403)

    def test_views_equal_the_file(self):
        self.check_all(self.proxy)


class KeysFileReimportTest(ImportCheck, h.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.redis = cls.start_redis()
        cls.mock = cls.start_mock()
        cls.keys_file = h.write_json(cls.workdir / "keys.json", DOC)
        cls.proxy = start_importing_proxy(cls, cls.redis, cls.mock, cls.keys_file)
        h.wait_until(lambda: len(list_keys(cls.proxy)) == len(DOC["keys"]), 10,
                     message="the keys of keys.json to be listed")

    def test_reimport_on_restart_and_by_another_replica_changes_nothing(self):
        self.check_all(self.proxy)
        # Restart with the same keys plus a marker that shows the import has run again.
        doc1, marker1 = with_marker(DOC, 1)
        h.write_json(self.keys_file, doc1)
        self.assertEqual(self.proxy.stop(), 0)
        self.proxy.start()
        self.wait_listed(self.proxy, marker1)
        self.check_all(self.proxy, extra_keys=1)
        # A second replica importing the (same) file at the same time as the first is up.
        doc2, marker2 = with_marker(doc1, 2)
        second_file = h.write_json(self.workdir / "keys-2.json", doc2)
        second = start_importing_proxy(self, self.redis, self.mock, second_file,
                                       name="proxy-second")
        self.wait_listed(second, marker2)
        self.check_all(second, extra_keys=2)
        self.check_all(self.proxy, extra_keys=2)


class ImportedKeysWorkTest(ImportCheck, h.TestCase):
    """Imported keys authenticate with the flags the file gave them, and new usage adds on
    top of the imported history."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.redis = cls.start_redis()
        cls.mock = cls.start_mock()
        cls.proxy = start_importing_proxy(cls, cls.redis, cls.mock, FIXTURE)
        h.wait_until(lambda: len(list_keys(cls.proxy)) == len(DOC["keys"]), 10)

    def test_imported_keys_authenticate(self):
        body = {"model": "claude-sonnet-4-5", "max_tokens": 16,
                "messages": [{"role": "user", "content": "imported"}]}
        enabled_seen = 0
        for key, info in DOC["keys"].items():
            r = h.request("POST", self.proxy.url + "/v1/messages", body=body,
                          headers={"x-api-key": key})
            if is_enabled(info.get("enabled")):
                self.assertEqual(r.status, 200, (info["name"], r.text))
                enabled_seen += 1
                u = r.json()["usage"]
                want = info["usage"]

                def added(key=key, want=want):
                    st, doc = self.proxy.admin("GET", "/admin/keys/%s/usage" % key)
                    return doc["usage"]["total_requests"] == want["total_requests"] + 1 and doc

                doc = h.wait_until(added, 5, message="the new request on top of the import")
                self.assertEqual(doc["usage"]["total_input"],
                                 want["total_input"] + u["input_tokens"])
                self.assertEqual(doc["usage"]["total_output"],
                                 want["total_output"] + u["output_tokens"])
            else:
                self.assertEqual(r.status, 403, (info["name"], r.text))
        self.assertGreaterEqual(enabled_seen, 2)


class KeysFileWithAdminKeyTest(h.TestCase):
    """ADMIN_KEY, when set, wins over the file's admin_key."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.redis = cls.start_redis()
        cls.mock = cls.start_mock()
        cls.proxy = cls.start_proxy(cls.mock, cls.redis, usage_tz=TZ,
                                    env={"KEYS_FILE": str(FIXTURE)})

    def test_admin_key_env_wins(self):
        h.wait_until(lambda: len(list_keys(self.proxy)) == len(DOC["keys"]), 10)
        r = h.request("GET", self.proxy.url + "/admin/keys", headers={"x-api-key": ADMIN_KEY})
        self.assertEqual(r.status, 403)


class HttpImportTest(ImportCheck, h.TestCase):
    """POST /admin/import takes a keys.json body; importing it twice changes nothing."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.redis = cls.start_redis()
        cls.mock = cls.start_mock()
        cls.proxy = cls.start_proxy(cls.mock, cls.redis, usage_tz=TZ)

    def test_import_twice(self):
        raw = FIXTURE.read_bytes()
        n = len(DOC["keys"])
        r = h.request("POST", self.proxy.url + "/admin/import", body=raw,
                      headers={"x-api-key": self.proxy.admin_key,
                               "Content-Type": "application/json"})
        self.assertEqual(r.status, 200, r.text)
        first = r.json()
        self.assertEqual((first.get("imported"), first.get("already_present")), (n, 0), first)
        r = h.request("POST", self.proxy.url + "/admin/import", body=raw,
                      headers={"x-api-key": self.proxy.admin_key})
        self.assertEqual(r.status, 200, r.text)
        second = r.json()
        self.assertEqual((second.get("imported"), second.get("already_present")), (0, n), second)
        self.check_all(self.proxy)
        # The file's admin key does not replace ADMIN_KEY.
        r = h.request("GET", self.proxy.url + "/admin/usage", headers={"x-api-key": ADMIN_KEY})
        self.assertEqual(r.status, 403)

    def test_import_needs_admin_and_a_keys_document(self):
        r = h.request("POST", self.proxy.url + "/admin/import", body=DOC)
        self.assertEqual(r.status, 401)
        for bad in (b"{not json", b"[]", b'{"admin_key": "x"}', b'{"keys": []}'):
            r = h.request("POST", self.proxy.url + "/admin/import", body=bad,
                          headers={"x-api-key": self.proxy.admin_key})
            self.assertEqual(r.status, 400, (bad, r.text))
            self.assertIsInstance(r.json(), dict)


class HttpImportRefusedTest(ImportCheck, h.TestCase):
    """POST /admin/import while Redis refuses every write (maxmemory 1, noeviction): each key's
    EVAL gets an OOM error. The call used to be freed at the first error reply while the others
    were still pending (a use-after-free, which the ASan build turns into a crash); now it is
    answered once, after the last reply, and importing again later is complete and exact."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.redis = cls.start_redis()
        cls.rc = cls.redis.client()
        cls.mock = cls.start_mock()
        cls.proxy = cls.start_proxy(cls.mock, cls.redis, usage_tz=TZ)

    @classmethod
    def tearDownClass(cls):
        cls.rc.close()
        super().tearDownClass()

    def post_import(self):
        return h.request("POST", self.proxy.url + "/admin/import", body=FIXTURE.read_bytes(),
                         headers={"x-api-key": self.proxy.admin_key, "Content-Type": "application/json"})

    def test_refused_writes_then_retry(self):
        n = len(DOC["keys"])
        self.assertGreater(n, 2)
        self.rc.cmd("CONFIG", "SET", "maxmemory-policy", "noeviction")
        self.rc.cmd("CONFIG", "SET", "maxmemory", "1")
        try:
            for _ in range(3):
                r = self.post_import()
                self.assertEqual(r.status, 500, r.text)
                detail = r.json()["detail"]
                self.assertIn("%d of %d keys not imported" % (n, n), detail)
                self.assertIn("importing again is safe", detail)
                self.assertTrue(self.proxy.alive(), self.proxy.log_tail())
        finally:
            self.rc.cmd("CONFIG", "SET", "maxmemory", "0")
        self.assertIn("OOM", self.proxy.log())
        r = self.post_import()
        self.assertEqual(r.status, 200, r.text)
        self.assertEqual((r.json()["imported"], r.json()["already_present"]), (n, 0), r.json())
        self.check_all(self.proxy)


if __name__ == "__main__":
    unittest.main()
