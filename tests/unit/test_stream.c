/*
 * ap_stream: the client's view of one upstream SSE stream.
 *
 * Same-format rows (Anthropic->Anthropic, OpenAI->OpenAI) are one table: each
 * stream is fed whole, split in two at every byte offset, and one byte at a
 * time. Every way must give the row's exact client bytes (the input itself for
 * a pass-through), the row's usage, content_started, done, failed and error
 * text, and the row's ending: ap_stream_end appends an error in the client's
 * format only when the upstream neither ended properly nor sent an error, and
 * a second call appends nothing.
 *
 * Then content_started as events arrive one by one, and one stream per
 * conversion direction to check that ap_stream delegates to ap_conv_stream.
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
#include "ap_stream.h"

/* ---- Anthropic events ---- */

#define A_START                                                                                        \
    "event: message_start\n"                                                                           \
    "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\","            \
    "\"role\":\"assistant\",\"model\":\"claude-x\",\"content\":[],\"stop_reason\":null,"                 \
    "\"usage\":{\"input_tokens\":21,\"cache_creation_input_tokens\":5,\"cache_read_input_tokens\":3,"  \
    "\"output_tokens\":1}}}\n\n"
#define A_PING "event: ping\ndata: {\"type\": \"ping\"}\n\n"
#define A_TEXT_START                                                                                   \
    "event: content_block_start\n"                                                                     \
    "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n"
#define A_TEXT_DELTA                                                                                   \
    "event: content_block_delta\n"                                                                     \
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\","           \
    "\"text\":\"Hi \\u00e9 \xe2\x98\x95\"}}\n\n"
#define A_THINK_START                                                                                  \
    "event: content_block_start\n"                                                                     \
    "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"thinking\","     \
    "\"thinking\":\"\"}}\n\n"
#define A_THINK_DELTA                                                                                  \
    "event: content_block_delta\n"                                                                     \
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"thinking_delta\","       \
    "\"thinking\":\"Hmm.\"}}\n\n"
#define A_TOOL_START                                                                                   \
    "event: content_block_start\n"                                                                     \
    "data: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\","     \
    "\"id\":\"toolu_1\",\"name\":\"get_weather\",\"input\":{}}}\n\n"
#define A_BLOCK_STOP "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n"
#define A_MSG_DELTA                                                                                    \
    "event: message_delta\n"                                                                           \
    "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null}," \
    "\"usage\":{\"output_tokens\":12}}\n\n"
#define A_STOP "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"
#define A_ERROR                                                                                        \
    "event: error\n"                                                                                   \
    "data: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n"

#define A_FULL A_START A_TEXT_START A_PING A_TEXT_DELTA A_TEXT_DELTA A_BLOCK_STOP A_MSG_DELTA A_STOP

