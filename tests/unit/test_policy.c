/*
 * ap_policy: validation with clear errors, canonical JSON, the allow-list,
 * expiry, the reservation estimate, refusals per endpoint format, retry-after,
 * messages, x-ratelimit-* headers, the admission reply; and the admission
 * command's arguments (ap_policy_redis).
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

#include "ap_policy.h"
#include "ap_policy_redis.h"
#include "ap_store.h"
#include "ap_time.h"

static struct ap_policy *parse_ok(const char *json)
{
    char err[256] = "";
    struct ap_policy *p = ap_policy_parse_text(json, strlen(json), err, sizeof(err));
    if (p == NULL)
        fail_msg("parse failed: %s\n  input: %s", err, json);
    return p;
}

/* ---- valid policies print canonically ---- */

struct canon_case {
    const char *in;
    const char *want;
};

static void run_canon(void **state)
{
    const struct canon_case *c = *state;
    struct ap_policy *p = parse_ok(c->in);
    char *s = ap_policy_print(p);
    assert_string_equal(s, c->want);
    /* the canonical text reads back to itself */
    struct ap_policy *q = parse_ok(s);
    char *s2 = ap_policy_print(q);
    assert_string_equal(s2, s);
    free(s);
    free(s2);
    ap_policy_free(p);
    ap_policy_free(q);
}

#define CANON(name, in, want) {"canonical: " name, run_canon, NULL, NULL, &(struct canon_case){in, want}}

/* ---- rejected policies: a 400 that names the field ---- */

static void run_bad(void **state)
{
    const struct canon_case *c = *state;
    char err[256] = "";
    struct ap_policy *p = ap_policy_parse_text(c->in, strlen(c->in), err, sizeof(err));
    if (p != NULL) {
        ap_policy_free(p);
        fail_msg("accepted: %s", c->in);
    }
    if (strstr(err, c->want) == NULL)
        fail_msg("error \"%s\" does not mention \"%s\"", err, c->want);
}

#define BAD(name, in, want) {"rejected: " name, run_bad, NULL, NULL, &(struct canon_case){in, want}}

static void test_empty(void **state)
{
    (void)state;
    struct ap_policy *p = parse_ok("{}");
    assert_true(ap_policy_empty(p));
    assert_false(ap_policy_counted(p));
    ap_policy_free(p);
    p = parse_ok("{\"rpm\": null, \"models\": null}");
    assert_true(ap_policy_empty(p));
    ap_policy_free(p);
    assert_true(ap_policy_empty(NULL));
    char err[64];
    p = ap_policy_parse(NULL, err, sizeof(err));
    assert_true(ap_policy_empty(p));
    char *s = ap_policy_print(p);
    assert_string_equal(s, "{}");
    free(s);
    ap_policy_free(p);
}

static void test_kinds(void **state)
{
    (void)state;
    struct ap_policy *p = parse_ok("{\"models\": [\"a\"], \"expires_at\": \"2030-01-01T00:00:00Z\"}");
    assert_false(ap_policy_counted(p)); /* decided from memory: no Redis */
    assert_false(ap_policy_leased(p));
    ap_policy_free(p);
    p = parse_ok("{\"rpm\": 10}");
    assert_true(ap_policy_counted(p));
    assert_false(ap_policy_leased(p)); /* a window entry, no lease */
    ap_policy_free(p);
    p = parse_ok("{\"max_concurrent\": 0}");
    assert_true(ap_policy_leased(p));
    ap_policy_free(p);
    p = parse_ok("{\"monthly_usd\": 1}");
    assert_true(ap_policy_leased(p));
    assert_true(ap_policy_usd_budget(p));
    assert_false(ap_policy_token_budget(p));
    ap_policy_free(p);
    p = parse_ok("{\"daily_tokens\": 1}");
    assert_true(ap_policy_token_budget(p));
    assert_false(ap_policy_usd_budget(p));
    /* references */
    assert_ptr_equal(ap_policy_ref(p), p);
    ap_policy_free(p);
    ap_policy_free(p);
    assert_null(ap_policy_ref(NULL));
}

/* ---- allow-list ---- */

struct model_case {
    const char *model;
    int allowed;
};

