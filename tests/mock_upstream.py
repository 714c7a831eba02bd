#!/usr/bin/env python3
"""Mock LLM upstream for api-proxy tests and demos (Python standard library only).

Speaks the real wire formats of:
  POST /v1/messages               Anthropic Messages (JSON or SSE stream)
  POST /v1/chat/completions       OpenAI Chat Completions (JSON or SSE stream)
  POST /v1/messages/count_tokens  {"input_tokens": I}
  GET  /v1/models                 model list
  GET  /health                    antigravity-style quota document (configurable)

Control API (for tests):
  POST /_control/health     body = the document /health returns from now on
                            ("__status": N -> answer N with {}; "__delay_ms": delay)
  POST /_control/behaviour  {"model": M or "*", ...}: see "Behaviours" below
  GET  /_control/behaviour  the behaviours in force
  POST /_control/reset      drop behaviours, default health, clear log and stats
  GET  /_requests           {"requests": [...]} (last 1000, arrival order)
  DELETE /_requests         clear the request log and the stats
  GET  /_stats              {"by_model": {M: n}, "total": n, "aborted_streams": n,
                             "abandoned": n (hanging answers whose peer left),
                             "inflight": n, "inflight_max": n, "inflight_max_by_model": {M: n}}
                            (inflight: LLM requests being answered now; the maxima are high-water
                            marks since the last reset or DELETE /_requests)

Deterministic numbers, so tests can check the proxy's accounting:
  T (reply text) = "Hello from the mock upstream. You said: " + last user text[:200]
  I (input)      = max(1, len(raw request body) // 4)
  O (output)     = number of whitespace-separated words of the generated text
                   (of the tool arguments JSON for a tool_use reply)

Behaviours apply to /v1/messages and /v1/chat/completions requests whose model is M (a
specific model wins over "*"); posting {"model": M} alone removes M's. Fields (optional):
  status, body, headers   answer this error instead (default body: the endpoint's format)
  count                   apply to the next N matching requests only
  delay_ms                wait before answering; chunk_delay_ms: between stream events
  mode                    normal | garbage | reset_before_headers | reset_mid_stream | hang |
                          empty_200 | error_event | no_usage | split_bytes | big_stream
                          (words: N deltas for big_stream; seed, piece_delay_ms: split_bytes)
  usage                   {input_tokens, output_tokens, cache_creation_input_tokens,
                          cache_read_input_tokens} overriding the computed numbers
  reply                   text | tool_use | thinking
  text                    the reply text T
Modes that only make sense for streams (error_event, split_bytes) answer a non-stream
request normally; reset_mid_stream sends half of a non-stream body, then a RST.

Usage: python3 tests/mock_upstream.py --port P [--bind 127.0.0.1] [--verbose]
Prints "READY <port>" on stdout once listening.
"""

import argparse
import collections
import copy
import datetime
import json
import random
import re
import select
import signal
import socket
import string
import struct
import sys
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

DEFAULT_MODELS = [
    "claude-opus-4-6-thinking",
    "claude-sonnet-4-5",
    "gemini-3-pro-high",
    "gemini-3-flash",
]
MODES = {
    "normal", "garbage", "reset_before_headers", "reset_mid_stream", "hang",
    "empty_200", "error_event", "no_usage", "split_bytes", "big_stream",
}
REPLIES = {"text", "tool_use", "thinking"}
BEHAVIOUR_FIELDS = {
    "model", "status", "body", "headers", "count", "delay_ms", "chunk_delay_ms",
    "mode", "usage", "reply", "text", "words", "seed", "piece_delay_ms",
}
THINKING_TEXT = "Let me think."
THINKING_SIGNATURE = "sig_mock_123"
TOOL_INPUT = {"city": "Paris"}
HANG_MAX_SECONDS = 120
REQUEST_LOG_SIZE = 1000
MAX_BODY = 64 * 1024 * 1024

# Anthropic error "type" for an HTTP status, used when a behaviour gives no body.
ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
    404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
    500: "api_error", 503: "overloaded_error", 529: "overloaded_error",
}


def rand_id(n=24):
    alphabet = string.ascii_letters + string.digits
    return "".join(random.choice(alphabet) for _ in range(n))


