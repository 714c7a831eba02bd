/*
 * ap_fallback: parsing and validating the tier chain (docs/contract.md section 5).
 * Valid documents are checked field by field; invalid ones must give NULL
 * and a message naming the problem (one cmocka test per row).
 *
 * JSON in this file is written with ' for " so that it stays readable.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>
#include <cmocka.h>

#include "ap_fallback.h"

static char *dq(const char *sq)
{
    char *s = strdup(sq);
    assert_non_null(s);
    for (char *p = s; *p != '\0'; p++)
        if (*p == '\'')
            *p = '"';
    return s;
}

static struct ap_fallback *parse(const char *sq, char *err, size_t errlen)
{
    char *s = dq(sq);
    struct ap_fallback *f = ap_fallback_parse(s, strlen(s), err, errlen);
    free(s);
    return f;
}

/* docs/contract.md section 5, verbatim. */
#define EXAMPLE \
    "{'enabled': true, 'health_poll_interval_seconds': 30, 'min_remaining_fraction': 0.05," \
    " 'reactive_cooldown_seconds': 60, 'recovery_margin': 0.0," \
    " 'tiers': [" \
    "  {'name': 'Claude Opus 4.6', 'model': 'claude-opus-4-6-thinking', 'type': 'antigravity'," \
    "   'health_key': 'claude-opus-4-6-thinking'}," \
    "  {'name': 'Gemini 3 Pro High', 'model': 'gemini-3-pro-high', 'type': 'upstream'}," \
    "  {'name': 'Kimi K2.5', 'model': 'kimi-k2.5', 'type': 'external'," \
    "   'base_url': 'https://api.example.com/v1', 'api_key': '...', 'max_tokens_limit': 8192}]}"

static void test_example(void **state)
{
    (void)state;
    char err[256] = "";
    struct ap_fallback *f = parse(EXAMPLE, err, sizeof(err));
    if (f == NULL)
        fail_msg("example refused: %s", err);
    assert_int_equal(f->enabled, 1);
    assert_float_equal(f->poll_interval, 30, 1e-9);
    assert_float_equal(f->min_remaining, 0.05, 1e-9);
    assert_float_equal(f->cooldown, 60, 1e-9);
    assert_float_equal(f->recovery_margin, 0, 1e-9);
    assert_int_equal(f->ntiers, 3);

    const struct ap_tier *t = &f->tiers[0];
    assert_string_equal(t->name, "Claude Opus 4.6");
    assert_string_equal(t->model, "claude-opus-4-6-thinking");
    assert_int_equal(t->type, AP_TIER_ANTIGRAVITY);
    assert_string_equal(t->health_key, "claude-opus-4-6-thinking");
    assert_null(t->base_url);
    assert_null(t->api_key);
    assert_int_equal(t->max_tokens_limit, 0);

    t = &f->tiers[1];
    assert_string_equal(t->name, "Gemini 3 Pro High");
    assert_string_equal(t->model, "gemini-3-pro-high");
    assert_int_equal(t->type, AP_TIER_UPSTREAM);
    assert_string_equal(t->health_key, "gemini-3-pro-high"); /* defaults to model */
    assert_null(t->base_url);

    t = &f->tiers[2];
    assert_string_equal(t->name, "Kimi K2.5");
    assert_string_equal(t->model, "kimi-k2.5");
    assert_int_equal(t->type, AP_TIER_EXTERNAL);
    assert_string_equal(t->base_url, "https://api.example.com/v1");
    assert_string_equal(t->api_key, "...");
    assert_int_equal(t->max_tokens_limit, 8192);

    assert_ptr_equal(ap_fallback_find(f, "kimi-k2.5"), &f->tiers[2]);
    assert_ptr_equal(ap_fallback_find(f, "claude-opus-4-6-thinking"), &f->tiers[0]);
    assert_null(ap_fallback_find(f, "gpt-4o"));
    assert_null(ap_fallback_find(f, "Kimi K2.5")); /* by model, not by name */
    assert_null(ap_fallback_find(f, "KIMI-K2.5"));
    assert_null(ap_fallback_find(f, NULL));
    ap_fallback_free(f);
}