static void run_model(void **state)
{
    const struct model_case *c = *state;
    struct ap_policy *p = parse_ok("{\"models\": [\"claude-sonnet-4-5\", \"gemini-*\", \"gpt-4o\"]}");
    assert_int_equal(ap_policy_model_allowed(p, c->model), c->allowed);
    ap_policy_free(p);
    assert_true(ap_policy_model_allowed(NULL, c->model)); /* no policy: anything */
}

#define MODEL(m, ok) {"allow-list: " m, run_model, NULL, NULL, &(struct model_case){m, ok}}

static void test_expiry(void **state)
{
    (void)state;
    struct ap_policy *p = parse_ok("{\"expires_at\": \"2026-07-01T08:00:00.250+08:00\"}");
    int64_t at = p->expires_at_ms;
    assert_int_equal(at, 1782864000250LL);
    assert_false(ap_policy_expired(p, at - 1));
    assert_true(ap_policy_expired(p, at));
    assert_true(ap_policy_expired(p, at + 1));
    assert_false(ap_policy_expired(NULL, at));
    ap_policy_free(p);
}

static void test_estimate(void **state)
{
    (void)state;
    assert_int_equal(ap_policy_estimate(0, 100, 4096), 100);
    assert_int_equal(ap_policy_estimate(1, 100, 4096), 101);  /* a partial token counts */
    assert_int_equal(ap_policy_estimate(400, 100, 4096), 200);
    assert_int_equal(ap_policy_estimate(401, 0, 4096), 101);
    assert_int_equal(ap_policy_estimate(400, -1, 4096), 4196); /* no max_tokens: the default */
}

/* ---- refusals in each format ---- */

struct refusal_case {
    enum ap_refusal r;
    int openai;
    int status;
    const char *type;
    const char *code;
    const char *reason;
};

static void run_refusal(void **state)
{
    const struct refusal_case *c = *state;
    struct ap_refusal_fmt f;
    ap_policy_refusal(c->r, c->openai, &f);
    assert_int_equal(f.status, c->status);
    assert_string_equal(f.type, c->type);
    if (c->code == NULL)
        assert_null(f.code);
    else
        assert_string_equal(f.code, c->code);
    assert_string_equal(f.reason, c->reason);
}

#define REFUSAL(name, r, oa, st, type, code, reason)                                                   \
    {"refusal: " name, run_refusal, NULL, NULL, &(struct refusal_case){r, oa, st, type, code, reason}}

/* ---- the admission reply and retry-after ---- */

static void test_admit_reply(void **state)
{
    (void)state;
    struct ap_admit_result r;
    long long ok[] = {0, 0, 7, 900, 0, 0};
    assert_int_equal(ap_policy_admit_reply(ok, 6, &r), 0);
    assert_int_equal(r.refusal, AP_REFUSE_NONE);
    assert_int_equal(r.rpm_remaining, 7);
    assert_int_equal(r.tpm_remaining, 900);
    long long rpm[] = {1, 12345, 0, -1, 100, 0};
    assert_int_equal(ap_policy_admit_reply(rpm, 6, &r), 0);
    assert_int_equal(r.refusal, AP_REFUSE_RPM);
    assert_int_equal(r.retry_ms, 12345);
    long long codes[][6] = {{2}, {3}, {4}, {5}, {6}, {7}};
    enum ap_refusal want[] = {AP_REFUSE_TPM, AP_REFUSE_CONCURRENCY, AP_REFUSE_DAILY_TOKENS,
                              AP_REFUSE_MONTHLY_TOKENS, AP_REFUSE_DAILY_USD, AP_REFUSE_MONTHLY_USD};
    for (int i = 0; i < 6; i++) {
        assert_int_equal(ap_policy_admit_reply(codes[i], 6, &r), 0);
        assert_int_equal(r.refusal, want[i]);
    }
    long long bad[] = {8, 0, 0, 0, 0, 0};
    assert_int_equal(ap_policy_admit_reply(bad, 6, &r), -1);
    bad[0] = -1;
    assert_int_equal(ap_policy_admit_reply(bad, 6, &r), -1);
    assert_int_equal(ap_policy_admit_reply(ok, 5, &r), -1);
}

