"""The docker-compose fleet for real: docker-compose.yml itself, brought up with Debian's
podman and podman-compose (tests/compose/podman.sh: local stand-ins for the public images,
the repository's Dockerfile built into api-proxy:latest).

    python3 tests/integration/runner.py tests/compose/test_compose.py

What runs is what a user runs: Redis with AOF on a volume, two pollers, three replicas, HAProxy
with deploy/haproxy.cfg published on a free port (LB_PORT), and the demo upstream. All client
traffic goes through HAProxy; each replica is also read directly, by its service name, from a
container on the fleet's network (the demo upstream's, which has python3). Checked:

  - the load balancer answers and spreads requests over the three replicas;
  - the images behave as the compose file expects: Redis' healthcheck command, AOF on, and
    every daemon running as its own non-root user;
  - exactly one active poller, whose quota poll of the upstream every replica reports;
  - a key created through HAProxy works on every replica, and usage read through each replica
    is identical and exact after Anthropic, OpenAI, streamed and plain requests;
  - a replica container restarted under load: no request fails, the new replica serves, usage
    stays exact and identical;
  - the Redis container restarted: the AOF keeps every count.

Skipped (with the reason) when podman cannot run containers here (tests/compose/podman.sh
check). The fleet is torn down, volume and network included, whatever happens.
"""

import json
import os
import secrets
import subprocess
import sys
import threading
import time
import unittest
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from lib import harness as h  # noqa: E402

PODMAN_SH = HERE / "podman.sh"
PROJECT = "apcompose%d" % os.getpid()
SERVICES = ["redis", "poller1", "poller2", "proxy1", "proxy2", "proxy3", "lb", "upstream"]
REPLICAS = ["proxy1", "proxy2", "proxy3"]
MODEL = "claude-sonnet-4-5"


def sh(*args, check=True, timeout=600, env=None):
    """Runs podman.sh with args; returns stdout. Raises with stderr on failure."""
    r = subprocess.run([str(PODMAN_SH)] + list(args), capture_output=True, text=True,
                       timeout=timeout, env=env)
    if check and r.returncode != 0:
        raise AssertionError("podman.sh %s failed (%d):\n%s%s" % (" ".join(args), r.returncode,
                                                                   r.stdout[-2000:], r.stderr[-4000:]))
    return r.stdout