static void test_defaults(void **state)
{
    (void)state;
    char err[256] = "";
    struct ap_fallback *f = parse("{}", err, sizeof(err));
    assert_non_null(f);
    assert_int_equal(f->enabled, 1);
    assert_float_equal(f->poll_interval, 30, 1e-9);
    assert_float_equal(f->min_remaining, 0.05, 1e-9);
    assert_float_equal(f->cooldown, 60, 1e-9);
    assert_float_equal(f->recovery_margin, 0, 1e-9);
    assert_int_equal(f->ntiers, 0);
    assert_null(ap_fallback_find(f, "x"));
    ap_fallback_free(f);

    f = parse("{'enabled':false,'tiers':[],'health_poll_interval_seconds':null}", err, sizeof(err));
    assert_non_null(f);
    assert_int_equal(f->enabled, 0);
    assert_float_equal(f->poll_interval, 30, 1e-9);
    ap_fallback_free(f);

    f = parse("{'health_poll_interval_seconds':5.5,'min_remaining_fraction':0,'reactive_cooldown_seconds':0,"
              "'recovery_margin':1}",
              err, sizeof(err));
    assert_non_null(f);
    assert_float_equal(f->poll_interval, 5.5, 1e-9);
    assert_float_equal(f->min_remaining, 0, 1e-9);
    assert_float_equal(f->cooldown, 0, 1e-9);
    assert_float_equal(f->recovery_margin, 1, 1e-9);
    ap_fallback_free(f);
}

static void test_tier_defaults(void **state)
{
    (void)state;
    char err[256] = "";
    struct ap_fallback *f =
        parse("{'tiers':[{'model':'m1','type':'upstream','health_key':'h1'},"
              "{'model':'m2','type':'openai','base_url':'https://x.example/v1///'},"
              "{'model':'m3','type':'external','base_url':'http://y','max_tokens_limit':null,'name':''}]}",
              err, sizeof(err));
    if (f == NULL)
        fail_msg("refused: %s", err);
    assert_int_equal(f->ntiers, 3);
    assert_string_equal(f->tiers[0].name, "m1"); /* name defaults to the model */
    assert_string_equal(f->tiers[0].health_key, "h1");
    assert_int_equal(f->tiers[1].type, AP_TIER_EXTERNAL); /* "openai" is an alias */
    assert_string_equal(f->tiers[1].base_url, "https://x.example/v1");
    assert_null(f->tiers[1].api_key); /* external without a key: no Authorization */
    assert_string_equal(f->tiers[2].name, "m3");
    assert_int_equal(f->tiers[2].max_tokens_limit, 0);
    ap_fallback_free(f);
}

static void test_api_key_env(void **state)
{
    (void)state;
    char err[256] = "";
    setenv("AP_TEST_TIER_KEY", "sk-from-env", 1);
    struct ap_fallback *f = parse("{'tiers':[{'model':'m','type':'external','base_url':'https://x',"
                                  "'api_key_env':'AP_TEST_TIER_KEY'}]}",
                                  err, sizeof(err));
    if (f == NULL)
        fail_msg("refused: %s", err);
    assert_string_equal(f->tiers[0].api_key, "sk-from-env");
    ap_fallback_free(f);

    /* api_key wins over api_key_env. */
    f = parse("{'tiers':[{'model':'m','type':'external','base_url':'https://x','api_key':'literal',"
              "'api_key_env':'AP_TEST_TIER_KEY'}]}",
              err, sizeof(err));
    assert_non_null(f);
    assert_string_equal(f->tiers[0].api_key, "literal");
    ap_fallback_free(f);

    /* Unset, or set to "": an error naming the variable. */
    unsetenv("AP_TEST_TIER_KEY");
    f = parse("{'tiers':[{'model':'m','type':'upstream'},{'model':'m2','type':'external','base_url':'https://x',"
              "'api_key_env':'AP_TEST_TIER_KEY'}]}",
              err, sizeof(err));
    assert_null(f);
    assert_non_null(strstr(err, "AP_TEST_TIER_KEY"));
    assert_non_null(strstr(err, "tiers[1]"));
    setenv("AP_TEST_TIER_KEY", "", 1);
    f = parse("{'tiers':[{'model':'m','type':'external','base_url':'https://x','api_key_env':'AP_TEST_TIER_KEY'}]}",
              err, sizeof(err));
    assert_null(f);
    assert_non_null(strstr(err, "AP_TEST_TIER_KEY"));
    unsetenv("AP_TEST_TIER_KEY");
}

