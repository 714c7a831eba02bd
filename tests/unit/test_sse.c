/*
 * ap_sse: the incremental SSE parser and writer.
 *
 * Every stream in the table is fed three ways: in one piece, split into two
 * pieces at every byte offset, and one byte at a time. All three must give
 * exactly the table's list of (event, data) dispatches. The recorded list is
 * one string: each dispatch is  event \x01 data \x02  (macro EV below).
 *
 * Then: the max_event cap, a callback that stops the parser, the writer's exact
 * output and its round trip through the parser, and the fixture streams of
 * tests/fixtures/streams (every split gives the same events as one piece).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <cJSON.h>
#include <event2/buffer.h>

#include "ap_sse.h"

/* ---- recording dispatches ---- */

struct rec {
    char *buf; /* owned: event \x01 data \x02 per dispatch */
    size_t len;
    size_t cap;
    int n;        /* dispatches so far */
    int stop_at;  /* return -1 from the stop_at-th dispatch (1-based); 0: never */
};

static void rec_add(struct rec *r, const char *s, size_t n)
{
    if (r->len + n + 1 > r->cap) {
        size_t cap = r->cap ? r->cap : 256;
        while (cap < r->len + n + 1)
            cap *= 2;
        r->buf = realloc(r->buf, cap);
        assert_non_null(r->buf);
        r->cap = cap;
    }
    memcpy(r->buf + r->len, s, n);
    r->len += n;
    r->buf[r->len] = '\0';
}

static int rec_cb(void *arg, const char *event, const char *data, size_t data_len)
{
    struct rec *r = arg;
    assert_non_null(event);
    assert_non_null(data);
    assert_int_equal(data[data_len], '\0'); /* NUL-terminated as promised */
    r->n++;
    rec_add(r, event, strlen(event));
    rec_add(r, "\x01", 1);
    rec_add(r, data, data_len);
    rec_add(r, "\x02", 1);
    return (r->stop_at != 0 && r->n == r->stop_at) ? -1 : 0;
}

static void rec_reset(struct rec *r)
{
    r->len = 0;
    r->n = 0;
    if (r->buf != NULL)
        r->buf[0] = '\0';
}

static const char *rec_str(const struct rec *r)
{
    return r->buf ? r->buf : "";
}

/* Prints a recorded list with the separators made visible. */
static void show(const char *label, const char *s)
{
    print_error("%s: ", label);
    for (; *s != '\0'; s++) {
        if (*s == '\x01')
            print_error(" | ");
        else if (*s == '\x02')
            print_error(" ;; ");
        else if (*s == '\n')
            print_error("\\n");
        else if (*s == '\r')
            print_error("\\r");
        else
            print_error("%c", *s);
    }
    print_error("\n");
}

/* Feeds `in` as the given pieces (lengths summing to len); returns the list recorded. */
static void feed_pieces(struct rec *r, const char *in, const size_t *pieces, size_t npieces)
{
    struct ap_sse p;
    ap_sse_init(&p, 0);
    rec_reset(r);
    size_t off = 0;
    for (size_t i = 0; i < npieces; i++) {
        assert_int_equal(ap_sse_feed(&p, in + off, pieces[i], rec_cb, r), 0);
        off += pieces[i];
    }
    ap_sse_free(&p);
}

/* ---- the stream table ---- */

#define EV(event, data) event "\x01" data "\x02"

struct stream_case {
    const char *in;
    const char *want; /* concatenated EV(...) */
};