/* The same stream with CRLF line ends, a comment and an id field: still passed through byte for byte. */
#define A_FULL_CRLF                                                                                    \
    ": hello\r\n\r\n"                                                                                  \
    "event: message_start\r\n"                                                                         \
    "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"usage\":{\"input_tokens\":21,"  \
    "\"cache_creation_input_tokens\":5,\"cache_read_input_tokens\":3,\"output_tokens\":1}}}\r\n\r\n"     \
    "event: content_block_delta\r\nid: 7\r\n"                                                          \
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"x\"}}\r\n\r\n" \
    "event: message_delta\r\n"                                                                         \
    "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":12}}\r\n\r\n" \
    "event: message_stop\r\ndata: {\"type\":\"message_stop\"}\r\n\r\n"

/* ---- OpenAI chunks ---- */

#define O_HEAD "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1732871893,\"model\":\"m\","
#define O_ROLE                                                                                         \
    O_HEAD "\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\",\"refusal\":null}," \
           "\"finish_reason\":null}],\"usage\":null}\n\n"
#define O_TEXT O_HEAD "\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi \xf0\x9f\x91\x8b\"},\"finish_reason\":null}],\"usage\":null}\n\n"
#define O_EMPTY O_HEAD "\"choices\":[{\"index\":0,\"delta\":{\"content\":\"\"},\"finish_reason\":null}]}\n\n"
#define O_NULL O_HEAD "\"choices\":[{\"index\":0,\"delta\":{\"content\":null},\"finish_reason\":null}]}\n\n"
#define O_REASON O_HEAD "\"choices\":[{\"index\":0,\"delta\":{\"reasoning_content\":\"Let me think\"}}]}\n\n"
#define O_TOOL                                                                                         \
    O_HEAD "\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_1\","      \
           "\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"\"}}]}}]}\n\n"
#define O_TOOL_EMPTY O_HEAD "\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[]}}]}\n\n"
#define O_FINISH O_HEAD "\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n"
#define O_USAGE                                                                                        \
    O_HEAD "\"choices\":[],\"usage\":{\"prompt_tokens\":100,\"completion_tokens\":7,\"total_tokens\":107," \
           "\"prompt_tokens_details\":{\"cached_tokens\":40}}}\n\n"
#define O_USAGE_PLAIN O_HEAD "\"choices\":[],\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":2}}\n\n"
/* Usage on a chunk that still has a choice: not the usage-only chunk, kept. */
#define O_FINISH_USAGE                                                                                 \
    O_HEAD "\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],"                      \
           "\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":2}}\n\n"
#define O_ERROR "data: {\"error\":{\"message\":\"Slow down\",\"type\":\"rate_limit_error\",\"code\":null}}\n\n"
#define O_DONE "data: [DONE]\n\n"

#define O_FULL O_ROLE O_TEXT O_TEXT O_FINISH O_USAGE O_DONE
#define O_FULL_NOUSAGE O_ROLE O_TEXT O_TEXT O_FINISH O_DONE

/* CRLF, a keep-alive comment, and the data split over "data:" without a space. */
#define O_FULL_CRLF                                                                                    \
    ": keep-alive\r\n\r\n"                                                                             \
    "data:{\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"A\"}}]}\r\n\r\n"             \
    "data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":3}}\r\n\r\n" \
    "data: [DONE]\r\n\r\n"
/* What a client that did not ask for usage gets from it. */
#define O_FULL_CRLF_FILTERED                                                                           \
    "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"A\"}}]}\n\n"                \
    "data: [DONE]\n\n"

/* ---- helpers ---- */

struct result {
    char *out;          /* owned: client bytes from the feeds */
    size_t len;
    char *end1;         /* owned: what ap_stream_end appended */
    char *end2;         /* owned: what a second ap_stream_end appended */
    struct ap_usage u;  /* before the end */
    int started, done, failed;
    char error[256];    /* before the end */
};

static char *take(struct evbuffer *b, size_t *len)
{
    size_t n = evbuffer_get_length(b);
    char *s = malloc(n + 1);
    assert_non_null(s);
    assert_int_equal(evbuffer_remove(b, s, n), (int)n);
    s[n] = '\0';
    if (len)
        *len = n;
    return s;
}

static void result_free(struct result *r)
{
    free(r->out);
    free(r->end1);
    free(r->end2);
    memset(r, 0, sizeof(*r));
}

/* Feeds `in` as pieces (lengths summing to len), then ends with upstream_ok. */
static void run_pieces(const struct ap_stream_opts *o, const char *in, const size_t *pieces, size_t np,
                       int upstream_ok, struct result *r)
{
    struct ap_stream *s = ap_stream_new(o);
    assert_non_null(s);
    struct evbuffer *out = evbuffer_new();
    assert_non_null(out);
    size_t off = 0;
    for (size_t i = 0; i < np; i++) {
        if (ap_stream_feed(s, in + off, pieces[i], out) != 0)
            fail_msg("feed of piece %zu (offset %zu, %zu bytes) failed", i, off, pieces[i]);
        off += pieces[i];
    }
    memset(r, 0, sizeof(*r));
    r->out = take(out, &r->len);
    ap_stream_usage(s, &r->u);
    r->started = ap_stream_content_started(s);
    r->done = ap_stream_done(s);
    r->failed = ap_stream_failed(s);
    assert_non_null(ap_stream_error(s));
    snprintf(r->error, sizeof(r->error), "%s", ap_stream_error(s));
    assert_int_equal(ap_stream_end(s, upstream_ok, out), 0);
    r->end1 = take(out, NULL);
    assert_int_equal(ap_stream_end(s, upstream_ok, out), 0);
    r->end2 = take(out, NULL);
    evbuffer_free(out);
    ap_stream_free(s);
}

