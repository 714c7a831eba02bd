"""The official SDKs against the proxy: npm `@anthropic-ai/sdk` and `openai`, run with node.

Each SDK talks to the proxy in its own format while the tier behind the model speaks the
other format (conversion) or the same one (relay): text, streaming (the SDKs' stream
helpers and raw chunks), a tool call round trip, thinking / reasoning, usage and typed
errors. The SDKs' own parsers are the judge: a node script (tests/sdk/*.mjs) runs the
scenarios and prints what the SDK produced, one JSON line per scenario; this file checks
it and cross-checks the mock's request log (what the tier really received) and the key's
usage counters.

Tiers (FALLBACK_CONFIG):  claude-opus-4-6-thinking  antigravity  Anthropic at UPSTREAM_URL
                          gemini-3-pro-high         upstream     Anthropic at UPSTREAM_URL
                          kimi-k2.5                 external     OpenAI at <mock>/v1
A second proxy with the same chain and fallback off ("direct") shows a tier's own 429
reaching the SDK; on the main proxy a 429 moves the request to the next tier, which the
fallback tests check from the SDK's side.

The SDKs are pinned in tests/sdk/package.json (+ package-lock.json); setUpClass runs
`npm ci` when tests/sdk/node_modules is missing or stale. Without node (or without npm and
no installed SDKs) the class is skipped.

    tests/integration/runner.py tests/integration/test_sdk.py
"""

import json
import os
import shutil
import subprocess
import unittest

from lib import harness as h

SDK_DIR = h.ROOT / "tests" / "sdk"
NODE_TIMEOUT = 60

ANTIGRAVITY = "claude-opus-4-6-thinking"
UPSTREAM = "gemini-3-pro-high"
EXTERNAL = "kimi-k2.5"
EXT_KEY = "ext-test-key"
CHAIN = [ANTIGRAVITY, UPSTREAM, EXTERNAL]  # the tier order of FALLBACK_CONFIG

# Distinctive usage the mock reports (its `usage` behaviour), and what each side must see.
USAGE = {"input_tokens": 123, "output_tokens": 45, "cache_read_input_tokens": 6,
         "cache_creation_input_tokens": 7}
# An Anthropic tier reports all four numbers.
ANTHROPIC_TIER_USAGE_A = dict(USAGE)
# The mock's OpenAI answer: prompt_tokens = input + cache_read, cached_tokens = cache_read
# (OpenAI has no cache-creation number).
OPENAI_TIER_USAGE_O = {"prompt_tokens": 129, "completion_tokens": 45, "total_tokens": 174,
                       "prompt_tokens_details": {"cached_tokens": 6}}
# ...which an Anthropic client sees as input = prompt - cached.
OPENAI_TIER_USAGE_A = {"input_tokens": 123, "output_tokens": 45, "cache_read_input_tokens": 6,
                       "cache_creation_input_tokens": 0}
# An Anthropic tier seen by an OpenAI client: prompt = input + cache_read + cache_creation.
ANTHROPIC_TIER_USAGE_O = {"prompt_tokens": 136, "completion_tokens": 45, "total_tokens": 181,
                          "prompt_tokens_details": {"cached_tokens": 6}}
# What the proxy counts per request (GET /admin/keys/<key>/usage):
# (input without cache, output, cache_read, cache_creation).
COUNTED = {"anthropic": (123, 45, 6, 7), "openai": (123, 45, 6, 0)}

PROMPT = "Gr\u00fc\u00dfe from the SDK test \u2014 \u4f60\u597d \U0001f389 end"
REPLY_PREFIX = "Hello from the mock upstream. You said: "
EXPECTED_TEXT = REPLY_PREFIX + PROMPT
SYSTEM = "You are a terse test assistant."   # the scripts' system prompt
QUESTION = "What's the weather in Paris?"
TOOL_RESULT = "Sunny, 22 degrees"
TOOL_SCHEMA = {"type": "object",
               "properties": {"city": {"type": "string", "description": "City name"}},
               "required": ["city"]}
THINKING_TEXT = "Let me think."        # tests/mock_upstream.py THINKING_TEXT
THINKING_SIGNATURE = "sig_mock_123"    # tests/mock_upstream.py THINKING_SIGNATURE


def tier_format(model):
    return "openai" if model == EXTERNAL else "anthropic"


def usage_a_for(model):
    """The usage an Anthropic client must see from `model`'s tier."""
    return OPENAI_TIER_USAGE_A if tier_format(model) == "openai" else ANTHROPIC_TIER_USAGE_A


