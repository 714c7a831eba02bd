"""Process and protocol helpers for api-proxy's integration tests (standard library only).

    from lib import harness as h

    class T(h.TestCase):
        @classmethod
        def setUpClass(cls):
            super().setUpClass()
            cls.redis = cls.start_redis()
            cls.mock = cls.start_mock()
            cls.proxy = cls.start_proxy(cls.mock, cls.redis)

        def test_x(self):
            r = h.request("GET", self.proxy.url + "/health")
            self.assertEqual(r.status, 200)

Processes started in setUpClass live for the class; those started in a test are stopped
when the test ends. Everything is stopped in reverse start order (proxy before Redis, so
it can flush), and under AP_VALGRIND=1 the valgrind logs are checked.
"""

import atexit
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(os.path.abspath(os.environ.get("AP_BIN") or ROOT / "bin"))
MOCK_UPSTREAM = ROOT / "tests" / "mock_upstream.py"
DEFAULT_ADMIN_KEY = "sk-test-admin-key"

# How many log lines of each process to print when a test fails.
LOG_TAIL = int(os.environ.get("AP_LOG_TAIL", "40"))


def bin_dir():
    """The binary directory, read at call time (the runner may set AP_BIN after import)."""
    return Path(os.path.abspath(os.environ.get("AP_BIN") or ROOT / "bin"))


def admin_script(name):
    """A Lua script the proxies run, as `api-proxy-admin script NAME` prints it."""
    r = subprocess.run([str(bin_dir() / "api-proxy-admin"), "script", name], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, timeout=10)
    if r.returncode != 0:
        raise AssertionError("api-proxy-admin script %s: %s" % (name, r.stderr))
    return r.stdout


def load_admin_scripts(rc, names):
    """SCRIPT LOAD each of the named scripts into the Redis behind client rc -> {name: sha}."""
    return {n: rc.cmd("SCRIPT", "LOAD", admin_script(n)) for n in names}


def under_valgrind():
    return os.environ.get("AP_VALGRIND") == "1"


