#!/usr/bin/env python3
"""Mock of Lark's (Feishu's) open platform for api-proxy tests (Python standard library only).

Plays https://open.larksuite.com on loopback, for the gateway's OAuth code exchange and the
poller's token refresh, plus a card webhook (the service card actions are forwarded to).

Lark endpoints (answers shaped like the real ones):
  POST /open-apis/auth/v3/app_access_token/internal
        {"app_id", "app_secret"} -> {"code":0,"msg":"ok","app_access_token":"t-...","expire":7200}
        wrong credentials -> HTTP 400 {"code":10014,"msg":"app secret invalid"}
  POST /open-apis/authen/v1/oidc/access_token
        Authorization: Bearer <an app token this mock issued>,
        {"grant_type":"authorization_code","code": C} -> {"code":0,"msg":"success","data":{
            "access_token":"u-...","refresh_token":"ur-...","token_type":"Bearer",
            "expires_in":E,"refresh_expires_in":R,"scope":"..."}}
        A code works once; the valid codes are those posted to /_control/codes (and, by
        default, any code starting with "good-").
  POST /open-apis/authen/v1/oidc/refresh_access_token
        Authorization: Bearer <app token>, {"grant_type":"refresh_token","refresh_token": T}
        -> the same data as above with a new token pair; T must be a refresh token this mock
        issued (or one posted to /_control/refresh_tokens), and works once.
Card webhook (any path starting with /webhook):
  records the request and answers the configured status and body (default 200 {"ok":true}).

Control API (JSON):
  POST /_control           merge settings: app_id, app_secret, expires_in, refresh_expires_in,
                           exchange_delay_ms (the code exchange answers that much later),
                           fail: {"app_token"|"exchange"|"refresh": {"status": N, "body": TEXT,
                                  "count": K (optional: the next K calls only)}} (null removes),
                           webhook: {"status": N, "body": JSON value or "body_text": raw text,
                                     "delay_ms": D}
  POST /_control/codes     {"codes": [...]}      add valid authorization codes
  POST /_control/refresh_tokens {"tokens": [...]} add valid refresh tokens
  POST /_control/reset     defaults back, logs and issued tokens cleared
  GET  /_state             {"settings", "app_tokens", "user_tokens", "refresh_tokens"}
  GET  /_requests          {"requests": [{"method","path","query","headers","body","json","t"}]}
  DELETE /_requests        clear the request log

Usage: python3 tests/mock_lark.py --port P [--bind 127.0.0.1] [--verbose]
Prints "READY <port>" on stdout once listening.
"""

import argparse
import copy
import json
import secrets
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

DEFAULTS = {
    "app_id": "cli_mock_app",
    "app_secret": "mock-app-secret",
    "expires_in": 7200,
    "refresh_expires_in": 2592000,
    "exchange_delay_ms": 0,
    "fail": {},
    "webhook": {"status": 200, "body": {"ok": True}, "delay_ms": 0},
}

MAX_LOG = 1000


