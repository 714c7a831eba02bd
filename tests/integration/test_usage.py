"""Usage accounting is exact across replicas (docs/contract.md section 4, "Counting is exact").

Many concurrent requests, mixed streamed and not, both endpoints, two keys and several
models, go through two replicas sharing one Redis. Every admin view, read from either
replica, must equal the sums of the usage the responses themselves reported. Upstream
errors are not requests; a 2xx without usage is one request with no tokens.
"""

import collections
import json
import random
import re
import socket
import threading
import time
import unittest
from concurrent.futures import ThreadPoolExecutor

from lib import harness as h

MODELS = ["claude-sonnet-4-5", "gemini-3-flash"]
ERROR_STATUS = {"mock-error-model": 500, "mock-rate-limited": 429}  # the mock answers these
NO_USAGE_MODEL = "mock-no-usage"      # the mock answers 200 without usage


def client_usage(path, stream, resp_body):
    """(input, output) tokens as the client sees them in the answer."""
    if not stream:
        doc = json.loads(resp_body)
        u = doc.get("usage") or {}
        if path == "/v1/messages":
            return u.get("input_tokens", 0), u.get("output_tokens", 0)
        return u.get("prompt_tokens", 0), u.get("completion_tokens", 0)
    inp = out = 0
    for ev, data in h.sse_json(h.parse_sse(resp_body)):
        if not isinstance(data, dict):
            continue
        if path == "/v1/messages":
            if ev == "message_start":
                u = data["message"].get("usage") or {}
                inp = u.get("input_tokens", inp)
                out = u.get("output_tokens", out)
            elif ev == "message_delta" and data.get("usage"):
                out = data["usage"].get("output_tokens", out)
        elif data.get("usage"):
            inp = data["usage"]["prompt_tokens"]
            out = data["usage"]["completion_tokens"]
    return inp, out


def body_for(path, model, stream, text):
    msgs = [{"role": "user", "content": text}]
    if path == "/v1/messages":
        b = {"model": model, "max_tokens": 100, "messages": msgs}
    else:
        b = {"model": model, "messages": msgs}
        if stream:
            b["stream_options"] = {"include_usage": True}
    if stream:
        b["stream"] = True
    return b


def pending(proxy):
    """Usage updates a replica holds unwritten (its /health says; 0 if it does not say)."""
    return h.request("GET", proxy.url + "/health").json().get("usage_pending", 0)


def model_totals(by_model):
    return {m: (v["total"], v["requests"]) for m, v in by_model.items()}


def add_models(acc, by_model):
    for m, v in by_model.items():
        t, r = acc.get(m, (0, 0))
        acc[m] = (t + v["total"], r + v["requests"])


