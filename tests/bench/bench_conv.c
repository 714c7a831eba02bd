/*
 * Conversion micro-benchmark (make bench): throughput of the stream state
 * machines on a long stream, per core, and the cost of converting a ~200 KB
 * request, each beside the same-format (pass-through) path, so the price of
 * conversion is visible. Figures only, no assertions.
 */
#include "ap_conv.h"
#include "ap_stream.h"

#include <cJSON.h>
#include <event2/buffer.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A long stream of text deltas in the given format, ending properly. */
static struct evbuffer *bench_stream(enum ap_fmt fmt, int deltas)
{
    struct evbuffer *b = evbuffer_new();
    if (fmt == AP_FMT_ANTHROPIC) {
        evbuffer_add_printf(b, "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\","
                               "\"type\":\"message\",\"role\":\"assistant\",\"model\":\"m\",\"content\":[],"
                               "\"stop_reason\":null,\"usage\":{\"input_tokens\":10,\"output_tokens\":1}}}\n\n"
                               "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,"
                               "\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n");
        for (int i = 0; i < deltas; i++)
            evbuffer_add_printf(b, "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,"
                                   "\"delta\":{\"type\":\"text_delta\",\"text\":\"word%d and some more text \"}}\n\n",
                                i);
        evbuffer_add_printf(b, "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n"
                               "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":"
                               "\"end_turn\"},\"usage\":{\"output_tokens\":%d}}\n\n"
                               "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
                            deltas);
    } else {
        for (int i = 0; i < deltas; i++)
            evbuffer_add_printf(b, "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,"
                                   "\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"word%d and some "
                                   "more text \"},\"finish_reason\":null}]}\n\n",
                                i);
        evbuffer_add_printf(b, "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,"
                               "\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n"
                               "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,"
                               "\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":%d,"
                               "\"total_tokens\":%d}}\n\ndata: [DONE]\n\n",
                            deltas, deltas + 10);
    }
    return b;
}

/* MB/s of SSE in, fed in 16 KiB slices as curl would. */
static double bench_stream_rate(enum ap_fmt from, enum ap_fmt to, const char *data, size_t len, int rounds)
{
    double t0 = bench_now();
    for (int r = 0; r < rounds; r++) {
        struct ap_stream_opts o = {from, to, NULL, 1};
        struct ap_stream *s = ap_stream_new(&o);
        struct evbuffer *out = evbuffer_new();
        for (size_t off = 0; off < len; off += 16384) {
            size_t n = len - off < 16384 ? len - off : 16384;
            ap_stream_feed(s, data + off, n, out);
            evbuffer_drain(out, evbuffer_get_length(out));
        }
        ap_stream_end(s, 1, out);
        evbuffer_free(out);
        ap_stream_free(s);
    }
    double secs = bench_now() - t0;
    return (double)len * rounds / secs / 1e6;
}

/* A ~200 KB Anthropic request: a long conversation. */
static char *bench_request(void)
{
    cJSON *req = cJSON_CreateObject();
    cJSON_AddStringToObject(req, "model", "claude-x");
    cJSON_AddNumberToObject(req, "max_tokens", 1024);
    cJSON_AddStringToObject(req, "system", "You are a helpful assistant.");
    cJSON *msgs = cJSON_AddArrayToObject(req, "messages");
    char text[2048];
    memset(text, 'a', sizeof(text) - 1);
    text[sizeof(text) - 1] = '\0';
    for (int i = 0; i < 100; i++) {
        cJSON *m = cJSON_CreateObject();
        cJSON_AddStringToObject(m, "role", i % 2 ? "assistant" : "user");
        cJSON_AddStringToObject(m, "content", text);
        cJSON_AddItemToArray(msgs, m);
    }
    char *s = cJSON_PrintUnformatted(req);
    cJSON_Delete(req);
    return s;
}

int main(void)
{
    int deltas = 100000;
    struct evbuffer *as = bench_stream(AP_FMT_ANTHROPIC, deltas), *os = bench_stream(AP_FMT_OPENAI, deltas);
    size_t al = evbuffer_get_length(as), ol = evbuffer_get_length(os);
    const char *a = (const char *)evbuffer_pullup(as, -1), *o = (const char *)evbuffer_pullup(os, -1);

    printf("conversion benchmark (one core, CPU time)\n");
    printf("  stream of %d deltas: Anthropic %.1f MB, OpenAI %.1f MB\n", deltas, al / 1e6, ol / 1e6);
    printf("  %-44s %10s\n", "stream path", "MB/s in");
    printf("  %-44s %10.1f\n", "Anthropic -> Anthropic (pass-through tap)", bench_stream_rate(AP_FMT_ANTHROPIC, AP_FMT_ANTHROPIC, a, al, 3));
    printf("  %-44s %10.1f\n", "OpenAI -> OpenAI (tap, usage chunk filter)", bench_stream_rate(AP_FMT_OPENAI, AP_FMT_OPENAI, o, ol, 3));
    printf("  %-44s %10.1f\n", "Anthropic -> OpenAI (converted)", bench_stream_rate(AP_FMT_ANTHROPIC, AP_FMT_OPENAI, a, al, 3));
    printf("  %-44s %10.1f\n", "OpenAI -> Anthropic (converted)", bench_stream_rate(AP_FMT_OPENAI, AP_FMT_ANTHROPIC, o, ol, 3));

    char *req = bench_request();
    size_t rl = strlen(req);
    int n = 200;
    double t0 = bench_now();
    for (int i = 0; i < n; i++) {
        cJSON *j = cJSON_ParseWithLength(req, rl); /* what every request pays: validation */
        cJSON_Delete(j);
    }
    double parse_us = (bench_now() - t0) / n * 1e6;
    t0 = bench_now();
    for (int i = 0; i < n; i++) {
        cJSON *j = cJSON_ParseWithLength(req, rl);
        const char *err;
        struct ap_conv_opts opts = {NULL, 0, 1};
        cJSON *c = ap_conv_req_a2o(j, &opts, &err);
        char *s = cJSON_PrintUnformatted(c);
        cJSON_free(s);
        cJSON_Delete(c);
        cJSON_Delete(j);
    }
    double conv_us = (bench_now() - t0) / n * 1e6;
    printf("  request of %.0f KB: pass-through (parse/validate) %.0f us, converted (parse + convert + print) %.0f us,"
           " overhead %.0f us\n", rl / 1e3, parse_us, conv_us, conv_us - parse_us);
    free(req);
    evbuffer_free(as);
    evbuffer_free(os);
    return 0;
}
