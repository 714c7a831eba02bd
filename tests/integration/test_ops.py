"""Operating the fleet: Prometheus metrics on replicas and pollers, JSON logs with request
ids, and the deployment files (docker-compose.yml must pass `docker-compose config -q`)."""

import json
import os
import re
import shutil
import subprocess
import unittest

from lib import harness as h

BODY = {"model": "claude-sonnet-4-5", "max_tokens": 16, "messages": [{"role": "user", "content": "ops"}]}
CHAIN = {"enabled": True, "health_poll_interval_seconds": 0.3, "min_remaining_fraction": 0.05,
         "tiers": [{"name": "Opus", "model": "claude-opus-4-6-thinking", "type": "antigravity"},
                   {"name": "Gemini", "model": "gemini-3-pro-high", "type": "upstream"}]}


def scrape(url):
    r = h.request("GET", url + "/metrics", timeout=5)
    assert r.status == 200, r.status
    assert r.headers["content-type"].startswith("text/plain"), r.headers
    samples = {}
    for line in r.text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, value = line.rsplit(" ", 1)
        samples[name] = float(value)
    return r.text, samples


def value(samples, pattern):
    """Sum of the samples whose name+labels match the regex (0 when none)."""
    rx = re.compile(pattern)
    return sum(v for k, v in samples.items() if rx.fullmatch(k))