class UsageExactTest(h.TestCase):
    N_OK = 200
    N_ERRORS = 20
    N_NO_USAGE = 16

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.redis = cls.start_redis()
        cls.mock = cls.start_mock()
        cls.a = cls.start_proxy(cls.mock, cls.redis, name="proxy-a", log_level="info")
        cls.b = cls.start_proxy(cls.mock, cls.redis, name="proxy-b", log_level="info")
        for model, status in ERROR_STATUS.items():
            cls.mock.behaviour(model, status=status)
        cls.mock.behaviour(NO_USAGE_MODEL, mode="no_usage")

    def test_concurrent_usage_is_exact_on_every_view(self):
        keys = {"alice": self.a.create_key("alice"), "bob": self.b.create_key("bob")}
        rng = random.Random(42)
        jobs = []
        for i in range(self.N_OK + self.N_ERRORS + self.N_NO_USAGE):
            if i < self.N_OK:
                model = MODELS[i % 2]
            elif i < self.N_OK + self.N_ERRORS:
                model = sorted(ERROR_STATUS)[i % 2]
            else:
                model = NO_USAGE_MODEL
            jobs.append({
                "name": "alice" if rng.random() < 0.5 else "bob",
                "replica": self.a if rng.random() < 0.5 else self.b,
                "path": rng.choice(["/v1/messages", "/v1/messages", "/v1/chat/completions"]),
                "stream": rng.random() < 0.5,
                "model": model,
                # Different lengths give different token counts per request.
                "text": "request %d " % i + "word " * rng.randint(0, 40),
            })
        rng.shuffle(jobs)

        def run(job):
            body = body_for(job["path"], job["model"], job["stream"], job["text"])
            r = h.request("POST", job["replica"].url + job["path"], body=body,
                          headers={"x-api-key": keys[job["name"]]}, timeout=60)
            return job, r

        with ThreadPoolExecutor(max_workers=16) as pool:
            results = list(pool.map(run, jobs))

        # Client-side truth.
        per_key = collections.defaultdict(lambda: [0, 0, 0])                   # in, out, reqs
        per_key_model = collections.defaultdict(lambda: collections.defaultdict(lambda: [0, 0]))
        per_model = collections.defaultdict(lambda: [0, 0])                    # total, reqs
        errors = 0
        for job, r in results:
            if job["model"] in ERROR_STATUS:
                self.assertEqual(r.status, ERROR_STATUS[job["model"]], r.body[:200])
                errors += 1
                continue
            self.assertEqual(r.status, 200, (job, r.body[:300]))
            i, o = client_usage(job["path"], job["stream"], r.body)
            if job["model"] == NO_USAGE_MODEL:
                self.assertEqual((i, o), (0, 0))
            else:
                self.assertGreater(i, 0, job)
                self.assertGreater(o, 0, job)
            k = per_key[job["name"]]
            k[0] += i
            k[1] += o
            k[2] += 1
            km = per_key_model[job["name"]][job["model"]]
            km[0] += i + o
            km[1] += 1
            per_model[job["model"]][0] += i + o
            per_model[job["model"]][1] += 1
        n_ok = self.N_OK + self.N_NO_USAGE
        total_in = sum(v[0] for v in per_key.values())
        total_out = sum(v[1] for v in per_key.values())
        self.assertEqual(sum(v[2] for v in per_key.values()), n_ok)
        self.assertEqual(errors, self.N_ERRORS)

        polls = []

        def settled():  # asking either replica in turn
            polls.append(None)
            doc = (self.a, self.b)[len(polls) % 2].admin("GET", "/admin/usage")[1]
            return doc if doc["total_requests"] >= n_ok else None

        h.wait_until(settled, 15, message="total_requests to reach %d" % n_ok)
        # Let any straggling flush land, then check that nothing more arrives.
        h.wait_until(lambda: all(pending(p) == 0 for p in (self.a, self.b)), 10)

        expect_key_models = {name: {m: tuple(v) for m, v in models.items()}
                             for name, models in per_key_model.items()}
        expect_models = {m: tuple(v) for m, v in per_model.items()}
        for replica in (self.a, self.b):
            with self.subTest(replica=replica.name):
                st, total = replica.admin("GET", "/admin/usage")
                self.assertEqual(st, 200)
                self.assertEqual(total["total_requests"], n_ok)
                self.assertEqual(total["total_input_tokens"], total_in)
                self.assertEqual(total["total_output_tokens"], total_out)
                if "total_errors" in total:
                    self.assertEqual(total["total_errors"], self.N_ERRORS)

                listing = {k["name"]: k for k in replica.admin("GET", "/admin/keys")[1]["keys"]}
                for name, (i, o, n) in per_key.items():
                    k = listing[name]
                    self.assertEqual((k["total_input"], k["total_output"], k["total_requests"]),
                                     (i, o, n), name)

                for name, (i, o, n) in per_key.items():
                    st, doc = replica.admin("GET", "/admin/keys/%s/usage" % keys[name])
                    self.assertEqual(st, 200)
                    u = doc["usage"]
                    self.assertEqual((u["total_input"], u["total_output"], u["total_requests"]),
                                     (i, o, n), name)
                    days_in = sum(d["input"] for d in u["daily"].values())
                    days_out = sum(d["output"] for d in u["daily"].values())
                    days_req = sum(d["requests"] for d in u["daily"].values())
                    self.assertEqual((days_in, days_out, days_req), (i, o, n), name)
                    acc = {}
                    for d in u["daily"].values():
                        add_models(acc, d["by_model"])
                    self.assertEqual(acc, expect_key_models[name], "daily by_model of " + name)
                    acc = {}
                    for hr in u["hourly"].values():
                        add_models(acc, hr["by_model"])
                    self.assertEqual(acc, expect_key_models[name], "hourly by_model of " + name)
                    self.assertEqual(model_totals(u["total_by_model"]), expect_key_models[name])

                days = replica.admin("GET", "/admin/usage/daily")[1]["days"]
                self.assertEqual(sum(d["total_input"] for d in days), total_in)
                self.assertEqual(sum(d["total_output"] for d in days), total_out)
                self.assertEqual(sum(d["total_requests"] for d in days), n_ok)
                acc = {}
                for d in days:
                    add_models(acc, d["by_model"])
                self.assertEqual(acc, expect_models, "daily rollup by_model")
                seen = collections.defaultdict(lambda: [0, 0, 0])
                for d in days:
                    for k in d["keys"]:
                        s = seen[k["name"]]
                        s[0] += k["input"]
                        s[1] += k["output"]
                        s[2] += k["requests"]
                self.assertEqual({n: tuple(v) for n, v in seen.items()},
                                 {n: tuple(v) for n, v in per_key.items()}, "daily keys")

                hours = replica.admin("GET", "/admin/usage/hourly")[1]["hours"]
                acc = {}
                for hr in hours:
                    add_models(acc, hr["by_model"])
                self.assertEqual(acc, expect_models, "hourly rollup by_model")
        # Both replicas give the very same documents.
        for path in ("/admin/usage", "/admin/usage/daily", "/admin/usage/hourly", "/admin/keys",
                     "/admin/keys/%s/usage" % keys["alice"]):
            self.assertEqual(self.a.admin("GET", path), self.b.admin("GET", path), path)