class State:
    def __init__(self):
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.reset()

    def reset(self):
        self.settings = copy.deepcopy(DEFAULTS)
        self.codes = set()
        self.used_codes = set()
        self.app_tokens = []
        self.user_tokens = []
        self.refresh_tokens = set()
        self.requests = []

    def log(self, entry):
        self.requests.append(entry)
        del self.requests[:-MAX_LOG]

    def take_failure(self, what):
        """The configured failure for `what`, consuming one use of a counted one."""
        f = self.settings["fail"].get(what)
        if not f:
            return None
        if "count" in f:
            f["count"] -= 1
            if f["count"] <= 0:
                del self.settings["fail"][what]
        return f


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "mock-lark/1"

    def log_message(self, fmt, *args):
        if self.server.verbose:
            sys.stderr.write("mock-lark: " + (fmt % args) + "\n")

    # ---- plumbing ----
    def _read_body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _send(self, status, body, ctype="application/json"):
        if not isinstance(body, (bytes, str)):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _json(self, raw):
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            return None

    def _bearer(self):
        a = self.headers.get("Authorization") or ""
        return a[7:].strip() if a.startswith("Bearer ") else None

    def _dispatch(self, method):
        u = urlsplit(self.path)
        raw = self._read_body()
        st = self.server.state
        if not u.path.startswith("/_"):
            with st.lock:
                st.log({"method": method, "path": u.path, "query": dict(parse_qsl(u.query)),
                        "headers": {k: v for k, v in self.headers.items()},
                        "body": raw.decode("utf-8", "replace"), "json": self._json(raw),
                        "t": time.time()})
        route = ROUTES.get((method, u.path))
        if route is None and u.path.startswith("/webhook"):
            route = Handler.webhook
        if route is None:
            self._send(404, {"code": 404, "msg": "not found: %s %s" % (method, u.path)})
            return
        route(self, raw)

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def do_DELETE(self):
        self._dispatch("DELETE")

    # ---- Lark ----
    def _failure(self, what):
        with self.server.state.lock:
            f = self.server.state.take_failure(what)
        if f is None:
            return False
        body = f.get("body", {"code": 99991663, "msg": "mock failure"})
        self._send(int(f.get("status", 500)), body,
                   "application/json" if not isinstance(body, str) else "text/plain")
        return True

    def _user_token_data(self):
        st = self.server.state
        data = {"access_token": "u-" + secrets.token_hex(16),
                "refresh_token": "ur-" + secrets.token_hex(16),
                "token_type": "Bearer",
                "expires_in": st.settings["expires_in"],
                "refresh_expires_in": st.settings["refresh_expires_in"],
                "scope": "calendar:calendar calendar:calendar:readonly"}
        st.user_tokens.append(data["access_token"])
        st.refresh_tokens.add(data["refresh_token"])
        return data

    def _app_token_ok(self):
        tok = self._bearer()
        if tok is None or tok not in self.server.state.app_tokens:
            self._send(401, {"code": 99991661, "msg": "Missing access token for authorization"})
            return False
        return True

    def app_access_token(self, raw):
        if self._failure("app_token"):
            return
        j = self._json(raw) or {}
        st = self.server.state
        with st.lock:
            if j.get("app_id") != st.settings["app_id"] or j.get("app_secret") != st.settings["app_secret"]:
                self._send(400, {"code": 10014, "msg": "app secret invalid"})
                return
            tok = "t-" + secrets.token_hex(16)
            st.app_tokens.append(tok)
        self._send(200, {"code": 0, "msg": "ok", "app_access_token": tok, "expire": 7200,
                         "tenant_access_token": tok})

    def oidc_access_token(self, raw):
        st = self.server.state
        with st.lock:
            if not self._app_token_ok():
                return
        if self._failure("exchange"):
            return
        j = self._json(raw) or {}
        with st.lock:
            code = j.get("code")
            valid = isinstance(code, str) and (code in st.codes or code.startswith("good-"))
            if j.get("grant_type") != "authorization_code" or not valid or code in st.used_codes:
                self._send(400, {"code": 20003, "msg": "invalid code"})
                return
            st.used_codes.add(code)
            data = self._user_token_data()
            delay = st.settings.get("exchange_delay_ms", 0) / 1000.0
        if delay:
            st.stopping.wait(delay)
        self._send(200, {"code": 0, "msg": "success", "data": data})

    def oidc_refresh(self, raw):
        st = self.server.state
        with st.lock:
            if not self._app_token_ok():
                return
        if self._failure("refresh"):
            return
        j = self._json(raw) or {}
        with st.lock:
            rt = j.get("refresh_token")
            if j.get("grant_type") != "refresh_token" or rt not in st.refresh_tokens:
                self._send(400, {"code": 20026, "msg": "invalid refresh token"})
                return
            st.refresh_tokens.discard(rt)
            data = self._user_token_data()
        self._send(200, {"code": 0, "msg": "success", "data": data})

    # ---- card webhook ----
    def webhook(self, raw):
        st = self.server.state
        with st.lock:
            w = dict(st.settings["webhook"])
        delay = w.get("delay_ms", 0) / 1000.0
        if delay:
            st.stopping.wait(delay)
        if "body_text" in w:
            self._send(int(w.get("status", 200)), w["body_text"], "text/plain")
        else:
            self._send(int(w.get("status", 200)), w.get("body", {}))

    # ---- control ----
    def control(self, raw):
        j = self._json(raw)
        if not isinstance(j, dict):
            self._send(400, {"error": "body must be a JSON object"})
            return
        st = self.server.state
        with st.lock:
            for k, v in j.items():
                if k == "fail":
                    for what, f in v.items():
                        if f is None:
                            st.settings["fail"].pop(what, None)
                        else:
                            st.settings["fail"][what] = dict(f)
                elif k == "webhook":
                    st.settings["webhook"] = dict(v)
                elif k in DEFAULTS:
                    st.settings[k] = v
                else:
                    self._send(400, {"error": "unknown setting %r" % k})
                    return
            out = copy.deepcopy(st.settings)
        self._send(200, {"settings": out})

    def control_codes(self, raw):
        j = self._json(raw) or {}
        with self.server.state.lock:
            self.server.state.codes.update(j.get("codes", []))
        self._send(200, {"ok": True})

    def control_refresh_tokens(self, raw):
        j = self._json(raw) or {}
        with self.server.state.lock:
            self.server.state.refresh_tokens.update(j.get("tokens", []))
        self._send(200, {"ok": True})

    def control_reset(self, raw):
        with self.server.state.lock:
            self.server.state.reset()
        self._send(200, {"ok": True})

    def state(self, raw):
        st = self.server.state
        with st.lock:
            doc = {"settings": copy.deepcopy(st.settings), "app_tokens": list(st.app_tokens),
                   "user_tokens": list(st.user_tokens), "refresh_tokens": sorted(st.refresh_tokens)}
        self._send(200, doc)

    def requests_get(self, raw):
        with self.server.state.lock:
            reqs = list(self.server.state.requests)
        self._send(200, {"requests": reqs})

    def requests_delete(self, raw):
        with self.server.state.lock:
            self.server.state.requests = []
        self._send(200, {"ok": True})