static void run_whole(const struct ap_stream_opts *o, const char *in, int upstream_ok, struct result *r)
{
    size_t len = strlen(in);
    run_pieces(o, in, &len, 1, upstream_ok, r);
}

/* Prints bytes with control characters visible. */
static void show(const char *label, const char *s, size_t n)
{
    print_error("%s (%zu bytes): ", label, n);
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\n')
            print_error("\\n");
        else if (s[i] == '\r')
            print_error("\\r");
        else
            print_error("%c", s[i]);
    }
    print_error("\n");
}

/* The appended ending is one error event in the client's format. */
static void check_error_ending(enum ap_fmt to, const char *end)
{
    const char *json_start;
    size_t json_len;
    if (to == AP_FMT_ANTHROPIC) {
        static const char pre[] = "event: error\ndata: ";
        if (strncmp(end, pre, strlen(pre)) != 0 || strlen(end) < strlen(pre) + 2 ||
            strcmp(end + strlen(end) - 2, "\n\n") != 0 || strchr(end + strlen(pre), '\n') != end + strlen(end) - 2)
            fail_msg("Anthropic ending is not one error event: [%s]", end);
        json_start = end + strlen(pre);
        json_len = strlen(json_start) - 2;
    } else {
        static const char pre[] = "data: ";
        static const char post[] = "\n\ndata: [DONE]\n\n";
        size_t n = strlen(end);
        if (strncmp(end, pre, strlen(pre)) != 0 || n < strlen(pre) + strlen(post) ||
            strcmp(end + n - strlen(post), post) != 0 || strchr(end + strlen(pre), '\n') != end + n - strlen(post))
            fail_msg("OpenAI ending is not an error chunk then [DONE]: [%s]", end);
        json_start = end + strlen(pre);
        json_len = n - strlen(pre) - strlen(post);
    }
    cJSON *j = cJSON_ParseWithLength(json_start, json_len);
    if (j == NULL)
        fail_msg("ending data is not JSON: [%s]", end);
    const cJSON *err = cJSON_GetObjectItemCaseSensitive(j, "error");
    assert_true(cJSON_IsObject(err));
    const cJSON *msg = cJSON_GetObjectItemCaseSensitive(err, "message");
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(err, "type");
    assert_true(cJSON_IsString(msg) && msg->valuestring[0] != '\0');
    assert_true(cJSON_IsString(type) && type->valuestring[0] != '\0');
    if (to == AP_FMT_ANTHROPIC)
        assert_string_equal(cJSON_GetObjectItemCaseSensitive(j, "type")->valuestring, "error");
    else
        assert_null(cJSON_GetObjectItemCaseSensitive(j, "choices"));
    cJSON_Delete(j);
}

/* ---- the same-format table ---- */

#define ANY (-1)

struct tap_case {
    enum ap_fmt fmt;
    int wants_usage;
    const char *in;
    const char *out;            /* expected client bytes; NULL: the input, untouched */
    int started, done, failed;  /* ANY: not checked */
    struct ap_usage usage;
    const char *err1, *err2;    /* expected in ap_stream_error when failed */
    int end_error;              /* ap_stream_end appends the error ending */
};