def free_port(host="127.0.0.1"):
    """A TCP port that was free a moment ago (the kernel's choice, so unlikely to collide)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout=10.0, interval=0.02, message=None):
    """Poll predicate() until it returns a truthy value, and return that value.

    Raises AssertionError (so the test reports a failure) after `timeout` seconds; the
    message includes the last exception the predicate raised, if any.
    """
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            value = predicate()
            if value:
                return value
            last_exc = None
        except Exception as e:  # the thing we wait for may not be up yet
            last_exc = e
        if time.monotonic() >= deadline:
            what = message or getattr(predicate, "__name__", "condition")
            extra = " (last error: %r)" % (last_exc,) if last_exc else ""
            raise AssertionError("timed out after %.1fs waiting for %s%s" % (timeout, what, extra))
        time.sleep(interval)


def write_json(path, obj):
    path = Path(path)
    path.write_text(json.dumps(obj, indent=2))
    return path


# --------------------------------------------------------------------------------------
# Redis: a tiny RESP2 client and a redis-server process
# --------------------------------------------------------------------------------------

class RedisError(Exception):
    """An error reply (-ERR ...) from Redis."""


class Redis:
    """Minimal RESP2 client. Replies: bulk strings as str (bytes if not UTF-8), ints,
    lists, None for nil; error replies raise RedisError. After a socket error the
    connection is dropped and the next command reconnects."""

    def __init__(self, host="127.0.0.1", port=6379, db=0, password=None, timeout=10.0):
        self.host, self.port, self.db, self.password = host, port, db, password
        self.timeout = timeout
        self._sock = None
        self._rfile = None

    @classmethod
    def from_url(cls, url, timeout=10.0):
        u = urlsplit(url)
        db = int(u.path.strip("/") or 0)
        return cls(u.hostname or "127.0.0.1", u.port or 6379, db, u.password, timeout)

    def _connect(self):
        self._sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        self._rfile = self._sock.makefile("rb")
        if self.password:
            self._roundtrip([("AUTH", self.password)])
        if self.db:
            self._roundtrip([("SELECT", self.db)])

    def close(self):
        for f in (self._rfile, self._sock):
            try:
                if f:
                    f.close()
            except OSError:
                pass
        self._sock = self._rfile = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @staticmethod
    def _encode(args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            if isinstance(a, bytes):
                b = a
            elif isinstance(a, str):
                b = a.encode()
            elif isinstance(a, (int, float)) and not isinstance(a, bool):
                b = repr(a).encode()
            else:
                raise TypeError("unsupported Redis argument %r" % (a,))
            out.append(b"$%d\r\n%s\r\n" % (len(b), b))
        return b"".join(out)

    def _read(self):
        line = self._rfile.readline()
        if not line.endswith(b"\r\n"):
            raise ConnectionError("connection closed by Redis")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode("utf-8", "replace")
        if kind == b"-":
            return RedisError(rest.decode("utf-8", "replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self._rfile.read(n + 2)
            if len(data) != n + 2:
                raise ConnectionError("connection closed by Redis")
            data = data[:-2]
            try:
                return data.decode("utf-8")
            except UnicodeDecodeError:
                return data
        if kind == b"*":
            n = int(rest)
            if n < 0:
                return None
            return [self._read() for _ in range(n)]
        raise ConnectionError("bad RESP line %r" % (line,))

    def _roundtrip(self, cmds):
        if self._sock is None:
            self._connect()
        try:
            self._sock.sendall(b"".join(self._encode(c) for c in cmds))
            return [self._read() for _ in cmds]
        except (OSError, ValueError):
            self.close()
            raise

    def cmd(self, *args):
        """Send one command and return its decoded reply (raises RedisError on -ERR)."""
        reply = self._roundtrip([args])[0]
        if isinstance(reply, RedisError):
            raise reply
        return reply

    def pipeline(self, cmds, raise_on_error=True):
        """Send several commands at once (each a tuple/list of args); return the replies.
        Error replies raise the first RedisError (after reading every reply), or with
        raise_on_error=False are returned in place."""
        replies = self._roundtrip([tuple(c) for c in cmds])
        if raise_on_error:
            for r in replies:
                if isinstance(r, RedisError):
                    raise r
        return replies


# --------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------

_LIVE = set()  # every Proc still running, killed at exit whatever happens to the tests


@atexit.register
def _kill_leftovers():
    for p in list(_LIVE):
        p.kill()


class Proc:
    """A child process whose stdout+stderr go to <workdir>/<name>.log (appended across
    restarts). env = os.environ + overrides; an override of None removes the variable.

    Under AP_VALGRIND=1 a Proc created with valgrind=True runs under valgrind, and its
    readiness timeouts are multiplied by 10."""

    # Checked by TestCase at teardown: our own daemons must exit 0 on SIGTERM and must
    # not die on their own (this is also how sanitizer reports surface).
    check_exit = False

    def __init__(self, cmd, workdir, name=None, env=None, valgrind=False, cwd=None):
        self.cmd = [str(c) for c in cmd]
        self.workdir = Path(workdir)
        self.name = name or Path(self.cmd[0]).name
        self.env_overrides = dict(env or {})
        self.valgrind = valgrind and under_valgrind()
        self.cwd = str(cwd or self.workdir)
        self.log_path = self.workdir / ("%s.log" % self.name)
        self.popen = None
        self.pids = []              # every pid this Proc has had (one per start)
        self.exit_observed = False  # stop()/kill()/wait() called by the test itself
        self._logf = None

    @property
    def slow(self):
        """Timeout multiplier (10 under valgrind)."""
        return 10 if self.valgrind else 1

    @property
    def pid(self):
        return self.popen.pid if self.popen else None

    @property
    def returncode(self):
        return self.popen.poll() if self.popen else None

    def full_cmd(self):
        if not self.valgrind:
            return list(self.cmd)
        return ["valgrind", "--leak-check=full", "--errors-for-leak-kinds=definite",
                "--error-exitcode=99", "--log-file=%s/vg-%%p.log" % self.workdir] + self.cmd

    def full_env(self):
        env = dict(os.environ)
        for k, v in self.env_overrides.items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = str(v)
        return env

    def spawn(self):
        """Start the process without waiting for readiness."""
        if self.alive():
            raise RuntimeError("%s is already running (pid %d)" % (self.name, self.pid))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._logf = open(self.log_path, "ab")
        self._logf.write(("=== %s start: %s\n" % (time.strftime("%H:%M:%S"),
                                                 " ".join(self.full_cmd()))).encode())
        self._logf.flush()
        # start_new_session: a ^C in the terminal reaches the test runner only, which
        # then stops its children in order instead of having them all die at once.
        self.popen = subprocess.Popen(self.full_cmd(), env=self.full_env(), cwd=self.cwd,
                                      stdin=subprocess.DEVNULL, stdout=self._logf,
                                      stderr=subprocess.STDOUT, start_new_session=True)
        self.pids.append(self.popen.pid)
        self.exit_observed = False
        _LIVE.add(self)
        return self

    def start(self):
        """Start and wait until ready (subclasses define readiness). Returns self."""
        return self.spawn()

    def alive(self):
        return self.popen is not None and self.popen.poll() is None

    def _check_alive(self, what):
        if not self.alive():
            raise RuntimeError("%s exited with code %s while %s; log tail:\n%s"
                               % (self.name, self.returncode, what, self.log_tail()))

    def wait_http(self, url, timeout=10.0):
        """Poll `url` until it answers any HTTP status; return that status."""
        timeout *= self.slow
        deadline = time.monotonic() + timeout
        while True:
            self._check_alive("waiting for %s" % url)
            try:
                return request("GET", url, timeout=min(2.0 * self.slow, timeout)).status
            except (OSError, http.client.HTTPException):
                pass
            if time.monotonic() >= deadline:
                raise RuntimeError("%s: %s did not answer within %.0fs; log tail:\n%s"
                                   % (self.name, url, timeout, self.log_tail()))
            time.sleep(0.02)

    def wait(self, timeout=10.0):
        """Wait for the process to exit by itself; return its exit code."""
        self.exit_observed = True
        try:
            rc = self.popen.wait(timeout * self.slow)
        except subprocess.TimeoutExpired:
            raise AssertionError("%s did not exit within %.0fs" % (self.name, timeout * self.slow))
        self._reaped()
        return rc

    def signal(self, sig):
        if self.alive():
            self.popen.send_signal(sig)

    def stop(self, timeout=10.0):
        """SIGTERM, wait up to `timeout` s (x3 under valgrind), then SIGKILL. Returns the
        exit code (negative: killed by that signal); None if never started."""
        self.exit_observed = True
        if self.popen is None:
            return None
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout * (3 if self.valgrind else 1))
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._reaped()
        return self.popen.returncode

    def kill(self):
        """SIGKILL at once (a crash, from the system's point of view)."""
        self.exit_observed = True
        if self.popen is None:
            return None
        if self.alive():
            self.popen.kill()
        self.popen.wait()
        self._reaped()
        return self.popen.returncode

    def _reaped(self):
        _LIVE.discard(self)
        if self._logf:
            self._logf.close()
            self._logf = None

    def log(self):
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines=LOG_TAIL):
        return "\n".join(self.log().splitlines()[-lines:])

    def valgrind_errors(self):
        """Text of this process's valgrind logs that report errors ("" if none)."""
        out = []
        for pid in self.pids:
            text = valgrind_log_errors(self.workdir / ("vg-%d.log" % pid))
            if text:
                out.append(text)
        return "\n".join(out)

    def __repr__(self):
        return "<%s %s pid=%s>" % (type(self).__name__, self.name, self.pid)


