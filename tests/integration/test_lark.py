"""Lark (Feishu) callbacks on /oauth/callback, /admin/lark/authorize and the poller's token
refresh, black-box: real redis-server, api-proxy replicas, api-poller, and tests/mock_lark.py
playing open.larksuite.com (LARK_BASE_URL) and the card webhook (LARK_CARD_WEBHOOK_URL).

Encrypted bodies are produced with the `openssl enc` command line (key = SHA-256 of the
encrypt key, random IV prepended, base64), signatures with hashlib, so neither depends on
the code under test. LARK_REFRESH_COMMAND is a shell script written by the test (the proxy
runs it as argv, no shell) that records its arguments and does what a mode file says: succeed,
fail with exit status 3, take 2 s, or sleep past the 15 s limit (the one slow test, ~15 s).

After every test, the logs of every proxy and poller involved are grepped for the secrets in
play (app secret, encrypt key, verification token, authorization codes, and the app, user and
refresh tokens the mock issued).

LarkShutdownTest checks SIGTERM with a Lark callback in flight: the drain waits for it and
teardown answers what is still pending.
"""

import base64
import hashlib
import json
import os
import secrets
import stat
import subprocess
import sys
import threading
import time
import unittest
from urllib.parse import parse_qs, quote, urlsplit

from lib import harness as h

PREFIX = "ap:"
MOCK_LARK = h.ROOT / "tests" / "mock_lark.py"
REFRESH_LIMIT_S = 15      # LARK_REFRESH_LIMIT_S in proxy/px_lark.c
FORWARD_LIMIT_S = 5       # LARK_FORWARD_LIMIT_MS

APP_ID = "cli_test_a1b2c3"
# Upper bounds on waits and durations are stretched under AP_VALGRIND=1.
SLOW = 10 if h.under_valgrind() else 1


class MockLark(h.Proc):
    """tests/mock_lark.py on a fixed port."""

    def __init__(self, workdir, port=None, name="mock-lark"):
        self.port = port or h.free_port()
        super().__init__([sys.executable, str(MOCK_LARK), "--port", str(self.port),
                          "--bind", "127.0.0.1"], workdir, name=name)

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def start(self, timeout=10.0):
        self.spawn()
        ready = "READY %d" % self.port

        def is_ready():
            self._check_alive("starting")
            return ready in self.log()

        h.wait_until(is_ready, timeout, message="mock lark READY line")
        return self

    def _call(self, method, path, body=None):
        r = h.request(method, self.url + path, body=body, timeout=10 * SLOW)
        if r.status != 200:
            raise AssertionError("mock lark %s %s -> %d %s" % (method, path, r.status, r.text))
        return r.json()

    def control(self, **kw):
        return self._call("POST", "/_control", kw)

    def add_codes(self, *codes):
        return self._call("POST", "/_control/codes", {"codes": list(codes)})

    def add_refresh_tokens(self, *tokens):
        return self._call("POST", "/_control/refresh_tokens", {"tokens": list(tokens)})

    def reset(self, **kw):
        self._call("POST", "/_control/reset", {})
        if kw:
            self.control(**kw)

    def state(self):
        return self._call("GET", "/_state")

    def requests(self, path=None):
        reqs = self._call("GET", "/_requests")["requests"]
        return [r for r in reqs if path is None or r["path"] == path or
                (path.endswith("*") and r["path"].startswith(path[:-1]))]

    def clear_requests(self):
        return self._call("DELETE", "/_requests")


# ---- Lark's wire format, computed independently of the code under test ----

def sign(ts, nonce, key, body):
    return hashlib.sha256((str(ts) + nonce + key).encode() + body).hexdigest()


def openssl_encrypt(key, plain):
    """{"encrypt": ...} value: base64(IV + AES-256-CBC(SHA-256(key)), PKCS7), by openssl enc."""
    if isinstance(plain, str):
        plain = plain.encode()
    iv = os.urandom(16)
    ct = subprocess.run(["openssl", "enc", "-aes-256-cbc", "-K", hashlib.sha256(key.encode()).hexdigest(),
                         "-iv", iv.hex()], input=plain, capture_output=True, check=True).stdout
    return base64.b64encode(iv + ct).decode()


def card_event(event_id, action, token, **value):
    """A v2 card.action.trigger callback as Lark sends it."""
    return {
        "schema": "2.0",
        "header": {"event_id": event_id, "token": token, "create_time": str(int(time.time() * 1e6)),
                   "event_type": "card.action.trigger", "tenant_key": "2ed263bf32cf1651",
                   "app_id": APP_ID},
        "event": {"operator": {"tenant_key": "2ed263bf32cf1651", "user_id": "8e2f1a",
                               "open_id": "ou_3c0d8d4e2f"},
                  "token": "c-" + secrets.token_hex(8),
                  "action": {"value": dict(value, action=action), "tag": "button"},
                  "host": "im_message",
                  "context": {"open_message_id": "om_" + secrets.token_hex(6),
                              "open_chat_id": "oc_" + secrets.token_hex(6)}},
    }


def new_event_id():
    return "evt-" + secrets.token_hex(12)


REFRESH_SCRIPT = r"""#!/bin/sh
# Stand-in for a dashboard refresh: records its arguments, then does what ./mode says.
d=$(dirname "$0")
mode=$(cat "$d/mode" 2>/dev/null)
printf '[%s]' "$@" >> "$d/runs"
echo >> "$d/runs"
case "$mode" in
    fail) echo "dashboard backend unavailable"; echo "a second line"; exit 3 ;;
    sleep) exec sleep 20 ;;
    slow) sleep 2 ;;
esac
echo refreshed
exit 0
"""


def html_page_ok(t, r):
    t.assertTrue(r.headers.get("content-type", "").startswith("text/html"), r.headers)
    t.assertIn("<html", r.text)


class LarkMixin:
    """Shared helpers: posting callbacks, reading Redis, checking logs."""

    @classmethod
    def setup_refresh_dir(cls):
        d = cls.workdir / "refresh"
        d.mkdir(exist_ok=True)
        script = d / "refresh.sh"
        script.write_text(REFRESH_SCRIPT)
        script.chmod(0o755)
        cls.refresh_dir = d
        # Shell syntax in the arguments must arrive literally (argv, no shell).
        cls.refresh_cmd = "%s --dashboard  main $HOME;touch\t%s/pwned a|b" % (script, d)
        cls.refresh_args_line = "[--dashboard][main][$HOME;touch][%s/pwned][a|b]" % d

    def set_mode(self, mode):
        (self.refresh_dir / "mode").write_text(mode)

    def runs(self):
        try:
            return (self.refresh_dir / "runs").read_text().splitlines()
        except FileNotFoundError:
            return []

    def stream(self):
        """[(id, {field: value})] of the card stream."""
        out = []
        for entry_id, fields in self.rc.cmd("XRANGE", PREFIX + "lark:cards", "-", "+") or []:
            out.append((entry_id, dict(zip(fields[::2], fields[1::2]))))
        return out

    def stream_for(self, event_id):
        return [f for _, f in self.stream() if f.get("event_id") == event_id]

    def post_raw(self, proxy, body, headers=None, timeout=30 * SLOW):
        hdrs = {"Content-Type": "application/json"}
        hdrs.update(headers or {})
        return h.request("POST", proxy.url + "/oauth/callback", headers=hdrs, body=body, timeout=timeout)

    def post_signed(self, proxy, doc, encrypt=True, key=None, ts=None, nonce=None, sig=None,
                    timeout=30, tamper=None):
        """POST doc as Lark would: encrypted (unless encrypt=False) and signed with the
        encrypt key. ts/nonce/sig override the computed values; tamper(bytes) changes the
        body after signing."""
        key = key or self.ENCRYPT_KEY
        payload = {"encrypt": openssl_encrypt(key, json.dumps(doc))} if encrypt else doc
        raw = json.dumps(payload).encode()
        ts = str(int(time.time())) if ts is None else str(ts)
        nonce = nonce or secrets.token_hex(8)
        headers = {"X-Lark-Request-Timestamp": ts, "X-Lark-Request-Nonce": nonce,
                   "X-Lark-Signature": sig or sign(ts, nonce, key, raw)}
        if tamper:
            raw = tamper(raw)
        return self.post_raw(proxy, raw, headers, timeout=timeout)

    def assert_json_error(self, r, status):
        self.assertEqual(r.status, status, r.text)
        self.assertTrue(r.headers.get("content-type", "").startswith("application/json"), r.headers)
        doc = r.json()
        self.assertIsInstance(doc, dict)
        return doc

    def assert_nothing_acted(self, runs_before, stream_before, webhook_before=0):
        time.sleep(0.3)  # anything started would have shown by now
        self.assertEqual(len(self.runs()), runs_before)
        self.assertEqual(len(self.stream()), stream_before)
        self.assertEqual(len(self.lark.requests("/webhook*")), webhook_before)

    def assert_daemon_logs_clean(self, extra=()):
        """Run after every test (a cleanup, while the mock still knows the tokens it issued):
        the logs of every proxy and poller of the class and of the test."""
        procs = [p for p in type(self)._class_procs + self._test_procs if isinstance(p, (h.Proxy, h.Poller))]
        self.assert_logs_clean(procs, extra)

    def assert_logs_clean(self, procs, extra=()):
        secrets_ = [s for s in list(self.SECRETS) + list(extra) if s]
        st = self.lark.state()
        secrets_ += st["app_tokens"] + st["user_tokens"] + st["refresh_tokens"]
        for p in procs:
            log = p.log()
            self.assertTrue(log, "%s wrote no log" % p.name)
            for s in secrets_:
                self.assertNotIn(s, log, "%s's log contains a secret (%s...)" % (p.name, s[:6]))


