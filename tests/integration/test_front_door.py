"""The front door: what reaches the upstream is exactly what is allowed, counted and logged.

Regression tests for the defects of the front-door review: pass-through of any /v1 path,
encoded dot segments, the final stream event released before its usage was durable, a
client leaving before the answer went unnoticed, no connection cap, a declared oversized
body drained until the 408, TLS on the plain port left waiting, credentials in /health,
forgeable access-log lines, header names with whitespace before the colon, and admin key
paths that were trimmed."""

import json
import os
import re
import resource
import signal
import socket
import time
import unittest

from lib import harness as h

MODEL = "claude-sonnet-4-5"


def body(stream=False, text="hi"):
    b = {"model": MODEL, "max_tokens": 32, "messages": [{"role": "user", "content": text}]}
    if stream:
        b["stream"] = True
    return b


def raw_exchange(port, data, timeout=3.0, half_close=False):
    """Sends raw bytes, returns (bytes received, seconds until the first byte or close)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        t0 = time.monotonic()
        s.sendall(data)
        if half_close:
            s.shutdown(socket.SHUT_WR)
        out, first = b"", None
        try:
            while True:
                chunk = s.recv(65536)
                if first is None:
                    first = time.monotonic() - t0
                if not chunk:
                    break
                out += chunk
        except (socket.timeout, ConnectionResetError):
            pass
        return out, (first if first is not None else timeout)


def status_of(raw):
    m = re.match(rb"HTTP/1\.[01] (\d{3})", raw)
    return int(m.group(1)) if m else None


def body_of(raw):
    return raw.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in raw else b""


class FrontDoorTest(h.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.redis = cls.start_redis()
        cls.mock = cls.start_mock()
        # Credentials in UPSTREAM_URL must never be shown (the mock ignores them).
        cls.proxy = cls.start_proxy("http://user:s3cr3t-pass@127.0.0.1:%d" % cls.mock.port, cls.redis,
                                    env={"MAX_BODY_BYTES": 65536, "REQUEST_READ_TIMEOUT_SECONDS": 5})
        cls.key = cls.proxy.create_key("front-door")

    def setUp(self):
        super().setUp()
        self.mock.reset()

    def post(self, path, b, headers=None):
        hdrs = {"x-api-key": self.key}
        hdrs.update(headers or {})
        return h.request("POST", self.proxy.url + path, body=b, headers=hdrs)

    def usage_requests(self):
        return self.proxy.admin("GET", "/admin/usage")[1]["total_requests"]

    # ---- what may pass through ----

    def test_passthrough_is_an_allow_list(self):
        for method, path in (("GET", "/v1/files"), ("DELETE", "/v1/files/file_1"),
                             ("POST", "/v1/messages/batches"), ("GET", "/v1/messages/batches/b1"),
                             ("POST", "/v1/models"), ("PUT", "/v1/models/x")):
            r = h.request(method, self.proxy.url + path, headers={"x-api-key": self.key},
                          body=b"{}" if method in ("POST", "PUT") else None)
            self.assertEqual(r.status, 404, (method, path, r.text))
            self.assertEqual(r.json()["type"], "error")
            self.assertEqual(r.json()["error"]["type"], "not_found_error")
        self.assertEqual([q["path"] for q in self.mock.requests()], [], "a refused path reached the upstream")
        # The allowed ones pass, with the key checked.
        self.assertEqual(h.request("GET", self.proxy.url + "/v1/models",
                                   headers={"x-api-key": self.key}).status, 200)
        self.assertEqual(h.request("GET", self.proxy.url + "/v1/models").status, 401)
        r = self.post("/v1/messages/count_tokens", body())
        self.assertEqual(r.status, 200, r.text)

    def test_encoded_dot_segments_never_reach_the_upstream(self):
        for path in ("/v1/models/..%2f..%2fadmin", "/v1/models/%2e%2e/files", "/v1/models/..%5cfiles",
                     "/v1/models/%2E%2E%2Ffiles", "/v1/./models", "/v1/models/x%00y"):
            raw, _ = raw_exchange(self.proxy.port, b"GET " + path.encode() + b" HTTP/1.1\r\nHost: x\r\n"
                                  b"x-api-key: " + self.key.encode() + b"\r\n\r\n")
            self.assertEqual(status_of(raw), 400, (path, raw[:300]))
            json.loads(body_of(raw))
        self.assertEqual(self.mock.stats()["total"], 0)

    # ---- counted before the client sees the end ----

    def test_final_event_waits_for_durable_usage(self):
        # Redis stops answering (SIGSTOP: the connection stays up): the stream's content
        # flows, but message_stop must not reach the client before its usage is in Redis.
        self.mock.behaviour("*", chunk_delay_ms=5)
        before = self.usage_requests()
        s = socket.create_connection(("127.0.0.1", self.proxy.port), timeout=10)
        self.addCleanup(s.close)
        data = json.dumps(body(stream=True)).encode()
        os.kill(self.redis.pid, signal.SIGSTOP)
        try:
            s.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nx-api-key: " + self.key.encode() +
                      b"\r\nContent-Length: %d\r\n\r\n" % len(data) + data)
            got = b""
            deadline = time.monotonic() + 5
            s.settimeout(0.3)
            while time.monotonic() < deadline and b"message_delta" not in got:
                try:
                    got += s.recv(65536)
                except socket.timeout:
                    pass
            self.assertIn(b"content_block_delta", got)
            time.sleep(0.5)
            try:
                got += s.recv(65536)
            except socket.timeout:
                pass
            self.assertNotIn(b"message_stop", got, "the final event went out before the usage was durable")
        finally:
            os.kill(self.redis.pid, signal.SIGCONT)
        s.settimeout(10)
        while not got.endswith(b"0\r\n\r\n"):
            chunk = s.recv(65536)
            self.assertTrue(chunk, "connection closed before the end")
            got += chunk
        self.assertIn(b"event: message_stop", got)
        self.assertEqual(self.usage_requests(), before + 1)

    # ---- clients that leave before the answer ----

    def test_client_leaving_before_a_plain_answer_aborts_the_upstream(self):
        self.mock.behaviour("*", mode="hang")
        before = self.usage_requests()
        data = json.dumps(body()).encode()
        with socket.create_connection(("127.0.0.1", self.proxy.port)) as s:
            s.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nx-api-key: " + self.key.encode() +
                      b"\r\nContent-Length: %d\r\n\r\n" % len(data) + data)
            h.wait_until(lambda: self.mock.stats()["total"] >= 1, 5)
        t0 = time.monotonic()
        h.wait_until(lambda: self.mock.stats()["abandoned"] >= 1, 5,
                     message="the upstream to see the proxy leave")
        print("    upstream transfer dropped %.0f ms after the client left" % ((time.monotonic() - t0) * 1000))
        time.sleep(0.2)
        self.assertEqual(self.usage_requests(), before, "a request nobody received was counted")

    def test_client_leaving_a_held_stream_aborts_the_upstream(self):
        # With a tier to fall back to, a stream is held until its first content: the client
        # has seen nothing when it leaves, and the proxy must notice that too.
        chain = {"enabled": True, "tiers": [{"name": "A", "model": MODEL, "type": "upstream"},
                                            {"name": "B", "model": "gemini-3-pro-high", "type": "upstream"}]}
        p = self.start_proxy(self.mock, self.redis, fallback_config=chain, name="held")
        key = p.create_key("held")
        self.mock.behaviour("*", mode="hang")
        data = json.dumps(body(stream=True)).encode()
        with socket.create_connection(("127.0.0.1", p.port)) as s:
            s.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nx-api-key: " + key.encode() +
                      b"\r\nContent-Length: %d\r\n\r\n" % len(data) + data)
            h.wait_until(lambda: self.mock.stats()["total"] >= 1, 5)
        h.wait_until(lambda: self.mock.stats()["abandoned"] >= 1, 5)
        time.sleep(0.2)
        self.assertEqual(self.mock.stats()["total"], 1, "the proxy moved on to the next tier for nobody")

    def test_every_output_limit_is_clamped(self):
        # A tier with max_tokens_limit: every field that limits output is clamped, on the
        # same-format path too (max_completion_tokens used to pass untouched).
        chain = {"enabled": True, "tiers": [
            {"name": "Ext", "model": "ext-model", "type": "external",
             "base_url": self.mock.url + "/v1", "api_key": "sk-ext-test", "max_tokens_limit": 100}]}
        p = self.start_proxy(self.mock, self.redis, fallback_config=chain, name="clamp")
        key = p.create_key("clamp")
        for fields in ({"max_tokens": 5000}, {"max_completion_tokens": 9000},
                       {"max_tokens": 50, "max_completion_tokens": 9000}):
            self.mock.clear_requests()
            b = {"model": "ext-model", "messages": [{"role": "user", "content": "x"}]}
            b.update(fields)
            r = h.request("POST", p.url + "/v1/chat/completions", headers={"x-api-key": key}, body=b)
            self.assertEqual(r.status, 200, r.text)
            sent = self.mock.requests("/v1/chat/completions")[-1]["body"]
            for f in ("max_tokens", "max_completion_tokens"):
                if f in fields:
                    self.assertLessEqual(sent[f], 100, (fields, sent))
            if "max_tokens" in fields and fields["max_tokens"] <= 100:
                self.assertEqual(sent["max_tokens"], fields["max_tokens"])

    # ---- framing answered at once ----

    def test_declared_oversized_body_is_413_at_once(self):
        for extra in (b"", b"Expect: 100-continue\r\n"):
            head = (b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nx-api-key: " + self.key.encode() +
                    b"\r\nContent-Type: application/json\r\n" + extra +
                    b"Content-Length: %d\r\n\r\n" % (64 << 20))
            raw, first = raw_exchange(self.proxy.port, head, timeout=4)
            self.assertEqual(status_of(raw), 413, raw[:300])
            self.assertLess(first, 2.0, "the 413 waited for the body")
            self.assertNotIn(b"100 Continue", raw)
            self.assertEqual(json.loads(body_of(raw))["error"]["type"], "request_too_large")
        self.assertEqual(self.mock.stats()["total"], 0)

    def test_tls_handshake_on_the_plain_port_is_400_at_once(self):
        hello = bytes.fromhex("16030100f8010000f40303") + os.urandom(32) + b"\x00" * 40
        raw, first = raw_exchange(self.proxy.port, hello, timeout=4)
        self.assertEqual(status_of(raw), 400, raw[:200])
        self.assertLess(first, 1.0)
        self.assertIn(b"TLS", body_of(raw))

    def test_whitespace_before_a_colon_is_refused(self):
        data = json.dumps(body()).encode()
        for name in (b"X-Api-Key ", b"X-Api-Key\t", b"Content-Length "):
            raw, _ = raw_exchange(self.proxy.port, b"POST /v1/messages HTTP/1.1\r\nHost: x\r\n" + name +
                                  b": " + self.key.encode() + b"\r\nContent-Length: %d\r\n\r\n" % len(data)
                                  + data)
            self.assertEqual(status_of(raw), 400, raw[:300])
            self.assertIn(b"colon", body_of(raw))
        self.assertEqual(self.mock.stats()["total"], 0)
        self.assertEqual(self.mock.requests(), [])

    # ---- secrets and logs ----

    def test_health_and_logs_hide_upstream_credentials(self):
        r = h.request("GET", self.proxy.url + "/health")
        self.assertNotIn("s3cr3t", r.text)
        self.assertEqual(r.json()["upstream"], "http://127.0.0.1:%d" % self.mock.port)
        self.assertNotIn("s3cr3t", self.proxy.log())

    def test_access_log_lines_cannot_be_forged(self):
        # A path with quotes and backslashes, on an allowed route.
        raw, _ = raw_exchange(self.proxy.port, b'GET /v1/models/a"b\\c,"status":999 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n'
                              b"x-api-key: " + self.key.encode() + b"\r\n\r\n")
        self.assertIsNotNone(status_of(raw))
        h.wait_until(lambda: '/v1/models/' in self.proxy.log(), 5)
        for line in self.proxy.log().splitlines():
            if line.startswith("{"):
                doc = json.loads(line)  # every line stays one JSON object
                self.assertNotEqual(doc.get("status"), 999, line)

    def test_admin_key_paths_are_not_trimmed(self):
        key = self.proxy.create_key("victim")
        for suffix in ("%00x", "%20", "%2f", "/../" + key):
            st, doc = self.proxy.admin("POST", "/admin/keys/%s%s/disable" % (key, suffix))
            self.assertTrue(400 <= st < 500, (suffix, st, doc))
        r = self.post("/v1/messages", body(), headers={"x-api-key": key})
        self.assertEqual(r.status, 200, "the key was acted on through a trimmed path")


class ConnectionLimitsTest(h.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.redis = cls.start_redis()
        cls.mock = cls.start_mock()

    def test_connection_cap(self):
        p = self.start_proxy(self.mock, self.redis, env={"MAX_CONNECTIONS": 8}, name="capped")
        held = [socket.create_connection(("127.0.0.1", p.port)) for _ in range(8)]
        time.sleep(0.2)
        raw, first = raw_exchange(p.port, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(status_of(raw), 503, raw[:200])
        self.assertLess(first, 1.0)
        held.pop().close()
        h.wait_until(lambda: status_of(raw_exchange(p.port, b"GET /health HTTP/1.1\r\nHost: x\r\n"
                                                    b"Connection: close\r\n\r\n")[0]) == 200, 5)
        for s in held:
            s.close()
        r = h.request("GET", p.url + "/metrics")
        self.assertRegex(r.text, r"\nap_connections_refused_total [1-9]")

    def test_out_of_descriptors_does_not_spin(self):
        if h.under_valgrind():
            self.skipTest("descriptor limits and valgrind do not mix")
        p = h.Proxy(self.workdir, self.mock, self.redis, name="few-fds", env={"LOG_LEVEL": "info"},
                    valgrind=False)
        p.cmd = ["prlimit", "--nofile=48:48"] + p.cmd
        self.track(p).start()
        socks = []
        try:
            for _ in range(80):
                socks.append(socket.create_connection(("127.0.0.1", p.port), timeout=2))
        except OSError:
            pass
        def cpu():
            with open("/proc/%d/stat" % p.pid) as f:
                parts = f.read().rsplit(")", 1)[1].split()
            return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")
        c0 = cpu()
        time.sleep(1.5)
        used = cpu() - c0
        print("    %d connections pending over the limit: %.2f s CPU in 1.5 s" % (len(socks), used))
        self.assertLess(used, 0.5, "the accept loop spins when descriptors run out")
        log = p.log()
        self.assertLess(log.count("out of descriptors"), 5, "the condition is logged per attempt")
        self.assertIn("out of descriptors", log)
        for s in socks:
            s.close()
        h.wait_until(lambda: h.request("GET", p.url + "/health", timeout=2).status == 200, 10)


if __name__ == "__main__":
    unittest.main()
