#!/usr/bin/env python3
"""Fixed request and response bodies for scripts/bench.sh (standard library only).

    python3 scripts/bench/fixtures.py OUTDIR

writes into OUTDIR:
  req-small.json     ~300 B Anthropic Messages request (non-stream)
  req-large.json     ~200 KB request (a long conversation, non-stream)
  req-stream.json    the small request with "stream": true
  oai-small.json     the small request in the OpenAI Chat Completions format (for the
  oai-large.json     "api-proxy+convert" variant: POST /v1/chat/completions, which
  oai-stream.json    api-proxy converts to /v1/messages, and the answer back); the
                     stream one asks for the usage chunk (stream_options.include_usage)
  resp-message.json  the mock's fixed non-stream answer (Anthropic message with usage)
  resp-stream.sse    the mock's fixed stream: message_start, content_block_start, ping,
                     STREAM_DELTAS content_block_delta events, content_block_stop,
                     message_delta (with usage), message_stop
  resp-oai-message.json  the same answer as an OpenAI chat.completion (with usage), for
  resp-oai-stream.sse    the mock's /v1/chat/completions; and as an OpenAI stream: a role
                     chunk, STREAM_DELTAS content chunks, a finish_reason chunk, the usage
                     chunk (choices [], as include_usage asks) and data: [DONE]
  mock-message.inc   nginx directives (`set`, `return 200 '...'`) answering with those
  mock-stream.inc    bodies from memory, so the mock reads no file and runs no code
  mock-oai-message.inc
  mock-oai-stream.inc
  expected-usage     "INPUT OUTPUT" tokens of one answer, for the usage check
  reply-text.txt     the reply text (what a converted answer must carry)
  model.txt          the model every request names
  health.json        the mock's fixed GET /health: quota per account in the upstream's
  mock-health.inc    format (several accounts, three models; the max per model is what
                     the poller keeps: MODEL 0.8, gemini-3-pro-high 0.5, opus 0.5)

Everything is deterministic: the same bytes every run, so runs compare.
"""

import json
import sys
from pathlib import Path

MODEL = "claude-sonnet-4-5-20250929"
STREAM_DELTAS = 50
LARGE_BYTES = 200 * 1024
INPUT_TOKENS = 42
OUTPUT_TOKENS = STREAM_DELTAS

WORDS = ("the proxy relays each event as it arrives so the client sees tokens without "
         "waiting for the whole answer and usage is counted once per request").split()


def reply_text():
    """STREAM_DELTAS words; the stream's deltas concatenate to exactly this text."""
    return " ".join(WORDS[i % len(WORDS)] for i in range(STREAM_DELTAS)) + "."


def dumps(obj):
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=True)


def oai_request(req):
    """The same request in the OpenAI Chat Completions format (system prompt first)."""
    a = json.loads(req)
    out = {"model": a["model"], "max_tokens": a["max_tokens"],
           "messages": [{"role": "system", "content": a["system"]}] + a["messages"]}
    if a.get("stream"):
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    return dumps(out)


def health():
    """An antigravity-style /health: several accounts (one invalid, ignored by the poller),
    three models; per model the poller keeps the max remainingFraction over valid accounts."""
    reset = "2099-01-01T00:00:00Z"

    def models(main, gemini, opus):
        return {MODEL: {"remaining": "%d%%" % (main * 100), "remainingFraction": main, "resetTime": reset},
                "gemini-3-pro-high": {"remaining": "%d%%" % (gemini * 100), "remainingFraction": gemini,
                                      "resetTime": reset},
                "claude-opus-4-6-thinking": {"remaining": "%d%%" % (opus * 100), "remainingFraction": opus,
                                             "resetTime": reset}}
    accounts = [
        {"email": "bench-a@example.com", "status": "ok", "modelRateLimits": {}, "models": models(0.8, 0.2, 0.5)},
        {"email": "bench-b@example.com", "status": "ok", "modelRateLimits": {}, "models": models(0.3, 0.5, 0.1)},
        {"email": "bench-c@example.com", "status": "ok", "modelRateLimits": {}, "models": models(0.6, 0.4, 0.3)},
        {"email": "bench-d@example.com", "status": "invalid", "modelRateLimits": {},
         "models": models(1.0, 1.0, 1.0)},
    ]
    return dumps({"status": "ok", "timestamp": "2026-01-01T00:00:00Z", "accounts": accounts})


def request(content, stream=False, extra_messages=()):
    req = {"model": MODEL, "max_tokens": 1024,
           "system": "You are a concise assistant.",
           "messages": list(extra_messages) + [{"role": "user", "content": content}]}
    if stream:
        req["stream"] = True
    return dumps(req)


def large_request():
    """A long multi-turn conversation (what large requests really are), padded to ~200 KB."""
    para = ("Here is the next part of the log file I am debugging; please keep it in mind "
            "for the question at the end. " + " ".join(WORDS) + " ") * 4
    history = []
    i = 0
    while len(dumps(history)) < LARGE_BYTES - 1024:
        history.append({"role": "user", "content": "Part %d: %s" % (i, para)})
        history.append({"role": "assistant", "content": "Noted part %d." % i})
        i += 1
    return request("What went wrong in the log above?", extra_messages=history)