def valgrind_log_errors(path):
    """The text of one valgrind log if its ERROR SUMMARY counts errors, else ""."""
    try:
        text = Path(path).read_text(errors="replace")
    except FileNotFoundError:
        return ""
    counts = [int(n) for n in re.findall(r"ERROR SUMMARY: (\d+) errors", text)]
    return text if any(counts) else ""


class RedisServer(Proc):
    """redis-server on 127.0.0.1 with AOF (appendfsync always) in `workdir`. The port is
    chosen once, so restart() brings the same server back with its data."""

    def __init__(self, workdir, port=None, name="redis", binary="redis-server"):
        workdir = Path(workdir)
        self.port = port or free_port()
        cmd = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(workdir),
               "--save", "", "--appendonly", "yes", "--appendfsync", "always",
               "--daemonize", "no", "--logfile", str(workdir / ("%s.log" % name))]
        # Redis logs to its own --logfile; our stdout/stderr capture goes next to it.
        super().__init__(cmd, workdir, name="%s-stdout" % name)
        self.redis_log_path = workdir / ("%s.log" % name)

    @property
    def url(self):
        return "redis://127.0.0.1:%d/0" % self.port

    def client(self, timeout=10.0):
        return Redis("127.0.0.1", self.port, timeout=timeout)

    def start(self, timeout=10.0):
        self.spawn()

        def pong():
            self._check_alive("starting")
            with self.client(timeout=1.0) as c:
                return c.cmd("PING") == "PONG"

        try:
            wait_until(pong, timeout, message="redis PING on port %d" % self.port)
        except (AssertionError, RuntimeError) as e:
            raise RuntimeError("%s\nredis log:\n%s" % (e, self.log()))
        return self

    def restart(self, timeout=10.0):
        self.stop()
        return self.start(timeout)

    def log(self):
        text = super().log()
        try:
            text += self.redis_log_path.read_text(errors="replace")
        except FileNotFoundError:
            pass
        return text


