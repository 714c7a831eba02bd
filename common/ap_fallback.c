/* Tier chain parsing; see ap_fallback.h. */
#include "ap_fallback.h"

#include "ap_file.h"

#include <cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *ap_tier_type_name(enum ap_tier_type t)
{
    switch (t) {
    case AP_TIER_ANTIGRAVITY: return "antigravity";
    case AP_TIER_UPSTREAM: return "upstream";
    case AP_TIER_EXTERNAL: return "external";
    }
    return "?";
}

struct ap_fallback *ap_fallback_ref(struct ap_fallback *f)
{
    if (f != NULL)
        f->refs++;
    return f;
}

void ap_fallback_free(struct ap_fallback *f)
{
    if (f == NULL || --f->refs > 0)
        return;
    for (size_t i = 0; i < f->ntiers; i++) {
        struct ap_tier *t = &f->tiers[i];
        free(t->name);
        free(t->model);
        free(t->health_key);
        free(t->base_url);
        free(t->api_key);
    }
    free(f->tiers);
    free(f);
}

/* Reads an optional number field; -1 if present but not a number in [min, max]. */
static int fb_number(const cJSON *root, const char *name, double min, double max, double *out,
                     char *err, size_t errlen)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, name);
    if (v == NULL || cJSON_IsNull(v))
        return 0;
    if (!cJSON_IsNumber(v) || v->valuedouble < min || v->valuedouble > max) {
        snprintf(err, errlen, "\"%s\" must be a number in [%g, %g]", name, min, max);
        return -1;
    }
    *out = v->valuedouble;
    return 0;
}

static char *fb_str(const cJSON *obj, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);
    return (cJSON_IsString(v) && v->valuestring[0] != '\0') ? strdup(v->valuestring) : NULL;
}

static int fb_tier(const cJSON *j, size_t i, struct ap_tier *t, char *err, size_t errlen)
{
    if (!cJSON_IsObject(j)) {
        snprintf(err, errlen, "tiers[%zu] is not an object", i);
        return -1;
    }
    t->name = fb_str(j, "name");
    t->model = fb_str(j, "model");
    char *type = fb_str(j, "type");
    if (t->model == NULL || type == NULL) {
        free(type);
        snprintf(err, errlen, "tiers[%zu] needs \"model\" and \"type\"", i);
        return -1;
    }
    if (t->name == NULL)
        t->name = strdup(t->model);
    if (strcmp(type, "antigravity") == 0)
        t->type = AP_TIER_ANTIGRAVITY;
    else if (strcmp(type, "upstream") == 0)
        t->type = AP_TIER_UPSTREAM;
    else if (strcmp(type, "external") == 0 || strcmp(type, "openai") == 0)
        t->type = AP_TIER_EXTERNAL;
    else {
        snprintf(err, errlen, "tiers[%zu]: unknown type \"%s\" (antigravity, upstream or external)", i, type);
        free(type);
        return -1;
    }
    free(type);
    t->health_key = fb_str(j, "health_key");
    if (t->health_key == NULL)
        t->health_key = strdup(t->model);
    if (t->type != AP_TIER_EXTERNAL)
        return 0;

    t->base_url = fb_str(j, "base_url");
    if (t->base_url == NULL) {
        snprintf(err, errlen, "tiers[%zu]: an external tier needs \"base_url\"", i);
        return -1;
    }
    size_t bl = strlen(t->base_url);
    while (bl > 0 && t->base_url[bl - 1] == '/')
        t->base_url[--bl] = '\0';
    t->api_key = fb_str(j, "api_key");
    char *env = fb_str(j, "api_key_env");
    if (t->api_key == NULL && env != NULL) {
        const char *v = getenv(env);
        if (v == NULL || v[0] == '\0') {
            snprintf(err, errlen, "tiers[%zu]: api_key_env names %s, which is not set", i, env);
            free(env);
            return -1;
        }
        t->api_key = strdup(v);
    }
    free(env);
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(j, "max_tokens_limit");
    if (mt != NULL && !cJSON_IsNull(mt)) {
        if (!cJSON_IsNumber(mt) || mt->valuedouble < 1 || mt->valuedouble > 1e9 ||
            mt->valuedouble != (double)(long)mt->valuedouble) {
            snprintf(err, errlen, "tiers[%zu]: max_tokens_limit must be a positive integer", i);
            return -1;
        }
        t->max_tokens_limit = (long)mt->valuedouble;
    }
    return 0;
}

