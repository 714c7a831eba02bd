/*
 * The client's view of an upstream stream; see ap_stream.h.
 * Same format: a tap reads each event (usage, content, end, error) while the
 * bytes pass through untouched. Only an OpenAI-to-OpenAI stream whose usage
 * chunk the client did not ask for is re-emitted event by event, without it.
 * Other format: ap_conv_stream does the work.
 */
#include "ap_stream.h"

#include "ap_sse.h"

#include <cJSON.h>
#include <event2/buffer.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct ap_stream {
    struct ap_stream_opts o;
    struct ap_conv_stream *conv;    /* owned; NULL for the same format */
    struct ap_sse sse;              /* owned; the tap */
    struct ap_usage usage;
    struct evbuffer *out;           /* borrowed during a feed when re-emitting */
    char error[256];
    unsigned filter:1;              /* re-emit events, dropping the usage chunk */
    unsigned started:1;
    unsigned done:1;
    unsigned failed:1;
    unsigned broken:1;              /* unusable input */
};

struct ap_stream *ap_stream_new(const struct ap_stream_opts *o)
{
    struct ap_stream *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    s->o = *o;
    s->o.model = NULL; /* borrowed only for the converter, which copies it */
    if (o->from != o->to) {
        struct ap_conv_stream_opts co = {o->model, o->client_wants_usage, 0};
        s->conv = ap_conv_stream_new(o->from, o->to, &co);
        if (s->conv == NULL) {
            free(s);
            return NULL;
        }
        return s;
    }
    ap_sse_init(&s->sse, 0);
    s->filter = o->from == AP_FMT_OPENAI && !o->client_wants_usage;
    return s;
}

void ap_stream_free(struct ap_stream *s)
{
    if (s == NULL)
        return;
    ap_conv_stream_free(s->conv);
    ap_sse_free(&s->sse);
    free(s);
}

static void stream_take_error(struct ap_stream *s, const cJSON *err)
{
    const cJSON *msg = cJSON_GetObjectItemCaseSensitive(err, "message");
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(err, "type");
    s->failed = 1;
    snprintf(s->error, sizeof(s->error), "%s: %s", cJSON_IsString(type) ? type->valuestring : "error",
             cJSON_IsString(msg) ? msg->valuestring : "upstream error");
}

/* Anthropic event: usage, content, end, error. */
static void stream_tap_anthropic(struct ap_stream *s, const char *event, const char *data, size_t len)
{
    /* The deltas first: they are nearly every event of a stream. */
    if (strcmp(event, "content_block_delta") == 0) {
        s->started = 1;
    } else if (ap_usage_anthropic_event(&s->usage, event, data, len)) {
        s->done = 1;
    } else if (strcmp(event, "content_block_start") == 0) {
        /* A tool call announces itself before any delta: that is content too. */
        if (memmem(data, len, "\"tool_use\"", 10) != NULL)
            s->started = 1;
    } else if (strcmp(event, "error") == 0) {
        cJSON *j = cJSON_ParseWithLength(data, len);
        stream_take_error(s, cJSON_GetObjectItemCaseSensitive(j, "error"));
        cJSON_Delete(j);
    }
}

static int stream_delta_has_content(const cJSON *chunk)
{
    const cJSON *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(chunk, "choices")) {
        const cJSON *d = cJSON_GetObjectItemCaseSensitive(c, "delta");
        const char *names[] = {"content", "reasoning_content", "reasoning", "refusal"};
        for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(d, names[i]);
            if (cJSON_IsString(v) && v->valuestring[0] != '\0')
                return 1;
        }
        if (cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(d, "tool_calls")) > 0)
            return 1;
    }
    return 0;
}

/*
 * Does the chunk carry a usage object? Many servers put "usage":null in every
 * chunk: only an object is worth a parse.
 */
