/*
 * Stream conversion against recorded streams. Each tests/fixtures/streams/
 * <name>.in.sse is an upstream stream written after the real wire format;
 * <name>.out.sse is what the client must receive, checked by hand (and against
 * the official SDKs' stream parsers). Every fixture is converted whole, split
 * in two at every byte offset, and byte by byte: the output must be the same
 * bytes each time. Then the endings: truncated upstreams, a clean close without
 * the proper end, invalid input, and what content_started, usage, done and
 * failed report along the way.
 *
 * Fixtures are read relative to the repository root (the tests run from it),
 * or from $AP_FIXTURES (the fixtures root holding streams/, or streams/ itself).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include <event2/buffer.h>

#include "ap_conv.h"
#include "ap_usage.h"

#define CREATED 1732600000

struct stream_case {
    const char *name; /* <name>.in.sse -> <name>.out.sse */
    enum ap_fmt from;
    struct ap_conv_stream_opts opts;
    struct ap_usage usage; /* expected at the end */
    int done, failed;
};

static const struct stream_case cases[] = {
    {"anthropic_text", AP_FMT_ANTHROPIC, {NULL, 1, CREATED},
     {.input = 21, .output = 19, .cache_read = 3072}, 1, 0},
    {"anthropic_tool_thinking", AP_FMT_ANTHROPIC, {"kimi-k2.5", 0, CREATED},
     {.input = 412, .output = 89, .cache_creation = 1024}, 1, 0},
    {"anthropic_error", AP_FMT_ANTHROPIC, {NULL, 1, CREATED}, {.input = 35, .output = 1}, 0, 1},
    {"openai_text_usage", AP_FMT_OPENAI, {"claude-sonnet-4-5", 0, 0},
     {.input = 86, .output = 11, .cache_read = 1920}, 1, 0},
    {"openai_parallel_tools", AP_FMT_OPENAI, {NULL, 0, 0}, {.input = 82, .output = 47}, 1, 0},
    {"openai_reasoning", AP_FMT_OPENAI, {NULL, 0, 0}, {.input = 13, .output = 52}, 1, 0},
    {"openai_error", AP_FMT_OPENAI, {NULL, 0, 0}, {0}, 0, 1},
    /* An OpenAI-compatible server: `reasoning`, whole tool calls without index, "stop" after them. */
    {"openai_compat_tools", AP_FMT_OPENAI, {NULL, 0, 0}, {.input = 120, .output = 30}, 1, 0},
};

enum { TEXT_A, TOOLS_A, ERROR_A, TEXT_O, TOOLS_O, REASONING_O, ERROR_O, COMPAT_O };

struct bytes {
    char *p;
    size_t len;
};

static struct bytes slurp(const char *name, const char *ext)
{
    const char *root = getenv("AP_FIXTURES");
    char path[1024];
    struct bytes b = {0};

    snprintf(path, sizeof(path), "%s/streams/%s%s", root && *root ? root : "tests/fixtures", name, ext);
    if (root && *root && access(path, R_OK) != 0)
        snprintf(path, sizeof(path), "%s/%s%s", root, name, ext);
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        fail_msg("cannot open %s: run from the repository root or set AP_FIXTURES", path);
    fseek(f, 0, SEEK_END);
    b.len = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    b.p = malloc(b.len + 1);
    assert_int_equal(fread(b.p, 1, b.len, f), b.len);
    b.p[b.len] = '\0';
    fclose(f);
    return b;
}

static struct ap_conv_stream *stream_new(const struct stream_case *c)
{
    enum ap_fmt to = c->from == AP_FMT_ANTHROPIC ? AP_FMT_OPENAI : AP_FMT_ANTHROPIC;
    struct ap_conv_stream *s = ap_conv_stream_new(c->from, to, &c->opts);
    assert_non_null(s);
    return s;
}

static struct bytes drain(struct evbuffer *out)
{
    struct bytes b;
    b.len = evbuffer_get_length(out);
    b.p = malloc(b.len + 1);
    evbuffer_remove(out, b.p, b.len);
    b.p[b.len] = '\0';
    return b;
}

/*
 * Feeds in[0..first) and then the rest in pieces of `piece` bytes, ends the
 * stream cleanly, and returns the client bytes. *keep gets the converter (else freed).
 */
static struct bytes convert(const struct stream_case *c, struct bytes in, size_t first, size_t piece,
                            struct ap_conv_stream **keep)
{
    struct ap_conv_stream *s = stream_new(c);
    struct evbuffer *out = evbuffer_new();

