"""The fleet, end to end: tests/cluster/cluster.sh starts Redis (AOF), the mock upstream, two
pollers, three proxy replicas and HAProxy (health checks on /health every 500 ms, fall 2,
rise 2), and every client request goes through the load balancer. Admin reads and
measurements go to each replica directly, to show that every replica agrees.

- 20,000 requests (CLUSTER_REQUESTS) from 64 keep-alive clients (CLUSTER_CONCURRENCY), mixed
  Anthropic/OpenAI, stream/non-stream, 4 keys, 3 models: every usage view on every replica
  equals what the clients were served, exactly.
- a key disabled through the LB is refused by every replica within 1 s;
- a quota drop at the upstream moves every replica to the fallback tier within one poll
  interval + 100 ms; a reactive trigger (one 429) on one replica reaches the others;
- the active poller killed (SIGKILL): the standby takes over within two intervals;
- a replica killed (SIGKILL) under load: HAProxy routes around it (nothing refused, failures
  only while the replica dies), every request a client saw complete is counted (one the
  replica counted just before dying may not reach its client); restarted with the same
  INSTANCE_ID and port, it counts exactly again;
- Redis restarted (SIGTERM, same AOF) under load: nothing lost, nothing counted twice.

Every measured figure is printed with ">>> MEASURED". Skipped only when haproxy is missing.
"""

import http.client
import json
import os
import threading
import time
import unittest

from lib import fleet
from lib import harness as h
from lib.fleet import INTERVAL, PREFIX, REPLICAS, banner, find_haproxy, note


OPUS = "claude-opus-4-6-thinking"
GEMINI = "gemini-3-pro-high"
SONNET = "claude-sonnet-4-5"     # served by the mock, not in the chain (passes through)
MODELS = (SONNET, OPUS, GEMINI)
REQUESTS = int(os.environ.get("CLUSTER_REQUESTS", "20000"))
CONCURRENCY = int(os.environ.get("CLUSTER_CONCURRENCY", "64"))
def tier_of(doc, model):
    for t in doc["tiers"]:
        if t["model"] == model:
            return t
    raise AssertionError("no tier %s in %r" % (model, doc))


# --------------------------------------------------------------------------------------
# Client load through the load balancer
# --------------------------------------------------------------------------------------

