"""The body is read as the upstream reads it (issue "a front door that cannot be fooled",
items 1 and 14): what is routed, clamped and counted is what the upstream receives.

A JSON parser that takes the last of two duplicated members (the mock upstream, Python's
json, like most servers) and our scan that took the first disagreed: {"model":"cheap",
"model":"expensive"} was routed and booked as one model and served as the other, and an
escaped "stre\\u0061m":true streamed with nothing counted. Each case goes through a real
api-proxy to the mock upstream, which records what it received.
"""

import json
import unittest

from lib import harness as h

MODEL = "claude-sonnet-4-5"


class BodyScanTest(h.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.redis = cls.start_redis()
        cls.mock = cls.start_mock()
        cls.proxy = cls.start_proxy(cls.mock, cls.redis)
        cls.key = cls.proxy.create_key("body-scan")

    def setUp(self):
        super().setUp()
        self.mock.reset()

    def post(self, path, raw):
        return h.request("POST", self.proxy.url + path, body=raw.encode(),
                         headers={"x-api-key": self.key, "Content-Type": "application/json"})

    def usage(self):
        status, doc = self.proxy.admin("GET", "/admin/usage")
        self.assertEqual(status, 200, doc)
        return doc

    def test_duplicate_members_are_400_and_nothing_is_sent(self):
        msgs = '"messages":[{"role":"user","content":"hi"}]'
        bodies = [
            '{"model":"cheap","max_tokens":10,%s,"model":"%s"}' % (msgs, MODEL),
            '{"model":"%s","max_tokens":10,%s,"mod\\u0065l":"cheap"}' % (MODEL, msgs),
            '{"model":"%s","max_tokens":10,"stream":false,%s,"stre\\u0061m":true}' % (MODEL, msgs),
            '{"model":"%s","max_tokens":10,"max_tokens":64000,%s}' % (MODEL, msgs),
            '{"model":"%s","max_tokens":10,"messages":[{"role":"user","role":"assistant","content":"x"}]}' % MODEL,
            '{"model":"%s","stream":true,"stream_options":{"include_usage":true,"include_usage":false},%s}'
            % (MODEL, msgs),
        ]
        before = self.usage()
        for raw in bodies:
            json.loads(raw)  # valid JSON to Python, which keeps the last duplicate
            for path, openai in (("/v1/messages", False), ("/v1/chat/completions", True)):
                r = self.post(path, raw)
                self.assertEqual(r.status, 400, (path, raw, r.text))
                err = r.json()["error"]
                self.assertEqual(err["type"], "invalid_request_error", err)
                self.assertEqual("type" in r.json(), not openai, r.json())
        self.assertEqual(self.mock.stats()["total"], 0, "a body with a duplicated member reached the upstream")
        self.assertEqual(self.usage(), before)

    def test_escaped_member_names_are_recognised(self):
        # "stre\u0061m" is "stream": the answer is a stream, relayed as one, and counted.
        before = self.usage()
        raw = ('{"mod\\u0065l":"%s","max_tokens":10,"stre\\u0061m":true,'
               '"messages":[{"role":"user","content":"count me"}]}' % MODEL)
        r = self.post("/v1/messages", raw)
        self.assertEqual(r.status, 200, r.text)
        self.assertTrue(r.headers.get("content-type", "").startswith("text/event-stream"), r.headers)
        events = [line for line in r.text.splitlines() if line.startswith("event: ")]
        self.assertIn("event: message_stop", events)
        self.assertEqual(r.headers.get("x-api-proxy-model"), MODEL)
        sent = self.mock.requests("/v1/messages")
        self.assertEqual(len(sent), 1)
        after = self.usage()
        self.assertEqual(after["total_requests"], before["total_requests"] + 1)
        self.assertGreater(after["total_output_tokens"], before["total_output_tokens"])

    def test_token_limit_out_of_range_on_a_converted_request(self):
        # An OpenAI client in front of the Anthropic upstream: the body is converted, and a
        # limit that is no int32 is refused instead of being cast (1e300 became INT64_MIN).
        for v in ("1e300", "-1", "2147483648", "10.5"):
            for field in ("max_tokens", "max_completion_tokens"):
                raw = '{"model":"%s","%s":%s,"messages":[{"role":"user","content":"hi"}]}' % (MODEL, field, v)
                r = self.post("/v1/chat/completions", raw)
                self.assertEqual(r.status, 400, (raw, r.text))
                self.assertIn("must be an integer from 1 to 2147483647", r.json()["error"]["message"])
        self.assertEqual(self.mock.stats()["total"], 0)
        self.assertTrue(self.proxy.alive())

    def test_admin_bodies_are_read_the_same_way(self):
        # Every other client body is read strictly too: duplicates and U+0000 are refused,
        # not resolved one way by us and another by whoever reads the data next.
        hdrs = {"x-api-key": self.proxy.admin_key, "Content-Type": "application/json"}
        cases = [
            ("/admin/keys", '{"name":"alice","name":"mallory"}', "duplicate member name"),
            ("/admin/keys", '{"name":"alice\\u0000mallory"}', "U+0000"),
            ("/admin/import", '{"keys":{"sk-one-aaaaaaaaaaaaaaaa":{"name":"a"},"sk-one-aaaaaaaaaaaaaaa\\u0061":{"name":"b"}}}',
             "duplicate member name"),
        ]
        status, before = self.proxy.admin("GET", "/admin/keys")
        for path, raw, want in cases:
            r = h.request("POST", self.proxy.url + path, body=raw.encode(), headers=hdrs)
            self.assertEqual(r.status, 400, (path, raw, r.text))
            self.assertIn(want, r.json()["detail"])
        self.assertEqual(self.proxy.admin("GET", "/admin/keys"), (status, before))


if __name__ == "__main__":
    unittest.main()