static void run_stream(void **state)
{
    const struct stream_case *c = *state;
    size_t len = strlen(c->in);
    struct rec r = {0};

    /* One piece. */
    feed_pieces(&r, c->in, &len, 1);
    if (strcmp(rec_str(&r), c->want) != 0) {
        show("want", c->want);
        show("got ", rec_str(&r));
        fail_msg("one piece: dispatches differ");
    }

    /* Two pieces, split at every offset (0 and len included). */
    for (size_t k = 0; k <= len; k++) {
        size_t two[2] = {k, len - k};
        feed_pieces(&r, c->in, two, 2);
        if (strcmp(rec_str(&r), c->want) != 0) {
            show("want", c->want);
            show("got ", rec_str(&r));
            fail_msg("split at offset %zu of %zu: dispatches differ", k, len);
        }
    }

    /* One byte at a time. */
    size_t *ones = malloc((len ? len : 1) * sizeof(*ones));
    assert_non_null(ones);
    for (size_t k = 0; k < len; k++)
        ones[k] = 1;
    feed_pieces(&r, c->in, ones, len);
    free(ones);
    if (strcmp(rec_str(&r), c->want) != 0) {
        show("want", c->want);
        show("got ", rec_str(&r));
        fail_msg("1-byte pieces: dispatches differ");
    }
    free(r.buf);
}

#define STREAM(name, in, want) {name, run_stream, NULL, NULL, &(struct stream_case){in, want}}

#define A_START "{\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"model\":\"claude-x\"," \
                "\"usage\":{\"input_tokens\":21,\"output_tokens\":1}}}"
#define A_DELTA "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi \\u00e9\"}}"
#define A_MDELTA "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":12}}"
#define A_STOP "{\"type\":\"message_stop\"}"
#define O_CHUNK1 "{\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"He\"}}]}"
#define O_CHUNK2 "{\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{\"prompt_tokens\":5}}"
#define LONG70 "eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee"
#define LONG63 "eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee"

/* ---- max_event, stop, writer ---- */

static void test_max_event_overflow(void **state)
{
    (void)state;
    static const char in[] = "data: 0123456789abcdef0123456789abcdef\n\n";
    struct rec r = {0};
    struct ap_sse p;

    /* One piece. */
    ap_sse_init(&p, 16);
    assert_int_equal(ap_sse_feed(&p, in, strlen(in), rec_cb, &r), -1);
    assert_int_equal(r.n, 0);
    ap_sse_free(&p);

    /* Byte by byte: some feed must report it, and nothing is dispatched. */
    ap_sse_init(&p, 16);
    int failed = 0;
    for (size_t i = 0; i < strlen(in) && !failed; i++)
        failed = ap_sse_feed(&p, in + i, 1, rec_cb, &r) < 0;
    assert_true(failed);
    assert_int_equal(r.n, 0);
    ap_sse_free(&p);

    /* Many data lines, each small, together over the cap. */
    ap_sse_init(&p, 40);
    static const char multi[] = "data: 0123456789\ndata: 0123456789\ndata: 0123456789\ndata: 0123456789\n\n";
    assert_int_equal(ap_sse_feed(&p, multi, strlen(multi), rec_cb, &r), -1);
    assert_int_equal(r.n, 0);
    ap_sse_free(&p);

    /* A long comment line counts too. */
    ap_sse_init(&p, 16);
    static const char comment[] = ": this comment line is far longer than sixteen bytes\n";
    assert_int_equal(ap_sse_feed(&p, comment, strlen(comment), rec_cb, &r), -1);
    ap_sse_free(&p);
    free(r.buf);
}

static void test_max_event_is_per_event(void **state)
{
    (void)state;
    /* 50 events of 20 bytes each: far more than the cap in total, each under it. */
    struct rec r = {0};
    struct ap_sse p;
    ap_sse_init(&p, 64);
    for (int i = 0; i < 50; i++) {
        char ev[64];
        int n = snprintf(ev, sizeof(ev), "event: e\ndata: payload-%03d\n\n", i);
        assert_int_equal(ap_sse_feed(&p, ev, (size_t)n, rec_cb, &r), 0);
    }
    assert_int_equal(r.n, 50);
    ap_sse_free(&p);
    free(r.buf);
}

