/* px_outbound: the target, the headers and the body one attempt sends. */
#include "px_outbound.h"

#include "ap_fallback.h"

#include <cJSON.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

static struct ap_tier tier_anthropic(void)
{
    struct ap_tier t;
    memset(&t, 0, sizeof(t));
    t.name = (char *)"Opus";
    t.model = (char *)"claude-opus-4-6-thinking";
    t.type = AP_TIER_ANTIGRAVITY;
    return t;
}

static struct ap_tier tier_external(long limit)
{
    struct ap_tier t;
    memset(&t, 0, sizeof(t));
    t.name = (char *)"Kimi";
    t.model = (char *)"kimi-k2.5";
    t.type = AP_TIER_EXTERNAL;
    t.base_url = (char *)"https://api.example.com/v1";
    t.api_key = (char *)"sk-ext";
    t.max_tokens_limit = limit;
    return t;
}

static void test_targets(void **state)
{
    (void)state;
    struct px_target t;
    struct px_target_in in = {"http://up:8080", 0, "sk-up", 1, AP_FMT_ANTHROPIC, "/v1/messages", "beta=true"};
    assert_int_equal(px_target_for(&in, NULL, &t), 0);
    assert_string_equal(t.url, "http://up:8080/v1/messages?beta=true");
    assert_int_equal(t.fmt, AP_FMT_ANTHROPIC);
    assert_string_equal(t.auth, "sk-up");
    assert_null(t.model);

    /* An OpenAI client to an Anthropic upstream: converted, to the Messages path. */
    struct px_target_in oin = {"http://up:8080", 0, NULL, 1, AP_FMT_OPENAI, "/v1/chat/completions", NULL};
    assert_int_equal(px_target_for(&oin, NULL, &t), 0);
    assert_string_equal(t.url, "http://up:8080/v1/messages");

    struct ap_tier ext = tier_external(8192);
    assert_int_equal(px_target_for(&in, &ext, &t), 0);
    assert_string_equal(t.url, "https://api.example.com/v1/chat/completions");
    assert_true(t.external);
    assert_int_equal(t.fmt, AP_FMT_OPENAI);
    assert_string_equal(t.auth, "sk-ext");
    assert_int_equal(t.max_tokens_limit, 8192);

    struct ap_tier ag = tier_anthropic();
    assert_int_equal(px_target_for(&oin, &ag, &t), 0);
    assert_string_equal(t.model, "claude-opus-4-6-thinking");
    assert_string_equal(t.url, "http://up:8080/v1/messages");

    /* Pass-through keeps the path and query as they are. */
    struct px_target_in pin = {"http://up:8080", 1, NULL, 0, AP_FMT_ANTHROPIC, "/v1/models/x", "a=1"};
    assert_int_equal(px_target_for(&pin, NULL, &t), 0);
    assert_string_equal(t.url, "http://up:8080/v1/models/x?a=1");

    char longpath[3000];
    memset(longpath, 'a', sizeof(longpath) - 1);
    longpath[0] = '/';
    longpath[sizeof(longpath) - 1] = '\0';
    pin.raw_path = longpath;
    assert_int_equal(px_target_for(&pin, NULL, &t), -1);
}

static void test_drop_header(void **state)
{
    (void)state;
    static const char *const dropped[] = {"Connection", "keep-alive", "TE", "Transfer-Encoding", "Host", "Expect",
                                          "Content-Length", "x-api-key", "Authorization", "Accept-Encoding",
                                          "X-Request-Id", "Content-Type", "Proxy-Authorization", "Cookie"};
    for (size_t i = 0; i < sizeof(dropped) / sizeof(dropped[0]); i++)
        if (!px_outbound_drop_header(dropped[i], NULL))
            fail_msg("kept %s", dropped[i]);
    assert_false(px_outbound_drop_header("anthropic-version", NULL));
    assert_false(px_outbound_drop_header("anthropic-beta", NULL));
    /* Named in Connection: hop-by-hop too, as a whole token only. */
    assert_true(px_outbound_drop_header("X-Secret", "keep-alive, x-secret"));
    assert_false(px_outbound_drop_header("X-Sec", "keep-alive, x-secret"));
    assert_false(px_outbound_drop_header("secret", "x-secret"));
}