class UsageCasesTest(h.TestCase):
    """Single cases, each on its own key (so each reads only its key's usage)."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.redis = cls.start_redis()
        cls.mock = cls.start_mock()
        cls.a = cls.start_proxy(cls.mock, cls.redis)
        # The same Redis behind a replica whose upstream speaks OpenAI.
        cls.oa = cls.start_proxy(cls.mock, cls.redis, name="proxy-openai",
                                 env={"UPSTREAM_FORMAT": "openai"})

    def key_usage(self, key, requests):
        """The key's usage once it shows `requests` requests and nothing is left to flush."""
        def counted():
            doc = self.a.admin("GET", "/admin/keys/%s/usage" % key)[1]
            return doc if doc["usage"]["total_requests"] >= requests else None

        h.wait_until(counted, 10, message="%d requests counted" % requests)
        h.wait_until(lambda: pending(self.a) == 0 and pending(self.oa) == 0, 10)
        return self.a.admin("GET", "/admin/keys/%s/usage" % key)[1]["usage"]

    def test_client_leaving_mid_stream_counts_once(self):
        """A stream the client abandons is still one request (with the tokens seen so far)."""
        key = self.a.create_key("leaver")
        self.mock.behaviour("slow-model", chunk_delay_ms=200, text="one two three four five six")
        body = body_for("/v1/messages", "slow-model", True, "leave early")
        with h.stream("POST", self.a.url + "/v1/messages", body=body,
                      headers={"x-api-key": key}) as s:
            self.assertEqual(s.status, 200)
            parser = h.SSEParser()
            got = []
            for chunk in s:
                got += parser.feed(chunk)
                if any(ev == "content_block_delta" for ev, _ in got):
                    break
        start = json.loads(got[0][1])
        h.wait_until(lambda: self.mock.stats()["aborted_streams"] >= 1, 10)
        u = self.key_usage(key, 1)
        self.assertEqual(u["total_requests"], 1)
        self.assertEqual(u["total_input"], start["message"]["usage"]["input_tokens"])

    def test_openai_stream_without_include_usage_is_still_counted(self):
        """The client did not ask for usage; the proxy must count the tokens all the same."""
        # Fixed numbers: the mock's own count depends on the exact upstream body.
        self.mock.behaviour("fixed-usage", usage={"input_tokens": 123, "output_tokens": 45})
        for replica in (self.a, self.oa):  # converted to Anthropic / passed to OpenAI
            with self.subTest(upstream=replica.name):
                key = replica.create_key("no-include-usage-" + replica.name)
                body = {"model": "fixed-usage", "stream": True,
                        "messages": [{"role": "user", "content": "count me anyway"}]}
                with_usage = dict(body, stream_options={"include_usage": True})
                r = h.request("POST", replica.url + "/v1/chat/completions", body=with_usage,
                              headers={"x-api-key": key})
                self.assertEqual(r.status, 200, r.text)
                self.assertEqual(client_usage("/v1/chat/completions", True, r.body), (123, 45))
                r = h.request("POST", replica.url + "/v1/chat/completions", body=body,
                              headers={"x-api-key": key})
                self.assertEqual(r.status, 200, r.text)
                self.assertEqual(client_usage("/v1/chat/completions", True, r.body), (0, 0),
                                 "usage the client did not ask for")
                u = self.key_usage(key, 2)
                self.assertEqual((u["total_requests"], u["total_input"], u["total_output"]),
                                 (2, 246, 90))

    def test_views_are_exact_at_once_and_redis_counters_within_a_second(self):
        """Usage reaches Redis as journal lines; every view folds the journal before it reads,
        and a replica that wrote lines folds them within a second even if nobody reads."""
        key = self.a.create_key("journal")
        status, doc = self.a.admin("GET", "/admin/keys/%s/usage" % key)
        self.assertEqual(status, 200, doc)
        kid = doc["id"]
        for i in range(3):
            r = h.request("POST", self.a.url + "/v1/messages", headers={"x-api-key": key},
                          body=body_for("/v1/messages", MODELS[0], False, "journal %d" % i))
            self.assertEqual(r.status, 200, r.text)
        # The reply waited for its usage to be in Redis: a view read right after shows it.
        status, doc = self.oa.admin("GET", "/admin/keys/%s/usage" % key)  # another replica
        self.assertEqual(status, 200, doc)
        self.assertEqual(doc["usage"]["total_requests"], 3, doc)
        # Without any reader, the counters themselves follow within USAGE_FOLD_MS (1 s).
        r = h.request("POST", self.a.url + "/v1/messages", headers={"x-api-key": key},
                      body=body_for("/v1/messages", MODELS[0], False, "journal 4"))
        self.assertEqual(r.status, 200, r.text)
        rc = self.redis.client()
        h.wait_until(lambda: rc.cmd("HGET", "ap:u:k:" + kid, "requests") == "4", 3 * self.a.slow,
                     message="the counters in Redis never caught up with the journal")

    def test_model_names_are_kept_exactly(self):
        key = self.a.create_key("odd-models")
        models = ["org:team/model-1.5", "mod\u00e8le \u00e9t\u00e9", "a:b:c", "with \"quotes\""]
        expect = {}
        for m in models:
            r = h.request("POST", self.a.url + "/v1/messages", headers={"x-api-key": key},
                          body=body_for("/v1/messages", m, False, "odd " + m))
            self.assertEqual(r.status, 200, r.text)
            i, o = client_usage("/v1/messages", False, r.body)
            expect[m] = (i + o, 1)
        u = self.key_usage(key, len(models))
        self.assertEqual(model_totals(u["total_by_model"]), expect)
        (day,) = u["daily"].values()
        self.assertEqual(model_totals(day["by_model"]), expect)


