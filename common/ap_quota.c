/* Quota aggregation, hysteresis and tier choice; see ap_quota.h. */
#include "ap_quota.h"

#include "ap_fallback.h"
#include "ap_time.h"

#include <cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void ap_quota_free(struct ap_quota *q)
{
    free(q->m);
    q->m = NULL;
    q->n = 0;
}

void ap_marks_free(struct ap_marks *k)
{
    free(k->m);
    k->m = NULL;
    k->n = 0;
}

const struct ap_quota_model *ap_quota_find(const struct ap_quota *q, const char *model)
{
    for (size_t i = 0; q != NULL && model != NULL && i < q->n; i++)
        if (strcmp(q->m[i].model, model) == 0)
            return &q->m[i];
    return NULL;
}

static struct ap_quota_model *quota_slot(struct ap_quota *q, const char *model)
{
    struct ap_quota_model *e = (struct ap_quota_model *)ap_quota_find(q, model);
    if (e != NULL)
        return e;
    if (strlen(model) >= sizeof(e->model))
        return NULL;
    struct ap_quota_model *m = realloc(q->m, (q->n + 1) * sizeof(*m));
    if (m == NULL)
        return NULL;
    q->m = m;
    e = &q->m[q->n++];
    memset(e, 0, sizeof(*e));
    snprintf(e->model, sizeof(e->model), "%s", model);
    e->fraction = -1; /* below any real value: the first report wins */
    return e;
}

int ap_health_parse(const char *json, size_t len, struct ap_quota *q, char *err, size_t errlen)
{
    cJSON *root = cJSON_ParseWithLength(json, len);
    const cJSON *accounts = cJSON_GetObjectItemCaseSensitive(root, "accounts");
    if (!cJSON_IsArray(accounts)) {
        snprintf(err, errlen, root ? "no \"accounts\" array" : "not JSON");
        cJSON_Delete(root);
        return -1;
    }
    ap_quota_free(q);
    const cJSON *acct, *m;
    cJSON_ArrayForEach(acct, accounts) {
        const cJSON *st = cJSON_GetObjectItemCaseSensitive(acct, "status");
        if (cJSON_IsString(st) && (strcmp(st->valuestring, "invalid") == 0 || strcmp(st->valuestring, "error") == 0))
            continue;
        cJSON_ArrayForEach(m, cJSON_GetObjectItemCaseSensitive(acct, "models")) {
            if (m->string == NULL || !cJSON_IsObject(m))
                continue;
            struct ap_quota_model *e = quota_slot(q, m->string);
            if (e == NULL)
                continue;
            /* The upstream itself treats a null fraction as exhausted. */
            const cJSON *f = cJSON_GetObjectItemCaseSensitive(m, "remainingFraction");
            double v = cJSON_IsNumber(f) && isfinite(f->valuedouble) ? f->valuedouble : 0;
            v = v < 0 ? 0 : v > 1 ? 1 : v;
            if (v > e->fraction)
                e->fraction = v;
            const cJSON *rt = cJSON_GetObjectItemCaseSensitive(m, "resetTime");
            time_t t;
            /* A time before 1970 is no reset time (and would be a negative one). */
            if (cJSON_IsString(rt) && ap_time_parse_iso(rt->valuestring, &t) == 0 && t > 0) {
                int64_t ms = (int64_t)t * 1000;
                if (e->reset_ms == 0 || ms < e->reset_ms)
                    e->reset_ms = ms;
            }
        }
    }
    cJSON_Delete(root);
    return 0;
}

void ap_quota_settle(struct ap_quota *q, const struct ap_quota *prev, double min, double margin)
{
    for (size_t i = 0; i < q->n; i++) {
        const struct ap_quota_model *p = ap_quota_find(prev, q->m[i].model);
        double need = (p != NULL && !p->available) ? min + margin : min;
        /* "at least": 0.05 + 0.1 is 0.15000000000000002 in binary, yet 0.15 must pass. */
        q->m[i].available = q->m[i].fraction >= need - 1e-9;
    }
}

int ap_quota_changed(const struct ap_quota *q, const struct ap_quota *prev)
{
    if (prev == NULL || q->n != prev->n || q->poll_ok != prev->poll_ok)
        return 1;
    for (size_t i = 0; i < q->n; i++) {
        const struct ap_quota_model *p = ap_quota_find(prev, q->m[i].model);
        if (p == NULL || p->available != q->m[i].available || fabs(p->fraction - q->m[i].fraction) > 1e-9 ||
            p->reset_ms != q->m[i].reset_ms)
            return 1;
    }
    return 0;
}

int ap_quota_stale(const struct ap_quota *q, int64_t now_ms)
{
    double iv = q->interval_s > 0 ? q->interval_s : 30;
    return q->poll_ms == 0 || (double)(now_ms - q->poll_ms) > 3 * iv * 1000;
}

