/*
 * ap_json: client bodies read strictly (the scan's verdict before any tree),
 * and U+0000 kept through a tree that is edited or converted and printed.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <cJSON.h>

#include "ap_conv.h"
#include "ap_json.h"

static void test_parse_client(void **state)
{
    (void)state;
    const char *err = NULL;
    static const struct { const char *doc, *err; } bad[] = {
        {"{\"name\":\"a\",\"name\":\"b\"}", "duplicate member name"},
        {"{\"keys\":{\"sk-1\":{},\"sk-\\u0031\":{}}}", "duplicate member name"},
        {"{\"name\\u0000x\":1}", "member name holds U+0000"},
        {"{\"name\":\"a\\u0000b\"}", "a string holds U+0000, which cannot be kept"},
        {"{\"name\":\"a\"} x", "not valid JSON"},
        {"{\"a\":\"\\uZZZZ\"}", "not valid JSON"}, /* cJSON alone took this for U+0000 */
        {"", "not valid JSON"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cJSON *j = ap_json_parse_client(bad[i].doc, strlen(bad[i].doc), &err);
        if (j != NULL)
            fail_msg("accepted %s", bad[i].doc);
        assert_string_equal(err, bad[i].err);
    }
    const char *ok = "{\"name\":\"caf\\u00e9\",\"n\":[1,2]}";
    cJSON *j = ap_json_parse_client(ok, strlen(ok), &err);
    assert_non_null(j);
    assert_string_equal(cJSON_GetObjectItem(j, "name")->valuestring, "caf\xc3\xa9");
    cJSON_Delete(j);
}

static void test_keep_round_trip(void **state)
{
    (void)state;
    static const char *const docs[] = {
        "{\"a\":\"x\\u0000y\",\"b\":[\"\\u0000\",\"\\u0000\\u0000\"],\"c\\u0000\":1}",
        "{\"a\":\"\\\\u0000 is text\",\"b\":\"\\\\\\u0000\"}",
        "{\"a\":\"plain\",\"b\":\"caf\xc3\xa9 \\ud83d\\ude00\"}",
    };
    static const char *const want[] = {
        "{\"a\":\"x\\u0000y\",\"b\":[\"\\u0000\",\"\\u0000\\u0000\"],\"c\\u0000\":1}",
        "{\"a\":\"\\\\u0000 is text\",\"b\":\"\\\\\\u0000\"}",
        "{\"a\":\"plain\",\"b\":\"caf\xc3\xa9 \xf0\x9f\x98\x80\"}",
    };
    for (size_t i = 0; i < sizeof(docs) / sizeof(docs[0]); i++) {
        cJSON *j = ap_json_parse_keep(docs[i], strlen(docs[i]));
        assert_non_null(j);
        char *s = ap_json_print_keep(j);
        assert_string_equal(s, want[i]);
        cJSON_free(s);
        cJSON_Delete(j);
    }
    /* A raw 0xFF byte (no UTF-8) is refused rather than misread. */
    assert_null(ap_json_parse_keep("{\"a\":\"\xff\"}", 9));
    assert_null(ap_json_parse_keep("{\"a\":", 5));
}

/* Item 14: a converted request kept its \u0000 nowhere; now it does, both ways. */
static void test_keep_through_conversion(void **state)
{
    (void)state;
    const char *a = "{\"model\":\"m\",\"max_tokens\":10,\"system\":\"s\\u0000t\",\"messages\":[{\"role\":\"user\","
                    "\"content\":[{\"type\":\"text\",\"text\":\"a\\u0000b\"}]},{\"role\":\"assistant\",\"content\":"
                    "[{\"type\":\"tool_use\",\"id\":\"t\",\"name\":\"f\",\"input\":{\"k\":\"\\u0000\"}}]}]}";
    const char *err = NULL;
    cJSON *in = ap_json_parse_keep(a, strlen(a));
    cJSON *o = ap_conv_req_a2o(in, NULL, &err);
    assert_non_null(o);
    char *s = ap_json_print_keep(o);
    assert_non_null(strstr(s, "\"content\":\"s\\u0000t\""));
    assert_non_null(strstr(s, "\"text\":\"a\\u0000b\""));
    assert_non_null(strstr(s, "\"arguments\":\"{\\\"k\\\":\\\"\\\\u0000\\\"}\""));
    cJSON *back = ap_json_parse_keep(s, strlen(s));
    cJSON *a2 = ap_conv_req_o2a(back, NULL, &err);
    char *s2 = ap_json_print_keep(a2);
    assert_non_null(strstr(s2, "\"system\":\"s\\u0000t\""));
    assert_non_null(strstr(s2, "\"text\":\"a\\u0000b\""));
    assert_non_null(strstr(s2, "\"input\":{\"k\":\"\\u0000\"}"));
    cJSON_free(s);
    cJSON_free(s2);
    cJSON_Delete(in);
    cJSON_Delete(o);
    cJSON_Delete(back);
    cJSON_Delete(a2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_client),
        cmocka_unit_test(test_keep_round_trip),
        cmocka_unit_test(test_keep_through_conversion),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
