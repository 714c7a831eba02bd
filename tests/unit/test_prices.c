/*
 * ap_prices: PRICES_CONFIG parsing and validation, model lookup (exact and
 * prefix*), exact costs in nano-dollars, decimal rendering of USD.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "ap_prices.h"
#include "ap_usage.h"

static struct ap_prices *parse_ok(const char *json)
{
    char err[256] = "";
    struct ap_prices *p = ap_prices_parse(json, strlen(json), err, sizeof(err));
    if (p == NULL)
        fail_msg("parse failed: %s\n  input: %s", err, json);
    return p;
}

/* ---- rejected configurations: the error names the field ---- */

struct bad_case {
    const char *json;
    const char *want; /* substring of the error */
};

static void run_bad(void **state)
{
    const struct bad_case *c = *state;
    char err[256] = "";
    struct ap_prices *p = ap_prices_parse(c->json, strlen(c->json), err, sizeof(err));
    if (p != NULL) {
        ap_prices_free(p);
        fail_msg("accepted: %s", c->json);
    }
    if (strstr(err, c->want) == NULL)
        fail_msg("error \"%s\" does not mention \"%s\"", err, c->want);
}

#define BAD(name, json, want) {"rejected: " name, run_bad, NULL, NULL, &(struct bad_case){json, want}}

/* ---- lookup ---- */

static const char table[] =
    "{\"_note\": \"comments start with _\","
    " \"claude-sonnet-4-5\": {\"input\": 3, \"output\": 15, \"cache_read\": 0.3, \"cache_write\": 3.75},"
    " \"claude-*\": {\"input\": 1, \"output\": 5},"
    " \"claude-opus-*\": {\"input\": 15, \"output\": 75},"
    " \"gpt-4o-mini\": {\"input\": 0.15, \"output\": 0.6, \"cache_read\": 0.075}}";

struct find_case {
    const char *model;
    long long input; /* -1: not priced */
    long long output;
};

static void run_find(void **state)
{
    const struct find_case *c = *state;
    struct ap_prices *p = parse_ok(table);
    const struct ap_price *pr = ap_prices_find(p, c->model);
    if (c->input < 0) {
        assert_null(pr);
    } else {
        assert_non_null(pr);
        assert_int_equal(pr->input, c->input);
        assert_int_equal(pr->output, c->output);
    }
    ap_prices_free(p);
}

#define FIND(model, in, out) {"find: " model, run_find, NULL, NULL, &(struct find_case){model, in, out}}

static void test_defaults_and_count(void **state)
{
    (void)state;
    struct ap_prices *p = parse_ok(table);
    assert_int_equal(ap_prices_count(p), 4); /* the comment is not a model */
    const struct ap_price *pr = ap_prices_find(p, "claude-haiku-4-5");
    /* cache prices default to the input price */
    assert_int_equal(pr->cache_read, 1000);
    assert_int_equal(pr->cache_write, 1000);
    pr = ap_prices_find(p, "gpt-4o-mini");
    assert_int_equal(pr->cache_read, 75);
    assert_int_equal(pr->cache_write, 150);
    assert_null(ap_prices_find(NULL, "x"));
    assert_int_equal(ap_prices_count(NULL), 0);
    ap_prices_free(p);
    ap_prices_free(NULL);
}

/* ---- costs are exact integers whatever the grouping ---- */

static void test_cost_exact(void **state)
{
    (void)state;
    struct ap_prices *p = parse_ok(table);
    const struct ap_price *pr = ap_prices_find(p, "claude-sonnet-4-5");
    struct ap_usage u = {.input = 1000, .output = 200, .cache_creation = 100, .cache_read = 5000};
    /* 1000*3 + 200*15 + 100*3.75 + 5000*0.3 = 3000 + 3000 + 375 + 1500 micro-dollars */
    assert_int_equal(ap_price_cost(pr, &u), 7875000);
    assert_int_equal(ap_price_cost(NULL, &u), 0);

    /* 1 token of gpt-4o-mini cache read costs 75 nano-dollars: no rounding anywhere. */
    const struct ap_price *mini = ap_prices_find(p, "gpt-4o-mini");
    struct ap_usage one = {.cache_read = 1};
    int64_t sum = 0;
    for (int i = 0; i < 1000; i++)
        sum += ap_price_cost(mini, &one);
    struct ap_usage thousand = {.cache_read = 1000};
    assert_int_equal(sum, ap_price_cost(mini, &thousand));
    assert_int_equal(sum, 75000);
    ap_prices_free(p);
}