cJSON *ap_quota_to_json(const struct ap_quota *q)
{
    cJSON *j = cJSON_CreateObject();
    cJSON_AddNumberToObject(j, "poll_ms", (double)q->poll_ms);
    cJSON_AddBoolToObject(j, "ok", q->poll_ok);
    cJSON_AddNumberToObject(j, "interval", q->interval_s);
    if (q->error[0] != '\0')
        cJSON_AddStringToObject(j, "error", q->error);
    cJSON *models = cJSON_AddObjectToObject(j, "models");
    for (size_t i = 0; i < q->n; i++) {
        cJSON *m = cJSON_AddObjectToObject(models, q->m[i].model);
        cJSON_AddNumberToObject(m, "f", q->m[i].fraction);
        cJSON_AddNumberToObject(m, "reset", (double)q->m[i].reset_ms);
        cJSON_AddBoolToObject(m, "avail", q->m[i].available);
    }
    return j;
}

/* A wall time in ms from JSON: 0 when absent or outside what a clock can say (not cast blindly). */
static int64_t quota_ms(const cJSON *v)
{
    return cJSON_IsNumber(v) && v->valuedouble >= 0 && v->valuedouble < 1e15 ? (int64_t)v->valuedouble : 0;
}

int ap_quota_from_json(const cJSON *j, struct ap_quota *q)
{
    const cJSON *models = cJSON_GetObjectItemCaseSensitive(j, "models");
    if (!cJSON_IsObject(j) || !cJSON_IsObject(models))
        return -1;
    ap_quota_free(q);
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, "poll_ms");
    q->poll_ms = quota_ms(v);
    v = cJSON_GetObjectItemCaseSensitive(j, "interval");
    q->interval_s = cJSON_IsNumber(v) ? v->valuedouble : 30;
    q->poll_ok = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "ok"));
    v = cJSON_GetObjectItemCaseSensitive(j, "error");
    snprintf(q->error, sizeof(q->error), "%s", cJSON_IsString(v) ? v->valuestring : "");
    const cJSON *m;
    cJSON_ArrayForEach(m, models) {
        struct ap_quota_model *e = quota_slot(q, m->string);
        if (e == NULL)
            return -1;
        v = cJSON_GetObjectItemCaseSensitive(m, "f");
        e->fraction = cJSON_IsNumber(v) ? v->valuedouble : 0;
        v = cJSON_GetObjectItemCaseSensitive(m, "reset");
        e->reset_ms = quota_ms(v);
        e->available = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(m, "avail"));
    }
    return 0;
}

int ap_marks_set(struct ap_marks *k, const char *model, int64_t until_ms)
{
    for (size_t i = 0; i < k->n; i++)
        if (strcmp(k->m[i].model, model) == 0) {
            if (until_ms > k->m[i].until_ms)
                k->m[i].until_ms = until_ms;
            return 0;
        }
    if (strlen(model) >= sizeof(k->m[0].model))
        return -1;
    void *n = realloc(k->m, (k->n + 1) * sizeof(*k->m));
    if (n == NULL)
        return -1;
    k->m = n;
    snprintf(k->m[k->n].model, sizeof(k->m[k->n].model), "%s", model);
    k->m[k->n++].until_ms = until_ms;
    return 0;
}

int64_t ap_marks_until(const struct ap_marks *k, const char *model, int64_t now_ms)
{
    for (size_t i = 0; k != NULL && i < k->n; i++)
        if (strcmp(k->m[i].model, model) == 0)
            return k->m[i].until_ms > now_ms ? k->m[i].until_ms : 0;
    return 0;
}

int ap_tier_available(const struct ap_tier *t, const struct ap_quota *q, const struct ap_marks *k, int64_t now_ms)
{
    if (ap_marks_until(k, t->model, now_ms) != 0)
        return 0;
    if (t->type == AP_TIER_EXTERNAL || q == NULL || ap_quota_stale(q, now_ms))
        return 1;
    const struct ap_quota_model *e = ap_quota_find(q, t->health_key);
    return e == NULL || e->available;
}

size_t ap_fallback_plan(const struct ap_fallback *f, const struct ap_quota *q, const struct ap_marks *k,
                        const char *model, int64_t now_ms, const struct ap_tier **out, size_t max)
{
    const struct ap_tier *req = ap_fallback_find(f, model);
    if (f == NULL || !f->enabled || req == NULL || max == 0)
        return 0;
    size_t n = 0;
    if (ap_tier_available(req, q, k, now_ms))
        out[n++] = req;
    for (size_t i = 0; i < f->ntiers && n < max; i++) {
        const struct ap_tier *t = &f->tiers[i];
        if (t != req && ap_tier_available(t, q, k, now_ms))
            out[n++] = t;
    }
    if (n == 0)
        out[n++] = req;
    return n;
}
