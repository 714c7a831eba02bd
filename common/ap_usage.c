/* Usage extraction; see ap_usage.h. */
#include "ap_usage.h"

#include <cJSON.h>
#include <string.h>

/* Token counts past this are nonsense (and would overflow the cast). */
#define USAGE_MAX 1e15

static void usage_take(int64_t *dst, const cJSON *obj, const char *name, unsigned *seen)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);
    if (cJSON_IsNumber(v) && v->valuedouble >= 0 && v->valuedouble < USAGE_MAX) {
        *dst = (int64_t)v->valuedouble;
        *seen = 1;
    }
}

void ap_usage_merge_anthropic(struct ap_usage *u, const cJSON *usage)
{
    unsigned seen = 0;
    if (!cJSON_IsObject(usage))
        return;
    usage_take(&u->input, usage, "input_tokens", &seen);
    usage_take(&u->output, usage, "output_tokens", &seen);
    usage_take(&u->cache_creation, usage, "cache_creation_input_tokens", &seen);
    usage_take(&u->cache_read, usage, "cache_read_input_tokens", &seen);
    if (seen)
        u->seen = 1;
}

void ap_usage_merge_openai(struct ap_usage *u, const cJSON *usage)
{
    unsigned seen = 0;
    int64_t prompt = -1;
    if (!cJSON_IsObject(usage))
        return;
    usage_take(&prompt, usage, "prompt_tokens", &seen);
    usage_take(&u->output, usage, "completion_tokens", &seen);
    const cJSON *det = cJSON_GetObjectItemCaseSensitive(usage, "prompt_tokens_details");
    if (cJSON_IsObject(det))
        usage_take(&u->cache_read, det, "cached_tokens", &seen);
    /* prompt_tokens includes the cached ones, whichever report told us about them. */
    if (prompt >= 0)
        u->input = prompt >= u->cache_read ? prompt - u->cache_read : 0;
    if (seen)
        u->seen = 1;
}

int ap_usage_anthropic_event(struct ap_usage *u, const char *event, const char *data, size_t len)
{
    if (strcmp(event, "message_stop") == 0)
        return 1;
    if (strcmp(event, "message_start") != 0 && strcmp(event, "message_delta") != 0)
        return 0;
    cJSON *root = cJSON_ParseWithLength(data, len);
    if (root == NULL)
        return 0;
    const cJSON *usage = cJSON_GetObjectItemCaseSensitive(root, "usage");
    if (usage == NULL) {
        const cJSON *msg = cJSON_GetObjectItemCaseSensitive(root, "message");
        usage = cJSON_GetObjectItemCaseSensitive(msg, "usage");
    }
    ap_usage_merge_anthropic(u, usage);
    cJSON_Delete(root);
    return 0;
}

void ap_usage_anthropic_body(struct ap_usage *u, const char *body, size_t len)
{
    cJSON *root = cJSON_ParseWithLength(body, len);
    if (root == NULL)
        return;
    ap_usage_merge_anthropic(u, cJSON_GetObjectItemCaseSensitive(root, "usage"));
    cJSON_Delete(root);
}

void ap_usage_openai_body(struct ap_usage *u, const char *body, size_t len)
{
    cJSON *root = cJSON_ParseWithLength(body, len);
    if (root == NULL)
        return;
    ap_usage_merge_openai(u, cJSON_GetObjectItemCaseSensitive(root, "usage"));
    cJSON_Delete(root);
}
