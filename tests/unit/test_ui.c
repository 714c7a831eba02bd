/*
 * px_ui: what a console path serves (px_ui_resolve), If-None-Match matching,
 * and the files tools/embed.c built into this binary: every ETag is the
 * content's SHA-256, the page loads its scripts and styles from the build's
 * versioned path, and nothing in the files would need the CSP loosened
 * (inline script or style, event-handler attributes, HTML-parsing sinks).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <openssl/evp.h>

#include "../../proxy/px_ui.h" /* the proxy's own header: the unit links its objects */

/* ---- a small set of our own, so the rules are tested apart from the real files ---- */

static const unsigned char d_index[] = "<!doctype html>", d_js[] = "x()", d_css[] = "a{}";
static const struct px_ui_file fake_files[] = {
    {"index.html", "text/html; charset=utf-8", d_index, sizeof(d_index) - 1, "\"i1\""},
    {"other.html", "text/html; charset=utf-8", d_index, sizeof(d_index) - 1, "\"o1\""},
    {"app.js", "text/javascript; charset=utf-8", d_js, sizeof(d_js) - 1, "\"j1\""},
    {"app.css", "text/css; charset=utf-8", d_css, sizeof(d_css) - 1, "\"c1\""},
};
static const struct px_ui_set fake = {fake_files, 4, "0123456789abcdef"};

struct route_case {
    const char *path;
    int status;
    const char *file;       /* 200: the file's name */
    enum px_ui_cache cache; /* 200 */
    const char *location;   /* 301/302 */
};

static void run_route(void **state)
{
    const struct route_case *c = *state;
    struct px_ui_route r;
    assert_true(px_ui_owns(c->path));
    px_ui_resolve(&fake, c->path, &r);
    assert_int_equal(r.status, c->status);
    if (c->status == 200) {
        assert_non_null(r.file);
        assert_string_equal(r.file->name, c->file);
        assert_int_equal(r.cache, c->cache);
    } else if (c->location != NULL) {
        assert_string_equal(r.location, c->location);
    } else {
        assert_null(r.file);
    }
}

#define ROUTE(path, status, file, cache, loc) \
    {"route " path, run_route, NULL, NULL, &(struct route_case){path, status, file, cache, loc}}
#define REVAL PX_UI_REVALIDATE
#define IMMUT PX_UI_IMMUTABLE

static void test_owns(void **state)
{
    (void)state;
    assert_true(px_ui_owns("/"));
    assert_true(px_ui_owns("/ui"));
    assert_true(px_ui_owns("/ui/"));
    assert_true(px_ui_owns("/ui/x/y"));
    assert_false(px_ui_owns("/uix"));
    assert_false(px_ui_owns("/admin/ui"));
    assert_false(px_ui_owns("/health"));
    assert_false(px_ui_owns("//ui/"));
    assert_false(px_ui_owns(""));
}

/* ---- If-None-Match ---- */

struct inm_case {
    const char *header;
    const char *etag;
    int match;
};

static void run_inm(void **state)
{
    const struct inm_case *c = *state;
    assert_int_equal(px_ui_etag_matches(c->header, c->etag), c->match);
}

#define INM(name, header, etag, match) \
    {"If-None-Match " name, run_inm, NULL, NULL, &(struct inm_case){header, etag, match}}

/* ---- the real files ---- */

static const char *body(const struct px_ui_file *f, char **owned)
{
    *owned = malloc(f->len + 1);
    assert_non_null(*owned);
    memcpy(*owned, f->data, f->len);
    (*owned)[f->len] = '\0';
    return *owned;
}

static void test_real_etags_are_content_hashes(void **state)
{
    (void)state;
    const struct px_ui_set *set = &px_ui_assets;
    assert_true(set->n >= 5);
    assert_int_equal(strlen(set->version), 16);
    for (size_t i = 0; i < set->n; i++) {
        const struct px_ui_file *f = &set->files[i];
        unsigned char d[EVP_MAX_MD_SIZE];
        char want[40] = "\"";
        assert_int_equal(EVP_Digest(f->data, f->len, d, NULL, EVP_sha256(), NULL), 1);
        for (int j = 0; j < 16; j++)
            sprintf(want + 1 + 2 * j, "%02x", d[j]);
        strcat(want, "\"");
        if (strcmp(f->etag, want) != 0)
            fail_msg("%s: ETag %s, content hash %s", f->name, f->etag, want);
        assert_true(f->len > 0);
        assert_int_equal(f->data[f->len], 0); /* NUL after the bytes: text can be read as a string */
        for (size_t j = 0; j < i; j++)
            assert_string_not_equal(set->files[j].name, f->name);
    }
}

