/*
 * Stream, Anthropic upstream -> OpenAI client: Messages events become
 * chat.completion.chunk objects, all with the same id, created and model.
 *
 *   message_start                  -> delta {role:"assistant",content:""}
 *   content_block_start text       -> delta {content} (only if it starts with text)
 *   content_block_start thinking   -> delta {reasoning_content} (same)
 *   content_block_start tool_use   -> delta {tool_calls:[{index:i,id,type:"function",
 *                                              function:{name,arguments:""}}]}, i = 0,1,...
 *   content_block_delta text_delta      -> delta {content}
 *                       thinking_delta  -> delta {reasoning_content}
 *                       signature_delta -> delta {reasoning_signature} (non-standard)
 *                       input_json_delta-> delta {tool_calls:[{index:i,function:{arguments}}]}
 *   message_delta stop_reason      -> delta {} with finish_reason
 *   message_stop                   -> [chunk choices:[] with usage] data: [DONE]
 *   error                          -> data: {"error":{message,type,code:null}} data: [DONE]
 *   ping, content_block_stop, redacted_thinking and server tool blocks -> nothing
 */
#include "ap_conv_int.h"
#include "ap_json.h"

#include <stdlib.h>
#include <stdio.h>
#include <string.h>

/* A message with more content blocks than this is not one we should trust. */
#define AP_CONV_MAX_BLOCKS 4096

static cJSON *a2o_chunk(struct ap_conv_stream *s, cJSON *delta, const char *finish)
{
    cJSON *c = cJSON_CreateObject();
    cJSON_AddStringToObject(c, "id", s->id);
    cJSON_AddStringToObject(c, "object", "chat.completion.chunk");
    cJSON_AddNumberToObject(c, "created", (double)s->created);
    cJSON_AddStringToObject(c, "model", ap_conv_stream_model(s));
    cJSON *choices = cJSON_AddArrayToObject(c, "choices");
    if (delta == NULL)
        return c; /* the usage chunk */
    cJSON *ch = cJSON_CreateObject();
    cJSON_AddItemToArray(choices, ch);
    cJSON_AddNumberToObject(ch, "index", 0);
    cJSON_AddItemToObject(ch, "delta", delta);
    cJSON_AddNullToObject(ch, "logprobs");
    if (finish != NULL)
        cJSON_AddStringToObject(ch, "finish_reason", finish);
    else
        cJSON_AddNullToObject(ch, "finish_reason");
    return c;
}

static int a2o_start(struct ap_conv_stream *s, const cJSON *msg)
{
    const char *model = ap_conv_str(msg, "model");

    if (s->started)
        return 0;
    s->id = ap_conv_id(ap_conv_str(msg, "id"), "chatcmpl-");
    if (s->id == NULL || (model != NULL && (s->up_model = strdup(model)) == NULL))
        return -1;
    s->started = 1;
    cJSON *d = cJSON_CreateObject();
    cJSON_AddStringToObject(d, "role", "assistant");
    cJSON_AddStringToObject(d, "content", "");
    return ap_conv_stream_emit(s, NULL, a2o_chunk(s, d, NULL));
}

/* A delta with one string field; empty pieces are not worth a chunk. */
static int a2o_field(struct ap_conv_stream *s, const char *field, const char *value, int content)
{
    if (value == NULL || value[0] == '\0')
        return 0;
    if (a2o_start(s, NULL) < 0)
        return -1;
    cJSON *d = cJSON_CreateObject();
    cJSON_AddStringToObject(d, field, value);
    if (content)
        s->content_started = 1;
    return ap_conv_stream_emit(s, NULL, a2o_chunk(s, d, NULL));
}