struct ap_fallback *ap_fallback_parse(const char *json, size_t len, char *err, size_t errlen)
{
    cJSON *root = cJSON_ParseWithLength(json, len);
    if (!cJSON_IsObject(root)) {
        snprintf(err, errlen, "not a JSON object");
        cJSON_Delete(root);
        return NULL;
    }
    struct ap_fallback *f = calloc(1, sizeof(*f));
    if (f == NULL)
        goto fail;
    f->refs = 1;
    f->poll_interval = 30;
    f->min_remaining = 0.05;
    f->cooldown = 60;
    const cJSON *en = cJSON_GetObjectItemCaseSensitive(root, "enabled");
    f->enabled = en == NULL || cJSON_IsTrue(en);
    if (en != NULL && !cJSON_IsBool(en)) {
        snprintf(err, errlen, "\"enabled\" must be true or false");
        goto fail;
    }
    if (fb_number(root, "health_poll_interval_seconds", 0.05, 86400, &f->poll_interval, err, errlen) < 0 ||
        fb_number(root, "min_remaining_fraction", 0, 1, &f->min_remaining, err, errlen) < 0 ||
        fb_number(root, "reactive_cooldown_seconds", 0, 86400, &f->cooldown, err, errlen) < 0 ||
        fb_number(root, "recovery_margin", 0, 1, &f->recovery_margin, err, errlen) < 0)
        goto fail;
    const cJSON *tiers = cJSON_GetObjectItemCaseSensitive(root, "tiers");
    if (tiers != NULL && !cJSON_IsArray(tiers)) {
        snprintf(err, errlen, "\"tiers\" must be an array");
        goto fail;
    }
    size_t n = (size_t)cJSON_GetArraySize(tiers);
    f->tiers = calloc(n ? n : 1, sizeof(*f->tiers));
    if (f->tiers == NULL)
        goto fail;
    for (size_t i = 0; i < n; i++) {
        f->ntiers = i + 1;
        if (fb_tier(cJSON_GetArrayItem(tiers, (int)i), i, &f->tiers[i], err, errlen) < 0)
            goto fail;
        for (size_t j = 0; j < i; j++)
            if (strcmp(f->tiers[j].model, f->tiers[i].model) == 0) {
                snprintf(err, errlen, "tiers[%zu]: model \"%s\" appears twice", i, f->tiers[i].model);
                goto fail;
            }
    }
    cJSON_Delete(root);
    return f;
fail:
    cJSON_Delete(root);
    ap_fallback_free(f);
    return NULL;
}

struct ap_fallback *ap_fallback_load(const char *path, char *err, size_t errlen)
{
    char *buf;
    size_t len;
    if (ap_file_read(path, &buf, &len) < 0) {
        snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
        return NULL;
    }
    char sub[400];
    struct ap_fallback *f = ap_fallback_parse(buf, len, sub, sizeof(sub));
    free(buf);
    if (f == NULL)
        snprintf(err, errlen, "%s: %s", path, sub);
    return f;
}

const struct ap_tier *ap_fallback_find(const struct ap_fallback *f, const char *model)
{
    for (size_t i = 0; f != NULL && model != NULL && i < f->ntiers; i++)
        if (strcmp(f->tiers[i].model, model) == 0)
            return &f->tiers[i];
    return NULL;
}
