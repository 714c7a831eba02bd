"""Upstream faults: an unreachable, broken, silent or dying upstream gives the client a clean
answer in the endpoint's format (502 / 504, or an error event once a stream has begun), never
slows the other requests, and leaves no file descriptor behind."""

import os
import threading
import time
import unittest

from lib import harness as h

MODEL = "claude-sonnet-4-5"
READ_TIMEOUT_S = 2


def anthropic_body(model=MODEL, stream=False, text="fault"):
    b = {"model": model, "max_tokens": 32, "messages": [{"role": "user", "content": text}]}
    if stream:
        b["stream"] = True
    return b


def openai_body(model=MODEL, stream=False, text="fault"):
    b = {"model": model, "messages": [{"role": "user", "content": text}]}
    if stream:
        b["stream"] = True
    return b


def open_fds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


class ErrorShapes:
    def assertAnthropicError(self, r, status):
        self.assertEqual(r.status, status, r.body[:300])
        doc = r.json()
        self.assertEqual(doc.get("type"), "error", doc)
        self.assertIsInstance(doc["error"]["type"], str)
        self.assertIsInstance(doc["error"]["message"], str)

    def assertOpenAIError(self, r, status):
        self.assertEqual(r.status, status, r.body[:300])
        doc = r.json()
        self.assertNotIn("type", doc)
        self.assertIsInstance(doc["error"]["message"], str)
        self.assertIsInstance(doc["error"]["type"], str)
        self.assertIn("code", doc["error"])