/* ---- USD rendering ---- */

struct usd_case {
    long long nano;
    const char *want;
};

static void run_usd(void **state)
{
    const struct usd_case *c = *state;
    char out[40];
    ap_usd_format(c->nano, out, sizeof(out));
    assert_string_equal(out, c->want);
}

#define USD(nano, want) {"usd: " want, run_usd, NULL, NULL, &(struct usd_case){nano, want}}

static void test_usd_parse(void **state)
{
    (void)state;
    int64_t n;
    assert_int_equal(ap_usd_to_nano(12.345678912, &n), 0);
    assert_int_equal(n, 12345678912LL);
    assert_int_equal(ap_usd_to_nano(0.1, &n), 0);
    assert_int_equal(n, 100000000);
    assert_int_equal(ap_usd_to_nano(0, &n), 0);
    assert_int_equal(n, 0);
    assert_int_equal(ap_usd_to_nano(-0.01, &n), -1);
    assert_int_equal(ap_usd_to_nano(2e9, &n), -1);
}

static const struct CMUnitTest tests[] = {
    BAD("not an object", "[1]", "JSON object"),
    BAD("not JSON", "{", "JSON object"),
    BAD("entry not an object", "{\"m\": 3}", "m: must be an object"),
    BAD("missing output", "{\"m\": {\"input\": 3}}", "m: output: required"),
    BAD("negative", "{\"m\": {\"input\": -1, \"output\": 1}}", "m: input: must be a number"),
    BAD("string price", "{\"m\": {\"input\": \"3\", \"output\": 1}}", "m: input: must be a number"),
    BAD("four decimals", "{\"m\": {\"input\": 0.0375, \"output\": 1}}", "at most three decimals"),
    BAD("absurd", "{\"m\": {\"input\": 1e9, \"output\": 1}}", "m: input"),
    BAD("unknown field", "{\"m\": {\"input\": 1, \"output\": 1, \"outptu\": 2}}", "unknown field \"outptu\""),
    BAD("star inside", "{\"a*b\": {\"input\": 1, \"output\": 1}}", "prefix ending in a single '*'"),
    BAD("star alone", "{\"*\": {\"input\": 1, \"output\": 1}}", "prefix ending"),
    BAD("twice", "{\"m\": {\"input\": 1, \"output\": 1}, \"m\": {\"input\": 2, \"output\": 2}}", "priced twice"),
    FIND("claude-sonnet-4-5", 3000, 15000),
    FIND("claude-opus-4-6-thinking", 15000, 75000), /* the longer prefix wins */
    FIND("claude-haiku-4-5", 1000, 5000),
    FIND("claude-sonnet-4-5-20250929", 1000, 5000), /* exact names do not prefix */
    FIND("gpt-4o-mini", 150, 600),
    FIND("gpt-4o", -1, 0),
    FIND("", -1, 0),
    {"defaults and count", test_defaults_and_count, NULL, NULL, NULL},
    {"cost: exact nano-dollars, additive", test_cost_exact, NULL, NULL, NULL},
    USD(0, "0"),
    USD(1, "0.000000001"),
    USD(75, "0.000000075"),
    USD(500000000, "0.5"),
    USD(12345678912LL, "12.345678912"),
    USD(1000000000000LL, "1000"),
    USD(-1500000000LL, "-1.5"),
    {"usd: parse rounds to the nano-dollar, bounds", test_usd_parse, NULL, NULL, NULL},
};

int main(void)
{
    return cmocka_run_group_tests_name("prices", tests, NULL, NULL);
}