class MetricsTest(h.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.redis = cls.start_redis()
        cls.mock = cls.start_mock()
        port = h.free_port()
        cls.poller = cls.start_poller(cls.mock, cls.redis, fallback_config=CHAIN,
                                      env={"POLLER_PORT": str(port), "POLLER_BIND": "127.0.0.1"})
        cls.poller_url = "http://127.0.0.1:%d" % port
        h.wait_until(lambda: h.request("GET", cls.poller_url + "/health", timeout=2).status == 200, 10)
        cls.proxy = cls.start_proxy(cls.mock, cls.redis, fallback_config=CHAIN)
        cls.key = cls.proxy.create_key("metrics")

    def test_client_input_creates_no_series(self):
        # Regression: unauthenticated requests used to create one series per model name.
        def burst(start, n):
            for i in range(start, start + n):
                body = dict(BODY, model="probe-%d-%s" % (i, "x" * 20))
                r = h.request("POST", self.proxy.url + "/v1/messages", body=body)
                self.assertEqual(r.status, 401)
                h.request("POST", self.proxy.url + "/v1/messages", headers={"x-api-key": self.key},
                          body=dict(body, model="unknown-model-%d" % i))
        burst(0, 5)
        text0, _ = scrape(self.proxy.url)
        burst(5, 300)
        text1, after = scrape(self.proxy.url)
        self.assertNotIn("probe-", text1)
        self.assertNotIn("unknown-model-", text1)
        self.assertEqual(len(text1.splitlines()), len(text0.splitlines()),
                         "series grew with client input")
        denied = r'ap_requests_total\{route="messages",status="401",tier="",model=""\}'
        self.assertGreaterEqual(value(after, denied), 305)

    def test_replica_metrics_count_requests_tokens_and_latency(self):
        _, before = scrape(self.proxy.url)
        for stream in (False, True):
            r = h.request("POST", self.proxy.url + "/v1/messages", headers={"x-api-key": self.key},
                          body=dict(BODY, stream=stream))
            self.assertEqual(r.status, 200)
        self.assertEqual(h.request("POST", self.proxy.url + "/v1/messages", body=BODY).status, 401)
        text, after = scrape(self.proxy.url)
        # A model outside the chain is labelled "other": model names are client input.
        ok = r'ap_requests_total\{route="messages",status="200",tier="upstream",model="other"\}'
        self.assertEqual(value(after, ok) - value(before, ok), 2, text)
        denied = r'ap_requests_total\{route="messages",status="401",.*\}'
        self.assertEqual(value(after, denied) - value(before, denied), 1)
        self.assertGreater(value(after, r'ap_tokens_total\{kind="output"\}'),
                           value(before, r'ap_tokens_total\{kind="output"\}'))
        count = r'ap_upstream_seconds_count\{tier="upstream"\}'
        self.assertEqual(value(after, count) - value(before, count), 2)
        self.assertIn('ap_upstream_ttfb_seconds_bucket{tier="upstream",le="+Inf"}', text)
        for gauge in ("ap_active_requests", "ap_active_streams", "ap_usage_pending", "ap_redis_up",
                      "ap_redis_connects_total", "ap_redis_errors_total"):
            self.assertIn(gauge, after, gauge)
        self.assertEqual(after["ap_redis_up"], 1)
        # Families are announced once each.
        self.assertEqual(text.count("# TYPE ap_requests_total counter"), 1)

    def test_fallback_switches_are_counted(self):
        _, before = scrape(self.proxy.url)
        self.mock.behaviour(model="claude-opus-4-6-thinking", status=429, count=1,
                            body={"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}})
        self.addCleanup(self.mock.reset)
        r = h.request("POST", self.proxy.url + "/v1/messages", headers={"x-api-key": self.key},
                      body=dict(BODY, model="claude-opus-4-6-thinking"))
        self.assertEqual((r.status, r.headers.get("x-api-proxy-model")), (200, "gemini-3-pro-high"))
        _, after = scrape(self.proxy.url)
        sw = r'ap_fallback_switches_total\{kind="reactive"\}'
        self.assertEqual(value(after, sw) - value(before, sw), 1)

    def test_poller_metrics(self):
        h.wait_until(lambda: scrape(self.poller_url)[1].get("ap_poller_polls_total", 0) >= 2, 10)
        text, s = scrape(self.poller_url)
        self.assertEqual(s["ap_poller_leader"], 1, text)
        self.assertEqual(s["ap_poller_poll_failures_total"], 0)
        self.assertEqual(s['ap_quota_remaining_fraction{model="claude-opus-4-6-thinking"}'], 1)
        self.assertEqual(s['ap_quota_available{model="claude-opus-4-6-thinking"}'], 1)
        self.assertGreater(s["ap_poller_last_poll_timestamp_seconds"], 1.7e9)


class LogsTest(h.TestCase):
    def test_every_log_line_is_json_and_requests_carry_their_id(self):
        redis = self.start_redis()
        mock = self.start_mock()
        proxy = self.start_proxy(mock, redis, log_level="info")
        key = proxy.create_key("logs")
        rid = "client-req-0123456789"
        r = h.request("POST", proxy.url + "/v1/messages", headers={"x-api-key": key, "x-request-id": rid},
                      body=BODY)
        self.assertEqual((r.status, r.headers.get("x-request-id")), (200, rid))
        generated = h.request("POST", proxy.url + "/v1/messages", headers={"x-api-key": key}, body=BODY)
        gen_rid = generated.headers.get("x-request-id")
        self.assertRegex(gen_rid or "", r"^[0-9a-f]{32}$")
        # Upstream got the same ids.
        seen = [q["headers"].get("x-request-id") for q in mock.requests()]
        self.assertIn(rid, seen)
        self.assertIn(gen_rid, seen)

        def request_lines():
            out = []
            for line in proxy.log().splitlines():
                if line.startswith("{"):
                    doc = json.loads(line)
                    if doc.get("msg") == "request":
                        out.append(doc)
            return out

        h.wait_until(lambda: len(request_lines()) >= 2, 5)
        for line in proxy.log().splitlines():
            if not line.startswith("{"):
                continue  # the harness's own "=== start" markers
            doc = json.loads(line)
            for field in ("ts", "level", "svc", "msg"):
                self.assertIn(field, doc, line)
        rids = {d.get("rid") for d in request_lines()}
        self.assertIn(rid, rids)
        self.assertIn(gen_rid, rids)
        self.assertNotIn(key, proxy.log())


class DeployFilesTest(unittest.TestCase):
    def test_docker_compose_config_is_valid(self):
        exe = shutil.which("docker-compose")
        if exe is None:
            self.skipTest("docker-compose is not installed (scripts/deps.sh test installs it)")
        env = dict(os.environ, ADMIN_KEY="sk-admin-test")
        r = subprocess.run([exe, "config", "-q"], cwd=h.ROOT, env=env, capture_output=True, text=True,
                           timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        # The fleet the issue asks for: redis, two pollers, three replicas, a load balancer on 8180.
        full = subprocess.run([exe, "config"], cwd=h.ROOT, env=env, capture_output=True, text=True, timeout=60)
        self.assertEqual(full.returncode, 0, full.stderr)
        for svc in ("redis:", "poller1:", "poller2:", "proxy1:", "proxy2:", "proxy3:", "lb:"):
            self.assertIn("  " + svc, full.stdout)
        self.assertIn("8180", full.stdout)

    def test_docker_compose_sentinel_variant_is_valid(self):
        exe = shutil.which("docker-compose")
        if exe is None:
            self.skipTest("docker-compose is not installed (scripts/deps.sh test installs it)")
        env = dict(os.environ, ADMIN_KEY="sk-admin-test")
        files = ["-f", "docker-compose.yml", "-f", "docker-compose.sentinel.yml"]
        r = subprocess.run([exe] + files + ["config"], cwd=h.ROOT, env=env, capture_output=True,
                           text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        # One master, one replica, three sentinels; every replica and poller asks them.
        for svc in ("redis:", "redis-replica:", "sentinel1:", "sentinel2:", "sentinel3:"):
            self.assertIn("\n  " + svc, r.stdout)
        self.assertEqual(r.stdout.count("REDIS_SENTINELS: sentinel1:26379,sentinel2:26379,sentinel3:26379"), 5)
        self.assertIn("--replicaof", r.stdout)
        conf = (h.ROOT / "deploy" / "sentinel.conf").read_text()
        self.assertIn("sentinel monitor mymaster redis 6379 2", conf)

    def test_dockerfile_copies_only_what_exists(self):
        text = (h.ROOT / "Dockerfile").read_text()
        self.assertIn("USER apiproxy", text)
        for src in re.findall(r"^COPY (?!--from)(\S+)", text, re.M):
            self.assertTrue((h.ROOT / src).exists(), src)


if __name__ == "__main__":
    unittest.main()