struct lines {
    char buf[4096];
    size_t n;
};

static int collect(void *arg, const char *line)
{
    struct lines *l = arg;
    l->n += (size_t)snprintf(l->buf + l->n, sizeof(l->buf) - l->n, "%s\n", line);
    return 0;
}

static void test_headers(void **state)
{
    (void)state;
    const char *names[] = {"Host", "x-api-key", "anthropic-version", "Content-Type", "X-Custom", "Connection"};
    const char *values[] = {"proxy", "sk-client", "2023-06-01", "application/json; charset=utf-8", "1", "close"};
    struct px_header_in in = {names, values, 6, 0, 0, "rid123", AP_FMT_ANTHROPIC};
    struct px_target t;
    struct px_target_in tin = {"http://up", 0, "sk-up", 1, AP_FMT_ANTHROPIC, "/v1/messages", NULL};
    px_target_for(&tin, NULL, &t);
    struct lines l = {{0}, 0};
    assert_int_equal(px_outbound_headers(&in, &t, collect, &l), 0);
    assert_string_equal(l.buf, "anthropic-version: 2023-06-01\nX-Custom: 1\nx-api-key: sk-up\n"
                               "Authorization: Bearer sk-up\nExpect: \n"
                               "Content-Type: application/json; charset=utf-8\nx-request-id: rid123\n");
    /* An external tier gets a minimal set, never the client's headers. */
    struct ap_tier ext = tier_external(0);
    px_target_for(&tin, &ext, &t);
    in.stream = 1;
    in.body_rewritten = 1;
    l.n = 0;
    l.buf[0] = '\0';
    assert_int_equal(px_outbound_headers(&in, &t, collect, &l), 0);
    assert_string_equal(l.buf, "Accept: text/event-stream\nUser-Agent: api-proxy\nAuthorization: Bearer sk-ext\n"
                               "Expect: \nContent-Type: application/json\nx-request-id: rid123\n");
}

/* Runs px_outbound_body on `json` for target t; returns the body sent (NULL: the client's, as is). */
static char *body_for(const char *json, const struct px_body_facts *f, const struct px_target *t, int *rc)
{
    cJSON *c = cJSON_Parse(json);
    assert_non_null(c);
    char *out = NULL;
    size_t len = 0;
    const char *err = NULL;
    *rc = px_outbound_body(f, c, t, &out, &len, &err);
    cJSON_Delete(c);
    if (out != NULL)
        assert_int_equal(strlen(out), len);
    return out;
}

static void test_body_untouched(void **state)
{
    (void)state;
    struct px_target t;
    struct px_target_in tin = {"http://up", 0, NULL, 1, AP_FMT_ANTHROPIC, "/v1/messages", NULL};
    px_target_for(&tin, NULL, &t);
    struct px_body_facts f = {AP_FMT_ANTHROPIC, "claude-sonnet-4-5", 0, 0};
    assert_false(px_outbound_needs_tree(&f, &t));
    int rc;
    char *out = body_for("{\"model\":\"claude-sonnet-4-5\",\"max_tokens\":10,\"messages\":[]}", &f, &t, &rc);
    assert_int_equal(rc, 0);
    assert_null(out);
}