static void test_real_types(void **state)
{
    (void)state;
    static const struct { const char *name, *type; } want[] = {
        {"index.html", "text/html; charset=utf-8"},
        {"app.js", "text/javascript; charset=utf-8"},
        {"app.css", "text/css; charset=utf-8"},
        {"favicon.svg", "image/svg+xml"},
    };
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        const struct px_ui_file *f = px_ui_find(&px_ui_assets, want[i].name);
        if (f == NULL)
            fail_msg("%s is not built in", want[i].name);
        assert_string_equal(f->type, want[i].type);
    }
    for (size_t i = 0; i < px_ui_assets.n; i++) {
        const struct px_ui_file *f = &px_ui_assets.files[i];
        size_t l = strlen(f->name);
        if (l > 3 && strcmp(f->name + l - 3, ".js") == 0)
            assert_string_equal(f->type, "text/javascript; charset=utf-8");
    }
}

static void test_real_page_uses_versioned_assets(void **state)
{
    (void)state;
    const struct px_ui_file *index = px_ui_find(&px_ui_assets, "index.html");
    assert_non_null(index);
    char *owned, ref[64];
    const char *html = body(index, &owned);
    assert_null(strstr(html, "@ASSET_BASE@"));
    snprintf(ref, sizeof(ref), "src=\"assets/%s/app.js\"", px_ui_assets.version);
    if (strstr(html, ref) == NULL)
        fail_msg("index.html does not load %s", ref);
    snprintf(ref, sizeof(ref), "href=\"assets/%s/app.css\"", px_ui_assets.version);
    if (strstr(html, ref) == NULL)
        fail_msg("index.html does not load %s", ref);
    /* Every versioned path it names resolves to a file cached for good. */
    for (const char *p = html; (p = strstr(p, "assets/")) != NULL; p++) {
        char path[128] = "/ui/";
        size_t n = strcspn(p, "\"");
        assert_true(n < sizeof(path) - 5);
        memcpy(path + 4, p, n);
        path[4 + n] = '\0';
        struct px_ui_route r;
        px_ui_resolve(&px_ui_assets, path, &r);
        if (r.status != 200 || r.cache != PX_UI_IMMUTABLE)
            fail_msg("%s: status %d", path, r.status);
    }
    free(owned);
}

/* Case-insensitive search in a NUL-terminated text. */
static const char *find_ci(const char *hay, const char *needle)
{
    size_t n = strlen(needle);
    for (; *hay != '\0'; hay++)
        if (strncasecmp(hay, needle, n) == 0)
            return hay;
    return NULL;
}

static void test_real_files_need_no_unsafe_csp(void **state)
{
    (void)state;
    /* What a strict CSP (no 'unsafe-inline', no 'unsafe-eval', Trusted Types) refuses. */
    static const char *const html_bad[] = {"<script>", "style=", " onload=", " onclick=", " onerror=", "javascript:",
                                           "<style", "http://", "https://"};
    static const char *const js_bad[] = {"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(",
                                         "new Function", ".style.", "setAttribute('style", "setAttribute(\"style",
                                         "http://", "https://", "cssText"};
    static const char *const css_bad[] = {"http://", "https://", "@import", "expression("};
    for (size_t i = 0; i < px_ui_assets.n; i++) {
        const struct px_ui_file *f = &px_ui_assets.files[i];
        int html = strncmp(f->type, "text/html", 9) == 0, js = strncmp(f->type, "text/javascript", 15) == 0;
        int css = strncmp(f->type, "text/css", 8) == 0;
        if (!html && !js && !css)
            continue;
        char *owned;
        const char *text = body(f, &owned);
        const char *const *bad = html ? html_bad : js ? js_bad : css_bad;
        size_t nbad = html ? sizeof(html_bad) / sizeof(*html_bad)
                      : js ? sizeof(js_bad) / sizeof(*js_bad)
                           : sizeof(css_bad) / sizeof(*css_bad);
        for (size_t j = 0; j < nbad; j++) {
            const char *hit = find_ci(text, bad[j]);
            /* The SVG namespace URI is a name, not a place the page loads from. */
            if (hit != NULL && strncmp(hit, "http://www.w3.org/2000/svg", 26) == 0)
                hit = find_ci(hit + 26, bad[j]);
            if (hit != NULL)
                fail_msg("%s contains \"%s\": %.60s", f->name, bad[j], hit);
        }
        free(owned);
    }
}