    assert_int_equal(ap_conv_stream_feed(s, in.p, first, out), 0);
    for (size_t i = first; i < in.len; i += piece) {
        size_t n = in.len - i < piece ? in.len - i : piece;
        assert_int_equal(ap_conv_stream_feed(s, in.p + i, n, out), 0);
    }
    assert_int_equal(ap_conv_stream_end(s, 1, out), 0);
    struct bytes b = drain(out);
    evbuffer_free(out);
    if (keep != NULL)
        *keep = s;
    else
        ap_conv_stream_free(s);
    return b;
}

static void assert_same(struct bytes got, struct bytes want, const char *how)
{
    size_t i = 0;
    while (i < got.len && i < want.len && got.p[i] == want.p[i])
        i++;
    if (i == got.len && i == want.len)
        return;
    size_t from = i > 80 ? i - 80 : 0;
    print_error("%s: output differs at byte %zu\n--- got (from %zu):\n%.*s\n--- want:\n%.*s\n", how, i,
                from, (int)(got.len - from > 200 ? 200 : got.len - from), got.p + from,
                (int)(want.len - from > 200 ? 200 : want.len - from), want.p + from);
    fail();
}

static void assert_usage(const struct ap_conv_stream *s, const struct ap_usage *want)
{
    struct ap_usage u;
    ap_conv_stream_usage(s, &u);
    assert_int_equal(u.input, want->input);
    assert_int_equal(u.output, want->output);
    assert_int_equal(u.cache_creation, want->cache_creation);
    assert_int_equal(u.cache_read, want->cache_read);
}

static void test_whole(void **state)
{
    const struct stream_case *c = *state;
    struct bytes in = slurp(c->name, ".in.sse"), want = slurp(c->name, ".out.sse");
    struct ap_conv_stream *s;

    struct bytes got = convert(c, in, in.len, in.len, &s);
    assert_same(got, want, "whole");
    assert_usage(s, &c->usage);
    assert_int_equal(ap_conv_stream_done(s), c->done);
    assert_int_equal(ap_conv_stream_failed(s), c->failed);
    assert_int_equal(ap_conv_stream_content_started(s), 1);
    ap_conv_stream_free(s);
    free(got.p);
    free(in.p);
    free(want.p);
}

static void test_every_split(void **state)
{
    const struct stream_case *c = *state;
    struct bytes in = slurp(c->name, ".in.sse"), want = slurp(c->name, ".out.sse");
    char how[64];

    for (size_t k = 0; k <= in.len; k++) {
        struct bytes got = convert(c, in, k, in.len, NULL);
        snprintf(how, sizeof(how), "split at %zu", k);
        assert_same(got, want, how);
        free(got.p);
    }
    free(in.p);
    free(want.p);
}

static void test_byte_by_byte(void **state)
{
    const struct stream_case *c = *state;
    struct bytes in = slurp(c->name, ".in.sse"), want = slurp(c->name, ".out.sse");

    struct bytes got = convert(c, in, 0, 1, NULL);
    assert_same(got, want, "byte by byte");
    free(got.p);
    free(in.p);
    free(want.p);
}

/* Feeds fixture input up to (not including) the first occurrence of `stop_at`. */
static struct ap_conv_stream *feed_until(const struct stream_case *c, const char *stop_at,
                                         struct evbuffer *out)
{
    struct bytes in = slurp(c->name, ".in.sse");
    const char *cut = strstr(in.p, stop_at);
    assert_non_null(cut);
    struct ap_conv_stream *s = stream_new(c);
    assert_int_equal(ap_conv_stream_feed(s, in.p, (size_t)(cut - in.p), out), 0);
    free(in.p);
    return s;
}

static int ends_with(struct bytes b, const char *tail)
{
    size_t n = strlen(tail);
    return b.len >= n && memcmp(b.p + b.len - n, tail, n) == 0;
}

