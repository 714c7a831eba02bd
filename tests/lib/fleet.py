"""The local fleet of tests/cluster/cluster.sh (Redis, the mock upstream, two pollers, three
replicas, HAProxy) as a test fixture: FleetCase starts it once per class on free ports and
stops it after, and gives the helpers every fleet test needs (admin calls through the load
balancer or one replica, the mock, HAProxy's view, SIGKILL of a component, waiting for usage
to be written). A subclass's fleet_env() (or EXTRA_ENV) adds settings of its own (e.g.
PRICES_CONFIG); START_ARGS and EXTRA_PORTS start a variant (e.g. cluster.sh --sentinel).
"""

import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from lib import harness as h

ROOT = h.ROOT
CLUSTER_SH = ROOT / "tests" / "cluster" / "cluster.sh"
INTERVAL = 0.5                   # poll interval of the fleet's chain
PREFIX = "ap:"
REPLICAS = ("proxy1", "proxy2", "proxy3")

# The product's own settings: not inherited from the developer's shell (hermetic fleet).
PRODUCT_VARS = (
    "ADMIN_KEY", "CLIENT_TIMEOUT_SECONDS", "FALLBACK_CONFIG", "INSTANCE_ID", "KEYS_FILE",
    "LOG_LEVEL", "MAX_BODY_BYTES", "MAX_HEADER_BYTES", "POLLER_BIND", "POLLER_PORT",
    "POLL_INTERVAL_SECONDS", "PROXY_BIND", "PROXY_PORT", "REDIS_PREFIX", "REDIS_URL",
    "REQUEST_READ_TIMEOUT_SECONDS", "SHUTDOWN_GRACE_SECONDS", "STREAM_BUFFER_BYTES",
    "UPSTREAM_API_KEY", "UPSTREAM_CONNECT_TIMEOUT_MS", "UPSTREAM_FORMAT",
    "UPSTREAM_READ_TIMEOUT_SECONDS", "UPSTREAM_URL", "USAGE_DURABLE", "USAGE_FLUSH_MS",
    "USAGE_TZ", "PRICES_CONFIG", "POLICY_FAIL_MODE", "POLICY_LEASE_SECONDS", "POLICY_TIMEOUT_MS",
    "POLICY_DEFAULT_MAX_TOKENS")


def find_haproxy():
    found = shutil.which("haproxy")
    if found:
        return found
    for d in ("/usr/sbin", "/usr/local/sbin", "/sbin"):
        if os.access(os.path.join(d, "haproxy"), os.X_OK):
            return os.path.join(d, "haproxy")
    return None


def banner(text):
    print("\n  >>> MEASURED: %s" % text, flush=True)


def note(text):
    print("  >>> %s" % text, flush=True)