static void test_retry_after(void **state)
{
    (void)state;
    struct ap_policy *p = parse_ok("{\"rpm\": 10, \"daily_tokens\": 1000, \"monthly_usd\": 1}");
    int64_t now = 1709211599000LL; /* 2024-02-29T12:59:59Z */
    struct ap_admit_result r = {.refusal = AP_REFUSE_RPM, .retry_ms = 1500};
    assert_int_equal(ap_policy_retry_after(p, &r, 0, now, 0), 2); /* rounded up */
    r.retry_ms = 0;
    assert_int_equal(ap_policy_retry_after(p, &r, 0, now, 0), 1);
    r = (struct ap_admit_result){.refusal = AP_REFUSE_CONCURRENCY};
    assert_int_equal(ap_policy_retry_after(p, &r, 0, now, 0), 1);
    /* spent for the day: until midnight (UTC: 11 h 1 s; +08:00: 3 h 1 s) */
    r = (struct ap_admit_result){.refusal = AP_REFUSE_DAILY_TOKENS, .used = 950};
    assert_int_equal(ap_policy_retry_after(p, &r, 100, now, 0), 11 * 3600 + 1);
    assert_int_equal(ap_policy_retry_after(p, &r, 100, now, 8 * 3600), 3 * 3600 + 1);
    /* only held by requests in flight: soon */
    r = (struct ap_admit_result){.refusal = AP_REFUSE_DAILY_TOKENS, .used = 800, .reserved = 150};
    assert_int_equal(ap_policy_retry_after(p, &r, 100, now, 0), 1);
    /* the month: until March 1st */
    r = (struct ap_admit_result){.refusal = AP_REFUSE_MONTHLY_USD, .used = 999999999};
    assert_int_equal(ap_policy_retry_after(p, &r, 2, now, 0), 11 * 3600 + 1);
    ap_policy_free(p);
}

static void test_messages(void **state)
{
    (void)state;
    struct ap_policy *p = parse_ok("{\"rpm\": 10, \"tpm\": 500, \"max_concurrent\": 3, \"daily_tokens\": 1000, "
                                   "\"monthly_usd\": 2.5, \"expires_at\": \"2026-01-01T00:00:00Z\"}");
    char m[400];
    struct ap_admit_result r = {.refusal = AP_REFUSE_MODEL};
    ap_policy_message(p, &r, "gpt-4o", 0, m, sizeof(m));
    assert_string_equal(m, "model gpt-4o is not allowed for this API key");
    r.refusal = AP_REFUSE_EXPIRED;
    ap_policy_message(p, &r, "x", 0, m, sizeof(m));
    assert_string_equal(m, "API key expired at 2026-01-01T00:00:00Z");
    r.refusal = AP_REFUSE_RPM;
    ap_policy_message(p, &r, "x", 0, m, sizeof(m));
    assert_string_equal(m, "rate limit reached: 10 requests per minute for this API key");
    r = (struct ap_admit_result){.refusal = AP_REFUSE_TPM, .used = 512};
    ap_policy_message(p, &r, "x", 0, m, sizeof(m));
    assert_non_null(strstr(m, "500 tokens per minute"));
    r.refusal = AP_REFUSE_CONCURRENCY;
    ap_policy_message(p, &r, "x", 0, m, sizeof(m));
    assert_non_null(strstr(m, "3 requests in flight"));
    r = (struct ap_admit_result){.refusal = AP_REFUSE_DAILY_TOKENS, .used = 900, .reserved = 50};
    ap_policy_message(p, &r, "x", 100, m, sizeof(m));
    assert_string_equal(m, "daily token budget of this API key exhausted: 900 tokens used of 1000, this request "
                           "may use up to 100 (50 tokens held by requests in flight)");
    r = (struct ap_admit_result){.refusal = AP_REFUSE_MONTHLY_USD, .used = 2400000000LL, .reserved = 0};
    ap_policy_message(p, &r, "x", 150000000, m, sizeof(m));
    assert_string_equal(m, "monthly spend budget of this API key exhausted: USD 2.4 used of 2.5, this request may "
                           "cost up to 0.15");
    ap_policy_free(p);
}

