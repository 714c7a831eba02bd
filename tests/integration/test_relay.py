"""The relay: what the client gets is what the upstream sent, streams arrive as they are made.

The mock's output is deterministic except for generated ids (msg_..., chatcmpl-..., tool ids)
and OpenAI's "created" second, so each proxied answer is compared byte for byte with a direct
answer of the mock to the same request bytes, after blanking those fields.
"""

import json
import re
import time
import unittest

from lib import harness as h

MODEL = "claude-sonnet-4-5"
TEXT = "Deterministic reply: h\u00e9llo w\u00f6rld \u20acuro \u4f60\u597d \U0001f389 done."

_IDS = re.compile(rb'(msg|toolu|call|req)_[A-Za-z0-9]{24}|chatcmpl-[A-Za-z0-9]{24}')
_CREATED = re.compile(rb'"created":\d+')


def normalize(data):
    return _CREATED.sub(b'"created":0', _IDS.sub(b"<id>", data))


def anthropic_body(text="relay me", stream=False, model=MODEL, **extra):
    b = {"model": model, "max_tokens": 64, "messages": [{"role": "user", "content": text}]}
    if stream:
        b["stream"] = True
    b.update(extra)
    return json.dumps(b).encode()


def openai_body(text="relay me", stream=False, model=MODEL, include_usage=True, **extra):
    b = {"model": model, "messages": [{"role": "user", "content": text}]}
    if stream:
        b["stream"] = True
        if include_usage:
            b["stream_options"] = {"include_usage": True}
    b.update(extra)
    return json.dumps(b).encode()


class RelayBase(h.TestCase):
    UPSTREAM_FORMAT = "anthropic"

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.redis = cls.start_redis()
        cls.mock = cls.start_mock()
        cls.proxy = cls.start_proxy(cls.mock, cls.redis,
                                    env={"UPSTREAM_FORMAT": cls.UPSTREAM_FORMAT})
        cls.key = cls.proxy.create_key("relay")

    def setUp(self):
        super().setUp()
        self.mock.reset()

    def both(self, path, body, method="POST", headers=None):
        """(proxied response, direct response) for the same request bytes."""
        hdrs = dict(headers or {}, **{"Content-Type": "application/json"})
        via = h.request(method, self.proxy.url + path, body=body,
                        headers=dict(hdrs, **{"x-api-key": self.key}))
        direct = h.request(method, self.mock.url + path, body=body, headers=hdrs)
        return via, direct

    def assertSameBytes(self, via, direct):
        self.assertEqual(via.status, direct.status, via.body[:300])
        self.assertTrue(direct.body)
        self.assertEqual(normalize(via.body), normalize(direct.body))


