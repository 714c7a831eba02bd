/* Per-key policy; see ap_policy.h. */
#include "ap_policy.h"

#include "ap_prices.h"
#include "ap_time.h"

#include <cJSON.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define POLICY_MAX_COUNT 1000000000LL       /* rpm, max_concurrent */
#define POLICY_MAX_TOKENS 1000000000000000LL /* token limits */
#define POLICY_MAX_MODELS 256
#define POLICY_MODEL_MAX 128

/* The integer limits, in the order they are printed. */
static const struct {
    const char *name;
    size_t off;
    long long max;
} policy_ints[] = {
    {"rpm", offsetof(struct ap_policy, rpm), POLICY_MAX_COUNT},
    {"tpm", offsetof(struct ap_policy, tpm), POLICY_MAX_TOKENS},
    {"max_concurrent", offsetof(struct ap_policy, max_concurrent), POLICY_MAX_COUNT},
    {"daily_tokens", offsetof(struct ap_policy, daily_tokens), POLICY_MAX_TOKENS},
    {"monthly_tokens", offsetof(struct ap_policy, monthly_tokens), POLICY_MAX_TOKENS},
};

static const struct {
    const char *name;
    size_t off;
} policy_usd[] = {
    {"daily_usd", offsetof(struct ap_policy, daily_nano)},
    {"monthly_usd", offsetof(struct ap_policy, monthly_nano)},
};

#define POLICY_N(a) (sizeof(a) / sizeof((a)[0]))
#define POLICY_FIELD(p, off) ((int64_t *)((char *)(p) + (off)))

static struct ap_policy *policy_new(void)
{
    struct ap_policy *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return NULL;
    p->refs = 1;
    p->expires_at_ms = AP_POLICY_NONE;
    for (size_t i = 0; i < POLICY_N(policy_ints); i++)
        *POLICY_FIELD(p, policy_ints[i].off) = AP_POLICY_NONE;
    for (size_t i = 0; i < POLICY_N(policy_usd); i++)
        *POLICY_FIELD(p, policy_usd[i].off) = AP_POLICY_NONE;
    return p;
}

struct ap_policy *ap_policy_ref(struct ap_policy *p)
{
    if (p != NULL)
        p->refs++;
    return p;
}

void ap_policy_free(struct ap_policy *p)
{
    if (p == NULL || --p->refs > 0)
        return;
    for (size_t i = 0; i < p->nmodels; i++)
        free(p->models[i]);
    free(p->models);
    free(p);
}

static int policy_known(const char *name)
{
    if (strcmp(name, "models") == 0 || strcmp(name, "expires_at") == 0)
        return 1;
    for (size_t i = 0; i < POLICY_N(policy_ints); i++)
        if (strcmp(name, policy_ints[i].name) == 0)
            return 1;
    for (size_t i = 0; i < POLICY_N(policy_usd); i++)
        if (strcmp(name, policy_usd[i].name) == 0)
            return 1;
    return 0;
}

static int policy_models(struct ap_policy *p, const cJSON *v, char *err, size_t errlen)
{
    int n = cJSON_GetArraySize(v);
    if (!cJSON_IsArray(v) || n == 0 || n > POLICY_MAX_MODELS) {
        snprintf(err, errlen, "models: must be a list of 1 to %d model names (exact, or a prefix ending in *); "
                 "leave it out to allow every model", POLICY_MAX_MODELS);
        return -1;
    }
    p->models = calloc((size_t)n, sizeof(char *));
    if (p->models == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    const cJSON *m;
    cJSON_ArrayForEach(m, v) {
        const char *s = cJSON_IsString(m) ? m->valuestring : NULL;
        size_t len = s ? strlen(s) : 0;
        const char *star = s ? strchr(s, '*') : NULL;
        int ctl = 0;
        for (size_t i = 0; i < len; i++)
            ctl |= (unsigned char)s[i] < 0x20;
        if (s == NULL || len == 0 || len >= POLICY_MODEL_MAX || ctl || (star != NULL && star != s + len - 1) ||
            strcmp(s, "*") == 0) {
            snprintf(err, errlen, "models[%zu]: must be a model name (under %d characters) or a prefix ending in "
                     "a single *", p->nmodels, POLICY_MODEL_MAX);
            return -1;
        }
        if ((p->models[p->nmodels] = strdup(s)) == NULL) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        p->nmodels++;
    }
    return 0;
}

/* An integer JSON number in [0, max]. */
static int policy_int(const cJSON *v, long long max, int64_t *out)
{
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || v->valuedouble < 0 || v->valuedouble > (double)max ||
        v->valuedouble != floor(v->valuedouble))
        return -1;
    *out = (int64_t)v->valuedouble;
    return 0;
}