class GroupCommitTest(h.TestCase):
    """The commit window (USAGE_COMMIT_WINDOW_US, here 100 ms so timing cannot blur it):
    replies that finish close together share one usage batch, the window ends early once
    every request in flight waits for its usage, and a client alone is never held by it."""

    WINDOW_MS = 100

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.redis = cls.start_redis()
        cls.mock = cls.start_mock()
        # The periodic flush (USAGE_FLUSH_MS) sends what is pending whatever the window:
        # slowed down here so that only the window decides.
        cls.proxy = cls.start_proxy(cls.mock, cls.redis,
                                    env={"USAGE_COMMIT_WINDOW_US": cls.WINDOW_MS * 1000,
                                         "USAGE_FLUSH_MS": 5000})
        cls.key = cls.proxy.create_key("group-commit")
        cls.rc = cls.redis.client()

    def batches(self):
        """Usage batches written so far: appends to the journal (a batch with settlements would
        be the flush script, by its SHA; these keys have no policy)."""
        info = self.rc.cmd("INFO", "commandstats")
        n = 0
        for line in (info.decode() if isinstance(info, bytes) else info).splitlines():
            if line.startswith(("cmdstat_rpush:", "cmdstat_evalsha:")):
                n += int(line.split("calls=")[1].split(",")[0])
        return n

    def send(self, model="claude-sonnet-4-5", text="hi"):
        r = h.request("POST", self.proxy.url + "/v1/messages", headers={"x-api-key": self.key},
                      body=body_for("/v1/messages", model, False, text))
        self.assertEqual(r.status, 200, r.body)
        return time.monotonic()

    def settle(self):
        """One request, then a pause longer than the window: the next take starts afresh."""
        self.send(text="warm")
        time.sleep(2 * self.WINDOW_MS / 1000)

    def test_a_client_alone_is_not_held_by_the_window(self):
        self.settle()
        t0 = time.monotonic()
        for i in range(5):
            self.send(text="alone %d" % i)
        took = time.monotonic() - t0
        # Each of these follows the last batch by less than the window, but nothing else is
        # in flight to share a batch with: held, five would take at least 5 windows.
        self.assertLess(took, 2.5 * self.WINDOW_MS / 1000,
                        "sequential replies waited for the commit window (%.0f ms)" % (took * 1000))

    def test_replies_that_finish_together_share_a_batch(self):
        self.settle()
        self.mock.behaviour("slow-model", delay_ms=1500)
        self.addCleanup(self.mock.behaviour, "slow-model")
        before = self.batches()
        t0 = time.monotonic()
        with ThreadPoolExecutor(6) as pool:
            slow = pool.submit(self.send, "slow-model", "slow")
            time.sleep(0.05)  # the slow one is in flight first
            fast = [pool.submit(self.send, "claude-sonnet-4-5", "fast %d" % i) for i in range(5)]
            fast_done = [f.result() - t0 for f in fast]
            slow_done = slow.result() - t0
        # The fast five finished upstream within a few ms of each other while the slow one
        # was still in flight: the first went at once (the window had passed since the
        # last batch), the others waited for the window and went together.
        self.assertEqual(self.batches() - before, 3,
                         "fast replies %s, slow %.0f ms" % (["%.0f" % (x * 1000) for x in fast_done],
                                                            slow_done * 1000))
        self.assertGreater(max(fast_done), 0.05 + 0.8 * self.WINDOW_MS / 1000)
        self.assertLess(max(fast_done), slow_done - 0.5)

    def test_the_window_ends_when_every_request_in_flight_waits(self):
        self.settle()
        before = self.batches()
        t0 = time.monotonic()
        with ThreadPoolExecutor(4) as pool:
            done = [f.result() - t0 for f in [pool.submit(self.send, "claude-sonnet-4-5", "together %d" % i)
                                              for i in range(4)]]
        # Nothing else is in flight: once the four wait, their batch goes without the window.
        self.assertLess(max(done), 0.8 * self.WINDOW_MS / 1000,
                        "replies %s ms" % ["%.0f" % (x * 1000) for x in done])
        self.assertLessEqual(self.batches() - before, 4)