static void test_truncated_anthropic(void **state)
{
    (void)state;
    struct evbuffer *out = evbuffer_new();
    struct ap_conv_stream *s = feed_until(&cases[TEXT_A], "event: message_delta", out);

    assert_int_equal(ap_conv_stream_end(s, 0, out), 0);
    assert_int_equal(ap_conv_stream_end(s, 0, out), 0); /* idempotent */
    assert_int_equal(ap_conv_stream_feed(s, "event: message_stop\ndata: {}\n\n", 31, out), 0);
    struct bytes got = drain(out);
    assert_true(ends_with(got, " or \\\"non\\\".\"},\"logprobs\":null,\"finish_reason\":null}]}\n\n"
                               "data: {\"error\":{\"message\":\"upstream connection lost mid-stream\","
                               "\"type\":\"api_error\",\"code\":null}}\n\ndata: [DONE]\n\n"));
    assert_null(strstr(got.p, "\"finish_reason\":\"stop\""));
    assert_int_equal(ap_conv_stream_done(s), 0);
    assert_int_equal(ap_conv_stream_failed(s), 0);
    assert_int_equal(ap_conv_stream_content_started(s), 1);
    ap_conv_stream_free(s);
    evbuffer_free(out);
    free(got.p);
}

static void test_truncated_openai(void **state)
{
    (void)state;
    struct evbuffer *out = evbuffer_new();
    struct ap_conv_stream *s = feed_until(&cases[TEXT_O], "data: {\"id\":\"chatcmpl-AYpHd8bGzLMBJ7QvKwP7kXk6mc2rN\","
                                                          "\"object\":\"chat.completion.chunk\",\"created\":1732871893,"
                                                          "\"model\":\"gpt-4o-mini-2024-07-18\",\"system_fingerprint\":"
                                                          "\"fp_0705bf87c0\",\"choices\":[{\"index\":0,\"delta\":{},",
                                          out);

    assert_int_equal(ap_conv_stream_end(s, 0, out), 0);
    struct bytes got = drain(out);
    assert_true(ends_with(got, "\"text\":\" 👋 How can I help?\"}}\n\n"
                               "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\","
                               "\"message\":\"upstream connection lost mid-stream\"}}\n\n"));
    assert_null(strstr(got.p, "message_stop"));
    assert_null(strstr(got.p, "message_delta"));
    assert_int_equal(ap_conv_stream_done(s), 0);
    ap_conv_stream_free(s);
    evbuffer_free(out);
    free(got.p);
}

/* A clean close is not a proper end either: the client must not take it for a finished answer. */
static void test_clean_close_without_end_anthropic(void **state)
{
    (void)state;
    struct evbuffer *out = evbuffer_new();
    struct ap_conv_stream *s = feed_until(&cases[TOOLS_A], "event: message_stop", out);

    assert_int_equal(ap_conv_stream_end(s, 1, out), 0);
    struct bytes got = drain(out);
    assert_true(ends_with(got, "\"finish_reason\":\"tool_calls\"}]}\n\n"
                               "data: {\"error\":{\"message\":\"upstream stream ended before message_stop\","
                               "\"type\":\"api_error\",\"code\":null}}\n\ndata: [DONE]\n\n"));
    assert_int_equal(ap_conv_stream_done(s), 0);
    ap_conv_stream_free(s);
    evbuffer_free(out);
    free(got.p);
}

/* The one lenient case: finish_reason (and usage) seen, then a clean close without [DONE]. */
static void test_clean_close_after_finish_openai(void **state)
{
    (void)state;
    struct evbuffer *out = evbuffer_new();
    struct ap_conv_stream *s = feed_until(&cases[TOOLS_O], "data: [DONE]", out);
    struct bytes want = slurp(cases[TOOLS_O].name, ".out.sse");

    assert_int_equal(ap_conv_stream_end(s, 1, out), 0);
    struct bytes got = drain(out);
    assert_same(got, want, "no [DONE]");
    assert_int_equal(ap_conv_stream_done(s), 1);
    ap_conv_stream_free(s);
    evbuffer_free(out);
    free(got.p);
    free(want.p);
}

/* ...but a broken connection is never taken as finished, even after finish_reason. */
static void test_lost_after_finish_openai(void **state)
{
    (void)state;
    struct evbuffer *out = evbuffer_new();
    struct ap_conv_stream *s = feed_until(&cases[TOOLS_O], "data: [DONE]", out);

    assert_int_equal(ap_conv_stream_end(s, 0, out), 0);
    struct bytes got = drain(out);
    assert_true(ends_with(got, "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":1}\n\n"
                               "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\","
                               "\"message\":\"upstream connection lost mid-stream\"}}\n\n"));
    assert_int_equal(ap_conv_stream_done(s), 0);
    ap_conv_stream_free(s);
    evbuffer_free(out);
    free(got.p);
}