/* A tool_calls delta: the opening one (with id and name) or an arguments piece. */
static int a2o_tool(struct ap_conv_stream *s, int tool, const char *id, const char *name,
                    const char *args)
{
    if (a2o_start(s, NULL) < 0)
        return -1;
    cJSON *d = cJSON_CreateObject();
    cJSON *tc = cJSON_CreateObject();
    cJSON_AddItemToArray(cJSON_AddArrayToObject(d, "tool_calls"), tc);
    cJSON_AddNumberToObject(tc, "index", tool);
    if (id != NULL) {
        cJSON_AddStringToObject(tc, "id", id);
        cJSON_AddStringToObject(tc, "type", "function");
    }
    cJSON *fn = cJSON_AddObjectToObject(tc, "function");
    if (name != NULL)
        cJSON_AddStringToObject(fn, "name", name);
    cJSON_AddStringToObject(fn, "arguments", args);
    s->content_started = 1;
    return ap_conv_stream_emit(s, NULL, a2o_chunk(s, d, NULL));
}

static int a2o_index(const cJSON *ev)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(ev, "index");
    return cJSON_IsNumber(v) && v->valuedouble >= 0 && v->valuedouble < AP_CONV_MAX_BLOCKS
               ? (int)v->valuedouble
               : -1;
}

/* Records which OpenAI tool call (or -1: none) Anthropic block `index` is. */
static int a2o_set_block(struct ap_conv_stream *s, int index, int tool)
{
    if (index < 0)
        return -1;
    if (index >= s->nblocks) {
        int *n = realloc(s->tool_of_block, (size_t)(index + 1) * sizeof(*n));
        if (n == NULL)
            return -1;
        for (int i = s->nblocks; i <= index; i++)
            n[i] = -1;
        s->tool_of_block = n;
        s->nblocks = index + 1;
    }
    s->tool_of_block[index] = tool;
    return 0;
}

static int a2o_tool_start(struct ap_conv_stream *s, int index, const cJSON *b)
{
    const cJSON *input = cJSON_GetObjectItemCaseSensitive(b, "input");
    const char *id = ap_conv_str(b, "id");
    int tool = s->ntool_calls++;
    char *gen = id ? NULL : ap_conv_id(NULL, "call_");
    char *args = NULL;

    int rc = a2o_set_block(s, index, tool);
    if (rc == 0)
        rc = a2o_tool(s, tool, id ? id : gen ? gen : "", ap_conv_str(b, "name"), "");
    /* The input normally arrives in input_json_delta pieces; pass on any given up front. */
    if (rc == 0 && cJSON_IsObject(input) && input->child != NULL) {
        args = ap_json_print_keep(input);
        rc = args ? a2o_tool(s, tool, NULL, NULL, args) : -1;
    }
    free(gen);
    cJSON_free(args);
    return rc;
}

static int a2o_block_start(struct ap_conv_stream *s, const cJSON *ev)
{
    const cJSON *b = cJSON_GetObjectItemCaseSensitive(ev, "content_block");
    const char *type = ap_conv_str(b, "type");
    int index = a2o_index(ev);

    if (type != NULL && strcmp(type, "tool_use") == 0)
        return a2o_tool_start(s, index, b);
    if (a2o_set_block(s, index, -1) < 0)
        return -1;
    if (type != NULL && strcmp(type, "text") == 0)
        return a2o_field(s, "content", ap_conv_str(b, "text"), 1);
    if (type != NULL && strcmp(type, "thinking") == 0) {
        if (a2o_field(s, "reasoning_content", ap_conv_str(b, "thinking"), 1) < 0)
            return -1;
        return a2o_field(s, "reasoning_signature", ap_conv_str(b, "signature"), 0);
    }
    return 0;
}

static int a2o_block_delta(struct ap_conv_stream *s, const cJSON *ev)
{
    const cJSON *d = cJSON_GetObjectItemCaseSensitive(ev, "delta");
    const char *type = ap_conv_str(d, "type");
    int index = a2o_index(ev);

    if (type == NULL)
        return 0;
    if (strcmp(type, "text_delta") == 0)
        return a2o_field(s, "content", ap_conv_str(d, "text"), 1);
    if (strcmp(type, "thinking_delta") == 0)
        return a2o_field(s, "reasoning_content", ap_conv_str(d, "thinking"), 1);
    if (strcmp(type, "signature_delta") == 0)
        return a2o_field(s, "reasoning_signature", ap_conv_str(d, "signature"), 0);
    if (strcmp(type, "input_json_delta") == 0) {
        const char *piece = ap_conv_str(d, "partial_json");
        int tool = index >= 0 && index < s->nblocks ? s->tool_of_block[index] : -1;
        if (tool < 0 || piece == NULL || piece[0] == '\0')
            return 0;
        return a2o_tool(s, tool, NULL, NULL, piece);
    }
    return 0; /* citations_delta and future kinds */
}

