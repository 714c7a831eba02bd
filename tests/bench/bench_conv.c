/*
 * Conversion micro-benchmark (make bench): throughput of the stream state
 * machines on a long stream, per core, and the cost of converting a ~200 KB
 * request, each beside the same-format (pass-through) path, so the price of
 * conversion is visible; then a 32 MB body of small messages converted both
 * ways (conversion runs on the event loop: it must stay linear, and well under
 * a second), and the body scan every request pays. Figures only, no assertions.
 */
#include "ap_conv.h"
#include "ap_jscan.h"
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

/*
 * A body of about `bytes` of small messages in `fmt`: alternating short user and
 * assistant turns (with an OpenAI system message now and then, which o2a hoists).
 */
static char *bench_many(enum ap_fmt fmt, size_t bytes, int *count)
{
    struct evbuffer *b = evbuffer_new();
    int n = 0;
    evbuffer_add_printf(b, "{\"model\":\"m\",\"max_tokens\":100,\"messages\":[");
    while (evbuffer_get_length(b) < bytes) {
        if (fmt == AP_FMT_OPENAI && n % 100 == 99)
            evbuffer_add_printf(b, "%s{\"role\":\"system\",\"content\":\"note %d\"}", n ? "," : "", n);
        else if (n % 2 == 0)
            evbuffer_add_printf(b, "%s{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"q%d\"}]}",
                                n ? "," : "", n);
        else
            evbuffer_add_printf(b, "%s{\"role\":\"assistant\",\"content\":\"a%d\"}", n ? "," : "", n);
        n++;
    }
    evbuffer_add_printf(b, "]}");
    size_t len = evbuffer_get_length(b);
    char *s = malloc(len + 1);
    evbuffer_remove(b, s, len);
    s[len] = '\0';
    evbuffer_free(b);
    *count = n;
    return s;
}

/* Parses, converts and prints a 32 MB body of small messages; prints the split. */
static void bench_many_row(enum ap_fmt from)
{
    int n;
    char *body = bench_many(from, 32u << 20, &n);
    size_t len = strlen(body);
    const char *err = NULL;
    double t0 = bench_now();
    cJSON *in = cJSON_ParseWithLength(body, len);
    double t1 = bench_now();
    cJSON *out = from == AP_FMT_ANTHROPIC ? ap_conv_req_a2o(in, NULL, &err) : ap_conv_req_o2a(in, NULL, &err);
    double t2 = bench_now();
    char *text = out ? cJSON_PrintUnformatted(out) : NULL;
    double t3 = bench_now();
    printf("  %.0f MB body of %d small messages, %s: parse %.0f ms + convert %.0f ms + print %.0f ms = %.0f ms%s\n",
           len / 1048576.0, n, from == AP_FMT_ANTHROPIC ? "Anthropic to OpenAI" : "OpenAI to Anthropic",
           (t1 - t0) * 1e3, (t2 - t1) * 1e3, (t3 - t2) * 1e3, (t3 - t0) * 1e3, text ? "" : " (FAILED)");
    cJSON_free(text);
    cJSON_Delete(out);
    cJSON_Delete(in);
    free(body);
}

/* The scan every Messages / Chat Completions body pays (duplicate names checked). */
static void bench_scan_row(const char *what, const char *body)
{
    size_t len = strlen(body);
    int rounds = 500;
    struct ap_jscan js;
    double t0 = bench_now();
    for (int i = 0; i < rounds; i++)
        if (ap_jscan(body, len, &js) != AP_JSCAN_OK)
            printf("  scan FAILED\n");
    printf("  body scan of %s (%.0f kB): %.1f us\n", what, len / 1e3, (bench_now() - t0) / rounds * 1e6);
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
    bench_scan_row("the same conversation", req);
    free(req);
    int msgs;
    char *small = bench_many(AP_FMT_ANTHROPIC, 256 << 10, &msgs);
    bench_scan_row("small messages", small);
    free(small);
    bench_many_row(AP_FMT_ANTHROPIC);
    bench_many_row(AP_FMT_OPENAI);
    evbuffer_free(as);
    evbuffer_free(os);
    return 0;
}