static void test_headers(void **state)
{
    (void)state;
    struct ap_header h[4];
    struct ap_policy *p = parse_ok("{\"rpm\": 100, \"tpm\": 5000}");
    assert_int_equal(ap_policy_headers(p, 99, 4800, h), 4);
    assert_string_equal(h[0].name, "x-ratelimit-limit-requests");
    assert_string_equal(h[0].value, "100");
    assert_string_equal(h[1].name, "x-ratelimit-remaining-requests");
    assert_string_equal(h[1].value, "99");
    assert_string_equal(h[2].name, "x-ratelimit-limit-tokens");
    assert_string_equal(h[2].value, "5000");
    assert_string_equal(h[3].name, "x-ratelimit-remaining-tokens");
    assert_string_equal(h[3].value, "4800");
    /* unknown remaining (served while Redis was unreachable): the limits only */
    assert_int_equal(ap_policy_headers(p, -1, -1, h), 2);
    assert_string_equal(h[1].name, "x-ratelimit-limit-tokens");
    ap_policy_free(p);
    p = parse_ok("{\"daily_tokens\": 5}");
    assert_int_equal(ap_policy_headers(p, 1, 1, h), 0);
    ap_policy_free(p);
    assert_int_equal(ap_policy_headers(NULL, 1, 1, h), 0);
}

/* ---- the admission command ---- */

static void test_admit_args(void **state)
{
    (void)state;
    struct ap_policy *p = parse_ok("{\"rpm\": 100, \"max_concurrent\": 5, \"monthly_usd\": 1.5}");
    struct ap_admit_req q = {"0123456789abcdef", "boot.1f", 20000, "2026-03-01", 0, 0, 7500};
    struct ap_admit_args a;
    ap_store_set_prefix("t:");
    ap_policy_admit_args(p, &q, "SHA", 1, &a);
    const char *want[AP_ADMIT_ARGC] = {"EVALSHA", "SHA", "0", "t:", "0123456789abcdef", "boot.1f", "20000", "100",
                                       "-1", "5", "2026-03-01", "-1", "-1", "-1", "1500000000", "0", "0", "7500"};
    for (int i = 0; i < AP_ADMIT_ARGC; i++)
        assert_string_equal(a.argv[i], want[i]);
    ap_policy_admit_args(p, &q, ap_script_policy_admit, 0, &a);
    assert_string_equal(a.argv[0], "EVAL");
    assert_ptr_equal(a.argv[1], ap_script_policy_admit);
    char base[AP_POLICY_BASE_MAX];
    ap_policy_base("0123456789abcdef", base, sizeof(base));
    assert_string_equal(base, "t:pl:0123456789abcdef:");
    ap_store_set_prefix("ap:");
    ap_policy_free(p);
}