struct bad_case {
    const char *json;
    const char *msg; /* the message must contain this */
};

static void run_bad(void **state)
{
    const struct bad_case *c = *state;
    char err[256] = "";
    struct ap_fallback *f = parse(c->json, err, sizeof(err));
    if (f != NULL) {
        ap_fallback_free(f);
        fail_msg("accepted: %s", c->json);
    }
    if (strstr(err, c->msg) == NULL)
        fail_msg("message \"%s\" does not contain \"%s\"", err, c->msg);
}

#define BAD(name, json, msg) {"invalid: " name, run_bad, NULL, NULL, &(struct bad_case){json, msg}}

static void test_load(void **state)
{
    (void)state;
    char path[] = "/tmp/ap_test_fallback_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    char *s = dq(EXAMPLE);
    assert_int_equal(write(fd, s, strlen(s)), (ssize_t)strlen(s));
    close(fd);
    free(s);
    char err[512] = "";
    struct ap_fallback *f = ap_fallback_load(path, err, sizeof(err));
    assert_non_null(f);
    assert_int_equal(f->ntiers, 3);
    ap_fallback_free(f);

    /* A file with an invalid chain: the message names the file and the problem. */
    fd = open(path, O_WRONLY | O_TRUNC);
    assert_true(fd >= 0);
    static const char bad[] = "{\"tiers\":[{\"model\":\"m\",\"type\":\"nope\"}]}";
    assert_int_equal(write(fd, bad, strlen(bad)), (ssize_t)strlen(bad));
    close(fd);
    assert_null(ap_fallback_load(path, err, sizeof(err)));
    assert_non_null(strstr(err, path));
    assert_non_null(strstr(err, "nope"));
    unlink(path);

    assert_null(ap_fallback_load("/nonexistent/fallback.json", err, sizeof(err)));
    assert_non_null(strstr(err, "/nonexistent/fallback.json"));
}

static void test_type_names_and_null(void **state)
{
    (void)state;
    assert_string_equal(ap_tier_type_name(AP_TIER_ANTIGRAVITY), "antigravity");
    assert_string_equal(ap_tier_type_name(AP_TIER_UPSTREAM), "upstream");
    assert_string_equal(ap_tier_type_name(AP_TIER_EXTERNAL), "external");
    assert_null(ap_fallback_find(NULL, "m"));
    ap_fallback_free(NULL);
}

