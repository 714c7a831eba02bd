"""Graceful shutdown (docs/contract.md section 1): on SIGTERM stop accepting, let in-flight requests
and streams finish, flush usage, exit 0."""

import json
import re
import signal
import socket
import threading
import time
import unittest

from lib import harness as h

MODEL = "claude-sonnet-4-5"
WORDS = 20
DELAY_MS = 100


def refuses_connections(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return False
    except ConnectionRefusedError:
        return True


class ShutdownTest(h.TestCase):
    def setUp(self):
        super().setUp()
        self.redis = self.start_redis()
        self.mock = self.start_mock()
        self.proxy = self.start_proxy(self.mock, self.redis,
                                      env={"SHUTDOWN_GRACE_SECONDS": 15})
        self.key = self.proxy.create_key("shutdown")

    def usage_via_new_replica(self):
        """/admin/usage read through a fresh replica on the same Redis."""
        other = self.start_proxy(self.mock, self.redis, name=self.unique_name("proxy-after"))
        st, doc = other.admin("GET", "/admin/usage")
        self.assertEqual(st, 200)
        return doc

    def test_sigterm_waits_for_a_reply_still_being_written(self):
        # Regression: the replica left as soon as no request was in flight, while the last
        # reply was still in its output buffer for a client reading slowly: cut short.
        text = " ".join("word%d" % i for i in range(800000))  # ~8 MB: more than the kernel buffers hold
        self.mock.behaviour("*", text=text)
        body = json.dumps({"model": MODEL, "max_tokens": 8,
                           "messages": [{"role": "user", "content": "big"}]}).encode()
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", self.proxy.port))
        self.addCleanup(s.close)
        s.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nx-api-key: " + self.key.encode() +
                  b"\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        got = s.recv(4096)
        self.assertTrue(got.startswith(b"HTTP/1.1 200"), got[:100])
        time.sleep(0.5)  # the answer is in; the proxy holds the rest for this slow reader
        self.proxy.signal(signal.SIGTERM)
        time.sleep(0.5)
        s.settimeout(10)
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
        head, _, rest = got.partition(b"\r\n\r\n")
        length = int(re.search(rb"Content-Length: (\d+)", head, re.I).group(1))
        self.assertEqual(len(rest), length, "the reply was cut short at shutdown")
        json.loads(rest)
        self.assertEqual(self.proxy.wait(15), 0)

    def test_sigterm_lets_a_slow_stream_finish_and_flushes_usage(self):
        text = " ".join("w%d" % i for i in range(WORDS))
        self.mock.behaviour("*", chunk_delay_ms=DELAY_MS, text=text)
        # A non-streamed request in flight as well.
        self.mock.behaviour("slow-json", delay_ms=1000)
        json_result = {}

        def slow_json():
            r = h.request("POST", self.proxy.url + "/v1/messages", headers={"x-api-key": self.key},
                          body={"model": "slow-json", "max_tokens": 8,
                                "messages": [{"role": "user", "content": "json"}]})
            json_result["r"] = r

        body = {"model": MODEL, "max_tokens": 64, "stream": True,
                "messages": [{"role": "user", "content": "slow"}]}
        with h.stream("POST", self.proxy.url + "/v1/messages", body=body,
                      headers={"x-api-key": self.key}) as s:
            self.assertEqual(s.status, 200)
            it = iter(s)
            data = bytearray(next(it))
            self.assertIn(b"message_start", data)
            t = threading.Thread(target=slow_json)
            t.start()
            h.wait_until(lambda: len(self.mock.requests("/v1/messages")) >= 2, 5)

            t0 = time.monotonic()
            self.proxy.signal(signal.SIGTERM)
            h.wait_until(lambda: refuses_connections(self.proxy.port), 3,
                         message="the listener to close after SIGTERM")
            self.assertTrue(self.proxy.alive(), "exited with a stream in flight")
            for chunk in it:
                data += chunk
            took = time.monotonic() - t0
        t.join(10)
        events = h.sse_json(h.parse_sse(bytes(data)))
        names = [e for e, _ in events]
        self.assertEqual(names[-1], "message_stop", names[-5:])
        streamed = "".join(d["delta"]["text"] for e, d in events if e == "content_block_delta")
        self.assertEqual(streamed, text)
        self.assertGreater(took, (WORDS + 4) * DELAY_MS / 1000 * 0.5,
                           "the stream was not slow: nothing tested")
        self.assertEqual(json_result["r"].status, 200, json_result["r"].text)

        self.assertEqual(self.proxy.wait(20), 0)
        # Everything served was flushed before exit.
        start = events[0][1]["message"]["usage"]
        delta = [d for e, d in events if e == "message_delta"][0]["usage"]
        ju = json_result["r"].json()["usage"]
        doc = self.usage_via_new_replica()
        self.assertEqual(doc["total_requests"], 2)
        self.assertEqual(doc["total_input_tokens"], start["input_tokens"] + ju["input_tokens"])
        self.assertEqual(doc["total_output_tokens"], delta["output_tokens"] + ju["output_tokens"])

    def test_idle_sigterm_exits_0_promptly_with_usage_flushed(self):
        n = 5
        for i in range(n):
            r = h.request("POST", self.proxy.url + "/v1/messages", headers={"x-api-key": self.key},
                          body={"model": MODEL, "max_tokens": 8,
                                "messages": [{"role": "user", "content": "idle %d" % i}]})
            self.assertEqual(r.status, 200)
        # Right away: usage may still be in memory, and must be written before exit.
        t0 = time.monotonic()
        self.proxy.signal(signal.SIGTERM)
        self.assertEqual(self.proxy.wait(10), 0)
        self.assertLess(time.monotonic() - t0, 3)
        self.assertEqual(self.usage_via_new_replica()["total_requests"], n)

    def test_grace_period_bounds_the_wait(self):
        # A stream that would outlast the grace period does not keep the process alive.
        proxy = self.start_proxy(self.mock, self.redis, name="proxy-short-grace",
                                 env={"SHUTDOWN_GRACE_SECONDS": 1})
        key = proxy.create_key("grace")
        self.mock.behaviour("*", chunk_delay_ms=200, text=" ".join(["w"] * 50))  # ~11 s
        body = {"model": MODEL, "max_tokens": 64, "stream": True,
                "messages": [{"role": "user", "content": "long"}]}
        with h.stream("POST", proxy.url + "/v1/messages", body=body,
                      headers={"x-api-key": key}) as s:
            next(iter(s))
            t0 = time.monotonic()
            proxy.signal(signal.SIGTERM)
            self.assertEqual(proxy.wait(10), 0)
            took = time.monotonic() - t0
        self.assertGreater(took, 0.8, "exited before the grace period with a stream in flight")
        self.assertLess(took, 4)

    def test_keepalive_client_is_not_kept_waiting(self):
        # An idle keep-alive connection must not hold the shutdown up.
        with h.Client(self.proxy.url, headers={"x-api-key": self.key}) as c:
            r = c.post("/v1/messages", {"model": MODEL, "max_tokens": 8,
                                        "messages": [{"role": "user", "content": "ka"}]})
            self.assertEqual(r.status, 200)
            t0 = time.monotonic()
            self.proxy.signal(signal.SIGTERM)
            self.assertEqual(self.proxy.wait(10), 0)
            self.assertLess(time.monotonic() - t0, 5)


if __name__ == "__main__":
    unittest.main()
