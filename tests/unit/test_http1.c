/* ap_http1: request heads, chunked bodies and paths, read strictly. */
#include "ap_http1.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

/* Finds the head in `s` and parses a copy; returns the status (0: accepted). */
static int parse(const char *s, struct ap_http1_req *r, char **copy)
{
    struct ap_http1_err err = {0, NULL};
    size_t scan = 0, len = strlen(s);
    long n = ap_http1_head_end(s, len, &scan, &err);
    if (n < 0)
        return err.status;
    if (n == 0)
        return -1; /* incomplete */
    *copy = malloc((size_t)n);
    memcpy(*copy, s, (size_t)n);
    if (ap_http1_parse(*copy, (size_t)n, r, &err) < 0)
        return err.status;
    return 0;
}

static void test_valid_heads(void **state)
{
    (void)state;
    struct ap_http1_req r;
    char *c = NULL;
    assert_int_equal(parse("POST /v1/messages?beta=true HTTP/1.1\r\nHost: x\r\nX-Api-Key:  k1 \r\n"
                           "Content-Length: 12\r\nConnection: keep-alive\r\n\r\nBODY",
                           &r, &c), 0);
    assert_string_equal(r.method, "POST");
    assert_string_equal(r.target, "/v1/messages?beta=true");
    assert_int_equal(r.minor, 1);
    assert_int_equal(r.nhdr, 4);
    assert_string_equal(ap_http1_header(&r, "x-api-key"), "k1");
    assert_int_equal(r.hdr[1].value_len, 2);
    assert_int_equal(r.body, AP_HTTP1_BODY_LENGTH);
    assert_int_equal(r.content_length, 12);
    assert_true(r.keep_alive);
    assert_null(ap_http1_header(&r, "missing"));
    free(c);

    assert_int_equal(parse("GET / HTTP/1.0\r\n\r\n", &r, &c), 0);
    assert_int_equal(r.minor, 0);
    assert_false(r.keep_alive);
    assert_int_equal(r.body, AP_HTTP1_BODY_NONE);
    free(c);

    assert_int_equal(parse("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", &r, &c), 0);
    assert_true(r.keep_alive);
    free(c);

    assert_int_equal(parse("POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n"
                           "Expect: 100-continue\r\nConnection: foo, close\r\n\r\n", &r, &c), 0);
    assert_int_equal(r.body, AP_HTTP1_BODY_CHUNKED);
    assert_true(r.expect_continue);
    assert_false(r.keep_alive);
    free(c);

    /* Identical duplicate lengths are one length; an empty value and obs-text are fine. */
    assert_int_equal(parse("POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n"
                           "X-Empty:\r\nX-Utf8: caf\xc3\xa9\r\n\r\n", &r, &c), 0);
    assert_int_equal(r.content_length, 5);
    assert_string_equal(ap_http1_header(&r, "x-empty"), "");
    free(c);

    assert_int_equal(parse("OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", &r, &c), 0);
    free(c);
}