def usage_o_for(model):
    """The usage an OpenAI client must see from `model`'s tier."""
    return OPENAI_TIER_USAGE_O if tier_format(model) == "openai" else ANTHROPIC_TIER_USAGE_O


def _installed_matches_pins():
    """True when node_modules holds exactly the versions package.json pins."""
    try:
        pins = json.loads((SDK_DIR / "package.json").read_text())["dependencies"]
        for name, version in pins.items():
            pkg = json.loads((SDK_DIR / "node_modules" / name / "package.json").read_text())
            if pkg.get("version") != version:
                return False
        return True
    except (OSError, ValueError, KeyError):
        return False


def ensure_sdks():
    """Install the pinned SDKs if needed; raise SkipTest only when node/npm are absent."""
    if shutil.which("node") is None:
        raise unittest.SkipTest("node is not installed: the SDK end-to-end tests need node >= 20 "
                                "and npm (CI installs them)")
    if _installed_matches_pins():
        return
    if shutil.which("npm") is None:
        raise unittest.SkipTest("npm is not installed and tests/sdk/node_modules is missing or "
                                "stale: cannot install the SDKs (CI installs node and npm)")
    p = subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=str(SDK_DIR),
                       capture_output=True, text=True, timeout=600)
    if p.returncode != 0 or not _installed_matches_pins():
        raise RuntimeError("`npm ci` in %s failed (exit %d):\n%s\n%s"
                           % (SDK_DIR, p.returncode, p.stdout[-3000:], p.stderr[-3000:]))