# =======================================================================================
# POST /oauth/callback with an encrypt key and a verification token: two replicas
# =======================================================================================

class LarkCallbackTest(LarkMixin, h.TestCase):
    ENCRYPT_KEY = "ek-" + secrets.token_hex(12)
    VERIFICATION_TOKEN = "vt-" + secrets.token_hex(12)
    APP_SECRET = "as-" + secrets.token_hex(12)
    SECRETS = (ENCRYPT_KEY, VERIFICATION_TOKEN, APP_SECRET)

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.redis = cls.start_redis()
        cls.rc = cls.redis.client()
        cls.mock = cls.start_mock()
        cls.lark = cls.track(MockLark(cls.workdir, name=cls.unique_name("mock-lark"))).start()
        cls.setup_refresh_dir()
        cls.env = {
            "LARK_APP_ID": APP_ID, "LARK_APP_SECRET": cls.APP_SECRET,
            "LARK_BASE_URL": cls.lark.url,
            "LARK_ENCRYPT_KEY": cls.ENCRYPT_KEY,
            "LARK_VERIFICATION_TOKEN": cls.VERIFICATION_TOKEN,
            "LARK_CARD_WEBHOOK_URL": cls.lark.url + "/webhook/cards",
            "LARK_REFRESH_COMMAND": cls.refresh_cmd,
        }
        cls.a = cls.start_proxy(cls.mock, cls.redis, name="proxy-a", env=cls.env)
        cls.b = cls.start_proxy(cls.mock, cls.redis, name="proxy-b", env=cls.env)

    @classmethod
    def tearDownClass(cls):
        cls.rc.close()
        super().tearDownClass()

    def setUp(self):
        super().setUp()
        self.lark.reset()
        self.set_mode("ok")
        self.addCleanup(self.assert_daemon_logs_clean)

    def card(self, action, event_id=None, token=None, **value):
        return card_event(event_id or new_event_id(), action, token or self.VERIFICATION_TOKEN, **value)

    # ---- URL verification ----
    def test_challenge_encrypted(self):
        doc = {"challenge": "ch-" + secrets.token_hex(6), "token": self.VERIFICATION_TOKEN,
               "type": "url_verification"}
        # Lark does not sign the URL verification request: unsigned and signed both work.
        r = self.post_raw(self.a, json.dumps({"encrypt": openssl_encrypt(self.ENCRYPT_KEY, json.dumps(doc))}))
        self.assertEqual(r.status, 200, r.text)
        self.assertEqual(r.json(), {"challenge": doc["challenge"]})
        r = self.post_signed(self.b, doc)
        self.assertEqual(r.status, 200, r.text)
        self.assertEqual(r.json(), {"challenge": doc["challenge"]})

    def test_challenge_plain_with_encrypt_key_set(self):
        doc = {"challenge": "plain-1", "token": self.VERIFICATION_TOKEN, "type": "url_verification"}
        r = self.post_raw(self.a, json.dumps(doc))
        self.assertEqual(r.status, 200, r.text)
        self.assertEqual(r.json(), {"challenge": "plain-1"})

    def test_challenge_wrong_or_missing_token(self):
        for doc in ({"challenge": "x", "token": "not-the-token", "type": "url_verification"},
                    {"challenge": "x", "type": "url_verification"},
                    {"challenge": "x"}):
            for encrypt in (False, True):
                body = {"encrypt": openssl_encrypt(self.ENCRYPT_KEY, json.dumps(doc))} if encrypt else doc
                r = self.post_raw(self.a, json.dumps(body))
                err = self.assert_json_error(r, 401)
                self.assertNotIn("challenge", err)

    def test_undecryptable_body(self):
        doc = {"challenge": "x", "token": self.VERIFICATION_TOKEN, "type": "url_verification"}
        cases = [openssl_encrypt("some-other-key", json.dumps(doc)),   # wrong key
                 base64.b64encode(os.urandom(16)).decode(),             # IV only
                 "not base64 at all!",
                 openssl_encrypt(self.ENCRYPT_KEY, "not json")]         # decrypts, not JSON
        for enc in cases:
            r = self.post_raw(self.a, json.dumps({"encrypt": enc}))
            self.assert_json_error(r, 401)
        self.assertTrue(self.a.alive())

    def test_not_json(self):
        for body in (b"", b"not json", b"[1,2]", b'"str"'):
            r = self.post_raw(self.a, body)
            self.assertIn(r.status, (400, 401), r.text)
            self.assertTrue(r.headers.get("content-type", "").startswith("application/json"))

    # ---- signatures and replay ----
    def test_bad_signatures_refused_nothing_acted(self):
        runs0, stream0 = len(self.runs()), len(self.stream())
        doc = self.card("refresh_dashboard")
        ts = str(int(time.time()))
        cases = [
            dict(sig="0" * 64),                                           # wrong value
            dict(sig=sign(ts, "n1", self.ENCRYPT_KEY, b"{}"), ts=ts, nonce="n1"),  # other body
            dict(key="another-encrypt-key"),                              # signed with another key
            dict(tamper=lambda raw: raw.replace(b'"}', b'" }', 1)),      # body changed after signing
            dict(sig="abc"),                                              # not 64 hex digits
        ]
        for kw in cases:
            r = self.post_signed(self.a, doc, **kw)
            err = self.assert_json_error(r, 401)
            self.assertNotIn("toast", err)
        # Signature headers missing (one or all) on an event that acts: refused.
        raw = json.dumps({"encrypt": openssl_encrypt(self.ENCRYPT_KEY, json.dumps(doc))}).encode()
        nonce = "n2"
        good = sign(ts, nonce, self.ENCRYPT_KEY, raw)
        for hdrs in ({},
                     {"X-Lark-Request-Timestamp": ts, "X-Lark-Request-Nonce": nonce},
                     {"X-Lark-Request-Nonce": nonce, "X-Lark-Signature": good},
                     {"X-Lark-Request-Timestamp": ts, "X-Lark-Signature": good}):
            self.assert_json_error(self.post_raw(self.a, raw, hdrs), 401)
        # Plain (unencrypted) card action without a signature: refused too.
        self.assert_json_error(self.post_raw(self.a, json.dumps(doc)), 401)
        self.assert_nothing_acted(runs0, stream0)
        # The same body with the right headers is accepted: the refusals were about the signature.
        r = self.post_raw(self.a, raw, {"X-Lark-Request-Timestamp": ts, "X-Lark-Request-Nonce": nonce,
                                        "X-Lark-Signature": good})
        self.assertEqual(r.status, 200, r.text)
        self.assertEqual(r.json(), {"toast": {"type": "success", "content": "Refreshed"}})
        self.assertEqual(len(self.runs()), runs0 + 1)

    def test_signature_hex_case_insensitive(self):
        doc = self.card("refresh_dashboard")
        raw = json.dumps({"encrypt": openssl_encrypt(self.ENCRYPT_KEY, json.dumps(doc))}).encode()
        ts, nonce = str(int(time.time())), "NONCE"
        r = self.post_raw(self.a, raw, {"X-Lark-Request-Timestamp": ts, "X-Lark-Request-Nonce": nonce,
                                        "X-Lark-Signature": sign(ts, nonce, self.ENCRYPT_KEY, raw).upper()})
        self.assertEqual(r.status, 200, r.text)

    def test_replayed_timestamp_refused(self):
        runs0, stream0 = len(self.runs()), len(self.stream())
        now = int(time.time())
        for ts in (now - 3600, now - 400, now + 400, 0, "garbage"):
            r = self.post_signed(self.a, self.card("refresh_dashboard"), ts=ts)
            self.assert_json_error(r, 401)
        self.assert_nothing_acted(runs0, stream0)
        # Within the default 300 s skew: accepted.
        r = self.post_signed(self.a, self.card("refresh_dashboard"), ts=now - 200)
        self.assertEqual(r.status, 200, r.text)
        self.assertEqual(r.json()["toast"]["type"], "success")

    def test_replay_of_whole_request_within_window_not_acted_twice(self):
        doc = self.card("refresh_dashboard")
        raw = json.dumps({"encrypt": openssl_encrypt(self.ENCRYPT_KEY, json.dumps(doc))}).encode()
        ts, nonce = str(int(time.time())), secrets.token_hex(8)
        hdrs = {"X-Lark-Request-Timestamp": ts, "X-Lark-Request-Nonce": nonce,
                "X-Lark-Signature": sign(ts, nonce, self.ENCRYPT_KEY, raw)}
        runs0 = len(self.runs())
        r1 = self.post_raw(self.a, raw, hdrs)
        r2 = self.post_raw(self.b, raw, hdrs)
        self.assertEqual(r1.json()["toast"]["type"], "success")
        self.assertEqual(r2.status, 200, r2.text)
        self.assertNotEqual(r2.json().get("toast", {}).get("type"), "success")
        self.assertEqual(len(self.runs()), runs0 + 1)
        self.assertEqual(len(self.stream_for(doc["header"]["event_id"])), 1)

    def test_wrong_verification_token_in_signed_card(self):
        runs0, stream0 = len(self.runs()), len(self.stream())
        for token in ("wrong-token", None):
            doc = self.card("refresh_dashboard")
            if token is None:
                del doc["header"]["token"]
            else:
                doc["header"]["token"] = token
            self.assert_json_error(self.post_signed(self.a, doc), 401)
        self.assert_nothing_acted(runs0, stream0)

    # ---- refresh_dashboard ----
    def test_refresh_dashboard_success_and_stream_entry(self):
        runs0 = len(self.runs())
        doc = self.card("refresh_dashboard", dashboard="ops")
        eid = doc["header"]["event_id"]
        r = self.post_signed(self.a, doc)
        self.assertEqual(r.status, 200, r.text)
        self.assertTrue(r.headers["content-type"].startswith("application/json"))
        self.assertEqual(r.json(), {"toast": {"type": "success", "content": "Refreshed"}})
        runs = self.runs()
        self.assertEqual(len(runs), runs0 + 1)
        # argv as configured, split on blanks, shell syntax literal: no shell ran it.
        self.assertEqual(runs[-1], self.refresh_args_line)
        self.assertFalse((self.refresh_dir / "pwned").exists())
        entries = self.stream_for(eid)
        self.assertEqual(len(entries), 1)
        e = entries[0]
        self.assertEqual(e["event_type"], "card.action.trigger")
        self.assertEqual(e["action"], "refresh_dashboard")
        self.assertEqual(json.loads(e["body"]), doc)   # the decrypted event, whole
        self.assertEqual(self.lark.requests("/webhook*"), [])
        # The stream is capped.
        info = self.rc.cmd("XINFO", "STREAM", PREFIX + "lark:cards")
        self.assertIn("length", info)

    def test_refresh_dashboard_plain_signed_body(self):
        # Plain (not encrypted) bodies are accepted when signed.
        runs0 = len(self.runs())
        doc = self.card("refresh_dashboard")
        r = self.post_signed(self.b, doc, encrypt=False)
        self.assertEqual(r.status, 200, r.text)
        self.assertEqual(r.json()["toast"]["type"], "success")
        self.assertEqual(len(self.runs()), runs0 + 1)
        self.assertEqual(len(self.stream_for(doc["header"]["event_id"])), 1)

    def test_refresh_dashboard_failure(self):
        self.set_mode("fail")
        runs0 = len(self.runs())
        r = self.post_signed(self.a, self.card("refresh_dashboard"))
        self.assertEqual(r.status, 200, r.text)
        toast = r.json()["toast"]
        self.assertEqual(toast["type"], "error")
        self.assertIn("3", toast["content"])
        self.assertIn("dashboard backend unavailable", toast["content"])
        self.assertNotIn("a second line", toast["content"])   # short reason: first line only
        self.assertLess(len(toast["content"]), 300)
        self.assertEqual(len(self.runs()), runs0 + 1)

    def test_refresh_dashboard_timeout_does_not_block(self):
        self.set_mode("sleep")
        result = {}

        def call():
            t0 = time.monotonic()
            result["r"] = self.post_signed(self.a, self.card("refresh_dashboard"), timeout=60 * SLOW)
            result["t"] = time.monotonic() - t0

        th = threading.Thread(target=call)
        th.start()
        h.wait_until(lambda: len(self.runs()) > 0 and self.runs()[-1] == self.refresh_args_line, 5 * SLOW)
        time.sleep(0.5)
        # While the command runs, the same replica answers other requests at once.
        for _ in range(3):
            t0 = time.monotonic()
            self.assertEqual(h.request("GET", self.a.url + "/health", timeout=5).status, 200)
            self.assertLess(time.monotonic() - t0, 1.0 * SLOW)
        self.set_mode("ok")
        t0 = time.monotonic()
        r = self.post_signed(self.a, self.card("refresh_dashboard"), timeout=10 * SLOW)
        self.assertLess(time.monotonic() - t0, 3.0 * SLOW)
        self.assertEqual(r.json()["toast"]["type"], "success")
        t0 = time.monotonic()
        r = self.post_signed(self.a, self.card("approve"), timeout=10 * SLOW)
        self.assertEqual(r.status, 200, r.text)
        self.assertLess(time.monotonic() - t0, 3.0 * SLOW)
        th.join(REFRESH_LIMIT_S + 15 * SLOW)
        self.assertFalse(th.is_alive())
        r = result["r"]
        self.assertEqual(r.status, 200, r.text)
        toast = r.json()["toast"]
        self.assertEqual(toast["type"], "error")
        self.assertIn("timed out", toast["content"])
        self.assertGreater(result["t"], REFRESH_LIMIT_S - 1)
        self.assertLess(result["t"], REFRESH_LIMIT_S + 5 * SLOW)
        self.assertTrue(self.a.alive())

    # ---- forwarding ----
    def test_forward_other_action(self):
        reply = {"toast": {"type": "info", "content": "Approved"},
                 "card": {"type": "raw", "data": {"elements": []}}}
        self.lark.control(webhook={"status": 200, "body": reply})
        doc = self.card("approve", ticket="T-42")
        r = self.post_signed(self.a, doc)
        self.assertEqual(r.status, 200, r.text)
        self.assertEqual(r.json(), reply)
        got = self.lark.requests("/webhook/cards")
        self.assertEqual(len(got), 1)
        self.assertEqual(got[0]["method"], "POST")
        self.assertTrue(got[0]["headers"].get("Content-Type", "").startswith("application/json"))
        self.assertEqual(got[0]["json"], doc)   # the decrypted callback
        self.assertEqual(self.runs().count(self.refresh_args_line), len(self.runs()))
        e = self.stream_for(doc["header"]["event_id"])
        self.assertEqual(len(e), 1)
        self.assertEqual(e[0]["action"], "approve")

    def test_forward_relays_status(self):
        self.lark.control(webhook={"status": 202, "body": {"accepted": True}})
        r = self.post_signed(self.b, self.card("approve"))
        self.assertEqual(r.status, 202, r.text)
        self.assertEqual(r.json(), {"accepted": True})
        # A non-JSON answer still gives the card a JSON answer.
        self.lark.control(webhook={"status": 200, "body_text": "<html>ok</html>"})
        r = self.post_signed(self.b, self.card("approve"))
        self.assertTrue(r.headers.get("content-type", "").startswith("application/json"), r.headers)
        r.json()

    def test_forward_action_without_value_action(self):
        doc = self.card("x")
        del doc["event"]["action"]["value"]["action"]
        r = self.post_signed(self.a, doc)
        self.assertEqual(r.status, 200, r.text)
        self.assertEqual(len(self.lark.requests("/webhook*")), 1)
        self.assertEqual(self.stream_for(doc["header"]["event_id"])[0]["action"], "")

    def test_forward_timeout_answers_json_error(self):
        self.lark.control(webhook={"status": 200, "body": {"late": True}, "delay_ms": 8000})
        t0 = time.monotonic()
        r = self.post_signed(self.a, self.card("approve"), timeout=30 * SLOW)
        took = time.monotonic() - t0
        doc = self.assert_json_error(r, r.status)
        self.assertNotEqual(r.status, 500)
        self.assertGreaterEqual(r.status, 400)
        self.assertIn("error", doc)
        self.assertGreater(took, FORWARD_LIMIT_S - 1)
        self.assertLess(took, FORWARD_LIMIT_S + 2.5 * SLOW)

    # ---- duplicates across replicas ----
    def _concurrent(self, doc, n_per_replica=1):
        replicas = [self.a, self.b] * n_per_replica
        barrier = threading.Barrier(len(replicas))
        results = [None] * len(replicas)

        def go(i, proxy):
            # Each delivery is encrypted and signed afresh, as Lark's redelivery would be.
            payload = json.dumps({"encrypt": openssl_encrypt(self.ENCRYPT_KEY, json.dumps(doc))}).encode()
            ts, nonce = str(int(time.time())), secrets.token_hex(8)
            hdrs = {"X-Lark-Request-Timestamp": ts, "X-Lark-Request-Nonce": nonce,
                    "X-Lark-Signature": sign(ts, nonce, self.ENCRYPT_KEY, payload)}
            barrier.wait(10)
            try:
                results[i] = self.post_raw(proxy, payload, hdrs, timeout=30 * SLOW)
            except Exception as e:  # reported below
                results[i] = e

        threads = [threading.Thread(target=go, args=(i, p)) for i, p in enumerate(replicas)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(40 * SLOW)
        for r in results:
            self.assertIsInstance(r, h.Response, r)
            self.assertEqual(r.status, 200, r.text)
        return [r.json() for r in results]

    def test_duplicate_refresh_on_two_replicas_acted_once(self):
        for round_ in range(5):
            doc = self.card("refresh_dashboard")
            eid = doc["header"]["event_id"]
            runs0 = len(self.runs())
            answers = self._concurrent(doc, n_per_replica=2)
            success = [a for a in answers if a.get("toast", {}).get("type") == "success"]
            self.assertEqual(len(success), 1, answers)
            self.assertEqual(len(self.runs()), runs0 + 1, "round %d" % round_)
            self.assertEqual(len(self.stream_for(eid)), 1)
        # Later redelivery to either replica: still once.
        runs0 = len(self.runs())
        for p in (self.a, self.b):
            r = self.post_signed(p, doc)
            self.assertEqual(r.status, 200, r.text)
            self.assertNotEqual(r.json().get("toast", {}).get("type"), "success")
        time.sleep(0.3)
        self.assertEqual(len(self.runs()), runs0)
        self.assertEqual(len(self.stream_for(eid)), 1)

    def test_duplicate_forward_on_two_replicas_acted_once(self):
        self.lark.control(webhook={"status": 200, "body": {"toast": {"type": "info", "content": "ok"}}})
        doc = self.card("approve")
        answers = self._concurrent(doc)
        self.assertIn({"toast": {"type": "info", "content": "ok"}}, answers)
        time.sleep(0.3)
        self.assertEqual(len(self.lark.requests("/webhook*")), 1)
        self.assertEqual(len(self.stream_for(doc["header"]["event_id"])), 1)

    # ---- anything else ----
    def test_other_events_ok(self):
        stream0 = len(self.stream())
        doc = {"schema": "2.0",
               "header": {"event_id": new_event_id(), "token": self.VERIFICATION_TOKEN,
                          "event_type": "im.message.receive_v1", "create_time": "1",
                          "tenant_key": "t", "app_id": APP_ID},
               "event": {"message": {"content": "{\"text\":\"hi\"}"}}}
        r = self.post_signed(self.a, doc)
        self.assertEqual(r.status, 200, r.text)
        self.assertEqual(r.json(), {"status": "ok"})
        v1 = {"uuid": "u-" + secrets.token_hex(4), "token": self.VERIFICATION_TOKEN, "ts": "1.0",
              "type": "event_callback", "event": {"type": "message"}}
        r = self.post_signed(self.b, v1, encrypt=False)
        self.assertEqual(r.json(), {"status": "ok"})
        self.assert_nothing_acted(len(self.runs()), stream0)

    def test_method_not_allowed(self):
        r = h.request("PUT", self.a.url + "/oauth/callback", body={"x": 1})
        self.assertIn(r.status, (404, 405))

    def test_max_skew_configurable(self):
        p = self.start_proxy(self.mock, self.redis, name=self.unique_name("proxy-skew"),
                             env=dict(self.env, LARK_MAX_SKEW_SECONDS="30"))
        now = int(time.time())
        self.assert_json_error(self.post_signed(p, self.card("other"), ts=now - 60), 401)
        self.assert_json_error(self.post_signed(p, self.card("other"), ts=now + 60), 401)
        r = self.post_signed(p, self.card("other"), ts=now - 10)
        self.assertEqual(r.status, 200, r.text)

    def test_refresh_command_missing(self):
        p = self.start_proxy(self.mock, self.redis, name=self.unique_name("proxy-nocmd"),
                             env=dict(self.env, LARK_REFRESH_COMMAND="/nonexistent/refresh-dashboard --now"))
        r = self.post_signed(p, self.card("refresh_dashboard"))
        self.assertEqual(r.status, 200, r.text)
        self.assertEqual(r.json()["toast"]["type"], "error")
        self.assertTrue(p.alive())

    def test_zz_logs_have_no_secrets(self):
        # Last in the class (unittest sorts by name): every earlier test's log lines are in.
        self.assert_logs_clean([self.a, self.b])


# =======================================================================================
# Forward target down, and configurations without an encrypt key
# =======================================================================================

class LarkPlainTest(LarkMixin, h.TestCase):
    ENCRYPT_KEY = None
    VERIFICATION_TOKEN = "vt-" + secrets.token_hex(12)
    SECRETS = (VERIFICATION_TOKEN,)

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.redis = cls.start_redis()
        cls.rc = cls.redis.client()
        cls.mock = cls.start_mock()
        cls.lark = cls.track(MockLark(cls.workdir, name=cls.unique_name("mock-lark"))).start()
        cls.setup_refresh_dir()
        cls.dead_port = h.free_port()
        # Verification token only; the card webhook is a port nobody listens on.
        cls.vt = cls.start_proxy(cls.mock, cls.redis, name="proxy-vt", env={
            "LARK_VERIFICATION_TOKEN": cls.VERIFICATION_TOKEN,
            "LARK_CARD_WEBHOOK_URL": "http://127.0.0.1:%d/webhook" % cls.dead_port,
            "LARK_REFRESH_COMMAND": cls.refresh_cmd,
        })
        # A verification token and no handlers.
        cls.bare = cls.start_proxy(cls.mock, cls.redis, name="proxy-bare", env={
            "LARK_VERIFICATION_TOKEN": cls.VERIFICATION_TOKEN})
        # Handlers, but neither an encrypt key nor a verification token (docker-compose maps both
        # to empty strings): nothing proves a callback comes from Lark.
        cls.open = cls.start_proxy(cls.mock, cls.redis, name="proxy-open", env={
            "LARK_VERIFICATION_TOKEN": "", "LARK_ENCRYPT_KEY": "",
            "LARK_CARD_WEBHOOK_URL": cls.lark.url + "/webhook",
            "LARK_REFRESH_COMMAND": cls.refresh_cmd,
        })

    @classmethod
    def tearDownClass(cls):
        cls.rc.close()
        super().tearDownClass()

    def setUp(self):
        super().setUp()
        self.set_mode("ok")
        self.addCleanup(self.assert_daemon_logs_clean)

    def test_challenge_plain(self):
        r = self.post_raw(self.vt, json.dumps({"challenge": "abc", "token": self.VERIFICATION_TOKEN,
                                               "type": "url_verification"}))
        self.assertEqual(r.status, 200, r.text)
        self.assertEqual(r.json(), {"challenge": "abc"})
        self.assert_json_error(self.post_raw(self.vt, json.dumps(
            {"challenge": "abc", "token": "nope", "type": "url_verification"})), 401)

    def test_bare_challenge(self):
        r = self.post_raw(self.open, json.dumps({"challenge": "bare-1"}))
        self.assertEqual(r.status, 200, r.text)
        self.assertEqual(r.json(), {"challenge": "bare-1"})
        # With a verification token configured, a bare challenge has no token: refused.
        self.assert_json_error(self.post_raw(self.vt, json.dumps({"challenge": "bare-1"})), 401)

    def test_encrypted_body_without_key(self):
        r = self.post_raw(self.open, json.dumps({"encrypt": openssl_encrypt("k", '{"challenge":"x"}')}))
        self.assertIn(r.status, (400, 401), r.text)
        self.assertNotIn("x", r.json().get("challenge", ""))

    def test_unsigned_card_acted_when_no_encrypt_key(self):
        doc = card_event(new_event_id(), "refresh_dashboard", self.VERIFICATION_TOKEN)
        runs0 = len(self.runs())
        r = self.post_raw(self.vt, json.dumps(doc))
        self.assertEqual(r.status, 200, r.text)
        self.assertEqual(r.json(), {"toast": {"type": "success", "content": "Refreshed"}})
        self.assertEqual(len(self.runs()), runs0 + 1)
        # Token checked on card actions too.
        bad = card_event(new_event_id(), "refresh_dashboard", "wrong")
        self.assert_json_error(self.post_raw(self.vt, json.dumps(bad)), 401)
        self.assertEqual(len(self.runs()), runs0 + 1)

    def test_forward_target_down(self):
        doc = card_event(new_event_id(), "approve", self.VERIFICATION_TOKEN)
        t0 = time.monotonic()
        r = self.post_raw(self.vt, json.dumps(doc))
        self.assertLess(time.monotonic() - t0, FORWARD_LIMIT_S + 1 * SLOW)
        err = self.assert_json_error(r, r.status)
        self.assertNotEqual(r.status, 500)
        self.assertGreaterEqual(r.status, 400)
        self.assertIn("error", err)
        self.assertTrue(self.vt.alive())
        # Still recorded for other consumers.
        self.assertEqual(len(self.stream_for(doc["header"]["event_id"])), 1)

    def test_not_configured_handlers(self):
        # No refresh command / no webhook: an answer, not a crash or a hang.
        doc = card_event(new_event_id(), "refresh_dashboard", self.VERIFICATION_TOKEN)
        r = self.post_raw(self.bare, json.dumps(doc))
        self.assertEqual(r.status, 200, r.text)
        self.assertEqual(r.json()["toast"]["type"], "error")
        doc = card_event(new_event_id(), "approve", self.VERIFICATION_TOKEN)
        r = self.post_raw(self.bare, json.dumps(doc))
        self.assertEqual(r.status, 200, r.text)
        self.assertIn("toast", r.json())

    def test_card_actions_refused_without_key_or_token(self):
        # Anyone could otherwise run LARK_REFRESH_COMMAND, call the webhook and fill Redis.
        runs0, stream0 = len(self.runs()), len(self.stream())
        hooks0 = len(self.lark.requests("/webhook*"))
        for action, token in (("refresh_dashboard", None), ("approve", None), ("refresh_dashboard", "anything")):
            doc = card_event(new_event_id(), action, token)
            if token is None:
                del doc["header"]["token"]
            err = self.assert_json_error(self.post_raw(self.open, json.dumps(doc)), 403)
            self.assertIn("LARK_VERIFICATION_TOKEN", err["error"])
            self.assertIn("LARK_ENCRYPT_KEY", err["error"])
        self.assert_nothing_acted(runs0, stream0, hooks0)
        self.assertEqual(self.rc.cmd("KEYS", PREFIX + "lark:event:*") or [], [])
        # Said at startup, as a warning since handlers are configured; and each refusal is logged.
        log = self.open.log()
        self.assertRegex(log, r'"level":"warn".*neither LARK_ENCRYPT_KEY nor LARK_VERIFICATION_TOKEN is set')
        self.assertIn("card action refused", log)
        # What acts on nothing still works.
        r = self.post_raw(self.open, json.dumps({"challenge": "still-1"}))
        self.assertEqual(r.json(), {"challenge": "still-1"})

    def test_stored_callbacks_capped(self):
        # The stream keeps every card action's body: each one is capped (LARK_MAX_EVENT_BYTES).
        runs0, stream0 = len(self.runs()), len(self.stream())
        big = card_event(new_event_id(), "refresh_dashboard", self.VERIFICATION_TOKEN, note="x" * 20000)
        err = self.assert_json_error(self.post_raw(self.vt, json.dumps(big)), 413)
        self.assertIn("LARK_MAX_EVENT_BYTES", err["error"])
        huge = card_event(new_event_id(), "approve", self.VERIFICATION_TOKEN, note="y" * (1 << 20))
        self.assert_json_error(self.post_raw(self.vt, json.dumps(huge)), 413)
        self.assert_nothing_acted(runs0, stream0)
        self.assertTrue(self.vt.alive())
        # Just under the cap: acted on and stored whole.
        ok = card_event(new_event_id(), "refresh_dashboard", self.VERIFICATION_TOKEN, note="z" * 14000)
        r = self.post_raw(self.vt, json.dumps(ok))
        self.assertEqual(r.status, 200, r.text)
        entry = self.stream_for(ok["header"]["event_id"])
        self.assertEqual(len(entry), 1)
        self.assertEqual(json.loads(entry[0]["body"])["event"]["action"]["value"]["note"], "z" * 14000)

    def test_duplicate_members_refused(self):
        # Read as Lark's own parser would not: a duplicated member is a 400, nothing acted.
        runs0, stream0 = len(self.runs()), len(self.stream())
        doc = card_event(new_event_id(), "refresh_dashboard", self.VERIFICATION_TOKEN)
        raw = json.dumps(doc)
        raw = raw.replace('"schema": "2.0"', '"schema": "2.0", "header": {"token": "%s"}' % self.VERIFICATION_TOKEN, 1)
        err = self.assert_json_error(self.post_raw(self.vt, raw), 400)
        self.assertIn("duplicate member name", err["error"])
        self.assert_nothing_acted(runs0, stream0)

    def test_other_and_get_without_code(self):
        r = self.post_raw(self.open, json.dumps({"hello": "world"}))
        self.assertEqual(r.json(), {"status": "ok"})
        for q in ("", "?state=abc", "?foo=bar"):
            r = h.request("GET", self.open.url + "/oauth/callback" + q)
            self.assertEqual(r.status, 200, r.text)
            self.assertEqual(r.json(), {"status": "ok"})

    def test_get_with_code_but_app_not_configured(self):
        r = h.request("GET", self.open.url + "/oauth/callback?code=good-x&state=s")
        self.assertGreaterEqual(r.status, 400)
        html_page_ok(self, r)
        self.assertEqual(self.lark.requests(), [])

    def test_zz_logs_have_no_secrets(self):
        self.assert_logs_clean([self.vt, self.bare, self.open])


# =======================================================================================
# Shutdown with a Lark callback in flight
# =======================================================================================

class LarkShutdownTest(LarkMixin, h.TestCase):
    """SIGTERM must let in-flight requests finish (SHUTDOWN_GRACE_SECONDS) and exit 0, Lark
    callbacks included, and teardown must answer what is still pending without touching
    freed requests."""

    ENCRYPT_KEY = None
    SECRETS = ()

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.mock = cls.start_mock()
        cls.lark = cls.track(MockLark(cls.workdir, name=cls.unique_name("mock-lark"))).start()
        cls.setup_refresh_dir()

    def start(self):
        redis = self.start_redis()
        self.rc = redis.client()
        self.addCleanup(self.rc.close)
        proxy = self.start_proxy(self.mock, redis, name=self.unique_name("proxy"), env={
            "LARK_VERIFICATION_TOKEN": "t",
            "LARK_REFRESH_COMMAND": self.refresh_cmd,
            "LARK_CARD_WEBHOOK_URL": self.lark.url + "/webhook"})
        return redis, proxy

    def in_background(self, fn):
        res = {}

        def run():
            try:
                res["r"] = fn()
            except Exception as e:  # the answer, or how it failed
                res["r"] = e

        t = threading.Thread(target=run)
        t.start()
        return t, res

    def test_sigterm_with_event_record_pending_exits_cleanly(self):
        # Teardown frees Redis first: the pending EVAL's callback (NULL reply) answers its
        # request while the HTTP server still exists (this used to be a use-after-free).
        redis, proxy = self.start()
        doc = card_event(new_event_id(), "approve", "t")
        with redis.client() as pauser:
            pauser.cmd("CLIENT", "PAUSE", "2000", "ALL")   # the EVAL stays pending
            th, res = self.in_background(lambda: self.post_raw(proxy, json.dumps(doc), timeout=15 * SLOW))
            time.sleep(0.5)
            rc = proxy.stop()
        th.join(20 * SLOW)
        self.assertEqual(rc, 0, "api-proxy exited with %s on SIGTERM; log tail:\n%s" % (rc, proxy.log_tail(30)))

    def test_sigterm_lets_refresh_in_flight_finish(self):
        # The drain waits for the refresh command: the client gets its toast.
        self.set_mode("slow")   # 2 s, well within SHUTDOWN_GRACE_SECONDS (30)
        redis, proxy = self.start()
        runs0 = len(self.runs())
        doc = card_event(new_event_id(), "refresh_dashboard", "t")
        th, res = self.in_background(lambda: self.post_raw(proxy, json.dumps(doc), timeout=15 * SLOW))
        h.wait_until(lambda: len(self.runs()) > runs0, 5 * SLOW)
        rc = proxy.stop()
        th.join(20 * SLOW)
        self.assertEqual(rc, 0)
        r = res.get("r")
        self.assertIsInstance(r, h.Response, "the client got no answer: %r" % (r,))
        self.assertEqual(r.json(), {"toast": {"type": "success", "content": "Refreshed"}})


# =======================================================================================
# OAuth: /admin/lark/authorize and GET /oauth/callback?code=..&state=..
# =======================================================================================

class LarkOAuthTest(LarkMixin, h.TestCase):
    APP_SECRET = "as-" + secrets.token_hex(12)
    SECRETS = (APP_SECRET,)
    REDIRECT = "https://gw.example.com/oauth/callback?x=1&y=2"

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.redis = cls.start_redis()
        cls.rc = cls.redis.client()
        cls.mock = cls.start_mock()
        cls.lark = cls.track(MockLark(cls.workdir, name=cls.unique_name("mock-lark"))).start()
        cls.token_dir = cls.workdir / "tokens"
        cls.token_dir.mkdir()
        cls.token_file = cls.token_dir / "lark_token.json"
        cls.proxy = cls.start_proxy(cls.mock, cls.redis, name="proxy-oauth", env={
            "LARK_APP_ID": APP_ID, "LARK_APP_SECRET": cls.APP_SECRET,
            "LARK_BASE_URL": cls.lark.url + "/",
            "LARK_TOKEN_FILE": str(cls.token_file),
            "LARK_REDIRECT_URI": cls.REDIRECT,
        })
        cls.codes = []

    @classmethod
    def tearDownClass(cls):
        cls.rc.close()
        super().tearDownClass()

    def setUp(self):
        super().setUp()
        # Checked after every test, while the mock still knows the tokens it issued.
        self.addCleanup(self.assert_daemon_logs_clean, self.codes)
        self.lark.reset(app_id=APP_ID, app_secret=self.APP_SECRET)
        self.rc.cmd("DEL", PREFIX + "lark:user_token")
        if self.token_file.exists():
            self.token_file.unlink()

    def code(self):
        c = "good-" + secrets.token_hex(10)
        type(self).codes.append(c)
        return c

    def mint_state(self, **query):
        path = "/admin/lark/authorize" + ("?" + "&".join("%s=%s" % (k, quote(v, safe=""))
                                                         for k, v in query.items()) if query else "")
        status, doc = self.proxy.admin("GET", path)
        self.assertEqual(status, 200, doc)
        return doc

    def callback(self, code=None, state=None, raw_query=None):
        q = raw_query if raw_query is not None else "&".join(
            "%s=%s" % (k, quote(v, safe="")) for k, v in (("code", code), ("state", state)) if v is not None)
        return h.request("GET", self.proxy.url + "/oauth/callback" + ("?" + q if q else ""), timeout=30 * SLOW)

    # ---- authorize ----
    def test_authorize_url_and_state(self):
        doc = self.mint_state()
        self.assertRegex(doc["state"], r"^[0-9a-f]{32}$")
        self.assertEqual(doc["expires_in"], 600)
        u = urlsplit(doc["url"])
        self.assertEqual("%s://%s" % (u.scheme, u.netloc), self.lark.url)
        self.assertEqual(u.path, "/open-apis/authen/v1/authorize")
        q = parse_qs(u.query)
        self.assertEqual(q["app_id"], [APP_ID])
        self.assertEqual(q["redirect_uri"], [self.REDIRECT])
        self.assertEqual(q["state"], [doc["state"]])
        ttl = self.rc.cmd("TTL", PREFIX + "lark:state:" + doc["state"])
        self.assertTrue(590 <= ttl <= 600, ttl)
        # Fresh every time.
        self.assertNotEqual(self.mint_state()["state"], doc["state"])
        # Override of the redirect URI.
        other = self.mint_state(redirect_uri="https://other.example/cb")
        self.assertEqual(parse_qs(urlsplit(other["url"]).query)["redirect_uri"], ["https://other.example/cb"])

    def test_authorize_needs_admin_key(self):
        before = len(self.rc.cmd("KEYS", PREFIX + "lark:state:*"))
        r = h.request("GET", self.proxy.url + "/admin/lark/authorize")
        self.assertIn(r.status, (401, 403))
        r = h.request("GET", self.proxy.url + "/admin/lark/authorize", headers={"x-api-key": "sk-wrong"})
        self.assertIn(r.status, (401, 403))
        self.assertNotIn("state", r.text)
        self.assertEqual(len(self.rc.cmd("KEYS", PREFIX + "lark:state:*")), before)

    # ---- code exchange ----
    def test_oauth_success(self):
        # A stale token file with loose permissions is replaced, not rewritten in place.
        self.token_file.write_text("old")
        self.token_file.chmod(0o644)
        state = self.mint_state()["state"]
        code = self.code()
        t0 = time.time()
        r = self.callback(code, state)
        self.assertEqual(r.status, 200, r.text)
        html_page_ok(self, r)
        self.assertIn("successful", r.text)
        # Lark saw: app token with our credentials, then the code with that token.
        app = self.lark.requests("/open-apis/auth/v3/app_access_token/internal")
        self.assertEqual(len(app), 1)
        self.assertEqual(app[0]["json"], {"app_id": APP_ID, "app_secret": self.APP_SECRET})
        ex = self.lark.requests("/open-apis/authen/v1/oidc/access_token")
        self.assertEqual(len(ex), 1)
        st = self.lark.state()
        self.assertEqual(ex[0]["headers"].get("Authorization"), "Bearer " + st["app_tokens"][-1])
        self.assertEqual(ex[0]["json"], {"grant_type": "authorization_code", "code": code})
        # Stored in Redis.
        stored = self.rc.cmd("GET", PREFIX + "lark:user_token")
        self.assertIsNotNone(stored)
        tok = json.loads(stored)
        self.assertEqual(tok["access_token"], st["user_tokens"][-1])
        self.assertIn(tok["refresh_token"], st["refresh_tokens"])
        self.assertEqual(tok["expires_in"], 7200)
        self.assertAlmostEqual(tok["obtained_at_ms"] / 1000, t0, delta=5)
        self.assertAlmostEqual(tok["expires_at_ms"], tok["obtained_at_ms"] + 7200 * 1000, delta=1)
        self.assertAlmostEqual(tok["refresh_expires_at_ms"], tok["obtained_at_ms"] + 2592000 * 1000, delta=1)
        # And in the token file: 0600, same JSON, no temporary files left.
        mode = stat.S_IMODE(os.stat(self.token_file).st_mode)
        self.assertEqual(mode, 0o600, oct(mode))
        self.assertEqual(json.loads(self.token_file.read_text()), tok)
        self.assertEqual(sorted(p.name for p in self.token_dir.iterdir()), [self.token_file.name])
        # The state is used up.
        self.assertIsNone(self.rc.cmd("GET", PREFIX + "lark:state:" + state))

    def test_state_used_once(self):
        state = self.mint_state()["state"]
        r = self.callback(self.code(), state)
        self.assertEqual(r.status, 200, r.text)
        first = self.rc.cmd("GET", PREFIX + "lark:user_token")
        self.lark.clear_requests()
        r = self.callback(self.code(), state)
        self.assertEqual(r.status, 400, r.text)
        html_page_ok(self, r)
        self.assertNotIn("successful", r.text)
        self.assertEqual(self.lark.requests(), [])
        self.assertEqual(self.rc.cmd("GET", PREFIX + "lark:user_token"), first)

    def test_success_page_only_once_the_token_is_stored(self):
        # Regression: the page said "successful" as soon as the write was queued, so a reader
        # right after it (another replica, the poller) could still find no token. While Lark
        # answers the code exchange (held 300 ms), Redis starts holding writes for 800 ms
        # (CLIENT PAUSE WRITE lets reads through): the page must wait for the write.
        self.lark.control(exchange_delay_ms=300)
        state = self.mint_state()["state"]
        out = {}
        t = threading.Thread(target=lambda: out.update(r=self.callback(self.code(), state)))
        t.start()
        h.wait_until(lambda: any(q["path"].endswith("/oidc/access_token") for q in self.lark.requests()),
                     5, interval=0.005, message="the code exchange reached Lark")
        self.rc.cmd("CLIENT", "PAUSE", "800", "WRITE")
        t.join(30 * SLOW)
        r = out["r"]
        self.assertEqual(r.status, 200, r.text)
        self.assertIn("successful", r.text)
        self.assertIsNotNone(self.rc.cmd("GET", PREFIX + "lark:user_token"),
                             "the page was answered with the token not yet in Redis")

    def test_bad_state(self):
        cases = [("good-x", "never-minted-" + secrets.token_hex(4)),
                 ("good-x", None),
                 ("good-x", ""),
                 ("good-x", "s" * 500)]
        for code, state in cases:
            r = self.callback(code, state)
            self.assertEqual(r.status, 400, (state, r.text))
            html_page_ok(self, r)
        # Expired state.
        state = self.mint_state()["state"]
        self.rc.cmd("PEXPIRE", PREFIX + "lark:state:" + state, 1)
        time.sleep(0.05)
        self.assertEqual(self.callback(self.code(), state).status, 400)
        self.assertEqual(self.lark.requests(), [])
        self.assertIsNone(self.rc.cmd("GET", PREFIX + "lark:user_token"))
        self.assertFalse(self.token_file.exists())

    def test_exchange_failure_page_escapes_error(self):
        evil = '{"code":20003,"msg":"<script>alert(\'x\')</script> & \\"more\\""}'
        self.lark.control(fail={"exchange": {"status": 400, "body": evil}})
        state = self.mint_state()["state"]
        r = self.callback(self.code(), state)
        self.assertGreaterEqual(r.status, 400, r.text)
        self.assertNotEqual(r.status, 200)
        html_page_ok(self, r)
        self.assertIn("failed", r.text)
        self.assertNotIn("<script>", r.text)
        self.assertIn("&lt;script&gt;alert(", r.text)
        self.assertIn("&amp;", r.text)
        self.assertIsNone(self.rc.cmd("GET", PREFIX + "lark:user_token"))
        self.assertFalse(self.token_file.exists())

    def test_app_token_failure(self):
        self.lark.control(app_secret="a-different-secret")
        r = self.callback(self.code(), self.mint_state()["state"])
        self.assertGreaterEqual(r.status, 400)
        html_page_ok(self, r)
        self.assertIn("failed", r.text)
        self.assertIn("app secret invalid", r.text)
        self.assertEqual(self.lark.requests("/open-apis/authen/v1/oidc/access_token"), [])
        self.assertIsNone(self.rc.cmd("GET", PREFIX + "lark:user_token"))

    def test_invalid_code(self):
        r = self.callback("bad-code", self.mint_state()["state"])
        self.assertGreaterEqual(r.status, 400)
        html_page_ok(self, r)
        self.assertIn("invalid code", r.text)
        self.assertIsNone(self.rc.cmd("GET", PREFIX + "lark:user_token"))

    def test_code_with_special_characters(self):
        # The code goes into JSON, not into a URL or a header: any text is safe.
        code = 'good-"quoted"\\&<x>'
        self.lark.add_codes(code)
        type(self).codes.append(code)
        r = self.callback(code, self.mint_state()["state"])
        self.assertEqual(r.status, 200, r.text)
        self.assertEqual(self.lark.requests("/open-apis/authen/v1/oidc/access_token")[0]["json"]["code"], code)

    def test_lark_unreachable(self):
        port = h.free_port()
        p = self.start_proxy(self.mock, self.redis, name=self.unique_name("proxy-nolark"), env={
            "LARK_APP_ID": APP_ID, "LARK_APP_SECRET": self.APP_SECRET,
            "LARK_BASE_URL": "http://127.0.0.1:%d" % port})
        status, doc = p.admin("GET", "/admin/lark/authorize?redirect_uri=https%3A%2F%2Fx.example%2Fcb")
        self.assertEqual(status, 200, doc)
        r = h.request("GET", p.url + "/oauth/callback?code=good-1&state=" + doc["state"], timeout=30 * SLOW)
        self.assertGreaterEqual(r.status, 500)
        html_page_ok(self, r)
        self.assertIn("failed", r.text)
        self.assertTrue(p.alive())
        self.assert_logs_clean([p])

    def test_token_file_unwritable(self):
        d = self.workdir / "ro"
        d.mkdir(exist_ok=True)
        p = self.start_proxy(self.mock, self.redis, name=self.unique_name("proxy-badfile"), env={
            "LARK_APP_ID": APP_ID, "LARK_APP_SECRET": self.APP_SECRET,
            "LARK_BASE_URL": self.lark.url,
            "LARK_TOKEN_FILE": str(d / "missing-dir" / "token.json")})
        status, doc = p.admin("GET", "/admin/lark/authorize?redirect_uri=https%3A%2F%2Fx.example%2Fcb")
        r = h.request("GET", p.url + "/oauth/callback?code=%s&state=%s" % (self.code(), doc["state"]))
        self.assertGreaterEqual(r.status, 500)
        html_page_ok(self, r)
        self.assertIn("failed", r.text)

    def test_zz_logs_have_no_secrets(self):
        self.assert_logs_clean([self.proxy], extra=self.codes)


# =======================================================================================
# Poller: refresh of the stored user token before it expires
# =======================================================================================

class LarkPollerRefreshTest(LarkMixin, h.TestCase):
    APP_SECRET = "as-" + secrets.token_hex(12)
    SECRETS = (APP_SECRET,)

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.redis = cls.start_redis()
        cls.rc = cls.redis.client()
        cls.mock = cls.start_mock()
        cls.lark = cls.track(MockLark(cls.workdir, name=cls.unique_name("mock-lark"))).start()
        cls.token_file = cls.workdir / "poller-token.json"
        cls.seeded = []
        cls.pollers = []

    @classmethod
    def tearDownClass(cls):
        cls.rc.close()
        super().tearDownClass()

    def setUp(self):
        super().setUp()
        self.addCleanup(self.assert_daemon_logs_clean, self.seeded)
        self.lark.reset(app_id=APP_ID, app_secret=self.APP_SECRET)
        self.rc.cmd("DEL", PREFIX + "lark:user_token", PREFIX + "poller:leader")
        if self.token_file.exists():
            self.token_file.unlink()

    def poller(self, name="poller", **env):
        e = {"LARK_APP_ID": APP_ID, "LARK_APP_SECRET": self.APP_SECRET,
             "LARK_BASE_URL": self.lark.url, "LARK_TOKEN_FILE": str(self.token_file),
             "LARK_REFRESH_RETRY_SECONDS": "1", "LARK_REFRESH_BEFORE_SECONDS": "300",
             "POLL_INTERVAL_SECONDS": "1", "INSTANCE_ID": name}
        e.update(env)
        p = self.start_poller(self.mock, self.redis, name=self.unique_name(name), env=e)
        type(self).pollers.append(p)
        return p

    def seed(self, expires_in_s):
        """Store a user token as the callback would, expiring in expires_in_s seconds."""
        now = int(time.time() * 1000)
        tok = {"access_token": "u-seed-" + secrets.token_hex(8),
               "refresh_token": "ur-seed-" + secrets.token_hex(8),
               "token_type": "Bearer", "expires_in": 7200, "refresh_expires_in": 2592000,
               "scope": "calendar:calendar", "obtained_at_ms": now - 7000 * 1000,
               "expires_at_ms": now + expires_in_s * 1000,
               "refresh_expires_at_ms": now + 2592000 * 1000}
        self.lark.add_refresh_tokens(tok["refresh_token"])
        type(self).seeded += [tok["access_token"], tok["refresh_token"]]
        self.rc.cmd("SET", PREFIX + "lark:user_token", json.dumps(tok))
        return tok

    def stored(self):
        s = self.rc.cmd("GET", PREFIX + "lark:user_token")
        return json.loads(s) if s else None

    def refreshes(self):
        return self.lark.requests("/open-apis/authen/v1/oidc/refresh_access_token")

    def test_refresh_before_expiry(self):
        old = self.seed(60)   # expires within LARK_REFRESH_BEFORE_SECONDS
        self.poller()
        new = h.wait_until(lambda: (self.stored() or {}).get("access_token") != old["access_token"]
                           and self.stored(), timeout=15 * SLOW, message="refreshed token in Redis")
        st = self.lark.state()
        self.assertEqual(new["access_token"], st["user_tokens"][-1])
        self.assertIn(new["refresh_token"], st["refresh_tokens"])
        self.assertAlmostEqual(new["expires_at_ms"], new["obtained_at_ms"] + 7200 * 1000, delta=1)
        reqs = self.refreshes()
        self.assertEqual(len(reqs), 1)
        self.assertEqual(reqs[0]["json"], {"grant_type": "refresh_token", "refresh_token": old["refresh_token"]})
        self.assertIn(reqs[0]["headers"].get("Authorization", "")[len("Bearer "):], st["app_tokens"])
        app = self.lark.requests("/open-apis/auth/v3/app_access_token/internal")
        self.assertEqual(app[-1]["json"], {"app_id": APP_ID, "app_secret": self.APP_SECRET})
        # Token file too, 0600.
        h.wait_until(lambda: self.token_file.exists(), 5 * SLOW)
        self.assertEqual(stat.S_IMODE(os.stat(self.token_file).st_mode), 0o600)
        self.assertEqual(json.loads(self.token_file.read_text()), new)
        # Not due any more: no further refresh.
        time.sleep(3)
        self.assertEqual(len(self.refreshes()), 1)

    def test_not_due_not_refreshed(self):
        self.seed(3600)
        p = self.poller()
        h.wait_until(lambda: self.rc.cmd("GET", PREFIX + "poller:leader"), 10 * SLOW)
        time.sleep(3)
        self.assertEqual(self.refreshes(), [])
        self.assertTrue(p.alive())

    def test_no_token_stays_idle(self):
        p = self.poller()
        h.wait_until(lambda: self.rc.cmd("GET", PREFIX + "poller:leader"), 10 * SLOW)
        time.sleep(2.5)
        self.assertEqual(self.lark.requests(), [])
        self.assertTrue(p.alive())

    def test_refresh_failure_retried(self):
        old = self.seed(60)
        self.lark.control(fail={"refresh": {"status": 500, "body": {"code": 1, "msg": "internal"},
                                            "count": 2}})
        p = self.poller()
        new = h.wait_until(lambda: (self.stored() or {}).get("access_token") != old["access_token"]
                           and self.stored(), timeout=20 * SLOW, message="refreshed after failures")
        self.assertEqual(len(self.refreshes()), 3)
        self.assertEqual(new["access_token"], self.lark.state()["user_tokens"][-1])
        self.assertIn("refresh failed", p.log())
        self.assertTrue(p.alive())

    def authorize(self, proxy):
        """Runs the OAuth callback on `proxy` (the mock issues the token); returns the stored record."""
        h.wait_until(lambda: h.request("GET", proxy.url + "/health").json().get("redis") == "up", 10 * SLOW,
                     message="the proxy's Redis up")
        status, doc = proxy.admin("GET", "/admin/lark/authorize?redirect_uri=https%3A%2F%2Fx.example%2Fcb")
        self.assertEqual(status, 200, doc)
        code = "good-" + secrets.token_hex(6)
        type(self).seeded.append(code)
        r = h.request("GET", proxy.url + "/oauth/callback?code=%s&state=%s" % (code, doc["state"]))
        self.assertEqual(r.status, 200, r.text)
        return self.stored()

    def lark_proxy(self, name):
        return self.start_proxy(self.mock, self.redis, name=self.unique_name(name), env={
            "LARK_APP_ID": APP_ID, "LARK_APP_SECRET": self.APP_SECRET, "LARK_BASE_URL": self.lark.url})

    def test_token_stored_due_is_refreshed_at_once(self):
        # The poller is active with nothing to refresh; then a replica's callback stores a
        # token that is already inside LARK_REFRESH_BEFORE_SECONDS (120 s < 300 s). Its event
        # wakes the poller: refreshed within a second or two, not at some next fixed tick.
        proxy = self.lark_proxy("proxy-due")
        self.poller()
        h.wait_until(lambda: self.rc.cmd("GET", PREFIX + "poller:leader"), 10 * SLOW)
        time.sleep(0.5)
        self.lark.control(expires_in=120)
        first = self.authorize(proxy)
        t0 = time.monotonic()
        new = h.wait_until(lambda: (self.stored() or {}).get("access_token") != first["access_token"]
                           and self.stored(), timeout=4 * SLOW, message="refreshed at once after the callback")
        self.assertLess(time.monotonic() - t0, 3 * SLOW)
        self.lark.control(expires_in=7200)  # (the refresh may have got a 120 s token too: due again)
        self.assertEqual(self.refreshes()[0]["json"]["refresh_token"], first["refresh_token"])
        self.assertIn(new["access_token"], self.lark.state()["user_tokens"])
        self.assert_logs_clean([proxy], extra=self.seeded + [first["access_token"], first["refresh_token"],
                                                             new["access_token"], new["refresh_token"]])

    def test_next_refresh_scheduled_from_expiry(self):
        # A token due in 3 s (expiry - before): the poller looks at once when it becomes
        # active, sees it is not due, and comes back exactly then: not before, and without
        # waiting for a fixed interval (retries are set to 60 s, so none can stand in).
        old = self.seed(300 + 3)
        t0 = time.monotonic()
        p = self.poller(LARK_REFRESH_RETRY_SECONDS="60")
        time.sleep(2)
        self.assertEqual(self.refreshes(), [], "refreshed before it was due")
        new = h.wait_until(lambda: (self.stored() or {}).get("access_token") != old["access_token"]
                           and self.stored(), timeout=5 * SLOW, message="refreshed when due")
        elapsed = time.monotonic() - t0
        self.assertGreater(elapsed, 2.5)
        self.assertLess(elapsed, 5 * SLOW)
        self.assertEqual(len(self.refreshes()), 1)
        # The new token lives 7200 s: the next look is 6900 s away, so nothing more happens.
        time.sleep(1.5)
        self.assertEqual(len(self.refreshes()), 1)
        self.assertTrue(p.alive())

    def test_before_longer_than_lifetime_does_not_spin(self):
        # LARK_REFRESH_BEFORE_SECONDS past the token's whole lifetime: every new token is
        # due at once. The poller warns and waits LARK_REFRESH_RETRY_SECONDS between refreshes.
        self.seed(60)
        p = self.poller(LARK_REFRESH_BEFORE_SECONDS="8000", LARK_REFRESH_RETRY_SECONDS="2")
        reqs = h.wait_until(lambda: (lambda r: len(r) >= 2 and r)(self.refreshes()), timeout=10 * SLOW,
                            message="two refreshes")
        self.assertGreaterEqual(reqs[1]["t"] - reqs[0]["t"], 1.9)  # the retry wait, not a spin
        self.assertIn("already due", p.log())
        self.assertTrue(p.alive())

    def test_only_active_poller_refreshes(self):
        old = self.seed(60)
        self.poller("poller-1")
        self.poller("poller-2")
        h.wait_until(lambda: (self.stored() or {}).get("access_token") != old["access_token"], 15 * SLOW)
        time.sleep(2.5)
        self.assertEqual(len(self.refreshes()), 1)

    def test_oauth_then_refresh_end_to_end(self):
        # The proxy stores a short-lived token; the poller renews it before it lapses.
        self.lark.control(expires_in=120)
        proxy = self.start_proxy(self.mock, self.redis, name=self.unique_name("proxy-e2e"), env={
            "LARK_APP_ID": APP_ID, "LARK_APP_SECRET": self.APP_SECRET,
            "LARK_BASE_URL": self.lark.url, "LARK_TOKEN_FILE": str(self.token_file)})
        first = self.authorize(proxy)
        self.lark.control(expires_in=7200)
        self.poller()
        new = h.wait_until(lambda: (self.stored() or {}).get("access_token") != first["access_token"]
                           and self.stored(), timeout=15 * SLOW)
        self.assertEqual(self.refreshes()[0]["json"]["refresh_token"], first["refresh_token"])
        self.assertEqual(new["expires_in"], 7200)
        self.assertEqual(json.loads(self.token_file.read_text()), new)
        self.assert_logs_clean([proxy], extra=self.seeded)

    def test_zz_logs_have_no_secrets(self):
        self.assert_logs_clean(self.pollers, extra=self.seeded)


if __name__ == "__main__":
    unittest.main()