static void test_max_event_zero_means_default(void **state)
{
    (void)state;
    /* A 1 MiB data line fits under the 16 MiB default. */
    size_t big = 1u << 20;
    char *in = malloc(big + 16);
    assert_non_null(in);
    memcpy(in, "data: ", 6);
    memset(in + 6, 'x', big);
    memcpy(in + 6 + big, "\n\n", 2);
    struct rec r = {0};
    struct ap_sse p;
    ap_sse_init(&p, 0);
    assert_int_equal(ap_sse_feed(&p, in, big + 8, rec_cb, &r), 0);
    assert_int_equal(r.n, 1);
    assert_int_equal(r.len, big + 2); /* "" \x01 data \x02 */
    ap_sse_free(&p);
    free(r.buf);
    free(in);
}

static void test_callback_stop(void **state)
{
    (void)state;
    static const char in[] = "data: 1\n\ndata: 2\n\ndata: 3\n\n";
    struct rec r = {0};
    r.stop_at = 2;

    struct ap_sse p;
    ap_sse_init(&p, 0);
    assert_int_equal(ap_sse_feed(&p, in, strlen(in), rec_cb, &r), -1);
    assert_int_equal(r.n, 2);
    assert_string_equal(rec_str(&r), EV("", "1") EV("", "2"));
    ap_sse_free(&p);

    /* Byte by byte: the feed holding the end of event 2 returns -1. */
    rec_reset(&r);
    ap_sse_init(&p, 0);
    size_t stopped = 0;
    for (size_t i = 0; i < strlen(in); i++)
        if (ap_sse_feed(&p, in + i, 1, rec_cb, &r) < 0) {
            stopped = i + 1;
            break;
        }
    assert_int_equal(stopped, strlen("data: 1\n\ndata: 2\n\n"));
    assert_int_equal(r.n, 2);
    ap_sse_free(&p);
    free(r.buf);
}

static void test_free_and_reinit(void **state)
{
    (void)state;
    struct rec r = {0};
    struct ap_sse p;
    ap_sse_init(&p, 0);
    assert_int_equal(ap_sse_feed(&p, "event: a\ndata: part", 19, rec_cb, &r), 0);
    ap_sse_free(&p);
    ap_sse_free(&p); /* twice is harmless */
    ap_sse_init(&p, 0);
    assert_int_equal(ap_sse_feed(&p, "data: new\n\n", 11, rec_cb, &r), 0);
    assert_string_equal(rec_str(&r), EV("", "new"));
    ap_sse_free(&p);
    free(r.buf);
}

/*
 * libcurl may call a write callback with 0 bytes; an empty slice between a CR
 * and its LF must not turn the LF into an empty line (an early dispatch).
 */
static void test_empty_slice_between_cr_and_lf(void **state)
{
    (void)state;
    struct rec r = {0};
    struct ap_sse p;
    ap_sse_init(&p, 0);
    assert_int_equal(ap_sse_feed(&p, "data: a\r", 8, rec_cb, &r), 0);
    assert_int_equal(ap_sse_feed(&p, "", 0, rec_cb, &r), 0);
    assert_int_equal(ap_sse_feed(&p, "\ndata: b\r\n\r\n", 12, rec_cb, &r), 0);
    int same = strcmp(rec_str(&r), EV("", "a\nb")) == 0;
    if (!same) {
        show("want", EV("", "a\nb"));
        show("got ", rec_str(&r));
    }
    ap_sse_free(&p);
    free(r.buf);
    if (!same)
        fail_msg("an empty feed after a CR made the following LF an empty line");
}

/* ---- writer ---- */

static char *buf_str(struct evbuffer *b)
{
    size_t n = evbuffer_get_length(b);
    char *s = malloc(n + 1);
    assert_non_null(s);
    evbuffer_copyout(b, s, n);
    s[n] = '\0';
    return s;
}

struct write_case {
    const char *event;
    const char *data;
    const char *exact; /* expected bytes, or NULL: only the round trip is checked */
};

