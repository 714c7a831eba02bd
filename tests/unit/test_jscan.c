/* ap_jscan: validity must match a real parser's, and the captured members must be right. */
#include "ap_jscan.h"

#include <cJSON.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

static const char *const valid_docs[] = {
    "{}", "[]", "0", "-0", "1.5e-3", "\"s\"", "true", "false", "null", " \t\r\n{ } ",
    "{\"a\":[1,2,{\"b\":null}],\"c\":\"\\u00e9\\n\\\"\"}", "[[[[[]]]]]", "{\"model\":\"m\",\"model\":1}",
    "-12.5E+10", "[\"\\/\\b\\f\\r\\t\"]", "{\"k\":\"caf\xc3\xa9\"}",
};

static const char *const invalid_docs[] = {
    "", " ", "{", "}", "[1,]", "{\"a\":1,}", "{\"a\" 1}", "{a:1}", "01", "1.", ".5", "1e", "-", "+1",
    "\"unterminated", "\"bad \\x escape\"", "\"\\u12g4\"", "tru", "nul", "{} {}", "[1 2]", "\"ctl \x01\"",
    "{\"a\":1}x", "NaN", "[,]", "{\"a\":}",
};

static void test_valid(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(valid_docs) / sizeof(valid_docs[0]); i++) {
        struct ap_jscan js;
        cJSON *ref = cJSON_Parse(valid_docs[i]);
        assert_non_null(ref);
        cJSON_Delete(ref);
        if (ap_jscan(valid_docs[i], strlen(valid_docs[i]), &js) != 0)
            fail_msg("rejected valid JSON: %s", valid_docs[i]);
    }
}

static void test_invalid(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(invalid_docs) / sizeof(invalid_docs[0]); i++) {
        struct ap_jscan js;
        if (ap_jscan(invalid_docs[i], strlen(invalid_docs[i]), &js) == 0)
            fail_msg("accepted invalid JSON: %s", invalid_docs[i]);
    }
}

static void test_depth_limit(void **state)
{
    (void)state;
    size_t n = 1001;
    char *deep = malloc(2 * n + 1);
    memset(deep, '[', n);
    memset(deep + n, ']', n);
    struct ap_jscan js;
    assert_int_equal(ap_jscan(deep, 2 * n, &js), -1);
    assert_int_equal(ap_jscan(deep + 1, 2 * n - 2, &js), 0);
    free(deep);
}

static void test_members(void **state)
{
    (void)state;
    const char *doc = "{\"messages\":[{\"model\":\"inner\",\"stream\":true}],\"model\":\"claude-x\","
                      "\"stream\":true,\"stream_options\":{\"x\":{\"include_usage\":false},\"include_usage\":true},"
                      "\"model\":\"second\"}";
    struct ap_jscan js;
    assert_int_equal(ap_jscan(doc, strlen(doc), &js), 0);
    assert_int_equal(js.root, AP_J_OBJECT);
    assert_int_equal(js.model, AP_J_STRING);
    assert_int_equal(js.model_len, 8);
    assert_memory_equal(js.model_raw, "claude-x", 8);
    assert_int_equal(js.model_escaped, 0);
    assert_int_equal(js.stream, AP_J_TRUE);
    assert_int_equal(js.stream_options, AP_J_OBJECT);
    assert_int_equal(js.include_usage, AP_J_TRUE);
}

static void test_member_types(void **state)
{
    (void)state;
    struct { const char *doc; enum ap_jtype model, stream; int escaped; } cases[] = {
        {"{\"model\":1}", AP_J_NUMBER, AP_J_ABSENT, 0},
        {"{\"model\":null,\"stream\":\"yes\"}", AP_J_NULL, AP_J_STRING, 0},
        {"{\"model\":[\"a\"],\"stream\":false}", AP_J_ARRAY, AP_J_FALSE, 0},
        {"{\"model\":\"a\\u002db\"}", AP_J_STRING, AP_J_ABSENT, 1},
        {"{\"mod\\u0065l\":\"x\"}", AP_J_ABSENT, AP_J_ABSENT, 0},
        {"[{\"model\":\"x\"}]", AP_J_ABSENT, AP_J_ABSENT, 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct ap_jscan js;
        assert_int_equal(ap_jscan(cases[i].doc, strlen(cases[i].doc), &js), 0);
        assert_int_equal(js.model, cases[i].model);
        assert_int_equal(js.stream, cases[i].stream);
        assert_int_equal(js.model_escaped, cases[i].escaped);
    }
}

static void test_not_nul_terminated(void **state)
{
    (void)state;
    /* The scan must stop at len: the bytes after it are not part of the document. */
    const char buf[] = "{\"model\":\"m\"}GARBAGE";
    struct ap_jscan js;
    assert_int_equal(ap_jscan(buf, 13, &js), 0);
    assert_int_equal(ap_jscan(buf, 12, &js), -1);
}

static void test_max_tokens(void **state)
{
    (void)state;
    static const struct {
        const char *doc;
        long long want;
    } cases[] = {
        {"{\"max_tokens\":100}", 100},
        {"{\"max_tokens\": 100 ,\"model\":\"m\"}", 100},
        {"{\"max_completion_tokens\":50,\"max_tokens\":100}", 50}, /* OpenAI's newer name wins */
        {"{\"max_tokens\":100,\"max_completion_tokens\":50}", 50},
        {"{\"max_tokens\":1e3}", 1000},
        {"{\"max_tokens\":2.9}", 2},
        {"{\"max_tokens\":-5}", -1},
        {"{\"max_tokens\":\"100\"}", -1},
        {"{\"max_tokens\":null}", -1},
        {"{\"x\":{\"max_tokens\":100}}", -1},  /* only the top level counts */
        {"{\"max_tokens\":1e300}", -1},
        {"{}", -1},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct ap_jscan js;
        assert_int_equal(ap_jscan(cases[i].doc, strlen(cases[i].doc), &js), 0);
        if (ap_jscan_max_tokens(&js) != cases[i].want)
            fail_msg("%s: max_tokens %lld, want %lld", cases[i].doc, ap_jscan_max_tokens(&js), cases[i].want);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid),          cmocka_unit_test(test_invalid),
        cmocka_unit_test(test_depth_limit),    cmocka_unit_test(test_members),
        cmocka_unit_test(test_member_types),   cmocka_unit_test(test_not_nul_terminated),
        cmocka_unit_test(test_max_tokens),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
