#!/usr/bin/env python3
"""Checks one converted answer for scripts/bench.sh (standard library only).

    python3 scripts/bench/check_openai.py FIXTURES ANSWER stream|message

The "api-proxy+convert" variant sends an OpenAI Chat Completions request that api-proxy
converts to the mock's Anthropic /v1/messages; the mock's fixed Anthropic answer comes
back converted. Its bytes cannot equal the mock's (ids, timestamps), so this checks what
a client relies on instead:

  message  a chat.completion whose one choice carries exactly the reply text, with
           finish_reason "stop" and usage prompt/completion tokens of the mock's answer
  stream   SSE "data:" chunks (chat.completion.chunk, one id), whose delta.content
           concatenates to exactly the reply text, a finish_reason "stop", the usage chunk
           the request asked for (stream_options.include_usage) with the mock's tokens,
           and "data: [DONE]" last

Exit status 0 when the answer is right; otherwise 1 with the reason on stderr.
"""

import json
import sys
from pathlib import Path


def fail(msg):
    sys.stderr.write(msg + "\n")
    sys.exit(1)


def check_usage(usage, exp_in, exp_out, where):
    if not isinstance(usage, dict):
        fail("%s: no usage object" % where)
    got = (usage.get("prompt_tokens"), usage.get("completion_tokens"))
    if got != (exp_in, exp_out):
        fail("%s: usage prompt/completion tokens %s, expected %s" % (where, got, (exp_in, exp_out)))


def check_message(body, text, exp_in, exp_out):
    try:
        doc = json.loads(body)
    except ValueError as e:
        fail("not JSON: %s" % e)
    if doc.get("object") != "chat.completion":
        fail("object is %r, expected chat.completion" % doc.get("object"))
    choices = doc.get("choices")
    if not isinstance(choices, list) or len(choices) != 1:
        fail("expected one choice, got %r" % (choices,))
    msg = choices[0].get("message") or {}
    if msg.get("role") != "assistant" or msg.get("content") != text:
        fail("message is %r, expected the reply text" % (msg,))
    if choices[0].get("finish_reason") != "stop":
        fail("finish_reason %r, expected stop" % choices[0].get("finish_reason"))
    check_usage(doc.get("usage"), exp_in, exp_out, "message")


def check_stream(body, text, exp_in, exp_out):
    chunks, done, ids, other = [], False, set(), []
    for block in body.replace("\r\n", "\n").split("\n\n"):
        if not block.strip():
            continue
        data = [line[5:].lstrip(" ") for line in block.split("\n") if line.startswith("data:")]
        if not data:
            other.append(block)
            continue
        payload = "\n".join(data)
        if done:
            fail("data after [DONE]: %r" % payload[:200])
        if payload == "[DONE]":
            done = True
            continue
        try:
            chunks.append(json.loads(payload))
        except ValueError as e:
            fail("chunk is not JSON (%s): %r" % (e, payload[:200]))
    if not done:
        fail("no data: [DONE] at the end")
    if other:
        fail("SSE blocks without data: %r" % other[:2])
    content, finish, usage = [], [], None
    for c in chunks:
        if "error" in c:
            fail("error chunk: %r" % c)
        if c.get("object") != "chat.completion.chunk":
            fail("chunk object %r" % c.get("object"))
        ids.add(c.get("id"))
        for ch in c.get("choices") or []:
            d = ch.get("delta") or {}
            if d.get("content"):
                content.append(d["content"])
            if ch.get("finish_reason"):
                finish.append(ch["finish_reason"])
        if c.get("usage"):
            usage = c["usage"]
    if len(ids) != 1:
        fail("chunks carry %d different ids" % len(ids))
    if "".join(content) != text:
        fail("deltas concatenate to %r, expected the reply text %r" % ("".join(content)[:120], text[:120]))
    if finish != ["stop"]:
        fail("finish reasons %r, expected one stop" % finish)
    check_usage(usage, exp_in, exp_out, "stream")


def main():
    if len(sys.argv) != 4 or sys.argv[3] not in ("stream", "message"):
        fail("usage: check_openai.py FIXTURES ANSWER stream|message")
    fx = Path(sys.argv[1])
    text = (fx / "reply-text.txt").read_text()
    exp_in, exp_out = (int(x) for x in (fx / "expected-usage").read_text().split())
    body = Path(sys.argv[2]).read_bytes().decode("utf-8", "strict")
    if sys.argv[3] == "stream":
        check_stream(body, text, exp_in, exp_out)
    else:
        check_message(body, text, exp_in, exp_out)


if __name__ == "__main__":
    main()