static const struct CMUnitTest tests[] = {
    CANON("every field", "{\"monthly_usd\": 100, \"daily_usd\": 5.25, \"monthly_tokens\": 2e7, \"daily_tokens\": 1000000,"
          " \"max_concurrent\": 5, \"tpm\": 200000, \"rpm\": 100, \"expires_at\": \"2026-07-01T08:00:00+08:00\","
          " \"models\": [\"claude-sonnet-4-5\", \"gemini-*\"]}",
          "{\"models\":[\"claude-sonnet-4-5\",\"gemini-*\"],\"expires_at\":\"2026-07-01T00:00:00Z\",\"rpm\":100,"
          "\"tpm\":200000,\"max_concurrent\":5,\"daily_tokens\":1000000,\"monthly_tokens\":20000000,"
          "\"daily_usd\":5.25,\"monthly_usd\":100}"),
    CANON("nulls dropped", "{\"rpm\": null, \"tpm\": 10}", "{\"tpm\":10}"),
    CANON("zero is a limit", "{\"rpm\": 0, \"daily_usd\": 0}", "{\"rpm\":0,\"daily_usd\":0}"),
    CANON("usd to the nano-dollar", "{\"daily_usd\": 0.000000001}", "{\"daily_usd\":0.000000001}"),
    CANON("milliseconds kept", "{\"expires_at\": \"2026-01-01T00:00:00.5Z\"}",
          "{\"expires_at\":\"2026-01-01T00:00:00.500Z\"}"),
    BAD("not an object", "[1]", "policy: must be a JSON object"),
    BAD("not JSON", "{", "not valid JSON"),
    BAD("unknown field", "{\"rmp\": 1}", "unknown policy field \"rmp\""),
    BAD("rpm negative", "{\"rpm\": -1}", "rpm: must be an integer"),
    BAD("rpm fraction", "{\"rpm\": 1.5}", "rpm: must be an integer"),
    BAD("rpm string", "{\"rpm\": \"10\"}", "rpm: must be an integer"),
    BAD("rpm too large", "{\"rpm\": 1e10}", "rpm: must be an integer from 0 to 1000000000"),
    BAD("tpm bool", "{\"tpm\": true}", "tpm:"),
    BAD("max_concurrent", "{\"max_concurrent\": -2}", "max_concurrent:"),
    BAD("daily_tokens", "{\"daily_tokens\": 1e16}", "daily_tokens:"),
    BAD("monthly_tokens", "{\"monthly_tokens\": []}", "monthly_tokens:"),
    BAD("daily_usd negative", "{\"daily_usd\": -5}", "daily_usd: must be a number of USD"),
    BAD("monthly_usd string", "{\"monthly_usd\": \"5\"}", "monthly_usd:"),
    BAD("models not a list", "{\"models\": \"gpt-4o\"}", "models: must be a list"),
    BAD("models empty", "{\"models\": []}", "leave it out to allow every model"),
    BAD("models number", "{\"models\": [\"a\", 3]}", "models[1]:"),
    BAD("models empty name", "{\"models\": [\"\"]}", "models[0]:"),
    BAD("models star inside", "{\"models\": [\"gpt-*-mini\"]}", "models[0]: must be a model name"),
    BAD("models star alone", "{\"models\": [\"*\"]}", "models[0]:"),
    BAD("expires_at no offset", "{\"expires_at\": \"2026-01-01T00:00:00\"}", "expires_at: must be an ISO 8601 instant"),
    BAD("expires_at date only", "{\"expires_at\": \"2026-01-01\"}", "expires_at:"),
    BAD("expires_at number", "{\"expires_at\": 1767225600}", "expires_at:"),
    BAD("expires_at bad month", "{\"expires_at\": \"2026-13-01T00:00:00Z\"}", "expires_at:"),
    {"empty policies", test_empty, NULL, NULL, NULL},
    {"kinds: counted, leased, budgets", test_kinds, NULL, NULL, NULL},
    MODEL("claude-sonnet-4-5", 1),
    MODEL("claude-sonnet-4-5-20250929", 0),
    MODEL("gemini-3-pro-high", 1),
    MODEL("gemini-", 1),
    MODEL("gemini", 0),
    MODEL("gpt-4o", 1),
    MODEL("gpt-4o-mini", 0),
    MODEL("", 0),
    {"expiry at the millisecond", test_expiry, NULL, NULL, NULL},
    {"reservation estimate", test_estimate, NULL, NULL, NULL},
    REFUSAL("model anthropic", AP_REFUSE_MODEL, 0, 403, "permission_error", NULL, "model"),
    REFUSAL("expired openai", AP_REFUSE_EXPIRED, 1, 403, "permission_error", NULL, "expired"),
    REFUSAL("unpriced", AP_REFUSE_UNPRICED, 0, 403, "permission_error", NULL, "unpriced"),
    REFUSAL("rpm anthropic", AP_REFUSE_RPM, 0, 429, "rate_limit_error", NULL, "rpm"),
    REFUSAL("rpm openai", AP_REFUSE_RPM, 1, 429, "rate_limit_error", "rate_limit_exceeded", "rpm"),
    REFUSAL("tpm openai", AP_REFUSE_TPM, 1, 429, "rate_limit_error", "rate_limit_exceeded", "tpm"),
    REFUSAL("concurrency", AP_REFUSE_CONCURRENCY, 0, 429, "rate_limit_error", NULL, "concurrency"),
    REFUSAL("budget anthropic", AP_REFUSE_DAILY_TOKENS, 0, 429, "rate_limit_error", NULL, "daily_tokens"),
    REFUSAL("budget openai", AP_REFUSE_MONTHLY_USD, 1, 429, "insufficient_quota", "insufficient_quota", "monthly_usd"),
    REFUSAL("unavailable anthropic", AP_REFUSE_UNAVAILABLE, 0, 503, "overloaded_error", NULL, "unavailable"),
    REFUSAL("unavailable openai", AP_REFUSE_UNAVAILABLE, 1, 503, "server_error", NULL, "unavailable"),
    {"admission reply decoding", test_admit_reply, NULL, NULL, NULL},
    {"retry-after per refusal", test_retry_after, NULL, NULL, NULL},
    {"refusal messages", test_messages, NULL, NULL, NULL},
    {"x-ratelimit headers", test_headers, NULL, NULL, NULL},
    {"admission command arguments", test_admit_args, NULL, NULL, NULL},
};

int main(void)
{
    return cmocka_run_group_tests_name("policy", tests, NULL, NULL);
}
