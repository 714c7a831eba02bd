"""The admin console in a real browser, against the local fleet behind HAProxy.

tests/cluster/cluster.sh starts the fleet (Redis, the demo upstream, two pollers, three
replicas, HAProxy) on free ports; some usage history is imported so the charts have
something to draw; then tests/console/console_test.mjs drives Debian's chromium with
playwright-core through the load balancer (sign-in, overview, keys, usage explorer, a
phone-width pass, keyboard, sign-out; no console errors and no CSP violations
allowed). This file checks the outcome through the admin API as well.

Screenshots of each page (and the exported CSV) are written to $AP_ARTIFACT_DIR/console
(default var/test-artifacts/console); docs/img/console-overview.png is such a screenshot.

playwright-core is pinned in tests/console/package.json (+ package-lock.json) and
installed with `npm ci` on first use; chromium comes from Debian (scripts/deps.sh test).
Without node or chromium the class is skipped.

    tests/integration/runner.py tests/integration/test_console.py
"""

import datetime
import json
import os
import shutil
import subprocess
import sys
import unittest

from lib import harness as h

CONSOLE_DIR = h.ROOT / "tests" / "console"
CLUSTER_SH = h.ROOT / "tests" / "cluster" / "cluster.sh"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
NODE_TIMEOUT = 240
MODELS = ("claude-opus-4-6-thinking", "gemini-3-pro-high", "kimi-k2.5")
# What the browser's requests use: the chain's first tier, so the charts show it beside the
# history, and the tier a request for the second one falls back to.
MODEL = "claude-opus-4-6-thinking"
# PRICES_CONFIG of the fleet: MODEL is priced (list prices, USD per million tokens), the
# imported history is not, so the cost card appears only once the browser's requests ran.
PRICES = {MODEL: {"input": 15, "output": 75, "cache_read": 1.5, "cache_write": 18.75}}


def artifact_dir():
    base = os.environ.get("AP_ARTIFACT_DIR") or str(h.ROOT / "var" / "test-artifacts")
    return os.path.join(base, "console")


def _installed_matches_pins():
    try:
        pins = json.loads((CONSOLE_DIR / "package.json").read_text())["dependencies"]
        return all(json.loads((CONSOLE_DIR / "node_modules" / n / "package.json").read_text()).get("version") == v
                   for n, v in pins.items())
    except (OSError, ValueError, KeyError):
        return False


def ensure_browser():
    """Install playwright-core if needed; SkipTest when node, npm or chromium are absent."""
    if shutil.which("node") is None:
        raise unittest.SkipTest("node is not installed (scripts/deps.sh test installs it)")
    if not os.access(CHROMIUM, os.X_OK):
        raise unittest.SkipTest("%s is not installed (Debian: apt-get install chromium; "
                                "scripts/deps.sh test installs it)" % CHROMIUM)
    if _installed_matches_pins():
        return
    if shutil.which("npm") is None:
        raise unittest.SkipTest("npm is not installed and tests/console/node_modules is missing")
    p = subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=str(CONSOLE_DIR),
                       capture_output=True, text=True, timeout=600)
    if p.returncode != 0 or not _installed_matches_pins():
        raise RuntimeError("`npm ci` in %s failed (exit %d):\n%s\n%s"
                           % (CONSOLE_DIR, p.returncode, p.stdout[-3000:], p.stderr[-3000:]))