static void check_result(const struct tap_case *c, const struct result *r, const char *how, int upstream_ok)
{
    const char *want = c->out ? c->out : c->in;
    if (r->len != strlen(want) || memcmp(r->out, want, r->len) != 0) {
        show("want", want, strlen(want));
        show("got ", r->out, r->len);
        fail_msg("%s: client bytes differ", how);
    }
    if (c->started != ANY && r->started != c->started)
        fail_msg("%s: content_started %d, want %d", how, r->started, c->started);
    if (c->done != ANY && r->done != c->done)
        fail_msg("%s: done %d, want %d", how, r->done, c->done);
    if (c->failed != ANY && r->failed != c->failed)
        fail_msg("%s: failed %d, want %d", how, r->failed, c->failed);
    if (r->u.input != c->usage.input || r->u.output != c->usage.output ||
        r->u.cache_read != c->usage.cache_read || r->u.cache_creation != c->usage.cache_creation ||
        r->u.seen != c->usage.seen)
        fail_msg("%s: usage in %lld out %lld cr %lld cc %lld seen %u, want %lld %lld %lld %lld %u", how,
                 (long long)r->u.input, (long long)r->u.output, (long long)r->u.cache_read,
                 (long long)r->u.cache_creation, (unsigned)r->u.seen, (long long)c->usage.input,
                 (long long)c->usage.output, (long long)c->usage.cache_read, (long long)c->usage.cache_creation,
                 (unsigned)c->usage.seen);
    if (c->failed == 1) {
        if (c->err1 && strstr(r->error, c->err1) == NULL)
            fail_msg("%s: error \"%s\" lacks \"%s\"", how, r->error, c->err1);
        if (c->err2 && strstr(r->error, c->err2) == NULL)
            fail_msg("%s: error \"%s\" lacks \"%s\"", how, r->error, c->err2);
    } else if (c->failed == 0) {
        assert_string_equal(r->error, "");
    }
    if (c->end_error) {
        check_error_ending(c->fmt, r->end1);
    } else if (r->end1[0] != '\0') {
        fail_msg("%s: ap_stream_end(ok=%d) appended [%s] after a proper end or an upstream error", how, upstream_ok,
                 r->end1);
    }
    if (r->end2[0] != '\0')
        fail_msg("%s: a second ap_stream_end appended [%s]", how, r->end2);
}

static void run_tap(void **state)
{
    const struct tap_case *c = *state;
    struct ap_stream_opts o = {c->fmt, c->fmt, NULL, c->wants_usage};
    size_t len = strlen(c->in);
    struct result r;
    char how[64];

    run_whole(&o, c->in, 1, &r);
    check_result(c, &r, "one piece", 1);
    result_free(&r);

    for (size_t k = 0; k <= len; k++) {
        size_t two[2] = {k, len - k};
        run_pieces(&o, c->in, two, 2, (int)(k & 1), &r);
        snprintf(how, sizeof(how), "split at %zu of %zu", k, len);
        check_result(c, &r, how, (int)(k & 1));
        result_free(&r);
    }

    size_t *ones = malloc((len ? len : 1) * sizeof(*ones));
    assert_non_null(ones);
    for (size_t k = 0; k < len; k++)
        ones[k] = 1;
    run_pieces(&o, c->in, ones, len, 0, &r);
    free(ones);
    check_result(c, &r, "1-byte pieces", 0);
    result_free(&r);
}

#define U(in, out, cr, cc) \
    ((struct ap_usage){.input = (in), .output = (out), .cache_read = (cr), .cache_creation = (cc), .seen = 1})
#define NO_USAGE ((struct ap_usage){0})

#define TAP(name, fmt, wants, in, out, started, done, failed, usage, e1, e2, end_error) \
    {name, run_tap, NULL, NULL,                                                         \
     &(struct tap_case){fmt, wants, in, out, started, done, failed, usage, e1, e2, end_error}}
#define A_TAP(name, in, started, done, failed, usage, e1, e2, end_error) \
    TAP("anthropic: " name, AP_FMT_ANTHROPIC, 0, in, NULL, started, done, failed, usage, e1, e2, end_error)