struct ap_policy *ap_policy_parse(const cJSON *obj, char *err, size_t errlen)
{
    struct ap_policy *p = policy_new();
    const cJSON *v;
    if (p == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (obj == NULL || cJSON_IsNull(obj))
        return p;
    if (!cJSON_IsObject(obj)) {
        snprintf(err, errlen, "policy: must be a JSON object ({} clears it)");
        goto fail;
    }
    cJSON_ArrayForEach(v, obj) {
        if (!policy_known(v->string)) {
            snprintf(err, errlen, "unknown policy field \"%.64s\" (models, expires_at, rpm, tpm, max_concurrent, "
                     "daily_tokens, monthly_tokens, daily_usd, monthly_usd)", v->string);
            goto fail;
        }
    }
    v = cJSON_GetObjectItemCaseSensitive(obj, "models");
    if (v != NULL && !cJSON_IsNull(v) && policy_models(p, v, err, errlen) < 0)
        goto fail;
    v = cJSON_GetObjectItemCaseSensitive(obj, "expires_at");
    if (v != NULL && !cJSON_IsNull(v)) {
        const char *s = cJSON_IsString(v) ? v->valuestring : "";
        size_t len = strlen(s);
        /* An instant: the offset (or Z) is required, a local time would mean a different moment per replica. */
        int zoned = len > 0 && (s[len - 1] == 'Z' || s[len - 1] == 'z' || (len >= 6 && s[len - 3] == ':' &&
                                                                          (s[len - 6] == '+' || s[len - 6] == '-')));
        if (!zoned || ap_time_parse_iso_ms(s, &p->expires_at_ms) < 0) {
            snprintf(err, errlen, "expires_at: must be an ISO 8601 instant with its offset, e.g. "
                     "\"2026-07-01T00:00:00Z\" or \"2026-07-01T08:00:00+08:00\"");
            goto fail;
        }
    }
    for (size_t i = 0; i < POLICY_N(policy_ints); i++) {
        v = cJSON_GetObjectItemCaseSensitive(obj, policy_ints[i].name);
        if (v != NULL && !cJSON_IsNull(v) && policy_int(v, policy_ints[i].max, POLICY_FIELD(p, policy_ints[i].off)) < 0) {
            snprintf(err, errlen, "%s: must be an integer from 0 to %lld (or null for no limit)", policy_ints[i].name,
                     policy_ints[i].max);
            goto fail;
        }
    }
    for (size_t i = 0; i < POLICY_N(policy_usd); i++) {
        v = cJSON_GetObjectItemCaseSensitive(obj, policy_usd[i].name);
        if (v != NULL && !cJSON_IsNull(v) &&
            (!cJSON_IsNumber(v) || ap_usd_to_nano(v->valuedouble, POLICY_FIELD(p, policy_usd[i].off)) < 0)) {
            snprintf(err, errlen, "%s: must be a number of USD from 0 to 1000000000 (or null for no limit)",
                     policy_usd[i].name);
            goto fail;
        }
    }
    return p;
fail:
    ap_policy_free(p);
    return NULL;
}

struct ap_policy *ap_policy_parse_text(const char *json, size_t len, char *err, size_t errlen)
{
    cJSON *j = cJSON_ParseWithLength(json, len);
    if (j == NULL) {
        snprintf(err, errlen, "policy: not valid JSON");
        return NULL;
    }
    struct ap_policy *p = ap_policy_parse(j, err, errlen);
    cJSON_Delete(j);
    return p;
}

int ap_policy_empty(const struct ap_policy *p)
{
    if (p == NULL)
        return 1;
    if (p->models != NULL || p->expires_at_ms != AP_POLICY_NONE)
        return 0;
    for (size_t i = 0; i < POLICY_N(policy_ints); i++)
        if (*POLICY_FIELD(p, policy_ints[i].off) != AP_POLICY_NONE)
            return 0;
    return !ap_policy_usd_budget(p);
}

cJSON *ap_policy_to_json(const struct ap_policy *p)
{
    cJSON *o = cJSON_CreateObject();
    if (o == NULL || p == NULL)
        return o;
    if (p->models != NULL) {
        cJSON *a = cJSON_AddArrayToObject(o, "models");
        for (size_t i = 0; i < p->nmodels; i++)
            cJSON_AddItemToArray(a, cJSON_CreateString(p->models[i]));
    }
    if (p->expires_at_ms != AP_POLICY_NONE) {
        char iso[40];
        ap_time_iso_ms_utc(p->expires_at_ms, iso, sizeof(iso));
        cJSON_AddStringToObject(o, "expires_at", iso);
    }
    for (size_t i = 0; i < POLICY_N(policy_ints); i++) {
        int64_t v = *POLICY_FIELD(p, policy_ints[i].off);
        if (v != AP_POLICY_NONE)
            cJSON_AddNumberToObject(o, policy_ints[i].name, (double)v);
    }
    for (size_t i = 0; i < POLICY_N(policy_usd); i++) {
        int64_t v = *POLICY_FIELD(p, policy_usd[i].off);
        char usd[32];
        if (v == AP_POLICY_NONE)
            continue;
        ap_usd_format(v, usd, sizeof(usd));
        cJSON_AddRawToObject(o, policy_usd[i].name, usd);
    }
    return o;
}

char *ap_policy_print(const struct ap_policy *p)
{
    cJSON *o = ap_policy_to_json(p);
    char *s = o ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    if (s == NULL)
        return NULL;
    /* cJSON allocates with malloc unless hooks say otherwise; copy so the owner frees with free(). */
    char *out = strdup(s);
    cJSON_free(s);
    return out;
}

int ap_policy_model_allowed(const struct ap_policy *p, const char *model)
{
    if (p == NULL || p->models == NULL)
        return 1;
    for (size_t i = 0; i < p->nmodels; i++) {
        const char *m = p->models[i];
        size_t len = strlen(m);
        if (m[len - 1] == '*' ? strncmp(m, model, len - 1) == 0 : strcmp(m, model) == 0)
            return 1;
    }
    return 0;
}

int ap_policy_expired(const struct ap_policy *p, int64_t now_ms)
{
    return p != NULL && p->expires_at_ms != AP_POLICY_NONE && now_ms >= p->expires_at_ms;
}

int ap_policy_token_budget(const struct ap_policy *p)
{
    return p != NULL && (p->daily_tokens != AP_POLICY_NONE || p->monthly_tokens != AP_POLICY_NONE);
}

int ap_policy_usd_budget(const struct ap_policy *p)
{
    return p != NULL && (p->daily_nano != AP_POLICY_NONE || p->monthly_nano != AP_POLICY_NONE);
}

int ap_policy_leased(const struct ap_policy *p)
{
    return p != NULL && (p->max_concurrent != AP_POLICY_NONE || ap_policy_token_budget(p) || ap_policy_usd_budget(p));
}

int ap_policy_counted(const struct ap_policy *p)
{
    return p != NULL && (p->rpm != AP_POLICY_NONE || p->tpm != AP_POLICY_NONE || ap_policy_leased(p));
}

int64_t ap_policy_estimate(size_t body_len, int64_t max_tokens, int64_t default_max)
{
    return (int64_t)((body_len + 3) / 4) + (max_tokens >= 0 ? max_tokens : default_max);
}

void ap_policy_refusal(enum ap_refusal r, int openai, struct ap_refusal_fmt *out)
{
    static const char *const reasons[AP_REFUSE_COUNT] = {
        "", "model", "expired", "unpriced", "rpm", "tpm", "concurrency", "daily_tokens", "monthly_tokens",
        "daily_usd", "monthly_usd", "unavailable",
    };
    out->reason = r < AP_REFUSE_COUNT ? reasons[r] : "";
    out->code = NULL;
    switch (r) {
    case AP_REFUSE_MODEL:
    case AP_REFUSE_EXPIRED:
    case AP_REFUSE_UNPRICED:
        out->status = 403;
        out->type = "permission_error";
        break;
    case AP_REFUSE_DAILY_TOKENS:
    case AP_REFUSE_MONTHLY_TOKENS:
    case AP_REFUSE_DAILY_USD:
    case AP_REFUSE_MONTHLY_USD:
        /* What each provider answers for a spent allowance. */
        out->status = 429;
        out->type = openai ? "insufficient_quota" : "rate_limit_error";
        out->code = openai ? "insufficient_quota" : NULL;
        break;
    case AP_REFUSE_UNAVAILABLE:
        out->status = 503;
        out->type = openai ? "server_error" : "overloaded_error";
        break;
    default:
        out->status = 429;
        out->type = "rate_limit_error";
        out->code = openai ? "rate_limit_exceeded" : NULL;
        break;
    }
}

int ap_policy_admit_reply(const long long *v, size_t n, struct ap_admit_result *out)
{
    static const enum ap_refusal codes[] = {
        AP_REFUSE_NONE, AP_REFUSE_RPM, AP_REFUSE_TPM, AP_REFUSE_CONCURRENCY, AP_REFUSE_DAILY_TOKENS,
        AP_REFUSE_MONTHLY_TOKENS, AP_REFUSE_DAILY_USD, AP_REFUSE_MONTHLY_USD,
    };
    if (n < 6 || v[0] < 0 || (size_t)v[0] >= POLICY_N(codes))
        return -1;
    out->refusal = codes[v[0]];
    out->retry_ms = v[1] > 0 ? v[1] : 0;
    out->rpm_remaining = v[2];
    out->tpm_remaining = v[3];
    out->used = v[4];
    out->reserved = v[5];
    return 0;
}

static int64_t policy_budget_limit(const struct ap_policy *p, enum ap_refusal r)
{
    switch (r) {
    case AP_REFUSE_DAILY_TOKENS: return p->daily_tokens;
    case AP_REFUSE_MONTHLY_TOKENS: return p->monthly_tokens;
    case AP_REFUSE_DAILY_USD: return p->daily_nano;
    case AP_REFUSE_MONTHLY_USD: return p->monthly_nano;
    default: return AP_POLICY_NONE;
    }
}

long ap_policy_retry_after(const struct ap_policy *p, const struct ap_admit_result *res, int64_t need,
                           int64_t now_ms, long tz_offset)
{
    int64_t ms;
    switch (res->refusal) {
    case AP_REFUSE_RPM:
    case AP_REFUSE_TPM:
        ms = res->retry_ms > 0 ? res->retry_ms : 1000;
        break;
    case AP_REFUSE_DAILY_TOKENS:
    case AP_REFUSE_MONTHLY_TOKENS:
    case AP_REFUSE_DAILY_USD:
    case AP_REFUSE_MONTHLY_USD: {
        int daily = res->refusal == AP_REFUSE_DAILY_TOKENS || res->refusal == AP_REFUSE_DAILY_USD;
        /* Spent for good until the period ends, or only held by requests in flight. */
        if (res->used + need > policy_budget_limit(p, res->refusal))
            ms = (daily ? ap_time_next_day_ms(now_ms, tz_offset) : ap_time_next_month_ms(now_ms, tz_offset)) - now_ms;
        else
            ms = 1000;
        break;
    }
    default:
        ms = 1000;
        break;
    }
    return (long)((ms + 999) / 1000);
}

void ap_policy_message(const struct ap_policy *p, const struct ap_admit_result *res, const char *model,
                       int64_t need, char *out, size_t n)
{
    char a[32], b[32], c[32];
    int64_t limit = policy_budget_limit(p, res->refusal);
    int usd = res->refusal == AP_REFUSE_DAILY_USD || res->refusal == AP_REFUSE_MONTHLY_USD;
    const char *period = res->refusal == AP_REFUSE_DAILY_TOKENS || res->refusal == AP_REFUSE_DAILY_USD ? "daily"
                                                                                                        : "monthly";
    switch (res->refusal) {
    case AP_REFUSE_MODEL:
        snprintf(out, n, "model %.128s is not allowed for this API key", model ? model : "");
        break;
    case AP_REFUSE_EXPIRED:
        ap_time_iso_ms_utc(p->expires_at_ms, a, sizeof(a));
        snprintf(out, n, "API key expired at %s", a);
        break;
    case AP_REFUSE_UNPRICED:
        snprintf(out, n, "model %.128s has no price in PRICES_CONFIG; this API key has a spend budget and may use "
                 "priced models only", model ? model : "");
        break;
    case AP_REFUSE_RPM:
        snprintf(out, n, "rate limit reached: %lld requests per minute for this API key", (long long)p->rpm);
        break;
    case AP_REFUSE_TPM:
        snprintf(out, n, "rate limit reached: %lld tokens per minute for this API key (%lld in the last minute)",
                 (long long)p->tpm, (long long)res->used);
        break;
    case AP_REFUSE_CONCURRENCY:
        snprintf(out, n, "concurrency limit reached: %lld requests in flight for this API key",
                 (long long)p->max_concurrent);
        break;
    case AP_REFUSE_DAILY_TOKENS:
    case AP_REFUSE_MONTHLY_TOKENS:
    case AP_REFUSE_DAILY_USD:
    case AP_REFUSE_MONTHLY_USD:
        if (usd) {
            ap_usd_format(limit, a, sizeof(a));
            ap_usd_format(res->used, b, sizeof(b));
            ap_usd_format(need, c, sizeof(c));
            snprintf(out, n, "%s spend budget of this API key exhausted: USD %s used of %s, this request may cost "
                     "up to %s", period, b, a, c);
        } else {
            snprintf(out, n, "%s token budget of this API key exhausted: %lld tokens used of %lld, this request "
                     "may use up to %lld", period, (long long)res->used, (long long)limit, (long long)need);
        }
        if (res->reserved > 0 && strlen(out) + 64 < n) {
            if (usd)
                ap_usd_format(res->reserved, a, sizeof(a));
            else
                snprintf(a, sizeof(a), "%lld tokens", (long long)res->reserved);
            snprintf(out + strlen(out), n - strlen(out), " (%s%s held by requests in flight)", usd ? "USD " : "", a);
        }
        break;
    case AP_REFUSE_UNAVAILABLE:
        snprintf(out, n, "the limits of this API key cannot be checked right now (Redis unreachable); try again "
                 "shortly");
        break;
    default:
        snprintf(out, n, "request refused by the key's policy");
        break;
    }
}

size_t ap_policy_headers(const struct ap_policy *p, int64_t rpm_remaining, int64_t tpm_remaining,
                         struct ap_header out[4])
{
    size_t n = 0;
    if (p == NULL)
        return 0;
    if (p->rpm != AP_POLICY_NONE) {
        out[n].name = "x-ratelimit-limit-requests";
        snprintf(out[n++].value, sizeof(out[0].value), "%lld", (long long)p->rpm);
        if (rpm_remaining >= 0) {
            out[n].name = "x-ratelimit-remaining-requests";
            snprintf(out[n++].value, sizeof(out[0].value), "%lld", (long long)rpm_remaining);
        }
    }
    if (p->tpm != AP_POLICY_NONE) {
        out[n].name = "x-ratelimit-limit-tokens";
        snprintf(out[n++].value, sizeof(out[0].value), "%lld", (long long)p->tpm);
        if (tpm_remaining >= 0) {
            out[n].name = "x-ratelimit-remaining-tokens";
            snprintf(out[n++].value, sizeof(out[0].value), "%lld", (long long)tpm_remaining);
        }
    }
    return n;
}