class Load:
    """`threads` client threads, each with its own keep-alive connection to the load
    balancer, sending requests until `total` were sent (or stop()). Request i is one of
    4 kinds (Anthropic / OpenAI x non-stream / stream), one of 3 models and one of the keys.

    Tally of what the clients were served (a complete 2xx answer): per (key id, served
    model) requests and the tokens the responses reported. Failures are split into
    "refused" (a definite error status: never counted as a request) and "ambiguous" (the
    connection broke, a stream ended early, or the LB answered 502/504 because the replica
    went away mid-request: the replica may or may not have counted it)."""

    def __init__(self, url, keys, threads=CONCURRENCY, total=None):
        self.url = url
        self.keys = keys                    # [(key, id, name)]
        self.total = total
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.running = threading.Event()    # cleared by pause()
        self.running.set()
        self.next_i = 0
        self.inflight = 0
        self.ok = 0
        self.tally = {}                     # (key id, model) -> [requests, input, output]
        self.refused = []                   # (t, status, text)
        self.ambiguous = []                 # (t, what)
        self.failed_on = []                 # (t, client thread, reused keep-alive connection?)
        self.t_start = self.t_end = None
        self.threads = [threading.Thread(target=self.worker, daemon=True, name="load-%d" % n)
                        for n in range(threads)]

    # ---- driving ----
    def start(self):
        self.t_start = time.monotonic()
        for t in self.threads:
            t.start()
        return self

    def stop(self):
        self.stopping.set()
        self.running.set()
        self.join()

    def pause(self, timeout=60):
        """Stop sending new requests and wait for the ones in flight to end."""
        self.running.clear()
        h.wait_until(lambda: self.inflight == 0, timeout, interval=0.005,
                     message="requests in flight to end")

    def resume(self):
        self.running.set()

    def join(self, timeout=300):
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.1, deadline - time.monotonic()))
        if self.t_end is None:
            self.t_end = time.monotonic()
        alive = [t.name for t in self.threads if t.is_alive()]
        if alive:
            raise AssertionError("load threads still running: %s" % alive)

    def wait_ok(self, n, timeout=60, what=None):
        h.wait_until(lambda: self.count() >= n, timeout, interval=0.01,
                     message=what or "%d completed requests" % n)

    def count(self):
        with self.lock:
            return self.ok

    def elapsed(self):
        return (self.t_end or time.monotonic()) - self.t_start

    # ---- one client ----
    def take(self):
        while not self.running.wait(0.1):
            if self.stopping.is_set():
                return None
        with self.lock:
            if self.stopping.is_set() or (self.total is not None and self.next_i >= self.total):
                return None
            i = self.next_i
            self.next_i += 1
            self.inflight += 1
            return i

    def worker(self):
        c = h.Client(self.url, timeout=60)
        try:
            while True:
                i = self.take()
                if i is None:
                    break
                try:
                    self.one(c, i)
                except Exception as e:  # a bug in the parsing below must not hang the test
                    self.fail_ambiguous("client exception %r" % (e,))
                finally:
                    with self.lock:
                        self.inflight -= 1
        finally:
            c.close()

    def fail_refused(self, status, text, reused=None):
        with self.lock:
            self.refused.append((time.monotonic(), status, text))
            self.failed_on.append((time.monotonic(), threading.current_thread().name, reused))

    def fail_ambiguous(self, what, reused=None):
        with self.lock:
            self.ambiguous.append((time.monotonic(), what))
            self.failed_on.append((time.monotonic(), threading.current_thread().name, reused))

    def failure_summary(self, t0):
        """Printable breakdown of the failures: when (ms after t0), how many on a connection
        the client had just reopened, and how often one client failed."""
        with self.lock:
            rows = list(self.failed_on)
        if not rows:
            return "none"
        per_client = {}
        for _, name, _ in rows:
            per_client[name] = per_client.get(name, 0) + 1
        ms = sorted((t - t0) * 1000 for t, _, _ in rows)
        return ("%d failures from %.0f to %.0f ms after the kill (%d on connections opened "
                "after an earlier failure); %d clients failed, at most %d times each"
                % (len(rows), ms[0], ms[-1], sum(1 for r in rows if r[2] is False),
                   len(per_client), max(per_client.values())))

    def one(self, c, i):
        kind = i % 4
        model = MODELS[(i // 4) % len(MODELS)]
        key, key_id, _ = self.keys[(i // 12) % len(self.keys)]
        text = "load %d%s" % (i, " word" * (i % 9))
        openai = kind >= 2
        stream = kind % 2 == 1
        body = {"model": model, "max_tokens": 64, "messages": [{"role": "user", "content": text}]}
        if stream:
            body["stream"] = True
            if openai:
                body["stream_options"] = {"include_usage": True}
        path = "/v1/chat/completions" if openai else "/v1/messages"
        reused = c.conn.sock is not None
        try:
            r = c.request("POST", path, headers={"x-api-key": key}, body=body)
        except (OSError, http.client.HTTPException) as e:
            self.fail_ambiguous("%s: %r" % (path, e), reused)
            return
        if r.status != 200:
            ctype = r.headers.get("content-type", "")
            if r.status in (502, 504) and "json" not in ctype:
                # HAProxy's own page: the replica went away with the request in flight.
                self.fail_ambiguous("LB %d" % r.status, reused)
            else:
                self.fail_refused(r.status, r.text[:200], reused)
            return
        served = r.headers.get("x-api-proxy-model") or model
        parsed = self.parse(r, openai, stream)
        if parsed is None:
            self.fail_ambiguous("incomplete %s stream" % ("OpenAI" if openai else "Anthropic"),
                                reused)
            return
        tin, tout = parsed
        with self.lock:
            self.ok += 1
            t = self.tally.setdefault((key_id, served), [0, 0, 0])
            t[0] += 1
            t[1] += tin
            t[2] += tout

    @staticmethod
    def parse(r, openai, stream):
        """-> (input tokens, output tokens) as the client was told, or None when the answer
        is incomplete."""
        if not stream:
            doc = r.json()
            u = doc["usage"]
            if openai:
                return u["prompt_tokens"], u["completion_tokens"]
            return u["input_tokens"], u["output_tokens"]
        events = h.sse_json(h.parse_sse(r.body))
        if openai:
            if not events or events[-1][1] != "[DONE]":
                return None
            usage = None
            for _, d in events:
                if isinstance(d, dict):
                    if "error" in d:
                        return None
                    if d.get("usage"):
                        usage = d["usage"]
            if usage is None:
                return None
            return usage["prompt_tokens"], usage["completion_tokens"]
        names = [e for e, _ in events]
        if "message_stop" not in names or "error" in names:
            return None
        tin = tout = 0
        for ev, d in events:
            if ev == "message_start":
                tin = d["message"]["usage"]["input_tokens"]
            elif ev == "message_delta" and isinstance(d.get("usage"), dict):
                tout = d["usage"].get("output_tokens", tout)
        return tin, tout

    # ---- expected views ----
    def totals(self):
        req = sum(v[0] for v in self.tally.values())
        tin = sum(v[1] for v in self.tally.values())
        tout = sum(v[2] for v in self.tally.values())
        return req, tin, tout

    def per_key(self):
        out = {}
        for (kid, _), (n, i, o) in self.tally.items():
            e = out.setdefault(kid, [0, 0, 0])
            e[0] += n
            e[1] += i
            e[2] += o
        return out

    def per_model(self, key_id=None):
        """model -> (total tokens, requests), over every key or one."""
        out = {}
        for (kid, m), (n, i, o) in self.tally.items():
            if key_id is None or kid == key_id:
                t, r = out.get(m, (0, 0))
                out[m] = (t + i + o, r + n)
        return out


# --------------------------------------------------------------------------------------
# Usage views, aggregated so that they can be compared with the clients' tally
# --------------------------------------------------------------------------------------

def agg_days(doc):
    """/admin/usage/daily -> totals over every day, by_model and per key name."""
    tot = [0, 0, 0]
    models, keys = {}, {}
    for d in doc["days"]:
        tot[0] += d["total_requests"]
        tot[1] += d["total_input"]
        tot[2] += d["total_output"]
        for m, v in d.get("by_model", {}).items():
            t, r = models.get(m, (0, 0))
            models[m] = (t + v["total"], r + v["requests"])
        for k in d.get("keys", []):
            e = keys.setdefault(k["name"], [0, 0, 0])
            e[0] += k["requests"]
            e[1] += k["input"]
            e[2] += k["output"]
    return {"totals": tot, "models": models, "keys": keys}


def agg_hours(doc):
    models = {}
    for hr in doc["hours"]:
        for m, v in hr.get("by_model", {}).items():
            t, r = models.get(m, (0, 0))
            models[m] = (t + v["total"], r + v["requests"])
    return models


def minus_models(after, before):
    out = {}
    for m, (t, r) in after.items():
        bt, br = before.get(m, (0, 0))
        if (t - bt, r - br) != (0, 0):
            out[m] = (t - bt, r - br)
    return out


# --------------------------------------------------------------------------------------
# The test class
# --------------------------------------------------------------------------------------

class Fleet(fleet.FleetCase):
    """lib/fleet.py's fleet plus what the fallback and usage tests of this file need (also
    the base of test_cluster_sentinel.py)."""

    def fallback_doc(self, name):
        return self.admin_ok(self.replica_url[name], "/admin/fallback")

    def clear_marks(self):
        self.rc.cmd("DEL", PREFIX + "exhausted")
        self.rc.cmd("PUBLISH", PREFIX + "events", json.dumps({"type": "config"}))

    def wait_all_replicas(self, pred, what, timeout=10):
        def check():
            return all(pred(self.fallback_doc(n)) for n in REPLICAS)
        h.wait_until(check, timeout, interval=0.02, message=what)

    def healthy_quota(self):
        """The mock's default /health (every model at 100%) and no reactive marks, as seen by
        every replica."""
        self.mock("POST", "/_control/reset", {})
        self.clear_marks()
        self.wait_all_replicas(
            lambda d: not d["stale"] and tier_of(d, OPUS)["available"]
            and tier_of(d, GEMINI)["available"]
            and all(t["exhausted_until"] is None for t in d["tiers"]),
            "every replica: fresh quota, opus and gemini available, no marks")

    def watch_replicas(self, pred, t0, timeout=5.0, names=REPLICAS, path="/admin/fallback"):
        """Poll `path` of each replica (or poller) in `names` (one thread each) until
        pred(doc); return (threads, {name: seconds after t0 (time.monotonic())})."""
        seen = {}

        def watch(name):
            deadline = time.monotonic() + timeout
            url = self.replica_url.get(name) or self.poller_url[name]
            with h.Client(url, headers={"x-api-key": self.admin_key}) as c:
                while time.monotonic() < deadline:
                    try:
                        doc = c.get(path).json()
                    except (OSError, http.client.HTTPException, ValueError):
                        continue
                    if pred(doc):
                        seen[name] = time.monotonic() - t0
                        return
                    time.sleep(0.002)
        ths = [threading.Thread(target=watch, args=(n,), daemon=True) for n in names]
        for t in ths:
            t.start()
        return ths, seen

    def usage_snapshot(self, name="proxy1"):
        base = self.replica_url[name]
        return {"usage": self.admin_ok(base, "/admin/usage"),
                "daily": agg_days(self.admin_ok(base, "/admin/usage/daily")),
                "hourly": agg_hours(self.admin_ok(base, "/admin/usage/hourly"))}

    def usage_mismatches(self, load, before, keys, name):
        """Every usage view read through replica `name`, compared with the clients' tally
        (global views as the change since `before`, the fresh keys' views absolutely)."""
        base = self.replica_url[name]
        bad = []
        req, tin, tout = load.totals()
        u = self.admin_ok(base, "/admin/usage")
        b = before["usage"]
        got = (u["total_requests"] - b["total_requests"],
               u["total_input_tokens"] - b["total_input_tokens"],
               u["total_output_tokens"] - b["total_output_tokens"])
        if got != (req, tin, tout):
            bad.append("%s /admin/usage: requests/input/output +%r, clients %r"
                       % (name, got, (req, tin, tout)))

        days = agg_days(self.admin_ok(base, "/admin/usage/daily"))
        got = tuple(a - c for a, c in zip(days["totals"], before["daily"]["totals"]))
        if got != (req, tin, tout):
            bad.append("%s /admin/usage/daily totals: +%r, clients %r" % (name, got, (req, tin, tout)))
        got = minus_models(days["models"], before["daily"]["models"])
        if got != load.per_model():
            bad.append("%s /admin/usage/daily by_model: +%r, clients %r"
                       % (name, got, load.per_model()))
        per_key = load.per_key()
        for key, kid, kname in keys:
            exp = per_key.get(kid, [0, 0, 0])
            got = days["keys"].get(kname, [0, 0, 0])
            if list(got) != list(exp):
                bad.append("%s /admin/usage/daily keys[%s]: %r, clients %r" % (name, kname, got, exp))

        hours = agg_hours(self.admin_ok(base, "/admin/usage/hourly"))
        got = minus_models(hours, before["hourly"])
        if got != load.per_model():
            bad.append("%s /admin/usage/hourly by_model: +%r, clients %r"
                       % (name, got, load.per_model()))

        listed = {k["id"]: k for k in self.admin_ok(base, "/admin/keys")["keys"]}
        for key, kid, kname in keys:
            exp = per_key.get(kid, [0, 0, 0])
            k = listed.get(kid)
            got = None if k is None else [k["total_requests"], k["total_input"], k["total_output"]]
            if got != exp:
                bad.append("%s /admin/keys[%s]: requests/input/output %r, clients %r"
                           % (name, kname, got, exp))
            doc = self.admin_ok(base, "/admin/keys/%s/usage" % kid)["usage"]
            got = [doc["total_requests"], doc["total_input"], doc["total_output"]]
            if got != exp:
                bad.append("%s /admin/keys/%s/usage totals: %r, clients %r" % (name, kname, got, exp))
            dsum = [0, 0, 0]
            dmod, hmod = {}, {}
            for d in doc["daily"].values():
                dsum[0] += d["requests"]
                dsum[1] += d["input"]
                dsum[2] += d["output"]
                for m, v in d.get("by_model", {}).items():
                    t, r = dmod.get(m, (0, 0))
                    dmod[m] = (t + v["total"], r + v["requests"])
            for hr in doc["hourly"].values():
                for m, v in hr.get("by_model", {}).items():
                    t, r = hmod.get(m, (0, 0))
                    hmod[m] = (t + v["total"], r + v["requests"])
            tbm = {m: (v["total"], v["requests"]) for m, v in doc["total_by_model"].items()}
            exp_models = load.per_model(kid)
            if dsum != exp:
                bad.append("%s /admin/keys/%s/usage daily: %r, clients %r" % (name, kname, dsum, exp))
            for what, got in (("daily by_model", dmod), ("hourly by_model", hmod),
                              ("total_by_model", tbm)):
                if got != exp_models:
                    bad.append("%s /admin/keys/%s/usage %s: %r, clients %r"
                               % (name, kname, what, got, exp_models))
        return bad

    def assert_usage_exact(self, load, before, keys, replicas=REPLICAS):
        self.settle(replicas)
        bad = []
        for n in replicas:
            bad += self.usage_mismatches(load, before, keys, n)
        self.assertEqual(bad, [], "usage views differ from what the clients were served:\n  "
                         + "\n  ".join(bad))

    def redis_delta(self, before, name="proxy1"):
        u = self.admin_ok(self.replica_url[name], "/admin/usage")
        b = before["usage"]
        return (u["total_requests"] - b["total_requests"],
                u["total_input_tokens"] - b["total_input_tokens"],
                u["total_output_tokens"] - b["total_output_tokens"])


@unittest.skipIf(find_haproxy() is None,
                 "haproxy is not installed (Debian: apt-get install haproxy); the fleet test "
                 "needs it as the load balancer")
class ClusterTest(Fleet):

    # ==================================================================================
    # 1. usage is exact on every replica
    # ==================================================================================
    def test_1_load_usage_views_exact_on_every_replica(self):
        keys = self.create_keys("load", 4)
        before = self.usage_snapshot()
        mock_before = self.mock("GET", "/_stats")["total"]
        load = Load(self.lb, keys, CONCURRENCY, total=REQUESTS).start()
        load.join(timeout=600)
        rate = REQUESTS / load.elapsed()
        mock_total = self.mock("GET", "/_stats")["total"] - mock_before
        banner("%d requests (%d concurrent keep-alive clients, 4 kinds x %d models x %d keys) "
               "through HAProxy in %.1f s = %.0f requests/s; mock upstream saw %d; "
               "ok %d, refused %d, broken %d"
               % (REQUESTS, CONCURRENCY, len(MODELS), len(keys), load.elapsed(), rate, mock_total,
                  load.ok, len(load.refused), len(load.ambiguous)))
        if load.elapsed() > 90:
            note("WARNING: %d requests took %.0f s (> 90 s) on this machine; lower "
                 "CLUSTER_REQUESTS to shorten the run" % (REQUESTS, load.elapsed()))
        self.assertEqual((load.refused[:5], load.ambiguous[:5]), ([], []),
                         "no request may fail with a healthy fleet")
        self.assertEqual(load.ok, REQUESTS)
        t0 = time.monotonic()
        self.settle()
        req, tin, tout = load.totals()
        self.assert_usage_exact(load, before, keys)
        banner("every usage view (/admin/usage, /daily, /hourly, /admin/keys, /admin/keys/<id>/"
               "usage) on each of the 3 replicas = the clients' count: %d requests, %d input and "
               "%d output tokens (settled %.0f ms after the last answer)"
               % (req, tin, tout, (time.monotonic() - t0) * 1000))

    # ==================================================================================
    # 2. a disabled key is refused everywhere within 1 s
    # ==================================================================================
    def test_2_key_disabled_through_lb_refused_by_every_replica_within_1s(self):
        (key, kid, name), = self.create_keys("disable", 1)
        hdr = {"x-api-key": key}
        # Every replica has verified (and cached) the key before it is disabled.
        for n in REPLICAS:
            r = h.request("GET", self.replica_url[n] + "/v1/models", headers=hdr, timeout=10)
            self.assertEqual(r.status, 200, "%s: %s" % (n, r.text))
        seen = {}
        go = threading.Event()

        def poll(n):
            with h.Client(self.replica_url[n], headers=hdr) as c:
                go.wait(10)
                deadline = time.monotonic() + 5
                while time.monotonic() < deadline:
                    r = c.get("/v1/models")
                    if r.status == 403:
                        seen[n] = time.monotonic() - t0
                        return
        ths = [threading.Thread(target=poll, args=(n,), daemon=True) for n in REPLICAS]
        for t in ths:
            t.start()
        t0 = time.monotonic()
        go.set()
        st, doc = self.admin(self.lb, "POST", "/admin/keys/%s/disable" % kid)
        t_ack = time.monotonic() - t0
        for t in ths:
            t.join(10)
        self.assertEqual((st, doc.get("status")), (200, "disabled"), doc)
        banner("key disabled through the LB (answered in %.1f ms): refused (403) by %s"
               % (t_ack * 1000, ", ".join("%s after %.1f ms" % (n, seen[n] * 1000)
                                         for n in REPLICAS if n in seen)))
        self.assertEqual(sorted(seen), list(REPLICAS), "replicas that never refused the key")
        self.assertLess(max(seen.values()), 1.0)
        # and through the LB, whichever replica answers
        for _ in range(3):
            r = h.request("POST", self.lb + "/v1/messages", headers=hdr, timeout=10,
                          body={"model": SONNET, "max_tokens": 8,
                                "messages": [{"role": "user", "content": "x"}]})
            self.assertEqual(r.status, 403, r.text)

    # ==================================================================================
    # 3. fallback: proactive (quota drop) and reactive (429) reach every replica
    # ==================================================================================
    def test_3_quota_drop_moves_every_replica_to_fallback_within_one_interval(self):
        self.healthy_quota()
        low = {"status": "ok", "timestamp": "2026-01-01T00:00:00Z", "accounts": [{
            "email": "mock@example.com", "status": "ok", "modelRateLimits": {},
            "models": {OPUS: {"remaining": "1%", "remainingFraction": 0.01, "resetTime": None},
                       GEMINI: {"remaining": "100%", "remainingFraction": 1.0, "resetTime": None},
                       SONNET: {"remaining": "100%", "remainingFraction": 1.0, "resetTime": None}}}]}
        t0 = time.monotonic()
        ths, seen = self.watch_replicas(lambda d: not tier_of(d, OPUS)["available"], t0)
        self.mock("POST", "/_control/health", low)
        for t in ths:
            t.join(10)
        bound = INTERVAL + 0.1
        banner("quota drop at the upstream (opus 1%% < 5%%): off on %s (poll interval %.0f ms, "
               "bound %.0f ms)" % (", ".join("%s after %.0f ms" % (n, seen[n] * 1000)
                                            for n in REPLICAS if n in seen),
                                   INTERVAL * 1000, bound * 1000))
        self.assertEqual(sorted(seen), list(REPLICAS), "replicas that never left opus")
        self.assertLessEqual(max(seen.values()), bound)
        for _ in range(3):   # round robin: each replica once
            r = h.request("POST", self.lb + "/v1/messages", headers={"x-api-key": self.key()},
                          body={"model": OPUS, "max_tokens": 8,
                                "messages": [{"role": "user", "content": "x"}]}, timeout=10)
            self.assertEqual(r.status, 200, r.text)
            self.assertEqual(r.headers.get("x-api-proxy-model"), GEMINI, r.headers)
        self.healthy_quota()

    def test_4_reactive_trigger_on_one_replica_reaches_the_others(self):
        self.healthy_quota()
        self.mock("DELETE", "/_requests")
        self.mock("POST", "/_control/behaviour", {"model": OPUS, "status": 429, "count": 1})
        t0 = time.monotonic()
        ths, seen = self.watch_replicas(lambda d: tier_of(d, OPUS)["exhausted_until"] is not None,
                                        t0)
        r = h.request("POST", self.lb + "/v1/messages", headers={"x-api-key": self.key()},
                      body={"model": OPUS, "max_tokens": 8,
                            "messages": [{"role": "user", "content": "trigger"}]}, timeout=10)
        t_reply = time.monotonic() - t0
        for t in ths:
            t.join(10)
        self.assertEqual(r.status, 200, r.text)
        self.assertEqual(r.headers.get("x-api-proxy-model"), GEMINI, "retried on the next tier")
        self.assertEqual(sorted(seen), list(REPLICAS), "replicas that never showed the mark")
        first = min(seen.values())
        banner("reactive trigger (one 429 from opus; the client got gemini after %.1f ms): "
               "exhausted_until on %s; spread between the first and the last replica %.1f ms"
               % (t_reply * 1000, ", ".join("%s after %.1f ms" % (n, seen[n] * 1000)
                                           for n in REPLICAS),
                  (max(seen.values()) - first) * 1000))
        self.assertLessEqual(max(seen.values()), t_reply + INTERVAL + 0.1)
        # no replica sends opus anything now (round robin: each replica once)
        for _ in range(3):
            r = h.request("POST", self.lb + "/v1/messages", headers={"x-api-key": self.key()},
                          body={"model": OPUS, "max_tokens": 8,
                                "messages": [{"role": "user", "content": "after"}]}, timeout=10)
            self.assertEqual(r.headers.get("x-api-proxy-model"), GEMINI, r.headers)
        sent = [q["body"].get("model") for q in self.mock("GET", "/_requests")["requests"]
                if q["path"] == "/v1/messages" and isinstance(q["body"], dict)]
        self.assertEqual(sent.count(OPUS), 1, sent)
        self.healthy_quota()

    _key = None

    def key(self):
        if ClusterTest._key is None:
            ClusterTest._key = self.create_keys("misc", 1)[0][0]
        return ClusterTest._key

    # ==================================================================================
    # 5. poller failover
    # ==================================================================================
    def test_5_active_poller_killed_standby_takes_over_within_two_intervals(self):
        leader_key = PREFIX + "poller:leader"
        lead = h.wait_until(lambda: self.rc.cmd("GET", leader_key), 5, message="a leader")
        self.assertIn(lead, ("poller1", "poller2"))
        other = "poller2" if lead == "poller1" else "poller1"
        st = h.request("GET", self.poller_url[other] + "/health", timeout=5).json()
        self.assertFalse(st["leader"], st)
        t0 = time.monotonic()
        self.sigkill(lead)
        h.wait_until(lambda: self.rc.cmd("GET", leader_key) == other, 4 * INTERVAL + 2,
                     interval=0.002, message="%s to hold the lease" % other)
        took = time.monotonic() - t0
        h.wait_until(lambda: h.request("GET", self.poller_url[other] + "/health",
                                       timeout=5).json()["leader"], 5, interval=0.005)
        health_says = time.monotonic() - t0
        banner("active poller %s killed (SIGKILL): %s holds the lease after %.0f ms, its /health "
               "says leader after %.0f ms (interval %.0f ms, bound 2 intervals = %.0f ms)"
               % (lead, other, took * 1000, health_says * 1000, INTERVAL * 1000,
                  2 * INTERVAL * 1000))
        self.assertLessEqual(took, 2 * INTERVAL)
        # the new leader polls
        t_kill_ms = (time.time() - (time.monotonic() - t0)) * 1000
        h.wait_until(lambda: h.request("GET", self.poller_url[other] + "/health", timeout=5)
                     .json()["last_poll_ms"] > t_kill_ms, 5, interval=0.005,
                     message="%s to poll" % other)
        first_poll = time.monotonic() - t0
        banner("%s polled the upstream %.0f ms after the kill" % (other, first_poll * 1000))
        self.cluster("restart", lead)
        st = h.request("GET", self.poller_url[lead] + "/health", timeout=5).json()
        self.assertFalse(st["leader"], "the restarted poller must come back as the standby")
        self.assertEqual(self.rc.cmd("GET", leader_key), other)

    # ==================================================================================
    # 6. Redis restarted under load
    # ==================================================================================
    def test_6_redis_restarted_mid_load_nothing_lost_nothing_doubled(self):
        keys = self.create_keys("redis", 4)
        self.settle()
        before = self.usage_snapshot("proxy1")
        load = Load(self.lb, keys, CONCURRENCY).start()
        self.addCleanup(load.stop)
        load.wait_ok(1500)
        ok_before = load.count()
        t0 = time.monotonic()
        out = self.cluster("restart", "redis")
        restart_s = time.monotonic() - t0
        h.wait_until(lambda: len(self.live_replicas()) == 3, 20, interval=0.02,
                     message="every replica healthy again")
        healthy = time.monotonic() - t0
        ok_during = load.count() - ok_before
        load.wait_ok(load.count() + 1500, what="traffic after Redis is back")
        load.stop()
        self.settle()
        req, tin, tout = load.totals()
        got = self.redis_delta(before)
        banner("Redis restarted (SIGTERM, same AOF) after %d answers: `cluster.sh restart redis` "
               "took %.0f ms, every replica healthy again after %.0f ms, %d answers meanwhile; "
               "client failures: refused %d %r (HAProxy answers 503 while no replica is UP), "
               "broken %d; Redis counted %d requests / %d in / %d out, clients were served "
               "%d / %d / %d"
               % (ok_before, restart_s * 1000, healthy * 1000, ok_during, len(load.refused),
                  sorted({s for _, s, _ in load.refused}), len(load.ambiguous),
                  got[0], got[1], got[2], req, tin, tout))
        print("\n".join("  | " + line for line in out.splitlines()), flush=True)
        if load.ambiguous:
            # A request cut in flight may have been counted by its replica: bound it.
            note("%d requests broke in flight: checking %d <= counted <= %d only"
                 % (len(load.ambiguous), req, req + len(load.ambiguous)))
            self.assertGreaterEqual(got[0], req, "completed requests lost")
            self.assertLessEqual(got[0], req + len(load.ambiguous), "requests counted twice")
        else:
            self.assert_usage_exact(load, before, keys)

    # ==================================================================================
    # 7. a replica killed under load, then restarted
    # ==================================================================================
    def test_7_replica_killed_mid_load_lb_routes_around_and_counts_stay_exact(self):
        victim = "proxy2"
        keys = self.create_keys("kill", 4)
        self.settle()
        before = self.usage_snapshot("proxy1")
        load = Load(self.lb, keys, CONCURRENCY).start()
        self.addCleanup(load.stop)
        load.wait_ok(1500)
        st = h.request("GET", self.replica_url[victim] + "/health", timeout=5).json()
        lb_before = self.lb_stats_all()
        lb_inflight = int(lb_before["replicas/" + victim]["scur"] or 0)
        with load.lock:
            client_inflight = load.inflight
            ok_at_kill = load.ok
        t0 = time.monotonic()
        self.sigkill(victim)
        h.wait_until(lambda: self.lb_states().get(victim, "").startswith("DOWN"), 10,
                     interval=0.01, message="HAProxy to mark %s DOWN" % victim)
        marked_down = time.monotonic() - t0
        load.wait_ok(ok_at_kill + 1500, what="traffic to keep flowing around the dead replica")

        # Phase 1: what the kill itself cost. Quiesce, let the two survivors flush, compare.
        load.pause()
        failures = len(load.refused) + len(load.ambiguous)
        with load.lock:
            failed_on = list(load.failed_on)
        lb_after = self.lb_stats_all()
        vict = self.stats_diff(lb_after, lb_before, "replicas/" + victim,
                               ("srv_abrt", "eresp", "wredis", "wretr"))
        front = self.stats_diff(lb_after, lb_before, "api/FRONTEND", ("stot",))
        last_fail = max([t - t0 for t, _, _ in failed_on] or [0])
        self.settle([n for n in REPLICAS if n != victim])
        clients1 = load.totals()
        got1 = self.redis_delta(before)
        banner("replica %s killed (SIGKILL) under %d clients after %d answers (a moment before: "
               "%d requests in flight on it by its /health, %d sessions to it by HAProxy, %d "
               "counter updates not yet flushed; %d client requests in flight in all): HAProxy "
               "marked it DOWN after %.0f ms; client failures %d (refused %d %r, broken %d %r)"
               % (victim, CONCURRENCY, ok_at_kill, st.get("active_requests", -1), lb_inflight,
                  st.get("usage_pending", -1), client_inflight, marked_down * 1000, failures,
                  len(load.refused), sorted({s for _, s, _ in load.refused}),
                  len(load.ambiguous), sorted({w.split(":")[0] + ": " + w.split(": ")[-1][:40]
                                               for _, w in load.ambiguous})[:4]))
        banner("client failures: %s (%s the concurrency bound of %d). HAProxy counted "
               "srv_abrt %d / eresp %d on %s and redispatched %d requests to another replica "
               "after a refused connection; clients reopened %d connections"
               % (load.failure_summary(t0), "within" if failures <= CONCURRENCY else "ABOVE",
                  CONCURRENCY, vict["srv_abrt"], vict["eresp"], victim, vict["wredis"],
                  front["stot"]))
        banner("after the kill: Redis counted %d requests / %d in / %d out, clients were served "
               "%d / %d / %d: %d completed requests missing, %d counted that no client saw "
               "complete (%d requests failed at the clients)"
               % (got1 + clients1 + (max(0, clients1[0] - got1[0]),
                                     max(0, got1[0] - clients1[0]), failures)))

        # Phase 2: the replica comes back (same INSTANCE_ID and port) and takes traffic.
        t1 = time.monotonic()
        self.cluster("restart", victim)
        back = time.monotonic() - t1
        load.resume()
        n = load.count()
        t2 = time.monotonic()
        load.wait_ok(n + 1500, what="traffic with the replica back")
        # Long enough for the new process's flush batches to reach the numbers the old
        # one used under load.
        h.wait_until(lambda: time.monotonic() - t2 >= 2.0 and load.count() >= n + 1500, 30)
        load.stop()
        self.settle()
        clients2 = load.totals()
        got2 = self.redis_delta(before)
        d_got = tuple(a - b for a, b in zip(got2, got1))
        d_cli = tuple(a - b for a, b in zip(clients2, clients1))
        banner("%s restarted (`cluster.sh restart %s` %.0f ms, with the same INSTANCE_ID and "
               "port, UP in HAProxy); since then Redis counted %d requests / %d in / %d out, "
               "clients were served %d / %d / %d; %.0f requests/s overall"
               % ((victim, victim, back * 1000) + d_got + d_cli + (load.ok / load.elapsed(),)))

        self.assertEqual(load.refused, [], "a request refused by the fleet instead of rerouted")
        # What may fail: the requests in flight on the victim when it dies. Its death is not
        # instantaneous: while the kernel tears the process down (tens of ms, longer for an
        # ASan build) its listening socket still completes connections, so a client whose
        # request was cut can have its next one routed there too (seen: at most 2 per
        # client, 67-70 failures for 64 clients under ASan, 3-43 with the normal build).
        # Every failure must fall in that window, and none may be a refusal.
        self.assertLess(last_fail, 1.0, "client failures long after the kill: HAProxy did not "
                        "route around the dead replica")
        self.assertLessEqual(failures, 2 * CONCURRENCY,
                             "more client failures than requests that can be in flight")
        self.assertEqual(len(load.refused) + len(load.ambiguous), failures,
                         "client failures while the replica was restarted and back")
        with self.subTest("every completed request counted after the kill"):
            # Every request a client saw complete is counted; a request the replica completed
            # and counted just before the kill may not have reached its client (the race):
            # at most one per failed request.
            self.assertGreaterEqual(got1[0], clients1[0],
                                    "completed requests (2xx to the client) lost with the killed "
                                    "replica: %d of %d counted" % (got1[0], clients1[0]))
            self.assertGreaterEqual(got1[1], clients1[1], "input tokens lost")
            self.assertGreaterEqual(got1[2], clients1[2], "output tokens lost")
            self.assertLessEqual(got1[0], clients1[0] + failures,
                                 "more requests counted than completed or failed in flight: "
                                 "counted twice?")
        with self.subTest("counted exactly after the restart"):
            self.assertEqual(d_got, d_cli,
                             "requests served after %s was restarted, counted in Redis: %d of %d"
                             % (victim, d_got[0], d_cli[0]))

if __name__ == "__main__":
    unittest.main()