class MockUpstream(Proc):
    """tests/mock_upstream.py on a fixed port (kept across restarts)."""

    def __init__(self, workdir, port=None, name="mock", verbose=False):
        self.port = port or free_port()
        cmd = [sys.executable, str(MOCK_UPSTREAM), "--port", str(self.port),
               "--bind", "127.0.0.1"] + (["--verbose"] if verbose else [])
        super().__init__(cmd, workdir, name=name)

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def start(self, timeout=10.0):
        self.spawn()
        ready = "READY %d" % self.port

        def is_ready():
            self._check_alive("starting")
            return ready in self.log()

        wait_until(is_ready, timeout, message="mock upstream READY line")
        return self

    def _control(self, method, path, body=None):
        r = request(method, self.url + path, body=body, timeout=10)
        if r.status != 200:
            raise AssertionError("mock %s %s -> %d %s" % (method, path, r.status, r.text))
        return r.json()

    def behaviour(self, model="*", **kw):
        """Install a behaviour for `model` ("*" = any); see tests/mock_upstream.py."""
        return self._control("POST", "/_control/behaviour", dict(kw, model=model))

    def set_health(self, doc):
        return self._control("POST", "/_control/health", doc)

    def reset(self):
        return self._control("POST", "/_control/reset", {})

    def requests(self, path=None):
        """The logged requests (oldest first), optionally only those to `path`."""
        reqs = self._control("GET", "/_requests")["requests"]
        return [r for r in reqs if path is None or r["path"] == path]

    def clear_requests(self):
        return self._control("DELETE", "/_requests")

    def stats(self):
        return self._control("GET", "/_stats")


def _as_url(x):
    return x.url if hasattr(x, "url") else x


# Contract variables (docs/contract.md section 2) that a developer's shell may have set: unset for
# the daemons unless a test passes them, so the tests are hermetic.
_HERMETIC = {k: None for k in ("UPSTREAM_FORMAT", "UPSTREAM_API_KEY", "KEYS_FILE",
                                "POLL_INTERVAL_SECONDS", "PROXY_PORT", "PROXY_BIND",
                                "FLEET_HEARTBEAT_MS")}


class Proxy(Proc):
    """<BIN>/api-proxy on 127.0.0.1:<free port>.

    upstream / redis: a URL or an object with .url (MockUpstream, RedisServer).
    fallback_config: a path, or a dict written to <workdir>/<name>-fallback.json; by
    default a disabled chain. env: extra variables (None removes one, e.g. ADMIN_KEY)."""

    check_exit = True

    def __init__(self, workdir, upstream, redis, admin_key=DEFAULT_ADMIN_KEY, port=None,
                 fallback_config=None, usage_tz="+00:00", log_level="debug", env=None,
                 name="proxy", binary=None, valgrind=True):
        workdir = Path(workdir)
        self.port = port or free_port()
        self.admin_key = admin_key
        if fallback_config is None:
            fallback_config = {"enabled": False, "tiers": []}
        if isinstance(fallback_config, dict):
            fallback_config = write_json(workdir / ("%s-fallback.json" % name), fallback_config)
        self.fallback_config = str(fallback_config)
        full_env = dict(_HERMETIC)
        full_env.update({
            "PROXY_BIND": "127.0.0.1",
            "PROXY_PORT": str(self.port),
            "UPSTREAM_URL": _as_url(upstream),
            "REDIS_URL": _as_url(redis),
            "ADMIN_KEY": admin_key,
            "USAGE_TZ": usage_tz,
            "FALLBACK_CONFIG": self.fallback_config,
            "LOG_LEVEL": log_level,
        })
        full_env.update(env or {})
        binary = binary or bin_dir() / "api-proxy"
        super().__init__([binary], workdir, name=name, env=full_env, valgrind=valgrind)

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def start(self, timeout=10.0):
        self.spawn()
        self.wait_http(self.url + "/health", timeout)
        return self

    def admin(self, method, path, body=None, timeout=30):
        """Call an admin endpoint with the admin key -> (status, parsed JSON, or the body
        text when it is not JSON)."""
        r = request(method, self.url + path, headers={"x-api-key": self.admin_key or ""},
                    body=body, timeout=timeout)
        try:
            return r.status, r.json()
        except ValueError:
            return r.status, r.text

    def create_key(self, name="test"):
        """Create a client key through the admin API and return it. A proxy just started
        answers /health before its Redis connection is up: a 503 then is waited out."""
        deadline = time.monotonic() + 5 * self.slow
        while True:
            status, doc = self.admin("POST", "/admin/keys", {"name": name})
            if status != 503 or time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        if status != 200 or not isinstance(doc, dict) or "api_key" not in doc:
            raise AssertionError("creating key failed: %s %r" % (status, doc))
        return doc["api_key"]