def now_iso():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def default_health():
    return {
        "status": "ok",
        "timestamp": now_iso(),
        "accounts": [{
            "email": "mock@example.com",
            "status": "ok",
            "modelRateLimits": {},
            "models": {m: {"remaining": "100%", "remainingFraction": 1.0, "resetTime": None}
                       for m in DEFAULT_MODELS},
        }],
    }


def jdump(obj):
    # Compact, like the real APIs; ensure_ascii=False keeps UTF-8 text as UTF-8 bytes,
    # which exercises the proxy's byte handling of multi-byte characters.
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def split_words(text):
    """Split text into stream pieces whose concatenation is exactly `text`.

    Each piece is one word plus the whitespace that follows it (leading whitespace, if
    any, is attached to the first piece), so "sum of deltas == non-stream text" holds for
    any text, and len(pieces) == len(text.split()).
    """
    pieces = re.findall(r"\S+\s*", text)
    lead = text[:len(text) - len(text.lstrip())]
    if pieces and lead:
        pieces[0] = lead + pieces[0]
    return pieces


def split_n(s, n):
    """Split string s into at most n non-empty, roughly equal pieces."""
    if not s:
        return []
    size = max(1, -(-len(s) // n))
    return [s[i:i + size] for i in range(0, len(s), size)]


def text_of(content):
    """Text of an Anthropic/OpenAI message content: a string or a list of blocks."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for block in content:
            if isinstance(block, str):
                parts.append(block)
            elif isinstance(block, dict) and block.get("type") in ("text", "input_text") \
                    and isinstance(block.get("text"), str):
                parts.append(block["text"])
        return " ".join(parts)
    return ""


def last_user_text(req):
    messages = req.get("messages")
    if not isinstance(messages, list):
        return ""
    for msg in reversed(messages):
        if isinstance(msg, dict) and msg.get("role") == "user":
            return text_of(msg.get("content"))
    return ""


def first_tool_name(req):
    """Name of the request's first tool, Anthropic ({"name"}) or OpenAI ({"function":{"name"}})."""
    tools = req.get("tools")
    if isinstance(tools, list) and tools and isinstance(tools[0], dict):
        t = tools[0]
        if isinstance(t.get("name"), str):
            return t["name"]
        fn = t.get("function")
        if isinstance(fn, dict) and isinstance(fn.get("name"), str):
            return fn["name"]
    return "get_weather"


class BadRequest(Exception):
    pass


class ClientGone(Exception):
    """The peer closed the connection while we were writing (or waiting)."""


class State:
    """Shared mutable state of the mock, guarded by one lock."""

    def __init__(self):
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.reset()

    def reset(self):
        with self.lock:
            self.health = None          # None = default document (fresh timestamp each time)
            self.behaviours = {}        # model or "*" -> behaviour dict
            self.requests = collections.deque(maxlen=REQUEST_LOG_SIZE)
            self.by_model = collections.Counter()
            self.total = 0
            self.aborted = 0
            self.abandoned = 0
            self.inflight = collections.Counter()
            self.inflight_max = 0
            self.inflight_max_by_model = collections.Counter()

    def clear_requests(self):
        with self.lock:
            self.requests.clear()
            self.by_model.clear()
            self.total = 0
            self.aborted = 0
            self.abandoned = 0
            self.inflight_max = sum(self.inflight.values())
            self.inflight_max_by_model = collections.Counter(
                {m: n for m, n in self.inflight.items() if n})

    def enter(self, model):
        """An LLM request starts being answered: the in-flight high-water marks."""
        with self.lock:
            self.inflight[model] += 1
            self.inflight_max = max(self.inflight_max, sum(self.inflight.values()))
            self.inflight_max_by_model[model] = max(self.inflight_max_by_model[model],
                                                    self.inflight[model])

    def leave(self, model):
        with self.lock:
            self.inflight[model] -= 1

    def take_behaviour(self, model):
        """The behaviour for `model` (specific wins over "*"), consuming one use of `count`."""
        with self.lock:
            for key in (model, "*"):
                b = self.behaviours.get(key)
                if b is None:
                    continue
                if "count" in b:
                    b["count"] -= 1
                    if b["count"] <= 0:
                        del self.behaviours[key]
                return copy.deepcopy(b)
        return {}


def validate_behaviour(b):
    if not isinstance(b, dict):
        raise BadRequest("behaviour must be a JSON object")
    unknown = set(b) - BEHAVIOUR_FIELDS
    if unknown:
        raise BadRequest("unknown behaviour fields: %s" % ", ".join(sorted(unknown)))
    model = b.get("model", "*")
    if not isinstance(model, str):
        raise BadRequest("model must be a string")
    if "mode" in b and b["mode"] not in MODES:
        raise BadRequest("mode must be one of %s" % ", ".join(sorted(MODES)))
    if "reply" in b and b["reply"] not in REPLIES:
        raise BadRequest("reply must be one of %s" % ", ".join(sorted(REPLIES)))
    for k in ("status", "count", "delay_ms", "chunk_delay_ms", "words", "seed", "piece_delay_ms"):
        if k in b and (not isinstance(b[k], (int, float)) or isinstance(b[k], bool)):
            raise BadRequest("%s must be a number" % k)
    if "count" in b and b["count"] < 1:
        raise BadRequest("count must be >= 1")
    if "headers" in b and not isinstance(b["headers"], dict):
        raise BadRequest("headers must be an object")
    if "usage" in b and not isinstance(b["usage"], dict):
        raise BadRequest("usage must be an object")
    if "text" in b and not isinstance(b["text"], str):
        raise BadRequest("text must be a string")
    return model


class Reply:
    """Everything generated for one LLM request, shared by both wire formats."""

    def __init__(self, req, raw_len, beh):
        self.model = req.get("model") if isinstance(req.get("model"), str) else "unknown"
        self.kind = beh.get("reply", "text")
        if beh.get("mode") == "big_stream":
            n = int(beh.get("words", 1000))
            self.text = " ".join("word%d" % i for i in range(max(0, n)))
        elif "text" in beh:
            self.text = beh["text"]
        else:
            self.text = "Hello from the mock upstream. You said: " + last_user_text(req)[:200]
        self.tool_name = first_tool_name(req)
        self.tool_args = json.dumps(TOOL_INPUT)  # '{"city": "Paris"}'
        self.tool_id_anthropic = "toolu_" + rand_id()
        self.tool_id_openai = "call_" + rand_id()
        self.with_usage = beh.get("mode") != "no_usage"
        generated = self.tool_args if self.kind == "tool_use" else self.text
        u = {
            "input_tokens": max(1, raw_len // 4),
            "output_tokens": len(generated.split()),
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        }
        self.usage_overridden = "usage" in beh
        for k, v in beh.get("usage", {}).items():
            if k in u and isinstance(v, int):
                u[k] = v
        self.usage = u

    # ---- Anthropic ----
    @property
    def stop_reason(self):
        return "tool_use" if self.kind == "tool_use" else "end_turn"

    def anthropic_content(self):
        if self.kind == "tool_use":
            return [{"type": "tool_use", "id": self.tool_id_anthropic, "name": self.tool_name,
                     "input": dict(TOOL_INPUT)}]
        blocks = []
        if self.kind == "thinking":
            blocks.append({"type": "thinking", "thinking": THINKING_TEXT,
                           "signature": THINKING_SIGNATURE})
        blocks.append({"type": "text", "text": self.text})
        return blocks

    def anthropic_message(self, msg_id, content, usage):
        m = {"id": msg_id, "type": "message", "role": "assistant", "model": self.model,
             "content": content, "stop_reason": self.stop_reason if content else None,
             "stop_sequence": None}
        if self.with_usage:
            m["usage"] = usage
        return m

    def anthropic_events(self):
        """The full real Anthropic event sequence as (event_name, data_obj) pairs."""
        msg_id = "msg_" + rand_id()
        start_usage = dict(self.usage, output_tokens=1)
        start_msg = self.anthropic_message(msg_id, [], start_usage)
        ev = [("message_start", {"type": "message_start", "message": start_msg})]
        index = 0
        first_block = True

        def block(start, deltas):
            nonlocal index, first_block
            ev.append(("content_block_start",
                       {"type": "content_block_start", "index": index, "content_block": start}))
            if first_block:
                ev.append(("ping", {"type": "ping"}))
                first_block = False
            for d in deltas:
                ev.append(("content_block_delta",
                           {"type": "content_block_delta", "index": index, "delta": d}))
            ev.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
            index += 1

        if self.kind == "tool_use":
            block({"type": "tool_use", "id": self.tool_id_anthropic, "name": self.tool_name,
                   "input": {}},
                  [{"type": "input_json_delta", "partial_json": p}
                   for p in [""] + split_n(self.tool_args, 3)])
        else:
            if self.kind == "thinking":
                block({"type": "thinking", "thinking": ""},
                      [{"type": "thinking_delta", "thinking": THINKING_TEXT},
                       {"type": "signature_delta", "signature": THINKING_SIGNATURE}])
            block({"type": "text", "text": ""},
                  [{"type": "text_delta", "text": w} for w in split_words(self.text)])
        md = {"type": "message_delta",
              "delta": {"stop_reason": self.stop_reason, "stop_sequence": None}}
        if self.with_usage:
            md["usage"] = {"output_tokens": self.usage["output_tokens"]}
        ev.append(("message_delta", md))
        ev.append(("message_stop", {"type": "message_stop"}))
        return ev

    # ---- OpenAI ----
    @property
    def finish_reason(self):
        return "tool_calls" if self.kind == "tool_use" else "stop"

    def openai_usage(self):
        u = self.usage
        prompt = u["input_tokens"] + u["cache_read_input_tokens"]
        out = {"prompt_tokens": prompt, "completion_tokens": u["output_tokens"],
               "total_tokens": prompt + u["output_tokens"]}
        if self.usage_overridden:
            out["prompt_tokens_details"] = {"cached_tokens": u["cache_read_input_tokens"]}
        return out

    def openai_completion(self):
        msg = {"role": "assistant"}
        if self.kind == "tool_use":
            msg["content"] = None
            msg["tool_calls"] = [{"id": self.tool_id_openai, "type": "function",
                                  "function": {"name": self.tool_name,
                                               "arguments": self.tool_args}}]
        else:
            if self.kind == "thinking":
                msg["reasoning_content"] = THINKING_TEXT
            msg["content"] = self.text
        out = {"id": "chatcmpl-" + rand_id(), "object": "chat.completion",
               "created": int(time.time()), "model": self.model,
               "choices": [{"index": 0, "message": msg, "logprobs": None,
                            "finish_reason": self.finish_reason}]}
        if self.with_usage:
            out["usage"] = self.openai_usage()
        return out

    def openai_chunks(self, include_usage):
        """The list of chunk objects of an OpenAI stream (without the final [DONE])."""
        cid = "chatcmpl-" + rand_id()
        created = int(time.time())
        # With include_usage the real API puts "usage": null in every chunk but the last.
        with_usage_chunk = include_usage and self.with_usage

        def chunk(delta, finish=None):
            c = {"id": cid, "object": "chat.completion.chunk", "created": created,
                 "model": self.model,
                 "choices": [{"index": 0, "delta": delta, "logprobs": None,
                              "finish_reason": finish}]}
            if with_usage_chunk:
                c["usage"] = None
            return c

        chunks = []
        if self.kind == "tool_use":
            chunks.append(chunk({"role": "assistant", "content": None}))
            chunks.append(chunk({"tool_calls": [{
                "index": 0, "id": self.tool_id_openai, "type": "function",
                "function": {"name": self.tool_name, "arguments": ""}}]}))
            for p in split_n(self.tool_args, 3):
                chunks.append(chunk({"tool_calls": [{"index": 0, "function": {"arguments": p}}]}))
        else:
            chunks.append(chunk({"role": "assistant", "content": ""}))
            if self.kind == "thinking":
                for w in split_words(THINKING_TEXT):
                    chunks.append(chunk({"reasoning_content": w}))
            for w in split_words(self.text):
                chunks.append(chunk({"content": w}))
        chunks.append(chunk({}, self.finish_reason))
        if with_usage_chunk:
            chunks.append({"id": cid, "object": "chat.completion.chunk", "created": created,
                           "model": self.model, "choices": [], "usage": self.openai_usage()})
        return chunks


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "mock-upstream/1.0"
    # Answer malformed request lines with a real status line and headers, not the bare
    # HTTP/0.9 body http.server would send.
    default_request_version = "HTTP/1.1"

    def version_string(self):
        return self.server_version
    # Small writes (SSE events, split_bytes pieces) must leave at once, and Nagle plus
    # delayed ACKs would add 40 ms to every keep-alive response.
    disable_nagle_algorithm = True

    # ---------- plumbing ----------
    @property
    def state(self):
        return self.server.state

    def log_message(self, fmt, *args):
        if self.server.verbose:
            sys.stderr.write("%s - %s\n" % (self.address_string(), fmt % args))

    def send_error(self, code, message=None, explain=None):
        # Malformed requests (bad request line, headers) get JSON, not the default HTML.
        try:
            body = jdump({"type": "error",
                          "error": {"type": "invalid_request_error",
                                    "message": message or "bad request"}}).encode()
            self.send_response(code, message)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD" and code >= 200 and code not in (204, 304):
                self.wfile.write(body)
        except OSError:
            pass
        self.close_connection = True

    def read_body(self):
        te = self.headers.get("Transfer-Encoding", "")
        if "chunked" in te.lower():
            out = bytearray()
            while True:
                line = self.rfile.readline(65537)
                if not line:
                    raise BadRequest("truncated chunked body")
                try:
                    size = int(line.split(b";")[0].strip(), 16)
                except ValueError:
                    raise BadRequest("bad chunk size line")
                if size == 0:
                    # Trailers, up to the empty line.
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                if len(out) + size > MAX_BODY:
                    raise BadRequest("body too large")
                out += self.rfile.read(size)
                self.rfile.readline(65537)
        cl = self.headers.get("Content-Length")
        if cl is None:
            return b""
        try:
            n = int(cl)
        except ValueError:
            raise BadRequest("bad Content-Length")
        if n < 0 or n > MAX_BODY:
            raise BadRequest("bad Content-Length")
        data = self.rfile.read(n)
        if len(data) != n:
            raise BadRequest("truncated body")
        return data

    def send_json(self, status, obj, headers=None):
        body = obj if isinstance(obj, bytes) else jdump(obj).encode()
        self.send_response(status)
        hdrs = {"Content-Type": "application/json"}
        hdrs.update(headers or {})
        for k, v in hdrs.items():
            self.send_header(k, str(v))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.leave_inflight()
        if self.command != "HEAD":
            self.wfile.write(body)

    def start_stream(self, extra_headers=None):
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        for k, v in (extra_headers or {}).items():
            self.send_header(k, str(v))
        self.end_headers()

    def write_chunk(self, data):
        if data:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def end_stream(self):
        self.leave_inflight()
        self.wfile.write(b"0\r\n\r\n")

    def leave_inflight(self):
        """Just before an LLM answer's last bytes: the client cannot have seen its end before
        the in-flight count dropped, so the high-water marks never miss an overlap."""
        model = getattr(self, "inflight_model", None)
        if model is not None:
            self.inflight_model = None
            self.state.leave(model)

    def sleep(self, ms):
        # Interruptible by server shutdown.
        if ms and ms > 0:
            self.state.stopping.wait(ms / 1000.0)

    def rst(self):
        """Close the connection with a TCP RST (SO_LINGER 0) instead of a FIN."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            # socket.close() only really closes once every makefile() object is closed, and
            # rfile is one: close it first so the fd is released (and the RST sent) now.
            self.rfile.close()
            self.connection.close()
        except OSError:
            pass

    def hang(self):
        """Never answer: wait until the peer leaves, the server stops, or 120 s pass."""
        self.close_connection = True
        deadline = time.monotonic() + HANG_MAX_SECONDS
        sock = self.connection
        while not self.state.stopping.is_set() and time.monotonic() < deadline:
            try:
                r, _, _ = select.select([sock], [], [], 0.2)
                if r and sock.recv(1, socket.MSG_PEEK) == b"":
                    with self.state.lock:
                        self.state.abandoned += 1
                    return
                if r:
                    # Pipelined bytes: ignore them but don't spin on a readable socket.
                    self.state.stopping.wait(0.2)
            except (OSError, ValueError):
                return

    def record(self, path, query, body):
        if path.startswith("/_control/") or path in ("/_requests", "/_stats"):
            return
        parsed = None
        if body:
            try:
                parsed = json.loads(body)
            except ValueError:
                parsed = body.decode("utf-8", "replace")
        entry = {"method": self.command, "path": path, "query": query,
                 "headers": {k.lower(): v for k, v in self.headers.items()}, "body": parsed,
                 "time": time.time()}
        with self.state.lock:
            self.state.requests.append(entry)
            if path in ("/v1/messages", "/v1/chat/completions") and self.command == "POST":
                # Only well-formed requests count: stats are for checking model routing.
                if isinstance(parsed, dict):
                    model = parsed.get("model")
                    self.state.by_model[model if isinstance(model, str) else "unknown"] += 1
                    self.state.total += 1

    # ---------- dispatch ----------
    def do_GET(self):
        self.dispatch()

    def do_POST(self):
        self.dispatch()

    def do_DELETE(self):
        self.dispatch()

    def do_PUT(self):
        self.dispatch()

    def do_HEAD(self):
        self.dispatch()

    def dispatch(self):
        openai = False
        self._headers_sent = False
        body_read = False
        try:
            u = urlsplit(self.path)
            path, query = u.path, u.query
            openai = path.startswith("/v1/chat/")
            body = self.read_body()
            body_read = True
            self.record(path, query, body)
            route = ROUTES.get((self.command if self.command != "HEAD" else "GET", path))
            if route is None:
                self.send_json(404, self.error_obj(openai, "not_found_error",
                                                   "no route for %s %s" % (self.command, path)))
                return
            route(self, body, query)
        except BadRequest as e:
            # A request whose body could not be read leaves the connection out of sync:
            # answer, then close it (the Connection header sets close_connection).
            hdrs = {} if body_read else {"Connection": "close"}
            self.send_json(400, self.error_obj(openai, "invalid_request_error", str(e)), hdrs)
        except (ClientGone, ConnectionError, socket.timeout):
            self.close_connection = True
        except Exception as e:  # never crash on bad input
            self.close_connection = True
            if self.server.verbose:
                traceback.print_exc()
            if not self._headers_sent:
                try:
                    self.send_json(400, self.error_obj(openai, "invalid_request_error",
                                                       "%s: %s" % (type(e).__name__, e)),
                                   {"Connection": "close"})
                except OSError:
                    pass

    def send_response(self, code, message=None):
        self._headers_sent = True
        super().send_response(code, message)

    @staticmethod
    def error_obj(openai, etype, message):
        if openai:
            return {"error": {"message": message, "type": etype, "code": None}}
        return {"type": "error", "error": {"type": etype, "message": message}}

    @staticmethod
    def parse_json(body, what="body"):
        try:
            obj = json.loads(body or b"null")
        except ValueError as e:
            raise BadRequest("invalid JSON %s: %s" % (what, e))
        return obj

    # ---------- control API ----------
    def ctl_health(self, body, query):
        doc = self.parse_json(body)
        if not isinstance(doc, dict):
            raise BadRequest("health document must be a JSON object")
        with self.state.lock:
            self.state.health = doc
        self.send_json(200, {"ok": True})

    def ctl_behaviour(self, body, query):
        b = self.parse_json(body)
        model = validate_behaviour(b)
        b = {k: v for k, v in b.items() if k != "model"}
        with self.state.lock:
            if b:
                self.state.behaviours[model] = b
            else:
                self.state.behaviours.pop(model, None)  # {"model": M} alone clears M
        self.send_json(200, {"ok": True, "model": model, "behaviour": b})

    def ctl_list_behaviours(self, body, query):
        with self.state.lock:
            self.send_json(200, {"behaviours": copy.deepcopy(self.state.behaviours)})

    def ctl_reset(self, body, query):
        self.state.reset()
        self.send_json(200, {"ok": True})

    def get_requests(self, body, query):
        with self.state.lock:
            reqs = list(self.state.requests)
        self.send_json(200, {"requests": reqs})

    def delete_requests(self, body, query):
        self.state.clear_requests()
        self.send_json(200, {"ok": True})

    def get_stats(self, body, query):
        with self.state.lock:
            out = {"by_model": dict(self.state.by_model), "total": self.state.total,
                   "aborted_streams": self.state.aborted, "abandoned": self.state.abandoned,
                   "inflight": sum(self.state.inflight.values()),
                   "inflight_max": self.state.inflight_max,
                   "inflight_max_by_model": dict(self.state.inflight_max_by_model)}
        self.send_json(200, out)

    # ---------- upstream API ----------
    def health(self, body, query):
        with self.state.lock:
            doc = copy.deepcopy(self.state.health)
        if doc is None:
            doc = default_health()
        delay = doc.pop("__delay_ms", 0)
        status = doc.pop("__status", None)
        if isinstance(delay, (int, float)):
            self.sleep(delay)
        if isinstance(status, int):
            self.send_json(status, {})
        else:
            self.send_json(200, doc)

    def models(self, body, query):
        data = [{"id": m, "type": "model", "display_name": m,
                 "created_at": "2025-01-01T00:00:00Z"} for m in DEFAULT_MODELS]
        self.send_json(200, {"data": data, "has_more": False,
                             "first_id": data[0]["id"], "last_id": data[-1]["id"]})

    def count_tokens(self, body, query):
        req = self.parse_json(body)
        if not isinstance(req, dict):
            raise BadRequest("body must be a JSON object")
        self.send_json(200, {"input_tokens": max(1, len(body) // 4)})

    def llm(self, body, query, openai):
        req = self.parse_json(body)
        if not isinstance(req, dict):
            raise BadRequest("body must be a JSON object")
        if "messages" in req and not isinstance(req["messages"], list):
            raise BadRequest("messages must be a list")
        model = req.get("model") if isinstance(req.get("model"), str) else "unknown"
        self.state.enter(model)
        self.inflight_model = model
        try:
            self.llm_answer(req, body, model, openai)
        finally:
            self.leave_inflight()

    def llm_answer(self, req, body, model, openai):
        beh = self.state.take_behaviour(model)
        mode = beh.get("mode", "normal")
        stream = req.get("stream") is True

        self.sleep(beh.get("delay_ms", 0))

        if mode == "garbage":
            self.close_connection = True
            self.wfile.write(b"\x00\x01garbage, not HTTP at all \xff\xfe\r\n\r\n")
            return
        if mode == "reset_before_headers":
            self.rst()
            return
        if mode == "hang":
            self.hang()
            return
        if "status" in beh:
            self.send_behaviour_error(beh, openai)
            return

        reply = Reply(req, len(body), beh)
        if openai:
            self.answer_openai(req, reply, beh, stream)
        else:
            self.answer_anthropic(reply, beh, stream)

    def messages(self, body, query):
        self.llm(body, query, openai=False)

    def chat_completions(self, body, query):
        self.llm(body, query, openai=True)

    def send_behaviour_error(self, beh, openai):
        status = int(beh["status"])
        headers = dict(beh.get("headers") or {})
        body = beh.get("body")
        if body is None:
            etype = ANTHROPIC_ERROR_TYPES.get(status, "api_error")
            body = self.error_obj(openai, etype, "mock upstream error %d" % status)
        if isinstance(body, str):
            raw = body.encode()
            try:
                json.loads(body)
                ctype = "application/json"
            except ValueError:
                ctype = "text/plain; charset=utf-8"
        else:
            raw = jdump(body).encode()
            ctype = "application/json"
        if not any(k.lower() == "content-type" for k in headers):
            headers["Content-Type"] = ctype
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, str(v))
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.leave_inflight()
        self.wfile.write(raw)

    # ---------- streaming ----------
    def emit(self, data, beh, rng):
        """Send one SSE event (already framed), honouring split_bytes."""
        if beh.get("mode") == "split_bytes":
            i = 0
            while i < len(data):
                n = rng.randint(1, 7)
                self.write_chunk(data[i:i + n])
                i += n
                self.sleep(beh.get("piece_delay_ms", 0))
        else:
            self.write_chunk(data)

    def run_stream(self, events, beh, extra_headers, on_error_event=None):
        """Write a list of pre-framed SSE events as a chunked response."""
        mode = beh.get("mode", "normal")
        rng = random.Random(beh.get("seed", 1))
        self.start_stream(extra_headers)
        try:
            if mode == "empty_200":
                self.end_stream()
                return
            if mode == "reset_mid_stream":
                # The start plus about half the content, then a RST.
                events = events[:max(2, len(events) // 2)]
            elif mode == "error_event":
                events = events[:1] + [on_error_event]
            for i, ev in enumerate(events):
                if i:
                    self.sleep(beh.get("chunk_delay_ms", 0))
                self.emit(ev, beh, rng)
            if mode == "reset_mid_stream":
                self.rst()
                return
            self.end_stream()
        except (ConnectionError, BrokenPipeError, OSError):
            with self.state.lock:
                self.state.aborted += 1
            raise ClientGone()

    def answer_anthropic(self, reply, beh, stream):
        hdrs = {"request-id": "req_" + rand_id()}
        if not stream:
            if beh.get("mode") == "empty_200":
                self.send_json(200, b"", hdrs)
                return
            msg = reply.anthropic_message("msg_" + rand_id(), reply.anthropic_content(),
                                          reply.usage)
            if beh.get("mode") == "reset_mid_stream":
                self.send_truncated(msg, hdrs)
                return
            self.send_json(200, msg, hdrs)
            return
        events = [("event: %s\ndata: %s\n\n" % (name, jdump(data))).encode()
                  for name, data in reply.anthropic_events()]
        err = ("event: error\ndata: %s\n\n" % jdump(
            {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
        )).encode()
        self.run_stream(events, beh, hdrs, err)

    def answer_openai(self, req, reply, beh, stream):
        if not stream:
            if beh.get("mode") == "empty_200":
                self.send_json(200, b"")
                return
            obj = reply.openai_completion()
            if beh.get("mode") == "reset_mid_stream":
                self.send_truncated(obj, {})
                return
            self.send_json(200, obj)
            return
        so = req.get("stream_options")
        include_usage = isinstance(so, dict) and so.get("include_usage") is True
        events = [("data: %s\n\n" % jdump(c)).encode()
                  for c in reply.openai_chunks(include_usage)]
        events.append(b"data: [DONE]\n\n")
        err = ("data: %s\n\n" % jdump(
            {"error": {"message": "Overloaded", "type": "overloaded_error", "code": None}}
        )).encode()
        self.run_stream(events, beh, {}, err)

    def send_truncated(self, obj, headers):
        """Announce the full Content-Length, send half the body, then RST."""
        body = jdump(obj).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        for k, v in headers.items():
            self.send_header(k, str(v))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[:len(body) // 2])
        self.rst()


ROUTES = {
    ("POST", "/_control/health"): Handler.ctl_health,
    ("POST", "/_control/behaviour"): Handler.ctl_behaviour,
    ("GET", "/_control/behaviour"): Handler.ctl_list_behaviours,
    ("POST", "/_control/reset"): Handler.ctl_reset,
    ("GET", "/_requests"): Handler.get_requests,
    ("DELETE", "/_requests"): Handler.delete_requests,
    ("GET", "/_stats"): Handler.get_stats,
    ("GET", "/health"): Handler.health,
    ("GET", "/v1/models"): Handler.models,
    ("POST", "/v1/messages/count_tokens"): Handler.count_tokens,
    ("POST", "/v1/messages"): Handler.messages,
    ("POST", "/v1/chat/completions"): Handler.chat_completions,
}


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024
    allow_reuse_address = True

    def __init__(self, addr, verbose=False):
        self.state = State()
        self.verbose = verbose
        super().__init__(addr, Handler)

    def handle_error(self, request, client_address):
        # Peers that vanish mid-response are expected in these tests; stay quiet.
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, BrokenPipeError, socket.timeout)) \
                and not self.verbose:
            return
        super().handle_error(request, client_address)

    def shutdown_request(self, request):
        try:
            super().shutdown_request(request)
        except OSError:
            pass


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, default=8080, help="listen port (0 = any free port)")
    ap.add_argument("--bind", default="127.0.0.1", help="listen address")
    ap.add_argument("--verbose", action="store_true", help="log every request to stderr")
    args = ap.parse_args(argv)

    server = Server((args.bind, args.port), verbose=args.verbose)

    def on_signal(signum, frame):
        server.state.stopping.set()  # wakes hanging/delayed handlers
        # shutdown() blocks until serve_forever returns, so it can't run in this thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print("READY %d" % server.server_address[1], flush=True)
    try:
        server.serve_forever(poll_interval=0.1)
    finally:
        server.state.stopping.set()
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