class UpstreamUnreachableTest(ErrorShapes, h.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.redis = cls.start_redis()
        closed = "http://127.0.0.1:%d" % h.free_port()  # nothing listens there
        cls.proxy = cls.start_proxy(closed, cls.redis)
        cls.key = cls.proxy.create_key("unreachable")

    def post(self, path, body):
        return h.request("POST", self.proxy.url + path, body=body,
                         headers={"x-api-key": self.key}, timeout=15)

    def test_closed_port_is_502_in_each_format(self):
        t0 = time.monotonic()
        self.assertAnthropicError(self.post("/v1/messages", anthropic_body()), 502)
        self.assertAnthropicError(self.post("/v1/messages", anthropic_body(stream=True)), 502)
        self.assertOpenAIError(self.post("/v1/chat/completions", openai_body()), 502)
        self.assertOpenAIError(self.post("/v1/chat/completions", openai_body(stream=True)), 502)
        r = h.request("GET", self.proxy.url + "/v1/models", headers={"x-api-key": self.key})
        self.assertAnthropicError(r, 502)
        self.assertLess(time.monotonic() - t0, 5, "a refused connection should fail fast")
        # Failed requests are not counted as requests.
        h.wait_until(lambda: h.request("GET", self.proxy.url + "/health").json()
                     .get("usage_pending", 0) == 0, 5)
        self.assertEqual(self.proxy.admin("GET", "/admin/usage")[1]["total_requests"], 0)


class UpstreamFaultsTest(ErrorShapes, h.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.redis = cls.start_redis()
        cls.mock = cls.start_mock()
        cls.proxy = cls.start_proxy(cls.mock, cls.redis, log_level="info",
                                    env={"UPSTREAM_READ_TIMEOUT_SECONDS": READ_TIMEOUT_S})
        cls.key = cls.proxy.create_key("faults")

    def setUp(self):
        super().setUp()
        self.mock.reset()

    def post(self, path, body, timeout=30):
        return h.request("POST", self.proxy.url + path, body=body,
                         headers={"x-api-key": self.key}, timeout=timeout)

    def test_reset_before_headers_is_502(self):
        self.mock.behaviour("*", mode="reset_before_headers")
        self.assertAnthropicError(self.post("/v1/messages", anthropic_body()), 502)
        self.assertAnthropicError(self.post("/v1/messages", anthropic_body(stream=True)), 502)
        self.assertOpenAIError(self.post("/v1/chat/completions", openai_body()), 502)
        self.assertOpenAIError(self.post("/v1/chat/completions", openai_body(stream=True)), 502)

    def test_garbage_is_502(self):
        self.mock.behaviour("*", mode="garbage")
        self.assertAnthropicError(self.post("/v1/messages", anthropic_body()), 502)
        self.assertAnthropicError(self.post("/v1/messages", anthropic_body(stream=True)), 502)
        self.assertOpenAIError(self.post("/v1/chat/completions", openai_body()), 502)

    def test_truncated_non_stream_body_is_502(self):
        # Half of a Content-Length body, then a RST: the client must not get half a JSON.
        self.mock.behaviour("*", mode="reset_mid_stream")
        self.assertAnthropicError(self.post("/v1/messages", anthropic_body()), 502)
        self.assertOpenAIError(self.post("/v1/chat/completions", openai_body()), 502)

    def test_hanging_upstream_is_504(self):
        self.mock.behaviour("*", mode="hang")
        t0 = time.monotonic()
        self.assertAnthropicError(self.post("/v1/messages", anthropic_body()), 504)
        took = time.monotonic() - t0
        why = "504 after %.1fs with UPSTREAM_READ_TIMEOUT_SECONDS=%d" % (took, READ_TIMEOUT_S)
        self.assertGreater(took, READ_TIMEOUT_S * 0.8, why)
        self.assertLess(took, READ_TIMEOUT_S + 3, why)
        self.assertOpenAIError(self.post("/v1/chat/completions", openai_body(stream=True)), 504)

    def test_reset_mid_stream_ends_with_an_error_event(self):
        self.mock.behaviour("*", mode="reset_mid_stream", text="one two three four five six "
                            "seven eight nine ten")
        with h.stream("POST", self.proxy.url + "/v1/messages", body=anthropic_body(stream=True),
                      headers={"x-api-key": self.key}) as s:
            self.assertEqual(s.status, 200)
            data = s.read_all()  # http.client raises IncompleteRead on a broken chunked body
        events = h.sse_json(h.parse_sse(data))
        names = [e for e, _ in events]
        self.assertEqual(names[0], "message_start")
        self.assertIn("content_block_delta", names, "the delivered events were lost")
        self.assertNotIn("message_stop", names)
        self.assertEqual(names[-1], "error", names)
        err = events[-1][1]
        self.assertEqual(err["type"], "error")
        self.assertIsInstance(err["error"]["type"], str)
        self.assertIsInstance(err["error"]["message"], str)
        self.assertTrue(data.endswith(b"\n\n"), data[-100:])
        self.assertEqual(names.count("error"), 1)

    def test_reset_mid_stream_openai_ends_with_an_error_chunk(self):
        self.mock.behaviour("*", mode="reset_mid_stream", text="a b c d e f g h i j k l")
        with h.stream("POST", self.proxy.url + "/v1/chat/completions",
                      body=openai_body(stream=True), headers={"x-api-key": self.key}) as s:
            self.assertEqual(s.status, 200)
            data = s.read_all()
        chunks = h.sse_json(h.parse_sse(data))
        self.assertTrue(any(isinstance(c, dict) and c.get("choices") for _, c in chunks))
        errs = [c for _, c in chunks if isinstance(c, dict) and "error" in c]
        self.assertEqual(len(errs), 1, chunks[-3:])
        self.assertIsInstance(errs[0]["error"]["message"], str)

    def test_hanging_requests_do_not_slow_others(self):
        self.mock.behaviour("hang-model", mode="hang")
        results = []

        def hang():
            results.append(self.post("/v1/messages", anthropic_body(model="hang-model")).status)

        threads = [threading.Thread(target=hang) for _ in range(6)]
        for t in threads:
            t.start()
        h.wait_until(lambda: len(self.mock.requests("/v1/messages")) >= 6, 5,
                     message="the hanging requests to reach the upstream")
        times = []
        for stream in (False, True, False, True):
            t0 = time.monotonic()
            r = self.post("/v1/messages", anthropic_body(stream=stream))
            times.append(time.monotonic() - t0)
            self.assertEqual(r.status, 200)
        print("    normal requests next to 6 hanging ones took %s ms"
              % ", ".join("%.1f" % (t * 1000) for t in times))
        self.assertLess(max(times), 0.5)
        for t in threads:
            t.join(READ_TIMEOUT_S + 10)
        self.assertEqual(results, [504] * 6)

    def test_no_fd_leak_after_faults(self):
        pid = self.proxy.pid
        for _ in range(3):  # warm up connection pools
            self.assertEqual(self.post("/v1/messages", anthropic_body()).status, 200)
        baseline = open_fds(pid)
        for mode in ("reset_before_headers", "garbage", "reset_mid_stream", "error_event"):
            self.mock.behaviour("*", mode=mode)
            for i in range(5):
                self.post("/v1/messages", anthropic_body(stream=i % 2 == 0))
                self.post("/v1/chat/completions", openai_body(stream=i % 2 == 1))
        self.mock.behaviour("*", mode="hang")
        threads = [threading.Thread(target=self.post, args=("/v1/messages", anthropic_body()))
                   for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(READ_TIMEOUT_S + 10)
        # Clients that leave mid-stream.
        self.mock.behaviour("*", chunk_delay_ms=50, text="x " * 40)
        for _ in range(3):
            with h.stream("POST", self.proxy.url + "/v1/messages",
                          body=anthropic_body(stream=True), headers={"x-api-key": self.key}) as s:
                next(iter(s))
        self.mock.reset()
        self.assertEqual(self.post("/v1/messages", anthropic_body()).status, 200)
        seen = []

        def back_to_baseline():
            seen.append(open_fds(pid))
            return seen[-1] <= baseline

        try:
            h.wait_until(back_to_baseline, 10, message="the fd count to return to %d" % baseline)
        finally:
            print("    open fds: %d before the faults, %d after" % (baseline, seen[-1]))
        self.assertEqual(h.request("GET", self.proxy.url + "/health").status, 200)


if __name__ == "__main__":
    unittest.main()
