"""Date ranges on the usage views: GET /admin/usage/daily and /hourly with from=, to=
(YYYY-MM-DD, in USAGE_TZ) or days=N (the N days ending today), as the console's
overview and usage explorer read them; and the fields the console needs beside the
original ones (each day's errors, each hour's keys).

History on fixed past days comes from a keys.json import; today's from real requests
through the proxy (USAGE_TZ=+08:00, so "today" is not the machine's UTC day near midnight).
"""

import datetime

from lib import harness as h

TZ = datetime.timezone(datetime.timedelta(hours=8))
OPUS, GEMINI = "claude-opus-4-6-thinking", "gemini-3-pro-high"


def m(total, requests, **io):
    return dict(total=total, requests=requests, **io)


HISTORY = {"keys": {
    "sk-range-ann-0000000000000000000000000001": {
        "name": "Ann", "enabled": 1, "created": "2026-01-05T10:00:00+08:00",
        "usage": {
            "total_input": 0, "total_output": 0, "total_requests": 0,
            "daily": {
                "2026-02-08": {"input": 100, "output": 10, "requests": 2, "by_model": {OPUS: m(110, 2)}},
                "2026-02-09": {"input": 200, "output": 20, "requests": 3,
                               "by_model": {OPUS: m(150, 2), GEMINI: m(70, 1)}},
                "2026-02-10": {"input": 300, "output": 30, "requests": 4, "by_model": {GEMINI: m(330, 4)}},
            },
            "hourly": {
                "2026-02-09 10:00": {"by_model": {OPUS: m(150, 2)}},
                "2026-02-09 23:00": {"by_model": {GEMINI: m(70, 1)}},
                "2026-02-10 00:00": {"by_model": {GEMINI: m(330, 4)}},
            }}},
    "sk-range-bob-0000000000000000000000000002": {
        "name": "Bob", "enabled": 1, "created": "2026-01-06T10:00:00+08:00",
        "usage": {
            "total_input": 0, "total_output": 0, "total_requests": 0,
            "daily": {"2026-02-09": {"input": 5, "output": 5, "requests": 1, "by_model": {OPUS: m(10, 1)}}},
            "hourly": {"2026-02-09 10:00": {"by_model": {OPUS: m(10, 1)}}}}},
}}