class SdkTest(h.TestCase):
    @classmethod
    def setUpClass(cls):
        ensure_sdks()  # before the harness creates anything: a skip leaves nothing behind
        super().setUpClass()
        cls.redis = cls.start_redis()
        cls.mock = cls.start_mock()
        cls.fallback = {
            "enabled": True,
            # A 429 leaves no "exhausted" mark: every request tries the tier it names
            # first, so the tests stay independent of each other.
            "reactive_cooldown_seconds": 0,
            "tiers": [
                {"name": "Claude Opus 4.6", "model": ANTIGRAVITY, "type": "antigravity"},
                {"name": "Gemini 3 Pro High", "model": UPSTREAM, "type": "upstream"},
                {"name": "Kimi K2.5", "model": EXTERNAL, "type": "external",
                 "base_url": cls.mock.url + "/v1", "api_key": EXT_KEY},
            ],
        }
        cls.proxy = cls.start_proxy(cls.mock, cls.redis, fallback_config=cls.fallback)
        # The same chain with fallback off: each model goes to its own tier and nowhere
        # else, so a tier's 429 reaches the client as that tier sent it (converted). Same
        # Redis: keys and usage are shared with the main proxy.
        cls.direct = cls.start_proxy(cls.mock, cls.redis, name="proxy-direct",
                                     fallback_config=dict(cls.fallback, enabled=False))

    def setUp(self):
        super().setUp()
        self.mock.reset()
        # A key per test, so its usage counters are this test's alone.
        self.key = self.proxy.create_key(self.id().rsplit(".", 1)[-1])

    # ---- running the SDK scripts ----

    def sdk(self, script, model, *scenarios, prompt=PROMPT, proxy=None):
        """Run tests/sdk/<script> with the scenarios against `proxy` (default: the main
        one, fallback on); return {scenario: observed}."""
        proxy = proxy or self.proxy
        env = dict(os.environ, PROXY_URL=proxy.url, API_KEY=self.key, MODEL=model,
                   PROMPT=prompt, NODE_NO_WARNINGS="1")
        cmd = ["node", str(SDK_DIR / script)] + list(scenarios)
        try:
            p = subprocess.run(cmd, cwd=str(SDK_DIR), env=env, capture_output=True, text=True,
                               timeout=NODE_TIMEOUT)
        except subprocess.TimeoutExpired as e:
            self.fail("%s timed out after %ds; stderr:\n%s" % (" ".join(cmd[1:]), NODE_TIMEOUT,
                                                              e.stderr))
        self.assertEqual(p.returncode, 0, "%s exited %d\nstdout:\n%s\nstderr:\n%s"
                         % (" ".join(cmd[1:]), p.returncode, p.stdout, p.stderr))
        out = {}
        for line in p.stdout.splitlines():
            try:
                doc = json.loads(line)
            except ValueError:
                self.fail("%s printed a line that is not JSON: %r\nstderr:\n%s"
                          % (" ".join(cmd[1:]), line, p.stderr))
            out[doc["scenario"]] = doc
        self.assertEqual(sorted(out), sorted(set(scenarios)), p.stderr)
        for name, doc in out.items():
            self.assertNotIn("exception", doc, "scenario %s (%s, %s) threw:\n%s"
                             % (name, script, model, json.dumps(doc, indent=1)))
        return out

    def anthropic(self, model, *scenarios, **kw):
        return self.sdk("anthropic_client.mjs", model, *scenarios, **kw)

    def openai(self, model, *scenarios, **kw):
        return self.sdk("openai_client.mjs", model, *scenarios, **kw)

    # ---- cross-checks ----

    def llm_requests(self):
        """The LLM requests the mock received (either format), oldest first."""
        return [r for r in self.mock.requests()
                if r["path"] in ("/v1/messages", "/v1/chat/completions")]

    def llm_bodies(self):
        return [r["body"] for r in self.llm_requests()]

    def tier_requests(self, model, n):
        """The mock's logged LLM requests, checked to be n requests that reached `model`'s
        tier in its format (external: OpenAI + Bearer tier key; else Anthropic); their
        bodies."""
        reqs = self.llm_requests()
        self.assertEqual(len(reqs), n, [(r["path"], r["body"]) for r in reqs])
        for r in reqs:
            self.assertEqual(r["body"]["model"], model)
            if tier_format(model) == "openai":
                self.assertEqual(r["path"], "/v1/chat/completions")
                self.assertEqual(r["headers"].get("authorization"), "Bearer " + EXT_KEY)
                # The client's key never reaches a third party.
                self.assertNotIn(self.key, json.dumps(r["headers"]))
            else:
                self.assertEqual(r["path"], "/v1/messages")
                self.assertTrue(r["headers"].get("anthropic-version"), r["headers"])
        return [r["body"] for r in reqs]

    def key_usage(self):
        st, doc = self.proxy.admin("GET", "/admin/keys/%s/usage" % self.key)
        self.assertEqual(st, 200, doc)
        return doc["usage"]

    def assertCounted(self, fmt, requests, errors=0):
        """The proxy counted `requests` successes, each with the mock's usage of a tier of
        format `fmt`, and `errors` failed requests."""
        h.wait_until(lambda: (self.key_usage()["total_requests"] >= requests
                              and self.key_usage().get("total_errors", 0) >= errors),
                     timeout=10, message="the proxy's usage flush (%d requests, %d errors)"
                     % (requests, errors))
        u = self.key_usage()
        i, o, cr, cc = COUNTED[fmt]
        self.assertEqual((u["total_requests"], u["total_input"], u["total_output"],
                          u["total_cache_read"], u["total_cache_creation"]),
                         (requests, requests * i, requests * o, requests * cr, requests * cc), u)
        self.assertEqual(u.get("total_errors", 0), errors, u)

    def assertAnthropicUsage(self, usage, expected):
        got = {k: usage.get(k) for k in expected}
        if expected["cache_creation_input_tokens"] == 0 \
                and got["cache_creation_input_tokens"] is None:
            got["cache_creation_input_tokens"] = 0  # absent and 0 say the same
        self.assertEqual(got, expected, usage)

    def assertOpenAIUsage(self, usage, expected):
        self.assertIsNotNone(usage)
        got = {k: usage.get(k) for k in ("prompt_tokens", "completion_tokens", "total_tokens")}
        got["prompt_tokens_details"] = {
            "cached_tokens": (usage.get("prompt_tokens_details") or {}).get("cached_tokens")}
        self.assertEqual(got, expected, usage)

    def usage_behaviour(self, model, **kw):
        """Every request answers with USAGE; `kw` (e.g. reply=, count=) for `model` on top."""
        self.mock.behaviour("*", usage=USAGE)
        if kw:
            self.mock.behaviour(model, usage=USAGE, **kw)

    # ==== Anthropic SDK ====

    def check_anthropic_message(self, m, model, text=EXPECTED_TEXT, stop="end_turn"):
        self.assertEqual((m["type"], m["role"], m["model"], m["stop_reason"]),
                         ("message", "assistant", model, stop), m)
        self.assertRegex(m["id"], r"^msg_")
        if text is not None:
            self.assertEqual(m["text"], text)

    def check_anthropic_stream(self, s, text=EXPECTED_TEXT):
        ev = s["events"]
        self.assertEqual(ev[0], "message_start", ev)
        self.assertEqual(ev[-2:], ["message_delta", "message_stop"], ev)
        self.assertEqual(ev.count("message_start"), 1, ev)
        self.assertEqual(ev.count("content_block_start"), ev.count("content_block_stop"), ev)
        if text is not None:
            self.assertGreater(s["text_deltas"], 1, "the text must arrive in pieces")
            self.assertEqual(s["text_events"], text)

    def anthropic_text_and_stream(self, model):
        usage_a = usage_a_for(model)
        self.usage_behaviour(model)
        r = self.anthropic(model, "text", "stream")
        m = r["text"]["message"]
        self.check_anthropic_message(m, model)
        self.assertEqual(m["content_types"], ["text"])
        self.assertAnthropicUsage(m["usage"], usage_a)
        s = r["stream"]
        self.check_anthropic_stream(s)
        self.check_anthropic_message(s["final"], model)
        self.assertEqual(s["final"]["content_types"], ["text"])
        self.assertAnthropicUsage(s["final"]["usage"], usage_a)

        bodies = self.tier_requests(model, 2)
        if tier_format(model) == "openai":
            for b, stream in zip(bodies, (False, True)):
                self.assertEqual(b["messages"], [{"role": "system", "content": SYSTEM},
                                                 {"role": "user", "content": PROMPT}])
                self.assertEqual(b["max_tokens"], 256)
                self.assertEqual(b.get("stream", False), stream)
            # The proxy asks for the usage chunk it needs for accounting.
            self.assertEqual(bodies[1]["stream_options"], {"include_usage": True})
        else:
            for b, stream in zip(bodies, (False, True)):
                self.assertEqual((b["system"], b["messages"]),
                                 (SYSTEM, [{"role": "user", "content": PROMPT}]))
                self.assertEqual(b.get("stream", False), stream)
        self.assertCounted(tier_format(model), 2)

    def test_anthropic_sdk_text_and_stream_openai_tier(self):
        self.anthropic_text_and_stream(EXTERNAL)

    def test_anthropic_sdk_text_and_stream_anthropic_tier(self):
        self.anthropic_text_and_stream(ANTIGRAVITY)

    def anthropic_tools(self, model):
        fmt = tier_format(model)
        usage_a = usage_a_for(model)
        id_prefix = "call_" if fmt == "openai" else "toolu_"
        # The answer after the tool result echoes the last user text: the question on an
        # OpenAI tier (tool results are "tool" messages), "" on an Anthropic tier (the last
        # user turn holds only the tool_result).
        final_text = REPLY_PREFIX + (QUESTION if fmt == "openai" else "")
        for scenario in ("tools", "tools_stream"):
            with self.subTest(scenario):
                self.mock.reset()
                self.usage_behaviour(model, reply="tool_use", count=1)
                r = self.anthropic(model, scenario)[scenario]
                first = r["first"]
                self.check_anthropic_message(first, model, text=None, stop="tool_use")
                self.assertEqual(first["content_types"], ["tool_use"])
                self.assertEqual(len(first["tool_uses"]), 1)
                use = first["tool_uses"][0]
                self.assertEqual((use["name"], use["input"]), ("get_weather", {"city": "Paris"}))
                self.assertTrue(use["id"].startswith(id_prefix), use)
                self.assertAnthropicUsage(first["usage"], usage_a)
                if scenario == "tools_stream":
                    self.check_anthropic_stream(r["first_stream"], text=None)
                    self.assertGreaterEqual(r["first_stream"]["json_deltas"], 1)
                    self.check_anthropic_stream(r["second_stream"], text=final_text)
                second = r["second"]
                self.check_anthropic_message(second, model, text=final_text)
                self.assertAnthropicUsage(second["usage"], usage_a)

                b1, b2 = self.tier_requests(model, 2)
                if fmt == "openai":
                    self.assertEqual(b1["tools"], [{"type": "function", "function": {
                        "name": "get_weather", "description": "Current weather of a city",
                        "parameters": TOOL_SCHEMA}}])
                    self.assertEqual(b2["tools"], b1["tools"])
                    self.assertEqual(b1["tool_choice"], {"type": "function",
                                                         "function": {"name": "get_weather"}})
                    self.assertNotIn("tool_choice", b2)
                    msgs = b2["messages"]
                    self.assertEqual([m["role"] for m in msgs], ["user", "assistant", "tool"], msgs)
                    self.assertEqual(msgs[0]["content"], QUESTION)
                    calls = msgs[1]["tool_calls"]
                    self.assertEqual(len(calls), 1, msgs[1])
                    fn = calls[0]["function"]
                    self.assertEqual((calls[0]["id"], calls[0]["type"], fn["name"]),
                                     (use["id"], "function", "get_weather"))
                    self.assertEqual(json.loads(fn["arguments"]), {"city": "Paris"})
                    self.assertEqual((msgs[2]["tool_call_id"], msgs[2]["content"]),
                                     (use["id"], TOOL_RESULT))
                else:
                    self.assertEqual(b1["tools"], [{"name": "get_weather",
                                                    "description": "Current weather of a city",
                                                    "input_schema": TOOL_SCHEMA}])
                    self.assertEqual(b1["tool_choice"], {"type": "tool", "name": "get_weather"})
                    msgs = b2["messages"]
                    self.assertEqual([m["role"] for m in msgs], ["user", "assistant", "user"])
                    self.assertEqual(msgs[1]["content"], [{"type": "tool_use", "id": use["id"],
                                                          "name": "get_weather",
                                                          "input": {"city": "Paris"}}])
                    self.assertEqual(msgs[2]["content"], [{"type": "tool_result",
                                                          "tool_use_id": use["id"],
                                                          "content": TOOL_RESULT}])
        self.assertCounted(fmt, 4)

    def test_anthropic_sdk_tools_openai_tier(self):
        self.anthropic_tools(EXTERNAL)

    def test_anthropic_sdk_tools_anthropic_tier(self):
        self.anthropic_tools(ANTIGRAVITY)

    def anthropic_thinking(self, model):
        fmt = tier_format(model)
        usage_a = usage_a_for(model)
        # An OpenAI tier has reasoning_content but no signature: the block gets "".
        signature = "" if fmt == "openai" else THINKING_SIGNATURE
        self.usage_behaviour(model, reply="thinking")
        r = self.anthropic(model, "thinking", "thinking_stream")
        m = r["thinking"]["message"]
        s = r["thinking_stream"]
        for msg in (m, s["final"]):
            self.check_anthropic_message(msg, model)
            self.assertEqual(msg["content_types"], ["thinking", "text"])
            self.assertEqual(msg["thinking"], [{"thinking": THINKING_TEXT, "signature": signature}])
            self.assertAnthropicUsage(msg["usage"], usage_a)
        self.check_anthropic_stream(s)
        self.assertGreaterEqual(s["thinking_deltas"], 1)
        if fmt == "anthropic":
            self.assertEqual(s["signature_deltas"], 1)

        bodies = self.tier_requests(model, 2)
        for b in bodies:
            if fmt == "openai":
                # budget 2048 < 4096: "low"; no Anthropic field leaks through.
                self.assertEqual(b.get("reasoning_effort"), "low", b)
                self.assertEqual(b["max_tokens"], 4096)
                self.assertNotIn("thinking", b)
            else:
                self.assertEqual(b["thinking"], {"type": "enabled", "budget_tokens": 2048})
        self.assertCounted(fmt, 2)

    def test_anthropic_sdk_thinking_openai_tier(self):
        self.anthropic_thinking(EXTERNAL)

    def test_anthropic_sdk_thinking_anthropic_tier(self):
        self.anthropic_thinking(ANTIGRAVITY)

    # ==== OpenAI SDK ====

    def check_completion(self, c, model, text=EXPECTED_TEXT, finish="stop"):
        self.assertEqual((c["object"], c["model"], c["n_choices"], c["role"], c["finish_reason"]),
                         ("chat.completion", model, 1, "assistant", finish), c)
        self.assertRegex(c["id"], r"^chatcmpl-")
        if text is not None:
            self.assertEqual(c["content"], text)

    def check_raw_stream(self, s, model, usage_o, text=EXPECTED_TEXT, finish="stop"):
        """A raw `stream: true` read chunk by chunk; usage_o: the usage chunk expected (None:
        the client did not ask for one, so none may appear)."""
        self.assertEqual(len(s["ids"]), 1, s["ids"])
        self.assertRegex(s["ids"][0], r"^chatcmpl-")
        self.assertEqual(s["models"], [model])
        self.assertEqual(s["roles"], ["assistant"])
        self.assertEqual(s["finish_reasons"], [finish])
        if text is not None:
            self.assertEqual(s["content"], text)
            self.assertGreater(s["content_deltas"], 1, "the text must arrive in pieces")
        if usage_o is None:
            self.assertEqual(s["usage_chunks"], [], "usage chunk without include_usage")
            self.assertEqual(s["empty_choice_chunks"], 0)
            self.assertEqual(s["kinds"][-1], "finish", s["kinds"])
        else:
            self.assertEqual(len(s["usage_chunks"]), 1, s["usage_chunks"])
            self.assertOpenAIUsage(s["usage_chunks"][0], usage_o)
            self.assertEqual(s["empty_choice_chunks"], 1)
            self.assertTrue(s["last_chunk_has_usage"])
            self.assertEqual(s["kinds"][-2:], ["finish", "usage"], s["kinds"])

    def openai_text_and_stream(self, model):
        fmt = tier_format(model)
        usage_o = usage_o_for(model)
        self.usage_behaviour(model)
        r = self.openai(model, "text", "stream", "stream_no_usage", "stream_final")
        c = r["text"]["completion"]
        self.check_completion(c, model)
        self.assertEqual(c["tool_calls"], [])
        self.assertOpenAIUsage(c["usage"], usage_o)
        self.check_raw_stream(r["stream"], model, usage_o)
        self.assertEqual(r["stream"]["kinds"], ["role", "content", "finish", "usage"])
        self.check_raw_stream(r["stream_no_usage"], model, None)
        f = r["stream_final"]
        self.assertEqual(f["content_events"], EXPECTED_TEXT)
        self.check_completion(f["final"], model)
        self.assertOpenAIUsage(f["final"]["usage"], usage_o)

        bodies = self.tier_requests(model, 4)
        for b, stream in zip(bodies, (False, True, True, True)):
            if fmt == "anthropic":
                # The system message is hoisted into `system`.
                self.assertEqual((b.get("system"), b["messages"]),
                                 (SYSTEM, [{"role": "user", "content": PROMPT}]))
                self.assertEqual(b["max_tokens"], 256)
                self.assertNotIn("stream_options", b)
            else:
                self.assertEqual(b["messages"], [{"role": "system", "content": SYSTEM},
                                                 {"role": "user", "content": PROMPT}])
            self.assertEqual(b.get("stream", False), stream)
        if fmt == "openai":
            # Accounting needs the usage chunk even when the client did not ask for it.
            self.assertEqual(bodies[2]["stream_options"], {"include_usage": True})
        # Every request counted with the tier's usage, the stream without usage chunk too.
        self.assertCounted(fmt, 4)

    def test_openai_sdk_text_and_stream_anthropic_tier(self):
        self.openai_text_and_stream(ANTIGRAVITY)

    def test_openai_sdk_text_and_stream_openai_tier(self):
        self.openai_text_and_stream(EXTERNAL)

    def test_both_sdks_upstream_tier(self):
        """The `upstream` tier type routes like `antigravity`: Anthropic at UPSTREAM_URL."""
        self.usage_behaviour(UPSTREAM)
        r = self.openai(UPSTREAM, "text", "stream")
        self.check_completion(r["text"]["completion"], UPSTREAM)
        self.assertOpenAIUsage(r["text"]["completion"]["usage"], ANTHROPIC_TIER_USAGE_O)
        self.check_raw_stream(r["stream"], UPSTREAM, ANTHROPIC_TIER_USAGE_O)
        r = self.anthropic(UPSTREAM, "text", "stream")
        self.check_anthropic_message(r["text"]["message"], UPSTREAM)
        self.check_anthropic_stream(r["stream"])
        self.assertAnthropicUsage(r["stream"]["final"]["usage"], ANTHROPIC_TIER_USAGE_A)
        self.tier_requests(UPSTREAM, 4)
        self.assertCounted("anthropic", 4)

    def openai_tools(self, model):
        fmt = tier_format(model)
        usage_o = usage_o_for(model)
        id_prefix = "call_" if fmt == "openai" else "toolu_"
        final_text = REPLY_PREFIX + (QUESTION if fmt == "openai" else "")
        for scenario in ("tools", "tools_stream"):
            with self.subTest(scenario):
                self.mock.reset()
                self.usage_behaviour(model, reply="tool_use", count=1)
                r = self.openai(model, scenario)[scenario]
                first = r["first"]
                self.check_completion(first, model, text=None, finish="tool_calls")
                self.assertFalse(first["content"], first)  # null or ""
                self.assertEqual(len(first["tool_calls"]), 1, first)
                call = first["tool_calls"][0]
                self.assertEqual((call["type"], call["name"]), ("function", "get_weather"))
                self.assertTrue(call["id"].startswith(id_prefix), call)
                self.assertEqual(r["parsed_arguments"], [{"city": "Paris"}])
                self.assertOpenAIUsage(first["usage"], usage_o)
                second = r["second"]
                self.check_completion(second, model, text=final_text)
                self.assertEqual(second["tool_calls"], [])
                self.assertOpenAIUsage(second["usage"], usage_o)
                if scenario == "tools_stream":
                    self.assertGreater(r["first_stream"]["chunks"], 2)
                    self.assertGreater(r["second_stream"]["chunks"], 2)

                b1, b2 = self.tier_requests(model, 2)
                if fmt == "anthropic":
                    self.assertEqual(b1["tools"], [{"name": "get_weather",
                                                    "description": "Current weather of a city",
                                                    "input_schema": TOOL_SCHEMA}])
                    self.assertEqual(b2["tools"], b1["tools"])
                    self.assertEqual(b1["tool_choice"], {"type": "any"})  # "required"
                    self.assertNotIn("tool_choice", b2)
                    msgs = b2["messages"]
                    self.assertEqual([m["role"] for m in msgs], ["user", "assistant", "user"], msgs)
                    self.assertEqual(msgs[0]["content"], QUESTION)
                    self.assertEqual(msgs[1]["content"], [{"type": "tool_use", "id": call["id"],
                                                          "name": "get_weather",
                                                          "input": {"city": "Paris"}}])
                    self.assertEqual(msgs[2]["content"], [{"type": "tool_result",
                                                          "tool_use_id": call["id"],
                                                          "content": TOOL_RESULT}])
                else:
                    self.assertEqual(b1["tools"][0]["function"]["name"], "get_weather")
                    self.assertEqual(b1["tool_choice"], "required")
                    msgs = b2["messages"]
                    self.assertEqual([m["role"] for m in msgs], ["user", "assistant", "tool"])
                    self.assertEqual(msgs[1]["tool_calls"][0]["id"], call["id"])
                    self.assertEqual((msgs[2]["tool_call_id"], msgs[2]["content"]),
                                     (call["id"], TOOL_RESULT))
        self.assertCounted(fmt, 4)

    def test_openai_sdk_tools_anthropic_tier(self):
        self.openai_tools(ANTIGRAVITY)

    def test_openai_sdk_tools_openai_tier(self):
        self.openai_tools(EXTERNAL)

    def openai_thinking(self, model):
        fmt = tier_format(model)
        usage_o = usage_o_for(model)
        self.usage_behaviour(model, reply="thinking")
        r = self.openai(model, "thinking", "thinking_stream")
        c = r["thinking"]["completion"]
        self.check_completion(c, model)
        self.assertEqual(c["reasoning_content"], THINKING_TEXT)
        self.assertOpenAIUsage(c["usage"], usage_o)
        s = r["thinking_stream"]
        self.check_raw_stream(s, model, usage_o)
        self.assertEqual(s["reasoning_content"], THINKING_TEXT)
        self.assertGreaterEqual(s["reasoning_deltas"], 1)
        # Reasoning first, then the answer.
        self.assertEqual(s["kinds"], ["role", "reasoning", "content", "finish", "usage"])
        if fmt == "anthropic":
            # The Anthropic signature rides along (non-standard field), so a client can send
            # the thinking back.
            self.assertEqual(c["reasoning_signature"], THINKING_SIGNATURE)
            self.assertEqual(s["reasoning_signature"], THINKING_SIGNATURE)

        bodies = self.tier_requests(model, 2)
        for b in bodies:
            if fmt == "anthropic":
                # reasoning_effort medium -> budget 8192 (< max_completion_tokens 16000).
                self.assertEqual(b["thinking"], {"type": "enabled", "budget_tokens": 8192})
                self.assertEqual(b["max_tokens"], 16000)
                self.assertNotIn("reasoning_effort", b)
            else:
                self.assertEqual(b["reasoning_effort"], "medium")
        self.assertCounted(fmt, 2)

    def test_openai_sdk_thinking_anthropic_tier(self):
        self.openai_thinking(ANTIGRAVITY)

    def test_openai_sdk_thinking_openai_tier(self):
        self.openai_thinking(EXTERNAL)

    # ==== errors and fallback, both SDKs ====

    def check_sdk_error(self, script, observed, cls, status, etype, message):
        """The SDK threw its own typed error class with the status and the error body."""
        e = observed.get("error")
        self.assertIsNotNone(e, "no error: %r" % (observed,))
        flag = {"RateLimitError": "is_rate_limit", "BadRequestError": "is_bad_request"}[cls]
        self.assertEqual((e["class"], e[flag], e["is_api_error"], e["status"]),
                         (cls, True, True, status), e)
        if script == "anthropic_client.mjs":
            self.assertEqual(e["error"], {"type": "error",
                                          "error": {"type": etype, "message": message}}, e)
        else:
            self.assertEqual((e["error"]["message"], e["error"]["type"], e["type"]),
                             (message, etype, etype), e)

    def sdk_errors(self, script, model):
        fmt = tier_format(model)
        scenarios = ("error", "error_stream")
        # 1. A 400 of the tier is the client's problem: no fallback, converted (or relayed)
        # into the SDK's format, typed BadRequestError.
        self.mock.behaviour("*", status=400)
        r = self.sdk(script, model, *scenarios)
        for name in scenarios:
            with self.subTest("400", scenario=name):
                self.check_sdk_error(script, r[name], "BadRequestError", 400,
                                     "invalid_request_error", "mock upstream error 400")
        self.tier_requests(model, 2)  # maxRetries 0 and no fallback: one request each

        # 2. A 429 of the tier, with fallback off (the direct proxy): the tier's own error.
        self.mock.reset()
        self.mock.behaviour("*", status=429)
        r = self.sdk(script, model, *scenarios, proxy=self.direct)
        for name in scenarios:
            with self.subTest("429 direct", scenario=name):
                self.check_sdk_error(script, r[name], "RateLimitError", 429,
                                     "rate_limit_error", "mock upstream error 429")
        self.tier_requests(model, 2)

        # 3. A 429 on every tier with fallback on: each tier is tried once, the requested
        # one first, then the SDK gets a RateLimitError all the same.
        self.mock.reset()
        self.mock.behaviour("*", status=429)
        r = self.sdk(script, model, *scenarios)
        for name in scenarios:
            with self.subTest("429 every tier", scenario=name):
                self.check_sdk_error(script, r[name], "RateLimitError", 429,
                                     "rate_limit_error", "mock upstream error 429")
        order = [model] + [m for m in CHAIN if m != model]
        self.assertEqual([b["model"] for b in self.llm_bodies()], order * 2)
        self.assertCounted(fmt, 0, errors=6)

    def test_anthropic_sdk_errors_openai_tier(self):
        self.sdk_errors("anthropic_client.mjs", EXTERNAL)

    def test_anthropic_sdk_errors_anthropic_tier(self):
        self.sdk_errors("anthropic_client.mjs", ANTIGRAVITY)

    def test_openai_sdk_errors_anthropic_tier(self):
        self.sdk_errors("openai_client.mjs", ANTIGRAVITY)

    def test_openai_sdk_errors_openai_tier(self):
        self.sdk_errors("openai_client.mjs", EXTERNAL)

    def sdk_fallback(self, script, model, served):
        """The requested tier (and any before `served` in the plan) answers 429; `served`,
        of the other format than the requested one, serves the request and the SDK cannot
        tell: its parsers get a normal answer, stream included."""
        plan = [model] + [m for m in CHAIN if m != model]
        tried = plan[:plan.index(served) + 1]
        self.mock.behaviour("*", usage=USAGE)
        for m in tried[:-1]:
            self.mock.behaviour(m, status=429)
        r = self.sdk(script, model, "text", "stream")
        if script == "anthropic_client.mjs":
            usage_a = usage_a_for(served)
            for m in (r["text"]["message"], r["stream"]["final"]):
                self.check_anthropic_message(m, served)
                self.assertAnthropicUsage(m["usage"], usage_a)
            self.check_anthropic_stream(r["stream"])
        else:
            usage_o = usage_o_for(served)
            self.check_completion(r["text"]["completion"], served)
            self.assertOpenAIUsage(r["text"]["completion"]["usage"], usage_o)
            self.check_raw_stream(r["stream"], served, usage_o)
        self.assertEqual([b["model"] for b in self.llm_bodies()], tried * 2)
        # Counted once each, with the usage of the tier that served them.
        self.assertCounted(tier_format(served), 2)

    def test_anthropic_sdk_fallback_to_openai_tier(self):
        self.sdk_fallback("anthropic_client.mjs", ANTIGRAVITY, EXTERNAL)

    def test_openai_sdk_fallback_to_anthropic_tier(self):
        self.sdk_fallback("openai_client.mjs", EXTERNAL, ANTIGRAVITY)


if __name__ == "__main__":
    unittest.main()