class ComposeFleetTest(h.TestCase):
    timings = {}

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        r = subprocess.run([str(PODMAN_SH), "check"], capture_output=True, text=True, timeout=900)
        if r.returncode != 0:
            raise unittest.SkipTest("podman cannot run containers here: " +
                                    (r.stdout.strip() or r.stderr.strip()[-300:]))
        cls.remove_stale_fleets()
        t = time.monotonic()
        sh("images", timeout=1800)
        cls.timings["images"] = time.monotonic() - t
        cls.admin_key = "sk-admin-" + secrets.token_hex(12)
        cls.lb_port = h.free_port()
        cls.env = dict(os.environ, ADMIN_KEY=cls.admin_key, LB_PORT=str(cls.lb_port), LOG_LEVEL="info")
        for k in ("UPSTREAM_URL", "UPSTREAM_API_KEY", "FALLBACK_FILE", "REDIS_URL"):
            cls.env.pop(k, None)
        cls.lb = "http://127.0.0.1:%d" % cls.lb_port
        cls.addClassCleanup(cls.down)
        t = time.monotonic()
        sh("compose", "-p", PROJECT, "up", "-d", env=cls.env, timeout=300)
        cls.names = {s: cls.container(s) for s in SERVICES}
        h.wait_until(lambda: cls.lb_health_all(), timeout=60, interval=0.25,
                     message="HAProxy answering /health with all three replicas in rotation")
        cls.timings["up"] = time.monotonic() - t

    @classmethod
    def down(cls):
        t = time.monotonic()
        if cls._failed or cls._tests_run == 0:
            cls.dump_logs()
        sh("compose", "-p", PROJECT, "down", "-v", "-t", "5", check=False, env=cls.env, timeout=300)
        sh("podman", "network", "rm", "-f", PROJECT + "_default", check=False)
        sh("podman", "volume", "rm", "-f", PROJECT + "_redis-data", check=False)
        left = sh("podman", "ps", "-aq", "--filter", "label=io.podman.compose.project=" + PROJECT, check=False)
        cls.timings["down"] = time.monotonic() - t
        print("  compose timings: " + ", ".join("%s %.1fs" % kv for kv in cls.timings.items()), flush=True)
        if left.strip():
            raise AssertionError("containers left after down: %s" % left.split())

    @staticmethod
    def remove_stale_fleets():
        """Fleets of earlier runs that were killed before their teardown (the project
        name carries the test's pid; a live one belongs to a run still going)."""
        out = sh("podman", "ps", "-a", "--format", '{{index .Labels "io.podman.compose.project"}}', check=False)
        for project in sorted(set(out.split())):
            pid = project[len("apcompose"):]
            if not project.startswith("apcompose") or not pid.isdigit() or os.path.exists("/proc/" + pid):
                continue
            ids = sh("podman", "ps", "-aq", "--filter", "label=io.podman.compose.project=" + project).split()
            sh("podman", "rm", "-f", "-t", "2", *ids, check=False)
            sh("podman", "network", "rm", "-f", project + "_default", check=False)
            sh("podman", "volume", "rm", "-f", project + "_redis-data", check=False)

    @classmethod
    def dump_logs(cls):
        for s, name in getattr(cls, "names", {}).items():
            r = subprocess.run([str(PODMAN_SH), "podman", "logs", name], capture_output=True, text=True)
            lines = (r.stdout + r.stderr).splitlines()
            # HAProxy logs every request: its failures are what matters.
            shown = [l for l in lines if " 50" in l or "WARNING" in l or "ALERT" in l][-20:] if s == "lb" else lines[-15:]
            print("  --- %s (%s) ---\n%s" % (s, name, "\n".join("  | " + l for l in shown)))

    # ---- helpers ----
    @classmethod
    def container(cls, service):
        out = sh("podman", "ps", "-a", "--format", "{{.Names}}",
                 "--filter", "label=io.podman.compose.project=" + PROJECT,
                 "--filter", "label=com.docker.compose.service=" + service).split()
        assert len(out) == 1, "service %s: containers %r" % (service, out)
        return out[0]

    @classmethod
    def lb_health_all(cls):
        seen = set()
        for _ in range(9):
            r = h.request("GET", cls.lb + "/health", timeout=5)
            if r.status != 200:
                return False
            seen.add(r.json()["instance"])
        return seen if len(seen) == 3 else False

    def podman(self, *args, check=True):
        return sh("podman", *args, check=check)

    def inside(self, urls, key=None):
        """GETs each URL from inside the fleet's network (the upstream container); JSON list."""
        script = ("import json,sys,urllib.request\n"
                  "out=[]\n"
                  "for u in json.loads(sys.argv[1]):\n"
                  "    q=urllib.request.Request(u, headers={'x-api-key': sys.argv[2]})\n"
                  "    with urllib.request.urlopen(q, timeout=10) as r: out.append(json.load(r))\n"
                  "print(json.dumps(out))\n")
        out = self.podman("exec", self.names["upstream"], "python3", "-c", script,
                          json.dumps(urls), key or self.admin_key)
        return json.loads(out)

    def per_replica(self, path):
        return self.inside(["http://%s:8180%s" % (r, path) for r in REPLICAS])

    def admin(self, method, path, body=None):
        return h.request(method, self.lb + path, headers={"x-api-key": self.admin_key}, body=body)

    def call(self, i):
        """One client request through HAProxy; kinds rotate (Anthropic/OpenAI, plain/stream)."""
        kind = i % 4
        hdrs = {"x-api-key": self.key, "anthropic-version": "2023-06-01"}
        if kind < 2:
            body = {"model": MODEL, "max_tokens": 50, "stream": kind == 1,
                    "messages": [{"role": "user", "content": "hello %d" % i}]}
            r = h.request("POST", self.lb + "/v1/messages", headers=hdrs, body=body)
        else:
            body = {"model": MODEL, "max_tokens": 50, "stream": kind == 3,
                    "messages": [{"role": "user", "content": "hello %d" % i}]}
            r = h.request("POST", self.lb + "/v1/chat/completions", headers=hdrs, body=body)
        if r.status != 200:
            raise AssertionError("request %d (%d): %d %s" % (i, kind, r.status, r.text[:300]))
        if kind in (1, 3):
            self.assertIn(b"[DONE]" if kind == 3 else b"message_stop", r.body)
        else:
            doc = r.json()
            self.assertEqual(doc["model"], MODEL)
        return r

    def assert_usage_identical(self, requests):
        views = ["/admin/usage", "/admin/usage/daily", "/admin/keys/%s/usage" % self.key_id]
        for path in views:
            docs = self.per_replica(path)
            self.assertEqual(docs[0], docs[1], path)
            self.assertEqual(docs[0], docs[2], path)
        total = self.per_replica("/admin/usage")[0]
        self.assertEqual(total["total_requests"], requests)
        key = self.per_replica("/admin/keys/%s/usage" % self.key_id)[0]
        self.assertEqual(key["usage"]["total_requests"], requests)
        return total

    # ---- the checks, in order ----
    def test_1_balancer_spreads_over_three_replicas(self):
        seen = self.lb_health_all()
        self.assertEqual(len(seen), 3)
        self.assertEqual(sorted(i.split("-")[0] for i in seen), REPLICAS)

    def test_2_images_behave_as_the_compose_file_expects(self):
        # The compose file's healthcheck command, run by podman itself.
        self.podman("healthcheck", "run", self.names["redis"])
        aof = self.podman("exec", self.names["redis"], "redis-cli", "CONFIG", "GET", "appendonly").split()
        self.assertEqual(aof, ["appendonly", "yes"])
        self.assertIn("appendonlydir", self.podman("exec", self.names["redis"], "ls", "/data"))
        users = {s: self.podman("top", self.names[s], "user").split()[1:]
                 for s in ("redis", "lb", "proxy1", "poller1")}
        self.assertEqual(set(users["redis"]), {"redis"}, users)
        self.assertEqual(set(users["lb"]), {"haproxy"}, users)
        self.assertEqual(set(users["proxy1"]), {"apiproxy"}, users)
        self.assertEqual(set(users["poller1"]), {"apiproxy"}, users)

    def test_3_one_active_poller_seen_by_every_replica(self):
        leader = self.podman("exec", self.names["redis"], "redis-cli", "GET", "ap:poller:leader").strip()
        self.assertIn(leader, ("poller1", "poller2"))
        docs = h.wait_until(lambda: (lambda d: all(x["last_health_poll"] for x in d) and d)(
            self.per_replica("/admin/fallback")), timeout=15, message="a quota poll on every replica")
        def timeless(x):  # ages move with the clock; the rest must match exactly
            if isinstance(x, dict):
                return {k: timeless(v) for k, v in x.items() if not k.endswith("age_seconds")}
            return [timeless(v) for v in x] if isinstance(x, list) else x
        docs = [timeless(d) for d in docs]
        self.assertEqual(docs[0], docs[1])
        self.assertEqual(docs[0], docs[2])
        self.assertTrue(all(t["remaining"] != "unknown" for t in docs[0]["tiers"] if t["type"] != "external"),
                        docs[0])

    def test_4_usage_identical_through_each_replica(self):
        r = self.admin("POST", "/admin/keys", {"name": "compose"})
        self.assertEqual(r.status, 200, r.text)
        type(self).key = r.json()["api_key"]
        type(self).key_id = r.json()["id"]
        n = 40
        served = set()
        for i in range(n):
            served.add(self.call(i).headers.get("x-api-proxy-tier", ""))
        type(self).requests = n
        total = self.assert_usage_identical(n)
        self.assertGreater(total["total_input_tokens"], 0)
        self.assertGreater(total["total_output_tokens"], 0)
        # The key works on every replica directly, too (each verified it in Redis); a
        # passed-through 2xx counts as a request like any other.
        self.inside(["http://%s:8180/v1/models" % r for r in REPLICAS], key=self.key)
        type(self).requests += len(REPLICAS)
        self.assert_usage_identical(self.requests)

    def test_5_replica_restarted_under_load(self):
        before = self.lb_health_all()
        errors, done = [], []
        stop = threading.Event()

        def load():
            i = 1000
            while not stop.is_set():
                try:
                    self.call(i)
                    done.append(i)
                except Exception as e:  # every failure is reported below
                    errors.append(repr(e))
                i += 1

        threads = [threading.Thread(target=load) for _ in range(4)]
        for t in threads:
            t.start()
        try:
            time.sleep(1)
            t0 = time.monotonic()
            sh("compose", "-p", PROJECT, "restart", "proxy2", env=self.env, timeout=120)
            self.timings["restart proxy2"] = time.monotonic() - t0
            after = h.wait_until(lambda: (lambda s: s if s and s != before else False)(self.lb_health_all()),
                                 timeout=30, interval=0.25, message="the restarted replica back in rotation")
            time.sleep(1)
        finally:
            stop.set()
            for t in threads:
                t.join()
        self.assertEqual(errors, [], "requests failed while proxy2 restarted")
        new = after - before
        self.assertEqual(len(new), 1, (before, after))
        self.assertTrue(next(iter(new)).startswith("proxy2"), new)
        type(self).requests += len(done)
        self.assertGreater(len(done), 20)
        self.assert_usage_identical(self.requests)

    def test_6_redis_restart_keeps_every_count(self):
        before = self.per_replica("/admin/usage")[0]
        sh("compose", "-p", PROJECT, "restart", "redis", env=self.env, timeout=120)
        # The replicas reconnect; the counts come back from the AOF.
        h.wait_until(lambda: self.per_replica("/admin/usage")[0] == before, timeout=30, interval=0.25,
                     message="usage after the Redis restart equal to before")
        self.call(7)
        self.assert_usage_identical(self.requests + 1)


if __name__ == "__main__":
    unittest.main()
