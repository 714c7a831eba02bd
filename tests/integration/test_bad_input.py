"""Bad client input: malformed bodies, oversized requests, ambiguous framing, clients that
leave, and keys that must never reach the log."""

import json
import re
import socket
import time
import unittest

from lib import harness as h

MODEL = "claude-sonnet-4-5"
MAX_BODY = 4096
MAX_HEADERS = 4096


def anthropic_body(text="hi", stream=False):
    b = {"model": MODEL, "max_tokens": 32, "messages": [{"role": "user", "content": text}]}
    if stream:
        b["stream"] = True
    return b


def responses_in(data):
    """The HTTP status codes of every response found in raw bytes read from a socket."""
    return [int(m) for m in re.findall(rb"HTTP/1\.[01] (\d{3})", data)]


class BadInputTest(h.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.redis = cls.start_redis()
        cls.mock = cls.start_mock()
        cls.proxy = cls.start_proxy(cls.mock, cls.redis, env={
            "MAX_BODY_BYTES": MAX_BODY, "MAX_HEADER_BYTES": MAX_HEADERS})
        cls.key = cls.proxy.create_key("bad-input")

    def setUp(self):
        super().setUp()
        self.mock.reset()

    def post(self, path, body, headers=None):
        hdrs = {"x-api-key": self.key, "Content-Type": "application/json"}
        hdrs.update(headers or {})
        return h.request("POST", self.proxy.url + path, body=body, headers=hdrs)

    def assertAlive(self):
        self.assertTrue(self.proxy.alive(), self.proxy.log_tail())
        r = self.post("/v1/messages", anthropic_body())
        self.assertEqual(r.status, 200, r.text)

    def raw(self, data, timeout=3.0):
        return h.raw("127.0.0.1", self.proxy.port, data, timeout)

    # ---- bodies ----

    def test_malformed_bodies_are_400_in_the_endpoint_format(self):
        bad = [b"{not json", b"", b"[1, 2]", b'"a string"', b"null",
               b'{"model": 5, "messages": []}', b'{"model": ["x"], "messages": []}',
               b'{"model": null, "messages": []}', b'{"model": "", "messages": []}',
               b'{"model": "' + MODEL.encode() + b'", "messages": [], "stream": "yes"}',
               b'{"messages": [{"role": "user", "content": "no model"}]}',
               b'{"model": "' + MODEL.encode() + b'", "messages": [], "x": \xff}']
        for body in bad:
            r = self.post("/v1/messages", body)
            self.assertEqual(r.status, 400, (body, r.text))
            doc = r.json()
            self.assertEqual(doc.get("type"), "error", doc)
            self.assertEqual(doc["error"]["type"], "invalid_request_error", doc)
            self.assertTrue(doc["error"]["message"])
            r = self.post("/v1/chat/completions", body)
            self.assertEqual(r.status, 400, (body, r.text))
            doc = r.json()
            self.assertNotIn("type", doc, doc)
            self.assertIsInstance(doc["error"]["message"], str)
            self.assertIsInstance(doc["error"]["type"], str)
        self.assertEqual(self.mock.stats()["total"], 0, "a bad body was sent upstream")
        self.assertAlive()

    def test_oversized_body_is_413(self):
        big = anthropic_body("x" * (MAX_BODY + 500))
        r = self.post("/v1/messages", big)
        self.assertEqual(r.status, 413, r.text[:200])
        self.assertEqual(r.json()["type"], "error")
        r = self.post("/v1/chat/completions", big)
        self.assertEqual(r.status, 413, r.text[:200])
        self.assertIn("error", r.json())
        # Far over the limit: a 413 or a closed connection, never a 2xx.
        try:
            r = self.post("/v1/messages", anthropic_body("y" * (2 << 20)))
            self.assertEqual(r.status, 413)
        except (ConnectionError, BrokenPipeError):
            pass
        # Exactly at the limit is fine.
        body = json.dumps(anthropic_body("")).encode()
        body = json.dumps(anthropic_body("z" * (MAX_BODY - len(body)))).encode()
        self.assertEqual(len(body), MAX_BODY)
        self.assertEqual(self.post("/v1/messages", body).status, 200)
        self.assertEqual(self.mock.stats()["total"], 1)
        self.assertAlive()

    def test_oversized_headers_are_refused(self):
        req = (b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nx-api-key: " + self.key.encode() +
               b"\r\nX-Big: " + b"a" * (MAX_HEADERS * 2) + b"\r\nContent-Length: 2\r\n\r\n{}")
        out = self.raw(req)
        codes = responses_in(out)
        self.assertTrue(codes == [] or all(400 <= c < 500 for c in codes), out[:300])
        self.assertEqual(self.mock.stats()["total"], 0)
        self.assertAlive()

    # ---- framing (request smuggling) ----

    def smuggle(self, head):
        """`head` + a pipelined second request on the same connection -> raw bytes back."""
        body = json.dumps(anthropic_body("first")).encode()
        second = (b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nx-api-key: " + self.key.encode() +
                  b"\r\nContent-Type: application/json\r\nConnection: close\r\n"
                  b"Content-Length: %d\r\n\r\n" % len(body) + body)
        return self.raw(head + second)

    def assertRefusedAlone(self, out):
        codes = responses_in(out)
        self.assertLessEqual(len(codes), 1, "a second pipelined request was answered: %r"
                             % out[:600])
        if codes:
            self.assertEqual(codes[0], 400, out[:300])
        self.assertEqual(self.mock.stats()["total"], 0, "something reached the upstream")

    def test_content_length_with_transfer_encoding_is_refused(self):
        body = json.dumps(anthropic_body("cl+te")).encode()
        chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
        head = (b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nx-api-key: " + self.key.encode() +
                b"\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n" % len(chunked) + chunked)
        self.assertRefusedAlone(self.smuggle(head))
        self.assertAlive()

    def test_conflicting_content_lengths_are_refused(self):
        body = json.dumps(anthropic_body("two lengths")).encode()
        head = (b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nx-api-key: " + self.key.encode() +
                b"\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                b"Content-Length: %d\r\n\r\n" % (len(body), len(body) + 5) + body)
        self.assertRefusedAlone(self.smuggle(head))
        self.assertAlive()

    def test_pipelining_works_when_framing_is_clean(self):
        # The control for the two tests above: a clean first request gets both answered.
        body = json.dumps(anthropic_body("clean")).encode()
        head = (b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nx-api-key: " + self.key.encode() +
                b"\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
                + body)
        out = self.smuggle(head)
        self.assertEqual(responses_in(out), [200, 200], out[:600])

    # ---- clients that leave ----

    def test_client_leaving_mid_stream_aborts_the_upstream_stream(self):
        self.mock.behaviour("*", chunk_delay_ms=50, text=" ".join(["word"] * 100))
        with h.stream("POST", self.proxy.url + "/v1/messages", body=anthropic_body(stream=True),
                      headers={"x-api-key": self.key}) as s:
            self.assertEqual(s.status, 200)
            first = next(iter(s))
            self.assertIn(b"message_start", first)
        t0 = time.monotonic()
        h.wait_until(lambda: self.mock.stats()["aborted_streams"] >= 1, 5,
                     message="the upstream to see its stream aborted")
        print("    upstream stream aborted %.0f ms after the client left"
              % ((time.monotonic() - t0) * 1000))
        self.assertAlive()

    def test_client_leaving_before_the_answer_aborts_the_upstream_stream(self):
        # The client is gone before the upstream answers: the proxy finds out when it
        # starts relaying, and must then drop the upstream transfer.
        self.mock.behaviour("*", delay_ms=300, chunk_delay_ms=20, text=" ".join(["w"] * 100))
        body = json.dumps(anthropic_body(stream=True)).encode()
        with socket.create_connection(("127.0.0.1", self.proxy.port)) as s:
            s.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nx-api-key: " +
                      self.key.encode() + b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
            h.wait_until(lambda: self.mock.stats()["total"] >= 1, 5)
        h.wait_until(lambda: self.mock.stats()["aborted_streams"] >= 1, 5,
                     message="the upstream to see its stream aborted")
        self.assertAlive()

class NoKeysInLogTest(h.TestCase):
    """Whatever a client does, full keys (client or admin) never reach the proxy's log."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.redis = cls.start_redis()
        cls.mock = cls.start_mock()
        cls.proxy = cls.start_proxy(cls.mock, cls.redis, log_level="debug")

    def test_no_full_key_in_the_log(self):
        p = self.proxy
        keys = [p.create_key("log-%d" % i) for i in range(3)]
        unknown = "sk-unknown-" + "7" * 40
        body = anthropic_body("log me")
        for k in keys:
            h.request("POST", p.url + "/v1/messages", headers={"x-api-key": k}, body=body)
            h.request("POST", p.url + "/v1/messages", headers={"Authorization": "Bearer " + k},
                      body=dict(body, stream=True))
            h.request("POST", p.url + "/v1/chat/completions", headers={"x-api-key": k},
                      body={"model": MODEL, "messages": [{"role": "user", "content": "x"}]})
            h.request("POST", p.url + "/v1/messages", headers={"x-api-key": k}, body=b"{bad")
            h.request("GET", p.url + "/v1/models?key=%s" % k, headers={"x-api-key": k})
            h.request("GET", p.url + "/v1/%s/whatever" % k, headers={"x-api-key": k})
            for method, path in (("GET", "/admin/keys/%s/usage" % k),
                                 ("POST", "/admin/keys/%s/disable" % k),
                                 ("POST", "/admin/keys/%s/enable" % k),
                                 ("GET", "/admin/keys/%s" % k)):
                p.admin(method, path)
            # A user key on the admin API, and the admin key on the client API.
            h.request("GET", p.url + "/admin/keys", headers={"x-api-key": k})
        h.request("POST", p.url + "/v1/messages", headers={"x-api-key": unknown}, body=body)
        h.request("POST", p.url + "/v1/messages", headers={"x-api-key": p.admin_key}, body=body)
        p.admin("GET", "/admin/keys/%s/usage" % unknown)
        p.admin("DELETE", "/admin/keys/%s" % keys[0])
        p.admin("POST", "/admin/import", {"keys": {"sk-imported-" + "5" * 40: {"name": "imp"}}})
        h.request("GET", p.url + "/admin/usage",
                  headers={"x-api-key": "sk-wrong-admin-" + "9" * 30})
        # Stop the proxy so everything it had to say is in the log.
        self.assertEqual(p.stop(), 0)
        log = p.log()
        self.assertIn("/v1/messages", log, "the log has no request lines at all?")
        for secret in keys + [unknown, p.admin_key, "sk-imported-" + "5" * 40,
                              "sk-wrong-admin-" + "9" * 30]:
            self.assertNotIn(secret, log, "a full key is in the log")
            # Nor its secret part without the prefix.
            self.assertNotIn(secret[3:], log)


if __name__ == "__main__":
    unittest.main()