ROUTES = {
    ("POST", "/open-apis/auth/v3/app_access_token/internal"): Handler.app_access_token,
    ("POST", "/open-apis/authen/v1/oidc/access_token"): Handler.oidc_access_token,
    ("POST", "/open-apis/authen/v1/oidc/refresh_access_token"): Handler.oidc_refresh,
    ("POST", "/_control"): Handler.control,
    ("POST", "/_control/codes"): Handler.control_codes,
    ("POST", "/_control/refresh_tokens"): Handler.control_refresh_tokens,
    ("POST", "/_control/reset"): Handler.control_reset,
    ("GET", "/_state"): Handler.state,
    ("GET", "/_requests"): Handler.requests_get,
    ("DELETE", "/_requests"): Handler.requests_delete,
}


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr, verbose=False):
        self.state = State()
        self.verbose = verbose
        super().__init__(addr, Handler)

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, BrokenPipeError, socket.timeout)) and not self.verbose:
            return
        super().handle_error(request, client_address)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, default=0, help="listen port (0 = any free port)")
    ap.add_argument("--bind", default="127.0.0.1", help="listen address")
    ap.add_argument("--verbose", action="store_true", help="log every request to stderr")
    args = ap.parse_args(argv)

    server = Server((args.bind, args.port), verbose=args.verbose)

    def on_signal(signum, frame):
        server.state.stopping.set()
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print("READY %d" % server.server_address[1], flush=True)
    try:
        server.serve_forever(poll_interval=0.1)
    finally:
        server.state.stopping.set()
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