static void test_body_clamps_every_limit(void **state)
{
    (void)state;
    struct ap_tier ext = tier_external(100);
    ext.model = (char *)"gpt-4o";
    struct px_target t;
    struct px_target_in tin = {"http://up", 1, NULL, 1, AP_FMT_OPENAI, "/v1/chat/completions", NULL};
    px_target_for(&tin, &ext, &t);
    struct px_body_facts f = {AP_FMT_OPENAI, "gpt-4o", 0, 0};
    assert_true(px_outbound_needs_tree(&f, &t));
    int rc;
    char *out = body_for("{\"model\":\"gpt-4o\",\"max_tokens\":5000,\"max_completion_tokens\":9000,\"messages\":[]}",
                         &f, &t, &rc);
    assert_int_equal(rc, 0);
    assert_non_null(out);
    cJSON *j = cJSON_Parse(out);
    assert_int_equal(cJSON_GetObjectItem(j, "max_tokens")->valueint, 100);
    assert_int_equal(cJSON_GetObjectItem(j, "max_completion_tokens")->valueint, 100);
    cJSON_Delete(j);
    cJSON_free(out);
    /* Within the limit: nothing to change. */
    out = body_for("{\"model\":\"gpt-4o\",\"max_completion_tokens\":50,\"messages\":[]}", &f, &t, &rc);
    assert_null(out);
}

static void test_body_rename_usage_thinking(void **state)
{
    (void)state;
    struct ap_tier ag = tier_anthropic();
    struct px_target t;
    struct px_target_in tin = {"http://up", 0, NULL, 1, AP_FMT_ANTHROPIC, "/v1/messages", NULL};
    px_target_for(&tin, &ag, &t);
    /* Fallback from another family: renamed, and thinking signed by that family dropped. */
    struct px_body_facts f = {AP_FMT_ANTHROPIC, "gemini-3-pro-high", 0, 0};
    int rc;
    char *out = body_for("{\"model\":\"gemini-3-pro-high\",\"messages\":[{\"role\":\"assistant\",\"content\":["
                         "{\"type\":\"thinking\",\"thinking\":\"t\",\"signature\":\"s\"},{\"type\":\"text\",\"text\":\"a\"}]}]}",
                         &f, &t, &rc);
    assert_int_equal(rc, 0);
    assert_non_null(out);
    assert_non_null(strstr(out, "\"model\":\"claude-opus-4-6-thinking\""));
    assert_null(strstr(out, "\"type\":\"thinking\""));
    assert_non_null(strstr(out, "\"text\":\"a\""));
    cJSON_free(out);

    /* An OpenAI stream asked without usage: we ask for it (and take it out of the client's stream). */
    struct px_target ot;
    struct px_target_in oin = {"http://up", 1, NULL, 1, AP_FMT_OPENAI, "/v1/chat/completions", NULL};
    px_target_for(&oin, NULL, &ot);
    struct px_body_facts of = {AP_FMT_OPENAI, "gpt-4o", 1, 0};
    out = body_for("{\"model\":\"gpt-4o\",\"stream\":true,\"stream_options\":{\"include_usage\":false},\"messages\":[]}",
                   &of, &ot, &rc);
    assert_non_null(out);
    assert_non_null(strstr(out, "\"stream_options\":{\"include_usage\":true}"));
    cJSON_free(out);
}

static void test_body_conversion_error(void **state)
{
    (void)state;
    struct ap_tier ext = tier_external(0);
    struct px_target t;
    struct px_target_in tin = {"http://up", 0, NULL, 1, AP_FMT_ANTHROPIC, "/v1/messages", NULL};
    px_target_for(&tin, &ext, &t);
    struct px_body_facts f = {AP_FMT_ANTHROPIC, "kimi-k2.5", 0, 0};
    int rc;
    char *out = body_for("{\"model\":\"kimi-k2.5\",\"messages\":\"not a list\"}", &f, &t, &rc);
    assert_int_equal(rc, -1);
    assert_null(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_targets),
        cmocka_unit_test(test_drop_header),
        cmocka_unit_test(test_headers),
        cmocka_unit_test(test_body_untouched),
        cmocka_unit_test(test_body_clamps_every_limit),
        cmocka_unit_test(test_body_rename_usage_thinking),
        cmocka_unit_test(test_body_conversion_error),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