class RelayTest(RelayBase):
    """An Anthropic upstream: /v1/messages is relayed untouched."""

    # ---- byte-exact relay ----

    def test_anthropic_stream_is_byte_exact(self):
        for reply in ("text", "thinking", "tool_use"):
            self.mock.behaviour("*", text=TEXT, reply=reply)
            body = anthropic_body(stream=True,
                                  tools=[{"name": "get_weather", "input_schema": {}}])
            via, direct = self.both("/v1/messages", body)
            self.assertEqual(via.status, 200, via.body[:300])
            self.assertTrue(via.headers["content-type"].startswith("text/event-stream"))
            self.assertSameBytes(via, direct)
            events = [e for e, _ in h.parse_sse(via.body)]
            self.assertEqual(events[0], "message_start")
            self.assertEqual(events[-1], "message_stop")

    def test_upstream_error_event_is_relayed_as_sent(self):
        self.mock.behaviour("*", mode="error_event")
        via, direct = self.both("/v1/messages", anthropic_body(stream=True))
        self.assertSameBytes(via, direct)
        self.assertEqual([e for e, _ in h.parse_sse(via.body)], ["message_start", "error"])

    def test_split_bytes_stream_is_byte_exact(self):
        # The upstream sends 1-7 byte pieces, splitting lines and UTF-8 characters.
        self.mock.behaviour("*", text=TEXT, mode="split_bytes", seed=3)
        via, direct = self.both("/v1/messages", anthropic_body(stream=True))
        self.assertSameBytes(via, direct)
        text = "".join(json.loads(d)["delta"]["text"] for e, d in h.parse_sse(via.body)
                       if e == "content_block_delta")
        self.assertEqual(text, TEXT)

    def test_non_stream_bodies_are_byte_exact(self):
        self.mock.behaviour("*", text=TEXT)
        via, direct = self.both("/v1/messages", anthropic_body())
        self.assertSameBytes(via, direct)
        self.assertEqual(via.json()["content"][0]["text"], TEXT)

    def test_passthrough_paths_keep_query_and_body(self):
        via, direct = self.both("/v1/models?limit=5&after_id=x", None, method="GET")
        self.assertSameBytes(via, direct)
        (req,) = self.mock.requests("/v1/models")[:1]
        self.assertEqual(req["query"], "limit=5&after_id=x")
        via, direct = self.both("/v1/messages/count_tokens", anthropic_body("count these"))
        self.assertSameBytes(via, direct)
        self.assertIn("input_tokens", via.json())

    def test_upstream_errors_pass_through(self):
        err = {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}
        self.mock.behaviour("*", status=429, body=err, headers={"retry-after": "7"})
        via = h.request("POST", self.proxy.url + "/v1/messages", body=anthropic_body(),
                        headers={"x-api-key": self.key})
        self.assertEqual(via.status, 429)
        self.assertEqual(via.json(), err)
        self.assertEqual(via.headers.get("retry-after"), "7")

    def test_request_body_reaches_upstream_unchanged(self):
        body = anthropic_body("keep \u00e9very byte", metadata={"user_id": "u-1"},
                              temperature=0.25)
        r = h.request("POST", self.proxy.url + "/v1/messages", body=body,
                      headers={"x-api-key": self.key, "Content-Type": "application/json"})
        self.assertEqual(r.status, 200)
        (req,) = self.mock.requests("/v1/messages")
        self.assertEqual(req["body"], json.loads(body))
        self.assertEqual(int(req["headers"]["content-length"]), len(body))

    # ---- incremental delivery ----

    def test_stream_events_arrive_as_they_are_sent(self):
        words = 10
        delay = 0.1
        self.mock.behaviour("*", text=" ".join("w%d" % i for i in range(words)),
                            chunk_delay_ms=int(delay * 1000))
        n_events = words + 6  # start, block start, ping, deltas, block stop, delta, stop
        parser = h.SSEParser()
        arrivals = []  # (seconds since the request, event name)
        t0 = time.monotonic()
        with h.stream("POST", self.proxy.url + "/v1/messages", body=anthropic_body(stream=True),
                      headers={"x-api-key": self.key}) as s:
            self.assertEqual(s.status, 200)
            for chunk in s:
                now = time.monotonic() - t0
                arrivals += [(now, ev) for ev, _ in parser.feed(chunk)]
        names = [ev for _, ev in arrivals]
        self.assertEqual(len(names), n_events, names)
        self.assertEqual(names[-1], "message_stop")
        first, last = arrivals[0][0], arrivals[-1][0]
        span = (n_events - 1) * delay
        print("    first event after %.3fs, last after %.3fs (upstream spreads them over %.1fs)"
              % (first, last, span))
        self.assertLess(first, 0.5, "the first event was held back")
        self.assertGreater(last - first, span * 0.8, "events were bunched together")
        # Each event arrived on its own, about `delay` after the previous one.
        distinct = len({round(t, 2) for t, _ in arrivals})
        self.assertGreaterEqual(distinct, n_events - 3, arrivals)


class OpenAIRelayTest(RelayBase):
    """UPSTREAM_FORMAT=openai: /v1/chat/completions is relayed untouched."""

    UPSTREAM_FORMAT = "openai"

    def test_openai_stream_is_byte_exact(self):
        self.mock.behaviour("*", text=TEXT)
        via, direct = self.both("/v1/chat/completions", openai_body(stream=True))
        self.assertEqual(via.status, 200)
        self.assertTrue(via.headers["content-type"].startswith("text/event-stream"))
        self.assertSameBytes(via, direct)
        chunks = h.sse_json(h.parse_sse(via.body))
        self.assertEqual(chunks[-1], (None, "[DONE]"))
        self.assertIn("usage", chunks[-2][1])
        # Without include_usage the proxy still needs the usage to count it: it may ask
        # the upstream for it, but the client must get no usage chunk, and otherwise the
        # same chunks ("usage": null members aside).
        via, direct = self.both("/v1/chat/completions",
                                openai_body(stream=True, include_usage=False))
        self.assertEqual(via.status, 200)

        def chunks(body):
            out = []
            for _, c in h.sse_json(h.parse_sse(normalize(body))):
                if isinstance(c, dict) and "usage" in c:
                    self.assertIsNone(c.pop("usage"), "a usage chunk the client did not ask for")
                out.append(c)
            return out

        self.assertEqual(chunks(via.body), chunks(direct.body))

    def test_split_bytes_openai_stream_is_byte_exact(self):
        self.mock.behaviour("*", text=TEXT, mode="split_bytes", seed=5)
        via, direct = self.both("/v1/chat/completions", openai_body(stream=True))
        self.assertSameBytes(via, direct)
        text = "".join(c["choices"][0]["delta"].get("content") or ""
                       for _, c in h.sse_json(h.parse_sse(via.body))
                       if isinstance(c, dict) and c.get("choices"))
        self.assertEqual(text, TEXT)

    def test_non_stream_body_is_byte_exact(self):
        for reply in ("text", "tool_use", "thinking"):
            self.mock.behaviour("*", text=TEXT, reply=reply)
            via, direct = self.both("/v1/chat/completions", openai_body(
                tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}]))
            self.assertSameBytes(via, direct)


if __name__ == "__main__":
    unittest.main()
