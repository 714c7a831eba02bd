"""The admin console's static files (GET /ui/...), as a browser and caches see them.

Every replica serves the same built-in files under the same ETags; the page is
revalidated on each load, the scripts and styles it names live under a versioned path
and are cached for good; every answer carries the strict Content-Security-Policy and
the other security headers. The browser tests (test_console.py) check the page itself.
"""

import re

from lib import harness as h

SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cross-origin-opener-policy": "same-origin",
}


class ConsoleFilesTest(h.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.redis = cls.start_redis()
        cls.mock = cls.start_mock()
        cls.proxy = cls.start_proxy(cls.mock, cls.redis)
        # A second replica: a page from one and its assets from the other must fit.
        cls.proxy2 = cls.start_proxy(cls.mock, cls.redis, name="proxy2")

    def get(self, path, headers=None, method="GET", proxy=None):
        return h.request(method, (proxy or self.proxy).url + path, headers=headers)

    def page(self):
        r = self.get("/ui/")
        self.assertEqual(r.status, 200, r.text)
        return r

    def assets(self, html):
        """The versioned asset paths the page names (relative to /ui/)."""
        return re.findall(r'(?:src|href)="(assets/[0-9a-f]{16}/[A-Za-z0-9._-]+)"', html)

    def check_security_headers(self, r):
        for k, v in SECURITY_HEADERS.items():
            self.assertEqual(r.headers.get(k), v, "%s on %r" % (k, r))
        csp = r.headers.get("content-security-policy", "")
        directives = {d.split()[0]: d.split()[1:] for d in csp.split(";") if d.strip()}
        self.assertEqual(directives.get("default-src"), ["'self'"], csp)
        for d in ("script-src", "style-src", "connect-src", "img-src"):
            self.assertEqual(directives.get(d), ["'self'"], "%s in %s" % (d, csp))
        self.assertEqual(directives.get("object-src"), ["'none'"], csp)
        self.assertEqual(directives.get("frame-ancestors"), ["'none'"], csp)
        self.assertEqual(directives.get("require-trusted-types-for"), ["'script'"], csp)
        self.assertNotIn("unsafe", csp)

    def test_page(self):
        r = self.page()
        self.assertEqual(r.headers["content-type"], "text/html; charset=utf-8")
        self.assertEqual(r.headers["cache-control"], "no-cache")
        self.assertRegex(r.headers["etag"], r'^"[0-9a-f]{32}"$')
        self.check_security_headers(r)
        html = r.text
        self.assertIn('<script type="module" src="assets/', html)
        self.assertNotIn("@ASSET_BASE@", html)
        # No inline script or style: every <script> has a src, no style= or on...= attribute.
        self.assertEqual(re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", html), [])
        self.assertNotRegex(html, r"\sstyle=|\son[a-z]+=")
        self.assertEqual(self.get("/ui/index.html").body, r.body)

    def test_assets_are_versioned_and_cached_for_good(self):
        html = self.page().text
        paths = self.assets(html)
        names = {p.rsplit("/", 1)[1] for p in paths}
        self.assertTrue({"app.js", "app.css", "favicon.svg"} <= names, paths)
        self.assertEqual(len({p.split("/")[1] for p in paths}), 1, "one version per page")
        types = {"js": "text/javascript; charset=utf-8", "css": "text/css; charset=utf-8",
                 "svg": "image/svg+xml"}
        for p in paths:
            r = self.get("/ui/" + p)
            self.assertEqual(r.status, 200, p)
            self.assertEqual(r.headers["cache-control"], "public, max-age=31536000, immutable", p)
            self.assertEqual(r.headers["content-type"], types[p.rsplit(".", 1)[1]], p)
            self.check_security_headers(r)
            self.assertEqual(int(r.headers["content-length"]), len(r.body))

    def test_modules_import_each_other_relatively(self):
        """app.js's imports resolve under the same versioned path, and each exists."""
        html = self.page().text
        base = [p for p in self.assets(html) if p.endswith("/app.js")][0].rsplit("/", 1)[0]
        seen, todo = set(), ["app.js"]
        while todo:
            name = todo.pop()
            if name in seen:
                continue
            seen.add(name)
            r = self.get("/ui/%s/%s" % (base, name))
            self.assertEqual(r.status, 200, name)
            self.assertEqual(r.headers["cache-control"], "public, max-age=31536000, immutable")
            for imp in re.findall(r"""from\s+['"]\./([A-Za-z0-9._-]+)['"]""", r.text):
                todo.append(imp)
        self.assertTrue({"api.js", "dom.js", "overview.js", "keys.js", "usage.js", "chart.js"} <= seen, seen)

    def test_etag_revalidation(self):
        r = self.page()
        etag = r.headers["etag"]
        r304 = self.get("/ui/", {"If-None-Match": etag})
        self.assertEqual(r304.status, 304)
        self.assertEqual(r304.body, b"")
        self.assertEqual(r304.headers["etag"], etag)
        self.check_security_headers(r304)
        self.assertEqual(self.get("/ui/", {"If-None-Match": 'W/%s, "x"' % etag}).status, 304)
        self.assertEqual(self.get("/ui/", {"If-None-Match": "*"}).status, 304)
        other = self.get("/ui/", {"If-None-Match": '"0000"'})
        self.assertEqual((other.status, other.body), (200, r.body))
        # An asset by its plain name is revalidated, not cached for good.
        js = self.get("/ui/app.js")
        self.assertEqual((js.status, js.headers["cache-control"]), (200, "no-cache"))
        self.assertEqual(self.get("/ui/app.js", {"If-None-Match": js.headers["etag"]}).status, 304)

    def test_every_replica_serves_the_same_build(self):
        a, b = self.page(), self.get("/ui/", proxy=self.proxy2)
        self.assertEqual((a.body, a.headers["etag"]), (b.body, b.headers["etag"]))
        for p in self.assets(a.text):
            x, y = self.get("/ui/" + p), self.get("/ui/" + p, proxy=self.proxy2)
            self.assertEqual((x.body, x.headers["etag"]), (y.body, y.headers["etag"]), p)

    def test_another_builds_asset_path_is_served_but_revalidated(self):
        """A page of another build (a rolling deploy behind a load balancer) still gets
        its files, but nothing is cached for good under a version that is not ours."""
        html = self.page().text
        ours = [p for p in self.assets(html) if p.endswith("/app.css")][0]
        r = self.get("/ui/" + ours.replace(ours.split("/")[1], "0" * 16))
        self.assertEqual(r.status, 200)
        self.assertEqual(r.headers["cache-control"], "no-cache")
        self.assertEqual(r.body, self.get("/ui/" + ours).body)

    def test_redirects(self):
        for path, status in (("/ui", 301), ("/", 302)):
            r = self.get(path)
            self.assertEqual((r.status, r.headers.get("location")), (status, "/ui/"), path)
        # The query string does not change what is served.
        self.assertEqual(self.get("/ui/?x=1").body, self.page().body)

    def test_not_found_and_methods(self):
        html = self.page().text
        base = self.assets(html)[0].rsplit("/", 1)[0]
        for path in ("/ui/nope.js", "/ui/assets/", "/ui/%s/" % base, "/ui/%s/index.html" % base,
                     "/ui/%s/x/app.js" % base, "/uix", "/ui/APP.JS", "/ui/app.js/"):
            r = self.get(path)
            self.assertEqual(r.status, 404, path)
            self.assertEqual(r.json(), {"detail": "not found"}, path)
        for method in ("POST", "PUT", "DELETE"):
            r = self.get("/ui/", method=method)
            self.assertEqual(r.status, 405, method)
            self.assertEqual(r.headers.get("allow"), "GET, HEAD")
        head = self.get("/ui/", method="HEAD")
        self.assertEqual((head.status, head.body), (200, b""))
        self.assertEqual(head.headers["etag"], self.page().headers["etag"])
        # Dot segments are refused before the console sees them.
        self.assertEqual(self.get("/ui/../admin/keys").status, 400)

    def test_files_need_no_key(self):
        """The files hold no data and need no key; the data behind them (/admin) does."""
        self.assertEqual(self.page().status, 200)
        self.assertEqual(self.get("/ui/", {"x-api-key": "wrong"}).status, 200)
        self.assertEqual(h.request("GET", self.proxy.url + "/admin/keys").status, 401)
