/* ap_h1resp: responses read incrementally, at every split of the input. */
#include "ap_h1resp.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

struct result {
    int status;
    char headers[1024];                 /* "name=value;" */
    char body[4096];
    size_t body_len;
    int done, error, reusable;
};

/*
 * Feeds `in` to a parser in pieces of at most `step` bytes, the way a
 * connection does: unconsumed bytes are kept and fed again with the next piece.
 */
static void run(const char *in, size_t len, size_t step, int head, int eof_at_end, struct result *r)
{
    struct ap_h1resp p;
    char buf[8192];
    size_t have = 0, fed = 0;
    memset(r, 0, sizeof(*r));
    ap_h1resp_init(&p, head);
    for (;;) {
        size_t n = len - fed < step ? len - fed : step;
        memcpy(buf + have, in + fed, n);
        have += n;
        fed += n;
        int eof = eof_at_end && fed == len;
        size_t pos = 0;
        for (;;) {
            struct ap_h1resp_ev ev;
            size_t t = ap_h1resp_next(&p, buf + pos, have - pos, eof, &ev);
            pos += t;
            if (ev.kind == AP_H1R_STATUS)
                r->status = ev.status;
            else if (ev.kind == AP_H1R_HEADER)
                snprintf(r->headers + strlen(r->headers), sizeof(r->headers) - strlen(r->headers), "%.*s=%.*s;",
                         (int)ev.name_len, ev.name, (int)ev.value_len, ev.value);
            else if (ev.kind == AP_H1R_DATA) {
                memcpy(r->body + r->body_len, ev.data, ev.len);
                r->body_len += ev.len;
            } else if (ev.kind == AP_H1R_DONE) {
                r->done = 1;
                r->reusable = ap_h1resp_reusable(&p);
                return;
            } else if (ev.kind == AP_H1R_ERROR) {
                r->error = 1;
                return;
            } else if (ev.kind == AP_H1R_MORE && t == 0) {
                break;
            }
        }
        memmove(buf, buf + pos, have - pos);
        have -= pos;
        if (fed == len && !eof_at_end)
            return; /* incomplete */
        if (fed == len && pos == 0 && have == 0)
            return;
    }
}

static void check_all_splits(const char *in, int head, int eof, int status, const char *headers, const char *body,
                             int reusable)
{
    size_t len = strlen(in);
    for (size_t step = 1; step <= len; step++) {
        struct result r;
        run(in, len, step, head, eof, &r);
        if (!r.done || r.error || r.status != status || strcmp(r.headers, headers) != 0 ||
            r.body_len != strlen(body) || memcmp(r.body, body, r.body_len) != 0 || r.reusable != reusable)
            fail_msg("step %zu: done %d error %d status %d headers [%s] body [%.*s] reusable %d", step, r.done,
                     r.error, r.status, r.headers, (int)r.body_len, r.body, r.reusable);
    }
}

static void test_content_length(void **state)
{
    (void)state;
    check_all_splits("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"a\":\"bcd\"}",
                     0, 0, 200, "Content-Type=application/json;Content-Length=11;", "{\"a\":\"bcd\"}", 1);
    check_all_splits("HTTP/1.1 429 Too Many Requests\r\ncontent-length: 0\r\n\r\n", 0, 0, 429, "content-length=0;",
                     "", 1);
}

static void test_chunked(void **state)
{
    (void)state;
    check_all_splits("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n1;x=y\r\n \r\n"
                     "6\r\nworld!\r\n0\r\nTrailer: t\r\n\r\n",
                     0, 0, 200, "Transfer-Encoding=chunked;", "hello world!", 1);
    /* LF-only lines, as some servers send. */
    check_all_splits("HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n3\nabc\n0\n\n", 0, 0, 200,
                     "Transfer-Encoding=chunked;", "abc", 1);
}

static void test_to_the_end(void **state)
{
    (void)state;
    check_all_splits("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\ndata: 1\n\ndata: 2\n\n", 0, 1, 200,
                     "Content-Type=text/event-stream;", "data: 1\n\ndata: 2\n\n", 0);
    check_all_splits("HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", 0, 0, 200, "Content-Length=2;", "ok", 0);
    check_all_splits("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", 0, 0, 200,
                     "Connection=close;Content-Length=2;", "ok", 0);
}

static void test_interim_and_bodiless(void **state)
{
    (void)state;
    check_all_splits("HTTP/1.1 100 Continue\r\nX: y\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 1\r\n\r\nz", 0, 0, 201,
                     "Content-Length=1;", "z", 1);
    check_all_splits("HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n", 0, 0, 204, "Content-Length=10;", "", 1);
    check_all_splits("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", 1, 0, 200, "Content-Length=10;", "", 1);
}

#define A50 "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"

/* Fuzzing finding: a trailer line arriving byte by byte was counted again with every byte, until "too long". */
static void test_trailers_trickled(void **state)
{
    (void)state;
    check_all_splits("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n"
                     "X-Long-Trailer: " A50 A50 A50 A50 A50 "\r\n\r\n",
                     0, 0, 200, "Transfer-Encoding=chunked;", "x", 1);
}

static void test_errors(void **state)
{
    (void)state;
    static const struct { const char *in; int eof; } bad[] = {
        {"garbage, not HTTP at all\r\n\r\n", 0},
        {"\x01", 0},
        {"HTTP/2 200\r\n\r\n", 0},
        {"HTTP/1.1 99 x\r\n\r\n", 0},
        {"HTTP/1.1 200 OK\r\nBad Header\r\n\r\n", 0},
        {"HTTP/1.1 200 OK\r\nName : v\r\n\r\n", 0},
        {"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", 0},
        {"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", 0},
        {"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", 1},
        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nz\r\n", 0},
        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n", 0},
        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab", 1},
        {"", 1},
        {"HTTP/1.1 200 OK\r\nX: y", 1},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct result r;
        run(bad[i].in, strlen(bad[i].in), 7, 0, bad[i].eof, &r);
        if (!r.error)
            fail_msg("case %zu accepted (done %d)", i, r.done);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_content_length), cmocka_unit_test(test_chunked), cmocka_unit_test(test_to_the_end),
        cmocka_unit_test(test_interim_and_bodiless), cmocka_unit_test(test_errors),
        cmocka_unit_test(test_trailers_trickled),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
