/*
 * The small mappings every conversion needs: ids, stop reasons, usage and
 * error objects. Requests, responses and both stream directions use these so
 * that a rule lives in exactly one place (the table in ap_conv.h).
 */
#include "ap_conv_int.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

const char *ap_conv_str(const cJSON *obj, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

int ap_conv_text_add(struct ap_conv_text *t, const char *sep, const char *s)
{
    size_t sl = t->s ? strlen(sep) : 0, add = strlen(s);
    size_t need = t->len + sl + add + 1;
    if (need > t->cap) {
        size_t cap = t->cap * 2 > need ? t->cap * 2 : need;
        char *n = realloc(t->s, cap);
        if (n == NULL)
            return -1;
        t->s = n;
        t->cap = cap;
    }
    memcpy(t->s + t->len, sep, sl);
    memcpy(t->s + t->len + sl, s, add + 1);
    t->len += sl + add;
    return 0;
}

void ap_conv_text_free(struct ap_conv_text *t)
{
    free(t->s);
    memset(t, 0, sizeof(*t));
}

/*
 * Not a security token: it only has to make a message id unique enough for
 * logs and clients that key on it, so a mixed counter and clock will do.
 */
static void conv_random_suffix(char *dst, size_t n)
{
    static atomic_uint_fast64_t counter;
    uint64_t x = (uint64_t)time(NULL) ^ ((uint64_t)atomic_fetch_add(&counter, 1) << 32) ^
                 (uint64_t)(uintptr_t)dst;
    /* splitmix64 */
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    x ^= x >> 31;
    snprintf(dst, n, "%016llx", (unsigned long long)x);
}

char *ap_conv_id(const char *src, const char *prefix)
{
    static const char *const known[] = {"msg_", "chatcmpl-"};
    char gen[32];

    if (src == NULL || src[0] == '\0') {
        conv_random_suffix(gen, sizeof(gen));
        src = gen;
    }
    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++) {
        size_t kl = strlen(known[i]);
        if (strncmp(src, known[i], kl) == 0 && src[kl] != '\0') {
            src += kl;
            break;
        }
    }
    size_t n = strlen(prefix) + strlen(src) + 1;
    char *id = malloc(n);
    if (id != NULL)
        snprintf(id, n, "%s%s", prefix, src);
    return id;
}

const char *ap_conv_stop_o2a(const char *finish_reason, int made_tool_calls)
{
    const char *f = finish_reason ? finish_reason : "";
    if (strcmp(f, "length") == 0)
        return "max_tokens";
    if (strcmp(f, "content_filter") == 0)
        return "refusal";
    /* Some servers say "stop" after tool calls; the client must still run them. */
    if (made_tool_calls || strcmp(f, "tool_calls") == 0 || strcmp(f, "function_call") == 0)
        return "tool_use";
    return "end_turn";
}

const char *ap_conv_stop_a2o(const char *stop_reason)
{
    static const char *const map[][2] = {
        {"max_tokens", "length"},
        {"model_context_window_exceeded", "length"},
        {"tool_use", "tool_calls"},
        {"refusal", "content_filter"},
    };
    for (size_t i = 0; stop_reason != NULL && i < sizeof(map) / sizeof(map[0]); i++)
        if (strcmp(stop_reason, map[i][0]) == 0)
            return map[i][1];
    return "stop"; /* end_turn, stop_sequence, pause_turn, unknown */
}

cJSON *ap_conv_usage_openai(const struct ap_usage *u)
{
    int64_t prompt = u->input + u->cache_read + u->cache_creation;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "prompt_tokens", (double)prompt);
    cJSON_AddNumberToObject(o, "completion_tokens", (double)u->output);
    cJSON_AddNumberToObject(o, "total_tokens", (double)(prompt + u->output));
    cJSON *det = cJSON_AddObjectToObject(o, "prompt_tokens_details");
    cJSON_AddNumberToObject(det, "cached_tokens", (double)u->cache_read);
    return o;
}

cJSON *ap_conv_usage_anthropic(const struct ap_usage *u)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "input_tokens", (double)u->input);
    cJSON_AddNumberToObject(o, "cache_creation_input_tokens", (double)u->cache_creation);
    cJSON_AddNumberToObject(o, "cache_read_input_tokens", (double)u->cache_read);
    cJSON_AddNumberToObject(o, "output_tokens", (double)u->output);
    return o;
}

cJSON *ap_conv_error_anthropic(const char *type, const char *message)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "type", "error");
    cJSON *e = cJSON_AddObjectToObject(o, "error");
    cJSON_AddStringToObject(e, "type", type);
    cJSON_AddStringToObject(e, "message", message);
    return o;
}

cJSON *ap_conv_error_openai(const char *type, const char *message)
{
    cJSON *o = cJSON_CreateObject();
    cJSON *e = cJSON_AddObjectToObject(o, "error");
    cJSON_AddStringToObject(e, "message", message);
    cJSON_AddStringToObject(e, "type", type);
    cJSON_AddNullToObject(e, "code");
    return o;
}

const char *ap_conv_error_type(int status)
{
    static const struct { int status; const char *type; } map[] = {
        {400, "invalid_request_error"}, {401, "authentication_error"},
        {402, "billing_error"},         {403, "permission_error"},
        {404, "not_found_error"},       {413, "request_too_large"},
        {429, "rate_limit_error"},      {503, "overloaded_error"},
        {504, "timeout_error"},         {529, "overloaded_error"},
    };
    for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++)
        if (map[i].status == status)
            return map[i].type;
    return status >= 400 && status < 500 ? "invalid_request_error" : "api_error";
}

const char *ap_conv_error_type_o2a(const cJSON *error)
{
    static const char *const anthropic[] = {
        "invalid_request_error", "authentication_error", "billing_error", "permission_error",
        "not_found_error", "request_too_large", "rate_limit_error", "api_error",
        "timeout_error", "overloaded_error",
    };
    static const char *const openai[][2] = {
        {"server_error", "api_error"},
        {"rate_limit_exceeded", "rate_limit_error"},
        {"insufficient_quota", "rate_limit_error"},
        {"tokens", "rate_limit_error"},
        {"requests", "rate_limit_error"},
    };
    const cJSON *code = cJSON_GetObjectItemCaseSensitive(error, "code");
    const char *type = ap_conv_str(error, "type");

    /* OpenAI-compatible servers (OpenRouter, vLLM) put an HTTP status in `code`. */
    if (cJSON_IsNumber(code) && code->valuedouble >= 400 && code->valuedouble < 600)
        return ap_conv_error_type((int)code->valuedouble);
    if (type == NULL)
        type = ap_conv_str(error, "code");
    for (size_t i = 0; type != NULL && i < sizeof(anthropic) / sizeof(anthropic[0]); i++)
        if (strcmp(type, anthropic[i]) == 0)
            return anthropic[i];
    for (size_t i = 0; type != NULL && i < sizeof(openai) / sizeof(openai[0]); i++)
        if (strcmp(type, openai[i][0]) == 0)
            return openai[i][1];
    return "api_error";
}