class Poller(Proc):
    """<BIN>/api-poller. It has no port, so start() does not wait for readiness: poll the
    state it writes to Redis with wait_until()."""

    check_exit = True

    def __init__(self, workdir, upstream, redis, fallback_config=None, log_level="debug",
                 env=None, name="poller", binary=None, valgrind=True):
        workdir = Path(workdir)
        if fallback_config is None:
            fallback_config = {"enabled": False, "tiers": []}
        if isinstance(fallback_config, dict):
            fallback_config = write_json(workdir / ("%s-fallback.json" % name), fallback_config)
        full_env = dict(_HERMETIC)
        full_env.update({
            "UPSTREAM_URL": _as_url(upstream),
            "REDIS_URL": _as_url(redis),
            "FALLBACK_CONFIG": str(fallback_config),
            "LOG_LEVEL": log_level,
        })
        full_env.update(env or {})
        binary = binary or bin_dir() / "api-poller"
        super().__init__([binary], workdir, name=name, env=full_env, valgrind=valgrind)


# --------------------------------------------------------------------------------------
# HTTP
# --------------------------------------------------------------------------------------

class Response:
    """A complete HTTP response: .status, .reason, .headers (lowercase names; repeated
    headers joined with ", "), .header_list (raw pairs), .body (bytes)."""

    def __init__(self, status, reason, header_list, body):
        self.status = status
        self.reason = reason
        self.header_list = header_list
        self.headers = _header_dict(header_list)
        self.body = body

    @property
    def text(self):
        return self.body.decode("utf-8", "replace")

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return "<Response %d %r>" % (self.status, self.body[:200])


def _header_dict(pairs):
    out = {}
    for k, v in pairs:
        k = k.lower()
        out[k] = out[k] + ", " + v if k in out else v
    return out


def _encode_body(body, headers):
    """-> (bytes or None, headers) with Content-Type set for JSON bodies."""
    headers = dict(headers or {})
    if body is None or isinstance(body, bytes):
        return body, headers
    if isinstance(body, str):
        return body.encode(), headers
    if not any(k.lower() == "content-type" for k in headers):
        headers["Content-Type"] = "application/json"
    return json.dumps(body).encode(), headers


def _split_url(url):
    u = urlsplit(url)
    if u.scheme != "http":
        raise ValueError("only http:// URLs are supported: %r" % url)
    path = (u.path or "/") + ("?" + u.query if u.query else "")
    return u.hostname, u.port or 80, path


def request(method, url, headers=None, body=None, timeout=30):
    """One request on a fresh connection. body: bytes, str, or a dict/list sent as JSON."""
    host, port, path = _split_url(url)
    data, hdrs = _encode_body(body, headers)
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path, body=data, headers=hdrs)
        resp = conn.getresponse()
        return Response(resp.status, resp.reason, resp.getheaders(), resp.read())
    finally:
        conn.close()