class UsageRangeTest(h.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.redis = cls.start_redis()
        cls.mock = cls.start_mock()
        cls.proxy = cls.start_proxy(cls.mock, cls.redis, usage_tz="+08:00")
        status, doc = cls.proxy.admin("POST", "/admin/import", HISTORY)
        if status != 200 or doc.get("imported") != 2:
            raise AssertionError("import failed: %s %r" % (status, doc))
        cls.ids = {k["name"]: k["id"] for k in cls.proxy.admin("GET", "/admin/keys")[1]["keys"]}

    def get(self, path, status=200):
        code, doc = self.proxy.admin("GET", path)
        self.assertEqual(code, status, "%s -> %s %r" % (path, code, doc))
        return doc

    @staticmethod
    def today(offset_days=0):
        return (datetime.datetime.now(TZ) + datetime.timedelta(days=offset_days)).strftime("%Y-%m-%d")

    def test_daily_range_is_the_same_view_restricted(self):
        everything = {d["date"]: d for d in self.get("/admin/usage/daily")["days"]}
        doc = self.get("/admin/usage/daily?from=2026-02-09&to=2026-02-10")
        self.assertEqual((doc["from"], doc["to"]), ("2026-02-09", "2026-02-10"))
        self.assertEqual([d["date"] for d in doc["days"]], ["2026-02-09", "2026-02-10"])
        for d in doc["days"]:
            self.assertEqual(d, everything[d["date"]])
        nine = doc["days"][0]
        self.assertEqual((nine["total_input"], nine["total_output"], nine["total_requests"]), (205, 25, 4))
        self.assertEqual(nine["by_model"][OPUS], {"total": 160, "requests": 3, "cost_usd": 0})
        self.assertEqual([(k["name"], k["id"], k["requests"]) for k in nine["keys"]],
                         [("Ann", self.ids["Ann"], 3), ("Bob", self.ids["Bob"], 1)])
        self.assertEqual(nine["total_errors"], 0)
        # One day: the same as ?date=, plus the range it covers.
        one = self.get("/admin/usage/daily?from=2026-02-08&to=2026-02-08")
        self.assertEqual(one["days"], self.get("/admin/usage/daily?date=2026-02-08")["days"])
        # A range without data: no days, the range still said.
        self.assertEqual(self.get("/admin/usage/daily?from=2025-01-01&to=2025-12-31"),
                         {"days": [], "from": "2025-01-01", "to": "2025-12-31"})
        # from alone: up to today.
        doc = self.get("/admin/usage/daily?from=2026-02-10")
        self.assertIn(doc["to"], (self.today(), self.today(-1)))
        self.assertEqual(doc["days"][0]["date"], "2026-02-10")

    def test_hourly_range_and_its_keys(self):
        doc = self.get("/admin/usage/hourly?from=2026-02-09&to=2026-02-10")
        self.assertEqual((doc["from"], doc["to"]), ("2026-02-09", "2026-02-10"))
        self.assertEqual([x["hour"] for x in doc["hours"]], ["2026-02-09 10:00", "2026-02-09 23:00", "2026-02-10 00:00"])
        ten = doc["hours"][0]
        # Hours carry each key's requests and tokens (summed over its models), biggest first.
        self.assertEqual([(k["name"], k["id"], k["requests"], k["total"]) for k in ten["keys"]],
                         [("Ann", self.ids["Ann"], 2, 150), ("Bob", self.ids["Bob"], 1, 10)])
        self.assertEqual(ten["keys"][1]["by_model"], {OPUS: {"total": 10, "requests": 1, "cost_usd": 0}})
        self.assertEqual(ten["by_model"][OPUS], {"total": 160, "requests": 3, "cost_usd": 0})
        # The same hours as the original's ?date= view of each day, keys included.
        by_date = self.get("/admin/usage/hourly?date=2026-02-09")["hours"]
        self.assertEqual(doc["hours"][:2], by_date)

    def test_days_ends_today_with_live_traffic(self):
        key = self.proxy.create_key("range-live")
        for status in (200, 200, 500):
            if status != 200:
                self.mock.behaviour("*", status=500, count=1)
            r = h.request("POST", self.proxy.url + "/v1/messages", headers={"x-api-key": key},
                          body={"model": OPUS, "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]})
            self.assertEqual(r.status, status, r.text)
        def counted():
            d = self.get("/admin/usage/daily?days=14")
            return d if d["days"] and (d["days"][-1]["total_requests"], d["days"][-1]["total_errors"]) == (2, 1) else None

        # Errors are written in the background (nothing waits for them): poll.
        daily = h.wait_until(counted, 5, message="today's 2 requests and 1 error")
        today = daily["to"]
        self.assertIn(today, (self.today(), self.today(-1)))
        self.assertEqual(daily["from"], (datetime.date.fromisoformat(today) - datetime.timedelta(days=13)).isoformat())
        self.assertEqual([d["date"] for d in daily["days"]], [today])
        d = daily["days"][0]
        self.assertEqual((d["total_requests"], d["total_errors"]), (2, 1))
        live_id = [k["id"] for k in d["keys"] if k["name"] == "range-live"][0]
        hourly = self.get("/admin/usage/hourly?days=1")
        self.assertEqual((hourly["from"], hourly["to"]), (today, today))
        self.assertTrue(all(x["hour"].startswith(today + " ") for x in hourly["hours"]))
        keys = [k for x in hourly["hours"] for k in x["keys"] if k["id"] == live_id]
        self.assertEqual(sum(k["requests"] for k in keys), 2)
        self.assertEqual(sum(k["total"] for k in keys), d["total_input"] + d["total_output"])
        self.assertEqual(self.get("/admin/usage/daily?days=1")["days"], daily["days"])

    def test_bad_ranges(self):
        cases = [
            ("daily?days=0", "days must be a whole number from 1 to 1000"),
            ("daily?days=1001", "days must be a whole number from 1 to 1000"),
            ("hourly?days=93", "days must be a whole number from 1 to 92"),
            ("daily?days=two", "days must be a whole number from 1 to 1000"),
            ("daily?days=3&from=2026-02-01", "days cannot be combined with from or to"),
            ("daily?from=2026-02-10&to=2026-02-09", "from must not be after to"),
            ("daily?from=2023-01-01&to=2026-01-01", "the range is longer than 1000 days"),
            ("hourly?from=2026-01-01&to=2026-04-30", "the range is longer than 92 days"),
            ("daily?from=2026-02-30&to=2026-03-01", "from must be a date YYYY-MM-DD"),
            ("hourly?to=tomorrow", "to must be a date YYYY-MM-DD"),
            ("daily?date=2026-02-09&from=2026-02-09", "date cannot be combined with from, to or days"),
        ]
        for path, detail in cases:
            with self.subTest(path=path):
                self.assertEqual(self.get("/admin/usage/" + path, 400), {"detail": detail})
        # The longest allowed ranges are answered.
        self.assertEqual(len(self.get("/admin/usage/hourly?from=2026-01-01&to=2026-04-02")["hours"]), 3)
        doc = self.get("/admin/usage/daily?days=1000")
        first = datetime.date.fromisoformat(doc["to"]) - datetime.timedelta(days=999)
        self.assertEqual(doc["from"], first.isoformat())
        history = ["2026-02-08", "2026-02-09", "2026-02-10"]
        self.assertEqual([d["date"] for d in doc["days"] if d["date"] in history],
                         [x for x in history if x >= doc["from"]])