static void test_clean_close_before_finish_openai(void **state)
{
    (void)state;
    struct evbuffer *out = evbuffer_new();
    struct ap_conv_stream *s = feed_until(&cases[REASONING_O], "data: {\"id\":\"0b2a5ea4-7d1c-4ac5-9f5e-6c1d3f0e8a2b\","
                                                               "\"object\":\"chat.completion.chunk\",\"created\":1738150000,"
                                                               "\"model\":\"deepseek-reasoner\",\"system_fingerprint\":"
                                                               "\"fp_7e73fd9a08\",\"choices\":[{\"index\":0,\"delta\":"
                                                               "{\"content\":\"\"",
                                          out);

    assert_int_equal(ap_conv_stream_end(s, 1, out), 0);
    struct bytes got = drain(out);
    assert_true(ends_with(got, "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\","
                               "\"message\":\"upstream stream ended before [DONE]\"}}\n\n"));
    assert_int_equal(ap_conv_stream_done(s), 0);
    ap_conv_stream_free(s);
    evbuffer_free(out);
    free(got.p);
}

static void test_invalid_event(void **state)
{
    (void)state;
    static const char bad[] = "data: {\"id\":\"chatcmpl-1\",\"choices\":[\n\n";
    const struct stream_case c = {"", AP_FMT_OPENAI, {NULL, 0, 0}, {0}, 0, 0};
    struct evbuffer *out = evbuffer_new();
    struct ap_conv_stream *s = stream_new(&c);

    assert_int_equal(ap_conv_stream_feed(s, bad, sizeof(bad) - 1, out), -1);
    assert_int_equal(ap_conv_stream_feed(s, "data: [DONE]\n\n", 14, out), -1);
    assert_int_equal(ap_conv_stream_end(s, 1, out), 0);
    struct bytes got = drain(out);
    assert_string_equal(got.p, "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\","
                               "\"message\":\"upstream sent an invalid event stream\"}}\n\n");
    ap_conv_stream_free(s);
    evbuffer_free(out);
    free(got.p);
}

/*
 * Item 14: \u0000 in a delta was cut there (cJSON strings end at NUL): "a\u0000b"
 * reached the client as "a". Kept both ways, also inside tool arguments.
 */
static void test_nul_kept(void **state)
{
    (void)state;
    static const char a_in[] =
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"model\":\"m\","
        "\"usage\":{\"input_tokens\":1}}}\n\n"
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,"
        "\"delta\":{\"type\":\"text_delta\",\"text\":\"a\\u0000b \\\\u0000 c\"}}\n\n"
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":"
        "{\"type\":\"tool_use\",\"id\":\"t1\",\"name\":\"f\",\"input\":{\"k\":\"x\\u0000y\"}}}\n\n";
    static const char o_in[] =
        "data: {\"id\":\"c1\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\\u0000b\"}}]}\n\n";
    const struct stream_case ca = {"", AP_FMT_ANTHROPIC, {NULL, 0, CREATED}, {0}, 0, 0};
    const struct stream_case co = {"", AP_FMT_OPENAI, {NULL, 0, 0}, {0}, 0, 0};
    struct evbuffer *out = evbuffer_new();

    struct ap_conv_stream *s = stream_new(&ca);
    assert_int_equal(ap_conv_stream_feed(s, a_in, sizeof(a_in) - 1, out), 0);
    struct bytes got = drain(out);
    assert_non_null(strstr(got.p, "\"delta\":{\"content\":\"a\\u0000b \\\\u0000 c\"}"));
    /* the arguments are JSON text inside a string: its escape is escaped once more */
    assert_non_null(strstr(got.p, "\"arguments\":\"{\\\"k\\\":\\\"x\\\\u0000y\\\"}\""));
    ap_conv_stream_free(s);
    free(got.p);

    s = stream_new(&co);
    assert_int_equal(ap_conv_stream_feed(s, o_in, sizeof(o_in) - 1, out), 0);
    got = drain(out);
    assert_non_null(strstr(got.p, "\"delta\":{\"type\":\"text_delta\",\"text\":\"a\\u0000b\"}"));
    ap_conv_stream_free(s);
    free(got.p);

    /* A raw 0xFF byte is no UTF-8: refused (the stream ends in an error), never altered. */
    static const char bad[] = "data: {\"id\":\"c1\",\"choices\":[{\"delta\":{\"content\":\"\xff\"}}]}\n\n";
    s = stream_new(&co);
    assert_int_equal(ap_conv_stream_feed(s, bad, sizeof(bad) - 1, out), -1);
    ap_conv_stream_free(s);
    evbuffer_free(out);
}