class DropOneReply:
    """A TCP relay to Redis that forwards everything, except that once armed it lets the
    first usage append (RPUSH ... u:journal) reach Redis, then closes that connection
    before Redis's reply gets back: a reply lost after the write was applied."""

    def __init__(self, redis_port):
        self.redis_port = redis_port
        self.srv = socket.socket()
        self.srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(16)
        self.port = self.srv.getsockname()[1]
        self.armed = False
        self.sent = b""  # every byte the proxy sent
        self.lock = threading.Lock()
        threading.Thread(target=self.accept, daemon=True).start()

    @property
    def url(self):
        return "redis://127.0.0.1:%d/0" % self.port

    def accept(self):
        while True:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            r = socket.create_connection(("127.0.0.1", self.redis_port))
            state = {"drop": False}
            threading.Thread(target=self.up, args=(c, r, state), daemon=True).start()
            threading.Thread(target=self.down, args=(r, c, state), daemon=True).start()

    def up(self, c, r, state):
        try:
            while True:
                data = c.recv(65536)
                if not data:
                    break
                with self.lock:
                    self.sent += data
                    hit = self.armed and b"RPUSH" in data and b"u:journal" in data
                    if hit:
                        self.armed = False
                        state["drop"] = True  # before Redis can answer
                r.sendall(data)
                if hit:
                    time.sleep(0.3)  # Redis applies it
                    break
        except OSError:
            pass
        for s in (c, r):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def down(self, r, c, state):
        try:
            while True:
                data = r.recv(65536)
                if not data:
                    break
                if not state["drop"]:
                    c.sendall(data)
        except OSError:
            pass

    def close(self):
        self.srv.close()


