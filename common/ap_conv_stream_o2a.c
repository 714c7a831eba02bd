/*
 * Stream, OpenAI upstream -> Anthropic client: chat.completion.chunk objects
 * become Messages events. OpenAI has no blocks, only deltas of several kinds;
 * a block is opened when a kind starts and closed when another starts.
 *
 *   first chunk                      -> message_start (usage so far), ping
 *   delta.reasoning_content          -> thinking block {thinking:"",signature:""}, thinking_delta
 *   delta.reasoning_signature        -> signature_delta in the open thinking block
 *   delta.content, delta.refusal     -> text block, text_delta
 *   delta.tool_calls[] new index     -> tool_use block {id,name,input:{}} (one per index)
 *   delta.tool_calls[] arguments     -> input_json_delta in that tool's block
 *   finish_reason                    -> content_block_stop, stop reason kept
 *   usage (any chunk, choices: [])   -> kept for message_delta and accounting
 *   data: [DONE]                     -> message_delta {stop_reason, usage}, message_stop
 *   {"error":{...}}                  -> event: error, and nothing after it
 *
 * message_delta waits for [DONE] because include_usage puts the usage in a
 * chunk after the finish_reason one.
 *
 * Arguments for a tool call whose block was already closed (a server that
 * interleaves tool calls; OpenAI does not) still go to that tool's block
 * index: the SDKs accumulate by index, so nothing is lost.
 */
#include "ap_conv_int.h"
#include "ap_json.h"

#include <math.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

/* More parallel tool calls than this in one message is not a real stream. */
#define AP_CONV_MAX_TOOLS 1024

static cJSON *o2a_event(const char *type)
{
    cJSON *ev = cJSON_CreateObject();
    cJSON_AddStringToObject(ev, "type", type);
    return ev;
}

static int o2a_start(struct ap_conv_stream *s, const cJSON *chunk)
{
    const char *model = ap_conv_str(chunk, "model");

    if (s->started)
        return 0;
    s->id = ap_conv_id(ap_conv_str(chunk, "id"), "msg_");
    if (s->id == NULL || (model != NULL && (s->up_model = strdup(model)) == NULL))
        return -1;
    s->started = 1;
    cJSON *ev = o2a_event("message_start");
    cJSON *m = cJSON_AddObjectToObject(ev, "message");
    cJSON_AddStringToObject(m, "id", s->id);
    cJSON_AddStringToObject(m, "type", "message");
    cJSON_AddStringToObject(m, "role", "assistant");
    cJSON_AddArrayToObject(m, "content");
    cJSON_AddStringToObject(m, "model", ap_conv_stream_model(s));
    cJSON_AddNullToObject(m, "stop_reason");
    cJSON_AddNullToObject(m, "stop_sequence");
    cJSON_AddItemToObject(m, "usage", ap_conv_usage_anthropic(&s->usage));
    if (ap_conv_stream_emit(s, "message_start", ev) < 0)
        return -1;
    return ap_conv_stream_emit(s, "ping", o2a_event("ping"));
}

static int o2a_close(struct ap_conv_stream *s)
{
    if (s->open_kind == AP_CONV_NONE)
        return 0;
    s->open_kind = AP_CONV_NONE;
    cJSON *ev = o2a_event("content_block_stop");
    cJSON_AddNumberToObject(ev, "index", s->open_block);
    return ap_conv_stream_emit(s, "content_block_stop", ev);
}

/* Closes the open block and opens `block` (owned) as the next one. */
static int o2a_open(struct ap_conv_stream *s, enum ap_conv_block kind, cJSON *block)
{
    if (o2a_close(s) < 0) {
        cJSON_Delete(block);
        return -1;
    }
    s->open_kind = kind;
    s->open_block = s->next_block++;
    s->content_started = 1;
    cJSON *ev = o2a_event("content_block_start");
    cJSON_AddNumberToObject(ev, "index", s->open_block);
    cJSON_AddItemToObject(ev, "content_block", block);
    return ap_conv_stream_emit(s, "content_block_start", ev);
}