def message(msg_id, text):
    return {"id": msg_id, "type": "message", "role": "assistant", "model": MODEL,
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn", "stop_sequence": None,
            "usage": {"input_tokens": INPUT_TOKENS, "output_tokens": OUTPUT_TOKENS,
                      "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}}


def sse(event, data):
    return "event: %s\ndata: %s\n\n" % (event, dumps(data))


def stream_body(msg_id, text):
    words = text.split(" ")
    pieces = [w + " " for w in words[:-1]] + [words[-1]]
    assert len(pieces) == STREAM_DELTAS and "".join(pieces) == text
    start = message(msg_id, "")
    start["content"] = []
    start["stop_reason"] = None
    start["usage"] = dict(start["usage"], output_tokens=1)
    out = [sse("message_start", {"type": "message_start", "message": start}),
           sse("content_block_start", {"type": "content_block_start", "index": 0,
                                       "content_block": {"type": "text", "text": ""}}),
           sse("ping", {"type": "ping"})]
    for p in pieces:
        out.append(sse("content_block_delta", {"type": "content_block_delta", "index": 0,
                                               "delta": {"type": "text_delta", "text": p}}))
    out += [sse("content_block_stop", {"type": "content_block_stop", "index": 0}),
            sse("message_delta", {"type": "message_delta",
                                  "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                  "usage": {"output_tokens": OUTPUT_TOKENS}}),
            sse("message_stop", {"type": "message_stop"})]
    return "".join(out)


def oai_chunk(cid, delta, finish=None):
    return {"id": cid, "object": "chat.completion.chunk", "created": 1767225600, "model": MODEL,
            "system_fingerprint": None,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}


def oai_usage():
    return {"prompt_tokens": INPUT_TOKENS, "completion_tokens": OUTPUT_TOKENS,
            "total_tokens": INPUT_TOKENS + OUTPUT_TOKENS}


def oai_message(cid, text):
    """What an OpenAI-speaking upstream answers a non-stream chat completion."""
    return {"id": cid, "object": "chat.completion", "created": 1767225600, "model": MODEL,
            "system_fingerprint": None,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": None},
                         "logprobs": None, "finish_reason": "stop"}],
            "usage": oai_usage()}


def oai_stream_body(cid, text):
    """An OpenAI stream as the API sends it with stream_options.include_usage: every chunk
    carries "usage": null but the last, which has no choices."""
    words = text.split(" ")
    pieces = [w + " " for w in words[:-1]] + [words[-1]]
    assert len(pieces) == STREAM_DELTAS and "".join(pieces) == text

    def data(obj):
        return "data: %s\n\n" % dumps(obj)

    def with_usage(chunk, usage=None):
        chunk["usage"] = usage
        return chunk
    out = [data(with_usage(oai_chunk(cid, {"role": "assistant", "content": "", "refusal": None})))]
    out += [data(with_usage(oai_chunk(cid, {"content": p}))) for p in pieces]
    out.append(data(with_usage(oai_chunk(cid, {}, "stop"))))
    last = oai_chunk(cid, {})
    last["choices"] = []
    out.append(data(with_usage(last, oai_usage())))
    out.append("data: [DONE]\n\n")
    return "".join(out)


def nginx_return(body, var):
    """nginx directives answering 200 with `body` from memory (the mock runs no code).

    nginx caps one config token at 4 KB, so the body is split over variables set per
    request and joined by `return`. Single-quoted nginx strings take newlines literally;
    `'` and `\\` would need escaping and `$` would start a variable, so the fixtures must not
    contain them (checked, not escaped)."""
    for bad in ("'", "\\", "$"):
        if bad in body:
            raise SystemExit("fixture contains %r, which nginx `return` would mangle" % bad)
    step = 3000
    parts = [body[i:i + step] for i in range(0, len(body), step)]
    names = ["$%s%d" % (var, i) for i in range(len(parts))]
    lines = ["set %s '%s';\n" % (n, p) for n, p in zip(names, parts)]
    return "".join(lines) + "return 200 '%s';\n" % "".join(names)


def main():
    if len(sys.argv) != 2:
        raise SystemExit("usage: fixtures.py OUTDIR")
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    small = request("Write one short paragraph about why streaming matters for "
                    "chat interfaces, in plain words, for a new engineer on the team. "
                    "Keep it under five sentences.")
    text = reply_text()
    files = {
        "req-small.json": small,
        "req-large.json": large_request(),
        "req-stream.json": request(json.loads(small)["messages"][-1]["content"], stream=True),
        "resp-message.json": dumps(message("msg_01BenchFixedNonStreamReply0", text)),
        "resp-stream.sse": stream_body("msg_01BenchFixedStreamReply00000", text),
        "resp-oai-message.json": dumps(oai_message("chatcmpl-BenchFixedNonStreamReply0", text)),
        "resp-oai-stream.sse": oai_stream_body("chatcmpl-BenchFixedStreamReply000", text),
        "expected-usage": "%d %d\n" % (INPUT_TOKENS, OUTPUT_TOKENS),
        "reply-text.txt": text,
        "model.txt": MODEL + "\n",
        "health.json": health(),
    }
    for name in ("small", "large", "stream"):
        files["oai-%s.json" % name] = oai_request(files["req-%s.json" % name])
    files["mock-health.inc"] = nginx_return(files["health.json"], "bench_health")
    files["mock-message.inc"] = nginx_return(files["resp-message.json"], "bench_msg")
    files["mock-stream.inc"] = nginx_return(files["resp-stream.sse"], "bench_sse")
    files["mock-oai-message.inc"] = nginx_return(files["resp-oai-message.json"], "bench_oai_msg")
    files["mock-oai-stream.inc"] = nginx_return(files["resp-oai-stream.sse"], "bench_oai_sse")
    for name, data in files.items():
        (out / name).write_text(data)


if __name__ == "__main__":
    main()