static const struct CMUnitTest tests[] = {
    {"px_ui_owns: /, /ui and /ui/... only", test_owns, NULL, NULL, NULL},
    ROUTE("/", 302, NULL, REVAL, "/ui/"),
    ROUTE("/ui", 301, NULL, REVAL, "/ui/"),
    ROUTE("/ui/", 200, "index.html", REVAL, NULL),
    ROUTE("/ui/index.html", 200, "index.html", REVAL, NULL),
    ROUTE("/ui/app.js", 200, "app.js", REVAL, NULL),
    ROUTE("/ui/assets/0123456789abcdef/app.js", 200, "app.js", IMMUT, NULL),
    ROUTE("/ui/assets/0123456789abcdef/app.css", 200, "app.css", IMMUT, NULL),
    ROUTE("/ui/assets/fedcba9876543210/app.js", 200, "app.js", REVAL, NULL),
    ROUTE("/ui/assets/0123456789abcde/app.js", 200, "app.js", REVAL, NULL),
    ROUTE("/ui/assets/0123456789abcdef0/app.js", 200, "app.js", REVAL, NULL),
    ROUTE("/ui/assets/0123456789abcdef/index.html", 404, NULL, REVAL, NULL),
    ROUTE("/ui/other.html", 404, NULL, REVAL, NULL),
    ROUTE("/ui/assets/0123456789abcdef/", 404, NULL, REVAL, NULL),
    ROUTE("/ui/assets//app.js", 404, NULL, REVAL, NULL),
    ROUTE("/ui/assets/app.js", 404, NULL, REVAL, NULL),
    ROUTE("/ui/assets/0123456789abcdef/x/app.js", 404, NULL, REVAL, NULL),
    ROUTE("/ui/nope.js", 404, NULL, REVAL, NULL),
    ROUTE("/ui/x/app.js", 404, NULL, REVAL, NULL),
    ROUTE("/ui/app.js/", 404, NULL, REVAL, NULL),
    ROUTE("/ui/APP.JS", 404, NULL, REVAL, NULL),
    INM("absent", NULL, "\"j1\"", 0),
    INM("exact", "\"j1\"", "\"j1\"", 1),
    INM("another tag", "\"j2\"", "\"j1\"", 0),
    INM("star", "*", "\"j1\"", 1),
    INM("in a list", "\"a\", \"b\",\"j1\"", "\"j1\"", 1),
    INM("list without it", "\"a\", \"b\"", "\"j1\"", 0),
    INM("weak comparison", "W/\"j1\"", "\"j1\"", 1),
    INM("prefix is not a match", "\"j\"", "\"j1\"", 0),
    INM("longer is not a match", "\"j11\"", "\"j1\"", 0),
    INM("unquoted is malformed", "j1", "\"j1\"", 0),
    INM("unterminated", "\"j1", "\"j1\"", 0),
    INM("empty", "", "\"j1\"", 0),
    INM("spaces and commas only", " , ,", "\"j1\"", 0),
    INM("malformed after a miss", "\"a\", j1", "\"j1\"", 0),
    {"built-in files: every ETag is the content's SHA-256, names unique", test_real_etags_are_content_hashes, NULL,
     NULL, NULL},
    {"built-in files: content types", test_real_types, NULL, NULL, NULL},
    {"built-in files: the page loads this build's versioned assets", test_real_page_uses_versioned_assets, NULL,
     NULL, NULL},
    {"built-in files: no inline code, handlers, HTML sinks, imports or remote hosts",
     test_real_files_need_no_unsafe_csp, NULL, NULL, NULL},
};

int main(void)
{
    return cmocka_run_group_tests_name("ui", tests, NULL, NULL);
}