#define O_TAP(name, wants, in, out, started, done, failed, usage, e1, e2, end_error) \
    TAP("openai: " name, AP_FMT_OPENAI, wants, in, out, started, done, failed, usage, e1, e2, end_error)

/* ---- content_started as events arrive ---- */

struct step {
    const char *event;  /* bytes of one event */
    int started;        /* after it */
};

static void run_steps(enum ap_fmt fmt, int wants_usage, const struct step *steps, size_t n)
{
    struct ap_stream_opts o = {fmt, fmt, NULL, wants_usage};
    struct ap_stream *s = ap_stream_new(&o);
    assert_non_null(s);
    struct evbuffer *out = evbuffer_new();
    assert_non_null(out);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(ap_stream_feed(s, steps[i].event, strlen(steps[i].event), out), 0);
        if (ap_stream_content_started(s) != steps[i].started)
            fail_msg("after event %zu [%.60s...]: content_started %d, want %d", i, steps[i].event,
                     ap_stream_content_started(s), steps[i].started);
    }
    evbuffer_free(out);
    ap_stream_free(s);
}

static void test_anthropic_started_steps(void **state)
{
    (void)state;
    const struct step text[] = {{A_START, 0}, {A_PING, 0}, {A_TEXT_START, 0}, {A_TEXT_DELTA, 1},
                                {A_BLOCK_STOP, 1}, {A_MSG_DELTA, 1}, {A_STOP, 1}};
    const struct step think[] = {{A_START, 0}, {A_THINK_START, 0}, {A_THINK_DELTA, 1}};
    const struct step tool[] = {{A_START, 0}, {A_PING, 0}, {A_TOOL_START, 1}};
    const struct step empty[] = {{A_START, 0}, {A_TEXT_START, 0}, {A_BLOCK_STOP, 0}, {A_MSG_DELTA, 0}, {A_STOP, 0}};
    run_steps(AP_FMT_ANTHROPIC, 0, text, sizeof(text) / sizeof(text[0]));
    run_steps(AP_FMT_ANTHROPIC, 0, think, sizeof(think) / sizeof(think[0]));
    run_steps(AP_FMT_ANTHROPIC, 0, tool, sizeof(tool) / sizeof(tool[0]));
    run_steps(AP_FMT_ANTHROPIC, 0, empty, sizeof(empty) / sizeof(empty[0]));
}

static void test_openai_started_steps(void **state)
{
    (void)state;
    for (int wants = 0; wants <= 1; wants++) {
        const struct step text[] = {{O_ROLE, 0}, {O_EMPTY, 0}, {O_NULL, 0}, {O_TEXT, 1}, {O_FINISH, 1},
                                    {O_USAGE, 1}, {O_DONE, 1}};
        const struct step reason[] = {{O_ROLE, 0}, {O_REASON, 1}, {O_TEXT, 1}};
        const struct step tool[] = {{O_ROLE, 0}, {O_TOOL_EMPTY, 0}, {O_TOOL, 1}};
        const struct step none[] = {{O_ROLE, 0}, {O_FINISH, 0}, {O_USAGE, 0}, {O_DONE, 0}};
        run_steps(AP_FMT_OPENAI, wants, text, sizeof(text) / sizeof(text[0]));
        run_steps(AP_FMT_OPENAI, wants, reason, sizeof(reason) / sizeof(reason[0]));
        run_steps(AP_FMT_OPENAI, wants, tool, sizeof(tool) / sizeof(tool[0]));
        run_steps(AP_FMT_OPENAI, wants, none, sizeof(none) / sizeof(none[0]));
    }
}

/* ---- the filtered OpenAI stream, as events ---- */

struct evlist {
    char buf[8192]; /* event \x01 data \x02 per event */
    size_t len;
};