static void run_write(void **state)
{
    const struct write_case *c = *state;
    struct evbuffer *b = evbuffer_new();
    assert_non_null(b);
    assert_int_equal(ap_sse_write(b, c->event, c->data, strlen(c->data)), 0);
    char *out = buf_str(b);
    if (c->exact != NULL)
        assert_string_equal(out, c->exact);

    /* Parse it back, in one piece and byte by byte. */
    struct rec r = {0};
    size_t len = strlen(out);
    char want[512];
    snprintf(want, sizeof(want), "%s\x01%s\x02", c->event ? c->event : "", c->data);
    feed_pieces(&r, out, &len, 1);
    int same = strcmp(rec_str(&r), want) == 0;
    if (!same) {
        show("wrote", out);
        show("want ", want);
        show("got  ", rec_str(&r));
    }
    free(r.buf);
    free(out);
    evbuffer_free(b);
    if (!same)
        fail_msg("ap_sse_write output does not parse back to the same event");
}

#define WRITE(name, ev, data, exact) {name, run_write, NULL, NULL, &(struct write_case){ev, data, exact}}

static void test_write_appends(void **state)
{
    (void)state;
    struct evbuffer *b = evbuffer_new();
    assert_int_equal(ap_sse_write(b, "a", "1", 1), 0);
    assert_int_equal(ap_sse_write(b, NULL, "2", 1), 0);
    assert_int_equal(ap_sse_write(b, "c", "x\ny", 3), 0);
    char *out = buf_str(b);
    assert_string_equal(out, "event: a\ndata: 1\n\ndata: 2\n\nevent: c\ndata: x\ndata: y\n\n");

    struct rec r = {0};
    size_t len = strlen(out);
    feed_pieces(&r, out, &len, 1);
    assert_string_equal(rec_str(&r), EV("a", "1") EV("", "2") EV("c", "x\ny"));
    free(r.buf);
    free(out);
    evbuffer_free(b);
}

/* ---- fixture streams ---- */

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    char *buf = NULL;
    size_t n = 0, cap = 0, got;
    do {
        if (n + 4096 + 1 > cap) {
            cap = cap ? cap * 2 : 8192;
            buf = realloc(buf, cap);
            assert_non_null(buf);
        }
        got = fread(buf + n, 1, 4096, f);
        n += got;
    } while (got > 0);
    fclose(f);
    buf[n] = '\0';
    *len = n;
    return buf;
}

static void run_fixture(void **state)
{
    const char *name = *state;
    char path[256];
    snprintf(path, sizeof(path), "tests/fixtures/streams/%s", name);
    size_t len = 0;
    char *in = slurp(path, &len);
    if (in == NULL) {
        print_message("fixture %s not found (run from the repository root)\n", path);
        skip();
    }

    struct rec whole = {0}, r = {0};
    feed_pieces(&whole, in, &len, 1);
    assert_true(whole.n > 0);

    /* Every data is JSON or [DONE]. */
    const char *s = rec_str(&whole);
    while (*s != '\0') {
        const char *d = strchr(s, '\x01') + 1;
        const char *end = strchr(d, '\x02');
        if (!((size_t)(end - d) == 6 && memcmp(d, "[DONE]", 6) == 0)) {
            cJSON *j = cJSON_ParseWithLength(d, (size_t)(end - d));
            if (j == NULL)
                fail_msg("%s: an event's data is not JSON: %.*s", name, (int)(end - d), d);
            cJSON_Delete(j);
        }
        s = end + 1;
    }

    for (size_t k = 0; k <= len; k++) {
        size_t two[2] = {k, len - k};
        feed_pieces(&r, in, two, 2);
        if (strcmp(rec_str(&r), rec_str(&whole)) != 0)
            fail_msg("%s: split at %zu gives other events than one piece", name, k);
    }
    size_t *ones = malloc(len * sizeof(*ones));
    for (size_t k = 0; k < len; k++)
        ones[k] = 1;
    feed_pieces(&r, in, ones, len);
    free(ones);
    assert_string_equal(rec_str(&r), rec_str(&whole));

    /* The same stream with CRLF line endings gives the same events. */
    char *crlf = malloc(2 * len + 1);
    size_t cl = 0;
    for (size_t k = 0; k < len; k++) {
        if (in[k] == '\n')
            crlf[cl++] = '\r';
        crlf[cl++] = in[k];
    }
    for (size_t k = 0; k <= cl; k += 7) {
        size_t two[2] = {k, cl - k};
        feed_pieces(&r, crlf, two, 2);
        if (strcmp(rec_str(&r), rec_str(&whole)) != 0)
            fail_msg("%s (CRLF): split at %zu gives other events", name, k);
    }
    free(crlf);
    free(in);
    free(whole.buf);
    free(r.buf);
}