class Stream:
    """A streaming request: status and headers are read at construction; iterating
    yields the (de-chunked) body bytes as they arrive. close() drops the connection, which
    is how a test plays a client that goes away mid-stream."""

    def __init__(self, method, url, headers=None, body=None, timeout=30):
        host, port, path = _split_url(url)
        data, hdrs = _encode_body(body, headers)
        self.conn = http.client.HTTPConnection(host, port, timeout=timeout)
        try:
            self.conn.request(method, path, body=data, headers=hdrs)
            self.resp = self.conn.getresponse()
        except BaseException:
            self.conn.close()
            raise
        self.status = self.resp.status
        self.reason = self.resp.reason
        self.header_list = self.resp.getheaders()
        self.headers = _header_dict(self.header_list)

    def __iter__(self):
        while True:
            chunk = self.resp.read1(65536)
            if not chunk:
                return
            yield chunk

    def read_all(self):
        return b"".join(self)

    def events(self):
        """Read to the end and parse the body as SSE."""
        return parse_sse(self.read_all())

    def close(self):
        # Shut the socket down first: HTTPResponse.close() alone may keep it open.
        try:
            if self.conn.sock is not None:
                self.conn.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.resp.close()
        self.conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def stream(method, url, headers=None, body=None, timeout=30):
    """Start a streaming request; see Stream."""
    return Stream(method, url, headers, body, timeout)


class SSEParser:
    """Incremental Server-Sent Events parser: feed() bytes split anywhere (even inside a
    UTF-8 character or a CRLF) and get the complete events as (event, data) pairs. event
    is None when the event has no "event:" field (as in OpenAI streams); multi-line data
    is joined with "\\n"; comment lines are skipped."""

    def __init__(self):
        self.buf = b""
        self.event = None
        self.data = []

    def feed(self, chunk):
        if isinstance(chunk, str):
            chunk = chunk.encode()
        self.buf += chunk
        out = []
        while True:
            m = re.search(rb"\r\n|\r|\n", self.buf)
            if m is None:
                break
            # A lone \r at the very end may be the first half of a \r\n: wait for more.
            if m.group() == b"\r" and m.end() == len(self.buf):
                break
            line = self.buf[:m.start()].decode("utf-8", "replace")
            self.buf = self.buf[m.end():]
            ev = self._line(line)
            if ev is not None:
                out.append(ev)
        return out

    def _line(self, line):
        if line == "":
            if not self.data and self.event is None:
                return None
            ev = (self.event, "\n".join(self.data))
            self.event, self.data = None, []
            return ev
        if line.startswith(":"):
            return None
        field, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if field == "event":
            self.event = value
        elif field == "data":
            self.data.append(value)
        return None


def parse_sse(data):
    """Parse a whole SSE body (bytes or str) into a list of (event, data) pairs. An event
    not terminated by a blank line is dropped, as the SSE spec says."""
    return SSEParser().feed(data)


def sse_json(events):
    """[(event, data)] -> [(event, parsed JSON or the raw string)], e.g. for "[DONE]"."""
    out = []
    for ev, data in events:
        try:
            out.append((ev, json.loads(data)))
        except ValueError:
            out.append((ev, data))
    return out


def raw(host, port, data, timeout=5.0):
    """Send raw bytes and return everything read until the peer closes or `timeout`
    seconds pass without data (for malformed-HTTP tests)."""
    if isinstance(data, str):
        data = data.encode()
    out = bytearray()
    with socket.create_connection((host, port), timeout=timeout) as s:
        try:
            s.sendall(data)
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                out += chunk
        except (socket.timeout, ConnectionResetError, BrokenPipeError):
            pass
    return bytes(out)


class Client:
    """Keep-alive HTTP client on one connection. http.client reconnects by itself after
    a response that closed the connection; .connects counts the connections opened, so a
    test can check the server kept the connection alive."""

    def __init__(self, base_url, headers=None, timeout=30):
        self.host, self.port, prefix = _split_url(base_url)
        self.prefix = prefix.rstrip("/")
        self.default_headers = dict(headers or {})
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        self.connects = 0

    def request(self, method, path, headers=None, body=None):
        hdrs = dict(self.default_headers)
        hdrs.update(headers or {})
        data, hdrs = _encode_body(body, hdrs)
        if self.conn.sock is None:
            self.connects += 1
        try:
            self.conn.request(method, self.prefix + path, body=data, headers=hdrs)
            resp = self.conn.getresponse()
            return Response(resp.status, resp.reason, resp.getheaders(), resp.read())
        except BaseException:
            self.conn.close()
            raise

    def get(self, path, headers=None):
        return self.request("GET", path, headers)

    def post(self, path, body=None, headers=None):
        return self.request("POST", path, headers, body)

    def close(self):
        self.conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# --------------------------------------------------------------------------------------
# unittest base class
# --------------------------------------------------------------------------------------