/* Out-of-range numbers from an upstream are not cast (UBSan aborted on these). */
static void test_out_of_range_numbers(void **state)
{
    (void)state;
    static const char o_in[] =
        "data: {\"id\":\"c1\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":1e300,"
        "\"id\":\"t\",\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]}}]}\n\n"
        "data: {\"error\":{\"message\":\"x\",\"code\":1e300}}\n\n";
    const struct stream_case co = {"", AP_FMT_OPENAI, {NULL, 0, 0}, {0}, 0, 0};
    struct evbuffer *out = evbuffer_new();
    struct ap_conv_stream *s = stream_new(&co);
    assert_int_equal(ap_conv_stream_feed(s, o_in, sizeof(o_in) - 1, out), 0);
    struct bytes got = drain(out);
    assert_non_null(strstr(got.p, "\"type\":\"tool_use\""));
    assert_non_null(strstr(got.p, "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\""));
    ap_conv_stream_free(s);
    evbuffer_free(out);
    free(got.p);
}

/* The error fixtures end the client stream at the error: later input and the end add nothing. */
static void test_nothing_after_error(void **state)
{
    const struct stream_case *c = *state;
    struct bytes in = slurp(c->name, ".in.sse"), want = slurp(c->name, ".out.sse");
    static const char more[] = "data: {\"type\":\"message_stop\"}\n\ndata: [DONE]\n\n";
    struct ap_conv_stream *s = stream_new(c);
    struct evbuffer *out = evbuffer_new();

    assert_int_equal(ap_conv_stream_feed(s, in.p, in.len, out), 0);
    assert_int_equal(ap_conv_stream_feed(s, more, sizeof(more) - 1, out), 0);
    assert_int_equal(ap_conv_stream_end(s, 0, out), 0);
    struct bytes got = drain(out);
    assert_same(got, want, "after error");
    assert_int_equal(ap_conv_stream_failed(s), 1);
    assert_int_equal(ap_conv_stream_done(s), 0);
    ap_conv_stream_free(s);
    evbuffer_free(out);
    free(got.p);
    free(in.p);
    free(want.p);
}

/*
 * content_started stays 0 through the envelope (message_start, ping, the role
 * chunk, an empty text block start) and turns 1 with the first content.
 */
static void test_content_started(void **state)
{
    (void)state;
    static const char thinking[] = "event: content_block_delta\ndata: {\"type\":\"content_block_delta\","
                                   "\"index\":0,\"delta\":{\"type\":\"thinking_delta\",\"thinking\":\"Hm\"}}\n\n";
    static const char tool_start[] = "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,"
                                     "\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"f\","
                                     "\"input\":{}}}\n\n";
    struct evbuffer *out = evbuffer_new();
    struct ap_conv_stream *s = feed_until(&cases[TEXT_A], "event: content_block_delta", out);

    assert_true(evbuffer_get_length(out) > 0);
    assert_int_equal(ap_conv_stream_content_started(s), 0);
    ap_conv_stream_free(s);

    s = feed_until(&cases[TEXT_O], "data: {\"id\":\"chatcmpl-AYpHd8bGzLMBJ7QvKwP7kXk6mc2rN\",\"object\":"
                                   "\"chat.completion.chunk\",\"created\":1732871893,\"model\":\"gpt-4o-mini-2024-07-18\","
                                   "\"system_fingerprint\":\"fp_0705bf87c0\",\"choices\":[{\"index\":0,\"delta\":"
                                   "{\"content\":\"Hello\"}",
                   out);
    assert_int_equal(ap_conv_stream_content_started(s), 0);
    ap_conv_stream_free(s);

    /* A tool call is content: the first OpenAI chunk here opens one. */
    s = feed_until(&cases[TOOLS_O], "data: {\"id\":\"chatcmpl-AbCpT3lM8HqK1nZ0rXyW2vU9sT4e\",\"object\":"
                                    "\"chat.completion.chunk\",\"created\":1732871900,\"model\":\"gpt-4o-2024-08-06\","
                                    "\"system_fingerprint\":\"fp_7f6be3efb0\",\"choices\":[{\"index\":0,\"delta\":"
                                    "{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"lo\"}",
                    out);
    assert_int_equal(ap_conv_stream_content_started(s), 1);
    ap_conv_stream_free(s);

    /* So is an Anthropic tool_use block, even before its input arrives. */
    s = feed_until(&cases[TOOLS_A], "event: content_block_start", out);
    assert_int_equal(ap_conv_stream_feed(s, tool_start, sizeof(tool_start) - 1, out), 0);
    assert_int_equal(ap_conv_stream_content_started(s), 1);
    ap_conv_stream_free(s);

    /* Thinking is content too. */
    s = feed_until(&cases[TOOLS_A], "event: content_block_delta", out);
    assert_int_equal(ap_conv_stream_content_started(s), 0);
    assert_int_equal(ap_conv_stream_feed(s, thinking, sizeof(thinking) - 1, out), 0);
    assert_int_equal(ap_conv_stream_content_started(s), 1);
    ap_conv_stream_free(s);
    evbuffer_free(out);
}

