"""Redis going away under traffic (docs/contract.md section 4).

While Redis is unreachable a replica keeps serving keys it has verified and keeps usage in
memory; when Redis is back the usage is written, exactly once. Redis runs with AOF and
appendfsync always, so even a SIGKILL loses nothing Redis acknowledged, and the final counts
must equal exactly what the clients were served.
"""

import threading
import unittest
from concurrent.futures import ThreadPoolExecutor

from lib import harness as h

MODEL = "claude-sonnet-4-5"


class Traffic:
    """Client threads sending requests in a loop until stopped, tallying what they got."""

    def __init__(self, proxy, keys, threads=2):
        self.proxy = proxy
        self.keys = keys
        self.lock = threading.Lock()
        self.ok = 0
        self.tokens_in = 0
        self.tokens_out = 0
        self.failures = []
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self.run, args=(i,), daemon=True)
                        for i in range(threads)]

    def send(self, key, tag, stream):
        """One request; tallies it (or records why it failed)."""
        body = {"model": MODEL, "max_tokens": 32, "stream": stream,
                "messages": [{"role": "user", "content": "outage %s" % tag}]}
        try:
            r = h.request("POST", self.proxy.url + "/v1/messages", body=body,
                          headers={"x-api-key": key}, timeout=10)
        except OSError as e:
            with self.lock:
                self.failures.append(repr(e))
            return
        if r.status != 200:
            with self.lock:
                self.failures.append((r.status, r.text[:200]))
            return
        if stream:
            events = dict(h.sse_json(h.parse_sse(r.body)))
            if "message_stop" not in events:
                with self.lock:
                    self.failures.append(("incomplete stream", r.text[-200:]))
                return
            i_tok = events["message_start"]["message"]["usage"]["input_tokens"]
            o_tok = events["message_delta"]["usage"]["output_tokens"]
        else:
            u = r.json()["usage"]
            i_tok, o_tok = u["input_tokens"], u["output_tokens"]
        with self.lock:
            self.ok += 1
            self.tokens_in += i_tok
            self.tokens_out += o_tok

    def run(self, n):
        i = 0
        while not self.stopping.is_set() and i < 5000:  # bounded whatever happens
            self.send(self.keys[(n + i) % len(self.keys)], "%d-%d" % (n, i), i % 3 == 0)
            i += 1

    def count(self):
        with self.lock:
            return self.ok

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def stop(self):
        self.stopping.set()
        for t in self.threads:
            t.join(30)


def health(proxy):
    r = h.request("GET", proxy.url + "/health", timeout=5)
    return r.status, r.json()