static int a2o_finish(struct ap_conv_stream *s, const char *stop_reason)
{
    if (s->finish_sent)
        return 0;
    if (a2o_start(s, NULL) < 0)
        return -1;
    s->finish_sent = 1;
    return ap_conv_stream_emit(s, NULL,
                               a2o_chunk(s, cJSON_CreateObject(), ap_conv_stop_a2o(stop_reason)));
}

static int a2o_message_delta(struct ap_conv_stream *s, const cJSON *ev)
{
    const char *stop = ap_conv_str(cJSON_GetObjectItemCaseSensitive(ev, "delta"), "stop_reason");

    ap_usage_merge_anthropic(&s->usage, cJSON_GetObjectItemCaseSensitive(ev, "usage"));
    return stop != NULL ? a2o_finish(s, stop) : 0;
}

static int a2o_message_stop(struct ap_conv_stream *s)
{
    if (a2o_finish(s, NULL) < 0)
        return -1;
    if (s->client_wants_usage) {
        cJSON *c = a2o_chunk(s, NULL, NULL);
        cJSON_AddItemToObject(c, "usage", ap_conv_usage_openai(&s->usage));
        if (ap_conv_stream_emit(s, NULL, c) < 0)
            return -1;
    }
    s->done = 1;
    s->finished = 1;
    return ap_conv_stream_emit_text(s, NULL, "[DONE]");
}

static int a2o_fail(struct ap_conv_stream *s, const char *type, const char *message)
{
    s->finished = 1;
    if (ap_conv_stream_emit(s, NULL, ap_conv_error_openai(type, message)) < 0)
        return -1;
    return ap_conv_stream_emit_text(s, NULL, "[DONE]");
}

static int a2o_error(struct ap_conv_stream *s, const cJSON *ev)
{
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(ev, "error");
    const char *type = ap_conv_str(e, "type");
    const char *msg = ap_conv_str(e, "message");

    s->failed = 1;
    snprintf(s->error, sizeof(s->error), "%s: %s", type ? type : "api_error", msg ? msg : "upstream error");
    return a2o_fail(s, type ? type : "api_error", msg ? msg : "upstream error");
}

static int a2o_dispatch(struct ap_conv_stream *s, const char *type, const cJSON *ev)
{
    if (strcmp(type, "message_start") == 0) {
        const cJSON *msg = cJSON_GetObjectItemCaseSensitive(ev, "message");
        ap_usage_merge_anthropic(&s->usage, cJSON_GetObjectItemCaseSensitive(msg, "usage"));
        return a2o_start(s, msg);
    }
    if (strcmp(type, "content_block_start") == 0)
        return a2o_block_start(s, ev);
    if (strcmp(type, "content_block_delta") == 0)
        return a2o_block_delta(s, ev);
    if (strcmp(type, "message_delta") == 0)
        return a2o_message_delta(s, ev);
    if (strcmp(type, "message_stop") == 0)
        return a2o_message_stop(s);
    if (strcmp(type, "error") == 0)
        return a2o_error(s, ev);
    return 0; /* content_block_stop, ping, future events */
}

int ap_conv_a2o_event(struct ap_conv_stream *s, const char *event, const char *data, size_t len)
{
    if (strcmp(event, "ping") == 0)
        return 0;
    cJSON *ev = ap_json_parse_keep(data, len);
    if (!cJSON_IsObject(ev)) {
        cJSON_Delete(ev);
        return -1;
    }
    /* The data's own type is authoritative; the event name is a fallback for sloppy servers. */
    const char *type = ap_conv_str(ev, "type");
    int rc = a2o_dispatch(s, type ? type : event, ev);
    cJSON_Delete(ev);
    return rc;
}

int ap_conv_a2o_end(struct ap_conv_stream *s, const char *failure)
{
    return a2o_fail(s, "api_error", failure ? failure : "upstream stream ended before message_stop");
}