#define FIXTURE(file) {"fixture " file, run_fixture, NULL, NULL, (void *)file}

/* One group, so that TAP output has a single plan. */

static const struct CMUnitTest tests[] = {
    STREAM("anthropic stream (LF)",
           "event: message_start\ndata: " A_START "\n\n"
           "event: content_block_delta\ndata: " A_DELTA "\n\n"
           "event: ping\ndata: {\"type\": \"ping\"}\n\n"
           "event: message_delta\ndata: " A_MDELTA "\n\n"
           "event: message_stop\ndata: " A_STOP "\n\n",
           EV("message_start", A_START) EV("content_block_delta", A_DELTA)
           EV("ping", "{\"type\": \"ping\"}") EV("message_delta", A_MDELTA) EV("message_stop", A_STOP)),
    STREAM("openai data: chunks and [DONE]",
           "data: " O_CHUNK1 "\n\ndata: " O_CHUNK2 "\n\ndata: [DONE]\n\n",
           EV("", O_CHUNK1) EV("", O_CHUNK2) EV("", "[DONE]")),
    STREAM("comments, id: and retry: fields are not data",
           ": keep-alive\n\nid: 42\nretry: 3000\nevent: e1\ndata: x\n\n:comment\nid: 43\ndata: y\n: mid-event comment\n\n",
           EV("e1", "x") EV("", "y")),
    STREAM("CRLF line endings",
           "event: a\r\ndata: 1\r\n\r\ndata: 2\r\ndata: 3\r\n\r\n",
           EV("a", "1") EV("", "2\n3")),
    STREAM("CR-only line endings",
           "event: a\rdata: 1\r\rdata: 2\rdata: 3\r\r",
           EV("a", "1") EV("", "2\n3")),
    STREAM("mixed CR, LF and CRLF in one stream",
           "data: a\r\ndata: b\rdata: c\n\r\nevent: z\rdata: d\n\r",
           EV("", "a\nb\nc") EV("z", "d")),
    STREAM("CR then CRLF: line end, then an empty line",
           "data: a\r\r\ndata: b\r\n\n",
           EV("", "a") EV("", "b")),
    STREAM("CRLF then LF: line end, then an empty line",
           "data: a\r\n\ndata: b\n\r\n",
           EV("", "a") EV("", "b")),
    STREAM("multi-line data joined with \\n, empty data line kept",
           "data: line1\ndata: line2\ndata:\ndata: line4\n\n",
           EV("", "line1\nline2\n\nline4")),
    STREAM("event with no data is not dispatched, its name does not leak",
           "event: lonely\n\ndata: d1\n\nevent: lonely2\nid: 7\n\nevent: next\ndata: d2\n\n",
           EV("", "d1") EV("next", "d2")),
    STREAM("no space after colon; only one space dropped",
           "event:e\ndata:{\"a\":1}\n\ndata:  two spaces\n\ndata:\tx\n\n",
           EV("e", "{\"a\":1}") EV("", " two spaces") EV("", "\tx")),
    STREAM("trailing partial event is not dispatched (LF)",
           "data: one\n\nevent: e\ndata: two\n",
           EV("", "one")),
    STREAM("trailing partial line is not dispatched",
           "data: one\n\nevent: e\ndata: tw",
           EV("", "one")),
    STREAM("a final lone CR completes the blank line (dispatched)",
           "data: one\r\n\r\ndata: two\r\n\r",
           EV("", "one") EV("", "two")),
    STREAM("field 'data' without colon is an empty data line",
           "data\ndata\n\ndata\n\n",
           EV("", "\n") EV("", "")),
    STREAM("unknown fields ignored; 'event' without colon is an empty name",
           "foo: bar\nevent: x\nevent\ndata: z\n\n data: not a field\n\n",
           EV("", "z")),
    STREAM("leading blank lines dispatch nothing",
           "\n\n\r\n\rdata: a\n\n",
           EV("", "a")),
    STREAM("event name resets after each dispatch",
           "event: a\ndata: 1\n\ndata: 2\n\n",
           EV("a", "1") EV("", "2")),
    STREAM("last event: line wins",
           "event: a\nevent: b\ndata: x\n\n",
           EV("b", "x")),
    STREAM("colon inside the value is kept",
           "data: a:b: c\n\nevent: x:y\ndata: 1\n\n",
           EV("", "a:b: c") EV("x:y", "1")),
    STREAM("UTF-8 data split mid-sequence",
           "data: h\xc3\xa9llo \xe4\xb8\x96\xe7\x95\x8c\n\n",
           EV("", "h\xc3\xa9llo \xe4\xb8\x96\xe7\x95\x8c")),
    STREAM("event name longer than 63 bytes is truncated",
           "event: " LONG70 "\ndata: x\n\n",
           EV(LONG63, "x")),
    STREAM("empty input", "", ""),
    STREAM("only comments", ": a\n: b\r\n:\r\r\n", ""),
    {"max_event overflow returns -1", test_max_event_overflow, NULL, NULL, NULL},
    {"max_event bounds one event, not the stream", test_max_event_is_per_event, NULL, NULL, NULL},
    {"max_event 0 means the 16 MiB default", test_max_event_zero_means_default, NULL, NULL, NULL},
    {"callback returning -1 stops the parser", test_callback_stop, NULL, NULL, NULL},
    {"free, free again, re-init", test_free_and_reinit, NULL, NULL, NULL},
    {"empty slice between CR and LF keeps CRLF one line end", test_empty_slice_between_cr_and_lf, NULL, NULL, NULL},
    WRITE("write: event and one-line data", "message_start", "{\"a\":1}",
          "event: message_start\ndata: {\"a\":1}\n\n"),
    WRITE("write: no event line when the event is empty", "", "[DONE]", "data: [DONE]\n\n"),
    WRITE("write: NULL event", NULL, "x", "data: x\n\n"),
    WRITE("write: embedded newlines become data lines", "e", "line1\nline2\nline3",
          "event: e\ndata: line1\ndata: line2\ndata: line3\n\n"),
    WRITE("write: empty data", "e", "", "event: e\ndata: \n\n"),
    WRITE("write: empty line inside data", "e", "a\n\nb", "event: e\ndata: a\ndata: \ndata: b\n\n"),
    WRITE("write: data with a leading space", "e", " x", NULL),
    WRITE("write: data ending in a newline round-trips", "e", "a\n", NULL),
    WRITE("write: data that is one newline round-trips", "e", "\n", NULL),
    {"write: several events append", test_write_appends, NULL, NULL, NULL},
    FIXTURE("anthropic_text.in.sse"),
    FIXTURE("anthropic_tool_thinking.in.sse"),
    FIXTURE("anthropic_error.in.sse"),
    FIXTURE("openai_text_usage.in.sse"),
    FIXTURE("openai_parallel_tools.in.sse"),
    FIXTURE("openai_reasoning.in.sse"),
    FIXTURE("openai_error.in.sse"),
    FIXTURE("openai_compat_tools.in.sse"),
};

int main(void)
{
    return cmocka_run_group_tests_name("sse", tests, NULL, NULL);
}