static int evlist_cb(void *arg, const char *event, const char *data, size_t len)
{
    struct evlist *l = arg;
    int n = snprintf(l->buf + l->len, sizeof(l->buf) - l->len, "%s\x01%.*s\x02", event, (int)len, data);
    assert_true(n > 0 && (size_t)n < sizeof(l->buf) - l->len);
    l->len += (size_t)n;
    return 0;
}

static void events_of(const char *s, struct evlist *l)
{
    struct ap_sse p;
    ap_sse_init(&p, 0);
    l->len = 0;
    l->buf[0] = '\0';
    assert_int_equal(ap_sse_feed(&p, s, strlen(s), evlist_cb, l), 0);
    ap_sse_free(&p);
}

/* The re-emitted stream carries the same events as the input, without the usage one. */
static void test_openai_filter_events(void **state)
{
    (void)state;
    struct ap_stream_opts o = {AP_FMT_OPENAI, AP_FMT_OPENAI, NULL, 0};
    struct result r;
    struct evlist got, want;

    run_whole(&o, O_ROLE O_TEXT O_FINISH O_USAGE O_DONE, 1, &r);
    events_of(r.out, &got);
    events_of(O_ROLE O_TEXT O_FINISH O_DONE, &want);
    assert_string_equal(got.buf, want.buf);
    assert_null(strstr(r.out, "\"usage\":{"));
    assert_non_null(strstr(r.out, "\"usage\":null")); /* the others' null usage stays */
    assert_int_equal(r.len >= strlen(O_DONE) && strcmp(r.out + r.len - strlen(O_DONE), O_DONE) == 0, 1);
    result_free(&r);

    run_whole(&o, O_FULL_CRLF, 1, &r);
    events_of(r.out, &got);
    events_of(O_FULL_CRLF_FILTERED, &want);
    assert_string_equal(got.buf, want.buf);
    result_free(&r);
}

/* ---- conversion: delegation, one stream per direction ---- */

static void test_convert_a2o(void **state)
{
    (void)state;
    struct ap_stream_opts o = {AP_FMT_ANTHROPIC, AP_FMT_OPENAI, "renamed-model", 1};
    static const char in[] = A_FULL;
    struct result whole, r;
    char how[64];

    run_whole(&o, in, 1, &whole);
    assert_non_null(strstr(whole.out, "chat.completion.chunk"));
    assert_non_null(strstr(whole.out, "\"model\":\"renamed-model\""));
    assert_null(strstr(whole.out, "claude-x"));
    assert_non_null(strstr(whole.out, "\"content\":\"Hi"));
    assert_null(strstr(whole.out, "event:"));
    assert_true(whole.len > 14 && strcmp(whole.out + whole.len - 14, "data: [DONE]\n\n") == 0);
    assert_int_equal(whole.started, 1);
    assert_int_equal(whole.done, 1);
    assert_int_equal(whole.failed, 0);
    assert_int_equal(whole.u.input, 21);
    assert_int_equal(whole.u.output, 12);
    assert_int_equal(whole.u.cache_read, 3);
    assert_int_equal(whole.u.cache_creation, 5);
    assert_string_equal(whole.end1, "");
    assert_string_equal(whole.end2, "");

    /* Still split-independent through the converter. */
    for (size_t k = 0; k <= strlen(in); k += 7) {
        size_t two[2] = {k, strlen(in) - k};
        run_pieces(&o, in, two, 2, 1, &r);
        snprintf(how, sizeof(how), "split at %zu", k);
        if (r.len != whole.len || memcmp(r.out, whole.out, r.len) != 0)
            fail_msg("%s: converted bytes differ", how);
        result_free(&r);
    }
    result_free(&whole);

    /* Unfinished: the converter's OpenAI error ending. */
    run_whole(&o, A_START A_TEXT_START A_TEXT_DELTA, 0, &r);
    assert_int_equal(r.started, 1);
    assert_int_equal(r.done, 0);
    assert_int_equal(r.failed, 0);
    check_error_ending(AP_FMT_OPENAI, r.end1);
    assert_string_equal(r.end2, "");
    result_free(&r);
}

