"""Tests of the test tools themselves: tests/mock_upstream.py and tests/lib/harness.py.

The proxy's tests trust the mock's wire format and the harness's parsers; these tests are
what that trust rests on.
"""

import http.client
import json
import os
import random
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from lib import harness as h  # noqa: E402

MODEL = "claude-sonnet-4-5"


def anthropic_body(text="hello there, mock", stream=False, **extra):
    body = {"model": MODEL, "max_tokens": 100, "stream": stream,
            "messages": [{"role": "user", "content": text}]}
    body.update(extra)
    return body


def openai_body(text="hello there, mock", stream=False, **extra):
    body = {"model": MODEL, "stream": stream, "messages": [{"role": "user", "content": text}]}
    body.update(extra)
    return body


def dechunk_sizes(raw_response):
    """Chunk sizes of a raw chunked HTTP response (headers included in the input)."""
    head, _, body = raw_response.partition(b"\r\n\r\n")
    sizes = []
    while body:
        line, _, body = body.partition(b"\r\n")
        n = int(line, 16)
        if n == 0:
            break
        sizes.append(n)
        body = body[n + 2:]
    return head, sizes


class MockUpstreamTest(h.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.mock = cls.start_mock()

    def setUp(self):
        super().setUp()
        self.mock.reset()

    def post(self, path, body, **kw):
        return h.request("POST", self.mock.url + path, body=body, **kw)

    def anthropic_stream(self, body):
        with h.stream("POST", self.mock.url + "/v1/messages", body=body) as s:
            self.assertEqual(s.status, 200)
            self.assertTrue(s.headers["content-type"].startswith("text/event-stream"))
            self.assertEqual(s.headers.get("transfer-encoding"), "chunked")
            return h.sse_json(s.events())

    def openai_stream(self, body):
        with h.stream("POST", self.mock.url + "/v1/chat/completions", body=body) as s:
            self.assertEqual(s.status, 200)
            return h.sse_json(s.events())

    # ---- Anthropic ----
    def test_anthropic_non_stream(self):
        body = anthropic_body("what is   the\nweather?")
        raw = json.dumps(body).encode()
        r = self.post("/v1/messages", raw)
        self.assertEqual(r.status, 200)
        self.assertTrue(r.headers["request-id"].startswith("req_"))
        m = r.json()
        self.assertRegex(m["id"], r"^msg_[A-Za-z0-9]{24}$")
        self.assertEqual((m["type"], m["role"], m["model"]), ("message", "assistant", MODEL))
        text = m["content"][0]["text"]
        self.assertEqual(text, "Hello from the mock upstream. You said: what is   the\nweather?")
        self.assertEqual(m["stop_reason"], "end_turn")
        self.assertIsNone(m["stop_sequence"])
        self.assertEqual(m["usage"], {"input_tokens": len(raw) // 4,
                                      "output_tokens": len(text.split()),
                                      "cache_creation_input_tokens": 0,
                                      "cache_read_input_tokens": 0})

    def test_anthropic_stream_event_order_and_text(self):
        # Content given as blocks, with odd whitespace and non-ASCII text.
        content = [{"type": "text", "text": "héllo  wörld\n"}, {"type": "text", "text": "again"}]
        plain = self.post("/v1/messages", anthropic_body(content)).json()
        expected_text = plain["content"][0]["text"]

        body = json.dumps(anthropic_body(content, stream=True)).encode()
        events = self.anthropic_stream(body)
        names = [e for e, _ in events]
        n_words = len(expected_text.split())
        self.assertEqual(names, ["message_start", "content_block_start", "ping"]
                         + ["content_block_delta"] * n_words
                         + ["content_block_stop", "message_delta", "message_stop"])
        for name, data in events:
            self.assertEqual(data["type"], name)
        start = events[0][1]["message"]
        self.assertEqual(start["content"], [])
        self.assertEqual(start["usage"]["input_tokens"], len(body) // 4)
        self.assertEqual(start["usage"]["output_tokens"], 1)
        deltas = [d["delta"]["text"] for e, d in events if e == "content_block_delta"]
        self.assertEqual("".join(deltas), expected_text)
        self.assertTrue(all(d.endswith(" ") or d.endswith("\n") for d in deltas[:-1]))
        self.assertEqual(events[-2][1], {"type": "message_delta",
                                         "delta": {"stop_reason": "end_turn",
                                                   "stop_sequence": None},
                                         "usage": {"output_tokens": n_words}})

    def test_anthropic_thinking_stream(self):
        self.mock.behaviour(MODEL, reply="thinking")
        events = self.anthropic_stream(anthropic_body(stream=True))
        blocks = {}
        for e, d in events:
            if e == "content_block_start":
                blocks[d["index"]] = dict(d["content_block"])
            elif e == "content_block_delta":
                b, delta = blocks[d["index"]], d["delta"]
                if delta["type"] == "thinking_delta":
                    b["thinking"] += delta["thinking"]
                elif delta["type"] == "signature_delta":
                    b["signature"] = delta["signature"]
                elif delta["type"] == "text_delta":
                    b["text"] += delta["text"]
        self.assertEqual(blocks[0], {"type": "thinking", "thinking": "Let me think.",
                                     "signature": "sig_mock_123"})
        self.assertEqual(blocks[1]["type"], "text")
        self.assertTrue(blocks[1]["text"].startswith("Hello from the mock upstream."))
        plain = self.post("/v1/messages", anthropic_body()).json()
        self.assertEqual([b["type"] for b in plain["content"]], ["thinking", "text"])

    def test_anthropic_tool_use(self):
        self.mock.behaviour("*", reply="tool_use")
        tools = [{"name": "lookup", "description": "x", "input_schema": {"type": "object"}}]
        m = self.post("/v1/messages", anthropic_body(tools=tools)).json()
        self.assertEqual(m["stop_reason"], "tool_use")
        self.assertEqual(m["content"][0]["name"], "lookup")
        self.assertEqual(m["content"][0]["input"], {"city": "Paris"})
        self.assertTrue(m["content"][0]["id"].startswith("toolu_"))

        events = self.anthropic_stream(anthropic_body(stream=True))  # no tools given
        start = [d for e, d in events if e == "content_block_start"][0]["content_block"]
        self.assertEqual((start["type"], start["name"]), ("tool_use", "get_weather"))
        parts = [d["delta"]["partial_json"] for e, d in events if e == "content_block_delta"]
        self.assertGreater(len(parts), 2)
        self.assertEqual(json.loads("".join(parts)), {"city": "Paris"})
        delta = [d for e, d in events if e == "message_delta"][0]
        self.assertEqual(delta["delta"]["stop_reason"], "tool_use")

    # ---- OpenAI ----
    def test_openai_stream_with_include_usage(self):
        plain = self.post("/v1/chat/completions", openai_body("hi there")).json()
        self.assertEqual(plain["object"], "chat.completion")
        expected_text = plain["choices"][0]["message"]["content"]
        self.assertEqual(plain["choices"][0]["finish_reason"], "stop")

        body = json.dumps(openai_body("hi there", stream=True,
                                      stream_options={"include_usage": True})).encode()
        events = self.openai_stream(body)
        self.assertTrue(all(e is None for e, _ in events))
        self.assertEqual(events[-1][1], "[DONE]")
        chunks = [d for _, d in events[:-1]]
        self.assertEqual(len({c["id"] for c in chunks}), 1)
        self.assertEqual(chunks[0]["choices"][0]["delta"]["role"], "assistant")
        text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks[:-1])
        self.assertEqual(text, expected_text)
        self.assertEqual(chunks[-2]["choices"][0]["finish_reason"], "stop")
        self.assertEqual(chunks[-1]["choices"], [])
        o = len(expected_text.split())
        self.assertEqual(chunks[-1]["usage"], {"prompt_tokens": len(body) // 4,
                                               "completion_tokens": o,
                                               "total_tokens": len(body) // 4 + o})
        # Without include_usage: no usage chunk at all.
        events = self.openai_stream(openai_body("hi there", stream=True))
        self.assertTrue(all("usage" not in d for _, d in events[:-1]))
        self.assertEqual(events[-2][1]["choices"][0]["finish_reason"], "stop")

    def test_openai_tool_calls_and_reasoning(self):
        self.mock.behaviour(MODEL, reply="tool_use")
        tools = [{"type": "function", "function": {"name": "search", "parameters": {}}}]
        plain = self.post("/v1/chat/completions", openai_body(tools=tools)).json()
        choice = plain["choices"][0]
        self.assertEqual(choice["finish_reason"], "tool_calls")
        call = choice["message"]["tool_calls"][0]
        self.assertTrue(call["id"].startswith("call_"))
        self.assertEqual(call["function"]["name"], "search")
        self.assertEqual(json.loads(call["function"]["arguments"]), {"city": "Paris"})

        events = self.openai_stream(openai_body(stream=True, tools=tools))
        deltas = [d["choices"][0]["delta"] for _, d in events[:-1]]
        calls = [tc for d in deltas for tc in d.get("tool_calls", [])]
        self.assertEqual(calls[0]["function"]["name"], "search")
        self.assertTrue(calls[0]["id"].startswith("call_"))
        self.assertTrue(all("id" not in c for c in calls[1:]))
        self.assertGreater(len(calls), 2)
        self.assertEqual(json.loads("".join(c["function"]["arguments"] for c in calls)),
                         {"city": "Paris"})
        self.assertEqual(events[-2][1]["choices"][0]["finish_reason"], "tool_calls")

        self.mock.behaviour(MODEL, reply="thinking")
        plain = self.post("/v1/chat/completions", openai_body()).json()
        self.assertEqual(plain["choices"][0]["message"]["reasoning_content"], "Let me think.")
        events = self.openai_stream(openai_body(stream=True))
        kinds = []
        for _, d in events[:-1]:
            for k in ("reasoning_content", "content"):
                if d["choices"][0]["delta"].get(k):
                    kinds.append(k)
        self.assertEqual(kinds[0], "reasoning_content")
        self.assertEqual(kinds.index("content"), kinds.count("reasoning_content"))

    def test_usage_override_and_no_usage(self):
        u = {"input_tokens": 10, "output_tokens": 20, "cache_creation_input_tokens": 3,
             "cache_read_input_tokens": 5}
        self.mock.behaviour("*", usage=u)
        self.assertEqual(self.post("/v1/messages", anthropic_body()).json()["usage"], u)
        usage = self.post("/v1/chat/completions", openai_body()).json()["usage"]
        self.assertEqual(usage, {"prompt_tokens": 15, "completion_tokens": 20,
                                 "total_tokens": 35, "prompt_tokens_details": {"cached_tokens": 5}})
        self.mock.behaviour("*", mode="no_usage")
        self.assertNotIn("usage", self.post("/v1/messages", anthropic_body()).json())
        events = self.anthropic_stream(anthropic_body(stream=True))
        self.assertNotIn("usage", events[0][1]["message"])
        self.assertNotIn("usage", [d for e, d in events if e == "message_delta"][0])
        events = self.openai_stream(openai_body(stream=True,
                                                stream_options={"include_usage": True}))
        self.assertTrue(all("usage" not in d for _, d in events[:-1]))

    # ---- behaviours ----
    def test_behaviour_count_expiry_and_precedence(self):
        self.mock.behaviour("*", status=503)
        self.mock.behaviour(MODEL, status=429, count=2, headers={"retry-after": "7"},
                            body={"type": "error", "error": {"type": "rate_limit_error",
                                                             "message": "slow down"}})
        r = self.post("/v1/messages", anthropic_body())
        self.assertEqual(r.status, 429)
        self.assertEqual(r.headers["retry-after"], "7")
        self.assertEqual(r.json()["error"]["message"], "slow down")
        self.assertEqual(self.post("/v1/chat/completions", openai_body()).status, 429)
        # The specific behaviour is used up: the wildcard applies again.
        r = self.post("/v1/messages", anthropic_body())
        self.assertEqual(r.status, 503)
        self.assertEqual(r.json()["error"]["type"], "overloaded_error")
        r = self.post("/v1/chat/completions", openai_body())
        self.assertEqual(r.json()["error"]["type"], "overloaded_error")  # OpenAI shape
        self.mock.behaviour("*")  # a behaviour with no fields clears it
        self.assertEqual(self.post("/v1/messages", anthropic_body()).status, 200)
        self.mock.behaviour("*", status=500, body="plain failure")
        r = self.post("/v1/messages", anthropic_body())
        self.assertEqual((r.status, r.text), (500, "plain failure"))
        self.assertTrue(r.headers["content-type"].startswith("text/plain"))
        with self.assertRaises(AssertionError):  # typos are refused, not ignored
            self.mock.behaviour("*", mdoe="hang")

    def test_delay_and_text(self):
        self.mock.behaviour(MODEL, delay_ms=300, text="custom  answer")
        t0 = time.monotonic()
        m = self.post("/v1/messages", anthropic_body()).json()
        self.assertGreaterEqual(time.monotonic() - t0, 0.3)
        self.assertEqual(m["content"][0]["text"], "custom  answer")
        self.assertEqual(m["usage"]["output_tokens"], 2)

    def test_connection_failures(self):
        url = self.mock.url + "/v1/messages"
        self.mock.behaviour("*", mode="reset_before_headers")
        with self.assertRaises((ConnectionError, http.client.HTTPException)):
            h.request("POST", url, body=anthropic_body())
        self.mock.behaviour("*", mode="garbage")
        with self.assertRaises((ConnectionError, http.client.HTTPException)):
            h.request("POST", url, body=anthropic_body())
        self.mock.behaviour("*", mode="reset_mid_stream")
        got = bytearray()
        with self.assertRaises((ConnectionError, http.client.HTTPException)):
            with h.stream("POST", url, body=anthropic_body(stream=True)) as s:
                for chunk in s:
                    got += chunk
        names = [e for e, _ in h.parse_sse(bytes(got))]
        self.assertEqual(names[0], "message_start")
        self.assertNotIn("message_stop", names)
        with self.assertRaises((ConnectionError, http.client.HTTPException)):
            h.request("POST", url, body=anthropic_body())  # non-stream: truncated body

        self.mock.behaviour("*", mode="error_event")
        events = self.anthropic_stream(anthropic_body(stream=True))
        self.assertEqual([e for e, _ in events], ["message_start", "error"])
        self.assertEqual(events[1][1]["error"]["type"], "overloaded_error")

        self.mock.behaviour("*", mode="empty_200")
        with h.stream("POST", url, body=anthropic_body(stream=True)) as s:
            self.assertEqual((s.status, s.read_all()), (200, b""))

    def test_hang_until_client_leaves(self):
        self.mock.behaviour("*", mode="hang", count=1)
        with self.assertRaises(OSError):  # socket.timeout
            h.request("POST", self.mock.url + "/v1/messages", body=anthropic_body(),
                      timeout=0.5)
        # The mock is still fine and the hang was used up.
        self.assertEqual(self.post("/v1/messages", anthropic_body()).status, 200)

    def test_split_bytes_and_big_stream(self):
        normal = self.anthropic_stream(anthropic_body(stream=True))
        self.mock.behaviour("*", mode="split_bytes")
        split = self.anthropic_stream(anthropic_body(stream=True))
        for events in (normal, split):
            events[0][1]["message"]["id"] = "msg_x"  # the only random field
        self.assertEqual(split, normal)
        # On the wire: HTTP chunks of 1 to 7 bytes.
        req = json.dumps(anthropic_body(stream=True)).encode()
        raw = h.raw("127.0.0.1", self.mock.port,
                    b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(req), req))
        head, sizes = dechunk_sizes(raw)
        self.assertIn(b"Transfer-Encoding: chunked", head)
        self.assertGreater(len(sizes), 100)
        self.assertTrue(all(1 <= n <= 7 for n in sizes), sizes[:20])

        self.mock.behaviour("*", mode="big_stream", words=3000)
        events = self.anthropic_stream(anthropic_body(stream=True))
        deltas = [d for e, d in events if e == "content_block_delta"]
        self.assertEqual(len(deltas), 3000)
        self.assertEqual(events[-2][1]["usage"]["output_tokens"], 3000)

    def test_chunk_delay_spreads_events(self):
        self.mock.behaviour("*", chunk_delay_ms=50)
        with h.stream("POST", self.mock.url + "/v1/messages",
                      body=anthropic_body("a", stream=True)) as s:
            times = [time.monotonic() for _ in s]
        # ~13 events 50 ms apart: the body must arrive piece by piece, not at once.
        self.assertGreater(len(times), 5)
        self.assertGreater(times[-1] - times[0], 0.4)

    # ---- other endpoints, control API ----
    def test_health_models_count_tokens(self):
        doc = h.request("GET", self.mock.url + "/health").json()
        self.assertEqual(doc["status"], "ok")
        models = doc["accounts"][0]["models"]
        self.assertEqual(models["claude-opus-4-6-thinking"]["remainingFraction"], 1.0)
        custom = {"status": "ok", "accounts": [{"email": "a@x", "status": "ok",
                                                "models": {"m": {"remainingFraction": None}}}]}
        self.mock.set_health(custom)
        self.assertEqual(h.request("GET", self.mock.url + "/health").json(), custom)
        self.mock.set_health({"__status": 500})
        r = h.request("GET", self.mock.url + "/health")
        self.assertEqual((r.status, r.json()), (500, {}))
        self.mock.reset()
        self.assertIn("timestamp", h.request("GET", self.mock.url + "/health").json())

        data = h.request("GET", self.mock.url + "/v1/models").json()["data"]
        self.assertIn({"id": "gemini-3-flash", "type": "model"},
                      [{"id": m["id"], "type": m["type"]} for m in data])
        body = json.dumps(anthropic_body()).encode()
        r = self.post("/v1/messages/count_tokens", body)
        self.assertEqual(r.json(), {"input_tokens": len(body) // 4})

    def test_request_log_and_stats(self):
        self.post("/v1/messages", anthropic_body(), headers={"X-Api-Key": "k1"})
        self.post("/v1/chat/completions", dict(openai_body(), model="other"))
        h.request("GET", self.mock.url + "/v1/models?limit=5")
        reqs = self.mock.requests()
        self.assertEqual([r["path"] for r in reqs],
                         ["/v1/messages", "/v1/chat/completions", "/v1/models"])
        self.assertEqual(reqs[0]["headers"]["x-api-key"], "k1")
        self.assertEqual(reqs[0]["body"]["model"], MODEL)
        self.assertEqual(reqs[2]["query"], "limit=5")
        self.assertEqual(len(self.mock.requests("/v1/messages")), 1)
        self.assertEqual(self.mock.stats()["by_model"], {MODEL: 1, "other": 1})
        self.assertEqual(self.mock.stats()["total"], 2)
        self.mock.clear_requests()
        self.assertEqual(self.mock.requests(), [])
        self.assertEqual(self.mock.stats()["total"], 0)

    def test_bad_input_gets_400_json(self):
        for path in ("/v1/messages", "/v1/chat/completions", "/_control/behaviour"):
            for body in (b"{not json", b"[1,2]", b'{"messages": 5}'):
                r = self.post(path, body)
                self.assertEqual(r.status, 400, (path, body))
                r.json()
        out = h.raw("127.0.0.1", self.mock.port, b"BLAH\r\n\r\n")
        self.assertTrue(out.startswith(b"HTTP/1.1 400"), out[:100])
        self.assertIn(b'"type":"error"', out)
        # Still alive and well.
        self.assertEqual(self.post("/v1/messages", anthropic_body()).status, 200)

    def test_keepalive_survives_errors_and_chunked_requests(self):
        with h.Client(self.mock.url) as c:
            self.assertEqual(c.post("/v1/messages", b"{oops").status, 400)
            self.mock.behaviour("*", status=429, count=1)
            self.assertEqual(c.post("/v1/messages", anthropic_body()).status, 429)
            self.assertEqual(c.post("/v1/messages", anthropic_body()).status, 200)
            self.assertEqual(c.connects, 1)
        # A chunked request body (as a proxy relaying a client's chunked upload sends).
        req = json.dumps(anthropic_body("chunked hello")).encode()
        chunked = b"".join(b"%x\r\n%s\r\n" % (len(req[i:i + 10]), req[i:i + 10])
                           for i in range(0, len(req), 10)) + b"0\r\n\r\n"
        out = h.raw("127.0.0.1", self.mock.port,
                    b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                    b"Transfer-Encoding: chunked\r\n\r\n" + chunked)
        self.assertTrue(out.startswith(b"HTTP/1.1 200"), out[:200])
        self.assertIn(b"You said: chunked hello", out)

    def test_keepalive_concurrent_clients(self):
        errors, connects = [], []

        def worker():
            try:
                with h.Client(self.mock.url) as c:
                    for i in range(40):
                        stream = i % 4 == 0
                        r = c.post("/v1/messages", anthropic_body(stream=stream))
                        if r.status != 200:
                            errors.append(r.status)
                    connects.append(c.connects)
            except Exception as e:
                errors.append(repr(e))

        threads = [threading.Thread(target=worker) for _ in range(32)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(errors, [])
        self.assertEqual(connects, [1] * 32)  # one connection each: keep-alive works
        self.assertEqual(self.mock.stats()["total"], 32 * 40)


class HarnessTest(h.TestCase):
    def test_redis_restart_keeps_data(self):
        srv = self.start_redis()
        c = srv.client()
        c.cmd("SET", "k", "v1")
        c.pipeline([("HINCRBY", "h", "a", 5), ("HINCRBY", "h", "a", 2), ("RPUSH", "l", "x", "y")])
        port = srv.port
        srv.restart()
        self.assertEqual(srv.port, port)
        c = srv.client()  # a fresh connection; the old one died with the server
        self.assertEqual(c.cmd("GET", "k"), "v1")
        self.assertEqual(c.cmd("HGETALL", "h"), ["a", "7"])
        # appendfsync always: even a SIGKILL loses nothing that was acknowledged.
        c.cmd("SET", "k", "v2")
        srv.kill()
        srv.start()
        self.assertEqual(srv.client().cmd("GET", "k"), "v2")
        self.assertEqual(srv.client().cmd("LRANGE", "l", 0, -1), ["x", "y"])

    def test_redis_client_replies(self):
        c = self.start_redis().client()
        self.assertIsNone(c.cmd("GET", "missing"))
        self.assertEqual(c.cmd("INCRBY", "n", 41), 41)
        c.cmd("SET", "bin", b"\xff\x00\xfe")
        self.assertEqual(c.cmd("GET", "bin"), b"\xff\x00\xfe")
        self.assertEqual(c.cmd("SET", "u", "héllo"), "OK")
        self.assertEqual(c.cmd("GET", "u"), "héllo")
        with self.assertRaises(h.RedisError):
            c.cmd("HGET", "n", "x")  # WRONGTYPE
        replies = c.pipeline([("INCR", "n"), ("HGET", "n", "x"), ("GET", "n")],
                             raise_on_error=False)
        self.assertEqual(replies[0], 42)
        self.assertIsInstance(replies[1], h.RedisError)
        self.assertEqual(replies[2], "42")
        with self.assertRaises(h.RedisError):
            c.pipeline([("INCR", "n"), ("HGET", "n", "x")])
        self.assertEqual(c.cmd("GET", "n"), "43")
        self.assertEqual(h.Redis.from_url(self.start_redis().url).cmd("PING"), "PONG")

    def test_parse_sse_split_input(self):
        text = ("event: message_start\r\ndata: {\"a\": \"h\u00e9\u20ac\"}\r\n\r\n"
                ": a comment\n"
                "data: line1\ndata:line2\n\n"
                "event: x\rdata: y\r\r"
                "data: [DONE]\n\n"
                "event: incomplete\ndata: never terminated\n")
        data = text.encode()
        expected = [("message_start", '{"a": "h\u00e9\u20ac"}'), (None, "line1\nline2"),
                    ("x", "y"), (None, "[DONE]")]
        self.assertEqual(h.parse_sse(data), expected)
        self.assertEqual(h.parse_sse(text), expected)
        # Every two-piece split, and random 1-7 byte pieces (inside the UTF-8 characters
        # and between \r and \n too).
        for cut in range(len(data) + 1):
            p = h.SSEParser()
            self.assertEqual(p.feed(data[:cut]) + p.feed(data[cut:]), expected, cut)
        rng = random.Random(7)
        for _ in range(50):
            p, got, i = h.SSEParser(), [], 0
            while i < len(data):
                n = rng.randint(1, 7)
                got += p.feed(data[i:i + n])
                i += n
            self.assertEqual(got, expected)

    def test_wait_until(self):
        box = []
        self.assertEqual(h.wait_until(lambda: box.append(1) or len(box) >= 3 and "yes", 2), "yes")
        t0 = time.monotonic()
        def broken():
            raise ValueError("boom")

        with self.assertRaisesRegex(AssertionError, "the sky to fall.*boom"):
            h.wait_until(broken, 0.2, message="the sky to fall")
        self.assertLess(time.monotonic() - t0, 1.5)

    def test_proc_stop_and_exit_checks(self):
        p = self.track(h.Proc(["sh", "-c", "trap 'exit 3' TERM; echo started; "
                                           "while :; do sleep 0.05; done"],
                              self.workdir, name="trapper")).start()
        # (Look for whole lines: the log's first line holds the command itself.)
        h.wait_until(lambda: "started" in p.log().splitlines(), 5)
        self.assertTrue(p.alive())
        self.assertEqual(p.stop(), 3)
        self.assertFalse(p.alive())
        stubborn = self.track(h.Proc(["sh", "-c", "trap '' TERM; echo up; "
                                                  "while :; do sleep 0.05; done"],
                                     self.workdir, name="stubborn")).start()
        h.wait_until(lambda: "up" in stubborn.log().splitlines(), 5)
        self.assertEqual(stubborn.stop(timeout=0.3), -9)
        # A daemon (check_exit) that dies by itself is reported at teardown.
        crasher = h.Proc(["sh", "-c", "exit 7"], self.workdir, name="crasher")
        crasher.check_exit = True
        crasher.start()
        h.wait_until(lambda: not crasher.alive(), 5)
        problems = h._problems_after_stop([crasher])
        self.assertEqual(len(problems), 1)
        self.assertIn("code 7", problems[0])
        # env overrides: added, and None removes an inherited variable.
        os.environ["AP_HARNESS_PROBE"] = "inherited"
        try:
            e = self.track(h.Proc(["sh", "-c", "echo A=$A B=${AP_HARNESS_PROBE-unset}"],
                                  self.workdir, name="env", env={"A": 1,
                                                                 "AP_HARNESS_PROBE": None}))
            e.start()
            self.assertEqual(e.wait(5), 0)
            self.assertIn("A=1 B=unset", e.log())
        finally:
            del os.environ["AP_HARNESS_PROBE"]


if __name__ == "__main__":
    unittest.main()