/* One delta of block `index`: {"type":dtype, field:value}. */
static int o2a_delta(struct ap_conv_stream *s, int index, const char *dtype, const char *field,
                     const char *value)
{
    cJSON *ev = o2a_event("content_block_delta");
    cJSON_AddNumberToObject(ev, "index", index);
    cJSON *d = cJSON_AddObjectToObject(ev, "delta");
    cJSON_AddStringToObject(d, "type", dtype);
    cJSON_AddStringToObject(d, field, value);
    return ap_conv_stream_emit(s, "content_block_delta", ev);
}

static int o2a_text(struct ap_conv_stream *s, const char *text)
{
    if (text == NULL || text[0] == '\0')
        return 0;
    if (s->open_kind != AP_CONV_TEXT) {
        cJSON *b = o2a_event("text");
        cJSON_AddStringToObject(b, "text", "");
        if (o2a_open(s, AP_CONV_TEXT, b) < 0)
            return -1;
    }
    return o2a_delta(s, s->open_block, "text_delta", "text", text);
}

static int o2a_thinking(struct ap_conv_stream *s, const char *text, const char *signature)
{
    if (text != NULL && text[0] != '\0') {
        if (s->open_kind != AP_CONV_THINKING) {
            cJSON *b = o2a_event("thinking");
            cJSON_AddStringToObject(b, "thinking", "");
            cJSON_AddStringToObject(b, "signature", "");
            if (o2a_open(s, AP_CONV_THINKING, b) < 0)
                return -1;
        }
        if (o2a_delta(s, s->open_block, "thinking_delta", "thinking", text) < 0)
            return -1;
    }
    /* signature_delta only exists inside a thinking block: without one open it has no home. */
    if (signature == NULL || signature[0] == '\0' || s->open_kind != AP_CONV_THINKING)
        return 0;
    return o2a_delta(s, s->open_block, "signature_delta", "signature", signature);
}

/* The block of tool call `oai_index`, opening it if it is new; -1 on error. */
static int o2a_tool_block(struct ap_conv_stream *s, int oai_index, const cJSON *tc)
{
    const cJSON *fn = cJSON_GetObjectItemCaseSensitive(tc, "function");
    const char *name = ap_conv_str(fn, "name");
    const char *id = ap_conv_str(tc, "id");

    for (int i = 0; i < s->ntools; i++)
        if (s->tools[i].oai_index == oai_index)
            return s->tools[i].block;
    if (s->ntools == s->tools_cap) {
        int cap = s->tools_cap ? s->tools_cap * 2 : 4;
        struct ap_conv_tool *n = cap <= AP_CONV_MAX_TOOLS ? realloc(s->tools, (size_t)cap * sizeof(*n))
                                                          : NULL;
        if (n == NULL)
            return -1;
        s->tools = n;
        s->tools_cap = cap;
    }
    char *gen = id ? NULL : ap_conv_id(NULL, "toolu_");
    cJSON *b = o2a_event("tool_use");
    cJSON_AddStringToObject(b, "id", id ? id : gen ? gen : "");
    cJSON_AddStringToObject(b, "name", name ? name : "");
    cJSON_AddObjectToObject(b, "input");
    free(gen);
    if (o2a_open(s, AP_CONV_TOOL, b) < 0)
        return -1;
    s->tools[s->ntools].oai_index = oai_index;
    s->tools[s->ntools].block = s->open_block;
    s->ntools++;
    return s->open_block;
}

static int o2a_tool_calls(struct ap_conv_stream *s, const cJSON *tcs)
{
    const cJSON *tc;
    int pos = 0;

    cJSON_ArrayForEach(tc, tcs) {
        const cJSON *idx = cJSON_GetObjectItemCaseSensitive(tc, "index");
        const char *args = ap_conv_str(cJSON_GetObjectItemCaseSensitive(tc, "function"), "arguments");
        /* Servers that send whole calls at once sometimes leave out the index. */
        int oai = cJSON_IsNumber(idx) && fabs(idx->valuedouble) < 1e9 ? (int)idx->valuedouble : pos;
        int block = o2a_tool_block(s, oai, tc);
        if (block < 0)
            return -1;
        if (args != NULL && args[0] != '\0' &&
            o2a_delta(s, block, "input_json_delta", "partial_json", args) < 0)
            return -1;
        pos++;
    }
    return 0;
}

