/* px_allow: the PASSTHROUGH allow-list. */
#include "px.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

static void test_default_list(void **state)
{
    (void)state;
    const char *err = NULL;
    struct px_allow *a = px_allow_parse("GET /v1/models,GET /v1/models/*,POST /v1/messages/count_tokens", &err);
    assert_non_null(a);
    assert_true(px_allow_match(a, "GET", "/v1/models"));
    assert_true(px_allow_match(a, "GET", "/v1/models/claude-x"));
    assert_true(px_allow_match(a, "POST", "/v1/messages/count_tokens"));
    assert_false(px_allow_match(a, "GET", "/v1/models/")); /* '*' matches at least one character */
    assert_false(px_allow_match(a, "POST", "/v1/models"));
    assert_false(px_allow_match(a, "DELETE", "/v1/models/x"));
    assert_false(px_allow_match(a, "GET", "/v1/files"));
    assert_false(px_allow_match(a, "POST", "/v1/messages/batches"));
    assert_false(px_allow_match(a, "GET", "/v1/modelsx"));
    assert_false(px_allow_match(a, "POST", "/v1/messages/count_tokens/x"));
    px_allow_free(a);
}

static void test_parse(void **state)
{
    (void)state;
    const char *err = NULL;
    struct px_allow *a = px_allow_parse("  GET   /a , POST /b/* ,", &err);
    assert_non_null(a);
    assert_true(px_allow_match(a, "GET", "/a"));
    assert_true(px_allow_match(a, "POST", "/b/c/d"));
    px_allow_free(a);
    a = px_allow_parse("", &err);
    assert_non_null(a); /* nothing passes through */
    assert_false(px_allow_match(a, "GET", "/v1/models"));
    px_allow_free(a);
    static const char *const bad[] = {"/v1/models", "GET", "GET v1/models", "GET /a*b", "GET /a b"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err = NULL;
        if (px_allow_parse(bad[i], &err) != NULL || err == NULL)
            fail_msg("accepted %s", bad[i]);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_default_list), cmocka_unit_test(test_parse)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