/* One group, so that TAP output has a single plan. */
static const struct CMUnitTest tests[] = {
    {"docs/contract.md section 5 example, field by field; find", test_example, NULL, NULL, NULL},
    {"defaults, null values, bounds accepted", test_defaults, NULL, NULL, NULL},
    {"tier defaults: name, health_key, openai alias, base_url slashes", test_tier_defaults, NULL, NULL, NULL},
    {"api_key_env resolved; unset or empty is an error", test_api_key_env, NULL, NULL, NULL},
    {"load from a file; errors name the file", test_load, NULL, NULL, NULL},
    {"type names, NULL arguments", test_type_names_and_null, NULL, NULL, NULL},
    BAD("not JSON", "enabled: true", "not a JSON object"),
    BAD("top level array", "[]", "not a JSON object"),
    BAD("empty document", "", "not a JSON object"),
    BAD("enabled not a boolean", "{'enabled':'yes'}", "\"enabled\""),
    BAD("enabled 1", "{'enabled':1}", "\"enabled\""),
    BAD("poll interval a string", "{'health_poll_interval_seconds':'30'}", "health_poll_interval_seconds"),
    BAD("poll interval 0", "{'health_poll_interval_seconds':0}", "health_poll_interval_seconds"),
    BAD("poll interval negative", "{'health_poll_interval_seconds':-1}", "health_poll_interval_seconds"),
    BAD("poll interval over a day", "{'health_poll_interval_seconds':86401}", "health_poll_interval_seconds"),
    BAD("min_remaining_fraction above 1", "{'min_remaining_fraction':1.5}", "min_remaining_fraction"),
    BAD("min_remaining_fraction negative", "{'min_remaining_fraction':-0.1}", "min_remaining_fraction"),
    BAD("cooldown negative", "{'reactive_cooldown_seconds':-5}", "reactive_cooldown_seconds"),
    BAD("cooldown a boolean", "{'reactive_cooldown_seconds':true}", "reactive_cooldown_seconds"),
    BAD("recovery_margin 2", "{'recovery_margin':2}", "recovery_margin"),
    BAD("tiers an object", "{'tiers':{'model':'m'}}", "\"tiers\" must be an array"),
    BAD("tier not an object", "{'tiers':['m']}", "tiers[0] is not an object"),
    BAD("unknown type", "{'tiers':[{'model':'m','type':'anthropic'}]}", "tiers[0]: unknown type \"anthropic\""),
    BAD("missing model", "{'tiers':[{'name':'n','type':'upstream'}]}", "tiers[0] needs \"model\""),
    BAD("empty model", "{'tiers':[{'model':'','type':'upstream'}]}", "tiers[0] needs \"model\""),
    BAD("model not a string", "{'tiers':[{'model':5,'type':'upstream'}]}", "tiers[0] needs \"model\""),
    BAD("missing type", "{'tiers':[{'model':'m'}]}", "\"type\""),
    BAD("duplicate model", "{'tiers':[{'model':'a','type':'upstream'},{'model':'m','type':'upstream'},"
                           "{'model':'m','type':'antigravity'}]}",
        "tiers[2]: model \"m\" appears twice"),
    BAD("external without base_url", "{'tiers':[{'model':'k','type':'external','api_key':'x'}]}",
        "tiers[0]: an external tier needs \"base_url\""),
    BAD("external with empty base_url", "{'tiers':[{'model':'k','type':'external','base_url':''}]}",
        "base_url"),
    BAD("max_tokens_limit 0", "{'tiers':[{'model':'k','type':'external','base_url':'https://x','max_tokens_limit':0}]}",
        "max_tokens_limit"),
    BAD("max_tokens_limit negative",
        "{'tiers':[{'model':'k','type':'external','base_url':'https://x','max_tokens_limit':-1}]}", "max_tokens_limit"),
    BAD("max_tokens_limit a string",
        "{'tiers':[{'model':'k','type':'external','base_url':'https://x','max_tokens_limit':'8192'}]}",
        "max_tokens_limit"),
    BAD("max_tokens_limit not an integer",
        "{'tiers':[{'model':'k','type':'external','base_url':'https://x','max_tokens_limit':8192.5}]}",
        "max_tokens_limit"),
    BAD("max_tokens_limit beyond a long (1e30)",
        "{'tiers':[{'model':'k','type':'external','base_url':'https://x','max_tokens_limit':1e30}]}",
        "max_tokens_limit"),
    BAD("error in the third tier names it",
        "{'tiers':[{'model':'a','type':'upstream'},{'model':'b','type':'upstream'},{'model':'c','type':'x'}]}",
        "tiers[2]"),
};

int main(void)
{
    return cmocka_run_group_tests_name("fallback", tests, NULL, NULL);
}
