"""Back-pressure: a client that reads a big stream slowly must not make the proxy buffer it.

The proxy may hold about STREAM_BUFFER_BYTES per client; beyond that it must stop reading
from the upstream (so the upstream's writes block too) until the client catches up. The
stream is much larger than the memory bound, so a proxy that buffers it fails the test.
"""

import json
import re
import socket
import subprocess
import time
import unittest

from lib import harness as h

WORDS = 400_000          # about 48 MB of SSE
STREAM_BUFFER = 65536
RSS_BOUND = 30 << 20


def vm_rss(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS for pid %d" % pid)


def tcp_sockets(port):
    """Established TCP sockets with `port` at either end, from `ss -tin`: a list of dicts
    with local/peer ports, recv_q, send_q and the kernel's byte counters. None when `ss`
    (iproute2) is not installed."""
    try:
        out = subprocess.run(["ss", "-tinH", "state", "established", "( sport = :%d or "
                              "dport = :%d )" % (port, port)], capture_output=True,
                             text=True, timeout=5).stdout
    except FileNotFoundError:
        return None
    socks, cur = [], None
    for line in out.splitlines():
        if line and not line[0].isspace():
            f = line.split()
            cur = {"recv_q": int(f[0]), "send_q": int(f[1]),
                   "local": int(f[2].rsplit(":", 1)[1]), "peer": int(f[3].rsplit(":", 1)[1])}
            socks.append(cur)
        elif cur is not None:
            for name in ("bytes_received", "bytes_acked"):
                m = re.search(r"\b%s:(\d+)" % name, line)
                cur[name] = int(m.group(1)) if m else 0
    return socks


def proxy_read_from(upstream_port):
    """Bytes the proxy process has read off its connections to the upstream."""
    socks = tcp_sockets(upstream_port)
    if socks is None:
        return None
    return sum(s["bytes_received"] - s["recv_q"] for s in socks if s["peer"] == upstream_port)


def sse_events(data):
    """(event, data) pairs of an SSE body with "\\n" line ends (linear time, for big bodies)."""
    out = []
    for block in data.split(b"\n\n"):
        if not block:
            continue
        ev = dat = None
        for line in block.split(b"\n"):
            if line.startswith(b"event: "):
                ev = line[7:].decode()
            elif line.startswith(b"data: "):
                dat = line[6:].decode()
        out.append((ev, dat))
    return out


def dechunk(data):
    out = bytearray()
    i = 0
    while True:
        j = data.index(b"\r\n", i)
        size = int(data[i:j].split(b";")[0], 16)
        if size == 0:
            return bytes(out)
        out += data[j + 2:j + 2 + size]
        i = j + 2 + size + 2


class BackPressureTest(h.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.redis = cls.start_redis()
        cls.mock = cls.start_mock()
        cls.proxy = cls.start_proxy(cls.mock, cls.redis, log_level="info",
                                    env={"STREAM_BUFFER_BYTES": STREAM_BUFFER,
                                         "CLIENT_TIMEOUT_SECONDS": 60})
        cls.key = cls.proxy.create_key("slow-reader")

    def test_slow_reader_does_not_grow_memory_and_gets_everything(self):
        body = json.dumps({"model": "claude-sonnet-4-5", "max_tokens": 10, "stream": True,
                           "messages": [{"role": "user", "content": "big"}]}).encode()
        # Warm up (allocator, curl and evhttp pools), then take the baseline.
        self.mock.behaviour("*", mode="big_stream", words=2000)
        r = h.request("POST", self.proxy.url + "/v1/messages", body=body,
                      headers={"x-api-key": self.key})
        self.assertEqual(r.status, 200)
        baseline = vm_rss(self.proxy.pid)
        self.mock.behaviour("*", mode="big_stream", words=WORDS)
        read0 = proxy_read_from(self.mock.port)

        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: small window
        s.settimeout(30)
        s.connect(("127.0.0.1", self.proxy.port))
        self.addCleanup(s.close)
        s.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nx-api-key: " + self.key.encode() +
                  b"\r\nContent-Type: application/json\r\nConnection: close\r\n"
                  b"Content-Length: %d\r\n\r\n" % len(body) + body)
        got = bytearray()
        while len(got) < 64 * 1024:
            chunk = s.recv(4096)
            self.assertTrue(chunk, "connection closed early")
            got += chunk
        self.assertTrue(got.startswith(b"HTTP/1.1 200"), got[:200])

        # Stop reading, and sample the proxy's memory until it has stopped reading from the
        # upstream for a second (or, without `ss`, for a fixed pause long enough for the
        # whole stream to have been produced had nothing held the upstream back).
        t0 = time.monotonic()
        peak = vm_rss(self.proxy.pid)
        last, still_since = proxy_read_from(self.mock.port), time.monotonic()
        while time.monotonic() - t0 < 30:
            time.sleep(0.05)
            peak = max(peak, vm_rss(self.proxy.pid))
            if last is None:
                if time.monotonic() - t0 > 8:
                    break
                continue
            now = proxy_read_from(self.mock.port)
            if now != last:
                last, still_since = now, time.monotonic()
            elif time.monotonic() - still_since > 1.0:
                break
        growth = peak - baseline
        print("    stalled %.1fs: proxy RSS %.1f -> %.1f MB (+%.1f MB) for a ~%.0f MB stream"
              % (time.monotonic() - t0, baseline / 1e6, peak / 1e6, growth / 1e6,
                 WORDS * 120 / 1e6))
        self.assertLess(growth, RSS_BOUND, "the proxy buffered the stream for a slow client")
        if last is not None:
            # What the proxy read from the upstream but the client has not got (in the
            # client's socket or the proxy's kernel send queue) is what the proxy holds.
            to_client = tcp_sockets(self.proxy.port)
            in_flight = sum(x["recv_q"] + x["send_q"] for x in to_client
                            if self.proxy.port in (x["local"], x["peer"]))
            held = (last - read0) - len(got) - in_flight
            print("    proxy read %.1f MB from upstream; client got %.2f MB, %.2f MB in "
                  "kernel queues, proxy holds %.0f KB"
                  % ((last - read0) / 1e6, len(got) / 1e6, in_flight / 1e6, held / 1024))
            self.assertLess(held, 4 * STREAM_BUFFER + (256 << 10),
                            "the proxy kept reading the upstream for a stalled client")

        # Resume: the whole stream arrives, intact.
        while True:
            chunk = s.recv(1 << 20)
            if not chunk:
                break
            got += chunk
        head, _, rest = bytes(got).partition(b"\r\n\r\n")
        self.assertRegex(head.lower(), rb"transfer-encoding: chunked")
        events = sse_events(dechunk(rest))
        names = [e for e, _ in events]
        self.assertEqual(names[0], "message_start")
        self.assertEqual(names[-1], "message_stop")
        deltas = [json.loads(d)["delta"]["text"] for e, d in events if e == "content_block_delta"]
        self.assertEqual(len(deltas), WORDS)
        self.assertEqual("".join(deltas), " ".join("word%d" % i for i in range(WORDS)))
        self.assertTrue(self.proxy.alive())


class SmallBufferTest(h.TestCase):
    """STREAM_BUFFER_BYTES at its minimum (4 KB), below what one upstream read brings
    (16 KB): each read leaves more queued for the client than the limit, so the relay
    pauses the upstream on bytes that were only queued (replies are corked until the end of
    the read's callback, then written at once). The socket takes them all, so no write event
    ever comes: the relay must be resumed when the corked bytes leave, or the stream stalls
    after its first read until the client gives up."""

    WORDS = 3000  # ~360 KB: some 20 reads

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.redis = cls.start_redis()
        cls.mock = cls.start_mock()
        cls.proxy = cls.start_proxy(cls.mock, cls.redis, env={"STREAM_BUFFER_BYTES": 4096})
        cls.key = cls.proxy.create_key("fast-reader")

    def test_a_stream_larger_than_the_buffer_arrives_whole_at_once(self):
        self.mock.behaviour("*", mode="big_stream", words=self.WORDS)
        body = json.dumps({"model": "claude-sonnet-4-5", "max_tokens": 10, "stream": True,
                           "messages": [{"role": "user", "content": "big"}]}).encode()
        t0 = time.monotonic()
        r = h.request("POST", self.proxy.url + "/v1/messages", body=body,
                      headers={"x-api-key": self.key}, timeout=10)
        self.assertEqual(r.status, 200)
        events = sse_events(r.body)
        self.assertEqual(events[-1][0], "message_stop")
        deltas = [json.loads(d)["delta"]["text"] for e, d in events if e == "content_block_delta"]
        self.assertEqual("".join(deltas), " ".join("word%d" % i for i in range(self.WORDS)))
        # Generous: it takes well under a second; a stall lasts until a timeout.
        self.assertLess(time.monotonic() - t0, 8)


if __name__ == "__main__":
    unittest.main()