class BatchMarkTest(h.TestCase):
    """A usage batch is appended to the journal with a plain RPUSH behind a header naming it
    (the replica process's mark and the batch's number). When the reply is lost after Redis
    applied it, the replica writes the same batch again on its next connection, and the fold
    counts it once. What marks the batches applied is one key per replica process, not one
    per batch (a key per batch, kept a day, grew Redis by millions of keys a day under load)."""

    def test_one_mark_per_replica_not_one_per_batch(self):
        redis = self.start_redis()
        mock = self.start_mock()
        proxies = [self.start_proxy(mock, redis, name="proxy-%d" % i) for i in range(2)]
        key = proxies[0].create_key("marks")
        for i in range(20):  # one client: every request is a batch of its own
            r = h.request("POST", proxies[i % 2].url + "/v1/messages", headers={"x-api-key": key},
                          body=body_for("/v1/messages", MODELS[0], False, "mark %d" % i))
            self.assertEqual(r.status, 200, r.body)
        self.assertEqual(proxies[0].admin("GET", "/admin/usage")[1]["total_requests"], 20)
        rc = redis.client()
        marks = rc.cmd("KEYS", "ap:flush:*")
        self.assertEqual(len(marks), 2, marks)
        self.assertEqual(sorted(int(rc.cmd("GET", m)) for m in marks), [10, 10])

    def test_a_batch_rewritten_after_a_lost_reply_counts_once(self):
        redis = self.start_redis()
        mock = self.start_mock()
        relay = DropOneReply(redis.port)
        self.addCleanup(relay.close)
        proxy = self.start_proxy(mock, relay.url, log_level="info")
        key = proxy.create_key("lost-reply")
        relay.armed = True
        r = h.request("POST", proxy.url + "/v1/messages", headers={"x-api-key": key},
                      body=body_for("/v1/messages", MODELS[0], False, "lost reply"))
        self.assertEqual(r.status, 200, r.body)
        inp, out = client_usage("/v1/messages", False, r.body)
        h.wait_until(lambda: h.request("GET", proxy.url + "/health").json().get("usage_pending") == 0, 10,
                     message="the batch acknowledged")
        with relay.lock:
            headers = re.findall(rb"#[^\t\r\n]*flush:[^\t\r\n]+:j\t\d+\t\d+", relay.sent)
        self.assertFalse(relay.armed, "no usage append went through the relay")
        self.assertEqual(len(headers), 2, "the batch was not written again: %r" % headers)
        self.assertEqual(headers[0], headers[1], "a rewrite keeps the batch's mark and number")
        stats = redis.client().cmd("INFO", "commandstats")
        stats = stats.decode() if isinstance(stats, bytes) else stats
        self.assertIn("cmdstat_rpush:calls=2,", stats, "Redis applied both copies")
        doc = proxy.admin("GET", "/admin/usage")[1]
        self.assertEqual((doc["total_requests"], doc["total_input_tokens"], doc["total_output_tokens"]),
                         (1, inp, out), doc)
        use = proxy.admin("GET", "/admin/keys/%s/usage" % key)[1]["usage"]
        self.assertEqual(use["total_requests"], 1, use)


if __name__ == "__main__":
    unittest.main()