static int o2a_choice(struct ap_conv_stream *s, const cJSON *choice)
{
    const cJSON *d = cJSON_GetObjectItemCaseSensitive(choice, "delta");
    const char *reasoning = ap_conv_str(d, "reasoning_content");
    const char *finish = ap_conv_str(choice, "finish_reason");

    if (reasoning == NULL)
        reasoning = ap_conv_str(d, "reasoning");
    if (o2a_thinking(s, reasoning, ap_conv_str(d, "reasoning_signature")) < 0 ||
        o2a_text(s, ap_conv_str(d, "content")) < 0 || o2a_text(s, ap_conv_str(d, "refusal")) < 0 ||
        o2a_tool_calls(s, cJSON_GetObjectItemCaseSensitive(d, "tool_calls")) < 0)
        return -1;
    if (finish == NULL)
        return 0;
    s->stop_reason = ap_conv_stop_o2a(finish, s->ntools > 0);
    return o2a_close(s);
}

static int o2a_stop(struct ap_conv_stream *s)
{
    if (o2a_start(s, NULL) < 0 || o2a_close(s) < 0)
        return -1;
    s->done = 1;
    s->finished = 1;
    cJSON *ev = o2a_event("message_delta");
    cJSON *d = cJSON_AddObjectToObject(ev, "delta");
    cJSON_AddStringToObject(d, "stop_reason",
                            s->stop_reason ? s->stop_reason : ap_conv_stop_o2a(NULL, s->ntools > 0));
    cJSON_AddNullToObject(d, "stop_sequence");
    cJSON_AddItemToObject(ev, "usage", ap_conv_usage_anthropic(&s->usage));
    if (ap_conv_stream_emit(s, "message_delta", ev) < 0)
        return -1;
    return ap_conv_stream_emit(s, "message_stop", o2a_event("message_stop"));
}

static int o2a_fail(struct ap_conv_stream *s, const char *type, const char *message)
{
    s->finished = 1;
    return ap_conv_stream_emit(s, "error", ap_conv_error_anthropic(type, message));
}

static int o2a_chunk(struct ap_conv_stream *s, const cJSON *chunk)
{
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(chunk, "error");

    if (e != NULL && !cJSON_IsNull(e)) {
        const char *msg = cJSON_IsString(e) ? e->valuestring : ap_conv_str(e, "message");
        s->failed = 1;
        snprintf(s->error, sizeof(s->error), "%s: %s", ap_conv_error_type_o2a(e), msg ? msg : "upstream error");
        return o2a_fail(s, ap_conv_error_type_o2a(e), msg ? msg : "upstream error");
    }
    /* Before message_start, so that it carries the input tokens when they come early. */
    ap_usage_merge_openai(&s->usage, cJSON_GetObjectItemCaseSensitive(chunk, "usage"));
    if (o2a_start(s, chunk) < 0)
        return -1;
    const cJSON *choices = cJSON_GetObjectItemCaseSensitive(chunk, "choices");
    const cJSON *choice = cJSON_IsArray(choices) ? choices->child : NULL;
    return choice != NULL ? o2a_choice(s, choice) : 0;
}

int ap_conv_o2a_event(struct ap_conv_stream *s, const char *data, size_t len)
{
    if (len == 6 && memcmp(data, "[DONE]", 6) == 0)
        return o2a_stop(s);
    cJSON *chunk = ap_json_parse_keep(data, len);
    if (!cJSON_IsObject(chunk)) {
        cJSON_Delete(chunk);
        return -1;
    }
    int rc = o2a_chunk(s, chunk);
    cJSON_Delete(chunk);
    return rc;
}

int ap_conv_o2a_end(struct ap_conv_stream *s, const char *failure)
{
    /* A clean close right after finish_reason: some servers never send [DONE]. */
    if (failure == NULL && s->stop_reason != NULL)
        return o2a_stop(s);
    return o2a_fail(s, "api_error", failure ? failure : "upstream stream ended before [DONE]");
}
