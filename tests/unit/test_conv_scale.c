/*
 * Conversions run on the event loop, so they must be linear: 20k short
 * messages used to block every client of a replica for 3 s (a
 * cJSON_GetArraySize per user message, a strlen per appended text).
 *
 * Time cannot be asserted portably, a ratio can: each case converts n and 10n
 * items (CPU time, best of three) and the larger must cost less than 20 times
 * the smaller. Linear work gives about 10; the quadratic code gave about 100.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include <cJSON.h>
#include <event2/buffer.h>

#include "ap_conv.h"

#define SMALL 10000
#define RATIO 20.0

/*
 * Under ASan the ratio measures ASan's allocator (quarantine, stack depot),
 * not the conversion: 20-22x seen for 10x the items where the plain build
 * gives 10-13x. The sanitizer pass still runs every conversion for its
 * memory checks; linearity is judged by the plain build's pass.
 */
#if defined(__SANITIZE_ADDRESS__)
#define RATIO_JUDGED 0
#else
#define RATIO_JUDGED 1
#endif

enum scale_kind { A2O_REQ, O2A_REQ, A2O_ASSISTANT_BLOCKS, A2O_RESULT_BLOCKS, O2A_SAME_ROLE, A2O_RESP, O2A_RESP,
                  A2O_STREAM, O2A_STREAM };

static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static cJSON *text_block(const char *t)
{
    cJSON *b = cJSON_CreateObject();
    cJSON_AddStringToObject(b, "type", "text");
    cJSON_AddStringToObject(b, "text", t);
    return b;
}

/* A request (or response) of n items for the given case. */
static cJSON *scale_doc(enum scale_kind k, int n)
{
    cJSON *doc = cJSON_CreateObject();
    cJSON_AddStringToObject(doc, "model", "m");
    cJSON_AddNumberToObject(doc, "max_tokens", 100);
    cJSON *msgs = cJSON_AddArrayToObject(doc, "messages");
    cJSON *m, *c;
    switch (k) {
    case A2O_REQ:
    case O2A_REQ:
        for (int i = 0; i < n; i++) {
            m = cJSON_CreateObject();
            cJSON_AddStringToObject(m, "role", i % 2 ? "assistant" : "user");
            if (i % 2)
                cJSON_AddStringToObject(m, "content", "ok");
            else
                cJSON_AddItemToArray(cJSON_AddArrayToObject(m, "content"), text_block("hello there"));
            cJSON_AddItemToArray(msgs, m);
        }
        break;
    case A2O_ASSISTANT_BLOCKS:
    case A2O_RESULT_BLOCKS:
        m = cJSON_CreateObject();
        cJSON_AddStringToObject(m, "role", k == A2O_ASSISTANT_BLOCKS ? "assistant" : "user");
        c = cJSON_AddArrayToObject(m, "content");
        cJSON_AddItemToArray(msgs, m);
        if (k == A2O_RESULT_BLOCKS) {
            cJSON *r = cJSON_CreateObject();
            cJSON_AddStringToObject(r, "type", "tool_result");
            cJSON_AddStringToObject(r, "tool_use_id", "t1");
            cJSON_AddItemToArray(c, r);
            c = cJSON_AddArrayToObject(r, "content");
        }
        for (int i = 0; i < n; i++)
            cJSON_AddItemToArray(c, text_block("some words "));
        break;
    case O2A_SAME_ROLE:
        for (int i = 0; i < n; i++) {
            m = cJSON_CreateObject();
            cJSON_AddStringToObject(m, "role", i % 3 == 2 ? "system" : "user");
            cJSON_AddStringToObject(m, "content", "hello");
            cJSON_AddItemToArray(msgs, m);
        }
        break;
    case A2O_RESP:
        cJSON_DeleteItemFromObject(doc, "messages");
        c = cJSON_AddArrayToObject(doc, "content");
        for (int i = 0; i < n; i++)
            cJSON_AddItemToArray(c, text_block("some words "));
        break;
    case O2A_RESP: {
        cJSON_DeleteItemFromObject(doc, "messages");
        cJSON *msg = cJSON_CreateObject();
        cJSON_AddStringToObject(msg, "role", "assistant");
        c = cJSON_AddArrayToObject(msg, "tool_calls");
        for (int i = 0; i < n; i++) {
            cJSON *tc = cJSON_CreateObject(), *fn = cJSON_CreateObject();
            cJSON_AddStringToObject(tc, "id", "call_1");
            cJSON_AddStringToObject(tc, "type", "function");
            cJSON_AddStringToObject(fn, "name", "f");
            cJSON_AddStringToObject(fn, "arguments", "{\"a\":1}");
            cJSON_AddItemToObject(tc, "function", fn);
            cJSON_AddItemToArray(c, tc);
        }
        cJSON *choice = cJSON_CreateObject();
        cJSON_AddItemToObject(choice, "message", msg);
        cJSON_AddStringToObject(choice, "finish_reason", "tool_calls");
        cJSON_AddItemToArray(cJSON_AddArrayToObject(doc, "choices"), choice);
        break;
    }
    default:
        break;
    }
    return doc;
}