class FleetCase(h.TestCase):
    """Base class of the fleet tests (no tests of its own)."""

    START_ARGS = ()    # extra arguments of `cluster.sh start`
    EXTRA_PORTS = ()   # more CLUSTER_*_PORT variables to give free ports
    EXTRA_ENV = {}     # more settings for cluster.sh and the replicas

    @classmethod
    def fleet_env(cls):
        """Settings of the subclass's own for the replicas (called once the workdir exists)."""
        return {}

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.dir = cls.workdir / "cluster"
        names = ("CLUSTER_LB_PORT", "CLUSTER_LB_STATS_PORT", "CLUSTER_REDIS_PORT",
                 "CLUSTER_UPSTREAM_PORT", "CLUSTER_PROXY1_PORT", "CLUSTER_PROXY2_PORT",
                 "CLUSTER_PROXY3_PORT", "CLUSTER_POLLER1_PORT", "CLUSTER_POLLER2_PORT")
        ports = {n: h.free_port() for n in names + tuple(cls.EXTRA_PORTS)}
        if len(set(ports.values())) != len(ports):
            raise RuntimeError("free_port() gave the same port twice: %r" % ports)
        env = {k: v for k, v in os.environ.items()
               if k not in PRODUCT_VARS and not k.startswith(("LARK_", "CLUSTER_"))}
        env.update({k: str(v) for k, v in ports.items()})
        env.update({
            "AP_BIN": str(h.bin_dir()),
            "PYTHON": sys.executable,
            "HAPROXY": find_haproxy(),
            "CLUSTER_POLL_INTERVAL": str(INTERVAL),
            "CLUSTER_STOP_TIMEOUT": "10",
            "CLUSTER_READY_TIMEOUT": "20",
            "LOG_LEVEL": "info",
            "SHUTDOWN_GRACE_SECONDS": "5",
        })
        env.update(cls.EXTRA_ENV)
        env.update(cls.fleet_env())
        cls.env = env
        cls.addClassCleanup(cls.stop_fleet)
        t0 = time.monotonic()
        out = cls.cluster("start", *cls.START_ARGS)
        banner("cluster.sh start: fleet ready in %.2f s" % (time.monotonic() - t0))
        print("\n".join("  | " + line for line in out.splitlines()), flush=True)
        cls.info = json.loads((cls.dir / "cluster.json").read_text())
        cls.admin_key = cls.info["admin_key"]
        cls.lb = cls.info["lb_url"]
        cls.stats_url = cls.info["lb_stats_url"]
        cls.mock_url = cls.info["upstream_url"]
        comps = cls.info["components"]
        cls.replica_url = {n: comps[n]["url"] for n in REPLICAS}
        cls.poller_url = {n: comps[n]["url"] for n in ("poller1", "poller2")}
        cls.rc = h.Redis("127.0.0.1", comps["redis"]["port"])

    @classmethod
    def stop_fleet(cls):
        rc = getattr(cls, "rc", None)
        if rc is not None:
            rc.close()
        if (cls.dir / "cluster.env").exists():
            r = subprocess.run([str(CLUSTER_SH), "stop", "--dir", str(cls.dir)], env=cls.env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               timeout=120)
            if r.returncode != 0:
                print(r.stdout, flush=True)
        if cls._failed or cls._tests_run == 0:
            cls.print_logs()
        # cluster.sh cannot see its processes' exit codes: sanitizer reports (make sanitize
        # runs this file with ASan/UBSan binaries) are found in the logs instead.
        reports = []
        for f in sorted((cls.dir / "logs").glob("*.log")) if (cls.dir / "logs").is_dir() else []:
            text = f.read_text(errors="replace")
            for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"):
                if marker in text:
                    i = text.index(marker)
                    reports.append("%s: %s" % (f, text[max(0, i - 200):i + 2000]))
        if reports:
            cls._failed = True
            raise AssertionError("sanitizer reports in the fleet's logs:\n" + "\n".join(reports))

    @classmethod
    def print_logs(cls, lines=25):
        logs = cls.dir / "logs"
        if not logs.is_dir():
            return
        for f in sorted(logs.glob("*.log")):
            tail = f.read_text(errors="replace").splitlines()[-lines:]
            print("  --- %s (last %d lines) ---" % (f, lines))
            print("\n".join("  | " + line for line in tail), flush=True)

    @classmethod
    def cluster(cls, *args, timeout=120):
        r = subprocess.run([str(CLUSTER_SH)] + list(args) + ["--dir", str(cls.dir)], env=cls.env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           timeout=timeout)
        if r.returncode != 0:
            raise AssertionError("cluster.sh %s failed (%d):\n%s" % (" ".join(args), r.returncode,
                                                                   r.stdout))
        return r.stdout

    def setUp(self):
        super().setUp()
        self.ensure_fleet()

    # ---- fleet helpers ----
    def pid(self, name):
        return int((self.dir / "pids" / ("%s.pid" % name)).read_text())

    def sigkill(self, name, expect="api-"):
        pid = self.pid(name)
        cmdline = Path("/proc/%d/cmdline" % pid).read_bytes().replace(b"\0", b" ").decode()
        self.assertIn(expect, cmdline, "pid %d is not %s any more" % (pid, name))
        os.kill(pid, signal.SIGKILL)
        return pid

    def ensure_fleet(self):
        """Every component running and every replica UP in HAProxy (a failed test may
        have left one down)."""
        r = subprocess.run([str(CLUSTER_SH), "status", "--dir", str(self.dir)], env=self.env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60)
        for line in r.stdout.splitlines():
            parts = line.split()
            if len(parts) >= 4 and parts[0] in self.info["components"] and parts[3] == "stopped":
                note("restarting %s, left stopped by an earlier test" % parts[0])
                self.cluster("restart", parts[0])
        h.wait_until(lambda: all(s == "UP" for s in self.lb_states().values()), 10,
                     message="every replica UP in HAProxy")

    def lb_stats_all(self):
        """HAProxy's stats CSV: {"replicas/proxy1": {"status": "UP", "scur": "3", ...},
        "api/FRONTEND": {...}, ...}."""
        r = h.request("GET", self.stats_url + ";csv", timeout=5)
        lines = r.text.splitlines()
        cols = lines[0].lstrip("# ").split(",")
        out = {}
        for line in lines[1:]:
            row = dict(zip(cols, line.split(",")))
            out["%s/%s" % (row.get("pxname"), row.get("svname"))] = row
        return out

    def lb_stats(self):
        """HAProxy's stats of each replica: {"proxy1": {"status": "UP", "scur": "3", ...}}."""
        return {k.split("/", 1)[1]: row for k, row in self.lb_stats_all().items()
                if k.split("/", 1)[1] in REPLICAS and k.startswith("replicas/")}

    @staticmethod
    def stats_diff(after, before, key, cols):
        def num(d, c):
            try:
                return int(d[key].get(c) or 0)
            except (KeyError, ValueError):
                return 0
        return {c: num(after, c) - num(before, c) for c in cols}

    def lb_states(self):
        """HAProxy's view of each replica: {"proxy1": "UP", ...}."""
        return {n: row["status"] for n, row in self.lb_stats().items()}

    def admin(self, base, method, path, body=None):
        r = h.request(method, base + path, headers={"x-api-key": self.admin_key}, body=body,
                      timeout=30)
        try:
            return r.status, r.json()
        except ValueError:
            return r.status, r.text

    def admin_ok(self, base, path):
        st, doc = self.admin(base, "GET", path)
        self.assertEqual(st, 200, "%s%s -> %s %r" % (base, path, st, doc))
        return doc

    def create_keys(self, tag, n):
        """n new keys, created through the load balancer: [(key, id, name)]."""
        out = []
        for i in range(n):
            name = "%s-%d-%d" % (tag, i, int(time.time() * 1000) % 100000000)
            st, doc = self.admin(self.lb, "POST", "/admin/keys", {"name": name})
            self.assertEqual(st, 200, doc)
            out.append((doc["api_key"], doc["id"], name))
        return out

    def mock(self, method, path, body=None):
        r = h.request(method, self.mock_url + path, body=body, timeout=10)
        self.assertEqual(r.status, 200, r.text)
        return r.json()

    # ---- usage: settle and compare ----
    def live_replicas(self):
        out = []
        for n in REPLICAS:
            try:
                self.pid(n)
                r = h.request("GET", self.replica_url[n] + "/health", timeout=5)
                if r.status == 200:
                    out.append(n)
            except (OSError, ValueError, http.client.HTTPException):
                pass
        return out

    def settle(self, replicas=REPLICAS):
        """Wait until no replica holds usage not yet written to Redis."""
        def flushed():
            for n in replicas:
                r = h.request("GET", self.replica_url[n] + "/health", timeout=5)
                if r.status != 200 or r.json().get("usage_pending", 1) != 0:
                    return False
            return True
        h.wait_until(flushed, 30, interval=0.05, message="usage_pending 0 on every replica")