static void test_refused_heads(void **state)
{
    (void)state;
    static const struct { const char *head; int status; } cases[] = {
        {"POST /v1/messages HTTP/1.1\r\nHost: x\r\nX-Api-Key : secret\r\n\r\n", 400},
        {"POST /v1/messages HTTP/1.1\r\nHost: x\r\nX-Api-Key\t: secret\r\n\r\n", 400},
        {"GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n folded\r\n\r\n", 400},
        {"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x01b\r\n\r\n", 400},
        {"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x7f\r\n\r\n", 400},
        {"GET / HTTP/1.1\r\nHost: x\r\n: novalue\r\n\r\n", 400},
        {"GET / HTTP/1.1\r\nHost: x\r\nBad(name): v\r\n\r\n", 400},
        {"GET / HTTP/1.1\r\n\r\n", 400},
        {"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400},
        {"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
        {"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", 400},
        {"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\n", 400},
        {"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 5\r\n\r\n", 400},
        {"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n", 400},
        {"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501},
        {"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 501},
        {"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
        {"POST / HTTP/1.1\r\nHost: x\r\nExpect: teapot\r\n\r\n", 417},
        {"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505},
        {"GET / HTTP/1.2\r\nHost: x\r\n\r\n", 505},
        {"GET / HTTX/1.1\r\nHost: x\r\n\r\n", 400},
        {"GET http://a/b HTTP/1.1\r\nHost: x\r\n\r\n", 400},
        {"GET /a#frag HTTP/1.1\r\nHost: x\r\n\r\n", 400},
        {"GET  / HTTP/1.1\r\nHost: x\r\n\r\n", 400},
        {"GET / HTTP/1.1\nHost: x\r\n\r\n", 400},
        {"GET / HTTP/1.1\r\nHost: x\rY\r\n\r\n", 400},
        {"GET /\0 HTTP/1.1\r\nHost: x\r\n\r\n", -1}, /* strlen stops at the NUL: incomplete */
        {"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400},
        {"{\"json\": true}", 400},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct ap_http1_req r;
        char *c = NULL;
        int st = parse(cases[i].head, &r, &c);
        free(c);
        if (st != cases[i].status)
            fail_msg("case %zu: status %d, want %d: %s", i, st, cases[i].status, cases[i].head);
    }
}

/* Fuzzing finding: a head-like run of lines with a bad first line was accepted whole but refused in pieces. */
static void test_bad_method_whatever_the_slicing(void **state)
{
    (void)state;
    const char *s = "5\r\nhello\r\nX: y\r\n\r\n";
    struct ap_http1_err err = {0, NULL};
    size_t scan = 0;
    assert_int_equal(ap_http1_head_end(s, strlen(s), &scan, &err), -1);
    assert_int_equal(err.status, 400);
}

static void test_nul_in_head(void **state)
{
    (void)state;
    const char head[] = "GET / HTTP/1.1\r\nHost: x\r\nX: a\0b\r\n\r\n";
    struct ap_http1_err err = {0, NULL};
    size_t scan = 0;
    assert_int_equal(ap_http1_head_end(head, sizeof(head) - 1, &scan, &err), -1);
    assert_int_equal(err.status, 400);
}

static void test_too_many_headers(void **state)
{
    (void)state;
    char buf[8192];
    size_t o = (size_t)snprintf(buf, sizeof(buf), "GET / HTTP/1.1\r\nHost: x\r\n");
    for (int i = 0; i < AP_HTTP1_MAX_HEADERS; i++)
        o += (size_t)snprintf(buf + o, sizeof(buf) - o, "X-%d: v\r\n", i);
    snprintf(buf + o, sizeof(buf) - o, "\r\n");
    struct ap_http1_req r;
    char *c = NULL;
    assert_int_equal(parse(buf, &r, &c), 431);
    free(c);
}

/* Every split of the input finds the same end, and incomplete input asks for more. */
static void test_head_end_any_split(void **state)
{
    (void)state;
    const char *s = "POST /a HTTP/1.1\r\nHost: x\r\nA: b\r\n\r\nrest";
    size_t want = strlen(s) - 4;
    for (size_t cut = 0; cut <= strlen(s); cut++) {
        struct ap_http1_err err = {0, NULL};
        size_t scan = 0;
        long n = ap_http1_head_end(s, cut, &scan, &err);
        if (cut < want) {
            assert_int_equal(n, 0);
            assert_true(scan <= cut);
            n = ap_http1_head_end(s, strlen(s), &scan, &err);
        }
        assert_int_equal(n, (long)want);
    }
}

/* Decodes `in` fed in slices of `step` bytes; returns the status on error, 0 when done. */
static int chunked(const char *in, size_t len, size_t step, size_t max, char **out, size_t *out_len,
                   size_t *used)
{
    struct ap_http1_chunked c = {0};
    struct ap_http1_err err = {0, NULL};
    size_t cap = 0, i = 0;
    int done = 0;
    *out = NULL;
    *out_len = 0;
    while (i < len && !done) {
        size_t n = len - i < step ? len - i : step;
        long k = ap_http1_chunked_feed(&c, in + i, n, out, out_len, &cap, max, &done, &err);
        if (k < 0)
            return err.status;
        i += (size_t)k;
        if (!done && (size_t)k != n)
            return -2;
    }
    *used = i;
    return done ? 0 : -1;
}

static void test_chunked(void **state)
{
    (void)state;
    const char body[] = "5\r\nhello\r\n1;ext=1\r\n \r\n10 \r\n0123456789abcdef\r\n0\r\nX-Trailer: t\r\n\r\nNEXT";
    for (size_t step = 1; step <= sizeof(body); step++) {
        char *out;
        size_t n, used;
        assert_int_equal(chunked(body, sizeof(body) - 1, step, 1024, &out, &n, &used), 0);
        assert_int_equal(n, 22);
        assert_string_equal(out, "hello 0123456789abcdef");
        assert_int_equal(used, sizeof(body) - 1 - 4); /* stops before the pipelined bytes */
        free(out);
    }
    char *out;
    size_t n, used;
    assert_int_equal(chunked("0\r\n\r\n", 5, 5, 10, &out, &n, &used), 0);
    assert_non_null(out);
    assert_int_equal(n, 0);
    free(out);
}

static void test_chunked_refused(void **state)
{
    (void)state;
    static const struct { const char *in; int status; } cases[] = {
        {"x\r\n", 400},                        /* not hex */
        {"\r\n", 400},                         /* no digits */
        {"5\r\nhelloX\r\n", 400},              /* data longer than its size */
        {"5\nhello\r\n", 400},                 /* bare LF */
        {"fffffffffffffffff\r\n", 400},        /* overflow */
        {"20\r\n", 413},                       /* past the limit of 16 */
        {"5\r\nhello\r\n0\r\nX\x01: y\r\n\r\n", 400},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *out;
        size_t n, used;
        int st = chunked(cases[i].in, strlen(cases[i].in), 64, 16, &out, &n, &used);
        free(out);
        if (st != cases[i].status)
            fail_msg("case %zu: status %d, want %d", i, st, cases[i].status);
    }
}

static void test_path_decode(void **state)
{
    (void)state;
    char out[64];
    static const struct { const char *target; const char *want; } ok[] = {
        {"/v1/models", "/v1/models"},
        {"/v1/models/claude%2Dx?q=1", "/v1/models/claude-x"},
        {"/a/.b/..c/...", "/a/.b/..c/..."},
        {"/", "/"},
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        assert_int_equal(ap_http1_path_decode(ok[i].target, strlen(ok[i].target), out, sizeof(out)), 0);
        assert_string_equal(out, ok[i].want);
    }
    static const char *const bad[] = {
        "/v1/models/..%2f..%2fadmin", "/v1/%2e%2e/files", "/v1/./x", "/v1/..", "/v1/models/..\\x",
        "/v1/models/%2e%2E%5cx", "/admin/keys/k%00x", "/x%0a", "/x%", "/x%4", "/x%zz", "v1/models", "",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (ap_http1_path_decode(bad[i], strlen(bad[i]), out, sizeof(out)) == 0)
            fail_msg("accepted %s as %s", bad[i], out);
    char big[100];
    memset(big, 'a', sizeof(big));
    big[0] = '/';
    assert_int_equal(ap_http1_path_decode(big, sizeof(big), out, sizeof(out)), -1);
}

/* Names matched against a table: any case, whole names only (a prefix or extension is not a match). */
static void test_name_in_a_table(void **state)
{
    (void)state;
    static const struct ap_http1_name tab[] = {AP_HTTP1_NAME("te"), AP_HTTP1_NAME("content-length")};
    static const struct { const char *name; int want; } cases[] = {
        {"te", 1},           {"TE", 1},         {"Content-Length", 1}, {"content-length", 1},
        {"t", 0},            {"tee", 0},        {"content-lengths", 0}, {"content-lengt", 0},
        {"", 0},             {"host", 0},       {"Content_Length", 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *n = cases[i].name;
        assert_int_equal(ap_http1_name_in(n, strlen(n), tab, 2), cases[i].want);
        assert_int_equal(AP_HTTP1_IS(n, strlen(n), "content-length") || AP_HTTP1_IS(n, strlen(n), "te"),
                         cases[i].want);
    }
    assert_int_equal(ap_http1_name_in("te", 2, tab, 0), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_heads),     cmocka_unit_test(test_refused_heads),
        cmocka_unit_test(test_name_in_a_table),
        cmocka_unit_test(test_nul_in_head),     cmocka_unit_test(test_too_many_headers),
        cmocka_unit_test(test_bad_method_whatever_the_slicing),
        cmocka_unit_test(test_head_end_any_split), cmocka_unit_test(test_chunked),
        cmocka_unit_test(test_chunked_refused), cmocka_unit_test(test_path_decode),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