/* Usage is available mid-stream, as soon as the upstream reported it. */
static void test_usage_so_far(void **state)
{
    (void)state;
    struct evbuffer *out = evbuffer_new();
    struct ap_conv_stream *s = feed_until(&cases[TEXT_A], "event: content_block_start", out);
    struct ap_usage u;

    ap_conv_stream_usage(s, &u);
    assert_true(u.seen);
    assert_int_equal(u.input, 21);
    assert_int_equal(u.cache_read, 3072);
    assert_int_equal(u.output, 1);
    ap_conv_stream_free(s);

    s = feed_until(&cases[TEXT_O], "data: [DONE]", out);
    ap_conv_stream_usage(s, &u);
    assert_true(u.seen);
    assert_int_equal(u.input, 86);
    assert_int_equal(u.cache_read, 1920);
    assert_int_equal(u.output, 11);
    ap_conv_stream_free(s);
    evbuffer_free(out);
}

static void test_new_and_free(void **state)
{
    (void)state;
    assert_null(ap_conv_stream_new(AP_FMT_OPENAI, AP_FMT_OPENAI, NULL));
    assert_null(ap_conv_stream_new(AP_FMT_ANTHROPIC, AP_FMT_ANTHROPIC, NULL));
    ap_conv_stream_free(NULL);
    struct ap_conv_stream *s = ap_conv_stream_new(AP_FMT_ANTHROPIC, AP_FMT_OPENAI, NULL);
    struct ap_usage u;
    assert_non_null(s);
    ap_conv_stream_usage(s, &u);
    assert_false(u.seen);
    assert_int_equal(ap_conv_stream_content_started(s) | ap_conv_stream_done(s) | ap_conv_stream_failed(s), 0);
    ap_conv_stream_free(s);
}

#define FIXTURE(i, what)                                                                  \
    {"whole " what, test_whole, NULL, NULL, (void *)&cases[i]},                          \
    {"every split " what, test_every_split, NULL, NULL, (void *)&cases[i]},              \
    {"byte by byte " what, test_byte_by_byte, NULL, NULL, (void *)&cases[i]}

static const struct CMUnitTest tests[] = {
    FIXTURE(TEXT_A, "anthropic_text"),
    FIXTURE(TOOLS_A, "anthropic_tool_thinking"),
    FIXTURE(ERROR_A, "anthropic_error"),
    FIXTURE(TEXT_O, "openai_text_usage"),
    FIXTURE(TOOLS_O, "openai_parallel_tools"),
    FIXTURE(REASONING_O, "openai_reasoning"),
    FIXTURE(ERROR_O, "openai_error"),
    FIXTURE(COMPAT_O, "openai_compat_tools"),
    {"nothing after an anthropic error", test_nothing_after_error, NULL, NULL, (void *)&cases[ERROR_A]},
    {"nothing after an openai error chunk", test_nothing_after_error, NULL, NULL, (void *)&cases[ERROR_O]},
    cmocka_unit_test(test_truncated_anthropic),
    cmocka_unit_test(test_truncated_openai),
    cmocka_unit_test(test_clean_close_without_end_anthropic),
    cmocka_unit_test(test_clean_close_after_finish_openai),
    cmocka_unit_test(test_lost_after_finish_openai),
    cmocka_unit_test(test_clean_close_before_finish_openai),
    cmocka_unit_test(test_invalid_event),
    cmocka_unit_test(test_nul_kept),
    cmocka_unit_test(test_out_of_range_numbers),
    cmocka_unit_test(test_content_started),
    cmocka_unit_test(test_usage_so_far),
    cmocka_unit_test(test_new_and_free),
};

int main(void)
{
    return cmocka_run_group_tests_name("conv_stream", tests, NULL, NULL);
}
