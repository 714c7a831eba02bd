/* ap_errfmt: one table of error types for both formats, and the error bodies. */
#include "ap_errfmt.h"

#include <cJSON.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

static void test_types(void **state)
{
    (void)state;
    static const struct { int status; const char *anthropic, *openai; } rows[] = {
        {400, "invalid_request_error", "invalid_request_error"},
        {401, "authentication_error", "invalid_request_error"},
        {402, "billing_error", "invalid_request_error"},
        {403, "permission_error", "permission_error"},
        {404, "not_found_error", "invalid_request_error"},
        {405, "invalid_request_error", "invalid_request_error"},
        {413, "request_too_large", "invalid_request_error"},
        {429, "rate_limit_error", "rate_limit_error"},
        {500, "api_error", "server_error"},
        {502, "api_error", "server_error"},
        {503, "overloaded_error", "server_error"},
        {504, "timeout_error", "server_error"},
        {529, "overloaded_error", "server_error"},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        assert_string_equal(ap_err_type(AP_FMT_ANTHROPIC, rows[i].status), rows[i].anthropic);
        assert_string_equal(ap_err_type(AP_FMT_OPENAI, rows[i].status), rows[i].openai);
    }
}

static char *print(cJSON *doc)
{
    char *s = cJSON_PrintUnformatted(doc);
    cJSON_Delete(doc);
    return s;
}

static void test_docs(void **state)
{
    (void)state;
    char *s = print(ap_err_doc(AP_FMT_ANTHROPIC, 429, NULL, NULL, "slow down"));
    assert_string_equal(s, "{\"type\":\"error\",\"error\":{\"type\":\"rate_limit_error\",\"message\":\"slow down\"}}");
    cJSON_free(s);
    s = print(ap_err_doc(AP_FMT_OPENAI, 401, NULL, NULL, "bad key"));
    assert_string_equal(s, "{\"error\":{\"message\":\"bad key\",\"type\":\"invalid_request_error\",\"code\":\"invalid_api_key\"}}");
    cJSON_free(s);
    s = print(ap_err_doc(AP_FMT_OPENAI, 429, "insufficient_quota", "insufficient_quota", "budget"));
    assert_string_equal(s, "{\"error\":{\"message\":\"budget\",\"type\":\"insufficient_quota\",\"code\":\"insufficient_quota\"}}");
    cJSON_free(s);
    s = print(ap_err_doc(AP_FMT_OPENAI, 500, NULL, NULL, "x"));
    assert_string_equal(s, "{\"error\":{\"message\":\"x\",\"type\":\"server_error\",\"code\":null}}");
    cJSON_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_types), cmocka_unit_test(test_docs)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