/* n stream events of the direction's source format. */
static struct evbuffer *scale_stream(enum scale_kind k, int n)
{
    struct evbuffer *b = evbuffer_new();
    if (k == A2O_STREAM) {
        evbuffer_add_printf(b, "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\","
                               "\"model\":\"m\",\"usage\":{\"input_tokens\":1}}}\n\n");
        for (int i = 0; i < n; i++)
            evbuffer_add_printf(b, "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":%d,"
                                   "\"content_block\":{\"type\":\"text\",\"text\":\"w\"}}\n\n", i % 4000);
    } else {
        for (int i = 0; i < n; i++)
            evbuffer_add_printf(b, "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":%d,"
                                   "\"function\":{\"arguments\":\"x\"}}]}}]}\n\n", i % 1000);
    }
    return b;
}

static double scale_once(enum scale_kind k, int n)
{
    double best = 1e9;
    for (int round = 0; round < 3; round++) {
        cJSON *doc = NULL, *out = NULL;
        struct evbuffer *in = NULL, *sink = evbuffer_new();
        const char *err = NULL;
        if (k == A2O_STREAM || k == O2A_STREAM)
            in = scale_stream(k, n / 5); /* an event costs as much as a few messages */
        else
            doc = scale_doc(k, n);
        double t0 = cpu_now();
        switch (k) {
        case A2O_REQ: case A2O_ASSISTANT_BLOCKS: case A2O_RESULT_BLOCKS:
            out = ap_conv_req_a2o(doc, NULL, &err);
            break;
        case O2A_REQ: case O2A_SAME_ROLE:
            out = ap_conv_req_o2a(doc, NULL, &err);
            break;
        case A2O_RESP:
            out = ap_conv_resp_a2o(doc, NULL);
            break;
        case O2A_RESP:
            out = ap_conv_resp_o2a(doc, NULL);
            break;
        case A2O_STREAM: case O2A_STREAM: {
            struct ap_conv_stream *s = ap_conv_stream_new(k == A2O_STREAM ? AP_FMT_ANTHROPIC : AP_FMT_OPENAI,
                                                          k == A2O_STREAM ? AP_FMT_OPENAI : AP_FMT_ANTHROPIC, NULL);
            size_t len = evbuffer_get_length(in);
            const char *p = (const char *)evbuffer_pullup(in, -1);
            for (size_t off = 0; off < len; off += 16384) {
                ap_conv_stream_feed(s, p + off, len - off < 16384 ? len - off : 16384, sink);
                evbuffer_drain(sink, evbuffer_get_length(sink));
            }
            ap_conv_stream_free(s);
            out = cJSON_CreateObject();
            break;
        }
        }
        double t = cpu_now() - t0;
        if (out == NULL)
            fail_msg("case %d, n=%d: conversion failed: %s", (int)k, n, err ? err : "?");
        if (t < best)
            best = t;
        cJSON_Delete(out);
        cJSON_Delete(doc);
        if (in != NULL)
            evbuffer_free(in);
        evbuffer_free(sink);
    }
    return best;
}

static const char *const names[] = {
    "a2o request, alternating turns", "o2a request, alternating turns", "a2o one assistant turn of text blocks",
    "a2o one tool result of text blocks", "o2a merged same-role turns, system hoisted", "a2o response of text blocks",
    "o2a response of tool calls", "a2o stream events", "o2a stream events",
};

static void test_linear(void **state)
{
    enum scale_kind k = (enum scale_kind)(intptr_t)*state;
    double small = scale_once(k, SMALL), big = scale_once(k, SMALL * 10);
    print_message("%s: %d items %.2f ms, %d items %.2f ms (x%.1f)\n", names[k], SMALL, small * 1e3, SMALL * 10,
                  big * 1e3, big / (small > 0 ? small : 1e-9));
    /* the constant term keeps a case that takes microseconds from failing on noise */
    if (RATIO_JUDGED && big > RATIO * small + 0.002)
        fail_msg("%s: 10x the items cost %.1fx the time: not linear", names[k], big / small);
}

#define SCALE(k) {names[k], test_linear, NULL, NULL, (void *)(intptr_t)(k)}

int main(void)
{
    const struct CMUnitTest tests[] = {
        SCALE(A2O_REQ), SCALE(O2A_REQ), SCALE(A2O_ASSISTANT_BLOCKS), SCALE(A2O_RESULT_BLOCKS), SCALE(O2A_SAME_ROLE),
        SCALE(A2O_RESP), SCALE(O2A_RESP), SCALE(A2O_STREAM), SCALE(O2A_STREAM),
    };
    return cmocka_run_group_tests_name("conv_scale", tests, NULL, NULL);
}
