/*
 * Complete (non-stream) response bodies and error bodies, both ways: what the
 * tier answered, rewritten in the client's format. The assistant turn itself
 * is converted by ap_conv_msg.c, shared with the request history.
 */
#include "ap_conv_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Longest upstream error text passed on when it is not JSON (an HTML page, say). */
#define AP_CONV_ERROR_TEXT_MAX 1024

static void resp_model(cJSON *out, const cJSON *in, const char *model)
{
    const char *m = model ? model : ap_conv_str(in, "model");
    cJSON_AddStringToObject(out, "model", m ? m : "");
}

static int resp_id(cJSON *out, const cJSON *in, const char *prefix)
{
    char *id = ap_conv_id(ap_conv_str(in, "id"), prefix);
    if (id == NULL)
        return -1;
    cJSON_AddStringToObject(out, "id", id);
    free(id);
    return 0;
}

cJSON *ap_conv_resp_o2a(const cJSON *resp, const char *model)
{
    const cJSON *choice = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(resp, "choices"), 0);
    const cJSON *msg = cJSON_GetObjectItemCaseSensitive(choice, "message");
    const char *err = NULL;
    struct ap_usage u = {0};

    if (!cJSON_IsObject(resp))
        return NULL;
    cJSON *content = ap_conv_assistant_o2a(msg, 0, &err);
    if (content == NULL)
        return NULL;
    const cJSON *tcs = cJSON_GetObjectItemCaseSensitive(msg, "tool_calls");
    int tools = cJSON_IsArray(tcs) && tcs->child != NULL;
    ap_usage_merge_openai(&u, cJSON_GetObjectItemCaseSensitive(resp, "usage"));

    cJSON *out = cJSON_CreateObject();
    if (resp_id(out, resp, "msg_") < 0) {
        cJSON_Delete(content);
        cJSON_Delete(out);
        return NULL;
    }
    cJSON_AddStringToObject(out, "type", "message");
    cJSON_AddStringToObject(out, "role", "assistant");
    resp_model(out, resp, model);
    cJSON_AddItemToObject(out, "content", content);
    cJSON_AddStringToObject(out, "stop_reason",
                            ap_conv_stop_o2a(ap_conv_str(choice, "finish_reason"), tools));
    cJSON_AddNullToObject(out, "stop_sequence");
    cJSON_AddItemToObject(out, "usage", ap_conv_usage_anthropic(&u));
    return out;
}

cJSON *ap_conv_resp_a2o(const cJSON *resp, const char *model)
{
    const char *err = NULL;
    struct ap_usage u = {0};

    if (!cJSON_IsObject(resp))
        return NULL;
    cJSON *msg = ap_conv_assistant_a2o(cJSON_GetObjectItemCaseSensitive(resp, "content"), &err);
    if (msg == NULL)
        return NULL;
    ap_usage_merge_anthropic(&u, cJSON_GetObjectItemCaseSensitive(resp, "usage"));

    cJSON *out = cJSON_CreateObject();
    if (resp_id(out, resp, "chatcmpl-") < 0) {
        cJSON_Delete(msg);
        cJSON_Delete(out);
        return NULL;
    }
    cJSON_AddStringToObject(out, "object", "chat.completion");
    cJSON_AddNumberToObject(out, "created", (double)time(NULL));
    resp_model(out, resp, model);
    cJSON *choice = cJSON_CreateObject();
    cJSON_AddItemToArray(cJSON_AddArrayToObject(out, "choices"), choice);
    cJSON_AddNumberToObject(choice, "index", 0);
    cJSON_AddItemToObject(choice, "message", msg);
    cJSON_AddNullToObject(choice, "logprobs");
    cJSON_AddStringToObject(choice, "finish_reason",
                            ap_conv_stop_a2o(ap_conv_str(resp, "stop_reason")));
    cJSON_AddItemToObject(out, "usage", ap_conv_usage_openai(&u));
    return out;
}

/* The message an error body carries, in the places either format (or a framework) puts it. */
static char *error_json_message(const char *body, size_t len)
{
    cJSON *root = cJSON_ParseWithLength(body, len);
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(root, "error");
    const char *m = ap_conv_str(e, "message");
    char *dup = NULL;

    if (m == NULL)
        m = cJSON_IsString(e) ? e->valuestring : NULL;
    if (m == NULL)
        m = ap_conv_str(root, "message");
    if (m == NULL)
        m = ap_conv_str(root, "detail");
    if (m != NULL && m[0] != '\0')
        dup = strdup(m);
    cJSON_Delete(root);
    return dup;
}

/* The body itself, trimmed and cut (at a UTF-8 character boundary) to a sane length. */
static char *error_text(const char *body, size_t len)
{
    while (len > 0 && strchr(" \t\r\n", body[0]) != NULL && body[0] != '\0') {
        body++;
        len--;
    }
    while (len > 0 && strchr(" \t\r\n", body[len - 1]) != NULL && body[len - 1] != '\0')
        len--;
    if (len > AP_CONV_ERROR_TEXT_MAX) {
        len = AP_CONV_ERROR_TEXT_MAX;
        while (len > 0 && ((unsigned char)body[len] & 0xC0) == 0x80)
            len--;
    }
    return len > 0 ? strndup(body, len) : NULL;
}

cJSON *ap_conv_error(enum ap_fmt to, int status, const char *body, size_t len)
{
    const char *type = ap_conv_error_type(status);
    char *msg = NULL;
    char fallback[64];

    if (body != NULL && len > 0) {
        msg = error_json_message(body, len);
        if (msg == NULL)
            msg = error_text(body, len);
    }
    if (msg == NULL)
        snprintf(fallback, sizeof(fallback), "upstream error (HTTP %d)", status);
    const char *m = msg ? msg : fallback;
    cJSON *out = to == AP_FMT_ANTHROPIC ? ap_conv_error_anthropic(type, m)
                                        : ap_conv_error_openai(type, m);
    free(msg);
    return out;
}
