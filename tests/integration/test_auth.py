"""Client authentication and what the proxy forwards upstream (docs/contract.md section 3).

Keys come as x-api-key or Authorization: Bearer (x-api-key wins); errors use the format of
the endpoint called. The client's own key never reaches the upstream, hop-by-hop headers are
dropped in both directions, x-request-id is passed along, and other headers are forwarded.
"""

import re
import unittest

from lib import harness as h

MODEL = "claude-sonnet-4-5"


def anthropic_body(text="hello", stream=False, model=MODEL):
    b = {"model": model, "max_tokens": 64, "messages": [{"role": "user", "content": text}]}
    if stream:
        b["stream"] = True
    return b


def openai_body(text="hello", model=MODEL):
    return {"model": model, "messages": [{"role": "user", "content": text}]}


class AuthTest(h.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.redis = cls.start_redis()
        cls.mock = cls.start_mock()
        cls.proxy = cls.start_proxy(cls.mock, cls.redis)
        cls.key = cls.proxy.create_key("auth-user")
        cls.other_key = cls.proxy.create_key("auth-other")
        cls.disabled_key = cls.proxy.create_key("auth-disabled")
        status, doc = cls.proxy.admin("POST", "/admin/keys/%s/disable" % cls.disabled_key)
        assert status == 200, (status, doc)

    def setUp(self):
        super().setUp()
        self.mock.reset()

    def post(self, path, body, headers=None):
        return h.request("POST", self.proxy.url + path, headers=headers, body=body)

    def messages(self, headers=None, body=None):
        return self.post("/v1/messages", body or anthropic_body(), headers)

    def chat(self, headers=None, body=None):
        return self.post("/v1/chat/completions", body or openai_body(), headers)

    def assertAnthropicError(self, r, status):
        self.assertEqual(r.status, status, r.body)
        doc = r.json()
        self.assertEqual(doc.get("type"), "error", doc)
        self.assertIsInstance(doc.get("error"), dict, doc)
        self.assertIsInstance(doc["error"].get("type"), str, doc)
        self.assertIsInstance(doc["error"].get("message"), str, doc)
        self.assertTrue(doc["error"]["message"], doc)
        self.assertIn("application/json", r.headers.get("content-type", ""))

    def assertOpenAIError(self, r, status):
        self.assertEqual(r.status, status, r.body)
        doc = r.json()
        self.assertNotIn("type", doc, doc)  # not the Anthropic shape
        err = doc.get("error")
        self.assertIsInstance(err, dict, doc)
        self.assertIsInstance(err.get("message"), str, doc)
        self.assertTrue(err["message"], doc)
        self.assertIsInstance(err.get("type"), str, doc)
        self.assertIn("code", err, doc)
        self.assertIn("application/json", r.headers.get("content-type", ""))

    # ---- verdicts ----

    def test_missing_key_is_401_in_each_format(self):
        self.assertAnthropicError(self.messages(), 401)
        self.assertOpenAIError(self.chat(), 401)
        # An empty x-api-key or a Bearer with nothing after it is no key either.
        self.assertAnthropicError(self.messages({"x-api-key": ""}), 401)
        self.assertAnthropicError(self.messages({"Authorization": "Bearer "}), 401)
        self.assertEqual(self.mock.stats()["total"], 0, "a refused request reached the upstream")

    def test_unknown_key_is_401(self):
        bogus = "sk-" + "0" * 48
        self.assertAnthropicError(self.messages({"x-api-key": bogus}), 401)
        self.assertOpenAIError(self.chat({"x-api-key": bogus}), 401)
        self.assertAnthropicError(self.messages({"Authorization": "Bearer " + bogus}), 401)
        # The admin key is not a client key.
        self.assertAnthropicError(self.messages({"x-api-key": self.proxy.admin_key}), 401)
        self.assertEqual(self.mock.stats()["total"], 0)

    def test_disabled_key_is_403(self):
        self.assertAnthropicError(self.messages({"x-api-key": self.disabled_key}), 403)
        self.assertOpenAIError(self.chat({"x-api-key": self.disabled_key}), 403)
        self.assertAnthropicError(
            self.messages({"Authorization": "Bearer " + self.disabled_key}), 403)
        self.assertEqual(self.mock.stats()["total"], 0)

    def test_passthrough_paths_need_a_key_too(self):
        r = h.request("GET", self.proxy.url + "/v1/models")
        self.assertAnthropicError(r, 401)
        r = h.request("GET", self.proxy.url + "/v1/models", headers={"x-api-key": self.key})
        self.assertEqual(r.status, 200, r.body)
        self.assertIn("data", r.json())

    def test_valid_key_and_bearer_both_work(self):
        r = self.messages({"x-api-key": self.key})
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual(r.json()["type"], "message")
        r = self.messages({"Authorization": "Bearer " + self.key})
        self.assertEqual(r.status, 200, r.body)
        r = self.chat({"Authorization": "Bearer " + self.key})
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual(r.json()["object"], "chat.completion")

    def test_x_api_key_wins_over_bearer(self):
        r = self.messages({"x-api-key": self.key, "Authorization": "Bearer sk-bogus-bogus-bogus"})
        self.assertEqual(r.status, 200, r.body)
        r = self.messages({"x-api-key": "sk-bogus-bogus-bogus",
                           "Authorization": "Bearer " + self.key})
        self.assertAnthropicError(r, 401)
        # A disabled x-api-key is not rescued by a valid Bearer either.
        r = self.messages({"x-api-key": self.disabled_key, "Authorization": "Bearer " + self.key})
        self.assertAnthropicError(r, 403)

    # ---- what goes upstream ----

    def last_upstream_headers(self):
        reqs = self.mock.requests("/v1/messages") + self.mock.requests("/v1/chat/completions")
        self.assertTrue(reqs, "nothing reached the upstream")
        return max(reqs, key=lambda r: r["time"])["headers"]

    def test_client_key_is_not_forwarded(self):
        for hdrs in ({"x-api-key": self.key}, {"Authorization": "Bearer " + self.key},
                     {"x-api-key": self.key, "Authorization": "Bearer " + self.other_key}):
            self.mock.clear_requests()
            self.assertEqual(self.messages(hdrs).status, 200)
            up = self.last_upstream_headers()
            self.assertNotIn("x-api-key", up, hdrs)
            self.assertNotIn("authorization", up, hdrs)
            blob = repr(up)
            self.assertNotIn(self.key, blob)
            self.assertNotIn(self.other_key, blob)
            self.mock.clear_requests()
            self.assertEqual(self.chat(hdrs).status, 200)
            up = self.last_upstream_headers()
            self.assertNotIn("x-api-key", up)
            self.assertNotIn("authorization", up)

    def test_hop_by_hop_request_headers_are_stripped(self):
        r = self.messages({
            "x-api-key": self.key,
            "Connection": "keep-alive, X-Hop-Custom",
            "X-Hop-Custom": "must-not-pass",
            "Keep-Alive": "timeout=5",
            "Proxy-Authorization": "Basic c2VjcmV0OnNlY3JldA==",
            "Proxy-Connection": "keep-alive",
            "TE": "trailers",
            "X-End-To-End": "passes",
        })
        self.assertEqual(r.status, 200, r.body)
        up = self.last_upstream_headers()
        for name in ("x-hop-custom", "keep-alive", "proxy-authorization", "proxy-connection",
                     "te"):
            self.assertNotIn(name, up, "hop-by-hop header %s reached the upstream" % name)
        self.assertNotIn("x-hop-custom", up.get("connection", "").lower())
        self.assertEqual(up.get("x-end-to-end"), "passes")

    def test_hop_by_hop_response_headers_are_stripped(self):
        # status 200 + body: the mock answers with these headers and a fixed JSON body.
        self.mock.behaviour("*", status=200, body={"type": "message", "content": []},
                            headers={"Keep-Alive": "timeout=99", "Proxy-Authenticate": "Basic",
                                     "Trailer": "X-Foo", "X-Upstream-Custom": "kept"})
        r = self.messages({"x-api-key": self.key})
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual(r.json(), {"type": "message", "content": []})
        self.assertEqual(r.headers.get("x-upstream-custom"), "kept")
        self.assertNotIn("proxy-authenticate", r.headers)
        self.assertNotIn("trailer", r.headers)
        self.assertNotEqual(r.headers.get("keep-alive"), "timeout=99")

    def test_request_id_is_passed_upstream_and_returned(self):
        rid = "req-test-0123456789"
        r = self.messages({"x-api-key": self.key, "x-request-id": rid})
        self.assertEqual(r.status, 200)
        self.assertEqual(r.headers.get("x-request-id"), rid)
        self.assertEqual(self.last_upstream_headers().get("x-request-id"), rid)
        # Streams too.
        self.mock.clear_requests()
        rid2 = "req-test-stream-42"
        with h.stream("POST", self.proxy.url + "/v1/messages",
                      headers={"x-api-key": self.key, "x-request-id": rid2},
                      body=anthropic_body(stream=True)) as s:
            self.assertEqual(s.status, 200)
            self.assertEqual(s.headers.get("x-request-id"), rid2)
            s.read_all()
        self.assertEqual(self.last_upstream_headers().get("x-request-id"), rid2)
        # Without one the proxy makes one up, and upstream and client see the same.
        self.mock.clear_requests()
        r = self.messages({"x-api-key": self.key})
        made = r.headers.get("x-request-id")
        self.assertTrue(made and re.fullmatch(r"[A-Za-z0-9_-]{8,64}", made), made)
        self.assertEqual(self.last_upstream_headers().get("x-request-id"), made)
        # A client id that is not a plain token is replaced, not passed on.
        self.mock.clear_requests()
        r = self.messages({"x-api-key": self.key, "x-request-id": "bad id\twith spaces"})
        made = r.headers.get("x-request-id")
        self.assertTrue(made and re.fullmatch(r"[A-Za-z0-9_-]{8,64}", made), made)
        self.assertEqual(self.last_upstream_headers().get("x-request-id"), made)
        # Errors answered by the proxy itself carry one as well.
        r = self.messages({"x-request-id": "req-test-unauth-1"})
        self.assertEqual(r.status, 401)
        self.assertEqual(r.headers.get("x-request-id"), "req-test-unauth-1")

    def test_other_headers_are_forwarded(self):
        r = self.messages({"x-api-key": self.key, "anthropic-version": "2023-06-01",
                           "anthropic-beta": "prompt-caching-2024-07-31,tools-2024-04-04",
                           "X-Custom-Thing": "v1", "User-Agent": "auth-test/1.0"})
        self.assertEqual(r.status, 200)
        up = self.last_upstream_headers()
        self.assertEqual(up.get("anthropic-version"), "2023-06-01")
        self.assertEqual(up.get("anthropic-beta"), "prompt-caching-2024-07-31,tools-2024-04-04")
        self.assertEqual(up.get("x-custom-thing"), "v1")
        self.assertEqual(up.get("user-agent"), "auth-test/1.0")
        self.assertEqual(up.get("content-type"), "application/json")


class UpstreamApiKeyTest(h.TestCase):
    """With UPSTREAM_API_KEY the proxy sends its own key upstream, as x-api-key and Bearer."""

    UPSTREAM_KEY = "sk-upstream-secret-0123456789"

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.redis = cls.start_redis()
        cls.mock = cls.start_mock()
        cls.proxy = cls.start_proxy(cls.mock, cls.redis,
                                    env={"UPSTREAM_API_KEY": cls.UPSTREAM_KEY})
        cls.key = cls.proxy.create_key("up-key-user")

    def check(self, path, body, hdrs):
        self.mock.clear_requests()
        r = h.request("POST", self.proxy.url + path, headers=hdrs, body=body)
        self.assertEqual(r.status, 200, r.body)
        # (/v1/chat/completions is converted for the Anthropic upstream: any LLM path.)
        reqs = self.mock.requests("/v1/messages") + self.mock.requests("/v1/chat/completions")
        self.assertEqual(len(reqs), 1, reqs)
        up = reqs[0]["headers"]
        self.assertEqual(up.get("x-api-key"), self.UPSTREAM_KEY)
        self.assertEqual(up.get("authorization"), "Bearer " + self.UPSTREAM_KEY)
        self.assertNotIn(self.key, repr(up))

    def test_upstream_key_replaces_the_clients(self):
        self.check("/v1/messages", anthropic_body(), {"x-api-key": self.key})
        self.check("/v1/messages", anthropic_body(), {"Authorization": "Bearer " + self.key})
        self.check("/v1/chat/completions", openai_body(), {"Authorization": "Bearer " + self.key})

    def test_upstream_key_not_sent_for_refused_requests(self):
        self.mock.clear_requests()
        r = h.request("POST", self.proxy.url + "/v1/messages", body=anthropic_body())
        self.assertEqual(r.status, 401)
        self.assertEqual(self.mock.requests("/v1/messages"), [])


if __name__ == "__main__":
    unittest.main()