def history(today, hour_now):
    """A keys.json with 13 days of usage before today and today's hours so far: three
    teams on three models, so the overview's charts look like a gateway in use."""
    keys = {}
    for n, (name, scale) in enumerate((("team-alpha", 9), ("team-beta", 5), ("ci-bot", 2))):
        daily, hourly = {}, {}
        for back in range(13, 0, -1):
            day = (today - datetime.timedelta(days=back)).isoformat()
            by_model = {}
            for j, model in enumerate(MODELS):
                req = (scale * (3 + (back * 7 + j * 5 + n) % 11)) // (j + 1)
                by_model[model] = {"total": req * (900 + 300 * j), "requests": req}
            req = sum(m["requests"] for m in by_model.values())
            tot = sum(m["total"] for m in by_model.values())
            daily[day] = {"input": tot * 3 // 4, "output": tot - tot * 3 // 4, "requests": req, "by_model": by_model}
        for hour in range(0, hour_now + 1):
            h_models = {m: {"total": (3 + (hour * 5 + j) % 7) * 300 * scale // (j + 1),
                            "requests": (3 + (hour * 5 + j) % 7) * scale // (j + 1) // 3 + 1}
                        for j, m in enumerate(MODELS)}
            hourly["%s %02d:00" % (today.isoformat(), hour)] = {"by_model": h_models}
        # Today's day entry is the sum of its hours.
        today_models = {}
        for hr in hourly.values():
            for model, v in hr["by_model"].items():
                t = today_models.setdefault(model, {"total": 0, "requests": 0})
                t["total"] += v["total"]
                t["requests"] += v["requests"]
        tot = sum(m["total"] for m in today_models.values())
        daily[today.isoformat()] = {"input": tot * 3 // 4, "output": tot - tot * 3 // 4,
                                    "requests": sum(m["requests"] for m in today_models.values()),
                                    "by_model": today_models}
        keys["sk-console-history-%s-000000000000000000%d" % (name, n)] = {
            "name": name, "enabled": 1, "created": "%sT09:00:00+00:00" % (today - datetime.timedelta(days=30)),
            "usage": {"total_input": sum(d["input"] for d in daily.values()),
                      "total_output": sum(d["output"] for d in daily.values()),
                      "total_requests": sum(d["requests"] for d in daily.values()),
                      "last_used": "%sT%02d:10:00+00:00" % (today.isoformat(), hour_now),
                      "daily": daily, "hourly": hourly}}
    return {"keys": keys}


@unittest.skipIf(shutil.which("haproxy") is None and not os.path.exists("/usr/sbin/haproxy"),
                 "haproxy is not installed (the fleet's load balancer)")
class ConsoleBrowserTest(h.TestCase):
    @classmethod
    def setUpClass(cls):
        ensure_browser()  # before the harness creates anything: a skip leaves nothing behind
        super().setUpClass()
        cls.dir = cls.workdir / "cluster"
        names = ("LB", "LB_STATS", "REDIS", "UPSTREAM", "PROXY1", "PROXY2", "PROXY3", "POLLER1", "POLLER2")
        ports = set()
        while len(ports) < len(names):
            ports.add(h.free_port())
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CLUSTER_", "LARK_"))}
        for k in ("ADMIN_KEY", "KEYS_FILE", "REDIS_PREFIX", "USAGE_TZ", "FLEET_HEARTBEAT_MS"):
            env.pop(k, None)
        env.update({"CLUSTER_%s_PORT" % n: str(p) for n, p in zip(names, sorted(ports))})
        env.update({"AP_BIN": str(h.bin_dir()), "PYTHON": sys.executable, "CLUSTER_POLL_INTERVAL": "1",
                    "CLUSTER_STOP_TIMEOUT": "10", "SHUTDOWN_GRACE_SECONDS": "5", "LOG_LEVEL": "info",
                    "USAGE_TZ": "+00:00", "FLEET_HEARTBEAT_MS": "1000"})
        if os.path.exists("/usr/sbin/haproxy") and shutil.which("haproxy") is None:
            env["HAPROXY"] = "/usr/sbin/haproxy"
        env["PRICES_CONFIG"] = str(h.write_json(cls.workdir / "prices.json", PRICES))
        cls.env = env
        cls.addClassCleanup(cls.stop_fleet)
        cls.cluster("start")
        info = json.loads((cls.dir / "cluster.json").read_text())
        cls.lb, cls.admin_key, cls.mock_url = info["lb_url"], info["admin_key"], info["upstream_url"]
        cls.replicas = sorted(n for n in info["components"] if n.startswith("proxy"))

    @classmethod
    def cluster(cls, *args):
        r = subprocess.run([str(CLUSTER_SH)] + list(args) + ["--dir", str(cls.dir)], env=cls.env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120)
        if r.returncode != 0:
            raise AssertionError("cluster.sh %s failed (%d):\n%s" % (" ".join(args), r.returncode, r.stdout))
        return r.stdout

    @classmethod
    def stop_fleet(cls):
        if (cls.dir / "cluster.env").exists():
            cls.cluster("stop")
        logs = cls.dir / "logs"
        reports = []
        for f in sorted(logs.glob("proxy*.log")) if logs.is_dir() else []:
            text = f.read_text(errors="replace")
            if cls._failed:
                print("  --- %s (last 15 lines) ---\n%s" % (f, "\n".join(text.splitlines()[-15:])), flush=True)
            for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"):
                if marker in text:
                    reports.append("%s: %s" % (f, text[text.index(marker):][:2000]))
        if reports:
            cls._failed = True
            raise AssertionError("sanitizer reports in the fleet's logs:\n" + "\n".join(reports))

    def admin(self, method, path, body=None):
        r = h.request(method, self.lb + path, headers={"x-api-key": self.admin_key}, body=body)
        self.assertEqual(r.status, 200, "%s %s: %s" % (method, path, r.text))
        return r.json()

    def test_console_in_a_browser(self):
        fleet = self.admin("GET", "/admin/fleet")
        today = datetime.date.fromisoformat(fleet["today"])
        imported = self.admin("POST", "/admin/import", history(today, int(fleet["now"][11:13])))
        self.assertEqual(imported["imported"], 3, imported)
        out_dir = artifact_dir()
        shutil.rmtree(out_dir, ignore_errors=True)
        env = dict(os.environ, BASE=self.lb, ADMIN_KEY=self.admin_key, ARTIFACTS=out_dir,
                   REPLICAS=",".join(self.replicas), MODEL=MODEL, MOCK=self.mock_url, CHROMIUM=CHROMIUM, NODE_NO_WARNINGS="1")
        cmd = ["node", str(CONSOLE_DIR / "console_test.mjs")]
        try:
            p = subprocess.run(cmd, cwd=str(CONSOLE_DIR), env=env, capture_output=True, text=True,
                               timeout=NODE_TIMEOUT)
        except subprocess.TimeoutExpired as e:
            self.fail("console_test.mjs timed out after %ds:\n%s\n%s" % (NODE_TIMEOUT, e.stdout, e.stderr))
        lines = [json.loads(x) for x in p.stdout.splitlines() if x.startswith("{")]
        for x in lines:
            if "step" in x:
                print("    browser: %-62s %s" % (x["step"], "ok (%d ms)" % x["ms"] if x.get("ok") else "FAILED"),
                      flush=True)
        print("    screenshots: %s" % out_dir, flush=True)
        last = lines[-1] if lines else {}
        self.assertEqual(p.returncode, 0, "the browser test failed:\n%s\nstderr:\n%s"
                         % ("\n".join(json.dumps(x, indent=1) for x in lines if not x.get("ok", True) or "done" in x),
                            p.stderr[-4000:]))
        self.assertTrue(last.get("done"), last)
        res = last["results"]
        self.assertEqual(last["problems"], [])

        # What the browser did, as the admin API sees it.
        self.assertEqual(sorted(res["replicas_shown"]), self.replicas)
        keys = {k["id"]: k for k in self.admin("GET", "/admin/keys")["keys"]}
        self.assertNotIn(res["key_id"], keys, "the key deleted in the browser is gone")
        self.assertEqual(keys[res["xss_id"]]["name"], "<img src=x onerror=alert(1)>")
        self.assertIn(res["long_id"], keys)
        self.assertEqual(res["disabled_statuses"], [403] * 6)
        self.assertTrue(res["deleted_statuses"] and set(res["deleted_statuses"]) == {401})
        # Every request the browser test saw served was counted for its key, today.
        day = self.admin("GET", "/admin/usage/daily?days=1")["days"][-1]
        mine = [k for k in day["keys"] if k["id"] == res["key_id"]]
        self.assertEqual([k["requests"] for k in mine], [res["served"]], day["keys"])
        self.assertEqual(mine[0]["by_model"][MODEL]["requests"], res["served"])
        # The cost card showed today's cost, which is this key's requests (the rest is unpriced).
        self.assertGreater(res["cost_today"], 0)
        self.assertLessEqual(res["cost_today"], mine[0]["cost_usd"])
        for name in ("signin", "overview", "keys", "usage", "phone-overview", "phone-keys", "phone-usage"):
            self.assertTrue(os.path.getsize(os.path.join(out_dir, name + ".png")) > 10000, name)