static void test_convert_o2a(void **state)
{
    (void)state;
    struct ap_stream_opts o = {AP_FMT_OPENAI, AP_FMT_ANTHROPIC, NULL, 0};
    struct result r;

    run_whole(&o, O_ROLE O_TEXT O_FINISH O_USAGE_PLAIN O_DONE, 1, &r);
    assert_non_null(strstr(r.out, "event: message_start\n"));
    assert_non_null(strstr(r.out, "event: content_block_delta\n"));
    assert_non_null(strstr(r.out, "event: message_stop\n"));
    assert_null(strstr(r.out, "[DONE]"));
    assert_int_equal(r.started, 1);
    assert_int_equal(r.done, 1);
    assert_int_equal(r.failed, 0);
    assert_int_equal(r.u.input, 10);
    assert_int_equal(r.u.output, 2);
    assert_string_equal(r.end1, "");
    result_free(&r);

    run_whole(&o, O_ROLE O_TEXT O_ERROR O_DONE, 1, &r);
    assert_int_equal(r.started, 1);
    assert_int_equal(r.failed, 1);
    assert_int_equal(r.done, 0);
    assert_non_null(strstr(r.error, "Slow down"));
    assert_non_null(strstr(r.out, "event: error\n"));
    assert_non_null(strstr(r.out, "Slow down"));
    assert_string_equal(r.end1, "");
    result_free(&r);

    run_whole(&o, O_ROLE, 0, &r);
    assert_int_equal(r.started, 0);
    check_error_ending(AP_FMT_ANTHROPIC, r.end1);
    result_free(&r);
}