static int stream_has_usage_object(const char *data, size_t len)
{
    const char *end = data + len;
    for (const char *p = data; (p = memmem(p, (size_t)(end - p), "\"usage\"", 7)) != NULL;) {
        p += 7;
        while (p < end && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n'))
            p++;
        if (p < end && *p == ':') {
            p++;
            while (p < end && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n'))
                p++;
            if (p < end && *p == '{')
                return 1;
        }
    }
    return 0;
}

/* OpenAI chunk: usage, content, end, error. Returns 1 if it is the usage-only chunk. */
static int stream_tap_openai(struct ap_stream *s, const char *data, size_t len)
{
    if (len == 6 && memcmp(data, "[DONE]", 6) == 0) {
        s->done = 1;
        return 0;
    }
    /* Parse only what can matter: chunks before content starts, usage and errors. */
    int maybe_usage = stream_has_usage_object(data, len);
    if (s->started && !maybe_usage && memmem(data, len, "\"error\"", 7) == NULL)
        return 0;
    cJSON *j = cJSON_ParseWithLength(data, len);
    int usage_only = 0;
    if (j != NULL) {
        const cJSON *err = cJSON_GetObjectItemCaseSensitive(j, "error");
        const cJSON *usage = cJSON_GetObjectItemCaseSensitive(j, "usage");
        if (cJSON_IsObject(err))
            stream_take_error(s, err);
        if (cJSON_IsObject(usage)) {
            ap_usage_merge_openai(&s->usage, usage);
            usage_only = cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(j, "choices")) == 0;
        }
        if (!s->started && stream_delta_has_content(j))
            s->started = 1;
        cJSON_Delete(j);
    }
    return usage_only;
}

static int stream_on_event(void *arg, const char *event, const char *data, size_t len)
{
    struct ap_stream *s = arg;
    if (s->o.from == AP_FMT_ANTHROPIC) {
        stream_tap_anthropic(s, event, data, len);
        return 0;
    }
    int usage_only = stream_tap_openai(s, data, len);
    if (s->filter && !usage_only && ap_sse_write(s->out, event, data, len) < 0)
        return -1;
    return 0;
}

int ap_stream_feed(struct ap_stream *s, const char *buf, size_t len, struct evbuffer *out)
{
    if (s->conv != NULL)
        return ap_conv_stream_feed(s->conv, buf, len, out);
    if (s->broken)
        return -1;
    if (!s->filter && evbuffer_add(out, buf, len) < 0)
        return -1;
    s->out = out;
    int rc = ap_sse_feed(&s->sse, buf, len, stream_on_event, s);
    s->out = NULL;
    if (rc < 0)
        s->broken = 1;
    return rc;
}

int ap_stream_passthrough(const struct ap_stream *s)
{
    return s->conv == NULL && !s->filter;
}

int ap_stream_tap(struct ap_stream *s, const char *buf, size_t len)
{
    if (!ap_stream_passthrough(s) || s->broken)
        return -1;
    int rc = ap_sse_feed(&s->sse, buf, len, stream_on_event, s);
    if (rc < 0)
        s->broken = 1;
    return rc;
}

int ap_stream_end(struct ap_stream *s, int upstream_ok, struct evbuffer *out)
{
    if (s->conv != NULL)
        return ap_conv_stream_end(s->conv, upstream_ok, out);
    if (s->done || s->failed)
        return 0;
    const char *msg = upstream_ok ? "upstream stream ended early" : "upstream connection lost mid-stream";
    cJSON *doc = ap_conv_error(s->o.to, 502, msg, strlen(msg));
    char *js = cJSON_PrintUnformatted(doc);
    cJSON_Delete(doc);
    if (js == NULL)
        return -1;
    int rc;
    if (s->o.to == AP_FMT_ANTHROPIC)
        rc = ap_sse_write(out, "error", js, strlen(js));
    else
        rc = evbuffer_add_printf(out, "data: %s\n\ndata: [DONE]\n\n", js) < 0 ? -1 : 0;
    cJSON_free(js);
    s->failed = 1;
    snprintf(s->error, sizeof(s->error), "%s", msg);
    return rc;
}

void ap_stream_usage(const struct ap_stream *s, struct ap_usage *u)
{
    if (s->conv != NULL)
        ap_conv_stream_usage(s->conv, u);
    else
        *u = s->usage;
}

int ap_stream_content_started(const struct ap_stream *s)
{
    return s->conv ? ap_conv_stream_content_started(s->conv) : s->started;
}

int ap_stream_done(const struct ap_stream *s)
{
    return s->conv ? ap_conv_stream_done(s->conv) : s->done;
}

int ap_stream_failed(const struct ap_stream *s)
{
    return s->conv ? ap_conv_stream_failed(s->conv) : s->failed;
}

const char *ap_stream_error(const struct ap_stream *s)
{
    return s->conv ? ap_conv_stream_error(s->conv) : s->error;
}