def _problems_after_stop(procs):
    """Stop procs (reverse start order) and return a list of problems to report."""
    problems = []
    for p in reversed(procs):
        was_alive = p.alive()
        observed = p.exit_observed
        rc = p.stop()
        if p.check_exit and not observed and rc is not None and rc != 0:
            how = "on SIGTERM" if was_alive else "by itself during the test"
            problems.append("%s (pid %s) exited %s with code %s; log tail:\n%s"
                            % (p.name, p.pid, how, rc, p.log_tail()))
        vg = p.valgrind_errors()
        if vg:
            problems.append("valgrind errors in %s:\n%s" % (p.name, vg))
    return problems


class TestCase(unittest.TestCase):
    """Each test class gets a temp workdir under /tmp (cls.workdir), removed when every
    test passed, kept (and printed) otherwise. Processes started with start_redis(),
    start_mock(), start_proxy(), start_poller() or registered with track() are stopped
    after the test that started them, or after the class when started in setUpClass.
    Subclasses overriding setUpClass/setUp must call super() first."""

    workdir = None
    _failed = False

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.workdir = Path(tempfile.mkdtemp(
            prefix="ap-%s.%s-" % (cls.__module__, cls.__name__), dir="/tmp"))
        cls._class_procs = []
        cls._scope = cls._class_procs
        cls._failed = False
        cls._tests_run = 0
        cls._names = {}
        # A class cleanup (unlike tearDownClass) runs even when setUpClass fails half-way.
        cls.addClassCleanup(cls._class_cleanup)

    @classmethod
    def _class_cleanup(cls):
        problems = _problems_after_stop(cls._class_procs)
        # No test ran: setUpClass failed; keep the evidence.
        failed = cls._failed or problems or cls._tests_run == 0
        if failed:
            for p in cls._class_procs:
                _print_log_tail(p)
            print("  workdir kept: %s" % cls.workdir, flush=True)
        else:
            shutil.rmtree(cls.workdir, ignore_errors=True)
        if problems:
            raise AssertionError("\n".join(problems))

    def setUp(self):
        super().setUp()
        self._test_procs = []
        type(self)._scope = self._test_procs
        self.addCleanup(self._test_cleanup)

    def _test_cleanup(self):
        type(self)._scope = type(self)._class_procs
        problems = _problems_after_stop(self._test_procs)
        if problems:
            raise AssertionError("\n".join(problems))

    def run(self, result=None):
        if result is None:
            result = self.defaultTestResult()
        before = len(result.failures) + len(result.errors) + len(result.unexpectedSuccesses)
        type(self)._tests_run = getattr(type(self), "_tests_run", 0) + 1
        super().run(result)
        after = len(result.failures) + len(result.errors) + len(result.unexpectedSuccesses)
        if after > before:
            type(self)._failed = True
            for p in getattr(self, "_test_procs", []):
                _print_log_tail(p)
        return result

    # ---- process helpers (work from setUpClass and from tests) ----
    @classmethod
    def track(cls, proc):
        """Register a Proc to be stopped at the end of the current test (or class)."""
        cls._scope.append(proc)
        return proc

    @classmethod
    def unique_name(cls, base):
        n = cls._names.get(base, 0) + 1
        cls._names[base] = n
        return base if n == 1 else "%s-%d" % (base, n)

    @classmethod
    def start_redis(cls, **kw):
        name = kw.pop("name", None) or cls.unique_name("redis")
        # Each server gets its own directory, so a new one never loads another's AOF.
        d = cls.workdir / name
        d.mkdir(exist_ok=True)
        return cls.track(RedisServer(d, name=name, **kw)).start()

    @classmethod
    def start_mock(cls, **kw):
        name = kw.pop("name", None) or cls.unique_name("mock")
        return cls.track(MockUpstream(cls.workdir, name=name, **kw)).start()

    @classmethod
    def start_proxy(cls, upstream, redis, timeout=10.0, **kw):
        name = kw.pop("name", None) or cls.unique_name("proxy")
        return cls.track(Proxy(cls.workdir, upstream, redis, name=name, **kw)).start(timeout)

    @classmethod
    def start_poller(cls, upstream, redis, **kw):
        name = kw.pop("name", None) or cls.unique_name("poller")
        return cls.track(Poller(cls.workdir, upstream, redis, name=name, **kw)).start()


def _print_log_tail(p):
    if LOG_TAIL <= 0:
        return
    tail = p.log_tail()
    if tail:
        print("  --- %s (%s) last %d lines ---" % (p.name, p.log_path, LOG_TAIL))
        print("\n".join("  | " + line for line in tail.splitlines()), flush=True)
