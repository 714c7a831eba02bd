/* px_verdict: every branch of the decision on an attempt's outcome, as a table. */
#include "px_verdict.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#define ANTH(type, msg) "{\"type\":\"error\",\"error\":{\"type\":\"" type "\",\"message\":\"" msg "\"}}"
#define OAI(type, code) "{\"error\":{\"message\":\"m\",\"type\":\"" type "\",\"code\":\"" code "\"}}"

struct row {
    const char *name;
    struct px_outcome o;
    enum px_verdict_kind kind;
    int mark;
    int status;
};

#define ANSWER(st, body, next) \
    {PX_OUT_ANSWER, PX_TR_NONE, st, body, sizeof(body) - 1, 0, 1, 1, 0, NULL, next}
#define TRANSPORT(tr, next) {PX_OUT_TRANSPORT, tr, 0, NULL, 0, 0, 1, 0, 0, NULL, next}
#define HELD(clean, err, next) {PX_OUT_HELD_STREAM, PX_TR_NONE, 200, NULL, 0, 1, 1, 0, clean, err, next}

static const struct row rows[] = {
    {"2xx answer is delivered", ANSWER(200, "{}", 1), PX_V_DELIVER, 0, 0},
    {"429 with a next tier: retry and mark", ANSWER(429, "", 1), PX_V_RETRY, 1, 0},
    {"503: retry and mark", ANSWER(503, "", 1), PX_V_RETRY, 1, 0},
    {"529: retry and mark", ANSWER(529, "", 1), PX_V_RETRY, 1, 0},
    {"429 on the last tier is delivered", ANSWER(429, "", 0), PX_V_DELIVER, 0, 0},
    {"500: retry, no mark", ANSWER(500, "", 1), PX_V_RETRY, 0, 0},
    {"400 quoting the client's words: delivered",
     ANSWER(400, ANTH("invalid_request_error", "Invalid value: 'quota'"), 1), PX_V_DELIVER, 0, 0},
    {"400 saying credit: delivered",
     ANSWER(400, ANTH("invalid_request_error", "Your credit balance is too low / exhausted"), 1), PX_V_DELIVER, 0, 0},
    {"400 of type rate_limit_error: retry and mark", ANSWER(400, ANTH("rate_limit_error", "x"), 1), PX_V_RETRY, 1, 0},
    {"402 billing_error: retry and mark", ANSWER(402, ANTH("billing_error", "x"), 1), PX_V_RETRY, 1, 0},
    {"OpenAI insufficient_quota code: retry and mark", ANSWER(400, OAI("invalid_request_error", "insufficient_quota"), 1),
     PX_V_RETRY, 1, 0},
    {"plain text 400: delivered", ANSWER(400, "quota exceeded", 1), PX_V_DELIVER, 0, 0},
    {"status 0: our 502", ANSWER(0, "", 1), PX_V_FAIL, 0, 502},
    {"refused with a next tier: retry", TRANSPORT(PX_TR_REFUSED, 1), PX_V_RETRY, 0, 0},
    {"refused on the last tier: 502", TRANSPORT(PX_TR_REFUSED, 0), PX_V_FAIL, 0, 502},
    {"broken with a next tier: retry", TRANSPORT(PX_TR_BROKEN, 1), PX_V_RETRY, 0, 0},
    {"timeout: 504, never retried", TRANSPORT(PX_TR_TIMEOUT, 1), PX_V_FAIL, 0, 504},
    {"too large: 502", TRANSPORT(PX_TR_TOO_LARGE, 1), PX_V_FAIL, 0, 502},
    {"held stream that ended cleanly: delivered", HELD(1, "", 1), PX_V_DELIVER, 0, 0},
    {"held stream with an overload error: retry and mark", HELD(0, "overloaded_error: Overloaded", 1), PX_V_RETRY, 1, 0},
    {"held stream with another error: retry, no mark", HELD(0, "api_error: quota words", 1), PX_V_RETRY, 0, 0},
    {"held stream cut before content: retry", HELD(0, "", 1), PX_V_RETRY, 0, 0},
    {"held stream failing on the last tier: delivered", HELD(0, "api_error: x", 0), PX_V_DELIVER, 0, 0},
};

static void test_rows(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        struct px_verdict v = px_verdict_decide(&rows[i].o);
        if (v.kind != rows[i].kind || v.mark != rows[i].mark || (v.kind == PX_V_FAIL && v.status != rows[i].status))
            fail_msg("%s: got kind %d mark %d status %d", rows[i].name, v.kind, v.mark, v.status);
        if (v.kind != PX_V_DELIVER && (v.message == NULL || v.message[0] == '\0'))
            fail_msg("%s: no message", rows[i].name);
    }
}

static void test_special_answers(void **state)
{
    (void)state;
    /* A 2xx event stream that sent nothing: another tier may do better. */
    struct px_outcome empty = ANSWER(200, "", 1);
    empty.is_sse = 1;
    empty.body_len = 0;
    assert_int_equal(px_verdict_decide(&empty).kind, PX_V_RETRY);
    empty.has_next = 0;
    assert_int_equal(px_verdict_decide(&empty).kind, PX_V_DELIVER);
    /* A 2xx that is not a message: retried, else our 502. */
    struct px_outcome junk = ANSWER(200, "<html>", 1);
    junk.body_is_answer = 0;
    assert_int_equal(px_verdict_decide(&junk).kind, PX_V_RETRY);
    junk.has_next = 0;
    struct px_verdict v = px_verdict_decide(&junk);
    assert_int_equal(v.kind, PX_V_FAIL);
    assert_int_equal(v.status, 502);
    /* Pass-through answers are not judged as messages. */
    junk.api = 0;
    assert_int_equal(px_verdict_decide(&junk).kind, PX_V_DELIVER);
}

static void test_reactive_texts(void **state)
{
    (void)state;
    assert_true(px_verdict_reactive_stream_error("rate_limit_error: slow down"));
    assert_false(px_verdict_reactive_stream_error("invalid_request_error: rate_limit_error"));
    assert_false(px_verdict_reactive_stream_error("upstream connection lost"));
    assert_false(px_verdict_reactive_stream_error(NULL));
    assert_true(px_verdict_reactive_body(OAI("server_error", "rate_limit_exceeded"), strlen(OAI("server_error", "rate_limit_exceeded"))));
    assert_false(px_verdict_reactive_body("{\"error\":\"rate_limit_error\"}", 28));
    assert_false(px_verdict_reactive_body("", 0));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rows),
        cmocka_unit_test(test_special_answers),
        cmocka_unit_test(test_reactive_texts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