class RedisOutageTest(h.TestCase):
    def setUp(self):
        super().setUp()
        self.redis = self.start_redis()
        self.mock = self.start_mock()
        self.proxy = self.start_proxy(self.mock, self.redis, log_level="info")
        self.keys = [self.proxy.create_key("outage-%d" % i) for i in range(3)]
        self.unseen = self.proxy.create_key("never-used-before-the-outage")

    def run_outage(self, crash):
        traffic = Traffic(self.proxy, self.keys)
        self.addCleanup(traffic.stop)
        # Every key is verified (cached) before Redis goes.
        for k in self.keys:
            traffic.send(k, "warm-up", False)
        self.assertEqual((traffic.count(), traffic.failures), (len(self.keys), []))
        traffic.start()
        h.wait_until(lambda: traffic.count() >= 20, 10, message="traffic to flow")

        if crash:
            self.redis.kill()
        else:
            self.redis.stop()
        def down():
            st, doc = health(self.proxy)
            return doc if st == 503 else None

        doc = h.wait_until(down, 10, message="/health to report Redis down")
        self.assertEqual(doc["status"], "degraded")
        during = traffic.count()
        # A key this replica has never verified cannot be checked now: "try again", not
        # "invalid"; the admin API cannot answer either.
        r = h.request("POST", self.proxy.url + "/v1/messages", headers={"x-api-key": self.unseen},
                      body={"model": MODEL, "max_tokens": 8,
                            "messages": [{"role": "user", "content": "unseen"}]})
        self.assertEqual(r.status, 503, r.text)
        self.assertEqual(r.json()["type"], "error")
        st, doc = self.proxy.admin("GET", "/admin/usage")
        self.assertEqual(st, 503, doc)
        h.wait_until(lambda: traffic.count() >= during + 30, 10,
                     message="requests to keep succeeding while Redis is down")
        st, doc = health(self.proxy)
        self.assertEqual((st, doc["status"]), (503, "degraded"), "Redis came back by itself?")

        self.redis.start()
        h.wait_until(lambda: health(self.proxy)[0] == 200, 15,
                     message="/health to recover after Redis is back")
        after = traffic.count()
        h.wait_until(lambda: traffic.count() >= after + 20, 10, message="traffic after recovery")
        traffic.stop()
        self.assertEqual(traffic.failures, [])

        served = traffic.count()

        def counted():
            doc = self.proxy.admin("GET", "/admin/usage")[1]
            return doc if doc["total_requests"] >= served else None

        h.wait_until(counted, 15, message="%d requests in /admin/usage" % served)
        # Anything still held in memory would land late (and count twice): wait it out.
        h.wait_until(lambda: health(self.proxy)[1].get("usage_pending", 0) == 0, 10)
        total = self.proxy.admin("GET", "/admin/usage")[1]
        print("    %d requests served, %d while Redis was down; Redis says %d"
              % (served, after - during, total["total_requests"]))
        self.assertEqual(total["total_requests"], served)
        self.assertEqual(total["total_input_tokens"], traffic.tokens_in)
        self.assertEqual(total["total_output_tokens"], traffic.tokens_out)
        per_key = [self.proxy.admin("GET", "/admin/keys/%s/usage" % k)[1]["usage"]
                   for k in self.keys]
        self.assertEqual(sum(u["total_requests"] for u in per_key), served)
        self.assertEqual(sum(u["total_input"] for u in per_key), traffic.tokens_in)
        days = self.proxy.admin("GET", "/admin/usage/daily")[1]["days"]
        self.assertEqual(sum(d["total_requests"] for d in days), served)

    def test_redis_restart_during_traffic_loses_and_doubles_nothing(self):
        self.run_outage(crash=False)

    def test_redis_kill_9_during_traffic_loses_and_doubles_nothing(self):
        self.run_outage(crash=True)


    def test_large_backlog_is_written_exactly(self):
        # Hundreds of distinct models while Redis is down: more counters than one write
        # carries, so the backlog goes out in several batches.
        n = 250
        key = self.keys[0]
        traffic = Traffic(self.proxy, [key])
        traffic.send(key, "warm-up", False)
        self.redis.stop()
        h.wait_until(lambda: health(self.proxy)[0] == 503, 10, message="Redis down")
        expect = {}

        def one(i):
            model = "backlog-model-%03d" % i
            r = h.request("POST", self.proxy.url + "/v1/messages", headers={"x-api-key": key},
                          body={"model": model, "max_tokens": 8,
                                "messages": [{"role": "user", "content": "backlog %d" % i}]})
            self.assertEqual(r.status, 200, r.text)
            u = r.json()["usage"]
            expect[model] = (u["input_tokens"] + u["output_tokens"], 1)

        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(one, range(n)))
        self.assertEqual(len(expect), n)
        self.redis.start()

        def counted():
            doc = self.proxy.admin("GET", "/admin/keys/%s/usage" % key)
            return doc[1] if doc[0] == 200 and doc[1]["usage"]["total_requests"] >= n + 1 else None

        h.wait_until(counted, 20, message="the backlog to be written")
        h.wait_until(lambda: health(self.proxy)[1].get("usage_pending", 0) == 0, 10)
        u = self.proxy.admin("GET", "/admin/keys/%s/usage" % key)[1]["usage"]
        self.assertEqual(u["total_requests"], n + 1)
        got = {m: (v["total"], v["requests"]) for m, v in u["total_by_model"].items()
               if m.startswith("backlog-model-")}
        self.assertEqual(got, expect)
        hours = self.proxy.admin("GET", "/admin/usage/hourly")[1]["hours"]
        self.assertEqual(sum(v["requests"] for hr in hours for m, v in hr["by_model"].items()
                             if m.startswith("backlog-model-")), n)


class RedisHostNameTest(h.TestCase):
    """REDIS_URL with a host name: resolved by the system resolver (getaddrinfo, on a thread
    off the loop), as every other program on the machine resolves it; a name that does not
    resolve keeps the replica up, degraded, saying why in its log."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.redis = cls.start_redis()
        cls.mock = cls.start_mock()

    def test_host_name_resolves_and_serves(self):
        p = self.start_proxy(self.mock, "redis://localhost:%d/0" % self.redis.port)
        h.wait_until(lambda: h.request("GET", p.url + "/health").json()["redis"] == "up", 10,
                     message="Redis up through localhost")
        key = p.create_key("by-name")
        r = h.request("POST", p.url + "/v1/messages", headers={"x-api-key": key},
                      body={"model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]})
        self.assertEqual(r.status, 200, r.text)
        self.assertIn("redis: connected to localhost:%d" % self.redis.port, p.log())

    def test_unresolvable_host_degraded_and_says_why(self):
        p = self.start_proxy(self.mock, "redis://no-such-host.invalid:6379/0")
        r = h.wait_until(lambda: (lambda r: r.status == 503 and r)(h.request("GET", p.url + "/health")), 10)
        self.assertEqual(r.json()["status"], "degraded")
        h.wait_until(lambda: "cannot resolve no-such-host.invalid" in p.log(), 10, message="the reason logged")
        self.assertTrue(p.alive())


if __name__ == "__main__":
    unittest.main()
