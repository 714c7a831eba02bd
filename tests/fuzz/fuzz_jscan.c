/*
 * The body scan against cJSON as the oracle (a differential fuzz target).
 *
 *   - scan accepts (or refuses only for a duplicate or a U+0000 name)
 *       => cJSON parses the same bytes to the end;
 *   - scan accepts => no object of cJSON's tree names a member twice, and the
 *       captured members (model, stream, stream_options.include_usage, content, choices, usage,
 *       max_tokens, max_completion_tokens) are cJSON's;
 *   - scan says duplicate => cJSON's tree has a duplicated name;
 *   - cJSON accepts anything => what cJSON prints (RFC 8259 JSON) is never
 *       "invalid" to the scan (the scan is stricter than cJSON only where
 *       cJSON is lax: control bytes, byte order marks, odd numbers).
 */
#include "ap_jscan.h"

#include <cJSON.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static enum ap_jtype fz_type(const cJSON *v)
{
    if (v == NULL)
        return AP_J_ABSENT;
    if (cJSON_IsNull(v))
        return AP_J_NULL;
    if (cJSON_IsFalse(v))
        return AP_J_FALSE;
    if (cJSON_IsTrue(v))
        return AP_J_TRUE;
    if (cJSON_IsNumber(v))
        return AP_J_NUMBER;
    if (cJSON_IsString(v))
        return AP_J_STRING;
    if (cJSON_IsArray(v))
        return AP_J_ARRAY;
    return AP_J_OBJECT;
}

/* 1 when some object of the tree names a member twice (names as cJSON decoded them). */
static int fz_has_dup(const cJSON *v)
{
    for (const cJSON *c = v ? v->child : NULL; c != NULL; c = c->next) {
        if (cJSON_IsObject(v))
            for (const cJSON *d = c->next; d != NULL; d = d->next)
                if (strcmp(c->string, d->string) == 0)
                    return 1;
        if (fz_has_dup(c))
            return 1;
    }
    return 0;
}

static void fz_check_num(const struct ap_jnum *n, const cJSON *v)
{
    if (n->type != fz_type(v))
        abort();
    if (n->type != AP_J_NUMBER)
        return;
    double d = v->valuedouble;
    int in = d >= 1 && d <= (double)AP_JSCAN_INT_MAX && d == floor(d);
    if (n->in_range != in || (in && n->value != (long)d))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *buf = (const char *)data, *end = NULL;
    struct ap_jscan js;
    int rc = ap_jscan(buf, size, &js);
    cJSON *j = cJSON_ParseWithLengthOpts(buf, size, &end, 0);
    int cj_ok = j != NULL;
    while (cj_ok && end < buf + size && (*end == ' ' || *end == '\t' || *end == '\n' || *end == '\r'))
        end++;
    cj_ok = cj_ok && end == buf + size;

    if (rc != AP_JSCAN_INVALID && !cj_ok)
        abort(); /* the scan let through what the tree parse refuses */
    if (rc == AP_JSCAN_OK) {
        if (fz_has_dup(j))
            abort();
        if (js.root != fz_type(j))
            abort();
        const cJSON *model = cJSON_GetObjectItemCaseSensitive(j, "model");
        const cJSON *opts = cJSON_GetObjectItemCaseSensitive(j, "stream_options");
        if (cJSON_IsObject(j)) {
            if (js.model != fz_type(model) || js.stream != fz_type(cJSON_GetObjectItemCaseSensitive(j, "stream")) ||
                js.stream_options != fz_type(opts))
                abort();
            if (js.include_usage !=
                (cJSON_IsObject(opts) ? fz_type(cJSON_GetObjectItemCaseSensitive(opts, "include_usage")) : AP_J_ABSENT))
                abort();
            const cJSON *usage = cJSON_GetObjectItemCaseSensitive(j, "usage");
            if (js.content != fz_type(cJSON_GetObjectItemCaseSensitive(j, "content")) ||
                js.choices != fz_type(cJSON_GetObjectItemCaseSensitive(j, "choices")) || js.usage != fz_type(usage))
                abort();
            if (usage != NULL) { /* the raw span parses alone into the same value */
                cJSON *alone = cJSON_ParseWithLength(js.usage_raw, js.usage_len);
                if (alone == NULL || !cJSON_Compare(alone, usage, 1))
                    abort();
                cJSON_Delete(alone);
            }
            fz_check_num(&js.max_tokens, cJSON_GetObjectItemCaseSensitive(j, "max_tokens"));
            fz_check_num(&js.max_completion_tokens, cJSON_GetObjectItemCaseSensitive(j, "max_completion_tokens"));
            if (cJSON_IsString(model) && !js.model_nul &&
                (js.model_str_len != strlen(model->valuestring) ||
                 (js.model_str_len < AP_JSCAN_MODEL_MAX && strcmp(js.model_str, model->valuestring) != 0)))
                abort();
        } else if (js.model != AP_J_ABSENT || js.stream != AP_J_ABSENT) {
            abort();
        }
    } else if (rc == AP_JSCAN_DUPLICATE && !fz_has_dup(j)) {
        abort();
    }
    if (j != NULL) {
        char *printed = cJSON_PrintUnformatted(j);
        if (printed != NULL && ap_jscan(printed, strlen(printed), &js) == AP_JSCAN_INVALID)
            abort();
        cJSON_free(printed);
    }
    cJSON_Delete(j);
    return 0;
}