static void test_free_null(void **state)
{
    (void)state;
    ap_stream_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        /* Anthropic -> Anthropic: bytes untouched */
        A_TAP("full text stream", A_FULL, 1, 1, 0, U(21, 12, 3, 5), NULL, NULL, 0),
        A_TAP("CRLF, comment, id", A_FULL_CRLF, 1, 1, 0, U(21, 12, 3, 5), NULL, NULL, 0),
        A_TAP("message_start only", A_START, 0, 0, 0, U(21, 1, 3, 5), NULL, NULL, 1),
        A_TAP("start, ping", A_START A_PING, 0, 0, 0, U(21, 1, 3, 5), NULL, NULL, 1),
        A_TAP("text block opened, no delta", A_START A_PING A_TEXT_START, 0, 0, 0, U(21, 1, 3, 5), NULL, NULL, 1),
        A_TAP("thinking block opened, no delta", A_START A_THINK_START, 0, 0, 0, U(21, 1, 3, 5), NULL, NULL, 1),
        A_TAP("text delta, cut", A_START A_TEXT_START A_TEXT_DELTA, 1, 0, 0, U(21, 1, 3, 5), NULL, NULL, 1),
        A_TAP("thinking delta, cut", A_START A_THINK_START A_THINK_DELTA, 1, 0, 0, U(21, 1, 3, 5), NULL, NULL, 1),
        A_TAP("tool_use block start, cut", A_START A_TOOL_START, 1, 0, 0, U(21, 1, 3, 5), NULL, NULL, 1),
        A_TAP("message_delta without message_stop", A_START A_TEXT_START A_BLOCK_STOP A_MSG_DELTA, 0, 0, 0,
              U(21, 12, 3, 5), NULL, NULL, 1),
        A_TAP("empty answer, proper end", A_START A_MSG_DELTA A_STOP, 0, 1, 0, U(21, 12, 3, 5), NULL, NULL, 0),
        A_TAP("nothing at all", "", 0, 0, 0, NO_USAGE, NULL, NULL, 1),
        A_TAP("error before content", A_START A_PING A_ERROR, 0, ANY, 1, U(21, 1, 3, 5), "overloaded_error",
              "Overloaded", 0),
        A_TAP("error after content", A_START A_TEXT_START A_TEXT_DELTA A_ERROR, 1, ANY, 1, U(21, 1, 3, 5),
              "overloaded_error", "Overloaded", 0),
        A_TAP("error as the only event", A_ERROR, 0, ANY, 1, NO_USAGE, "overloaded_error", "Overloaded", 0),
        /* OpenAI -> OpenAI, client did not ask for usage: the usage-only chunk is removed */
        O_TAP("full, usage removed", 0, O_FULL, O_FULL_NOUSAGE, 1, 1, 0, U(60, 7, 40, 0), NULL, NULL, 0),
        O_TAP("CRLF, usage removed", 0, O_FULL_CRLF, O_FULL_CRLF_FILTERED, 1, 1, 0, U(9, 3, 0, 0), NULL, NULL, 0),
        O_TAP("no usage chunk", 0, O_FULL_NOUSAGE, NULL, 1, 1, 0, NO_USAGE, NULL, NULL, 0),
        O_TAP("usage before content", 0, O_ROLE O_USAGE_PLAIN O_TEXT O_DONE, O_ROLE O_TEXT O_DONE, 1, 1, 0,
              U(10, 2, 0, 0), NULL, NULL, 0),
        O_TAP("usage on a chunk with a choice is kept", 0, O_ROLE O_TEXT O_FINISH_USAGE O_DONE, NULL, 1, 1, 0,
              U(10, 2, 0, 0), NULL, NULL, 0),
        /* client asked for usage: untouched */
        O_TAP("full, client wants usage", 1, O_FULL, NULL, 1, 1, 0, U(60, 7, 40, 0), NULL, NULL, 0),
        O_TAP("CRLF, client wants usage", 1, O_FULL_CRLF, NULL, 1, 1, 0, U(9, 3, 0, 0), NULL, NULL, 0),
        /* content_started */
        O_TAP("role chunk only", 0, O_ROLE, NULL, 0, 0, 0, NO_USAGE, NULL, NULL, 1),
        O_TAP("empty and null content", 0, O_ROLE O_EMPTY O_NULL, NULL, 0, 0, 0, NO_USAGE, NULL, NULL, 1),
        O_TAP("reasoning_content", 0, O_ROLE O_REASON, NULL, 1, 0, 0, NO_USAGE, NULL, NULL, 1),
        O_TAP("tool_calls", 1, O_ROLE O_TOOL, NULL, 1, 0, 0, NO_USAGE, NULL, NULL, 1),
        O_TAP("empty tool_calls", 1, O_ROLE O_TOOL_EMPTY, NULL, 0, 0, 0, NO_USAGE, NULL, NULL, 1),
        O_TAP("finish_reason without [DONE]", 0, O_ROLE O_TEXT O_FINISH, NULL, 1, 0, 0, NO_USAGE, NULL, NULL, 1),
        O_TAP("usage without [DONE]", 1, O_ROLE O_TEXT O_FINISH O_USAGE, NULL, 1, 0, 0, U(60, 7, 40, 0), NULL,
              NULL, 1),
        O_TAP("nothing at all", 0, "", NULL, 0, 0, 0, NO_USAGE, NULL, NULL, 1),
        /* errors */
        O_TAP("error chunk then [DONE]", 0, O_ROLE O_TEXT O_ERROR O_DONE, NULL, 1, ANY, 1, NO_USAGE,
              "rate_limit_error", "Slow down", 0),
        O_TAP("error chunk, no [DONE]", 1, O_ROLE O_ERROR, NULL, 0, ANY, 1, NO_USAGE, "rate_limit_error",
              "Slow down", 0),
        cmocka_unit_test(test_anthropic_started_steps),
        cmocka_unit_test(test_openai_started_steps),
        cmocka_unit_test(test_openai_filter_events),
        cmocka_unit_test(test_convert_a2o),
        cmocka_unit_test(test_convert_o2a),
        cmocka_unit_test(test_free_null),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
